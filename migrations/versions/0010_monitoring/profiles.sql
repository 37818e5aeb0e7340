-- pgmlops 0010: reference profiles (docs/monitoring.md)
--
-- What "normal" looks like, stored when a training set or model version is made: one row per
-- feature (and per model output: the prediction, the score; and the label), binned on edges
-- fixed from the reference alone (quantile edges plus an underflow and an overflow bin, binned by
-- ml_private.histogram_bin, the rule the feature statistics use). Current windows are binned on
-- these very edges.

create table ml.reference_profiles (
    id               uuid primary key default gen_random_uuid(),
    tenant_id        uuid not null references ml.tenants (id) on delete cascade,
    dataset_id       uuid references ml.datasets (id) on delete cascade,
    model_version_id uuid references ml.model_versions (id) on delete cascade,
    feature          text not null,
    -- numeric | categorical | binary | vector | text (what the drift tests treat it as)
    kind             text not null,
    dtype            text not null,
    -- what the row describes: an input, the model's prediction or score, or the label
    role             text not null default 'input',
    row_count        bigint not null,
    nulls            bigint not null,
    distinct_count   bigint,
    -- numeric: ascending edges (n + 1) and counts (n + 2: underflow, the n bins, overflow)
    edges            float8[],
    counts           bigint[],
    -- categorical / binary: {value: count}
    frequencies      jsonb,
    -- numeric: mean, std (ddof 1), min, max, quantiles {p01, ..., p99}; vector: centroid, dim
    summary          jsonb not null default '{}',
    created_at       timestamptz not null default now(),
    constraint reference_profiles_owner check (num_nonnulls(dataset_id, model_version_id) = 1),
    constraint reference_profiles_kind_valid check (kind in ('numeric', 'categorical', 'binary', 'vector', 'text')),
    constraint reference_profiles_role_valid check (role in ('input', 'prediction', 'score', 'label')),
    constraint reference_profiles_counts check (row_count >= 0 and nulls >= 0 and nulls <= row_count),
    constraint reference_profiles_bins check (edges is null or cardinality(counts) = cardinality(edges) + 1)
);
create unique index reference_profiles_dataset_idx on ml.reference_profiles (dataset_id, role, feature) where dataset_id is not null;
create unique index reference_profiles_version_idx on ml.reference_profiles (model_version_id, role, feature) where model_version_id is not null;
create index reference_profiles_tenant_idx on ml.reference_profiles (tenant_id);
comment on table ml.reference_profiles is 'Reference profiles of training sets and model versions: per feature bins on fixed edges, frequencies, quantiles, counts, nulls';
select ml_private.enable_tenant_rls('ml.reference_profiles');
