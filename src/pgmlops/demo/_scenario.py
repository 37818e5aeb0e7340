"""The loop of ``pgmlops demo``, driven by a scenario description (issue 13, "Tests").

A :class:`Scenario` says what the loop serves and how it is judged: the history the champion is
trained on, whether the champion is tuned or trained with a fixed configuration, the retraining
policy, and a sequence of :class:`Phase` s of served traffic (the regimes served, the drift
reports to run, whether the maintenance run judges the project afterwards). :func:`run_scenario`
runs it for a new tenant through the same SQL API every client uses and returns what happened
in each phase (:class:`ScenarioResult`); ``pgmlops demo`` (:func:`pgmlops.demo.run_demo`) is the
scenario :func:`pgmlops.demo.demo_scenario` narrated, and the tests run variants of it quietly.

The order of a run:

1. a tenant whose owner (the *reviewer*) signs in to approve versions; ``history_days`` of
   simulated traffic ingested into the feature store and a point-in-time training set of their
   labels;
2. the champion: ``trials`` Optuna trials on the workers (the best registered), or, with
   ``trials`` 0, one ``train`` job of ``hyperparams``; compiled, aliased champion, approved by the
   reviewer, deployed alone;
3. each phase: its days served through ``ml.predict`` (delayed feedback as it falls due); its
   drift reports (one per ``window_days`` simulated days, or one over the whole phase); after
   the run's first report the policy is set by the reviewer, signed in (a metric-drop trigger
   without a ``baseline`` gets that first window's realized metric; a policy without
   ``data.window`` learns from the wall-clock length of a window, the prediction log's clock);
   each retrain job a report enqueued is waited for; then, if asked, one maintenance run
   (``ml.run_maintenance``: shadows judged, promoted champions watched for rollback).

Nobody approves a retrained challenger: a policy with ``promotion: automatic`` set by a member
stands as that member's approval of the versions its cycles prove better (recorded when one is
promoted), so the maintenance run promotes a shadow that wins its live comparison by itself.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from psycopg.types.json import Jsonb
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pgmlops import features, migrations, reporting, tenants, training, tuning
from pgmlops.db import call, connect, resolve_url, sql_errors, tenant_context
from pgmlops.errors import InvalidInput, PgmlopsError
from pgmlops.jobs import queue
from pgmlops.jobs.worker import WorkerPool
from pgmlops.simulation import Segment, label_spine, simulate, training_features

__all__ = ["Phase", "PhaseResult", "Scenario", "ScenarioResult", "run_scenario"]

PROJECT = "fraud"
ALGORITHM = "hist_gradient_boosting"
METRIC = "roc_auc"
SEARCH_SPACE = {
    "learning_rate": {"type": "float", "low": 0.03, "high": 0.3, "log": True},
    "max_iter": {"type": "int", "low": 20, "high": 80},
    "max_leaf_nodes": {"type": "int", "low": 4, "high": 31},
    "min_samples_leaf": {"type": "int", "low": 5, "high": 40},
}
BASE_REGIME = "A"
"""The name of the simulation's base regime (:class:`pgmlops.simulation.Regime`'s default)."""
JOB_KINDS = ("tune_trial", "tune", "train", "compile", "retrain")
"""The job kinds a scenario's workers must take."""
TIMEOUT = 600.0
Say = Callable[[str], None]


@dataclass(frozen=True)
class Phase:
    """A stretch of served traffic.

    ``days`` simulated days served under ``segments`` (fractions of the phase, as
    :func:`pgmlops.simulation.generate` takes them; none: the base regime) and narrated as
    ``title``. ``reports``: ``windows`` runs a drift report per ``Scenario.window_days`` simulated
    days (the last window ends when the phase does), ``whole`` one report over the phase,
    ``none`` none. ``maintain`` runs one maintenance run after the phase (and its retrain jobs).
    ``expect`` names what the phase must reach, else :func:`run_scenario` raises
    :class:`~pgmlops.errors.PgmlopsError`: ``trigger`` (a report fired the policy), ``shadow``
    (the first retrain job deployed its challenger in shadow), ``promote`` (the maintenance run
    promoted it); a variant leaves it empty and asserts on the result instead.
    """

    title: str
    days: int
    segments: tuple[Segment, ...] = ()
    reports: Literal["windows", "whole", "none"] = "windows"
    maintain: bool = False
    expect: tuple[Literal["trigger", "shadow", "promote"], ...] = ()


