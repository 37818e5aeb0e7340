-- pgmlops 0007: typed storage per feature group version
--
-- Until 0006 every feature value was one jsonb document in ml.feature_values (all groups of all
-- tenants in one time-partitioned table) and the newest per entity one in ml.feature_online.
-- From here on each group version has two tables of its own in schema ml_features, with one
-- typed column per feature (float -> double precision, int -> bigint, bool -> boolean, text and
-- category -> text, timestamp -> timestamptz, vector(n) -> pgvector's vector(n), or double
-- precision[] where pgvector is not installed):
--   offline  every row ingested: tenant_id, entity_key, event_time, <features>, ingested_at,
--            ingestion_id; primary key (tenant_id, entity_key, event_time); time-partitioned
--            (a hypertable with TimescaleDB, native partitions without); RLS like every tenant table
--   online   the newest row per entity: the same columns, primary key (tenant_id, entity_key)
-- ml.feature_groups records both (offline_table, online_table). docs/features.md has the contract.
--
-- This revision makes the schema and the columns, defines frozen copies of the two functions
-- that make a version's tables (sql/features/groups.sql holds the current ones), makes the tables
-- of every existing group version, moves its values there, and drops ml.feature_values and
-- ml.feature_online.

create schema ml_features;
comment on schema ml_features is 'pgmlops: the typed offline and online tables of every feature group version (never exposed to PostgREST)';
revoke all on schema ml_features from public;
-- Clients reach the tables through ml.* functions; usage lets a signed-in member read their own
-- group's rows directly too (RLS, as on every tenant table).
grant usage on schema ml_features to authenticated, service_role;

alter table ml.feature_groups
    add column offline_table regclass,
    add column online_table  regclass;
comment on column ml.feature_groups.offline_table is 'The version''s offline table (ml_features): every row ingested, one typed column per feature';
comment on column ml.feature_groups.online_table is 'The version''s online table (ml_features): the newest row per entity';

-- A counter per tenant that moves whenever one of its feature group versions is created, changed
-- or deleted (a trigger in sql/features/groups.sql): ml.get_online_features keeps, per session,
-- how it resolved a list of features and reuses it while the counter stands still.
create table ml_private.feature_group_generations (
    tenant_id  uuid primary key references ml.tenants (id) on delete cascade,
    generation bigint not null default 1
);
comment on table ml_private.feature_group_generations is 'Per tenant, a counter that moves with every change of its feature group versions (resolution caches check it)';

------------------------------------------------------------------------------------------------
-- Frozen copies of the functions that make a version's tables (sql/features/groups.sql)
------------------------------------------------------------------------------------------------

-- ml_private.feature_sql_type(p_spec jsonb) returns text
-- The column type of a normalized feature spec.
create or replace function ml_private.feature_sql_type(p_spec jsonb) returns text
language plpgsql stable
set search_path = ''
as $$
declare
    v_vector_schema name;
begin
    case p_spec ->> 'dtype'
        when 'int' then return 'bigint';
        when 'float' then return 'double precision';
        when 'bool' then return 'boolean';
        when 'text', 'category' then return 'text';
        when 'timestamp' then return 'timestamptz';
        when 'vector' then
            select n.nspname into v_vector_schema
            from pg_extension e join pg_namespace n on n.oid = e.extnamespace where e.extname = 'vector';
            if v_vector_schema is null then
                return 'double precision[]';
            end if;
            return format('%I.vector(%s)', v_vector_schema, (p_spec ->> 'dim')::int);
        else
            raise exception 'feature %: unknown dtype %', p_spec ->> 'name', p_spec ->> 'dtype' using errcode = '22023';
    end case;
end
$$;

-- ml_private.create_feature_tables(p_group_id uuid) returns void
-- Makes the offline and online tables of a feature group version and records them in
-- ml.feature_groups.
create or replace function ml_private.create_feature_tables(p_group_id uuid) returns void
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_group   ml.feature_groups;
    v_name    text;
    v_columns text;
    v_mode    text;
