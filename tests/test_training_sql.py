"""Training in SQL: the algorithms registry, projects, ml.train's checks and payload, runs and their metrics.

Everything here runs on the real server; the worker side (ml.start_run, ml.log_run_metrics,
ml.finish_run) is called as a worker calls it: a service caller acting for the job's tenant.
"""

from __future__ import annotations

import warnings
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from pgmlops.db import tenant_context

from .training_data import member, refused

Conn = psycopg.Connection[Any]

ALGORITHMS = {
    "logistic_regression": ({"classification"}, "sklearn"),
    "linear_regression": ({"regression"}, "sklearn"),
    "ridge": ({"regression"}, "sklearn"),
    "lasso": ({"regression"}, "sklearn"),
    "elastic_net": ({"regression"}, "sklearn"),
    "sgd_classifier": ({"classification"}, "sklearn"),
    "sgd_regressor": ({"regression"}, "sklearn"),
    "decision_tree": ({"classification", "regression"}, "sklearn"),
    "random_forest": ({"classification", "regression"}, "sklearn"),
    "extra_trees": ({"classification", "regression"}, "sklearn"),
    "gradient_boosting": ({"classification", "regression"}, "sklearn"),
    "hist_gradient_boosting": ({"classification", "regression"}, "sklearn"),
    "svm": ({"classification", "regression"}, "sklearn"),
    "knn": ({"classification", "regression"}, "sklearn"),
    "isolation_forest": ({"anomaly_detection"}, "sklearn"),
    "local_outlier_factor": ({"anomaly_detection"}, "sklearn"),
    "mlp": ({"classification", "regression"}, "torch"),
    "autoencoder": ({"anomaly_detection"}, "torch"),
}


def estimator(algorithm: str, task: str) -> Any:
    """The scikit-learn estimator an algorithm name stands for, per task."""
    from sklearn import ensemble, linear_model, neighbors, svm, tree

    classes: dict[tuple[str, str], Any] = {
        ("logistic_regression", "classification"): linear_model.LogisticRegression,
        ("linear_regression", "regression"): linear_model.LinearRegression,
        ("ridge", "regression"): linear_model.Ridge,
        ("lasso", "regression"): linear_model.Lasso,
        ("elastic_net", "regression"): linear_model.ElasticNet,
        ("sgd_classifier", "classification"): linear_model.SGDClassifier,
        ("sgd_regressor", "regression"): linear_model.SGDRegressor,
        ("decision_tree", "classification"): tree.DecisionTreeClassifier,
        ("decision_tree", "regression"): tree.DecisionTreeRegressor,
        ("random_forest", "classification"): ensemble.RandomForestClassifier,
        ("random_forest", "regression"): ensemble.RandomForestRegressor,
        ("extra_trees", "classification"): ensemble.ExtraTreesClassifier,
        ("extra_trees", "regression"): ensemble.ExtraTreesRegressor,
        ("gradient_boosting", "classification"): ensemble.GradientBoostingClassifier,
        ("gradient_boosting", "regression"): ensemble.GradientBoostingRegressor,
        ("hist_gradient_boosting", "classification"): ensemble.HistGradientBoostingClassifier,
        ("hist_gradient_boosting", "regression"): ensemble.HistGradientBoostingRegressor,
        ("svm", "classification"): svm.SVC,
        ("svm", "regression"): svm.SVR,
        ("knn", "classification"): neighbors.KNeighborsClassifier,
        ("knn", "regression"): neighbors.KNeighborsRegressor,
        ("isolation_forest", "anomaly_detection"): ensemble.IsolationForest,
        ("local_outlier_factor", "anomaly_detection"): neighbors.LocalOutlierFactor,
    }
    return classes[(algorithm, task)]()


def one(conn: Conn, query: str, *args: Any) -> Any:
    row = conn.execute(query, args).fetchone()
    assert row is not None
    return row[0]


def task_schema(conn: Conn, algorithm: str, task: str) -> dict[str, Any]:
    return dict(one(conn, "select ml_private.algorithm_hyperparams_schema(%s, %s)", algorithm, task))


def jobs(conn: Conn, tenant: str) -> int:
    return int(one(conn, "select count(*) from ml.jobs where tenant_id = %s", tenant))