@dataclass(frozen=True)
class Scenario:
    """A run of the loop (see the module's docstring for its order).

    ``policy`` is the project's retraining policy (``ml.set_retraining_policy``; two fields filled
    when absent, see the module's docstring). ``trials`` above 0 tunes the champion over
    :data:`SEARCH_SPACE` with that many trials; 0 trains ``hyperparams`` once. Traffic arrives at
    ``rate_per_hour`` transactions an hour, labels after ``label_delay`` times the simulation's
    delays; ``seed`` seeds the history (phase k is served with ``seed + k``); the history starts at
    ``start`` and each phase follows the one before it on the simulated calendar.
    """

    name: str
    phases: tuple[Phase, ...]
    policy: Mapping[str, Any]
    trials: int = 0
    hyperparams: Mapping[str, Any] = field(default_factory=dict)
    history_days: int = 14
    rate_per_hour: float = 120.0
    window_days: int = 2
    label_delay: float = 0.005
    seed: int = 7
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)

    def __post_init__(self) -> None:
        if not self.phases:
            raise InvalidInput("phases: a scenario needs at least one phase", "22023")
        if self.trials < 0 or self.trials == 1:
            raise InvalidInput(f"trials: must be 0 (a fixed configuration) or at least 2, got {self.trials}", "22023")
        if self.window_days < 1:
            raise InvalidInput(f"window_days: must be at least 1, got {self.window_days}", "22023")
        for i, phase in enumerate(self.phases):
            if phase.days < 1:
                raise InvalidInput(f"phases[{i}].days: must be at least 1, got {phase.days}", "22023")
            if phase.reports not in ("windows", "whole", "none"):
                raise InvalidInput(f"phases[{i}].reports: must be windows, whole or none, got {phase.reports!r}", "22023")


@dataclass
class PhaseResult:
    """What one phase served and caused.

    ``windows``: one dict per drift report (``window`` (numbered across the run), ``begin``,
    ``end``, ``report_id``, ``version`` (the model version the report judged), ``regime`` (the
    regime most of the window's transactions came from), ``drifted`` (not the base regime),
    ``realized`` (the mean realized ROC AUC of its buckets), ``labelled``, ``dataset_drift``,
    ``drift_share``, ``fired``, ``kind`` (``trigger``, ``skip`` or None), ``job_id``, ``reason``,
    ``regime_match`` (the report's ``summary.regime``: ``matched`` and ``match``) and ``recall``
    (the report's ``recall`` row, or None)). ``jobs``: ``{job_id, result}`` of each retrain job
    the phase's reports enqueued, in order. ``maintenance``: the maintenance run's entry for the
    project (``{project, shadow, rollback}``; ``{}`` when nothing was judged; None when not run).
    ``events``: the ``ml.retraining_history`` rows the phase wrote, oldest first. ``champion``
    and ``deployment``: the version aliased champion and the active deployment's arms
    (``{version, role}``) when the phase ended.
    """

    phase: Phase
    predictions: int = 0
    feedback: int = 0
    windows: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    maintenance: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    champion: int | None = None
    deployment: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def kinds(self) -> list[str]:
        """The kinds of the phase's retraining events, oldest first."""
        return [str(e["kind"]) for e in self.events]


