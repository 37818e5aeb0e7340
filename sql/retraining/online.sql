-- pgmlops: retraining/online.sql — the online end of the retraining loop
--
-- The contract: docs/retraining.md, "Online evaluation, rollback and recall".
--
-- The maintenance loop (ml_private.run_maintenance, from pg_cron or the workers' scheduler)
-- calls ml_private.check_retraining_online, which for every project with an enabled retraining
-- policy
--   * judges the shadow a retraining cycle deployed (ml_private.evaluate_shadow: promote,
--     reject or wait);
--   * watches the champion a retraining cycle promoted (ml_private.check_retraining_rollback):
--     when its realized metric over policy.rollback.window, from its predictions joined to their
--     feedback, drops more than policy.rollback.max_drop below the metric it was promoted on,
--     the deployment is rolled back (ml.rollback), the replaced version is champion again and a
--     'rollback' row records the evidence (published as retraining.rollback).
-- After each drift report, ml_private.check_retraining_triggers calls
-- ml_private.record_regime_recall: a window whose regime matches a past window
-- (summary.regime.matched) served by another version than the champion gives a 'recall' row
-- naming that version as a candidate.

------------------------------------------------------------------------------------------------
-- Rollback of a promoted champion
------------------------------------------------------------------------------------------------

-- ml_private.realized_metric(p_tenant uuid, p_project uuid, p_version uuid, p_metric text,
--     p_since timestamptz) returns table (value float8, labelled bigint)
-- The realized p_metric of version p_version over its live predictions (shadow rows excluded)
-- made at or after p_since that have feedback: accuracy (prediction equal to the label), mae
-- or rmse (numeric predictions and labels) directly; precision, recall, f1 and roc_auc as the
-- performance monitor computes them (ml_private.performance_buckets over one bucket, realized,
-- labelled rows only: scikit-learn's numbers, binary with the version's second class positive,
-- else macro averages). value is null when no prediction is labelled (and for roc_auc when the
-- labels hold one class). Raises 0A000 for a metric that is none of these.
-- Callers: ml_private.check_retraining_rollback (owner).
create or replace function ml_private.realized_metric(p_tenant uuid, p_project uuid, p_version uuid, p_metric text,
                                                      p_since timestamptz)
returns table (value float8, labelled bigint)
language plpgsql volatile
set search_path = ''
as $$
declare
    v_end timestamptz := clock_timestamp() + interval '1 millisecond';
begin
    if p_metric in ('precision', 'recall', 'f1', 'roc_auc') then
        return query
            select b.value, b.sample_count
            from ml_private.performance_buckets(p_tenant, p_project, p_version,
                                                (select pr.task from ml.projects pr where pr.id = p_project),
                                                (select v.signature -> 'classes' from ml.model_versions v where v.id = p_version),
                                                p_since, v_end, v_end - p_since, null, false, true) b
            where b.metric = p_metric and not b.estimated;
        return;
    end if;
    if p_metric not in ('accuracy', 'mae', 'rmse') then
        raise exception 'policy.rollback.metric: % is not a live metric (accuracy, precision, recall, f1, roc_auc, mae, rmse)', p_metric
            using errcode = '0A000';
    end if;
    return query
        select case p_metric
                   when 'accuracy' then avg(case when p.prediction = f.label then 1.0 else 0.0 end)::float8
                   when 'mae' then avg(abs((p.prediction #>> '{}')::float8 - (f.label #>> '{}')::float8))
                   else sqrt(avg(((p.prediction #>> '{}')::float8 - (f.label #>> '{}')::float8) ^ 2)) end,
               count(*)
        from ml.predictions p
        join ml.feedback f on f.prediction_id = p.id and f.predicted_at = p.created_at
        where p.tenant_id = p_tenant and p.project_id = p_project and p.model_version_id = p_version
          and p.shadow_of is null and p.created_at >= p_since;
end
$$;

-- ml_private.check_retraining_rollback(p_project text) returns jsonb
-- Watches the champion the project's last 'promote' row (of a retraining cycle, not rolled back
-- since) put in service, when that version is still champion and policy.rollback.enabled:
--   * baseline: the metric it was promoted on — its live accuracy in the shadow comparison
--     (shadow_correct / pairs of the promote row), else the challenger's holdout value of the
--     cycle's 'evaluate' row when that test's metric is policy.rollback.metric;
--   * realized: ml_private.realized_metric over its predictions since max(promotion,
--     now - policy.rollback.window), judged once policy.online.min_samples are labelled;
--   * drop = baseline - realized (realized - baseline for mae and rmse); when drop >
--     policy.rollback.max_drop: ml.rollback(project); when the deployment now active still
--     routes to the degraded version (the shadow deployment it was promoted from), a single
--     deployment of its live version; that version promoted champion again (ml.promote; a refusal
--     is noted in the evidence); a 'rollback' row in the promote's cycle (decision 'rolled back',
--     evidence {metric, baseline, realized, drop, max_drop, window, labelled, since,
--     deployment_id, restored_version, ...}), published as retraining.rollback.
-- Returns {status: none | waiting | kept | rollback, reason, ...the evidence} (waiting also while
-- the realized metric is undefined, e.g. roc_auc over labels of one class).
-- Acts for the acting tenant (a service caller). Raises P0002 unknown project.
-- Callers: ml_private.check_retraining_online, service_role.
create or replace function ml_private.check_retraining_rollback(p_project text) returns jsonb
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_tenant    uuid := ml_private.acting_tenant_id(true);
    v_project   ml.projects;
    v_policy    jsonb;
    v_promote   ml.retraining_events;
    v_champion  uuid;
    v_model     text;
    v_version   int;
    v_metric    text;
    v_baseline  float8;
    v_eval      jsonb;
    v_since     timestamptz;
    v_value     float8;
    v_n         bigint;
    v_min       int;
    v_drop      float8;
    v_max       float8;
    v_out       jsonb;
    v_dep       uuid;
    v_restored  uuid;
    v_rest_v    int;
    v_note      text;
    v_reason    text;
begin
    v_project := ml_private.find_project(v_tenant, p_project);
    select x.policy into v_policy from ml.retraining_policies x where x.project_id = v_project.id and x.enabled;
    if v_policy is null or not coalesce((v_policy #>> '{rollback,enabled}')::boolean, true) then
        return jsonb_build_object('status', 'none', 'reason', 'no enabled retraining policy with a rollback bound');
    end if;
    select a.model_version_id into v_champion from ml.model_aliases a join ml.models m on m.id = a.model_id
    where m.project_id = v_project.id and a.alias = 'champion' limit 1;
    select * into v_promote from ml.retraining_events e
    where e.project_id = v_project.id and e.kind = 'promote' and e.model_version_id = v_champion
      and not exists (select 1 from ml.retraining_events l where l.cycle_id = e.cycle_id and l.kind = 'rollback' and l.at > e.at)
    order by e.at desc limit 1;
    if v_promote.id is null then
        return jsonb_build_object('status', 'none', 'reason', 'the champion was not promoted by a retraining cycle');
    end if;
    select m.name, v.version into v_model, v_version from ml.model_versions v join ml.models m on m.id = v.model_id
    where v.id = v_champion;
    v_metric := coalesce(v_policy #>> '{rollback,metric}', case when v_project.task = 'regression' then 'rmse' else 'accuracy' end);
    v_max := coalesce((v_policy #>> '{rollback,max_drop}')::float8, 0.05);
    v_min := coalesce((v_policy #>> '{online,min_samples}')::int, 500);
    -- The metric it was promoted on.
    if v_metric = 'accuracy' and (v_promote.evidence ->> 'pairs')::float8 > 0 then
        v_baseline := (v_promote.evidence ->> 'shadow_correct')::float8 / (v_promote.evidence ->> 'pairs')::float8;
    else
        select e.test_results into v_eval from ml.retraining_events e
        where e.cycle_id = v_promote.cycle_id and e.kind = 'evaluate' order by e.at desc limit 1;
        if v_eval ->> 'metric' = v_metric and jsonb_typeof(v_eval -> 'challenger') = 'number' then
            v_baseline := (v_eval ->> 'challenger')::float8;
        end if;
    end if;
    if v_baseline is null then
        return jsonb_build_object('status', 'none', 'metric', v_metric,
            'reason', format('no %s was recorded when %s@%s was promoted: nothing to compare with', v_metric, v_model, v_version));
    end if;
    v_since := greatest(v_promote.at, clock_timestamp() - coalesce((v_policy #>> '{rollback,window}')::interval, interval '1 day'));
    select r.value, r.labelled into v_value, v_n
    from ml_private.realized_metric(v_tenant, v_project.id, v_champion, v_metric, v_since) r;
    v_drop := case when v_metric in ('mae', 'rmse') then v_value - v_baseline else v_baseline - v_value end;
    v_out := jsonb_build_object('metric', v_metric, 'baseline', v_baseline, 'realized', v_value, 'drop', v_drop,
                                'max_drop', v_max, 'window', v_policy #>> '{rollback,window}', 'since', v_since,
                                'labelled', v_n, 'min_samples', v_min, 'champion_version', v_version,
                                'promote_event_id', v_promote.id);
    if v_n < v_min then
        return v_out || jsonb_build_object('status', 'waiting', 'reason', format('%s of %s labelled predictions', v_n, v_min));
    end if;
    if v_value is null then
        return v_out || jsonb_build_object('status', 'waiting', 'reason', format(
            'the realized %s of %s labelled predictions is undefined (their labels hold one class)', v_metric, v_n));
    end if;
    v_reason := format('%s@%s''s realized %s over %s labelled predictions since %s is %s, %s at promotion: a drop of %s',
                       v_model, v_version, v_metric, v_n, v_since, round(v_value::numeric, 4), round(v_baseline::numeric, 4),
                       round(v_drop::numeric, 4));
    if v_drop <= v_max then
        return v_out || jsonb_build_object('status', 'kept', 'reason', format('%s, within the bound %s', v_reason, v_max));
    end if;

    v_dep := ml.rollback(p_project);
    if exists (select 1 from ml.deployment_arms a where a.deployment_id = v_dep and a.model_version_id = v_champion) then
        -- Back to the shadow it was promoted from: the degraded version leaves the traffic.
        select p.model_version_id into v_restored from ml_private.deployment_primary(v_tenant, v_project.id) p;
        select v.version into v_rest_v from ml.model_versions v where v.id = v_restored;
        v_dep := ml.deploy(p_project, 'single', jsonb_build_array(jsonb_build_object('arm', 'a', 'model', v_model, 'version', v_rest_v)),
                           jsonb_build_object('reason', 'retraining: rollback of a degraded champion'));
    else
        select p.model_version_id into v_restored from ml_private.deployment_primary(v_tenant, v_project.id) p;
        select v.version into v_rest_v from ml.model_versions v where v.id = v_restored;
    end if;
    if v_restored is not null and v_rest_v is not null then
        begin
            perform ml.promote((select m.name from ml.model_versions v join ml.models m on m.id = v.model_id where v.id = v_restored),
                               v_rest_v, 'champion');
        exception when others then
            v_note := format('champion alias not moved back: %s', sqlerrm);
        end;
    end if;
    v_out := v_out || jsonb_build_object('deployment_id', v_dep, 'restored_version', v_rest_v, 'alias_note', v_note);
    v_reason := format('%s@%s rolled back, %s@%s serves again: %s, beyond the bound %s', v_model, v_version, v_model,
                       coalesce(v_rest_v::text, '?'), v_reason, v_max);
    perform ml_private.record_retraining_step(v_promote.cycle_id, 'rollback', v_out, jsonb_build_object('since', v_since,
                                              'labelled', v_n), v_champion, v_out, 'rolled back', v_reason, null);
    return v_out || jsonb_build_object('status', 'rollback', 'reason', v_reason);
end
$$;

------------------------------------------------------------------------------------------------
-- The maintenance step
------------------------------------------------------------------------------------------------

-- ml_private.check_retraining_online() returns jsonb
-- For every project with an enabled retraining policy (every tenant), acting for its tenant:
-- ml_private.evaluate_shadow (a shadow deployed by a retraining cycle: promote, reject or wait)
-- then ml_private.check_retraining_rollback (a champion a cycle promoted: rollback past the
-- bound). A canary deployed by a cycle is not judged here (its abort rules are checked by
-- ml_private.check_deployments). Returns {"<project id>": {"project", "shadow", "rollback"}} for
-- the projects where something was judged (status other than 'none'); a project whose check
-- fails gets {"error": message} and the others go on. Restores the caller's pgmlops.tenant_id.
-- Callers: ml_private.run_maintenance (owner), service_role.
create or replace function ml_private.check_retraining_online() returns jsonb
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_saved  text := current_setting('pgmlops.tenant_id', true);
    v_p      record;
    v_shadow jsonb;
    v_back   jsonb;
    v_out    jsonb := '{}';
begin
    for v_p in select x.tenant_id, p.id, p.name from ml.retraining_policies x join ml.projects p on p.id = x.project_id
               where x.enabled order by x.tenant_id, p.name loop
        perform set_config('pgmlops.tenant_id', v_p.tenant_id::text, true);
        begin
            v_shadow := ml_private.evaluate_shadow(v_p.name);
            v_back := ml_private.check_retraining_rollback(v_p.name);
            if v_shadow ->> 'status' <> 'none' or v_back ->> 'status' <> 'none' then
                v_out := v_out || jsonb_build_object(v_p.id, jsonb_build_object('project', v_p.name, 'shadow', v_shadow,
                                                                               'rollback', v_back));
            end if;
        exception when others then
            v_out := v_out || jsonb_build_object(v_p.id, jsonb_build_object('project', v_p.name, 'error', sqlerrm));
        end;
    end loop;
    perform set_config('pgmlops.tenant_id', coalesce(v_saved, ''), true);
    return v_out;
end
$$;

------------------------------------------------------------------------------------------------
-- Regime recall
------------------------------------------------------------------------------------------------

-- ml_private.record_regime_recall(p_report uuid, p_cycle uuid default null) returns jsonb
-- When report p_report's regime section (summary.regime, ml_private.record_window_embedding)
-- matched a past window, and the version that served that window (its ml.window_embeddings
-- row) is not the project's champion, records a 'recall' row naming that version as a
-- candidate (cycle_id p_cycle: the trigger the same report fired, or null; as_of the report's
-- window_end; evidence {report_id, window_start, window_end, match, champion_version,
-- recalled_version}; decision 'candidate') and publishes retraining.recall. Returns
-- {recalled: true, event_id, model_version_id, version} or {recalled: false, reason}; a report
-- already recalled returns its row again ("repeated": true).
-- Raises P0002 no such report. Callers: ml_private.check_retraining_triggers (owner).
create or replace function ml_private.record_regime_recall(p_report uuid, p_cycle uuid default null) returns jsonb
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_report   ml.drift_reports;
    v_match    jsonb;
    v_served   uuid;
    v_champion uuid;
    v_model    text;
    v_old      int;
    v_cur      int;
    v_done     ml.retraining_events;
    v_id       uuid := gen_random_uuid();
    v_reason   text;
begin
    select * into v_report from ml.drift_reports r where r.id = p_report;
    if v_report.id is null then
        raise exception 'drift report % does not exist', coalesce(p_report::text, 'NULL') using errcode = 'P0002';
    end if;
    if not coalesce((v_report.summary #>> '{regime,matched}')::boolean, false) then
        return jsonb_build_object('recalled', false, 'reason', 'the window matches no past window');
    end if;
    select * into v_done from ml.retraining_events e where e.report_id = p_report and e.kind = 'recall' limit 1;
    if v_done.id is not null then
        return jsonb_build_object('recalled', true, 'event_id', v_done.id, 'model_version_id', v_done.model_version_id,
                                  'repeated', true);
    end if;
    v_match := v_report.summary #> '{regime,match}';
    select e.model_version_id into v_served from ml.window_embeddings e where e.report_id = (v_match ->> 'report_id')::uuid;
    select a.model_version_id into v_champion from ml.model_aliases a join ml.models m on m.id = a.model_id
    where m.project_id = v_report.project_id and a.alias = 'champion' limit 1;
    if v_served is null or v_served = v_champion then
        return jsonb_build_object('recalled', false, 'reason', 'the matching window was served by the champion');
    end if;
    select m.name, v.version into v_model, v_old from ml.model_versions v join ml.models m on m.id = v.model_id where v.id = v_served;
    select v.version into v_cur from ml.model_versions v where v.id = v_champion;
    v_reason := format('the window %s to %s matches the window %s to %s (cosine distance %s <= %s), served by %s@%s; '
                       '%s@%s recalled as a candidate beside the champion %s',
                       v_report.window_start, v_report.window_end, v_match ->> 'window_start', v_match ->> 'window_end',
                       round((v_match ->> 'distance')::numeric, 4), round((v_match ->> 'threshold')::numeric, 4), v_model, v_old,
                       v_model, v_old, coalesce(v_model || '@' || v_cur, 'none'));
    insert into ml.retraining_events (id, tenant_id, project_id, as_of, kind, cycle_id, report_id, evidence, model_version_id,
                                      decision, reason)
    values (v_id, v_report.tenant_id, v_report.project_id, v_report.window_end, 'recall', p_cycle, v_report.id,
            jsonb_build_object('report_id', v_report.id, 'window_start', v_report.window_start, 'window_end', v_report.window_end,
                               'match', v_match, 'champion_version', v_cur, 'recalled_version', v_old),
            v_served, 'candidate', v_reason);
    perform ml_private.publish(v_report.tenant_id, 'retraining', 'retraining.recall', jsonb_build_object(
        'event_id', v_id, 'cycle_id', p_cycle, 'project', (select p.name from ml.projects p where p.id = v_report.project_id),
        'kind', 'recall', 'decision', 'candidate', 'reason', v_reason, 'model_version_id', v_served, 'report_id', v_report.id));
    return jsonb_build_object('recalled', true, 'event_id', v_id, 'model_version_id', v_served, 'version', v_old);
end
$$;

------------------------------------------------------------------------------------------------
-- Grants
------------------------------------------------------------------------------------------------

revoke all on function
    ml_private.realized_metric(uuid, uuid, uuid, text, timestamptz),
    ml_private.check_retraining_rollback(text),
    ml_private.check_retraining_online(),
    ml_private.record_regime_recall(uuid, uuid)
from public;
grant execute on function
    ml_private.check_retraining_rollback(text),
    ml_private.check_retraining_online()
to service_role;
