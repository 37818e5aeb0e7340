"""`pgmlops demo`: the whole loop on a fresh machine, in minutes; its scenario and variants."""

from __future__ import annotations

from pgmlops.demo._demo import (
    DemoSummary,
    demo_scenario,
    run_demo,
)
from pgmlops.demo._scenario import (
    Phase,
    PhaseResult,
    Scenario,
    ScenarioResult,
    run_scenario,
)

__all__ = [
    "DemoSummary",
    "Phase",
    "PhaseResult",
    "Scenario",
    "ScenarioResult",
    "demo_scenario",
    "run_demo",
    "run_scenario",
]
