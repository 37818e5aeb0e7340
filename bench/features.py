"""Feature store benchmark: validated bulk ingestion, point-in-time training sets, online lookups.

    python -m bench.features [--database-url URL] [--ingest-rows N] [--spine-rows N]
                             [--feature-rows N] [--lookups N] [--repeats R] [--quick]

Every comparison is measured side by side in one run, on one server, so that ratios hold even
on a busy machine where absolute times do not.

1. Ingestion (issue 10). One CSV file of N rows (a join key, an event time and 6 features with
   rules: float >= 0, int in [0, 1000], category in a list, float, bool, float in [0, 1]) is
   loaded four ways, each repeat in a rotating order and into fresh groups:
     * validated: ``pgmlops.features.ingest(conn, group, "file.csv")`` (COPY into a temp table
       of text, then ``ml.ingest_staged``: one INSERT ... SELECT parses and checks every row and
       writes the group version's offline table, then the newest row per entity goes to its
       online table, and the ingestion is recorded);
     * raw COPY: the file COPYed into a typed table without constraints or indexes;
     * unvalidated: the same writes without the checks: COPY into a typed temp table, INSERT ...
       SELECT into a version's offline table, the newest rows into its online table;
     * COPY into the offline table: the file straight into a version's offline table (typed,
       primary key, partitioned), the floor of writing this storage.
   A CHECKPOINT precedes every timed load. Reported: rows/s (median of the repeats) and the
   ratios to raw COPY (goals: validated >= 0.5, unvalidated >= 0.8), and, from one more run in a
   process of its own, the peak memory of the client and of the server backend.
2. Training sets (issue 10). Two feature groups (3 features each, TTLs of 3 and 30 days) over
   E entities with about 50 event times each (25 per group), F feature rows in all, and a spine
   of S (entity, time, label) rows with distinct keys. ``ml.create_training_set`` is timed
   against two peers doing the same, in a rotating order: pandas (loading the groups' offline
   tables and the spine out of PostgreSQL with COPY ... TO STDOUT as CSV, typed and with times
   as epoch microseconds in the query, read by ``pandas.read_csv(engine="pyarrow")``, then two
   ``pandas.merge_asof(direction="backward", by=key, tolerance=ttl)``) and DuckDB (the same COPY
   read by pyarrow, then one query with an ``ASOF LEFT JOIN`` per group, the TTL applied to the
   row found). The results are compared row by row with pandas' (counts and every value).
   Goal: SQL at least twice as fast as pandas (speedup = pandas time / SQL time >= 2).
   ``--plan-sweep`` times both plans of the join on smaller spines (the 'auto' threshold).
3. Online lookups. ``ml.get_online_features`` for 1 key and 10 features over 2 groups, timed in
   the database (a PL/pgSQL loop timing each call with clock_timestamp()) and, for reference,
   as a client round trip from Python (prepared statement); and 100 keys per call. Goal: p50 at
   most 0.2 ms in the database for 1 key.

Where time goes inside the SQL functions comes from pg_stat_user_functions (track_functions =
all in the benchmark session, when the role may set it).

Results: a table against the goals and bench/results/features.json.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql
from rich.progress import Progress

from bench._common import (
    Goal,
    console,
    fresh_database,
    machine_info,
    make_tenant,
    median,
    progress,
    redact,
    resolve_bench_url,
    results_table,
    summarize,
    write_results,
)
from pgmlops import features

INGEST_RATIO_GOAL = 0.5  # validated ingestion rows/s / raw COPY rows/s (issue 10)
UNVALIDATED_RATIO_GOAL = 0.8  # the same writes without validation / raw COPY (issue 10)
TRAINING_SPEEDUP_GOAL = 2.0  # pandas time / ml.create_training_set time (issue 10)
ONLINE_P50_GOAL_MS = 0.2  # ml.get_online_features, 1 key x 10 features, in the database (issue 10)

Conn = psycopg.Connection[Any]

BASE = np.datetime64("2025-01-01T00:00:00", "us")
US_PER_DAY = 86_400_000_000
COPY_BLOCK = 1 << 20  # what pgmlops.features sends per COPY write

SEGMENTS = ["bronze", "silver", "gold", "platinum"]
INGEST_SCHEMA: list[dict[str, Any]] = [
    {"name": "amount", "dtype": "float", "min": 0},
    {"name": "txn_count", "dtype": "int", "min": 0, "max": 1000},
    {"name": "segment", "dtype": "category", "allowed": SEGMENTS},
    {"name": "score", "dtype": "float"},
    {"name": "active", "dtype": "bool"},
    {"name": "ratio", "dtype": "float", "min": 0, "max": 1},
]
INGEST_TYPES = {"amount": "float8", "txn_count": "bigint", "segment": "text", "score": "float8",
                "active": "boolean", "ratio": "float8"}

# Part 2: two groups of 3 features; (name, ttl, [(feature, dtype, SQL type, rules)]).
TRAINING_GROUPS: list[tuple[str, str | None, list[tuple[str, str, str, dict[str, Any]]]]] = [
    ("txn", "3 days", [("amount_7d", "float", "float8", {"min": 0}),
                       ("txn_count_7d", "int", "bigint", {"min": 0, "max": 10000}),
                       ("segment", "category", "text", {"allowed": SEGMENTS})]),
    ("profile", "30 days", [("credit_score", "int", "bigint", {"min": 300, "max": 850}),
                            ("tenure_days", "int", "bigint", {"min": 0}),
                            ("risk", "float", "float8", {"min": 0, "max": 1})]),
]
TRAINING_PERIOD_DAYS = 4  # each group has one row per entity every 4 days (offset by 2 between groups)

# Part 3: two groups of 5 features.
ONLINE_GROUPS: list[tuple[str, str | None, list[tuple[str, str]]]] = [
    ("online_a", "30 days", [("a_amount", "float"), ("a_count", "int"), ("a_segment", "category"),
                             ("a_active", "bool"), ("a_score", "float")]),
    ("online_b", None, [("b_amount", "float"), ("b_count", "int"), ("b_segment", "category"),
                        ("b_active", "bool"), ("b_score", "float")]),
]


# -- helpers -------------------------------------------------------------------------------------


def _iso(us: np.ndarray) -> np.ndarray:
    """ISO 8601 UTC text ('...Z') of microsecond offsets from BASE."""
    return np.datetime_as_string(BASE + us.astype("timedelta64[us]"), unit="us", timezone="UTC")


def _keys(ids: np.ndarray) -> np.ndarray:
    return np.char.add("c", np.char.zfill(ids.astype(str), 7))


def _checkpoint(conn: Conn) -> None:
    """Start every timed load from a clean checkpoint (skipped when the role may not)."""
    try:
        conn.execute("checkpoint")
    except psycopg.errors.InsufficientPrivilege:
        pass


def _copy_file(conn: Conn, path: Path, statement: sql.Composable) -> None:
    """Stream a file to COPY ... FROM STDIN in 1 MiB blocks, as pgmlops.features does."""
    with path.open("rb") as f, conn.cursor().copy(statement) as copy:
        while block := f.read(COPY_BLOCK):
            copy.write(block)


def _copy_out(conn: Conn, query: sql.Composable) -> pd.DataFrame:
    """The rows of ``query`` as a DataFrame: COPY ... TO STDOUT as CSV, read by pyarrow."""
    buffer = io.BytesIO()
    with conn.cursor().copy(sql.SQL("copy ({}) to stdout with (format csv, header true)").format(query)) as copy:
        for block in copy:
            buffer.write(block)
    buffer.seek(0)
    return pd.read_csv(buffer, engine="pyarrow")


class FunctionTimes:
    """Per-function time inside the database, from pg_stat_user_functions (track_functions = all).

    ``with FunctionTimes(conn) as ft: ...`` then ``ft.ms``: {schema.function: {calls, total_ms,
    self_ms}} for the calls made inside the block; empty when the role may not track functions.
    """

    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.ms: dict[str, dict[str, float]] = {}

    def _snapshot(self) -> dict[str, tuple[int, float, float]]:
        self.conn.execute("select pg_stat_clear_snapshot()")
        rows = self.conn.execute(
            "select schemaname || '.' || funcname, sum(calls), sum(total_time), sum(self_time) "
            "from pg_stat_user_functions where schemaname in ('ml', 'ml_private') group by 1").fetchall()
        return {r[0]: (int(r[1]), float(r[2]), float(r[3])) for r in rows}

    def __enter__(self) -> FunctionTimes:
        try:
            self.conn.execute("set track_functions = 'all'")
        except psycopg.errors.InsufficientPrivilege:
            self._before = None
            return self
        self._before = self._snapshot()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._before is None:
            return
        self.conn.execute("reset track_functions")
        if exc[0] is not None:
            return
        # Stats are flushed to shared memory when the backend goes idle; force it, then read.
        self.conn.execute("select pg_stat_force_next_flush()")
        after = self._snapshot()
        for name, (calls, total, self_t) in after.items():
            c0, t0, s0 = self._before.get(name, (0, 0.0, 0.0))
            if calls > c0:
                self.ms[name] = {"calls": calls - c0, "total_ms": round(total - t0, 1), "self_ms": round(self_t - s0, 1)}

    def total(self, name: str) -> float:
        return self.ms.get(name, {}).get("total_ms", float("nan"))


class StatementTimes:
    """The statements (nested ones too) that took at least ``min_ms`` inside the block, from
    auto_explain's log lines sent to this client (``client_min_messages = log``).

    ``with StatementTimes(conn) as st: ...`` then ``st.statements``: [{ms, statement}], slowest
    first; empty when auto_explain cannot be loaded. Used for a separate diagnostic run only, so
    the timed runs carry none of its overhead.
    """

    def __init__(self, conn: Conn, min_ms: int = 20, *, analyze: bool = False) -> None:
        self.conn = conn
        self.min_ms = min_ms
        self.analyze = analyze
        self.statements: list[dict[str, Any]] = []
        self._messages: list[str] = []

    def _notice(self, diag: psycopg.errors.Diagnostic) -> None:
        if diag.message_primary and diag.message_primary.startswith("duration: "):
            self._messages.append(diag.message_primary)

    def __enter__(self) -> StatementTimes:
        try:
            self.conn.execute("load 'auto_explain'")
        except psycopg.Error:
            self._on = False
            return self
        self._on = True
        for name, value in (("auto_explain.log_min_duration", str(self.min_ms)), ("auto_explain.log_nested_statements", "on"),
                            ("auto_explain.log_analyze", "on" if self.analyze else "off"), ("client_min_messages", "log")):
            self.conn.execute("select set_config(%s, %s, false)", (name, value))
        self.conn.add_notice_handler(self._notice)
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._on:
            return
        self.conn.execute("reset client_min_messages")
        self.conn.execute("reset auto_explain.log_min_duration")
        self.conn.execute("reset auto_explain.log_analyze")
        self.conn.remove_notice_handler(self._notice)
        for msg in self._messages:
            # "duration: 12.3 ms  plan:\nQuery Text: <statement, maybe several lines>\n<plan>"
            head, _, rest = msg.partition("\n")
            text = rest.removeprefix("Query Text:")
            self.statements.append({"ms": round(float(head.split()[1]), 3), "statement": " ".join(text.split())[:160],
                                    **({"plan": text} if self.analyze else {})})
        self.statements.sort(key=lambda r: -r["ms"])


def _rotate(items: Sequence[str], k: int) -> list[str]:
    k %= len(items)
    return list(items[k:]) + list(items[:k])


# -- 1. ingestion --------------------------------------------------------------------------------


def make_ingest_csv(path: Path, rows: int, seed: int = 1) -> dict[str, Any]:
    """N rows of clean data: ~10 event times (an hour apart) per entity, unique (key, time)."""
    rng = np.random.default_rng(seed)
    entities = max(1, rows // 10)
    i = np.arange(rows, dtype=np.int64)
    ent = i % entities
    t_us = (i // entities) * 3_600_000_000 + (ent % 3600) * 1_000_000
    table = pa.table({
        "customer_id": _keys(ent),
        "event_time": np.char.replace(_iso(t_us), ".000000Z", "Z"),
        "amount": np.round(rng.gamma(2.0, 50.0, rows), 2),
        "txn_count": rng.integers(0, 1001, rows),
        "segment": np.array(SEGMENTS)[rng.integers(0, len(SEGMENTS), rows)],
        "score": np.round(rng.normal(0, 1, rows), 6),
        "active": rng.random(rows) < 0.7,
        "ratio": np.round(rng.random(rows), 6),
    })
    pacsv.write_csv(table, path)
    return {"rows": rows, "entities": entities, "bytes": path.stat().st_size, "columns": table.column_names}


def _drop_group(conn: Conn, group_id: str) -> None:
    """Delete a group version (as the owner): its offline and online tables go with it."""
    conn.execute("delete from ml.feature_groups where id = %s", (group_id,))


def _ingest_validated(conn: Conn, path: Path, rows: int, rep: int) -> dict[str, Any]:
    group = f"ingest_r{rep}"
    group_id = features.create_group(conn, group, "customer", INGEST_SCHEMA, join_key="customer_id")
    _checkpoint(conn)
    with FunctionTimes(conn) as ft:
        t0 = time.perf_counter()
        result = features.ingest(conn, group, path)
        seconds = time.perf_counter() - t0
    if not (result.rows == rows and result.inserted == rows and result.quarantined == 0 and result.superseded == 0):
        raise RuntimeError(f"validated ingestion did not write every row: {result}")
    _drop_group(conn, group_id)
    staged_ms = ft.total("ml.ingest_staged")
    return {"seconds": round(seconds, 3), "rows_per_s": round(rows / seconds, 1),
            "inserted": result.inserted, "online_updated": result.online_updated,
            "ml_ingest_staged_s": round(staged_ms / 1000, 3),
            "client_copy_and_rest_s": round(seconds - staged_ms / 1000, 3),
            "fast_path": "ml_private.ingest_staged_fast" in ft.ms if ft.ms else None,
            "careful_path": "ml_private.ingest_checked" in ft.ms if ft.ms else None, "functions": ft.ms}


def _ingest_raw_copy(conn: Conn, path: Path, rows: int, rep: int) -> dict[str, Any]:
    table = sql.Identifier(f"bench_raw_r{rep}")
    conn.execute(sql.SQL("create table {} (customer_id text, event_time timestamptz, {})").format(
        table, sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in INGEST_TYPES.items())))
    _checkpoint(conn)
    t0 = time.perf_counter()
    _copy_file(conn, path, sql.SQL("copy {} from stdin with (format csv, header true)").format(table))
    seconds = time.perf_counter() - t0
    count = conn.execute(sql.SQL("select count(*) from {}").format(table)).fetchone()[0]  # type: ignore[index]
    if count != rows:
        raise RuntimeError(f"raw COPY loaded {count} of {rows} rows")
    conn.execute(sql.SQL("drop table {}").format(table))
    return {"seconds": round(seconds, 3), "rows_per_s": round(rows / seconds, 1)}


def _ingest_unvalidated(conn: Conn, path: Path, rows: int, rep: int, tenant: str) -> dict[str, Any]:
    """The validated path's writes without its checks, straight into a group version's own
    tables as their owner: COPY into a typed temp table, one INSERT ... SELECT into the offline
    table (typed columns, primary key, hypertable or native partitions), then each entity's
    newest row (RETURNING, hashed, read back by key) into the online table, as the validated path
    writes them."""
    group_id = features.create_group(conn, f"unvalidated_r{rep}", "customer", INGEST_SCHEMA, join_key="customer_id")
    offline, online = conn.execute("select offline_table::text, online_table::text from ml.feature_groups where id = %s",
                                   (group_id,)).fetchone()  # type: ignore[misc]
    cols = sql.SQL(", ").join(map(sql.Identifier, INGEST_TYPES))
    x_cols = sql.SQL(", ").join(sql.SQL("x.{}").format(sql.Identifier(c)) for c in INGEST_TYPES)
    _checkpoint(conn)
    t0 = time.perf_counter()
    with conn.transaction():
        conn.execute("set local work_mem = '256MB'")  # as ml_private.ingest_staged_fast
        conn.execute(sql.SQL("create temp table _bench_stage (customer_id text, event_time timestamptz, {}) on commit drop").format(
            sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in INGEST_TYPES.items())))
        _copy_file(conn, path, sql.SQL("copy _bench_stage from stdin with (format csv, header true)"))
        t1 = time.perf_counter()
        conn.execute("select ml_private.ensure_time_partitions(%s::regclass, min(event_time), max(event_time)) from _bench_stage",
                     (offline,))
        conn.execute("create temp table _bench_latest (entity_key text, event_time timestamptz, n bigint) on commit drop")
        s_cols = sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(c)) for c in INGEST_TYPES)
        conn.execute(sql.SQL(
            "with written as (insert into {} (tenant_id, entity_key, event_time, {}) "
            "select {}::uuid, s.customer_id, s.event_time, {} from _bench_stage s returning entity_key, event_time) "
            "insert into _bench_latest select entity_key, max(event_time), count(*) from written group by entity_key").format(
            sql.SQL(offline), cols, sql.Literal(tenant), s_cols))
        written = conn.execute("select sum(n) from _bench_latest").fetchone()[0]  # type: ignore[index]
        t2 = time.perf_counter()
        conn.execute(sql.SQL(
            "insert into {} (tenant_id, entity_key, event_time, {}, ingested_at) select x.tenant_id, x.entity_key, x.event_time, {}, "
            "x.ingested_at from _bench_latest l join {} x on x.tenant_id = {}::uuid and x.entity_key = l.entity_key "
            "and x.event_time = l.event_time").format(sql.SQL(online), cols, x_cols, sql.SQL(offline), sql.Literal(tenant)))
        t3 = time.perf_counter()
    t4 = time.perf_counter()
    if written != rows:
        raise RuntimeError(f"unvalidated load wrote {written} of {rows} rows")
    _drop_group(conn, group_id)
    # The main measure includes the online table (the validated path writes it too); also reported without.
    return {"seconds": round(t4 - t0, 3), "rows_per_s": round(rows / (t4 - t0), 1),
            "copy_s": round(t1 - t0, 3), "offline_insert_s": round(t2 - t1, 3), "online_insert_s": round(t3 - t2, 3),
            "without_online_seconds": round((t4 - t0) - (t3 - t2), 3),
            "without_online_rows_per_s": round(rows / ((t4 - t0) - (t3 - t2)), 1)}


def _ingest_copy_into_storage(conn: Conn, path: Path, rows: int, rep: int, tenant: str) -> dict[str, Any]:
    """The floor of writing this storage: the file COPYed straight into a group version's offline
    table (typed columns, primary key, hypertable or native partitions), nothing else."""
    group_id = features.create_group(conn, f"copy_r{rep}", "customer", INGEST_SCHEMA, join_key="customer_id")
    offline = conn.execute("select offline_table::text from ml.feature_groups where id = %s", (group_id,)).fetchone()[0]  # type: ignore[index]
    conn.execute(sql.SQL("alter table {} alter column tenant_id set default {}").format(sql.SQL(offline), sql.Literal(tenant)))
    conn.execute("select ml_private.ensure_time_partitions(%s::regclass, %s::timestamptz, %s::timestamptz + interval '1 day')",
                 (offline, str(BASE), str(BASE)))
    _checkpoint(conn)
    t0 = time.perf_counter()
    _copy_file(conn, path, sql.SQL("copy {} (entity_key, event_time, {}) from stdin with (format csv, header true)").format(
        sql.SQL(offline), sql.SQL(", ").join(map(sql.Identifier, INGEST_TYPES))))
    seconds = time.perf_counter() - t0
    _drop_group(conn, group_id)
    return {"seconds": round(seconds, 3), "rows_per_s": round(rows / seconds, 1)}


def _proc_kib(pid: int) -> dict[str, int] | None:
    """VmRSS, RssAnon and VmHWM (KiB) of a process on this machine, from /proc; None elsewhere."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def _ingest_in_child(url: str, tenant: str, group: str, path: str, pipe: Any) -> None:
    """In a process of its own (so that its peak memory is the ingestion's): connect, tell the
    parent the backend's pid, wait for the word, ingest the file, report. The peak is VmHWM, the
    high-water mark of this process image: getrusage's ru_maxrss would also count the parent's
    pages the process held between fork and exec."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("select set_config('pgmlops.tenant_id', %s, false)", (tenant,))
        pipe.send({"backend_pid": conn.execute("select pg_backend_pid()").fetchone()[0],  # type: ignore[index]
                   "rss_before_kib": (_proc_kib(os.getpid()) or {}).get("VmRSS")})
        pipe.recv()
        t0 = time.perf_counter()
        result = features.ingest(conn, group, path)
        pipe.send({"seconds": time.perf_counter() - t0, "rows": result.rows,
                   "peak_rss_kib": (_proc_kib(os.getpid()) or {}).get("VmHWM")})


def _ingest_memory(conn: Conn, url: str, tenant: str, path: Path, rows: int) -> dict[str, Any]:
    """Peak memory of one validated ingestion: the client's (a fresh process: its peak RSS against
    its RSS just before, after imports and connecting), and the server backend's (its private
    memory, RssAnon, sampled every 10 ms, and its peak resident set, VmHWM, which counts the
    shared buffers it touched). Untimed; the server's figures need the server on this machine."""
    import multiprocessing
    import threading

    group_id = features.create_group(conn, "ingest_memory", "customer", INGEST_SCHEMA, join_key="customer_id")
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_ingest_in_child, args=(url, tenant, "ingest_memory", str(path), child))
    proc.start()
    hello = parent.recv()
    pid = hello["backend_pid"]
    before = _proc_kib(pid)
    peak_anon = [before["RssAnon"] if before else 0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            now = _proc_kib(pid)
            if now:
                peak_anon[0] = max(peak_anon[0], now["RssAnon"])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    parent.send("go")
    report = parent.recv()
    server = _proc_kib(pid)  # before the child disconnects
    done.set()
    sampler.join()
    proc.join()
    _drop_group(conn, group_id)
    if report["rows"] != rows:
        raise RuntimeError(f"the memory run ingested {report['rows']} of {rows} rows")
    mib = 1 / 1024
    if report["peak_rss_kib"] is None:  # no /proc: nothing to report
        return {"file_mib": round(path.stat().st_size / 2**20, 1), "seconds": round(report["seconds"], 3)}
    return {"file_mib": round(path.stat().st_size / 2**20, 1),
            "client_peak_rss_mib": round(report["peak_rss_kib"] * mib, 1),
            "client_rss_before_mib": round(hello["rss_before_kib"] * mib, 1) if hello["rss_before_kib"] else None,
            "client_peak_increase_mib": (round((report["peak_rss_kib"] - hello["rss_before_kib"]) * mib, 1)
                                         if hello["rss_before_kib"] else None),
            "server_backend_private_before_mib": round(before["RssAnon"] * mib, 1) if before else None,
            "server_backend_private_peak_mib": round(peak_anon[0] * mib, 1) if before else None,
            "server_backend_peak_rss_mib": round(server["VmHWM"] * mib, 1) if server else None,
            "seconds": round(report["seconds"], 3)}


INGEST_KINDS = ("validated", "raw_copy", "unvalidated", "copy_into_storage")


def run_ingestion(conn: Conn, url: str, tenant: str, rows: int, repeats: int, workdir: Path, prog: Progress) -> dict[str, Any]:
    task = prog.add_task(f"ingestion: writing {rows:,} rows of CSV", total=len(INGEST_KINDS) * repeats + 2)
    path = workdir / "ingest.csv"
    data = make_ingest_csv(path, rows)
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in INGEST_KINDS}
    for rep in range(repeats):
        for kind in _rotate(list(runs), rep):
            prog.update(task, description=f"ingestion: {kind} (run {rep + 1}/{repeats})")
            if kind == "validated":
                run = _ingest_validated(conn, path, rows, rep)
            elif kind == "raw_copy":
                run = _ingest_raw_copy(conn, path, rows, rep)
            elif kind == "unvalidated":
                run = _ingest_unvalidated(conn, path, rows, rep, tenant)
            else:
                run = _ingest_copy_into_storage(conn, path, rows, rep, tenant)
            runs[kind].append({"repeat": rep, **run})
            prog.advance(task)
    # Where the validated path spends its time: one more, untimed run, with auto_explain.
    prog.update(task, description="ingestion: validated, statement breakdown")
    diag = features.create_group(conn, "ingest_diag", "customer", INGEST_SCHEMA, join_key="customer_id")
    with StatementTimes(conn) as st:
        features.ingest(conn, "ingest_diag", path)
    _drop_group(conn, diag)
    prog.advance(task)
    prog.update(task, description="ingestion: validated, peak memory of client and server")
    memory = _ingest_memory(conn, url, tenant, path, rows)
    prog.advance(task)
    med = {k: median([r["rows_per_s"] for r in v]) for k, v in runs.items()}

    def ratios(kind: str, field: str = "rows_per_s", over: str = "raw_copy") -> dict[str, Any]:
        # Per repeat (the loads of one repeat ran back to back), then their median.
        values = [a[field] / b["rows_per_s"] for a, b in zip(runs[kind], runs[over], strict=True)]
        return {"median": round(median(values), 3), "runs": [round(x, 3) for x in values]}

    prog.update(task, description=f"ingestion: validated {med['validated']:,.0f} rows/s, raw COPY {med['raw_copy']:,.0f} rows/s")
    return {"file": data, "repeats": repeats, "rows_per_s_median": med,
            "ratio_validated_to_raw_copy": ratios("validated"),
            "ratio_unvalidated_to_raw_copy": ratios("unvalidated"),
            "ratio_unvalidated_without_online_to_raw_copy": ratios("unvalidated", "without_online_rows_per_s"),
            "ratio_copy_into_storage_to_raw_copy": ratios("copy_into_storage"),
            "ratio_validated_to_unvalidated": ratios("validated", over="unvalidated"),
            "memory": memory, "validated_statements": st.statements[:12], "runs": runs}


