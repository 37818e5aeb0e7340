"""Training: real fits on real data (scikit-learn's bundled data sets and generated data), metrics
checked against scikit-learn's own functions, splits, cross-validation, intermediate values, and
the ``train`` job end to end on the real server (feature store -> training set -> ml.train ->
worker -> run and model version -> artifact that predicts)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
from sklearn import metrics as skm
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine, make_classification
from sklearn.model_selection import StratifiedKFold

from pgmlops import features, training
from pgmlops import features as datasets
from pgmlops.errors import LeaseLost
from pgmlops.jobs.worker import Worker
from pgmlops.models import artifacts
from pgmlops.training import TrainingError, fit

from .conftest import act_for, make_tenant

Conn = psycopg.Connection[Any]


# -- data ------------------------------------------------------------------------------------------


def breast_cancer(n: int | None = None) -> pd.DataFrame:
    frame = load_breast_cancer(as_frame=True).frame
    return frame if n is None else frame.sample(n=n, random_state=0)


def diabetes() -> pd.DataFrame:
    return load_diabetes(as_frame=True).frame


def wine() -> pd.DataFrame:
    return load_wine(as_frame=True).frame


def generated(n: int = 200, seed: int = 0) -> pd.DataFrame:
    X, y = make_classification(n_samples=n, n_features=6, n_informative=4, random_state=seed)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(6)])
    frame["label"] = y
    return frame


def with_outliers(n: int = 300, outliers: int = 15, seed: int = 0) -> pd.DataFrame:
    """Gaussian inliers and uniform outliers far from them; label 1 marks an outlier."""
    rng = np.random.default_rng(seed)
    inliers = rng.normal(0.0, 1.0, size=(n - outliers, 4))
    far = rng.uniform(5.0, 8.0, size=(outliers, 4)) * rng.choice([-1.0, 1.0], size=(outliers, 4))
    frame = pd.DataFrame(np.vstack([inliers, far]), columns=["a", "b", "c", "d"])
    frame["is_outlier"] = [0] * (n - outliers) + [1] * outliers
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def mixed(n: int = 160, seed: int = 0) -> pd.DataFrame:
    """Every input dtype a training set may hold, with missing values, and a label they explain."""
    rng = np.random.default_rng(seed)
    amount = rng.normal(50, 10, n)
    plan = rng.choice(["free", "pro", "team"], n)
    active = rng.integers(0, 2, n).astype(bool)
    frame = pd.DataFrame({
        "amount": amount,
        "visits": pd.array(rng.integers(0, 20, n), dtype="Int64"),
        "plan": pd.Series(plan, dtype=object),
        "active": pd.array(active, dtype="boolean"),
        "signed_up": pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 365, n), unit="D"),
        "embedding": [rng.normal(size=3) for _ in range(n)],
    })
    frame["churned"] = ((amount < 50) & (plan != "team")) | ~active
    frame.loc[0, "amount"] = np.nan
    frame.loc[1, "visits"] = pd.NA
    frame.loc[2, "plan"] = None
    frame.loc[3, "active"] = pd.NA
    frame.loc[4, "embedding"] = None
    return frame


def held_out(result: training.FitResult, frame: pd.DataFrame, target: str | None) -> tuple[pd.DataFrame, Any]:
    rows = frame.loc[result.test_index]
    return rows.drop(columns=[target]) if target else rows, rows[target].to_numpy() if target else None


def assert_close(actual: dict[str, float], expected: dict[str, float]) -> None:
    assert set(expected) <= set(actual), sorted(set(expected) - set(actual))
    for name, value in expected.items():
        assert actual[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name


# -- metrics equal scikit-learn's ---------------------------------------------------------------------


def test_binary_classification_metrics_equal_scikit_learns_on_breast_cancer() -> None:
    frame = breast_cancer()
    result = fit(frame, "classification", "target", "logistic_regression", {"C": 0.5})
    X, y = held_out(result, frame, "target")
    pred, proba = result.model.predict(X), result.model.predict_proba(X)[:, 1]
    assert result.classes == [0, 1]
    assert_close(result.metrics, {
        "accuracy": skm.accuracy_score(y, pred),
        "precision": skm.precision_score(y, pred),
        "recall": skm.recall_score(y, pred),
        "f1": skm.f1_score(y, pred),
        "roc_auc": skm.roc_auc_score(y, proba),
        "pr_auc": skm.average_precision_score(y, proba),
        "log_loss": skm.log_loss(y, result.model.predict_proba(X)),
        "brier": skm.brier_score_loss(y, proba),
    })
    assert result.metrics["roc_auc"] > 0.97


def test_multiclass_metrics_are_macro_averages_and_one_vs_rest_on_wine() -> None:
    frame = wine()
    result = fit(frame, "classification", "target", "random_forest", {"n_estimators": 25})
    X, y = held_out(result, frame, "target")
    pred, proba = result.model.predict(X), result.model.predict_proba(X)
    onehot = np.column_stack([(y == c).astype(int) for c in (0, 1, 2)])
    assert_close(result.metrics, {
        "accuracy": skm.accuracy_score(y, pred),
        "precision": skm.precision_score(y, pred, average="macro"),
        "recall": skm.recall_score(y, pred, average="macro"),
        "f1": skm.f1_score(y, pred, average="macro"),
        "roc_auc": skm.roc_auc_score(y, proba, multi_class="ovr", average="macro"),
        "pr_auc": skm.average_precision_score(onehot, proba, average="macro"),
        "log_loss": skm.log_loss(y, proba, labels=[0, 1, 2]),
        "brier": np.mean([skm.brier_score_loss(onehot[:, k], proba[:, k]) for k in range(3)]),
    })


CLASSIFIERS = [name for name, tasks in training.ALGORITHMS.items() if "classification" in tasks]


@pytest.mark.parametrize("algorithm", CLASSIFIERS)
def test_label_metrics_equal_scikit_learns_on_what_predict_returns_for_every_classifier(algorithm: str) -> None:
    frame = wine()  # three classes: argmax over more than a sign
    result = fit(frame, "classification", "target", algorithm, SMALL.get(algorithm, {}))
    X, y = held_out(result, frame, "target")
    pred = result.model.predict(X)
    assert_close(result.metrics, {
        "accuracy": skm.accuracy_score(y, pred),
        "precision": skm.precision_score(y, pred, average="macro", zero_division=0),
        "recall": skm.recall_score(y, pred, average="macro", zero_division=0),
        "f1": skm.f1_score(y, pred, average="macro", zero_division=0),
        "log_loss": skm.log_loss(y, result.model.predict_proba(X), labels=[0, 1, 2]),
    })


def test_labels_come_from_predict_where_probabilities_tie() -> None:
    """A decision of +1e-20 is class 1 for predict, but its probabilities round to 0.5 and 0.5,
    whose argmax is class 0: the labels the metrics use must still be predict's."""
    from sklearn.linear_model import LogisticRegression

    from pgmlops.training import _training

    frame = generated(100)
    X, y = frame.drop(columns=["label"]).to_numpy(), frame["label"].to_numpy()
    model = LogisticRegression().fit(X, y)
    model.coef_[:] = 0.0
    model.intercept_[:] = 1e-20
    assert (model.predict_proba(X) == 0.5).all() and (model.predict(X) == 1).all()
    labels, proba = _training._labels_and_proba(model, X, [0, 1])
    assert (labels == model.predict(X)).all()
    assert (proba == model.predict_proba(X)).all()


