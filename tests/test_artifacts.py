"""Safe artifacts: every pgmlops model round-trips and predicts identically; tampered bytes,
types outside the allowlist and torch weights that are not plain tensors are refused, and
nothing an artifact names is run."""

from __future__ import annotations

import io
import json
import os
import zipfile
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
import torch
from sklearn.datasets import make_classification
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from pgmlops import training
from pgmlops.models import artifacts
from pgmlops.models.artifacts import ArtifactError
from pgmlops.training import _algorithms

SMALL = {
    "random_forest": {"n_estimators": 5}, "extra_trees": {"n_estimators": 5}, "gradient_boosting": {"n_estimators": 5},
    "hist_gradient_boosting": {"max_iter": 5}, "isolation_forest": {"n_estimators": 10},
    "local_outlier_factor": {"n_neighbors": 10}, "mlp": {"hidden_sizes": [8], "epochs": 2},
    "autoencoder": {"hidden_sizes": [4], "latent_dim": 2, "epochs": 2},
}
CASES = [(name, task) for name, tasks in training.ALGORITHMS.items() for task in tasks]


def data(n: int = 120, seed: int = 0) -> pd.DataFrame:
    """Every input dtype, missing values included, and a binary label."""
    rng = np.random.default_rng(seed)
    X, y = make_classification(n_samples=n, n_features=3, n_informative=2, n_redundant=0, random_state=seed)
    frame = pd.DataFrame({
        "x0": X[:, 0], "x1": X[:, 1],
        "count": pd.array(rng.integers(0, 9, n), dtype="Int64"),
        "plan": pd.Series(rng.choice(["a", "b", "c"], n), dtype=object),
        "flag": pd.array(rng.integers(0, 2, n).astype(bool), dtype="boolean"),
        "at": pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 999, n), unit="h"),
        "vec": [rng.normal(size=2) for _ in range(n)],
        "label": y,
    })
    frame.loc[0, "x0"] = np.nan
    frame.loc[1, "count"] = pd.NA
    frame.loc[2, "plan"] = None
    frame.loc[3, "vec"] = None
    return frame


def outputs(task: str, model: Any, X: pd.DataFrame) -> np.ndarray[Any, Any]:
    if task == "classification":
        return np.asarray(model.predict_proba(X))
    if task == "regression":
        return np.asarray(model.predict(X))
    return training.anomaly_scores(model, X)


def flip_byte(blob: bytes, at: int) -> bytes:
    changed = bytearray(blob)
    changed[at] ^= 0x01
    return bytes(changed)


# -- round trips ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("algorithm", "task"), CASES, ids=[f"{a}-{t}" for a, t in CASES])
def test_every_model_round_trips_and_predicts_identically(algorithm: str, task: str) -> None:
    frame = data()
    target = {"classification": "label", "regression": "x1", "anomaly_detection": None}[task]
    source = frame if target else frame.drop(columns=["label"])
    result = training.fit(source, task, target, algorithm, SMALL.get(algorithm, {}))
    loaded = artifacts.load(result.artifact, result.artifact_format, result.artifact_sha256)
    X = source.drop(columns=[target]) if target else source
    np.testing.assert_array_equal(outputs(task, loaded, X), outputs(task, result.model, X))
    assert [name for name, _ in loaded.steps] == ["inputs", "preprocess", "model"]


def test_dump_returns_the_bytes_their_format_and_sha256() -> None:
    result = training.fit(data(), "classification", "label", "logistic_regression")
    blob, fmt, digest = artifacts.dump(result.model)
    assert fmt == "skops"
    assert digest == artifacts.sha256(blob) and len(digest) == 64
    assert artifacts.load(blob, fmt, digest.upper()) is not None  # hex digits in either case


