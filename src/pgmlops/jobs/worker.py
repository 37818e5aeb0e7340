"""Workers: processes that claim jobs from ml.jobs, run their handlers and report back in SQL.

One :class:`Worker` is one process with three connections: one LISTENs on ``ml_jobs`` so an
idle worker wakes within milliseconds of an enqueue (polling every ``poll_interval`` remains the
fallback), one runs handlers and completes jobs, and one belongs to a heartbeat thread that
extends the leases of held jobs. :func:`run_workers` supervises N such processes.

A transactional handler's job commits with its handler's writes, one transaction per job; jobs
of handlers that write nothing transactional run in batches acknowledged by one statement
(:mod:`pgmlops.jobs.handlers`).

Stopping: the first SIGTERM or SIGINT stops claiming; the running job finishes and prefetched
jobs are given back unrun. A second signal aborts the running job and gives its lease back.
SIGKILL loses nothing either: the job's lease expires and another worker claims it. A worker
process of a :class:`WorkerPool` dies with its supervisor (SIGKILL, see :func:`_die_with_parent`),
so a killed supervisor leaves no orphan claiming jobs.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg

from pgmlops.db import call, resolve_url, tenant_context
from pgmlops.errors import InvalidInput, LeaseLost, PgmlopsError
from pgmlops.jobs import handlers, queue
from pgmlops.jobs.handlers import JobContext, PermanentError

__all__ = ["Worker", "WorkerPool", "WorkerStats", "new_worker_id", "run_workers"]

log = logging.getLogger("pgmlops.worker")

# Longest an idle worker waits before it looks at its stop flag again (seconds).
_STOP_CHECK = 0.5


def new_worker_id() -> str:
    """A worker id that says where the worker runs: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class WorkerStats:
    """What one worker process did."""

    succeeded: int = 0
    failed: int = 0
    refused: int = 0
    released: int = 0

    @property
    def processed(self) -> int:
        return self.succeeded + self.failed + self.refused


class _Abort(BaseException):
    """Raised in the main thread by a second stop signal, to abandon the running job."""


@dataclass
class _Held:
    job: queue.Job
    ctx: JobContext | None = None
    completing: bool = False  # its completion was sent: a refused heartbeat no longer means lost


class _Heartbeat(threading.Thread):
    """Extends the leases of the jobs a worker holds, every third of the shortest lease."""

    def __init__(self, url: str, worker_id: str) -> None:
        super().__init__(name="pgmlops-heartbeat", daemon=True)
        self._url = url
        self._worker_id = worker_id
        self._held: dict[int, _Held] = {}
        self._lock = threading.Lock()
        self._stop_event = threading.Event()

    def hold(self, held: _Held) -> None:
        with self._lock:
            self._held[held.job.id] = held

    def forget(self, job_id: int) -> None:
        with self._lock:
            self._held.pop(job_id, None)

    def stop(self) -> None:
        self._stop_event.set()

    def _interval(self) -> float:
        with self._lock:
            leases = [h.job.lease.total_seconds() for h in self._held.values()]
        return max(0.2, min(leases) / 3) if leases else 1.0

    def run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while not self._stop_event.wait(self._interval()):
            with self._lock:
                held = list(self._held.values())
            if not held:
                continue
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self._url, autocommit=True, application_name="pgmlops heartbeat")
                for h in held:
                    if queue.heartbeat(conn, h.job.id, self._worker_id):
                        continue
                    with self._lock:
                        still_held = h.job.id in self._held
                    # A job finished between the snapshot and its heartbeat is not lost (the
                    # heartbeat may even have waited for the row lock of its completion).
                    if still_held and h.ctx is not None and not h.completing:
                        log.warning("job %s: lease lost (expired, cancelled or taken over)", h.job.id)
                        h.ctx.lost.set()
            except (psycopg.Error, PgmlopsError) as exc:  # a broken connection: the queue's error, translated
                log.warning("heartbeat failed, will retry: %s", exc)
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()


