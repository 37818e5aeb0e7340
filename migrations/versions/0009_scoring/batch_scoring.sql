-- pgmlops 0009: batch scorings (docs/batch-scoring.md)
--
-- One row per ml.score call: what is scored (source) into where (target) by which model
-- version, on which path (sql: each chunk scored by the compiled function in one statement;
-- worker: rows COPYed out, predicted in Python and COPYed in), and how far it got. A chunk's rows
-- and rows_done are committed together, so a worker that dies mid-run resumes after the last
-- committed chunk and writes no row twice. The source is read once, with the caller's rights,
-- into a snapshot (ml_private.batch_rows_<id as 32 hex>, made and dropped by
-- sql/scoring/batch.sql) whose row_number gives the chunks their order.

create table ml.batch_scorings (
    id               uuid primary key default gen_random_uuid(),
    tenant_id        uuid not null references ml.tenants (id) on delete cascade,
    project_id       uuid not null references ml.projects (id) on delete cascade,
    deployment_id    uuid references ml.deployments (id) on delete set null,
    model_version_id uuid not null references ml.model_versions (id) on delete cascade,
    -- the source as given (a table name or a query) and the target table, schema-qualified
    source           text not null,
    target           text not null,
    -- the source's columns copied to the target beside each prediction (options.key)
    keys             text[] not null default '{}',
    -- the normalized options, with the caller's search_path (the source's names resolve in it)
    options          jsonb not null default '{}',
    path             text not null,
    job_id           bigint,
    status           text not null default 'queued',
    chunk_rows       int not null default 50000,
    rows_total       bigint,
    rows_done        bigint not null default 0,
    error            text,
    created_by       uuid,
    created_at       timestamptz not null default now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    constraint batch_scorings_path_valid check (path in ('sql', 'worker')),
    constraint batch_scorings_status_valid check (status in ('queued', 'running', 'succeeded', 'failed')),
    constraint batch_scorings_chunk_rows check (chunk_rows between 1 and 10000000),
    constraint batch_scorings_rows_done check (rows_done >= 0)
);
create index batch_scorings_tenant_idx on ml.batch_scorings (tenant_id, project_id, created_at desc);
comment on table ml.batch_scorings is 'Batch scorings (ml.score): source, target, model version, path, progress';
select ml_private.enable_tenant_rls('ml.batch_scorings');

-- score: one batch scoring (ml.score enqueues it). The payload names the ml.batch_scorings row;
-- everything else is there. A lease of 5 minutes: heartbeats renew it, and a dead worker's job
-- resumes after its last committed chunk.
select ml_private.register_job_kind(
    'score', 'Scores a table or query into a target table, chunk by chunk (enqueued by ml.score)',
    $j${"type": "object", "additionalProperties": false, "required": ["batch_scoring_id"],
        "properties": {
            "batch_scoring_id": {"type": "string", "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"}
        }}$j$::jsonb,
    5, interval '5 minutes', interval '5 seconds', interval '5 minutes');
