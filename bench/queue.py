"""Queue benchmark: worker throughput and NOTIFY-to-claim latency of the pgmlops job queue.

    python -m bench.queue [--database-url URL] [--jobs N] [--latency-samples M] [--quick]

Throughput, two paths for the same no-op ``echo`` handler:

* *batched*: echo as shipped, a handler that writes nothing transactional; workers run a claim's
  jobs (``--batch``, the prefetch) and acknowledge them with one ``ml.complete_jobs``;
* *transactional*: echo registered as a transactional handler (bench/_echo_transactional.py),
  each job in its own transaction committed with its completion (``--prefetch`` 1 and 8).

For each path and 1, 2 and 4 worker processes (pgmlops.jobs.worker.WorkerPool), the pool is
started and warmed up (every worker has run a job, so process start-up, connections and plan
caches are out of the measurement); then N jobs are enqueued in one transaction and the time from
that commit to the last job's finish is measured on the server clock (``max(finished_at)`` minus
``clock_timestamp()`` just before the commit). Each run is checked: every job succeeded on its
first attempt with exactly one ``job.succeeded`` event; the transactions that completed them are
counted (distinct ``xmin``). Runs are repeated (``--repeats``) and the median is reported.

CPU profile of each run (Linux, server on this machine): CPU seconds of the database's backends
(server) and of the worker processes (client), per job, and the cores busy with anything else on
the machine during the run (``/proc``), to tell a saturated machine from a slow queue.

Latency: one idle worker (prefetch 1); M single jobs enqueued one at a time (autocommit), each
after the worker has gone back to waiting on LISTEN. NOTIFY-to-claim latency is
``started_at - created_at`` (both server clock: the enqueue's ``now()`` and the claim's
``now()``); end-to-end is ``finished_at - created_at``.

Results: a table against the goals (≥ 2000 jobs/s with 4 workers on the batched path; p50
NOTIFY-to-claim < 20 ms) and bench/results/queue.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
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
from pgmlops.db import sql_errors, tenant_context
from pgmlops.jobs import queue
from pgmlops.jobs.worker import WorkerPool

THROUGHPUT_GOAL = 2000.0  # jobs/s with 4 workers, batched path
LATENCY_GOAL_MS = 20.0  # p50 NOTIFY-to-claim
POLL_S = 0.05
RUN_TIMEOUT_S = 300.0

Conn = psycopg.Connection[Any]

# The transactional path: workers import this module, which registers echo as transactional.
PATH_MODULES: dict[str, list[str] | None] = {"batched": None, "transactional": ["bench._echo_transactional"]}


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


# -- CPU profile (/proc) ----------------------------------------------------------------------------


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) of process ``pid``; None when unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK


def _machine_busy() -> float | None:
    """CPU seconds all CPUs spent busy (anything but idle and iowait) since boot."""
    try:
        with open("/proc/stat") as f:
            cpu = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(cpu[:8]) - cpu[3] - cpu[4]) / _TICK


def _is_local_postgres(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().startswith(b"postgres")
    except OSError:
        return False


# The workers' connections by application_name: the one that runs jobs, the one that LISTENs (woken
# by every commit that notifies anything in the database), the heartbeat's.
_BACKEND_ROLES = {"pgmlops worker listen": "listen", "pgmlops heartbeat": "heartbeat"}


class CpuProfile:
    """CPU seconds of the database's backends (by role), of the worker processes, of the machine."""

    def __init__(self, conn: Conn, pool: WorkerPool) -> None:
        rows = conn.execute("select pid, application_name from pg_stat_activity "
                            "where datname = current_database() and pid <> pg_backend_pid()").fetchall()
        self.backends = {int(pid): _BACKEND_ROLES.get(name, "work") for pid, name in rows
                         if _is_local_postgres(int(pid))}
        self.available = bool(rows) and len(self.backends) == len(rows) and _machine_busy() is not None
        self.workers = pool.pids()
        self.client = os.getpid()
        self.own_backend = conn.info.backend_pid

    def snapshot(self) -> dict[str, float]:
        def total(pids: list[int]) -> float:
            return sum(v for pid in pids if (v := _process_cpu(pid)) is not None)
        snap = {f"server_{role}": total([p for p, r in self.backends.items() if r == role])
                for role in ("work", "listen", "heartbeat")}
        return {**snap, "workers": total(self.workers), "bench": total([self.client, self.own_backend]),
                "machine": _machine_busy() or 0.0, "wall": time.perf_counter()}

    def per_job(self, before: dict[str, float], after: dict[str, float], jobs: int) -> dict[str, float] | None:
        if not self.available:
            return None
        d = {k: after[k] - before[k] for k in before}
        server = d["server_work"] + d["server_listen"] + d["server_heartbeat"]
        other = max(0.0, d["machine"] - server - d["workers"] - d["bench"])
        return {"server_us_per_job": round(server * 1e6 / jobs, 1),
                "server_listen_us_per_job": round(d["server_listen"] * 1e6 / jobs, 1),
                "workers_us_per_job": round(d["workers"] * 1e6 / jobs, 1),
                "busy_cores": round(d["machine"] / d["wall"], 2),
                "other_cores": round(other / d["wall"], 2)}


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
    # The transactions that wrote the jobs' final rows: one per job, or one per batch.
    commits = int(conn.execute("select count(distinct xmin::text) from ml.jobs where id between %s and %s",
                               (first, last)).fetchone()[0])  # type: ignore[index]
    ok = once == n and int(ev[0]) == n and int(ev[1]) == 0
    return {"ok": ok, "succeeded_first_attempt": once, "one_succeeded_event": int(ev[0]),
            "duplicate_succeeded_events": int(ev[1]), "workers_used": workers_used,
            "jobs_per_worker": per_worker, "completing_transactions": commits}


