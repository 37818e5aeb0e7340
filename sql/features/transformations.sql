-- pgmlops: feature store — transformations
--
-- Transformations are SQL expressions generated from a declared spec (ml_private.transformation_sql),
-- the same text for building a training set (sql/features/training_sets.sql) and for scoring
-- (ml.apply_transformations), so a model is served exactly the math it was trained on.

------------------------------------------------------------------------------------------------
-- Transformations
------------------------------------------------------------------------------------------------
-- A training set declares an array of specs, applied in order; a spec's `column` may name a
-- feature, `event_time`, an aggregate or an earlier spec's output. Kinds:
--   {"type": "log1p",       "column": c}                  c_log1p = ln(1 + c); NULL for c <= -1
--   {"type": "standardize", "column": c}                  c_standardized = (c - mean) / std
--   {"type": "min_max",     "column": c}                  c_min_max = (c - min) / (max - min)
--   {"type": "bucketize",   "column": c, "boundaries": [b1, b2, ...]}
--         c_bucket = how many boundaries are <= c (numpy.digitize): 0 below b1, n at or above bn
--   {"type": "one_hot",     "column": c, "unseen": "other" | "zeros", "max_categories": 100}
--         c__<category> = 1 when c is that category, else 0. Categories are the most frequent
--         values at build (at most max_categories, ties by value). A value outside them (unseen
--         at build, or beyond max_categories) sets c__other__ with "unseen": "other" (default)
--         and nothing with "zeros". NULL sets nothing.
--   {"type": "cyclical",    "column": t, "period": "hour" | "weekday", "timezone": "UTC"}
--         t_<period>_sin, t_<period>_cos of 2π·hour/24 (hour 0..23) or 2π·weekday/7 (Monday 0),
--         for a timestamp feature or event_time, in the given time zone
--   {"type": "window_aggregate", "source": table or view, "key": k, "time": t, "value": v,
--    "aggregates": ["count", "sum", "avg", "min", "max"], "windows": ["1h", "24h", "7d", "30d"],
--    "spine_key": spine key column, "prefix": p}
--         p_<aggregate>_<window> over the source's rows with k = the spine key and
--         spine time - window < t <= spine time. count counts rows (0 when none); sum, avg, min
--         and max use the non-null v (sum 0, the others NULL when none). The source is read with
--         the caller's rights, at build and at scoring, and stored schema-qualified. A query is
--         refused: it would run again with the rights of whoever scores (name a view instead).
--         Naive (timestamp) times are UTC.
-- Options for every kind: "output" (single-output kinds) or "prefix" (one_hot, cyclical,
-- window_aggregate) name the outputs; "keep": true keeps the input column among the model
-- inputs (by default a transformed column is replaced by its outputs).
-- Statistics (mean and population std, min and max, categories) are computed over every row of
-- the training set when it is built and frozen in ml.datasets.transformations; a std or range of
-- 0 divides by 1 (outputs 0). Rows with NULL input give NULL (zeros for one_hot).

-- ml_private.normalize_transformations(p_specs jsonb, p_columns jsonb) returns jsonb
-- Checks the transformation specs against the training set's columns p_columns ({name: kind},
-- kind one of int, float, bool, text, timestamp, vector, or key / label for columns no spec may
-- transform) and returns them normalized: every default filled in, with `outputs`
-- [{name, kind}] (one_hot outputs are decided when the categories are frozen).
-- Raises 22023 'transformations[i].field: rule' (i counts from 0).
create or replace function ml_private.normalize_transformations(p_specs jsonb, p_columns jsonb) returns jsonb
language plpgsql stable
set search_path = ''
as $$
declare
    v_cols     jsonb := p_columns;
    v_spec     jsonb;
    v_i        int := -1;
    v_path     text;
    v_type     text;
    v_col      text;
    v_kind     text;
    v_key      text;
    v_norm     jsonb;
    v_outputs  jsonb;
    v_out      jsonb := '[]';
    v_name     text;
    v_prefix   text;
    v_aggs     text[];
    v_windows  jsonb;
    v_w        text;
    v_known    text[];
    v_ident    constant text := '^[a-z_][a-z0-9_]{0,62}$';
