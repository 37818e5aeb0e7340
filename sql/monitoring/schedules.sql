-- pgmlops: monitoring schedules — a drift report per project on a cron schedule
--
-- ml.schedule_monitoring(project, cron, window, options) makes, on each tick of a standard
-- 5-field cron expression (UTC), the drift report (ml.drift_report) of the window that ends at
-- that minute and is `window` long, with `options`, acting for the schedule's tenant. Two
-- backends, the same behaviour:
--   * pg_cron, when the extension is installed in this database: a cron.job named
--     pgmlops-monitoring-<schedule id> runs `select ml_private.run_monitoring_schedule(<id>)`.
--     pg_cron runs it as the job's owner with no JWT, so that entry point is security definer,
--     takes only the schedule's id and acts for the tenant the schedule row names;
--   * otherwise workers: ml_private.run_maintenance() (which `pgmlops worker` calls every few
--     minutes where pg_cron is absent) calls ml_private.run_due_monitoring(), which runs every
--     schedule whose next_run_at has come. A tick is then late by at most the workers'
--     maintenance interval; ticks missed while no worker ran are not made up: the next run
--     reports the window ending at its own minute and the schedule moves to its next tick.
-- Either way each run records last_run_at, last_report (or last_error: a failed report is kept
-- as the error and published as schedule.failed on topic 'monitoring'; the schedule goes on)
-- and the next tick in next_run_at, computed here from the cron expression.
--
-- Cron expressions: minute hour day-of-month month day-of-week; each field `*`, a number, a
-- range a-b, a list a,b,c, with steps (*/15, 1-30/5, 5/10); month names jan..dec and weekday
-- names sun..sat (0 or 7 = Sunday); the macros @yearly @annually @monthly @weekly @daily
-- @midnight @hourly. As in Vixie cron (and pg_cron), when both day-of-month and day-of-week are
-- restricted a day matching either runs; when either starts with `*`, both must match. Not
-- supported (22023 naming the field): seconds ('30 seconds', a sixth field), L, W, #, ?, @reboot.

------------------------------------------------------------------------------------------------
-- Cron expressions
------------------------------------------------------------------------------------------------

