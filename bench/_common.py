"""Shared helpers for the pgmlops benchmarks (the modules of the bench package).

Every benchmark works the same way: it picks a server (``--database-url``, then
``PGMLOPS_BENCH_DATABASE_URL``, then ``DATABASE_URL``, then the embedded PostgreSQL), creates a
fresh database ``pgmlops_bench_<pid>`` on it, migrates it with :func:`pgmlops.migrations.upgrade`,
acts for a new tenant, measures, prints a rich table of results against their goals, writes
``bench/results/<name>.json`` and drops the database.

Helpers here: :func:`resolve_bench_url`, :func:`fresh_database`, :func:`make_tenant`,
:func:`percentile` / :func:`summarize`, :func:`machine_info`, :func:`write_results`,
:class:`Goal` and :func:`results_table`, :func:`progress`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"

# Wide enough for the results tables when output is not a terminal (CI logs, redirects).
console = Console(width=None if sys.stdout.isatty() else 120)


# -- servers and databases ---------------------------------------------------------------------


def resolve_bench_url(cli_url: str | None = None) -> str:
    """The server to benchmark: ``cli_url``, ``PGMLOPS_BENCH_DATABASE_URL``, ``DATABASE_URL``,
    else the embedded PostgreSQL (started on demand by :func:`pgmlops.db.resolve_url`)."""
    for candidate in (cli_url, os.environ.get("PGMLOPS_BENCH_DATABASE_URL"), os.environ.get("DATABASE_URL")):
        if candidate:
            return candidate
    from pgmlops.db import resolve_url

    return resolve_url(None)


def with_db(url: str, dbname: str) -> str:
    """``url`` pointing at database ``dbname`` (URL or key=value form; other parameters kept)."""
    if url.startswith(("postgres://", "postgresql://")):
        scheme, sep, rest = url.partition("://")
        authority, _, tail = rest.partition("/")
        query = ("?" + tail.split("?", 1)[1]) if "?" in tail else ""
        return f"{scheme}{sep}{authority}/{dbname}{query}"
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in info.items() if v is not None})


def redact(url: str) -> str:
    """``url`` without its password, for printing and for results files."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparsable url>"
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


@contextmanager
def fresh_database(server_url: str, prefix: str = "pgmlops_bench", *, migrate: bool = True,
                   keep: bool = False) -> Iterator[str]:
    """A new database ``<prefix>_<pid>`` on the server of ``server_url``, migrated to head;
    yields its URL and drops it afterwards (``with (force)``, so leftover workers cannot block
    the drop) unless ``keep``."""
    name = f"{prefix}_{os.getpid()}"
    ident = sql.Identifier(name)
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("drop database if exists {} with (force)").format(ident))
        admin.execute(sql.SQL("create database {}").format(ident))
    url = with_db(server_url, name)
    try:
        if migrate:
            from pgmlops import migrations

            migrations.upgrade(url)
        yield url
    finally:
        if not keep:
            with psycopg.connect(server_url, autocommit=True) as admin:
                admin.execute(sql.SQL("drop database if exists {} with (force)").format(ident))


def make_tenant(conn: psycopg.Connection[Any], name: str = "bench") -> str:
    """Create a tenant (as a service caller) and make ``conn`` act for it for its session."""
    row = conn.execute("select ml.create_tenant(%s)", (name,)).fetchone()
    assert row is not None
    tenant = str(row[0])
    conn.execute("select set_config('pgmlops.tenant_id', %s, false)", (tenant,))
    return tenant


# -- statistics ----------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100) of ``values``, linearly interpolated (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def summarize(values: Sequence[float], digits: int = 3) -> dict[str, float]:
    """n, mean, min, p50, p90, p95, p99 and max of ``values``, rounded to ``digits``."""
    if not values:
        return {"n": 0}
    out = {"n": len(values), "mean": sum(values) / len(values), "min": min(values)}
    for p in (50, 90, 95, 99):
        out[f"p{p}"] = percentile(values, p)
    out["max"] = max(values)
    return {k: (round(v, digits) if isinstance(v, float) else v) for k, v in out.items()}


# -- environment ---------------------------------------------------------------------------------


_SETTINGS = ("server_version", "fsync", "synchronous_commit", "wal_sync_method", "commit_delay",
             "shared_buffers", "max_connections", "jit", "wal_level")


def machine_info(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """The client machine and the server: CPU count, versions, key settings, ml.capabilities()."""
    settings = dict(conn.execute(
        "select name, current_setting(name) from pg_settings where name = any(%s)",
        (list(_SETTINGS),)).fetchall())
    caps = conn.execute("select ml.capabilities()").fetchone()
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "psycopg": psycopg.__version__,
        "server_version": conn.execute("select version()").fetchone()[0],  # type: ignore[index]
        "server_settings": settings,
        "capabilities": caps[0] if caps else None,
    }


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus a UTC timestamp) to ``bench/results/<name>.json``; return the path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    body = {"benchmark": name, "timestamp": datetime.now(UTC).isoformat(timespec="seconds"), **payload}
    path.write_text(json.dumps(body, indent=2, default=str) + "\n", encoding="utf-8")
    return path


# -- presentation --------------------------------------------------------------------------------


@dataclass
class Goal:
    """A measured value and its goal: ``value >= target`` (or ``<=`` when ``lower_is_better``)."""

    metric: str
    value: float | None
    unit: str = ""
    target: float | None = None
    lower_is_better: bool = False
    note: str = ""
    digits: int = 1

    @property
    def status(self) -> str:
        if self.target is None or self.value is None or math.isnan(self.value):
            return ""
        ok = self.value <= self.target if self.lower_is_better else self.value >= self.target
        return "PASS" if ok else "MISS"

    def goal_text(self) -> str:
        if self.target is None:
            return ""
        return f"{'<' if self.lower_is_better else '≥'} {self.target:g} {self.unit}".strip()

    def value_text(self) -> str:
        if self.value is None or math.isnan(self.value):
            return "n/a"
        return f"{self.value:,.{self.digits}f} {self.unit}".strip()

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, "unit": self.unit, "target": self.target,
                "lower_is_better": self.lower_is_better, "status": self.status or None, "note": self.note}


def results_table(title: str, goals: Sequence[Goal]) -> Table:
    """A rich table: metric, value, goal, PASS/MISS (colored) and a note."""
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("goal", justify="right")
    table.add_column("", justify="center")
    table.add_column("note", style="dim")
    for g in goals:
        status = {"PASS": "[bold green]PASS[/]", "MISS": "[bold red]MISS[/]"}.get(g.status, "")
        table.add_row(g.metric, g.value_text(), g.goal_text(), status, g.note)
    return table


def progress() -> Progress:
    """A rich progress display for benchmark phases (use as a context manager)."""
    return Progress(SpinnerColumn(), TextColumn("[progress.description]{task.description}"), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=False)


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds``."""

    def __enter__(self) -> Stopwatch:
        self._t0 = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0
