"""Retraining policies (ml.set_retraining_policy): every field validated, the error naming it as
a path, nothing written; defaults filled and normalized; audited and published. Trigger checks
after each drift report (ml_private.check_retraining_triggers, called by ml.drift_report) on a
deployed model's prediction log with a steady and a drifted window: dataset and feature drift,
a metric drop against its baseline, new labels, a schedule; the cooldown skips; a clean report
records nothing. The history, newest first; tenant isolation."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from pgmlops import retraining
from pgmlops.db import tenant_context
from pgmlops.errors import AccessDenied, InvalidInput, NotFound

from .compile_helpers import one
from .conftest import act_for, make_tenant
from .test_reference_profiles import Reference, frame
from .training_data import member, refused

Conn = psycopg.Connection[Any]

PROJECT = "rt"
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
WINDOWS = {"steady": (NOW - timedelta(hours=30), NOW - timedelta(hours=26)),
           "drifted": (NOW - timedelta(hours=20), NOW - timedelta(hours=16))}

DEFAULTS = {
    "enabled": True,
    "triggers": [{"type": "dataset_drift", "share": 0.5}],
    "cooldown": "1 day",
    "recipe": {"same_as": "champion", "options": {"split": "stratified", "test_size": 0.2, "cv_folds": None,
                                                  "random_state": 42, "model": PROJECT, "tags": {}}},
    "data": {"window": "30 days", "reference_sample": 1000, "stratify": True, "balance": "none", "dedupe": True,
             "exclude_invalid": True},
    "evaluation": {"metric": "roc_auc", "test": "delong", "confidence": 0.95, "min_improvement": 0,
                   "bootstrap_samples": 1000},
    "online": {"mode": "shadow", "min_samples": 500, "significance": 0.05, "canary_weight": None,
               "max_duration": "7 days"},
    "rollback": {"enabled": True, "metric": "roc_auc", "max_drop": 0.05, "window": "1 day"},
    "promotion": "approval",
}


class World:
    """Project ``rt``: a logistic regression on a 600-row training set, deployed, with 400
    predictions logged in a steady window and 400 in a drifted one, every one labelled."""

    def __init__(self, conn: Conn) -> None:
        self.ref = Reference(conn, PROJECT, frame(600, 1))
        self.ref.model()
        self.tenant = self.ref.tenant
        self.labels = 0
        for window, rows in (("steady", frame(400, 2)), ("drifted", frame(400, 3, shift=1.0, tiers=(0.2, 0.3, 0.5), vip=0.6))):
            start, end = WINDOWS[window]
            ids = self.ref.log(rows, start + (end - start) / 2)
            feedback = [{"prediction_id": i, "label": int(y)} for i, y in zip(ids, rows["churned"], strict=True)]
            conn.execute("select ml.record_feedback_bulk(%s)", (Jsonb(feedback),))
            self.labels += len(ids)
        self.project_id = str(one(conn, "select id from ml.projects where tenant_id = %s and name = %s", self.tenant, PROJECT))
        act_for(conn, None)


@pytest.fixture(scope="module")
def world(db_url: str) -> World:
    with psycopg.connect(db_url, autocommit=True) as conn:
        return World(conn)


@pytest.fixture
def a(conn: Conn, world: World) -> Conn:
    """The connection acting for the world's tenant, its retraining events and policy cleared."""
    act_for(conn, world.tenant)
    conn.execute("delete from ml.retraining_events where project_id = %s", (world.project_id,))
    conn.execute("delete from ml.retraining_policies where project_id = %s", (world.project_id,))
    return conn


def set_policy(conn: Conn, policy: Any) -> dict[str, Any]:
    return dict(one(conn, "select ml.set_retraining_policy(%s, %s)", PROJECT, Jsonb(policy)))


def report(conn: Conn, window: str | tuple[datetime, datetime], options: dict[str, Any] | None = None) -> str:
    start, end = WINDOWS[window] if isinstance(window, str) else window
    return str(one(conn, "select ml.drift_report(%s, %s, %s, %s)", PROJECT, start, end, Jsonb(options or {})))


