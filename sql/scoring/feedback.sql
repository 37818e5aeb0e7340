-- pgmlops: scoring — feedback: the realized outcomes of logged predictions (docs/feedback.md)
--
-- A prediction logged by ml.predict (ml.predictions) gets its outcome later: the customer did
-- churn, the transaction was fraud. ml.record_feedback records one label for one prediction,
-- ml.record_feedback_bulk many at once (all or nothing). A label is kept per prediction and
-- source (the system that observed it: 'crm', 'chargebacks', or none); recording again for the
-- same prediction and source replaces it. ml.prediction_outcomes joins the log to the labels
-- for monitoring (docs/feedback.md).
--
-- The label must fit the project's task, checked here so every client gets the same rules:
--   classification     a JSON string, number or boolean; one of the classes of the model
--                      version that made the prediction when its signature lists them
--   regression         a JSON number
--   anomaly_detection  true (an anomaly) or false, or scikit-learn's -1 (an anomaly) or 1
--
-- Feedback is recorded against live predictions: the prediction id ml.predict returned. A
-- shadow arm's row answers nobody; its outcome is the live prediction's, and
-- ml.prediction_outcomes gives it to the shadow row through shadow_of.
--
-- Finding a prediction by id: ml.predictions is time-partitioned (one-day chunks, 90 days kept).
-- An id made by ml_private.prediction_id (UUIDv7 layout: the prediction's time in its first 48
-- bits) is looked up in the chunks around that time only; any other id (or one not found there)
-- probes predictions_id_idx on every chunk: one index probe per chunk, no sequential scan
-- (measured in docs/feedback.md). The label's row keeps the prediction's time (predicted_at),
-- so joins from labels to predictions prune the partitions.

------------------------------------------------------------------------------------------------
-- Helpers
------------------------------------------------------------------------------------------------

-- ml_private.feedback_label_problem(p_task text, p_classes jsonb, p_label jsonb) returns text
-- NULL when p_label is a valid outcome for a prediction of task p_task made by a model whose
-- classes are p_classes (a JSON array, or NULL when the signature lists none); else the rule it
-- breaks, as a sentence to put after the field's name.
create or replace function ml_private.feedback_label_problem(p_task text, p_classes jsonb, p_label jsonb)
returns text
language sql immutable
set search_path = ''
as $$
    select case
        when p_label is null or jsonb_typeof(p_label) = 'null' then
            'must not be null: give the realized outcome'
        when p_task = 'classification' and jsonb_typeof(p_label) not in ('string', 'number', 'boolean') then
            format('must be a class label (a JSON string, number or boolean) for a classification project, got %s',
                   jsonb_typeof(p_label))
        when p_task = 'classification' and jsonb_typeof(p_classes) = 'array' and jsonb_array_length(p_classes) > 0
             and not p_classes @> jsonb_build_array(p_label) then
            format('%s is not a class of the model that made the prediction (classes: %s)', p_label,
                   (select string_agg(c::text, ', ' order by n) from jsonb_array_elements(p_classes) with ordinality x (c, n)))
        when p_task = 'regression' and jsonb_typeof(p_label) <> 'number' then
            format('must be a number for a regression project, got %s', jsonb_typeof(p_label))
        when p_task = 'anomaly_detection' and not (jsonb_typeof(p_label) = 'boolean'
                                                  or (jsonb_typeof(p_label) = 'number' and p_label in ('-1', '1'))) then
            format('must be true or false, or -1 or 1 (-1: an anomaly) for an anomaly detection project, got %s',
                   case when jsonb_typeof(p_label) = 'number' then p_label::text else jsonb_typeof(p_label) end)
    end
$$;

-- ml_private.feedback_source_problem(p_source text) returns text
-- NULL when p_source may name a feedback source (NULL, or 1 to 100 characters, no control
-- characters, not blank); else the rule it breaks.
create or replace function ml_private.feedback_source_problem(p_source text) returns text
language sql immutable
set search_path = ''
as $$
    select case
        when p_source is null then null
        when btrim(p_source) = '' then 'must not be blank (leave it NULL for no source)'
        when length(p_source) > 100 then 'must be at most 100 characters'
        when p_source ~ '[[:cntrl:]]' then 'must not contain control characters'
    end
