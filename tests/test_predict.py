"""ml.predict, the online scoring path: one row scored like the model's own scikit-learn
predict / predict_proba through the whole path (the compiled function, the training set's
transformations, missing values, unseen categories), features read from the online store,
features checked against the version's inputs (each error names the feature, and a failed call
logs nothing), worker-scored versions refused, the prediction log (live and shadow rows), the
tenant boundary, signed-in members calling as PostgREST does, the log's retention."""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
from psycopg.types.json import Jsonb
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingRegressor, IsolationForest
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.svm import SVC

from pgmlops import features as datasets
from pgmlops import scoring, training
from pgmlops.db import tenant_context
from pgmlops.jobs.worker import Worker
from pgmlops.models import load_model
from pgmlops.training._algorithms import build_pipeline

from .compile_helpers import MIXED_SIGNATURE, Conn, json_rows, mixed_frame, mixed_labels, one, project, register
from .conftest import act_for, make_tenant
from .training_data import T0, build, create_group, member, refused, spine_table

TOLERANCE = 1e-9


class Env:
    """A tenant of the module's database, the owner connection acting for it, and a signed-in
    owner who approves versions (ml.deploy takes approved versions only)."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.tenant = make_tenant(conn)
        act_for(conn, self.tenant)
        self.user = member(conn, self.tenant, "owner")

    def version(self, project_name: str, task: str, model: Any, *, name: str | None = None,
                classes: list[Any] | None = None) -> tuple[str, str, int]:
        """Registers ``model`` (fitted on MIXED_SIGNATURE) in a new project and installs its compiled
        function; returns (version id, model name, version number)."""
        project_id = project(self.conn, project_name, task)
        version = register(self.conn, project_id, MIXED_SIGNATURE, task, model=name, classes=classes)
        scoring.install(self.conn, version, scoring.describe(model, task=task))
        row = self.conn.execute("select m.name, v.version from ml.model_versions v join ml.models m on m.id = v.model_id "
                                "where v.id = %s", (version,)).fetchone()
        assert row is not None
        return version, row[0], row[1]

    def deploy(self, project_name: str, arms: list[dict[str, Any]], strategy: str = "single") -> str:
        for arm in arms:
            if arm.get("role", "live") == "live":
                with tenant_context(self.conn, self.tenant, user=self.user):
                    self.conn.execute("select ml.approve(%s, %s, 'approved')", (arm["model"], arm["version"]))
        return str(one(self.conn, "select ml.deploy(%s, %s, %s)", project_name, strategy, Jsonb(arms)))

    def predict(self, project_name: str, features: dict[str, Any] | None = None, entity_key: str | None = None) -> Any:
        return one(self.conn, "select ml.predict(%s, %s, %s)", project_name,
                   None if features is None else Jsonb(features), entity_key)

    def logged(self) -> int:
        return int(one(self.conn, "select count(*) from ml.predictions where tenant_id = %s", self.tenant))


@pytest.fixture
def env(conn: Conn) -> Env:
    conn.execute("set jit = off")
    return Env(conn)


TRAIN = mixed_frame(250, 31)
HELD_OUT = mixed_frame(40, 32, held_out=True).astype({"visits": "Float64"})


def fitted(task: str, estimator: Any, labels: str = "binary") -> Any:
    model = build_pipeline(MIXED_SIGNATURE, estimator)
    return model.fit(TRAIN) if task == "anomaly_detection" else model.fit(TRAIN, mixed_labels(TRAIN, labels, 31))


def close(got: float, expected: float) -> bool:
    return abs(got - expected) <= TOLERANCE * max(1.0, abs(expected))


# -- results equal scikit-learn's ------------------------------------------------------------------------


@pytest.mark.parametrize(("estimator", "labels"), [
    (LogisticRegression(max_iter=300), "binary"),
    (GradientBoostingClassifier(n_estimators=20, max_depth=3, random_state=0), "binary"),
    (LogisticRegression(max_iter=300), "multiclass")], ids=["logistic", "gradient-boosting", "multiclass"])
def test_a_classifier_s_prediction_probabilities_and_score_equal_scikit_learn_s(env: Env, estimator: Any, labels: str) -> None:
    """Held-out rows with missing values of every dtype, a category the model never saw and
    missing vectors: the label exactly, probabilities keyed by class label, and the score (the
    positive class's probability; with more classes, the predicted class's)."""
    model = fitted("classification", estimator, labels)
    classes = [c.item() if hasattr(c, "item") else c for c in model.classes_]
    project_name = f"cls-{labels}"
    _, name, number = env.version(project_name, "classification", model, classes=classes)
    deployment = env.deploy(project_name, [{"arm": "main", "model": name, "version": number}])
    proba = model.predict_proba(HELD_OUT)
    for row, label, p in zip(json_rows(HELD_OUT), model.predict(HELD_OUT), proba, strict=True):
        result = env.predict(project_name, row)
        assert result["prediction"] == (label.item() if hasattr(label, "item") else label)
        assert set(result["probabilities"]) == {str(c) for c in classes}
        assert all(close(result["probabilities"][str(c)], float(q)) for c, q in zip(classes, p, strict=True))
        assert close(result["score"], float(p[1]) if len(classes) == 2 else float(p.max()))
        assert (result["model"], result["version"], result["arm"], result["deployment_id"]) == (name, number, "main", deployment)
        assert result["latency_ms"] >= 0 and uuid.UUID(result["prediction_id"])


def test_a_classifier_without_probabilities_scores_with_its_decision_function(env: Env) -> None:
    model = fitted("classification", RidgeClassifier())
    _, name, number = env.version("ridge", "classification", model, classes=[0, 1])
    env.deploy("ridge", [{"arm": "main", "model": name, "version": number}])
    for row, label, d in zip(json_rows(HELD_OUT), model.predict(HELD_OUT), model.decision_function(HELD_OUT), strict=True):
        result = env.predict("ridge", row)
        assert result["prediction"] == int(label) and close(result["score"], float(d)) and "probabilities" not in result


def test_a_regressor_s_prediction_equals_scikit_learn_s(env: Env) -> None:
    model = fitted("regression", HistGradientBoostingRegressor(max_iter=15, random_state=0), "regression")
    _, name, number = env.version("reg", "regression", model)
    env.deploy("reg", [{"arm": "main", "model": name, "version": number}])
    for row, y in zip(json_rows(HELD_OUT), model.predict(HELD_OUT), strict=True):
        result = env.predict("reg", row)
        assert close(result["prediction"], float(y)) and result["score"] == result["prediction"]
        assert "probabilities" not in result


def test_an_anomaly_detector_s_prediction_and_score_equal_scikit_learn_s(env: Env) -> None:
    """prediction is -1 (anomaly) or 1 as IsolationForest.predict says; score the anomaly score,
    -score_samples (higher: more anomalous)."""
    model = fitted("anomaly_detection", IsolationForest(n_estimators=15, random_state=0))
    _, name, number = env.version("odd", "anomaly_detection", model)
    env.deploy("odd", [{"arm": "main", "model": name, "version": number}])
    for row, label, s in zip(json_rows(HELD_OUT), model.predict(HELD_OUT), model.score_samples(HELD_OUT), strict=True):
        result = env.predict("odd", row)
        assert result["prediction"] == int(label) and result["is_anomaly"] == (label == -1)
        assert close(result["score"], -float(s))


# -- the whole path: a training set with transformations, the online store --------------------------------


@pytest.fixture(scope="module")
def clients(db_url: str) -> Iterator[dict[str, Any]]:
    """A feature group of clients (every raw dtype), a training set that transforms them, and a
    logistic regression trained on it by a worker (the real train path), deployed. Yields the
    tenant, the dataset and the model."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        tenant = make_tenant(conn)
        act_for(conn, tenant)
        rng = np.random.default_rng(2)
        conn.execute("select ml.create_feature_group('clients', 'client', %s)", (Jsonb({
            "amount": {"dtype": "float"}, "visits": {"dtype": "int"}, "tier": {"dtype": "category"},
            "vip": {"dtype": "bool"}, "seen": {"dtype": "timestamp"}}),))
        values: list[dict[str, Any]] = [{"client": f"c{i}", "event_time": "2026-01-01T00:00:00Z",
                   "amount": None if i % 17 == 0 else float(rng.gamma(2.0, 30.0)), "visits": int(rng.integers(0, 25)),
                   "tier": str(rng.choice(["gold", "silver", "bronze"])), "vip": bool(i % 3 == 0),
                   "seen": f"2026-01-0{1 + i % 5}T{i % 24:02d}:{i % 60:02d}:00Z"} for i in range(200)]
        conn.execute("select ml.ingest('clients', %s)", (Jsonb(values),))
        spine = pd.DataFrame({"client": [v["client"] for v in values], "event_time": pd.Timestamp("2026-02-01", tz="UTC"),
                              "churned": [int((v["amount"] or 60) > 55 or v["tier"] == "gold") for v in values]})
        dataset = str(datasets.create_training_set(
            conn, "clients_set", spine, ["clients:amount", "clients:visits", "clients:tier", "clients:vip", "clients:seen"],
            label="churned", transformations=[{"type": "standardize", "column": "amount", "keep": True},
                                              {"type": "log1p", "column": "amount"},
                                              {"type": "bucketize", "column": "visits", "boundaries": [5, 10, 15]},
                                              {"type": "one_hot", "column": "tier"},
                                              {"type": "cyclical", "column": "seen", "period": "hour"}]))
        training.create_project(conn, "clients", "classification", "churned")
        job = training.train(conn, "clients", dataset, "logistic_regression", {}, {"model": "clients-lr"})
        Worker(db_url, kinds=["train"], idle_exit=0.5, poll_interval=0.2, install_signals=False, maintenance_interval=None).run()
        result = one(conn, "select ml.job_result(%s)", job)
        assert result["status"] == "succeeded", result["error"]
        if one(conn, "select scoring_path from ml.model_versions where id = %s", result["result"]["model_version_id"]) != "compiled":
            scoring.compile_model_version(conn, "clients-lr@1")
        user = member(conn, tenant, "owner")
        with tenant_context(conn, tenant, user=user):
            conn.execute("select ml.approve('clients-lr', 1, 'approved')")
        conn.execute("select ml.deploy('clients', 'single', %s)", (Jsonb([{"arm": "lr", "model": "clients-lr", "version": 1}]),))
        yield {"tenant": tenant, "dataset": dataset, "values": {v["client"]: v for v in values},
               "model": load_model(conn, "clients-lr@1"), "version": result["result"]["model_version_id"]}


