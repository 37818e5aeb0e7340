"""Job handlers used by the worker tests, imported by worker processes with --import.

``effect`` writes one row per execution into test_effects in the handler's transaction, so a
test can count how many times each job's effects landed (exactly once, or not at all).
``beacon`` writes nothing transactional (its jobs are batched): it reads who it acts as and, when
the payload names a file, appends a line per execution to it, outside any transaction, so a test
can count executions apart from successes. ``sneaky`` declares it writes nothing transactional,
then tries to.
"""

from __future__ import annotations

import time
from typing import Any

from pgmlops.jobs.handlers import JobContext, handler

SETUP_SQL = """
create table if not exists public.test_effects (
    job_id bigint not null, worker text not null, tenant text, acting_tenant text,
    at timestamptz not null default clock_timestamp());
-- Handlers run as the service role (pgmlops.db.tenant_context), as on Supabase.
grant all on public.test_effects to service_role;
select ml_private.register_job_kind('effect', 'test: records one row per execution',
    '{"type": "object", "properties": {"sleep_ms": {"type": "integer", "minimum": 0}}}'::jsonb,
    3, interval '30 seconds', interval '100 milliseconds', interval '1 second');
select ml_private.register_job_kind('beacon', 'test: writes nothing transactional, logs each execution to a file',
    '{"type": "object", "properties": {"sleep_ms": {"type": "integer", "minimum": 0}, "file": {"type": "string"}}}'::jsonb,
    3, interval '30 seconds', interval '100 milliseconds', interval '1 second');
select ml_private.register_job_kind('sneaky', 'test: declares it writes nothing transactional, then writes',
    '{"type": "object"}'::jsonb, 2, interval '30 seconds', interval '100 milliseconds', interval '1 second');
"""


@handler("effect")
def effect(ctx: JobContext) -> dict[str, Any]:
    deadline = time.monotonic() + int(ctx.payload.get("sleep_ms", 0)) / 1000.0
    while (left := deadline - time.monotonic()) > 0:
        if ctx.lost.wait(min(left, 0.05)):
            break
    row = ctx.conn.execute(
        "insert into public.test_effects (job_id, worker, tenant, acting_tenant) "
        "values (%s, %s, current_setting('request.jwt.claims', true)::jsonb #>> '{app_metadata,tenant_id}', "
        "ml.current_tenant()::text) "
        "returning tenant, acting_tenant",
        (ctx.job.id, ctx.worker_id),
    ).fetchone()
    assert row is not None
    return {"tenant_setting": row[0], "acting_tenant": row[1]}


@handler("beacon", transactional=False)
def beacon(ctx: JobContext) -> dict[str, Any]:
    deadline = time.monotonic() + int(ctx.payload.get("sleep_ms", 0)) / 1000.0
    while (left := deadline - time.monotonic()) > 0:
        if ctx.lost.wait(min(left, 0.05)):
            break
    row = ctx.conn.execute("select ml.current_tenant()::text, current_user::text").fetchone()
    assert row is not None
    if "file" in ctx.payload:
        with open(ctx.payload["file"], "a") as log:  # one short line per write: appends do not interleave
            log.write(f"{ctx.job.id} {ctx.job.attempts} {ctx.worker_id}\n")
    return {"acting_tenant": row[0], "role": row[1], "worker": ctx.worker_id}


@handler("sneaky", transactional=False)
def sneaky(ctx: JobContext) -> None:
    ctx.conn.execute("insert into public.test_effects (job_id, worker) values (%s, %s)", (ctx.job.id, ctx.worker_id))


def watch_parent_then_sleep() -> None:
    """A spawned child guarded by the portable parent watch alone (no prctl), which then idles:
    it outlives its parent only if the watch fails."""
    from pgmlops.jobs.worker import _watch_parent

    _watch_parent()
    time.sleep(120)
