"""Worker processes against a real server: exactly-once completion, crashes, signals, retries."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgmlops.errors import LeaseLost
from pgmlops.jobs import handlers, queue
from pgmlops.jobs.handlers import JobContext
from pgmlops.jobs.worker import WorkerPool

from .conftest import act_for, make_tenant
from .handlers_for_tests import SETUP_SQL

Conn = psycopg.Connection[Any]
MODULES = ["tests.handlers_for_tests"]
ROOT = Path(__file__).resolve().parent.parent
needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads the process table from /proc")


@pytest.fixture
def db(fresh_db_url: str) -> Iterator[tuple[str, Conn, str]]:
    """A fresh database with the test kind registered, a connection acting for a new tenant."""
    with psycopg.connect(fresh_db_url, autocommit=True) as conn:
        conn.execute(SETUP_SQL)
        tenant = make_tenant(conn)
        act_for(conn, tenant)
        yield fresh_db_url, conn, tenant


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def scalar(conn: Conn, sql: str, *args: Any) -> Any:
    return conn.execute(sql, args).fetchone()[0]


def pool(url: str, concurrency: int, kinds: Sequence[str] = ("effect", "echo"), **kwargs: Any) -> WorkerPool:
    kwargs.setdefault("log_level", logging.WARNING)
    kwargs.setdefault("poll_interval", 0.5)
    return WorkerPool(url, list(kinds), concurrency, modules=MODULES, **kwargs)


def pid_of(worker_id: str) -> int:
    return int(worker_id.split(":")[1])


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of a process, from /proc; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) ", comm may hold spaces
    return fields[0], int(fields[1]), int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """Every process below ``root``, with its start time (so a reused pid is not taken for it)."""
    stats = {int(e): st for e in os.listdir("/proc") if e.isdigit() and (st := proc_stat(int(e))) is not None}
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        parent = todo.pop()
        for pid, (_, ppid, started) in stats.items():
            if ppid == parent and pid not in found:
                found[pid] = started
                todo.append(pid)
    return found


def running(pid: int, started: int) -> bool:
    """Whether that very process still runs (a zombie waiting to be reaped does not)."""
    stat = proc_stat(pid)
    return stat is not None and stat[2] == started and stat[0] not in "ZX"


def kill_leftovers(processes: dict[int, int]) -> None:
    for pid, started in processes.items():
        if running(pid, started):
            os.kill(pid, signal.SIGKILL)


def test_four_workers_complete_two_thousand_jobs_exactly_once(db: tuple[str, Conn, str]) -> None:
    url, conn, _ = db
    conn.execute("select ml.enqueue('effect', '{}') from generate_series(1, 2000)")
    with pool(url, 4, prefetch=4) as workers:
        wait_for(lambda: scalar(conn, "select count(*) from ml.jobs where status = 'succeeded'") == 2000,
                 timeout=180, what="2000 jobs to succeed")
        assert workers.alive() == 4
    assert scalar(conn, "select count(*) from ml.jobs where status <> 'succeeded' or attempts <> 1") == 0
    # Each job's effects landed once, with its completion, and each was claimed once.
    assert scalar(conn, "select count(*) from test_effects") == 2000
    assert scalar(conn, "select count(distinct job_id) from test_effects") == 2000
    per_job = conn.execute(
        "select event, count(*) from ml.events where topic = 'job' group by event order by event").fetchall()
    assert per_job == [("job.queued", 2000), ("job.running", 2000), ("job.succeeded", 2000)]
    assert scalar(conn, "select count(distinct locked_by) from ml.jobs") == 4


def test_handlers_run_in_the_jobs_tenant_context(db: tuple[str, Conn, str]) -> None:
    url, conn, tenant = db
    other = make_tenant(conn)
    act_for(conn, other)
    other_job = queue.enqueue(conn, "effect", {})
    act_for(conn, tenant)
    job = queue.enqueue(conn, "effect", {})
    with pool(url, 1):
        wait_for(lambda: scalar(conn, "select count(*) from ml.jobs where status = 'succeeded'") == 2)
    assert queue.result(conn, job)["result"] == {"tenant_setting": tenant, "acting_tenant": tenant}
    assert queue.result(conn, other_job)["result"] == {"tenant_setting": other, "acting_tenant": other}


def test_a_job_of_a_sigkilled_worker_is_completed_once_by_another(db: tuple[str, Conn, str]) -> None:
    url, conn, _ = db
    job_id = queue.enqueue(conn, "effect", {"sleep_ms": 3000})
    with pool(url, 2, lease=1.5):
        wait_for(lambda: scalar(conn, "select status from ml.jobs where id = %s", job_id) == "running")
        victim = scalar(conn, "select locked_by from ml.jobs where id = %s", job_id)
        os.kill(pid_of(victim), signal.SIGKILL)
        wait_for(lambda: scalar(conn, "select status from ml.jobs where id = %s", job_id) == "succeeded",
                 timeout=30, what="the job to be taken over")
        state = conn.execute("select attempts, locked_by from ml.jobs where id = %s", (job_id,)).fetchone()
    assert state[0] == 2 and state[1] != victim
    assert scalar(conn, "select count(*) from test_effects where job_id = %s", job_id) == 1
    # The killed worker's result, had it come late, is refused and changes nothing.
    with pytest.raises(LeaseLost):
        queue.complete(conn, job_id, victim, {"late": True})
    assert queue.result(conn, job_id)["result"] != {"late": True}


def test_no_job_is_lost_when_a_worker_is_killed_mid_run(db: tuple[str, Conn, str]) -> None:
    url, conn, _ = db
    conn.execute("select ml.enqueue('effect', '{\"sleep_ms\": 100}') from generate_series(1, 40)")
    with pool(url, 2, lease=1.5, prefetch=2):
        wait_for(lambda: scalar(conn, "select count(*) from ml.jobs where status = 'succeeded'") >= 5)
        victim = scalar(conn, "select locked_by from ml.jobs where status = 'running' limit 1")
        if victim is not None:
            os.kill(pid_of(victim), signal.SIGKILL)
        wait_for(lambda: scalar(conn, "select count(*) from ml.jobs where status = 'succeeded'") == 40,
                 timeout=60, what="all 40 jobs")
    assert scalar(conn, "select count(*) from test_effects") == 40
    assert scalar(conn, "select count(distinct job_id) from test_effects") == 40


def test_sigterm_lets_the_running_job_finish_and_gives_prefetched_jobs_back(db: tuple[str, Conn, str]) -> None:
    url, conn, _ = db
    conn.execute("select ml.enqueue('effect', '{\"sleep_ms\": 1500}') from generate_series(1, 3)")
    workers = pool(url, 1, prefetch=3).start()
    try:
        wait_for(lambda: scalar(conn, "select count(*) from ml.jobs where status = 'running'") == 3)
        wait_for(lambda: scalar(conn, "select count(*) from ml.jobs where status = 'running' "
                                      "and heartbeat_at is not null") == 3)
        time.sleep(0.3)  # the first job's handler is under way
        workers.signal(signal.SIGTERM)
        wait_for(lambda: workers.alive() == 0, timeout=30, what="the worker to exit")
        workers.check(restart=False)
        assert workers.failures == 0
    finally:
        workers.stop()
    rows = conn.execute("select status, attempts from ml.jobs order by id").fetchall()
    assert rows == [("succeeded", 1), ("queued", 0), ("queued", 0)]
    assert scalar(conn, "select count(*) from test_effects") == 1


def test_a_second_sigterm_abandons_the_running_job_and_returns_its_lease(db: tuple[str, Conn, str]) -> None:
    url, conn, _ = db
    job_id = queue.enqueue(conn, "effect", {"sleep_ms": 20000})
    workers = pool(url, 1).start()
    try:
        wait_for(lambda: scalar(conn, "select status from ml.jobs where id = %s", job_id) == "running")
        time.sleep(0.3)
        workers.signal(signal.SIGTERM)
        time.sleep(0.3)
        workers.signal(signal.SIGTERM)
        wait_for(lambda: workers.alive() == 0, timeout=15, what="the worker to exit")
    finally:
        workers.stop()
    state = conn.execute("select status, attempts, locked_by from ml.jobs where id = %s", (job_id,)).fetchone()
    assert state == ("queued", 0, None)
    assert scalar(conn, "select count(*) from test_effects") == 0


def test_failing_handlers_are_retried_then_succeed_or_fail_for_good(db: tuple[str, Conn, str]) -> None:
    url, conn, _ = db
    flaky = queue.enqueue(conn, "echo", {"fail_attempts": 2})
    broken = queue.enqueue(conn, "echo", {"fail": "permanent"})
    hopeless = queue.enqueue(conn, "echo", {"fail_attempts": 5}, max_attempts=2)
    conn.execute("update ml.job_kinds set retry_base = '50 milliseconds' where kind = 'echo'")
    with pool(url, 1, poll_interval=0.1):
        wait_for(lambda: scalar(conn, "select count(*) from ml.jobs where finished_at is not null") == 3)
    assert (queue.result(conn, flaky)["status"], queue.result(conn, flaky)["attempts"]) == ("succeeded", 3)
    assert queue.result(conn, broken)["status"] == "failed"
    assert "PermanentError" in queue.result(conn, broken)["error"]
    assert (queue.result(conn, hopeless)["status"], queue.result(conn, hopeless)["attempts"]) == ("dead", 2)
    assert "simulated failure on attempt 2" in queue.result(conn, hopeless)["error"]


def test_notify_wakes_an_idle_worker_long_before_its_next_poll(db: tuple[str, Conn, str]) -> None:
    url, conn, _ = db
    workers = pool(url, 1, poll_interval=60).start()
    try:
        queue.enqueue(conn, "effect", {})  # warm-up: the worker is up and idle after this one
        wait_for(lambda: scalar(conn, "select count(*) from ml.jobs where status = 'succeeded'") == 1)
        time.sleep(0.5)
        job_id = queue.enqueue(conn, "effect", {})
        wait_for(lambda: scalar(conn, "select status from ml.jobs where id = %s", job_id) == "succeeded",
                 timeout=10, what="the NOTIFY to wake the worker (its poll interval is 60 s)")
    finally:
        # Idle again, in the middle of its 60 s wait: a stop reaches it well before that wait
        # ends (the pool would SIGKILL it after 20 s).
        killed = workers.stop(timeout=20)
    assert killed == 0


def test_a_dead_worker_is_replaced_by_the_supervisor(db: tuple[str, Conn, str]) -> None:
    url, _, _ = db
    workers = pool(url, 2).start()
    try:
        wait_for(lambda: workers.alive() == 2)
        victim = workers.pids()[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: (workers.check() or True) and workers.alive() == 2 and victim not in workers.pids(),
                 timeout=20, what="a replacement worker")
        assert workers.failures == 1
    finally:
        workers.stop()


# -- handlers that write nothing transactional: batches -----------------------------------------


def _returns_nothing(ctx: JobContext) -> None:
    return None


def _marked(ctx: JobContext) -> None:
    return None


_marked.pgmlops_transactional = False  # type: ignore[attr-defined]


def test_handlers_are_transactional_unless_they_declare_otherwise() -> None:
    handlers.register("t_plain", _returns_nothing, replace=True)
    handlers.register("t_declared", _returns_nothing, replace=True, transactional=False)
    handlers.register("t_marked", _marked, replace=True)
    handlers.register("t_overridden", _marked, replace=True, transactional=True)
    assert [handlers.is_transactional(k) for k in ("t_plain", "t_declared", "t_marked", "t_overridden")] == [
        True, False, False, True]
    assert handlers.is_transactional("echo") is False  # an entry point, marked on its function
    assert handlers.is_transactional("effect") is True and handlers.is_transactional("beacon") is False
    _marked.pgmlops_transactional = "no"  # type: ignore[attr-defined]
    try:
        with pytest.raises(TypeError, match="must be True or False"):
            handlers.register("t_bad", _marked, replace=True)
    finally:
        _marked.pgmlops_transactional = False  # type: ignore[attr-defined]


def test_a_batch_of_non_transactional_jobs_is_acknowledged_in_one_transaction(db: tuple[str, Conn, str]) -> None:
    url, conn, _ = db
    conn.execute("select ml.enqueue('echo', '{}') from generate_series(1, 16)")
    with pool(url, 1, prefetch=8):
        wait_for(lambda: scalar(conn, "select count(*) from ml.jobs where status = 'succeeded'") == 16)
    # Two claims of 8, each batch acknowledged by one statement: two writing transactions.
    assert scalar(conn, "select count(distinct xmin::text) from ml.jobs") == 2
    assert scalar(conn, "select count(*) from ml.jobs where attempts = 1 and result ->> 'attempt' = '1'") == 16
    per_job = conn.execute(
        "select count(*), count(distinct payload ->> 'job_id') from ml.events where event = 'job.succeeded'").fetchone()
    assert per_job == (16, 16)


def test_transactional_jobs_still_commit_one_by_one(db: tuple[str, Conn, str]) -> None:
    url, conn, _ = db
    conn.execute("select ml.enqueue('effect', '{}') from generate_series(1, 8)")
    with pool(url, 1, prefetch=8):
        wait_for(lambda: scalar(conn, "select count(*) from ml.jobs where status = 'succeeded'") == 8)
    assert scalar(conn, "select count(distinct xmin::text) from ml.jobs") == 8
    assert scalar(conn, "select count(distinct xmin::text) from test_effects") == 8


def test_the_next_claim_commits_with_the_last_completion(db: tuple[str, Conn, str]) -> None:
    url, conn, _ = db
    ids = [queue.enqueue(conn, "effect", {}) for _ in range(3)]
    with pool(url, 1, prefetch=1):
        wait_for(lambda: scalar(conn, "select count(*) from ml.jobs where status = 'succeeded'") == 3)
    tx = dict(conn.execute(
        "select event || ' ' || (payload ->> 'job_id'), xmin::text from ml.events where event in ('job.running', "
        "'job.succeeded')").fetchall())
    # Job n's success and job n+1's claim are one transaction: one commit per job, not two.
    assert tx[f"job.succeeded {ids[0]}"] == tx[f"job.running {ids[1]}"] != tx[f"job.running {ids[0]}"]
    assert tx[f"job.succeeded {ids[1]}"] == tx[f"job.running {ids[2]}"]
    assert scalar(conn, "select count(distinct job_id) from test_effects") == 3


def test_a_non_transactional_handler_reads_as_its_jobs_tenant_and_cannot_write(db: tuple[str, Conn, str]) -> None:
    url, conn, tenant = db
    other = make_tenant(conn)
    act_for(conn, other)
    theirs = queue.enqueue(conn, "beacon", {})
    act_for(conn, tenant)
    ours = queue.enqueue(conn, "beacon", {})
    sneaky = queue.enqueue(conn, "sneaky", {})
    with pool(url, 1, kinds=["beacon", "sneaky"], prefetch=8, poll_interval=0.1):
        wait_for(lambda: scalar(conn, "select count(*) from ml.jobs where finished_at is not null") == 3)
    assert queue.result(conn, ours)["result"]["acting_tenant"] == tenant
    assert queue.result(conn, theirs)["result"]["acting_tenant"] == other
    assert queue.result(conn, ours)["result"]["role"] == "service_role"
    refused = queue.result(conn, sneaky)
    assert (refused["status"], refused["attempts"]) == ("dead", 2)
    assert "cannot execute INSERT in a read-only transaction" in refused["error"]
    assert scalar(conn, "select count(*) from test_effects") == 0


def test_a_batch_fails_only_its_failing_jobs(db: tuple[str, Conn, str]) -> None:
    url, conn, _ = db
    good = [queue.enqueue(conn, "echo", {}) for _ in range(4)]
    flaky = queue.enqueue(conn, "echo", {"fail_attempts": 1})
    broken = queue.enqueue(conn, "echo", {"fail": "permanent"})
    conn.execute("update ml.job_kinds set retry_base = '50 milliseconds' where kind = 'echo'")
    with pool(url, 1, prefetch=8, poll_interval=0.1):
        wait_for(lambda: scalar(conn, "select count(*) from ml.jobs where finished_at is not null") == 6)
    assert [(queue.result(conn, j)["status"], queue.result(conn, j)["attempts"]) for j in good] == [("succeeded", 1)] * 4
    assert (queue.result(conn, flaky)["status"], queue.result(conn, flaky)["attempts"]) == ("succeeded", 2)
    assert queue.result(conn, broken)["status"] == "failed"


def test_sigterm_mid_batch_acknowledges_finished_jobs_and_gives_the_rest_back(db: tuple[str, Conn, str]) -> None:
    url, conn, _ = db
    conn.execute("select ml.enqueue('beacon', '{\"sleep_ms\": 1500}') from generate_series(1, 4)")
    workers = pool(url, 1, kinds=["beacon"], prefetch=4).start()
    try:
        wait_for(lambda: scalar(conn, "select count(*) from ml.jobs where status = 'running'") == 4)
        time.sleep(0.3)  # the first job's handler is under way
        workers.signal(signal.SIGTERM)
        wait_for(lambda: workers.alive() == 0, timeout=30, what="the worker to exit")
        workers.check(restart=False)
        assert workers.failures == 0
    finally:
        workers.stop()
    rows = conn.execute("select status, attempts from ml.jobs order by id").fetchall()
    assert rows == [("succeeded", 1), ("queued", 0), ("queued", 0), ("queued", 0)]


def test_a_worker_sigkilled_mid_batch_loses_nothing_and_every_job_succeeds_once(
        db: tuple[str, Conn, str], tmp_path: Path) -> None:
    url, conn, _ = db
    runs = tmp_path / "runs"
    runs.touch()
    conn.execute("select ml.enqueue('beacon', %s) from generate_series(1, 48)",
                 (json.dumps({"sleep_ms": 250, "file": str(runs)}),))

    def executions() -> list[tuple[int, int, str]]:
        return [(int(job), int(attempt), worker) for job, attempt, worker in
                (line.split() for line in runs.read_text().splitlines())]

    def finished_unacknowledged() -> set[tuple[int, str]]:
        """(job, worker) of jobs whose handler returned but whose batch is not acknowledged yet."""
        held = dict(conn.execute("select id, locked_by from ml.jobs where status = 'running'").fetchall())
        return {(job, worker) for job, _, worker in executions() if held.get(job) == worker}

    with pool(url, 2, kinds=["beacon"], prefetch=8, lease=1.5):
        wait_for(lambda: scalar(conn, "select count(*) from ml.jobs where status = 'succeeded'") >= 8,
                 what="a first batch to be acknowledged")
        wait_for(lambda: bool(finished_unacknowledged()), what="a worker in the middle of a batch")
        victim = next(iter(finished_unacknowledged()))[1]
        os.kill(pid_of(victim), signal.SIGKILL)
        wait_for(lambda: scalar(conn, "select count(*) from ml.jobs where status = 'succeeded'") == 48,
                 timeout=60, what="all 48 jobs")
    succeeded_by = dict(conn.execute(
        "select (payload ->> 'job_id')::bigint, payload ->> 'worker' from ml.events where event = 'job.succeeded'"))
    ran = executions()
    # The victim's finished but unacknowledged jobs: their handlers ran again (at least once is the
    # contract), but each job succeeded once, on its second attempt, acknowledged by another worker.
    rerun = sorted({job for job, _, worker in ran if worker == victim and succeeded_by[job] != victim})
    assert rerun, "the worker was killed after acknowledging its batch: nothing to take over"
    for job in rerun:
        assert [worker for j, _, worker in ran if j == job] == [victim, succeeded_by[job]]
    state = conn.execute("select attempts, locked_by from ml.jobs where id = any(%s)", (rerun,)).fetchall()
    assert all(attempts == 2 and worker != victim for attempts, worker in state)
    assert scalar(conn, "select count(*) from ml.jobs where status <> 'succeeded'") == 0
    per_job = conn.execute(
        "select count(*), count(distinct payload ->> 'job_id') from ml.events where event = 'job.succeeded'").fetchone()
    assert per_job == (48, 48)


@needs_proc
def test_workers_die_with_their_sigkilled_supervisor_and_their_job_then_succeeds_once(
        db: tuple[str, Conn, str], tmp_path: Path) -> None:
    url, conn, _ = db
    job_id = queue.enqueue(conn, "effect", {"sleep_ms": 3000})
    with (tmp_path / "supervisor.log").open("w") as log:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "pgmlops", "worker", "--kinds", "effect", "--concurrency", "2", "--lease", "1.5",
             "--import", "tests.handlers_for_tests"],
            cwd=ROOT, env={**os.environ, "DATABASE_URL": url}, stdout=log, stderr=subprocess.STDOUT)
    tree: dict[int, int] = {}
    try:
        wait_for(lambda: scalar(conn, "select status from ml.jobs where id = %s", job_id) == "running",
                 what="a worker of the supervisor to run the job")
        victim = scalar(conn, "select locked_by from ml.jobs where id = %s", job_id)
        tree = descendants(supervisor.pid)
        assert pid_of(victim) in tree and len(tree) >= 2
        supervisor.kill()
        supervisor.wait()
        wait_for(lambda: not any(running(pid, started) for pid, started in tree.items()), timeout=5,
                 what="every process of the killed supervisor to end")
    finally:
        supervisor.kill()
        supervisor.wait()
        kill_leftovers(tree)
    # The orphan died mid-job: nothing completed it, and nothing of its attempt landed.
    assert conn.execute("select status, locked_by from ml.jobs where id = %s", (job_id,)).fetchone() == ("running", victim)
    assert scalar(conn, "select count(*) from test_effects") == 0

    with pool(url, 1, lease=1.5):
        wait_for(lambda: scalar(conn, "select status from ml.jobs where id = %s", job_id) == "succeeded",
                 timeout=30, what="a new worker to take the job over")
    state = conn.execute("select attempts, locked_by from ml.jobs where id = %s", (job_id,)).fetchone()
    assert state[0] == 2 and state[1] != victim
    assert scalar(conn, "select count(*) from test_effects where job_id = %s", job_id) == 1
    successes = conn.execute("select (payload ->> 'attempts')::int from ml.events "
                             "where topic = 'job' and event = 'job.succeeded'").fetchall()
    assert successes == [(2,)]


# Spawns a child guarded only by the portable parent watch, prints its pid, then waits to be killed.
SUPERVISOR_OF_A_WATCHED_CHILD = """
import multiprocessing, time
from tests.handlers_for_tests import watch_parent_then_sleep
child = multiprocessing.get_context("spawn").Process(target=watch_parent_then_sleep)
child.start()
print(child.pid, flush=True)
time.sleep(120)
"""


@needs_proc
def test_without_prctl_the_parent_watch_alone_ends_an_orphan_within_seconds() -> None:
    supervisor = subprocess.Popen([sys.executable, "-c", SUPERVISOR_OF_A_WATCHED_CHILD], cwd=ROOT,
                                  stdout=subprocess.PIPE, text=True)
    child: dict[int, int] = {}
    try:
        assert supervisor.stdout is not None
        pid = int(supervisor.stdout.readline())
        stat = proc_stat(pid)
        assert stat is not None and stat[1] == supervisor.pid
        child = {pid: stat[2]}
        time.sleep(1.0)  # the child is up (or nearly): it must die however far it got
        assert running(pid, stat[2])
        supervisor.kill()
        supervisor.wait()
        wait_for(lambda: not running(pid, stat[2]), timeout=5, what="the orphan to end")
    finally:
        supervisor.kill()
        supervisor.wait()
        kill_leftovers(child)
        if supervisor.stdout is not None:
            supervisor.stdout.close()