# -- 2. training sets ----------------------------------------------------------------------------


def make_training_data(entities: int, feature_rows: int, spine_rows: int, seed: int = 2
                       ) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Feature rows for the two groups (one row per entity every 4 days, at an entity-specific
    offset plus up to an hour of jitter) and a spine of distinct (entity, time) rows."""
    rng = np.random.default_rng(seed)
    per_entity = max(1, feature_rows // (len(TRAINING_GROUPS) * entities))
    period = TRAINING_PERIOD_DAYS * US_PER_DAY
    offsets = rng.integers(0, period, entities)
    frames: dict[str, pd.DataFrame] = {}
    for g, (name, _ttl, feats) in enumerate(TRAINING_GROUPS):
        ent = np.repeat(np.arange(entities), per_entity)
        j = np.tile(np.arange(per_entity), entities)
        t_us = offsets[ent] + j * period + g * (period // 2) + rng.integers(0, 3_600_000_000, ent.size)
        n = ent.size
        cols: dict[str, Any] = {"customer_id": _keys(ent), "event_time": _iso(t_us)}
        for fname, dtype, _sqltype, rules in feats:
            if dtype == "category":
                cols[fname] = np.array(rules["allowed"])[rng.integers(0, len(rules["allowed"]), n)]
            elif dtype == "int":
                cols[fname] = rng.integers(rules.get("min", 0), rules.get("max", 3650) + 1, n)
            else:
                hi = rules.get("max")
                cols[fname] = np.round(rng.random(n) if hi == 1 else rng.gamma(2.0, 80.0, n), 4)
        frames[name] = pd.DataFrame(cols)
    span = (per_entity + 1) * period
    ent = rng.integers(0, entities, spine_rows)
    t_us = rng.integers(0, span, spine_rows)
    spine = pd.DataFrame({"customer_id": _keys(ent), "event_time_us": t_us, "label": rng.integers(0, 2, spine_rows)})
    spine = spine.drop_duplicates(["customer_id", "event_time_us"]).reset_index(drop=True)
    spine.insert(1, "event_time", _iso(spine.pop("event_time_us").to_numpy()))
    return frames, spine


def _offline_tables(conn: Conn, group_ids: dict[str, str]) -> dict[str, str]:
    """Each group's offline table (ml.feature_groups.offline_table, docs/features.md)."""
    query = "select offline_table::text from ml.feature_groups where id = %s"
    return {name: conn.execute(query, (gid,)).fetchone()[0] for name, gid in group_ids.items()}  # type: ignore[index]


