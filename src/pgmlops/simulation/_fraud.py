"""A fraud-detection traffic generator with a known labelling function and scripted drift.

Pure functions of a seed: numpy's ``default_rng`` drives every draw, all of them vectorized, and
the results are pandas DataFrames. Nothing here touches a database (``_driver`` does).

The world (docs/simulation.md spells out every constant):

- **Customers** have a home location, a spending scale ``s`` (lognormal) and an activity weight
  (gamma). Transactions pick their customer in proportion to activity.
- **Transactions** arrive as a Poisson process whose hourly rate follows a daily cycle
  (:data:`HOUR_PROFILE`, quiet at night, peaks at noon and in the evening). Each has a merchant
  category (:data:`CATEGORIES`, with :data:`CATEGORY_WEIGHTS`), an amount ``exp(N(mu_cat + log s,
  sigma_cat))``, a device (pos / web / mobile) and a distance from home (lognormal km).
- **History aggregates** (``avg_amount_30d``, ``tx_count_7d``) are the customer's snapshot as of
  the start of the transaction's week (a profile snapshot before the first week, then computed
  from the simulated transactions of the trailing 30 and 7 days): what a feature store would
  serve at that moment, so labels and features agree point in time.
- **Fraud** is drawn from ``P(fraud | x) = sigmoid(z)`` with
  ``z = b0 + 1.2 log(amount / avg_amount_30d) + 0.8 log1p(distance_from_home) + 0.9 [hour < 6]
  + 0.7 [device = web] + CATEGORY_RISK[category] - 0.04 tx_count_7d`` (:data:`COEFFICIENTS`);
  ``b0`` is solved (bisection on a fixed reference sample) so that the base regime's fraud rate
  is :data:`BASE_RATE`.
- **Label delay**, as chargebacks: a fraud is reported after a lognormal delay (median 12 days,
  90 % within about 5 to 25 days); a share (:data:`NEVER_REPORTED`) never is. A transaction with
  no chargeback is taken as legitimate after :data:`MATURITY_DAYS` (an unreported fraud too: the
  label noise real systems live with).

Scenarios are timelines of :class:`Segment` s over the run (fractions of its length), each
applying a :class:`Regime` with a ramp (0 = sudden; else the share of rows from the new regime
grows linearly over the ramp): ``none``, ``covariate_shift`` (P(x) changes, P(y|x) kept),
``prior_shift`` (P(y) changes, P(x|y) kept: rows are resampled by class), ``concept_drift``
(P(y|x) changes, P(x) kept), their ``gradual_`` variants, and ``seasonal_recurrence`` (regime A,
then B, then A again).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from pgmlops.errors import InvalidInput

__all__ = [
    "BASE_RATE",
    "CATEGORIES",
    "COEFFICIENTS",
    "DEVICES",
    "SCENARIOS",
    "Regime",
    "Segment",
    "Traffic",
    "fraud_logit",
    "generate",
    "generate_customers",
    "label_delays",
    "scenario",
]

Rng = np.random.Generator
FloatArray = np.ndarray[Any, np.dtype[np.float64]]

CATEGORIES: tuple[str, ...] = ("grocery", "restaurant", "gas", "retail", "pharmacy", "entertainment",
                               "travel", "electronics", "online_services", "jewelry")
CATEGORY_WEIGHTS: tuple[float, ...] = (0.24, 0.16, 0.12, 0.14, 0.07, 0.07, 0.05, 0.06, 0.06, 0.03)
# log-scale mean and spread of the amount (currency units) by category.
CATEGORY_MU: tuple[float, ...] = (3.4, 3.3, 3.6, 4.0, 3.1, 3.5, 5.6, 5.0, 2.9, 5.8)
CATEGORY_SIGMA: tuple[float, ...] = (0.6, 0.5, 0.4, 0.8, 0.6, 0.7, 0.9, 0.9, 0.7, 1.0)
# Added to the fraud logit by category.
CATEGORY_RISK: tuple[float, ...] = (-0.6, -0.5, -0.2, 0.0, -0.4, 0.0, 0.5, 0.9, 0.6, 1.2)
DEVICES: tuple[str, ...] = ("pos", "web", "mobile")
DEVICE_WEIGHTS: tuple[float, ...] = (0.55, 0.2, 0.25)
# Relative arrival rate by hour of day (mean 1).
_RAW_PROFILE = np.array([0.25, 0.15, 0.1, 0.1, 0.12, 0.2, 0.45, 0.8, 1.1, 1.25, 1.35, 1.5,
                         1.6, 1.5, 1.35, 1.3, 1.35, 1.5, 1.65, 1.7, 1.55, 1.2, 0.8, 0.45])
HOUR_PROFILE: FloatArray = _RAW_PROFILE / _RAW_PROFILE.mean()
# The known labelling function's coefficients (besides the intercept and CATEGORY_RISK).
COEFFICIENTS: Mapping[str, float] = {"log_amount_ratio": 1.2, "log1p_distance": 0.8, "night": 0.9,
                                     "web": 0.7, "tx_count_7d": -0.04}
BASE_RATE = 0.02
NEVER_REPORTED = 0.15
REPORT_DELAY_MEDIAN_DAYS = 12.0
REPORT_DELAY_SIGMA = 0.45
MATURITY_DAYS = 30.0
BURN_IN_DAYS = 28  # a multiple of 7: the run starts on a snapshot
DISTANCE_MU = 1.6  # log km: median about 5 km
DISTANCE_SIGMA = 1.0


@dataclass(frozen=True)
class Regime:
    """How a stretch of traffic differs from the base world.

    ``amount_shift`` adds to every category's log-mean amount; ``distance_scale`` multiplies the
    distance from home; ``device_weights`` / ``category_weights`` replace the mixes (covariate
    shift). ``base_rate`` resamples rows by class so the fraud rate becomes it with P(x | y) kept
    (prior shift). ``pattern`` adds ``pattern_strength`` to the logit of transactions on
    ``pattern[0]`` (a device) in the categories ``pattern[1]`` (concept drift: a new fraud
    pattern; the feature distribution is untouched).
    """

    name: str = "A"
    amount_shift: float = 0.0
    distance_scale: float = 1.0
    device_weights: tuple[float, ...] | None = None
    category_weights: tuple[float, ...] | None = None
    base_rate: float | None = None
    pattern: tuple[str, tuple[str, ...]] | None = None
    pattern_strength: float = 0.0


@dataclass(frozen=True)
class Segment:
    """Regime ``regime`` from ``start`` to ``end`` (fractions of the run, 0 to 1), reached over
    ``ramp`` (a fraction of the run; 0 = a sudden switch)."""

    start: float
    end: float
    regime: Regime
    ramp: float = 0.0


BASE = Regime("A")
_SHIFTED = Regime("B", amount_shift=0.6, distance_scale=2.5, device_weights=(0.35, 0.3, 0.35))
_PRIOR = Regime("B", base_rate=0.06)
_CONCEPT = Regime("B", pattern=("mobile", ("electronics", "online_services", "gas")), pattern_strength=3.0)
# The season moves what customers' history does not remember (distance, device, the fraud
# pattern), so when it ends the first regime is back at once.
_SEASON = Regime("B", distance_scale=2.0, device_weights=(0.3, 0.45, 0.25),
                 pattern=("web", ("retail", "travel", "electronics")), pattern_strength=2.0)

SCENARIOS: Mapping[str, tuple[Segment, ...]] = {
    "none": (),
    "covariate_shift": (Segment(0.5, 1.0, _SHIFTED),),
    "gradual_covariate_shift": (Segment(0.4, 1.0, _SHIFTED, ramp=0.3),),
    "prior_shift": (Segment(0.5, 1.0, _PRIOR),),
    "concept_drift": (Segment(0.5, 1.0, _CONCEPT),),
    "gradual_concept_drift": (Segment(0.4, 1.0, _CONCEPT, ramp=0.3),),
    "seasonal_recurrence": (Segment(1 / 3, 2 / 3, _SEASON),),
}


def scenario(name: str) -> tuple[Segment, ...]:
    """The segments of the scenario ``name`` (one of :data:`SCENARIOS`).

    Raises:
        InvalidInput: an unknown name (22023; the message lists the scenarios).
    """
    try:
        return SCENARIOS[name]
    except KeyError:
        raise InvalidInput(f"scenario: unknown scenario {name!r} (one of {', '.join(SCENARIOS)})", "22023") from None


# -- customers -----------------------------------------------------------------------------------


def generate_customers(n: int, rng: Rng) -> pd.DataFrame:
    """``n`` customers: ``customer_id``, home ``home_lat``/``home_lon`` (around Europe), spending
    ``scale`` (lognormal, median 1), ``activity`` (gamma, mean 1), and the profile snapshot of
    their history (``avg_amount_30d``, ``tx_count_7d``) before the simulation starts."""
    scale = rng.lognormal(0.0, 0.4, n)
    activity = rng.gamma(2.0, 0.5, n)
    weights = np.asarray(CATEGORY_WEIGHTS)
    mean_amount = float(np.sum(weights * np.exp(np.asarray(CATEGORY_MU) + np.asarray(CATEGORY_SIGMA) ** 2 / 2)))
    return pd.DataFrame({
        "customer_id": [f"c{i:06d}" for i in range(n)],
        "home_lat": rng.uniform(40.0, 55.0, n).round(4),
        "home_lon": rng.uniform(-5.0, 20.0, n).round(4),
        "scale": scale,
        "activity": activity,
        "avg_amount_30d": (mean_amount * scale * rng.lognormal(0.0, 0.15, n)).round(2),
        "tx_count_7d": rng.poisson(activity * 14.0).astype(np.int64),
    })


# -- the labelling function ----------------------------------------------------------------------


def fraud_logit(frame: pd.DataFrame, intercept: float, regime: Regime | None = None) -> FloatArray:
    """The known logit of fraud for each row of ``frame`` (columns amount, avg_amount_30d,
    distance_from_home, hour, device, merchant_category, tx_count_7d) under ``regime``'s
    pattern (None: the base function)."""
    cat_index = pd.Categorical(frame["merchant_category"], categories=CATEGORIES).codes
    risk = np.asarray(CATEGORY_RISK)[cat_index]
    z = (intercept
         + COEFFICIENTS["log_amount_ratio"] * np.log(frame["amount"].to_numpy() / frame["avg_amount_30d"].to_numpy())
         + COEFFICIENTS["log1p_distance"] * np.log1p(frame["distance_from_home"].to_numpy())
         + COEFFICIENTS["night"] * (frame["hour"].to_numpy() < 6)
         + COEFFICIENTS["web"] * (frame["device"].to_numpy() == "web")
         + risk
         + COEFFICIENTS["tx_count_7d"] * frame["tx_count_7d"].to_numpy())
    if regime is not None and regime.pattern is not None:
        device, categories = regime.pattern
        hit = (frame["device"].to_numpy() == device) & np.isin(frame["merchant_category"].to_numpy(), categories)
        z = z + regime.pattern_strength * hit
    return np.asarray(z, dtype=np.float64)


def _sigmoid(z: FloatArray) -> FloatArray:
    return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float64)


_INTERCEPT_CACHE: dict[float, float] = {}


def base_intercept(rate: float = BASE_RATE) -> float:
    """The intercept ``b0`` that gives the base regime a mean fraud probability of ``rate``,
    solved by bisection on a fixed reference run (scenario none, seed 0, 14 days at 200 an hour,
    about 67,000 rows): the same for every run."""
    if rate not in _INTERCEPT_CACHE:
        sample = generate("none", days=14, rate_per_hour=200.0, seed=0, intercept=0.0).transactions
        z0 = fraud_logit(sample, 0.0)
        lo, hi = -20.0, 10.0
        for _ in range(60):
            mid = (lo + hi) / 2
            if float(_sigmoid(z0 + mid).mean()) < rate:
                lo = mid
            else:
                hi = mid
        _INTERCEPT_CACHE[rate] = (lo + hi) / 2
    return _INTERCEPT_CACHE[rate]


# -- label delays --------------------------------------------------------------------------------


def label_delays(is_fraud: np.ndarray[Any, Any], rng: Rng, *, never_reported: float = NEVER_REPORTED,
                 median_days: float = REPORT_DELAY_MEDIAN_DAYS, sigma: float = REPORT_DELAY_SIGMA,
                 maturity_days: float = MATURITY_DAYS) -> tuple[FloatArray, np.ndarray[Any, Any]]:
    """Days after each transaction until its label is known, and whether it is reported fraud.

    A fraud is reported (label true) after ``lognormal(log(median_days), sigma)`` days, except a
    share ``never_reported`` that, like every legitimate transaction, is labelled false after
    ``maturity_days`` without a chargeback."""
    n = len(is_fraud)
    fraud = np.asarray(is_fraud, dtype=bool)
    reported = fraud & (rng.random(n) >= never_reported)
    delay = np.full(n, maturity_days, dtype=np.float64)
    delay[reported] = rng.lognormal(math.log(median_days), sigma, int(reported.sum()))
    return delay, reported


# -- traffic -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Traffic:
    """A simulated run: its ``transactions`` (one row each, in time order: txn_id, customer_id,
    event_time, amount, merchant_category, hour, device, distance_from_home, avg_amount_30d,
    tx_count_7d, is_fraud (the truth), fraud_probability, regime, segment, label_time (when the
    label is known), label (what is reported then: true only for reported fraud)), the
    ``customers`` and their weekly history ``snapshots`` (customer_id, event_time,
    avg_amount_30d, tx_count_7d), and the segment boundaries as times."""

    transactions: pd.DataFrame
    customers: pd.DataFrame
    snapshots: pd.DataFrame
    segments: list[dict[str, Any]] = field(default_factory=list)
    intercept: float = 0.0


def _features(rng: Rng, n: int, customers: pd.DataFrame, _t: FloatArray, hours: np.ndarray[Any, Any],
              regimes: Sequence[Regime], regime_index: np.ndarray[Any, Any]) -> pd.DataFrame:
    """``n`` transactions' features (no label, no history): row i under ``regimes[regime_index[i]]``."""
    weights = customers["activity"].to_numpy()
    cust = rng.choice(len(customers), n, p=weights / weights.sum())
    cat = np.empty(n, dtype=np.int64)
    dev = np.empty(n, dtype=np.int64)
    shift = np.zeros(n)
    dscale = np.ones(n)
    for k, regime in enumerate(regimes):
        rows = np.flatnonzero(regime_index == k)
        if rows.size == 0:
            continue
        cw = np.asarray(regime.category_weights or CATEGORY_WEIGHTS)
        dw = np.asarray(regime.device_weights or DEVICE_WEIGHTS)
        cat[rows] = rng.choice(len(CATEGORIES), rows.size, p=cw / cw.sum())
        dev[rows] = rng.choice(len(DEVICES), rows.size, p=dw / dw.sum())
        shift[rows] = regime.amount_shift
        dscale[rows] = regime.distance_scale
    mu = np.asarray(CATEGORY_MU)[cat] + np.log(customers["scale"].to_numpy()[cust]) + shift
    amount = np.round(rng.lognormal(0.0, 1.0, n) ** np.asarray(CATEGORY_SIGMA)[cat] * np.exp(mu), 2)
    amount = np.maximum(amount, 0.5)
    distance = np.round(rng.lognormal(DISTANCE_MU, DISTANCE_SIGMA, n) * dscale, 3)
    return pd.DataFrame({
        "customer_id": customers["customer_id"].to_numpy()[cust],
        "amount": amount,
        "merchant_category": np.asarray(CATEGORIES, dtype=object)[cat],
        "hour": np.asarray(hours, dtype=np.int64),
        "device": np.asarray(DEVICES, dtype=object)[dev],
        "distance_from_home": distance,
        "avg_amount_30d": customers["avg_amount_30d"].to_numpy()[cust],
        "tx_count_7d": customers["tx_count_7d"].to_numpy()[cust],
    })