@dataclass
class ScenarioResult:
    """What a run did: the tenant and its ``reviewer`` (the owner, a signed-in user), the rows
    ingested, the training set's rows, the trials, the champion's held-out ROC AUC
    (``best_value``) and version, each phase's :class:`PhaseResult`, the policy as stored, every
    retraining decision (``ml.retraining_history``, oldest first) and the HTML report's path."""

    scenario: Scenario
    tenant_id: str
    reviewer: str
    rows_ingested: int = 0
    dataset_rows: int = 0
    trials: int = 0
    best_value: float | None = None
    champion: int = 0
    phases: list[PhaseResult] = field(default_factory=list)
    policy: dict[str, Any] = field(default_factory=dict)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    report_path: str | None = None
    seconds: float = 0.0

    @property
    def predictions(self) -> int:
        """The predictions served over every phase."""
        return sum(p.predictions for p in self.phases)

    @property
    def windows(self) -> list[dict[str, Any]]:
        """Every phase's drift reports, in order."""
        return [w for p in self.phases for w in p.windows]


def run_scenario(scenario: Scenario, url: str | None = None, *, pool: WorkerPool | None = None, workers: int = 2,
                 console: Console | None = None, report_path: str | Path | None = None) -> ScenarioResult:
    """Run ``scenario`` against ``url`` (None: the embedded server; migrated first) for a new
    tenant and return what happened. The retrain, train, tune and compile jobs run on ``pool``
    (None: ``workers`` worker processes started for the run and stopped after it; a pool given
    must take :data:`JOB_KINDS`). ``console`` narrates the run (None: quiet). With
    ``report_path`` the project's HTML report is written there at the end.

    Raises:
        PgmlopsError: a job (tuning, training, compilation, retraining) failed or did not finish
            within ten minutes; a phase did not reach what its ``expect`` names; and what the
            steps raise (a bad policy: InvalidInput naming the field).
    """
    console = console or Console(quiet=True)
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
    workers_cm: AbstractContextManager[WorkerPool] = nullcontext(pool) if pool is not None else WorkerPool(
        url, list(JOB_KINDS), workers, poll_interval=0.3, log_level=logging.WARNING)
    with connect(url, autocommit=True) as conn, workers_cm as running:
        caps = call(conn, "ml.capabilities()")
        say("capabilities: " + ", ".join(f"{k}={v}" for k, v in sorted(caps.items())))
        result = _Run(conn, running, console, say, scenario, workers).run(report_path)
    result.seconds = time.monotonic() - started
    return result


# -- the run -------------------------------------------------------------------------------------


