-- pgmlops: retraining/policies.sql — retraining policies, trigger checks and the history
--
-- The contract: docs/retraining.md, "Retraining policies".
--
-- A project's retraining policy (ml.retraining_policies, one per project) says when to retrain
-- and how: its triggers, a cooldown, the training recipe, the data curation, the offline and
-- online evaluation, the rollback bound and whether promotion is automatic or needs approval.
-- ml.set_retraining_policy validates every field (22023, the message names the field as a path:
-- 'policy.triggers[1].share: must be <= 1, got 2') and stores the policy with its defaults
-- filled; nothing is written on error.
--
-- After each drift report (ml.drift_report calls it), ml_private.check_retraining_triggers
-- evaluates the project's triggers against the report and records the outcome in
-- ml.retraining_events: a 'trigger' row with the evidence when one fires, a 'skip' row with the
-- reason when one fires during the cooldown; nothing when none fires. A 'trigger' row enqueues
-- the 'retrain' job that acts on it (ml_private.enqueue_retrain, sql/retraining/retrain.sql).
--
-- Changes are written to ml.audit_log (object_kind 'retraining_policy': actions
-- retraining_policy.set, retraining_policy.removed) and published on topic 'retraining':
--   policy.set  policy.removed  retraining.triggered  retraining.skipped

------------------------------------------------------------------------------------------------
-- Validation helpers
------------------------------------------------------------------------------------------------

-- ml_private.retraining_assert(p_path text, p_schema jsonb, p_value jsonb) returns void
-- Raises 22023 with the first rule p_value breaks, named by its path from p_path
-- ('policy.data.window: must be of type string, got number'); DETAIL lists every rule broken.
create or replace function ml_private.retraining_assert(p_path text, p_schema jsonb, p_value jsonb) returns void
language plpgsql immutable
set search_path = ''
as $$
declare
    v_errors text[] := ml_private.json_schema_errors(p_schema, p_value, p_path);
begin
    if cardinality(v_errors) > 0 then
        raise exception '%', v_errors[1]
            using errcode = '22023',
                  detail = format('%s rule(s) broken: %s', cardinality(v_errors), array_to_string(v_errors, '; '));
    end if;
end
$$;

-- ml_private.retraining_reprefix(p_message text, p_path text) returns text
-- Another validator's message moved under p_path: 'hyperparams: $.C: must be > 0' becomes
-- '<p_path>.C: must be > 0', 'cron: ...' or 'algorithm: ...' becomes '<p_path>: ...'.
create or replace function ml_private.retraining_reprefix(p_message text, p_path text) returns text
language plpgsql immutable
set search_path = ''
as $$
declare
    v_m text[];
begin
    v_m := regexp_match(p_message, '^[a-z_]+: \$\.([^:]+): (.*)$');
    if v_m is not null then
        return p_path || '.' || v_m[1] || ': ' || v_m[2];
    end if;
    v_m := regexp_match(p_message, '^[a-z_]+: (.*)$');
    return p_path || ': ' || coalesce(v_m[1], p_message);
end
$$;

-- ml_private.retraining_raise(p_message text, p_hint text default null) returns void
-- Raises 22023 with p_message (and p_hint when it is not empty): another validator's error,
-- re-raised under its policy path.
create or replace function ml_private.retraining_raise(p_message text, p_hint text default null) returns void
language plpgsql immutable
set search_path = ''
as $$
begin
    if coalesce(p_hint, '') = '' then
        raise exception '%', p_message using errcode = '22023';
    end if;
    raise exception '%', p_message using errcode = '22023', hint = p_hint;
end
$$;

-- ml_private.retraining_interval(p_value jsonb, p_path text, p_zero_ok boolean default false) returns interval
-- p_value (a JSON string such as "1 day", "36 hours") as an interval. Raises 22023 naming p_path
-- when it is not a string, not an interval, negative, or zero without p_zero_ok.
create or replace function ml_private.retraining_interval(p_value jsonb, p_path text, p_zero_ok boolean default false)
returns interval
language plpgsql stable
set search_path = ''
as $$
declare
    v_interval interval;
begin
    if jsonb_typeof(p_value) is distinct from 'string' then
        raise exception '%: must be an interval as a string (e.g. "1 day"), got %', p_path, coalesce(jsonb_typeof(p_value), 'NULL')
            using errcode = '22023';
    end if;
    begin
        v_interval := (p_value #>> '{}')::interval;
    exception when others then
        raise exception '%: % is not an interval (e.g. "1 day", "12 hours")', p_path, p_value using errcode = '22023';
    end;
    if v_interval < interval '0' or (v_interval = interval '0' and not p_zero_ok) then
        raise exception '%: must be %, got %', p_path, case when p_zero_ok then '>= 0' else '> 0' end, p_value
            using errcode = '22023';
    end if;
    return v_interval;
end
$$;

-- ml_private.project_input_names(p_project uuid) returns text[]
-- The input names of every registered version of the project's models (their signatures'
-- inputs), sorted; empty when the project has no version yet.
create or replace function ml_private.project_input_names(p_project uuid) returns text[]
language sql stable security definer
set search_path = ''
as $$
    select coalesce(array_agg(distinct i ->> 'name' order by i ->> 'name'), '{}')
    from ml.models m
    join ml.model_versions v on v.model_id = m.id
    cross join lateral jsonb_array_elements(case when jsonb_typeof(v.signature -> 'inputs') = 'array'
                                                 then v.signature -> 'inputs' else '[]' end) i
    where m.project_id = p_project and i ->> 'name' is not null
$$;

------------------------------------------------------------------------------------------------
-- The policy
------------------------------------------------------------------------------------------------

