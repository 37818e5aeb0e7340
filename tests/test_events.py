"""Events: ml.events, NOTIFY on ml_events, Supabase Realtime, and the Python subscriber."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from pgmlops import events
from pgmlops.errors import AccessDenied, InvalidInput
from pgmlops.jobs import queue

from .conftest import act_for, make_tenant

Conn = psycopg.Connection[Any]


def test_job_state_changes_are_announced_and_logged(any_db_url: str) -> None:
    got: list[events.Event] = []
    with psycopg.connect(any_db_url, autocommit=True) as conn, psycopg.connect(any_db_url, autocommit=True) as listener:
        tenant = make_tenant(conn)
        act_for(conn, tenant)
        listener.execute("listen ml_events")
        job_id = queue.enqueue(conn, "echo", {"message": "hi"})
        queue.claim(conn, "w1", ["echo"])
        queue.complete(conn, job_id, "w1", {"ok": True})
        for note in listener.notifies(timeout=5, stop_after=3):
            got.append(events.Event.from_json(note.payload))
        logged = conn.execute("select event, payload from ml.events where tenant_id = %s order by id",
                              (tenant,)).fetchall()
    assert [e.event for e in got] == ["job.queued", "job.running", "job.succeeded"]
    assert all(e.tenant_id == tenant and e.topic == "job" and e.data["job_id"] == job_id for e in got)
    assert got[1].data["worker"] == "w1" and got[1].data["attempts"] == 1
    assert [row[0] for row in logged] == ["job.queued", "job.running", "job.succeeded"]
    assert [e.id for e in got] == sorted(e.id for e in got)


def test_subscribe_filters_by_tenant_and_stops_after_n(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        mine, theirs = make_tenant(conn), make_tenant(conn)
        received: list[events.Event] = []
        started = threading.Event()

        def consume() -> None:
            gen = events.subscribe(db_url, tenant_id=mine, timeout=10, stop_after=2)
            started.set()
            received.extend(gen)

        worker = threading.Thread(target=consume, daemon=True)
        worker.start()
        started.wait(5)
        # Publish until the subscriber (which LISTENs on its first iteration) has two of ours.
        for _ in range(50):
            act_for(conn, theirs)
            queue.enqueue(conn, "echo", {})
            act_for(conn, mine)
            queue.enqueue(conn, "echo", {})
            worker.join(0.1)
            if not worker.is_alive():
                break
    assert len(received) == 2
    assert {e.tenant_id for e in received} == {mine}


def test_a_long_error_keeps_the_notification_under_8000_bytes(conn: Conn, db_url: str) -> None:
    conn.execute("delete from ml.jobs")  # the module's database is shared: claim only this test's job
    tenant = make_tenant(conn)
    act_for(conn, tenant)
    job_id = queue.enqueue(conn, "echo", {})
    queue.claim(conn, "w1", ["echo"])
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("listen ml_events")
        queue.fail(conn, job_id, "w1", "x" * 50_000, retry=False)
        [note] = list(listener.notifies(timeout=5, stop_after=1))
    assert len(note.payload.encode()) < 8000
    assert events.Event.from_json(note.payload).data["error"] == "x" * 500
    assert len(queue.result(conn, job_id)["error"]) == 10_000  # the job keeps the first 10,000


def test_an_oversize_event_is_announced_truncated_and_kept_whole(conn: Conn, db_url: str) -> None:
    tenant = make_tenant(conn)
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("listen ml_events")
        event_id = conn.execute("select ml_private.publish(%s, 'demo', 'demo.big', jsonb_build_object('blob', repeat('y', 20000)))",
                                (tenant,)).fetchone()[0]
        [note] = list(listener.notifies(timeout=5, stop_after=1))
    ev = events.Event.from_json(note.payload)
    assert ev.id == event_id and ev.truncated and ev.data == {}
    kept = conn.execute("select length(payload ->> 'blob') from ml.events where id = %s", (event_id,)).fetchone()[0]
    assert kept == 20000


def test_events_go_to_supabase_realtime_when_it_exists(fresh_db_url: str) -> None:
    with psycopg.connect(fresh_db_url, autocommit=True) as conn:
        # The shape of Supabase's realtime.send, recording its calls instead of broadcasting.
        conn.execute("create schema realtime")
        conn.execute("create table realtime.sent (payload jsonb, event text, topic text, private boolean)")
        conn.execute("""create function realtime.send(payload jsonb, event text, topic text, private boolean default true)
                        returns void language sql as
                        $$ insert into realtime.sent values (payload, event, topic, private) $$""")
        assert conn.execute("select (ml.capabilities() ->> 'realtime')::boolean").fetchone()[0] is True
        tenant = make_tenant(conn)
        act_for(conn, tenant)
        job_id = queue.enqueue(conn, "echo", {})
        sent = conn.execute("select event, topic, private, payload -> 'data' ->> 'job_id' from realtime.sent").fetchall()
    assert sent == [("job.queued", f"ml:{tenant}", True, str(job_id))]


def test_recent_returns_the_newest_events_oldest_first(conn: Conn) -> None:
    tenant = make_tenant(conn)
    act_for(conn, tenant)
    for _ in range(3):
        queue.enqueue(conn, "echo", {})
    latest = events.recent(conn, 2)
    assert len(latest) == 2 and latest[0].id < latest[1].id
    assert latest[-1].event == "job.queued"


@pytest.mark.parametrize("topics", [["job"], ["nothing"]])
def test_recent_filters_by_topic(conn: Conn, topics: list[str]) -> None:
    tenant = make_tenant(conn)
    act_for(conn, tenant)
    queue.enqueue(conn, "echo", {})
    got = events.recent(conn, 5, topics=topics)
    assert bool(got) is (topics == ["job"])


def test_a_handler_announces_its_progress_as_its_job_s_tenant(fresh_db_url: str) -> None:
    from pgmlops.db import tenant_context
    from pgmlops.jobs.handlers import JobContext

    with psycopg.connect(fresh_db_url, autocommit=True) as conn:
        tenant = make_tenant(conn)
        with tenant_context(conn, tenant):
            job_id = queue.enqueue(conn, "echo", {"message": "progress"})
        (job,) = queue.claim(conn, "w-progress", ["echo"])
        # As a worker runs a handler: the service role acting for the job's tenant.
        ctx = JobContext(job=job, conn=conn, worker_id="w-progress")
        with tenant_context(conn, job.tenant_id):
            ctx.publish("progress", {"done": 3, "of": 10})
        with pytest.raises(InvalidInput, match="event: must be 1 to 100 characters"), tenant_context(conn, job.tenant_id):
            ctx.publish(" ")
        row = conn.execute("select tenant_id::text, topic, payload from ml.events where event = 'progress'").fetchone()
    assert row == (tenant, "job", {"job_id": job_id, "kind": "echo", "done": 3, "of": 10})


def test_a_service_caller_runs_maintenance_through_the_sql_api(conn: Conn) -> None:
    from pgmlops.db import call, tenant_context

    with tenant_context(conn):
        report = call(conn, "ml.run_maintenance()")
    assert set(report) >= {"ml.events", "jobs_purged"} or report == {"skipped": "another session is running maintenance"}
    with tenant_context(conn, role="anon"), pytest.raises(AccessDenied):
        call(conn, "ml.run_maintenance()")
