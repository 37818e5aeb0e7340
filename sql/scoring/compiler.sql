-- pgmlops: scoring — models compiled to SQL
--
-- A registered model version whose whole pipeline can be written in SQL (the training set's
-- frozen transformations, the pipeline's preprocessing and the estimator) gets a function
--
--     ml_models.mv_<the version's id as 32 hex digits>(num float8[], cat text[]) returns jsonb
--
-- in pure SQL: language sql, immutable, parallel safe, with a SQL-standard body (RETURN ...),
-- which PostgreSQL parses once, when the function is created, and stores resolved: running it
-- looks up no name, so no search_path can change what it calls. Schema ml_models is granted to
-- no client role; ml.predict (security definer) checks the tenant and calls the function.
--
-- Security: no SQL text a client could have written is ever executed. The worker sends a
-- structured description of the fitted pipeline (JSON: coefficients, tree nodes, preprocessing
-- constants; pgmlops.scoring builds it) to ml.install_compiled_model, and the functions below
-- write the SQL themselves: every number is read as a JSON number, cast to float8 or int and
-- rendered from that typed value (format('float8 %L', v::float8)), every string is quoted by
-- format('%L'), the function's name comes from the version's uuid through format('%I'), and the
-- inputs' expressions come from the version's signature and the training set's transformations
-- (ml_private.transformation_sql), never from the description. docs/scoring.md has the argument.
--
-- Calling convention: `num` holds the numeric inputs (int, float, timestamps as seconds since
-- the epoch, vectors element by element, window aggregates), `cat` the categorical ones (text
-- and categories as text, bools as 'true' / 'false'), each at the position the version's
-- scoring.arguments names; NULL is a missing value (ml_private.compiled_arguments builds both
-- arrays from a JSON object of raw values). The result:
--   classification     {"prediction": label, "probabilities": [p per class, in the signature's
--                       class order], "decision_function": s or [s per class]} (probabilities
--                       when the estimator has predict_proba, decision_function when it has one)
--   regression         {"prediction": y}
--   anomaly_detection  {"score_samples": s, "decision_function": d, "anomaly_score": -s,
--                       "is_anomaly": d < 0, "prediction": -1 or 1}
--
-- Representation: trees are nested CASE expressions compared against float8 thresholds that
-- pgmlops.scoring folded through the preprocessing (exactly: scikit-learn's float32 cast is
-- part of the fold), summed in the estimator's own order; linear models are sums of products;
-- MLPs are dense layers over arrays (ml_private.compiled_dense). The body is one expression, so
-- PostgreSQL inlines the function into the query that calls it and prepares the model once per
-- query, not once per row.

------------------------------------------------------------------------------------------------
-- Results: what a compiled function returns, from the estimator's scores
------------------------------------------------------------------------------------------------
-- The helpers that run queries of their own set jit = off: the planner estimates 1000 rows for
-- generate_series / unnest of a parameter, so their tiny queries look expensive enough for JIT,
-- and compiling them with LLVM at every call made a 3-layer MLP take 100 ms per row. (A SET
-- clause keeps a function from being inlined; these have subqueries and never are.)
--
-- The result helpers (compiled_regression, _binary, _pair, _classes, _isolation_forest) pin
-- extra_float_digits, so they cannot be inlined, and are PL/pgSQL: a language sql function that
-- is not inlined keeps its parsed and planned body only for the query that calls it, so every
-- ml.predict (one query per transaction) parsed and planned it again (0.2-0.3 ms a call), while
-- PL/pgSQL keeps its compiled body and its expressions' plans for the session. They set
-- search_path = '' as well: a PL/pgSQL body looks names up when it runs, and the compiled
-- functions promise that no search path changes what they call.

-- ml_private.compiled_expit(p_x float8) returns float8
-- The logistic function 1 / (1 + exp(-x)) (scipy.special.expit), without PostgreSQL's range
-- errors: exp() raises on underflow, so |x| > 708 gives 0 or 1 (the true value is within
-- 1e-307 of it). Called by compiled functions.
create or replace function ml_private.compiled_expit(p_x float8) returns float8
language sql immutable parallel safe
return case when p_x < -708 then 0::float8 when p_x > 708 then 1::float8 else 1 / (1 + exp(-p_x)) end;

-- ml_private.compiled_exp(p_x float8) returns float8
-- exp(x), 0 below -708 (where exp() would raise an underflow error; the true value is under
-- 1e-307). Called by compiled functions (log-link regressors).
create or replace function ml_private.compiled_exp(p_x float8) returns float8
language sql immutable parallel safe
return case when p_x < -708 then 0::float8 else exp(p_x) end;

-- ml_private.compiled_sum(p_terms float8[]) returns float8
-- The sum of p_terms added one by one in array order (as scikit-learn adds its trees), for sums
-- too long to write as a + b + c ...: a chain of 1000 terms nests 1000 levels deep, and
-- PostgreSQL's parser and planner recurse through it (max_stack_depth). Called by compiled
-- functions.
create or replace function ml_private.compiled_sum(p_terms float8[]) returns float8
language sql immutable parallel safe
set jit = off
return (select sum(t.v order by t.i) from unnest(p_terms) with ordinality t (v, i));

-- ml_private.compiled_real(p_x float8[]) returns float8[]
-- Each value rounded to float32 and back (numpy's astype(float32)), as torch models see their
-- input and give their output. Magnitudes under 1e-45, which float4 rounds to zero and
-- PostgreSQL refuses with an underflow error, become 0. Called by compiled functions.
create or replace function ml_private.compiled_real(p_x float8[]) returns float8[]
language sql immutable parallel safe
set jit = off
return (select array_agg(case when abs(t.v) < 1e-45 then 0::float8 else t.v::float4::float8 end order by t.i)
        from unnest(p_x) with ordinality t (v, i));

-- ml_private.compiled_dense(p_x float8[], p_weights float8[], p_bias float8[], p_activation text)
-- returns float8[]
-- One dense layer: activation(W x + b), W given row by row (p_weights[(o - 1) * n + i] is the
-- weight of input i in output o, n = cardinality(p_x)). Activations: identity, relu, tanh,
-- logistic. Each output's products are added in input order. Called by compiled functions.
create or replace function ml_private.compiled_dense(p_x float8[], p_weights float8[], p_bias float8[], p_activation text)
returns float8[]
language sql immutable parallel safe
set jit = off
return (
    select array_agg(case p_activation
                         when 'relu' then greatest(l.v, 0::float8)
                         when 'tanh' then tanh(l.v)
                         when 'logistic' then ml_private.compiled_expit(l.v)
                         else l.v end order by l.o)
    -- One correlated sum per output: a GROUP BY over outputs x inputs is planned for a million
    -- rows (generate_series of a parameter) and runs a hundred times slower.
    from (select o.o, (select sum(p_weights[(o.o - 1) * cardinality(p_x) + i.i] * p_x[i.i])
                       from generate_series(1, cardinality(p_x)) i (i)) + p_bias[o.o] as v
          from generate_series(1, cardinality(p_bias)) o (o)) l);

-- ml_private.compiled_regression(p_prediction float8) returns jsonb
-- A regressor's result: {"prediction": p}. Declared immutable (jsonb_build_object is only stable:
-- it prints numbers with float8out, which reads extra_float_digits, pinned here), so that the
-- compiled functions calling it stay immutable and inlinable. Called by compiled functions.
create or replace function ml_private.compiled_regression(p_prediction float8) returns jsonb
language plpgsql immutable parallel safe
set search_path = ''
set extra_float_digits = 1
as $$
begin
    return jsonb_build_object('prediction', p_prediction);
end
$$;

-- ml_private.compiled_binary(p_score float8, p_labels jsonb, p_probability text, p_label text,
--                            p_decision boolean) returns jsonb
-- A binary classifier's result from its one score s (the decision function), as scikit-learn's
-- predict_proba and predict compute them: {"prediction", "probabilities", "decision_function"}.
--   p_labels       the two classes, in the estimator's order (a JSON array)
--   p_probability  sigmoid and ovr (p = expit(s)), sigmoid2 (expit(2s): gradient boosting's
--                  exponential loss), modified_huber ((clip(s, -1, 1) + 1) / 2), none (no
--                  probabilities); probabilities are [1 - p, p]
--   p_label        gt0 (s > 0), ge0 (s >= 0), gt_half (p > 0.5)
--   p_decision     include decision_function
-- Scalar, without a query of its own, so a call costs microseconds. Called by compiled functions.
create or replace function ml_private.compiled_binary(p_score float8, p_labels jsonb, p_probability text, p_label text,
                                                     p_decision boolean)
returns jsonb
language plpgsql immutable parallel safe
set search_path = ''
set extra_float_digits = 1
as $$
begin
    return jsonb_strip_nulls(jsonb_build_object(
    'prediction', p_labels -> (case p_label
        when 'gt0' then (p_score > 0)::int
        when 'ge0' then (p_score >= 0)::int
        when 'gt_half' then (ml_private.compiled_expit(p_score) > 0.5)::int end),
    'probabilities', case p_probability
        when 'sigmoid' then jsonb_build_array(1 - ml_private.compiled_expit(p_score), ml_private.compiled_expit(p_score))
        when 'ovr' then jsonb_build_array(1 - ml_private.compiled_expit(p_score), ml_private.compiled_expit(p_score))
        when 'sigmoid2' then jsonb_build_array(1 - ml_private.compiled_expit(2 * p_score), ml_private.compiled_expit(2 * p_score))
        when 'modified_huber' then jsonb_build_array(1 - (least(greatest(p_score, -1::float8), 1::float8) + 1) / 2,
                                                     (least(greatest(p_score, -1::float8), 1::float8) + 1) / 2) end,
    'decision_function', case when p_decision then to_jsonb(p_score) end));
end
$$;

-- ml_private.compiled_pair(p_first float8, p_second float8, p_labels jsonb) returns jsonb
-- A two-class result from its two probabilities (trees and forests): {"prediction": the class
-- of the larger (the first on a tie, as numpy.argmax), "probabilities": [p_first, p_second]}.
-- Called by compiled functions.
create or replace function ml_private.compiled_pair(p_first float8, p_second float8, p_labels jsonb) returns jsonb
language plpgsql immutable parallel safe
set search_path = ''
set extra_float_digits = 1
as $$
begin
    return jsonb_build_object('prediction', p_labels -> (p_second > p_first)::int,
                              'probabilities', jsonb_build_array(p_first, p_second));
end
$$;

-- ml_private.compiled_classes(p_scores float8[], p_labels jsonb, p_probability text, p_label text,
--                             p_decision boolean) returns jsonb
-- A classifier's result from one score per class: {"prediction", "probabilities",
-- "decision_function"}, as scikit-learn computes them:
--   p_probability  identity (the scores are the probabilities), softmax (exp(s - max) / their
--                  sum), ovr (expit of each, normalized; all zero: uniform), modified_huber
--                  ((clip(s, -1, 1) + 1) / 2, normalized likewise), none (no probabilities)
--   p_label        argmax_scores or argmax_proba: the class of the first largest (numpy.argmax)
--   p_decision     include decision_function (the scores)
-- One query (a CTE per step), so a call pays one executor start. Called by compiled functions.
create or replace function ml_private.compiled_classes(p_scores float8[], p_labels jsonb, p_probability text, p_label text,
                                                      p_decision boolean)
