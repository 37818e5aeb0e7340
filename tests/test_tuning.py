"""Tuning: ml.tune's checks, trial slots settled exactly once, studies run by worker processes
(one of them killed mid-trial), and the trials each tenant may read."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import optuna
import psycopg
import pytest
from optuna.trial import FrozenTrial, TrialState
from psycopg.types.json import Jsonb
from sklearn.datasets import make_classification

from pgmlops import tuning
from pgmlops.db import tenant_context
from pgmlops.jobs import queue
from pgmlops.jobs.worker import WorkerPool

from .conftest import act_for, make_tenant

Conn = psycopg.Connection[Any]

SPACE = {"max_iter": {"type": "int", "low": 5, "high": 25},
         "learning_rate": {"type": "float", "low": 0.02, "high": 0.5, "log": True}}


# -- helpers -----------------------------------------------------------------------------------


def one(conn: Conn, query: str, *args: Any) -> Any:
    row = conn.execute(query, args).fetchone()
    assert row is not None
    return row[0]


def classification_set(conn: Conn, name: str = "tune_set", rows: int = 160) -> str:
    """A training set of ``rows`` generated examples (4 float inputs, an int label `label`); returns its id."""
    X, y = make_classification(n_samples=rows, n_features=4, n_informative=3, n_redundant=0, random_state=7)
    group = f"g_{name}"
    conn.execute("select ml.create_feature_group(%s, 'customer', %s)",
                 (group, Jsonb({f"x{j}": {"dtype": "float"} for j in range(4)})))
    conn.execute("select ml.ingest(%s, %s)", (group, Jsonb([
        {"customer": f"c{i}", "event_time": "2026-01-01T00:00:00Z", **{f"x{j}": float(X[i, j]) for j in range(4)}}
        for i in range(rows)])))
    labels = ", ".join(f"('c{i}', {int(y[i])})" for i in range(rows))
    spine = f"select customer, timestamptz '2026-01-02' as event_time, label from (values {labels}) s (customer, label)"
    return str(one(conn, "select ml.create_training_set(%s, %s, %s, 'label')", name, spine,
                   [f"{group}:x{j}" for j in range(4)]))


def project_with_data(conn: Conn) -> str:
    """Project `churn` (classification of `label`) and a training set for it; returns the dataset id."""
    conn.execute("select ml.create_project('churn', 'classification', 'label')")
    return classification_set(conn)


def tune(conn: Conn, dataset: str, space: Any = None, n_trials: int = 4, options: Any = None,
         algorithm: str = "hist_gradient_boosting") -> int:
    return int(one(conn, "select ml.tune('churn', %s, %s, %s, %s, %s)", dataset, algorithm,
                   Jsonb(SPACE if space is None else space), n_trials, Jsonb(options or {})))


def wait_for(predicate: Callable[[], bool], timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def workers(url: str, concurrency: int = 2, **kwargs: Any) -> WorkerPool:
    kwargs.setdefault("log_level", logging.WARNING)
    return WorkerPool(url, ["tune_trial", "tune", "echo"], concurrency, poll_interval=0.5, **kwargs)


def until_all_workers_are_up(conn: Conn, pool: WorkerPool) -> None:
    """Two echo jobs running at once: every worker process has started and is claiming."""
    conn.execute("select ml.enqueue('echo', '{\"sleep_ms\": 700}') from generate_series(1, %s)", (pool.concurrency,))
    wait_for(lambda: one(conn, "select count(*) from ml.jobs where kind = 'echo' and status = 'running'") == pool.concurrency,
             timeout=60, what="every worker to claim an echo job")


def job_status(conn: Conn, job_id: int) -> str:
    return str(one(conn, "select status from ml.jobs where id = %s", job_id))


def states(conn: Conn, study: str) -> dict[str, int]:
    return dict(conn.execute("select state, count(*)::int from ml.tuning_trials where study_id = %s group by state",
                             (study,)).fetchall())


def written(conn: Conn, tenant: str) -> tuple[int, int, int]:
    return (int(one(conn, "select count(*) from ml.jobs where tenant_id = %s", tenant)),
            int(one(conn, "select count(*) from ml.tuning_studies where tenant_id = %s", tenant)),
            int(one(conn, "select count(*) from ml.events where tenant_id = %s", tenant)))


@pytest.fixture
def studio(fresh_db_url: str) -> Iterator[tuple[str, Conn, str, str]]:
    """A fresh database, a connection acting for a new tenant with project `churn` and a
    training set: (url, conn, tenant, dataset id)."""
    with psycopg.connect(fresh_db_url, autocommit=True) as conn:
        tenant = make_tenant(conn)
        act_for(conn, tenant)
        yield fresh_db_url, conn, tenant, project_with_data(conn)


@pytest.fixture
def dataset(conn: Conn, tenant: str) -> str:
    return project_with_data(conn)


# -- ml.tune ------------------------------------------------------------------------------------


def test_tune_records_the_study_and_queues_a_slot_per_trial_and_a_waiting_refit(conn: Conn, tenant: str, dataset: str) -> None:
    job = tune(conn, dataset, n_trials=3, options={"metric": "log_loss", "random_state": 7})
    study = conn.execute("select id, n_trials, metric, direction, status, optuna_study_name, options, tune_job_id "
                         "from ml.tuning_studies where tenant_id = %s", (tenant,)).fetchone()
    assert study is not None
    study_id = str(study[0])
    assert study[1:6] == (3, "log_loss", "minimize", "running", f"pgmlops-{study_id}")
    assert {k: study[6][k] for k in ("sampler", "pruner", "random_state", "split", "model")} == {
        "sampler": "tpe", "pruner": "median", "random_state": 7, "split": "stratified", "model": "churn"}
    assert study[7] == job
    slots = conn.execute("select kind, payload, status, run_after = 'infinity' from ml.jobs where tenant_id = %s order by id",
                         (tenant,)).fetchall()
    assert slots == [("tune_trial", {"study_id": study_id}, "queued", False)] * 3 + [("tune", {"study_id": study_id}, "queued", True)]
    assert one(conn, "select kind from ml.jobs where id = %s", job) == "tune"
    assert tuning.study_id_of(conn, job) == uuid.UUID(study_id)
    progress = tuning.study_progress(conn, job)
    assert {k: progress[k] for k in ("status", "n_trials", "complete", "pruned", "failed", "running", "best_value")} == {
        "status": "running", "n_trials": 3, "complete": 0, "pruned": 0, "failed": 0, "running": 0, "best_value": None}


def test_the_metric_sets_the_default_direction(conn: Conn, tenant: str, dataset: str) -> None:
    for metric, direction in (("roc_auc", "maximize"), ("brier", "minimize"), ("f1", "maximize")):
        tune(conn, dataset, n_trials=1, options={"metric": metric})
        assert one(conn, "select direction from ml.tuning_studies order by created_at desc limit 1") == direction
    tune(conn, dataset, n_trials=1, options={"metric": "log_loss", "direction": "maximize"})
    assert one(conn, "select direction from ml.tuning_studies order by created_at desc limit 1") == "maximize"


BAD_INPUT = [
    pytest.param("algorithm", "xgboost", SPACE, 4, {}, r"^algorithm: unknown algorithm 'xgboost'", id="unknown-algorithm"),
    pytest.param("algorithm", "ridge", {"alpha": {"type": "float", "low": 0.1, "high": 1}}, 4, {},
                 r"^algorithm: ridge does not support task classification", id="algorithm-of-another-task"),
    pytest.param("space", None, {"max_depht": {"type": "int", "low": 2, "high": 5}}, 4, {},
                 r"^search_space: \$\.max_depht: not a hyperparameter of hist_gradient_boosting", id="unknown-parameter"),
    pytest.param("space", None, {}, 4, {}, r"^search_space: must name at least one hyperparameter", id="empty-space"),
    pytest.param("space", None, {"max_iter": {"type": "int", "low": 0, "high": 50}}, 4, {},
                 r"^search_space: \$\.max_iter\.low: must be >= 1, got 0", id="bound-below-the-schema"),
    pytest.param("space", None, {"max_iter": {"type": "int", "low": 10, "high": 20000}}, 4, {},
                 r"^search_space: \$\.max_iter\.high: must be <= 10000, got 20000", id="bound-above-the-schema"),
    pytest.param("space", None, {"learning_rate": {"type": "float", "low": 0, "high": 0.5}}, 4, {},
                 r"^search_space: \$\.learning_rate\.low: must be > 0, got 0", id="exclusive-bound"),
    pytest.param("space", None, {"max_iter": {"type": "float", "low": 5, "high": 50}}, 4, {},
                 r"^search_space: \$\.max_iter\.type: float needs a hyperparameter of type number, but max_iter is integer",
                 id="float-range-of-an-integer"),
    pytest.param("space", None, {"max_iter": {"type": "int", "low": 5.5, "high": 50}}, 4, {},
                 r"^search_space: \$\.max_iter\.low: must be of type integer, got a fraction", id="fractional-int-bound"),
    pytest.param("space", None, {"loss": {"type": "int", "low": 1, "high": 2}}, 4, {},
                 r"^search_space: \$\.loss\.type: loss takes one of a fixed set of values", id="range-over-a-choice"),
    pytest.param("space", None, {"loss": {"type": "categorical", "choices": ["log_loss", "hinge"]}}, 4, {},
                 r"^search_space: \$\.loss\.choices\[1\]: must be one of", id="choice-outside-the-schema"),
    pytest.param("space", None, {"loss": {"type": "categorical", "choices": []}}, 4, {},
                 r"^search_space: \$\.loss\.choices: must have at least 1 items", id="no-choices"),
    pytest.param("space", None, {"max_iter": {"type": "int", "low": 50, "high": 5}}, 4, {},
                 r"^search_space: \$\.max_iter: low must be <= high", id="low-above-high"),
    pytest.param("space", None, {"learning_rate": {"type": "float", "low": 0.001, "high": 0.5, "log": True, "step": 0.01}}, 4, {},
                 r"^search_space: \$\.learning_rate: log and step cannot be combined", id="log-with-step"),
    pytest.param("space", None, {"max_iter": {"type": "int", "low": 5, "high": 50, "by": 5}}, 4, {},
                 r"^search_space: \$\.max_iter\.by: is not an allowed property", id="unknown-spec-key"),
    pytest.param("space", None, {"max_iter": {"type": "grid", "low": 5, "high": 50}}, 4, {},
                 r"^search_space: \$\.max_iter\.type: must be one of", id="unknown-spec-type"),
    pytest.param("n_trials", None, SPACE, 0, {}, r"^n_trials: must be between 1 and 1000, got 0", id="no-trials"),
    pytest.param("n_trials", None, SPACE, 1001, {}, r"^n_trials: must be between 1 and 1000, got 1001", id="too-many-trials"),
    pytest.param("options", None, SPACE, 4, {"sampler": "grid"}, r"^options: \$\.sampler: must be one of", id="unknown-sampler"),
    pytest.param("options", None, SPACE, 4, {"pruner": "asha"}, r"^options: \$\.pruner: must be one of", id="unknown-pruner"),
    pytest.param("options", None, SPACE, 4, {"metric": "rmse"}, r"^options: \$\.metric: must be one of", id="metric-of-another-task"),
    pytest.param("options", None, SPACE, 4, {"direction": "up"}, r"^options: \$\.direction: must be one of", id="bad-direction"),
    pytest.param("options", None, SPACE, 4, {"test_size": 0.9}, r"^options: \$\.test_size: must be <= 0.5", id="train-option"),
]


@pytest.mark.parametrize(("field", "algorithm", "space", "n_trials", "options", "message"), BAD_INPUT)
def test_tune_refuses_bad_input_with_22023_and_writes_nothing(conn: Conn, tenant: str, dataset: str, field: str,
                                                              algorithm: str | None, space: Any, n_trials: int,
                                                              options: dict[str, Any], message: str) -> None:
    import re

    before = written(conn, tenant)
    with pytest.raises(psycopg.Error) as info:
        tune(conn, dataset, space, n_trials, options, algorithm or "hist_gradient_boosting")
    assert info.value.sqlstate == "22023", info.value
    assert re.search(message, info.value.diag.message_primary or ""), info.value.diag.message_primary
    assert written(conn, tenant) == before


def test_tune_from_python_names_the_rule_broken(conn: Conn, tenant: str, dataset: str) -> None:
    from pgmlops.errors import InvalidInput

    with pytest.raises(InvalidInput, match="n_trials: must be between 1 and 1000"):
        tuning.tune(conn, "churn", dataset, "hist_gradient_boosting", SPACE, 0)
    assert isinstance(tuning.tune(conn, "churn", "tune_set", "hist_gradient_boosting", SPACE, 2), int)


def test_a_viewer_may_not_tune(conn: Conn, tenant: str, dataset: str) -> None:
    viewer = str(uuid.uuid4())
    conn.execute("select ml.add_tenant_member(%s, %s, 'viewer')", (tenant, viewer))
    with tenant_context(conn, tenant, user=viewer):
        with pytest.raises(psycopg.Error) as info:
            tune(conn, dataset)
    assert info.value.sqlstate == "42501"


# -- trial slots, settled in SQL ------------------------------------------------------------------


@contextmanager
def held(conn: Conn, worker: str, kind: str) -> Iterator[queue.Job]:
    """Claim one job of ``kind`` as ``worker`` and run the block in its transaction, acting for
    its tenant as the worker does; completes the job when the block ends."""
    (job,) = queue.claim(conn, worker, [kind])
    with conn.transaction():
        yield job
        queue.complete(conn, job.id, worker, {})


def test_the_last_settled_slot_releases_the_refit_even_when_a_slot_ends_without_success(studio: tuple[str, Conn, str, str]) -> None:
    _, conn, _, dataset = studio
    job = tune(conn, dataset, n_trials=3)
    study = str(tuning.study_id_of(conn, job))
    # Slot 1 completes (settled in its job's transaction); slot 2 fails for good (the queue's
    # trigger settles it as lost); the refit still waits for slot 3.
    with held(conn, "w1", "tune_trial") as slot:
        assert one(conn, "select ml.finish_tuning_trial(%s, %s, 'complete', 0, 0.9)", study, slot.id)["settled"] == 1
    (slot,) = queue.claim(conn, "w2", ["tune_trial"])
    assert queue.fail(conn, slot.id, "w2", "boom", retry=False) == "failed"
    progress = conn.execute("select slots_complete, slots_pruned, slots_lost, status from ml.tuning_studies where id = %s",
                            (study,)).fetchone()
    assert progress == (1, 0, 1, "running")
    assert one(conn, "select run_after = 'infinity' from ml.jobs where id = %s", job)
    with held(conn, "w3", "tune_trial") as slot:
        out = one(conn, "select ml.finish_tuning_trial(%s, %s, 'pruned', 2, 0.5)", study, slot.id)
        assert (out["settled"], out["released"], out["status"]) == (3, True, "refitting")
    assert one(conn, "select run_after <= now() from ml.jobs where id = %s", job)
    assert [j.id for j in queue.claim(conn, "w4", ["tune"])] == [job]
    events = [r[0] for r in conn.execute("select event from ml.events where topic = 'models' and event like 'study.%%' "
                                         "order by id").fetchall()]
    assert events == ["study.created"] + ["study.trial_finished"] * 3 + ["study.refitting"]
    finished = [r[0] for r in conn.execute("select payload ->> 'state' from ml.events where event = 'study.trial_finished' "
                                           "order by id").fetchall()]
    assert finished == ["complete", "lost", "pruned"]


def test_a_slot_settles_only_while_its_job_is_held(studio: tuple[str, Conn, str, str]) -> None:
    _, conn, _, dataset = studio
    job = tune(conn, dataset, n_trials=2)
    study = str(tuning.study_id_of(conn, job))
    queued = one(conn, "select min(id) from ml.jobs where kind = 'tune_trial' and status = 'queued'")
    with pytest.raises(psycopg.Error) as info:
        conn.execute("select ml.finish_tuning_trial(%s, %s, 'complete')", (study, queued))
    assert info.value.sqlstate == "55000"
    with pytest.raises(psycopg.Error) as info:
        conn.execute("select ml.finish_tuning_trial(%s, %s, 'done')", (study, queued))
    assert info.value.sqlstate == "22023"
    assert one(conn, "select slots_complete + slots_pruned + slots_lost from ml.tuning_studies where id = %s", study) == 0


def test_cancelling_the_tune_job_cancels_the_slots_and_fails_the_study(studio: tuple[str, Conn, str, str]) -> None:
    _, conn, _, dataset = studio
    job = tune(conn, dataset, n_trials=3)
    study = str(tuning.study_id_of(conn, job))
    assert queue.cancel(conn, job)
    assert one(conn, "select count(*) from ml.jobs where kind = 'tune_trial' and status = 'cancelled' "
                     "and payload ->> 'study_id' = %s", study) == 3
    status, error = conn.execute("select status, error from ml.tuning_studies where id = %s", (study,)).fetchone() or ()
    assert status == "failed" and f"tune job {job} cancelled" in error
    assert tuning.study_progress(conn, study)["status"] == "failed"


def test_a_retried_slot_takes_over_the_trial_its_last_attempt_finished(studio: tuple[str, Conn, str, str]) -> None:
    """A worker that told Optuna its trial's result but died before its job committed: the
    slot's retry records that trial and settles the slot with it, running no second trial."""
    from pgmlops.jobs.handlers import JobContext
    from pgmlops.tuning import _handlers as _tuning_handlers

    _, conn, _, dataset = studio
    job = tune(conn, dataset, n_trials=1, options={"pruner": "none"})
    study = str(tuning.study_id_of(conn, job))
    (first_attempt,) = queue.claim(conn, "w1", ["tune_trial"])
    with conn.transaction(force_rollback=True):  # the attempt's own writes never commit
        first = _tuning_handlers.tune_trial(JobContext(job=first_attempt, conn=conn, worker_id="w1"))
    assert first["state"] == "complete" and states(conn, study) == {"COMPLETE": 1}
    conn.execute("update ml.jobs set lease_expires_at = now() - interval '1 second' where id = %s", (first_attempt.id,))

    (retry,) = queue.claim(conn, "w2", ["tune_trial"])
    assert (retry.id, retry.attempts) == (first_attempt.id, 2)
    with conn.transaction():
        second = _tuning_handlers.tune_trial(JobContext(job=retry, conn=conn, worker_id="w2"))
        queue.complete(conn, retry.id, "w2", second)
    assert (second["trial"], second["state"], second["value"]) == (first["trial"], "complete", first["value"])
    assert states(conn, study) == {"COMPLETE": 1}
    assert conn.execute("select trial_number, status from ml.runs where study_id = %s", (study,)).fetchall() == [
        (first["trial"], "succeeded")]
    assert one(conn, "select status from ml.tuning_studies where id = %s", study) == "refitting"
    assert one(conn, "select run_after <= now() from ml.jobs where id = %s", job)