-- ml_private.cron_field(p_text text, p_field text, p_min int, p_max int, p_names text[] default null)
-- returns int[]
-- The sorted values one cron field allows. p_names: names of the values from p_min on
-- (month: jan..dec from 1; weekday: sun..sat from 0). Day-of-week 7 is read as 0.
-- Raises 22023 naming p_field: an empty or malformed part, a value out of [p_min, p_max], a
-- range whose start is after its end, a step below 1, an unsupported character (L, W, #, ?).
create or replace function ml_private.cron_field(p_text text, p_field text, p_min int, p_max int,
                                                 p_names text[] default null)
returns int[]
language plpgsql immutable
set search_path = ''
as $$
declare
    v_part   text;
    v_m      text[];
    v_lo     int;
    v_hi     int;
    v_step   int;
    v_values int[] := '{}';
    v_text   text := lower(p_text);
    v_max    int := case when p_field = 'day-of-week' then 7 else p_max end;
    i        int;
begin
    if v_text is null or v_text = '' then
        raise exception 'cron: % field is empty', p_field using errcode = '22023';
    end if;
    if p_names is not null then
        for i in 1 .. cardinality(p_names) loop
            v_text := regexp_replace(v_text, '\m' || p_names[i] || '\M', (p_min + i - 1)::text, 'g');
        end loop;
    end if;
    if v_text ~ '[lw#?]' then
        raise exception 'cron: % field %: L, W, # and ? are not supported', p_field, quote_literal(p_text)
            using errcode = '22023';
    end if;
    foreach v_part in array string_to_array(v_text, ',') loop
        v_m := regexp_match(v_part, '^(\*|([0-9]{1,2})(-([0-9]{1,2}))?)(/([0-9]{1,2}))?$');
        if v_m is null then
            raise exception 'cron: % field %: % is not *, a number, a range a-b or a list, with an optional /step',
                p_field, quote_literal(p_text), quote_literal(v_part) using errcode = '22023';
        end if;
        if v_m[1] = '*' then
            v_lo := p_min;
            v_hi := p_max;
        else
            v_lo := v_m[2]::int;
            -- a/step alone runs from a to the end of the range, as in Vixie cron.
            v_hi := coalesce(v_m[4]::int, case when v_m[6] is not null then p_max else v_lo end);
        end if;
        v_step := coalesce(v_m[6]::int, 1);
        if v_lo < p_min or v_lo > v_max or v_hi < p_min or v_hi > v_max then
            raise exception 'cron: % field %: values must be between % and %', p_field, quote_literal(p_text), p_min, v_max
                using errcode = '22023';
        end if;
        if v_lo > v_hi then
            raise exception 'cron: % field %: range %-% runs backwards', p_field, quote_literal(p_text), v_lo, v_hi
                using errcode = '22023';
        end if;
        if v_step < 1 then
            raise exception 'cron: % field %: the step must be at least 1', p_field, quote_literal(p_text)
                using errcode = '22023';
        end if;
        i := v_lo;
        while i <= v_hi loop
            v_values := v_values || case when p_field = 'day-of-week' and i = 7 then 0 else i end;
            i := i + v_step;
        end loop;
    end loop;
    return (select array_agg(distinct v order by v) from unnest(v_values) v);
end
$$;

-- ml_private.parse_cron(p_cron text) returns jsonb
-- A cron expression (the header) as {minute, hour, day_of_month, month, day_of_week: int[],
-- dom_star, dow_star: boolean (the field starts with *)}. Raises 22023 naming the field that
-- is wrong or unsupported, or the expression when it has not 5 fields.
create or replace function ml_private.parse_cron(p_cron text) returns jsonb
language plpgsql immutable
set search_path = ''
as $$
declare
    v_text   text := btrim(regexp_replace(coalesce(p_cron, ''), '\s+', ' ', 'g'));
    v_fields text[];
begin
    v_text := case lower(v_text)
        when '@yearly' then '0 0 1 1 *' when '@annually' then '0 0 1 1 *' when '@monthly' then '0 0 1 * *'
        when '@weekly' then '0 0 * * 0' when '@daily' then '0 0 * * *' when '@midnight' then '0 0 * * *'
        when '@hourly' then '0 * * * *' else v_text end;
    if v_text like '@%' then
        raise exception 'cron: % is not supported (macros: @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly)',
            quote_literal(p_cron) using errcode = '22023';
    end if;
    if v_text ~* '^[0-9]+ *seconds?$' then
        raise exception 'cron: second schedules (%) are not supported: the finest is every minute (* * * * *)',
            quote_literal(p_cron) using errcode = '22023';
    end if;
    v_fields := string_to_array(v_text, ' ');
    if v_text = '' or cardinality(v_fields) <> 5 then
        raise exception 'cron: % has % fields, expected 5 (minute hour day-of-month month day-of-week; seconds are not supported)',
            coalesce(quote_literal(p_cron), 'NULL'), case when v_text = '' then 0 else cardinality(v_fields) end
            using errcode = '22023';
    end if;
    return jsonb_build_object(
        'minute', to_jsonb(ml_private.cron_field(v_fields[1], 'minute', 0, 59)),
        'hour', to_jsonb(ml_private.cron_field(v_fields[2], 'hour', 0, 23)),
        'day_of_month', to_jsonb(ml_private.cron_field(v_fields[3], 'day-of-month', 1, 31)),
        'month', to_jsonb(ml_private.cron_field(v_fields[4], 'month', 1, 12,
                          array['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'])),
        'day_of_week', to_jsonb(ml_private.cron_field(v_fields[5], 'day-of-week', 0, 6,
                                array['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'])),
        'dom_star', v_fields[3] like '*%',
        'dow_star', v_fields[5] like '*%');
end
$$;

-- ml_private.cron_next(p_cron text, p_after timestamptz) returns timestamptz
-- The first minute strictly after p_after at which p_cron fires (evaluated in UTC, as pg_cron
-- does). Raises 22023 a malformed expression (ml_private.parse_cron), or one that never fires
-- within 8 years (e.g. 0 0 30 2 *).
create or replace function ml_private.cron_next(p_cron text, p_after timestamptz) returns timestamptz
language plpgsql immutable
set search_path = ''
as $$
declare
    v_c       jsonb := ml_private.parse_cron(p_cron);
    v_minutes int[] := array(select jsonb_array_elements_text(v_c -> 'minute')::int);
    v_hours   int[] := array(select jsonb_array_elements_text(v_c -> 'hour')::int);
    v_doms    int[] := array(select jsonb_array_elements_text(v_c -> 'day_of_month')::int);
    v_months  int[] := array(select jsonb_array_elements_text(v_c -> 'month')::int);
    v_dows    int[] := array(select jsonb_array_elements_text(v_c -> 'day_of_week')::int);
    v_and     boolean := (v_c ->> 'dom_star')::boolean or (v_c ->> 'dow_star')::boolean;
    v_from    timestamp := date_trunc('minute', p_after at time zone 'UTC') + interval '1 minute';
    v_day     date := v_from::date;
    v_dom_ok  boolean;
    v_dow_ok  boolean;
    v_at      timestamp;
    h         int;
    m         int;
begin
    if p_after is null then
        raise exception 'cron_next: p_after must not be NULL' using errcode = '22023';
    end if;
    for d in 0 .. 366 * 8 loop
        if extract(month from v_day)::int = any (v_months) then
            v_dom_ok := extract(day from v_day)::int = any (v_doms);
            v_dow_ok := extract(dow from v_day)::int = any (v_dows);
            if (v_and and v_dom_ok and v_dow_ok) or (not v_and and (v_dom_ok or v_dow_ok)) then
                foreach h in array v_hours loop
                    foreach m in array v_minutes loop
                        v_at := v_day + make_interval(hours => h, mins => m);
                        if v_at >= v_from then
                            return v_at at time zone 'UTC';
                        end if;
                    end loop;
                end loop;
            end if;
        end if;
        v_day := v_day + 1;
    end loop;
    raise exception 'cron: % never fires (its day-of-month and month never meet)', quote_literal(p_cron)
        using errcode = '22023';
end
$$;

------------------------------------------------------------------------------------------------
-- Running schedules
------------------------------------------------------------------------------------------------

-- ml_private.has_pg_cron() returns boolean: the pg_cron extension is installed in this database.
create or replace function ml_private.has_pg_cron() returns boolean
language sql stable
set search_path = ''
as $$
    select exists (select 1 from pg_catalog.pg_extension where extname = 'pg_cron')
$$;

-- ml_private.run_monitoring_schedule(p_schedule uuid) returns uuid
-- One run of schedule p_schedule: the drift report (ml.drift_report) of the window ending at the
-- current minute, `window` long, with the schedule's options, made as a service caller acting
-- for the schedule's tenant (the caller's own tenant setting and JWT claims are set aside for
-- the call and restored after). Records last_run_at, last_report or last_error, next_run_at.
-- A failed report does not raise: its error is recorded and published (schedule.failed), so a
-- cron job or the worker's loop goes on. Returns the report's id; NULL when the schedule is gone,
-- disabled, being run by another session, or its report failed.
-- Callers: pg_cron jobs (as their owner) and ml_private.run_due_monitoring (granted to nobody).
create or replace function ml_private.run_monitoring_schedule(p_schedule uuid) returns uuid
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_s       ml.monitoring_schedules;
    v_project text;
    v_end     timestamptz := date_trunc('minute', now());
    v_report  uuid;
    v_tenant  text := current_setting('pgmlops.tenant_id', true);
    v_claims  text := current_setting('request.jwt.claims', true);
    v_error   text;
    v_state   text;
