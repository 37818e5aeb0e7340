"""The ``retrain`` job handler: from a fired trigger to a challenger proven better offline.

Payload ``{trigger_event_id, project}`` (the trigger check after a drift
report, or ``ml.retrain``). Every step is a row of ``ml.retraining_events`` whose ``cycle_id``
is the trigger's id, written with ``ml.record_retraining_step`` (which publishes
``retraining.<kind>``), in the job's transaction:

1. ``curate``: the labelled predictions of the policy's recent window (their logged features
   and label) plus a stratified sample of the champion's training set; duplicates removed, rows
   failing validation (no label, a value that does not parse as its input's type) excluded,
   optional class balancing; the most recent 20% of the window (by prediction time) held out.
   The training rows become a point-in-time training set through the feature store (a group
   ``retrain_<project>`` keyed by row, ingested, joined to a spine).
2. ``train``: the policy's recipe through :func:`pgmlops.training.run_training` (the ``train``
   handler's code path). A tuning recipe (``recipe.tune``) first runs its budget on the cycle's
   training set: one study per algorithm, stored as ``ml.tune``'s are (``ml.tuning_studies``,
   Optuna's tables in schema ``optuna``, a run per trial), the trials dealt to the algorithms in
   turn until ``trials`` have run or ``timeout`` has passed; the best complete trial by the
   recipe's metric is refitted as the challenger (a trial that fails is recorded and the rest
   go on; none completing fails the cycle). The trials run here, one after another
   (:class:`pgmlops.tuning.LocalStudy`), not as ``tune_trial`` jobs: a retrain job waiting for
   jobs that other workers must claim would wait forever with one worker (its own slot is the
   only one), and its cycle, one transaction, could not hold the studies' rows while they ran
   elsewhere. The version is registered, compiled and aliased ``challenger``; the row records
   the studies, the trials run and the best trial's parameters and value.
3. ``evaluate``: champion and challenger predict the holdout; the policy's test (DeLong,
   McNemar or the paired bootstrap) and :func:`pgmlops.retraining.decide`, plus
   ``ml.check_promotion``'s gates. A challenger that is not better or fails a gate: ``reject``.
   A version the cycle's ``recall`` row names (a regime seen before) is first weighed against the
   retrained challenger on the same holdout; the better one goes on as the challenger.
4. online: ``shadow`` deploys champion live + challenger shadow; ``canary`` a canary of the
   challenger; ``none`` with automatic promotion promotes and deploys it alone; approval (or a
   deployment the database refuses, e.g. an unapproved live arm) records ``approval`` with why.

A failure after the trigger (no champion, too few rows, a fit that cannot run) is a ``failed``
row with the reason; the job itself succeeds with ``{decision: "failed"}``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from contextlib import nullcontext
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

from pgmlops.db import call, tenant_context
from pgmlops.jobs.handlers import JobContext, PermanentError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from pgmlops.tuning import LocalStudy

__all__ = ["HOLDOUT_SHARE", "MIN_HOLDOUT", "RetrainFailed", "retrain", "start_retraining"]

Conn = psycopg.Connection[Any]

log = logging.getLogger("pgmlops.retraining")

HOLDOUT_SHARE = 0.2
"""The most recent share of the labelled window held out for the offline comparison."""
MIN_HOLDOUT = 20
"""The fewest holdout rows a comparison is made on."""

_NUMERIC = ("float", "int", "double", "real", "numeric", "integer", "bigint", "smallint")


class RetrainFailed(Exception):
    """A step that cannot go on; its message is the ``failed`` row's reason."""

    def __init__(self, step: str, reason: str, data: Mapping[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.step = step
        self.data = dict(data or {})


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "item") and callable(value.item):
        return _jsonable(value.item())
    return value


def _step(conn: Conn, cycle: str, kind: str, *, evidence: Mapping[str, Any] | None = None,
          data: Mapping[str, Any] | None = None, version: str | None = None,
          test_results: Mapping[str, Any] | None = None, decision: str | None = None, reason: str | None = None,
          job_id: int | None = None) -> str:
    row = conn.execute(
        "select ml.record_retraining_step(%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (cycle, kind, Jsonb(_jsonable(dict(evidence or {}))), Jsonb(_jsonable(dict(data or {}))), version,
         Jsonb(_jsonable(dict(test_results or {}))), decision, reason, job_id)).fetchone()
    assert row is not None
    return str(row[0])


