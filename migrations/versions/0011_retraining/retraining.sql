-- pgmlops 0011: retraining policies and the retraining event log (docs/retraining.md)

-- One policy per project, as ml.set_retraining_policy normalized it (every default filled);
-- the typed columns repeat what queries filter on.
create table ml.retraining_policies (
    id            uuid primary key default gen_random_uuid(),
    tenant_id     uuid not null references ml.tenants (id) on delete cascade,
    project_id    uuid not null unique references ml.projects (id) on delete cascade,
    policy        jsonb not null,
    enabled       boolean not null default true,
    -- the trigger types of policy.triggers, in order
    trigger_types text[] not null default '{}',
    cooldown      interval not null default interval '1 day',
    -- automatic | approval
    promotion     text not null default 'approval',
    -- shadow | canary | none
    online_mode   text not null default 'shadow',
    updated_by    uuid,
    updated_at    timestamptz not null default now(),
    created_at    timestamptz not null default now(),
    constraint retraining_policies_policy_object check (jsonb_typeof(policy) = 'object'),
    constraint retraining_policies_cooldown check (cooldown >= interval '0'),
    constraint retraining_policies_promotion_valid check (promotion in ('automatic', 'approval')),
    constraint retraining_policies_online_mode_valid check (online_mode in ('shadow', 'canary', 'none')),
    constraint retraining_policies_trigger_types_valid
        check (trigger_types <@ array['dataset_drift', 'feature_drift', 'metric_drop', 'new_labels', 'schedule'])
);
comment on table ml.retraining_policies is 'Retraining policies: one per project (triggers, cooldown, recipe, data, evaluation, online, rollback, promotion)';
select ml_private.enable_tenant_rls('ml.retraining_policies');

-- Every step of the retraining loop, oldest first by id. cycle_id ties the steps of one
-- retraining to the trigger row that started it (its own id for a trigger).
create table ml.retraining_events (
    id               uuid primary key default gen_random_uuid(),
    tenant_id        uuid not null references ml.tenants (id) on delete cascade,
    project_id       uuid not null references ml.projects (id) on delete cascade,
    at               timestamptz not null default clock_timestamp(),
    -- the time of the data the step is about (a trigger: its report's window_end); cooldowns
    -- compare these, so simulated traffic with past timestamps is judged on its own clock
    as_of            timestamptz not null default clock_timestamp(),
    kind             text not null,
    cycle_id         uuid,
    report_id        uuid references ml.drift_reports (id) on delete set null,
    -- what made the step happen (a trigger's evaluated triggers, a test's inputs)
    evidence         jsonb not null default '{}',
    -- the data used (windows, row counts, curation)
    data             jsonb not null default '{}',
    model_version_id uuid references ml.model_versions (id) on delete set null,
    test_results     jsonb not null default '{}',
    decision         text,
    reason           text,
    job_id           bigint,
    created_by       uuid,
    constraint retraining_events_kind_valid check (kind in (
        'trigger', 'skip', 'curate', 'train', 'tune', 'recall', 'evaluate', 'shadow', 'canary', 'approval',
        'promote', 'reject', 'rollback', 'update', 'discard', 'failed')),
    constraint retraining_events_decision_length check (decision is null or length(decision) between 1 and 100),
    constraint retraining_events_objects check (jsonb_typeof(evidence) = 'object' and jsonb_typeof(data) = 'object'
                                                and jsonb_typeof(test_results) = 'object')
);
create index retraining_events_project_idx on ml.retraining_events (tenant_id, project_id, at desc);
create index retraining_events_kind_idx on ml.retraining_events (project_id, kind, as_of desc);
create index retraining_events_report_idx on ml.retraining_events (report_id) where report_id is not null;
comment on table ml.retraining_events is 'Retraining events: every step of the retraining loop with its evidence, data, candidate, test results, decision and reason';
select ml_private.enable_tenant_rls('ml.retraining_events');
