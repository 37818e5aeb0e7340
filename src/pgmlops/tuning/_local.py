"""A tuning study whose trials one job runs itself, one after another, in its own process.

``ml.tune`` fans a study out over ``tune_trial`` jobs that any worker runs. A job that needs a
study's outcome before it can go on (the retrain job's tuning budget) cannot wait for other
jobs: with one worker it would hold the only slot while its trials queue behind it. Such a job
runs its trials itself with :class:`LocalStudy`: the study's row is made by
``ml.start_tuning_study`` (the same checks as ``ml.tune``, no job queued), each trial is the
``tune_trial`` handler's own (sampling, fit, pruning, its ``ml.runs`` row, told to Optuna in
schema ``optuna``) and is settled with ``ml.record_tuning_trial``; ``ml.finish_tuning_study``
ends it. ``ml.tuning_trials``, ``ml.tuning_study`` and ``pgmlops tune`` read it as any study.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from uuid import UUID

from psycopg.types.json import Jsonb

from pgmlops.db import call
from pgmlops.jobs.handlers import JobContext, PermanentError
from pgmlops.tuning import _studies

if TYPE_CHECKING:
    import pandas as pd

# The trial code (pgmlops.tuning._handlers) imports Optuna, pandas and the training stack: it is
# imported when a study starts, so `import pgmlops.tuning` stays light.

__all__ = ["LocalStudy"]


class LocalStudy:
    """A study run in this process, in the transaction of ``ctx``'s job.

    The study's row, its trials' runs and its end are written through ``ctx.conn`` and commit
    with the job; Optuna tells its trials through its own connections at once. A job whose
    transaction rolls back leaves the trials in Optuna's tables without a study row that
    names them: :meth:`discard` removes them. A job whose worker died cannot discard anything;
    its next attempt does (:meth:`start` deletes the Optuna studies that earlier attempts of the
    same job left, each tagged with its job and attempt). One thread at a time.
    """

    def __init__(self, ctx: JobContext, study_id: UUID) -> None:
        """Use :meth:`start`."""
        from pgmlops import training
        from pgmlops.tuning import _handlers

        self._ctx = ctx
        self.id = study_id
        self._row = _handlers._study_row(ctx.conn, str(study_id))
        self._storage = _studies.optuna_storage(ctx.conn)
        self._study = _handlers._optuna_study(self._storage, self._row, 0, create=True)
        # The tag that lets a later attempt of this job find the study if this process dies.
        self._study.set_user_attr("job_id", ctx.job.id)
        self._study.set_user_attr("attempt", ctx.job.attempts)
        self._discarded = False
        self._library_versions = training.library_versions(self._row["library"])
        self._frame: pd.DataFrame | None = None
        self._runs: dict[int, str] = {}
        self.errors: list[str] = []
        """``trial N: <error>`` of each trial whose configuration could not be fitted."""

    @classmethod
    def start(cls, ctx: JobContext, project: str, dataset: UUID | str, algorithm: str,
              search_space: Mapping[str, Any], n_trials: int, options: Mapping[str, Any] | None = None) -> LocalStudy:
        """Record a study of ``algorithm`` over ``search_space`` on ``dataset`` (as
        :func:`pgmlops.tuning.tune` takes them) whose ``n_trials`` trials this process runs.

        Raises:
            NotFound, InvalidInput, AccessDenied: as ``ml.tune`` (``ml.start_tuning_study``);
                AccessDenied also when ``ctx.conn`` is not a service caller.
        """
        study_id = call(ctx.conn, "ml.start_tuning_study(%s, %s, %s, %s, %s, %s)",
                        (project, str(dataset), algorithm, Jsonb(dict(search_space)), n_trials, Jsonb(dict(options or {}))))
        discard_earlier_attempts(ctx)
        return cls(ctx, UUID(str(study_id)))

    @property
    def algorithm(self) -> str:
        return str(self._row["algorithm"])

    @property
    def metric(self) -> str:
        return str(self._row["metric"])

    @property
    def direction(self) -> str:
        """``maximize`` or ``minimize``: how :meth:`best` ranks the trials' values."""
        return str(self._row["direction"])

    def _training_rows(self) -> pd.DataFrame:
        from pgmlops import training
        from pgmlops.tuning import _handlers

        if self._frame is None:
            project = training.load_project(self._ctx.conn, self._row["project_id"])
            try:
                frame = training.load_training_frame(self._ctx.conn, project, self._row["dataset_id"])
            except training.TrainingError as exc:  # the data, not a configuration: no trial can help
                raise PermanentError(f"tuning study {self.id}: {exc}") from exc
            self._frame = _handlers._training_rows(frame, self._row)
        return self._frame

    def _settle(self, ctx: JobContext, row: dict[str, Any], state: str, number: int | None, value: float | None,
                run_id: str | None) -> dict[str, Any]:
        info = dict(call(ctx.conn, "ml.record_tuning_trial(%s, %s, %s, %s)", (str(self.id), state, number, value)))
        if number is not None and run_id is not None:
            self._runs[number] = run_id
        return {"study_id": str(self.id), "trial": number, "state": state, "value": value, "run_id": run_id,
                "settled": info["settled"], "n_trials": info["n_trials"]}

    def run_trial(self) -> dict[str, Any]:
        """Sample, fit and record one trial (the ``tune_trial`` handler's code: its pruner, its
        ``ml.runs`` row) and settle it. Returns ``{algorithm, trial, state, value, params,
        run_id, error}``: state ``complete``, ``pruned`` or ``failed`` (the configuration could
        not be fitted: the trial is FAIL in Optuna, its run failed, and it is settled as
        ``lost``; ``error`` says why).

        Raises:
            PermanentError: the study's data cannot be trained on at all.
            LeaseLost: the job is no longer held by this worker (its fit stopped).
        """
        from pgmlops.tuning import _handlers

        failures = len(self.errors)
        outcome = _handlers._run_trial(self._ctx, self._storage, self._row, self._training_rows(),
                                       self._library_versions, self.errors, settle=self._settle)
        last = self._study.get_trials(deepcopy=False)[-1]
        params = last.user_attrs.get("hyperparams", last.params)
        if outcome is None:
            self._settle(self._ctx, self._row, "lost", last.number, None, None)
            return {"algorithm": self.algorithm, "trial": last.number, "state": "failed", "value": None,
                    "params": params, "run_id": None, "error": self.errors[failures] if len(self.errors) > failures else None}
        return {"algorithm": self.algorithm, "trial": outcome["trial"], "state": outcome["state"],
                "value": outcome["value"], "params": params, "run_id": outcome["run_id"], "error": None}

    def best(self) -> dict[str, Any] | None:
        """The best complete trial so far (by the study's metric and direction; the lower
        number on a tie) as ``{algorithm, trial, value, params, run_id}``, or None."""
        from optuna.trial import TrialState

        complete = [t for t in self._study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                    if t.value is not None and math.isfinite(t.value)]
        if not complete:
            return None
        sign = -1.0 if self.direction == "maximize" else 1.0
        top = min(complete, key=lambda t: (sign * float(t.value or 0.0), t.number))
        return {"algorithm": self.algorithm, "trial": top.number, "value": top.value,
                "params": top.user_attrs.get("hyperparams", top.params), "run_id": self._runs.get(top.number)}

    def finish(self, model_version_id: UUID | str | None = None, error: str | None = None) -> None:
        """End the study (``ml.finish_tuning_study``): succeeded with its best trial (and the
        model version refitted from it, if any) when it has one and no ``error`` is given,
        else failed with ``error`` (or "no trial completed")."""
        best = self.best()
        if best is None or error is not None:
            call(self._ctx.conn, "ml.finish_tuning_study(%s, 'failed', error => %s)",
                 (str(self.id), error or f"no trial completed ({len(self.errors)} failed)"))
            return
        call(self._ctx.conn, "ml.finish_tuning_study(%s, 'succeeded', %s, %s, %s, %s, %s)",
             (str(self.id), best["trial"], best["value"], Jsonb(best["params"]), best["run_id"],
              str(model_version_id) if model_version_id is not None else None))

    def discard(self) -> None:
        """Delete the study's trials from Optuna's tables (for a job whose transaction, and so
        the study's row, will roll back). Idempotent."""
        import optuna

        if self._discarded:
            return
        try:
            optuna.delete_study(study_name=_studies.study_name(self.id), storage=self._storage)
        except KeyError:  # never stored, or already deleted
            pass
        self._discarded = True


def discard_earlier_attempts(ctx: JobContext) -> list[str]:
    """Delete from Optuna's tables the studies that earlier attempts of ``ctx``'s job started
    in process and left behind (a worker killed mid-tuning: its transaction, and so the studies'
    rows, rolled back, but Optuna had stored their trials at once). Returns their names.

    Safe while other jobs tune: only studies tagged with this job's id and an attempt before
    this one are touched, and a job is held by one worker at a time, so those attempts are over.
    A study whose row exists (committed) is never deleted.
    """
    import optuna

    storage = _studies.optuna_storage(ctx.conn)
    left = [s for s in storage.get_all_studies()
            if s.user_attrs.get("job_id") == ctx.job.id and int(s.user_attrs.get("attempt", ctx.job.attempts)) < ctx.job.attempts]
    gone: list[str] = []
    for study in left:
        if ctx.conn.execute("select 1 from ml.tuning_studies where id = %s",
                            (study.study_name.removeprefix("pgmlops-"),)).fetchone():
            continue
        try:
            optuna.delete_study(study_name=study.study_name, storage=storage)
        except KeyError:  # deleted meanwhile by another cleanup
            continue
        gone.append(study.study_name)
    return gone
