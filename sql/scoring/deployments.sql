-- pgmlops: scoring/deployments.sql — which model versions serve a project, and how (docs/deployments.md)
--
-- A deployment routes a project's ml.predict calls to arms, each a model version: strategy
-- single and blue_green (one live arm), ab (live arms sharing the traffic by weight), canary (a
-- baseline and a canary whose weight rises along a schedule, aborted when a rule on its error
-- rate or a metric trips) and shadow (one live arm, plus shadow arms scored and logged but
-- never returned). One deployment per project is active; deploying supersedes it, ml.rollback
-- and an abort reactivate the one before. Only approved versions that pass the project's
-- promotion gates for champion take live traffic; shadow arms need no gates.
--
-- Assignment is sticky: an entity key hashes to a point u in [0, 1) (the same point for every
-- deployment of the project) and takes the first live arm whose cumulative weight exceeds u; a
-- canary arm comes last, so a rising canary weight only moves keys from the baseline to the
-- canary. Without a key, u is random().
--
-- Every change is written to ml.audit_log (object_kind 'deployment') and published on topic
-- 'models', like the registry's changes:
--   deployment.created  deployment.rolled_back  deployment.aborted
-- and, not audited (a schedule's own progress, nobody acted), deployment.step.

------------------------------------------------------------------------------------------------
-- Helpers: weights and documents
------------------------------------------------------------------------------------------------

-- ml_private.canary_step(p_schedule jsonb, p_since timestamptz) returns int
-- The 1-based index of the canary step in force now for a canary made at p_since: the number of
-- steps whose `after` has passed (steps are increasing and the first starts at once).
create or replace function ml_private.canary_step(p_schedule jsonb, p_since timestamptz) returns int
language sql stable
set search_path = ''
as $$
    select greatest(count(*)::int, 1)
    from jsonb_array_elements(p_schedule -> 'steps') s
    where p_since + (s ->> 'after')::interval <= now()
$$;

-- ml_private.deployment_arm_weights(p_tenant uuid, p_project uuid)
-- returns table (deployment_id, strategy, arm, position, route_order, model_version_id, alias,
--                role, weight, current_weight, cumulative)
-- The arms of the project's active deployment (none: no rows) with their configured weight and
-- their weight now: a canary's from its schedule (the canary arm the weight of the last step
-- whose `after` has passed since created_at, the baseline the rest), every other strategy's as
-- configured, shadow arms 0. route_order puts live arms first, a canary arm after its
-- baseline, then shadow arms by position; cumulative is the running sum of current weights of
-- the live arms in that order (NULL for shadow arms). Two index lookups: the active deployment
-- (deployments_one_active_idx), its arms (primary key).
-- PL/pgSQL, one pass over the arms: its two queries are planned once per session. (As a SQL
-- function inlined into its callers' queries, its window functions cost ml.predict more to set
-- up at every call than the lookups themselves; docs/serving.md.)
-- ml_private.deployment_route computes the same order and weights in its own pass (keep the two
-- in step; tests/test_deployments.py checks routing by strategy, canary step and shadow).
create or replace function ml_private.deployment_arm_weights(p_tenant uuid, p_project uuid)
returns table (deployment_id uuid, strategy text, arm text, "position" int, route_order bigint, model_version_id uuid,
               alias text, role text, weight float8, current_weight float8, cumulative float8)
language plpgsql stable
-- no SET clause: called only by the owner's functions with search_path '' (see ml.predict)
as $$
#variable_conflict use_column
declare
    v_d      record;
    v_canary float8;
    v_a      record;
    v_sum    float8 := 0;
begin
    select x.id, x.strategy, x.schedule ->> 'canary_arm' as canary_arm, x.schedule, x.created_at into v_d
    from ml.deployments x
    where x.project_id = p_project and x.status = 'active' and x.tenant_id = p_tenant;
    if v_d.id is null then
        return;
    end if;
    if v_d.strategy = 'canary' then
        v_canary := coalesce(
            (select (s.step ->> 'weight')::float8
             from pg_catalog.jsonb_array_elements(v_d.schedule -> 'steps') with ordinality s (step, n)
             where v_d.created_at + (s.step ->> 'after')::interval <= pg_catalog.now()
             order by s.n desc limit 1),
            (v_d.schedule -> 'steps' -> 0 ->> 'weight')::float8);
    end if;
    route_order := 0;
    for v_a in
        select a.arm, a.position, a.model_version_id, a.alias, a.role, a.weight
        from ml.deployment_arms a
        where a.deployment_id = v_d.id
        order by a.role = 'shadow', a.arm = v_d.canary_arm, a.position
    loop
        deployment_id := v_d.id;
        strategy := v_d.strategy;
        arm := v_a.arm;
        "position" := v_a.position;
        route_order := route_order + 1;
        model_version_id := v_a.model_version_id;
        alias := v_a.alias;
        role := v_a.role;
        weight := v_a.weight;
        current_weight := case when v_a.role = 'shadow' then 0::float8
                               when v_d.strategy <> 'canary' then v_a.weight
                               when v_a.arm = v_d.canary_arm then v_canary
                               else 1 - v_canary end;
        if v_a.role = 'live' then
            v_sum := v_sum + current_weight;
            cumulative := v_sum;
        else
            cumulative := null;
        end if;
        return next;
    end loop;
end
$$;

-- ml_private.entity_point(p_project uuid, p_entity_key text) returns float8
-- Where an entity key falls in [0, 1) for a project: the top 53 bits of
-- hashtextextended('<project id>:<key>', 0), exactly representable as a float8. The same point
-- for every deployment of the project, so a key keeps its arm when weights do not move past it.
-- No SET clause, to be inlined (see ml_private.deployment_arm_weights).
create or replace function ml_private.entity_point(p_project uuid, p_entity_key text) returns float8
language sql immutable parallel safe
as $$
    select ((pg_catalog.hashtextextended(p_project::text || ':' || p_entity_key, 0) >> 11) + 4503599627370496)::float8
           / 9007199254740992::float8
$$;

-- ml_private.no_active_deployment(p_project uuid): raises P0002 naming the project.
create or replace function ml_private.no_active_deployment(p_project uuid) returns void
language plpgsql stable
set search_path = ''
as $$
begin
    raise exception 'project % has no active deployment',
        coalesce(quote_literal((select p.name from ml.projects p where p.id = p_project)), p_project::text)
        using errcode = 'P0002', hint = 'Deploy a model version with ml.deploy(project, strategy, arms).';
end
$$;

