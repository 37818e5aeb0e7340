-- pgmlops: scoring — installing compiled models, recording each version's scoring path
--
-- At registration the worker that trained a version either installs its compiled function
-- (ml.install_compiled_model, from a structured description; sql/scoring/compiler.sql writes the
-- SQL) or records why it cannot be compiled (ml.record_worker_scoring). ml.model_versions keeps
-- the outcome: scoring_path 'compiled' (scoring: the function, its arguments, its size) or
-- 'worker' (scoring: the reason). A compiled function lives as long as its version: deleting the
-- version (or its model, or its tenant) drops it.

------------------------------------------------------------------------------------------------
-- Worker side: installing a compiled model
------------------------------------------------------------------------------------------------

-- ml.install_compiled_model(model_version_id uuid, description jsonb) returns jsonb
-- Writes the compiled function of one of the acting tenant's versions from `description` (the
-- structured pipeline pgmlops.scoring.describe builds; format in
-- ml_private.compiled_model_sql), creates it as ml_models.mv_<id as 32 hex>(num float8[],
-- cat text[]) returns jsonb (language sql, immutable, parallel safe, executable by no client
-- role) and records scoring_path 'compiled' with scoring {function, arguments (where each raw
-- input goes in num / cat), representation, trees, nodes, max_depth, weights, sql_bytes,
-- generate_ms, create_ms, compiled_at}. The SQL is written here from typed values only: nothing
-- in the description is executed as SQL (docs/scoring.md). Audits model_version.compiled.
-- Returns {model_version_id, scoring_path} and the scoring record.
-- Raises 22023 a malformed description (naming the field) or one that does not match the
-- version (task, inputs); 54000 a description over 128 MB or a model beyond the compiler's
-- limits; 55000 a version already compiled; P0002 no such version in the acting tenant; 42501
-- not a service caller. Callers: service_role (workers, in the job's transaction).
create or replace function ml.install_compiled_model(model_version_id uuid, description jsonb) returns jsonb
language plpgsql volatile security definer
set search_path = ''
set extra_float_digits = 1
as $$
#variable_conflict use_variable
declare
    v_tenant    uuid;
    v_version   ml.model_versions;
    v_task      text;
    v_inputs    jsonb;
    v_sql       jsonb;
    v_name      text;
    v_start     timestamptz := clock_timestamp();
    v_generated timestamptz;
    v_scoring   jsonb;
begin
    perform ml_private.assert_service('ml.install_compiled_model');
    v_tenant := ml_private.acting_tenant_id(true);
    select * into v_version from ml.model_versions v
    where v.id = model_version_id and v.tenant_id = v_tenant for update;
    if v_version.id is null then
        raise exception 'model version % does not exist', coalesce(model_version_id::text, 'NULL') using errcode = 'P0002';
    end if;
    if v_version.scoring_path = 'compiled' then
        raise exception 'model version % is already compiled (%)', v_version.id, v_version.scoring ->> 'function'
            using errcode = '55000';
    end if;
    if description is null or jsonb_typeof(description) <> 'object' then
        raise exception 'description: must be a JSON object' using errcode = '22023';
    end if;
    if pg_column_size(description) > 134217728 then
        raise exception 'description: at most 128 MB, got % bytes', pg_column_size(description) using errcode = '54000';
    end if;
    select p.task into v_task from ml.models m join ml.projects p on p.id = m.project_id where m.id = v_version.model_id;

    v_inputs := ml_private.compiled_model_inputs(v_version.signature, v_version.dataset_id);
    v_sql := ml_private.compiled_model_sql(description, v_inputs, v_task);
    v_generated := clock_timestamp();
    v_name := ml_private.compiled_model_name(v_version.id);
    -- A SQL-standard body: parsed here, with this function's empty search_path, and stored
    -- resolved, so running it never looks a name up.
    execute format('create function ml_models.%I(num float8[], cat text[]) returns jsonb '
                   'language sql immutable parallel safe return %s', v_name, v_sql ->> 'expression');
    execute format('revoke all on function ml_models.%I(float8[], text[]) from public', v_name);
    perform ml_private.create_serving_function(v_version.id);

    v_scoring := jsonb_build_object(
        'function', format('ml_models.%I', v_name), 'arguments', v_inputs -> 'arguments',
        'representation', v_sql ->> 'representation', 'estimator', description ->> 'estimator_name',
        'trees', (v_sql ->> 'trees')::int, 'nodes', (v_sql ->> 'nodes')::bigint, 'max_depth', (v_sql ->> 'max_depth')::int,
        'weights', (v_sql ->> 'weights')::bigint, 'sql_bytes', octet_length(v_sql ->> 'expression'),
        'generate_ms', round((extract(epoch from v_generated - v_start) * 1000)::numeric, 1),
        'create_ms', round((extract(epoch from clock_timestamp() - v_generated) * 1000)::numeric, 1),
        'compiled_at', now());
    update ml.model_versions v set scoring_path = 'compiled', scoring = v_scoring where v.id = v_version.id;
    perform ml_private.audit(v_tenant, 'model_version.compiled', 'model_version', v_version.id, null,
        jsonb_build_object('model_version_id', v_version.id, 'version', v_version.version, 'function', v_scoring -> 'function',
                           'representation', v_scoring -> 'representation', 'sql_bytes', v_scoring -> 'sql_bytes'));
    return jsonb_build_object('model_version_id', v_version.id, 'scoring_path', 'compiled') || v_scoring;
end
$$;

-- ml.record_worker_scoring(model_version_id uuid, reason text) returns jsonb
-- Records that one of the acting tenant's versions is scored by workers, and why it cannot be
-- compiled (the compiler's reason, e.g. 'k-nearest neighbours search the training rows at
-- every prediction: scored by workers'): scoring_path 'worker', scoring {reason,
-- recorded_at}. Returns {model_version_id, scoring_path, reason}.
-- Raises 22023 an empty reason (at most 2000 characters); 55000 a compiled version (its
-- function stays); P0002 no such version in the acting tenant; 42501 not a service caller.
-- Callers: service_role (workers, in the job's transaction).
create or replace function ml.record_worker_scoring(model_version_id uuid, reason text) returns jsonb
language plpgsql volatile security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_tenant  uuid;
    v_version ml.model_versions;
begin
    perform ml_private.assert_service('ml.record_worker_scoring');
    v_tenant := ml_private.acting_tenant_id(true);
    if reason is null or btrim(reason) = '' or length(reason) > 2000 then
        raise exception 'reason: must say why the version cannot be compiled (1 to 2000 characters)' using errcode = '22023';
    end if;
    select * into v_version from ml.model_versions v
    where v.id = model_version_id and v.tenant_id = v_tenant for update;
    if v_version.id is null then
        raise exception 'model version % does not exist', coalesce(model_version_id::text, 'NULL') using errcode = 'P0002';
    end if;
    if v_version.scoring_path = 'compiled' then
        raise exception 'model version % is compiled (%): it is not scored by workers', v_version.id, v_version.scoring ->> 'function'
            using errcode = '55000';
    end if;
    update ml.model_versions v set scoring_path = 'worker', scoring = jsonb_build_object('reason', reason, 'recorded_at', now())
    where v.id = v_version.id;
    return jsonb_build_object('model_version_id', v_version.id, 'scoring_path', 'worker', 'reason', reason);
end
$$;

------------------------------------------------------------------------------------------------
-- Arguments: a compiled function's num and cat from raw values
------------------------------------------------------------------------------------------------

-- ml_private.compiled_arguments(p_arguments jsonb, p_features jsonb, out num float8[], out cat text[])
-- The arguments of a compiled function (p_arguments: its scoring.arguments) for one object of
-- raw values by column name, coerced as the pipeline's InputFrame coerces a DataFrame: int and
-- float as float8 (NaN is missing); timestamps (ISO text; no offset: UTC) as seconds since the
-- epoch; vector(n) from a JSON array of n numbers (anything else: all missing); bool from a JSON
-- boolean, or the text true/t/1/yes or false/f/0/no (else missing), as 'true' / 'false'; text
-- and categories as text. An absent or null value is missing (NULL). Lenient by design: callers
-- that must refuse missing, extra or mistyped features (ml.predict) check them first.
-- Raises 22P02 (and friends) for a value that does not parse as its type.
-- Callers: SQL functions that score (ml.predict), tests.
create or replace function ml_private.compiled_arguments(p_arguments jsonb, p_features jsonb, out num float8[], out cat text[])
language plpgsql stable
set search_path = ''
set timezone = 'UTC'
as $$
declare
    v_a     jsonb;
    v_v     jsonb;
    v_i     int;
    v_len   int;
    v_text  text;
begin
    num := '{}';
    cat := '{}';
    for v_a in select value from jsonb_array_elements(p_arguments) loop
        v_v := p_features -> (v_a ->> 'name');
        if v_v is not null and jsonb_typeof(v_v) = 'null' then
            v_v := null;
        end if;
        if v_a ->> 'array' = 'num' then
            v_i := (v_a ->> 'index')::int;
            v_len := coalesce((v_a ->> 'length')::int, 1);
            if v_a ? 'length' then
                for v_j in 0 .. v_len - 1 loop
                    num[v_i + v_j] := case when jsonb_typeof(v_v) = 'array' and jsonb_array_length(v_v) = v_len
                                           then nullif((v_v ->> v_j)::float8, 'NaN') end;
                end loop;
            elsif v_a ->> 'dtype' = 'timestamp' then
                num[v_i] := extract(epoch from (v_v #>> '{}')::timestamptz)::float8;
            else
                num[v_i] := nullif((v_v #>> '{}')::float8, 'NaN');
            end if;
        else
            v_i := (v_a ->> 'index')::int;
            if v_a ->> 'dtype' = 'bool' and v_v is not null then
                v_text := lower(btrim(v_v #>> '{}'));
                cat[v_i] := case when jsonb_typeof(v_v) = 'boolean' then v_v #>> '{}'
                                 when jsonb_typeof(v_v) = 'number' then case when v_v::numeric <> 0 then 'true' else 'false' end
                                 when v_text in ('true', 't', '1', 'yes') then 'true'
                                 when v_text in ('false', 'f', '0', 'no') then 'false' end;
            else
                cat[v_i] := v_v #>> '{}';
            end if;
        end if;
    end loop;
end
$$;

-- ml_private.serving_function_name(p_model_version uuid) returns text
-- The name (in ml_models) of a version's serving function: its compiled function's name plus
-- '_serve'. Made from the version's id only (see ml_private.compiled_function).
-- A SQL-standard body (resolved at creation) and no SET clause, so ml.predict inlines it.
create or replace function ml_private.serving_function_name(p_model_version uuid) returns text
language sql immutable parallel safe
return ml_private.compiled_model_name(p_model_version) || '_serve';

-- ml_private.create_serving_function(p_model_version uuid) returns void
-- Creates, next to a version's compiled function, its serving function
-- ml_models.mv_<id as 32 hex>_serve(num float8[], cat text[]) returns jsonb: PL/pgSQL whose one
-- statement returns the compiled function's result for the same arguments. Why: ml.predict
-- scores one row per call, and a statement that calls the compiled function directly plans the
-- whole model (25 ms for a 100-tree depth-6 gradient boosting model; dynamic SQL in PL/pgSQL is
-- planned at every execution). PL/pgSQL keeps the plan of a function's simple expression for
-- the session, so through this function a call pays only the expression's setup, once per
-- transaction (2 ms for that model; docs/serving.md has the measurements). The name comes from
-- the version's id and the body calls the compiled function by that name: nothing in it is
-- data. Executable by no client role. Does nothing when the version has no compiled function or
-- already has its serving function. Callers: ml.install_compiled_model, this file's backfill.
create or replace function ml_private.create_serving_function(p_model_version uuid) returns void
language plpgsql volatile
set search_path = ''
as $$
declare
    v_name  text := ml_private.compiled_model_name(p_model_version);
    v_serve text := ml_private.serving_function_name(p_model_version);
begin
    if ml_private.compiled_function(p_model_version) is null
       or to_regprocedure(format('ml_models.%I(float8[], text[])', v_serve)) is not null then
        return;
    end if;
    execute format('create function ml_models.%I(num float8[], cat text[]) returns jsonb '
                   'language plpgsql immutable parallel safe as %L',
                   v_serve, format('begin return ml_models.%I(num, cat); end', v_name));
    execute format('revoke all on function ml_models.%I(float8[], text[]) from public', v_serve);
end
$$;

-- ml_private.compiled_function(p_model_version uuid) returns regprocedure
-- A version's compiled function, named from the version's id (NULL when it has none). Callers
-- that execute it (ml.predict) take its name from here, never from ml.model_versions.scoring:
-- service_role may write that table, so a name read from it is data a client wrote.
-- Callers: SQL functions that score (ml.predict), tests.
create or replace function ml_private.compiled_function(p_model_version uuid) returns regprocedure
language sql stable
set search_path = ''
as $$
    select to_regprocedure(format('ml_models.%I(float8[], text[])', ml_private.compiled_model_name(p_model_version)))
$$;

------------------------------------------------------------------------------------------------
-- A compiled function goes with its version
------------------------------------------------------------------------------------------------

-- ml_private.drop_compiled_model() returns trigger
-- After a version is deleted (with its model or its tenant too), drops its compiled function.
create or replace function ml_private.drop_compiled_model() returns trigger
language plpgsql security definer
set search_path = ''
as $$
begin
    if old.scoring_path = 'compiled' then
        execute format('drop function if exists ml_models.%I(float8[], text[])', ml_private.serving_function_name(old.id));
        execute format('drop function if exists ml_models.%I(float8[], text[])', ml_private.compiled_model_name(old.id));
    end if;
    return null;
end
$$;

drop trigger if exists model_versions_drop_compiled on ml.model_versions;
create trigger model_versions_drop_compiled after delete on ml.model_versions
    for each row execute function ml_private.drop_compiled_model();

-- Versions compiled before serving functions existed get theirs when this file is applied.
do $$
declare
    v_id uuid;
begin
    for v_id in select v.id from ml.model_versions v where v.scoring_path = 'compiled' loop
        perform ml_private.create_serving_function(v_id);
    end loop;
end
$$;

------------------------------------------------------------------------------------------------
-- Grants
------------------------------------------------------------------------------------------------

grant execute on function
    ml.install_compiled_model(uuid, jsonb),
    ml.record_worker_scoring(uuid, text)
to service_role;
