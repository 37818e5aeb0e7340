-- pgmlops: feature store — training sets: point-in-time correct offline datasets
--
-- ml.create_training_set(name, spine, features, label, transformations) joins feature values to
-- a spine of (entity key, event time[, label]) rows the way Feast's get_historical_features
-- does: for each spine row and each feature group, the group's latest row at or before the
-- spine's event time, and no older than the group's TTL, supplies every feature of that group
-- (pandas.merge_asof(direction='backward', by=key, tolerance=ttl, allow_exact_matches=True)).
-- A value from after the spine time is never used. Each group is joined by one of two plans
-- chosen by the spine's size next to the group's (one probe per spine row, or one pass over the
-- group's rows: see "The point-in-time join" below). The result is materialized as a table in
-- schema ml_datasets and registered in ml.datasets with its row count, content hash, columns,
-- time range, source groups, and the transformations (sql/features/transformations.sql) with the
-- statistics frozen at build time.
--
-- Rights. The spine (and the events table of a windowed aggregate) are read with the caller's
-- own rights: ml.create_training_set is SECURITY INVOKER and copies them into temporary tables
-- of the caller's session; only then does a security-definer function, which accepts nothing
-- but temporary tables of the calling session, join them to the groups' offline tables
-- (ml_features, docs/features.md) for the acting tenant. So a spine can never read what its
-- caller could not.
--
-- Storage:
--   ml.datasets         one row per training set version (metadata, frozen statistics)
--   ml_datasets.<name>_<8 hex of id>   the rows: row_id, tenant_id, spine keys, event_time,
--                       label, features, windowed aggregates, transformed columns

------------------------------------------------------------------------------------------------
-- Rights on schema ml_datasets; dropping a dataset
------------------------------------------------------------------------------------------------

revoke all on schema ml_datasets from public;
grant usage on schema ml_datasets to authenticated, service_role;

-- ml_private.datasets_drop_tables(): deleting a dataset row (or its tenant) drops its table.
create or replace function ml_private.datasets_drop_tables() returns trigger
language plpgsql security definer
set search_path = ''
as $$
declare
    v_table text;
begin
    for v_table in select o.table_name from old_rows o loop
        -- table_name was written by ml_private.materialize_training_set as format('ml_datasets.%I').
        if v_table like 'ml_datasets.%' and to_regclass(v_table) is not null then
            execute 'drop table ' || v_table;
        end if;
    end loop;
    return null;
end
$$;

create or replace trigger datasets_drop_tables after delete on ml.datasets
    referencing old table as old_rows
    for each statement execute function ml_private.datasets_drop_tables();

------------------------------------------------------------------------------------------------
-- Helpers: types, table protection, hashing
------------------------------------------------------------------------------------------------

-- ml_private.feature_sql_type(p_dtype text) returns text
-- The column type of a feature dtype in a dataset: int bigint, float double precision, bool
-- boolean, text and category text, timestamp timestamptz, vector double precision[] (the same
-- on servers with and without pgvector, and a plain list in Python).
create or replace function ml_private.feature_sql_type(p_dtype text) returns text
language sql immutable
set search_path = ''
as $$
    select case p_dtype
        when 'int' then 'bigint'
        when 'float' then 'double precision'
        when 'bool' then 'boolean'
        when 'timestamp' then 'timestamptz'
        when 'vector' then 'double precision[]'
        else 'text'
    end
$$;

-- ml_private.feature_value_sql(p_dtype text, p_values text, p_key text, p_stored boolean default false)
-- returns text
-- A SQL expression reading key p_key of the jsonb expression p_values as the dtype's column
-- type. A missing key or JSON null gives NULL. Used for stored feature values (p_stored: ints
-- are stored as integers, so they take the direct cast, a third faster) and for scoring input
-- (where 3.0 is accepted as an int).
create or replace function ml_private.feature_value_sql(p_dtype text, p_values text, p_key text, p_stored boolean default false)
returns text
language sql immutable
set search_path = ''
as $$
    select case p_dtype
        when 'int' then format(case when p_stored then '(%s ->> %L)::bigint' else '((%s ->> %L)::numeric)::bigint' end, p_values, p_key)
        when 'float' then format('(%s ->> %L)::double precision', p_values, p_key)
        when 'bool' then format('(%s ->> %L)::boolean', p_values, p_key)
        when 'timestamp' then format('(%s ->> %L)::timestamptz', p_values, p_key)
        when 'vector' then format('translate(%s ->> %L, ''[]'', ''{}'')::double precision[]', p_values, p_key)
        else format('(%s ->> %L)', p_values, p_key)
    end
$$;

-- ml_private.protect_dataset_table(p_table regclass) returns void
-- The policies and grants of ml_private.enable_tenant_rls for a dataset table (RLS enabled and
-- forced, members of the row's tenant read, nothing for anon, all for service_role), without
-- registering it in ml_private.tenant_tables: that registry lists the fixed tenant tables the
-- RLS test suites seed for two tenants, and dataset tables come and go with their datasets.
-- No tenant_id index either: every row of a dataset table belongs to one tenant.
create or replace function ml_private.protect_dataset_table(p_table regclass) returns void
language plpgsql
set search_path = ''
as $$
begin
    execute format('alter table %s enable row level security', p_table);
    execute format('alter table %s force row level security', p_table);
    execute format('create policy tenant_read on %s for select to authenticated
                      using (tenant_id = any ((select ml_private.current_tenant_ids())::uuid[]))', p_table);
    execute format('revoke all on %s from public, anon, authenticated', p_table);
    execute format('grant select on %s to authenticated', p_table);
    execute format('grant all on %s to service_role', p_table);
end
$$;

-- ml_private.dataset_content_hash(p_table regclass, p_columns text[], p_text_columns text[] default '{}')
-- returns text
-- 'sha256:<hex>' of the row count and the exact sum of the 64-bit hash_record_extended of every
-- (row_id, p_columns...) row: the row_id in each row makes it depend on the order, and a sum
-- needs neither a sort nor memory (hashing values, not their text forms, is three times
-- faster; summing instead of chaining halves it again). p_text_columns are hashed as text
-- (labels of types without a hash function); settings that change text forms are pinned.
create or replace function ml_private.dataset_content_hash(p_table regclass, p_columns text[], p_text_columns text[] default '{}')
returns text
language plpgsql stable
set search_path = ''
set timezone = 'UTC'
set datestyle = 'ISO, YMD'
set intervalstyle = 'postgres'
set extra_float_digits = 1
as $$
declare
    v_hash text;
begin
    execute format(
        'select ''sha256:'' || encode(sha256(convert_to(count(*) || '':'' || coalesce(sum(hash_record_extended(row(d.row_id, %s), 0)::numeric), 0), ''UTF8'')), ''hex'')
         from %s d',
        (select string_agg(format(case when c = any (p_text_columns) then 'd.%I::text' else 'd.%I' end, c), ', ' order by n)
         from unnest(p_columns) with ordinality x (c, n)), p_table)
    into v_hash;
    return v_hash;
end
$$;

------------------------------------------------------------------------------------------------
-- The point-in-time join
------------------------------------------------------------------------------------------------
--
-- Each group's values are read from its offline table (ml.feature_groups.offline_table, see
-- docs/features.md): tenant_id, entity_key, event_time and one typed column per feature. For each
-- group one of two plans is chosen (ml_private.as_of_plan):
--
--   probe   one backward index probe per spine row (ml_private.as_of_probe_sql): a few µs a row,
--           whatever the size of the group. Best for spines that are small next to the group.
--   merge   one pass over the group's rows in the window the spine needs
--           (ml_private.as_of_timeline_sql): its rows, in primary-key order (entity, then time),
--           become one timeline per entity, its times and each feature's values as arrays in time
--           order; every spine row then finds its place on its entity's timeline by binary search
--           (width_bucket over the times: the number of rows at or before the spine time, which is
--           the running count of rows Feast's SQL computes with a window function) and takes that
--           row's values by subscript. Costs a fraction of a µs per row of the group, plus less per
--           spine row than a probe: best for large spines. An entity with more than 1000 rows in
--           the window is probed instead: subscripting the n-th element of an array with NULLs or
--           of variable-width values walks n elements (about 2 ns each), so past a thousand a
--           probe is cheaper.
--
-- Why not the literal timeline (spine rows and feature rows in one sorted relation, a running
-- count as a group id, a second window to spread the row's values): PostgreSQL sorts the union
-- (spine plus every group row, so 6M rows for the benchmark's 1M-row spine) and runs two or three
-- WindowAgg nodes over it; measured at three to four times the time of the arrays above (1M
-- spine rows, two groups of 2.5M rows), which sort nothing (the primary key's order is read)
-- and touch each spine row once.

-- Old signatures (the jsonb value table ml.feature_values).
drop function if exists ml_private.feature_value_partitions(uuid, uuid, timestamptz, timestamptz);
drop function if exists ml_private.as_of_probe_sql(uuid, uuid, interval, text, text, timestamptz, timestamptz);

-- ml_private.feature_partitions(p_table regclass, p_tenant uuid, p_from timestamptz, p_to timestamptz)
-- returns table (relation text, range_start timestamptz, range_end timestamptz)
-- The relations holding rows of the time-partitioned table p_table (a group's offline table)
-- with event times in [p_from, p_to]: the hypertable's chunks or the native partitions, each
-- with its time range, plus (range NULL) a native DEFAULT partition holding rows of p_tenant up
-- to p_to. When a chunk in range is compressed, or two chunks share a time range (space
-- partitioning), p_table itself, range NULL (ordered probing needs chunks that do not overlap in
-- time). A table that is not time-partitioned is returned as it is, range NULL.
create or replace function ml_private.feature_partitions(p_table regclass, p_tenant uuid, p_from timestamptz, p_to timestamptz)
returns table (relation text, range_start timestamptz, range_end timestamptz)
language plpgsql stable
set search_path = ''
as $$
declare
    v_mode   text;
    v_schema name;
    v_name   name;
    v_part   record;
    v_bound  text[];
    v_has    boolean;
begin
    select t.mode into v_mode from ml_private.time_partitioned_tables t where t.table_name = p_table::text;
    select n.nspname, c.relname into v_schema, v_name
    from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = p_table;
    if v_mode = 'hypertable' then
        execute 'with c as (select c.range_start, c.range_end, c.is_compressed from timescaledb_information.chunks c
                            where c.hypertable_schema = $3 and c.hypertable_name = $4
                              and c.range_end > $1 and c.range_start <= $2)
                 select exists (select 1 from c where c.is_compressed)
                     or exists (select 1 from c a join c b on a.range_start < b.range_end and b.range_start < a.range_end
                                where (a.range_start, a.range_end) <> (b.range_start, b.range_end))
                     or (select count(*) <> count(distinct c.range_start) from c)'
            into v_has using p_from, p_to, v_schema, v_name;
        if v_has then
            return query select p_table::text, null::timestamptz, null::timestamptz;
            return;
        end if;
        return query execute
            'select format(''%I.%I'', c.chunk_schema, c.chunk_name), c.range_start, c.range_end
             from timescaledb_information.chunks c
             where c.hypertable_schema = $3 and c.hypertable_name = $4 and c.range_end > $1 and c.range_start <= $2'
            using p_from, p_to, v_schema, v_name;
        return;
    end if;
    if v_mode is null or not exists (select 1 from pg_inherits i where i.inhparent = p_table) then
        return query select p_table::text, null::timestamptz, null::timestamptz;
        return;
    end if;
    for v_part in
        select c.oid::regclass::text as rel, pg_get_expr(c.relpartbound, c.oid) as bound
        from pg_inherits i join pg_class c on c.oid = i.inhrelid
        where i.inhparent = p_table
    loop
        v_bound := regexp_match(v_part.bound, 'FROM \(''([^'']+)''\) TO \(''([^'']+)''\)');
        if v_bound is null then
            -- The DEFAULT partition (or a bound this code does not read): probed when it holds the tenant's rows.
            execute format('select exists (select 1 from %s v where v.tenant_id = $1 and v.event_time <= $2)', v_part.rel)
                into v_has using p_tenant, p_to;
            if v_has then
                relation := v_part.rel; range_start := null; range_end := null;
                return next;
            end if;
        elsif v_bound[2]::timestamptz > p_from and v_bound[1]::timestamptz <= p_to then
            relation := v_part.rel; range_start := v_bound[1]::timestamptz; range_end := v_bound[2]::timestamptz;
            return next;
        end if;
    end loop;
end
$$;

-- ml_private.as_of_probe_sql(p_table regclass, p_tenant uuid, p_ttl interval, p_key text, p_time text,
--                            p_from timestamptz, p_to timestamptz) returns text
-- An expression (text) giving, as a value of p_table's row type, p_table's latest row of p_tenant
-- with entity_key = p_key and p_time - p_ttl <= event_time <= p_time (p_key, p_time: SQL
-- expressions of the outer row; NULL when there is none), for outer times in [p_from, p_to], by
-- backward probes of the primary key (tenant_id, entity_key, event_time).
-- Why not simply `(select ... from <offline table> ... order by event_time desc limit 1)`: that
-- works, but TimescaleDB's runtime chunk exclusion (and native partition pruning) runs again for
-- every outer row and costs five times the probe itself. Chunks (or partitions) are probed
-- directly instead: first the one the outer time falls in (a CASE on the time picks it, so one
-- probe runs), and only when it has no row, the older ones newest first (a UNION ALL under LIMIT 1,
-- each behind a one-time filter on its range; chunks do not overlap, so the first row found is
-- the latest). Unbounded relations (a DEFAULT partition, or the hypertable when chunks are
-- compressed) are probed as well, and the latest row wins. Use it where it is evaluated once per
-- outer row (a column of a subquery under OFFSET 0), then take fields with (expr).feature.
create or replace function ml_private.as_of_probe_sql(p_table regclass, p_tenant uuid, p_ttl interval, p_key text, p_time text,
                                           p_from timestamptz, p_to timestamptz)
returns text
language plpgsql stable
set search_path = ''
as $$
declare
    v_cond    text := format('v.tenant_id = %L and v.entity_key = %s and v.event_time <= %s%s',
                             p_tenant, p_key, p_time,
                             case when p_ttl is null then '' else format(' and v.event_time >= %s - %L::interval', p_time, p_ttl) end);
    -- A chunk's or partition's row as the table's row type (they have the same columns).
    v_row     text := format('row(v.*)::%s', p_table);
    v_own     text;
    v_older   text;
    v_ordered text;
    v_others  text;
begin
    select 'case ' || string_agg(format('when %s >= %L::timestamptz then (select %s from %s v where %s order by v.event_time desc limit 1)',
                                        p_time, p.range_start, v_row, p.relation, v_cond), ' ' order by p.range_start desc) || ' end',
           -- No LIMIT per chunk: the outer one stops the Append at the first row.
           string_agg(format('(select %s as r from %s v where %s >= %L::timestamptz%s and %s order by v.event_time desc)',
                             v_row, p.relation, p_time, p.range_end,
                             case when p_ttl is null then '' else format(' and %s - %L::interval < %L::timestamptz', p_time, p_ttl, p.range_end) end,
                             v_cond), ' union all ' order by p.range_start desc),
           string_agg(format('(select v.event_time, %s as r from %s v where %s >= %L::timestamptz and %s order by v.event_time desc)',
                             v_row, p.relation, p_time, p.range_start, v_cond), ' union all ' order by p.range_start desc)
    into v_own, v_older, v_ordered
    from ml_private.feature_partitions(p_table, p_tenant, coalesce(p_from - p_ttl, '-infinity'), p_to) p
    where p.range_start is not null;
    select string_agg(format('(select v.event_time, %s as r from %s v where %s order by v.event_time desc limit 1)', v_row, p.relation, v_cond),
                      ' union all ')
    into v_others
    from ml_private.feature_partitions(p_table, p_tenant, coalesce(p_from - p_ttl, '-infinity'), p_to) p
    where p.range_start is null;

    if v_others is null then
        if v_own is null then
            return format('null::%s', p_table);
        end if;
        return format('coalesce(%s, (select x.r from (%s) x limit 1))', v_own, v_older);
    end if;
    -- With unbounded relations: the latest of what the ranged chunks (newest first) and they hold.
    return format('(select y.r from (%s%s) y order by y.event_time desc limit 1)',
                  case when v_ordered is null then ''
                       else format('(select x.event_time, x.r from (%s) x limit 1) union all ', v_ordered) end, v_others);
end
$$;

-- ml_private.as_of_timeline_sql(p_table regclass, p_tenant uuid, p_columns text[], p_from timestamptz,
--                               p_to timestamptz) returns text
-- A subquery (text) with one row per entity of p_tenant's rows of p_table with p_from <=
-- event_time <= p_to (p_from NULL: no lower bound): k (entity_key), h (true when it has more
-- than 1000 rows), t (event_time[]) and v1..vN (one array per column of p_columns), all in
-- event_time order, so that width_bucket(time, t) is the number of the entity's rows at or
-- before `time` and vi[that] their latest row's value. Entities with more than 1000 rows get
-- NULL arrays: the caller probes them (see the section's header). The rows are read in
-- primary-key order (tenant_id, entity_key, event_time), so nothing is sorted.
-- Order of the arrays: from PostgreSQL 16 on, array_agg(... order by event_time) over input
-- already in that order costs nothing more (the planner sees it is presorted). Before 16 an
-- ordered aggregate sorts every entity's rows again, once per array; there, array_agg takes the
-- rows of the sorted subquery in its order (PostgreSQL's documented way, safe when nothing but
-- the grouping sits between the subquery and the aggregate, as here; array_agg cannot run as
-- partial aggregates before 16, so no parallel plan splits an entity's rows).
create or replace function ml_private.as_of_timeline_sql(p_table regclass, p_tenant uuid, p_columns text[], p_from timestamptz,
                                              p_to timestamptz)
returns text
language sql stable
set search_path = ''
as $$
    select format(
        'select v.entity_key as k, count(*) > 1000 as h, case when count(*) <= 1000 then array_agg(v.event_time%1$s) end as t%2$s
         from (select v.entity_key, v.event_time%3$s from %4$s v where v.tenant_id = %5$L and v.event_time <= %6$L%7$s
               order by v.entity_key, v.event_time) v
         group by v.entity_key',
        case when current_setting('server_version_num')::int >= 160000 then ' order by v.event_time' else '' end,
        (select string_agg(format(', case when count(*) <= 1000 then array_agg(v.%I%s) end as v%s', c,
                                  case when current_setting('server_version_num')::int >= 160000 then ' order by v.event_time' else '' end, n),
                           '' order by n)
         from unnest(p_columns) with ordinality x (c, n)),
        (select string_agg(format(', v.%I', c), '' order by n) from unnest(p_columns) with ordinality x (c, n)),
        p_table, p_tenant, p_to,
        case when p_from is null then '' else format(' and v.event_time >= %L', p_from) end)
$$;

-- ml_private.as_of_plan(p_table regclass, p_tenant uuid, p_spine_rows bigint, p_from timestamptz,
--                       p_to timestamptz) returns text
-- 'probe' or 'merge' (see the section's header) for joining p_spine_rows spine rows to p_tenant's
-- rows of p_table with event times in [p_from, p_to] (p_from NULL: unbounded). The setting
-- pgmlops.training_set_plan ('probe', 'merge', or 'auto', the default) forces a plan; 'auto'
-- merges when the spine has at least an eighth as many rows as the planner estimates the window
-- holds: `python -m bench.features --plan-sweep` (bench/README.md) times both plans on one data
-- set, and they cost the same near one spine row per eight group rows (2.5M rows a group, 2
-- groups, spines of 50k to 500k rows). Raises 22023 for another value of the setting.
-- Volatile: it runs EXPLAIN, which a stable function may not.
create or replace function ml_private.as_of_plan(p_table regclass, p_tenant uuid, p_spine_rows bigint, p_from timestamptz,
                                      p_to timestamptz)
returns text
language plpgsql volatile
set search_path = ''
as $$
declare
    v_setting text := lower(coalesce(nullif(btrim(current_setting('pgmlops.training_set_plan', true)), ''), 'auto'));
    v_plan    jsonb;
begin
    if v_setting in ('probe', 'merge') then
        return v_setting;
    elsif v_setting <> 'auto' then
        raise exception 'pgmlops.training_set_plan: % must be auto, probe or merge', quote_literal(v_setting) using errcode = '22023';
    end if;
    execute format('explain (format json) select from %s v where v.tenant_id = %L and v.event_time <= %L%s', p_table, p_tenant, p_to,
                   case when p_from is null then '' else format(' and v.event_time >= %L', p_from) end)
    into v_plan;
    return case when p_spine_rows * 8 >= (v_plan #>> '{0,Plan,Plan Rows}')::numeric then 'merge' else 'probe' end;
end
$$;

------------------------------------------------------------------------------------------------
-- Building a training set (private)
------------------------------------------------------------------------------------------------

-- ml_private.training_set_plan(p_name text, p_features text[], p_label text, p_transformations jsonb)
-- returns jsonb
-- Everything about a training set that needs the owner's rights, checked: the acting tenant
-- (a writing role), the name, the features (resolved and given output column names) and the
-- transformation specs (normalized). Returns {tenant_id, features: [{ref, group_id,
-- group_name, version, feature, dtype, column, sql_type}], groups: [{group_id, name, version,
-- join_key, ttl, features}], transformations}. A feature is named by itself, or
-- <group>__<feature> (<group>_v<version>__<feature> between versions of one group) when its
-- name would collide with another requested feature, a join key, entity_key, event_time, the
-- label or row_id / tenant_id / spine_row.
-- Raises 22023 bad name or spec, 42501 viewers and non-members, and what
-- ml_private.resolve_features raises. Called by ml.create_training_set (as the caller) and by
-- ml_private.materialize_training_set.
create or replace function ml_private.training_set_plan(p_name text, p_features text[], p_label text, p_transformations jsonb)
returns jsonb
language plpgsql stable security definer
set search_path = ''
set intervalstyle = 'postgres'
as $$
declare
    v_tenant   uuid;
    v_refs     jsonb;
    v_groups   jsonb;
    v_reserved text[];
    v_columns  jsonb;
begin
    if p_name is null or p_name !~ '^[a-z][a-z0-9_]{0,47}$' then
        raise exception 'name: % must be lowercase letters, digits and _ (1 to 48, starting with a letter)',
            coalesce(quote_literal(p_name), 'NULL') using errcode = '22023';
    end if;
    if p_label is not null and (btrim(p_label) = '' or p_label in ('row_id', 'tenant_id', 'spine_row', 'event_time')) then
        raise exception 'label: % cannot be the label column', quote_literal(p_label) using errcode = '22023';
    end if;
    v_tenant := ml_private.acting_tenant_id(true);

    select jsonb_agg(to_jsonb(r) order by r.ord) into v_refs from ml_private.resolve_features(v_tenant, p_features) r;
    select jsonb_agg(g order by g ->> 'name', (g ->> 'version')::int) into v_groups from (
        select jsonb_build_object('group_id', g.id, 'name', g.name, 'version', g.version, 'join_key', g.join_key,
                                  'ttl', g.ttl, 'features', (select jsonb_agg(r ->> 'feature' order by (r ->> 'ord')::int)
                                                            from jsonb_array_elements(v_refs) r where (r ->> 'group_id')::uuid = g.id)) g
        from ml.feature_groups g
        where g.id in (select (r ->> 'group_id')::uuid from jsonb_array_elements(v_refs) r)
    ) x (g);

    v_reserved := array['row_id', 'tenant_id', 'spine_row', 'event_time', 'entity_key']
               || array(select g ->> 'join_key' from jsonb_array_elements(v_groups) g)
               || case when p_label is null then '{}'::text[] else array[p_label] end;

    select jsonb_agg(r || jsonb_build_object(
               'column', case
                   when octet_length(c.name) <= 63 then c.name
                   else left(c.name, 54) || '_' || left(md5(c.name), 8) end,
               'sql_type', ml_private.feature_sql_type(r ->> 'dtype')) order by (r ->> 'ord')::int)
    into v_refs
    from jsonb_array_elements(v_refs) r
    cross join lateral (select case
        when (select count(*) from jsonb_array_elements(v_refs) o where o ->> 'feature' = r ->> 'feature') = 1
             and not (r ->> 'feature') = any (v_reserved) then r ->> 'feature'
        when (select count(*) from jsonb_array_elements(v_refs) o
              where o ->> 'feature' = r ->> 'feature' and o ->> 'group_name' = r ->> 'group_name') = 1
             then (r ->> 'group_name') || '__' || (r ->> 'feature')
        else format('%s_v%s__%s', r ->> 'group_name', r ->> 'version', r ->> 'feature') end as name) c;

    select jsonb_object_agg(r ->> 'column', case r ->> 'dtype' when 'category' then 'text' else r ->> 'dtype' end)
           || jsonb_build_object('event_time', 'timestamp')
           || coalesce((select jsonb_object_agg(k, 'key') from unnest(array['entity_key']
                        || array(select g ->> 'join_key' from jsonb_array_elements(v_groups) g)) k), '{}')
           || case when p_label is null then '{}'::jsonb else jsonb_build_object(p_label, 'label') end
    into v_columns
    from jsonb_array_elements(v_refs) r;

    return jsonb_build_object(
        'tenant_id', v_tenant,
        'features', v_refs,
        'groups', v_groups,
        'transformations', ml_private.normalize_transformations(p_transformations, v_columns));
end
$$;

-- ml_private.materialize_training_set(p_name text, p_spine_text text, p_features text[], p_label text,
--                                     p_transformations jsonb, p_spine regclass) returns uuid
-- Builds and registers a training set from p_spine, which must be a temporary table of the
-- calling session (ml.create_training_set fills it as the caller), with one text column per key
-- (each group's join key, or entity_key), event_time timestamptz, the label (a boolean, number,
-- string or date/time type) and the window_aggregate outputs. It numbers the spine rows in
-- (keys, event_time, label) order (row_id: equal content gives equal datasets, and probing in
-- key order is twice as fast as in any order), takes for each row and group the latest row of
-- the group's offline table for the acting tenant with spine time - ttl <= event_time <= spine
-- time, by the plan ml_private.as_of_plan chooses for the group (see "The point-in-time join";
-- recorded as "plan" in each entry of ml.datasets.source_groups), freezes the transformation
-- statistics, writes ml_datasets."<name>_<8 hex>" (primary key row_id), protects it, records
-- lineage and publishes 'dataset.created'. Returns the dataset id.
-- Raises 22023 a spine that is not the caller's temp table or has no rows, or a bad
-- pgmlops.training_set_plan; 22004 a NULL event_time, 42703 a missing spine column, 42804 a
-- column of the wrong type, and what ml_private.training_set_plan raises.
create or replace function ml_private.materialize_training_set(p_name text, p_spine_text text, p_features text[], p_label text,
                                                    p_transformations jsonb, p_spine regclass)
returns uuid
language plpgsql volatile security definer
set search_path = ''
set timezone = 'UTC'
set extra_float_digits = 1
set work_mem = '256MB'
set jit = off
as $$
declare
    v_plan       jsonb := ml_private.training_set_plan(p_name, p_features, p_label, p_transformations);
    v_tenant     uuid := (v_plan ->> 'tenant_id')::uuid;
    v_id         uuid := gen_random_uuid();
    v_table      text := format('%I.%I', 'ml_datasets', p_name || '_' || left(replace(v_id::text, '-', ''), 8));
    v_version    int;
    v_types      jsonb;
    v_group      jsonb;
    v_groups     jsonb := '[]';
    v_key_cols   text[] := '{}';
    v_key        text;
    v_f          jsonb;
    v_spec       jsonb;
    v_specs      jsonb := '[]';
    v_exprs      jsonb := '{}';
    v_columns    jsonb := '[]';
    v_select     text[] := '{}';
    v_joins      text := '';
    v_n          int := 0;
    v_raw        text;
    v_stats      record;
    v_cats       text[];
    v_outputs    jsonb;
    v_o          jsonb;
    v_consumed   text[];
    v_inputs     text[];
    v_rows       bigint;
    v_nulls      bigint;
    v_range      tstzrange;
    v_hash       text;
    v_needs_raw  boolean;
    v_planned    jsonb;
    v_ttl        interval;
    v_offline    regclass;
    v_features   text[];
    v_probe      text;
    v_group_plan text;
    v_value      text;
    v_x0         text[] := '{}';
    v_x1         text[] := '{}';
begin
    -- Only the caller's own temp table: this function runs with the owner's rights and must not
    -- read a table the caller could not.
    if p_spine is null or not exists (select 1 from pg_class c where c.oid = p_spine and c.relkind = 'r'
                                      and c.relpersistence = 't' and c.relnamespace = pg_my_temp_schema()) then
        raise exception 'spine: % is not a temporary table of this session', coalesce(p_spine::text, 'NULL')
            using errcode = '22023', hint = 'Call ml.create_training_set, which makes it.';
    end if;
    -- Only built-in column types: no function of the caller's runs with the owner's rights.
    select jsonb_object_agg(a.attname, format_type(a.atttypid, a.atttypmod))
    into v_types
    from pg_attribute a where a.attrelid = p_spine and a.attnum > 0 and not a.attisdropped;
    if exists (select 1 from pg_attribute a where a.attrelid = p_spine and a.attnum > 0 and not a.attisdropped
               and a.atttypid >= 16384) then
        raise exception 'spine: only built-in column types are accepted' using errcode = '42804';
    end if;
    if (v_types ->> 'event_time') is distinct from 'timestamp with time zone' then
        raise exception 'spine: column event_time timestamptz is missing' using errcode = '42703';
    end if;
    if p_label is not null and not v_types ? p_label then
        raise exception 'label: spine has no column %', quote_literal(p_label) using errcode = '42703';
    end if;

    -- Keys: each group's join key column, or entity_key.
    for v_group in select value from jsonb_array_elements(v_plan -> 'groups') loop
        v_key := case when v_types ? (v_group ->> 'join_key') then v_group ->> 'join_key'
                      when v_types ? 'entity_key' then 'entity_key' end;
        if v_key is null then
            raise exception 'spine: missing column % (the join key of feature group %), or entity_key', v_group ->> 'join_key', v_group ->> 'name'
                using errcode = '42703';
        end if;
        if (v_types ->> v_key) <> 'text' then
            raise exception 'spine: key column % must be text here, is %', v_key, v_types ->> v_key using errcode = '42804';
        end if;
        if not v_key = any (v_key_cols) then
            v_key_cols := v_key_cols || v_key;
        end if;
        v_groups := v_groups || jsonb_build_array(v_group || jsonb_build_object('key_column', v_key));
    end loop;

    execute format('select count(*), count(*) filter (where event_time is null), tstzrange(min(event_time), max(event_time), ''[]'') from %s',
                   p_spine) into v_rows, v_nulls, v_range;
    if v_rows = 0 then
        raise exception 'spine: returned no rows' using errcode = '22023';
    end if;
    if v_nulls > 0 then
        raise exception 'spine: event_time is NULL in % of % rows', v_nulls, v_rows using errcode = '22004';
    end if;

    -- The raw columns: keys, event_time, label, features (each group by its plan: see "The
    -- point-in-time join"), aggregates. Three levels, each under OFFSET 0 so that what it computes
    -- is computed once per spine row: x numbers the spine and joins the merged groups' timelines,
    -- x0 finds each row's place on them, x1 applies the TTL and probes (probe plan, or an entity
    -- too large for a timeline).
    foreach v_key in array v_key_cols loop
        v_select := v_select || format('x1.%I', v_key);
        v_exprs := v_exprs || jsonb_build_object(v_key, format('r.%I', v_key));
        v_columns := v_columns || jsonb_build_array(jsonb_build_object('name', v_key, 'type', 'text', 'role', 'key'));
    end loop;
    v_select := v_select || 'x1.event_time'::text;
    v_exprs := v_exprs || jsonb_build_object('event_time', 'r.event_time');
    v_columns := v_columns || jsonb_build_array(jsonb_build_object('name', 'event_time', 'type', 'timestamptz', 'role', 'event_time'));
    if p_label is not null then
        v_select := v_select || format('x1.%I', p_label);
        v_columns := v_columns || jsonb_build_array(jsonb_build_object('name', p_label, 'type', v_types ->> p_label, 'role', 'label'));
    end if;
    v_planned := '[]';
    for v_group in select value from jsonb_array_elements(v_groups) loop
        v_n := v_n + 1;
        v_ttl := (v_group ->> 'ttl')::interval;
        select g.offline_table into v_offline from ml.feature_groups g where g.id = (v_group ->> 'group_id')::uuid;
        v_features := array(select f ->> 'feature' from jsonb_array_elements(v_plan -> 'features') f
                            where f ->> 'group_id' = v_group ->> 'group_id' order by (f ->> 'ord')::int);
        v_probe := ml_private.as_of_probe_sql(v_offline, v_tenant, v_ttl, format('x0.%I', v_group ->> 'key_column'), 'x0.event_time',
                                              lower(v_range), upper(v_range));
        v_group_plan := ml_private.as_of_plan(v_offline, v_tenant, v_rows, lower(v_range) - v_ttl, upper(v_range));
        if v_group_plan = 'merge' then
            v_joins := v_joins || format(' left join (%s) m%s on m%s.k = x.%I',
                ml_private.as_of_timeline_sql(v_offline, v_tenant, v_features, lower(v_range) - v_ttl, upper(v_range)),
                v_n, v_n, v_group ->> 'key_column');
            v_x0 := v_x0 || format('m%1$s.h as g%1$s_h, m%1$s.t as g%1$s_t, width_bucket(x.event_time, m%1$s.t) as g%1$s_i', v_n)
                         || array(select format('m%1$s.v%2$s as g%1$s_v%2$s', v_n, i) from generate_series(1, cardinality(v_features)) i);
            v_x1 := v_x1 || format('case when x0.g%1$s_h then %2$s end as g%1$s_p', v_n, v_probe)
                         || case when v_ttl is null then format('x0.g%1$s_i as g%1$s_j', v_n)
                                 else format('case when x0.g%1$s_t[x0.g%1$s_i] >= x0.event_time - %2$L::interval then x0.g%1$s_i end as g%1$s_j',
                                             v_n, v_ttl) end;
        else
            v_x1 := v_x1 || format('%2$s as g%1$s_p', v_n, v_probe);
        end if;
        for v_f in select value from jsonb_array_elements(v_plan -> 'features')
                   where (value ->> 'group_id') = (v_group ->> 'group_id') order by (value ->> 'ord')::int loop
            v_value := case when v_group_plan = 'merge'
                            then format('case when x1.g%1$s_h then (x1.g%1$s_p).%2$I else x1.g%1$s_v%3$s[x1.g%1$s_j] end',
                                        v_n, v_f ->> 'feature', array_position(v_features, v_f ->> 'feature'))
                            else format('(x1.g%s_p).%I', v_n, v_f ->> 'feature') end;
            -- pgvector's vector (single precision) becomes double precision[] through its text,
            -- the shortest decimal form of each element: 0.1 stays 0.1.
            if (select t.typname from pg_attribute a join pg_type t on t.oid = a.atttypid
                where a.attrelid = v_offline and a.attname = v_f ->> 'feature') = 'vector' then
                v_value := format('translate((%s)::text, ''[]'', ''{}'')::double precision[]', v_value);
            end if;
            v_select := v_select || format('%s as %I', v_value, v_f ->> 'column');
        end loop;
        v_planned := v_planned || jsonb_build_array(v_group || jsonb_build_object('plan', v_group_plan));
    end loop;
    v_groups := v_planned;
    for v_f in select value from jsonb_array_elements(v_plan -> 'features') order by (value ->> 'ord')::int loop
        v_exprs := v_exprs || jsonb_build_object(v_f ->> 'column', format('r.%I', v_f ->> 'column'));
        v_columns := v_columns || jsonb_build_array(jsonb_build_object(
            'name', v_f ->> 'column', 'type', v_f ->> 'sql_type', 'role', 'feature', 'dtype', v_f ->> 'dtype', 'ref', v_f ->> 'ref',
            'group', v_f ->> 'group_name', 'version', (v_f ->> 'version')::int, 'feature', v_f ->> 'feature'));
    end loop;
    for v_spec in select value from jsonb_array_elements(v_plan -> 'transformations') where value ->> 'type' = 'window_aggregate' loop
        for v_o in select value from jsonb_array_elements(v_spec -> 'outputs') loop
            if (v_types ->> (v_o ->> 'name')) is distinct from ml_private.feature_sql_type(v_o ->> 'kind') then
                raise exception 'spine: aggregate column % (%) is missing', v_o ->> 'name', ml_private.feature_sql_type(v_o ->> 'kind')
                    using errcode = '42703';
            end if;
            v_select := v_select || format('x1.%I', v_o ->> 'name');
            v_exprs := v_exprs || jsonb_build_object(v_o ->> 'name', format('r.%I', v_o ->> 'name'));
            v_columns := v_columns || jsonb_build_array(jsonb_build_object(
                'name', v_o ->> 'name', 'type', ml_private.feature_sql_type(v_o ->> 'kind'), 'role', 'aggregate'));
        end loop;
    end loop;
    -- Keys in C collation: sorting a million keys in a libc locale costs three times as much.
    v_raw := format('select x1.spine_row, %s from (select x0.*%s from (select x.*%s from (select row_number() over (order by %s) as spine_row, %s from %s s0) x%s offset 0) x0 offset 0) x1',
                    array_to_string(v_select, ', '),
                    (select string_agg(', ' || c, '') from unnest(v_x1) c),
                    (select string_agg(', ' || c, '') from unnest(v_x0) c),
                    array_to_string(array(select format('s0.%I%s', c, case when c = any (v_key_cols) then ' collate "C"' else '' end)
                                          from unnest(v_key_cols || array['event_time']
                                                      || case when p_label is null then '{}'::text[] else array[p_label] end) c), ', '),
                    (select string_agg(format('s0.%I', c), ', ') from unnest(v_key_cols || array['event_time']
                        || case when p_label is null then '{}'::text[] else array[p_label] end
                        || array(select o ->> 'name' from jsonb_array_elements(v_plan -> 'transformations') t, jsonb_array_elements(t -> 'outputs') o
                                 where t ->> 'type' = 'window_aggregate')) c),
                    p_spine, v_joins);

    -- Statistics are frozen over the joined rows, so those are staged first when a spec needs them.
    v_needs_raw := exists (select 1 from jsonb_array_elements(v_plan -> 'transformations') t
                           where t ->> 'type' in ('standardize', 'min_max', 'one_hot'));
    if v_needs_raw then
        if to_regclass('pg_temp._pgmlops_raw') is not null then
            drop table pg_temp._pgmlops_raw;
        end if;
        execute 'create temp table _pgmlops_raw on commit drop as ' || v_raw;
    end if;

    -- Transformations in order, each freezing its statistics over the expressions before it.
    for v_spec in select value from jsonb_array_elements(v_plan -> 'transformations') loop
        if v_spec ->> 'type' in ('standardize', 'min_max') then
            execute format('select avg(x), stddev_pop(x), min(x), max(x), count(x) from (select (%s)::double precision as x from pg_temp._pgmlops_raw r) t',
                           v_exprs ->> (v_spec ->> 'column'))
            into v_stats;
            v_spec := v_spec || jsonb_build_object('state', case v_spec ->> 'type'
                when 'standardize' then jsonb_build_object('mean', v_stats.avg, 'std', v_stats.stddev_pop, 'count', v_stats.count)
                else jsonb_build_object('min', v_stats.min, 'max', v_stats.max, 'count', v_stats.count) end);
        elsif v_spec ->> 'type' = 'one_hot' then
            execute format('select array(select c from (select (%s)::text as c, count(*) as n from pg_temp._pgmlops_raw r group by 1) t
                                  where c is not null order by n desc, c collate "C" limit %s)',
                           v_exprs ->> (v_spec ->> 'column'), (v_spec ->> 'max_categories')::int)
            into v_cats;
            v_cats := array(select c from unnest(v_cats) c order by c collate "C");
            v_spec := v_spec || jsonb_build_object('state', jsonb_build_object('categories', to_jsonb(v_cats)),
                'outputs', ml_private.one_hot_outputs(v_spec ->> 'prefix', v_cats, v_spec ->> 'unseen',
                    array(select c ->> 'name' from jsonb_array_elements(v_columns) c)
                    || array(select o ->> 'name' from jsonb_array_elements(v_plan -> 'transformations') t,
                                                      jsonb_array_elements(t -> 'outputs') o)));
        end if;
        v_outputs := ml_private.transformation_sql(v_spec, v_exprs);
        for v_o in select value from jsonb_array_elements(v_outputs) loop
            if v_spec ->> 'type' <> 'window_aggregate' then
                v_exprs := v_exprs || jsonb_build_object(v_o ->> 'name', v_o ->> 'expr');
                v_columns := v_columns || jsonb_build_array(jsonb_build_object(
                    'name', v_o ->> 'name', 'type', v_o ->> 'sql_type', 'role', 'transformed'));
            end if;
        end loop;
        v_specs := v_specs || jsonb_build_array(v_spec);
    end loop;

    -- Model inputs: features, aggregates and outputs that no spec consumed (unless it keeps them).
    v_consumed := array(select t ->> 'column' from jsonb_array_elements(v_specs) t where t ? 'column' and not (t ->> 'keep')::boolean);
    v_inputs := array(select c ->> 'name' from jsonb_array_elements(v_columns) with ordinality x (c, n)
                      where c ->> 'role' in ('feature', 'aggregate', 'transformed') and not (c ->> 'name') = any (v_consumed)
                      order by n);

    execute format('create table %s as select r.spine_row as row_id, %L::uuid as tenant_id, %s from (%s) r',
                   v_table, v_tenant,
                   (select string_agg(case when c ->> 'role' = 'transformed' then format('%s as %I', v_exprs ->> (c ->> 'name'), c ->> 'name')
                                           else format('r.%I', c ->> 'name') end, ', ' order by n)
                    from jsonb_array_elements(v_columns) with ordinality x (c, n)),
                   case when v_needs_raw then 'select * from pg_temp._pgmlops_raw' else v_raw end);
    execute format('alter table %s add primary key (row_id)', v_table);
    perform ml_private.protect_dataset_table(v_table::regclass);
    if v_needs_raw then
        drop table pg_temp._pgmlops_raw;
    end if;

    v_hash := ml_private.dataset_content_hash(v_table::regclass, array(select c ->> 'name' from jsonb_array_elements(v_columns) c),
                                              case when p_label is null then '{}'::text[] else array[p_label] end);

    -- Versions of one name are numbered one at a time.
    perform pg_advisory_xact_lock(hashtext('pgmlops.dataset:' || v_tenant::text || ':' || p_name));
    select coalesce(max(d.version), 0) + 1 into v_version from ml.datasets d where d.tenant_id = v_tenant and d.name = p_name;
    insert into ml.datasets (id, tenant_id, name, version, table_name, spine, features, label, key_columns, transformations,
                             columns, inputs, row_count, content_hash, time_range, source_groups, created_by)
    values (v_id, v_tenant, p_name, v_version, v_table, p_spine_text, p_features, p_label, v_key_cols, v_specs,
            v_columns, v_inputs, v_rows, v_hash, v_range, v_groups, ml_private.caller_user_id());
    -- The reference profile drift reports compare with (sql/monitoring/profiles.sql).
    perform ml_private.profile_dataset(v_id);

    for v_group in select value from jsonb_array_elements(v_groups) loop
        perform ml_private.record_lineage(v_tenant, 'feature_group', (v_group ->> 'group_id')::uuid, 'dataset', v_id,
                                          'derived_from', jsonb_build_object('features', v_group -> 'features'));
    end loop;
    perform ml_private.publish(v_tenant, 'features', 'dataset.created', jsonb_build_object(
        'dataset_id', v_id, 'name', p_name, 'version', v_version, 'table', v_table, 'rows', v_rows, 'content_hash', v_hash,
        'groups', (select jsonb_agg(jsonb_build_object('group_id', g -> 'group_id', 'name', g -> 'name', 'version', g -> 'version'))
                   from jsonb_array_elements(v_groups) g)));
    return v_id;
end
$$;

------------------------------------------------------------------------------------------------
-- API
------------------------------------------------------------------------------------------------

-- ml.create_training_set(name text, spine text, features text[], label text default null,
--                        transformations jsonb default '[]') returns uuid
-- Builds a point-in-time correct training set (see the header) and returns its id in
-- ml.datasets; the rows are in its table_name, row_id numbering them in (keys, event_time,
-- label) order (so equal content gives an equal table and content hash). Building the same
-- name again makes a new version. Runs with work_mem 256MB (one sort of the spine; the merged
-- groups' timelines held in hash tables). Each group is joined by probes (small spines) or in
-- one pass over its rows (large spines), chosen per group by ml_private.as_of_plan: merge when
-- the spine has at least an eighth as many rows as the group's offline table holds in the
-- spine's time window (the planner's estimate); the setting pgmlops.training_set_plan =
-- 'probe' | 'merge' | 'auto' forces it, and source_groups[i].plan records the plan used. Both
-- give the same rows.
--   name      lowercase letters, digits and _ (1 to 48, starting with a letter)
--   spine     a table or view name (resolved with the caller's search_path) or a query (SELECT,
--             WITH, VALUES or TABLE), run with the caller's rights. Its columns:
--               * one per join key of the requested groups, named like the join key (e.g.
--                 customer_id), or a single column entity_key serving every group without its
--                 own; any type, compared as text with the stored keys;
--               * event_time: the time of each prediction to train for (timestamptz;
--                 timestamp and date are read as UTC); never NULL;
--               * the label column, when `label` names one (boolean, number, string or
--                 date/time);
--             other columns are ignored. Every spine row gives one dataset row, duplicates too;
--             rows without a feature value keep NULL features.
--   features  'group:feature' or 'group@version:feature'; output columns are named by the
--             feature, or <group>__<feature> when names collide (see ml_private.training_set_plan)
--   label     a spine column, copied as it is
--   transformations  see sql/features/transformations.sql; statistics frozen at build
-- Writes ml_datasets."<name>_<8 hex of id>" (tenant_id on every row, read through RLS), the
-- ml.datasets row (row count, content hash, columns, model inputs, time range, source groups,
-- frozen transformations), lineage feature_group -> dataset, and the event 'dataset.created'
-- (topic 'features').
-- Raises 22023 bad name, blank spine, a spine with no rows, bad feature references or
-- transformation specs ('transformations[i].field: rule'), a bad pgmlops.training_set_plan;
-- 22004 NULL event_time; 42703 a missing spine column (named) or unknown feature; 42804 a spine
-- column of an unusable type; P0002 unknown group; 42501 viewers and non-members; a spine query
-- that fails raises its own error (42P01 for an unknown spine table). Nothing is written on error.
-- Security invoker, on purpose: the spine and the events sources must run with the caller's
-- rights; the join runs in ml_private.materialize_training_set, which only reads temporary
-- tables of the caller's session. Callers: authenticated (owner, admin, ml_engineer), service_role.
create or replace function ml.create_training_set(name text, spine text, features text[], label text default null,
                                       transformations jsonb default '[]')
returns uuid
language plpgsql volatile
set work_mem = '256MB'
set jit = off
as $$
declare
    v_plan     jsonb;
    v_source   text;
    v_types    jsonb;
    v_keys     text[] := '{}';
    v_key      text;
    v_group    jsonb;
    v_inner    text[] := '{}';
    v_outer    text[] := array['x.*'];
    v_et       text;
    v_joins    text := '';
    v_spec     jsonb;
    v_i        int := -1;
    v_n        int := 0;
    v_src      text;
    v_src_types jsonb;
    v_spine_key text;
    v_col      text;
    v_type     record;
    v_id       uuid;
    v_owner    text;
    v_transformations jsonb := case when jsonb_typeof(transformations) = 'array' then transformations end;
begin
    if name is null or name !~ '^[a-z][a-z0-9_]{0,47}$' then
        raise exception 'name: % must be lowercase letters, digits and _ (1 to 48, starting with a letter)',
            coalesce(quote_literal(name), 'NULL') using errcode = '22023';
    end if;
    if spine is null or btrim(spine) = '' then
        raise exception 'spine: must be a table name or a query giving the entity key, event_time and the label'
            using errcode = '22023';
    end if;
    v_plan := ml_private.training_set_plan(name, features, label, transformations);

    -- The spine, as the caller: a temp view first, to see its columns before reading a row.
    v_source := regexp_replace(btrim(spine), '[;[:space:]]+$', '');
    if v_source ~* '^\(*[[:space:]]*(select|with|values|table)[[:space:](]' then
        v_source := '(' || v_source || ')';
    else
        begin
            v_source := v_source::regclass::text;
        exception when invalid_name or undefined_table or invalid_schema_name or syntax_error then
            raise exception 'spine: % is neither a readable table name nor a query (SELECT, WITH, VALUES, TABLE): %',
                quote_literal(spine), sqlerrm using errcode = case when sqlstate = '42P01' then '42P01' else '22023' end;
        end;
        if not pg_catalog.has_table_privilege(v_source::regclass, 'SELECT') then
            raise exception 'spine: permission denied for table %', v_source using errcode = '42501';
        end if;
    end if;
    if to_regclass('pg_temp._pgmlops_spine_source') is not null then
        drop view pg_temp._pgmlops_spine_source;
    end if;
    execute format('create temp view _pgmlops_spine_source as select * from %s s', v_source);
    select jsonb_object_agg(a.attname, jsonb_build_object('type', format_type(a.atttypid, a.atttypmod),
                                                          'base', format_type(nullif(t.typbasetype, 0), null), 'category', t.typcategory,
                                                          'basecategory', bt.typcategory))
    into v_types
    from pg_catalog.pg_attribute a
    join pg_catalog.pg_type t on t.oid = a.atttypid
    left join pg_catalog.pg_type bt on bt.oid = t.typbasetype
    where a.attrelid = 'pg_temp._pgmlops_spine_source'::regclass and a.attnum > 0 and not a.attisdropped;

    -- Keys.
    for v_group in select value from jsonb_array_elements(v_plan -> 'groups') loop
        v_key := case when v_types ? (v_group ->> 'join_key') then v_group ->> 'join_key'
                      when v_types ? 'entity_key' then 'entity_key' end;
        if v_key is null then
            raise exception 'spine: missing column % (the join key of feature group %; or name the key column entity_key); the spine has: %',
                v_group ->> 'join_key', v_group ->> 'name', (select string_agg(k, ', ') from jsonb_object_keys(v_types) k)
                using errcode = '42703';
        end if;
        if not v_key = any (v_keys) then
            v_keys := v_keys || v_key;
            v_inner := v_inner || format('(s.%I)::text as %I', v_key, v_key);
        end if;
    end loop;

    -- event_time: timestamptz, or timestamp / date read as UTC.
    if not v_types ? 'event_time' then
        raise exception 'spine: missing column event_time (the time of each row, timestamptz); the spine has: %',
            (select string_agg(k, ', ') from jsonb_object_keys(v_types) k) using errcode = '42703';
    end if;
    v_et := case coalesce(v_types #>> '{event_time,base}', v_types #>> '{event_time,type}')
        when 'timestamp with time zone' then '(s.event_time)::timestamptz as event_time'
        when 'timestamp without time zone' then '((s.event_time)::timestamp at time zone ''UTC'') as event_time'
        when 'date' then '((s.event_time)::date::timestamp at time zone ''UTC'') as event_time' end;
    v_inner := v_inner || v_et;
    if v_et is null then
        raise exception 'spine: column event_time must be timestamptz (or timestamp or date, read as UTC), is %',
            v_types #>> '{event_time,type}' using errcode = '42804';
    end if;

    -- The label: as it is (a domain as its base type).
    if label is not null then
        if not v_types ? label then
            raise exception 'label: the spine has no column % (it has: %)', quote_literal(label),
                (select string_agg(k, ', ') from jsonb_object_keys(v_types) k) using errcode = '42703';
        end if;
        if label = any (v_keys) then
            raise exception 'label: % is a key column', quote_literal(label) using errcode = '22023';
        end if;
        if coalesce(v_types -> label ->> 'basecategory', v_types -> label ->> 'category') not in ('B', 'N', 'S', 'D') then
            raise exception 'label: column % must be boolean, a number, a string or a date/time, is %', label,
                v_types -> label ->> 'type' using errcode = '42804';
        end if;
        v_inner := v_inner || format('(s.%I)::%s as %I', label, coalesce(v_types -> label ->> 'base', v_types -> label ->> 'type'), label);
    end if;

    -- Windowed aggregates over their events sources, as the caller.
    for v_spec in select value from jsonb_array_elements(v_plan -> 'transformations') loop
        v_i := v_i + 1;
        continue when v_spec ->> 'type' <> 'window_aggregate';
        v_n := v_n + 1;
        begin
            select format('%I.%I', n.nspname, c.relname) into v_src
            from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
            where c.oid = (v_spec ->> 'source')::regclass;
        exception when invalid_name or undefined_table or invalid_schema_name or syntax_error then
            raise exception 'transformations[%].source: % is not a table or view: %', v_i,
                quote_literal(v_spec ->> 'source'), sqlerrm using errcode = '22023';
        end;
        if not pg_catalog.has_table_privilege(v_src::regclass, 'SELECT') then
            raise exception 'transformations[%].source: permission denied for table %', v_i, v_src using errcode = '42501';
        end if;
        -- Stored schema-qualified, so scoring reads this relation whatever the scorer's search_path.
        v_transformations := jsonb_set(v_transformations, array[v_i::text, 'source'], to_jsonb(v_src));
        if to_regclass(format('pg_temp.%I', '_pgmlops_events_' || v_n)) is not null then
            execute format('drop view pg_temp.%I', '_pgmlops_events_' || v_n);
        end if;
        execute format('create temp view %I as select * from %s s', '_pgmlops_events_' || v_n, v_src);
        select jsonb_object_agg(a.attname, jsonb_build_object('type', format_type(a.atttypid, a.atttypmod),
                                                              'base', format_type(coalesce(nullif(t.typbasetype, 0), a.atttypid), null),
                                                              'category', coalesce(bt.typcategory, t.typcategory)))
        into v_src_types
        from pg_catalog.pg_attribute a
        join pg_catalog.pg_type t on t.oid = a.atttypid
        left join pg_catalog.pg_type bt on bt.oid = t.typbasetype
        where a.attrelid = format('pg_temp.%I', '_pgmlops_events_' || v_n)::regclass and a.attnum > 0 and not a.attisdropped;
        foreach v_col in array array['key', 'time', 'value'] loop
            if v_spec ->> v_col is not null and not v_src_types ? (v_spec ->> v_col) then
                raise exception 'transformations[%].%: the source has no column % (it has: %)', v_i, v_col,
                    quote_literal(v_spec ->> v_col), (select string_agg(k, ', ') from jsonb_object_keys(v_src_types) k)
                    using errcode = '22023';
            end if;
        end loop;
        if v_src_types -> (v_spec ->> 'time') ->> 'base' not in ('timestamp with time zone', 'timestamp without time zone') then
            raise exception 'transformations[%].time: column % must be timestamptz or timestamp, is %', v_i, v_spec ->> 'time',
                v_src_types -> (v_spec ->> 'time') ->> 'type' using errcode = '22023';
        end if;
        if v_spec ->> 'value' is not null and v_src_types -> (v_spec ->> 'value') ->> 'category' <> 'N' then
            raise exception 'transformations[%].value: column % must be numeric, is %', v_i, v_spec ->> 'value',
                v_src_types -> (v_spec ->> 'value') ->> 'type' using errcode = '22023';
        end if;
        v_spine_key := coalesce(v_spec ->> 'spine_key', case when cardinality(v_keys) = 1 then v_keys[1] end);
        if v_spine_key is null or not v_spine_key = any (v_keys) then
            raise exception 'transformations[%].spine_key: must name one of the spine key columns (%)', v_i, array_to_string(v_keys, ', ')
                using errcode = '22023';
        end if;
        v_joins := v_joins || format(' left join lateral (%s) a%s on true', ml_private.window_aggregate_sql(
            v_spec, format('pg_temp.%I', '_pgmlops_events_' || v_n), format('x.%I', v_spine_key), 'x.event_time',
            v_src_types -> (v_spec ->> 'key') ->> 'base', v_src_types -> (v_spec ->> 'time') ->> 'base'), v_n);
        v_outer := v_outer || array(select format('a%s.%I', v_n, o ->> 'name') from jsonb_array_elements(v_spec -> 'outputs') o);
    end loop;

    -- The spine rows, typed, into a temp table of this session; the owner's function takes it from there.
    if to_regclass('pg_temp._pgmlops_spine') is not null then
        drop table pg_temp._pgmlops_spine;
    end if;
    execute format(
        'create temp table _pgmlops_spine on commit drop as select %s from (select %s from pg_temp._pgmlops_spine_source s) x%s',
        array_to_string(v_outer, ', '), array_to_string(v_inner, ', '), v_joins);
    -- The function owner reads it: a superuser may anyway; another owner (e.g. Supabase's postgres) is granted it.
    select pg_catalog.pg_get_userbyid(p.proowner) into v_owner from pg_catalog.pg_proc p
    where p.oid = 'ml_private.materialize_training_set(text, text, text[], text, jsonb, regclass)'::regprocedure;
    if v_owner is distinct from current_user then
        execute format('grant select on pg_temp._pgmlops_spine to %I', v_owner);
    end if;

    v_id := ml_private.materialize_training_set(name, spine, features, label, v_transformations, 'pg_temp._pgmlops_spine'::regclass);

    drop table pg_temp._pgmlops_spine;
    drop view pg_temp._pgmlops_spine_source;
    for v_i in 1 .. v_n loop
        execute format('drop view pg_temp.%I', '_pgmlops_events_' || v_i);
    end loop;
    return v_id;
end
$$;

-- ml.drop_dataset(dataset uuid) returns boolean
-- Deletes a training set: its ml.datasets row, its table and its lineage edges; publishes
-- 'dataset.dropped'. False when there is no such dataset in the acting tenant. Raises 42501 for
-- viewers and non-members. Callers: owner, admin, ml_engineer; service_role.
create or replace function ml.drop_dataset(dataset uuid) returns boolean
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_tenant uuid := ml_private.acting_tenant_id(true);
    v_ds     ml.datasets;
begin
    delete from ml.datasets d where d.id = dataset and d.tenant_id = v_tenant returning * into v_ds;
    if v_ds.id is null then
        return false;
    end if;
    delete from ml.lineage l where l.tenant_id = v_tenant
        and ((l.to_kind = 'dataset' and l.to_id = v_ds.id) or (l.from_kind = 'dataset' and l.from_id = v_ds.id));
    perform ml_private.publish(v_tenant, 'features', 'dataset.dropped',
        jsonb_build_object('dataset_id', v_ds.id, 'name', v_ds.name, 'version', v_ds.version));
    return true;
end
$$;

------------------------------------------------------------------------------------------------
-- Grants
------------------------------------------------------------------------------------------------

grant execute on function
    ml_private.training_set_plan(text, text[], text, jsonb),
    ml_private.materialize_training_set(text, text, text[], text, jsonb, regclass),
    ml_private.feature_value_sql(text, text, text, boolean),
    ml_private.feature_sql_type(text),
    ml.create_training_set(text, text, text[], text, jsonb),
    ml.drop_dataset(uuid)
to authenticated, service_role;