returns jsonb
language plpgsql immutable parallel safe
set search_path = ''
set extra_float_digits = 1
set jit = off
as $$
begin
    return (
    with s as (select u.v, u.i from unnest(p_scores) with ordinality u (v, i)),
    t as (select s.i, s.v as score, case p_probability
                          when 'softmax' then case when s.v - max(s.v) over () < -708 then 0::float8
                                                   else exp(s.v - max(s.v) over ()) end
                          when 'ovr' then ml_private.compiled_expit(s.v)
                          when 'modified_huber' then (least(greatest(s.v, -1::float8), 1::float8) + 1) / 2
                          else s.v end as v
          from s),
    n as (select sum(t.v order by t.i) as total, count(*) as k from t),
    p as (select t.i, t.score, case when p_probability in ('identity', 'none') then t.v
                                    when n.total = 0 then 1::float8 / n.k
                                    else t.v / n.total end as v
          from t cross join n)
    select jsonb_strip_nulls(jsonb_build_object(
        'prediction', p_labels -> (select (p.i - 1)::int from p
                                   order by case when p_label = 'argmax_scores' then p.score else p.v end desc, p.i limit 1),
        'probabilities', case when p_probability <> 'none' then (select jsonb_agg(p.v order by p.i) from p) end,
        'decision_function', case when p_decision then to_jsonb(p_scores) end)));
end
$$;

-- ml_private.compiled_isolation_forest(p_depth float8, p_denominator float8, p_offset float8)
-- returns jsonb
-- An isolation forest's result from the sum over its trees of (depth of the leaf reached +
-- average path length of the leaf's samples - 1): score_samples = -2^(-depth / denominator)
-- (denominator: trees x average path length of max_samples; 0 gives -0.5, as scikit-learn),
-- decision_function = score_samples - offset, anomaly_score = -score_samples, is_anomaly =
-- decision_function < 0, prediction -1 (anomaly) or 1. Called by compiled functions.
create or replace function ml_private.compiled_isolation_forest(p_depth float8, p_denominator float8, p_offset float8)
returns jsonb
language plpgsql immutable parallel safe
set search_path = ''
set extra_float_digits = 1
as $$
begin
    return jsonb_build_object(
    'score_samples', -power(2::float8, case when p_denominator = 0 then -1::float8 else -(p_depth / p_denominator) end),
    'decision_function', -power(2::float8, case when p_denominator = 0 then -1::float8 else -(p_depth / p_denominator) end) - p_offset,
    'anomaly_score', power(2::float8, case when p_denominator = 0 then -1::float8 else -(p_depth / p_denominator) end),
    'is_anomaly', -power(2::float8, case when p_denominator = 0 then -1::float8 else -(p_depth / p_denominator) end) - p_offset < 0,
    'prediction', case when -power(2::float8, case when p_denominator = 0 then -1::float8 else -(p_depth / p_denominator) end)
                            - p_offset < 0 then -1 else 1 end);
end
$$;

------------------------------------------------------------------------------------------------
-- The compiler: from a version's signature, training set and description to SQL text
------------------------------------------------------------------------------------------------

