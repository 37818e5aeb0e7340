"""Retraining: proving a challenger better than the champion (paired bootstrap, McNemar, DeLong)
and the decision rule (docs/retraining.md)."""

from __future__ import annotations

from pgmlops.retraining._evaluation import (
    BOOTSTRAP_METRICS,
    MCNEMAR_EXACT_BELOW,
    ComparisonResult,
    Decision,
    decide,
    delong,
    mcnemar,
    paired_bootstrap,
)
from pgmlops.retraining._policies import (
    remove_retraining_policy,
    retraining_history,
    retraining_policy,
    set_retraining_policy,
)
from pgmlops.retraining._retrain import HOLDOUT_SHARE, start_retraining

__all__ = [
    "BOOTSTRAP_METRICS",
    "HOLDOUT_SHARE",
    "MCNEMAR_EXACT_BELOW",
    "ComparisonResult",
    "Decision",
    "decide",
    "delong",
    "mcnemar",
    "paired_bootstrap",
    "remove_retraining_policy",
    "retraining_history",
    "retraining_policy",
    "set_retraining_policy",
    "start_retraining",
]
