"""Synthetic edge cases from CTGAN (PyPI ``ctgan``) trained on a reference window, and a report
comparing their distributions with the reference's.

CTGAN (Xu et al., 2019) learns a tabular generator with mode-specific normalisation of numeric
columns and a conditional vector for categorical ones, so it can be asked for rows of a rare
value: here, frauds (``is_fraud = True``), the edge cases a fraud model sees least. ``ctgan`` is
imported only when called (an optional dependency: ``pip install ctgan``; it runs on the CPU
torch pgmlops already uses).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from pgmlops.errors import InvalidInput

__all__ = ["SYNTHETIC_COLUMNS", "Synthetic", "compare_distributions", "synthesize"]

SYNTHETIC_COLUMNS: tuple[str, ...] = ("amount", "merchant_category", "hour", "device", "distance_from_home",
                                      "avg_amount_30d", "tx_count_7d", "is_fraud")
_DISCRETE = ("merchant_category", "device", "is_fraud")


@dataclass(frozen=True)
class Synthetic:
    """What :func:`synthesize` made: the ``rows`` sampled (``condition`` says which value they
    were conditioned on, if any), the ``report`` comparing them with the reference per column,
    and the ``reference`` rows the model was trained on."""

    rows: pd.DataFrame
    report: pd.DataFrame
    reference: pd.DataFrame
    condition: tuple[str, Any] | None


def compare_distributions(reference: pd.DataFrame, synthetic: pd.DataFrame,
                          columns: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per column: for a numeric column the two-sample KS statistic and p-value, the
    means and the medians; for a categorical (or boolean) one the total variation distance of
    the frequencies and the chi-square test's p-value (categories absent from one side count as
    0). Columns: column, kind, statistic (KS or TVD), p_value, reference, synthetic (mean, or
    the most frequent value with its share)."""
    rows = []
    for column in columns or [c for c in reference.columns if c in synthetic.columns]:
        ref, syn = reference[column], synthetic[column]
        if column in _DISCRETE or not pd.api.types.is_numeric_dtype(ref) or pd.api.types.is_bool_dtype(ref):
            p = ref.astype(str).value_counts(normalize=True)
            q = syn.astype(str).value_counts(normalize=True)
            keys = sorted(set(p.index) | set(q.index))
            p, q = p.reindex(keys, fill_value=0.0), q.reindex(keys, fill_value=0.0)
            counts = np.vstack([p.to_numpy() * len(ref), q.to_numpy() * len(syn)]) + 0.5
            p_value = float(stats.chi2_contingency(counts)[1]) if len(keys) > 1 else 1.0
            rows.append({"column": column, "kind": "categorical", "statistic": float(0.5 * np.abs(p - q).sum()),
                         "p_value": p_value, "reference": f"{p.idxmax()} {p.max():.0%}",
                         "synthetic": f"{q.idxmax()} {q.max():.0%}"})
        else:
            ks = stats.ks_2samp(ref.astype(float), syn.astype(float))
            rows.append({"column": column, "kind": "numeric", "statistic": float(ks.statistic),
                         "p_value": float(ks.pvalue), "reference": f"{ref.mean():.4g} (median {ref.median():.4g})",
                         "synthetic": f"{syn.mean():.4g} (median {syn.median():.4g})"})
    return pd.DataFrame(rows)


def synthesize(reference: pd.DataFrame, n: int, *, condition: tuple[str, Any] | None = ("is_fraud", True),
               epochs: int = 30, seed: int = 0, columns: Sequence[str] = SYNTHETIC_COLUMNS, others: int = 4,
               max_rounds: int = 20) -> Synthetic:
    """Train CTGAN on ``reference`` (a window of simulated transactions, ``columns`` of it) and
    sample ``n`` rows, conditioned on ``condition`` (a discrete column and its value; default:
    frauds; None: unconditioned). Conditioned, it trains on the reference's rows of that value
    and ``others`` times as many others (drawn with the seed), and samples in rounds (at most
    ``max_rounds``) keeping the rows that have the value; report how their distributions compare with the reference's
    rows of the same condition (:func:`compare_distributions`). Seeded: torch's and numpy's
    states are set from ``seed`` (the same seed, the same rows on the same machine).

    Raises:
        InvalidInput: ``n`` or ``epochs`` below 1, a missing column, a condition on a column
            that is not discrete or on a value the reference lacks, or too few conditioned rows
            made (22023).
    """
    if n < 1 or epochs < 1:
        raise InvalidInput(f"n and epochs: must be at least 1, got n={n}, epochs={epochs}", "22023")
    missing = [c for c in columns if c not in reference.columns]
    if missing:
        raise InvalidInput(f"reference: missing columns {', '.join(missing)}", "22023")
    frame = reference[list(columns)].reset_index(drop=True).copy()
    frame["is_fraud"] = frame["is_fraud"].astype(bool) if "is_fraud" in frame else None
    discrete = [c for c in _DISCRETE if c in frame.columns]
    if condition is not None:
        column, value = condition
        if column not in discrete:
            raise InvalidInput(f"condition: {column} is not a discrete column ({', '.join(discrete)})", "22023")
        if not (frame[column] == value).any():
            raise InvalidInput(f"condition: the reference has no row with {column} = {value!r}", "22023")
    if condition is not None:
        # The rare value's rows and at most ``others`` times as many of the rest: CTGAN's cost
        # grows with the rows it trains on (its transformer fits a Gaussian mixture per numeric
        # column: 105 s for 10,000 rows and 20 epochs), and the edge cases are what it must learn.
        hit = frame[condition[0]] == condition[1]
        rest = frame[~hit]
        keep = min(len(rest), others * int(hit.sum()))
        frame = pd.concat([frame[hit], rest.sample(keep, random_state=seed)]).reset_index(drop=True)
    import torch
    from ctgan import CTGAN  # type: ignore[import-untyped,import-not-found,unused-ignore]

    torch.manual_seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (ctgan's transformer draws from the global state)
    model = CTGAN(epochs=epochs, batch_size=500, enable_gpu=False, verbose=False)
    model.set_random_state(seed)
    model.fit(frame, discrete_columns=discrete)
    if condition is None:
        rows = model.sample(n)
        same = frame
    else:
        # CTGAN's conditional vector makes the value likelier, not certain: sample in rounds and
        # keep the rows that have it.
        parts, found = [], 0
        for _ in range(max_rounds):
            batch = model.sample(4 * n, condition_column=condition[0], condition_value=condition[1])
            batch = batch[batch[condition[0]] == condition[1]]
            parts.append(batch)
            found += len(batch)
            if found >= n:
                break
        if found < n:
            raise InvalidInput(f"condition: the model made {found} rows with {condition[0]} = {condition[1]!r} in "
                               f"{max_rounds} rounds of {4 * n}, fewer than n={n} (train more epochs)", "22023")
        rows = pd.concat(parts).head(n)
        same = frame[frame[condition[0]] == condition[1]]
    for column in ("hour", "tx_count_7d"):
        if column in rows:
            rows[column] = rows[column].round().astype(np.int64)
    return Synthetic(rows.reset_index(drop=True), compare_distributions(same, rows), frame, condition)
