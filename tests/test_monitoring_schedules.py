"""Monitoring schedules (sql/monitoring/schedules.sql): cron expressions, the workers' scheduler on
both servers (neither test database has pg_cron), pg_cron jobs in the database pg_cron serves,
and the errors."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from pgmlops import migrations
from pgmlops.db import tenant_context

from . import rls_seed
from .conftest import Server, act_for

Conn = psycopg.Connection[Any]

def one(conn: Conn, query: str, *args: Any) -> Any:
    row = conn.execute(query, args).fetchone()
    assert row is not None
    return row[0]


def sqlstate_and_message(conn: Conn, query: str, *args: Any) -> tuple[str, str]:
    try:
        with conn.transaction():
            conn.execute(query, args)
    except psycopg.Error as exc:
        return str(exc.sqlstate), str(exc.diag.message_primary)
    return "ok", ""


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# -- cron expressions ----------------------------------------------------------------------------

NEXT = [
    ("* * * * *", "2026-03-01 10:07:30", "2026-03-01 10:08:00"),
    ("*/15 * * * *", "2026-03-01 10:07:30", "2026-03-01 10:15:00"),
    ("*/15 * * * *", "2026-03-01 10:45:00", "2026-03-01 11:00:00"),       # strictly after
    ("5/20 * * * *", "2026-03-01 00:26:00", "2026-03-01 00:45:00"),       # a/step: from a to the end
    ("0 9 * * mon-fri", "2026-01-02 10:00:00", "2026-01-05 09:00:00"),   # Friday after 9 -> Monday
    ("30 2 * * 7", "2026-01-01 00:00:00", "2026-01-04 02:30:00"),        # 7 is Sunday
    ("0 0 1,15 * 3", "2026-01-01 00:00:00", "2026-01-07 00:00:00"),      # both days restricted: either
    ("0 0 */10 * 3", "2026-01-02 00:00:00", "2026-01-21 00:00:00"),      # one starts with *: both
    ("0 0 29 feb *", "2026-01-01 00:00:00", "2028-02-29 00:00:00"),
    ("15 14 1 * *", "2026-12-31 23:59:00", "2027-01-01 14:15:00"),
    ("0 0,12 * jan,jul *", "2026-02-01 00:00:00", "2026-07-01 00:00:00"),
    ("@hourly", "2026-01-01 23:59:59", "2026-01-02 00:00:00"),
    ("@daily", "2026-01-01 00:00:00", "2026-01-02 00:00:00"),
    ("@weekly", "2026-01-01 00:00:00", "2026-01-04 00:00:00"),
    ("@monthly", "2026-01-01 00:00:00", "2026-02-01 00:00:00"),
    ("@yearly", "2026-01-01 00:00:00", "2027-01-01 00:00:00"),
    ("  0   6  *  *  * ", "2026-01-01 07:00:00", "2026-01-02 06:00:00"),  # spaces tolerated
]


@pytest.mark.parametrize(("cron", "after", "expected"), NEXT)
def test_the_next_tick_of_a_cron_expression(conn: Conn, cron: str, after: str, expected: str) -> None:
    assert one(conn, "select ml_private.cron_next(%s, %s)", cron, utc(after)) == utc(expected)


BAD = [
    ("61 * * * *", "minute field"),
    ("* 24 * * *", "hour field"),
    ("* * 0 * *", "day-of-month field"),
    ("* * * 13 *", "month field"),
    ("* * * * 8", "day-of-week field"),
    ("* * * * *x", "day-of-week field"),
    ("0 0 L * *", "day-of-month field"),
    ("0 0 * * 5#3", "day-of-week field"),
    ("0 0 1W * *", "day-of-month field"),
    ("0 0 ? * *", "day-of-month field"),
    ("5-1 * * * *", "minute field"),
    ("*/0 * * * *", "minute field"),
    ("1,,2 * * * *", "minute field"),
    ("* * * *", "4 fields"),
    ("0 * * * * *", "6 fields"),
    ("", "0 fields"),
    ("30 seconds", "second schedules"),
    ("@reboot", "not supported"),
    ("0 0 30 2 *", "never fires"),
]


@pytest.mark.parametrize(("cron", "names"), BAD)
def test_unsupported_or_malformed_cron_is_22023_naming_the_field(conn: Conn, cron: str, names: str) -> None:
    state, message = sqlstate_and_message(conn, "select ml_private.cron_next(%s, now())", cron)
    assert state == "22023"
    assert names in message and message.startswith("cron:")


# -- the workers' scheduler, on both servers -----------------------------------------------------


def owned_tenant(conn: Conn, prefix: str = "m5") -> str:
    """A new tenant with an owner (the served model's approval is its owner's)."""
    return str(one(conn, "select ml.create_tenant(%s, %s)", f"{prefix}-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())))


def served_project(conn: Conn, tenant: str) -> None:
    """rls-project as tests/rls_seed.py makes it: a registered, compiled and deployed model with a
    logged prediction (the seeders of its tables, run in order)."""
    with tenant_context(conn, tenant):
        for seeder in (rls_seed.feature_group_with_values, rls_seed.training_set, rls_seed.registered_model,
                       rls_seed.served_prediction):
            seeder(conn, tenant)


@pytest.mark.embedded
def test_the_workers_scheduler_runs_due_schedules(any_db_url: str) -> None:
    with psycopg.connect(any_db_url, autocommit=True) as conn:
        tenant = owned_tenant(conn)
        served_project(conn, tenant)
        act_for(conn, tenant)
        assert one(conn, "select (ml.capabilities() ->> 'pg_cron')::boolean") is False
        before = datetime.now(UTC)
        schedule = str(one(conn, "select ml.schedule_monitoring('rls-project', '*/10 * * * *', '2 hours', '{\"mode\": \"exact\"}')"))
        doc = one(conn, "select ml.monitoring_schedule('rls-project')")
        assert doc["id"] == schedule and doc["backend"] == "worker" and doc["cron_job_id"] is None
        assert doc["cron"] == "*/10 * * * *" and doc["options"] == {"mode": "exact"}
        next_run = datetime.fromisoformat(doc["next_run_at"])
        assert next_run == one(conn, "select ml_private.cron_next('*/10 * * * *', %s)", before) or next_run > before
        assert next_run.minute % 10 == 0 and timedelta(0) < next_run - before <= timedelta(minutes=10)

        # Not due yet: nothing runs.
        assert one(conn, "select ml_private.run_due_monitoring()") == {"ran": 0, "reports": [], "failed": []}
        # Due (its tick has passed): the maintenance the workers call runs it.
        conn.execute("update ml.monitoring_schedules set next_run_at = now() - interval '1 minute' where id = %s", (schedule,))
        act_for(conn, None)
        maintenance = one(conn, "select ml.run_maintenance()")
        act_for(conn, tenant)
        assert maintenance["monitoring"]["ran"] == 1
        row = conn.execute("select last_run_at, next_run_at, last_report, last_error from ml.monitoring_schedules where id = %s",
                           (schedule,)).fetchone()
        assert row is not None
        last_run, next_run, last_report, last_error = row
        assert last_run >= before and next_run > last_run and next_run.minute % 10 == 0
        assert last_error is None and last_report is not None
        report = conn.execute("select window_start, window_end, mode, project_id from ml.drift_reports where id = %s",
                              (last_report,)).fetchone()
        assert report is not None
        assert report[1] - report[0] == timedelta(hours=2) and report[1].second == 0 and report[2] == "exact"
        assert report[1] == last_run.replace(second=0, microsecond=0)
        assert maintenance["monitoring"]["reports"] == [str(last_report)]
        # Run again at once: not due.
        assert one(conn, "select ml_private.run_due_monitoring()")["ran"] == 0

        assert one(conn, "select ml.unschedule_monitoring('rls-project')") is True
        assert one(conn, "select ml.unschedule_monitoring('rls-project')") is False
        assert one(conn, "select ml.monitoring_schedule('rls-project')") is None


def test_a_worker_without_pg_cron_runs_a_due_schedule(fresh_db_url: str) -> None:
    """`pgmlops worker`'s maintenance loop (where pg_cron is absent) is what runs schedules."""
    from pgmlops.jobs.worker import Worker

    with psycopg.connect(fresh_db_url, autocommit=True) as conn:
        tenant = owned_tenant(conn)
        served_project(conn, tenant)
        act_for(conn, tenant)
        schedule = str(one(conn, "select ml.schedule_monitoring('rls-project', '* * * * *', '1 hour')"))
        conn.execute("update ml.monitoring_schedules set next_run_at = now() - interval '1 minute' where id = %s", (schedule,))
    Worker(fresh_db_url, kinds=["echo"], idle_exit=0.5, poll_interval=0.2, install_signals=False, maintenance_interval=0.1).run()
    with psycopg.connect(fresh_db_url, autocommit=True) as conn:
        row = conn.execute("select last_report, last_error from ml.monitoring_schedules where id = %s", (schedule,)).fetchone()
        assert row is not None and row[0] is not None and row[1] is None
        assert one(conn, "select count(*) from ml.drift_reports where id = %s and tenant_id = %s", row[0], tenant) == 1


