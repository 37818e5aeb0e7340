"""Lineage: which artifacts (feature groups, datasets, model versions) were made from which."""

from __future__ import annotations

from pgmlops.lineage._lineage import (
    lineage_of,
)

__all__ = [
    "lineage_of",
]
