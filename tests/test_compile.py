"""Models compiled to SQL equal scikit-learn: every compiled family, on randomized models and
held-out rows with missing values and unseen categories, plus rows placed exactly on the trees'
thresholds and on their float64 and float32 neighbours (scikit-learn rounds a tree's input to
float32 before comparing it with a float64 threshold; the compiled SQL must send each of those
rows the same way). Labels must match exactly; probabilities, decision functions, predictions
and anomaly scores within 1e-9 (MLPs 1e-6), relative for values beyond 1.

Each test fits a pipeline as pgmlops trains them (InputFrame, ColumnTransformer of imputers,
scalers and one-hot encoders, estimator) or a bare estimator, registers a version, installs its
compiled function through ml.install_compiled_model, and scores raw rows through
ml_private.compiled_arguments and the function, in one statement per model.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    IsolationForest,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import (
    ElasticNet,
    Lasso,
    LinearRegression,
    LogisticRegression,
    Ridge,
    RidgeClassifier,
    SGDClassifier,
    SGDRegressor,
)
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from pgmlops import scoring
from pgmlops.training._algorithms import InputFrame, build_pipeline, make_estimator

from .compile_helpers import (
    MIXED_SIGNATURE,
    Conn,
    around,
    assert_parity,
    json_rows,
    mixed_frame,
    mixed_labels,
    numeric_signature,
    project,
    register,
    score_matrix,
    score_rows,
    tree_boundaries,
)
from .conftest import act_for, make_tenant

TASK_OF = {"binary": "classification", "multiclass": "classification", "regression": "regression",
           "positive": "regression", "anomaly": "anomaly_detection"}


@pytest.fixture(scope="module")
def env(db_url: str) -> Iterator[tuple[Conn, dict[str, str]]]:
    """A connection acting for a tenant (as a service caller), with a project per task."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        act_for(conn, make_tenant(conn))
        conn.execute("set jit = off")  # as every caller of a compiled function should (docs/scoring.md)
        projects = {task: project(conn, task.replace("_", "-"), task)
                    for task in ("classification", "regression", "anomaly_detection")}
        yield conn, projects


def compile_model(env: tuple[Conn, dict[str, str]], model: Any, task: str,
                  signature: list[dict[str, str]]) -> tuple[str, dict[str, Any]]:
    """Register a version for ``model`` and install its compiled function; (version id, description)."""
    conn, projects = env
    version = register(conn, projects[task], signature, task)
    description = scoring.describe(model, task=task)
    result = scoring.install(conn, version, description)
    assert result["scoring_path"] == "compiled"
    return version, description


# -- pgmlops pipelines: every family, every input dtype ------------------------------------------------

def _torch(task: str) -> Callable[[], Any]:
    def make() -> Any:
        pytest.importorskip("torch")
        return make_estimator("mlp", task, {"hidden_sizes": [8, 6], "epochs": 4}, 0)
    return make


