"""Migrations: released revisions frozen, upgrade paths that meet, repeatable sql/, partition RLS, the Supabase export."""

# How the two kinds of SQL work (versioned revisions, repeatable sql/) is in docs/migrations.md.
# The catalog comparisons follow pgmq's upgrade test: `pg_dump --schema-only` of both databases,
# normalised, plus a query of every function's definition, the policies and the RLS flags of every
# relation (partitions included), so two paths that should meet are compared on everything.

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from pgmlops import migrations
from pgmlops.migrations import _repeatables

from .conftest import Server

ROOT = Path(__file__).resolve().parent.parent
SUPABASE_MIGRATIONS = ROOT / "supabase" / "migrations"

Conn = psycopg.Connection[Any]

# The files of released revisions, which never change: a database upgraded today must run what it
# ran then. Editing one fails here; a fix is a new revision. Add a revision's files when it ships.
RELEASED_FILES = {
    "0001_foundation/bootstrap.sql": "9096ad29a6777287f9055b0082e5b22d8a6b3572edf7b73f9bfa1812ea20da8e",
    "0001_foundation/validation.sql": "5502c6e4ed174f994325babdf93eae47131f0317e0ef2902b19ed75094605f53",
    "0001_foundation/tenants.sql": "6a6b26792138edd7b9be3f8769f3fba0826030eb8de06761b3c2599d4ebb487f",
    "0001_foundation/timeseries.sql": "af51f649926550b9a8a77d90191e4507237d31e6b635ed153c32bba4889a4bd0",
    "0001_foundation/events.sql": "3f8e9040ebacf259484e379119c0d5513e77878f1bf753d95cf1df38d2f82948",
    "0002_queue/queue.sql": "8841ec5e97a8e6c904a36de2eb7860c0daa00bdd8a63d0f761ca9217240912fc",
    "0003_features/features.sql": "7a98d783a5d1627f056584799a3cf991ebc6d03ad78fb88572c12a99492b4b5c",
    "0003_features/feature_ingest.sql": "c3e5cf8ea354a43606a6e71f319181fd4d69079f5df4d2fca399b2330d8b0925",
    "0003_features/training_sets.sql": "dde938d3fa6d71d3856f1bbf39a49987e54095f38aa1c26c37720e9133d227b0",
    "0003_features/feature_stats.sql": "7d8aaf991577293427ed62ffa10c76bec68f1d93f1e6df22efa0e5966ef725d0",
    "0004_training/training.sql": "9ffc284d1a86ffca22a2c506886314e12f36483aaa2da4bd0082e38f0314c7c1",
    "0004_training/registry.sql": "135b7bb79c85175e9f7e1f4721706912822164bc30ddf33564a057447abf11d6",
    "0004_training/tuning.sql": "e86c2f8ff140da916feb3ea06f00079f2b66775698dbd14f007a26e3a5363211",
    "0005_partition_rls/partition_rls.sql": "e8da7f83d9d6577f4862ab0132b01fdcbf60bf362e822c3a1742bd716450111c",
    "0006_train_learning_curve/learning_curve.sql": "8c9ec026ce8b4d34a46233597b6c7478a34d81f8a522fe26a89826ce45b01c59",
    "0007_typed_feature_storage/downgrade.sql": "1b75146cf506f1266c485a722cda902479aa76cb81291b2bcd0cd9101d8bc813",
    "0007_typed_feature_storage/typed_storage.sql": "8d8173157273d7ed3b7afb15f325ae66083d6172ec386fedc5ec9add194da07c",
    "0008_compiled_models/compiled_models.sql": "7740406306aa57d6cac7ea5b0bab6fb5e2c24618be6976bdf4f1fad07061ac11",
    "0008_compiled_models/downgrade.sql": "4a37e44bfe316382d1511657b1e9e41bf5beaed19772b7ea3ce2f60f47193a53",
    "0009_scoring/batch_scoring.sql": "836de1415ab5e09cb3c1e620f47665525b90e9ae107ffe1599d4267dd3c5c6a8",
    "0009_scoring/compile_jobs.sql": "3d51be1d5683f35758d0240849d220e293304c865f985a7bf8abb60d4424ce9c",
    "0009_scoring/deployments.sql": "334de8ac93a27106d0b0ddf32a036ddb245987c6350524f71428763751fa40ac",
    "0009_scoring/feedback.sql": "f5a851ca7a31da7884fa29fd540a2a56f5f66b6741e89e46c864cd966d98564b",
    "0009_scoring/predictions.sql": "5e4142a9cfea5ee9ec2ef5c1258ab7a142ca0fe5720b9ed8ac3bdbd226c6188a",
    "0010_monitoring/alerts.sql": "365c5f8bf46b6387534e77ed69e89d8776314a6810fe69c4e74ecdcf2f73404c",
    "0010_monitoring/monitor_jobs.sql": "e23756c90ee0bcb403b07d9bcf846c895f173c404d923460a45f8c30c393ae1e",
    "0010_monitoring/profiles.sql": "fc5933f0645a6cf504b08fcc712e3c41ab81a9c5cbc8012892d5a9caddc5ea4f",
    "0010_monitoring/reports.sql": "4a2aa6790b2e8690aad2b97ac00591ed06e67c5efad189fcdc91cbf900d44f41",
    "0010_monitoring/windows.sql": "52ab9c9f18d7d699af17ccf35ee1576e6f98b912acefac0ec1428baa064c8863",
    "0011_retraining/learn_jobs.sql": "359e5d7c98420c80a1452d31e294b0f6e68ea459e32057bbfbc302239ee8667a",
    "0011_retraining/retrain_jobs.sql": "23ac66026c435d4417e783a04844a4e430ba31bf81fd01ca4f5690f5f9094760",
    "0011_retraining/retraining.sql": "8ae5ae7d37a64b95ba10247a8dd5960b2960359bd1e76ec703cf704071a8819f",
    "0012_learning/algorithms.sql": "c1b828a0d12662b963a57fc6a2b871b6d992af29b5c1607a9f4114fd6fb4d5b9",
}
RELEASED_SCHEMA = "0004_training"  # what Supabase projects and installed databases hold today
PARTITIONED = ("ml.events", "ml.run_metrics")  # plus each feature group version's offline table (see partitioned_tables)
TYPED_STORAGE = "0007_typed_feature_storage"  # feature values move from jsonb tables to a typed pair per group version


# -- reading a database ------------------------------------------------------------------------


