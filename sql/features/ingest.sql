-- pgmlops: feature store — validated ingestion
--
-- Every write into a feature group goes through one implementation, ml_private.ingest_rows():
--   1. rows arrive as (row number, entity key, event time as text, values as jsonb), either from a
--      JSON array (ml.ingest, for small batches from any client) or from a session temp table
--      filled by COPY (ml.ingest_staged, for bulk loads from DataFrames, CSV and Parquet);
--   2. each row is checked, set-based, by a validator generated from the group's schema (with
--      pg_jsonschema's jsonb_matches_schema as a fast first pass when that extension is present);
--   3. on_error 'reject': one bad row fails the whole batch (nothing written) with an error
--      naming the row, the feature and the rule; 'quarantine': valid rows land, invalid rows go
--      to ml.feature_quarantine with every rule they broke, and the counts say so;
--   4. valid rows are upserted into ml.feature_values (the same key and time updates in place;
--      a key and time repeated within the batch keeps its last row and counts as `superseded`),
--      and the online store keeps, per entity, the row with the newest event time.
-- Naive timestamps are read as UTC.

------------------------------------------------------------------------------------------------
-- Generated SQL: conversion and validation
------------------------------------------------------------------------------------------------

-- ml_private.feature_validator_sql(p_features jsonb, p_v text) returns text
-- A SQL expression (text) that evaluates, for the jsonb values expression p_v, to a text[] of
-- every rule the values break ('<feature>: <rule>, got <value>'), '{}' when none. Generated from
-- the normalized schema (see ml_private.normalize_feature_schema); identifiers and literals are
-- quoted with format(%L), so schemas cannot inject SQL.
create or replace function ml_private.feature_validator_sql(p_features jsonb, p_v text) returns text
language plpgsql immutable
set search_path = ''
as $$
declare
    v_f      jsonb;
    v_x      text;
    v_num    text;
    v_str    text;
    v_type   text;
    v_rules  text[];
    v_parts  text[] := '{}';
    v_got    text;
begin
    for v_f in select value from jsonb_array_elements(p_features) loop
        v_x := format('(%s -> %L)', p_v, v_f ->> 'name');
        v_num := format('(%s)::numeric', v_x);
        v_str := format('(%s #>> ''{}'')', v_x);
        v_got := format('left(%s::text, 80)', v_x);
        v_type := case v_f ->> 'dtype'
            -- CASE, not AND: SQL does not promise to test the type before the cast.
            when 'int' then format('case when jsonb_typeof(%1$s) = ''number'' then %2$s = trunc(%2$s) and %2$s between -9223372036854775808 and 9223372036854775807 else false end', v_x, v_num)
            when 'float' then format('case when jsonb_typeof(%1$s) = ''number'' then abs(%2$s) <= 1.7976931348623157e308 else false end', v_x, v_num)
            when 'bool' then format('jsonb_typeof(%s) = ''boolean''', v_x)
            when 'timestamp' then format('case when jsonb_typeof(%s) = ''string'' then ml_private.try_timestamptz(%s) is not null else false end', v_x, v_str)
            when 'vector' then format('case when jsonb_typeof(%1$s) = ''array'' then jsonb_array_length(%1$s) = %2$s and not jsonb_path_exists(%1$s, ''$[*] ? (@.type() != "number")'') else false end',
                                      v_x, (v_f ->> 'dim')::int)
            else format('jsonb_typeof(%s) = ''string''', v_x)
        end;
        v_rules := '{}';
        if v_f ? 'min' then
            v_rules := v_rules || case when v_f ->> 'dtype' = 'timestamp'
                then format('case when ml_private.try_timestamptz(%s) < %L::timestamptz then %L || %s end', v_str, v_f ->> 'min',
                            (v_f ->> 'name') || ': must be >= ' || (v_f ->> 'min') || ', got ', v_got)
                else format('case when %s < %s then %L || %s end', v_num, v_f ->> 'min',
                            (v_f ->> 'name') || ': must be >= ' || (v_f ->> 'min') || ', got ', v_got) end;
        end if;
        if v_f ? 'max' then
            v_rules := v_rules || case when v_f ->> 'dtype' = 'timestamp'
                then format('case when ml_private.try_timestamptz(%s) > %L::timestamptz then %L || %s end', v_str, v_f ->> 'max',
                            (v_f ->> 'name') || ': must be <= ' || (v_f ->> 'max') || ', got ', v_got)
                else format('case when %s > %s then %L || %s end', v_num, v_f ->> 'max',
                            (v_f ->> 'name') || ': must be <= ' || (v_f ->> 'max') || ', got ', v_got) end;
        end if;
        if v_f ? 'allowed' then
            v_rules := v_rules || format('case when not (%L::jsonb @> %s) then %L || %s end', v_f -> 'allowed', v_x,
                                         (v_f ->> 'name') || ': must be one of ' || (v_f -> 'allowed')::text || ', got ', v_got);
        end if;
        if v_f ? 'regex' then
            v_rules := v_rules || format('case when %s !~ %L then %L || %s end', v_str, v_f ->> 'regex',
                                         (v_f ->> 'name') || ': must match ' || (v_f ->> 'regex') || ', got ', v_got);
        end if;
        if v_f ? 'max_length' then
            v_rules := v_rules || format('case when length(%s) > %s then %L || length(%s) || '' characters'' end', v_str,
                                         (v_f ->> 'max_length')::int,
                                         (v_f ->> 'name') || ': must be at most ' || (v_f ->> 'max_length') || ' characters, got ', v_str);
        end if;
        v_parts := v_parts || format(
            'case when %1$s is null or jsonb_typeof(%1$s) = ''null'' then %2$s when not (%3$s) then array[%4$L || %5$s] %6$s end',
            v_x,
            case when (v_f ->> 'nullable')::boolean then 'null::text[]'
                 else format('array[%L]', (v_f ->> 'name') || ': must not be null') end,
            v_type,
            (v_f ->> 'name') || ': must be of type ' || (v_f ->> 'dtype')
                || coalesce('(' || (v_f ->> 'dim') || ')', '') || ', got ',
            v_got,
            case when cardinality(v_rules) > 0
                 then format('else array_remove(array[%s], null)', array_to_string(v_rules, ', ')) else '' end);
    end loop;
    return format('coalesce(%s, ''{}''::text[])', array_to_string(v_parts, ' || '));