-- ml_private.compiled_model_name(p_model_version uuid) returns text
-- The name, in schema ml_models, of a version's compiled function: mv_<uuid as 32 hex digits>.
create or replace function ml_private.compiled_model_name(p_model_version uuid) returns text
language sql immutable parallel safe
return 'mv_' || replace(p_model_version::text, '-', '');

-- ml_private.compiled_model_inputs(p_signature jsonb, p_dataset uuid) returns jsonb
-- How a compiled function reads its inputs: {"arguments": [{name, dtype, array, index, length}],
-- "numeric": [SQL expression of each numeric model input], "categorical": [...]}. The model
-- inputs are the columns the pipeline's InputFrame step gives its preprocessing, in its order:
-- numeric inputs (int, float, timestamp, each element of a vector) then categorical ones
-- (text, bool). The arguments are the raw columns the caller passes in `num` / `cat` (`index`
-- 1-based, `length` for vectors): the signature's inputs, or, for a version trained on a
-- training set with transformations, the raw columns those read (features, event_time,
-- window-aggregate outputs, which only a caller can compute) with the transformations applied
-- by the same expressions that built the training set (ml_private.transformation_sql).
-- Raises 22023 for a signature or transformation it cannot express.
create or replace function ml_private.compiled_model_inputs(p_signature jsonb, p_dataset uuid) returns jsonb
language plpgsql stable
set search_path = ''
set extra_float_digits = 1
as $$
declare
    v_ds        ml.datasets;
    v_inputs    jsonb := coalesce(p_signature -> 'inputs', '[]');
    v_raw       jsonb := '[]';
    v_args      jsonb := '[]';
    v_slots     jsonb := '{}';   -- raw column name -> {array, index, length}
    v_exprs     jsonb := '{}';   -- column name -> typed SQL expression
    v_numeric   jsonb := '[]';
    v_categorical jsonb := '[]';
    v_c         jsonb;
    v_spec      jsonb;
    v_o         jsonb;
    v_needed    text[];
    v_dtype     text;
    v_len       int;
    v_num       int := 0;
    v_cat       int := 0;
    v_slot      jsonb;
    v_i         int;
begin
    if jsonb_typeof(v_inputs) <> 'array' or jsonb_array_length(v_inputs) = 0 then
        raise exception 'signature: inputs must be a non-empty array' using errcode = '22023';
    end if;
    if p_dataset is not null then
        select * into v_ds from ml.datasets d where d.id = p_dataset;
    end if;

    -- The raw columns: the signature's inputs, or the training set's columns the inputs and the
    -- transformations read.
    if v_ds.id is null or jsonb_array_length(v_ds.transformations) = 0 then
        v_raw := v_inputs;
    else
        v_needed := array(select i ->> 'name' from jsonb_array_elements(v_inputs) i)
                    || array(select s ->> 'column' from jsonb_array_elements(v_ds.transformations) s where s ? 'column');
        select coalesce(jsonb_agg(jsonb_build_object('name', c ->> 'name', 'dtype',
                   coalesce((select i ->> 'dtype' from jsonb_array_elements(v_inputs) i where i ->> 'name' = c ->> 'name'),
                            case c ->> 'role' when 'event_time' then 'timestamp'
                                 when 'aggregate' then case c ->> 'type' when 'bigint' then 'int' else 'float' end
                                 else c ->> 'dtype' end)) order by n), '[]')
        into v_raw
        from jsonb_array_elements(v_ds.columns) with ordinality x (c, n)
        where c ->> 'role' in ('feature', 'event_time', 'aggregate') and (c ->> 'name') = any (v_needed);
    end if;

    -- Their places in num / cat, and their typed expressions (as ml.apply_transformations types them).
    for v_c in select value from jsonb_array_elements(v_raw) loop
        v_dtype := v_c ->> 'dtype';
        if v_dtype ~ '^vector\(([1-9][0-9]{0,5})\)$' then
            v_len := substring(v_dtype from '^vector\(([0-9]+)\)$')::int;
            v_slot := jsonb_build_object('array', 'num', 'index', v_num + 1, 'length', v_len);
            v_exprs := v_exprs || jsonb_build_object(v_c ->> 'name', format('num[%s:%s]', v_num + 1, v_num + v_len));
            v_num := v_num + v_len;
        elsif v_dtype in ('int', 'float', 'timestamp') then
            v_num := v_num + 1;
            v_slot := jsonb_build_object('array', 'num', 'index', v_num);
            v_exprs := v_exprs || jsonb_build_object(v_c ->> 'name', case v_dtype
                when 'int' then format('(num[%s])::bigint', v_num)
                when 'float' then format('num[%s]', v_num)
                else format('pg_catalog.to_timestamp(num[%s])', v_num) end);
        elsif v_dtype in ('text', 'category', 'bool') then
            v_cat := v_cat + 1;
            v_slot := jsonb_build_object('array', 'cat', 'index', v_cat);
            v_exprs := v_exprs || jsonb_build_object(v_c ->> 'name', case v_dtype
                when 'bool' then format('(cat[%s])::boolean', v_cat) else format('cat[%s]', v_cat) end);
        else
            raise exception 'signature: input % has dtype %, which a compiled model cannot take', v_c ->> 'name', v_dtype
                using errcode = '22023';
        end if;
        v_slots := v_slots || jsonb_build_object(v_c ->> 'name', v_slot);
        v_args := v_args || jsonb_build_array(jsonb_build_object('name', v_c ->> 'name', 'dtype', v_dtype) || v_slot);
    end loop;

    -- The transformations, in order (window aggregates are arguments: a caller computes them).
    if v_ds.id is not null then
        for v_spec in select value from jsonb_array_elements(v_ds.transformations) where value ->> 'type' <> 'window_aggregate' loop
            for v_o in select value from jsonb_array_elements(ml_private.transformation_sql(v_spec, v_exprs)) loop
                v_exprs := v_exprs || jsonb_build_object(v_o ->> 'name', v_o ->> 'expr');
            end loop;
        end loop;
    end if;

    -- The model inputs, as InputFrame makes them: numeric ones first, then categorical ones.
    for v_c in select value from jsonb_array_elements(v_inputs) loop
        v_dtype := v_c ->> 'dtype';
        v_slot := v_slots -> (v_c ->> 'name');
        if v_dtype ~ '^vector\(' then
            if v_slot is null then
                raise exception 'signature: input % (%) is not a column of the training set', v_c ->> 'name', v_dtype using errcode = '22023';
            end if;
            for v_i in 0 .. (v_slot ->> 'length')::int - 1 loop
                v_numeric := v_numeric || to_jsonb(format('num[%s]', (v_slot ->> 'index')::int + v_i));
            end loop;
        elsif v_dtype in ('int', 'float', 'timestamp') then
            v_numeric := v_numeric || to_jsonb(case when v_slot is not null then format('num[%s]', v_slot ->> 'index')
                                                    when v_dtype <> 'timestamp' and v_exprs ? (v_c ->> 'name')
                                                        then format('((%s)::double precision)', v_exprs ->> (v_c ->> 'name')) end);
        end if;
    end loop;
    for v_c in select value from jsonb_array_elements(v_inputs) loop
        v_dtype := v_c ->> 'dtype';
        continue when v_dtype not in ('text', 'category', 'bool');
        v_slot := v_slots -> (v_c ->> 'name');
        v_categorical := v_categorical || to_jsonb(case when v_slot is not null then format('cat[%s]', v_slot ->> 'index') end);
    end loop;
    if exists (select 1 from jsonb_array_elements(v_numeric || v_categorical) e where jsonb_typeof(e) = 'null') then
        raise exception 'signature: an input is neither a column of the training set nor a transformation output' using errcode = '22023';
    end if;
    return jsonb_build_object('arguments', v_args, 'numeric', v_numeric, 'categorical', v_categorical);