class _Run:
    """One run of a scenario on one connection (autocommit) and one worker pool."""

    def __init__(self, conn: Any, pool: WorkerPool, console: Console, say: Say, scenario: Scenario,
                 workers: int) -> None:
        self.conn, self.pool, self.console, self.say, self.s = conn, pool, console, say, scenario
        self.workers = workers
        self.tenant = ""
        self.reviewer = str(uuid.uuid4())
        self.dataset_id: Any = None  # the history's training set
        self.number = 0           # drift reports so far, across phases
        self.policy_set = False
        self.seen: set[str] = set()  # ids of the retraining events already returned

    def run(self, report_path: str | Path | None) -> ScenarioResult:
        s, conn = self.s, self.conn
        self.tenant = str(tenants.create_tenant(conn, f"{s.name} {time.strftime('%Y-%m-%d %H:%M:%S')}", self.reviewer))
        self.say(f"tenant {self.tenant} (its owner {self.reviewer[:8]}… reviews model versions)")
        result = ScenarioResult(s, self.tenant, self.reviewer, trials=s.trials)
        self._history(result)
        self._champion(result)
        at = s.start + timedelta(days=s.history_days)
        for k, phase in enumerate(s.phases, start=1):
            result.phases.append(self._phase(phase, k, at, result))
            at += timedelta(days=phase.days)
        with tenant_context(conn, self.tenant):
            result.decisions = list(reversed(call(conn, "ml.retraining_history(%s)", (PROJECT,)) or []))
            result.policy = dict(call(conn, "ml.retraining_policy(%s)", (PROJECT,)) or {})
        if report_path is not None:
            with self.console.status("writing the HTML report"):
                path = reporting.write_report(conn, PROJECT, report_path, tenant=self.tenant, reports=20)
            result.report_path = str(path)
            self.say(f"HTML report written to {path}")
        return result

    # 1. Features and a point-in-time training set.
    def _history(self, result: ScenarioResult) -> None:
        s, conn = self.s, self.conn
        with self.console.status(f"simulating {s.history_days} days of card transactions"):
            history = simulate(conn, PROJECT, "none", start=s.start, days=s.history_days, rate_per_hour=s.rate_per_hour,
                               seed=s.seed, tenant=self.tenant, label_delay=s.label_delay)
        result.rows_ingested = sum(history.ingested.values())
        self.say(f"features ingested: {len(history.traffic.transactions):,} transactions of {s.history_days} days, "
                 f"{result.rows_ingested:,} rows in 3 feature groups")
        with tenant_context(conn, self.tenant):
            dataset = features.create_training_set(conn, "fraud_history", label_spine(history.traffic),
                                                   training_features(PROJECT), label="is_fraud")
            info = features.dataset_info(conn, dataset)
        self.dataset_id = info.id
        result.dataset_rows = info.row_count
        self.say(f"training set {info.name} v{info.version}: {info.row_count:,} rows joined point in time")

    # 2. The champion: tuned or trained on the workers, registered, approved and deployed.
    def _champion(self, result: ScenarioResult) -> None:
        s, conn, tenant = self.s, self.conn, self.tenant
        with tenant_context(conn, tenant):
            training.create_project(conn, PROJECT, "classification", "is_fraud", "Is the card transaction a fraud?")
        if s.trials:
            with tenant_context(conn, tenant):
                tune_job = tuning.tune(conn, PROJECT, self.dataset_id, ALGORITHM, SEARCH_SPACE, s.trials,
                                       {"metric": METRIC, "direction": "maximize", "pruner": "median", "cv_folds": None})
                study_id = tuning.study_id_of(conn, tune_job)
            registered = _tune(conn, tenant, self.pool, self.console, study_id, tune_job, s.trials, self.workers)
            best = registered.get("best_value")
        else:
            began = time.monotonic()
            with tenant_context(conn, tenant):
                train_job = training.train(conn, PROJECT, self.dataset_id, ALGORITHM, dict(s.hyperparams))
            with self.console.status(f"training {ALGORITHM} with a fixed configuration"):
                registered = _wait_job(conn, tenant, self.pool, train_job, "the champion's training") or {}
            best = (registered.get("metrics") or {}).get(METRIC)
            self.say(f"trained {ALGORITHM} (a fixed configuration) in {time.monotonic() - began:.0f} s")
        version = int(registered["version"])
        _wait_job(conn, tenant, self.pool, registered.get("compile_job_id"), "the champion's compilation")
        with tenant_context(conn, tenant):
            conn.execute("select ml.set_alias(%s, 'champion', %s)", (PROJECT, version))
        with tenant_context(conn, tenant, user=self.reviewer):
            conn.execute("select ml.approve(%s, %s, 'approved')", (PROJECT, version))
        with tenant_context(conn, tenant):
            conn.execute("select ml.deploy(%s, 'single', %s)",
                         (PROJECT, Jsonb([{"arm": "a", "model": PROJECT, "version": version}])))
            scoring = call(conn, "ml.model_version(%s, %s)", (PROJECT, version)).get("scoring_path")
        result.champion, result.best_value = version, best
        self.say(f"champion {PROJECT}@{version} (ROC AUC {_f(best)} held out, scored {scoring}) approved by the "
                 "reviewer and deployed")

    # 3. A phase: traffic, its reports, the jobs they enqueued, the maintenance run.
    def _phase(self, phase: Phase, k: int, start: datetime, result: ScenarioResult) -> PhaseResult:
        s, conn, tenant = self.s, self.conn, self.tenant
        began = time.monotonic()
        out = PhaseResult(phase)
        served = _serve(conn, tenant, self.console, phase.title, list(phase.segments), phase.days, s.seed + k, start,
                        s.rate_per_hour, s.label_delay)
        out.predictions, out.feedback = served.predictions, served.feedback_recorded
        if phase.reports != "none":
            marks = list(served.day_marks or [])
            now = _now(conn)
            bounds = [*marks[::s.window_days], now] if phase.reports == "windows" else [marks[0] if marks else now, now]
            regimes = served.traffic.transactions["regime"].to_numpy()
            served_at = served.served["served_at"] if served.served is not None else None
            for begin, end in zip(bounds[:-1], bounds[1:], strict=True):
                self.number += 1
                window = _report(conn, tenant, begin, end)
                window["window"] = self.number
                window["regime"] = _majority(regimes, served_at, begin, end)
                window["drifted"] = window["regime"] != BASE_REGIME
                out.windows.append(window)
                if not self.policy_set:
                    # The first window after deployment is the trigger's baseline; a retraining
                    # learns from the latest window (a window of simulated days is seconds of wall
                    # clock here, and the predictions' log is on the wall clock).
                    span = bounds[2] - bounds[1] if len(bounds) > 2 else bounds[1] - bounds[0]
                    self._set_policy(window["realized"], span)
            if phase.reports == "windows":
                self._narrate_monitoring(out, result)
        if "trigger" in phase.expect and not any(w["fired"] for w in out.windows):
            raise PgmlopsError(f"{s.name}: the drift reports did not fire the retraining policy")
        for window in out.windows:
            if window["fired"] and window["job_id"] is not None:
                out.jobs.append(self._retrain(window["job_id"], phase, first=not out.jobs))
        if phase.maintain:
            if not self.policy_set:
                self._set_policy(None, None)
            out.maintenance = self._maintain(phase)
        out.events = self._new_events()
        with tenant_context(conn, tenant):
            # (Filtered by tenant: a service caller reads every tenant's rows.)
            row = conn.execute("select v.version from ml.model_aliases a join ml.model_versions v on v.id = a.model_version_id"
                               " join ml.models m on m.id = a.model_id where m.tenant_id = %s and m.name = %s"
                               " and a.alias = 'champion'", (tenant, PROJECT)).fetchone()
            out.champion = int(row[0]) if row else None
            deployment = call(conn, "ml.deployment(%s)", (PROJECT,)) or {}
        out.deployment = [{"version": a.get("version"), "role": a.get("role", "live")} for a in deployment.get("arms", [])]
        out.seconds = time.monotonic() - began
        return out

    def _set_policy(self, baseline: float | None, span: timedelta | None) -> None:
        """The scenario's policy, set by the reviewer (see the module's docstring)."""
        policy = dict(self.s.policy)
        triggers = []
        for trigger in policy.get("triggers") or []:
            t = dict(trigger)
            if t.get("type") == "metric_drop" and "baseline" not in t and baseline is not None:
                t["baseline"] = baseline
            triggers.append(t)
        if triggers:
            policy["triggers"] = triggers
        data = dict(policy.get("data") or {})
        if "window" not in data and span is not None:
            data["window"] = f"{span.total_seconds():.3f} seconds"
        if data:
            policy["data"] = data
        # Set by a signed-in owner: with promotion automatic the policy stands as their approval.
        with tenant_context(self.conn, self.tenant, user=self.reviewer):
            call(self.conn, "ml.set_retraining_policy(%s, %s)", (PROJECT, Jsonb(policy)))
        self.policy_set = True

    def _narrate_monitoring(self, out: PhaseResult, result: ScenarioResult) -> None:
        windows, w = out.windows, self.s.window_days
        fired = next((x for x in windows if x["fired"]), None)
        first = result.windows[0]["realized"] if result.windows else windows[0]["realized"]
        if fired is None:
            self.say(f"monitoring: {len(windows)} drift reports of {w} days; no retraining triggered")
        elif "metric_drop" in str(fired.get("trigger_types")):
            self.say(f"monitoring: {len(windows)} drift reports of {w} days; the realized ROC AUC fell from "
                     f"{_f(first)} to {_f(fired['realized'])} in window {fired['window']}: retraining triggered")
        else:
            self.say(f"monitoring: {len(windows)} drift reports of {w} days; window {fired['window']} fired the "
                     f"policy ({fired['reason']}): retraining triggered")

    def _retrain(self, job_id: int, phase: Phase, first: bool) -> dict[str, Any]:
        """Wait for a retrain job. No one approves its challenger: the policy's automatic
        promotion, set by the reviewer, stands as their approval when it is promoted."""
        conn, tenant = self.conn, self.tenant
        with self.console.status("retraining: curating, training a challenger, testing it against the champion"):
            result = _wait_job(conn, tenant, self.pool, job_id, "the retrain job") or {}
        decision = result.get("decision")
        if first and "shadow" in phase.expect and decision != "shadow deployed":
            raise PgmlopsError(f"{self.s.name}: the retrain job decided {decision!r}: {result}")
        challenger = result.get("challenger")
        if decision == "shadow deployed":
            self.say(f"challenger {PROJECT}@{challenger} proven better offline and deployed in shadow")
        elif decision == "rejected":
            self.say(f"challenger {PROJECT}@{challenger} not proven better: rejected, the champion stays")
        else:
            self.say(f"retraining: {decision}: {result.get('reason')}")
        return {"job_id": job_id, "result": result}

    def _maintain(self, phase: Phase) -> dict[str, Any]:
        """One maintenance run (retried while another holds it); the project's entry."""
        conn = self.conn
        began = time.monotonic()
        before = _latest_event(conn, self.tenant)
        out: dict[str, Any] = {"skipped": True}
        while "skipped" in out and time.monotonic() - began < 60:
            out = dict(call(conn, "ml.run_maintenance()") or {})
            if "skipped" in out:
                time.sleep(0.5)
        with tenant_context(conn, self.tenant):
            project_id = str(conn.execute("select id from ml.projects where tenant_id = %s and name = %s",
                                          (self.tenant, PROJECT)).fetchone()[0])
        entry = dict((out.get("retraining") or {}).get(project_id) or {})
        latest = _latest_event(conn, self.tenant)
        written = latest if latest is not None and (before is None or latest[0] != before[0]) else None
        if "promote" in phase.expect and (written is None or written[1] != "promote"):
            reason = (entry.get("shadow") or {}).get("reason") or f"no verdict for project {project_id}: {sorted(out)}"
            raise PgmlopsError(f"{self.s.name}: the maintenance run did not promote the shadow: {reason}")
        if written is not None:
            self.say(f"maintenance: {written[2]}")
        else:
            status = {k: (entry.get(k) or {}).get("status") for k in ("shadow", "rollback") if entry.get(k)}
            self.say(f"maintenance: nothing changed ({', '.join(f'{k} {v}' for k, v in status.items()) or 'nothing to judge'})")
        return entry

    def _new_events(self) -> list[dict[str, Any]]:
        """The retraining events not returned before, oldest first."""
        with tenant_context(self.conn, self.tenant):
            rows = list(reversed(call(self.conn, "ml.retraining_history(%s, 1000)", (PROJECT,)) or []))
        new = [e for e in rows if str(e["id"]) not in self.seen]
        self.seen.update(str(e["id"]) for e in new)
        return new


