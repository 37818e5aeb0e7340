"""The retrain job's tuning budget (docs/retraining.md, "The retrain job"): a policy whose recipe
names a tuning budget has the job run its trials itself, one study per algorithm stored as
ml.tune's are, and train the challenger from the best trial; a timeout stops it early; a search
space whose every configuration fails fails the cycle and registers nothing."""

from __future__ import annotations

from typing import Any

import optuna
import psycopg
import pytest
from psycopg.types.json import Jsonb

from pgmlops import tuning
from pgmlops.db import tenant_context

from .compile_helpers import one
from .conftest import act_for
from .test_reference_profiles import Reference, frame
from .test_retrain_job import POLICY, champion, concept_drift, events, run_retrain_job, serve, worker
from .training_data import refused

Conn = psycopg.Connection[Any]

__all__ = ["worker"]  # the real worker process of tests/test_retrain_job.py, one per module

SPACES = {"logistic_regression": {"C": {"type": "float", "low": 0.01, "high": 10.0, "log": True}},
          "decision_tree": {"max_depth": {"type": "int", "low": 2, "high": 6}}}


def tuned_policy(tune: dict[str, Any]) -> Jsonb:
    return Jsonb({**POLICY, "recipe": {"tune": tune}, "online": {"mode": "none"}})


def versions(conn: Conn, name: str) -> int:
    return int(one(conn, "select count(*) from ml.model_versions v join ml.models m on m.id = v.model_id "
                         "where m.name = %s", name))


def test_a_tuning_recipe_runs_its_trials_in_the_job_and_trains_the_challenger_from_the_best(
        conn: Conn, worker: Any) -> None:
    ref = champion(conn, "rtt")
    serve(conn, ref, concept_drift(frame(600, 21, shift=0.5)))
    one(conn, "select ml.set_retraining_policy('rtt', %s)",
        tuned_policy({"algorithms": ["logistic_regression", "decision_tree"], "search_spaces": SPACES, "trials": 4}))
    result = run_retrain_job(conn, one(conn, "select ml.retrain('rtt')"))
    history = events(conn, "rtt")
    assert [e["kind"] for e in history][:3] == ["trigger", "curate", "train"], result
    train = history[2]
    tuned = train["evidence"]["tuning"]
    assert tuned["trials_run"] == 4 and tuned["trials_budget"] == 4 and tuned["stopped_by"] == "budget"
    assert tuned["metric"] == "roc_auc" and tuned["direction"] == "maximize"
    assert [(s["algorithm"], s["trials"]) for s in tuned["studies"]] == [("logistic_regression", 2), ("decision_tree", 2)]
    best = tuned["best"]
    # The challenger is the best trial's configuration, refitted and registered.
    assert train["evidence"]["algorithm"] == best["algorithm"] and train["evidence"]["hyperparams"] == best["params"]
    run = conn.execute("select r.algorithm, r.hyperparams, r.study_id::text, v.version, v.id::text from ml.model_versions v"
                       " join ml.runs r on r.id = v.run_id where v.id = %s", (train["candidate"]["model_version_id"],)).fetchone()
    assert run is not None and run[:4] == (best["algorithm"], best["params"], best["study_id"], 2)
    assert one(conn, "select v.version from ml.model_aliases a join ml.model_versions v on v.id = a.model_version_id"
                     " join ml.models m on m.id = a.model_id where m.name = 'rtt' and a.alias = 'challenger'") == 2
    assert train["reason"].startswith(f"rtt@2 ({best['algorithm']}, tuned logistic_regression and decision_tree, 4 trials "
                                      f"(the whole budget): best trial {best['trial']}, roc_auc ")
    assert train["reason"].endswith("registered as challenger")
    # The studies are stored as ml.tune's: their rows, Optuna's trials, a run per trial.
    values = []
    for study in tuned["studies"]:
        progress = tuning.study_progress(conn, study["study_id"])
        assert progress["status"] == "succeeded" and progress["n_trials"] == 2 and progress["tune_job_id"] is None
        assert progress["algorithm"] == study["algorithm"] and progress["complete"] + progress["pruned"] == 2
        trials = tuning.trials(conn, study["study_id"])
        assert [t["number"] for t in trials] == [0, 1] and all(t["state"] in ("COMPLETE", "PRUNED") for t in trials)
        values += [(study["study_id"], t["number"], t["value"], t["params"]) for t in trials if t["state"] == "COMPLETE"]
        assert one(conn, "select count(*) from ml.runs where study_id = %s and trial_number is not null",
                   study["study_id"]) == 2
    assert (best["study_id"], best["trial"], best["value"], best["params"]) == max(values, key=lambda v: v[2])
    assert tuning.study_progress(conn, best["study_id"])["model_version_id"] == run[4]
    assert one(conn, "select count(*) from ml.events where tenant_id = %s and event = 'study.trial_finished'",
               ref.tenant) == 4
    assert [e["kind"] for e in history][3] == "evaluate"