def _champion(conn: Conn, project_id: UUID) -> dict[str, Any]:
    """The project's champion: the version its ``champion`` alias points at, else the live arm of
    its deployment; with its run's algorithm, hyperparameters, options and dataset."""
    row = conn.execute("""select a.model_version_id from ml.model_aliases a join ml.models m on m.id = a.model_id
                          where m.project_id = %s and a.alias = 'champion' limit 1""", (str(project_id),)).fetchone()
    if row is None:
        # The active deployment's live arm with the largest configured weight (a canary's
        # baseline until it has taken over).
        row = conn.execute("""select a.model_version_id from ml.deployments d join ml.deployment_arms a on a.deployment_id = d.id
                              where d.project_id = %s and d.status = 'active' and a.role = 'live'
                              order by a.weight desc, a.position limit 1""", (str(project_id),)).fetchone()
    if row is None:
        raise RetrainFailed("curate", "the project has no champion (no version aliased champion, no deployment)")
    found = conn.execute(
        """select m.name, v.version, v.id::text, r.algorithm, r.hyperparams, r.options, r.dataset_id::text, v.signature
           from ml.model_versions v join ml.models m on m.id = v.model_id left join ml.runs r on r.id = v.run_id
           where v.id = %s""", (str(row[0]),)).fetchone()
    assert found is not None
    keys = ("model", "version", "model_version_id", "algorithm", "hyperparams", "options", "dataset_id", "signature")
    return dict(zip(keys, found, strict=True))


# -- curate ----------------------------------------------------------------------------------------


def _valid(frame: pd.DataFrame, inputs: list[dict[str, Any]], target: str) -> tuple[pd.DataFrame, int]:
    """Rows with a label whose every present value parses as its input's type, coerced; and
    how many rows failed."""
    import pandas as pd

    ok = frame[target].notna()
    out = frame.copy()
    for col in inputs:
        name, dtype = col["name"], col.get("dtype", "float")
        if name not in out.columns:
            out[name] = None
        raw = out[name]
        if dtype in _NUMERIC:
            parsed = pd.to_numeric(raw, errors="coerce")
        elif dtype in ("timestamp", "timestamptz", "date"):
            parsed = pd.to_datetime(raw, utc=True, errors="coerce", format="mixed")
        elif dtype in ("bool", "boolean"):
            ok &= ~raw.map(lambda v: v is not None and v == v and not isinstance(v, bool))
            continue
        else:
            continue
        ok &= ~(raw.notna() & parsed.isna())
        out[name] = parsed
    return out[ok], int((~ok).sum())


def _labelled(conn: Conn, project: Any, names: list[str], since: datetime, as_of: datetime) -> pd.DataFrame:
    """The project's live predictions logged in (since, as_of] that have a label, oldest first:
    one column per input in ``names`` (from the logged features), the target (the label) and
    ``event_time`` (when the prediction was made). The retrain and learn jobs' raw rows."""
    import pandas as pd

    rows = conn.execute(
        """select p.created_at, p.features, f.label from ml.predictions p
           join ml.feedback f on f.prediction_id = p.id and f.predicted_at = p.created_at
           where p.tenant_id = (select ml.current_tenant()) and p.project_id = %s and p.shadow_of is null
             and p.created_at > %s and p.created_at <= %s and p.features is not null
           order by p.created_at""", (str(project.id), since, as_of)).fetchall()
    return pd.DataFrame([{**{n: (r[1] or {}).get(n) for n in names}, project.target: r[2], "event_time": r[0]}
                         for r in rows], columns=[*names, project.target, "event_time"])


