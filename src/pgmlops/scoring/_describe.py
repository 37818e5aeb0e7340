"""A fitted pipeline as the structured description ``ml.install_compiled_model`` compiles.

:func:`describe` walks the pipeline (``_preprocess``), picks the estimator's family (``_trees``,
``_linear``) and says how its scores become the result (probabilities and the predicted class
exactly as the estimator's ``predict_proba`` / ``predict`` compute them). The description is
plain JSON data: numbers, strings and arrays, never SQL.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pgmlops.scoring import _linear, _trees
from pgmlops.scoring._errors import NotCompilable
from pgmlops.scoring._preprocess import resolve_preprocessing, split_pipeline

__all__ = ["FORMAT", "describe"]

FORMAT = 1

# Estimators scored by workers, and why (checked by class name: they need no import).
_WORKER_ONLY = {
    "SVC": "an SVM's decision function sums a kernel over every support vector: scored by workers",
    "SVR": "an SVM's decision function sums a kernel over every support vector: scored by workers",
    "CalibratedClassifierCV": "a calibrated SVM sums a kernel over every support vector: scored by workers",
    "KNeighborsClassifier": "k-nearest neighbours search the training rows at every prediction: scored by workers",
    "KNeighborsRegressor": "k-nearest neighbours search the training rows at every prediction: scored by workers",
    "LocalOutlierFactor": "local outlier factor searches the training rows at every prediction: scored by workers",
    "TorchAutoencoder": "only the torch MLP compiles; the autoencoder is scored by workers",
}


def _labels(classes: Any) -> list[Any]:
    out: list[Any] = []
    for c in np.asarray(classes).tolist():
        if isinstance(c, (bool, int, str)) or (isinstance(c, float) and np.isfinite(c)):
            out.append(c)
        else:
            raise NotCompilable(f"class label {c!r} is not a string, a number or a boolean")
    return out


def _classification(est: Any, probability: str, label: str, decision: bool) -> dict[str, Any]:
    return {"kind": "classification", "labels": _labels(est.classes_), "probability": probability, "label": label,
            "decision": decision}


def _task_of(est: Any) -> str:
    name = type(est).__name__
    if name == "IsolationForest":
        return "anomaly_detection"
    if hasattr(est, "classes_"):
        return "classification"
    return "regression"


def describe(model: Any, *, task: str | None = None) -> dict[str, Any]:
    """The description of a fitted pipeline (or bare estimator) for ``ml.install_compiled_model``.

    Args:
        model: a fitted scikit-learn ``Pipeline`` as pgmlops trains them (InputFrame,
            ColumnTransformer, estimator), any Pipeline of the supported steps, or an estimator.
        task: the project's task; by default the estimator's own (classification when it has
            ``classes_``, anomaly_detection for isolation forests, else regression).

    Returns:
        ``{"format": 1, "task", "estimator_name", "inputs": {"numeric", "categorical"},
        "features", "estimator", "output"}`` (JSON data; the SQL compiler, ``sql/scoring/compiler.sql``,
        documents each part).

    Raises:
        NotCompilable: a step or estimator that has no SQL form, with the reason.
    """
    steps, est = split_pipeline(model)
    name = type(est).__name__
    if name in _WORKER_ONLY:
        raise NotCompilable(_WORKER_ONLY[name])
    task = task or _task_of(est)
    inputs, features, _signature = resolve_preprocessing(steps, est)
    classification = task == "classification"
    estimator: dict[str, Any]
    output: dict[str, Any]

    if name in ("DecisionTreeClassifier", "DecisionTreeRegressor", "ExtraTreeClassifier", "ExtraTreeRegressor"):
        estimator = _trees.decision_tree(est, features, classification)
        output = _classification(est, "identity", "argmax_proba", False) if classification else {"kind": "regression"}
    elif name in ("RandomForestClassifier", "RandomForestRegressor", "ExtraTreesClassifier", "ExtraTreesRegressor"):
        estimator = _trees.forest(est, features, classification)
        output = _classification(est, "identity", "argmax_proba", False) if classification else {"kind": "regression"}
    elif name in ("GradientBoostingClassifier", "GradientBoostingRegressor"):
        estimator = _trees.gradient_boosting(est, features)
        if classification:
            loss = type(est._loss).__name__
            if est.estimators_.shape[1] > 1:
                output = _classification(est, "softmax", "argmax_scores", True)
            elif loss == "ExponentialLoss":
                output = _classification(est, "sigmoid2", "ge0", True)
            else:
                output = _classification(est, "sigmoid", "ge0", True)
        else:
            output = {"kind": "regression"}
    elif name in ("HistGradientBoostingClassifier", "HistGradientBoostingRegressor"):
        estimator = _trees.hist_gradient_boosting(est, features)
        if classification:
            binary = est.n_trees_per_iteration_ == 1
            output = _classification(est, "sigmoid" if binary else "softmax", "gt0" if binary else "argmax_scores", True)
        else:
            link = type(est._loss.link).__name__
            if link not in ("IdentityLink", "LogLink"):
                raise NotCompilable(f"{name} with a {link}: only identity and log links compile")
            output = {"kind": "regression", "link": "exp" if link == "LogLink" else "identity"}
    elif name == "IsolationForest":
        estimator, denominator, offset = _trees.isolation_forest(est, features)
        output = {"kind": "isolation_forest", "denominator": denominator, "offset": offset}
    elif name in ("LogisticRegression", "LinearRegression", "Ridge", "Lasso", "ElasticNet", "SGDClassifier",
                  "SGDRegressor", "RidgeClassifier"):
        estimator = _linear.linear(est, features)
        if classification:
            output = _linear_classification(est)
        else:
            output = {"kind": "regression"}
    elif name in ("MLPClassifier", "MLPRegressor"):
        estimator = _linear.sklearn_mlp(est, features)
        if classification:
            if getattr(est, "out_activation_", None) == "logistic" and len(est.classes_) == 2:
                output = _classification(est, "sigmoid", "gt_half", False)
            elif getattr(est, "out_activation_", None) == "softmax":
                output = _classification(est, "softmax", "argmax_proba", False)
            else:
                raise NotCompilable(f"{name} with a {est.out_activation_} output (multilabel) has no SQL form here")
        else:
            output = {"kind": "regression"}
    elif name in ("TorchMLPClassifier", "TorchMLPRegressor"):
        estimator = _linear.torch_mlp(est, features)
        output = _classification(est, "softmax", "argmax_proba", False) if classification else {"kind": "regression"}
    else:
        raise NotCompilable(f"{name} has no SQL form (compiled: linear models, trees, forests, gradient boosting, "
                            "histogram gradient boosting, isolation forests, MLPs)")

    description: dict[str, Any] = {
        "format": FORMAT, "task": task, "estimator_name": name,
        "inputs": {"numeric": inputs.numeric, "categorical": inputs.categorical},
        "features": [f.describe() for f in features] if estimator["kind"] in ("linear", "mlp") else [],
        "estimator": estimator, "output": output,
    }
    return description


def _linear_classification(est: Any) -> dict[str, Any]:
    name = type(est).__name__
    binary = len(est.classes_) == 2
    if name == "LogisticRegression":
        return _classification(est, "sigmoid" if binary else "softmax", "gt0" if binary else "argmax_scores", True)
    if name == "SGDClassifier":
        probability = {"log_loss": "ovr", "modified_huber": "modified_huber"}.get(est.loss, "none")
        return _classification(est, probability, "gt0" if binary else "argmax_scores", True)
    return _classification(est, "none", "gt0" if binary else "argmax_scores", True)
