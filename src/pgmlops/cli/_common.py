"""What every command module shares: the consoles, the global options and argument helpers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import psycopg
import typer
from rich.console import Console

from pgmlops.db import connect, resolve_url

__all__ = ["DatabaseUrl", "Tenant", "console", "database_url", "err_console", "json_arg", "state", "tenant_conn"]

console = Console()
err_console = Console(stderr=True)


class _State:
    url: str | None = None


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


def tenant_conn(tenant: str) -> psycopg.Connection[Any]:
    conn = connect(state.url, autocommit=True)
    conn.execute("select set_config('pgmlops.tenant_id', %s, false)", (tenant,))
    return conn


def json_arg(value: str, field: str) -> Any:
    """``value`` as JSON, or the JSON in the file it names (``@file.json`` or an existing path)."""
    text = value
    if value.startswith("@") or Path(value).is_file():
        text = Path(value.removeprefix("@")).read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"{field}: not valid JSON ({exc})") from exc
