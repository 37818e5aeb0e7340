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
from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np
from sklearn import metrics as skm

__all__ = [
    "ANOMALY_DETECTION",
    "CLASSIFICATION",
    "HIGHER_IS_BETTER",
    "REGRESSION",
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


CLASSIFICATION = ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "log_loss", "brier")
REGRESSION = ("mae", "rmse", "r2", "mape")
ANOMALY_DETECTION = ("roc_auc", "pr_auc", "precision_at_k")


def classification_metrics(y_true: Any, y_pred: Any, proba: Any, classes: Sequence[Any],
                           names: Collection[str] = CLASSIFICATION) -> dict[str, float]:
    """accuracy, precision, recall, f1, roc_auc, pr_auc, log_loss and brier (or ``names`` of them).

    Args:
        y_true: the true labels.
        y_pred: the predicted labels (``predict``).
        proba: class probabilities (``predict_proba``), one column per entry of ``classes``.
        classes: the model's classes, in the order of ``proba``'s columns.
        names: the metrics wanted (per-step evaluation asks for one).
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    proba = np.asarray(proba, dtype=np.float64)
    labels = list(classes)
    binary = len(labels) == 2
    average: dict[str, Any] = {"average": "binary", "pos_label": labels[1]} if binary else {"average": "macro", "labels": labels}
    is_positive = (y_true == labels[1]).astype(int) if binary else None
    onehot = None if binary else np.column_stack([(y_true == c).astype(int) for c in labels])

    def pr_auc() -> float | None:
        if binary:
            return _guard(skm.average_precision_score, is_positive, proba[:, 1])
        assert onehot is not None
        present = onehot.sum(axis=0) > 0
        # average_precision_score is undefined for a class absent from y_true: macro over the rest.
        if not present.any():
            return None
        return _guard(skm.average_precision_score, onehot[:, present], proba[:, present], average="macro")

    def brier() -> float | None:
        if binary:
            return _guard(skm.brier_score_loss, is_positive, proba[:, 1])
        assert onehot is not None
        return float(np.mean([np.mean((proba[:, k] - onehot[:, k]) ** 2) for k in range(len(labels))]))

    compute: dict[str, Callable[[], Any]] = {
        "accuracy": lambda: skm.accuracy_score(y_true, y_pred),
        "precision": lambda: skm.precision_score(y_true, y_pred, zero_division=0, **average),
        "recall": lambda: skm.recall_score(y_true, y_pred, zero_division=0, **average),
        "f1": lambda: skm.f1_score(y_true, y_pred, zero_division=0, **average),
        "roc_auc": lambda: _guard(skm.roc_auc_score, is_positive, proba[:, 1]) if binary else
            _guard(skm.roc_auc_score, y_true, proba, multi_class="ovr", average="macro", labels=labels),
        "pr_auc": pr_auc,
        "log_loss": lambda: _guard(skm.log_loss, y_true, proba, labels=labels),
        "brier": brier,
    }
    return _finite({name: compute[name]() for name in CLASSIFICATION if name in names})


def regression_metrics(y_true: Any, y_pred: Any, names: Collection[str] = REGRESSION) -> dict[str, float]:
    """mae, rmse, r2 and mape (scikit-learn's MAPE: a fraction, not a percentage), or ``names`` of them."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    compute: dict[str, Callable[[], Any]] = {
        "mae": lambda: skm.mean_absolute_error(y_true, y_pred),
        "rmse": lambda: skm.root_mean_squared_error(y_true, y_pred),
        "r2": lambda: _guard(skm.r2_score, y_true, y_pred) if len(y_true) >= 2 else None,
        "mape": lambda: skm.mean_absolute_percentage_error(y_true, y_pred),
    }
    return _finite({name: compute[name]() for name in REGRESSION if name in names})


def precision_at_k(is_anomaly: Any, scores: Any, k: int) -> float:
    """The share of true anomalies among the ``k`` highest ``scores`` (ties broken by position)."""
    is_anomaly = np.asarray(is_anomaly).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    k = max(1, min(int(k), len(scores)))
    top = np.argsort(-scores, kind="stable")[:k]
    return float(is_anomaly[top].mean())


def anomaly_metrics(is_anomaly: Any, scores: Any, k: int | None = None,
                    names: Collection[str] = ANOMALY_DETECTION) -> dict[str, float]:
    """roc_auc, pr_auc and precision_at_k (or ``names`` of them) of anomaly ``scores`` against
    labels (1 = anomaly). ``k`` defaults to the number of true anomalies. Nothing is returned
    without both classes.
    """
    is_anomaly = np.asarray(is_anomaly).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    anomalies = int(is_anomaly.sum())
    if anomalies == 0 or anomalies == len(is_anomaly):
        return {}
    compute: dict[str, Callable[[], Any]] = {
        "roc_auc": lambda: _guard(skm.roc_auc_score, is_anomaly, scores),
        "pr_auc": lambda: _guard(skm.average_precision_score, is_anomaly, scores),
        "precision_at_k": lambda: precision_at_k(is_anomaly, scores, k or anomalies),
    }
    return _finite({name: compute[name]() for name in ANOMALY_DETECTION if name in names})
