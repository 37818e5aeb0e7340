"""Realized and estimated performance of drift reports (sql/monitoring/performance.sql):
ml_private.report_performance against scikit-learn (realized metrics per bucket, on randomized
data with ties, one-class and empty buckets) and NannyML 0.13.1 (CBPE estimates and the
reference band, from tests/fixtures/cbpe_nannyml.json), alert bounds, the summary section and
the errors.

On the real server. Predictions, labels and report rows are written as the owner: the rows
ml.predict, ml.record_feedback and ml.drift_report write.
"""

from __future__ import annotations

import hashlib
import json
import math
import pathlib
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg.types.json import Jsonb
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    precision_score,
    recall_score,
    roc_auc_score,
    root_mean_squared_error,
)

from pgmlops import scoring
from pgmlops.training._algorithms import build_pipeline
from pgmlops.training._training import split

from .compile_helpers import project, register
from .conftest import Server, act_for, make_tenant
from .test_reference_profiles import SCHEMA, Reference, frame, json_value
from .test_reference_profiles import SIGNATURE as INPUTS
from .training_data import build, spine_table

Conn = psycopg.Connection[Any]
SIGNATURE = [{"name": "x0", "dtype": "float"}]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
FIXTURE = pathlib.Path(__file__).with_name("fixtures") / "cbpe_nannyml.json"


def one(conn: Conn, query: str, *args: Any) -> Any:
    row = conn.execute(query, args).fetchone()
    assert row is not None
    return row[0]


class World:
    """A tenant with a project and a registered version per kind of model."""

    def __init__(self, conn: Conn) -> None:
        self.tenant = make_tenant(conn)
        act_for(conn, self.tenant)
        self.projects: dict[str, str] = {}
        self.versions: dict[str, str] = {}
        for kind, task, classes in (("binary", "classification", ["no", "yes"]), ("numeric", "classification", [0, 1]),
                                    ("multiclass", "classification", ["a", "b", "c"]), ("regression", "regression", None),
                                    ("anomaly", "anomaly_detection", None)):
            self.projects[kind] = project(conn, f"{kind}-{uuid.uuid4().hex[:6]}", task)
            self.versions[kind] = register(conn, self.projects[kind], SIGNATURE, task, classes=classes)
        act_for(conn, None)

    def log(self, conn: Conn, kind: str, rows: Sequence[tuple[datetime, Any, float | None, Any, Any]], *,
            version: str | None = None, shadow_of: str | None = None, error: str | None = None) -> list[str]:
        """Logs predictions (at, prediction, score, probabilities, label or None) and their labels."""
        ids = [str(uuid.uuid4()) for _ in rows]
        conn.execute(
            "insert into ml.predictions (id, tenant_id, project_id, arm, model_version_id, shadow_of, prediction, score, "
            "probabilities, error, created_at) "
            "select u.id, %s, %s, 'a', %s, %s, u.prediction, u.score, u.probabilities, %s, u.at "
            "from unnest(%s::uuid[], %s::jsonb[], %s::float8[], %s::jsonb[], %s::timestamptz[]) "
            "u (id, prediction, score, probabilities, at)",
            (self.tenant, self.projects[kind], version or self.versions[kind], shadow_of, error, ids,
             [Jsonb(r[1]) for r in rows], [r[2] for r in rows], [None if r[3] is None else Jsonb(r[3]) for r in rows],
             [r[0] for r in rows]))
        labelled = [(i, r) for i, r in zip(ids, rows, strict=True) if r[4] is not None]
        if labelled and shadow_of is None:
            self.label(conn, kind, [i for i, _ in labelled], [r[0] for _, r in labelled], [r[4] for _, r in labelled])
        return ids

    def label(self, conn: Conn, kind: str, ids: list[str], ats: list[datetime], labels: list[Any],
              source: str | None = None, updated_at: datetime | None = None) -> None:
        conn.execute(
            "insert into ml.feedback (tenant_id, project_id, prediction_id, predicted_at, label, source, updated_at) "
            "select %s, %s, u.id, u.at, u.label, %s, coalesce(%s, now()) "
            "from unnest(%s::uuid[], %s::timestamptz[], %s::jsonb[]) u (id, at, label)",
            (self.tenant, self.projects[kind], source, updated_at, ids, ats, [Jsonb(v) for v in labels]))

    def report(self, conn: Conn, kind: str, start: datetime, end: datetime, options: dict[str, Any] | None = None,
               source: str = "ml.predictions", version: bool = True) -> str:
        """A drift report row, as ml.drift_report writes it before its performance section."""
        return str(one(conn, "insert into ml.drift_reports (tenant_id, project_id, model_version_id, window_start, window_end, "
                             "mode, source, options) values (%s, %s, %s, %s, %s, 'exact', %s, %s) returning id",
                       self.tenant, self.projects[kind], self.versions[kind] if version else None, start, end, source,
                       Jsonb(options or {})))


