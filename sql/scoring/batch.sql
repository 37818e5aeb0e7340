-- pgmlops: scoring/batch.sql — batch scoring (docs/batch-scoring.md)
--
-- Two ways to score many rows:
--   ml.predict_batch(project, source, options)  one statement, compiled versions, rows returned;
--   ml.score(project, source, target, options)  a `score` job, any version, rows written to a
--                                               target table chunk by chunk (ml.batch_scorings).
--
-- Rights. A source (a table name or a query) is text a client wrote: it is only ever executed by
-- SECURITY INVOKER code, as the caller (ml.predict_batch, ml.score, ml.stage_batch_scoring), so
-- the caller's privileges and RLS policies apply to it, exactly as to a query they sent
-- themselves. Its rows are copied into a temporary table of the caller's session; only then does
-- a security-definer function, which accepts nothing but a plain temporary table of the calling
-- session holding built-in types, read them and call the compiled function (which no client role
-- may execute). So a source can never read what its caller could not, and the definer side never
-- runs a client's SQL, a client's function or a client's type. The worker (pgmlops.scoring._batch)
-- acts as the user who called ml.score (ml.jobs.created_by) through pgmlops.db.tenant_context,
-- as PostgREST would; the target is written with that user's rights too.
--
-- Exactly once. A scoring's rows are snapshotted once (ml_private.batch_rows_<id as 32 hex>,
-- numbered 1..rows_total), then scored in chunks of chunk_rows in that order. Each chunk's target
-- rows and ml.batch_scorings.rows_done commit in one transaction, which also checks that the
-- worker still holds the job's lease and that rows_done is what the chunk started from: a worker
-- killed mid-run leaves the last committed chunk behind it, and its successor resumes there.

------------------------------------------------------------------------------------------------
-- Helpers: sources, their columns, the compiled function's arguments
------------------------------------------------------------------------------------------------

