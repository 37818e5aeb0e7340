"""Offline champion/challenger tests: paired bootstrap, McNemar, DeLong, and the decision rule.

The three tests compare two models scored on the same holdout rows (docs/retraining.md, "Proving a
challenger better"). Every result is a :class:`ComparisonResult` whose ``difference`` is
challenger − champion on the metric's own scale; :func:`decide` turns one into a
:class:`Decision` with a reason that names the numbers.

Bad input raises :class:`pgmlops.errors.InvalidInput` (SQLSTATE 22023) naming the argument:
fewer than 2 rows, lengths that differ from ``y_true``, NaN or None, a non-binary ``y_true`` where
the test needs two classes, an unknown metric name. Only numpy and scipy are used.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from pgmlops.errors import InvalidInput

__all__ = [
    "BOOTSTRAP_METRICS",
    "MCNEMAR_EXACT_BELOW",
    "ComparisonResult",
    "Decision",
    "decide",
    "delong",
    "mcnemar",
    "paired_bootstrap",
]

_BAD_ARGUMENT = "22023"

# McNemar uses the exact binomial test while the discordant count b + c is below this, the
# chi-square test with continuity correction from it on (the usual rule: b + c >= 25).
MCNEMAR_EXACT_BELOW = 25

# Resampled index matrices are built in chunks of about this many cells (8 bytes each: 16 MB),
# so 2,000 resamples of a million rows do not need 16 GB at once.
_CHUNK_CELLS = 2_000_000

# The probability clip of log loss (scikit-learn clips to the dtype's eps as well).
_EPS = float(np.finfo(np.float64).eps)

Metric = str | Callable[[NDArray[Any], NDArray[Any]], float]


# ----------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------

def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_number(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_number(v) for v in value]
    return value


@dataclass(frozen=True)
class ComparisonResult:
    """The outcome of one champion/challenger test on one holdout.

    Attributes:
        test: ``paired_bootstrap``, ``mcnemar`` or ``delong``.
        metric: the metric compared (a callable's ``__name__`` for a custom one).
        champion: the champion's metric on the whole holdout.
        challenger: the challenger's metric on the whole holdout.
        difference: ``challenger - champion`` (raw: for a lower-is-better metric such as mae an
            improvement is negative; ``details["higher_is_better"]`` says which way is better).
        ci_low, ci_high: the confidence interval of ``difference`` (None when the test gives none).
        statistic: the test statistic (None for the bootstrap): McNemar's min(b, c) or chi-square,
            DeLong's z.
        p_value: the two-sided p-value (None for the bootstrap).
        n: the number of holdout rows.
        details: the test's own numbers (confidence, counts, resamples, method...), JSON-ready.
    """

    test: str
    metric: str
    champion: float
    challenger: float
    difference: float
    ci_low: float | None
    ci_high: float | None
    statistic: float | None
    p_value: float | None
    n: int
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The result as a JSON-ready dict; non-finite numbers become None (JSON has no NaN)."""
        data = asdict(self)
        data["details"] = dict(self.details)
        out: dict[str, Any] = _json_number(data)
        return out

    def to_json(self) -> str:
        """The result as a JSON text (the evidence column of ``ml.retraining_events``)."""
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)


@dataclass(frozen=True)
class Decision:
    """Whether the challenger goes on, and why.

    Attributes:
        accepted: True when the challenger is better with the configured confidence.
        reason: one sentence naming the test, the numbers and the rule applied.
        confidence: the confidence the rule used.
        min_improvement: the smallest improvement the rule required.
        result: the comparison decided on.
    """

    accepted: bool
    reason: str
    confidence: float
    min_improvement: float
    result: ComparisonResult

    def to_dict(self) -> dict[str, Any]:
        """The decision as a JSON-ready dict, the result nested under ``result``."""
        return {"accepted": self.accepted, "reason": self.reason, "confidence": self.confidence,
                "min_improvement": self.min_improvement, "result": self.result.to_dict()}

    def to_json(self) -> str:
        """The decision as a JSON text."""
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)


# ----------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------

def _invalid(argument: str, rule: str) -> InvalidInput:
    return InvalidInput(f"{argument}: {rule}", _BAD_ARGUMENT)