def events(conn: Conn, world: World, report_id: str | None = None) -> list[dict[str, Any]]:
    rows = conn.execute("select kind, decision, reason, evidence, as_of, report_id::text, cycle_id::text, id::text"
                        " from ml.retraining_events where project_id = %s and (%s::uuid is null or report_id = %s::uuid)"
                        " order by at", (world.project_id, report_id, report_id)).fetchall()
    keys = ("kind", "decision", "reason", "evidence", "as_of", "report_id", "cycle_id", "id")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def written(conn: Conn, world: World) -> tuple[Any, ...]:
    row = conn.execute(
        "select (select policy from ml.retraining_policies where project_id = %(p)s),"
        " (select count(*) from ml.audit_log where tenant_id = %(t)s and object_kind = 'retraining_policy'),"
        " (select count(*) from ml.events where tenant_id = %(t)s and topic = 'retraining')",
        {"p": world.project_id, "t": world.tenant}).fetchone()
    assert row is not None
    return tuple(row)


# -- the policy ----------------------------------------------------------------------------------


def test_an_empty_policy_gets_every_default_and_is_stored_as_returned(a: Conn, world: World) -> None:
    assert set_policy(a, {}) == DEFAULTS
    stored = one(a, "select ml.retraining_policy(%s)", PROJECT)
    assert stored["policy"] == DEFAULTS and stored["project"] == PROJECT and stored["project_id"] == world.project_id
    row = a.execute("select enabled, trigger_types, cooldown, promotion, online_mode from ml.retraining_policies"
                    " where project_id = %s", (world.project_id,)).fetchone()
    assert row == (True, ["dataset_drift"], timedelta(days=1), "approval", "shadow")


def test_a_full_policy_is_normalized(a: Conn, world: World) -> None:
    space = {"C": {"type": "float", "low": 0.01, "high": 10, "log": True}}
    full = {
        "triggers": [{"type": "feature_drift", "features": ["amount", "tier"]},
                     {"type": "metric_drop", "metric": "accuracy", "relative_drop": 0.1},
                     {"type": "metric_drop", "metric": "roc_auc", "source": "estimated", "drop": 0.05, "baseline": 0.8},
                     {"type": "new_labels", "min": 500},
                     {"type": "schedule", "cron": "  0   3 * *   mon "},
                     {"type": "dataset_drift"}],
        "cooldown": "36 hours",
        "recipe": {"tune": {"algorithms": ["logistic_regression"], "search_spaces": {"logistic_regression": space},
                            "timeout": "90 minutes"}, "options": {"split": "time"}},
        "data": {"window": "2 weeks", "balance": "undersample"},
        "evaluation": {"metric": "accuracy"},
        "online": {"mode": "canary"},
        "promotion": "automatic"}
    # Automatic promotion stands as the setter's approval: a person's, never a service caller's.
    with refused("42501", "policy.promotion: automatic promotion stands as the approval of the member who sets it"):
        set_policy(a, full)
    assert one(a, "select count(*) from ml.retraining_policies where project_id = %s", world.project_id) == 0
    viewer = member(a, world.tenant, "viewer")
    with tenant_context(a, world.tenant, user=viewer), refused("42501"):
        set_policy(a, full)
    with tenant_context(a, world.tenant, user=world.ref.owner):
        got = set_policy(a, full)
    act_for(a, world.tenant)
    assert one(a, "select updated_by::text from ml.retraining_policies where project_id = %s", world.project_id) \
        == world.ref.owner
    assert got["triggers"] == [
        {"type": "feature_drift", "features": ["amount", "tier"], "min_features": 1},
        {"type": "metric_drop", "metric": "accuracy", "source": "realized", "drop": None, "relative_drop": 0.1,
         "baseline": None, "min_samples": 1},
        {"type": "metric_drop", "metric": "roc_auc", "source": "estimated", "drop": 0.05, "relative_drop": None,
         "baseline": 0.8, "min_samples": 1},
        {"type": "new_labels", "min": 500},
        {"type": "schedule", "cron": "0 3 * * mon"},
        {"type": "dataset_drift", "share": 0.5}]
    assert got["cooldown"] == "36:00:00"
    assert got["recipe"]["tune"] == {"algorithms": ["logistic_regression"], "search_spaces": {"logistic_regression": space},
                                     "trials": 20, "metric": "roc_auc", "timeout": "01:30:00"}
    assert got["recipe"]["options"]["split"] == "time"
    assert got["data"]["window"] == "14 days" and got["data"]["balance"] == "undersample"
    # accuracy: McNemar by default; the rollback watches the evaluation metric when it is a live one.
    assert got["evaluation"]["test"] == "mcnemar" and got["rollback"]["metric"] == "accuracy"
    assert got["online"] == {"mode": "canary", "min_samples": 500, "significance": 0.05, "canary_weight": 0.1,
                             "max_duration": "7 days"}
    assert got["promotion"] == "automatic"
    row = a.execute("select trigger_types, cooldown, promotion, online_mode from ml.retraining_policies"
                    " where project_id = %s", (world.project_id,)).fetchone()
    assert row == (["feature_drift", "metric_drop", "metric_drop", "new_labels", "schedule", "dataset_drift"],
                   timedelta(hours=36), "automatic", "canary")
    # An algorithm and its hyperparameters, checked as ml.train checks them.
    got = set_policy(a, {"recipe": {"algorithm": "logistic_regression", "hyperparams": {"C": 0.5}}})
    recipe = {k: v for k, v in got["recipe"].items() if k != "options"}
    assert recipe == {"algorithm": "logistic_regression", "hyperparams": {"C": 0.5}}