begin
    select * into v_s from ml.monitoring_schedules s where s.id = p_schedule for update skip locked;
    if not found or not v_s.enabled then
        return null;
    end if;
    select p.name into v_project from ml.projects p where p.id = v_s.project_id;

    perform set_config('pgmlops.tenant_id', v_s.tenant_id::text, true);
    perform set_config('request.jwt.claims', '', true);
    begin
        v_report := ml.drift_report(v_project, v_end - v_s."window", v_end, v_s.options);
    exception when others then
        get stacked diagnostics v_error = message_text, v_state = returned_sqlstate;
    end;
    perform set_config('pgmlops.tenant_id', coalesce(v_tenant, ''), true);
    perform set_config('request.jwt.claims', coalesce(v_claims, ''), true);

    update ml.monitoring_schedules s
       set last_run_at = now(),
           last_report = coalesce(v_report, s.last_report),
           last_error  = case when v_error is not null then format('%s: %s', v_state, v_error) end,
           next_run_at = ml_private.cron_next(s.cron, greatest(now(), v_end))
     where s.id = v_s.id;
    if v_error is not null then
        perform ml_private.publish(v_s.tenant_id, 'monitoring', 'schedule.failed', jsonb_build_object(
            'schedule_id', v_s.id, 'project_id', v_s.project_id, 'window_start', v_end - v_s."window",
            'window_end', v_end, 'sqlstate', v_state, 'error', v_error));
    end if;
    return v_report;