@pytest.mark.parametrize("space, options", [
    (SPACE, {"sampler": "random", "pruner": "none"}),
    # A single-valued distribution never reaches the sampler; "l2" sorts first in jsonb's key order.
    ({"l2_regularization": {"type": "categorical", "choices": [0.5]}, **SPACE}, {"pruner": "none"}),
], ids=["random sampler", "single-valued parameter first"])
def test_a_slot_completes_whatever_sampler_draws_its_parameters(studio: tuple[str, Conn, str, str], space: Any,
                                                                 options: Any) -> None:
    from pgmlops.jobs.handlers import JobContext
    from pgmlops.tuning import _handlers as _tuning_handlers

    _, conn, _, dataset = studio
    job = tune(conn, dataset, space, n_trials=1, options=options)
    study = str(tuning.study_id_of(conn, job))
    (slot,) = queue.claim(conn, "w1", ["tune_trial"])
    with conn.transaction():
        out = _tuning_handlers.tune_trial(JobContext(job=slot, conn=conn, worker_id="w1"))
        queue.complete(conn, slot.id, "w1", out)
    assert out["state"] == "complete", out
    assert states(conn, study) == {"COMPLETE": 1}
    (trial,) = tuning.trials(conn, study)
    assert set(trial["params"]) == set(space)