@pytest.fixture(scope="module")
def world(db_url: str) -> World:
    with psycopg.connect(db_url, autocommit=True) as conn:
        return World(conn)


def perform(conn: Conn, report: str) -> dict[str, Any]:
    result: dict[str, Any] = one(conn, "select ml_private.report_performance(%s)", report)
    return result


def results(conn: Conn, report: str, estimated: bool = False) -> dict[tuple[datetime, str], tuple[Any, ...]]:
    """{(bucket_start, metric): (value, sample_count, lower, upper, alert, bucket_end)}."""
    rows = conn.execute("select bucket_start, metric, value, sample_count, lower_bound, upper_bound, alert, bucket_end "
                        "from ml.performance_results where report_id = %s and estimated = %s", (report, estimated)).fetchall()
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}


def close(got: float | None, want: float | None, tol: float = 1e-12) -> bool:
    if want is None or (isinstance(want, float) and math.isnan(want)):
        return got is None
    return got is not None and abs(got - want) <= tol


def buckets(start: datetime, size: timedelta, n: int) -> list[datetime]:
    return [start + i * size for i in range(n)]


# -- realized performance against scikit-learn ----------------------------------------------------


def binary_rows(rng: np.random.Generator, start: datetime, size: timedelta, n: int) -> list[tuple[datetime, Any, float, Any, Any]]:
    """Bucket 3 empty, bucket 5 labelled with one class only, bucket 7 without labels; scores on a
    grid of 0.1 (ties); a quarter of the predictions unlabelled."""
    rows: list[tuple[datetime, Any, float, Any, Any]] = []
    for b, at in enumerate(buckets(start, size, n)):
        if b == 3:
            continue
        for _ in range(int(rng.integers(20, 60))):
            score = float(np.round(rng.random(), 1))
            prediction = "yes" if score > 0.5 or rng.random() < 0.1 else "no"
            label: Any = "yes" if rng.random() < score else "no"
            if b == 5:
                label = "no"
            if b == 7 or rng.random() < 0.25:
                label = None
            when = at + timedelta(seconds=float(rng.random()) * size.total_seconds())
            rows.append((when, prediction, score, {"no": 1 - score, "yes": score}, label))
    return rows


def expected_binary(rows: Sequence[tuple[datetime, Any, float, Any, Any]], start: datetime, size: timedelta, n: int,
                    positive: Any) -> dict[tuple[datetime, str], tuple[float | None, int]]:
    want: dict[tuple[datetime, str], tuple[float | None, int]] = {}
    for at in buckets(start, size, n):
        sub = [r for r in rows if at <= r[0] < at + size and r[4] is not None]
        y = [r[4] for r in sub]
        p = [r[1] for r in sub]
        s = [r[2] for r in sub]
        if not sub:
            for metric in ("accuracy", "precision", "recall", "f1", "roc_auc"):
                want[(at, metric)] = (None, 0)
            continue
        want[(at, "accuracy")] = (float(accuracy_score(y, p)), len(sub))
        want[(at, "precision")] = (float(precision_score(y, p, pos_label=positive, zero_division=0)), len(sub))
        want[(at, "recall")] = (float(recall_score(y, p, pos_label=positive, zero_division=0)), len(sub))
        want[(at, "f1")] = (float(f1_score(y, p, pos_label=positive, zero_division=0)), len(sub))
        auc = float(roc_auc_score([v == positive for v in y], s)) if len(set(y)) == 2 else None
        want[(at, "roc_auc")] = (auc, len(sub))
    return want


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_binary_metrics_per_bucket_equal_scikit_learn(conn: Conn, world: World, seed: int) -> None:
    rng = np.random.default_rng(seed)
    start, size = T0 + timedelta(days=seed), timedelta(minutes=6)
    rows = binary_rows(rng, start, size, 10)
    world.log(conn, "binary", rows)
    report = world.report(conn, "binary", start, start + timedelta(hours=1), {"bucket": "6 minutes"})
    perform(conn, report)
    got = results(conn, report)
    want = expected_binary(rows, start, size, 10, "yes")
    assert set(got) == set(want)
    for key, (value, count) in want.items():
        assert close(got[key][0], value), (key, got[key], value)
        assert got[key][1] == count
        assert got[key][5] == key[0] + size
    # The one-class bucket has no ROC AUC but its other metrics; the empty and unlabelled ones nothing.
    assert got[(start + 5 * size, "roc_auc")][0] is None and got[(start + 5 * size, "accuracy")][0] is not None
    assert got[(start + 3 * size, "accuracy")][:2] == (None, 0)
    assert got[(start + 7 * size, "f1")][:2] == (None, 0)