end
$$;

-- ml_private.run_due_monitoring() returns jsonb
-- The workers' scheduler: runs (ml_private.run_monitoring_schedule) every enabled schedule of the
-- worker backend whose next_run_at has come, oldest first, skipping those another session is
-- running. Called by ml_private.run_maintenance. Returns {"ran": n, "reports": [ids],
-- "failed": [schedule ids]}.
-- Callers: ml_private.run_maintenance; service_role.
create or replace function ml_private.run_due_monitoring() returns jsonb
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_id      uuid;
    v_report  uuid;
    v_ran     int := 0;
    v_reports uuid[] := '{}';
    v_failed  uuid[] := '{}';
begin
    for v_id in
        select s.id from ml.monitoring_schedules s
        where s.enabled and s.backend = 'worker' and s.next_run_at <= now()
        order by s.next_run_at
        for update skip locked
    loop
        v_report := ml_private.run_monitoring_schedule(v_id);
        v_ran := v_ran + 1;
        if v_report is null then
            v_failed := v_failed || v_id;
        else
            v_reports := v_reports || v_report;
        end if;
    end loop;
    return jsonb_build_object('ran', v_ran, 'reports', to_jsonb(v_reports), 'failed', to_jsonb(v_failed));
end
$$;

-- ml_private.unschedule_cron_job() trigger: a schedule deleted (by ml.unschedule_monitoring, a
-- replaced schedule, or its project or tenant deleted) takes its pg_cron job with it.
create or replace function ml_private.unschedule_cron_job() returns trigger
language plpgsql security definer
set search_path = ''
as $$
begin
    if old.cron_job_id is not null and ml_private.has_pg_cron() then
        execute 'select cron.unschedule(j.jobid) from cron.job j where j.jobid = $1' using old.cron_job_id;
    end if;
    return old;
end
$$;

drop trigger if exists monitoring_schedules_unschedule on ml.monitoring_schedules;
create trigger monitoring_schedules_unschedule after delete on ml.monitoring_schedules
    for each row execute function ml_private.unschedule_cron_job();

------------------------------------------------------------------------------------------------
-- API
------------------------------------------------------------------------------------------------

-- ml_private.schedule_document(p_s ml.monitoring_schedules) returns jsonb: a schedule as the API
-- returns it.
create or replace function ml_private.schedule_document(p_s ml.monitoring_schedules) returns jsonb
language sql stable security definer
set search_path = ''
as $$
    select jsonb_build_object(
        'id', p_s.id, 'project', p.name, 'cron', p_s.cron, 'window', p_s."window", 'options', p_s.options,
        'backend', p_s.backend, 'cron_job_id', p_s.cron_job_id, 'enabled', p_s.enabled,
        'last_run_at', p_s.last_run_at, 'next_run_at', p_s.next_run_at, 'last_report', p_s.last_report,
        'last_error', p_s.last_error, 'created_at', p_s.created_at)
    from ml.projects p where p.id = p_s.project_id
$$;