-- ml_private.normalize_retraining_policy(p_project ml.projects, p_policy jsonb) returns jsonb
-- Checks p_policy for project p_project and returns it with every default filled (the shape and
-- the defaults: docs/retraining.md, "Retraining policies"):
--   enabled     true
--   triggers    [{"type": "dataset_drift", "share": 0.5}]; each one of
--               {"type": "dataset_drift", "share": (0, 1] = 0.5}
--               {"type": "feature_drift", "features": [input names] | null (any input),
--                "min_features": n >= 1 = 1 (at most the features named)}
--               {"type": "metric_drop", "metric": a realized metric of the task
--                (ml_private.performance_metrics), "source": realized | estimated = realized,
--                "drop": x > 0 (absolute) or "relative_drop": (0, 1] (exactly one),
--                "baseline": x | null, "min_samples": n >= 1 = 1}
--               {"type": "new_labels", "min": n >= 1}
--               {"type": "schedule", "cron": 5 fields or a macro (ml_private.parse_cron)}
--   cooldown    "1 day" (an interval >= 0)
--   recipe      {"same_as": "champion"} (retrain the replaced version's algorithm and
--               hyperparameters), or {"algorithm": name, "hyperparams": {} (checked as ml.train
--               does)}, or {"tune": {"algorithms": [names], "search_spaces": {name: space (as
--               ml.tune's)}, "trials": 20, "metric": (ml.tune's default), "timeout": null}};
--               "options": ml.train's options with their defaults
--   data        {"window": "30 days", "reference_sample": 1000, "stratify": true,
--                "balance": none | undersample | oversample = none, "dedupe": true,
--                "exclude_invalid": true}
--   evaluation  {"metric": ml.tune's default metric of the task (a held-out metric),
--                "test": bootstrap | mcnemar (accuracy only) | delong (roc_auc only) = delong for
--                roc_auc, mcnemar for accuracy, else bootstrap, "confidence": [0.5, 0.999] = 0.95,
--                "min_improvement": x >= 0 = 0, "bootstrap_samples": [100, 100000] = 1000}
--   online      {"mode": shadow | canary | none = shadow, "min_samples": n >= 1 = 500,
--                "significance": (0, 0.5] = 0.05, "canary_weight": (0, 1) = 0.1 (canary only),
--                "max_duration": "7 days"}
--   rollback    {"enabled": true, "metric": a realized metric = the evaluation metric when it is
--                one, else accuracy (rmse for regression), "max_drop": x > 0 = 0.05,
--                "window": "1 day"}
--   promotion   automatic | approval = approval
-- Feature names must be inputs of a registered version of the project's models when it has one
-- (ml_private.project_input_names); before the first version any name is accepted.
-- Raises 22023 naming the field as a path from 'policy' and the rule.
create or replace function ml_private.normalize_retraining_policy(p_project ml.projects, p_policy jsonb) returns jsonb
language plpgsql stable security definer
set search_path = ''
as $$
declare
    v_task      text := p_project.task;
    v_live      text[] := ml_private.performance_metrics(p_project.task);
    v_offline   text[] := ml_private.tuning_metrics(p_project.task);
    v_inputs    text[] := ml_private.project_input_names(p_project.id);
    v_triggers  jsonb := '[]';
    v_t         jsonb;
    v_n         jsonb;
    v_path      text;
    v_type      text;
    v_i         int;
    v_j         int;
    v_msg       text;
    v_hint      text;
    v_recipe    jsonb;
    v_r         jsonb;
    v_tune      jsonb;
    v_alg       text;
    v_data      jsonb;
    v_eval      jsonb;
    v_online    jsonb;
    v_rollback  jsonb;
    v_metric    text;
    v_test      text;
    v_obj       constant jsonb := '{"type": "object"}';
begin
    if p_policy is null or jsonb_typeof(p_policy) <> 'object' then
        raise exception 'policy: must be a JSON object, got %', coalesce(jsonb_typeof(p_policy), 'NULL') using errcode = '22023';
    end if;
    perform ml_private.retraining_assert('policy', jsonb_build_object(
        'type', 'object', 'additionalProperties', false, 'properties', jsonb_build_object(
            'enabled', '{"type": "boolean"}'::jsonb,
            'triggers', '{"type": "array", "minItems": 1, "maxItems": 20, "items": {"type": "object"}}'::jsonb,
            'cooldown', '{}'::jsonb, 'recipe', v_obj, 'data', v_obj, 'evaluation', v_obj, 'online', v_obj, 'rollback', v_obj,
            'continuous', v_obj, 'promotion', '{"enum": ["automatic", "approval"]}'::jsonb)), p_policy);

    -- Triggers.
    for v_i in 0 .. coalesce(jsonb_array_length(p_policy -> 'triggers'), 0) - 1 loop
        v_t := p_policy -> 'triggers' -> v_i;
        v_path := format('policy.triggers[%s]', v_i);
        if not v_t ? 'type' then
            raise exception '%.type: is required (dataset_drift, feature_drift, metric_drop, new_labels or schedule)', v_path
                using errcode = '22023';
        end if;
        v_type := v_t ->> 'type';
        perform ml_private.retraining_assert(v_path, case v_type
            when 'dataset_drift' then '{"type": "object", "additionalProperties": false, "properties": {"type": {},
                    "share": {"type": "number", "exclusiveMinimum": 0, "maximum": 1}}}'::jsonb
            when 'feature_drift' then '{"type": "object", "additionalProperties": false, "properties": {"type": {},
                    "features": {"type": ["array", "null"], "minItems": 1, "maxItems": 1000, "items": {"type": "string", "minLength": 1}},
                    "min_features": {"type": "integer", "minimum": 1}}}'::jsonb
            when 'metric_drop' then jsonb_build_object('type', 'object', 'additionalProperties', false, 'required', '["metric"]'::jsonb,
                    'properties', jsonb_build_object('type', '{}'::jsonb,
                        'metric', jsonb_build_object('enum', to_jsonb(v_live)),
                        'source', '{"enum": ["realized", "estimated"]}'::jsonb,
                        'drop', '{"type": "number", "exclusiveMinimum": 0}'::jsonb,
                        'relative_drop', '{"type": "number", "exclusiveMinimum": 0, "maximum": 1}'::jsonb,
                        'baseline', '{"type": ["number", "null"]}'::jsonb,
                        'min_samples', '{"type": "integer", "minimum": 1}'::jsonb))
            when 'new_labels' then '{"type": "object", "additionalProperties": false, "required": ["min"], "properties": {"type": {},
                    "min": {"type": "integer", "minimum": 1}}}'::jsonb
            when 'schedule' then '{"type": "object", "additionalProperties": false, "required": ["cron"], "properties": {"type": {},
                    "cron": {"type": "string"}}}'::jsonb
            else '{"properties": {"type": {"enum": ["dataset_drift", "feature_drift", "metric_drop", "new_labels", "schedule"]}}}'::jsonb
            end, v_t);
        case v_type
        when 'dataset_drift' then
            v_n := jsonb_build_object('type', v_type, 'share', coalesce(v_t -> 'share', '0.5'));
        when 'feature_drift' then
            if jsonb_typeof(v_t -> 'features') = 'array' then
                if (select count(distinct f) from jsonb_array_elements_text(v_t -> 'features') f) < jsonb_array_length(v_t -> 'features') then
                    raise exception '%.features: must not repeat a feature', v_path using errcode = '22023';
                end if;
                if cardinality(v_inputs) > 0 then
                    for v_j in 0 .. jsonb_array_length(v_t -> 'features') - 1 loop
                        if not (v_t -> 'features' ->> v_j) = any (v_inputs) then
                            raise exception '%.features[%]: % is not an input of project %''s models (inputs: %)', v_path, v_j,
                                v_t -> 'features' -> v_j, p_project.name, array_to_string(v_inputs, ', ')
                                using errcode = '22023';
                        end if;
                    end loop;
                end if;
                if coalesce((v_t ->> 'min_features')::int, 1) > jsonb_array_length(v_t -> 'features') then
                    raise exception '%.min_features: must be at most the % feature(s) named, got %', v_path,
                        jsonb_array_length(v_t -> 'features'), v_t -> 'min_features' using errcode = '22023';
                end if;
            end if;
            v_n := jsonb_build_object('type', v_type, 'features', coalesce(v_t -> 'features', 'null'),
                                      'min_features', coalesce(v_t -> 'min_features', '1'));
        when 'metric_drop' then
            if (v_t ? 'drop') = (v_t ? 'relative_drop') then
                raise exception '%: set exactly one of drop (absolute) and relative_drop (a fraction of the baseline)', v_path
                    using errcode = '22023';
            end if;
            if v_t ? 'drop' and v_t ->> 'metric' not in ('mae', 'rmse') and (v_t ->> 'drop')::numeric > 1 then
                raise exception '%.drop: % lies in [0, 1]; a drop must be <= 1, got %', v_path, v_t ->> 'metric', v_t -> 'drop'
                    using errcode = '22023';
            end if;
            if coalesce(v_t ->> 'source', 'realized') = 'estimated'
               and (v_task <> 'classification' or v_t ->> 'metric' in ('mae', 'rmse')) then
                raise exception '%.source: estimated performance (CBPE) covers binary classification metrics only, not % of a % project',
                    v_path, v_t ->> 'metric', v_task using errcode = '22023';
            end if;
            v_n := jsonb_build_object('type', v_type, 'metric', v_t -> 'metric', 'source', coalesce(v_t -> 'source', '"realized"'),
                                      'drop', coalesce(v_t -> 'drop', 'null'), 'relative_drop', coalesce(v_t -> 'relative_drop', 'null'),
                                      'baseline', coalesce(v_t -> 'baseline', 'null'), 'min_samples', coalesce(v_t -> 'min_samples', '1'));
        when 'new_labels' then
            v_n := jsonb_build_object('type', v_type, 'min', v_t -> 'min');
        when 'schedule' then
            begin
                perform ml_private.cron_next(v_t ->> 'cron', now());
            exception when sqlstate '22023' then
                get stacked diagnostics v_msg = message_text, v_hint = pg_exception_hint;
                perform ml_private.retraining_raise(ml_private.retraining_reprefix(v_msg, v_path || '.cron'), v_hint);
            end;
            v_n := jsonb_build_object('type', v_type, 'cron', btrim(regexp_replace(v_t ->> 'cron', '\s+', ' ', 'g')));
        end case;
        v_triggers := v_triggers || jsonb_build_array(v_n);
    end loop;
    if not p_policy ? 'triggers' then
        v_triggers := '[{"type": "dataset_drift", "share": 0.5}]';
    end if;

    -- Recipe.
    v_r := coalesce(p_policy -> 'recipe', '{}');
    perform ml_private.retraining_assert('policy.recipe', '{"type": "object", "additionalProperties": false, "properties": {
        "same_as": {"enum": ["champion"]}, "algorithm": {"type": "string"}, "hyperparams": {"type": "object"},
        "tune": {"type": "object"}, "options": {"type": "object"}}}'::jsonb, v_r);
    if (v_r ? 'same_as')::int + (v_r ? 'algorithm')::int + (v_r ? 'tune')::int > 1 then
        raise exception 'policy.recipe: name one of same_as, algorithm and tune' using errcode = '22023';
    end if;
    if v_r ? 'hyperparams' and not v_r ? 'algorithm' then
        raise exception 'policy.recipe.hyperparams: needs policy.recipe.algorithm' using errcode = '22023';
    end if;
    begin
        v_path := 'policy.recipe.algorithm';
        if v_r ? 'algorithm' then
            perform ml_private.find_algorithm(v_r ->> 'algorithm', v_task);
            v_path := 'policy.recipe.hyperparams';
            perform ml_private.check_hyperparams(v_r ->> 'algorithm', v_task, coalesce(v_r -> 'hyperparams', '{}'));
            v_recipe := jsonb_build_object('algorithm', v_r -> 'algorithm', 'hyperparams', coalesce(v_r -> 'hyperparams', '{}'));
        elsif v_r ? 'tune' then
            v_tune := v_r -> 'tune';
            perform ml_private.retraining_assert('policy.recipe.tune', jsonb_build_object(
                'type', 'object', 'additionalProperties', false, 'required', '["algorithms", "search_spaces"]'::jsonb,
                'properties', jsonb_build_object(
                    'algorithms', '{"type": "array", "minItems": 1, "maxItems": 10, "items": {"type": "string"}}'::jsonb,
                    'search_spaces', '{"type": "object", "additionalProperties": {"type": "object"}}'::jsonb,
                    'trials', '{"type": "integer", "minimum": 1, "maximum": 1000}'::jsonb,
                    'metric', jsonb_build_object('enum', to_jsonb(v_offline)),
                    'timeout', '{}'::jsonb)), v_tune);
            if (select count(distinct a) from jsonb_array_elements_text(v_tune -> 'algorithms') a) < jsonb_array_length(v_tune -> 'algorithms') then
                raise exception 'policy.recipe.tune.algorithms: must not repeat an algorithm' using errcode = '22023';
            end if;
            for v_j in 0 .. jsonb_array_length(v_tune -> 'algorithms') - 1 loop
                v_alg := v_tune -> 'algorithms' ->> v_j;
                v_path := format('policy.recipe.tune.algorithms[%s]', v_j);
                perform ml_private.find_algorithm(v_alg, v_task);
                if not v_tune -> 'search_spaces' ? v_alg then
                    raise exception 'policy.recipe.tune.search_spaces.%: is required (a search space per algorithm, as ml.tune takes)', v_alg
                        using errcode = '22023';
                end if;
                v_path := 'policy.recipe.tune.search_spaces.' || v_alg;
                perform ml_private.check_search_space(v_alg, v_task, v_tune -> 'search_spaces' -> v_alg);
            end loop;
            select min(k) into v_alg from jsonb_object_keys(v_tune -> 'search_spaces') k where not v_tune -> 'algorithms' ? k;
            if v_alg is not null then
                raise exception 'policy.recipe.tune.search_spaces.%: is not one of policy.recipe.tune.algorithms', v_alg using errcode = '22023';
            end if;
            if v_tune ? 'timeout' and v_tune -> 'timeout' <> 'null' then
                perform ml_private.retraining_interval(v_tune -> 'timeout', 'policy.recipe.tune.timeout');
            end if;
            v_recipe := jsonb_build_object('tune', jsonb_build_object(
                'algorithms', v_tune -> 'algorithms', 'search_spaces', v_tune -> 'search_spaces',
                'trials', coalesce(v_tune -> 'trials', '20'),
                'metric', coalesce(v_tune -> 'metric', to_jsonb(case v_task when 'regression' then 'rmse' else 'roc_auc' end)),
                'timeout', case when v_tune ? 'timeout' and v_tune -> 'timeout' <> 'null'
                                then to_jsonb(((v_tune ->> 'timeout')::interval)::text) else 'null' end));
        else
            v_recipe := '{"same_as": "champion"}';
        end if;
        v_path := 'policy.recipe.options';
        v_recipe := v_recipe || jsonb_build_object('options', ml_private.normalize_train_options(p_project, coalesce(v_r -> 'options', '{}')));
    exception when sqlstate '22023' then
        get stacked diagnostics v_msg = message_text, v_hint = pg_exception_hint;
        perform ml_private.retraining_raise(case when v_msg like 'policy.%' then v_msg
                                                 else ml_private.retraining_reprefix(v_msg, v_path) end, v_hint);
    end;

    -- Data.
    v_data := coalesce(p_policy -> 'data', '{}');
    perform ml_private.retraining_assert('policy.data', '{"type": "object", "additionalProperties": false, "properties": {
        "window": {}, "reference_sample": {"type": "integer", "minimum": 0, "maximum": 10000000},
        "stratify": {"type": "boolean"}, "balance": {"enum": ["none", "undersample", "oversample"]},
        "dedupe": {"type": "boolean"}, "exclude_invalid": {"type": "boolean"}}}'::jsonb, v_data);
    v_data := jsonb_build_object(
        'window', (ml_private.retraining_interval(coalesce(v_data -> 'window', '"30 days"'), 'policy.data.window'))::text,
        'reference_sample', coalesce(v_data -> 'reference_sample', '1000'),
        'stratify', coalesce(v_data -> 'stratify', 'true'),
        'balance', coalesce(v_data -> 'balance', '"none"'),
        'dedupe', coalesce(v_data -> 'dedupe', 'true'),
        'exclude_invalid', coalesce(v_data -> 'exclude_invalid', 'true'));
    if v_data ->> 'balance' <> 'none' and v_task <> 'classification' then
        raise exception 'policy.data.balance: class balancing needs a classification project (% is %)', p_project.name, v_task
            using errcode = '22023';
    end if;

    -- Offline evaluation.
    v_eval := coalesce(p_policy -> 'evaluation', '{}');
    perform ml_private.retraining_assert('policy.evaluation', jsonb_build_object('type', 'object', 'additionalProperties', false,
        'properties', jsonb_build_object(
            'metric', jsonb_build_object('enum', to_jsonb(v_offline)),
            'test', '{"enum": ["bootstrap", "mcnemar", "delong"]}'::jsonb,
            'confidence', '{"type": "number", "minimum": 0.5, "maximum": 0.999}'::jsonb,
            'min_improvement', '{"type": "number", "minimum": 0}'::jsonb,
            'bootstrap_samples', '{"type": "integer", "minimum": 100, "maximum": 100000}'::jsonb)), v_eval);
    v_metric := coalesce(v_eval ->> 'metric', case v_task when 'regression' then 'rmse' else 'roc_auc' end);
    v_test := coalesce(v_eval ->> 'test', case v_metric when 'roc_auc' then 'delong' when 'accuracy' then 'mcnemar' else 'bootstrap' end);
    if v_test = 'mcnemar' and v_metric <> 'accuracy' then
        raise exception 'policy.evaluation.test: mcnemar compares accuracy; the metric is % (use bootstrap)', v_metric using errcode = '22023';
    end if;
    if v_test = 'delong' and v_metric <> 'roc_auc' then
        raise exception 'policy.evaluation.test: delong compares roc_auc; the metric is % (use bootstrap)', v_metric using errcode = '22023';
    end if;
    v_eval := jsonb_build_object('metric', v_metric, 'test', v_test, 'confidence', coalesce(v_eval -> 'confidence', '0.95'),
                                 'min_improvement', coalesce(v_eval -> 'min_improvement', '0'),
                                 'bootstrap_samples', coalesce(v_eval -> 'bootstrap_samples', '1000'));

    -- Online evaluation.
    v_online := coalesce(p_policy -> 'online', '{}');
    perform ml_private.retraining_assert('policy.online', '{"type": "object", "additionalProperties": false, "properties": {
        "mode": {"enum": ["shadow", "canary", "none"]}, "min_samples": {"type": "integer", "minimum": 1, "maximum": 100000000},
        "significance": {"type": "number", "exclusiveMinimum": 0, "maximum": 0.5},
        "canary_weight": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}, "max_duration": {}}}'::jsonb, v_online);
    if v_online ? 'canary_weight' and coalesce(v_online ->> 'mode', 'shadow') <> 'canary' then
        raise exception 'policy.online.canary_weight: applies to mode canary only (mode is %)', coalesce(v_online ->> 'mode', 'shadow')
            using errcode = '22023';
    end if;
    v_online := jsonb_build_object(
        'mode', coalesce(v_online -> 'mode', '"shadow"'), 'min_samples', coalesce(v_online -> 'min_samples', '500'),
        'significance', coalesce(v_online -> 'significance', '0.05'),
        'canary_weight', case when v_online ->> 'mode' = 'canary' then coalesce(v_online -> 'canary_weight', '0.1') else 'null' end,
        'max_duration', (ml_private.retraining_interval(coalesce(v_online -> 'max_duration', '"7 days"'), 'policy.online.max_duration'))::text);

    -- Rollback.
    v_rollback := coalesce(p_policy -> 'rollback', '{}');
    perform ml_private.retraining_assert('policy.rollback', jsonb_build_object('type', 'object', 'additionalProperties', false,
        'properties', jsonb_build_object(
            'enabled', '{"type": "boolean"}'::jsonb,
            'metric', jsonb_build_object('enum', to_jsonb(v_live)),
            'max_drop', '{"type": "number", "exclusiveMinimum": 0}'::jsonb,
            'window', '{}'::jsonb)), v_rollback);
    v_metric := coalesce(v_rollback ->> 'metric',
                         case when v_metric = any (v_live) then v_metric when v_task = 'regression' then 'rmse' else 'accuracy' end);
    if v_metric not in ('mae', 'rmse') and (v_rollback ->> 'max_drop')::numeric > 1 then
        raise exception 'policy.rollback.max_drop: % lies in [0, 1]; a drop must be <= 1, got %', v_metric, v_rollback -> 'max_drop'
            using errcode = '22023';
    end if;
    v_rollback := jsonb_build_object(
        'enabled', coalesce(v_rollback -> 'enabled', 'true'), 'metric', v_metric,
        'max_drop', coalesce(v_rollback -> 'max_drop', '0.05'),
        'window', (ml_private.retraining_interval(coalesce(v_rollback -> 'window', '"1 day"'), 'policy.rollback.window'))::text);

    return jsonb_build_object(
        'enabled', coalesce(p_policy -> 'enabled', 'true'),
        'triggers', v_triggers,
        'cooldown', (ml_private.retraining_interval(coalesce(p_policy -> 'cooldown', '"1 day"'), 'policy.cooldown', true))::text,
        'recipe', v_recipe, 'data', v_data, 'evaluation', v_eval, 'online', v_online, 'rollback', v_rollback,
        'promotion', coalesce(p_policy -> 'promotion', '"approval"'))
        -- Continuous learning (sql/retraining/learn.sql, applied after this file).
        || case when p_policy ? 'continuous'
                then jsonb_build_object('continuous', ml_private.normalize_continuous_learning(p_project, p_policy -> 'continuous'))
                else '{}' end;
