"""The per-user embedded PostgreSQL 18 + pgvector server used when no DATABASE_URL is set."""

from __future__ import annotations

from pgmlops.embedded._server import (
    DATABASE,
    DEFAULT_PORT,
    HOST,
    SUPERUSER,
    EmbeddedPostgresError,
    EmbeddedStatus,
    start,
    status,
    stop,
    url,
)

__all__ = [
    "DATABASE",
    "DEFAULT_PORT",
    "EmbeddedPostgresError",
    "EmbeddedStatus",
    "HOST",
    "SUPERUSER",
    "start",
    "status",
    "stop",
    "url",
]