begin
    select * into v_group from ml.feature_groups g where g.id = p_group_id;
    if v_group.id is null then
        raise exception 'feature group version % does not exist', p_group_id using errcode = 'P0002';
    end if;
    v_name := 'fg_' || replace(v_group.id::text, '-', '');
    select string_agg(format('%I %s%s', f ->> 'name', ml_private.feature_sql_type(f),
                             case when (f ->> 'nullable')::boolean then '' else ' not null' end), ', ' order by o)
    into v_columns
    from jsonb_array_elements(v_group.features) with ordinality x (f, o);
    v_columns := format('tenant_id uuid not null, entity_key text not null, event_time timestamptz not null, %s, '
                        'ingested_at timestamptz not null default now(), ingestion_id uuid, '
                        'constraint %I check (tenant_id = %L)',
                        v_columns, v_name || '_tenant', v_group.tenant_id);

    v_mode := ml_private.create_time_partitioned_table('ml_features', v_name,
        v_columns || format(', constraint %I primary key (tenant_id, entity_key, event_time)', v_name || '_pkey'),
        'event_time', interval '30 days');
    -- Upgrading from before 0005's sql/ was applied, create_time_partitioned_table is 0001's: give
    -- the hypertable the trigger that secures its chunks at commit, as the current one does.
    if v_mode = 'hypertable' and not exists (select 1 from pg_trigger t where t.tgrelid = format('ml_features.%I', v_name)::regclass
                                             and t.tgname = 'secure_new_chunks') then
        execute format('create trigger secure_new_chunks after insert or update on ml_features.%I
                        for each statement execute function ml_private.note_new_partitions()', v_name);
    end if;
    execute format('create table ml_features.%I (%s, constraint %I primary key (tenant_id, entity_key)) with (fillfactor = 90)',
                   v_name || '_online', replace(v_columns, v_name || '_tenant', v_name || '_online_tenant'), v_name || '_online_pkey');
    perform ml_private.enable_tenant_rls(format('ml_features.%I', v_name)::regclass);
    perform ml_private.enable_tenant_rls(format('ml_features.%I', v_name || '_online')::regclass);
    perform ml_private.secure_partitions(format('ml_features.%I', v_name)::regclass);

    update ml.feature_groups g
    set offline_table = format('ml_features.%I', v_name)::regclass,
        online_table = format('ml_features.%I', v_name || '_online')::regclass
    where g.id = v_group.id;
end
$$;

------------------------------------------------------------------------------------------------
-- Existing group versions: their tables and their values
------------------------------------------------------------------------------------------------

do $$
declare
    v_bad     record;
    v_group   ml.feature_groups;
    v_targets text;
    v_sources text;
    v_from    timestamptz;
    v_to      timestamptz;
begin
    -- The typed tables have columns event_time, ingested_at and ingestion_id beside the features;
    -- before this revision a feature could be named so (tenant_id and entity_key were reserved).
    select g.tenant_id, g.name, g.version, f ->> 'name' as feature into v_bad
    from ml.feature_groups g, jsonb_array_elements(g.features) f
    where f ->> 'name' in ('event_time', 'ingested_at', 'ingestion_id')
    order by g.tenant_id, g.name, g.version limit 1;
    if found then
        raise exception 'feature group % version % (tenant %) has a feature named %, a column of the typed storage',
            v_bad.name, v_bad.version, v_bad.tenant_id, quote_literal(v_bad.feature)
            using errcode = '22023',
                  hint = 'Create a new version of the group without that name, move the values there, delete the old version, then upgrade.';
    end if;

    for v_group in select * from ml.feature_groups order by tenant_id, name, version loop
        perform ml_private.create_feature_tables(v_group.id);
        select * into v_group from ml.feature_groups g where g.id = v_group.id;
        select string_agg(format('%I', f ->> 'name'), ', ' order by o), string_agg(format('r.%I', f ->> 'name'), ', ' order by o)
        into v_targets, v_sources
        from jsonb_array_elements(v_group.features) with ordinality x (f, o);

        -- Native partitions for the values' time range first (a no-op for hypertables).
        select min(v.event_time), max(v.event_time) into v_from, v_to
        from ml.feature_values v where v.tenant_id = v_group.tenant_id and v.group_id = v_group.id;
        if v_from is not null then
            perform ml_private.ensure_time_partitions(v_group.offline_table, v_from, v_to);
        end if;
        -- Every value was validated at ingestion, so it converts to its column's type.
        execute format(
            'insert into %s (tenant_id, entity_key, event_time, %s, ingested_at, ingestion_id)
             select v.tenant_id, v.entity_key, v.event_time, %s, v.ingested_at, v.ingestion_id
             from ml.feature_values v cross join lateral jsonb_populate_record(null::%s, v.values) r
             where v.tenant_id = $1 and v.group_id = $2',
            v_group.offline_table, v_targets, v_sources, v_group.offline_table)
            using v_group.tenant_id, v_group.id;
        execute format(
            'insert into %s (tenant_id, entity_key, event_time, %s, ingested_at, ingestion_id)
             select o.tenant_id, o.entity_key, o.event_time, %s, o.updated_at,
                    (select v.ingestion_id from ml.feature_values v
                     where v.tenant_id = o.tenant_id and v.group_id = o.group_id
                       and v.entity_key = o.entity_key and v.event_time = o.event_time)
             from ml.feature_online o cross join lateral jsonb_populate_record(null::%s, o.values) r
             where o.tenant_id = $1 and o.group_id = $2',
            v_group.online_table, v_targets, v_sources, v_group.online_table)
            using v_group.tenant_id, v_group.id;
    end loop;
end
$$;

------------------------------------------------------------------------------------------------
-- Deleting a group version drops its tables (frozen copy of sql/features/groups.sql's)
------------------------------------------------------------------------------------------------

-- ml_private.feature_groups_delete_values(): deleting a group version (or its tenant) drops its tables.
create or replace function ml_private.feature_groups_delete_values() returns trigger
language plpgsql security definer
set search_path = ''
as $$
declare
    v_table regclass;
begin
    for v_table in
        select t from old_rows o, unnest(array[o.online_table, o.offline_table]) t
        where exists (select 1 from pg_class c where c.oid = t)
    loop
        delete from ml_private.tenant_tables where table_name = v_table::text;
        delete from ml_private.time_partitioned_tables where table_name = v_table::text;
        execute format('drop table %s', v_table);
    end loop;
    return null;
end
$$;

------------------------------------------------------------------------------------------------
-- The jsonb tables go (their values are in the typed tables now)
------------------------------------------------------------------------------------------------

delete from ml_private.tenant_tables where table_name in ('ml.feature_values', 'ml.feature_online');
delete from ml_private.time_partitioned_tables where table_name = 'ml.feature_values';
delete from ml_private.partition_checks where table_oid = 'ml.feature_values'::regclass;
drop table ml.feature_values;  -- a hypertable's chunks go with it
drop table ml.feature_online;

------------------------------------------------------------------------------------------------
-- Functions sql/ no longer defines (ingestion writes the typed tables; they read them)
------------------------------------------------------------------------------------------------

drop function if exists ml_private.ingest_rows(ml.feature_groups, text, text, text, boolean, boolean);
drop function if exists ml_private.feature_staged_sql(jsonb, regclass, text, text, text, boolean);
drop function if exists ml_private.write_typed_rows(ml.feature_groups, uuid);
