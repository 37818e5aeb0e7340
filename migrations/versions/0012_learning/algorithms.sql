-- pgmlops 0012: the SGD algorithms continuous learning starts from (docs/retraining.md,
-- "Continuous learning"; docs/training.md, "Estimators")
--
-- sgd_classifier and sgd_regressor are scikit-learn's SGDClassifier and SGDRegressor: linear
-- models fitted by stochastic gradient descent, whose fitted pipelines a learn job updates with
-- partial_fit of the final estimator (ml_private.incremental_algorithms, handler
-- pgmlops.retraining._learn:learn); they compile to SQL like the other linear models.
--
-- The schemas follow 0004's conventions (the estimators' own parameter names; random_state
-- comes from the training options). Narrower than scikit-learn where a value could not serve:
--   loss (classification)  log_loss and modified_huber only: every pgmlops classifier reports
--                          class probabilities (metrics, scoring, the learn job's holdout), and
--                          SGDClassifier has predict_proba for these two losses alone. The
--                          worker's default is log_loss (scikit-learn's, hinge, has none).
--   alpha                  > 0: the default learning_rate 'optimal' divides by it.
--   learning_rate          constant, optimal, invscaling, adaptive (the passive-aggressive pa1
--                          and pa2 exist from scikit-learn 1.8 only).
--   eta0                   > 0 (the worker defaults it to 0.01, as scikit-learn 1.8 does;
--                          older releases default to 0, which constant and invscaling refuse).
-- The parameters both estimators take, then each one's own (loss first).
select ml_private.register_algorithm(a.name, a.tasks, 'sklearn', false, a.description,
    jsonb_build_object('type', 'object', 'additionalProperties', false, 'properties', a.own || shared.properties))
from (select $j${
        "penalty":             {"type": ["string", "null"], "enum": ["l2", "l1", "elasticnet", null]},
        "alpha":               {"type": "number", "exclusiveMinimum": 0, "maximum": 1000000},
        "l1_ratio":            {"type": "number", "minimum": 0, "maximum": 1},
        "fit_intercept":       {"type": "boolean"},
        "max_iter":            {"type": "integer", "minimum": 1, "maximum": 100000},
        "tol":                 {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "shuffle":             {"type": "boolean"},
        "learning_rate":       {"type": "string", "enum": ["constant", "optimal", "invscaling", "adaptive"]},
        "eta0":                {"type": "number", "exclusiveMinimum": 0, "maximum": 100},
        "power_t":             {"type": "number", "minimum": -100, "maximum": 100},
        "early_stopping":      {"type": "boolean"},
        "validation_fraction": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "n_iter_no_change":    {"type": "integer", "minimum": 1, "maximum": 10000},
        "average":             {"type": ["boolean", "integer"], "minimum": 1, "maximum": 100000000}
      }$j$::jsonb as properties) shared
cross join (values
    ('sgd_classifier', array['classification'],
     'scikit-learn SGDClassifier (linear, stochastic gradient descent; log_loss or modified_huber; learns incrementally)',
     $j${"loss":         {"type": "string", "enum": ["log_loss", "modified_huber"]},
         "class_weight": {"type": ["string", "null"], "enum": ["balanced", null]}}$j$::jsonb),
    ('sgd_regressor', array['regression'],
     'scikit-learn SGDRegressor (linear, stochastic gradient descent; learns incrementally)',
     $j${"loss":    {"type": "string", "enum": ["squared_error", "huber", "epsilon_insensitive",
                                                "squared_epsilon_insensitive"]},
         "epsilon": {"type": "number", "minimum": 0, "maximum": 1000000}}$j$::jsonb)
) a (name, tasks, description, own)
order by a.name;
