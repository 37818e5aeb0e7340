-- pgmlops: job queue
--
-- Work for workers (train, tune, score, monitor, retrain, ...) is a row in ml.jobs. Each kind is
-- registered in ml.job_kinds with a JSON schema for its payload and its retry policy, so unknown
-- kinds and malformed payloads are refused at enqueue time, before anything is written.
--
-- Life of a job:
--   queued --claim--> running --complete--> succeeded
--                        |--fail(retry, attempts left)--> queued (run_after = now + backoff)
--                        |--fail(retry, none left)------> dead
--                        |--fail(no retry)--------------> failed
--                        |--lease expires, attempts left-> queued (claimable again at once)
--                        |--lease expires, none left----> dead
--   queued|running --cancel--> cancelled
--
-- A worker holds a job while locked_by is its id and its lease has not expired; heartbeats extend
-- the lease. Only the holder may complete or fail it: a late result is refused, never written.
-- Delivery is at least once: a handler may run again after its worker dies.

------------------------------------------------------------------------------------------------
-- Rights on the tables; job counts
------------------------------------------------------------------------------------------------

revoke all on ml.job_kinds from public, anon;
grant select on ml.job_kinds to authenticated, service_role;

-- Counts by kind and status, visible per tenant through RLS.
create or replace view ml.job_counts with (security_invoker = true) as
    select tenant_id, kind, status, count(*) as jobs, max(created_at) as last_created_at
    from ml.jobs group by tenant_id, kind, status;

revoke all on ml.job_counts from public, anon;
grant select on ml.job_counts to authenticated, service_role;

------------------------------------------------------------------------------------------------
-- Events
------------------------------------------------------------------------------------------------

-- Every status change is published as event 'job.<status>' on topic 'job'.
create or replace function ml_private.jobs_publish_status() returns trigger
language plpgsql security definer
set search_path = ''
as $$
begin
    perform ml_private.publish(new.tenant_id, 'job', 'job.' || new.status,
        jsonb_strip_nulls(jsonb_build_object(
            'job_id', new.id, 'kind', new.kind, 'status', new.status, 'attempts', new.attempts,
            'worker', new.locked_by, 'error', left(new.error, 500))));
    return null;
end
$$;

create or replace trigger jobs_publish_insert after insert on ml.jobs
    for each row execute function ml_private.jobs_publish_status();

create or replace trigger jobs_publish_status after update of status on ml.jobs
    for each row when (old.status is distinct from new.status)
    execute function ml_private.jobs_publish_status();

------------------------------------------------------------------------------------------------
-- Kinds
------------------------------------------------------------------------------------------------

-- ml_private.register_job_kind(p_kind, p_description, p_payload_schema, p_max_attempts default 3,
--                              p_lease default '5 minutes', p_retry_base default '2 seconds',
--                              p_retry_cap default '1 hour') returns void
-- Registers or updates a job kind. Called by migrations (each capability registers its kinds);
-- owner only. Raises 23514 on a malformed kind name or policy.
create or replace function ml_private.register_job_kind(
    p_kind text, p_description text, p_payload_schema jsonb,
    p_max_attempts int default 3, p_lease interval default '5 minutes',
    p_retry_base interval default '2 seconds', p_retry_cap interval default '1 hour')
returns void
language sql
set search_path = ''
as $$
    insert into ml.job_kinds (kind, description, payload_schema, max_attempts, lease, retry_base, retry_cap)
    values (p_kind, p_description, p_payload_schema, p_max_attempts, p_lease, p_retry_base, p_retry_cap)
    on conflict (kind) do update set
        description = excluded.description, payload_schema = excluded.payload_schema,
        max_attempts = excluded.max_attempts, lease = excluded.lease,
        retry_base = excluded.retry_base, retry_cap = excluded.retry_cap
$$;

------------------------------------------------------------------------------------------------
-- Enqueue (clients)
------------------------------------------------------------------------------------------------
-- Payloads and results are capped at 1 MB: they travel through NOTIFY-free paths but are read by
-- every claim; bulk data belongs in tables (feature store, datasets), referenced by id.

