-- pgmlops: feature store — statistics snapshots
--
-- ml.compute_feature_stats(group) profiles one feature group version in one pass over its values
-- and stores the result in ml.feature_stats, a snapshot that later serves as the reference of
-- drift checks. The definitions are fixed so that any client (numpy, pandas, SQL) reproduces
-- them exactly:
--   count      values present, not null and of the feature's type
--   nulls      rows where the feature is null (absent when ingested)
--   invalid    rows whose value is not of the feature's type: always 0, since every value is
--              stored in a column of its type (kept for the documents' shape)
--   mean       arithmetic mean (float8)
--   std        SAMPLE standard deviation, ddof = 1 (pandas' default; numpy.std(x, ddof=1));
--              NULL when count < 2
--   min, max   smallest and largest value
--   quantiles  p1, p5, p25, p50, p75, p95, p99 by linear interpolation between the closest ranks
--              (percentile_cont; numpy.quantile's default method 'linear', pandas' default)
--   histogram  numpy.histogram(x, bins=N): N equal-width bins from min to max (from min - 0.5 to
--              max + 0.5 when min = max), edges = numpy.linspace; every bin is [lo, hi) but the
--              last, which is [lo, hi]. Edges are stored, so new data can be binned on the very
--              same edges: ml_private.histogram_bin() is the one binning rule.
-- By dtype:
--   int, float        all of the above; int values are aggregated as float8 (exact to 2^53)
--   timestamp         the same over epoch seconds; mean, min, max and quantiles are given as ISO
--                     timestamps (UTC), std as `std_seconds`, histogram edges in epoch seconds
--   vector(n)         the same over each vector's L2 norm (`measure: l2_norm`), plus `dim`
--   bool, text,       `distinct` values and `frequencies` of the most frequent ones (at most
--   category          top_categories, ties by value in byte order), `other` = the count of the
--                     rest and `other_distinct` = how many values that is; bool also `mean`
--                     (the fraction true) and always both keys true and false

------------------------------------------------------------------------------------------------
-- Histograms: the one binning rule, shared with drift checks
------------------------------------------------------------------------------------------------

-- ml_private.histogram_edges(p_min float8, p_max float8, p_bins int) returns float8[]
-- The p_bins + 1 edges numpy.histogram(x, bins=p_bins) uses for data spanning [p_min, p_max]:
-- numpy.linspace(p_min, p_max, p_bins + 1), or around p_min +- 0.5 when p_min = p_max. Computed
-- as numpy computes them (i * step + start, the last edge exactly the stop), so they are equal
-- bit for bit. NULL when p_min or p_max is NULL.
create or replace function ml_private.histogram_edges(p_min float8, p_max float8, p_bins int) returns float8[]
language sql immutable parallel safe
set search_path = ''
as $$
    select case when p_min is not null and p_max is not null then (
        select array_agg(case when i = p_bins then b.hi else i::float8 * ((b.hi - b.lo) / p_bins) + b.lo end order by i)
        from (select case when p_min = p_max then p_min - 0.5 else p_min end as lo,
                     case when p_min = p_max then p_max + 0.5 else p_max end as hi) b,
             generate_series(0, p_bins) i)
    end
$$;

-- ml_private.histogram_bin(p_edges float8[], p_value float8) returns int
-- The bin of p_value on the ascending edges p_edges (n + 1 edges, n bins), as numpy.histogram
-- bins: 1..n with bin k = [edges[k], edges[k+1]) and the last bin closed; 0 below the first
-- edge, n + 1 above the last (a drift check counts those apart); NULL for NULL. Inlined into
-- the queries that call it; use it in GROUP BY to bin a table on stored edges.
create or replace function ml_private.histogram_bin(p_edges float8[], p_value float8) returns int
language sql immutable parallel safe
as $$
    select case when p_value = p_edges[pg_catalog.cardinality(p_edges)] then pg_catalog.cardinality(p_edges) - 1
                else pg_catalog.width_bucket(p_value, p_edges) end
$$;

-- ml_private.histogram_counts(p_edges float8[], p_values float8[]) returns jsonb
-- Counts p_values on the bins of p_edges: {"counts": [n bins], "below": n, "above": n,
-- "nulls": n}. For arrays; to bin a table, group by ml_private.histogram_bin(edges, column).
-- Raises 22023 when p_edges has fewer than two edges or is not ascending.
create or replace function ml_private.histogram_counts(p_edges float8[], p_values float8[]) returns jsonb
language plpgsql immutable parallel safe
set search_path = ''
as $$
declare
    v_bins int := coalesce(cardinality(p_edges), 0) - 1;
    v_out  jsonb;
begin
    if v_bins < 1 or array_position(p_edges, null) is not null
       or exists (select 1 from unnest(p_edges) with ordinality e (edge, i)
                  where e.i > 1 and e.edge < p_edges[e.i - 1]) then
        raise exception 'edges: must be at least two ascending numbers, got %', coalesce(p_edges::text, 'NULL')
            using errcode = '22023';
    end if;
    with binned as (
        select ml_private.histogram_bin(p_edges, v) as bin, count(*) as n
        from unnest(p_values) v group by 1
    )
    select jsonb_build_object(
        'counts', (select jsonb_agg(coalesce(b.n, 0) order by i)
                   from generate_series(1, v_bins) i left join binned b on b.bin = i),
        'below', coalesce((select b.n from binned b where b.bin = 0), 0),
        'above', coalesce((select b.n from binned b where b.bin = v_bins + 1), 0),
        'nulls', coalesce((select b.n from binned b where b.bin is null), 0))
    into v_out;
    return v_out;
end
$$;

------------------------------------------------------------------------------------------------
-- Statistics
------------------------------------------------------------------------------------------------

-- ml_private.feature_stats_document(p_stats ml.feature_stats, p_group ml.feature_groups) returns jsonb
-- A stored snapshot as the API returns it: {id, group, group_id, version, computed_at, since,
-- until, rows, first_event_time, last_event_time, bins, top_categories, features}.
create or replace function ml_private.feature_stats_document(p_stats ml.feature_stats, p_group ml.feature_groups)
returns jsonb
language sql stable
set search_path = ''
as $$
    select jsonb_build_object(
        'id', p_stats.id, 'group', p_group.name || '@' || p_group.version, 'group_id', p_group.id,
        'version', p_group.version, 'computed_at', p_stats.computed_at,
        'since', p_stats.time_from, 'until', p_stats.time_to, 'rows', p_stats.row_count,
        'first_event_time', p_stats.first_event_time, 'last_event_time', p_stats.last_event_time,
        'bins', p_stats.bins, 'top_categories', p_stats.top_categories, 'features', p_stats.stats)
$$;

-- ml.compute_feature_stats(group text, since timestamptz default null, until timestamptz default null,
--                          bins int default 20, top_categories int default 20) returns jsonb
-- Profiles the group version `group` names ('name' or 'name@version') over its values with
-- event_time in [since, until) (NULL: unbounded), stores the snapshot in ml.feature_stats and
-- returns it (see ml_private.feature_stats_document; per-feature statistics as in the header of
-- this file). `bins`: histogram bins, 1 to 1000; `top_categories`: how many of the most frequent
-- values to keep per bool/text/category feature, 1 to 1000. Publishes 'feature_stats.computed'
-- (topic 'features'). One scan of the version's offline table (docs/features.md): the
-- per-feature cells (a number or a category per row and feature, from the typed columns) are
-- materialized once and read by the tallies, the moments, the histograms and the frequencies.
-- Raises 22023 bins or top_categories out of range, since >= until, a malformed group; P0002
-- unknown group or version; 42501 viewers and non-members (computing writes a snapshot; viewers
-- read snapshots with ml.latest_feature_stats or from ml.feature_stats). Nothing is written on
-- error. Callers: authenticated (owner, admin, ml_engineer), service_role.
create or replace function ml.compute_feature_stats(
    "group" text, since timestamptz default null, until timestamptz default null,
    bins int default 20, top_categories int default 20)
returns jsonb
language plpgsql volatile security definer
set search_path = ''
-- Naive timestamp strings are read as UTC (as ml.ingest reads them) and timestamps come out in
-- UTC; floats go to JSON with their shortest exact form whatever the session asks for.
set timezone = 'UTC'
set extra_float_digits = 1
-- JIT compiling the one big statement costs more than running it.
set jit = off
as $$
declare
    v_bins  int := compute_feature_stats.bins;
    v_top   int := compute_feature_stats.top_categories;
    v_from  timestamptz := compute_feature_stats.since;
    v_to    timestamptz := compute_feature_stats.until;
    v_tenant uuid;
    v_group ml.feature_groups;
    v_stats ml.feature_stats;
begin
    if v_bins is null or v_bins not between 1 and 1000 then
        raise exception 'bins: must be 1 to 1000, got %', coalesce(v_bins::text, 'NULL') using errcode = '22023';
    end if;
    if v_top is null or v_top not between 1 and 1000 then
        raise exception 'top_categories: must be 1 to 1000, got %', coalesce(v_top::text, 'NULL') using errcode = '22023';
    end if;
    if v_from >= v_to then
        raise exception 'since (%) must be before until (%)', v_from, v_to using errcode = '22023';
    end if;
    v_tenant := ml_private.acting_tenant_id(true);
    v_group := ml_private.find_feature_group(v_tenant, compute_feature_stats."group");

    -- One statement, so one snapshot: the row count, the window and every feature's figures
    -- describe the same rows.
    execute format($q$
    with feats as (
        select f.ord::int as ord, f.spec ->> 'name' as name, f.spec ->> 'dtype' as dtype, (f.spec ->> 'dim')::int as dim
        from jsonb_array_elements($3) with ordinality f (spec, ord)
    ),
    -- One cell per row and feature: x for the features summarised by number (int, float,
    -- timestamp as epoch seconds, vector as L2 norm), s for those summarised by frequency; the
    -- first feature's cell also carries the row's event time.
    cells as materialized (
        select c.ord, case when c.ord = 1 then r.event_time end as event_time, c.is_null, c.x, c.s
        -- lateral: the scan drives, each row meets every feature (the table is read once)
        from %1$s r cross join lateral (values %2$s) c (ord, is_null, x, s)
        where r.tenant_id = $1 and ($4::timestamptz is null or r.event_time >= $4) and ($5::timestamptz is null or r.event_time < $5)
    ),
    tallies as (
        select c.ord, count(*) as n, count(*) filter (where c.is_null) as nulls, count(c.x) + count(c.s) as valid,
               min(c.event_time) as first_at, max(c.event_time) as last_at
        from cells c group by c.ord
    ),
    window_rows as (
        select coalesce(sum(t.n) filter (where t.ord = 1), 0)::bigint as n, min(t.first_at) as first_at, max(t.last_at) as last_at
        from tallies t
    ),
    moments as (
        select c.ord, avg(c.x) as mean, stddev_samp(c.x) as std, min(c.x) as lo, max(c.x) as hi,
               percentile_cont(array[0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99]) within group (order by c.x) as q,
               ml_private.histogram_edges(min(c.x), max(c.x), $6) as edges
        from cells c where c.x is not null group by c.ord
    ),
    binned as (
        select c.ord, ml_private.histogram_bin(m.edges, c.x) as bin, count(*) as n
        from cells c join moments m on m.ord = c.ord
        where c.x is not null group by 1, 2
    ),
    histograms as (
        select m.ord, jsonb_build_object(
                   'edges', to_jsonb(m.edges),
                   'counts', (select jsonb_agg(coalesce(b.n, 0) order by i)
                              from generate_series(1, $6) i left join binned b on b.ord = m.ord and b.bin = i)) as histogram
        from moments m
    ),
    frequencies as (
        select r.ord, count(*) as distinct_values,
               coalesce(jsonb_object_agg(r.s, r.n) filter (where r.rank <= $7), '{}') as top,
               coalesce(sum(r.n) filter (where r.rank > $7), 0) as other,
               count(*) filter (where r.rank > $7) as other_distinct
        from (select c.ord, c.s, count(*) as n,
                     row_number() over (partition by c.ord order by count(*) desc, c.s collate "C") as rank
              from cells c where c.s is not null group by c.ord, c.s) r
        group by r.ord
    ),
    per_feature as (
        select f.name, jsonb_build_object(
                   'dtype', f.dtype,
                   'count', coalesce(t.valid, 0),
                   'nulls', coalesce(t.nulls, 0),
                   'invalid', w.n - coalesce(t.valid, 0) - coalesce(t.nulls, 0))
               || case
                  when f.dtype in ('int', 'float', 'vector') then jsonb_build_object(
                      'mean', m.mean, 'std', m.std, 'min', m.lo, 'max', m.hi,
                      'quantiles', case when m.q is not null then jsonb_build_object(
                          'p1', m.q[1], 'p5', m.q[2], 'p25', m.q[3], 'p50', m.q[4], 'p75', m.q[5], 'p95', m.q[6], 'p99', m.q[7]) end,
                      'histogram', h.histogram)
                      || case when f.dtype = 'vector' then jsonb_build_object('measure', 'l2_norm', 'dim', f.dim) else '{}' end
                  when f.dtype = 'timestamp' then jsonb_build_object(
                      'mean', to_timestamp(m.mean), 'std_seconds', m.std, 'min', to_timestamp(m.lo), 'max', to_timestamp(m.hi),
                      'quantiles', case when m.q is not null then jsonb_build_object(
                          'p1', to_timestamp(m.q[1]), 'p5', to_timestamp(m.q[2]), 'p25', to_timestamp(m.q[3]),
                          'p50', to_timestamp(m.q[4]), 'p75', to_timestamp(m.q[5]), 'p95', to_timestamp(m.q[6]),
                          'p99', to_timestamp(m.q[7])) end,
                      'histogram', h.histogram || case when h.histogram is not null then '{"unit": "epoch_seconds"}'::jsonb end)
                  when f.dtype = 'bool' then jsonb_build_object(
                      'distinct', coalesce(q.distinct_values, 0),
                      'frequencies', jsonb_build_object('true', coalesce((q.top ->> 'true')::bigint, 0),
                                                        'false', coalesce((q.top ->> 'false')::bigint, 0)),
                      'other', 0, 'other_distinct', 0,
                      'mean', coalesce((q.top ->> 'true')::float8, 0) / nullif(t.valid, 0))
                  else jsonb_build_object(
                      'distinct', coalesce(q.distinct_values, 0), 'frequencies', coalesce(q.top, '{}'),
                      'other', coalesce(q.other, 0), 'other_distinct', coalesce(q.other_distinct, 0))
                  end as doc
        from feats f
        cross join window_rows w
        left join tallies t on t.ord = f.ord
        left join moments m on m.ord = f.ord
        left join histograms h on h.ord = f.ord
        left join frequencies q on q.ord = f.ord
    )
    insert into ml.feature_stats as s (tenant_id, group_id, computed_by, time_from, time_to, row_count,
                                       first_event_time, last_event_time, bins, top_categories, stats)
    select $1, $2, ml_private.caller_user_id(), $4, $5, w.n, w.first_at, w.last_at, $6, $7,
           (select coalesce(jsonb_object_agg(p.name, p.doc), '{}') from per_feature p)
    from window_rows w
    returning *$q$,
        v_group.offline_table,
        (select string_agg(format('(%s, r.%I is null, %s, %s)', o, f ->> 'name',
                                  case f ->> 'dtype'
                                      when 'int' then format('r.%I::float8', f ->> 'name')
                                      when 'float' then format('r.%I', f ->> 'name')
                                      when 'timestamp' then format('date_part(''epoch'', r.%I)', f ->> 'name')
                                      -- pgvector's norm of the stored (single precision) elements
                                      when 'vector' then case when ml_private.feature_sql_type(f) = 'double precision[]'
                                                              then format('(select sqrt(sum(e.x * e.x)) from unnest(r.%I) e (x))', f ->> 'name')
                                                              else format('%I.vector_norm(r.%I)', (select n.nspname from pg_extension e
                                                                          join pg_namespace n on n.oid = e.extnamespace
                                                                          where e.extname = 'vector'), f ->> 'name') end
                                      else 'null::float8' end,
                                  case f ->> 'dtype'
                                      when 'bool' then format('case r.%I when true then ''true'' when false then ''false'' end', f ->> 'name')
                                      when 'text' then format('r.%I', f ->> 'name')
                                      when 'category' then format('r.%I', f ->> 'name')
                                      else 'null::text' end), ', ' order by o)
         from jsonb_array_elements(v_group.features) with ordinality x (f, o)))
        into v_stats
        using v_tenant, v_group.id, v_group.features, v_from, v_to, v_bins, v_top;

    perform ml_private.publish(v_tenant, 'features', 'feature_stats.computed',
        jsonb_build_object('stats_id', v_stats.id, 'group_id', v_group.id, 'name', v_group.name,
                           'version', v_group.version, 'rows', v_stats.row_count));
    return ml_private.feature_stats_document(v_stats, v_group);
end
$$;

-- ml.latest_feature_stats(group text) returns jsonb
-- The newest snapshot of the group version `group` names ('name' or 'name@version'), as
-- ml.compute_feature_stats returned it; NULL when none was computed yet.
-- Raises 22023 malformed group; P0002 unknown group or version; 42501 non-members.
-- Callers: any member (viewers too), service_role.
create or replace function ml.latest_feature_stats("group" text) returns jsonb
language plpgsql stable security definer
set search_path = ''
set timezone = 'UTC'
as $$
declare
    v_tenant uuid := ml_private.acting_tenant_id(false);
    v_group  ml.feature_groups := ml_private.find_feature_group(v_tenant, latest_feature_stats."group");
    v_stats  ml.feature_stats;
begin
    select * into v_stats from ml.feature_stats s
    where s.tenant_id = v_tenant and s.group_id = v_group.id
    order by s.computed_at desc, s.id limit 1;
    if v_stats.id is null then
        return null;
    end if;
    return ml_private.feature_stats_document(v_stats, v_group);
end
$$;

------------------------------------------------------------------------------------------------
-- Grants
------------------------------------------------------------------------------------------------

grant execute on function
    ml.compute_feature_stats(text, timestamptz, timestamptz, int, int),
    ml.latest_feature_stats(text)
to authenticated, service_role;
grant execute on function
    ml_private.histogram_edges(float8, float8, int),
    ml_private.histogram_bin(float8[], float8),
    ml_private.histogram_counts(float8[], float8[])
to service_role;
