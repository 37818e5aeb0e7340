-- pgmlops: capabilities and time-partitioned tables
--
-- Time-series tables (events, metrics, feature values, prediction logs, ...) are created through
-- ml_private.create_time_partitioned_table(). With TimescaleDB they become hypertables; without it
-- they use native declarative range partitioning by time, with partitions made ahead of time by
-- ml_private.ensure_time_partitions() and a DEFAULT partition so that no insert ever fails for
-- want of a partition. Either way the SQL API on top is the same.

------------------------------------------------------------------------------------------------
-- Capabilities
------------------------------------------------------------------------------------------------

-- ml.capabilities() returns jsonb
-- Which optional Postgres features this database has: {"vector", "timescaledb", "pg_cron",
-- "pg_jsonschema", "realtime", "server_version", "partitioning"}. Extensions count when they are
-- installed in the database (not merely available). "partitioning" is "hypertable" or "native".
create function ml.capabilities() returns jsonb
language sql stable
set search_path = ''
as $$
    select jsonb_build_object(
        'vector',         exists (select 1 from pg_catalog.pg_extension where extname = 'vector'),
        'timescaledb',    exists (select 1 from pg_catalog.pg_extension where extname = 'timescaledb'),
        'pg_cron',        exists (select 1 from pg_catalog.pg_extension where extname = 'pg_cron'),
        'pg_jsonschema',  exists (select 1 from pg_catalog.pg_extension where extname = 'pg_jsonschema'),
        'realtime',       exists (select 1 from pg_catalog.pg_namespace where nspname = 'realtime'),
        'server_version', current_setting('server_version_num')::int,
        'partitioning',   case when exists (select 1 from pg_catalog.pg_extension where extname = 'timescaledb')
                               then 'hypertable' else 'native' end
    )
$$;
grant execute on function ml.capabilities() to anon, authenticated, service_role;

-- Optional extensions are enabled where the server offers them; none is required.
do $$
declare
    v_ext text;
begin
    -- pg_cron can only be created in the database its cron.database_name names.
    if current_setting('cron.database_name', true) = current_database()
       and exists (select 1 from pg_available_extensions where name = 'pg_cron')
       and not exists (select 1 from pg_extension where extname = 'pg_cron') then
        begin
            create extension if not exists pg_cron;
        exception when others then
            raise notice 'pgmlops: optional extension pg_cron not enabled: %', sqlerrm;
        end;
    end if;
    foreach v_ext in array array['vector', 'timescaledb', 'pg_jsonschema'] loop
        if exists (select 1 from pg_available_extensions where name = v_ext)
           and not exists (select 1 from pg_extension where extname = v_ext) then
            begin
                execute format('create extension if not exists %I', v_ext);
            exception when others then
                -- e.g. timescaledb present on disk but not in shared_preload_libraries
                raise notice 'pgmlops: optional extension % not enabled: %', v_ext, sqlerrm;
            end;
        end if;
    end loop;
end
$$;

------------------------------------------------------------------------------------------------
-- Time-partitioned tables
------------------------------------------------------------------------------------------------

create table ml_private.time_partitioned_tables (
    table_name     text primary key,
    time_column    text not null,
    chunk_interval interval not null,
    mode           text not null check (mode in ('hypertable', 'native')),
    retention      interval,
    premake        int not null default 4,
    created_at     timestamptz not null default now()
);
comment on table ml_private.time_partitioned_tables is 'Tables made by ml_private.create_time_partitioned_table and how they are partitioned';

-- ml_private.create_time_partitioned_table(p_schema, p_name, p_columns, p_time_column,
--                                          p_chunk_interval default '7 days', p_retention default null)
-- Creates table p_schema.p_name with the column definitions p_columns (the text between the
-- parentheses of CREATE TABLE; table constraints allowed, but unique ones must include the time
-- column) partitioned by p_time_column (timestamptz): a hypertable when TimescaleDB is installed,
-- otherwise a natively range-partitioned table with a DEFAULT partition and partitions from one
-- chunk back to p_premake chunks ahead. p_retention, when set, is applied by
-- ml_private.run_maintenance(). Returns 'hypertable' or 'native'. A hypertable's chunks live in
-- schema ml_chunks, which clients cannot use (see below).
-- Raises 22023 when p_chunk_interval is not positive, 42P07 when the table exists.
create function ml_private.create_time_partitioned_table(
    p_schema text, p_name text, p_columns text, p_time_column text,
    p_chunk_interval interval default '7 days', p_retention interval default null)
returns text
language plpgsql
set search_path = ''
as $$
declare
    v_mode text := case when exists (select 1 from pg_extension where extname = 'timescaledb')
                        then 'hypertable' else 'native' end;
