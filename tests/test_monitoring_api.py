"""pgmlops.monitoring and its command line (`pgmlops monitor ...`, `pgmlops alerts ...`) over the
SQL API: the calls, their errors as pgmlops exceptions, and output that fits 80 columns."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb
from rich.console import Console

from pgmlops import monitoring
from pgmlops.cli.monitoring import alerts_table, verdict_table
from pgmlops.errors import AccessDenied, InvalidInput, InvalidState, NotFound

from .conftest import make_tenant
from .test_cli import pgmlops

Conn = psycopg.Connection[Any]


def one(conn: Conn, query: str, *args: Any) -> Any:
    row = conn.execute(query, args).fetchone()
    assert row is not None
    return row[0]


@pytest.fixture
def project(conn: Conn, tenant: str) -> str:
    """A project of ``tenant`` with three alerts raised: feature_drift of x (critical), of y, and
    label_drift; returns its name."""
    name = f"mon-{uuid.uuid4().hex[:8]}"
    project_id = one(conn, "select ml.create_project(%s, 'classification', 'label')", name)
    for kind, feature, severity in (("feature_drift", "x", "critical"), ("feature_drift", "y", "warning"),
                                    ("label_drift", "label", "info")):
        conn.execute("select ml_private.raise_alert(%s, %s, %s, %s, %s, %s, %s, null)",
                     (tenant, project_id, kind, feature, severity, f"{feature} drifted", Jsonb({"strength": 1.5})))
    return name


def test_alerts_acknowledge_and_resolve(conn: Conn, tenant: str, project: str) -> None:
    listed = monitoring.alerts(conn, project, tenant=tenant)
    assert {(a["kind"], a["feature"], a["severity"], a["status"]) for a in listed} == {
        ("feature_drift", "x", "critical", "open"), ("feature_drift", "y", "warning", "open"),
        ("label_drift", "label", "info", "open")}
    x = next(a["id"] for a in listed if a["feature"] == "x")
    acked = monitoring.acknowledge_alert(conn, x, "on it", tenant=tenant)
    assert acked["status"] == "acknowledged" and acked["notes"][0]["comment"] == "on it"
    with pytest.raises(InvalidState) as caught:
        monitoring.acknowledge_alert(conn, x, tenant=tenant)
    assert caught.value.sqlstate == "55000"
    assert monitoring.resolve_alert(conn, uuid.UUID(x), tenant=tenant)["status"] == "resolved"
    with pytest.raises(InvalidState):
        monitoring.resolve_alert(conn, x, tenant=tenant)
    assert [a["id"] for a in monitoring.alerts(conn, project, "resolved", tenant=tenant)] == [x]
    assert len(monitoring.alerts(conn, project, "active", tenant=tenant)) == 2
    with pytest.raises(InvalidInput):
        monitoring.alerts(conn, project, "closed", tenant=tenant)
    with pytest.raises(NotFound):
        monitoring.alerts(conn, "no-such-project", tenant=tenant)
    with pytest.raises(NotFound):
        monitoring.acknowledge_alert(conn, uuid.uuid4(), tenant=tenant)
    # Another tenant cannot see or touch it.
    other = make_tenant(conn)
    with pytest.raises(NotFound):
        monitoring.resolve_alert(conn, x, tenant=other)


def test_schedule_and_unschedule(conn: Conn, tenant: str, project: str) -> None:
    schedule = monitoring.schedule_monitoring(conn, project, "*/30 * * * *", timedelta(hours=6), {"mode": "fast"}, tenant=tenant)
    doc = monitoring.monitoring_schedule(conn, project, tenant=tenant)
    assert doc is not None and doc["id"] == str(schedule)
    assert (doc["cron"], doc["window"], doc["options"], doc["backend"]) == ("*/30 * * * *", "06:00:00", {"mode": "fast"}, "worker")
    assert monitoring.schedule_monitoring(conn, project, "@daily", "1 day", tenant=tenant) == schedule
    with pytest.raises(InvalidInput) as caught:
        monitoring.schedule_monitoring(conn, project, "0 25 * * *", "1 day", tenant=tenant)
    assert caught.value.sqlstate == "22023" and "hour field" in str(caught.value)
    with pytest.raises(InvalidInput):
        monitoring.schedule_monitoring(conn, project, "@daily", timedelta(0), tenant=tenant)
    assert monitoring.unschedule_monitoring(conn, project, tenant=tenant) is True
    assert monitoring.unschedule_monitoring(conn, project, tenant=tenant) is False
    assert monitoring.monitoring_schedule(conn, project, tenant=tenant) is None


def test_a_viewer_is_refused_a_schedule(conn: Conn, tenant: str, project: str) -> None:
    from pgmlops.db import tenant_context

    viewer = str(uuid.uuid4())
    conn.execute("select ml.add_tenant_member(%s, %s, 'viewer')", (tenant, viewer))
    with pytest.raises(AccessDenied), tenant_context(conn, tenant, user=viewer, role="authenticated"):
        monitoring.schedule_monitoring(conn, project, "@hourly", "1 hour")


# -- output --------------------------------------------------------------------------------------


def rendered(renderable: Any) -> list[str]:
    console = Console(width=80, record=True, force_terminal=False)
    with console.capture() as capture:
        console.print(renderable)
    return capture.get().splitlines()


def test_the_alerts_table_fits_80_columns(conn: Conn, tenant: str, project: str) -> None:
    rows = monitoring.alerts(conn, project, tenant=tenant)
    lines = rendered(alerts_table(project, rows))
    assert max(len(line) for line in lines) <= 80
    assert sum("feature_drift" in line for line in lines) == 2 and any("critical" in line for line in lines)


def test_the_verdict_table_fits_80_columns_with_long_feature_names() -> None:
    document = {"report": {"project": "churn", "window_start": "2026-03-01T00:00:00+00:00", "window_end": "2026-03-02T00:00:00+00:00"},
                "results": [{"role": "input", "feature": "a_very_long_feature_name_" * 4, "test": "wasserstein_normed",
                             "statistic": 0.123456789, "p_value": None, "threshold": 0.1, "drifted": True},
                            {"role": "input", "feature": "age", "test": "ks", "statistic": 0.05, "p_value": 0.4,
                             "threshold": 0.05, "drifted": False},
                            {"role": "prediction", "feature": "prediction", "test": "chi2", "statistic": 30.5,
                             "p_value": 1.2e-7, "threshold": 0.05, "drifted": True}]}
    lines = rendered(verdict_table(document))
    assert max(len(line) for line in lines) <= 80
    body = [line for line in lines if "│" in line]
    assert "yes" in body[0] and "wasserstein_normed" in body[0] and "0.1235" in body[0]  # drifted inputs first
    assert any("prediction:prediction" in line and "p=1.2e-07" in line for line in body)
    assert any("age" in line and "no" in line for line in body)


# -- the command line ----------------------------------------------------------------------------


def test_cli_alerts_list_ack_resolve_and_schedule(conn: Conn, db_url: str, tenant: str, project: str) -> None:
    def cli(*args: str) -> Any:
        run = pgmlops(*args, "--tenant", tenant, url=db_url, env={"COLUMNS": "80"})
        assert run.returncode == 0, run.stderr
        return run

    listing = cli("alerts", project)
    assert max(len(line) for line in listing.stdout.splitlines()) <= 80
    assert "critical" in listing.stdout and "label_drift" in listing.stdout
    alerts = json.loads(cli("alerts", project, "--status", "open", "--json").stdout)
    x = next(a["id"] for a in alerts if a["feature"] == "x")
    assert "acknowledged" in cli("alerts", "ack", x[:8], "--comment", "looking").stdout  # the listing's short id
    assert "resolved" in cli("alerts", "resolve", x).stdout
    assert one(conn, "select status || ':' || (notes -> 0 ->> 'comment') from ml.alerts where id = %s", x) == "resolved:looking"
    again = pgmlops("alerts", "resolve", x[:8], "--tenant", tenant, url=db_url)
    assert again.returncode != 0 and "already resolved" in again.stderr

    scheduled = cli("monitor", "schedule", project, "--cron", "0 */6 * * *", "--window", "6 hours", "--mode", "fast")
    words = " ".join(scheduled.stdout.split())
    assert "by worker" in words and "next run" in words
    assert one(conn, "select options from ml.monitoring_schedules where tenant_id = %s", tenant) == {"mode": "fast"}
    bad = pgmlops("monitor", "schedule", project, "--cron", "0 */6 * *", "--window", "6 hours", "--tenant", tenant, url=db_url)
    assert bad.returncode != 0 and "expected 5" in bad.stderr
    assert "schedule removed" in cli("monitor", "unschedule", project).stdout


# -- reports, end to end -------------------------------------------------------------------------


def test_drift_report_document_profile_and_similar_windows_then_the_cli_report(conn: Conn, db_url: str) -> None:
    from pgmlops.db import tenant_context

    from .test_monitoring_schedules import owned_tenant, served_project

    tenant = owned_tenant(conn)
    served_project(conn, tenant)
    with tenant_context(conn, tenant):  # a second prediction, after the first one's transaction
        middle = one(conn, "select now()")
        conn.execute("select ml.predict('rls-project', '{\"spend\": 11.5}', 'c2')")
    end = middle + timedelta(minutes=1)
    profile = monitoring.reference_profile(conn, "rls-model", 1, tenant=tenant)
    assert profile["version"] == 1 and "spend" in {f["feature"] for f in profile["features"]}
    first = monitoring.drift_report(conn, "rls-project", end - timedelta(days=1), middle, tenant=tenant)
    second = monitoring.drift_report(conn, "rls-project", middle, end,
                                     {"features": {"spend": {"test": "wasserstein", "threshold": 0}}}, tenant=tenant)
    document = monitoring.drift_report_document(conn, second, tenant=tenant)
    assert document["id"] == str(second) and document["project"] == "rls-project"
    spend = next(r for r in document["results"] if r["feature"] == "spend" and r["role"] == "input")
    assert spend["test"] == "wasserstein" and spend["drifted"] is True
    assert {(a["kind"], a["feature"]) for a in document["alerts"]} >= {("feature_drift", "spend")}
    assert [a["kind"] for a in monitoring.alerts(conn, "rls-project", "open", tenant=tenant)].count("feature_drift") == 1
    similar = monitoring.similar_windows(conn, "rls-project", second, 3, tenant=tenant)
    assert str(first) in {str(w["report_id"]) for w in similar}
    with pytest.raises(NotFound):
        monitoring.drift_report_document(conn, uuid.uuid4(), tenant=tenant)
    with pytest.raises(InvalidInput):
        monitoring.drift_report(conn, "rls-project", end, end - timedelta(days=1), tenant=tenant)

    run = pgmlops("monitor", "report", "rls-project", "--start", (end - timedelta(days=1)).isoformat(), "--end", "now",
                  "--options", '{"features": {"spend": {"test": "psi", "threshold": 0}}}', "--tenant", tenant, url=db_url,
                  env={"COLUMNS": "80"})
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    spend_row = next(line for line in lines if "│ spend" in line)
    assert "psi" in spend_row and "yes" in spend_row
    assert "1 of 1 features drifted" in " ".join(run.stdout.split())