-- ml.schedule_monitoring(project text, cron text, "window" interval, options jsonb default '{}')
-- returns uuid
-- Schedules the project's drift report (the header): on every tick of `cron` (UTC), the report
-- of the `window` ending then, with `options` (ml.drift_report's). With pg_cron installed in this
-- database a cron.job runs it, otherwise the workers' scheduler. A project has one schedule:
-- scheduling again replaces it (its cron job too). Publishes schedule.set on topic 'monitoring'.
-- Returns the schedule's id.
-- Raises: 22023 a malformed or unsupported cron expression (naming the field), a window that is
-- not positive or over 366 days, options not an object or options ml.drift_report refuses
-- (ml_private.drift_options: the message names the field);
-- P0002 no such project; 42501 a viewer.
-- Callers: members who may write; service_role.
create or replace function ml.schedule_monitoring(project text, cron text, "window" interval, options jsonb default '{}')
returns uuid
language plpgsql volatile security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_tenant  uuid := ml_private.acting_tenant_id(true);
    v_project ml.projects;
    v_next    timestamptz;
    v_backend text := case when ml_private.has_pg_cron() then 'pg_cron' else 'worker' end;
    v_id      uuid;
    v_job     bigint;
    v_cron    text := btrim(regexp_replace(coalesce(cron, ''), '\s+', ' ', 'g'));
begin
    v_next := ml_private.cron_next(v_cron, now());
    if "window" is null or "window" <= interval '0' then
        raise exception 'window: must be a positive interval, got %', coalesce("window"::text, 'NULL') using errcode = '22023';
    end if;
    if "window" > interval '366 days' then
        raise exception 'window: at most 366 days, got %', "window" using errcode = '22023';
    end if;
    if options is not null and jsonb_typeof(options) <> 'object' then
        raise exception 'options: must be a JSON object, got %', jsonb_typeof(options) using errcode = '22023';
    end if;
    if options ? 'mode' and coalesce(options ->> 'mode', '') not in ('exact', 'fast') then
        raise exception 'options.mode: % is not exact or fast', options -> 'mode' using errcode = '22023';
    end if;
    -- The report's own checks of its options, now rather than at every run.
    perform ml_private.drift_options(coalesce(options, '{}'::jsonb));
    v_project := ml_private.find_project(v_tenant, project);

    -- Replacing: the old row goes (its trigger unschedules its cron job), the new one keeps the id.
    delete from ml.monitoring_schedules s where s.project_id = v_project.id returning s.id into v_id;
    insert into ml.monitoring_schedules (id, tenant_id, project_id, cron, "window", options, backend, next_run_at, created_by)
    values (coalesce(v_id, gen_random_uuid()), v_tenant, v_project.id, v_cron, "window", coalesce(options, '{}'),
            v_backend, v_next, ml_private.caller_user_id())
    returning id into v_id;
    if v_backend = 'pg_cron' then
        execute 'select cron.schedule($1, $2, $3)' into v_job
            using 'pgmlops-monitoring-' || v_id::text, v_cron,
                  format('select ml_private.run_monitoring_schedule(%L::uuid)', v_id);
        update ml.monitoring_schedules s set cron_job_id = v_job where s.id = v_id;
    end if;
    perform ml_private.publish(v_tenant, 'monitoring', 'schedule.set', jsonb_build_object(
        'schedule_id', v_id, 'project_id', v_project.id, 'cron', v_cron, 'window', "window",
        'backend', v_backend, 'next_run_at', v_next));
    return v_id;
end
$$;

-- ml.unschedule_monitoring(project text) returns boolean
-- Removes the project's monitoring schedule (and its pg_cron job). Returns true when there was
-- one, false when there was none. Publishes schedule.removed.
-- Raises: P0002 no such project; 42501 a viewer. Callers: members who may write; service_role.
create or replace function ml.unschedule_monitoring(project text) returns boolean
language plpgsql volatile security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_tenant  uuid := ml_private.acting_tenant_id(true);
    v_project ml.projects := ml_private.find_project(v_tenant, project);
    v_id      uuid;
begin
    delete from ml.monitoring_schedules s where s.project_id = v_project.id returning s.id into v_id;
    if v_id is null then
        return false;
    end if;
    perform ml_private.publish(v_tenant, 'monitoring', 'schedule.removed', jsonb_build_object(
        'schedule_id', v_id, 'project_id', v_project.id));
    return true;
end
$$;

-- ml.monitoring_schedule(project text) returns jsonb
-- The project's schedule: {id, project, cron, window, options, backend, cron_job_id, enabled,
-- last_run_at, next_run_at, last_report, last_error, created_at}, or NULL when it has none.
-- Raises: P0002 no such project. Callers: members; service_role.
create or replace function ml.monitoring_schedule(project text) returns jsonb
language plpgsql stable security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_tenant  uuid := ml_private.acting_tenant_id(false);
    v_project ml.projects := ml_private.find_project(v_tenant, project);
begin
    return (select ml_private.schedule_document(s) from ml.monitoring_schedules s where s.project_id = v_project.id);
end
$$;

------------------------------------------------------------------------------------------------
-- Grants
------------------------------------------------------------------------------------------------

grant execute on function
    ml.schedule_monitoring(text, text, interval, jsonb),
    ml.unschedule_monitoring(text),
    ml.monitoring_schedule(text)
to authenticated, service_role;
grant execute on function
    ml_private.run_due_monitoring()
to service_role;
