"""The ``tune_trial`` and ``tune`` job handlers: trial slots of a shared Optuna study, and the refit.

One ``tune_trial`` job is one trial slot (sql/tuning.sql). Its handler:

1. fails, in Optuna, the trials an earlier attempt of the same job left RUNNING (its worker
   died: the queue gave the job to this one when the lease expired), recording each as a failed
   run; an earlier attempt whose trial did finish, but whose job did not, is taken over as it is;
2. otherwise creates a trial tagged with the job's id (user attribute ``job_id``), samples the
   search space, fits on the training rows of the dataset (the held-out test rows are kept for
   the refit), reports each evaluated step to the pruner, and tells the study the outcome; a
   configuration that cannot be fitted is failed and another sampled, up to
   :data:`CONFIGURATIONS_PER_SLOT` times;
3. records the trial as an ``ml.runs`` row (study_id, trial_number) and settles the slot with
   ``ml.finish_tuning_trial``, both in the job's transaction: the slot settles exactly once,
   when the job succeeds. The last slot releases the study's ``tune`` job.

Optuna writes through its own connections, so a trial is told before the job commits; step 1
makes that safe: whatever attempt runs next sees what the last one told.

The ``tune`` handler refits the best configuration on the whole training split through the
train path (``training.run_training``: test metrics on the held-out rows no trial was
chosen by), registers it as a model version tagged ``{study_id, trial}``, and ends the study.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import optuna
import pandas as pd
import psycopg
from optuna.trial import FrozenTrial, TrialState
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from pgmlops import training
from pgmlops.errors import LeaseLost
from pgmlops.jobs.handlers import JobContext, PermanentError
from pgmlops.tuning import _studies

log = logging.getLogger("pgmlops.tuning")
optuna.logging.set_verbosity(optuna.logging.WARNING)

Conn = psycopg.Connection[Any]

# A slot samples at most this many configurations that fail to fit before it gives up (and
# settles as lost): enough to step over an invalid combination, few enough to stop a broken
# study quickly.
CONFIGURATIONS_PER_SLOT = 3

# training.fit, looked up at call time so a test may slow it down in its worker processes.
_fit: Callable[..., training.FitResult] = training.fit


# -- the study, as the database and Optuna hold it ------------------------------------------------


def _study_row(conn: Conn, study_id: str) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "select s.*, p.task, p.target, a.library from ml.tuning_studies s "
            "join ml.projects p on p.id = s.project_id join ml.algorithms a on a.name = s.algorithm "
            "where s.id = %s and s.tenant_id = ml.current_tenant()", (study_id,))
        row = cur.fetchone()
    if row is None:
        raise PermanentError(f"tuning study {study_id} does not exist")
    return row


def _sampler(options: dict[str, Any], seed: int) -> optuna.samplers.BaseSampler:
    if options.get("sampler") == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # constant_liar: trials running in other workers count as bad guesses, so parallel workers
    # spread out instead of sampling the same promising point.
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def _pruner(options: dict[str, Any]) -> optuna.pruners.BasePruner:
    return {"none": optuna.pruners.NopPruner(), "hyperband": optuna.pruners.HyperbandPruner()}.get(
        options.get("pruner", "median"), optuna.pruners.MedianPruner())


def _optuna_study(storage: Any, row: dict[str, Any], seed: int, *, create: bool = False) -> optuna.Study:
    """The study's Optuna object; with ``create``, made first when it does not exist yet (the
    first slot to start does it; load_if_exists settles a race between two)."""
    if create:
        try:
            return _optuna_study(storage, row, seed)
        except KeyError:  # not created yet: this slot is the first
            pass
        return optuna.create_study(study_name=_studies.study_name(row["id"]), storage=storage, direction=row["direction"],
                                   sampler=_sampler(row["options"], seed), pruner=_pruner(row["options"]),
                                   load_if_exists=True)
    return optuna.load_study(study_name=_studies.study_name(row["id"]), storage=storage,
                             sampler=_sampler(row["options"], seed), pruner=_pruner(row["options"]))


def _slot_trials(storage: Any, row: dict[str, Any], job_id: int) -> list[tuple[int, int, str]]:
    """(trial_id, number, state) of the trials earlier attempts of job ``job_id`` made, in number
    order. Read through Optuna's storage (its own connection): the job's connection acts as the
    tenant's service role, which has no access to schema optuna."""
    study = storage.get_study_id_from_name(_studies.study_name(row["id"]))
    mine = [(t._trial_id, t.number, t.state.name) for t in storage.get_all_trials(study, deepcopy=False)
            if t.user_attrs.get("job_id") == job_id]
    return sorted(mine, key=lambda t: t[1])