end
$$;

-- ml_private.retraining_audit(p_tenant uuid, p_action text, p_event text, p_object_id uuid,
--                             p_before jsonb, p_after jsonb) returns bigint
-- Writes one ml.audit_log row (object_kind 'retraining_policy', actor: the calling user, NULL
-- for service callers) and publishes it as event p_event on topic 'retraining'. Returns the
-- audit row's id.
create or replace function ml_private.retraining_audit(p_tenant uuid, p_action text, p_event text, p_object_id uuid,
                                                       p_before jsonb, p_after jsonb)
returns bigint
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_id    bigint;
    v_actor uuid := ml_private.caller_user_id();
begin
    insert into ml.audit_log (tenant_id, actor, action, object_kind, object_id, before, after)
    values (p_tenant, v_actor, p_action, 'retraining_policy', p_object_id, p_before, p_after)
    returning id into v_id;
    perform ml_private.publish(p_tenant, 'retraining', p_event, jsonb_build_object(
        'audit_id', v_id, 'actor', v_actor, 'object_kind', 'retraining_policy', 'object_id', p_object_id,
        'before', p_before, 'after', p_after));
    return v_id;
end
$$;

-- ml.set_retraining_policy(project text, policy jsonb) returns jsonb
-- Sets the project's retraining policy, replacing any earlier one, after checking every field
-- (ml_private.normalize_retraining_policy: the shape and defaults). Returns the policy as stored,
-- every default filled. Audits retraining_policy.set (before: the old policy) and publishes
-- policy.set on topic 'retraining'.
-- promotion automatic stands as the caller's approval of every version the policy's cycles prove
-- better (ml_private.standing_approval), so only a signed-in owner, admin or ml_engineer may set it.
-- Raises 22023 a bad policy, naming the field as a path ('policy.triggers[1].share: must be <= 1,
-- got 2'; nothing written); P0002 unknown project (another tenant's too); 42501 viewers,
-- non-members, and promotion automatic from a service caller. Callers: authenticated (owner,
-- admin, ml_engineer), service_role.
create or replace function ml.set_retraining_policy(project text, policy jsonb) returns jsonb
language plpgsql volatile security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_tenant  uuid := ml_private.acting_tenant_id(true);
    v_project ml.projects := ml_private.find_project(v_tenant, project);
    v_policy  jsonb;
    v_old     ml.retraining_policies;
    v_new     ml.retraining_policies;