end
$$;

-- ml_private.compiled_number(p_value jsonb, p_what text) returns text
-- A JSON number as a float8 SQL literal (float8 '<value>'), rendered from the float8 value, never
-- from the JSON text. Raises 22023 naming p_what for anything but a number.
create or replace function ml_private.compiled_number(p_value jsonb, p_what text) returns text
language plpgsql immutable
set search_path = ''
set extra_float_digits = 1
as $$
begin
    if jsonb_typeof(p_value) is distinct from 'number' then
        raise exception '%: must be a number, got %', p_what, coalesce(jsonb_typeof(p_value), 'nothing') using errcode = '22023';
    end if;
    return format('float8 %L', p_value::float8);
end
$$;

-- ml_private.compiled_numbers(p_value jsonb, p_what text, p_length int default null) returns float8[]
-- A JSON array of numbers as float8[] (of length p_length when given). Raises 22023 naming
-- p_what otherwise.
create or replace function ml_private.compiled_numbers(p_value jsonb, p_what text, p_length int default null) returns float8[]
language plpgsql immutable
set search_path = ''
as $$
declare
    v_bad bigint;
begin
    if jsonb_typeof(p_value) is distinct from 'array' then
        raise exception '%: must be an array of numbers, got %', p_what, coalesce(jsonb_typeof(p_value), 'nothing') using errcode = '22023';
    end if;
    if p_length is not null and jsonb_array_length(p_value) <> p_length then
        raise exception '%: must hold % numbers, got %', p_what, p_length, jsonb_array_length(p_value) using errcode = '22023';
    end if;
    select min(e.i) into v_bad from jsonb_array_elements(p_value) with ordinality e (v, i) where jsonb_typeof(e.v) <> 'number';
    if v_bad is not null then
        raise exception '%[%]: must be a number, got %', p_what, v_bad - 1, jsonb_typeof(p_value -> (v_bad::int - 1)) using errcode = '22023';
    end if;
    return array(select e.v::float8 from jsonb_array_elements(p_value) with ordinality e (v, i) order by e.i);
end
$$;

-- ml_private.compiled_features(p_features jsonb, p_inputs jsonb) returns text[]
-- The SQL expression of each preprocessed feature (what the estimator of a linear model or MLP
-- sees), from the description's "features": {"num": i, "ops": [...]} (numeric model input i,
-- 1-based) or {"cat": j, "category": c or null, "impute": v or null, "ops": [...]} (1 when
-- categorical input j, after imputing v, is c; c null: when it is missing). ops, applied in
-- order: ["impute", v] (coalesce), ["sub", c], ["div", c], ["mul", c], ["add", c],
-- ["clip", lo, hi] (missing stays missing). Raises 22023 naming the offending field.
create or replace function ml_private.compiled_features(p_features jsonb, p_inputs jsonb) returns text[]
language plpgsql immutable
set search_path = ''
set extra_float_digits = 1
as $$
declare
    v_out   text[] := '{}';
    v_f     jsonb;
    v_k     int := 0;
    v_path  text;
    v_expr  text;
    v_op    jsonb;
    v_j     int;
    v_n_num int := jsonb_array_length(p_inputs -> 'numeric');
    v_n_cat int := jsonb_array_length(p_inputs -> 'categorical');
begin
    if jsonb_typeof(p_features) is distinct from 'array' then
        raise exception 'features: must be an array' using errcode = '22023';
    end if;
    if jsonb_array_length(p_features) > 100000 then
        raise exception 'features: at most 100000, got %', jsonb_array_length(p_features) using errcode = '54000';
    end if;
    for v_f in select value from jsonb_array_elements(p_features) loop
        v_path := format('features[%s]', v_k);
        v_k := v_k + 1;
        if jsonb_typeof(v_f) <> 'object' then
            raise exception '%: must be an object', v_path using errcode = '22023';
        end if;
        if v_f ? 'num' then
            v_j := ml_private.compiled_index(v_f -> 'num', v_n_num, v_path || '.num');
            v_expr := p_inputs -> 'numeric' ->> (v_j - 1);
        elsif v_f ? 'cat' then
            v_j := ml_private.compiled_index(v_f -> 'cat', v_n_cat, v_path || '.cat');
            v_expr := p_inputs -> 'categorical' ->> (v_j - 1);
            if jsonb_typeof(coalesce(v_f -> 'category', 'null')) not in ('string', 'null')
               or jsonb_typeof(coalesce(v_f -> 'impute', 'null')) not in ('string', 'null') then
                raise exception '%: category and impute must be strings or null', v_path using errcode = '22023';
            end if;
            v_expr := case
                when v_f ->> 'category' is null and v_f ->> 'impute' is not null then 'float8 ''0'''
                when v_f ->> 'category' is null then format('(case when %s is null then float8 ''1'' else float8 ''0'' end)', v_expr)
                when v_f ->> 'impute' is null then format('(case when %s = %L then float8 ''1'' else float8 ''0'' end)', v_expr, v_f ->> 'category')
                else format('(case when coalesce(%s, %L) = %L then float8 ''1'' else float8 ''0'' end)', v_expr, v_f ->> 'impute', v_f ->> 'category') end;
        else
            raise exception '%: must name its input with "num" or "cat"', v_path using errcode = '22023';
        end if;
        if jsonb_typeof(coalesce(v_f -> 'ops', '[]')) <> 'array' then
            raise exception '%.ops: must be an array', v_path using errcode = '22023';
        end if;
        for v_op in select value from jsonb_array_elements(coalesce(v_f -> 'ops', '[]')) loop
            if jsonb_typeof(v_op) <> 'array' or jsonb_typeof(v_op -> 0) <> 'string' then
                raise exception '%.ops: each op is ["name", numbers...]', v_path using errcode = '22023';
            end if;
            v_expr := case v_op ->> 0
                when 'impute' then format('coalesce(%s, %s)', v_expr, ml_private.compiled_number(v_op -> 1, v_path || '.ops'))
                when 'sub' then format('(%s - %s)', v_expr, ml_private.compiled_number(v_op -> 1, v_path || '.ops'))
                when 'add' then format('(%s + %s)', v_expr, ml_private.compiled_number(v_op -> 1, v_path || '.ops'))
                when 'mul' then format('(%s * %s)', v_expr, ml_private.compiled_number(v_op -> 1, v_path || '.ops'))
                when 'div' then format('(%s / %s)', v_expr, ml_private.compiled_number(v_op -> 1, v_path || '.ops'))
                when 'clip' then format('(case when %1$s is null then null else least(greatest(%1$s, %2$s), %3$s) end)', v_expr,
                                        ml_private.compiled_number(v_op -> 1, v_path || '.ops'),
                                        ml_private.compiled_number(v_op -> 2, v_path || '.ops'))
            end;
            if v_expr is null then
                raise exception '%.ops: unknown op % (impute, sub, add, mul, div, clip)', v_path, v_op -> 0 using errcode = '22023';
            end if;
        end loop;
        v_out := v_out || v_expr;
    end loop;
    return v_out;