# -- runs ---------------------------------------------------------------------------------------


def _start_run(ctx: JobContext, row: dict[str, Any], hyperparams: dict[str, Any], number: int | None,
               library_versions: dict[str, str]) -> str:
    run = ctx.conn.execute(
        "select ml.start_run(%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (row["project_id"], ctx.job.id, row["algorithm"], Jsonb(hyperparams), Jsonb(row["options"]), row["dataset_id"],
         Jsonb(library_versions), row["id"], number)).fetchone()
    assert run is not None
    return str(run[0])


def _finish_run(ctx: JobContext, run_id: str, status: str, metrics: dict[str, Any], error: str | None = None) -> None:
    ctx.conn.execute("select ml.finish_run(%s, %s, %s, %s, %s, %s, %s)",
                     (run_id, status, Jsonb(metrics), metrics.get("train_seconds"),
                      int(metrics["model_size_bytes"]) if "model_size_bytes" in metrics else None,
                      metrics.get("inference_latency_ms"), error))


def _log_steps(ctx: JobContext, run_id: str, steps: list[tuple[int, dict[str, float]]]) -> None:
    for step, values in steps:
        finite = {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}
        if finite:
            ctx.conn.execute("select ml.log_run_metrics(%s, %s, %s)", (run_id, step, Jsonb(finite)))


def _record_trial(ctx: JobContext, row: dict[str, Any], trial: FrozenTrial, status: str,
                  library_versions: dict[str, str], error: str | None = None) -> str:
    """An ml.runs row for a trial an earlier attempt ran, from what it left in Optuna."""
    hyperparams = trial.user_attrs.get("hyperparams", trial.params)
    run_id = _start_run(ctx, row, hyperparams, trial.number, library_versions)
    metrics = trial.user_attrs.get("metrics") or ({row["metric"]: trial.value} if trial.value is not None else {})
    _finish_run(ctx, run_id, status, metrics, error)
    return run_id


# -- sampling -----------------------------------------------------------------------------------


def _suggest(trial: optuna.Trial, search_space: dict[str, Any]) -> dict[str, Any]:
    """The trial's hyperparameters, sampled from ``search_space`` (checked by ml.tune)."""
    out: dict[str, Any] = {}
    for name, spec in search_space.items():
        kind = spec["type"]
        if kind == "int":
            out[name] = trial.suggest_int(name, int(spec["low"]), int(spec["high"]), step=int(spec.get("step") or 1),
                                          log=bool(spec.get("log", False)))
        elif kind == "float":
            out[name] = trial.suggest_float(name, float(spec["low"]), float(spec["high"]), step=spec.get("step"),
                                            log=bool(spec.get("log", False)))
        else:
            choices = spec["choices"]
            if all(c is None or isinstance(c, bool | int | float | str) for c in choices):
                out[name] = trial.suggest_categorical(name, choices)
            else:
                # Optuna takes scalar choices only; lists (hidden_sizes) travel as their JSON.
                out[name] = json.loads(trial.suggest_categorical(name, [json.dumps(c) for c in choices]))
    return out


def _new_trial(storage: Any, row: dict[str, Any], job_id: int, attempt: int) -> optuna.Trial:
    """A RUNNING trial tagged with its job in the same transaction that creates it (study.ask()
    would leave a moment in which a dying worker leaves an untagged, never-failed trial), in a
    study object whose sampler is seeded by random_state and the trial's number: workers that
    start together must not all draw the same first configuration."""
    template = FrozenTrial(number=0, state=TrialState.RUNNING, value=None, datetime_start=datetime.now(),
                           datetime_complete=None, params={}, distributions={},
                           user_attrs={"job_id": job_id, "attempt": attempt}, system_attrs={},
                           intermediate_values={}, trial_id=0)
    # The seed depends on the trial's number, known only once the trial exists; the study object
    # is made with a provisional seed, and its sampler reseeded below.
    study = _optuna_study(storage, row, 0)
    # Through the study's own (cached) storage: a trial created behind the cache's back is unknown
    # to it until a sampler happens to list the trials, and set_trial_param then fails (random
    # sampler, single-valued distributions).
    trial_id = study._storage.create_new_trial(study._study_id, template_trial=template)
    number = storage.get_trial_number_from_id(trial_id)
    seed = (int(row["options"].get("random_state", 42)) + number) % 2**32
    study.sampler = _sampler(row["options"], seed)
    return optuna.Trial(study, trial_id)


# -- data -----------------------------------------------------------------------------------------


