"""Serving: deployments (arms, strategies, history), the prediction log, feedback, batch scorings.

ml.deployments / ml.deployment_arms say which model versions take a project's traffic and how
(single, ab, canary, shadow, blue_green); one deployment per project is active, the earlier ones
stay as history (ml.rollback returns to the previous one). ml.predictions is the prediction log
(time-partitioned: a hypertable on the full server), ml.feedback the realized outcomes joined to
it, ml.batch_scorings the batch jobs of ml.predict_batch / ml.score. The functions live in the
repeatable sql/scoring/; the contract is in docs/serving.md.

Revision ID: 0009_scoring
Revises: 0008_compiled_models
Create Date: 2026-12-03 09:00:00
"""

from __future__ import annotations

from pgmlops.migrations.ops import drop_tracked, run_sql_files_tracked

revision = "0009_scoring"
down_revision = "0008_compiled_models"
branch_labels = None
depends_on = None

# in 0009_scoring/, in this order
FILES = ["deployments.sql", "predictions.sql", "feedback.sql", "batch_scoring.sql", "compile_jobs.sql"]


def upgrade() -> None:
    run_sql_files_tracked(revision, __file__, FILES)


def downgrade() -> None:
    # Views the repeatable sql/ added while this revision was the head, then the functions and
    # tables this revision made (and their entries in pgmlops' registries).
    drop_tracked(revision)
