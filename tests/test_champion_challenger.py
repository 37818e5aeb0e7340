"""Champion/challenger tests equal reference computations on the same data (issue 13): McNemar
against statsmodels, DeLong against a direct O(n·m) computation of the placement values, the
paired bootstrap against scikit-learn's metrics on the same resamples; and the decision rule."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import stats
from sklearn import metrics as skm
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

from pgmlops.errors import InvalidInput
from pgmlops.retraining import (
    BOOTSTRAP_METRICS,
    MCNEMAR_EXACT_BELOW,
    ComparisonResult,
    decide,
    delong,
    mcnemar,
    paired_bootstrap,
)

TOL = 1e-12


def _labels_with_accuracy(rng: np.random.Generator, y: NDArray[Any], accuracy: float, classes: int = 2) -> NDArray[Any]:
    wrong = rng.random(len(y)) >= accuracy
    shifted = (y + rng.integers(1, classes, len(y))) % classes
    return np.where(wrong, shifted, y)


def _scores(rng: np.random.Generator, y: NDArray[Any], separation: float, decimals: int = 1) -> NDArray[np.float64]:
    # Rounded, so many scores tie (within and across classes).
    return np.round(rng.normal(size=len(y)) + separation * y, decimals)


# ---------------------------------------------------------------------------------------------
# McNemar
# ---------------------------------------------------------------------------------------------

def _statsmodels(y: Any, a: Any, b: Any, exact: bool) -> tuple[float, float]:
    right_a, right_b = np.asarray(a) == np.asarray(y), np.asarray(b) == np.asarray(y)
    table = [[np.sum(right_a & right_b), np.sum(right_a & ~right_b)],
             [np.sum(~right_a & right_b), np.sum(~right_a & ~right_b)]]
    bunch = sm_mcnemar(table, exact=exact, correction=True)
    return float(bunch.statistic), float(bunch.pvalue)


@pytest.mark.parametrize("seed", range(12))
def test_mcnemar_equals_statsmodels_exact_and_chi_square(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.choice([8, 30, 150, 2000]))
    classes = int(rng.choice([2, 3]))
    y = rng.integers(0, classes, n)
    a = _labels_with_accuracy(rng, y, rng.uniform(0.6, 0.95), classes)
    b = _labels_with_accuracy(rng, y, rng.uniform(0.6, 0.95), classes)
    for exact in (True, False):
        result = mcnemar(y, a, b, exact=exact)
        statistic, p_value = _statsmodels(y, a, b, exact)
        if result.details["discordant"] == 0:
            continue  # covered by its own test
        assert result.statistic is not None and result.p_value is not None
        assert abs(result.statistic - statistic) <= TOL
        assert abs(result.p_value - p_value) <= TOL
        assert result.details["variant"] == ("exact" if exact else "chi2")
    auto = mcnemar(y, a, b)
    assert auto.details["variant"] == ("exact" if auto.details["discordant"] < MCNEMAR_EXACT_BELOW else "chi2")


def test_mcnemar_switches_to_chi_square_at_25_discordant_pairs() -> None:
    y = np.zeros(100, dtype=int)
    for discordant, variant in ((24, "exact"), (25, "chi2")):
        a = np.zeros(100, dtype=int)
        b = np.zeros(100, dtype=int)
        a[:discordant] = 1  # the champion is wrong on these rows, the challenger right
        result = mcnemar(y, a, b)
        assert result.details["variant"] == variant
        assert (result.details["b"], result.details["c"]) == (0, discordant)
        statistic, p_value = _statsmodels(y, a, b, exact=variant == "exact")
        assert result.statistic == pytest.approx(statistic, abs=TOL)
        assert result.p_value == pytest.approx(p_value, abs=TOL)


def test_mcnemar_of_identical_predictions_has_p_one_and_is_rejected() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    a = _labels_with_accuracy(rng, y, 0.8)
    for exact in (None, True, False):
        result = mcnemar(y, a, a.copy(), exact=exact)
        assert (result.statistic, result.p_value, result.difference) == (0.0, 1.0, 0.0)
    assert _statsmodels(y, a, a, exact=True)[1] == 1.0
    assert not decide(mcnemar(y, a, a), confidence=0.95).accepted


def test_mcnemar_counts_and_accuracies() -> None:
    y = np.array(["a", "b", "a", "b", "a", "c"])
    a = np.array(["a", "b", "b", "a", "a", "c"])  # right on 0, 1, 4, 5
    b = np.array(["a", "a", "a", "b", "c", "c"])  # right on 0, 2, 3, 5
    r = mcnemar(y, a, b)
    assert (r.details["b"], r.details["c"], r.details["both_right"], r.details["both_wrong"]) == (2, 2, 2, 0)
    assert r.champion == r.challenger == pytest.approx(4 / 6)
    assert r.p_value == 1.0 and r.n == 6


# ---------------------------------------------------------------------------------------------
# DeLong
# ---------------------------------------------------------------------------------------------

def _delong_direct(y: NDArray[Any], scores: list[NDArray[np.float64]]) -> dict[str, Any]:
    """DeLong et al. (1988) as written: placement values from every (positive, negative) pair."""
    positive = y == 1
    m, k = int(positive.sum()), int((~positive).sum())
    v10, v01, aucs = [], [], []
    for s in scores:
        x, z = s[positive], s[~positive]
        psi = (x[:, None] > z[None, :]).astype(float) + 0.5 * (x[:, None] == z[None, :])
        aucs.append(psi.mean())
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    s10 = np.array([[np.sum((v10[i] - aucs[i]) * (v10[j] - aucs[j])) / (m - 1) for j in range(2)] for i in range(2)])
    s01 = np.array([[np.sum((v01[i] - aucs[i]) * (v01[j] - aucs[j])) / (k - 1) for j in range(2)] for i in range(2)])
    cov = s10 / m + s01 / k
    variance = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    z = (aucs[1] - aucs[0]) / math.sqrt(variance)
    return {"aucs": aucs, "cov": cov, "variance": variance, "z": z, "p": 2 * stats.norm.sf(abs(z))}


@pytest.mark.parametrize("seed", range(10))
def test_delong_equals_the_direct_computation_with_ties(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n = int(rng.choice([6, 40, 300, 1500]))
    y = rng.integers(0, 2, n)
    y[:2], y[2:4] = 0, 1  # at least two of each class
    decimals = int(rng.choice([0, 1, 3]))
    a = _scores(rng, y, rng.uniform(0, 2), decimals)
    b = _scores(rng, y, rng.uniform(0, 2), decimals)
    result = delong(y, a, b)
    direct = _delong_direct(y, [a, b])
    assert abs(result.champion - direct["aucs"][0]) <= TOL
    assert abs(result.challenger - direct["aucs"][1]) <= TOL
    assert abs(result.champion - skm.roc_auc_score(y, a)) <= TOL
    assert np.max(np.abs(np.array(result.details["covariance"]) - direct["cov"])) <= TOL
    assert abs(result.details["variance"] - direct["variance"]) <= TOL
    assert result.statistic is not None and result.p_value is not None
    assert abs(result.statistic - direct["z"]) <= 1e-9 * max(1.0, abs(direct["z"]))
    assert abs(result.p_value - direct["p"]) <= TOL


def test_delong_positive_class_is_the_greater_label() -> None:
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 200)
    a, b = _scores(rng, y, 1.0), _scores(rng, y, 1.5)
    as_words = np.where(y == 1, "yes", "no")
    assert delong(as_words, a, b).to_dict() == delong(y, a, b).to_dict()


def test_delong_of_identical_scores_has_p_one() -> None:
    rng = np.random.default_rng(8)
    y = rng.integers(0, 2, 300)
    a = _scores(rng, y, 1.0)
    r = delong(y, a, a.copy())
    assert (r.difference, r.statistic, r.p_value) == (0.0, 0.0, 1.0)
    assert not decide(r, confidence=0.95).accepted


def test_delong_with_zero_variance_and_a_difference() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    perfect = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    flat = np.full(6, 0.5)  # AUC 0.5, every placement value one half: no variance either
    r = delong(y, flat, perfect)
    assert (r.champion, r.challenger, r.p_value) == (0.5, 1.0, 0.0)
    assert r.statistic == math.inf and json.loads(r.to_json())["statistic"] is None


# ---------------------------------------------------------------------------------------------
# Paired bootstrap
# ---------------------------------------------------------------------------------------------

def _same_resamples(n: int, n_resamples: int, seed: int) -> list[NDArray[np.int64]]:
    """The rows each resample draws, as paired_bootstrap documents its draws."""
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // n)
    rows: list[NDArray[np.int64]] = []
    for start in range(0, n_resamples, chunk):
        rows.extend(rng.integers(0, n, size=(min(chunk, n_resamples - start), n)))
    return rows


def _reference_interval(metric: Any, y: Any, a: Any, b: Any, n_resamples: int, seed: int,
                        confidence: float) -> tuple[float, float]:
    diffs = [metric(y[i], b[i]) - metric(y[i], a[i]) for i in _same_resamples(len(y), n_resamples, seed)]
    alpha = 1 - confidence
    low, high = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _dataset(kind: str, n: int, seed: int) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
    rng = np.random.default_rng(seed)
    if kind == "labels":
        y = rng.integers(0, 2, n)
        return y, _labels_with_accuracy(rng, y, 0.75), _labels_with_accuracy(rng, y, 0.8)
    if kind == "scores":
        y = rng.integers(0, 2, n)
        return y, 1 / (1 + np.exp(-_scores(rng, y, 1.0))), 1 / (1 + np.exp(-_scores(rng, y, 1.4)))
    y = rng.normal(10, 3, n)
    return y, y + rng.normal(0, 2, n), y + rng.normal(0.2, 1.5, n)


SKLEARN = {
    "accuracy": ("labels", skm.accuracy_score),
    "precision": ("labels", lambda y, p: skm.precision_score(y, p, zero_division=0)),
    "recall": ("labels", lambda y, p: skm.recall_score(y, p, zero_division=0)),
    "f1": ("labels", lambda y, p: skm.f1_score(y, p, zero_division=0)),
    "roc_auc": ("scores", skm.roc_auc_score),
    "log_loss": ("scores", lambda y, p: skm.log_loss(y, p, labels=[0, 1])),
    "brier": ("scores", skm.brier_score_loss),
    "mae": ("values", skm.mean_absolute_error),
    "rmse": ("values", skm.root_mean_squared_error),
    "r2": ("values", skm.r2_score),
    "mape": ("values", skm.mean_absolute_percentage_error),
}


def test_every_named_metric_has_a_reference() -> None:
    assert set(SKLEARN) == set(BOOTSTRAP_METRICS)


@pytest.mark.parametrize("metric", sorted(SKLEARN))
def test_bootstrap_interval_equals_scikit_learn_on_the_same_resamples(metric: str) -> None:
    kind, reference = SKLEARN[metric]
    y, a, b = _dataset(kind, 80, seed=len(metric))
    result = paired_bootstrap(y, a, b, metric, n_resamples=120, seed=11, confidence=0.9)
    assert abs(result.champion - reference(y, a)) <= TOL
    assert abs(result.challenger - reference(y, b)) <= TOL
    low, high = _reference_interval(reference, y, a, b, 120, 11, 0.9)
    assert result.ci_low is not None and result.ci_high is not None
    assert abs(result.ci_low - low) <= TOL and abs(result.ci_high - high) <= TOL
    assert result.details["n_valid"] == 120
    assert result.details["higher_is_better"] is BOOTSTRAP_METRICS[metric]


def test_bootstrap_with_a_callable_equals_the_named_metric() -> None:
    y, a, b = _dataset("scores", 60, seed=5)
    named = paired_bootstrap(y, a, b, "roc_auc", n_resamples=200, seed=2)
    custom = paired_bootstrap(y, a, b, skm.roc_auc_score, n_resamples=200, seed=2)
    assert custom.metric == "roc_auc_score"
    assert abs(custom.ci_low - named.ci_low) <= TOL and abs(custom.ci_high - named.ci_high) <= TOL  # type: ignore[operator]


def test_bootstrap_is_reproducible_with_a_seed() -> None:
    y, a, b = _dataset("scores", 3000, seed=1)
    first = paired_bootstrap(y, a, b, "roc_auc", seed=42)
    assert paired_bootstrap(y, a, b, "roc_auc", seed=42).to_json() == first.to_json()
    assert paired_bootstrap(y, a, b, "roc_auc", seed=43).ci_low != first.ci_low


def test_bootstrap_leaves_out_resamples_where_the_metric_is_undefined() -> None:
    y = np.array([0, 0, 0, 0, 1])
    a = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    b = np.array([0.95, 0.2, 0.3, 0.4, 0.9])
    r = paired_bootstrap(y, a, b, "roc_auc", n_resamples=500, seed=0)
    # A resample without the one positive row (probability (4/5)^5 ≈ 0.33) has no AUC.
    assert 250 < r.details["n_valid"] < 420
    assert r.champion == 1.0 and r.challenger == 0.75


@pytest.mark.parametrize(("metric", "method"), [("accuracy", "percentile"), ("mae", "percentile"), ("mae", "bca"),
                                              ("rmse", "bca")])
def test_bootstrap_equals_scipy_paired_bootstrap(metric: str, method: str) -> None:
    # scipy.stats.bootstrap(paired=True) draws rng.integers(0, n, (n_resamples, n)) too, so with the
    # same seed both see the same resamples; BCa's bias correction and jackknife acceleration too.
    y, a, b = _dataset("labels" if metric == "accuracy" else "values", 400, seed=21)

    def statistic(y: Any, a: Any, b: Any, axis: int) -> Any:
        if metric == "accuracy":
            return np.mean(b == y, axis=axis) - np.mean(a == y, axis=axis)
        if metric == "mae":
            return np.mean(np.abs(b - y), axis=axis) - np.mean(np.abs(a - y), axis=axis)
        return np.sqrt(np.mean((b - y) ** 2, axis=axis)) - np.sqrt(np.mean((a - y) ** 2, axis=axis))

    reference = stats.bootstrap((y, a, b), statistic, paired=True, vectorized=True, n_resamples=1000,
                                confidence_level=0.9, method="BCa" if method == "bca" else "percentile",
                                rng=np.random.default_rng(5))
    ours = paired_bootstrap(y, a, b, metric, n_resamples=1000, confidence=0.9, seed=5, method=method)  # type: ignore[arg-type]
    assert abs(ours.ci_low - reference.confidence_interval.low) <= TOL  # type: ignore[operator]
    assert abs(ours.ci_high - reference.confidence_interval.high) <= TOL  # type: ignore[operator]
    assert abs(ours.details["standard_error"] - reference.standard_error) <= TOL


def test_bca_interval_is_close_to_the_percentile_one_for_a_mean() -> None:
    y, a, b = _dataset("values", 2000, seed=9)
    pct = paired_bootstrap(y, a, b, "mae", seed=1)
    bca = paired_bootstrap(y, a, b, "mae", seed=1, method="bca")
    assert bca.details["method"] == "bca"
    assert bca.ci_low < bca.difference < bca.ci_high  # type: ignore[operator]
    width = pct.ci_high - pct.ci_low  # type: ignore[operator]
    assert abs(bca.ci_low - pct.ci_low) < 0.1 * width and abs(bca.ci_high - pct.ci_high) < 0.1 * width  # type: ignore[operator]


def test_bootstrap_on_a_large_holdout() -> None:
    y, a, b = _dataset("labels", 100_000, seed=4)
    r = paired_bootstrap(y, a, b, "accuracy", n_resamples=300)
    assert r.ci_low < r.difference < r.ci_high  # type: ignore[operator]
    # The standard error of a paired accuracy difference: sqrt(discordant share / n) roughly.
    discordant = np.mean((a == y) != (b == y))
    assert r.details["standard_error"] == pytest.approx(math.sqrt(discordant / len(y)), rel=0.15)


# ---------------------------------------------------------------------------------------------
# Decisions: a better challenger goes on, an equal or worse one does not
# ---------------------------------------------------------------------------------------------

def _better_and_equal(seed: int, n: int = 3000) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    champion = _labels_with_accuracy(rng, y, 0.80)
    better = _labels_with_accuracy(rng, y, 0.86)
    equal = _labels_with_accuracy(rng, y, 0.80)
    return {"y": y, "champion": champion, "better": better, "equal": equal,
            "s_champion": _scores(rng, y, 1.0, 3), "s_better": _scores(rng, y, 1.5, 3), "s_equal": _scores(rng, y, 1.0, 3)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_genuinely_better_challenger_is_accepted_by_every_test(seed: int) -> None:
    d = _better_and_equal(seed)
    results = [paired_bootstrap(d["y"], d["champion"], d["better"], "accuracy", seed=seed, n_resamples=1000),
               paired_bootstrap(d["y"], d["s_champion"], d["s_better"], "roc_auc", seed=seed, n_resamples=1000),
               mcnemar(d["y"], d["champion"], d["better"]),
               delong(d["y"], d["s_champion"], d["s_better"])]
    for result in results:
        decision = decide(result, confidence=0.95)
        assert decision.accepted, decision.reason
        assert "challenger better" in decision.reason


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_equal_or_worse_challenger_is_rejected_by_every_test(seed: int) -> None:
    d = _better_and_equal(seed)
    for champion, challenger in (("equal", "champion"), ("better", "champion")):  # equal; worse
        results = [paired_bootstrap(d["y"], d[champion], d[challenger], "accuracy", seed=seed, n_resamples=1000),
                   paired_bootstrap(d["y"], d["s_" + champion], d["s_" + challenger], "roc_auc", seed=seed,
                                    n_resamples=1000),
                   mcnemar(d["y"], d[champion], d[challenger]),
                   delong(d["y"], d["s_" + champion], d["s_" + challenger])]
        for result in results:
            decision = decide(result, confidence=0.95)
            assert not decision.accepted, decision.reason
            assert "not proven better" in decision.reason


def test_lower_is_better_metrics_improve_downwards() -> None:
    y, a, b = _dataset("values", 2000, seed=3)  # b's errors are smaller
    better = paired_bootstrap(y, a, b, "rmse")
    assert better.difference < 0 and better.details["higher_is_better"] is False
    assert decide(better, confidence=0.95).accepted
    worse = paired_bootstrap(y, b, a, "rmse")
    assert not decide(worse, confidence=0.95).accepted


def test_min_improvement_raises_the_bar() -> None:
    d = _better_and_equal(0)
    r = paired_bootstrap(d["y"], d["champion"], d["better"], "accuracy")
    assert r.ci_low is not None and r.ci_low > 0.02
    assert decide(r, confidence=0.95, min_improvement=0.02).accepted
    assert not decide(r, confidence=0.95, min_improvement=0.2).accepted
    m = mcnemar(d["y"], d["champion"], d["better"])
    assert decide(m, confidence=0.95).accepted and not decide(m, confidence=0.95, min_improvement=0.2).accepted


def test_the_reason_names_the_numbers() -> None:
    y = np.array([1] * 60 + [0] * 40)
    a = np.array([1] * 40 + [0] * 20 + [0] * 40)  # 80 right
    b = np.array([1] * 60 + [0] * 40)              # 100 right
    decision = decide(mcnemar(y, a, b), confidence=0.99)
    assert decision.accepted
    p = 2 * stats.binom.cdf(0, 20, 0.5)
    assert decision.reason == (f"McNemar: accuracy 1 (challenger) vs 0.8 (champion), difference +0.2 on 100 rows; "
                               f"p = {p:.4g} < 0.01, difference > 0: challenger better")
    stored = json.loads(decision.to_json())
    assert stored["accepted"] is True and stored["result"]["details"]["c"] == 20


def test_result_to_json_round_trips() -> None:
    y, a, b = _dataset("labels", 300, seed=0)
    r = paired_bootstrap(y, a, b, "f1", n_resamples=200)
    data = json.loads(r.to_json())
    assert ComparisonResult(**data) == r
    with pytest.raises(AttributeError):
        r.difference = 1.0  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# Tiny samples and bad inputs
# ---------------------------------------------------------------------------------------------

def test_tiny_samples() -> None:
    for test in (lambda: mcnemar([1], [1], [0]), lambda: paired_bootstrap([1], [1], [0], "accuracy"),
                 lambda: delong([1], [0.2], [0.3])):
        with pytest.raises(InvalidInput, match="y_true: needs at least 2 rows, got 1"):
            test()
    two = mcnemar([0, 1], [0, 0], [0, 1])
    assert two.p_value == 1.0 and two.details["variant"] == "exact"
    assert not decide(paired_bootstrap([0, 1], [0, 0], [0, 1], "accuracy"), confidence=0.95).accepted
    five = mcnemar([0, 1, 1, 0, 1], [1, 0, 0, 1, 0], [0, 1, 1, 0, 1])  # all five discordant, for the challenger
    assert five.p_value == pytest.approx(2 / 32, abs=TOL)
    assert not decide(five, confidence=0.95).accepted  # 0.0625: five rows cannot prove it
    r = delong([0, 0, 1, 1, 0], [0.1, 0.4, 0.35, 0.8, 0.2], [0.1, 0.2, 0.7, 0.8, 0.3])
    assert r.challenger == 1.0 and r.p_value is not None
    with pytest.raises(InvalidInput, match="y_true: needs at least 2 rows of each class, got 1 positive"):
        delong([0, 0, 1, 0, 0], [0.1, 0.4, 0.35, 0.8, 0.2], [0.1, 0.2, 0.7, 0.8, 0.3])


@pytest.mark.parametrize(("call", "pattern"), [
    (lambda: mcnemar([0, 1, 1], [0, 1], [0, 1, 1]), r"pred_champion: has 2 rows where y_true has 3"),
    (lambda: paired_bootstrap([0, 1, 1], [0, 1, 1], [0, 1], "accuracy"), r"pred_challenger: has 2 rows"),
    (lambda: delong([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3]), r"score_challenger: has 3 rows"),
    (lambda: delong([0, 1, 2, 1, 0], [0.1] * 5, [0.2] * 5), r"y_true: must be binary \(two classes\), got 3"),
    (lambda: delong([1, 1, 1, 1], [0.1] * 4, [0.2] * 4), r"y_true: must hold both classes"),
    (lambda: delong([0, 1, 0, 1], [0.1, np.nan, 0.3, 0.4], [0.1] * 4), r"score_champion: holds NaN at row 1"),
    (lambda: delong([0, 1, 0, 1], [0.1] * 4, [0.1, 0.2, np.inf, 0.4]), r"score_challenger: holds an infinite value at row 2"),
    (lambda: mcnemar([0.0, np.nan, 1.0], [0, 1, 1], [0, 1, 1]), r"y_true: holds NaN at row 1"),
    (lambda: mcnemar(["a", None, "b"], ["a", "b", "b"], ["a", "b", "b"]), r"y_true: holds a missing value"),
    (lambda: paired_bootstrap([0, 1, 2, 1], [0, 1, 2, 1], [0, 1, 1, 1], "f1"), r"y_true: precision, recall and f1 need binary labels"),
    (lambda: paired_bootstrap([0, 1, 2], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3], "roc_auc"), r"y_true: must be binary"),
    (lambda: paired_bootstrap([1, 1, 1], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3], "roc_auc"),
     r"y_true: roc_auc is undefined on this holdout"),
    (lambda: paired_bootstrap([0, 1], [0, 1], [0, 1], "auc"), r"metric: unknown metric 'auc'"),
    (lambda: paired_bootstrap([0, 1], [0, 1], [0, 1], "accuracy", n_resamples=10), r"n_resamples: must be an integer of at least 100"),
    (lambda: paired_bootstrap([0, 1], [0, 1], [0, 1], "accuracy", confidence=1.0), r"confidence: must be strictly between 0 and 1"),
    (lambda: paired_bootstrap([0, 1], ["a", "b"], [0, 1], "mae"), r"pred_champion: must be numbers"),
    (lambda: decide(mcnemar([0, 1], [0, 1], [0, 1]), confidence=0), r"confidence: must be strictly between 0 and 1"),
    (lambda: decide(mcnemar([0, 1], [0, 1], [0, 1]), confidence=0.9, min_improvement=-0.1),
     r"min_improvement: must be a finite number >= 0"),
    (lambda: decide(paired_bootstrap([0, 1], [0, 1], [0, 1], "accuracy"), confidence=0.9),
     r"confidence: is 0.9 but the bootstrap interval was computed at 0.95"),
])
def test_bad_input_is_refused_naming_the_argument(call: Any, pattern: str) -> None:
    with pytest.raises(InvalidInput, match=pattern) as caught:
        call()
    assert caught.value.sqlstate == "22023"