def _training_rows(frame: pd.DataFrame, row: dict[str, Any]) -> pd.DataFrame:
    """The rows the refit trains on (training.split with the study's options): trials see only
    these (fit splits them again into training and validation rows), so the refit's test
    metrics are measured on rows no trial was chosen by."""
    train_index, _ = training.split(frame, row["task"], row["target"], row["options"])
    rows = frame.loc[train_index.sort_values()]
    rows.attrs = dict(frame.attrs)
    return rows


# -- the trial slot --------------------------------------------------------------------------------


def tune_trial(ctx: JobContext) -> dict[str, Any]:
    """Run one trial slot of a study (see the module docstring); returns {study_id, trial,
    state, value, run_id, settled, n_trials}."""
    study_id = str(ctx.payload["study_id"])
    row = _study_row(ctx.conn, study_id)
    if row["status"] != "running":
        return {"study_id": study_id, "skipped": f"study is {row['status']}"}
    storage = _studies.optuna_storage(ctx.conn)
    _optuna_study(storage, row, 0, create=True)
    library_versions = training.library_versions(row["library"])
    job_id = ctx.job.id

    # 1. What earlier attempts of this slot left behind.
    for trial_id, number, state in _slot_trials(storage, row, job_id):
        if state != "RUNNING":
            continue
        message = f"worker died: job {job_id} attempt {ctx.job.attempts} took the slot over after its lease expired"
        try:
            storage.set_trial_user_attr(trial_id, "error", message)
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # it finished after all; the scan below takes it over
        _record_trial(ctx, row, storage.get_trial(trial_id), "failed", library_versions, message)
        log.info("study %s: trial %s of job %s failed (its worker died)", study_id, number, job_id)
    for trial_id, _, state in _slot_trials(storage, row, job_id):
        if state in ("COMPLETE", "PRUNED"):
            trial = storage.get_trial(trial_id)
            run_id = _record_trial(ctx, row, trial, "succeeded" if state == "COMPLETE" else "pruned", library_versions)
            return _settle(ctx, row, state.lower(), trial.number, trial.value, run_id)

    # 2. New trials, until one completes or is pruned.
    project = training.load_project(ctx.conn, row["project_id"])
    try:
        frame = _training_rows(training.load_training_frame(ctx.conn, project, row["dataset_id"]), row)
    except training.TrainingError as exc:  # the data, not a configuration: no trial can help
        raise PermanentError(f"tuning study {study_id}: {exc}") from exc
    errors: list[str] = []
    for _ in range(CONFIGURATIONS_PER_SLOT):
        outcome = _run_trial(ctx, storage, row, frame, library_versions, errors)
        if outcome is not None:
            return outcome
    log.warning("study %s: slot of job %s gave up after %s failed configurations", study_id, job_id, len(errors))
    settled = _settle(ctx, row, "lost", None, None, None)
    return {**settled, "errors": errors}


