-- pgmlops: tuning — Optuna studies fanned out over the job queue
--
-- ml.tune checks a search space over an algorithm's hyperparameters, records the study in
-- ml.tuning_studies and queues one `tune_trial` job per trial slot plus one `tune` job that
-- waits (run_after = 'infinity'). Every worker process takes part: a slot's handler
-- (pgmlops.tuning) asks the shared Optuna study for a configuration, fits it, reports
-- intermediate values to the pruner and tells the study the outcome. Optuna keeps its own
-- tables in schema `optuna` of this database (RDBStorage, created on first use by a worker).
--
--   ml.tune(...) -> tune job id                 ml.tuning_studies: status running
--   n_trials x tune_trial  (any worker)         each ends with ml.finish_tuning_trial, in the
--                                               job's transaction: the slot is settled once
--   the last slot settled releases the tune job ml.tuning_studies: status refitting
--   tune  (any worker)                          refits the best configuration, registers it,
--                                               ml.finish_tuning_study: succeeded | failed
--
-- Exactly n_trials slots settle, each exactly once: a slot settles when its job succeeds (in the
-- job's own transaction, so a refused late result settles nothing) or when its job ends
-- without success (dead, failed, cancelled: the trigger on ml.jobs below). A slot whose worker
-- died is retried by the queue; the retry fails the dead attempt's Optuna trial (user attribute
-- job_id) and runs a new one, so the finished (COMPLETE or PRUNED) trials number n_trials
-- minus the slots that never succeeded.
--
-- A job that needs a study's outcome before it can go on (the retrain job's tuning budget)
-- cannot wait for other jobs: with one worker they would queue behind it forever. It runs the
-- trials itself instead, one after another (pgmlops.tuning.LocalStudy): ml.start_tuning_study
-- records the study with the same checks and queues nothing, ml.record_tuning_trial settles
-- each trial, ml.finish_tuning_study ends it; its trials are read as any study's.

------------------------------------------------------------------------------------------------
-- Optuna's schema
------------------------------------------------------------------------------------------------

-- Workers reach it as the database owner (search_path=optuna); clients never do: they read
-- trials through ml.tuning_trials, filtered to their tenants.
revoke all on schema optuna from public;

do $$
begin
    execute 'revoke all on schema optuna from anon, authenticated, service_role';
end
$$;

------------------------------------------------------------------------------------------------
-- Helpers: search spaces, options, readers
------------------------------------------------------------------------------------------------

-- ml_private.tuning_metrics(p_task text) returns text[]
-- The metrics a study may optimize for a task: the held-out metrics pgmlops.training reports
-- (its HIGHER_IS_BETTER agrees with ml_private.metric_direction).
create or replace function ml_private.tuning_metrics(p_task text) returns text[]
language sql immutable
set search_path = ''
as $$
    select case p_task
        when 'classification' then array['accuracy', 'precision', 'recall', 'f1', 'roc_auc', 'pr_auc', 'log_loss', 'brier']
        when 'regression' then array['mae', 'rmse', 'r2', 'mape']
        when 'anomaly_detection' then array['roc_auc', 'pr_auc', 'precision_at_k']
    end
$$;

-- ml_private.metric_direction(p_metric text) returns text
-- 'minimize' for errors and losses, 'maximize' for scores.
create or replace function ml_private.metric_direction(p_metric text) returns text
language sql immutable
set search_path = ''
as $$
    select case when p_metric in ('log_loss', 'brier', 'mae', 'rmse', 'mape') then 'minimize' else 'maximize' end
$$;

-- ml_private.check_search_space(p_algorithm text, p_task text, p_space jsonb) returns void
-- Raises 22023 unless p_space is a search space over p_algorithm's hyperparameters for p_task:
--   {"<param>": {"type": "int",   "low": i, "high": i, "log": bool, "step": i >= 1},
--    "<param>": {"type": "float", "low": x, "high": x, "log": bool, "step": x > 0},
--    "<param>": {"type": "categorical", "choices": [v, ...]}}
-- Each param must be a hyperparameter of the algorithm for the task; int needs an integer (or
-- number) hyperparameter and float a number one, neither one with a fixed set of values (use
-- categorical); low <= high; log needs low > 0 and no step; low and high, and each choice,
-- must be values the hyperparameter's schema accepts. Messages name the path and the rule:
-- 'search_space: $.C.low: must be > 0, got 0'.
create or replace function ml_private.check_search_space(p_algorithm text, p_task text, p_space jsonb) returns void
language plpgsql stable
set search_path = ''
as $$
declare
    v_full   jsonb := (ml_private.find_algorithm(p_algorithm, p_task)).hyperparams_schema;
    v_schema jsonb := ml_private.algorithm_hyperparams_schema(p_algorithm, p_task);
    v_param  text;
    v_spec   jsonb;
    v_prop   jsonb;
    v_types  jsonb;
    v_kind   text;
    v_errors text[];
    v_bound  text;
    v_i      int;
    v_limit  numeric;