def test_regression_metrics_equal_scikit_learns_on_diabetes() -> None:
    frame = diabetes()
    result = fit(frame, "regression", "target", "ridge", {"alpha": 1.0})
    X, y = held_out(result, frame, "target")
    pred = result.model.predict(X)
    assert_close(result.metrics, {
        "mae": skm.mean_absolute_error(y, pred),
        "rmse": skm.root_mean_squared_error(y, pred),
        "r2": skm.r2_score(y, pred),
        "mape": skm.mean_absolute_percentage_error(y, pred),
    })
    assert result.metrics["r2"] > 0.3


def test_anomaly_metrics_score_outliers_higher_and_count_precision_at_k() -> None:
    frame = with_outliers()
    result = fit(frame, "anomaly_detection", "is_outlier", "isolation_forest", {"n_estimators": 50},
                 {"test_size": 0.5})
    X, y = held_out(result, frame, "is_outlier")
    scores = training.anomaly_scores(result.model, X)
    k = int(y.sum())
    top = np.argsort(-scores, kind="stable")[:k]
    assert_close(result.metrics, {
        "roc_auc": skm.roc_auc_score(y, scores),
        "pr_auc": skm.average_precision_score(y, scores),
        "precision_at_k": y[top].mean(),
    })
    assert result.metrics["roc_auc"] > 0.95
    assert "is_outlier" not in [c["name"] for c in result.signature["inputs"]]