-- ml_private.deployment_route(p_tenant uuid, p_project uuid, p_entity_key text)
-- returns table (deployment_id uuid, arm text, model_version_id uuid, shadow boolean)
-- Where one prediction goes, for ml.predict: first the live arm chosen (sticky: the first live
-- arm, in route order, whose cumulative current weight exceeds ml_private.entity_point(project,
-- key); random() without a key; arms of weight 0 never), then one row per shadow arm (shadow
-- true) in position order. Route order and current weights are ml_private.deployment_arm_weights',
-- computed here in the same pass over one query (the active deployment joined to its arms):
-- looping over deployment_arm_weights' rows, its two queries and the function in between cost
-- ml.predict 0.01 ms more per call (docs/serving.md). No writes.
-- Raises P0002 when the project has no active deployment.
-- Callers: the owner's security-definer functions only (granted to nobody).
create or replace function ml_private.deployment_route(p_tenant uuid, p_project uuid, p_entity_key text)
returns table (deployment_id uuid, arm text, model_version_id uuid, shadow boolean)
language plpgsql stable
-- no SET clause: called only by the owner's functions with search_path '' (see ml.predict)
as $$
#variable_conflict use_column
declare
    v_u        float8 := case when p_entity_key is null then random() else ml_private.entity_point(p_project, p_entity_key) end;
    v_a        record;
    v_dep      uuid;
    v_canary   float8;
    v_weight   float8;
    v_sum      float8 := 0;
    v_live_arm text;
    v_live_ver uuid;
    v_last_arm text;
    v_last_ver uuid;
    v_sarm     text[] := '{}';
    v_sver     uuid[] := '{}';
begin
    -- One pass over the arms in route order (live arms first, a canary arm after its baseline,
    -- then shadow arms by position): the first live arm past u; should rounding leave the last
    -- sum a hair under u, the last live arm; arms of weight 0 never.
    for v_a in
        select x.id, x.strategy, x.schedule, x.created_at, x.schedule ->> 'canary_arm' as canary_arm,
               a.arm, a.model_version_id, a.role, a.weight
        from ml.deployments x join ml.deployment_arms a on a.deployment_id = x.id
        where x.project_id = p_project and x.status = 'active' and x.tenant_id = p_tenant
        order by a.role = 'shadow', a.arm = x.schedule ->> 'canary_arm', a.position
    loop
        if v_dep is null then
            v_dep := v_a.id;
            if v_a.strategy = 'canary' then
                -- The canary's weight: that of the last step whose `after` has passed.
                v_canary := coalesce(
                    (select (s.step ->> 'weight')::float8
                     from pg_catalog.jsonb_array_elements(v_a.schedule -> 'steps') with ordinality s (step, n)
                     where v_a.created_at + (s.step ->> 'after')::interval <= pg_catalog.now()
                     order by s.n desc limit 1),
                    (v_a.schedule -> 'steps' -> 0 ->> 'weight')::float8);
            end if;
        end if;
        if v_a.role = 'shadow' then
            v_sarm := v_sarm || v_a.arm;
            v_sver := v_sver || v_a.model_version_id;
            continue;
        end if;
        v_weight := case when v_a.strategy <> 'canary' then v_a.weight
                         when v_a.arm = v_a.canary_arm then v_canary
                         else 1 - v_canary end;
        v_sum := v_sum + v_weight;
        if v_weight > 0 then
            if v_live_arm is null and v_sum > v_u then
                v_live_arm := v_a.arm;
                v_live_ver := v_a.model_version_id;
            end if;
            v_last_arm := v_a.arm;
            v_last_ver := v_a.model_version_id;
        end if;
    end loop;
    if v_live_arm is null then
        v_live_arm := v_last_arm;
        v_live_ver := v_last_ver;
    end if;
    if v_live_arm is null and cardinality(v_sarm) = 0 then
        perform ml_private.no_active_deployment(p_project);
    end if;
    if v_live_arm is not null then
        deployment_id := v_dep; arm := v_live_arm; model_version_id := v_live_ver; shadow := false;
        return next;
    end if;
    for i in 1 .. cardinality(v_sarm) loop
        deployment_id := v_dep; arm := v_sarm[i]; model_version_id := v_sver[i]; shadow := true;
        return next;
    end loop;
end
$$;

-- ml_private.deployment_primary(p_tenant uuid, p_project uuid)
-- returns table (deployment_id uuid, arm text, model_version_id uuid)
-- The live arm of the project's active deployment with the largest current weight (ties: the
-- first by position): what batch scoring uses. Raises P0002 when there is no active deployment.
-- Callers: the owner's security-definer functions only (granted to nobody).
create or replace function ml_private.deployment_primary(p_tenant uuid, p_project uuid)
returns table (deployment_id uuid, arm text, model_version_id uuid)
language plpgsql stable
set search_path = ''
as $$
#variable_conflict use_column
begin
    return query
    select w.deployment_id, w.arm, w.model_version_id
    from ml_private.deployment_arm_weights(p_tenant, p_project) w
    where w.role = 'live'
    order by w.current_weight desc, w.position
    limit 1;
    if not found then
        perform ml_private.no_active_deployment(p_project);
    end if;
end
$$;

-- ml_private.deployment_document(p_id uuid) returns jsonb
-- A deployment as clients see it: {id, project, strategy, status, reason, previous_id,
-- created_at, created_by, activated_at, ended_at, ended_by, end_reason, arms: [{arm, position,
-- role, model, version, alias, model_version_id, scoring_path, weight}]}, and for a canary its
-- canary_arm, schedule (steps) and abort rule. The active deployment's arms also carry
-- current_weight, and a canary its current step. NULL for an unknown id.
create or replace function ml_private.deployment_document(p_id uuid) returns jsonb
language sql stable
set search_path = ''
as $$
    select jsonb_build_object(
        'id', d.id, 'project', p.name, 'strategy', d.strategy, 'status', d.status, 'reason', d.reason,
        'previous_id', d.previous_id, 'created_at', d.created_at, 'created_by', d.created_by,
        'activated_at', d.activated_at, 'ended_at', d.ended_at, 'ended_by', d.ended_by, 'end_reason', d.end_reason,
        'arms', (select jsonb_agg(jsonb_build_object(
                     'arm', a.arm, 'position', a.position, 'role', a.role, 'model', m.name, 'version', v.version,
                     'alias', a.alias, 'model_version_id', a.model_version_id, 'scoring_path', v.scoring_path,
                     'weight', a.weight)
                     || case when d.status = 'active' then jsonb_build_object('current_weight', w.current_weight) else '{}' end
                     order by a.position)
                 from ml.deployment_arms a
                 join ml.model_versions v on v.id = a.model_version_id
                 join ml.models m on m.id = v.model_id
                 left join ml_private.deployment_arm_weights(d.tenant_id, d.project_id) w
                        on d.status = 'active' and w.deployment_id = d.id and w.arm = a.arm
                 where a.deployment_id = d.id))
        || case when d.strategy = 'canary' then jsonb_build_object(
               'canary_arm', d.schedule -> 'canary_arm', 'schedule', d.schedule -> 'steps', 'abort', d.schedule -> 'abort')
               || case when d.status = 'active' then
                      jsonb_build_object('current_step', ml_private.canary_step(d.schedule, d.created_at)) else '{}' end
           else '{}' end
    from ml.deployments d join ml.projects p on p.id = d.project_id
    where d.id = p_id