begin
    if p_space is null or jsonb_typeof(p_space) <> 'object' then
        raise exception 'search_space: must be a JSON object of parameters, got %', coalesce(jsonb_typeof(p_space), 'NULL')
            using errcode = '22023', hint = 'e.g. {"C": {"type": "float", "low": 0.001, "high": 100, "log": true}}';
    end if;
    if p_space = '{}' then
        raise exception 'search_space: must name at least one hyperparameter' using errcode = '22023';
    end if;

    for v_param, v_spec in select key, value from jsonb_each(p_space) order by key loop
        if not v_schema -> 'properties' ? v_param then
            if v_full -> 'properties' ? v_param then
                raise exception 'search_space: $.%: applies to % only, not to %', v_param,
                    (select string_agg(t, ' and ') from jsonb_array_elements_text(v_full -> 'properties' -> v_param -> 'x-tasks') t),
                    p_task using errcode = '22023';
            end if;
            raise exception 'search_space: $.%: not a hyperparameter of %', v_param, p_algorithm
                using errcode = '22023',
                      hint = format('Its hyperparameters: %s.',
                                    (select string_agg(k, ', ' order by k) from jsonb_object_keys(v_schema -> 'properties') k));
        end if;
        v_prop := v_schema -> 'properties' -> v_param;
        v_types := case jsonb_typeof(v_prop -> 'type') when 'array' then v_prop -> 'type'
                        when 'string' then jsonb_build_array(v_prop -> 'type') else '[]' end;
        if jsonb_typeof(v_spec) <> 'object' or not v_spec ? 'type' then
            raise exception 'search_space: $.%: must be an object with a type (int, float or categorical)', v_param
                using errcode = '22023';
        end if;
        v_kind := v_spec ->> 'type';

        -- The shape of the spec.
        perform ml_private.assert_json_valid('search_space', jsonb_build_object(
            'type', 'object', 'properties', jsonb_build_object(v_param, case v_kind
                when 'int' then '{"type": "object", "additionalProperties": false, "required": ["type", "low", "high"],
                                  "properties": {"type": {}, "low": {"type": "integer"}, "high": {"type": "integer"},
                                                 "log": {"type": "boolean"}, "step": {"type": "integer", "minimum": 1}}}'::jsonb
                when 'float' then '{"type": "object", "additionalProperties": false, "required": ["type", "low", "high"],
                                    "properties": {"type": {}, "low": {"type": "number"}, "high": {"type": "number"},
                                                   "log": {"type": "boolean"}, "step": {"type": "number", "exclusiveMinimum": 0}}}'::jsonb
                when 'categorical' then '{"type": "object", "additionalProperties": false, "required": ["type", "choices"],
                                          "properties": {"type": {}, "choices": {"type": "array", "minItems": 1, "maxItems": 1000}}}'::jsonb
                else '{"properties": {"type": {"enum": ["int", "float", "categorical"]}}}'::jsonb end)),
            jsonb_build_object(v_param, v_spec));

        if v_kind in ('int', 'float') then
            if v_prop ? 'enum' then
                raise exception 'search_space: $.%.type: % takes one of a fixed set of values %; use type categorical',
                    v_param, v_param, v_prop -> 'enum' using errcode = '22023';
            end if;
            if not (v_types ? 'number' or (v_kind = 'int' and v_types ? 'integer')) then
                raise exception 'search_space: $.%.type: % needs a hyperparameter of type %, but % is %', v_param, v_kind,
                    case v_kind when 'int' then 'integer or number' else 'number' end, v_param,
                    coalesce(nullif(array_to_string(array(select jsonb_array_elements_text(v_types)), ' or '), ''), 'untyped')
                    using errcode = '22023',
                          hint = case when v_types ? 'integer' then 'Use type int.' else 'Use type categorical.' end;
            end if;
            if (v_spec ->> 'low')::numeric > (v_spec ->> 'high')::numeric then
                raise exception 'search_space: $.%: low must be <= high, got low % and high %', v_param,
                    v_spec -> 'low', v_spec -> 'high' using errcode = '22023';
            end if;
            if coalesce((v_spec ->> 'log')::boolean, false) then
                if (v_spec ->> 'low')::numeric <= 0 then
                    raise exception 'search_space: $.%.low: must be > 0 with log, got %', v_param, v_spec -> 'low'
                        using errcode = '22023';
                end if;
                if v_spec ? 'step' and v_spec -> 'step' <> 'null'::jsonb and not (v_kind = 'int' and (v_spec ->> 'step')::numeric = 1) then
                    raise exception 'search_space: $.%: log and step cannot be combined', v_param using errcode = '22023';
                end if;
            end if;
            -- Every value of the range lies between the bounds, so checking them checks it all
            -- (the schemas bound numbers by minimum/maximum only).
            foreach v_bound in array array['low', 'high'] loop
                v_errors := ml_private.json_schema_errors(v_prop, v_spec -> v_bound, format('$.%s.%s', v_param, v_bound));
                if cardinality(v_errors) > 0 then
                    raise exception 'search_space: %', v_errors[1] using errcode = '22023',
                        detail = format('The range of %s must lie within its schema: %s', v_param, v_prop);
                end if;
            end loop;
            v_limit := (v_prop ->> 'x-fraction-at-most')::numeric;
            if v_kind = 'float' and v_limit is not null and (v_spec ->> 'high')::numeric > v_limit then
                raise exception 'search_space: $.%.high: a fraction must be <= %, got %', v_param, v_limit, v_spec -> 'high'
                    using errcode = '22023', hint = 'Search counts with type int or categorical.';
            end if;
        elsif v_kind = 'categorical' then
            for v_i in 0 .. jsonb_array_length(v_spec -> 'choices') - 1 loop
                v_errors := ml_private.json_schema_errors(v_prop, v_spec -> 'choices' -> v_i, format('$.%s.choices[%s]', v_param, v_i));
                if cardinality(v_errors) > 0 then
                    raise exception 'search_space: %', v_errors[1] using errcode = '22023';
                end if;
                v_limit := (v_prop ->> 'x-fraction-at-most')::numeric;
                if v_limit is not null and jsonb_typeof(v_spec -> 'choices' -> v_i) = 'number'
                   and (v_spec -> 'choices' ->> v_i)::numeric <> trunc((v_spec -> 'choices' ->> v_i)::numeric)
                   and (v_spec -> 'choices' ->> v_i)::numeric > v_limit then
                    raise exception 'search_space: $.%.choices[%]: a fraction must be <= %, got %', v_param, v_i, v_limit,
                        v_spec -> 'choices' -> v_i using errcode = '22023';
                end if;
            end loop;
            if (select count(distinct c) from jsonb_array_elements(v_spec -> 'choices') c) < jsonb_array_length(v_spec -> 'choices') then
                raise exception 'search_space: $.%.choices: must not repeat a value', v_param using errcode = '22023';
            end if;
        end if;
    end loop;