def test_a_tuning_timeout_stops_the_trials_early(conn: Conn, worker: Any) -> None:
    ref = champion(conn, "rto")
    serve(conn, ref, concept_drift(frame(400, 22, shift=0.5)), chunks=4)
    space = {"logistic_regression": SPACES["logistic_regression"]}
    one(conn, "select ml.set_retraining_policy('rto', %s)", tuned_policy({
        "algorithms": ["logistic_regression"], "search_spaces": space, "trials": 1000, "timeout": "1 second"}))
    run_retrain_job(conn, one(conn, "select ml.retrain('rto')"))
    train = next(e for e in events(conn, "rto") if e["kind"] == "train")
    tuned = train["evidence"]["tuning"]
    assert tuned["stopped_by"] == "timeout" and tuned["timeout_seconds"] == 1.0
    assert 1 <= tuned["trials_run"] < 1000 and tuned["seconds"] >= 1.0
    study = tuned["studies"][0]["study_id"]
    assert len(tuning.trials(conn, study)) == tuned["trials_run"]
    assert tuning.study_progress(conn, study)["status"] == "succeeded"
    assert f"tuned logistic_regression, {tuned['trials_run']} of 1000 trials (timeout 1 s): best trial " in train["reason"]
    assert versions(conn, "rto") == 2 and ref.tenant


def test_a_budget_whose_every_trial_fails_fails_the_cycle_and_registers_nothing(conn: Conn, worker: Any,
                                                                                db_url: str) -> None:
    ref = champion(conn, "rtf")
    serve(conn, ref, concept_drift(frame(400, 23, shift=0.5)), chunks=4)
    # Each value is one the algorithm takes; together scikit-learn refuses them.
    broken = {"logistic_regression": {"penalty": {"type": "categorical", "choices": ["l1"]},
                                      "solver": {"type": "categorical", "choices": ["lbfgs"]}}}
    one(conn, "select ml.set_retraining_policy('rtf', %s)", tuned_policy({
        "algorithms": ["logistic_regression"], "search_spaces": broken, "trials": 3}))
    result = run_retrain_job(conn, one(conn, "select ml.retrain('rtf')"))
    assert result["decision"] == "failed"
    history = events(conn, "rtf")
    assert [e["kind"] for e in history] == ["trigger", "failed"]
    failed = history[-1]
    assert failed["reason"].startswith("train: tuning logistic_regression: none of the 3 trials completed "
                                       "(0 pruned, 3 failed); first error: logistic_regression trial 0: ")
    assert "lbfgs" in failed["reason"]
    tuned = failed["data"]["tuning"]
    assert tuned["trials_run"] == 3 and tuned["failed"] == 3 and len(tuned["errors"]) == 3
    # Nothing registered, no study left: the cycle's transaction rolled back, and its trials
    # were removed from Optuna's tables.
    assert versions(conn, "rtf") == 1
    assert one(conn, "select count(*) from ml.model_aliases a join ml.models m on m.id = a.model_id "
                     "where m.name = 'rtf' and a.alias = 'challenger'") == 0
    assert one(conn, "select count(*) from ml.tuning_studies where tenant_id = %s", ref.tenant) == 0
    with pytest.raises(KeyError):
        optuna.load_study(study_name=tuning.study_name(tuned["study_id"]), storage=tuning.optuna_storage(db_url))


