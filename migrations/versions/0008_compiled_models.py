"""Models compiled to SQL: schema ml_models for the generated functions, and each version's scoring path.

Schema ml_models holds one pure-SQL function per compiled model version (written by
ml.install_compiled_model, sql/scoring/); no client role may use it. ml.model_versions gains
scoring_path ('compiled' or 'worker') and scoring (the compiled function and its arguments, or
why the version is scored by workers). Versions registered before this revision are 'worker'
until pgmlops.scoring.compile_model_version compiles them. The contract is in docs/scoring.md.

Revision ID: 0008_compiled_models
Revises: 0007_typed_feature_storage
Create Date: 2026-12-02 16:00:00
"""

from __future__ import annotations

from pgmlops.migrations.ops import drop_tracked, run_revision_file

revision = "0008_compiled_models"
down_revision = "0007_typed_feature_storage"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_file(__file__, "compiled_models.sql")


def downgrade() -> None:
    # Views the repeatable sql/ added while this revision was the head go first.
    drop_tracked(revision)
    run_revision_file(__file__, "downgrade.sql")