@pytest.mark.parametrize(("pruner", "trial_steps"), [("median", list(range(1, 13))), ("none", [])])
def test_trials_log_the_learning_curve_only_for_a_pruner_and_the_refit_logs_none(
        studio: tuple[str, Conn, str, str], pruner: str, trial_steps: list[int]) -> None:
    from pgmlops.jobs.handlers import JobContext
    from pgmlops.tuning import _handlers as _tuning_handlers

    _, conn, _, dataset = studio
    job = tune(conn, dataset, {"max_iter": {"type": "int", "low": 12, "high": 12}}, n_trials=1,
               options={"pruner": pruner})
    (slot,) = queue.claim(conn, "w1", ["tune_trial"])
    with conn.transaction():
        trial = _tuning_handlers.tune_trial(JobContext(job=slot, conn=conn, worker_id="w1"))
        queue.complete(conn, slot.id, "w1", trial)
    (refit_job,) = queue.claim(conn, "w1", ["tune"])
    assert refit_job.id == job
    with conn.transaction():
        refit = _tuning_handlers.tune(JobContext(job=refit_job, conn=conn, worker_id="w1"))
        queue.complete(conn, refit_job.id, "w1", refit)

    def curve(run_id: str) -> list[int]:
        return [r[0] for r in conn.execute("select step from ml.run_metrics where run_id = %s and name = 'roc_auc' "
                                           "order by step", (run_id,)).fetchall()]

    assert trial["state"] == "complete"
    assert curve(trial["run_id"]) == trial_steps
    assert curve(refit["run_id"]) == []


