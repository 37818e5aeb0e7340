"""PyTorch models as scikit-learn estimators: MLP classifier and regressor, autoencoder.

They sit last in a pgmlops pipeline, after the preprocessing (imputation, scaling, one-hot), and
take a dense float matrix. Their fitted state is a torch state dict (tensors only) plus plain
metadata (:meth:`TorchEstimator.get_state` / :meth:`TorchEstimator.from_state`), which is what
``pgmlops.artifacts`` stores: nothing about them is ever pickled.

Hyperparameters (the names ``ml.algorithms`` lists for ``mlp`` and ``autoencoder``):

* ``hidden_sizes``: widths of the hidden layers (ReLU between layers); the autoencoder's encoder
  has these then ``latent_dim``, its decoder mirrors them.
* ``epochs``, ``lr`` (Adam), ``batch_size``, ``weight_decay`` (Adam's L2), ``dropout`` (MLP only,
  after each hidden layer).

Anomaly convention, as scikit-learn's outlier detectors: ``score_samples`` is higher for normal
rows (the negated mean squared reconstruction error), ``predict`` gives 1 (inlier) or -1
(outlier) by the training-score quantile ``contamination``.

torch is an optional dependency (``pip install pgmlops[torch]``): this module imports it lazily.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, OutlierMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted

__all__ = [
    "TORCH_ESTIMATORS",
    "EpochCallback",
    "TorchAutoencoder",
    "TorchEstimator",
    "TorchMLPClassifier",
    "TorchMLPRegressor",
]

# on_epoch(epoch, train_loss): epoch counts from 1. It may raise (e.g. optuna.TrialPruned) to stop.
EpochCallback = Callable[[int, float], None]


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError("the mlp and autoencoder algorithms need PyTorch: pip install 'pgmlops[torch]'") from exc
    return torch


@contextlib.contextmanager
def _torch_session(seed: int | None, threads: int) -> Iterator[Any]:
    """Seeded and thread-limited, restoring the process's RNG state and thread count after."""
    torch = _torch()
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0 if seed is None else int(seed) % (2**63))
            yield torch
    finally:
        torch.set_num_threads(saved_threads)


def _mlp(torch: Any, sizes: list[int], dropout: float = 0.0) -> Any:
    """Linear layers of ``sizes`` with ReLU (and dropout) between them, none after the last."""
    layers: list[Any] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
            if dropout > 0:
                layers.append(torch.nn.Dropout(dropout))
    return torch.nn.Sequential(*layers)