def objects(url: str) -> dict[str, list[str]]:
    """The pgmlops objects in a database: tables, functions (with arguments), policies, triggers."""
    with psycopg.connect(url) as conn:
        def q(sql: str) -> list[str]:
            return [r[0] for r in conn.execute(sql).fetchall()]
        return {
            "tables": q("select format('%I.%I', schemaname, tablename) from pg_tables "
                        "where schemaname in ('ml', 'ml_private', 'auth') order by 1"),
            "functions": q("select p.oid::regprocedure::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace "
                           "where n.nspname in ('ml', 'ml_private', 'auth') order by 1"),
            "policies": q("select format('%s.%s:%s', schemaname, tablename, policyname) from pg_policies "
                          "where schemaname = 'ml' order by 1"),
            "triggers": q("select tgname from pg_trigger t join pg_class c on c.oid = t.tgrelid "
                          "join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'ml' "
                          "and not tgisinternal order by 1"),
        }


_SCHEMAS = "('ml', 'ml_private', 'ml_datasets', 'ml_chunks', 'auth', 'optuna')"
_DEFINITIONS = f"""
    select 'function ' || p.oid::regprocedure || ' acl=' || coalesce(array(select unnest(p.proacl)::text order by 1)::text, '-')
           || E'\\n' || pg_get_functiondef(p.oid)
    from pg_proc p join pg_namespace n on n.oid = p.pronamespace where n.nspname in {_SCHEMAS}
    union all
    select 'relation ' || c.oid::regclass || ' kind=' || c.relkind::text || ' rls=' || c.relrowsecurity
           || ' force=' || c.relforcerowsecurity
           || ' acl=' || coalesce(array(select unnest(c.relacl)::text order by 1)::text, '-')
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname in {_SCHEMAS} and c.relkind in ('r', 'p', 'v', 'm')
    union all
    select format('policy %s.%s %s %s %s to %s using %s check %s', schemaname, tablename, policyname, permissive,
                  cmd, roles, qual, with_check)
    from pg_policies where schemaname in {_SCHEMAS}
    union all
    select 'trigger ' || t.tgrelid::regclass || ' ' || pg_get_triggerdef(t.oid)
    from pg_trigger t join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
    where n.nspname in {_SCHEMAS} and not t.tgisinternal
    order by 1
"""


def _normalised_dump(url: str) -> list[str]:
    """`pg_dump --schema-only`, without comments, settings and the per-run \\restrict key; runs of
    GRANT/REVOKE lines sorted (the order of an ACL's entries depends on its history, not its rights)."""
    pg_dump = shutil.which("pg_dump")
    assert pg_dump, "pg_dump is not on PATH"
    run = subprocess.run([pg_dump, "--schema-only", "--no-owner", url], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stdout.splitlines()
             if line.strip() and not line.startswith(("--", "SET ", "\\restrict", "\\unrestrict"))
             and not line.startswith("SELECT pg_catalog.set_config('search_path'")]
    out: list[str] = []
    grants: list[str] = []
    for line in [*lines, ""]:
        if line.startswith(("GRANT ", "REVOKE ")):
            grants.append(line)
            continue
        out += sorted(grants)
        grants = []
        if line:
            out.append(line)
    return out


def catalog(url: str) -> dict[str, list[str]]:
    """Everything two databases must share to be the same schema."""
    with psycopg.connect(url) as conn:
        definitions = [r[0] for r in conn.execute(_DEFINITIONS).fetchall()]
    return {"dump": _normalised_dump(url), "definitions": definitions}


def assert_same_catalog(left: str, right: str) -> None:
    a, b = catalog(left), catalog(right)
    for part in ("definitions", "dump"):
        if a[part] != b[part]:
            import difflib
            diff = "\n".join(list(difflib.unified_diff(a[part], b[part], "left", "right", lineterm="", n=2))[:80])
            raise AssertionError(f"the catalogs differ ({part}):\n{diff}")


def scalar(url: str, sql: str, *args: Any) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql, args).fetchone()
        assert row is not None
        return row[0]


# -- released revisions ------------------------------------------------------------------------


def test_released_revision_files_never_change() -> None:
    versions = ROOT / "migrations" / "versions"
    actual = {path: hashlib.sha256((versions / path).read_bytes()).hexdigest() for path in RELEASED_FILES}
    assert actual == RELEASED_FILES, "a released revision's SQL changed: revert it and put the change in a new revision"


def test_released_revisions_run_what_supabase_projects_ran() -> None:
    """The first Supabase export is the offline SQL of 0001-0004 as released: the frozen files
    (and the helpers around them) still produce it to the byte."""
    released = (SUPABASE_MIGRATIONS / "20261123132152_pgmlops.sql").read_text(encoding="utf-8")
    body = released.split("\n\n", 1)[1]  # after the two-line header
    assert migrations.offline_sql(RELEASED_SCHEMA) == body


def test_every_revision_after_the_released_ones_has_its_own_sql_and_a_create_time() -> None:
    revisions = migrations.revisions()
    assert revisions[:4] == ["0001_foundation", "0002_queue", "0003_features", "0004_training"]
    assert migrations.head() == revisions[-1]
    for revision in revisions:
        assert (ROOT / "migrations" / "versions" / revision).is_dir(), f"{revision} has no directory of SQL files"


# -- the upgrade paths meet --------------------------------------------------------------------


def test_a_database_upgraded_revision_by_revision_equals_a_fresh_one(server: Server) -> None:
    """(a) Upgrading to each revision in turn, as installed databases did, ends where a fresh
    install at the head does."""
    fresh = server.empty_database()
    migrations.upgrade(fresh)
    stepwise = server.empty_database()
    for revision in migrations.revisions():
        migrations.upgrade(stepwise, revision)
        assert migrations.current(stepwise) == revision
    assert_same_catalog(fresh, stepwise)


def test_a_database_at_the_released_schema_keeps_its_data_through_the_upgrade(server: Server) -> None:
    """(b) A database at 0004 holding rows of two tenants in every capability upgrades to the
    head with every row intact, its existing partitions secured, and the API still reading them."""
    url = server.empty_database()
    migrations.upgrade(url, RELEASED_SCHEMA)
    with psycopg.connect(url, autocommit=True) as conn:
        tenants = {name: make_released_tenant(conn, name) for name in ("a", "b")}
        before = table_digests(conn)
        values_before = feature_values_as_json(conn)
    assert sum(count for count, _ in before.values()) > 40
    assert all(values_before.values())

    migrations.upgrade(url)
    assert migrations.current(url) == migrations.head()
    with psycopg.connect(url, autocommit=True) as conn:
        # Every row as it was; the feature values in their new tables, each value intact.
        assert_rows_kept(before, table_digests(conn))
        assert feature_values_as_json(conn) == values_before
        conn.execute("select set_config('pgmlops.tenant_id', %s, false)", (tenants["a"]["id"],))
        online = conn.execute("select values from ml.get_online_features(array['upgrade_customer:spend'], array['c1'])").fetchone()
        assert online is not None and online[0] == {"upgrade_customer:spend": 9.0}  # c1 holds i = 0, 3, 6, 9
        assert conn.execute("select ml.model_version('upgrade-model') ->> 'version'").fetchone() == ("1",)
        assert conn.execute("select ml.job_result(%s) ->> 'status'", (tenants["a"]["job"],)).fetchone() == ("queued",)
    # The upgrade step secured the partitions that were there.
    assert_partitions_show_no_other_tenant(url, tenants["a"]["owner"], tenants["b"]["id"])