def test_predict_applies_the_training_set_s_transformations_like_the_trained_pipeline(conn: Conn, clients: dict[str, Any]) -> None:
    act_for(conn, clients["tenant"])
    rng = np.random.default_rng(3)
    raw = [{"amount": None if i % 9 == 0 else float(rng.gamma(2.0, 30.0)), "visits": None if i % 11 == 0 else int(rng.integers(0, 30)),
            "tier": ["gold", "silver", "bronze", "platinum", None][i % 5], "vip": [True, False, None][i % 3],
            "seen": f"2026-03-0{1 + i % 7}T{(5 * i) % 24:02d}:{i % 60:02d}:30Z"} for i in range(30)]
    inputs = datasets.apply_transformations(conn, clients["dataset"], pd.DataFrame(raw))
    model = clients["model"]
    for row, label, p in zip(raw, model.predict(inputs), model.predict_proba(inputs), strict=True):
        result = one(conn, "select ml.predict('clients', %s)", Jsonb(row))
        assert result["prediction"] == int(label) and close(result["score"], float(p[1]))
        assert close(result["probabilities"]["0"], float(p[0]))


def test_features_read_from_the_online_store_score_like_the_same_features_passed(conn: Conn, clients: dict[str, Any]) -> None:
    """ml.predict(project, entity_key => k) reads k's newest values from the groups the training
    set read, and logs them as the row's features."""
    act_for(conn, clients["tenant"])
    for key in ("c0", "c17", "c42", "c199"):  # c0, c17: amount missing
        stored = {k: v for k, v in clients["values"][key].items() if k not in ("client", "event_time")}
        by_key = one(conn, "select ml.predict('clients', entity_key => %s)", key)
        passed = one(conn, "select ml.predict('clients', %s, %s)", Jsonb(stored), key)
        assert (by_key["prediction"], by_key["probabilities"]) == (passed["prediction"], passed["probabilities"])
        logged = one(conn, "select features from ml.predictions where id = %s", by_key["prediction_id"])
        assert set(logged) == set(stored) and logged["tier"] == stored["tier"] and logged["visits"] == stored["visits"]
    # Resolved once, at the version's first call by entity key.
    lookup = one(conn, "select lookup from ml_private.online_lookups where model_version_id = %s", clients["version"])
    assert [(g["name"], g["version"]) for g in lookup["groups"]] == [("clients", 1)] and lookup["event_time"] == []