# -- throughput ----------------------------------------------------------------------------------


def run_throughput(url: str, conn: Conn, path: str, workers: int, prefetch: int, jobs: int, repeats: int,
                   prog: Progress) -> dict[str, Any]:
    label = f"{path}, {workers} worker{'s' if workers > 1 else ''}, {_prefetch_name(path)} {prefetch}"
    task = prog.add_task(f"throughput: {label} (starting)", total=jobs * repeats)
    runs: list[dict[str, Any]] = []
    with WorkerPool(url, ["echo"], workers, prefetch=prefetch, modules=PATH_MODULES[path],
                    log_level=logging.WARNING) as pool:
        warmed = _warm_up(conn, workers)
        profile = CpuProfile(conn, pool)
        for rep in range(repeats):
            prog.update(task, description=f"throughput: {label} (run {rep + 1}/{repeats})")
            first, last, t_commit = _enqueue_batch(conn, jobs)
            cpu_before = profile.snapshot()
            t_client0 = time.perf_counter()
            base = rep * jobs
            done_at = _wait_drained(conn, first, last, prog, task, offset=base)
            cpu = profile.per_job(cpu_before, profile.snapshot(), jobs)
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
                         "client_drain_s": round(done_at - t_client0, 3), "cpu": cpu, **check})
    # Leave later configurations a clean, analyzed table rather than an autovacuum mid-run.
    conn.execute("vacuum (analyze) ml.jobs")
    rates = [r["jobs_per_s"] for r in runs]
    prog.update(task, description=f"throughput: {label}: {median(rates):,.0f} jobs/s")
    cpus = [r["cpu"] for r in runs if r["cpu"]]
    cpu_median = {k: round(median([c[k] for c in cpus]), 2) for k in cpus[0]} if cpus else None
    return {"path": path, "workers": workers, "prefetch": prefetch, "jobs": jobs, "repeats": repeats,
            "workers_warmed": warmed, "jobs_per_s_median": round(median(rates), 1),
            "jobs_per_s_min": min(rates), "jobs_per_s_max": max(rates),
            "jobs_per_commit_median": round(median([r["jobs"] / r["completing_transactions"] for r in runs]), 1),
            "cpu_median": cpu_median, "runs": runs}


def _prefetch_name(path: str) -> str:
    return "batch" if path == "batched" else "prefetch"


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


# -- the transactional path's statements, variant by variant --------------------------------------
#
# What one worker sends per job on the transactional path, without the worker around it: one
# connection, jobs claimed and completed in a loop, each completion in a tenant_context
# transaction (BEGIN, set_config, ml.complete_job, COMMIT). Wall time, the client thread's CPU and
# the backend's CPU per job tell what each way of saving round trips or commits costs and saves.