def test_a_torch_artifact_holds_a_state_dict_json_metadata_and_the_preprocessing() -> None:
    result = training.fit(data(), "classification", "label", "mlp", SMALL["mlp"])
    with zipfile.ZipFile(io.BytesIO(result.artifact)) as archive:
        assert sorted(archive.namelist()) == ["pgmlops-torch.json", "preprocess.skops", "weights.pt"]
        manifest = json.loads(archive.read("pgmlops-torch.json"))
        weights = torch.load(io.BytesIO(archive.read("weights.pt")), weights_only=True)
    assert manifest["model"]["kind"] == "mlp_classifier"
    assert manifest["model"]["fitted"]["classes_"] == [0, 1]
    assert all(isinstance(v, torch.Tensor) for v in weights.values())


# -- the allowlist ------------------------------------------------------------------------------------

# Hyperparameters that change which types a fitted model stores.
VARIANTS: dict[str, list[dict[str, Any]]] = {
    "logistic_regression": [{"penalty": "l1"}, {"solver": "newton-cholesky"}],
    "knn": [{"algorithm": a, "metric": m} for a in ("ball_tree", "kd_tree") for m in ("euclidean", "manhattan", "chebyshev")]
           + [{"algorithm": "ball_tree", "p": 3}],
    "local_outlier_factor": [{"algorithm": "kd_tree", "metric": "manhattan"}, {"algorithm": "ball_tree", "p": 3}],
    "hist_gradient_boosting": [{"max_iter": 3, "early_stopping": True}, {"max_iter": 3, "loss": "quantile", "quantile": 0.9}]
                              + [{"max_iter": 3, "loss": loss} for loss in ("absolute_error", "gamma", "poisson")],
    "sgd_classifier": [{"loss": "modified_huber"}, {"early_stopping": True, "average": True}],
    "sgd_regressor": [{"loss": loss} for loss in ("huber", "epsilon_insensitive", "squared_epsilon_insensitive")],
    "gradient_boosting": [{"n_estimators": 3, "n_iter_no_change": 1}]
                         + [{"n_estimators": 3, "loss": loss} for loss in ("absolute_error", "huber", "quantile", "exponential")],
}


def test_the_allowlist_covers_every_pipeline_pgmlops_produces() -> None:
    frame = data(80)
    multiclass = frame.assign(label=np.arange(80) % 3)
    seen: set[str] = set()
    loaders: set[str] = set()
    for name, spec in _algorithms.ALGORITHMS.items():
        for task in spec.tasks:
            for hyperparams in [SMALL.get(name, {}), *VARIANTS.get(name, [])]:
                try:
                    estimator = _algorithms.make_estimator(name, task, hyperparams, 0)
                except TypeError:
                    continue  # a parameter of the other task
                for source in ([frame, multiclass] if task == "classification" else [frame]):
                    target = {"classification": "label", "regression": "x1"}.get(task)
                    X = source.drop(columns=[c for c in ("label", target) if c])
                    columns = [{"name": c, "dtype": _algorithms.input_dtype(X[c])} for c in X.columns]
                    pipeline = _algorithms.build_pipeline(columns, estimator)
                    y = None if target is None else (np.abs(source[target]) + 0.1 if task == "regression" else source[target])
                    try:
                        pipeline.fit(X, y)
                    except ValueError:
                        continue  # e.g. the exponential loss on three classes
                    dumped = sio.dumps(Pipeline(pipeline.steps[:-1]) if spec.library == "torch" else pipeline)
                    types, used = artifacts.referenced_types(dumped)
                    seen |= types
                    loaders |= used
    assert seen - artifacts.TRUSTED_TYPES == set()
    assert loaders - artifacts.TRUSTED_LOADERS == set()


class Evil:
    """A class of no library pgmlops trusts."""

    def __init__(self) -> None:
        self.payload = "rm -rf /"


def test_a_skops_file_holding_a_custom_class_is_refused_naming_the_type() -> None:
    blob = sio.dumps({"model": Evil()})
    with pytest.raises(ArtifactError, match=r"outside the allowlist: tests\.test_artifacts\.Evil"):
        artifacts.load(blob, "skops", artifacts.sha256(blob))