def test_an_entity_absent_from_the_online_store_is_not_found_naming_entity_and_group(conn: Conn, clients: dict[str, Any]) -> None:
    act_for(conn, clients["tenant"])
    before = one(conn, "select count(*) from ml.predictions")
    with refused("P0002", r"entity 'nobody' is not in the online store of feature group clients@1"):
        conn.execute("select ml.predict('clients', entity_key => 'nobody')")
    assert one(conn, "select count(*) from ml.predictions") == before


def test_an_entity_whose_values_are_older_than_the_group_s_ttl_is_not_found(conn: Conn, clients: dict[str, Any]) -> None:
    act_for(conn, clients["tenant"])
    with conn.transaction(force_rollback=True):
        conn.execute("update ml.feature_groups set ttl = '1 day' where tenant_id = %s and name = 'clients'", (clients["tenant"],))
        with refused("P0002", r"entity 'c1': its values in feature group clients@1 are from .* older than the group's TTL \(1 day\)"):
            conn.execute("select ml.predict('clients', entity_key => 'c1')")


def test_neither_features_nor_an_entity_key_is_refused(conn: Conn, clients: dict[str, Any]) -> None:
    act_for(conn, clients["tenant"])
    with refused("22023", r"features: pass the features, or an entity_key"):
        conn.execute("select ml.predict('clients')")


