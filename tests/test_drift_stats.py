"""Drift statistics in SQL (sql/monitoring/stats.sql) against scipy and Evidently's formulas on the same samples.

Tolerances (docs/drift-statistics.md): KS statistic 1e-12 (it is computed as scipy computes it),
KS p-value 1e-4 absolute of scipy's asymptotic one (1e-5 reached), Wasserstein 1e-9 relative,
chi-square and the Z-test 1e-9 relative / 1e-12 absolute, PSI, Jensen-Shannon and Hellinger 1e-12.
Evidently is not installed: its stattests are restated here from its source
(evidently/legacy/calculations/stattests/*.py) on numpy and scipy.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import psycopg
import pytest
from scipy import special, stats
from scipy.spatial import distance

Conn = psycopg.Connection[Any]


def floats(values: Any) -> list[float | None]:
    """A list psycopg sends as float8[] (None for NULL)."""
    return [None if v is None else float(v) for v in values]


def ks(conn: Conn, ref: Any, cur: Any) -> tuple[float, float]:
    row = conn.execute("select statistic, pvalue from ml_private.ks_2samp(%s::float8[], %s::float8[])",
                       (floats(ref), floats(cur))).fetchone()
    assert row is not None
    return float(row[0]), float(row[1])


def scalar(conn: Conn, sql: str, *args: Any) -> Any:
    row = conn.execute(sql, args).fetchone()
    assert row is not None
    return row[0]


def row_of(conn: Conn, sql: str, *args: Any) -> tuple[Any, ...]:
    row = conn.execute(sql, args).fetchone()
    assert row is not None
    return tuple(row)


def close(ours: float, ref: float, rel: float, abs_: float = 0.0) -> bool:
    if math.isnan(ref) or math.isnan(ours):
        return math.isnan(ref) and math.isnan(ours)
    if math.isinf(ref) or math.isinf(ours):
        return ours == ref
    return abs(ours - ref) <= max(abs_, rel * abs(ref))


# Evidently's stattests, restated (legacy/calculations/stattests/*.py)

def evidently_zero_fill(percents: np.ndarray) -> np.ndarray:
    out = percents.copy()
    smallest = out[out != 0].min()
    np.place(out, out == 0, smallest / 10**6 if smallest <= 0.0001 else 0.0001)
    return out


def evidently_psi(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    r = evidently_zero_fill(ref_counts / ref_counts.sum())
    c = evidently_zero_fill(cur_counts / cur_counts.sum())
    return float(np.sum((r - c) * np.log(r / c)))


def evidently_hellinger(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    shares = zip(ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum(), strict=True)
    total = sum(math.sqrt(float(p) * float(q)) for p, q in shares)
    return math.sqrt(1 - float(np.clip(total, 0, 1)))


def evidently_z(ref: np.ndarray, cur: np.ndarray) -> float:
    """p-value of Evidently's z stattest on two samples of at most two values."""
    if len(set(ref)) == 1 and len(set(cur)) == 1 and ref[0] == cur[0]:
        return 1.0
    key = sorted(set(ref) | set(cur))[0]
    r = np.where(ref == key, 0, 1)
    c = np.where(cur == key, 0, 1)
    n1, n2 = len(r), len(c)
    p1, p2 = float(sum(r)) / n1, float(sum(c)) / n2
    pooled = float(p1 * n1 + p2 * n2) / (n1 + n2)
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
    return float(2 * (1 - stats.norm.cdf(np.abs(z))))


def profile_edges(ref: np.ndarray, bins: int = 20) -> np.ndarray:
    """The reference profiles' numeric edges (docs/monitoring.md): quantiles, ties dropped."""
    return np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)))


def histogram_cells(edges: np.ndarray, x: np.ndarray) -> np.ndarray:
    """ml_private.histogram_bin of each value: 0 below, k for [e_k, e_k+1) (last closed), n + 1 above."""
    n = len(edges) - 1
    cell = np.searchsorted(edges, x, side="right")
    cell = np.where(x == edges[-1], n, cell)
    return np.where(x > edges[-1], n + 1, cell)


def binned(edges: np.ndarray, x: np.ndarray) -> tuple[list[float | None], list[float | None]]:
    """Counts and sums of x in the n + 2 cells of the profiles' layout."""
    cell = histogram_cells(edges, x)
    n = len(edges) + 1
    return floats(np.bincount(cell, minlength=n)), floats(np.bincount(cell, weights=x, minlength=n))


