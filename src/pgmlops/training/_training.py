"""Training: projects and train jobs in SQL, and :func:`fit`, the pure fit-and-evaluate step.

``fit`` needs no database: it takes a DataFrame (a training set as
:func:`pgmlops.features.load_dataset` returns it, or any frame), splits it, fits the pgmlops
pipeline (input coercion, imputation, scaling, one-hot, then the estimator; see
``pgmlops._algorithms``), evaluates it on the held-out rows (and optionally by k-fold
cross-validation), dumps the safe artifact and measures it. The ``train`` job handler
(``pgmlops.training._handler``) and tuning trials call it; so can a notebook.
"""

from __future__ import annotations

import functools
import math
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import numpy as np
import pandas as pd
import psycopg
from psycopg.types.json import Jsonb
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import KFold, StratifiedKFold, TimeSeriesSplit, train_test_split
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from pgmlops import features as datasets
from pgmlops.db import call
from pgmlops.errors import PgmlopsError
from pgmlops.models import artifacts
from pgmlops.training import _algorithms, _metrics

__all__ = [
    "ALGORITHMS",
    "FitResult",
    "Report",
    "TrainingError",
    "anomaly_scores",
    "create_project",
    "fit",
    "library_versions",
    "load_dataset",
    "split",
    "train",
]

Conn = psycopg.Connection[Any]

# report(step, value): the options' metric on the held-out rows after `step` boosting iterations,
# trees or epochs. It may raise (optuna.TrialPruned) to stop the fit; the exception propagates.
Report = Callable[[int, float], None]

# The algorithms fit() knows, by SQL name, with their tasks (ml.algorithms is the SQL side).
ALGORITHMS: dict[str, tuple[str, ...]] = {name: spec.tasks for name, spec in _algorithms.ALGORITHMS.items()}

# At most this many evaluated steps per fit: a step every ceil(total / MAX_STEPS) iterations
# or epochs, and always the last. Evaluating after every one of 1000 boosting iterations would
# cost more than the boosting.
MAX_STEPS = 25
# Boosting is warm-started in at most this many fits; forests, which are not iterative
# learners, grow in this many stages when a report callback is given.
BOOSTING_CHUNKS = 10
FOREST_STAGES = 10
# The single-row latency probe: the median of LATENCY_ROWS timed predictions after one untimed
# warm-up, stopping early once the timed ones took LATENCY_BUDGET_S (a slow model still gets
# one). Twenty predictions of a 200-tree pipeline took 0.13 s, 5% of a 100k-row train job.
LATENCY_ROWS = 5
LATENCY_BUDGET_S = 0.1


class TrainingError(PgmlopsError):
    """The data, algorithm, hyperparameters or options cannot be trained on; retrying will not
    help (the ``train`` handler turns it into a permanent job failure)."""


@dataclass
class FitResult:
    """What :func:`fit` produced.

    ``metrics`` is flat ``{name: number}``: the held-out metrics of the task, ``cv_<name>_mean``
    and ``cv_<name>_std`` with cross-validation, and ``train_seconds``, ``model_size_bytes``,
    ``inference_latency_ms``. ``steps`` is the learning curve, empty unless the options ask for
    it (``learning_curve``) or a ``report`` callback wants it: ``(step, {metric: value})`` per
    evaluated boosting iteration, tree stage or epoch, for the options' ``metric`` (and
    ``train_loss`` for torch models); one metric per step keeps a 100-iteration fit from spending
    more time on metrics than on boosting. ``train_index`` and ``test_index`` are the frame's
    index labels of each part.
    """

    model: Pipeline
    task: str
    algorithm: str
    hyperparams: dict[str, Any]
    options: dict[str, Any]
    metrics: dict[str, float]
    steps: list[tuple[int, dict[str, float]]]
    signature: dict[str, Any]
    artifact: bytes
    artifact_format: str
    artifact_sha256: str
    train_seconds: float
    inference_latency_ms: float
    n_train: int
    n_test: int
    dropped_rows: int
    train_index: np.ndarray[Any, Any]
    test_index: np.ndarray[Any, Any]
    library_versions: dict[str, str] = field(default_factory=dict)

    @property
    def model_size_bytes(self) -> int:
        return len(self.artifact)

    @property
    def classes(self) -> list[Any] | None:
        classes = self.signature.get("classes")
        return list(classes) if classes is not None else None

    def score(self, metric: str | None = None) -> float | None:
        """The value a search optimizes: the cross-validated mean of ``metric`` when there is
        one, else its held-out value (None when undefined). ``metric`` defaults to the options'."""
        name = metric or self.options["metric"]
        value = self.metrics.get(f"cv_{name}_mean", self.metrics.get(name))
        return None if value is None else float(value)


