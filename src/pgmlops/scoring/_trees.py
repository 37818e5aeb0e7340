"""Tree models as descriptions: decision trees, forests, extra trees, gradient boosting, histogram
gradient boosting and isolation forests.

Every split is folded through the preprocessing onto the model input it reads, exactly:
scikit-learn's trees compare ``float64(float32(z)) <= t`` where ``z`` is the preprocessed value
(histogram gradient boosting compares ``z <= t`` in float64), and ``z`` is a non-decreasing
function of the raw input ``x`` (imputation, standardization, min-max scaling), so the rows that
go left are exactly ``x <= X*`` for the largest float64 ``X*`` that still goes left, found by a
binary search over the float64 values with numpy doing scikit-learn's own arithmetic. A missing
input goes where the imputed value goes (or where the tree sends NaN); each test is oriented so
that SQL's NULL, which makes a comparison false, takes that branch. One-hot columns fold onto
"category equals c" tests. Tests that cannot go both ways are pruned.

Trees are written depth first, each test followed by its then-branch (the layout
the SQL compiler reads, ``sql/scoring/compiler.sql``): arrays ``op``, ``input``, ``value``, ``leaf``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pgmlops.scoring._errors import NotCompilable
from pgmlops.scoring._preprocess import Feature

__all__ = ["TreeWriter", "describe_trees", "fold_thresholds", "sklearn_trees"]

_SIGN = np.uint64(1 << 63)


# -- folding thresholds ---------------------------------------------------------------------------


def _to_order(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """float64 -> uint64 in the same order (-inf smallest, -0.0 and 0.0 equal)."""
    bits = x.view(np.uint64)
    negative = (bits & _SIGN) != 0
    return np.where(negative, _SIGN - (bits & ~_SIGN), _SIGN + bits)


def _from_order(k: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    negative = k < _SIGN
    bits = np.where(negative, (_SIGN - k) | _SIGN, k - _SIGN)
    return np.asarray(bits, dtype=np.uint64).view(np.float64)


def fold_thresholds(feature: Feature, thresholds: np.ndarray[Any, Any], float32: bool) -> np.ndarray[Any, Any]:
    """For each threshold t: the largest float64 x (not NaN) whose preprocessed value goes left
    (``float64(float32(z)) <= t``, or ``z <= t`` without ``float32``); +inf when every x goes
    left, NaN when none does."""
    t = np.asarray(thresholds, dtype=np.float64)

    def left(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        with np.errstate(over="ignore", invalid="ignore"):
            z = feature.apply_ops(x)
            if float32:
                z = z.astype(np.float32).astype(np.float64)
            return np.asarray(z <= t)

    lo = np.full(t.shape, _to_order(np.array([-np.inf]))[0], dtype=np.uint64)
    hi = np.full(t.shape, _to_order(np.array([np.inf]))[0], dtype=np.uint64)
    all_left = left(np.full(t.shape, np.inf))
    none_left = ~left(np.full(t.shape, -np.inf))
    # Invariant: lo goes left, hi does not.
    while True:
        open_ = (hi - lo) > 1
        if not open_.any():
            break
        mid = lo + (hi - lo) // np.uint64(2)
        goes = left(_from_order(mid))
        lo = np.where(open_ & goes, mid, lo)
        hi = np.where(open_ & ~goes, mid, hi)
    out = _from_order(lo)
    out[all_left] = np.inf
    out[none_left & ~all_left] = np.nan
    return out


# -- writing trees --------------------------------------------------------------------------------

# A decision at one node: ("goto", child) or ("test", op, input, value, then, else).
Decision = tuple[Any, ...]


class TreeWriter:
    """Writes one tree depth first; ``leaf`` gives a node's leaf value, ``decide`` a test's
    decision (in terms of the original child ids)."""

    def __init__(self, is_leaf: Callable[[int], bool], leaf: Callable[[int], Any], decide: Callable[[int], Decision]) -> None:
        self.is_leaf = is_leaf
        self.leaf = leaf
        self.decide = decide

    def write(self, root: int = 0) -> dict[str, list[Any]]:
        op: list[str] = []
        inputs: list[int] = []
        values: list[Any] = []
        leaves: list[Any] = []
        stack: list[Decision] = [("goto", root)]
        while stack:
            item = stack.pop()
            if item[0] == "goto":
                node = item[1]
                if self.is_leaf(node):
                    op.append("leaf")
                    inputs.append(0)
                    values.append(None)
                    leaves.append(self.leaf(node))
                    continue
                item = self.decide(node)
                if item[0] == "goto":
                    stack.append(item)
                    continue
            _, test, index, value, then, other = item
            op.append(test)
            inputs.append(index)
            values.append(value)
            leaves.append(None)
            stack.append(other)
            stack.append(then)
        return {"op": op, "input": inputs, "value": values, "leaf": leaves}


def _numeric_decision(x_star: float, missing_left: bool, index: int, left: int, right: int) -> Decision:
    """Non-missing x goes left iff x <= x_star (+inf: always, NaN: never); a missing one as told."""
    goto_l, goto_r = ("goto", left), ("goto", right)
    if np.isnan(x_star):
        return goto_r if not missing_left else ("test", "nn", index, None, goto_r, goto_l)
    if np.isposinf(x_star):
        return goto_l if missing_left else ("test", "nn", index, None, goto_l, goto_r)
    if missing_left:
        return ("test", "gt", index, float(x_star), goto_r, goto_l)
    return ("test", "le", index, float(x_star), goto_l, goto_r)


def _indicator_decision(feature: Feature, p0: bool, p1: bool, p_missing: bool, left: int, right: int) -> Decision:
    """An indicator column (categorical input is ``feature.category``): 0 goes left iff p0, 1
    iff p1, a missing input iff p_missing."""
    side = {True: ("goto", left), False: ("goto", right)}
    assert feature.cat is not None
    if feature.category is None or p0 == p1:
        # Every present value goes one way (an "is missing" indicator is 0 for them).
        present = p0
        if present == p_missing:
            return side[present]
        return ("test", "cnn", feature.cat, None, side[present], side[p_missing])
    if p_missing == p0:
        return ("test", "eq", feature.cat, feature.category, side[p1], side[p0])
    return ("test", "ne", feature.cat, feature.category, side[p0], side[p1])


def sklearn_tree_decisions(trees: Sequence[Any], features: Sequence[Feature],
                           feature_maps: Sequence[Sequence[int] | None] | None = None) -> list[dict[int, Decision]]:
    """The folded decisions of the test nodes of scikit-learn trees (``tree_`` objects; float32
    comparisons), all trees at once: one binary search per feature. ``feature_maps``: the global
    feature of each of a tree's features (isolation forests' feature subsets)."""
    tree_ids: list[np.ndarray[Any, Any]] = []
    node_ids: list[np.ndarray[Any, Any]] = []
    columns: list[np.ndarray[Any, Any]] = []
    thresholds: list[np.ndarray[Any, Any]] = []
    for t, tree in enumerate(trees):
        internal = np.flatnonzero(tree.children_left != -1)
        cols = tree.feature[internal]
        if feature_maps is not None and feature_maps[t] is not None:
            cols = np.asarray(feature_maps[t])[cols]
        tree_ids.append(np.full(len(internal), t))
        node_ids.append(internal)
        columns.append(cols)
        thresholds.append(tree.threshold[internal])
    all_trees = np.concatenate(tree_ids)
    all_nodes = np.concatenate(node_ids)
    all_columns = np.concatenate(columns)
    all_thresholds = np.concatenate(thresholds)
    decisions: list[dict[int, Decision]] = [{} for _ in trees]
    for k in np.unique(all_columns):
        feature = features[int(k)]
        picked = np.flatnonzero(all_columns == k)
        ts = all_thresholds[picked]
        if feature.is_indicator:
            with np.errstate(over="ignore"):
                z = feature.apply_ops(np.array([0.0, 1.0, feature.base_when_missing()]))
                z = z.astype(np.float32).astype(np.float64)
            for i, t in zip(picked, ts, strict=True):
                tree = trees[all_trees[i]]
                node = int(all_nodes[i])
                p0, p1, pm = (bool(v <= t) for v in z)
                decisions[all_trees[i]][node] = _indicator_decision(feature, p0, p1, pm, int(tree.children_left[node]),
                                                                    int(tree.children_right[node]))
            continue
        if not feature.increasing():
            raise NotCompilable("a tree splits on a column whose preprocessing is not increasing")
        x_stars = fold_thresholds(feature, ts, float32=True)
        with np.errstate(over="ignore", invalid="ignore"):
            missing_z = feature.apply_ops(np.array([np.nan]))[0]
            missing_z32 = float(np.float64(np.float32(missing_z)))
        assert feature.num is not None
        for i, t, x_star in zip(picked, ts, x_stars, strict=True):
            tree = trees[all_trees[i]]
            node = int(all_nodes[i])
            if np.isnan(missing_z):
                flags = getattr(tree, "missing_go_to_left", None)
                if flags is None:
                    raise NotCompilable("a tree may see a missing value but records no direction for it")
                missing_left = bool(flags[node])
            else:
                missing_left = bool(missing_z32 <= t)
            decisions[all_trees[i]][node] = _numeric_decision(float(x_star), missing_left, feature.num,
                                                              int(tree.children_left[node]), int(tree.children_right[node]))
    return decisions


def sklearn_trees(trees: Sequence[Any], features: Sequence[Feature], leaves: Sequence[Callable[[int], Any]],
                  feature_maps: Sequence[Sequence[int] | None] | None = None) -> list[dict[str, list[Any]]]:
    """scikit-learn trees (``tree_``) written depth first with folded tests; ``leaves[t]`` gives
    tree t's leaf values."""
    all_decisions = sklearn_tree_decisions(trees, features, feature_maps)
    out = []
    for tree, leaf, decisions in zip(trees, leaves, all_decisions, strict=True):
        out.append(TreeWriter(_is_leaf(tree.children_left), leaf, decisions.__getitem__).write(0))
    return out


