"""Queue benchmark: worker throughput and NOTIFY-to-claim latency of the pgmlops job queue.

    python -m bench.queue [--database-url URL] [--jobs N] [--latency-samples M] [--quick]

Throughput: for 1, 2 and 4 worker processes (pgmlops.jobs.worker.WorkerPool) and prefetch 1 and 8, the
pool is started and warmed up (every worker has run a job, so process start-up, connections and
plan caches are out of the measurement); then N no-op ``echo`` jobs are enqueued in one
transaction and the time from that commit to the last job's finish is measured on the server
clock (``max(finished_at)`` minus ``clock_timestamp()`` just before the commit). Each run is
checked: every job succeeded on its first attempt with exactly one ``job.succeeded`` event.
Runs are repeated (``--repeats``) and the median is reported.

Latency: one idle worker (prefetch 1); M single jobs enqueued one at a time (autocommit), each
after the worker has gone back to waiting on LISTEN. NOTIFY-to-claim latency is
``started_at - created_at`` (both server clock: the enqueue's ``now()`` and the claim's
``now()``); end-to-end is ``finished_at - created_at``.

Results: a table against the goals (≥ 2000 jobs/s with 4 workers; p50 NOTIFY-to-claim < 20 ms)
and bench/results/queue.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from datetime import datetime
from typing import Any

import psycopg
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
from pgmlops.jobs.worker import WorkerPool

THROUGHPUT_GOAL = 2000.0  # jobs/s with 4 workers
LATENCY_GOAL_MS = 20.0  # p50 NOTIFY-to-claim
POLL_S = 0.05
RUN_TIMEOUT_S = 300.0

Conn = psycopg.Connection[Any]


# -- helpers -------------------------------------------------------------------------------------


def _status_counts(conn: Conn, first: int, last: int) -> tuple[int, int]:
    """(succeeded, failed|dead|cancelled) among jobs first..last."""
    row = conn.execute(
        "select count(*) filter (where status = 'succeeded'), "
        "       count(*) filter (where status in ('failed', 'dead', 'cancelled')) "
        "from ml.jobs where id between %s and %s", (first, last)).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _wait_drained(conn: Conn, first: int, last: int, prog: Progress | None = None,
                  task: Any = None, *, offset: int = 0, timeout: float = RUN_TIMEOUT_S) -> float:
    """Poll every 50 ms until jobs first..last all succeeded; return the client-side time it
    was seen. Raises RuntimeError when a job failed or on timeout."""
    total = last - first + 1
    deadline = time.monotonic() + timeout
    while True:
        done, bad = _status_counts(conn, first, last)
        if prog is not None and task is not None:
            prog.update(task, completed=offset + done)
        if done == total:
            return time.perf_counter()
        if bad:
            raise RuntimeError(f"{bad} of jobs {first}..{last} failed")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timeout: {done} of {total} jobs succeeded after {timeout:.0f} s")
        time.sleep(POLL_S)


def _enqueue_batch(conn: Conn, n: int) -> tuple[int, int, datetime]:
    """Enqueue n echo jobs in one transaction; (first id, last id, server time just before commit)."""
    with conn.transaction():
        row = conn.execute(
            "with e as (select ml.enqueue('echo', '{}') as id from generate_series(1, %s)) "
            "select min(id), max(id), count(*) from e", (n,)).fetchone()
        assert row is not None and row[2] == n and row[1] - row[0] + 1 == n, row
        t_commit = conn.execute("select clock_timestamp()").fetchone()[0]  # type: ignore[index]
    return int(row[0]), int(row[1]), t_commit


def _worker_connections(conn: Conn) -> int:
    row = conn.execute(
        "select count(*) from pg_stat_activity where datname = current_database() "
        "and application_name like 'pgmlops worker listen'").fetchone()
    return int(row[0]) if row else 0


def _warm_up(conn: Conn, workers: int, timeout: float = 60.0) -> int:
    """Wait until every worker process is connected and has run at least one job (process
    start-up, imports, connections and PL/pgSQL plan caches out of the way). Returns how many
    distinct workers ran a warm-up job."""
    deadline = time.monotonic() + timeout
    while _worker_connections(conn) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {_worker_connections(conn)} of {workers} workers connected")
        time.sleep(0.05)
    seen: set[str] = set()
    while len(seen) < workers and time.monotonic() < deadline:
        first, last, _ = _enqueue_batch(conn, 2 * workers)
        _wait_drained(conn, first, last, timeout=max(1.0, deadline - time.monotonic()))
        seen |= {r[0] for r in conn.execute(
            "select distinct locked_by from ml.jobs where id between %s and %s", (first, last))}
        time.sleep(0.1)
    return len(seen)


def _verify(conn: Conn, first: int, last: int, since: datetime) -> dict[str, Any]:
    """Every job first..last succeeded on attempt 1, with exactly one job.succeeded event."""
    n = last - first + 1
    row = conn.execute(
        "select count(*) filter (where status = 'succeeded' and attempts = 1), "
        "       count(distinct locked_by) "
        "from ml.jobs where id between %s and %s", (first, last)).fetchone()
    assert row is not None
    once, workers_used = int(row[0]), int(row[1])
    ev = conn.execute(
        "select count(*) filter (where c = 1), count(*) filter (where c > 1) from ("
        "  select (payload ->> 'job_id')::bigint as job_id, count(*) as c from ml.events"
        "  where topic = 'job' and event = 'job.succeeded' and created_at >= %s - interval '1 minute'"
        "    and (payload ->> 'job_id')::bigint between %s and %s group by 1) s",
        (since, first, last)).fetchone()
    assert ev is not None
    per_worker = [int(r[0]) for r in conn.execute(
        "select count(*) from ml.jobs where id between %s and %s group by locked_by order by 1",
        (first, last))]
    ok = once == n and int(ev[0]) == n and int(ev[1]) == 0
    return {"ok": ok, "succeeded_first_attempt": once, "one_succeeded_event": int(ev[0]),
            "duplicate_succeeded_events": int(ev[1]), "workers_used": workers_used,
            "jobs_per_worker": per_worker}


# -- throughput ----------------------------------------------------------------------------------


def run_throughput(url: str, conn: Conn, workers: int, prefetch: int, jobs: int, repeats: int,
                   prog: Progress) -> dict[str, Any]:
    label = f"{workers} worker{'s' if workers > 1 else ''}, prefetch {prefetch}"
    task = prog.add_task(f"throughput: {label} (starting)", total=jobs * repeats)
    runs: list[dict[str, Any]] = []
    with WorkerPool(url, ["echo"], workers, prefetch=prefetch, log_level=logging.WARNING):
        warmed = _warm_up(conn, workers)
        for rep in range(repeats):
            prog.update(task, description=f"throughput: {label} (run {rep + 1}/{repeats})")
            first, last, t_commit = _enqueue_batch(conn, jobs)
            t_client0 = time.perf_counter()
            base = rep * jobs
            done_at = _wait_drained(conn, first, last, prog, task, offset=base)
            prog.update(task, completed=base + jobs)
            row = conn.execute(
                "select extract(epoch from max(finished_at) - %s), extract(epoch from min(started_at) - %s) "
                "from ml.jobs where id between %s and %s", (t_commit, t_commit, first, last)).fetchone()
            assert row is not None
            drain_s, first_claim_s = float(row[0]), float(row[1])
            check = _verify(conn, first, last, t_commit)
            if not check["ok"]:
                raise RuntimeError(f"{label}: verification failed: {check}")
            runs.append({"jobs": jobs, "drain_s": round(drain_s, 4), "jobs_per_s": round(jobs / drain_s, 1),
                         "first_claim_after_ms": round(first_claim_s * 1000, 2),
                         "client_drain_s": round(done_at - t_client0, 3), **check})
    # Leave later configurations a clean, analyzed table rather than an autovacuum mid-run.
    conn.execute("vacuum (analyze) ml.jobs")
    rates = [r["jobs_per_s"] for r in runs]
    prog.update(task, description=f"throughput: {label}: {median(rates):,.0f} jobs/s")
    return {"workers": workers, "prefetch": prefetch, "jobs": jobs, "repeats": repeats,
            "workers_warmed": warmed, "jobs_per_s_median": round(median(rates), 1),
            "jobs_per_s_min": min(rates), "jobs_per_s_max": max(rates), "runs": runs}


# -- latency -------------------------------------------------------------------------------------


def _wait_succeeded(listen: Conn, conn: Conn, job_id: int, timeout: float = 30.0) -> None:
    """Wait for job_id's job.succeeded event on ml_events (falls back to polling)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for n in listen.notifies(timeout=0.2):
            msg = json.loads(n.payload)
            if msg.get("event") == "job.succeeded" and msg.get("data", {}).get("job_id") == job_id:
                return
            if msg.get("event") in ("job.failed", "job.dead") and msg.get("data", {}).get("job_id") == job_id:
                raise RuntimeError(f"latency job {job_id} failed")
        row = conn.execute("select status from ml.jobs where id = %s", (job_id,)).fetchone()
        if row and row[0] == "succeeded":
            return
    raise RuntimeError(f"latency job {job_id} not done after {timeout:.0f} s")


