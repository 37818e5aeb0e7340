-- pgmlops 0009: batch scorings (docs/serving.md)
--
-- One row per ml.score call: what is scored (source) into where (target) by which model
-- version, on which path (sql: ml.predict_batch in one statement; worker: a job that COPYs rows
-- out, predicts in Python and COPYs them in, chunk by chunk), and how far it got. A chunk's rows
-- and rows_done are committed together, so a worker that dies mid-run resumes after the last
-- committed chunk and writes no row twice.

create table ml.batch_scorings (
    id               uuid primary key default gen_random_uuid(),
    tenant_id        uuid not null references ml.tenants (id) on delete cascade,
    project_id       uuid not null references ml.projects (id) on delete cascade,
    deployment_id    uuid references ml.deployments (id) on delete set null,
    model_version_id uuid not null references ml.model_versions (id) on delete cascade,
    source           text not null,
    target           text not null,
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