end
$$;

-- ml_private.event_time_sql(p_col text) returns text
-- A SQL expression parsing the text expression p_col as the event time, NULL when it is not a
-- timestamp. Common ISO forms take a direct cast; anything else (or a day past the 28th, which
-- may not exist in its month) goes through ml_private.try_timestamptz, which never raises.
create or replace function ml_private.event_time_sql(p_col text) returns text
language sql immutable
set search_path = ''
as $$
    select format(
        'case when %1$s ~ ''^\s*[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])([ T]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,9})?)?)?\s*(Z|[+-][0-9]{2}(:?[0-9]{2})?)?\s*$''
              then %1$s::timestamptz else ml_private.try_timestamptz(%1$s) end', p_col)
$$;

-- ml_private.feature_parse_sql(p_spec jsonb, p_col text, p_fast boolean default false) returns text
-- A SQL expression parsing the text expression p_col (a CSV, Parquet or DataFrame field sent
-- by COPY) as the feature's dtype: bigint, float8, boolean, text, timestamptz, or jsonb for
-- vectors; NULL when it does not parse (the caller tells that apart from an empty field).
-- Regular expressions guard every cast, so bad text never fails the batch; the one exception
-- is a float whose magnitude is below 1e-307 written out in full, which float8 refuses.
create or replace function ml_private.feature_parse_sql(p_spec jsonb, p_col text, p_fast boolean default false) returns text
language sql immutable
set search_path = ''
as $$
    select case
        -- The fast form: plain casts, which raise on bad text (ml.ingest_staged then retries
        -- with the guarded form below). Vectors always take the guarded form.
        -- Each accepts exactly what the guarded form accepts: no NaN or infinities, no hex or
        -- underscores in ints (PostgreSQL 16+ reads them), booleans always guarded.
        when p_fast and p_spec ->> 'dtype' = 'int' then format(
            'case when translate(%1$s, E''0123456789+-. \t\r\n'', '''') = '''' then nullif(btrim(%1$s), '''')::bigint end', p_col)
        when p_fast and p_spec ->> 'dtype' = 'float' then format(
            'nullif(nullif(nullif(nullif(btrim(%1$s), '''')::float8, ''NaN''), ''Infinity''), ''-Infinity'')', p_col)
        when p_fast and p_spec ->> 'dtype' = 'timestamp' then format('nullif(btrim(%s), %L)::timestamptz', p_col, '')
        else case p_spec ->> 'dtype'
        when 'int' then format(
            'case when %1$s ~ ''^\s*[+-]?[0-9]{1,19}(\.0*)?\s*$''
                  then case when split_part(btrim(%1$s), ''.'', 1)::numeric between -9223372036854775808 and 9223372036854775807
                            then split_part(btrim(%1$s), ''.'', 1)::bigint end end', p_col)
        when 'float' then format(
            'case when %1$s ~* ''^\s*[+-]?([0-9]{1,200}\.?[0-9]*|\.[0-9]+)(e[+-]?[0-9]{1,2})?\s*$'' then %1$s::float8 end', p_col)
        when 'bool' then format(
            'case when lower(btrim(%1$s)) in (''true'', ''t'', ''1'', ''yes'', ''y'') then true
                  when lower(btrim(%1$s)) in (''false'', ''f'', ''0'', ''no'', ''n'') then false end', p_col)
        when 'timestamp' then ml_private.event_time_sql(p_col)
        when 'vector' then format(
            'case when %1$s ~ ''^\s*\[\s*(-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]{1,3})?(\s*,\s*-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]{1,3})?)*)?\s*\]\s*$''
                  then case when jsonb_array_length(%1$s::jsonb) = %2$s then %1$s::jsonb end end', p_col, (p_spec ->> 'dim')::int)
        else p_col
    end end
$$;

-- ml_private.feature_staged_sql(p_features jsonb, p_staging regclass, p_key text, p_time text,
--                               p_row_col text, p_fast boolean default false) returns text
-- The query that reads a staging table for ml_private.ingest_rows, yielding per row (row_no,
-- entity_key, event_time_raw, values, errors). Each field is parsed once into its dtype and the
-- rules are checked on the typed value (far cheaper than going through jsonb); `values` holds
-- the typed values of a valid row, or the text as received for an invalid one (quarantine).
-- Messages match ml_private.feature_validator_sql's. Features without a staging column are
-- left out (absent = null).
create or replace function ml_private.feature_staged_sql(p_features jsonb, p_staging regclass, p_key text, p_time text,
                                              p_row_col text, p_fast boolean default false)
returns text
language plpgsql stable
set search_path = ''
as $$
declare
    v_f       jsonb;
    v_name    text;
    v_raw     text;
    v_typed   text;
    v_got     text;
    v_bound   text;
    v_rules   text[];
    v_parse   text[] := '{}';
    v_checks  text[] := '{}';
    v_typed_j text[] := '{}';
    v_raw_j   text[] := '{}';
    v_empty   text;
    v_key     text;
begin
    for v_f in select value from jsonb_array_elements(p_features) loop
        v_name := v_f ->> 'name';
        continue when not exists (select 1 from pg_attribute a where a.attrelid = p_staging and a.attname = v_name
                                  and a.attnum > 0 and not a.attisdropped);
        v_raw := format('q.%I', 'raw_' || v_name);
        v_typed := format('q.%I', v_name);
        v_got := format('left(to_jsonb(%s)::text, 80)', v_typed);
        v_parse := v_parse || format('s.%1$I::text as %2$I, %3$s as %1$I', v_name, 'raw_' || v_name,
                                     ml_private.feature_parse_sql(v_f, format('s.%I::text', v_name), p_fast));
        v_typed_j := v_typed_j || format('%L, %s', v_name, v_typed);
        v_raw_j := v_raw_j || format('%L, %s', v_name, v_raw);
        v_rules := '{}';
        foreach v_key in array array['min', 'max'] loop
            continue when not v_f ? v_key;
            v_bound := case when v_f ->> 'dtype' = 'timestamp' then format('%L::timestamptz', v_f ->> v_key) else v_f ->> v_key end;
            v_rules := v_rules || format('case when %s %s %s then %L || %s end', v_typed,
                case v_key when 'min' then '<' else '>' end, v_bound,
                v_name || case v_key when 'min' then ': must be >= ' else ': must be <= ' end || (v_f ->> v_key) || ', got ',
                case when v_f ->> 'dtype' = 'timestamp' then format('to_jsonb(%s)::text', v_raw) else v_got end);
        end loop;
        if v_f ? 'allowed' then
            v_rules := v_rules || format('case when not (%L::jsonb @> to_jsonb(%s)) then %L || %s end', v_f -> 'allowed', v_typed,
                                         v_name || ': must be one of ' || (v_f -> 'allowed')::text || ', got ', v_got);
        end if;
        if v_f ? 'regex' then
            v_rules := v_rules || format('case when %s !~ %L then %L || %s end', v_typed, v_f ->> 'regex',
                                         v_name || ': must match ' || (v_f ->> 'regex') || ', got ', v_got);
        end if;
        if v_f ? 'max_length' then
            v_rules := v_rules || format('case when length(%s) > %s then %L || length(%s) || %L end', v_typed,
                                         (v_f ->> 'max_length')::int,
                                         v_name || ': must be at most ' || (v_f ->> 'max_length') || ' characters, got ',
                                         v_typed, ' characters');
        end if;
        -- Empty fields are nulls, except for text, where only a NULL (unquoted empty CSV field) is.
        v_empty := case when v_f ->> 'dtype' in ('text', 'category') then format('%s is null', v_raw)
                        else format('nullif(btrim(%s), %L) is null', v_raw, '') end;
        v_checks := v_checks || format(
            'case when %1$s then %2$s when %3$s is null then array[%4$L || left(to_jsonb(%5$s)::text, 80)] %6$s end',
            v_empty,
            case when (v_f ->> 'nullable')::boolean then 'null::text[]' else format('array[%L]', v_name || ': must not be null') end,
            v_typed,
            v_name || ': must be of type ' || (v_f ->> 'dtype') || coalesce('(' || (v_f ->> 'dim') || ')', '') || ', got ',
            v_raw,
            case when cardinality(v_rules) > 0 then format('else array_remove(array[%s], null)', array_to_string(v_rules, ', '))
                 else '' end);
    end loop;

    return format(
        $q$select q.row_no, q.entity_key, q.event_time_raw,
                  case when cardinality(q.errors) = 0 then %s else %s end as values, q.errors
           from (select q.*, %s as errors
                 from (select %s as row_no, s.%I::text as entity_key, s.%I::text as event_time_raw %s
                       from %s s offset 0) q  -- offset 0: parse each field once, not once per use
                ) q$q$,
        case when cardinality(v_typed_j) > 0 then 'jsonb_strip_nulls(jsonb_build_object(' || array_to_string(v_typed_j, ', ') || '))'
             else '''{}''::jsonb' end,
        case when cardinality(v_raw_j) > 0 then 'jsonb_strip_nulls(jsonb_build_object(' || array_to_string(v_raw_j, ', ') || '))'
             else '''{}''::jsonb' end,
        case when cardinality(v_checks) > 0 then format('coalesce(%s, ''{}''::text[])', array_to_string(v_checks, ' || '))
             else '''{}''::text[]' end,
        p_row_col, p_key, p_time,
        coalesce(', ' || nullif(array_to_string(v_parse, ', '), ''), ''),
        p_staging);
end
$$;

------------------------------------------------------------------------------------------------
-- The implementation
------------------------------------------------------------------------------------------------

-- ml_private.ingest_rows(p_group ml.feature_groups, p_input text, p_on_error text, p_source text,
--                        p_staged boolean, p_fast boolean default false) returns jsonb
-- Ingests the rows of the query p_input into p_group (see the header). JSON input
-- (p_staged false) yields (row_no bigint, entity_key text, event_time_raw text, values jsonb)
-- and is checked here with ml_private.feature_validator_sql, unknown keys included; staged input
-- (p_staged true, from ml_private.feature_staged_sql) also yields `errors text[]`, its features
-- already parsed and checked. The join key and event time are checked here for both. Returns {ingestion_id, group, version, rows, written, inserted,
-- updated, quarantined, superseded, online_updated}. Raises 22023 for the first invalid row in
-- reject mode (DETAIL: how many rows are invalid and the first few errors).
create or replace function ml_private.ingest_rows(p_group ml.feature_groups, p_input text, p_on_error text, p_source text,
                                       p_staged boolean, p_fast boolean default false)
returns jsonb
language plpgsql volatile
set search_path = ''
set timezone = 'UTC'
set work_mem = '256MB'  -- the batch is sorted twice (dedup, online store): keep it off disk
as $$
declare
    v_validator   text := ml_private.feature_validator_sql(p_group.features, 'i.values');
    v_names       text[] := array(select f ->> 'name' from jsonb_array_elements(p_group.features) f);
    v_fast_pass   text := 'false';
    v_ingestion   uuid := gen_random_uuid();
    v_rows        bigint;
    v_invalid     bigint;
    v_first       record;
    v_detail      text;
    v_chunk       record;
    v_written     bigint := 0;
    v_inserted    bigint := 0;
    v_valid       bigint;
    v_online      bigint;
    v_result      jsonb;
    v_native      boolean := (select mode = 'native' from ml_private.time_partitioned_tables
                              where table_name = 'ml.feature_values');
begin
    if p_on_error is null or p_on_error not in ('reject', 'quarantine') then
        raise exception 'on_error: must be reject or quarantine, got %', coalesce(quote_literal(p_on_error), 'NULL')
            using errcode = '22023';
    end if;
    -- pg_jsonschema checks a row in native code; rows it passes need no SQL validation.
    -- (Timestamp bounds are not in the JSON Schema, so groups with them always take the SQL path.)
    if exists (select 1 from pg_extension where extname = 'pg_jsonschema')
       and not exists (select 1 from jsonb_array_elements(p_group.features) f where f ->> 'dtype' = 'timestamp') then
        v_fast_pass := format('extensions.jsonb_matches_schema(%L::json, i.values)', p_group.json_schema);
        if to_regprocedure('extensions.jsonb_matches_schema(json, jsonb)') is null then
            v_fast_pass := replace(v_fast_pass, 'extensions.', 'public.');
        end if;
    end if;

    execute format($q$
        create temp table _pgmlops_ingest on commit drop as
        select c.row_no, c.entity_key, c.event_time_raw, c.event_time, c.values,
               case when c.entity_key is null then array[%L] else '{}'::text[] end
               || case when c.event_time is null or not isfinite(c.event_time)
                            or lower(btrim(c.event_time_raw)) in ('now', 'today', 'tomorrow', 'yesterday', 'epoch')
                       then array[format('%s: must be a timestamp, got %%s', coalesce(quote_literal(left(c.event_time_raw, 80)), 'null'))]
                       else '{}'::text[] end
               || c.errors as errors
        from (
            select i.row_no, nullif(btrim(i.entity_key), '') as entity_key, i.event_time_raw,
                   %s as event_time, coalesce(i.values, '{}'::jsonb) as values,
                   %s as errors
            from (%s) i
        ) c
    $q$,
        p_group.join_key || ': must not be null or empty',
        p_group.event_time_column,
        case when p_fast then 'nullif(btrim(i.event_time_raw), '''')::timestamptz' else ml_private.event_time_sql('i.event_time_raw') end,
        case when p_staged then 'i.errors' else format(
            $e$case when i.values is null or jsonb_typeof(i.values) <> 'object' then array['values: must be a JSON object']
                    when %s then '{}'::text[]
                    else %s || coalesce(array(select k || %L from jsonb_object_keys(i.values) k where not k = any (%L::text[])), '{}')
               end$e$,
            v_fast_pass, v_validator,
            ': is not a feature of group ' || p_group.name || ' version ' || p_group.version, v_names) end,
        p_input);
    get diagnostics v_rows = row_count;

    select count(*) into v_invalid from pg_temp._pgmlops_ingest where cardinality(errors) > 0;
    if v_invalid > 0 and p_on_error = 'reject' then
        select row_no, entity_key, event_time_raw, errors into v_first
        from pg_temp._pgmlops_ingest where cardinality(errors) > 0 order by row_no limit 1;
        select string_agg(format('row %s: %s', row_no, array_to_string(errors, '; ')), E'\n' order by row_no) into v_detail
        from (select row_no, errors from pg_temp._pgmlops_ingest where cardinality(errors) > 0 order by row_no limit 5) x;
        raise exception 'row % (% %, % %): %', v_first.row_no, p_group.join_key,
            coalesce(quote_literal(v_first.entity_key), 'null'), p_group.event_time_column,
            coalesce(quote_literal(v_first.event_time_raw), 'null'), array_to_string(v_first.errors, '; ')
            using errcode = '22023',
                  detail = format(E'%s of %s rows break the rules of feature group %s version %s; nothing was written. First ones:\n%s',
                                  v_invalid, v_rows, p_group.name, p_group.version, v_detail),
                  hint = 'Fix the rows, or ingest with on_error => ''quarantine'' to load the valid rows and keep the others in ml.feature_quarantine.';
    end if;

    insert into ml.feature_ingestions (id, tenant_id, group_id, source, on_error, rows_in, created_by)
    values (v_ingestion, p_group.tenant_id, p_group.id, coalesce(p_source, 'unknown'), p_on_error, v_rows,
            ml_private.caller_user_id());

    if v_invalid > 0 then
        insert into ml.feature_quarantine (tenant_id, group_id, ingestion_id, row_number, entity_key, event_time, values, errors)
        select p_group.tenant_id, p_group.id, v_ingestion, row_no, entity_key, event_time_raw, values, errors
        from pg_temp._pgmlops_ingest where cardinality(errors) > 0;
    end if;

    -- The last row of each (entity, time) in the batch wins; ON CONFLICT cannot touch a row twice.
    create temp table _pgmlops_valid on commit drop as
    select distinct on (entity_key, event_time) entity_key, event_time, jsonb_strip_nulls(values) as values
    from pg_temp._pgmlops_ingest where cardinality(errors) = 0
    order by entity_key, event_time, row_no desc;
    get diagnostics v_valid = row_count;

    -- Native partitioning: make the partitions the data needs (one call per chunk it touches).
    if v_native then
        for v_chunk in
            select distinct lower(ml_private.partition_bounds('ml.feature_values', event_time)) as at
            from pg_temp._pgmlops_valid
        loop
            perform ml_private.ensure_time_partitions('ml.feature_values', v_chunk.at, v_chunk.at);
        end loop;
    end if;

    if v_native then
        -- A natively partitioned table cannot return xmax, so count the keys already stored first.
        select v_valid - count(*) into v_inserted from pg_temp._pgmlops_valid v
        where exists (select 1 from ml.feature_values f
                      where f.tenant_id = p_group.tenant_id and f.group_id = p_group.id
                        and f.entity_key = v.entity_key and f.event_time = v.event_time);
        insert into ml.feature_values as fv (tenant_id, group_id, entity_key, event_time, values, ingestion_id)
        select p_group.tenant_id, p_group.id, entity_key, event_time, values, v_ingestion from pg_temp._pgmlops_valid
        on conflict (tenant_id, group_id, entity_key, event_time)
        do update set values = excluded.values, ingested_at = now(), ingestion_id = excluded.ingestion_id;
        get diagnostics v_written = row_count;
    else
        with written as (
            insert into ml.feature_values as fv (tenant_id, group_id, entity_key, event_time, values, ingestion_id)
            select p_group.tenant_id, p_group.id, entity_key, event_time, values, v_ingestion from pg_temp._pgmlops_valid
            on conflict (tenant_id, group_id, entity_key, event_time)
            do update set values = excluded.values, ingested_at = now(), ingestion_id = excluded.ingestion_id
            returning (xmax = 0) as inserted  -- a row inserted, not updated, has no xmax
        )
        select count(*), count(*) filter (where inserted) into v_written, v_inserted from written;
    end if;

    insert into ml.feature_online as o (tenant_id, group_id, entity_key, event_time, values)
    select distinct on (entity_key) p_group.tenant_id, p_group.id, entity_key, event_time, values
    from pg_temp._pgmlops_valid order by entity_key, event_time desc
    on conflict (tenant_id, group_id, entity_key)
    do update set event_time = excluded.event_time, values = excluded.values, updated_at = now()
    where o.event_time <= excluded.event_time;
    get diagnostics v_online = row_count;

    -- The version's typed tables (docs/features.md), written from the same rows.
    perform ml_private.write_typed_rows(p_group, v_ingestion);

    update ml.feature_ingestions set
        written = v_written, inserted = v_inserted, updated = v_written - v_inserted, quarantined = v_invalid,
        superseded = v_rows - v_invalid - v_valid, online_updated = v_online, finished_at = clock_timestamp()
    where id = v_ingestion;

    v_result := jsonb_build_object(
        'ingestion_id', v_ingestion, 'group', p_group.name, 'version', p_group.version,
        'rows', v_rows, 'written', v_written, 'inserted', v_inserted, 'updated', v_written - v_inserted,
        'quarantined', v_invalid, 'superseded', v_rows - v_invalid - v_valid, 'online_updated', v_online);
    perform ml_private.publish(p_group.tenant_id, 'features', 'features.ingested',
        v_result || jsonb_build_object('group_id', p_group.id, 'source', p_source));
    drop table pg_temp._pgmlops_ingest;
    drop table pg_temp._pgmlops_valid;
    return v_result;
end
$$;

-- ml_private.write_typed_rows(p_group ml.feature_groups, p_ingestion uuid) returns void
-- Upserts the validated rows of pg_temp._pgmlops_valid (entity_key, event_time, values jsonb)
-- into the group version's offline table, and the newest per entity into its online table.
create or replace function ml_private.write_typed_rows(p_group ml.feature_groups, p_ingestion uuid) returns void
language plpgsql volatile
set search_path = ''
set timezone = 'UTC'
as $$
declare
    v_cols    text;
    v_sources text;
    v_updates text;
    v_from    timestamptz;
    v_to      timestamptz;
begin
    select string_agg(format('%I', f ->> 'name'), ', ' order by o), string_agg(format('r.%I', f ->> 'name'), ', ' order by o),
           string_agg(format('%1$I = excluded.%1$I', f ->> 'name'), ', ' order by o)
    into v_cols, v_sources, v_updates
    from jsonb_array_elements(p_group.features) with ordinality x (f, o);
    select min(event_time), max(event_time) into v_from, v_to from pg_temp._pgmlops_valid;
    if v_from is null then
        return;
    end if;
    perform ml_private.ensure_time_partitions(p_group.offline_table, v_from, v_to);
    execute format(
        'insert into %1$s as t (tenant_id, entity_key, event_time, %2$s, ingestion_id)
         select $1, v.entity_key, v.event_time, %3$s, $2
         from pg_temp._pgmlops_valid v cross join lateral jsonb_populate_record(null::%1$s, v.values) r
         on conflict (tenant_id, entity_key, event_time)
         do update set %4$s, ingested_at = now(), ingestion_id = excluded.ingestion_id',
        p_group.offline_table, v_cols, v_sources, v_updates)
        using p_group.tenant_id, p_ingestion;
    execute format(
        'insert into %1$s as t (tenant_id, entity_key, event_time, %2$s, ingestion_id)
         select distinct on (v.entity_key) $1, v.entity_key, v.event_time, %3$s, $2
         from pg_temp._pgmlops_valid v cross join lateral jsonb_populate_record(null::%1$s, v.values) r
         order by v.entity_key, v.event_time desc
         on conflict (tenant_id, entity_key)
         do update set event_time = excluded.event_time, %4$s, ingested_at = now(), ingestion_id = excluded.ingestion_id
         where t.event_time <= excluded.event_time',
        p_group.online_table, v_cols, v_sources, v_updates)
        using p_group.tenant_id, p_ingestion;
end
$$;

------------------------------------------------------------------------------------------------
-- API: ingestion
------------------------------------------------------------------------------------------------

-- ml.ingest(group text, rows jsonb, on_error text default 'reject') returns jsonb
-- Ingests a JSON array of row objects into the group ('name' or 'name@version'); each row holds
-- the join key, the event time and any of the group's features (absent = null), e.g.
--   select ml.ingest('customer', '[{"customer_id": "c1", "event_time": "2026-01-01T10:00:00Z", "spend_30d": 42.5}]');
-- Returns the counts {ingestion_id, group, version, rows, written, inserted, updated,
-- quarantined, superseded, online_updated}. For bulk loads use ml.ingest_staged (COPY first).
-- Raises 22023 rows not a non-empty array (at most 50,000 rows), a bad on_error, or (reject
-- mode) an invalid row: the message names the row (1-based), its key and time, the feature and
-- the rule; 55000 archived group; P0002 unknown group; 42501 viewers and non-members. Nothing is
-- written on error. Callers: authenticated (owner, admin, ml_engineer), service_role.
create or replace function ml.ingest("group" text, rows jsonb, on_error text default 'reject') returns jsonb
language plpgsql volatile security definer
set search_path = ''
set timezone = 'UTC'
as $$
declare
    v_tenant uuid := ml_private.acting_tenant_id(true);
    v_group  ml.feature_groups := ml_private.find_feature_group(v_tenant, ingest."group", true);
begin
    if rows is null or jsonb_typeof(rows) <> 'array' or jsonb_array_length(rows) = 0 then
        raise exception 'rows: must be a non-empty JSON array of objects, got %',
            coalesce(case when jsonb_typeof(rows) = 'array' then 'an empty array' else jsonb_typeof(rows) end, 'NULL')
            using errcode = '22023';
    end if;
    if jsonb_array_length(rows) > 50000 then
        raise exception 'rows: at most 50000 rows per call, got %', jsonb_array_length(rows)
            using errcode = '22023', hint = 'Load bulk data with COPY and ml.ingest_staged (pgmlops features ingest FILE).';
    end if;
    return ml_private.ingest_rows(v_group, format(
        $q$select r.ord as row_no, r.value ->> %1$L as entity_key, r.value ->> %2$L as event_time_raw,
                  case when jsonb_typeof(r.value) = 'object' then r.value - %1$L - %2$L end as values
           from jsonb_array_elements(%3$L::jsonb) with ordinality r (value, ord)$q$,
        v_group.join_key, v_group.event_time_column, ml_private.normalize_json_rows(v_group.features, rows)),
        on_error, 'ml.ingest', false);
end
$$;

-- ml_private.normalize_json_rows(p_features jsonb, p_rows jsonb) returns jsonb
-- p_rows with values stored the same way whichever client sent them: integral numbers of int
-- features as integers (3.0 -> 3) and timestamps as ISO 8601 in UTC. Values that do not parse
-- are left as they are, for the validator to report.
create or replace function ml_private.normalize_json_rows(p_features jsonb, p_rows jsonb) returns jsonb
language sql stable
set search_path = ''
set timezone = 'UTC'
as $$
    select case
        when not exists (select 1 from jsonb_array_elements(p_features) f where f ->> 'dtype' in ('int', 'timestamp')) then p_rows
        else (
            select coalesce(jsonb_agg(
                case when jsonb_typeof(r.value) <> 'object' then r.value
                     else r.value || coalesce((
                         select jsonb_object_agg(f ->> 'name', case f ->> 'dtype'
                                    when 'int' then to_jsonb(trunc((r.value ->> (f ->> 'name'))::numeric))
                                    else to_jsonb(ml_private.try_timestamptz(r.value ->> (f ->> 'name'))) end)
                         from jsonb_array_elements(p_features) f
                         where case f ->> 'dtype'
                                   when 'int' then jsonb_typeof(r.value -> (f ->> 'name')) = 'number'
                                        and (r.value ->> (f ->> 'name'))::numeric = trunc((r.value ->> (f ->> 'name'))::numeric)
                                   when 'timestamp' then jsonb_typeof(r.value -> (f ->> 'name')) = 'string'
                                        and ml_private.try_timestamptz(r.value ->> (f ->> 'name')) is not null
                                   else false end), '{}') end
                order by r.ord), '[]')
            from jsonb_array_elements(p_rows) with ordinality r (value, ord))
    end
$$;

-- ml.ingest_staged(group text, staging regclass, on_error text default 'reject', source text default null)
-- returns jsonb
-- Bulk ingestion: validates and loads every row of `staging`, a temporary table of the caller's
-- own session (filled with COPY; `pgmlops features ingest` and pgmlops.features.ingest() do
-- this for DataFrames, CSV and Parquet). Its columns: the join key, the event time, any of the
-- group's features (any type; read as text and parsed per dtype) and optionally `_row` (bigint,
-- the row number reported in errors; without it rows are numbered in scan order). Counts and
-- errors as ml.ingest; `source` is recorded with the ingestion (e.g. the file name).
-- Raises 22023 also for a missing key or time column, a column that is not a feature, or a
-- staging table that is not a temporary table of this session; nothing is written on error.
create or replace function ml.ingest_staged("group" text, staging regclass, on_error text default 'reject', source text default null)
returns jsonb
language plpgsql volatile security definer
set search_path = ''
set timezone = 'UTC'
as $$
declare
    v_tenant  uuid := ml_private.acting_tenant_id(true);
    v_group   ml.feature_groups := ml_private.find_feature_group(v_tenant, ingest_staged."group", true);
    v_cols    text[];
    v_unknown text[];
    v_row     text;
begin
    -- The caller's own temp table only: this function runs with the owner's rights and must not
    -- read tables the caller could not.
    if staging is null or not exists (select 1 from pg_class c where c.oid = staging and c.relpersistence = 't'
                                      and c.relnamespace = pg_my_temp_schema()) then
        raise exception 'staging: % is not a temporary table of this session', coalesce(staging::text, 'NULL')
            using errcode = '22023', hint = 'create temp table ...; copy it from stdin; then call ml.ingest_staged.';
    end if;
    select array_agg(a.attname::text order by a.attnum) into v_cols
    from pg_attribute a where a.attrelid = staging and a.attnum > 0 and not a.attisdropped;
    if not v_group.join_key = any (v_cols) then
        raise exception 'staging: the join key column % is missing (columns: %)', v_group.join_key, array_to_string(v_cols, ', ')
            using errcode = '22023';
    end if;
    if not v_group.event_time_column = any (v_cols) then
        raise exception 'staging: the event time column % is missing (columns: %)', v_group.event_time_column,
            array_to_string(v_cols, ', ') using errcode = '22023';
    end if;
    v_unknown := array(select c from unnest(v_cols) c
                       where c not in (v_group.join_key, v_group.event_time_column, '_row')
                         and not exists (select 1 from jsonb_array_elements(v_group.features) f where f ->> 'name' = c));
    v_row := case when '_row' = any (v_cols) then 's._row::bigint' else 'row_number() over ()' end;
    if cardinality(v_unknown) > 0 then
        raise exception 'staging: column % is not a feature of group % version % (it has: %)', v_unknown[1], v_group.name,
            v_group.version, (select string_agg(f ->> 'name', ', ') from jsonb_array_elements(v_group.features) f)
            using errcode = '22023';
    end if;

    -- Clean data (the usual case) takes plain casts; the first field that does not parse sends the
    -- whole batch down the guarded path, which reports it as a row error instead of failing.
    begin
        return ml_private.ingest_rows(v_group,
            ml_private.feature_staged_sql(v_group.features, staging, v_group.join_key, v_group.event_time_column, v_row, true),
            on_error, coalesce(source, 'ml.ingest_staged'), true, true);
    exception when invalid_text_representation or invalid_datetime_format or datetime_field_overflow
                    or numeric_value_out_of_range or invalid_parameter_value then
        if sqlstate = '22023' and sqlerrm like 'row %' then
            raise;  -- a rule broken in reject mode: the fast path found it, no need to look again
        end if;
    end;
    return ml_private.ingest_rows(v_group,
        ml_private.feature_staged_sql(v_group.features, staging, v_group.join_key, v_group.event_time_column, v_row, false),
        on_error, coalesce(source, 'ml.ingest_staged'), true, false);
end
$$;

------------------------------------------------------------------------------------------------
-- Grants
------------------------------------------------------------------------------------------------

grant execute on function
    ml.ingest(text, jsonb, text),
    ml.ingest_staged(text, regclass, text, text)
to authenticated, service_role;
