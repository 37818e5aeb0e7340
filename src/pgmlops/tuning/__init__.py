"""Hyperparameter tuning: Optuna studies whose trials are jobs run by every worker, or run by one
job in its own process (:class:`LocalStudy`)."""

from __future__ import annotations

from pgmlops.tuning._local import LocalStudy
from pgmlops.tuning._studies import (
    OPTUNA_SCHEMA,
    optuna_storage,
    study_id_of,
    study_name,
    study_progress,
    trials,
    tune,
)

__all__ = [
    "OPTUNA_SCHEMA",
    "LocalStudy",
    "optuna_storage",
    "study_id_of",
    "study_name",
    "study_progress",
    "trials",
    "tune",
]
