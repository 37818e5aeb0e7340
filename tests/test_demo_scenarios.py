"""Variants of the demo's scenario (issue 13, "Tests"), each seeded and run by
:func:`pgmlops.demo.run_scenario` for its own tenant, with a champion trained once with a fixed
configuration (no tuning) on a week of history at 40 transactions an hour:

- *not better*: the mix of devices and merchants shifts (covariate shift: P(y | x) kept); the
  dataset-drift trigger fires, but the champion still handles the new mix, so the retrained
  challenger is not proven better: rejected, the champion and its deployment unchanged;
- *rollback*: a fraud ring (concept drift) fires the metric-drop trigger, the challenger is
  shadowed and promoted (nobody approves it: the automatic promotion policy the tenant's owner
  set stands as their approval, recorded); then the ring moves to web payments, the new
  champion's realized accuracy falls past the policy's bound and the maintenance run rolls back
  to the old one;
- *seasonal return*: regime A, a season (farther from home, more web payments, a web fraud
  pattern) that a retrained version learns and is promoted for, then A again: the returning
  window is recognised as the first one (the window embeddings' match) and the version that
  served it is recalled as a candidate in the cycle its report fired, weighed against the
  retrained one and set aside.

The three share one database and one pool of two worker processes; together they take about a
minute and a half on two shared cores."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgmlops.db import tenant_context
from pgmlops.demo import Phase, Scenario, run_scenario
from pgmlops.demo._demo import POLICY, RING
from pgmlops.demo._scenario import JOB_KINDS
from pgmlops.jobs.worker import WorkerPool
from pgmlops.simulation import Regime, Segment

from .compile_helpers import one

Conn = psycopg.Connection[Any]

# The champion: the demo's retraining recipe, trained once (the demo tunes it).
HYPERPARAMS = dict(POLICY["recipe"]["hyperparams"])
SIZES: dict[str, Any] = {"hyperparams": HYPERPARAMS, "history_days": 7, "rate_per_hour": 40.0, "seed": 11}
# The demo's policy with the sample sizes of 40 transactions an hour.
BASE_POLICY: dict[str, Any] = {**POLICY, "online": {"mode": "shadow", "min_samples": 300}}

# More mobile and web payments, more electronics, online services, entertainment and travel: the
# inputs' distribution moves, the labelling function does not.
MIX = Regime("B", device_weights=(0.3, 0.3, 0.4),
             category_weights=(0.12, 0.10, 0.10, 0.14, 0.05, 0.10, 0.10, 0.12, 0.12, 0.05))
NOT_BETTER = Scenario(
    "not better",
    (Phase("serving 4 days; the mix of devices and merchants shifts on day 3", 4, (Segment(0.5, 1.0, MIX),),
           maintain=True),),
    {**BASE_POLICY, "triggers": [{"type": "dataset_drift", "share": 0.25}]}, **SIZES)

# The ring moves: web payments at retail, travel, jewelry and restaurants become fraudulent.
MOVED_RING = Regime("C", pattern=("web", ("retail", "travel", "jewelry", "restaurant")), pattern_strength=8.0)
ROLLBACK = Scenario(
    "rollback",
    (Phase("serving 4 days; a fraud ring appears on day 3", 4, (Segment(0.5, 1.0, RING),)),
     Phase("serving 2 days with the challenger in shadow", 2, (Segment(0.0, 1.0, RING),), reports="none", maintain=True),
     Phase("serving 2 days; the ring moves to web payments", 2, (Segment(0.0, 1.0, MOVED_RING),), reports="none",
           maintain=True)),
    {**BASE_POLICY,
     "triggers": [{"type": "metric_drop", "metric": "roc_auc", "source": "realized", "drop": 0.08, "min_samples": 200}],
     "rollback": {"metric": "accuracy", "max_drop": 0.02, "window": "1 day"}}, **SIZES)

# The season moves what customers' history does not remember, so when it ends regime A is back
# at once. The retraining keeps the policy's reference sample (500 rows of the champion's
# training set): the version retrained for the season bins regime A otherwise, but every window
# is embedded on the first version's bins (the project's regime basis), so A is recognised
# whichever version serves it.
SEASON = Regime("B", distance_scale=2.5, device_weights=(0.3, 0.45, 0.25),
                pattern=("web", ("retail", "travel", "electronics")), pattern_strength=6.0)
SEASONAL = Scenario(
    "seasonal return",
    (Phase("serving 2 days of regime A", 2),
     Phase("serving 2 days of the season", 2, (Segment(0.0, 1.0, SEASON),)),
     Phase("serving 2 days of the season with the challenger in shadow", 2, (Segment(0.0, 1.0, SEASON),),
           reports="none", maintain=True),
     Phase("serving 2 days; regime A returns", 2)),
    # No rollback: this variant is about the recall. (fraud@2, trained for the season, serves
    # regime A worse than it served the season: a maintenance run in the last phase would roll it
    # back, as the workers' own did every 5 minutes before the test's pool turned theirs off.)
    {**BASE_POLICY, "cooldown": "0 seconds", "rollback": {"enabled": False},
     "triggers": [{"type": "dataset_drift", "share": 0.25}, {"type": "new_labels", "min": 1000}]}, **SIZES)


@pytest.fixture(scope="module")
def pool(db_url: str) -> Iterator[WorkerPool]:
    """Two worker processes taking the scenarios' jobs, shared by the module's tests. They run
    no maintenance of their own (the tests' databases have no pg_cron): a scenario's maintenance
    runs are the ones its phases ask for, so what each one judged is known."""
    with WorkerPool(db_url, list(JOB_KINDS), 2, poll_interval=0.3, log_level=logging.WARNING, maintenance_interval=None) as workers:
        yield workers


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [str(e["kind"]) for e in events]


def deployed(conn: Conn, tenant: str) -> list[tuple[int, str]]:
    with tenant_context(conn, tenant):
        return [(a["version"], a.get("role", "live")) for a in one(conn, "select ml.deployment('fraud')")["arms"]]


def approvals(conn: Conn, tenant: str) -> list[tuple[int, str, str]]:
    """(version, user, decision) of the tenant's model approvals, by version."""
    with tenant_context(conn, tenant):
        return [(r[0], str(r[1]), r[2]) for r in conn.execute(
            "select v.version, a.user_id, a.decision from ml.model_approvals a join ml.model_versions v"
            " on v.id = a.model_version_id where a.tenant_id = %s order by v.version", (tenant,))]


def champion(conn: Conn, tenant: str) -> int:
    with tenant_context(conn, tenant):
        return int(one(conn, "select ml.model_version('fraud', null, 'champion') ->> 'version'"))


def test_a_challenger_that_is_not_better_is_rejected_and_nothing_is_promoted(db_url: str, pool: WorkerPool) -> None:
    result = run_scenario(NOT_BETTER, db_url, pool=pool)
    (phase,) = result.phases
    # The policy judges the second window (the first is its baseline): the inputs drifted.
    assert [w["regime"] for w in phase.windows] == ["A", "B"]
    assert [w["fired"] for w in phase.windows] == [False, True]
    assert phase.windows[1]["reason"].startswith("dataset drift share ") and phase.windows[1]["drift_share"] >= 0.25
    # The champion still ranks the shifted traffic as well as before.
    assert phase.windows[1]["realized"] > phase.windows[0]["realized"] - 0.05
    (job,) = phase.jobs
    assert job["result"]["decision"] == "rejected" and job["result"]["challenger"] == 2
    assert kinds(phase.events) == ["trigger", "curate", "train", "evaluate", "reject"]
    evaluate, reject = phase.events[3], phase.events[4]
    tests = evaluate["test_results"]
    assert evaluate["decision"] == "not better" and tests["test"] == "delong"
    assert tests["champion_version"] == 1 and tests["challenger_version"] == 2 and tests["p_value"] >= 0.05
    assert reject["decision"] == "rejected" and reject["candidate"]["version"] == 2
    assert reject["reason"].startswith("fraud@2 rejected, fraud@1 stays champion: DeLong: roc_auc ")
    assert all(e["cycle_id"] == phase.events[0]["id"] for e in phase.events)
    # Nothing for the maintenance run to judge; no promotion, the champion serves alone.
    assert phase.maintenance == {}
    assert not {"shadow", "approval", "promote", "rollback"} & set(kinds(result.decisions))
    assert phase.champion == 1 and phase.deployment == [{"version": 1, "role": "live"}]
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert champion(conn, result.tenant_id) == 1 and deployed(conn, result.tenant_id) == [(1, "live")]
        # The policy's standing approval is given to a version it promotes, not to a rejected one.
        assert approvals(conn, result.tenant_id) == [(1, result.reviewer, "approved")]
        with tenant_context(conn, result.tenant_id):
            # The challenger keeps its alias, for a person to look at.
            assert one(conn, "select ml.model_version('fraud', null, 'challenger') ->> 'version'") == "2"


def test_a_promoted_champion_that_degrades_is_rolled_back(db_url: str, pool: WorkerPool) -> None:
    result = run_scenario(ROLLBACK, db_url, pool=pool)
    drift, shadow, moved = result.phases
    assert [w["fired"] for w in drift.windows] == [False, True]
    assert drift.windows[1]["reason"].startswith("realized roc_auc ")
    (job,) = drift.jobs
    assert job["result"]["decision"] == "shadow deployed" and job["result"]["challenger"] == 2
    assert kinds(drift.events) == ["trigger", "curate", "train", "evaluate", "shadow"]
    cycle = drift.events[0]["id"]
    # The shadow is promoted on its live accuracy...
    assert kinds(shadow.events) == ["promote"] and shadow.maintenance is not None
    promote = shadow.events[0]
    assert promote["cycle_id"] == cycle and promote["candidate"]["version"] == 2
    assert promote["reason"].startswith("fraud@2 promoted to champion and deployed (fraud@2 approved by the standing "
                                        f"approval of {result.reviewer}, who set the automatic promotion policy)")
    assert shadow.champion == 2 and shadow.deployment == [{"version": 2, "role": "live"}]
    # Nobody approved fraud@2: the policy the reviewer set stands as their approval, recorded.
    approval = shadow.maintenance["shadow"]["approval"]
    assert approval["approved"] is True and approval["standing"] is True and approval["by"] == result.reviewer
    baseline = promote["evidence"]["shadow_correct"] / promote["evidence"]["pairs"]
    # ... which falls past the bound when the ring moves: rolled back to fraud@1.
    assert kinds(moved.events) == ["rollback"]
    rollback = moved.events[0]
    assert rollback["decision"] == "rolled back" and rollback["cycle_id"] == cycle
    assert rollback["candidate"]["version"] == 2
    ev = rollback["evidence"]
    assert ev["metric"] == "accuracy" and ev["max_drop"] == 0.02 and ev["restored_version"] == 1
    assert abs(ev["baseline"] - baseline) < 1e-12 and ev["labelled"] >= 300
    assert ev["drop"] > 0.02 and abs(ev["drop"] - (ev["baseline"] - ev["realized"])) < 1e-12
    assert rollback["reason"].startswith("fraud@2 rolled back, fraud@1 serves again: fraud@2's realized accuracy over ")
    assert moved.maintenance is not None and moved.maintenance["rollback"]["status"] == "rollback"
    assert moved.champion == 1 and moved.deployment == [{"version": 1, "role": "live"}]
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert champion(conn, result.tenant_id) == 1 and deployed(conn, result.tenant_id) == [(1, "live")]
        assert approvals(conn, result.tenant_id) == [(1, result.reviewer, "approved"), (2, result.reviewer, "approved")]
        with tenant_context(conn, result.tenant_id):
            # The realized accuracy is fraud@2's over its live labelled predictions since then.
            realized = one(conn, "select avg((p.prediction = f.label)::int)::float8 from ml.predictions p"
                                 " join ml.feedback f on f.prediction_id = p.id"
                                 " where p.model_version_id = %s and p.shadow_of is null and p.created_at >= %s::timestamptz",
                           rollback["candidate"]["model_version_id"], ev["since"])
    assert abs(ev["realized"] - realized) < 1e-9


def test_a_seasonal_return_is_recognised_and_recalls_the_version_that_served_it(db_url: str, pool: WorkerPool) -> None:
    result = run_scenario(SEASONAL, db_url, pool=pool)
    first, season, shadow, back = result.phases
    w1, w2, w3 = result.windows
    assert [w["regime"] for w in (w1, w2, w3)] == ["A", "B", "A"] and [w["version"] for w in (w1, w2, w3)] == [1, 1, 2]
    # The season is new; fraud@2 is trained for it and promoted.
    assert w2["fired"] and w2["regime_match"]["matched"] is False and w2["recall"] is None
    assert kinds(season.events) == ["trigger", "curate", "train", "evaluate", "shadow"]
    assert kinds(shadow.events) == ["promote"] and shadow.champion == 2
    # Regime A returns: its window matches the first one, which fraud@1 served.
    assert w3["regime_match"]["matched"] is True
    match = w3["regime_match"]["match"]
    assert match["report_id"] == w1["report_id"] and match["model_version"] == 1
    assert match["distance"] <= match["threshold"]
    assert w3["fired"] and w3["recall"] is not None and w3["recall"]["version"] == 1
    cycle = back.events[0]["id"]
    assert kinds(back.events) == ["trigger", "recall", "curate", "train", "recall", "evaluate", "reject"]
    assert all(e["cycle_id"] == cycle for e in back.events)
    candidate = back.events[1]
    assert candidate["decision"] == "candidate" and candidate["candidate"]["version"] == 1
    assert candidate["report_id"] == w3["report_id"] and candidate["evidence"]["recalled_version"] == 1
    assert candidate["evidence"]["champion_version"] == 2 and candidate["evidence"]["match"]["report_id"] == w1["report_id"]
    assert "served by fraud@1; fraud@1 recalled as a candidate beside the champion fraud@2" in candidate["reason"]
    # The cycle weighs fraud@1 against the retrained fraud@3 on the same holdout: not proven
    # better, set aside; fraud@3 is not better than the champion either, and fraud@2 stays.
    weighed = back.events[4]
    assert weighed["decision"] == "set aside" and weighed["candidate"]["version"] == 1
    assert weighed["test_results"]["recalled_version"] == 1 and weighed["test_results"]["retrained_version"] == 3
    assert weighed["test_results"]["p_value"] >= 0.05
    assert weighed["reason"].startswith("fraud@1 (it served this regime before) is not better than the retrained fraud@3")
    assert back.events[5]["test_results"]["challenger_version"] == 3 and back.events[6]["decision"] == "rejected"
    assert back.champion == 2 and back.deployment == [{"version": 2, "role": "live"}]
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert champion(conn, result.tenant_id) == 2
        assert approvals(conn, result.tenant_id) == [(1, result.reviewer, "approved"), (2, result.reviewer, "approved")]
        # fraud@2 served the returning window, embedded on fraud@1's bins (the regime basis).
        regime = one(conn, "select summary -> 'regime' from ml.drift_reports where id = %s", w3["report_id"])
        assert regime["model_version"] == 2 and regime["basis_version"] == 1
        assert regime["off_basis_rows"] == regime["row_count"] > 0
        with tenant_context(conn, result.tenant_id):
            assert "retraining.recall" in [r[0] for r in conn.execute(
                "select event from ml.events where tenant_id = %s and topic = 'retraining'", (result.tenant_id,))]
