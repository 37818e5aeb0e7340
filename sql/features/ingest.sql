-- pgmlops: feature store — validated ingestion
--
-- Every write into a feature group version goes into its two typed tables (docs/features.md):
-- the offline table gets every valid row, the online table the newest row per entity.
--   1. rows arrive either as a JSON array (ml.ingest, for small batches from any client) or in a
--      session temp table filled by COPY (ml.ingest_staged, for bulk loads from DataFrames, CSV
--      and Parquet), the fields as text;
--   2. each row is checked set-based: every field is parsed once into its column's type and
--      every rule is a column expression on the typed value, generated from the group's schema
--      (JSON rows are checked on their JSON types first, by ml_private.feature_validator_sql);
--   3. on_error 'reject': one bad row fails the whole batch (nothing written) with an error
--      naming the row, the key, the event time, the feature and the rule; 'quarantine': valid
--      rows land, invalid rows go to ml.feature_quarantine as received with every rule they
--      broke, and the counts say so;
--   4. the same key and event time updates the stored row in place; a key and time repeated
--      within the batch keeps its last row and counts as `superseded`; the online table keeps,
--      per entity, the row with the newest event time. rows = written + quarantined + superseded.
--
-- Two paths, one result. A staged batch first takes the fast path (ml_private.ingest_staged_fast):
-- one INSERT ... SELECT reads the staged rows once, parses and checks them in the SELECT and
-- writes them to the offline table, with plain casts and no deduplication. Any row it cannot take
-- as it is (a field that does not parse, a broken rule, a key and time already stored or
-- repeated) raises inside that statement, which undoes it, and the batch goes down the careful
-- path (ml_private.ingest_checked): parse with guarded casts into a temp table, report or
-- quarantine the invalid rows, deduplicate, upsert. JSON rows always take the careful path.
-- Naive timestamps are read as UTC.