def _is_leaf(left_child: np.ndarray[Any, Any]) -> Callable[[int], bool]:
    def is_leaf(node: int) -> bool:
        return bool(left_child[node] == -1)
    return is_leaf


def leaf_values(values: np.ndarray[Any, Any]) -> Callable[[int], Any]:
    """A leaf's value from per-node values: a number, or a list for a row of class values."""
    def leaf(node: int) -> Any:
        row = values[node]
        return [float(v) for v in row] if np.ndim(row) else float(row)
    return leaf


def describe_trees(trees: list[dict[str, Any]], outputs: int, init: Sequence[float] | None, divide: float | None) -> dict[str, Any]:
    return {"kind": "trees", "outputs": outputs, "trees": trees,
            "init": None if init is None else [float(v) for v in init],
            "divide": None if divide is None else float(divide)}


# -- families -----------------------------------------------------------------------------------------


def _check_depth(estimator: Any, depth: int) -> None:
    if depth > 400:
        raise NotCompilable(f"{type(estimator).__name__}: a tree {depth} levels deep (compiled trees go at most 400 levels deep; "
                            "PostgreSQL parses nested expressions recursively)")


def decision_tree(est: Any, features: Sequence[Feature], classification: bool) -> dict[str, Any]:
    """DecisionTree / ExtraTree, classifier or regressor."""
    _single_output(est)
    tree = est.tree_
    _check_depth(est, int(tree.max_depth))
    if classification:
        values = tree.value[:, 0, :]
        return describe_trees(sklearn_trees([tree], features, [leaf_values(values)]), len(est.classes_), None, None)
    return describe_trees(sklearn_trees([tree], features, [leaf_values(tree.value[:, 0, 0])]), 1, None, None)