end
$$;

-- ml_private.compiled_index(p_value jsonb, p_count int, p_what text) returns int
-- A JSON integer from 1 to p_count. Raises 22023 naming p_what otherwise.
create or replace function ml_private.compiled_index(p_value jsonb, p_count int, p_what text) returns int
language plpgsql immutable
set search_path = ''
as $$
begin
    if jsonb_typeof(p_value) is distinct from 'number' or p_value::numeric <> trunc(p_value::numeric)
       or p_value::numeric not between 1 and p_count then
        raise exception '%: must be an input number from 1 to %, got %', p_what, p_count, coalesce(p_value::text, 'nothing')
            using errcode = '22023';
    end if;
    return p_value::int;
end
$$;

-- ml_private.compiled_tree_sql(p_tree jsonb, p_where text, p_numeric text[], p_categorical text[],
--                              p_outputs int) returns jsonb
-- One tree as a nested CASE expression per output: {"sql": [text per output], "nodes", "depth"}.
-- p_tree holds parallel arrays over its nodes in depth-first order, each test followed by its
-- then-branch, its else-branch after that:
--   op     le (x <= v), gt (x > v), nn (x is not null) on a numeric input; eq (x = v),
--          ne (x <> v), cnn (x is not null) on a categorical one; in (x is one of the
--          numbers v: a histogram gradient boosting category split); leaf
--   input  the input number (1-based), 0 for leaves
--   value  the number (le, gt), the string (eq, ne), 1 to 1024 numbers (in), null otherwise
--   leaf   the leaf's value (a number), or its p_outputs values (an array); null for tests
-- A missing input makes every test false: the compiler orients each test so that the else
-- branch is where scikit-learn sends a missing value. Thresholds are float8 and compared as
-- such: scikit-learn's float32 rounding was folded into them. Raises 22023 naming the tree and
-- node for a malformed tree, 54000 beyond the limits (1,000,000 nodes, depth 500).
create or replace function ml_private.compiled_tree_sql(p_tree jsonb, p_where text, p_numeric text[], p_categorical text[],
                                                       p_outputs int)
returns jsonb
language plpgsql immutable
set search_path = ''
set extra_float_digits = 1
as $$
declare
    v_n        int;
    v_op       text[];
    v_input    int[];
    v_number   float8[];
    v_text     text[];
    v_set      text[];
    v_pieces   text[];
    v_closers  text[];
    v_leaf     jsonb[];
    v_bad      record;
    v_stack    boolean[] := '{}';
    v_sp       int := 0;
    v_depth    int := 0;
    v_done     boolean := false;
    v_x        text;
    v_close    text;
    v_sql      text[] := '{}';
    v_c        int;
    v_i        int;
