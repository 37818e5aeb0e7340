"""The ``train`` job handler: load a training set, fit, record the run, register the model.

Everything it writes (the run, its per-step metrics, the model version) goes through the
worker-side SQL functions inside the job's transaction, so a train job's records land together
with its success or not at all: a failed attempt leaves no half-recorded run behind (its error
is the job's). Heavy imports (pandas, scikit-learn, torch) happen on the first job, not when a
worker loads its handlers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

from pgmlops.db import sql_errors
from pgmlops.errors import InvalidInput, LeaseLost, NotFound
from pgmlops.jobs.handlers import JobContext, PermanentError

if TYPE_CHECKING:
    import pandas as pd

    from pgmlops.training._training import FitResult, Report

__all__ = ["Project", "load_project", "load_training_frame", "record_fit", "run_training", "train"]

Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class Project:
    """The parts of an ``ml.projects`` row a fit needs."""

    id: UUID
    name: str
    task: str
    target: str | None


def load_project(conn: Conn, project_id: UUID | str) -> Project:
    """The acting tenant's project ``project_id``. Raises PermanentError when there is none."""
    # RLS hides other tenants' projects from users; a service caller sees every tenant's, so
    # the project must be the acting tenant's.
    with sql_errors():
        row = conn.execute(
            """select id, name, task, target from ml.projects
               where id = %s and tenant_id = (select ml.current_tenant())""", (str(project_id),)).fetchone()
    if row is None:
        raise PermanentError(f"project {project_id} does not exist")
    return Project(UUID(str(row[0])), row[1], row[2], row[3])


def load_training_frame(conn: Conn, project: Project, dataset_id: UUID | str) -> pd.DataFrame:
    """The training set's rows (see :func:`pgmlops.features.load_dataset`), checked to carry the
    project's target. Raises PermanentError for an unknown dataset or a missing label column."""
    from pgmlops import features as datasets

    try:
        frame = datasets.load_dataset(conn, UUID(str(dataset_id)))
    except NotFound as exc:
        raise PermanentError(f"dataset {dataset_id} does not exist") from exc
    if project.task != "anomaly_detection" and (not project.target or project.target not in frame.columns):
        raise PermanentError(f"dataset {dataset_id} has no label column {project.target!r} (project {project.name}'s target)")
    return frame


def _finite(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}


def record_fit(conn: Conn, run_id: UUID | str, result: FitResult, *, model: str | None,
               tags: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Log ``result``'s steps, finish the run as succeeded and, with ``model``, register the
    artifact as that model's next version. Returns ``{run_id, metrics}`` plus
    ``{model_version_id, model, version, compile_job_id}`` when registered.

    The registration queues the version's ``compile`` job in the caller's transaction
    (``ml.register_model_version``); the compilation itself happens there, off the training
    job's path (docs/scoring.md, "Where it happens")."""
    if result.steps:
        with conn.cursor() as cur:
            cur.executemany("select ml.log_run_metrics(%s, %s, %s)",
                            [(str(run_id), step, Jsonb(_finite(values))) for step, values in result.steps])
    metrics = {k: v for k, v in result.metrics.items() if math.isfinite(v)}
    conn.execute("select ml.finish_run(%s, 'succeeded', %s, %s, %s, %s)",
                 (str(run_id), Jsonb(metrics), result.train_seconds, result.model_size_bytes, result.inference_latency_ms))
    out: dict[str, Any] = {"run_id": str(run_id), "metrics": metrics}
    if model is not None:
        row = conn.execute("select ml.register_model_version(%s, %s, %s, %s, %s, %s, %s, %s)",
                           (str(run_id), model, result.artifact, result.artifact_format, result.artifact_sha256,
                            Jsonb(result.signature), Jsonb(metrics), Jsonb(dict(tags or {})))).fetchone()
        assert row is not None
        out.update(row[0])
    return out


def run_training(conn: Conn, *, project_id: UUID | str, dataset_id: UUID | str, algorithm: str,
                 hyperparams: Mapping[str, Any], options: Mapping[str, Any], job_id: int | None = None,
                 study_id: UUID | str | None = None, trial_number: int | None = None, report: Report | None = None,
                 register: bool = True, should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """One recorded fit: start a run, fit, log its steps, finish it and register the model.

    The connection must act for the tenant as a service caller (a worker in a job's
    transaction). ``report`` gets the intermediate values (tuning) and, like the options'
    ``learning_curve``, has the steps evaluated and logged to ``ml.run_metrics`` (without
    either, none are); ``should_stop`` is polled at every epoch and evaluated step and stops the
    fit when true. ``register=False`` records the run only (tuning trials).

    Returns:
        ``{run_id, model_version_id, model, version, compile_job_id, metrics, n_train, n_test,
        dropped_rows}`` (no model fields when not registered).

    Raises:
        PermanentError: unknown project or dataset, data or settings that cannot be trained on,
            SQL refusing the input (SQLSTATE 22xxx, P0002).
        LeaseLost: ``should_stop`` became true: the worker no longer holds the job.
    """
    from pgmlops.training import _algorithms
    from pgmlops.training import _training as training

    project = load_project(conn, project_id)
    frame = load_training_frame(conn, project, dataset_id)
    spec = _algorithms.ALGORITHMS.get(algorithm)
    if spec is None:
        raise PermanentError(f"algorithm: unknown algorithm {algorithm!r}")

    # Polled at every epoch and evaluated step (torch models call back every epoch anyway);
    # boosting is fitted in warm-started chunks only for a report, which only pruning is worth.
    def step_check(step: int) -> None:
        if should_stop is not None and should_stop():
            raise LeaseLost(f"job {job_id} is no longer held by this worker: fit abandoned", "55000")
    try:
        with sql_errors():
            row = conn.execute(
                "select ml.start_run(%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (str(project.id), job_id, algorithm, Jsonb(dict(hyperparams)), Jsonb(dict(options)), str(dataset_id),
                 Jsonb(training.library_versions(spec.library)), None if study_id is None else str(study_id), trial_number),
            ).fetchone()
            assert row is not None
            run_id = row[0]
            try:
                result = training.fit(frame, project.task, project.target, algorithm, hyperparams, options,
                                      report=report, on_step=step_check if should_stop is not None else None)
            except training.TrainingError as exc:
                raise PermanentError(str(exc)) from exc
            model = (options.get("model") or project.name) if register else None
            out = record_fit(conn, run_id, result, model=model, tags=options.get("tags"))
    except (InvalidInput, NotFound) as exc:  # the SQL refused the input: no retry can fix it
        raise PermanentError(str(exc)) from exc
    out.update({"n_train": result.n_train, "n_test": result.n_test, "dropped_rows": result.dropped_rows})
    return out


def train(ctx: JobContext) -> dict[str, Any]:
    """Payload ``{project_id, dataset_id, algorithm, hyperparams, options}`` (from ``ml.train``);
    result ``{run_id, model_version_id, model, version, compile_job_id, metrics, n_train, n_test,
    dropped_rows}``: the version's ``compile`` job (kind ``compile``) compiles it afterwards."""
    payload = ctx.payload
    missing = [k for k in ("project_id", "dataset_id", "algorithm") if not payload.get(k)]
    if missing:
        raise PermanentError(f"payload: {', '.join(missing)} required")
    return run_training(
        ctx.conn, project_id=payload["project_id"], dataset_id=payload["dataset_id"], algorithm=payload["algorithm"],
        hyperparams=payload.get("hyperparams") or {}, options=payload.get("options") or {}, job_id=ctx.job.id,
        should_stop=ctx.lost.is_set,
    )