def test_setting_audits_and_publishes_and_removing_too(a: Conn, world: World) -> None:
    _, audits, published = written(a, world)
    set_policy(a, {"cooldown": "2 hours"})
    set_policy(a, {"cooldown": "3 hours"})
    rows = a.execute("select action, before, after from ml.audit_log where tenant_id = %s and object_kind = 'retraining_policy'"
                     " order by id desc limit 2", (world.tenant,)).fetchall()
    assert [r[0] for r in rows] == ["retraining_policy.set", "retraining_policy.set"]
    assert rows[0][1]["policy"]["cooldown"] == "02:00:00" and rows[0][2]["policy"]["cooldown"] == "03:00:00"
    assert rows[1][1] is None
    got = a.execute("select event, payload from ml.events where tenant_id = %s and topic = 'retraining' order by id desc limit 1",
                    (world.tenant,)).fetchone()
    assert got is not None and got[0] == "policy.set" and got[1]["after"]["project"] == PROJECT
    assert one(a, "select ml.remove_retraining_policy(%s)", PROJECT) is True
    assert one(a, "select ml.remove_retraining_policy(%s)", PROJECT) is False
    assert one(a, "select ml.retraining_policy(%s)", PROJECT) is None
    _, audits_after, published_after = written(a, world)
    assert (audits_after - audits, published_after - published) == (3, 3)
    last = a.execute("select event, payload from ml.events where tenant_id = %s and topic = 'retraining' order by id desc limit 1",
                     (world.tenant,)).fetchone()
    assert last is not None and last[0] == "policy.removed" and last[1]["before"]["policy"]["cooldown"] == "03:00:00"


def test_the_python_api(conn: Conn, world: World) -> None:
    conn.execute("delete from ml.retraining_policies where project_id = %s", (world.project_id,))
    policy = retraining.set_retraining_policy(conn, PROJECT, {"triggers": [{"type": "new_labels", "min": 10}]}, tenant=world.tenant)
    assert policy["triggers"] == [{"type": "new_labels", "min": 10}]
    got = retraining.retraining_policy(conn, PROJECT, tenant=world.tenant)
    assert got is not None and got["policy"] == policy
    assert isinstance(retraining.retraining_history(conn, PROJECT, 5, tenant=world.tenant), list)
    with pytest.raises(InvalidInput, match=r"policy\.triggers\[0\]\.min: must be >= 1"):
        retraining.set_retraining_policy(conn, PROJECT, {"triggers": [{"type": "new_labels", "min": 0}]}, tenant=world.tenant)
    with pytest.raises(InvalidInput, match="limit"):
        retraining.retraining_history(conn, PROJECT, 0, tenant=world.tenant)
    assert retraining.remove_retraining_policy(conn, PROJECT, tenant=world.tenant) is True


SPACE = {"C": {"type": "float", "low": 0.01, "high": 1}}