def test_a_version_not_trained_on_a_training_set_cannot_read_the_online_store(env: Env) -> None:
    model = fitted("classification", LogisticRegression(max_iter=300))
    _, name, number = env.version("plain", "classification", model, classes=[0, 1])
    env.deploy("plain", [{"arm": "main", "model": name, "version": number}])
    with refused("0A000", rf"model {name} version 1 was not trained on a training set of the feature store"):
        env.predict("plain", entity_key="c1")
    assert env.logged() == 0


# -- features are checked; a failed call logs nothing ------------------------------------------------------


@pytest.fixture
def binary(env: Env) -> Env:
    model = fitted("classification", LogisticRegression(max_iter=300))
    _, name, number = env.version("checked", "classification", model, classes=[0, 1])
    env.deploy("checked", [{"arm": "main", "model": name, "version": number}])
    return env


GOOD = {"amount": 51.5, "visits": 3, "tier": "gold", "vip": True, "seen": "2026-01-03T10:00:00Z", "emb": [0.1, -0.2]}


@pytest.mark.parametrize(("features", "message"), [
    ({k: v for k, v in GOOD.items() if k != "visits"},
     r"features: missing feature visits \(expected int; pass null for a missing value\)"),
    ({**GOOD, "colour": "red"}, r"features: unknown feature colour \(model checked version 1 takes amount float, visits int, "),
    ({**GOOD, "amount": "51.5"}, r"features: amount must be a number \(dtype float\), got \"51.5\""),
    ({**GOOD, "visits": 2.5}, r"features: visits must be an integer \(dtype int\), got 2.5"),
    ({**GOOD, "tier": 3}, r"features: tier must be a string \(dtype text\), got 3"),
    ({**GOOD, "vip": "yes"}, r"features: vip must be true or false \(dtype bool\), got \"yes\""),
    ({**GOOD, "seen": "last tuesday"}, r"features: seen must be an ISO 8601 timestamp string \(dtype timestamp\)"),
    ({**GOOD, "seen": 1767434400}, r"features: seen must be an ISO 8601 timestamp string \(dtype timestamp\), got 1767434400"),
    ({**GOOD, "emb": [0.1]}, r"features: emb must be an array of 2 numbers \(dtype vector\(2\)\), got \[0.1\]"),
    ({**GOOD, "emb": [0.1, "x"]}, r"features: emb must be an array of 2 numbers"),
], ids=["missing", "extra", "float-as-text", "fractional-int", "number-as-text", "text-as-bool", "bad-timestamp",
        "number-as-timestamp", "short-vector", "vector-of-text"])
def test_a_missing_unknown_or_mistyped_feature_is_refused_naming_it_and_nothing_is_logged(
        binary: Env, features: dict[str, Any], message: str) -> None:
    env = binary
    assert env.predict("checked", GOOD)["prediction"] in (0, 1)
    before = env.logged()
    with refused("22023", message):
        env.predict("checked", features)
    assert env.logged() == before