begin
    if jsonb_typeof(p_tree) is distinct from 'object' or jsonb_typeof(p_tree -> 'op') is distinct from 'array'
       or jsonb_typeof(p_tree -> 'input') is distinct from 'array' or jsonb_typeof(p_tree -> 'value') is distinct from 'array'
       or jsonb_typeof(p_tree -> 'leaf') is distinct from 'array' then
        raise exception '%: must be an object of arrays op, input, value and leaf', p_where using errcode = '22023';
    end if;
    v_n := jsonb_array_length(p_tree -> 'op');
    if v_n = 0 or jsonb_array_length(p_tree -> 'input') <> v_n or jsonb_array_length(p_tree -> 'value') <> v_n
       or jsonb_array_length(p_tree -> 'leaf') <> v_n then
        raise exception '%: op, input, value and leaf must have the same (non-zero) length', p_where using errcode = '22023';
    end if;
    if v_n > 1000000 then
        raise exception '%: at most 1000000 nodes, got %', p_where, v_n using errcode = '54000';
    end if;

    -- Every node's fields, checked for their types once, set-based.
    select n.i, n.op, n.input, n.value, n.leaf into v_bad
    from rows from (jsonb_array_elements(p_tree -> 'op'), jsonb_array_elements(p_tree -> 'input'),
                    jsonb_array_elements(p_tree -> 'value'), jsonb_array_elements(p_tree -> 'leaf')) with ordinality n (op, input, value, leaf, i)
    where jsonb_typeof(n.op) <> 'string'
       or (n.op #>> '{}') not in ('le', 'gt', 'nn', 'eq', 'ne', 'cnn', 'in', 'leaf')
       or ((n.op #>> '{}') = 'leaf' and not (
               (p_outputs = 1 and jsonb_typeof(n.leaf) = 'number')
               or (jsonb_typeof(n.leaf) = 'array' and jsonb_array_length(n.leaf) = p_outputs
                   and not exists (select 1 from jsonb_array_elements(n.leaf) e where jsonb_typeof(e) <> 'number'))))
       or ((n.op #>> '{}') <> 'leaf' and (
               jsonb_typeof(n.input) <> 'number' or n.input::numeric <> trunc(n.input::numeric)
               or n.input::numeric not between 1 and case when (n.op #>> '{}') in ('eq', 'ne', 'cnn')
                                                          then coalesce(cardinality(p_categorical), 0)
                                                          else coalesce(cardinality(p_numeric), 0) end))
       or ((n.op #>> '{}') in ('le', 'gt') and jsonb_typeof(n.value) <> 'number')
       or ((n.op #>> '{}') in ('eq', 'ne') and jsonb_typeof(n.value) <> 'string')
       or ((n.op #>> '{}') = 'in' and (jsonb_typeof(n.value) <> 'array' or jsonb_array_length(n.value) not between 1 and 1024
               or exists (select 1 from jsonb_array_elements(n.value) e where jsonb_typeof(e) <> 'number')))
    order by n.i limit 1;
    if found then
        raise exception '%: node %: % (op %, input %, value %, leaf %)', p_where, v_bad.i - 1,
            case when jsonb_typeof(v_bad.op) <> 'string' or (v_bad.op #>> '{}') not in ('le', 'gt', 'nn', 'eq', 'ne', 'cnn', 'in', 'leaf')
                     then 'op must be one of le, gt, nn, eq, ne, cnn, in, leaf'
                 when (v_bad.op #>> '{}') = 'leaf' then format('a leaf''s value must be %s',
                     case when p_outputs = 1 then 'a number' else format('an array of %s numbers', p_outputs) end)
                 when jsonb_typeof(v_bad.input) <> 'number' or v_bad.input::numeric <> trunc(v_bad.input::numeric)
                      or v_bad.input::numeric < 1 or ((v_bad.op #>> '{}') in ('eq', 'ne', 'cnn') and v_bad.input::numeric > coalesce(cardinality(p_categorical), 0))
                      or ((v_bad.op #>> '{}') not in ('eq', 'ne', 'cnn') and v_bad.input::numeric > coalesce(cardinality(p_numeric), 0))
                     then 'input must be an input number of the test''s kind'
                 when (v_bad.op #>> '{}') in ('le', 'gt') then 'the threshold must be a number'
                 when (v_bad.op #>> '{}') in ('eq', 'ne') then 'the category must be a string'
                 else 'the categories must be 1 to 1024 numbers' end,
            v_bad.op, left(v_bad.input::text, 40), left(v_bad.value::text, 40), left(v_bad.leaf::text, 40)
            using errcode = '22023';
    end if;
    select array_agg(n.op #>> '{}' order by n.i),
           array_agg(case when jsonb_typeof(n.input) = 'number' then n.input::int end order by n.i),
           array_agg(case when jsonb_typeof(n.value) = 'number' then n.value::float8 end order by n.i),
           array_agg(case when jsonb_typeof(n.value) = 'string' then n.value #>> '{}' end order by n.i),
           array_agg(case when jsonb_typeof(n.value) = 'array'
                          then array(select e::float8 from jsonb_array_elements(n.value) e)::text end order by n.i),
           array_agg(n.leaf order by n.i)
    into v_op, v_input, v_number, v_text, v_set, v_leaf
    from rows from (jsonb_array_elements(p_tree -> 'op'), jsonb_array_elements(p_tree -> 'input'),
                    jsonb_array_elements(p_tree -> 'value'), jsonb_array_elements(p_tree -> 'leaf')) with ordinality n (op, input, value, leaf, i);

    -- Depth first: a stack of the open CASEs, each in its then (false) or else (true) branch.
    v_pieces := array_fill(null::text, array[v_n]);
    v_closers := array_fill(null::text, array[v_n]);
    for v_i in 1 .. v_n loop
        if v_done then
            raise exception '%: node % comes after the tree''s last leaf (nodes go depth first, each test followed by its then-branch)',
                p_where, v_i - 1 using errcode = '22023';
        end if;
        if v_op[v_i] = 'leaf' then
            v_close := '';
            while v_sp > 0 and v_stack[v_sp] loop
                v_close := v_close || ' end';
                v_sp := v_sp - 1;
            end loop;
            if v_sp = 0 then
                v_done := true;
            else
                v_stack[v_sp] := true;
                v_close := v_close || ' else ';
            end if;
            v_closers[v_i] := v_close;
        else
            v_x := case when v_op[v_i] in ('eq', 'ne', 'cnn') then p_categorical[v_input[v_i]] else p_numeric[v_input[v_i]] end;
            v_pieces[v_i] := 'case when ' || case v_op[v_i]
                when 'le' then format('%s <= float8 %L', v_x, v_number[v_i])
                when 'gt' then format('%s > float8 %L', v_x, v_number[v_i])
                when 'eq' then format('%s = %L', v_x, v_text[v_i])
                when 'ne' then format('%s <> %L', v_x, v_text[v_i])
                when 'in' then format('%s = any (%L::float8[])', v_x, v_set[v_i])
                else format('%s is not null', v_x) end || ' then ';
            v_sp := v_sp + 1;
            v_stack[v_sp] := false;
            if v_sp > v_depth then
                v_depth := v_sp;
                if v_depth > 500 then
                    raise exception '%: deeper than 500 levels', p_where using errcode = '54000',
                        hint = 'PostgreSQL parses nested expressions recursively (max_stack_depth); score deeper trees with a worker.';
                end if;
            end if;
        end if;
    end loop;
    if not v_done then
        raise exception '%: incomplete: % test(s) still wait for a branch after the last node', p_where, v_sp using errcode = '22023';
    end if;

    for v_c in 1 .. p_outputs loop
        v_sql := v_sql || (
            select string_agg(coalesce(p.piece, format('float8 %L', case when jsonb_typeof(p.leaf) = 'number' then p.leaf::float8
                                                                         else (p.leaf -> (v_c - 1))::float8 end) || p.closer), '' order by p.i)
            from unnest(v_pieces, v_closers, v_leaf) with ordinality p (piece, closer, leaf, i));
    end loop;
    return jsonb_build_object('sql', to_jsonb(v_sql), 'nodes', v_n, 'depth', v_depth);
end
$$;

-- ml_private.compiled_balanced_sum(p_terms text[]) returns text
-- The SQL sum of the expressions p_terms as a balanced tree ((a + b) + (c + d)), so that a sum
-- of thousands of terms nests log2(n) levels deep, not n. For sums whose order does not matter
-- beyond rounding (a dot product: BLAS adds in an order of its own too).
create or replace function ml_private.compiled_balanced_sum(p_terms text[]) returns text
language plpgsql immutable
set search_path = ''
as $$
declare
    v_terms text[] := p_terms;
    v_next  text[];
    v_i     int;
begin
    if coalesce(cardinality(v_terms), 0) = 0 then
        return 'float8 ''0''';
    end if;
    while cardinality(v_terms) > 1 loop
        v_next := '{}';
        v_i := 1;
        while v_i <= cardinality(v_terms) loop
            v_next := v_next || case when v_i < cardinality(v_terms) then format('(%s + %s)', v_terms[v_i], v_terms[v_i + 1])
                                     else v_terms[v_i] end;
            v_i := v_i + 2;
        end loop;
        v_terms := v_next;
    end loop;
    return v_terms[1];
end
$$;

-- ml_private.compiled_model_sql(p_description jsonb, p_inputs jsonb, p_task text) returns jsonb
-- The body of a compiled function (one SQL expression of num and cat) from a description of the
-- fitted pipeline (pgmlops.scoring.describe) and the version's inputs
-- (ml_private.compiled_model_inputs): {"expression", "representation", "trees", "nodes",
-- "max_depth"}. Description (format 1):
--   {"format": 1, "task", "inputs": {"numeric": n, "categorical": m}  -- must match p_inputs
--    "features": [...]                 -- the preprocessed features (ml_private.compiled_features)
--    "estimator": {"kind": "linear", "coef": [[per feature] per output], "intercept": [per output]}
--               | {"kind": "trees", "outputs": k, "trees": [{op, input, value, leaf, "output": o}],
--                  "init": [per output] or null, "divide": number or null}
--                  (each output sums init then its trees' values in tree order; a tree with
--                  "output" o adds to output o only (0-based), else one value per output)
--               | {"kind": "mlp", "float32": bool, "layers": [{"weights": [[per input] per unit],
--                  "bias": [per unit], "activation": identity|relu|tanh|logistic}], "scale": s,
--                  "offset": m}        -- output * s + m (a regressor on a standardized target)
--    "output": {"kind": "regression", "link": identity|exp}
--            | {"kind": "classification", "labels": [...], "probability", "label", "decision"}
--              (ml_private.compiled_binary, compiled_pair, compiled_classes)
--            | {"kind": "isolation_forest", "denominator": n, "offset": o}}
-- Raises 22023 naming the offending field, 54000 beyond the limits (10,000 trees, 4,000,000
-- nodes, 10,000,000 weights).
create or replace function ml_private.compiled_model_sql(p_description jsonb, p_inputs jsonb, p_task text) returns jsonb
language plpgsql immutable
set search_path = ''
set extra_float_digits = 1
as $$
declare
    v_est      jsonb := p_description -> 'estimator';
    v_out      jsonb := p_description -> 'output';
    v_numeric  text[] := array(select jsonb_array_elements_text(p_inputs -> 'numeric'));
    v_cat      text[] := array(select jsonb_array_elements_text(p_inputs -> 'categorical'));
    v_features text[];
    v_scores   text[] := '{}';
    v_k        int;
    v_tree     jsonb;
    v_t        int := 0;
    v_res      jsonb;
    v_terms    text[];
    v_owner    int[];
    v_nodes    bigint := 0;
    v_depth    int := 0;
    v_c        int;
    v_o        int;
    v_init     float8[];
    v_layer    jsonb;
    v_expr     text;
    v_w        float8[];
    v_b        float8[];
    v_in       int;
    v_weights  bigint := 0;
    v_repr     text;
    v_result   text;
    v_array    text;     -- the scores as one array expression, when the estimator makes one
begin
    if jsonb_typeof(p_description) is distinct from 'object' or (p_description ->> 'format') is distinct from '1' then
        raise exception 'description: must be an object with "format": 1' using errcode = '22023';
    end if;
    if (p_description ->> 'task') is distinct from p_task then
        raise exception 'description: task is %, the version''s is %', coalesce(p_description ->> 'task', 'missing'), p_task
            using errcode = '22023';
    end if;
    if (p_description #>> '{inputs,numeric}') is distinct from cardinality(v_numeric)::text
       or (p_description #>> '{inputs,categorical}') is distinct from cardinality(v_cat)::text then
        raise exception 'description: inputs must be {"numeric": %, "categorical": %} (the version''s signature), got %',
            cardinality(v_numeric), cardinality(v_cat), coalesce(p_description -> 'inputs', 'null'::jsonb) using errcode = '22023';
    end if;
    if jsonb_typeof(v_est) is distinct from 'object' or jsonb_typeof(v_out) is distinct from 'object' then
        raise exception 'description: estimator and output must be objects' using errcode = '22023';
    end if;

    case v_est ->> 'kind'
    when 'trees' then
        v_k := ml_private.compiled_index(v_est -> 'outputs', 1000, 'estimator.outputs');
        if jsonb_typeof(v_est -> 'trees') is distinct from 'array' or jsonb_array_length(v_est -> 'trees') not between 1 and 10000 then
            raise exception 'estimator.trees: must be an array of 1 to 10000 trees' using errcode = case
                when jsonb_typeof(v_est -> 'trees') = 'array' and jsonb_array_length(v_est -> 'trees') > 10000 then '54000' else '22023' end;
        end if;
        v_terms := '{}';
        v_owner := '{}';
        for v_tree in select value from jsonb_array_elements(v_est -> 'trees') loop
            if v_tree ? 'output' then
                if jsonb_typeof(v_tree -> 'output') <> 'number' or (v_tree ->> 'output')::numeric <> trunc((v_tree ->> 'output')::numeric)
                   or (v_tree ->> 'output')::numeric not between 0 and v_k - 1 then
                    raise exception 'estimator.trees[%].output: must be an output number from 0 to %', v_t, v_k - 1 using errcode = '22023';
                end if;
                v_o := (v_tree ->> 'output')::int;
            else
                v_o := null;
            end if;
            v_res := ml_private.compiled_tree_sql(v_tree, format('estimator.trees[%s]', v_t), v_numeric, v_cat,
                                                  case when v_o is null then v_k else 1 end);
            v_nodes := v_nodes + (v_res ->> 'nodes')::bigint;
            v_depth := greatest(v_depth, (v_res ->> 'depth')::int);
            if v_nodes > 4000000 then
                raise exception 'estimator.trees: more than 4000000 nodes' using errcode = '54000',
                    hint = 'Score a model this large with a worker.';
            end if;
            if v_o is null then
                for v_c in 1 .. v_k loop
                    v_terms := v_terms || (v_res -> 'sql' ->> (v_c - 1));
                    v_owner := v_owner || v_c;
                end loop;
            else
                v_terms := v_terms || (v_res -> 'sql' ->> 0);
                v_owner := v_owner || (v_o + 1);
            end if;
            v_t := v_t + 1;
        end loop;
        if v_est ? 'init' and jsonb_typeof(v_est -> 'init') <> 'null' then
            v_init := ml_private.compiled_numbers(v_est -> 'init', 'estimator.init', v_k);
        end if;
        for v_c in 1 .. v_k loop
            select coalesce(array_agg('(' || t.sql || ')' order by t.i), '{}') into v_features
            from unnest(v_terms, v_owner) with ordinality t (sql, owner, i) where t.owner = v_c;
            if v_init is not null then
                v_features := format('float8 %L', v_init[v_c]) || v_features;
            end if;
            if cardinality(v_features) = 0 then
                raise exception 'estimator.trees: no tree adds to output %', v_c - 1 using errcode = '22023';
            end if;
            -- A chain a + b + c ... nests as deep as it is long: longer ones go through an array.
            v_expr := case when cardinality(v_features) <= 1000 then array_to_string(v_features, ' + ')
                           else 'ml_private.compiled_sum(array[' || array_to_string(v_features, ', ') || '])' end;
            if v_est ? 'divide' and jsonb_typeof(v_est -> 'divide') <> 'null' then
                v_expr := format('(%s) / %s', v_expr, ml_private.compiled_number(v_est -> 'divide', 'estimator.divide'));
            end if;
            v_scores := v_scores || v_expr;
        end loop;
        v_repr := 'nested CASE per tree';
    when 'linear' then
        v_features := ml_private.compiled_features(p_description -> 'features', p_inputs);
        if jsonb_typeof(v_est -> 'coef') is distinct from 'array' or jsonb_array_length(v_est -> 'coef') not between 1 and 1000 then
            raise exception 'estimator.coef: must be an array of 1 to 1000 rows (one per output)' using errcode = '22023';
        end if;
        v_b := ml_private.compiled_numbers(v_est -> 'intercept', 'estimator.intercept', jsonb_array_length(v_est -> 'coef'));
        for v_o in 0 .. jsonb_array_length(v_est -> 'coef') - 1 loop
            v_w := ml_private.compiled_numbers(v_est -> 'coef' -> v_o, format('estimator.coef[%s]', v_o), cardinality(v_features));
            v_scores := v_scores || ml_private.compiled_balanced_sum(
                array(select format('(float8 %L * %s)', x.w, x.f)
                      from unnest(v_w, v_features) with ordinality x (w, f, i) where x.w <> 0 order by x.i)
                || format('float8 %L', v_b[v_o + 1]));
        end loop;
        v_repr := 'sum of products';
    when 'mlp' then
        if jsonb_typeof(coalesce(v_est -> 'float32', 'false')) <> 'boolean' then
            raise exception 'estimator.float32: must be true or false' using errcode = '22023';
        end if;
        v_features := ml_private.compiled_features(p_description -> 'features', p_inputs);
        v_expr := 'array[' || array_to_string(v_features, ', ') || ']::float8[]';
        if coalesce((v_est ->> 'float32')::boolean, false) then
            v_expr := format('ml_private.compiled_real(%s)', v_expr);
        end if;
        if jsonb_typeof(v_est -> 'layers') is distinct from 'array' or jsonb_array_length(v_est -> 'layers') not between 1 and 20 then
            raise exception 'estimator.layers: must be an array of 1 to 20 layers' using errcode = '22023';
        end if;
        v_in := cardinality(v_features);
        v_c := 0;
        for v_layer in select value from jsonb_array_elements(v_est -> 'layers') loop
            if jsonb_typeof(v_layer -> 'weights') is distinct from 'array' or jsonb_array_length(v_layer -> 'weights') not between 1 and 100000 then
                raise exception 'estimator.layers[%].weights: must be an array of rows, one per unit', v_c using errcode = '22023';
            end if;
            v_b := ml_private.compiled_numbers(v_layer -> 'bias', format('estimator.layers[%s].bias', v_c), jsonb_array_length(v_layer -> 'weights'));
            v_w := '{}';
            for v_o in 0 .. jsonb_array_length(v_layer -> 'weights') - 1 loop
                v_w := v_w || ml_private.compiled_numbers(v_layer -> 'weights' -> v_o, format('estimator.layers[%s].weights[%s]', v_c, v_o), v_in);
            end loop;
            v_weights := v_weights + cardinality(v_w);
            if v_weights > 10000000 then
                raise exception 'estimator.layers: more than 10000000 weights' using errcode = '54000';
            end if;
            if (v_layer ->> 'activation') is null or (v_layer ->> 'activation') not in ('identity', 'relu', 'tanh', 'logistic') then
                raise exception 'estimator.layers[%].activation: must be identity, relu, tanh or logistic', v_c using errcode = '22023';
            end if;
            v_expr := format('ml_private.compiled_dense(%s, %L::float8[], %L::float8[], %L)', v_expr, v_w, v_b, v_layer ->> 'activation');
            v_in := cardinality(v_b);
            v_c := v_c + 1;
        end loop;
        if coalesce((v_est ->> 'float32')::boolean, false) then
            v_expr := format('ml_private.compiled_real(%s)', v_expr);
        end if;
        for v_o in 1 .. v_in loop
            v_scores := v_scores || format('(%s)[%s]', v_expr, v_o);
        end loop;
        v_array := v_expr;  -- one evaluation of the network for all its outputs
        if v_est ? 'scale' or v_est ? 'offset' then
            if v_in <> 1 then
                raise exception 'estimator: scale and offset need one output' using errcode = '22023';
            end if;
            v_scores[1] := format('(%s * %s + %s)', v_scores[1], ml_private.compiled_number(v_est -> 'scale', 'estimator.scale'),
                                  ml_private.compiled_number(v_est -> 'offset', 'estimator.offset'));
        end if;
        v_repr := 'dense layers over arrays';
    else
        raise exception 'estimator.kind: must be trees, linear or mlp, got %', coalesce(v_est ->> 'kind', 'nothing') using errcode = '22023';
    end case;

    -- What the function returns.
    case v_out ->> 'kind'
    when 'regression' then
        if p_task <> 'regression' or cardinality(v_scores) <> 1 then
            raise exception 'output: regression needs a regression version and one score, got % scores', cardinality(v_scores)
                using errcode = '22023';
        end if;
        v_result := case coalesce(v_out ->> 'link', 'identity')
            when 'identity' then format('ml_private.compiled_regression(%s)', v_scores[1])
            when 'exp' then format('ml_private.compiled_regression(ml_private.compiled_exp(%s))', v_scores[1]) end;
        if v_result is null then
            raise exception 'output.link: must be identity or exp' using errcode = '22023';
        end if;
    when 'classification' then
        if p_task <> 'classification' then
            raise exception 'output: classification needs a classification version' using errcode = '22023';
        end if;
        if jsonb_typeof(v_out -> 'labels') is distinct from 'array' or jsonb_array_length(v_out -> 'labels') < 2
           or exists (select 1 from jsonb_array_elements(v_out -> 'labels') l where jsonb_typeof(l) not in ('string', 'number', 'boolean')) then
            raise exception 'output.labels: must be an array of at least two strings, numbers or booleans' using errcode = '22023';
        end if;
        if (v_out ->> 'probability') is null
           or (v_out ->> 'probability') not in ('sigmoid', 'sigmoid2', 'softmax', 'ovr', 'modified_huber', 'identity', 'none')
           or (v_out ->> 'label') is null or (v_out ->> 'label') not in ('gt0', 'ge0', 'argmax_scores', 'argmax_proba', 'gt_half')
           or jsonb_typeof(coalesce(v_out -> 'decision', 'false')) <> 'boolean' then
            raise exception 'output: probability must be sigmoid, sigmoid2, softmax, ovr, modified_huber, identity or none; label gt0, ge0, argmax_scores, argmax_proba or gt_half; decision a boolean'
                using errcode = '22023';
        end if;
        if cardinality(v_scores) <> (case when cardinality(v_scores) = 1 and jsonb_array_length(v_out -> 'labels') = 2
                                          and (v_out ->> 'probability') in ('sigmoid', 'sigmoid2', 'ovr', 'modified_huber', 'none')
                                          then 1 else jsonb_array_length(v_out -> 'labels') end) then
            raise exception 'output: % scores for % classes', cardinality(v_scores), jsonb_array_length(v_out -> 'labels')
                using errcode = '22023';
        end if;
        v_result := case
            when cardinality(v_scores) = 1 then
                format('ml_private.compiled_binary(%s, %L::jsonb, %L, %L, %s)', v_scores[1], v_out -> 'labels',
                       v_out ->> 'probability', v_out ->> 'label', case when (v_out ->> 'decision')::boolean then 'true' else 'false' end)
            when cardinality(v_scores) = 2 and v_out ->> 'probability' = 'identity' and v_array is null then
                format('ml_private.compiled_pair(%s, %s, %L::jsonb)', v_scores[1], v_scores[2], v_out -> 'labels')
            else
                format('ml_private.compiled_classes(%s, %L::jsonb, %L, %L, %s)',
                       coalesce(v_array, 'array[' || array_to_string(v_scores, ', ') || ']::float8[]'), v_out -> 'labels',
                       v_out ->> 'probability', v_out ->> 'label', case when (v_out ->> 'decision')::boolean then 'true' else 'false' end)
        end;
        if cardinality(v_scores) = 1 and (v_out ->> 'label') not in ('gt0', 'ge0', 'gt_half')
           or cardinality(v_scores) = 1 and (v_out ->> 'probability') not in ('sigmoid', 'sigmoid2', 'ovr', 'modified_huber', 'none')
           or cardinality(v_scores) > 1 and (v_out ->> 'label') not in ('argmax_scores', 'argmax_proba')
           or cardinality(v_scores) > 1 and (v_out ->> 'probability') not in ('softmax', 'ovr', 'modified_huber', 'identity', 'none') then
            raise exception 'output: % with % score(s) cannot have probability % and label %', v_out -> 'labels',
                cardinality(v_scores), v_out ->> 'probability', v_out ->> 'label' using errcode = '22023';
        end if;
    when 'isolation_forest' then
        if p_task <> 'anomaly_detection' or cardinality(v_scores) <> 1 then
            raise exception 'output: isolation_forest needs an anomaly_detection version and one score' using errcode = '22023';
        end if;
        v_result := format('ml_private.compiled_isolation_forest(%s, %s, %s)', v_scores[1],
                           ml_private.compiled_number(v_out -> 'denominator', 'output.denominator'),
                           ml_private.compiled_number(v_out -> 'offset', 'output.offset'));
    else
        raise exception 'output.kind: must be regression, classification or isolation_forest, got %', coalesce(v_out ->> 'kind', 'nothing')
            using errcode = '22023';
    end case;
    return jsonb_build_object('expression', v_result, 'representation', v_repr, 'trees', v_t, 'nodes', v_nodes,
                              'max_depth', v_depth, 'weights', v_weights);
end
$$;
