"""The SGD algorithms (revision 0012_learning): sgd_classifier and sgd_regressor train through the
train handler's path and compile to SQL equal to scikit-learn; bad hyperparameters and search
spaces are refused naming the field; an sgd_classifier champion is updated by a real worker's
learn job (docs/retraining.md, "Continuous learning"): new labels of the same concept make an
update that is kept, flipped labels one that is discarded."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg.types.json import Jsonb

from pgmlops import models, scoring
from pgmlops.jobs.worker import WorkerPool
from pgmlops.training import run_training

from .compile_helpers import assert_parity, json_rows, one, score_rows
from .test_continuous_learning import POLICY, champion, finished, history, serve, spread
from .test_reference_profiles import SIGNATURE, Reference, frame
from .training_data import refused

Conn = psycopg.Connection[Any]

NAMES = [c["name"] for c in SIGNATURE]
# An under-trained champion (two epochs, no stopping rule), so more rows of its concept help.
WEAK = {"max_iter": 2, "tol": None}
# Cycles here are the tests' own (ml.learn): not due for a day, so no maintenance run starts one.
LEARNING = {**POLICY, "continuous": {**POLICY["continuous"], "every": "1 day"}}


@pytest.fixture(scope="module")
def worker(db_url: str) -> Iterator[WorkerPool]:
    with WorkerPool(db_url, ["learn"], 1, poll_interval=0.2, log_level=logging.WARNING, maintenance_interval=None) as pool:
        yield pool


def compiled_equals_scikit_learn(conn: Conn, version: str, model: Any, task: str) -> None:
    """Installs the version's compiled function and checks it against the pipeline on new rows."""
    result = scoring.install(conn, version, scoring.describe(model, task=task))
    assert result["function"]
    rows = frame(120, 42)[NAMES]
    assert_parity(model, rows, score_rows(conn, version, json_rows(rows)), task)