def _complete_in_context(conn: Conn, job: queue.Job, worker_id: str, claim_next: int = 0) -> list[queue.Job] | None:
    with tenant_context(conn, job.tenant_id):
        queue.complete(conn, job.id, worker_id, {"echo": job.payload})
        return queue.claim(conn, worker_id, ["echo"], claim_next) if claim_next else None


def _claim_apart(conn: Conn, worker_id: str, prefetch: int) -> int:
    done = 0
    while jobs := queue.claim(conn, worker_id, ["echo"], prefetch):
        for job in jobs:
            _complete_in_context(conn, job, worker_id)
        done += len(jobs)
    return done


def _claim_with_last_completion(conn: Conn, worker_id: str, prefetch: int) -> int:
    done = 0
    jobs: list[queue.Job] | None = queue.claim(conn, worker_id, ["echo"], prefetch)
    while jobs:
        claimed = None
        for i, job in enumerate(jobs):
            claimed = _complete_in_context(conn, job, worker_id, prefetch if i == len(jobs) - 1 else 0)
        done += len(jobs)
        jobs = claimed
    return done


def _pipelined(conn: Conn, worker_id: str, prefetch: int) -> int:
    done = 0
    while jobs := queue.claim(conn, worker_id, ["echo"], prefetch):
        for job in jobs:
            stack = ExitStack()
            with sql_errors(), conn.pipeline():  # BEGIN and set_config in one round trip
                stack.enter_context(tenant_context(conn, job.tenant_id))
            with sql_errors(), conn.pipeline():  # ml.complete_job and COMMIT in one round trip
                conn.execute("select ml.complete_job(%s, %s, %s)", (job.id, worker_id, Jsonb({"echo": job.payload})))
                stack.close()
        done += len(jobs)
    return done


# name: (loop, psycopg prepare_threshold, round trips per job, commits per job) for prefetch p
VARIANTS: dict[str, tuple[Callable[[Conn, str, int], int], int | None, Callable[[int], float], Callable[[int], float]]] = {
    "claim apart (before)": (_claim_apart, 5, lambda p: 4 + 1 / p, lambda p: 1 + 1 / p),
    "next claim in the last completion (now)": (_claim_with_last_completion, 5, lambda p: 4 + 0 / p, lambda p: 1.0),
    "pipelined: BEGIN+set_config, complete+COMMIT": (_pipelined, 5, lambda p: 2 + 1 / p, lambda p: 1 + 1 / p),
    "now, never prepared": (_claim_with_last_completion, None, lambda p: 4.0, lambda p: 1.0),
    "now, prepared at first use": (_claim_with_last_completion, 0, lambda p: 4.0, lambda p: 1.0),
}


def _one_variant(url: str, conn: Conn, name: str, prefetch: int, jobs: int) -> dict[str, float]:
    loop, threshold, _, _ = VARIANTS[name]
    with psycopg.connect(url, autocommit=True) as work:
        work.prepare_threshold = threshold
        _enqueue_batch(conn, 50)
        loop(work, "variants", prefetch)  # warm-up: plans cached, statements prepared
        conn.execute("vacuum ml.jobs")
        first, last, _ = _enqueue_batch(conn, jobs)
        backend = work.info.backend_pid
        server0, client0, t0 = _process_cpu(backend), time.thread_time(), time.perf_counter()
        done = loop(work, "variants", prefetch)
        wall, client, server1 = time.perf_counter() - t0, time.thread_time() - client0, _process_cpu(backend)
    if done != jobs or _status_counts(conn, first, last) != (jobs, 0):
        raise RuntimeError(f"variant {name!r}: {done} of {jobs} jobs done")
    server = server1 - server0 if server0 is not None and server1 is not None else math.nan
    return {"wall_us": wall * 1e6 / jobs, "client_us": client * 1e6 / jobs, "server_us": server * 1e6 / jobs}


