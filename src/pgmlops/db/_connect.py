"""Finding and connecting to the pgmlops database: an explicit URL, DATABASE_URL, or embedded."""

from __future__ import annotations

import os
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgmlops import embedded as _embedded
from pgmlops.errors import ConfigurationError

__all__ = ["connect", "resolve_url", "sqlalchemy_url"]


def resolve_url(url: str | None = None, *, start_embedded: bool = True) -> str:
    """Return the database URL pgmlops should use.

    Order: ``url`` when given, then the ``DATABASE_URL`` environment variable, then the embedded
    PostgreSQL (started on demand when ``start_embedded``; reused when already running).

    Raises:
        ConfigurationError: no URL is configured and the embedded server is not running while
            ``start_embedded`` is false.
    """
    if url:
        return url
    env = os.environ.get("DATABASE_URL")
    if env:
        return env
    if start_embedded:
        return _embedded.start()
    running = _embedded.url()
    if running is None:
        raise ConfigurationError(
            "no database: set DATABASE_URL, pass --database-url, or run `pgmlops db start`"
        )
    return running


def connect(url: str | None = None, *, autocommit: bool = False, dict_rows: bool = False,
            application_name: str = "pgmlops", **kwargs: Any) -> psycopg.Connection[Any]:
    """Open a psycopg connection to the pgmlops database (see :func:`resolve_url`).

    The caller owns the connection and must close it (it is a context manager).
    """
    conninfo = resolve_url(url)
    try:
        return psycopg.connect(
            conninfo, autocommit=autocommit, application_name=application_name,
            row_factory=dict_row if dict_rows else psycopg.rows.tuple_row, **kwargs,
        )
    except psycopg.OperationalError as exc:
        reason = " ".join(str(exc).split())  # libpq's message spans lines
        raise ConfigurationError(f"cannot connect to the pgmlops database: {reason}", "08006",
                                 hint="check --database-url / DATABASE_URL, or unset it to use the embedded server") from exc


def sqlalchemy_url(url: str) -> str:
    """The SQLAlchemy form of a libpq URL, using the psycopg 3 driver."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    raise ConfigurationError(f"not a PostgreSQL URL: {url.split('@')[-1]!r}")
