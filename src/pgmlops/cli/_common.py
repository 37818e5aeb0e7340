"""What every command module shares: the consoles, the global options and argument helpers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import psycopg
import typer
from rich.console import Console

from pgmlops.db import connect, resolve_url, tenant_context

__all__ = ["DatabaseUrl", "Tenant", "connection", "console", "database_url", "err_console", "json_arg", "state", "tenant_conn",
           "tenant_id"]

console = Console()
err_console = Console(stderr=True)


class _State:
    url: str | None = None
    verbose: bool = False


state = _State()

DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", envvar="DATABASE_URL",
                 help="PostgreSQL URL; without it pgmlops uses (and starts) the embedded server."),
]
Tenant = Annotated[str, typer.Option(envvar="PGMLOPS_TENANT", help="Tenant id to act for.")]


def database_url() -> str:
    """The database URL of this invocation (``--database-url``, DATABASE_URL or the embedded server)."""
    return resolve_url(state.url)


def connection() -> psycopg.Connection[Any]:
    """A new autocommit connection to the database of this invocation (close it: a context manager)."""
    return connect(state.url, autocommit=True)


def tenant_id(tenant: str) -> str:
    """``--tenant`` (or PGMLOPS_TENANT), which a command acting for a tenant cannot do without."""
    if not tenant.strip():
        raise typer.BadParameter("required: the id of the tenant to act for (or set PGMLOPS_TENANT)",
                                 param_hint="'--tenant'")
    return tenant.strip()


@contextmanager
def tenant_conn(tenant: str) -> Iterator[psycopg.Connection[Any]]:
    """A new connection in one transaction acting for ``tenant`` as the service role
    (:func:`pgmlops.db.tenant_context`): committed when the block ends, closed after. Commands
    that wait (``--wait``, ``--watch``) open a :func:`connection` and one tenant context per
    step instead, so what they queued is committed before they wait for it."""
    acting_for = tenant_id(tenant)
    with connection() as conn, tenant_context(conn, acting_for):
        yield conn


def json_arg(value: str, field: str) -> Any:
    """``value`` as JSON, or the JSON in the file it names (``@file.json`` or an existing path)."""
    text = value
    if value.startswith("@") or Path(value).is_file():
        text = Path(value.removeprefix("@")).read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"{field}: not valid JSON ({exc})") from exc