begin
    if p_chunk_interval is null or p_chunk_interval <= interval '0' then
        raise exception 'chunk_interval: must be a positive interval' using errcode = '22023';
    end if;

    if v_mode = 'hypertable' then
        -- TimescaleDB copies a hypertable's grants to each new chunk but not its row-level
        -- security (timescale/timescaledb#7830): a client naming a chunk directly would read every
        -- tenant's rows. So chunks go to schema ml_chunks, on which clients have no usage. Queries
        -- on the hypertable still reach them, through its policies (schema usage is checked only
        -- when a name is looked up), and TimescaleDB makes chunks there as the hypertable's owner,
        -- even on an insert by authenticated. Revoking usage on _timescaledb_internal instead
        -- breaks TimescaleDB: a session's first query as a non-superuser then fails with
        -- "permission denied for schema _timescaledb_internal".
        if to_regnamespace('ml_chunks') is null then
            create schema ml_chunks;
            comment on schema ml_chunks is 'pgmlops: TimescaleDB chunks of its hypertables; never expose this schema';
        end if;
        execute 'revoke all on schema ml_chunks from public, anon, authenticated, service_role';
        execute format('create table %I.%I (%s)', p_schema, p_name, p_columns);
        -- create_default_indexes => false: pgmlops makes its own (tenant-first) indexes.
        execute format(
            'select public.create_hypertable(%L, %L, chunk_time_interval => %L::interval,
                                             create_default_indexes => false, associated_schema_name => ''ml_chunks'')',
            format('%I.%I', p_schema, p_name), p_time_column, p_chunk_interval);
    else
        execute format('create table %I.%I (%s) partition by range (%I)', p_schema, p_name, p_columns, p_time_column);
        execute format('create table %I.%I partition of %I.%I default',
                       p_schema, p_name || '_default', p_schema, p_name);
    end if;

    insert into ml_private.time_partitioned_tables (table_name, time_column, chunk_interval, mode, retention)
    values (format('%I.%I', p_schema, p_name), p_time_column, p_chunk_interval, v_mode, p_retention);

    if v_mode = 'native' then
        perform ml_private.ensure_time_partitions(format('%I.%I', p_schema, p_name)::regclass,
                                                  now() - p_chunk_interval, now());
    end if;
    return v_mode;
end
$$;

-- ml_private.partition_bounds(p_table regclass, p_at timestamptz) returns tstzrange
-- The chunk of p_table that holds time p_at: chunks are aligned to multiples of the chunk
-- interval since the Unix epoch (as TimescaleDB aligns them).
create function ml_private.partition_bounds(p_table regclass, p_at timestamptz)
returns tstzrange
language sql stable
set search_path = ''
as $$
    select tstzrange(
        to_timestamp(floor(extract(epoch from p_at) / extract(epoch from t.chunk_interval)) * extract(epoch from t.chunk_interval)),
        to_timestamp((floor(extract(epoch from p_at) / extract(epoch from t.chunk_interval)) + 1) * extract(epoch from t.chunk_interval)),
        '[)')
    from ml_private.time_partitioned_tables t
    where t.table_name = p_table::text
$$;

-- ml_private.ensure_time_partitions(p_table regclass, p_from timestamptz, p_to timestamptz)
-- Makes sure native partitions of p_table cover [p_from, p_to] plus the table's `premake` chunks
-- after p_to. Rows of a new partition's range already sitting in the DEFAULT partition are moved
-- into it. A no-op for hypertables (TimescaleDB makes chunks itself). Returns the number of
-- partitions created. Callers writing historical data call it with the data's time range first.
-- Raises 22023 when p_table was not made by create_time_partitioned_table.
create function ml_private.ensure_time_partitions(p_table regclass, p_from timestamptz, p_to timestamptz)
returns int
language plpgsql
set search_path = ''
as $$
declare
    v_def     ml_private.time_partitioned_tables;
    v_schema  text;
    v_name    text;
    v_bounds  tstzrange;
    v_at      timestamptz;
    v_end     timestamptz;
    v_part    text;
    v_created int := 0;
    v_moved   bigint;
