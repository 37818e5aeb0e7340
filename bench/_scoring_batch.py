"""The batch part of ``bench.scoring``: ``ml.predict_batch`` in the database against the worker path.

The source is a table of ``--batch-rows`` rows (default 1M): an entity key and the 20 features,
each row a copy of one entity's online row (the data the model was trained on, so the trees take
realistic paths), ``VACUUM ANALYZE``d. The model is the 100-tree depth-6 gradient boosting
classifier of the online part. Each path scores every row and writes the result to a table:

- **sql, one statement**: ``create table ... as select * from ml.predict_batch(project, source)``
  (the compiled function inlined in one query, parallel workers allowed);
- **ml.score, path sql** (when ``ml.score`` offers it): the same through the batch scoring job;
- **ml.score, path worker**: a ``score`` job run by one pgmlops worker process (started before
  the call and warmed up: its imports are not counted): COPY the rows out, ``predict_proba`` with
  the registered scikit-learn pipeline, COPY the results in, chunk by chunk.

Reported per path: wall time (from the call to the last row committed, client clock; for jobs also
the server's ``finished_at - created_at``), rows per second, and the rows written (checked equal
to the source's). Which path is faster is the default ``ml.score`` should take (issue 11).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from bench._common import Goal
from bench._scoring_setup import FEATURES, Setup, has_function

SCHEMA = "bench_scoring"
SOURCE = f"{SCHEMA}.batch_source"
JOB_TIMEOUT_S = 3600.0


def build_source(conn: psycopg.Connection[Any], setup: Setup, rows: int) -> float:
    """The source table: ``rows`` copies of online rows, keyed ``b0000001``..; returns seconds."""
    t0 = time.perf_counter()
    columns = sql.SQL(", ").join(sql.SQL("o.{}").format(sql.Identifier(f)) for f in FEATURES)
    schema, table = setup.online_table.split(".", 1)
    conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(SCHEMA)))
    # The callers below are the tenant's service role (tenant_context), as a backend with the
    # service key: they read the source and create their targets in this schema.
    conn.execute(sql.SQL("grant usage, create on schema {} to service_role").format(sql.Identifier(SCHEMA)))
    conn.execute(sql.SQL("drop table if exists {}").format(sql.SQL(SOURCE)))
    conn.execute(sql.SQL(
        "create table {src} as select 'b' || lpad(g::text, 8, '0') as customer_id, {cols} "
        "from generate_series(1, %s) g join {online} o "
        "on o.tenant_id = %s and o.entity_key = 'c' || lpad((((g - 1) %% %s) + 1)::text, 7, '0')").format(
        src=sql.SQL(SOURCE), cols=columns, online=sql.Identifier(schema, table.strip('"'))),
        (rows, setup.tenant, setup.entities))
    conn.execute(sql.SQL("alter table {} add primary key (customer_id)").format(sql.SQL(SOURCE)))
    conn.execute(sql.SQL("grant select on {} to service_role").format(sql.SQL(SOURCE)))
    conn.execute(sql.SQL("vacuum analyze {}").format(sql.SQL(SOURCE)))
    return time.perf_counter() - t0


def _count(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(sql.SQL("select count(*) from {}").format(sql.SQL(table))).fetchone()
    return int(row[0]) if row else 0


def _predict_batch(conn: psycopg.Connection[Any], setup: Setup, project: str, rows: int) -> dict[str, Any]:
    from pgmlops.db import tenant_context

    target = f"{SCHEMA}.out_predict_batch"
    conn.execute(sql.SQL("drop table if exists {}").format(sql.SQL(target)))
    t0 = time.perf_counter()
    with tenant_context(conn, setup.tenant):
        conn.execute(sql.SQL("create table {} as select * from ml.predict_batch(%s, %s)").format(sql.SQL(target)),
                     (project, SOURCE))
    seconds = time.perf_counter() - t0
    written = _count(conn, target)
    sample = conn.execute(sql.SQL("select to_jsonb(t) from {} t limit 1").format(sql.SQL(target))).fetchone()
    return {"path": "ml.predict_batch (one statement)", "seconds": round(seconds, 2),
            "rows_per_s": round(rows / seconds, 0), "rows_written": written, "sample": sample[0] if sample else None}


def _wait_listening(conn: psycopg.Connection[Any], timeout: float = 120.0) -> None:
    """Until a worker's connection waits on LISTEN (it has imported pgmlops and its handlers)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute("select count(*) from pg_stat_activity where datname = current_database() "
                           "and query ilike 'listen%%' and pid <> pg_backend_pid()").fetchone()
        if row and row[0] > 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"no worker listening after {timeout:.0f} s")


def _score_job(conn: psycopg.Connection[Any], setup: Setup, project: str, path: str, rows: int,
               pool: Any, source: str = SOURCE, name: str | None = None) -> dict[str, Any]:
    """``ml.score`` of ``source`` with ``{"path": path}``, run by ``pool``'s one worker process."""
    from pgmlops.db import tenant_context

    target = f"{SCHEMA}.out_score_{name or path}"
    conn.execute(sql.SQL("drop table if exists {}").format(sql.SQL(target)))
    t0 = time.perf_counter()
    with tenant_context(conn, setup.tenant):
        row = conn.execute("select ml.score(%s, %s, %s, %s)",
                           (project, source, target, Jsonb({"path": path}))).fetchone()
    assert row is not None
    job_id = int(row[0])
    while True:
        state = conn.execute(
            "select status, rows_done, rows_total, error, extract(epoch from finished_at - created_at), path "
            "from ml.batch_scorings where job_id = %s", (job_id,)).fetchone()
        if state is not None and state[0] in ("succeeded", "failed"):
            break
        if time.perf_counter() - t0 > JOB_TIMEOUT_S:
            raise RuntimeError(f"ml.score job {job_id} did not finish within {JOB_TIMEOUT_S:.0f} s")
        pool.check()
        time.sleep(0.1)
    seconds = time.perf_counter() - t0
    out: dict[str, Any] = {"path": f"ml.score, path {path}", "job_id": job_id, "status": state[0],
                           "seconds": round(seconds, 2), "server_seconds": None if state[4] is None else round(float(state[4]), 2),
                           "rows_per_s": round(rows / seconds, 0), "rows_done": state[1], "recorded_path": state[5]}
    if state[0] != "succeeded":
        out["error"] = state[3]
    else:
        out["rows_written"] = _count(conn, target)
    return out


