"""The retrain job (docs/retraining.md, "The retrain job"): a deployed champion fitted before a
concept drift, predictions and feedback after it; a drift report fires the trigger, which
enqueues the job; a real worker process runs it: it curates, trains a challenger, proves it
better on the holdout with DeLong's test and deploys it in shadow, every step recorded in order
with its reason. Without drift and with random labels the challenger is rejected and the
champion stays. ml.retrain's errors."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
from psycopg.types.json import Jsonb

from pgmlops import models, scoring
from pgmlops.db import tenant_context
from pgmlops.jobs.worker import WorkerPool
from pgmlops.training import run_training

from .compile_helpers import one
from .conftest import act_for
from .test_cli import pgmlops
from .test_reference_profiles import Reference, features_of, frame
from .training_data import job_result, refused

Conn = psycopg.Connection[Any]

NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
START, END = NOW - timedelta(hours=20), NOW - timedelta(hours=10)


def concept_drift(rows: pd.DataFrame) -> pd.DataFrame:
    """The labelling function changes: churn now follows the visits, not the amount."""
    return rows.assign(churned=(rows["visits"] > 14).astype(int))


def champion(conn: Conn, name: str) -> Reference:
    """A logistic regression fitted through the train handler's path on pre-drift data,
    compiled, aliased champion, approved and deployed."""
    ref = Reference(conn, name, frame(600, 1))
    project_id = one(conn, "select ml.create_project(%s, 'classification', 'churned')", name)
    out = run_training(conn, project_id=project_id, dataset_id=ref.dataset, algorithm="logistic_regression",
                       hyperparams={}, options={})
    ref.version = str(out["model_version_id"])
    ref.pipeline = models.load_model(conn, f"{name}@1")
    scoring.compile_registered(conn, ref.version, ref.pipeline, task="classification")
    conn.execute("select ml.set_alias(%s, 'champion', 1)", (name,))
    with tenant_context(conn, ref.tenant, user=ref.owner):
        conn.execute("select ml.approve(%s, 1, 'approved')", (name,))
    conn.execute("select ml.deploy(%s, 'single', %s)", (name, Jsonb([{"arm": "a", "model": name, "version": 1}])))
    return ref


def serve(conn: Conn, ref: Reference, rows: pd.DataFrame, chunks: int = 10) -> None:
    """Logs the rows' predictions spread over the window, then their labels."""
    size = -(-len(rows) // chunks)
    for i, part in enumerate(rows.iloc[k:k + size] for k in range(0, len(rows), size)):
        ids = ref.log(part, START + (END - START) * (i + 0.5) / chunks)
        conn.execute("select ml.record_feedback_bulk(%s)", (Jsonb([{"prediction_id": p, "label": int(y)}
                                                                    for p, y in zip(ids, part["churned"], strict=True)]),))


@pytest.fixture(scope="module")
def worker(db_url: str) -> Iterator[WorkerPool]:
    """One real worker process claiming retrain jobs."""
    with WorkerPool(db_url, ["retrain"], 1, poll_interval=0.2, log_level=logging.WARNING, maintenance_interval=None) as pool:
        yield pool


def run_retrain_job(conn: Conn, job_id: int) -> dict[str, Any]:
    """Waits for the worker to finish the retrain job ``job_id``; its result."""
    return job_result(conn, job_id)


def events(conn: Conn, name: str) -> list[dict[str, Any]]:
    return list(reversed(one(conn, "select ml.retraining_history(%s)", name)))


POLICY = {"triggers": [{"type": "dataset_drift", "share": 0.3}], "cooldown": "0 seconds",
          "data": {"window": "2 days", "reference_sample": 100},
          "online": {"mode": "shadow", "min_samples": 100}}


def test_a_concept_drift_fires_a_retrain_whose_challenger_is_proven_better_and_shadowed(conn: Conn, worker: WorkerPool,
                                                                                       db_url: str) -> None:
    ref = champion(conn, "rjd")
    drifted = concept_drift(frame(800, 3, shift=1.0, tiers=(0.2, 0.3, 0.5), vip=0.6))
    serve(conn, ref, drifted)
    one(conn, "select ml.set_retraining_policy('rjd', %s)", Jsonb(POLICY))
    report = one(conn, "select ml.drift_report('rjd', %s, %s)", START, END)
    trigger = conn.execute("select id::text, job_id from ml.retraining_events where report_id = %s and kind = 'trigger'",
                           (report,)).fetchone()
    assert trigger is not None and trigger[1] is not None
    assert one(conn, "select payload from ml.jobs where id = %s", trigger[1]) == {"trigger_event_id": trigger[0],
                                                                                   "project": "rjd"}
    result = run_retrain_job(conn, trigger[1])
    assert result["decision"] == "shadow deployed", result
    history = events(conn, "rjd")
    assert [e["kind"] for e in history] == ["trigger", "curate", "train", "evaluate", "shadow"]
    assert {e["cycle_id"] for e in history} == {trigger[0]}
    curate, train, evaluate, shadow = history[1:]
    assert curate["data"]["reference_rows"] == 100 and curate["data"]["holdout"]["rows"] == 160
    assert curate["data"]["training_rows"] == 100 + 640 - curate["data"]["duplicates_removed"]
    assert train["candidate"]["version"] == 2 and "registered as challenger" in train["reason"]
    assert evaluate["test_results"]["test"] == "delong" and evaluate["decision"] == "better"
    assert evaluate["test_results"]["challenger"] > evaluate["test_results"]["champion"] + 0.1
    assert "challenger better" in evaluate["reason"]
    aliases = dict(conn.execute("select a.alias, v.version from ml.model_aliases a join ml.model_versions v"
                                " on v.id = a.model_version_id join ml.models m on m.id = a.model_id where m.name = 'rjd'"))
    assert aliases == {"champion": 1, "challenger": 2}
    deployment = one(conn, "select ml.deployment('rjd')")
    assert deployment["strategy"] == "shadow" and shadow["evidence"]["deployment_id"] == deployment["id"]
    assert "shadow" in shadow["reason"]
    published = [r[0] for r in conn.execute("select event from ml.events where tenant_id = %s and topic = 'retraining'"
                                            " order by id", (ref.tenant,))]
    assert published[-4:] == ["retraining.curate", "retraining.train", "retraining.evaluate", "retraining.shadow"]
    # The timeline, as `pgmlops retraining history` prints it: oldest first, within 80 columns.
    run = pgmlops("retraining", "history", "--project", "rjd", url=db_url, env={"PGMLOPS_TENANT": ref.tenant})
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert max(map(len, lines)) <= 80
    heads = [line.split()[2] for line in lines if line[:4].isdigit()]
    assert heads == ["trigger", "curate", "train", "evaluate", "shadow"]
    assert "dataset drift share" in run.stdout and "challenger better" in run.stdout.replace("\n      ", " ")
    # Online: the shadow's live comparison, then its promotion.
    shadow_promotion(conn, ref.tenant, ref.owner)


def test_without_drift_a_challenger_on_random_labels_is_rejected_and_the_champion_stays(conn: Conn, worker: WorkerPool,
                                                                                        ) -> None:
    ref = champion(conn, "rjn")
    rows = frame(800, 4)
    rows = rows.assign(churned=np.random.default_rng(9).integers(0, 2, len(rows)))
    serve(conn, ref, rows)
    with tenant_context(conn, ref.tenant, user=ref.owner):
        one(conn, "select ml.set_retraining_policy('rjn', %s)", Jsonb({**POLICY, "online": {"mode": "none"},
                                                                        "promotion": "automatic"}))
    act_for(conn, ref.tenant)
    job_id = one(conn, "select ml.retrain('rjn', 'weekly check')")
    assert one(conn, "select job_id from ml.retraining_events where kind = 'trigger' and reason = 'manual: weekly check'") \
        == job_id
    result = run_retrain_job(conn, job_id)
    assert result["decision"] == "rejected", result
    history = events(conn, "rjn")
    assert [e["kind"] for e in history] == ["trigger", "curate", "train", "evaluate", "reject"]
    assert history[-1]["reason"].startswith("rjn@2 rejected, rjn@1 stays champion: ")
    assert one(conn, "select v.version from ml.model_aliases a join ml.model_versions v on v.id = a.model_version_id"
                     " join ml.models m on m.id = a.model_id where m.name = 'rjn' and a.alias = 'champion'") == 1
    assert one(conn, "select ml.deployment('rjn')")["arms"][0]["version"] == 1


def test_ml_retrain_refuses_an_unknown_project_and_one_without_policy(conn: Conn) -> None:
    ref = Reference(conn, "rjx", frame(50, 5))
    one(conn, "select ml.create_project('rjx', 'classification', 'churned')")
    before = one(conn, "select count(*) from ml.jobs where kind = 'retrain'")
    with refused("P0002", "project 'nope' does not exist"):
        conn.execute("select ml.retrain('nope')")
    with refused("55000", "project rjx has no retraining policy"):
        conn.execute("select ml.retrain('rjx')")
    assert one(conn, "select count(*) from ml.jobs where kind = 'retrain'") == before
    assert one(conn, "select count(*) from ml.retraining_events where tenant_id = %s", ref.tenant) == 0


def test_automatic_promotion_is_the_policy_setters_standing_approval_and_a_manual_run_from_the_cli(conn: Conn,
        worker: WorkerPool, db_url: str) -> None:
    ref = champion(conn, "rja")
    serve(conn, ref, concept_drift(frame(600, 6, shift=0.5)))
    policy = {**POLICY, "online": {"mode": "none"}, "promotion": "automatic"}
    # Automatic promotion approves every version the policy proves better: a service caller,
    # which is no one, cannot give that approval; the owner can.
    with refused("42501", "policy.promotion: automatic promotion stands as the approval of the member who sets it"):
        conn.execute("select ml.set_retraining_policy('rja', %s)", (Jsonb(policy),))
    assert one(conn, "select count(*) from ml.retraining_policies where tenant_id = %s", ref.tenant) == 0
    with tenant_context(conn, ref.tenant, user=ref.owner):
        one(conn, "select ml.set_retraining_policy('rja', %s)", Jsonb(policy))
    act_for(conn, ref.tenant)
    run = pgmlops("retraining", "run", "--project", "rja", "--reason", "labels changed", url=db_url,
                  env={"PGMLOPS_TENANT": ref.tenant})
    assert run.returncode == 0, run.stderr
    job_id = int(run.stdout.split()[2])
    result = run_retrain_job(conn, job_id)
    history = events(conn, "rja")
    assert history[0]["reason"] == "manual: labels changed" and history[0]["job_id"] == job_id
    # The new version is better offline; the policy's standing approval (the owner's, recorded as
    # theirs) lets the job promote and deploy it.
    assert [e["kind"] for e in history] == ["trigger", "curate", "train", "evaluate", "promote"], result
    assert history[-1]["reason"].startswith(
        f"rja@2 promoted to champion and deployed (automatic promotion, no online stage; rja@2 approved by the "
        f"standing approval of {ref.owner}, who set the automatic promotion policy); ")
    assert one(conn, "select v.version from ml.model_aliases a join ml.model_versions v on v.id = a.model_version_id"
                     " join ml.models m on m.id = a.model_id where m.name = 'rja' and a.alias = 'champion'") == 2
    version = {n: str(i) for n, i in conn.execute("select v.version, v.id from ml.model_versions v join ml.models m"
                                                  " on m.id = v.model_id where m.name = 'rja'")}
    approval = conn.execute("select user_id::text, decision, comment from ml.model_approvals where model_version_id = %s",
                            (version[2],)).fetchall()
    assert len(approval) == 1 and approval[0][:2] == (ref.owner, "approved")
    assert f"cycle {history[0]['cycle_id']}: " in approval[0][2] and "better" in approval[0][2]
    assert one(conn, "select count(*) from ml.audit_log where action = 'approval.recorded' and object_id = %s"
                     " and (after ->> 'standing')::boolean", version[2]) == 1

    # The standing approval never overrides a reviewer's rejection, nor outlives the setter's role.
    cycle = history[0]["cycle_id"]
    with tenant_context(conn, ref.tenant, user=ref.owner):
        conn.execute("select ml.approve('rja', 1, 'rejected', 'worse on the new labels')")
    with tenant_context(conn, ref.tenant, user=ref.owner):
        with refused("42501", "permission denied for function apply_standing_approval"):
            conn.execute("select ml.apply_standing_approval(%s, %s)", (cycle, version[1]))
    act_for(conn, ref.tenant)
    verdict = one(conn, "select ml.apply_standing_approval(%s, %s)", cycle, version[1])
    assert verdict == {"approved": False, "by": ref.owner, "standing": False,
                       "reason": f"rja@1 was rejected by reviewer {ref.owner}"}
    conn.execute("update ml.tenant_members set role = 'viewer' where tenant_id = %s and user_id = %s", (ref.tenant, ref.owner))
    conn.execute("delete from ml.model_approvals where model_version_id = %s", (version[1],))
    verdict = one(conn, "select ml.apply_standing_approval(%s, %s)", cycle, version[1])
    assert verdict["approved"] is False and "is no longer an owner, admin or ml_engineer" in verdict["reason"]
    assert one(conn, "select count(*) from ml.model_approvals where model_version_id = %s", version[1]) == 0
    with refused("P0002", "cycle: retraining cycle 00000000-0000-0000-0000-000000000000 does not exist"):
        conn.execute("select ml.apply_standing_approval('00000000-0000-0000-0000-000000000000', %s)", (version[1],))
    with refused("P0002", "is not a version of project rja's models"):
        conn.execute("select ml.apply_standing_approval(%s, gen_random_uuid())", (cycle,))


def test_too_few_labelled_rows_fail_the_cycle_with_the_reason(conn: Conn, worker: WorkerPool) -> None:
    ref = champion(conn, "rjf")
    serve(conn, ref, frame(60, 7), chunks=2)
    one(conn, "select ml.set_retraining_policy('rjf', %s)", Jsonb(POLICY))
    result = run_retrain_job(conn, one(conn, "select ml.retrain('rjf')"))
    assert result["decision"] == "failed"
    history = events(conn, "rjf")
    assert [e["kind"] for e in history] == ["trigger", "failed"]
    assert history[-1]["reason"].startswith("curate: too few labelled predictions") and "60 valid" in history[-1]["reason"]
    assert one(conn, "select count(*) from ml.model_versions v join ml.models m on m.id = v.model_id where m.name = 'rjf'") == 1


def shadow_promotion(conn: Conn, tenant: str, owner: str) -> None:
    """rjd@2 in shadow beside rjd@1: traffic through ml.predict scores both arms; with feedback,
    ml_private.evaluate_shadow waits for min_samples labelled pairs, then McNemar proves the
    challenger better and the automatic promotion policy the owner set (their standing approval)
    promotes and deploys it."""
    with tenant_context(conn, tenant, user=owner):
        one(conn, "select ml.set_retraining_policy('rjd', %s)", Jsonb({**POLICY, "promotion": "automatic"}))
    act_for(conn, tenant)
    rows = concept_drift(frame(300, 8, shift=1.0, tiers=(0.2, 0.3, 0.5), vip=0.6))

    def traffic(part: pd.DataFrame) -> None:
        ids = [r[0]["prediction_id"] for r in conn.execute(
            "select ml.predict('rjd', f) from jsonb_array_elements(%s) f", (Jsonb(features_of(part)),))]
        conn.execute("select ml.record_feedback_bulk(%s)", (Jsonb([{"prediction_id": p, "label": int(y)}
                                                                    for p, y in zip(ids, part["churned"], strict=True)]),))

    traffic(rows.iloc[:50])
    waiting = one(conn, "select ml_private.evaluate_shadow('rjd')")
    assert waiting["status"] == "waiting" and waiting["pairs"] == 50 and waiting["reason"] == "50 of 100 labelled pairs"
    traffic(rows.iloc[50:])
    verdict = one(conn, "select ml_private.evaluate_shadow('rjd')")
    assert verdict["status"] == "promote", verdict
    assert verdict["pairs"] == 300 and verdict["c"] > verdict["b"] and verdict["p_value"] < 0.05
    assert verdict["shadow_correct"] > verdict["live_correct"]
    last = events(conn, "rjd")[-1]
    assert last["kind"] == "promote" and last["reason"].startswith(
        f"rjd@2 promoted to champion and deployed (rjd@2 approved by the standing approval of {owner}, who set the "
        "automatic promotion policy): shadow comparison")
    assert {k: verdict["approval"][k] for k in ("approved", "by", "standing")} == {"approved": True, "by": owner,
                                                                                "standing": True}
    deployment = one(conn, "select ml.deployment('rjd')")
    assert deployment["strategy"] == "single" and [a["version"] for a in deployment["arms"]] == [2]
    assert one(conn, "select ml_private.evaluate_shadow('rjd')")["status"] == "none"
