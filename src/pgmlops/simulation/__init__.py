"""Simulated fraud-detection traffic with known labels and scripted drift (``pgmlops simulate``)."""

from __future__ import annotations

from pgmlops.simulation._driver import (
    SimulationResult,
    group_names,
    label_spine,
    label_spine_sql,
    simulate,
    training_features,
)
from pgmlops.simulation._fraud import (
    BASE_RATE,
    CATEGORIES,
    COEFFICIENTS,
    DEVICES,
    SCENARIOS,
    Regime,
    Segment,
    Traffic,
    fraud_logit,
    generate,
    generate_customers,
    label_delays,
    scenario,
)
from pgmlops.simulation._synthetic import (
    SYNTHETIC_COLUMNS,
    Synthetic,
    compare_distributions,
    synthesize,
)

__all__ = [
    "BASE_RATE",
    "CATEGORIES",
    "COEFFICIENTS",
    "DEVICES",
    "SCENARIOS",
    "SYNTHETIC_COLUMNS",
    "Regime",
    "Segment",
    "SimulationResult",
    "Synthetic",
    "Traffic",
    "compare_distributions",
    "fraud_logit",
    "generate",
    "generate_customers",
    "group_names",
    "label_delays",
    "label_spine",
    "label_spine_sql",
    "scenario",
    "simulate",
    "synthesize",
    "training_features",
]