INVALID = [
    ([], "policy", "must be a JSON object"),
    ({"bogus": 1}, "policy.bogus", "is not an allowed property"),
    ({"enabled": "yes"}, "policy.enabled", "must be of type boolean"),
    ({"triggers": []}, "policy.triggers", "must have at least 1 items"),
    ({"triggers": [{"share": 0.5}]}, "policy.triggers[0].type", "is required"),
    ({"triggers": [{"type": "magic"}]}, "policy.triggers[0].type", "must be one of"),
    ({"triggers": [{"type": "new_labels", "min": 5}, {"type": "dataset_drift", "share": 1.5}]},
     "policy.triggers[1].share", "must be <= 1, got 1.5"),
    ({"triggers": [{"type": "dataset_drift", "share": 0}]}, "policy.triggers[0].share", "must be > 0"),
    ({"triggers": [{"type": "dataset_drift", "threshold": 0.3}]}, "policy.triggers[0].threshold", "is not an allowed property"),
    ({"triggers": [{"type": "feature_drift", "features": ["amount", "amount"]}]}, "policy.triggers[0].features", "must not repeat"),
    ({"triggers": [{"type": "feature_drift", "features": ["amount", "nope"]}]}, "policy.triggers[0].features[1]",
     '"nope" is not an input of project rt\'s models'),
    ({"triggers": [{"type": "feature_drift", "features": ["amount", "tier"], "min_features": 3}]},
     "policy.triggers[0].min_features", "must be at most the 2 feature"),
    ({"triggers": [{"type": "feature_drift", "min_features": 0}]}, "policy.triggers[0].min_features", "must be >= 1"),
    ({"triggers": [{"type": "feature_drift", "features": [1]}]}, "policy.triggers[0].features[0]", "must be of type string"),
    ({"triggers": [{"type": "metric_drop", "drop": 0.1}]}, "policy.triggers[0].metric", "is required"),
    ({"triggers": [{"type": "metric_drop", "metric": "rmse", "drop": 0.1}]}, "policy.triggers[0].metric", "must be one of"),
    ({"triggers": [{"type": "metric_drop", "metric": "f1", "drop": 0.1, "relative_drop": 0.1}]}, "policy.triggers[0]",
     "set exactly one of drop"),
    ({"triggers": [{"type": "metric_drop", "metric": "f1"}]}, "policy.triggers[0]", "set exactly one of drop"),
    ({"triggers": [{"type": "metric_drop", "metric": "accuracy", "drop": 2}]}, "policy.triggers[0].drop", "accuracy lies in"),
    ({"triggers": [{"type": "metric_drop", "metric": "accuracy", "drop": -0.1}]}, "policy.triggers[0].drop", "must be > 0"),
    ({"triggers": [{"type": "metric_drop", "metric": "f1", "relative_drop": 1.5}]}, "policy.triggers[0].relative_drop",
     "must be <= 1"),
    ({"triggers": [{"type": "metric_drop", "metric": "f1", "drop": 0.1, "source": "guessed"}]}, "policy.triggers[0].source",
     "must be one of"),
    ({"triggers": [{"type": "metric_drop", "metric": "f1", "drop": 0.1, "min_samples": 0}]}, "policy.triggers[0].min_samples",
     "must be >= 1"),
    ({"triggers": [{"type": "new_labels"}]}, "policy.triggers[0].min", "is required"),
    ({"triggers": [{"type": "new_labels", "min": 0}]}, "policy.triggers[0].min", "must be >= 1"),
    ({"triggers": [{"type": "new_labels", "min": 1.5}]}, "policy.triggers[0].min", "must be of type integer"),
    ({"triggers": [{"type": "schedule", "cron": "* * *"}]}, "policy.triggers[0].cron", "has 3 fields, expected 5"),
    ({"triggers": [{"type": "schedule", "cron": "61 * * * *"}]}, "policy.triggers[0].cron", "minute field"),
    ({"triggers": [{"type": "schedule", "cron": "@reboot"}]}, "policy.triggers[0].cron", "is not supported"),
    ({"triggers": [{"type": "schedule"}]}, "policy.triggers[0].cron", "is required"),
    ({"cooldown": "soon"}, "policy.cooldown", '"soon" is not an interval'),
    ({"cooldown": "-1 day"}, "policy.cooldown", "must be >= 0"),
    ({"cooldown": 5}, "policy.cooldown", "must be an interval as a string"),
    ({"recipe": "xgboost"}, "policy.recipe", "must be of type object"),
    ({"recipe": {"algorithm": "nope"}}, "policy.recipe.algorithm", "unknown algorithm 'nope'"),
    ({"recipe": {"algorithm": "linear_regression"}}, "policy.recipe.algorithm", "does not support task classification"),
    ({"recipe": {"algorithm": "logistic_regression", "hyperparams": {"C": -1}}}, "policy.recipe.hyperparams.C", "must be > 0"),
    ({"recipe": {"algorithm": "logistic_regression", "hyperparams": {"alpha": 1}}}, "policy.recipe.hyperparams.alpha",
     "is not an allowed property"),
    ({"recipe": {"hyperparams": {"C": 1}}}, "policy.recipe.hyperparams", "needs policy.recipe.algorithm"),
    ({"recipe": {"algorithm": "logistic_regression", "tune": {}}}, "policy.recipe", "name one of same_as, algorithm and tune"),
    ({"recipe": {"same_as": "previous"}}, "policy.recipe.same_as", "must be one of"),
    ({"recipe": {"tune": {"algorithms": ["logistic_regression"]}}}, "policy.recipe.tune.search_spaces", "is required"),
    ({"recipe": {"tune": {"algorithms": [], "search_spaces": {}}}}, "policy.recipe.tune.algorithms", "must have at least 1"),
    ({"recipe": {"tune": {"algorithms": ["logistic_regression"], "search_spaces": {"logistic_regression": SPACE}, "trials": 0}}},
     "policy.recipe.tune.trials", "must be >= 1"),
    ({"recipe": {"tune": {"algorithms": ["logistic_regression", "random_forest"],
                          "search_spaces": {"logistic_regression": SPACE}}}},
     "policy.recipe.tune.search_spaces.random_forest", "is required"),
    ({"recipe": {"tune": {"algorithms": ["logistic_regression"],
                          "search_spaces": {"logistic_regression": {"C": {"type": "float", "low": 2, "high": 1}}}}}},
     "policy.recipe.tune.search_spaces.logistic_regression.C", "low must be <= high"),
    ({"recipe": {"tune": {"algorithms": ["logistic_regression"], "search_spaces": {"logistic_regression": SPACE},
                          "metric": "mae"}}}, "policy.recipe.tune.metric", "must be one of"),
    ({"recipe": {"tune": {"algorithms": ["nope"], "search_spaces": {"nope": SPACE}}}}, "policy.recipe.tune.algorithms[0]",
     "unknown algorithm"),
    ({"recipe": {"tune": {"algorithms": ["logistic_regression"], "search_spaces": {"logistic_regression": SPACE},
                          "timeout": "never"}}}, "policy.recipe.tune.timeout", "is not an interval"),
    ({"recipe": {"options": {"test_size": 0.9}}}, "policy.recipe.options.test_size", "must be <= 0.5"),
    ({"data": {"window": "0 days"}}, "policy.data.window", "must be > 0"),
    ({"data": {"balance": "smote"}}, "policy.data.balance", "must be one of"),
    ({"data": {"reference_sample": -1}}, "policy.data.reference_sample", "must be >= 0"),
    ({"data": {"dedupe": "yes"}}, "policy.data.dedupe", "must be of type boolean"),
    ({"evaluation": {"confidence": 0.9999}}, "policy.evaluation.confidence", "must be <= 0.999"),
    ({"evaluation": {"confidence": 0.4}}, "policy.evaluation.confidence", "must be >= 0.5"),
    ({"evaluation": {"test": "ttest"}}, "policy.evaluation.test", "must be one of"),
    ({"evaluation": {"metric": "f1", "test": "mcnemar"}}, "policy.evaluation.test", "mcnemar compares accuracy"),
    ({"evaluation": {"metric": "f1", "test": "delong"}}, "policy.evaluation.test", "delong compares roc_auc"),
    ({"evaluation": {"metric": "rmse"}}, "policy.evaluation.metric", "must be one of"),
    ({"evaluation": {"min_improvement": -0.1}}, "policy.evaluation.min_improvement", "must be >= 0"),
    ({"online": {"mode": "live"}}, "policy.online.mode", "must be one of"),
    ({"online": {"canary_weight": 0.2}}, "policy.online.canary_weight", "applies to mode canary only"),
    ({"online": {"mode": "canary", "canary_weight": 1}}, "policy.online.canary_weight", "must be < 1"),
    ({"online": {"significance": 0.9}}, "policy.online.significance", "must be <= 0.5"),
    ({"online": {"min_samples": 0}}, "policy.online.min_samples", "must be >= 1"),
    ({"online": {"max_duration": "0 days"}}, "policy.online.max_duration", "must be > 0"),
    ({"rollback": {"metric": "log_loss"}}, "policy.rollback.metric", "must be one of"),
    ({"rollback": {"max_drop": 0}}, "policy.rollback.max_drop", "must be > 0"),
    ({"rollback": {"max_drop": 3}}, "policy.rollback.max_drop", "a drop must be <= 1"),
    ({"rollback": {"window": "x"}}, "policy.rollback.window", '"x" is not an interval'),
    ({"promotion": "yolo"}, "policy.promotion", "must be one of"),
]