def assert_rows_kept(before: dict[str, tuple[int, str]], after: dict[str, tuple[int, str]]) -> None:
    """Every table of ``before`` but the moved ones holds the same rows ``after`` an upgrade; the
    tables later revisions added are empty."""
    kept = set(before) - set(MOVED_TABLES) - set(REFERENCE_TABLES)
    assert {t: after.get(t) for t in kept} == {t: before[t] for t in kept}
    # Reference data: later revisions add job kinds and algorithms, none goes.
    assert all(after[t][0] >= before[t][0] for t in REFERENCE_TABLES if t in before)
    added = set(after) - set(before) - set(MOVED_TABLES)
    assert {t: after[t][0] for t in added} == dict.fromkeys(added, 0)


def seed_feature_values(conn: Conn, name: str, now: datetime) -> str:
    """A tenant whose feature store holds what the jsonb tables could: several groups and
    versions, every dtype, nulls, an update in place, a late older row, values over several
    months (several partitions or chunks) and a quarantined row, ingested through the API."""
    tenant = str(conn.execute("select ml.create_tenant(%s)", (f"typed-{name}",)).fetchone()[0])  # type: ignore[index]
    conn.execute("select set_config('pgmlops.tenant_id', %s, false)", (tenant,))
    profile = [{"name": "age", "dtype": "int", "min": 0}, {"name": "score", "dtype": "float"},
               {"name": "vip", "dtype": "bool"}, {"name": "city", "dtype": "text"},
               {"name": "plan", "dtype": "category", "allowed": ["free", "pro"]}, {"name": "seen", "dtype": "timestamp"},
               {"name": "embedding", "dtype": "vector(3)"}]
    conn.execute("select ml.create_feature_group('profile', 'customer', %s)", (Jsonb(profile),))
    conn.execute("select ml.ingest('profile', %s, 'quarantine')", (Jsonb([
        {"customer": "c1", "event_time": "2026-01-01T00:00:00Z", "age": 41, "score": 0.1, "vip": True, "city": f"Lyon {name}",
         "plan": "pro", "seen": "2025-12-31 23:00", "embedding": [0.1, 0.2, 0.3]},
        {"customer": "c2", "event_time": "2026-02-01T00:00:00Z", "age": 7, "score": -2.5e-7, "vip": False, "plan": "free"},
        {"customer": "c3", "event_time": "2026-03-01T00:00:00Z"},  # every feature null
        {"customer": "c4", "event_time": "2026-03-01T00:00:00Z", "age": -1},  # quarantined
    ]),))
    conn.execute("select ml.ingest('profile', %s)", (Jsonb([  # an update in place, then a late older row
        {"customer": "c1", "event_time": "2026-01-01T00:00:00Z", "age": 42, "score": 1e300, "embedding": [-1, 0.5, 2]},
        {"customer": "c2", "event_time": "2025-06-01T00:00:00Z", "age": 6, "city": "older"}]),))
    conn.execute("select ml.create_feature_group('profile', 'customer', %s)", (Jsonb([{"name": "age", "dtype": "float"}]),))
    conn.execute("select ml.ingest('profile', %s)", (Jsonb([{"customer": "c1", "event_time": "2026-01-01T00:00:00Z", "age": 42.5}]),))
    conn.execute("select ml.create_feature_group('txn', 'customer', %s, '30 days')",
                 (Jsonb([{"name": "amount", "dtype": "float", "min": 0}, {"name": "n", "dtype": "int"}]),))
    conn.execute("select ml.ingest('txn', %s)", (Jsonb([  # four months back to today: fresh and stale values
        {"customer": f"c{i % 3 + 1}", "event_time": (now - timedelta(days=11 * i)).isoformat(), "amount": 10.0 * i, "n": i}
        for i in range(12)]),))
    conn.execute("select set_config('pgmlops.tenant_id', '', false)")
    return tenant


ONLINE_REFS = ["profile@1:age", "profile@1:score", "profile@1:vip", "profile@1:city", "profile@1:plan", "profile@1:seen",
               "profile@1:embedding", "profile:age", "txn:amount", "txn:n"]
SPINE = ("select k as customer, t as event_time, (k = 'c1')::int as label from (values "
         "('c1', timestamptz '2026-01-15'), ('c2', timestamptz '2026-02-15'), ('c2', timestamptz '2025-07-01'), "
         "('c3', timestamptz '2026-04-01'), ('c9', timestamptz '2026-04-01'), ('c1', timestamptz '{now}'), "
         "('c2', timestamptz '{now}' - interval '40 days')) s (k, t)")
TRAINING_REFS = ["profile@1:age", "profile@1:score", "profile@1:vip", "profile@1:city", "profile@1:plan", "profile@1:seen",
                 "profile:age", "txn:amount", "txn:n"]


def read_through_the_api(conn: Conn, tenant: str, dataset_name: str, now: datetime) -> dict[str, Any]:
    """What the API answers about the tenant's feature values: online lookups, and the rows of a
    point-in-time training set over every group."""
    conn.execute("select set_config('pgmlops.tenant_id', %s, false)", (tenant,))
    try:
        online = conn.execute("select entity_key, values from ml.get_online_features(%s, %s)",
                              (ONLINE_REFS, ["c1", "c2", "c3", "c4", "nobody"])).fetchall()
        dataset = conn.execute("select ml.create_training_set(%s, %s, %s, 'label')",
                               (dataset_name, SPINE.format(now=now.isoformat()), TRAINING_REFS)).fetchone()
        table = conn.execute("select table_name from ml.datasets where id = %s", (dataset[0],)).fetchone()  # type: ignore[index]
        rows = conn.execute(f"select to_jsonb(d) from {table[0]} d order by customer, event_time").fetchall()  # type: ignore[index]
        return {"online": online, "training_set": [r[0] for r in rows]}
    finally:
        conn.execute("select set_config('pgmlops.tenant_id', '', false)")


