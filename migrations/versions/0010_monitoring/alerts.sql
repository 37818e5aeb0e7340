-- pgmlops 0010: alerts and monitoring schedules (docs/monitoring.md)

-- One open alert per fingerprint (project, kind, feature): a repeat raises count and last_seen.
create table ml.alerts (
    id              uuid primary key default gen_random_uuid(),
    tenant_id       uuid not null references ml.tenants (id) on delete cascade,
    project_id      uuid not null references ml.projects (id) on delete cascade,
    fingerprint     text not null,
    -- feature_drift | dataset_drift | prediction_drift | label_drift | performance | estimated_performance | multivariate_drift
    kind            text not null,
    feature         text,
    severity        text not null,
    status          text not null default 'open',
    count           int not null default 1,
    first_seen      timestamptz not null default now(),
    last_seen       timestamptz not null default now(),
    report_id       uuid references ml.drift_reports (id) on delete set null,
    message         text not null,
    evidence        jsonb not null default '{}',
    acknowledged_by uuid,
    acknowledged_at timestamptz,
    resolved_by     uuid,
    resolved_at     timestamptz,
    -- the lifecycle's comments: [{"action", "by", "at", "comment"}]
    notes           jsonb not null default '[]',
    constraint alerts_severity_valid check (severity in ('info', 'warning', 'critical')),
    constraint alerts_status_valid check (status in ('open', 'acknowledged', 'resolved')),
    constraint alerts_count_positive check (count >= 1),
    constraint alerts_resolved check ((status = 'resolved') = (resolved_at is not null))
);
create unique index alerts_open_fingerprint_idx on ml.alerts (tenant_id, fingerprint) where status <> 'resolved';
create index alerts_project_idx on ml.alerts (tenant_id, project_id, last_seen desc);
comment on table ml.alerts is 'Monitoring alerts: one open alert per fingerprint (repeats counted), open -> acknowledged -> resolved';
select ml_private.enable_tenant_rls('ml.alerts');

create table ml.monitoring_schedules (
    id          uuid primary key default gen_random_uuid(),
    tenant_id   uuid not null references ml.tenants (id) on delete cascade,
    project_id  uuid not null unique references ml.projects (id) on delete cascade,
    cron        text not null,
    "window"    interval not null,
    options     jsonb not null default '{}',
    -- pg_cron (a cron.job runs it) or worker (the worker's scheduler runs it)
    backend     text not null,
    cron_job_id bigint,
    enabled     boolean not null default true,
    last_run_at timestamptz,
    next_run_at timestamptz,
    last_report uuid references ml.drift_reports (id) on delete set null,
    -- the last run's failure (NULL when it made its report)
    last_error  text,
    created_by  uuid,
    created_at  timestamptz not null default now(),
    constraint monitoring_schedules_backend_valid check (backend in ('pg_cron', 'worker')),
    constraint monitoring_schedules_window_positive check ("window" > interval '0')
);
create index monitoring_schedules_due_idx on ml.monitoring_schedules (next_run_at) where enabled;
comment on table ml.monitoring_schedules is 'Monitoring schedules: a drift report per project on a cron schedule (pg_cron or the worker''s scheduler)';
select ml_private.enable_tenant_rls('ml.monitoring_schedules');