begin
    v_policy := ml_private.normalize_retraining_policy(v_project, policy);
    -- Automatic promotion is a standing approval of every version the policy proves better
    -- (ml_private.standing_approval): only a member who may approve versions can give it.
    if v_policy ->> 'promotion' = 'automatic' and not exists (
            select 1 from ml.tenant_members m
            where m.tenant_id = v_tenant and m.user_id = ml_private.caller_user_id()
              and m.role in ('owner', 'admin', 'ml_engineer')) then
        raise exception 'policy.promotion: automatic promotion stands as the approval of the member who sets it, so it must be set by a signed-in owner, admin or ml_engineer (this caller is %)',
            case when ml_private.caller_is_service() then 'a service caller' else 'not one' end
            using errcode = '42501',
                  hint = 'Set the policy as a person (a user''s JWT), or use promotion approval and ml.approve.';
    end if;
    select * into v_old from ml.retraining_policies x where x.project_id = v_project.id for update;
    insert into ml.retraining_policies as x (tenant_id, project_id, policy, enabled, trigger_types, cooldown, promotion,
                                             online_mode, updated_by)
    values (v_tenant, v_project.id, v_policy, (v_policy ->> 'enabled')::boolean,
            array(select t ->> 'type' from jsonb_array_elements(v_policy -> 'triggers') t),
            (v_policy ->> 'cooldown')::interval, v_policy ->> 'promotion', v_policy #>> '{online,mode}',
            ml_private.caller_user_id())
    on conflict (project_id) do update set
        policy = excluded.policy, enabled = excluded.enabled, trigger_types = excluded.trigger_types,
        cooldown = excluded.cooldown, promotion = excluded.promotion, online_mode = excluded.online_mode,
        updated_by = excluded.updated_by, updated_at = now()
    returning * into v_new;
    perform ml_private.retraining_audit(v_tenant, 'retraining_policy.set', 'policy.set', v_new.id,
        case when v_old.id is not null then jsonb_build_object('project', v_project.name, 'policy', v_old.policy) end,
        jsonb_build_object('project', v_project.name, 'project_id', v_project.id, 'policy', v_policy));
    return v_policy;
