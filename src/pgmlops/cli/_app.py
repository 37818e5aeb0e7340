"""The `pgmlops` application: global options, the command groups assembled, and error reporting.

Each command group lives in its own module (``db``, ``migrate``, ``tenants``, ``features``,
``training``, ``models``, ``jobs``, ``events``, ``demo``) and is registered here, in one place.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.logging import RichHandler

from pgmlops import __version__, migrations
from pgmlops.cli import db, demo, events, features, jobs, migrate, models, tenants, training
from pgmlops.cli._common import DatabaseUrl, console, err_console, state
from pgmlops.errors import PgmlopsError

__all__ = ["app", "main"]

app = typer.Typer(help="pgmlops: SQL-native MLOps on PostgreSQL and Supabase.", no_args_is_help=True,
                  pretty_exceptions_enable=False)


@app.callback()
def _main(database_url: DatabaseUrl = None,
          verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    state.url = database_url
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=err_console, show_path=False)])


def version() -> None:
    """Print the versions of pgmlops, its schema and the server."""
    console.print(f"pgmlops {__version__} (schema head {migrations.head()})")


app.add_typer(db.app, name="db")
app.command()(migrate.migrate)
app.add_typer(migrate.supabase_app, name="supabase")
app.add_typer(tenants.app, name="tenants")
app.add_typer(features.app, name="features")
app.command()(training.train)
app.command()(training.tune)
app.add_typer(models.app, name="models")
app.command()(jobs.enqueue)
app.command()(jobs.jobs)
app.command()(jobs.worker)
app.command()(events.events)
app.command()(demo.demo)
app.command()(version)


def main() -> None:
    """Console-script entry point: turns pgmlops errors into a message and exit status 1."""
    try:
        app()
    except PgmlopsError as exc:
        sqlstate = getattr(exc, "sqlstate", None)
        err_console.print(f"[red]error[/red]{f' [{sqlstate}]' if sqlstate else ''}: {exc}")
        raise SystemExit(1) from None