def test_precision_at_k_takes_k_from_the_options() -> None:
    frame = with_outliers()
    result = fit(frame, "anomaly_detection", "is_outlier", "isolation_forest", {"n_estimators": 30},
                 {"test_size": 0.5, "k": 3})
    X, y = held_out(result, frame, "is_outlier")
    top = np.argsort(-training.anomaly_scores(result.model, X), kind="stable")[:3]
    assert result.metrics["precision_at_k"] == pytest.approx(y[top].mean())


def test_anomaly_detection_trains_without_labels_and_reports_no_quality_metrics() -> None:
    frame = with_outliers().drop(columns=["is_outlier"])
    result = fit(frame, "anomaly_detection", None, "local_outlier_factor", {"n_neighbors": 10})
    assert "roc_auc" not in result.metrics
    assert {"train_seconds", "model_size_bytes", "inference_latency_ms"} <= set(result.metrics)
    assert training.anomaly_scores(result.model, frame.head(3)).shape == (3,)


# -- every algorithm ---------------------------------------------------------------------------------

SMALL = {
    "random_forest": {"n_estimators": 10}, "extra_trees": {"n_estimators": 10},
    "gradient_boosting": {"n_estimators": 10}, "hist_gradient_boosting": {"max_iter": 10},
    "isolation_forest": {"n_estimators": 20}, "local_outlier_factor": {"n_neighbors": 10},
    "mlp": {"hidden_sizes": [16], "epochs": 10, "lr": 0.01, "batch_size": 32},
    "autoencoder": {"hidden_sizes": [8], "latent_dim": 2, "epochs": 10, "lr": 0.01},
}
CASES = [(name, task) for name, tasks in training.ALGORITHMS.items() for task in tasks]


@pytest.mark.parametrize(("algorithm", "task"), CASES, ids=[f"{a}-{t}" for a, t in CASES])
def test_every_algorithm_fits_and_predicts_on_small_data(algorithm: str, task: str) -> None:
    frame = {"classification": generated(150), "regression": diabetes().head(150),
             "anomaly_detection": with_outliers(150, 8)}[task]
    target = {"classification": "label", "regression": "target", "anomaly_detection": "is_outlier"}[task]
    result = fit(frame, task, target, algorithm, SMALL.get(algorithm, {}))
    X, y = held_out(result, frame, target)
    if task == "classification":
        assert set(result.model.predict(X)) <= {0, 1}
        assert result.model.predict_proba(X).shape == (len(X), 2)
        assert result.metrics["roc_auc"] > 0.6
    elif task == "regression":
        assert result.model.predict(X).shape == (len(X),)
        assert "rmse" in result.metrics
    else:
        assert np.isfinite(training.anomaly_scores(result.model, X)).all()
        assert result.metrics["roc_auc"] > 0.8
    assert result.artifact_format == ("torch" if algorithm in ("mlp", "autoencoder") else "skops")
    assert result.metrics["model_size_bytes"] == len(result.artifact) == result.model_size_bytes
    assert result.metrics["inference_latency_ms"] > 0 and result.metrics["train_seconds"] > 0


def test_the_latency_probe_times_a_few_single_row_predictions_after_one_warm_up() -> None:
    from pgmlops.training import _training

    frame = generated(150)
    result = fit(frame, "classification", "label", "logistic_regression", {}, {"latency_rows": 3})
    X, _ = held_out(result, frame, "label")
    rows: list[int] = []
    predict = result.model.predict
    result.model.predict = lambda X: (rows.append(len(X)), predict(X))[1]  # type: ignore[method-assign]
    latency = _training._single_row_latency(result.model, "classification", X, _training.LATENCY_ROWS)
    assert rows == [1] * (1 + _training.LATENCY_ROWS)
    assert 0 < latency < 1000
    assert result.metrics["inference_latency_ms"] > 0


def test_the_latency_probe_of_a_slow_model_stops_at_its_time_budget() -> None:
    import time

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    from pgmlops.training import _training

    def slow(X: Any) -> Any:
        time.sleep(0.06)
        return X

    frame = generated(60)
    X, y = frame.drop(columns=["label"]), frame["label"]
    model = Pipeline([("slow", FunctionTransformer(slow)), ("model", LogisticRegression())]).fit(X, y)
    started = time.perf_counter()
    latency = _training._single_row_latency(model, "classification", X, 20)
    assert 60 <= latency < 200
    # One warm-up, then timed predictions until 0.1 s went on them: two, not twenty.
    assert time.perf_counter() - started < 0.06 * 5


