"""Continuous learning (docs/retraining.md, "Continuous learning"): a torch MLP champion is
updated from new feedback by a real worker running the learn job. New labels of the same concept
make an update that is kept (registered, aliased challenger, recorded as 'update'); flipped
labels (a labelling fault before the holdout) make one that is discarded (recorded with both metrics, the champion unchanged). The
maintenance step enqueues learn jobs when due; the policy field is refused for a champion that
does not learn incrementally; ml.learn without continuous learning is refused."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
from psycopg.types.json import Jsonb

from pgmlops import models
from pgmlops.jobs.worker import WorkerPool
from pgmlops.training import run_training

from .compile_helpers import one
from .conftest import act_for
from .test_reference_profiles import SIGNATURE, Reference, frame
from .training_data import job_result, refused

Conn = psycopg.Connection[Any]

MLP = {"hidden_sizes": [16], "epochs": 2, "lr": 0.01, "batch_size": 64}


def champion(conn: Conn, name: str, algorithm: str = "mlp", hyperparams: dict[str, Any] | None = None) -> Reference:
    """A champion fitted through the train handler's path on 600 rows, aliased champion."""
    ref = Reference(conn, name, frame(600, 1))
    project_id = one(conn, "select ml.create_project(%s, 'classification', 'churned')", name)
    out = run_training(conn, project_id=project_id, dataset_id=ref.dataset, algorithm=algorithm,
                       hyperparams=MLP if hyperparams is None else hyperparams, options={})
    ref.version = str(out["model_version_id"])
    ref.pipeline = models.load_model(conn, f"{name}@1")
    conn.execute("select ml.set_alias(%s, 'champion', 1)", (name,))
    return ref


def spread(conn: Conn, ref: Reference, n: int = 10) -> list[datetime]:
    """n times between the champion's registration and now (the labels a schedule counts)."""
    created: datetime = one(conn, "select created_at from ml.model_versions where id = %s", ref.version)
    now = one(conn, "select clock_timestamp()")
    return [created + (now - created) * (i + 1) / (n + 1) for i in range(n)]


