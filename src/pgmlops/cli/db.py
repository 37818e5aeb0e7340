"""`pgmlops db`: the embedded PostgreSQL."""

from __future__ import annotations

import typer
from rich.table import Table

from pgmlops import embedded
from pgmlops.cli._common import console, err_console

app = typer.Typer(help="The embedded PostgreSQL (used when no DATABASE_URL is set).", no_args_is_help=True)


@app.command("start")
def db_start() -> None:
    """Start the embedded PostgreSQL (initialising it on first use) and print its URL."""
    with err_console.status("starting embedded PostgreSQL"):
        url = embedded.start()
    console.print(url)


@app.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL."""
    was_running = embedded.stop()
    console.print("stopped" if was_running else "not running")


@app.command("status")
def db_status() -> None:
    """Show whether the embedded PostgreSQL runs, where and on which port."""
    st = embedded.status()
    table = Table(show_header=False, box=None)
    for key, value in (("running", st.running), ("url", st.url), ("data dir", st.data_dir),
                       ("port", st.port), ("version", st.version), ("pid", st.pid)):
        table.add_row(key, str(value))
    console.print(table)
    raise typer.Exit(0 if st.running else 3)


@app.command("url")
def dburl() -> None:
    """Print the embedded PostgreSQL's URL (exit 3 when it is not running)."""
    url = embedded.url()
    if url is None:
        err_console.print("embedded PostgreSQL is not running: `pgmlops db start`")
        raise typer.Exit(3)
    console.print(url)