def test_an_mlp_learns_the_breast_cancer_data() -> None:
    frame = breast_cancer()
    result = fit(frame, "classification", "target", "mlp", {"hidden_sizes": [32], "epochs": 15, "lr": 0.01},
                 {"learning_curve": True})
    assert result.metrics["roc_auc"] > 0.97
    assert [step for step, _ in result.steps] == list(range(1, 16))
    losses = [values["train_loss"] for _, values in result.steps]
    assert losses[-1] < losses[0]


def test_an_autoencoder_finds_the_injected_outliers() -> None:
    frame = with_outliers()
    result = fit(frame, "anomaly_detection", "is_outlier", "autoencoder",
                 {"hidden_sizes": [8], "latent_dim": 2, "epochs": 20, "lr": 0.01}, {"test_size": 0.5})
    assert result.metrics["roc_auc"] > 0.95


# -- preprocessing and signature ------------------------------------------------------------------------


def test_preprocessing_imputes_scales_and_one_hot_encodes_inside_the_pipeline() -> None:
    frame = mixed()
    result = fit(frame, "classification", "churned", "logistic_regression")
    assert [name for name, _ in result.model.steps] == ["inputs", "preprocess", "model"]
    preprocess = result.model.named_steps["preprocess"]
    numeric, categorical = preprocess.transformers_[0], preprocess.transformers_[1]
    assert numeric[2] == ["amount", "visits", "signed_up", "embedding[0]", "embedding[1]", "embedding[2]"]
    assert [type(s).__name__ for _, s in numeric[1].steps] == ["SimpleImputer", "StandardScaler"]
    assert numeric[1].named_steps["impute"].strategy == "median"
    assert categorical[2] == ["plan", "active"]
    assert categorical[1].named_steps["impute"].strategy == "most_frequent"
    assert categorical[1].named_steps["onehot"].handle_unknown == "ignore"
    # Missing values, an unseen category and a missing vector all score.
    raw = frame.drop(columns=["churned"]).head(3).copy()
    raw["plan"] = ["enterprise", None, "pro"]
    raw["amount"] = [np.nan, 40.0, 60.0]
    raw["embedding"] = [None, np.zeros(3), np.ones(3)]
    assert result.model.predict_proba(raw).shape == (3, 2)
    assert result.metrics["accuracy"] > 0.8


def test_the_signature_lists_inputs_in_order_with_dtypes_outputs_and_classes() -> None:
    result = fit(mixed(), "classification", "churned", "decision_tree", {"max_depth": 3})
    assert result.signature == {
        "inputs": [{"name": "amount", "dtype": "float"}, {"name": "visits", "dtype": "int"},
                   {"name": "plan", "dtype": "text"}, {"name": "active", "dtype": "bool"},
                   {"name": "signed_up", "dtype": "timestamp"}, {"name": "embedding", "dtype": "vector(3)"}],
        "outputs": [{"name": "prediction", "dtype": "bool"}, {"name": "probabilities", "dtype": "float[]"}],
        "task": "classification",
        "classes": [False, True],
    }


def test_rows_without_a_label_are_dropped() -> None:
    frame = generated(100)
    frame["label"] = frame["label"].astype("Int64")
    frame.loc[:9, "label"] = pd.NA
    result = fit(frame, "classification", "label", "knn")
    assert result.dropped_rows == 10
    assert result.n_train + result.n_test == 90


# -- splits ---------------------------------------------------------------------------------------------


def test_a_time_split_trains_on_the_past_and_tests_on_the_future() -> None:
    frame = generated(200)
    rng = np.random.default_rng(1)
    frame["event_time"] = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(rng.permutation(200), unit="h")
    result = fit(frame, "classification", "label", "logistic_regression", options={"split": "time", "test_size": 0.25})
    times = frame["event_time"]
    assert result.n_test == 50
    assert times.loc[result.test_index].min() > times.loc[result.train_index].max()
    assert sorted(times.loc[result.test_index]) == sorted(times.nlargest(50))
    assert "event_time" not in [c["name"] for c in result.signature["inputs"]]


def test_a_time_split_needs_an_event_time() -> None:
    with pytest.raises(TrainingError, match="event_time"):
        fit(generated(50), "classification", "label", "logistic_regression", options={"split": "time"})


