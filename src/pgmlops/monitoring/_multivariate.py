"""The ``monitor`` job handler: a drift report's multivariate part (NannyML's multivariate drift
over the tabular inputs) and embedding drift (per vector or text input), stored with the report.

``ml.drift_report`` enqueues the job (payload ``{report_id}``) and leaves the report ``pending``.
The handler, acting for the report's tenant as a service caller in the job's transaction:

1. reads the report, its version's input profiles (``ml.reference_profiles``: the kind of each
   input) and samples of at most ``SAMPLE_ROWS`` rows: the reference from the version's training
   set (a seeded random sample, kept in row order) and the current window from the live
   predictions of the version in the window (a sample by the hash of the prediction's id, kept in
   time order);
2. computes over the tabular inputs (numeric, binary, categorical) NannyML 0.13's two methods:
   :func:`domain_classifier_auc` (DomainClassifierCalculator) and
   :func:`pca_reconstruction` (DataReconstructionDriftCalculator), and per vector or text input
   :func:`pgmlops.monitoring._embeddings.embedding_tests` (texts embedded with all-MiniLM-L6-v2
   when the extra ``text`` is installed, else skipped with the reason);
3. stores them with ``ml.finish_monitor_report`` (results as ``ml.drift_results`` rows,
   ``summary.multivariate``, status ``complete``, alerts raised again), idempotently.

A report over a source (``options.source``: its rows lived in the caller's session only) or
whose training set was dropped gets a ``summary.multivariate.reason`` instead. Input no retry
can fix (no such report) raises :class:`PermanentError`; the last failed attempt marks the
report ``failed`` with the error.
"""

from __future__ import annotations

import json
import math
from typing import Any
from uuid import UUID

import numpy as np
import pandas as pd
from psycopg.types.json import Jsonb

from pgmlops.db import call, sql_errors
from pgmlops.errors import DatabaseError, NotFound
from pgmlops.jobs.handlers import JobContext, PermanentError
from pgmlops.monitoring._embeddings import (
    CV_FOLDS,
    DC_LOWER,
    DC_UPPER,
    domain_classifier_auc,
    embed_texts,
    embedding_tests,
    text_embedder_missing,
)

__all__ = ["SAMPLE_ROWS", "compute", "monitor", "pca_reconstruction", "tabular_matrices", "tabular_tests"]

SAMPLE_ROWS = 5000
# NannyML's DataReconstructionDriftCalculator: PCA keeping 65% of the variance (random_state 16),
# 10 reference chunks (DefaultChunker), band mean +- 3 std (StandardDeviationThreshold), lower
# bound at least 0.
PCA_VARIANCE = 0.65
REFERENCE_CHUNKS = 10
STD_MULTIPLIER = 3.0
MIN_ROWS = 20

_NUMERIC_DTYPES = ("int", "float", "timestamp")


def _numeric(dtype: str) -> bool:
    return dtype in _NUMERIC_DTYPES or dtype.startswith(("numeric", "double", "real", "integer", "bigint", "smallint"))


def _category(value: Any) -> Any:
    """A category as the reference profiles key it (docs/monitoring.md): booleans 'true' / 'false', numbers by
    their float text, strings as they are; None for missing."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, float, np.integer, np.floating)):
        f = float(value)
        return str(int(f)) if f.is_integer() else repr(f)
    return str(value)


def _numbers(values: pd.Series) -> np.ndarray[Any, Any]:
    """Numbers as float64 (timestamps as epoch seconds, booleans 0/1), NaN for missing."""
    if pd.api.types.is_datetime64_any_dtype(values):
        ts = pd.to_datetime(values, utc=True)
        out = (ts - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype=np.float64, na_value=np.nan)
        return np.asarray(out, dtype=np.float64)
    if values.dtype == object:
        parsed = pd.to_numeric(values, errors="coerce")
        if parsed.isna().sum() > values.isna().sum():  # ISO timestamps from the prediction log
            ts = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
            return np.asarray((ts - pd.Timestamp(0, tz="UTC")).dt.total_seconds(), dtype=np.float64)
        values = parsed
    return np.asarray(pd.to_numeric(values, errors="coerce").astype("float64"), dtype=np.float64)


def tabular_matrices(reference: pd.DataFrame, current: pd.DataFrame, continuous: list[str],
                     categorical: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The two samples as NannyML reads them: continuous columns as float64 (NaN missing),
    categorical ones as strings (None missing), columns in NannyML's order (sorted names,
    categorical first)."""
    def one(frame: pd.DataFrame) -> pd.DataFrame:
        out = {c: pd.Series([_category(v) for v in frame[c]], dtype=object) for c in sorted(categorical)}
        out.update({c: pd.Series(_numbers(frame[c])) for c in sorted(continuous)})
        return pd.DataFrame(out)

    return one(reference), one(current)