class TorchEstimator(BaseEstimator):
    """What the three models share: the training loop, prediction in batches, and state.

    Subclasses set ``kind`` (the name in artifacts), build their network in ``_network`` and
    define the loss on a batch in ``_loss``. Not thread-safe (torch's thread count is
    process-wide while fitting).
    """

    kind: ClassVar[str] = ""
    # Fitted attributes kept in the metadata, besides the state dict (JSON values or arrays).
    _fitted_attrs: ClassVar[tuple[str, ...]] = ("n_features_in_",)

    def __init__(self, hidden_sizes: list[int] | tuple[int, ...] = (64,), epochs: int = 20, lr: float = 1e-3,
                 batch_size: int = 64, weight_decay: float = 0.0, random_state: int | None = None,
                 n_threads: int = 1) -> None:
        self.hidden_sizes = hidden_sizes
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.random_state = random_state
        self.n_threads = n_threads

    # -- subclass hooks ------------------------------------------------------------------------

    def _network(self, torch: Any, n_features: int) -> Any:
        raise NotImplementedError

    def _targets(self, torch: Any, X: np.ndarray[Any, Any], y: Any) -> Any:
        """The tensor the loss compares the network's output with (None: the input itself)."""
        return None

    def _loss(self, torch: Any, output: Any, target: Any) -> Any:
        raise NotImplementedError

    # -- fitting ---------------------------------------------------------------------------------

    def fit(self, X: Any, y: Any = None, *, on_epoch: EpochCallback | None = None) -> TorchEstimator:
        """Train for ``epochs`` epochs of shuffled mini-batches; ``on_epoch`` after each."""
        X = self._check_X(X, reset=True)
        with _torch_session(self.random_state, self.n_threads) as torch:
            target = self._targets(torch, X, y)
            inputs = torch.from_numpy(X)
            self.network_ = self._network(torch, X.shape[1])
            optimizer = torch.optim.Adam(self.network_.parameters(), lr=float(self.lr), weight_decay=float(self.weight_decay))
            generator = torch.Generator().manual_seed(0 if self.random_state is None else int(self.random_state) % (2**63))
            n = inputs.shape[0]
            batch = max(1, min(int(self.batch_size), n))
            self.loss_curve_: list[float] = []
            for epoch in range(1, int(self.epochs) + 1):
                self.network_.train()
                order = torch.randperm(n, generator=generator)
                total = 0.0
                for start in range(0, n, batch):
                    idx = order[start:start + batch]
                    optimizer.zero_grad()
                    out = self.network_(inputs[idx])
                    loss = self._loss(torch, out, inputs[idx] if target is None else target[idx])
                    loss.backward()
                    optimizer.step()
                    total += float(loss.detach()) * len(idx)
                self.loss_curve_.append(total / n)
                self.n_epochs_ = epoch
                if on_epoch is not None:
                    self.network_.eval()
                    on_epoch(epoch, self.loss_curve_[-1])
            self.network_.eval()
            self._after_fit(torch, inputs)
        return self

    def _after_fit(self, torch: Any, inputs: Any) -> None:
        pass

    def _check_X(self, X: Any, reset: bool = False) -> np.ndarray[Any, np.dtype[np.float32]]:
        if hasattr(X, "toarray"):
            X = X.toarray()
        arr = np.asarray(X, dtype=np.float32)
        if arr.ndim != 2:
            raise ValueError(f"expected a 2-d array of features, got {arr.ndim} dimensions")
        if reset:
            self.n_features_in_ = arr.shape[1]
        elif arr.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {arr.shape[1]} features, but {type(self).__name__} expects {self.n_features_in_}")
        if not np.isfinite(arr).all():
            raise ValueError("X holds NaN or infinite values (the pipeline's imputation should have removed them)")
        return np.ascontiguousarray(arr)

    def _forward(self, X: Any) -> np.ndarray[Any, Any]:
        check_is_fitted(self, "network_")
        arr = self._check_X(X)
        torch = _torch()
        with torch.no_grad():
            self.network_.eval()
            return np.asarray(self.network_(torch.from_numpy(arr)).numpy(), dtype=np.float64)

    # -- state -------------------------------------------------------------------------------------

    def get_state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(state dict of tensors, JSON metadata): everything needed to rebuild the fitted model."""
        check_is_fitted(self, "network_")
        fitted: dict[str, Any] = {}
        for name in self._fitted_attrs:
            value = getattr(self, name)
            fitted[name] = value.tolist() if isinstance(value, np.ndarray) else value
        params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.get_params().items()}
        meta = {"kind": self.kind, "params": params, "fitted": fitted}
        return dict(self.network_.state_dict()), meta

    @classmethod
    def from_state(cls, state_dict: dict[str, Any], meta: dict[str, Any]) -> TorchEstimator:
        """Rebuild a fitted model from :meth:`get_state`'s output. Raises ValueError on a mismatch."""
        known = set(cls().get_params())
        unknown = set(meta.get("params", {})) - known
        if unknown:
            raise ValueError(f"unknown parameters for {cls.kind}: {sorted(unknown)}")
        model = cls(**meta.get("params", {}))
        for name in cls._fitted_attrs:
            if name not in meta.get("fitted", {}):
                raise ValueError(f"{cls.kind}: fitted attribute {name} missing")
            model._set_fitted(name, meta["fitted"][name])
        torch = _torch()
        model.network_ = model._network(torch, int(model.n_features_in_))
        model.network_.load_state_dict(state_dict, strict=True)
        model.network_.eval()
        return model

    def _set_fitted(self, name: str, value: Any) -> None:
        setattr(self, name, value)