$$;

-- ml_private.prediction_id(p_at timestamptz default now()) returns uuid
-- A new prediction id that carries its time: the UUIDv7 layout (RFC 9562: p_at's Unix time in
-- milliseconds in the first 48 bits, version 7, the remaining 74 bits random, from
-- gen_random_uuid). Ids made at the prediction's created_at (now(), the default) let
-- ml.record_feedback find the prediction in its own chunk instead of probing every chunk.
create or replace function ml_private.prediction_id(p_at timestamptz default now()) returns uuid
language sql volatile parallel safe
set search_path = ''
as $$
    select encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
                                          placing substring(int8send(floor(extract(epoch from p_at) * 1000)::bigint) from 3)
                                          from 1 for 6), 52, 1), 53, 1), 'hex')::uuid
$$;

-- ml_private.prediction_id_time(p_id uuid) returns timestamptz
-- The time a UUIDv7 id carries (millisecond precision); NULL for ids of other versions.
create or replace function ml_private.prediction_id_time(p_id uuid) returns timestamptz
language sql immutable parallel safe
set search_path = ''
as $$
    select case when substr(p_id::text, 15, 1) = '7'
                then to_timestamp((('x' || substr(replace(p_id::text, '-', ''), 1, 12))::bit(48)::bigint) / 1000.0) end
$$;

-- ml_private.feedback_target(p_tenant uuid, p_prediction uuid)
-- returns table (prediction_id uuid, project_id uuid, predicted_at timestamptz, shadow_of uuid,
--                task text, classes jsonb)
-- The prediction p_prediction of tenant p_tenant with what checking its label needs: its
-- project's task and the classes of the model version that made it. No row when there is
-- none (another tenant's prediction is not there either). Probes predictions_id_idx of every
-- partition, or only those of the hour before the time a UUIDv7 id carries (the transaction
-- that logged it may have started before the id was made) when it is found there (see the
-- header). PL/pgSQL rather than SQL on purpose: its plans are kept for the session, where a
-- SQL function's would be made again at every call, and planning a query over every chunk of
-- the log costs more than running it (docs/feedback.md has the figures).
create or replace function ml_private.feedback_target(p_tenant uuid, p_prediction uuid)
returns table (prediction_id uuid, project_id uuid, predicted_at timestamptz, shadow_of uuid, task text, classes jsonb)
language plpgsql stable security definer
set search_path = ''
as $$
declare
    v_at timestamptz := ml_private.prediction_id_time(p_prediction);
begin
    if v_at is not null then
        -- EXECUTE: planned with the bounds' values, so only the chunks they cover are planned and
        -- locked (a generic plan would hold every chunk, and lock each one at every call).
        return query execute
            'select p.id, p.project_id, p.created_at, p.shadow_of, pr.task, v.signature -> ''classes''
             from ml.predictions p
             join ml.projects pr on pr.id = p.project_id
             left join ml.model_versions v on v.id = p.model_version_id
             where p.id = $1 and p.tenant_id = $2 and p.created_at >= $3 and p.created_at < $4
             limit 1'
            using p_prediction, p_tenant, v_at - interval '1 hour', v_at + interval '1 second';
        if found then
            return;
        end if;
    end if;
    return query
        select p.id, p.project_id, p.created_at, p.shadow_of, pr.task, v.signature -> 'classes'
        from ml.predictions p
        join ml.projects pr on pr.id = p.project_id
        left join ml.model_versions v on v.id = p.model_version_id
        where p.id = p_prediction and p.tenant_id = p_tenant
        limit 1;
end
$$;

-- The most elements one ml.record_feedback_bulk call takes: larger batches hold their locks and
-- their validation in one transaction for long; send several.
create or replace function ml_private.max_feedback_batch() returns int
language sql immutable
set search_path = ''
as $$ select 10000 $$;

------------------------------------------------------------------------------------------------
-- API: recording feedback (clients and services)
------------------------------------------------------------------------------------------------

-- ml.record_feedback(prediction_id uuid, label jsonb, source text default null) returns bigint
-- Records the realized outcome `label` of prediction `prediction_id` (the id ml.predict
-- returned) as observed by `source` (NULL: no particular source), and returns the feedback
-- row's id. Recording again for the same prediction and source replaces the label (same id,
-- updated_at moves; recorded_by is the latest caller). The label must fit the project's task
-- (see the header).
-- Raises 22023 prediction_id NULL, a blank, over-long or control-character source, a label
-- that is NULL or does not fit the task (the rule named), a shadow arm's prediction; P0002 no
-- such prediction in the caller's tenant (another tenant's predictions are not found, and
-- neither are predictions past the log's retention); 42501 viewers, non-members, anonymous
-- callers. Callers: authenticated (owner, admin, ml_engineer), service_role.
create or replace function ml.record_feedback(prediction_id uuid, label jsonb, source text default null) returns bigint
language plpgsql volatile security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_tenant  uuid := ml_private.acting_tenant_id(true);
    v_target  record;
    v_problem text;
    v_id      bigint;