-- ml_private.enqueue_job(...) returns bigint: the implementation behind ml.enqueue.
create or replace function ml_private.enqueue_job(
    p_kind text, p_payload jsonb, p_priority int, p_run_after timestamptz, p_max_attempts int)
returns bigint
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_kind   ml.job_kinds;
    v_tenant uuid;
    v_id     bigint;
begin
    select * into v_kind from ml.job_kinds where kind = p_kind;
    if not found then
        raise exception 'kind: unknown job kind %', coalesce(quote_literal(p_kind), 'NULL')
            using errcode = '22023',
                  hint = format('Known kinds: %s.', (select string_agg(kind, ', ' order by kind) from ml.job_kinds));
    end if;
    if p_payload is null or jsonb_typeof(p_payload) <> 'object' then
        raise exception 'payload: must be a JSON object, got %', coalesce(jsonb_typeof(p_payload), 'NULL')
            using errcode = '22023';
    end if;
    if pg_column_size(p_payload) > 1048576 then
        raise exception 'payload: must be at most 1 MB, got % bytes', pg_column_size(p_payload)
            using errcode = '54000', hint = 'Store bulk data in a table and pass its id.';
    end if;
    perform ml_private.assert_json_valid('payload', v_kind.payload_schema, p_payload);
    if p_priority is null or p_priority not between -1000 and 1000 then
        raise exception 'priority: must be between -1000 and 1000, got %', coalesce(p_priority::text, 'NULL')
            using errcode = '22023';
    end if;
    if p_max_attempts is not null and p_max_attempts not between 1 and 100 then
        raise exception 'max_attempts: must be between 1 and 100, got %', p_max_attempts using errcode = '22023';
    end if;

    v_tenant := ml_private.acting_tenant_id(true);

    insert into ml.jobs (tenant_id, kind, payload, priority, max_attempts, run_after, lease, created_by)
    values (v_tenant, p_kind, p_payload, p_priority, coalesce(p_max_attempts, v_kind.max_attempts),
            coalesce(p_run_after, now()), v_kind.lease, ml_private.caller_user_id())
    returning id into v_id;

    -- Wakes idle workers at once (delivered at commit); polling remains the fallback.
    perform pg_notify('ml_jobs', p_kind);
    return v_id;
end
$$;

-- ml.enqueue(kind text, payload jsonb, priority int default 0, run_after timestamptz default now(),
--            max_attempts int default null) returns bigint
-- Queues a job for the tenant the caller acts for (see ml.current_tenant()) and returns its id.
-- max_attempts NULL takes the kind's default (3 unless the kind says otherwise).
-- Raises 22023 unknown kind, payload not an object or breaking the kind's schema, priority
-- outside -1000..1000, max_attempts outside 1..100; 54000 payload over 1 MB; 42501 caller not a
-- writing member of the tenant; 22023/P0002 no or unknown tenant. Nothing is written on error.
-- Callers: authenticated (owner, admin, ml_engineer), service_role.
create or replace function ml.enqueue(
    kind text, payload jsonb default '{}', priority int default 0,
    run_after timestamptz default now(), max_attempts int default null)
returns bigint
language sql volatile
set search_path = ''
as $$
    select ml_private.enqueue_job(kind, payload, priority, run_after, max_attempts)
$$;

-- ml_private.cancel_job_impl(p_job_id bigint) returns boolean: the implementation of ml.cancel_job.
create or replace function ml_private.cancel_job_impl(p_job_id bigint) returns boolean
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_job ml.jobs;
begin
    select * into v_job from ml.jobs where id = p_job_id for update;
    if not found or not (ml_private.caller_is_service() or v_job.tenant_id = any (ml_private.current_tenant_ids())) then
        raise exception 'job % not found', p_job_id using errcode = 'P0002';
    end if;
    perform ml_private.assert_tenant_access(v_job.tenant_id, true);
    if v_job.status not in ('queued', 'running') then
        return false;
    end if;
    update ml.jobs set status = 'cancelled', finished_at = now(), lease_expires_at = null
    where id = p_job_id;
    return true;
