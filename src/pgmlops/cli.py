"""The `pgmlops` command line: a thin layer over the library (typer + rich)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import psycopg
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from pgmlops import __version__, _embedded, features, migrations, queue, tenants
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
features_app = typer.Typer(help="The feature store: groups, ingestion, lookups.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(supabase_app, name="supabase")
app.add_typer(tenants_app, name="tenants")
app.add_typer(features_app, name="features")


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


# -- features ------------------------------------------------------------------------------------

Tenant = Annotated[str, typer.Option(envvar="PGMLOPS_TENANT", help="Tenant id to act for.")]


def _tenant_conn(tenant: str) -> psycopg.Connection[Any]:
    conn = connect(state.url, autocommit=True)
    conn.execute("select set_config('pgmlops.tenant_id', %s, false)", (tenant,))
    return conn


def _json_arg(value: str, field: str) -> Any:
    """``value`` as JSON, or the JSON in the file it names (``@file.json`` or an existing path)."""
    text = value
    if value.startswith("@") or Path(value).is_file():
        text = Path(value.removeprefix("@")).read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"{field}: not valid JSON ({exc})") from exc


@features_app.command("create")
def features_create(
    name: str,
    entity: Annotated[str, typer.Option(help="What the rows describe; also the join key unless --join-key.")],
    schema: Annotated[str, typer.Option(help="Feature schema as JSON, or @file.json.")],
    tenant: Tenant = "",
    ttl: Annotated[str | None, typer.Option(help="Max age of a value when read, e.g. '30 days'.")] = None,
    description: Annotated[str | None, typer.Option(help="What the group holds.")] = None,
    join_key: Annotated[str | None, typer.Option(help="Key column (default: the entity).")] = None,
    event_time_column: Annotated[str, typer.Option(help="Event time column.")] = "event_time",
) -> None:
    """Create a feature group (or its next version) and print its id and version."""
    with _tenant_conn(tenant) as conn:
        group_id = features.create_group(conn, name, entity, _json_arg(schema, "schema"), ttl=ttl, description=description,
                                         join_key=join_key, event_time_column=event_time_column)
        info = features.describe(conn, f"{name}")
    console.print(f"{group_id} ({name}@{info['version']})")


@features_app.command("ingest")
def features_ingest(
    group: Annotated[str, typer.Argument(help="Group name, or name@version.")],
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A .csv (with header) or .parquet file.")],
    tenant: Tenant = "",
    on_error: Annotated[str, typer.Option(help="reject: one bad row fails all; quarantine: keep bad rows aside.")] = "reject",
) -> None:
    """Validate and load a CSV or Parquet file into a feature group, with a progress bar."""
    from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    is_csv = file.suffix.lower() == ".csv"
    if is_csv:
        total: int | None = file.stat().st_size
        columns = [TextColumn("[bold]sending"), BarColumn(), DownloadColumn(), TimeElapsedColumn()]
    else:
        import pyarrow.parquet as pq

        total = pq.ParquetFile(file).metadata.num_rows
        columns = [TextColumn("[bold]sending rows"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with _tenant_conn(tenant) as conn, Progress(*columns, console=err_console) as progress:
        task = progress.add_task("ingest", total=total)
        result = features.ingest(conn, group, file, on_error=on_error, source_name=file.name,
                                 progress=lambda done: progress.update(task, completed=done))
        progress.update(task, description="validated")
    table = Table(title=f"ingested {file.name} into {result.group}@{result.version}", show_header=False)
    for field in ("rows", "written", "inserted", "updated", "quarantined", "superseded", "online_updated"):
        table.add_row(field.replace("_", " "), f"{getattr(result, field):,}")
    table.add_row("ingestion id", result.ingestion_id)
    console.print(table)


@features_app.command("list")
def features_list(tenant: Tenant = "") -> None:
    """Feature groups and their versions."""
    with _tenant_conn(tenant) as conn:
        groups = features.list_groups(conn)
    table = Table("name", "version", "status", "entity", "join key", "ttl", "features", "entities", "created")
    for g in groups:
        table.add_row(g["name"], str(g["version"]), g["status"], g["entity"], g["join_key"], str(g["ttl"] or ""),
                      str(g["features"]), f"{g['entities']:,}", f"{g['created_at']:%Y-%m-%d %H:%M}")
    console.print(table)


@features_app.command("show")
def features_show(group: Annotated[str, typer.Argument(help="Group name, or name@version.")], tenant: Tenant = "") -> None:
    """A feature group's schema, versions and size."""
    with _tenant_conn(tenant) as conn:
        info = features.describe(conn, group)
    console.print(f"[bold]{info['name']}@{info['version']}[/bold] ({info['status']}) entity {info['entity']} "
                  f"key {info['join_key']} time {info['event_time_column']} ttl {info['ttl'] or 'none'}")
    if info.get("description"):
        console.print(info["description"])
    table = Table("feature", "dtype", "nullable", "rules", "description")
    for f in info["features"]:
        rules = ", ".join(f"{k}={json.dumps(f[k])}" for k in ("min", "max", "allowed", "regex", "max_length") if k in f)
        dtype = f"vector({f['dim']})" if f["dtype"] == "vector" else f["dtype"]
        table.add_row(f["name"], dtype, "yes" if f["nullable"] else "no", rules, f.get("description") or "")
    console.print(table)
    console.print("versions: " + ", ".join(f"{v['version']} ({v['status']})" for v in info["versions"])
                  + f"; entities in the online store: {info['entities']:,}")


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

