-- pgmlops: monitoring alerts — raised from drift reports, deduplicated, acknowledged, resolved
--
-- An alert says "this project's <kind> of <feature> is off". Its fingerprint is
-- project + kind + feature: while an alert with that fingerprint is open or acknowledged, the
-- same finding again (from a later report) raises its count and last_seen, lifts its severity
-- to the larger of the two and replaces its message and evidence, instead of adding a row.
-- Once resolved, the next finding opens a new alert. Kinds:
--   feature_drift (an input), prediction_drift (the prediction or the score), label_drift,
--   dataset_drift (the share of drifted inputs), performance (realized, from feedback),
--   estimated_performance (CBPE), multivariate_drift, regime (a window unlike its nearest past
--   windows).
--
-- Severity is the strength of the evidence relative to the threshold that decided it
-- (ml_private.alert_severity): the ratio r is 1 at the threshold and grows with the evidence:
--   * p-value tests (ks, chi2, z, ...: drift when p < alpha):  r = ln(p) / ln(alpha)
--     (p = alpha -> 1, p = alpha^2 -> 2; p = 0 -> infinite);
--   * distance tests (wasserstein, psi, jensen_shannon, hellinger, ...: drift when d >= t):
--     r = d / t;
--   * dataset drift: r = share / threshold share;
--   * performance outside its band [lower, upper]: r = 1 + distance beyond the band / half the
--     band's width (the band is mean +- 3 std of the reference chunks, so r = 2 is 6 std out).
-- r >= 2 is critical, r >= 1 warning, below (an alert raised by hand) info. A feature with
-- several tests takes the strongest.
--
-- Every new alert, repeat, acknowledgement and resolution is published on topic 'monitoring'
-- (ml_private.publish: ml.events, NOTIFY, realtime.send): alert.opened, alert.repeated,
-- alert.acknowledged, alert.resolved, with payload {alert_id, project_id, kind, feature,
-- severity, status, count, report_id}.
--
-- Supabase Realtime: where the publication supabase_realtime exists (every Supabase project),
-- the end of this file adds ml.alerts and ml.events to it, so supabase-js clients can subscribe
-- to their changes (Realtime checks each change against RLS by selecting it as the subscriber,
-- so a member of tenant B never sees tenant A's rows). ml.events is partitioned: with native
-- partitioning the publication is set to publish_via_partition_root, so changes arrive as
-- ml.events rather than as its partitions and the root's policies apply; a TimescaleDB
-- hypertable's rows live in chunks that logical replication publishes under their own names,
-- which Realtime cannot map back, so a hypertable ml.events is left out (its events reach
-- clients through the broadcast channel ml:<tenant_id> that ml_private.publish sends to).

------------------------------------------------------------------------------------------------
-- Helpers
------------------------------------------------------------------------------------------------

-- ml_private.alert_kinds() returns text[]: the kinds an alert may have.
create or replace function ml_private.alert_kinds() returns text[]
language sql immutable
set search_path = ''
as $$
    select array['feature_drift', 'prediction_drift', 'label_drift', 'dataset_drift', 'performance',
                 'estimated_performance', 'multivariate_drift', 'regime']
$$;

-- ml_private.severity_rank(p_severity text) returns int: info 1, warning 2, critical 3, else NULL.
create or replace function ml_private.severity_rank(p_severity text) returns int
language sql immutable
set search_path = ''
as $$
    select array_position(array['info', 'warning', 'critical'], p_severity)
$$;

-- ml_private.severity_of_ratio(p_ratio float8) returns text
-- The severity of evidence p_ratio times as strong as its threshold: >= 2 critical, >= 1
-- warning, else (or NULL) info.
create or replace function ml_private.severity_of_ratio(p_ratio float8) returns text
language sql immutable
set search_path = ''
as $$
    select case when p_ratio >= 2 then 'critical' when p_ratio >= 1 then 'warning' else 'info' end
$$;

-- ml_private.drift_evidence_ratio(p_test text, p_statistic float8, p_p_value float8, p_threshold float8)
-- returns float8
-- How strong a drift test's evidence is relative to its threshold (see the header): for a
-- p-value test ln(p) / ln(alpha) (infinity when p = 0), for a distance d / t. Distance tests:
-- wasserstein, wasserstein_normed, psi, jensen_shannon, hellinger, centroid, domain_classifier
-- (and any test without a p-value); the others are read by their p-value. NULL when the evidence
-- or the threshold is missing or the threshold is not positive.
create or replace function ml_private.drift_evidence_ratio(p_test text, p_statistic float8, p_p_value float8,
                                                           p_threshold float8)
returns float8
language sql immutable
set search_path = ''
as $$
    select case
        when p_threshold is null or p_threshold <= 0 then null
        when p_p_value is not null
             and p_test not in ('wasserstein', 'wasserstein_normed', 'psi', 'jensen_shannon', 'hellinger',
                                'centroid', 'domain_classifier') then
            case when p_threshold >= 1 then null
                 when p_p_value <= 0 then 'Infinity'::float8
                 when p_p_value >= 1 then 0
                 else ln(p_p_value) / ln(p_threshold) end
        when p_statistic is null then null
        else abs(p_statistic) / p_threshold
    end
$$;

-- ml_private.alert_document(p_alert ml.alerts) returns jsonb: an alert as the API returns it.
create or replace function ml_private.alert_document(p_alert ml.alerts) returns jsonb
language sql stable security definer
set search_path = ''
as $$
    select jsonb_build_object(
        'id', p_alert.id, 'project', p.name, 'project_id', p_alert.project_id, 'kind', p_alert.kind,
        'feature', p_alert.feature, 'severity', p_alert.severity, 'status', p_alert.status,
        'count', p_alert.count, 'first_seen', p_alert.first_seen, 'last_seen', p_alert.last_seen,
        'report_id', p_alert.report_id, 'message', p_alert.message, 'evidence', p_alert.evidence,
        'acknowledged_by', p_alert.acknowledged_by, 'acknowledged_at', p_alert.acknowledged_at,
        'resolved_by', p_alert.resolved_by, 'resolved_at', p_alert.resolved_at, 'notes', p_alert.notes)
    from ml.projects p where p.id = p_alert.project_id
$$;

-- ml_private.publish_alert(p_alert ml.alerts, p_event text) returns bigint
-- Publishes p_event (alert.opened | alert.repeated | alert.acknowledged | alert.resolved) for
-- p_alert on topic 'monitoring'. Returns the event id.
create or replace function ml_private.publish_alert(p_alert ml.alerts, p_event text) returns bigint
language sql volatile security definer
set search_path = ''
as $$
    select ml_private.publish(p_alert.tenant_id, 'monitoring', p_event, jsonb_build_object(
        'alert_id', p_alert.id, 'project_id', p_alert.project_id, 'kind', p_alert.kind,
        'feature', p_alert.feature, 'severity', p_alert.severity, 'status', p_alert.status,
        'count', p_alert.count, 'report_id', p_alert.report_id, 'message', p_alert.message))
$$;

------------------------------------------------------------------------------------------------
-- Raising alerts
------------------------------------------------------------------------------------------------

-- ml_private.raise_alert(p_tenant uuid, p_project uuid, p_kind text, p_feature text,
--                        p_severity text, p_message text, p_evidence jsonb default '{}',
--                        p_report uuid default null) returns uuid
-- Opens an alert, or repeats the open (or acknowledged) one with the same fingerprint
-- (project + kind + feature): count + 1, last_seen now, severity the larger of the two,
-- message, evidence and report replaced. Raising again for the report the alert already came
-- from (a report completed in two steps) updates it without counting a repeat. Publishes
-- alert.opened or alert.repeated. Returns the alert's id.
-- Raises: 22023 unknown kind or severity, blank message, evidence not an object; P0002 the
-- project is not the tenant's; 23503 no such report.
-- Callers: the monitoring functions (granted to nobody).
create or replace function ml_private.raise_alert(p_tenant uuid, p_project uuid, p_kind text, p_feature text,
                                                  p_severity text, p_message text, p_evidence jsonb default '{}',
                                                  p_report uuid default null)
returns uuid
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_alert    ml.alerts;
    v_id       uuid;
    v_inserted boolean;
    v_repeat   boolean;
begin
    if p_kind is null or not (p_kind = any (ml_private.alert_kinds())) then
        raise exception 'kind: % is not an alert kind (one of: %)', coalesce(quote_literal(p_kind), 'NULL'),
            array_to_string(ml_private.alert_kinds(), ', ') using errcode = '22023';
    end if;
    if ml_private.severity_rank(p_severity) is null then
        raise exception 'severity: % is not info, warning or critical', coalesce(quote_literal(p_severity), 'NULL')
            using errcode = '22023';
    end if;
    if p_message is null or btrim(p_message) = '' then
        raise exception 'message: must not be blank' using errcode = '22023';
    end if;
    if p_evidence is not null and jsonb_typeof(p_evidence) <> 'object' then
        raise exception 'evidence: must be a JSON object, got %', jsonb_typeof(p_evidence) using errcode = '22023';
    end if;
    if not exists (select 1 from ml.projects p where p.id = p_project and p.tenant_id = p_tenant) then
        raise exception 'project % does not exist in tenant %', p_project, p_tenant using errcode = 'P0002';
    end if;

    -- A repeat counts only when it comes from another report (or from none).
    select p_report is null or a.report_id is distinct from p_report into v_repeat
    from ml.alerts a
    where a.tenant_id = p_tenant and a.fingerprint = format('%s/%s/%s', p_project, p_kind, coalesce(p_feature, ''))
      and a.status <> 'resolved';

    insert into ml.alerts as a (tenant_id, project_id, fingerprint, kind, feature, severity, message, evidence, report_id)
    values (p_tenant, p_project, format('%s/%s/%s', p_project, p_kind, coalesce(p_feature, '')), p_kind, p_feature,
            p_severity, p_message, coalesce(p_evidence, '{}'), p_report)
    on conflict (tenant_id, fingerprint) where status <> 'resolved' do update
        set count     = a.count + case when excluded.report_id is null or a.report_id is distinct from excluded.report_id
                                       then 1 else 0 end,
            last_seen = now(),
            severity  = case when ml_private.severity_rank(excluded.severity) > ml_private.severity_rank(a.severity)
                             then excluded.severity else a.severity end,
            message   = excluded.message,
            evidence  = excluded.evidence,
            report_id = coalesce(excluded.report_id, a.report_id)
    returning a.id, (a.xmax = 0) into v_id, v_inserted;
    select * into v_alert from ml.alerts a where a.id = v_id;

    if v_inserted then
        perform ml_private.publish_alert(v_alert, 'alert.opened');
    elsif coalesce(v_repeat, true) then
        perform ml_private.publish_alert(v_alert, 'alert.repeated');
    end if;
    return v_alert.id;
end
$$;

-- ml_private.raise_report_alerts(p_report uuid) returns int
-- Raises (ml_private.raise_alert) what report p_report found, attributed to it:
--   * one alert per drifted (role, feature) of ml.drift_results: feature_drift (input),
--     prediction_drift (prediction, score), label_drift (label), or multivariate_drift for the
--     tests of several features at once (mmd, domain_classifier); severity from the strongest
--     drifted test (header), evidence {role, tests: [{test, statistic, p_value, threshold}]};
--   * dataset_drift when the report's dataset_drift is true (evidence: drift_share, its
--     threshold: summary.drift.threshold, else options.drift_share, else 0.5; drifted_features,
--     features_tested);
--   * one alert per (metric, estimated) of ml.performance_results with alerting buckets:
--     performance or estimated_performance, feature = the metric, severity from the bucket
--     furthest outside its band, evidence {buckets alerted, worst {bucket_start, value, lower,
--     upper}};
--   * regime when the report's regime section (ml_private.record_window_embedding) has past
--     windows to compare with and matched none of them: a distribution not seen before; warning
--     with dataset drift, else info; evidence the section.
-- Returns the number of alerts raised or repeated. Idempotent per report: raising a report's
-- alerts again counts no repeat. Raises P0002 no such report.
-- Callers: ml.drift_report and the worker completing a report (granted to nobody).
create or replace function ml_private.raise_report_alerts(p_report uuid) returns int
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_report ml.drift_reports;
    v_row    record;
    v_n      int := 0;
    v_share  float8;
    v_ratio  float8;