def _chunk_bounds(n: int) -> list[tuple[int, int]]:
    """NannyML's DefaultChunker: chunks of n // 10 rows, the rest a last, smaller chunk."""
    size = n // REFERENCE_CHUNKS
    if size == 0:
        return [(0, n)]
    bounds = [(i, i + size) for i in range(0, n, size) if i + size <= n]
    if n % size:
        bounds.append((size * (n // size), n))
    return bounds


def pca_reconstruction(reference: pd.DataFrame, current: pd.DataFrame, continuous: list[str],
                       categorical: list[str]) -> dict[str, Any]:
    """NannyML's DataReconstructionDriftCalculator with its defaults, fitted on ``reference``:
    missing values imputed (the mean of a continuous column, the most frequent category),
    categories replaced by their frequency in the reference (CountEncoder(normalize=True);
    a category the reference lacks counts 0), standardized, PCA keeping 65% of the variance
    (random_state 16); a row's error is the Euclidean distance between it and its reconstruction.
    The value is the mean error of the current rows; the band is the mean +- 3 std (ddof 0) of
    the mean errors of the reference's 10 chunks (lower bound at least 0); drifted outside it.
    Returns ``{statistic, threshold, drifted, details}``."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    columns = sorted(categorical) + sorted(continuous)

    def encode(frame: pd.DataFrame, fit: dict[str, Any]) -> np.ndarray[Any, Any]:
        cols = []
        for c in sorted(categorical):
            values = frame[c].where(frame[c].notna(), fit["mode"][c])
            cols.append(np.array([fit["freq"][c].get(v, 0.0) for v in values], dtype=np.float64))
        for c in sorted(continuous):
            x = frame[c].to_numpy(dtype=np.float64)
            cols.append(np.where(np.isnan(x), fit["mean"][c], x))
        return np.column_stack(cols)

    fit: dict[str, Any] = {"mode": {}, "freq": {}, "mean": {}}
    for c in sorted(categorical):
        present = reference[c].dropna()
        counts = present.value_counts()
        # SimpleImputer(strategy='most_frequent'): the smallest of the most frequent values.
        fit["mode"][c] = min(counts.index[counts == counts.max()]) if len(counts) else "missing"
        imputed = reference[c].where(reference[c].notna(), fit["mode"][c])
        fit["freq"][c] = (imputed.value_counts() / len(imputed)).to_dict()
    for c in sorted(continuous):
        mean = float(np.nanmean(reference[c].to_numpy(dtype=np.float64))) if reference[c].notna().any() else 0.0
        fit["mean"][c] = mean
    ref_x = encode(reference, fit)
    scaler = StandardScaler().fit(ref_x)
    ref_z = scaler.transform(ref_x)
    pca = PCA(n_components=PCA_VARIANCE, random_state=16).fit(ref_z)

    def errors(z: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        return np.asarray(np.linalg.norm(z - pca.inverse_transform(pca.transform(z)), axis=1), dtype=np.float64)

    ref_err = errors(ref_z)
    chunks = [float(ref_err[a:b].mean()) for a, b in _chunk_bounds(len(ref_err))]
    mean, std = float(np.mean(chunks)), float(np.std(chunks))
    lower, upper = max(mean - STD_MULTIPLIER * std, 0.0), mean + STD_MULTIPLIER * std
    cur_err = errors(scaler.transform(encode(current, fit)))
    value = float(cur_err.mean())
    return {"statistic": value, "threshold": upper, "drifted": bool(value > upper or value < lower),
            "details": {"lower_threshold": lower, "upper_threshold": upper, "reference_chunks": chunks,
                        "reference_error": float(ref_err.mean()),
                        "sampling_error": float(cur_err.std(ddof=1) / math.sqrt(len(cur_err))) if len(cur_err) > 1 else None,
                        "components": int(pca.n_components_), "variance_kept": PCA_VARIANCE, "columns": columns,
                        "reference_rows": len(reference)}}


def tabular_tests(reference: pd.DataFrame, current: pd.DataFrame, continuous: list[str],
                  categorical: list[str]) -> list[dict[str, Any]]:
    """The two multivariate tests over the tabular inputs (frames from :func:`tabular_matrices`)
    as rows for ``ml.finish_monitor_report`` (feature ``*``, kind ``multivariate``):
    ``domain_classifier`` (categories as ordinal codes over both samples, unknown -1, NannyML's
    preprocessing; missing numbers stay NaN) and ``pca_reconstruction``."""
    codes = []
    for c in sorted(categorical):
        both = pd.concat([reference[c], current[c]], ignore_index=True)
        cats = sorted({v for v in both if v is not None})
        index = {v: float(i) for i, v in enumerate(cats)}
        codes.append(np.array([index[v] if v is not None else np.nan for v in both], dtype=np.float64))
    numbers = [pd.concat([reference[c], current[c]], ignore_index=True).to_numpy(dtype=np.float64) for c in sorted(continuous)]
    x = np.column_stack(codes + numbers)
    m = len(reference)
    mask = [True] * len(codes) + [False] * len(numbers)
    auc = domain_classifier_auc(x[:m], x[m:], mask)
    pca = pca_reconstruction(reference, current, continuous, categorical)
    return [
        {"feature": "*", "kind": "multivariate", "test": "domain_classifier", "statistic": auc, "p_value": None,
         "threshold": DC_UPPER, "drifted": bool(auc > DC_UPPER), "row_count": len(current),
         "details": {"metric": "roc_auc", "lower_threshold": DC_LOWER, "upper_threshold": DC_UPPER, "cv_folds": CV_FOLDS,
                     "nannyml_alert": bool(auc > DC_UPPER or auc < DC_LOWER),
                     "classifier": "HistGradientBoostingClassifier", "reference_rows": m,
                     "columns": sorted(categorical) + sorted(continuous)}},
        {"feature": "*", "kind": "multivariate", "test": "pca_reconstruction", "p_value": None, "row_count": len(current), **pca},
    ]


# -- reading the samples -------------------------------------------------------------------------


def _vectors(values: pd.Series) -> np.ndarray[Any, Any] | None:
    """Rows of a vector column (numpy arrays, JSON arrays or pgvector's '[1,2]' text), missing
    ones dropped; None when no row has one."""
    rows = []
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        if isinstance(v, str):
            v = json.loads(v)
        rows.append(np.asarray(v, dtype=np.float64))
    return np.vstack(rows) if rows else None


def _current_rows(ctx: JobContext, report: dict[str, Any]) -> pd.DataFrame:
    """At most SAMPLE_ROWS live predictions of the report's version in its window (by the hash of
    their id when there are more), in time order: their logged features."""
    with sql_errors():
        rows = ctx.conn.execute(
            """select s.features from (
                   select p.features, p.created_at, p.id from ml.predictions p
                   where p.tenant_id = %(t)s and p.project_id = %(p)s and p.model_version_id = %(v)s
                     and p.created_at >= %(a)s and p.created_at < %(b)s and p.shadow_of is null
                   order by md5(p.id::text) limit %(n)s) s
               order by s.created_at, s.id""",
            {"t": report["tenant_id"], "p": report["project_id"], "v": report["model_version_id"],
             "a": report["window_start"], "b": report["window_end"], "n": SAMPLE_ROWS}).fetchall()
    return pd.DataFrame([r[0] or {} for r in rows])


def _reference_rows(ctx: JobContext, dataset_id: UUID, features: list[str], seed: int) -> pd.DataFrame:
    """At most SAMPLE_ROWS rows of the training set's ``features`` columns (those with the
    smallest ``md5(row_id || seed)``: the whole set when it is smaller), in row order, read as
    JSON like the prediction log's features (pgvector values as their text, timestamps as ISO
    strings), so both samples go through the same coercion."""
    from psycopg import sql

    from pgmlops.features import dataset_info

    info = dataset_info(ctx.conn, dataset_id)
    names = [c["name"] for c in info.columns if c["name"] in set(features)]
    if not names:
        return pd.DataFrame()
    query = sql.SQL("""select to_jsonb(x) - 'row_id' from (
                           select d.row_id, {} from {} d order by md5(d.row_id::text || {}) limit {}) x
                       order by x.row_id""").format(
        sql.SQL(", ").join(sql.SQL("d.{}").format(sql.Identifier(n)) for n in names),
        sql.SQL(info.table_name), sql.Literal(str(seed)), sql.Literal(SAMPLE_ROWS))
    with sql_errors():
        rows = ctx.conn.execute(query).fetchall()
    return pd.DataFrame([r[0] for r in rows], columns=names)


def _finish(ctx: JobContext, report_id: str, results: list[dict[str, Any]], section: dict[str, Any],
            error: str | None = None) -> dict[str, Any]:
    return dict(call(ctx.conn, "ml.finish_monitor_report(%s, %s, %s, %s)",
                     (report_id, Jsonb(results), Jsonb(section), error)))


def _clean(value: Any) -> Any:
    """JSON-safe: non-finite floats as None, numpy scalars as Python ones."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def compute(reference: pd.DataFrame, current: pd.DataFrame, profiles: list[dict[str, Any]],
            seed: int = 0) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The report's multivariate results and summary section from the two samples and the input
    profiles ``[{feature, kind, dtype, summary}]`` (see the module)."""
    from threadpoolctl import threadpool_limits

    results: list[dict[str, Any]] = []
    section: dict[str, Any] = {"reference_rows": len(reference), "current_rows": len(current), "sample_limit": SAMPLE_ROWS}
    tabular = [p for p in profiles if p["kind"] in ("numeric", "binary", "categorical")
               and p["feature"] in reference.columns and p["feature"] in current.columns]
    continuous = [p["feature"] for p in tabular if _numeric(p["dtype"])]
    categorical = [p["feature"] for p in tabular if not _numeric(p["dtype"])]
    with threadpool_limits(1):
        if len(reference) < MIN_ROWS or len(current) < MIN_ROWS:
            section["reason"] = (f"multivariate drift needs at least {MIN_ROWS} reference and {MIN_ROWS} current rows, "
                                 f"got {len(reference)} and {len(current)}")
        elif not tabular:
            section["reason"] = "no tabular inputs (numeric, binary, categorical) in both samples"
        else:
            ref_t, cur_t = tabular_matrices(reference, current, continuous, categorical)
            results.extend(tabular_tests(ref_t, cur_t, continuous, categorical))
        embeddings: dict[str, Any] = {}
        for p in profiles:
            if p["kind"] not in ("vector", "text"):
                continue
            name = p["feature"]
            if name not in reference.columns or name not in current.columns:
                embeddings[name] = {"reason": "the input is missing from the reference or the current rows"}
                continue
            try:
                if p["kind"] == "vector":
                    ref_v, cur_v = _vectors(reference[name]), _vectors(current[name])
                else:
                    missing = text_embedder_missing()
                    if missing is not None:
                        embeddings[name] = {"reason": missing}
                        continue
                    ref_s = [str(v) for v in reference[name] if v is not None and not (isinstance(v, float) and math.isnan(v))]
                    cur_s = [str(v) for v in current[name] if v is not None and not (isinstance(v, float) and math.isnan(v))]
                    ref_v = embed_texts(ref_s) if ref_s else None
                    cur_v = embed_texts(cur_s) if cur_s else None
                if ref_v is None or cur_v is None:
                    raise ValueError("no values in the reference or the current rows")
                centroid = (p.get("summary") or {}).get("centroid")
                for row in embedding_tests(ref_v, cur_v, seed=seed, reference_centroid=centroid):
                    results.append({"feature": name, "kind": p["kind"], **row})
                embeddings[name] = {"kind": p["kind"], "drifted": any(r["drifted"] for r in results if r["feature"] == name)}
            except ValueError as exc:
                embeddings[name] = {"reason": str(exc)}
        if embeddings:
            section["embeddings"] = embeddings
    by_test = {r["test"]: r for r in results if r["feature"] == "*"}
    if by_test:
        section["domain_classifier"] = {k: by_test["domain_classifier"][k] for k in ("statistic", "threshold", "drifted")}
        section["pca_reconstruction"] = {k: by_test["pca_reconstruction"][k] for k in ("statistic", "threshold", "drifted")}
    section["drifted"] = any(r["drifted"] for r in results)
    section["method"] = "NannyML 0.13 multivariate drift (domain classifier, PCA reconstruction); embedding drift"
    return _clean(results), _clean(section)


def monitor(ctx: JobContext) -> dict[str, Any]:
    """Payload ``{report_id}`` (from ``ml.drift_report``); result ``ml.finish_monitor_report``'s
    ``{report_id, status, results}`` (see the module).

    Raises:
        PermanentError: no such report in the job's tenant.
    """
    report_id = str(ctx.payload.get("report_id") or "")
    try:
        UUID(report_id)
    except ValueError as exc:
        raise PermanentError(f"payload.report_id: must be a uuid, got {report_id!r}") from exc
    with sql_errors():
        row = ctx.conn.execute(
            """select r.tenant_id, r.project_id, r.model_version_id, r.window_start, r.window_end, r.source,
                      v.dataset_id, d.id is not null
               from ml.drift_reports r left join ml.model_versions v on v.id = r.model_version_id
               left join ml.datasets d on d.id = v.dataset_id
               where r.id = %s and r.tenant_id = (select ml.current_tenant())""", (report_id,)).fetchone()
    if row is None:
        raise PermanentError(f"drift report {report_id} does not exist")
    report = dict(zip(["tenant_id", "project_id", "model_version_id", "window_start", "window_end", "source", "dataset_id",
                       "has_dataset"], row, strict=True))
    if report["source"] != "ml.predictions":
        return _finish(ctx, report_id, [], {"reason": "the report's rows came from a source (options.source) read in the "
                                                      "caller's session: they are not kept for the worker", "drifted": False})
    if report["model_version_id"] is None or not report["has_dataset"]:
        return _finish(ctx, report_id, [], {"reason": "the version's training set (the reference samples) is gone",
                                            "drifted": False})
    try:
        profiles = [dict(zip(["feature", "kind", "dtype", "summary"], r, strict=True)) for r in ctx.conn.execute(
            """select r.feature, r.kind, r.dtype, r.summary from ml.reference_profiles r
               where r.model_version_id = %s and r.role = 'input' order by r.feature""",
            (report["model_version_id"],)).fetchall()]
        seed = int(UUID(report_id).int % (2**32))
        reference = _reference_rows(ctx, report["dataset_id"], [p["feature"] for p in profiles], seed)
        current = _current_rows(ctx, report)
        results, section = compute(reference, current, profiles, seed)
        return _finish(ctx, report_id, results, section)
    except NotFound as exc:
        raise PermanentError(f"drift report {report_id}: {exc}") from exc
    except Exception as exc:
        if ctx.job.attempts >= ctx.job.max_attempts and not isinstance(exc, DatabaseError):
            _fail(ctx, report_id, f"{type(exc).__name__}: {exc}")
        raise


def _fail(ctx: JobContext, report_id: str, error: str) -> None:
    """Mark the report failed, committed on a connection of its own (the job's transaction is about
    to roll back)."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    from pgmlops.db import tenant_context

    try:
        with psycopg.connect(make_conninfo(ctx.conn.info.dsn, password=ctx.conn.info.password or None)) as conn, \
                tenant_context(conn, ctx.tenant_id):
            call(conn, "ml.finish_monitor_report(%s, '[]', '{}', %s)", (report_id, error))
    except (DatabaseError, psycopg.Error):  # the job's own failure is what matters
        pass