def test_numeric_classes_compare_as_json_and_the_second_class_is_positive(conn: Conn, world: World) -> None:
    rng = np.random.default_rng(7)
    start = T0 + timedelta(days=20)
    rows = []
    for i in range(300):
        score = float(np.round(rng.random(), 2))
        label = 1.0 if rng.random() < score else 0  # 1.0 is the class 1
        rows.append((start + timedelta(seconds=i * 10), int(score > 0.4), score, None, label))
    world.log(conn, "numeric", rows)
    report = world.report(conn, "numeric", start, start + timedelta(minutes=50), {"buckets": 1})
    perform(conn, report)
    got = results(conn, report)
    y = [int(r[4]) for r in rows]
    p = [r[1] for r in rows]
    assert close(got[(start, "precision")][0], float(precision_score(y, p)))
    assert close(got[(start, "recall")][0], float(recall_score(y, p)))
    assert close(got[(start, "roc_auc")][0], float(roc_auc_score(y, [r[2] for r in rows])))


def test_multiclass_metrics_are_macro_averages_and_one_vs_rest_auc(conn: Conn, world: World) -> None:
    rng = np.random.default_rng(11)
    start, size = T0 + timedelta(days=30), timedelta(hours=1)
    classes = ["a", "b", "c"]
    rows: list[tuple[datetime, Any, float, Any, Any]] = []
    for b in range(4):
        for i in range(int(rng.integers(40, 90))):
            probs = np.round(rng.dirichlet([1, 1, 1]), 2)
            probs[2] = 1 - probs[0] - probs[1]
            prediction = classes[int(np.argmax(probs))] if rng.random() < 0.8 else str(rng.choice(classes))
            label = str(rng.choice(classes, p=np.clip(probs, 0, 1) / np.clip(probs, 0, 1).sum()))
            if b == 2 and label == "c":
                label = "b"  # no "c" among this bucket's labels: no one-vs-rest ROC AUC
            rows.append((start + b * size + timedelta(seconds=i * 30), prediction, float(probs.max()),
                         dict(zip(classes, map(float, probs), strict=True)), label))
    world.log(conn, "multiclass", rows)
    report = world.report(conn, "multiclass", start, start + 4 * size, {"bucket": "1 hour"})
    perform(conn, report)
    got = results(conn, report)
    for at in buckets(start, size, 4):
        sub = [r for r in rows if at <= r[0] < at + size]
        y, p = [r[4] for r in sub], [r[1] for r in sub]
        assert close(got[(at, "accuracy")][0], float(accuracy_score(y, p)))
        for metric, fn in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score)):
            assert close(got[(at, metric)][0], float(fn(y, p, average="macro", zero_division=0))), (at, metric)
        proba = np.array([[r[3][c] for c in classes] for r in sub])
        auc = float(roc_auc_score(y, proba, multi_class="ovr", average="macro")) if len(set(y)) == 3 else None
        assert close(got[(at, "roc_auc")][0], auc), at
    assert got[(start + 2 * size, "roc_auc")][0] is None


def test_regression_mae_and_rmse_equal_scikit_learn(conn: Conn, world: World) -> None:
    rng = np.random.default_rng(5)
    start, size = T0 + timedelta(days=40), timedelta(minutes=30)
    rows: list[tuple[datetime, Any, float | None, Any, Any]] = []
    for b in (0, 1, 3):
        for i in range(int(rng.integers(30, 80))):
            y = float(rng.normal(100, 20))
            rows.append((start + b * size + timedelta(seconds=i * 5), y + float(rng.normal(0, 5)), None, None,
                         y if rng.random() < 0.8 else None))
    world.log(conn, "regression", rows)
    report = world.report(conn, "regression", start, start + 4 * size, {"bucket": "30 minutes"})
    perform(conn, report)
    got = results(conn, report)
    assert {k[1] for k in got} == {"mae", "rmse"}
    for at in buckets(start, size, 4):
        sub = [r for r in rows if at <= r[0] < at + size and r[4] is not None]
        if not sub:
            assert got[(at, "mae")][:2] == (None, 0)
            continue
        y, p = [r[4] for r in sub], [r[1] for r in sub]
        assert close(got[(at, "mae")][0], float(mean_absolute_error(y, p)), 1e-11)
        assert close(got[(at, "rmse")][0], float(root_mean_squared_error(y, p)), 1e-11)
        assert got[(at, "mae")][1] == len(sub)


def test_anomaly_detection_counts_anomalies_as_the_positive_class(conn: Conn, world: World) -> None:
    rng = np.random.default_rng(9)
    start = T0 + timedelta(days=50)
    rows = []
    for i in range(200):
        score = float(np.round(rng.normal(0.5, 0.1), 2))
        label: Any = [True, False, -1, 1][int(rng.integers(0, 4))] if score < 0.6 else [True, -1][int(rng.integers(0, 2))]
        rows.append((start + timedelta(seconds=i), -1 if score > 0.55 else 1, score, None, label))
    world.log(conn, "anomaly", rows)
    report = world.report(conn, "anomaly", start, start + timedelta(minutes=10), {"buckets": 1})
    perform(conn, report)
    got = results(conn, report)
    y = [int(r[4] is True or r[4] == -1) for r in rows]
    p = [int(r[1] == -1) for r in rows]
    assert close(got[(start, "accuracy")][0], float(accuracy_score(y, p)))
    assert close(got[(start, "f1")][0], float(f1_score(y, p)))
    assert close(got[(start, "roc_auc")][0], float(roc_auc_score(y, [r[2] for r in rows])))