def labelled_dataset(conn: Conn, name: str = "churn_set", label: str | None = "churned") -> str:
    """A small training set over a fresh feature group, with ``label`` as its label column."""
    group = f"g_{name}"
    conn.execute("select ml.create_feature_group(%s, 'customer', %s)", (group, Jsonb({"spend": {"dtype": "float"}})))
    conn.execute("select ml.ingest(%s, %s)", (group, Jsonb([
        {"customer": "c1", "event_time": "2026-01-01T00:00:00Z", "spend": 1.5},
        {"customer": "c2", "event_time": "2026-01-01T00:00:00Z", "spend": 7.0}])))
    spine = ("select customer, timestamptz '2026-01-02' as event_time" + (f", n as {label}" if label else "")
             + " from (values ('c1', 0), ('c2', 1)) s (customer, n)")
    return str(one(conn, "select ml.create_training_set(%s, %s, %s, %s)", name, spine, [f"{group}:spend"], label))


@pytest.fixture
def project(conn: Conn, tenant: str) -> tuple[str, str]:
    """A classification project `churn` (target churned) and a dataset labelled churned: (project id, dataset id)."""
    project_id = str(one(conn, "select ml.create_project('churn', 'classification', 'churned')"))
    return project_id, labelled_dataset(conn)


def train(conn: Conn, dataset: str, algorithm: str = "hist_gradient_boosting", hyperparams: dict[str, Any] | None = None,
          options: dict[str, Any] | None = None, project: str = "churn") -> int:
    return int(one(conn, "select ml.train(%s, %s, %s, %s, %s)", project, dataset, algorithm,
                   Jsonb(hyperparams or {}), Jsonb(options or {})))


# -- the algorithms registry --------------------------------------------------------------------


def test_every_algorithm_is_registered_with_its_tasks_and_library(conn: Conn) -> None:
    rows = conn.execute("select name, tasks, library from ml.algorithms").fetchall()
    assert {name: (set(tasks), library) for name, tasks, library in rows} == ALGORITHMS


def test_every_hyperparameter_schema_is_closed(conn: Conn) -> None:
    for name, schema in conn.execute("select name, hyperparams_schema from ml.algorithms").fetchall():
        assert schema["type"] == "object" and schema["additionalProperties"] is False, name
        assert schema["properties"], name


def test_iterative_algorithms_are_the_boosters_and_the_networks(conn: Conn) -> None:
    iterative = {r[0] for r in conn.execute("select name from ml.algorithms where iterative")}
    assert iterative == {"gradient_boosting", "hist_gradient_boosting", "mlp", "autoencoder"}


@pytest.mark.parametrize("algorithm,task", [(a, t) for a, (tasks, lib) in sorted(ALGORITHMS.items())
                                            if lib == "sklearn" for t in sorted(tasks)])
def test_hyperparameter_names_are_the_estimators_own(conn: Conn, algorithm: str, task: str) -> None:
    params = set(estimator(algorithm, task).get_params())
    names = set(task_schema(conn, algorithm, task)["properties"])
    assert names <= params, f"{algorithm} ({task}): not parameters of the estimator: {sorted(names - params)}"


@pytest.mark.parametrize("algorithm,task", [(a, t) for a, (tasks, lib) in sorted(ALGORITHMS.items())
                                            if lib == "sklearn" for t in sorted(tasks)])
def test_every_allowed_choice_passes_the_estimators_own_validation(conn: Conn, algorithm: str, task: str) -> None:
    for name, spec in task_schema(conn, algorithm, task)["properties"].items():
        for value in spec.get("enum", []):
            model = estimator(algorithm, task).set_params(**{name: value})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. LogisticRegression's penalty is deprecated in favour of l1_ratio
                model._validate_params()


def test_task_specific_parameters_and_choices(conn: Conn) -> None:
    classification = task_schema(conn, "random_forest", "classification")["properties"]
    regression = task_schema(conn, "random_forest", "regression")["properties"]
    assert "class_weight" in classification and "class_weight" not in regression
    assert classification["criterion"]["enum"] == ["gini", "entropy", "log_loss"]
    assert "squared_error" in regression["criterion"]["enum"]
    assert not any(k.startswith("x-") for spec in classification.values() for k in spec if k != "x-fraction-at-most")


def test_the_documented_bounds_of_hist_gradient_boosting(conn: Conn) -> None:
    props = task_schema(conn, "hist_gradient_boosting", "classification")["properties"]
    assert props["learning_rate"] == {"type": "number", "exclusiveMinimum": 0, "maximum": 1}
    assert props["max_iter"] == {"type": "integer", "minimum": 1, "maximum": 10000}
    assert {"max_leaf_nodes", "max_depth", "min_samples_leaf", "l2_regularization"} <= set(props)