# ---------------------------------------------------------------------------------------------
# Special functions
# ---------------------------------------------------------------------------------------------

def test_log_gamma_and_incomplete_gamma_equal_scipy(conn: Conn) -> None:
    for x in [1e-5, 0.1, 0.5, 1.0, 1.5, 2.0, 3.7, 9.99, 10.0, 55.5, 1234.5, 1e5, 1e7, 3e8]:
        assert close(scalar(conn, "select ml_private.log_gamma(%s)", x), float(special.gammaln(x)), 1e-14, 1e-14)
    for a in [0.5, 1.0, 1.5, 2.0, 5.0, 10.5, 50.0, 500.0, 5000.0]:
        for x in [0.0, 0.001, 0.5, 2.0, 10.0, 100.0, 1000.0, 6000.0]:
            ref = float(special.gammaincc(a, x))
            assert close(scalar(conn, "select ml_private.gamma_q(%s, %s)", a, x), ref, 1e-12, 1e-300), (a, x)
    for df in [1, 2, 3, 7, 30, 999]:
        for x in [0.0, 0.01, 1.0, 3.84, 10.0, 100.0, 2000.0]:
            assert close(scalar(conn, "select ml_private.chi2_sf(%s, %s)", x, float(df)),
                         float(stats.chi2.sf(x, df)), 1e-12, 1e-300), (df, x)


def test_erfc_and_normal_sf_equal_scipy(conn: Conn) -> None:
    xs = np.concatenate([np.linspace(-6, 6, 121), [0.0, 0.49, 0.999, 1.0, 1.001, 5.5, 10.0, 20.0, 26.0]])
    ours = conn.execute("select ml_private.erfc(x) from unnest(%s::float8[]) x", (floats(xs),)).fetchall()
    for x, (o,) in zip(xs, ours, strict=True):
        # scipy's erfc rounds x^2 (relative error up to x^2 * 1.1e-16); ours splits it
        assert close(o, float(special.erfc(x)), max(2e-15, 2.5e-16 * x * x)), x
    for z in [-8.0, -1.0, 0.0, 0.3, 1.96, 5.0, 8.3, 12.0, 37.0]:
        assert close(scalar(conn, "select ml_private.normal_sf(%s)", z), float(stats.norm.sf(z)), max(2e-15, 2.5e-16 * z * z / 2))


def test_kolmogorov_smirnov_distribution_equals_scipy_kstwo_over_a_grid(conn: Conn) -> None:
    """Every method of ml_private.kstwo_sf (Ruben-Gambino, Pomeranz, Smirnov's sum and its large-n
    approximation, Pelz-Good) against scipy.stats.kstwo.sf."""
    cases = []
    for n in [1, 2, 3, 5, 10, 37, 140, 141, 500, 5000, 10001, 250000]:
        around = np.sqrt(np.array([0.1, 0.5, 0.75, 1.5, 2.5, 4.5, 9.0]) / n)     # the methods' limits in n d^2
        for d in np.unique(np.concatenate([np.linspace(0.002, 0.998, 9), around])):
            if d < 1:
                cases.append((float(d), n))
    rows = conn.execute("select ml_private.kstwo_sf(d, n) from unnest(%s::float8[], %s::bigint[]) t (d, n)",
                        ([c[0] for c in cases], [c[1] for c in cases])).fetchall()
    worst = max(abs(float(o) - float(stats.kstwo.sf(d, n))) for (d, n), (o,) in zip(cases, rows, strict=True))
    assert worst < 1e-5


# ---------------------------------------------------------------------------------------------
# Kolmogorov-Smirnov and Wasserstein on samples
# ---------------------------------------------------------------------------------------------

SAMPLE_SIZES = [(1, 2), (2, 1), (2, 5), (5, 5), (5, 100), (100, 137), (999, 1000), (3000, 800)]


