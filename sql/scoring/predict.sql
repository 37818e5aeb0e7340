-- pgmlops: scoring — online predictions and the prediction log (docs/serving.md)
--
-- ml.predict scores one row with the model version the project's active deployment routes it to
-- (ml_private.deployment_route, sql/scoring/deployments.sql), from features the caller passes or
-- from the online store, and logs the call in ml.predictions. Shadow arms are scored and logged
-- too, never returned. Each arm runs the version's prediction function
-- (ml_private.create_prediction_function, install.sql): static PL/pgSQL that reads the online
-- store, converts the features and evaluates the compiled SQL function (compiler.sql), all
-- planned once per session: a call pays for evaluating the model, not for planning it.

------------------------------------------------------------------------------------------------
-- Helpers: features, results
------------------------------------------------------------------------------------------------

-- ml_private.check_prediction_features(p_arguments jsonb, p_dataset uuid, p_features jsonb,
--                                      p_model text, p_allow_extra boolean) returns jsonb
-- Checks the features a caller passed against a compiled version's raw inputs (p_arguments:
-- its scoring.arguments [{name, dtype}]) and returns them, with the training set's event_time
-- (when the model reads it) set to now() if absent. Every input must be present (JSON null is a
-- missing value, which the model handles as it was trained to); no other key may be (unless
-- p_allow_extra: a shadow arm ignores what only the live arm takes); each value must have its
-- input's type: float a number, int an integral number, timestamp an ISO 8601 string, bool a
-- boolean, text and category a string, vector(n) an array of n numbers. p_model names the
-- version in messages ('churn version 3').
-- Raises 22023 naming the feature and the rule. Callers: ml.predict (through score_arm).
create or replace function ml_private.check_prediction_features(p_arguments jsonb, p_dataset uuid, p_features jsonb,
                                                                 p_model text, p_allow_extra boolean)
returns jsonb
language plpgsql stable
-- no SET clause: called only by the owner's functions with search_path '' (see ml.predict)
as $$
declare
    v_features jsonb := p_features;
    v_a        jsonb;
    v_v        jsonb;
    v_name     text;
    v_dtype    text;
    v_type     text;
    v_len      int;
    v_extra    text;
    v_rule     text;
