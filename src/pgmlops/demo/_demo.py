"""`pgmlops demo`: the whole loop on a fresh machine, in minutes.

What it runs, each step through the same SQL API every client uses:

1. start the embedded PostgreSQL (unless DATABASE_URL names another) and migrate it;
2. create a tenant, a feature group with validation rules, and ingest a bundled data set
   (scikit-learn's breast cancer measurements, one row per patient, each with its own time);
3. build a point-in-time correct training set from a spine of diagnoses made a day after each
   measurement (a label table, as a clinic would keep it);
4. create a project and tune a model with Optuna, the trials fanned out as jobs to two worker
   processes that share one study stored in the same database;
5. register the best configuration as a model version, compile it to a SQL function (the
   registration's follow-up ``compile`` job, run by the same workers) and print the leaderboard
   of trials and the registered version with its metrics and scoring path.

Drift monitoring, scoring and retraining join as those capabilities land.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pgmlops import features, migrations, models, tenants, training, tuning
from pgmlops import features as datasets
from pgmlops.db import call, connect, resolve_url, sql_errors, tenant_context
from pgmlops.errors import PgmlopsError
from pgmlops.jobs import queue
from pgmlops.jobs.worker import WorkerPool
from pgmlops.models import ModelRef

__all__ = ["DemoSummary", "run_demo"]

ALGORITHM = "hist_gradient_boosting"
SEARCH_SPACE = {
    "learning_rate": {"type": "float", "low": 0.02, "high": 0.3, "log": True},
    "max_iter": {"type": "int", "low": 20, "high": 150},
    "max_leaf_nodes": {"type": "int", "low": 4, "high": 31},
    "min_samples_leaf": {"type": "int", "low": 5, "high": 40},
}


@dataclass(frozen=True)
class DemoSummary:
    """What the demo did: the tenant, the data, the study and the registered model version."""

    tenant_id: str
    rows_ingested: int
    dataset_id: str
    dataset_rows: int
    trials: int
    best_value: float | None
    model: str
    version: int
    metrics: dict[str, Any]
    seconds: float


def run_demo(url: str | None = None, *, trials: int = 12, workers: int = 2,
             console: Console | None = None) -> DemoSummary:
    """Run the demo against ``url`` (None: embedded) and return its summary.

    Raises:
        PgmlopsError: tuning (or the version's compilation) did not finish within ten minutes, or
            failed; and what the steps raise.
    """
    console = console or Console()
    started = time.monotonic()
    logging.getLogger("alembic").setLevel(logging.WARNING)  # the steps below say what happened
    with console.status("starting PostgreSQL"):
        url = resolve_url(url)
    console.print(f"[green]✓[/green] PostgreSQL at {url.split('@')[-1]}")
    with console.status("migrating"):
        migrations.upgrade(url)
    console.print(f"[green]✓[/green] schema at revision {migrations.current(url)}")

    with connect(url, autocommit=True) as conn:
        caps = call(conn, "ml.capabilities()")
        console.print("[green]✓[/green] capabilities: " + ", ".join(f"{k}={v}" for k, v in sorted(caps.items())))
        tenant = str(tenants.create_tenant(conn, f"demo {time.strftime('%Y-%m-%d %H:%M:%S')}"))
        console.print(f"[green]✓[/green] tenant {tenant}")

        # Each step is a transaction of the service role acting for the tenant, as a worker's
        # or an edge function's would be: committed before the workers look for it.
        measurements, diagnoses = _breast_cancer()
        with tenant_context(conn, tenant):
            features.create_group(conn, "tumor", "patient", _schema(measurements), ttl="7 days",
                                  description="Cell nucleus measurements from a fine needle aspirate "
                                              "(scikit-learn's breast cancer data)")
            result = features.ingest(conn, "tumor", measurements, source_name="sklearn.datasets.load_breast_cancer")
        console.print(f"[green]✓[/green] feature group tumor: {result.written} rows validated and ingested "
                      f"({result.online_updated} entities in the online store)")

        with tenant_context(conn, tenant):
            dataset_id = datasets.create_training_set(conn, "diagnosis", diagnoses,
                                                      [f"tumor:{c}" for c in _feature_columns(measurements)], label="malignant")
            info = datasets.dataset_info(conn, dataset_id)
        console.print(f"[green]✓[/green] training set {info.name} v{info.version}: {info.row_count} rows, point in time "
                      f"(content hash {info.content_hash.split(':')[-1][:12]})")

        with tenant_context(conn, tenant):
            training.create_project(conn, "diagnosis", "classification", "malignant", "Is the tumor malignant?")
            tune_job = tuning.tune(conn, "diagnosis", info.id, ALGORITHM, SEARCH_SPACE, trials,
                                   {"metric": "roc_auc", "direction": "maximize", "pruner": "median", "cv_folds": None})
            study_id = tuning.study_id_of(conn, tune_job)
        console.print(f"[green]✓[/green] tuning {ALGORITHM}: {trials} trials as jobs, study {study_id}")

        tuning_started = time.monotonic()
        with WorkerPool(url, ["tune_trial", "tune", "train", "compile"], workers, poll_interval=0.5,
                        log_level=logging.WARNING) as pool, Progress(
            TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(), TextColumn("best {task.fields[best]}"),
            TimeElapsedColumn(), console=console,
        ) as progress:
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
                if time.monotonic() - tuning_started > 600:
                    raise PgmlopsError("demo: tuning did not finish within ten minutes")
                pool.check()
                time.sleep(0.3)
            if job["status"] != "succeeded":
                raise PgmlopsError(f"demo: tuning ended {job['status']}: {(job.get('error') or '').partition(chr(10))[0]}")
            registered = job["result"] or {}
            # The registration queued the version's compilation as a job of its own: the same
            # workers run it (a second or so for this model).
            compile_job = registered.get("compile_job_id")
            while compile_job is not None:
                with tenant_context(conn, tenant):
                    compiled = queue.result(conn, int(compile_job))
                if compiled["status"] in ("succeeded", "failed", "dead", "cancelled"):
                    break
                if time.monotonic() - tuning_started > 600:
                    raise PgmlopsError("demo: the model version's compilation did not finish within ten minutes")
                pool.check()
                time.sleep(0.2)
        with tenant_context(conn, tenant), sql_errors():
            version = models.model_version(conn, ModelRef(registered.get("model", "diagnosis"), registered.get("version")))
            leaderboard = conn.execute(
                "select number, state, value, params, extract(epoch from duration) from ml.tuning_trials "
                "where study_id = %s order by value desc nulls last, number limit 10", (study_id,)).fetchall()
            n_trials = len(tuning.trials(conn, study_id))

    console.print(_leaderboard_table(leaderboard, int(n_trials or 0)))

    metrics = dict(version.get("metrics") or {})
    vtable = Table(title=f"registered model {version.get('model')} version {version.get('version')}", show_header=False)
    vtable.add_column(no_wrap=True)
    vtable.add_column(overflow="fold")  # a SHA-256 wraps rather than being cut
    for name in ("roc_auc", "pr_auc", "accuracy", "precision", "recall", "f1", "log_loss", "brier"):
        if isinstance(metrics.get(name), int | float):
            vtable.add_row(name, f"{metrics[name]:.4f}")
    for name in ("algorithm", "artifact_format", "artifact_size", "artifact_sha256"):
        if version.get(name) is not None:
            vtable.add_row(name.replace("_", " "), str(version[name])[:64])
    vtable.add_row("scoring path", _scoring_path(version))
    console.print(vtable)
    seconds = time.monotonic() - started
    console.print(f"[green]✓[/green] done in {seconds:.0f} s: features → point-in-time training set → {n_trials} trials on "
                  f"{workers} workers → model version {version.get('version')}")
    return DemoSummary(tenant, result.written, str(info.id), info.row_count, int(n_trials or 0),
                       _best(leaderboard), str(version.get("model")), int(version.get("version") or 0), metrics, seconds)


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


def _breast_cancer() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The measurements (one per patient, each at its own time in 2026) and the diagnoses made a
    day later: the spine of the training set."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    frame = data.frame.rename(columns=lambda c: c.replace(" ", "_"))
    measured = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(frame.index * 613, unit="min")
    patients = [f"p{i:04d}" for i in frame.index]
    measurements = frame.drop(columns=["target"]).assign(patient=patients, event_time=measured)
    # scikit-learn codes malignant as 0: the label says what the project predicts.
    diagnoses = pd.DataFrame({"patient": patients, "event_time": measured + pd.Timedelta(days=1),
                              "malignant": (frame["target"] == 0)})
    return measurements, diagnoses


def _feature_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in ("patient", "event_time")]


def _schema(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{"name": c, "dtype": "float", "min": 0, "nullable": False} for c in _feature_columns(frame)]


def _best(leaderboard: list[Any]) -> float | None:
    values = [row[2] for row in leaderboard if row[2] is not None]
    return max(values) if values else None