-- ml_private.batch_source(p_source text) returns text
-- The FROM item of a source: '(<query>)' for a query (SELECT, WITH, VALUES or TABLE; trailing
-- semicolons and blanks dropped), else the table (or view) it names, schema-qualified. Runs as its
-- caller with the caller's search_path (no SET clause): names resolve as in the caller's queries.
-- Raises 22023 a blank source; 42P01 an unknown table or schema; 42601 text that is neither a
-- name nor a query; 42501 a table the caller may not read. A query is not checked here (it is
-- parsed and run by the caller's functions: 42601, 42P01, 42501 then).
-- Callers: ml.predict_batch, ml.score, ml.stage_batch_scoring (as the client).
create or replace function ml_private.batch_source(p_source text) returns text
language plpgsql stable
as $$
declare
    v_source text;
    v_rel    regclass;
begin
    if p_source is null or btrim(p_source) = '' then
        raise exception 'source: must be a table name or a query (SELECT, WITH, VALUES, TABLE)' using errcode = '22023';
    end if;
    v_source := pg_catalog.regexp_replace(pg_catalog.btrim(p_source), '[;[:space:]]+$', '');
    if v_source operator(pg_catalog.~*) '^\(*[[:space:]]*(select|with|values|table)[[:space:](]' then
        return '(' operator(pg_catalog.||) v_source operator(pg_catalog.||) E'\n)';   -- a trailing -- comment ends at the newline
    end if;
    begin
        v_rel := v_source::pg_catalog.regclass;
    exception when invalid_name or undefined_table or invalid_schema_name or syntax_error then
        raise exception 'source: % is neither a readable table name nor a query (SELECT, WITH, VALUES, TABLE): %',
            pg_catalog.quote_literal(p_source), sqlerrm
            using errcode = case when sqlstate in ('42P01', '3F000') then '42P01' else '42601' end;
    end;
    if not pg_catalog.has_table_privilege(v_rel, 'SELECT') then
        raise exception 'source: permission denied for table %', v_rel using errcode = '42501';
    end if;
    return (select pg_catalog.format('%I.%I', n.nspname, c.relname)
            from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace where c.oid = v_rel);
end
$$;

-- ml_private.batch_columns(p_rel regclass) returns jsonb
-- The columns of a relation: {name: {attnum, type (SQL name of the type, domains resolved to
-- their base type), typname, category, domain, builtin}, ...}. builtin: a type of PostgreSQL itself or pgvector's
-- vector, the only types the definer side of batch scoring reads (their functions are the
-- system's, not a client's). Reads the catalog only.
create or replace function ml_private.batch_columns(p_rel regclass) returns jsonb
language sql stable
set search_path = ''
as $$
    select coalesce(jsonb_object_agg(a.attname, jsonb_build_object(
        'attnum', a.attnum, 'type', format_type(t.oid, case when ot.typtype = 'd' then ot.typtypmod else a.atttypmod end),
        'typname', t.typname, 'category', t.typcategory, 'domain', ot.typtype = 'd',
        'builtin', t.oid < 16384 or (t.typname = 'vector' and exists (
            select 1 from pg_catalog.pg_depend d join pg_catalog.pg_extension e on e.oid = d.refobjid
            where d.classid = 'pg_catalog.pg_type'::regclass and d.objid = t.oid and d.deptype = 'e'
              and e.extname = 'vector')))
        order by a.attnum), '{}')
    from pg_catalog.pg_attribute a
    join pg_catalog.pg_type ot on ot.oid = a.atttypid
    join pg_catalog.pg_type t on t.oid = case when ot.typtype = 'd' then ot.typbasetype else ot.oid end
    where a.attrelid = p_rel and a.attnum > 0 and not a.attisdropped
$$;

-- ml_private.batch_arguments_sql(p_arguments jsonb, p_columns jsonb, p_alias text) returns jsonb
-- The SQL expressions of a compiled function's arguments over a relation aliased p_alias whose
-- columns are p_columns (ml_private.batch_columns): {num: '<float8[] expression>', cat: '<text[]
-- expression>'}, converting as ml_private.compiled_arguments and the pipeline's InputFrame do:
-- int and float columns (smallint, integer, bigint, real, double precision, numeric) as float8,
-- NaN missing; timestamp inputs from timestamptz, timestamp (UTC) or date as seconds since the
-- epoch; vector(n) inputs from vector or number arrays (another length: all missing); bool
-- inputs from boolean, numbers (non-zero true) or text (true/t/1/yes, false/f/0/no, else
-- missing); text and category inputs from text columns. Identifiers are quoted with %I: nothing
-- of the data or of a name is SQL.
-- Raises 22023 a missing input column or one whose type cannot give its input (naming both),
-- or a column of a type that is not built in.
create or replace function ml_private.batch_arguments_sql(p_arguments jsonb, p_columns jsonb, p_alias text) returns jsonb
language plpgsql immutable
set search_path = ''
as $$
declare
    v_a       jsonb;
    v_name    text;
    v_dtype   text;
    v_col     jsonb;
    v_typ     text;
    v_c       text;
    v_e       text;
    v_len     int;
    v_num     text[] := '{}';
    v_scalars text[] := '{}';
    v_cat     text[] := '{}';
    v_reject  boolean;
begin
    for v_a in select value from jsonb_array_elements(p_arguments) order by (value ->> 'array'), (value ->> 'index')::int loop
        v_name := v_a ->> 'name';
        v_dtype := v_a ->> 'dtype';
        v_col := p_columns -> v_name;
        if v_col is null then
            raise exception 'source: missing column % (a model input, %); the source has: %', quote_ident(v_name), v_dtype,
                coalesce((select string_agg(quote_ident(k), ', ') from jsonb_object_keys(p_columns) k), 'no columns')
                using errcode = '22023';
        end if;
        if not (v_col ->> 'builtin')::boolean then
            raise exception 'source: column % has type %, which is not a built-in type: cast it in the query', quote_ident(v_name), v_col ->> 'type'
                using errcode = '22023';
        end if;
        v_typ := v_col ->> 'typname';
        v_c := format('%s.%I', p_alias, v_name);
        v_e := null;
        v_reject := false;
        if v_dtype ~ '^vector\([0-9]+\)$' then
            v_len := substring(v_dtype from '^vector\(([0-9]+)\)$')::int;
            v_e := case when v_typ = 'vector' then format('((%s)::real[])::float8[]', v_c)
                        when v_typ in ('_float4', '_float8', '_numeric', '_int2', '_int4', '_int8') then format('(%s)::float8[]', v_c) end;
            if v_e is not null then
                v_e := format('(case when pg_catalog.cardinality(%1$s) = %2$s then %1$s else pg_catalog.array_fill(null::float8, array[%2$s]) end)',
                              v_e, v_len);
                if v_scalars <> '{}' then
                    v_num := v_num || format('array[%s]::float8[]', array_to_string(v_scalars, ', '));
                    v_scalars := '{}';
                end if;
                v_num := v_num || v_e;
                continue;
            end if;
        elsif v_dtype in ('int', 'float') then
            if v_typ in ('int2', 'int4', 'int8', 'float4', 'float8', 'numeric') then
                v_e := format('nullif((%s)::float8, ''NaN''::float8)', v_c);
            end if;
        elsif v_dtype = 'timestamp' then
            v_e := case v_typ when 'timestamptz' then format('(extract(epoch from %s))::float8', v_c)
                              when 'timestamp' then format('(extract(epoch from %s))::float8', v_c)
                              when 'date' then format('(extract(epoch from (%s)::timestamp))::float8', v_c) end;
        elsif v_dtype = 'bool' then
            v_e := case when v_typ = 'bool' then format('(case when %1$s then ''true'' when not %1$s then ''false'' end)', v_c)
                        when v_typ in ('int2', 'int4', 'int8', 'float4', 'float8', 'numeric')
                            then format('(case when %1$s <> 0 then ''true'' when %1$s = 0 then ''false'' end)', v_c)
                        when v_col ->> 'category' = 'S' then format(
                            '(case when pg_catalog.lower(pg_catalog.btrim(%1$s)) in (''true'', ''t'', ''1'', ''yes'') then ''true'' '
                            'when pg_catalog.lower(pg_catalog.btrim(%1$s)) in (''false'', ''f'', ''0'', ''no'') then ''false'' end)', v_c) end;
        elsif v_dtype in ('text', 'category') then
            if v_col ->> 'category' = 'S' then
                v_e := format('(%s)::text', v_c);
            end if;
        end if;
        if v_e is null then
            raise exception 'source: column % has type %, which cannot give model input % (%)',
                quote_ident(v_name), v_col ->> 'type', quote_ident(v_name), v_dtype
                using errcode = '22023',
                      hint = case when v_dtype in ('int', 'float') then 'A number column (or cast it in the query).'
                                  when v_dtype = 'timestamp' then 'A timestamptz, timestamp or date column.'
                                  when v_dtype ~ '^vector' then 'A vector or number array column.'
                                  when v_dtype = 'bool' then 'A boolean, number or text column.'
                                  else 'A text column (cast it in the query).' end;
        end if;
        if v_a ->> 'array' = 'num' then
            v_scalars := v_scalars || v_e;
        else
            v_cat := v_cat || v_e;
        end if;
    end loop;
    if v_scalars <> '{}' then
        v_num := v_num || format('array[%s]::float8[]', array_to_string(v_scalars, ', '));
    end if;
    return jsonb_build_object(
        'num', case when v_num = '{}' then '''{}''::float8[]' else '(' || array_to_string(v_num, ' || ') || ')' end,
        'cat', case when v_cat = '{}' then '''{}''::text[]' else format('array[%s]::text[]', array_to_string(v_cat, ', ')) end);
end
$$;

-- ml_private.batch_key_sql(p_keys text[], p_alias text) returns text
-- A jsonb expression of the key columns p_keys of p_alias: {column: value, ...} ('{}' for none).
create or replace function ml_private.batch_key_sql(p_keys text[], p_alias text) returns text
language sql immutable
set search_path = ''
as $$
    select case when coalesce(cardinality(p_keys), 0) = 0 then '''{}''::jsonb'
                else '(' || (select string_agg(format('jsonb_build_object(%s)', part), ' || ')
                             from (select string_agg(format('%L, %s.%I', k, p_alias, k), ', ' order by i) as part
                                   from unnest(p_keys) with ordinality u (k, i) group by (i - 1) / 40) g) || ')' end
$$;

-- ml_private.batch_outputs_sql(p_task text, p_classes jsonb, p_result text) returns jsonb
-- The SQL of a scored row's score and probabilities from its compiled result (the jsonb
-- expression p_result, a column): {score, probabilities}. score: classification, the positive
-- class's probability (binary: the second class), the largest probability (more classes), or the
-- decision function when there are no probabilities; regression, the prediction; anomaly
-- detection, the anomaly score (-score_samples: higher is more anomalous). probabilities:
-- {class label as text: probability} (the estimator's class order is the signature's classes
-- order), the array itself when the classes are unknown, NULL without probabilities. Plain
-- expressions over the result, written for the model's classes (labels quoted with %L), so a
-- batch pays no function call per row.
create or replace function ml_private.batch_outputs_sql(p_task text, p_classes jsonb, p_result text) returns jsonb
language plpgsql immutable
set search_path = ''
as $$
declare
    v_n     int := case when jsonb_typeof(p_classes) = 'array' then jsonb_array_length(p_classes) end;
    v_p     text := format('(%s -> ''probabilities'')', p_result);
    v_df    text := format('(case when jsonb_typeof(%1$s -> ''decision_function'') = ''number'' then (%1$s ->> ''decision_function'')::float8 end)', p_result);
    v_probs text;
    v_score text;
begin
    if p_task = 'regression' then
        return jsonb_build_object('score', format('(%s ->> ''prediction'')::float8', p_result), 'probabilities', 'null::jsonb');
    elsif p_task = 'anomaly_detection' then
        return jsonb_build_object('score', format('(%s ->> ''anomaly_score'')::float8', p_result), 'probabilities', 'null::jsonb');
    end if;
    if v_n is null or v_n = 0 then
        v_probs := format('(case when jsonb_typeof(%1$s) = ''array'' then %1$s end)', v_p);
        v_score := format('coalesce(case when jsonb_typeof(%1$s) = ''array'' then case when jsonb_array_length(%1$s) = 2 then (%1$s ->> 1)::float8 '
                          'else (select max(e::float8) from jsonb_array_elements_text(%1$s) e) end end, %2$s)', v_p, v_df);
    else
        select format('(case when jsonb_typeof(%s) = ''array'' then (%s) end)', v_p,
                      string_agg(format('jsonb_build_object(%s)', part), ' || '))
        into v_probs
        from (select string_agg(format('%L, %s -> %s', c.v #>> '{}', v_p, c.i - 1), ', ' order by c.i) as part
              from jsonb_array_elements(p_classes) with ordinality c (v, i) group by (c.i - 1) / 40) g;
        v_score := case when v_n = 2 then format('coalesce((%s ->> 1)::float8, %s)', v_p, v_df)
                        else format('coalesce(greatest(%s), %s)',
                                    (select string_agg(format('(%s ->> %s)::float8', v_p, i), ', ') from generate_series(0, v_n - 1) i), v_df) end;
    end if;
    return jsonb_build_object('score', v_score, 'probabilities', v_probs);
end
$$;

-- ml_private.batch_model(p_project text, p_options jsonb, p_write boolean) returns jsonb
-- The version a batch scores for the acting tenant's project p_project: the one options names
-- ({"model": "churn" | "churn@3" | "churn@champion", "version": n, "alias": a}, a model of that
-- project), else the live arm with the largest weight of the project's active deployment
-- (ml_private.deployment_primary). Returns {tenant_id, project_id, project, task,
-- deployment_id, arm, model_version_id, model, version, algorithm, scoring_path, reason, trees,
-- max_depth (a compiled tree ensemble's), arguments (the raw input columns: ml_private.compiled_model_inputs), inputs (the signature's),
-- classes, transformations (whether its training set transforms its columns)}.
-- Raises 42501 non-members (p_write: viewers too); P0002 unknown project, model, version or
-- alias, or no active deployment; 22023 a model of another project, a malformed reference.
-- Callers: ml.predict_batch, ml.score (as the client).
create or replace function ml_private.batch_model(p_project text, p_options jsonb, p_write boolean) returns jsonb
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_tenant  uuid := ml_private.acting_tenant_id(p_write);
    v_project ml.projects := ml_private.find_project(v_tenant, p_project);
    v_version ml.model_versions;
    v_model   ml.models;
    v_dep     uuid;
    v_arm     text;
    v_mv      uuid;
    v_version_no int;
    v_transforms boolean;
begin
    if p_options ? 'model' then
        if jsonb_typeof(p_options -> 'model') <> 'string' then
            raise exception 'options.model: must be a model name (or name@version, name@alias)' using errcode = '22023';
        end if;
        if p_options ? 'version' and jsonb_typeof(p_options -> 'version') <> 'number' then
            raise exception 'options.version: must be a version number' using errcode = '22023';
        end if;
        v_version_no := (p_options ->> 'version')::int;
        v_version := ml_private.find_model_version(v_tenant, p_options ->> 'model', v_version_no, p_options ->> 'alias');
        select * into v_model from ml.models m where m.id = v_version.model_id;
        if v_model.project_id <> v_project.id then
            raise exception 'options.model: model % belongs to another project, not %', quote_literal(v_model.name), quote_literal(v_project.name)
                using errcode = '22023';
        end if;
    elsif p_options ? 'version' or p_options ? 'alias' then
        raise exception 'options.version, options.alias: name the model too ({"model": "churn", "version": 3})' using errcode = '22023';
    else
        select p.deployment_id, p.arm, p.model_version_id into v_dep, v_arm, v_mv
        from ml_private.deployment_primary(v_tenant, v_project.id) p limit 1;
        if v_mv is null then
            raise exception 'project % has no active deployment', quote_literal(v_project.name)
                using errcode = 'P0002', hint = 'Deploy a version with ml.deploy, or name one in options: {"model": "churn", "version": 3}.';
        end if;
        select * into v_version from ml.model_versions v where v.id = v_mv and v.tenant_id = v_tenant;
        select * into v_model from ml.models m where m.id = v_version.model_id;
    end if;
    select coalesce(jsonb_array_length(d.transformations), 0) > 0 into v_transforms from ml.datasets d where d.id = v_version.dataset_id;
    return jsonb_build_object(
        'tenant_id', v_tenant, 'project_id', v_project.id, 'project', v_project.name, 'task', v_project.task,
        'deployment_id', v_dep, 'arm', v_arm, 'model_version_id', v_version.id, 'model', v_model.name,
        'version', v_version.version, 'algorithm', (select r.algorithm from ml.runs r where r.id = v_version.run_id),
        'scoring_path', v_version.scoring_path, 'reason', v_version.scoring ->> 'reason',
        'trees', v_version.scoring -> 'trees', 'max_depth', v_version.scoring -> 'max_depth',
        'arguments', ml_private.compiled_model_inputs(v_version.signature, v_version.dataset_id) -> 'arguments',
        'inputs', v_version.signature -> 'inputs', 'classes', v_version.signature -> 'classes',
        'transformations', coalesce(v_transforms, false));
end
$$;

-- ml_private.batch_worker_only(p_model jsonb) returns void: raises 0A000 for a version scored by
-- workers (ml.predict_batch and the sql path cannot take it), naming it and pointing to ml.score.
create or replace function ml_private.batch_worker_only(p_model jsonb) returns void
language plpgsql immutable
set search_path = ''
as $$
begin
    if p_model ->> 'scoring_path' is distinct from 'compiled' then
        raise exception 'model % version % (%) is scored by workers, not compiled to SQL: %', p_model ->> 'model',
            p_model ->> 'version', coalesce(p_model ->> 'algorithm', 'unknown algorithm'), coalesce(p_model ->> 'reason', 'no compiled function')
            using errcode = '0A000',
                  hint = 'Score it with ml.score(project, source, target), which runs it on a worker.';
    end if;
end
$$;

-- ml_private.batch_check_temp(p_rel regclass, p_what text) returns void
-- Raises 22023 unless p_rel is a plain temporary table of the calling session without row level
-- security: what a security-definer function of this file accepts from its caller.
create or replace function ml_private.batch_check_temp(p_rel regclass, p_what text) returns void
language plpgsql stable
set search_path = ''
as $$
begin
    if p_rel is null or not exists (
            select 1 from pg_catalog.pg_class c where c.oid = p_rel and c.relkind = 'r' and c.relpersistence = 't'
               and c.relnamespace = pg_catalog.pg_my_temp_schema() and not c.relrowsecurity and not c.relhassubclass) then
        raise exception '%: must be a plain temporary table of this session', p_what using errcode = '22023';
    end if;
end
$$;

-- ml_private.batch_rows_table(p_batch_scoring uuid) returns text
-- The snapshot table of a batch scoring, schema-qualified and quoted: ml_private.batch_rows_<hex>.
create or replace function ml_private.batch_rows_table(p_batch_scoring uuid) returns text
language sql immutable
set search_path = ''
return format('ml_private.%I', 'batch_rows_' || replace(p_batch_scoring::text, '-', ''));

------------------------------------------------------------------------------------------------
-- ml.predict_batch: one statement
------------------------------------------------------------------------------------------------

-- ml_private.batch_predict_rows(p_model_version uuid, p_rows regclass)
-- returns table (row_number bigint, key jsonb, prediction jsonb, score float8, probabilities jsonb,
--                model_version_id uuid)
-- Scores the rows of p_rows, a plain temporary table of the calling session with columns
-- row_number bigint, key jsonb, num float8[], cat text[] (ml.predict_batch fills it as the
-- caller), with the compiled function of p_model_version, a version of the acting tenant, in one
-- statement (the function inlined, its arguments passed as columns, JIT off). Rows in
-- row_number order.
-- Raises 22023 p_rows not such a table; P0002 no such version in the acting tenant; 0A000 a
-- version scored by workers; 42501 non-members. Callers: ml.predict_batch.
create or replace function ml_private.batch_predict_rows(p_model_version uuid, p_rows regclass)
returns table (row_number bigint, key jsonb, prediction jsonb, score float8, probabilities jsonb, model_version_id uuid)
language plpgsql volatile security definer
set search_path = ''
set jit = off
as $$
declare
    v_tenant  uuid := ml_private.acting_tenant_id(false);
    v_version ml.model_versions;
    v_task    text;
    v_out     jsonb;
begin
    select * into v_version from ml.model_versions v where v.id = p_model_version and v.tenant_id = v_tenant;
    if v_version.id is null then
        raise exception 'model version % does not exist', coalesce(p_model_version::text, 'NULL') using errcode = 'P0002';
    end if;
    if ml_private.compiled_function(v_version.id) is null then
        perform ml_private.batch_worker_only(jsonb_build_object('model_version_id', v_version.id, 'version', v_version.version,
                                                                'scoring_path', 'worker', 'reason', v_version.scoring ->> 'reason'));
    end if;
    perform ml_private.batch_check_temp(p_rows, 'rows');
    if (select count(*) from pg_catalog.pg_attribute a
        where a.attrelid = p_rows and a.attnum > 0 and not a.attisdropped
          and (a.attname, a.atttypid) in (('row_number', 'pg_catalog.int8'::regtype), ('key', 'pg_catalog.jsonb'::regtype),
                                          ('num', 'pg_catalog._float8'::regtype), ('cat', 'pg_catalog._text'::regtype))) <> 4 then
        raise exception 'rows: must have the columns row_number bigint, key jsonb, num float8[], cat text[]' using errcode = '22023';
    end if;
    select p.task into v_task from ml.models m join ml.projects p on p.id = m.project_id where m.id = v_version.model_id;
    v_out := ml_private.batch_outputs_sql(v_task, v_version.signature -> 'classes', 's.r');
    return query execute format(
        'select s.row_number, s.key, s.r -> ''prediction'', %s, %s, $1 '
        'from (select t.row_number, t.key, ml_models.%I(t.num, t.cat) as r from only %s t offset 0) s order by s.row_number',
        v_out ->> 'score', v_out ->> 'probabilities', ml_private.compiled_model_name(v_version.id), p_rows)
        using v_version.id;
end
$$;

-- ml.predict_batch(project text, source text, options jsonb default '{}')
-- returns table (row_number bigint, key jsonb, prediction jsonb, score float8, probabilities jsonb,
--                model_version_id uuid)
-- Scores every row of `source` (a table name or a query: SELECT, WITH, VALUES, TABLE) with the
-- project's deployed version (the live arm with the largest weight of its active deployment), or
-- the one options names, in one statement. The source runs as the caller (this function is
-- SECURITY INVOKER): the caller's privileges and RLS policies apply. It must carry the model's
-- input columns by name (extra columns are fine). One output row per source row:
--   row_number     1, 2, ... in the source's order (a query's ORDER BY is kept);
--   key            the source's other columns (options.key: the columns named there) as JSON;
--   prediction     the label, value, or -1/1 (anomaly detection);
--   score          classification: the positive class's probability (binary), the largest
--                  probability, or the decision function; regression: the prediction; anomaly
--                  detection: the anomaly score (higher is more anomalous);
--   probabilities  {class: probability} for classifiers that have them, else NULL;
--   model_version_id the version that scored it.
-- options: {"model": "churn" | "churn@3", "version": 3, "alias": "champion", "key": ["id", ...]}.
-- Raises 22023 bad options, missing or mistyped input columns (naming the column), unknown key
-- columns; 42P01 / 42601 / 42501 a source that is not a readable table or a valid query (from
-- the caller's own rights); 0A000 a version scored by workers (use ml.score); P0002 unknown
-- project, model or version, no active deployment; 42501 non-members. Writes nothing.
-- Callers: any member (viewers too), service_role.
create or replace function ml.predict_batch(project text, source text, options jsonb default '{}')
returns table (row_number bigint, key jsonb, prediction jsonb, score float8, probabilities jsonb, model_version_id uuid)
language plpgsql volatile
set jit = off
as $$
declare
    v_options jsonb := coalesce(options, '{}');
    v_model   jsonb;
    v_from    text;
    v_suffix  text := pg_catalog.replace(pg_catalog.gen_random_uuid()::text, '-', '');
    v_view    text := '_pgmlops_batch_source_' operator(pg_catalog.||) v_suffix;
    v_rows    text := '_pgmlops_batch_rows_' operator(pg_catalog.||) v_suffix;
    v_cols    jsonb;
    v_args    jsonb;
    v_keys    text[];
begin
    perform ml_private.batch_check_options(v_options, array['model', 'version', 'alias', 'key']);
    v_model := ml_private.batch_model(project, v_options, false);
    perform ml_private.batch_worker_only(v_model);
    v_from := ml_private.batch_source(source);
    execute pg_catalog.format('create temp view %I as select * from %s s', v_view, v_from);
    execute pg_catalog.format('select from pg_temp.%I limit 0', v_view);   -- the caller's privileges, now
    v_cols := ml_private.batch_columns(pg_catalog.format('pg_temp.%I', v_view)::pg_catalog.regclass);
    v_args := ml_private.batch_arguments_sql(v_model -> 'arguments', v_cols, 's');
    v_keys := ml_private.batch_keys(v_options -> 'key', v_cols, v_model -> 'arguments', false);
    execute pg_catalog.format(
        'create temp table %I as select (pg_catalog.row_number() over ())::bigint as row_number, %s as key, %s as num, %s as cat from pg_temp.%I s',
        v_rows, ml_private.batch_key_sql(v_keys, 's'), v_args ->> 'num', v_args ->> 'cat', v_view);
    return query select * from ml_private.batch_predict_rows((v_model ->> 'model_version_id')::uuid,
                                                             pg_catalog.format('pg_temp.%I', v_rows)::pg_catalog.regclass);
    execute pg_catalog.format('drop table pg_temp.%I', v_rows);
    execute pg_catalog.format('drop view pg_temp.%I', v_view);
end
$$;

-- ml_private.batch_check_options(p_options jsonb, p_allowed text[]) returns void
-- Raises 22023 unless p_options is a JSON object whose keys are among p_allowed.
create or replace function ml_private.batch_check_options(p_options jsonb, p_allowed text[]) returns void
language plpgsql immutable
set search_path = ''
as $$
declare
    v_bad text;
begin
    if jsonb_typeof(p_options) <> 'object' then
        raise exception 'options: must be a JSON object, got %', jsonb_typeof(p_options) using errcode = '22023';
    end if;
    select k into v_bad from jsonb_object_keys(p_options) k where not k = any (p_allowed) limit 1;
    if v_bad is not null then
        raise exception 'options: unknown option % (known: %)', quote_literal(v_bad), array_to_string(p_allowed, ', ')
            using errcode = '22023';
    end if;
end
$$;

-- ml_private.batch_keys(p_key jsonb, p_columns jsonb, p_arguments jsonb, p_typed boolean) returns text[]
-- The source columns carried beside each prediction: those p_key names (a JSON array of column
-- names), else every column that is not a model input (and, for a target table, not named like an
-- output column). With p_typed (ml.score: the target gets them as columns) they must be of built-in
-- types and must not collide with the output columns.
-- Raises 22023 a malformed key, an unknown, duplicate, colliding or non-built-in key column.
create or replace function ml_private.batch_keys(p_key jsonb, p_columns jsonb, p_arguments jsonb, p_typed boolean) returns text[]
language plpgsql immutable
set search_path = ''
as $$
declare
    v_reserved text[] := array['batch_scoring_id', 'row_number', 'prediction', 'score', 'probabilities', 'model_version_id'];
    v_keys     text[];
    v_k        text;
begin
    if p_key is null or jsonb_typeof(p_key) = 'null' then
        select coalesce(array_agg(k order by (v ->> 'attnum')::int), '{}') into v_keys
        from jsonb_each(p_columns) c (k, v)
        where not exists (select 1 from jsonb_array_elements(p_arguments) a where a ->> 'name' = k)
          and (not p_typed or not k = any (v_reserved));
    else
        if jsonb_typeof(p_key) <> 'array' or exists (select 1 from jsonb_array_elements(p_key) e where jsonb_typeof(e) <> 'string') then
            raise exception 'options.key: must be an array of column names' using errcode = '22023';
        end if;
        v_keys := array(select e from jsonb_array_elements_text(p_key) e);
        if cardinality(v_keys) <> (select count(distinct e) from unnest(v_keys) e) then
            raise exception 'options.key: a column is named twice' using errcode = '22023';
        end if;
        foreach v_k in array v_keys loop
            if not p_columns ? v_k then
                raise exception 'options.key: the source has no column %; it has: %', quote_ident(v_k),
                    (select string_agg(quote_ident(k), ', ') from jsonb_object_keys(p_columns) k) using errcode = '22023';
            end if;
            if p_typed and v_k = any (v_reserved) then
                raise exception 'options.key: column % is named like an output column (%): rename it in the query',
                    quote_ident(v_k), array_to_string(v_reserved, ', ') using errcode = '22023';
            end if;
        end loop;
    end if;
    if p_typed then
        foreach v_k in array v_keys loop
            if not (p_columns -> v_k ->> 'builtin')::boolean then
                raise exception 'source: column % has type %, which is not a built-in type: cast it in the query or leave it out of options.key',
                    quote_ident(v_k), p_columns -> v_k ->> 'type' using errcode = '22023';
            end if;
        end loop;
    end if;
    return v_keys;
end
$$;

------------------------------------------------------------------------------------------------
-- ml.score: a job
------------------------------------------------------------------------------------------------

-- ml_private.batch_scoring_create(p_model_version uuid, p_deployment uuid, p_source text, p_target text,
--                                 p_keys text[], p_path text, p_chunk_rows int, p_options jsonb) returns bigint
-- Records a batch scoring of the acting tenant (ml.batch_scorings, created_by the calling user)
-- and queues its `score` job (ml.jobs.created_by: the same user, whom the worker acts as).
-- Returns the job id. The version must be the tenant's; the sql path needs a compiled one; the
-- target must name an existing table (schema-qualified: recorded as %I.%I of it).
-- Raises 42501 viewers and non-members; P0002 unknown version; 0A000 the sql path for a
-- version scored by workers; 42809 a target that is not a table. Callers: ml.score.
create or replace function ml_private.batch_scoring_create(p_model_version uuid, p_deployment uuid, p_source text, p_target text,
                                                           p_keys text[], p_path text, p_chunk_rows int, p_options jsonb)
returns bigint
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_tenant  uuid := ml_private.acting_tenant_id(true);
    v_version ml.model_versions;
    v_project uuid;
    v_id      uuid := gen_random_uuid();
    v_job     bigint;
    v_target  text;
begin
    select * into v_version from ml.model_versions v where v.id = p_model_version and v.tenant_id = v_tenant;
    if v_version.id is null then
        raise exception 'model version % does not exist', coalesce(p_model_version::text, 'NULL') using errcode = 'P0002';
    end if;
    if p_path = 'sql' and ml_private.compiled_function(v_version.id) is null then
        raise exception 'options.path: sql needs a compiled version; version % is scored by workers', v_version.version
            using errcode = '0A000', hint = 'Leave options.path out, or set it to worker.';
    end if;
    -- The target as a schema-qualified name of an existing table, whatever text came in: the job
    -- writes it into its INSERT.
    begin
        select format('%I.%I', n.nspname, c.relname) into v_target
        from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
        where c.oid = to_regclass(p_target) and c.relkind in ('r', 'p');
    exception when invalid_name or syntax_error then
        v_target := null;
    end;
    if v_target is null then
        raise exception 'target: % is not a table', coalesce(quote_literal(p_target), 'NULL') using errcode = '42809';
    end if;
    select m.project_id into v_project from ml.models m where m.id = v_version.model_id;
    insert into ml.batch_scorings (id, tenant_id, project_id, deployment_id, model_version_id, source, target, keys, options,
                                   path, chunk_rows, created_by)
    values (v_id, v_tenant, v_project, p_deployment, v_version.id, p_source, v_target, coalesce(p_keys, '{}'), p_options,
            p_path, p_chunk_rows, ml_private.caller_user_id());
    v_job := ml_private.enqueue_job('score', jsonb_build_object('batch_scoring_id', v_id), 0, now(), null);
    update ml.batch_scorings b set job_id = v_job where b.id = v_id;
    return v_job;
end
$$;

-- ml.score(project text, source text, target text, options jsonb default '{}') returns bigint
-- Queues a batch scoring of every row of `source` (a table name or a query) into the table
-- `target` and returns the job's id; ml.batch_scorings (job_id) shows its progress (rows_done of
-- rows_total), ml.job_result(job_id) its outcome. The version is the project's deployed one (see
-- ml.predict_batch) or options' {"model", "version" | "alias"}, fixed now for the whole job.
-- The source is checked now, as the caller (this function is SECURITY INVOKER), and read by the
-- job's first attempt, as the caller again (the worker acts as the calling user), into a snapshot
-- scored chunk by chunk; each chunk's rows and the progress commit together (no row twice after
-- a crash).
-- target: a table name (schema-qualified or resolved in the caller's search_path). An existing
-- table is appended to, if the caller may insert into it and it has the columns below (others
-- are left to their defaults); otherwise it is created now, as the caller, with
--   batch_scoring_id uuid, row_number bigint, <the key columns, typed as in the source>,
--   prediction jsonb, score float8, probabilities jsonb, model_version_id uuid
-- (the meaning of each: ml.predict_batch).
-- options: path 'sql' (each chunk scored by the compiled function in one statement) or 'worker'
-- (rows COPYed out, predicted by the loaded artifact in Python, COPYed in); default: the faster
-- (docs/batch-scoring.md): 'sql' for a compiled version, unless it is a tree ensemble of more
-- than 250 tree levels (trees x max_depth); 'worker' for the others. chunk_rows (1 to
-- 10,000,000; default 50,000); model, version, alias; key (columns carried to the target;
-- default: every column that is not a model input). Either path applies the training set's
-- transformations of a version trained on one: the source gives the raw columns.
-- Raises 22023 bad options, missing or mistyped input columns, bad key columns, a target that
-- lacks a column or has another type for it (42703 / 42804), a blank target; 42809 a target that
-- is not a table; 42501 a target the caller may not insert into or create, a viewer or
-- non-member; 42P01 / 42601 / 42501 a bad source; 0A000 path sql for a version scored by
-- workers; P0002 unknown project,
-- model or version, no active deployment. Nothing is written on error.
-- Callers: authenticated (owner, admin, ml_engineer), service_role.
create or replace function ml.score(project text, source text, target text, options jsonb default '{}') returns bigint
language plpgsql volatile
as $$
declare
    v_options jsonb := coalesce(options, '{}');
    v_model   jsonb;
    v_path    text;
    v_chunk   int;
    v_from    text;
    v_view    text := '_pgmlops_score_source_' operator(pg_catalog.||) pg_catalog.replace(pg_catalog.gen_random_uuid()::text, '-', '');
    v_cols    jsonb;
    v_keys    text[];
    v_parts   text[];
    v_name    text;
    v_target  pg_catalog.regclass;
    v_tcols   jsonb;
    v_names   text[];
    v_types   text[];
    v_c       record;
    v_job     bigint;
begin
    perform ml_private.batch_check_options(v_options, array['path', 'chunk_rows', 'model', 'version', 'alias', 'key']);
    if v_options ? 'path' and (jsonb_typeof(v_options -> 'path') <> 'string' or not (v_options ->> 'path') = any (array['sql', 'worker'])) then
        raise exception 'options.path: must be sql or worker, got %', v_options -> 'path' using errcode = '22023';
    end if;
    if v_options ? 'chunk_rows' and (jsonb_typeof(v_options -> 'chunk_rows') <> 'number'
            or (v_options ->> 'chunk_rows')::numeric not between 1 and 10000000
            or (v_options ->> 'chunk_rows')::numeric operator(pg_catalog.<>) pg_catalog.trunc((v_options ->> 'chunk_rows')::numeric)) then
        raise exception 'options.chunk_rows: must be a whole number from 1 to 10000000, got %', v_options -> 'chunk_rows'
            using errcode = '22023';
    end if;
    v_chunk := coalesce((v_options ->> 'chunk_rows')::int, 50000);
    if target is null or pg_catalog.btrim(target) = '' then
        raise exception 'target: must name a table (schema.name or name)' using errcode = '22023';
    end if;

    v_model := ml_private.batch_model(project, v_options, true);
    -- The faster path (docs/batch-scoring.md): SQL's cost per row grows with the tree levels a row
    -- walks, the worker's is mostly fixed (COPY and JSON), so large tree ensembles go to workers.
    v_path := coalesce(v_options ->> 'path', case
        when v_model ->> 'scoring_path' is distinct from 'compiled' then 'worker'
        when coalesce((v_model ->> 'trees')::numeric * (v_model ->> 'max_depth')::numeric, 0) > 250 then 'worker'
        else 'sql' end);
    if v_path = 'sql' then
        perform ml_private.batch_worker_only(v_model);
    end if;

    -- The source, as the caller: its columns, the caller's privileges, the model's inputs.
    v_from := ml_private.batch_source(source);
    execute pg_catalog.format('create temp view %I as select * from %s s', v_view, v_from);
    execute pg_catalog.format('select from pg_temp.%I limit 0', v_view);
    v_cols := ml_private.batch_columns(pg_catalog.format('pg_temp.%I', v_view)::pg_catalog.regclass);
    execute pg_catalog.format('drop view pg_temp.%I', v_view);
    perform ml_private.batch_arguments_sql(v_model -> 'arguments', v_cols, 's');
    v_keys := ml_private.batch_keys(v_options -> 'key', v_cols, v_model -> 'arguments', true);

    -- The target: appended to when it fits, else created, as the caller.
    begin
        v_parts := pg_catalog.parse_ident(target);
    exception when others then
        raise exception 'target: % is not a table name: %', pg_catalog.quote_literal(target), sqlerrm using errcode = '22023';
    end;
    if pg_catalog.cardinality(v_parts) > 2 then
        raise exception 'target: % is not a table name (schema.name or name)', pg_catalog.quote_literal(target) using errcode = '22023';
    end if;
    v_name := (select pg_catalog.string_agg(pg_catalog.quote_ident(p), '.') from pg_catalog.unnest(v_parts) p);
    v_target := pg_catalog.to_regclass(v_name);
    v_names := array['batch_scoring_id', 'row_number'] operator(pg_catalog.||) v_keys
               operator(pg_catalog.||) array['prediction', 'score', 'probabilities', 'model_version_id'];
    v_types := array['uuid', 'bigint']
               operator(pg_catalog.||) array(select v_cols -> k ->> 'type' from pg_catalog.unnest(v_keys) with ordinality u (k, i) order by i)
               operator(pg_catalog.||) array['jsonb', 'double precision', 'jsonb', 'uuid'];
    if v_target is null then
        execute pg_catalog.format('create table %s (%s)', v_name,
            (select pg_catalog.string_agg(pg_catalog.format('%I %s%s', n, t,
                                                            case when n in ('batch_scoring_id', 'row_number', 'model_version_id') then ' not null' else '' end),
                                          ', ' order by i)
             from unnest(v_names, v_types) with ordinality u (n, t, i)));
        v_target := pg_catalog.to_regclass(v_name);
    else
        if (select c.relkind from pg_catalog.pg_class c where c.oid = v_target) not in ('r', 'p') then
            raise exception 'target: % is not a table', v_target using errcode = '42809';
        end if;
        if not pg_catalog.has_table_privilege(v_target, 'INSERT') then
            raise exception 'target: permission denied to insert into %', v_target using errcode = '42501';
        end if;
        v_tcols := ml_private.batch_columns(v_target);
        for v_c in select u.n, u.t from unnest(v_names, v_types) u (n, t) loop
            if not v_tcols ? v_c.n then
                raise exception 'target: table % has no column % (%); it needs: %', v_target, pg_catalog.quote_ident(v_c.n), v_c.t,
                    (select pg_catalog.string_agg(pg_catalog.format('%I %s', n, t), ', ') from unnest(v_names, v_types) u (n, t))
                    using errcode = '42703', hint = 'Name a new table (ml.score creates it), or one with these columns.';
            end if;
            if v_tcols -> v_c.n ->> 'type' operator(pg_catalog.<>) v_c.t then
                raise exception 'target: column % of table % has type %, not %', pg_catalog.quote_ident(v_c.n), v_target,
                    v_tcols -> v_c.n ->> 'type', v_c.t using errcode = '42804';
            end if;
        end loop;
    end if;

    v_job := ml_private.batch_scoring_create(
        (v_model ->> 'model_version_id')::uuid, (v_model ->> 'deployment_id')::uuid, source,
        (select pg_catalog.format('%I.%I', n.nspname, c.relname) from pg_catalog.pg_class c
         join pg_catalog.pg_namespace n on n.oid = c.relnamespace where c.oid = v_target),
        v_keys, v_path, v_chunk,
        (v_options operator(pg_catalog.-) 'path' operator(pg_catalog.-) 'chunk_rows')
            operator(pg_catalog.||) pg_catalog.jsonb_build_object('search_path', pg_catalog.current_setting('search_path')));
    return v_job;
end
$$;

------------------------------------------------------------------------------------------------
-- The score job's steps (pgmlops.scoring._batch, acting as the caller of ml.score)
------------------------------------------------------------------------------------------------

-- ml_private.batch_stage(p_batch_scoring uuid, p_rows regclass) returns bigint
-- Copies p_rows (a plain temporary table of the calling session, of built-in types only, with
-- row_number bigint 1..n: ml.stage_batch_scoring fills it as the caller) into the scoring's
-- snapshot table, and records rows_total and the start. Returns rows_total. A scoring already
-- staged is left as it is (its rows_total returned). A user may stage only a scoring they made.
-- Raises 22023 p_rows not such a table; 42501 another user's scoring, viewers, non-members;
-- P0002 no such scoring in the acting tenant; 55000 a finished scoring.
create or replace function ml_private.batch_stage(p_batch_scoring uuid, p_rows regclass) returns bigint
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_tenant uuid := ml_private.acting_tenant_id(true);
    v_b      ml.batch_scorings;
    v_n      bigint;
begin
    select * into v_b from ml.batch_scorings b where b.id = p_batch_scoring and b.tenant_id = v_tenant for update;
    if v_b.id is null then
        raise exception 'batch scoring % does not exist', coalesce(p_batch_scoring::text, 'NULL') using errcode = 'P0002';
    end if;
    if ml_private.caller_user_id() is distinct from v_b.created_by and not ml_private.caller_is_service() then
        raise exception 'batch scoring % was made by another user', v_b.id using errcode = '42501';
    end if;
    if v_b.status in ('succeeded', 'failed') then
        raise exception 'batch scoring % has %', v_b.id, v_b.status using errcode = '55000';
    end if;
    if v_b.rows_total is not null then
        return v_b.rows_total;
    end if;
    perform ml_private.batch_check_temp(p_rows, 'rows');
    if exists (select 1 from jsonb_each(ml_private.batch_columns(p_rows)) c where not (c.value ->> 'builtin')::boolean or (c.value ->> 'domain')::boolean) then
        raise exception 'rows: every column must be of a built-in type' using errcode = '22023';
    end if;
    if not exists (select 1 from pg_catalog.pg_attribute a where a.attrelid = p_rows and a.attname = 'row_number'
                   and a.atttypid = 'pg_catalog.int8'::regtype and not a.attisdropped) then
        raise exception 'rows: must have a column row_number bigint' using errcode = '22023';
    end if;
    execute format('create table %s as select * from only %s', ml_private.batch_rows_table(v_b.id), p_rows);
    get diagnostics v_n = row_count;
    execute format('alter table %s add primary key (row_number)', ml_private.batch_rows_table(v_b.id));
    update ml.batch_scorings b set rows_total = v_n, status = 'running', started_at = coalesce(b.started_at, clock_timestamp()), error = null
    where b.id = v_b.id;
    perform ml_private.publish(v_tenant, 'job', 'batch_scoring.started', jsonb_build_object(
        'job_id', v_b.job_id, 'kind', 'score', 'batch_scoring_id', v_b.id, 'rows_total', v_n));
    return v_n;
end
$$;

-- ml.stage_batch_scoring(batch_scoring uuid) returns bigint
-- The first step of a score job: runs the scoring's source as the caller (SECURITY INVOKER,
-- with the search_path ml.score was called with), numbers its rows 1..n in its order and keeps
-- the key and input columns in the scoring's snapshot; returns rows_total. Once staged, returns
-- rows_total at once (a resumed job reads the same rows).
-- Raises what ml.predict_batch raises for the source (42P01, 42601, 42501, 22023); 55000 a
-- finished scoring; P0002 no such scoring; 42501 another user's scoring.
-- Callers: the score job's worker, acting as the user who called ml.score; service_role.
create or replace function ml.stage_batch_scoring(batch_scoring uuid) returns bigint
language plpgsql volatile
as $$
declare
    v_b      record;
    v_saved  text := pg_catalog.current_setting('search_path');
    v_from   text;
    v_suffix text := pg_catalog.replace(pg_catalog.gen_random_uuid()::text, '-', '');
    v_view   text := '_pgmlops_stage_source_' operator(pg_catalog.||) v_suffix;
    v_rows   text := '_pgmlops_stage_rows_' operator(pg_catalog.||) v_suffix;
    v_cols   jsonb;
    v_model  jsonb;
    v_list   text;
    v_n      bigint;
begin
    select b.id, b.rows_total, b.source, b.keys, b.options, b.model_version_id, b.status into v_b
    from ml.batch_scorings b where b.id = batch_scoring and b.tenant_id = ml.current_tenant();
    if v_b.id is null then
        raise exception 'batch scoring % does not exist', coalesce(batch_scoring::text, 'NULL') using errcode = 'P0002';
    end if;
    if v_b.rows_total is not null or v_b.status in ('succeeded', 'failed') then
        return ml_private.batch_stage(v_b.id, null);
    end if;
    v_model := ml_private.batch_model((select p.name from ml.projects p join ml.batch_scorings b on b.project_id = p.id where b.id = v_b.id),
                                      pg_catalog.jsonb_build_object('model', (select m.name from ml.models m join ml.model_versions v on v.model_id = m.id
                                                                               where v.id = v_b.model_version_id),
                                                                    'version', (select v.version from ml.model_versions v where v.id = v_b.model_version_id)),
                                      true);
    perform pg_catalog.set_config('search_path', coalesce(v_b.options ->> 'search_path', v_saved), true);
    v_from := ml_private.batch_source(v_b.source);
    execute pg_catalog.format('create temp view %I as select * from %s s', v_view, v_from);
    perform pg_catalog.set_config('search_path', v_saved, true);
    v_cols := ml_private.batch_columns(pg_catalog.format('pg_temp.%I', v_view)::pg_catalog.regclass);
    perform ml_private.batch_arguments_sql(v_model -> 'arguments', v_cols, 's');
    perform ml_private.batch_keys(pg_catalog.to_jsonb(v_b.keys), v_cols, v_model -> 'arguments', true);
    -- The key and input columns, domains as their base types (the definer side reads built-in types only).
    select pg_catalog.string_agg(case when (v_cols -> c ->> 'domain')::boolean then pg_catalog.format('(s.%I)::%s as %I', c, v_cols -> c ->> 'type', c)
                                      else pg_catalog.format('s.%I', c) end, ', ')
    into v_list
    from (select distinct c from pg_catalog.unnest(v_b.keys operator(pg_catalog.||)
                                                 array(select a ->> 'name' from pg_catalog.jsonb_array_elements(v_model -> 'arguments') a)) c) x;
    execute pg_catalog.format('create temp table %I as select (pg_catalog.row_number() over ())::bigint as row_number, %s from pg_temp.%I s',
                              v_rows, v_list, v_view);
    v_n := ml_private.batch_stage(v_b.id, pg_catalog.format('pg_temp.%I', v_rows)::pg_catalog.regclass);
    execute pg_catalog.format('drop table pg_temp.%I', v_rows);
    execute pg_catalog.format('drop view pg_temp.%I', v_view);
    return v_n;
end
$$;

-- ml_private.batch_scoring_of(p_batch_scoring uuid, p_write boolean) returns ml.batch_scorings
-- The acting tenant's batch scoring, staged and running. Raises P0002 none; 55000 not staged
-- or finished; 42501 another user's (users), viewers with p_write, non-members.
create or replace function ml_private.batch_scoring_of(p_batch_scoring uuid, p_write boolean) returns ml.batch_scorings
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_b ml.batch_scorings;
begin
    select * into v_b from ml.batch_scorings b where b.id = p_batch_scoring and b.tenant_id = ml_private.acting_tenant_id(p_write);
    if v_b.id is null then
        raise exception 'batch scoring % does not exist', coalesce(p_batch_scoring::text, 'NULL') using errcode = 'P0002';
    end if;
    if ml_private.caller_user_id() is distinct from v_b.created_by and not ml_private.caller_is_service() then
        raise exception 'batch scoring % was made by another user', v_b.id using errcode = '42501';
    end if;
    if v_b.status <> 'running' or v_b.rows_total is null then
        raise exception 'batch scoring % is %: not staged and running', v_b.id, v_b.status using errcode = '55000';
    end if;
    return v_b;
end
$$;

-- ml_private.batch_chunk(p_batch_scoring uuid, p_from bigint, p_to bigint)
-- returns table (row_number bigint, key jsonb, prediction jsonb, score float8, probabilities jsonb,
--                model_version_id uuid)
-- Scores the snapshot rows p_from < row_number <= p_to of a compiled scoring in one statement
-- (the compiled function inlined over columns, JIT off), in row_number order.
-- Raises like ml_private.batch_scoring_of; 0A000 a version scored by workers.
-- Callers: ml.score_chunk (as the caller of ml.score).
create or replace function ml_private.batch_chunk(p_batch_scoring uuid, p_from bigint, p_to bigint)
returns table (row_number bigint, key jsonb, prediction jsonb, score float8, probabilities jsonb, model_version_id uuid)
language plpgsql volatile security definer
set search_path = ''
set jit = off
as $$
declare
    v_b       ml.batch_scorings := ml_private.batch_scoring_of(p_batch_scoring, true);
    v_version ml.model_versions;
    v_task    text;
    v_args    jsonb;
    v_out     jsonb;
begin
    select * into v_version from ml.model_versions v where v.id = v_b.model_version_id;
    if ml_private.compiled_function(v_version.id) is null then
        raise exception 'model version % is scored by workers: the sql path cannot score it', v_version.version using errcode = '0A000';
    end if;
    select p.task into v_task from ml.projects p where p.id = v_b.project_id;
    v_args := ml_private.batch_arguments_sql(ml_private.compiled_model_inputs(v_version.signature, v_version.dataset_id) -> 'arguments',
                                             ml_private.batch_columns(ml_private.batch_rows_table(v_b.id)::regclass), 't');
    v_out := ml_private.batch_outputs_sql(v_task, v_version.signature -> 'classes', 's.r');
    return query execute format(
        'select s.row_number, s.key, s.r -> ''prediction'', %s, %s, $1 '
        'from (select a.row_number, a.key, ml_models.%I(a.num, a.cat) as r '
        '      from (select t.row_number, %s as key, %s as num, %s as cat from %s t '
        '            where t.row_number > $2 and t.row_number <= $3 offset 0) a offset 0) s order by s.row_number',
        v_out ->> 'score', v_out ->> 'probabilities',
        ml_private.compiled_model_name(v_version.id), ml_private.batch_key_sql(v_b.keys, 't'), v_args ->> 'num', v_args ->> 'cat',
        ml_private.batch_rows_table(v_b.id))
        using v_version.id, p_from, p_to;
end
$$;

-- ml.batch_scoring_inputs(batch_scoring uuid, from_row bigint, to_row bigint) returns jsonb
-- The inputs of the snapshot rows from_row < row_number <= to_row of a running scoring, as one
-- document: {"columns": [name, ...], "rows": [[value, ...], ...]} in row_number order (one row per
-- row_number: the rows are numbered without gaps), vectors as arrays of numbers. The columns are
-- the model's inputs, or, for a version trained on a training set with transformations, the raw
-- columns those read (ml.apply_transformations turns them into the inputs). One document per
-- chunk: the worker parses it in one call. Raises like ml_private.batch_scoring_of.
-- Callers: the score job's worker (worker path), acting as the caller of ml.score.
create or replace function ml.batch_scoring_inputs(batch_scoring uuid, from_row bigint, to_row bigint) returns jsonb
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_b      ml.batch_scorings := ml_private.batch_scoring_of(batch_scoring, true);
    v_inputs text[];
    v_cols   jsonb;
    v_rows   jsonb;
begin
    select array(select a ->> 'name' from jsonb_array_elements(ml_private.compiled_model_inputs(v.signature, v.dataset_id) -> 'arguments') a)
    into v_inputs
    from ml.model_versions v where v.id = v_b.model_version_id;
    v_cols := ml_private.batch_columns(ml_private.batch_rows_table(v_b.id)::regclass);
    execute format(
        'select coalesce(jsonb_agg(jsonb_build_array(%s) order by t.row_number), ''[]'') from %s t '
        'where t.row_number > $1 and t.row_number <= $2',
        (select string_agg(case when v_cols -> k ->> 'typname' = 'vector' then format('((t.%I)::real[])::float8[]', k)
                                else format('t.%I', k) end, ', ' order by i)
         from unnest(v_inputs) with ordinality u (k, i)),
        ml_private.batch_rows_table(v_b.id))
        into v_rows using from_row, to_row;
    return jsonb_build_object('columns', to_jsonb(v_inputs), 'rows', v_rows);
end
$$;

-- ml.batch_scoring_keys(batch_scoring uuid, from_row bigint, to_row bigint)
-- returns table (row_number bigint, key jsonb)
-- The key columns (options.key of ml.score) of the snapshot rows from_row < row_number <= to_row
-- of a running scoring, as JSON objects, in order. Raises like ml_private.batch_scoring_of.
-- Callers: the score job's worker (worker path: joined to the results it inserts), acting as the
-- caller of ml.score.
create or replace function ml.batch_scoring_keys(batch_scoring uuid, from_row bigint, to_row bigint)
returns table (row_number bigint, key jsonb)
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_b ml.batch_scorings := ml_private.batch_scoring_of(batch_scoring, true);
begin
    return query execute format(
        'select t.row_number, %s from %s t where t.row_number > $1 and t.row_number <= $2 order by t.row_number',
        ml_private.batch_key_sql(v_b.keys, 't'), ml_private.batch_rows_table(v_b.id))
        using from_row, to_row;
end
$$;

-- ml.batch_scoring_progress(batch_scoring uuid, job_id bigint, worker_id text, rows_before bigint,
--                           rows_after bigint) returns bigint
-- Records that the chunk rows_before < row_number <= rows_after is written, in the transaction
-- that wrote it: checks that worker_id still holds the scoring's job (its lease) and that
-- rows_done is still rows_before (no other attempt wrote this chunk), sets rows_done, and
-- announces the progress (topic 'job', event 'batch_scoring.progress'). Returns rows_done.
-- Raises 55000 the job is not held by worker_id (lease lost: the chunk must not commit); 40001
-- rows_done moved (another attempt wrote the chunk); 22023 a job of another scoring, rows_after
-- outside (rows_before, rows_total]; and like ml_private.batch_scoring_of.
-- Callers: the score job's worker, acting as the caller of ml.score.
create or replace function ml.batch_scoring_progress(batch_scoring uuid, job_id bigint, worker_id text,
                                                     rows_before bigint, rows_after bigint) returns bigint
language plpgsql volatile security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_b ml.batch_scorings := ml_private.batch_scoring_of(batch_scoring, true);
begin
    if v_b.job_id is distinct from job_id then
        raise exception 'job_id: job % is not the job of batch scoring %', job_id, v_b.id using errcode = '22023';
    end if;
    perform ml_private.held_job(job_id, worker_id);
    select * into v_b from ml.batch_scorings b where b.id = v_b.id for update;
    if v_b.rows_done <> rows_before then
        raise exception 'batch scoring %: rows_done is %, not % (another attempt wrote this chunk)', v_b.id, v_b.rows_done, rows_before
            using errcode = '40001';
    end if;
    if rows_after is null or rows_after <= rows_before or rows_after > v_b.rows_total then
        raise exception 'rows_after: must be above % and at most %, got %', rows_before, v_b.rows_total, rows_after using errcode = '22023';
    end if;
    update ml.batch_scorings b set rows_done = rows_after where b.id = v_b.id;
    perform ml_private.publish(v_b.tenant_id, 'job', 'batch_scoring.progress', jsonb_build_object(
        'job_id', job_id, 'kind', 'score', 'batch_scoring_id', v_b.id, 'rows_done', rows_after, 'rows_total', v_b.rows_total));
    return rows_after;
end
$$;

-- ml.score_chunk(batch_scoring uuid, job_id bigint, worker_id text) returns bigint
-- The sql path's step: scores the next chunk of a running compiled scoring (after rows_done, at
-- most chunk_rows rows) and inserts it into the target as the caller (SECURITY INVOKER: the
-- caller's privileges and RLS apply to the target), then records the progress in the same
-- transaction (ml.batch_scoring_progress). Returns the rows written (0: nothing left).
-- Raises like ml.batch_scoring_progress and ml_private.batch_chunk; the target's own errors.
-- Callers: the score job's worker, acting as the caller of ml.score.
create or replace function ml.score_chunk(batch_scoring uuid, job_id bigint, worker_id text) returns bigint
language plpgsql volatile
set jit = off
as $$
declare
    v_b     record;
    v_to    bigint;
    v_cols  text;
begin
    select b.id, b.target, b.keys, b.rows_done, b.rows_total, b.chunk_rows, b.status into v_b
    from ml.batch_scorings b where b.id = batch_scoring and b.tenant_id = ml.current_tenant();
    if v_b.id is null then
        raise exception 'batch scoring % does not exist', coalesce(batch_scoring::text, 'NULL') using errcode = 'P0002';
    end if;
    if v_b.status operator(pg_catalog.<>) 'running' or v_b.rows_total is null then
        raise exception 'batch scoring % is %: not staged and running', v_b.id, v_b.status using errcode = '55000';
    end if;
    if v_b.rows_done operator(pg_catalog.>=) v_b.rows_total then
        return 0;
    end if;
    v_to := least(v_b.rows_done operator(pg_catalog.+) v_b.chunk_rows, v_b.rows_total);
    v_cols := (select pg_catalog.string_agg(pg_catalog.format('k.%I', k), ', ') from pg_catalog.unnest(v_b.keys) k);
    execute pg_catalog.format(
        'insert into %1$s (batch_scoring_id, row_number, %2$s prediction, score, probabilities, model_version_id) '
        'select $1, r.row_number, %3$s r.prediction, r.score, r.probabilities, r.model_version_id '
        'from ml_private.batch_chunk($1, $2, $3) r %4$s',
        v_b.target,
        coalesce((select pg_catalog.string_agg(pg_catalog.format('%I', k), ', ') from pg_catalog.unnest(v_b.keys) k) operator(pg_catalog.||) ',', ''),
        coalesce(v_cols operator(pg_catalog.||) ',', ''),
        case when v_cols is null then '' else pg_catalog.format('cross join lateral pg_catalog.jsonb_populate_record(null::%s, r.key) k', v_b.target) end)
        using v_b.id, v_b.rows_done, v_to;
    perform ml.batch_scoring_progress(v_b.id, job_id, worker_id, v_b.rows_done, v_to);
    return v_to operator(pg_catalog.-) v_b.rows_done;
end
$$;

-- ml.finish_batch_scoring(batch_scoring uuid, error text default null) returns jsonb
-- Ends a batch scoring: succeeded (every row written) when error is NULL, else failed with the
-- error; drops its snapshot; announces batch_scoring.succeeded / .failed (topic 'job'). Returns
-- {batch_scoring_id, job_id, status, rows_total, rows_done, target, path, model_version_id}.
-- A finished scoring is returned as it is.
-- Raises 55000 success before every row is written; P0002 no such scoring in the acting
-- tenant; 42501 not a service caller. Callers: service_role (the score job's worker, in the
-- job's transaction on success).
create or replace function ml.finish_batch_scoring(batch_scoring uuid, error text default null) returns jsonb
language plpgsql volatile security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_b ml.batch_scorings;
begin
    perform ml_private.assert_service('ml.finish_batch_scoring');
    select * into v_b from ml.batch_scorings b where b.id = batch_scoring and b.tenant_id = ml_private.acting_tenant_id(true) for update;
    if v_b.id is null then
        raise exception 'batch scoring % does not exist', coalesce(batch_scoring::text, 'NULL') using errcode = 'P0002';
    end if;
    if v_b.status not in ('succeeded', 'failed') then
        if error is null and (v_b.rows_total is null or v_b.rows_done <> v_b.rows_total) then
            raise exception 'batch scoring % has % of % rows written: not finished', v_b.id, v_b.rows_done, coalesce(v_b.rows_total::text, '?')
                using errcode = '55000';
        end if;
        execute format('drop table if exists %s', ml_private.batch_rows_table(v_b.id));
        update ml.batch_scorings b set status = case when error is null then 'succeeded' else 'failed' end,
                                       error = left(error, 4000), finished_at = clock_timestamp()
        where b.id = v_b.id returning * into v_b;
        perform ml_private.publish(v_b.tenant_id, 'job', 'batch_scoring.' || v_b.status, jsonb_build_object(
            'job_id', v_b.job_id, 'kind', 'score', 'batch_scoring_id', v_b.id, 'rows_done', v_b.rows_done,
            'rows_total', v_b.rows_total, 'target', v_b.target));
    end if;
    return jsonb_build_object('batch_scoring_id', v_b.id, 'job_id', v_b.job_id, 'status', v_b.status, 'rows_total', v_b.rows_total,
                              'rows_done', v_b.rows_done, 'target', v_b.target, 'path', v_b.path,
                              'model_version_id', v_b.model_version_id, 'error', v_b.error);
end
$$;

------------------------------------------------------------------------------------------------
-- A snapshot goes with its scoring
------------------------------------------------------------------------------------------------

-- ml_private.batch_drop_rows() returns trigger: after a batch scoring is deleted (with its
-- tenant or project too), drops its snapshot table.
create or replace function ml_private.batch_drop_rows() returns trigger
language plpgsql security definer
set search_path = ''
as $$
begin
    execute format('drop table if exists %s', ml_private.batch_rows_table(old.id));
    return null;
end
$$;

drop trigger if exists batch_scorings_drop_rows on ml.batch_scorings;
create trigger batch_scorings_drop_rows after delete on ml.batch_scorings
    for each row execute function ml_private.batch_drop_rows();

------------------------------------------------------------------------------------------------
-- Grants
------------------------------------------------------------------------------------------------

grant execute on function
    ml.predict_batch(text, text, jsonb),
    ml.score(text, text, text, jsonb),
    ml.stage_batch_scoring(uuid),
    ml.batch_scoring_inputs(uuid, bigint, bigint),
    ml.batch_scoring_keys(uuid, bigint, bigint),
    ml.batch_scoring_progress(uuid, bigint, text, bigint, bigint),
    ml.score_chunk(uuid, bigint, text),
    ml_private.batch_source(text),
    ml_private.batch_columns(regclass),
    ml_private.batch_arguments_sql(jsonb, jsonb, text),
    ml_private.batch_key_sql(text[], text),
    ml_private.batch_check_options(jsonb, text[]),
    ml_private.batch_keys(jsonb, jsonb, jsonb, boolean),
    ml_private.batch_worker_only(jsonb),
    ml_private.batch_model(text, jsonb, boolean),
    ml_private.batch_predict_rows(uuid, regclass),
    ml_private.batch_scoring_create(uuid, uuid, text, text, text[], text, int, jsonb),
    ml_private.batch_stage(uuid, regclass),
    ml_private.batch_chunk(uuid, bigint, bigint)
to authenticated, service_role;
grant execute on function
    ml.finish_batch_scoring(uuid, text),
    ml_private.batch_outputs_sql(text, jsonb, text),
    ml_private.batch_check_temp(regclass, text),
    ml_private.batch_rows_table(uuid),
    ml_private.batch_scoring_of(uuid, boolean)
to service_role;