PIPELINE_CASES: list[tuple[str, str, Callable[[], Any]]] = [
    ("logistic-binary", "binary", lambda: make_estimator("logistic_regression", "classification", {}, 0)),
    ("logistic-multiclass", "multiclass", lambda: LogisticRegression(C=0.3, max_iter=500)),
    ("linear", "regression", LinearRegression),
    ("sgd-classifier", "binary", lambda: make_estimator("sgd_classifier", "classification", {}, 0)),
    ("sgd-classifier-modified-huber-multiclass", "multiclass",
     lambda: make_estimator("sgd_classifier", "classification", {"loss": "modified_huber", "average": True}, 0)),
    ("sgd-regressor-huber", "regression", lambda: make_estimator("sgd_regressor", "regression", {"loss": "huber"}, 0)),
    ("ridge", "regression", lambda: Ridge(alpha=3.0)),
    ("lasso", "regression", lambda: Lasso(alpha=0.05)),
    ("elastic-net", "regression", lambda: ElasticNet(alpha=0.05, l1_ratio=0.3)),
    ("sgd-log-loss", "binary", lambda: SGDClassifier(loss="log_loss", random_state=0)),
    ("sgd-hinge-multiclass", "multiclass", lambda: SGDClassifier(loss="hinge", random_state=0)),
    ("sgd-modified-huber-multiclass", "multiclass", lambda: SGDClassifier(loss="modified_huber", random_state=0)),
    ("sgd-regressor", "regression", lambda: SGDRegressor(random_state=0)),
    ("ridge-classifier-multiclass", "multiclass", lambda: RidgeClassifier(alpha=2.0)),
    ("decision-tree-multiclass", "multiclass", lambda: DecisionTreeClassifier(max_depth=8, random_state=0)),
    ("decision-tree-regressor", "regression", lambda: DecisionTreeRegressor(min_samples_leaf=2, random_state=0)),
    ("random-forest", "binary", lambda: RandomForestClassifier(n_estimators=12, max_depth=7, random_state=0)),
    ("random-forest-regressor", "regression", lambda: RandomForestRegressor(n_estimators=10, max_depth=6, random_state=0)),
    ("extra-trees-multiclass", "multiclass", lambda: ExtraTreesClassifier(n_estimators=10, max_depth=6, random_state=0)),
    ("extra-trees-regressor", "regression", lambda: ExtraTreesRegressor(n_estimators=10, max_depth=6, random_state=0)),
    ("gradient-boosting", "binary", lambda: GradientBoostingClassifier(n_estimators=25, max_depth=3, random_state=0)),
    ("gradient-boosting-exponential", "binary",
     lambda: GradientBoostingClassifier(loss="exponential", n_estimators=15, max_depth=3, random_state=0)),
    ("gradient-boosting-multiclass", "multiclass", lambda: GradientBoostingClassifier(n_estimators=10, max_depth=3, random_state=0)),
    ("gradient-boosting-regressor", "regression",
     lambda: GradientBoostingRegressor(n_estimators=25, max_depth=4, subsample=0.8, random_state=0)),
    ("hist-gradient-boosting", "binary", lambda: HistGradientBoostingClassifier(max_iter=25, random_state=0)),
    ("hist-gradient-boosting-multiclass", "multiclass", lambda: HistGradientBoostingClassifier(max_iter=10, random_state=0)),
    ("hist-gradient-boosting-regressor", "regression", lambda: HistGradientBoostingRegressor(max_iter=25, random_state=0)),
    ("hist-gradient-boosting-poisson", "positive",
     lambda: HistGradientBoostingRegressor(loss="poisson", max_iter=15, random_state=0)),
    ("isolation-forest", "anomaly", lambda: IsolationForest(n_estimators=30, max_features=0.7, random_state=0)),
    ("mlp-binary-tanh", "binary", lambda: MLPClassifier(hidden_layer_sizes=(7,), activation="tanh", max_iter=60, random_state=0)),
    ("mlp-multiclass-relu", "multiclass", lambda: MLPClassifier(hidden_layer_sizes=(6, 5), max_iter=60, random_state=0)),
    ("mlp-regressor-logistic", "regression",
     lambda: MLPRegressor(hidden_layer_sizes=(6,), activation="logistic", max_iter=60, random_state=0)),
    ("torch-mlp", "multiclass", _torch("classification")),
    ("torch-mlp-regressor", "regression", _torch("regression")),
]