def test_a_failing_run_is_recorded_published_and_the_schedule_goes_on(conn: Conn, tenant: str) -> None:
    # A project with nothing deployed: ml.drift_report finds no reference to compare with.
    conn.execute("select ml.create_project('failing', 'regression', 'y')")
    schedule = str(one(conn, "select ml.schedule_monitoring('failing', '@hourly', '1 hour')"))
    conn.execute("update ml.monitoring_schedules set next_run_at = now() - interval '1 minute' where id = %s", (schedule,))
    assert one(conn, "select ml_private.run_due_monitoring()") == {"ran": 1, "reports": [], "failed": [schedule]}
    row = conn.execute("select last_error, last_report, last_run_at is not null, next_run_at > now() from ml.monitoring_schedules"
                       " where id = %s", (schedule,)).fetchone()
    assert row is not None and row[0].startswith("P0002: ") and row[1:] == (None, True, True)
    failed = one(conn, "select payload from ml.events where tenant_id = %s and event = 'schedule.failed'", tenant)
    assert failed["schedule_id"] == schedule and failed["sqlstate"] == "P0002"
    # The caller's own tenant setting is back after the run.
    assert one(conn, "select current_setting('pgmlops.tenant_id')") == tenant


def test_scheduling_again_replaces_the_schedule(conn: Conn, tenant: str) -> None:
    conn.execute("select ml.create_project('again', 'regression', 'y')")
    first = one(conn, "select ml.schedule_monitoring('again', '0 * * * *', '1 hour')")
    second = one(conn, "select ml.schedule_monitoring('again', '30 6 * * *', '1 day', '{\"mode\": \"fast\"}')")
    assert first == second
    rows = conn.execute("select cron, \"window\", options from ml.monitoring_schedules where tenant_id = %s", (tenant,)).fetchall()
    assert rows == [("30 6 * * *", timedelta(days=1), {"mode": "fast"})]
    assert [e[0] for e in conn.execute("select event from ml.events where tenant_id = %s and topic = 'monitoring' order by id",
                                       (tenant,))] == ["schedule.set", "schedule.set"]