# -- options -----------------------------------------------------------------------------------


def _normalize_options(task: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The options fit() reads, completed with ml.train's defaults; others are kept as given."""
    opts = dict(options or {})
    split = opts.get("split") or ("stratified" if task == "classification" else "random")
    if split not in ("random", "stratified", "time"):
        raise TrainingError(f"options: $.split: must be random, stratified or time, got {split!r}")
    if split == "stratified" and task != "classification":
        raise TrainingError(f"options: $.split: stratified needs a classification task, not {task}")
    test_size = float(opts.get("test_size", 0.2) if opts.get("test_size") is not None else 0.2)
    if not 0.05 <= test_size <= 0.5:
        raise TrainingError(f"options: $.test_size: must be between 0.05 and 0.5, got {test_size}")
    cv_folds = opts.get("cv_folds")
    if cv_folds is not None and (not isinstance(cv_folds, int) or isinstance(cv_folds, bool) or not 2 <= cv_folds <= 20):
        raise TrainingError(f"options: $.cv_folds: must be null or an integer 2..20, got {cv_folds!r}")
    random_state = opts.get("random_state", 42)
    if random_state is None:
        random_state = 42
    metric = opts.get("metric") or _metrics.default_metric(task)
    known = _TASK_METRICS[task]
    if metric not in known:
        raise TrainingError(f"options: $.metric: {task} reports {', '.join(known)}; got {metric!r}")
    k = opts.get("k")
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
        raise TrainingError(f"options: $.k: must be a positive integer, got {k!r}")
    learning_curve = opts.get("learning_curve", False)
    if learning_curve is None:
        learning_curve = False
    if not isinstance(learning_curve, bool):
        raise TrainingError(f"options: $.learning_curve: must be true or false, got {learning_curve!r}")
    latency_rows = int(opts.get("latency_rows", LATENCY_ROWS))
    return {**opts, "split": split, "test_size": test_size, "cv_folds": cv_folds, "random_state": int(random_state),
            "metric": metric, "k": k, "learning_curve": learning_curve, "latency_rows": max(1, latency_rows)}


_TASK_METRICS = {
    "classification": _metrics.CLASSIFICATION,
    "regression": _metrics.REGRESSION,
    "anomaly_detection": _metrics.ANOMALY_DETECTION,
}


# -- labels and inputs ---------------------------------------------------------------------------


def _label_values(series: pd.Series, task: str, name: str) -> np.ndarray[Any, Any]:
    """The labels as a plain numpy array (rows with a missing label already removed)."""
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype):
            converted = pd.to_numeric(series, errors="coerce")
            if converted.isna().any():
                raise TrainingError(f"label {name!r}: regression needs numbers, got {series.dtype} values")
            series = converted
        values = series.to_numpy(dtype=np.float64)
        if not np.isfinite(values).all():
            raise TrainingError(f"label {name!r}: holds infinite values")
        return values
    if pd.api.types.is_bool_dtype(series.dtype):
        return series.to_numpy(dtype=bool)
    if pd.api.types.is_integer_dtype(series.dtype):
        return series.to_numpy(dtype=np.int64)
    if pd.api.types.is_float_dtype(series.dtype):
        values = series.to_numpy(dtype=np.float64)
        return values.astype(np.int64) if np.all(values == np.round(values)) else values
    inferred = pd.api.types.infer_dtype(series, skipna=True)
    if inferred == "boolean":
        return series.to_numpy(dtype=bool)
    if inferred == "integer":
        return series.to_numpy(dtype=np.int64)
    return np.asarray([str(v) for v in series], dtype=object)


def _anomaly_labels(series: pd.Series, name: str) -> np.ndarray[Any, Any]:
    """1 = anomaly, 0 = normal, -1 = unknown (a missing label)."""
    out = np.full(len(series), -1, dtype=np.int64)
    for i, value in enumerate(series):
        if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
            continue
        if isinstance(value, bool | np.bool_) or value in (0, 1):
            out[i] = int(value)
        else:
            raise TrainingError(f"label {name!r}: anomaly labels must be 0/1 or booleans (1 = anomaly), got {value!r}")
    return out


