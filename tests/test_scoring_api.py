"""Serving from Python and the command line (pgmlops.scoring, `pgmlops predict | deploy |
deployments | rollback | feedback | score`), each against the real server, on models fitted by
scikit-learn, registered and compiled: what they return, what they write, and their errors
(the SQLSTATE, exit status 2 for bad input, nothing written)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
import pytest
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from pgmlops import scoring
from pgmlops.db import tenant_context
from pgmlops.errors import InvalidInput, NotFound
from pgmlops.jobs.worker import Worker

from .compile_helpers import Conn, numeric_signature, one, project, register
from .test_cli import error_lines, pgmlops

FEATURES = {"x0": 0.4, "x1": -1.2, "x2": 2.0}


@dataclass(frozen=True)
class World:
    url: str
    tenant: str
    owner: str
    models: dict[int, Any]  # version -> the fitted scikit-learn model


def fitted(kind: str) -> Any:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(300, 3))
    y = (X[:, 0] + 0.5 * X[:, 1] - 0.3 * X[:, 2] + rng.normal(0, 0.3, 300) > 0).astype(int)
    model = LogisticRegression() if kind == "logistic" else GradientBoostingClassifier(n_estimators=10, max_depth=3, random_state=0)
    return model.fit(X, y)


@pytest.fixture(scope="module")
def world(db_url: str) -> World:
    """A tenant with an owner; project churn (classification) with versions 1 (logistic
    regression) and 2 (gradient boosting), both compiled and approved by the owner."""
    owner = str(uuid.uuid4())
    with psycopg.connect(db_url, autocommit=True) as conn:
        tenant = str(one(conn, "select ml.create_tenant('serving', %s)", owner))
        models = {}
        with tenant_context(conn, tenant):
            project_id = project(conn, "churn", "classification")
            for number, kind in ((1, "logistic"), (2, "boosting")):
                model = fitted(kind)
                version = register(conn, project_id, numeric_signature(3), "classification", model="churn", classes=[0, 1])
                assert scoring.compile_registered(conn, version, model, task="classification")["scoring_path"] == "compiled"
                models[number] = model
        with tenant_context(conn, tenant, user=owner):
            for number in models:
                conn.execute("select ml.approve('churn', %s, 'approved', 'serving tests')", (number,))
    return World(db_url, tenant, owner, models)


@pytest.fixture
def conn(world: World) -> Any:
    with psycopg.connect(world.url, autocommit=True) as c:
        yield c


@pytest.fixture(scope="module")
def customers(world: World) -> np.ndarray[Any, Any]:
    """app.customers (id, x0, x1, x2): 25 rows the service role may read; schema app, where it
    may create the scores' tables (a worker acting for the tenant creates them as the caller)."""
    X = np.random.default_rng(11).normal(size=(25, 3))
    with psycopg.connect(world.url, autocommit=True) as conn:
        conn.execute("create schema app")
        conn.execute("grant usage, create on schema app to service_role")
        conn.execute("create table app.customers (id int primary key, x0 float8, x1 float8, x2 float8)")
        with conn.cursor() as cur:
            cur.executemany("insert into app.customers values (%s, %s, %s, %s)",
                            [(i + 1, *map(float, row)) for i, row in enumerate(X)])
        conn.execute("grant select on app.customers to service_role")
    return X


def run_score_jobs(url: str) -> None:
    Worker(url, kinds=["score"], idle_exit=0.5, poll_interval=0.2, install_signals=False, maintenance_interval=None).run()


def single(conn: Conn, world: World, version: int = 1) -> uuid.UUID:
    return scoring.deploy(conn, "churn", "single", [{"arm": "main", "model": "churn", "version": version, "weight": 1}],
                          tenant=world.tenant)


def logged(conn: Conn, world: World) -> int:
    return int(one(conn, "select count(*) from ml.predictions where tenant_id = %s", world.tenant))


# -- Python ------------------------------------------------------------------------------------


def test_predict_scores_with_the_deployed_version_and_logs_the_call(world: World, conn: Conn) -> None:
    deployment_id = single(conn, world)
    before = logged(conn, world)
    result = scoring.predict(conn, "churn", FEATURES, tenant=world.tenant)
    model = world.models[1]
    X = np.array([[FEATURES["x0"], FEATURES["x1"], FEATURES["x2"]]])
    assert result["prediction"] == int(model.predict(X)[0])
    assert np.allclose([result["probabilities"]["0"], result["probabilities"]["1"]], model.predict_proba(X)[0], rtol=0, atol=1e-9)
    assert (result["model"], result["version"], result["arm"]) == ("churn", 1, "main")
    assert str(result["deployment_id"]) == str(deployment_id)
    assert logged(conn, world) == before + 1
    row = conn.execute("select features, arm from ml.predictions where id = %s", (result["prediction_id"],)).fetchone()
    assert row == (FEATURES, "main")