def _vector(name: str, values: Any, *, numeric: bool) -> NDArray[Any]:
    """``values`` as a 1-D array without NaN or None (float64 when ``numeric``)."""
    try:
        array = np.asarray(values, dtype=np.float64 if numeric else None)
    except (TypeError, ValueError) as exc:
        raise _invalid(name, f"must be {'numbers' if numeric else 'labels'} ({exc})") from None
    if array.ndim != 1:
        raise _invalid(name, f"must be one-dimensional, got shape {array.shape}")
    if array.dtype.kind == "f":
        if np.isnan(array).any():
            raise _invalid(name, f"holds NaN at row {int(np.flatnonzero(np.isnan(array))[0])}")
        if numeric and np.isinf(array).any():
            raise _invalid(name, f"holds an infinite value at row {int(np.flatnonzero(np.isinf(array))[0])}")
    elif array.dtype.kind == "O":
        for row, item in enumerate(array):
            if item is None or (isinstance(item, float) and math.isnan(item)):
                raise _invalid(name, f"holds a missing value (None or NaN) at row {row}")
    return array


def _paired(y_true: Any, first: Any, second: Any, names: tuple[str, str], *,
            numeric_y: bool, numeric_pred: bool) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
    y = _vector("y_true", y_true, numeric=numeric_y)
    a = _vector(names[0], first, numeric=numeric_pred)
    b = _vector(names[1], second, numeric=numeric_pred)
    if len(y) < 2:
        raise _invalid("y_true", f"needs at least 2 rows, got {len(y)}")
    for name, array in zip(names, (a, b), strict=True):
        if len(array) != len(y):
            raise _invalid(name, f"has {len(array)} rows where y_true has {len(y)}")
    return y, a, b


def _binary(name: str, y: NDArray[Any], *, both: bool) -> NDArray[np.float64]:
    """0/1 of ``y``: the positive class is the greater label in sorted order (as in training)."""
    labels = np.unique(y)
    if len(labels) > 2:
        raise _invalid(name, f"must be binary (two classes), got {len(labels)} distinct values")
    if both and len(labels) < 2:
        raise _invalid(name, "must hold both classes")
    out: NDArray[np.float64] = (y == labels[-1]).astype(np.float64)
    return out


def _confidence(value: float, name: str = "confidence") -> float:
    value = float(value)
    if not 0.0 < value < 1.0:
        raise _invalid(name, f"must be strictly between 0 and 1, got {value}")
    return value


# ----------------------------------------------------------------------------------------------
# Metrics over resamples. A resample is a row of a weight matrix W (resamples × n): how many times
# each holdout row was drawn. Every metric takes (y, p, W) and returns one value per row of W; the
# whole holdout is W = ones((1, n)) and a jackknife sample is a row of ones with one zero.
# ----------------------------------------------------------------------------------------------

_Resampled = Callable[[NDArray[Any], NDArray[Any], NDArray[np.float64]], NDArray[np.float64]]


_Rows = Callable[[NDArray[Any], NDArray[Any]], NDArray[np.float64]]
_Reduce = Callable[[NDArray[np.float64]], NDArray[np.float64]]


@dataclass(frozen=True)
class _MeanMetric:
    """A metric that is a function ``reduce`` of weighted means of per-row statistics ``rows``
    (one column each): the means of every resample are one matrix product."""

    rows: _Rows
    reduce: _Reduce

    def __call__(self, y: NDArray[Any], p: NDArray[Any], weights: NDArray[np.float64]) -> NDArray[np.float64]:
        return self.reduce((weights @ self.rows(y, p)) / weights.sum(axis=1, keepdims=True))


def _mean_metric(rows: _Rows, reduce: _Reduce) -> _MeanMetric:
    return _MeanMetric(rows, reduce)


def _paired_differences(compute: _Resampled, y: NDArray[Any], a: NDArray[Any],
                        b: NDArray[Any]) -> Callable[[NDArray[np.float64]], NDArray[np.float64]]:
    """``weights -> metric(challenger) - metric(champion)`` per row of weights; for a mean metric
    the per-row statistics of both models are computed once and share one matrix product."""
    if isinstance(compute, _MeanMetric):
        stacked = np.hstack([compute.rows(y, a), compute.rows(y, b)])
        k = stacked.shape[1] // 2
        reduce = compute.reduce

        def mean_differences(weights: NDArray[np.float64]) -> NDArray[np.float64]:
            means = (weights @ stacked) / weights.sum(axis=1, keepdims=True)
            return reduce(means[:, k:]) - reduce(means[:, :k])
        return mean_differences

    def differences(weights: NDArray[np.float64]) -> NDArray[np.float64]:
        return compute(y, b, weights) - compute(y, a, weights)
    return differences


