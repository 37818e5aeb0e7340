-- pgmlops: tenants, membership and row-level security
--
-- A user's tenants come from ml.tenant_members (user ids are Supabase auth user ids, the `sub`
-- claim). A service caller (the service_role, or a privileged direct connection such as a worker)
-- acts for the tenant named by the `pgmlops.tenant_id` setting or the JWT's
-- app_metadata.tenant_id.
--
-- Every tenant-owned table is registered with ml_private.enable_tenant_rls(), which enables and
-- forces RLS, creates the policies, the grants and an index led by tenant_id (the tables
-- themselves, ml.tenants and ml.tenant_members, are made by the versioned migrations). Clients
-- read tenant tables directly (RLS filters them); writes go through ml.* functions unless a table
-- is registered as client-writable. The end of this file re-applies the policies and grants to
-- every registered table, so a change to enable_tenant_rls reaches the tables already there.

------------------------------------------------------------------------------------------------
-- Caller identity
------------------------------------------------------------------------------------------------

-- These three are SQL-standard bodies (RETURN ...) without a SET clause, so PostgreSQL inlines
-- them into the policies and functions that call them (a SET clause, such as search_path, keeps
-- a function from being inlined and makes every call a function call with its own setup: 0.09
-- ms of each ml.predict). The body is parsed and resolved when the function is created, so no
-- search path can change what it calls.

-- ml_private.jwt_claims()
-- The caller's JWT claims as jsonb; '{}' when there are none (the setting unset or empty).
-- Raises 22P02 when request.jwt.claims is set to something that is not JSON.
create or replace function ml_private.jwt_claims() returns jsonb
language sql stable
return coalesce(nullif(current_setting('request.jwt.claims', true), '')::jsonb, '{}'::jsonb);

-- ml_private.caller_user_id()
-- The end user behind the call (JWT `sub`), or NULL for service callers. Raises 22P02 when the
-- claims are not JSON or `sub` is not a uuid.
create or replace function ml_private.caller_user_id() returns uuid
language sql stable
return nullif(ml_private.jwt_claims() ->> 'sub', '')::uuid;

-- ml_private.caller_is_service()
-- True when the caller is not an end user: a JWT whose role is service_role, or a direct
-- connection with no JWT at all (workers, migrations, psql as the owner). Usable inside
-- security-definer functions because it reads only the request settings, never current_user;
-- anon and authenticated callers always carry claims (PostgREST sets them), and neither role
-- can log in directly.
create or replace function ml_private.caller_is_service() returns boolean
language sql stable
return case
        when ml_private.caller_user_id() is not null then false
        else coalesce(ml_private.jwt_claims() ->> 'role', 'service_role') = 'service_role'
    end;

-- ml_private.current_tenant_ids()
-- The tenants whose rows the calling user may read (every membership). Security definer: it
-- reads ml.tenant_members past RLS, but only the caller's own memberships. Used by the policies
-- as `(select ml_private.current_tenant_ids())` so it runs once per statement.
create or replace function ml_private.current_tenant_ids() returns uuid[]
language sql stable security definer
set search_path = ''
as $$
    select coalesce(array_agg(m.tenant_id), '{}')
    from ml.tenant_members m
    where m.user_id = ml_private.caller_user_id()
$$;

-- ml_private.writable_tenant_ids()
-- The tenants in which the calling user may write: roles owner, admin and ml_engineer.
create or replace function ml_private.writable_tenant_ids() returns uuid[]
language sql stable security definer
set search_path = ''
as $$
    select coalesce(array_agg(m.tenant_id), '{}')
    from ml.tenant_members m
    where m.user_id = ml_private.caller_user_id()
      and m.role in ('owner', 'admin', 'ml_engineer')
$$;