@dataclass
class Worker:
    """One worker process's loop. Not thread-safe: call :meth:`run` from the main thread.

    Claimed jobs run in claim order. A transactional handler's job runs alone in its own
    transaction, committed with its completion. Consecutive jobs of handlers that write nothing
    transactional (:func:`pgmlops.jobs.handlers.is_transactional`) run as one batch, acknowledged
    together by one ``ml.complete_jobs`` statement; so batches need ``prefetch`` above 1.

    Args:
        url: database URL (None: see :func:`pgmlops.db.resolve_url`).
        kinds: job kinds to claim; None means every kind with a registered handler.
        prefetch: jobs claimed per round trip (and the largest batch); the ones not yet started
            are heartbeated too.
        poll_interval: seconds to wait for a NOTIFY before polling again.
        idle_exit: exit after this many seconds with nothing to do (None: run until stopped).
        maintenance_interval: seconds between ml.run_maintenance() calls when pg_cron
            is absent (None: never).
        install_signals: install SIGTERM/SIGINT handlers (only possible in the main thread).
        lease: lease in seconds for claimed jobs (None: each kind's own lease).
    """

    url: str | None = None
    kinds: Sequence[str] | None = None
    prefetch: int = 1
    poll_interval: float = 1.0
    idle_exit: float | None = None
    maintenance_interval: float | None = 300.0
    install_signals: bool = True
    lease: float | None = None
    worker_id: str = field(default_factory=new_worker_id)
    stats: WorkerStats = field(default_factory=WorkerStats)

    def __post_init__(self) -> None:
        self._stopping = threading.Event()
        self._signals = 0
        self._running_job: _Held | None = None
        self._url = ""
        self._work: psycopg.Connection[Any] | None = None
        self._kinds: list[str] = []

    # -- control ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop claiming; the running job finishes. Safe from any thread or signal handler."""
        self._stopping.set()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._signals += 1
        self._stopping.set()
        if self._signals == 1:
            log.info("worker %s: %s received, finishing the running job", self.worker_id, signal.Signals(signum).name)
        elif self._running_job is not None:
            raise _Abort()

    # -- loop --------------------------------------------------------------------------------

    def run(self) -> WorkerStats:
        """Claim and run jobs until stopped (or idle for ``idle_exit`` seconds)."""
        self._url = url = resolve_url(self.url)
        handlers.load_plugins()
        self._kinds = kinds = list(self.kinds) if self.kinds else handlers.kinds()
        for kind in kinds:
            handlers.get(kind)  # fail fast on a kind with no handler
        if self.install_signals:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)

        beat = _Heartbeat(url, self.worker_id)
        beat.start()
        listen = psycopg.connect(url, autocommit=True, application_name="pgmlops worker listen")
        self._work = psycopg.connect(url, autocommit=True, application_name=f"pgmlops worker {self.worker_id}")
        pending: deque[_Held] = deque()  # claimed, not started
        try:
            listen.execute("listen ml_jobs")
            use_maintenance = self.maintenance_interval is not None and not self._has_cron(self._work)
            last_maintenance = 0.0
            idle_since = time.monotonic()
            nothing_left = False  # the claim made with the last completion found nothing
            log.info("worker %s: claiming %s", self.worker_id, ", ".join(kinds))
            while not self._stopping.is_set():
                if use_maintenance and time.monotonic() - last_maintenance >= (self.maintenance_interval or 0):
                    last_maintenance = time.monotonic()
                    self._maintenance(self._work)
                if not pending:
                    jobs = [] if nothing_left else self._claim(self._work)
                    nothing_left = False
                    if not jobs:
                        if self.idle_exit is not None and time.monotonic() - idle_since >= self.idle_exit:
                            break
                        self._wait_for_work(listen)
                        continue
                    self._hold(jobs, pending, beat)
                claimed = self._run_claimed(pending, beat)
                if claimed:
                    self._hold(claimed, pending, beat)
                nothing_left = claimed is not None and not claimed
                idle_since = time.monotonic()
        except _Abort:
            log.info("worker %s: aborted", self.worker_id)
        finally:
            self._give_back(pending, beat)
            beat.stop()
            listen.close()
            self._work.close()
        log.info("worker %s: stopped (%s)", self.worker_id, self.stats)
        return self.stats

    def _wait_for_work(self, listen: psycopg.Connection[Any]) -> None:
        # Returns on the first notification, after poll_interval, or soon after a stop: the wait
        # is cut into slices of at most _STOP_CHECK seconds because a signal does not interrupt
        # psycopg's wait for notifications, and an idle worker with a long poll interval would
        # otherwise finish its whole interval before it sees the stop.
        deadline = time.monotonic() + self.poll_interval
        while not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for _ in listen.notifies(timeout=min(left, _STOP_CHECK), stop_after=1):
                return

    def _claim(self, conn: psycopg.Connection[Any]) -> list[queue.Job]:
        return queue.claim(conn, self.worker_id, self._kinds, self.prefetch,
                           timedelta(seconds=self.lease) if self.lease else None)

    @staticmethod
    def _hold(jobs: list[queue.Job], pending: deque[_Held], beat: _Heartbeat) -> None:
        for job in jobs:
            held = _Held(job)
            pending.append(held)
            beat.hold(held)

    def _run_claimed(self, pending: deque[_Held], beat: _Heartbeat) -> list[queue.Job] | None:
        """Run the claimed jobs in order until none is left or a stop was asked for; what is left
        in ``pending`` was not started. The last completion claims the next jobs in its own
        transaction (one commit, not two): they are returned; None when it did not claim."""
        claimed: list[queue.Job] | None = None
        while pending and not self._stopping.is_set():
            if handlers.is_transactional(pending[0].job.kind):
                held = pending.popleft()
                try:
                    claimed = self._run_one(held, claim_next=not pending)
                finally:
                    beat.forget(held.job.id)
                continue
            batch: list[_Held] = []
            while pending and not handlers.is_transactional(pending[0].job.kind):
                batch.append(pending.popleft())
            try:
                claimed = self._run_batch(batch, pending)
            finally:
                for h in batch:
                    beat.forget(h.job.id)
        return claimed

    # -- a transactional job -----------------------------------------------------------------

    def _run_one(self, held: _Held, *, claim_next: bool) -> list[queue.Job] | None:
        """Run a transactional job; with ``claim_next`` (it was the last one claimed), claim the
        next jobs in its completion's transaction and return them."""
        job = held.job
        work = self._connection()
        held.ctx = ctx = JobContext(job=job, conn=work, worker_id=self.worker_id, stopping=self._stopping)
        claimed: list[queue.Job] | None = None
        self._running_job = held
        try:
            fn = handlers.get(job.kind)
            # One transaction as the service role acting for the job's tenant: the handler's
            # writes and the job's completion land together, with the claims any client has.
            with tenant_context(work, job.tenant_id):
                result = fn(ctx)
                self._running_job = None
                held.completing = True
                queue.complete(work, job.id, self.worker_id, result)
                if claim_next and not self._stopping.is_set():
                    claimed = self._claim(work)
            self.stats.succeeded += 1
            return claimed
        except _Abort:
            self._fresh()
            self._release(held)
            raise
        except Exception as exc:  # the handler's failure, to be recorded, never to kill the worker
            self._record_failure(held, exc)
            return None
        finally:
            self._running_job = None

    # -- a batch of non-transactional jobs ---------------------------------------------------

    def _run_batch(self, batch: list[_Held], pending: deque[_Held]) -> list[queue.Job] | None:
        """Run jobs whose handlers write nothing transactional, then acknowledge the finished
        ones in one statement. Each tenant's jobs share one read-only transaction acting for
        it. On a stop the jobs not started go back to ``pending``; on an abort the running one
        too; finished jobs are acknowledged either way. When nothing is left, the
        acknowledgement claims the next jobs in its transaction: they are returned."""
        order = {t: i for i, t in reversed(list(enumerate(h.job.tenant_id for h in batch)))}
        todo = deque(sorted(batch, key=lambda h: order[h.job.tenant_id]))  # stable: claim order per tenant
        results: dict[int, Any] = {}
        done: list[_Held] = []
        failures: list[tuple[_Held, Exception]] = []
        claimed: list[queue.Job] | None = None
        completed = False
        try:
            while todo and not self._stopping.is_set():
                self._run_tenant_jobs(todo, results, done, failures)
            completed = True
        finally:
            pending.extendleft(reversed(todo))
            claimed = self._acknowledge(done, results, claim_next=completed and not pending and not failures)
            for held, exc in failures:
                self._record_failure(held, exc)
        return claimed

    def _run_tenant_jobs(self, todo: deque[_Held], results: dict[int, Any], done: list[_Held],
                         failures: list[tuple[_Held, Exception]]) -> None:
        """Run the jobs at the head of ``todo`` that share its first job's tenant, in one read-only
        transaction acting for that tenant (a new one after a job broke it)."""
        tenant = todo[0].job.tenant_id
        work = self._connection()
        started = False
        try:
            work.read_only = True  # BEGIN READ ONLY: no statement of its own
            with tenant_context(work, tenant):
                started = True
                while todo and todo[0].job.tenant_id == tenant and not self._stopping.is_set():
                    held = todo.popleft()
                    try:
                        results[held.job.id] = self._call(held, work)
                        done.append(held)
                    except _Abort:
                        todo.appendleft(held)
                        raise
                    except Exception as exc:  # recorded once the batch is acknowledged
                        failures.append((held, exc))
                        if work.info.transaction_status != psycopg.pq.TransactionStatus.INTRANS:
                            break  # the handler broke the transaction: the rest get a new one
        except (psycopg.Error, PgmlopsError) as exc:
            # Handlers' failures are caught above: this is the transaction itself failing to start
            # or end. Nothing was written in it, so finished results stand; if it never started,
            # the tenant's jobs fail with its error.
            self._fresh()
            if not started:
                log.warning("tenant %s: cannot act for it: %s", tenant, exc)
                while todo and todo[0].job.tenant_id == tenant:
                    failures.append((todo.popleft(), exc))
        finally:
            if not work.closed and work.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                work.read_only = None  # the transactions after this one: read-write again

    def _call(self, held: _Held, work: psycopg.Connection[Any]) -> Any:
        held.ctx = JobContext(job=held.job, conn=work, worker_id=self.worker_id, stopping=self._stopping)
        self._running_job = held
        try:
            return handlers.get(held.job.kind)(held.ctx)
        finally:
            self._running_job = None

    def _acknowledge(self, done: list[_Held], results: dict[int, Any], *,
                     claim_next: bool) -> list[queue.Job] | None:
        """Complete the finished jobs of a batch in one statement, as the service role; with
        ``claim_next``, claim the next jobs in the same transaction and return them."""
        if not done:
            return None
        work = self._connection()
        claimed: list[queue.Job] | None = None
        for held in done:
            held.completing = True
        try:
            with tenant_context(work):
                accepted = queue.complete_many(work, self.worker_id, {h.job.id: results[h.job.id] for h in done})
                if claim_next and not self._stopping.is_set():
                    claimed = self._claim(work)
        except InvalidInput:
            # A result the batch refuses (over 1 MB): each job alone, so that only that one fails.
            for held in done:
                self._complete_alone(held, results[held.job.id])
            return None
        self.stats.succeeded += len(accepted)
        refused = [h.job.id for h in done if h.job.id not in accepted]
        if refused:
            self.stats.refused += len(refused)
            log.warning("jobs %s: results refused: no longer held by %s", refused, self.worker_id)
        return claimed

    def _complete_alone(self, held: _Held, result: Any) -> None:
        work = self._connection()
        try:
            with tenant_context(work, held.job.tenant_id):
                queue.complete(work, held.job.id, self.worker_id, result)
            self.stats.succeeded += 1
        except Exception as exc:
            self._record_failure(held, exc)

    # -- failures and give-backs -------------------------------------------------------------

    def _record_failure(self, held: _Held, exc: Exception) -> None:
        job = held.job
        if isinstance(exc, LeaseLost):
            self.stats.refused += 1
            log.warning("job %s: result refused: %s", job.id, exc)
            return
        work = self._fresh()
        retry = not isinstance(exc, PermanentError)
        message = f"{type(exc).__name__}: {exc}"
        if retry:
            message += "\n" + "".join(traceback.format_exception(exc)[-3:])
        try:
            status = queue.fail(work, job.id, self.worker_id, message, retry=retry)
            self.stats.failed += 1
            log.info("job %s (%s) failed, now %s: %s", job.id, job.kind, status, exc)
        except LeaseLost:
            self.stats.refused += 1

    def _release(self, held: _Held) -> None:
        try:
            queue.release(self._connection(), held.job.id, self.worker_id)
            self.stats.released += 1
        except LeaseLost:
            pass

    def _give_back(self, pending: deque[_Held], beat: _Heartbeat) -> None:
        """Release the claimed jobs that were not started (stopping, aborted or failing)."""
        while pending:
            held = pending.popleft()
            try:
                self._fresh()
                self._release(held)
            except (psycopg.Error, PgmlopsError) as exc:
                log.warning("job %s: not given back, its lease will expire: %s", held.job.id, exc)
            beat.forget(held.job.id)

    # -- connections and maintenance ---------------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        assert self._work is not None, "the worker is not running"
        return self._work

    def _fresh(self) -> psycopg.Connection[Any]:
        """The work connection, replaced when a handler broke it."""
        work = self._connection()
        if work.closed or work.broken:
            self._work = work = psycopg.connect(self._url, autocommit=True, application_name="pgmlops worker")
        return work

    @staticmethod
    def _has_cron(conn: psycopg.Connection[Any]) -> bool:
        row = conn.execute("select (ml.capabilities() ->> 'pg_cron')::boolean").fetchone()
        return bool(row and row[0])

    def _maintenance(self, conn: psycopg.Connection[Any]) -> None:
        try:
            log.debug("maintenance: %s", call(conn, "ml.run_maintenance()"))
        except PgmlopsError as exc:
            log.warning("maintenance failed: %s", exc)


