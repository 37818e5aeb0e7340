"""The ``learn`` job handler: continuous learning of an incremental champion.

Payload ``{trigger_event_id, project}`` (``ml.learn``, or the maintenance run once the policy's
``continuous.every`` has passed with ``continuous.min_new_labels`` new labels). The cycle is the
trigger row of ``ml.retraining_events`` (evidence ``{continuous: true}``); the job records its
outcome with ``ml.record_retraining_step``, in the job's transaction:

1. The labelled predictions since the project's last ``update`` or ``discard`` (at most the
   policy's ``data.window`` back) with their logged features and label, validated and
   deduplicated as the retrain job's curation does; the most recent 20% (at least
   :data:`~pgmlops.retraining._retrain.MIN_HOLDOUT` rows) held out.
2. A copy of the champion is updated on the rest: a scikit-learn pipeline keeps its fitted
   preprocessing and only its final estimator learns (``partial_fit``, ``continuous.epochs``
   passes); the torch MLP runs ``continuous.epochs`` epochs of Adam (its learning rate) on the
   new rows, from its fitted weights.
3. Champion and update are scored on the holdout with ``continuous.metric``. Not worse: the
   update is registered as the model's next version (a run of the champion's algorithm whose
   options name the cycle and the base version), an ``update`` row records both metrics; with
   ``promotion: automatic`` it is promoted and deployed alone, otherwise (or when the database
   refuses the promotion) it is aliased ``challenger`` and an ``approval`` row says why. Worse:
   nothing is registered, a ``discard`` row records both metrics and the champion is unchanged.

Too few rows or a champion that does not learn incrementally: a ``failed`` row; the job
succeeds with ``{decision: "failed"}``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.types.json import Jsonb

from pgmlops.jobs.handlers import JobContext, PermanentError
from pgmlops.retraining._retrain import MIN_HOLDOUT, RetrainFailed, _champion, _labelled, _step, _valid

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["HOLDOUT_SHARE", "HIGHER_IS_BETTER", "learn", "holdout_metric", "update_model"]

Conn = psycopg.Connection[Any]

HOLDOUT_SHARE = 0.2
"""The most recent share of the new labelled rows held out for the before/after comparison."""
HIGHER_IS_BETTER = {"accuracy": True, "roc_auc": True, "f1": True, "r2": True, "log_loss": False, "rmse": False,
                    "mae": False}
"""Whether a larger value of each continuous.metric is better."""


def _final(model: Any) -> tuple[Any, Any]:
    """(the fitted preprocessing or None, the final estimator)."""
    if hasattr(model, "steps") and model.steps:
        return (model[:-1] if len(model.steps) > 1 else None), model.steps[-1][1]
    return None, model


def _targets(estimator: Any, y: Any) -> np.ndarray[Any, Any]:
    """The labels in the champion's classes' type (feedback labels come back as JSON)."""
    import numpy as np

    classes = getattr(estimator, "classes_", None)
    values = np.asarray(y)
    if classes is not None:
        try:
            return values.astype(np.asarray(classes).dtype)
        except (TypeError, ValueError):
            return values
    return values.astype(float)


def update_model(model: Any, X: pd.DataFrame, y: Any, *, epochs: int, seed: int = 0) -> Any:
    """A copy of ``model`` updated on ``(X, y)``; ``model`` itself is untouched.

    A pipeline keeps its fitted preprocessing (rows only go through ``transform``) and its final
    estimator learns: ``partial_fit`` ``epochs`` times (with the fitted classes), or, for a
    pgmlops torch model, ``epochs`` epochs of Adam at its learning rate from its fitted weights.
    Labels outside a classifier's classes are dropped.

    Raises:
        ValueError: the final estimator learns neither way.
    """
    import numpy as np

    from pgmlops.models.torch_models import TorchEstimator

    updated = copy.deepcopy(model)
    pre, est = _final(updated)
    Xt = pre.transform(X) if pre is not None else X
    target = _targets(est, y)
    classes = getattr(est, "classes_", None)
    if classes is not None:
        keep = np.isin(target, np.asarray(classes))
        Xt, target = Xt[keep], target[keep]
    if isinstance(est, TorchEstimator):
        _torch_epochs(est, Xt, target, epochs=epochs, seed=seed)
    elif hasattr(est, "partial_fit"):
        for _ in range(epochs):
            if classes is not None:
                est.partial_fit(Xt, target, classes=classes)
            else:
                est.partial_fit(Xt, target)
    else:
        raise ValueError(f"{type(est).__name__} does not learn incrementally (no partial_fit, not a torch model)")
    return updated


def _torch_epochs(est: Any, X: Any, y: Any, *, epochs: int, seed: int) -> None:
    import numpy as np
    import torch

    inputs = torch.from_numpy(est._check_X(X))
    if hasattr(est, "classes_"):
        codes = np.searchsorted(np.asarray(est.classes_), y)
        target = torch.from_numpy(codes.astype(np.int64))
    else:
        values = (np.asarray(y, dtype=np.float64) - est.y_mean_) / est.y_scale_
        target = torch.from_numpy(values.astype(np.float32)).reshape(-1, 1)
    network = est.network_
    optimizer = torch.optim.Adam(network.parameters(), lr=float(est.lr), weight_decay=float(est.weight_decay))
    generator = torch.Generator().manual_seed(seed)
    n = inputs.shape[0]
    batch = max(1, min(int(est.batch_size), n))
    network.train()
    try:
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, batch):
                idx = order[start:start + batch]
                optimizer.zero_grad()
                loss = est._loss(torch, network(inputs[idx]), target[idx])
                loss.backward()
                optimizer.step()
    finally:
        network.eval()


def holdout_metric(model: Any, X: pd.DataFrame, y: Any, metric: str, task: str) -> float:
    """``metric`` of ``model`` on ``(X, y)`` (see :data:`HIGHER_IS_BETTER` for its direction)."""
    import numpy as np
    from sklearn import metrics as m

    _, est = _final(model)
    truth = _targets(est, y)
    if task == "regression":
        pred = np.asarray(model.predict(X), dtype=float)
        if metric == "rmse":
            return float(math.sqrt(m.mean_squared_error(truth, pred)))
        if metric == "mae":
            return float(m.mean_absolute_error(truth, pred))
        return float(m.r2_score(truth, pred))
    classes = list(est.classes_)
    proba = model.predict_proba(X)
    labels = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
    if metric == "accuracy":
        return float(np.mean(labels == np.asarray(truth, dtype=object)))
    if metric == "log_loss":
        return float(m.log_loss(truth, proba, labels=classes))
    if metric == "f1":
        return float(m.f1_score(np.asarray(truth, dtype=object), labels, pos_label=classes[-1],
                                average="binary" if len(classes) == 2 else "macro"))
    if len(classes) == 2:
        return float(m.roc_auc_score((np.asarray(truth) == classes[-1]).astype(int), proba[:, 1]))
    return float(m.roc_auc_score(truth, proba, multi_class="ovr", labels=classes))


def _rows(conn: Conn, project: Any, names: list[str], inputs: list[dict[str, Any]], since: datetime,
          as_of: datetime) -> tuple[pd.DataFrame, dict[str, Any]]:
    target = project.target
    frame = _labelled(conn, project, names, since, as_of)
    stats: dict[str, Any] = {"window": {"start": since, "end": as_of}, "labelled_predictions": len(frame)}
    frame, invalid = _valid(frame, inputs, target)
    before = len(frame)
    frame = frame.drop_duplicates(subset=[*names, target]).sort_values("event_time", kind="stable")
    stats.update(invalid_excluded=invalid, duplicates_removed=before - len(frame))
    return frame.reset_index(drop=True), stats


def _register(conn: Conn, ctx: JobContext, project: Any, champion: Mapping[str, Any], updated: Any, cycle: str,
              metrics: dict[str, float], n_rows: int, seconds: float) -> tuple[int, str]:
    from pgmlops.models import artifacts

    data, fmt, digest = artifacts.dump(updated)
    options = {"model": champion["model"], "continuous_learning": {
        "cycle": cycle, "base_version": champion["version"], "rows": n_rows}}
    run = conn.execute("select ml.start_run(%s, %s, %s, %s, %s, %s, %s)",
                       (str(project.id), ctx.job.id, champion["algorithm"], Jsonb(dict(champion["hyperparams"] or {})),
                        Jsonb(options), champion["dataset_id"], Jsonb({}))).fetchone()
    assert run is not None
    conn.execute("select ml.finish_run(%s, 'succeeded', %s, %s, %s, null)",
                 (str(run[0]), Jsonb(metrics), seconds, len(data)))
    row = conn.execute("select ml.register_model_version(%s, %s, %s, %s, %s, %s, %s, %s)",
                       (str(run[0]), champion["model"], data, fmt, digest, Jsonb(champion["signature"]), Jsonb(metrics),
                        Jsonb({"continuous_learning_cycle": cycle, "base_version": champion["version"]}))).fetchone()
    assert row is not None
    return int(row[0]["version"]), str(row[0]["model_version_id"])


class _NotApproved(Exception):
    """The automatic promotion policy could not approve the update (the reason)."""


def _publish(conn: Conn, ctx: JobContext, cycle: str, project: Any, policy: Mapping[str, Any],
             champion: Mapping[str, Any], version: int, version_id: str, why: str) -> tuple[str, str | None]:
    """Promote and deploy (automatic promotion) or alias challenger and ask for approval."""
    model = champion["model"]
    deployment: str | None = None
    if policy.get("promotion") == "automatic":
        try:
            with conn.transaction():
                approval = conn.execute("select ml.apply_standing_approval(%s, %s)", (cycle, version_id)).fetchone()
                if approval is None or not approval[0]["approved"]:
                    raise _NotApproved(approval[0]["reason"] if approval else "no approval")
                conn.execute("select ml.promote(%s, %s, 'champion')", (model, version))
                row = conn.execute("select ml.deploy(%s, 'single', %s, %s)", (
                    project.name, Jsonb([{"arm": "a", "model": model, "version": version, "role": "live"}]),
                    Jsonb({"reason": f"continuous learning cycle {cycle}: automatic promotion"}))).fetchone()
            deployment = str(row[0]) if row and row[0] else None
            _step(conn, cycle, "promote", version=version_id, job_id=ctx.job.id, decision="promoted",
                  evidence={"promotion": "automatic", "deployment_id": deployment},
                  reason=(f"{model}@{version} (updated from @{champion['version']}) promoted and deployed "
                          f"({approval[0]['reason']}); {why}"))
            return "promoted", deployment
        except _NotApproved as exc:
            reason = f"{model}@{version} kept and aliased challenger; promotion waits for approval ({exc})"
        except psycopg.Error as exc:
            reason = (f"{model}@{version} kept but its promotion was refused: {exc.diag.message_primary}; "
                      f"aliased challenger")
    else:
        reason = f"{model}@{version} kept and aliased challenger; promotion needs approval (policy promotion approval)"
    conn.execute("select ml.set_alias(%s, 'challenger', %s)", (model, version))
    _step(conn, cycle, "approval", version=version_id, job_id=ctx.job.id, decision="awaiting approval", reason=reason,
          evidence={"promotion": policy.get("promotion", "approval")})
    return "awaiting approval", None


def _cycle(conn: Conn, ctx: JobContext, cycle: str, as_of: datetime, project: Any,
           policy: Mapping[str, Any]) -> dict[str, Any]:
    from pgmlops import models

    cont = policy.get("continuous") or {}
    champion = _champion(conn, project.id)
    inputs = list((champion["signature"] or {}).get("inputs") or [])
    names = [c["name"] for c in inputs]
    window = conn.execute("select %s::timestamptz - %s::interval", (as_of, (policy.get("data") or {}).get("window") or "30 days"))
    start = window.fetchone()
    assert start is not None
    last = conn.execute("""select max(as_of) from ml.retraining_events where project_id = %s and kind in ('update', 'discard')
                           and as_of < %s""", (str(project.id), as_of)).fetchone()
    since = max(start[0], last[0]) if last and last[0] else start[0]
    frame, stats = _rows(conn, project, names, inputs, since, as_of)
    n_hold = int(math.ceil(len(frame) * HOLDOUT_SHARE))
    if n_hold < MIN_HOLDOUT or len(frame) - n_hold < 1:
        raise RetrainFailed("learn", f"too few new labelled predictions since {since:%Y-%m-%d %H:%M}: {len(frame)} valid, "
                            f"a holdout of at least {MIN_HOLDOUT} needs {math.ceil(MIN_HOLDOUT / HOLDOUT_SHARE)}", stats)
    train, holdout = frame.iloc[:len(frame) - n_hold], frame.iloc[len(frame) - n_hold:]
    stats.update(training_rows=len(train), holdout={"rows": len(holdout), "start": holdout["event_time"].min(),
                                                    "end": holdout["event_time"].max(), "share": HOLDOUT_SHARE})
    base = models.load_model(conn, f"{champion['model']}@{champion['version']}")
    metric = str(cont.get("metric") or ("rmse" if project.task == "regression" else "accuracy"))
    epochs = int(cont.get("epochs") or 3)
    began = time.perf_counter()
    try:
        updated = update_model(base, train[names], train[project.target].tolist(), epochs=epochs)
    except ValueError as exc:
        raise RetrainFailed("learn", f"{champion['model']}@{champion['version']} cannot be updated: {exc}", stats) from exc
    seconds = time.perf_counter() - began
    y = holdout[project.target].tolist()
    before = holdout_metric(base, holdout[names], y, metric, project.task)
    after = holdout_metric(updated, holdout[names], y, metric, project.task)
    higher = HIGHER_IS_BETTER[metric]
    kept = after >= before if higher else after <= before
    results = {"metric": metric, "before": before, "after": after, "higher_is_better": higher,
               "champion_version": champion["version"], "epochs": epochs}
    verdict = (f"holdout {metric} {before:.4f} -> {after:.4f} on the latest {len(holdout)} rows "
               f"({'not worse' if kept else 'worse'}; {len(train)} new rows learnt, {epochs} epochs)")
    if not kept:
        _step(conn, cycle, "discard", version=champion["model_version_id"], job_id=ctx.job.id, data=stats,
              test_results=results, decision="discarded",
              reason=f"update of {champion['model']}@{champion['version']} discarded, it stays unchanged: {verdict}")
        return {"decision": "discarded", "metric": metric, "before": before, "after": after}
    version, version_id = _register(conn, ctx, project, champion, updated, cycle, {metric: after}, len(train), seconds)
    _step(conn, cycle, "update", version=version_id, job_id=ctx.job.id, data=stats, test_results=results,
          decision="kept", reason=f"{champion['model']}@{version} updated from @{champion['version']}: {verdict}")
    decision, deployment = _publish(conn, ctx, cycle, project, policy, champion, version, version_id, verdict)
    return {"decision": "kept", "outcome": decision, "version": version, "deployment_id": deployment, "metric": metric,
            "before": before, "after": after}


def learn(ctx: JobContext) -> dict[str, Any]:
    """Payload ``{trigger_event_id, project}``; result ``{decision: "kept", outcome, version,
    deployment_id, metric, before, after}``, ``{decision: "discarded", metric, before, after}``
    or ``{decision: "failed", reason}``.

    Raises:
        PermanentError: no such continuous-learning trigger row, or the project has no policy
            with continuous learning.
    """
    from pgmlops.training import load_project

    conn = ctx.conn
    cycle = str(ctx.payload.get("trigger_event_id") or "")
    row = conn.execute("""select project_id, as_of from ml.retraining_events
                          where id::text = %s and kind = 'trigger' and evidence ? 'continuous'
                            and tenant_id = (select ml.current_tenant())""", (cycle,)).fetchone()
    if row is None:
        raise PermanentError(f"trigger_event_id: continuous-learning trigger {cycle or 'NULL'} does not exist")
    project = load_project(conn, row[0])
    found = conn.execute("select policy from ml.retraining_policies where project_id = %s", (str(project.id),)).fetchone()
    if found is None or not (found[0].get("continuous") or {}).get("enabled"):
        raise PermanentError(f"project {project.name} has no retraining policy with continuous learning enabled")
    try:
        with conn.transaction():
            return _cycle(conn, ctx, cycle, row[1], project, found[0])
    except RetrainFailed as exc:
        _step(conn, cycle, "failed", data=exc.data, decision="failed", reason=f"{exc.step}: {exc}", job_id=ctx.job.id)
        return {"decision": "failed", "reason": f"{exc.step}: {exc}"}
