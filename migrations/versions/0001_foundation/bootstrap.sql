-- pgmlops: bootstrap
--
-- Schemas, the Supabase roles and the `auth` shim. Runs first; everything else stands on it.
--   ml          tables and the SQL API (exposed to clients, e.g. through PostgREST)
--   ml_private  security-definer helpers and internal state (never exposed)
--
-- On a real Supabase project the roles and the auth schema already exist and are left alone.

------------------------------------------------------------------------------------------------
-- Preconditions
------------------------------------------------------------------------------------------------

-- Security-definer helpers read ml.tenant_members, whose row-level security is forced. They must
-- be owned by a role that bypasses RLS (a superuser, or Supabase's `postgres`, which has
-- BYPASSRLS); otherwise the membership policy would recurse into itself.
do $$
begin
    if not exists (
        select 1 from pg_roles where rolname = current_user and (rolsuper or rolbypassrls)
    ) then
        raise exception 'pgmlops must be installed by a role with SUPERUSER or BYPASSRLS (current_user = %)', current_user
            using errcode = '42501',
                  hint = 'Run the migration as the database owner (on Supabase: the postgres role).';
    end if;
end
$$;

------------------------------------------------------------------------------------------------
-- Schemas
------------------------------------------------------------------------------------------------

create schema if not exists ml;
create schema if not exists ml_private;
comment on schema ml is 'pgmlops: tables and the SQL API';
comment on schema ml_private is 'pgmlops: security-definer helpers and internal state; never expose this schema';

-- Functions are not executable by PUBLIC unless granted one by one below and in later files.
revoke all on schema ml, ml_private from public;
alter default privileges in schema ml revoke execute on functions from public;
alter default privileges in schema ml_private revoke execute on functions from public;

------------------------------------------------------------------------------------------------
-- Supabase roles (created only where absent: a Supabase project already has them)
------------------------------------------------------------------------------------------------

do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'anon') then
        create role anon nologin noinherit;
    end if;
    if not exists (select 1 from pg_roles where rolname = 'authenticated') then
        create role authenticated nologin noinherit;
    end if;
    if not exists (select 1 from pg_roles where rolname = 'service_role') then
        create role service_role nologin noinherit bypassrls;
    end if;
    -- The installing role must be able to `set role` to each, as PostgREST's authenticator does.
    execute format('grant anon, authenticated, service_role to %I', current_user);
end
$$;

grant usage on schema ml to anon, authenticated, service_role;
-- Policies call ml_private helpers, so the roles that run queries need usage on the schema;
-- what they may execute there is granted function by function.
grant usage on schema ml_private to authenticated, service_role;

------------------------------------------------------------------------------------------------
-- Settings pgmlops keeps for itself
------------------------------------------------------------------------------------------------

create table if not exists ml_private.settings (
    key        text primary key,
    value      jsonb not null,
    updated_at timestamptz not null default now()
);
comment on table ml_private.settings is 'pgmlops internal settings (installation facts, feature switches)';

------------------------------------------------------------------------------------------------
-- auth shim: only where the `auth` schema is absent (i.e. not on Supabase)
------------------------------------------------------------------------------------------------
-- Defined exactly as Supabase defines them: each reads the legacy per-claim setting
-- request.jwt.claim.<name> first, then the request.jwt.claims JSON that PostgREST sets.

do $$
begin
    if exists (select 1 from pg_namespace where nspname = 'auth') then
        insert into ml_private.settings (key, value) values ('auth_shim', 'false')
        on conflict (key) do nothing;
        return;
    end if;

    create schema auth;
    grant usage on schema auth to anon, authenticated, service_role;

    -- auth.uid(): the `sub` claim of the caller's JWT, or NULL.
    create function auth.uid() returns uuid
    language sql stable
    as $f$
        select coalesce(
            nullif(current_setting('request.jwt.claim.sub', true), ''),
            (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
        )::uuid
    $f$;

    -- auth.role(): the `role` claim of the caller's JWT, or NULL.
    create function auth.role() returns text
    language sql stable
    as $f$
        select coalesce(
            nullif(current_setting('request.jwt.claim.role', true), ''),
            (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
        )::text
    $f$;

    -- auth.jwt(): all claims of the caller's JWT as jsonb; NULL without claims.
    create function auth.jwt() returns jsonb
    language sql stable
    as $f$
        select coalesce(
            nullif(current_setting('request.jwt.claim', true), ''),
            nullif(current_setting('request.jwt.claims', true), '')
        )::jsonb
    $f$;

    grant execute on function auth.uid(), auth.role(), auth.jwt() to anon, authenticated, service_role;

    insert into ml_private.settings (key, value) values ('auth_shim', 'true')
    on conflict (key) do update set value = excluded.value, updated_at = now();
end
$$;