def test_only_live_rows_of_the_version_count_and_the_latest_label_wins(conn: Conn, world: World) -> None:
    start = T0 + timedelta(days=60)
    at = [start + timedelta(minutes=i) for i in range(4)]
    live = world.log(conn, "binary", [(at[0], "yes", 0.9, None, "yes"), (at[1], "no", 0.2, None, "no"),
                                      (at[2], "yes", 0.7, None, None), (at[3], "no", 0.4, None, "no")])
    # A shadow arm, a failed row and another version's predictions, all wrong: none of them counts.
    world.log(conn, "binary", [(at[0], "no", 0.1, None, None)], shadow_of=live[0])
    world.log(conn, "binary", [(at[1], "yes", 0.9, None, "no")], error="boom")
    act_for(conn, world.tenant)
    other = register(conn, world.projects["binary"], SIGNATURE, "classification", classes=["no", "yes"])
    act_for(conn, None)
    world.log(conn, "binary", [(at[1], "yes", 0.9, None, "no")], version=other)
    # A later label from another source replaces the first one; an older one does not.
    world.label(conn, "binary", [live[2]], [at[2]], ["no"], source="crm", updated_at=start + timedelta(days=1))
    world.label(conn, "binary", [live[2]], [at[2]], ["yes"], source="survey", updated_at=start + timedelta(days=2))
    world.label(conn, "binary", [live[3]], [at[3]], ["yes"], source="survey", updated_at=start - timedelta(days=1))
    report = world.report(conn, "binary", start, start + timedelta(minutes=10), {"buckets": 1})
    summary = perform(conn, report)
    assert results(conn, report)[(start, "accuracy")][:2] == (1.0, 4)
    assert (summary["predictions"], summary["labels"], summary["coverage"]) == (4, 4, 1.0)
    # With a source named, only its labels count.
    report = world.report(conn, "binary", start, start + timedelta(minutes=10),
                          {"buckets": 1, "performance": {"label_source": "crm"}})
    summary = perform(conn, report)
    assert results(conn, report)[(start, "accuracy")][:2] == (0.0, 1)
    assert (summary["labels"], summary["coverage"]) == (1, 0.25)


# -- CBPE and the reference band against NannyML -------------------------------------------------


def test_cbpe_estimates_and_bands_equal_nannyml(conn: Conn, world: World) -> None:
    fixture = json.loads(FIXTURE.read_text())
    assert fixture["nannyml"] == "0.13.1"
    start = datetime.fromisoformat(fixture["start"])
    hours = fixture["hours"]
    for period, offset in (("reference", 0), ("analysis", hours)):
        data = fixture[period]
        rows = [(start + timedelta(hours=offset, seconds=s), yp, p, {"0": 1 - p, "1": p},
                 yt if period == "reference" else None)
                for s, p, yp, yt in zip(data["seconds"], data["p"], data["y_pred"], data["y_true"], strict=True)]
        world.log(conn, "numeric", rows)
    analysis_start = start + timedelta(hours=hours)
    report = world.report(conn, "numeric", analysis_start, analysis_start + timedelta(hours=hours),
                          {"bucket": "1 hour", "performance": {"reference": {"start": start.isoformat(),
                                                                             "end": analysis_start.isoformat()}}})
    summary = perform(conn, report)
    got = results(conn, report, estimated=True)
    assert len(fixture["chunks"]) == hours
    alerts = 0
    for chunk in fixture["chunks"]:
        at = datetime.fromisoformat(chunk["start"]).replace(tzinfo=UTC)
        for metric in ("accuracy", "precision", "recall", "f1", "roc_auc"):
            want = chunk[metric]
            value, count, lower, upper, alert, _ = got[(at, metric)]
            assert close(value, want["value"], 1e-12), (at, metric, value, want)
            assert close(lower, want["lower"], 1e-12) and close(upper, want["upper"], 1e-12), (metric, lower, upper, want)
            assert alert == want["alert"], (at, metric)
            alerts += alert
    assert alerts > 0  # the drifting analysis period leaves the band
    # No labels yet: realized rows are empty, the estimate is all there is.
    assert summary["labels"] == 0 and summary["coverage"] == 0
    assert all(v[0] is None for v in results(conn, report).values())
    assert summary["estimated"]["recall"]["alerts"] == sum(c["recall"]["alert"] for c in fixture["chunks"])
    assert summary["estimated"]["recall"]["bounds"] == "reference"


# -- bounds, summary, errors ----------------------------------------------------------------------