@pytest.mark.parametrize("backend", ["server", "embedded"])
def test_feature_values_move_to_typed_tables_intact_and_the_api_reads_them_as_before(
        backend: str, request: pytest.FixtureRequest) -> None:
    """A database at the revision before typed storage (0007), with feature values of two tenants
    in several groups and versions, upgrades to the head with every value in its version's typed
    tables, unchanged, and online lookups and training sets answering exactly as before."""
    srv: Server = request.getfixturevalue("embedded_server" if backend == "embedded" else "server")
    url = srv.empty_database()
    try:
        revisions = migrations.revisions()
        migrations.upgrade(url, revisions[revisions.index(TYPED_STORAGE) - 1])
        now = datetime.now(UTC).replace(microsecond=0)
        with psycopg.connect(url, autocommit=True) as conn:
            tenants = [seed_feature_values(conn, name, now) for name in ("a", "b")]
            values_before = feature_values_as_json(conn)
            api_before = {t: read_through_the_api(conn, t, "before_upgrade", now) for t in tenants}
        assert len(values_before["ml.feature_values"]) == 2 * (4 + 1 + 12)  # profile@1 (one row updated in place), @2, txn
        assert len(values_before["ml.feature_online"]) == 2 * (3 + 1 + 3)

        migrations.upgrade(url)
        with psycopg.connect(url, autocommit=True) as conn:
            assert feature_values_as_json(conn) == values_before
            types = dict(conn.execute(
                "select a.attname, format_type(a.atttypid, a.atttypmod) from ml.feature_groups g"
                " join pg_attribute a on a.attrelid = g.offline_table and a.attnum > 0 and not a.attisdropped"
                " where g.tenant_id = %s and g.name = 'profile' and g.version = 1", (tenants[0],)).fetchall())
            assert {k: v.rsplit(".", 1)[-1] for k, v in types.items()} == {
                "tenant_id": "uuid", "entity_key": "text", "event_time": "timestamp with time zone", "age": "bigint",
                "score": "double precision", "vip": "boolean", "city": "text", "plan": "text",
                "seen": "timestamp with time zone", "embedding": "vector(3)" if backend == "server" or types["embedding"].endswith(
                    "vector(3)") else "double precision[]", "ingested_at": "timestamp with time zone", "ingestion_id": "uuid"}
            for tenant in tenants:
                assert read_through_the_api(conn, tenant, "after_upgrade", now) == api_before[tenant]
    finally:
        srv.drop(url)


def test_downgrade_then_upgrade_is_clean(server: Server) -> None:
    """(c) Undoing the newest revision and upgrading again, or undoing everything and
    reinstalling, both end where a fresh install does."""
    fresh = server.empty_database()
    migrations.upgrade(fresh)
    url = server.empty_database()
    migrations.upgrade(url)
    migrations.downgrade(url)
    assert migrations.current(url) == migrations.revisions()[-2]
    migrations.upgrade(url)
    assert_same_catalog(fresh, url)
    migrations.downgrade(url, "base")
    assert migrations.current(url) is None
    migrations.upgrade(url)
    assert_same_catalog(fresh, url)


def test_upgrade_downgrade_and_upgrade_again(server: Server) -> None:
    url = server.empty_database()
    migrations.upgrade(url)
    assert migrations.current(url) == migrations.head()
    before = objects(url)
    with psycopg.connect(url, autocommit=True) as conn:
        tenant = conn.execute("select ml.create_tenant('survivor')").fetchone()[0]

    if migrations.head() != "0005_partition_rls":
        migrations.downgrade(url, "0005_partition_rls")  # the revisions after it: the checksums go
        assert migrations.current(url) == "0005_partition_rls"
        assert scalar(url, "select count(*) from ml_private.repeatable_files") == 0

    migrations.downgrade(url)  # 0005: the checksums go, the partitions keep their RLS
    assert migrations.current(url) == RELEASED_SCHEMA
    assert scalar(url, "select to_regclass('ml_private.repeatable_files')") is None
    assert scalar(url, "select to_regclass('ml.model_versions')") is not None

    migrations.downgrade(url)  # the latest released revision: training and the registry go, the feature store stays
    assert migrations.current(url) == "0003_features"
    assert scalar(url, "select to_regclass('ml.model_versions')") is None
    assert scalar(url, "select to_regclass('ml.runs')") is None
    assert scalar(url, "select to_regprocedure('ml.train(text,uuid,text,jsonb,jsonb)')") is None
    assert scalar(url, "select count(*) from ml_private.tenant_tables where table_name in "
                       "('ml.projects', 'ml.runs', 'ml.run_metrics', 'ml.models', 'ml.model_versions', 'ml.audit_log')") == 0
    assert scalar(url, "select count(*) from ml.job_kinds where kind in ('train', 'tune_trial', 'tune')") == 0
    assert scalar(url, "select count(*) from pg_namespace where nspname = 'optuna'") == 0
    assert scalar(url, "select to_regclass('ml.feature_values')") is not None

    migrations.downgrade(url)  # then the feature store goes, the queue stays
    assert migrations.current(url) == "0002_queue"
    assert scalar(url, "select to_regclass('ml.feature_values')") is None
    assert scalar(url, "select to_regprocedure('ml.ingest(text,jsonb,text)')") is None
    assert scalar(url, "select count(*) from ml_private.tenant_tables where table_name like 'ml.feature%%'") == 0
    assert scalar(url, "select count(*) from pg_namespace where nspname = 'ml_datasets'") == 0
    assert scalar(url, "select to_regclass('ml.jobs')") is not None
    assert scalar(url, "select name from ml.tenants where id = %s", tenant) == "survivor"

    migrations.downgrade(url)  # and the queue: the foundation stays
    assert migrations.current(url) == "0001_foundation"
    assert scalar(url, "select to_regclass('ml.jobs')") is None
    assert scalar(url, "select to_regprocedure('ml.enqueue(text,jsonb,integer,timestamp with time zone,integer)')") is None

    migrations.upgrade(url)
    assert migrations.current(url) == migrations.head()
    assert objects(url) == before


def test_downgrade_to_base_removes_everything_pgmlops_made(server: Server) -> None:
    url = server.empty_database()
    migrations.upgrade(url)
    migrations.downgrade(url, "base")
    assert migrations.current(url) is None
    assert objects(url) == {"tables": [], "functions": [], "policies": [], "triggers": []}
    assert scalar(url, "select count(*) from pg_namespace where nspname in ('ml', 'ml_private', 'auth')") == 0
    migrations.upgrade(url)
    assert migrations.current(url) == migrations.head()


