"""`pgmlops demo`: the whole loop (issue 13): a fraud model that notices it has gone stale,
retrains itself, proves the new model better and promotes it, every decision recorded.

The loop is :func:`pgmlops.demo.run_scenario` running :func:`demo_scenario`, narrated. Each step
goes through the same SQL API every client uses, acting for one tenant:

1. tenant and project; a fortnight of simulated card transactions (``pgmlops.simulation``)
   ingested into three feature groups; a point-in-time training set of their labels;
2. Optuna tuning of a gradient boosted model, the trials fanned out as jobs to worker processes;
   the best configuration registered, compiled to SQL, aliased champion, approved by the
   tenant's reviewer and deployed;
3. traffic served through ``ml.predict`` hour by simulated hour, chargebacks recorded as delayed
   feedback; half way through, a new fraud pattern appears (concept drift);
4. one drift report (``ml.drift_report``) per simulated day, as monitoring would run them: the
   realized ROC AUC falls, the project's retraining policy (set by the reviewer) fires; the
   retrain job (on the same workers) curates the labelled predictions, trains a challenger,
   proves it better offline (DeLong) and deploys it in shadow;
5. more traffic: the shadow is scored beside the champion; the maintenance run
   (``ml.run_maintenance``, which judges retraining shadows) compares them live and promotes the
   challenger, approved by the policy: its automatic promotion, set by the reviewer, stands as
   their approval (no one calls ``ml.approve`` for it);
6. a day served by the new champion, its report, and the HTML report (``pgmlops.reporting``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from pgmlops.demo._scenario import _PARAM_TITLES as _PARAM_TITLES
from pgmlops.demo._scenario import ALGORITHM, METRIC, PROJECT, Phase, Scenario, ScenarioResult, _f, run_scenario
from pgmlops.demo._scenario import SEARCH_SPACE as SEARCH_SPACE
from pgmlops.demo._scenario import _leaderboard_table as _leaderboard_table
from pgmlops.simulation import Regime, Segment

__all__ = ["DemoSummary", "demo_scenario", "run_demo"]

HISTORY_DAYS = 14
SERVED_DAYS = 6          # served by the champion, in monitoring windows of WINDOW_DAYS
WINDOW_DAYS = 2
DRIFT_DAY = 3            # the first day of the new fraud pattern
SHADOW_DAYS = 3          # served with the challenger in shadow
RATE_PER_HOUR = 120.0
LABEL_DELAY = 0.005      # chargebacks after about 1.4 simulated hours, maturity after 3.6
# A new fraud ring: mobile payments at electronics, online services and gas stations become
# fraudulent far more often; the features' distributions do not move (concept drift).
RING = Regime("B", pattern=("mobile", ("electronics", "online_services", "gas")), pattern_strength=8.0)
POLICY: dict[str, Any] = {
    "triggers": [{"type": "metric_drop", "metric": METRIC, "source": "realized", "drop": 0.08, "min_samples": 500}],
    "cooldown": "1 day",
    # Retrain with enough boosting to move the rare class's probabilities past one half.
    "recipe": {"algorithm": ALGORITHM, "hyperparams": {"learning_rate": 0.2, "max_iter": 100, "max_leaf_nodes": 31,
                                                       "min_samples_leaf": 10}},
    "data": {"reference_sample": 500},  # the window: the wall-clock length of a monitoring window
    "evaluation": {"metric": METRIC, "confidence": 0.95},
    "online": {"mode": "shadow", "min_samples": 1000},
    "promotion": "automatic",
}


def demo_scenario(*, trials: int = 20, seed: int = 7) -> Scenario:
    """The scenario ``pgmlops demo`` runs: a champion tuned with ``trials`` trials on
    ``HISTORY_DAYS`` days of history; ``SERVED_DAYS`` days served, a fraud ring (:data:`RING`)
    from day ``DRIFT_DAY``, a drift report per ``WINDOW_DAYS`` days, each of which the policy
    (:data:`POLICY`, a realized ROC AUC drop of 0.08) judges; ``SHADOW_DAYS`` days with the
    challenger in shadow, then the maintenance run; a day of the new champion and its report."""
    return Scenario(
        name="demo",
        phases=(
            Phase(f"serving {SERVED_DAYS} days; a fraud ring appears on day {DRIFT_DAY}", SERVED_DAYS,
                  (Segment((DRIFT_DAY - 1) / SERVED_DAYS, 1.0, RING),), expect=("trigger", "shadow")),
            Phase(f"serving {SHADOW_DAYS} days with the challenger in shadow", SHADOW_DAYS, (Segment(0.0, 1.0, RING),),
                  reports="none", maintain=True, expect=("promote",)),
            Phase("serving a day with the new champion", 1, (Segment(0.0, 1.0, RING),), reports="whole"),
        ),
        policy=POLICY, trials=trials, history_days=HISTORY_DAYS, rate_per_hour=RATE_PER_HOUR, window_days=WINDOW_DAYS,
        label_delay=LABEL_DELAY, seed=seed)


@dataclass
class DemoSummary:
    """What the loop did and measured."""

    tenant_id: str
    rows_ingested: int
    dataset_rows: int
    trials: int
    best_value: float | None
    champion: int
    metric_before: float | None = None
    metric_after_drift: float | None = None
    metric_new_champion: float | None = None
    drift_window: int | None = None
    detected_window: int | None = None
    new_champion: int | None = None
    predictions: int = 0
    report_path: str | None = None
    decisions: list[dict[str, Any]] = field(default_factory=list)
    windows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def windows_to_detection(self) -> int | None:
        """Windows from the first drifted one to the one whose report fired (1: at once)."""
        if self.detected_window is None or self.drift_window is None:
            return None
        return self.detected_window - self.drift_window + 1

    @classmethod
    def of(cls, result: ScenarioResult) -> DemoSummary:
        """The demo's summary of a run of :func:`demo_scenario`."""
        drift, shadow, after = result.phases
        summary = cls(result.tenant_id, result.rows_ingested, result.dataset_rows, result.trials, result.best_value,
                      result.champion, predictions=result.predictions, report_path=result.report_path,
                      decisions=result.decisions, windows=drift.windows, seconds=result.seconds)
        summary.metric_before = drift.windows[0]["realized"]
        summary.drift_window = next((w["window"] for w in drift.windows if w["drifted"]), None)
        trigger = next(w for w in drift.windows if w["fired"])
        summary.detected_window, summary.metric_after_drift = trigger["window"], trigger["realized"]
        summary.new_champion = drift.jobs[0]["result"].get("challenger")
        summary.metric_new_champion = after.windows[0]["realized"] if after.windows else None
        return summary