def test_bounds_set_by_hand_raise_alerts_and_the_summary_counts_them(conn: Conn, world: World) -> None:
    rng = np.random.default_rng(21)
    start, size = T0 + timedelta(days=70), timedelta(minutes=6)
    rows = binary_rows(rng, start, size, 10)
    world.log(conn, "binary", rows)
    report = world.report(conn, "binary", start, start + timedelta(hours=1),
                          {"performance": {"accuracy": {"lower": 0.75}, "roc_auc": {"lower": 0.5, "upper": 0.8}}})
    summary = perform(conn, report)
    got = results(conn, report)
    want = expected_binary(rows, start, size, 10, "yes")
    accuracy = [want[(at, "accuracy")][0] for at in buckets(start, size, 10)]
    auc = [want[(at, "roc_auc")][0] for at in buckets(start, size, 10)]
    for at, value in zip(buckets(start, size, 10), accuracy, strict=True):
        assert got[(at, "accuracy")][2:5] == (0.75, None, value is not None and value < 0.75)
        assert got[(at, "precision")][2:5] == (None, None, False)
    assert summary["buckets"] == 10 and summary["bucket"] == "00:06:00"
    assert summary["realized"]["accuracy"]["alerts"] == sum(v is not None and v < 0.75 for v in accuracy) > 0
    assert summary["realized"]["roc_auc"]["alerts"] == sum(v is not None and not 0.5 <= v <= 0.8 for v in auc)
    assert summary["realized"]["accuracy"]["bounds"] == "options"
    assert summary["realized"]["precision"]["bounds"] is None
    # No reference period, and the version has no training set: no held-out band either.
    assert summary["reference"] == {"kind": "holdout", "skipped": "the version has no training set with a label"}
    defined = [v for v in accuracy if v is not None]
    assert close(summary["realized"]["accuracy"]["mean"], float(np.mean(defined)), 1e-12)
    assert close(summary["realized"]["accuracy"]["last"], defined[-1])
    labelled = sum(r[4] is not None for r in rows)
    assert (summary["predictions"], summary["labels"]) == (len(rows), labelled)
    assert close(summary["coverage"], labelled / len(rows))
    # Estimated (CBPE) rows for a binary classifier with probabilities, with the same band.
    estimated = results(conn, report, estimated=True)
    assert estimated[(start, "accuracy")][2:4] == (0.75, None)
    assert set(summary["estimated"]) == {"accuracy", "precision", "recall", "f1", "roc_auc"}


def test_a_regression_band_from_the_reference_has_no_ceiling(conn: Conn, world: World) -> None:
    rng = np.random.default_rng(31)
    start, size = T0 + timedelta(days=80), timedelta(minutes=10)
    rows: list[tuple[datetime, Any, float | None, Any, Any]] = []
    for i in range(600):
        y = float(rng.normal(10, 3))
        rows.append((start + timedelta(seconds=i * 6), y + float(rng.normal(0, 1 + i / 200)), None, None, y))
    world.log(conn, "regression", rows)
    mid = start + timedelta(minutes=30)
    report = world.report(conn, "regression", mid, start + timedelta(minutes=60),
                          {"bucket": "10 minutes", "performance": {"reference": {"start": start.isoformat(), "end": mid.isoformat()}}})
    perform(conn, report)
    got = results(conn, report)
    chunks = [float(root_mean_squared_error([r[4] for r in rows if at <= r[0] < at + size],
                                            [r[1] for r in rows if at <= r[0] < at + size])) for at in buckets(start, size, 3)]
    lower, upper = max(np.mean(chunks) - 3 * np.std(chunks), 0.0), np.mean(chunks) + 3 * np.std(chunks)
    value, _, got_lower, got_upper, alert, _ = got[(mid, "rmse")]
    assert close(got_lower, float(lower), 1e-9) and close(got_upper, float(upper), 1e-9)
    assert alert == (value > upper or value < lower)


def test_a_fast_report_reads_the_labelled_predictions_only(conn: Conn, world: World) -> None:
    rng = np.random.default_rng(23)
    start, size = T0 + timedelta(days=75), timedelta(minutes=6)
    rows = binary_rows(rng, start, size, 10)
    world.log(conn, "binary", rows)
    exact = world.report(conn, "binary", start, start + timedelta(hours=1))
    fast = world.report(conn, "binary", start, start + timedelta(hours=1))
    conn.execute("update ml.drift_reports set mode = 'fast', row_count = %s where id = %s", (len(rows), fast))
    exact_summary, fast_summary = perform(conn, exact), perform(conn, fast)
    assert results(conn, fast) == results(conn, exact)
    assert results(conn, fast, estimated=True) == {} and fast_summary["estimated"] == {}
    assert "CBPE needs every score" in fast_summary["estimated_skipped"]
    assert {k: fast_summary[k] for k in ("predictions", "labels", "coverage")} == \
        {k: exact_summary[k] for k in ("predictions", "labels", "coverage")}
    for metric, doc in exact_summary["realized"].items():
        assert close(fast_summary["realized"][metric]["mean"], doc["mean"]), metric  # a mean over buckets in any order
        assert fast_summary["realized"][metric]["last"] == doc["last"]


