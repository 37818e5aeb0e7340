"""Monitoring: drift reports against reference profiles, similar past windows, alerts and
monitoring schedules, over the SQL API (sql/monitoring/; docs/monitoring.md)."""

from __future__ import annotations

from pgmlops.monitoring._api import (
    acknowledge_alert,
    alerts,
    drift_report,
    drift_report_document,
    monitoring_schedule,
    reference_profile,
    resolve_alert,
    schedule_monitoring,
    similar_windows,
    unschedule_monitoring,
)

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