@pytest.mark.parametrize(("policy", "field", "rule"), INVALID, ids=[f"{f}:{r[:24]}" for _, f, r in INVALID])
def test_a_bad_policy_is_refused_naming_its_field_and_nothing_is_written(a: Conn, world: World, policy: Any, field: str,
                                                                        rule: str) -> None:
    set_policy(a, {"cooldown": "5 hours"})
    before = written(a, world)
    with refused("22023", "^" + re.escape(f"{field}: ") + ".*" + re.escape(rule)):
        set_policy(a, policy)
    assert written(a, world) == before


def test_feature_names_are_free_before_the_project_has_a_model(conn: Conn) -> None:
    tenant = make_tenant(conn)
    act_for(conn, tenant)
    conn.execute("select ml.create_project('fresh', 'regression', 'y')")
    got = one(conn, "select ml.set_retraining_policy('fresh', %s)",
              Jsonb({"triggers": [{"type": "feature_drift", "features": ["anything"]},
                                  {"type": "metric_drop", "metric": "rmse", "drop": 5}]}))
    # Regression: rmse by default, bootstrap, no stratified split.
    assert got["evaluation"]["metric"] == "rmse" and got["evaluation"]["test"] == "bootstrap"
    assert got["rollback"]["metric"] == "rmse" and got["recipe"]["options"]["split"] == "random"
    with refused("22023", r"^policy\.triggers\[0\]\.source: estimated performance"):
        conn.execute("select ml.set_retraining_policy('fresh', %s)",
                     (Jsonb({"triggers": [{"type": "metric_drop", "metric": "mae", "drop": 1, "source": "estimated"}]}),))
    with refused("22023", r"^policy\.data\.balance: class balancing needs a classification project"):
        conn.execute("select ml.set_retraining_policy('fresh', %s)", (Jsonb({"data": {"balance": "oversample"}}),))
    act_for(conn, None)


