"""ml.train's options accept learning_curve (per-step metrics only when asked): repeatable SQL only.

Nothing versioned changes; the revision exists so that the changed sql/training/runs.sql reaches
Supabase projects in a migration file of its own (docs/migrations.md: a change to sql/ ships with
a new revision).

Revision ID: 0006_train_learning_curve
Revises: 0005_partition_rls
Create Date: 2026-12-01 15:05:00
"""

from __future__ import annotations

from pgmlops.migrations.ops import drop_tracked, run_revision_file

revision = "0006_train_learning_curve"
down_revision = "0005_partition_rls"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_file(__file__, "learning_curve.sql")


def downgrade() -> None:
    # Views the repeatable sql/ added while this revision was the head go first.
    drop_tracked(revision)