def _column(values: Any) -> NDArray[np.float64]:
    return np.asarray(values, dtype=np.float64).reshape(-1, 1)


def _first(means: NDArray[np.float64]) -> NDArray[np.float64]:
    return means[:, 0]


def _ratio(num: NDArray[np.float64], den: NDArray[np.float64]) -> NDArray[np.float64]:
    # zero_division=0, as the training metrics (scikit-learn) use.
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _confusion(y: NDArray[Any], p: NDArray[Any]) -> NDArray[np.float64]:
    # Columns: true positive, false positive, false negative (y and p are 0/1).
    return np.column_stack([(y == 1) & (p == 1), (y == 0) & (p == 1), (y == 1) & (p == 0)]).astype(np.float64)


def _r2_rows(y: NDArray[Any], p: NDArray[Any]) -> NDArray[np.float64]:
    # Centred on the holdout's mean first: the variance is shift-invariant and centring avoids the
    # cancellation of mean(y²) − mean(y)² for values far from zero.
    centred = y - y.mean()
    return np.column_stack([(y - p) ** 2, centred, centred ** 2])


def _r2_reduce(means: NDArray[np.float64]) -> NDArray[np.float64]:
    variance = means[:, 2] - means[:, 1] ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(variance > 0, 1 - means[:, 0] / variance, np.nan)


def _log_loss_rows(y: NDArray[Any], s: NDArray[Any]) -> NDArray[np.float64]:
    q = np.clip(s, _EPS, 1 - _EPS)
    return _column(-(y * np.log(q) + (1 - y) * np.log1p(-q)))


