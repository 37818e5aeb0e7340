"""Algorithms by their SQL name, and the preprocessing every pgmlops pipeline starts with.

A fitted pgmlops model is a scikit-learn ``Pipeline``::

    inputs      InputFrame: the signature's columns, in order, coerced to float or text
    preprocess  ColumnTransformer: numeric -> median imputation + StandardScaler;
                categorical (text, category, bool) -> most-frequent imputation +
                OneHotEncoder(handle_unknown='ignore'); dense output
    model       the estimator ml.algorithms names (scikit-learn, or pgmlops.models.torch_models)

so it takes raw rows of the training set (a DataFrame with the input columns) and applies the
same preprocessing at scoring time as at training time.

Hyperparameters are the estimators' own parameter names (``ml.algorithms`` holds their JSON
Schemas); ``random_state`` comes from the training options and ``n_jobs`` is 1 (workers are
one process per core).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

__all__ = [
    "ALGORITHMS",
    "TASKS",
    "Algorithm",
    "InputFrame",
    "build_pipeline",
    "build_preprocessor",
    "input_dtype",
    "make_estimator",
]

TASKS = ("classification", "regression", "anomaly_detection")

NUMERIC_DTYPES = ("int", "float", "timestamp")
CATEGORICAL_DTYPES = ("bool", "text")


# -- inputs --------------------------------------------------------------------------------------


def input_dtype(series: pd.Series) -> str:
    """The pgmlops dtype of an input column: int, float, bool, text, timestamp or vector(n)."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "timestamp"
    sample = series.dropna()
    if len(sample) and all(isinstance(v, np.ndarray | list | tuple) for v in sample.iloc[:100]):
        return f"vector({len(sample.iloc[0])})"
    inferred = pd.api.types.infer_dtype(sample, skipna=True)
    if inferred == "boolean":
        return "bool"
    if inferred == "integer":
        return "int"
    if inferred in ("floating", "mixed-integer-float", "decimal"):
        return "float"
    if inferred in ("datetime", "datetime64", "date"):
        return "timestamp"
    return "text"


def _vector_size(dtype: str) -> int | None:
    if dtype.startswith("vector(") and dtype.endswith(")"):
        return int(dtype[7:-1])
    return None


class InputFrame(TransformerMixin, BaseEstimator):
    """Selects the model's input columns, in order, and coerces them for the preprocessing.

    ``columns``: ``[{"name", "dtype"}, ...]`` as in the signature. int and float become float64
    (missing: NaN); timestamp becomes seconds since the epoch (naive times are UTC); bool
    becomes the text ``'true'`` / ``'false'``; text stays text; ``vector(n)`` becomes n float
    columns ``name[0]`` .. ``name[n-1]``. Missing values become NaN for the imputers.

    Stateless (the columns are given), so it is fitted from the start. Its type name is on the
    artifact allowlist (pgmlops.artifacts): keep its module and name, and its state plain data.
    """

    def __init__(self, columns: Sequence[Mapping[str, str]] = ()) -> None:
        self.columns = columns

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def fit(self, X: Any, y: Any = None) -> InputFrame:
        return self

    def output_columns(self) -> tuple[list[str], list[str]]:
        """(numeric column names, categorical column names) of :meth:`transform`'s output."""
        numeric: list[str] = []
        categorical: list[str] = []
        for column in self.columns:
            size = _vector_size(column["dtype"])
            if size is not None:
                numeric.extend(f"{column['name']}[{i}]" for i in range(size))
            elif column["dtype"] in CATEGORICAL_DTYPES:
                categorical.append(column["name"])
            else:
                numeric.append(column["name"])
        return numeric, categorical

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray[Any, Any]:
        numeric, categorical = self.output_columns()
        return np.asarray(numeric + categorical, dtype=object)

    def transform(self, X: Any) -> pd.DataFrame:
        if isinstance(X, Mapping):
            X = pd.DataFrame([X])
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"the model takes a pandas DataFrame with columns {[c['name'] for c in self.columns]}, "
                            f"got {type(X).__name__}")
        missing = [c["name"] for c in self.columns if c["name"] not in X.columns]
        if missing:
            raise ValueError(f"input columns missing: {', '.join(missing)}")
        out: dict[str, Any] = {}
        for column in self.columns:
            name, dtype = column["name"], column["dtype"]
            series = X[name]
            size = _vector_size(dtype)
            if size is not None:
                matrix = _vectors(series, size)
                for i in range(size):
                    out[f"{name}[{i}]"] = matrix[:, i]
            elif dtype == "bool":
                out[name] = _bool_text(series)
            elif dtype == "text":
                out[name] = np.asarray([np.nan if _missing(v) else str(v) for v in series], dtype=object)
            elif dtype == "timestamp":
                out[name] = _epoch_seconds(series)
            else:
                out[name] = _floats(series)
        numeric, categorical = self.output_columns()
        return pd.DataFrame(out, index=X.index, columns=numeric + categorical)


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def _floats(series: pd.Series) -> np.ndarray[Any, Any]:
    if pd.api.types.is_bool_dtype(series.dtype):
        return series.astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
    if pd.api.types.is_numeric_dtype(series.dtype):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _bool_text(series: pd.Series) -> np.ndarray[Any, Any]:
    def text(v: Any) -> Any:
        if _missing(v):
            return np.nan
        if isinstance(v, str):
            lowered = v.strip().lower()
            if lowered in ("true", "t", "1", "yes"):
                return "true"
            if lowered in ("false", "f", "0", "no"):
                return "false"
            return np.nan
        return "true" if bool(v) else "false"

    return np.asarray([text(v) for v in series], dtype=object)


