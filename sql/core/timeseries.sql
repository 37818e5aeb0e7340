-- pgmlops: capabilities and time-partitioned tables
--
-- Time-series tables (events, metrics, feature values, prediction logs, ...) are created through
-- ml_private.create_time_partitioned_table(). With TimescaleDB they become hypertables; without it
-- they use native declarative range partitioning by time, with partitions made ahead of time by
-- ml_private.ensure_time_partitions() and a DEFAULT partition so that no insert ever fails for
-- want of a partition. Either way the SQL API on top is the same.
--
-- Partitions and chunks are secured like their parent (defence in depth): RLS enabled (and forced
-- on native partitions) with copies of the parent's policies, from the moment they exist. Queries
-- through the parent never need it (PostgreSQL applies the parent's policies); it is there for a
-- client that names a partition directly after an operator granted it more than pgmlops does.

------------------------------------------------------------------------------------------------
-- Capabilities
------------------------------------------------------------------------------------------------

-- ml.capabilities() returns jsonb
-- Which optional Postgres features this database has: {"vector", "timescaledb", "pg_cron",
-- "pg_jsonschema", "realtime", "server_version", "partitioning"}. Extensions count when they are
-- installed in the database (not merely available). "partitioning" is "hypertable" or "native".
create or replace function ml.capabilities() returns jsonb
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

------------------------------------------------------------------------------------------------
-- Time-partitioned tables
------------------------------------------------------------------------------------------------

-- ml_private.create_time_partitioned_table(p_schema, p_name, p_columns, p_time_column,
--                                          p_chunk_interval default '7 days', p_retention default null)
-- Creates table p_schema.p_name with the column definitions p_columns (the text between the
-- parentheses of CREATE TABLE; table constraints allowed, but unique ones must include the time
-- column) partitioned by p_time_column (timestamptz): a hypertable when TimescaleDB is installed,
-- otherwise a natively range-partitioned table with a DEFAULT partition and partitions from one
-- chunk back to p_premake chunks ahead. p_retention, when set, is applied by
-- ml_private.run_maintenance(). Returns 'hypertable' or 'native'. A hypertable's chunks live in
-- schema ml_chunks, which clients cannot use (see below). Partitions and chunks get the table's
-- row-level security as they are made (ml_private.secure_partitions; a hypertable has a
-- statement trigger for the chunks TimescaleDB makes on insert). Register the table with
-- ml_private.enable_tenant_rls afterwards: its policies then reach every partition.
-- Raises 22023 when p_chunk_interval is not positive, 42P07 when the table exists.
create or replace function ml_private.create_time_partitioned_table(
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
        execute format('create trigger secure_new_chunks after insert or update on %I.%I
                        for each statement execute function ml_private.note_new_partitions()', p_schema, p_name);
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
        perform ml_private.secure_partitions(format('%I.%I', p_schema, p_name)::regclass);
    end if;
    return v_mode;
end
$$;

-- ml_private.partition_bounds(p_table regclass, p_at timestamptz) returns tstzrange
-- The chunk of p_table that holds time p_at: chunks are aligned to multiples of the chunk
-- interval since the Unix epoch (as TimescaleDB aligns them).
create or replace function ml_private.partition_bounds(p_table regclass, p_at timestamptz)
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
-- New partitions get p_table's row-level security (ml_private.secure_partitions) at once.
-- Raises 22023 when p_table was not made by create_time_partitioned_table.
create or replace function ml_private.ensure_time_partitions(p_table regclass, p_from timestamptz, p_to timestamptz)
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
    if v_created > 0 then
        perform ml_private.secure_partitions(p_table, true);
    end if;
    return v_created;
end
$$;

-- ml_private.drop_expired_partitions(p_table regclass) returns int
-- Applies the table's retention: drops whole chunks/partitions that end before now() - retention.
-- Returns how many were dropped (0 without a retention).
create or replace function ml_private.drop_expired_partitions(p_table regclass)
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
-- Periodic upkeep of every time-partitioned table: partitions ahead of time, retention, and the
-- row-level security of every partition and chunk brought in line with its table's. Scheduled
-- with pg_cron where it is installed, otherwise run by workers (`pgmlops worker` calls it under
-- an advisory lock every few minutes). Returns what it did, per table:
-- {"<table>": {"created", "dropped", "secured"}, "jobs_purged", "deployments"} (active canaries
-- checked: ml_private.check_deployments), "window_counts" (predictions rolled up for fast-mode
-- drift: ml_private.rollup_window_counts), "monitoring" (due monitoring schedules run:
-- ml_private.run_due_monitoring), "retraining" (shadows judged and promoted champions watched:
-- ml_private.check_retraining_online), or {"skipped"} when another
-- session is running it. Security definer, so the role it is granted to can run it.
-- Callers: service_role (and the owner, from pg_cron or a worker).
create or replace function ml_private.run_maintenance() returns jsonb
language plpgsql security definer
set search_path = ''
as $$
declare
    v_t      record;
    v_report jsonb := '{}';
    v_purged int;
    v_deployments jsonb;
    v_monitoring jsonb;
    v_learning   jsonb;
    v_rolled_up bigint;
    v_retraining jsonb;
begin
    -- One maintainer at a time across cron and workers; others return at once.
    if not pg_try_advisory_xact_lock(hashtext('pgmlops.maintenance')) then
        return jsonb_build_object('skipped', 'another session is running maintenance');
    end if;
    for v_t in select table_name from ml_private.time_partitioned_tables order by table_name loop
        v_report := v_report || jsonb_build_object(v_t.table_name, jsonb_build_object(
            'created', ml_private.ensure_time_partitions(v_t.table_name::regclass, now(), now()),
            'dropped', ml_private.drop_expired_partitions(v_t.table_name::regclass),
            'secured', ml_private.secure_partitions(v_t.table_name::regclass)));
    end loop;
    -- Finished jobs are kept 14 days (their events stay in ml.events for its own retention).
    if to_regprocedure('ml_private.purge_finished_jobs(interval)') is not null then
        execute 'select ml_private.purge_finished_jobs($1)'
            into v_purged using coalesce((select (value #>> '{}')::interval from ml_private.settings where key = 'job_retention'), interval '14 days');
        v_report := v_report || jsonb_build_object('jobs_purged', v_purged);
    end if;
    -- Active canaries: steps announced, abort rules evaluated (sql/scoring/deployments.sql,
    -- applied after this file).
    if to_regprocedure('ml_private.check_deployments()') is not null then
        execute 'select ml_private.check_deployments()' into v_deployments;
        v_report := v_report || jsonb_build_object('deployments', v_deployments);
    end if;
    -- Fast-mode drift counts: the predictions logged since each project's watermark binned into
    -- ml.window_counts (sql/monitoring/windows.sql), before any schedule's report reads them.
    if to_regprocedure('ml_private.rollup_window_counts(uuid)') is not null then
        execute 'select ml_private.rollup_window_counts(null)' into v_rolled_up;
        v_report := v_report || jsonb_build_object('window_counts', v_rolled_up);
    end if;
    -- Monitoring schedules of the workers' backend whose tick has come (sql/monitoring/schedules.sql).
    if to_regprocedure('ml_private.run_due_monitoring()') is not null then
        execute 'select ml_private.run_due_monitoring()' into v_monitoring;
        v_report := v_report || jsonb_build_object('monitoring', v_monitoring);
    end if;
    -- The online end of the retraining loop: shadows of retraining cycles judged, promoted
    -- champions rolled back past their bound (sql/retraining/online.sql).
    if to_regprocedure('ml_private.check_retraining_online()') is not null then
        execute 'select ml_private.check_retraining_online()' into v_retraining;
        v_report := v_report || jsonb_build_object('retraining', v_retraining);
    end if;
    -- Continuous learning whose schedule is due: learn jobs enqueued (sql/retraining/learn.sql).
    if to_regprocedure('ml_private.run_due_learning()') is not null then
        execute 'select ml_private.run_due_learning()' into v_learning;
        v_report := v_report || jsonb_build_object('learning', v_learning);
    end if;
    update ml_private.settings set value = to_jsonb(now()), updated_at = now() where key = 'last_maintenance';
    if not found then
        insert into ml_private.settings (key, value) values ('last_maintenance', to_jsonb(now()));
    end if;
    return v_report;
end
$$;

-- ml.run_maintenance() returns jsonb
-- The periodic upkeep (ml_private.run_maintenance) as a call of the SQL API: partitions ahead of
-- time, retention, every partition's row-level security, finished jobs purged. Workers call it
-- every few minutes when pg_cron is absent. Returns what it did per table, or {"skipped"} when
-- another session is running it. Raises nothing of its own. Callers: service_role (workers);
-- the owner.
create or replace function ml.run_maintenance() returns jsonb
language sql volatile
set search_path = ''
as $$
    select ml_private.run_maintenance()
$$;

------------------------------------------------------------------------------------------------
-- Row-level security of partitions and chunks
------------------------------------------------------------------------------------------------

-- ml_private.secure_partitions(p_table regclass, p_new_only boolean default false) returns int
-- Gives every partition of p_table (native partitions, or a hypertable's chunks) p_table's
-- row-level security: RLS enabled, forced on native partitions (TimescaleDB refuses FORCE on a
-- chunk; it binds only the owner, who bypasses RLS anyway), and exactly p_table's policies (same
-- names, commands, roles and expressions; a policy p_table does not have is dropped). Only what
-- differs is changed, so a call that finds everything in order takes no lock. With p_new_only,
-- only partitions without RLS yet are looked at (those made since the last call). Returns how
-- many partitions it changed; 0 for a table without partitions. Called by the functions that
-- make partitions, ml_private.enable_tenant_rls, maintenance and migrations (owner only).
create or replace function ml_private.secure_partitions(p_table regclass, p_new_only boolean default false)
returns int
language plpgsql
set search_path = ''
as $$
declare
    v_part    record;
    v_policy  record;
    v_changed int := 0;
    v_touched boolean;
begin
    for v_part in
        select c.oid, c.oid::regclass as rel, c.relrowsecurity, c.relforcerowsecurity, c.relispartition
        from pg_inherits i join pg_class c on c.oid = i.inhrelid
        where i.inhparent = p_table and (not p_new_only or not c.relrowsecurity)
        order by c.oid
    loop
        v_touched := false;
        if not v_part.relrowsecurity then
            execute format('alter table %s enable row level security', v_part.rel);
            v_touched := true;
        end if;
        if v_part.relispartition and not v_part.relforcerowsecurity then
            execute format('alter table %s force row level security', v_part.rel);
            v_touched := true;
        end if;
        for v_policy in
            with parent as (
                select p.polname, p.polcmd, p.polpermissive, p.polroles,
                       pg_get_expr(p.polqual, p.polrelid) as qual, pg_get_expr(p.polwithcheck, p.polrelid) as with_check
                from pg_policy p where p.polrelid = p_table
            ), child as (
                select p.polname, p.polcmd, p.polpermissive, p.polroles,
                       pg_get_expr(p.polqual, p.polrelid) as qual, pg_get_expr(p.polwithcheck, p.polrelid) as with_check
                from pg_policy p where p.polrelid = v_part.oid
            )
            select 'drop' as action, x.* from (select * from child except select * from parent) x
            union all
            select 'create', y.* from (select * from parent except select * from child) y
            order by 1 desc, 2  -- drops first: a changed policy keeps its name
        loop
            if v_policy.action = 'drop' then
                execute format('drop policy %I on %s', v_policy.polname, v_part.rel);
            else
                execute format('create policy %I on %s as %s for %s to %s%s%s',
                    v_policy.polname, v_part.rel,
                    case when v_policy.polpermissive then 'permissive' else 'restrictive' end,
                    case v_policy.polcmd when 'r' then 'select' when 'a' then 'insert' when 'w' then 'update'
                                         when 'd' then 'delete' else 'all' end,
                    (select string_agg(case when r.role = 0 then 'public' else quote_ident(a.rolname) end, ', ' order by r.n)
                     from unnest(v_policy.polroles) with ordinality r (role, n) left join pg_roles a on a.oid = r.role),
                    case when v_policy.qual is not null then format(' using (%s)', v_policy.qual) else '' end,
                    case when v_policy.with_check is not null then format(' with check (%s)', v_policy.with_check) else '' end);
            end if;
            v_touched := true;
        end loop;
        if v_touched then
            v_changed := v_changed + 1;
        end if;
    end loop;
    return v_changed;
end
$$;

-- ml_private.note_new_partitions() (statement trigger after insert or update on a hypertable)
-- TimescaleDB makes a chunk in the middle of the statement that writes its first row, without
-- the hypertable's row-level security (timescale/timescaledb#7830), and the chunk cannot be
-- altered until that statement ends. So when the hypertable has a chunk without RLS, this queues
-- a row in ml_private.partition_checks, whose deferred constraint trigger
-- (ml_private.secure_new_partitions) secures the chunk at commit, before any other session can
-- see it.
-- Cost: every ml.predict pays it, so it must not grow with the chunk count (looking at every
-- chunk cost 0.13 ms a call with the 90 daily chunks of ml.predictions' retention; now 0.02 ms,
-- the trigger's firing included). The session remembers, per hypertable, the largest chunk id
-- (TimescaleDB numbers chunks from one sequence, across hypertables) it has checked, in the
-- setting pgmlops.chunks_checked_<table oid>; a statement reads the newest chunk id (one probe of
-- the chunk catalog's primary key) and looks at the chunks numbered above the remembered one
-- only when there are some. The first statement of a session on a table checks all its chunks. This finds every chunk this
-- session's statements make (each is numbered above every chunk that existed before it); a chunk
-- another session makes is secured by that session's own trigger before it commits. The setting
-- is undone with the (sub)transaction that set it, as are the chunks and the queued row; RESET
-- ALL or DISCARD ALL only make the next statement check every chunk. Whoever can change a
-- setting of the session can make it skip its own new chunks: they stay in schema ml_chunks,
-- which no client role may use, until ml_private.run_maintenance secures them.
create or replace function ml_private.note_new_partitions() returns trigger
language plpgsql security definer
set search_path = ''
as $$
declare
    v_setting text := 'pgmlops.chunks_checked_' || tg_relid::bigint;
    v_checked int := nullif(current_setting(v_setting, true), '')::int;
    v_newest int;
    v_unsecured boolean;
begin
    -- The newest chunk number first (one probe of the chunk catalog's primary key): a chunk
    -- numbered below it that the check below misses is not visible yet, so another session made
    -- it and secures it.
    select max(k.id) into v_newest from _timescaledb_catalog.chunk k;
    if v_newest is null or v_newest <= v_checked then
        return null;  -- no chunk since this session's last check: the usual case
    end if;
    if v_checked is null then
        v_unsecured := exists (select 1 from pg_inherits i join pg_class c on c.oid = i.inhrelid
                               where i.inhparent = tg_relid and not c.relrowsecurity);
    else
        v_unsecured := exists (select 1 from _timescaledb_catalog.chunk k
                               join pg_namespace n on n.nspname = k.schema_name
                               join pg_class c on c.relnamespace = n.oid and c.relname = k.table_name
                               join pg_inherits i on i.inhrelid = c.oid and i.inhparent = tg_relid
                               where k.id > v_checked and not c.relrowsecurity);
    end if;
    if v_unsecured then
        insert into ml_private.partition_checks (table_oid) values (tg_relid) on conflict do nothing;
    end if;
    perform set_config(v_setting, v_newest::text, false);
    return null;
end
$$;

-- ml_private.secure_new_partitions() (deferred constraint trigger on ml_private.partition_checks)
-- At commit of a transaction that made chunks: secures them (ml_private.secure_partitions with
-- p_new_only) and removes the queued row.
create or replace function ml_private.secure_new_partitions() returns trigger
language plpgsql security definer
set search_path = ''
as $$
begin
    perform ml_private.secure_partitions(new.table_oid::regclass, true);
    delete from ml_private.partition_checks where table_oid = new.table_oid;
    return null;
end
$$;

------------------------------------------------------------------------------------------------
-- Grants
------------------------------------------------------------------------------------------------

grant execute on function
    ml.capabilities()
to anon, authenticated, service_role;
grant execute on function
    ml_private.run_maintenance(),
    ml.run_maintenance()
to service_role;
