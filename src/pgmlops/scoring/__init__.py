"""Scoring: fitted pipelines compiled to pure SQL functions, installed at registration, and
serving over the SQL API: predictions, deployments, feedback and batch scorings."""

from __future__ import annotations

from pgmlops.scoring._api import (
    batch_scoring,
    deploy,
    deployment,
    deployment_history,
    predict,
    predict_batch,
    record_feedback,
    record_feedback_bulk,
    rollback,
    score,
)
from pgmlops.scoring._describe import FORMAT, describe
from pgmlops.scoring._errors import NotCompilable
from pgmlops.scoring._install import compile_model_version, compile_registered, install, record_worker

__all__ = [
    "FORMAT",
    "NotCompilable",
    "batch_scoring",
    "compile_model_version",
    "compile_registered",
    "deploy",
    "deployment",
    "deployment_history",
    "describe",
    "install",
    "predict",
    "predict_batch",
    "record_feedback",
    "record_feedback_bulk",
    "record_worker",
    "rollback",
    "score",
]