def test_a_report_over_another_source_has_no_performance_section(conn: Conn, world: World) -> None:
    report = world.report(conn, "binary", T0, T0 + timedelta(hours=1), source="public.transactions")
    assert "skipped" in perform(conn, report)
    assert results(conn, report) == {}


def test_a_second_run_replaces_the_rows(conn: Conn, world: World) -> None:
    start = T0 + timedelta(days=90)
    world.log(conn, "binary", [(start, "yes", 0.9, None, "yes")])
    report = world.report(conn, "binary", start, start + timedelta(hours=1), {"buckets": 2})
    perform(conn, report)
    perform(conn, report)
    assert one(conn, "select count(*) from ml.performance_results where report_id = %s", report) == 2 * 2 * 5


@pytest.mark.parametrize(("options", "message"), [
    ({"bucket": "1 month"}, r"options.bucket: must be in days, hours, minutes or seconds"),
    ({"bucket": "soon"}, r"options.bucket: must be an interval"),
    ({"bucket": 5}, r"options.bucket: must be an interval"),
    ({"bucket": "-1 hour"}, r"options.bucket: must be positive"),
    ({"bucket": "1 second"}, r"options.bucket: 1 second cuts the window into 3600 buckets; at most 1000"),
    ({"bucket": "1 hour", "buckets": 3}, r"options.bucket, options.buckets: give one of them"),
    ({"buckets": 0}, r"options.buckets: must be a whole number from 1 to 1000"),
    ({"buckets": 2.5}, r"options.buckets: must be a whole number from 1 to 1000"),
    ({"performance": []}, r"options.performance: must be a JSON object"),
    ({"performance": {"acuracy": {"lower": 0.8}}}, r"options.performance.acuracy: unknown metric"),
    ({"performance": {"accuracy": 0.8}}, r"options.performance.accuracy: must be \{\"lower\""),
    ({"performance": {"accuracy": {"lower": "high"}}}, r"options.performance.accuracy: lower and upper must be numbers"),
    ({"performance": {"accuracy": {"lower": 0.9, "upper": 0.8}}}, r"options.performance.accuracy: lower must not exceed upper"),
    ({"performance": {"accuracy": {"min": 0.9}}}, r"options.performance.accuracy: must be \{\"lower\""),
    ({"performance": {"reference": {"start": "2026-01-02", "end": "2026-01-01"}}},
     r"options.performance.reference: start must come before end"),
    ({"performance": {"reference": {"start": "yesterday-ish", "end": "2026-01-01"}}},
     r"options.performance.reference: start and end must be timestamps"),
    ({"performance": {"label_source": 3}}, r"options.performance.label_source: must be a feedback source"),
])
def test_bad_options_are_refused_and_nothing_is_written(conn: Conn, world: World, options: dict[str, Any], message: str) -> None:
    report = world.report(conn, "binary", T0, T0 + timedelta(hours=1), options)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
        perform(conn, report)
    assert results(conn, report) == {}


def test_an_unknown_report_is_not_found(conn: Conn) -> None:
    with pytest.raises(psycopg.errors.NoDataFound, match="drift report .* does not exist"):
        perform(conn, str(uuid.uuid4()))


def test_clients_cannot_call_it(conn: Conn, world: World) -> None:
    for role in ("authenticated", "service_role", "anon"):
        assert one(conn, "select has_function_privilege(%s, 'ml_private.report_performance(uuid)', 'execute')", role) is False


# -- the band from the version's held-out rows ----------------------------------------------------