begin
    if p_features is null or jsonb_typeof(p_features) <> 'object' then
        raise exception 'features: must be a JSON object of feature values by name, got %', coalesce(jsonb_typeof(p_features), 'NULL')
            using errcode = '22023';
    end if;
    if not p_allow_extra then
        select k into v_extra from jsonb_object_keys(p_features) k
        where not exists (select 1 from jsonb_array_elements(p_arguments) a where a ->> 'name' = k)
        order by k limit 1;
        if v_extra is not null then
            raise exception 'features: unknown feature % (model % takes %)', quote_ident(v_extra), p_model,
                (select string_agg(format('%s %s', quote_ident(a ->> 'name'), a ->> 'dtype'), ', ') from jsonb_array_elements(p_arguments) a)
                using errcode = '22023';
        end if;
    end if;
    for v_a in select value from jsonb_array_elements(p_arguments) loop
        v_name := v_a ->> 'name';
        v_dtype := v_a ->> 'dtype';
        v_v := p_features -> v_name;
        if v_v is null then
            -- The training set's event time is the time of the prediction when not given.
            if v_dtype = 'timestamp' and exists (
                    select 1 from ml.datasets d, jsonb_array_elements(d.columns) c
                    where d.id = p_dataset and c ->> 'name' = v_name and c ->> 'role' = 'event_time') then
                v_features := v_features || jsonb_build_object(v_name, now());
                continue;
            end if;
            raise exception 'features: missing feature % (expected %; pass null for a missing value)', quote_ident(v_name), v_dtype
                using errcode = '22023';
        end if;
        v_type := jsonb_typeof(v_v);
        continue when v_type = 'null';
        v_rule := null;
        if v_dtype = 'float' then
            if v_type <> 'number' then v_rule := 'a number'; end if;
        elsif v_dtype = 'int' then
            if v_type <> 'number' or v_v::numeric <> trunc(v_v::numeric) then v_rule := 'an integer'; end if;
        elsif v_dtype in ('text', 'category') then
            if v_type <> 'string' then v_rule := 'a string'; end if;
        elsif v_dtype = 'bool' then
            if v_type <> 'boolean' then v_rule := 'true or false'; end if;
        elsif v_dtype = 'timestamp' then
            if v_type <> 'string' then
                v_rule := 'an ISO 8601 timestamp string';
            else
                begin
                    perform (v_v #>> '{}')::timestamptz;
                exception when others then
                    v_rule := 'an ISO 8601 timestamp string';
                end;
            end if;
        elsif v_dtype like 'vector(%)' then
            v_len := substring(v_dtype from '^vector\(([0-9]+)\)$')::int;
            if v_type <> 'array' or jsonb_array_length(v_v) <> v_len
               or exists (select 1 from jsonb_array_elements(v_v) e where jsonb_typeof(e) <> 'number') then
                v_rule := format('an array of %s numbers', v_len);
            end if;
        end if;
        if v_rule is not null then
            raise exception 'features: % must be % (dtype %), got %', quote_ident(v_name), v_rule, v_dtype, left(v_v::text, 100)
                using errcode = '22023';
        end if;
    end loop;
    return v_features;
end
$$;

-- ml_private.online_lookup(p_tenant uuid, p_arguments jsonb, p_dataset uuid, p_model text) returns jsonb
-- How a compiled version (raw inputs p_arguments, training set p_dataset) reads one entity's
-- inputs from the online store: {"groups": [{"group_id", "name", "version", "query"}],
-- "event_time": [names]}. Each input that is a feature of the training set comes from the online
-- table of the feature group version the training set read it from (ml.feature_groups.
-- online_table: the entity's newest row); `query` reads them as one JSON object by input name,
-- with the row's event_time ($1 tenant, $2 entity key); the training set's event_time is the
-- prediction's time. The text holds the table's name and quoted identifiers only.
-- Raises 0A000 a version not trained on a training set of the feature store, one whose groups
-- join on several keys, one taking window aggregates (the online store keeps none: the caller
-- computes them and passes features) or another input that is no feature; P0002 a feature
-- group version that no longer exists. Callers: ml_private.online_prediction_features.
create or replace function ml_private.online_lookup(p_tenant uuid, p_arguments jsonb, p_dataset uuid, p_model text)
returns jsonb
language plpgsql stable
set search_path = ''
as $$
declare
    v_ds      ml.datasets;
    v_missing text;
    v_group   record;
    v_fg      ml.feature_groups;
    v_groups  jsonb := '[]';
begin
    select * into v_ds from ml.datasets d where d.id = p_dataset and d.tenant_id = p_tenant;
    if v_ds.id is null or jsonb_array_length(v_ds.source_groups) = 0 then
        raise exception 'model % was not trained on a training set of the feature store: its features cannot be read by entity key', p_model
            using errcode = '0A000', hint = 'Pass the features: ml.predict(project, features => ''{...}'').';
    end if;
    if cardinality(v_ds.key_columns) > 1 then
        raise exception 'model % reads feature groups joined on several keys (%): one entity_key cannot name them',
            p_model, array_to_string(v_ds.key_columns, ', ')
            using errcode = '0A000', hint = 'Pass the features: ml.predict(project, features => ''{...}'').';
    end if;
    -- Every input must be a feature or the event time; window aggregates read an events table.
    select coalesce(c.c ->> 'role', 'none') || ':' || (a ->> 'name') into v_missing
    from jsonb_array_elements(p_arguments) a
    left join lateral (select c from jsonb_array_elements(v_ds.columns) c where c ->> 'name' = a ->> 'name' limit 1) c on true
    where coalesce(c.c ->> 'role', 'none') not in ('feature', 'event_time')
    limit 1;
    if v_missing like 'aggregate:%' then
        raise exception 'model % takes window aggregate %, which the online store does not keep', p_model,
            quote_ident(substr(v_missing, 11))
            using errcode = '0A000', hint = 'Compute the aggregates and pass every feature: ml.predict(project, features => ''{...}'').';
    elsif v_missing is not null then
        raise exception 'model % takes input %, which is not a feature of its training set', p_model,
            quote_ident(substr(v_missing, position(':' in v_missing) + 1))
            using errcode = '0A000', hint = 'Pass the features: ml.predict(project, features => ''{...}'').';
    end if;

    for v_group in
        select c ->> 'group' as name, (c ->> 'version')::int as version,
               -- jsonb_build_object takes at most 100 arguments: 50 pairs per call, joined by ||
               (select string_agg(format('jsonb_build_object(%s)', p.pairs), ' || ')
                from (select string_agg(format('%L, %s', x.e ->> 'arg',
                                               case when x.e ->> 'dtype' like 'vector(%' then format('translate((g.%I)::text, ''{}'', ''[]'')::jsonb', x.e ->> 'feature')
                                                    else format('g.%I', x.e ->> 'feature') end), ', ') as pairs
                      from jsonb_array_elements(jsonb_agg(jsonb_build_object('arg', a ->> 'name', 'feature', c ->> 'feature', 'dtype', a ->> 'dtype')))
                           with ordinality x (e, n)
                      group by (x.n - 1) / 50) p) as expression
        from jsonb_array_elements(p_arguments) a
        join jsonb_array_elements(v_ds.columns) c on c ->> 'name' = a ->> 'name' and c ->> 'role' = 'feature'
        group by 1, 2
        order by 1, 2
    loop
        select * into v_fg from ml.feature_groups fg
        where fg.tenant_id = p_tenant and fg.name = v_group.name and fg.version = v_group.version;
        if v_fg.id is null then
            raise exception 'feature group %@% (which model % was trained on) does not exist any more', v_group.name, v_group.version, p_model
                using errcode = 'P0002', hint = 'Pass the features: ml.predict(project, features => ''{...}'').';
        end if;
        v_groups := v_groups || jsonb_build_array(jsonb_build_object(
            'group_id', v_fg.id, 'name', v_fg.name, 'version', v_fg.version,
            'query', format('select %s, g.event_time from %s g where g.tenant_id = $1 and g.entity_key = $2',
                            v_group.expression, v_fg.online_table)));
    end loop;
    return jsonb_build_object('groups', v_groups, 'event_time', (
        select coalesce(jsonb_agg(c ->> 'name'), '[]') from jsonb_array_elements(v_ds.columns) c
        where c ->> 'role' = 'event_time' and exists (select 1 from jsonb_array_elements(p_arguments) a where a ->> 'name' = c ->> 'name')));
end
$$;

-- ml_private.online_prediction_features(p_tenant uuid, p_version uuid, p_arguments jsonb,
--                                       p_dataset uuid, p_entity_key text, p_model text) returns jsonb
-- A compiled version's raw inputs for one entity, read from the online store by its lookup
-- (ml_private.online_lookup, kept in ml_private.online_lookups from the version's first such
-- call): one primary-key probe per feature group version, the event time now(). The entity must
-- be in every one of those groups with values within the group's TTL; a partly present entity
-- is refused rather than scored with missing values the caller did not choose (pass features to
-- score it anyway).
-- Writing the lookup also writes the version's prediction function again, with the same read
-- as static SQL (ml_private.create_prediction_function): later calls read there.
-- Raises P0002 an entity absent from a group (or whose values there are older than its TTL), a
-- feature group version that no longer exists; ml_private.online_lookup's 0A000.
-- Callers: ml.predict (through score_arm: a version's first call by entity key, or a version
-- without a prediction function).
create or replace function ml_private.online_prediction_features(p_tenant uuid, p_version uuid, p_arguments jsonb, p_dataset uuid,
                                                                  p_entity_key text, p_model text)
returns jsonb
language plpgsql volatile  -- writes the version's lookup on its first call
set search_path = ''
as $$
declare
    v_lookup   jsonb;
    v_features jsonb := '{}';
    v_group    jsonb;
    v_ttl      interval;
    v_found    boolean;
    v_row      jsonb;
    v_time     timestamptz;
begin
    select l.lookup into v_lookup from ml_private.online_lookups l where l.model_version_id = p_version;
    if v_lookup is null then
        v_lookup := ml_private.online_lookup(p_tenant, p_arguments, p_dataset, p_model);
        insert into ml_private.online_lookups (model_version_id, lookup) values (p_version, v_lookup) on conflict do nothing;
        if found then
            -- The version's prediction function reads the store itself from now on.
            perform ml_private.create_prediction_function(p_version);
        end if;
    end if;
    for v_group in select value from jsonb_array_elements(v_lookup -> 'groups') loop
        select true, fg.ttl into v_found, v_ttl from ml.feature_groups fg where fg.id = (v_group ->> 'group_id')::uuid;
        if v_found is null then
            raise exception 'feature group %@% (which model % was trained on) does not exist any more',
                v_group ->> 'name', v_group ->> 'version', p_model
                using errcode = 'P0002', hint = 'Pass the features: ml.predict(project, features => ''{...}'').';
        end if;
        execute v_group ->> 'query' into v_row, v_time using p_tenant, p_entity_key;
        if v_row is null then
            raise exception 'entity % is not in the online store of feature group %@%', quote_literal(p_entity_key),
                v_group ->> 'name', v_group ->> 'version'
                using errcode = 'P0002', hint = 'Ingest its features (ml.ingest), or pass the features.';
        end if;
        if v_ttl is not null and v_time < now() - v_ttl then
            raise exception 'entity %: its values in feature group %@% are from %, older than the group''s TTL (%)',
                quote_literal(p_entity_key), v_group ->> 'name', v_group ->> 'version', v_time, v_ttl
                using errcode = 'P0002', hint = 'Ingest fresh features (ml.ingest), or pass the features.';
        end if;
        v_features := v_features || v_row;
    end loop;
    select v_features || coalesce(jsonb_object_agg(e, now()), '{}') into v_features
    from jsonb_array_elements_text(v_lookup -> 'event_time') e;
    return v_features;
end
$$;

-- ml_private.prediction_result(p_task text, p_result jsonb, p_classes jsonb) returns jsonb
-- What ml.predict returns of a compiled function's result (docs/scoring.md has its shapes):
--   classification     {"prediction": label, "score", "probabilities": {label: p}}: score is the
--                      positive (second) class's probability with two classes, the predicted
--                      class's with more; without predict_proba, a binary model's decision
--                      function and no probabilities. p_classes (the signature's classes, in the
--                      estimator's order) names the probabilities; without them they stay a list.
--   regression         {"prediction": y, "score": y}
--   anomaly_detection  {"prediction": -1 | 1, "score": anomaly score (higher: more anomalous),
--                       "is_anomaly": bool}
-- Callers: ml.predict (through score_arm).
-- PL/pgSQL, not SQL: a SQL function with subqueries is not inlined, and PostgreSQL 15 plans a
-- non-inlined SQL function's body again in every transaction (0.27 ms a call, measured);
-- PL/pgSQL keeps its plans for the session.
create or replace function ml_private.prediction_result(p_task text, p_result jsonb, p_classes jsonb) returns jsonb
language plpgsql immutable parallel safe
-- no SET clause: called only by the owner's functions with search_path '' (see ml.predict)
as $$
declare
    v_probabilities jsonb := p_result -> 'probabilities';
    v_k             int;
begin
    if p_task = 'regression' then
        return jsonb_build_object('prediction', p_result -> 'prediction', 'score', p_result -> 'prediction');
    elsif p_task = 'anomaly_detection' then
        return jsonb_build_object('prediction', p_result -> 'prediction', 'score', p_result -> 'anomaly_score',
                                  'is_anomaly', p_result -> 'is_anomaly');
    end if;
    if jsonb_typeof(v_probabilities) is distinct from 'array' then
        -- No predict_proba (RidgeClassifier, SGD hinge): a binary model's decision function.
        return jsonb_strip_nulls(jsonb_build_object('prediction', p_result -> 'prediction',
            'score', case when jsonb_typeof(p_result -> 'decision_function') = 'number' then p_result -> 'decision_function' end));
    end if;
    v_k := jsonb_array_length(v_probabilities);
    if v_k = 2 then
        -- Two classes, the common case, in one simple expression: the general one below holds
        -- subqueries, which PL/pgSQL runs through the executor (0.014 ms a call, docs/serving.md).
        return jsonb_build_object(
            'prediction', p_result -> 'prediction',
            'score', v_probabilities -> 1,
            'probabilities', case when jsonb_typeof(p_classes) = 'array' and jsonb_array_length(p_classes) = 2
                                  then jsonb_build_object(p_classes ->> 0, v_probabilities -> 0, p_classes ->> 1, v_probabilities -> 1)
                                  else v_probabilities end);
    end if;
    return jsonb_build_object(
        'prediction', p_result -> 'prediction',
        'score', case when v_k = 2 then v_probabilities -> 1
                      else (select e.value from jsonb_array_elements(v_probabilities) e order by e.value::float8 desc limit 1) end,
        'probabilities', case when jsonb_typeof(p_classes) = 'array' and jsonb_array_length(p_classes) = v_k
                              then (select jsonb_object_agg(p_classes ->> (e.n - 1)::int, e.value)
                                    from jsonb_array_elements(v_probabilities) with ordinality e (value, n))
                              else v_probabilities end);
end
$$;

-- ml_private.score_arm(p_tenant uuid, p_task text, p_version uuid, p_features jsonb,
--                      p_entity_key text, p_shadow boolean) returns jsonb
-- Scores one row with version p_version of p_tenant: features checked
-- (ml_private.check_prediction_features; a shadow arm ignores extra ones) or, when p_features
-- is NULL, read from the online store for p_entity_key (ml_private.online_prediction_features),
-- then the version's compiled function: through its prediction function (which also reads the
-- store: ml_private.create_prediction_function), else through its serving function. Returns
-- {"model", "version", "features" (what the model received), "result"
-- (ml_private.prediction_result)}. Both functions' names are made from the version's id, never
-- read from a table.
-- Raises 0A000 a version scored by workers (naming model, version and algorithm, pointing to
-- ml.score), or one whose compile job has not run yet (naming the job); P0002 an unknown
-- version; the helpers' errors. Callers: ml.predict.
create or replace function ml_private.score_arm(p_tenant uuid, p_task text, p_version uuid, p_features jsonb,
                                                p_entity_key text, p_shadow boolean)
returns jsonb
language plpgsql volatile
-- no SET clause: called only by the owner's functions with search_path '' (see ml.predict)
as $$
declare
    v_version  record;
    v_label    text;
    v_predict  text := ml_private.prediction_function_name(p_version);
    v_serve    text;
    v_features jsonb;
    v_num      float8[];
    v_cat      text[];
    v_out      jsonb;
    v_result   jsonb;
    v_job      bigint;
begin
    select v.id, v.version, m.name as model, v.algorithm, v.scoring_path, v.scoring -> 'arguments' as arguments,
           v.signature -> 'classes' as classes, v.dataset_id,
           -- The version's prediction function (ml_private.create_prediction_function): it exists
           -- only next to the compiled function, and goes with it. Looked up in the catalog cache
           -- (to_regproc: one function of that name, or NULL), not by a scan of pg_proc, which
           -- locked pg_proc and its index in every transaction (0.006 ms a call, docs/serving.md).
           pg_catalog.to_regproc('ml_models.' || pg_catalog.quote_ident(ml_private.prediction_function_name(v.id))) is not null as fast
    into v_version
    from ml.model_versions v join ml.models m on m.id = v.model_id
    where v.id = p_version and v.tenant_id = p_tenant;
    if v_version.id is null then
        raise exception 'model version % does not exist', p_version using errcode = 'P0002';
    end if;
    v_label := format('%s version %s', v_version.model, v_version.version);
    if v_version.scoring_path = 'compiled' and v_version.fast then
        if p_features is not null then
            v_features := ml_private.check_prediction_features(v_version.arguments, v_version.dataset_id, p_features, v_label, p_shadow);
        end if;
        execute format('select ml_models.%I($1, $2, $3, $4)', v_predict) into v_out using p_tenant, p_entity_key, v_features, v_label;
        if v_out is null then
            -- The version's first read from the online store: make its lookup (and with it the
            -- prediction function's online read), then score the features read.
            v_features := ml_private.online_prediction_features(p_tenant, v_version.id, v_version.arguments, v_version.dataset_id,
                                                                 p_entity_key, v_label);
            execute format('select ml_models.%I($1, $2, $3, $4)', v_predict) into v_out using p_tenant, p_entity_key, v_features, v_label;
        end if;
        return jsonb_build_object('model', v_version.model, 'version', v_version.version, 'features', v_out -> 'features',
                                  'result', ml_private.prediction_result(p_task, v_out -> 'result', v_version.classes));
    end if;

    v_serve := ml_private.serving_function_name(p_version);
    if v_version.scoring_path <> 'compiled' or to_regprocedure(format('ml_models.%I(float8[], text[])', v_serve)) is null then
        -- A version whose compile job has not run yet says so (docs/scoring.md, "Where it happens").
        select (v.scoring ->> 'compile_job_id')::bigint into v_job from ml.model_versions v
        where v.id = v_version.id and v.scoring_path = 'worker';
        if v_job is not null then
            raise exception 'model % (%) is not compiled yet: its compilation is queued (job %), and ml.predict scores compiled versions only',
                v_label, v_version.algorithm, v_job
                using errcode = '0A000',
                      hint = format('A worker serving job kind compile runs it (pgmlops worker --kinds compile); ml.job_result(%s) tells when it is done.', v_job);
        end if;
        raise exception 'model % (%) is scored by workers: it has no compiled SQL function, so ml.predict cannot score it; ml.score can',
            v_label, v_version.algorithm
            using errcode = '0A000', hint = 'Score it in batches with ml.score(project, source, target), or deploy a compiled version.';
    end if;
    -- A compiled version without a prediction function (none is expected: install.sql makes them).
    if p_features is null then
        v_features := ml_private.online_prediction_features(p_tenant, v_version.id, v_version.arguments, v_version.dataset_id,
                                                             p_entity_key, v_label);
    else
        v_features := ml_private.check_prediction_features(v_version.arguments, v_version.dataset_id, p_features, v_label, p_shadow);
    end if;
    select a.num, a.cat into v_num, v_cat from ml_private.compiled_arguments(v_version.arguments, v_features) a;
    execute format('select ml_models.%I($1, $2)', v_serve) into v_result using v_num, v_cat;
    return jsonb_build_object('model', v_version.model, 'version', v_version.version, 'features', v_features,
                              'result', ml_private.prediction_result(p_task, v_result, v_version.classes));
end
$$;

------------------------------------------------------------------------------------------------
-- API
------------------------------------------------------------------------------------------------

-- ml.predict(project text, features jsonb default null, entity_key text default null) returns jsonb
-- Scores one row with the project's active deployment and logs it in ml.predictions. The arm is
-- ml_private.deployment_route's (sticky per entity_key, random without one); `features` is a JSON
-- object of the model's raw inputs by name, or NULL to read the entity's features from the
-- online store (then entity_key is required). Shadow arms are scored and logged (shadow_of: the
-- live row's id), never returned; a shadow arm that fails is logged with its error and does not
-- fail the call. Returns {"prediction", "score", "probabilities" (classification with
-- probabilities: {label: p}), "is_anomaly" (anomaly detection), "model", "version", "arm",
-- "deployment_id", "prediction_id", "latency_ms"} (docs/serving.md). A failed call logs nothing.
-- The log write does not wait for its WAL flush when the calling transaction has written
-- nothing before it (synchronous_commit off for that transaction; docs/serving.md "Durability").
-- Raises 22023 features not an object, a missing, unknown or mistyped feature (naming it and its
-- dtype), neither features nor entity_key; P0002 unknown project (another tenant's too), no
-- active deployment, an entity absent from the online store; 0A000 the routed version is scored
-- by workers (use ml.score), or its inputs cannot come from the online store; 42501 not a
-- member. Callers: any member of the tenant (viewers too), service_role.
create or replace function ml.predict(project text, features jsonb default null, entity_key text default null) returns jsonb
language plpgsql volatile security definer
set search_path = ''
set jit = off  -- a model is one large expression: JIT would compile it for seconds (docs/scoring.md)
as $$
#variable_conflict use_variable
declare
    v_start      timestamptz := clock_timestamp();
    v_tenant     uuid := ml_private.acting_tenant_id(false);
    v_project    uuid;
    v_task       text;
    v_route      record;
    v_live       jsonb;
    v_deployment uuid;
    v_arm        text;
    v_version    uuid;
    -- The id carries its time, so feedback finds its chunk: ml_private.prediction_id() (feedback.sql)
    -- written out, as that SQL function with a SET clause is planned again in every transaction.
    v_id         uuid := encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
                                                        placing substring(int8send(floor(extract(epoch from now()) * 1000)::bigint) from 3)
                                                        from 1 for 6), 52, 1), 53, 1), 'hex')::uuid;
    v_latency    float8;
    v_shadow     jsonb;
    v_shadows    jsonb := '[]';
    v_at         timestamptz;