def run_latency(url: str, conn: Conn, samples: int, prog: Progress) -> dict[str, Any]:
    task = prog.add_task("latency: 1 idle worker, prefetch 1 (starting)", total=samples)
    ids: list[int] = []
    client_ms: list[float] = []
    with WorkerPool(url, ["echo"], 1, prefetch=1, log_level=logging.WARNING), \
            psycopg.connect(url, autocommit=True) as listen:
        _warm_up(conn, 1)
        listen.execute("listen ml_events")
        prog.update(task, description="latency: 1 idle worker, prefetch 1")
        for _ in range(samples):
            # Let the worker finish its post-job claim and go back to waiting on LISTEN.
            time.sleep(random.uniform(0.02, 0.04))
            t0 = time.perf_counter()
            row = conn.execute("select ml.enqueue('echo', '{}')").fetchone()
            assert row is not None
            job_id = int(row[0])
            _wait_succeeded(listen, conn, job_id)
            client_ms.append((time.perf_counter() - t0) * 1000)
            ids.append(job_id)
            prog.advance(task)
    rows = conn.execute(
        "select extract(epoch from started_at - created_at) * 1000, "
        "       extract(epoch from finished_at - created_at) * 1000, attempts, status "
        "from ml.jobs where id = any(%s)", (ids,)).fetchall()
    assert all(r[2] == 1 and r[3] == "succeeded" for r in rows) and len(rows) == samples
    claim = [float(r[0]) for r in rows]
    e2e = [float(r[1]) for r in rows]
    return {"samples": samples, "notify_to_claim_ms": summarize(claim), "enqueue_to_succeeded_ms": summarize(e2e),
            "client_roundtrip_ms": summarize(client_ms)}


