"""The preprocessing of a fitted pipeline as one chain of constant operations per estimator feature.

A pgmlops pipeline starts with ``InputFrame`` (the signature's columns, numeric ones then
categorical ones) and a ``ColumnTransformer`` of imputers, scalers and one-hot encoders. Each
column the estimator sees is then a :class:`Feature`: a source (numeric model input ``i``, or
"categorical model input ``j`` is category ``c``") followed by operations with constants
(impute, subtract, divide, multiply, add, clip). :meth:`Feature.values` evaluates the chain
with numpy in exactly the operations scikit-learn performs, so thresholds can be folded through
it (``pgmlops.scoring._trees``), and the SQL side renders the same chain for linear models and
MLPs (``sql/scoring/compiler.sql``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pgmlops.scoring._errors import NotCompilable

__all__ = ["Feature", "Inputs", "resolve_preprocessing"]


@dataclass(frozen=True)
class Inputs:
    """The model inputs a pipeline reads: numeric and categorical counts (1-based positions)."""

    numeric: int
    categorical: int


@dataclass(frozen=True)
class Feature:
    """One column the estimator sees.

    ``num``: the numeric model input it comes from (1-based), or None for an indicator of
    categorical input ``cat`` being ``category`` (None: being missing) after imputing
    ``impute`` (None: no imputation). ``ops``: ``("impute", v)``, ``("sub", c)``, ``("div",
    c)``, ``("mul", c)``, ``("add", c)``, ``("clip", lo, hi)`` applied in order.
    """

    num: int | None = None
    cat: int | None = None
    category: str | None = None
    impute: str | None = None
    ops: tuple[tuple[Any, ...], ...] = field(default_factory=tuple)

    def with_op(self, *op: Any) -> Feature:
        return Feature(self.num, self.cat, self.category, self.impute, (*self.ops, tuple(op)))

    @property
    def is_indicator(self) -> bool:
        return self.num is None

    def base_when_missing(self) -> float:
        """An indicator's value for a missing categorical input (before ``ops``)."""
        if self.impute is not None:
            return 1.0 if self.category == self.impute else 0.0
        return 1.0 if self.category is None else 0.0

    def apply_ops(self, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """``ops`` applied to float64 values (NaN: missing), in scikit-learn's arithmetic."""
        out = np.array(x, dtype=np.float64, copy=True)
        for op in self.ops:
            name = op[0]
            if name == "impute":
                out[np.isnan(out)] = op[1]
            elif name == "sub":
                out -= op[1]
            elif name == "add":
                out += op[1]
            elif name == "mul":
                out *= op[1]
            elif name == "div":
                out /= op[1]
            elif name == "clip":
                np.clip(out, op[1], op[2], out=out)
            else:  # pragma: no cover - ops are made in this module
                raise AssertionError(name)
        return out

    def increasing(self) -> bool:
        """Whether the chain is non-decreasing in its input (every scale factor positive)."""
        return all(not (op[0] in ("mul", "div") and not op[1] > 0) for op in self.ops)

    def describe(self) -> dict[str, Any]:
        ops = [[op[0], *[float(v) for v in op[1:]]] for op in self.ops]
        if self.num is not None:
            return {"num": self.num, "ops": ops}
        return {"cat": self.cat, "category": self.category, "impute": self.impute, "ops": ops}


# -- pipelines -------------------------------------------------------------------------------------


def _is_input_frame(step: Any) -> bool:
    # pgmlops.training's InputFrame, known by its shape: scoring sits below training.
    return type(step).__name__ == "InputFrame" and hasattr(step, "columns") and hasattr(step, "output_columns")


def split_pipeline(model: Any) -> tuple[list[tuple[str, Any]], Any]:
    """(preprocessing steps, estimator) of a fitted Pipeline (nested ones flattened) or a bare estimator."""
    from sklearn.pipeline import Pipeline

    if not isinstance(model, Pipeline):
        return [], model
    steps: list[tuple[str, Any]] = []
    for name, step in model.steps[:-1]:
        if isinstance(step, Pipeline):
            inner, last = split_pipeline(step)
            steps.extend(inner)
            steps.append((name, last))
        else:
            steps.append((name, step))
    return steps, model.steps[-1][1]


def resolve_preprocessing(steps: list[tuple[str, Any]], estimator: Any) -> tuple[Inputs, list[Feature], list[dict[str, str]] | None]:
    """(model inputs, the estimator's features, the InputFrame's columns or None) for a pipeline.

    Raises:
        NotCompilable: a step (or a setting of one) that has no SQL form here.
    """
    signature: list[dict[str, str]] | None = None
    names: list[str] | None = None
    if steps and _is_input_frame(steps[0][1]):
        frame = steps[0][1]
        signature = [dict(c) for c in frame.columns]
        numeric, categorical = frame.output_columns()
        columns: list[Column] = [Feature(num=i + 1) for i in range(len(numeric))]
        columns += [Text(j + 1) for j in range(len(categorical))]
        names = list(numeric) + list(categorical)
        inputs = Inputs(len(numeric), len(categorical))
        steps = steps[1:]
    else:
        n = _n_features_in(steps[0][1] if steps else estimator)
        columns = [Feature(num=i + 1) for i in range(n)]
        inputs = Inputs(n, 0)
    for name, step in steps:
        columns, names = _apply(step, columns, names, name)
    features: list[Feature] = []
    for i, column in enumerate(columns):
        if isinstance(column, Text):
            raise NotCompilable(f"column {i} reaches the estimator as text: only numbers and one-hot indicators compile")
        features.append(column)
    expected = getattr(estimator, "n_features_in_", None)
    if expected is not None and expected != len(features):
        raise NotCompilable(f"the preprocessing gives {len(features)} columns, the estimator expects {expected}")
    return inputs, features, signature


def _n_features_in(step: Any) -> int:
    n = getattr(step, "n_features_in_", None)
    if n is None:
        raise NotCompilable(f"{type(step).__name__}: cannot tell how many inputs it takes (no n_features_in_)")
    return int(n)


@dataclass(frozen=True)
class Text:
    """Categorical model input ``cat`` (1-based) before one-hot encoding, ``impute`` filling its gaps."""

    cat: int
    impute: str | None = None


Column = Feature | Text


def _apply(step: Any, columns: list[Column], names: list[str] | None, label: str) -> tuple[list[Column], list[str] | None]:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler

    if step is None or (isinstance(step, str) and step == "passthrough"):
        return columns, names
    if isinstance(step, Pipeline):
        inner, last = split_pipeline(step)
        for name, sub in [*inner, (label, last)]:
            columns, names = _apply(sub, columns, names, name)
        return columns, names
    if isinstance(step, ColumnTransformer):
        return _column_transformer(step, columns, names), None
    if isinstance(step, SimpleImputer):
        return _imputer(step, columns), None
    if isinstance(step, StandardScaler):
        return _scaler(step, columns, "StandardScaler"), None
    if isinstance(step, MinMaxScaler):
        return _scaler(step, columns, "MinMaxScaler"), None
    if isinstance(step, OneHotEncoder):
        return _one_hot(step, columns), None
    raise NotCompilable(f"step {label!r} ({type(step).__name__}) has no SQL form (compiled: SimpleImputer, StandardScaler, "
                        "MinMaxScaler, OneHotEncoder, ColumnTransformer, Pipeline)")


def _column_transformer(ct: Any, columns: list[Column], names: list[str] | None) -> list[Column]:
    indices: dict[str, Any] = getattr(ct, "_transformer_to_input_indices", None) or {}
    out: list[Column] = []
    for name, transformer, selection in ct.transformers_:
        if isinstance(transformer, str) and transformer == "drop":
            continue
        picked = indices.get(name)
        if picked is None:
            picked = _select(selection, names, len(columns))
        picked = [int(i) for i in picked]
        if not picked:
            continue
        sub = [columns[i] for i in picked]
        sub_names = [names[i] for i in picked] if names is not None else None
        if isinstance(transformer, str) and transformer == "passthrough":
            produced = sub
        else:
            produced, _ = _apply(transformer, sub, sub_names, name)
        sl = ct.output_indices_.get(name)
        if sl is not None and sl.stop - sl.start != len(produced):
            raise NotCompilable(f"ColumnTransformer step {name!r}: {len(produced)} columns worked out, "
                                f"{sl.stop - sl.start} produced")
        out.extend(produced)
    return out


def _select(selection: Any, names: list[str] | None, n: int) -> list[int]:
    if isinstance(selection, slice):
        return list(range(n))[selection]
    values = list(np.atleast_1d(np.asarray(selection, dtype=object)))
    if all(isinstance(v, (bool, np.bool_)) for v in values):
        return [i for i, v in enumerate(values) if v]
    if all(isinstance(v, (int, np.integer)) for v in values):
        return [int(v) % n for v in values]
    if names is None:
        raise NotCompilable("ColumnTransformer selects columns by name, but its input has no column names")
    return [names.index(str(v)) for v in values]


def _imputer(imputer: Any, columns: list[Column]) -> list[Column]:
    missing = imputer.missing_values
    if not (missing is None or (isinstance(missing, float) and math.isnan(missing)) or missing is np.nan):
        raise NotCompilable(f"SimpleImputer(missing_values={missing!r}): only NaN / None missing values compile")
    if getattr(imputer, "add_indicator", False):
        raise NotCompilable("SimpleImputer(add_indicator=True) has no SQL form here")
    out: list[Column] = []
    keep_empty = bool(getattr(imputer, "keep_empty_features", False))
    for column, statistic in zip(columns, imputer.statistics_, strict=True):
        if isinstance(column, Text):
            if statistic is None or (isinstance(statistic, float) and math.isnan(statistic)):
                if not keep_empty:
                    continue
                raise NotCompilable("SimpleImputer: a categorical column with no value to impute")
            out.append(Text(column.cat, column.impute if column.impute is not None else str(statistic)))
            continue
        value = float(statistic)
        if math.isnan(value):
            if not keep_empty:
                continue  # scikit-learn drops a column it saw no value of
            value = 0.0
        out.append(column.with_op("impute", value))
    return out


def _scaler(scaler: Any, columns: list[Column], kind: str) -> list[Column]:
    out: list[Column] = []
    for k, column in enumerate(columns):
        if isinstance(column, Text):
            raise NotCompilable(f"{kind} over a text column")
        if kind == "StandardScaler":
            if scaler.with_mean:
                column = column.with_op("sub", float(scaler.mean_[k]))
            if scaler.with_std:
                column = column.with_op("div", float(scaler.scale_[k]))
        else:
            column = column.with_op("mul", float(scaler.scale_[k])).with_op("add", float(scaler.min_[k]))
            if scaler.clip:
                column = column.with_op("clip", float(scaler.feature_range[0]), float(scaler.feature_range[1]))
        out.append(column)
    return out


def _one_hot(encoder: Any, columns: list[Column]) -> list[Column]:
    if encoder.drop is not None:
        raise NotCompilable(f"OneHotEncoder(drop={encoder.drop!r}) has no SQL form here")
    infrequent = getattr(encoder, "infrequent_categories_", None)
    if infrequent is not None and any(c is not None and len(c) for c in infrequent):
        raise NotCompilable("OneHotEncoder with infrequent categories (min_frequency / max_categories) has no SQL form here")
    out: list[Column] = []
    for column, categories in zip(columns, encoder.categories_, strict=True):
        if not isinstance(column, Text):
            raise NotCompilable("OneHotEncoder over a numeric column has no SQL form here (encode text columns)")
        for category in categories:
            missing = category is None or (isinstance(category, float) and math.isnan(category))
            out.append(Feature(cat=column.cat, category=None if missing else str(category), impute=column.impute))
    return out
