"""Monitoring from Python: drift reports, reference profiles, similar windows, alerts and
schedules, over the SQL API.

A thin layer over sql/monitoring/*.sql: the statistics, verdicts, alert deduplication and
schedules live in the database, so Python, psql, supabase-py and the edge functions meet the same
rules. Each function makes one call of the SQL API.

Every function takes an open psycopg connection. Given ``tenant``, the call runs in its own
transaction of a service caller acting for that tenant (:func:`pgmlops.db.tenant_context`,
committed when it returns); without it, the call joins the connection's transaction, which must
already act for a tenant (a ``tenant_context`` block, or a signed-in user's claims). Errors from
the SQL API leave as :mod:`pgmlops.errors` exceptions carrying their SQLSTATE
(:func:`pgmlops.db.call`); a refused call writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from pgmlops.db import call, sql_errors, tenant_context

__all__ = [
    "acknowledge_alert",
    "alerts",
    "drift_report",
    "drift_report_document",
    "monitoring_schedule",
    "reference_profile",
    "resolve_alert",
    "schedule_monitoring",
    "similar_windows",
    "unschedule_monitoring",
]

TenantId = UUID | str | None


@contextmanager
def _acting(conn: psycopg.Connection[Any], tenant: TenantId) -> Iterator[psycopg.Connection[Any]]:
    """``conn`` acting for ``tenant`` (one transaction) when given, else as it is."""
    with tenant_context(conn, tenant) if tenant is not None else nullcontext(conn):
        yield conn


def _value(conn: psycopg.Connection[Any], tenant: TenantId, expression: str, params: Sequence[Any]) -> Any:
    with _acting(conn, tenant):
        return call(conn, expression, params)


# -- reports -------------------------------------------------------------------------------------


def drift_report(conn: psycopg.Connection[Any], project: str, window_start: datetime, window_end: datetime,
                 options: Mapping[str, Any] | None = None, *, tenant: TenantId = None) -> UUID:
    """Make the drift report of ``project``'s window ``[window_start, window_end)`` against its
    reference (``ml.drift_report``): per-feature tests of the inputs, the prediction, the score and
    the label, the dataset verdict, performance, the regime section; alerts are raised from it.
    ``options`` are ml.drift_report's (``{"mode": "exact" | "fast", ...}``). Returns the report's
    id; :func:`drift_report_document` reads it.

    Raises:
        InvalidInput: a window whose start is not before its end, bad options (the message names
            them).
        NotFound: no such project, or nothing to compare against (no reference).
        AccessDenied: the caller may not write in the tenant.
    """
    result = _value(conn, tenant, "ml.drift_report(%s, %s, %s, %s)",
                    (project, window_start, window_end, Jsonb(dict(options or {}))))
    return UUID(str(result))


def drift_report_document(conn: psycopg.Connection[Any], report: UUID | str, *, tenant: TenantId = None) -> dict[str, Any]:
    """Everything about report ``report`` (``ml.drift_report_document``): the report, its results,
    summary sections, performance rows, alerts raised and similar past windows, as one dict (what
    the CLI and the HTML report read).

    Raises:
        NotFound: no such report in the caller's tenant.
    """
    result = _value(conn, tenant, "ml.drift_report_document(%s)", (str(report),))
    assert result is not None
    return dict(result)


def reference_profile(conn: psycopg.Connection[Any], model: str, version: int | None = None, *,
                      tenant: TenantId = None) -> dict[str, Any]:
    """The reference profile of ``model``'s ``version`` (the newest without it;
    ``ml.reference_profile``): per feature and model output its kind, counts, bins, frequencies
    and summary, as stored when the version was registered.

    Raises:
        NotFound: no such model or version.
    """
    result = _value(conn, tenant, "ml.reference_profile(%s, %s)", (model, version))
    assert result is not None
    return dict(result)


def similar_windows(conn: psycopg.Connection[Any], project: str, report: UUID | str, k: int = 5, *,
                    tenant: TenantId = None) -> list[dict[str, Any]]:
    """The ``k`` past windows of ``project`` most like report ``report``'s (``ml.similar_windows``),
    nearest first, one dict per window with the columns ml.similar_windows returns.

    Raises:
        InvalidInput: ``k`` below 1.
        NotFound: no such project or report.
    """
    with _acting(conn, tenant), sql_errors(), conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("select * from ml.similar_windows(%s, %s, %s)", (project, str(report), k)).fetchall()


# -- alerts --------------------------------------------------------------------------------------


def alerts(conn: psycopg.Connection[Any], project: str, status: str | None = None, *,
           tenant: TenantId = None) -> list[dict[str, Any]]:
    """``project``'s alerts, most recently seen first (``ml.alerts``): one dict per alert,
    ``{id, project, kind, feature, severity, status, count, first_seen, last_seen, report_id,
    message, evidence, acknowledged_by, acknowledged_at, resolved_by, resolved_at, notes}``.
    ``status``: ``open``, ``acknowledged``, ``resolved`` or ``active`` (open and acknowledged);
    None for all.

    Raises:
        InvalidInput: an unknown status.
        NotFound: no such project.
    """
    result = _value(conn, tenant, "ml.alerts(%s, %s)", (project, status))
    return [dict(a) for a in result or []]


def acknowledge_alert(conn: psycopg.Connection[Any], alert: UUID | str, comment: str | None = None, *,
                      tenant: TenantId = None) -> dict[str, Any]:
    """Mark open alert ``alert`` acknowledged (``ml.acknowledge_alert``), keeping ``comment`` in
    its notes; repeats still count. Returns the alert.

    Raises:
        InvalidState: the alert is not open (55000).
        NotFound: no such alert in the caller's tenant.
        InvalidInput: a comment over 2000 characters.
        AccessDenied: a viewer.
    """
    result = _value(conn, tenant, "ml.acknowledge_alert(%s, %s)", (str(alert), comment))
    return dict(result)


def resolve_alert(conn: psycopg.Connection[Any], alert: UUID | str, comment: str | None = None, *,
                  tenant: TenantId = None) -> dict[str, Any]:
    """Resolve open or acknowledged alert ``alert`` (``ml.resolve_alert``), keeping ``comment`` in
    its notes; the next finding with its fingerprint opens a new alert. Returns the alert.

    Raises:
        InvalidState: already resolved (55000).
        NotFound: no such alert in the caller's tenant.
        InvalidInput: a comment over 2000 characters.
        AccessDenied: a viewer.
    """
    result = _value(conn, tenant, "ml.resolve_alert(%s, %s)", (str(alert), comment))
    return dict(result)


# -- schedules -----------------------------------------------------------------------------------


def schedule_monitoring(conn: psycopg.Connection[Any], project: str, cron: str, window: timedelta | str,
                        options: Mapping[str, Any] | None = None, *, tenant: TenantId = None) -> UUID:
    """Make ``project``'s drift report on every tick of ``cron`` (5 fields, UTC; macros such as
    ``@hourly``), over the ``window`` ending then (a timedelta, or a PostgreSQL interval such as
    ``"1 hour"``), with ``options`` (:func:`drift_report`'s) (``ml.schedule_monitoring``). pg_cron
    runs it where installed, otherwise the workers' scheduler. Scheduling again replaces the
    project's schedule. Returns the schedule's id.

    Raises:
        InvalidInput: a malformed or unsupported cron expression (the message names the field),
            a window not positive or over 366 days, bad options.
        NotFound: no such project.
        AccessDenied: a viewer.
    """
    result = _value(conn, tenant, "ml.schedule_monitoring(%s, %s, %s::interval, %s)",
                    (project, cron, window, Jsonb(dict(options or {}))))
    return UUID(str(result))


def unschedule_monitoring(conn: psycopg.Connection[Any], project: str, *, tenant: TenantId = None) -> bool:
    """Remove ``project``'s monitoring schedule (``ml.unschedule_monitoring``) and its pg_cron job.
    Returns whether there was one.

    Raises:
        NotFound: no such project.
        AccessDenied: a viewer.
    """
    return bool(_value(conn, tenant, "ml.unschedule_monitoring(%s)", (project,)))


def monitoring_schedule(conn: psycopg.Connection[Any], project: str, *, tenant: TenantId = None) -> dict[str, Any] | None:
    """``project``'s schedule (``ml.monitoring_schedule``): ``{id, project, cron, window, options,
    backend (pg_cron | worker), cron_job_id, enabled, last_run_at, next_run_at, last_report,
    last_error, created_at}``, or None when it has none.

    Raises:
        NotFound: no such project.
    """
    result = _value(conn, tenant, "ml.monitoring_schedule(%s)", (project,))
    return None if result is None else dict(result)