def run_variants(url: str, conn: Conn, jobs: int, repeats: int, prefetches: list[int], prog: Progress) -> list[dict[str, Any]]:
    task = prog.add_task("transactional path, variant by variant", total=repeats * len(prefetches) * len(VARIANTS))
    samples: dict[tuple[str, int], list[dict[str, float]]] = {}
    for _ in range(repeats):  # interleaved, so that a burst of load elsewhere hits every variant
        for prefetch in prefetches:
            for name in VARIANTS:
                samples.setdefault((name, prefetch), []).append(_one_variant(url, conn, name, prefetch, jobs))
                prog.advance(task)
    out = []
    for (name, prefetch), runs in samples.items():
        _, threshold, round_trips, commits = VARIANTS[name]
        med = {k: round(median([r[k] for r in runs]), 1) for k in runs[0]}
        out.append({"variant": name, "prefetch": prefetch, "prepare_threshold": threshold, "jobs": jobs,
                    "round_trips_per_job": round(round_trips(prefetch), 3), "commits_per_job": round(commits(prefetch), 3),
                    "jobs_per_s_median": round(1e6 / med["wall_us"], 1), **{f"{k}_median": v for k, v in med.items()},
                    "runs": runs})
    return out


# -- main ----------------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


PARTS = ("throughput", "variants", "latency")


def _path_list(text: str) -> list[str]:
    paths = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [p for p in paths if p not in PATH_MODULES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown path {', '.join(unknown)} (known: {', '.join(PATH_MODULES)})")
    return paths


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.queue", description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--database-url", help="server to use (default: PGMLOPS_BENCH_DATABASE_URL, "
                    "DATABASE_URL, else the embedded PostgreSQL); a fresh database is made on it")
    ap.add_argument("--jobs", type=int, help="jobs per throughput run (default 4000; --quick 500)")
    ap.add_argument("--latency-samples", type=int, help="latency samples (default 200; --quick 30)")
    ap.add_argument("--repeats", type=int, help="throughput runs per configuration, median reported "
                    "(default 3; --quick 1)")
    ap.add_argument("--workers", type=_int_list, default=[1, 2, 4], help="worker counts (default 1,2,4)")
    ap.add_argument("--paths", type=_path_list, default=list(PATH_MODULES),
                    help="completion paths: batched, transactional (default both)")
    ap.add_argument("--batch", type=_int_list, default=[64],
                    help="batched path: jobs claimed and acknowledged at once (default 64)")
    ap.add_argument("--prefetch", type=_int_list, default=[1, 8],
                    help="transactional path: prefetch values (default 1,8)")
    ap.add_argument("--variant-jobs", type=int, help="jobs per run of each transactional-path variant "
                    "(default 1000; --quick 200)")
    ap.add_argument("--parts", type=lambda t: [x.strip() for x in t.split(",") if x.strip()],
                    default=list(PARTS), help=f"parts to run (default {','.join(PARTS)})")
    ap.add_argument("--quick", action="store_true", help="small sizes for a fast sanity run")
    ap.add_argument("--output", default="queue", help="results name: bench/results/<name>.json")
    args = ap.parse_args(argv)
    args.jobs = args.jobs or (500 if args.quick else 4000)
    args.latency_samples = args.latency_samples or (30 if args.quick else 200)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.variant_jobs = args.variant_jobs or (200 if args.quick else 1000)
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        ap.error(f"--parts: unknown {', '.join(sorted(unknown))} (known: {', '.join(PARTS)})")
    return args