# -- supervision -----------------------------------------------------------------------------

# prctl(2) option: the kernel sends this process a signal when its parent dies.
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Make this worker process die with the supervisor that started it.

    Killed, not stopped gracefully: the supervisor is gone, so nobody waits for a graceful exit;
    a handler may run for hours, or sit in C code where no Python signal handler runs; and a
    SIGKILLed worker loses nothing (its open transaction rolls back with its connections, its
    jobs' leases expire and other workers take them, a late result is refused). Two guards: on
    Linux the kernel sends SIGKILL (``PR_SET_PDEATHSIG``), however busy the process is; on every
    platform a thread waits on the pipe multiprocessing keeps from the parent, which ends when
    the parent dies.
    """
    parent = multiprocessing.parent_process()
    if parent is None:  # not started by multiprocessing: no supervisor to die with
        return
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG): %s", os.strerror(ctypes.get_errno()))
    # A parent that died before prctl sends nothing: this process has been reparented already.
    if os.getppid() != parent.pid:
        _kill_self(parent.pid)
    _watch_parent()


def _watch_parent() -> None:
    """Kill this process when its multiprocessing parent dies (the portable guard)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()  # waits until the parent's end of the pipe closes, i.e. the parent died
        _kill_self(parent.pid)

    threading.Thread(target=watch, name="pgmlops-parent-watch", daemon=True).start()


def _kill_self(parent_pid: int | None) -> None:
    log.warning("worker process %s: supervisor %s died, exiting", os.getpid(), parent_pid)
    os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))  # SIGTERM: TerminateProcess on Windows


