"""Reference profiles: a training set is profiled when it is built and a model version when it is
registered (ml.reference_profiles); every figure equals numpy's on the same values (quantile edges
with ties dropped, counts on those edges by the feature statistics' binning rule, one bin per value
for discrete columns, frequencies, summaries); a compiled version's outputs are profiled on its
training set's rows; ml.reference_profile returns them.

Also the helpers the drift report tests share: a feature group, a training set built from a
DataFrame, a model fitted, registered on it, compiled and deployed."""

from __future__ import annotations

import hashlib
import math
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
from psycopg.types.json import Jsonb
from sklearn.linear_model import LogisticRegression

from pgmlops import scoring
from pgmlops.db import tenant_context
from pgmlops.training._algorithms import build_pipeline

from .compile_helpers import one
from .conftest import act_for, make_tenant
from .training_data import T0, build, member, refused, spine_table

Conn = psycopg.Connection[Any]

SCHEMA = {"amount": {"dtype": "float"}, "visits": {"dtype": "int"}, "rating": {"dtype": "int"},
          "tier": {"dtype": "text"}, "vip": {"dtype": "bool"}, "seen": {"dtype": "timestamp"}}
SIGNATURE = [{"name": "amount", "dtype": "float"}, {"name": "visits", "dtype": "int"}, {"name": "rating", "dtype": "int"},
             {"name": "tier", "dtype": "text"}, {"name": "vip", "dtype": "bool"}, {"name": "seen", "dtype": "timestamp"}]


def frame(n: int, seed: int, *, shift: float = 0.0, tiers: tuple[float, float, float] = (0.5, 0.3, 0.2),
          vip: float = 0.3) -> pd.DataFrame:
    """Rows of every profiled kind: a continuous float with missing values, an int of 30 values
    (tied quantile edges), a discrete int of 5 values, a category, a bool and a timestamp; the
    label churned (0/1). ``shift`` moves the numbers by that many standard deviations."""
    rng = np.random.default_rng(seed)
    amount = rng.normal(50 + 10 * shift, 10, n)
    amount[rng.random(n) < 0.05] = np.nan
    visits = np.clip(rng.poisson(12 + 4 * shift, n), 0, 29)
    rating = np.clip(rng.integers(1, 6, n) + (rng.random(n) < shift / 2).astype(int), 1, 5)
    tier = rng.choice(["gold", "silver", "bronze"], n, p=list(tiers))
    seen = T0 + pd.to_timedelta(rng.integers(0, 86400 * 30, n), unit="s")
    churned = ((np.nan_to_num(amount, nan=50) - 50) / 10 + (tier == "gold") + rng.normal(0, 0.5, n) > 0.5).astype(int)
    return pd.DataFrame({"customer_id": [f"c{seed}_{i}" for i in range(n)], "amount": amount, "visits": visits,
                         "rating": rating, "tier": tier, "vip": rng.random(n) < vip,
                         "seen": pd.Series(seen).astype("datetime64[us, UTC]"), "churned": churned})