end
$$;

-- ml_private.normalize_tune_options(p_project ml.projects, p_options jsonb) returns jsonb
-- ml.train's options (ml_private.normalize_train_options) plus the study's own, completed with
-- their defaults: metric (roc_auc for classification and anomaly detection, rmse for
-- regression; one of ml_private.tuning_metrics(task)), direction (maximize | minimize; default
-- by metric: minimize for losses and errors), sampler (tpe | random; tpe), pruner
-- (none | median | hyperband; median). random_state also seeds the sampler.
-- Raises 22023 naming the option and the rule.
create or replace function ml_private.normalize_tune_options(p_project ml.projects, p_options jsonb) returns jsonb
language plpgsql stable
set search_path = ''
as $$
declare
    v_options jsonb := ml_private.normalize_train_options(p_project, p_options, jsonb_build_object(
        'metric',    jsonb_build_object('type', 'string', 'enum', to_jsonb(ml_private.tuning_metrics(p_project.task))),
        'direction', '{"type": "string", "enum": ["maximize", "minimize"]}'::jsonb,
        'sampler',   '{"type": "string", "enum": ["tpe", "random"]}'::jsonb,
        'pruner',    '{"type": "string", "enum": ["none", "median", "hyperband"]}'::jsonb));
    v_metric  text := coalesce(v_options ->> 'metric', case p_project.task when 'regression' then 'rmse' else 'roc_auc' end);
begin
    return v_options || jsonb_build_object(
        'metric', v_metric,
        'direction', coalesce(v_options ->> 'direction', ml_private.metric_direction(v_metric)),
        'sampler', coalesce(v_options ->> 'sampler', 'tpe'),
        'pruner', coalesce(v_options ->> 'pruner', 'median'));
end
$$;