def _epoch_seconds(series: pd.Series) -> np.ndarray[Any, Any]:
    times = pd.to_datetime(series, utc=True, errors="coerce")
    seconds = (times - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    return seconds.to_numpy(dtype=np.float64, na_value=np.nan)


def _vectors(series: pd.Series, size: int) -> np.ndarray[Any, Any]:
    matrix = np.full((len(series), size), np.nan)
    for i, value in enumerate(series):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
        if arr.shape[0] == size:
            matrix[i] = arr
    return matrix


def build_preprocessor(inputs: InputFrame) -> ColumnTransformer:
    """Median imputation and scaling for numeric columns, most-frequent imputation and one-hot
    encoding for categorical ones; a dense matrix out (HistGradientBoosting and torch need it)."""
    numeric, categorical = inputs.output_columns()
    transformers: list[tuple[str, Any, list[str]]] = []
    if numeric:
        transformers.append(("numeric", Pipeline([
            ("impute", SimpleImputer(strategy="median")),
            ("scale", StandardScaler()),
        ]), numeric))
    if categorical:
        transformers.append(("categorical", Pipeline([
            ("impute", SimpleImputer(strategy="most_frequent")),
            ("onehot", OneHotEncoder(handle_unknown="ignore")),
        ]), categorical))
    return ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0)


def build_pipeline(columns: Sequence[Mapping[str, str]], estimator: Any) -> Pipeline:
    """The unfitted pgmlops pipeline: inputs, preprocess, model."""
    inputs = InputFrame([dict(c) for c in columns])
    return Pipeline([("inputs", inputs), ("preprocess", build_preprocessor(inputs)), ("model", estimator)])


# -- algorithms --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Algorithm:
    """One entry of ``ml.algorithms``, Python side.

    ``factories`` maps each task to the estimator class (or a callable building one from the
    hyperparameters); ``stage_param`` names the parameter grown stage by stage (boosting
    iterations, trees) with ``warm_start``, or ``"epochs"`` for the torch models, which report
    per epoch; None: fitted in one go.
    """

    name: str
    library: str
    factories: Mapping[str, Callable[..., Any]]
    stage_param: str | None = None
    iterative: bool = False

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.factories)


def _sklearn(module: str, name: str, **fixed: Any) -> Callable[..., Any]:
    def make(**hyperparams: Any) -> Any:
        from importlib import import_module

        cls = getattr(import_module(module), name)
        return cls(**{**hyperparams, **fixed})

    make.__qualname__ = name
    return make


def _torch_model(name: str) -> Callable[..., Any]:
    def make(**hyperparams: Any) -> Any:
        from pgmlops.models import torch_models as _torch_models

        return getattr(_torch_models, name)(**hyperparams)

    make.__qualname__ = name
    return make


_LOGISTIC_PENALTY = {"l2": 0.0, "l1": 1.0}


def _logistic_regression(**hyperparams: Any) -> Any:
    """LogisticRegression; ``penalty`` (deprecated by scikit-learn 1.8) is mapped onto l1_ratio
    (l2 0, l1 1, elasticnet l1_ratio, None C=inf) where scikit-learn has deprecated it, and an
    L1 penalty picks the saga solver unless one is named."""
    from sklearn.linear_model import LogisticRegression

    params = dict(hyperparams)
    params.setdefault("max_iter", 1000)
    deprecated = inspect.signature(LogisticRegression).parameters["penalty"].default == "deprecated"
    if "penalty" in params:
        penalty = params.pop("penalty")
        if deprecated:
            if penalty is None:
                params["C"] = math.inf
            elif penalty == "elasticnet":
                params.setdefault("l1_ratio", 0.5)
            else:
                params["l1_ratio"] = _LOGISTIC_PENALTY[penalty]
        else:
            params["penalty"] = penalty
            if penalty == "elasticnet":
                params.setdefault("l1_ratio", 0.5)
    if params.get("l1_ratio", 0.0) and "solver" not in params:
        params["solver"] = "saga"
    return LogisticRegression(**params)


def _svc(**hyperparams: Any) -> Any:
    """SVC with probabilities: Platt scaling by CalibratedClassifierCV(ensemble=False), the way
    scikit-learn 1.9 replaces SVC(probability=True) (deprecated); that on older versions."""
    from sklearn.svm import SVC

    if inspect.signature(SVC).parameters["probability"].default == "deprecated":
        from sklearn.calibration import CalibratedClassifierCV

        return CalibratedClassifierCV(SVC(**hyperparams), method="sigmoid", ensemble=False)
    return SVC(probability=True, **hyperparams)