def _child_main(options: dict[str, Any]) -> None:
    _die_with_parent()
    logging.basicConfig(level=options.pop("log_level", logging.INFO),
                        format="%(asctime)s %(processName)s %(levelname)s %(message)s")
    modules = options.pop("modules", None)
    handlers.load_plugins(modules)
    Worker(**options).run()


class WorkerPool:
    """N worker processes (spawned, so each has its own interpreter and connections).

    Use as a context manager, or call :meth:`start` and :meth:`stop`. :meth:`supervise` replaces
    workers that die (crash, SIGKILL) until :meth:`stop` is called. Workers die with the process
    that started them; on Linux with the very thread (``PR_SET_PDEATHSIG`` follows the thread that
    spawned the process), so start, check and supervise the pool from a thread that outlives it,
    such as the main thread. The options are :class:`Worker`'s, passed to every worker; with
    several workers and no pg_cron, each runs ``ml.run_maintenance()`` on its own interval (the
    runs take a lock, so they do not overlap).
    """

    def __init__(self, url: str | None = None, kinds: Sequence[str] | None = None, concurrency: int = 1, *,
                 prefetch: int = 1, poll_interval: float = 1.0, idle_exit: float | None = None,
                 modules: Sequence[str] | None = None, log_level: int = logging.INFO,
                 lease: float | None = None, maintenance_interval: float | None = 300.0) -> None:
        if concurrency < 1:
            raise ValueError("concurrency: must be at least 1")
        self.concurrency = concurrency
        self._options = {"url": resolve_url(url), "kinds": list(kinds) if kinds else None,
                         "prefetch": prefetch, "poll_interval": poll_interval, "idle_exit": idle_exit,
                         "modules": list(modules) if modules else None, "log_level": log_level,
                         "lease": lease, "maintenance_interval": maintenance_interval}
        self._ctx = multiprocessing.get_context("spawn")
        self._procs: dict[int, multiprocessing.process.BaseProcess] = {}
        self.stopping = threading.Event()
        self.failures = 0

    def _spawn(self, slot: int) -> None:
        proc = self._ctx.Process(target=_child_main, args=(dict(self._options),), name=f"worker-{slot}")
        proc.start()
        self._procs[slot] = proc

    def start(self) -> WorkerPool:
        """Start the worker processes; returns self."""
        for slot in range(self.concurrency):
            self._spawn(slot)
        return self

    def pids(self) -> list[int]:
        """The process ids of the live workers."""
        return [p.pid for p in self._procs.values() if p.is_alive() and p.pid is not None]

    def alive(self) -> int:
        """How many workers are running."""
        return len(self.pids())

    def signal(self, signum: int) -> None:
        """Send ``signum`` to every live worker."""
        for pid in self.pids():
            os.kill(pid, signum)

    def check(self, *, restart: bool = True) -> None:
        """Reap workers that exited; replace the ones that failed unless stopping."""
        for slot, proc in list(self._procs.items()):
            if proc.is_alive():
                continue
            proc.join()
            del self._procs[slot]
            if proc.exitcode != 0:
                self.failures += 1
                log.warning("worker-%s exited with %s", slot, proc.exitcode)
                if restart and not self.stopping.is_set():
                    self._spawn(slot)

    def supervise(self, *, restart: bool = True, until: threading.Event | None = None) -> int:
        """Watch the workers until all have exited (or ``until`` is set); return failures."""
        while self._procs and not (until is not None and until.is_set()):
            self.check(restart=restart)
            time.sleep(0.2)
        return self.failures

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM every worker, wait up to ``timeout`` seconds, then SIGKILL stragglers; returns
        how many had to be killed (an idle worker stops within a second whatever its poll
        interval; a running job is waited for)."""
        self.stopping.set()
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        killed = 0
        for proc in self._procs.values():
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
                killed += 1
        self._procs.clear()
        return killed

    def __enter__(self) -> WorkerPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_workers(url: str | None = None, kinds: Sequence[str] | None = None, concurrency: int = 1, *,
                prefetch: int = 1, poll_interval: float = 1.0, idle_exit: float | None = None,
                modules: Sequence[str] | None = None, restart: bool = True,
                log_level: int = logging.INFO, lease: float | None = None) -> int:
    """Run ``concurrency`` worker processes until they stop; return how many failed.

    SIGTERM/SIGINT are passed on to the workers (a second one aborts their running jobs). A
    worker that dies (crash, SIGKILL) is replaced while ``restart`` holds and no stop was asked
    for; its job is taken over once its lease expires. With ``idle_exit``, each worker ends
    after that many idle seconds, and so does this call when all have.
    """
    pool = WorkerPool(url, kinds, concurrency, prefetch=prefetch, poll_interval=poll_interval,
                      idle_exit=idle_exit, modules=modules, log_level=log_level, lease=lease)

    def forward(signum: int, _frame: Any) -> None:
        pool.stopping.set()
        pool.signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        pool.start()
        return pool.supervise(restart=restart)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
