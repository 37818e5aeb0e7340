"""The model registry: versions with checked artifacts, aliases, approvals, promotion policies and gates, the audit log.

On the real server. Versions are registered the way the train handler registers them: a service
caller (the worker) acting for the tenant starts and finishes a run, then calls
ml.register_model_version with the artifact's bytes and their SHA-256. People (owners, admins,
ml engineers, viewers) act through pgmlops.db.tenant_context, as PostgREST would run their calls.
"""

from __future__ import annotations

import hashlib
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from pgmlops import models as registry
from pgmlops.db import tenant_context
from pgmlops.errors import AccessDenied, InvalidState, NotFound

from .conftest import act_for
from .training_data import member, refused

Conn = psycopg.Connection[Any]

SIGNATURE = {"inputs": [{"name": "spend", "dtype": "float"}], "outputs": [{"name": "churned", "dtype": "int"}],
             "task": "classification", "classes": [0, 1]}
GOOD = {"roc_auc": 0.95, "log_loss": 0.2}


def one(conn: Conn, query: str, *args: Any) -> Any:
    row = conn.execute(query, args).fetchone()
    assert row is not None
    return row[0]


@pytest.fixture
def project(conn: Conn, tenant: str) -> tuple[str, str]:
    """Project `churn` (classification, target churned) and a training set labelled churned."""
    project_id = str(one(conn, "select ml.create_project('churn', 'classification', 'churned')"))
    conn.execute("select ml.create_feature_group('customer', 'customer', %s)", (Jsonb({"spend": {"dtype": "float"}}),))
    conn.execute("select ml.ingest('customer', %s)", (Jsonb([{"customer": "c1", "event_time": "2026-01-01T00:00:00Z",
                                                            "spend": 1.5}]),))
    dataset = str(one(conn, "select ml.create_training_set('churn_set', "
                            "$$select 'c1' as customer, timestamptz '2026-01-02' as event_time, 1 as churned$$, "
                            "array['customer:spend'], 'churned')"))
    return project_id, dataset


def finished_run(conn: Conn, project: tuple[str, str], metrics: dict[str, Any] | None = None,
                 latency_ms: float | None = 0.3, job: int | None = None) -> str:
    run = str(one(conn, "select ml.start_run(%s, %s, 'hist_gradient_boosting', '{}', '{}', %s, '{}')",
                  project[0], job, project[1]))
    conn.execute("select ml.finish_run(%s, 'succeeded', %s, 1.0, 100, %s)", (run, Jsonb(metrics or GOOD), latency_ms))
    return run


def register(conn: Conn, project: tuple[str, str], model: str = "churn", metrics: dict[str, Any] | None = None,
             latency_ms: float | None = 0.3, artifact: bytes | None = None, run: str | None = None) -> dict[str, Any]:
    """A finished run and its model version (the run's metrics); returns {model_version_id, model, version}."""
    run = run or finished_run(conn, project, metrics, latency_ms)
    artifact = artifact if artifact is not None else f"model bytes {run}".encode()
    return dict(one(conn, "select ml.register_model_version(%s, %s, %s, 'skops', %s, %s, null, %s)",
                    run, model, artifact, hashlib.sha256(artifact).hexdigest(), Jsonb(SIGNATURE), Jsonb({"team": "risk"})))


def alias_of(conn: Conn, model: str, alias: str) -> int | None:
    """The version ``alias`` of ``model`` points at, in the tenant the connection acts for."""
    row = conn.execute("select v.version from ml.model_aliases a join ml.model_versions v on v.id = a.model_version_id "
                       "join ml.models m on m.id = a.model_id where m.tenant_id = ml.current_tenant() "
                       "and m.name = %s and a.alias = %s", (model, alias)).fetchone()
    return row[0] if row else None


def audit(conn: Conn, tenant: str, action: str | None = None) -> list[tuple[Any, ...]]:
    """(action, actor, before, after) of the tenant's audit rows, oldest first; one action's only when given."""
    return conn.execute("select action, actor::text, before, after from ml.audit_log where tenant_id = %s "
                        "and (%s::text is null or action = %s) order by id", (tenant, action, action)).fetchall()


def as_member(conn: Conn, tenant: str, role: str) -> str:
    return member(conn, tenant, role)


# -- versions and artifacts ---------------------------------------------------------------------