def _sgd(name: str, **defaults: Any) -> Callable[..., Any]:
    """SGDClassifier or SGDRegressor with pgmlops' defaults under the hyperparameters: the
    classifier's loss is log_loss (scikit-learn's, hinge, gives no probabilities; ml.algorithms
    allows only the losses that do), and eta0 is 0.01 as in scikit-learn 1.8 (older releases
    default it to 0, which the constant, invscaling and adaptive learning rates refuse)."""
    def make(**hyperparams: Any) -> Any:
        from sklearn import linear_model

        return getattr(linear_model, name)(**{"eta0": 0.01, **defaults, **hyperparams})

    make.__qualname__ = name
    return make


_ENSEMBLE = "sklearn.ensemble"
_LINEAR = "sklearn.linear_model"

ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in [
    Algorithm("logistic_regression", "sklearn", {"classification": _logistic_regression}),
    Algorithm("linear_regression", "sklearn", {"regression": _sklearn(_LINEAR, "LinearRegression")}),
    Algorithm("ridge", "sklearn", {"regression": _sklearn(_LINEAR, "Ridge")}),
    Algorithm("lasso", "sklearn", {"regression": _sklearn(_LINEAR, "Lasso")}),
    Algorithm("elastic_net", "sklearn", {"regression": _sklearn(_LINEAR, "ElasticNet")}),
    Algorithm("sgd_classifier", "sklearn", {"classification": _sgd("SGDClassifier", loss="log_loss")}),
    Algorithm("sgd_regressor", "sklearn", {"regression": _sgd("SGDRegressor")}),
    Algorithm("decision_tree", "sklearn", {
        "classification": _sklearn("sklearn.tree", "DecisionTreeClassifier"),
        "regression": _sklearn("sklearn.tree", "DecisionTreeRegressor")}),
    Algorithm("random_forest", "sklearn", {
        "classification": _sklearn(_ENSEMBLE, "RandomForestClassifier", n_jobs=1),
        "regression": _sklearn(_ENSEMBLE, "RandomForestRegressor", n_jobs=1)}, stage_param="n_estimators"),
    Algorithm("extra_trees", "sklearn", {
        "classification": _sklearn(_ENSEMBLE, "ExtraTreesClassifier", n_jobs=1),
        "regression": _sklearn(_ENSEMBLE, "ExtraTreesRegressor", n_jobs=1)}, stage_param="n_estimators"),
    Algorithm("gradient_boosting", "sklearn", {
        "classification": _sklearn(_ENSEMBLE, "GradientBoostingClassifier"),
        "regression": _sklearn(_ENSEMBLE, "GradientBoostingRegressor")}, stage_param="n_estimators", iterative=True),
    Algorithm("hist_gradient_boosting", "sklearn", {
        "classification": _sklearn(_ENSEMBLE, "HistGradientBoostingClassifier"),
        "regression": _sklearn(_ENSEMBLE, "HistGradientBoostingRegressor")}, stage_param="max_iter", iterative=True),
    Algorithm("svm", "sklearn", {
        "classification": _svc,
        "regression": _sklearn("sklearn.svm", "SVR")}),
    Algorithm("knn", "sklearn", {
        "classification": _sklearn("sklearn.neighbors", "KNeighborsClassifier", n_jobs=1),
        "regression": _sklearn("sklearn.neighbors", "KNeighborsRegressor", n_jobs=1)}),
    Algorithm("isolation_forest", "sklearn", {
        "anomaly_detection": _sklearn(_ENSEMBLE, "IsolationForest", n_jobs=1)}),
    Algorithm("local_outlier_factor", "sklearn", {
        "anomaly_detection": _sklearn("sklearn.neighbors", "LocalOutlierFactor", novelty=True, n_jobs=1)}),
    Algorithm("mlp", "torch", {
        "classification": _torch_model("TorchMLPClassifier"),
        "regression": _torch_model("TorchMLPRegressor")}, stage_param="epochs", iterative=True),
    Algorithm("autoencoder", "torch", {
        "anomaly_detection": _torch_model("TorchAutoencoder")}, stage_param="epochs", iterative=True),
]}


def make_estimator(algorithm: str, task: str, hyperparams: Mapping[str, Any], random_state: int | None) -> Any:
    """The unfitted estimator ``algorithm`` for ``task`` with ``hyperparams``.

    ``random_state`` is set where the estimator has one. Raises KeyError for an unknown algorithm
    or a task it does not support, TypeError for an unknown hyperparameter.
    """
    spec = ALGORITHMS[algorithm]
    factory = spec.factories[task]
    params = {k: (tuple(v) if isinstance(v, list) and k == "hidden_sizes" else v) for k, v in hyperparams.items()}
    estimator = factory(**params)
    if random_state is not None and "random_state" in estimator.get_params(deep=False):
        estimator.set_params(random_state=int(random_state))
    return estimator