$$;

-- ml_private.deployment_summary(p_id uuid) returns jsonb
-- The short form the audit log keeps: {id, strategy, status, arms: [{arm, role, model, version,
-- weight}]}; NULL for an unknown id (or NULL).
create or replace function ml_private.deployment_summary(p_id uuid) returns jsonb
language sql stable
set search_path = ''
as $$
    select jsonb_build_object('id', d.id, 'strategy', d.strategy, 'status', d.status,
        'arms', (select jsonb_agg(jsonb_build_object('arm', a.arm, 'role', a.role, 'model', m.name,
                                                     'version', v.version, 'weight', a.weight) order by a.position)
                 from ml.deployment_arms a join ml.model_versions v on v.id = a.model_version_id
                 join ml.models m on m.id = v.model_id where a.deployment_id = d.id))
    from ml.deployments d where d.id = p_id
$$;

------------------------------------------------------------------------------------------------
-- Helpers: validation
------------------------------------------------------------------------------------------------

-- ml_private.deployment_interval(p_value jsonb, p_field text) returns interval
-- p_value as an interval ('30 minutes', '1 hour'); raises 22023 naming p_field otherwise.
create or replace function ml_private.deployment_interval(p_value jsonb, p_field text) returns interval
language plpgsql stable
set search_path = ''
as $$
begin
    if jsonb_typeof(p_value) is distinct from 'string' then
        raise exception '%: must be an interval such as ''30 minutes'' (got %)', p_field, coalesce(p_value::text, 'nothing')
            using errcode = '22023';
    end if;
    return (p_value #>> '{}')::interval;
exception when invalid_datetime_format or datetime_field_overflow or interval_field_overflow then
    raise exception '%: must be an interval such as ''30 minutes'' (got %)', p_field, p_value::text using errcode = '22023';
end
$$;

-- ml_private.deployment_number(p_value jsonb, p_field text, p_rule text) returns float8
-- p_value as a number; raises 22023 '<p_field>: <p_rule>' when it is not one.
create or replace function ml_private.deployment_number(p_value jsonb, p_field text, p_rule text) returns float8
language plpgsql immutable
set search_path = ''
as $$
begin
    if jsonb_typeof(p_value) is distinct from 'number' then
        raise exception '%: % (got %)', p_field, p_rule, coalesce(p_value::text, 'nothing') using errcode = '22023';
    end if;
    return (p_value #>> '{}')::float8;
end
$$;

-- ml_private.canary_schedule(p_options jsonb, p_project ml.projects, p_live text[]) returns jsonb
-- Checks a canary's options and returns the schedule column: {canary_arm, steps: [{weight,
-- after}], abort: {metric, max | min, window, min_samples} | null}.
--   canary_arm   one of the two live arms (p_live, in position order); default the second
--   schedule     1 to 100 steps; weights in (0, 1], rising; `after` intervals, the first 0,
--                rising
--   abort        optional; metric error_rate | accuracy (classification) or mae | rmse
--                (regression); exactly one of max and min (a number; for error_rate and
--                accuracy in [0, 1]); window an interval > 0 (default '1 hour'); min_samples an
--                integer 1..1000000 (default 100)
-- Raises 22023 naming the field and the rule.
create or replace function ml_private.canary_schedule(p_options jsonb, p_project ml.projects, p_live text[]) returns jsonb
language plpgsql stable
set search_path = ''
as $$
declare
    v_canary    text;
    v_steps     jsonb := '[]';
    v_step      jsonb;
    v_i         int := 0;
    v_weight    float8;
    v_after     interval;
    v_prev_w    float8;
    v_prev_a    interval;
    v_key       text;
    v_abort     jsonb := p_options -> 'abort';
    v_metric    text;
    v_limit     float8;
    v_window    interval := interval '1 hour';
    v_samples   numeric := 100;
    v_rule      jsonb;