def test_versions_are_numbered_one_two_three_per_model(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    assert [register(conn, project)["version"] for _ in range(3)] == [1, 2, 3]
    assert register(conn, project, model="churn-small")["version"] == 1
    assert register(conn, project)["version"] == 4
    assert one(conn, "select count(*) from ml.models where tenant_id = %s", tenant) == 2


def test_a_version_holds_its_artifact_run_dataset_metrics_and_signature(conn: Conn, tenant: str,
                                                                       project: tuple[str, str]) -> None:
    run = finished_run(conn, project, {"roc_auc": 0.91})
    created = register(conn, project, artifact=b"\x00skops\xff", run=run)
    assert created["model"] == "churn" and created["version"] == 1
    row = conn.execute(
        "select run_id::text, dataset_id::text, algorithm, metrics, tags, signature, artifact, artifact_format, "
        "artifact_size, artifact_sha256 from ml.model_versions where id = %s", (created["model_version_id"],)).fetchone()
    assert row == (run, project[1], "hist_gradient_boosting", {"roc_auc": 0.91}, {"team": "risk"}, SIGNATURE,
                   b"\x00skops\xff", "skops", 7, hashlib.sha256(b"\x00skops\xff").hexdigest())
    artifact = conn.execute("select * from ml.model_artifact('churn', 1)").fetchone()
    assert artifact == (b"\x00skops\xff", "skops", hashlib.sha256(b"\x00skops\xff").hexdigest())


def test_a_digest_that_does_not_match_the_bytes_is_refused_and_nothing_is_written(
        conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    run = finished_run(conn, project)
    with refused("22023", r"artifact_sha256: does not match the artifact \(given [0-9a-f]{64}, computed [0-9a-f]{64}\)"):
        conn.execute("select ml.register_model_version(%s, 'churn', %s, 'skops', %s, %s, null)",
                     (run, b"tampered", hashlib.sha256(b"original").hexdigest(), Jsonb(SIGNATURE)))
    assert one(conn, "select count(*) from ml.model_versions where tenant_id = %s", tenant) == 0
    assert one(conn, "select count(*) from ml.models where tenant_id = %s", tenant) == 0
    assert audit(conn, tenant) == []


@pytest.mark.parametrize("artifact,fmt,digest,signature,message", [
    (b"x", "pickle", None, SIGNATURE, "artifact_format: must be skops or torch"),
    (b"x", "skops", "ABC", SIGNATURE, "artifact_sha256: must be 64 lowercase hex digits"),
    (b"", "skops", None, SIGNATURE, "artifact: must not be empty"),
    (b"x", "skops", None, {"inputs": [], "outputs": []}, r"signature: \$\.inputs: must have at least 1 items"),
    (b"x", "skops", None, {"inputs": [{"name": "a"}], "outputs": []}, r"signature: \$\.inputs\[0\]\.dtype: is required"),
])
def test_registration_rules(conn: Conn, tenant: str, project: tuple[str, str], artifact: bytes, fmt: str,
                            digest: str | None, signature: dict[str, Any], message: str) -> None:
    run = finished_run(conn, project)
    with refused("22023", message):
        conn.execute("select ml.register_model_version(%s, 'churn', %s, %s, %s, %s, null)",
                     (run, artifact, fmt, digest or hashlib.sha256(artifact).hexdigest(), Jsonb(signature)))


def test_an_artifact_over_the_size_limit_is_refused(fresh_db_url: str) -> None:
    # The limit is 256 MB; this test lowers it to 1 kB in its own database rather than send 256 MB.
    with psycopg.connect(fresh_db_url, autocommit=True) as conn:
        conn.execute("create or replace function ml_private.max_artifact_bytes() returns bigint "
                     "language sql immutable set search_path = '' as $$ select 1024::bigint $$")
        tenant = str(one(conn, "select ml.create_tenant('big')"))
        conn.execute("select set_config('pgmlops.tenant_id', %s, false)", (tenant,))
        conn.execute("select ml.create_project('churn', 'classification', 'churned')")
        run = one(conn, "select ml.start_run(id, null, 'ridge', '{}', '{}', null, '{}') from ml.projects")
        big = b"\x01" * 1025
        with refused("54000", "artifact: must be at most 1024 bytes"):
            conn.execute("select ml.register_model_version(%s, 'churn', %s, 'skops', %s, %s, null)",
                         (run, big, hashlib.sha256(big).hexdigest(), Jsonb(SIGNATURE)))
        assert register(conn, ("", ""), run=str(run), artifact=b"\x01" * 1024)["version"] == 1


def test_a_failed_run_registers_nothing(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    run = str(one(conn, "select ml.start_run(%s, null, 'ridge', '{}', '{}', %s, '{}')", *project))
    conn.execute("select ml.finish_run(%s, 'failed', null, 1, null, null, 'boom')", (run,))
    with refused("55000", "only a running or succeeded run registers a model"):
        register(conn, project, run=run)


def test_a_model_stays_in_its_project(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    register(conn, project)
    other = str(one(conn, "select ml.create_project('other', 'classification', 'churned')"))
    with refused("22023", "model: churn belongs to project churn, not to the run's project other"):
        register(conn, (other, project[1]))


def test_versions_are_registered_by_workers_only(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    run = finished_run(conn, project)
    owner = as_member(conn, tenant, "owner")
    with refused("42501"), tenant_context(conn, tenant, user=owner):
        register(conn, project, run=run)


def test_created_by_is_the_user_who_queued_the_training(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    engineer = as_member(conn, tenant, "ml_engineer")
    with tenant_context(conn, tenant, user=engineer):
        job = one(conn, "select ml.train('churn', %s, 'hist_gradient_boosting')", project[1])
    created = register(conn, project, run=finished_run(conn, project, job=job))
    assert one(conn, "select created_by::text from ml.model_versions where id = %s", created["model_version_id"]) == engineer


def test_a_version_is_downstream_of_its_run_dataset_project_and_feature_groups(
        conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    created = register(conn, project)
    lineage = one(conn, "select ml.lineage_of('model_version', %s)", created["model_version_id"])
    assert lineage["node"]["name"] == "churn@1"
    assert sorted((n["kind"], n["depth"]) for n in lineage["upstream"]) == [
        ("dataset", 1), ("feature_group", 2), ("project", 1), ("run", 1)]
    relations = {(e["from_kind"], e["relation"]) for e in lineage["edges"] if e["to_kind"] == "model_version"}
    assert relations == {("dataset", "trained_on"), ("run", "produced"), ("project", "contains")}
    downstream = one(conn, "select ml.lineage_of('dataset', %s)", project[1])["downstream"]
    assert {n["kind"] for n in downstream} == {"run", "model_version"}


def test_model_version_reads_by_number_alias_or_newest(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    register(conn, project, metrics={"roc_auc": 0.8})
    register(conn, project, metrics={"roc_auc": 0.9})
    conn.execute("select ml.set_alias('churn', 'challenger', 1)")
    assert one(conn, "select ml.model_version('churn') ->> 'version'") == "2"
    assert one(conn, "select ml.model_version('churn', 1) -> 'metrics'") == {"roc_auc": 0.8}
    assert one(conn, "select ml.model_version('churn', alias => 'challenger') ->> 'version'") == "1"
    assert one(conn, "select ml.model_version('churn@challenger') -> 'aliases'") == ["challenger"]
    doc = one(conn, "select ml.model_version('churn@2')")
    assert (doc["project"], doc["task"], doc["signature"], doc["inference_latency_ms"]) == (
        "churn", "classification", SIGNATURE, 0.3)
    assert "artifact" not in doc
    with refused("P0002", "model churn has no version 7"):
        conn.execute("select ml.model_version('churn', 7)")
    with refused("P0002", "model churn has no alias 'champion'"):
        conn.execute("select ml.model_version('churn@champion')")
    with refused("P0002", "model 'nope' does not exist"):
        conn.execute("select ml.model_version('nope')")
    with refused("22023", "name a version or an alias, not both"):
        conn.execute("select ml.model_version('churn', 1, 'challenger')")


def test_viewers_read_versions_and_artifacts(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    register(conn, project, artifact=b"weights")
    viewer = as_member(conn, tenant, "viewer")
    with tenant_context(conn, tenant, user=viewer):
        assert one(conn, "select ml.model_version('churn@1') ->> 'artifact_size'") == "7"
        assert one(conn, "select artifact from ml.model_artifact('churn@1', null)") == b"weights"


# -- aliases ------------------------------------------------------------------------------------


def test_an_alias_is_set_moved_and_removed_with_an_audit_row_each(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    for _ in range(2):
        register(conn, project)
    engineer = as_member(conn, tenant, "ml_engineer")
    with tenant_context(conn, tenant, user=engineer):
        assert one(conn, "select ml.set_alias('churn', 'challenger', 1) ->> 'version'") == "1"
        conn.execute("select ml.set_alias('churn', 'challenger', 1)")  # no change, no audit row
        conn.execute("select ml.set_alias('churn', 'challenger', 2)")
    assert alias_of(conn, "churn", "challenger") == 2
    conn.execute("select ml.set_alias('churn', 'challenger', null)")
    assert alias_of(conn, "churn", "challenger") is None
    rows = [(a, actor, (b or {}).get("version"), (af or {}).get("version"))
            for a, actor, b, af in audit(conn, tenant) if a.startswith("alias.")]
    assert rows == [("alias.set", engineer, None, 1), ("alias.moved", engineer, 1, 2), ("alias.removed", None, 2, None)]
    events = [r[0] for r in conn.execute("select event from ml.events where tenant_id = %s and topic = 'models' "
                                         "and event like 'alias.%%' order by id", (tenant,))]
    assert events == ["alias.set", "alias.moved", "alias.removed"]


@pytest.mark.parametrize("alias", ["Champion", "1st", "", "a" * 64, "with space"])
def test_alias_names_are_lowercase_words(conn: Conn, tenant: str, project: tuple[str, str], alias: str) -> None:
    register(conn, project)
    with refused("22023", "alias: .* must be lowercase letters, digits, _ and -"):
        conn.execute("select ml.set_alias('churn', %s, 1)", (alias,))


def test_any_alias_name_works_and_aliases_are_per_model(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    register(conn, project)
    register(conn, project, model="churn-lite")
    conn.execute("select ml.set_alias('churn', 'shadow-eu_2', 1)")
    conn.execute("select ml.set_alias('churn-lite', 'shadow-eu_2', 1)")
    assert one(conn, "select ml.model('churn') -> 'aliases'") == {"shadow-eu_2": 1}


def test_a_viewer_cannot_move_an_alias(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    register(conn, project)
    viewer = as_member(conn, tenant, "viewer")
    with refused("42501"), tenant_context(conn, tenant, user=viewer):
        conn.execute("select ml.set_alias('churn', 'challenger', 1)")
    assert alias_of(conn, "churn", "challenger") is None


def test_an_alias_with_a_policy_moves_only_through_promote(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    register(conn, project)
    conn.execute("select ml.set_promotion_policy('churn', 'champion', '{\"min_approvals\": 1}')")
    with refused("55000", "alias champion of model churn has a promotion policy: move it with ml.promote"):
        conn.execute("select ml.set_alias('churn', 'champion', 1)")
    assert alias_of(conn, "churn", "champion") is None


# -- approvals ----------------------------------------------------------------------------------


def test_admins_and_ml_engineers_approve_and_a_second_decision_replaces_the_first(
        conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    register(conn, project)
    admin, engineer = as_member(conn, tenant, "admin"), as_member(conn, tenant, "ml_engineer")
    with tenant_context(conn, tenant, user=admin):
        assert one(conn, "select ml.approve('churn', 1, 'approved', 'looks good')") == {
            "model": "churn", "version": 1, "decision": "approved", "approvals": 1, "rejections": 0}
    with tenant_context(conn, tenant, user=engineer):
        conn.execute("select ml.approve('churn', 1, 'rejected', 'recall too low')")
        assert one(conn, "select ml.approve('churn', 1, 'approved', 'fixed')")["approvals"] == 2
    assert one(conn, "select count(*) from ml.model_approvals where tenant_id = %s", tenant) == 2
    rows = [(actor, before, after["decision"]) for _, actor, before, after in audit(conn, tenant, "approval.recorded")]
    assert rows == [(admin, None, "approved"), (engineer, None, "rejected"),
                    (engineer, {"decision": "rejected", "comment": "recall too low"}, "approved")]


def test_an_owner_approves_too(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    register(conn, project)
    owner = as_member(conn, tenant, "owner")
    with tenant_context(conn, tenant, user=owner):
        assert one(conn, "select ml.approve('churn', 1, 'approved')")["approvals"] == 1


def test_a_viewer_cannot_approve(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    register(conn, project)
    viewer = as_member(conn, tenant, "viewer")
    with refused("42501", "role viewer .* may not do this"), tenant_context(conn, tenant, user=viewer):
        conn.execute("select ml.approve('churn', 1, 'approved')")
    assert one(conn, "select count(*) from ml.model_approvals where tenant_id = %s", tenant) == 0


def test_a_service_caller_cannot_approve(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    register(conn, project)
    with refused("42501", "approvals are made by people"):
        conn.execute("select ml.approve('churn', 1, 'approved')")


def test_a_decision_is_approved_or_rejected(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    register(conn, project)
    engineer = as_member(conn, tenant, "ml_engineer")
    with refused("22023", "decision: must be approved or rejected"), tenant_context(conn, tenant, user=engineer):
        conn.execute("select ml.approve('churn', 1, 'maybe')")


# -- promotion policies -------------------------------------------------------------------------


def test_a_policy_is_set_replaced_and_removed_with_audit_rows(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    admin = as_member(conn, tenant, "admin")
    policy = {"min_metrics": {"roc_auc": 0.9}, "max_metrics": {"log_loss": 0.4}, "max_inference_latency_ms": 50,
              "min_approvals": 1, "min_hours_as_challenger": 24}
    with tenant_context(conn, tenant, user=admin):
        assert one(conn, "select ml.set_promotion_policy('churn', 'champion', %s)", Jsonb(policy)) == policy
        assert one(conn, "select ml.set_promotion_policy('churn', 'champion', '{\"min_approvals\": 2}')") == {
            "min_metrics": {}, "max_metrics": {}, "min_approvals": 2}
    conn.execute("select ml.set_promotion_policy('churn', 'champion', null)")
    assert one(conn, "select count(*) from ml.promotion_policies where tenant_id = %s", tenant) == 0
    rows = [(a, actor, (b or {}).get("policy", {}).get("min_approvals"), (af or {}).get("policy", {}).get("min_approvals"))
            for a, actor, b, af in audit(conn, tenant) if a.startswith("policy.")]
    assert rows == [("policy.set", admin, None, 1), ("policy.set", admin, 1, 2), ("policy.removed", None, 2, None)]


def test_ml_engineers_and_viewers_cannot_set_policies(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    for role in ("ml_engineer", "viewer"):
        user = as_member(conn, tenant, role)
        with refused("42501", f"role {role} .* may not do this"), tenant_context(conn, tenant, user=user):
            conn.execute("select ml.set_promotion_policy('churn', 'champion', '{\"min_approvals\": 0}')")


@pytest.mark.parametrize("policy,message", [
    ({"min_metrics": {"roc_auc": "high"}}, r"policy: \$\.min_metrics\.roc_auc: must be of type number, got string"),
    ({"min_approvals": -1}, r"policy: \$\.min_approvals: must be >= 0, got -1"),
    ({"min_approvals": 1.5}, r"policy: \$\.min_approvals: must be of type integer or null, got a fraction"),
    ({"max_inference_latency_ms": 0}, r"policy: \$\.max_inference_latency_ms: must be > 0, got 0"),
    ({"min_hours": 3}, r"policy: \$\.min_hours: is not an allowed property"),
])
def test_policy_rules(conn: Conn, tenant: str, project: tuple[str, str], policy: dict[str, Any], message: str) -> None:
    with refused("22023", message):
        conn.execute("select ml.set_promotion_policy('churn', 'champion', %s)", (Jsonb(policy),))


def test_a_policy_needs_a_known_project(conn: Conn, tenant: str) -> None:
    with refused("P0002", "project 'nope' does not exist"):
        conn.execute("select ml.set_promotion_policy('nope', 'champion', '{}')")


# -- promotion ----------------------------------------------------------------------------------

STRICT = {"min_metrics": {"roc_auc": 0.9}, "max_metrics": {"log_loss": 0.4}, "max_inference_latency_ms": 50,
          "min_approvals": 1, "min_hours_as_challenger": 24}


def test_a_version_failing_gates_is_refused_with_each_gate_and_nothing_changes(
        conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    register(conn, project)                                                         # v1: the champion
    conn.execute("select ml.set_alias('churn', 'champion', 1)")
    register(conn, project, metrics={"roc_auc": 0.81, "log_loss": 0.52}, latency_ms=80)  # v2
    conn.execute("select ml.set_promotion_policy('churn', 'champion', %s)", (Jsonb(STRICT),))
    before = (audit(conn, tenant), alias_of(conn, "churn", "champion"))
    with refused("23514") as info:
        conn.execute("select ml.promote('churn', 2)")
    message = info.value.diag.message_primary  # type: ignore[union-attr]
    assert message.startswith("promotion of churn@2 to champion refused: ")
    for gate in ("roc_auc 0.81 < 0.9", "log_loss 0.52 > 0.4", "inference_latency_ms 80 > 50", "approvals 0 < 1",
                 "hours_as_challenger: version 2 is not the challenger"):
        assert gate in message, gate
    assert (audit(conn, tenant), alias_of(conn, "churn", "champion")) == before
    assert audit(conn, tenant, "model.promoted") == []


def test_a_missing_metric_or_latency_fails_its_gate(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    register(conn, project, metrics={"accuracy": 0.99}, latency_ms=None)
    conn.execute("select ml.set_promotion_policy('churn', 'champion', %s)",
                 (Jsonb({"min_metrics": {"roc_auc": 0.9}, "max_inference_latency_ms": 50}),))
    with refused("23514", r"roc_auc missing \(needs >= 0.9\); inference_latency_ms unknown \(needs <= 50\)"):
        conn.execute("select ml.promote('churn', 1)")


def test_an_approved_version_passing_every_gate_is_promoted_and_audited(
        conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    register(conn, project, metrics={"roc_auc": 0.8, "log_loss": 0.5})
    conn.execute("select ml.set_alias('churn', 'champion', 1)")
    created = register(conn, project, metrics={"roc_auc": 0.93, "log_loss": 0.3}, latency_ms=4)
    conn.execute("select ml.set_alias('churn', 'challenger', 2)")
    conn.execute("update ml.audit_log set at = now() - interval '25 hours' where tenant_id = %s and action = 'alias.set' "
                 "and after ->> 'alias' = 'challenger'", (tenant,))
    conn.execute("select ml.set_promotion_policy('churn', 'champion', %s)", (Jsonb(STRICT),))
    reviewer, engineer = as_member(conn, tenant, "admin"), as_member(conn, tenant, "ml_engineer")
    with tenant_context(conn, tenant, user=reviewer):
        conn.execute("select ml.approve('churn', 2, 'approved')")
    with tenant_context(conn, tenant, user=engineer):
        result = one(conn, "select ml.promote('churn', 2)")
    assert (result["version"], result["previous_version"], result["changed"]) == (2, 1, True)
    assert all(g["passed"] for g in result["gates"])
    assert alias_of(conn, "churn", "champion") == 2
    [(action, actor, before, after)] = audit(conn, tenant, "model.promoted")
    assert actor == engineer
    assert (before["version"], after["version"], after["model_version_id"]) == (1, 2, created["model_version_id"])
    assert {g["gate"] for g in after["gates"]} == {"min_metrics.roc_auc", "max_metrics.log_loss", "max_inference_latency_ms",
                                                  "min_approvals", "rejections", "min_hours_as_challenger"}
    assert one(conn, "select count(*) from ml.events where tenant_id = %s and event = 'model.promoted'", tenant) == 1


def test_hours_as_challenger_count_from_the_audit_log(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    register(conn, project)
    conn.execute("select ml.set_promotion_policy('churn', 'champion', '{\"min_hours_as_challenger\": 24}')")
    conn.execute("select ml.set_alias('churn', 'challenger', 1)")
    with refused("23514", r"hours_as_challenger 0 < 24"):
        conn.execute("select ml.promote('churn', 1)")
    # The owner backdates the row that made version 1 the challenger: 23 hours are not enough, 24.5 are.
    for hours, promoted in ((23, False), (24.5, True)):
        conn.execute("update ml.audit_log set at = now() - make_interval(secs => %s * 3600) "
                     "where tenant_id = %s and action = 'alias.set'", (hours, tenant))
        check = one(conn, "select ml.check_promotion('churn', 1)")
        assert check["passed"] is promoted, check
        assert f"hours_as_challenger {hours} " in next(g["message"] for g in check["gates"]
                                                       if g["gate"] == "min_hours_as_challenger")
    assert one(conn, "select ml.promote('churn', 1) ->> 'changed'") == "true"


def test_hours_as_challenger_restart_when_the_alias_comes_back(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    register(conn, project)
    register(conn, project)
    conn.execute("select ml.set_promotion_policy('churn', 'champion', '{\"min_hours_as_challenger\": 24}')")
    conn.execute("select ml.set_alias('churn', 'challenger', 1)")
    conn.execute("update ml.audit_log set at = now() - interval '48 hours' where tenant_id = %s", (tenant,))
    conn.execute("select ml.set_alias('churn', 'challenger', 2)")
    conn.execute("select ml.set_alias('churn', 'challenger', 1)")  # back: the clock starts again
    with refused("23514", r"hours_as_challenger 0 < 24"):
        conn.execute("select ml.promote('churn', 1)")


def test_a_rejected_version_is_not_promoted_even_without_a_policy(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    register(conn, project)
    engineer = as_member(conn, tenant, "ml_engineer")
    with tenant_context(conn, tenant, user=engineer):
        conn.execute("select ml.approve('churn', 1, 'rejected', 'leaks the label')")
    with refused("23514", r"rejections 1 > 0"):
        conn.execute("select ml.promote('churn', 1)")
    assert alias_of(conn, "churn", "champion") is None


def test_without_a_policy_a_version_is_promoted(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    register(conn, project)
    assert one(conn, "select ml.promote('churn', 1, 'production')")["changed"] is True
    assert alias_of(conn, "churn", "production") == 1
    again = one(conn, "select ml.promote('churn', 1, 'production')")
    assert again["changed"] is False
    assert len(audit(conn, tenant, "model.promoted")) == 1


def test_policies_apply_to_their_alias_and_project(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    register(conn, project, metrics={"roc_auc": 0.5})
    conn.execute("select ml.set_promotion_policy('churn', 'champion', '{\"min_metrics\": {\"roc_auc\": 0.9}}')")
    assert one(conn, "select ml.promote('churn', 1, 'challenger')")["changed"] is True
    with refused("23514", "roc_auc 0.5 < 0.9"):
        conn.execute("select ml.promote('churn', 1)")


def test_metric_gates_read_nested_metrics_by_path(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    register(conn, project, metrics={"cv": {"roc_auc": 0.95}, "roc_auc": 0.7})
    conn.execute("select ml.set_promotion_policy('churn', 'champion', '{\"min_metrics\": {\"cv.roc_auc\": 0.9}}')")
    assert one(conn, "select ml.promote('churn', 1)")["changed"] is True


def test_a_viewer_cannot_promote(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    register(conn, project)
    viewer = as_member(conn, tenant, "viewer")
    with refused("42501"), tenant_context(conn, tenant, user=viewer):
        conn.execute("select ml.promote('churn', 1)")
    with tenant_context(conn, tenant, user=viewer):
        assert one(conn, "select ml.check_promotion('churn', 1) ->> 'passed'") == "true"


# -- the audit log ------------------------------------------------------------------------------


def test_every_registry_change_is_audited_and_published(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    register(conn, project)
    conn.execute("select ml.set_alias('churn', 'challenger', 1)")
    conn.execute("select ml.set_promotion_policy('churn', 'champion', '{\"min_approvals\": 1}')")
    engineer = as_member(conn, tenant, "ml_engineer")
    with tenant_context(conn, tenant, user=engineer):
        conn.execute("select ml.approve('churn', 1, 'approved')")
        conn.execute("select ml.promote('churn', 1)")
    actions = [(a, actor) for a, actor, _, _ in audit(conn, tenant)]
    assert actions == [("model.created", None), ("model_version.created", None), ("alias.set", None),
                       ("policy.set", None), ("approval.recorded", engineer), ("model.promoted", engineer)]
    published = [r[0] for r in conn.execute(
        "select event from ml.events where tenant_id = %s and topic = 'models' and payload ? 'audit_id' order by id", (tenant,))]
    assert published == [a for a, _ in actions]


def test_the_audit_log_is_append_only_for_clients_and_the_service_role(conn: Conn, tenant: str,
                                                                       project: tuple[str, str]) -> None:
    register(conn, project)
    owner = as_member(conn, tenant, "owner")
    for caller in ((owner, "authenticated"), (None, "service_role")):
        for statement in ("update ml.audit_log set action = 'forged'", "delete from ml.audit_log"):
            with refused("42501"), tenant_context(conn, tenant, user=caller[0], role=caller[1]):
                conn.execute(statement)
    assert len(audit(conn, tenant)) == 2


def test_a_member_of_another_tenant_sees_no_model(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    register(conn, project)
    theirs = str(one(conn, "select ml.create_tenant('theirs')"))
    stranger = member(conn, theirs, "owner")
    act_for(conn, None)  # the stranger names their tenant in their JWT
    with refused("P0002", "model 'churn' does not exist"), tenant_context(conn, theirs, user=stranger):
        conn.execute("select ml.model_version('churn')")
    with refused("42501"), tenant_context(conn, tenant, user=stranger):
        conn.execute("select ml.model_version('churn')")
    with tenant_context(conn, theirs, user=stranger):
        assert one(conn, "select count(*) from ml.model_versions") == 0


# -- Python -------------------------------------------------------------------------------------


def test_references_parse_as_model_version_or_alias() -> None:
    assert registry.parse_ref("churn") == registry.ModelRef("churn")
    assert registry.parse_ref("churn@3") == registry.ModelRef("churn", 3)
    assert registry.parse_ref("churn@champion") == registry.ModelRef("churn", alias="champion")
    assert str(registry.parse_ref("churn-v2@champion")) == "churn-v2@champion"
    with pytest.raises(ValueError):
        registry.parse_ref("Churn@")


def test_the_python_registry_api(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    register(conn, project, metrics={"roc_auc": 0.7})
    register(conn, project)
    assert registry.list_models(conn)[0] | {"created_at": None} == {
        "name": "churn", "project": "churn", "task": "classification", "versions": 2, "latest_version": 2,
        "aliases": {}, "created_at": None}
    assert registry.set_alias(conn, "churn", "challenger", 2)["version"] == 2
    assert registry.model_version(conn, "churn@challenger")["version"] == 2
    assert registry.show(conn, "churn")["aliases"] == {"challenger": 2}
    assert registry.show(conn, "churn@1")["metrics"] == {"roc_auc": 0.7}
    assert registry.set_policy(conn, "churn", {"min_metrics": {"roc_auc": 0.9}}) == {
        "min_metrics": {"roc_auc": 0.9}, "max_metrics": {}, "min_approvals": 0}
    with pytest.raises(registry.PromotionRefused) as info:
        registry.promote(conn, "churn", 1)
    assert info.value.sqlstate == "23514" and info.value.failed == ["roc_auc 0.7 < 0.9"]
    assert registry.check_promotion(conn, "churn", 2)["passed"] is True
    assert registry.promote(conn, "churn", 2)["changed"] is True
    assert registry.list_models(conn, project="churn")[0]["aliases"] == {"challenger": 2, "champion": 2}
    with pytest.raises(InvalidState):
        registry.set_alias(conn, "churn", "champion", 1)
    with pytest.raises(NotFound):
        registry.show(conn, "nope")
    with pytest.raises(AccessDenied):
        registry.approve(conn, "churn", 2)  # a service caller is nobody to approve
    engineer = as_member(conn, tenant, "ml_engineer")
    with tenant_context(conn, tenant, user=engineer):
        assert registry.approve(conn, "churn", 2, comment="ok")["approvals"] == 1
    assert registry.list_models(conn, project="other") == []


def test_load_model_checks_the_artifact(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    from sklearn.linear_model import LogisticRegression

    from pgmlops.models import artifacts

    fitted = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    data, fmt, digest = artifacts.dump(fitted)
    run = finished_run(conn, project)
    conn.execute("select ml.register_model_version(%s, 'churn', %s, %s, %s, %s, null)",
                 (run, data, fmt, digest, Jsonb(SIGNATURE)))
    conn.execute("select ml.set_alias('churn', 'champion', 1)")
    loaded = registry.load_model(conn, "churn@champion")
    assert list(loaded.predict([[0.0], [3.0]])) == [0, 1]
    # bytes changed behind the registry's back are refused at load
    conn.execute("update ml.model_versions set artifact = artifact || '\\x00'::bytea, artifact_size = artifact_size + 1")
    with pytest.raises(artifacts.ArtifactError):
        registry.load_model(conn, "churn@1")


def test_deleting_a_tenant_erases_its_projects_runs_models_and_audit(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    run = str(one(conn, "select ml.start_run(%s, null, 'ridge', '{}', '{}', %s, '{}')", *project))
    conn.execute("select ml.log_run_metrics(%s, 1, '{\"loss\": 1}')", (run,))
    register(conn, project, run=run)
    conn.execute("select ml.set_alias('churn', 'challenger', 1)")
    conn.execute("select ml.set_promotion_policy('churn', 'champion', '{}')")
    engineer = as_member(conn, tenant, "ml_engineer")
    with tenant_context(conn, tenant, user=engineer):
        conn.execute("select ml.approve('churn', 1, 'approved')")
    act_for(conn, None)
    conn.execute("delete from ml.tenants where id = %s", (tenant,))
    for table in ("projects", "runs", "run_metrics", "models", "model_versions", "model_aliases", "model_approvals",
                  "promotion_policies", "audit_log"):
        assert one(conn, f"select count(*) from ml.{table} where tenant_id = %s", tenant) == 0, table