begin
    select * into v_def from ml_private.time_partitioned_tables where table_name = p_table::text;
    if not found then
        raise exception 'table % is not a pgmlops time-partitioned table', p_table using errcode = '22023';
    end if;
    if v_def.mode = 'hypertable' then
        return 0;
    end if;
    if p_from > p_to then
        raise exception 'from (%) is after to (%)', p_from, p_to using errcode = '22023';
    end if;

    select n.nspname, c.relname into v_schema, v_name
    from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = p_table;

    -- Serialize partition creation per table: two sessions making the same partition would fail.
    perform pg_advisory_xact_lock(p_table::oid::bigint);

    v_at := lower(ml_private.partition_bounds(p_table, p_from));
    v_end := p_to + v_def.chunk_interval * v_def.premake;
    while v_at <= v_end loop
        v_bounds := ml_private.partition_bounds(p_table, v_at);
        v_part := v_name || '_p' || to_char(lower(v_bounds) at time zone 'UTC', 'YYYYMMDD_HH24MISS');
        if to_regclass(format('%I.%I', v_schema, v_part)) is null then
            -- Rows for this range may already sit in the default partition: take them out first,
            -- since attaching a partition whose range the default holds rows for is an error.
            execute format('create temp table _pgmlops_moving (like %I.%I) on commit drop', v_schema, v_name);
            execute format('with moved as (delete from %I.%I where %I >= $1 and %I < $2 returning *)
                            insert into pg_temp._pgmlops_moving select * from moved',
                           v_schema, v_name || '_default', v_def.time_column, v_def.time_column)
                using lower(v_bounds), upper(v_bounds);
            get diagnostics v_moved = row_count;
            execute format('create table %I.%I partition of %I.%I for values from (%L) to (%L)',
                           v_schema, v_part, v_schema, v_name, lower(v_bounds), upper(v_bounds));
            if v_moved > 0 then
                execute format('insert into %I.%I select * from pg_temp._pgmlops_moving', v_schema, v_name);
            end if;
            drop table pg_temp._pgmlops_moving;
            v_created := v_created + 1;
        end if;
        v_at := upper(v_bounds);
    end loop;
    return v_created;
end
$$;

-- ml_private.drop_expired_partitions(p_table regclass) returns int
-- Applies the table's retention: drops whole chunks/partitions that end before now() - retention.
-- Returns how many were dropped (0 without a retention).
create function ml_private.drop_expired_partitions(p_table regclass)
returns int
language plpgsql
set search_path = ''
as $$
declare
    v_def     ml_private.time_partitioned_tables;
    v_part    record;
    v_dropped int := 0;
begin
    select * into v_def from ml_private.time_partitioned_tables where table_name = p_table::text;
    if not found or v_def.retention is null then
        return 0;
    end if;
    if v_def.mode = 'hypertable' then
        execute 'select count(*) from public.drop_chunks($1, older_than => $2)'
            into v_dropped using p_table, now() - v_def.retention;
        return v_dropped;
    end if;
    for v_part in
        select c.oid::regclass as part, pg_get_expr(c.relpartbound, c.oid) as bound
        from pg_inherits i join pg_class c on c.oid = i.inhrelid
        where i.inhparent = p_table and not c.relpartbound is null
          and pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
    loop
        if (regexp_match(v_part.bound, 'TO \(''([^'']+)''\)'))[1]::timestamptz < now() - v_def.retention then
            execute format('drop table %s', v_part.part);
            v_dropped := v_dropped + 1;
        end if;
    end loop;
    return v_dropped;
end
$$;

-- ml_private.run_maintenance() returns jsonb
-- Periodic upkeep of every time-partitioned table: partitions ahead of time and retention.
-- Scheduled with pg_cron where it is installed, otherwise run by workers (`pgmlops worker`
-- calls it under an advisory lock every few minutes). Returns what it did, per table.
create function ml_private.run_maintenance() returns jsonb
language plpgsql
set search_path = ''
as $$
declare
    v_t      record;
    v_report jsonb := '{}';
    v_purged int;
begin
    -- One maintainer at a time across cron and workers; others return at once.
    if not pg_try_advisory_xact_lock(hashtext('pgmlops.maintenance')) then
        return jsonb_build_object('skipped', 'another session is running maintenance');
    end if;
    for v_t in select table_name from ml_private.time_partitioned_tables order by table_name loop
        v_report := v_report || jsonb_build_object(v_t.table_name, jsonb_build_object(
            'created', ml_private.ensure_time_partitions(v_t.table_name::regclass, now(), now()),
            'dropped', ml_private.drop_expired_partitions(v_t.table_name::regclass)));
    end loop;
    -- Finished jobs are kept 14 days (their events stay in ml.events for its own retention).
    if to_regprocedure('ml_private.purge_finished_jobs(interval)') is not null then
        execute 'select ml_private.purge_finished_jobs($1)'
            into v_purged using coalesce((select (value #>> '{}')::interval from ml_private.settings where key = 'job_retention'), interval '14 days');
        v_report := v_report || jsonb_build_object('jobs_purged', v_purged);
    end if;
    update ml_private.settings set value = to_jsonb(now()), updated_at = now() where key = 'last_maintenance';
    if not found then
        insert into ml_private.settings (key, value) values ('last_maintenance', to_jsonb(now()));
    end if;
    return v_report;
end
$$;
grant execute on function ml_private.run_maintenance() to service_role;

-- With pg_cron in this database, maintenance runs every 10 minutes from cron.
do $$
begin
    if exists (select 1 from pg_extension where extname = 'pg_cron') then
        perform cron.schedule('pgmlops-maintenance', '*/10 * * * *', 'select ml_private.run_maintenance()');
    end if;
end
$$;
