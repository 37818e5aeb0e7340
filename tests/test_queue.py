"""The job queue in SQL: enqueue validation, claiming, leases, retries, dead letters, cancel."""

from __future__ import annotations

import re
import time
import uuid
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from pgmlops.db import tenant_context
from pgmlops.errors import AccessDenied, InvalidInput, LeaseLost, NotFound
from pgmlops.jobs import queue

from .conftest import act_for, make_tenant

Conn = psycopg.Connection[Any]


def job_count(conn: Conn) -> int:
    return int(conn.execute("select count(*) from ml.jobs").fetchone()[0])


@pytest.fixture(autouse=True)
def empty_queue(conn: Conn) -> None:
    """Each test starts with an empty queue (the database is shared by the module)."""
    conn.execute("delete from ml.jobs")


# -- enqueue ---------------------------------------------------------------------------------


def test_enqueue_returns_the_id_of_a_queued_job(conn: Conn, tenant: str) -> None:
    job_id = queue.enqueue(conn, "echo", {"message": "hi"}, priority=5)
    row = conn.execute("select tenant_id::text, kind, payload, status, priority, attempts, max_attempts "
                       "from ml.jobs where id = %s", (job_id,)).fetchone()
    assert row == (tenant, "echo", {"message": "hi"}, "queued", 5, 0, 3)


@pytest.mark.parametrize(
    ("kind", "payload", "sqlstate", "words"),
    [
        ("no_such_kind", {}, "22023", ["kind", "unknown job kind 'no_such_kind'"]),
        ("echo", {"sleep_ms": "slow"}, "22023", ["payload", "$.sleep_ms", "integer"]),
        ("echo", {"sleep_ms": -5}, "22023", ["payload", "$.sleep_ms", ">= 0"]),
        ("echo", {"sleep_ms": 1.5}, "22023", ["payload", "$.sleep_ms", "integer"]),
        ("echo", {"fail": "sometimes"}, "22023", ["payload", "$.fail", "must be one of"]),
        ("echo", {"message": "x" * 10001}, "22023", ["payload", "$.message", "at most 10000 characters"]),
    ],
)
def test_enqueue_refuses_bad_input_and_writes_nothing(conn: Conn, tenant: str, kind: str,
                                                      payload: dict[str, Any], sqlstate: str,
                                                      words: list[str]) -> None:
    with pytest.raises(InvalidInput) as info:
        queue.enqueue(conn, kind, payload)
    assert info.value.sqlstate == sqlstate
    for word in words:
        assert word in str(info.value)
    assert job_count(conn) == 0


@pytest.mark.parametrize("payload", ["[1, 2]", "\"text\"", "null", "42"])
def test_enqueue_refuses_a_payload_that_is_not_an_object(conn: Conn, tenant: str, payload: str) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="payload: must be a JSON object"):
        conn.execute(f"select ml.enqueue('echo', '{payload}'::jsonb)")
    assert job_count(conn) == 0


@pytest.mark.parametrize(("column", "value", "message"), [
    ("priority", 5000, "priority: must be between -1000 and 1000"),
    ("max_attempts", 0, "max_attempts: must be between 1 and 100"),
    ("max_attempts", 101, "max_attempts: must be between 1 and 100"),
])
def test_enqueue_refuses_out_of_range_options(conn: Conn, tenant: str, column: str, value: int,
                                              message: str) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
        conn.execute(f"select ml.enqueue('echo', '{{}}', {column} => %s)", (value,))
    assert job_count(conn) == 0


def test_enqueue_refuses_an_oversize_payload(conn: Conn, tenant: str) -> None:
    big = {"blob": "x" * 2_000_000}
    with pytest.raises(InvalidInput) as info:
        queue.enqueue(conn, "echo", big)
    assert info.value.sqlstate == "54000"
    assert "payload: must be at most 1 MB" in str(info.value)
    assert job_count(conn) == 0


def test_enqueue_needs_a_tenant_in_context(conn: Conn) -> None:
    act_for(conn, None)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="no tenant in context"):
        conn.execute("select ml.enqueue('echo', '{}')")
    assert job_count(conn) == 0


def test_enqueue_refuses_a_tenant_that_does_not_exist(conn: Conn) -> None:
    act_for(conn, "00000000-0000-0000-0000-000000000000")
    with pytest.raises(NotFound, match="does not exist"):
        queue.enqueue(conn, "echo", {})
    act_for(conn, "not-a-uuid")
    with pytest.raises(psycopg.errors.InvalidTextRepresentation, match="tenant_id 'not-a-uuid' is not a uuid"):
        conn.execute("select ml.enqueue('echo', '{}')")
    assert job_count(conn) == 0


