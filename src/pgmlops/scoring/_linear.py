"""Linear models and multi-layer perceptrons as descriptions.

Linear models (logistic, linear, ridge, lasso, elastic net, SGD) are a sum of products per
output over the preprocessed features; MLPs (scikit-learn's and pgmlops' torch MLP) are dense
layers with activations, evaluated in SQL over arrays (``sql/scoring/compiler.sql``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pgmlops.scoring._errors import NotCompilable
from pgmlops.scoring._preprocess import Feature

__all__ = ["linear", "sklearn_mlp", "torch_mlp"]


def _floats(values: Any) -> list[float]:
    return [float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)]


def linear(est: Any, features: Sequence[Feature]) -> dict[str, Any]:
    """coef_ / intercept_ of a fitted linear model: one row of coefficients per output."""
    coef = np.atleast_2d(np.asarray(est.coef_, dtype=np.float64))
    intercept = np.atleast_1d(np.asarray(est.intercept_, dtype=np.float64)).reshape(-1)
    if coef.shape[1] != len(features):
        raise NotCompilable(f"{type(est).__name__}: {coef.shape[1]} coefficients for {len(features)} features")
    if intercept.shape[0] == 1 and coef.shape[0] > 1:
        intercept = np.repeat(intercept, coef.shape[0])
    if not (np.isfinite(coef).all() and np.isfinite(intercept).all()):
        raise NotCompilable(f"{type(est).__name__}: coefficients that are not finite")
    return {"kind": "linear", "coef": [_floats(row) for row in coef], "intercept": _floats(intercept)}


_ACTIVATIONS = {"identity": "identity", "relu": "relu", "tanh": "tanh", "logistic": "logistic"}


def sklearn_mlp(est: Any, features: Sequence[Feature]) -> dict[str, Any]:
    """MLPClassifier / MLPRegressor: hidden layers with ``activation``, the output layer with
    identity (its logistic or softmax is the result's probability)."""
    activation = _ACTIVATIONS.get(est.activation)
    if activation is None:
        raise NotCompilable(f"{type(est).__name__}(activation={est.activation!r}) has no SQL form here")
    layers = []
    n = len(est.coefs_)
    for i, (weights, bias) in enumerate(zip(est.coefs_, est.intercepts_, strict=True)):
        w = np.asarray(weights, dtype=np.float64)
        layers.append({"weights": [_floats(row) for row in w.T], "bias": _floats(bias),
                       "activation": activation if i < n - 1 else "identity"})
    if np.asarray(est.coefs_[0]).shape[0] != len(features):
        raise NotCompilable(f"{type(est).__name__}: {np.asarray(est.coefs_[0]).shape[0]} inputs for {len(features)} features")
    return {"kind": "mlp", "float32": False, "layers": layers}


def torch_mlp(est: Any, features: Sequence[Feature]) -> dict[str, Any]:
    """pgmlops' TorchMLPClassifier / TorchMLPRegressor: Linear layers with ReLU between them, in
    float32 (input and output rounded to float32, as torch computes them); the regressor's output
    is scaled back to the target's units."""
    layers = []
    modules = list(est.network_)
    linear_layers = [m for m in modules if type(m).__name__ == "Linear"]
    for m in modules:
        if type(m).__name__ not in ("Linear", "ReLU", "Dropout"):
            raise NotCompilable(f"torch MLP with a {type(m).__name__} layer has no SQL form here")
    for i, m in enumerate(linear_layers):
        w = m.weight.detach().cpu().numpy().astype(np.float64)
        b = m.bias.detach().cpu().numpy().astype(np.float64)
        layers.append({"weights": [_floats(row) for row in w], "bias": _floats(b),
                       "activation": "relu" if i < len(linear_layers) - 1 else "identity"})
    if linear_layers and linear_layers[0].weight.shape[1] != len(features):
        raise NotCompilable(f"torch MLP: {linear_layers[0].weight.shape[1]} inputs for {len(features)} features")
    out: dict[str, Any] = {"kind": "mlp", "float32": True, "layers": layers}
    if type(est).__name__ == "TorchMLPRegressor":
        out["scale"] = float(est.y_scale_)
        out["offset"] = float(est.y_mean_)
    return out
