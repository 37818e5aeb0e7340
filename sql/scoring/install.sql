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
    perform ml_private.create_prediction_function(v_version.id);  -- reads the arguments just recorded
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

-- ml_private.compiled_epoch(p_value text) returns float8
-- Seconds since the epoch of an ISO 8601 timestamp (no offset: UTC), as
-- ml_private.compiled_arguments converts a timestamp input. PL/pgSQL with its own time zone, so
-- that the per-version prediction functions (ml_private.create_prediction_function) convert
-- timestamps exactly as compiled_arguments does without pinning the time zone for the rest of
-- their work. Raises 22007 (and friends) for a value that does not parse.
-- Callers: the per-version prediction functions.
create or replace function ml_private.compiled_epoch(p_value text) returns float8
language plpgsql stable strict parallel safe
set search_path = ''
set timezone = 'UTC'
as $$
begin
    return extract(epoch from p_value::timestamptz)::float8;
end
$$;

-- ml_private.prediction_function_name(p_model_version uuid) returns text
-- The name (in ml_models) of a version's prediction function: its compiled function's name plus
-- '_predict'. Made from the version's id only. Inlined, as serving_function_name.
create or replace function ml_private.prediction_function_name(p_model_version uuid) returns text
language sql immutable parallel safe
return ml_private.compiled_model_name(p_model_version) || '_predict';