@pytest.mark.parametrize("features", [[1, 2], "amount", 3], ids=["array", "string", "number"])
def test_features_that_are_not_a_json_object_are_refused(binary: Env, features: Any) -> None:
    with refused("22023", r"features: must be a JSON object of feature values by name, got "):
        one(binary.conn, "select ml.predict('checked', %s)", Jsonb(features))
    assert binary.logged() == 0


def test_null_is_a_missing_value_for_every_dtype(binary: Env) -> None:
    result = binary.predict("checked", dict.fromkeys(GOOD))
    assert result["prediction"] in (0, 1) and 0 < result["score"] < 1


# -- routing, the log, shadows ----------------------------------------------------------------------------


def test_a_version_scored_by_workers_is_refused_pointing_to_ml_score(env: Env) -> None:
    X = np.random.default_rng(0).normal(size=(60, 3))
    project_id = project(env.conn, "svm", "classification")
    version = register(env.conn, project_id, [{"name": f"x{i}", "dtype": "float"} for i in range(3)], "classification",
                       classes=[0, 1])
    scoring.compile_registered(env.conn, version, SVC().fit(X, (X[:, 0] > 0).astype(int)), task="classification")
    env.deploy("svm", [{"arm": "main", "model": "svm", "version": 1}])
    with refused("0A000", r"model svm version 1 \(logistic_regression\) is scored by workers: .*; ml.score can") as info:
        env.predict("svm", {"x0": 1.0, "x1": 2.0, "x2": 3.0})
    assert isinstance(info.value, psycopg.Error) and "ml.score" in (info.value.diag.message_hint or "")
    assert env.logged() == 0


def test_the_log_row_holds_arm_version_entity_features_result_and_latency(binary: Env) -> None:
    env = binary
    result = env.predict("checked", GOOD, "customer-7")
    row = env.conn.execute(
        """select p.project_id = pr.id, p.deployment_id::text, p.arm, p.model_version_id = v.id, p.shadow_of, p.entity_key,
                  p.features, p.prediction, p.score, p.probabilities, p.latency_ms, p.source, p.error, p.created_at <= now()
           from ml.predictions p join ml.projects pr on pr.name = 'checked' and pr.tenant_id = p.tenant_id
           join ml.models m on m.project_id = pr.id join ml.model_versions v on v.model_id = m.id and v.version = 1
           where p.id = %s""", (result["prediction_id"],)).fetchone()
    assert row is not None
    assert row[:6] == (True, result["deployment_id"], "main", True, None, "customer-7")
    assert row[6] == GOOD and row[7] == result["prediction"] and row[8] == result["score"]
    assert row[9] == result["probabilities"] and math.isclose(row[10], result["latency_ms"], abs_tol=1e-3)
    assert row[11:] == ("online", None, True)
    # The id carries the row's time (UUIDv7), so feedback finds the row's chunk.
    assert one(env.conn, "select abs(extract(epoch from ml_private.prediction_id_time(id) - created_at)) < 0.001 "
                         "from ml.predictions where id = %s", result["prediction_id"])


def test_a_shadow_arm_is_scored_and_logged_against_the_live_row_and_never_returned(env: Env) -> None:
    live = fitted("classification", LogisticRegression(max_iter=300))
    challenger = fitted("classification", GradientBoostingClassifier(n_estimators=10, max_depth=2, random_state=0))
    live_id, name, _ = env.version("shadowed", "classification", live, classes=[0, 1])
    project_id = one(env.conn, "select id from ml.projects where name = 'shadowed'")
    challenger_id = register(env.conn, project_id, MIXED_SIGNATURE, "classification", model="challenger", classes=[0, 1])
    scoring.install(env.conn, challenger_id, scoring.describe(challenger, task="classification"))
    env.deploy("shadowed", [{"arm": "champion", "model": name, "version": 1, "role": "live"},
                            {"arm": "challenger", "model": "challenger", "version": 1, "role": "shadow"}], "shadow")
    row = json_rows(HELD_OUT)[3]
    result = env.predict("shadowed", row, "k-1")
    assert result["arm"] == "champion" and result["model"] == name
    assert close(result["score"], float(live.predict_proba(HELD_OUT.iloc[[3]])[0, 1]))
    rows = env.conn.execute("select id::text, arm, model_version_id::text, shadow_of::text, entity_key, score, error "
                            "from ml.predictions where tenant_id = %s order by shadow_of nulls first", (env.tenant,)).fetchall()
    assert len(rows) == 2
    assert rows[0][:5] == (result["prediction_id"], "champion", live_id, None, "k-1")
    assert rows[1][1:5] == ("challenger", challenger_id, result["prediction_id"], "k-1") and rows[1][6] is None
    assert close(rows[1][5], float(challenger.predict_proba(HELD_OUT.iloc[[3]])[0, 1]))


