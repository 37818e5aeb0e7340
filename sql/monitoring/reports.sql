-- pgmlops: monitoring/reports.sql — drift reports (docs/monitoring.md, "Drift reports")
--
-- ml.drift_report(project, window_start, window_end, options) compares a window of the project's
-- live predictions (or a table or query given in options.source, read with the caller's rights)
-- with the reference profile of the deployed version (or options.model / version), feature by
-- feature, and stores the verdicts in ml.drift_reports and ml.drift_results.
--
-- Rights. The report itself is written by the owner's function ml_private.drift_report_run. A
-- source is text a client wrote: it is run only by ml.drift_report, SECURITY INVOKER, as the
-- caller (ml_private.batch_source, the rule of ml.predict_batch: sql/scoring/batch.sql), and its
-- rows are copied into a temporary table of the caller's session, which the owner's side reads
-- after checking that it is one (ml_private.batch_check_temp) holding built-in types only.
--
-- Test choice (Evidently 0.7.23's DataDriftPreset defaults, legacy/calculations/stattests/
-- registry.py, _get_default_stattest): with n_ref the reference's non-null values and n_values
-- the distinct non-null values of reference and current together (pandas nunique of both),
--   n_ref <= 1000: numerical -> ks when n_values > 5, else chi2 (n_values > 2) or z;
--                  categorical -> chi2 when n_values > 2, else z;            drift when p < 0.05
--                  (ks: p <= 0.05, as Evidently);
--   n_ref > 1000:  numerical -> wasserstein_normed when n_values > 5, else jensen_shannon;
--                  categorical -> jensen_shannon;                          drift when >= 0.1.
-- Numerical: int, float, timestamp columns (Evidently's numerical columns); categorical: bool,
-- text, category. Dataset drift when drifted inputs / tested inputs >= drift_share (0.5).
-- Every test and threshold can be set per feature (options.features).

------------------------------------------------------------------------------------------------
-- Tests and their rules
------------------------------------------------------------------------------------------------

-- ml_private.drift_tests() returns text[]: the tests a report runs (ml.drift_results.test).
create or replace function ml_private.drift_tests() returns text[]
language sql immutable parallel safe
return array['ks', 'wasserstein', 'wasserstein_normed', 'chi2', 'z', 'psi', 'jensen_shannon', 'hellinger'];

-- ml_private.drift_p_value_test(p_test text) returns boolean: whether a test decides by its
-- p-value (ks, chi2, z: drift below the threshold) rather than by a distance (drift at or above).
create or replace function ml_private.drift_p_value_test(p_test text) returns boolean
language sql immutable parallel safe
return p_test in ('ks', 'chi2', 'z');

-- ml_private.drift_default_threshold(p_test text) returns float8: 0.05 for the p-value tests, 0.1
-- for the distances (Evidently's defaults).
create or replace function ml_private.drift_default_threshold(p_test text) returns float8
language sql immutable parallel safe
return case when ml_private.drift_p_value_test(p_test) then 0.05 else 0.1 end;

-- ml_private.drift_default_test(p_numerical boolean, p_reference_rows bigint, p_values bigint) returns text
-- Evidently's default test (header of this file) for a numerical or categorical column, from
-- the reference's non-null values and the distinct values of both samples.
create or replace function ml_private.drift_default_test(p_numerical boolean, p_reference_rows bigint, p_values bigint) returns text
language sql immutable parallel safe
set search_path = ''
as $$
    select case
        when p_reference_rows <= 1000 then
            case when p_numerical and p_values > 5 then 'ks' when p_values > 2 then 'chi2' else 'z' end
        else
            case when p_numerical and p_values > 5 then 'wasserstein_normed' else 'jensen_shannon' end
    end
$$;

-- ml_private.drift_decision(p_test text, p_statistic float8, p_p_value float8, p_threshold float8) returns boolean
-- Whether a test's result is drift: ks p <= threshold; chi2, z p < threshold; a distance >=
-- threshold (Evidently's comparisons). A NaN or missing result is no drift.
create or replace function ml_private.drift_decision(p_test text, p_statistic float8, p_p_value float8, p_threshold float8) returns boolean
language sql immutable parallel safe
set search_path = ''
as $$
    select coalesce(case
        when p_test = 'ks' then p_p_value <= p_threshold
        when ml_private.drift_p_value_test(p_test) then p_p_value < p_threshold
        else p_statistic >= p_threshold and p_statistic <> 'NaN'::float8 end, false)
$$;

-- ml_private.drift_numerical(p_dtype text) returns boolean: int, float and timestamp columns are
-- numerical (Evidently's numerical columns); bool, text and category are categorical.
create or replace function ml_private.drift_numerical(p_dtype text) returns boolean
language sql immutable parallel safe
return p_dtype in ('int', 'float', 'timestamp');

------------------------------------------------------------------------------------------------
-- Options
------------------------------------------------------------------------------------------------

-- ml_private.drift_options(p_options jsonb) returns jsonb
-- Checks a report's options and returns them resolved: {mode, drift_share, features: {name:
-- {test?, threshold?}}, model?, version?, alias?, source?, time_column?, multivariate?}. Known
-- keys: mode ('exact' default | 'fast'), drift_share (a number in (0, 1], default 0.5), features
-- ({"amount": {"test": "psi", "threshold": 0.2}}: test among ml_private.drift_tests(), threshold
-- a number, in (0, 1) for the p-value tests, >= 0 for the distances), model / version / alias
-- (the version whose reference is used, as ml.predict_batch names it), source (a table name or a
-- query), time_column (a column of the source: its rows in the window only), multivariate
-- (boolean), and the options of the report's other sections: bucket, buckets, performance
-- (realized and estimated performance), regime_threshold (the regime match).
-- Whether a feature named in options.features exists is checked by the report, which knows them.
-- Raises 22023 naming the field and the rule.
create or replace function ml_private.drift_options(p_options jsonb) returns jsonb
language plpgsql immutable
set search_path = ''
as $$
declare
    v_known text[] := array['mode', 'drift_share', 'features', 'model', 'version', 'alias', 'source', 'time_column',
                            'multivariate', 'bucket', 'buckets', 'performance', 'regime_threshold'];
    v_key   text;
    v_spec  jsonb;
    v_sk    text;
    v_test  text;
    v_t     float8;
    v_out   jsonb;
begin
    if p_options is null or jsonb_typeof(p_options) <> 'object' then
        raise exception 'options: must be a JSON object, got %', coalesce(jsonb_typeof(p_options), 'NULL') using errcode = '22023';
    end if;
    select k into v_key from jsonb_object_keys(p_options) k where not k = any (v_known) order by k limit 1;
    if v_key is not null then
        raise exception 'options: unknown option % (known: %)', quote_literal(v_key), array_to_string(v_known, ', ') using errcode = '22023';
    end if;
    v_out := jsonb_build_object('mode', coalesce(p_options ->> 'mode', 'exact'), 'drift_share', 0.5, 'features', '{}'::jsonb);
    if p_options ? 'mode' and (jsonb_typeof(p_options -> 'mode') <> 'string' or p_options ->> 'mode' not in ('exact', 'fast')) then
        raise exception 'options.mode: must be exact or fast, got %', p_options -> 'mode' using errcode = '22023';
    end if;
    if p_options ? 'drift_share' then
        if jsonb_typeof(p_options -> 'drift_share') <> 'number' or (p_options ->> 'drift_share')::float8 <= 0
           or (p_options ->> 'drift_share')::float8 > 1 then
            raise exception 'options.drift_share: must be a number above 0 and at most 1, got %', p_options -> 'drift_share'
                using errcode = '22023';
        end if;
        v_out := v_out || jsonb_build_object('drift_share', (p_options ->> 'drift_share')::float8);
    end if;
    if p_options ? 'multivariate' and jsonb_typeof(p_options -> 'multivariate') <> 'boolean' then
        raise exception 'options.multivariate: must be true or false, got %', p_options -> 'multivariate' using errcode = '22023';
    end if;
    foreach v_key in array array['source', 'time_column'] loop
        if p_options ? v_key and (jsonb_typeof(p_options -> v_key) <> 'string' or btrim(p_options ->> v_key) = '') then
            raise exception 'options.%: must be a non-empty string, got %', v_key, p_options -> v_key using errcode = '22023';
        end if;
    end loop;
    if p_options ? 'time_column' and not p_options ? 'source' then
        raise exception 'options.time_column: names a column of options.source; without a source the window is the predictions'' created_at'
            using errcode = '22023';
    end if;
    if p_options ? 'source' and v_out ->> 'mode' = 'fast' then
        raise exception 'options.mode: fast reads the binned counts of the prediction log; a source is read in exact mode'
            using errcode = '22023';
    end if;
    if p_options ? 'features' then
        if jsonb_typeof(p_options -> 'features') <> 'object' then
            raise exception 'options.features: must be an object of {"feature": {"test": ..., "threshold": ...}}, got %',
                jsonb_typeof(p_options -> 'features') using errcode = '22023';
        end if;
        for v_key, v_spec in select * from jsonb_each(p_options -> 'features') loop
            if jsonb_typeof(v_spec) <> 'object' then
                raise exception 'options.features.%: must be an object such as {"test": "psi", "threshold": 0.2}', v_key using errcode = '22023';
            end if;
            select k into v_sk from jsonb_object_keys(v_spec) k where k not in ('test', 'threshold') limit 1;
            if v_sk is not null then
                raise exception 'options.features.%: unknown field % (known: test, threshold)', v_key, quote_literal(v_sk) using errcode = '22023';
            end if;
            v_test := null;
            if v_spec ? 'test' then
                v_test := v_spec ->> 'test';
                if jsonb_typeof(v_spec -> 'test') <> 'string' or not v_test = any (ml_private.drift_tests()) then
                    raise exception 'options.features.%.test: unknown test % (known: %)', v_key, v_spec -> 'test',
                        array_to_string(ml_private.drift_tests(), ', ') using errcode = '22023';
                end if;
            end if;
            if v_spec ? 'threshold' then
                if jsonb_typeof(v_spec -> 'threshold') <> 'number' then
                    raise exception 'options.features.%.threshold: must be a number, got %', v_key, v_spec -> 'threshold' using errcode = '22023';
                end if;
                v_t := (v_spec ->> 'threshold')::float8;
                if v_test is not null and ml_private.drift_p_value_test(v_test) and not (v_t > 0 and v_t < 1) then
                    raise exception 'options.features.%.threshold: a p-value threshold of test % must be above 0 and below 1, got %', v_key, v_test, v_t
                        using errcode = '22023';
                elsif v_t < 0 or v_t = 'NaN'::float8 or v_t = 'Infinity'::float8 then
                    raise exception 'options.features.%.threshold: must be a finite number >= 0, got %', v_key, v_t using errcode = '22023';
                end if;
            end if;
        end loop;
        v_out := v_out || jsonb_build_object('features', p_options -> 'features');
    end if;
    return v_out;
end
$$;

------------------------------------------------------------------------------------------------
-- The report
------------------------------------------------------------------------------------------------

-- ml_private.drift_reference_outputs(p_version uuid) returns bigint
-- Scores a compiled version's training set rows into pg_temp._pgmlops_drift_ref_outputs
-- (prediction jsonb, score float8) with its compiled function (JIT off), as
-- ml_private.profile_model_outputs does: the reference samples of the prediction and score
-- tests of an exact report. Returns the rows (0: not compiled, no training set).
create or replace function ml_private.drift_reference_outputs(p_version uuid) returns bigint
language plpgsql volatile
set search_path = ''
set jit = off
as $$
declare
    v_v    ml.model_versions;
    v_ds   ml.datasets;
    v_task text;
    v_args jsonb;
    v_out  jsonb;
    v_n    bigint;
begin
    drop table if exists pg_temp._pgmlops_drift_ref_outputs;
    select * into v_v from ml.model_versions v where v.id = p_version;
    select * into v_ds from ml.datasets d where d.id = v_v.dataset_id;
    if v_ds.id is null or ml_private.compiled_function(v_v.id) is null then
        create temp table _pgmlops_drift_ref_outputs (prediction jsonb, score float8) on commit drop;
        return 0;
    end if;
    select p.task into v_task from ml.models m join ml.projects p on p.id = m.project_id where m.id = v_v.model_id;
    v_args := ml_private.batch_arguments_sql(ml_private.compiled_model_inputs(v_v.signature, v_ds.id) -> 'arguments',
                                             ml_private.batch_columns(v_ds.table_name::regclass), 't');
    v_out := ml_private.batch_outputs_sql(v_task, v_v.signature -> 'classes', 's.r');
    execute format('create temp table _pgmlops_drift_ref_outputs on commit drop as '
                   'select s.r -> ''prediction'' as prediction, %s as score '
                   'from (select ml_models.%I(a.num, a.cat) as r from (select %s as num, %s as cat from %s t offset 0) a offset 0) s',
                   v_out ->> 'score', ml_private.compiled_model_name(v_v.id), v_args ->> 'num', v_args ->> 'cat', v_ds.table_name);
    get diagnostics v_n = row_count;
    return v_n;
end
$$;

-- ml_private.drift_source_expr(p_column text, p_columns jsonb, p_numeric boolean, p_dtype text) returns text
-- The SQL reading column p_column of a source (alias t; p_columns: ml_private.batch_columns) as
-- a report's current value: a number (numeric columns as float8, NaN missing; date/time columns
-- as epoch seconds; jsonb and anything else through ml_private.profile_number) or a category
-- key (ml_private.profile_category of the value as JSON: 1.0 and 1 are '1', booleans 'true' /
-- 'false'), as the prediction log is read.
create or replace function ml_private.drift_source_expr(p_column text, p_columns jsonb, p_numeric boolean, p_dtype text) returns text
language sql immutable
set search_path = ''
as $$
    select case
        when not p_numeric then case when p_columns -> p_column ->> 'typname' = 'jsonb' then format('ml_private.profile_category(t.%I)', p_column)
                                     else format('ml_private.profile_category(to_jsonb(t.%I))', p_column) end
        when p_columns -> p_column ->> 'category' = 'N' then format('nullif((t.%I)::float8, ''NaN''::float8)', p_column)
        when p_columns -> p_column ->> 'typname' in ('timestamptz', 'timestamp') then format('date_part(''epoch'', t.%I)', p_column)
        when p_columns -> p_column ->> 'typname' = 'date' then format('date_part(''epoch'', (t.%I)::timestamp)', p_column)
        when p_columns -> p_column ->> 'typname' = 'jsonb' then format('ml_private.profile_number(t.%I, %L)', p_column, p_dtype)
        else format('ml_private.profile_number(to_jsonb(t.%I), %L)', p_column, p_dtype) end
$$;

-- ml_private.drift_reference_expr(p_feature jsonb, p_dataset ml.datasets, p_regression boolean) returns text
-- The SQL reading a feature's reference values (alias t) as numbers: an input or the label from
-- the training set's column (as the profile read it), the prediction and score from
-- pg_temp._pgmlops_drift_ref_outputs (ml_private.drift_reference_outputs).
create or replace function ml_private.drift_reference_expr(p_feature jsonb, p_dataset ml.datasets, p_regression boolean) returns text
language sql immutable
set search_path = ''
as $$
    select case p_feature ->> 'role'
        when 'score' then 't.score'
        when 'prediction' then 'ml_private.profile_number(t.prediction, ''float'')'
        else ml_private.profile_column_exprs(p_feature ->> 'feature',
                 (select c ->> 'type' from jsonb_array_elements(p_dataset.columns) c where c ->> 'name' = p_feature ->> 'feature' limit 1),
                 p_feature ->> 'dtype', 't') ->> 'num' end
$$;

-- ml_private.drift_fast_approximation() returns text: what a fast report approximates (stored
-- in its summary).
create or replace function ml_private.drift_fast_approximation() returns text
language sql immutable
return 'numeric features are compared on the reference''s quantile bins: ks from the binned counts (the largest gap at the bins'' '
       'ends, never above the exact statistic), wasserstein from the binned counts and the sums of the values in each bin (exact '
       'within a bin where the two distributions do not cross); categories and numbers of at most 20 reference values are counted '
       'exactly; labels are read from the feedback exactly';

-- ml_private.drift_statistic(p_test text, p_mode text, p_ref float8[], p_cur float8[], p_ref_counts float8[],
--                            p_cur_counts float8[], p_edges float8[], p_ref_std float8, p_ref_rows bigint,
--                            p_ref_sums float8[], p_cur_sums float8[]) returns jsonb
-- One test's result {statistic, p_value, details}, computed by the statistic functions of
-- sql/monitoring/stats.sql (docs/drift-statistics.md): from the samples p_ref and p_cur (exact
-- mode: ks = ml_private.ks_2samp, wasserstein = wasserstein_distance, wasserstein_normed =
-- wasserstein_distance_normed), or from counts aligned on the same keys (p_ref_counts,
-- p_cur_counts: values, or the bins of p_edges in the profile layout): chi2 =
-- chisquare_goodness_of_fit (Evidently's chi-square), z = proportions_z_test (the first key
-- against the others, as Evidently), psi, jensen_shannon = jensenshannon, hellinger; fast mode's
-- ks = ks_binned and wasserstein = wasserstein_binned (with the values' sums per bin when both
-- sides have them: p_ref_sums, p_cur_sums), normed by the reference's population standard
-- deviation from the profile (std ddof 1 and p_ref_rows), at least 0.001, as Evidently.
create or replace function ml_private.drift_statistic(p_test text, p_mode text, p_ref float8[], p_cur float8[], p_ref_counts float8[],
                                                      p_cur_counts float8[], p_edges float8[], p_ref_std float8, p_ref_rows bigint,
                                                      p_ref_sums float8[], p_cur_sums float8[])
returns jsonb
language plpgsql immutable
set search_path = ''
as $$
declare
    v_r    record;
    v_std  float8;
    v_w    float8;
    v_keep int[];
begin
    if p_test in ('ks', 'wasserstein', 'wasserstein_normed') then
        if p_mode = 'exact' then
            if p_test = 'ks' then
                select * into v_r from ml_private.ks_2samp(p_ref, p_cur) k;
                return jsonb_build_object('statistic', v_r.statistic, 'p_value', v_r.pvalue);
            end if;
            return jsonb_build_object('statistic', case when p_test = 'wasserstein' then ml_private.wasserstein_distance(p_ref, p_cur)
                                                        else ml_private.wasserstein_distance_normed(p_ref, p_cur) end);
        end if;
        if p_test = 'ks' then
            select * into v_r from ml_private.ks_binned(p_ref_counts, p_cur_counts) k;
            return jsonb_build_object('statistic', v_r.statistic, 'p_value', v_r.pvalue, 'details', jsonb_build_object('binned', true));
        end if;
        v_w := case when p_ref_sums is not null and p_cur_sums is not null
                    then ml_private.wasserstein_binned(p_edges, p_ref_counts, p_cur_counts, p_ref_sums, p_cur_sums)
                    else ml_private.wasserstein_binned(p_edges, p_ref_counts, p_cur_counts) end;
        v_std := coalesce(p_ref_std * sqrt((p_ref_rows - 1)::float8 / p_ref_rows), 0);
        return jsonb_build_object('statistic', case when p_test = 'wasserstein' then v_w else v_w / greatest(v_std, 0.001) end,
                                  'details', jsonb_build_object('binned', true, 'reference_std', v_std,
                                                                'bin_sums', p_ref_sums is not null and p_cur_sums is not null));
    elsif p_test = 'chi2' then
        select * into v_r from ml_private.chisquare_goodness_of_fit(p_ref_counts, p_cur_counts) c;
        return jsonb_build_object('statistic', v_r.statistic, 'p_value', v_r.pvalue, 'details', jsonb_build_object(
            'dof', (select count(*) - 1 from unnest(p_ref_counts, p_cur_counts) u (r, c) where u.r > 0 or u.c > 0)));
    elsif p_test = 'z' then
        -- Evidently's Z-test: the first value (in sorted order) against all the others.
        v_keep := array(select k::int from unnest(p_ref_counts, p_cur_counts) with ordinality u (r, c, k) where u.r > 0 or u.c > 0 order by k);
        select * into v_r from ml_private.proportions_z_test(
            case when cardinality(v_keep) = 1 then array[p_ref_counts[v_keep[1]]]
                 else array[p_ref_counts[v_keep[1]], (select sum(p_ref_counts[k]) from unnest(v_keep[2:]) k)] end,
            case when cardinality(v_keep) = 1 then array[p_cur_counts[v_keep[1]]]
                 else array[p_cur_counts[v_keep[1]], (select sum(p_cur_counts[k]) from unnest(v_keep[2:]) k)] end) z;
        return jsonb_build_object('statistic', v_r.statistic, 'p_value', v_r.pvalue);
    elsif p_test = 'psi' then
        return jsonb_build_object('statistic', ml_private.psi(p_ref_counts, p_cur_counts));
    elsif p_test = 'jensen_shannon' then
        return jsonb_build_object('statistic', ml_private.jensenshannon(p_ref_counts, p_cur_counts));
    else
        return jsonb_build_object('statistic', ml_private.hellinger(p_ref_counts, p_cur_counts));
    end if;
end
$$;

-- ml_private.drift_keys(p_ref jsonb, p_cur jsonb, p_numeric boolean) returns text[]
-- The keys (values or bins) of two count objects {key: count} together, in the order Evidently
-- sorts them: numbers numerically, text by code point (collation C).
create or replace function ml_private.drift_keys(p_ref jsonb, p_cur jsonb, p_numeric boolean) returns text[]
language sql immutable
set search_path = ''
as $$
    select coalesce(array_agg(k order by case when p_numeric then k::float8 end, k collate "C"), '{}')
    from (select jsonb_object_keys(coalesce(p_ref, '{}')) k union select jsonb_object_keys(coalesce(p_cur, '{}'))) u
$$;

-- ml_private.drift_report_run(p_project text, p_start timestamptz, p_end timestamptz, p_options jsonb,
--                             p_rows regclass) returns uuid
-- The owner's side of ml.drift_report (see it): checks, reads the current window (the prediction
-- log, or p_rows: a plain temporary table of the caller's session that ml.drift_report filled
-- from options.source), runs every test, writes the report and its results, then the other
-- sections (performance, regime, alerts) and the event. Callers: ml.drift_report.
create or replace function ml_private.drift_report_run(p_project text, p_start timestamptz, p_end timestamptz, p_options jsonb,
                                                       p_rows regclass)
returns uuid
language plpgsql volatile security definer
set search_path = ''
set timezone = 'UTC'
set extra_float_digits = 1
set work_mem = '256MB'
set jit = off
as $$
declare
    v_tenant   uuid := ml_private.acting_tenant_id(true);
    v_opts     jsonb;
    v_project  ml.projects;
    v_model    jsonb;
    v_version  ml.model_versions;
    v_ds       ml.datasets;
    v_id       uuid := gen_random_uuid();
    v_mode     text;
    v_source   text := 'ml.predictions';
    v_cols     jsonb;
    v_feats    jsonb := '[]';
    v_f        jsonb;
    v_p        ml.reference_profiles;
    v_i        int := 0;
    v_cur      text[] := '{}';
    v_rows     bigint := 0;
    v_n_cur    bigint;
    v_nulls    bigint;
    v_n_ref    bigint;
    v_values   boolean;
    v_numeric  boolean;
    v_cur_c    jsonb;
    v_ref_c    jsonb;
    v_keys     text[];
    v_nvalues  bigint;
    v_test     text;
    v_default  boolean;
    v_thr      float8;
    v_spec     jsonb;
    v_ref_x    float8[];
    v_cur_x    float8[];
    v_res      jsonb;
    v_skipped  jsonb := '[]';
    v_tested   int := 0;
    v_drifted  int := 0;
    v_share    float8;
    v_summary  jsonb;
    v_section  jsonb;
    v_alerts   int;
    v_label    text;
    v_ref_outputs boolean := false;
    v_pred_num boolean;
    v_nedges   int;
    v_cur_s    jsonb;
    v_cur_b    jsonb;
    v_exact    jsonb;
    v_slots    int[];
begin
    if p_start is null or p_end is null or p_start >= p_end then
        raise exception 'window_start (%) must be before window_end (%)', coalesce(p_start::text, 'NULL'), coalesce(p_end::text, 'NULL')
            using errcode = '22023';
    end if;
    v_opts := ml_private.drift_options(p_options);
    v_opts := v_opts || jsonb_strip_nulls(jsonb_build_object('multivariate', p_options -> 'multivariate'));
    v_mode := v_opts ->> 'mode';
    v_project := ml_private.find_project(v_tenant, p_project);
    perform ml_private.performance_options(p_options, p_start, p_end);
    v_model := ml_private.batch_model(p_project, jsonb_strip_nulls(jsonb_build_object(
        'model', p_options -> 'model', 'version', p_options -> 'version', 'alias', p_options -> 'alias')), true);
    select * into v_version from ml.model_versions v where v.id = (v_model ->> 'model_version_id')::uuid;
    v_pred_num := v_project.task = 'regression';

    -- The reference: the version's profile (made now if it is missing; its outputs once compiled).
    if not exists (select 1 from ml.reference_profiles r where r.model_version_id = v_version.id and r.role = 'input') then
        perform ml_private.profile_model_version(v_version.id);
    elsif not exists (select 1 from ml.reference_profiles r where r.model_version_id = v_version.id and r.role in ('prediction', 'score'))
          and ml_private.compiled_function(v_version.id) is not null then
        perform ml_private.profile_model_outputs(v_version.id);
    end if;
    if not exists (select 1 from ml.reference_profiles r where r.model_version_id = v_version.id and r.role = 'input') then
        raise exception 'model % version % has no reference profile: it was not trained on a training set', v_model ->> 'model', v_version.version
            using errcode = '55000', hint = 'Train versions on a training set (ml.create_training_set): its profile is the reference of drift reports.';
    end if;
    select * into v_ds from ml.datasets d where d.id = v_version.dataset_id;
    if v_mode = 'exact' and v_ds.id is null then
        raise exception 'model % version %: its training set was dropped, so an exact report has no reference samples', v_model ->> 'model', v_version.version
            using errcode = '55000', hint = 'Use options {"mode": "fast"}: it compares with the stored profile.';
    end if;

    -- The source's columns (options.source: a temporary table the caller filled).
    if p_rows is not null then
        perform ml_private.batch_check_temp(p_rows, 'rows');
        v_cols := ml_private.batch_columns(p_rows);
        if exists (select 1 from jsonb_each(v_cols) c where not (c.value ->> 'builtin')::boolean) then
            raise exception 'options.source: column % is not of a built-in type: cast it in the query',
                (select quote_ident(c.key) from jsonb_each(v_cols) c where not (c.value ->> 'builtin')::boolean limit 1) using errcode = '22023';
        end if;
        v_source := p_options ->> 'source';
    end if;

    -- The features under test: the profile's inputs (numeric, categorical, binary; vectors and
    -- free text are embedding drift), the outputs and the label; from a source, those it has.
    for v_p in
        select * from ml.reference_profiles r
        where r.model_version_id = v_version.id and r.kind in ('numeric', 'categorical', 'binary')
        order by array_position(array['input', 'prediction', 'score', 'label'], r.role), r.feature
    loop
        continue when p_rows is not null and not v_cols ? (case v_p.role when 'input' then v_p.feature when 'label' then v_ds.label else v_p.role end);
        v_i := v_i + 1;
        v_feats := v_feats || jsonb_build_array(jsonb_build_object(
            'i', v_i, 'role', v_p.role, 'feature', v_p.feature, 'kind', v_p.kind, 'dtype', v_p.dtype,
            'numerical', case v_p.role when 'input' then ml_private.drift_numerical(v_p.dtype) when 'score' then true else v_pred_num end,
            'row_count', v_p.row_count, 'nulls', v_p.nulls,
            'distinct_count', v_p.distinct_count, 'edges', to_jsonb(v_p.edges), 'counts', to_jsonb(v_p.counts),
            'frequencies', v_p.frequencies, 'summary', v_p.summary));
        if v_p.role in ('prediction', 'score') then
            v_ref_outputs := true;
        end if;
    end loop;
    select f into v_label from jsonb_object_keys(v_opts -> 'features') f
    where not exists (select 1 from jsonb_array_elements(v_feats) x where x ->> 'feature' = f) order by f limit 1;
    if v_label is not null then
        raise exception 'options.features: unknown feature % (the reference of model % version % has: %)', v_label,
            v_model ->> 'model', v_version.version,
            coalesce((select string_agg(distinct x ->> 'feature', ', ') from jsonb_array_elements(v_feats) x), 'none') using errcode = '22023';
    end if;

    v_label := v_ds.label;

    -- The current window, exact: one typed column per feature (v1, v2, ...), read once.
    drop table if exists pg_temp._pgmlops_drift_current;
    drop table if exists pg_temp._pgmlops_drift_labels;
    drop table if exists pg_temp._pgmlops_drift_counts;
    if p_rows is not null then
        execute format('create temp table _pgmlops_drift_current on commit drop as select %s from %s t',
            coalesce((select string_agg(format('%s as v%s', ml_private.drift_source_expr(
                          case x ->> 'role' when 'input' then x ->> 'feature' when 'label' then v_label else x ->> 'role' end,
                          v_cols, (x ->> 'numerical')::boolean, x ->> 'dtype'), x ->> 'i'), ', ' order by (x ->> 'i')::int)
                      from jsonb_array_elements(v_feats) x), 'null::int as v0'),
            p_rows);
        get diagnostics v_rows = row_count;
    elsif v_mode = 'exact' then
        execute format('create temp table _pgmlops_drift_current on commit drop as select %s from ml.predictions p '
                       'where p.tenant_id = $1 and p.project_id = $2 and p.model_version_id = $3 and p.created_at >= $4 and p.created_at < $5 '
                       'and p.shadow_of is null',
            coalesce((select string_agg(format('%s as v%s', case x ->> 'role'
                          when 'input' then case when (x ->> 'numerical')::boolean
                                                 then format('ml_private.profile_number(p.features -> %L, %L)', x ->> 'feature', x ->> 'dtype')
                                                 else format('ml_private.profile_category(p.features -> %L)', x ->> 'feature') end
                          when 'prediction' then case when v_pred_num then 'ml_private.profile_number(p.prediction, ''float'')'
                                                      else 'ml_private.profile_category(p.prediction)' end
                          when 'score' then 'p.score'
                          else 'null::text' end, x ->> 'i'), ', ' order by (x ->> 'i')::int)
                      from jsonb_array_elements(v_feats) x), 'null::int as v0'))
            using v_tenant, v_project.id, v_version.id, p_start, p_end;
        get diagnostics v_rows = row_count;
    else
        -- Fast: binned counts on the reference edges (whole rolled-up hours from ml.window_counts).
        perform ml_private.rollup_window_counts(v_project.id);
        create temp table _pgmlops_drift_counts on commit drop as
            select c.role, c.feature, c.bin, c.category, c.count, c.total
            from ml_private.window_counts_between(v_tenant, v_project.id, p_start, p_end) c
            where c.model_version_id = v_version.id;
        select coalesce(max(s), 0) into v_rows from (select sum(c.count) as s from pg_temp._pgmlops_drift_counts c group by c.role, c.feature) x;
    end if;
    -- Labels: the latest label of each live prediction of the window (feedback), both modes.
    if p_rows is null then
        create temp table _pgmlops_drift_labels on commit drop as
            select distinct on (f.prediction_id) case when v_pred_num then ml_private.profile_number(f.label, 'float')::text
                                                      else ml_private.profile_category(f.label) end as v
            from ml.feedback f
            join ml.predictions p on p.id = f.prediction_id and p.created_at = f.predicted_at
            where f.tenant_id = v_tenant and f.project_id = v_project.id and f.predicted_at >= p_start and f.predicted_at < p_end
              and p.tenant_id = v_tenant and p.model_version_id = v_version.id and p.shadow_of is null
            order by f.prediction_id, f.updated_at desc;
    end if;
    if v_ref_outputs and v_mode = 'exact' then
        perform ml_private.drift_reference_outputs(v_version.id);
    end if;

    -- Exact: the current counts of every feature in one scan of the window (a grouping set per
    -- feature: by value, or by bin on the reference's edges), {i: {key: count}}.
    if v_mode = 'exact' and exists (select 1 from jsonb_array_elements(v_feats) x where p_rows is not null or x ->> 'role' <> 'label') then
        select array_agg(case when not (x ->> 'numerical')::boolean or jsonb_typeof(x -> 'frequencies') = 'object'
                              then format('(v%s)::text', x ->> 'i')
                              else format('ml_private.histogram_bin(%L::float8[], v%s)::text', array(select e::float8 from jsonb_array_elements_text(x -> 'edges') e),
                                          x ->> 'i') end order by (x ->> 'i')::int),
               array_agg((x ->> 'i')::int order by (x ->> 'i')::int)
        into v_cur, v_slots
        from jsonb_array_elements(v_feats) x where p_rows is not null or x ->> 'role' <> 'label';
        execute format('select %s from (select %s, count(*) as n from pg_temp._pgmlops_drift_current group by grouping sets (%s)) x',
                       (select string_agg(format('jsonb_build_object(%s)', part), ' || ')
                        from (select string_agg(format('%L, coalesce(jsonb_object_agg(x.k%s, x.n) filter (where x.k%s is not null), ''{}'')',
                                                       v_slots[j], j, j), ', ' order by j) as part
                              from generate_series(1, cardinality(v_cur)) j group by (j - 1) / 40) g),
                       (select string_agg(format('%s as k%s', v_cur[j], j), ', ' order by j) from generate_series(1, cardinality(v_cur)) j),
                       (select string_agg(format('(%s)', j), ', ' order by j) from generate_series(1, cardinality(v_cur)) j))
            into v_exact;
    end if;

    insert into ml.drift_reports (id, tenant_id, project_id, model_version_id, window_start, window_end, mode, source, options,
                                  row_count, reference_count, status, created_by)
    values (v_id, v_tenant, v_project.id, v_version.id, p_start, p_end, v_mode, v_source, p_options, v_rows,
            coalesce((select (x ->> 'row_count')::bigint from jsonb_array_elements(v_feats) x where x ->> 'role' = 'input' limit 1), 0),
            'complete', ml_private.caller_user_id());

    for v_f in select value from jsonb_array_elements(v_feats) order by (value ->> 'i')::int loop
        v_numeric := (v_f ->> 'numerical')::boolean;
        v_cur_s := null;
        v_cur_b := null;
        v_nedges := case when jsonb_typeof(v_f -> 'edges') = 'array' then jsonb_array_length(v_f -> 'edges') else 0 end;
        v_n_ref := (v_f ->> 'row_count')::bigint - (v_f ->> 'nulls')::bigint;
        -- Counts by value (categorical columns, and numbers of at most 20 values in the
        -- reference: their profile has frequencies) or by bin on the reference edges.
        v_values := not v_numeric or jsonb_typeof(v_f -> 'frequencies') = 'object';
        v_ref_c := case when v_values then v_f -> 'frequencies'
                        else (select jsonb_object_agg(b - 1, c) from jsonb_array_elements(v_f -> 'counts') with ordinality a (c, b)) end;
        if v_f ->> 'role' = 'label' and p_rows is null then
            execute format('select count(v), count(*) - count(v), %s from pg_temp._pgmlops_drift_labels',
                           case when v_values then 'coalesce((select jsonb_object_agg(k, n) from (select v as k, count(*) as n from pg_temp._pgmlops_drift_labels where v is not null group by 1) g), ''{}'')'
                                else format('coalesce((select jsonb_object_agg(k, n) from (select ml_private.histogram_bin(%L::float8[], v::float8) as k, count(*) as n from pg_temp._pgmlops_drift_labels where v is not null group by 1) g), ''{}'')',
                                            array(select e::float8 from jsonb_array_elements_text(v_f -> 'edges') e)) end)
                into v_n_cur, v_nulls, v_cur_c;
        elsif v_mode = 'exact' then
            v_cur_c := coalesce(v_exact -> (v_f ->> 'i'), '{}');
            v_n_cur := coalesce((select sum(n::bigint) from jsonb_each_text(v_cur_c) e (k, n)), 0);
            v_nulls := v_rows - v_n_cur;
        else
            select coalesce(sum(c.count) filter (where c.bin is not null or c.category is not null), 0),
                   coalesce(sum(c.count) filter (where c.bin is null and c.category is null), 0),
                   jsonb_object_agg(c.bin, coalesce(c.total, 0)) filter (where c.bin is not null),
                   jsonb_object_agg(c.bin, c.count) filter (where c.bin is not null),
                   coalesce(jsonb_object_agg(coalesce(c.category, case when not v_values then c.bin::text
                                                                       when c.bin = 0 then '-Infinity' when c.bin > v_nedges - 1 then 'Infinity'
                                                                       else (select k from jsonb_object_keys(v_f -> 'frequencies') k order by k::float8 offset c.bin - 1 limit 1) end),
                                             c.count) filter (where c.bin is not null or c.category is not null), '{}')
            into v_n_cur, v_nulls, v_cur_s, v_cur_b, v_cur_c
            from (select c.bin, c.category, sum(c.count)::bigint as count, sum(c.total) as total from pg_temp._pgmlops_drift_counts c
                  where c.role = v_f ->> 'role' and c.feature = v_f ->> 'feature' group by 1, 2) c;
        end if;
        if v_mode = 'fast' and v_f ->> 'role' <> 'label' and v_n_cur + v_nulls < v_rows then
            -- Hours rolled up before this column was profiled (a version's outputs are profiled
            -- once it is compiled) have no counts of it: a partial window is no verdict.
            v_skipped := v_skipped || jsonb_build_array(jsonb_build_object('feature', v_f ->> 'feature', 'role', v_f ->> 'role',
                'reason', format('counted in %s of the window''s %s predictions (hours rolled up before it was profiled): use the exact mode',
                                 v_n_cur + v_nulls, v_rows)));
            continue;
        end if;
        if v_n_cur = 0 or v_n_ref = 0 then
            v_skipped := v_skipped || jsonb_build_array(jsonb_build_object('feature', v_f ->> 'feature', 'role', v_f ->> 'role',
                'reason', case when v_n_ref = 0 then 'no reference values' else 'no current values' end));
            continue;
        end if;
        v_keys := ml_private.drift_keys(v_ref_c, v_cur_c, v_numeric);
        v_nvalues := case when v_values then (select count(*) from unnest(v_keys) k
                                              where coalesce((v_ref_c ->> k)::bigint, 0) + coalesce((v_cur_c ->> k)::bigint, 0) > 0)
                          else greatest(coalesce((v_f ->> 'distinct_count')::bigint, 21), 6) end;
        v_spec := coalesce(v_opts -> 'features' -> (v_f ->> 'feature'), '{}');
        v_default := not v_spec ? 'test';
        v_test := coalesce(v_spec ->> 'test', ml_private.drift_default_test(v_numeric, v_n_ref, v_nvalues));
        if v_test in ('ks', 'wasserstein', 'wasserstein_normed') and not v_numeric then
            raise exception 'options.features.%.test: % compares numbers; % is categorical (use chi2, z, psi, jensen_shannon or hellinger)',
                v_f ->> 'feature', v_test, v_f ->> 'feature' using errcode = '22023';
        end if;
        v_thr := coalesce((v_spec ->> 'threshold')::float8, ml_private.drift_default_threshold(v_test));
        if ml_private.drift_p_value_test(v_test) and not (v_thr > 0 and v_thr < 1) then
            raise exception 'options.features.%.threshold: a p-value threshold of test % must be above 0 and below 1, got %', v_f ->> 'feature', v_test, v_thr
                using errcode = '22023';
        end if;
        v_ref_x := null;
        v_cur_x := null;
        if v_test in ('ks', 'wasserstein', 'wasserstein_normed') and v_mode = 'exact' then
            execute format('select array_agg(x) from (select %s as x from %s) s where x is not null',
                           ml_private.drift_reference_expr(v_f, v_ds, v_pred_num),
                           case when v_f ->> 'role' in ('prediction', 'score') then 'pg_temp._pgmlops_drift_ref_outputs t' else v_ds.table_name || ' t' end)
                into v_ref_x;
            if v_f ->> 'role' = 'label' and p_rows is null then
                select array_agg(v::float8) into v_cur_x from pg_temp._pgmlops_drift_labels where v is not null;
            else
                execute format('select array_agg(v%s) from pg_temp._pgmlops_drift_current where v%s is not null', v_f ->> 'i', v_f ->> 'i') into v_cur_x;
            end if;
        end if;
        if v_test in ('ks', 'wasserstein', 'wasserstein_normed') and v_mode = 'fast' then
            -- Fast sample tests: the counts (and sums) of the n + 2 cells of the reference's bins.
            if v_cur_b is null then
                -- A column counted by category (binary): its values are its bins, in order.
                v_cur_b := coalesce((select jsonb_object_agg(u.j, (v_cur_c ->> u.k)::bigint)
                                     from jsonb_object_keys(v_f -> 'frequencies') with ordinality u (k, j0)
                                     cross join lateral (select (select count(*) from jsonb_object_keys(v_f -> 'frequencies') k2
                                                                 where k2::float8 <= u.k::float8) as j) x), '{}');
            end if;
            v_res := ml_private.drift_statistic(v_test, v_mode, null, null,
                         array(select e::float8 from jsonb_array_elements_text(v_f -> 'counts') e),
                         array(select coalesce((v_cur_b ->> b::text)::float8, 0) from generate_series(0, v_nedges) b order by b),
                         array(select e::float8 from jsonb_array_elements_text(v_f -> 'edges') e),
                         (v_f #>> '{summary,std}')::float8, v_n_ref,
                         case when jsonb_typeof(v_f #> '{summary,bin_sums}') = 'array' and v_cur_s is not null
                              then array(select e::float8 from jsonb_array_elements_text(v_f #> '{summary,bin_sums}') e) end,
                         case when jsonb_typeof(v_f #> '{summary,bin_sums}') = 'array' and v_cur_s is not null
                              then array(select coalesce((v_cur_s ->> b::text)::float8, 0) from generate_series(0, v_nedges) b order by b) end);
        else
            v_res := ml_private.drift_statistic(v_test, v_mode, v_ref_x, v_cur_x,
                         array(select coalesce((v_ref_c ->> k)::float8, 0) from unnest(v_keys) with ordinality u (k, o) order by o),
                         array(select coalesce((v_cur_c ->> k)::float8, 0) from unnest(v_keys) with ordinality u (k, o) order by o),
                         null, null, null, null, null);
        end if;
        insert into ml.drift_results (tenant_id, report_id, feature, role, kind, test, statistic, p_value, threshold, drifted, row_count, nulls, details)
        values (v_tenant, v_id, v_f ->> 'feature', v_f ->> 'role', v_f ->> 'kind', v_test, (v_res ->> 'statistic')::float8,
                (v_res ->> 'p_value')::float8, v_thr,
                ml_private.drift_decision(v_test, (v_res ->> 'statistic')::float8, (v_res ->> 'p_value')::float8, v_thr),
                v_n_cur + v_nulls, v_nulls,
                jsonb_build_object('reference_values', v_n_ref, 'current_values', v_n_cur, 'distinct_values', v_nvalues,
                                   'default_test', v_default, 'numerical', v_numeric, 'mode', v_mode,
                                   'counted_by', case when v_values then 'value' else 'bin' end,
                                   'reference_counts', v_ref_c, 'current_counts', v_cur_c, 'edges', case when not v_values then v_f -> 'edges' end)
                || coalesce(v_res -> 'details', '{}'));
    end loop;

    select count(*) filter (where r.role = 'input'), count(*) filter (where r.role = 'input' and r.drifted)
    into v_tested, v_drifted
    from ml.drift_results r where r.report_id = v_id;
    v_share := case when v_tested > 0 then v_drifted::float8 / v_tested end;
    v_summary := jsonb_build_object(
        'drift', jsonb_build_object('mode', v_mode, 'features_tested', v_tested, 'drifted_features', v_drifted, 'drift_share', v_share,
                                    'threshold', (v_opts ->> 'drift_share')::float8,
                                    'dataset_drift', coalesce(v_share >= (v_opts ->> 'drift_share')::float8, false),
                                    'drifted', coalesce((select jsonb_agg(r.feature order by r.feature) from ml.drift_results r
                                                         where r.report_id = v_id and r.role = 'input' and r.drifted), '[]'),
                                    'skipped', v_skipped,
                                    'approximation', case when v_mode = 'fast' then ml_private.drift_fast_approximation() end),
        'prediction_drift', coalesce((select jsonb_object_agg(r.role, jsonb_build_object('test', r.test, 'statistic', r.statistic,
                                                   'p_value', r.p_value, 'threshold', r.threshold, 'drifted', r.drifted))
                                      from ml.drift_results r where r.report_id = v_id and r.role in ('prediction', 'score')),
                                     jsonb_build_object('reason', case when ml_private.compiled_function(v_version.id) is null
                                                                       then 'the version is scored by workers: its outputs have no reference profile'
                                                                       else 'no predictions to compare' end)),
        'label_drift', coalesce((select jsonb_build_object('feature', r.feature, 'test', r.test, 'statistic', r.statistic, 'p_value', r.p_value,
                                                           'threshold', r.threshold, 'drifted', r.drifted, 'labels', r.row_count)
                                 from ml.drift_results r where r.report_id = v_id and r.role = 'label'),
                                jsonb_build_object('reason', case when v_label is null then 'the training set has no label' else 'no labels in the window' end)));
    update ml.drift_reports r set features_tested = v_tested, drifted_features = v_drifted, drift_share = v_share,
                                  dataset_drift = coalesce(v_share >= (v_opts ->> 'drift_share')::float8, false), summary = v_summary
    where r.id = v_id;

    -- The other sections, in the contract's order: realized and estimated performance (M4), the
    -- regime match (M3), the alerts (M5).
    v_section := ml_private.report_performance(v_id);
    update ml.drift_reports r set summary = r.summary || jsonb_build_object('performance', v_section) where r.id = v_id;
    v_section := ml_private.record_window_embedding(v_id);
    update ml.drift_reports r set summary = r.summary || jsonb_build_object('regime', v_section) where r.id = v_id;
    v_alerts := ml_private.raise_report_alerts(v_id);
    update ml.drift_reports r set summary = r.summary || jsonb_build_object('alerts_raised', v_alerts) where r.id = v_id;
    -- Multivariate drift (domain classifier, PCA reconstruction) is a worker's `monitor` job that
    -- completes the report: asked for by options.multivariate, by default when the window has at
    -- least 100 rows and the job kind is installed.
    if coalesce((v_opts ->> 'multivariate')::boolean, v_rows >= 100)
       and exists (select 1 from ml.job_kinds k where k.kind = 'monitor') then
        update ml.drift_reports r set status = 'pending',
                                      job_id = ml_private.enqueue_job('monitor', jsonb_build_object('report_id', v_id), 5, now(), null)
        where r.id = v_id;
    elsif (v_opts ->> 'multivariate')::boolean then
        update ml.drift_reports r set summary = r.summary || jsonb_build_object('multivariate', jsonb_build_object(
            'reason', 'the monitor job kind is not installed: multivariate drift is not computed')) where r.id = v_id;
    end if;
    update ml.drift_reports r set finished_at = case when r.status = 'complete' then clock_timestamp() end where r.id = v_id;
    perform ml_private.publish(v_tenant, 'monitoring', 'report.finished', jsonb_build_object(
        'report_id', v_id, 'project', v_project.name, 'project_id', v_project.id, 'model_version_id', v_version.id,
        'mode', v_mode, 'window_start', p_start, 'window_end', p_end, 'rows', v_rows, 'features_tested', v_tested,
        'drifted_features', v_drifted, 'drift_share', v_share, 'dataset_drift', coalesce(v_share >= (v_opts ->> 'drift_share')::float8, false)));
    perform ml_private.check_retraining_triggers(v_id);  -- the project's retraining triggers (sql/retraining/policies.sql)
    drop table if exists pg_temp._pgmlops_drift_current;
    drop table if exists pg_temp._pgmlops_drift_labels;
    drop table if exists pg_temp._pgmlops_drift_counts;
    drop table if exists pg_temp._pgmlops_drift_ref_outputs;
    return v_id;
end
$$;

-- ml.drift_report(project text, window_start timestamptz, window_end timestamptz, options jsonb default '{}') returns uuid
-- Compares a window with the reference of a model version and stores the report: one row in
-- ml.drift_reports, one per tested column in ml.drift_results (test, statistic, p-value where
-- it applies, threshold, drifted, details). Returns the report's id (ml.drift_report_document).
--   current     the project's live predictions (shadow_of NULL) made by the version, logged in
--               [window_start, window_end): inputs from `features`, the prediction and score
--               columns, labels from ml.feedback (the latest label of each prediction); or,
--               with options.source (a table name or a query: SELECT, WITH, VALUES, TABLE), its
--               rows (those whose options.time_column falls in the window, when given), read
--               with the caller's rights: columns named like the inputs, `prediction`, `score`
--               and the training set's label column are compared.
--   reference   the version's profile (ml.reference_profiles) and, in exact mode, its training
--               set's rows (the outputs scored by its compiled function).
--   version     options.model / version / alias, else the live arm with the largest weight of
--               the project's active deployment.
--   tests       Evidently's DataDriftPreset defaults (header of sql/monitoring/reports.sql), or
--               options.features {"amount": {"test": "psi", "threshold": 0.2}}; dataset drift
--               when the share of drifted inputs reaches options.drift_share (0.5).
--   mode        exact (default: the samples themselves) or fast (the binned counts of
--               ml.window_counts, rolled up first, against the profile's counts; the summary
--               states the approximation).
-- Then, in order: realized and estimated performance (ml_private.report_performance, summary
-- `performance`), the regime match (ml_private.record_window_embedding, summary `regime`), the
-- alerts (ml_private.raise_report_alerts, summary `alerts_raised`), and the event
-- 'report.finished' (topic 'monitoring').
-- Raises 22023 window_start not before window_end, bad options (naming the field: an unknown
-- option, mode, drift_share, an unknown feature, test or field in options.features, a
-- threshold out of range, a test that does not fit the feature's kind, fast with a source);
-- P0002 unknown project, model or version, no active deployment; 55000 a version without a
-- reference profile (not trained on a training set); 42P01 / 42601 / 42501 a source that is
-- not a readable table or a valid query; 42501 viewers and non-members. Nothing is written on
-- error. SECURITY INVOKER on purpose: a source runs with the caller's rights; the report is
-- written by ml_private.drift_report_run, which reads the source's rows from a temporary table
-- of the caller's session only. Callers: authenticated (owner, admin, ml_engineer), service_role.
create or replace function ml.drift_report(project text, window_start timestamptz, window_end timestamptz, options jsonb default '{}')
returns uuid
language plpgsql volatile
set jit = off
as $$
declare
    v_options jsonb := coalesce(options, '{}');
    v_suffix  text := pg_catalog.replace(pg_catalog.gen_random_uuid()::text, '-', '');
    v_view    text := '_pgmlops_drift_source_' operator(pg_catalog.||) v_suffix;
    v_rows    text := '_pgmlops_drift_rows_' operator(pg_catalog.||) v_suffix;
    v_from    text;
    v_cols    jsonb;
    v_time    text;
    v_owner   text;
    v_id      uuid;
begin
    if window_start is null or window_end is null or window_start operator(pg_catalog.>=) window_end then
        raise exception 'window_start (%) must be before window_end (%)', coalesce(window_start::text, 'NULL'), coalesce(window_end::text, 'NULL')
            using errcode = '22023';
    end if;
    perform ml_private.drift_options(v_options);
    if not v_options ? 'source' then
        return ml_private.drift_report_run(project, window_start, window_end, v_options, null);
    end if;
    -- The source, as the caller: a temporary view, then its rows in a temporary table.
    v_from := ml_private.batch_source(v_options operator(pg_catalog.->>) 'source');
    execute pg_catalog.format('create temp view %I as select * from %s s', v_view, v_from);
    execute pg_catalog.format('select from pg_temp.%I limit 0', v_view);
    v_cols := ml_private.batch_columns(pg_catalog.format('pg_temp.%I', v_view)::pg_catalog.regclass);
    if v_options ? 'time_column' then
        v_time := v_options operator(pg_catalog.->>) 'time_column';
        if not v_cols ? v_time or v_cols operator(pg_catalog.->) v_time operator(pg_catalog.->>) 'typname' not in ('timestamptz', 'timestamp', 'date') then
            raise exception 'options.time_column: % must be a timestamptz, timestamp or date column of the source; it has: %', pg_catalog.quote_ident(v_time),
                (select pg_catalog.string_agg(pg_catalog.quote_ident(k), ', ') from pg_catalog.jsonb_object_keys(v_cols) k) using errcode = '22023';
        end if;
    end if;
    execute pg_catalog.format('create temp table %I as select %s from pg_temp.%I s%s', v_rows,
        coalesce((select pg_catalog.string_agg(pg_catalog.format('s.%I', k), ', ') from pg_catalog.jsonb_object_keys(v_cols) k), 'null::int as none'),
        v_view,
        case when v_time is null then ''
             else pg_catalog.format(' where s.%1$I >= $1 and s.%1$I < $2', v_time) end)
        using window_start, window_end;
    -- The owner of the report's function reads it: a superuser may anyway; another owner is granted it.
    select pg_catalog.pg_get_userbyid(p.proowner) into v_owner from pg_catalog.pg_proc p
    where p.oid = 'ml_private.drift_report_run(text, timestamptz, timestamptz, jsonb, regclass)'::pg_catalog.regprocedure;
    if v_owner is distinct from current_user then
        execute pg_catalog.format('grant select on pg_temp.%I to %I', v_rows, v_owner);
    end if;
    v_id := ml_private.drift_report_run(project, window_start, window_end, v_options, pg_catalog.format('pg_temp.%I', v_rows)::pg_catalog.regclass);
    execute pg_catalog.format('drop table pg_temp.%I', v_rows);
    execute pg_catalog.format('drop view pg_temp.%I', v_view);
    return v_id;
end
$$;

------------------------------------------------------------------------------------------------
-- The document
------------------------------------------------------------------------------------------------

-- ml.drift_report_document(report uuid) returns jsonb
-- Everything about a report, as the HTML report and the CLI read it (shape: docs/monitoring.md,
-- "The report document"): the report (project, model, version, window, mode, source, options,
-- status, counts, verdict, summary sections), its results, its performance rows, the alerts it
-- raised, and the similar past windows.
-- Raises P0002 no such report in the acting tenant (another tenant's too); 42501 non-members.
-- Callers: any member (viewers too), service_role.
create or replace function ml.drift_report_document(report uuid) returns jsonb
language plpgsql stable security definer
set search_path = ''
set extra_float_digits = 1
as $$
declare
    v_tenant uuid := ml_private.acting_tenant_id(false);
    v_r      ml.drift_reports;
    v_doc    jsonb;
    v_similar jsonb;
begin
    select * into v_r from ml.drift_reports r where r.id = drift_report_document.report and r.tenant_id = v_tenant;
    if v_r.id is null then
        raise exception 'drift report % does not exist', coalesce(drift_report_document.report::text, 'NULL') using errcode = 'P0002';
    end if;
    v_doc := jsonb_build_object(
        'id', v_r.id, 'project', (select p.name from ml.projects p where p.id = v_r.project_id), 'project_id', v_r.project_id,
        'task', (select p.task from ml.projects p where p.id = v_r.project_id),
        'model', (select m.name from ml.model_versions v join ml.models m on m.id = v.model_id where v.id = v_r.model_version_id),
        'version', (select v.version from ml.model_versions v where v.id = v_r.model_version_id), 'model_version_id', v_r.model_version_id,
        'window_start', v_r.window_start, 'window_end', v_r.window_end, 'mode', v_r.mode, 'source', v_r.source, 'options', v_r.options,
        'status', v_r.status, 'job_id', v_r.job_id, 'row_count', v_r.row_count, 'reference_count', v_r.reference_count,
        'features_tested', v_r.features_tested, 'drifted_features', v_r.drifted_features, 'drift_share', v_r.drift_share,
        'dataset_drift', v_r.dataset_drift, 'summary', v_r.summary, 'created_by', v_r.created_by, 'created_at', v_r.created_at,
        'finished_at', v_r.finished_at,
        'results', coalesce((select jsonb_agg(jsonb_build_object(
                        'feature', d.feature, 'role', d.role, 'kind', d.kind, 'test', d.test, 'statistic', d.statistic,
                        'p_value', d.p_value, 'threshold', d.threshold, 'drifted', d.drifted, 'row_count', d.row_count,
                        'nulls', d.nulls, 'details', d.details)
                        order by array_position(array['input', 'prediction', 'score', 'label'], d.role), d.feature, d.test)
                    from ml.drift_results d where d.report_id = v_r.id), '[]'),
        'performance', coalesce((select jsonb_agg(jsonb_build_object(
                        'metric', p.metric, 'estimated', p.estimated, 'bucket_start', p.bucket_start, 'bucket_end', p.bucket_end,
                        'value', p.value, 'sample_count', p.sample_count, 'lower_bound', p.lower_bound, 'upper_bound', p.upper_bound,
                        'alert', p.alert) order by p.metric, p.estimated, p.bucket_start)
                    from ml.performance_results p where p.report_id = v_r.id), '[]'),
        'alerts', coalesce((select jsonb_agg(ml_private.alert_document(a) order by a.first_seen, a.id)
                    from ml.alerts a where a.report_id = v_r.id), '[]'));
    select coalesce(jsonb_agg(to_jsonb(n)), '[]') into v_similar from ml_private.nearest_windows(v_r.tenant_id, v_r.project_id, v_r.id, 5) n;
    v_doc := v_doc || jsonb_build_object('similar_windows', v_similar);
    return v_doc;
end
$$;

------------------------------------------------------------------------------------------------
-- Grants
------------------------------------------------------------------------------------------------

grant execute on function
    ml.drift_report(text, timestamptz, timestamptz, jsonb),
    ml.drift_report_document(uuid),
    ml_private.drift_report_run(text, timestamptz, timestamptz, jsonb, regclass),
    ml_private.drift_options(jsonb),
    ml_private.drift_tests(),
    ml_private.drift_p_value_test(text)
to authenticated, service_role;