end
$$;

-- ml.cancel_job(job_id bigint) returns boolean
-- Cancels a queued or running job: true when it was cancelled, false when it had already
-- finished. A running job's worker sees its next heartbeat refused and its result is not written.
-- Raises P0002 when the job does not exist or belongs to a tenant the caller is not in; 42501
-- when the caller may only read (viewer). Callers: authenticated, service_role.
create or replace function ml.cancel_job(job_id bigint) returns boolean
language sql volatile
set search_path = ''
as $$
    select ml_private.cancel_job_impl(job_id)
$$;

-- ml.job_result(job_id bigint) returns jsonb
-- The job's state as {id, kind, status, attempts, max_attempts, result, error, created_at,
-- started_at, finished_at}. Reads through RLS. Raises P0002 when the caller cannot see the job.
create or replace function ml.job_result(job_id bigint) returns jsonb
language plpgsql stable
set search_path = ''
as $$
declare
    v_out jsonb;
begin
    select jsonb_build_object('id', j.id, 'kind', j.kind, 'status', j.status, 'attempts', j.attempts,
                              'max_attempts', j.max_attempts, 'result', j.result, 'error', j.error,
                              'created_at', j.created_at, 'started_at', j.started_at, 'finished_at', j.finished_at)
    into v_out from ml.jobs j where j.id = job_id;
    if v_out is null then
        raise exception 'job % not found', job_id using errcode = 'P0002';
    end if;
    return v_out;
end
$$;

------------------------------------------------------------------------------------------------
-- Workers
------------------------------------------------------------------------------------------------

-- ml_private.check_worker_id(p_worker_id text): raises 22023 unless 1..200 printable characters.
create or replace function ml_private.check_worker_id(p_worker_id text) returns void
language plpgsql immutable
set search_path = ''
as $$
begin
    if p_worker_id is null or length(btrim(p_worker_id)) not between 1 and 200 then
        raise exception 'worker_id: must be 1 to 200 characters, not blank' using errcode = '22023';
    end if;
end
$$;