# -- studies run by worker processes -----------------------------------------------------------


def test_two_workers_complete_a_study_with_exactly_n_trials_and_register_the_best(
        studio: tuple[str, Conn, str, str]) -> None:
    url, conn, tenant, dataset = studio
    n_trials = 6
    with workers(url, 2) as pool:
        until_all_workers_are_up(conn, pool)
        job = tune(conn, dataset, n_trials=n_trials, options={"random_state": 3, "tags": {"team": "risk"}})
        wait_for(lambda: job_status(conn, job) in ("succeeded", "failed", "dead"), what="the study")
    result = queue.result(conn, job)
    assert result["status"] == "succeeded", result["error"]
    study = str(tuning.study_id_of(conn, job))

    # Exactly n_trials trials finished, none is left running, and both workers ran trials.
    trial_states = states(conn, study)
    assert trial_states.get("COMPLETE", 0) + trial_states.get("PRUNED", 0) == n_trials
    assert "RUNNING" not in trial_states
    assert one(conn, "select count(distinct locked_by) from ml.jobs where kind = 'tune_trial'") == 2
    assert one(conn, "select count(*) from ml.jobs where kind = 'tune_trial' and status = 'succeeded'") == n_trials

    # Every trial is a run of the study; the best one's configuration was refit and registered.
    rows = tuning.trials(conn, study)
    runs = {r[0]: r[1] for r in conn.execute("select trial_number, status from ml.runs where study_id = %s "
                                               "and trial_number is not null", (study,)).fetchall()}
    assert runs == {t["number"]: {"COMPLETE": "succeeded", "PRUNED": "pruned", "FAIL": "failed"}[t["state"]] for t in rows}
    complete = [t for t in rows if t["state"] == "COMPLETE"]
    best = max(complete, key=lambda t: (t["value"], -t["number"]))
    progress = tuning.study_progress(conn, study)
    assert {k: progress[k] for k in ("status", "finished", "running", "best_trial", "best_value", "best_params")} == {
        "status": "succeeded", "finished": n_trials, "running": 0, "best_trial": best["number"],
        "best_value": best["value"], "best_params": best["params"]}
    assert set(best["params"]) == set(SPACE)
    assert all(isinstance(t["duration"].total_seconds(), float) for t in rows)

    out = result["result"]
    assert (out["best_trial"], out["best_params"], out["model"], out["version"]) == (best["number"], best["params"], "churn", 1)
    version = conn.execute("select v.id::text, v.run_id::text, v.tags, v.algorithm, r.hyperparams, r.study_id::text, r.trial_number "
                           "from ml.model_versions v join ml.runs r on r.id = v.run_id").fetchone()
    assert version is not None
    assert version[0] == out["model_version_id"] == progress["model_version_id"]
    assert version[2] == {"team": "risk", "study_id": study, "trial": best["number"]}
    assert version[3:] == ("hist_gradient_boosting", best["params"], study, None)
    best_run = one(conn, "select id::text from ml.runs where study_id = %s and trial_number = %s", study, best["number"])
    assert progress["best_run_id"] == best_run
    assert "roc_auc" in out["metrics"]


