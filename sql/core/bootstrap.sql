-- pgmlops: bootstrap — rights on the schemas, and the `auth` shim
--
-- The schemas, the Supabase roles and the `auth` shim are made once, by the foundation revision
-- (migrations/versions/0001_foundation/bootstrap.sql):
--   ml          tables and the SQL API (exposed to clients, e.g. through PostgREST)
--   ml_private  security-definer helpers and internal state (never exposed)
-- This file holds what is re-applied: who may use the schemas, and the shim's functions where
-- pgmlops made the shim (never on Supabase, whose `auth` schema is left alone).

------------------------------------------------------------------------------------------------
-- Schemas
------------------------------------------------------------------------------------------------

-- Functions are not executable by PUBLIC unless granted one by one in the other files.
revoke all on schema ml, ml_private from public;
alter default privileges in schema ml revoke execute on functions from public;
alter default privileges in schema ml_private revoke execute on functions from public;

grant usage on schema ml to anon, authenticated, service_role;
-- Policies call ml_private helpers, so the roles that run queries need usage on the schema;
-- what they may execute there is granted function by function.
grant usage on schema ml_private to authenticated, service_role;

------------------------------------------------------------------------------------------------
-- auth shim: only where pgmlops made it (ml_private.settings auth_shim = true)
------------------------------------------------------------------------------------------------
-- Defined exactly as Supabase defines them: each reads the legacy per-claim setting
-- request.jwt.claim.<name> first, then the request.jwt.claims JSON that PostgREST sets.

do $$
begin
    if not exists (select 1 from ml_private.settings where key = 'auth_shim' and value = 'true'::jsonb) then
        return;
    end if;

    -- auth.uid(): the `sub` claim of the caller's JWT, or NULL.
    create or replace function auth.uid() returns uuid
    language sql stable
    as $f$
        select coalesce(
            nullif(current_setting('request.jwt.claim.sub', true), ''),
            (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
        )::uuid
    $f$;

    -- auth.role(): the `role` claim of the caller's JWT, or NULL.
    create or replace function auth.role() returns text
    language sql stable
    as $f$
        select coalesce(
            nullif(current_setting('request.jwt.claim.role', true), ''),
            (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
        )::text
    $f$;

    -- auth.jwt(): all claims of the caller's JWT as jsonb; NULL without claims.
    create or replace function auth.jwt() returns jsonb
    language sql stable
    as $f$
        select coalesce(
            nullif(current_setting('request.jwt.claim', true), ''),
            nullif(current_setting('request.jwt.claims', true), '')
        )::jsonb
    $f$;

    grant usage on schema auth to anon, authenticated, service_role;
    grant execute on function auth.uid(), auth.role(), auth.jwt() to anon, authenticated, service_role;
end
$$;