@pytest.mark.parametrize("seed", [0, 1])
def test_ks_and_wasserstein_equal_scipy_on_random_samples(conn: Conn, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for n1, n2 in SAMPLE_SIZES:
        for ref, cur in [
            (rng.normal(0, 1, n1), rng.normal(0.3, 1.2, n2)),            # continuous, shifted
            (np.round(rng.normal(0, 1, n1), 1), np.round(rng.normal(0, 1, n2), 1)),   # ties
            (rng.integers(0, 4, n1).astype(float), rng.integers(1, 5, n2).astype(float)),  # heavy ties
            (rng.lognormal(0, 1, n1), rng.lognormal(0.2, 1, n2)),
        ]:
            statistic, pvalue = ks(conn, ref, cur)
            expected = stats.ks_2samp(ref, cur, method="asymp")
            assert abs(statistic - expected.statistic) <= 1e-12, (n1, n2)
            assert close(pvalue, float(expected.pvalue), 0, 1e-4), (n1, n2, pvalue, expected.pvalue)
            w = scalar(conn, "select ml_private.wasserstein_distance(%s::float8[], %s::float8[])", floats(ref), floats(cur))
            assert close(w, float(stats.wasserstein_distance(ref, cur)), 1e-9, 1e-15), (n1, n2)


def test_ks_and_wasserstein_awkward_samples(conn: Conn) -> None:
    rng = np.random.default_rng(7)
    cases: list[tuple[np.ndarray, np.ndarray]] = [
        (np.array([1.0]), np.array([1.0])),                         # one value each: scipy's p-value is NaN
        (np.array([3.0]), np.array([1.0, 2.0])),
        (np.full(50, 2.5), np.full(70, 2.5)),                        # constant, equal
        (np.full(50, 2.5), np.full(70, 3.5)),                        # constant, different
        (np.full(40, 1.0), rng.normal(1, 1, 60)),                    # constant against spread
        (rng.normal(0, 1, 300) * 1e12, rng.normal(0.1, 1, 400) * 1e12),  # huge values
        (rng.normal(0, 1, 300) * 1e-9, rng.normal(0, 1, 400) * 1e-9),    # tiny values
        (rng.normal(1e9, 1, 200), rng.normal(1e9 + 0.5, 1, 200)),    # large offset, small spread
    ]
    for ref, cur in cases:
        statistic, pvalue = ks(conn, ref, cur)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)     # scipy's kstwo with n = 0 (one value each)
            expected = stats.ks_2samp(ref, cur, method="asymp")
        assert abs(statistic - expected.statistic) <= 1e-12
        assert close(pvalue, float(expected.pvalue), 0, 1e-4), (ref[:3], cur[:3])
        w = scalar(conn, "select ml_private.wasserstein_distance(%s::float8[], %s::float8[])", floats(ref), floats(cur))
        assert close(w, float(stats.wasserstein_distance(ref, cur)), 1e-9, 1e-300)


def test_nulls_nan_and_infinity_are_dropped_before_testing(conn: Conn) -> None:
    """Evidently drops them (inf -> NaN -> dropna); the statistics equal scipy's on the rest."""
    rng = np.random.default_rng(3)
    ref, cur = rng.normal(0, 1, 200), rng.normal(0.4, 1, 150)
    dirty_ref = [*floats(ref), None, float("nan"), float("inf")]
    dirty_cur = [None, float("-inf"), *floats(cur), float("nan")]
    statistic, pvalue = ks(conn, dirty_ref, dirty_cur)
    expected = stats.ks_2samp(ref, cur, method="asymp")
    assert statistic == pytest.approx(expected.statistic, abs=1e-12)
    assert pvalue == pytest.approx(expected.pvalue, abs=1e-4)
    assert scalar(conn, "select ml_private.wasserstein_distance(%s::float8[], %s::float8[])", dirty_ref, dirty_cur) == \
        pytest.approx(stats.wasserstein_distance(ref, cur), rel=1e-9)
    assert scalar(conn, "select ml_private.wasserstein_distance_normed(%s::float8[], %s::float8[])", dirty_ref, dirty_cur) == \
        pytest.approx(stats.wasserstein_distance(ref, cur) / max(float(np.std(ref)), 0.001), rel=1e-9)


def test_wasserstein_normed_is_evidentlys_definition(conn: Conn) -> None:
    """max(numpy.std(reference) (ddof 0), 0.001) as the divisor; a constant reference divides by 0.001."""
    rng = np.random.default_rng(11)
    for ref, cur in [(rng.normal(5, 3, 500), rng.normal(5.5, 3, 700)), (np.full(30, 4.0), np.full(20, 4.002)),
                     (rng.normal(0, 1, 50) * 1e200, rng.normal(1, 1, 40) * 1e200)]:
        # numpy's std overflows (inf) on squares of 1e200: the SQL scales by a power of two first, exact
        scale = 2.0 ** 600 if np.abs(ref).max() > 1e150 else 1.0
        expected = stats.wasserstein_distance(ref, cur) / max(float(np.std(ref / scale)) * scale, 0.001)
        assert scalar(conn, "select ml_private.wasserstein_distance_normed(%s::float8[], %s::float8[])",
                      floats(ref), floats(cur)) == pytest.approx(expected, rel=1e-9)


