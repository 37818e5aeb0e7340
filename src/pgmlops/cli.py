"""The `pgmlops` command line: a thin layer over the library (typer + rich)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import psycopg
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from pgmlops import __version__, _embedded, migrations, queue, tenants
from pgmlops import events as events_mod
from pgmlops.db import connect, resolve_url
from pgmlops.errors import PgmlopsError

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(help="pgmlops: SQL-native MLOps on PostgreSQL and Supabase.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
db_app = typer.Typer(help="The embedded PostgreSQL (used when no DATABASE_URL is set).", no_args_is_help=True)
supabase_app = typer.Typer(help="Supabase project files.", no_args_is_help=True)
tenants_app = typer.Typer(help="Tenants and members.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(supabase_app, name="supabase")
app.add_typer(tenants_app, name="tenants")


class _State:
    url: str | None = None


state = _State()

DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", envvar="DATABASE_URL",
                 help="PostgreSQL URL; without it pgmlops uses (and starts) the embedded server."),
]


@app.callback()
def _main(database_url: DatabaseUrl = None,
          verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    state.url = database_url
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=err_console, show_path=False)])


def _url() -> str:
    return resolve_url(state.url)


# -- db ------------------------------------------------------------------------------------------


@db_app.command("start")
def db_start() -> None:
    """Start the embedded PostgreSQL (initialising it on first use) and print its URL."""
    with err_console.status("starting embedded PostgreSQL"):
        url = _embedded.start()
    console.print(url)


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL."""
    was_running = _embedded.stop()
    console.print("stopped" if was_running else "not running")


@db_app.command("status")
def db_status() -> None:
    """Show whether the embedded PostgreSQL runs, where and on which port."""
    st = _embedded.status()
    table = Table(show_header=False, box=None)
    for key, value in (("running", st.running), ("url", st.url), ("data dir", st.data_dir),
                       ("port", st.port), ("version", st.version), ("pid", st.pid)):
        table.add_row(key, str(value))
    console.print(table)
    raise typer.Exit(0 if st.running else 3)


@db_app.command("url")
def db_url() -> None:
    """Print the embedded PostgreSQL's URL (exit 3 when it is not running)."""
    url = _embedded.url()
    if url is None:
        err_console.print("embedded PostgreSQL is not running: `pgmlops db start`")
        raise typer.Exit(3)
    console.print(url)


# -- migrations ------------------------------------------------------------------------------------


@app.command()
def migrate(
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
    downgrade: Annotated[bool, typer.Option("--downgrade", help="Downgrade to --revision (default -1).")] = False,
) -> None:
    """Upgrade the database to the latest schema (or downgrade with --downgrade)."""
    url = _url()
    with err_console.status("migrating"):
        if downgrade:
            migrations.downgrade(url, "-1" if revision == "head" else revision)
        else:
            migrations.upgrade(url, revision)
    console.print(f"schema at revision [bold]{migrations.current(url) or 'base'}[/bold]")


@supabase_app.command("export")
def supabase_export(
    directory: Annotated[Path, typer.Option("--dir", help="Supabase project directory.")] = Path("supabase"),
    seeds: Annotated[Path, typer.Option(help="Directory of seed SQL files.")] = Path("seeds"),
    check: Annotated[bool, typer.Option("--check", help="Only check that the export is current (exit 1 if not).")] = False,
) -> None:
    """Write the schema as a Supabase migration (Alembic offline SQL) and seeds/ as seed.sql."""
    migrations_dir, seed_file = directory / "migrations", directory / "seed.sql"
    if check:
        current = migrations.supabase_export_is_current(migrations_dir, seed_file, seeds)
        console.print("supabase export is current" if current else "supabase export is OUT OF DATE")
        raise typer.Exit(0 if current else 1)
    path, written = migrations.export_supabase(migrations_dir)
    console.print(f"{'wrote' if written else 'unchanged'} {path}")
    console.print(f"{'wrote' if migrations.export_seed(seed_file, seeds) else 'unchanged'} {seed_file}")


# -- tenants ---------------------------------------------------------------------------------------


@tenants_app.command("create")
def tenants_create(name: str, owner: Annotated[str | None, typer.Option(help="Owner's user id.")] = None) -> None:
    """Create a tenant and print its id."""
    with connect(state.url, autocommit=True) as conn:
        console.print(str(tenants.create_tenant(conn, name, owner)))


@tenants_app.command("add-member")
def tenants_add_member(tenant: str, user_id: str, role: str) -> None:
    """Add a member to a tenant with a role (owner, admin, ml_engineer, viewer)."""
    with connect(state.url, autocommit=True) as conn:
        tenants.add_member(conn, tenant, user_id, role)
    console.print("ok")


@tenants_app.command("list")
def tenants_list() -> None:
    """List tenants with their member counts."""
    with connect(state.url, autocommit=True) as conn:
        rows = conn.execute(
            "select t.id, t.name, count(m.user_id), t.created_at from ml.tenants t "
            "left join ml.tenant_members m on m.tenant_id = t.id group by t.id order by t.created_at"
        ).fetchall()
    table = Table("id", "name", "members", "created")
    for r in rows:
        table.add_row(str(r[0]), r[1], str(r[2]), f"{r[3]:%Y-%m-%d %H:%M}")
    console.print(table)