def _run_trial(ctx: JobContext, storage: Any, row: dict[str, Any], frame: pd.DataFrame,
               library_versions: dict[str, str], errors: list[str],
               settle: Callable[..., dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """One configuration: the slot's outcome when it completed or was pruned, None when it failed.
    ``settle`` (default: the job's slot, :func:`_settle`) records a finished trial; a study run
    in one process (``pgmlops.tuning.LocalStudy``) passes its own."""
    settle = settle or _settle
    trial = _new_trial(storage, row, ctx.job.id, ctx.job.attempts)
    hyperparams = _suggest(trial, row["search_space"])
    trial.set_user_attr("hyperparams", hyperparams)
    run_id = _start_run(ctx, row, hyperparams, trial.number, library_versions)
    metric = row["metric"]
    reported: list[tuple[int, dict[str, float]]] = []

    def check_lease(step: int) -> None:  # fit calls it at every epoch and evaluated step, before report
        if ctx.lost.is_set():
            raise LeaseLost(f"job {ctx.job.id} is no longer held by this worker: trial {trial.number} abandoned", "55000")

    def report(step: int, value: float) -> None:
        reported.append((step, {metric: value}))
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step}: {metric} {value:.6g}")

    # Intermediate values cost up to a fifth of a fit: only a pruner reads them (or the options'
    # learning_curve asks for them).
    pruning = row["options"].get("pruner", "median") != "none"
    started = time.perf_counter()
    try:
        result = _fit(frame, row["task"], row["target"], row["algorithm"], hyperparams, row["options"],
                      report=report if pruning else None, on_step=check_lease)
        value = result.score(metric)
        if value is None or not math.isfinite(value):
            raise training.TrainingError(f"{metric} is undefined for this configuration (got {value})")
    except optuna.TrialPruned as exc:
        _log_steps(ctx, run_id, reported)
        last = reported[-1][1][metric] if reported else None
        metrics = {metric: last} if last is not None else {}
        _finish_run(ctx, run_id, "pruned", {**metrics, "train_seconds": time.perf_counter() - started})
        trial.set_user_attr("metrics", metrics)
        frozen = trial.study.tell(trial, state=TrialState.PRUNED)
        log.info("study %s: trial %s %s", row["id"], trial.number, exc)
        return settle(ctx, row, "pruned", trial.number, frozen.value, run_id)
    except (LeaseLost, optuna.exceptions.StorageInternalError):
        raise
    except Exception as exc:  # this configuration cannot be fitted: fail it and sample another
        if ctx.lost.is_set():
            raise
        error = f"{type(exc).__name__}: {exc}"
        errors.append(f"trial {trial.number}: {error}")
        _log_steps(ctx, run_id, reported)
        _finish_run(ctx, run_id, "failed", {"train_seconds": time.perf_counter() - started}, error)
        trial.set_user_attr("error", error[:2000])
        trial.study.tell(trial, state=TrialState.FAIL)
        log.info("study %s: trial %s failed: %s", row["id"], trial.number, error)
        return None

    recorded = training.record_fit(ctx.conn, run_id, result, model=None)
    trial.set_user_attr("metrics", recorded["metrics"])
    trial.study.tell(trial, value)
    return settle(ctx, row, "complete", trial.number, value, run_id)


def _settle(ctx: JobContext, row: dict[str, Any], state: str, number: int | None, value: float | None,
            run_id: str | None) -> dict[str, Any]:
    settled = ctx.conn.execute("select ml.finish_tuning_trial(%s, %s, %s, %s, %s)",
                               (row["id"], ctx.job.id, state, number, value)).fetchone()
    assert settled is not None
    info = dict(settled[0])
    return {"study_id": str(row["id"]), "trial": number, "state": state, "value": value, "run_id": run_id,
            "settled": info["settled"], "n_trials": info["n_trials"]}


# -- the refit ------------------------------------------------------------------------------------


def tune(ctx: JobContext) -> dict[str, Any]:
    """Refit the study's best configuration on its whole training split and register it;
    returns {study_id, best_trial, best_value, best_params, run_id, model_version_id, model,
    version, compile_job_id (the version's compile job: docs/scoring.md), metrics, trials}. A
    study without a complete trial fails (PermanentError)."""
    study_id = str(ctx.payload["study_id"])
    row = _study_row(ctx.conn, study_id)
    if row["status"] in ("succeeded", "failed"):
        raise PermanentError(f"tuning study {study_id} has already {row['status']}")
    storage = _studies.optuna_storage(ctx.conn)
    study = _optuna_study(storage, row, 0, create=True)
    # Every slot has settled, so a trial still RUNNING belongs to a worker that died on its
    # slot's last attempt: fail it, so the study reads as it ended.
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        try:
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
    counts = {state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,)))
              for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.value is not None and math.isfinite(t.value)]
    if not complete:
        raise PermanentError(f"tuning study {study_id}: no trial completed ({counts['pruned']} pruned, "
                             f"{counts['fail']} failed): nothing to refit")
    sign = -1.0 if row["direction"] == "maximize" else 1.0
    best = min(complete, key=lambda t: (sign * float(t.value or 0.0), t.number))
    hyperparams = best.user_attrs.get("hyperparams", best.params)

    options = dict(row["options"])
    options["tags"] = {**(options.get("tags") or {}), "study_id": study_id, "trial": best.number}
    refit = training.run_training(
        ctx.conn, project_id=row["project_id"], dataset_id=row["dataset_id"], algorithm=row["algorithm"],
        hyperparams=hyperparams, options=options, job_id=ctx.job.id, study_id=study_id, should_stop=ctx.lost.is_set)
    best_run = ctx.conn.execute(
        "select id from ml.runs where study_id = %s and trial_number = %s and status = 'succeeded' "
        "order by finished_at desc limit 1", (study_id, best.number)).fetchone()
    ctx.conn.execute("select ml.finish_tuning_study(%s, 'succeeded', %s, %s, %s, %s, %s)",
                     (study_id, best.number, best.value, Jsonb(hyperparams), best_run[0] if best_run else None,
                      refit["model_version_id"]))
    return {"study_id": study_id, "best_trial": best.number, "best_value": best.value, "best_params": hyperparams,
            "run_id": str(refit["run_id"]), "model_version_id": str(refit["model_version_id"]), "model": refit["model"],
            "version": refit["version"], "compile_job_id": refit.get("compile_job_id"), "metrics": refit["metrics"],
            "trials": counts}