def test_upgrade_twice_is_a_no_op(db_url: str) -> None:
    before = objects(db_url)
    applied = scalar(db_url, "select max(applied_at) from ml_private.repeatable_files")
    migrations.upgrade(db_url)
    assert objects(db_url) == before
    assert scalar(db_url, "select max(applied_at) from ml_private.repeatable_files") == applied


# -- repeatable sql/ ---------------------------------------------------------------------------


def test_every_sql_file_is_applied_in_a_stated_order() -> None:
    on_disk = sorted(str(p.relative_to(ROOT / "sql")) for p in (ROOT / "sql").rglob("*.sql"))
    assert sorted(_repeatables.FILES) == on_disk
    assert len(set(_repeatables.FILES)) == len(_repeatables.FILES)


def test_sql_holds_no_tables_and_no_data() -> None:
    """Tables, types, data and extensions belong to versioned revisions, which run once."""
    forbidden = re.compile(r"^\s*(create\s+(table|type|schema|extension|index|sequence|role)|alter\s+table|insert\s+into"
                           r"|update\s+ml|delete\s+from|select\s+ml_private\.(register_|create_time))\b", re.I | re.M)
    for path in _repeatables.FILES:
        text = (ROOT / "sql" / path).read_text(encoding="utf-8")
        # Function bodies may write tables: look at the statements outside dollar quotes only.
        outside = re.sub(r"(\$[a-z_]*\$).*?\1", "", text, flags=re.S | re.I)
        assert not forbidden.search(outside), f"sql/{path}: {forbidden.search(outside).group(0)!r} belongs in a revision"


def test_sql_defines_every_function_and_view_of_the_schema(db_url: str) -> None:
    """sql/ is the current definition of the API: every function and view a database at the head
    holds is defined there (a frozen revision's version is never the one that stays)."""
    defined = set()
    for path in _repeatables.FILES:
        text = (ROOT / "sql" / path).read_text(encoding="utf-8")
        defined |= set(re.findall(r"create\s+or\s+replace\s+(?:function|view)\s+([a-z_0-9]+\.[a-z_0-9]+)", text, re.I))
    with psycopg.connect(db_url) as conn:
        present = {r[0] for r in conn.execute(
            "select n.nspname || '.' || p.proname from pg_proc p join pg_namespace n on n.oid = p.pronamespace "
            "where n.nspname in ('ml', 'ml_private', 'auth') union "
            "select n.nspname || '.' || c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
            "where n.nspname in ('ml', 'ml_private') and c.relkind = 'v'").fetchall()}
    assert present - defined == set()


def test_every_function_keeps_its_header_comment() -> None:
    for path in _repeatables.FILES:
        text = (ROOT / "sql" / path).read_text(encoding="utf-8")
        for match in re.finditer(r"^create or replace function ([a-z_.]+)", text, re.M):
            before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            assert before.startswith("--"), f"sql/{path}: {match.group(1)} has no header comment"


def test_a_database_at_the_head_gets_sql_again_only_when_it_changed(fresh_db_url: str) -> None:
    tampered = "create or replace function ml.capabilities() returns jsonb language sql as $$ select '{}'::jsonb $$"
    with psycopg.connect(fresh_db_url, autocommit=True) as conn:
        conn.execute(tampered)
    migrations.upgrade(fresh_db_url)  # the checksums match the files: nothing is applied
    assert scalar(fresh_db_url, "select ml.capabilities()") == {}

    with psycopg.connect(fresh_db_url, autocommit=True) as conn:
        conn.execute("update ml_private.repeatable_files set checksum = 'edited' where path = 'core/timeseries.sql'")
    migrations.upgrade(fresh_db_url)  # sql/ differs from what the database applied: all of it again
    assert "partitioning" in scalar(fresh_db_url, "select ml.capabilities()")
    assert scalar(fresh_db_url, "select checksum from ml_private.repeatable_files where path = 'core/timeseries.sql'") \
        == _repeatables.checksums()["core/timeseries.sql"]
    # ... with EXECUTE revoked from PUBLIC again (create or replace keeps it; a new function gets it).
    assert scalar(fresh_db_url, "select count(*) from pg_proc p join pg_namespace n on n.oid = p.pronamespace "
                                "where n.nspname in ('ml', 'ml_private') and has_function_privilege('public', p.oid, 'execute')") == 0


def test_an_intermediate_revision_keeps_the_sql_it_was_released_with(server: Server) -> None:
    """Repeatables are applied only at the head: a database stopped at 0004 runs 0004's functions."""
    url = server.empty_database()
    migrations.upgrade(url, RELEASED_SCHEMA)
    assert scalar(url, "select to_regprocedure('ml_private.secure_partitions(regclass,boolean)')") is None
    assert "security definer" not in scalar(url, "select lower(pg_get_functiondef('ml_private.run_maintenance()'::regprocedure))")


# -- row-level security of partitions and chunks ------------------------------------------------


@contextmanager
def as_caller(conn: Conn, role: str, claims: dict[str, Any]) -> Iterator[None]:
    """Run the block as PostgREST runs a request: `set local role` and the JWT claims, in a savepoint."""
    with conn.transaction():
        conn.execute(f"set local role {role}")
        conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
        yield


def partitioned_tables(conn: Conn) -> list[str]:
    """The time-partitioned tenant tables: PARTITIONED, and ml.feature_values before
    revision 0007 or each feature group version's offline table from it on."""
    return [r[0] for r in conn.execute(
        "select p.table_name from ml_private.time_partitioned_tables p"
        " join ml_private.tenant_tables t on t.table_name = p.table_name order by 1").fetchall()]


def partitions(conn: Conn) -> list[str]:
    """Every partition and chunk of the time-partitioned tenant tables."""
    return [r[0] for r in conn.execute(
        "select i.inhrelid::regclass::text from pg_inherits i where i.inhparent::regclass::text = any (%s) order by 1",
        (partitioned_tables(conn),)).fetchall()]


