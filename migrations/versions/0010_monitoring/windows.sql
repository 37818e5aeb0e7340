-- pgmlops 0010: fast-mode counts and window embeddings (docs/monitoring.md)

-- Fast mode: per project, model version, feature and hour, the counts of logged predictions'
-- values in the bins of the version's reference profile (bin 0 underflow, n + 1 overflow, NULL
-- for missing; categories by value). Rolled up from ml.predictions after a watermark, so a
-- report over a million rows reads thousands of rows and ml.predict pays nothing.
create table ml.window_counts (
    tenant_id        uuid not null references ml.tenants (id) on delete cascade,
    project_id       uuid not null references ml.projects (id) on delete cascade,
    model_version_id uuid not null references ml.model_versions (id) on delete cascade,
    feature          text not null,
    role             text not null default 'input',
    bucket           timestamptz not null,
    bin              int,
    category         text,
    count            bigint not null,
    -- numeric sums for the window's mean and variance (a bin alone cannot give them)
    total            float8,
    total_squares    float8
);
create unique index window_counts_key_idx on ml.window_counts
    (tenant_id, project_id, model_version_id, role, feature, bucket, bin, category) nulls not distinct;
comment on table ml.window_counts is 'Fast-mode drift counts: predictions per hour binned on the reference edges (or by category)';
select ml_private.enable_tenant_rls('ml.window_counts');

-- How far each project's predictions are rolled up into ml.window_counts.
create table ml.window_watermarks (
    tenant_id    uuid not null references ml.tenants (id) on delete cascade,
    project_id   uuid primary key references ml.projects (id) on delete cascade,
    rolled_up_to timestamptz not null,
    -- per model version, a digest of the profiles its counts were binned on: when a version's
    -- profile changes (its outputs are profiled once it is compiled), its counts are redone
    profiles     jsonb not null default '{}',
    updated_at   timestamptz not null default now()
);
comment on table ml.window_watermarks is 'Fast-mode rollup watermarks: predictions logged before rolled_up_to are counted';
select ml_private.enable_tenant_rls('ml.window_watermarks');

-- Each report's window as a fixed-length embedding (its binned distributions, normalized): the
-- closest past windows tell whether a distribution was seen before. A pgvector column with an
-- HNSW index when pgvector is installed, float8[] (searched exhaustively) otherwise. The window,
-- its version, its row count and its mean number of occupied bins per feature are kept beside the
-- embedding: the search filters on them and the match threshold depends on them (the sampling
-- noise of two windows' distance shrinks with their sizes).
do $$
begin
    if exists (select 1 from pg_extension where extname = 'vector') then
        execute format('create table ml.window_embeddings (
            tenant_id  uuid not null references ml.tenants (id) on delete cascade,
            project_id uuid not null references ml.projects (id) on delete cascade,
            report_id  uuid primary key references ml.drift_reports (id) on delete cascade,
            model_version_id uuid references ml.model_versions (id) on delete set null,
            window_start timestamptz not null,
            window_end   timestamptz not null,
            row_count  bigint not null,
            bins       float8 not null,
            embedding  %s.vector(256) not null,
            created_at timestamptz not null default now())',
            (select n.nspname from pg_extension e join pg_namespace n on n.oid = e.extnamespace where e.extname = 'vector'));
        execute format('create index window_embeddings_hnsw_idx on ml.window_embeddings using hnsw (embedding %s.vector_cosine_ops)',
            (select n.nspname from pg_extension e join pg_namespace n on n.oid = e.extnamespace where e.extname = 'vector'));
    else
        create table ml.window_embeddings (
            tenant_id  uuid not null references ml.tenants (id) on delete cascade,
            project_id uuid not null references ml.projects (id) on delete cascade,
            report_id  uuid primary key references ml.drift_reports (id) on delete cascade,
            model_version_id uuid references ml.model_versions (id) on delete set null,
            window_start timestamptz not null,
            window_end   timestamptz not null,
            row_count  bigint not null,
            bins       float8 not null,
            embedding  float8[] not null,
            created_at timestamptz not null default now(),
            constraint window_embeddings_dim check (cardinality(embedding) = 256));
    end if;
end
$$;
create index window_embeddings_project_idx on ml.window_embeddings (tenant_id, project_id, window_end);
comment on table ml.window_embeddings is 'Monitoring windows as 256-dimension embeddings of their binned distributions (ml.similar_windows)';
select ml_private.enable_tenant_rls('ml.window_embeddings');