def cycle(conn: Conn, name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Starts a learn cycle of ``name`` by hand; (the job's result, the events of that cycle only)."""
    job = one(conn, "select ml.learn(%s)", name)
    result = finished(conn, job)
    trigger = one(conn, "select payload ->> 'trigger_event_id' from ml.jobs where id = %s", job)
    return result, [e for e in history(conn, name) if e["cycle_id"] == trigger]


def test_both_train_through_the_train_handler_and_compile_equal_to_scikit_learn(conn: Conn) -> None:
    ref = champion(conn, "sgc", "sgd_classifier", {"penalty": "elasticnet", "l1_ratio": 0.3, "alpha": 0.001})
    estimator = ref.pipeline[-1]
    assert type(estimator).__name__ == "SGDClassifier" and estimator.loss == "log_loss"  # pgmlops' default
    assert (estimator.penalty, estimator.l1_ratio, estimator.alpha) == ("elasticnet", 0.3, 0.001)
    assert isinstance(estimator.random_state, int)  # from the training options
    metrics = one(conn, "select metrics from ml.model_versions where id = %s", ref.version)
    assert metrics["roc_auc"] > 0.85 and 0 < metrics["log_loss"] < 0.5
    compiled_equals_scikit_learn(conn, ref.version, ref.pipeline, "classification")

    project_id = one(conn, "select ml.create_project('sgr', 'regression', 'churned')")
    out = run_training(conn, project_id=project_id, dataset_id=ref.dataset, algorithm="sgd_regressor",
                       hyperparams={"loss": "huber", "epsilon": 0.5, "learning_rate": "adaptive", "eta0": 0.05}, options={})
    regressor = models.load_model(conn, "sgr@1")
    assert type(regressor[-1]).__name__ == "SGDRegressor" and regressor[-1].loss == "huber"
    assert one(conn, "select algorithm from ml.runs where id = %s", out["run_id"]) == "sgd_regressor"
    assert out["metrics"]["r2"] > 0.3
    compiled_equals_scikit_learn(conn, str(out["model_version_id"]), regressor, "regression")

    # modified_huber has probabilities too (clipped, normalized); the compiled ones equal them.
    champion(conn, "sgh", "sgd_classifier", {"loss": "modified_huber", "average": True})
    huber = one(conn, "select v.id from ml.model_versions v join ml.models m on m.id = v.model_id where m.name = 'sgh'")
    compiled_equals_scikit_learn(conn, str(huber), models.load_model(conn, "sgh@1"), "classification")


REFUSED = [  # (algorithm, hyperparams, message)
    ("sgd_classifier", {"loss": "hinge"}, r"\$\.loss: .*hinge"),  # no probabilities
    ("sgd_classifier", {"alpha": 0}, r"\$\.alpha: must be > 0, got 0"),
    ("sgd_classifier", {"learning_rate": "pa1"}, r"\$\.learning_rate: .*pa1"),
    ("sgd_classifier", {"eta0": 0}, r"\$\.eta0: must be > 0, got 0"),
    ("sgd_classifier", {"l1_ratio": 1.5}, r"\$\.l1_ratio: must be <= 1, got 1\.5"),
    ("sgd_classifier", {"epsilon": 0.1}, r"\$\.epsilon"),  # the regressor's
    ("sgd_regressor", {"loss": "log_loss"}, r"\$\.loss: .*log_loss"),
    ("sgd_regressor", {"class_weight": "balanced"}, r"\$\.class_weight"),
    ("sgd_regressor", {"max_iter": 0}, r"\$\.max_iter: must be >= 1, got 0"),
]


def test_bad_hyperparameters_are_refused_naming_the_field_and_nothing_is_queued(conn: Conn) -> None:
    ref = Reference(conn, "sgb", frame(200, 1))
    one(conn, "select ml.create_project('sgb', 'classification', 'churned')")
    one(conn, "select ml.create_project('sgb-r', 'regression', 'churned')")
    jobs = one(conn, "select count(*) from ml.jobs")
    for algorithm, hyperparams, match in REFUSED:
        project = "sgb" if algorithm == "sgd_classifier" else "sgb-r"
        with refused("22023", "^hyperparams: " + match):
            conn.execute("select ml.train(%s, %s, %s, %s)", (project, ref.dataset, algorithm, Jsonb(hyperparams)))
    with refused("22023", r"algorithm: sgd_regressor does not support task classification"):
        conn.execute("select ml.train('sgb', %s, 'sgd_regressor')", (ref.dataset,))
    assert one(conn, "select count(*) from ml.jobs") == jobs
    assert isinstance(one(conn, "select ml.train('sgb-r', %s, 'sgd_regressor', %s)", ref.dataset,
                          Jsonb({"loss": "epsilon_insensitive", "epsilon": 0.2, "penalty": None, "tol": None})), int)


def test_tuning_searches_their_hyperparameters_within_the_schema(conn: Conn) -> None:
    ref = Reference(conn, "sgt", frame(200, 2))
    one(conn, "select ml.create_project('sgt', 'classification', 'churned')")
    space = {"alpha": {"type": "float", "low": 1e-6, "high": 0.1, "log": True},
             "loss": {"type": "categorical", "choices": ["log_loss", "modified_huber"]},
             "max_iter": {"type": "int", "low": 5, "high": 200}, "average": {"type": "int", "low": 1, "high": 50}}
    study = one(conn, "select ml.tune('sgt', %s, 'sgd_classifier', %s, 2)", ref.dataset, Jsonb(space))
    assert one(conn, "select algorithm from ml.tuning_studies where id = (select payload ->> 'study_id' from ml.jobs"
                     " where id = %s)::uuid", study) == "sgd_classifier"
    for bad, match in [({"alpha": {"type": "float", "low": 0, "high": 0.1}}, r"\$\.alpha\.low: must be > 0, got 0"),
                       ({"loss": {"type": "categorical", "choices": ["log_loss", "hinge"]}}, r"\$\.loss\.choices\[1\]"),
                       ({"epsilon": {"type": "float", "low": 0, "high": 1}}, r"\$\.epsilon: not a hyperparameter of sgd_classifier")]:
        with refused("22023", "^search_space: " + match):
            conn.execute("select ml.tune('sgt', %s, 'sgd_classifier', %s, 2)", (ref.dataset, Jsonb(bad)))


def test_an_sgd_champion_keeps_an_update_from_new_labels_of_the_same_concept(conn: Conn, worker: WorkerPool) -> None:
    ref = champion(conn, "sgk", "sgd_classifier", WEAK)
    one(conn, "select ml.set_retraining_policy('sgk', %s)", Jsonb(LEARNING))
    serve(conn, ref, frame(1500, 7), spread(conn, ref))
    result, events = cycle(conn, "sgk")
    assert result["decision"] == "kept" and result["after"] > result["before"], result  # it learned
    assert [e["kind"] for e in events] == ["trigger", "update", "approval"]
    update = events[1]
    assert update["test_results"]["metric"] == "accuracy" and update["data"]["training_rows"] == 1200
    assert update["candidate"]["version"] == 2 and "sgk@2 updated from @1" in update["reason"]
    updated = models.load_model(conn, "sgk@2")
    assert one(conn, "select r.algorithm from ml.runs r join ml.model_versions v on v.run_id = r.id"
                     " where v.id = %s", update["candidate"]["model_version_id"]) == "sgd_classifier"
    rows = frame(50, 9)[NAMES]
    # The preprocessing as fitted; the SGD classifier went on from where it was (partial_fit).
    assert np.allclose(updated[:-1].transform(rows), ref.pipeline[:-1].transform(rows))
    assert updated[-1].t_ > ref.pipeline[-1].t_ and not np.allclose(updated[-1].coef_, ref.pipeline[-1].coef_)


def test_an_sgd_champion_discards_an_update_from_flipped_labels(conn: Conn, worker: WorkerPool) -> None:
    ref = champion(conn, "sgf", "sgd_classifier", WEAK)
    one(conn, "select ml.set_retraining_policy('sgf', %s)", Jsonb(LEARNING))
    rows = frame(1500, 6)
    # A labelling fault: the 1200 oldest new labels flipped, the 300 latest (the holdout) right.
    rows["churned"] = np.where(np.arange(1500) < 1200, 1 - rows["churned"], rows["churned"])
    serve(conn, ref, rows, spread(conn, ref))
    result, events = cycle(conn, "sgf")
    assert result["decision"] == "discarded" and result["after"] < result["before"] - 0.1, result
    assert [e["kind"] for e in events] == ["trigger", "discard"]
    assert events[1]["test_results"]["before"] == result["before"] and events[1]["candidate"]["version"] == 1
    assert one(conn, "select count(*) from ml.model_versions v join ml.models m on m.id = v.model_id"
                     " where m.name = 'sgf'") == 1
