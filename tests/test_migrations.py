"""Alembic migrations, the Supabase export and the auth shim."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgmlops import migrations

from .conftest import Server

ROOT = Path(__file__).resolve().parent.parent


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


def scalar(url: str, sql: str, *args: Any) -> Any:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, args).fetchone()[0]


def test_upgrade_downgrade_and_upgrade_again(server: Server) -> None:
    url = server.empty_database()
    migrations.upgrade(url)
    assert migrations.current(url) == migrations.head() == "0004_training"
    before = objects(url)
    with psycopg.connect(url, autocommit=True) as conn:
        tenant = conn.execute("select ml.create_tenant('survivor')").fetchone()[0]

    migrations.downgrade(url)  # the latest revision: training and the registry go, the feature store stays
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
    assert migrations.current(url) == "0004_training"
    assert objects(url) == before


def test_downgrade_to_base_removes_everything_pgmlops_made(server: Server) -> None:
    url = server.empty_database()
    migrations.upgrade(url)
    migrations.downgrade(url, "base")
    assert migrations.current(url) is None
    assert objects(url) == {"tables": [], "functions": [], "policies": [], "triggers": []}
    assert scalar(url, "select count(*) from pg_namespace where nspname in ('ml', 'ml_private', 'auth')") == 0
    migrations.upgrade(url)
    assert migrations.current(url) == "0004_training"


def test_upgrade_twice_is_a_no_op(db_url: str) -> None:
    before = objects(db_url)
    migrations.upgrade(db_url)
    assert objects(db_url) == before


def test_supabase_export_is_current() -> None:
    assert migrations.supabase_export_is_current(
        ROOT / "supabase" / "migrations", ROOT / "supabase" / "seed.sql", ROOT / "seeds"
    ), "supabase/ is out of date: run `pgmlops supabase export`"


def test_the_supabase_seed_applies_twice_to_a_migrated_database(fresh_db_url: str) -> None:
    for _ in range(2):
        run = subprocess.run(["psql", fresh_db_url, "-v", "ON_ERROR_STOP=1", "-q",
                              "-f", str(ROOT / "supabase" / "seed.sql")], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
    assert scalar(fresh_db_url, "select string_agg(name, ',' order by name) from ml.tenants") == "Acme,Globex"
    assert scalar(fresh_db_url, "select count(*) from ml.tenant_members") == 3


def test_supabase_export_applies_to_an_empty_database_like_the_migrations(server: Server, db_url: str) -> None:
    [export] = sorted((ROOT / "supabase" / "migrations").glob("*_pgmlops.sql"))
    url = server.empty_database()
    run = subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-q", "-f", str(export)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert objects(url) == objects(db_url)
    assert migrations.current(url) == migrations.head()


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


@pytest.mark.parametrize("backend", ["embedded"])
def test_migrations_round_trip_on_the_embedded_server(embedded_server: Server, backend: str) -> None:
    url = embedded_server.empty_database()
    migrations.upgrade(url)
    migrations.downgrade(url)
    assert migrations.current(url) == "0003_features"
    migrations.upgrade(url)
    assert migrations.current(url) == "0004_training"
    assert scalar(url, "select ml.capabilities() ->> 'partitioning'") == "native"
