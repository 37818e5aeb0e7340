"""Finding and connecting to the pgmlops database, and acting as a tenant."""

from __future__ import annotations

from pgmlops.db._connect import (
    connect,
    resolve_url,
    sqlalchemy_url,
    tenant_context,
)

__all__ = [
    "connect",
    "resolve_url",
    "sqlalchemy_url",
    "tenant_context",
]