def assert_partitions_show_no_other_tenant(url: str, member_of_a: str, tenant_b: str) -> None:
    """Follow the usual Supabase recipe for an exposed schema (and go further: grant the chunks'
    schema too), then read every partition and chunk directly as anon and as a member of tenant A:
    nothing of tenant B shows. Rolled back."""
    with psycopg.connect(url) as conn:
        parts = partitions(conn)
        assert parts, "no partitions to read"
        b_rows = sum(conn.execute(f"select count(*) from {table} where tenant_id = %s", (tenant_b,)).fetchone()[0]  # type: ignore[index]
                     for table in partitioned_tables(conn))
        assert b_rows > 0, "tenant B has no rows to hide"
        for schema in ("ml", "ml_features"):
            if conn.execute("select to_regnamespace(%s) is not null", (schema,)).fetchone() == (True,):
                conn.execute(f"grant usage on schema {schema} to anon, authenticated")
                conn.execute(f"grant select on all tables in schema {schema} to anon, authenticated")
                conn.execute(f"alter default privileges in schema {schema} grant select on tables to anon, authenticated")
        if conn.execute("select to_regnamespace('ml_chunks') is not null").fetchone() == (True,):
            conn.execute("grant usage on schema ml_chunks to anon, authenticated")
            conn.execute("grant select on all tables in schema ml_chunks to anon, authenticated")
        seen_by_a = 0
        for part in parts:
            with as_caller(conn, "anon", {"role": "anon"}):
                assert conn.execute(f"select count(*) from {part}").fetchone() == (0,), f"anon reads {part}"
            with as_caller(conn, "authenticated", {"sub": member_of_a, "role": "authenticated"}):
                counts = conn.execute(f"select count(*) filter (where tenant_id = %s), count(*) from {part}",
                                      (tenant_b,)).fetchone()
                assert counts is not None and counts[0] == 0, f"a member of tenant A reads tenant B's rows in {part}"
                seen_by_a += counts[1]
        assert seen_by_a > 0, "the member of tenant A read nothing: the grants did not take"
        conn.rollback()


def make_released_tenant(conn: Conn, name: str) -> dict[str, Any]:
    """A tenant with an owner and rows in every capability, made through the API as released in
    0004 (kept here, not in tests/rls_seed.py, so it keeps matching that API)."""
    owner = conn.execute("select gen_random_uuid()::text").fetchone()[0]
    tenant = str(conn.execute("select ml.create_tenant(%s, %s)", (f"upgrade-{name}", owner)).fetchone()[0])
    conn.execute("select set_config('pgmlops.tenant_id', %s, false)", (tenant,))
    try:
        job = conn.execute("select ml.enqueue('echo', %s)", (Jsonb({"message": name}),)).fetchone()[0]
        conn.execute("select ml.create_feature_group('upgrade_customer', 'customer', %s, null)",
                     (Jsonb({"spend": {"dtype": "float", "min": 0}}),))
        start = datetime(2026, 1, 1, tzinfo=UTC)
        rows = [{"customer": f"c{i % 3 + 1}", "event_time": (start + timedelta(days=11 * i)).isoformat(), "spend": float(i)}
                for i in range(12)]  # four months: several partitions or chunks
        rows.append({"customer": "c9", "event_time": start.isoformat(), "spend": -1})  # quarantined
        conn.execute("select ml.ingest('upgrade_customer', %s, 'quarantine')", (Jsonb(rows),))
        dataset = conn.execute(
            "select ml.create_training_set('upgrade_training', "
            "$$select 'c1' as customer, timestamptz '2026-03-01' as event_time, 1 as label$$, "
            "array['upgrade_customer:spend'], 'label')").fetchone()[0]
        conn.execute("select ml.compute_feature_stats('upgrade_customer')")
        conn.execute("select ml.create_project('upgrade-project', 'classification', 'label')")
        run = conn.execute("select ml.start_run(p.id, null, 'logistic_regression', '{}', '{}', %s, '{}') "
                           "from ml.projects p where p.tenant_id = %s", (dataset, tenant)).fetchone()[0]
        for step in range(3):
            conn.execute("select ml.log_run_metrics(%s, %s, '{\"loss\": 0.5}')", (run, step))
        conn.execute("select ml.finish_run(%s, 'succeeded', '{\"roc_auc\": 0.9}', 0.1, 3, 0.2)", (run,))
        artifact = f"artifact of {name}".encode()
        conn.execute("select ml.register_model_version(%s, 'upgrade-model', %s, 'skops', %s, %s, null)",
                     (run, artifact, hashlib.sha256(artifact).hexdigest(),
                      Jsonb({"inputs": [{"name": "spend", "dtype": "float"}], "outputs": [{"name": "label", "dtype": "int"}]})))
        conn.execute("select ml.set_alias('upgrade-model', 'challenger', 1)")
        conn.execute("select ml.tune('upgrade-project', %s, 'logistic_regression', %s, 2)",
                     (dataset, Jsonb({"C": {"type": "float", "low": 0.01, "high": 10, "log": True}})))
    finally:
        conn.execute("select set_config('pgmlops.tenant_id', '', false)")
    return {"id": tenant, "owner": owner, "job": job}


# Columns added to existing tables by later revisions: left out of the digests, so a row reads the
# same before and after (ml.feature_groups names its version's tables from 0007 on;
# ml.model_versions records its scoring path from 0008 on).
ADDED_COLUMNS = ["offline_table", "online_table", "scoring_path", "scoring"]
# Tables whose rows move elsewhere (0007: feature values into each version's typed tables):
# compared through feature_values_as_json instead.
MOVED_TABLES = ("ml.feature_online", "ml.feature_values")
REFERENCE_TABLES = ("ml.job_kinds", "ml.algorithms")  # global rows revisions add to


def table_digests(conn: Conn) -> dict[str, tuple[int, str]]:
    """Row count and a digest of the rows of every table in the pgmlops schemas but ml_features
    (partitions through their parents), so a changed, lost or added row shows."""
    tables = [r[0] for r in conn.execute(
        "select c.oid::regclass::text from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname in ('ml', 'ml_datasets') and c.relkind in ('r', 'p') and not c.relispartition "
        "and not exists (select 1 from pg_inherits i where i.inhrelid = c.oid) order by 1").fetchall()]
    out = {}
    for table in tables:
        row = conn.execute(f"select count(*), coalesce(md5(string_agg(x, '|' order by x)), '') from "
                           f"(select (to_jsonb(t) - %s::text[])::text as x from {table} t) r", (ADDED_COLUMNS,)).fetchone()
        assert row is not None
        out[table] = (row[0], row[1])
    return out