def test_without_a_reference_period_the_band_comes_from_the_held_out_rows(conn: Conn) -> None:
    """A compiled version trained with a time split: its test rows (the last 30 % by event time,
    ties in row order) scored in SQL, cut into chunks of the window's labelled predictions per
    bucket, give mean -+ 3 std of each metric, as scikit-learn computes them on the same rows."""
    tenant = make_tenant(conn)
    act_for(conn, tenant)
    data = frame(600, 41)
    name = f"held_{uuid.uuid4().hex[:6]}"
    conn.execute("select ml.create_feature_group(%s, 'customer', %s, join_key => 'customer_id')", (f"{name}_g", Jsonb(SCHEMA)))
    conn.execute("select ml.ingest(%s, %s)", (f"{name}_g", Jsonb(
        [{"customer_id": r["customer_id"], "event_time": T0.isoformat(), **{k: json_value(r[k]) for k in SCHEMA}}
         for r in data.to_dict(orient="records")])))
    rng = np.random.default_rng(41)
    times = [T0 + timedelta(days=1, minutes=int(m)) for m in rng.integers(0, 200, len(data))]  # ties
    spine = spine_table(conn, data.assign(event_time=times)[["customer_id", "event_time", "churned"]],
                        {"customer_id": "text", "event_time": "timestamptz", "churned": "int"})
    dataset = build(conn, f"{name}_set", spine, [f"{name}_g:{k}" for k in SCHEMA], "churned")
    project_id = one(conn, "select ml.create_project(%s, 'classification', 'churned')", name)
    run = str(one(conn, "select ml.start_run(%s, null, 'logistic_regression', '{}', %s, %s, '{}')",
                  project_id, Jsonb({"split": "time", "test_size": 0.3}), dataset))
    conn.execute("select ml.finish_run(%s, 'succeeded', '{}', 1.0, 100, 0.1)", (run,))
    artifact = f"artifact of {run}".encode()
    version = str(one(conn, "select ml.register_model_version(%s, %s, %s, 'skops', %s, %s, null, '{}')",
                      run, name, artifact, hashlib.sha256(artifact).hexdigest(),
                      Jsonb({"inputs": INPUTS, "outputs": [], "task": "classification", "classes": [0, 1]}))["model_version_id"])
    pipeline = build_pipeline(INPUTS, LogisticRegression(max_iter=500))
    pipeline.fit(data[[c["name"] for c in INPUTS]].iloc[:300], data["churned"].iloc[:300])
    scoring.install(conn, version, scoring.describe(pipeline, task="classification"))
    act_for(conn, None)

    # The window: 4 buckets of 25 labelled predictions -> chunks of 25 rows.
    start = T0 + timedelta(days=10)
    labels = rng.integers(0, 2, 100)
    conn.execute(
        "insert into ml.predictions (id, tenant_id, project_id, arm, model_version_id, prediction, score, created_at) "
        "select gen_random_uuid(), %s, %s, 'a', %s, to_jsonb(g %% 2), 0.5, %s + g * interval '1 minute' from generate_series(0, 99) g",
        (tenant, project_id, version, start))
    conn.execute("insert into ml.feedback (tenant_id, project_id, prediction_id, predicted_at, label) "
                 "select p.tenant_id, p.project_id, p.id, p.created_at, "
                 "to_jsonb((%s::int[])[row_number() over (order by p.created_at)]) "
                 "from ml.predictions p where p.model_version_id = %s", ([int(v) for v in labels], version))
    report = str(one(conn, "insert into ml.drift_reports (tenant_id, project_id, model_version_id, window_start, window_end, mode, "
                           "source, options) values (%s, %s, %s, %s, %s, 'exact', 'ml.predictions', '{\"buckets\": 4}') returning id",
                     tenant, project_id, version, start, start + timedelta(minutes=100)))
    summary = perform(conn, report)

    table = one(conn, "select table_name from ml.datasets where id = %s", dataset)
    order = [r[0] for r in conn.execute(f"select customer_id from {table} order by row_id")]
    ordered = data.set_index("customer_id").loc[order].reset_index().assign(
        event_time=[dict(zip(data["customer_id"], times, strict=True))[c] for c in order])
    _, test = split(ordered, "classification", "churned", {"split": "time", "test_size": 0.3}, event_time="event_time")
    held = ordered.loc[test]
    assert len(held) == 180
    proba = pipeline.predict_proba(held[[c["name"] for c in INPUTS]])[:, 1]
    predicted = pipeline.predict(held[[c["name"] for c in INPUTS]])
    y = held["churned"].to_numpy()
    chunks = [slice(0, 25), slice(25, 50), slice(50, 75), slice(75, 100), slice(100, 125), slice(125, 150), slice(150, 180)]
    per_metric = {
        "accuracy": [accuracy_score(y[c], predicted[c]) for c in chunks],
        "f1": [f1_score(y[c], predicted[c], zero_division=0) for c in chunks],
        "roc_auc": [roc_auc_score(y[c], proba[c]) for c in chunks],
    }
    assert summary["reference"] == {"kind": "holdout", "rows": 180, "chunk_rows": 25, "chunks": 7}
    got = results(conn, report)
    for metric, values in per_metric.items():
        lower = max(float(np.mean(values) - 3 * np.std(values)), 0.0)
        upper = min(float(np.mean(values) + 3 * np.std(values)), 1.0)
        row = got[(start, metric)]
        assert close(row[2], lower, 1e-12) and close(row[3], upper, 1e-12), (metric, row, lower, upper)
        assert summary["realized"][metric]["bounds"] == "reference"
    # One bucket of 100 labelled predictions: the 180 held-out rows make one chunk, no band.
    report = str(one(conn, "insert into ml.drift_reports (tenant_id, project_id, model_version_id, window_start, window_end, mode, "
                           "source, options) values (%s, %s, %s, %s, %s, 'exact', 'ml.predictions', '{\"buckets\": 1}') returning id",
                     tenant, project_id, version, start, start + timedelta(minutes=100)))
    summary = perform(conn, report)
    assert summary["reference"] == {"kind": "holdout", "rows": 180, "chunk_rows": 100,
                                    "skipped": "the 180 held-out rows make 1 chunks of 100 rows; a band needs at least 3"}
    assert summary["realized"]["accuracy"]["bounds"] is None


