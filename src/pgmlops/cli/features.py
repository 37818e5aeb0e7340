"""`pgmlops features`: feature groups, ingestion, lookups."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pgmlops import features
from pgmlops.cli._common import Tenant, console, err_console, json_arg, tenant_conn

app = typer.Typer(help="The feature store: groups, ingestion, lookups.", no_args_is_help=True)


@app.command("create")
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
    with tenant_conn(tenant) as conn:
        group_id = features.create_group(conn, name, entity, json_arg(schema, "schema"), ttl=ttl, description=description,
                                         join_key=join_key, event_time_column=event_time_column)
        info = features.describe(conn, f"{name}")
    console.print(f"{group_id} ({name}@{info['version']})")


@app.command("ingest")
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
    with tenant_conn(tenant) as conn, Progress(*columns, console=err_console) as progress:
        task = progress.add_task("ingest", total=total)
        result = features.ingest(conn, group, file, on_error=on_error, source_name=file.name,
                                 progress=lambda done: progress.update(task, completed=done))
        progress.update(task, description="validated")
    table = Table(title=f"ingested {file.name} into {result.group}@{result.version}", show_header=False)
    for field in ("rows", "written", "inserted", "updated", "quarantined", "superseded", "online_updated"):
        table.add_row(field.replace("_", " "), f"{getattr(result, field):,}")
    table.add_row("ingestion id", result.ingestion_id)
    console.print(table)


@app.command("list")
def features_list(tenant: Tenant = "") -> None:
    """Feature groups and their versions."""
    with tenant_conn(tenant) as conn:
        groups = features.list_groups(conn)
    table = Table("name", "version", "status", "entity", "join key", "ttl", "features", "entities", "created")
    for g in groups:
        table.add_row(g["name"], str(g["version"]), g["status"], g["entity"], g["join_key"], str(g["ttl"] or ""),
                      str(g["features"]), f"{g['entities']:,}", f"{g['created_at']:%Y-%m-%d %H:%M}")
    console.print(table)


@app.command("show")
def features_show(group: Annotated[str, typer.Argument(help="Group name, or name@version.")], tenant: Tenant = "") -> None:
    """A feature group's schema, versions and size."""
    with tenant_conn(tenant) as conn:
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