def _roc_auc(y: NDArray[Any], s: NDArray[Any], weights: NDArray[np.float64]) -> NDArray[np.float64]:
    """Weighted Mann-Whitney AUC (ties count one half), which is the ROC AUC of the resample.

    Rows sorted by score once; per tie group the weights of positives P and negatives N; the AUC
    numerator is Σ_g P_g · (N below g + N_g / 2), the denominator (Σ P)(Σ N). NaN for a resample
    holding one class only.
    """
    order = np.argsort(s, kind="stable")
    sorted_scores = s[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    positive = y[order] == 1
    w = weights[:, order]
    pos = np.add.reduceat(w * positive, starts, axis=1)
    neg = np.add.reduceat(w * ~positive, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    numerator = np.sum(pos * (below + 0.5 * neg), axis=1)
    denominator = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


@dataclass(frozen=True)
class _MetricSpec:
    compute: _Resampled
    higher_is_better: bool
    # labels: y and predictions are labels compared for equality; binary_labels: 0/1 of the
    # greater label; scores: y binary, predictions scores; values: numbers.
    kind: Literal["labels", "binary_labels", "scores", "values"]


_METRICS: dict[str, _MetricSpec] = {
    "accuracy": _MetricSpec(_mean_metric(lambda y, p: _column(y == p), _first), True, "labels"),
    "precision": _MetricSpec(_mean_metric(_confusion, lambda m: _ratio(m[:, 0], m[:, 0] + m[:, 1])),
                             True, "binary_labels"),
    "recall": _MetricSpec(_mean_metric(_confusion, lambda m: _ratio(m[:, 0], m[:, 0] + m[:, 2])),
                          True, "binary_labels"),
    "f1": _MetricSpec(_mean_metric(_confusion, lambda m: _ratio(2 * m[:, 0], 2 * m[:, 0] + m[:, 1] + m[:, 2])),
                      True, "binary_labels"),
    "roc_auc": _MetricSpec(_roc_auc, True, "scores"),
    "log_loss": _MetricSpec(_mean_metric(_log_loss_rows, _first), False, "scores"),
    "brier": _MetricSpec(_mean_metric(lambda y, s: _column((s - y) ** 2), _first), False, "scores"),
    "mae": _MetricSpec(_mean_metric(lambda y, p: _column(np.abs(y - p)), _first), False, "values"),
    "rmse": _MetricSpec(_mean_metric(lambda y, p: _column((y - p) ** 2), lambda m: np.sqrt(m[:, 0])),
                        False, "values"),
    "r2": _MetricSpec(_mean_metric(_r2_rows, _r2_reduce), True, "values"),
    # scikit-learn's MAPE: a fraction, the denominator floored at the dtype's eps.
    "mape": _MetricSpec(_mean_metric(lambda y, p: _column(np.abs(y - p) / np.maximum(np.abs(y), _EPS)), _first),
                        False, "values"),
}

#: The metric names :func:`paired_bootstrap` computes vectorized, with the direction of each.
BOOTSTRAP_METRICS: Mapping[str, bool] = {name: spec.higher_is_better for name, spec in _METRICS.items()}


def _prepare(spec: _MetricSpec, y: NDArray[Any], a: NDArray[Any], b: NDArray[Any],
             names: tuple[str, str]) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
    """The three arrays in the form ``spec.compute`` expects."""
    if spec.kind == "labels":
        return y, a, b
    if spec.kind == "binary_labels":
        labels = np.unique(np.concatenate([y, a, b]))
        if len(labels) > 2:
            raise _invalid("y_true", f"precision, recall and f1 need binary labels; y_true and the "
                                     f"predictions hold {len(labels)} distinct values")
        positive = labels[-1]
        return ((y == positive).astype(np.int8), (a == positive).astype(np.int8),
                (b == positive).astype(np.int8))
    if spec.kind == "scores":
        yb = _binary("y_true", y, both=False)
        converted = [_vector(name, arr, numeric=True) for name, arr in zip(names, (a, b), strict=True)]
        return yb, converted[0], converted[1]
    return (_vector("y_true", y, numeric=True), _vector(names[0], a, numeric=True),
            _vector(names[1], b, numeric=True))


def _callable_metric(fn: Callable[[NDArray[Any], NDArray[Any]], float]) -> _Resampled:
    """A user's metric, called once per resample on the rows drawn (in row order)."""
    def resampled(y: NDArray[Any], p: NDArray[Any], weights: NDArray[np.float64]) -> NDArray[np.float64]:
        out = np.empty(weights.shape[0])
        rows = np.arange(len(y))
        for i in range(weights.shape[0]):
            drawn = np.repeat(rows, weights[i].astype(np.int64))
            try:
                out[i] = float(fn(y[drawn], p[drawn]))
            except ValueError:  # undefined on this resample (scikit-learn's convention)
                out[i] = np.nan
        return out
    return resampled


def _resample_weights(rng: np.random.Generator, resamples: int, n: int) -> NDArray[np.float64]:
    """``resamples`` rows of draw counts: row r counts ``rng.integers(0, n, size=(resamples, n))[r]``."""
    idx = rng.integers(0, n, size=(resamples, n))
    idx += (np.arange(resamples) * n)[:, None]  # row r's draws land in bins r·n .. r·n + n − 1
    return np.bincount(idx.ravel(), minlength=resamples * n).reshape(resamples, n).astype(np.float64)


# ----------------------------------------------------------------------------------------------
# Paired bootstrap
# ----------------------------------------------------------------------------------------------

def paired_bootstrap(y_true: Any, pred_champion: Any, pred_challenger: Any, metric: Metric, *,
                     n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0,
                     higher_is_better: bool | None = None,
                     method: Literal["percentile", "bca"] = "percentile") -> ComparisonResult:
    """Confidence interval of ``metric(challenger) - metric(champion)`` by the paired bootstrap.

    Each resample draws n row indices with replacement and scores *both* models on the same
    rows, so the interval reflects the difference on shared data, not two independent noises.
    The draws are ``numpy.random.default_rng(seed).integers(0, n, size=(chunk, n))``, chunk after
    chunk of ``max(1, 2_000_000 // n)`` resamples, so the same inputs and seed give the same
    numbers on every run. The interval is the percentile interval of the resampled differences
    (``numpy.quantile``, linear interpolation, at α/2 and 1 − α/2) or, with ``method="bca"``,
    Efron's bias-corrected and accelerated interval (acceleration from the jackknife).

    Args:
        y_true: the true labels or values of the holdout.
        pred_champion, pred_challenger: the two models' predictions on the same rows: labels for
            accuracy, precision, recall, f1 (binary: the positive class is the greater label);
            positive-class scores or probabilities for roc_auc, log_loss, brier; numbers for mae,
            rmse, r2, mape.
        metric: a name of :data:`BOOTSTRAP_METRICS` (vectorized over resamples), or a callable
            ``metric(y_true, y_pred) -> float`` called once per resample and model (slower; a
            ValueError from it marks the resample undefined).
        n_resamples: how many resamples, at least 100.
        confidence: the interval's coverage, in (0, 1).
        seed: the random seed.
        higher_is_better: which way the metric improves; None takes it from the metric name
            (True for a callable).
        method: ``percentile`` or ``bca``.

    Returns:
        A result with ``ci_low``/``ci_high`` and no statistic or p-value. ``details`` holds
        confidence, method, n_resamples, the number of resamples where the metric was defined
        (``n_valid``; a resample holding one class has no ROC AUC and is left out), seed,
        higher_is_better, the standard error of the difference and the quantile levels used.

    Raises:
        InvalidInput: bad arrays (see the module), an unknown metric, n_resamples below 100, a
            confidence outside (0, 1), a metric undefined on the whole holdout or on every
            resample.
    """
    names = ("pred_champion", "pred_challenger")
    confidence = _confidence(confidence)
    if isinstance(n_resamples, bool) or int(n_resamples) != n_resamples or n_resamples < 100:
        raise _invalid("n_resamples", f"must be an integer of at least 100, got {n_resamples}")
    if method not in ("percentile", "bca"):
        raise _invalid("method", f"must be 'percentile' or 'bca', got {method!r}")
    y, a, b = _paired(y_true, pred_champion, pred_challenger, names, numeric_y=False, numeric_pred=False)
    if isinstance(metric, str):
        if metric not in _METRICS:
            raise _invalid("metric", f"unknown metric {metric!r}; known: {', '.join(sorted(_METRICS))}")
        spec = _METRICS[metric]
        y, a, b = _prepare(spec, y, a, b, names)
        compute = spec.compute
        metric_name = metric
        direction = spec.higher_is_better if higher_is_better is None else bool(higher_is_better)
    elif callable(metric):
        compute = _callable_metric(metric)
        metric_name = getattr(metric, "__name__", "custom")
        direction = True if higher_is_better is None else bool(higher_is_better)
    else:
        raise _invalid("metric", f"must be a metric name or a callable, got {type(metric).__name__}")

    n = len(y)
    whole = np.ones((1, n))
    champion = float(compute(y, a, whole)[0])
    challenger = float(compute(y, b, whole)[0])
    if not (math.isfinite(champion) and math.isfinite(challenger)):
        raise _invalid("y_true", f"{metric_name} is undefined on this holdout (one class only, or constant values)")

    rng = np.random.default_rng(seed)
    resamples = int(n_resamples)
    differences = np.empty(resamples)
    paired = _paired_differences(compute, y, a, b)
    chunk = max(1, _CHUNK_CELLS // n)
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        differences[start:stop] = paired(_resample_weights(rng, stop - start, n))
    valid = differences[np.isfinite(differences)]
    if len(valid) == 0:
        raise _invalid("y_true", f"{metric_name} is undefined on every resample")

    alpha = 1 - confidence
    difference = challenger - champion
    if method == "bca":
        low_q, high_q = _bca_levels(valid, difference, alpha, n, paired)
    else:
        low_q, high_q = alpha / 2, 1 - alpha / 2
    ci_low, ci_high = (float(v) for v in np.quantile(valid, [low_q, high_q]))
    return ComparisonResult(
        test="paired_bootstrap", metric=metric_name, champion=champion, challenger=challenger,
        difference=difference, ci_low=ci_low, ci_high=ci_high, statistic=None, p_value=None, n=n,
        details={"confidence": confidence, "method": method, "n_resamples": resamples,
                 "n_valid": int(len(valid)), "seed": seed, "higher_is_better": direction,
                 "standard_error": float(np.std(valid, ddof=1)) if len(valid) > 1 else 0.0,
                 "quantiles": [float(low_q), float(high_q)]},
    )


def _bca_levels(valid: NDArray[np.float64], estimate: float, alpha: float, n: int,
                paired: Callable[[NDArray[np.float64]], NDArray[np.float64]]) -> tuple[float, float]:
    """Efron's BCa quantile levels (Efron & Tibshirani 1993, §14.3).

    z0 = Φ⁻¹(share of resampled differences below the estimate, ties counted half, clipped to
    [1/2B, 1 − 1/2B]); acceleration â = Σd³ / (6 (Σd²)^1.5) with d = mean(θ₍·₎) − θ₍ᵢ₎ over the
    jackknife differences; levels Φ(z0 + (z0 + z_q) / (1 − â (z0 + z_q))) for z_q = Φ⁻¹(α/2),
    Φ⁻¹(1 − α/2).
    """
    count = len(valid)
    below = (np.sum(valid < estimate) + 0.5 * np.sum(valid == estimate)) / count
    z0 = float(stats.norm.ppf(np.clip(below, 1 / (2 * count), 1 - 1 / (2 * count))))
    jackknife = np.empty(n)
    chunk = max(1, _CHUNK_CELLS // n)
    for start in range(0, n, chunk):
        rows = np.arange(start, min(n, start + chunk))
        weights = np.ones((len(rows), n))
        weights[np.arange(len(rows)), rows] = 0.0
        jackknife[rows] = paired(weights)
    jackknife = jackknife[np.isfinite(jackknife)]
    d = jackknife.mean() - jackknife
    denominator = 6.0 * float(np.sum(d ** 2)) ** 1.5
    acceleration = float(np.sum(d ** 3)) / denominator if denominator > 0 else 0.0
    levels = []
    for z_q in (float(stats.norm.ppf(alpha / 2)), float(stats.norm.ppf(1 - alpha / 2))):
        shifted = z0 + z_q
        levels.append(float(stats.norm.cdf(z0 + shifted / (1 - acceleration * shifted))))
    return levels[0], levels[1]


# ----------------------------------------------------------------------------------------------
# McNemar
# ----------------------------------------------------------------------------------------------

def mcnemar(y_true: Any, pred_champion: Any, pred_challenger: Any, *,
            exact: bool | None = None) -> ComparisonResult:
    """McNemar's test of equal accuracy of two classifiers on the same rows.

    With b = rows only the champion gets right and c = rows only the challenger gets right:

    * exact (the default while b + c < :data:`MCNEMAR_EXACT_BELOW`): statistic = min(b, c),
      p = min(1, 2 · BinomCDF(min(b, c); b + c, 1/2));
    * otherwise: statistic = (|b − c| − 1)² / (b + c) (continuity correction),
      p = chi-square(1 df) survival function of the statistic.

    Both equal ``statsmodels.stats.contingency_tables.mcnemar(table, exact=..., correction=True)``
    on the table [[both right, b], [c, both wrong]]. With no discordant pairs (b + c = 0) there is
    no evidence either way: statistic 0, p = 1 (statsmodels gives 1 exactly and NaN for the
    chi-square form).

    Labels are compared for equality, so any number of classes works; y_true needs no two classes.

    Returns:
        A result on ``accuracy`` (champion, challenger and difference are accuracies), no
        interval; ``details`` holds b, c, both_right, both_wrong, discordant and the variant
        (``exact`` or ``chi2``).

    Raises:
        InvalidInput: fewer than 2 rows, lengths that differ, NaN or None in any argument.
    """
    y, a, b_pred = _paired(y_true, pred_champion, pred_challenger, ("pred_champion", "pred_challenger"),
                           numeric_y=False, numeric_pred=False)
    right_a = a == y
    right_b = b_pred == y
    b = int(np.sum(right_a & ~right_b))
    c = int(np.sum(~right_a & right_b))
    discordant = b + c
    use_exact = discordant < MCNEMAR_EXACT_BELOW if exact is None else bool(exact)
    if discordant == 0:
        statistic, p_value = 0.0, 1.0
    elif use_exact:
        statistic = float(min(b, c))
        p_value = float(min(1.0, 2.0 * stats.binom.cdf(min(b, c), discordant, 0.5)))
    else:
        statistic = (abs(b - c) - 1.0) ** 2 / discordant
        p_value = float(stats.chi2.sf(statistic, 1))
    n = len(y)
    champion = float(right_a.mean())
    challenger = float(right_b.mean())
    return ComparisonResult(
        test="mcnemar", metric="accuracy", champion=champion, challenger=challenger,
        difference=challenger - champion, ci_low=None, ci_high=None, statistic=float(statistic),
        p_value=p_value, n=n,
        details={"b": b, "c": c, "both_right": int(np.sum(right_a & right_b)),
                 "both_wrong": int(np.sum(~right_a & ~right_b)), "discordant": discordant,
                 "variant": "exact" if use_exact else "chi2", "higher_is_better": True},
    )


# ----------------------------------------------------------------------------------------------
# DeLong
# ----------------------------------------------------------------------------------------------

def _midranks(values: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(stats.rankdata(values, method="average"), dtype=np.float64)


def delong(y_true: Any, score_champion: Any, score_challenger: Any, *,
           confidence: float = 0.95) -> ComparisonResult:
    """DeLong's test of two correlated ROC AUCs (DeLong, DeLong & Clarke-Pearson 1988), computed
    with Sun & Xu's (2014) midrank algorithm in O(n log n).

    With m positives X and k negatives Y, for each model: Tx, Ty, Tz the midranks of the scores
    within X, within Y and over all rows; AUC = (Σ Tz[X] − m(m+1)/2) / (m·k); placement values
    V10 = (Tz[X] − Tx) / k and V01 = 1 − (Tz[Y] − Ty) / m (ties count one half). S10, S01 are the
    2×2 sample covariances (ddof 1) of the V10 and V01 columns; S = S10/m + S01/k;
    Var(AUC_challenger − AUC_champion) = S11 + S00 − 2·S01; z = difference / √Var; the p-value is
    two-sided from the standard normal, and the interval is difference ± Φ⁻¹(1 − α/2)·√Var.
    With a zero variance (e.g. both models separate the classes perfectly) z is 0 and p = 1 when
    the AUCs are equal, ±inf and p = 0 otherwise.

    Args:
        y_true: binary labels; the positive class is the greater label.
        score_champion, score_challenger: the two models' scores for the positive class.
        confidence: the coverage of the interval, in (0, 1).

    Raises:
        InvalidInput: y_true not binary or with fewer than 2 rows of either class; lengths that
            differ; NaN, None or infinite scores; confidence outside (0, 1).
    """
    names = ("score_champion", "score_challenger")
    confidence = _confidence(confidence)
    y, a, b = _paired(y_true, score_champion, score_challenger, names, numeric_y=False, numeric_pred=True)
    positive = _binary("y_true", y, both=True).astype(bool)
    m = int(positive.sum())
    k = len(y) - m
    if m < 2 or k < 2:
        raise _invalid("y_true", f"needs at least 2 rows of each class, got {m} positive and {k} negative")
    aucs = np.empty(2)
    v10 = np.empty((2, m))
    v01 = np.empty((2, k))
    for model, scores in enumerate((a, b)):
        x, yy = scores[positive], scores[~positive]
        tx, ty, tz = _midranks(x), _midranks(yy), _midranks(scores)
        tz_x, tz_y = tz[positive], tz[~positive]
        aucs[model] = (tz_x.sum() - m * (m + 1) / 2) / (m * k)
        v10[model] = (tz_x - tx) / k
        v01[model] = 1.0 - (tz_y - ty) / m
    s = np.cov(v10, ddof=1) / m + np.cov(v01, ddof=1) / k
    variance = float(s[0, 0] + s[1, 1] - 2 * s[0, 1])
    difference = float(aucs[1] - aucs[0])
    if variance > 0:
        z = difference / math.sqrt(variance)
        p_value = float(2 * stats.norm.sf(abs(z)))
    else:
        variance = 0.0
        z = 0.0 if difference == 0 else math.copysign(math.inf, difference)
        p_value = 1.0 if difference == 0 else 0.0
    half = float(stats.norm.ppf(1 - (1 - confidence) / 2)) * math.sqrt(variance)
    return ComparisonResult(
        test="delong", metric="roc_auc", champion=float(aucs[0]), challenger=float(aucs[1]),
        difference=difference, ci_low=difference - half, ci_high=difference + half, statistic=z,
        p_value=p_value, n=len(y),
        details={"positives": m, "negatives": k, "variance": variance, "confidence": confidence,
                 "covariance": [[float(s[0, 0]), float(s[0, 1])], [float(s[1, 0]), float(s[1, 1])]],
                 "higher_is_better": True},
    )


# ----------------------------------------------------------------------------------------------
# The decision rule
# ----------------------------------------------------------------------------------------------

def _fmt(value: float) -> str:
    return f"{value:.4g}"


def decide(result: ComparisonResult, *, confidence: float, min_improvement: float = 0.0) -> Decision:
    """Whether the challenger goes on: better than the champion with the configured confidence.

    * Paired bootstrap: the interval (which must have been computed at this ``confidence``)
      lies wholly on the improving side beyond ``min_improvement``: ``ci_low > min_improvement``
      for a higher-is-better metric, ``ci_high < -min_improvement`` for a lower-is-better one.
    * McNemar and DeLong: ``p_value < 1 - confidence`` and the challenger's metric exceeds the
      champion's by more than ``min_improvement`` (accuracy and ROC AUC improve upwards). The
      p-value is two-sided, so the rule is a one-sided test at level (1 − confidence)/2:
      conservative on purpose.

    Args:
        result: a result of :func:`paired_bootstrap`, :func:`mcnemar` or :func:`delong`.
        confidence: in (0, 1), e.g. 0.95.
        min_improvement: the smallest improvement worth a promotion, on the metric's scale, >= 0.

    Returns:
        The decision with a reason naming the test, the numbers and the threshold.

    Raises:
        InvalidInput: confidence outside (0, 1), a negative or non-finite min_improvement, a
            bootstrap result computed at another confidence, an unknown test.
    """
    confidence = _confidence(confidence)
    min_improvement = float(min_improvement)
    if not math.isfinite(min_improvement) or min_improvement < 0:
        raise _invalid("min_improvement", f"must be a finite number >= 0, got {min_improvement}")
    r = result
    scores = (f"{r.metric} {_fmt(r.challenger)} (challenger) vs {_fmt(r.champion)} (champion), "
              f"difference {r.difference:+.4g} on {r.n} rows")
    if r.test == "paired_bootstrap":
        interval_confidence = float(r.details.get("confidence", math.nan))
        if not math.isclose(interval_confidence, confidence, rel_tol=0, abs_tol=1e-12):
            raise _invalid("confidence", f"is {confidence} but the bootstrap interval was computed at "
                                         f"{interval_confidence}: run paired_bootstrap with the same confidence")
        assert r.ci_low is not None and r.ci_high is not None
        higher = bool(r.details.get("higher_is_better", True))
        interval = f"{confidence:.0%} interval [{r.ci_low:+.4g}, {r.ci_high:+.4g}]"
        if higher:
            accepted = r.ci_low > min_improvement
            rule = f"lower bound {'>' if accepted else '<='} {min_improvement:g}"
        else:
            accepted = r.ci_high < -min_improvement
            rule = f"upper bound {'<' if accepted else '>='} {-min_improvement:g} (lower is better)"
        verdict = "better" if accepted else "not proven better"
        reason = f"paired bootstrap: {scores}; {interval}, {rule}: challenger {verdict}"
    elif r.test in ("mcnemar", "delong"):
        assert r.p_value is not None
        alpha = 1 - confidence
        significant = r.p_value < alpha
        improves = r.difference > min_improvement
        accepted = significant and improves
        name = "McNemar" if r.test == "mcnemar" else "DeLong"
        parts = [f"p = {r.p_value:.4g} {'<' if significant else '>='} {alpha:.4g}",
                 f"difference {'>' if improves else '<='} {min_improvement:g}"]
        verdict = "better" if accepted else "not proven better"
        reason = f"{name}: {scores}; {', '.join(parts)}: challenger {verdict}"
    else:
        raise _invalid("result", f"unknown test {r.test!r}")
    return Decision(accepted=bool(accepted), reason=reason, confidence=confidence,
                    min_improvement=min_improvement, result=r)
