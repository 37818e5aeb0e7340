"""Helpers shared by the compiler's tests: registered versions to compile, rows of raw values, and
scoring through a compiled function (ml_private.compiled_arguments, then ml_models.mv_...)."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

Conn = psycopg.Connection[Any]

# Every input dtype a training set may give a model: numeric ones first in InputFrame's order
# (amount, visits, seen, emb[0], emb[1]), then categorical ones (tier, vip).
MIXED_SIGNATURE = [{"name": "amount", "dtype": "float"}, {"name": "visits", "dtype": "int"},
                   {"name": "tier", "dtype": "text"}, {"name": "vip", "dtype": "bool"},
                   {"name": "seen", "dtype": "timestamp"}, {"name": "emb", "dtype": "vector(2)"}]
T0 = pd.Timestamp("2026-01-01", tz="UTC")


def mixed_frame(n: int, seed: int, *, held_out: bool = False) -> pd.DataFrame:
    """Rows of every dtype with missing values; held-out rows also carry categories the model never
    saw ('zz', and 'maybe' for the bool) and whole missing vectors."""
    rng = np.random.default_rng(seed)
    amount = rng.normal(50, 10, n)
    amount[rng.random(n) < 0.08] = np.nan
    visits = pd.array(rng.integers(0, 20, n), dtype="Int64")
    visits[rng.random(n) < 0.05] = pd.NA
    tiers = ["gold", "silver", "it's \"quoted\""] + (["zz"] if held_out else [])
    tier = pd.Series(rng.choice(tiers, n), dtype=object)
    tier[rng.random(n) < 0.07] = None
    vip = pd.array(rng.integers(0, 2, n).astype(bool), dtype="boolean")
    vip[rng.random(n) < 0.06] = pd.NA
    seen = T0 + pd.to_timedelta(rng.integers(0, 86400 * 60, n), unit="s")
    seen = pd.Series(seen).astype("datetime64[us, UTC]")
    seen[rng.random(n) < 0.05] = pd.NaT
    emb: list[Any] = [rng.normal(size=2) for _ in range(n)]
    if held_out:
        for i in np.flatnonzero(rng.random(n) < 0.05):
            emb[i] = None
    return pd.DataFrame({"amount": amount, "visits": visits, "tier": tier, "vip": vip, "seen": seen, "emb": emb})


def mixed_labels(frame: pd.DataFrame, kind: str, seed: int = 0) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(seed)
    amount = frame["amount"].fillna(50).to_numpy(dtype=float)
    visits = frame["visits"].astype("Float64").fillna(10).to_numpy(dtype=float)
    gold = (frame["tier"] == "gold").to_numpy(dtype=float)
    emb0 = np.array([e[0] if e is not None else 0.0 for e in frame["emb"]])
    score = (amount - 50) / 10 + 0.3 * (visits - 10) / 6 + gold + emb0 + rng.normal(0, 0.5, len(frame))
    if kind == "binary":
        return (score > 0.4).astype(int)
    if kind == "multiclass":
        return np.array(["low", "mid", "high"], dtype=object)[np.digitize(score, [-0.5, 0.8])]
    if kind == "positive":
        return np.exp(score / 3)
    return score * 3.5 + 7


def json_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The frame's rows as JSON objects of raw values (what ml.predict receives)."""
    out = []
    for record in frame.to_dict(orient="records"):
        row: dict[str, Any] = {}
        for key, value in record.items():
            if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
                row[key] = None
            elif isinstance(value, (pd.Timestamp, datetime)):
                row[key] = value.isoformat()
            elif isinstance(value, np.ndarray):
                row[key] = [float(v) for v in value]
            elif isinstance(value, (np.bool_, bool)):
                row[key] = bool(value)
            elif isinstance(value, np.integer):
                row[key] = int(value)
            elif isinstance(value, np.floating):
                row[key] = float(value)
            else:
                row[key] = value
        out.append(row)
    return out


def one(conn: Conn, query: str, *args: Any) -> Any:
    row = conn.execute(query, args).fetchone()
    assert row is not None
    return row[0]


def project(conn: Conn, name: str, task: str) -> str:
    """A project of the acting tenant (created once)."""
    target = None if task == "anomaly_detection" else "label"
    return str(one(conn, "select ml.create_project(%s, %s, %s)", name, task, target))


def register(conn: Conn, project_id: str, signature: list[dict[str, str]], task: str, *, model: str | None = None,
             classes: list[Any] | None = None) -> str:
    """A finished run and its registered version (placeholder artifact bytes); returns the version id."""
    algorithm = {"classification": "logistic_regression", "regression": "ridge", "anomaly_detection": "isolation_forest"}[task]
    run = str(one(conn, "select ml.start_run(%s, null, %s, '{}', '{}', null, '{}')", project_id, algorithm))
    conn.execute("select ml.finish_run(%s, 'succeeded', '{}', 1.0, 100, 0.1)", (run,))
    artifact = f"artifact of {run}".encode()
    name = model or one(conn, "select name from ml.projects where id = %s", project_id)
    sig = {"inputs": signature, "outputs": [], "task": task, "classes": classes}
    result = one(conn, "select ml.register_model_version(%s, %s, %s, 'skops', %s, %s, null, '{}')",
                 run, name, artifact, hashlib.sha256(artifact).hexdigest(), Jsonb(sig))
    return str(result["model_version_id"])


