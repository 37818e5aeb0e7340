-- pgmlops: row-level security, structure (pgTAP)
--
-- Generic over every tenant-owned table: those registered in ml_private.tenant_tables (by
-- ml_private.enable_tenant_rls) plus ml.tenants (keyed by id).
--
-- Adding a tenant table: nothing to do here. Register it with ml_private.enable_tenant_rls() in
-- its migration and it is checked by this file as it stands; its behaviour with data is checked
-- by rls_tenants.test.sql (add a seed there) and tests/test_rls.py (add a seeder to
-- tests/rls_seed.py).
--
-- Run: pg_prove -d <db> supabase/tests/*.sql   (on a migrated database with `create extension pgtap`),
-- or `supabase test db`. Helpers live in schema pgmlops_tests, made and dropped with the
-- transaction (not `tests`, which Supabase's test helpers from database.dev may already use).

begin;
select * from no_plan();

create schema pgmlops_tests;

-- Every tenant-owned table with the column that names its tenant, in a stable order.
create function pgmlops_tests.tenant_tables()
returns table (tbl regclass, key_col name, client_writable boolean)
language sql stable
as $$
    select x.tbl, x.key_col, x.client_writable
    from (
        select 'ml.tenants'::regclass as tbl, 'id'::name as key_col, false as client_writable
        union all
        select to_regclass(t.table_name), 'tenant_id'::name, t.client_writable
        from ml_private.tenant_tables t
    ) x
    where x.tbl is not null
    order by x.tbl::text
$$;

-- The table privileges p_role holds on p_table (directly, through PUBLIC or through a role it
-- inherits), plus column privileges it holds without the table privilege ('column SELECT').
create function pgmlops_tests.privileges_of(p_role text, p_table regclass) returns text[]
language sql stable
as $$
    select coalesce(array_agg(p order by p), '{}')
    from (
        select p from unnest(array['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) p
        where has_table_privilege(p_role, p_table, p)
        union all
        select 'column ' || p from unnest(array['SELECT', 'INSERT', 'UPDATE', 'REFERENCES']) p
        where has_any_column_privilege(p_role, p_table, p) and not has_table_privilege(p_role, p_table, p)
    ) x
$$;

-- Partitions and TimescaleDB chunks of p_table, at any depth. Querying one directly skips the
-- parent's policies, so clients must not reach them: no privileges, or no usage on their schema.
create function pgmlops_tests.descendants(p_table regclass) returns setof regclass
language sql stable
as $$
    with recursive d (oid) as (
        select i.inhrelid from pg_inherits i where i.inhparent = p_table
        union
        select i.inhrelid from pg_inherits i join d on i.inhparent = d.oid
    )
    select d.oid::regclass from d order by d.oid::regclass::text
$$;

-- The schema TimescaleDB puts p_table's chunks in, or NULL when p_table is not a hypertable.
create function pgmlops_tests.chunk_schema(p_table regclass) returns name
language plpgsql stable
as $$
declare
    v_schema name;
begin
    if to_regclass('_timescaledb_catalog.hypertable') is null then
        return null;
    end if;
    execute 'select h.associated_schema_name from _timescaledb_catalog.hypertable h
             join pg_class c on c.relname = h.table_name
             join pg_namespace n on n.oid = c.relnamespace and n.nspname = h.schema_name
             where c.oid = $1'
        into v_schema using p_table;
    return v_schema;
end
$$;

------------------------------------------------------------------------------------------------
-- A feature group version: its two tables (made per version in ml_features, docs/features.md)
-- are tenant tables, checked below like the others
------------------------------------------------------------------------------------------------

do $$
begin
    perform set_config('pgmlops.tenant_id', ml.create_tenant('rls structure')::text, true);
    perform ml.create_feature_group('rls_structure', 'customer', '{"spend": {"dtype": "float"}, "embedding": {"dtype": "vector(2)"}}');
    perform set_config('pgmlops.tenant_id', '', true);
end
$$;

select is(
    (select count(*) from pgmlops_tests.tenant_tables() t join ml.feature_groups g on t.tbl in (g.offline_table, g.online_table)
     where g.name = 'rls_structure'),
    2::bigint,
    'a feature group version''s offline and online tables are registered tenant tables');

select is(
    (select array_agg(c.oid::regclass::text order by c.oid::regclass::text)
     from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where n.nspname = 'ml_features' and c.relkind in ('r', 'p') and not c.relispartition
       and not exists (select 1 from ml.feature_groups g where c.oid in (g.offline_table, g.online_table))),
    null,
    'every table in schema ml_features is the offline or online table of a feature group version');

------------------------------------------------------------------------------------------------
-- The registry itself
------------------------------------------------------------------------------------------------

select is(
    (select array_agg(t.table_name order by t.table_name) from ml_private.tenant_tables t
     where to_regclass(t.table_name) is null),
    null,
    'every table registered in ml_private.tenant_tables exists');

select ok(
    (select array_agg(tbl::text) from pgmlops_tests.tenant_tables())
        @> array['ml.tenants', 'ml.tenant_members', 'ml.events', 'ml.jobs'],
    'the tenant tables include ml.tenants, ml.tenant_members, ml.events and ml.jobs');

-- A table in ml (or ml_features) with a tenant_id column that nobody registered would have no
-- policies at all (or whatever its author improvised): every one must go through
-- ml_private.enable_tenant_rls.
select is(
    (select array_agg(c.oid::regclass::text order by c.oid::regclass::text)
     from pg_class c
     join pg_namespace n on n.oid = c.relnamespace
     where n.nspname in ('ml', 'ml_features') and c.relkind in ('r', 'p') and not c.relispartition
       and exists (select 1 from pg_attribute a where a.attrelid = c.oid and a.attname = 'tenant_id' and not a.attisdropped)
       and not exists (select 1 from ml_private.tenant_tables t where to_regclass(t.table_name) = c.oid)),
    null,
    'every table in schemas ml and ml_features with a tenant_id column is registered in ml_private.tenant_tables');

------------------------------------------------------------------------------------------------
-- Per table
------------------------------------------------------------------------------------------------

create function pgmlops_tests.structure_checks() returns setof text
language plpgsql
as $$
declare
    r        record;
    v_anon   oid := 'anon'::regrole;
    v_auth   oid := 'authenticated'::regrole;
    v_child  regclass;
begin
    for r in select * from pgmlops_tests.tenant_tables() loop
        return next ok((select c.relrowsecurity from pg_class c where c.oid = r.tbl),
                       format('%s: row level security is enabled', r.tbl));
        return next ok((select c.relforcerowsecurity from pg_class c where c.oid = r.tbl),
                       format('%s: row level security is forced (applies to the owner too)', r.tbl));
        return next ok(exists (select 1 from pg_policy p where p.polrelid = r.tbl and v_auth = any (p.polroles)),
                       format('%s: has a policy for authenticated', r.tbl));
        return next is((select array_agg(p.polname::text order by p.polname) from pg_policy p
                        where p.polrelid = r.tbl and (0::oid = any (p.polroles) or v_anon = any (p.polroles))),
                       null,
                       format('%s: no policy applies to anon or PUBLIC', r.tbl));
        return next ok(exists (
                           select 1 from pg_index i
                           join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
                           where i.indrelid = r.tbl and a.attname = r.key_col),
                       format('%s: has an index whose first column is %s', r.tbl, r.key_col));
        return next ok(exists (
                           select 1 from pg_attribute a
                           where a.attrelid = r.tbl and a.attname = r.key_col and a.attnotnull
                             and a.atttypid = 'uuid'::regtype),
                       format('%s: %s is a non-null uuid', r.tbl, r.key_col));
        if r.tbl <> 'ml.tenants'::regclass then
            -- Either a foreign key that cascades, or (bulk tables without one) the statement
            -- trigger on ml.tenants that erases every registered table's rows of a deleted tenant.
            return next ok(exists (
                               select 1 from pg_constraint k
                               join pg_attribute a on a.attrelid = k.conrelid and a.attnum = k.conkey[1]
                               where k.conrelid = r.tbl and k.contype = 'f' and k.confrelid = 'ml.tenants'::regclass
                                 and cardinality(k.conkey) = 1 and a.attname = 'tenant_id' and k.confdeltype = 'c')
                           or exists (select 1 from pg_trigger g where g.tgrelid = 'ml.tenants'::regclass
                                      and g.tgname = 'tenants_erase_rows' and g.tgenabled <> 'D'),
                           format('%s: tenant_id references ml.tenants on delete cascade, or the tenant erasure trigger covers it', r.tbl));
        end if;

        return next is(pgmlops_tests.privileges_of('anon', r.tbl), '{}'::text[],
                       format('%s: anon holds no privileges', r.tbl));
        return next is(pgmlops_tests.privileges_of('public', r.tbl), '{}'::text[],
                       format('%s: PUBLIC holds no privileges', r.tbl));
        return next is(pgmlops_tests.privileges_of('authenticated', r.tbl),
                       case when r.client_writable then array['DELETE', 'INSERT', 'SELECT', 'UPDATE']
                            else array['SELECT'] end,
                       format('%s: authenticated holds exactly %s (no TRUNCATE, which would skip RLS)', r.tbl,
                              case when r.client_writable then 'SELECT, INSERT, UPDATE, DELETE' else 'SELECT' end));
        return next ok(has_table_privilege('service_role', r.tbl, 'select, insert, update, delete'),
                       format('%s: service_role may read and write', r.tbl));

        -- Partitions / chunks: no policies of their own, so clients must not reach them directly.
        for v_child in select * from pgmlops_tests.descendants(r.tbl) loop
            return next is(pgmlops_tests.privileges_of('anon', v_child), '{}'::text[],
                           format('%s (part of %s): anon holds no privileges', v_child, r.tbl));
            return next is(pgmlops_tests.privileges_of('public', v_child), '{}'::text[],
                           format('%s (part of %s): PUBLIC holds no privileges', v_child, r.tbl));
        end loop;
    end loop;
end
$$;

select * from pgmlops_tests.structure_checks();

-- TimescaleDB copies a hypertable's grants to each new chunk but not its row-level security
-- (timescale/timescaledb#7830): `authenticated` holds SELECT on every chunk. What keeps it out is
-- the chunk schema: ml_private.create_time_partitioned_table puts chunks in ml_chunks, on which
-- clients have no usage (queries on the hypertable still reach the chunks, through its policies).
-- That holds before any chunk exists, so it is checked on the schema; rls_tenants.test.sql names
-- real chunks.
select is(
    (select array_agg(format('%s (chunks of %s): %s', s.schema, t.tbl, r.role) order by t.tbl::text, r.role)
     from pgmlops_tests.tenant_tables() t
     cross join lateral (select pgmlops_tests.chunk_schema(t.tbl) as schema) s
     cross join (values ('public'), ('anon'), ('authenticated')) r (role)
     where s.schema is not null and has_schema_privilege(r.role, s.schema, 'usage')),
    null,
    'no client (PUBLIC, anon, authenticated) has usage on the schema holding a tenant hypertable''s chunks');

-- Native partitions get no grants; chunks keep the hypertable's, behind a schema clients cannot use.
select is(
    (select array_agg(format('%s (part of %s): %s', d, t.tbl, pgmlops_tests.privileges_of('authenticated', d)) order by d::text)
     from pgmlops_tests.tenant_tables() t, pgmlops_tests.descendants(t.tbl) d
     join pg_class c on c.oid = d
     where pgmlops_tests.privileges_of('authenticated', d) <> '{}'
       and has_schema_privilege('authenticated', c.relnamespace, 'usage')),
    null,
    'no partition or chunk of a tenant table is readable by authenticated directly');

------------------------------------------------------------------------------------------------
-- Other ways around the policies
------------------------------------------------------------------------------------------------

-- A view runs with its owner's rights unless security_invoker, and the owner bypasses RLS.
select is(
    (select array_agg(c.oid::regclass::text order by c.oid::regclass::text)
     from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where n.nspname = 'ml' and c.relkind in ('v', 'm')
       and (has_table_privilege('anon', c.oid, 'select') or has_table_privilege('authenticated', c.oid, 'select'))
       and not (c.relkind = 'v' and coalesce(c.reloptions, '{}') && array['security_invoker=true', 'security_invoker=on', 'security_invoker=1'])),
    null,
    'every view in ml that clients may select is security_invoker (no materialized views)');

select is(
    (select array_agg(c.oid::regclass::text order by c.oid::regclass::text)
     from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where n.nspname = 'ml_private' and c.relkind in ('r', 'p', 'v', 'm', 'f')
       and (pgmlops_tests.privileges_of('anon', c.oid) <> '{}' or pgmlops_tests.privileges_of('authenticated', c.oid) <> '{}'
            or pgmlops_tests.privileges_of('public', c.oid) <> '{}')),
    null,
    'no relation in ml_private is granted to anon, authenticated or PUBLIC');

select ok(not has_schema_privilege('anon', 'ml_private', 'usage'), 'anon has no usage on schema ml_private');

select is(
    (select array_agg(p.oid::regprocedure::text order by p.oid::regprocedure::text)
     from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where n.nspname in ('ml', 'ml_private', 'auth') and p.prosecdef
       and not exists (select 1 from unnest(coalesce(p.proconfig, '{}')) s where s like 'search_path=%')),
    null,
    'every security-definer function in ml, ml_private and auth pins its search_path');

select is(
    (select array_agg(p.oid::regprocedure::text order by p.oid::regprocedure::text)
     from pg_proc p join pg_namespace n on n.oid = p.pronamespace join pg_roles o on o.oid = p.proowner
     where n.nspname in ('ml', 'ml_private') and p.prosecdef and not (o.rolsuper or o.rolbypassrls)),
    null,
    'every security-definer function in ml and ml_private is owned by a role that bypasses RLS');

-- bootstrap.sql means to stop PUBLIC from executing functions in ml and ml_private with
-- `alter default privileges in schema ... revoke execute on functions from public`, but
-- per-schema default privileges can only add to the global ones: the statement is a no-op, so
-- every function in both schemas is executable by PUBLIC (hence anon).
-- ALTER DEFAULT PRIVILEGES IN SCHEMA cannot revoke PUBLIC's EXECUTE: each migration revokes it explicitly.
select is(
    (select array_agg(p.oid::regprocedure::text order by p.oid::regprocedure::text)
     from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where n.nspname in ('ml', 'ml_private') and has_function_privilege('public', p.oid, 'execute')),
    null,
    'no function in ml or ml_private is executable by PUBLIC');

------------------------------------------------------------------------------------------------
-- Roles
------------------------------------------------------------------------------------------------

select ok(not rolbypassrls and not rolsuper, format('role %s neither bypasses RLS nor is a superuser', rolname))
from pg_roles where rolname in ('anon', 'authenticated') order by rolname;
select ok((select rolbypassrls from pg_roles where rolname = 'service_role'), 'service_role bypasses RLS');

select * from finish();
rollback;
