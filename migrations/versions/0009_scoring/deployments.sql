-- pgmlops 0009: deployments (docs/deployments.md)
--
-- A deployment says which model versions of a project take its traffic and how. Exactly one
-- deployment per project is active; deploying again supersedes it, ml.rollback reactivates the
-- previous one, a canary whose abort rule fires is aborted (back to the previous one). Rows are
-- never deleted: they are the project's serving history (ml.audit_log has who and when).

create table ml.deployments (
    id          uuid primary key default gen_random_uuid(),
    tenant_id   uuid not null references ml.tenants (id) on delete cascade,
    project_id  uuid not null references ml.projects (id) on delete cascade,
    strategy    text not null,
    -- canary: {"canary_arm": a, "steps": [{"weight": w, "after": "<interval>"}], "abort": {...}};
    -- other strategies {}. A canary's weights are computed from created_at and the steps when read.
    schedule    jsonb not null default '{}',
    status      text not null default 'active',
    -- the deployment that was active when this one was made (ml.rollback goes back to it)
    previous_id uuid references ml.deployments (id) on delete set null,
    reason      text,
    created_by  uuid,
    created_at  timestamptz not null default now(),
    -- when it last became active: created_at, or the rollback or abort that reactivated it
    activated_at timestamptz not null default now(),
    -- how it stopped serving (status superseded, rolled_back, aborted): when, by whom (NULL:
    -- a service caller or the maintenance run), why; cleared when it is reactivated
    ended_at    timestamptz,
    ended_by    uuid,
    end_reason  text,
    -- canary: the last step announced as event deployment.step (1: the first, at creation)
    canary_step int,
    constraint deployments_strategy_valid check (strategy in ('single', 'ab', 'canary', 'shadow', 'blue_green')),
    constraint deployments_status_valid check (status in ('active', 'superseded', 'rolled_back', 'aborted')),
    constraint deployments_ended check ((status = 'active') = (ended_at is null))
);
create unique index deployments_one_active_idx on ml.deployments (project_id) where status = 'active';
create index deployments_tenant_idx on ml.deployments (tenant_id, project_id, created_at desc);
comment on table ml.deployments is 'Deployments: which model versions serve a project and how (one active per project; the rest is history)';
select ml_private.enable_tenant_rls('ml.deployments');

-- The arms of a deployment. role live: takes a share (weight) of the traffic; role shadow: scored
-- and logged on every call, never returned. A canary's weights move along its schedule.
create table ml.deployment_arms (
    tenant_id        uuid not null references ml.tenants (id) on delete cascade,
    deployment_id    uuid not null references ml.deployments (id) on delete cascade,
    arm              text not null,
    position         int not null,
    model_version_id uuid not null references ml.model_versions (id),
    -- the alias the arm was deployed by (it names the version the alias pointed at then)
    alias            text,
    role             text not null default 'live',
    weight           float8 not null,
    primary key (deployment_id, arm),
    unique (deployment_id, position),
    constraint deployment_arms_arm_format check (arm ~ '^[a-z][a-z0-9_-]{0,62}$'),
    constraint deployment_arms_role_valid check (role in ('live', 'shadow')),
    constraint deployment_arms_weight_valid check (weight >= 0 and weight <= 1 and (role = 'live' or weight = 0))
);
create index deployment_arms_tenant_idx on ml.deployment_arms (tenant_id, deployment_id);
create index deployment_arms_version_idx on ml.deployment_arms (model_version_id);
comment on table ml.deployment_arms is 'Arms of deployments: a model version, live (with a traffic weight) or shadow';
select ml_private.enable_tenant_rls('ml.deployment_arms');