def test_a_stratified_split_keeps_the_class_shares() -> None:
    frame = generated(200)
    frame["label"] = (np.arange(200) < 40).astype(int)  # 20% positives
    result = fit(frame, "classification", "label", "logistic_regression", options={"test_size": 0.25})
    assert result.options["split"] == "stratified"
    assert frame.loc[result.test_index, "label"].sum() == 10
    assert frame.loc[result.train_index, "label"].sum() == 30


def test_a_random_split_holds_out_test_size_of_the_rows_reproducibly() -> None:
    frame = diabetes()
    first = fit(frame, "regression", "target", "linear_regression", options={"test_size": 0.3, "random_state": 7})
    again = fit(frame, "regression", "target", "linear_regression", options={"test_size": 0.3, "random_state": 7})
    assert first.n_test == math.ceil(len(frame) * 0.3)
    assert list(first.test_index) == list(again.test_index)
    assert set(first.test_index).isdisjoint(first.train_index)


def test_split_names_the_rows_fit_trains_and_tests_on() -> None:
    frame = generated(120)
    frame.loc[[3, 7], "label"] = np.nan
    train_rows, test_rows = training.split(frame, "classification", "label", {"random_state": 3})
    result = fit(frame, "classification", "label", "knn", options={"random_state": 3})
    assert list(train_rows) == list(result.train_index) and list(test_rows) == list(result.test_index)
    assert {3, 7}.isdisjoint(set(train_rows) | set(test_rows))


def test_cross_validation_reports_the_mean_and_std_of_each_metric_over_the_folds() -> None:
    frame = breast_cancer(300)
    result = fit(frame, "classification", "target", "logistic_regression", options={"cv_folds": 3, "random_state": 5})
    X = frame.loc[result.train_index].drop(columns=["target"])
    y = frame.loc[result.train_index, "target"].to_numpy()
    folds = []
    for train, valid in StratifiedKFold(3, shuffle=True, random_state=5).split(X, y):
        model = clone(result.model).fit(X.iloc[train], y[train])
        folds.append(skm.roc_auc_score(y[valid], model.predict_proba(X.iloc[valid])[:, 1]))
    assert result.metrics["cv_roc_auc_mean"] == pytest.approx(np.mean(folds))
    assert result.metrics["cv_roc_auc_std"] == pytest.approx(np.std(folds))
    assert {"cv_accuracy_mean", "cv_log_loss_std", "cv_brier_mean"} <= set(result.metrics)
    assert result.score("roc_auc") == result.metrics["cv_roc_auc_mean"]


# -- intermediate values ------------------------------------------------------------------------------


def test_boosting_reports_every_iteration_to_the_callback() -> None:
    seen: list[tuple[int, float]] = []
    result = fit(generated(200), "classification", "label", "hist_gradient_boosting", {"max_iter": 12},
                 report=lambda step, value: seen.append((step, value)))
    assert [step for step, _ in seen] == list(range(1, 13))
    assert [step for step, _ in result.steps] == list(range(1, 13))
    assert seen[-1][1] == pytest.approx(result.metrics["roc_auc"])


def test_gradient_boosting_steps_match_its_staged_predictions() -> None:
    frame = diabetes()
    result = fit(frame, "regression", "target", "gradient_boosting", {"n_estimators": 8}, {"learning_curve": True})
    X, y = held_out(result, frame, "target")
    model = result.model
    staged = list(model.named_steps["model"].staged_predict(model[:-1].transform(X)))
    assert [step for step, _ in result.steps] == list(range(1, 9))
    for (_, values), pred in zip(result.steps, staged, strict=True):
        assert values["rmse"] == pytest.approx(skm.root_mean_squared_error(y, pred))


class Pruned(Exception):
    pass


def test_a_report_that_raises_stops_the_fit_there() -> None:
    seen: list[int] = []

    def report(step: int, value: float) -> None:
        seen.append(step)
        if step == 3:
            raise Pruned

    with pytest.raises(Pruned):
        fit(breast_cancer(200), "classification", "target", "mlp", {"epochs": 20, "hidden_sizes": [8]}, report=report)
    assert seen == [1, 2, 3]


def test_forests_grow_in_stages_only_when_a_report_or_the_curve_is_wanted() -> None:
    frame = generated(150)
    plain = fit(frame, "classification", "label", "random_forest", {"n_estimators": 20})
    seen: list[int] = []
    staged = fit(frame, "classification", "label", "random_forest", {"n_estimators": 20},
                 report=lambda step, value: seen.append(step))
    curve = fit(frame, "classification", "label", "random_forest", {"n_estimators": 20}, {"learning_curve": True})
    assert plain.steps == []
    assert seen == [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]
    assert [step for step, _ in curve.steps] == seen
    assert len(staged.model.named_steps["model"].estimators_) == 20
    # Grown in stages or at once, the same forest.
    assert curve.metrics["roc_auc"] == plain.metrics["roc_auc"]