# -- main ----------------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.queue", description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--database-url", help="server to use (default: PGMLOPS_BENCH_DATABASE_URL, "
                    "DATABASE_URL, else the embedded PostgreSQL); a fresh database is made on it")
    ap.add_argument("--jobs", type=int, help="jobs per throughput run (default 4000; --quick 500)")
    ap.add_argument("--latency-samples", type=int, help="latency samples (default 200; --quick 30)")
    ap.add_argument("--repeats", type=int, help="throughput runs per configuration, median reported "
                    "(default 3; --quick 1)")
    ap.add_argument("--workers", type=_int_list, default=[1, 2, 4], help="worker counts (default 1,2,4)")
    ap.add_argument("--prefetch", type=_int_list, default=[1, 8], help="prefetch values (default 1,8)")
    ap.add_argument("--quick", action="store_true", help="small sizes for a fast sanity run")
    ap.add_argument("--output", default="queue", help="results name: bench/results/<name>.json")
    args = ap.parse_args(argv)
    args.jobs = args.jobs or (500 if args.quick else 4000)
    args.latency_samples = args.latency_samples or (30 if args.quick else 200)
    args.repeats = args.repeats or (1 if args.quick else 3)
    return args


def build_goals(throughput: list[dict[str, Any]], latency: dict[str, Any]) -> list[Goal]:
    goals: list[Goal] = []
    by = {(t["workers"], t["prefetch"]): t for t in throughput}
    max_workers = max(t["workers"] for t in throughput)
    for t in throughput:
        goals.append(Goal(
            f"throughput {t['workers']}w, prefetch {t['prefetch']}",
            t["jobs_per_s_median"], "jobs/s", THROUGHPUT_GOAL if t["workers"] == 4 else None, digits=0,
            note=f"median of {t['repeats']} runs ({t['jobs_per_s_min']:,.0f}–{t['jobs_per_s_max']:,.0f}) "
                 f"of {t['jobs']} jobs"))
    lowest = min(t["workers"] for t in throughput)
    for p in sorted({t["prefetch"] for t in throughput}):
        if max_workers != lowest and (lowest, p) in by and (max_workers, p) in by:
            ratio = by[(max_workers, p)]["jobs_per_s_median"] / by[(lowest, p)]["jobs_per_s_median"]
            goals.append(Goal(f"scaling {max_workers}w / {lowest}w, prefetch {p}", ratio, "x", digits=2,
                              note=f"{os.cpu_count()} CPUs shared by server, workers and this client"))
    prefetches = sorted({t["prefetch"] for t in throughput})
    if len(prefetches) > 1 and all((max_workers, p) in by for p in prefetches):
        lo, hi = prefetches[0], prefetches[-1]
        ratio = by[(max_workers, hi)]["jobs_per_s_median"] / by[(max_workers, lo)]["jobs_per_s_median"]
        goals.append(Goal(f"prefetch {hi} / {lo}, {max_workers}w", ratio, "x", digits=2))
    c, e = latency["notify_to_claim_ms"], latency["enqueue_to_succeeded_ms"]
    goals += [
        Goal("NOTIFY-to-claim p50", c["p50"], "ms", LATENCY_GOAL_MS, lower_is_better=True, digits=2,
             note=f"started_at - created_at, {latency['samples']} samples"),
        Goal("NOTIFY-to-claim p95", c["p95"], "ms", digits=2),
        Goal("NOTIFY-to-claim p99", c["p99"], "ms", digits=2),
        Goal("NOTIFY-to-claim max", c["max"], "ms", digits=2),
        Goal("enqueue-to-succeeded p50", e["p50"], "ms", digits=2, note="finished_at - created_at"),
        Goal("enqueue-to-succeeded p99", e["p99"], "ms", digits=2),
    ]
    return goals


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server = resolve_bench_url(args.database_url)
    params = {"jobs": args.jobs, "latency_samples": args.latency_samples, "repeats": args.repeats,
              "workers": args.workers, "prefetch": args.prefetch, "quick": args.quick,
              "payload": {}, "kind": "echo", "poll_interval_s": POLL_S, "server": redact(server)}
    console.print(f"[bold]pgmlops queue benchmark[/] on {redact(server)}: {args.jobs} jobs × "
                  f"{args.repeats} runs per configuration, {args.latency_samples} latency samples")
    t_start = time.perf_counter()
    with fresh_database(server) as url, psycopg.connect(url, autocommit=True) as conn:
        make_tenant(conn, "bench")
        info = machine_info(conn)
        throughput: list[dict[str, Any]] = []
        with progress() as prog:
            for workers in args.workers:
                for prefetch in args.prefetch:
                    throughput.append(run_throughput(url, conn, workers, prefetch, args.jobs, args.repeats, prog))
            latency = run_latency(url, conn, args.latency_samples, prog)
    elapsed = time.perf_counter() - t_start

    goals = build_goals(throughput, latency)
    console.print(results_table(
        f"pgmlops queue ({info['cpu_count']} CPUs, PostgreSQL {info['server_settings'].get('server_version')}, "
        f"fsync {info['server_settings'].get('fsync')}, synchronous_commit "
        f"{info['server_settings'].get('synchronous_commit')})", goals))
    path = write_results(args.output, {
        "machine": info, "parameters": params, "elapsed_s": round(elapsed, 1),
        "results": {"throughput": throughput, "latency": latency},
        "goals": [g.as_dict() for g in goals]})
    console.print(f"results: {path} ({elapsed:.0f} s)")
    return 0 if all(g.status != "MISS" for g in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