def forest(est: Any, features: Sequence[Feature], classification: bool) -> dict[str, Any]:
    """RandomForest / ExtraTrees: the trees' values added in order, divided by their number."""
    _single_output(est)
    members = [member.tree_ for member in est.estimators_]
    for tree in members:
        _check_depth(est, int(tree.max_depth))
    leaves = [leaf_values(tree.value[:, 0, :] if classification else tree.value[:, 0, 0]) for tree in members]
    trees = sklearn_trees(members, features, leaves)
    outputs = len(est.classes_) if classification else 1
    return describe_trees(trees, outputs, None, float(len(est.estimators_)))


def gradient_boosting(est: Any, features: Sequence[Feature]) -> dict[str, Any]:
    """GradientBoosting: init + learning_rate x each stage's tree value, stage by stage."""
    init_ = est.init_
    if not (isinstance(init_, str) and init_ == "zero") and type(init_).__name__ not in ("DummyClassifier", "DummyRegressor"):
        raise NotCompilable(f"{type(est).__name__} with init={type(init_).__name__}: only a constant initial prediction compiles")
    raw_init = np.asarray(est._raw_predict_init(np.zeros((1, est.n_features_in_), dtype=np.float32)))[0]
    learning_rate = float(est.learning_rate)
    stages, k = est.estimators_.shape
    members = [est.estimators_[stage, j].tree_ for stage in range(stages) for j in range(k)]
    for tree in members:
        _check_depth(est, int(tree.max_depth))
    # scikit-learn adds learning_rate * value at every prediction: the same product, made once.
    leaves = [leaf_values(learning_rate * tree.value[:, 0, 0]) for tree in members]
    trees = sklearn_trees(members, features, leaves)
    for i, written in enumerate(trees):
        written["output"] = i % k
    return describe_trees(trees, k, [float(v) for v in raw_init], None)


