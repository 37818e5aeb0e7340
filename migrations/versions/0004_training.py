"""Training, tuning and the model registry: algorithms, projects, runs, models, versions, aliases, approvals, policies, audit log.

Revision ID: 0004_training
Revises: 0003_features
Create Date: 2026-11-24
"""

from __future__ import annotations

from pgmlops.migrations.ops import drop_tracked, run_sql, run_sql_files_tracked

revision = "0004_training"
down_revision = "0003_features"
branch_labels = None
depends_on = None

# Released: these files (in 0004_training/, as they were in sql/ then) never change.
FILES = ["training.sql", "registry.sql", "tuning.sql"]

# Rows this revision adds to registries older revisions own: its job kinds (and their jobs),
# lineage kinds and the lineage edges that reach its artifacts.
_JOB_KINDS = "'train', 'tune_trial', 'tune'"
_LINEAGE_KINDS = "'project', 'run', 'model_version'"


def upgrade() -> None:
    run_sql_files_tracked(revision, __file__, FILES, label="sql/{name}")


def downgrade() -> None:
    drop_tracked(revision)
    run_sql(f"""
        delete from ml.jobs where kind in ({_JOB_KINDS});
        delete from ml.job_kinds where kind in ({_JOB_KINDS});
        delete from ml.lineage where from_kind in ({_LINEAGE_KINDS}) or to_kind in ({_LINEAGE_KINDS});
        delete from ml_private.lineage_kinds where kind in ('project', 'run');
        -- model_version was registered (unnamed) by 0003_features; put it back as it was.
        update ml_private.lineage_kinds set name_sql = null, description = 'a registered model version'
        where kind = 'model_version';
        -- Optuna's tables (tuning studies) live in their own schema.
        drop schema if exists optuna cascade;
    """)