def _load_training_features(conn: Conn, tenant: str, frames: dict[str, pd.DataFrame], how: str,
                            prog: Progress, task: Any) -> dict[str, Any]:
    """Create the two groups and load their rows: with pgmlops.features.ingest (validated, in
    batches of 1M rows) or, with --feature-load copy, straight into each group's offline table."""
    out: dict[str, Any] = {"how": how, "groups": {}}
    batch = 1_000_000
    for name, ttl, feats in TRAINING_GROUPS:
        schema = [{"name": f, "dtype": d, **rules} for f, d, _t, rules in feats]
        group_id = features.create_group(conn, name, "customer", schema, ttl=ttl, join_key="customer_id")
        frame = frames[name]
        t0 = time.perf_counter()
        if how == "ingest":
            for start in range(0, len(frame), batch):
                features.ingest(conn, name, frame.iloc[start:start + batch], source_name=f"bench:{name}")
                prog.advance(task, min(batch, len(frame) - start))
        else:
            table = _offline_tables(conn, {name: group_id})[name]
            with conn.transaction():
                typed = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(f), sql.SQL(t)) for f, _d, t, _r in feats)
                conn.execute(sql.SQL("create temp table _bench_load (customer_id text, event_time timestamptz, {}) "
                                     "on commit drop").format(typed))
                buffer = io.BytesIO()
                pacsv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), buffer)
                buffer.seek(0)
                with conn.cursor().copy("copy _bench_load from stdin with (format csv, header true)") as copy:
                    while block := buffer.read(COPY_BLOCK):
                        copy.write(block)
                conn.execute("select ml_private.ensure_time_partitions(%s::regclass, (select min(event_time) from _bench_load), "
                             "(select max(event_time) from _bench_load))", (table,))
                names = sql.SQL(", ").join(sql.Identifier(f) for f, _d, _t, _r in feats)
                conn.execute(sql.SQL("insert into {} (tenant_id, entity_key, event_time, {}) select {}::uuid, customer_id, "
                                     "event_time, {} from _bench_load order by customer_id, event_time").format(
                    sql.SQL(table), names, sql.Literal(tenant), names))
            prog.advance(task, len(frame))
        seconds = time.perf_counter() - t0
        out["groups"][name] = {"group_id": group_id, "rows": len(frame), "seconds": round(seconds, 1),
                               "rows_per_s": round(len(frame) / seconds, 1)}
    return out