def json_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def features_of(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """The model's raw inputs of each row, as ml.predict logs them."""
    return [{c["name"]: json_value(r[c["name"]]) for c in SIGNATURE} for r in rows.to_dict(orient="records")]


class Reference:
    """A tenant with a feature group, a training set built from a frame, and (model()) a logistic
    regression fitted on it, registered, compiled and deployed in project ``name``."""

    def __init__(self, conn: Conn, name: str, data: pd.DataFrame) -> None:
        self.conn = conn
        self.name = name
        self.data = data
        self.tenant = make_tenant(conn)
        act_for(conn, self.tenant)
        self.owner = member(conn, self.tenant, "owner")
        conn.execute("select ml.create_feature_group(%s, 'customer', %s, join_key => 'customer_id')", (f"{name}_g", Jsonb(SCHEMA)))
        values = [{"customer_id": r["customer_id"], "event_time": T0.isoformat(), **{k: json_value(r[k]) for k in SCHEMA}}
                  for r in data.to_dict(orient="records")]
        for start in range(0, len(values), 20000):
            conn.execute("select ml.ingest(%s, %s)", (f"{name}_g", Jsonb(values[start:start + 20000])))
        spine = spine_table(conn, pd.DataFrame({"customer_id": data["customer_id"], "event_time": T0 + timedelta(days=1),
                                                "churned": data["churned"]}),
                            {"customer_id": "text", "event_time": "timestamptz", "churned": "int"})
        self.dataset = build(conn, f"{name}_set", spine, [f"{name}_g:{k}" for k in SCHEMA], "churned")
        self.version = ""
        self.pipeline: Any = None

    def model(self, *, compile: bool = True, deploy: bool = True) -> str:
        project_id = one(self.conn, "select ml.create_project(%s, 'classification', 'churned')", self.name)
        run = str(one(self.conn, "select ml.start_run(%s, null, 'logistic_regression', '{}', '{}', %s, '{}')",
                      project_id, self.dataset))
        self.conn.execute("select ml.finish_run(%s, 'succeeded', '{}', 1.0, 100, 0.1)", (run,))
        artifact = f"artifact of {run}".encode()
        signature = {"inputs": SIGNATURE, "outputs": [], "task": "classification", "classes": [0, 1]}
        result = one(self.conn, "select ml.register_model_version(%s, %s, %s, 'skops', %s, %s, null, '{}')",
                     run, self.name, artifact, hashlib.sha256(artifact).hexdigest(), Jsonb(signature))
        self.version = str(result["model_version_id"])
        if compile:
            self.pipeline = build_pipeline(SIGNATURE, LogisticRegression(max_iter=500))
            self.pipeline.fit(self.data[[c["name"] for c in SIGNATURE]], self.data["churned"])
            scoring.install(self.conn, self.version, scoring.describe(self.pipeline, task="classification"))
        if deploy:
            with tenant_context(self.conn, self.tenant, user=self.owner):
                self.conn.execute("select ml.approve(%s, 1, 'approved')", (self.name,))
            arms = [{"arm": "a", "model": self.name, "version": 1}]
            self.conn.execute("select ml.deploy(%s, 'single', %s)", (self.name, Jsonb(arms)))
        return self.version

    def log(self, rows: pd.DataFrame, at: Any) -> list[str]:
        """Logs predictions of ``rows`` at time ``at`` (one statement) as ml.predict logs them: the
        raw features, the compiled model's prediction and score; returns their ids in order."""
        inputs = rows[[c["name"] for c in SIGNATURE]]
        proba = self.pipeline.predict_proba(inputs)[:, 1]
        logged = [{"features": f, "prediction": int(p >= 0.5), "score": float(p)}
                  for f, p in zip(features_of(rows), proba, strict=True)]
        cur = self.conn.execute(
            "insert into ml.predictions (tenant_id, project_id, model_version_id, arm, features, prediction, score, created_at) "
            "select %s, m.project_id, v.id, 'a', e.value -> 'features', e.value -> 'prediction', (e.value ->> 'score')::float8, %s "
            "from jsonb_array_elements(%s) with ordinality e, ml.model_versions v join ml.models m on m.id = v.model_id "
            "where v.id = %s order by e.ordinality returning id",
            (self.tenant, at, Jsonb(logged), self.version))
        return [str(r[0]) for r in cur.fetchall()]


def profiles(conn: Conn, where: str, owner: str) -> dict[tuple[str, str], dict[str, Any]]:
    rows = conn.execute(f"select role, feature, ml_private.profile_document(r) from ml.reference_profiles r where {where} = %s",
                        (owner,)).fetchall()
    return {(r[0], r[1]): r[2] for r in rows}


def numpy_numeric(values: np.ndarray[Any, Any]) -> dict[str, Any]:
    """The numeric profile numpy gives: quantile edges (ties dropped) or one bin per value
    (midpoints) for at most 20 values, counts with under- and overflow."""
    x = values[~np.isnan(values)]
    distinct = np.unique(x)
    if len(distinct) <= 20:
        edges = np.array([distinct[0], distinct[0]]) if len(distinct) == 1 else np.concatenate(
            [[distinct[0]], (distinct[:-1] + distinct[1:]) / 2, [distinct[-1]]])
    else:
        edges = np.unique(np.quantile(x, np.linspace(0, 1, 21)))
    counts, _ = np.histogram(x, edges)
    return {"edges": edges, "counts": [0, *counts.tolist(), 0], "distinct": len(distinct), "mean": x.mean(),
            "std": x.std(ddof=1), "min": x.min(), "max": x.max(),
            "quantiles": dict(zip(["p01", "p05", "p25", "p50", "p75", "p95", "p99"],
                                  np.quantile(x, [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99]), strict=True))}


def assert_numeric(profile: dict[str, Any], values: np.ndarray[Any, Any], nulls: int) -> None:
    expected = numpy_numeric(values)
    assert profile["kind"] == ("binary" if expected["distinct"] == 2 else "numeric")
    assert profile["nulls"] == nulls and profile["row_count"] == len(values)
    assert profile["distinct_count"] == expected["distinct"]
    assert np.allclose(profile["edges"], expected["edges"], rtol=1e-12, atol=0)
    assert profile["counts"] == expected["counts"]
    sums, _ = np.histogram(values[~np.isnan(values)], expected["edges"], weights=values[~np.isnan(values)])
    assert np.allclose(profile["summary"]["bin_sums"], [0, *sums, 0], rtol=1e-12, atol=0)
    summary = profile["summary"]
    for key in ("mean", "std", "min", "max"):
        assert math.isclose(summary[key], expected[key], rel_tol=1e-9), key
    for key, value in expected["quantiles"].items():
        assert math.isclose(summary["quantiles"][key], value, rel_tol=1e-12), key


@pytest.fixture(scope="module")
def reference(db_url: str) -> Reference:
    with psycopg.connect(db_url, autocommit=True) as conn:
        ref = Reference(conn, "refprof", frame(600, 1))
        ref.model()
        ref.conn = None  # type: ignore[assignment]
        return ref


def test_a_training_set_is_profiled_when_built_and_every_figure_equals_numpy_s(conn: Conn, reference: Reference) -> None:
    got = profiles(conn, "dataset_id", reference.dataset)
    data = reference.data
    assert set(got) == {("input", k) for k in SCHEMA} | {("label", "churned")}
    assert_numeric(got[("input", "amount")], data["amount"].to_numpy(float), int(data["amount"].isna().sum()))
    # 30 values: quantile edges that tie, dropped; counted on the remaining edges.
    assert_numeric(got[("input", "visits")], data["visits"].to_numpy(float), 0)
    assert len(got[("input", "visits")]["edges"]) < 21 and got[("input", "visits")]["frequencies"] is None
    # 5 values: one bin per value, and their frequencies keyed by the number's text.
    rating = got[("input", "rating")]
    assert_numeric(rating, data["rating"].to_numpy(float), 0)
    assert rating["frequencies"] == {str(k): int(v) for k, v in data["rating"].value_counts().items()}
    # Timestamps as epoch seconds.
    seen = np.array([t.timestamp() for t in data["seen"]])
    assert_numeric(got[("input", "seen")], seen, 0)
    tier = got[("input", "tier")]
    assert (tier["kind"], tier["frequencies"], tier["distinct_count"], tier["edges"]) == (
        "categorical", {k: int(v) for k, v in data["tier"].value_counts().items()}, 3, None)
    vip = got[("input", "vip")]
    assert (vip["kind"], vip["frequencies"]) == ("binary", {"true": int(data["vip"].sum()), "false": int((~data["vip"]).sum())})
    label = got[("label", "churned")]
    assert (label["kind"], label["frequencies"]) == ("binary", {str(k): int(v) for k, v in data["churned"].value_counts().items()})


def test_a_registered_version_carries_its_training_set_s_profile_and_its_compiled_outputs(conn: Conn, reference: Reference) -> None:
    act_for(conn, reference.tenant)
    # Registered before its compilation: the training set's rows only; the outputs come with the
    # first profiling that finds it compiled (the drift report does it).
    conn.execute("select ml_private.profile_model_version(%s)", (reference.version,))
    got = profiles(conn, "model_version_id", reference.version)
    base = profiles(conn, "dataset_id", reference.dataset)
    assert {k: v for k, v in got.items() if k[0] in ("input", "label")} == base
    inputs = reference.data[[c["name"] for c in SIGNATURE]]
    proba = reference.pipeline.predict_proba(inputs)[:, 1]
    assert_numeric(got[("score", "score")], proba, 0)
    predicted = reference.pipeline.predict(inputs)
    assert got[("prediction", "prediction")]["frequencies"] == {str(float(k)).removesuffix(".0"): int(v)
                                                                for k, v in pd.Series(predicted).value_counts().items()}


def test_reference_profile_returns_the_version_s_profile_to_members(conn: Conn, reference: Reference) -> None:
    viewer = member(conn, reference.tenant, "viewer")
    with tenant_context(conn, reference.tenant, user=viewer):
        doc = one(conn, "select ml.reference_profile('refprof', 1)")
    assert (doc["model"], doc["version"], doc["model_version_id"], doc["dataset_id"]) == (
        "refprof", 1, reference.version, reference.dataset)
    assert [(f["role"], f["feature"]) for f in doc["features"]][:3] == [("input", "amount"), ("input", "rating"), ("input", "seen")]
    assert {f["role"] for f in doc["features"]} == {"input", "label", "prediction", "score"}
    act_for(conn, reference.tenant)
    with refused("P0002"):
        conn.execute("select ml.reference_profile('nope')")
    other = make_tenant(conn)
    act_for(conn, other)
    with refused("P0002"):
        conn.execute("select ml.reference_profile('refprof', 1)")


def test_a_version_without_a_training_set_has_no_profile(conn: Conn) -> None:
    tenant = make_tenant(conn)
    act_for(conn, tenant)
    project_id = one(conn, "select ml.create_project('bare', 'regression', 'y')")
    run = str(one(conn, "select ml.start_run(%s, null, 'ridge', '{}', '{}', null, '{}')", project_id))
    conn.execute("select ml.finish_run(%s, 'succeeded', '{}', 1.0, 100, 0.1)", (run,))
    artifact = b"bytes"
    result = one(conn, "select ml.register_model_version(%s, 'bare', %s, 'skops', %s, %s, null, '{}')", run, artifact,
                 hashlib.sha256(artifact).hexdigest(), Jsonb({"inputs": [{"name": "x", "dtype": "float"}], "outputs": []}))
    assert one(conn, "select count(*) from ml.reference_profiles where model_version_id = %s", result["model_version_id"]) == 0
    assert one(conn, "select ml.reference_profile('bare')")["features"] == []


def test_values_whose_squares_overflow_are_profiled_in_numeric(conn: Conn) -> None:
    """A training set holding 1e300 (its square overflows float8) is still profiled: the moments
    are summed in numeric then, the rest is unchanged."""
    profile = one(conn, "select ml_private.profile_relation('(values (1e300::float8), (-1e300), (3), (5)) t (x)', %s) -> 0",
                  Jsonb([{"feature": "x", "dtype": "float", "num": "t.x"}]))
    assert (profile["kind"], profile["row_count"], profile["distinct_count"]) == ("numeric", 4, 4)
    assert float(profile["summary"]["mean"]) == 2 and float(profile["summary"]["max"]) == 1e300
    assert float(profile["summary"]["std"]) == pytest.approx(1e300 * math.sqrt(2 / 3), rel=1e-12)
    assert profile["counts"] == [0, 1, 1, 1, 1, 0]
