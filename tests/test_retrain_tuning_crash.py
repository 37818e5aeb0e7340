"""A retrain job's tuning budget when its worker is SIGKILLed mid-tuning (docs/retraining.md,
"The retrain job"): the dead attempt's transaction rolls back (no study row, no run, no
version), but Optuna had stored its trials at once; the job's next attempt, on another worker,
deletes that study from Optuna's tables before it tunes, and finishes the cycle."""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

import psycopg

from pgmlops import tuning
from pgmlops.jobs.worker import WorkerPool

from .compile_helpers import one
from .test_reference_profiles import frame
from .test_retrain_job import champion, concept_drift, events, serve
from .test_retrain_tuning import SPACES, tuned_policy
from .test_worker import wait_for
from .training_data import job_result

Conn = psycopg.Connection[Any]


def tagged(conn: Conn, job_id: int) -> dict[str, tuple[int, int]]:
    """Optuna's studies tagged with job ``job_id``: name -> (attempt, trials)."""
    rows = conn.execute(
        "select s.study_name, b.value_json::int, (select count(*) from optuna.trials t where t.study_id = s.study_id)"
        " from optuna.studies s"
        " join optuna.study_user_attributes a on a.study_id = s.study_id and a.key = 'job_id' and a.value_json = %s"
        " join optuna.study_user_attributes b on b.study_id = s.study_id and b.key = 'attempt'",
        (str(job_id),)).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def test_the_next_attempt_deletes_the_optuna_study_a_killed_attempt_left(conn: Conn, db_url: str) -> None:
    tuning.optuna_storage(db_url)  # Optuna's tables, which tagged() reads before the job makes them
    ref = champion(conn, "rtk")
    serve(conn, ref, concept_drift(frame(400, 25, shift=0.5)), chunks=4)
    one(conn, "select ml.set_retraining_policy('rtk', %s)", tuned_policy({
        "algorithms": ["logistic_regression"], "search_spaces": {"logistic_regression": SPACES["logistic_regression"]},
        "trials": 1000, "timeout": "3 seconds"}))
    with WorkerPool(db_url, ["retrain"], 1, poll_interval=0.2, lease=3.0, log_level=logging.WARNING,
                    maintenance_interval=None) as pool:
        job = one(conn, "select ml.retrain('rtk')")
        # Attempt 1 has told Optuna a trial: kill its worker.
        wait_for(lambda: any(trials >= 1 for _, trials in tagged(conn, job).values()), timeout=120,
                 what="attempt 1's first trial in Optuna")
        (victim,) = pool.pids()
        os.kill(victim, signal.SIGKILL)
        first = dict(tagged(conn, job))
        assert [attempt for attempt, _ in first.values()] == [1]
        wait_for(lambda: (pool.check() or True) and pool.alive() == 1 and victim not in pool.pids(),
                 timeout=20, what="a replacement worker")
        result = job_result(conn, job)
    assert conn.execute("select attempts, status from ml.jobs where id = %s", (job,)).fetchone() == (2, "succeeded")
    assert [e["kind"] for e in events(conn, "rtk")][:3] == ["trigger", "curate", "train"], result
    # Attempt 1's study is gone with its trials; attempt 2's is the one the cycle recorded.
    left = tagged(conn, job)
    assert not set(first) & set(left)
    assert one(conn, "select count(*) from optuna.studies where study_name = any(%s)", list(first)) == 0
    (name, (attempt, trials)), = left.items()
    train = next(e for e in events(conn, "rtk") if e["kind"] == "train")
    study = train["evidence"]["tuning"]["studies"][0]["study_id"]
    assert name == f"pgmlops-{study}" and attempt == 2 and trials == train["evidence"]["tuning"]["trials_run"]
    assert one(conn, "select count(*) from ml.tuning_studies where tenant_id = %s", ref.tenant) == 1