# -- jobs --------------------------------------------------------------------------------------


@app.command()
def enqueue(
    kind: str,
    payload: Annotated[str, typer.Argument(help="JSON object.")] = "{}",
    tenant: Annotated[str, typer.Option(envvar="PGMLOPS_TENANT", help="Tenant id to act for.")] = "",
    priority: int = 0,
) -> None:
    """Queue a job and print its id."""
    try:
        body = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"payload: not valid JSON ({exc})") from exc
    with connect(state.url, autocommit=True) as conn:
        conn.execute("select set_config('pgmlops.tenant_id', %s, false)", (tenant,))
        console.print(str(queue.enqueue(conn, kind, body, priority=priority)))


@app.command()
def jobs(failures: Annotated[int, typer.Option(help="How many recent failures to list.")] = 10) -> None:
    """Job counts by kind and status, and the most recent failures."""
    with connect(state.url, autocommit=True) as conn:
        counts = queue.counts(conn)
        failed = conn.execute(
            "select id, kind, status, attempts, coalesce(finished_at, created_at), left(error, 120) from ml.jobs "
            "where status in ('failed', 'dead') or (status = 'queued' and error is not null) "
            "order by coalesce(finished_at, created_at) desc limit %s", (failures,),
        ).fetchall()
    statuses = ["queued", "running", "succeeded", "failed", "dead", "cancelled"]
    table = Table("kind", *statuses, title="jobs")
    by_kind: dict[str, dict[str, int]] = {}
    for kind, status, n in counts:
        by_kind.setdefault(kind, {})[status] = n
    for kind, row in sorted(by_kind.items()):
        table.add_row(kind, *[str(row.get(s, 0)) for s in statuses])
    console.print(table)
    if failed:
        ftable = Table("id", "kind", "status", "attempts", "when", "error", title="recent failures")
        for r in failed:
            ftable.add_row(str(r[0]), r[1], r[2], str(r[3]), f"{r[4]:%Y-%m-%d %H:%M:%S}", (r[5] or "").split("\n")[0])
        console.print(ftable)


@app.command()
def worker(
    kinds: Annotated[str | None, typer.Option(help="Comma-separated job kinds (default: all with a handler).")] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 1,
    prefetch: Annotated[int, typer.Option(min=1, max=1000, help="Jobs claimed per round trip.")] = 1,
    idle_exit: Annotated[float | None, typer.Option(help="Exit after this many idle seconds.")] = None,
    modules: Annotated[list[str] | None, typer.Option("--import", help="Module(s) registering handlers.")] = None,
    lease: Annotated[float | None, typer.Option(help="Lease in seconds (default: each kind's).")] = None,
) -> None:
    """Run worker processes that claim and run jobs until SIGTERM/SIGINT."""
    from pgmlops.worker import run_workers

    kind_list = [k.strip() for k in kinds.split(",") if k.strip()] if kinds else None
    failures = run_workers(_url(), kind_list, concurrency, prefetch=prefetch, idle_exit=idle_exit,
                           modules=modules, lease=lease)
    raise typer.Exit(1 if failures else 0)


@app.command()
def events(
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events.")] = False,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's events.")] = None,
    topic: Annotated[list[str] | None, typer.Option(help="Only these topics.")] = None,
    limit: Annotated[int, typer.Option(help="Recent events to show first.")] = 20,
    timeout: Annotated[float | None, typer.Option(help="With --follow: stop after this many quiet seconds.")] = None,
) -> None:
    """Print recent events, and with --follow every new one as it is announced."""
    url = _url()

    def show(ev: events_mod.Event) -> None:
        console.print(f"[dim]{ev.at:%H:%M:%S.%f}[/dim] [bold]{ev.event}[/bold] tenant={ev.tenant_id} "
                      f"{json.dumps(ev.data, default=str)}", highlight=False)

    with psycopg.connect(url, autocommit=True) as conn:
        for ev in events_mod.recent(conn, limit, topics=topic):
            if tenant is None or ev.tenant_id == tenant:
                show(ev)
    if follow:
        try:
            for ev in events_mod.subscribe(url, tenant_id=tenant, topics=topic, timeout=timeout):
                show(ev)
        except KeyboardInterrupt:
            pass


@app.command()
def demo(
    jobs: Annotated[int, typer.Option(min=1, max=100000, help="Echo jobs to run.")] = 200,
    workers: Annotated[int, typer.Option(min=1, max=16, help="Worker processes.")] = 2,
) -> None:
    """Run the whole loop on the embedded default (or DATABASE_URL) and print a summary."""
    from pgmlops.demo import run_demo

    run_demo(state.url, jobs=jobs, workers=workers, console=console)


@app.command()
def version() -> None:
    """Print the versions of pgmlops, its schema and the server."""
    console.print(f"pgmlops {__version__} (schema head {migrations.head()})")


def main() -> None:
    """Console-script entry point: turns pgmlops errors into a message and exit status 1."""
    try:
        app()
    except PgmlopsError as exc:
        sqlstate = getattr(exc, "sqlstate", None)
        err_console.print(f"[red]error[/red]{f' [{sqlstate}]' if sqlstate else ''}: {exc}")
        raise SystemExit(1) from None