def pid_of(worker_id: str) -> int:
    return int(worker_id.split(":")[1])


def test_killing_a_worker_mid_trial_still_completes_the_study(studio: tuple[str, Conn, str, str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    url, conn, tenant, dataset = studio
    n_trials = 4
    monkeypatch.setenv("PGMLOPS_TEST_SLOW_TRIAL_SECONDS", "2.5")
    with workers(url, 2, lease=3.0, modules=["tests.slow_trials"]) as pool:
        until_all_workers_are_up(conn, pool)
        job = tune(conn, dataset, n_trials=n_trials, options={"pruner": "none"})
        study = str(tuning.study_id_of(conn, job))
        # A slot whose Optuna trial is under way: kill its worker.
        wait_for(lambda: states(conn, study).get("RUNNING", 0) >= 1, timeout=60, what="a running trial")
        victim_job, victim = conn.execute(
            "select j.id, j.locked_by from ml.jobs j "
            "join optuna.trial_user_attributes a on a.key = 'job_id' and a.value_json = j.id::text "
            "join optuna.trials t on t.trial_id = a.trial_id "
            "where j.kind = 'tune_trial' and j.status = 'running' and t.state = 'RUNNING' order by j.id limit 1").fetchone() or ()
        running = one(conn, "select count(*) from ml.tuning_trials where study_id = %s and state = 'RUNNING'", study)
        os.kill(pid_of(victim), signal.SIGKILL)
        wait_for(lambda: job_status(conn, job) in ("succeeded", "failed", "dead"), timeout=180, what="the study")
        assert pool.alive() == 1
    result = queue.result(conn, job)
    assert result["status"] == "succeeded", result["error"]

    # The killed slot ran again elsewhere; its dead trial is FAIL and was replaced, so exactly
    # n_trials trials finished.
    assert conn.execute("select attempts, status, locked_by <> %s from ml.jobs where id = %s",
                        (victim, victim_job)).fetchone() == (2, "succeeded", True)
    trial_states = states(conn, study)
    assert trial_states.get("COMPLETE", 0) + trial_states.get("PRUNED", 0) == n_trials
    assert trial_states.get("FAIL", 0) >= 1 and running >= 1
    assert "RUNNING" not in trial_states
    failed = conn.execute("select trial_number, error from ml.runs where study_id = %s and status = 'failed'", (study,)).fetchall()
    assert failed and all("worker died" in error for _, error in failed)
    failed_numbers = {n for n, _ in failed}
    assert failed_numbers == {t["number"] for t in tuning.trials(conn, study) if t["state"] == "FAIL"}
    assert tuning.study_progress(conn, study)["model_version_id"] is not None


# -- who reads which trials --------------------------------------------------------------------


def optuna_trials(url: str, study_id: str, values: list[float]) -> None:
    """Trials of the Optuna study of ``study_id``, written through Optuna's own storage."""
    storage = tuning.optuna_storage(url)
    study = optuna.create_study(study_name=tuning.study_name(study_id), storage=storage, direction="maximize",
                                load_if_exists=True)
    distribution = optuna.distributions.FloatDistribution(0.01, 1.0)
    for value in values:
        study.add_trial(optuna.trial.create_trial(params={"learning_rate": value / 2},
                                                  distributions={"learning_rate": distribution}, value=value))
    study.add_trial(FrozenTrial(number=0, state=TrialState.RUNNING, value=None, datetime_start=datetime.now(),
                                datetime_complete=None, params={}, distributions={}, user_attrs={}, system_attrs={},
                                intermediate_values={}, trial_id=0))


def test_tuning_trials_show_a_tenant_only_its_own(fresh_db_url: str) -> None:
    with psycopg.connect(fresh_db_url, autocommit=True) as conn:
        owners = {name: str(uuid.uuid4()) for name in ("a", "b")}
        tenants = {name: str(one(conn, "select ml.create_tenant(%s, %s)", f"tenant {name}", owner))
                   for name, owner in owners.items()}
        studies = {}
        for name, tenant in tenants.items():
            act_for(conn, tenant)
            studies[name] = str(tuning.study_id_of(conn, tune(conn, project_with_data(conn), n_trials=2)))
        act_for(conn, None)
        # No worker has run: Optuna's tables do not exist yet, and the view is empty, not an error.
        assert one(conn, "select to_regclass('optuna.trials')") is None
        assert one(conn, "select count(*) from ml.tuning_trials") == 0
        optuna_trials(fresh_db_url, studies["a"], [0.7, 0.9])
        optuna_trials(fresh_db_url, studies["b"], [0.6])

        for name, owner in owners.items():
            with tenant_context(conn, user=owner):
                seen = conn.execute("select study_id::text, state, value from ml.tuning_trials order by number").fetchall()
                assert {s for s, _, _ in seen} == {studies[name]}
                # The function behind the view filters too, so calling it directly shows no more.
                assert one(conn, "select count(*) from ml_private.tuning_trials()") == len(seen)
                assert one(conn, "select count(*) from ml.tuning_studies") == 1
                other = studies["b" if name == "a" else "a"]
                with pytest.raises(psycopg.Error) as info, conn.transaction():
                    conn.execute("select ml.tuning_study(%s)", (other,))
                assert info.value.sqlstate == "P0002"
            assert len(seen) == {"a": 3, "b": 2}[name]
        with tenant_context(conn, user=owners["a"]):
            progress = one(conn, "select ml.tuning_study(%s)", studies["a"])
        assert {k: progress[k] for k in ("complete", "running", "failed", "best_value", "best_params")} == {
            "complete": 2, "running": 1, "failed": 0, "best_value": 0.9, "best_params": {"learning_rate": 0.45}}

        # A service caller acting for a tenant sees that tenant's trials; naming none, every one.
        act_for(conn, tenants["b"])
        assert {r[0] for r in conn.execute("select study_id::text from ml.tuning_trials").fetchall()} == {studies["b"]}
        act_for(conn, None)
        assert one(conn, "select count(*) from ml.tuning_trials") == 5

        # Clients never reach Optuna's schema itself.
        with tenant_context(conn, user=owners["a"]), pytest.raises(psycopg.Error) as info:
            conn.execute("select count(*) from optuna.trials")
        assert info.value.sqlstate == "42501"


# -- the command line --------------------------------------------------------------------------


def pgmlops(url: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgmlops", "--database-url", url, *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200"})


def test_the_command_line_tunes_trains_lists_shows_and_promotes(studio: tuple[str, Conn, str, str]) -> None:
    url, conn, tenant, _ = studio
    worker_cmd = [sys.executable, "-m", "pgmlops", "--database-url", url, "worker", "--concurrency", "2",
                  "--kinds", "tune_trial,tune,train"]
    workers_proc = subprocess.Popen(worker_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        run = pgmlops(url, "tune", "churn", "tune_set", "hist_gradient_boosting", "--search-space", json.dumps(SPACE),
                      "--n-trials", "3", "--tenant", tenant, "--watch", "--timeout", "150")
        assert run.returncode == 0, run.stdout + run.stderr
        assert "3/3 trials" in run.stderr
        assert "top 3 of 3 trials (3 complete, 0 pruned, 0 failed)" in run.stdout
        assert "refit and registered as churn@1" in run.stdout

        run = pgmlops(url, "train", "churn", "tune_set", "logistic_regression", "--hyperparams", '{"C": 0.5}',
                      "--tenant", tenant, "--wait", "--timeout", "120")
        assert run.returncode == 0, run.stdout + run.stderr
        assert "registered churn@2" in run.stdout and "roc_auc" in run.stdout
    finally:
        workers_proc.send_signal(signal.SIGTERM)
        workers_proc.wait(timeout=60)

    run = pgmlops(url, "models", "list", "--tenant", tenant)
    assert run.returncode == 0, run.stderr
    assert "churn" in run.stdout and " 2 " in run.stdout
    run = pgmlops(url, "models", "show", "churn@1", "--tenant", tenant)
    assert run.returncode == 0, run.stderr
    assert "churn@1 hist_gradient_boosting" in run.stdout and '"study_id"' in run.stdout
    run = pgmlops(url, "models", "promote", "churn", "1", "--tenant", tenant)
    assert run.returncode == 0, run.stderr
    assert "churn@champion -> version 1" in run.stdout
    assert one(conn, "select v.version from ml.model_aliases a join ml.model_versions v on v.id = a.model_version_id "
                     "where a.alias = 'champion'") == 1
    run = pgmlops(url, "tune", "churn", "tune_set", "hist_gradient_boosting", "--search-space", '{"max_iter": {"type": "int", '
                  '"low": 0, "high": 5}}', "--n-trials", "2", "--tenant", tenant)
    assert run.returncode == 2  # bad input
    assert "[22023]" in run.stderr and "search_space: $.max_iter.low: must be >= 1, got 0" in run.stderr