begin
    if prediction_id is null then
        raise exception 'prediction_id: must not be NULL (the prediction_id ml.predict returned)' using errcode = '22023';
    end if;
    v_problem := ml_private.feedback_source_problem(source);
    if v_problem is not null then
        raise exception 'source: %', v_problem using errcode = '22023';
    end if;
    if label is null or jsonb_typeof(label) = 'null' then
        raise exception 'label: %', ml_private.feedback_label_problem(null, null, null) using errcode = '22023';
    end if;

    select * into v_target from ml_private.feedback_target(v_tenant, prediction_id);
    if not found then
        raise exception 'prediction % does not exist', prediction_id using errcode = 'P0002',
            hint = 'Record feedback with the prediction_id ml.predict returned, in the tenant that made it, '
                   'while the prediction log still holds it.';
    end if;
    if v_target.shadow_of is not null then
        raise exception 'prediction_id: % is a shadow arm''s prediction: record feedback for the live prediction %',
            prediction_id, v_target.shadow_of using errcode = '22023';
    end if;
    v_problem := ml_private.feedback_label_problem(v_target.task, v_target.classes, label);
    if v_problem is not null then
        raise exception 'label: %', v_problem using errcode = '22023';
    end if;

    insert into ml.feedback as f (tenant_id, project_id, prediction_id, predicted_at, label, source, recorded_by)
    values (v_tenant, v_target.project_id, prediction_id, v_target.predicted_at, label, source,
            ml_private.caller_user_id())
    on conflict on constraint feedback_one_per_source do update
        set label = excluded.label, recorded_by = excluded.recorded_by, updated_at = now()
    returning f.id into v_id;
    return v_id;
end
$$;

-- ml.record_feedback_bulk(feedback jsonb) returns int
-- Records many outcomes in one call, all or nothing: `feedback` is a JSON array of
-- {"prediction_id": uuid, "label": ..., "source": text (optional)}, each recorded as
-- ml.record_feedback records one. Returns the number of elements recorded (an empty array: 0).
-- Errors name the first failing element by its position, counted from 0 (`feedback[3].label:
-- must be a number ...`), and nothing is written.
-- Raises 22023 not an array, an element that is not an object or has unknown fields, a
-- prediction_id that is not a uuid, a source or label breaking ml.record_feedback's rules, a
-- shadow arm's prediction, the same prediction and source twice; P0002 an element's prediction
-- does not exist in the caller's tenant; 54000 more than 10,000 elements; 42501 viewers,
-- non-members, anonymous callers. Callers: authenticated (owner, admin, ml_engineer),
-- service_role.
create or replace function ml.record_feedback_bulk(feedback jsonb) returns int
language plpgsql volatile security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_tenant  uuid := ml_private.acting_tenant_id(true);
    v_count   int;
    v_bad     record;
    v_rows    jsonb;