# -- triggers ------------------------------------------------------------------------------------


def test_a_drifted_report_fires_the_dataset_drift_trigger_and_a_clean_one_records_nothing(a: Conn, world: World) -> None:
    set_policy(a, {"triggers": [{"type": "dataset_drift", "share": 0.5}], "cooldown": "0 seconds"})
    clean = report(a, "steady")
    assert events(a, world) == []
    assert a.execute("select dataset_drift from ml.drift_reports where id = %s", (clean,)).fetchone() == (False,)
    drifted = report(a, "drifted")
    share = one(a, "select drift_share from ml.drift_reports where id = %s", drifted)
    assert share >= 0.5
    [event] = events(a, world)
    assert event["kind"] == "trigger" and event["decision"] == "retrain" and event["report_id"] == drifted
    assert event["cycle_id"] == event["id"] and event["as_of"] == WINDOWS["drifted"][1]
    [verdict] = event["evidence"]["triggers"]
    assert verdict["fired"] is True and verdict["drift_share"] == pytest.approx(share) and event["evidence"]["fired"] == [0]
    assert event["reason"].startswith("dataset drift share ") and ">= 0.5" in event["reason"]
    published = a.execute("select payload from ml.events where tenant_id = %s and topic = 'retraining'"
                          " and event = 'retraining.triggered' order by id desc limit 1", (world.tenant,)).fetchone()
    assert published is not None and published[0]["event_id"] == event["id"] and published[0]["report_id"] == drifted
    # Judged again: the recorded outcome, nothing new.
    again = one(a, "select ml_private.check_retraining_triggers(%s)", drifted)
    assert again["fired"] is True and again["repeated"] is True and again["event_id"] == event["id"]
    assert len(events(a, world)) == 1
    # The history, newest first, as `pgmlops retraining history` reads it.
    [entry] = one(a, "select ml.retraining_history(%s)", PROJECT)
    assert entry["kind"] == "trigger" and entry["report_id"] == drifted
    assert entry["candidate"] == {"model": PROJECT, "version": 1, "model_version_id": world.ref.version}


def test_within_the_cooldown_a_fired_trigger_is_skipped_with_its_reason(a: Conn, world: World) -> None:
    set_policy(a, {"triggers": [{"type": "dataset_drift"}], "cooldown": "6 hours"})
    first = report(a, "drifted")
    second = report(a, "drifted")
    [trigger] = events(a, world, first)
    [skip] = events(a, world, second)
    assert trigger["kind"] == "trigger" and skip["kind"] == "skip" and skip["decision"] == "skipped"
    assert skip["reason"].startswith("in cooldown until ") and "dataset drift share" in skip["reason"]
    assert skip["evidence"]["last_trigger"] is not None
    # A report whose window ends past the cooldown fires again.
    start, end = WINDOWS["drifted"]
    third = report(a, (start, end + timedelta(hours=6)))
    assert [e["kind"] for e in events(a, world, third)] == ["trigger"]
    history = one(a, "select ml.retraining_history(%s)", PROJECT)
    assert [e["kind"] for e in history] == ["trigger", "skip", "trigger"]
    assert [e["kind"] for e in one(a, "select ml.retraining_history(%s, 1)", PROJECT)] == ["trigger"]
    # An older window than the last trigger's is skipped whatever the cooldown; with no cooldown
    # the same drift fires every time.
    set_policy(a, {"triggers": [{"type": "dataset_drift"}], "cooldown": "0 seconds"})
    [older] = events(a, world, report(a, "drifted"))
    assert older["kind"] == "skip" and "before the last trigger's" in older["reason"]
    assert [e["kind"] for e in events(a, world, report(a, (start, end + timedelta(hours=6))))] == ["trigger"]