begin
    if p_options ? 'canary_arm' then
        if jsonb_typeof(p_options -> 'canary_arm') is distinct from 'string' or not (p_options ->> 'canary_arm') = any (p_live) then
            raise exception 'options.canary_arm: must name one of the live arms % (got %)', array_to_string(p_live, ', '),
                (p_options -> 'canary_arm')::text using errcode = '22023';
        end if;
        v_canary := p_options ->> 'canary_arm';
    else
        v_canary := p_live[2];
    end if;

    if jsonb_typeof(p_options -> 'schedule') is distinct from 'array' or jsonb_array_length(p_options -> 'schedule') = 0 then
        raise exception 'options.schedule: a canary needs a non-empty array of steps [{"weight": w, "after": "<interval>"}]'
            using errcode = '22023';
    end if;
    if jsonb_array_length(p_options -> 'schedule') > 100 then
        raise exception 'options.schedule: at most 100 steps (got %)', jsonb_array_length(p_options -> 'schedule')
            using errcode = '22023';
    end if;
    for v_step in select s from jsonb_array_elements(p_options -> 'schedule') s loop
        if jsonb_typeof(v_step) is distinct from 'object' then
            raise exception 'options.schedule[%]: must be an object {"weight": w, "after": "<interval>"}', v_i using errcode = '22023';
        end if;
        for v_key in select jsonb_object_keys(v_step) loop
            if v_key not in ('weight', 'after') then
                raise exception 'options.schedule[%]: unknown key % (a step has weight and after)', v_i, quote_literal(v_key)
                    using errcode = '22023';
            end if;
        end loop;
        v_weight := ml_private.deployment_number(v_step -> 'weight', format('options.schedule[%s].weight', v_i),
                                                 'must be a number in (0, 1]');
        if not (v_weight > 0 and v_weight <= 1) then
            raise exception 'options.schedule[%].weight: must be a number in (0, 1] (got %)', v_i, v_weight using errcode = '22023';
        end if;
        v_after := ml_private.deployment_interval(v_step -> 'after', format('options.schedule[%s].after', v_i));
        if v_i = 0 and v_after <> interval '0' then
            raise exception 'options.schedule[0].after: the first step starts at once (after ''0 minutes'', got %)',
                v_step -> 'after' using errcode = '22023';
        end if;
        if v_i > 0 and v_after <= v_prev_a then
            raise exception 'options.schedule[%].after: must be later than the step before (% <= %)', v_i, v_after, v_prev_a
                using errcode = '22023';
        end if;
        if v_i > 0 and v_weight <= v_prev_w then
            raise exception 'options.schedule[%].weight: must be greater than the step before (% <= %)', v_i, v_weight, v_prev_w
                using errcode = '22023';
        end if;
        v_steps := v_steps || jsonb_build_object('weight', v_weight, 'after', v_after::text);
        v_prev_w := v_weight;
        v_prev_a := v_after;
        v_i := v_i + 1;
    end loop;

    if v_abort is not null and jsonb_typeof(v_abort) <> 'null' then
        if jsonb_typeof(v_abort) <> 'object' then
            raise exception 'options.abort: must be an object {"metric", "max" | "min", "window", "min_samples"}' using errcode = '22023';
        end if;
        for v_key in select jsonb_object_keys(v_abort) loop
            if v_key not in ('metric', 'max', 'min', 'window', 'min_samples') then
                raise exception 'options.abort: unknown key % (an abort rule has metric, max or min, window, min_samples)',
                    quote_literal(v_key) using errcode = '22023';
            end if;
        end loop;
        v_metric := v_abort ->> 'metric';
        if jsonb_typeof(v_abort -> 'metric') is distinct from 'string'
           or v_metric not in ('error_rate', 'accuracy', 'mae', 'rmse') then
            raise exception 'options.abort.metric: must be one of error_rate, accuracy, mae, rmse (got %)',
                coalesce((v_abort -> 'metric')::text, 'nothing') using errcode = '22023';
        end if;
        if v_metric in ('error_rate', 'accuracy') and p_project.task <> 'classification' then
            raise exception 'options.abort.metric: % needs a classification project (% is %)', v_metric, p_project.name, p_project.task
                using errcode = '22023';
        elsif v_metric in ('mae', 'rmse') and p_project.task <> 'regression' then
            raise exception 'options.abort.metric: % needs a regression project (% is %)', v_metric, p_project.name, p_project.task
                using errcode = '22023';
        end if;
        if (v_abort ? 'max') = (v_abort ? 'min') then
            raise exception 'options.abort: give exactly one of max (abort above it) and min (abort below it)' using errcode = '22023';
        end if;
        v_key := case when v_abort ? 'max' then 'max' else 'min' end;
        v_limit := ml_private.deployment_number(v_abort -> v_key, 'options.abort.' || v_key, 'must be a number');
        if v_metric in ('error_rate', 'accuracy') and not (v_limit between 0 and 1) then
            raise exception 'options.abort.%: % is a share in [0, 1] (got %)', v_key, v_metric, v_limit using errcode = '22023';
        end if;
        if v_abort ? 'window' then
            v_window := ml_private.deployment_interval(v_abort -> 'window', 'options.abort.window');
            if v_window <= interval '0' then
                raise exception 'options.abort.window: must be longer than 0 (got %)', v_window using errcode = '22023';
            end if;
        end if;
        if v_abort ? 'min_samples' then
            v_samples := ml_private.deployment_number(v_abort -> 'min_samples', 'options.abort.min_samples',
                                                      'must be an integer from 1 to 1000000')::numeric;
            if v_samples <> trunc(v_samples) or not (v_samples between 1 and 1000000) then
                raise exception 'options.abort.min_samples: must be an integer from 1 to 1000000 (got %)', v_samples
                    using errcode = '22023';
            end if;
        end if;
        v_rule := jsonb_build_object('metric', v_metric, v_key, v_limit, 'window', v_window::text, 'min_samples', v_samples::int);
    end if;
    return jsonb_build_object('canary_arm', v_canary, 'steps', v_steps, 'abort', v_rule);
end
$$;

------------------------------------------------------------------------------------------------
-- API: deploying and rolling back (clients)
------------------------------------------------------------------------------------------------

