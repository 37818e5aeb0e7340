-- pgmlops: training — the algorithms
--
-- Algorithms are a global registry (ml.algorithms, filled by the versioned migrations): each with
-- its tasks, library and a JSON Schema of its hyperparameters, checked by
-- ml_private.assert_json_valid. The names in the schemas are the estimators' own parameter names
-- (scikit-learn's, or those of the torch models in pgmlops.training), so a valid hyperparameter
-- object is passed to the estimator as it is. Two pgmlops keywords extend the schemas (the
-- validator ignores unknown keywords; they are applied by ml_private.algorithm_hyperparams_schema
-- before validation):
--   "x-tasks": [task, ...]            the parameter exists only for these tasks (e.g.
--                                     class_weight: classification)
--   "x-enum-by-task": {task: [...]}   the allowed values depend on the task (e.g. criterion)
-- and one is checked by ml_private.check_hyperparams after it:
--   "x-fraction-at-most": 1           a number with a fractional part is a fraction and must be
--                                     at most this (max_features: 5 features, or 0.5 of them)

------------------------------------------------------------------------------------------------
-- Rights on ml.algorithms
------------------------------------------------------------------------------------------------

revoke all on ml.algorithms from public, anon;
grant select on ml.algorithms to authenticated, service_role;

------------------------------------------------------------------------------------------------
-- Algorithms
------------------------------------------------------------------------------------------------

-- ml_private.register_algorithm(p_name, p_tasks, p_library, p_iterative, p_description,
--                               p_hyperparams_schema) returns void
-- Registers or updates an algorithm. Called by migrations; owner only. Raises 23514 on a bad
-- name, task or library.
create or replace function ml_private.register_algorithm(
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
create or replace function ml_private.find_algorithm(p_name text, p_task text default null) returns ml.algorithms
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
create or replace function ml_private.algorithm_hyperparams_schema(p_algorithm text, p_task text) returns jsonb
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
create or replace function ml_private.check_hyperparams(p_algorithm text, p_task text, p_hyperparams jsonb) returns void
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

------------------------------------------------------------------------------------------------
-- Grants
------------------------------------------------------------------------------------------------

grant execute on function
    ml_private.find_algorithm(text, text),
    ml_private.algorithm_hyperparams_schema(text, text),
    ml_private.check_hyperparams(text, text, jsonb)
to service_role;