begin
    if feedback is null or jsonb_typeof(feedback) <> 'array' then
        raise exception 'feedback: must be a JSON array of {"prediction_id", "label", "source"} objects, got %',
            coalesce(jsonb_typeof(feedback), 'NULL') using errcode = '22023';
    end if;
    v_count := jsonb_array_length(feedback);
    if v_count = 0 then
        return 0;
    end if;
    if v_count > ml_private.max_feedback_batch() then
        raise exception 'feedback: % elements, at most % per call', v_count, ml_private.max_feedback_batch()
            using errcode = '54000', hint = 'Send the outcomes in several calls.';
    end if;

    -- The shape of every element, first failure by position.
    select x.i, x.problem into v_bad
    from (
        select e.n - 1 as i, case
            when jsonb_typeof(e.value) <> 'object' then
                format(': must be an object {"prediction_id", "label", "source"}, got %s', jsonb_typeof(e.value))
            when exists (select 1 from jsonb_object_keys(e.value) k where k not in ('prediction_id', 'label', 'source')) then
                format(': unknown field %s (known: prediction_id, label, source)',
                       (select min(k) from jsonb_object_keys(e.value) k where k not in ('prediction_id', 'label', 'source')))
            when jsonb_typeof(e.value -> 'prediction_id') is distinct from 'string'
                 or (e.value ->> 'prediction_id') !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
                format('.prediction_id: must be a uuid (the prediction_id ml.predict returned), got %s',
                       coalesce((e.value -> 'prediction_id')::text, 'nothing'))
            when coalesce(jsonb_typeof(e.value -> 'source'), 'null') not in ('null', 'string') then
                format('.source: must be a string or null, got %s', jsonb_typeof(e.value -> 'source'))
            when ml_private.feedback_source_problem(e.value ->> 'source') is not null then
                '.source: ' || ml_private.feedback_source_problem(e.value ->> 'source')
            when e.value -> 'label' is null or jsonb_typeof(e.value -> 'label') = 'null' then
                '.label: ' || ml_private.feedback_label_problem(null, null, null)
        end as problem
        from jsonb_array_elements(feedback) with ordinality e (value, n)
    ) x
    where x.problem is not null
    order by x.i
    limit 1;
    if found then
        raise exception 'feedback[%]%', v_bad.i, v_bad.problem using errcode = '22023';
    end if;

    -- Each element's prediction, in the caller's tenant, kept for the insert. One statement: the
    -- chunks are planned and locked once, then each element costs one index probe per chunk
    -- (ml_private.feedback_target per element would pay that fixed cost every time).
    select jsonb_agg(jsonb_build_object(
               'i', e.n - 1, 'prediction_id', e.pid, 'label', e.value -> 'label', 'source', e.value ->> 'source',
               'found', t.prediction_id is not null, 'project_id', t.project_id, 'predicted_at', t.predicted_at,
               'shadow_of', t.shadow_of, 'task', t.task, 'classes', t.classes,
               'first', e.first - 1)
           order by e.n)
    into v_rows
    from (select a.value, a.n, a.pid, min(a.n) over (partition by a.pid, a.value ->> 'source') as first
          from (select value, n, (value ->> 'prediction_id')::uuid as pid
                from jsonb_array_elements(feedback) with ordinality j (value, n)) a) e
    left join lateral (
        select p.id as prediction_id, p.project_id, p.created_at as predicted_at, p.shadow_of, pr.task,
               v.signature -> 'classes' as classes
        from ml.predictions p
        join ml.projects pr on pr.id = p.project_id
        left join ml.model_versions v on v.id = p.model_version_id
        where p.id = e.pid and p.tenant_id = v_tenant
        limit 1) t on true;

    select r.i, r.code, r.problem into v_bad
    from (
        select x.i, case when x.first <> x.i or x.found then '22023' else 'P0002' end as code, case
            when x.first <> x.i then
                format(': repeats feedback[%s] (the same prediction_id and source): send one label each', x.first)
            when not x.found then
                format('.prediction_id: prediction %s does not exist', x.prediction_id)
            when x.shadow_of is not null then
                format('.prediction_id: %s is a shadow arm''s prediction: record feedback for the live prediction %s',
                       x.prediction_id, x.shadow_of)
            else '.label: ' || ml_private.feedback_label_problem(x.task, x.classes, x.label)
        end as problem
        from jsonb_to_recordset(v_rows) x (i int, prediction_id uuid, label jsonb, found boolean, shadow_of uuid,
                                           task text, classes jsonb, first int)
    ) r
    where r.problem is not null
    order by r.i
    limit 1;
    if found then
        raise exception 'feedback[%]%', v_bad.i, v_bad.problem using errcode = v_bad.code;
    end if;

    insert into ml.feedback as f (tenant_id, project_id, prediction_id, predicted_at, label, source, recorded_by)
    select v_tenant, x.project_id, x.prediction_id, x.predicted_at, x.label, x.source, ml_private.caller_user_id()
    from jsonb_to_recordset(v_rows) x (prediction_id uuid, project_id uuid, predicted_at timestamptz, label jsonb,
                                       source text)
    on conflict on constraint feedback_one_per_source do update
        set label = excluded.label, recorded_by = excluded.recorded_by, updated_at = now();
    return v_count;
