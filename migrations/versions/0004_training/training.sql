-- pgmlops: training — algorithms, projects, runs and their metrics, ml.train
--
-- A project names what is learned: its task (classification, regression, anomaly_detection) and
-- its target (the label column of the datasets it trains on). ml.train checks everything a
-- client can get wrong (project, dataset, algorithm, hyperparameters, options) in SQL, so every
-- client meets the same rules and nothing is queued that a worker would refuse, then enqueues a
-- `train` job. The worker's handler (pgmlops._training_handlers) loads the dataset, fits, and
-- records what happened through the worker-side functions below, inside the job's transaction:
--
--   ml.start_run(...)        -> run id                    ml.runs: status running
--   ml.log_run_metrics(...)  per-step values              ml.run_metrics (time-partitioned)
--   ml.finish_run(...)       succeeded | failed | pruned  ml.runs: metrics, timings, sizes
--   ml.register_model_version(...)                        sql/registry.sql
--
-- Algorithms are a global registry (ml.algorithms): each with its tasks, library and a JSON
-- Schema of its hyperparameters, checked by ml_private.assert_json_valid. The names in the
-- schemas are the estimators' own parameter names (scikit-learn's, or those of the torch models
-- in pgmlops._torch_models), so a valid hyperparameter object is passed to the estimator as it
-- is. Two pgmlops keywords extend the schemas (the validator ignores unknown keywords; they are
-- applied by ml_private.algorithm_hyperparams_schema before validation):
--   "x-tasks": [task, ...]            the parameter exists only for these tasks (e.g.
--                                     class_weight: classification)
--   "x-enum-by-task": {task: [...]}   the allowed values depend on the task (e.g. criterion)
-- and one is checked by ml_private.check_hyperparams after it:
--   "x-fraction-at-most": 1           a number with a fractional part is a fraction and must be
--                                     at most this (max_features: 5 features, or 0.5 of them)

------------------------------------------------------------------------------------------------
-- Tables
------------------------------------------------------------------------------------------------

