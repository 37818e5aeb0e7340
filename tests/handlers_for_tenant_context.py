"""The ``whoami`` job kind of tests/test_tenant_context.py: who a handler runs as.

``SETUP_SQL`` makes ``public.seen``, where the handler and a trigger on ml.jobs (which sees who
enqueues: the CLI, a library call) write the role and claims they run with, and registers the
kind. Worker processes import this module with ``--import`` / ``modules=[...]``.
"""

from __future__ import annotations

from typing import Any

from pgmlops.jobs.handlers import JobContext, handler

# What each caller records. Inside a security-definer function (ml.enqueue) current_user is the
# function's owner, but the `role` setting still names the role the caller set.
WHO = ("current_setting('role'), coalesce(current_setting('request.jwt.claims', true), ''), "
       "coalesce(current_setting('pgmlops.tenant_id', true), '')")

SETUP_SQL = f"""
create table public.seen (caller text not null, role text not null, claims text not null, tenant_setting text not null,
                          login_user text not null, at timestamptz not null default clock_timestamp());
grant insert, select on public.seen to service_role;
create function public.record_enqueuer() returns trigger language plpgsql as $$
begin
    insert into public.seen (caller, role, claims, tenant_setting, login_user)
    select coalesce(new.payload ->> 'caller', 'unnamed'), {WHO}, session_user;
    return new;
end
$$;
create trigger record_enqueuer before insert on ml.jobs for each row execute function public.record_enqueuer();
select ml_private.register_job_kind('whoami', 'test: records the role and claims its handler runs with',
    '{{"type": "object", "properties": {{"caller": {{"type": "string"}}}}}}'::jsonb,
    1, interval '30 seconds', interval '100 milliseconds', interval '1 second');
"""


@handler("whoami")
def whoami(ctx: JobContext) -> dict[str, Any]:
    row = ctx.conn.execute(
        f"insert into public.seen (caller, role, claims, tenant_setting, login_user) select 'worker', {WHO}, session_user "
        "returning current_user, role").fetchone()
    assert row is not None
    return {"current_user": row[0], "role": row[1]}
