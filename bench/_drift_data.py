"""The data of ``bench.drift``: 20 features (12 numeric of various shapes, 8 categorical of 3 to
50 categories), a reference and a current sample drawn from the same generator, with drift
injected in the current one in some features (shifts, scale changes, mixture and category mix
changes) and not in others (none, or too small to cross Evidently's 0.1 thresholds).

``DRIFT`` says what each feature gets; ``EXPECTED_DRIFTED`` the features meant to drift (11 of
20: a dataset drift at Evidently's 0.5 share). Values are rounded to 6 decimals, as they are
logged, so pandas and PostgreSQL see the same numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

NUMERIC = [f"num_{j:02d}" for j in range(12)]
CATEGORICAL = [f"cat_{j:02d}" for j in range(8)]
FEATURES = NUMERIC + CATEGORICAL
CARDINALITY = dict(zip(CATEGORICAL, [3, 5, 8, 12, 20, 30, 40, 50], strict=True))

# feature -> (shape, drift injected in the current sample)
DRIFT: dict[str, tuple[str, str]] = {
    "num_00": ("normal(0, 1)", "shift +0.5 sd"),
    "num_01": ("lognormal(0, 0.75)", "scale x1.5"),
    "num_02": ("exponential(2)", "none"),
    "num_03": ("uniform(0, 100)", "shift +1 (small)"),
    "num_04": ("mixture of normals at -2 and +2, weights 0.3 / 0.7", "weights 0.5 / 0.5"),
    "num_05": ("poisson(8) (int)", "none"),
    "num_06": ("student t, 3 df", "none"),
    "num_07": ("beta(2, 5)", "shift +0.03"),
    "num_08": ("gamma(2, 2), 5% missing", "scale x1.4, 10% missing"),
    "num_09": ("int 0..9, skewed (10 values: one bin per value)", "mix reversed"),
    "num_10": ("normal(100, 15)", "scale x1.3"),
    "num_11": ("normal(0, 1)", "shift +0.05 sd (small)"),
    "cat_00": ("3 categories", "mix 0.6/0.3/0.1 -> 0.35/0.3/0.35"),
    "cat_01": ("5 categories", "none"),
    "cat_02": ("8 categories", "none"),
    "cat_03": ("12 categories", "mix reversed"),
    "cat_04": ("20 categories", "10% of rows re-drawn uniformly (small)"),
    "cat_05": ("30 categories", "half the categories' weights swapped"),
    "cat_06": ("40 categories", "40% of rows from the 5 rarest categories"),
    "cat_07": ("50 categories", "none"),
}
EXPECTED_DRIFTED = ["num_00", "num_01", "num_04", "num_07", "num_08", "num_09", "num_10",
                    "cat_00", "cat_03", "cat_05", "cat_06"]


def _zipf(k: int, s: float = 1.1) -> np.ndarray[Any, Any]:
    w = 1.0 / np.arange(1, k + 1) ** s
    return np.asarray(w / w.sum())


def _categories(rng: np.random.Generator, name: str, n: int, drifted: bool) -> np.ndarray[Any, Any]:
    k = CARDINALITY[name]
    labels = np.array([f"{name[-2:]}_{i:02d}" for i in range(k)])
    p = _zipf(k)
    if name == "cat_00":
        p = np.array([0.6, 0.3, 0.1])
    if drifted:
        if name == "cat_00":
            p = np.array([0.35, 0.3, 0.35])
        elif name == "cat_03":
            p = p[::-1].copy()
        elif name == "cat_04":
            p = 0.9 * p + 0.1 / k
        elif name == "cat_05":
            half = k // 2
            p = np.concatenate([p[half:2 * half][::-1], p[:half][::-1], p[2 * half:]])
            p = p / p.sum()
        elif name == "cat_06":
            p = 0.6 * p
            p[-5:] += 0.4 / 5
    return labels[rng.choice(k, n, p=p)]


def make_frame(n: int, seed: int, *, drifted: bool) -> pd.DataFrame:
    """``n`` rows of the 20 features; ``drifted``: with the drift of ``DRIFT`` injected."""
    rng = np.random.default_rng(seed)
    d = drifted
    cols: dict[str, Any] = {}
    cols["num_00"] = rng.normal(0.5 if d else 0.0, 1.0, n)
    cols["num_01"] = rng.lognormal(0.0, 0.75, n) * (1.5 if d else 1.0)
    cols["num_02"] = rng.exponential(2.0, n)
    cols["num_03"] = rng.uniform(0, 100, n) + (1.0 if d else 0.0)
    mode = rng.random(n) < (0.5 if d else 0.3)
    cols["num_04"] = np.where(mode, rng.normal(-2, 0.7, n), rng.normal(2, 0.7, n))
    cols["num_05"] = rng.poisson(8, n).astype(float)
    cols["num_06"] = rng.standard_t(3, n)
    cols["num_07"] = rng.beta(2, 5, n) + (0.03 if d else 0.0)
    gamma = rng.gamma(2.0, 2.0, n) * (1.4 if d else 1.0)
    gamma[rng.random(n) < (0.10 if d else 0.05)] = np.nan
    cols["num_08"] = gamma
    p9 = _zipf(10, 0.8)
    cols["num_09"] = rng.choice(10, n, p=p9[::-1] if d else p9).astype(float)
    cols["num_10"] = rng.normal(100, 15 * (1.3 if d else 1.0), n)
    cols["num_11"] = rng.normal(0.05 if d else 0.0, 1.0, n)
    frame = pd.DataFrame({k: np.round(v, 6) for k, v in cols.items()})
    for name in CATEGORICAL:
        frame[name] = _categories(rng, name, n, d)
    return frame