def test_without_an_active_deployment_nothing_is_scored(env: Env) -> None:
    project(env.conn, "idle", "classification")
    with refused("P0002"):
        env.predict("idle", GOOD)
    assert env.logged() == 0


# -- callers ------------------------------------------------------------------------------------------------


def test_a_signed_in_member_predicts_as_postgrest_calls_it(binary: Env) -> None:
    """Role authenticated with request.jwt.claims, as PostgREST runs an RPC; a viewer may predict
    and read the log of its tenant."""
    env = binary
    viewer = member(env.conn, env.tenant, "viewer")
    with tenant_context(env.conn, env.tenant, user=viewer):
        result = one(env.conn, "select ml.predict('checked', %s)", Jsonb(GOOD))
        assert one(env.conn, "select count(*) from ml.predictions where id = %s", result["prediction_id"]) == 1


def test_another_tenant_s_project_is_not_found_and_nothing_is_logged(binary: Env) -> None:
    env = binary
    other = make_tenant(env.conn)
    stranger = member(env.conn, other, "owner")
    before = env.logged()
    with refused("P0002", r"project 'checked' does not exist"), tenant_context(env.conn, other, user=stranger):
        env.conn.execute("select ml.predict('checked', %s)", (Jsonb(GOOD),))
    with refused("P0002", r"project 'checked' does not exist"), tenant_context(env.conn, other):
        env.conn.execute("select ml.predict('checked', %s)", (Jsonb(GOOD),))
    # Naming tenant A while a member of B only: refused as a non-member.
    with refused("42501"), tenant_context(env.conn, env.tenant, user=stranger):
        env.conn.execute("select ml.predict('checked', %s)", (Jsonb(GOOD),))
    act_for(env.conn, env.tenant)
    assert env.logged() == before
    assert one(env.conn, "select count(*) from ml.predictions where tenant_id = %s", other) == 0


def test_anonymous_callers_cannot_predict(binary: Env) -> None:
    with refused("42501"), tenant_context(binary.conn, role="anon"):
        binary.conn.execute("select ml.predict('checked', %s)", (Jsonb(GOOD),))


# -- durability and retention ----------------------------------------------------------------------------


def test_the_log_write_skips_the_wal_flush_only_when_the_transaction_wrote_nothing_before(binary: Env) -> None:
    conn = binary.conn
    with conn.transaction():
        conn.execute("select ml.predict('checked', %s)", (Jsonb(GOOD),))
        assert one(conn, "show synchronous_commit") == "off"
    with conn.transaction():
        conn.execute("create temp table business (x int)")
        conn.execute("insert into business values (1)")
        conn.execute("select ml.predict('checked', %s)", (Jsonb(GOOD),))
        assert one(conn, "show synchronous_commit") == "on"
    assert one(conn, "show synchronous_commit") == "on"


def test_the_retention_is_the_owner_s_setting_of_the_table(binary: Env) -> None:
    conn = binary.conn
    assert one(conn, "select retention from ml_private.time_partitioned_tables where table_name = 'ml.predictions'") == \
        pd.Timedelta(days=90).to_pytimedelta()
    with conn.transaction(force_rollback=True):
        changed = one(conn, "select ml.set_prediction_retention('30 days')")
        assert changed == {"table": "ml.predictions", "retention": "30 days", "previous": "90 days"}
        assert one(conn, "select retention::text from ml_private.time_partitioned_tables "
                         "where table_name = 'ml.predictions'") == "30 days"
    with refused("22023", r"retention: must be at least 1 day"):
        conn.execute("select ml.set_prediction_retention('2 hours')")
    for role, user in (("service_role", None), ("authenticated", binary.user)):
        with refused("42501"), tenant_context(conn, binary.tenant, user=user, role=None if user else role):
            conn.execute("select ml.set_prediction_retention('30 days')")


# -- the embedded server -------------------------------------------------------------------------------------


