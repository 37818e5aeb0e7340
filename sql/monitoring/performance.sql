-- pgmlops: monitoring/performance.sql — realized and estimated performance of a drift report
-- (docs/performance-monitoring.md)
--
-- A report's window of live predictions is cut into time buckets. Per bucket:
--   * realized performance, from the predictions joined to their feedback: accuracy, precision,
--     recall, f1, roc_auc (classification, anomaly detection), mae, rmse (regression), each
--     equal to scikit-learn's metric on the same rows;
--   * estimated performance (CBPE, NannyML's confidence-based performance estimation) for
--     binary classifiers with probabilities, from the scores alone: no labels needed;
--   * an alert band per metric: set by hand in options, or NannyML's rule (mean +- 3 standard
--     deviations, clipped to the metric's range) over reference chunks: a labelled period of the
--     log cut into chunks of the bucket's size, else the version's held-out rows (time split)
--     scored by its compiled function.
-- Fast reports read the labelled predictions only (no CBPE). Rows go to ml.performance_results;
-- ml_private.report_performance returns the summary section ml.drift_report stores under
-- summary.performance. Nothing here is granted: ml.drift_report's security-definer part calls it.

------------------------------------------------------------------------------------------------
-- Options
------------------------------------------------------------------------------------------------

-- ml_private.performance_metrics(p_task text) returns text[]
-- The realized metrics of a task, in the order reports list them.
create or replace function ml_private.performance_metrics(p_task text) returns text[]
language sql immutable
set search_path = ''
as $$
    select case p_task
        when 'regression' then array['mae', 'rmse']
        else array['accuracy', 'precision', 'recall', 'f1', 'roc_auc']
    end
$$;

-- ml_private.performance_options(p_options jsonb, p_window_start timestamptz, p_window_end timestamptz)
-- returns jsonb
-- Checks the performance part of a report's options and returns it resolved:
--   {"bucket": interval, "buckets": n, "label_source": text | null,
--    "reference": {"start", "end"} | null, "bounds": {metric: {"lower", "upper"}}}.
-- Options read (all optional):
--   bucket       an interval (days, hours, minutes, seconds; no months or years): the bucket
--                size; buckets start at window_start, the last one ends at window_end;
--   buckets      a whole number of equal buckets (1 to 1000), instead of bucket;
--                default: 10 equal buckets;
--   performance  {"<metric>": {"lower": x, "upper": y}, ...} bounds by hand (either may be
--                absent), "reference": {"start": ts, "end": ts} a labelled period of the log
--                whose chunks set the bounds of the metrics not set by hand, and
--                "label_source": text, the feedback source to read (default: the latest label
--                of each prediction, whatever its source).
-- Raises 22023 naming the field and the rule (at most 1000 buckets). Callers: ml.drift_report,
-- ml_private.report_performance.
create or replace function ml_private.performance_options(p_options jsonb, p_window_start timestamptz,
                                                          p_window_end timestamptz)
returns jsonb
language plpgsql stable
set search_path = ''
as $$
declare
    v_options jsonb := coalesce(p_options, '{}');
    v_perf    jsonb := coalesce(v_options -> 'performance', '{}');
    v_bucket  interval;
    v_count   numeric;
    v_key     text;
    v_value   jsonb;
    v_bounds  jsonb := '{}';
    v_ref     jsonb;
    v_start   timestamptz;
    v_end     timestamptz;
    v_known   text[] := array['accuracy', 'precision', 'recall', 'f1', 'roc_auc', 'mae', 'rmse'];
begin
    if jsonb_typeof(v_options) <> 'object' then
        raise exception 'options: must be a JSON object' using errcode = '22023';
    end if;
    if v_options ? 'bucket' and v_options ? 'buckets' then
        raise exception 'options.bucket, options.buckets: give one of them (a bucket size or a number of buckets)'
            using errcode = '22023';
    end if;
    if v_options ? 'bucket' then
        begin
            v_bucket := (v_options ->> 'bucket')::interval;
        exception when others then
            raise exception 'options.bucket: must be an interval such as ''1 hour'', got %', v_options -> 'bucket'
                using errcode = '22023';
        end;
        if jsonb_typeof(v_options -> 'bucket') <> 'string' or v_bucket is null then
            raise exception 'options.bucket: must be an interval such as ''1 hour'', got %', v_options -> 'bucket'
                using errcode = '22023';
        end if;
        if extract(month from v_bucket) <> 0 or extract(year from v_bucket) <> 0 then
            raise exception 'options.bucket: must be in days, hours, minutes or seconds (months and years have no fixed length), got %',
                v_options ->> 'bucket' using errcode = '22023';
        end if;
        if v_bucket <= interval '0' then
            raise exception 'options.bucket: must be positive, got %', v_options ->> 'bucket' using errcode = '22023';
        end if;
        v_count := ceil(extract(epoch from p_window_end - p_window_start) / extract(epoch from v_bucket));
        if v_count > 1000 then
            raise exception 'options.bucket: % cuts the window into % buckets; at most 1000', v_options ->> 'bucket', v_count
                using errcode = '22023';
        end if;
    else
        if v_options ? 'buckets' then
            if jsonb_typeof(v_options -> 'buckets') <> 'number' or (v_options ->> 'buckets')::numeric <> trunc((v_options ->> 'buckets')::numeric)
               or (v_options ->> 'buckets')::numeric not between 1 and 1000 then
                raise exception 'options.buckets: must be a whole number from 1 to 1000, got %', v_options -> 'buckets'
                    using errcode = '22023';
            end if;
            v_count := (v_options ->> 'buckets')::numeric;
        else
            v_count := 10;
        end if;
        -- Whole microseconds, rounded up, so that v_count buckets cover the window.
        v_bucket := make_interval(secs => ceil(extract(epoch from p_window_end - p_window_start) * 1000000 / v_count) / 1000000);
        v_count := ceil(extract(epoch from p_window_end - p_window_start) / extract(epoch from v_bucket));
    end if;

    if jsonb_typeof(v_perf) <> 'object' then
        raise exception 'options.performance: must be a JSON object of metric bounds ({"accuracy": {"lower": 0.8}}), got %',
            jsonb_typeof(v_perf) using errcode = '22023';
    end if;
    for v_key, v_value in select * from jsonb_each(v_perf) loop
        if v_key = 'reference' then
            if jsonb_typeof(v_value) <> 'object' or not (v_value ? 'start' and v_value ? 'end')
               or exists (select from jsonb_object_keys(v_value) k where k not in ('start', 'end')) then
                raise exception 'options.performance.reference: must be {"start": timestamp, "end": timestamp}, got %', v_value
                    using errcode = '22023';
            end if;
            begin
                v_start := (v_value ->> 'start')::timestamptz;
                v_end := (v_value ->> 'end')::timestamptz;
            exception when others then
                raise exception 'options.performance.reference: start and end must be timestamps, got %', v_value
                    using errcode = '22023';
            end;
            if v_start is null or v_end is null or v_start >= v_end then
                raise exception 'options.performance.reference: start must come before end, got %', v_value using errcode = '22023';
            end if;
            v_ref := jsonb_build_object('start', v_start, 'end', v_end);
        elsif v_key = 'label_source' then
            if jsonb_typeof(v_value) <> 'string' then
                raise exception 'options.performance.label_source: must be a feedback source (text), got %', jsonb_typeof(v_value)
                    using errcode = '22023';
            end if;
        elsif v_key = any (v_known) then
            if jsonb_typeof(v_value) <> 'object'
               or exists (select from jsonb_object_keys(v_value) k where k not in ('lower', 'upper')) then
                raise exception 'options.performance.%: must be {"lower": number, "upper": number} (either may be absent), got %',
                    v_key, v_value using errcode = '22023';
            end if;
            if exists (select from jsonb_each(v_value) e where jsonb_typeof(e.value) not in ('number', 'null')) then
                raise exception 'options.performance.%: lower and upper must be numbers, got %', v_key, v_value using errcode = '22023';
            end if;
            if (v_value ->> 'lower')::float8 > (v_value ->> 'upper')::float8 then
                raise exception 'options.performance.%: lower must not exceed upper, got %', v_key, v_value using errcode = '22023';
            end if;
            v_bounds := v_bounds || jsonb_build_object(v_key, jsonb_strip_nulls(v_value));
        else
            raise exception 'options.performance.%: unknown metric (metrics: %; also reference, label_source)', v_key,
                array_to_string(v_known, ', ') using errcode = '22023';
        end if;
    end loop;
    return jsonb_build_object('bucket', v_bucket, 'buckets', v_count, 'label_source', v_perf -> 'label_source',
                              'reference', v_ref, 'bounds', v_bounds);
end
$$;

------------------------------------------------------------------------------------------------
-- Metrics per bucket
------------------------------------------------------------------------------------------------

-- ml_private.performance_stage() returns void
-- Creates (once per transaction) or empties pg_temp._pgmlops_performance_rows, the rows the
-- metrics are computed on: bucket_start, score, has_probabilities, labelled (a label has
-- arrived), correct (label = prediction, as JSON), positive / predicted_positive (two classes:
-- the label / prediction is the positive class), y / yhat (regression: label and prediction),
-- and, for more than two classes only, probabilities, prediction and label (a million binary
-- predictions are staged without copying their JSON: 2x faster).
create or replace function ml_private.performance_stage() returns void
language plpgsql volatile
set search_path = ''
as $$
begin
    create temp table if not exists pg_temp._pgmlops_performance_rows (
        bucket_start timestamptz, score float8, has_probabilities boolean, labelled boolean, correct boolean,
        positive boolean, predicted_positive boolean, y float8, yhat float8,
        probabilities jsonb, prediction jsonb, label jsonb) on commit drop;
    truncate pg_temp._pgmlops_performance_rows;
end
$$;

-- (Before p_labelled_only, it had ten arguments.)
drop function if exists ml_private.performance_buckets(uuid, uuid, uuid, text, jsonb, timestamptz, timestamptz, interval, text, boolean);

-- ml_private.performance_buckets(p_tenant uuid, p_project uuid, p_version uuid, p_task text,
--     p_classes jsonb, p_start timestamptz, p_end timestamptz, p_bucket interval,
--     p_label_source text, p_estimate boolean, p_labelled_only boolean default false)
-- returns table (bucket_start, bucket_end, metric, estimated, value, sample_count)
-- Performance of the live predictions (no shadow rows, no failed rows) of p_version (any version
-- of the project when NULL) made in [p_start, p_end), per bucket of p_bucket starting at p_start
-- (the last one ends at p_end). Every bucket gets a row per metric, empty ones too (value NULL,
-- sample_count 0).
-- Realized (estimated false): over the predictions with a label (the p_label_source's, else
-- each prediction's latest), sample_count = labelled predictions; the same numbers as
-- scikit-learn on those rows:
--   classification with two classes (p_classes): positive class p_classes[1] (the second, as
--     pos_label=1 for 0/1 classes): accuracy_score, precision_score, recall_score, f1_score
--     (zero_division: 0), roc_auc_score(y == positive, score) (the score is the positive class's
--     probability or the decision function); roc_auc NULL when the bucket's labels hold one class
--     only or a score is missing;
--   more classes (or none listed): average='macro' over the labels present in the bucket's labels
--     and predictions (scikit-learn's default labels); roc_auc = roc_auc_score(y, probabilities,
--     multi_class='ovr', average='macro') when every listed class occurs among the labels and
--     every row has its probabilities, else NULL;
--   anomaly detection: binary with "anomaly" (label true or -1, prediction -1) positive, scored by
--     the anomaly score;
--   regression: mean_absolute_error, root_mean_squared_error.
-- Estimated (estimated true, p_estimate and two classes only): CBPE over every prediction with
-- probabilities (sample_count = those), the score being the positive class's probability,
-- taken as calibrated: NannyML 0.13.1's estimates (docs/performance-monitoring.md).
-- p_labelled_only stages the labelled predictions only (fast reports: the cost follows the labels,
-- not the log; no estimate then).
-- Callers: ml_private.report_performance.
create or replace function ml_private.performance_buckets(p_tenant uuid, p_project uuid, p_version uuid, p_task text,
                                                          p_classes jsonb, p_start timestamptz, p_end timestamptz,
                                                          p_bucket interval, p_label_source text, p_estimate boolean,
                                                          p_labelled_only boolean default false)
returns table (bucket_start timestamptz, bucket_end timestamptz, metric text, estimated boolean, value float8, sample_count bigint)
language plpgsql volatile
set search_path = ''
as $$
declare
    v_binary boolean := p_task = 'anomaly_detection'
                        or (p_task = 'classification' and jsonb_typeof(p_classes) = 'array' and jsonb_array_length(p_classes) = 2);
begin
    perform ml_private.performance_stage();
    insert into pg_temp._pgmlops_performance_rows (bucket_start, score, has_probabilities, labelled, correct, positive,
                                                   predicted_positive, y, yhat, probabilities, prediction, label)
    with labels as (
        select distinct on (f.prediction_id) f.prediction_id, f.predicted_at, f.label
        from ml.feedback f
        where f.tenant_id = p_tenant and f.project_id = p_project and f.predicted_at >= p_start and f.predicted_at < p_end
          and (p_label_source is null or f.source = p_label_source)
        order by f.prediction_id, f.updated_at desc, f.id desc
    )
    select date_bin(p_bucket, p.created_at, p_start), p.score, p.probabilities is not null, l.label is not null,
           -- an anomaly label may be true / false or -1 / 1, the prediction is -1 / 1
           case when p_task = 'anomaly_detection' then (l.label in ('true', '-1')) = (p.prediction = '-1')
                else l.label = p.prediction end,
           case when p_task = 'anomaly_detection' then l.label in ('true', '-1')
                when v_binary then l.label = p_classes -> 1 end,
           case when p_task = 'anomaly_detection' then p.prediction = '-1'
                when v_binary then p.prediction = p_classes -> 1 end,
           case when p_task = 'regression' then (l.label #>> '{}')::float8 end,
           case when p_task = 'regression' then (p.prediction #>> '{}')::float8 end,
           case when p_task = 'classification' and not v_binary then p.probabilities end,
           case when p_task = 'classification' and not v_binary then p.prediction end,
           case when p_task = 'classification' and not v_binary then l.label end
    from ml.predictions p
    left join labels l on l.prediction_id = p.id and l.predicted_at = p.created_at
    where p.tenant_id = p_tenant and p.project_id = p_project and (p_version is null or p.model_version_id = p_version)
      and p.shadow_of is null and p.error is null and p.prediction is not null
      and p.created_at >= p_start and p.created_at < p_end
      and (not p_labelled_only or l.prediction_id is not null);
    return query select * from ml_private.performance_staged(p_task, p_classes, p_start, p_end, p_bucket, p_estimate);
end
$$;

-- ml_private.performance_staged(p_task text, p_classes jsonb, p_start timestamptz, p_end timestamptz,
--     p_bucket interval, p_estimate boolean)
-- returns table (bucket_start, bucket_end, metric, estimated, value, sample_count)
-- The metrics of the rows staged in pg_temp._pgmlops_performance_rows (their bucket_start
-- computed by the stager), per bucket of p_bucket from p_start to p_end: the computation of
-- ml_private.performance_buckets, whose header states the definitions.
create or replace function ml_private.performance_staged(p_task text, p_classes jsonb, p_start timestamptz, p_end timestamptz,
                                                         p_bucket interval, p_estimate boolean)
returns table (bucket_start timestamptz, bucket_end timestamptz, metric text, estimated boolean, value float8, sample_count bigint)
language plpgsql volatile
set search_path = ''
as $$
declare
    v_binary boolean := p_task = 'anomaly_detection'
                        or (p_task = 'classification' and jsonb_typeof(p_classes) = 'array' and jsonb_array_length(p_classes) = 2);
    v_classes jsonb := case when jsonb_typeof(p_classes) = 'array' and jsonb_array_length(p_classes) > 0 then p_classes end;
begin
    return query
    with buckets as (
        select b as bucket_start, least(b + p_bucket, p_end) as bucket_end
        from generate_series(p_start, p_end - interval '1 microsecond', p_bucket) b
    ),
    labelled as (
        select * from pg_temp._pgmlops_performance_rows r where r.labelled
    ),
    counts as (
        select l.bucket_start, count(*) as n,
               count(*) filter (where l.correct) as correct,
               count(*) filter (where l.positive and l.predicted_positive) as tp,
               count(*) filter (where l.positive) as true_n,
               count(*) filter (where l.predicted_positive) as pred_n,
               count(l.score) as scored,
               avg(abs(l.y - l.yhat)) filter (where p_task = 'regression') as mae,
               sqrt(avg((l.y - l.yhat) ^ 2) filter (where p_task = 'regression')) as rmse
        from labelled l group by l.bucket_start
    ),
    -- Macro averages (more than two classes): per class present in the bucket's labels or predictions.
    per_class as (
        select c.bucket_start, c.class,
               count(*) filter (where l.label = c.class and l.prediction = c.class) as tp,
               count(*) filter (where l.label = c.class) as true_n,
               count(*) filter (where l.prediction = c.class) as pred_n
        from (select distinct x.bucket_start, x.class
              from labelled l2, lateral (values (l2.bucket_start, l2.label), (l2.bucket_start, l2.prediction)) x (bucket_start, class)) c
        join labelled l on l.bucket_start = c.bucket_start
        where p_task = 'classification' and not v_binary
        group by c.bucket_start, c.class
    ),
    macro as (
        select pc.bucket_start,
               avg(case when pc.pred_n = 0 then 0 else pc.tp::float8 / pc.pred_n end) as precision,
               avg(case when pc.true_n = 0 then 0 else pc.tp::float8 / pc.true_n end) as recall,
               avg(case when pc.true_n + pc.pred_n = 0 then 0 else 2 * pc.tp::float8 / (pc.true_n + pc.pred_n) end) as f1
        from per_class pc group by pc.bucket_start
    ),
    -- ROC AUC as the Mann-Whitney statistic with average ranks for ties (what the trapezoid under
    -- scikit-learn's ROC curve equals): binary on the score, one-vs-rest per class otherwise.
    auc_input as (
        select l.bucket_start, 'positive'::text as class, l.positive as is_class, l.score as s
        from labelled l where v_binary
        union all
        select l.bucket_start, c.value #>> '{}', l.label = c.value, (l.probabilities ->> (c.value #>> '{}'))::float8
        from labelled l, jsonb_array_elements(v_classes) c
        where p_task = 'classification' and not v_binary
    ),
    -- Grouped by score first: a tie group's average rank is the rows before it plus (count + 1) / 2.
    auc_groups as (
        select a.bucket_start, a.class, a.s, count(*) filter (where a.is_class) as pos, count(*) as cnt
        from auc_input a where a.s is not null
        group by a.bucket_start, a.class, a.s
    ),
    auc_ranked as (
        select g.bucket_start, g.class, g.pos, g.cnt,
               coalesce(sum(g.cnt) over (partition by g.bucket_start, g.class order by g.s
                                         rows between unbounded preceding and 1 preceding), 0) as before
        from auc_groups g
    ),
    auc_class as (
        select a.bucket_start, a.class, sum(a.pos) as n1, sum(a.cnt - a.pos) as n0,
               sum(a.pos * (a.before + (a.cnt + 1) / 2.0)) as rank_sum
        from auc_ranked a group by a.bucket_start, a.class
    ),
    auc as (
        select a.bucket_start,
               case when count(*) filter (where a.n1 = 0 or a.n0 = 0) > 0 then null
                    when v_binary then max(((a.rank_sum - a.n1 * (a.n1 + 1) / 2.0) / nullif(a.n1 * a.n0, 0))::float8)
                    when count(*) = jsonb_array_length(v_classes)
                        then avg(((a.rank_sum - a.n1 * (a.n1 + 1) / 2.0) / nullif(a.n1 * a.n0, 0))::float8) end as roc_auc,
               max(a.n1 + a.n0) as scored
        from auc_class a group by a.bucket_start
    ),
    -- CBPE: each prediction counts as p of a positive and 1 - p of a negative outcome.
    cbpe_rows as (
        select r.bucket_start, r.score as p, r.predicted_positive as yp
        from pg_temp._pgmlops_performance_rows r
        where p_estimate and v_binary and p_task = 'classification' and r.has_probabilities and r.score is not null
    ),
    cbpe_counts as (
        select c.bucket_start, count(*) as n,
               coalesce(sum(c.p) filter (where c.yp), 0) as tp, coalesce(sum(1 - c.p) filter (where c.yp), 0) as fp,
               coalesce(sum(c.p) filter (where not c.yp), 0) as fn, coalesce(sum(1 - c.p) filter (where not c.yp), 0) as tn
        from cbpe_rows c group by c.bucket_start
    ),
    -- NannyML's estimate_roc_auc: scores in decreasing order, the expected true positives
    -- (cumulative sum of p) and false positives (rank - that), both rounded to 5 decimals as
    -- np.round does (round(float8) is rint: half to even), normalized by their totals, and the
    -- trapezoid from (0, 0). Tied scores have equal p, so their order changes no sum.
    cbpe_curve as (
        select c.bucket_start,
               round(c.tps * 100000.0) / 100000.0 as tps,
               round((c.i::float8 - c.tps) * 100000.0) / 100000.0 as fps,
               round(coalesce(c.tps0, 0) * 100000.0) / 100000.0 as tps0,
               round(((c.i - 1)::float8 - coalesce(c.tps0, 0)) * 100000.0) / 100000.0 as fps0
        -- Both frames share one sort; the running sums add in the same order, so a row's tps0 is
        -- bit for bit the previous row's tps.
        from (select r.bucket_start, row_number() over w as i, sum(r.p) over w as tps, sum(r.p) over w0 as tps0
              from cbpe_rows r
              window w as (partition by r.bucket_start order by r.p desc rows between unbounded preceding and current row),
                     w0 as (partition by r.bucket_start order by r.p desc rows between unbounded preceding and 1 preceding)) c
    ),
    -- The trapezoid of the normalized curve: sum of (fps - fps0) (tps + tps0) / (2 F T), F and T
    -- the totals (the curve only rises, so its maxima).
    cbpe_auc as (
        select s.bucket_start,
               case when max(s.tps) > 0 and max(s.fps) > 0 then
                   sum((s.fps - s.fps0) * (s.tps + s.tps0)) / (2.0 * nullif(max(s.fps), 0) * nullif(max(s.tps), 0)) end as roc_auc
        from cbpe_curve s group by s.bucket_start
    ),
    estimated as (
        select b.bucket_start, b.bucket_end, m.metric, true as estimated,
               case when coalesce(c.n, 0) = 0 then null else m.value end as value, coalesce(c.n, 0) as sample_count
        from buckets b
        left join cbpe_counts c on c.bucket_start = b.bucket_start
        left join cbpe_auc a on a.bucket_start = b.bucket_start
        cross join lateral (values
            ('accuracy', (c.tp + c.tn) / c.n),
            ('precision', case when c.tp + c.fp <> 0 then c.tp / (c.tp + c.fp) else 0 end),
            ('recall', case when c.tp + c.fn <> 0 then c.tp / (c.tp + c.fn) else 0 end),
            ('f1', case when c.tp + 0.5 * (c.fp + c.fn) <> 0 then c.tp / (c.tp + 0.5 * (c.fp + c.fn)) else 0 end),
            ('roc_auc', a.roc_auc)) m (metric, value)
        where p_estimate and v_binary and p_task = 'classification'
    ),
    realized as (
        select b.bucket_start, b.bucket_end, m.metric, false as estimated,
               case when coalesce(c.n, 0) = 0 then null else m.value end as value, coalesce(c.n, 0) as sample_count
        from buckets b
        left join counts c on c.bucket_start = b.bucket_start
        left join macro mc on mc.bucket_start = b.bucket_start
        left join auc a on a.bucket_start = b.bucket_start
        cross join lateral (values
            ('accuracy', c.correct::float8 / nullif(c.n, 0)),
            ('precision', case when v_binary then case when c.pred_n = 0 then 0 else c.tp::float8 / c.pred_n end else mc.precision end),
            ('recall', case when v_binary then case when c.true_n = 0 then 0 else c.tp::float8 / c.true_n end else mc.recall end),
            ('f1', case when v_binary then case when c.true_n + c.pred_n = 0 then 0 else 2 * c.tp::float8 / (c.true_n + c.pred_n) end
                        else mc.f1 end),
            ('roc_auc', case when a.scored = c.n then a.roc_auc end),
            ('mae', c.mae),
            ('rmse', c.rmse)) m (metric, value)
        where m.metric = any (ml_private.performance_metrics(p_task))
    )
    select * from realized
    union all
    select * from estimated;
end
$$;

------------------------------------------------------------------------------------------------
-- The report's performance section
------------------------------------------------------------------------------------------------

-- ml_private.performance_holdout(p_version uuid, p_chunk_rows bigint) returns jsonb
-- The reference chunks of a compiled version trained with a time split: its held-out rows (the
-- test set the training kept unseen: the training set's rows with a label, in event time order,
-- ties in row order as the training's stable sort leaves them, the last max(1, ceil(n x
-- test_size))), scored in SQL by the version's compiled function (JIT off), their realized
-- metrics per chunk of p_chunk_rows rows in that order (the remainder joins the last chunk, as
-- NannyML's incomplete='append'). Returns {"kind": "holdout", "rows", "chunk_rows", "chunks",
-- "values": {metric: [value per chunk]}}, or {"kind": "holdout", "skipped": why} when the version
-- has no such test set (a random or stratified split, whose rows SQL cannot tell apart, would
-- give the training rows' optimistic performance: no band is better than a wrong one), is not
-- compiled, is an anomaly detector (its training labels use another convention), or the test
-- set makes fewer than 3 chunks (one chunk's standard deviation says nothing).
-- Callers: ml_private.report_performance.
create or replace function ml_private.performance_holdout(p_version uuid, p_chunk_rows bigint) returns jsonb
language plpgsql volatile
set search_path = ''
set jit = off
as $$
declare
    v_v       ml.model_versions;
    v_run     ml.runs;
    v_ds      ml.datasets;
    v_task    text;
    v_time    text;
    v_args    jsonb;
    v_out     jsonb;
    v_size    float8;
    v_n       bigint;
    v_test    bigint;
    v_chunks  bigint;
    v_values  jsonb;
begin
    select * into v_v from ml.model_versions v where v.id = p_version;
    select * into v_run from ml.runs r where r.id = v_v.run_id;
    select * into v_ds from ml.datasets d where d.id = v_v.dataset_id;
    select p.task into v_task from ml.models m join ml.projects p on p.id = m.project_id where m.id = v_v.model_id;
    select c ->> 'name' into v_time from jsonb_array_elements(v_ds.columns) c where c ->> 'role' = 'event_time' limit 1;
    if v_v.id is null or v_ds.id is null or v_ds.label is null then
        return jsonb_build_object('kind', 'holdout', 'skipped', 'the version has no training set with a label');
    elsif v_task not in ('classification', 'regression') then
        return jsonb_build_object('kind', 'holdout', 'skipped', format('no held-out performance for task %s', v_task));
    elsif coalesce(v_run.options ->> 'split', '') <> 'time' or v_time is null then
        return jsonb_build_object('kind', 'holdout', 'skipped',
            'the version was not trained with a time split: its test rows cannot be told apart in SQL');
    elsif ml_private.compiled_function(v_v.id) is null then
        return jsonb_build_object('kind', 'holdout', 'skipped', 'the version is scored by workers: no compiled function to score its test rows');
    elsif p_chunk_rows is null or p_chunk_rows < 1 then
        return jsonb_build_object('kind', 'holdout', 'skipped', 'the window has no predictions to size the chunks');
    end if;
    v_size := coalesce((v_run.options ->> 'test_size')::float8, 0.2);
    execute format('select count(*) from %s t where t.%I is not null', v_ds.table_name, v_ds.label) into v_n;
    v_test := greatest(1, ceil(v_n * v_size)::bigint);
    v_chunks := v_test / p_chunk_rows;
    if v_chunks < 3 then
        return jsonb_build_object('kind', 'holdout', 'rows', v_test, 'chunk_rows', p_chunk_rows, 'skipped',
            format('the %s held-out rows make %s chunks of %s rows; a band needs at least 3', v_test, v_chunks, p_chunk_rows));
    end if;
    v_args := ml_private.batch_arguments_sql(ml_private.compiled_model_inputs(v_v.signature, v_ds.id) -> 'arguments',
                                             ml_private.batch_columns(v_ds.table_name::regclass), 't');
    v_out := ml_private.batch_outputs_sql(v_task, v_v.signature -> 'classes', 's.r');
    perform ml_private.performance_stage();
    -- Chunk k (from 0) is staged at second k after the epoch, so the buckets of one second count them.
    execute format(
        'insert into pg_temp._pgmlops_performance_rows (bucket_start, score, has_probabilities, labelled, correct, positive, '
        '                                               predicted_positive, y, yhat, probabilities, prediction, label) '
        'select to_timestamp(least((s.pos - 1 - ($1 - $2)) / $3, $4 - 1)), %1$s, %2$s is not null, true, '
        '       s.label = s.r -> ''prediction'', '
        '       case when jsonb_array_length($5) = 2 then s.label = $5 -> 1 end, '
        '       case when jsonb_array_length($5) = 2 then s.r -> ''prediction'' = $5 -> 1 end, '
        '       case when $6 = ''regression'' then (s.label #>> ''{}'')::float8 end, '
        '       case when $6 = ''regression'' then (s.r ->> ''prediction'')::float8 end, %2$s, s.r -> ''prediction'', s.label '
        'from (select ml_models.%3$I(a.num, a.cat) as r, a.label, a.pos '
        '      from (select %4$s as num, %5$s as cat, to_jsonb(t.%6$I) as label, '
        '                   row_number() over (order by t.%7$I, t.row_id) as pos '
        '            from %8$s t where t.%6$I is not null) a '
        '      where a.pos > $1 - $2 offset 0) s',
        v_out ->> 'score', v_out ->> 'probabilities', ml_private.compiled_model_name(v_v.id), v_args ->> 'num', v_args ->> 'cat',
        v_ds.label, v_time, v_ds.table_name)
        using v_n, v_test, p_chunk_rows, v_chunks, coalesce(v_v.signature -> 'classes', '[]'), v_task;
    select jsonb_object_agg(m.metric, m.vals) into v_values
    from (select r.metric, jsonb_agg(r.value order by r.bucket_start) as vals
          from ml_private.performance_staged(v_task, v_v.signature -> 'classes', to_timestamp(0), to_timestamp(v_chunks),
                                             interval '1 second', false) r
          group by r.metric) m;
    return jsonb_build_object('kind', 'holdout', 'rows', v_test, 'chunk_rows', p_chunk_rows, 'chunks', v_chunks, 'values', v_values);
end
$$;

-- ml_private.performance_bounds(p_metric text, p_values float8[]) returns jsonb
-- NannyML's StandardDeviationThreshold over reference chunk values: nanmean -+ 3 x nanstd
-- (population standard deviation, NULL chunks ignored), a lower bound at or below the metric's
-- floor (0) set to it, an upper bound at or above its ceiling (1 for the classification metrics,
-- none for mae and rmse) set to it. {"lower", "upper", "mean", "std", "chunks"}, or NULL when no
-- chunk has a value.
create or replace function ml_private.performance_bounds(p_metric text, p_values float8[]) returns jsonb
language sql immutable
set search_path = ''
as $$
    select case when count(v) > 0 then jsonb_build_object(
        'lower', greatest(avg(v) - 3 * coalesce(stddev_pop(v), 0), 0),
        'upper', case when p_metric in ('mae', 'rmse') then avg(v) + 3 * coalesce(stddev_pop(v), 0)
                      else least(avg(v) + 3 * coalesce(stddev_pop(v), 0), 1) end,
        'mean', avg(v), 'std', coalesce(stddev_pop(v), 0), 'chunks', count(v)) end
    from unnest(p_values) v
$$;

-- ml_private.report_performance(p_report uuid) returns jsonb
-- Fills ml.performance_results for drift report p_report (replacing rows an earlier call wrote)
-- and returns its summary section:
--   {"buckets": n, "bucket": interval, "predictions": live predictions in the window,
--    "labels": those with a label, "coverage": labels / predictions (NULL without predictions),
--    "realized": {metric: {"last", "mean", "alerts", "lower", "upper", "bounds"}},
--    "estimated": {metric: {...}} (CBPE; binary classifiers with probabilities only),
--    "reference": {"kind": "period", "start", "end"} | {"kind": "holdout", "rows", "chunk_rows",
--                 "chunks"} | {"kind": "holdout", "skipped": why}}
-- "last" is the value of the latest bucket that has one, "mean" the mean over buckets that have
-- one, "alerts" the buckets outside [lower, upper]; "bounds" says where the band came from:
-- "options" (set by hand), "reference" (mean -+ 3 std over reference chunks) or null (none: no
-- alert). Estimated metrics take the realized metric's band (NannyML compares estimates with the
-- realized performance of the reference chunks). The reference: options.performance.reference
-- (a labelled period of the log, chunks of the bucket's size), else the version's held-out rows
-- (ml_private.performance_holdout; chunks of the window's mean labelled predictions per bucket,
-- or predictions per bucket while no label has arrived).
-- Reads the report's project, model version (any version of the project when NULL), window and
-- options (ml_private.performance_options). A report whose source is not the prediction log has
-- no feedback to join: the section says so and no row is written.
-- Raises P0002 no such report; 22023 bad options (nothing written). Callers: ml.drift_report
-- (after its results are written), tests; granted to nobody.
create or replace function ml_private.report_performance(p_report uuid) returns jsonb
language plpgsql volatile security definer
set search_path = ''
set jit = off
-- The label join and the per-bucket sorts of a window of a million predictions spill to disk at
-- the default 4MB (measured: 2.4x slower); one report at a time may take more.
set work_mem = '64MB'
as $$
declare
    v_report   ml.drift_reports;
    v_task     text;
    v_version  uuid;
    v_classes  jsonb;
    v_options  jsonb;
    v_bucket   interval;
    v_source   text;
    v_ref      jsonb;
    v_refdoc   jsonb;
    v_bounds   jsonb := '{}';
    v_metric   text;
    v_estimate boolean;
    v_total    bigint;
    v_labels   bigint;
    v_chunk    bigint;
    v_fast     boolean;
    v_section  jsonb;
begin
    select * into v_report from ml.drift_reports r where r.id = p_report;
    if v_report.id is null then
        raise exception 'drift report % does not exist', coalesce(p_report::text, 'NULL') using errcode = 'P0002';
    end if;
    v_options := ml_private.performance_options(v_report.options, v_report.window_start, v_report.window_end);
    delete from ml.performance_results where report_id = p_report;
    if v_report.source <> 'ml.predictions' then
        return jsonb_build_object('skipped', format('the source %s has no feedback: performance is measured on ml.predictions only',
                                                    v_report.source));
    end if;
    select p.task into v_task from ml.projects p where p.id = v_report.project_id;
    if v_task not in ('classification', 'regression', 'anomaly_detection') then
        return jsonb_build_object('skipped', format('no performance metrics for task %s', v_task));
    end if;
    v_version := coalesce(v_report.model_version_id,
                          (select p.model_version_id from ml.predictions p
                           where p.tenant_id = v_report.tenant_id and p.project_id = v_report.project_id
                             and p.created_at >= v_report.window_start and p.created_at < v_report.window_end
                             and p.shadow_of is null
                           group by p.model_version_id order by count(*) desc, max(p.created_at) desc limit 1));
    select v.signature -> 'classes' into v_classes from ml.model_versions v where v.id = v_version;
    v_bucket := (v_options ->> 'bucket')::interval;
    v_source := v_options ->> 'label_source';
    v_estimate := v_task = 'classification' and jsonb_typeof(v_classes) = 'array' and jsonb_array_length(v_classes) = 2;
    v_fast := v_report.mode = 'fast';

    -- The window first (bounds come after: the reference's chunk size depends on it). A fast
    -- report reads the labelled predictions only, so its cost follows the labels, not the log:
    -- no CBPE (it needs every score), and the predictions are the report's row_count.
    insert into ml.performance_results (tenant_id, report_id, bucket_start, bucket_end, metric, estimated, value, sample_count)
    select v_report.tenant_id, p_report, r.bucket_start, r.bucket_end, r.metric, r.estimated, r.value, r.sample_count
    from ml_private.performance_buckets(v_report.tenant_id, v_report.project_id, v_report.model_version_id, v_task, v_classes,
                                        v_report.window_start, v_report.window_end, v_bucket, v_source,
                                        v_estimate and not v_fast, v_fast) r;
    select count(*), count(*) filter (where r.labelled) into v_total, v_labels from pg_temp._pgmlops_performance_rows r;
    if v_fast then
        v_total := greatest(v_report.row_count, v_labels);
    end if;
    select round(case when v_labels > 0 then avg(b.labelled) filter (where b.labelled > 0)
                      when v_fast then v_total::numeric / (v_options ->> 'buckets')::int
                      else avg(b.n) end)
      into v_chunk
    from (select r.bucket_start, count(*) as n, count(*) filter (where r.labelled) as labelled
          from pg_temp._pgmlops_performance_rows r group by r.bucket_start) b;

    -- The band of each metric: from the reference, then by hand.
    v_ref := v_options -> 'reference';
    if jsonb_typeof(v_ref) = 'object' then
        v_refdoc := jsonb_build_object('kind', 'period') || v_ref;
        select coalesce(jsonb_object_agg(b.metric, b.doc || '{"bounds": "reference"}') filter (where b.doc is not null), '{}')
          into v_bounds
        from (select r.metric, ml_private.performance_bounds(r.metric, array_agg(r.value)) as doc
              from ml_private.performance_buckets(v_report.tenant_id, v_report.project_id, v_report.model_version_id, v_task,
                                                  v_classes, (v_ref ->> 'start')::timestamptz, (v_ref ->> 'end')::timestamptz,
                                                  v_bucket, v_source, false, true) r
              group by r.metric) b;
    elsif v_version is not null then
        v_refdoc := ml_private.performance_holdout(v_version, v_chunk);
        select coalesce(jsonb_object_agg(b.metric, b.doc || '{"bounds": "reference"}') filter (where b.doc is not null), '{}')
          into v_bounds
        from (select e.key as metric,
                     ml_private.performance_bounds(e.key, array(select (x #>> '{}')::float8 from jsonb_array_elements(e.value) x)) as doc
              from jsonb_each(coalesce(v_refdoc -> 'values', '{}')) e) b;
        v_refdoc := v_refdoc - 'values';
    end if;
    for v_metric in select jsonb_object_keys(v_options -> 'bounds') loop
        v_bounds := v_bounds || jsonb_build_object(v_metric, (v_options -> 'bounds' -> v_metric) || '{"bounds": "options"}');
    end loop;
    update ml.performance_results pr
       set lower_bound = (v_bounds -> pr.metric ->> 'lower')::float8,
           upper_bound = (v_bounds -> pr.metric ->> 'upper')::float8,
           alert = coalesce(pr.value < (v_bounds -> pr.metric ->> 'lower')::float8
                            or pr.value > (v_bounds -> pr.metric ->> 'upper')::float8, false)
     where pr.report_id = p_report and v_bounds ? pr.metric;

    select jsonb_build_object(
               'buckets', (v_options ->> 'buckets')::int, 'bucket', v_bucket::text,
               'predictions', v_total, 'labels', v_labels,
               'coverage', case when v_total > 0 then v_labels::float8 / v_total end,
               'realized', coalesce(jsonb_object_agg(s.metric, s.doc) filter (where not s.estimated), '{}'),
               'estimated', coalesce(jsonb_object_agg(s.metric, s.doc) filter (where s.estimated), '{}'),
               'reference', v_refdoc)
           || case when v_fast and v_estimate then jsonb_build_object('estimated_skipped',
                  'fast mode reads the labelled predictions only; CBPE needs every score: run an exact report') else '{}' end
      into v_section
    from (select pr.metric, pr.estimated,
                 jsonb_build_object(
                     'last', (array_agg(pr.value order by pr.bucket_start desc) filter (where pr.value is not null))[1],
                     'mean', avg(pr.value order by pr.bucket_start), 'alerts', count(*) filter (where pr.alert),
                     'lower', v_bounds -> pr.metric -> 'lower', 'upper', v_bounds -> pr.metric -> 'upper',
                     'bounds', v_bounds -> pr.metric -> 'bounds') as doc
          from ml.performance_results pr where pr.report_id = p_report
          group by pr.metric, pr.estimated) s;
    return v_section;
end
$$;

------------------------------------------------------------------------------------------------
-- Grants: none. ml.drift_report (security definer, owner) calls these; clients read
-- ml.performance_results under row-level security.
------------------------------------------------------------------------------------------------

revoke all on function
    ml_private.performance_metrics(text),
    ml_private.performance_options(jsonb, timestamptz, timestamptz),
    ml_private.performance_buckets(uuid, uuid, uuid, text, jsonb, timestamptz, timestamptz, interval, text, boolean, boolean),
    ml_private.performance_bounds(text, float8[]),
    ml_private.performance_stage(),
    ml_private.performance_staged(text, jsonb, timestamptz, timestamptz, interval, boolean),
    ml_private.performance_holdout(uuid, bigint),
    ml_private.report_performance(uuid)
from public;