def test_bad_schedules_are_refused_and_write_nothing(conn: Conn, tenant: str) -> None:
    conn.execute("select ml.create_project('refused', 'regression', 'y')")
    cases = [
        (("refused", "61 * * * *", "1 hour", "{}"), "22023", "minute field"),
        (("refused", "* * * *", "1 hour", "{}"), "22023", "expected 5"),
        (("refused", "0 * * * *", "0 hours", "{}"), "22023", "window"),
        (("refused", "0 * * * *", "-1 hour", "{}"), "22023", "window"),
        (("refused", "0 * * * *", "400 days", "{}"), "22023", "window"),
        (("refused", "0 * * * *", "1 hour", "[]"), "22023", "options"),
        (("refused", "0 * * * *", "1 hour", '{"mode": "quick"}'), "22023", "options.mode"),
        (("refused", "0 * * * *", "1 hour", '{"drift_share": 5}'), "22023", "options.drift_share"),
        (("no-such-project", "0 * * * *", "1 hour", "{}"), "P0002", "no-such-project"),
    ]
    for args, state, names in cases:
        got, message = sqlstate_and_message(conn, "select ml.schedule_monitoring(%s, %s, %s::interval, %s::jsonb)", *args)
        assert (got, names in message) == (state, True), (args, got, message)
    assert one(conn, "select count(*) from ml.monitoring_schedules where tenant_id = %s", tenant) == 0
    assert sqlstate_and_message(conn, "select ml.unschedule_monitoring('no-such-project')")[0] == "P0002"