def build_goals(throughput: list[dict[str, Any]], variants: list[dict[str, Any]],
                latency: dict[str, Any] | None) -> list[Goal]:
    goals: list[Goal] = []
    workers = sorted({t["workers"] for t in throughput})
    for t in throughput:
        cpu = t["cpu_median"]
        cpu_note = (f"; CPU µs/job: server {cpu['server_us_per_job']:,.0f} (LISTEN "
                    f"{cpu['server_listen_us_per_job']:,.0f}), workers {cpu['workers_us_per_job']:,.0f}; "
                    f"others {cpu['other_cores']:.1f} cores" if cpu else "")
        goals.append(Goal(
            f"{t['path']} {t['workers']}w, {_prefetch_name(t['path'])} {t['prefetch']}",
            t["jobs_per_s_median"], "jobs/s",
            THROUGHPUT_GOAL if t["path"] == "batched" and t["workers"] == 4 else None, digits=0,
            note=f"{t['jobs_per_s_min']:,.0f}–{t['jobs_per_s_max']:,.0f}; "
                 f"{t['jobs_per_commit_median']:g} jobs/commit{cpu_note}"))
    # Each path at its best setting, side by side, and how each scales.
    best = {path: {w: max((t for t in throughput if t["path"] == path and t["workers"] == w),
                          key=lambda t: t["jobs_per_s_median"], default=None) for w in workers}
            for path in PATH_MODULES}
    for w in workers:
        b, x = best["batched"][w], best["transactional"][w]
        if b and x:
            goals.append(Goal(f"batched / transactional, {w}w", b["jobs_per_s_median"] / x["jobs_per_s_median"], "x",
                              digits=2, note=f"batch {b['prefetch']} vs prefetch {x['prefetch']}"))
    for path in PATH_MODULES:
        lo, hi = (best[path][workers[0]], best[path][workers[-1]]) if workers else (None, None)
        if len(workers) > 1 and lo and hi:
            goals.append(Goal(f"scaling {workers[-1]}w / {workers[0]}w, {path}",
                              hi["jobs_per_s_median"] / lo["jobs_per_s_median"],
                              "x", digits=2, note=f"{os.cpu_count()} CPUs shared by server, workers and this client"))
    # CPU per job, not wall time: on a shared machine the wall time is mostly other processes'.
    for v in variants:
        goals.append(Goal(f"CPU/job, prefetch {v['prefetch']}: {v['variant']}",
                          v["client_us_median"] + v["server_us_median"], "µs", digits=0,
                          note=f"client {v['client_us_median']:,.0f} + server {v['server_us_median']:,.0f}; "
                               f"{v['round_trips_per_job']:g} round trips, {v['commits_per_job']:g} commits/job; "
                               f"wall {v['wall_us_median']:,.0f} µs"))
    if latency is None:
        return goals
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
              "workers": args.workers, "paths": args.paths, "batch": args.batch, "prefetch": args.prefetch,
              "variant_jobs": args.variant_jobs, "parts": args.parts, "quick": args.quick, "payload": {},
              "kind": "echo", "poll_interval_s": POLL_S, "server": redact(server)}
    console.print(f"[bold]pgmlops queue benchmark[/] on {redact(server)}: {args.jobs} jobs × "
                  f"{args.repeats} runs per configuration, {args.latency_samples} latency samples")
    t_start = time.perf_counter()
    with fresh_database(server) as url, psycopg.connect(url, autocommit=True) as conn:
        make_tenant(conn, "bench")
        info = machine_info(conn)
        throughput: list[dict[str, Any]] = []
        variants: list[dict[str, Any]] = []
        latency: dict[str, Any] | None = None
        with progress() as prog:
            if "throughput" in args.parts:
                for workers in args.workers:
                    for path in args.paths:
                        for prefetch in (args.batch if path == "batched" else args.prefetch):
                            throughput.append(run_throughput(url, conn, path, workers, prefetch, args.jobs,
                                                             args.repeats, prog))
            if "variants" in args.parts:
                variants = run_variants(url, conn, args.variant_jobs, args.repeats, args.prefetch, prog)
            if "latency" in args.parts:
                latency = run_latency(url, conn, args.latency_samples, prog)
    elapsed = time.perf_counter() - t_start

    goals = build_goals(throughput, variants, latency)
    console.print(results_table(
        f"pgmlops queue ({info['cpu_count']} CPUs, PostgreSQL {info['server_settings'].get('server_version')}, "
        f"fsync {info['server_settings'].get('fsync')}, synchronous_commit "
        f"{info['server_settings'].get('synchronous_commit')})", goals))
    path = write_results(args.output, {
        "machine": info, "parameters": params, "elapsed_s": round(elapsed, 1),
        "results": {"throughput": throughput, "transactional_variants": variants, "latency": latency},
        "goals": [g.as_dict() for g in goals]})
    console.print(f"results: {path} ({elapsed:.0f} s)")
    return 0 if all(g.status != "MISS" for g in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
