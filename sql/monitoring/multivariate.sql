-- pgmlops: monitoring/multivariate.sql — multivariate and embedding drift (docs/monitoring.md)
--
-- ml.drift_report enqueues a `monitor` job (payload {report_id}) and leaves the report 'pending';
-- the worker (pgmlops.monitoring._multivariate.monitor) reads the report's reference (samples of
-- the version's training set) and current window (samples of its live predictions), computes
-- NannyML's multivariate drift over the tabular inputs and embedding drift per vector or text
-- input, and stores them here, in the job's transaction:
--   feature '*', kind 'multivariate'   domain_classifier   (5-fold stratified CV ROC AUC of a
--                                      gradient boosting classifier telling reference from
--                                      current; drifted above 0.65, NannyML's upper
--                                      ConstantThreshold), pca_reconstruction (mean Euclidean
--                                      reconstruction error of the current rows through the
--                                      reference's PCA keeping 65% of the variance; drifted
--                                      outside mean +- 3 std of the reference's 10 chunks).
--   feature <input>, kind 'vector' or 'text'   centroid, mmd, domain_classifier.
-- The row shapes (statistic, p_value, threshold, details) are in docs/monitoring.md.

------------------------------------------------------------------------------------------------
-- Storing a report's multivariate part
------------------------------------------------------------------------------------------------

-- ml_private.multivariate_tests() returns text[]: the tests the monitor job stores.
create or replace function ml_private.multivariate_tests() returns text[]
language sql immutable
set search_path = ''
as $$ select array['domain_classifier', 'pca_reconstruction', 'centroid', 'mmd'] $$;

-- ml.finish_monitor_report(report uuid, results jsonb, section jsonb, error text default null) returns jsonb
-- Completes drift report `report` with its multivariate part, in the monitor job's transaction:
-- replaces the report's rows of the multivariate tests (ml_private.multivariate_tests()) in
-- ml.drift_results by `results`, sets summary.multivariate to `section` (with `error` when
-- given), the status to 'complete' ('failed' with an error) and finished_at, raises the
-- report's alerts again (ml_private.raise_report_alerts: idempotent per report) and publishes
-- 'report.completed' (topic 'monitoring'). Idempotent: a retry stores the same rows once.
--   results  [{feature, kind, test, statistic, p_value?, threshold, drifted, row_count?,
--             details?}], feature '*' and kind 'multivariate' for the tests over all inputs.
-- Returns {report_id, status, results}.
-- Raises 22023 results not an array, an element missing a field, an unknown test or kind, a
-- threshold or statistic not a number, drifted not a boolean, section not an object (naming
-- the element and the field); P0002 no such report in the acting tenant; 42501 not a service
-- caller. Nothing is written on error. Callers: service_role (the monitor job's worker).
create or replace function ml.finish_monitor_report(report uuid, results jsonb, section jsonb, error text default null)
returns jsonb
language plpgsql volatile security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_r    ml.drift_reports;
    v_e    jsonb;
    v_i    int := 0;
    v_key  text;
    v_n    int;
begin
    perform ml_private.assert_service('ml.finish_monitor_report');
    select * into v_r from ml.drift_reports r where r.id = report and r.tenant_id = ml_private.acting_tenant_id(true) for update;
    if v_r.id is null then
        raise exception 'drift report % does not exist', coalesce(report::text, 'NULL') using errcode = 'P0002';
    end if;
    if results is null or jsonb_typeof(results) <> 'array' then
        raise exception 'results: must be a JSON array, got %', coalesce(jsonb_typeof(results), 'NULL') using errcode = '22023';
    end if;
    if section is null or jsonb_typeof(section) <> 'object' then
        raise exception 'section: must be a JSON object, got %', coalesce(jsonb_typeof(section), 'NULL') using errcode = '22023';
    end if;
    for v_e in select value from jsonb_array_elements(results) loop
        v_i := v_i + 1;
        if jsonb_typeof(v_e) <> 'object' then
            raise exception 'results[%]: must be an object', v_i using errcode = '22023';
        end if;
        foreach v_key in array array['feature', 'kind', 'test', 'threshold', 'drifted'] loop
            if not v_e ? v_key or jsonb_typeof(v_e -> v_key) = 'null' then
                raise exception 'results[%].%: required', v_i, v_key using errcode = '22023';
            end if;
        end loop;
        if jsonb_typeof(v_e -> 'feature') <> 'string' or length(v_e ->> 'feature') = 0 then
            raise exception 'results[%].feature: must be a non-empty string', v_i using errcode = '22023';
        end if;
        if not (v_e ->> 'test' = any (ml_private.multivariate_tests())) then
            raise exception 'results[%].test: must be one of %, got %', v_i, array_to_string(ml_private.multivariate_tests(), ', '),
                v_e ->> 'test' using errcode = '22023';
        end if;
        if v_e ->> 'kind' not in ('multivariate', 'vector', 'text') then
            raise exception 'results[%].kind: must be multivariate, vector or text, got %', v_i, v_e ->> 'kind' using errcode = '22023';
        end if;
        if (v_e ->> 'kind' = 'multivariate') <> (v_e ->> 'feature' = '*') then
            raise exception 'results[%].feature: the multivariate tests are stored under feature *, and only they', v_i
                using errcode = '22023';
        end if;
        if jsonb_typeof(v_e -> 'threshold') <> 'number' then
            raise exception 'results[%].threshold: must be a number', v_i using errcode = '22023';
        end if;
        foreach v_key in array array['statistic', 'p_value', 'row_count'] loop
            if v_e ? v_key and jsonb_typeof(v_e -> v_key) not in ('number', 'null') then
                raise exception 'results[%].%: must be a number or null', v_i, v_key using errcode = '22023';
            end if;
        end loop;
        if jsonb_typeof(v_e -> 'drifted') <> 'boolean' then
            raise exception 'results[%].drifted: must be true or false', v_i using errcode = '22023';
        end if;
        if v_e ? 'details' and jsonb_typeof(v_e -> 'details') <> 'object' then
            raise exception 'results[%].details: must be an object', v_i using errcode = '22023';
        end if;
    end loop;
    if (select count(*) from (select distinct x ->> 'feature', x ->> 'test' from jsonb_array_elements(results) x) d)
       <> jsonb_array_length(results) then
        raise exception 'results: a (feature, test) pair appears twice' using errcode = '22023';
    end if;

    delete from ml.drift_results d
    where d.report_id = v_r.id and d.role = 'input' and d.test = any (ml_private.multivariate_tests());
    insert into ml.drift_results (tenant_id, report_id, feature, role, kind, test, statistic, p_value, threshold, drifted,
                                  row_count, nulls, details)
    select v_r.tenant_id, v_r.id, x ->> 'feature', 'input', x ->> 'kind', x ->> 'test', (x ->> 'statistic')::float8,
           (x ->> 'p_value')::float8, (x ->> 'threshold')::float8, (x ->> 'drifted')::boolean,
           coalesce((x ->> 'row_count')::bigint, 0), 0, coalesce(x -> 'details', '{}')
    from jsonb_array_elements(results) x;
    get diagnostics v_n = row_count;

    update ml.drift_reports r
    set summary = r.summary || jsonb_build_object('multivariate',
                      section || case when error is null then '{}'::jsonb else jsonb_build_object('error', left(error, 4000)) end),
        status = case when error is null then 'complete' else 'failed' end,
        finished_at = clock_timestamp()
    where r.id = v_r.id
    returning * into v_r;
    update ml.drift_reports r set summary = r.summary || jsonb_build_object('alerts_raised', ml_private.raise_report_alerts(v_r.id))
    where r.id = v_r.id;
    perform ml_private.publish(v_r.tenant_id, 'monitoring', 'report.completed', jsonb_build_object(
        'report_id', v_r.id, 'project_id', v_r.project_id, 'status', v_r.status, 'job_id', v_r.job_id,
        'multivariate_drift', coalesce((section ->> 'drifted')::boolean, false)));
    return jsonb_build_object('report_id', v_r.id, 'status', v_r.status, 'results', v_n);
end
$$;

------------------------------------------------------------------------------------------------
-- Grants
------------------------------------------------------------------------------------------------

grant execute on function
    ml.finish_monitor_report(uuid, jsonb, jsonb, text),
    ml_private.multivariate_tests()
to service_role;