def hist_gradient_boosting(est: Any, features: Sequence[Feature]) -> dict[str, Any]:
    """HistGradientBoosting: baseline + each iteration's tree values, with its missing-value
    directions and categorical splits (raw categories, through its ordinal encoding)."""
    columns = list(range(est.n_features_in_))
    categories: dict[int, np.ndarray[Any, Any]] = {}
    if est._preprocessor is not None:
        is_categorical = np.asarray(est.is_categorical_, dtype=bool)
        columns = [int(i) for i in np.flatnonzero(is_categorical)] + [int(i) for i in np.flatnonzero(~is_categorical)]
        encoder = est._preprocessor.named_transformers_["encoder"]
        for position, cats in enumerate(encoder.categories_):
            categories[position] = np.asarray(cats)
    known_bitsets, f_idx_map = est._bin_mapper.make_known_categories_bitsets()
    k = est.n_trees_per_iteration_
    predictors = [predictor for iteration in est._predictors for predictor in iteration]
    numeric = _hgb_numeric_decisions([p.nodes for p in predictors], features, columns)
    trees = []
    for i, predictor in enumerate(predictors):
        trees.append(_hgb_tree(predictor, features, columns, categories, known_bitsets, f_idx_map, numeric[i]))
        trees[-1]["output"] = i % k
    baseline = np.asarray(est._baseline_prediction, dtype=np.float64).reshape(-1)
    return describe_trees(trees, k, [float(v) for v in baseline], None)


def _hgb_numeric_decisions(all_nodes: Sequence[Any], features: Sequence[Feature], columns: list[int]) -> list[dict[int, Decision]]:
    """The folded decisions of the numeric splits of histogram gradient boosting trees (float64
    comparisons), all trees at once: one binary search per feature."""
    tree_ids, node_ids = [], []
    for t, nodes in enumerate(all_nodes):
        if int(nodes["depth"].max()) > 400:
            raise NotCompilable("HistGradientBoosting: a tree deeper than 400 levels")
        picked = np.flatnonzero(~nodes["is_leaf"].astype(bool) & ~nodes["is_categorical"].astype(bool))
        tree_ids.append(np.full(len(picked), t))
        node_ids.append(picked)
    trees_of = np.concatenate(tree_ids)
    nodes_of = np.concatenate(node_ids)
    column_of = np.array([columns[int(all_nodes[t]["feature_idx"][n])] for t, n in zip(trees_of, nodes_of, strict=True)], dtype=int)
    threshold_of = np.array([all_nodes[t]["num_threshold"][n] for t, n in zip(trees_of, nodes_of, strict=True)], dtype=np.float64)
    decisions: list[dict[int, Decision]] = [{} for _ in all_nodes]
    for column in np.unique(column_of):
        feature = features[int(column)]
        picked = np.flatnonzero(column_of == column)
        ts = threshold_of[picked]
        if feature.is_indicator:
            z = feature.apply_ops(np.array([0.0, 1.0, feature.base_when_missing()]))
            for i, t in zip(picked, ts, strict=True):
                nodes, node = all_nodes[trees_of[i]], int(nodes_of[i])
                p0, p1, pm = (bool(v <= t) for v in z)
                decisions[trees_of[i]][node] = _indicator_decision(feature, p0, p1, pm, int(nodes["left"][node]),
                                                                   int(nodes["right"][node]))
            continue
        if not feature.increasing():
            raise NotCompilable("a tree splits on a column whose preprocessing is not increasing")
        x_stars = fold_thresholds(feature, ts, float32=False)
        missing_z = feature.apply_ops(np.array([np.nan]))[0]
        assert feature.num is not None
        for i, t, x_star in zip(picked, ts, x_stars, strict=True):
            nodes, node = all_nodes[trees_of[i]], int(nodes_of[i])
            missing_left = bool(nodes["missing_go_to_left"][node]) if np.isnan(missing_z) else bool(missing_z <= t)
            decisions[trees_of[i]][node] = _numeric_decision(float(x_star), missing_left, feature.num, int(nodes["left"][node]),
                                                             int(nodes["right"][node]))
    return decisions


