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


# -- training, tuning, models ----------------------------------------------------------------------

models_app = typer.Typer(help="The model registry: models, versions, promotion.", no_args_is_help=True)
app.add_typer(models_app, name="models")

_FINISHED = ("succeeded", "failed", "dead", "cancelled")


def _dataset_id(conn: psycopg.Connection[Any], dataset: str) -> Any:
    """A dataset id, or the id of dataset ``name`` / ``name@version``."""
    from pgmlops import datasets

    return dataset if _is_uuid(dataset) else datasets.dataset_info(conn, dataset).id


def _is_uuid(value: str) -> bool:
    import uuid

    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _metrics_table(metrics: dict[str, Any], title: str | None = None) -> Table:
    table = Table("metric", "value", title=title)
    for name, value in sorted(metrics.items()):
        table.add_row(name, f"{value:.6g}" if isinstance(value, int | float) else str(value))
    return table


def _job_failed(result: dict[str, Any]) -> None:
    err_console.print(f"[red]job {result['id']} {result['status']}[/red]: {(result.get('error') or '').split(chr(10))[0]}")
    raise typer.Exit(1)


@app.command()
def train(
    project: str,
    dataset: Annotated[str, typer.Argument(help="Dataset id, name or name@version.")],
    algorithm: str,
    hyperparams: Annotated[str, typer.Option(help="Hyperparameters as JSON, or @file.json.")] = "{}",
    options: Annotated[str, typer.Option(help="Options as JSON (split, test_size, cv_folds, random_state, model, tags).")] = "{}",
    tenant: Tenant = "",
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the job and print the run and the registered version.")] = False,
    timeout: Annotated[float | None, typer.Option(help="With --wait: give up after this many seconds.")] = None,
) -> None:
    """Queue a train job (ml.train) and print its id; with --wait, its outcome."""
    import time

    from pgmlops import training

    with _tenant_conn(tenant) as conn:
        job_id = training.train(conn, project, _dataset_id(conn, dataset), algorithm, _json_arg(hyperparams, "hyperparams"),
                                _json_arg(options, "options"))
        console.print(f"train job {job_id}")
        if not wait:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        with err_console.status(f"training {algorithm} (job {job_id}): start a worker if none runs"):
            while (result := queue.result(conn, job_id))["status"] not in _FINISHED:
                if deadline is not None and time.monotonic() > deadline:
                    err_console.print(f"still {result['status']} after {timeout}s")
                    raise typer.Exit(3)
                time.sleep(0.5)
    if result["status"] != "succeeded":
        _job_failed(result)
    out = result["result"] or {}
    console.print(f"run {out.get('run_id')}" + (f"  registered [bold]{out['model']}@{out['version']}[/bold]"
                                                  if out.get("model") else ""))
    console.print(_metrics_table(out.get("metrics") or {}))


@app.command()
def tune(
    project: str,
    dataset: Annotated[str, typer.Argument(help="Dataset id, name or name@version.")],
    algorithm: str,
    search_space: Annotated[str, typer.Option(help='Search space as JSON, or @file.json: {"C": {"type": "float", '
                                                   '"low": 0.01, "high": 10, "log": true}}.')],
    n_trials: Annotated[int, typer.Option(min=1, max=1000, help="Trials to finish.")] = 20,
    options: Annotated[str, typer.Option(help="Options as JSON: ml.train's plus metric, direction, sampler, pruner.")] = "{}",
    tenant: Tenant = "",
    watch: Annotated[bool, typer.Option("--watch", help="Show live progress until the best model is registered.")] = False,
    timeout: Annotated[float | None, typer.Option(help="With --watch: give up after this many seconds.")] = None,
) -> None:
    """Start a tuning study (ml.tune) run by the workers; print its tune job and study ids. With
    --watch, show trials done and the best value so far, then the leaderboard."""
    import time

    from rich.live import Live

    from pgmlops import tuning

    with _tenant_conn(tenant) as conn:
        job_id = tuning.tune(conn, project, _dataset_id(conn, dataset), algorithm, _json_arg(search_space, "search_space"),
                             n_trials, _json_arg(options, "options"))
        study_id = tuning.study_id_of(conn, job_id)
        console.print(f"tune job {job_id}, study {study_id}")
        if not watch:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        with Live(_progress_view(tuning.study_progress(conn, study_id)), console=err_console, refresh_per_second=4) as live:
            while (result := queue.result(conn, job_id))["status"] not in _FINISHED:
                live.update(_progress_view(tuning.study_progress(conn, study_id)))
                if deadline is not None and time.monotonic() > deadline:
                    err_console.print(f"study still {result['status']} after {timeout}s")
                    raise typer.Exit(3)
                time.sleep(0.5)
            progress = tuning.study_progress(conn, study_id)
            live.update(_progress_view(progress))
        trials = tuning.trials(conn, study_id)
    console.print(_leaderboard(trials, progress))
    if result["status"] != "succeeded":
        _job_failed(result)
    out = result["result"] or {}
    console.print(f"best trial {out['best_trial']} ({progress['metric']} {out['best_value']:.6g}) refit and registered as "
                  f"[bold]{out['model']}@{out['version']}[/bold]")
    console.print(_metrics_table(out.get("metrics") or {}, title="held-out metrics of the refit"))