def test_ks_and_wasserstein_on_100k_values(conn: Conn) -> None:
    rng = np.random.default_rng(5)
    ref, cur = rng.normal(0, 1, 100_000), np.round(rng.normal(0.01, 1, 50_000), 3)
    statistic, pvalue = ks(conn, ref, cur)
    expected = stats.ks_2samp(ref, cur, method="asymp")
    assert abs(statistic - expected.statistic) <= 1e-12
    assert pvalue == pytest.approx(expected.pvalue, abs=1e-4)
    assert scalar(conn, "select ml_private.wasserstein_distance(%s::float8[], %s::float8[])", floats(ref), floats(cur)) == \
        pytest.approx(stats.wasserstein_distance(ref, cur), rel=1e-9)


KS_OVER_A_TABLE = """
    with sizes as (            -- the sample sizes (NULL, NaN and infinities dropped)
        select (select count(*) from drift_values where not is_current and x > '-Infinity'::float8 and x < 'Infinity'::float8) as nr,
               (select count(*) from drift_values where is_current and x > '-Infinity'::float8 and x < 'Infinity'::float8) as nc
    ), cdf as (                -- one sort of both samples: cumulative counts, and the next value
        select x, lead(x) over w as next_x, sum(case when is_current then 0 else 1 end) over w as cr, count(*) over w as ca
        from drift_values where x > '-Infinity'::float8 and x < 'Infinity'::float8
        window w as (order by x rows between unbounded preceding and current row)
    )                          -- the CDFs at the last row of each run of equal values
    select max(abs(cdf.cr::float8 / s.nr - (cdf.ca - cdf.cr)::float8 / s.nc)) as ks_statistic,
           sum(abs(cdf.cr::float8 / s.nr - (cdf.ca - cdf.cr)::float8 / s.nc) * (cdf.next_x - cdf.x)) as wasserstein,
           min(s.nr) as nr, min(s.nc) as nc
    from cdf, sizes s where cdf.next_x is distinct from cdf.x
"""


def test_set_based_form_over_a_table_equals_scipy(conn: Conn) -> None:
    """The documented query (docs/drift-statistics.md) over a table, then the p-value function."""
    rng = np.random.default_rng(9)
    ref, cur = np.round(rng.normal(0, 1, 60_000), 2), rng.normal(0.02, 1.1, 30_000)
    conn.execute("create temp table drift_values (x float8, is_current boolean)")
    with conn.cursor().copy("copy drift_values (x, is_current) from stdin") as copy:
        for v in ref:
            copy.write_row((float(v), False))
        for v in cur:
            copy.write_row((float(v), True))
        copy.write_row((None, True))
    try:
        statistic, w, nr, nc = row_of(conn, KS_OVER_A_TABLE)
        expected = stats.ks_2samp(ref, cur, method="asymp")
        assert (nr, nc) == (60_000, 30_000)
        assert abs(statistic - expected.statistic) <= 1e-12
        assert w == pytest.approx(stats.wasserstein_distance(ref, cur), rel=1e-9)
        pvalue = scalar(conn, "select ml_private.ks_2samp_pvalue(%s, %s, %s)", statistic, nr, nc)
        assert pvalue == pytest.approx(expected.pvalue, abs=1e-4)
    finally:
        conn.execute("drop table drift_values")


# ---------------------------------------------------------------------------------------------
# Category counts
# ---------------------------------------------------------------------------------------------