def test_enqueue_wakes_listeners_with_the_kind(conn: Conn, tenant: str, db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("listen ml_jobs")
        queue.enqueue(conn, "echo", {})
        notes = list(listener.notifies(timeout=5, stop_after=1))
    assert [(n.channel, n.payload) for n in notes] == [("ml_jobs", "echo")]


# -- claiming ----------------------------------------------------------------------------------


def test_claim_takes_highest_priority_then_oldest_first(conn: Conn, tenant: str) -> None:
    low = queue.enqueue(conn, "echo", {}, priority=-1)
    first = queue.enqueue(conn, "echo", {})
    second = queue.enqueue(conn, "echo", {})
    urgent = queue.enqueue(conn, "echo", {}, priority=10)
    claimed = [queue.claim(conn, "w1", ["echo"])[0].id for _ in range(4)]
    assert claimed == [urgent, first, second, low]


def test_claim_marks_jobs_running_for_the_worker_and_counts_the_attempt(conn: Conn, tenant: str) -> None:
    queue.enqueue(conn, "echo", {})
    [job] = queue.claim(conn, "w1", ["echo"], 1, timedelta(seconds=30))
    assert job.status == "running" and job.locked_by == "w1" and job.attempts == 1
    assert job.lease == timedelta(seconds=30)
    assert job.lease_expires_at is not None and job.started_at is not None
    assert queue.claim(conn, "w2", ["echo"]) == []


def test_claim_ignores_jobs_that_are_not_due_or_of_other_kinds(conn: Conn, tenant: str) -> None:
    conn.execute("select ml.enqueue('echo', '{}', run_after => now() + interval '1 hour')")
    queue.enqueue(conn, "echo", {})
    assert queue.claim(conn, "w1", ["train"]) == []
    assert len(queue.claim(conn, "w1", ["echo"], 10)) == 1


def test_concurrent_claimers_never_take_the_same_job(conn: Conn, tenant: str, db_url: str) -> None:
    conn.execute("select ml.enqueue('echo', '{}') from generate_series(1, 10)")
    with psycopg.connect(db_url) as a, psycopg.connect(db_url) as b:
        got_a = queue.claim(a, "a", ["echo"], 6)  # a's transaction stays open: rows stay locked
        got_b = queue.claim(b, "b", ["echo"], 6)  # b skips a's locked rows instead of waiting
        a.commit()
        b.commit()
    ids_a = {j.id for j in got_a}
    ids_b = {j.id for j in got_b}
    assert len(ids_a) == 6 and len(ids_b) == 4 and not ids_a & ids_b


@pytest.mark.parametrize(("args", "message"), [
    (("", ["echo"], 1, None), "worker_id: must be 1 to 200 characters"),
    (("w", ["echo"], 0, None), "max_jobs: must be between 1 and 1000"),
    (("w", ["echo"], 1, timedelta(seconds=-1)), "lease: must be a positive interval"),
])
def test_claim_refuses_bad_arguments(conn: Conn, args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        queue.claim(conn, *args)


# -- leases ------------------------------------------------------------------------------------


def test_heartbeat_extends_the_lease_only_for_the_holder(conn: Conn, tenant: str) -> None:
    queue.enqueue(conn, "echo", {})
    [job] = queue.claim(conn, "w1", ["echo"], 1, timedelta(seconds=30))
    time.sleep(0.05)
    assert queue.heartbeat(conn, job.id, "w1") is True
    after = conn.execute("select lease_expires_at from ml.jobs where id = %s", (job.id,)).fetchone()[0]
    assert after > job.lease_expires_at
    assert queue.heartbeat(conn, job.id, "w2") is False


def test_a_job_whose_lease_expired_is_claimable_again(conn: Conn, tenant: str) -> None:
    job_id = queue.enqueue(conn, "echo", {})
    queue.claim(conn, "dead-worker", ["echo"], 1, timedelta(milliseconds=200))
    assert queue.claim(conn, "w2", ["echo"]) == []
    time.sleep(0.3)
    [again] = queue.claim(conn, "w2", ["echo"])
    assert again.id == job_id and again.locked_by == "w2" and again.attempts == 2
    assert "lease expired: worker dead-worker stopped heartbeating" in (again.error or "")


def test_late_completion_by_a_worker_that_lost_the_job_is_refused(conn: Conn, tenant: str) -> None:
    job_id = queue.enqueue(conn, "echo", {})
    queue.claim(conn, "slow", ["echo"], 1, timedelta(milliseconds=200))
    time.sleep(0.3)
    queue.claim(conn, "fast", ["echo"])
    with pytest.raises(LeaseLost, match=f"job {job_id} is not held by worker slow: result refused"):
        queue.complete(conn, job_id, "slow", {"late": True})
    assert queue.heartbeat(conn, job_id, "slow") is False
    queue.complete(conn, job_id, "fast", {"on_time": True})
    assert queue.result(conn, job_id)["result"] == {"on_time": True}


def test_completion_after_the_lease_expired_is_refused_even_if_nobody_took_the_job(conn: Conn, tenant: str) -> None:
    job_id = queue.enqueue(conn, "echo", {})
    queue.claim(conn, "w1", ["echo"], 1, timedelta(milliseconds=100))
    time.sleep(0.2)
    with pytest.raises(LeaseLost):
        queue.complete(conn, job_id, "w1", {})
    assert conn.execute("select status, result from ml.jobs where id = %s", (job_id,)).fetchone() == ("running", None)


def test_expired_lease_on_the_last_attempt_dead_letters_the_job(conn: Conn, tenant: str) -> None:
    job_id = queue.enqueue(conn, "echo", {}, max_attempts=1)
    queue.claim(conn, "w1", ["echo"], 1, timedelta(milliseconds=100))
    time.sleep(0.2)
    assert conn.execute("select ml.reap_expired_leases()").fetchone()[0] == 1
    state = queue.result(conn, job_id)
    assert state["status"] == "dead" and state["finished_at"] is not None
    assert "lease expired" in state["error"]


# -- completion and failure ---------------------------------------------------------------------


def test_complete_stores_the_result(conn: Conn, tenant: str) -> None:
    job_id = queue.enqueue(conn, "echo", {})
    queue.claim(conn, "w1", ["echo"])
    queue.complete(conn, job_id, "w1", {"answer": 42})
    state = queue.result(conn, job_id)
    assert state["status"] == "succeeded" and state["result"] == {"answer": 42}
    assert state["finished_at"] is not None


# -- batched completion ------------------------------------------------------------------------


def test_complete_many_accepts_the_held_jobs_and_refuses_a_lost_one(conn: Conn, tenant: str) -> None:
    kept = [queue.enqueue(conn, "echo", {}) for _ in range(2)]
    lost = queue.enqueue(conn, "echo", {})
    queue.claim(conn, "w1", ["echo"], 2, timedelta(seconds=30))
    queue.claim(conn, "w1", ["echo"], 1, timedelta(milliseconds=100))
    time.sleep(0.2)
    queue.claim(conn, "w2", ["echo"])  # w1's lease on the third job expired: w2 holds it now
    accepted = queue.complete_many(conn, "w1", {kept[0]: {"n": 0}, lost: {"late": True}, kept[1]: {"n": 1}})
    assert accepted == set(kept)
    assert [queue.result(conn, j)["result"] for j in kept] == [{"n": 0}, {"n": 1}]
    assert conn.execute("select status, locked_by, result from ml.jobs where id = %s", (lost,)).fetchone() == (
        "running", "w2", None)
    assert queue.complete_many(conn, "w2", {lost: None}) == {lost}
    assert queue.complete_many(conn, "w2", {lost: {"again": True}}) == set()  # finished: refused
    assert queue.result(conn, lost)["result"] is None


def test_complete_many_refuses_jobs_cancelled_or_never_claimed(conn: Conn, tenant: str) -> None:
    cancelled, queued = queue.enqueue(conn, "echo", {}), queue.enqueue(conn, "echo", {})
    conn.execute("update ml.jobs set run_after = now() + interval '1 hour' where id = %s", (queued,))
    queue.claim(conn, "w1", ["echo"])
    queue.cancel(conn, cancelled)
    assert queue.complete_many(conn, "w1", {cancelled: {}, queued: {}, 999999: {}}) == set()
    assert [queue.result(conn, j)["status"] for j in (cancelled, queued)] == ["cancelled", "queued"]


def test_complete_many_emits_one_succeeded_event_per_job(conn: Conn, tenant: str) -> None:
    ids = [queue.enqueue(conn, "echo", {}) for _ in range(5)]
    queue.claim(conn, "w1", ["echo"], 5)
    assert queue.complete_many(conn, "w1", dict.fromkeys(ids)) == set(ids)
    events = conn.execute(
        "select (payload ->> 'job_id')::bigint, tenant_id::text, payload ->> 'worker' from ml.events "
        "where event = 'job.succeeded' and (payload ->> 'job_id')::bigint = any(%s) order by 1", (ids,)).fetchall()
    assert events == [(j, tenant, "w1") for j in ids]
    # One statement, one transaction: the batch commits once.
    assert conn.execute("select count(distinct xmin::text) from ml.jobs where id = any(%s)", (ids,)).fetchone()[0] == 1


@pytest.mark.parametrize(("worker", "ids", "results", "message"), [
    ("", [1], None, "worker_id: must be 1 to 200 characters"),
    ("w1", None, None, "job_ids: must be an array of at most 1000 ids, got NULL"),
    ("w1", list(range(1, 1002)), None, "job_ids: must be an array of at most 1000 ids, got 1001 ids"),
    ("w1", [1, 1], None, "job_ids: must be distinct and not NULL"),
    ("w1", [1, None], None, "job_ids: must be distinct and not NULL"),
    ("w1", [1, 2], ["{}"], "results: must have one entry per job id (2), got 1"),
])
def test_complete_jobs_refuses_bad_arguments(conn: Conn, tenant: str, worker: str, ids: list[int | None] | None,
                                             results: list[str] | None, message: str) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=re.escape(message)):
        conn.execute("select ml.complete_jobs(%s, %s::bigint[], %s::jsonb[])", (worker, ids, results))


def test_complete_many_refuses_an_oversize_result_and_writes_nothing(conn: Conn, tenant: str) -> None:
    small, big = queue.enqueue(conn, "echo", {}), queue.enqueue(conn, "echo", {})
    queue.claim(conn, "w1", ["echo"], 2)
    with pytest.raises(InvalidInput, match=f"result of job {big}: must be at most 1 MB") as info:
        queue.complete_many(conn, "w1", {small: {"ok": True}, big: {"blob": "x" * 2_000_000}})
    assert info.value.sqlstate == "54000"
    assert [queue.result(conn, j)["status"] for j in (small, big)] == ["running", "running"]


def test_complete_many_keeps_tenants_apart(conn: Conn, tenant: str) -> None:
    other = make_tenant(conn)
    ours = queue.enqueue(conn, "echo", {})
    act_for(conn, other)
    theirs = queue.enqueue(conn, "echo", {})
    queue.claim(conn, "w1", ["echo"], 2)
    with tenant_context(conn):  # as a worker acknowledges a batch: the service role, any tenant
        assert queue.complete_many(conn, "w1", {ours: {"for": "us"}, theirs: {"for": "them"}}) == {ours, theirs}
    member = str(uuid.uuid4())
    conn.execute("select ml.add_tenant_member(%s, %s, 'ml_engineer')", (tenant, member))
    with tenant_context(conn, tenant, user=member):
        assert conn.execute("select id, result from ml.jobs").fetchall() == [(ours, {"for": "us"})]
        succeeded = conn.execute("select (payload ->> 'job_id')::bigint from ml.events "
                                 "where event = 'job.succeeded'").fetchall()
        assert succeeded == [(ours,)]
        with pytest.raises(AccessDenied):  # members may read their jobs, never complete them
            queue.complete_many(conn, "w1", {ours: None})


def test_failures_back_off_exponentially_then_dead_letter(conn: Conn, tenant: str) -> None:
    job_id = queue.enqueue(conn, "echo", {}, max_attempts=3)
    delays = []
    for attempt in (1, 2):
        conn.execute("update ml.jobs set run_after = now() where id = %s", (job_id,))
        queue.claim(conn, "w1", ["echo"])
        assert queue.fail(conn, job_id, "w1", f"boom {attempt}") == "queued"
        delays.append(conn.execute("select extract(epoch from run_after - clock_timestamp()) from ml.jobs "
                                   "where id = %s", (job_id,)).fetchone()[0])
    # echo's retry_base is 1 s: 1 s after the first failure, 2 s after the second.
    assert 0.8 < float(delays[0]) <= 1.0
    assert 1.8 < float(delays[1]) <= 2.0
    conn.execute("update ml.jobs set run_after = now() where id = %s", (job_id,))
    queue.claim(conn, "w1", ["echo"])
    assert queue.fail(conn, job_id, "w1", "boom 3") == "dead"
    state = queue.result(conn, job_id)
    assert state["status"] == "dead" and state["attempts"] == 3 and state["error"] == "boom 3"
    assert queue.claim(conn, "w1", ["echo"]) == []


def test_backoff_is_capped_by_the_kind(conn: Conn, tenant: str) -> None:
    job_id = queue.enqueue(conn, "echo", {}, max_attempts=20)
    conn.execute("update ml.jobs set attempts = 15 where id = %s", (job_id,))
    queue.claim(conn, "w1", ["echo"])
    queue.fail(conn, job_id, "w1", "again")
    delay = conn.execute("select extract(epoch from run_after - clock_timestamp()) from ml.jobs where id = %s",
                         (job_id,)).fetchone()[0]
    assert 55 < float(delay) <= 60  # echo's retry_cap is 1 minute


def test_a_failure_without_retry_is_final(conn: Conn, tenant: str) -> None:
    job_id = queue.enqueue(conn, "echo", {})
    queue.claim(conn, "w1", ["echo"])
    assert queue.fail(conn, job_id, "w1", "bad input", retry=False) == "failed"
    assert queue.result(conn, job_id)["status"] == "failed"


def test_fail_by_a_worker_that_does_not_hold_the_job_is_refused(conn: Conn, tenant: str) -> None:
    job_id = queue.enqueue(conn, "echo", {})
    queue.claim(conn, "w1", ["echo"])
    with pytest.raises(LeaseLost):
        queue.fail(conn, job_id, "w2", "not mine")
    assert queue.result(conn, job_id)["status"] == "running"


def test_release_gives_the_job_back_without_counting_the_attempt(conn: Conn, tenant: str) -> None:
    job_id = queue.enqueue(conn, "echo", {})
    queue.claim(conn, "w1", ["echo"])
    queue.release(conn, job_id, "w1")
    [again] = queue.claim(conn, "w2", ["echo"])
    assert again.id == job_id and again.attempts == 1


def test_oversize_result_is_refused(conn: Conn, tenant: str) -> None:
    job_id = queue.enqueue(conn, "echo", {})
    queue.claim(conn, "w1", ["echo"])
    with pytest.raises(InvalidInput, match="result: must be at most 1 MB"):
        queue.complete(conn, job_id, "w1", {"blob": "x" * 2_000_000})
    assert queue.result(conn, job_id)["status"] == "running"


# -- cancel and results ------------------------------------------------------------------------


def test_cancel_stops_a_queued_job_and_reports_finished_ones(conn: Conn, tenant: str) -> None:
    job_id = queue.enqueue(conn, "echo", {})
    assert queue.cancel(conn, job_id) is True
    assert queue.result(conn, job_id)["status"] == "cancelled"
    assert queue.cancel(conn, job_id) is False
    assert queue.claim(conn, "w1", ["echo"]) == []


def test_cancelling_a_running_job_refuses_its_result(conn: Conn, tenant: str) -> None:
    job_id = queue.enqueue(conn, "echo", {})
    queue.claim(conn, "w1", ["echo"])
    assert queue.cancel(conn, job_id) is True
    assert queue.heartbeat(conn, job_id, "w1") is False
    with pytest.raises(LeaseLost):
        queue.complete(conn, job_id, "w1", {})
    assert queue.result(conn, job_id)["status"] == "cancelled"


def test_unknown_jobs_are_not_found(conn: Conn, tenant: str) -> None:
    with pytest.raises(NotFound, match="job 999999 not found"):
        queue.result(conn, 999999)
    with pytest.raises(NotFound):
        queue.cancel(conn, 999999)


def test_job_counts_group_by_kind_and_status(conn: Conn, tenant: str) -> None:
    for _ in range(3):
        queue.enqueue(conn, "echo", {})
    queue.claim(conn, "w1", ["echo"])
    assert queue.counts(conn) == [("echo", "queued", 2), ("echo", "running", 1)]


def test_deleting_a_tenant_erases_its_jobs_and_events(conn: Conn) -> None:
    doomed = make_tenant(conn)
    act_for(conn, doomed)
    queue.enqueue(conn, "echo", {})
    conn.execute("delete from ml.tenants where id = %s", (doomed,))
    assert conn.execute("select count(*) from ml.jobs where tenant_id = %s", (doomed,)).fetchone()[0] == 0
    assert conn.execute("select count(*) from ml.events where tenant_id = %s", (doomed,)).fetchone()[0] == 0