def _progress_view(progress: dict[str, Any]) -> Any:
    from rich.progress_bar import ProgressBar
    from rich.table import Table as Grid

    finished, total = progress["finished"], progress["n_trials"]
    grid = Grid.grid(padding=(0, 2))
    grid.add_row(f"[bold]{progress['status']}[/bold]", ProgressBar(total=total, completed=finished, width=40),
                 f"{finished}/{total} trials",
                 f"running {progress['running']}  pruned {progress['pruned']}  failed {progress['failed']}",
                 "best " + (f"{progress['metric']} {progress['best_value']:.6g} (trial {progress['best_trial']})"
                            if progress["best_value"] is not None else "-"))
    return grid


def _leaderboard(trials: list[dict[str, Any]], progress: dict[str, Any], top: int = 10) -> Table:
    sign = -1 if progress["direction"] == "maximize" else 1
    ranked = sorted((t for t in trials if t["state"] == "COMPLETE" and t["value"] is not None),
                    key=lambda t: (sign * t["value"], t["number"]))
    table = Table("#", "trial", progress["metric"], "duration", "params",
                  title=f"top {min(top, len(ranked))} of {len(trials)} trials "
                        f"({progress['complete']} complete, {progress['pruned']} pruned, {progress['failed']} failed)")
    for rank, t in enumerate(ranked[:top], start=1):
        duration = f"{t['duration'].total_seconds():.2f}s" if t["duration"] is not None else ""
        table.add_row(str(rank), str(t["number"]), f"{t['value']:.6g}", duration, json.dumps(t["params"], sort_keys=True))
    return table


@models_app.command("list")
def models_list(tenant: Tenant = "", project: Annotated[str | None, typer.Option(help="Only this project's.")] = None) -> None:
    """The tenant's models: versions, aliases."""
    from pgmlops import registry

    with _tenant_conn(tenant) as conn:
        models = registry.list_models(conn, project)
    table = Table("model", "project", "task", "versions", "latest", "aliases", "created")
    for m in models:
        aliases = ", ".join(f"{a}={v}" for a, v in sorted(m["aliases"].items()))
        table.add_row(m["name"], m["project"], m["task"], str(m["versions"]), str(m["latest_version"] or ""), aliases,
                      f"{m['created_at']:%Y-%m-%d %H:%M}")
    console.print(table)


@models_app.command("show")
def models_show(model: Annotated[str, typer.Argument(help="model, model@version or model@alias.")], tenant: Tenant = "") -> None:
    """A model with its versions, or one version with its metrics, tags and signature."""
    from pgmlops import registry

    with _tenant_conn(tenant) as conn:
        info = registry.show(conn, model)
    if "versions" in info:
        console.print(f"[bold]{info['name']}[/bold] project {info['project']} ({info['task']}"
                      + (f", target {info['target']}" if info.get("target") else "") + ")")
        table = Table("version", "algorithm", "aliases", "metrics", "size", "created")
        for v in info["versions"]:
            metrics = ", ".join(f"{k} {val:.4g}" for k, val in sorted(v["metrics"].items())
                                if isinstance(val, int | float) and k not in ("train_seconds", "model_size_bytes"))
            table.add_row(str(v["version"]), v["algorithm"], ", ".join(v["aliases"]), metrics, f"{v['artifact_size']:,}",
                          str(v["created_at"])[:16])
        console.print(table)
        for alias, policy in sorted((info.get("policies") or {}).items()):
            console.print(f"policy for {alias}: {json.dumps(policy, sort_keys=True, default=str)}")
        return
    console.print(f"[bold]{info['model']}@{info['version']}[/bold] {info['algorithm']} project {info['project']} "
                  f"({info['task']}) aliases {', '.join(info['aliases']) or 'none'}; approvals {info['approvals']}, "
                  f"rejections {info['rejections']}")
    console.print(f"run {info['run_id']}  dataset {info['dataset_id']}  artifact {info['artifact_format']} "
                  f"{info['artifact_size']:,} bytes sha256 {info['artifact_sha256']}")
    console.print(f"hyperparams {json.dumps(info.get('hyperparams') or {}, sort_keys=True)}  tags "
                  f"{json.dumps(info.get('tags') or {}, sort_keys=True)}")
    console.print(_metrics_table(info.get("metrics") or {}))
    inputs = ", ".join(f"{c['name']}:{c['dtype']}" for c in (info.get("signature") or {}).get("inputs", []))
    console.print(f"inputs {inputs}")


@models_app.command("promote")
def models_promote(
    model: str,
    version: int,
    alias: Annotated[str, typer.Option(help="The alias to move.")] = "champion",
    tenant: Tenant = "",
) -> None:
    """Point an alias at a version once every gate of the project's policy passes (ml.promote);
    a refusal lists each failed gate and changes nothing (exit 1)."""
    from pgmlops import registry

    with _tenant_conn(tenant) as conn:
        try:
            out = registry.promote(conn, model, version, alias)
        except registry.PromotionRefused as exc:
            err_console.print(f"[red]refused[/red]: {str(exc).splitlines()[0]}")
            for failed in exc.failed:
                err_console.print(f"  - {failed}")
            raise typer.Exit(1) from None
    if out.get("changed"):
        previous = f" (was {out['previous_version']})" if out.get("previous_version") is not None else ""
        console.print(f"{model}@{alias} -> version {version}{previous}")
    else:
        console.print(f"{model}@{alias} already points at version {version}")


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
    trials: Annotated[int, typer.Option(min=2, max=200, help="Tuning trials.")] = 12,
    workers: Annotated[int, typer.Option(min=1, max=16, help="Worker processes.")] = 2,
) -> None:
    """Run the whole loop on the embedded default (or DATABASE_URL): features, a point-in-time
    training set, tuning on worker processes, a registered model version."""
    from pgmlops.demo import run_demo

    run_demo(state.url, trials=trials, workers=workers, console=console)


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