class TorchMLPClassifier(ClassifierMixin, TorchEstimator):
    """A multi-layer perceptron trained with cross-entropy; ``predict_proba`` is its softmax."""

    kind = "mlp_classifier"
    _fitted_attrs = ("n_features_in_", "classes_")

    def __init__(self, hidden_sizes: list[int] | tuple[int, ...] = (64,), epochs: int = 20, lr: float = 1e-3,
                 batch_size: int = 64, dropout: float = 0.0, weight_decay: float = 0.0, random_state: int | None = None,
                 n_threads: int = 1) -> None:
        super().__init__(hidden_sizes, epochs, lr, batch_size, weight_decay, random_state, n_threads)
        self.dropout = dropout

    def _network(self, torch: Any, n_features: int) -> Any:
        return _mlp(torch, [n_features, *map(int, self.hidden_sizes), len(self.classes_)], float(self.dropout))

    def _targets(self, torch: Any, X: np.ndarray[Any, Any], y: Any) -> Any:
        self.classes_, codes = np.unique(np.asarray(y), return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError("a classifier needs at least two classes in y")
        return torch.from_numpy(codes.astype(np.int64))

    def _loss(self, torch: Any, output: Any, target: Any) -> Any:
        return torch.nn.functional.cross_entropy(output, target)

    def _set_fitted(self, name: str, value: Any) -> None:
        setattr(self, name, np.asarray(value) if name == "classes_" else value)

    def predict_proba(self, X: Any) -> np.ndarray[Any, Any]:
        logits = self._forward(X)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return np.asarray(exp / exp.sum(axis=1, keepdims=True))

    def predict(self, X: Any) -> np.ndarray[Any, Any]:
        return np.asarray(self.classes_[np.argmax(self.predict_proba(X), axis=1)])


class TorchMLPRegressor(RegressorMixin, TorchEstimator):
    """A multi-layer perceptron trained with mean squared error on the standardized target."""

    kind = "mlp_regressor"
    _fitted_attrs = ("n_features_in_", "y_mean_", "y_scale_")

    def __init__(self, hidden_sizes: list[int] | tuple[int, ...] = (64,), epochs: int = 20, lr: float = 1e-3,
                 batch_size: int = 64, dropout: float = 0.0, weight_decay: float = 0.0, random_state: int | None = None,
                 n_threads: int = 1) -> None:
        super().__init__(hidden_sizes, epochs, lr, batch_size, weight_decay, random_state, n_threads)
        self.dropout = dropout

    def _network(self, torch: Any, n_features: int) -> Any:
        return _mlp(torch, [n_features, *map(int, self.hidden_sizes), 1], float(self.dropout))

    def _targets(self, torch: Any, X: np.ndarray[Any, Any], y: Any) -> Any:
        values = np.asarray(y, dtype=np.float64).reshape(-1)
        # Standardized, so lr and initialization do not depend on the target's units.
        self.y_mean_ = float(values.mean())
        scale = float(values.std())
        self.y_scale_ = scale if scale > 0 and math.isfinite(scale) else 1.0
        return torch.from_numpy(((values - self.y_mean_) / self.y_scale_).astype(np.float32)).reshape(-1, 1)

    def _loss(self, torch: Any, output: Any, target: Any) -> Any:
        return torch.nn.functional.mse_loss(output, target)

    def predict(self, X: Any) -> np.ndarray[Any, Any]:
        return np.asarray(self._forward(X)[:, 0] * self.y_scale_ + self.y_mean_)


class TorchAutoencoder(OutlierMixin, TorchEstimator):
    """An autoencoder; rows it reconstructs badly are anomalies.

    ``contamination`` (not a tunable hyperparameter) sets the training-score quantile below which
    ``predict`` says -1 (outlier); it does not change the scores.
    """

    kind = "autoencoder"
    _fitted_attrs = ("n_features_in_", "offset_")

    def __init__(self, hidden_sizes: list[int] | tuple[int, ...] = (32,), latent_dim: int = 4, epochs: int = 30,
                 lr: float = 1e-3, batch_size: int = 64, weight_decay: float = 0.0, contamination: float = 0.05,
                 random_state: int | None = None, n_threads: int = 1) -> None:
        super().__init__(hidden_sizes, epochs, lr, batch_size, weight_decay, random_state, n_threads)
        self.latent_dim = latent_dim
        self.contamination = contamination

    def _network(self, torch: Any, n_features: int) -> Any:
        hidden = [int(h) for h in self.hidden_sizes]
        encoder = _mlp(torch, [n_features, *hidden, int(self.latent_dim)])
        decoder = _mlp(torch, [int(self.latent_dim), *reversed(hidden), n_features])
        # ReLU at the bottleneck, so the two halves are not one linear map.
        return torch.nn.Sequential(encoder, torch.nn.ReLU(), decoder)

    def _loss(self, torch: Any, output: Any, target: Any) -> Any:
        return torch.nn.functional.mse_loss(output, target)

    def _after_fit(self, torch: Any, inputs: Any) -> None:
        self.offset_ = float(np.quantile(self.score_samples(inputs.numpy()), float(self.contamination)))

    def score_samples(self, X: Any) -> np.ndarray[Any, Any]:
        """The negated mean squared reconstruction error of each row (higher = more normal)."""
        arr = self._check_X(X)
        reconstruction = self._forward(arr)
        return np.asarray(-np.mean((reconstruction - arr.astype(np.float64)) ** 2, axis=1))

    def decision_function(self, X: Any) -> np.ndarray[Any, Any]:
        return np.asarray(self.score_samples(X) - self.offset_)

    def predict(self, X: Any) -> np.ndarray[Any, Any]:
        return np.where(self.decision_function(X) < 0, -1, 1)

    def fit(self, X: Any, y: Any = None, *, on_epoch: EpochCallback | None = None) -> TorchAutoencoder:
        super().fit(X, None, on_epoch=on_epoch)
        return self


# The models an artifact may name, by their ``kind``.
TORCH_ESTIMATORS: dict[str, type[TorchEstimator]] = {
    cls.kind: cls for cls in (TorchMLPClassifier, TorchMLPRegressor, TorchAutoencoder)
}
