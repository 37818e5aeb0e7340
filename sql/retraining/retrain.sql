-- pgmlops: retraining/retrain.sql — the retrain job: enqueueing it and recording its steps
--
-- The job is enqueued after a fired trigger or by hand (ml.retrain); the shadow that a cycle
-- deploys is judged on live traffic by ml_private.evaluate_shadow.
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
-- ml.record_retraining_step (which checks the caller) and ml_private.evaluate_shadow.
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

-- ml.record_retraining_step(cycle uuid, kind text, evidence jsonb, data jsonb, model_version uuid,
--     test_results jsonb, decision text, reason text, job bigint) returns uuid
-- ml_private.record_retraining_step for the retrain job: the cycle must be a trigger row of the
-- caller's tenant. Raises 42501 unless a service caller acting for a tenant; P0002 no such
-- trigger row of that tenant; 23514 an unknown kind. Callers: service_role (the retrain job).
create or replace function ml.record_retraining_step(
    cycle uuid, kind text, evidence jsonb, data jsonb, model_version uuid, test_results jsonb, decision text,
    reason text, job bigint) returns uuid
language plpgsql volatile security definer
set search_path = ''
as $$
#variable_conflict use_variable
begin
    perform ml_private.assert_service('ml.record_retraining_step');
    if not exists (select 1 from ml.retraining_events e
                   where e.id = cycle and e.kind = 'trigger' and e.tenant_id = ml_private.acting_tenant_id(true)) then
        raise exception 'retraining trigger % does not exist', coalesce(cycle::text, 'NULL') using errcode = 'P0002';
    end if;
    return ml_private.record_retraining_step(cycle, kind, evidence, data, model_version, test_results, decision, reason, job);
end
$$;

-- ml_private.standing_approval(p_project ml.projects, p_version uuid, p_cycle uuid, p_why text) returns jsonb
-- The standing approval an automatic promotion policy gives: a retraining policy with promotion
-- automatic is set by a member who may approve versions (ml.set_retraining_policy requires it),
-- and stands as that member's approval of every version one of its cycles proves better. For
-- p_version (a version of p_project's models), unless a reviewer already approved or rejected it,
-- records an approval in ml.model_approvals as the member who set the policy (comment: the
-- policy, the cycle, p_why) and audits approval.recorded ({standing: true, cycle}).
-- Returns {approved, by (uuid), standing (whether this call recorded it), reason}: approved false
-- (nothing written) when the policy's promotion is approval (a person promotes), the policy was set by a service caller (policies set
-- before revision 0012), its setter is no longer an owner, admin or ml_engineer of the tenant, or a
-- reviewer rejected the version. Raises nothing of its own. Callers: ml.apply_standing_approval,
-- ml_private.evaluate_shadow.
create or replace function ml_private.standing_approval(p_project ml.projects, p_version uuid, p_cycle uuid, p_why text)
returns jsonb
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_policy ml.retraining_policies;
    v_label  text := (select format('%s@%s', m.name, v.version) from ml.model_versions v
                      join ml.models m on m.id = v.model_id where v.id = p_version);
    v_role   text;
    v_by     uuid;
begin
    select * into v_policy from ml.retraining_policies x where x.project_id = p_project.id;
    if v_policy.id is null or v_policy.promotion <> 'automatic' then
        return jsonb_build_object('approved', false, 'standing', false, 'reason',
            'the policy''s promotion is approval: a person promotes with ml.promote once reviewers approve');
    end if;
    select x.user_id into v_by from ml.model_approvals x
    where x.model_version_id = p_version and x.decision = 'rejected' order by x.created_at desc limit 1;
    if found then
        return jsonb_build_object('approved', false, 'by', v_by, 'standing', false,
                                  'reason', format('%s was rejected by reviewer %s', v_label, v_by));
    end if;
    select x.user_id into v_by from ml.model_approvals x
    where x.model_version_id = p_version and x.decision = 'approved' order by x.created_at limit 1;
    if found then
        return jsonb_build_object('approved', true, 'by', v_by, 'standing', false,
                                  'reason', format('%s approved by reviewer %s', v_label, v_by));
    end if;
    if v_policy.updated_by is null then
        return jsonb_build_object('approved', false, 'standing', false, 'reason',
            'the automatic promotion policy was set by a service caller, so no member stands behind it: '
            || 'set it again as a signed-in owner, admin or ml_engineer, or approve with ml.approve');
    end if;
    select m.role into v_role from ml.tenant_members m where m.tenant_id = p_project.tenant_id and m.user_id = v_policy.updated_by;
    if v_role is null or v_role not in ('owner', 'admin', 'ml_engineer') then
        return jsonb_build_object('approved', false, 'by', v_policy.updated_by, 'standing', false, 'reason', format(
            'member %s who set the automatic promotion policy is no longer an owner, admin or ml_engineer of the tenant',
            v_policy.updated_by));
    end if;
    insert into ml.model_approvals (tenant_id, model_version_id, user_id, decision, comment)
    values (p_project.tenant_id, p_version, v_policy.updated_by, 'approved',
            left(format('standing approval: retraining policy of project %s (promotion automatic, set %s); cycle %s: %s',
                        p_project.name, v_policy.updated_at, p_cycle, p_why), 10000))
    on conflict on constraint model_approvals_model_version_id_user_id_key do nothing;
    perform ml_private.audit(p_project.tenant_id, 'approval.recorded', 'model_version', p_version, null,
        jsonb_build_object('version', v_label, 'decision', 'approved', 'standing', true, 'cycle', p_cycle,
                           'policy_id', v_policy.id, 'user_id', v_policy.updated_by));
    return jsonb_build_object('approved', true, 'by', v_policy.updated_by, 'standing', true, 'reason', format(
        '%s approved by the standing approval of %s, who set the automatic promotion policy', v_label, v_policy.updated_by));