@pytest.mark.parametrize(("algorithm", "hyperparams"), [
    ("hist_gradient_boosting", {"max_iter": 12}),
    ("gradient_boosting", {"n_estimators": 12}),
    ("mlp", {"hidden_sizes": [8], "epochs": 12}),
    ("extra_trees", {"n_estimators": 12}),
])
def test_the_learning_curve_is_absent_by_default_and_present_when_asked_or_reported(
        algorithm: str, hyperparams: dict[str, Any]) -> None:
    frame = generated(200)
    plain = fit(frame, "classification", "label", algorithm, hyperparams)
    asked = fit(frame, "classification", "label", algorithm, hyperparams, {"learning_curve": True})
    reported: list[int] = []
    pruning = fit(frame, "classification", "label", algorithm, hyperparams,
                  report=lambda step, value: reported.append(step))
    assert plain.steps == []
    assert [step for step, _ in asked.steps] == [step for step, _ in pruning.steps] == reported
    assert reported[-1] == 12 and len(reported) >= 6
    assert all("roc_auc" in values for _, values in asked.steps)
    # The curve's last step is the model the test metrics describe.
    assert asked.steps[-1][1]["roc_auc"] == pytest.approx(asked.metrics["roc_auc"])
    # Evaluating steps changes nothing about the model itself.
    assert asked.metrics["roc_auc"] == pytest.approx(plain.metrics["roc_auc"])


def test_on_step_is_called_every_epoch_without_a_curve_and_may_stop_the_fit() -> None:
    polled: list[int] = []

    def lost_at_four(step: int) -> None:
        polled.append(step)
        if step == 4:
            raise Pruned

    with pytest.raises(Pruned):
        fit(breast_cancer(200), "classification", "target", "mlp", {"epochs": 20, "hidden_sizes": [8]},
            on_step=lost_at_four)
    assert polled == [1, 2, 3, 4]


def test_the_reported_metric_comes_from_the_options() -> None:
    seen: list[float] = []
    result = fit(diabetes(), "regression", "target", "hist_gradient_boosting", {"max_iter": 5}, {"metric": "mae"},
                 report=lambda step, value: seen.append(value))
    assert seen[-1] == pytest.approx(result.metrics["mae"])


# -- bad input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "message"), [
    ({"algorithm": "xgboost"}, "unknown algorithm 'xgboost'"),
    ({"algorithm": "ridge"}, "ridge does not support task classification"),
    ({"hyperparams": {"n_trees": 3}, "algorithm": "random_forest"}, "hyperparams: .*n_trees"),
    ({"hyperparams": {"max_depth": -1}, "algorithm": "decision_tree"}, "hyperparams: .*max_depth"),
    ({"target": "nope"}, "column 'nope' is missing"),
    ({"options": {"split": "time"}}, "needs an event_time column"),
    ({"options": {"test_size": 0.9}}, "test_size"),
    ({"options": {"metric": "rmse"}}, "metric"),
    ({"options": {"learning_curve": "yes"}}, "learning_curve: must be true or false"),
])
def test_bad_input_is_a_training_error_naming_the_problem(change: dict[str, Any], message: str) -> None:
    args = {"target": "label", "algorithm": "logistic_regression", "hyperparams": {}, "options": {}} | change
    with pytest.raises(TrainingError, match=message):
        fit(generated(60), "classification", args["target"], args["algorithm"], args["hyperparams"], args["options"])


def test_a_label_with_one_class_is_refused() -> None:
    frame = generated(60).assign(label=1)
    with pytest.raises(TrainingError, match="one class only"):
        fit(frame, "classification", "label", "logistic_regression")


# -- the train job, end to end ----------------------------------------------------------------------------

FEATURES = ["mean radius", "mean texture", "mean smoothness", "worst area", "worst concavity"]


def feature_name(column: str) -> str:
    return column.replace(" ", "_")


@pytest.fixture
def db(fresh_db_url: str) -> Iterator[tuple[str, Conn, str]]:
    with psycopg.connect(fresh_db_url, autocommit=True) as conn:
        tenant = make_tenant(conn)
        act_for(conn, tenant)
        yield fresh_db_url, conn, tenant


