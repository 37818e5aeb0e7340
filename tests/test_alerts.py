"""Monitoring alerts (sql/monitoring/alerts.sql): deduplication by fingerprint, severity from the
evidence, raising a report's alerts, the lifecycle and its errors, events, and Supabase Realtime
(publication membership on both servers; what RLS lets a subscriber see)."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from pgmlops import migrations

from .conftest import Server, act_for, make_tenant

Conn = psycopg.Connection[Any]


def one(conn: Conn, query: str, *args: Any) -> Any:
    row = conn.execute(query, args).fetchone()
    assert row is not None
    return row[0]


@pytest.fixture
def project(conn: Conn, tenant: str) -> str:
    """A project of the connection's tenant; returns its id."""
    name = f"p-{uuid.uuid4().hex[:8]}"
    return str(one(conn, "select ml.create_project(%s, 'classification', 'label')", name))


def project_name(conn: Conn, project: str) -> str:
    return str(one(conn, "select name from ml.projects where id = %s", project))


def raise_alert(conn: Conn, tenant: str, project: str, kind: str = "feature_drift", feature: str | None = "x",
                severity: str = "warning", message: str = "x drifted", evidence: dict[str, Any] | None = None,
                report: str | None = None) -> str:
    return str(one(conn, "select ml_private.raise_alert(%s, %s, %s, %s, %s, %s, %s, %s)",
                   tenant, project, kind, feature, severity, message, Jsonb(evidence or {}), report))


def events(conn: Conn, tenant: str) -> list[tuple[str, dict[str, Any]]]:
    return [(r[0], r[1]) for r in conn.execute(
        "select event, payload from ml.events where tenant_id = %s and topic = 'monitoring' order by id", (tenant,))]


def make_report(conn: Conn, tenant: str, project: str, results: list[tuple[str, str, str, float | None, float | None, float, bool]],
                *, dataset_drift: bool = False, drift_share: float | None = None, options: dict[str, Any] | None = None,
                summary: dict[str, Any] | None = None) -> str:
    """A drift report row with its results (role, feature, test, statistic, p_value, threshold,
    drifted), written as the owner: the rows ml.drift_report writes."""
    end = datetime.now(UTC)
    drifted = sum(1 for r in results if r[0] == "input" and r[6])
    tested = len({r[1] for r in results if r[0] == "input"})
    report = str(one(conn, """insert into ml.drift_reports (tenant_id, project_id, window_start, window_end, mode, source,
                                  options, row_count, reference_count, drifted_features, features_tested, drift_share,
                                  dataset_drift, summary, finished_at)
                              values (%s, %s, %s, %s, 'exact', 'ml.predictions', %s, 100, 100, %s, %s, %s, %s, %s, now())
                              returning id""",
                     tenant, project, end - timedelta(hours=1), end, Jsonb(options or {}), drifted, tested,
                     drift_share, dataset_drift, Jsonb(summary or {})))
    for role, feature, test, statistic, p_value, threshold, is_drifted in results:
        conn.execute("""insert into ml.drift_results (tenant_id, report_id, feature, role, kind, test, statistic, p_value,
                                                      threshold, drifted, row_count)
                        values (%s, %s, %s, %s, 'numeric', %s, %s, %s, %s, %s, 100)""",
                     (tenant, report, feature, role, test, statistic, p_value, threshold, is_drifted))
    return report


def sqlstate_of(conn: Conn, query: str, *args: Any) -> str:
    try:
        with conn.transaction():
            conn.execute(query, args)
    except psycopg.Error as exc:
        return str(exc.sqlstate)
    return "ok"


# -- deduplication -------------------------------------------------------------------------------