end
$$;

-- ml.apply_standing_approval(cycle uuid, model_version_id uuid) returns jsonb
-- A worker's request, before it promotes the version a retraining or continuous-learning cycle
-- proved better: the project's automatic promotion policy approves it as the member who set the
-- policy (ml_private.standing_approval). Returns {approved, by, standing, reason}.
-- Raises P0002 unknown cycle (another tenant's too) or a version not of the cycle's project;
-- 42501 callers other than service ones (people approve with ml.approve).
-- Callers: service_role (the retrain and learn jobs).
create or replace function ml.apply_standing_approval(cycle uuid, model_version_id uuid) returns jsonb
language plpgsql volatile security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_tenant  uuid;
    v_project ml.projects;
    v_why     text;
begin
    perform ml_private.assert_service('ml.apply_standing_approval');
    v_tenant := ml_private.acting_tenant_id(true);
    select p.* into v_project from ml.retraining_events e join ml.projects p on p.id = e.project_id
    where e.tenant_id = v_tenant and e.cycle_id = cycle order by e.at limit 1;
    if v_project.id is null then
        raise exception 'cycle: retraining cycle % does not exist', coalesce(cycle::text, 'NULL') using errcode = 'P0002';
    end if;
    if not exists (select 1 from ml.model_versions v join ml.models m on m.id = v.model_id
                   where v.id = model_version_id and m.project_id = v_project.id) then
        raise exception 'model_version_id: % is not a version of project %''s models', coalesce(model_version_id::text, 'NULL'),
            v_project.name using errcode = 'P0002';
    end if;
    select e.reason into v_why from ml.retraining_events e
    where e.cycle_id = cycle and e.kind in ('evaluate', 'update') order by e.at desc limit 1;
    return ml_private.standing_approval(v_project, model_version_id, cycle, coalesce(v_why, 'proved better'));
end
$$;

-- ml_private.evaluate_shadow(p_project text) returns jsonb
-- The online step after a retrain job deployed a challenger in shadow: compares the live and the
-- shadow arm of the project's active deployment on the live predictions that have feedback
-- (classification: each arm right or wrong on the same rows) with McNemar's test (normal
-- approximation with continuity correction) once policy.online.min_samples pairs are labelled:
--   * the challenger right significantly more often (p < online.significance): with promotion
--     'automatic', the policy's standing approval (ml_private.standing_approval: a reviewer's
--     approval, or the one of the member who set the policy) then ml.promote + ml.deploy(single)
--     of the challenger ('promote' row naming the approval); otherwise (promotion approval, no
--     standing approval, a reviewer's rejection, a refused promotion) an 'approval' row saying why;
--   * the champion right significantly more often, or online.max_duration passed since the
--     shadow step: the shadow is ended (ml.deploy single of the champion), a 'reject' row;
--   * else nothing is written: {status: 'waiting', pairs, ...}.
-- A canary of a retraining cycle (a 'canary' row naming the active deployment) is judged the same
-- way on unpaired rows: each live arm's labelled predictions, the two accuracies compared with a
-- two-proportion z test (pooled variance) once each arm has online.min_samples; the result then
-- has {mode: 'canary', pairs (the smaller arm's count), live_n, shadow_n (the challenger's),
-- live_correct, shadow_correct, z, p_value}.
-- Returns {status, mode, pairs, live_correct, shadow_correct, b, c, p_value, ...}. Acts for the
-- acting tenant (a service caller). Raises P0002 unknown project. A project without a shadow or
-- canary of a retraining cycle returns {status: 'none'}. Callers: service_role (maintenance,
-- ml_private.check_retraining_online, tests).
create or replace function ml_private.evaluate_shadow(p_project text) returns jsonb
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_tenant  uuid := ml_private.acting_tenant_id(true);
    v_project ml.projects;
    v_policy  jsonb;
    v_shadow  ml.retraining_events;
    v_dep     uuid;
    v_live    uuid;
    v_chal    uuid;
    v_model   text;
    v_live_v  int;
    v_chal_v  int;
    v_n       bigint;
    v_live_ok bigint;
    v_chal_ok bigint;
    v_b       bigint;
    v_c       bigint;
    v_p       float8;
    v_min     int;
    v_alpha   float8;
    v_out     jsonb;
    v_reason  text;
    v_kind    text;
    v_canary  boolean;
    v_live_n  bigint;
    v_chal_n  bigint;
    v_z       float8;
    v_pool    float8;
    v_approval jsonb;
begin
    v_project := ml_private.find_project(v_tenant, p_project);
    select x.policy into v_policy from ml.retraining_policies x where x.project_id = v_project.id;
    select d.id into v_dep from ml.deployments d where d.project_id = v_project.id and d.status = 'active';
    select * into v_shadow from ml.retraining_events e
    where e.project_id = v_project.id and e.kind in ('shadow', 'canary') and e.evidence ->> 'deployment_id' = v_dep::text
      and not exists (select 1 from ml.retraining_events l where l.cycle_id = e.cycle_id and l.at > e.at
                                                                and l.kind in ('promote', 'reject', 'approval', 'rollback'))
    order by e.at desc limit 1;
    if v_policy is null or v_dep is null or v_shadow.id is null then
        return jsonb_build_object('status', 'none', 'reason', 'no shadow or canary of a retraining cycle is deployed');
    end if;
    v_chal := v_shadow.model_version_id;
    v_canary := v_shadow.kind = 'canary';
    select a.model_version_id into v_live from ml.deployment_arms a
    where a.deployment_id = v_dep and a.role = 'live' and a.model_version_id is distinct from v_chal limit 1;
    select m.name, v.version into v_model, v_chal_v from ml.model_versions v join ml.models m on m.id = v.model_id where v.id = v_chal;
    select v.version into v_live_v from ml.model_versions v where v.id = v_live;
    select count(*), count(*) filter (where p.prediction = f.label), count(*) filter (where s.prediction = f.label),
           count(*) filter (where p.prediction = f.label and s.prediction is distinct from f.label),
           count(*) filter (where s.prediction = f.label and p.prediction is distinct from f.label)
    into v_n, v_live_ok, v_chal_ok, v_b, v_c
    from ml.predictions p
    join ml.feedback f on f.prediction_id = p.id and f.predicted_at = p.created_at
    join ml.predictions s on s.shadow_of = p.id and s.model_version_id = v_chal and s.created_at = p.created_at
    where p.tenant_id = v_tenant and p.project_id = v_project.id and p.deployment_id = v_dep and p.shadow_of is null
      and not v_canary;
    v_min := coalesce((v_policy #>> '{online,min_samples}')::int, 500);
    v_alpha := coalesce((v_policy #>> '{online,significance}')::float8, 0.05);
    if v_canary then
        -- Unpaired: each arm's own labelled predictions; b and c stand for the arms' wrong and
        -- right counts' comparison (c > b: the challenger right more often).
        select count(*) filter (where p.model_version_id = v_live), count(*) filter (where p.model_version_id = v_chal),
               count(*) filter (where p.model_version_id = v_live and p.prediction = f.label),
               count(*) filter (where p.model_version_id = v_chal and p.prediction = f.label)
        into v_live_n, v_chal_n, v_live_ok, v_chal_ok
        from ml.predictions p
        join ml.feedback f on f.prediction_id = p.id and f.predicted_at = p.created_at
        where p.tenant_id = v_tenant and p.project_id = v_project.id and p.deployment_id = v_dep and p.shadow_of is null;
        v_n := least(v_live_n, v_chal_n);
        if v_live_n > 0 and v_chal_n > 0 then
            v_pool := (v_live_ok + v_chal_ok)::float8 / (v_live_n + v_chal_n);
            v_z := case when v_pool in (0, 1) then 0
                        else (v_chal_ok::float8 / v_chal_n - v_live_ok::float8 / v_live_n)
                             / sqrt(v_pool * (1 - v_pool) * (1.0 / v_live_n + 1.0 / v_chal_n)) end;
        else
            v_z := 0;
        end if;
        v_p := 2 * ml_private.normal_sf(abs(v_z));
        v_b := case when v_z < 0 then 1 else 0 end;
        v_c := case when v_z > 0 then 1 else 0 end;
        v_out := jsonb_build_object('mode', 'canary', 'pairs', v_n, 'min_samples', v_min, 'live_n', v_live_n, 'shadow_n', v_chal_n,
                                    'live_correct', v_live_ok, 'shadow_correct', v_chal_ok, 'z', v_z, 'p_value', v_p,
                                    'significance', v_alpha, 'deployment_id', v_dep,
                                    'champion_version', v_live_v, 'challenger_version', v_chal_v);
        v_reason := format('canary comparison: %s@%s right on %s of %s labelled predictions, %s@%s on %s of %s; two-proportion z=%s, p=%s',
                           v_model, v_chal_v, v_chal_ok, v_chal_n, v_model, v_live_v, v_live_ok, v_live_n,
                           round(v_z::numeric, 3), round(v_p::numeric, 4));
    else
        v_p := case when v_b + v_c = 0 then 1.0
                    else 2 * ml_private.normal_sf(greatest(abs(v_c - v_b) - 1, 0) / sqrt((v_b + v_c)::float8)) end;
        v_out := jsonb_build_object('mode', 'shadow', 'pairs', v_n, 'min_samples', v_min, 'live_correct', v_live_ok,
                                    'shadow_correct', v_chal_ok, 'b', v_b, 'c', v_c, 'p_value', v_p, 'significance', v_alpha,
                                    'deployment_id', v_dep, 'champion_version', v_live_v, 'challenger_version', v_chal_v);
        v_reason := format('shadow comparison on %s labelled predictions: %s@%s right on %s, %s@%s (live) on %s; McNemar b=%s c=%s, p=%s',
                           v_n, v_model, v_chal_v, v_chal_ok, v_model, v_live_v, v_live_ok, v_b, v_c, round(v_p::numeric, 4));
    end if;
    if v_n >= v_min and v_p < v_alpha and v_c > v_b then
        v_approval := ml_private.standing_approval(v_project, v_chal, v_shadow.cycle_id, v_reason);
        v_out := v_out || jsonb_build_object('approval', v_approval);
        if not (v_approval ->> 'approved')::boolean then
            v_kind := 'approval';
            v_reason := format('%s@%s is better live; promotion waits for approval (%s): %s', v_model, v_chal_v,
                               v_approval ->> 'reason', v_reason);
        else
            begin
                perform ml.promote(v_model, v_chal_v, 'champion');
                perform ml.deploy(p_project, 'single', jsonb_build_array(jsonb_build_object('arm', 'a', 'model', v_model,
                                  'version', v_chal_v)), jsonb_build_object('reason', format('retraining: the %s proved better',
                                  v_shadow.kind)));
                v_kind := 'promote';
                v_reason := format('%s@%s promoted to champion and deployed (%s): %s', v_model, v_chal_v,
                                   v_approval ->> 'reason', v_reason);
            exception when others then
                v_kind := 'approval';
                v_reason := format('%s@%s is better live but its promotion was refused: %s; %s', v_model, v_chal_v, sqlerrm, v_reason);
            end;
        end if;
    elsif (v_n >= v_min and v_p < v_alpha and v_b > v_c)
          or clock_timestamp() >= v_shadow.at + coalesce((v_policy #>> '{online,max_duration}')::interval, interval '7 days') then
        perform ml.deploy(p_project, 'single', jsonb_build_array(jsonb_build_object('arm', 'a', 'model', v_model,
                          'version', v_live_v)), jsonb_build_object('reason', 'retraining: the shadow was rejected'));
        v_kind := 'reject';
        v_reason := format('%s@%s rejected, %s@%s stays champion: %s', v_model, v_chal_v, v_model, v_live_v,
                           case when v_n >= v_min and v_p < v_alpha and v_b > v_c then v_reason
                                else 'online.max_duration passed without a significant difference; ' || v_reason end);
    else
        return v_out || jsonb_build_object('status', 'waiting', 'reason',
            case when v_n < v_min then format(case when v_canary then '%s of %s labelled predictions on each arm'
                                                   else '%s of %s labelled pairs' end, v_n, v_min)
                 else 'no significant difference yet: ' || v_reason end);
    end if;
    perform ml_private.record_retraining_step(v_shadow.cycle_id, v_kind, v_out, '{}', v_chal, v_out,
                                              case v_kind when 'promote' then 'promoted' when 'reject' then 'rejected'
                                                          else 'awaiting approval' end, v_reason, null);
    return v_out || jsonb_build_object('status', v_kind, 'reason', v_reason);
end
$$;

------------------------------------------------------------------------------------------------
-- Grants
------------------------------------------------------------------------------------------------

grant execute on function ml.retrain(text, text) to authenticated, service_role;
grant execute on function ml.apply_standing_approval(uuid, uuid) to service_role;
grant execute on function
    ml.record_retraining_step(uuid, text, jsonb, jsonb, uuid, jsonb, text, text, bigint),
    ml_private.enqueue_retrain(uuid),
    ml_private.evaluate_shadow(text)
to service_role;
revoke all on function ml_private.standing_approval(ml.projects, uuid, uuid, text) from public;