def breast_cancer_training_set(conn: Conn, n: int = 240, label: pd.Series | None = None) -> str:
    """The breast cancer data in feature group `tumours`, a spine of labels one hour after each
    measurement, and the point-in-time training set built from them; returns its id."""
    data = breast_cancer(n).reset_index(drop=True)
    keys = [f"t{i}" for i in range(len(data))]
    times = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(np.arange(len(data)), unit="h")
    features.create_group(conn, "tumours", "tumour", {feature_name(c): {"dtype": "float"} for c in FEATURES})
    values = pd.DataFrame({"tumour": keys, "event_time": times})
    for column in FEATURES:
        values[feature_name(column)] = data[column].to_numpy()
    features.ingest(conn, "tumours", values)
    spine = pd.DataFrame({"tumour": keys, "event_time": times + pd.Timedelta(hours=1),
                          "malignant": (data["target"] == 0).astype(int) if label is None else label})
    return str(datasets.create_training_set(conn, "tumour_labels", spine,
                                            [f"tumours:{feature_name(c)}" for c in FEATURES], label="malignant"))


def run_worker(url: str) -> None:
    Worker(url, kinds=["train"], idle_exit=0.5, poll_interval=0.2, install_signals=False,
           maintenance_interval=None).run()


def job_result(conn: Conn, job_id: int) -> dict[str, Any]:
    row = conn.execute("select ml.job_result(%s)", (job_id,)).fetchone()
    assert row is not None
    return dict(row[0])


def test_a_train_job_records_a_run_and_registers_a_model_version_that_predicts(db: tuple[str, Conn, str]) -> None:
    url, conn, _ = db
    dataset_id = breast_cancer_training_set(conn)
    training.create_project(conn, "tumours", "classification", "malignant")
    job_id = training.train(conn, "tumours", dataset_id, "hist_gradient_boosting", {"max_iter": 15},
                            {"tags": {"team": "oncology"}})
    run_worker(url)

    job = job_result(conn, job_id)
    assert job["status"] == "succeeded", job["error"]
    result = job["result"]
    assert (result["model"], result["version"]) == ("tumours", 1)
    assert result["metrics"]["roc_auc"] > 0.9

    run = conn.execute("""select status, algorithm, hyperparams, metrics, dataset_id::text, dataset_hash, job_id,
                                 library_versions ? 'scikit-learn', train_seconds, model_size_bytes, inference_latency_ms
                          from ml.runs where id = %s""", (result["run_id"],)).fetchone()
    assert run is not None
    assert run[:3] == ("succeeded", "hist_gradient_boosting", {"max_iter": 15})
    assert run[3] == result["metrics"]
    assert run[4] == dataset_id and run[5] and run[6] == job_id and run[7]
    assert run[8] > 0 and run[9] > 0 and run[10] > 0
    # No learning curve unless asked for.
    assert conn.execute("select count(*) from ml.run_metrics where run_id = %s", (result["run_id"],)).fetchone() == (0,)

    version = conn.execute("""select id::text, run_id::text, dataset_id::text, algorithm, metrics, tags, signature,
                                     artifact_format, artifact_size
                              from ml.model_versions where id = %s""", (result["model_version_id"],)).fetchone()
    assert version is not None
    assert version[1:4] == (result["run_id"], dataset_id, "hist_gradient_boosting")
    assert version[4] == result["metrics"] and version[5] == {"team": "oncology"}
    assert [i["name"] for i in version[6]["inputs"]] == [feature_name(c) for c in FEATURES]
    assert version[6]["classes"] == [0, 1] and version[6]["task"] == "classification"
    assert version[7] == "skops" and version[8] == run[9]

    blob, fmt, digest = conn.execute("select * from ml.model_artifact('tumours', 1)").fetchone()  # type: ignore[misc]
    model = artifacts.load(blob, fmt, digest)
    frame = datasets.load_dataset(conn, dataset_id)
    proba = model.predict_proba(frame[frame.attrs["dataset"].inputs])[:, 1]
    assert skm.roc_auc_score(frame["malignant"].astype(int), proba) > 0.9