def test_a_repeat_counts_on_the_open_alert_and_takes_the_larger_severity(conn: Conn, tenant: str, project: str) -> None:
    first = raise_alert(conn, tenant, project, severity="critical", evidence={"p": 1})
    again = raise_alert(conn, tenant, project, severity="warning", message="x drifted again", evidence={"p": 2})
    other_feature = raise_alert(conn, tenant, project, feature="y")
    other_kind = raise_alert(conn, tenant, project, kind="label_drift")
    assert first == again
    assert len({first, other_feature, other_kind}) == 3
    row = conn.execute("select count, severity, message, evidence, status, last_seen >= first_seen from ml.alerts where id = %s",
                       (first,)).fetchone()
    assert row == (2, "critical", "x drifted again", {"p": 2}, "open", True)
    # Acknowledged alerts still count repeats; severity goes up, never down.
    conn.execute("select ml.acknowledge_alert(%s)", (first,))
    assert raise_alert(conn, tenant, project, severity="info") == first
    row = conn.execute("select count, severity, status from ml.alerts where id = %s", (first,)).fetchone()
    assert row == (3, "critical", "acknowledged")
    got = [(e, p["alert_id"], p["count"]) for e, p in events(conn, tenant) if p["alert_id"] == first]
    assert got == [("alert.opened", first, 1), ("alert.repeated", first, 2), ("alert.acknowledged", first, 2),
                   ("alert.repeated", first, 3)]