end
$$;

------------------------------------------------------------------------------------------------
-- Monitoring: predictions joined to their outcomes
------------------------------------------------------------------------------------------------

-- ml.prediction_outcomes (view, security invoker: RLS applies, each caller sees its tenants')
-- One row per logged prediction and label: every row of ml.predictions (live and shadow arms),
-- with its project, model and version, joined to the feedback recorded for it. A shadow row
-- takes the label of the live prediction it shadowed (shadow_of), so a challenger is judged on
-- the same outcomes. A prediction without feedback appears once with NULL label columns; one
-- labelled by several sources appears once per source. Columns: prediction_id, tenant_id,
-- project_id, project, task, deployment_id, arm, shadow, shadow_of, model_version_id, model,
-- version, entity_key, prediction, score, probabilities, predicted_at, prediction_source
-- (online, batch, ...), feedback_id, label, label_source, labelled_by, labelled_at (the
-- latest recording), label_delay (labelled_at - predicted_at). Filter on predicted_at to read
-- only the partitions of a window. Callers: authenticated (members), service_role.
create or replace view ml.prediction_outcomes with (security_invoker = true) as
    select p.id as prediction_id, p.tenant_id, p.project_id, pr.name as project, pr.task, p.deployment_id, p.arm,
           p.shadow_of is not null as shadow, p.shadow_of, p.model_version_id, m.name as model, v.version,
           p.entity_key, p.prediction, p.score, p.probabilities, p.created_at as predicted_at,
           p.source as prediction_source, f.id as feedback_id, f.label, f.source as label_source,
           f.recorded_by as labelled_by, f.updated_at as labelled_at, f.updated_at - p.created_at as label_delay
    from ml.predictions p
    join ml.projects pr on pr.id = p.project_id
    join ml.model_versions v on v.id = p.model_version_id
    join ml.models m on m.id = v.model_id
    left join ml.feedback f on f.tenant_id = p.tenant_id and f.prediction_id = coalesce(p.shadow_of, p.id);

comment on view ml.prediction_outcomes is
    'Logged predictions (live and shadow arms) with their model version and the realized outcomes recorded for them';

------------------------------------------------------------------------------------------------
-- Grants
------------------------------------------------------------------------------------------------

grant select on ml.prediction_outcomes to authenticated, service_role;
grant execute on function
    ml.record_feedback(uuid, jsonb, text),
    ml.record_feedback_bulk(jsonb)
to authenticated, service_role;
grant execute on function
    ml_private.feedback_label_problem(text, jsonb, jsonb),
    ml_private.feedback_source_problem(text),
    ml_private.feedback_target(uuid, uuid),
    ml_private.max_feedback_batch(),
    ml_private.prediction_id(timestamptz),
    ml_private.prediction_id_time(uuid)
to service_role;