create table ml.algorithms (
    name               text primary key,
    tasks              text[] not null,
    library            text not null,
    hyperparams_schema jsonb not null,
    iterative          boolean not null default false,
    description        text not null default '',
    constraint algorithms_name_format check (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    constraint algorithms_tasks_valid check (cardinality(tasks) > 0
        and tasks <@ array['classification', 'regression', 'anomaly_detection']),
    constraint algorithms_library_valid check (library in ('sklearn', 'torch')),
    constraint algorithms_schema_object check (jsonb_typeof(hyperparams_schema) = 'object')
);
comment on table ml.algorithms is 'Algorithms ml.train accepts: tasks, library, hyperparameter JSON Schema (global, not tenant-owned)';
revoke all on ml.algorithms from public, anon;
grant select on ml.algorithms to authenticated, service_role;

create table ml.projects (
    id          uuid primary key default gen_random_uuid(),
    tenant_id   uuid not null references ml.tenants (id) on delete cascade,
    name        text not null,
    task        text not null,
    target      text,
    description text,
    created_by  uuid,
    created_at  timestamptz not null default now(),
    unique (tenant_id, name),
    constraint projects_name_format check (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    constraint projects_task_valid check (task in ('classification', 'regression', 'anomaly_detection')),
    constraint projects_target_needed check (target is not null or task = 'anomaly_detection')
);
comment on table ml.projects is 'ML projects: what is learned (task) from which label (target)';
select ml_private.enable_tenant_rls('ml.projects');

-- No foreign key to ml.jobs: finished jobs are purged after 14 days, their runs stay. study_id
-- points into ml.tuning_studies (sql/tuning.sql, which runs later).
create table ml.runs (
    id                   uuid primary key default gen_random_uuid(),
    tenant_id            uuid not null references ml.tenants (id) on delete cascade,
    project_id           uuid not null references ml.projects (id) on delete cascade,
    job_id               bigint,
    study_id             uuid,
    trial_number         int,
    algorithm            text not null references ml.algorithms (name),
    hyperparams          jsonb not null default '{}',
    options              jsonb not null default '{}',
    status               text not null default 'running',
    metrics              jsonb not null default '{}',
    dataset_id           uuid references ml.datasets (id) on delete set null,
    dataset_hash         text,
    library_versions     jsonb not null default '{}',
    code_version         text,
    train_seconds        float8,
    model_size_bytes     bigint,
    inference_latency_ms float8,
    error                text,
    started_at           timestamptz not null default now(),
    finished_at          timestamptz,
    constraint runs_status_valid check (status in ('running', 'succeeded', 'failed', 'pruned')),
    constraint runs_finished check ((status = 'running') = (finished_at is null)),
    constraint runs_trial_number check (trial_number is null or trial_number >= 0)
);
create index runs_project_idx on ml.runs (tenant_id, project_id, started_at desc);
create index runs_job_idx on ml.runs (job_id) where job_id is not null;
create index runs_study_idx on ml.runs (study_id, trial_number) where study_id is not null;
comment on table ml.runs is 'Training runs: what was fitted on which data with which settings, and how it did';
select ml_private.enable_tenant_rls('ml.runs');

-- Per-step values (epochs, boosting iterations, trial steps). No foreign key, as on the other
-- bulk time-series tables: deleting a tenant erases them through its erasure trigger.
select ml_private.create_time_partitioned_table(
    'ml', 'run_metrics',
    $cols$
        tenant_id uuid not null,
        run_id    uuid not null,
        step      int not null,
        name      text not null,
        value     float8,
        at        timestamptz not null default now()
    $cols$,
    'at', interval '7 days');
create index run_metrics_run_idx on ml.run_metrics (tenant_id, run_id, name, step);
comment on table ml.run_metrics is 'Per-step metric values of runs (one row per run, step and name)';
select ml_private.enable_tenant_rls('ml.run_metrics');

------------------------------------------------------------------------------------------------
-- Algorithms
------------------------------------------------------------------------------------------------

-- ml_private.register_algorithm(p_name, p_tasks, p_library, p_iterative, p_description,
--                               p_hyperparams_schema) returns void
-- Registers or updates an algorithm. Called by migrations; owner only. Raises 23514 on a bad
-- name, task or library.
create function ml_private.register_algorithm(
    p_name text, p_tasks text[], p_library text, p_iterative boolean, p_description text, p_hyperparams_schema jsonb)
returns void
language sql
set search_path = ''
as $$
    insert into ml.algorithms (name, tasks, library, iterative, description, hyperparams_schema)
    values (p_name, p_tasks, p_library, p_iterative, p_description, p_hyperparams_schema)
    on conflict (name) do update set
        tasks = excluded.tasks, library = excluded.library, iterative = excluded.iterative,
        description = excluded.description, hyperparams_schema = excluded.hyperparams_schema
$$;

-- ml_private.find_algorithm(p_name text, p_task text default null) returns ml.algorithms
-- The algorithm p_name; with p_task, one that supports the task.
-- Raises 22023 unknown algorithm (the hint lists the known ones) or task not supported.
create function ml_private.find_algorithm(p_name text, p_task text default null) returns ml.algorithms
language plpgsql stable
set search_path = ''
as $$
declare
    v_algorithm ml.algorithms;
begin
    select * into v_algorithm from ml.algorithms a where a.name = p_name;
    if not found then
        raise exception 'algorithm: unknown algorithm %', coalesce(quote_literal(p_name), 'NULL')
            using errcode = '22023',
                  hint = format('Known algorithms: %s.', (select string_agg(a.name, ', ' order by a.name) from ml.algorithms a));
    end if;
    if p_task is not null and not (p_task = any (v_algorithm.tasks)) then
        raise exception 'algorithm: % does not support task % (it supports: %)',
            v_algorithm.name, p_task, array_to_string(v_algorithm.tasks, ', ')
            using errcode = '22023',
                  hint = format('Algorithms for %s: %s.', p_task,
                                (select string_agg(a.name, ', ' order by a.name) from ml.algorithms a where p_task = any (a.tasks)));
    end if;
    return v_algorithm;
end
$$;

-- ml_private.algorithm_hyperparams_schema(p_algorithm text, p_task text) returns jsonb
-- The JSON Schema of p_algorithm's hyperparameters for p_task: parameters whose "x-tasks" leaves
-- the task out are removed, "x-enum-by-task" becomes the task's "enum", and the pgmlops
-- keywords are dropped (but "x-fraction-at-most", checked by ml_private.check_hyperparams).
-- Tuning uses it to check search-space bounds. Raises like ml_private.find_algorithm.
create function ml_private.algorithm_hyperparams_schema(p_algorithm text, p_task text) returns jsonb
language plpgsql stable
set search_path = ''
as $$
declare
    v_schema jsonb := (ml_private.find_algorithm(p_algorithm, p_task)).hyperparams_schema;
begin
    return v_schema || jsonb_build_object('properties', coalesce((
        select jsonb_object_agg(p.key,
                   (p.value - 'x-tasks' - 'x-enum-by-task')
                   || case when p.value ? 'x-enum-by-task'
                           then jsonb_build_object('enum', p.value -> 'x-enum-by-task' -> p_task) else '{}' end)
        from jsonb_each(v_schema -> 'properties') p
        where not p.value ? 'x-tasks' or p.value -> 'x-tasks' ? p_task), '{}'));
end
$$;

-- ml_private.check_hyperparams(p_algorithm text, p_task text, p_hyperparams jsonb) returns void
-- Raises 22023 unless p_hyperparams is a valid hyperparameter object of p_algorithm for p_task.
-- The message names the parameter and the rule ('hyperparams: $.learning_rate: must be > 0,
-- got 0'); DETAIL lists every rule broken. A parameter of another task says so.
create function ml_private.check_hyperparams(p_algorithm text, p_task text, p_hyperparams jsonb) returns void
language plpgsql stable
set search_path = ''
as $$
declare
    v_full   jsonb := (ml_private.find_algorithm(p_algorithm, p_task)).hyperparams_schema;
    v_schema jsonb := ml_private.algorithm_hyperparams_schema(p_algorithm, p_task);
    v_key    text;
    v_value  jsonb;
    v_limit  numeric;
begin
    if p_hyperparams is null or jsonb_typeof(p_hyperparams) <> 'object' then
        raise exception 'hyperparams: must be a JSON object, got %', coalesce(jsonb_typeof(p_hyperparams), 'NULL')
            using errcode = '22023';
    end if;
    for v_key in select jsonb_object_keys(p_hyperparams) loop
        if v_full -> 'properties' ? v_key and not v_schema -> 'properties' ? v_key then
            raise exception 'hyperparams: $.%: applies to % only, not to %', v_key,
                (select string_agg(t, ' and ') from jsonb_array_elements_text(v_full -> 'properties' -> v_key -> 'x-tasks') t),
                p_task using errcode = '22023';
        end if;
    end loop;
    perform ml_private.assert_json_valid('hyperparams', v_schema, p_hyperparams);
    for v_key, v_value in select key, value from jsonb_each(p_hyperparams) loop
        v_limit := (v_schema -> 'properties' -> v_key ->> 'x-fraction-at-most')::numeric;
        if v_limit is not null and jsonb_typeof(v_value) = 'number'
           and (v_value #>> '{}')::numeric <> trunc((v_value #>> '{}')::numeric)
           and (v_value #>> '{}')::numeric > v_limit then
            raise exception 'hyperparams: $.%: a fraction must be <= %, got %', v_key, v_limit, v_value
                using errcode = '22023', hint = 'Whole numbers are counts; numbers with a fractional part are fractions.';
        end if;
    end loop;
end
$$;

-- The algorithms. Bounds follow the estimators' own validation, narrowed where a value would
-- be absurd rather than merely slow (e.g. at most 10000 boosting iterations). random_state and
-- n_jobs are not hyperparameters here: the worker sets them from options and its own settings.

select ml_private.register_algorithm('logistic_regression', array['classification'], 'sklearn', false,
    'scikit-learn LogisticRegression (penalty maps to l1_ratio: l2 0, l1 1, elasticnet l1_ratio)',
    $j${"type": "object", "additionalProperties": false, "properties": {
        "C":             {"type": "number", "exclusiveMinimum": 0, "maximum": 1000000},
        "penalty":       {"type": ["string", "null"], "enum": ["l2", "l1", "elasticnet", null]},
        "l1_ratio":      {"type": "number", "minimum": 0, "maximum": 1},
        "solver":        {"type": "string", "enum": ["lbfgs", "liblinear", "newton-cg", "newton-cholesky", "sag", "saga"]},
        "max_iter":      {"type": "integer", "minimum": 1, "maximum": 100000},
        "tol":           {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "fit_intercept": {"type": "boolean"},
        "class_weight":  {"type": ["string", "null"], "enum": ["balanced", null]}
    }}$j$::jsonb);

select ml_private.register_algorithm('linear_regression', array['regression'], 'sklearn', false,
    'scikit-learn LinearRegression (ordinary least squares)',
    $j${"type": "object", "additionalProperties": false, "properties": {
        "fit_intercept": {"type": "boolean"},
        "positive":      {"type": "boolean"}
    }}$j$::jsonb);

select ml_private.register_algorithm('ridge', array['regression'], 'sklearn', false,
    'scikit-learn Ridge (L2-regularized least squares)',
    $j${"type": "object", "additionalProperties": false, "properties": {
        "alpha":         {"type": "number", "minimum": 0, "maximum": 1000000},
        "fit_intercept": {"type": "boolean"},
        "solver":        {"type": "string", "enum": ["auto", "svd", "cholesky", "lsqr", "sparse_cg", "sag", "saga", "lbfgs"]},
        "max_iter":      {"type": ["integer", "null"], "minimum": 1, "maximum": 100000},
        "tol":           {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "positive":      {"type": "boolean"}
    }}$j$::jsonb);

select ml_private.register_algorithm('lasso', array['regression'], 'sklearn', false,
    'scikit-learn Lasso (L1-regularized least squares)',
    $j${"type": "object", "additionalProperties": false, "properties": {
        "alpha":         {"type": "number", "exclusiveMinimum": 0, "maximum": 1000000},
        "fit_intercept": {"type": "boolean"},
        "max_iter":      {"type": "integer", "minimum": 1, "maximum": 100000},
        "tol":           {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "selection":     {"type": "string", "enum": ["cyclic", "random"]},
        "positive":      {"type": "boolean"}
    }}$j$::jsonb);

select ml_private.register_algorithm('elastic_net', array['regression'], 'sklearn', false,
    'scikit-learn ElasticNet (L1 and L2 regularized least squares)',
    $j${"type": "object", "additionalProperties": false, "properties": {
        "alpha":         {"type": "number", "exclusiveMinimum": 0, "maximum": 1000000},
        "l1_ratio":      {"type": "number", "minimum": 0, "maximum": 1},
        "fit_intercept": {"type": "boolean"},
        "max_iter":      {"type": "integer", "minimum": 1, "maximum": 100000},
        "tol":           {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "selection":     {"type": "string", "enum": ["cyclic", "random"]},
        "positive":      {"type": "boolean"}
    }}$j$::jsonb);

select ml_private.register_algorithm('decision_tree', array['classification', 'regression'], 'sklearn', false,
    'scikit-learn DecisionTreeClassifier / DecisionTreeRegressor',
    $j${"type": "object", "additionalProperties": false, "properties": {
        "criterion":             {"type": "string", "x-enum-by-task": {
                                      "classification": ["gini", "entropy", "log_loss"],
                                      "regression": ["squared_error", "absolute_error", "poisson"]}},
        "splitter":              {"type": "string", "enum": ["best", "random"]},
        "max_depth":             {"type": ["integer", "null"], "minimum": 1, "maximum": 1000},
        "min_samples_split":     {"type": "integer", "minimum": 2, "maximum": 1000000},
        "min_samples_leaf":      {"type": "integer", "minimum": 1, "maximum": 1000000},
        "max_features":          {"type": ["number", "string", "null"], "exclusiveMinimum": 0,
                                  "pattern": "^(sqrt|log2)$", "x-fraction-at-most": 1},
        "max_leaf_nodes":        {"type": ["integer", "null"], "minimum": 2, "maximum": 10000000},
        "min_impurity_decrease": {"type": "number", "minimum": 0},
        "ccp_alpha":             {"type": "number", "minimum": 0},
        "class_weight":          {"type": ["string", "null"], "enum": ["balanced", null], "x-tasks": ["classification"]}
    }}$j$::jsonb);

select ml_private.register_algorithm('random_forest', array['classification', 'regression'], 'sklearn', false,
    'scikit-learn RandomForestClassifier / RandomForestRegressor',
    $j${"type": "object", "additionalProperties": false, "properties": {
        "n_estimators":          {"type": "integer", "minimum": 1, "maximum": 10000},
        "criterion":             {"type": "string", "x-enum-by-task": {
                                      "classification": ["gini", "entropy", "log_loss"],
                                      "regression": ["squared_error", "absolute_error", "poisson"]}},
        "max_depth":             {"type": ["integer", "null"], "minimum": 1, "maximum": 1000},
        "min_samples_split":     {"type": "integer", "minimum": 2, "maximum": 1000000},
        "min_samples_leaf":      {"type": "integer", "minimum": 1, "maximum": 1000000},
        "max_features":          {"type": ["number", "string", "null"], "exclusiveMinimum": 0,
                                  "pattern": "^(sqrt|log2)$", "x-fraction-at-most": 1},
        "max_leaf_nodes":        {"type": ["integer", "null"], "minimum": 2, "maximum": 10000000},
        "min_impurity_decrease": {"type": "number", "minimum": 0},
        "bootstrap":             {"type": "boolean"},
        "max_samples":           {"type": ["number", "null"], "exclusiveMinimum": 0, "x-fraction-at-most": 1},
        "ccp_alpha":             {"type": "number", "minimum": 0},
        "class_weight":          {"type": ["string", "null"], "enum": ["balanced", "balanced_subsample", null],
                                  "x-tasks": ["classification"]}
    }}$j$::jsonb);

select ml_private.register_algorithm('extra_trees', array['classification', 'regression'], 'sklearn', false,
    'scikit-learn ExtraTreesClassifier / ExtraTreesRegressor (extremely randomized trees)',
    $j${"type": "object", "additionalProperties": false, "properties": {
        "n_estimators":          {"type": "integer", "minimum": 1, "maximum": 10000},
        "criterion":             {"type": "string", "x-enum-by-task": {
                                      "classification": ["gini", "entropy", "log_loss"],
                                      "regression": ["squared_error", "absolute_error", "poisson"]}},
        "max_depth":             {"type": ["integer", "null"], "minimum": 1, "maximum": 1000},
        "min_samples_split":     {"type": "integer", "minimum": 2, "maximum": 1000000},
        "min_samples_leaf":      {"type": "integer", "minimum": 1, "maximum": 1000000},
        "max_features":          {"type": ["number", "string", "null"], "exclusiveMinimum": 0,
                                  "pattern": "^(sqrt|log2)$", "x-fraction-at-most": 1},
        "max_leaf_nodes":        {"type": ["integer", "null"], "minimum": 2, "maximum": 10000000},
        "min_impurity_decrease": {"type": "number", "minimum": 0},
        "bootstrap":             {"type": "boolean"},
        "max_samples":           {"type": ["number", "null"], "exclusiveMinimum": 0, "x-fraction-at-most": 1},
        "ccp_alpha":             {"type": "number", "minimum": 0},
        "class_weight":          {"type": ["string", "null"], "enum": ["balanced", "balanced_subsample", null],
                                  "x-tasks": ["classification"]}
    }}$j$::jsonb);

select ml_private.register_algorithm('gradient_boosting', array['classification', 'regression'], 'sklearn', true,
    'scikit-learn GradientBoostingClassifier / GradientBoostingRegressor (intermediate values per stage)',
    $j${"type": "object", "additionalProperties": false, "properties": {
        "loss":                  {"type": "string", "x-enum-by-task": {
                                      "classification": ["log_loss", "exponential"],
                                      "regression": ["squared_error", "absolute_error", "huber", "quantile"]}},
        "learning_rate":         {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "n_estimators":          {"type": "integer", "minimum": 1, "maximum": 10000},
        "subsample":             {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "max_depth":             {"type": ["integer", "null"], "minimum": 1, "maximum": 100},
        "min_samples_split":     {"type": "integer", "minimum": 2, "maximum": 1000000},
        "min_samples_leaf":      {"type": "integer", "minimum": 1, "maximum": 1000000},
        "max_features":          {"type": ["number", "string", "null"], "exclusiveMinimum": 0,
                                  "pattern": "^(sqrt|log2)$", "x-fraction-at-most": 1},
        "max_leaf_nodes":        {"type": ["integer", "null"], "minimum": 2, "maximum": 10000000},
        "min_impurity_decrease": {"type": "number", "minimum": 0},
        "ccp_alpha":             {"type": "number", "minimum": 0},
        "n_iter_no_change":      {"type": ["integer", "null"], "minimum": 1, "maximum": 10000},
        "validation_fraction":   {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "tol":                   {"type": "number", "minimum": 0, "maximum": 1},
        "alpha":                 {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "x-tasks": ["regression"]}
    }}$j$::jsonb);

select ml_private.register_algorithm('hist_gradient_boosting', array['classification', 'regression'], 'sklearn', true,
    'scikit-learn HistGradientBoostingClassifier / HistGradientBoostingRegressor (intermediate values per iteration)',
    $j${"type": "object", "additionalProperties": false, "properties": {
        "loss":                {"type": "string", "x-enum-by-task": {
                                    "classification": ["log_loss"],
                                    "regression": ["squared_error", "absolute_error", "gamma", "poisson", "quantile"]}},
        "quantile":            {"type": "number", "minimum": 0, "maximum": 1, "x-tasks": ["regression"]},
        "learning_rate":       {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "max_iter":            {"type": "integer", "minimum": 1, "maximum": 10000},
        "max_leaf_nodes":      {"type": ["integer", "null"], "minimum": 2, "maximum": 65536},
        "max_depth":           {"type": ["integer", "null"], "minimum": 1, "maximum": 1000},
        "min_samples_leaf":    {"type": "integer", "minimum": 1, "maximum": 1000000},
        "l2_regularization":   {"type": "number", "minimum": 0, "maximum": 1000000},
        "max_features":        {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "max_bins":            {"type": "integer", "minimum": 2, "maximum": 255},
        "early_stopping":      {"type": ["string", "boolean"], "enum": ["auto", true, false]},
        "n_iter_no_change":    {"type": "integer", "minimum": 1, "maximum": 10000},
        "validation_fraction": {"type": ["number", "null"], "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "tol":                 {"type": "number", "minimum": 0, "maximum": 1},
        "class_weight":        {"type": ["string", "null"], "enum": ["balanced", null], "x-tasks": ["classification"]}
    }}$j$::jsonb);

select ml_private.register_algorithm('svm', array['classification', 'regression'], 'sklearn', false,
    'scikit-learn SVC / SVR (support vector machines)',
    $j${"type": "object", "additionalProperties": false, "properties": {
        "C":            {"type": "number", "exclusiveMinimum": 0, "maximum": 1000000},
        "kernel":       {"type": "string", "enum": ["linear", "poly", "rbf", "sigmoid"]},
        "degree":       {"type": "integer", "minimum": 1, "maximum": 10},
        "gamma":        {"type": ["number", "string"], "minimum": 0, "pattern": "^(scale|auto)$"},
        "coef0":        {"type": "number"},
        "shrinking":    {"type": "boolean"},
        "tol":          {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "max_iter":     {"type": "integer", "minimum": -1, "maximum": 10000000},
        "epsilon":      {"type": "number", "minimum": 0, "x-tasks": ["regression"]},
        "class_weight": {"type": ["string", "null"], "enum": ["balanced", null], "x-tasks": ["classification"]}
    }}$j$::jsonb);

select ml_private.register_algorithm('knn', array['classification', 'regression'], 'sklearn', false,
    'scikit-learn KNeighborsClassifier / KNeighborsRegressor (k-nearest neighbours)',
    $j${"type": "object", "additionalProperties": false, "properties": {
        "n_neighbors": {"type": "integer", "minimum": 1, "maximum": 10000},
        "weights":     {"type": "string", "enum": ["uniform", "distance"]},
        "algorithm":   {"type": "string", "enum": ["auto", "ball_tree", "kd_tree", "brute"]},
        "leaf_size":   {"type": "integer", "minimum": 1, "maximum": 100000},
        "p":           {"type": "number", "exclusiveMinimum": 0, "maximum": 100},
        "metric":      {"type": "string", "enum": ["minkowski", "euclidean", "manhattan", "chebyshev", "cosine"]}
    }}$j$::jsonb);

select ml_private.register_algorithm('isolation_forest', array['anomaly_detection'], 'sklearn', false,
    'scikit-learn IsolationForest',
    $j${"type": "object", "additionalProperties": false, "properties": {
        "n_estimators":  {"type": "integer", "minimum": 1, "maximum": 10000},
        "max_samples":   {"type": ["number", "string"], "exclusiveMinimum": 0, "pattern": "^auto$", "x-fraction-at-most": 1},
        "contamination": {"type": ["number", "string"], "exclusiveMinimum": 0, "maximum": 0.5, "pattern": "^auto$"},
        "max_features":  {"type": "number", "exclusiveMinimum": 0, "x-fraction-at-most": 1},
        "bootstrap":     {"type": "boolean"}
    }}$j$::jsonb);

select ml_private.register_algorithm('local_outlier_factor', array['anomaly_detection'], 'sklearn', false,
    'scikit-learn LocalOutlierFactor (fitted with novelty=True, so it scores new rows)',
    $j${"type": "object", "additionalProperties": false, "properties": {
        "n_neighbors":   {"type": "integer", "minimum": 1, "maximum": 10000},
        "algorithm":     {"type": "string", "enum": ["auto", "ball_tree", "kd_tree", "brute"]},
        "leaf_size":     {"type": "integer", "minimum": 1, "maximum": 100000},
        "p":             {"type": "number", "exclusiveMinimum": 0, "maximum": 100},
        "metric":        {"type": "string", "enum": ["minkowski", "euclidean", "manhattan", "chebyshev", "cosine"]},
        "contamination": {"type": ["number", "string"], "exclusiveMinimum": 0, "maximum": 0.5, "pattern": "^auto$"}
    }}$j$::jsonb);

select ml_private.register_algorithm('mlp', array['classification', 'regression'], 'torch', true,
    'PyTorch multi-layer perceptron (pgmlops._torch_models; intermediate values per epoch)',
    $j${"type": "object", "additionalProperties": false, "properties": {
        "hidden_sizes": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 4096},
                         "minItems": 1, "maxItems": 8},
        "epochs":       {"type": "integer", "minimum": 1, "maximum": 10000},
        "lr":           {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "batch_size":   {"type": "integer", "minimum": 1, "maximum": 65536},
        "dropout":      {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
        "weight_decay": {"type": "number", "minimum": 0, "maximum": 1}
    }}$j$::jsonb);

select ml_private.register_algorithm('autoencoder', array['anomaly_detection'], 'torch', true,
    'PyTorch autoencoder scoring rows by reconstruction error (pgmlops._torch_models; intermediate values per epoch)',
    $j${"type": "object", "additionalProperties": false, "properties": {
        "hidden_sizes": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 4096},
                         "minItems": 0, "maxItems": 8},
        "latent_dim":   {"type": "integer", "minimum": 1, "maximum": 1024},
        "epochs":       {"type": "integer", "minimum": 1, "maximum": 10000},
        "lr":           {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "batch_size":   {"type": "integer", "minimum": 1, "maximum": 65536}
    }}$j$::jsonb);

------------------------------------------------------------------------------------------------
-- Job kinds
------------------------------------------------------------------------------------------------

-- train: one fit, enqueued by ml.train (which has checked everything the schema cannot).
-- A lease of 10 minutes: heartbeats renew it every third of that, so only a dead worker's job
-- waits that long before another takes it.
select ml_private.register_job_kind(
    'train', 'Fits one model on a dataset and registers it (enqueued by ml.train)',
    $j${"type": "object", "additionalProperties": false,
        "required": ["project_id", "dataset_id", "algorithm", "hyperparams", "options"],
        "properties": {
            "project_id":  {"type": "string", "pattern": "^[0-9a-f-]{36}$"},
            "dataset_id":  {"type": "string", "pattern": "^[0-9a-f-]{36}$"},
            "algorithm":   {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$"},
            "hyperparams": {"type": "object"},
            "options":     {"type": "object"}
        }}$j$::jsonb,
    3, interval '10 minutes', interval '10 seconds', interval '10 minutes');

-- tune_trial: one trial slot of a study (ml.tune enqueues n_trials of them). A shorter lease,
-- so a trial whose worker died is given to another worker soon and the study still completes.
select ml_private.register_job_kind(
    'tune_trial', 'Runs one trial of a tuning study (enqueued by ml.tune)',
    $j${"type": "object", "required": ["study_id"],
        "properties": {
            "study_id": {"type": "string", "pattern": "^[0-9a-f-]{36}$"}
        }}$j$::jsonb,
    3, interval '2 minutes', interval '2 seconds', interval '1 minute');

-- tune: refits a study's best configuration and registers it (queued with run_after =
-- 'infinity' by ml.tune and released by the trial slot that completes the study).
select ml_private.register_job_kind(
    'tune', 'Refits the best configuration of a tuning study and registers it (enqueued by ml.tune)',
    $j${"type": "object", "required": ["study_id"],
        "properties": {
            "study_id": {"type": "string", "pattern": "^[0-9a-f-]{36}$"}
        }}$j$::jsonb,
    3, interval '10 minutes', interval '10 seconds', interval '10 minutes');

------------------------------------------------------------------------------------------------
-- Helpers: projects, datasets, options
------------------------------------------------------------------------------------------------

-- ml_private.find_project(p_tenant uuid, p_name text) returns ml.projects
-- The project p_name of p_tenant. Raises P0002 when there is none.
create function ml_private.find_project(p_tenant uuid, p_name text) returns ml.projects
language plpgsql stable security definer
set search_path = ''
as $$
declare
    v_project ml.projects;
begin
    select * into v_project from ml.projects p where p.tenant_id = p_tenant and p.name = p_name;
    if not found then
        raise exception 'project % does not exist', coalesce(quote_literal(p_name), 'NULL')
            using errcode = 'P0002', hint = 'Create it with ml.create_project(name, task, target).';
    end if;
    return v_project;
end
$$;

-- ml_private.find_training_dataset(p_tenant uuid, p_dataset uuid, p_project ml.projects) returns ml.datasets
-- The dataset p_dataset of p_tenant, checked fit for p_project: its label must be the project's
-- target (anomaly detection: a dataset without a label is fine, one with a label must have the
-- target's) and it must have model inputs.
-- Raises P0002 unknown dataset; 22023 a label that is not the target, no inputs.
create function ml_private.find_training_dataset(p_tenant uuid, p_dataset uuid, p_project ml.projects) returns ml.datasets
language plpgsql stable security definer
set search_path = ''
as $$
declare
    v_dataset ml.datasets;
begin
    select * into v_dataset from ml.datasets d where d.tenant_id = p_tenant and d.id = p_dataset;
    if not found then
        raise exception 'dataset % does not exist', coalesce(p_dataset::text, 'NULL')
            using errcode = 'P0002', hint = 'Build one with ml.create_training_set(...).';
    end if;
    if p_project.task <> 'anomaly_detection' or v_dataset.label is not null then
        if v_dataset.label is distinct from p_project.target then
            raise exception 'dataset: % (%@%) has label %, but project % learns target %',
                v_dataset.id, v_dataset.name, v_dataset.version, coalesce(quote_literal(v_dataset.label), 'none'),
                p_project.name, coalesce(quote_literal(p_project.target), 'none')
                using errcode = '22023', hint = 'Build the training set with label => the project''s target.';
        end if;
    end if;
    if cardinality(v_dataset.inputs) = 0 then
        raise exception 'dataset: % (%@%) has no model inputs', v_dataset.id, v_dataset.name, v_dataset.version
            using errcode = '22023';
    end if;
    return v_dataset;
end
$$;

-- ml_private.train_options_schema() returns jsonb
-- The JSON Schema of ml.train's options (ml.tune adds its own properties to it).
create function ml_private.train_options_schema() returns jsonb
language sql immutable
set search_path = ''
as $$
    select $j${"type": "object", "additionalProperties": false, "properties": {
        "split":        {"type": "string", "enum": ["random", "stratified", "time"]},
        "test_size":    {"type": "number", "minimum": 0.05, "maximum": 0.5},
        "cv_folds":     {"type": ["integer", "null"], "minimum": 2, "maximum": 20},
        "random_state": {"type": "integer", "minimum": 0, "maximum": 4294967295},
        "model":        {"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,62}$"},
        "tags":         {"type": "object"}
    }}$j$::jsonb
$$;

-- ml_private.normalize_train_options(p_project ml.projects, p_options jsonb,
--                                    p_extra_properties jsonb default '{}') returns jsonb
-- p_options checked against ml.train's options schema (plus p_extra_properties, a JSON Schema
-- `properties` object: ml.tune's own options) and completed with the defaults: split
-- (stratified for classification, else random), test_size 0.2, cv_folds null, random_state 42,
-- model (the project's name), tags {}. Extra options are returned as given.
-- Raises 22023 naming the option and the rule; a stratified split outside classification.
create function ml_private.normalize_train_options(p_project ml.projects, p_options jsonb,
                                                   p_extra_properties jsonb default '{}')
returns jsonb
language plpgsql stable
set search_path = ''
as $$
declare
    v_schema  jsonb := ml_private.train_options_schema();
    v_options jsonb;
begin
    if p_options is null or jsonb_typeof(p_options) <> 'object' then
        raise exception 'options: must be a JSON object, got %', coalesce(jsonb_typeof(p_options), 'NULL')
            using errcode = '22023';
    end if;
    v_schema := jsonb_set(v_schema, '{properties}', (v_schema -> 'properties') || coalesce(p_extra_properties, '{}'));
    perform ml_private.assert_json_valid('options', v_schema, p_options);
    v_options := jsonb_build_object(
        'split', case when p_project.task = 'classification' then 'stratified' else 'random' end,
        'test_size', 0.2, 'cv_folds', null, 'random_state', 42, 'model', p_project.name, 'tags', '{}'::jsonb
    ) || p_options;
    if v_options ->> 'split' = 'stratified' and p_project.task <> 'classification' then
        raise exception 'options: $.split: stratified needs a classification project (% is %)', p_project.name, p_project.task
            using errcode = '22023', hint = 'Use split random or time.';
    end if;
    return v_options;
end
$$;

------------------------------------------------------------------------------------------------
-- API: projects and training (clients)
------------------------------------------------------------------------------------------------

-- ml.create_project(name text, task text, target text, description text default null) returns uuid
-- Creates a project of the acting tenant and returns its id: `task` classification,
-- regression or anomaly_detection; `target` the label column its datasets carry (optional for
-- anomaly detection, where labels only serve evaluation). Creating a project that exists with
-- the same task and target returns its id (so setup scripts can run twice); publishes
-- 'project.created' (topic 'models').
-- Raises 22023 bad name (lowercase letters, digits, _ and -, 1 to 63, starting with a letter),
-- task or target; 23505 a project of that name with another task or target; 42501 viewers and
-- non-members. Callers: authenticated (owner, admin, ml_engineer), service_role.
create function ml.create_project(name text, task text, target text, description text default null) returns uuid
language plpgsql volatile security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_tenant   uuid;
    v_name     text := create_project.name;
    v_task     text := create_project.task;
    v_target   text := nullif(btrim(create_project.target), '');
    v_existing ml.projects;
    v_id       uuid;
begin
    if v_name is null or v_name !~ '^[a-z][a-z0-9_-]{0,62}$' then
        raise exception 'name: % must be lowercase letters, digits, _ and - (1 to 63, starting with a letter)',
            coalesce(quote_literal(v_name), 'NULL') using errcode = '22023';
    end if;
    if v_task is null or v_task not in ('classification', 'regression', 'anomaly_detection') then
        raise exception 'task: must be one of classification, regression, anomaly_detection; got %',
            coalesce(quote_literal(v_task), 'NULL') using errcode = '22023';
    end if;
    if v_target is null and v_task <> 'anomaly_detection' then
        raise exception 'target: a % project needs the name of its label column', v_task using errcode = '22023';
    end if;
    if length(v_target) > 63 then
        raise exception 'target: must be at most 63 characters' using errcode = '22023';
    end if;
    v_tenant := ml_private.acting_tenant_id(true);

    insert into ml.projects (tenant_id, name, task, target, description, created_by)
    values (v_tenant, v_name, v_task, v_target, create_project.description, ml_private.caller_user_id())
    on conflict on constraint projects_tenant_id_name_key do nothing
    returning id into v_id;
    if v_id is null then
        select * into v_existing from ml.projects p where p.tenant_id = v_tenant and p.name = v_name;
        if v_existing.task = v_task and v_existing.target is not distinct from v_target then
            return v_existing.id;
        end if;
        raise exception 'project % already exists with task % and target %', v_name, v_existing.task,
            coalesce(quote_literal(v_existing.target), 'none') using errcode = '23505';
    end if;

    perform ml_private.publish(v_tenant, 'models', 'project.created',
        jsonb_build_object('project_id', v_id, 'name', v_name, 'task', v_task, 'target', v_target));
    return v_id;
end
$$;

-- ml.train(project text, dataset uuid, algorithm text, hyperparams jsonb default '{}',
--          options jsonb default '{}') returns bigint
-- Queues the training of `algorithm` on `dataset` for `project` and returns the `train` job's
-- id (ml.job_result(id) tells when it is done; its result names the run and model version).
-- Checked first, in this order, nothing queued on error:
--   project      exists in the acting tenant (P0002)
--   dataset      exists (P0002); its label is the project's target (22023; anomaly detection:
--                no label, or the target)
--   algorithm    known and supports the project's task (22023)
--   hyperparams  valid for the algorithm and task: 'hyperparams: $.<name>: <rule>' (22023)
--   options      split random | stratified (classification only) | time, default stratified
--                for classification else random; test_size 0.05..0.5 (0.2); cv_folds null or
--                2..20; random_state 0..2^32-1 (42); model name (the project's); tags object
--                ({}): 'options: $.<name>: <rule>' (22023)
-- The job's payload is {project_id, dataset_id, algorithm, hyperparams, options} with the
-- options completed by their defaults. Also raises 42501 for viewers and non-members.
-- Callers: authenticated (owner, admin, ml_engineer), service_role.
create function ml.train(project text, dataset uuid, algorithm text, hyperparams jsonb default '{}',
                         options jsonb default '{}')
returns bigint
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_tenant  uuid := ml_private.acting_tenant_id(true);
    v_project ml.projects := ml_private.find_project(v_tenant, train.project);
    v_dataset ml.datasets := ml_private.find_training_dataset(v_tenant, train.dataset, v_project);
    v_options jsonb;
begin
    perform ml_private.check_hyperparams(train.algorithm, v_project.task, coalesce(train.hyperparams, '{}'));
    v_options := ml_private.normalize_train_options(v_project, coalesce(train.options, '{}'));
    return ml_private.enqueue_job('train',
        jsonb_build_object('project_id', v_project.id, 'dataset_id', v_dataset.id, 'algorithm', train.algorithm,
                           'hyperparams', coalesce(train.hyperparams, '{}'), 'options', v_options),
        0, now(), null);
end
$$;

------------------------------------------------------------------------------------------------
-- Worker side: runs
------------------------------------------------------------------------------------------------

-- ml_private.assert_service(p_what text): raises 42501 unless the caller is a service caller
-- (workers). The worker-side functions are granted to service_role only; this also keeps out
-- a direct connection carrying a user's claims.
create function ml_private.assert_service(p_what text) returns void
language plpgsql stable
set search_path = ''
as $$
begin
    if not ml_private.caller_is_service() then
        raise exception '% is for workers: only a service caller may call it', p_what using errcode = '42501';
    end if;
end
$$;

-- ml_private.find_run(p_tenant uuid, p_run uuid, p_lock boolean default false) returns ml.runs
-- The run p_run of p_tenant (locked FOR UPDATE with p_lock). Raises P0002 when there is none.
create function ml_private.find_run(p_tenant uuid, p_run uuid, p_lock boolean default false) returns ml.runs
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_run ml.runs;
begin
    if p_lock then
        select * into v_run from ml.runs r where r.tenant_id = p_tenant and r.id = p_run for update;
    else
        select * into v_run from ml.runs r where r.tenant_id = p_tenant and r.id = p_run;
    end if;
    if not found then
        raise exception 'run % does not exist', coalesce(p_run::text, 'NULL') using errcode = 'P0002';
    end if;
    return v_run;
end
$$;

-- ml.start_run(project_id uuid, job_id bigint, algorithm text, hyperparams jsonb, options jsonb,
--              dataset_id uuid, library_versions jsonb, study_id uuid default null,
--              trial_number int default null) returns uuid
-- Records a run that starts now (status running) for the acting tenant and returns its id.
-- dataset_hash is copied from the dataset; code_version is library_versions ->> 'code_version'
-- when given, else library_versions ->> 'pgmlops'. Records lineage dataset -> run.
-- job_id may be NULL (a fit outside the queue); otherwise the job must be the tenant's.
-- Raises 22023 unknown algorithm, hyperparams/options/library_versions not objects, negative
-- trial_number; P0002 unknown project, dataset or job; 42501 not a service caller.
-- Callers: service_role (workers, in the job's transaction).
create function ml.start_run(project_id uuid, job_id bigint, algorithm text, hyperparams jsonb, options jsonb,
                             dataset_id uuid, library_versions jsonb, study_id uuid default null,
                             trial_number int default null)
returns uuid
language plpgsql volatile security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_tenant  uuid;
    v_project ml.projects;
    v_dataset ml.datasets;
    v_id      uuid;
    v_name    text;
    v_value   jsonb;
begin
    perform ml_private.assert_service('ml.start_run');
    v_tenant := ml_private.acting_tenant_id(true);
    select * into v_project from ml.projects p where p.tenant_id = v_tenant and p.id = start_run.project_id;
    if not found then
        raise exception 'project % does not exist', coalesce(start_run.project_id::text, 'NULL') using errcode = 'P0002';
    end if;
    perform ml_private.find_algorithm(start_run.algorithm);
    foreach v_name in array array['hyperparams', 'options', 'library_versions'] loop
        v_value := case v_name when 'hyperparams' then start_run.hyperparams when 'options' then start_run.options
                               else start_run.library_versions end;
        if v_value is not null and jsonb_typeof(v_value) <> 'object' then
            raise exception '%: must be a JSON object, got %', v_name, jsonb_typeof(v_value) using errcode = '22023';
        end if;
    end loop;
    if start_run.trial_number < 0 then
        raise exception 'trial_number: must be >= 0, got %', start_run.trial_number using errcode = '22023';
    end if;
    if start_run.dataset_id is not null then
        select * into v_dataset from ml.datasets d where d.tenant_id = v_tenant and d.id = start_run.dataset_id;
        if not found then
            raise exception 'dataset % does not exist', start_run.dataset_id using errcode = 'P0002';
        end if;
    end if;
    if start_run.job_id is not null
       and not exists (select 1 from ml.jobs j where j.id = start_run.job_id and j.tenant_id = v_tenant) then
        raise exception 'job % does not exist', start_run.job_id using errcode = 'P0002';
    end if;

    insert into ml.runs (tenant_id, project_id, job_id, study_id, trial_number, algorithm, hyperparams, options,
                         dataset_id, dataset_hash, library_versions, code_version)
    values (v_tenant, v_project.id, start_run.job_id, start_run.study_id, start_run.trial_number, start_run.algorithm,
            coalesce(start_run.hyperparams, '{}'), coalesce(start_run.options, '{}'),
            v_dataset.id, v_dataset.content_hash, coalesce(start_run.library_versions, '{}'),
            coalesce(start_run.library_versions ->> 'code_version', start_run.library_versions ->> 'pgmlops'))
    returning id into v_id;

    if v_dataset.id is not null then
        perform ml_private.record_lineage(v_tenant, 'dataset', v_dataset.id, 'run', v_id, 'trained_on');
    end if;
    return v_id;
end
$$;

-- ml.log_run_metrics(run_id uuid, step int, metrics jsonb) returns int
-- Records the values of one step of a running run: one ml.run_metrics row per name in
-- `metrics` ({"val_loss": 0.31, "val_roc_auc": 0.92}); a name logged again at the same step
-- adds a row (the latest wins when read). Returns the number of rows written.
-- Raises 22023 step < 0, metrics not an object of numbers (or nulls); P0002 unknown run;
-- 55000 the run has finished; 42501 not a service caller. Callers: service_role (workers).
create function ml.log_run_metrics(run_id uuid, step int, metrics jsonb) returns int
language plpgsql volatile security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_tenant uuid;
    v_run    ml.runs;
    v_bad    text;
    v_count  int;
begin
    perform ml_private.assert_service('ml.log_run_metrics');
    v_tenant := ml_private.acting_tenant_id(true);
    v_run := ml_private.find_run(v_tenant, log_run_metrics.run_id);
    if step is null or step < 0 then
        raise exception 'step: must be >= 0, got %', coalesce(step::text, 'NULL') using errcode = '22023';
    end if;
    if metrics is null or jsonb_typeof(metrics) <> 'object' then
        raise exception 'metrics: must be a JSON object of numbers, got %', coalesce(jsonb_typeof(metrics), 'NULL')
            using errcode = '22023';
    end if;
    select min(m.key) into v_bad from jsonb_each(metrics) m where jsonb_typeof(m.value) not in ('number', 'null');
    if v_bad is not null then
        raise exception 'metrics: $.%: must be a number, got %', v_bad, jsonb_typeof(metrics -> v_bad) using errcode = '22023';
    end if;
    if v_run.status <> 'running' then
        raise exception 'run % has finished (%): metrics refused', v_run.id, v_run.status using errcode = '55000';
    end if;

    insert into ml.run_metrics (tenant_id, run_id, step, name, value, at)
    select v_tenant, v_run.id, step, m.key, (m.value #>> '{}')::float8, clock_timestamp()
    from jsonb_each(metrics) m;
    get diagnostics v_count = row_count;
    return v_count;
end
$$;

-- ml.finish_run(run_id uuid, status text, metrics jsonb, train_seconds float8, model_size_bytes bigint,
--               inference_latency_ms float8, error text default null) returns void
-- Ends a running run: status succeeded, failed or pruned, its final metrics (an object: numbers
-- for gates and leaderboards; other values are kept as they are), timings and sizes, and the
-- error of a failed run. Publishes 'run.<status>' (topic 'models').
-- Raises 22023 bad status, metrics not an object, negative timings or sizes; P0002 unknown run;
-- 55000 the run has already finished; 42501 not a service caller. Callers: service_role.
create function ml.finish_run(run_id uuid, status text, metrics jsonb, train_seconds float8, model_size_bytes bigint,
                              inference_latency_ms float8, error text default null)
returns void
language plpgsql volatile security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_tenant uuid;
    v_run    ml.runs;
begin
    perform ml_private.assert_service('ml.finish_run');
    v_tenant := ml_private.acting_tenant_id(true);
    if status is null or status not in ('succeeded', 'failed', 'pruned') then
        raise exception 'status: must be one of succeeded, failed, pruned; got %', coalesce(quote_literal(status), 'NULL')
            using errcode = '22023';
    end if;
    if metrics is not null and jsonb_typeof(metrics) <> 'object' then
        raise exception 'metrics: must be a JSON object, got %', jsonb_typeof(metrics) using errcode = '22023';
    end if;
    if train_seconds < 0 or model_size_bytes < 0 or inference_latency_ms < 0 then
        raise exception 'train_seconds, model_size_bytes, inference_latency_ms: must not be negative'
            using errcode = '22023';
    end if;
    v_run := ml_private.find_run(v_tenant, finish_run.run_id, true);
    if v_run.status <> 'running' then
        raise exception 'run % has already finished (%)', v_run.id, v_run.status using errcode = '55000';
    end if;

    update ml.runs r set
        status = finish_run.status, metrics = coalesce(finish_run.metrics, '{}'),
        train_seconds = finish_run.train_seconds, model_size_bytes = finish_run.model_size_bytes,
        inference_latency_ms = finish_run.inference_latency_ms, error = left(finish_run.error, 10000),
        finished_at = clock_timestamp()
    where r.id = v_run.id;

    perform ml_private.publish(v_tenant, 'models', 'run.' || status, jsonb_strip_nulls(jsonb_build_object(
        'run_id', v_run.id, 'project_id', v_run.project_id, 'job_id', v_run.job_id, 'study_id', v_run.study_id,
        'trial_number', v_run.trial_number, 'algorithm', v_run.algorithm, 'error', left(error, 500))));
end
$$;

------------------------------------------------------------------------------------------------
-- Lineage kinds
------------------------------------------------------------------------------------------------

select ml_private.register_lineage_kind('project',
    'select p.id, p.name from ml.projects p where p.tenant_id = $1 and p.id = any ($2)',
    'an ML project');
select ml_private.register_lineage_kind('run',
    'select r.id, p.name || '' '' || r.algorithm || '' run '' || left(r.id::text, 8)
     from ml.runs r join ml.projects p on p.id = r.project_id where r.tenant_id = $1 and r.id = any ($2)',
    'a training run (project algorithm run <id prefix>)');

------------------------------------------------------------------------------------------------
-- Grants
------------------------------------------------------------------------------------------------

grant execute on function
    ml.create_project(text, text, text, text),
    ml.train(text, uuid, text, jsonb, jsonb)
to authenticated, service_role;
grant execute on function
    ml.start_run(uuid, bigint, text, jsonb, jsonb, uuid, jsonb, uuid, int),
    ml.log_run_metrics(uuid, int, jsonb),
    ml.finish_run(uuid, text, jsonb, float8, bigint, float8, text),
    ml_private.find_algorithm(text, text),
    ml_private.algorithm_hyperparams_schema(text, text),
    ml_private.check_hyperparams(text, text, jsonb),
    ml_private.find_project(uuid, text),
    ml_private.find_training_dataset(uuid, uuid, ml.projects),
    ml_private.train_options_schema(),
    ml_private.normalize_train_options(ml.projects, jsonb, jsonb),
    ml_private.assert_service(text),
    ml_private.find_run(uuid, uuid, boolean)
to service_role;