# -- steps ---------------------------------------------------------------------------------------


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _now(conn: Any) -> datetime:
    row = conn.execute("select clock_timestamp()").fetchone()
    return row[0] if row is not None else datetime.now(UTC)


def _majority(regimes: Any, served_at: Any, begin: datetime, end: datetime) -> str:
    """The regime most of the transactions served in [begin, end) came from."""
    if served_at is None:
        return BASE_REGIME
    inside = ((served_at >= begin) & (served_at < end)).to_numpy()
    counts = Counter(regimes[inside].tolist())
    return str(counts.most_common(1)[0][0]) if counts else BASE_REGIME


def _latest_event(conn: Any, tenant: str) -> tuple[str, str, str] | None:
    """(id, kind, reason) of the project's latest retraining event."""
    with tenant_context(conn, tenant):
        row = conn.execute("select e.id::text, e.kind, e.reason from ml.retraining_events e join ml.projects p"
                           " on p.id = e.project_id where p.tenant_id = %s and p.name = %s order by e.at desc limit 1",
                           (tenant, PROJECT)).fetchone()
    return (str(row[0]), str(row[1]), str(row[2])) if row else None


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


def _serve(conn: Any, tenant: str, console: Console, title: str, segments: Sequence[Segment], days: int, seed: int,
           start: datetime, rate_per_hour: float, label_delay: float) -> Any:
    """Serve ``days`` simulated days through ml.predict with their delayed feedback."""
    with Progress(TextColumn(f"[bold]{title}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("serve", total=None)

        def step(stage: str, done: int, total: int) -> None:
            if stage == "serve":
                progress.update(task, completed=done, total=total)

        result = simulate(conn, PROJECT, segments, start=start, days=days, rate_per_hour=rate_per_hour, seed=seed,
                          tenant=tenant, serve=True, label_delay=label_delay, progress=step)
    console.print(f"[green]✓[/green] {title}: {result.predictions:,} predictions through ml.predict, "
                  f"{result.feedback_recorded:,} chargebacks and maturities as feedback")
    return result


def _report(conn: Any, tenant: str, begin: datetime, end: datetime) -> dict[str, Any]:
    """One drift report over [begin, end): its realized metric, whether it fired a trigger, its
    regime match and recall."""
    with tenant_context(conn, tenant), sql_errors():
        report_id = call(conn, "ml.drift_report(%s, %s, %s)", (PROJECT, begin, end))
        values = conn.execute("select avg(value), sum(sample_count) from ml.performance_results where report_id = %s"
                              " and metric = %s and not estimated and value is not null", (report_id, METRIC)).fetchone()
        event = conn.execute("select kind, id::text, job_id, reason, evidence from ml.retraining_events"
                             " where report_id = %s and kind in ('trigger', 'skip') order by at desc limit 1",
                             (report_id,)).fetchone()
        recall = conn.execute("select e.id::text, e.cycle_id::text, e.decision, e.reason, v.version from ml.retraining_events e"
                              " join ml.model_versions v on v.id = e.model_version_id"
                              " where e.report_id = %s and e.kind = 'recall'", (report_id,)).fetchone()
        drift = conn.execute("select r.dataset_drift, r.drift_share, v.version, r.summary -> 'regime' from ml.drift_reports r"
                             " join ml.model_versions v on v.id = r.model_version_id where r.id = %s",
                             (report_id,)).fetchone()
    fired = event is not None and event[0] == "trigger"
    triggers = [t.get("type") for t in ((event[4] or {}).get("triggers") or []) if t.get("fired")] if event else []
    regime = dict(drift[3] or {}) if drift else {}
    return {"report_id": str(report_id), "begin": begin, "end": end,
            "realized": None if values is None or values[0] is None else float(values[0]),
            "labelled": int(values[1] or 0) if values else 0, "fired": fired, "kind": event[0] if event else None,
            "job_id": event[2] if fired and event else None, "reason": event[3] if event else None,
            "trigger_types": triggers,
            "dataset_drift": bool(drift[0]) if drift else None,
            "drift_share": float(drift[1]) if drift and drift[1] is not None else None,
            "version": drift[2] if drift else None,
            "regime_match": {"matched": regime.get("matched"), "match": regime.get("match")},
            "recall": None if recall is None else {"event_id": recall[0], "cycle_id": recall[1], "decision": recall[2],
                                                   "reason": recall[3], "version": int(recall[4])}}


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
