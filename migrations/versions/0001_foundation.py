"""Foundation: schemas, Supabase roles and auth shim, tenants with RLS, validation, time partitioning, events.

Revision ID: 0001_foundation
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from pgmlops.migrations.ops import run_revision_file, run_sql

revision = "0001_foundation"
down_revision = None
branch_labels = None
depends_on = None

# Released: these files (in 0001_foundation/, as they were in sql/ then) never change.
FILES = ["bootstrap.sql", "validation.sql", "tenants.sql", "timeseries.sql", "events.sql"]


def upgrade() -> None:
    for name in FILES:
        run_revision_file(__file__, name, label=f"sql/{name}")


def downgrade() -> None:
    run_sql(
        """
        do $$
        begin
            -- Dynamic SQL: cron.job does not exist where pg_cron is absent.
            if exists (select 1 from pg_extension where extname = 'pg_cron') then
                execute 'select cron.unschedule(jobid) from cron.job where jobname = $1' using 'pgmlops-maintenance';
            end if;
            if (select value = 'true'::jsonb from ml_private.settings where key = 'auth_shim') then
                drop schema auth cascade;
            end if;
        end
        $$;
        drop schema ml cascade;
        drop schema ml_private cascade;
        drop schema if exists ml_chunks cascade;  -- chunks of the hypertables, gone with them
        """
    )