@pytest.mark.embedded
def test_predict_and_its_log_on_both_servers(any_db_url: str) -> None:
    """PostgreSQL 15 with a hypertable, PostgreSQL 18 with native partitions."""
    with psycopg.connect(any_db_url, autocommit=True) as conn:
        conn.execute("set jit = off")
        env = Env(conn)
        model = fitted("classification", GradientBoostingClassifier(n_estimators=5, max_depth=2, random_state=0))
        _, name, number = env.version("both", "classification", model, classes=[0, 1])
        env.deploy("both", [{"arm": "main", "model": name, "version": number}])
        row = json_rows(HELD_OUT)[0]
        result = env.predict("both", row, "e-1")
        assert result["prediction"] == int(model.predict(HELD_OUT.iloc[[0]])[0])
        assert close(result["score"], float(model.predict_proba(HELD_OUT.iloc[[0]])[0, 1]))
        assert one(conn, "select count(*) from ml.predictions where id = %s", result["prediction_id"]) == 1


# -- inputs the online store cannot give ----------------------------------------------------------------------


def test_window_aggregates_must_be_passed_and_the_event_time_defaults_to_the_call_s(env: Env) -> None:
    """A training set with a window aggregate and a transformation of its event_time: by entity
    key, 0A000 naming the aggregate; with features, the event time may be left out (now())."""
    conn = env.conn
    create_group(conn, "payers", {"amount": {"dtype": "float"}})
    conn.execute("select ml.ingest('payers', %s)", (Jsonb([{"customer_id": f"c{i}", "event_time": "2026-01-01T00:00:00Z",
                                                             "amount": float(i)} for i in range(4)]),))
    events = spine_table(conn, pd.DataFrame({"customer_id": ["c1", "c2"], "paid_at": [T0, T0], "amount": [1.0, 2.0]}),
                         {"customer_id": "text", "paid_at": "timestamptz", "amount": "float8"}, name="payments")
    spine = pd.DataFrame({"customer_id": [f"c{i}" for i in range(4)], "event_time": [T0 + pd.Timedelta(hours=h) for h in (1, 2, 3, 4)],
                          "label": [0, 1, 0, 1]})
    dataset = build(conn, "paid", spine_table(conn, spine, {"customer_id": "text", "event_time": "timestamptz", "label": "int"}),
                    ["payers:amount"], "label", [
                        {"type": "window_aggregate", "source": events, "key": "customer_id", "time": "paid_at", "value": "amount",
                         "aggregates": ["sum"], "windows": ["1h"], "prefix": "paid"},
                        {"type": "cyclical", "column": "event_time", "period": "hour"}])
    inputs = one(conn, "select inputs from ml.datasets where id = %s", dataset)
    project_id = project(conn, "paid", "classification")
    run = one(conn, "select ml.start_run(%s, null, 'logistic_regression', '{}', '{}', %s, '{}')", project_id, dataset)
    conn.execute("select ml.finish_run(%s, 'succeeded', '{}', 1.0, 100, 0.1)", (run,))
    signature = {"inputs": [{"name": name, "dtype": "float"} for name in inputs], "outputs": [], "task": "classification",
                 "classes": [0, 1]}
    version = one(conn, "select ml.register_model_version(%s, 'paid', 'x', 'skops', %s, %s, null, '{}')",
                  run, hashlib.sha256(b"x").hexdigest(), Jsonb(signature))["model_version_id"]
    X = np.random.default_rng(5).normal(size=(40, len(inputs)))
    scoring.install(conn, version, scoring.describe(LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))))
    arguments = {a["name"] for a in one(conn, "select scoring -> 'arguments' from ml.model_versions where id = %s", version)}
    assert arguments == {"amount", "paid_sum_1h", "event_time"}
    env.deploy("paid", [{"arm": "main", "model": "paid", "version": 1}])

    with refused("0A000", r"model paid version 1 takes window aggregate paid_sum_1h, which the online store does not keep"):
        env.predict("paid", entity_key="c1")
    result = env.predict("paid", {"amount": 1.5, "paid_sum_1h": 3.0})
    logged = one(conn, "select features from ml.predictions where id = %s", result["prediction_id"])
    assert logged["amount"] == 1.5 and "event_time" in logged
    given = env.predict("paid", {"amount": 1.5, "paid_sum_1h": 3.0, "event_time": "2026-01-01T05:00:00Z"})
    logged = one(conn, "select features from ml.predictions where id = %s", given["prediction_id"])
    assert logged["event_time"] == "2026-01-01T05:00:00Z"