-- ml_private.create_prediction_function(p_model_version uuid) returns void
-- Creates (or replaces) a compiled version's prediction function
-- ml_models.mv_<id as 32 hex>_predict(p_tenant uuid, p_entity_key text, p_features jsonb)
-- returns jsonb, what ml.predict runs for one arm: {"features": what the model received,
-- "result": the compiled function's result}. With p_features (checked by the caller,
-- ml_private.check_prediction_features) it converts them; with p_features NULL it reads the
-- entity's features from the online store, as ml_private.online_prediction_features does (same
-- checks, same errors, same JSON), when the version's online lookup exists
-- (ml_private.online_lookups), and returns NULL when it does not (the caller then makes it with
-- online_prediction_features, which calls this function again). The conversion to the compiled
-- function's num and cat arrays is ml_private.compiled_arguments' written out for the version's
-- inputs, one expression per array. Why: ml.predict spent more on its generic steps (the
-- lookup query as dynamic SQL, planned at every call; compiled_arguments' loop over JSON) than
-- on the model; static SQL in PL/pgSQL is planned once per session (docs/serving.md).
-- The body holds only the version's input names and the lookup's names as quoted literals,
-- integer positions, and the lookup's query (written by ml_private.online_lookup from
-- identifiers and the online table's name); the compiled function is called by the name made
-- from the version's id. Executable by no client role. Does nothing when the version has no
-- compiled function or no recorded arguments. Callers: ml.install_compiled_model (once the
-- scoring record is written), ml_private.online_prediction_features, this file's backfill.
create or replace function ml_private.create_prediction_function(p_model_version uuid) returns void
language plpgsql volatile
set search_path = ''
as $$
declare
    v_name      text := ml_private.compiled_model_name(p_model_version);
    v_arguments jsonb;
    v_lookup    jsonb;
    v_num       text[] := '{}';
    v_cat       text[] := '{}';
    v_a         jsonb;
    v_v         text;
    v_i         int;
    v_len       int;
    v_read      text := '';
    v_group     jsonb;
    v_body      text;
begin
    if ml_private.compiled_function(p_model_version) is null then
        return;
    end if;
    select v.scoring -> 'arguments' into v_arguments from ml.model_versions v where v.id = p_model_version;
    select l.lookup into v_lookup from ml_private.online_lookups l where l.model_version_id = p_model_version;
    if jsonb_typeof(v_arguments) is distinct from 'array' then
        return;
    end if;
    -- num and cat, position by position (NULL where no input goes), as compiled_arguments fills them.
    for v_a in select value from jsonb_array_elements(v_arguments) loop
        v_v := format('(p_features -> %L)', v_a ->> 'name');
        v_i := (v_a ->> 'index')::int;
        if v_i is null or v_i < 1 or v_i > 1000000 or coalesce((v_a ->> 'length')::int, 1) not between 1 and 1000000 then
            return;  -- not a layout compiled_model_inputs writes: the generic path (score_arm) serves it
        end if;
        if v_a ->> 'array' = 'num' then
            v_len := coalesce((v_a ->> 'length')::int, 1);
            if v_a ? 'length' then
                for v_j in 0 .. v_len - 1 loop
                    v_num[v_i + v_j] := format('case when jsonb_typeof(%1$s) = ''array'' and jsonb_array_length(%1$s) = %2$s '
                                               'then nullif((%1$s ->> %3$s)::float8, ''NaN'') end', v_v, v_len, v_j);
                end loop;
            elsif v_a ->> 'dtype' = 'timestamp' then
                v_num[v_i] := format('ml_private.compiled_epoch(%s #>> ''{}'')', v_v);
            else
                v_num[v_i] := format('nullif((%s #>> ''{}'')::float8, ''NaN'')', v_v);
            end if;
        elsif v_a ->> 'dtype' = 'bool' then
            v_cat[v_i] := format('case jsonb_typeof(%1$s) when ''boolean'' then %1$s #>> ''{}'' '
                                 'when ''number'' then case when (%1$s)::numeric <> 0 then ''true'' else ''false'' end '
                                 'else case when lower(btrim(%1$s #>> ''{}'')) in (''true'', ''t'', ''1'', ''yes'') then ''true'' '
                                 'when lower(btrim(%1$s #>> ''{}'')) in (''false'', ''f'', ''0'', ''no'') then ''false'' end end', v_v);
        else
            v_cat[v_i] := format('%s #>> ''{}''', v_v);
        end if;
    end loop;

    -- The online read: online_prediction_features' loop, unrolled over the lookup's groups.
    if v_lookup is not null then
        for v_group in select value from jsonb_array_elements(v_lookup -> 'groups') loop
            v_read := v_read || format($f$
        select true, fg.ttl into v_found, v_ttl from ml.feature_groups fg where fg.id = %1$L::uuid;
        if v_found is null then
            raise exception 'feature group %%@%% (which model %% was trained on) does not exist any more', %2$L, %3$L, p_model
                using errcode = 'P0002', hint = 'Pass the features: ml.predict(project, features => ''{...}'').';
        end if;
        %4$s into v_row, v_time;
        if v_row is null then
            raise exception 'entity %% is not in the online store of feature group %%@%%', quote_literal(p_entity_key), %2$L, %3$L
                using errcode = 'P0002', hint = 'Ingest its features (ml.ingest), or pass the features.';
        end if;
        if v_ttl is not null and v_time < now() - v_ttl then
            raise exception 'entity %%: its values in feature group %%@%% are from %%, older than the group''s TTL (%%)',
                quote_literal(p_entity_key), %2$L, %3$L, v_time, v_ttl
                using errcode = 'P0002', hint = 'Ingest fresh features (ml.ingest), or pass the features.';
        end if;
        p_features := p_features || v_row;$f$,
                v_group ->> 'group_id', v_group ->> 'name', v_group ->> 'version',
                -- $1 and $2 of the lookup's query are this function's first two parameters.
                v_group ->> 'query');
        end loop;
        if jsonb_array_length(v_lookup -> 'event_time') > 0 then
            v_read := v_read || format(E'\n        p_features := p_features || jsonb_build_object(%s);',
                (select string_agg(format('%L, now()', e), ', ') from jsonb_array_elements_text(v_lookup -> 'event_time') e));
        end if;
        v_read := E'\n        p_features := ''{}'';' || v_read;
    else
        v_read := E'\n        return null;  -- no online lookup yet: ml_private.online_prediction_features makes it';
    end if;

    v_body := format($f$
declare
    v_found boolean;
    v_ttl   interval;
    v_row   jsonb;
    v_time  timestamptz;
    v_num   float8[];
    v_cat   text[];
begin
    if p_features is null then%1$s
    end if;
    v_num := array[%2$s]::float8[];
    v_cat := array[%3$s]::text[];
    return jsonb_build_object('features', p_features, 'result', ml_models.%4$I(v_num, v_cat));
end
$f$,
        v_read,
        (select coalesce(string_agg(coalesce(v_num[i], 'null'), ', ' order by i), '') from generate_series(1, array_upper(v_num, 1)) i),
        (select coalesce(string_agg(coalesce(v_cat[i], 'null'), ', ' order by i), '') from generate_series(1, array_upper(v_cat, 1)) i),
        v_name);
    execute format('create or replace function ml_models.%I(p_tenant uuid, p_entity_key text, p_features jsonb, p_model text) '
                   'returns jsonb language plpgsql volatile as %L',
                   v_name || '_predict', v_body);
    execute format('revoke all on function ml_models.%I(uuid, text, jsonb, text) from public', v_name || '_predict');
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
        execute format('drop function if exists ml_models.%I(uuid, text, jsonb, text)', ml_private.prediction_function_name(old.id));
        execute format('drop function if exists ml_models.%I(float8[], text[])', ml_private.serving_function_name(old.id));
        execute format('drop function if exists ml_models.%I(float8[], text[])', ml_private.compiled_model_name(old.id));
    end if;
    return null;
end
$$;

drop trigger if exists model_versions_drop_compiled on ml.model_versions;
create trigger model_versions_drop_compiled after delete on ml.model_versions
    for each row execute function ml_private.drop_compiled_model();

-- Versions compiled before serving (and prediction) functions existed get theirs when this file
-- is applied; prediction functions are written again (their generator may have changed).
do $$
declare
    v_id uuid;
begin
    for v_id in select v.id from ml.model_versions v where v.scoring_path = 'compiled' loop
        perform ml_private.create_serving_function(v_id);
        perform ml_private.create_prediction_function(v_id);
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