def test_predict_refuses_a_missing_feature_naming_it_and_logs_nothing(world: World, conn: Conn) -> None:
    single(conn, world)
    before = logged(conn, world)
    with pytest.raises(InvalidInput, match="x2") as caught:
        scoring.predict(conn, "churn", {"x0": 1.0, "x1": 2.0}, tenant=world.tenant)
    assert caught.value.sqlstate == "22023"
    assert logged(conn, world) == before


def test_predict_on_a_project_that_does_not_exist_is_not_found(world: World, conn: Conn) -> None:
    with pytest.raises(NotFound):
        scoring.predict(conn, "nosuch", FEATURES, tenant=world.tenant)


def test_deploy_deployment_history_and_rollback(world: World, conn: Conn) -> None:
    first = single(conn, world, 1)
    second = scoring.deploy(conn, "churn", "ab", [
        {"arm": "a", "model": "churn", "version": 1, "weight": 0.7},
        {"arm": "b", "model": "churn", "version": 2, "weight": 0.3}], {"reason": "try boosting"}, tenant=world.tenant)
    active = scoring.deployment(conn, "churn", tenant=world.tenant)
    assert active is not None and str(active["id"]) == str(second) and active["strategy"] == "ab"
    weights = {a["arm"]: (a["version"], a.get("current_weight", a.get("weight"))) for a in active["arms"]}
    assert weights == {"a": (1, 0.7), "b": (2, 0.3)}
    history = scoring.deployment_history(conn, "churn", tenant=world.tenant)
    assert [str(d["id"]) for d in history[:2]] == [str(second), str(first)]
    assert scoring.rollback(conn, "churn", tenant=world.tenant) == first
    active = scoring.deployment(conn, "churn", tenant=world.tenant)
    assert active is not None and str(active["id"]) == str(first)


def test_deploy_refuses_a_bad_strategy_and_changes_nothing(world: World, conn: Conn) -> None:
    current = single(conn, world)
    with pytest.raises(InvalidInput, match="strategy") as caught:
        scoring.deploy(conn, "churn", "yolo", [{"arm": "main", "model": "churn", "version": 1, "weight": 1}],
                       tenant=world.tenant)
    assert caught.value.sqlstate == "22023"
    active = scoring.deployment(conn, "churn", tenant=world.tenant)
    assert active is not None and str(active["id"]) == str(current)


def test_record_feedback_one_and_in_bulk(world: World, conn: Conn) -> None:
    single(conn, world)
    ids = [scoring.predict(conn, "churn", FEATURES, tenant=world.tenant)["prediction_id"] for _ in range(3)]
    feedback_id = scoring.record_feedback(conn, ids[0], 1, "crm", tenant=world.tenant)
    assert one(conn, "select label from ml.feedback where id = %s", feedback_id) == 1
    assert scoring.record_feedback_bulk(conn, [{"prediction_id": ids[1], "label": 0}, {"prediction_id": ids[2], "label": 1}],
                                        tenant=world.tenant) == 2
    assert one(conn, "select count(*) from ml.feedback where prediction_id = any(%s::uuid[])", [str(i) for i in ids]) == 3
    with pytest.raises(NotFound):
        scoring.record_feedback(conn, uuid.uuid4(), 1, tenant=world.tenant)


def test_predict_batch_scores_a_query(world: World, conn: Conn) -> None:
    single(conn, world)
    source = "select * from (values ('a', 0.4, -1.2, 2.0), ('b', 3.0, 1.0, -1.0)) v (id, x0, x1, x2)"
    rows = scoring.predict_batch(conn, "churn", source, tenant=world.tenant)
    X = np.array([[0.4, -1.2, 2.0], [3.0, 1.0, -1.0]])
    model = world.models[1]
    assert [(r["row_number"], r["key"], r["prediction"]) for r in rows] == [(1, {"id": "a"}, int(model.predict(X)[0])),
                                                                            (2, {"id": "b"}, int(model.predict(X)[1]))]
    assert np.allclose([r["score"] for r in rows], model.predict_proba(X)[:, 1], rtol=0, atol=1e-9)