def run(setup: Setup, *, rows: int, log: Callable[[str], None]) -> dict[str, Any]:
    model = setup.models["gb"]
    out: dict[str, Any] = {"rows": rows, "model": model.ref, "project": model.project, "runs": []}
    with psycopg.connect(setup.url, autocommit=True) as conn:
        conn.execute("select set_config('pgmlops.tenant_id', %s, false)", (setup.tenant,))
        log(f"  source: {rows:,} rows ...")
        out["source_build_s"] = round(build_source(conn, setup, rows), 2)
        settings = conn.execute("select current_setting('max_parallel_workers_per_gather'), current_setting('jit')").fetchone()
        out["server"] = {"max_parallel_workers_per_gather": settings[0] if settings else None,
                         "jit": settings[1] if settings else None}
        if has_function(conn, "ml.predict_batch"):
            log("  ml.predict_batch ...")
            try:
                out["runs"].append(_predict_batch(conn, setup, model.project, rows))
            except psycopg.Error as exc:
                out["runs"].append({"path": "ml.predict_batch (one statement)",
                                    "error": f"{exc.sqlstate}: {str(exc).splitlines()[0][:300]}"})
        else:
            out["runs"].append({"path": "ml.predict_batch (one statement)", "error": "ml.predict_batch does not exist yet"})
        if not has_function(conn, "ml.score"):
            for path in ("sql", "worker"):
                out["runs"].append({"path": f"ml.score, path {path}", "error": "ml.score does not exist yet"})
        else:
            from pgmlops.jobs import WorkerPool

            with WorkerPool(setup.url, ["score"], 1, poll_interval=0.2, log_level=logging.WARNING) as pool:
                _wait_listening(conn)
                # A long-running worker has its imports paid: a 100-row worker-path job first.
                log("  ml.score warm-up (100 rows, path worker) ...")
                warm = _score_job(conn, setup, model.project, "worker", 100, pool,
                                  source=f"select * from {SOURCE} order by customer_id limit 100", name="warmup")
                out["warmup"] = warm
                for path in ("sql", "worker"):
                    log(f"  ml.score, path {path} ...")
                    try:
                        out["runs"].append(_score_job(conn, setup, model.project, path, rows, pool))
                    except psycopg.Error as exc:
                        out["runs"].append({"path": f"ml.score, path {path}",
                                            "error": f"{exc.sqlstate}: {str(exc).splitlines()[0][:300]}"})
    done = [r for r in out["runs"] if "error" not in r and r.get("rows_written") == rows]
    for r in out["runs"]:
        if "error" not in r and r.get("rows_written") != rows:
            r["error"] = f"wrote {r.get('rows_written')} rows of {rows}"
    if done:
        fastest = min(done, key=lambda r: r["seconds"])
        out["fastest"] = fastest["path"]
        # ml.score's default is between its two paths: the job with path sql against the job with
        # path worker (ml.predict_batch, one statement with no job, when the sql job did not run).
        by_path = {r["path"]: r for r in done}
        sql_run = by_path.get("ml.score, path sql") or by_path.get("ml.predict_batch (one statement)")
        worker_run = by_path.get("ml.score, path worker")
        if sql_run and worker_run:
            out["compared"] = [sql_run["path"], worker_run["path"]]
            out["worker_over_sql_seconds"] = round(worker_run["seconds"] / sql_run["seconds"], 2)
            out["default_should_be"] = "sql" if sql_run["seconds"] <= worker_run["seconds"] else "worker"
    return out


def table(result: dict[str, Any]) -> Any:
    from rich.table import Table

    t = Table(title=f"Batch: {result['rows']:,} rows, {result['model']} (100 trees, depth 6)", title_justify="left")
    for col in ("path", "wall s", "server s", "rows/s", "rows written", "note"):
        t.add_column(col, justify="left" if col in ("path", "note") else "right")
    for r in result["runs"]:
        if "error" in r:
            t.add_row(r["path"], "", "", "", "", f"[red]{str(r['error'])[:90]}[/]")
            continue
        t.add_row(r["path"], f"{r['seconds']:,.1f}", "" if r.get("server_seconds") is None else f"{r['server_seconds']:,.1f}",
                  f"{r['rows_per_s']:,.0f}", f"{r.get('rows_written', 0):,}",
                  "fastest" if r["path"] == result.get("fastest") else "")
    return t


def goals(result: dict[str, Any]) -> list[Goal]:
    """No numeric goal: the faster path is what ``ml.score`` should default to (reported)."""
    ratio = result.get("worker_over_sql_seconds")
    return [Goal("batch: ml.score worker path time / sql path time", ratio, "x", digits=2,
                 note=f"ml.score should default to {result.get('default_should_be', '?')} "
                      f"(fastest: {result.get('fastest', 'n/a')})")]