def test_an_in_process_study_is_checked_as_ml_tune_and_settles_only_its_own_trials(conn: Conn) -> None:
    ref = Reference(conn, "rts", frame(60, 24))
    one(conn, "select ml.create_project('rts', 'classification', 'churned')")
    space = Jsonb(SPACES["logistic_regression"])
    with tenant_context(conn, ref.tenant, user=ref.owner), \
            refused("42501", "permission denied for function start_tuning_study"):
        conn.execute("select ml.start_tuning_study('rts', %s, 'logistic_regression', %s, 2)", (ref.dataset, space))
    act_for(conn, ref.tenant)
    with refused("22023", r"search_space: \$.C.low: must be > 0"):
        conn.execute("select ml.start_tuning_study('rts', %s, 'logistic_regression', %s, 2)",
                     (ref.dataset, Jsonb({"C": {"type": "float", "low": 0, "high": 1}})))
    with refused("22023", "n_trials: must be between 1 and 1000, got 0"):
        conn.execute("select ml.start_tuning_study('rts', %s, 'logistic_regression', %s, 0)", (ref.dataset, space))
    with refused("P0002", "project 'nope' does not exist"):
        conn.execute("select ml.start_tuning_study('nope', %s, 'logistic_regression', %s, 2)", (ref.dataset, space))
    assert one(conn, "select count(*) from ml.tuning_studies where tenant_id = %s", ref.tenant) == 0

    study = one(conn, "select ml.start_tuning_study('rts', %s, 'logistic_regression', %s, 2)", ref.dataset, space)
    row = conn.execute("select status, n_trials, tune_job_id, metric, direction from ml.tuning_studies where id = %s",
                       (study,)).fetchone()
    assert row == ("running", 2, None, "roc_auc", "maximize")
    assert one(conn, "select count(*) from ml.jobs where tenant_id = %s and kind in ('tune', 'tune_trial')", ref.tenant) == 0
    with refused("22023", "state: must be one of complete, pruned, lost; got 'done'"):
        conn.execute("select ml.record_tuning_trial(%s, 'done', 0, 0.5)", (study,))
    with refused("P0002", "tuning study 00000000-0000-0000-0000-000000000000 does not exist"):
        conn.execute("select ml.record_tuning_trial('00000000-0000-0000-0000-000000000000', 'lost')")
    assert one(conn, "select ml.record_tuning_trial(%s, 'complete', 0, 0.7)", study)["settled"] == 1
    # The last trial moves the study to refitting, as a job-run study's last slot does.
    assert one(conn, "select ml.record_tuning_trial(%s, 'lost', 1)", study) == {
        "study_id": str(study), "status": "refitting", "n_trials": 2, "settled": 2}
    with refused("55000", f"tuning study {study} is refitting, not running"):
        conn.execute("select ml.record_tuning_trial(%s, 'lost', 2)", (study,))
    # A study whose trials are jobs is settled by its jobs only.
    tune_job = one(conn, "select ml.tune('rts', %s, 'logistic_regression', %s, 1)", ref.dataset, space)
    queued = tuning.study_id_of(conn, tune_job)
    with refused("55000", "its trials are run by tune_trial jobs"):
        conn.execute("select ml.record_tuning_trial(%s, 'lost', 0)", (queued,))
    with tenant_context(conn, ref.tenant, user=ref.owner), \
            refused("42501", "permission denied for function record_tuning_trial"):
        conn.execute("select ml.record_tuning_trial(%s, 'lost', 0)", (study,))