def _bits(bitset: np.ndarray[Any, Any]) -> set[int]:
    return {32 * word + bit for word in range(len(bitset)) for bit in range(32) if (int(bitset[word]) >> bit) & 1}


def _hgb_tree(predictor: Any, features: Sequence[Feature], columns: list[int], categories: dict[int, np.ndarray[Any, Any]],
              known_bitsets: np.ndarray[Any, Any], f_idx_map: np.ndarray[Any, Any], numeric: dict[int, Decision]) -> dict[str, Any]:
    """One histogram gradient boosting tree: its numeric splits' decisions given, its
    categorical splits decided here."""
    nodes = predictor.nodes
    internal = np.flatnonzero(~nodes["is_leaf"].astype(bool))
    decisions = dict(numeric)
    for node in internal[nodes["is_categorical"][internal].astype(bool)]:
        position = int(nodes["feature_idx"][node])
        feature = features[columns[position]]
        if feature.is_indicator or any(op[0] != "impute" for op in feature.ops):
            raise NotCompilable("HistGradientBoosting: a categorical split on a column that is not a raw numeric input")
        assert feature.num is not None
        cats = categories.get(position)
        if cats is None:
            raise NotCompilable("HistGradientBoosting: a categorical split without the estimator's category encoding")
        left_codes = _bits(predictor.raw_left_cat_bitsets[nodes["bitset_idx"][node]])
        known_codes = _bits(known_bitsets[f_idx_map[position]])
        left_values = sorted(float(cats[c]) for c in left_codes if c < len(cats))
        right_values = sorted(float(cats[c]) for c in known_codes - left_codes if c < len(cats))
        unknown_left = bool(nodes["missing_go_to_left"][node])
        imputed = feature.apply_ops(np.array([np.nan]))[0]
        if np.isnan(imputed):
            missing_left = unknown_left
        else:
            code = int(np.flatnonzero(cats == imputed)[0]) if (cats == imputed).any() else None
            missing_left = unknown_left if code is None or code not in known_codes else code in left_codes
        goto_l, goto_r = ("goto", int(nodes["left"][node])), ("goto", int(nodes["right"][node]))
        # Present values: in the left set -> left, in the right set -> right, else (unknown) -> unknown side.
        if unknown_left:
            present: Decision = ("test", "in", feature.num, right_values, goto_r, goto_l) if right_values else goto_l
        else:
            present = ("test", "in", feature.num, left_values, goto_l, goto_r) if left_values else goto_r
        if missing_left == unknown_left:
            decisions[int(node)] = present
        else:
            decisions[int(node)] = ("test", "nn", feature.num, None, present, goto_l if missing_left else goto_r)
    return TreeWriter(lambda n: bool(nodes["is_leaf"][n]), lambda n: float(nodes["value"][n]), decisions.__getitem__).write(0)


def isolation_forest(est: Any, features: Sequence[Feature]) -> tuple[dict[str, Any], float, float]:
    """IsolationForest: per tree, the reached leaf's depth + average path length of its samples
    - 1, added tree by tree. Returns (estimator description, denominator, offset)."""
    from sklearn.ensemble._iforest import _average_path_length

    members = [member.tree_ for member in est.estimators_]
    for tree in members:
        _check_depth(est, int(tree.max_depth))
    # What scikit-learn adds per tree for the leaf reached: the same sum, made once per leaf.
    constants = [est._decision_path_lengths[t] + est._average_path_length_per_tree[t] - 1.0 for t in range(len(members))]
    trees = sklearn_trees(members, features, [leaf_values(c) for c in constants],
                          feature_maps=[list(subset) for subset in est.estimators_features_])

    denominator = len(est.estimators_) * _average_path_length([est._max_samples])
    return describe_trees(trees, 1, None, None), float(np.asarray(denominator).reshape(-1)[0]), float(est.offset_)


def _single_output(est: Any) -> None:
    if getattr(est, "n_outputs_", 1) != 1:
        raise NotCompilable(f"{type(est).__name__} with {est.n_outputs_} outputs: only single-output models compile")
