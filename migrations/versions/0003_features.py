"""Feature store: feature groups, validated ingestion, online store, training sets, statistics, lineage.

Revision ID: 0003_features
Revises: 0002_queue
Create Date: 2026-11-23
"""

from __future__ import annotations

from pgmlops.migrations.ops import drop_tracked, run_sql, run_sql_files_tracked

revision = "0003_features"
down_revision = "0002_queue"
branch_labels = None
depends_on = None

# Released: these files (in 0003_features/, as they were in sql/ then) never change.
FILES = ["features.sql", "feature_ingest.sql", "training_sets.sql", "feature_stats.sql"]


def upgrade() -> None:
    run_sql_files_tracked(revision, __file__, FILES, label="sql/{name}")


def downgrade() -> None:
    drop_tracked(revision)
    run_sql("drop schema if exists ml_datasets cascade;")