def boundary_rows(description: dict[str, Any], base: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Copies of held-out rows with one numeric input set on, just below or just above a folded
    threshold (float64 and float32 neighbours): amount, visits or an element of emb."""
    columns = {1: "amount", 2: "visits", 4: ("emb", 0), 5: ("emb", 1)}
    rows = []
    rng = np.random.default_rng(seed)
    for index, thresholds in tree_boundaries(description).items():
        target = columns.get(index)
        if target is None:
            continue
        for value in around(thresholds, 12, seed + index):
            row = base.iloc[int(rng.integers(len(base)))].to_dict()
            if isinstance(target, tuple):
                emb = np.array(row["emb"] if row["emb"] is not None else [0.0, 0.0], dtype=float)
                emb[target[1]] = value
                row["emb"] = emb
            else:
                row[target] = value
            rows.append(row)
    if not rows:
        return base.iloc[:0]
    frame = pd.DataFrame(rows)
    frame["visits"] = frame["visits"].astype("Float64")
    return frame


@pytest.mark.parametrize(("case", "labels", "make"), PIPELINE_CASES, ids=[c[0] for c in PIPELINE_CASES])
def test_a_compiled_pipeline_equals_scikit_learn(env: tuple[Conn, dict[str, str]], case: str, labels: str,
                                                 make: Callable[[], Any]) -> None:
    task = TASK_OF[labels]
    seed = zlib.crc32(case.encode()) % 1000
    train = mixed_frame(320, seed)
    model = build_pipeline(MIXED_SIGNATURE, make())
    if task == "anomaly_detection":
        model.fit(train)
    else:
        model.fit(train, mixed_labels(train, labels, seed))
    version, description = compile_model(env, model, task, MIXED_SIGNATURE)
    held_out = mixed_frame(150, seed + 1, held_out=True)
    rows = pd.concat([held_out.astype({"visits": "Float64"}), boundary_rows(description, held_out, seed)], ignore_index=True)
    results = score_rows(env[0], version, json_rows(rows))
    tolerance = 1e-6 if "mlp" in case else 1e-9
    assert_parity(model, rows, results, task, tolerance=tolerance)


def test_min_max_scaling_with_clip_mean_imputation_and_passthrough_compile(env: tuple[Conn, dict[str, str]]) -> None:
    """A hand-built preprocessing (MinMaxScaler(clip=True), mean and constant imputation, one-hot
    with infrequent_if_exist, passthrough) under a forest and a logistic regression."""
    frame = mixed_frame(300, 7)
    y = mixed_labels(frame, "binary", 7)
    signature = MIXED_SIGNATURE
    frame_inputs = InputFrame(signature)
    numeric, categorical = frame_inputs.output_columns()
    for estimator in (RandomForestClassifier(n_estimators=8, max_depth=6, random_state=0), LogisticRegression(max_iter=500)):
        preprocess = ColumnTransformer([
            ("scaled", Pipeline([("impute", SimpleImputer(strategy="mean")), ("scale", MinMaxScaler((-1, 2), clip=True))]),
             numeric[:2]),
            ("raw", SimpleImputer(strategy="constant", fill_value=-3.5), numeric[2:]),
            ("onehot", Pipeline([("impute", SimpleImputer(strategy="constant", fill_value="silver")),
                                 ("encode", OneHotEncoder(handle_unknown="infrequent_if_exist"))]), categorical),
        ], sparse_threshold=0.0)
        model = Pipeline([("inputs", InputFrame(signature)), ("preprocess", preprocess), ("model", estimator)]).fit(frame, y)
        version, description = compile_model(env, model, "classification", signature)
        held_out = mixed_frame(120, 8, held_out=True).astype({"visits": "Float64"})
        # Beyond the training range, where clipping bites.
        held_out.loc[::7, "amount"] = held_out.loc[::7, "amount"] * 3
        rows = pd.concat([held_out, boundary_rows(description, held_out, 8)], ignore_index=True)
        assert_parity(model, rows, score_rows(env[0], version, json_rows(rows)), "classification")


# -- bare estimators: thresholds straight on the inputs ------------------------------------------------

def numeric_data(n: int, d: int, seed: int, missing: float = 0.0) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * np.array([1, 1e3, 1e-3, 7][:d] + [1] * max(0, d - 4))
    X[:, 1] = np.round(X[:, 1], 1)  # ties, so thresholds fall between close values
    if missing:
        X[rng.random(X.shape) < missing] = np.nan
    return X


BARE_TREES: list[tuple[str, str, Callable[[], Any], float]] = [
    ("decision-tree", "binary", lambda: DecisionTreeClassifier(random_state=0), 0.1),
    ("decision-tree-regressor", "regression", lambda: DecisionTreeRegressor(max_depth=9, random_state=0), 0.1),
    ("random-forest", "multiclass", lambda: RandomForestClassifier(n_estimators=8, random_state=0), 0.1),
    ("random-forest-regressor", "regression", lambda: RandomForestRegressor(n_estimators=6, max_depth=8, random_state=0), 0.1),
    ("extra-trees", "binary", lambda: ExtraTreesClassifier(n_estimators=6, max_depth=8, random_state=0), 0.0),
    ("gradient-boosting", "regression", lambda: GradientBoostingRegressor(n_estimators=20, max_depth=5, random_state=0), 0.0),
    ("hist-gradient-boosting", "binary", lambda: HistGradientBoostingClassifier(max_iter=20, random_state=0), 0.1),
    ("isolation-forest", "anomaly", lambda: IsolationForest(n_estimators=25, random_state=0), 0.1),
]


def _labels(X: np.ndarray[Any, Any], kind: str) -> np.ndarray[Any, Any]:
    s = np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 1]) / 1e3 + np.nan_to_num(X[:, 2]) * 300
    if kind == "binary":
        return (s > 0).astype(int)
    if kind == "multiclass":
        return np.digitize(s, [-0.7, 0.7])
    return s * 2 + np.sin(np.nan_to_num(X[:, 3]))


@pytest.mark.parametrize(("case", "labels", "make", "missing"), BARE_TREES, ids=[c[0] for c in BARE_TREES])
def test_trees_compare_in_float32_like_scikit_learn_on_and_around_every_threshold(
        env: tuple[Conn, dict[str, str]], case: str, labels: str, make: Callable[[], Any], missing: float) -> None:
    task = TASK_OF[labels]
    X = numeric_data(400, 4, 11, missing)
    model = make().fit(X) if task == "anomaly_detection" else make().fit(X, _labels(X, labels))
    version, _ = compile_model(env, model, task, numeric_signature(4))
    held_out = numeric_data(100, 4, 12, missing)
    # Every threshold of the model (a sample of them for forests), and its float64 / float32
    # neighbours, in the column it splits.
    members = getattr(model, "estimators_", None)
    trees = [e.tree_ for e in np.ravel(members)] if members is not None else ([model.tree_] if hasattr(model, "tree_") else [])
    predictors = [p.nodes for it in getattr(model, "_predictors", []) for p in it]
    rows = [held_out]
    rng = np.random.default_rng(3)
    for column in range(4):
        thresholds = [float(t) for tr in trees for t, f in zip(tr.threshold, tr.feature, strict=True) if f == column]
        thresholds += [float(n["num_threshold"]) for nodes in predictors for n in nodes
                       if not n["is_leaf"] and n["feature_idx"] == column]
        values = around(thresholds, 40, column)
        block = held_out[rng.integers(0, len(held_out), len(values))].copy()
        block[:, column] = values
        rows.append(block)
    data = np.vstack(rows)
    assert len(data) > 200
    assert_parity(model, data, score_matrix(env[0], version, data), task)


def test_a_value_on_a_threshold_goes_where_its_float32_rounding_sends_it(env: tuple[Conn, dict[str, str]]) -> None:
    """The case float32 decides: a tree's threshold is the float64 midpoint of two adjacent
    float32 values a < b; a value exactly on it rounds, in float32, to whichever of a and b is
    even. With b even it becomes b and goes right, although it is <= the threshold in float64."""
    a = np.nextafter(np.float32(1000.0), np.float32(2000.0))  # odd last bit
    b = np.nextafter(a, np.float32(2000.0))                   # even
    X = np.array([[float(a)], [float(b)]] * 10)
    model = DecisionTreeClassifier().fit(X, np.array([0, 1] * 10))
    threshold = float(model.tree_.threshold[0])
    assert float(a) < threshold < float(b) and float(np.float32(threshold)) == float(b)
    version, _ = compile_model(env, model, "classification", numeric_signature(1))
    probes = np.array([[threshold], [np.nextafter(threshold, 2000.0)], [np.nextafter(threshold, 0.0)], [float(a)], [float(b)]])
    results = score_matrix(env[0], version, probes)
    assert_parity(model, probes, results, "classification")
    assert model.predict(probes[:1])[0] == 1 and results[0]["prediction"] == 1


def test_histogram_gradient_boosting_splits_on_categories_with_unknown_and_missing_values(env: tuple[Conn, dict[str, str]]) -> None:
    rng = np.random.default_rng(5)
    n = 600
    codes = rng.choice([0.0, 1.0, 2.0, 3.0, 5.0, 8.0], n)
    codes[rng.random(n) < 0.1] = np.nan
    X = np.column_stack([codes, rng.normal(size=n), rng.normal(size=n)])
    X[rng.random(n) < 0.1, 1] = np.nan
    effect = {0.0: 1.0, 1.0: -1.0, 2.0: 0.5, 3.0: -2.0, 5.0: 2.0, 8.0: 0.0}
    score = np.array([effect.get(c, 0.7) for c in codes]) + np.nan_to_num(X[:, 1]) + rng.normal(0, 0.3, n)
    for task, model in (("classification", HistGradientBoostingClassifier(categorical_features=[0], max_iter=20, random_state=0)),
                        ("regression", HistGradientBoostingRegressor(categorical_features=[0], max_iter=20, random_state=0))):
        model.fit(X, (score > 0).astype(int) if task == "classification" else score)
        version, description = compile_model(env, model, task, numeric_signature(3))
        assert any("in" in tree["op"] for tree in description["estimator"]["trees"])
        # Known categories, unknown ones (4, 7, 2.5, -1, 300), missing ones, with every kind of numeric value.
        probes = np.array([[c, x, 0.2] for c in (0, 1, 2, 3, 5, 8, 4, 7, 2.5, -1, 300, np.nan)
                           for x in (-1.0, 0.0, 0.4, np.nan)])
        held_out = X[rng.integers(0, n, 100)].copy()
        held_out[::5, 0] = 6.0
        data = np.vstack([probes, held_out])
        assert_parity(model, data, score_matrix(env[0], version, data), task)


def test_histogram_gradient_boosting_with_an_imputer_before_a_categorical_split(env: tuple[Conn, dict[str, str]]) -> None:
    """A missing value imputed to a category goes where that category goes, not where the tree
    sends missing values."""
    rng = np.random.default_rng(9)
    n = 500
    codes = rng.choice([0.0, 1.0, 2.0, 3.0], n, p=[0.5, 0.2, 0.2, 0.1])
    X = np.column_stack([codes, rng.normal(size=n)])
    y = ((codes == 0) ^ (X[:, 1] > 0)).astype(int)
    X[rng.random(n) < 0.1, 0] = np.nan
    model = Pipeline([("impute", SimpleImputer(strategy="most_frequent")),
                      ("model", HistGradientBoostingClassifier(categorical_features=[0], max_iter=15, random_state=0))]).fit(X, y)
    version, _ = compile_model(env, model, "classification", numeric_signature(2))
    probes = np.array([[c, x] for c in (0, 1, 2, 3, 9, np.nan) for x in (-0.5, 0.5, np.nan)])
    assert_parity(model, probes, score_matrix(env[0], version, probes), "classification")
