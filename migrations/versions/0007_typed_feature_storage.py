"""Typed storage per feature group version: one offline and one online table per version, with a column per feature.

Schema ml_features holds, for every feature group version, an offline table (every row
ingested; time-partitioned) and an online table (the newest row per entity), each with one typed
column per feature; ml.feature_groups names them (offline_table, online_table). The existing
values move there from the jsonb tables ml.feature_values and ml.feature_online. The downgrade
moves them back. The contract is in docs/features.md.

Revision ID: 0007_typed_feature_storage
Revises: 0006_train_learning_curve
Create Date: 2026-12-02 09:00:00
"""

from __future__ import annotations

from pgmlops.migrations.ops import drop_tracked, run_revision_file, run_sql_files_tracked

revision = "0007_typed_feature_storage"
down_revision = "0006_train_learning_curve"
branch_labels = None
depends_on = None

FILES = ["typed_storage.sql"]  # in 0007_typed_feature_storage/, run in this order


def upgrade() -> None:
    run_sql_files_tracked(revision, __file__, FILES)


def downgrade() -> None:
    # Views the repeatable sql/ added while this revision was the head go first, then the
    # functions this revision made (the values' move back needs none of them).
    drop_tracked(revision)
    run_revision_file(__file__, "downgrade.sql")
