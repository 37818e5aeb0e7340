"""`pgmlops demo`: the whole loop on a fresh machine, in minutes."""

from __future__ import annotations

from pgmlops.demo._demo import (
    DemoSummary,
    run_demo,
)

__all__ = [
    "DemoSummary",
    "run_demo",
]