def test_a_new_alert_is_announced_to_listeners(db_url: str, conn: Conn, tenant: str, project: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("listen ml_events")
        alert = raise_alert(conn, tenant, project, feature="announced")
        got = [json.loads(n.payload) for n in listener.notifies(timeout=5, stop_after=1)]
    assert [(m["topic"], m["event"], m["tenant_id"], m["data"]["alert_id"]) for m in got] == [
        ("monitoring", "alert.opened", tenant, alert)]


def test_a_resolved_alert_s_fingerprint_opens_a_new_alert(conn: Conn, tenant: str, project: str) -> None:
    first = raise_alert(conn, tenant, project)
    conn.execute("select ml.resolve_alert(%s, 'fixed upstream')", (first,))
    second = raise_alert(conn, tenant, project)
    assert second != first
    rows = conn.execute("select id, status, count from ml.alerts where project_id = %s order by first_seen", (project,)).fetchall()
    assert [(str(r[0]), r[1], r[2]) for r in rows] == [(first, "resolved", 1), (second, "open", 1)]


def test_the_same_report_raised_twice_counts_once(conn: Conn, tenant: str, project: str) -> None:
    report = make_report(conn, tenant, project, [("input", "x", "ks", 0.4, 0.001, 0.05, True)])
    assert one(conn, "select ml_private.raise_report_alerts(%s)", report) == 1
    assert one(conn, "select ml_private.raise_report_alerts(%s)", report) == 1
    assert conn.execute("select count(*), max(count) from ml.alerts where project_id = %s", (project,)).fetchone() == (1, 1)
    later = make_report(conn, tenant, project, [("input", "x", "ks", 0.4, 0.001, 0.05, True)])
    conn.execute("select ml_private.raise_report_alerts(%s)", (later,))
    assert conn.execute("select count, report_id from ml.alerts where project_id = %s", (project,)).fetchone() == (2, uuid.UUID(later))


def test_bad_alerts_are_refused_and_write_nothing(conn: Conn, tenant: str, project: str) -> None:
    other = make_tenant(conn)
    cases = [
        (("no_such_kind", "x", "warning", "m", {}), "22023"),
        (("feature_drift", "x", "severe", "m", {}), "22023"),
        (("feature_drift", "x", "warning", "  ", {}), "22023"),
        (("feature_drift", "x", "warning", "m", []), "22023"),
    ]
    for (kind, feature, severity, message, evidence), state in cases:
        assert sqlstate_of(conn, "select ml_private.raise_alert(%s, %s, %s, %s, %s, %s, %s, null)",
                           tenant, project, kind, feature, severity, message, Jsonb(evidence)) == state, kind
    # Another tenant's project is not found.
    assert sqlstate_of(conn, "select ml_private.raise_alert(%s, %s, 'feature_drift', 'x', 'info', 'm', '{}', null)",
                       other, project) == "P0002"
    assert one(conn, "select count(*) from ml.alerts where project_id = %s", project) == 0
    assert events(conn, tenant) == []


@pytest.mark.embedded
def test_dedup_and_lifecycle_on_both_servers(any_db_url: str) -> None:
    with psycopg.connect(any_db_url, autocommit=True) as conn:
        tenant = make_tenant(conn)
        act_for(conn, tenant)
        project = str(one(conn, "select ml.create_project('both', 'classification', 'label')"))
        first = raise_alert(conn, tenant, project, severity="info")
        assert raise_alert(conn, tenant, project, severity="critical") == first
        assert one(conn, "select ml.acknowledge_alert(%s)", first)["count"] == 2
        assert raise_alert(conn, tenant, project) == first
        resolved = one(conn, "select ml.resolve_alert(%s)", first)
        assert (resolved["status"], resolved["count"], resolved["severity"]) == ("resolved", 3, "critical")
        assert sqlstate_of(conn, "select ml.acknowledge_alert(%s)", first) == "55000"
        assert raise_alert(conn, tenant, project) != first
        assert [e for e, _ in events(conn, tenant)] == ["alert.opened", "alert.repeated", "alert.acknowledged", "alert.repeated",
                                                         "alert.resolved", "alert.opened"]


# -- severity and a report's alerts --------------------------------------------------------------


def test_severity_follows_the_strength_of_the_evidence(conn: Conn) -> None:
    def ratio(test: str, statistic: float | None, p_value: float | None, threshold: float) -> float | None:
        value = one(conn, "select ml_private.drift_evidence_ratio(%s, %s, %s, %s)", test, statistic, p_value, threshold)
        return None if value is None else float(value)

    assert ratio("ks", 0.3, 0.05, 0.05) == pytest.approx(1.0)
    assert ratio("ks", 0.3, 0.0025, 0.05) == pytest.approx(2.0)
    assert ratio("chi2", 12.0, 0.01, 0.05) == pytest.approx(math.log(0.01) / math.log(0.05))
    assert ratio("z", 5.0, 0.0, 0.05) == math.inf
    assert ratio("wasserstein_normed", 0.25, None, 0.1) == pytest.approx(2.5)
    assert ratio("psi", 0.15, None, 0.1) == pytest.approx(1.5)
    assert ratio("jensen_shannon", 0.05, None, 0.1) == pytest.approx(0.5)
    assert ratio("ks", None, None, 0.05) is None
    severity = [one(conn, "select ml_private.severity_of_ratio(%s)", r) for r in (0.5, 1.0, 1.99, 2.0, math.inf, None)]
    assert severity == ["info", "warning", "warning", "critical", "critical", "info"]


def test_a_report_raises_one_alert_per_drifted_feature_and_section(conn: Conn, tenant: str, project: str) -> None:
    report = make_report(conn, tenant, project, [
        ("input", "age", "ks", 0.2, 0.01, 0.05, True),               # ln .01 / ln .05 = 1.54: warning
        ("input", "income", "wasserstein_normed", 0.35, None, 0.1, True),  # 3.5: critical
        ("input", "income", "ks", 0.3, 0.03, 0.05, True),
        ("input", "city", "chi2", 1.0, 0.6, 0.05, False),            # not drifted: no alert
        ("prediction", "prediction", "chi2", 30.0, 1e-6, 0.05, True),  # 4.6: critical
        ("label", "label", "psi", 0.12, None, 0.1, True),             # 1.2: warning
    ], dataset_drift=True, drift_share=2 / 3, options={"drift_share": 0.5},
        summary={"regime": {"matched": False, "threshold": 0.05, "similar": [
            {"report_id": str(uuid.uuid4()), "distance": 0.4, "matched": False}]}})
    end = datetime.now(UTC)
    conn.execute("""insert into ml.performance_results (tenant_id, report_id, bucket_start, bucket_end, metric, estimated, value,
                                                        sample_count, lower_bound, upper_bound, alert)
                    values (%(t)s, %(r)s, %(a)s, %(b)s, 'accuracy', false, 0.70, 50, 0.80, 0.90, true),
                           (%(t)s, %(r)s, %(b)s, %(c)s, 'accuracy', false, 0.78, 50, 0.80, 0.90, true),
                           (%(t)s, %(r)s, %(a)s, %(b)s, 'roc_auc', true, 0.85, 50, 0.80, 0.90, false)""",
                 {"t": tenant, "r": report, "a": end - timedelta(hours=1), "b": end - timedelta(minutes=30), "c": end})
    assert one(conn, "select ml_private.raise_report_alerts(%s)", report) == 7
    rows = conn.execute("select kind, feature, severity, report_id, evidence from ml.alerts where project_id = %s"
                        " order by kind, feature", (project,)).fetchall()
    got = {(r[0], r[1]): r[2] for r in rows}
    assert got == {
        ("dataset_drift", None): "warning",           # share 0.667 / 0.5 = 1.33
        ("feature_drift", "age"): "warning",          # ln .01 / ln .05 = 1.54
        ("feature_drift", "income"): "critical",      # wasserstein_normed 0.35 / 0.1 = 3.5
        ("label_drift", "label"): "warning",          # psi 0.12 / 0.1 = 1.2
        ("performance", "accuracy"): "critical",      # 0.10 below a band of half-width 0.05: r = 3
        ("prediction_drift", "prediction"): "critical",  # ln 1e-6 / ln .05 = 4.6
        ("regime", None): "warning",                  # unmatched, with dataset drift
    }
    assert all(str(r[3]) == report for r in rows)
    income = next(r[4] for r in rows if r[1] == "income")
    assert [t["test"] for t in income["tests"]] == ["ks", "wasserstein_normed"]
    accuracy = next(r[4] for r in rows if r[1] == "accuracy")
    assert accuracy["buckets"] == 2 and accuracy["worst"]["value"] == pytest.approx(0.70)


def test_a_window_like_a_past_one_or_the_first_one_raises_no_regime_alert(conn: Conn, tenant: str, project: str) -> None:
    first = make_report(conn, tenant, project, [], summary={"regime": {"matched": False, "similar": [], "threshold": None}})
    matched = make_report(conn, tenant, project, [], summary={"regime": {"matched": True, "threshold": 0.05, "similar": [
        {"report_id": first, "distance": 0.01, "matched": True}]}})
    unmatched = make_report(conn, tenant, project, [], summary={"regime": {"matched": False, "threshold": 0.05, "similar": [
        {"report_id": first, "distance": 0.3, "matched": False}]}})
    assert [one(conn, "select ml_private.raise_report_alerts(%s)", r) for r in (first, matched, unmatched)] == [0, 0, 1]
    row = conn.execute("select kind, severity, message from ml.alerts where project_id = %s", (project,)).fetchone()
    assert row is not None and row[:2] == ("regime", "info") and "distance 0.3" in row[2]


def test_drift_reports_raise_and_repeat_alerts_end_to_end(conn: Conn) -> None:
    from .test_monitoring_schedules import owned_tenant, served_project

    tenant = owned_tenant(conn)
    served_project(conn, tenant)
    act_for(conn, tenant)
    drifted = Jsonb({"features": {"spend": {"test": "psi", "threshold": 0}}})
    reports = [one(conn, "select ml.drift_report('rls-project', now() - interval '1 day', now() + interval '1 minute', %s)",
                   drifted) for _ in range(2)]
    rows = conn.execute("select kind, feature, count, report_id from ml.alerts where tenant_id = %s order by kind",
                        (tenant,)).fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [("dataset_drift", None, 2), ("feature_drift", "spend", 2)]
    assert all(r[3] == reports[1] for r in rows)
    got = [e for e, _ in events(conn, tenant) if e.startswith(("alert.", "report."))]
    assert got == ["alert.opened", "alert.opened", "report.finished", "alert.repeated", "alert.repeated", "report.finished"]


def test_raise_report_alerts_of_an_unknown_report_is_p0002(conn: Conn, tenant: str) -> None:
    assert sqlstate_of(conn, "select ml_private.raise_report_alerts(%s)", str(uuid.uuid4())) == "P0002"


# -- lifecycle -----------------------------------------------------------------------------------


def test_lifecycle_open_acknowledged_resolved_and_its_wrong_transitions(conn: Conn, tenant: str, project: str) -> None:
    alert = raise_alert(conn, tenant, project)
    acked = one(conn, "select ml.acknowledge_alert(%s, 'looking')", alert)
    assert acked["status"] == "acknowledged" and acked["acknowledged_at"] is not None
    assert sqlstate_of(conn, "select ml.acknowledge_alert(%s)", alert) == "55000"
    resolved = one(conn, "select ml.resolve_alert(%s, 'retrained')", alert)
    assert resolved["status"] == "resolved" and resolved["resolved_at"] is not None
    assert [n["comment"] for n in resolved["notes"]] == ["looking", "retrained"]
    assert sqlstate_of(conn, "select ml.resolve_alert(%s)", alert) == "55000"
    assert sqlstate_of(conn, "select ml.acknowledge_alert(%s)", alert) == "55000"
    # An open alert may be resolved without an acknowledgement.
    direct = raise_alert(conn, tenant, project, feature="z")
    assert one(conn, "select ml.resolve_alert(%s)", direct)["status"] == "resolved"
    assert sqlstate_of(conn, "select ml.resolve_alert(%s)", str(uuid.uuid4())) == "P0002"
    assert sqlstate_of(conn, "select ml.acknowledge_alert(%s, %s)", direct, "x" * 2001) == "22023"


def test_another_tenant_s_alert_is_not_found_and_stays_as_it_was(conn: Conn, tenant: str, project: str) -> None:
    alert = raise_alert(conn, tenant, project)
    act_for(conn, make_tenant(conn))
    try:
        assert sqlstate_of(conn, "select ml.acknowledge_alert(%s)", alert) == "P0002"
        assert sqlstate_of(conn, "select ml.resolve_alert(%s)", alert) == "P0002"
    finally:
        act_for(conn, tenant)
    assert one(conn, "select status from ml.alerts where id = %s", alert) == "open"


def test_a_viewer_may_list_but_not_acknowledge(conn: Conn, tenant: str, project: str) -> None:
    alert = raise_alert(conn, tenant, project)
    viewer = str(uuid.uuid4())
    conn.execute("select ml.add_tenant_member(%s, %s, 'viewer')", (tenant, viewer))
    claims = json.dumps({"sub": viewer, "role": "authenticated"})
    with conn.transaction(force_rollback=True):
        conn.execute("select set_config('pgmlops.tenant_id', '', true), set_config('request.jwt.claims', %s, true)", (claims,))
        conn.execute("set local role authenticated")
        listed = one(conn, "select ml.alerts(%s)", project_name(conn, project))
        assert [a["id"] for a in listed] == [alert]
        assert sqlstate_of(conn, "select ml.acknowledge_alert(%s)", alert) == "42501"


def test_alerts_lists_by_status(conn: Conn, tenant: str, project: str) -> None:
    a = raise_alert(conn, tenant, project, feature="a")
    b = raise_alert(conn, tenant, project, feature="b")
    c = raise_alert(conn, tenant, project, feature="c")
    conn.execute("select ml.acknowledge_alert(%s)", (b,))
    conn.execute("select ml.resolve_alert(%s)", (c,))
    name = project_name(conn, project)

    def ids(status: str | None) -> set[str]:
        return {x["id"] for x in one(conn, "select ml.alerts(%s, %s)", name, status)}

    assert ids(None) == {a, b, c}
    assert ids("open") == {a}
    assert ids("acknowledged") == {b}
    assert ids("resolved") == {c}
    assert ids("active") == {a, b}
    newest = one(conn, "select ml.alerts(%s)", name)[0]
    assert newest["id"] == c and newest["project"] == name
    assert sqlstate_of(conn, "select ml.alerts(%s, 'closed')", name) == "22023"
    assert sqlstate_of(conn, "select ml.alerts('no-such-project')") == "P0002"


# -- Supabase Realtime -------------------------------------------------------------------------


@pytest.fixture(params=["server", "embedded"])
def realtime_db(request: pytest.FixtureRequest) -> Iterator[str]:
    """A database made as on Supabase: the publication supabase_realtime exists before pgmlops is
    migrated into it."""
    srv: Server = request.getfixturevalue("embedded_server" if request.param == "embedded" else "server")
    url = srv.empty_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create publication supabase_realtime")
    migrations.upgrade(url)
    yield url
    srv.drop(url)


@pytest.mark.embedded
def test_alerts_and_events_join_the_supabase_realtime_publication(realtime_db: str) -> None:
    with psycopg.connect(realtime_db, autocommit=True) as conn:
        published = {r[0] for r in conn.execute(
            "select schemaname || '.' || tablename from pg_publication_tables where pubname = 'supabase_realtime'")}
        events_kind = one(conn, "select relkind::text from pg_class where oid = 'ml.events'::regclass")
        via_root = one(conn, "select pubviaroot from pg_publication where pubname = 'supabase_realtime'")
        assert "ml.alerts" in published
        if events_kind == "p":  # native partitions (embedded): published as ml.events itself
            assert "ml.events" in published and via_root is True
        else:  # a TimescaleDB hypertable (full server): left out, see alerts.sql's header
            assert not any(t == "ml.events" or t.startswith("_timescaledb") for t in published)
        # Idempotent: applying the file again changes nothing and does not fail.
        conn.execute("delete from ml_private.repeatable_files")
    migrations.upgrade(realtime_db)
    with psycopg.connect(realtime_db, autocommit=True) as conn:
        again = {r[0] for r in conn.execute(
            "select schemaname || '.' || tablename from pg_publication_tables where pubname = 'supabase_realtime'")}
    assert again == published


def test_a_subscriber_of_tenant_b_sees_nothing_of_tenant_a(conn: Conn) -> None:
    """Supabase Realtime checks each change by selecting the row as the subscriber (role
    authenticated, the subscriber's claims): that SELECT must see its own tenant's alerts only."""
    owner_a, member_b = str(uuid.uuid4()), str(uuid.uuid4())
    tenant_a = str(one(conn, "select ml.create_tenant(%s, %s)", f"rt-a-{owner_a[:8]}", owner_a))
    tenant_b = str(one(conn, "select ml.create_tenant(%s, %s)", f"rt-b-{member_b[:8]}", member_b))
    alerts = {}
    for t in (tenant_a, tenant_b):
        act_for(conn, t)
        project = str(one(conn, "select ml.create_project('rt', 'classification', 'label')"))
        alerts[t] = raise_alert(conn, t, project)
    act_for(conn, None)
    for member, own in ((member_b, tenant_b), (owner_a, tenant_a)):
        with conn.transaction(force_rollback=True):
            conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps({"sub": member, "role": "authenticated"}),))
            conn.execute("set local role authenticated")
            seen = {str(r[0]) for r in conn.execute("select id from ml.alerts")}
            by_id = {str(r[0]) for r in conn.execute("select id from ml.alerts where id = any(%s)", (list(alerts.values()),))}
            seen_events = {str(r[0]) for r in conn.execute("select distinct tenant_id from ml.events")}
        assert seen == by_id == {alerts[own]}
        assert seen_events == {own}