------------------------------------------------------------------------------------------------
-- Generated SQL: parsing and checking
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
-- The guards here and in ml_private.feature_parse_sql match with collate "C": their patterns are
-- ASCII, and under a libc locale such as C.UTF-8 a match costs several times as much.
create or replace function ml_private.event_time_sql(p_col text) returns text
language sql immutable
set search_path = ''
as $$
    select format(
        'case when %1$s collate "C" ~ ''^\s*[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])([ T]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,9})?)?)?\s*(Z|[+-][0-9]{2}(:?[0-9]{2})?)?\s*$''
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
        -- with the guarded form below), or give NULL for text the guarded form refuses too
        -- (the fast path then sends the batch there). The input functions skip surrounding
        -- blanks themselves (a field of blanks raises); floats are kept to digits, signs, point
        -- and exponent (float8 also reads NaN, infinities and hex), ints to digits, signs and
        -- point on PostgreSQL 16+ (which reads hex and underscores); booleans and vectors always
        -- take the guarded form. Exponents of three digits are the one text a fast cast reads
        -- and the guarded form does not.
        when p_fast and p_spec ->> 'dtype' = 'int' then
            case when current_setting('server_version_num')::int >= 160000
                 then format('case when translate(%1$s, E''0123456789+-. \t\r\n'', '''') = '''' then nullif(%1$s, '''')::bigint end', p_col)
                 else format('nullif(%s, %L)::bigint', p_col, '') end
        when p_fast and p_spec ->> 'dtype' = 'float' then format(
            'case when translate(%1$s, E''0123456789+-.eE \t\r\n'', '''') = '''' then nullif(%1$s, '''')::float8 end', p_col)
        when p_fast and p_spec ->> 'dtype' = 'timestamp' then format('nullif(%s, %L)::timestamptz', p_col, '')
        else case p_spec ->> 'dtype'
        when 'int' then format(
            'case when %1$s collate "C" ~ ''^\s*[+-]?[0-9]{1,19}(\.0*)?\s*$''
                  then case when split_part(btrim(%1$s), ''.'', 1)::numeric between -9223372036854775808 and 9223372036854775807
                            then split_part(btrim(%1$s), ''.'', 1)::bigint end end', p_col)
        when 'float' then format(
            'case when %1$s collate "C" ~* ''^\s*[+-]?([0-9]{1,200}\.?[0-9]*|\.[0-9]+)(e[+-]?[0-9]{1,2})?\s*$'' then %1$s::float8 end', p_col)
        -- collate "C": the words are ASCII, and lower() under a libc locale costs more
        when 'bool' then format(
            'case lower(btrim(%1$s) collate "C") when ''true'' then true when ''t'' then true when ''1'' then true
                  when ''yes'' then true when ''y'' then true when ''false'' then false when ''f'' then false
                  when ''0'' then false when ''no'' then false when ''n'' then false end', p_col)
        when 'timestamp' then ml_private.event_time_sql(p_col)
        when 'vector' then format(
            'case when %1$s collate "C" ~ ''^\s*\[\s*(-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]{1,3})?(\s*,\s*-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]{1,3})?)*)?\s*\]\s*$''
                  then case when jsonb_array_length(%1$s::jsonb) = %2$s then %1$s::jsonb end end', p_col, (p_spec ->> 'dim')::int)
        else p_col
    end end
$$;

-- ml_private.jsonb_object_sql(p_pairs text[], p_strip_nulls boolean default true) returns text
-- A SQL expression building one jsonb object from p_pairs ('<key literal>, <value expression>'
-- each), without its null members unless p_strip_nulls is false: jsonb_build_object takes at
-- most 100 arguments, so groups of 50 pairs are concatenated. '{}' for no pairs.
create or replace function ml_private.jsonb_object_sql(p_pairs text[], p_strip_nulls boolean default true) returns text
language sql immutable
set search_path = ''
as $$
    select coalesce(case when p_strip_nulls then 'jsonb_strip_nulls(' else '(' end
                    || string_agg(format('jsonb_build_object(%s)', g.pairs), ' || ' order by g.n) || ')',
                    '''{}''::jsonb')
    from (select (p.i - 1) / 50 as n, string_agg(p.pair, ', ' order by p.i) as pairs
          from unnest(p_pairs) with ordinality p (pair, i) group by 1) g
$$;

-- ml_private.feature_stage_type(p_spec jsonb) returns text
-- The type a feature's checked value has between parsing and writing: its column's type
-- (ml_private.feature_sql_type), except vectors, which are checked as jsonb arrays.
create or replace function ml_private.feature_stage_type(p_spec jsonb) returns text
language sql stable
set search_path = ''
as $$
    select case when p_spec ->> 'dtype' = 'vector' then 'jsonb' else ml_private.feature_sql_type(p_spec) end
$$;

-- ml_private.feature_store_sql(p_spec jsonb, p_value text) returns text
-- A SQL expression turning the checked value p_value (of ml_private.feature_stage_type) into
-- the feature's column type: a vector's jsonb array into vector(n) (or double precision[]).
create or replace function ml_private.feature_store_sql(p_spec jsonb, p_value text) returns text
language sql stable
set search_path = ''
as $$
    select case
        when p_spec ->> 'dtype' <> 'vector' then p_value
        when ml_private.feature_sql_type(p_spec) = 'double precision[]'
            then format('translate((%s)::text, ''[]'', ''{}'')::double precision[]', p_value)
        else format('(%s)::text::%s', p_value, ml_private.feature_sql_type(p_spec))
    end
$$;

-- ml_private.feature_rules_sql(p_spec jsonb, p_typed text, p_raw text) returns text
-- The rules of one feature as a SQL expression of text[]: for the typed value p_typed (not
-- NULL) every rule it breaks ('<feature>: must be >= 0, got -1'), an empty array when none.
-- Numbers in messages are shown as JSON, timestamps as received (p_raw). NULL when the feature
-- has no rules beyond its type.
create or replace function ml_private.feature_rules_sql(p_spec jsonb, p_typed text, p_raw text) returns text
language plpgsql stable
set search_path = ''
as $$
declare
    v_name  text := p_spec ->> 'name';
    v_got   text := format('left(to_jsonb(%s)::text, 80)', p_typed);
    v_rules text[] := '{}';
    v_key   text;
    v_bound text;
begin
    foreach v_key in array array['min', 'max'] loop
        continue when not p_spec ? v_key;
        v_bound := case when p_spec ->> 'dtype' = 'timestamp' then format('%L::timestamptz', p_spec ->> v_key) else p_spec ->> v_key end;
        v_rules := v_rules || format('case when %s %s %s then %L || %s end', p_typed,
            case v_key when 'min' then '<' else '>' end, v_bound,
            v_name || case v_key when 'min' then ': must be >= ' else ': must be <= ' end || (p_spec ->> v_key) || ', got ',
            case when p_spec ->> 'dtype' = 'timestamp' then format('to_jsonb(%s)::text', p_raw) else v_got end);
    end loop;
    if p_spec ? 'allowed' then
        v_rules := v_rules || format('case when not (%L::jsonb @> to_jsonb(%s)) then %L || %s end', p_spec -> 'allowed', p_typed,
                                     v_name || ': must be one of ' || (p_spec -> 'allowed')::text || ', got ', v_got);
    end if;
    if p_spec ? 'regex' then
        v_rules := v_rules || format('case when %s !~ %L then %L || %s end', p_typed, p_spec ->> 'regex',
                                     v_name || ': must match ' || (p_spec ->> 'regex') || ', got ', v_got);
    end if;
    if p_spec ? 'max_length' then
        v_rules := v_rules || format('case when length(%s) > %s then %L || length(%s) || %L end', p_typed,
                                     (p_spec ->> 'max_length')::int,
                                     v_name || ': must be at most ' || (p_spec ->> 'max_length') || ' characters, got ',
                                     p_typed, ' characters');
    end if;
    if cardinality(v_rules) = 0 then
        return null;
    end if;
    return format('array_remove(array[%s], null)', array_to_string(v_rules, ', '));
end
$$;

-- ml_private.feature_rules_pass_sql(p_spec jsonb, p_typed text) returns text
-- The rules of one feature as one boolean SQL expression on the typed value p_typed (not NULL):
-- true when it keeps them all. The same rules as ml_private.feature_rules_sql, written for
-- speed (no messages; allowed text and int values as a typed array); 'true' when there are none.
create or replace function ml_private.feature_rules_pass_sql(p_spec jsonb, p_typed text) returns text
language plpgsql stable
set search_path = ''
as $$
declare
    v_tests text[] := '{}';
    v_dtype text := p_spec ->> 'dtype';
begin
    if p_spec ? 'min' then
        v_tests := v_tests || format('%s >= %s', p_typed,
            case when v_dtype = 'timestamp' then format('%L::timestamptz', p_spec ->> 'min') else p_spec ->> 'min' end);
    end if;
    if p_spec ? 'max' then
        v_tests := v_tests || format('%s <= %s', p_typed,
            case when v_dtype = 'timestamp' then format('%L::timestamptz', p_spec ->> 'max') else p_spec ->> 'max' end);
    end if;
    if p_spec ? 'allowed' then
        v_tests := v_tests || case
            when v_dtype in ('text', 'category') then
                format('%s = any (%L::text[])', p_typed, array(select jsonb_array_elements_text(p_spec -> 'allowed')))
            -- An int keeps the rule when it equals an allowed number; the fractional ones never match.
            when v_dtype = 'int' then
                format('%s = any (%L::bigint[])', p_typed,
                       array(select (e #>> '{}')::numeric::bigint from jsonb_array_elements(p_spec -> 'allowed') e
                             where (e #>> '{}')::numeric = trunc((e #>> '{}')::numeric)
                               and (e #>> '{}')::numeric between -9223372036854775808 and 9223372036854775807))
            else format('%L::jsonb @> to_jsonb(%s)', p_spec -> 'allowed', p_typed)
        end;
    end if;
    if p_spec ? 'regex' then
        v_tests := v_tests || format('%s ~ %L', p_typed, p_spec ->> 'regex');
    end if;
    if p_spec ? 'max_length' then
        v_tests := v_tests || format('length(%s) <= %s', p_typed, (p_spec ->> 'max_length')::int);
    end if;
    return coalesce(nullif(array_to_string(v_tests, ' and '), ''), 'true');
end
$$;

-- ml_private.key_time_errors_sql(p_group ml.feature_groups, p_key text, p_time_raw text, p_time text) returns text
-- A SQL expression of text[]: what is wrong with a row's join key (p_key, already trimmed and
-- NULL when empty) and event time (p_time_raw as received, p_time parsed), empty when nothing.
create or replace function ml_private.key_time_errors_sql(p_group ml.feature_groups, p_key text, p_time_raw text, p_time text)
returns text
language sql immutable
set search_path = ''
as $$
    select format(
        $e$case when %1$s is null then array[%2$L] else '{}'::text[] end
           || case when %3$s is null or not isfinite(%3$s)
                        or lower(btrim(%4$s)) in ('now', 'today', 'tomorrow', 'yesterday', 'epoch')
                   then array[format(%5$L, coalesce(quote_literal(left(%4$s, 80)), 'null'))]
                   else '{}'::text[] end$e$,
        p_key, p_group.join_key || ': must not be null or empty', p_time, p_time_raw,
        p_group.event_time_column || ': must be a timestamp, got %s')
$$;

-- ml_private.feature_staged_sql(p_group ml.feature_groups, p_staging regclass, p_row_col text) returns text
-- The careful path's query over a staging table (see ml_private.ingest_checked): per row
-- (row_no, entity_key, event_time_raw, event_time, errors, received, f1 .. fn), every field
-- parsed with guarded casts (ml_private.feature_parse_sql), so bad text becomes a row error, not
-- a failed batch. `received` holds an invalid row's fields as text (what quarantine keeps);
-- f1 .. fn the typed values, in the order of the group's features. p_row_col: the SQL of the row
-- number. A feature without a staging column is null in every row (so a row breaks its
-- `nullable: false`).
create or replace function ml_private.feature_staged_sql(p_group ml.feature_groups, p_staging regclass, p_row_col text)
returns text
language plpgsql stable
set search_path = ''
as $$
declare
    v_f       jsonb;
    v_o       bigint;
    v_name    text;
    v_raw     text;
    v_typed   text;
    v_parse   text[] := '{}';
    v_checks  text[] := '{}';
    v_raw_j   text[] := '{}';
    v_out     text[] := '{}';
begin
    for v_f, v_o in select f, o from jsonb_array_elements(p_group.features) with ordinality x (f, o) loop
        v_name := v_f ->> 'name';
        v_typed := format('q.%I', 'f' || v_o);
        v_out := v_out || v_typed;
        if not exists (select 1 from pg_attribute a where a.attrelid = p_staging and a.attname = v_name
                       and a.attnum > 0 and not a.attisdropped) then
            v_parse := v_parse || format('null::%s as %I', ml_private.feature_stage_type(v_f), 'f' || v_o);
            if not (v_f ->> 'nullable')::boolean then
                v_checks := v_checks || format('array[%L]', v_name || ': must not be null');
            end if;
            continue;
        end if;
        v_raw := format('q.%I', 'r' || v_o);
        v_parse := v_parse || format('s.%1$I::text as %2$I, %3$s as %4$I', v_name, 'r' || v_o,
                                     ml_private.feature_parse_sql(v_f, format('s.%I::text', v_name), false), 'f' || v_o);
        v_raw_j := v_raw_j || format('%L, %s', v_name, v_raw);
        -- Empty fields are nulls, except for text, where only a NULL (unquoted empty CSV field) is.
        v_checks := v_checks || format(
            'case when %1$s then %2$s when %3$s is null then array[%4$L || left(to_jsonb(%5$s)::text, 80)] %6$s end',
            case when v_f ->> 'dtype' in ('text', 'category') then format('%s is null', v_raw)
                 else format('nullif(btrim(%s), %L) is null', v_raw, '') end,
            case when (v_f ->> 'nullable')::boolean then 'null::text[]' else format('array[%L]', v_name || ': must not be null') end,
            v_typed,
            v_name || ': must be of type ' || (v_f ->> 'dtype') || coalesce('(' || (v_f ->> 'dim') || ')', '') || ', got ',
            v_raw,
            coalesce('else ' || ml_private.feature_rules_sql(v_f, v_typed, v_raw), ''));
    end loop;

    return format(
        $q$select q.row_no, q.entity_key, q.event_time_raw, q.event_time, q.errors,
                  case when cardinality(q.errors) > 0 then %1$s end as received, %2$s
           from (select q.*, %3$s || coalesce(%4$s, '{}'::text[]) as errors
                 from (select %5$s as row_no, nullif(btrim(s.%6$I::text), '') as entity_key, s.%7$I::text as event_time_raw,
                              %8$s as event_time, %9$s
                       from %10$s s offset 0) q  -- offset 0: parse each field once, not once per use
                ) q$q$,
        ml_private.jsonb_object_sql(v_raw_j),
        array_to_string(v_out, ', '),
        ml_private.key_time_errors_sql(p_group, 'q.entity_key', 'q.event_time_raw', 'q.event_time'),
        coalesce(nullif(array_to_string(v_checks, ' || '), ''), 'null::text[]'),
        p_row_col, p_group.join_key, p_group.event_time_column,
        ml_private.event_time_sql(format('s.%I::text', p_group.event_time_column)),
        array_to_string(v_parse, ', '),
        p_staging);
end
$$;

-- ml_private.feature_json_sql(p_group ml.feature_groups) returns text
-- The careful path's query over JSON rows, the jsonb array $1 (see ml_private.ingest_checked):
-- per row (row_no, entity_key, event_time_raw, event_time, errors, received, f1 .. fn). Values
-- are checked on their JSON types (ml_private.feature_validator_sql, after pg_jsonschema's
-- jsonb_matches_schema as a fast first pass where that extension is installed), keys that are
-- not features are errors; `received` holds an invalid row as received (without its key and
-- time); f1 .. fn the typed values of a valid row.
create or replace function ml_private.feature_json_sql(p_group ml.feature_groups) returns text
language plpgsql stable
set search_path = ''
as $$
declare
    v_fast_pass text := 'false';
    v_typed     text[];
begin
    -- pg_jsonschema checks a row in native code; rows it passes need no SQL validation.
    -- (Timestamp bounds are not in the JSON Schema, so groups with them always take the SQL path.)
    if exists (select 1 from pg_extension where extname = 'pg_jsonschema')
       and not exists (select 1 from jsonb_array_elements(p_group.features) f where f ->> 'dtype' = 'timestamp') then
        v_fast_pass := format('extensions.jsonb_matches_schema(%L::json, i.received)', p_group.json_schema);
        if to_regprocedure('extensions.jsonb_matches_schema(json, jsonb)') is null then
            v_fast_pass := replace(v_fast_pass, 'extensions.', 'public.');
        end if;
    end if;
    select array_agg(format('case when cardinality(q.errors) = 0 then %s end',
                            case f ->> 'dtype'
                                when 'int' then format('(q.received ->> %L)::bigint', f ->> 'name')
                                when 'float' then format('(q.received ->> %L)::float8', f ->> 'name')
                                when 'bool' then format('(q.received ->> %L)::boolean', f ->> 'name')
                                when 'timestamp' then format('(q.received ->> %L)::timestamptz', f ->> 'name')
                                when 'vector' then format('nullif(q.received -> %L, ''null'')', f ->> 'name')
                                else format('q.received ->> %L', f ->> 'name') end) order by o)
    into v_typed
    from jsonb_array_elements(p_group.features) with ordinality x (f, o);

    return format(
        $q$select q.row_no, q.entity_key, q.event_time_raw, q.event_time, q.errors,
                  case when cardinality(q.errors) > 0 then q.received end as received, %1$s
           from (select i.*, %2$s
                        || case when i.received is null or jsonb_typeof(i.received) <> 'object' then array['values: must be a JSON object']
                                when %3$s then '{}'::text[]
                                else %4$s || coalesce(array(select k || %5$L from jsonb_object_keys(i.received) k
                                                            where not k = any (%6$L::text[])), '{}')
                           end as errors
                 from (select r.ord as row_no, nullif(btrim(r.value ->> %7$L), '') as entity_key, r.value ->> %8$L as event_time_raw,
                              %9$s as event_time,
                              case when jsonb_typeof(r.value) = 'object' then r.value - %7$L - %8$L end as received
                       from jsonb_array_elements($1) with ordinality r (value, ord)) i
                ) q$q$,
        array_to_string(v_typed, ', '),
        ml_private.key_time_errors_sql(p_group, 'i.entity_key', 'i.event_time_raw', 'i.event_time'),
        v_fast_pass,
        ml_private.feature_validator_sql(p_group.features, 'i.received'),
        ': is not a feature of group ' || p_group.name || ' version ' || p_group.version,
        array(select f ->> 'name' from jsonb_array_elements(p_group.features) f),
        p_group.join_key, p_group.event_time_column,
        ml_private.event_time_sql(format('(r.value ->> %L)', p_group.event_time_column)));
end
$$;

------------------------------------------------------------------------------------------------
-- The implementation
------------------------------------------------------------------------------------------------

-- ml_private.feature_columns(p_group ml.feature_groups, p_values text default null)
-- returns table (columns text, stored text, updates text)
-- For writing a version's tables: its feature columns ('"a", "b"'), the checked values turned
-- into column values (p_values: a format string with one %s for the ordinal, e.g. 'v.f%s'; NULL:
-- none) and the ON CONFLICT assignments ('"a" = excluded."a", ...').
create or replace function ml_private.feature_columns(p_group ml.feature_groups, p_values text default null)
returns table (columns text, stored text, updates text)
language sql stable
set search_path = ''
as $$
    select string_agg(format('%I', f ->> 'name'), ', ' order by o),
           string_agg(ml_private.feature_store_sql(f, format(p_values, o)), ', ' order by o),
           string_agg(format('%1$I = excluded.%1$I', f ->> 'name'), ', ' order by o)
    from jsonb_array_elements(p_group.features) with ordinality x (f, o)
$$;

-- ml_private.ingest_invalid_row() returns boolean
-- Raises PGM01: the fast path met a row it cannot take as it is (ml_private.ingest_staged_fast
-- calls it from the one statement that writes, which the error undoes; ml.ingest_staged then
-- takes the careful path, which says what is wrong). Never returns.
create or replace function ml_private.ingest_invalid_row() returns boolean
language plpgsql volatile
set search_path = ''
as $$
begin
    raise exception 'a staged row needs the careful path' using errcode = 'PGM01';
end
$$;

-- ml_private.ingest_finish(p_group ml.feature_groups, p_result jsonb, p_source text) returns jsonb
-- Publishes 'features.ingested' (topic 'features') with the counts and returns them.
create or replace function ml_private.ingest_finish(p_group ml.feature_groups, p_result jsonb, p_source text) returns jsonb
language plpgsql volatile
set search_path = ''
as $$
begin
    perform ml_private.publish(p_group.tenant_id, 'features', 'features.ingested',
        p_result || jsonb_build_object('group_id', p_group.id, 'source', p_source));
    return p_result;
end
$$;

-- ml_private.ingest_staged_fast(p_group ml.feature_groups, p_staging regclass, p_on_error text, p_source text) returns jsonb
-- The fast path of ml.ingest_staged: one INSERT ... SELECT reads the staging table once, parses
-- every field with plain casts (ml_private.feature_parse_sql's fast form), checks the key, the
-- event time and every rule as one boolean column expression per feature
-- (ml_private.feature_rules_pass_sql), and writes the rows to the offline table in the order read;
-- its RETURNING gives each entity's newest event time, and those rows go to the online table.
-- It takes batches whose every row is valid and new: a field that does not parse (data
-- exception), a rule broken (PGM01, from ml_private.ingest_invalid_row), or a key and time
-- stored or repeated (unique_violation) raises from that statement, undoing it; the caller then
-- takes the careful path. Returns the counts, as ml.ingest does.
create or replace function ml_private.ingest_staged_fast(p_group ml.feature_groups, p_staging regclass, p_on_error text, p_source text)
returns jsonb
language plpgsql volatile
set search_path = ''
set timezone = 'UTC'
-- The entities of a batch are counted in a hash table: keep it in memory.
set work_mem = '256MB'
as $$
declare
    v_ingestion uuid := gen_random_uuid();
    v_f         jsonb;
    v_o         bigint;
    v_name      text;
    v_typed     text;
    v_select    text[] := '{}';
    v_tests     text[] := '{}';
    v_targets   text[] := '{}';
    v_values    text[] := '{}';
    v_rules     text;
    v_time      text := format('nullif(s.%I::text, %L)::timestamptz', p_group.event_time_column, '');
    v_cols      record;
    v_from      timestamptz;
    v_to        timestamptz;
    v_written   bigint;
    v_online    bigint;
    v_empty     boolean;
    v_result    jsonb;
begin
    for v_f, v_o in select f, o from jsonb_array_elements(p_group.features) with ordinality x (f, o) loop
        v_name := v_f ->> 'name';
        if not exists (select 1 from pg_attribute a where a.attrelid = p_staging and a.attname = v_name
                       and a.attnum > 0 and not a.attisdropped) then
            if not (v_f ->> 'nullable')::boolean then
                v_tests := v_tests || 'false'::text;  -- every row breaks it: the careful path says so
            end if;
            continue;
        end if;
        v_typed := format('q.%I', 'f' || v_o);
        v_select := v_select || format('%s as %I', ml_private.feature_parse_sql(v_f, format('s.%I::text', v_name), true), 'f' || v_o);
        v_targets := v_targets || format('%I', v_name);
        v_values := v_values || ml_private.feature_store_sql(v_f, v_typed);
        v_rules := ml_private.feature_rules_pass_sql(v_f, v_typed);
        if not (v_f ->> 'nullable')::boolean then
            v_tests := v_tests || format('(%s is not null and %s)', v_typed, v_rules);
        elsif v_f ->> 'dtype' in ('text', 'category') then
            v_tests := v_tests || format('(%s is null or %s)', v_typed, v_rules);
        else
            -- A NULL parse is a valid empty field, or text that is no value of the type.
            v_select := v_select || format('s.%I::text as %I', v_name, 'r' || v_o);
            v_tests := v_tests || format('case when %s is not null then %s else nullif(btrim(q.%I), %L) is null end',
                                         v_typed, v_rules, 'r' || v_o, '');
        end if;
    end loop;

    -- Native partitions for the batch's time range (TimescaleDB makes chunks as rows arrive).
    if (select t.mode from ml_private.time_partitioned_tables t where t.table_name = p_group.offline_table::text) = 'native' then
        execute format('select min(%1$s), max(%1$s) from %2$s s', v_time, p_staging) into v_from, v_to;
        if v_from is not null then
            perform ml_private.ensure_time_partitions(p_group.offline_table, v_from, v_to);
        end if;
    end if;

    create temp table _pgmlops_latest (entity_key text, event_time timestamptz, n bigint) on commit drop;
    execute format(
        $q$with written as (
               insert into %1$s (tenant_id, entity_key, event_time, ingestion_id%2$s)
               select $1, q.k, q.t, $2%3$s
               from (select nullif(btrim(s.%4$I::text), '') as k, s.%5$I::text as traw, %6$s as t%7$s
                     from %8$s s offset 0) q  -- offset 0: parse each field once, not once per use
               -- The key, the time (digits first: no 'now', 'epoch' or 'infinity'), every rule.
               where case when q.k is not null and q.t is not null and ascii(ltrim(q.traw)) between 48 and 57%9$s
                          then true else ml_private.ingest_invalid_row() end
               returning entity_key, event_time)
           insert into pg_temp._pgmlops_latest
           select entity_key, max(event_time), count(*) from written group by entity_key$q$,
        p_group.offline_table, coalesce(', ' || nullif(array_to_string(v_targets, ', '), ''), ''),
        coalesce(', ' || nullif(array_to_string(v_values, ', '), ''), ''),
        p_group.join_key, p_group.event_time_column, v_time,
        coalesce(', ' || nullif(array_to_string(v_select, ', '), ''), ''),
        p_staging,
        coalesce(' and ' || nullif(array_to_string(v_tests, ' and '), ''), ''))
        using p_group.tenant_id, v_ingestion;
    select coalesce(sum(l.n), 0), min(l.event_time), max(l.event_time) into v_written, v_from, v_to from pg_temp._pgmlops_latest l;

    -- Each entity's newest row of the batch, read back by primary key, replaces an older one online.
    -- Into an empty online table (a version's first load) a plain insert does, at half the cost
    -- of an upsert; should another session fill it meanwhile, the unique violation sends this
    -- batch down the careful path.
    select * into v_cols from ml_private.feature_columns(p_group);
    if v_written > 0 then
        execute format('select not exists (select from %s)', p_group.online_table) into v_empty;
        execute format(
            $q$insert into %1$s as o (tenant_id, entity_key, event_time, %2$s, ingested_at, ingestion_id)
               select x.tenant_id, x.entity_key, x.event_time, %3$s, x.ingested_at, x.ingestion_id
               from pg_temp._pgmlops_latest l
               join %4$s x on x.tenant_id = $1 and x.entity_key = l.entity_key and x.event_time = l.event_time
                          and x.event_time between %5$L and %6$L
               %7$s$q$,
            p_group.online_table, v_cols.columns,
            (select string_agg(format('x.%I', f ->> 'name'), ', ' order by o) from jsonb_array_elements(p_group.features) with ordinality e (f, o)),
            p_group.offline_table, v_from, v_to,
            case when v_empty then '' else format(
                'on conflict (tenant_id, entity_key)
                 do update set event_time = excluded.event_time, %s, ingested_at = excluded.ingested_at, ingestion_id = excluded.ingestion_id
                 where o.event_time <= excluded.event_time', v_cols.updates) end)
            using p_group.tenant_id;
        get diagnostics v_online = row_count;
    else
        v_online := 0;
    end if;
    drop table pg_temp._pgmlops_latest;

    insert into ml.feature_ingestions (id, tenant_id, group_id, source, on_error, rows_in, written, inserted, updated,
                                       quarantined, superseded, online_updated, created_by, finished_at)
    values (v_ingestion, p_group.tenant_id, p_group.id, coalesce(p_source, 'unknown'), p_on_error, v_written, v_written,
            v_written, 0, 0, 0, v_online, ml_private.caller_user_id(), clock_timestamp());
    v_result := jsonb_build_object(
        'ingestion_id', v_ingestion, 'group', p_group.name, 'version', p_group.version,
        'rows', v_written, 'written', v_written, 'inserted', v_written, 'updated', 0,
        'quarantined', 0, 'superseded', 0, 'online_updated', v_online);
    return ml_private.ingest_finish(p_group, v_result, p_source);
end
$$;

-- ml_private.ingest_checked(p_group ml.feature_groups, p_checked text, p_rows jsonb, p_on_error text, p_source text) returns jsonb
-- The careful path, for JSON rows and for staged batches the fast path could not take.
-- p_checked is a query (ml_private.feature_json_sql or ml_private.feature_staged_sql; $1 is
-- p_rows) yielding per row (row_no, entity_key, event_time_raw, event_time, errors, received,
-- f1 .. fn), every rule already checked. Its rows are kept in a temp table; then: in reject
-- mode any invalid row raises (nothing written); in quarantine mode invalid rows go to
-- ml.feature_quarantine; valid rows are deduplicated (the last of a key and time wins) and
-- upserted into the offline table (the same key and time updates the row in place), and the
-- newest per entity into the online table, unless it holds a newer one. Returns {ingestion_id,
-- group, version, rows, written, inserted, updated, quarantined, superseded, online_updated}.
-- Raises 22023 for the first invalid row in reject mode: the message names the row, its key and
-- time and every rule broken; DETAIL how many rows are invalid and the first five.
create or replace function ml_private.ingest_checked(p_group ml.feature_groups, p_checked text, p_rows jsonb, p_on_error text,
                                                     p_source text)
returns jsonb
language plpgsql volatile
set search_path = ''
set timezone = 'UTC'
set work_mem = '256MB'  -- the batch is sorted twice (dedup, online store): keep it off disk
as $$
declare
    v_ingestion   uuid := gen_random_uuid();
    v_cols        record;
    v_rows        bigint;
    v_invalid     bigint;
    v_first       record;
    v_detail      text;
    v_from        timestamptz;
    v_to          timestamptz;
    v_written     bigint := 0;
    v_inserted    bigint := 0;
    v_valid       bigint;
    v_online      bigint;
    v_result      jsonb;
begin
    select * into v_cols from ml_private.feature_columns(p_group, 'v.f%s');
    execute format('create temp table _pgmlops_ingest (row_no bigint, entity_key text, event_time_raw text, event_time timestamptz,
                                                       errors text[], received jsonb%s) on commit drop',
                   (select string_agg(format(', %I %s', 'f' || o, ml_private.feature_stage_type(f)), '' order by o)
                    from jsonb_array_elements(p_group.features) with ordinality x (f, o)));
    execute format('insert into pg_temp._pgmlops_ingest select * from (%s) c', p_checked) using p_rows;
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
        select p_group.tenant_id, p_group.id, v_ingestion, row_no, entity_key, event_time_raw, received, errors
        from pg_temp._pgmlops_ingest where cardinality(errors) > 0;
    end if;

    -- The last row of each (entity, time) in the batch wins; ON CONFLICT cannot touch a row twice.
    execute format('create temp table _pgmlops_valid on commit drop as
                    select distinct on (entity_key, event_time) entity_key, event_time%s
                    from pg_temp._pgmlops_ingest where cardinality(errors) = 0
                    order by entity_key, event_time, row_no desc',
                   (select string_agg(format(', %I', 'f' || o), '' order by o)
                    from jsonb_array_elements(p_group.features) with ordinality x (f, o)));
    get diagnostics v_valid = row_count;

    if v_valid > 0 then
        select min(event_time), max(event_time) into v_from, v_to from pg_temp._pgmlops_valid;
        perform ml_private.ensure_time_partitions(p_group.offline_table, v_from, v_to);
        -- Keys already stored become updates: count them before the upsert.
        execute format('select $2 - count(*) from pg_temp._pgmlops_valid v
                        where exists (select 1 from %s o where o.tenant_id = $1 and o.entity_key = v.entity_key
                                                           and o.event_time = v.event_time)', p_group.offline_table)
            into v_inserted using p_group.tenant_id, v_valid;
        execute format(
            'insert into %1$s (tenant_id, entity_key, event_time, %2$s, ingestion_id)
             select $1, v.entity_key, v.event_time, %3$s, $2 from pg_temp._pgmlops_valid v
             on conflict (tenant_id, entity_key, event_time)
             do update set %4$s, ingested_at = now(), ingestion_id = excluded.ingestion_id',
            p_group.offline_table, v_cols.columns, v_cols.stored, v_cols.updates)
            using p_group.tenant_id, v_ingestion;
        get diagnostics v_written = row_count;
        execute format(
            'insert into %1$s as o (tenant_id, entity_key, event_time, %2$s, ingestion_id)
             select distinct on (v.entity_key) $1, v.entity_key, v.event_time, %3$s, $2 from pg_temp._pgmlops_valid v
             order by v.entity_key, v.event_time desc
             on conflict (tenant_id, entity_key)
             do update set event_time = excluded.event_time, %4$s, ingested_at = now(), ingestion_id = excluded.ingestion_id
             where o.event_time <= excluded.event_time',
            p_group.online_table, v_cols.columns, v_cols.stored, v_cols.updates)
            using p_group.tenant_id, v_ingestion;
        get diagnostics v_online = row_count;
    else
        v_online := 0;
    end if;

    update ml.feature_ingestions set
        written = v_written, inserted = v_inserted, updated = v_written - v_inserted, quarantined = v_invalid,
        superseded = v_rows - v_invalid - v_valid, online_updated = v_online, finished_at = clock_timestamp()
    where id = v_ingestion;

    v_result := jsonb_build_object(
        'ingestion_id', v_ingestion, 'group', p_group.name, 'version', p_group.version,
        'rows', v_rows, 'written', v_written, 'inserted', v_inserted, 'updated', v_written - v_inserted,
        'quarantined', v_invalid, 'superseded', v_rows - v_invalid - v_valid, 'online_updated', v_online);
    drop table pg_temp._pgmlops_ingest;
    drop table pg_temp._pgmlops_valid;
    return ml_private.ingest_finish(p_group, v_result, p_source);
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
    perform ml_private.check_on_error(on_error);
    return ml_private.ingest_checked(v_group, ml_private.feature_json_sql(v_group),
                                     ml_private.normalize_json_rows(v_group.features, rows), on_error, 'ml.ingest');
end
$$;

-- ml_private.check_on_error(p_on_error text) returns void
-- Raises 22023 unless p_on_error is 'reject' or 'quarantine'.
create or replace function ml_private.check_on_error(p_on_error text) returns void
language plpgsql immutable
set search_path = ''
as $$
begin
    if p_on_error is null or p_on_error not in ('reject', 'quarantine') then
        raise exception 'on_error: must be reject or quarantine, got %', coalesce(quote_literal(p_on_error), 'NULL')
            using errcode = '22023';
    end if;
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
-- errors as ml.ingest; `source` is recorded with the ingestion (e.g. the file name). A batch of
-- valid, new rows is written in one pass over the staging table; see the header of this file.
-- Raises 22023 also for a missing key or time column, a column that is not a feature, or a
-- staging table that is not a temporary table of this session; nothing is written on error.
-- Callers: authenticated (owner, admin, ml_engineer), service_role.
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
    perform ml_private.check_on_error(on_error);
    source := coalesce(source, 'ml.ingest_staged');

    -- Valid new rows (the usual case) take the fast path; anything it cannot take as it is undoes
    -- its one writing statement and sends the batch down the careful path, which reports (or
    -- quarantines) the bad rows and upserts the rest.
    begin
        return ml_private.ingest_staged_fast(v_group, staging, on_error, source);
    exception when data_exception or integrity_constraint_violation or sqlstate 'PGM01' then
        null;
    end;
    return ml_private.ingest_checked(v_group, ml_private.feature_staged_sql(v_group, staging, v_row), null, on_error, source);
end
$$;

------------------------------------------------------------------------------------------------
-- Grants
------------------------------------------------------------------------------------------------

grant execute on function
    ml.ingest(text, jsonb, text),
    ml.ingest_staged(text, regclass, text, text)
to authenticated, service_role;