def feature_values_as_json(conn: Conn) -> dict[str, Any]:
    """Every stored feature value as the jsonb tables held them before 0007: {table: sorted rows}
    of ml.feature_values (tenant, group, key, time, values, ingested_at, ingestion_id) and
    ml.feature_online (tenant, group, key, time, values, updated_at), read from whichever storage
    the database has: the jsonb tables, or each group version's offline and online tables."""
    def by_key(row: tuple[Any, ...]) -> tuple[Any, ...]:
        return row[:4]  # tenant, group, key, time: unique in both tables

    if conn.execute("select to_regnamespace('ml_features') is null").fetchone() == (True,):
        return {
            "ml.feature_values": sorted(conn.execute(
                "select tenant_id::text, group_id::text, entity_key, event_time, values, ingested_at, ingestion_id::text "
                "from ml.feature_values").fetchall(), key=by_key),
            "ml.feature_online": sorted(conn.execute(
                "select tenant_id::text, group_id::text, entity_key, event_time, values, updated_at "
                "from ml.feature_online").fetchall(), key=by_key)}
    offline: list[Any] = []
    online: list[Any] = []
    for group_id, features, offline_table, online_table in conn.execute(
            "select id::text, features, offline_table::text, online_table::text from ml.feature_groups").fetchall():
        values = "jsonb_strip_nulls(jsonb_build_object({}))".format(", ".join(  # feature names: [a-z_][a-z0-9_]*
            f"'{f['name']}', " + (f'"{f["name"]}"::text::jsonb' if f["dtype"] == "vector" else f'to_jsonb("{f["name"]}")')
            for f in features))
        offline += conn.execute(f"select tenant_id::text, %s, entity_key, event_time, {values}, ingested_at, ingestion_id::text "
                                f"from {offline_table}", (group_id,)).fetchall()
        online += conn.execute(f"select tenant_id::text, %s, entity_key, event_time, {values}, ingested_at "
                               f"from {online_table}", (group_id,)).fetchall()
    return {"ml.feature_values": sorted(offline, key=by_key), "ml.feature_online": sorted(online, key=by_key)}


@pytest.mark.parametrize("backend", ["server", "embedded"])
def test_partitions_and_chunks_show_no_other_tenant_to_a_client_granted_the_whole_schema(
        backend: str, request: pytest.FixtureRequest) -> None:
    srv: Server = request.getfixturevalue("embedded_server" if backend == "embedded" else "server")
    url = srv.clone()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            tenants = {name: make_released_tenant(conn, name) for name in ("a", "b")}
            # A partition made later (native) is secured as it is made.
            conn.execute("select ml_private.ensure_time_partitions('ml.events', now() + interval '30 days', "
                         "now() + interval '31 days')")
            mode = conn.execute("select ml.capabilities() ->> 'partitioning'").fetchone()[0]
            states = conn.execute(
                "select c.relrowsecurity, c.relforcerowsecurity, c.relispartition, "
                "(select count(*) from pg_policy p where p.polrelid = c.oid) "
                "from pg_inherits i join pg_class c on c.oid = i.inhrelid "
                "where i.inhparent::regclass::text = any (%s)", (partitioned_tables(conn),)).fetchall()
        assert mode == ("hypertable" if backend == "server" else "native")
        assert states and all(rls and (force or not native) and policies >= 1 for rls, force, native, policies in states)
        assert_partitions_show_no_other_tenant(url, tenants["a"]["owner"], tenants["b"]["id"])
    finally:
        srv.drop(url)


def test_a_new_chunk_is_secured_when_its_transaction_commits(fresh_db_url: str) -> None:
    with psycopg.connect(fresh_db_url, autocommit=True) as conn:
        # The full server always has TimescaleDB (scripts/provision-postgres.sh builds it).
        assert conn.execute("select ml.capabilities() ->> 'partitioning'").fetchone() == ("hypertable",)
        tenant = make_released_tenant(conn, "chunks")["id"]
        table = conn.execute("select offline_table from ml.feature_groups where tenant_id = %s", (tenant,)).fetchone()[0]
        with conn.transaction():
            conn.execute("select set_config('pgmlops.tenant_id', %s, true)", (tenant,))
            conn.execute("select ml.ingest('upgrade_customer', %s)",
                         (Jsonb([{"customer": "c1", "event_time": "2031-06-01T00:00:00Z", "spend": 1.0}]),))
            unsecured = conn.execute("select count(*) from pg_inherits i join pg_class c on c.oid = i.inhrelid "
                                     "where i.inhparent = %s::regclass and not c.relrowsecurity", (table,)).fetchone()
            assert unsecured == (1,)  # TimescaleDB made it mid-statement; it is queued for commit
        assert conn.execute("select count(*) from pg_inherits i join pg_class c on c.oid = i.inhrelid "
                            "where i.inhparent = %s::regclass and not c.relrowsecurity", (table,)).fetchone() == (0,)
        assert conn.execute("select count(*) from ml_private.partition_checks").fetchone() == (0,)


@pytest.mark.parametrize("backend", ["server", "embedded"])
def test_maintenance_runs_for_the_service_role_it_is_granted_to(backend: str, request: pytest.FixtureRequest) -> None:
    srv: Server = request.getfixturevalue("embedded_server" if backend == "embedded" else "server")
    url = srv.clone()
    try:
        with psycopg.connect(url) as conn:
            with as_caller(conn, "service_role", {"role": "service_role"}):
                report = conn.execute("select ml_private.run_maintenance()").fetchone()[0]
            assert set(PARTITIONED) <= set(report)
            assert all({"created", "dropped", "secured"} <= set(report[t]) for t in PARTITIONED)
            assert "jobs_purged" in report
            conn.rollback()
    finally:
        srv.drop(url)


# -- Supabase ----------------------------------------------------------------------------------


def test_supabase_export_is_current() -> None:
    assert migrations.supabase_export_is_current(
        SUPABASE_MIGRATIONS, ROOT / "supabase" / "seed.sql", ROOT / "seeds"
    ), "supabase/ is out of date: run `pgmlops supabase export` (a change to sql/ ships with a new revision)"