def test_the_torch_schemas_name_the_network_settings(conn: Conn) -> None:
    mlp = task_schema(conn, "mlp", "regression")["properties"]
    autoencoder = task_schema(conn, "autoencoder", "anomaly_detection")["properties"]
    assert set(mlp) == {"hidden_sizes", "epochs", "lr", "batch_size", "dropout", "weight_decay"}
    assert set(autoencoder) == {"hidden_sizes", "latent_dim", "epochs", "lr", "batch_size"}
    assert mlp["hidden_sizes"]["items"]["type"] == "integer"


def test_clients_read_the_algorithms_anon_does_not(conn: Conn, tenant: str) -> None:
    user = member(conn, tenant, "viewer")
    with tenant_context(conn, tenant, user=user):
        assert one(conn, "select count(*) from ml.algorithms") == len(ALGORITHMS)
    with refused("42501"), tenant_context(conn, role="anon"):
        conn.execute("select count(*) from ml.algorithms")


# -- job kinds ----------------------------------------------------------------------------------


def test_the_training_job_kinds_are_registered_with_their_leases(conn: Conn) -> None:
    kinds = dict(conn.execute("select kind, lease::text from ml.job_kinds where kind in ('train', 'tune_trial', 'tune')")
                 .fetchall())
    assert kinds == {"train": "00:10:00", "tune": "00:10:00", "tune_trial": "00:02:00"}


def test_the_tuning_kinds_need_a_study_id(conn: Conn, tenant: str) -> None:
    for kind in ("tune", "tune_trial"):
        with refused("22023", r"payload: \$\.study_id: is required"):
            conn.execute("select ml.enqueue(%s, '{}')", (kind,))


# -- projects -----------------------------------------------------------------------------------


def test_a_project_is_created_once_and_found_again(conn: Conn, tenant: str) -> None:
    first = one(conn, "select ml.create_project('churn', 'classification', 'churned', 'who leaves')")
    assert one(conn, "select ml.create_project('churn', 'classification', 'churned')") == first
    row = conn.execute("select tenant_id::text, task, target, description from ml.projects where id = %s", (first,)).fetchone()
    assert row == (tenant, "classification", "churned", "who leaves")


def test_a_project_name_taken_with_another_task_is_refused(conn: Conn, tenant: str) -> None:
    conn.execute("select ml.create_project('churn', 'classification', 'churned')")
    with refused("23505", "already exists with task classification"):
        conn.execute("select ml.create_project('churn', 'regression', 'churned')")


@pytest.mark.parametrize("name,task,target,rule", [
    ("Churn", "classification", "y", "name: 'Churn' must be lowercase"),
    ("churn", "clustering", "y", "task: must be one of classification, regression, anomaly_detection"),
    ("churn", "regression", None, "target: a regression project needs the name of its label column"),
])
def test_project_rules(conn: Conn, tenant: str, name: str, task: str, target: str | None, rule: str) -> None:
    with refused("22023", rule):
        conn.execute("select ml.create_project(%s, %s, %s)", (name, task, target))
    assert one(conn, "select count(*) from ml.projects where tenant_id = %s", tenant) == 0


def test_an_anomaly_detection_project_needs_no_target(conn: Conn, tenant: str) -> None:
    conn.execute("select ml.create_project('fraud', 'anomaly_detection', null)")
    dataset = labelled_dataset(conn, "unlabelled", label=None)
    job = train(conn, dataset, "isolation_forest", {"n_estimators": 50}, project="fraud")
    assert one(conn, "select payload -> 'options' ->> 'split' from ml.jobs where id = %s", job) == "random"


def test_a_viewer_cannot_create_a_project(conn: Conn, tenant: str) -> None:
    viewer = member(conn, tenant, "viewer")
    with refused("42501"), tenant_context(conn, tenant, user=viewer):
        conn.execute("select ml.create_project('churn', 'classification', 'churned')")


# -- ml.train -----------------------------------------------------------------------------------


