"""Evaluation metrics of fitted models, computed with scikit-learn's own functions.

Every function returns a flat ``{name: float}`` dict (the shape ``ml.log_run_metrics`` and the
promotion gates read). A metric that is undefined on the given data (ROC AUC on a test set
holding one class, say) is left out rather than stored as NaN: JSON has no NaN, and a gate
treats a missing metric as failed.

Conventions (also in docs/training.md):

* Binary classification: the positive class is ``classes[1]``, the greater label in sorted
  order (``True``, ``1``, or the second name alphabetically). Multiclass: precision, recall and
  F1 are macro averages; ROC AUC is one-vs-rest, macro; PR AUC is the macro average of the
  one-vs-rest average precisions; Brier score is the mean over classes of the one-vs-rest Brier
  scores (so a binary and a multiclass value are on the same 0..1 scale).
* Anomaly detection: ``scores`` are anomaly scores (higher = more anomalous); label 1 (or True)
  marks an anomaly. Precision at k is the share of true anomalies among the k highest scores,
  with k the number of true anomalies in the test set unless given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn import metrics as skm

__all__ = [
    "HIGHER_IS_BETTER",
    "anomaly_metrics",
    "classification_metrics",
    "default_metric",
    "precision_at_k",
    "regression_metrics",
]

# Which way each metric improves; tuning takes its default direction from here.
HIGHER_IS_BETTER: dict[str, bool] = {
    "accuracy": True, "precision": True, "recall": True, "f1": True, "roc_auc": True, "pr_auc": True,
    "log_loss": False, "brier": False,
    "mae": False, "rmse": False, "r2": True, "mape": False,
    "precision_at_k": True,
}

_DEFAULT_METRIC = {"classification": "roc_auc", "regression": "rmse", "anomaly_detection": "roc_auc"}


def default_metric(task: str) -> str:
    """The metric a task is judged by when none is named: roc_auc, rmse, roc_auc."""
    return _DEFAULT_METRIC[task]


def _finite(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}


def _guard(fn: Any, *args: Any, **kwargs: Any) -> float | None:
    # scikit-learn raises ValueError where a metric is undefined (one class in y_true, ...).
    try:
        return float(fn(*args, **kwargs))
    except ValueError:
        return None


def classification_metrics(y_true: Any, y_pred: Any, proba: Any, classes: Sequence[Any]) -> dict[str, float]:
    """accuracy, precision, recall, f1, roc_auc, pr_auc, log_loss and brier.

    Args:
        y_true: the true labels.
        y_pred: the predicted labels (``predict``).
        proba: class probabilities (``predict_proba``), one column per entry of ``classes``.
        classes: the model's classes, in the order of ``proba``'s columns.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    proba = np.asarray(proba, dtype=np.float64)
    labels = list(classes)
    out: dict[str, Any] = {"accuracy": skm.accuracy_score(y_true, y_pred)}
    if len(labels) == 2:
        positive = labels[1]
        average: dict[str, Any] = {"average": "binary", "pos_label": positive}
    else:
        average = {"average": "macro", "labels": labels}
    out["precision"] = skm.precision_score(y_true, y_pred, zero_division=0, **average)
    out["recall"] = skm.recall_score(y_true, y_pred, zero_division=0, **average)
    out["f1"] = skm.f1_score(y_true, y_pred, zero_division=0, **average)
    out["log_loss"] = _guard(skm.log_loss, y_true, proba, labels=labels)
    if len(labels) == 2:
        is_positive = (y_true == labels[1]).astype(int)
        out["roc_auc"] = _guard(skm.roc_auc_score, is_positive, proba[:, 1])
        out["pr_auc"] = _guard(skm.average_precision_score, is_positive, proba[:, 1])
        out["brier"] = _guard(skm.brier_score_loss, is_positive, proba[:, 1])
    else:
        out["roc_auc"] = _guard(skm.roc_auc_score, y_true, proba, multi_class="ovr", average="macro", labels=labels)
        onehot = np.column_stack([(y_true == c).astype(int) for c in labels])
        present = onehot.sum(axis=0) > 0
        # average_precision_score is undefined for a class absent from y_true: macro over the rest.
        out["pr_auc"] = _guard(skm.average_precision_score, onehot[:, present], proba[:, present], average="macro") \
            if present.any() else None
        out["brier"] = float(np.mean([np.mean((proba[:, k] - onehot[:, k]) ** 2) for k in range(len(labels))]))
    return _finite(out)


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    """mae, rmse, r2 and mape (scikit-learn's MAPE: a fraction, not a percentage)."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    return _finite({
        "mae": skm.mean_absolute_error(y_true, y_pred),
        "rmse": skm.root_mean_squared_error(y_true, y_pred),
        "r2": _guard(skm.r2_score, y_true, y_pred) if len(y_true) >= 2 else None,
        "mape": skm.mean_absolute_percentage_error(y_true, y_pred),
    })


def precision_at_k(is_anomaly: Any, scores: Any, k: int) -> float:
    """The share of true anomalies among the ``k`` highest ``scores`` (ties broken by position)."""
    is_anomaly = np.asarray(is_anomaly).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    k = max(1, min(int(k), len(scores)))
    top = np.argsort(-scores, kind="stable")[:k]
    return float(is_anomaly[top].mean())


def anomaly_metrics(is_anomaly: Any, scores: Any, k: int | None = None) -> dict[str, float]:
    """roc_auc, pr_auc and precision_at_k of anomaly ``scores`` against labels (1 = anomaly).

    ``k`` defaults to the number of true anomalies. Nothing is returned without both classes.
    """
    is_anomaly = np.asarray(is_anomaly).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    anomalies = int(is_anomaly.sum())
    if anomalies == 0 or anomalies == len(is_anomaly):
        return {}
    return _finite({
        "roc_auc": _guard(skm.roc_auc_score, is_anomaly, scores),
        "pr_auc": _guard(skm.average_precision_score, is_anomaly, scores),
        "precision_at_k": precision_at_k(is_anomaly, scores, k or anomalies),
    })