def test_feature_drift_counts_the_named_inputs_that_drifted(a: Conn, world: World) -> None:
    set_policy(a, {"triggers": [{"type": "feature_drift", "features": ["amount", "visits"], "min_features": 2}],
                   "cooldown": "0 seconds"})
    for window in ("steady", "drifted"):
        report_id = report(a, window)
        drifted = sorted(r[0] for r in a.execute("select feature from ml.drift_results where report_id = %s and role = 'input'"
                                                 " and drifted and feature in ('amount', 'visits')", (report_id,)).fetchall())
        got = events(a, world, report_id)
        assert [e["kind"] for e in got] == (["trigger"] if len(drifted) == 2 else [])
        if got:
            assert got[0]["evidence"]["triggers"][0]["drifted"] == drifted
    assert len(drifted) == 2  # the drifted window moved both
    verdict = one(a, "select ml_private.retraining_evaluate_trigger(r, %s, 0, null) from ml.drift_reports r where r.id = %s",
                  Jsonb({"type": "feature_drift", "features": None, "min_features": 1}), report_id)
    assert verdict["fired"] is True and set(verdict["tested"]) == {"amount", "visits", "rating", "tier", "vip", "seen"}


def test_a_metric_drop_is_measured_against_its_baseline(a: Conn, world: World) -> None:
    def accuracy(report_id: str) -> float:
        return float(one(a, "select avg(value) from ml.performance_results where report_id = %s and metric = 'accuracy'"
                            " and not estimated and value is not null", report_id))

    # An explicit baseline.
    set_policy(a, {"triggers": [{"type": "metric_drop", "metric": "accuracy", "drop": 0.001, "baseline": 1.0}],
                   "cooldown": "0 seconds"})
    report_id = report(a, "drifted")
    current = accuracy(report_id)
    [event] = events(a, world, report_id)
    verdict = event["evidence"]["triggers"][0]
    assert verdict["fired"] is True and verdict["baseline_from"] == "policy"
    assert verdict["current"] == pytest.approx(current) and verdict["observed_drop"] == pytest.approx(1.0 - current)
    assert verdict["samples"] == 400
    # Too few labelled predictions: not judged.
    set_policy(a, {"triggers": [{"type": "metric_drop", "metric": "accuracy", "drop": 0.001, "baseline": 1.0,
                                 "min_samples": 401}], "cooldown": "0 seconds"})
    result = one(a, "select ml_private.retraining_evaluate_trigger(r, p.policy -> 'triggers' -> 0, 0, null)"
                    " from ml.drift_reports r, ml.retraining_policies p where r.id = %s and p.project_id = r.project_id", report_id)
    assert result["fired"] is False and "fewer than min_samples 401" in result["reason"]
    # No baseline and no metric on the version: the earliest earlier report of the version.
    steady = report(a, "steady")
    set_policy(a, {"triggers": [{"type": "metric_drop", "metric": "accuracy", "relative_drop": 0.0001}], "cooldown": "0 seconds"})
    report_id = report(a, "drifted")
    first = one(a, "select id::text from ml.drift_reports where project_id = %s and model_version_id = %s"
                   " and exists (select 1 from ml.performance_results p where p.report_id = id and p.metric = 'accuracy'"
                   " and p.value is not null) order by window_start, created_at limit 1", world.project_id, world.ref.version)
    baseline, current = accuracy(first), accuracy(report_id)
    assert baseline == pytest.approx(accuracy(steady))
    got = one(a, "select ml_private.check_retraining_triggers(%s)", report_id)
    verdict = got["triggers"][0]
    assert verdict["baseline_from"] == "first_report" and verdict["baseline_report_id"] == first
    assert verdict["baseline"] == pytest.approx(baseline)
    assert verdict["observed_relative_drop"] == pytest.approx((baseline - current) / baseline)
    assert verdict["fired"] is ((baseline - current) / baseline >= 0.0001)


