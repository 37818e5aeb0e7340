"""Training: projects, train jobs, and the fit-and-evaluate step over 18 algorithms."""

from __future__ import annotations

from pgmlops.training._handler import (
    Project,
    load_project,
    load_training_frame,
    record_fit,
    run_training,
)
from pgmlops.training._training import (
    ALGORITHMS,
    FitResult,
    Report,
    TrainingError,
    anomaly_scores,
    create_project,
    fit,
    library_versions,
    load_dataset,
    split,
    train,
)

__all__ = [
    "ALGORITHMS",
    "FitResult",
    "Project",
    "Report",
    "TrainingError",
    "anomaly_scores",
    "create_project",
    "fit",
    "library_versions",
    "load_project",
    "load_training_frame",
    "record_fit",
    "run_training",
    "load_dataset",
    "split",
    "train",
]