# -- end to end: ml.drift_report -------------------------------------------------------------------


def test_drift_report_stores_the_performance_section_rows_and_alerts(conn: Conn) -> None:
    """Through ml.drift_report: the predictions ml.predict would log (a compiled, deployed version
    trained on a training set), labels for two thirds of them, hourly buckets, a band by hand."""
    ref = Reference(conn, f"perf_{uuid.uuid4().hex[:6]}", frame(400, 51))
    ref.model()
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=6)
    rng = np.random.default_rng(52)
    truth: list[tuple[datetime, int, float, int | None]] = []
    for hour in range(3):
        rows = frame(150, 52 + hour, shift=0.5 * hour)
        at = start + timedelta(hours=hour, minutes=20)
        ids = ref.log(rows, at)
        proba = ref.pipeline.predict_proba(rows[[c["name"] for c in INPUTS]])[:, 1]
        labelled = rng.random(len(ids)) < 2 / 3
        conn.execute("insert into ml.feedback (tenant_id, project_id, prediction_id, predicted_at, label) "
                     "select p.tenant_id, p.project_id, p.id, p.created_at, to_jsonb(u.label) "
                     "from unnest(%s::uuid[], %s::int[]) u (id, label) join ml.predictions p on p.id = u.id and p.created_at = %s",
                     ([i for i, keep in zip(ids, labelled, strict=True) if keep],
                      [int(v) for v, keep in zip(rows["churned"], labelled, strict=True) if keep], at))
        truth += [(at, int(p >= 0.5), float(p), int(y) if keep else None)
                  for p, y, keep in zip(proba, rows["churned"], labelled, strict=True)]
    report_id = one(conn, "select ml.drift_report(%s, %s, %s, %s)", ref.name, start, start + timedelta(hours=3),
                    Jsonb({"bucket": "1 hour", "multivariate": False, "performance": {"accuracy": {"lower": 0.99}}}))
    doc = one(conn, "select ml.drift_report_document(%s)", report_id)
    section = doc["summary"]["performance"]
    rows_by_key = {(r["metric"], r["estimated"], r["bucket_start"]): r for r in doc["performance"]}
    assert len(doc["performance"]) == 3 * 5 * 2
    for hour in range(3):
        at = start + timedelta(hours=hour)
        sub = [t for t in truth if at <= t[0] < at + timedelta(hours=1) and t[3] is not None]
        y, p, s = [t[3] for t in sub], [t[1] for t in sub], [t[2] for t in sub]
        key = at.isoformat()
        got = {m: r for (m, e, b), r in rows_by_key.items() if not e and datetime.fromisoformat(b) == at}
        assert close(got["accuracy"]["value"], float(accuracy_score(y, p)))
        assert close(got["f1"]["value"], float(f1_score(y, p)))
        assert close(got["roc_auc"]["value"], float(roc_auc_score(y, s)), 1e-9), key  # the compiled scores, not numpy's
        assert got["accuracy"]["alert"] == (accuracy_score(y, p) < 0.99)
    assert section["labels"] == sum(t[3] is not None for t in truth) and section["predictions"] == len(truth)
    assert section["realized"]["accuracy"]["alerts"] == 3
    assert set(section["estimated"]) == {"accuracy", "precision", "recall", "f1", "roc_auc"}
    # Trained with the default (stratified) split: its test rows cannot be found in SQL, no band.
    assert section["reference"] == {"kind": "holdout", "skipped":
                                    "the version was not trained with a time split: its test rows cannot be told apart in SQL"}
    assert section["realized"]["f1"]["bounds"] is None
    alerts = [a for a in doc["alerts"] if a["kind"] == "performance"]
    assert [a["feature"] for a in alerts] == ["accuracy"]


@pytest.mark.embedded
def test_the_embedded_server_measures_and_estimates_too(embedded_server: Server) -> None:
    """PostgreSQL 18 without TimescaleDB: plain partitions, the same SQL, the same numbers."""
    url = embedded_server.clone()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            w = World(conn)
            rng = np.random.default_rng(61)
            start, size = T0 + timedelta(days=5), timedelta(minutes=6)
            rows = binary_rows(rng, start, size, 10)
            w.log(conn, "binary", rows)
            report = w.report(conn, "binary", start, start + timedelta(hours=1))
            summary = perform(conn, report)
            got = results(conn, report)
            for key, (value, count) in expected_binary(rows, start, size, 10, "yes").items():
                assert close(got[key][0], value) and got[key][1] == count, key
            assert set(summary["estimated"]) == {"accuracy", "precision", "recall", "f1", "roc_auc"}
    finally:
        embedded_server.drop(url)
