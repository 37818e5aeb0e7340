"""Scoring: fitted pipelines compiled to pure SQL functions, installed at registration."""

from __future__ import annotations

from pgmlops.scoring._describe import FORMAT, describe
from pgmlops.scoring._errors import NotCompilable
from pgmlops.scoring._install import compile_model_version, compile_registered, install, record_worker

__all__ = [
    "FORMAT",
    "NotCompilable",
    "compile_model_version",
    "compile_registered",
    "describe",
    "install",
    "record_worker",
]