def _arrivals(rng: Rng, days: int, rate_per_hour: float) -> FloatArray:
    """Arrival times in hours since the start: Poisson counts per hour following the daily cycle,
    uniform within the hour; sorted."""
    hours = np.arange(days * 24)
    counts = rng.poisson(rate_per_hour * HOUR_PROFILE[hours % 24])
    t = np.repeat(hours, counts).astype(np.float64) + rng.random(int(counts.sum()))
    return np.sort(t)


def _assign(rng: Rng, frac: FloatArray, segments: Sequence[Segment]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """For rows at run fractions ``frac``: the index of the segment they fall in (-1: none) and
    whether each is drawn from the segment's regime (the ramp's mixing weight)."""
    seg = np.full(frac.size, -1, dtype=np.int64)
    new = np.zeros(frac.size, dtype=bool)
    for k, s in enumerate(segments):
        inside = (frac >= s.start) & (frac < s.end)
        seg[inside] = k
        weight = np.clip((frac - s.start) / s.ramp, 0.0, 1.0) if s.ramp > 0 else np.ones(frac.size)
        new |= inside & (rng.random(frac.size) < weight)
    return seg, new


def _snapshots(customers: pd.DataFrame, tx: pd.DataFrame, start: pd.Timestamp, weeks: int) -> pd.DataFrame:
    """Each customer's history as of the start of every week: the profile at week 0, then the
    mean amount of the trailing 30 days (the profile value when fewer than 3 transactions) and
    the count of the trailing 7 days."""
    frames = [pd.DataFrame({"customer_id": customers["customer_id"], "week": 0,
                            "avg_amount_30d": customers["avg_amount_30d"], "tx_count_7d": customers["tx_count_7d"]})]
    week_of = ((tx["event_time"] - start) / pd.Timedelta(days=7)).astype(int).to_numpy()
    profile = customers.set_index("customer_id")
    for w in range(1, weeks):
        past30 = tx[(week_of < w) & (tx["event_time"] >= start + pd.Timedelta(days=7 * w - 30))]
        past7 = tx[week_of == w - 1]
        grouped = past30.groupby("customer_id")["amount"].agg(["mean", "size"])
        avg = profile["avg_amount_30d"].copy()
        enough = grouped.index[grouped["size"] >= 3]
        avg.loc[enough] = grouped.loc[enough, "mean"].round(2)
        count = past7.groupby("customer_id").size().reindex(profile.index, fill_value=0)
        frames.append(pd.DataFrame({"customer_id": profile.index, "week": w, "avg_amount_30d": avg.to_numpy(),
                                    "tx_count_7d": count.to_numpy().astype(np.int64)}))
    snaps = pd.concat(frames, ignore_index=True)
    snaps["event_time"] = start + pd.to_timedelta(snaps["week"] * 7, unit="D") - pd.Timedelta(seconds=1)
    return snaps


def generate(scenario_name: str | Sequence[Segment], *, start: datetime | None = None, days: int = 30,
             rate_per_hour: float = 500.0, seed: int = 0, customers: int | None = None,
             base_rate: float = BASE_RATE, intercept: float | None = None, label_delay: float = 1.0) -> Traffic:
    """Simulate ``days`` days of traffic from ``start`` (default 2026-01-01 UTC) at a mean of
    ``rate_per_hour`` transactions an hour under a scenario (a name of :data:`SCENARIOS` or
    segments). Deterministic for a seed. ``customers`` defaults to one per 14 transactions a
    week (between 50 and 50,000). ``intercept`` overrides the labelling function's ``b0`` (default:
    :func:`base_intercept` of ``base_rate``). ``label_delay`` scales every label's delay (the
    chargebacks' and the 30 days' maturity): a demo compresses weeks into days with 0.1.

    Raises:
        InvalidInput: an unknown scenario; days below 1 or above 366; a rate not above 0 or
            above 100,000; a base rate outside (0, 0.5) (22023, naming the field).
    """
    segments = scenario(scenario_name) if isinstance(scenario_name, str) else tuple(scenario_name)
    if not 1 <= days <= 366:
        raise InvalidInput(f"days: must be between 1 and 366, got {days}", "22023")
    if not 0 < rate_per_hour <= 100_000:
        raise InvalidInput(f"rate_per_hour: must be above 0 and at most 100000, got {rate_per_hour}", "22023")
    if not 0 < label_delay <= 10:
        raise InvalidInput(f"label_delay: must be above 0 and at most 10, got {label_delay}", "22023")
    if not 0 < base_rate < 0.5:
        raise InvalidInput(f"base_rate: must be between 0 and 0.5, got {base_rate}", "22023")
    begin = pd.Timestamp(start or datetime(2026, 1, 1, tzinfo=UTC))
    begin = begin.tz_localize("UTC") if begin.tzinfo is None else begin.tz_convert("UTC")
    rng = np.random.default_rng(seed)
    intercept = base_intercept(base_rate) if intercept is None else intercept
    # A burn-in of BURN_IN_DAYS in the base regime gives every customer a real history: the
    # aggregates are stationary from the first simulated day; its transactions are dropped.
    t = _arrivals(rng, days + BURN_IN_DAYS, rate_per_hour) - BURN_IN_DAYS * 24
    # About 14 transactions per customer a week whatever the rate and length, so the history
    # aggregates (and the base fraud rate) do not depend on them.
    n_customers = customers or int(np.clip(rate_per_hour * 24 * 7 / 14, 50, 50_000))
    people = generate_customers(n_customers, rng)

    frac = t / (days * 24)
    seg, new = _assign(rng, frac, segments)
    regimes = [BASE, *[s.regime for s in segments]]
    regime_index = np.where(new, seg + 1, 0)

    # Prior shift: rows of a regime with its own base rate are drawn from a larger pool and kept
    # by class (weights pi'/pi for fraud, (1-pi')/(1-pi) for legitimate), so P(x | y) stays.
    keep = np.ones(t.size, dtype=bool)
    pool_extra: list[tuple[FloatArray, int]] = []
    wanted: dict[int, int] = {}
    for k, regime in enumerate(regimes):
        if regime.base_rate is None:
            continue
        rows = np.flatnonzero(regime_index == k)
        w1, w0 = regime.base_rate / base_rate, (1 - regime.base_rate) / (1 - base_rate)
        # Half as large again as the nominal rates need: the candidates' own fraud rate may be
        # below base_rate; the kept rows are thinned back to the segment's arrivals below.
        factor = 1.5 * max(w1, w0)
        extra = int(math.ceil(rows.size * (factor - 1)))
        # Extra candidates at times drawn like the segment's own rows.
        pool_extra.append((t[rng.choice(rows, extra)] if rows.size else np.zeros(0), k))
        wanted[k] = rows.size
    if pool_extra:
        extra_t = np.concatenate([p[0] for p in pool_extra])
        extra_k = np.concatenate([np.full(p[0].size, p[1]) for p in pool_extra])
        t = np.concatenate([t, extra_t])
        regime_index = np.concatenate([regime_index, extra_k])
        seg = np.concatenate([seg, np.array([k - 1 for k in extra_k], dtype=np.int64)])
        keep = np.ones(t.size, dtype=bool)
        pool = np.concatenate([np.zeros(t.size - extra_t.size, dtype=bool), np.ones(extra_t.size, dtype=bool)])
        order = np.argsort(t, kind="stable")
        t, regime_index, seg, pool = t[order], regime_index[order], seg[order], pool[order]
    else:
        pool = np.zeros(t.size, dtype=bool)

    times = begin + pd.to_timedelta(t, unit="h")
    hours = np.asarray(times.hour)
    tx = _features(rng, t.size, people, t, hours, regimes, regime_index)
    tx.insert(1, "event_time", times)

    # History as of the week's start, then labels from the known function.
    origin = begin - pd.Timedelta(days=BURN_IN_DAYS)
    weeks = (days + BURN_IN_DAYS + 6) // 7
    # (The history counts the segment's own arrivals, not the prior-shift pool's extra candidates,
    # so resampling changes no customer's aggregates.)
    snaps = _snapshots(people, tx[~pool], origin, weeks)
    week = ((tx["event_time"] - origin) / pd.Timedelta(days=7)).astype(int)
    hist = snaps.set_index(["customer_id", "week"])
    idx = pd.MultiIndex.from_arrays([tx["customer_id"], week])
    tx["avg_amount_30d"] = hist["avg_amount_30d"].reindex(idx).to_numpy()
    tx["tx_count_7d"] = hist["tx_count_7d"].reindex(idx).to_numpy().astype(np.int64)

    z = fraud_logit(tx, intercept)
    for k, regime in enumerate(regimes):
        if regime.pattern is not None:
            rows = regime_index == k
            z[rows] = fraud_logit(tx[rows], intercept, regime)
    p = _sigmoid(z)
    fraud = rng.random(t.size) < p
    for k, regime in enumerate(regimes):
        if regime.base_rate is None:
            continue
        rows = regime_index == k
        # The candidates' own fraud rate (the base function's, near base_rate) is what the
        # class weights correct.
        pi = float(fraud[rows].mean()) if rows.any() else base_rate
        pi = min(max(pi, 1e-6), 1 - 1e-6)
        w1, w0 = regime.base_rate / pi, (1 - regime.base_rate) / (1 - pi)
        accept = np.where(fraud, w1, w0) / max(w1, w0)
        kept = np.flatnonzero(rows & (rng.random(t.size) < accept))
        # Thin the kept rows uniformly back to the segment's own arrivals (the pool was sized
        # for the nominal base rate).
        if kept.size > wanted[k]:
            kept = np.sort(rng.choice(kept, wanted[k], replace=False))
        keep[rows] = False
        keep[kept] = True
    keep &= t >= 0
    tx, fraud, p, seg, regime_index = tx[keep].reset_index(drop=True), fraud[keep], p[keep], seg[keep], regime_index[keep]

    delay, reported = label_delays(fraud, rng, median_days=REPORT_DELAY_MEDIAN_DAYS * label_delay,
                                   maturity_days=MATURITY_DAYS * label_delay)
    tx["is_fraud"] = fraud
    tx["fraud_probability"] = p.round(6)
    tx["regime"] = np.asarray([r.name for r in regimes], dtype=object)[regime_index]
    tx["segment"] = seg + 1  # 0: before or outside every scripted segment
    tx["label_time"] = tx["event_time"] + pd.to_timedelta(delay, unit="D")
    tx["label"] = reported
    tx.insert(0, "txn_id", [f"t{seed:04d}_{i:08d}" for i in range(len(tx))])
    bounds = [{"segment": k + 1, "regime": s.regime.name, "start": begin + pd.Timedelta(hours=s.start * days * 24),
               "end": begin + pd.Timedelta(hours=s.end * days * 24), "ramp": pd.Timedelta(hours=s.ramp * days * 24)}
              for k, s in enumerate(segments)]
    snapshots = snaps.loc[snaps["week"] >= BURN_IN_DAYS // 7, ["customer_id", "event_time", "avg_amount_30d", "tx_count_7d"]]
    return Traffic(tx, people, snapshots.reset_index(drop=True), bounds, intercept)


def with_regime(segment: Segment, **changes: Any) -> Segment:
    """``segment`` with its regime's fields changed (a scenario built from another)."""
    return replace(segment, regime=replace(segment.regime, **changes))