def run_demo(url: str | None = None, *, trials: int = 20, workers: int = 2, seed: int = 7,
             report_path: str | Path | None = None, console: Console | None = None) -> DemoSummary:
    """Run the loop (:func:`demo_scenario` with ``trials`` and ``seed``) against ``url`` (None:
    the embedded server) on ``workers`` worker processes, narrated on ``console``, and return its
    summary. The HTML report goes to ``report_path`` (None: ``$PGMLOPS_DEMO_REPORT``, else
    ``pgmlops-demo-report.html`` in the working directory).

    Raises:
        PgmlopsError: a job (tuning, compilation, retraining) failed or did not finish within ten
            minutes, or the loop did not reach a step it needs (no trigger, no shadow, no
            promotion); and what the steps raise.
    """
    console = console or Console()
    report_path = report_path or os.environ.get("PGMLOPS_DEMO_REPORT") or "pgmlops-demo-report.html"
    result = run_scenario(demo_scenario(trials=trials, seed=seed), url, workers=workers, console=console,
                          report_path=report_path)
    summary = DemoSummary.of(result)
    for table in summary_tables(summary):
        console.print(table)
    console.print(narrative(summary))
    return summary


# -- the summary ---------------------------------------------------------------------------------


def summary_tables(summary: DemoSummary) -> list[Table]:
    """The windows' reports and the retraining decisions, each within 80 columns."""
    windows = Table(title=f"monitoring: a drift report per {WINDOW_DAYS} simulated days")
    for name, justify in (("window", "right"), ("regime", "left"), ("model", "left"), ("ROC AUC", "right"),
                          ("labelled", "right"), ("trigger", "left")):
        windows.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for w in summary.windows:
        windows.add_row(str(w["window"]), "ring" if w["drifted"] else "base", f"{PROJECT}@{w['version']}",
                        _f(w["realized"]), f"{w['labelled']:,}", "fired" if w["fired"] else "-")
    decisions = Table(title="retraining decisions (ml.retraining_history)", show_lines=False)
    decisions.add_column("step", no_wrap=True)
    decisions.add_column("decision", no_wrap=True)
    decisions.add_column("why", overflow="fold", max_width=54)
    for e in summary.decisions:
        decisions.add_row(str(e.get("kind")), str(e.get("decision") or ""), str(e.get("reason") or "")[:300])
    return [windows, decisions]


def narrative(summary: DemoSummary) -> str:
    """The closing paragraph: what happened, in numbers."""
    return (f"[bold]Summary[/bold] ({summary.seconds:.0f} s): {summary.trials} tuning trials made {PROJECT}@"
            f"{summary.champion} the champion; its realized ROC AUC was {_f(summary.metric_before)} before the "
            f"drift and {_f(summary.metric_after_drift)} after it. Monitoring detected the drift in "
            f"window {summary.detected_window} ({summary.windows_to_detection} window(s) of {WINDOW_DAYS} days after it "
            f"began); the retrain "
            f"job trained {PROJECT}@{summary.new_champion}, proved it better offline, shadowed it and the maintenance "
            f"run promoted it, approved by the policy (its automatic promotion, set by the reviewer, stands as "
            f"their approval); the new champion's realized ROC AUC is {_f(summary.metric_new_champion)}. "
            f"{summary.predictions:,} predictions served. Report: {summary.report_path}")