begin
    select * into v_report from ml.drift_reports r where r.id = p_report;
    if not found then
        raise exception 'drift report % does not exist', p_report using errcode = 'P0002';
    end if;

    -- Drifted features, per role; the strongest test decides the severity.
    for v_row in
        select d.role, d.feature,
               max(ml_private.drift_evidence_ratio(d.test, d.statistic, d.p_value, d.threshold)) as ratio,
               bool_or(d.test in ('mmd', 'domain_classifier')) as multivariate,
               jsonb_agg(jsonb_build_object('test', d.test, 'statistic', d.statistic, 'p_value', d.p_value,
                                            'threshold', d.threshold) order by d.test) as tests,
               string_agg(format('%s %s (threshold %s)', d.test,
                                 coalesce('p=' || ml_private.format_number(d.p_value::numeric),
                                          ml_private.format_number(d.statistic::numeric)),
                                 ml_private.format_number(d.threshold::numeric)), ', ' order by d.test) as what
        from ml.drift_results d
        where d.report_id = p_report and d.drifted
        group by d.role, d.feature
        order by d.role, d.feature
    loop
        perform ml_private.raise_alert(v_report.tenant_id, v_report.project_id,
            case when v_row.multivariate then 'multivariate_drift'
                 when v_row.role = 'input' then 'feature_drift'
                 when v_row.role = 'label' then 'label_drift'
                 else 'prediction_drift' end,
            v_row.feature,
            ml_private.severity_of_ratio(coalesce(v_row.ratio, 1)),
            format('%s %s drifted: %s', v_row.role, quote_ident(v_row.feature), v_row.what),
            jsonb_build_object('role', v_row.role, 'tests', v_row.tests, 'strength', v_row.ratio,
                               'window_start', v_report.window_start, 'window_end', v_report.window_end),
            p_report);
        v_n := v_n + 1;
    end loop;

    if v_report.dataset_drift then
        v_share := coalesce((v_report.summary #>> '{drift,threshold}')::float8,
                            (v_report.options ->> 'drift_share')::float8, 0.5);
        v_ratio := case when v_share > 0 then v_report.drift_share / v_share end;
        perform ml_private.raise_alert(v_report.tenant_id, v_report.project_id, 'dataset_drift', null,
            ml_private.severity_of_ratio(coalesce(v_ratio, 1)),
            format('dataset drift: %s of %s features drifted (threshold share %s)', v_report.drifted_features,
                   v_report.features_tested, ml_private.format_number(v_share::numeric)),
            jsonb_build_object('drift_share', v_report.drift_share, 'threshold', v_share, 'strength', v_ratio,
                               'drifted_features', v_report.drifted_features,
                               'features_tested', v_report.features_tested,
                               'window_start', v_report.window_start, 'window_end', v_report.window_end),
            p_report);
        v_n := v_n + 1;
    end if;

    -- Performance outside its band, per metric (realized and estimated apart).
    for v_row in
        with scored as (
            select pr.*,
                   case when pr.value is null or pr.lower_bound is null and pr.upper_bound is null then null
                        else 1 + greatest(coalesce(pr.lower_bound - pr.value, 0), coalesce(pr.value - pr.upper_bound, 0), 0)
                                 / nullif(coalesce((pr.upper_bound - pr.lower_bound) / 2,
                                                   abs(coalesce(pr.lower_bound, pr.upper_bound)) * 0.1), 0)
                   end as ratio
            from ml.performance_results pr
            where pr.report_id = p_report and pr.alert
        )
        select s.metric, s.estimated, count(*) as buckets, max(s.ratio) as ratio,
               (array_agg(jsonb_build_object('bucket_start', s.bucket_start, 'bucket_end', s.bucket_end,
                                             'value', s.value, 'lower', s.lower_bound, 'upper', s.upper_bound,
                                             'sample_count', s.sample_count)
                          order by s.ratio desc nulls last, s.bucket_start))[1] as worst
        from scored s
        group by s.metric, s.estimated
        order by s.metric, s.estimated
    loop
        perform ml_private.raise_alert(v_report.tenant_id, v_report.project_id,
            case when v_row.estimated then 'estimated_performance' else 'performance' end,
            v_row.metric,
            ml_private.severity_of_ratio(coalesce(v_row.ratio, 1)),
            format('%s %s outside its band in %s bucket(s): %s (band %s to %s)',
                   case when v_row.estimated then 'estimated' else 'realized' end, v_row.metric, v_row.buckets,
                   coalesce(ml_private.format_number((v_row.worst ->> 'value')::numeric), 'NULL'),
                   coalesce(ml_private.format_number((v_row.worst ->> 'lower')::numeric), '-inf'),
                   coalesce(ml_private.format_number((v_row.worst ->> 'upper')::numeric), 'inf')),
            jsonb_build_object('buckets', v_row.buckets, 'worst', v_row.worst, 'strength', v_row.ratio,
                               'estimated', v_row.estimated),
            p_report);
        v_n := v_n + 1;
    end loop;

    -- A new regime: past windows to compare with, none of them close enough.
    if jsonb_typeof(v_report.summary -> 'regime') = 'object'
       and (v_report.summary #>> '{regime,matched}') = 'false'
       and jsonb_array_length(coalesce(v_report.summary #> '{regime,similar}', '[]')) > 0 then
        perform ml_private.raise_alert(v_report.tenant_id, v_report.project_id, 'regime', null,
            case when v_report.dataset_drift then 'warning' else 'info' end,
            format('the window is unlike its %s nearest past windows (nearest at distance %s, threshold %s)',
                   jsonb_array_length(v_report.summary #> '{regime,similar}'),
                   coalesce(ml_private.format_number((v_report.summary #>> '{regime,similar,0,distance}')::numeric), '?'),
                   coalesce(ml_private.format_number((v_report.summary #>> '{regime,threshold}')::numeric), '?')),
            v_report.summary -> 'regime', p_report);
        v_n := v_n + 1;
    end if;
    return v_n;
end
$$;

------------------------------------------------------------------------------------------------
-- API
------------------------------------------------------------------------------------------------

-- ml_private.find_alert(p_tenant uuid, p_alert uuid) returns ml.alerts
-- The alert p_alert of p_tenant, locked for update. Raises P0002 when p_tenant has none (another
-- tenant's alert is reported the same way: its existence is not revealed).
create or replace function ml_private.find_alert(p_tenant uuid, p_alert uuid) returns ml.alerts
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_alert ml.alerts;
begin
    select * into v_alert from ml.alerts a where a.id = p_alert and a.tenant_id = p_tenant for update;
    if not found then
        raise exception 'alert % does not exist', coalesce(p_alert::text, 'NULL') using errcode = 'P0002';
    end if;
    return v_alert;
end
$$;

-- ml.acknowledge_alert(alert uuid, comment text default null) returns jsonb
-- Marks an open alert acknowledged (someone is on it): acknowledged_by (the user; NULL for a
-- service caller) and _at set, the comment kept in notes; repeats still count. Publishes
-- alert.acknowledged. Returns the alert (as ml.alerts lists it).
-- Raises: 55000 the alert is not open (already acknowledged, or resolved); P0002 no such alert
-- in the caller's tenant; 22023 a comment over 2000 characters; 42501 a viewer.
-- Callers: members who may write (owner, admin, ml_engineer); service_role.
create or replace function ml.acknowledge_alert(alert uuid, comment text default null) returns jsonb
language plpgsql volatile security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_tenant uuid := ml_private.acting_tenant_id(true);
    v_alert  ml.alerts;
begin
    if length(comment) > 2000 then
        raise exception 'comment: at most 2000 characters, got %', length(comment) using errcode = '22023';
    end if;
    v_alert := ml_private.find_alert(v_tenant, alert);
    if v_alert.status <> 'open' then
        raise exception 'alert % is %, only an open alert can be acknowledged', alert, v_alert.status
            using errcode = '55000';
    end if;
    update ml.alerts a
       set status = 'acknowledged', acknowledged_by = ml_private.caller_user_id(), acknowledged_at = now(),
           notes = a.notes || jsonb_build_array(jsonb_build_object(
               'action', 'acknowledged', 'by', ml_private.caller_user_id(), 'at', now(), 'comment', comment))
     where a.id = v_alert.id
    returning a.* into v_alert;
    perform ml_private.publish_alert(v_alert, 'alert.acknowledged');
    return ml_private.alert_document(v_alert);
end
$$;

-- ml.resolve_alert(alert uuid, comment text default null) returns jsonb
-- Closes an open or acknowledged alert: resolved_by and _at set, the comment kept in notes. The
-- next finding with its fingerprint opens a new alert. Publishes alert.resolved. Returns the
-- alert.
-- Raises: 55000 already resolved; P0002 no such alert in the caller's tenant; 22023 a comment
-- over 2000 characters; 42501 a viewer.
-- Callers: members who may write; service_role.
create or replace function ml.resolve_alert(alert uuid, comment text default null) returns jsonb
language plpgsql volatile security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_tenant uuid := ml_private.acting_tenant_id(true);
    v_alert  ml.alerts;
begin
    if length(comment) > 2000 then
        raise exception 'comment: at most 2000 characters, got %', length(comment) using errcode = '22023';
    end if;
    v_alert := ml_private.find_alert(v_tenant, alert);
    if v_alert.status = 'resolved' then
        raise exception 'alert % is already resolved', alert using errcode = '55000';
    end if;
    update ml.alerts a
       set status = 'resolved', resolved_by = ml_private.caller_user_id(), resolved_at = now(),
           notes = a.notes || jsonb_build_array(jsonb_build_object(
               'action', 'resolved', 'by', ml_private.caller_user_id(), 'at', now(), 'comment', comment))
     where a.id = v_alert.id
    returning a.* into v_alert;
    perform ml_private.publish_alert(v_alert, 'alert.resolved');
    return ml_private.alert_document(v_alert);
end
$$;

-- ml.alerts(project text, status text default null) returns jsonb
-- The project's alerts, newest finding first (last_seen desc), as a JSON array of
-- {id, project, kind, feature, severity, status, count, first_seen, last_seen, report_id,
-- message, evidence, acknowledged_*, resolved_*, notes}; status filters: open, acknowledged,
-- resolved, or active (open and acknowledged). At most 1000.
-- Raises: 22023 an unknown status; P0002 no such project. Callers: members; service_role.
create or replace function ml.alerts(project text, status text default null) returns jsonb
language plpgsql stable security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_tenant  uuid := ml_private.acting_tenant_id(false);
    v_project ml.projects;
begin
    if status is not null and status not in ('open', 'acknowledged', 'resolved', 'active') then
        raise exception 'status: % is not open, acknowledged, resolved or active', quote_literal(status)
            using errcode = '22023';
    end if;
    v_project := ml_private.find_project(v_tenant, project);
    return coalesce((
        select jsonb_agg(ml_private.alert_document(x.a) order by (x.a).last_seen desc, (x.a).id)
        from (select a from ml.alerts a
              where a.tenant_id = v_tenant and a.project_id = v_project.id
                and (status is null
                     or (status = 'active' and a.status <> 'resolved')
                     or a.status = status)
              order by a.last_seen desc, a.id
              limit 1000) x), '[]'::jsonb);
end
$$;

------------------------------------------------------------------------------------------------
-- Supabase Realtime (see the header)
------------------------------------------------------------------------------------------------

do $$
declare
    v_events_kind text := (select c.relkind::text from pg_class c where c.oid = 'ml.events'::regclass);
begin
    if not exists (select 1 from pg_publication where pubname = 'supabase_realtime') then
        return;
    end if;
    if not exists (select 1 from pg_publication_rel r join pg_publication p on p.oid = r.prpubid
                   where p.pubname = 'supabase_realtime' and r.prrelid = 'ml.alerts'::regclass)
       and not (select puballtables from pg_publication where pubname = 'supabase_realtime') then
        alter publication supabase_realtime add table ml.alerts;
    end if;
    -- Native partitioning only: a hypertable's chunks cannot be published as ml.events.
    if v_events_kind = 'p' then
        if not (select pubviaroot from pg_publication where pubname = 'supabase_realtime') then
            alter publication supabase_realtime set (publish_via_partition_root = true);
        end if;
        if not exists (select 1 from pg_publication_rel r join pg_publication p on p.oid = r.prpubid
                       where p.pubname = 'supabase_realtime' and r.prrelid = 'ml.events'::regclass)
           and not (select puballtables from pg_publication where pubname = 'supabase_realtime') then
            alter publication supabase_realtime add table ml.events;
        end if;
    end if;
end
$$;

------------------------------------------------------------------------------------------------
-- Grants
------------------------------------------------------------------------------------------------

grant execute on function
    ml.acknowledge_alert(uuid, text),
    ml.resolve_alert(uuid, text),
    ml.alerts(text, text)
to authenticated, service_role;
