-- pgmlops: retraining/learn.sql — continuous learning: its policy field, ml.learn and its schedule
--
-- The contract: docs/retraining.md, "Continuous learning".
--
-- A project whose retraining policy has continuous.enabled and whose champion's algorithm
-- learns incrementally (ml_private.incremental_algorithms) gets 'learn' jobs (handler
-- pgmlops.retraining._learn:learn, payload {trigger_event_id, project}): by hand (ml.learn) or
-- from the maintenance run once continuous.every has passed since the last learn cycle and
-- continuous.min_new_labels labelled predictions arrived since then (ml_private.run_due_learning).
-- A cycle is a 'trigger' row of ml.retraining_events with evidence {continuous: true}; the job
-- records 'update' (kept) or 'discard' (the holdout metric got worse) or 'failed'.

-- ml_private.incremental_algorithms() returns text[]
-- The algorithms whose fitted models pgmlops updates in place: the torch MLP (a few epochs of
-- its optimizer) and scikit-learn SGD models (partial_fit of a pipeline's final estimator).
create or replace function ml_private.incremental_algorithms() returns text[]
language sql immutable
set search_path = ''
as $$ select array['mlp', 'sgd_classifier', 'sgd_regressor'] $$;

-- ml_private.project_champion(p_project uuid) returns table (model_version_id uuid, algorithm text, created_at timestamptz)
-- The version aliased 'champion' in the project, with its run's algorithm; no row without one.
create or replace function ml_private.project_champion(p_project uuid)
returns table (model_version_id uuid, algorithm text, created_at timestamptz)
language sql stable security definer
set search_path = ''
as $$
    select v.id, r.algorithm, v.created_at
    from ml.model_aliases a join ml.model_versions v on v.id = a.model_version_id
        join ml.models m on m.id = v.model_id left join ml.runs r on r.id = v.run_id
    where m.project_id = p_project and a.alias = 'champion'
    limit 1
$$;

-- ml_private.normalize_continuous_learning(p_project ml.projects, p_value jsonb) returns jsonb
-- Checks policy.continuous {enabled, every, min_new_labels, metric, epochs} and fills its
-- defaults (enabled true, every '1 day', min_new_labels 100, metric accuracy | rmse, epochs 3).
-- Enabled, it needs a champion whose algorithm learns incrementally.
-- Raises 22023 naming the field (policy.continuous.<field>: rule, got value). Caller:
-- ml_private.normalize_retraining_policy.
create or replace function ml_private.normalize_continuous_learning(p_project ml.projects, p_value jsonb) returns jsonb
language plpgsql stable security definer
set search_path = ''
as $$
declare
    v_metrics text[] := case when p_project.task = 'regression' then array['rmse', 'mae', 'r2']
                             else array['accuracy', 'log_loss', 'roc_auc', 'f1'] end;
    v_enabled boolean;
    v_alg     text;
    v_found   boolean;
begin
    perform ml_private.retraining_assert('policy.continuous', jsonb_build_object(
        'type', 'object', 'additionalProperties', false, 'properties', jsonb_build_object(
            'enabled', '{"type": "boolean"}'::jsonb, 'every', '{}'::jsonb,
            'min_new_labels', '{"type": "integer", "minimum": 1, "maximum": 10000000}'::jsonb,
            'epochs', '{"type": "integer", "minimum": 1, "maximum": 100}'::jsonb,
            'metric', jsonb_build_object('enum', to_jsonb(v_metrics)))), p_value);
    if p_project.task not in ('classification', 'regression') then
        raise exception 'policy.continuous: only classification and regression projects learn continuously, got %', p_project.task
            using errcode = '22023';
    end if;
    v_enabled := coalesce((p_value ->> 'enabled')::boolean, true);
    if v_enabled then
        select true, c.algorithm into v_found, v_alg from ml_private.project_champion(p_project.id) c;
        if v_found is null then
            raise exception 'policy.continuous: the project has no champion (a version aliased champion) to update'
                using errcode = '22023';
        end if;
        if v_alg is null or not v_alg = any (ml_private.incremental_algorithms()) then
            raise exception 'policy.continuous: the champion''s algorithm % does not learn incrementally (one of %)',
                coalesce(v_alg, 'unknown'), array_to_string(ml_private.incremental_algorithms(), ', ')
                using errcode = '22023', hint = 'Disable it ({"enabled": false}) or train the champion with an incremental algorithm.';
        end if;
    end if;
    return jsonb_build_object(
        'enabled', v_enabled,
        'every', (ml_private.retraining_interval(coalesce(p_value -> 'every', '"1 day"'), 'policy.continuous.every', true))::text,
        'min_new_labels', coalesce(p_value -> 'min_new_labels', '100'),
        'epochs', coalesce(p_value -> 'epochs', '3'),
        'metric', coalesce(p_value -> 'metric', to_jsonb(case when p_project.task = 'regression' then 'rmse' else 'accuracy' end)));
end
$$;

-- ml_private.enqueue_learn(p_project ml.projects, p_reason text, p_user uuid) returns bigint
-- Records a continuous-learning 'trigger' row (evidence {continuous: true}, the champion's
-- version, as_of now), publishes retraining.triggered, enqueues the 'learn' job (payload
-- {trigger_event_id, project}), records its id in the row and returns it. Callers: ml.learn,
-- ml_private.run_due_learning.
create or replace function ml_private.enqueue_learn(p_project ml.projects, p_reason text, p_user uuid) returns bigint
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_id      uuid := gen_random_uuid();
    v_version uuid := (select c.model_version_id from ml_private.project_champion(p_project.id) c);
    v_job     bigint;
begin
    insert into ml.retraining_events (id, tenant_id, project_id, as_of, kind, cycle_id, evidence, model_version_id, decision,
                                      reason, created_by)
    values (v_id, p_project.tenant_id, p_project.id, clock_timestamp(), 'trigger', v_id, jsonb_build_object('continuous', true),
            v_version, 'learn', p_reason, p_user);
    perform ml_private.publish(p_project.tenant_id, 'retraining', 'retraining.triggered', jsonb_build_object(
        'event_id', v_id, 'project', p_project.name, 'project_id', p_project.id, 'model_version_id', v_version,
        'reason', p_reason, 'continuous', true));
    v_job := ml_private.enqueue_job('learn', jsonb_build_object('trigger_event_id', v_id, 'project', p_project.name),
                                    0, null, null);
    update ml.retraining_events e set job_id = v_job where e.id = v_id;
    return v_job;
end
$$;

-- ml.learn(project text) returns bigint
-- Enqueues a continuous-learning update of the project's champion now (no schedule, no
-- min_new_labels) and returns the 'learn' job's id.
-- One cycle per project at a time, whoever starts it (this function or the maintenance run).
-- Raises P0002 unknown project (another tenant's too); 55000 the project has no retraining
-- policy, a disabled one, one without continuous learning enabled (named), or a learn job of the
-- project is already queued or running (named); 42501 viewers and non-members.
-- Callers: authenticated (owner, admin, ml_engineer), service_role.
create or replace function ml.learn(project text) returns bigint
language plpgsql volatile security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_tenant  uuid := ml_private.acting_tenant_id(true);
    v_project ml.projects := ml_private.find_project(v_tenant, project);
    v_policy  ml.retraining_policies;
    v_job     bigint;
    v_status  text;
begin
    select * into v_policy from ml.retraining_policies x where x.project_id = v_project.id for update;
    if v_policy.id is null then
        raise exception 'project % has no retraining policy', v_project.name
            using errcode = '55000', hint = 'Set one with ml.set_retraining_policy(project, policy) with policy.continuous.';
    end if;
    if not v_policy.enabled or not coalesce((v_policy.policy #>> '{continuous,enabled}')::boolean, false) then
        raise exception 'project %: continuous learning is not enabled (policy.continuous.enabled)', v_project.name
            using errcode = '55000', hint = 'Set policy.continuous {"enabled": true} with ml.set_retraining_policy.';
    end if;
    -- One cycle per project at a time: the policy row's lock (taken above, and by
    -- ml_private.run_due_learning) orders this check against the maintenance run's.
    select j.id, j.status into v_job, v_status from ml.jobs j
    where j.kind = 'learn' and j.status in ('queued', 'running') and j.tenant_id = v_project.tenant_id
      and j.payload ->> 'project' = v_project.name
    order by j.id limit 1;
    if v_job is not null then
        raise exception 'project %: learn job % is already %, one continuous-learning cycle runs at a time', v_project.name, v_job, v_status
            using errcode = '55000', hint = format('Follow it with ml.job(%s); call ml.learn again once it ends.', v_job);
    end if;
    return ml_private.enqueue_learn(v_project, 'manual', ml_private.caller_user_id());
end
$$;

-- ml_private.run_due_learning() returns jsonb
-- The maintenance run's step: for every enabled policy with continuous.enabled, when
-- continuous.every has passed since its last learn cycle (or since the champion was registered),
-- no learn job of the project is queued or running (checked under the policy row's lock, skipped
-- while another transaction holds it), and at least continuous.min_new_labels
-- labelled predictions were logged since then, enqueues a learn job (ml_private.enqueue_learn,
-- reason 'schedule'), acting for the project's tenant (the caller's tenant setting restored
-- after). Returns {enqueued: n, jobs: [...]}. Caller: ml_private.run_maintenance.
create or replace function ml_private.run_due_learning() returns jsonb
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_p     record;
    v_since timestamptz;
    v_n     bigint;
    v_jobs  jsonb := '[]';
    v_tenant text := current_setting('pgmlops.tenant_id', true);
    v_claims text := current_setting('request.jwt.claims', true);
begin
    for v_p in
        select pr.*, x.policy from ml.retraining_policies x join ml.projects pr on pr.id = x.project_id
        where x.enabled and coalesce((x.policy #>> '{continuous,enabled}')::boolean, false)
    loop
        -- One cycle per project at a time: the policy row's lock orders this run against
        -- ml.learn and another maintenance run (a locked row is theirs to handle).
        perform 1 from ml.retraining_policies x where x.project_id = v_p.id for update skip locked;
        if not found then
            continue;
        end if;
        if exists (select 1 from ml.jobs j where j.kind = 'learn' and j.status in ('queued', 'running')
                   and j.payload ->> 'project' = v_p.name and j.tenant_id = v_p.tenant_id) then
            continue;
        end if;
        v_since := coalesce((select max(e.as_of) from ml.retraining_events e
                             where e.project_id = v_p.id and e.kind = 'trigger' and e.evidence ? 'continuous'),
                            (select c.created_at from ml_private.project_champion(v_p.id) c));
        if v_since is null or v_since + (v_p.policy #>> '{continuous,every}')::interval > now() then
            continue;
        end if;
        select count(*) into v_n from ml.predictions p
            join ml.feedback f on f.prediction_id = p.id and f.predicted_at = p.created_at
        where p.project_id = v_p.id and p.shadow_of is null and p.created_at > v_since;
        if v_n < (v_p.policy #>> '{continuous,min_new_labels}')::bigint then
            continue;
        end if;
        -- The job is the project's tenant's (ml_private.enqueue_job reads the acting tenant).
        perform set_config('pgmlops.tenant_id', v_p.tenant_id::text, true);
        perform set_config('request.jwt.claims', '', true);
        v_jobs := v_jobs || to_jsonb(ml_private.enqueue_learn(
            (select pr from ml.projects pr where pr.id = v_p.id), 'schedule: ' || v_n || ' new labels', null));
        perform set_config('pgmlops.tenant_id', coalesce(v_tenant, ''), true);
        perform set_config('request.jwt.claims', coalesce(v_claims, ''), true);
    end loop;
    return jsonb_build_object('enqueued', jsonb_array_length(v_jobs), 'jobs', v_jobs);
end
$$;

------------------------------------------------------------------------------------------------
-- Grants
------------------------------------------------------------------------------------------------

revoke all on function ml_private.incremental_algorithms(), ml_private.project_champion(uuid),
    ml_private.normalize_continuous_learning(ml.projects, jsonb), ml_private.enqueue_learn(ml.projects, text, uuid),
    ml_private.run_due_learning() from public;
grant execute on function ml.learn(text) to authenticated, service_role;
grant execute on function ml_private.run_due_learning() to service_role;