-- ml.deploy(project text, strategy text, arms jsonb, options jsonb default '{}') returns uuid
-- Makes a new deployment the project's active one and returns its id; the one active before
-- becomes 'superseded' (ended_at, end_reason) and is the new one's previous_id.
--   strategy  single | blue_green: exactly one live arm (weight 1 or none);
--             ab: two or more live arms, each weight in (0, 1], summing to 1 (within 1e-9);
--             shadow: exactly one live arm and at least one shadow arm;
--             canary: exactly two live arms, no weights: the canary (options.canary_arm,
--             default the second) takes the weight of the schedule's step in force, the
--             baseline the rest; needs an active deployment to fall back to on abort.
--   arms      [{"arm": name, "model": "churn", "version": 3 | "alias": "champion",
--               "weight": w, "role": "live" | "shadow"}], 1 to 16; model may be 'churn@3' or
--             'churn@champion' instead. An alias is resolved now (moving it later does not
--             change the deployment). Shadow arms only with strategy shadow (weight 0 or none).
--   options   {"reason": text (at most 1000 characters), and for canary "canary_arm",
--             "schedule": [{"weight": 0.1, "after": "0 minutes"}, ...], "abort": {"metric":
--             "error_rate" | "accuracy" | "mae" | "rmse", "max" | "min": n, "window":
--             "1 hour", "min_samples": 100}} (ml_private.canary_schedule has the rules).
-- Every live arm's version must be approved (at least one reviewer) and pass the project's
-- promotion gates for champion (ml_private.promotion_gates); a shadow arm's version must be
-- compiled (a shadow arm is scored inside every ml.predict call). A live arm scored by workers
-- is allowed (ml.score uses it; ml.predict refuses it with 0A000).
-- Audits and publishes deployment.created (before: the superseded deployment).
-- Raises 22023 a bad strategy, arm or option (the message names the field and the rule), an
-- arm's model in another project; P0002 unknown project, model, version or alias; 0A000 a
-- shadow arm scored by workers; 23514 a live arm's version is not approved or fails a gate
-- (DETAIL: every arm's gates as JSON); 55000 a canary with no active deployment to fall back
-- to; 42501 viewers and non-members. A refused deploy writes nothing.
-- Callers: authenticated (owner, admin, ml_engineer), service_role.
create or replace function ml.deploy(project text, strategy text, arms jsonb, options jsonb default '{}') returns uuid
language plpgsql volatile security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_tenant    uuid := ml_private.acting_tenant_id(true);
    v_project   ml.projects;
    v_options   jsonb := coalesce(options, '{}');
    v_arm       jsonb;
    v_i         int := 0;
    v_key       text;
    v_name      text;
    v_role      text;
    v_weight    float8;
    v_names     text[] := '{}';
    v_live      text[] := '{}';
    v_shadows   int := 0;
    v_sum       float8 := 0;
    v_version   ml.model_versions;
    v_model     ml.models;
    v_ref       text;
    v_resolved  jsonb := '[]';
    v_schedule  jsonb := '{}';
    v_final     float8;
    v_gates     jsonb;
    v_count     int;
    v_failed    text[] := '{}';
    v_detail    jsonb := '{}';
    v_previous  uuid;
    v_id        uuid := gen_random_uuid();
    v_user      uuid := ml_private.caller_user_id();
    v_reason    text;
begin
    if strategy is null or strategy not in ('single', 'ab', 'canary', 'shadow', 'blue_green') then
        raise exception 'strategy: must be one of single, ab, canary, shadow, blue_green (got %)',
            coalesce(quote_literal(strategy), 'NULL') using errcode = '22023';
    end if;
    if jsonb_typeof(v_options) <> 'object' then
        raise exception 'options: must be a JSON object (got %)', jsonb_typeof(v_options) using errcode = '22023';
    end if;
    for v_key in select jsonb_object_keys(v_options) loop
        if v_key not in ('reason', 'canary_arm', 'schedule', 'abort') then
            raise exception 'options: unknown key % (options are reason, and for a canary canary_arm, schedule, abort)',
                quote_literal(v_key) using errcode = '22023';
        end if;
        if v_key <> 'reason' and strategy <> 'canary' then
            raise exception 'options.%: only strategy canary takes it', v_key using errcode = '22023';
        end if;
    end loop;
    if v_options ? 'reason' then
        if jsonb_typeof(v_options -> 'reason') <> 'string' or length(v_options ->> 'reason') > 1000 then
            raise exception 'options.reason: must be a text of at most 1000 characters' using errcode = '22023';
        end if;
        v_reason := v_options ->> 'reason';
    end if;
    if jsonb_typeof(arms) is distinct from 'array' or jsonb_array_length(arms) = 0 then
        raise exception 'arms: must be a non-empty JSON array of arms [{"arm", "model", "version" | "alias", "weight", "role"}]'
            using errcode = '22023';
    end if;
    if jsonb_array_length(arms) > 16 then
        raise exception 'arms: at most 16 arms (got %)', jsonb_array_length(arms) using errcode = '22023';
    end if;
    v_project := ml_private.find_project(v_tenant, project);

    -- Each arm: its shape, then the version it names (in this project).
    for v_arm in select a from jsonb_array_elements(arms) a loop
        if jsonb_typeof(v_arm) <> 'object' then
            raise exception 'arms[%]: must be an object {"arm", "model", "version" | "alias", "weight", "role"}', v_i
                using errcode = '22023';
        end if;
        for v_key in select jsonb_object_keys(v_arm) loop
            if v_key not in ('arm', 'model', 'version', 'alias', 'weight', 'role') then
                raise exception 'arms[%]: unknown key % (an arm has arm, model, version or alias, weight, role)', v_i, quote_literal(v_key)
                    using errcode = '22023';
            end if;
        end loop;
        v_name := v_arm ->> 'arm';
        if jsonb_typeof(v_arm -> 'arm') is distinct from 'string' or v_name !~ '^[a-z][a-z0-9_-]{0,62}$' then
            raise exception 'arms[%].arm: must be a name of lowercase letters, digits, _ and -, starting with a letter, at most 63 characters (got %)',
                v_i, coalesce((v_arm -> 'arm')::text, 'nothing') using errcode = '22023';
        end if;
        if v_name = any (v_names) then
            raise exception 'arms[%].arm: duplicate arm %', v_i, quote_literal(v_name) using errcode = '22023';
        end if;
        v_names := v_names || v_name;
        v_role := coalesce(v_arm ->> 'role', 'live');
        if (v_arm ? 'role' and jsonb_typeof(v_arm -> 'role') <> 'string') or v_role not in ('live', 'shadow') then
            raise exception 'arms[%].role: must be live or shadow (got %)', v_i, (v_arm -> 'role')::text using errcode = '22023';
        end if;
        if v_role = 'shadow' and strategy <> 'shadow' then
            raise exception 'arms[%].role: shadow arms belong to strategy shadow (this is %)', v_i, strategy using errcode = '22023';
        end if;
        if jsonb_typeof(v_arm -> 'model') is distinct from 'string' or btrim(v_arm ->> 'model') = '' then
            raise exception 'arms[%].model: must be a model name (or name@version, name@alias)', v_i using errcode = '22023';
        end if;
        if v_arm ? 'version' and (jsonb_typeof(v_arm -> 'version') <> 'number'
                                  or (v_arm ->> 'version')::numeric <> trunc((v_arm ->> 'version')::numeric)
                                  or (v_arm ->> 'version')::numeric not between 1 and 2147483647) then
            raise exception 'arms[%].version: must be a positive integer (got %)', v_i, (v_arm -> 'version')::text using errcode = '22023';
        end if;
        if v_arm ? 'alias' and (jsonb_typeof(v_arm -> 'alias') <> 'string' or (v_arm ->> 'alias') !~ '^[a-z][a-z0-9_-]{0,62}$') then
            raise exception 'arms[%].alias: must be an alias name (got %)', v_i, (v_arm -> 'alias')::text using errcode = '22023';
        end if;
        if v_arm ? 'version' and v_arm ? 'alias' then
            raise exception 'arms[%]: give version or alias, not both', v_i using errcode = '22023';
        end if;
        if not (v_arm ? 'version' or v_arm ? 'alias' or position('@' in v_arm ->> 'model') > 0) then
            raise exception 'arms[%]: name the version: "version": n, "alias": name, or "model": "name@version"', v_i
                using errcode = '22023';
        end if;
        if v_arm ? 'weight' and jsonb_typeof(v_arm -> 'weight') <> 'null' then
            v_weight := ml_private.deployment_number(v_arm -> 'weight', format('arms[%s].weight', v_i), 'must be a number');
        else
            v_weight := null;
        end if;

        v_version := ml_private.find_model_version(v_tenant, v_arm ->> 'model', (v_arm ->> 'version')::int, v_arm ->> 'alias');
        select * into v_model from ml.models m where m.id = v_version.model_id;
        if v_model.project_id <> v_project.id then
            raise exception 'arms[%].model: model % belongs to project %, not %', v_i, v_model.name,
                (select p.name from ml.projects p where p.id = v_model.project_id), v_project.name using errcode = '22023';
        end if;
        v_ref := format('%s@%s', v_model.name, v_version.version);
        if v_role = 'live' then
            v_live := v_live || v_name;
        else
            v_shadows := v_shadows + 1;
        end if;
        v_resolved := v_resolved || jsonb_build_object(
            'arm', v_name, 'position', v_i + 1, 'role', v_role, 'weight', v_weight, 'model_version_id', v_version.id,
            'alias', coalesce(v_arm ->> 'alias', (regexp_match(v_arm ->> 'model', '@([a-z][a-z0-9_-]*)$'))[1]),
            'ref', v_ref, 'scoring_path', v_version.scoring_path);
        v_i := v_i + 1;
    end loop;

    -- The strategy's rules on live arms and weights.
    if strategy in ('single', 'blue_green', 'shadow') and cardinality(v_live) <> 1 then
        raise exception 'arms: strategy % takes exactly one live arm (got %)', strategy, cardinality(v_live) using errcode = '22023';
    elsif strategy = 'shadow' and v_shadows = 0 then
        raise exception 'arms: strategy shadow takes at least one shadow arm ("role": "shadow")' using errcode = '22023';
    elsif strategy = 'ab' and cardinality(v_live) < 2 then
        raise exception 'arms: strategy ab takes two or more live arms (got %)', cardinality(v_live) using errcode = '22023';
    elsif strategy = 'canary' and cardinality(v_live) <> 2 then
        raise exception 'arms: strategy canary takes exactly two live arms, the baseline and the canary (got %)', cardinality(v_live)
            using errcode = '22023';
    end if;
    v_i := 0;
    for v_arm in select a from jsonb_array_elements(v_resolved) a loop
        v_weight := (v_arm ->> 'weight')::float8;
        if v_arm ->> 'role' = 'shadow' then
            if v_weight is not null and v_weight <> 0 then
                raise exception 'arms[%].weight: a shadow arm takes no traffic (weight 0 or none, got %)', v_i, v_weight
                    using errcode = '22023';
            end if;
        elsif strategy in ('single', 'blue_green', 'shadow') then
            if v_weight is not null and v_weight <> 1 then
                raise exception 'arms[%].weight: strategy % gives its one live arm all the traffic (weight 1 or none, got %)',
                    v_i, strategy, v_weight using errcode = '22023';
            end if;
        elsif strategy = 'ab' then
            if v_weight is null or not (v_weight > 0 and v_weight <= 1) then
                raise exception 'arms[%].weight: strategy ab needs a weight in (0, 1] on every live arm (got %)', v_i,
                    coalesce(v_weight::text, 'none') using errcode = '22023';
            end if;
            v_sum := v_sum + v_weight;
        elsif strategy = 'canary' then
            if v_weight is not null then
                raise exception 'arms[%].weight: a canary''s weights come from options.schedule (give none)', v_i using errcode = '22023';
            end if;
        end if;
        v_i := v_i + 1;
    end loop;
    if strategy = 'ab' and abs(v_sum - 1) > 1e-9 then
        raise exception 'arms: the weights of strategy ab must sum to 1 (got %)', v_sum using errcode = '22023';
    end if;
    if strategy = 'canary' then
        v_schedule := ml_private.canary_schedule(v_options, v_project, v_live);
        v_final := (v_schedule -> 'steps' -> -1 ->> 'weight')::float8;
    end if;

    -- Shadow arms are scored inside ml.predict: they need a compiled version.
    select a ->> 'arm', a ->> 'ref' into v_name, v_ref from jsonb_array_elements(v_resolved) a
    where a ->> 'role' = 'shadow' and a ->> 'scoring_path' <> 'compiled' order by (a ->> 'position')::int limit 1;
    if found then
        raise exception 'arms: shadow arm % (%) is scored by workers: a shadow arm is scored in every ml.predict call, which needs a compiled model',
            v_name, v_ref using errcode = '0A000', hint = 'Deploy a compiled version as the shadow, or compare the two with ml.score.';
    end if;

    -- Gates: approved, and the project's promotion gates for champion, for every live arm.
    for v_arm in select a from jsonb_array_elements(v_resolved) a where a ->> 'role' = 'live' loop
        select * into v_version from ml.model_versions v where v.id = (v_arm ->> 'model_version_id')::uuid;
        select count(*) into v_count from ml.model_approvals x where x.model_version_id = v_version.id and x.decision = 'approved';
        v_gates := jsonb_build_array(jsonb_build_object('gate', 'approved', 'passed', v_count > 0,
            'message', case when v_count > 0 then format('approvals %s >= 1', v_count)
                            else 'not approved (a live arm needs a version at least one reviewer approved)' end))
            || ml_private.promotion_gates(v_version, 'champion');
        v_detail := v_detail || jsonb_build_object(v_arm ->> 'arm', v_gates);
        select v_failed || coalesce(array_agg(format('arm %s (%s): %s', v_arm ->> 'arm', v_arm ->> 'ref', g ->> 'message') order by n), '{}')
        into v_failed
        from jsonb_array_elements(v_gates) with ordinality x (g, n) where not (g ->> 'passed')::boolean;
    end loop;
    if cardinality(v_failed) > 0 then
        raise exception 'deployment of project % refused: %', v_project.name, array_to_string(v_failed, '; ')
            using errcode = '23514', detail = v_detail::text,
                  hint = 'Approve the version (ml.approve) and meet the project''s champion policy (ml.check_promotion).';
    end if;

    -- One deployment change per project at a time.
    perform 1 from ml.projects p where p.id = v_project.id for no key update;
    select d.id into v_previous from ml.deployments d where d.project_id = v_project.id and d.status = 'active';
    if strategy = 'canary' and v_previous is null then
        raise exception 'project % has no active deployment: a canary needs one to fall back to when it is aborted', v_project.name
            using errcode = '55000', hint = 'Deploy the baseline first: ml.deploy(project, ''single'', arms).';
    end if;
    if v_previous is not null then
        update ml.deployments d set status = 'superseded', ended_at = now(), ended_by = v_user,
                                    end_reason = format('superseded by deployment %s', v_id)
        where d.id = v_previous;
    end if;
    insert into ml.deployments (id, tenant_id, project_id, strategy, schedule, status, previous_id, reason, created_by,
                                created_at, activated_at, canary_step)
    values (v_id, v_tenant, v_project.id, strategy, v_schedule, 'active', v_previous, v_reason, v_user,
            now(), now(), case when strategy = 'canary' then 1 end);
    insert into ml.deployment_arms (tenant_id, deployment_id, arm, position, model_version_id, alias, role, weight)
    select v_tenant, v_id, a ->> 'arm', (a ->> 'position')::int, (a ->> 'model_version_id')::uuid, a ->> 'alias', a ->> 'role',
           case when a ->> 'role' = 'shadow' then 0
                when strategy = 'ab' then (a ->> 'weight')::float8
                when strategy = 'canary' and a ->> 'arm' = v_schedule ->> 'canary_arm' then v_final
                when strategy = 'canary' then 1 - v_final
                else 1 end
    from jsonb_array_elements(v_resolved) a;
    perform ml_private.audit(v_tenant, 'deployment.created', 'deployment', v_id,
        ml_private.deployment_summary(v_previous) || jsonb_build_object('project', v_project.name),
        ml_private.deployment_summary(v_id) || jsonb_build_object('project', v_project.name, 'previous_id', v_previous,
                                                                  'reason', v_reason, 'schedule', v_schedule));
    return v_id;
end
$$;

-- ml_private.end_deployment(p_deployment uuid, p_status text, p_reason text, p_action text,
--                           p_measure jsonb default null) returns uuid
-- Ends the active deployment p_deployment with p_status (rolled_back or aborted) and makes its
-- previous deployment active again (activated_at now; its ended_* cleared); audits and
-- publishes p_action (before: the ended deployment, with p_measure; after: the one reactivated).
-- Returns the id now active (NULL when the ended one had no previous). The caller holds the
-- project's lock and has checked that p_deployment is active.
create or replace function ml_private.end_deployment(p_deployment uuid, p_status text, p_reason text, p_action text,
                                                     p_measure jsonb default null)
returns uuid
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_row  ml.deployments;
    v_name text;
begin
    select * into v_row from ml.deployments d where d.id = p_deployment;
    select p.name into v_name from ml.projects p where p.id = v_row.project_id;
    update ml.deployments d set status = p_status, ended_at = now(), ended_by = ml_private.caller_user_id(), end_reason = p_reason
    where d.id = p_deployment;
    if v_row.previous_id is not null then
        update ml.deployments d set status = 'active', activated_at = now(), ended_at = null, ended_by = null, end_reason = null
        where d.id = v_row.previous_id;
    end if;
    perform ml_private.audit(v_row.tenant_id, p_action, 'deployment', p_deployment,
        ml_private.deployment_summary(p_deployment)
            || jsonb_build_object('project', v_name, 'reason', p_reason)
            || case when p_measure is null then '{}' else jsonb_build_object('measured', p_measure) end,
        ml_private.deployment_summary(v_row.previous_id) || jsonb_build_object('project', v_name));
    return v_row.previous_id;
end
$$;

-- ml.rollback(project text) returns uuid
-- Ends the project's active deployment (status rolled_back) and makes the deployment that was
-- active before it (its previous_id) active again; returns that one's id. Rolling back again
-- walks further back. The reactivated deployment's versions are not checked against the gates
-- again: rollback is the way out of an incident and goes back to what served before, which
-- passed them when it was deployed. Audits and publishes deployment.rolled_back.
-- Raises P0002 unknown project; 55000 no active deployment, or none before it to go back to;
-- 42501 viewers and non-members. Callers: authenticated (owner, admin, ml_engineer), service_role.
create or replace function ml.rollback(project text) returns uuid
language plpgsql volatile security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_tenant  uuid := ml_private.acting_tenant_id(true);
    v_project ml.projects := ml_private.find_project(v_tenant, project);
    v_row     ml.deployments;
begin
    perform 1 from ml.projects p where p.id = v_project.id for no key update;
    select * into v_row from ml.deployments d where d.project_id = v_project.id and d.status = 'active';
    if not found then
        raise exception 'project % has no active deployment to roll back', v_project.name using errcode = '55000';
    end if;
    if v_row.previous_id is null then
        raise exception 'project %: deployment % has no previous deployment to roll back to', v_project.name, v_row.id
            using errcode = '55000', hint = 'Deploy the version to serve with ml.deploy instead.';
    end if;
    return ml_private.end_deployment(v_row.id, 'rolled_back', 'rolled back', 'deployment.rolled_back');
end
$$;

------------------------------------------------------------------------------------------------
-- API: reading deployments (clients)
------------------------------------------------------------------------------------------------

-- ml.deployment(project text) returns jsonb
-- The project's active deployment (see ml_private.deployment_document): its arms with model,
-- version, role, configured weight and current_weight (a canary's moves along its schedule),
-- and for a canary its schedule, abort rule and current step; NULL when none is active.
-- Raises P0002 unknown project; 42501 non-members. Callers: any member (viewers too), service_role.
create or replace function ml.deployment(project text) returns jsonb
language plpgsql stable security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_tenant  uuid := ml_private.acting_tenant_id(false);
    v_project ml.projects := ml_private.find_project(v_tenant, project);
begin
    return ml_private.deployment_document(
        (select d.id from ml.deployments d where d.project_id = v_project.id and d.status = 'active'));
end
$$;

-- ml.deployment_history(project text) returns jsonb
-- Every deployment of the project, newest first (by created_at), each as ml.deployment shows
-- it: status (active, superseded, rolled_back, aborted), reason, who made it and when
-- (created_by, created_at), when it last became active, and who ended it, when and why
-- (ended_by, ended_at, end_reason). '[]' when there are none.
-- Raises P0002 unknown project; 42501 non-members. Callers: any member (viewers too), service_role.
create or replace function ml.deployment_history(project text) returns jsonb
language plpgsql stable security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_tenant  uuid := ml_private.acting_tenant_id(false);
    v_project ml.projects := ml_private.find_project(v_tenant, project);
begin
    return coalesce((select jsonb_agg(ml_private.deployment_document(d.id) order by d.created_at desc, d.id)
                     from ml.deployments d where d.project_id = v_project.id), '[]');
end
$$;

------------------------------------------------------------------------------------------------
-- Canaries: steps and the abort rule
------------------------------------------------------------------------------------------------

-- ml_private.canary_measure(p_deployment ml.deployments) returns jsonb
-- The abort rule's metric for an active canary, over the canary arm's own (live, not shadow)
-- predictions of the rule's window (and since the canary was made) that have feedback (the
-- label last updated, when several sources gave one): {metric, value, samples, window, since}.
--   error_rate  the share whose label differs from the prediction; accuracy the share equal
--               (equal as JSON values, or as text: 1 and "1" are the same label)
--   mae, rmse   over numeric predictions and labels
-- value is NULL without samples. NULL when the canary has no abort rule.
create or replace function ml_private.canary_measure(p_deployment ml.deployments) returns jsonb
language plpgsql stable
set search_path = ''
as $$
declare
    v_rule   jsonb := p_deployment.schedule -> 'abort';
    v_metric text := v_rule ->> 'metric';
    v_since  timestamptz := greatest(now() - (v_rule ->> 'window')::interval, p_deployment.created_at);
    v_value  float8;
    v_count  bigint;
begin
    if v_rule is null or jsonb_typeof(v_rule) = 'null' then
        return null;
    end if;
    with p as (
        select p.id, p.created_at,
               case when jsonb_typeof(p.prediction) = 'object' and p.prediction ? 'prediction' then p.prediction -> 'prediction'
                    else p.prediction end as predicted
        from ml.predictions p
        where p.tenant_id = p_deployment.tenant_id and p.project_id = p_deployment.project_id
          and p.created_at >= v_since and p.deployment_id = p_deployment.id
          and p.arm = p_deployment.schedule ->> 'canary_arm' and p.shadow_of is null
    ), pairs as (
        select distinct on (p.id) p.predicted, f.label
        from p join ml.feedback f
          on f.tenant_id = p_deployment.tenant_id and f.prediction_id = p.id and f.predicted_at = p.created_at
        order by p.id, f.updated_at desc, f.id desc
    )
    select case v_metric
               when 'error_rate' then avg(case when x.predicted = x.label or x.predicted #>> '{}' = x.label #>> '{}' then 0 else 1 end)
               when 'accuracy' then avg(case when x.predicted = x.label or x.predicted #>> '{}' = x.label #>> '{}' then 1 else 0 end)
               when 'mae' then avg(abs((x.predicted #>> '{}')::float8 - (x.label #>> '{}')::float8))
               when 'rmse' then sqrt(avg(power((x.predicted #>> '{}')::float8 - (x.label #>> '{}')::float8, 2)))
           end,
           count(*)
    into v_value, v_count
    from pairs x
    where v_metric in ('error_rate', 'accuracy')
       or (jsonb_typeof(x.predicted) = 'number' and jsonb_typeof(x.label) = 'number');
    return jsonb_build_object('metric', v_metric, 'value', v_value, 'samples', v_count,
                              'window', v_rule ->> 'window', 'since', v_since);
end
$$;

-- ml_private.check_deployment(p_deployment uuid) returns jsonb
-- Checks one canary now, under its project's lock: announces a step it has reached since the
-- last check (event deployment.step {deployment_id, project, step, weight, canary_arm}), then
-- evaluates its abort rule (ml_private.canary_measure). With at least min_samples samples and
-- the value above max (or below min), it aborts the canary: status aborted, the previous
-- deployment active again, deployment.aborted audited and published with the measure.
-- Returns {deployment_id, project, step, canary_weight, measured, tripped, aborted,
-- active_id}; NULL when p_deployment is no longer an active canary.
create or replace function ml_private.check_deployment(p_deployment uuid) returns jsonb
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_row     ml.deployments;
    v_project text;
    v_step    int;
    v_weight  float8;
    v_measure jsonb;
    v_rule    jsonb;
    v_limit   float8;
    v_tripped boolean := false;
    v_active  uuid;
begin
    select * into v_row from ml.deployments d where d.id = p_deployment;
    if not found then
        return null;
    end if;
    select p.name into v_project from ml.projects p where p.id = v_row.project_id for no key update;
    select * into v_row from ml.deployments d where d.id = p_deployment;
    if v_row.status <> 'active' or v_row.strategy <> 'canary' then
        return null;
    end if;
    v_active := v_row.id;
    v_step := ml_private.canary_step(v_row.schedule, v_row.created_at);
    v_weight := (v_row.schedule -> 'steps' -> (v_step - 1) ->> 'weight')::float8;

    v_rule := v_row.schedule -> 'abort';
    v_measure := ml_private.canary_measure(v_row);
    if v_measure is not null and (v_measure ->> 'samples')::bigint >= (v_rule ->> 'min_samples')::bigint
       and v_measure ->> 'value' is not null then
        v_limit := coalesce((v_rule ->> 'max')::float8, (v_rule ->> 'min')::float8);
        v_tripped := case when v_rule ? 'max' then (v_measure ->> 'value')::float8 > v_limit
                          else (v_measure ->> 'value')::float8 < v_limit end;
    end if;

    if v_tripped then
        v_measure := v_measure || jsonb_build_object(case when v_rule ? 'max' then 'max' else 'min' end, v_limit);
        v_active := ml_private.end_deployment(v_row.id, 'aborted',
            format('abort rule: %s %s %s %s over %s samples since %s', v_measure ->> 'metric',
                   ml_private.format_number((v_measure ->> 'value')::numeric),
                   case when v_rule ? 'max' then '>' else '<' end, ml_private.format_number(v_limit::numeric),
                   v_measure ->> 'samples', v_measure ->> 'since'),
            'deployment.aborted', v_measure);
    elsif v_step > coalesce(v_row.canary_step, 1) then
        update ml.deployments d set canary_step = v_step where d.id = v_row.id;
        perform ml_private.publish(v_row.tenant_id, 'models', 'deployment.step', jsonb_build_object(
            'deployment_id', v_row.id, 'project', v_project, 'step', v_step, 'weight', v_weight,
            'canary_arm', v_row.schedule ->> 'canary_arm'));
    end if;
    return jsonb_build_object('deployment_id', v_row.id, 'project', v_project, 'step', v_step, 'canary_weight', v_weight,
                              'measured', v_measure, 'tripped', v_tripped, 'aborted', v_tripped, 'active_id', v_active);
end
$$;

-- ml_private.check_deployments() returns jsonb
-- Checks every active canary (ml_private.check_deployment), each on its own: one that fails is
-- reported and the others are still checked. Run by ml_private.run_maintenance. Returns
-- {checked, aborted: [deployment ids], steps: [{deployment_id, step}], errors: [{deployment_id,
-- error}]}.
create or replace function ml_private.check_deployments() returns jsonb
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_id      uuid;
    v_result  jsonb;
    v_checked int := 0;
    v_aborted jsonb := '[]';
    v_errors  jsonb := '[]';
begin
    for v_id in select d.id from ml.deployments d where d.status = 'active' and d.strategy = 'canary' order by d.created_at loop
        begin
            v_result := ml_private.check_deployment(v_id);
            if v_result is not null then
                v_checked := v_checked + 1;
                if (v_result ->> 'aborted')::boolean then
                    v_aborted := v_aborted || to_jsonb(v_id);
                end if;
            end if;
        exception when others then
            v_errors := v_errors || jsonb_build_object('deployment_id', v_id, 'error', sqlerrm);
        end;
    end loop;
    return jsonb_build_object('checked', v_checked, 'aborted', v_aborted, 'errors', v_errors);
end
$$;

-- ml.check_deployments(project text) returns jsonb
-- Checks the project's active canary now, as the maintenance run does every few minutes
-- (ml_private.check_deployment: announces a step reached, aborts the canary when its rule
-- trips) and returns what it found: {deployment_id, project, step, canary_weight, measured:
-- {metric, value, samples, window, since}, tripped, aborted, active_id}; NULL when the active
-- deployment is not a canary (or there is none).
-- Raises P0002 unknown project; 42501 not a service caller. Callers: service_role (tests, the CLI,
-- schedulers).
create or replace function ml.check_deployments(project text) returns jsonb
language plpgsql volatile security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_tenant  uuid;
    v_project ml.projects;
begin
    perform ml_private.assert_service('ml.check_deployments');
    v_tenant := ml_private.acting_tenant_id(true);
    v_project := ml_private.find_project(v_tenant, project);
    return ml_private.check_deployment(
        (select d.id from ml.deployments d where d.project_id = v_project.id and d.status = 'active' and d.strategy = 'canary'));
end
$$;

------------------------------------------------------------------------------------------------
-- Grants
------------------------------------------------------------------------------------------------

-- ml_private.deployment_route and deployment_primary are granted to nobody: ml.predict and the
-- batch scorers (security definer, owned by the owner) call them after checking the caller.
grant execute on function
    ml.deploy(text, text, jsonb, jsonb),
    ml.rollback(text),
    ml.deployment(text),
    ml.deployment_history(text)
to authenticated, service_role;
grant execute on function
    ml.check_deployments(text)
to service_role;