def test_new_labels_count_the_labels_recorded_since_the_version(a: Conn, world: World) -> None:
    set_policy(a, {"triggers": [{"type": "new_labels", "min": world.labels}], "cooldown": "0 seconds"})
    report_id = report(a, "steady")
    [event] = events(a, world, report_id)
    assert event["evidence"]["triggers"][0]["labels"] == world.labels
    assert event["reason"] == f"{world.labels} new labels >= {world.labels}"
    set_policy(a, {"triggers": [{"type": "new_labels", "min": world.labels + 1}], "cooldown": "0 seconds"})
    assert events(a, world, report(a, "steady")) == []
    # A 'train' event after the labels restarts the count.
    a.execute("insert into ml.retraining_events (tenant_id, project_id, kind) values (%s, %s, 'train')",
              (world.tenant, world.project_id))
    set_policy(a, {"triggers": [{"type": "new_labels", "min": 1}], "cooldown": "0 seconds"})
    got = one(a, "select ml_private.retraining_evaluate_trigger(r, %s, 0, null) from ml.drift_reports r where r.id = %s",
              Jsonb({"type": "new_labels", "min": 1}), report_id)
    assert got["labels"] == 0 and got["fired"] is False


def test_a_schedule_fires_when_its_cron_ticks_in_the_report_s_window(a: Conn, world: World) -> None:
    set_policy(a, {"triggers": [{"type": "schedule", "cron": "@hourly"}, {"type": "schedule", "cron": "0 0 1 1 *"}],
                   "cooldown": "0 seconds"})
    [event] = events(a, world, report(a, "steady"))
    hourly, yearly = event["evidence"]["triggers"]
    assert hourly["fired"] is True and yearly["fired"] is False
    assert event["evidence"]["fired"] == [0] and "is due" in event["reason"]


def test_no_policy_or_a_disabled_one_records_nothing(a: Conn, world: World) -> None:
    report_id = report(a, "drifted")
    assert one(a, "select ml_private.check_retraining_triggers(%s)", report_id)["reason"] == "the project has no retraining policy"
    set_policy(a, {"enabled": False, "cooldown": "0 seconds"})
    assert events(a, world, report(a, "drifted")) == []
    with refused("P0002"):
        a.execute("select ml_private.check_retraining_triggers(%s)", (str(uuid.uuid4()),))


# -- who may ------------------------------------------------------------------------------------


def test_another_tenant_cannot_read_or_set_the_policy_and_a_viewer_only_reads(conn: Conn, world: World) -> None:
    act_for(conn, world.tenant)
    conn.execute("select ml.set_retraining_policy(%s, '{}')", (PROJECT,))
    other = make_tenant(conn)
    for statement in ("select ml.set_retraining_policy(%s, '{}')", "select ml.retraining_policy(%s)",
                      "select ml.retraining_history(%s)", "select ml.remove_retraining_policy(%s)"):
        with refused("P0002", "project 'rt' does not exist"), tenant_context(conn, other):
            conn.execute(statement, (PROJECT,))
    viewer = member(conn, world.tenant, "viewer")
    with tenant_context(conn, world.tenant, user=viewer, role="authenticated"):
        assert conn.execute("select ml.retraining_policy(%s)", (PROJECT,)).fetchone() is not None
        assert isinstance(one(conn, "select ml.retraining_history(%s)", PROJECT), list)
        # RLS: a member reads its tenant's rows.
        assert one(conn, "select count(*) from ml.retraining_policies") == 1
    for statement in ("select ml.set_retraining_policy(%s, '{}')", "select ml.remove_retraining_policy(%s)"):
        with refused("42501"), tenant_context(conn, world.tenant, user=viewer, role="authenticated"):
            conn.execute(statement, (PROJECT,))
    outsider = member(conn, other, "owner")
    with tenant_context(conn, other, user=outsider, role="authenticated"):
        assert one(conn, "select count(*) from ml.retraining_policies") == 0
    with pytest.raises(NotFound):
        retraining.retraining_policy(conn, PROJECT, tenant=other)
    with pytest.raises(AccessDenied), tenant_context(conn, world.tenant, user=viewer, role="authenticated"):
        retraining.set_retraining_policy(conn, PROJECT, {})
    with refused("22023", "limit: must be between 1 and 10000"):
        conn.execute("select ml.retraining_history(%s, 10001)", (PROJECT,))
    act_for(conn, None)