-- ml.reap_expired_leases(max_jobs int default 1000) returns int
-- Running jobs whose lease expired (their worker died or hung): requeued at once when attempts
-- are left, otherwise dead. Returns how many were handled. Skips rows other sessions hold.
-- Called by ml.claim_jobs on every claim, so no separate reaper process is needed. Expiry is
-- judged by the clock at the call (not the transaction's start).
create or replace function ml.reap_expired_leases(max_jobs int default 1000) returns int
language plpgsql volatile
set search_path = ''
as $$
declare
    v_now   timestamptz := clock_timestamp();
    v_count int;
begin
    with expired as (
        select id from ml.jobs
        where status = 'running' and lease_expires_at < v_now
        order by lease_expires_at
        limit max_jobs
        for update skip locked
    )
    update ml.jobs j set
        status = case when j.attempts >= j.max_attempts then 'dead' else 'queued' end,
        error = format('lease expired: worker %s stopped heartbeating (attempt %s of %s)',
                       j.locked_by, j.attempts, j.max_attempts),
        run_after = v_now,
        locked_by = null,
        lease_expires_at = null,
        finished_at = case when j.attempts >= j.max_attempts then v_now end
    from expired e where j.id = e.id;
    get diagnostics v_count = row_count;
    return v_count;
end
$$;

-- ml.claim_jobs(worker_id text, kinds text[], max_jobs int default 1, lease interval default null)
-- returns setof ml.jobs
-- Claims up to max_jobs queued jobs of the given kinds (NULL: any kind) that are due, highest
-- priority first, then oldest; marks them running for worker_id with a lease (NULL: each kind's
-- lease) and counts the attempt. Rows locked by concurrent claimers are skipped, so any number
-- of workers can claim at once without waiting on each other or taking a job twice. Times are
-- the clock's at the call, not the transaction's start, so a claim made at the end of a long
-- transaction (a worker claiming in the transaction of its last job's completion) gets its
-- whole lease. Raises 22023 on a blank worker_id, max_jobs outside 1..1000 or a non-positive
-- lease. Callers: service_role (workers).
create or replace function ml.claim_jobs(worker_id text, kinds text[] default null, max_jobs int default 1, lease interval default null)
returns setof ml.jobs
language plpgsql volatile
set search_path = ''
as $$
declare
    v_now timestamptz;
begin
    perform ml_private.check_worker_id(worker_id);
    if max_jobs is null or max_jobs not between 1 and 1000 then
        raise exception 'max_jobs: must be between 1 and 1000, got %', coalesce(max_jobs::text, 'NULL') using errcode = '22023';
    end if;
    if lease is not null and lease <= interval '0' then
        raise exception 'lease: must be a positive interval, got %', lease using errcode = '22023';
    end if;

    perform ml.reap_expired_leases(100);

    v_now := clock_timestamp();
    return query
    with picked as (
        select j.id from ml.jobs j
        where j.status = 'queued' and j.run_after <= v_now
          and (kinds is null or j.kind = any (kinds))
        order by j.priority desc, j.run_after, j.id
        limit max_jobs
        for update skip locked
    )
    update ml.jobs j set
        status = 'running',
        attempts = j.attempts + 1,
        locked_by = worker_id,
        lease = coalesce(claim_jobs.lease, j.lease),
        lease_expires_at = v_now + coalesce(claim_jobs.lease, j.lease),
        heartbeat_at = v_now,
        started_at = v_now
    from picked p where j.id = p.id
    returning j.*;
end
$$;

-- ml.heartbeat(job_id bigint, worker_id text) returns boolean
-- Extends the job's lease by its lease interval. True while worker_id holds the job; false when
-- it no longer does (lease expired, taken by another worker, cancelled or finished): the worker
-- should then stop working on it. Callers: service_role (workers).
create or replace function ml.heartbeat(job_id bigint, worker_id text) returns boolean
language sql volatile
set search_path = ''
as $$
    with renewed as (
        update ml.jobs j set heartbeat_at = now(), lease_expires_at = now() + j.lease
        where j.id = heartbeat.job_id and j.status = 'running' and j.locked_by = heartbeat.worker_id
          and j.lease_expires_at >= now()
        returning 1
    )
    select exists (select 1 from renewed)
$$;

-- ml_private.held_job(p_job_id bigint, p_worker_id text) returns ml.jobs
-- Locks and returns the job when p_worker_id holds it (running, its id, lease not expired).
-- Raises 55000 otherwise, naming the job's actual state, so a late result is refused.
create or replace function ml_private.held_job(p_job_id bigint, p_worker_id text) returns ml.jobs
language plpgsql volatile
set search_path = ''
as $$
declare
    v_job ml.jobs;
begin
    perform ml_private.check_worker_id(p_worker_id);
    select * into v_job from ml.jobs where id = p_job_id for update;
    if not found then
        raise exception 'job % not found', p_job_id using errcode = 'P0002';
    end if;
    if v_job.status <> 'running' or v_job.locked_by is distinct from p_worker_id or v_job.lease_expires_at < clock_timestamp() then
        raise exception 'job % is not held by worker %: result refused', p_job_id, p_worker_id
            using errcode = '55000',
                  detail = format('status %s, locked_by %s, lease_expires_at %s', v_job.status,
                                  coalesce(v_job.locked_by, 'nobody'), coalesce(v_job.lease_expires_at::text, 'none'));
    end if;
    return v_job;
end
$$;

-- ml.complete_job(job_id bigint, worker_id text, result jsonb default null) returns void
-- Marks the job succeeded with its result. Raises 55000 when worker_id does not hold the job
-- (nothing is written), 54000 when the result is over 1 MB. Callers: service_role (workers).
create or replace function ml.complete_job(job_id bigint, worker_id text, result jsonb default null) returns void
language plpgsql volatile
set search_path = ''
as $$
begin
    perform ml_private.held_job(job_id, worker_id);
    if pg_column_size(result) > 1048576 then
        raise exception 'result: must be at most 1 MB, got % bytes', pg_column_size(result)
            using errcode = '54000', hint = 'Store bulk output in a table and return its id.';
    end if;
    update ml.jobs j set status = 'succeeded', result = complete_job.result, finished_at = clock_timestamp(),
                         lease_expires_at = null
    where j.id = complete_job.job_id;
end
$$;

-- ml.complete_jobs(worker_id text, job_ids bigint[], results jsonb[] default null) returns setof bigint
-- Marks many jobs succeeded in one statement, each with its result (results[i] for job_ids[i];
-- NULL results: none), and returns the ids it accepted. A job worker_id no longer holds (lease
-- expired, taken over, cancelled, finished) is refused exactly as ml.complete_job refuses it:
-- left as it is, its result not written, its id not returned; the others are accepted. Each
-- accepted job emits its own job.succeeded event. For workers acknowledging handlers that write
-- nothing transactional (pgmlops.jobs.handlers: transactional=False): one commit for a batch.
-- Raises 22023 on a blank worker_id, NULL or duplicate ids, more than 1000 ids, or results of
-- another length; 54000 when a result is over 1 MB (naming its job). Nothing is written on error.
-- Callers: service_role (workers).
create or replace function ml.complete_jobs(worker_id text, job_ids bigint[], results jsonb[] default null)
returns setof bigint
language plpgsql volatile
set search_path = ''
as $$
declare
    v_bad  bigint;
    v_held bigint[];
begin
    perform ml_private.check_worker_id(worker_id);
    -- The same cap as a claim's max_jobs: a batch is what one claim can hold.
    if job_ids is null or cardinality(job_ids) > 1000 then
        raise exception 'job_ids: must be an array of at most 1000 ids, got %',
            coalesce(cardinality(job_ids)::text || ' ids', 'NULL') using errcode = '22023';
    end if;
    if results is not null and cardinality(results) <> cardinality(job_ids) then
        raise exception 'results: must have one entry per job id (%), got %', cardinality(job_ids), cardinality(results)
            using errcode = '22023';
    end if;
    if array_position(job_ids, null) is not null
       or (select count(distinct id) from unnest(job_ids) as u(id)) <> cardinality(job_ids) then
        raise exception 'job_ids: must be distinct and not NULL' using errcode = '22023';
    end if;
    select u.id into v_bad from unnest(job_ids, results) as u(id, result)
    where pg_column_size(u.result) > 1048576 limit 1;
    if found then
        raise exception 'result of job %: must be at most 1 MB', v_bad
            using errcode = '54000', hint = 'Store bulk output in a table and return its id.';
    end if;

    -- Lock the jobs by primary key, in id order (so concurrent batches cannot deadlock), then keep
    -- the ones worker_id holds: ml_private.held_job's test. Two steps because one UPDATE with the
    -- status test in its WHERE is planned as a scan of every running job (jobs_lease_idx)
    -- (materialized: the test stays outside, or the planner would push it into that scan).
    with locked as materialized (
        select j.id, j.status, j.locked_by, j.lease_expires_at from ml.jobs j
        where j.id = any (job_ids) order by j.id for update
    )
    select coalesce(array_agg(h.id), '{}') into v_held from locked h
    where h.status = 'running' and h.locked_by = complete_jobs.worker_id and h.lease_expires_at >= clock_timestamp();

    return query
    update ml.jobs j set status = 'succeeded', result = u.result, finished_at = clock_timestamp(),
                         lease_expires_at = null
    from unnest(job_ids, results) as u(id, result)
    where j.id = u.id and u.id = any (v_held)
    returning j.id;
end
$$;

-- ml.fail_job(job_id bigint, worker_id text, error text, retry boolean default true) returns text
-- Records a failed attempt and returns the job's new status:
--   retry and attempts left -> 'queued', due after the kind's backoff: retry_base * 2^(attempts-1),
--                              capped at retry_cap;
--   retry and none left     -> 'dead' (dead-lettered);
--   not retry               -> 'failed' (a permanent error such as bad input).
-- Raises 55000 when worker_id does not hold the job (nothing is written).
-- Callers: service_role (workers).
create or replace function ml.fail_job(job_id bigint, worker_id text, error text, retry boolean default true) returns text
language plpgsql volatile
set search_path = ''
as $$
declare
    v_job    ml.jobs := ml_private.held_job(job_id, worker_id);
    v_kind   ml.job_kinds;
    v_status text;
    v_delay  interval;
begin
    select * into v_kind from ml.job_kinds k where k.kind = v_job.kind;
    v_status := case when not coalesce(retry, true) then 'failed'
                     when v_job.attempts >= v_job.max_attempts then 'dead'
                     else 'queued' end;
    v_delay := least(v_kind.retry_base * power(2, greatest(v_job.attempts - 1, 0)), v_kind.retry_cap);
    update ml.jobs j set
        status = v_status,
        error = left(coalesce(fail_job.error, 'unknown error'), 10000),
        run_after = case when v_status = 'queued' then clock_timestamp() + v_delay else j.run_after end,
        locked_by = case when v_status = 'queued' then null else j.locked_by end,
        lease_expires_at = null,
        finished_at = case when v_status = 'queued' then null else clock_timestamp() end
    where j.id = fail_job.job_id;
    return v_status;
end
$$;

-- ml.release_job(job_id bigint, worker_id text) returns void
-- Gives a held job back to the queue unrun, as a worker does when asked to stop before it could
-- finish: status queued, due at once, the attempt not counted. Raises 55000 when worker_id does
-- not hold the job. Callers: service_role (workers).
create or replace function ml.release_job(job_id bigint, worker_id text) returns void
language plpgsql volatile
set search_path = ''
as $$
begin
    perform ml_private.held_job(job_id, worker_id);
    update ml.jobs j set status = 'queued', attempts = greatest(j.attempts - 1, 0), run_after = now(),
                         locked_by = null, lease_expires_at = null, started_at = null
    where j.id = release_job.job_id;
end
$$;

-- ml_private.purge_finished_jobs(p_older_than interval default '14 days') returns int
-- Deletes jobs that finished before now() - p_older_than; their events stay in ml.events.
create or replace function ml_private.purge_finished_jobs(p_older_than interval default '14 days') returns int
language plpgsql volatile
set search_path = ''
as $$
declare
    v_count int;
begin
    delete from ml.jobs where finished_at < now() - p_older_than;
    get diagnostics v_count = row_count;
    return v_count;
end
$$;

------------------------------------------------------------------------------------------------
-- Grants
------------------------------------------------------------------------------------------------

grant execute on function
    ml.enqueue(text, jsonb, int, timestamptz, int),
    ml.cancel_job(bigint),
    ml.job_result(bigint),
    ml_private.enqueue_job(text, jsonb, int, timestamptz, int),
    ml_private.cancel_job_impl(bigint)
to authenticated, service_role;
grant execute on function
    ml.claim_jobs(text, text[], int, interval),
    ml.heartbeat(bigint, text),
    ml.complete_job(bigint, text, jsonb),
    ml.complete_jobs(text, bigint[], jsonb[]),
    ml.fail_job(bigint, text, text, boolean),
    ml.release_job(bigint, text),
    ml.reap_expired_leases(int),
    ml_private.held_job(bigint, text),
    ml_private.check_worker_id(text),
    ml_private.purge_finished_jobs(interval),
    ml_private.register_job_kind(text, text, jsonb, int, interval, interval, interval)
to service_role;
