-- pgmlops 0005: repeatable SQL, and row-level security on every partition
--
-- 1. ml_private.repeatable_files: the checksums of the sql/ files last applied (the repeatable
--    objects: functions, views, triggers, policies, grants; see docs/migrations.md).
-- 2. Defence in depth for time-partitioned tables. Native partitions (and TimescaleDB chunks) were
--    safe only because they carried no grants: an operator following the usual Supabase recipe
--    for an exposed schema (`grant select on all tables in schema ml to anon, authenticated`, plus
--    default privileges) made every partition readable with every tenant's rows. From here on each
--    partition has its table's row-level security: RLS enabled (forced on native partitions;
--    TimescaleDB refuses FORCE on a chunk) and the same policies. This revision secures the
--    partitions and chunks that exist; the functions that make partitions (sql/core/timeseries.sql)
--    secure new ones, and a hypertable's chunks, which TimescaleDB makes in the middle of an insert,
--    are secured at commit by a deferred trigger.
-- Every statement can run again (a downgrade keeps what it made; see the revision's script).

create table if not exists ml_private.repeatable_files (
    path       text primary key,
    checksum   text not null,
    revision   text not null,
    applied_at timestamptz not null default now()
);
comment on table ml_private.repeatable_files is 'The sql/ files last applied (repeatable objects) and their SHA-256; see docs/migrations.md';

create table if not exists ml_private.partition_checks (
    table_oid oid primary key
);
comment on table ml_private.partition_checks is 'Hypertables with chunks made in the current transaction, secured at commit (ml_private.secure_new_partitions)';

-- ml_private.secure_partitions(p_table regclass, p_new_only boolean default false) returns int
-- Gives every partition of p_table (native partitions, or a hypertable's chunks) p_table's
-- row-level security: RLS enabled, forced on native partitions, and exactly p_table's policies.
-- Only what differs is changed. With p_new_only, only partitions without RLS yet. Returns how many
-- partitions it changed.
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
            order by 1 desc, 2
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
-- Queues a check in ml_private.partition_checks when the hypertable has a chunk without RLS.
create or replace function ml_private.note_new_partitions() returns trigger
language plpgsql security definer
set search_path = ''
as $$
begin
    if exists (select 1 from pg_inherits i join pg_class c on c.oid = i.inhrelid
               where i.inhparent = tg_relid and not c.relrowsecurity) then
        insert into ml_private.partition_checks (table_oid) values (tg_relid) on conflict do nothing;
    end if;
    return null;
end
$$;

-- ml_private.secure_new_partitions() (deferred constraint trigger on ml_private.partition_checks)
-- At commit: secures the new chunks and removes the queued row.
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

-- A constraint trigger cannot be created "or replace".
drop trigger if exists partition_checks_secure on ml_private.partition_checks;
create constraint trigger partition_checks_secure after insert on ml_private.partition_checks
    deferrable initially deferred
    for each row execute function ml_private.secure_new_partitions();

do $$
declare
    v_t record;
begin
    for v_t in select table_name, mode from ml_private.time_partitioned_tables
               where to_regclass(table_name) is not null order by table_name loop
        if v_t.mode = 'hypertable' then
            execute format('create or replace trigger secure_new_chunks after insert or update on %s
                            for each statement execute function ml_private.note_new_partitions()', v_t.table_name);
        end if;
        perform ml_private.secure_partitions(v_t.table_name::regclass);
    end loop;
end
$$;

revoke execute on all functions in schema ml, ml_private from public;
