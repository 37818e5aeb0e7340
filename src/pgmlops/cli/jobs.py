"""`pgmlops enqueue`, `pgmlops jobs` and `pgmlops worker`: the job queue and its workers."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from pgmlops.cli._common import Tenant, connection, console, database_url, tenant_conn
from pgmlops.db import sql_errors
from pgmlops.jobs import queue


def enqueue(
    kind: str,
    payload: Annotated[str, typer.Argument(help="JSON object.")] = "{}",
    tenant: Tenant = "",
    priority: int = 0,
) -> None:
    """Queue a job and print its id."""
    try:
        body = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"payload: not valid JSON ({exc})") from exc
    with tenant_conn(tenant) as conn:
        job_id = queue.enqueue(conn, kind, body, priority=priority)
    console.print(str(job_id))


def jobs(failures: Annotated[int, typer.Option(help="How many recent failures to list.")] = 10) -> None:
    """Job counts by kind and status, and the most recent failures."""
    with connection() as conn, sql_errors():
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


def worker(
    kinds: Annotated[str | None, typer.Option(help="Comma-separated job kinds (default: all with a handler).")] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 1,
    prefetch: Annotated[int, typer.Option(
        min=1, max=1000,
        help="Jobs claimed per round trip; above 1, handlers that write nothing are acknowledged in batches.")] = 1,
    idle_exit: Annotated[float | None, typer.Option(help="Exit after this many idle seconds.")] = None,
    modules: Annotated[list[str] | None, typer.Option("--import", help="Module(s) registering handlers.")] = None,
    lease: Annotated[float | None, typer.Option(help="Lease in seconds (default: each kind's).")] = None,
) -> None:
    """Run worker processes that claim and run jobs until SIGTERM/SIGINT."""
    from pgmlops.jobs.worker import run_workers

    kind_list = [k.strip() for k in kinds.split(",") if k.strip()] if kinds else None
    failures = run_workers(database_url(), kind_list, concurrency, prefetch=prefetch, idle_exit=idle_exit,
                           modules=modules, lease=lease)
    raise typer.Exit(1 if failures else 0)