def _curate(conn: Conn, project: Any, champion: dict[str, Any], policy: Mapping[str, Any], as_of: datetime,
            ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(training rows, holdout rows, what the curate row records)."""
    import pandas as pd

    from pgmlops import features

    data_policy = policy.get("data") or {}
    window = conn.execute("select %s::interval", (data_policy.get("window") or "30 days",)).fetchone()
    assert window is not None
    start = as_of - window[0]
    target = project.target
    inputs = list((champion["signature"] or {}).get("inputs") or [])
    names = [c["name"] for c in inputs]
    recent = _labelled(conn, project, names, start, as_of)
    stats: dict[str, Any] = {"window": {"start": start, "end": as_of}, "labelled_predictions": len(recent)}
    recent, invalid = _valid(recent, inputs, target)
    stats["invalid_excluded"] = invalid
    stats["duplicates_removed"] = 0
    if data_policy.get("dedupe", True):
        before = len(recent)
        recent = recent.drop_duplicates(subset=[*names, target])
        stats["duplicates_removed"] = before - len(recent)
    recent = recent.sort_values("event_time", kind="stable")
    n_hold = int(math.ceil(len(recent) * HOLDOUT_SHARE))
    if n_hold < MIN_HOLDOUT:
        raise RetrainFailed("curate", f"too few labelled predictions in the window {start:%Y-%m-%d %H:%M} to "
                            f"{as_of:%Y-%m-%d %H:%M}: {len(recent)} valid, a holdout of at least {MIN_HOLDOUT} needs "
                            f"{math.ceil(MIN_HOLDOUT / HOLDOUT_SHARE)}", stats)
    holdout, train = recent.iloc[len(recent) - n_hold:], recent.iloc[:len(recent) - n_hold]
    stats["holdout"] = {"rows": len(holdout), "start": holdout["event_time"].min(), "end": holdout["event_time"].max(),
                        "share": HOLDOUT_SHARE}
    # The reference: a (stratified) sample of the champion's training set.
    wanted = int(data_policy.get("reference_sample", 1000) or 0)
    reference = pd.DataFrame(columns=[*names, target])
    if wanted > 0 and champion.get("dataset_id"):
        ref = features.load_dataset(conn, UUID(champion["dataset_id"]))
        ref = ref[[c for c in [*names, target] if c in ref.columns]]
        if len(ref) > wanted:
            if data_policy.get("stratify", True) and project.task == "classification":
                ref = ref.groupby(target, group_keys=False).sample(frac=wanted / len(ref), random_state=0)
            else:
                ref = ref.sample(n=wanted, random_state=0)
        reference, ref_invalid = _valid(ref, inputs, target)
        stats["invalid_excluded"] += ref_invalid
    stats["reference_rows"] = len(reference)
    reference = reference.assign(event_time=train["event_time"].min() if len(train) else start)
    train = pd.concat([reference, train], ignore_index=True)
    balance = data_policy.get("balance", "none")
    if balance in ("undersample", "oversample") and project.task == "classification":
        counts = train[target].astype(str).value_counts()
        size = int(counts.min() if balance == "undersample" else counts.max())
        train = train.groupby(train[target].astype(str), group_keys=False).sample(
            n=size, replace=balance == "oversample", random_state=0)
        stats["balanced"] = {"method": balance, "rows_per_class": size}
    stats["training_rows"] = len(train)
    if project.task == "classification":
        stats["label_counts"] = {"training": {str(k): int(v) for k, v in train[target].astype(str).value_counts().items()},
                                 "holdout": {str(k): int(v) for k, v in holdout[target].astype(str).value_counts().items()}}
    return train.reset_index(drop=True), holdout.reset_index(drop=True), stats


def _plain(value: Any) -> Any:
    import pandas as pd

    if value is None:
        return None
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    return _jsonable(value)


def _materialize(conn: Conn, project: Any, cycle: str, inputs: list[dict[str, Any]], train: pd.DataFrame) -> UUID:
    """The training rows as a point-in-time training set: ingested into the feature group
    ``retrain_<project>`` (one entity per row of this cycle) and joined to a spine."""
    import pandas as pd

    from pgmlops import features

    group = f"retrain_{project.name}"[:63]
    target = project.target
    exists = conn.execute("select 1 from ml.feature_groups where tenant_id = (select ml.current_tenant()) and name = %s",
                          (group,)).fetchone()
    if exists is None:
        schema = {c["name"]: {"dtype": c.get("dtype", "float")} for c in inputs}
        conn.execute("select ml.create_feature_group(%s, 'retrain_row', %s, join_key => 'row_key')", (group, Jsonb(schema)))
    keys = [f"{cycle[:8]}_{i}" for i in range(len(train))]
    times = pd.to_datetime(train["event_time"], utc=True)
    values = [{"row_key": key, "event_time": at.isoformat(), **{c["name"]: _plain(record.get(c["name"])) for c in inputs}}
              for key, at, record in zip(keys, times, train.to_dict(orient="records"), strict=True)]
    for begin in range(0, len(values), 20000):
        conn.execute("select ml.ingest(%s, %s)", (group, Jsonb(values[begin:begin + 20000])))
    spine = pd.DataFrame({"row_key": keys, "event_time": times + timedelta(seconds=1), target: train[target].tolist()})
    name = f"retrain_{project.name}"[:40] + f"_{cycle[:6]}"
    return features.create_training_set(conn, name, spine, [f"{group}:{c['name']}" for c in inputs], target)


# -- evaluate --------------------------------------------------------------------------------------


def _outputs(model: Any, frame: pd.DataFrame, names: list[str], task: str,
             positive: Any) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any] | None]:
    """(predicted labels or values, the positive class's scores for binary classification)."""
    import numpy as np

    X = frame[names]
    if task != "classification":
        return np.asarray(model.predict(X), dtype=float), None
    proba = model.predict_proba(X)
    classes = list(model.classes_)
    labels = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
    scores = proba[:, classes.index(positive)] if positive in classes and len(classes) == 2 else None
    return labels, scores


def _compare(policy: Mapping[str, Any], task: str, y: Any, champ: tuple[Any, Any], chal: tuple[Any, Any]) -> Any:
    """The policy's test of the challenger against the champion on the holdout."""
    import numpy as np

    from pgmlops.retraining import _evaluation as retraining

    ev = policy.get("evaluation") or {}
    metric = ev.get("metric") or ("rmse" if task == "regression" else "roc_auc")
    test = ev.get("test") or "bootstrap"
    confidence = float(ev.get("confidence", 0.95))
    if test == "delong":
        if champ[1] is None or chal[1] is None:
            raise RetrainFailed("evaluate", "delong needs binary scores from both models")
        return retraining.delong(np.asarray(y, dtype=int), champ[1], chal[1], confidence=confidence)
    if test == "mcnemar":
        return retraining.mcnemar(np.asarray(y, dtype=object), champ[0], chal[0])
    scored = metric in ("roc_auc", "log_loss", "brier")
    a, b = (champ[1], chal[1]) if scored else (champ[0], chal[0])
    if a is None or b is None:
        raise RetrainFailed("evaluate", f"{metric} needs binary scores from both models")
    truth = np.asarray(y, dtype=int if scored else (float if task == "regression" else object))
    return retraining.paired_bootstrap(truth, a, b, metric, n_resamples=int(ev.get("bootstrap_samples", 1000)),
                                       confidence=confidence, seed=0)


# -- the job -----------------------------------------------------------------------------------------


def _recipe(policy: Mapping[str, Any], champion: Mapping[str, Any]) -> tuple[str, dict[str, Any], str]:
    """(algorithm, hyperparameters, where they come from) of the challenger's fit, for a recipe
    that names them (``algorithm``) or copies the champion's (``same_as``); a tuning recipe
    goes through :func:`_tune` instead."""
    recipe = policy.get("recipe") or {}
    if recipe.get("algorithm"):
        return str(recipe["algorithm"]), dict(recipe.get("hyperparams") or {}), "the policy's recipe"
    if not champion.get("algorithm"):
        raise RetrainFailed("train", "recipe same_as champion: the champion has no training run to copy")
    return str(champion["algorithm"]), dict(champion["hyperparams"] or {}), "the champion's algorithm and hyperparameters"


def _seconds(conn: Conn, interval: str | None) -> float | None:
    if not interval:
        return None
    row = conn.execute("select extract(epoch from %s::interval)::float8", (interval,)).fetchone()
    assert row is not None
    return float(row[0])


def _tune(ctx: JobContext, cycle: str, project: Any, recipe: Mapping[str, Any],
          dataset_id: UUID) -> tuple[list[LocalStudy], dict[str, Any], dict[str, Any]]:
    """The recipe's tuning budget on the cycle's training set, run in this job (see the module
    docstring): one study per algorithm (``ml.start_tuning_study``), the budget's trials dealt
    to them in turn, one at a time, until ``trials`` have run, ``timeout`` has passed or the
    worker is stopping (checked before each trial after the first: a running trial finishes,
    and at least one runs). Returns (the studies, the
    best complete trial ``{algorithm, study_id, trial, value, params, run_id}``, what the
    ``train`` row records under ``tuning``).

    Raises:
        RetrainFailed: no trial completed (nothing is registered; the trials are removed from
            Optuna's tables, since the cycle's transaction, and the studies' rows, roll back),
            or the training set cannot be tuned on.
    """
    from pgmlops.errors import LeaseLost, PgmlopsError
    from pgmlops.tuning import LocalStudy

    tune = recipe["tune"]
    algorithms = [str(a) for a in tune["algorithms"]]
    budget = int(tune.get("trials") or 20)
    timeout = _seconds(ctx.conn, tune.get("timeout"))
    options = {**dict(recipe.get("options") or {}), "metric": tune.get("metric") or
               ("rmse" if project.task == "regression" else "roc_auc")}
    # The budget dealt in turn: algorithm i gets the trials i, i + k, i + 2k, ...
    order = [algorithms[i % len(algorithms)] for i in range(budget)]
    studies: dict[str, LocalStudy] = {}
    outcomes: list[dict[str, Any]] = []
    stopped = "budget"
    started = time.monotonic()
    try:
        for algorithm in algorithms[:budget]:
            studies[algorithm] = LocalStudy.start(ctx, project.name, dataset_id, algorithm,
                                                  tune["search_spaces"][algorithm], order.count(algorithm), options)
        for i, algorithm in enumerate(order):
            # The first trial always runs: a cycle stopped here has a challenger to show for it.
            if i > 0 and timeout is not None and time.monotonic() - started >= timeout:
                stopped = "timeout"
                break
            if i > 0 and ctx.stopping.is_set():
                stopped = "worker stopping"
                break
            outcome = studies[algorithm].run_trial()
            outcomes.append(outcome)
            log.info("retraining cycle %s: tuning trial %s/%s (%s #%s) %s%s", cycle, i + 1, budget, algorithm,
                     outcome["trial"], outcome["state"],
                     f" {options['metric']} {outcome['value']:.4g}" if outcome["value"] is not None else "")
    except LeaseLost:
        raise
    except (PgmlopsError, PermanentError) as exc:
        for study in studies.values():
            study.discard()
        raise RetrainFailed("train", f"tuning failed: {exc}") from exc
    elapsed = time.monotonic() - started
    first = next(iter(studies.values()))
    bests = [{**b, "study_id": str(s.id)} for s in studies.values() if (b := s.best()) is not None]
    sign = -1.0 if first.direction == "maximize" else 1.0
    best = min(bests, key=lambda b: sign * float(b["value"])) if bests else None
    counts = {state: sum(1 for o in outcomes if o["state"] == state) for state in ("complete", "pruned", "failed")}
    summary: dict[str, Any] = {
        "study_id": best["study_id"] if best else str(first.id), "trials_run": len(outcomes), "trials_budget": budget,
        "timeout_seconds": timeout, "stopped_by": stopped, "seconds": round(elapsed, 3), "metric": options["metric"],
        "direction": first.direction, **counts,
        "studies": [{"algorithm": a, "study_id": str(s.id), "trials": sum(1 for o in outcomes if o["algorithm"] == a),
                     "best_trial": b["trial"] if (b := s.best()) else None, "best_value": b["value"] if b else None}
                    for a, s in studies.items()],
        "errors": [f"{o['algorithm']} trial {o['trial']}: {o['error']}" for o in outcomes if o["error"]][:10]}
    if best is None:
        for study in studies.values():
            study.discard()
        raise RetrainFailed("train", f"tuning {' and '.join(algorithms)}: none of the {len(outcomes)} trials completed "
                            f"({counts['pruned']} pruned, {counts['failed']} failed)"
                            + (f"; first error: {summary['errors'][0]}" if summary["errors"] else ""), {"tuning": summary})
    summary["best"] = {k: best[k] for k in ("algorithm", "study_id", "trial", "value", "params")}
    return list(studies.values()), best, summary


def _cycle(conn: Conn, ctx: JobContext, cycle: str, as_of: datetime, project: Any,
           policy: Mapping[str, Any]) -> dict[str, Any]:
    """The cycle's steps, in the job's transaction. Optuna's tables are written outside it: when
    the cycle fails after tuning (at training, evaluation, ...), its transaction rolls back the
    studies' rows and this deletes their trials from Optuna's tables too."""
    studies: list[LocalStudy] = []
    try:
        return _cycle_steps(conn, ctx, cycle, as_of, project, policy, studies)
    except BaseException:
        for study in studies:
            study.discard()
        raise


def _cycle_steps(conn: Conn, ctx: JobContext, cycle: str, as_of: datetime, project: Any,
                 policy: Mapping[str, Any], studies: list[LocalStudy]) -> dict[str, Any]:
    from pgmlops import models, scoring
    from pgmlops.retraining import _evaluation as retraining
    from pgmlops.training import run_training

    job_id = ctx.job.id
    champion = _champion(conn, project.id)
    inputs = list((champion["signature"] or {}).get("inputs") or [])
    names = [c["name"] for c in inputs]
    train, holdout, stats = _curate(conn, project, champion, policy, as_of)
    dataset_id = _materialize(conn, project, cycle, inputs, train)
    stats["dataset_id"] = str(dataset_id)
    _step(conn, cycle, "curate", data=stats, version=champion["model_version_id"], decision="curated", job_id=job_id,
          reason=(f"{stats['training_rows']} training rows ({stats['reference_rows']} from the champion's training set, "
                  f"the rest labelled predictions), holdout of the latest {stats['holdout']['rows']}; "
                  f"{stats['duplicates_removed']} duplicates removed, {stats['invalid_excluded']} invalid rows excluded"))

    recipe = policy.get("recipe") or {}
    tuning: dict[str, Any] | None = None
    options = dict(recipe.get("options") or {})
    options["model"] = champion["model"]
    options["tags"] = {**dict(options.get("tags") or {}), "retraining_cycle": cycle}
    if recipe.get("tune"):
        made, best, tuning = _tune(ctx, cycle, project, recipe, dataset_id)
        studies.extend(made)
        algorithm, hyperparams = str(best["algorithm"]), dict(best["params"])
        ran, budget = tuning["trials_run"], tuning["trials_budget"]
        source = (f"tuned {' and '.join(s['algorithm'] for s in tuning['studies'])}, "
                  + (f"{ran} trials (the whole budget)" if tuning["stopped_by"] == "budget" else
                     f"{ran} of {budget} trials (timeout {tuning['timeout_seconds']:g} s)" if tuning["stopped_by"] == "timeout"
                     else f"{ran} of {budget} trials (the worker was stopping)")
                  + f": best trial {best['trial']}, {tuning['metric']} {best['value']:.4g}")
        options["tags"] = {**options["tags"], "study_id": best["study_id"], "trial": best["trial"]}
    else:
        algorithm, hyperparams, source = _recipe(policy, champion)
    try:
        fitted = run_training(conn, project_id=project.id, dataset_id=dataset_id, algorithm=algorithm,
                              hyperparams=hyperparams, options=options, job_id=job_id, should_stop=ctx.lost.is_set,
                              study_id=tuning["best"]["study_id"] if tuning else None)
    except PermanentError as exc:
        for study in studies:
            study.discard()
        raise RetrainFailed("train", f"training {algorithm} failed: {exc}", {"tuning": tuning} if tuning else None) from exc
    version, version_id = int(fitted["version"]), str(fitted["model_version_id"])
    for study in studies:
        study.finish(version_id if tuning and str(study.id) == tuning["best"]["study_id"] else None)
    conn.execute("select ml.set_alias(%s, 'challenger', %s)", (champion["model"], version))
    challenger = models.load_model(conn, f"{champion['model']}@{version}")
    try:
        with conn.transaction():
            scoring.compile_registered(conn, version_id, challenger, task=project.task)
        compiled = "compiled"
    except Exception as exc:  # noqa: BLE001 - a model the compiler cannot express is served by workers
        compiled = f"not compiled: {exc}"
    _step(conn, cycle, "train", version=version_id, job_id=job_id, decision="registered",
          evidence={"algorithm": algorithm, "hyperparams": hyperparams, "recipe": source, "compiled": compiled,
                    **({"tuning": tuning} if tuning else {})},
          data={"dataset_id": str(dataset_id), "run_id": fitted["run_id"], "n_train": fitted["n_train"],
                "n_test": fitted["n_test"]},
          test_results={"metrics": fitted["metrics"]},
          reason=f"{champion['model']}@{version} ({algorithm}, {source}) registered as challenger")

    # Evaluate: both models on the same holdout.
    champ_model = models.load_model(conn, f"{champion['model']}@{champion['version']}")
    ev = policy.get("evaluation") or {}
    y = holdout[project.target].tolist()
    positive = list(getattr(challenger, "classes_", [None]))[-1] if project.task == "classification" else None
    champ_out = _outputs(champ_model, holdout, names, project.task, positive)
    chal_out = _outputs(challenger, holdout, names, project.task, positive)
    # Score-based tests and metrics compare the positive class's scores with 0/1 truth.
    scored = ev.get("test") == "delong" or ev.get("metric") in ("roc_auc", "log_loss", "brier")
    truth: Any = [1 if v == positive else 0 for v in y] if scored else y
    recalled = _recall(conn, cycle, job_id, project, policy, champion, version, truth, chal_out, holdout, names, positive)
    if recalled is not None:
        version, version_id, chal_out = recalled
    result = _compare(policy, project.task, truth, champ_out, chal_out)
    decision = retraining.decide(result, confidence=float(ev.get("confidence", 0.95)),
                                 min_improvement=float(ev.get("min_improvement", 0) or 0))
    gates_row = conn.execute("select ml.check_promotion(%s, %s, 'champion')", (champion["model"], version)).fetchone()
    gates: dict[str, Any] = dict(gates_row[0]) if gates_row else {"passed": True, "gates": []}
    accepted = decision.accepted and bool(gates.get("passed"))
    reason = decision.reason
    if decision.accepted and not gates.get("passed"):
        reason += "; promotion gates failed: " + "; ".join(g["message"] for g in gates.get("gates", []) if not g["passed"])
    tests = {**result.to_dict(), "gates": gates, "champion_version": champion["version"], "challenger_version": version}
    _step(conn, cycle, "evaluate", version=version_id, job_id=job_id, test_results=tests,
          data={"holdout_rows": len(holdout)}, decision="better" if accepted else "not better", reason=reason)
    if not accepted:
        _step(conn, cycle, "reject", version=version_id, job_id=job_id, decision="rejected",
              reason=f"{champion['model']}@{version} rejected, {champion['model']}@{champion['version']} stays champion: "
                     + reason)
        return {"decision": "rejected", "challenger": version, "reason": reason}
    return _online(conn, cycle, job_id, project, policy, champion, version, version_id, reason)


def _recall(conn: Conn, cycle: str, job_id: int, project: Any, policy: Mapping[str, Any], champion: Mapping[str, Any],
            version: int, truth: Any, chal_out: tuple[Any, Any], holdout: pd.DataFrame, names: list[str],
            positive: Any) -> tuple[int, str, tuple[Any, Any]] | None:
    """A version of the champion's model that a ``recall`` row of this cycle names (it served a
    regime the drift report recognised) is weighed against the retrained challenger on the same
    holdout with the policy's test: when it is better with the configured confidence it replaces
    the challenger (alias ``challenger`` moved to it) and ``(version, model_version_id,
    outputs)`` is returned; otherwise ``None``. Either way a second ``recall`` row records the
    comparison (decision ``recalled`` or ``set aside``)."""
    from pgmlops import models
    from pgmlops.retraining import _evaluation as retraining

    row = conn.execute(
        """select v.id::text, v.version from ml.retraining_events e join ml.model_versions v on v.id = e.model_version_id
           join ml.models m on m.id = v.model_id
           where e.cycle_id = %s and e.kind = 'recall' and m.name = %s and v.id::text <> %s and v.version <> %s
           order by e.at desc limit 1""", (cycle, champion["model"], champion["model_version_id"], version)).fetchone()
    if row is None:
        return None
    rec_id, rec_version = str(row[0]), int(row[1])
    model = champion["model"]
    rec_out = _outputs(models.load_model(conn, f"{model}@{rec_version}"), holdout, names, project.task, positive)
    ev = policy.get("evaluation") or {}
    versus = _compare(policy, project.task, truth, chal_out, rec_out)
    verdict = retraining.decide(versus, confidence=float(ev.get("confidence", 0.95)),
                                min_improvement=float(ev.get("min_improvement", 0) or 0))
    tests = {**versus.to_dict(), "retrained_version": version, "recalled_version": rec_version}
    if verdict.accepted:
        conn.execute("select ml.set_alias(%s, 'challenger', %s)", (model, rec_version))
        reason = (f"{model}@{rec_version} (it served this regime before) is better than the retrained {model}@{version} "
                  f"on the same holdout and goes on as the challenger: {verdict.reason}")
    else:
        reason = (f"{model}@{rec_version} (it served this regime before) is not better than the retrained "
                  f"{model}@{version} on the same holdout: set aside; {verdict.reason}")
    _step(conn, cycle, "recall", version=rec_id, job_id=job_id, test_results=tests,
          decision="recalled" if verdict.accepted else "set aside", reason=reason)
    return (rec_version, rec_id, rec_out) if verdict.accepted else None


def _standing_approval(conn: Conn, cycle: str, version_id: str) -> dict[str, Any]:
    """The automatic promotion policy's approval of the version (``ml.apply_standing_approval``):
    ``{approved, by, standing, reason}``."""
    row = conn.execute("select ml.apply_standing_approval(%s, %s)", (cycle, version_id)).fetchone()
    assert row is not None
    return dict(row[0])


def _online(conn: Conn, cycle: str, job_id: int, project: Any, policy: Mapping[str, Any], champion: Mapping[str, Any],
            version: int, version_id: str, why: str) -> dict[str, Any]:
    """The online step the policy asks for, recorded as shadow / canary / promote / approval."""
    model = champion["model"]
    online = policy.get("online") or {}
    mode = online.get("mode", "shadow")
    promotion = policy.get("promotion", "approval")
    champ = {"arm": "champion", "model": model, "version": champion["version"], "role": "live"}
    chal = {"arm": "challenger", "model": model, "version": version}
    row: Any = None
    try:
        with conn.transaction():
            if mode == "shadow":
                row = conn.execute("select ml.deploy(%s, 'shadow', %s, %s)", (
                    project.name, Jsonb([champ, {**chal, "role": "shadow"}]),
                    Jsonb({"reason": f"retraining cycle {cycle}: shadow of the challenger"}))).fetchone()
                kind, decision = "shadow", "shadow deployed"
                reason = (f"{model}@{version} deployed in shadow beside {model}@{champion['version']} (live) until "
                          f"{online.get('min_samples', 500)} labelled comparisons; {why}")
            elif mode == "canary":
                weight = float(online.get("canary_weight") or 0.1)
                if promotion == "automatic":
                    # A canary takes live traffic: the policy's standing approval first (when it
                    # cannot give one, the deployment below is refused and says so).
                    _standing_approval(conn, cycle, version_id)
                row = conn.execute("select ml.deploy(%s, 'canary', %s, %s)", (
                    project.name, Jsonb([champ, {**chal, "role": "live"}]),
                    Jsonb({"reason": f"retraining cycle {cycle}: canary of the challenger", "canary_arm": "challenger",
                           "schedule": [{"weight": weight, "after": "0 minutes"}]}))).fetchone()
                kind, decision = "canary", "canary deployed"
                reason = f"{model}@{version} deployed as a canary with {weight:.0%} of the traffic; {why}"
            elif promotion == "automatic" and (approval := _standing_approval(conn, cycle, version_id))["approved"]:
                conn.execute("select ml.promote(%s, %s, 'champion')", (model, version))
                row = conn.execute("select ml.deploy(%s, 'single', %s, %s)", (
                    project.name, Jsonb([{**chal, "arm": "a", "role": "live"}]),
                    Jsonb({"reason": f"retraining cycle {cycle}: automatic promotion"}))).fetchone()
                kind, decision = "promote", "promoted"
                reason = (f"{model}@{version} promoted to champion and deployed (automatic promotion, no online stage; "
                          f"{approval['reason']}); {why}")
            elif promotion == "automatic":
                kind, decision = "approval", "awaiting approval"
                reason = f"{model}@{version} is better offline; promotion waits for approval ({approval['reason']}); {why}"
            else:
                kind, decision = "approval", "awaiting approval"
                reason = f"{model}@{version} is better offline; promotion needs approval (policy promotion approval); {why}"
    except psycopg.Error as exc:
        kind, decision, row = "approval", "awaiting approval", None
        reason = (f"{model}@{version} is better offline but the {'promotion' if mode == 'none' else mode} was refused: "
                  f"{exc.diag.message_primary}")
    deployment = str(row[0]) if row and row[0] else None
    _step(conn, cycle, kind, version=version_id, job_id=job_id, decision=decision, reason=reason,
          evidence={"mode": mode, "promotion": promotion, "deployment_id": deployment})
    return {"decision": decision, "challenger": version, "deployment_id": deployment, "reason": reason}


def retrain(ctx: JobContext) -> dict[str, Any]:
    """Payload ``{trigger_event_id, project}``; result ``{decision, challenger?, deployment_id?,
    reason}`` (decision ``rejected``, ``shadow deployed``, ``canary deployed``, ``promoted``,
    ``awaiting approval`` or ``failed``).

    Raises:
        PermanentError: no such trigger row, or the project has no retraining policy.
    """
    from pgmlops.training import load_project

    conn = ctx.conn
    cycle = str(ctx.payload.get("trigger_event_id") or "")
    row = conn.execute("""select project_id, as_of from ml.retraining_events
                          where id::text = %s and kind = 'trigger' and tenant_id = (select ml.current_tenant())""",
                       (cycle,)).fetchone()
    if row is None:
        raise PermanentError(f"trigger_event_id: retraining trigger {cycle or 'NULL'} does not exist")
    project = load_project(conn, row[0])
    found = conn.execute("select policy from ml.retraining_policies where project_id = %s", (str(project.id),)).fetchone()
    if found is None:
        raise PermanentError(f"project {project.name} has no retraining policy")
    try:
        with conn.transaction():
            return _cycle(conn, ctx, cycle, row[1], project, found[0])
    except RetrainFailed as exc:
        _step(conn, cycle, "failed", data=exc.data, decision="failed", reason=f"{exc.step}: {exc}", job_id=ctx.job.id)
        return {"decision": "failed", "reason": f"{exc.step}: {exc}"}


def start_retraining(conn: Conn, project: str, reason: str = "manual", *, tenant: UUID | str | None = None) -> int:
    """A manual retraining trigger (``ml.retrain``): records a ``trigger`` event with reason
    ``manual: <reason>``, enqueues the ``retrain`` job and returns its id. Given ``tenant``, the
    call runs in its own transaction of a service caller acting for it (committed on return);
    without it, it joins the connection's transaction, which must already act for a tenant.

    Raises:
        NotFound: no such project in the tenant.
        InvalidState: SQLSTATE 55000, the project has no retraining policy or a disabled one.
        AccessDenied: a viewer or a non-member.
    """
    with tenant_context(conn, tenant) if tenant is not None else nullcontext(conn):
        return int(call(conn, "ml.retrain(%s, %s)", (project, reason)))
