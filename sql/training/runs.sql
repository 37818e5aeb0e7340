-- pgmlops: training — projects, ml.train and runs with their metrics
--
-- A project names what is learned: its task (classification, regression, anomaly_detection) and
-- its target (the label column of the datasets it trains on). ml.train checks everything a
-- client can get wrong (project, dataset, algorithm, hyperparameters, options) in SQL, so every
-- client meets the same rules and nothing is queued that a worker would refuse, then enqueues a
-- `train` job. The worker's handler (pgmlops.training) loads the dataset, fits, and records what
-- happened through the worker-side functions below, inside the job's transaction:
--
--   ml.start_run(...)        -> run id                    ml.runs: status running
--   ml.log_run_metrics(...)  per-step values              ml.run_metrics (time-partitioned)
--   ml.finish_run(...)       succeeded | failed | pruned  ml.runs: metrics, timings, sizes
--   ml.register_model_version(...)                        sql/models/registry.sql

------------------------------------------------------------------------------------------------
-- Helpers: projects, datasets, options
------------------------------------------------------------------------------------------------

-- ml_private.find_project(p_tenant uuid, p_name text) returns ml.projects
-- The project p_name of p_tenant. Raises P0002 when there is none.
create or replace function ml_private.find_project(p_tenant uuid, p_name text) returns ml.projects
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
create or replace function ml_private.find_training_dataset(p_tenant uuid, p_dataset uuid, p_project ml.projects) returns ml.datasets
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
-- learning_curve (boolean, absent = false): evaluate the held-out metric at up to 25 steps of
-- iterative learners and forests and log them to ml.run_metrics; off by default because it
-- costs up to a fifth of a boosting fit (tuning trials always log it: the pruner needs it).
create or replace function ml_private.train_options_schema() returns jsonb
language sql immutable
set search_path = ''
as $$
    select $j${"type": "object", "additionalProperties": false, "properties": {
        "split":        {"type": "string", "enum": ["random", "stratified", "time"]},
        "test_size":    {"type": "number", "minimum": 0.05, "maximum": 0.5},
        "cv_folds":     {"type": ["integer", "null"], "minimum": 2, "maximum": 20},
        "random_state": {"type": "integer", "minimum": 0, "maximum": 4294967295},
        "model":        {"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,62}$"},
        "tags":         {"type": "object"},
        "learning_curve": {"type": "boolean"}
    }}$j$::jsonb
$$;

-- ml_private.normalize_train_options(p_project ml.projects, p_options jsonb,
--                                    p_extra_properties jsonb default '{}') returns jsonb
-- p_options checked against ml.train's options schema (plus p_extra_properties, a JSON Schema
-- `properties` object: ml.tune's own options) and completed with the defaults: split
-- (stratified for classification, else random), test_size 0.2, cv_folds null, random_state 42,
-- model (the project's name), tags {}. Extra options are returned as given.
-- Raises 22023 naming the option and the rule; a stratified split outside classification.
create or replace function ml_private.normalize_train_options(p_project ml.projects, p_options jsonb,
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
create or replace function ml.create_project(name text, task text, target text, description text default null) returns uuid
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
--                ({}); learning_curve boolean (absent: no per-step metrics):
--                'options: $.<name>: <rule>' (22023)
-- The job's payload is {project_id, dataset_id, algorithm, hyperparams, options} with the
-- options completed by their defaults. Also raises 42501 for viewers and non-members.
-- Callers: authenticated (owner, admin, ml_engineer), service_role.
create or replace function ml.train(project text, dataset uuid, algorithm text, hyperparams jsonb default '{}',
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
create or replace function ml_private.assert_service(p_what text) returns void
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
create or replace function ml_private.find_run(p_tenant uuid, p_run uuid, p_lock boolean default false) returns ml.runs
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
create or replace function ml.start_run(project_id uuid, job_id bigint, algorithm text, hyperparams jsonb, options jsonb,
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
create or replace function ml.log_run_metrics(run_id uuid, step int, metrics jsonb) returns int
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
create or replace function ml.finish_run(run_id uuid, status text, metrics jsonb, train_seconds float8, model_size_bytes bigint,
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
    ml_private.find_project(uuid, text),
    ml_private.find_training_dataset(uuid, uuid, ml.projects),
    ml_private.train_options_schema(),
    ml_private.normalize_train_options(ml.projects, jsonb, jsonb),
    ml_private.assert_service(text),
    ml_private.find_run(uuid, uuid, boolean)
to service_role;