begin
    if features is null and entity_key is null then
        raise exception 'features: pass the features, or an entity_key to read them from the online store' using errcode = '22023';
    end if;
    if features is not null and jsonb_typeof(features) <> 'object' then
        raise exception 'features: must be a JSON object of feature values by name, got %', jsonb_typeof(features) using errcode = '22023';
    end if;
    if entity_key = '' then
        raise exception 'entity_key: must not be empty' using errcode = '22023';
    end if;
    select p.id, p.task into v_project, v_task from ml.projects p where p.tenant_id = v_tenant and p.name = project;
    if v_project is null then
        raise exception 'project % does not exist', coalesce(quote_literal(project), 'NULL') using errcode = 'P0002';
    end if;

    -- The live arm comes first, then the shadow arms.
    for v_route in select * from ml_private.deployment_route(v_tenant, v_project, entity_key) loop
        if not v_route.shadow then
            v_live := ml_private.score_arm(v_tenant, v_task, v_route.model_version_id, features, entity_key, false);
            v_latency := extract(epoch from clock_timestamp() - v_start) * 1000;
            v_deployment := v_route.deployment_id;
            v_arm := v_route.arm;
            v_version := v_route.model_version_id;
        else
            v_at := clock_timestamp();
            begin
                v_shadow := ml_private.score_arm(v_tenant, v_task, v_route.model_version_id, features, entity_key, true);
            exception when others then
                v_shadow := jsonb_build_object('error', format('%s (%s)', sqlerrm, sqlstate));
            end;
            v_shadows := v_shadows || jsonb_build_array(v_shadow || jsonb_build_object(
                'deployment_id', v_route.deployment_id, 'arm', v_route.arm, 'model_version_id', v_route.model_version_id,
                'latency_ms', extract(epoch from clock_timestamp() - v_at) * 1000));
        end if;
    end loop;

    -- The log. A transaction that has written nothing yet (a PostgREST call, an edge function)
    -- commits without waiting for the WAL flush: a crash may lose the last few hundred
    -- milliseconds of log rows, never corrupt them. One that wrote data of its own keeps its
    -- durability (docs/serving.md, "Durability").
    if pg_current_xact_id_if_assigned() is null then
        perform set_config('synchronous_commit', 'off', true);
    end if;
    insert into ml.predictions (id, tenant_id, project_id, deployment_id, arm, model_version_id, entity_key, features,
                                prediction, score, probabilities, latency_ms)
    values (v_id, v_tenant, v_project, v_deployment, v_arm, v_version, entity_key, v_live -> 'features',
            v_live #> '{result,prediction}', (v_live #>> '{result,score}')::float8, v_live #> '{result,probabilities}', v_latency);
    if jsonb_array_length(v_shadows) > 0 then
        insert into ml.predictions (id, tenant_id, project_id, deployment_id, arm, model_version_id, shadow_of, entity_key, features,
                                    prediction, score, probabilities, latency_ms, error)
        select ml_private.prediction_id(), v_tenant, v_project, (s ->> 'deployment_id')::uuid, s ->> 'arm',
               (s ->> 'model_version_id')::uuid, v_id, entity_key,
               coalesce(s -> 'features', features), s #> '{result,prediction}', (s #>> '{result,score}')::float8,
               s #> '{result,probabilities}', (s ->> 'latency_ms')::float8, s ->> 'error'
        from jsonb_array_elements(v_shadows) s;
    end if;
    return (v_live -> 'result') || jsonb_build_object(
        'model', v_live -> 'model', 'version', v_live -> 'version', 'arm', v_arm, 'deployment_id', v_deployment,
        'prediction_id', v_id, 'latency_ms', round(v_latency::numeric, 3));
end
$$;

-- ml.set_prediction_retention(retention interval) returns jsonb
-- How long ml.predictions keeps rows: maintenance (ml.run_maintenance, pg_cron or workers) drops
-- whole daily chunks older than that. NULL keeps every row. The retention is the table's, so
-- every tenant's predictions share it: only the database owner may change it (executable by no
-- client role, service_role included; on Supabase: the SQL editor, as postgres). The default,
-- 90 days, is set where revision 0009 makes the table. Returns {"table", "retention",
-- "previous"}. Raises 22023 a retention under one day.
create or replace function ml.set_prediction_retention(retention interval) returns jsonb
language plpgsql volatile
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_previous interval;
begin
    if retention is not null and retention < interval '1 day' then
        raise exception 'retention: must be at least 1 day (ml.predictions is kept in daily chunks), or NULL to keep every prediction; got %', retention
            using errcode = '22023';
    end if;
    select t.retention into v_previous from ml_private.time_partitioned_tables t where t.table_name = 'ml.predictions' for update;
    update ml_private.time_partitioned_tables t set retention = set_prediction_retention.retention where t.table_name = 'ml.predictions';
    return jsonb_build_object('table', 'ml.predictions', 'retention', retention, 'previous', v_previous);
end
$$;

------------------------------------------------------------------------------------------------
-- Grants
------------------------------------------------------------------------------------------------

-- ml.set_prediction_retention: the owner only (no grant). The helpers: nobody (ml.predict runs
-- them as the owner after checking the caller).
revoke all on function ml.set_prediction_retention(interval) from public;
grant execute on function
    ml.predict(text, jsonb, text)
to authenticated, service_role;
