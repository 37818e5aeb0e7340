-- pgmlops: events
--
-- Every state change worth telling a client about (jobs now; models, drift and deployments later)
-- goes through ml_private.publish(). It writes the event to ml.events (time-partitioned, kept 30
-- days, tenant-owned so clients can replay their own) and announces it:
--   * pg_notify('ml_events', json) for LISTENers (workers, `pgmlops events --follow`);
--   * realtime.send(payload, event, 'ml:<tenant_id>', true) when Supabase Realtime is present,
--     so browser clients subscribed to their tenant's private channel see it.

-- ml_private.publish(p_tenant uuid, p_topic text, p_event text, p_payload jsonb) returns bigint
-- Records an event and announces it (see the header). The NOTIFY payload is
-- {id, tenant_id, topic, event, at, data}; when it would exceed NOTIFY's 8000-byte limit,
-- `data` is left out and `truncated: true` is set (the full event stays in ml.events under id).
-- Returns the event id. Security definer: callers need not write ml.events themselves.
create or replace function ml_private.publish(p_tenant uuid, p_topic text, p_event text, p_payload jsonb)
returns bigint
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_id      bigint;
    v_at      timestamptz := clock_timestamp();
    v_message jsonb;
    v_text    text;
begin
    insert into ml.events (tenant_id, topic, event, payload, created_at)
    values (p_tenant, p_topic, p_event, coalesce(p_payload, '{}'), v_at)
    returning id into v_id;

    v_message := jsonb_build_object('id', v_id, 'tenant_id', p_tenant, 'topic', p_topic,
                                    'event', p_event, 'at', v_at, 'data', coalesce(p_payload, '{}'));
    v_text := v_message::text;
    -- NOTIFY payloads must stay under 8000 bytes.
    if octet_length(v_text) > 7900 then
        v_message := (v_message - 'data') || jsonb_build_object('truncated', true);
        v_text := v_message::text;
    end if;
    perform pg_notify('ml_events', v_text);

    if to_regprocedure('realtime.send(jsonb,text,text,boolean)') is not null then
        execute 'select realtime.send($1, $2, $3, true)'
            using v_message, p_event, 'ml:' || p_tenant::text;
    end if;
    return v_id;
end
$$;

------------------------------------------------------------------------------------------------
-- Job progress
------------------------------------------------------------------------------------------------

-- ml.publish_job_event(job_id bigint, event text, data jsonb default '{}') returns bigint
-- Announces a job's progress, for handlers (pgmlops' JobContext.publish): an event of topic
-- 'job' for the job's tenant with payload {job_id, kind, ...data} (data's keys win), written and
-- announced as ml_private.publish does, in the caller's transaction, so a handler's events land
-- with its result or not at all. The job's row is read, never locked: the heartbeat that keeps
-- its lease must not wait behind a handler. Returns the event id.
-- Raises: 22023 event blank or over 100 characters, data not a JSON object; P0002 no such job.
-- Callers: service_role (workers' handlers).
create or replace function ml.publish_job_event(job_id bigint, event text, data jsonb default '{}')
returns bigint
language plpgsql volatile
set search_path = ''
as $$
declare
    v_tenant uuid;
    v_kind   text;
begin
    if event is null or length(btrim(event)) not between 1 and 100 then
        raise exception 'event: must be 1 to 100 characters, not blank' using errcode = '22023';
    end if;
    if data is not null and jsonb_typeof(data) <> 'object' then
        raise exception 'data: must be a JSON object, got %', jsonb_typeof(data) using errcode = '22023';
    end if;
    select j.tenant_id, j.kind into v_tenant, v_kind from ml.jobs j where j.id = publish_job_event.job_id;
    if not found then
        raise exception 'job % not found', publish_job_event.job_id using errcode = 'P0002';
    end if;
    return ml_private.publish(v_tenant, 'job', event,
                              jsonb_build_object('job_id', publish_job_event.job_id, 'kind', v_kind) || coalesce(data, '{}'));
end
$$;

------------------------------------------------------------------------------------------------
-- Grants
------------------------------------------------------------------------------------------------

grant execute on function
    ml_private.publish(uuid, text, text, jsonb),
    ml.publish_job_event(bigint, text, jsonb)
to service_role;
