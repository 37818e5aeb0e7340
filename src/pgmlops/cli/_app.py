"""The `pgmlops` application: global options, the command groups assembled, and error reporting.

Each command group lives in its own module (``db``, ``migrate``, ``tenants``, ``features``,
``training``, ``models``, ``scoring``, ``monitoring``, ``report``, ``jobs``, ``events``, ``demo``, ``simulate``) and is
registered here, in one place.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.logging import RichHandler
from rich.markup import escape

from pgmlops import __version__, migrations
from pgmlops.cli import db, demo, events, features, jobs, migrate, models, monitoring, scoring, simulate, tenants, training
from pgmlops.cli import report as html_report  # as: _app's report() prints errors
from pgmlops.cli import retraining as retraining_cli
from pgmlops.cli._common import DatabaseUrl, console, err_console, state
from pgmlops.errors import InvalidInput, NotFound, PgmlopsError

__all__ = ["app", "main"]

app = typer.Typer(help="pgmlops: SQL-native MLOps on PostgreSQL and Supabase.", no_args_is_help=True,
                  pretty_exceptions_enable=False)


@app.callback()
def _main(database_url: DatabaseUrl = None,
          verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    state.url = database_url
    state.verbose = verbose
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
app.command()(scoring.deploy)
app.command()(scoring.deployments)
app.command()(scoring.rollback)
app.command()(scoring.predict)
app.command()(scoring.feedback)
app.command()(scoring.score)
app.add_typer(monitoring.app, name="monitor")
app.command()(monitoring.alerts)
app.add_typer(retraining_cli.app, name="retraining")
app.command()(html_report.report)
app.command()(jobs.enqueue)
app.command()(jobs.jobs)
app.command()(jobs.worker)
app.command()(events.events)
app.command()(demo.demo)
app.command()(simulate.simulate)
app.command()(version)


# Exit statuses. 2, bad input: what the user typed is wrong, and running it again unchanged
# fails again: a usage error (typer/click: a bad option, BadParameter), a value the SQL refused
# (InvalidInput: SQLSTATE class 22, 54000) or a name or id that names nothing (NotFound: P0002,
# 42703; every name a command looks up is one the user typed). 1, failure: anything else (not
# allowed 42501, a state that forbids it 55000, the database unreachable, the embedded server not
# starting, ...). 3: still running after --timeout, or the embedded server not running.
EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1


def exit_status(exc: PgmlopsError) -> int:
    """The exit status of a command that ended with ``exc`` (see above)."""
    return EXIT_BAD_INPUT if isinstance(exc, InvalidInput | NotFound) else EXIT_FAILURE


def report(exc: PgmlopsError) -> None:
    """Print ``exc`` to stderr as one line, ``error [SQLSTATE]: message``, then ``hint: ...``
    on a second line when it has a hint; with --verbose, its detail and full message too."""
    lines = exc.message.strip().splitlines() or [type(exc).__name__]
    code = f" [{exc.sqlstate}]" if exc.sqlstate else ""
    err_console.print(f"[red]error[/red]{code}: {escape(lines[0])}", soft_wrap=True, highlight=False)
    if exc.hint:
        err_console.print(f"hint: {escape(' '.join(exc.hint.split()))}", soft_wrap=True, highlight=False)
    if state.verbose:
        for line in [*lines[1:], *(exc.detail or "").splitlines()]:
            err_console.print(escape(line), soft_wrap=True, highlight=False)


def main() -> None:
    """Console-script entry point: a pgmlops error ends the command with :func:`report` and
    :func:`exit_status` (2 for bad input, 1 for failures) instead of a traceback."""
    try:
        app()
    except PgmlopsError as exc:
        report(exc)
        raise SystemExit(exit_status(exc)) from None