def test_a_train_job_asked_for_the_learning_curve_logs_the_metric_at_each_step(db: tuple[str, Conn, str]) -> None:
    url, conn, _ = db
    dataset_id = breast_cancer_training_set(conn)
    training.create_project(conn, "tumours", "classification", "malignant")
    job_id = training.train(conn, "tumours", dataset_id, "hist_gradient_boosting", {"max_iter": 15},
                            {"learning_curve": True})
    assert one_value(conn, "select payload -> 'options' -> 'learning_curve' from ml.jobs where id = %s", job_id) is True
    run_worker(url)
    job = job_result(conn, job_id)
    assert job["status"] == "succeeded", job["error"]
    steps = conn.execute("select step, value from ml.run_metrics where run_id = %s and name = 'roc_auc' order by step",
                         (job["result"]["run_id"],)).fetchall()
    assert [s for s, _ in steps] == list(range(1, 16))
    assert steps[-1][1] == pytest.approx(job["result"]["metrics"]["roc_auc"])


def test_ml_train_refuses_a_learning_curve_that_is_not_a_boolean(db: tuple[str, Conn, str]) -> None:
    _, conn, _ = db
    dataset_id = breast_cancer_training_set(conn, n=40)
    training.create_project(conn, "tumours", "classification", "malignant")
    with pytest.raises(psycopg.Error, match=r"options: \$\.learning_curve") as info:
        conn.execute("select ml.train('tumours', %s, 'logistic_regression', '{}', '{\"learning_curve\": \"yes\"}')",
                     (dataset_id,))
    assert info.value.sqlstate == "22023"


def one_value(conn: Conn, query: str, *args: Any) -> Any:
    row = conn.execute(query, args).fetchone()
    assert row is not None
    return row[0]


def test_a_train_job_on_a_torch_model_registers_a_torch_artifact(db: tuple[str, Conn, str]) -> None:
    url, conn, _ = db
    dataset_id = breast_cancer_training_set(conn, n=160)
    training.create_project(conn, "tumours", "classification", "malignant")
    job_id = training.train(conn, "tumours", dataset_id, "mlp", {"hidden_sizes": [16], "epochs": 8, "lr": 0.01},
                            {"model": "tumour-mlp", "learning_curve": True})
    run_worker(url)
    job = job_result(conn, job_id)
    assert job["status"] == "succeeded", job["error"]
    assert job["result"]["model"] == "tumour-mlp"
    blob, fmt, digest = conn.execute("select * from ml.model_artifact('tumour-mlp', 1)").fetchone()  # type: ignore[misc]
    assert fmt == "torch"
    frame = datasets.load_dataset(conn, dataset_id)
    assert artifacts.load(blob, fmt, digest).predict_proba(frame.head(4)).shape == (4, 2)
    epochs = conn.execute("select count(distinct step) from ml.run_metrics where run_id = %s and name = 'train_loss'",
                          (job["result"]["run_id"],)).fetchone()
    assert epochs == (8,)


def test_a_train_job_on_data_it_cannot_learn_fails_for_good_and_records_nothing(db: tuple[str, Conn, str]) -> None:
    url, conn, tenant = db
    dataset_id = breast_cancer_training_set(conn, n=40, label=pd.Series([1] * 40))
    training.create_project(conn, "tumours", "classification", "malignant")
    job_id = training.train(conn, "tumours", dataset_id, "logistic_regression")
    run_worker(url)
    job = job_result(conn, job_id)
    assert (job["status"], job["attempts"]) == ("failed", 1)
    assert "one class only" in job["error"]
    assert conn.execute("select count(*) from ml.runs where tenant_id = %s", (tenant,)).fetchone() == (0,)
    assert conn.execute("select count(*) from ml.model_versions where tenant_id = %s", (tenant,)).fetchone() == (0,)


def test_a_fit_whose_job_is_lost_stops_at_the_next_epoch_with_lease_lost_and_records_nothing(
        db: tuple[str, Conn, str]) -> None:
    _, conn, tenant = db
    dataset_id = breast_cancer_training_set(conn, n=160)
    project = training.create_project(conn, "tumours", "classification", "malignant")
    job_id = training.train(conn, "tumours", dataset_id, "mlp")
    polls: list[int] = []

    def lost_after_two_epochs() -> bool:
        polls.append(len(polls) + 1)
        return len(polls) > 2

    with pytest.raises(LeaseLost, match=f"job {job_id} is no longer held by this worker"), conn.transaction():
        training.run_training(conn, project_id=project, dataset_id=dataset_id, algorithm="mlp",
                              hyperparams={"hidden_sizes": [8], "epochs": 30}, options={}, job_id=job_id,
                              should_stop=lost_after_two_epochs)
    assert polls == [1, 2, 3]  # stopped at the third epoch, not after thirty
    assert conn.execute("select count(*) from ml.runs where tenant_id = %s", (tenant,)).fetchone() == (0,)