def _peer_queries(tenant: str, tables: dict[str, str]) -> dict[str, sql.Composable]:
    """What both peers load out of PostgreSQL: each group's offline table and the spine, typed,
    times as epoch microseconds (free of the session's time zone and DateStyle)."""
    queries: dict[str, sql.Composable] = {
        name: sql.SQL("select entity_key as customer_id, (extract(epoch from event_time) * 1000000)::bigint as event_time_us, {} "
                      "from {} where tenant_id = {}").format(
            sql.SQL(", ").join(sql.Identifier(f) for f, _d, _t, _r in feats), sql.SQL(tables[name]), sql.Literal(tenant))
        for name, _ttl, feats in TRAINING_GROUPS}
    queries["spine"] = sql.SQL("select customer_id, (extract(epoch from event_time) * 1000000)::bigint as event_time_us, label "
                               "from bench_spine")
    return queries


def _pandas_training_set(conn: Conn, tenant: str, tables: dict[str, str]) -> tuple[pd.DataFrame, dict[str, float]]:
    """The same training set in pandas: load out of PostgreSQL, then merge_asof per group."""
    t0 = time.perf_counter()
    loaded = {name: _copy_out(conn, query) for name, query in _peer_queries(tenant, tables).items()}
    t1 = time.perf_counter()
    for frame in loaded.values():
        frame["event_time"] = pd.to_datetime(frame.pop("event_time_us"), unit="us", utc=True)
    result = loaded["spine"].sort_values("event_time", kind="stable")
    for name, ttl, _feats in TRAINING_GROUPS:
        right = loaded[name].sort_values("event_time", kind="stable")
        result = pd.merge_asof(result, right, on="event_time", by="customer_id", direction="backward",
                               tolerance=pd.Timedelta(ttl) if ttl else None, allow_exact_matches=True)
    t2 = time.perf_counter()
    return result, {"seconds": round(t2 - t0, 3), "load_s": round(t1 - t0, 3), "merge_s": round(t2 - t1, 3)}


def _copy_out_arrow(conn: Conn, query: sql.Composable) -> pa.Table:
    """The rows of ``query`` as an Arrow table: COPY ... TO STDOUT as CSV, read by pyarrow."""
    buffer = io.BytesIO()
    with conn.cursor().copy(sql.SQL("copy ({}) to stdout with (format csv, header true)").format(query)) as copy:
        for block in copy:
            buffer.write(block)
    buffer.seek(0)
    table = pacsv.read_csv(buffer)
    column = table.schema.get_field_index("event_time_us")
    return table.set_column(column, "event_time", table.column(column).cast(pa.timestamp("us", tz="UTC")))