-- ml_private.tuning_reader_tenants() returns uuid[]
-- The tenants whose studies the caller may read: a user's tenants; for a service caller the
-- tenant it acts for, or NULL (every tenant, as for its table reads) when it names none.
create or replace function ml_private.tuning_reader_tenants() returns uuid[]
language plpgsql stable security definer
set search_path = ''
as $$
begin
    if not ml_private.caller_is_service() then
        return ml_private.current_tenant_ids();
    end if;
    if coalesce(nullif(current_setting('pgmlops.tenant_id', true), ''),
                nullif(ml_private.jwt_claims() #>> '{app_metadata,tenant_id}', '')) is null then
        return null;
    end if;
    return array[ml_private.acting_tenant_id(false)];
end
$$;

-- ml_private.tuning_trials(p_study uuid default null) returns table (study_id uuid, number int,
--     state text, params jsonb, value float8, duration interval)
-- The Optuna trials of the studies the caller may read (ml_private.tuning_reader_tenants),
-- or of study p_study only. Read from schema optuna with dynamic SQL, and only once Optuna has
-- made its tables (the first worker to run a trial does): before that, no rows. params are the
-- hyperparameters the trial fitted (user attribute `hyperparams`) or, while it samples them,
-- Optuna's own (categorical choices decoded); value is the objective (NULL unless COMPLETE);
-- duration is NULL while the trial runs. Backs the view ml.tuning_trials.
create or replace function ml_private.tuning_trials(p_study uuid default null)
returns table (study_id uuid, number int, state text, params jsonb, value float8, duration interval)
language plpgsql stable security definer
set search_path = ''
as $$
declare
    v_tenants uuid[] := ml_private.tuning_reader_tenants();
begin
    if to_regclass('optuna.trials') is null or to_regclass('optuna.trial_values') is null
       or to_regclass('optuna.trial_params') is null or to_regclass('optuna.trial_user_attributes') is null then
        return;
    end if;
    return query execute $q$
        select s.id, t.number, t.state::text,
               coalesce(
                   (select ua.value_json::jsonb from optuna.trial_user_attributes ua
                    where ua.trial_id = t.trial_id and ua.key = 'hyperparams'),
                   (select jsonb_object_agg(p.param_name,
                               case p.distribution_json::jsonb ->> 'name'
                                   when 'CategoricalDistribution'
                                       then p.distribution_json::jsonb -> 'attributes' -> 'choices' -> p.param_value::int
                                   when 'IntDistribution' then to_jsonb(p.param_value::bigint)
                                   else to_jsonb(p.param_value) end)
                    from optuna.trial_params p where p.trial_id = t.trial_id),
                   '{}'::jsonb),
               (select case v.value_type::text when 'INF_POS' then 'infinity'::float8
                                               when 'INF_NEG' then '-infinity'::float8 else v.value end
                from optuna.trial_values v where v.trial_id = t.trial_id and v.objective = 0),
               t.datetime_complete - t.datetime_start
        from ml.tuning_studies s
        join optuna.studies os on os.study_name = s.optuna_study_name
        join optuna.trials t on t.study_id = os.study_id
        where ($1 is null or s.tenant_id = any ($1)) and ($2 is null or s.id = $2)
        order by s.created_at, s.id, t.number
    $q$ using v_tenants, p_study;
end
$$;

-- ml.tuning_trials: one row per Optuna trial of the caller's studies (study_id, number, state
-- RUNNING | COMPLETE | PRUNED | FAIL | WAITING, params, value, duration). Security invoker over
-- ml_private.tuning_trials, which filters to the caller's tenants.
create or replace view ml.tuning_trials with (security_invoker = true) as
    select t.study_id, t.number, t.state, t.params, t.value, t.duration from ml_private.tuning_trials() t;

comment on view ml.tuning_trials is 'Trials of the tuning studies the caller may read (from Optuna''s tables)';

revoke all on ml.tuning_trials from public, anon;
grant select on ml.tuning_trials to authenticated, service_role;

-- ml_private.find_study(p_study uuid) returns ml.tuning_studies
-- The study p_study if the caller may read it (ml_private.tuning_reader_tenants). Raises P0002.
create or replace function ml_private.find_study(p_study uuid) returns ml.tuning_studies
language plpgsql stable security definer
set search_path = ''
as $$
declare
    v_tenants uuid[] := ml_private.tuning_reader_tenants();
    v_study   ml.tuning_studies;
begin
    select * into v_study from ml.tuning_studies s
    where s.id = p_study and (v_tenants is null or s.tenant_id = any (v_tenants));
    if not found then
        raise exception 'tuning study % does not exist', coalesce(p_study::text, 'NULL') using errcode = 'P0002';
    end if;
    return v_study;
end
$$;

------------------------------------------------------------------------------------------------
-- API (clients)
------------------------------------------------------------------------------------------------

-- ml_private.create_tuning_study(p_tenant uuid, p_project text, p_dataset uuid, p_algorithm text,
--                                p_search_space jsonb, p_n_trials int, p_options jsonb) returns ml.tuning_studies
-- The checks of ml.tune (below, in its order) and the study's row, status running, no job yet.
-- Shared by ml.tune (trials as jobs) and ml.start_tuning_study (trials in the caller's process).
create or replace function ml_private.create_tuning_study(p_tenant uuid, p_project text, p_dataset uuid, p_algorithm text,
                                               p_search_space jsonb, p_n_trials int, p_options jsonb)
returns ml.tuning_studies
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_project ml.projects := ml_private.find_project(p_tenant, p_project);
    v_dataset ml.datasets := ml_private.find_training_dataset(p_tenant, p_dataset, v_project);
    v_options jsonb;
    v_study   uuid := gen_random_uuid();
    v_row     ml.tuning_studies;
begin
    perform ml_private.find_algorithm(p_algorithm, v_project.task);
    perform ml_private.check_search_space(p_algorithm, v_project.task, p_search_space);
    if p_n_trials is null or p_n_trials not between 1 and 1000 then
        raise exception 'n_trials: must be between 1 and 1000, got %', coalesce(p_n_trials::text, 'NULL')
            using errcode = '22023';
    end if;
    v_options := ml_private.normalize_tune_options(v_project, coalesce(p_options, '{}'));

    insert into ml.tuning_studies (id, tenant_id, project_id, dataset_id, algorithm, search_space, n_trials, options,
                                   direction, metric, optuna_study_name, created_by)
    values (v_study, p_tenant, v_project.id, v_dataset.id, p_algorithm, p_search_space, p_n_trials, v_options,
            v_options ->> 'direction', v_options ->> 'metric', 'pgmlops-' || v_study, ml_private.caller_user_id())
    returning * into v_row;
    return v_row;
end
$$;

-- ml.tune(project text, dataset uuid, algorithm text, search_space jsonb, n_trials int,
--         options jsonb default '{}') returns bigint
-- Starts a hyperparameter study of `algorithm` on `dataset` for `project` and returns the id
-- of its `tune` job: ml.job_result(id) tells when the study is done (its result names the best
-- trial and the registered model version); ml.tuning_study(study_id) tells its progress.
-- Queues n_trials `tune_trial` jobs (payload {study_id}), run by any worker against one shared
-- Optuna study, and the `tune` job (payload {study_id}, run_after 'infinity') that the last
-- trial slot releases to refit the best configuration and register it as a model version.
-- Checked first, in this order, nothing written on error:
--   project       exists in the acting tenant (P0002)
--   dataset       exists (P0002) and carries the project's target as its label (22023)
--   algorithm     known and supports the project's task (22023)
--   search_space  see ml_private.check_search_space: 'search_space: $.<param>...: <rule>' (22023)
--   n_trials      1..1000 (22023)
--   options       ml.train's (split, test_size, cv_folds, random_state, model, tags) plus
--                 metric, direction, sampler, pruner (ml_private.normalize_tune_options) (22023)
-- Publishes 'study.created' (topic 'models'). Also raises 42501 for viewers and non-members.
-- Callers: authenticated (owner, admin, ml_engineer), service_role.
create or replace function ml.tune(project text, dataset uuid, algorithm text, search_space jsonb, n_trials int,
                        options jsonb default '{}')
returns bigint
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_tenant  uuid := ml_private.acting_tenant_id(true);
    v_study   ml.tuning_studies := ml_private.create_tuning_study(v_tenant, tune.project, tune.dataset, tune.algorithm,
                                                                  tune.search_space, tune.n_trials, tune.options);
    v_payload jsonb := jsonb_build_object('study_id', v_study.id);
    v_job     bigint;
begin
    for i in 1 .. tune.n_trials loop
        perform ml_private.enqueue_job('tune_trial', v_payload, 0, now(), null);
    end loop;
    -- Ahead of other trial slots once released: the study's caller is waiting for this one.
    v_job := ml_private.enqueue_job('tune', v_payload, 1, 'infinity', null);
    update ml.tuning_studies s set tune_job_id = v_job where s.id = v_study.id;

    perform ml_private.publish(v_tenant, 'models', 'study.created', jsonb_build_object(
        'study_id', v_study.id, 'project_id', v_study.project_id, 'algorithm', tune.algorithm, 'n_trials', tune.n_trials,
        'metric', v_study.metric, 'direction', v_study.direction, 'tune_job_id', v_job));
    return v_job;
end
$$;

-- ml.start_tuning_study(project text, dataset uuid, algorithm text, search_space jsonb, n_trials int,
--                       options jsonb default '{}') returns uuid
-- A study whose trials the calling worker runs itself, one after another, in its own process
-- (the retrain job's tuning budget, pgmlops.tuning.LocalStudy): the study's row as ml.tune
-- makes it, with the same checks in the same order and the same errors, but no job is queued
-- (tune_job_id stays NULL). The caller settles each trial with ml.record_tuning_trial and ends
-- the study with ml.finish_tuning_study. Returns the study's id; publishes 'study.created'
-- (topic 'models', tune_job_id null, in_process true). Raises what ml.tune raises, and 42501
-- for a caller that is not a service. Callers: service_role (workers).
create or replace function ml.start_tuning_study(project text, dataset uuid, algorithm text, search_space jsonb,
                                      n_trials int, options jsonb default '{}')
returns uuid
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_tenant uuid;
    v_study  ml.tuning_studies;
begin
    perform ml_private.assert_service('ml.start_tuning_study');
    v_tenant := ml_private.acting_tenant_id(true);
    v_study := ml_private.create_tuning_study(v_tenant, start_tuning_study.project, start_tuning_study.dataset,
                                              start_tuning_study.algorithm, start_tuning_study.search_space,
                                              start_tuning_study.n_trials, start_tuning_study.options);
    perform ml_private.publish(v_tenant, 'models', 'study.created', jsonb_build_object(
        'study_id', v_study.id, 'project_id', v_study.project_id, 'algorithm', v_study.algorithm,
        'n_trials', v_study.n_trials, 'metric', v_study.metric, 'direction', v_study.direction, 'tune_job_id', null,
        'in_process', true));
    return v_study.id;
end
$$;

-- ml.tuning_study(study_id uuid) returns jsonb
-- A study's progress: {study_id, status, n_trials, complete, pruned, failed, running, finished
-- (complete + pruned), best_value, best_params, best_trial, metric, direction, algorithm,
-- tune_job_id, best_run_id, model_version_id, error, created_at, finished_at}. Trial counts
-- are Optuna's (failed counts every FAIL trial: failed configurations and the trials of
-- workers that died, which their slots' retries replaced); best_* come from the best COMPLETE
-- trial so far. Raises P0002 when the caller cannot read the study.
-- Callers: authenticated (any member), service_role.
create or replace function ml.tuning_study(study_id uuid) returns jsonb
language plpgsql stable security definer
set search_path = ''
as $$
declare
    v_study ml.tuning_studies := ml_private.find_study(tuning_study.study_id);
    v_best  record;
    v_count record;
begin
    select count(*) filter (where t.state = 'COMPLETE') as complete, count(*) filter (where t.state = 'PRUNED') as pruned,
           count(*) filter (where t.state = 'FAIL') as failed, count(*) filter (where t.state = 'RUNNING') as running
    into v_count from ml_private.tuning_trials(v_study.id) t;
    select t.number, t.value, t.params into v_best from ml_private.tuning_trials(v_study.id) t
    where t.state = 'COMPLETE' and t.value is not null and t.value = t.value  -- not NaN
    order by case when v_study.direction = 'maximize' then -t.value else t.value end, t.number
    limit 1;
    return jsonb_build_object(
        'study_id', v_study.id, 'status', v_study.status, 'n_trials', v_study.n_trials,
        'complete', v_count.complete, 'pruned', v_count.pruned, 'failed', v_count.failed, 'running', v_count.running,
        'finished', v_count.complete + v_count.pruned,
        'best_value', coalesce(v_best.value, v_study.best_value), 'best_params', coalesce(v_best.params, v_study.best_params),
        'best_trial', coalesce(v_best.number, v_study.best_trial),
        'metric', v_study.metric, 'direction', v_study.direction, 'algorithm', v_study.algorithm,
        'tune_job_id', v_study.tune_job_id, 'best_run_id', v_study.best_run_id,
        'model_version_id', v_study.model_version_id, 'error', v_study.error,
        'created_at', v_study.created_at, 'finished_at', v_study.finished_at);
end
$$;

------------------------------------------------------------------------------------------------
-- Worker side
------------------------------------------------------------------------------------------------

-- ml_private.settle_tuning_slot(p_study uuid, p_job_id bigint, p_outcome text,
--                               p_trial_number int default null, p_value float8 default null)
-- returns ml.tuning_studies
-- Counts one settled trial slot of a running study (p_outcome complete | pruned | lost; the
-- slot is job p_job_id) under the study's row lock and publishes 'study.trial_finished'; when
-- that was the last slot, moves the study to refitting, releases its tune job (run_after =
-- now(), only if still waiting at 'infinity'), wakes the workers and publishes
-- 'study.refitting'. A study that is no longer running is returned unchanged.
create or replace function ml_private.settle_tuning_slot(p_study uuid, p_job_id bigint, p_outcome text,
                                              p_trial_number int default null, p_value float8 default null)
returns ml.tuning_studies
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_study   ml.tuning_studies;
    v_settled int;
begin
    -- No key update: a lock that a foreign key's check (key share) on this row never waits for.
    select * into v_study from ml.tuning_studies s where s.id = p_study for no key update;
    if not found or v_study.status <> 'running' then
        return v_study;
    end if;
    update ml.tuning_studies s set
        slots_complete = s.slots_complete + (p_outcome = 'complete')::int,
        slots_pruned = s.slots_pruned + (p_outcome = 'pruned')::int,
        slots_lost = s.slots_lost + (p_outcome = 'lost')::int
    where s.id = p_study
    returning * into v_study;
    v_settled := v_study.slots_complete + v_study.slots_pruned + v_study.slots_lost;
    perform ml_private.publish(v_study.tenant_id, 'models', 'study.trial_finished', jsonb_strip_nulls(jsonb_build_object(
        'study_id', v_study.id, 'job_id', p_job_id, 'state', p_outcome, 'trial_number', p_trial_number,
        'value', case when p_value = p_value and p_value not in ('infinity', '-infinity') then p_value end,
        'settled', v_settled, 'n_trials', v_study.n_trials)));
    if v_settled = v_study.n_trials then
        update ml.tuning_studies s set status = 'refitting' where s.id = p_study returning * into v_study;
        update ml.jobs j set run_after = now()
        where j.id = v_study.tune_job_id and j.status = 'queued' and j.run_after = 'infinity';
        if found then
            perform pg_notify('ml_jobs', 'tune');
        end if;
        perform ml_private.publish(v_study.tenant_id, 'models', 'study.refitting', jsonb_build_object(
            'study_id', v_study.id, 'complete', v_study.slots_complete, 'pruned', v_study.slots_pruned,
            'lost', v_study.slots_lost, 'tune_job_id', v_study.tune_job_id));
    end if;
    return v_study;
end
$$;

-- ml.finish_tuning_trial(study_id uuid, job_id bigint, state text, trial_number int default null,
--                        value float8 default null) returns jsonb
-- Settles the trial slot of `tune_trial` job job_id: state complete or pruned (its Optuna trial
-- trial_number finished so) or lost (no configuration of the slot could be fitted). Call it in
-- the job's transaction, just before the job completes, so the slot settles exactly when the
-- job succeeds. The last slot of a study releases its tune job. Returns {study_id, status,
-- n_trials, settled, released}; publishes 'study.trial_finished' (topic 'models', see
-- ml_private.settle_tuning_slot).
-- Raises 22023 bad state; P0002 unknown study; 55000 job_id is not a running tune_trial job of
-- this study; 42501 not a service caller. Callers: service_role (workers).
create or replace function ml.finish_tuning_trial(study_id uuid, job_id bigint, state text, trial_number int default null,
                                       value float8 default null)
returns jsonb
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_tenant uuid;
    v_study  ml.tuning_studies;
    v_settled int;
begin
    perform ml_private.assert_service('ml.finish_tuning_trial');
    v_tenant := ml_private.acting_tenant_id(true);
    if finish_tuning_trial.state is null or finish_tuning_trial.state not in ('complete', 'pruned', 'lost') then
        raise exception 'state: must be one of complete, pruned, lost; got %',
            coalesce(quote_literal(finish_tuning_trial.state), 'NULL') using errcode = '22023';
    end if;
    select * into v_study from ml.tuning_studies s where s.id = finish_tuning_trial.study_id and s.tenant_id = v_tenant;
    if not found then
        raise exception 'tuning study % does not exist', coalesce(finish_tuning_trial.study_id::text, 'NULL')
            using errcode = 'P0002';
    end if;
    -- The job row first, then the study's: the order in which a job ending through the queue
    -- (its trigger) takes them, so the two never deadlock.
    perform 1 from ml.jobs j where j.id = finish_tuning_trial.job_id for no key update;
    if not exists (select 1 from ml.jobs j where j.id = finish_tuning_trial.job_id and j.tenant_id = v_tenant
                   and j.kind = 'tune_trial' and j.status = 'running' and j.payload ->> 'study_id' = v_study.id::text) then
        raise exception 'job % is not a running trial slot of study %', finish_tuning_trial.job_id, v_study.id
            using errcode = '55000';
    end if;
    v_study := ml_private.settle_tuning_slot(v_study.id, finish_tuning_trial.job_id, finish_tuning_trial.state,
                                             finish_tuning_trial.trial_number, finish_tuning_trial.value);
    v_settled := v_study.slots_complete + v_study.slots_pruned + v_study.slots_lost;
    return jsonb_build_object('study_id', v_study.id, 'status', v_study.status, 'n_trials', v_study.n_trials,
                              'settled', v_settled, 'released', v_study.status = 'refitting' and v_settled = v_study.n_trials);
end
$$;

-- ml_private.lock_tuning_study(p_tenant uuid, p_study uuid) returns ml.tuning_studies
-- The study p_study of p_tenant, locked FOR NO KEY UPDATE (the worker-side functions that settle
-- trials and end studies). Raises P0002 when p_tenant has no such study.
create or replace function ml_private.lock_tuning_study(p_tenant uuid, p_study uuid) returns ml.tuning_studies
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_study ml.tuning_studies;
begin
    select * into v_study from ml.tuning_studies s where s.id = p_study and s.tenant_id = p_tenant for no key update;
    if not found then
        raise exception 'tuning study % does not exist', coalesce(p_study::text, 'NULL') using errcode = 'P0002';
    end if;
    return v_study;
end
$$;

-- ml.record_tuning_trial(study_id uuid, state text, trial_number int default null,
--                        value float8 default null) returns jsonb
-- Settles one trial of a study run in its caller's process (ml.start_tuning_study), as
-- ml.finish_tuning_trial settles a job's slot: state complete or pruned (its Optuna trial
-- trial_number finished so) or lost (the configuration could not be fitted). Call it in the
-- transaction that records the trial's run. Returns {study_id, status, n_trials, settled};
-- publishes 'study.trial_finished' (topic 'models', see ml_private.settle_tuning_slot).
-- Raises 22023 bad state; P0002 unknown study; 55000 the study's trials are run by jobs
-- (ml.tune), or it is no longer running, or all its n_trials are settled; 42501 not a service
-- caller. Callers: service_role (workers).
create or replace function ml.record_tuning_trial(study_id uuid, state text, trial_number int default null,
                                       value float8 default null)
returns jsonb
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_tenant uuid;
    v_study  ml.tuning_studies;
begin
    perform ml_private.assert_service('ml.record_tuning_trial');
    v_tenant := ml_private.acting_tenant_id(true);
    if record_tuning_trial.state is null or record_tuning_trial.state not in ('complete', 'pruned', 'lost') then
        raise exception 'state: must be one of complete, pruned, lost; got %',
            coalesce(quote_literal(record_tuning_trial.state), 'NULL') using errcode = '22023';
    end if;
    v_study := ml_private.lock_tuning_study(v_tenant, record_tuning_trial.study_id);
    if v_study.tune_job_id is not null then
        raise exception 'tuning study %: its trials are run by tune_trial jobs (ml.finish_tuning_trial settles them)',
            v_study.id using errcode = '55000';
    end if;
    if v_study.status <> 'running' then
        raise exception 'tuning study % is %, not running', v_study.id, v_study.status using errcode = '55000';
    end if;
    if v_study.slots_complete + v_study.slots_pruned + v_study.slots_lost >= v_study.n_trials then
        raise exception 'tuning study %: all its % trials are settled', v_study.id, v_study.n_trials using errcode = '55000';
    end if;
    v_study := ml_private.settle_tuning_slot(v_study.id, null, record_tuning_trial.state, record_tuning_trial.trial_number,
                                             record_tuning_trial.value);
    return jsonb_build_object('study_id', v_study.id, 'status', v_study.status, 'n_trials', v_study.n_trials,
                              'settled', v_study.slots_complete + v_study.slots_pruned + v_study.slots_lost);
end
$$;

-- ml.finish_tuning_study(study_id uuid, status text, best_trial int default null,
--                        best_value float8 default null, best_params jsonb default null,
--                        best_run_id uuid default null, model_version_id uuid default null,
--                        error text default null) returns void
-- Ends a study: succeeded (with its best trial, the run of that trial and the registered
-- model version of the refit) or failed (with the error). Called by the tune handler in its
-- job's transaction. Publishes 'study.succeeded' or 'study.failed' (topic 'models').
-- Raises 22023 bad status; P0002 unknown study; 55000 the study has already finished;
-- 42501 not a service caller. Callers: service_role (workers).
create or replace function ml.finish_tuning_study(study_id uuid, status text, best_trial int default null,
                                       best_value float8 default null, best_params jsonb default null,
                                       best_run_id uuid default null, model_version_id uuid default null,
                                       error text default null)
returns void
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_tenant uuid;
    v_study  ml.tuning_studies;
begin
    perform ml_private.assert_service('ml.finish_tuning_study');
    v_tenant := ml_private.acting_tenant_id(true);
    if finish_tuning_study.status is null or finish_tuning_study.status not in ('succeeded', 'failed') then
        raise exception 'status: must be succeeded or failed, got %',
            coalesce(quote_literal(finish_tuning_study.status), 'NULL') using errcode = '22023';
    end if;
    v_study := ml_private.lock_tuning_study(v_tenant, finish_tuning_study.study_id);
    if v_study.status in ('succeeded', 'failed') then
        raise exception 'tuning study % has already finished (%)', v_study.id, v_study.status using errcode = '55000';
    end if;
    update ml.tuning_studies s set
        status = finish_tuning_study.status, best_trial = finish_tuning_study.best_trial,
        best_value = finish_tuning_study.best_value, best_params = finish_tuning_study.best_params,
        best_run_id = finish_tuning_study.best_run_id, model_version_id = finish_tuning_study.model_version_id,
        error = left(finish_tuning_study.error, 10000), finished_at = clock_timestamp()
    where s.id = v_study.id;
    perform ml_private.publish(v_tenant, 'models', 'study.' || finish_tuning_study.status, jsonb_strip_nulls(jsonb_build_object(
        'study_id', v_study.id, 'best_trial', finish_tuning_study.best_trial, 'best_value', finish_tuning_study.best_value,
        'best_run_id', finish_tuning_study.best_run_id, 'model_version_id', finish_tuning_study.model_version_id,
        'error', left(finish_tuning_study.error, 500))));
end
$$;

-- ml_private.tuning_job_ended() (trigger on ml.jobs): a tune_trial job that ends without success
-- (dead, failed, cancelled) settles its slot as lost, so the study still completes; a tune job
-- that does fails its study, and a cancelled one also cancels the study's unfinished slots.
create or replace function ml_private.tuning_job_ended() returns trigger
language plpgsql security definer
set search_path = ''
as $$
declare
    v_study uuid := (new.payload ->> 'study_id')::uuid;
begin
    if new.kind = 'tune_trial' then
        perform ml_private.settle_tuning_slot(v_study, new.id, 'lost');
    elsif new.kind = 'tune' then
        update ml.tuning_studies s set status = 'failed', finished_at = clock_timestamp(),
            error = format('tune job %s %s: %s', new.id, new.status, coalesce(new.error, 'no error recorded'))
        where s.id = v_study and s.status in ('running', 'refitting');
        if found then
            perform ml_private.publish(new.tenant_id, 'models', 'study.failed', jsonb_build_object(
                'study_id', v_study, 'error', format('tune job %s %s', new.id, new.status)));
        end if;
        if new.status = 'cancelled' then
            update ml.jobs j set status = 'cancelled', finished_at = now(), lease_expires_at = null
            where j.tenant_id = new.tenant_id and j.kind = 'tune_trial' and j.status in ('queued', 'running')
              and j.payload ->> 'study_id' = v_study::text;
        end if;
    end if;
    return null;
end
$$;

create or replace trigger jobs_tuning_ended after update of status on ml.jobs
    for each row when (new.kind in ('tune_trial', 'tune') and new.status in ('dead', 'failed', 'cancelled')
                       and old.status is distinct from new.status)
    execute function ml_private.tuning_job_ended();

------------------------------------------------------------------------------------------------
-- Grants
------------------------------------------------------------------------------------------------

grant execute on function
    ml.tune(text, uuid, text, jsonb, int, jsonb),
    ml.tuning_study(uuid),
    ml_private.tuning_trials(uuid)
to authenticated, service_role;
grant execute on function
    ml.start_tuning_study(text, uuid, text, jsonb, int, jsonb),
    ml.record_tuning_trial(uuid, text, int, float8),
    ml.finish_tuning_trial(uuid, bigint, text, int, float8),
    ml.finish_tuning_study(uuid, text, int, float8, jsonb, uuid, uuid, text),
    ml_private.settle_tuning_slot(uuid, bigint, text, int, float8),
    ml_private.find_study(uuid),
    ml_private.tuning_reader_tenants(),
    ml_private.tuning_metrics(text),
    ml_private.metric_direction(text),
    ml_private.check_search_space(text, text, jsonb),
    ml_private.normalize_tune_options(ml.projects, jsonb)
to service_role;
