-- pgmlops: retraining/retrain.sql — the retrain job's SQL: enqueueing it (after a fired trigger
-- or by hand) and recording its steps
--
-- The contract: docs/retraining.md, "The retrain job".
--
-- A retraining cycle starts with a 'trigger' row of ml.retraining_events (written by
-- ml_private.check_retraining_triggers after a drift report, or by ml.retrain); the 'retrain'
-- job (handler pgmlops.retraining._retrain:retrain, payload {trigger_event_id, project}) then
-- records each of its steps (curate, train, evaluate, shadow / canary / promote / approval,
-- reject, failed) with ml_private.record_retraining_step, every row carrying the trigger's id as
-- cycle_id and published on topic 'retraining' as 'retraining.<kind>'.

-- ml_private.enqueue_retrain(p_event uuid) returns bigint
-- Enqueues the 'retrain' job of the trigger row p_event (payload {trigger_event_id, project}),
-- records its id in the row's job_id and returns it. Runs for the acting tenant (the row's).
-- Raises P0002 no such trigger row. Callers: ml_private.check_retraining_triggers, ml.retrain.
create or replace function ml_private.enqueue_retrain(p_event uuid) returns bigint
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_event   ml.retraining_events;
    v_project text;
    v_job     bigint;
begin
    select * into v_event from ml.retraining_events e where e.id = p_event and e.kind = 'trigger';
    if v_event.id is null then
        raise exception 'retraining trigger % does not exist', coalesce(p_event::text, 'NULL') using errcode = 'P0002';
    end if;
    select p.name into v_project from ml.projects p where p.id = v_event.project_id;
    v_job := ml_private.enqueue_job('retrain', jsonb_build_object('trigger_event_id', v_event.id, 'project', v_project),
                                    0, null, null);
    update ml.retraining_events e set job_id = v_job where e.id = v_event.id;
    return v_job;
end
$$;

-- ml.retrain(project text, reason text default 'manual') returns bigint
-- A manual trigger: records a 'trigger' row (decision 'retrain', reason 'manual: <reason>',
-- evidence {manual: true}, the champion's version as the row's version, as_of now), publishes
-- retraining.triggered, enqueues the 'retrain' job and returns its id. No cooldown applies.
-- Raises 22023 reason longer than 1000 characters; P0002 unknown project (another tenant's
-- too); 55000 the project has no retraining policy, or a disabled one (named); 42501 viewers
-- and non-members. Callers: authenticated (owner, admin, ml_engineer), service_role.
create or replace function ml.retrain(project text, reason text default 'manual') returns bigint
language plpgsql volatile security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_tenant  uuid := ml_private.acting_tenant_id(true);
    v_project ml.projects;
    v_policy  ml.retraining_policies;
    v_id      uuid := gen_random_uuid();
    v_version uuid;
    v_reason  text := 'manual: ' || coalesce(nullif(btrim(reason), ''), 'manual');
begin
    if length(reason) > 1000 then
        raise exception 'reason: must be at most 1000 characters, got %', length(reason) using errcode = '22023';
    end if;
    v_project := ml_private.find_project(v_tenant, project);
    select * into v_policy from ml.retraining_policies x where x.project_id = v_project.id for update;
    if v_policy.id is null then
        raise exception 'project % has no retraining policy', v_project.name
            using errcode = '55000', hint = 'Set one with ml.set_retraining_policy(project, policy).';
    end if;
    if not v_policy.enabled then
        raise exception 'project %''s retraining policy is disabled', v_project.name using errcode = '55000';
    end if;
    select v.id into v_version from ml.model_aliases a join ml.model_versions v on v.id = a.model_version_id
        join ml.models m on m.id = v.model_id
    where m.project_id = v_project.id and a.alias = 'champion' limit 1;
    insert into ml.retraining_events (id, tenant_id, project_id, as_of, kind, cycle_id, evidence, model_version_id, decision,
                                      reason, created_by)
    values (v_id, v_tenant, v_project.id, clock_timestamp(), 'trigger', v_id, jsonb_build_object('manual', true),
            v_version, 'retrain', v_reason, ml_private.caller_user_id());
    perform ml_private.publish(v_tenant, 'retraining', 'retraining.triggered', jsonb_build_object(
        'event_id', v_id, 'project', v_project.name, 'project_id', v_project.id, 'model_version_id', v_version,
        'reason', v_reason, 'manual', true));
    return ml_private.enqueue_retrain(v_id);
end
$$;

-- ml_private.record_retraining_step(p_cycle uuid, p_kind text, p_evidence jsonb, p_data jsonb,
--     p_version uuid, p_test_results jsonb, p_decision text, p_reason text, p_job bigint) returns uuid
-- Records one step of the retraining cycle p_cycle (the id of its 'trigger' row) in
-- ml.retraining_events (same tenant, project and as_of as the trigger; cycle_id p_cycle) and
-- publishes 'retraining.<kind>' on topic 'retraining' with {event_id, cycle_id, project, kind,
-- decision, reason, model_version_id, job_id}. Returns the row's id.
-- Raises P0002 no such trigger row; 23514 an unknown kind (the table's check). Callers:
-- service_role (the retrain job, in its transaction).
create or replace function ml_private.record_retraining_step(
    p_cycle uuid, p_kind text, p_evidence jsonb, p_data jsonb, p_version uuid, p_test_results jsonb, p_decision text,
    p_reason text, p_job bigint) returns uuid
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_trigger ml.retraining_events;
    v_id      uuid := gen_random_uuid();
begin
    select * into v_trigger from ml.retraining_events e where e.id = p_cycle and e.kind = 'trigger';
    if v_trigger.id is null then
        raise exception 'retraining trigger % does not exist', coalesce(p_cycle::text, 'NULL') using errcode = 'P0002';
    end if;
    insert into ml.retraining_events (id, tenant_id, project_id, as_of, kind, cycle_id, evidence, data, model_version_id,
                                      test_results, decision, reason, job_id)
    values (v_id, v_trigger.tenant_id, v_trigger.project_id, v_trigger.as_of, p_kind, p_cycle, coalesce(p_evidence, '{}'),
            coalesce(p_data, '{}'), p_version, coalesce(p_test_results, '{}'), p_decision, p_reason, p_job);
    perform ml_private.publish(v_trigger.tenant_id, 'retraining', 'retraining.' || p_kind, jsonb_build_object(
        'event_id', v_id, 'cycle_id', p_cycle, 'project', (select p.name from ml.projects p where p.id = v_trigger.project_id),
        'kind', p_kind, 'decision', p_decision, 'reason', p_reason, 'model_version_id', p_version, 'job_id', p_job));
    return v_id;
end
$$;

------------------------------------------------------------------------------------------------
-- Grants
------------------------------------------------------------------------------------------------

grant execute on function ml.retrain(text, text) to authenticated, service_role;
grant execute on function
    ml_private.enqueue_retrain(uuid),
    ml_private.record_retraining_step(uuid, text, jsonb, jsonb, uuid, jsonb, text, text, bigint)
to service_role;