end
$$;

-- ml.retraining_policy(project text) returns jsonb
-- The project's retraining policy: {project, project_id, policy (as stored, defaults filled),
-- updated_by, updated_at, created_at}, or NULL when it has none.
-- Raises P0002 unknown project (another tenant's too); 42501 non-members.
-- Callers: any member (viewers too), service_role.
create or replace function ml.retraining_policy(project text) returns jsonb
language plpgsql stable security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_tenant  uuid := ml_private.acting_tenant_id(false);
    v_project ml.projects := ml_private.find_project(v_tenant, project);
begin
    return (select jsonb_build_object('project', v_project.name, 'project_id', v_project.id, 'policy', x.policy,
                                      'updated_by', x.updated_by, 'updated_at', x.updated_at, 'created_at', x.created_at)
            from ml.retraining_policies x where x.project_id = v_project.id);
end
$$;

-- ml.remove_retraining_policy(project text) returns boolean
-- Removes the project's retraining policy: no trigger is checked for it any more (its history
-- stays). Returns true when there was one, false when there was none. Audits
-- retraining_policy.removed and publishes policy.removed on topic 'retraining'.
-- Raises P0002 unknown project; 42501 viewers and non-members.
-- Callers: authenticated (owner, admin, ml_engineer), service_role.
create or replace function ml.remove_retraining_policy(project text) returns boolean
language plpgsql volatile security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_tenant  uuid := ml_private.acting_tenant_id(true);
    v_project ml.projects := ml_private.find_project(v_tenant, project);
    v_old     ml.retraining_policies;
begin
    delete from ml.retraining_policies x where x.project_id = v_project.id returning * into v_old;
    if v_old.id is null then
        return false;
    end if;
    perform ml_private.retraining_audit(v_tenant, 'retraining_policy.removed', 'policy.removed', v_old.id,
        jsonb_build_object('project', v_project.name, 'project_id', v_project.id, 'policy', v_old.policy), null);
    return true;
end
$$;

------------------------------------------------------------------------------------------------
-- Triggers
------------------------------------------------------------------------------------------------

