"""Repeatable SQL (the checksums of sql/) and row-level security on every partition and chunk.

The first revision of the versioned + repeatable scheme (docs/migrations.md): from here on sql/
holds the current functions, views, triggers, policies and grants, applied when an upgrade reaches
the head. Its own SQL (0005_partition_rls/) secures the partitions of ml.events, ml.feature_values
and ml.run_metrics (native partitions or TimescaleDB chunks) like their tables.

Revision ID: 0005_partition_rls
Revises: 0004_training
Create Date: 2026-12-01 15:00:00
"""

from __future__ import annotations

from pgmlops.migrations.ops import drop_tracked, run_revision_file, run_sql

revision = "0005_partition_rls"
down_revision = "0004_training"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_file(__file__, "partition_rls.sql")


def downgrade() -> None:
    # Views the repeatable sql/ added while this revision was the head go first.
    drop_tracked(revision)
    # The partitions keep their row-level security, and the functions and triggers that give it to
    # new partitions stay: the current sql/ (which a downgrade leaves in place) calls them, and
    # taking a defence away buys nothing. Only the checksums go, so the next upgrade re-applies sql/.
    run_sql("drop table ml_private.repeatable_files;")
