-- pgmlops 0010: drift reports and their results (docs/monitoring.md)

create table ml.drift_reports (
    id                 uuid primary key default gen_random_uuid(),
    tenant_id          uuid not null references ml.tenants (id) on delete cascade,
    project_id         uuid not null references ml.projects (id) on delete cascade,
    model_version_id   uuid references ml.model_versions (id) on delete set null,
    window_start       timestamptz not null,
    window_end         timestamptz not null,
    -- exact (sorted samples, the parity mode) or fast (binned counts on the reference edges)
    mode               text not null,
    -- ml.predictions, or the table / query the options named
    source             text not null,
    options            jsonb not null default '{}',
    row_count          bigint not null default 0,
    reference_count    bigint not null default 0,
    drifted_features   int not null default 0,
    features_tested    int not null default 0,
    drift_share        float8,
    dataset_drift      boolean,
    -- prediction drift, label drift, realized and estimated performance, multivariate drift,
    -- the regime match: {section: {...}}
    summary            jsonb not null default '{}',
    -- complete, or pending while a worker computes the multivariate part
    status             text not null default 'complete',
    job_id             bigint,
    created_by         uuid,
    created_at         timestamptz not null default now(),
    finished_at        timestamptz,
    constraint drift_reports_window check (window_start < window_end),
    constraint drift_reports_mode_valid check (mode in ('exact', 'fast')),
    constraint drift_reports_status_valid check (status in ('pending', 'complete', 'failed'))
);
create index drift_reports_project_idx on ml.drift_reports (tenant_id, project_id, window_end desc);
comment on table ml.drift_reports is 'Drift reports: a window of a project''s predictions (or a source) against its reference, the verdict and its sections';
select ml_private.enable_tenant_rls('ml.drift_reports');

create table ml.drift_results (
    tenant_id   uuid not null references ml.tenants (id) on delete cascade,
    report_id   uuid not null references ml.drift_reports (id) on delete cascade,
    feature     text not null,
    role        text not null default 'input',
    kind        text not null,
    -- ks | wasserstein | wasserstein_normed | chi2 | z | psi | jensen_shannon | hellinger |
    -- centroid | mmd | domain_classifier
    test        text not null,
    statistic   float8,
    p_value     float8,
    threshold   float8 not null,
    drifted     boolean not null,
    row_count   bigint not null default 0,
    nulls       bigint not null default 0,
    details     jsonb not null default '{}',
    primary key (report_id, role, feature, test),
    constraint drift_results_role_valid check (role in ('input', 'prediction', 'score', 'label'))
);
create index drift_results_tenant_idx on ml.drift_results (tenant_id, report_id);
comment on table ml.drift_results is 'Per-feature drift tests of a report: test, statistic, p-value, threshold, verdict';
select ml_private.enable_tenant_rls('ml.drift_results');

-- Performance per time bucket: realized (predictions joined to feedback) or estimated (CBPE),
-- with the alert band from the reference chunks (mean +- 3 std) or set by hand. Written by
-- ml_private.report_performance (sql/monitoring/performance.sql, docs/performance-monitoring.md);
-- value NULL: undefined on the bucket's rows (no rows, ROC AUC of one class).
create table ml.performance_results (
    tenant_id    uuid not null references ml.tenants (id) on delete cascade,
    report_id    uuid not null references ml.drift_reports (id) on delete cascade,
    bucket_start timestamptz not null,
    bucket_end   timestamptz not null,
    metric       text not null,
    estimated    boolean not null default false,
    value        float8,
    sample_count bigint not null,
    lower_bound  float8,
    upper_bound  float8,
    alert        boolean not null default false,
    primary key (report_id, metric, estimated, bucket_start),
    constraint performance_results_metric_valid
        check (metric in ('accuracy', 'precision', 'recall', 'f1', 'roc_auc', 'mae', 'rmse')),
    -- CBPE estimates binary classification metrics only
    constraint performance_results_estimated_metric check (not estimated or metric not in ('mae', 'rmse')),
    constraint performance_results_bucket check (bucket_start < bucket_end),
    constraint performance_results_sample_count check (sample_count >= 0),
    -- an empty bucket has no value; a value outside the band is what alerts
    constraint performance_results_empty check (sample_count > 0 or value is null),
    constraint performance_results_bounds check (lower_bound is null or upper_bound is null or lower_bound <= upper_bound)
);
create index performance_results_tenant_idx on ml.performance_results (tenant_id, report_id);
comment on table ml.performance_results is 'Realized and estimated (CBPE) performance of a report per time bucket, with alert bounds';
select ml_private.enable_tenant_rls('ml.performance_results');