begin
    if p_specs is null or jsonb_typeof(p_specs) = 'null' then
        return '[]';
    end if;
    if jsonb_typeof(p_specs) <> 'array' then
        raise exception 'transformations: must be a JSON array of transformation objects, got %', jsonb_typeof(p_specs)
            using errcode = '22023';
    end if;
    if jsonb_array_length(p_specs) > 200 then
        raise exception 'transformations: at most 200 per training set, got %', jsonb_array_length(p_specs)
            using errcode = '22023';
    end if;

    for v_spec in select e.value from jsonb_array_elements(p_specs) with ordinality e order by e.ordinality loop
        v_i := v_i + 1;
        v_path := format('transformations[%s]', v_i);
        if jsonb_typeof(v_spec) <> 'object' then
            raise exception '%: must be an object with a "type"', v_path using errcode = '22023';
        end if;
        v_type := v_spec ->> 'type';
        if v_type is null or v_type not in ('log1p', 'standardize', 'min_max', 'bucketize', 'one_hot', 'cyclical', 'window_aggregate') then
            raise exception '%.type: must be one of log1p, standardize, min_max, bucketize, one_hot, cyclical, window_aggregate; got %',
                v_path, coalesce(v_spec -> 'type', 'null'::jsonb) using errcode = '22023';
        end if;
        v_known := array['type', 'keep'] || case v_type
            when 'bucketize' then array['column', 'output', 'boundaries']
            when 'one_hot' then array['column', 'prefix', 'unseen', 'max_categories']
            when 'cyclical' then array['column', 'prefix', 'period', 'timezone']
            when 'window_aggregate' then array['source', 'key', 'time', 'value', 'aggregates', 'windows', 'spine_key', 'prefix']
            else array['column', 'output'] end;
        for v_key in select jsonb_object_keys(v_spec) loop
            if not v_key = any (v_known) then
                raise exception '%.%: unknown field for % (known: %)', v_path, v_key, v_type, array_to_string(v_known, ', ')
                    using errcode = '22023';
            end if;
        end loop;
        if v_spec ? 'keep' and jsonb_typeof(v_spec -> 'keep') <> 'boolean' then
            raise exception '%.keep: must be true or false', v_path using errcode = '22023';
        end if;
        v_norm := jsonb_build_object('type', v_type, 'keep', coalesce((v_spec ->> 'keep')::boolean, false));

        -- The input column.
        if v_type <> 'window_aggregate' then
            if jsonb_typeof(v_spec -> 'column') is distinct from 'string' then
                raise exception '%.column: must name a column of the training set', v_path using errcode = '22023';
            end if;
            v_col := v_spec ->> 'column';
            v_kind := v_cols ->> v_col;
            if v_kind is null then
                raise exception '%.column: the training set has no column % (it has: %)', v_path, quote_literal(v_col),
                    (select string_agg(k, ', ') from jsonb_object_keys(v_cols) k) using errcode = '22023';
            end if;
            if v_type in ('log1p', 'standardize', 'min_max', 'bucketize') and v_kind not in ('int', 'float') then
                raise exception '%.column: % needs a numeric column (int or float); % is %', v_path, v_type, v_col, v_kind
                    using errcode = '22023';
            elsif v_type = 'one_hot' and v_kind not in ('text', 'int', 'bool') then
                raise exception '%.column: one_hot needs a text, category, int or bool column; % is %', v_path, v_col, v_kind
                    using errcode = '22023';
            elsif v_type = 'cyclical' and v_kind <> 'timestamp' then
                raise exception '%.column: cyclical needs a timestamp column or event_time; % is %', v_path, v_col, v_kind
                    using errcode = '22023';
            end if;
            v_norm := v_norm || jsonb_build_object('column', v_col);
        end if;

        -- Output names.
        if v_spec ? 'output' and (jsonb_typeof(v_spec -> 'output') <> 'string' or v_spec ->> 'output' !~ v_ident) then
            raise exception '%.output: must be lowercase letters, digits and _ (1 to 63, not starting with a digit)', v_path
                using errcode = '22023';
        end if;
        if v_spec ? 'prefix' and (jsonb_typeof(v_spec -> 'prefix') <> 'string' or v_spec ->> 'prefix' !~ '^[a-z_][a-z0-9_]{0,39}$') then
            raise exception '%.prefix: must be lowercase letters, digits and _ (1 to 40, not starting with a digit)', v_path
                using errcode = '22023';
        end if;

        case v_type
        when 'log1p', 'standardize', 'min_max' then
            v_outputs := jsonb_build_array(jsonb_build_object('name', coalesce(v_spec ->> 'output',
                left(v_col, 48) || '_' || case v_type when 'standardize' then 'standardized' else v_type end), 'kind', 'float'));
        when 'bucketize' then
            if jsonb_typeof(v_spec -> 'boundaries') is distinct from 'array' or jsonb_array_length(v_spec -> 'boundaries') = 0
               or jsonb_array_length(v_spec -> 'boundaries') > 1000
               or exists (select 1 from jsonb_array_elements(v_spec -> 'boundaries') b where jsonb_typeof(b) <> 'number') then
                raise exception '%.boundaries: must be a non-empty array of at most 1000 numbers', v_path using errcode = '22023';
            end if;
            if exists (select 1 from (select b::text::double precision as b, lag(b::text::double precision) over (order by o) as p
                                      from jsonb_array_elements(v_spec -> 'boundaries') with ordinality x (b, o)) y
                       where y.b <= y.p) then
                raise exception '%.boundaries: must be strictly increasing, got %', v_path, v_spec -> 'boundaries'
                    using errcode = '22023';
            end if;
            v_norm := v_norm || jsonb_build_object('boundaries', v_spec -> 'boundaries');
            v_outputs := jsonb_build_array(jsonb_build_object('name', coalesce(v_spec ->> 'output', left(v_col, 55) || '_bucket'),
                                                              'kind', 'int'));
        when 'one_hot' then
            if v_spec ? 'unseen' and (v_spec ->> 'unseen') is distinct from 'other' and (v_spec ->> 'unseen') is distinct from 'zeros' then
                raise exception '%.unseen: must be "other" (an __other__ column) or "zeros" (all zeros), got %', v_path, v_spec -> 'unseen'
                    using errcode = '22023';
            end if;
            if v_spec ? 'max_categories' and (jsonb_typeof(v_spec -> 'max_categories') <> 'number'
               or (v_spec ->> 'max_categories')::numeric not between 1 and 1000
               or (v_spec ->> 'max_categories')::numeric <> trunc((v_spec ->> 'max_categories')::numeric)) then
                raise exception '%.max_categories: must be an integer from 1 to 1000', v_path using errcode = '22023';
            end if;
            v_norm := v_norm || jsonb_build_object('prefix', coalesce(v_spec ->> 'prefix', left(v_col, 40)),
                                                   'unseen', coalesce(v_spec ->> 'unseen', 'other'),
                                                   'max_categories', coalesce((v_spec ->> 'max_categories')::int, 100));
            v_outputs := '[]';
        when 'cyclical' then
            if (v_spec ->> 'period') is null or (v_spec ->> 'period') not in ('hour', 'weekday') then
                raise exception '%.period: must be "hour" or "weekday", got %', v_path, coalesce(v_spec -> 'period', 'null'::jsonb)
                    using errcode = '22023';
            end if;
            if v_spec ? 'timezone' then
                if jsonb_typeof(v_spec -> 'timezone') <> 'string'
                   or not exists (select 1 from pg_catalog.pg_timezone_names z where z.name = v_spec ->> 'timezone')
                   and not exists (select 1 from pg_catalog.pg_timezone_abbrevs z where z.abbrev = v_spec ->> 'timezone') then
                    raise exception '%.timezone: % is not a time zone name', v_path, v_spec -> 'timezone' using errcode = '22023';
                end if;
            end if;
            v_prefix := coalesce(v_spec ->> 'prefix', left(v_col, 40)) || '_' || (v_spec ->> 'period');
            v_norm := v_norm || jsonb_build_object('period', v_spec ->> 'period', 'timezone', coalesce(v_spec ->> 'timezone', 'UTC'));
            v_outputs := jsonb_build_array(jsonb_build_object('name', v_prefix || '_sin', 'kind', 'float'),
                                           jsonb_build_object('name', v_prefix || '_cos', 'kind', 'float'));
        when 'window_aggregate' then
            if jsonb_typeof(v_spec -> 'source') is distinct from 'string' or btrim(v_spec ->> 'source') = '' then
                raise exception '%.source: must name the events table (or a view)', v_path using errcode = '22023';
            end if;
            -- A name, not a query: the source runs again whenever anyone scores with the dataset,
            -- with that caller's rights; a view runs with its owner's, as PostgreSQL intends.
            if v_spec ->> 'source' ~* '^[[:space:](]*(select|with|values|table)[[:space:](]' then
                raise exception '%.source: must name a table or view, not give a query (create a view for it)', v_path
                    using errcode = '22023';
            end if;
            foreach v_key in array array['key', 'time', 'value', 'spine_key'] loop
                if (v_spec ? v_key or v_key in ('key', 'time'))
                   and (jsonb_typeof(v_spec -> v_key) is distinct from 'string' or btrim(v_spec ->> v_key) = '') then
                    raise exception '%.%: must name a column%', v_path, v_key,
                        case v_key when 'spine_key' then ' of the spine' else ' of the source' end using errcode = '22023';
                end if;
            end loop;
            if jsonb_typeof(v_spec -> 'aggregates') is distinct from 'array' or jsonb_array_length(v_spec -> 'aggregates') = 0
               or exists (select 1 from jsonb_array_elements(v_spec -> 'aggregates') a
                          where a not in ('"count"', '"sum"', '"avg"', '"min"', '"max"')) then
                raise exception '%.aggregates: must be a non-empty array of count, sum, avg, min, max', v_path using errcode = '22023';
            end if;
            v_aggs := array(select distinct a #>> '{}' from jsonb_array_elements(v_spec -> 'aggregates') a);
            v_aggs := array(select a from unnest(array['count', 'sum', 'avg', 'min', 'max']) a where a = any (v_aggs));
            if v_aggs <> array['count'] and not v_spec ? 'value' then
                raise exception '%.value: % need the column to aggregate', v_path, array_to_string(array_remove(v_aggs, 'count'), ', ')
                    using errcode = '22023';
            end if;
            if jsonb_typeof(v_spec -> 'windows') is distinct from 'array' or jsonb_array_length(v_spec -> 'windows') = 0
               or exists (select 1 from jsonb_array_elements(v_spec -> 'windows') w
                          where jsonb_typeof(w) <> 'string' or (w #>> '{}') !~ '^[1-9][0-9]{0,3}[mhd]$') then
                raise exception '%.windows: must be a non-empty array like ["1h", "24h", "7d", "30d"] (a count of m, h or d)', v_path
                    using errcode = '22023';
            end if;
            select jsonb_agg(jsonb_build_object('name', w, 'interval',
                       (left(w, -1) || case right(w, 1) when 'm' then ' minutes' when 'h' then ' hours' else ' days' end)::interval)
                       order by (left(w, -1) || case right(w, 1) when 'm' then ' minutes' when 'h' then ' hours' else ' days' end)::interval)
            into v_windows
            from (select distinct w #>> '{}' as w from jsonb_array_elements(v_spec -> 'windows') w) x;
            v_prefix := coalesce(v_spec ->> 'prefix', left(coalesce(v_spec ->> 'value', 'events'), 40));
            if v_prefix !~ v_ident then
                raise exception '%.prefix: the default prefix % is not a plain lowercase name; give "prefix"', v_path, quote_literal(v_prefix)
                    using errcode = '22023';
            end if;
            select jsonb_agg(jsonb_build_object('name', v_prefix || '_' || a || '_' || (w ->> 'name'),
                                                'kind', case a when 'count' then 'int' else 'float' end,
                                                'aggregate', a, 'window', w ->> 'name') order by wo, ao)
            into v_outputs
            from unnest(v_aggs) with ordinality x (a, ao), jsonb_array_elements(v_windows) with ordinality y (w, wo);
            v_norm := v_norm || jsonb_build_object('source', btrim(v_spec ->> 'source'), 'key', v_spec ->> 'key',
                                                   'time', v_spec ->> 'time', 'value', v_spec ->> 'value',
                                                   'spine_key', v_spec ->> 'spine_key', 'aggregates', to_jsonb(v_aggs),
                                                   'windows', v_windows, 'prefix', v_prefix);
        end case;

        for v_name in select o ->> 'name' from jsonb_array_elements(v_outputs) o loop
            if v_cols ? v_name then
                raise exception '%: output column % already exists in the training set; name it with "%"', v_path,
                    quote_literal(v_name), case when v_type in ('one_hot', 'cyclical', 'window_aggregate') then 'prefix' else 'output' end
                    using errcode = '22023';
            end if;
            v_cols := v_cols || jsonb_build_object(v_name, (select o ->> 'kind' from jsonb_array_elements(v_outputs) o where o ->> 'name' = v_name));
        end loop;
        v_out := v_out || jsonb_build_array(v_norm || jsonb_build_object('outputs', v_outputs));
    end loop;
    return v_out;
end
$$;

-- ml_private.one_hot_outputs(p_prefix text, p_categories text[], p_unseen text, p_taken text[]) returns jsonb
-- The output columns of a one_hot over the frozen categories: [{name, kind, category}] with
-- name <prefix>__<category made a plain name> (lowercase letters, digits and _), or
-- <prefix>__<8 hex of md5(category)> when that is empty, too long or taken; plus
-- {name: <prefix>__other__, other: true} when p_unseen is 'other'.
create or replace function ml_private.one_hot_outputs(p_prefix text, p_categories text[], p_unseen text, p_taken text[])
returns jsonb
language plpgsql immutable
set search_path = ''
as $$
declare
    v_taken text[] := p_taken || case when p_unseen = 'other' then array[p_prefix || '__other__'] else '{}' end;
    v_out   jsonb := '[]';
    v_cat   text;
    v_name  text;
begin
    foreach v_cat in array p_categories loop
        v_name := p_prefix || '__' || btrim(regexp_replace(lower(v_cat), '[^a-z0-9]+', '_', 'g'), '_');
        if v_name = p_prefix || '__' or octet_length(v_name) > 63 or v_name = any (v_taken) then
            v_name := p_prefix || '__' || left(md5(v_cat), 8);
        end if;
        if v_name = any (v_taken) then
            raise exception 'one_hot: cannot name a column for category % of %', quote_literal(v_cat), p_prefix
                using errcode = '22023', hint = 'Give the transformation another "prefix".';
        end if;
        v_taken := v_taken || v_name;
        v_out := v_out || jsonb_build_array(jsonb_build_object('name', v_name, 'kind', 'int', 'category', v_cat));
    end loop;
    if p_unseen = 'other' then
        if p_prefix || '__other__' = any (p_taken) then
            raise exception 'one_hot: column %__other__ already exists', p_prefix
                using errcode = '22023', hint = 'Give the transformation another "prefix".';
        end if;
        v_out := v_out || jsonb_build_array(jsonb_build_object('name', p_prefix || '__other__', 'kind', 'int', 'other', true));
    end if;
    return v_out;
end
$$;

-- ml_private.transformation_sql(p_spec jsonb, p_exprs jsonb) returns jsonb
-- The output expressions of one normalized spec with its frozen `state` (and, for one_hot, its
-- outputs), given p_exprs {column: SQL expression} for the columns it may read: [{name, kind,
-- sql_type, expr}]. The one place the math of every transformation is written; training-set
-- builds and ml.apply_transformations both evaluate these expressions. Statistics are inlined
-- as float8 literals (printed exactly: extra_float_digits is pinned by the callers).
create or replace function ml_private.transformation_sql(p_spec jsonb, p_exprs jsonb) returns jsonb
language plpgsql immutable
set search_path = ''
as $$
declare
    v_raw   text := p_exprs ->> (p_spec ->> 'column');
    v_x     text := format('(%s)::double precision', p_exprs ->> (p_spec ->> 'column'));
    v_state jsonb := coalesce(p_spec -> 'state', '{}');
    v_lit   text;
    v_div   text;
    v_out   jsonb := '[]';
    v_o     jsonb;
    v_angle text;
begin
    case p_spec ->> 'type'
    when 'log1p' then
        -- ln(1 + x) * x / ((1 + x) - 1) corrects the rounding of 1 + x, so small x keep their
        -- precision (PostgreSQL has no log1p).
        v_out := jsonb_build_array(jsonb_build_object('expr', format(
            '(case when %1$s <= -1 then null when 1 + %1$s = 1 then %1$s else ln(1 + %1$s) * %1$s / ((1 + %1$s) - 1) end)', v_x)));
    when 'standardize' then
        v_lit := coalesce(format('%L::double precision', v_state ->> 'mean'), 'null::double precision');
        v_div := coalesce(format('%L::double precision', case when (v_state ->> 'std')::double precision = 0 then '1' else v_state ->> 'std' end),
                          'null::double precision');
        v_out := jsonb_build_array(jsonb_build_object('expr', format('((%s - %s) / %s)', v_x, v_lit, v_div)));
    when 'min_max' then
        v_lit := coalesce(format('%L::double precision', v_state ->> 'min'), 'null::double precision');
        v_div := coalesce(format('%L::double precision',
                     case when (v_state ->> 'max')::double precision = (v_state ->> 'min')::double precision then '1'
                          else ((v_state ->> 'max')::double precision - (v_state ->> 'min')::double precision)::text end),
                          'null::double precision');
        v_out := jsonb_build_array(jsonb_build_object('expr', format('((%s - %s) / %s)', v_x, v_lit, v_div)));
    when 'bucketize' then
        v_out := jsonb_build_array(jsonb_build_object('expr', format('width_bucket(%s, %L::double precision[])', v_x,
            '{' || (select string_agg(b::text, ',' order by o) from jsonb_array_elements(p_spec -> 'boundaries') with ordinality x (b, o)) || '}')));
    when 'one_hot' then
        for v_o in select value from jsonb_array_elements(p_spec -> 'outputs') loop
            v_out := v_out || jsonb_build_array(jsonb_build_object('expr', case
                when (v_o ->> 'other')::boolean then format(
                    '(case when (%1$s) is not null and not ((%1$s)::text = any (%2$L::text[])) then 1 else 0 end)', v_raw,
                    array(select c ->> 'category' from jsonb_array_elements(p_spec -> 'outputs') c where c ? 'category'))
                else format('(case when (%s)::text = %L then 1 else 0 end)', v_raw, v_o ->> 'category') end));
        end loop;
    when 'cyclical' then
        v_angle := case p_spec ->> 'period'
            when 'hour' then format('2 * pi() * date_part(''hour'', (%s) at time zone %L) / 24', v_raw, p_spec ->> 'timezone')
            else format('2 * pi() * (date_part(''isodow'', (%s) at time zone %L) - 1) / 7', v_raw, p_spec ->> 'timezone') end;
        v_out := jsonb_build_array(jsonb_build_object('expr', format('sin(%s)', v_angle)),
                                   jsonb_build_object('expr', format('cos(%s)', v_angle)));
    when 'window_aggregate' then
        -- Computed from the events source into a column of the input relation (see the callers).
        select jsonb_agg(jsonb_build_object('expr', p_exprs ->> (o ->> 'name')) order by n)
        into v_out from jsonb_array_elements(p_spec -> 'outputs') with ordinality x (o, n);
    end case;

    -- Merge each expression with its output's name and kind.
    select jsonb_agg(o || e || jsonb_build_object('sql_type', case o ->> 'kind' when 'int' then 'bigint' else 'double precision' end,
                                                  'expr', format('(%s)::%s', e ->> 'expr',
                                                                 case o ->> 'kind' when 'int' then 'bigint' else 'double precision' end))
                     order by n)
    into v_out
    from jsonb_array_elements(p_spec -> 'outputs') with ordinality x (o, n)
    join jsonb_array_elements(v_out) with ordinality y (e, m) on m = n;
    return coalesce(v_out, '[]');
end
$$;

-- ml_private.window_aggregate_sql(p_spec jsonb, p_source text, p_key_expr text, p_time_expr text,
--                                 p_key_type text, p_time_type text) returns text
-- A LATERAL subquery (text, for `left join lateral (...) alias on true`) computing the outputs of
-- a window_aggregate spec for one row whose entity key and time are the expressions p_key_expr
-- (text) and p_time_expr (timestamptz), reading p_source (a relation or a parenthesized query).
-- The key is cast to the source key's type p_key_type, and the time bounds to p_time_type, so
-- an index on the source (key, time) serves the lookups. Read with the rights of whoever runs it.
create or replace function ml_private.window_aggregate_sql(p_spec jsonb, p_source text, p_key_expr text, p_time_expr text,
                                                p_key_type text, p_time_type text)
returns text
language plpgsql immutable
set search_path = ''
as $$
declare
    v_max   interval := (select max((w ->> 'interval')::interval) from jsonb_array_elements(p_spec -> 'windows') w);
    v_time  text := case when p_time_type = 'timestamp with time zone' then format('(%s)', p_time_expr)
                         else format('((%s) at time zone ''UTC'')', p_time_expr) end;
    v_cols  text;
begin
    select string_agg(format('%s as %I',
        case o ->> 'aggregate'
            when 'count' then format('count(*) filter (where e.t > %s - %L::interval)', v_time, w ->> 'interval')
            when 'sum' then format('coalesce(sum(e.v) filter (where e.t > %s - %L::interval), 0)', v_time, w ->> 'interval')
            else format('%s(e.v) filter (where e.t > %s - %L::interval)', o ->> 'aggregate', v_time, w ->> 'interval') end,
        o ->> 'name'), ', ' order by n)
    into v_cols
    from jsonb_array_elements(p_spec -> 'outputs') with ordinality x (o, n)
    join jsonb_array_elements(p_spec -> 'windows') w on w ->> 'name' = o ->> 'window';

    return format(
        'select %s from (select src.%I as t, %s as v from %s src where src.%I = (%s)::%s and src.%I <= %s and src.%I > %s - %L::interval) e',
        v_cols, p_spec ->> 'time',
        case when p_spec ->> 'value' is null then 'null::double precision' else format('(src.%I)::double precision', p_spec ->> 'value') end,
        p_source, p_spec ->> 'key', p_key_expr, p_key_type, p_spec ->> 'time', v_time, p_spec ->> 'time', v_time, v_max);
end
$$;

------------------------------------------------------------------------------------------------
-- API
------------------------------------------------------------------------------------------------

-- ml.apply_transformations(dataset uuid, features jsonb) returns jsonb
-- The model inputs of a training set for new rows, with its frozen transformations: the same
-- SQL expressions that built the training set (ml_private.transformation_sql), so a model is
-- scored with exactly the math it was trained on. `features` is one object or an array of
-- objects holding raw values by the dataset's column names (features as named in the dataset,
-- event_time, the spine keys); an object gives an object, an array an array in the same order.
-- Each result holds the dataset's `inputs`. Absent or null values are NULL inputs; timestamps
-- without an offset are UTC.
-- Windowed aggregates: given in the row (all outputs of the spec), or computed from the spec's
-- source with the caller's rights for the row's key and event_time (now() when absent).
-- Unknown keys are ignored. Raises 22023 `features` not an object or array of objects, or a
-- value that does not parse as its column's type (22P02 and friends); P0002 no such dataset
-- visible to the caller. Security invoker: it reads ml.datasets through RLS and the events
-- sources with the caller's rights. Callers: any member (viewers too), service_role.
create or replace function ml.apply_transformations(dataset uuid, features jsonb) returns jsonb
language plpgsql stable
set extra_float_digits = 1
set timezone = 'UTC'
as $$
declare
    v_ds      record;
    v_rows    jsonb;
    v_select  text[] := array['j.ord as "__pgmlops_ord"'];
    v_exprs   jsonb := '{}';
    v_joins   text := '';
    v_c       jsonb;
    v_spec    jsonb;
    v_outputs jsonb;
    v_o       jsonb;
    v_n       int := 0;
    v_src     text;
    v_provided text;
    v_key_type text;
    v_time_type text;
    v_result  jsonb;
begin
    if features is null or jsonb_typeof(features) not in ('object', 'array')
       or (jsonb_typeof(features) = 'array' and exists (select 1 from jsonb_array_elements(features) e where jsonb_typeof(e) <> 'object')) then
        raise exception 'features: must be an object of raw values by column name, or an array of such objects' using errcode = '22023';
    end if;
    select d.id, d.tenant_id, d.columns, d.inputs, d.transformations, d.key_columns into v_ds
    from ml.datasets d where d.id = dataset and d.tenant_id = ml_private.acting_tenant_id(false);
    if v_ds.id is null then
        raise exception 'dataset % does not exist', coalesce(dataset::text, 'NULL') using errcode = 'P0002';
    end if;
    v_rows := case when jsonb_typeof(features) = 'object' then jsonb_build_array(features) else features end;

    -- The raw columns, typed as in the dataset.
    for v_c in select value from jsonb_array_elements(v_ds.columns) where value ->> 'role' in ('key', 'feature', 'event_time') loop
        v_select := v_select || format('%s as %I', case v_c ->> 'role'
            when 'key' then format('(j.row ->> %L)', v_c ->> 'name')
            when 'event_time' then 'coalesce((j.row ->> ''event_time'')::timestamptz, now())'
            else ml_private.feature_value_sql(v_c ->> 'dtype', 'j.row', v_c ->> 'name') end, v_c ->> 'name');
        v_exprs := v_exprs || jsonb_build_object(v_c ->> 'name', format('r.%I', v_c ->> 'name'));
    end loop;
    -- Windowed aggregates: provided, or computed from the source as the caller.
    for v_spec in select value from jsonb_array_elements(v_ds.transformations) where value ->> 'type' = 'window_aggregate' loop
        v_n := v_n + 1;
        v_src := (v_spec ->> 'source')::regclass::text;
        -- The (base) types of the source's key and time, from a typed NULL: no row is read.
        execute format(
            'select format_type(coalesce(nullif(kt.typbasetype, 0), kt.oid), null), format_type(coalesce(nullif(tt.typbasetype, 0), tt.oid), null)
             from (select pg_typeof(s.k) as k, pg_typeof(s.t) as t
                   from (select 1) d left join (select src.%I as k, src.%I as t from %s src limit 0) s on true) x
             join pg_catalog.pg_type kt on kt.oid = x.k join pg_catalog.pg_type tt on tt.oid = x.t',
            v_spec ->> 'key', v_spec ->> 'time', v_src)
        into v_key_type, v_time_type;
        v_provided := format('j.row ?& %L::text[]', array(select o ->> 'name' from jsonb_array_elements(v_spec -> 'outputs') o));
        v_joins := v_joins || format(' left join lateral (%s) a%s on not (%s)', ml_private.window_aggregate_sql(
            v_spec, v_src, format('(j.row ->> %L)', coalesce(v_spec ->> 'spine_key', v_ds.key_columns[1])),
            'coalesce((j.row ->> ''event_time'')::timestamptz, now())', v_key_type, v_time_type), v_n, v_provided);
        for v_o in select value from jsonb_array_elements(v_spec -> 'outputs') loop
            v_select := v_select || format('case when %s then %s else a%s.%I end as %I', v_provided,
                ml_private.feature_value_sql(case v_o ->> 'kind' when 'int' then 'int' else 'float' end, 'j.row', v_o ->> 'name'),
                v_n, v_o ->> 'name', v_o ->> 'name');
            v_exprs := v_exprs || jsonb_build_object(v_o ->> 'name', format('r.%I', v_o ->> 'name'));
        end loop;
    end loop;
    for v_spec in select value from jsonb_array_elements(v_ds.transformations) loop
        v_outputs := ml_private.transformation_sql(v_spec, v_exprs);
        for v_o in select value from jsonb_array_elements(v_outputs) loop
            v_exprs := v_exprs || jsonb_build_object(v_o ->> 'name', v_o ->> 'expr');
        end loop;
    end loop;

    execute format(
        'select jsonb_agg(jsonb_build_object(%s) order by r."__pgmlops_ord") from (select %s from jsonb_array_elements($1) with ordinality j (row, ord)%s) r',
        (select string_agg(format('%L, %s', i, v_exprs ->> i), ', ' order by n) from unnest(v_ds.inputs) with ordinality x (i, n)),
        array_to_string(v_select, ', '), v_joins)
    into v_result using v_rows;
    return case when jsonb_typeof(features) = 'object' then v_result -> 0 else v_result end;
end
$$;

------------------------------------------------------------------------------------------------
-- Grants
------------------------------------------------------------------------------------------------

grant execute on function
    ml_private.transformation_sql(jsonb, jsonb),
    ml_private.window_aggregate_sql(jsonb, text, text, text, text, text),
    ml.apply_transformations(uuid, jsonb)
to authenticated, service_role;