def test_regenerating_the_supabase_export_changes_nothing(tmp_path: Path) -> None:
    for path in SUPABASE_MIGRATIONS.glob("*.sql"):
        shutil.copy(path, tmp_path / path.name)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert migrations.export_supabase(tmp_path) == []
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_supabase_export_writes_one_file_per_revision_and_never_rewrites_one(tmp_path: Path) -> None:
    shutil.copy(SUPABASE_MIGRATIONS / "20261123132152_pgmlops.sql", tmp_path)
    written = migrations.export_supabase(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[0] == "20261123132152_pgmlops.sql"
    assert [p.name for p in written] == names[1:]
    assert [n.split("_pgmlops_")[1] for n in names[1:]] == [f"{r}.sql" for r in migrations.revisions()[4:]]
    assert names == sorted(names)  # Supabase runs them in name order
    head_file = tmp_path / names[-1]
    # sql/ changed since the head's file was written (here: the file says otherwise) -> refused, not rewritten
    edited = head_file.read_text(encoding="utf-8").replace("-- pgmlops: JSON validation", "-- pgmlops: JSON checks", 1)
    head_file.write_text(edited, encoding="utf-8")
    with pytest.raises(Exception, match="a change to sql/ ships with a new revision"):
        migrations.export_supabase(tmp_path)
    assert head_file.read_text(encoding="utf-8") == edited
    assert not migrations.supabase_export_is_current(tmp_path)


def test_the_supabase_seed_applies_twice_to_a_migrated_database(fresh_db_url: str) -> None:
    for _ in range(2):
        run = subprocess.run(["psql", fresh_db_url, "-v", "ON_ERROR_STOP=1", "-q",
                              "-f", str(ROOT / "supabase" / "seed.sql")], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
    assert scalar(fresh_db_url, "select string_agg(name, ',' order by name) from ml.tenants") == "Acme,Globex"
    assert scalar(fresh_db_url, "select count(*) from ml.tenant_members") == 3


def test_supabase_migrations_build_the_same_database_as_the_migrations(server: Server, db_url: str) -> None:
    url = server.empty_database()
    for export in sorted(SUPABASE_MIGRATIONS.glob("*_pgmlops*.sql")):
        run = subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-q", "-f", str(export)],
                             capture_output=True, text=True)
        assert run.returncode == 0, f"{export.name}: {run.stderr}"
    assert migrations.current(url) == migrations.head()
    assert_same_catalog(db_url, url)


def test_a_supabase_project_at_the_released_schema_upgrades_with_the_new_files(server: Server, db_url: str) -> None:
    """A project that ran the first export gets the newer files only, and ends where a fresh one does."""
    url = server.empty_database()
    files = sorted(SUPABASE_MIGRATIONS.glob("*_pgmlops*.sql"))
    run = subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-q", "-f", str(files[0])], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert migrations.current(url) == RELEASED_SCHEMA
    migrations.upgrade(url)  # what `pgmlops migrate` would do; `supabase db push` runs the same files
    assert_same_catalog(db_url, url)


# -- the auth shim and roles -------------------------------------------------------------------


def test_the_auth_shim_reads_claims_as_supabase_does(conn: psycopg.Connection[Any]) -> None:
    assert conn.execute("select auth.uid(), auth.role(), auth.jwt()").fetchone() == (None, None, None)
    conn.execute("""select set_config('request.jwt.claims',
                    '{"sub": "6f1c1f43-5a0e-4c4b-9d55-0b6c3b6ad0a1", "role": "authenticated", "email": "a@b.c"}', false)""")
    uid, role, jwt = conn.execute("select auth.uid()::text, auth.role(), auth.jwt()").fetchone()
    assert (uid, role, jwt["email"]) == ("6f1c1f43-5a0e-4c4b-9d55-0b6c3b6ad0a1", "authenticated", "a@b.c")
    conn.execute("select set_config('request.jwt.claims', '', false)")
    # the legacy per-claim settings win, as in Supabase
    conn.execute("select set_config('request.jwt.claim.sub', '11111111-1111-1111-1111-111111111111', false)")
    assert conn.execute("select auth.uid()::text").fetchone()[0] == "11111111-1111-1111-1111-111111111111"
    conn.execute("select set_config('request.jwt.claim.sub', '', false)")


def test_an_existing_auth_schema_is_left_alone(server: Server) -> None:
    url = server.empty_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create schema auth")
        conn.execute("create function auth.uid() returns uuid language sql stable as "
                     "$$ select '22222222-2222-2222-2222-222222222222'::uuid $$")
        conn.execute("create table auth.users (id uuid primary key)")
    migrations.upgrade(url)
    assert scalar(url, "select auth.uid()::text") == "22222222-2222-2222-2222-222222222222"
    assert scalar(url, "select to_regprocedure('auth.jwt()')") is None
    assert scalar(url, "select value from ml_private.settings where key = 'auth_shim'") is False
    # On Supabase, memberships go with the user.
    assert scalar(url, "select count(*) from pg_constraint where conname = 'tenant_members_user_fk'") == 1
    migrations.downgrade(url, "base")
    assert scalar(url, "select to_regprocedure('auth.uid()') is not null")


def test_supabase_roles_exist_with_the_right_attributes(conn: psycopg.Connection[Any]) -> None:
    rows = dict((r[0], r[1:]) for r in conn.execute(
        "select rolname, rolcanlogin, rolbypassrls from pg_roles "
        "where rolname in ('anon', 'authenticated', 'service_role')").fetchall())
    assert rows == {"anon": (False, False), "authenticated": (False, False), "service_role": (False, True)}


def test_installing_needs_a_role_that_bypasses_rls(server: Server) -> None:
    url = server.empty_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("drop role if exists pgmlops_weak")
        conn.execute("create role pgmlops_weak login password 'weak'")
        conn.execute("grant create on database " + url.rpartition("/")[2] + " to pgmlops_weak")
    weak = url.replace("postgres:postgres@", "pgmlops_weak:weak@")
    try:
        with pytest.raises(Exception, match="SUPERUSER or BYPASSRLS"):
            migrations.upgrade(weak)
        assert scalar(url, "select count(*) from pg_namespace where nspname = 'ml'") == 0
    finally:
        server.drop(url)
        with psycopg.connect(server.admin_url, autocommit=True) as conn:
            conn.execute("drop role if exists pgmlops_weak")


# -- the embedded server -----------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["embedded"])
def test_migrations_round_trip_on_the_embedded_server(embedded_server: Server, backend: str) -> None:
    url = embedded_server.empty_database()
    migrations.upgrade(url)
    migrations.downgrade(url, RELEASED_SCHEMA)
    assert migrations.current(url) == RELEASED_SCHEMA
    migrations.upgrade(url)
    assert migrations.current(url) == migrations.head()
    assert scalar(url, "select ml.capabilities() ->> 'partitioning'") == "native"
    assert scalar(url, "select count(*) from ml_private.repeatable_files") == len(_repeatables.FILES)


@pytest.mark.parametrize("backend", ["embedded"])
def test_the_released_schema_upgrades_on_the_embedded_server(embedded_server: Server, backend: str) -> None:
    url = embedded_server.empty_database()
    migrations.upgrade(url, RELEASED_SCHEMA)
    with psycopg.connect(url, autocommit=True) as conn:
        tenants = {name: make_released_tenant(conn, name) for name in ("a", "b")}
        before = table_digests(conn)
        values_before = feature_values_as_json(conn)
    migrations.upgrade(url)
    with psycopg.connect(url, autocommit=True) as conn:
        assert_rows_kept(before, table_digests(conn))
        assert feature_values_as_json(conn) == values_before
    assert_partitions_show_no_other_tenant(url, tenants["a"]["owner"], tenants["b"]["id"])