def test_a_pipeline_holding_a_function_transformer_of_any_function_is_refused() -> None:
    pipeline = Pipeline([("run", FunctionTransformer(os.system))])
    blob = sio.dumps(pipeline)
    with pytest.raises(ArtifactError, match=r"outside the allowlist: .*FunctionTransformer.*system|"
                                            r"outside the allowlist: .*system.*FunctionTransformer"):
        artifacts.load(blob, "skops", artifacts.sha256(blob))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_an_estimator_skops_trusts_by_default_is_refused_when_pgmlops_does_not_use_it() -> None:
    X, y = make_classification(n_samples=40, n_features=3, n_informative=2, n_redundant=0, random_state=0)
    blob = sio.dumps(MLPClassifier(hidden_layer_sizes=(2,), max_iter=5).fit(X, y))
    assert "sklearn.neural_network._multilayer_perceptron.MLPClassifier" not in sio.get_untrusted_types(data=blob)
    with pytest.raises(ArtifactError, match="MLPClassifier"):
        artifacts.load(blob, "skops", artifacts.sha256(blob))


def test_dump_refuses_a_model_it_could_not_load_again() -> None:
    with pytest.raises(ArtifactError, match="FunctionTransformer"):
        artifacts.dump(Pipeline([("log", FunctionTransformer(np.log1p))]))


# -- tampering ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["logistic_regression", "mlp"])
def test_a_tampered_artifact_is_refused_at_load(algorithm: str) -> None:
    result = training.fit(data(), "classification", "label", algorithm, SMALL.get(algorithm, {}))
    for at in (0, len(result.artifact) // 2, len(result.artifact) - 1):
        with pytest.raises(ArtifactError, match="sha256 mismatch"):
            artifacts.load(flip_byte(result.artifact, at), result.artifact_format, result.artifact_sha256)


def test_an_artifact_recorded_with_another_digest_is_refused() -> None:
    result = training.fit(data(), "classification", "label", "decision_tree")
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        artifacts.load(result.artifact, "skops", "0" * 64)


def test_an_unknown_format_is_refused() -> None:
    result = training.fit(data(), "classification", "label", "decision_tree")
    with pytest.raises(ArtifactError, match="unknown artifact format 'pickle'"):
        artifacts.load(result.artifact, "pickle", result.artifact_sha256)


# -- torch weights ----------------------------------------------------------------------------------------

RAN: list[str] = []


class Trap:
    """Unpickling this would run code: weights_only must refuse it."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (RAN.append, ("unpickled",))


def repacked(artifact: bytes, **replace: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(artifact)) as source, zipfile.ZipFile(out, "w") as target:
        for name in source.namelist():
            target.writestr(name, replace.get(name.replace(".", "_").replace("-", "_"), source.read(name)))
    return out.getvalue()


def torch_artifact() -> bytes:
    return training.fit(data(), "classification", "label", "mlp", SMALL["mlp"]).artifact


def test_torch_weights_holding_anything_but_tensors_are_refused_without_running_it() -> None:
    weights = io.BytesIO()
    torch.save({"0.weight": Trap()}, weights)
    blob = repacked(torch_artifact(), weights_pt=weights.getvalue())
    with pytest.raises(ArtifactError, match=r"weights_only=True"):
        artifacts.load(blob, "torch", artifacts.sha256(blob))
    assert RAN == []


def test_torch_metadata_naming_an_unknown_model_kind_is_refused() -> None:
    artifact = torch_artifact()
    with zipfile.ZipFile(io.BytesIO(artifact)) as archive:
        manifest = json.loads(archive.read("pgmlops-torch.json"))
    manifest["model"]["kind"] = "os.system"
    blob = repacked(artifact, pgmlops_torch_json=json.dumps(manifest).encode())
    with pytest.raises(ArtifactError, match="unknown model kind 'os.system'"):
        artifacts.load(blob, "torch", artifacts.sha256(blob))


def test_a_torch_artifact_whose_preprocessing_holds_an_untrusted_type_is_refused() -> None:
    evil = sio.dumps(Pipeline([("run", FunctionTransformer(os.system))]))
    blob = repacked(torch_artifact(), preprocess_skops=evil)
    with pytest.raises(ArtifactError, match="outside the allowlist"):
        artifacts.load(blob, "torch", artifacts.sha256(blob))