-- ml_private.retraining_metric_baseline(p_report ml.drift_reports, p_trigger jsonb) returns jsonb
-- The value a metric_drop trigger compares the report with, as {value, from}: the trigger's
-- baseline when set ("from": "policy"); else the metric of the report's model version at
-- training (its held-out value, ml.model_versions.metrics; "from": "version"); else the mean of
-- the metric over the buckets of the earliest earlier report of the same project and version
-- that has values ("from": "first_report", with its id). NULL when none exists.
create or replace function ml_private.retraining_metric_baseline(p_report ml.drift_reports, p_trigger jsonb) returns jsonb
language plpgsql stable security definer
set search_path = ''
as $$
declare
    v_metric    text := p_trigger ->> 'metric';
    v_estimated boolean := p_trigger ->> 'source' = 'estimated';
    v_value     float8;
    v_first     uuid;
begin
    if jsonb_typeof(p_trigger -> 'baseline') = 'number' then
        return jsonb_build_object('value', p_trigger -> 'baseline', 'from', 'policy');
    end if;
    select (v.metrics ->> v_metric)::float8 into v_value
    from ml.model_versions v where v.id = p_report.model_version_id and jsonb_typeof(v.metrics -> v_metric) = 'number';
    if v_value is not null then
        return jsonb_build_object('value', v_value, 'from', 'version');
    end if;
    select r.id into v_first
    from ml.drift_reports r
    where r.tenant_id = p_report.tenant_id and r.project_id = p_report.project_id
      and r.model_version_id is not distinct from p_report.model_version_id
      and r.window_start < p_report.window_start and r.id <> p_report.id
      and exists (select 1 from ml.performance_results pr where pr.report_id = r.id and pr.metric = v_metric
                  and pr.estimated = v_estimated and pr.value is not null)
    order by r.window_start, r.created_at limit 1;
    if v_first is null then
        return null;
    end if;
    select avg(pr.value) into v_value from ml.performance_results pr
    where pr.report_id = v_first and pr.metric = v_metric and pr.estimated = v_estimated and pr.value is not null;
    return jsonb_build_object('value', v_value, 'from', 'first_report', 'report_id', v_first);
end
$$;

