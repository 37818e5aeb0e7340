"""The model registry (models, versions, aliases, approvals, promotion gates) and safe artifacts."""

from __future__ import annotations

from pgmlops.models import artifacts
from pgmlops.models._registry import (
    ModelRef,
    PromotionRefused,
    approve,
    check_promotion,
    list_models,
    load_model,
    model_version,
    parse_ref,
    promote,
    set_alias,
    set_policy,
    show,
)

__all__ = [
    "ModelRef",
    "PromotionRefused",
    "approve",
    "artifacts",
    "check_promotion",
    "list_models",
    "load_model",
    "model_version",
    "parse_ref",
    "promote",
    "set_alias",
    "set_policy",
    "show",
]
