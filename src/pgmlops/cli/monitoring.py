"""`pgmlops monitor report | schedule | unschedule` and `pgmlops alerts`: monitoring."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any

import psycopg
import typer
from rich.table import Table

from pgmlops.cli._common import Tenant, console, json_arg, tenant_conn, tenant_id
from pgmlops.db import sql_errors

app = typer.Typer(help="Monitoring: drift reports and their schedules.", no_args_is_help=True)

_LIFECYCLE = ("ack", "resolve")


def _when(text: str, option: str) -> datetime:
    """An ISO 8601 time (``2026-03-01``, ``2026-03-01T10:00``, with or without an offset; UTC
    without one), or ``now``."""
    if text.strip().lower() == "now":
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r}: expected an ISO 8601 time such as 2026-03-01T10:00 or 'now'",
                                 param_hint=option) from exc
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _number(value: Any) -> str:
    if value is None:
        return "-"
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


def verdict_table(document: dict[str, Any]) -> Table:
    """A report's per-feature verdicts in at most 80 columns: feature (role-prefixed for the
    model's outputs and the label), test, statistic, threshold, drifted; drifted rows first."""
    report = document.get("report") or document
    results = list(document.get("results") or [])
    results.sort(key=lambda r: (not r.get("drifted"), str(r.get("role") or "input") != "input",
                                str(r.get("feature")), str(r.get("test"))))
    title = (f"drift of {report.get('project') or ''} {str(report.get('window_start') or '')[:16]} .. "
             f"{str(report.get('window_end') or '')[:16]}").replace("T", " ")
    table = Table(title=title, width=80)
    table.add_column("feature", overflow="ellipsis", no_wrap=True, ratio=1)
    table.add_column("test", no_wrap=True, max_width=18)
    table.add_column("statistic", justify="right", no_wrap=True)
    table.add_column("threshold", justify="right", no_wrap=True)
    table.add_column("drifted", no_wrap=True)
    for r in results:
        role = str(r.get("role") or "input")
        feature = str(r.get("feature")) if role == "input" else f"{role}:{r.get('feature')}"
        statistic = _number(r.get("statistic"))
        if r.get("p_value") is not None:
            statistic = f"p={_number(r.get('p_value'))}"
        table.add_row(feature, str(r.get("test")), statistic, _number(r.get("threshold")),
                      "[bold red]yes[/]" if r.get("drifted") else "no")
    return table


def report(
    project: str,
    start: Annotated[str, typer.Option(help="Window start (ISO 8601, UTC without an offset).")],
    end: Annotated[str, typer.Option(help="Window end (ISO 8601, or 'now').")] = "now",
    mode: Annotated[str | None, typer.Option(help="exact (sorted samples) or fast (binned on the reference's edges).")] = None,
    options: Annotated[str, typer.Option(help="More of ml.drift_report's options as JSON.")] = "{}",
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole report document as JSON.")] = False,
    tenant: Tenant = "",
) -> None:
    """Make PROJECT's drift report for the window [--start, --end) (ml.drift_report) and print its
    verdicts: feature, test, statistic (or p-value), threshold, drifted."""
    from pgmlops import monitoring

    opts = json_arg(options, "options")
    if not isinstance(opts, dict):
        raise typer.BadParameter("options: must be a JSON object", param_hint="'--options'")
    if mode is not None:
        opts["mode"] = mode
    with tenant_conn(tenant) as conn:
        report_id = monitoring.drift_report(conn, project, _when(start, "'--start'"), _when(end, "'--end'"), opts)
        document = monitoring.drift_report_document(conn, report_id)
    if as_json:
        console.print_json(json.dumps(document, default=str))
        return
    console.print(verdict_table(document))
    head = document.get("report") or document
    console.print(f"report {report_id}: {head.get('drifted_features', '?')} of {head.get('features_tested', '?')} "
                  f"features drifted; dataset drift: {'yes' if head.get('dataset_drift') else 'no'}")


def schedule(
    project: str,
    cron: Annotated[str, typer.Option(help="When, as 5-field cron in UTC ('*/30 * * * *', '0 6 * * mon-fri', '@hourly').")],
    window: Annotated[str, typer.Option(help="How much before each tick to report on (an interval: '1 hour', '1 day').")],
    mode: Annotated[str | None, typer.Option(help="exact or fast.")] = None,
    options: Annotated[str, typer.Option(help="More of ml.drift_report's options as JSON.")] = "{}",
    tenant: Tenant = "",
) -> None:
    """Report on PROJECT's drift on a schedule (ml.schedule_monitoring): pg_cron where installed,
    otherwise `pgmlops worker`. Replaces the project's schedule; prints it with its next run."""
    from pgmlops import monitoring

    opts = json_arg(options, "options")
    if not isinstance(opts, dict):
        raise typer.BadParameter("options: must be a JSON object", param_hint="'--options'")
    if mode is not None:
        opts["mode"] = mode
    with tenant_conn(tenant) as conn:
        monitoring.schedule_monitoring(conn, project, cron, window, opts)
        doc = monitoring.monitoring_schedule(conn, project)
    assert doc is not None
    console.print(f"{project}: drift report of the last {doc['window']} at '{doc['cron']}' (UTC) by {doc['backend']}; "
                  f"next run {str(doc['next_run_at'])[:16].replace('T', ' ')}")


