"""Job queue: kinds, jobs, enqueue/claim/heartbeat/complete/fail/cancel, status events.

Revision ID: 0002_queue
Revises: 0001_foundation
Create Date: 2026-11-23
"""

from __future__ import annotations

from pgmlops.migrations.ops import run_revision_file, run_sql

revision = "0002_queue"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Released: 0002_queue/queue.sql (as it was in sql/ then) never changes.
    run_revision_file(__file__, "queue.sql", label="sql/queue.sql")


def downgrade() -> None:
    run_sql(
        """
        drop function ml.claim_jobs(text, text[], int, interval);
        drop function ml.fail_job(bigint, text, text, boolean);
        drop function ml.release_job(bigint, text);
        drop function ml_private.held_job(bigint, text);
        drop view ml.job_counts;
        drop table ml.jobs;
        drop table ml.job_kinds;
        drop function ml_private.jobs_publish_status();
        drop function ml_private.register_job_kind(text, text, jsonb, int, interval, interval, interval);
        drop function ml.enqueue(text, jsonb, int, timestamptz, int);
        drop function ml_private.enqueue_job(text, jsonb, int, timestamptz, int);
        drop function ml.cancel_job(bigint);
        drop function ml_private.cancel_job_impl(bigint);
        drop function ml.job_result(bigint);
        drop function ml.reap_expired_leases(int);
        drop function ml.heartbeat(bigint, text);
        drop function ml.complete_job(bigint, text, jsonb);
        drop function ml_private.check_worker_id(text);
        drop function ml_private.purge_finished_jobs(interval);
        delete from ml_private.tenant_tables where table_name = 'ml.jobs';
        """
    )
