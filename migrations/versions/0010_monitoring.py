"""Monitoring: reference profiles, drift reports and results, performance, fast-mode counts, window embeddings, alerts, schedules.

ml.reference_profiles holds what normal looks like (bins on fixed edges, frequencies, summaries)
per training set and model version; ml.drift_reports / ml.drift_results / ml.performance_results
hold each monitoring window's verdict; ml.window_counts and ml.window_watermarks make the fast
mode; ml.window_embeddings (pgvector, HNSW) finds the past windows a distribution resembles;
ml.alerts (one open alert per fingerprint) and ml.monitoring_schedules (pg_cron or the worker's
scheduler) close the loop. The functions live in the repeatable sql/monitoring/; the contract is
in docs/monitoring.md.

Revision ID: 0010_monitoring
Revises: 0009_scoring
Create Date: 2026-12-04 09:00:00
"""

from __future__ import annotations

from pgmlops.migrations.ops import drop_tracked, run_sql_files_tracked

revision = "0010_monitoring"
down_revision = "0009_scoring"
branch_labels = None
depends_on = None

FILES = ["profiles.sql", "reports.sql", "windows.sql", "alerts.sql", "monitor_jobs.sql"]  # in 0010_monitoring/, in this order


def upgrade() -> None:
    run_sql_files_tracked(revision, __file__, FILES)


def downgrade() -> None:
    # Views the repeatable sql/ added while this revision was the head, then the functions and
    # tables this revision made (and their entries in pgmlops' registries).
    drop_tracked(revision)
