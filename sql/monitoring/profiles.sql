-- pgmlops: monitoring/profiles.sql — reference profiles (docs/monitoring.md, "Reference profiles")
--
-- What "normal" looks like, stored in ml.reference_profiles when a training set is built
-- (ml_private.profile_dataset, called by ml_private.materialize_training_set) and when a model
-- version is registered (ml_private.profile_model_version, called by ml.register_model_version):
-- one row per input column, per model output (role prediction, score) and for the label.
--
-- The rules (numpy reproduces every figure; tests/test_reference_profiles.py checks them):
--   kind        numeric for int, float and timestamp columns (timestamps as epoch seconds);
--               categorical for text, category and bool; binary for any of those with exactly
--               2 distinct values; vector for vector(n); text for a text column with more than
--               ml_private.profile_category_limit() (1000) distinct values (no frequencies: its
--               drift is embedding drift).
--   row_count, nulls, distinct_count (distinct non-null values; NaN is null).
--   numeric     edges: ml_private.profile_bins() (20) quantile bins from the reference alone:
--               numpy.quantile(x, linspace(0, 1, 21)) (linear interpolation, percentile_cont),
--               tied edges dropped (so fewer bins where values repeat). A column with at most
--               ml_private.profile_discrete_limit() (20) distinct values gets one bin per value
--               instead: edges v1, (v1+v2)/2, ..., (v(k-1)+vk)/2, vk (a single value v: v, v),
--               and its frequencies. counts: n + 2 entries on n + 1 edges, counts[1] the
--               underflow (below the first edge), counts[n + 2] the overflow (above the last),
--               binned by ml_private.histogram_bin, the rule of the feature statistics: bins
--               [e_k, e_k+1), the last one closed. A reference has nothing under or over its own
--               edges; current windows binned on them may.
--               summary: mean, std (ddof 1), min, max, quantiles {p01, p05, p25, p50, p75, p95,
--               p99} (linear interpolation), bin_sums (the sum of the values in each of the n + 2
--               cells of counts: fast mode's Wasserstein distance is exact within bins with them).
--   categorical frequencies {value: count} of every value; values keyed by
--   binary      ml_private.profile_category (strings as they are, booleans 'true' / 'false',
--               numbers by their float8 text: 1 and 1.0 are '1').
--   vector      summary {dim, centroid} (element-wise mean of the non-null vectors).
-- One scan per statement: the aggregates of every column in one pass, then the counts of every
-- column in a second pass (its bins or values, all columns unpivoted into one hash aggregate).

------------------------------------------------------------------------------------------------
-- Rules and value coercion (shared with windows.sql and reports.sql)
------------------------------------------------------------------------------------------------

-- ml_private.profile_bins() returns int: the quantile bins of a numeric profile (20).
create or replace function ml_private.profile_bins() returns int
language sql immutable parallel safe
return 20;

-- ml_private.profile_discrete_limit() returns int: a numeric column with at most this many distinct
-- values (20) gets one bin per value and its frequencies.
create or replace function ml_private.profile_discrete_limit() returns int
language sql immutable parallel safe
return 20;

-- ml_private.profile_category_limit() returns int: a text column with more distinct values (1000)
-- is profiled as kind text, without frequencies.
create or replace function ml_private.profile_category_limit() returns int
language sql immutable parallel safe
return 1000;

-- ml_private.profile_dtype(p_sql_type text, p_dtype text) returns text
-- The profile dtype of a column: p_dtype when it is a feature dtype (int, float, timestamp, bool,
-- text, category, vector(n) -> vector), else from the SQL type (format_type) of the column.
create or replace function ml_private.profile_dtype(p_sql_type text, p_dtype text) returns text
language sql immutable parallel safe
set search_path = ''
as $$
    select case
        when p_dtype ~ '^vector' then 'vector'
        when p_dtype in ('int', 'float', 'timestamp', 'bool', 'text', 'category') then p_dtype
        when p_sql_type in ('smallint', 'integer', 'bigint') then 'int'
        when p_sql_type in ('real', 'double precision') or p_sql_type ~ '^numeric' then 'float'
        when p_sql_type = 'boolean' then 'bool'
        when p_sql_type ~ '^timestamp' or p_sql_type = 'date' then 'timestamp'
        when p_sql_type ~ '\[\]$' or p_sql_type ~ '^vector' then 'vector'
        else 'text' end
$$;

-- ml_private.profile_category(p_value jsonb) returns text
-- A JSON value as a category key: a string as it is, a boolean 'true' / 'false', a number by its
-- float8 text (1 and 1.0 are '1'; call it with extra_float_digits = 1, the default, so the text
-- is the shortest exact one), NULL for null; arrays and objects by their JSON text.
-- Inlined into the queries that call it. Callers: the monitoring SQL (windows, reports).
create or replace function ml_private.profile_category(p_value jsonb) returns text
language sql immutable parallel safe
as $$
    select case pg_catalog.jsonb_typeof(p_value)
        when 'string' then p_value operator(pg_catalog.#>>) '{}'
        when 'number' then ((p_value operator(pg_catalog.#>>) '{}')::pg_catalog.float8)::pg_catalog.text
        when 'boolean' then p_value operator(pg_catalog.#>>) '{}'
        when 'null' then null
        else p_value::pg_catalog.text end
$$;

-- ml_private.profile_number(p_value jsonb, p_dtype text) returns float8
-- A JSON value of a numeric feature as the profile's number: a number as float8 (NaN: NULL), a
-- timestamp (ISO text; call it with timezone = 'UTC' so text without an offset is UTC) as epoch
-- seconds; anything else NULL. Raises 22007 for a timestamp text that does not parse.
-- Inlined into the queries that call it. Callers: the monitoring SQL (windows, reports).
create or replace function ml_private.profile_number(p_value jsonb, p_dtype text) returns float8
language sql stable parallel safe
as $$
    select case when pg_catalog.jsonb_typeof(p_value) = 'number'
                    then nullif((p_value operator(pg_catalog.#>>) '{}')::pg_catalog.float8, 'NaN'::pg_catalog.float8)
                when p_dtype = 'timestamp' and pg_catalog.jsonb_typeof(p_value) = 'string'
                    then pg_catalog.date_part('epoch', (p_value operator(pg_catalog.#>>) '{}')::pg_catalog.timestamptz) end
$$;

-- ml_private.profile_column_exprs(p_column text, p_sql_type text, p_dtype text, p_alias text) returns jsonb
-- The SQL expressions that read column p_column (of SQL type p_sql_type, profile dtype p_dtype)
-- of a relation aliased p_alias: {num: float8 expression} for int, float and timestamp; {cat:
-- text expression} for bool, text and category (bool as 'true' / 'false'); {vec: float8[]
-- expression} for vectors (vector or number arrays). Identifiers quoted with %I.
create or replace function ml_private.profile_column_exprs(p_column text, p_sql_type text, p_dtype text, p_alias text) returns jsonb
language sql immutable
set search_path = ''
as $$
    select case
        when p_dtype in ('int', 'float') then jsonb_build_object('num', format('nullif((%s.%I)::float8, ''NaN''::float8)', p_alias, p_column))
        when p_dtype = 'timestamp' then jsonb_build_object('num', case when p_sql_type = 'date'
            then format('date_part(''epoch'', (%s.%I)::timestamp)', p_alias, p_column)
            else format('date_part(''epoch'', %s.%I)', p_alias, p_column) end)
        when p_dtype = 'bool' then jsonb_build_object('cat', format('(case when %1$s.%2$I then ''true'' when not %1$s.%2$I then ''false'' end)', p_alias, p_column))
        when p_dtype = 'vector' then jsonb_build_object('vec', case when p_sql_type ~ '^vector'
            then format('((%s.%I)::real[])::float8[]', p_alias, p_column) else format('(%s.%I)::float8[]', p_alias, p_column) end)
        else jsonb_build_object('cat', format('(%s.%I)::text', p_alias, p_column)) end
$$;

------------------------------------------------------------------------------------------------
-- The profiler
------------------------------------------------------------------------------------------------

-- ml_private.profile_relation(p_from text, p_columns jsonb) returns jsonb
-- Profiles the rows of p_from (a FROM item aliased t, e.g. 'ml_datasets."x_1234abcd" t') for each
-- of p_columns, [{feature, role, dtype, num | cat | vec: SQL expression over t}], by the rules in
-- this file's header. Returns [{feature, role, dtype, kind, row_count, nulls, distinct_count,
-- edges, counts, frequencies, summary}], one per column, in order.
-- Cost: three scans of p_from. A count; the aggregates of every column (moments and one sort per
-- numeric column for its quantiles); the counts of every column in one hash aggregate (GROUPING
-- SETS: a numeric column by bin, or by value when its quantile edges tie; a categorical one by
-- value). distinct_count is exact, except for a numeric column of more than 100,000 rows whose 21
-- quantile edges are all distinct: more than 20 values for sure, not counted (NULL), which
-- spares a sort of every numeric column.
-- Callers: ml_private.profile_dataset, ml_private.profile_model_outputs (the owner's functions).
create or replace function ml_private.profile_relation(p_from text, p_columns jsonb) returns jsonb
language plpgsql volatile
set search_path = ''
set extra_float_digits = 1
set work_mem = '256MB'
set jit = off
as $$
declare
    v_n        int := jsonb_array_length(p_columns);
    v_bins     int := ml_private.profile_bins();
    v_rows     bigint;
    v_probs    float8[];
    v_aggs     text[] := '{}';
    v_stats    jsonb;
    v_c        jsonb;
    v_s        jsonb;
    v_keys     text[] := '{}';
    v_slots    int[] := '{}';
    v_counts   jsonb := '{}';
    v_edges    jsonb := '{}';
    v_out      jsonb := '[]';
    v_i        int;
    v_kind     text;
    v_e        float8[];
    v_k        float8[];
    v_cnt      bigint[];
    v_freq     jsonb;
    v_summary  jsonb;
    v_distinct bigint;
    v_binned   jsonb := '{}';
    v_sums     text[] := '{}';
    v_bsum     jsonb;
    v_bin_sums float8[];
    v_wide     boolean;
begin
    if v_n = 0 then
        return '[]';
    end if;
    execute format('select count(*) from %s', p_from) into v_rows;
    -- Quantiles: the n + 1 edges, then the summary's p01 ... p99.
    v_probs := array(select i::float8 / v_bins from generate_series(0, v_bins) i) || array[0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99]::float8[];

    -- Scan 1: every column's aggregates. Moments in float8, as numpy computes them; values so
    -- large that their squares overflow float8 (beyond 1e154) are summed in numeric instead.
    foreach v_wide in array array[false, true] loop
        v_aggs := '{}';
        for v_i in 0 .. v_n - 1 loop
            v_c := p_columns -> v_i;
            v_aggs := v_aggs || case
                when v_c ? 'num' then format(
                    'jsonb_build_object(''valid'', count(%1$s), %3$s ''mean'', avg(%1$s%4$s), ''std'', stddev_samp(%1$s%4$s), '
                    '''min'', min(%1$s), ''max'', max(%1$s), ''q'', to_jsonb(percentile_cont(%2$L::float8[]) within group (order by %1$s)))',
                    v_c ->> 'num', v_probs, case when v_rows <= 100000 then format('''distinct'', count(distinct %s),', v_c ->> 'num') else '' end,
                    case when v_wide then '::numeric' else '' end)
                when v_c ? 'cat' then format('jsonb_build_object(''valid'', count(%1$s))', v_c ->> 'cat')
                else format('jsonb_build_object(''valid'', count(%1$s), ''dim'', max(cardinality(%1$s)))', v_c ->> 'vec') end;
        end loop;
        begin
            execute format('select %s from %s',
                           (select string_agg(format('jsonb_build_array(%s)', array_to_string(v_aggs[g * 50 + 1 : g * 50 + 50], ', ')), ' || ')
                            from generate_series(0, (v_n - 1) / 50) g),
                           p_from)
                into v_stats;
            exit;
        exception when numeric_value_out_of_range then
            if v_wide then
                raise;
            end if;
        end;
    end loop;

    -- Scan 2: the counts of every column, one hash aggregate with a grouping set per column: a
    -- numeric column by its bin on the deduplicated quantile edges when it has more than 20
    -- values (counted, or sure since its 21 edges are distinct), else by value; a categorical
    -- column by value.
    for v_i in 0 .. v_n - 1 loop
        v_c := p_columns -> v_i;
        v_s := v_stats -> v_i;
        continue when (v_s ->> 'valid')::bigint = 0 or v_c ? 'vec';
        if v_c ? 'num' then
            v_e := array(select distinct q.e::float8 from jsonb_array_elements_text(v_s -> 'q') with ordinality q (e, o)
                         where q.o <= v_bins + 1 order by 1);
            v_edges := v_edges || jsonb_build_object(v_i::text, to_jsonb(v_e));
            if coalesce((v_s ->> 'distinct')::bigint > ml_private.profile_discrete_limit(), cardinality(v_e) = v_bins + 1) then
                v_binned := v_binned || jsonb_build_object(v_i::text, true);
                v_keys := v_keys || format('ml_private.histogram_bin(%L::float8[], %s)', v_e, v_c ->> 'num');
                v_sums := v_sums || (v_c ->> 'num');
            else
                v_keys := v_keys || (v_c ->> 'num');
                v_sums := v_sums || null::text;
            end if;
        else
            v_keys := v_keys || (v_c ->> 'cat');
            v_sums := v_sums || null::text;
        end if;
        v_slots := v_slots || v_i;
    end loop;
    if cardinality(v_keys) > 0 then
        -- A binned column's bins also sum its values (what fast mode's Wasserstein distance needs).
        execute format('select %s from (select %s, count(*) as n%s from %s group by grouping sets (%s)) x',
                       (select string_agg(format('jsonb_build_object(%s)', part), ' || ')
                        from (select string_agg(format('%L, coalesce(jsonb_object_agg(x.k%s, x.n) filter (where x.k%s is not null), ''{}'')',
                                                       v_slots[j], j, j)
                                                || case when v_sums[j] is null then ''
                                                        else format(', %L, coalesce(jsonb_object_agg(x.k%s, x.s%s) filter (where x.k%s is not null), ''{}'')',
                                                                    's' || v_slots[j], j, j, j) end, ', ' order by j) as part
                              from generate_series(1, cardinality(v_keys)) j group by (j - 1) / 20) g),
                       (select string_agg(format('%s as k%s', v_keys[j], j), ', ' order by j) from generate_series(1, cardinality(v_keys)) j),
                       coalesce((select string_agg(format(', sum(%s) as s%s', v_sums[j], j), '' order by j)
                                 from generate_series(1, cardinality(v_keys)) j where v_sums[j] is not null), ''),
                       p_from,
                       (select string_agg(format('(%s)', j), ', ' order by j) from generate_series(1, cardinality(v_keys)) j))
            into v_counts;
    end if;

    for v_i in 0 .. v_n - 1 loop
        v_c := p_columns -> v_i;
        v_s := v_stats -> v_i;
        v_e := null;
        v_cnt := null;
        v_bin_sums := null;
        v_freq := null;
        v_summary := '{}';
        v_distinct := 0;
        if v_c ? 'num' and (v_s ->> 'valid')::bigint > 0 then
            v_summary := jsonb_build_object('mean', v_s -> 'mean', 'std', v_s -> 'std', 'min', v_s -> 'min', 'max', v_s -> 'max',
                'quantiles', jsonb_build_object('p01', v_s -> 'q' -> (v_bins + 1), 'p05', v_s -> 'q' -> (v_bins + 2),
                                                'p25', v_s -> 'q' -> (v_bins + 3), 'p50', v_s -> 'q' -> (v_bins + 4),
                                                'p75', v_s -> 'q' -> (v_bins + 5), 'p95', v_s -> 'q' -> (v_bins + 6),
                                                'p99', v_s -> 'q' -> (v_bins + 7)));
            v_e := array(select e::float8 from jsonb_array_elements_text(v_edges -> v_i::text) e);
            v_freq := coalesce(v_counts -> v_i::text, '{}');
            if v_binned ? v_i::text then
                v_distinct := (v_s ->> 'distinct')::bigint;
                v_cnt := array(select coalesce((v_freq ->> b::text)::bigint, 0) from generate_series(0, cardinality(v_e)) b order by b);
                v_bsum := v_counts -> ('s' || v_i);
                v_bin_sums := array(select coalesce((v_bsum ->> b::text)::float8, 0) from generate_series(0, cardinality(v_e)) b order by b);
                v_freq := null;
            else
                v_k := array(select k::float8 from jsonb_object_keys(v_freq) k order by k::float8);
                v_distinct := cardinality(v_k);
                if v_distinct <= ml_private.profile_discrete_limit() then
                    -- One bin per value: edges at the values' midpoints.
                    v_e := case when v_distinct = 1 then array[v_k[1], v_k[1]]
                                else array[v_k[1]] || array(select (v_k[j] + v_k[j + 1]) / 2 from generate_series(1, v_distinct - 1) j order by j)
                                     || v_k[v_distinct] end;
                    v_cnt := array[0::bigint]
                             || array(select (v_freq ->> (u.k::text))::bigint from unnest(v_k) with ordinality u (k, j) order by u.j)
                             || 0::bigint;
                    v_bin_sums := array[0::float8]
                                  || array(select u.k * (v_freq ->> (u.k::text))::float8 from unnest(v_k) with ordinality u (k, j) order by u.j)
                                  || 0::float8;
                else
                    -- Many values, tied quantile edges: the value counts summed into the bins.
                    v_cnt := array(select coalesce(sum(c.n), 0)::bigint
                                   from generate_series(0, cardinality(v_e)) b
                                   left join (select ml_private.histogram_bin(v_e, f.k::float8) as bin, f.v::bigint as n
                                              from jsonb_each_text(v_freq) f (k, v)) c on c.bin = b
                                   group by b order by b);
                    v_bin_sums := array(select coalesce(sum(c.x), 0)::float8
                                        from generate_series(0, cardinality(v_e)) b
                                        left join (select ml_private.histogram_bin(v_e, f.k::float8) as bin, f.k::float8 * f.v::float8 as x
                                                   from jsonb_each_text(v_freq) f (k, v)) c on c.bin = b
                                        group by b order by b);
                    v_freq := null;
                end if;
            end if;
            v_kind := case when v_distinct = 2 then 'binary' else 'numeric' end;
            v_summary := v_summary || jsonb_build_object('bin_sums', to_jsonb(v_bin_sums));
        elsif v_c ? 'num' then
            v_kind := 'numeric';
        elsif v_c ? 'cat' then
            v_freq := coalesce(v_counts -> v_i::text, '{}');
            v_distinct := (select count(*) from jsonb_object_keys(v_freq));
            v_kind := case when v_distinct = 2 then 'binary'
                           when v_c ->> 'dtype' = 'text' and v_distinct > ml_private.profile_category_limit() then 'text'
                           else 'categorical' end;
            if v_kind = 'text' then
                v_freq := null;
            end if;
        else
            v_kind := 'vector';
            v_distinct := null;
            if (v_s ->> 'valid')::bigint > 0 then
                execute format('select jsonb_build_object(''dim'', %s, ''centroid'', jsonb_agg(a.m order by a.i)) from ('
                               'select u.i, avg(u.e) as m from %s cross join lateral unnest(%s) with ordinality u (e, i) group by u.i) a',
                               (v_s ->> 'dim')::int, p_from, v_c ->> 'vec')
                    into v_summary;
            end if;
        end if;
        v_out := v_out || jsonb_build_array(jsonb_build_object(
            'feature', v_c ->> 'feature', 'role', coalesce(v_c ->> 'role', 'input'), 'dtype', v_c ->> 'dtype', 'kind', v_kind,
            'row_count', v_rows, 'nulls', v_rows - (v_s ->> 'valid')::bigint,
            'distinct_count', v_distinct, 'edges', to_jsonb(v_e), 'counts', to_jsonb(v_cnt), 'frequencies', v_freq,
            'summary', v_summary));
    end loop;
    return v_out;
end
$$;

-- ml_private.profile_store(p_tenant uuid, p_dataset uuid, p_version uuid, p_profiles jsonb) returns int
-- Inserts p_profiles (ml_private.profile_relation's output) as rows of a dataset or a version
-- (exactly one of p_dataset, p_version), replacing rows of the same role and feature. Returns
-- the rows written.
create or replace function ml_private.profile_store(p_tenant uuid, p_dataset uuid, p_version uuid, p_profiles jsonb) returns int
language plpgsql volatile
set search_path = ''
as $$
declare
    v_n int;
begin
    delete from ml.reference_profiles r
    where ((p_dataset is not null and r.dataset_id = p_dataset) or (p_version is not null and r.model_version_id = p_version))
      and (r.role, r.feature) in (select p ->> 'role', p ->> 'feature' from jsonb_array_elements(p_profiles) p);
    insert into ml.reference_profiles (tenant_id, dataset_id, model_version_id, feature, kind, dtype, role, row_count, nulls,
                                       distinct_count, edges, counts, frequencies, summary)
    select p_tenant, p_dataset, p_version, p ->> 'feature', p ->> 'kind', p ->> 'dtype', p ->> 'role', (p ->> 'row_count')::bigint,
           (p ->> 'nulls')::bigint, (p ->> 'distinct_count')::bigint,
           case when jsonb_typeof(p -> 'edges') = 'array' then array(select e::float8 from jsonb_array_elements_text(p -> 'edges') e) end,
           case when jsonb_typeof(p -> 'counts') = 'array' then array(select e::bigint from jsonb_array_elements_text(p -> 'counts') e) end,
           case when jsonb_typeof(p -> 'frequencies') = 'object' then p -> 'frequencies' end,
           coalesce(p -> 'summary', '{}')
    from jsonb_array_elements(p_profiles) p;
    get diagnostics v_n = row_count;
    return v_n;
end
$$;

-- ml_private.profile_dataset(p_dataset uuid) returns int
-- Profiles a training set from its materialized table: every feature and aggregate column (role
-- input: the raw values ml.predict logs) and the label (role label). Replaces the dataset's
-- earlier profile. Returns the rows written to ml.reference_profiles (0: no such dataset).
-- Callers: ml_private.materialize_training_set (in the build's transaction), the owner's
-- functions (profile_model_version, drift reports).
create or replace function ml_private.profile_dataset(p_dataset uuid) returns int
language plpgsql volatile security definer
set search_path = ''
set extra_float_digits = 1
set jit = off
as $$
declare
    v_ds   ml.datasets;
    v_cols jsonb;
begin
    select * into v_ds from ml.datasets d where d.id = p_dataset;
    if v_ds.id is null then
        return 0;
    end if;
    select coalesce(jsonb_agg(jsonb_build_object('feature', c ->> 'name', 'role', case when c ->> 'role' = 'label' then 'label' else 'input' end,
                                                 'dtype', ml_private.profile_dtype(c ->> 'type', c ->> 'dtype'))
                              || ml_private.profile_column_exprs(c ->> 'name', c ->> 'type', ml_private.profile_dtype(c ->> 'type', c ->> 'dtype'), 't')
                              order by o), '[]')
    into v_cols
    from jsonb_array_elements(v_ds.columns) with ordinality x (c, o)
    where c ->> 'role' in ('feature', 'aggregate', 'label');
    delete from ml.reference_profiles r where r.dataset_id = v_ds.id;
    return ml_private.profile_store(v_ds.tenant_id, v_ds.id, null, ml_private.profile_relation(v_ds.table_name || ' t', v_cols));
end
$$;

-- ml_private.profile_model_outputs(p_version uuid) returns int
-- Profiles a compiled version's outputs on its training set's rows, scored in SQL with its
-- compiled function (JIT off): role prediction (classification and anomaly detection:
-- categorical; regression: numeric) and, for classification and anomaly detection, role score
-- (numeric: the positive class's probability, the largest probability or the decision function;
-- the anomaly score), as ml.predict logs them. Returns the rows written; 0 for a version scored by
-- workers (no compiled function: its outputs stay unprofiled until it is compiled) or without a
-- training set. Callers: ml_private.profile_model_version, drift reports (the owner's functions).
create or replace function ml_private.profile_model_outputs(p_version uuid) returns int
language plpgsql volatile security definer
set search_path = ''
set extra_float_digits = 1
set jit = off
as $$
declare
    v_v    ml.model_versions;
    v_ds   ml.datasets;
    v_task text;
    v_args jsonb;
    v_out  jsonb;
    v_cols jsonb;
    v_n    int;
begin
    select * into v_v from ml.model_versions v where v.id = p_version;
    if v_v.id is null or v_v.dataset_id is null or ml_private.compiled_function(v_v.id) is null then
        return 0;
    end if;
    select * into v_ds from ml.datasets d where d.id = v_v.dataset_id;
    if v_ds.id is null then
        return 0;
    end if;
    select p.task into v_task from ml.models m join ml.projects p on p.id = m.project_id where m.id = v_v.model_id;
    v_args := ml_private.batch_arguments_sql(ml_private.compiled_model_inputs(v_v.signature, v_ds.id) -> 'arguments',
                                             ml_private.batch_columns(v_ds.table_name::regclass), 't');
    v_out := ml_private.batch_outputs_sql(v_task, v_v.signature -> 'classes', 's.r');
    drop table if exists pg_temp._pgmlops_profile_outputs;
    execute format('create temp table _pgmlops_profile_outputs on commit drop as '
                   'select s.r -> ''prediction'' as prediction, %s as score '
                   'from (select ml_models.%I(a.num, a.cat) as r from (select %s as num, %s as cat from %s t offset 0) a offset 0) s',
                   v_out ->> 'score', ml_private.compiled_model_name(v_v.id), v_args ->> 'num', v_args ->> 'cat', v_ds.table_name);
    v_cols := case when v_task = 'regression' then
                  jsonb_build_array(jsonb_build_object('feature', 'prediction', 'role', 'prediction', 'dtype', 'float',
                                                       'num', 'ml_private.profile_number(t.prediction, ''float'')'))
              else jsonb_build_array(
                  jsonb_build_object('feature', 'prediction', 'role', 'prediction', 'dtype', 'category',
                                     'cat', 'ml_private.profile_category(t.prediction)'),
                  jsonb_build_object('feature', 'score', 'role', 'score', 'dtype', 'float', 'num', 't.score')) end;
    v_n := ml_private.profile_store(v_v.tenant_id, null, v_v.id,
                                    ml_private.profile_relation('pg_temp._pgmlops_profile_outputs t', v_cols));
    drop table pg_temp._pgmlops_profile_outputs;
    return v_n;
end
$$;

-- ml_private.profile_model_version(p_version uuid) returns int
-- The reference profile of a model version: its training set's profile (inputs and label,
-- copied; the training set is profiled first when it has no profile yet) and, for a compiled
-- version, its outputs (ml_private.profile_model_outputs). A version registered before its
-- compilation (every version: compiling is a job queued by the registration) gets its outputs
-- profiled by the first drift report that finds it compiled. Replaces the version's earlier
-- profile. Returns the rows written (0: no such version, or no training set).
-- Callers: ml.register_model_version (in the registration's transaction), drift reports.
create or replace function ml_private.profile_model_version(p_version uuid) returns int
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_v ml.model_versions;
    v_n int := 0;
begin
    select * into v_v from ml.model_versions v where v.id = p_version;
    if v_v.id is null or v_v.dataset_id is null then
        return 0;
    end if;
    if not exists (select 1 from ml.reference_profiles r where r.dataset_id = v_v.dataset_id) then
        perform ml_private.profile_dataset(v_v.dataset_id);
    end if;
    delete from ml.reference_profiles r where r.model_version_id = v_v.id;
    insert into ml.reference_profiles (tenant_id, model_version_id, feature, kind, dtype, role, row_count, nulls, distinct_count,
                                       edges, counts, frequencies, summary)
    select r.tenant_id, v_v.id, r.feature, r.kind, r.dtype, r.role, r.row_count, r.nulls, r.distinct_count, r.edges, r.counts,
           r.frequencies, r.summary
    from ml.reference_profiles r where r.dataset_id = v_v.dataset_id;
    get diagnostics v_n = row_count;
    return v_n + ml_private.profile_model_outputs(v_v.id);
end
$$;

-- ml_private.profile_document(p ml.reference_profiles) returns jsonb
-- One profile row as the API returns it: {feature, role, kind, dtype, row_count, nulls,
-- distinct_count, edges, counts, frequencies, summary}.
create or replace function ml_private.profile_document(p ml.reference_profiles) returns jsonb
language sql stable
set search_path = ''
set extra_float_digits = 1
as $$
    select jsonb_build_object('feature', p.feature, 'role', p.role, 'kind', p.kind, 'dtype', p.dtype, 'row_count', p.row_count,
                              'nulls', p.nulls, 'distinct_count', p.distinct_count, 'edges', to_jsonb(p.edges),
                              'counts', to_jsonb(p.counts), 'frequencies', p.frequencies, 'summary', p.summary)
$$;

------------------------------------------------------------------------------------------------
-- API
------------------------------------------------------------------------------------------------

-- ml.reference_profile(model text, version int default null) returns jsonb
-- The reference profile of a model version (the given one, or the newest; `model` may be
-- 'name@version' or 'name@alias'): {model, version, model_version_id, dataset_id, profiled_at,
-- features: [ml_private.profile_document, ... ordered by role (input, label, prediction, score)
-- and feature]}. features is empty for a version without a training set.
-- Raises like ml_private.find_model_version (22023 malformed reference; P0002 unknown model or
-- version); 42501 non-members. Callers: any member (viewers too), service_role.
create or replace function ml.reference_profile(model text, version int default null) returns jsonb
language plpgsql stable security definer
set search_path = ''
set extra_float_digits = 1
as $$
declare
    v_v ml.model_versions := ml_private.find_model_version(ml_private.acting_tenant_id(false), reference_profile.model,
                                                           reference_profile.version);
begin
    return jsonb_build_object(
        'model', (select m.name from ml.models m where m.id = v_v.model_id), 'version', v_v.version, 'model_version_id', v_v.id,
        'dataset_id', v_v.dataset_id,
        'profiled_at', (select max(r.created_at) from ml.reference_profiles r where r.model_version_id = v_v.id),
        'features', coalesce((select jsonb_agg(ml_private.profile_document(r)
                                               order by array_position(array['input', 'label', 'prediction', 'score'], r.role), r.feature)
                              from ml.reference_profiles r where r.model_version_id = v_v.id), '[]'));
end
$$;

------------------------------------------------------------------------------------------------
-- Grants
------------------------------------------------------------------------------------------------

grant execute on function ml.reference_profile(text, int) to authenticated, service_role;
