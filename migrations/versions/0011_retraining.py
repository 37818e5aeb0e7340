"""Retraining: per-project retraining policies and the retraining event log.

ml.retraining_policies holds one validated policy per project (its triggers, cooldown, training
recipe, data curation, offline and online evaluation, rollback bound and promotion mode);
ml.retraining_events records every step of the retraining loop (trigger, skip, curate, train,
evaluate, shadow, promote, rollback, ...) with its evidence, the data used, the candidate, the
test results, the decision and its reason. The functions live in the repeatable
sql/retraining/; the contract is in docs/retraining.md.

Revision ID: 0011_retraining
Revises: 0010_monitoring
Create Date: 2026-12-05 09:00:00
"""

from __future__ import annotations

from pgmlops.migrations.ops import drop_tracked, run_sql_files_tracked

revision = "0011_retraining"
down_revision = "0010_monitoring"
branch_labels = None
depends_on = None

FILES = ["retraining.sql", "retrain_jobs.sql", "learn_jobs.sql"]  # in 0011_retraining/, in this order


def upgrade() -> None:
    run_sql_files_tracked(revision, __file__, FILES)


def downgrade() -> None:
    # Views the repeatable sql/ added while this revision was the head, then the functions and
    # tables this revision made (and their entries in pgmlops' registries).
    drop_tracked(revision)