def _duckdb_training_set(conn: Conn, tenant: str, tables: dict[str, str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The same training set in DuckDB: load out of PostgreSQL as Arrow tables (as pandas does),
    then one query with an ASOF LEFT JOIN per group (the latest row at or before the spine time;
    the TTL applied to that row, as merge_asof's tolerance does). DuckDB's time covers the result
    fetched as an Arrow table; the conversion to pandas for the comparison is not timed."""
    import duckdb  # the bench/test extra: imported here so that --help works without it

    t0 = time.perf_counter()
    loaded = {name: _copy_out_arrow(conn, query) for name, query in _peer_queries(tenant, tables).items()}
    t1 = time.perf_counter()
    db = duckdb.connect()
    for name, table in loaded.items():
        db.register(f"bench_{name}", table)
    columns, joins = [], []
    for g, (name, ttl, feats) in enumerate(TRAINING_GROUPS):
        live = f"g{g}.event_time >= s.event_time - interval '{ttl}'" if ttl else "true"
        columns += [f"case when {live} then g{g}.{f} end as {f}" for f, _d, _t, _r in feats]
        joins.append(f"asof left join bench_{name} g{g} on s.customer_id = g{g}.customer_id and s.event_time >= g{g}.event_time")
    result = db.sql(f"select s.customer_id, s.event_time, s.label, {', '.join(columns)} from bench_spine s {' '.join(joins)}").arrow()
    if not isinstance(result, pa.Table):  # newer DuckDB returns a reader
        result = result.read_all()
    t2 = time.perf_counter()
    db.close()
    return result.to_pandas(), {"seconds": round(t2 - t0, 3), "load_s": round(t1 - t0, 3), "join_s": round(t2 - t1, 3),
                                "duckdb": duckdb.__version__}


def _sql_training_set(conn: Conn, rep: int) -> tuple[str, str, dict[str, Any]]:
    refs = [f"{name}:{f}" for name, _ttl, feats in TRAINING_GROUPS for f, _d, _t, _r in feats]
    with FunctionTimes(conn) as ft:
        t0 = time.perf_counter()
        row = conn.execute("select ml.create_training_set(%s, 'bench_spine', %s, 'label')", (f"bench_ts_r{rep}", refs)).fetchone()
        seconds = time.perf_counter() - t0
    assert row is not None
    dataset = str(row[0])
    table, rows, groups = conn.execute("select table_name, row_count, source_groups from ml.datasets where id = %s",  # type: ignore[misc]
                                       (dataset,)).fetchone()
    total = ft.total("ml.create_training_set")
    materialize = ft.total("ml_private.materialize_training_set")
    hashing = ft.total("ml_private.dataset_content_hash")
    plan = ft.ms.get("ml_private.training_set_plan", {}).get("total_ms", 0.0)
    return dataset, table, {
        "seconds": round(seconds, 3), "rows": int(rows), "plans": {g["name"]: g["plan"] for g in groups},
        "breakdown_s": {"spine_to_temp_table": round((total - materialize) / 1000, 3),
                        "point_in_time_join_and_write": round((materialize - hashing - plan) / 1000, 3),
                        "content_hash": round(hashing / 1000, 3)},
        "functions": ft.ms}


def _compare_frames(ours: pd.DataFrame, frame: pd.DataFrame) -> dict[str, Any]:
    """Every row of ``ours`` against pandas' ``frame``, joined on (key, time): counts and values."""
    names = [f for _n, _ttl, feats in TRAINING_GROUPS for f, _d, _t, _r in feats]
    both = frame.merge(ours, on=["customer_id", "event_time"], how="outer", suffixes=("_pd", "_ours"), indicator=True)
    matched = both["_merge"] == "both"
    equal = pd.Series(True, index=both.index)
    differing: dict[str, int] = {}
    for col in ["label", *names]:
        a, b = both[f"{col}_pd"], both[f"{col}_ours"]
        if pd.api.types.is_float_dtype(a) or pd.api.types.is_float_dtype(b):
            same = np.isclose(a.astype(float), b.astype(float), rtol=1e-12, atol=0, equal_nan=True)
        else:
            same = (a == b) | (a.isna() & b.isna())
        differing[col] = int((~same & matched).sum())
        equal &= same
    return {"rows_ours": len(ours), "rows_pandas": len(frame), "rows_matched_on_key_and_time": int(matched.sum()),
            "rows_with_equal_values": int((equal & matched).sum()), "differing_by_column": differing,
            "null_features": {g: int(ours[feats[0][0]].isna().sum()) for g, _ttl, feats in TRAINING_GROUPS}}


def _compare(conn: Conn, table: str, frame: pd.DataFrame) -> dict[str, Any]:
    """Every row of the SQL training set against pandas'."""
    names = [f for _n, _ttl, feats in TRAINING_GROUPS for f, _d, _t, _r in feats]
    ours = _copy_out(conn, sql.SQL(
        "select customer_id, (extract(epoch from event_time) * 1000000)::bigint as event_time_us, label, {} from {}").format(
        sql.SQL(", ").join(map(sql.Identifier, names)), sql.SQL(table)))
    ours["event_time"] = pd.to_datetime(ours.pop("event_time_us"), unit="us", utc=True)
    return _compare_frames(ours, frame)


def _plan_sweep(conn: Conn, sizes: Sequence[int], prog: Progress, task: Any) -> list[dict[str, Any]]:
    """ml.create_training_set with each plan forced (pgmlops.training_set_plan) on spines of
    ``sizes`` rows (the first rows of a random permutation of the benchmark's spine), to place the
    threshold of the 'auto' choice: the ratio of group rows to spine rows where the plans cost the same."""
    conn.execute("create temp table bench_spine_all as select * from bench_spine order by md5(customer_id || event_time::text)")
    refs = [f"{name}:{f}" for name, _ttl, feats in TRAINING_GROUPS for f, _d, _t, _r in feats]
    out = []
    try:
        for size in sizes:
            conn.execute("drop table if exists bench_spine_part")
            conn.execute("create table bench_spine_part as select * from bench_spine_all limit %s", (size,))
            conn.execute("analyze bench_spine_part")
            times: dict[str, float] = {}
            for plan in ("probe", "merge"):
                prog.update(task, description=f"training set: plan sweep, {size:,} spine rows, {plan}")
                conn.execute("select set_config('pgmlops.training_set_plan', %s, false)", (plan,))
                _checkpoint(conn)
                t0 = time.perf_counter()
                row = conn.execute("select ml.create_training_set('bench_sweep', 'bench_spine_part', %s, 'label')", (refs,)).fetchone()
                times[plan] = round(time.perf_counter() - t0, 3)
                conn.execute("select ml.drop_dataset(%s)", (row[0],))  # type: ignore[index]
            out.append({"spine_rows": size, "probe_s": times["probe"], "merge_s": times["merge"]})
    finally:
        conn.execute("reset pgmlops.training_set_plan")
        conn.execute("drop table if exists bench_spine_part")
        conn.execute("drop table if exists bench_spine_all")
    return out


def run_training(conn: Conn, tenant: str, entities: int, feature_rows: int, spine_rows: int, repeats: int,
                 feature_load: str, prog: Progress, plan_sweep: Sequence[int] = ()) -> dict[str, Any]:
    frames, spine = make_training_data(entities, feature_rows, spine_rows)
    total_rows = sum(len(f) for f in frames.values())
    task = prog.add_task(f"training set: loading {total_rows:,} feature rows ({feature_load})", total=total_rows)
    load = _load_training_features(conn, tenant, frames, feature_load, prog, task)
    conn.execute("create table bench_spine (customer_id text, event_time timestamptz, label int)")
    buffer = io.BytesIO()
    pacsv.write_csv(pa.Table.from_pandas(spine, preserve_index=False), buffer)
    buffer.seek(0)
    with conn.cursor().copy("copy bench_spine from stdin with (format csv, header true)") as copy:
        copy.write(buffer.getvalue())
    del frames, spine, buffer
    group_ids = {g: load["groups"][g]["group_id"] for g, _t, _f in TRAINING_GROUPS}
    tables = _offline_tables(conn, group_ids)
    # Every side reads the same, vacuumed and analyzed tables (hint bits set, statistics fresh).
    conn.execute(sql.SQL("vacuum analyze {}, bench_spine").format(sql.SQL(", ").join(sql.SQL(t) for t in tables.values())))
    spine_count = conn.execute("select count(*) from bench_spine").fetchone()[0]  # type: ignore[index]

    kinds = ["sql", "pandas", "duckdb"]
    prog.update(task, description="training set: ml.create_training_set vs pandas vs DuckDB", completed=0,
                total=len(kinds) * repeats)
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    check: dict[str, Any] = {}
    check_duckdb: dict[str, Any] = {}
    pending: dict[str, Any] = {}
    for rep in range(repeats):
        for kind in _rotate(kinds, rep):
            prog.update(task, description=f"training set: {kind} (run {rep + 1}/{repeats})")
            _checkpoint(conn)
            if kind == "sql":
                dataset, table, run = _sql_training_set(conn, rep)
                if rep == 0:
                    pending["sql"] = table
                else:
                    conn.execute("select ml.drop_dataset(%s)", (dataset,))
            else:
                frame, run = (_pandas_training_set if kind == "pandas" else _duckdb_training_set)(conn, tenant, tables)
                run["rows"] = len(frame)
                if rep == 0:
                    pending[kind] = frame
                del frame
            runs[kind].append({"repeat": rep, **run})
            prog.advance(task)
        if rep == 0:
            check = _compare(conn, pending.pop("sql"), pending["pandas"])
            check_duckdb = _compare_frames(pending.pop("duckdb"), pending.pop("pandas"))
    # Where ml.create_training_set spends its time: one more, untimed run, with auto_explain.
    prog.update(task, description="training set: statement breakdown")
    with StatementTimes(conn) as st:
        dataset, _table, _run = _sql_training_set(conn, repeats)
    conn.execute("select ml.drop_dataset(%s)", (dataset,))
    sweep = _plan_sweep(conn, plan_sweep, prog, task) if plan_sweep else []
    seconds = {k: median([r["seconds"] for r in runs[k]]) for k in kinds}
    speedups = {peer: [p["seconds"] / s["seconds"] for s, p in zip(runs["sql"], runs[peer], strict=True)]
                for peer in ("pandas", "duckdb")}
    prog.update(task, description=f"training set: SQL {seconds['sql']:.1f} s, pandas {seconds['pandas']:.1f} s, "
                                  f"DuckDB {seconds['duckdb']:.1f} s")
    return {"entities": entities, "feature_rows": total_rows, "spine_rows": int(spine_count), "load": load,
            "groups": [{"name": n, "ttl": t, "features": [f for f, *_ in fs]} for n, t, fs in TRAINING_GROUPS],
            "pandas_load": "COPY (typed select, times as epoch microseconds) TO STDOUT as CSV -> pandas.read_csv(engine='pyarrow')",
            "duckdb_load": "the same COPY -> pyarrow.csv.read_csv -> DuckDB over the Arrow tables",
            "repeats": repeats, "sql_seconds_median": seconds["sql"], "pandas_seconds_median": seconds["pandas"],
            "duckdb_seconds_median": seconds["duckdb"],
            "speedup": {"median": round(median(speedups["pandas"]), 3), "runs": [round(x, 3) for x in speedups["pandas"]]},
            "speedup_vs_duckdb": {"median": round(median(speedups["duckdb"]), 3), "runs": [round(x, 3) for x in speedups["duckdb"]]},
            "check": check, "check_duckdb": check_duckdb, "plan_sweep": sweep, "sql_statements": st.statements[:12], "runs": runs}


# -- 3. online lookups ---------------------------------------------------------------------------


def _lookup_loop(conn: Conn, refs: list[str], keys: list[str], per_call: int, warm: int) -> sql.Composed:
    """A DO block timing ``ml.get_online_features`` in the database: ``warm`` untimed calls (plans
    cached, pages in shared buffers), then one call per ``per_call`` consecutive keys, each timed
    with clock_timestamp(), into _bench_online_ms."""
    body = sql.SQL("""
declare
    v_refs text[] := {refs};
    v_keys text[] := {keys};
    v_n    int := {per_call};
    v_t    timestamptz;
    v_ms   float8[] := '{{}}';
begin
    for i in 1 .. {warm} loop
        perform * from ml.get_online_features(v_refs, v_keys[1 + (i * v_n % cardinality(v_keys))
                                                             : (i * v_n % cardinality(v_keys)) + v_n]);
    end loop;
    for i in 0 .. cardinality(v_keys) / v_n - 1 loop
        v_t := clock_timestamp();
        perform * from ml.get_online_features(v_refs, v_keys[i * v_n + 1 : i * v_n + v_n]);
        v_ms := v_ms || extract(epoch from clock_timestamp() - v_t)::float8 * 1000;
    end loop;
    insert into _bench_online_ms select n, ms from unnest(v_ms) with ordinality u (ms, n);
end""").format(refs=sql.Literal(refs), keys=sql.Literal(keys), per_call=sql.Literal(per_call), warm=sql.Literal(warm))
    return sql.SQL("do {}").format(sql.Literal(body.as_string(conn)))


def run_online(conn: Conn, entities: int, lookups: int, prog: Progress) -> dict[str, Any]:
    task = prog.add_task(f"online: ingesting {len(ONLINE_GROUPS)} groups × {entities:,} entities", total=6)
    rng = np.random.default_rng(3)
    now_us = int((np.datetime64("now", "us") - BASE) / np.timedelta64(1, "us"))
    ids = np.arange(entities)
    refs: list[str] = []
    tables: list[str] = []
    for name, ttl, feats in ONLINE_GROUPS:
        schema = []
        cols: dict[str, Any] = {"customer_id": _keys(ids), "event_time": _iso(now_us - rng.integers(0, 86_400_000_000, entities))}
        for fname, dtype in feats:
            spec: dict[str, Any] = {"name": fname, "dtype": dtype}
            if dtype == "float":
                spec["min"] = 0
                cols[fname] = np.round(rng.gamma(2.0, 50.0, entities), 4)
            elif dtype == "int":
                spec |= {"min": 0, "max": 1000}
                cols[fname] = rng.integers(0, 1001, entities)
            elif dtype == "category":
                spec["allowed"] = SEGMENTS
                cols[fname] = np.array(SEGMENTS)[rng.integers(0, len(SEGMENTS), entities)]
            else:
                cols[fname] = rng.random(entities) < 0.5
            schema.append(spec)
            refs.append(f"{name}:{fname}")
        group_id = features.create_group(conn, name, "customer", schema, ttl=ttl, join_key="customer_id")
        features.ingest(conn, name, pd.DataFrame(cols))
        tables.append(conn.execute("select online_table::text from ml.feature_groups where id = %s", (group_id,)).fetchone()[0])  # type: ignore[index]
        prog.advance(task)
    conn.execute(sql.SQL("vacuum analyze {}").format(sql.SQL(", ").join(map(sql.SQL, tables))))
    keys = [str(k) for k in _keys(rng.integers(0, entities, lookups))]
    sample = features.online_features(conn, refs, keys[:1])[keys[0]]
    if len(sample) != len(refs) or any(v is None for v in sample.values()):
        raise RuntimeError(f"online lookup returned {sample}")

    # In the database: each call timed with clock_timestamp() inside a PL/pgSQL loop.
    prog.update(task, description=f"online: {lookups} lookups of 1 key in the database")
    conn.execute("create temp table _bench_online_ms (n int, ms float8)")
    one_key = _lookup_loop(conn, refs, keys, 1, min(200, lookups))
    conn.execute(one_key)
    server_ms = [float(r[0]) for r in conn.execute("select ms from _bench_online_ms order by n")]
    prog.advance(task)
    # 100 keys in one call: as many calls as the keys make (at least 50).
    prog.update(task, description="online: lookups of 100 keys in the database")
    conn.execute("truncate _bench_online_ms")
    many = [str(k) for k in _keys(rng.integers(0, entities, 100 * max(50, lookups // 20)))]
    conn.execute(_lookup_loop(conn, refs, many, 100, 20))
    server_100_ms = [float(r[0]) for r in conn.execute("select ms from _bench_online_ms order by n")]
    prog.advance(task)
    # Where a lookup's time goes: the 1-key loop again, with per-function times (not in the figures above).
    conn.execute("truncate _bench_online_ms")
    with FunctionTimes(conn) as ft:
        conn.execute(one_key)
    calls = ft.ms.get("ml.get_online_features", {}).get("calls") or 1
    per_call = {name: {"calls_per_lookup": round(v["calls"] / calls, 2), "total_ms_per_lookup": round(v["total_ms"] / calls, 4),
                       "self_ms_per_lookup": round(v["self_ms"] / calls, 4)} for name, v in ft.ms.items()}
    # And the plan of the lookup's own query (EXPLAIN ANALYZE of the nested statements of one call).
    with StatementTimes(conn, 0, analyze=True) as st:
        features.online_features(conn, refs, keys[:1])
    lookup = next((r for r in st.statements
                   if any(re.search(r"Scan (using \S+ )?on \S+_online\b", line) for line in r["plan"].splitlines())), None)
    prog.advance(task)

    # For reference: the client's round trip (prepared statement, one connection, no pool).
    prog.update(task, description=f"online: {lookups} lookups from Python")
    query = "select entity_key, values from ml.get_online_features(%s, %s)"
    for k in keys[:min(200, lookups)]:
        conn.execute(query, (refs, [k]), prepare=True).fetchall()
    client_ms: list[float] = []
    for k in keys:
        t0 = time.perf_counter()
        conn.execute(query, (refs, [k]), prepare=True).fetchall()
        client_ms.append((time.perf_counter() - t0) * 1000)
    prog.advance(task)
    s = summarize(server_ms)
    prog.update(task, description=f"online: p50 {s['p50']:.3f} ms in the database")
    return {"entities_per_group": entities, "lookups": lookups, "features": refs, "keys_per_call": 1,
            "server_ms": s, "server_ms_100_keys": summarize(server_100_ms), "calls_100_keys": len(server_100_ms),
            "client_roundtrip_ms": summarize(client_ms), "functions_per_lookup": per_call,
            "lookup_query_plan": lookup["plan"] if lookup else None}


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.features", description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--database-url", help="server to use (default: PGMLOPS_BENCH_DATABASE_URL, "
                    "DATABASE_URL, else the embedded PostgreSQL); a fresh database is made on it")
    ap.add_argument("--ingest-rows", type=int, help="rows in the ingestion CSV (default 1,000,000; --quick 100,000)")
    ap.add_argument("--feature-rows", type=int, help="feature rows for the training set, both groups "
                    "(default 5,000,000; --quick 500,000)")
    ap.add_argument("--spine-rows", type=int, help="spine rows (default 1,000,000; --quick 100,000)")
    ap.add_argument("--entities", type=int, help="entities of the training set (default feature rows / 50)")
    ap.add_argument("--online-entities", type=int, help="entities per online group (default 100,000; --quick 10,000)")
    ap.add_argument("--lookups", type=int, help="timed online lookups (default 2000; --quick 500)")
    ap.add_argument("--repeats", type=int, help="runs per ingestion and training set variant, median "
                    "reported (default 3; --quick 1)")
    ap.add_argument("--feature-load", choices=["ingest", "copy"], default="ingest",
                    help="how the training set's feature rows get in: pgmlops.features.ingest (validated, "
                    "default) or COPY + INSERT straight into each group's offline table")
    ap.add_argument("--plan-sweep", default="", help="comma-separated spine sizes at which the training set is also "
                    "built with each join plan forced (probe, merge), e.g. 25000,100000,250000,500000")
    ap.add_argument("--parts", default="ingest,training,online", help="which parts to run (default all three)")
    ap.add_argument("--quick", action="store_true", help="small sizes for a fast sanity run")
    ap.add_argument("--output", default="features", help="results name: bench/results/<name>.json")
    args = ap.parse_args(argv)
    args.ingest_rows = args.ingest_rows or (100_000 if args.quick else 1_000_000)
    args.feature_rows = args.feature_rows or (500_000 if args.quick else 5_000_000)
    args.spine_rows = args.spine_rows or (100_000 if args.quick else 1_000_000)
    args.entities = args.entities or max(1, args.feature_rows // 50)
    args.online_entities = args.online_entities or (10_000 if args.quick else 100_000)
    args.lookups = args.lookups or (500 if args.quick else 2000)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    args.plan_sweep = [int(x) for x in args.plan_sweep.split(",") if x.strip()]
    unknown = set(args.parts) - {"ingest", "training", "online"}
    if unknown:
        ap.error(f"--parts: unknown {sorted(unknown)} (ingest, training, online)")
    return args


def build_goals(results: dict[str, Any]) -> list[Goal]:
    goals: list[Goal] = []
    if ing := results.get("ingest"):
        med, n, reps = ing["rows_per_s_median"], ing["file"]["rows"], ing["repeats"]
        runs = ing["runs"]
        unval = runs["unvalidated"]
        goals += [
            Goal("ingest: validated", med["validated"], "rows/s", digits=0,
                 note=f"pgmlops.features.ingest of a {n:,}-row CSV, 6 features with rules; median of {reps}"),
            Goal("ingest: raw COPY", med["raw_copy"], "rows/s", digits=0, note="typed table, no constraints, no index"),
            Goal("ingest: unvalidated", med["unvalidated"], "rows/s", digits=0,
                 note=f"COPY to typed temp {median([r['copy_s'] for r in unval]):.1f} s + INSERT into the offline table "
                      f"{median([r['offline_insert_s'] for r in unval]):.1f} s + newest rows into the online table "
                      f"{median([r['online_insert_s'] for r in unval]):.1f} s"),
            Goal("ingest: COPY into the offline table", med["copy_into_storage"], "rows/s", digits=0,
                 note="the file straight into a version's offline table (typed, primary key, partitioned): the storage's floor"),
            Goal("ingest: validated / raw COPY", ing["ratio_validated_to_raw_copy"]["median"], "x", INGEST_RATIO_GOAL, digits=2,
                 note="median of per-repeat ratios " + _runs_text(ing["ratio_validated_to_raw_copy"]["runs"])),
            Goal("ingest: unvalidated / raw COPY", ing["ratio_unvalidated_to_raw_copy"]["median"], "x", UNVALIDATED_RATIO_GOAL,
                 digits=2, note="median of per-repeat ratios " + _runs_text(ing["ratio_unvalidated_to_raw_copy"]["runs"])
                 + f"; without the online table {ing['ratio_unvalidated_without_online_to_raw_copy']['median']:.2f}"),
            Goal("ingest: COPY into the offline table / raw COPY", ing["ratio_copy_into_storage_to_raw_copy"]["median"], "x",
                 digits=2, note="what the primary key, the partitioning and the row's extra columns cost a plain COPY "
                 + _runs_text(ing["ratio_copy_into_storage_to_raw_copy"]["runs"])),
            Goal("ingest: validated / unvalidated", ing["ratio_validated_to_unvalidated"]["median"], "x", digits=2,
                 note="the cost of parsing text in SQL and checking every rule "
                 + _runs_text(ing["ratio_validated_to_unvalidated"]["runs"])),
        ]
        staged = median([r["ml_ingest_staged_s"] for r in runs["validated"]])
        if not np.isnan(staged):
            total = median([r["seconds"] for r in runs["validated"]])
            goals.append(Goal("ingest: validated, time in ml.ingest_staged", 100 * staged / total, "%", digits=0,
                              note=f"{staged:.1f} s of {total:.1f} s; the rest is the COPY into the stage table (text columns); "
                                   f"fast path taken in {sum(bool(r.get('fast_path')) for r in runs['validated'])} of {reps} runs"))
        if ing.get("validated_statements"):
            goals.append(Goal("ingest: validated, slowest statements", None,
                              note=_statements_text(ing["validated_statements"]) + " (separate run, auto_explain)"))
        if (m := ing.get("memory")) and "client_peak_rss_mib" in m:
            goals += [
                Goal("ingest: client peak memory", m["client_peak_rss_mib"], "MiB", digits=0, lower_is_better=True,
                     note=f"peak RSS of a process ingesting the {m['file_mib']:.0f} MiB file; "
                          f"+{m['client_peak_increase_mib']} MiB over its {m['client_rss_before_mib']} MiB before (streamed)"),
                Goal("ingest: server backend peak memory", m["server_backend_private_peak_mib"], "MiB", digits=0,
                     lower_is_better=True,
                     note=f"private memory (RssAnon, sampled every 10 ms; {m['server_backend_private_before_mib']} MiB before); "
                          f"peak resident set {m['server_backend_peak_rss_mib']} MiB counts the shared buffers it touched"),
            ]
    if tr := results.get("training"):
        c, cd = tr["check"], tr["check_duckdb"]
        runs = tr["runs"]
        plans = ", ".join(f"{g} {p}" for g, p in runs["sql"][0].get("plans", {}).items())
        goals += [
            Goal("training set: ml.create_training_set", tr["sql_seconds_median"], "s", digits=2,
                 note=f"{tr['spine_rows']:,} spine rows over {tr['feature_rows']:,} feature rows, 2 groups × 3 features "
                      f"(plans: {plans}); median of {tr['repeats']}"),
            Goal("training set: pandas (load + merge_asof)", tr["pandas_seconds_median"], "s", digits=2,
                 note=f"load {median([r['load_s'] for r in runs['pandas']]):.1f} s (COPY as CSV -> read_csv pyarrow), "
                      f"merge {median([r['merge_s'] for r in runs['pandas']]):.1f} s"),
            Goal("training set: DuckDB (load + ASOF JOIN)", tr["duckdb_seconds_median"], "s", digits=2,
                 note=f"load {median([r['load_s'] for r in runs['duckdb']]):.1f} s (the same COPY -> pyarrow), "
                      f"join {median([r['join_s'] for r in runs['duckdb']]):.1f} s, DuckDB {runs['duckdb'][0].get('duckdb')}"),
            Goal("training set: speedup vs pandas", tr["speedup"]["median"], "x", TRAINING_SPEEDUP_GOAL, digits=2,
                 note="pandas time / SQL time, median of per-repeat ratios " + _runs_text(tr["speedup"]["runs"])),
            Goal("training set: speedup vs DuckDB", tr["speedup_vs_duckdb"]["median"], "x", digits=2,
                 note="DuckDB time / SQL time, median of per-repeat ratios " + _runs_text(tr["speedup_vs_duckdb"]["runs"])),
            Goal("training set: rows equal to pandas", 100 * c["rows_with_equal_values"] / max(c["rows_ours"], c["rows_pandas"], 1),
                 "%", 100, digits=4, note=f"{c['rows_ours']:,} rows in SQL, {c['rows_pandas']:,} in pandas, compared on every value; "
                                f"rows without a value in TTL (NULL): "
                                + ", ".join(f"{g} {n:,}" for g, n in c["null_features"].items())),
            Goal("training set: DuckDB rows equal to pandas",
                 100 * cd["rows_with_equal_values"] / max(cd["rows_ours"], cd["rows_pandas"], 1), "%", digits=4,
                 note=f"{cd['rows_ours']:,} rows in DuckDB, compared on every value"),
        ]
        b = runs["sql"][0].get("breakdown_s", {})
        if b and not any(np.isnan(v) for v in b.values()):
            share = 100 * b["point_in_time_join_and_write"] / runs["sql"][0]["seconds"]
            goals.append(Goal("training set: SQL, point-in-time join + write", share, "%", digits=0,
                              note=f"run 1: spine copy {b['spine_to_temp_table']:.1f} s, join + write "
                                   f"{b['point_in_time_join_and_write']:.1f} s, content hash {b['content_hash']:.1f} s"))
        if tr.get("sql_statements"):
            goals.append(Goal("training set: SQL, slowest statements", None,
                              note=_statements_text(tr["sql_statements"]) + " (separate run, auto_explain)"))
        for p in tr.get("plan_sweep") or []:
            goals.append(Goal(f"training set: {p['spine_rows']:,}-row spine, merge / probe", p["merge_s"] / p["probe_s"], "x",
                              digits=2, lower_is_better=True,
                              note=f"probe {p['probe_s']:.2f} s, merge {p['merge_s']:.2f} s "
                                   f"({tr['feature_rows'] // len(TRAINING_GROUPS) / p['spine_rows']:.1f} group rows per spine row)"))
    if on := results.get("online"):
        s, c, h = on["server_ms"], on["client_roundtrip_ms"], on["server_ms_100_keys"]
        goals += [
            Goal("online lookup p50 (in the database)", s["p50"], "ms", ONLINE_P50_GOAL_MS, lower_is_better=True, digits=3,
                 note=f"1 key, 10 features over 2 groups, {on['lookups']} calls timed with clock_timestamp()"),
            Goal("online lookup p99 (in the database)", s["p99"], "ms", lower_is_better=True, digits=3),
            Goal("online lookup, 100 keys per call, p50", h["p50"], "ms", lower_is_better=True, digits=3,
                 note=f"10 features over 2 groups, {on['calls_100_keys']} calls in the database: "
                      f"{1000 * h['p50'] / 100:.1f} µs per key; p99 {h['p99']:.3f} ms"),
            Goal("online lookup p50 (client round trip)", c["p50"], "ms", lower_is_better=True, digits=3,
                 note="Python, prepared statement, same host"),
            Goal("online lookup p99 (client round trip)", c["p99"], "ms", lower_is_better=True, digits=3),
        ]
        f = on.get("functions_per_lookup") or {}
        if f:
            top = sorted(f.items(), key=lambda kv: -kv[1]["self_ms_per_lookup"])[:4]
            per_call = f.get("ml.get_online_features", {}).get("total_ms_per_lookup")
            goals.append(Goal("online lookup: time per call by function", per_call, "ms", digits=3, note="self time: " + "; ".join(
                                  f"{n.split('.')[-1]} ×{v['calls_per_lookup']:g} {v['self_ms_per_lookup']:.3f} ms" for n, v in top)
                              + " (separate loop, track_functions)"))
        plan = on.get("lookup_query_plan") or ""
        scans = [line.strip().split("  (")[0].lstrip("-> ") for line in plan.splitlines()
                 if re.search(r"Scan (using \S+ )?on \S+_online\b", line)]
        if scans:
            goals.append(Goal("online lookup: how an online table is read", None,
                              note=f"{scans[0]} (EXPLAIN ANALYZE of the lookup's query; full plan in the results file)"))
    return goals


def _statements_text(statements: Sequence[dict[str, Any]], top: int = 4) -> str:
    """'<first words of the statement> <s>; ...' for the slowest nested statements."""
    nested = [r for r in statements if not r["statement"].lower().startswith("select ml.")]
    return "; ".join(f"{' '.join(r['statement'].split()[:5])[:48]}… {r['ms'] / 1000:.2f} s" for r in nested[:top])


def _runs_text(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.2f}" for v in values) + ")"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server = resolve_bench_url(args.database_url)
    params = {"ingest_rows": args.ingest_rows, "feature_rows": args.feature_rows, "spine_rows": args.spine_rows,
              "entities": args.entities, "online_entities": args.online_entities, "lookups": args.lookups,
              "repeats": args.repeats, "feature_load": args.feature_load, "parts": args.parts, "quick": args.quick,
              "server": redact(server), "load_average_at_start": os.getloadavg()}
    console.print(f"[bold]pgmlops feature store benchmark[/] on {redact(server)}: ingestion of {args.ingest_rows:,} rows, "
                  f"a training set of {args.spine_rows:,} spine rows over {args.feature_rows:,} feature rows, "
                  f"{args.lookups} online lookups; {args.repeats} runs per variant")
    t_start = time.perf_counter()
    results: dict[str, Any] = {}
    with fresh_database(server) as url, psycopg.connect(url, autocommit=True) as conn, \
            tempfile.TemporaryDirectory(prefix="pgmlops_bench_") as tmp:
        tenant = make_tenant(conn, "bench")
        info = machine_info(conn)
        with progress() as prog:
            if "ingest" in args.parts:
                results["ingest"] = run_ingestion(conn, url, tenant, args.ingest_rows, args.repeats, Path(tmp), prog)
            if "training" in args.parts:
                results["training"] = run_training(conn, tenant, args.entities, args.feature_rows, args.spine_rows,
                                                   args.repeats, args.feature_load, prog, args.plan_sweep)
            if "online" in args.parts:
                results["online"] = run_online(conn, args.online_entities, args.lookups, prog)
    elapsed = time.perf_counter() - t_start
    params["load_average_at_end"] = os.getloadavg()

    goals = build_goals(results)
    settings = info["server_settings"]
    console.print(results_table(
        f"pgmlops feature store ({info['cpu_count']} CPUs, PostgreSQL {settings.get('server_version')}, "
        f"fsync {settings.get('fsync')}, synchronous_commit {settings.get('synchronous_commit')}, "
        f"shared_buffers {settings.get('shared_buffers')}, partitioning "
        f"{'TimescaleDB' if (info.get('capabilities') or {}).get('timescaledb') else 'native'})", goals))
    path = write_results(args.output, {
        "machine": info, "parameters": params, "elapsed_s": round(elapsed, 1), "results": results,
        "goals": [g.as_dict() for g in goals]})
    console.print(f"results: {path} ({elapsed:.0f} s)")
    return 0 if all(g.status != "MISS" for g in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