def _jsonable(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _resolve_columns(frame: pd.DataFrame, target: str | None, inputs: Sequence[str] | None,
                     event_time: str | None) -> tuple[list[str], str | None]:
    info = frame.attrs.get("dataset")
    if event_time is None:
        if info is not None:
            event_time = next((c["name"] for c in info.columns if c.get("role") == "event_time"), None)
        elif "event_time" in frame.columns:
            event_time = "event_time"
    if inputs is None:
        if info is not None:
            inputs = list(info.inputs)
        else:
            inputs = [c for c in frame.columns if c not in (target, event_time)]
    inputs = list(inputs)
    missing = [c for c in inputs if c not in frame.columns]
    if missing:
        raise TrainingError(f"inputs: columns missing from the data: {', '.join(missing)}")
    if target is not None and target in inputs:
        raise TrainingError(f"inputs: the label {target!r} cannot also be an input")
    if not inputs:
        raise TrainingError("inputs: the data has no input columns")
    return inputs, event_time


# -- splitting -----------------------------------------------------------------------------------


def _split(n: int, options: Mapping[str, Any], y: np.ndarray[Any, Any] | None,
           times: pd.Series | None) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Positions of the training and the test rows."""
    positions = np.arange(n)
    test_size = options["test_size"]
    n_test = max(1, math.ceil(n * test_size))
    if n - n_test < 2:
        raise TrainingError(f"data: {n} rows are too few to hold out {test_size:.0%} for testing")
    if options["split"] == "time":
        if times is None:
            raise TrainingError("options: $.split: time needs an event_time column")
        if times.isna().any():
            raise TrainingError("options: $.split: time needs an event_time on every row")
        # Stable: rows at the same time keep their order. Every test row is at or after every
        # training row.
        order = np.argsort(times.to_numpy(dtype="datetime64[ns]"), kind="stable")
        return order[: n - n_test], order[n - n_test:]
    stratify = y if options["split"] == "stratified" else None
    try:
        train, test = train_test_split(positions, test_size=n_test, random_state=options["random_state"], shuffle=True,
                                       stratify=stratify)
    except ValueError as exc:
        raise TrainingError(f"options: $.split: stratified split impossible: {exc}") from exc
    return np.asarray(train), np.asarray(test)


def _cv_splitter(task: str, options: Mapping[str, Any]) -> Any:
    folds = options["cv_folds"]
    if options["split"] == "time":
        return TimeSeriesSplit(n_splits=folds)
    if task == "classification":
        return StratifiedKFold(n_splits=folds, shuffle=True, random_state=options["random_state"])
    return KFold(n_splits=folds, shuffle=True, random_state=options["random_state"])


# -- evaluation ----------------------------------------------------------------------------------


# Estimators whose predict is classes_[argmax(predict_proba)], ties included (scikit-learn's own
# code, and the torch classifier's): their labels come from the probabilities as they are.
_PREDICT_IS_ARGMAX = frozenset({
    "sklearn.calibration.CalibratedClassifierCV",
    "sklearn.ensemble._forest.ExtraTreesClassifier",
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "pgmlops.models.torch_models.TorchMLPClassifier",
})
# Estimators whose predict takes the argmax (with two classes: the sign) of a decision function,
# or a vote, that predict_proba maps monotonically onto probabilities: the same labels, except
# where rounding makes two probabilities tie or (with softmax) swap. Rows whose two greatest
# probabilities are within _NEAR_TIE, or not finite, would need predict itself; there are
# almost never any, and then predict runs on every row (on a subset, a decision function's
# matrix product may round differently).
_PREDICT_IS_ARGMAX_BUT_FOR_TIES = frozenset({
    "sklearn.ensemble._gb.GradientBoostingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.neighbors._classification.KNeighborsClassifier",
})
_NEAR_TIE = 1e-9


def _type_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _labels_and_proba(model: Any, X: Any, classes: Sequence[Any]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """What ``model.predict(X)`` returns and ``predict_proba`` with one column per class of
    ``classes`` (0 for classes the model lacks), from one ``predict_proba`` pass where the
    labels follow from it (see _PREDICT_IS_ARGMAX), else from a ``predict`` pass as well."""
    proba = np.asarray(model.predict_proba(X), dtype=np.float64)
    own = np.asarray(model.classes_)
    estimator = model[-1] if isinstance(model, Pipeline) else model
    kind = _type_name(estimator)
    if kind in _PREDICT_IS_ARGMAX:
        labels = own[np.argmax(proba, axis=1)]
    elif kind in _PREDICT_IS_ARGMAX_BUT_FOR_TIES and not _near_ties(proba):
        labels = own[np.argmax(proba, axis=1)]
    else:
        labels = np.asarray(model.predict(X))
    if list(own) == list(classes):
        return labels, proba
    out = np.zeros((proba.shape[0], len(classes)))
    for j, c in enumerate(own):
        out[:, list(classes).index(c)] = proba[:, j]
    return labels, out


def _near_ties(proba: np.ndarray[Any, Any]) -> bool:
    if proba.shape[1] < 2:
        return False
    top_two = np.partition(proba, -2, axis=1)[:, -2:] if proba.shape[1] > 2 else proba
    gap = np.abs(top_two[:, 1] - top_two[:, 0])
    return not np.isfinite(gap).all() or bool((gap <= _NEAR_TIE).any())


def anomaly_scores(model: Any, X: Any) -> np.ndarray[Any, Any]:
    """Anomaly scores of ``X`` by an anomaly-detection model: higher = more anomalous (the
    negated ``score_samples`` of scikit-learn's outlier detectors and the autoencoder)."""
    return np.asarray(-model.score_samples(X), dtype=np.float64)


def _scores(task: str, model: Any, X: Any, classes: Sequence[Any] | None) -> tuple[Any, ...]:
    """What the metrics of ``task`` are computed from: (labels, probabilities), (predictions,)
    or (anomaly scores,)."""
    if task == "classification":
        assert classes is not None
        return _labels_and_proba(model, X, classes)
    if task == "regression":
        return (model.predict(X),)
    return (anomaly_scores(model, X),)


def _metrics_of(task: str, outputs: tuple[Any, ...], y: np.ndarray[Any, Any] | None, classes: Sequence[Any] | None,
                k: int | None, names: Sequence[str] | None = None) -> dict[str, float]:
    wanted = names if names is not None else _TASK_METRICS[task]
    if task == "classification":
        assert y is not None and classes is not None
        return _metrics.classification_metrics(y, outputs[0], outputs[1], classes, wanted)
    if task == "regression":
        assert y is not None
        return _metrics.regression_metrics(y, outputs[0], wanted)
    if y is None:
        return {}
    known = y >= 0
    if not known.any():
        return {}
    return _metrics.anomaly_metrics(y[known], np.asarray(outputs[0])[known], k, wanted)


def _evaluate(task: str, model: Any, X: Any, y: np.ndarray[Any, Any] | None, classes: Sequence[Any] | None,
              k: int | None, names: Sequence[str] | None = None) -> dict[str, float]:
    if task == "anomaly_detection" and (y is None or not (y >= 0).any()):
        return {}
    return _metrics_of(task, _scores(task, model, X, classes), y, classes, k, names)


def _staged_outputs(task: str, estimator: Any, X: Any, classes: Sequence[Any] | None) -> Any:
    """Per boosting iteration, what _metrics_of takes (from staged predictions)."""
    if task == "classification":
        assert classes is not None
        own = list(estimator.classes_)
        columns = [own.index(c) if c in own else None for c in classes]
        # Labels from the probabilities (what predict does), not a second staged pass over X.
        for proba in estimator.staged_predict_proba(X):
            labels = np.asarray(own)[np.argmax(proba, axis=1)]
            if own != list(classes):
                proba = np.column_stack([proba[:, j] if j is not None else np.zeros(len(proba)) for j in columns])
            yield labels, proba
    else:
        for values in estimator.staged_predict(X):
            yield (values,)


def _every(total: int) -> int:
    return max(1, math.ceil(total / MAX_STEPS))


def _iterations_done(estimator: Any, param: str) -> int:
    for attr in ("n_iter_", "n_estimators_"):
        if hasattr(estimator, attr):
            return int(getattr(estimator, attr))
    if hasattr(estimator, "estimators_"):
        return len(estimator.estimators_)
    return int(getattr(estimator, param))


class _Stepper:
    """Fits an estimator stage by stage and evaluates it on the held-out rows.

    Only with ``curve`` (the options' learning_curve, or a report to feed) is anything
    evaluated before the fit ends: without it an estimator is fitted in one go (torch models
    still call ``on_step`` after each epoch). With it: torch models are evaluated after their
    epochs; boosting from staged predictions, and with a report it is warm-started in at most
    BOOSTING_CHUNKS fits (each fit has a fixed cost: a warm start per iteration would cost ten
    times the boosting on small data), so report() still sees every iteration and a pruned
    trial stops within a chunk's time; forests grow in FOREST_STAGES. At most MAX_STEPS steps
    are evaluated (every ceil(total / MAX_STEPS)-th, and the last). ``on_step(step)`` is called
    at every epoch and evaluated step, before ``report``; either may raise to stop the fit.
    """

    def __init__(self, task: str, spec: _algorithms.Algorithm, X_test: Any, y_test: np.ndarray[Any, Any] | None,
                 classes: Sequence[Any] | None, k: int | None, metric: str, report: Report | None, *,
                 curve: bool = False, on_step: Callable[[int], None] | None = None) -> None:
        self.task, self.spec, self.X_test, self.y_test, self.classes, self.k = task, spec, X_test, y_test, classes, k
        self.metric, self.report, self.on_step = metric, report, on_step
        self.curve = curve or report is not None
        self.steps: list[tuple[int, dict[str, float]]] = []
        self.seconds = 0.0  # spent evaluating, not training

    def _record(self, step: int, values: dict[str, float]) -> None:
        if self.on_step is not None:
            self.on_step(step)
        self.steps.append((step, values))
        if self.report is not None and self.metric in values:
            self.report(step, values[self.metric])

    def _timed_metrics(self, outputs: tuple[Any, ...]) -> dict[str, float]:
        started = time.perf_counter()
        try:
            return _metrics_of(self.task, outputs, self.y_test, self.classes, self.k, [self.metric])
        finally:
            self.seconds += time.perf_counter() - started

    def _timed_evaluate(self, estimator: Any) -> dict[str, float]:
        started = time.perf_counter()
        try:
            return _evaluate(self.task, estimator, self.X_test, self.y_test, self.classes, self.k, [self.metric])
        finally:
            self.seconds += time.perf_counter() - started

    def fit(self, estimator: Any, X: Any, y: Any) -> None:
        param = self.spec.stage_param
        if param == "epochs":
            self._fit_epochs(estimator, X, y)
        elif param is not None and self.curve and self.spec.iterative:
            self._fit_boosting(estimator, X, y, param)
        elif param is not None and self.curve:
            self._fit_forest(estimator, X, y, param)
        else:
            estimator.fit(X, y)

    def _fit_epochs(self, estimator: Any, X: Any, y: Any) -> None:
        total = int(estimator.epochs)
        every = _every(total)

        def on_epoch(epoch: int, loss: float) -> None:
            if self.curve and (epoch % every == 0 or epoch == total):
                self._record(epoch, {**self._timed_evaluate(estimator), "train_loss": loss})
            elif self.on_step is not None:
                self.on_step(epoch)

        estimator.fit(X, y, on_epoch=on_epoch if self.curve or self.on_step is not None else None)

    def _fit_boosting(self, estimator: Any, X: Any, y: Any, param: str) -> None:
        total = int(getattr(estimator, param))
        every = _every(total)
        # Without a report nobody can stop the fit early: one fit, then the staged predictions.
        chunk = max(1, math.ceil(total / BOOSTING_CHUNKS)) if self.report is not None else total
        estimator.set_params(warm_start=chunk < total)
        done = 0
        target = 0
        while target < total:
            target = min(total, target + chunk)
            estimator.set_params(**{param: target})
            estimator.fit(X, y)
            reached = _iterations_done(estimator, param)
            started = time.perf_counter()
            staged = _staged_outputs(self.task, estimator, self.X_test, self.classes)
            self.seconds += time.perf_counter() - started
            for iteration in range(1, reached + 1):
                started = time.perf_counter()
                outputs = next(staged)
                self.seconds += time.perf_counter() - started
                last = iteration == reached and (reached < target or target == total)
                if iteration > done and (iteration % every == 0 or last):
                    self._record(iteration, self._timed_metrics(outputs))
            done = reached
            if reached < target:  # early stopping ended the boosting
                break
        # The fitted model is complete; give it back the parameters it was asked for.
        estimator.set_params(warm_start=False, **{param: total})

    def _fit_forest(self, estimator: Any, X: Any, y: Any, param: str) -> None:
        total = int(getattr(estimator, param))
        chunk = max(1, math.ceil(total / FOREST_STAGES))
        estimator.set_params(warm_start=True)
        grown = 0
        while grown < total:
            grown = min(total, grown + chunk)
            estimator.set_params(**{param: grown})
            estimator.fit(X, y)
            self._record(grown, self._timed_evaluate(estimator))
        estimator.set_params(warm_start=False)


# -- rows ----------------------------------------------------------------------------------------------


@dataclass
class _Prepared:
    frame: pd.DataFrame  # without the rows whose label is missing
    y: np.ndarray[Any, Any] | None
    classes: list[Any] | None
    dropped: int
    train_pos: np.ndarray[Any, Any]
    test_pos: np.ndarray[Any, Any]


def _prepare(frame: pd.DataFrame, task: str, target: str | None, opts: Mapping[str, Any],
             time_column: str | None) -> _Prepared:
    """Labels checked and converted, rows without one dropped, and the split."""
    dropped = 0
    y: np.ndarray[Any, Any] | None = None
    classes: list[Any] | None = None
    if task in ("classification", "regression"):
        if not target:
            raise TrainingError(f"label: a {task} task needs a label column (target)")
        if target not in frame.columns:
            raise TrainingError(f"label: column {target!r} is missing from the data")
        present = frame[target].notna().to_numpy()
        dropped = int((~present).sum())
        frame = frame.loc[present]
        if len(frame) == 0:
            raise TrainingError(f"label {target!r}: every row's label is missing")
        y = _label_values(frame[target], task, target)
        if task == "classification":
            classes = [_jsonable(c) for c in np.unique(y)]
            if len(classes) < 2:
                raise TrainingError(f"label {target!r}: one class only ({classes[0]!r}): a classifier needs two or more")
    elif target and target in frame.columns:
        y = _anomaly_labels(frame[target], target)
    times = frame[time_column] if time_column and time_column in frame.columns else None
    train_pos, test_pos = _split(len(frame), opts, y if task == "classification" else None, times)
    if task == "classification":
        assert y is not None
        if len(np.unique(y[train_pos])) < 2:
            raise TrainingError(f"label {target!r}: the training rows hold one class only")
    return _Prepared(frame, y, classes, dropped, train_pos, test_pos)


def split(dataset_frame: pd.DataFrame, task: str, target: str | None, options: Mapping[str, Any] | None = None, *,
          event_time: str | None = None) -> tuple[pd.Index, pd.Index]:
    """The index labels of the training rows and of the test rows :func:`fit` would use with
    the same arguments (rows without a label are in neither). Tuning trains its trials on the
    training rows only, so the refit's test rows stay unseen.

    Raises:
        TrainingError: as :func:`fit` for the label, the options and the split.
    """
    opts = _normalize_options(task, options)
    _, time_column = _resolve_columns(dataset_frame, target, None, event_time)
    prepared = _prepare(dataset_frame, task, target, opts, time_column)
    index = prepared.frame.index
    return index[prepared.train_pos], index[prepared.test_pos]


# -- fit -------------------------------------------------------------------------------------------


def fit(dataset_frame: pd.DataFrame, task: str, target: str | None, algorithm: str,
        hyperparams: Mapping[str, Any] | None = None, options: Mapping[str, Any] | None = None, *,
        inputs: Sequence[str] | None = None, event_time: str | None = None,
        report: Report | None = None, on_step: Callable[[int], None] | None = None) -> FitResult:
    """Split, fit, evaluate, and dump ``algorithm`` on ``dataset_frame``. No database involved.

    Args:
        dataset_frame: one row per example. A frame from :func:`pgmlops.features.load_dataset`
            carries its inputs and event time column in ``attrs``; otherwise the inputs are every
            column but ``target`` and ``event_time``.
        task: classification, regression or anomaly_detection.
        target: the label column (optional for anomaly detection, where 1 or True = anomaly and
            labels serve only evaluation). Rows with a missing label are dropped for
            classification and regression.
        algorithm: a name of :data:`ALGORITHMS`; hyperparams are the estimator's own parameters.
        options: ``split`` (random | stratified | time), ``test_size``, ``cv_folds``,
            ``random_state`` as for ``ml.train``; ``learning_curve`` (true: evaluate the
            ``metric`` on the held-out rows at up to MAX_STEPS steps of iterative learners and
            forests, into ``FitResult.steps``; default false), ``metric`` (what ``report`` and
            the curve get, default roc_auc / rmse / roc_auc), ``k`` (precision at k; default
            the number of true anomalies), ``latency_rows`` (single-row predictions timed,
            default 5).
        inputs: the input columns, in order (default: see ``dataset_frame``).
        event_time: the column a time split orders by (default ``event_time`` when present).
        report: called as ``report(step, value)`` with the ``metric`` on the held-out rows after
            each evaluated step of iterative learners (boosting iterations, epochs; forests
            grow in stages when it is given); it turns the learning curve on. It may raise to
            stop the fit (pruning).
        on_step: called as ``on_step(step)`` after every epoch of torch models and before each
            ``report``, curve or not; it may raise to stop the fit (a worker that lost its job).

    Native thread pools (OpenMP, BLAS) are limited to ``PGMLOPS_TRAIN_THREADS`` (default 1)
    while fitting: workers run one process per core, and on a busy machine OpenMP's spinning
    threads made a small HistGradientBoosting fit 35 times slower.

    Returns:
        A :class:`FitResult`: the fitted pipeline, metrics, steps, signature and artifact.

    Raises:
        TrainingError: unknown algorithm or task, bad hyperparameters or options, a missing or
            one-class label, too few rows. Whatever ``report`` raises propagates unchanged.
    """
    with threadpool_limits(limits=_train_threads()):
        return _fit(dataset_frame, task, target, algorithm, hyperparams, options, inputs=inputs, event_time=event_time,
                    report=report, on_step=on_step)


def _train_threads() -> int:
    try:
        return max(1, int(os.environ.get("PGMLOPS_TRAIN_THREADS", "1")))
    except ValueError:
        return 1


def _fit(dataset_frame: pd.DataFrame, task: str, target: str | None, algorithm: str,
         hyperparams: Mapping[str, Any] | None, options: Mapping[str, Any] | None, *,
         inputs: Sequence[str] | None, event_time: str | None, report: Report | None,
         on_step: Callable[[int], None] | None) -> FitResult:
    if task not in _algorithms.TASKS:
        raise TrainingError(f"task: must be one of {', '.join(_algorithms.TASKS)}; got {task!r}")
    spec = _algorithms.ALGORITHMS.get(algorithm)
    if spec is None:
        raise TrainingError(f"algorithm: unknown algorithm {algorithm!r} (known: {', '.join(sorted(_algorithms.ALGORITHMS))})")
    if task not in spec.tasks:
        raise TrainingError(f"algorithm: {algorithm} does not support task {task} (it supports: {', '.join(spec.tasks)})")
    hyperparams = dict(hyperparams or {})
    opts = _normalize_options(task, options)
    if not isinstance(dataset_frame, pd.DataFrame):
        raise TrainingError(f"data: expected a pandas DataFrame, got {type(dataset_frame).__name__}")
    input_names, time_column = _resolve_columns(dataset_frame, target, inputs, event_time)

    prepared = _prepare(dataset_frame, task, target, opts, time_column)
    frame, y_all, classes, train_pos, test_pos = (prepared.frame, prepared.y, prepared.classes, prepared.train_pos,
                                                  prepared.test_pos)
    dropped = prepared.dropped

    columns = [{"name": c, "dtype": _algorithms.input_dtype(frame[c])} for c in input_names]
    X = frame[input_names]
    X_train, X_test = X.iloc[train_pos], X.iloc[test_pos]
    y_train = None if y_all is None else y_all[train_pos]
    y_test = None if y_all is None else y_all[test_pos]
    fit_y = y_train if task != "anomaly_detection" else None

    try:
        estimator = _algorithms.make_estimator(algorithm, task, hyperparams, opts["random_state"])
    except TypeError as exc:
        raise TrainingError(f"hyperparams: {exc}") from exc
    pipeline = _algorithms.build_pipeline(columns, estimator)

    # -- fit, step by step
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        preprocess = pipeline[:2]
        Xt_train = preprocess.fit_transform(X_train)
        Xt_test = preprocess.transform(X_test)
        stepper = _Stepper(task, spec, Xt_test, y_test, classes, opts["k"], opts["metric"], report,
                           curve=opts["learning_curve"], on_step=on_step)
        try:
            stepper.fit(estimator, Xt_train, fit_y)
        except TypeError as exc:  # InvalidParameterError is a TypeError and a ValueError
            raise TrainingError(f"hyperparams: {exc}") from exc
        except ValueError as exc:
            raise TrainingError(f"{algorithm} could not be fitted on this data: {exc}") from exc
    train_seconds = time.perf_counter() - started - stepper.seconds

    # The estimator on the test rows the preprocessing already transformed: the pipeline's own
    # predictions, without transforming them again.
    metrics = _evaluate(task, estimator, Xt_test, y_test, classes, opts["k"])
    if opts["cv_folds"]:
        metrics.update(_cross_validate(pipeline, task, X_train, y_train, classes, opts))

    blob, fmt, digest = artifacts.dump(pipeline)
    latency_ms = _single_row_latency(pipeline, task, X_test, opts["latency_rows"])
    metrics.update({"train_seconds": train_seconds, "model_size_bytes": float(len(blob)), "inference_latency_ms": latency_ms})

    signature = {
        "inputs": columns,
        "outputs": _outputs(task, frame[target] if task == "classification" and target else None),
        "task": task,
        "classes": classes,
    }
    index = frame.index.to_numpy()
    return FitResult(
        model=pipeline, task=task, algorithm=algorithm, hyperparams=hyperparams, options=opts, metrics=metrics,
        steps=stepper.steps, signature=signature, artifact=blob, artifact_format=fmt, artifact_sha256=digest,
        train_seconds=train_seconds, inference_latency_ms=latency_ms, n_train=len(train_pos), n_test=len(test_pos),
        dropped_rows=dropped, train_index=index[train_pos], test_index=index[test_pos],
        library_versions=library_versions(spec.library),
    )


def _outputs(task: str, labels: pd.Series | None) -> list[dict[str, str]]:
    if task == "classification":
        dtype = _algorithms.input_dtype(labels) if labels is not None else "text"
        return [{"name": "prediction", "dtype": dtype}, {"name": "probabilities", "dtype": "float[]"}]
    if task == "regression":
        return [{"name": "prediction", "dtype": "float"}]
    return [{"name": "anomaly_score", "dtype": "float"}, {"name": "is_anomaly", "dtype": "bool"}]


def _cross_validate(pipeline: Pipeline, task: str, X: pd.DataFrame, y: np.ndarray[Any, Any] | None,
                    classes: Sequence[Any] | None, opts: Mapping[str, Any]) -> dict[str, float]:
    """k-fold cross-validation on the training rows: cv_<metric>_mean and cv_<metric>_std
    (population standard deviation over the folds where the metric is defined)."""
    splitter = _cv_splitter(task, opts)
    split_y = y if task == "classification" else None
    per_fold: list[dict[str, float]] = []
    try:
        folds = list(splitter.split(X, split_y))
    except ValueError as exc:
        raise TrainingError(f"options: $.cv_folds: {exc}") from exc
    for number, (train, valid) in enumerate(folds, start=1):
        model = clone(pipeline)
        fold_y = None if y is None else y[train]
        if task == "classification" and fold_y is not None and len(np.unique(fold_y)) < 2:
            raise TrainingError(f"options: $.cv_folds: fold {number} trains on one class only")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(X.iloc[train], fold_y if task != "anomaly_detection" else None)
        except ValueError as exc:
            raise TrainingError(f"cross-validation fold {number} could not be fitted: {exc}") from exc
        per_fold.append(_evaluate(task, model, X.iloc[valid], None if y is None else y[valid], classes, opts["k"]))
    out: dict[str, float] = {}
    for name in sorted({m for fold in per_fold for m in fold}):
        values = [fold[name] for fold in per_fold if name in fold]
        out[f"cv_{name}_mean"] = float(np.mean(values))
        out[f"cv_{name}_std"] = float(np.std(values))
    return out


def _single_row_latency(model: Pipeline, task: str, X: pd.DataFrame, rows: int) -> float:
    """Median milliseconds of up to ``rows`` single-row predictions through the whole pipeline,
    after one untimed warm-up; stops early once LATENCY_BUDGET_S went on timed predictions."""
    predict = model.score_samples if task == "anomaly_detection" else model.predict
    if len(X) == 0:
        return 0.0
    samples = [X.iloc[[i % len(X)]] for i in range(rows + 1)]
    predict(samples[0])
    timings: list[float] = []
    for row in samples[1:]:
        started = time.perf_counter()
        predict(row)
        timings.append((time.perf_counter() - started) * 1000.0)
        if sum(timings) >= LATENCY_BUDGET_S * 1000.0:
            break
    return float(statistics.median(timings))


def library_versions(library: str = "sklearn") -> dict[str, str]:
    """Versions of what a fit depends on (``ml.runs.library_versions``)."""
    return dict(_library_versions(library))


@functools.cache
def _library_versions(library: str) -> dict[str, str]:
    # Once per process: reading the installed distributions' metadata takes ~7 ms, and a worker
    # runs the code it imported whatever is installed later.
    from importlib.metadata import PackageNotFoundError, version

    import pgmlops

    out = {"python": platform.python_version(), "pgmlops": pgmlops.__version__}
    names = ["scikit-learn", "numpy", "scipy", "pandas", "skops"] + (["torch"] if library == "torch" else [])
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


# -- SQL API ----------------------------------------------------------------------------------------


def create_project(conn: Conn, name: str, task: str, target: str | None, description: str | None = None) -> UUID:
    """Create a project (``ml.create_project``); an identical one's id is returned as it is.

    Raises:
        InvalidInput: bad name, task or target. DatabaseError (23505): a project of that name
            with another task or target. AccessDenied: viewers and non-members.
    """
    return UUID(str(call(conn, "ml.create_project(%s, %s, %s, %s)", (name, task, target, description))))


def train(conn: Conn, project: str, dataset: UUID | str, algorithm: str, hyperparams: Mapping[str, Any] | None = None,
          options: Mapping[str, Any] | None = None) -> int:
    """Queue a ``train`` job (``ml.train``) and return its id; ``ml.job_result(id)`` tells the
    outcome (its result: run_id, model_version_id, model, version, metrics).

    ``dataset`` is an id, ``'name'`` (newest version) or ``'name@version'``.

    Raises:
        NotFound: unknown project or dataset. InvalidInput: unknown algorithm, bad
            hyperparameters or options (the message names the parameter and rule).
        AccessDenied: viewers and non-members.
    """
    dataset_id = dataset if isinstance(dataset, UUID) else datasets.dataset_info(conn, dataset).id
    return int(call(conn, "ml.train(%s, %s, %s, %s, %s)",
                    (project, dataset_id, algorithm, Jsonb(dict(hyperparams or {})), Jsonb(dict(options or {})))))


def load_dataset(conn: Conn, dataset: UUID | str) -> pd.DataFrame:
    """A training set's rows as :func:`fit` takes them (:func:`pgmlops.features.load_dataset`:
    its ``attrs`` name the inputs, the label and the event time column)."""
    return datasets.load_dataset(conn, dataset)