def test_train_enqueues_a_job_with_the_documented_payload(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    project_id, dataset = project
    job = train(conn, dataset, "hist_gradient_boosting", {"learning_rate": 0.1, "max_iter": 50}, {"tags": {"team": "a"}})
    kind, status, payload = conn.execute("select kind, status, payload from ml.jobs where id = %s", (job,)).fetchone()
    assert (kind, status) == ("train", "queued")
    assert payload == {
        "project_id": project_id, "dataset_id": dataset, "algorithm": "hist_gradient_boosting",
        "hyperparams": {"learning_rate": 0.1, "max_iter": 50},
        "options": {"split": "stratified", "test_size": 0.2, "cv_folds": None, "random_state": 42,
                    "model": "churn", "tags": {"team": "a"}},
    }
    assert one(conn, "select ml.job_result(%s) ->> 'status'", job) == "queued"


def test_train_keeps_the_options_given(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    options = {"split": "time", "test_size": 0.25, "cv_folds": 5, "random_state": 7, "model": "churn-gbm"}
    job = train(conn, project[1], "random_forest", {}, options)
    assert one(conn, "select payload -> 'options' from ml.jobs where id = %s", job) == {**options, "tags": {}}


def test_an_ml_engineer_trains_and_a_viewer_may_not(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    engineer, viewer = member(conn, tenant, "ml_engineer"), member(conn, tenant, "viewer")
    with tenant_context(conn, tenant, user=engineer):
        job = train(conn, project[1])
    assert one(conn, "select created_by::text from ml.jobs where id = %s", job) == engineer
    with refused("42501"), tenant_context(conn, tenant, user=viewer):
        train(conn, project[1])


@pytest.mark.parametrize("algorithm,hyperparams,message", [
    ("xgboost", {}, r"algorithm: unknown algorithm 'xgboost'"),
    ("ridge", {}, r"algorithm: ridge does not support task classification \(it supports: regression\)"),
    ("hist_gradient_boosting", {"learning_rate": 0}, r"hyperparams: \$\.learning_rate: must be > 0, got 0"),
    ("hist_gradient_boosting", {"learning_rate": 1.5}, r"hyperparams: \$\.learning_rate: must be <= 1, got 1.5"),
    ("hist_gradient_boosting", {"max_iter": 0}, r"hyperparams: \$\.max_iter: must be >= 1, got 0"),
    ("hist_gradient_boosting", {"max_iter": 2.5}, r"hyperparams: \$\.max_iter: must be of type integer, got a fraction"),
    ("hist_gradient_boosting", {"max_iter": "100"}, r"hyperparams: \$\.max_iter: must be of type integer, got string"),
    ("hist_gradient_boosting", {"learnin_rate": 0.1}, r"hyperparams: \$\.learnin_rate: is not an allowed property"),
    ("random_forest", {"n_estimators": 0}, r"hyperparams: \$\.n_estimators: must be >= 1"),
    ("random_forest", {"max_features": "half"}, r"hyperparams: \$\.max_features: must match pattern"),
    ("random_forest", {"max_features": 1.5}, r"hyperparams: \$\.max_features: a fraction must be <= 1, got 1.5"),
    ("random_forest", {"criterion": "squared_error"}, r"hyperparams: \$\.criterion: must be one of \[\"gini\""),
    ("logistic_regression", {"penalty": "l3"}, r"hyperparams: \$\.penalty: must be one of"),
    ("logistic_regression", {"C": -1}, r"hyperparams: \$\.C: must be > 0, got -1"),
    ("svm", {"kernel": "precomputed"}, r"hyperparams: \$\.kernel: must be one of"),
    ("svm", {"gamma": "fast"}, r"hyperparams: \$\.gamma: must match pattern"),
    ("svm", {"epsilon": 0.1}, r"hyperparams: \$\.epsilon: applies to regression only, not to classification"),
    ("knn", {"weights": "inverse"}, r"hyperparams: \$\.weights: must be one of"),
    ("mlp", {"hidden_sizes": [64, 0]}, r"hyperparams: \$\.hidden_sizes\[1\]: must be >= 1, got 0"),
    ("mlp", {"hidden_sizes": 64}, r"hyperparams: \$\.hidden_sizes: must be of type array, got number"),
    ("mlp", {"dropout": 1}, r"hyperparams: \$\.dropout: must be < 1, got 1"),
])
def test_bad_algorithms_and_hyperparameters_are_refused_before_anything_is_queued(
        conn: Conn, tenant: str, project: tuple[str, str], algorithm: str, hyperparams: dict[str, Any], message: str) -> None:
    before = jobs(conn, tenant)
    with refused("22023", message):
        train(conn, project[1], algorithm, hyperparams)
    assert jobs(conn, tenant) == before


def test_every_broken_rule_is_listed_in_the_detail(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    with refused("22023") as info:
        train(conn, project[1], "hist_gradient_boosting", {"learning_rate": 0, "max_iter": 0})
    assert "2 rule(s) broken" in info.value.diag.message_detail  # type: ignore[union-attr]


def test_an_unknown_algorithm_hint_lists_the_known_ones(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    with refused("22023") as info:
        train(conn, project[1], "xgboost")
    assert "hist_gradient_boosting" in info.value.diag.message_hint  # type: ignore[union-attr]


@pytest.mark.parametrize("options,message", [
    ({"test_size": 0.9}, r"options: \$\.test_size: must be <= 0.5, got 0.9"),
    ({"split": "shuffle"}, r"options: \$\.split: must be one of"),
    ({"cv_folds": 1}, r"options: \$\.cv_folds: must be >= 2"),
    ({"random_state": -1}, r"options: \$\.random_state: must be >= 0"),
    ({"model": "Bad Name"}, r"options: \$\.model: must match pattern"),
    ({"epochs": 3}, r"options: \$\.epochs: is not an allowed property"),
])
def test_bad_options_are_refused_before_anything_is_queued(conn: Conn, tenant: str, project: tuple[str, str],
                                                           options: dict[str, Any], message: str) -> None:
    with refused("22023", message):
        train(conn, project[1], options=options)
    assert jobs(conn, tenant) == 0


def test_a_stratified_split_needs_a_classification_project(conn: Conn, tenant: str) -> None:
    conn.execute("select ml.create_project('spend', 'regression', 'churned')")
    dataset = labelled_dataset(conn)
    with refused("22023", "stratified needs a classification project"):
        train(conn, dataset, "ridge", options={"split": "stratified"}, project="spend")
    assert one(conn, "select payload -> 'options' ->> 'split' from ml.jobs where id = %s",
               train(conn, dataset, "ridge", project="spend")) == "random"


def test_the_dataset_must_carry_the_projects_target(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    other = labelled_dataset(conn, "other_label", label="left")
    with refused("22023", "has label 'left', but project churn learns target 'churned'"):
        train(conn, other)
    assert jobs(conn, tenant) == 0


def test_unknown_projects_and_datasets(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    with refused("P0002", "project 'nope' does not exist"):
        train(conn, project[1], project="nope")
    with refused("P0002", "dataset .* does not exist"):
        train(conn, "00000000-0000-0000-0000-000000000000")


def test_another_tenants_dataset_is_not_found(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    theirs = one(conn, "select ml.create_tenant('theirs')")
    conn.execute("select set_config('pgmlops.tenant_id', %s, false)", (str(theirs),))
    conn.execute("select ml.create_project('churn', 'classification', 'churned')")
    with refused("P0002", "dataset .* does not exist"):
        train(conn, project[1])


# -- runs ---------------------------------------------------------------------------------------


def start_run(conn: Conn, project_id: str, dataset: str, job: int | None = None, **extra: Any) -> str:
    return str(one(conn, "select ml.start_run(%s, %s, 'hist_gradient_boosting', %s, %s, %s, %s, %s, %s)",
                   project_id, job, Jsonb({"max_iter": 10}), Jsonb({"split": "stratified"}), dataset,
                   Jsonb(extra.get("library_versions", {"sklearn": "1.9.1", "pgmlops": "0.1"})),
                   extra.get("study_id"), extra.get("trial_number")))


def test_a_run_records_what_was_trained_and_how_it_did(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    project_id, dataset = project
    job = train(conn, dataset)
    run = start_run(conn, project_id, dataset, job)
    row = conn.execute("select status, job_id, algorithm, hyperparams, dataset_id::text, dataset_hash, code_version, "
                       "finished_at from ml.runs where id = %s", (run,)).fetchone()
    content_hash = one(conn, "select content_hash from ml.datasets where id = %s", dataset)
    assert row == ("running", job, "hist_gradient_boosting", {"max_iter": 10}, dataset, content_hash, "0.1", None)

    assert one(conn, "select ml.log_run_metrics(%s, 1, %s)", run, Jsonb({"val_loss": 0.5, "val_roc_auc": 0.7})) == 2
    assert one(conn, "select ml.log_run_metrics(%s, 2, %s)", run, Jsonb({"val_loss": 0.4})) == 1
    conn.execute("select ml.finish_run(%s, 'succeeded', %s, 1.5, 2048, 0.3)", (run, Jsonb({"roc_auc": 0.9})))

    status, metrics, seconds, size, latency, finished = conn.execute(
        "select status, metrics, train_seconds, model_size_bytes, inference_latency_ms, finished_at is not null "
        "from ml.runs where id = %s", (run,)).fetchone()
    assert (status, metrics, seconds, size, latency, finished) == ("succeeded", {"roc_auc": 0.9}, 1.5, 2048, 0.3, True)
    steps = conn.execute("select step, name, value from ml.run_metrics where run_id = %s order by step, name", (run,)).fetchall()
    assert steps == [(1, "val_loss", 0.5), (1, "val_roc_auc", 0.7), (2, "val_loss", 0.4)]
    assert one(conn, "select count(*) from ml.events where tenant_id = %s and event = 'run.succeeded'", tenant) == 1


def test_a_run_is_downstream_of_its_dataset(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    run = start_run(conn, *project)
    lineage = one(conn, "select ml.lineage_of('run', %s)", run)
    assert [(n["kind"], n["depth"]) for n in lineage["upstream"]] == [("dataset", 1), ("feature_group", 2)]
    assert lineage["node"]["name"] == f"churn hist_gradient_boosting run {run[:8]}"


def test_a_trial_run_names_its_study_and_number(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    study = "8d3c4f7e-1111-4222-8333-944455556666"
    run = start_run(conn, *project, study_id=study, trial_number=3)
    assert conn.execute("select study_id::text, trial_number from ml.runs where id = %s", (run,)).fetchone() == (study, 3)


def test_a_finished_run_takes_no_more_metrics_and_does_not_finish_twice(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    run = start_run(conn, *project)
    conn.execute("select ml.finish_run(%s, 'pruned', '{}', 0.1, null, null)", (run,))
    with refused("55000", "has finished"):
        conn.execute("select ml.log_run_metrics(%s, 3, '{\"loss\": 1}')", (run,))
    with refused("55000", "has already finished"):
        conn.execute("select ml.finish_run(%s, 'succeeded', '{}', 0.1, null, null)", (run,))


def test_a_failed_run_keeps_its_error(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    run = start_run(conn, *project)
    conn.execute("select ml.finish_run(%s, 'failed', null, 0.1, null, null, 'ValueError: no rows')", (run,))
    assert conn.execute("select status, error from ml.runs where id = %s", (run,)).fetchone() == ("failed", "ValueError: no rows")


@pytest.mark.parametrize("call,message", [
    ("select ml.log_run_metrics(%(run)s, -1, '{}')", "step: must be >= 0"),
    ("select ml.log_run_metrics(%(run)s, 1, '{\"loss\": \"low\"}')", r"metrics: \$\.loss: must be a number, got string"),
    ("select ml.log_run_metrics(%(run)s, 1, '[1]')", "metrics: must be a JSON object of numbers"),
    ("select ml.finish_run(%(run)s, 'done', '{}', 1, 1, 1)", "status: must be one of succeeded, failed, pruned"),
    ("select ml.finish_run(%(run)s, 'succeeded', '{}', -1, 1, 1)", "must not be negative"),
])
def test_worker_side_rules(conn: Conn, tenant: str, project: tuple[str, str], call: str, message: str) -> None:
    run = start_run(conn, *project)
    with refused("22023", message):
        conn.execute(call, {"run": run})


def test_a_run_needs_a_known_project_algorithm_dataset_and_job(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    project_id, dataset = project
    nobody = "00000000-0000-0000-0000-000000000000"
    with refused("P0002", "project .* does not exist"):
        start_run(conn, nobody, dataset)
    with refused("P0002", "dataset .* does not exist"):
        start_run(conn, project_id, nobody)
    with refused("P0002", "job 999999 does not exist"):
        start_run(conn, project_id, dataset, 999999)
    with refused("22023", "unknown algorithm"):
        conn.execute("select ml.start_run(%s, null, 'xgboost', '{}', '{}', %s, '{}')", (project_id, dataset))
    with refused("P0002", "run .* does not exist"):
        conn.execute("select ml.finish_run(%s, 'succeeded', '{}', 1, 1, 1)", (nobody,))


def test_runs_are_recorded_by_workers_only(conn: Conn, tenant: str, project: tuple[str, str]) -> None:
    owner = member(conn, tenant, "owner")
    run = start_run(conn, *project)
    with refused("42501"), tenant_context(conn, tenant, user=owner):
        start_run(conn, *project)
    with refused("42501"), tenant_context(conn, tenant, user=owner):
        conn.execute("select ml.finish_run(%s, 'succeeded', '{}', 1, 1, 1)", (run,))
    # a member reads the tenant's runs and metrics through RLS
    with tenant_context(conn, tenant, user=owner):
        assert one(conn, "select count(*) from ml.runs") == 1
