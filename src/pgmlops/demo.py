"""`pgmlops demo`: the whole loop on a fresh machine, in minutes.

Today it proves the foundation end to end: start the embedded PostgreSQL (unless DATABASE_URL
names another), migrate, create a tenant, enqueue echo jobs (a few of them failing once, one for
good), run worker processes until the queue is drained, and print what happened. Feature store,
training, registry, scoring and monitoring steps join as those capabilities land.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pgmlops import migrations, tenants
from pgmlops.db import resolve_url
from pgmlops.worker import WorkerPool

__all__ = ["DemoSummary", "run_demo"]


@dataclass(frozen=True)
class DemoSummary:
    """What the demo did: the tenant it made and the jobs by final status."""

    tenant_id: str
    jobs: int
    statuses: dict[str, int]
    retried: int
    seconds: float
    events: int


def run_demo(url: str | None = None, *, jobs: int = 200, workers: int = 2,
             console: Console | None = None) -> DemoSummary:
    """Run the demo against ``url`` (None: embedded) and return its summary.

    Raises:
        RuntimeError: the queue did not drain within five minutes.
    """
    console = console or Console()
    with console.status("starting PostgreSQL"):
        url = resolve_url(url)
    console.print(f"[green]✓[/green] PostgreSQL at {url.split('@')[-1]}")
    with console.status("migrating"):
        migrations.upgrade(url)
    console.print(f"[green]✓[/green] schema at revision {migrations.current(url)}")

    with psycopg.connect(url, autocommit=True) as conn:
        caps = conn.execute("select ml.capabilities()").fetchone()
        assert caps is not None
        console.print("[green]✓[/green] capabilities: " + ", ".join(
            f"{k}={v}" for k, v in sorted(caps[0].items())))
        tenant = tenants.create_tenant(conn, f"demo {time.strftime('%Y-%m-%d %H:%M:%S')}")
        console.print(f"[green]✓[/green] tenant {tenant}")
        conn.execute("select set_config('pgmlops.tenant_id', %s, false)", (str(tenant),))
        # Every tenth job fails once and is retried; one fails for good.
        conn.execute(
            "select ml.enqueue('echo', jsonb_build_object('message', 'job ' || g, 'sleep_ms', 5, "
            "'fail_attempts', case when g %% 10 = 0 then 1 else 0 end)) from generate_series(1, %s) g",
            (jobs - 1,),
        )
        conn.execute("select ml.enqueue('echo', '{\"message\": \"bad input\", \"fail\": \"permanent\"}')")
        console.print(f"[green]✓[/green] enqueued {jobs} echo jobs")

        started = time.monotonic()
        with WorkerPool(url, ["echo"], workers, prefetch=4, poll_interval=0.5, log_level=logging.WARNING) as pool, Progress(
            TextColumn("[bold]running jobs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=False,
        ) as progress:
            task = progress.add_task("jobs", total=jobs)
            while True:
                done = _finished(conn, tenant)
                progress.update(task, completed=done)
                if done >= jobs:
                    break
                if time.monotonic() - started > 300:
                    raise RuntimeError("demo: the queue did not drain within five minutes")
                pool.check()
                time.sleep(0.2)
        seconds = time.monotonic() - started

        rows = conn.execute("select status, count(*) from ml.jobs where tenant_id = %s group by status",
                            (tenant,)).fetchall()
        statuses = {str(s): int(n) for s, n in rows}
        retried = _scalar(conn, "select count(*) from ml.jobs where tenant_id = %s and attempts > 1", tenant)
        n_events = _scalar(conn, "select count(*) from ml.events where tenant_id = %s", tenant)

    summary = DemoSummary(str(tenant), jobs, statuses, retried, seconds, n_events)
    table = Table(title="pgmlops demo", show_header=False)
    table.add_row("tenant", summary.tenant_id)
    for status, n in sorted(statuses.items()):
        table.add_row(f"jobs {status}", str(n))
    table.add_row("jobs retried after a failure", str(retried))
    table.add_row("events published", str(n_events))
    table.add_row("workers", str(workers))
    table.add_row("wall time", f"{seconds:.1f} s ({jobs / seconds:.0f} jobs/s)")
    console.print(table)
    return summary


def _finished(conn: psycopg.Connection[Any], tenant: Any) -> int:
    return _scalar(conn, "select count(*) from ml.jobs where tenant_id = %s "
                         "and status in ('succeeded', 'failed', 'dead', 'cancelled')", tenant)


def _scalar(conn: psycopg.Connection[Any], sql: str, *args: Any) -> int:
    row = conn.execute(sql, args).fetchone()
    return int(row[0]) if row else 0