def numeric_signature(n: int) -> list[dict[str, str]]:
    return [{"name": f"x{i}", "dtype": "float"} for i in range(n)]


def function_of(conn: Conn, version: str) -> tuple[sql.Composable, list[dict[str, Any]]]:
    """(the compiled function, its arguments layout) of a version."""
    scoring = one(conn, "select scoring from ml.model_versions where id = %s", version)
    schema, name = scoring["function"].split(".")
    return sql.Identifier(schema, name), scoring["arguments"]


def score_rows(conn: Conn, version: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The compiled function's results for raw rows, in one statement."""
    function, arguments = function_of(conn, version)
    query = sql.SQL("select {}(a.num, a.cat) from jsonb_array_elements(%s) with ordinality r (row, i) "
                    "cross join lateral ml_private.compiled_arguments(%s, r.row) a order by r.i").format(function)
    return [r[0] for r in conn.execute(query, (Jsonb(rows), Jsonb(arguments))).fetchall()]


def score_matrix(conn: Conn, version: str, X: np.ndarray[Any, Any]) -> list[dict[str, Any]]:
    """The compiled function's results for numeric rows (a version whose inputs are x0..xn)."""
    function, _ = function_of(conn, version)
    values = [[None if math.isnan(v) else float(v) for v in row] for row in np.asarray(X, dtype=float)]
    query = sql.SQL("select {}(array(select (e #>> '{{}}')::float8 from jsonb_array_elements(r.row) e), '{{}}') "
                    "from jsonb_array_elements(%s) with ordinality r (row, i) order by r.i").format(function)
    return [r[0] for r in conn.execute(query, (Jsonb(values),)).fetchall()]


def assert_parity(model: Any, X: Any, results: list[dict[str, Any]], task: str, *, tolerance: float = 1e-9) -> dict[str, float]:
    """The compiled results equal scikit-learn's predict (labels exactly), predict_proba,
    decision_function and score_samples within ``tolerance`` (relative to the value's size for
    values beyond 1); returns the largest difference seen per output."""
    worst: dict[str, float] = {}

    def close(name: str, got: Any, expected: Any) -> None:
        got_a = np.asarray(got, dtype=float)
        exp_a = np.asarray(expected, dtype=float).reshape(got_a.shape)
        diff = np.abs(got_a - exp_a) / np.maximum(1.0, np.abs(exp_a))
        worst[name] = float(diff.max()) if diff.size else 0.0
        bad = np.flatnonzero(diff.reshape(len(diff), -1).max(axis=1) > tolerance) if diff.ndim else []
        assert not len(bad), f"{name}: {len(bad)} rows differ, e.g. row {bad[0]}: {got_a[bad[0]]} vs {exp_a[bad[0]]}"

    predicted = model.predict(X)
    if task == "classification":
        labels = [r["prediction"] for r in results]
        expected = [v.item() if hasattr(v, "item") else v for v in predicted]
        wrong = [i for i, (a, b) in enumerate(zip(labels, expected, strict=True)) if a != b]
        assert not wrong, f"labels differ in {len(wrong)} rows, e.g. row {wrong[0]}: {labels[wrong[0]]} vs {expected[wrong[0]]}"
        if "probabilities" in results[0]:
            close("predict_proba", [r["probabilities"] for r in results], model.predict_proba(X))
        if "decision_function" in results[0]:
            close("decision_function", [r["decision_function"] for r in results], model.decision_function(X))
    elif task == "regression":
        close("predict", [r["prediction"] for r in results], predicted)
    else:
        close("score_samples", [r["score_samples"] for r in results], model.score_samples(X))
        close("decision_function", [r["decision_function"] for r in results], model.decision_function(X))
        assert [r["prediction"] for r in results] == [int(v) for v in predicted]
    return worst


def tree_boundaries(description: dict[str, Any]) -> dict[int, list[float]]:
    """Per numeric input: every folded threshold of the description's trees."""
    out: dict[int, set[float]] = {}
    for tree in description["estimator"].get("trees", []):
        for op, index, value in zip(tree["op"], tree["input"], tree["value"], strict=True):
            if op in ("le", "gt"):
                out.setdefault(index, set()).add(float(value))
    return {k: sorted(v) for k, v in out.items()}


def around(values: list[float], limit: int, seed: int) -> list[float]:
    """Values on, just below and just above each of (a sample of) ``values``, in float64 and float32 steps."""
    rng = np.random.default_rng(seed)
    picked = rng.choice(values, size=min(limit, len(values)), replace=False) if values else []
    out: list[float] = []
    for v in picked:
        v = float(v)
        f32 = float(np.float32(v))
        out += [v, float(np.nextafter(v, np.inf)), float(np.nextafter(v, -np.inf)), f32,
                float(np.nextafter(np.float32(v), np.float32(np.inf))), float(np.nextafter(np.float32(v), np.float32(-np.inf)))]
    # scikit-learn refuses what float32 cannot hold.
    return [v for v in out if math.isfinite(v) and abs(v) <= float(np.finfo(np.float32).max)]


def dumps(value: Any) -> str:
    return json.dumps(value)