-- ml_private.retraining_evaluate_trigger(p_report ml.drift_reports, p_trigger jsonb, p_index int,
--                                        p_last_trigger timestamptz) returns jsonb
-- One trigger of a policy judged on report p_report: {index, type, fired, ...evidence, reason}.
--   dataset_drift  the report's drift_share >= share.
--   feature_drift  at least min_features of the named inputs (any input when features is null)
--                  drifted in the report (ml.drift_results, role input).
--   metric_drop    the mean of the metric over the report's buckets (ml.performance_results,
--                  realized or estimated) against the baseline (ml_private.retraining_metric_baseline):
--                  drop = baseline - current (current - baseline for mae and rmse); fires when
--                  drop >= the trigger's drop, or drop / |baseline| >= relative_drop, on at
--                  least min_samples labelled (or scored) predictions.
--   new_labels     labels recorded (ml.feedback.created_at, one per prediction) since the later
--                  of the report's version's registration and the project's last 'train' event,
--                  >= min.
--   schedule       the cron fires in (the last trigger's as_of, else the report's window_start,
--                  the report's window_end].
-- A trigger that cannot be judged (no drift share, no metric value, no baseline) does not fire
-- and says why.
create or replace function ml_private.retraining_evaluate_trigger(p_report ml.drift_reports, p_trigger jsonb, p_index int,
                                                                  p_last_trigger timestamptz)
returns jsonb
language plpgsql stable security definer
set search_path = ''
as $$
declare
    v_type      text := p_trigger ->> 'type';
    v_head      jsonb := jsonb_build_object('index', p_index, 'type', v_type);
    v_drifted   text[];
    v_tested    text[];
    v_missing   text[];
    v_estimated boolean;
    v_current   float8;
    v_samples   bigint;
    v_base      jsonb;
    v_drop      float8;
    v_relative  float8;
    v_fired     boolean;
    v_since     timestamptz;
    v_count     bigint;
    v_next      timestamptz;
begin
    case v_type
    when 'dataset_drift' then
        if p_report.drift_share is null then
            return v_head || jsonb_build_object('fired', false, 'share', p_trigger -> 'share', 'drift_share', null,
                                                'reason', 'the report tested no input');
        end if;
        v_fired := p_report.drift_share >= (p_trigger ->> 'share')::float8;
        return v_head || jsonb_build_object('fired', v_fired, 'share', p_trigger -> 'share', 'drift_share', p_report.drift_share,
            'drifted_features', p_report.drifted_features, 'features_tested', p_report.features_tested,
            'reason', format('dataset drift share %s %s %s (%s of %s inputs drifted)',
                             ml_private.format_number(p_report.drift_share::numeric), case when v_fired then '>=' else '<' end,
                             p_trigger ->> 'share', p_report.drifted_features, p_report.features_tested));
    when 'feature_drift' then
        select coalesce(array_agg(distinct r.feature order by r.feature) filter (where r.drifted), '{}'),
               coalesce(array_agg(distinct r.feature order by r.feature), '{}')
          into v_drifted, v_tested
        from ml.drift_results r
        where r.report_id = p_report.id and r.role = 'input'
          and (jsonb_typeof(p_trigger -> 'features') <> 'array' or p_trigger -> 'features' ? r.feature);
        if jsonb_typeof(p_trigger -> 'features') = 'array' then
            v_missing := array(select f from jsonb_array_elements_text(p_trigger -> 'features') f where not f = any (v_tested) order by f);
        end if;
        v_fired := cardinality(v_drifted) >= (p_trigger ->> 'min_features')::int;
        return v_head || jsonb_build_object('fired', v_fired, 'features', p_trigger -> 'features',
            'min_features', p_trigger -> 'min_features', 'drifted', to_jsonb(v_drifted), 'tested', to_jsonb(v_tested),
            'not_tested', coalesce(to_jsonb(v_missing), '[]'),
            'reason', format('%s of the %s drifted (%s), %s %s', cardinality(v_drifted),
                             case when jsonb_typeof(p_trigger -> 'features') = 'array' then 'named features' else 'inputs' end,
                             coalesce(nullif(array_to_string(v_drifted, ', '), ''), 'none'),
                             case when v_fired then '>=' else '<' end, p_trigger ->> 'min_features'));
    when 'metric_drop' then
        v_estimated := p_trigger ->> 'source' = 'estimated';
        select avg(pr.value), sum(pr.sample_count) into v_current, v_samples
        from ml.performance_results pr
        where pr.report_id = p_report.id and pr.metric = p_trigger ->> 'metric' and pr.estimated = v_estimated
          and pr.value is not null;
        v_head := v_head || jsonb_build_object('metric', p_trigger -> 'metric', 'source', p_trigger -> 'source',
                                               'drop', p_trigger -> 'drop', 'relative_drop', p_trigger -> 'relative_drop',
                                               'current', v_current, 'samples', coalesce(v_samples, 0));
        if v_current is null then
            return v_head || jsonb_build_object('fired', false, 'reason',
                format('the report has no %s %s value', p_trigger ->> 'source', p_trigger ->> 'metric'));
        end if;
        if v_samples < (p_trigger ->> 'min_samples')::bigint then
            return v_head || jsonb_build_object('fired', false, 'reason',
                format('%s predictions measured, fewer than min_samples %s', v_samples, p_trigger ->> 'min_samples'));
        end if;
        v_base := ml_private.retraining_metric_baseline(p_report, p_trigger);
        if v_base is null then
            return v_head || jsonb_build_object('fired', false, 'baseline', null, 'reason',
                format('no baseline for %s: the version has no such metric and no earlier report measured it (set baseline)',
                       p_trigger ->> 'metric'));
        end if;
        v_drop := case when p_trigger ->> 'metric' in ('mae', 'rmse') then v_current - (v_base ->> 'value')::float8
                       else (v_base ->> 'value')::float8 - v_current end;
        v_relative := v_drop / nullif(abs((v_base ->> 'value')::float8), 0);
        v_fired := case when jsonb_typeof(p_trigger -> 'drop') = 'number' then v_drop >= (p_trigger ->> 'drop')::float8
                        else coalesce(v_relative >= (p_trigger ->> 'relative_drop')::float8, false) end;
        return v_head || jsonb_build_object('fired', v_fired, 'baseline', v_base -> 'value', 'baseline_from', v_base -> 'from',
            'baseline_report_id', v_base -> 'report_id', 'observed_drop', v_drop, 'observed_relative_drop', v_relative,
            'reason', format('%s %s %s against baseline %s (%s): drop %s %s %s', p_trigger ->> 'source', p_trigger ->> 'metric',
                             ml_private.format_number(v_current::numeric), ml_private.format_number((v_base ->> 'value')::numeric),
                             v_base ->> 'from',
                             case when jsonb_typeof(p_trigger -> 'drop') = 'number' then ml_private.format_number(v_drop::numeric)
                                  else coalesce(ml_private.format_number(v_relative::numeric), 'undefined') || ' (relative)' end,
                             case when v_fired then '>=' else '<' end,
                             coalesce(p_trigger ->> 'drop', p_trigger ->> 'relative_drop')));
    when 'new_labels' then
        select greatest(v.created_at, (select max(e.at) from ml.retraining_events e
                                       where e.project_id = p_report.project_id and e.kind = 'train'))
          into v_since
        from ml.model_versions v where v.id = p_report.model_version_id;
        v_since := coalesce(v_since, (select max(e.at) from ml.retraining_events e
                                      where e.project_id = p_report.project_id and e.kind = 'train'), '-infinity');
        select count(distinct f.prediction_id) into v_count
        from ml.feedback f
        where f.tenant_id = p_report.tenant_id and f.project_id = p_report.project_id and f.created_at > v_since;
        v_fired := v_count >= (p_trigger ->> 'min')::bigint;
        return v_head || jsonb_build_object('fired', v_fired, 'min', p_trigger -> 'min', 'labels', v_count,
            'since', case when v_since = '-infinity' then null else v_since end,
            'reason', format('%s new labels %s %s', v_count, case when v_fired then '>=' else '<' end, p_trigger ->> 'min'));
    when 'schedule' then
        v_since := coalesce(p_last_trigger, p_report.window_start);
        v_next := ml_private.cron_next(p_trigger ->> 'cron', v_since);
        v_fired := v_next <= p_report.window_end;
        return v_head || jsonb_build_object('fired', v_fired, 'cron', p_trigger -> 'cron', 'since', v_since, 'next', v_next,
            'reason', format('schedule %s %s since %s (next at %s)', p_trigger ->> 'cron',
                             case when v_fired then 'is due' else 'is not due' end, v_since, v_next));
    else
        return v_head || jsonb_build_object('fired', false, 'reason', format('unknown trigger type %s', v_type));
    end case;
end
$$;

-- ml_private.check_retraining_triggers(p_report uuid) returns jsonb
-- Judges the triggers of the retraining policy of report p_report's project against the report
-- (ml_private.retraining_evaluate_trigger) and returns {fired, triggers: [each trigger's
-- verdict], reason, event_id}. When a trigger fires:
--   * outside the cooldown: records a 'trigger' row in ml.retraining_events (evidence: the
--     report and every verdict; decision 'retrain'; as_of: the report's window_end; cycle_id its
--     own id), publishes retraining.triggered on topic 'retraining' and enqueues the 'retrain'
--     job (its id in the row's job_id and the result's);
--   * within the cooldown (the report's window_end is less than cooldown after the as_of of the
--     project's last 'trigger' row), or on a window that ends before that as_of (older data than
--     the last trigger's): records a 'skip' row with the reason and publishes
--     retraining.skipped; fired is false.
-- Nothing is written when no trigger fires, the project has no policy or its policy is disabled.
-- A report already judged returns its recorded outcome again ("repeated": true) and writes
-- nothing. The policy row is locked, so reports of one project are judged one at a time.
-- A fired trigger enqueues its 'retrain' job (ml_private.enqueue_retrain; "job_id" in the result
-- and the row).
-- A window whose regime matches a past window served by another version than the champion gets
-- a 'recall' row (ml_private.record_regime_recall, sql/retraining/online.sql; "recall" in the
-- result; its cycle the trigger the report fired, if any).
-- Raises P0002 no such report. Callers: ml_private.drift_report_run (at the end of every drift
-- report), service_role.
create or replace function ml_private.check_retraining_triggers(p_report uuid) returns jsonb
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_report  ml.drift_reports;
    v_policy  ml.retraining_policies;
    v_done    ml.retraining_events;
    v_last    timestamptz;
    v_verdict jsonb;
    v_all     jsonb := '[]';
    v_fired   jsonb;
    v_reason  text;
    v_id      uuid := gen_random_uuid();
    v_i       int := 0;
    v_t       jsonb;
    v_project text;
begin
    select * into v_report from ml.drift_reports r where r.id = p_report;
    if v_report.id is null then
        raise exception 'drift report % does not exist', coalesce(p_report::text, 'NULL') using errcode = 'P0002';
    end if;
    select * into v_policy from ml.retraining_policies x where x.project_id = v_report.project_id for update;
    if v_policy.id is null then
        return jsonb_build_object('fired', false, 'triggers', '[]'::jsonb, 'reason', 'the project has no retraining policy');
    end if;
    if not v_policy.enabled then
        return jsonb_build_object('fired', false, 'triggers', '[]'::jsonb, 'reason', 'the project''s retraining policy is disabled');
    end if;
    select * into v_done from ml.retraining_events e
    where e.report_id = p_report and e.kind in ('trigger', 'skip') order by e.at desc limit 1;
    if v_done.id is not null then
        return jsonb_build_object('fired', v_done.kind = 'trigger', 'triggers', coalesce(v_done.evidence -> 'triggers', '[]'),
                                  'reason', v_done.reason, 'event_id', v_done.id, 'repeated', true);
    end if;

    select max(e.as_of) into v_last from ml.retraining_events e
    where e.project_id = v_report.project_id and e.kind = 'trigger';
    for v_t in select t from jsonb_array_elements(v_policy.policy -> 'triggers') t loop
        v_verdict := ml_private.retraining_evaluate_trigger(v_report, v_t, v_i, v_last);
        v_all := v_all || jsonb_build_array(v_verdict);
        v_i := v_i + 1;
    end loop;
    select coalesce(jsonb_agg(v), '[]') into v_fired from jsonb_array_elements(v_all) v where (v ->> 'fired')::boolean;
    if jsonb_array_length(v_fired) = 0 then
        return jsonb_build_object('fired', false, 'triggers', v_all, 'reason', 'no trigger fired',
                                  'recall', ml_private.record_regime_recall(p_report, null));
    end if;
    v_reason := (select string_agg(v ->> 'reason', '; ') from jsonb_array_elements(v_fired) v);
    select p.name into v_project from ml.projects p where p.id = v_report.project_id;

    if v_last is not null and v_report.window_end < v_last + v_policy.cooldown then
        v_reason := case when v_report.window_end < v_last
                         then format('the window ends at %s, before the last trigger''s (%s): newer data was already acted on: %s',
                                     v_report.window_end, v_last, v_reason)
                         else format('in cooldown until %s (last trigger at %s, cooldown %s): %s', v_last + v_policy.cooldown, v_last,
                                     v_policy.cooldown, v_reason) end;
        insert into ml.retraining_events (id, tenant_id, project_id, as_of, kind, report_id, evidence, model_version_id, decision,
                                          reason, created_by)
        values (v_id, v_report.tenant_id, v_report.project_id, v_report.window_end, 'skip', v_report.id,
                jsonb_build_object('report_id', v_report.id, 'window_start', v_report.window_start, 'window_end', v_report.window_end,
                                   'triggers', v_all, 'last_trigger', v_last, 'cooldown', v_policy.cooldown::text),
                v_report.model_version_id, 'skipped', v_reason, ml_private.caller_user_id());
        perform ml_private.publish(v_report.tenant_id, 'retraining', 'retraining.skipped', jsonb_build_object(
            'event_id', v_id, 'project', v_project, 'project_id', v_report.project_id, 'report_id', v_report.id, 'reason', v_reason));
        return jsonb_build_object('fired', false, 'triggers', v_all, 'reason', v_reason, 'event_id', v_id,
                                  'recall', ml_private.record_regime_recall(p_report, null));
    end if;

    insert into ml.retraining_events (id, tenant_id, project_id, as_of, kind, cycle_id, report_id, evidence, model_version_id,
                                      decision, reason, created_by)
    values (v_id, v_report.tenant_id, v_report.project_id, v_report.window_end, 'trigger', v_id, v_report.id,
            jsonb_build_object('report_id', v_report.id, 'window_start', v_report.window_start, 'window_end', v_report.window_end,
                               'triggers', v_all, 'fired', (select jsonb_agg(v -> 'index') from jsonb_array_elements(v_fired) v)),
            v_report.model_version_id, 'retrain', v_reason, ml_private.caller_user_id());
    perform ml_private.publish(v_report.tenant_id, 'retraining', 'retraining.triggered', jsonb_build_object(
        'event_id', v_id, 'project', v_project, 'project_id', v_report.project_id, 'report_id', v_report.id,
        'model_version_id', v_report.model_version_id, 'triggers', v_fired, 'reason', v_reason));
    -- The retrain job that acts on it (sql/retraining/retrain.sql); its id lands in the row's job_id.
    return jsonb_build_object('fired', true, 'triggers', v_all, 'reason', v_reason, 'event_id', v_id,
                              'recall', ml_private.record_regime_recall(p_report, v_id),
                              'job_id', ml_private.enqueue_retrain(v_id));
end
$$;

------------------------------------------------------------------------------------------------
-- History
------------------------------------------------------------------------------------------------

-- ml_private.retraining_event_document(p_e ml.retraining_events) returns jsonb
-- An event as clients see it: {id, at, as_of, kind, cycle_id, report_id, evidence, data,
-- candidate: {model, version, model_version_id} | null, test_results, decision, reason, job_id,
-- created_by}.
create or replace function ml_private.retraining_event_document(p_e ml.retraining_events) returns jsonb
language sql stable security definer
set search_path = ''
as $$
    select jsonb_build_object(
        'id', p_e.id, 'at', p_e.at, 'as_of', p_e.as_of, 'kind', p_e.kind, 'cycle_id', p_e.cycle_id, 'report_id', p_e.report_id,
        'evidence', p_e.evidence, 'data', p_e.data,
        'candidate', (select jsonb_build_object('model', m.name, 'version', v.version, 'model_version_id', v.id)
                      from ml.model_versions v join ml.models m on m.id = v.model_id where v.id = p_e.model_version_id),
        'test_results', p_e.test_results, 'decision', p_e.decision, 'reason', p_e.reason, 'job_id', p_e.job_id,
        'created_by', p_e.created_by)
$$;

-- ml.retraining_history(project text, "limit" int default 100) returns jsonb
-- The project's retraining events, newest first (at most "limit", 1 to 10000), each as
-- ml_private.retraining_event_document gives it: what `pgmlops retraining history` prints.
-- Raises 22023 limit out of range; P0002 unknown project (another tenant's too); 42501
-- non-members. Callers: any member (viewers too), service_role.
create or replace function ml.retraining_history(project text, "limit" int default 100) returns jsonb
language plpgsql stable security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_tenant  uuid := ml_private.acting_tenant_id(false);
    v_project ml.projects;
begin
    if "limit" is null or "limit" < 1 or "limit" > 10000 then
        raise exception 'limit: must be between 1 and 10000, got %', coalesce("limit"::text, 'NULL') using errcode = '22023';
    end if;
    v_project := ml_private.find_project(v_tenant, project);
    return coalesce((select jsonb_agg(ml_private.retraining_event_document(e) order by e.at desc, e.id)
                     from (select * from ml.retraining_events e
                           where e.tenant_id = v_tenant and e.project_id = v_project.id
                           order by e.at desc, e.id limit "limit") e), '[]');
end
$$;

------------------------------------------------------------------------------------------------
-- Grants
------------------------------------------------------------------------------------------------

grant execute on function
    ml.set_retraining_policy(text, jsonb),
    ml.retraining_policy(text),
    ml.remove_retraining_policy(text),
    ml.retraining_history(text, int)
to authenticated, service_role;
grant execute on function
    ml_private.check_retraining_triggers(uuid),
    ml_private.normalize_retraining_policy(ml.projects, jsonb),
    ml_private.retraining_event_document(ml.retraining_events)
to service_role;