def unschedule(project: str, tenant: Tenant = "") -> None:
    """Stop PROJECT's scheduled drift reports (ml.unschedule_monitoring)."""
    from pgmlops import monitoring

    with tenant_conn(tenant) as conn:
        removed = monitoring.unschedule_monitoring(conn, project)
    console.print(f"{project}: schedule removed" if removed else f"{project}: no schedule")


app.command()(report)
app.command()(schedule)
app.command()(unschedule)


def alerts_table(project: str, rows: list[dict[str, Any]]) -> Table:
    """Alerts in at most 80 columns: id (short), severity, status, kind, feature, count, last seen."""
    table = Table(title=f"alerts of {project}", width=80)
    table.add_column("id", no_wrap=True)
    table.add_column("severity", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("kind", no_wrap=True, overflow="ellipsis", max_width=16)
    table.add_column("feature", no_wrap=True, overflow="ellipsis", ratio=1)
    table.add_column("n", justify="right", no_wrap=True)
    table.add_column("last seen", no_wrap=True)
    colour = {"critical": "bold red", "warning": "yellow", "info": "cyan"}
    for a in rows:
        severity = str(a.get("severity"))
        table.add_row(str(a.get("id"))[:8], f"[{colour.get(severity, 'white')}]{severity}[/]", str(a.get("status")),
                      str(a.get("kind")), str(a.get("feature") or "-"), str(a.get("count")),
                      str(a.get("last_seen") or "")[:16].replace("T", " "))
    return table


_PREFIX = re.compile(r"^[0-9a-f]{8}(?:[0-9a-f-]{0,28})$")


def _full_alert_id(conn: psycopg.Connection[Any], tenant: str, text: str) -> str:
    """The id of the tenant's alert that ``text`` names: a full id, or a unique prefix of at least
    8 characters (the listing shows 8). Unknown prefixes are left for the SQL API to refuse."""
    value = text.strip().lower()
    if len(value) == 36 or not _PREFIX.match(value):
        return text
    with sql_errors():
        rows = conn.execute("select id::text from ml.alerts where tenant_id = %s and id::text like %s limit 2",
                            (tenant_id(tenant), value + "%")).fetchall()
    if len(rows) > 1:
        raise typer.BadParameter(f"{text!r} names more than one alert: give more of its id", param_hint="ID")
    return str(rows[0][0]) if rows else text


def alerts(
    target: Annotated[str, typer.Argument(metavar="PROJECT | ack | resolve",
                                          help="The project whose alerts to list, or ack / resolve followed by an alert id.")],
    alert_id: Annotated[str | None, typer.Argument(metavar="[ID]", help="The alert to acknowledge or resolve.")] = None,
    status: Annotated[str | None, typer.Option(help="open, acknowledged, resolved or active (open and acknowledged).")] = None,
    comment: Annotated[str | None, typer.Option(help="Why (kept in the alert's notes; ack / resolve).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    tenant: Tenant = "",
) -> None:
    """List PROJECT's alerts (ml.alerts), newest first, or acknowledge / resolve one:
    `pgmlops alerts ack ID`, `pgmlops alerts resolve ID` (ID: the alert's id, or the first 8 or
    more of its characters as the listing shows them)."""
    from pgmlops import monitoring

    if target in _LIFECYCLE and alert_id is not None:
        with tenant_conn(tenant) as conn:
            alert_id = _full_alert_id(conn, tenant, alert_id)
            if target == "ack":
                result = monitoring.acknowledge_alert(conn, alert_id, comment)
            else:
                result = monitoring.resolve_alert(conn, alert_id, comment)
        if as_json:
            console.print_json(json.dumps(result, default=str))
        else:
            console.print(f"alert {result['id']} ({result['kind']} {result.get('feature') or ''}): {result['status']}")
        return
    if alert_id is not None:
        raise typer.BadParameter(f"{alert_id!r}: an alert id follows ack or resolve only", param_hint="ID")
    with tenant_conn(tenant) as conn:
        rows = monitoring.alerts(conn, target, status)
    if as_json:
        console.print_json(json.dumps(rows, default=str))
    elif not rows:
        console.print(f"{target}: no alerts" + (f" {status}" if status else ""))
    else:
        console.print(alerts_table(target, rows))