def test_a_viewer_may_read_but_not_schedule(conn: Conn, tenant: str) -> None:
    conn.execute("select ml.create_project('viewed', 'regression', 'y')")
    conn.execute("select ml.schedule_monitoring('viewed', '0 * * * *', '1 hour')")
    viewer = str(uuid.uuid4())
    conn.execute("select ml.add_tenant_member(%s, %s, 'viewer')", (tenant, viewer))
    with tenant_context(conn, tenant, user=viewer, role="authenticated"):
        assert one(conn, "select ml.monitoring_schedule('viewed')")["cron"] == "0 * * * *"
        assert sqlstate_and_message(conn, "select ml.schedule_monitoring('viewed', '5 * * * *', '1 hour')")[0] == "42501"
        assert sqlstate_and_message(conn, "select ml.unschedule_monitoring('viewed')")[0] == "42501"
    assert one(conn, "select cron from ml.monitoring_schedules where tenant_id = %s", tenant) == "0 * * * *"


# -- pg_cron -------------------------------------------------------------------------------------


@pytest.fixture
def cron_db(server: Server) -> Iterator[Conn]:
    """The database pg_cron serves (the server's cron.database_name: pg_cron can be installed in
    that one only), migrated to the head (which installs pg_cron there). Shared with whoever else
    uses it, so the test keeps to a tenant of its own and deletes it after."""
    with psycopg.connect(server.admin_url, autocommit=True) as admin:
        name = one(admin, "select current_setting('cron.database_name')")
    url = server.url(name)
    migrations.upgrade(url)
    with psycopg.connect(url, autocommit=True) as conn:
        tenant = owned_tenant(conn, "m5-cron")
        act_for(conn, tenant)
        try:
            yield conn
        finally:
            act_for(conn, None)
            conn.execute("delete from ml.tenants where id = %s", (tenant,))


def test_with_pg_cron_a_schedule_is_a_cron_job_running_as_the_tenant(cron_db: Conn) -> None:
    conn = cron_db
    tenant = one(conn, "select current_setting('pgmlops.tenant_id')")
    assert one(conn, "select (ml.capabilities() ->> 'pg_cron')::boolean") is True
    served_project(conn, tenant)
    act_for(conn, tenant)
    schedule = str(one(conn, "select ml.schedule_monitoring('rls-project', '*/5 * * * *', '1 hour')"))
    doc = one(conn, "select ml.monitoring_schedule('rls-project')")
    assert doc["backend"] == "pg_cron" and doc["cron_job_id"] is not None
    job = conn.execute("select jobname, schedule, command, username from cron.job where jobid = %s", (doc["cron_job_id"],)).fetchone()
    assert job == (f"pgmlops-monitoring-{schedule}", "*/5 * * * *",
                   f"select ml_private.run_monitoring_schedule('{schedule}'::uuid)", "postgres")
    assert datetime.fromisoformat(doc["next_run_at"]).minute % 5 == 0
    # The workers' scheduler leaves pg_cron's schedules alone, even when due.
    conn.execute("update ml.monitoring_schedules set next_run_at = now() - interval '1 minute' where id = %s", (schedule,))
    assert one(conn, "select ml_private.run_due_monitoring()")["ran"] == 0

    # What the job runs, run as pg_cron runs it: its owner, no JWT, no tenant setting.
    act_for(conn, None)
    report = one(conn, job[2])
    act_for(conn, tenant)
    row = conn.execute("select last_run_at, last_report, last_error, next_run_at > now() from ml.monitoring_schedules where id = %s",
                       (schedule,)).fetchone()
    assert row is not None and row[0] is not None and row[3] is True
    assert report is not None and row[1] == report and row[2] is None
    assert one(conn, "select tenant_id from ml.drift_reports where id = %s", report) == uuid.UUID(tenant)

    # Replacing the schedule replaces its job; unscheduling (or deleting the project) removes it.
    again = one(conn, "select ml.schedule_monitoring('rls-project', '0 3 * * *', '1 day')")
    jobs = conn.execute("select schedule from cron.job where jobname = %s", (f"pgmlops-monitoring-{schedule}",)).fetchall()
    assert str(again) == schedule and jobs == [("0 3 * * *",)]
    assert one(conn, "select ml.unschedule_monitoring('rls-project')") is True
    assert one(conn, "select count(*) from cron.job where jobname like %s", f"pgmlops-monitoring-{schedule}") == 0
    conn.execute("select ml.schedule_monitoring('rls-project', '0 3 * * *', '1 day')")
    conn.execute("delete from ml.projects where tenant_id = %s and name = 'rls-project'", (tenant,))
    assert one(conn, "select count(*) from cron.job where jobname like %s", f"pgmlops-monitoring-{schedule}") == 0