def category_cases(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    cases = []
    for k in [2, 3, 5, 12, 60]:
        p = rng.dirichlet(np.ones(k))
        q = 0.7 * p + 0.3 * rng.dirichlet(np.ones(k))
        for n1, n2 in [(30, 25), (1000, 3000), (100_000, 20_000)]:
            cases.append((rng.multinomial(n1, p).astype(float), rng.multinomial(n2, q).astype(float)))
    cases.append((np.array([40.0, 10.0, 0.0]), np.array([30.0, 12.0, 5.0])))     # unseen in the reference
    cases.append((np.array([40.0, 10.0, 7.0]), np.array([30.0, 12.0, 0.0])))     # gone from the current window
    cases.append((np.array([4.0, 0.0]), np.array([0.0, 3.0])))                   # disjoint, 1 degree of freedom
    return cases


def test_chi2_contingency_equals_scipy(conn: Conn) -> None:
    rng = np.random.default_rng(21)
    for ref, cur in category_cases(rng):
        statistic, pvalue, dof = row_of(conn, "select * from ml_private.chi2_contingency(%s::float8[], %s::float8[])",
                                        floats(ref), floats(cur))
        keep = (ref + cur) > 0
        expected = stats.chi2_contingency(np.vstack([ref[keep], cur[keep]]))
        assert dof == expected.dof
        assert close(statistic, float(expected.statistic), 1e-12, 1e-12)
        assert close(pvalue, float(expected.pvalue), 1e-9, 1e-12), (ref, cur)


def test_chi2_contingency_leaves_out_categories_seen_nowhere_and_one_category_is_no_test(conn: Conn) -> None:
    with_empty = row_of(conn, "select * from ml_private.chi2_contingency('{40,0,10}', '{30,0,12}')")
    without = stats.chi2_contingency([[40, 10], [30, 12]])
    assert with_empty[2] == 1 and with_empty[0] == pytest.approx(without.statistic, rel=1e-12)
    assert row_of(conn, "select * from ml_private.chi2_contingency('{40,0}', '{30,0}')") == (0.0, 1.0, 0)
    assert stats.chi2_contingency([[40], [30]]).pvalue == 1.0


def test_chisquare_goodness_of_fit_is_evidentlys_chisquare(conn: Conn) -> None:
    rng = np.random.default_rng(22)
    for ref, cur in category_cases(rng):
        keep = (ref + cur) > 0
        ref_k, cur_k = ref[keep], cur[keep]
        with np.errstate(divide="ignore", invalid="ignore"):
            expected = stats.chisquare(cur_k, ref_k * (cur_k.sum() / ref_k.sum()))
        statistic, pvalue = row_of(conn, "select * from ml_private.chisquare_goodness_of_fit(%s::float8[], %s::float8[])",
                                   floats(ref), floats(cur))
        assert close(statistic, float(expected.statistic), 1e-12, 1e-12)
        assert close(pvalue, float(expected.pvalue), 1e-9, 1e-12), (ref, cur)
    # a category only in the current window: infinite statistic, p-value 0 (drift)
    assert row_of(conn, "select * from ml_private.chisquare_goodness_of_fit('{40,10,0}', '{30,12,5}')") == (math.inf, 0.0)


def test_proportions_z_test_is_evidentlys_z(conn: Conn) -> None:
    rng = np.random.default_rng(23)
    samples = []
    for n1, n2, p1, p2 in [(10, 12, 0.3, 0.5), (500, 800, 0.2, 0.22), (1000, 100_000, 0.5, 0.45), (40, 40, 0.0, 0.1),
                           (40, 50, 1.0, 1.0), (40, 50, 0.0, 0.0), (60, 30, 1.0, 0.0), (2000, 2000, 0.1, 0.9)]:
        samples.append((np.where(rng.random(n1) < p1, "b", "a"), np.where(rng.random(n2) < p2, "b", "a")))
    for ref, cur in samples:
        values = sorted(set(ref) | set(cur))
        ref_counts = [float(np.sum(ref == v)) for v in values]
        cur_counts = [float(np.sum(cur == v)) for v in values]
        statistic, pvalue = row_of(conn, "select * from ml_private.proportions_z_test(%s::float8[], %s::float8[])",
                                   ref_counts, cur_counts)
        assert pvalue == pytest.approx(evidently_z(ref, cur), abs=1e-12), (values, ref_counts, cur_counts)
        if len(values) == 2 and pvalue < 1:
            p1, p2 = ref_counts[1] / sum(ref_counts), cur_counts[1] / sum(cur_counts)
            assert np.sign(statistic) == np.sign(p1 - p2)


def test_psi_jensenshannon_and_hellinger_are_evidentlys(conn: Conn) -> None:
    rng = np.random.default_rng(24)
    cases = category_cases(rng)
    # numeric: Evidently's Sturges bins of both samples (n_vals > 20), and sparse bins for the zero rule
    ref, cur = rng.normal(0, 1, 3000), rng.normal(0.3, 1, 5000)
    edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
    cases.append((np.histogram(ref, edges)[0].astype(float), np.histogram(cur, edges)[0].astype(float)))
    cases.append((np.array([1.0, 0.0, 20000.0, 3.0]), np.array([0.0, 2.0, 10.0, 0.0])))    # smallest share <= 1e-4
    for ref_counts, cur_counts in cases:
        psi, js, hellinger = row_of(conn, "select ml_private.psi(%s::float8[], %s::float8[]), "
                                    "ml_private.jensenshannon(%s::float8[], %s::float8[]), "
                                    "ml_private.hellinger(%s::float8[], %s::float8[])",
                                    *[floats(ref_counts), floats(cur_counts)] * 3)
        assert psi == pytest.approx(evidently_psi(ref_counts, cur_counts), rel=1e-12, abs=1e-15)
        # Evidently passes shares (count / len) to scipy, which normalizes them again
        expected_js = distance.jensenshannon(ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum())
        assert js == pytest.approx(float(expected_js), rel=1e-12, abs=1e-15)
        assert hellinger == pytest.approx(evidently_hellinger(ref_counts, cur_counts), rel=1e-12, abs=1e-15)
    same = floats([5, 0, 7])
    assert row_of(conn, "select ml_private.psi(%s::float8[], %s::float8[]), ml_private.jensenshannon(%s::float8[], %s::float8[]), "
                  "ml_private.hellinger(%s::float8[], %s::float8[])", *[same, same] * 3) == (0.0, 0.0, 0.0)


# ---------------------------------------------------------------------------------------------
# Fast mode: binned forms
# ---------------------------------------------------------------------------------------------

BINNED_SCENARIOS = {
    "normal, shift 0.1": lambda rng: (rng.normal(0, 1, 20000), rng.normal(0.1, 1, 20000)),
    "normal, shift 0.5, scale 1.5": lambda rng: (rng.normal(0, 1, 20000), rng.normal(0.5, 1.5, 20000)),
    "normal, shift 3": lambda rng: (rng.normal(0, 1, 20000), rng.normal(3, 1, 20000)),
    "lognormal, sigma 1.2": lambda rng: (rng.lognormal(0, 1, 20000), rng.lognormal(0, 1.2, 20000)),
    "lognormal, +1": lambda rng: (rng.lognormal(0, 1, 20000), rng.lognormal(0, 1, 20000) + 1),
    "normal, 1000 against 100000, shift 0.2": lambda rng: (rng.normal(0, 1, 1000), rng.normal(0.2, 1, 100000)),
    "normal, no drift": lambda rng: (rng.normal(0, 1, 20000), rng.normal(0, 1, 20000)),
    "lognormal, no drift": lambda rng: (rng.lognormal(0, 1, 20000), rng.lognormal(0, 1, 20000)),
}


@pytest.mark.parametrize("scenario", list(BINNED_SCENARIOS))
def test_binned_wasserstein_with_sums_is_within_one_percent_of_exact(conn: Conn, scenario: str) -> None:
    """On the profiles' 20 quantile bins with each cell's sum: within 1.5% of the exact distance
    where there is drift (1% but for "lognormal, +1": 1.2%, its top quantile bin spanning 5 to
    159), and the same decision (normed, threshold 0.1) everywhere; never above."""
    ref, cur = BINNED_SCENARIOS[scenario](np.random.default_rng(31))
    edges = profile_edges(ref)
    ref_counts, ref_sums = binned(edges, ref)
    cur_counts, cur_sums = binned(edges, cur)
    approx = scalar(conn, "select ml_private.wasserstein_binned(%s::float8[], %s::float8[], %s::float8[], %s::float8[], %s::float8[])",
                    floats(edges), ref_counts, cur_counts, ref_sums, cur_sums)
    exact = float(stats.wasserstein_distance(ref, cur))
    norm = max(float(np.std(ref)), 0.001)
    assert approx <= exact * (1 + 1e-9)
    if exact / norm >= 0.05:
        assert approx == pytest.approx(exact, rel=0.015 if scenario == "lognormal, +1" else 0.01)
    else:
        assert abs(approx - exact) / norm < 0.005
    assert (approx / norm >= 0.1) == (exact / norm >= 0.1)


def test_binned_wasserstein_without_sums_spreads_each_bin_uniformly(conn: Conn) -> None:
    """Uniform mass within each bin: exact for samples that are uniform within their bins."""
    edges = [0.0, 1.0, 3.0, 4.0]
    # reference: one bin [0, 1) uniform; current: [1, 3) uniform -> W = distance between U(0,1) and U(1,3)
    ref = np.linspace(0, 1, 200_001)[:-1]
    cur = np.linspace(1, 3, 200_001)[:-1]
    exact = float(stats.wasserstein_distance(ref, cur))
    approx = scalar(conn, "select ml_private.wasserstein_binned(%s::float8[], '{0,1,0,0,0}', '{0,0,1,0,0}')", edges)
    assert approx == pytest.approx(exact, rel=1e-4)


def test_binned_ks_is_the_ks_of_the_binned_samples(conn: Conn) -> None:
    rng = np.random.default_rng(32)
    ref, cur = rng.normal(0, 1, 5000), rng.normal(0.1, 1.1, 8000)
    edges = profile_edges(ref)
    ref_counts, _ = binned(edges, ref)
    cur_counts, _ = binned(edges, cur)
    statistic, pvalue = row_of(conn, "select * from ml_private.ks_binned(%s::float8[], %s::float8[])", ref_counts, cur_counts)
    on_bins = stats.ks_2samp(histogram_cells(edges, ref), histogram_cells(edges, cur), method="asymp")
    assert statistic == pytest.approx(on_bins.statistic, abs=1e-12)
    assert pvalue == pytest.approx(on_bins.pvalue, abs=1e-4)
    assert statistic <= stats.ks_2samp(ref, cur).statistic


# ---------------------------------------------------------------------------------------------
# Bad arguments
# ---------------------------------------------------------------------------------------------

BAD_CALLS = [
    ("select ml_private.ks_2samp(null, '{1,2}')", "reference"),
    ("select ml_private.ks_2samp('{1,2}', '{}')", "current"),
    ("select ml_private.ks_2samp('{NaN,null,Infinity}', '{1}')", "reference"),
    ("select ml_private.wasserstein_distance('{1}', '{null}')", "current"),
    ("select ml_private.wasserstein_distance_normed('{}', '{1}')", "reference"),
    ("select ml_private.ks_2samp_pvalue(1.5, 10, 10)", "statistic"),
    ("select ml_private.ks_2samp_pvalue(0.5, 0, 10)", "n_reference"),
    ("select ml_private.ks_2samp_pvalue(0.5, 10, null)", "n_current"),
    ("select ml_private.chi2_contingency('{1,2}', '{1,2,3}')", "current_counts"),
    ("select ml_private.chi2_contingency('{1,-2}', '{1,2}')", "reference_counts"),
    ("select ml_private.chi2_contingency('{0,0}', '{1,2}')", "reference_counts"),
    ("select ml_private.chisquare_goodness_of_fit('{1,NaN}', '{1,2}')", "reference_counts"),
    ("select ml_private.chisquare_goodness_of_fit('{1,2}', null)", "current_counts"),
    ("select ml_private.proportions_z_test('{1,2,3}', '{1,2,3}')", "binary"),
    ("select ml_private.psi('{1,null}', '{1,2}')", "reference_counts"),
    ("select ml_private.jensenshannon('{1,2}', '{Infinity,2}')", "current_counts"),
    ("select ml_private.hellinger('{}', '{}')", "reference_counts"),
    ("select ml_private.wasserstein_binned('{2,1}', '{1,1,1}', '{1,1,1}')", "edges"),
    ("select ml_private.wasserstein_binned('{1}', '{1,1}', '{1,1}')", "edges"),
    ("select ml_private.wasserstein_binned('{1,2}', '{1,1}', '{1,1}')", "reference_counts"),
    ("select ml_private.wasserstein_binned('{1,2}', '{1,1,1}', '{1,1,1}', '{0,1.5,0}', null)", "sums"),
    ("select ml_private.wasserstein_binned('{1,2}', '{1,1,1}', '{1,1,1}', '{0,1.5}', '{0,1.5}')", "reference_sums"),
    ("select ml_private.ks_binned('{1,2}', '{-1,2}')", "current_counts"),
    ("select ml_private.gamma_q(0, 1)", "gamma_q"),
    ("select ml_private.chi2_sf(1, -1)", "chi2_sf"),
]


@pytest.mark.parametrize(("sql", "field"), BAD_CALLS)
def test_bad_arguments_raise_22023_naming_the_field(conn: Conn, sql: str, field: str) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue) as caught:
        conn.execute(sql)
    assert caught.value.sqlstate == "22023"
    assert field in str(caught.value)