def serve(conn: Conn, ref: Reference, rows: pd.DataFrame, times: list[datetime]) -> None:
    """Logs the rows' predictions in len(times) chunks at those times, then their labels, all in
    one transaction: a maintenance run that counts the labels sees all of them or none."""
    size = -(-len(rows) // len(times))
    with conn.transaction():
        for part, at in zip((rows.iloc[k:k + size] for k in range(0, len(rows), size)), times, strict=True):
            ids = ref.log(part, at)
            conn.execute("select ml.record_feedback_bulk(%s)", (Jsonb([{"prediction_id": p, "label": int(y)}
                                                                        for p, y in zip(ids, part["churned"], strict=True)]),))


@pytest.fixture(scope="module")
def worker(db_url: str) -> Iterator[WorkerPool]:
    with WorkerPool(db_url, ["learn"], 1, poll_interval=0.2, log_level=logging.WARNING, maintenance_interval=None) as pool:
        yield pool


def finished(conn: Conn, job_id: int) -> dict[str, Any]:
    """The learn job's result, once the worker has run it."""
    return job_result(conn, job_id)


def history(conn: Conn, name: str) -> list[dict[str, Any]]:
    return list(reversed(one(conn, "select ml.retraining_history(%s)", name)))


def aliases(conn: Conn, name: str) -> dict[str, int]:
    return dict(conn.execute("select a.alias, v.version from ml.model_aliases a join ml.model_versions v"
                             " on v.id = a.model_version_id join ml.models m on m.id = a.model_id where m.name = %s", (name,)))


def due(conn: Conn, name: str) -> list[int]:
    """The learn jobs of project ``name`` the maintenance step enqueues now (acting for no
    tenant, as the maintenance run does)."""
    tenant = one(conn, "select current_setting('pgmlops.tenant_id')")
    act_for(conn, None)
    try:
        jobs = one(conn, "select ml_private.run_due_learning()")["jobs"]
    finally:
        act_for(conn, tenant)
    return [j for j in jobs if one(conn, "select payload ->> 'project' from ml.jobs where id = %s", j) == name]


def learn_jobs(conn: Conn, name: str) -> list[int]:
    """Every learn job of project ``name``, whoever enqueued it."""
    return [r[0] for r in conn.execute("select id from ml.jobs where kind = 'learn' and payload ->> 'project' = %s"
                                       " order by id", (name,))]


POLICY = {"triggers": [{"type": "dataset_drift", "share": 0.3}], "cooldown": "0 seconds",
          "continuous": {"enabled": True, "every": "0 seconds", "min_new_labels": 500, "epochs": 8}}


def test_an_update_from_more_rows_of_the_same_concept_is_kept(conn: Conn, worker: WorkerPool) -> None:
    ref = champion(conn, "clg")
    stored = one(conn, "select ml.set_retraining_policy('clg', %s)", Jsonb(POLICY))
    assert stored["continuous"] == {"enabled": True, "every": "00:00:00", "min_new_labels": 500, "epochs": 8,
                                    "metric": "accuracy"}
    assert due(conn, "clg") == []  # no labels yet
    serve(conn, ref, frame(1500, 5), spread(conn, ref))
    assert len(due(conn, "clg")) == 1
    # One cycle at a time: the next maintenance run finds it in flight and enqueues none.
    jobs = learn_jobs(conn, "clg")
    assert len(jobs) == 1 and due(conn, "clg") == [] and learn_jobs(conn, "clg") == jobs
    result = finished(conn, jobs[0])
    assert result["decision"] == "kept" and result["outcome"] == "awaiting approval", result
    assert result["after"] >= result["before"]
    events = history(conn, "clg")
    assert [e["kind"] for e in events] == ["trigger", "update", "approval"]
    trigger, update, approval = events
    assert trigger["evidence"] == {"continuous": True} and trigger["reason"].startswith("schedule: 1500 new labels")
    assert update["test_results"]["metric"] == "accuracy" and update["data"]["holdout"]["rows"] == 300
    assert update["data"]["training_rows"] == 1200 and update["decision"] == "kept"
    assert "clg@2 updated from @1" in update["reason"] and "not worse" in update["reason"]
    assert aliases(conn, "clg") == {"champion": 1, "challenger": 2}
    updated = models.load_model(conn, "clg@2")
    rows = frame(50, 9)[[c["name"] for c in SIGNATURE]]
    # Same preprocessing, a different network.
    assert np.allclose(updated[:-1].transform(rows), ref.pipeline[:-1].transform(rows))
    assert not np.allclose(updated.predict_proba(rows), ref.pipeline.predict_proba(rows))


def test_an_update_from_flipped_labels_is_discarded_and_the_champion_unchanged(conn: Conn, worker: WorkerPool) -> None:
    ref = champion(conn, "clb")
    # Not due for a day: the cycles here are the test's own (ml.learn), none the maintenance run's.
    one(conn, "select ml.set_retraining_policy('clb', %s)",
        Jsonb({**POLICY, "continuous": {**POLICY["continuous"], "every": "1 day"}}))
    # A labelling fault: the first 1200 new labels flipped, the latest 300 (the holdout) right.
    rows = frame(1500, 6)
    rows["churned"] = np.where(np.arange(1500) < 1200, 1 - rows["churned"], rows["churned"])
    serve(conn, ref, rows, spread(conn, ref))
    result = finished(conn, one(conn, "select ml.learn('clb')"))
    assert result["decision"] == "discarded", result
    assert result["after"] < result["before"] - 0.1
    events = history(conn, "clb")
    assert [e["kind"] for e in events] == ["trigger", "discard"]
    discard = events[1]
    assert discard["test_results"]["before"] == result["before"] and discard["test_results"]["after"] == result["after"]
    assert "discarded, it stays unchanged" in discard["reason"] and events[0]["reason"] == "manual"
    assert aliases(conn, "clb") == {"champion": 1}
    assert one(conn, "select count(*) from ml.model_versions v join ml.models m on m.id = v.model_id"
                     " where m.name = 'clb'") == 1
    # One cycle at a time: while one is queued (here, not yet committed, so no worker has it), a
    # second is refused, naming the first.
    with refused("55000", r"project clb: learn job \d+ is already queued, one continuous-learning cycle runs at a time"):
        with conn.transaction():
            conn.execute("select ml.learn('clb')")
            conn.execute("select ml.learn('clb')")
    # The discarded rows are consumed: nothing new since, so the next cycle fails for want of rows.
    again = finished(conn, one(conn, "select ml.learn('clb')"))
    assert again["decision"] == "failed" and "too few new labelled predictions" in again["reason"]


def test_errors(conn: Conn) -> None:
    champion(conn, "cle", "logistic_regression", {})
    with refused("22023", r"policy\.continuous: the champion's algorithm logistic_regression does not learn incrementally"):
        conn.execute("select ml.set_retraining_policy('cle', %s)", (Jsonb(POLICY),))
    assert one(conn, "select count(*) from ml.retraining_policies p join ml.projects r on r.id = p.project_id"
                     " where r.name = 'cle'") == 0
    with refused("22023", r"policy\.continuous\.min_new_labels"):
        conn.execute("select ml.set_retraining_policy('cle', %s)",
                     (Jsonb({**POLICY, "continuous": {"enabled": False, "min_new_labels": 0}}),))
    with refused("22023", r"policy\.continuous\.every"):
        conn.execute("select ml.set_retraining_policy('cle', %s)",
                     (Jsonb({**POLICY, "continuous": {"enabled": False, "every": "often"}}),))
    with refused("55000", "has no retraining policy"):
        conn.execute("select ml.learn('cle')")
    one(conn, "select ml.set_retraining_policy('cle', %s)", Jsonb({**POLICY, "continuous": {"enabled": False}}))
    with refused("55000", r"continuous learning is not enabled \(policy\.continuous\.enabled\)"):
        conn.execute("select ml.learn('cle')")
    with refused("P0002"):
        conn.execute("select ml.learn('no_such_project')")


def test_an_sgd_pipeline_learns_in_its_final_estimator_only() -> None:
    """update_model on a scikit-learn pipeline: the scaler stays as fitted, the SGD classifier
    learns with partial_fit, the original is untouched; an estimator without partial_fit is
    refused; holdout_metric's directions."""
    from sklearn.linear_model import LogisticRegression, SGDClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from pgmlops.retraining._learn import HIGHER_IS_BETTER, holdout_metric, update_model

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(5, 2, 400), "b": rng.normal(-3, 1, 400)})
    y = (X["a"] - 5 + (X["b"] + 3) > 0).astype(int).tolist()
    model = make_pipeline(StandardScaler(), SGDClassifier(loss="log_loss", max_iter=1, tol=None, random_state=0))
    model.fit(X.iloc[:50], y[:50])
    coef, mean = model[-1].coef_.copy(), model[0].mean_.copy()
    shifted = X.iloc[50:] + 10  # the scaler must not refit on these
    updated = update_model(model, shifted, y[50:], epochs=3)
    assert np.array_equal(updated[0].mean_, mean) and np.array_equal(model[-1].coef_, coef)
    assert not np.allclose(updated[-1].coef_, coef)
    assert updated[-1].t_ > model[-1].t_
    assert 0.0 <= holdout_metric(updated, X, y, "accuracy", "classification") <= 1.0
    assert HIGHER_IS_BETTER["accuracy"] and not HIGHER_IS_BETTER["log_loss"]
    with pytest.raises(ValueError, match="LogisticRegression does not learn incrementally"):
        update_model(make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y), X, y, epochs=1)