def test_score_queues_a_job_whose_progress_batch_scoring_reads(world: World, conn: Conn, customers: np.ndarray[Any, Any]) -> None:
    single(conn, world, 2)
    job = scoring.score(conn, "churn", "app.customers", "app.scores_py", {"chunk_rows": 10}, tenant=world.tenant)
    queued = scoring.batch_scoring(conn, job, tenant=world.tenant)
    assert queued is not None
    assert [queued[k] for k in ("status", "rows_done", "model", "version", "path")] == ["queued", 0, "churn", 2, "sql"]
    run_score_jobs(world.url)
    done = scoring.batch_scoring(conn, job, tenant=world.tenant)
    assert done is not None and (done["status"], done["rows_done"], done["rows_total"]) == ("succeeded", 25, 25)
    scores = conn.execute("select score from app.scores_py order by id").fetchall()
    assert np.allclose([r[0] for r in scores], world.models[2].predict_proba(customers)[:, 1], rtol=0, atol=1e-9)
    assert scoring.batch_scoring(conn, job + 1000, tenant=world.tenant) is None


def test_score_refuses_a_bad_path_and_queues_nothing(world: World, conn: Conn, customers: np.ndarray[Any, Any]) -> None:
    single(conn, world)
    before = one(conn, "select count(*) from ml.batch_scorings")
    with pytest.raises(InvalidInput, match="options.path") as caught:
        scoring.score(conn, "churn", "app.customers", "app.never", {"path": "gpu"}, tenant=world.tenant)
    assert caught.value.sqlstate == "22023"
    assert one(conn, "select count(*) from ml.batch_scorings") == before
    assert one(conn, "select to_regclass('app.never')") is None


# -- the command line --------------------------------------------------------------------------


