"""The online end of the retraining loop (docs/retraining.md, "Online evaluation, rollback and
recall"): the maintenance run judges the shadow a retrain cycle deployed and promotes it, then
watches the promoted champion and rolls it back when its realized accuracy drops past the
policy's bound (and not before); a seasonal return to a regime a replaced version served records
a 'recall' row naming that version."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import psycopg
from psycopg.types.json import Jsonb
from sklearn import metrics

from pgmlops import scoring
from pgmlops.db import tenant_context
from pgmlops.jobs.worker import WorkerPool

from .compile_helpers import one
from .conftest import act_for
from .test_reference_profiles import SIGNATURE, Reference, features_of, frame
from .test_retrain_job import END, POLICY, START, champion, concept_drift, events, run_retrain_job, serve, worker
from .training_data import refused

__all__ = ["worker"]

Conn = psycopg.Connection[Any]


def maintain(conn: Conn) -> dict[str, Any]:
    """ml.run_maintenance() until it is not skipped (pg_cron may be running it)."""
    for _ in range(100):
        out = dict(one(conn, "select ml.run_maintenance()"))
        if "skipped" not in out:
            return out
        time.sleep(0.1)
    raise AssertionError("maintenance skipped for 10 s")


def traffic(conn: Conn, name: str, rows: pd.DataFrame, flip: bool = False) -> None:
    """The rows scored through ml.predict, then their labels (flipped with ``flip``) recorded."""
    ids = [r[0]["prediction_id"] for r in conn.execute(
        "select ml.predict(%s, f) from jsonb_array_elements(%s) f", (name, Jsonb(features_of(rows))))]
    conn.execute("select ml.record_feedback_bulk(%s)", (Jsonb([{"prediction_id": p, "label": int(1 - y if flip else y)}
                                                                for p, y in zip(ids, rows["churned"], strict=True)]),))


def champion_version(conn: Conn, name: str) -> int:
    return int(one(conn, "select v.version from ml.model_aliases a join ml.model_versions v on v.id = a.model_version_id"
                         " join ml.models m on m.id = a.model_id where m.name = %s and a.alias = 'champion'", name))


def test_maintenance_promotes_the_shadow_then_rolls_the_champion_back_past_the_bound(conn: Conn, worker: WorkerPool) -> None:
    ref = champion(conn, "rol")
    serve(conn, ref, concept_drift(frame(800, 3, shift=1.0, tiers=(0.2, 0.3, 0.5), vip=0.6)))
    policy = {**POLICY, "promotion": "automatic", "rollback": {"metric": "accuracy", "max_drop": 0.1, "window": "1 day"}}
    with tenant_context(conn, ref.tenant, user=ref.owner):  # an automatic policy is a person's standing approval
        one(conn, "select ml.set_retraining_policy('rol', %s)", Jsonb(policy))
    act_for(conn, ref.tenant)
    report = one(conn, "select ml.drift_report('rol', %s, %s)", START, END)
    job = one(conn, "select job_id from ml.retraining_events where report_id = %s and kind = 'trigger'", report)
    assert run_retrain_job(conn, job)["decision"] == "shadow deployed"
    with tenant_context(conn, ref.tenant, user=ref.owner):
        conn.execute("select ml.approve('rol', 2, 'approved')")
    act_for(conn, ref.tenant)

    # Too few labelled pairs: the maintenance run waits.
    rows = concept_drift(frame(700, 8, shift=1.0, tiers=(0.2, 0.3, 0.5), vip=0.6))
    traffic(conn, "rol", rows.iloc[:40])
    out = maintain(conn)
    project_id = str(one(conn, "select id from ml.projects where name = 'rol'"))
    assert out["retraining"][project_id]["shadow"]["status"] == "waiting"
    assert [e["kind"] for e in events(conn, "rol")][-1] == "shadow"
    # Enough pairs: the maintenance run promotes the shadow.
    traffic(conn, "rol", rows.iloc[40:250])
    maintain(conn)
    promote = events(conn, "rol")[-1]
    assert promote["kind"] == "promote", promote
    assert promote["reason"].startswith(f"rol@2 promoted to champion and deployed (rol@2 approved by reviewer {ref.owner}): "
                                        "shadow comparison")
    assert champion_version(conn, "rol") == 2
    assert [a["version"] for a in one(conn, "select ml.deployment('rol')")["arms"]] == [2]
    baseline = promote["evidence"]["shadow_correct"] / promote["evidence"]["pairs"]

    # The new champion serves as well as it was promoted on: kept (the drop is within the bound).
    traffic(conn, "rol", rows.iloc[250:400])
    kept = maintain(conn)["retraining"][project_id]["rollback"]
    assert kept["status"] == "kept" and kept["labelled"] == 150 and kept["drop"] <= 0.1, kept
    assert abs(kept["baseline"] - baseline) < 1e-12 and "within the bound 0.1" in kept["reason"]
    assert events(conn, "rol")[-1]["kind"] == "promote"

    # Labels turn against it: the realized accuracy drops past 0.1, the deployment is rolled back.
    traffic(conn, "rol", rows.iloc[400:700], flip=True)
    maintain(conn)
    last = events(conn, "rol")[-1]
    assert last["kind"] == "rollback" and last["decision"] == "rolled back", last
    assert last["cycle_id"] == promote["cycle_id"] and last["candidate"]["version"] == 2
    ev = last["evidence"]
    assert ev["labelled"] == 450 and ev["metric"] == "accuracy" and ev["drop"] > 0.1 and ev["restored_version"] == 1
    assert abs(ev["realized"] - one(conn, "select avg((p.prediction = f.label)::int)::float8 from ml.predictions p"
                                          " join ml.feedback f on f.prediction_id = p.id"
                                          " where p.project_id = %s and p.model_version_id = %s and p.shadow_of is null"
                                          " and p.created_at >= %s::timestamptz", project_id,
                                    last["candidate"]["model_version_id"], ev["since"])) < 1e-9
    assert last["reason"].startswith("rol@2 rolled back, rol@1 serves again: ")
    deployment = one(conn, "select ml.deployment('rol')")
    assert deployment["strategy"] == "single" and [a["version"] for a in deployment["arms"]] == [1]
    assert champion_version(conn, "rol") == 1
    assert "retraining.rollback" in [r[0] for r in conn.execute(
        "select event from ml.events where tenant_id = %s and topic = 'retraining'", (ref.tenant,))]
    # Nothing more to judge: the next run leaves it alone.
    assert project_id not in maintain(conn)["retraining"]
    assert events(conn, "rol")[-1]["id"] == last["id"]

    # Every live metric can bound a rollback: the realized values equal scikit-learn's on the rows.
    version = last["candidate"]["model_version_id"]
    rows = conn.execute("select p.prediction, f.label, p.probabilities from ml.predictions p join ml.feedback f"
                        " on f.prediction_id = p.id and f.predicted_at = p.created_at where p.project_id = %s"
                        " and p.model_version_id = %s and p.shadow_of is null and p.created_at >= %s::timestamptz",
                        (project_id, version, ev["since"])).fetchall()
    classes = one(conn, "select signature -> 'classes' from ml.model_versions where id = %s", version)
    y = [r[1] for r in rows]
    yhat = [r[0] for r in rows]
    score = [float(r[2][str(classes[1])]) for r in rows]
    expected = {"precision": metrics.precision_score(y, yhat, pos_label=classes[1], zero_division=0),
                "recall": metrics.recall_score(y, yhat, pos_label=classes[1], zero_division=0),
                "f1": metrics.f1_score(y, yhat, pos_label=classes[1], zero_division=0),
                "roc_auc": metrics.roc_auc_score([int(v == classes[1]) for v in y], score),
                "accuracy": metrics.accuracy_score(y, yhat)}
    for metric, value in expected.items():
        got = conn.execute("select value, labelled from ml_private.realized_metric(%s, %s, %s, %s, %s)",
                           (ref.tenant, project_id, version, metric, ev["since"])).fetchone()
        assert got is not None and got[1] == len(rows) == 450 and abs(got[0] - value) < 1e-9, (metric, got, value)
    with refused("0A000", "policy.rollback.metric: log_loss is not a live metric"):
        conn.execute("select * from ml_private.realized_metric(%s, %s, %s, 'log_loss', now())", (ref.tenant, project_id, version))
    act_for(conn, None)


def test_a_seasonal_return_recalls_the_version_that_served_the_regime(conn: Conn) -> None:
    ref = Reference(conn, "rrc", frame(600, 21))
    v1 = ref.model()
    # A second version fitted on the same training set (same reference bins) replaces it.
    project_id = one(conn, "select id from ml.projects where tenant_id = %s and name = 'rrc'", ref.tenant)
    run = str(one(conn, "select ml.start_run(%s, null, 'logistic_regression', '{}', '{}', %s, '{}')", project_id, ref.dataset))
    conn.execute("select ml.finish_run(%s, 'succeeded', '{}', 1.0, 100, 0.1)", (run,))
    signature = {"inputs": SIGNATURE, "outputs": [], "task": "classification", "classes": [0, 1]}
    artifact = b"version 2 of rrc"
    v2 = str(one(conn, "select ml.register_model_version(%s, 'rrc', %s, 'skops', %s, %s, null, '{}')",
                 run, artifact, hashlib.sha256(artifact).hexdigest(), Jsonb(signature))["model_version_id"])
    scoring.install(conn, v2, scoring.describe(ref.pipeline, task="classification"))
    conn.execute("select ml_private.profile_model_version(%s)", (v2,))
    conn.execute("select ml.set_alias('rrc', 'champion', 2)")  # rrc@2 is champion before the windows
    one(conn, "select ml.set_retraining_policy('rrc', %s)",
        Jsonb({"triggers": [{"type": "new_labels", "min": 1000000}], "online": {"mode": "none"}}))
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    plan = [(v1, frame(400, 22)), (v2, frame(400, 23, shift=1.0, tiers=(0.2, 0.3, 0.5), vip=0.6)), (v2, frame(400, 24))]
    spans = [(now - timedelta(hours=30 - 6 * i), now - timedelta(hours=26 - 6 * i)) for i in range(len(plan))]
    for (version, rows), (start, end) in zip(plan, spans, strict=True):
        ref.version = version
        ref.log(rows, start + (end - start) / 2)
    with tenant_context(conn, ref.tenant, user=ref.owner):
        conn.execute("select ml.approve('rrc', 2, 'approved')")
    act_for(conn, ref.tenant)
    conn.execute("select ml.deploy('rrc', 'single', %s)", (Jsonb([{"arm": "a", "model": "rrc", "version": 2}]),))
    reports = [str(one(conn, "select ml.drift_report('rrc', %s, %s, %s)", start, end,
                       Jsonb({"mode": "fast", "model": "rrc", "version": n})))
               for n, (start, end) in zip((1, 2, 2), spans, strict=True)]
    regime = one(conn, "select summary -> 'regime' from ml.drift_reports where id = %s", reports[2])
    assert regime["matched"] is True and regime["match"]["report_id"] == reports[0], regime
    recalls = [e for e in events(conn, "rrc") if e["kind"] == "recall"]
    assert len(recalls) == 1, recalls
    recall = recalls[0]
    assert recall["report_id"] == reports[2] and recall["candidate"]["version"] == 1 and recall["decision"] == "candidate"
    assert recall["candidate"]["model_version_id"] == v1 and recall["cycle_id"] is None
    assert recall["evidence"]["match"]["report_id"] == reports[0] and recall["evidence"]["champion_version"] == 2
    assert "served by rrc@1" in recall["reason"] and "rrc@1 recalled as a candidate beside the champion rrc@2" in recall["reason"]
    assert "retraining.recall" in [r[0] for r in conn.execute(
        "select event from ml.events where tenant_id = %s and topic = 'retraining'", (ref.tenant,))]
    # Judged again, the report is not recalled twice; a window served by the champion recalls nothing.
    again = one(conn, "select ml_private.check_retraining_triggers(%s)", reports[2])
    assert again["fired"] is False and again["recall"]["repeated"] is True, again
    assert one(conn, "select ml_private.record_regime_recall(%s)", reports[1])["recalled"] is False
    conn.execute("select ml.set_alias('rrc', 'champion', 1)")
    assert one(conn, "select ml_private.record_regime_recall(%s)", reports[2])["repeated"] is True
    assert len([e for e in events(conn, "rrc") if e["kind"] == "recall"]) == 1
    act_for(conn, None)


def test_the_online_checks_refuse_an_unknown_project_or_report_and_leave_a_plain_champion_alone(conn: Conn) -> None:
    ref = champion(conn, "roe")
    one(conn, "select ml.set_retraining_policy('roe', %s)", Jsonb(POLICY))
    with refused("P0002", "project 'nope' does not exist"):
        conn.execute("select ml_private.check_retraining_rollback('nope')")
    with refused("P0002", "drift report 00000000-0000-0000-0000-000000000000 does not exist"):
        conn.execute("select ml_private.record_regime_recall('00000000-0000-0000-0000-000000000000')")
    # A champion no retraining cycle promoted is not watched; no shadow: nothing is judged.
    assert one(conn, "select ml_private.check_retraining_rollback('roe')")["status"] == "none"
    assert str(one(conn, "select id from ml.projects where name = 'roe'")) not in maintain(conn)["retraining"]
    assert one(conn, "select count(*) from ml.retraining_events where tenant_id = %s", ref.tenant) == 0
    act_for(conn, None)



def test_a_recalled_version_better_than_the_retrained_challenger_goes_on_in_its_place(conn: Conn, worker: WorkerPool) -> None:
    """Cycle 1 trains rrj@2 on the drifted concept (awaiting approval); cycle 2, whose trigger
    recalls rrj@2 (a regime seen before), retrains with a recipe that learns nothing (L1, tiny
    C): rrj@2 beats the retrained rrj@3 on the same holdout and is evaluated in its place."""
    ref = champion(conn, "rrj")
    serve(conn, ref, concept_drift(frame(800, 3, shift=1.0, tiers=(0.2, 0.3, 0.5), vip=0.6)))
    one(conn, "select ml.set_retraining_policy('rrj', %s)", Jsonb({**POLICY, "online": {"mode": "none"}}))
    assert run_retrain_job(conn, one(conn, "select ml.retrain('rrj', 'first')"))["decision"] == "awaiting approval"
    v2 = str(one(conn, "select v.id from ml.model_versions v join ml.models m on m.id = v.model_id"
                       " where m.name = 'rrj' and v.version = 2"))
    one(conn, "select ml.set_retraining_policy('rrj', %s)", Jsonb({
        **POLICY, "online": {"mode": "none"}, "recipe": {"algorithm": "logistic_regression",
                                                         "hyperparams": {"penalty": "l1", "C": 1e-6}}}))
    with conn.transaction():
        job = one(conn, "select ml.retrain('rrj', 'second')")
        cycle = str(one(conn, "select id from ml.retraining_events where job_id = %s and kind = 'trigger'", job))
        conn.execute("select ml.record_retraining_step(%s, 'recall', '{}', '{}', %s, '{}', 'candidate',"
                     " 'the regime of rrj@2 returned', null)", (cycle, v2))
    result = run_retrain_job(conn, job)
    steps = [e for e in events(conn, "rrj") if e["cycle_id"] == cycle]
    assert [e["kind"] for e in steps] == ["trigger", "recall", "curate", "train", "recall", "evaluate", "approval"], result
    weighed = steps[4]
    assert weighed["decision"] == "recalled" and weighed["candidate"]["version"] == 2
    assert weighed["test_results"]["retrained_version"] == 3 and weighed["test_results"]["recalled_version"] == 2
    assert weighed["test_results"]["challenger"] > weighed["test_results"]["champion"] + 0.2
    assert weighed["reason"].startswith("rrj@2 (it served this regime before) is better than the retrained rrj@3")
    assert steps[5]["test_results"]["challenger_version"] == 2 and steps[5]["candidate"]["version"] == 2
    assert one(conn, "select v.version from ml.model_aliases a join ml.model_versions v on v.id = a.model_version_id"
                     " join ml.models m on m.id = a.model_id where m.name = 'rrj' and a.alias = 'challenger'") == 2
    act_for(conn, None)


def test_maintenance_promotes_a_canary_that_is_right_more_often(conn: Conn, worker: WorkerPool) -> None:
    """A cycle with online.mode canary (half the traffic): each arm's labelled predictions, the two
    accuracies compared with a two-proportion z test, then the promotion."""
    ref = champion(conn, "rcn")
    serve(conn, ref, concept_drift(frame(800, 3, shift=1.0, tiers=(0.2, 0.3, 0.5), vip=0.6)))
    with tenant_context(conn, ref.tenant, user=ref.owner):
        one(conn, "select ml.set_retraining_policy('rcn', %s)", Jsonb({
            **POLICY, "promotion": "automatic", "online": {"mode": "canary", "canary_weight": 0.5, "min_samples": 100}}))
    act_for(conn, ref.tenant)
    job = one(conn, "select ml.retrain('rcn')")
    # A canary's live arm needs an approval: the automatic policy the owner set stands as theirs.
    assert run_retrain_job(conn, job)["decision"] == "canary deployed"
    approvals = conn.execute("select a.user_id::text, a.decision, a.comment from ml.model_approvals a join ml.model_versions v"
                             " on v.id = a.model_version_id join ml.models m on m.id = v.model_id"
                             " where m.name = 'rcn' and v.version = 2").fetchall()
    assert [(u, d) for u, d, _ in approvals] == [(ref.owner, "approved")]
    assert approvals[0][2].startswith("standing approval: retraining policy of project rcn (promotion automatic")
    rows = concept_drift(frame(500, 8, shift=1.0, tiers=(0.2, 0.3, 0.5), vip=0.6))
    traffic(conn, "rcn", rows.iloc[:60])
    waiting = one(conn, "select ml_private.evaluate_shadow('rcn')")
    assert waiting["status"] == "waiting" and waiting["mode"] == "canary" and waiting["live_n"] + waiting["shadow_n"] == 60
    assert waiting["reason"].endswith("of 100 labelled predictions on each arm")
    traffic(conn, "rcn", rows.iloc[60:])
    maintain(conn)
    last = events(conn, "rcn")[-1]
    assert last["kind"] == "promote", last
    tests = last["test_results"]
    assert tests["mode"] == "canary" and tests["live_n"] + tests["shadow_n"] == 500 and min(tests["live_n"], tests["shadow_n"]) >= 100
    assert tests["shadow_correct"] / tests["shadow_n"] > tests["live_correct"] / tests["live_n"] and tests["p_value"] < 0.05
    assert last["reason"].startswith("rcn@2 promoted to champion and deployed (rcn@2 approved by reviewer ")
    assert "canary comparison" in last["reason"]
    assert [a["version"] for a in one(conn, "select ml.deployment('rcn')")["arms"]] == [2] and champion_version(conn, "rcn") == 2
    act_for(conn, None)
