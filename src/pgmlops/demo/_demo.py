"""`pgmlops demo`: the whole loop (issue 13): a fraud model that notices it has gone stale,
retrains itself, proves the new model better and promotes it, every decision recorded.

Each step goes through the same SQL API every client uses, acting for one tenant:

1. tenant and project; a fortnight of simulated card transactions (``pgmlops.simulation``)
   ingested into three feature groups; a point-in-time training set of their labels;
2. Optuna tuning of a gradient boosted model, the trials fanned out as jobs to worker processes;
   the best configuration registered, compiled to SQL, aliased champion, approved by the
   tenant's reviewer and deployed;
3. traffic served through ``ml.predict`` hour by simulated hour, chargebacks recorded as delayed
   feedback; half way through, a new fraud pattern appears (concept drift);
4. one drift report (``ml.drift_report``) per simulated day, as monitoring would run them: the
   realized ROC AUC falls, the project's retraining policy fires; the retrain job (on the same
   workers) curates the labelled predictions, trains a challenger, proves it better offline
   (DeLong) and deploys it in shadow;
5. more traffic: the shadow is scored beside the champion; the maintenance run
   (``ml.run_maintenance``, which judges retraining shadows) compares them live and promotes the
   challenger (the demo approves the version as the tenant's reviewer, as a person would);
6. a day served by the new champion, its report, and the HTML report (``pgmlops.reporting``).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from psycopg.types.json import Jsonb
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pgmlops import features, migrations, reporting, tenants, training, tuning
from pgmlops.db import call, connect, resolve_url, sql_errors, tenant_context
from pgmlops.errors import PgmlopsError
from pgmlops.jobs import queue
from pgmlops.jobs.worker import WorkerPool
from pgmlops.simulation import Regime, Segment, label_spine, simulate, training_features

__all__ = ["DemoSummary", "run_demo"]

PROJECT = "fraud"
ALGORITHM = "hist_gradient_boosting"
SEARCH_SPACE = {
    "learning_rate": {"type": "float", "low": 0.03, "high": 0.3, "log": True},
    "max_iter": {"type": "int", "low": 20, "high": 80},
    "max_leaf_nodes": {"type": "int", "low": 4, "high": 31},
    "min_samples_leaf": {"type": "int", "low": 5, "high": 40},
}
START = datetime(2026, 1, 1, tzinfo=UTC)
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
METRIC = "roc_auc"
POLICY: dict[str, Any] = {
    "triggers": [{"type": "metric_drop", "metric": METRIC, "source": "realized", "drop": 0.08, "min_samples": 500}],
    "cooldown": "1 day",
    # Retrain with enough boosting to move the rare class's probabilities past one half.
    "recipe": {"algorithm": ALGORITHM, "hyperparams": {"learning_rate": 0.2, "max_iter": 100, "max_leaf_nodes": 31,
                                                       "min_samples_leaf": 10}},
    "data": {"window": "1 day", "reference_sample": 500},
    "evaluation": {"metric": METRIC, "confidence": 0.95},
    "online": {"mode": "shadow", "min_samples": 1000},
    "promotion": "automatic",
}
TIMEOUT = 600.0
Say = Callable[[str], None]


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


def run_demo(url: str | None = None, *, trials: int = 20, workers: int = 2, seed: int = 7,
             report_path: str | Path | None = None, console: Console | None = None) -> DemoSummary:
    """Run the loop against ``url`` (None: the embedded server) and return its summary. The HTML
    report goes to ``report_path`` (None: ``$PGMLOPS_DEMO_REPORT``, else
    ``pgmlops-demo-report.html`` in the working directory).

    Raises:
        PgmlopsError: a job (tuning, compilation, retraining) failed or did not finish within ten
            minutes, or the loop did not reach a step it needs (no trigger, no shadow, no
            promotion); and what the steps raise.
    """
    console = console or Console()
    report_path = report_path or os.environ.get("PGMLOPS_DEMO_REPORT") or "pgmlops-demo-report.html"
    started = time.monotonic()
    logging.getLogger("alembic").setLevel(logging.WARNING)

    def say(text: str) -> None:
        console.print(f"[green]✓[/green] {text}")

    with console.status("starting PostgreSQL"):
        url = resolve_url(url)
    say(f"PostgreSQL at {url.split('@')[-1]}")
    with console.status("migrating"):
        migrations.upgrade(url)
    say(f"schema at revision {migrations.current(url)}")

    with connect(url, autocommit=True) as conn, WorkerPool(
            url, ["tune_trial", "tune", "train", "compile", "retrain"], workers, poll_interval=0.3,
            log_level=logging.WARNING) as pool:
        caps = call(conn, "ml.capabilities()")
        say("capabilities: " + ", ".join(f"{k}={v}" for k, v in sorted(caps.items())))
        reviewer = str(uuid.uuid4())
        tenant = str(tenants.create_tenant(conn, f"demo {time.strftime('%Y-%m-%d %H:%M:%S')}", reviewer))
        say(f"tenant {tenant} (its owner {reviewer[:8]}… reviews model versions)")

        # 1. Features and a point-in-time training set.
        with console.status("simulating 14 days of card transactions"):
            history = simulate(conn, PROJECT, "none", start=START, days=HISTORY_DAYS, rate_per_hour=RATE_PER_HOUR,
                               seed=seed, tenant=tenant, label_delay=LABEL_DELAY)
        ingested = sum(history.ingested.values())
        say(f"features ingested: {len(history.traffic.transactions):,} transactions of {HISTORY_DAYS} days, "
            f"{ingested:,} rows in 3 feature groups")
        with tenant_context(conn, tenant):
            dataset = features.create_training_set(conn, "fraud_history", label_spine(history.traffic),
                                                   training_features(PROJECT), label="is_fraud")
            info = features.dataset_info(conn, dataset)
        say(f"training set {info.name} v{info.version}: {info.row_count:,} rows joined point in time")

        # 2. Tuning on the workers, the champion registered, approved and deployed.
        with tenant_context(conn, tenant):
            training.create_project(conn, PROJECT, "classification", "is_fraud", "Is the card transaction a fraud?")
            tune_job = tuning.tune(conn, PROJECT, info.id, ALGORITHM, SEARCH_SPACE, trials,
                                   {"metric": METRIC, "direction": "maximize", "pruner": "median", "cv_folds": None})
            study_id = tuning.study_id_of(conn, tune_job)
        registered = _tune(conn, tenant, pool, console, study_id, tune_job, trials, workers)
        version = int(registered["version"])
        best = registered.get("best_value")
        _wait_job(conn, tenant, pool, registered.get("compile_job_id"), "the champion's compilation")
        with tenant_context(conn, tenant):
            conn.execute("select ml.set_alias(%s, 'champion', %s)", (PROJECT, version))
        with tenant_context(conn, tenant, user=reviewer):
            conn.execute("select ml.approve(%s, %s, 'approved')", (PROJECT, version))
        with tenant_context(conn, tenant):
            conn.execute("select ml.deploy(%s, 'single', %s)",
                         (PROJECT, Jsonb([{"arm": "a", "model": PROJECT, "version": version}])))
            scoring = call(conn, "ml.model_version(%s, %s)", (PROJECT, version)).get("scoring_path")
        summary = DemoSummary(tenant, ingested, info.row_count, trials, best, version)
        say(f"champion {PROJECT}@{version} (ROC AUC {best:.3f} held out, scored {scoring}) approved by the "
            "reviewer and deployed")

        # 3. Traffic, the drift a third of the way in, and 4. a drift report per window.
        served = _serve(conn, tenant, console, f"serving {SERVED_DAYS} days; a fraud ring appears on day {DRIFT_DAY}",
                        [Segment((DRIFT_DAY - 1) / SERVED_DAYS, 1.0, RING)], SERVED_DAYS, seed + 1,
                        START + timedelta(days=HISTORY_DAYS))
        summary.predictions += served.predictions
        summary.drift_window = (DRIFT_DAY - 1) // WINDOW_DAYS + 1
        marks = list(served.day_marks or [])
        bounds = [*marks[::WINDOW_DAYS], _now(conn)]
        trigger: dict[str, Any] | None = None
        for number, (begin, end) in enumerate(zip(bounds[:-1], bounds[1:], strict=True), start=1):
            window = _report(conn, tenant, begin, end)
            window["window"] = number
            window["drifted"] = number >= summary.drift_window
            summary.windows.append(window)
            if number == 1:
                summary.metric_before = window["realized"]
                # The first window after deployment is the trigger's baseline; a retraining
                # learns from the latest window (a window of simulated days is seconds of wall
                # clock here, and the predictions' log is on the wall clock).
                latest = f"{(bounds[2] - bounds[1]).total_seconds():.3f} seconds"
                policy = {**POLICY, "triggers": [{**POLICY["triggers"][0], "baseline": window["realized"]}],
                          "data": {**POLICY["data"], "window": latest}}
                # Set by the reviewer: its automatic promotion stands as their approval.
                with tenant_context(conn, tenant, user=reviewer):
                    call(conn, "ml.set_retraining_policy(%s, %s)", (PROJECT, Jsonb(policy)))
            if trigger is None and window["fired"]:
                trigger = window
                summary.detected_window = number
        if trigger is None:
            raise PgmlopsError("demo: the drift reports did not fire the retraining policy")
        summary.metric_after_drift = trigger["realized"]
        say(f"monitoring: {len(summary.windows)} drift reports of {WINDOW_DAYS} days; the realized ROC AUC fell from "
            f"{_f(summary.metric_before)} to {_f(trigger['realized'])} in window {trigger['window']}: retraining triggered")

        # The retrain job: curate, train, evaluate offline, shadow.
        with console.status("retraining: curating, training a challenger, testing it against the champion"):
            result = _wait_job(conn, tenant, pool, trigger["job_id"], "the retrain job")
        if (result or {}).get("decision") != "shadow deployed":
            raise PgmlopsError(f"demo: the retrain job decided {(result or {}).get('decision')!r}: {result}")
        with tenant_context(conn, tenant):
            challenger = int(call(conn, "ml.model_version(%s, null, 'challenger')", (PROJECT,))["version"])
        say(f"challenger {PROJECT}@{challenger} proven better offline and deployed in shadow")

        # 5. The shadow judged live; the reviewer approves the challenger as a person would.
        with tenant_context(conn, tenant, user=reviewer):
            conn.execute("select ml.approve(%s, %s, 'approved')", (PROJECT, challenger))
        shadow = _serve(conn, tenant, console, f"serving {SHADOW_DAYS} days with the challenger in shadow",
                        [Segment(0.0, 1.0, RING)], SHADOW_DAYS, seed + 2, START + timedelta(days=HISTORY_DAYS + SERVED_DAYS))
        summary.predictions += shadow.predictions
        promoted = _maintain(conn, tenant)
        summary.new_champion = challenger
        say(f"maintenance: {promoted}")

        # 6. A day of the new champion, its report, the HTML report.
        after = _serve(conn, tenant, console, "serving a day with the new champion", [Segment(0.0, 1.0, RING)], 1,
                       seed + 3, START + timedelta(days=HISTORY_DAYS + SERVED_DAYS + SHADOW_DAYS))
        summary.predictions += after.predictions
        last = _report(conn, tenant, (after.day_marks or [_now(conn)])[0], _now(conn))
        summary.metric_new_champion = last["realized"]
        with tenant_context(conn, tenant):
            summary.decisions = list(reversed(call(conn, "ml.retraining_history(%s)", (PROJECT,)) or []))
        with console.status("writing the HTML report"):
            path = reporting.write_report(conn, PROJECT, report_path, tenant=tenant, reports=20)
        summary.report_path = str(path)
        say(f"HTML report written to {path}")

    summary.seconds = time.monotonic() - started
    for table in summary_tables(summary):
        console.print(table)
    console.print(narrative(summary))
    return summary


# -- steps ---------------------------------------------------------------------------------------


def _now(conn: Any) -> datetime:
    row = conn.execute("select clock_timestamp()").fetchone()
    return row[0] if row is not None else datetime.now(UTC)


def _tune(conn: Any, tenant: str, pool: WorkerPool, console: Console, study_id: Any, tune_job: int,
          trials: int, workers: int) -> dict[str, Any]:
    """Follow the study until its tune job ends; the job's result (the registered version)."""
    began = time.monotonic()
    with Progress(TextColumn(f"[bold]{trials} trials on {workers} workers"),
                  BarColumn(), MofNCompleteColumn(), TextColumn("best {task.fields[best]}"), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("trials", total=trials, best="-")
        while True:
            with tenant_context(conn, tenant):
                state = tuning.study_progress(conn, study_id)
                job = queue.result(conn, tune_job)
            done = int(state.get("complete", 0)) + int(state.get("pruned", 0))
            best = state.get("best_value")
            progress.update(task, completed=done, best=f"{best:.4f}" if isinstance(best, int | float) else "-")
            if job["status"] in ("succeeded", "failed", "dead", "cancelled"):
                break
            if time.monotonic() - began > TIMEOUT:
                raise PgmlopsError("demo: tuning did not finish within ten minutes")
            pool.check()
            time.sleep(0.3)
    if job["status"] != "succeeded":
        raise PgmlopsError(f"demo: tuning ended {job['status']}: {(job.get('error') or '').partition(chr(10))[0]}")
    result = dict(job["result"] or {})
    with tenant_context(conn, tenant), sql_errors():
        states = tuning.study_progress(conn, study_id)
        leaderboard = conn.execute(
            "select number, state, value, params, extract(epoch from duration) from ml.tuning_trials "
            "where study_id = %s order by value desc nulls last, number limit 5", (study_id,)).fetchall()
        n_trials = len(tuning.trials(conn, study_id))
    console.print(f"[green]✓[/green] tuning {ALGORITHM}: {int(states.get('complete', 0))} trials complete, "
                  f"{int(states.get('pruned', 0))} pruned ({n_trials} trials on {workers} workers) in "
                  f"{time.monotonic() - began:.0f} s")
    console.print(_leaderboard_table(leaderboard, n_trials))
    return result


def _wait_job(conn: Any, tenant: str, pool: WorkerPool, job_id: Any, what: str) -> dict[str, Any] | None:
    """Wait for job ``job_id`` (None: nothing to wait for) to succeed; its result."""
    if job_id is None:
        return None
    began = time.monotonic()
    while True:
        with tenant_context(conn, tenant):
            job = queue.result(conn, int(job_id))
        if job["status"] == "succeeded":
            return dict(job["result"] or {})
        if job["status"] in ("failed", "dead", "cancelled"):
            raise PgmlopsError(f"demo: {what} ended {job['status']}: {(job.get('error') or '').partition(chr(10))[0]}")
        if time.monotonic() - began > TIMEOUT:
            raise PgmlopsError(f"demo: {what} did not finish within ten minutes")
        pool.check()
        time.sleep(0.2)


def _serve(conn: Any, tenant: str, console: Console, title: str, segments: list[Segment], days: int, seed: int,
           start: datetime) -> Any:
    """Serve ``days`` simulated days through ml.predict with their delayed feedback."""
    with Progress(TextColumn(f"[bold]{title}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("serve", total=None)

        def step(stage: str, done: int, total: int) -> None:
            if stage == "serve":
                progress.update(task, completed=done, total=total)

        result = simulate(conn, PROJECT, segments, start=start, days=days, rate_per_hour=RATE_PER_HOUR, seed=seed,
                          tenant=tenant, serve=True, label_delay=LABEL_DELAY, progress=step)
    console.print(f"[green]✓[/green] {title}: {result.predictions:,} predictions through ml.predict, "
                  f"{result.feedback_recorded:,} chargebacks and maturities as feedback")
    return result


def _report(conn: Any, tenant: str, begin: datetime, end: datetime) -> dict[str, Any]:
    """One drift report over [begin, end): its realized metric and whether it fired a trigger."""
    with tenant_context(conn, tenant), sql_errors():
        report_id = call(conn, "ml.drift_report(%s, %s, %s)", (PROJECT, begin, end))
        values = conn.execute("select avg(value), sum(sample_count) from ml.performance_results where report_id = %s"
                              " and metric = %s and not estimated and value is not null", (report_id, METRIC)).fetchone()
        trig = conn.execute("select id::text, job_id, reason from ml.retraining_events where report_id = %s"
                            " and kind = 'trigger'", (report_id,)).fetchone()
        drift = conn.execute("select dataset_drift, version from ml.drift_reports r join ml.model_versions v"
                             " on v.id = r.model_version_id where r.id = %s", (report_id,)).fetchone()
    return {"report_id": str(report_id), "realized": None if values is None or values[0] is None else float(values[0]),
            "labelled": int(values[1] or 0) if values else 0, "fired": trig is not None,
            "job_id": trig[1] if trig else None, "reason": trig[2] if trig else None,
            "dataset_drift": bool(drift[0]) if drift else None, "version": drift[1] if drift else None}


def _maintain(conn: Any, tenant: str) -> str:
    """One maintenance run (retried while another holds it); the promote row's reason.

    Raises:
        PgmlopsError: the shadow was not promoted (the verdict's reason).
    """
    began = time.monotonic()
    out: dict[str, Any] = {"skipped": True}
    while "skipped" in out and time.monotonic() - began < 60:
        out = dict(call(conn, "ml.run_maintenance()") or {})
        if "skipped" in out:
            time.sleep(0.5)
    with tenant_context(conn, tenant):
        project_id = str(conn.execute("select id from ml.projects where name = %s", (PROJECT,)).fetchone()[0])
    verdicts = [dict((out.get("retraining") or {}).get(project_id, {}).get("shadow") or {})]
    with tenant_context(conn, tenant):
        row = conn.execute("select e.kind, e.reason from ml.retraining_events e join ml.projects p on p.id = e.project_id"
                           " where p.name = %s order by e.at desc limit 1", (PROJECT,)).fetchone()
    if row is None or row[0] != "promote":
        reason = verdicts[0].get("reason") or f"no verdict for project {project_id}: {sorted(out)}"
        raise PgmlopsError(f"demo: the maintenance run did not promote the shadow: {reason}")
    return str(row[1])


# The leaderboard's titles for the searched hyperparameters, short enough for an 80-column
# terminal; the caption spells them out.
_PARAM_TITLES = {"learning_rate": "rate", "max_iter": "iters", "max_leaf_nodes": "leaves", "min_samples_leaf": "min leaf"}


def _leaderboard_table(rows: list[Any], n_trials: int) -> Table:
    """The best trials, one row each: (number, state, value, params, seconds)."""
    titles = [f"{short} = {name}" for name, short in _PARAM_TITLES.items()] + ["secs = seconds the trial took"]
    table = Table(title=f"leaderboard of {ALGORITHM}: top {len(rows)} of {n_trials} trials by ROC AUC on the held-out split",
                  caption=", ".join(titles[:3]) + ",\n" + ", ".join(titles[3:]), caption_justify="left")
    table.add_column("trial", justify="right", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("ROC AUC", justify="right", no_wrap=True)
    for short in _PARAM_TITLES.values():
        table.add_column(short, justify="right", no_wrap=True)
    table.add_column("secs", justify="right", no_wrap=True)
    for number, trial_state, value, params, seconds in rows:
        p = params or {}
        table.add_row(str(number), str(trial_state).lower(), f"{value:.4f}" if value is not None else "-",
                      f"{p['learning_rate']:.3f}" if "learning_rate" in p else "", str(p.get("max_iter", "")),
                      str(p.get("max_leaf_nodes", "")), str(p.get("min_samples_leaf", "")), f"{float(seconds or 0):.1f}")
    return table


def _scoring_path(version: dict[str, Any]) -> str:
    """How the version is scored: its compiled function (with its size), or why workers score it."""
    record = version.get("scoring") or {}
    if version.get("scoring_path") == "compiled":
        trees = f", {record['trees']} trees" if record.get("trees") else ""
        return f"compiled: {record.get('function')} ({record.get('sql_bytes', 0):,} bytes of SQL{trees})"
    return f"workers: {record.get('reason', 'not compiled')}"



# -- the summary ---------------------------------------------------------------------------------


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


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
            f"run promoted it; the new champion's realized ROC AUC is {_f(summary.metric_new_champion)}. "
            f"{summary.predictions:,} predictions served. Report: {summary.report_path}")