def cli(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    return pgmlops(*args, "--tenant", world.tenant, url=world.url)


def test_cli_deploy_with_arms_then_deployments_and_rollback(world: World, conn: Conn) -> None:
    single(conn, world)
    run = cli(world, "deploy", "churn", "--strategy", "ab", "--arm", "a=churn@1:0.6", "--arm", "b=churn@2:0.4",
              "--reason", "cli test")
    assert run.returncode == 0, run.stderr
    assert "ab deployment" in run.stdout and "0.6" in run.stdout and "0.4" in run.stdout
    run = cli(world, "deployments", "churn")
    assert run.returncode == 0, run.stderr
    arms = {cells[0]: cells[1:] for cells in ([c.strip() for c in line.split("│") if c.strip()]
                                              for line in run.stdout.splitlines()) if len(cells) == 5}
    assert arms["a"] == ["churn", "1", "live", "0.6"] and arms["b"] == ["churn", "2", "live", "0.4"]
    run = cli(world, "deployments", "churn", "--history")
    assert run.returncode == 0, run.stderr
    assert "a=churn@1:0.6" in run.stdout
    run = cli(world, "rollback", "churn")
    assert run.returncode == 0, run.stderr
    assert "single deployment" in run.stdout


def test_cli_deploy_a_canary_with_its_schedule(world: World, conn: Conn) -> None:
    single(conn, world)
    run = cli(world, "deploy", "churn", "--strategy", "canary", "--arm", "stable=churn@1", "--arm", "canary=churn@2",
              "--canary-schedule", "0.2@0m, 0.5@30m, 1@2h", "--abort", '{"metric": "error_rate", "max": 0.3, "window": "1 hour"}')
    assert run.returncode == 0, run.stderr
    assert "canary arm canary: 0.2 after 00:00:00, 0.5 after 00:30:00, 1 after 02:00:00" in run.stdout
    active = scoring.deployment(conn, "churn", tenant=world.tenant)
    assert active is not None and active["abort"]["max"] == 0.3
    assert {a["arm"]: a["current_weight"] for a in active["arms"]} == {"stable": 0.8, "canary": 0.2}
    run = cli(world, "deploy", "churn", "--strategy", "canary", "--arm", "stable=churn@1", "--arm", "canary=churn@2",
              "--canary-schedule", "0.2 at once")
    assert run.returncode == 2 and "expected WEIGHT@AFTER" in run.stderr


def test_cli_deploy_accepts_arms_as_json(world: World) -> None:
    arms = json.dumps([{"arm": "main", "model": "churn", "version": 2, "weight": 1}])
    run = cli(world, "deploy", "churn", "--strategy", "single", "--arms", arms)
    assert run.returncode == 0, run.stderr
    assert "single deployment" in run.stdout


def test_cli_predict_prints_the_result_as_json(world: World, conn: Conn) -> None:
    single(conn, world)
    run = cli(world, "predict", "churn", "--features", json.dumps(FEATURES))
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["model"] == "churn" and result["version"] == 1 and "prediction_id" in result


def test_cli_feedback_records_the_outcome(world: World, conn: Conn) -> None:
    single(conn, world)
    prediction = scoring.predict(conn, "churn", FEATURES, tenant=world.tenant)["prediction_id"]
    run = cli(world, "feedback", str(prediction), "1", "--source", "cli")
    assert run.returncode == 0, run.stderr
    assert one(conn, "select label from ml.feedback where prediction_id = %s and source = 'cli'", prediction) == 1


def test_cli_a_bad_arm_is_a_usage_error_and_deploys_nothing(world: World, conn: Conn) -> None:
    current = single(conn, world)
    run = cli(world, "deploy", "churn", "--strategy", "single", "--arm", "main=churn")
    assert run.returncode == 2 and "expected name=model@version" in run.stderr and "Traceback" not in run.stderr
    active = scoring.deployment(conn, "churn", tenant=world.tenant)
    assert active is not None and str(active["id"]) == str(current)


def test_cli_a_strategy_the_sql_refuses_is_one_line_with_its_sqlstate_and_exit_2(world: World) -> None:
    run = cli(world, "deploy", "churn", "--strategy", "yolo", "--arm", "main=churn@1:1")
    assert run.returncode == 2
    assert error_lines(run)[0].startswith("error [22023]: ") and "strategy" in error_lines(run)[0]


def test_cli_predict_with_a_missing_feature_is_exit_2_and_logs_nothing(world: World, conn: Conn) -> None:
    single(conn, world)
    before = logged(conn, world)
    run = cli(world, "predict", "churn", "--features", '{"x0": 1, "x1": 2}')
    assert run.returncode == 2
    assert error_lines(run)[0].startswith("error [22023]: ") and "x2" in error_lines(run)[0]
    assert logged(conn, world) == before


def test_cli_predict_needs_features_or_an_entity(world: World) -> None:
    run = cli(world, "predict", "churn")
    assert run.returncode == 2 and "--features" in run.stderr and "Traceback" not in run.stderr


def test_cli_rollback_of_an_unknown_project_is_not_found_exit_2(world: World) -> None:
    run = cli(world, "rollback", "nosuch")
    assert run.returncode == 2 and error_lines(run)[0].startswith("error [P0002]: ")


def test_cli_score_waits_showing_progress_until_the_scoring_ends(world: World, conn: Conn, customers: np.ndarray[Any, Any]) -> None:
    single(conn, world)
    env = {k: v for k, v in os.environ.items() if k != "PGMLOPS_TENANT"}
    env["DATABASE_URL"] = world.url
    worker = subprocess.Popen([sys.executable, "-m", "pgmlops", "worker", "--kinds", "score", "--idle-exit", "2"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        run = cli(world, "score", "churn", "--source", "select id, x0, x1, x2 from app.customers where id <= 20",
                  "--target", "app.scores_cli", "--path", "sql", "--options", '{"chunk_rows": 8}', "--wait", "--timeout", "60")
    finally:
        worker.wait(timeout=60)
    assert run.returncode == 0, run.stderr
    assert "score job" in run.stdout and "scored 20 rows" in run.stdout and "churn@1 (sql)" in run.stdout
    assert "20/20" in run.stderr  # the progress bar, at its end
    assert one(conn, "select count(*) from app.scores_cli") == 20


def test_cli_score_with_a_bad_path_is_exit_2_with_its_sqlstate(world: World, conn: Conn, customers: np.ndarray[Any, Any]) -> None:
    single(conn, world)
    run = cli(world, "score", "churn", "--source", "app.customers", "--target", "app.never", "--path", "gpu")
    assert run.returncode == 2
    assert error_lines(run)[0].startswith("error [22023]: options.path: must be sql or worker")


def test_cli_predict_by_entity_of_a_model_without_a_training_set_is_a_failure_exit_1(world: World, conn: Conn) -> None:
    single(conn, world)
    run = cli(world, "predict", "churn", "--entity", "c1")
    assert run.returncode == 1
    error, hint = error_lines(run)
    assert error.startswith("error [0A000]: ") and "entity key" in error and hint.startswith("hint: Pass the features")


def test_cli_feedback_with_a_label_the_model_does_not_know_is_exit_2_and_records_nothing(world: World, conn: Conn) -> None:
    single(conn, world)
    prediction = scoring.predict(conn, "churn", FEATURES, tenant=world.tenant)["prediction_id"]
    run = cli(world, "feedback", str(prediction), '"maybe"')
    assert run.returncode == 2
    assert error_lines(run) == ['error [22023]: label: "maybe" is not a class of the model that made the prediction (classes: 0, 1)']
    assert one(conn, "select count(*) from ml.feedback where prediction_id = %s", prediction) == 0
