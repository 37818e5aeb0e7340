"""Finding and connecting to the pgmlops database, acting as a tenant, and calling the SQL API."""

from __future__ import annotations

from pgmlops.db._connect import (
    connect,
    resolve_url,
    sqlalchemy_url,
)
from pgmlops.db._sql import (
    call,
    sql_errors,
)
from pgmlops.db._tenant import (
    claims_for,
    tenant_context,
)

__all__ = [
    "call",
    "claims_for",
    "connect",
    "resolve_url",
    "sql_errors",
    "sqlalchemy_url",
    "tenant_context",
]