-- ml_private.acting_tenant_id(p_write boolean default true, p_required_roles text[] default null)
-- The tenant a call acts for. Order: the `pgmlops.tenant_id` setting, then the JWT's
-- app_metadata.tenant_id, then (for a user) the only tenant the user belongs to.
-- Users must be members of it; with p_write, with a role that may write; with
-- p_required_roles, with one of those roles. Service callers may act for any existing tenant.
-- Raises: 42501 not signed in / not a member / role too weak; 22023 no tenant or an ambiguous
-- one; 22P02 a tenant id that is not a uuid; P0002 no such tenant.
create or replace function ml_private.acting_tenant_id(p_write boolean default true, p_required_roles text[] default null)
returns uuid
language plpgsql stable security definer
set search_path = ''
as $$
declare
    v_raw    text := coalesce(nullif(current_setting('pgmlops.tenant_id', true), ''),
                              nullif(ml_private.jwt_claims() #>> '{app_metadata,tenant_id}', ''));
    v_tenant uuid;
    v_user   uuid := ml_private.caller_user_id();
    v_role   text;
    v_count  int;
begin
    if v_raw is not null then
        begin
            v_tenant := v_raw::uuid;
        exception when invalid_text_representation then
            raise exception 'tenant_id % is not a uuid', quote_literal(v_raw)
                using errcode = '22P02', hint = 'Set pgmlops.tenant_id or app_metadata.tenant_id to a tenant''s uuid.';
        end;
    end if;

    if ml_private.caller_is_service() then
        if v_tenant is null then
            raise exception 'no tenant in context: a service caller must name the tenant it acts for'
                using errcode = '22023',
                      hint = 'set pgmlops.tenant_id = ''<uuid>'', or put tenant_id in the JWT''s app_metadata.';
        end if;
        if not exists (select 1 from ml.tenants t where t.id = v_tenant) then
            raise exception 'tenant % does not exist', v_tenant using errcode = 'P0002';
        end if;
        return v_tenant;
    end if;

    if v_user is null then
        raise exception 'not signed in: this call needs an authenticated user or the service role'
            using errcode = '42501';
    end if;

    if v_tenant is null then
        select count(*), min(m.tenant_id::text)::uuid into v_count, v_tenant
        from ml.tenant_members m where m.user_id = v_user;
        if v_count = 0 then
            raise exception 'user % belongs to no tenant', v_user
                using errcode = '42501', hint = 'Create one with ml.create_tenant(name) or ask an owner to add you.';
        elsif v_count > 1 then
            raise exception 'user % belongs to % tenants; name the one to act for', v_user, v_count
                using errcode = '22023',
                      hint = 'set pgmlops.tenant_id = ''<uuid>'', or put tenant_id in the JWT''s app_metadata.';
        end if;
    end if;

    select m.role into v_role from ml.tenant_members m where m.tenant_id = v_tenant and m.user_id = v_user;
    if v_role is null then
        raise exception 'user % is not a member of tenant %', v_user, v_tenant using errcode = '42501';
    end if;
    if p_required_roles is not null and not (v_role = any (p_required_roles)) then
        raise exception 'role % in tenant % may not do this (needs one of: %)',
            v_role, v_tenant, array_to_string(p_required_roles, ', ')
            using errcode = '42501';
    end if;
    if p_write and v_role = 'viewer' then
        raise exception 'role viewer in tenant % may read but not write (needs owner, admin or ml_engineer)', v_tenant
            using errcode = '42501';
    end if;
    return v_tenant;
end
$$;

-- ml_private.assert_tenant_access(p_tenant uuid, p_write boolean default true)
-- Raises unless the caller may act on rows of p_tenant: service callers always may; users need
-- membership (and a writing role when p_write). Raises 42501.
create or replace function ml_private.assert_tenant_access(p_tenant uuid, p_write boolean default true)
returns void
language plpgsql stable security definer
set search_path = ''
as $$
begin
    if ml_private.caller_is_service() then
        return;
    end if;
    if not (p_tenant = any (case when p_write then ml_private.writable_tenant_ids()
                                 else ml_private.current_tenant_ids() end)) then
        raise exception 'no % access to tenant %', case when p_write then 'write' else 'read' end, p_tenant
            using errcode = '42501';
    end if;
end
$$;

------------------------------------------------------------------------------------------------
-- Registering tenant-owned tables
------------------------------------------------------------------------------------------------

-- ml_private.enable_tenant_rls(p_table regclass, p_client_writable boolean default false)
-- Makes p_table (which must have a uuid column tenant_id) a tenant-owned table:
--   * RLS enabled and forced;
--   * policy `<table>_tenant_read` to authenticated: rows of the caller's tenants;
--   * when p_client_writable, insert/update/delete policies to authenticated limited to the tenants
--     where the caller may write (update checks the new row too, so no row moves out);
--   * grants: nothing to public or anon; select (plus writes when p_client_writable) to
--     authenticated; all to service_role;
--   * an index led by tenant_id when none exists;
--   * its partitions (or a hypertable's chunks) get the same RLS and policies
--     (ml_private.secure_partitions), no grants.
-- Idempotent. Raises 42703 when the table has no tenant_id column.
create or replace function ml_private.enable_tenant_rls(p_table regclass, p_client_writable boolean default false)
returns void
language plpgsql
set search_path = ''
as $$
declare
    v_schema text;
    v_name   text;
    v_policy record;
begin
    select n.nspname, c.relname into v_schema, v_name
    from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = p_table;

    if not exists (
        select 1 from pg_attribute
        where attrelid = p_table and attname = 'tenant_id' and not attisdropped and atttypid = 'uuid'::regtype
    ) then
        raise exception 'table %.% has no uuid column tenant_id', v_schema, v_name using errcode = '42703';
    end if;

    execute format('alter table %I.%I enable row level security', v_schema, v_name);
    execute format('alter table %I.%I force row level security', v_schema, v_name);

    for v_policy in
        select policyname from pg_policies where schemaname = v_schema and tablename = v_name
          and policyname like v_name || '_tenant_%'
    loop
        execute format('drop policy %I on %I.%I', v_policy.policyname, v_schema, v_name);
    end loop;

    execute format(
        'create policy %I on %I.%I for select to authenticated
           using (tenant_id = any ((select ml_private.current_tenant_ids())::uuid[]))',
        v_name || '_tenant_read', v_schema, v_name);

    execute format('revoke all on %I.%I from public, anon, authenticated', v_schema, v_name);
    execute format('grant select on %I.%I to authenticated', v_schema, v_name);
    execute format('grant all on %I.%I to service_role', v_schema, v_name);

    if p_client_writable then
        execute format(
            'create policy %I on %I.%I for insert to authenticated
               with check (tenant_id = any ((select ml_private.writable_tenant_ids())::uuid[]))',
            v_name || '_tenant_insert', v_schema, v_name);
        execute format(
            'create policy %I on %I.%I for update to authenticated
               using (tenant_id = any ((select ml_private.writable_tenant_ids())::uuid[]))
               with check (tenant_id = any ((select ml_private.writable_tenant_ids())::uuid[]))',
            v_name || '_tenant_update', v_schema, v_name);
        execute format(
            'create policy %I on %I.%I for delete to authenticated
               using (tenant_id = any ((select ml_private.writable_tenant_ids())::uuid[]))',
            v_name || '_tenant_delete', v_schema, v_name);
        execute format('grant insert, update, delete on %I.%I to authenticated', v_schema, v_name);
    end if;

    if not exists (
        select 1 from pg_index i
        join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
        where i.indrelid = p_table and a.attname = 'tenant_id'
    ) then
        execute format('create index %I on %I.%I (tenant_id)', v_name || '_tenant_idx', v_schema, v_name);
    end if;

    perform ml_private.secure_partitions(p_table);

    insert into ml_private.tenant_tables (table_name, client_writable)
    values (p_table::text, p_client_writable)
    on conflict (table_name) do update set client_writable = excluded.client_writable;
end
$$;

------------------------------------------------------------------------------------------------
-- RLS on the tenant tables themselves
------------------------------------------------------------------------------------------------

drop policy if exists tenants_member_read on ml.tenants;
create policy tenants_member_read on ml.tenants for select to authenticated
    using (id = any ((select ml_private.current_tenant_ids())::uuid[]));

revoke all on ml.tenants from public, anon, authenticated;
grant select on ml.tenants to authenticated;
grant all on ml.tenants to service_role;

------------------------------------------------------------------------------------------------
-- API
------------------------------------------------------------------------------------------------

-- ml.create_tenant(name text, owner uuid default null) returns uuid
-- Creates a tenant. A signed-in user becomes its owner (p_owner must be NULL or themselves); a
-- service caller may name the owner or create it with no members.
-- Raises: 22023 blank or over-long name; 42501 anon, or a user naming another owner.
create or replace function ml.create_tenant(name text, owner uuid default null) returns uuid
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_user   uuid := ml_private.caller_user_id();
    v_owner  uuid := owner;
    v_tenant uuid;
begin
    if name is null or length(btrim(name)) not between 1 and 200 then
        raise exception 'name: must be 1 to 200 characters, not blank' using errcode = '22023';
    end if;
    if not ml_private.caller_is_service() then
        if v_user is null then
            raise exception 'not signed in: only users and the service role create tenants' using errcode = '42501';
        end if;
        if v_owner is not null and v_owner <> v_user then
            raise exception 'owner: a user can only create a tenant owned by themselves' using errcode = '42501';
        end if;
        v_owner := v_user;
    end if;

    insert into ml.tenants (name) values (btrim(name)) returning id into v_tenant;
    if v_owner is not null then
        insert into ml.tenant_members (tenant_id, user_id, role) values (v_tenant, v_owner, 'owner');
    end if;
    return v_tenant;
end
$$;

-- ml.add_tenant_member(tenant uuid, user_id uuid, role text) returns void
-- Adds a member or changes a member's role. Owners manage every role; admins manage every role
-- but owner. Raises: 22023 unknown role; 42501 caller may not manage members; P0002 no tenant.
create or replace function ml.add_tenant_member(tenant uuid, user_id uuid, role text) returns void
language plpgsql volatile security definer
set search_path = ''
as $$
#variable_conflict use_column
declare
    v_caller_role text;
begin
    if role is null or role not in ('owner', 'admin', 'ml_engineer', 'viewer') then
        raise exception 'role: must be one of owner, admin, ml_engineer, viewer (got %)', coalesce(quote_literal(role), 'NULL')
            using errcode = '22023';
    end if;
    if user_id is null then
        raise exception 'user_id: must not be NULL' using errcode = '22023';
    end if;
    if not exists (select 1 from ml.tenants t where t.id = tenant) then
        raise exception 'tenant % does not exist', tenant using errcode = 'P0002';
    end if;
    if not ml_private.caller_is_service() then
        select m.role into v_caller_role from ml.tenant_members m
        where m.tenant_id = tenant and m.user_id = ml_private.caller_user_id();
        if v_caller_role is null or v_caller_role not in ('owner', 'admin') then
            raise exception 'only owners and admins of tenant % manage its members', tenant using errcode = '42501';
        end if;
        if v_caller_role = 'admin' and (role = 'owner' or exists (
            select 1 from ml.tenant_members m where m.tenant_id = tenant and m.user_id = add_tenant_member.user_id and m.role = 'owner')) then
            raise exception 'an admin cannot grant or change the owner role' using errcode = '42501';
        end if;
    end if;
    insert into ml.tenant_members as m (tenant_id, user_id, role)
    values (add_tenant_member.tenant, add_tenant_member.user_id, add_tenant_member.role)
    on conflict (tenant_id, user_id) do update set role = excluded.role;
end
$$;

-- ml.remove_tenant_member(tenant uuid, user_id uuid) returns boolean
-- Removes a membership; true when one was removed. Same rights as ml.add_tenant_member; the last
-- owner cannot be removed. Raises 42501, 55000 (last owner).
create or replace function ml.remove_tenant_member(tenant uuid, user_id uuid) returns boolean
language plpgsql volatile security definer
set search_path = ''
as $$
#variable_conflict use_column
declare
    v_caller_role text;
    v_target_role text;
begin
    select m.role into v_target_role from ml.tenant_members m
    where m.tenant_id = tenant and m.user_id = remove_tenant_member.user_id;
    if not ml_private.caller_is_service() then
        select m.role into v_caller_role from ml.tenant_members m
        where m.tenant_id = tenant and m.user_id = ml_private.caller_user_id();
        if v_caller_role is null or v_caller_role not in ('owner', 'admin')
           or (v_caller_role = 'admin' and v_target_role = 'owner') then
            raise exception 'only owners (and admins, for non-owners) of tenant % remove members', tenant
                using errcode = '42501';
        end if;
    end if;
    if v_target_role is null then
        return false;
    end if;
    if v_target_role = 'owner' and (select count(*) from ml.tenant_members m
                                    where m.tenant_id = tenant and m.role = 'owner') = 1 then
        raise exception 'cannot remove the last owner of tenant %', tenant using errcode = '55000';
    end if;
    delete from ml.tenant_members m where m.tenant_id = tenant and m.user_id = remove_tenant_member.user_id;
    return true;
end
$$;

-- ml.current_tenant() returns uuid
-- The tenant the caller acts for (see ml_private.acting_tenant_id), for reading: viewers too.
create or replace function ml.current_tenant() returns uuid
language sql stable
set search_path = ''
as $$
    select ml_private.acting_tenant_id(false)
$$;

------------------------------------------------------------------------------------------------
-- Erasing a tenant
------------------------------------------------------------------------------------------------

-- ml_private.erase_deleted_tenants(): deleting a tenant deletes its rows in every tenant table
-- that has no foreign key to ml.tenants (the bulk value tables, where a per-row key check would
-- slow ingestion down by a third). Tables with the key are erased by its ON DELETE CASCADE.
create or replace function ml_private.erase_deleted_tenants() returns trigger
language plpgsql security definer
set search_path = ''
as $$
declare
    v_table text;
begin
    for v_table in
        select t.table_name from ml_private.tenant_tables t
        where to_regclass(t.table_name) is not null
          and not exists (select 1 from pg_constraint k
                          where k.conrelid = to_regclass(t.table_name) and k.contype = 'f'
                            and k.confrelid = 'ml.tenants'::regclass and k.confdeltype = 'c')
    loop
        execute format('delete from %s x using deleted_tenants d where x.tenant_id = d.id', v_table);
    end loop;
    return null;
end
$$;

create or replace trigger tenants_erase_rows after delete on ml.tenants
    referencing old table as deleted_tenants
    for each statement execute function ml_private.erase_deleted_tenants();

------------------------------------------------------------------------------------------------
-- Grants
------------------------------------------------------------------------------------------------

grant execute on function
    ml_private.jwt_claims(),
    ml_private.caller_user_id(),
    ml_private.caller_is_service(),
    ml_private.current_tenant_ids(),
    ml_private.writable_tenant_ids(),
    ml_private.acting_tenant_id(boolean, text[]),
    ml.create_tenant(text, uuid),
    ml.add_tenant_member(uuid, uuid, text),
    ml.remove_tenant_member(uuid, uuid),
    ml.current_tenant()
to authenticated, service_role;

------------------------------------------------------------------------------------------------
-- Every registered table, again
------------------------------------------------------------------------------------------------

-- The policies and grants of the tenant tables come from ml_private.enable_tenant_rls above:
-- re-applying it to every registered table makes them (and their partitions' copies) follow it.
select ml_private.enable_tenant_rls(t.table_name::regclass, t.client_writable)
from ml_private.tenant_tables t
where to_regclass(t.table_name) is not null
order by t.table_name;
