-- Demo tenants and users for trying pgmlops by hand (psql, the Supabase dashboard, the API).
--
-- Two tenants, Acme and Globex, and three users with fixed ids, so a session can act as any of
-- them the way PostgREST does:
--   begin;
--   set local role authenticated;
--   select set_config('request.jwt.claims',
--          '{"sub": "a11ce000-0000-4000-8000-000000000001", "role": "authenticated"}', true);
--   select * from ml.jobs;   -- Acme's jobs only
--   rollback;
--
-- Idempotent: running it again changes nothing.

insert into ml.tenants (id, name) values
    ('acbe0000-0000-4000-8000-000000000001', 'Acme'),
    ('91beb000-0000-4000-8000-000000000002', 'Globex')
on conflict (id) do nothing;

insert into ml.tenant_members (tenant_id, user_id, role) values
    ('acbe0000-0000-4000-8000-000000000001', 'a11ce000-0000-4000-8000-000000000001', 'owner'),       -- alice
    ('acbe0000-0000-4000-8000-000000000001', 'b0b00000-0000-4000-8000-000000000002', 'viewer'),      -- bob
    ('91beb000-0000-4000-8000-000000000002', 'ca201000-0000-4000-8000-000000000003', 'ml_engineer')  -- carol
on conflict (tenant_id, user_id) do nothing;
