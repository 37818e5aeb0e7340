"""ml.drift_report: a window of the prediction log (or a source read with the caller's rights)
against the deployed version's reference, feature by feature. Its decisions agree with
Evidently 0.7.23's DataDriftPreset on generated scenarios with and without drift, with small
(<= 1000 rows: KS, chi-square, Z) and large references (normed Wasserstein, Jensen-Shannon);
each result equals the statistic functions on the same samples; fast mode (binned counts)
reaches the same decisions as exact mode; prediction, score and label drift; the document; the
error paths write nothing."""

from __future__ import annotations

import hashlib
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
from psycopg.types.json import Jsonb
from scipy import stats

from pgmlops.db import tenant_context

from .compile_helpers import one
from .conftest import act_for, make_tenant
from .test_reference_profiles import SIGNATURE, Reference, features_of, frame
from .training_data import member, refused

Conn = psycopg.Connection[Any]

NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
WINDOWS = {"steady": (NOW - timedelta(hours=30), NOW - timedelta(hours=26)),
           "drifted": (NOW - timedelta(hours=20), NOW - timedelta(hours=16))}
NUMERICAL = ["amount", "visits", "rating", "seen"]
CATEGORICAL = ["tier", "vip"]
# Evidently's names of the tests, by ours.
EVIDENTLY_TESTS = {"ks": "K-S p_value", "chi2": "chi-square p_value", "z": "Z-test p_value",
                   "wasserstein_normed": "Wasserstein distance (normed)", "jensen_shannon": "Jensen-Shannon distance"}


class World:
    """Two projects: 'small' (a 600-row reference) and 'large' (3000 rows), each with a steady
    window (the reference's distribution) and a drifted one (numbers shifted, categories and the
    bool reweighted) logged at their times."""

    def __init__(self, conn: Conn) -> None:
        self.refs: dict[str, Reference] = {}
        self.current: dict[tuple[str, str], pd.DataFrame] = {}
        self.ids: dict[tuple[str, str], list[str]] = {}
        for name, n, m, seed in (("small", 600, 400, 1), ("large", 3000, 2000, 11)):
            ref = Reference(conn, name, frame(n, seed))
            ref.model()
            self.refs[name] = ref
            steady = frame(m, seed + 1)
            drifted = frame(m, seed + 2, shift=1.0, tiers=(0.2, 0.3, 0.5), vip=0.6)
            for window, rows in (("steady", steady), ("drifted", drifted)):
                start, end = WINDOWS[window]
                self.current[(name, window)] = rows
                self.ids[(name, window)] = ref.log(rows, start + (end - start) / 2)
        act_for(conn, None)


@pytest.fixture(scope="module")
def world(db_url: str) -> World:
    with psycopg.connect(db_url, autocommit=True) as conn:
        return World(conn)


def report(conn: Conn, world: World, name: str, window: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    act_for(conn, world.refs[name].tenant)
    start, end = WINDOWS[window]
    report_id = one(conn, "select ml.drift_report(%s, %s, %s, %s)", name, start, end, Jsonb(options or {}))
    return dict(one(conn, "select ml.drift_report_document(%s)", report_id))


def results(doc: dict[str, Any], role: str = "input") -> dict[str, dict[str, Any]]:
    return {r["feature"]: r for r in doc["results"] if r["role"] == role}


def evidently_frame(rows: pd.DataFrame) -> pd.DataFrame:
    out = rows[NUMERICAL + CATEGORICAL].copy()
    out["seen"] = np.array([t.timestamp() for t in rows["seen"]])
    return out


def evidently(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, Any]:
    """Evidently 0.7.23's DataDriftPreset on the same data: {column: (method, value, drifted)}
    and the dataset drift."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy.core, from Evidently's dependencies
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset

        definition = DataDefinition(numerical_columns=NUMERICAL, categorical_columns=CATEGORICAL)
        run = Report([DataDriftPreset()]).run(Dataset.from_pandas(evidently_frame(current), data_definition=definition),
                                              Dataset.from_pandas(evidently_frame(reference), data_definition=definition))
    out: dict[str, Any] = {}
    for metric in run.dict()["metrics"]:
        name = metric["metric_name"]
        if name.startswith("ValueDrift("):
            params = dict(p.split("=", 1) for p in name[len("ValueDrift("):-1].split(","))
            value = float(metric["value"])
            threshold = float(params["threshold"])
            method = params["method"]
            if "p_value" in method:
                drifted = value <= threshold if method.startswith("K-S") else value < threshold
            else:
                drifted = value >= threshold
            out[params["column"]] = (method, value, drifted)
        elif name.startswith("DriftedColumnsCount"):
            out["__share__"] = float(metric["value"]["share"])
    out["__dataset__"] = out["__share__"] >= 0.5
    return out


# -- agreement with Evidently -------------------------------------------------------------------


@pytest.mark.parametrize(("name", "window"), [("small", "steady"), ("small", "drifted"), ("large", "steady"), ("large", "drifted")])
def test_exact_decisions_agree_with_evidently_s_data_drift_preset(conn: Conn, world: World, name: str, window: str) -> None:
    doc = report(conn, world, name, window)
    got = results(doc)
    expected = evidently(world.refs[name].data, world.current[(name, window)])
    assert set(got) == set(NUMERICAL + CATEGORICAL)
    for feature, result in got.items():
        method, value, drifted = expected[feature]
        assert EVIDENTLY_TESTS[result["test"]] == method, feature
        assert result["drifted"] == drifted, (feature, result, expected[feature])
        if result["test"] == "ks":
            # Evidently takes scipy's exact p-value below 10,000 rows; ours is the asymptotic one.
            assert (result["p_value"] <= 0.05) == (value <= 0.05)
        else:
            assert result["p_value" if "p_value" in method else "statistic"] == pytest.approx(value, rel=1e-9, abs=1e-12), feature
    assert doc["dataset_drift"] == expected["__dataset__"]
    assert doc["drift_share"] == pytest.approx(expected["__share__"])
    assert doc["mode"] == "exact" and doc["source"] == "ml.predictions"
    assert doc["row_count"] == len(world.current[(name, window)])
    assert doc["dataset_drift"] == (window == "drifted")


def test_each_result_equals_the_statistic_on_the_same_samples(conn: Conn, world: World) -> None:
    """KS and Wasserstein as scipy computes them on the reference and current values."""
    ref = world.refs["large"].data
    for window in ("steady", "drifted"):
        cur = world.current[("large", window)]
        options = {"features": {"amount": {"test": "ks"}, "visits": {"test": "wasserstein"}}}
        got = results(report(conn, world, "large", window, options))
        a, b = ref["amount"].dropna().to_numpy(), cur["amount"].dropna().to_numpy()
        ks = stats.ks_2samp(a, b, method="asymp")
        assert got["amount"]["statistic"] == pytest.approx(ks.statistic, abs=1e-12)
        assert got["amount"]["p_value"] == pytest.approx(ks.pvalue, abs=1e-4)
        assert got["visits"]["statistic"] == pytest.approx(stats.wasserstein_distance(ref["visits"], cur["visits"]), rel=1e-9)
        seen = got["seen"]
        x = np.array([t.timestamp() for t in ref["seen"]])
        y = np.array([t.timestamp() for t in cur["seen"]])
        assert seen["statistic"] == pytest.approx(stats.wasserstein_distance(x, y) / max(np.std(x), 0.001), rel=1e-9)


def test_each_result_equals_the_statistic_functions_on_the_same_samples(conn: Conn, world: World) -> None:
    """The report's figures are those of sql/monitoring/stats.sql's functions called on the same
    samples (the numbers) or counts (the categories)."""
    ref, cur = world.refs["large"].data, world.current[("large", "drifted")]
    doc = report(conn, world, "large", "drifted", {"features": {"visits": {"test": "ks"}, "tier": {"test": "psi"},
                                                                "vip": {"test": "hellinger"}}})
    got = results(doc)
    for feature in ("amount", "seen"):
        x = ref[feature] if feature == "amount" else pd.Series([t.timestamp() for t in ref["seen"]])
        y = cur[feature] if feature == "amount" else pd.Series([t.timestamp() for t in cur["seen"]])
        expected = one(conn, "select ml_private.wasserstein_distance_normed(%s, %s)", x.dropna().tolist(), y.dropna().tolist())
        assert got[feature]["statistic"] == pytest.approx(expected, rel=1e-12)   # the samples' order differs
    ks = conn.execute("select statistic, pvalue from ml_private.ks_2samp(%s, %s)",
                      (ref["visits"].astype(float).tolist(), cur["visits"].astype(float).tolist())).fetchone()
    assert ks is not None and (got["visits"]["statistic"], got["visits"]["p_value"]) == (ks[0], ks[1])
    for feature, function in (("tier", "psi"), ("vip", "hellinger"), ("rating", "jensenshannon")):
        details = got[feature]["details"]
        keys = sorted(set(details["reference_counts"]) | set(details["current_counts"]))
        counts = [[float(d.get(k, 0)) for k in keys] for d in (details["reference_counts"], details["current_counts"])]
        assert got[feature]["statistic"] == one(conn, f"select ml_private.{function}(%s, %s)", *counts), feature


# -- fast mode ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["small", "large"])
def test_fast_mode_reaches_the_exact_mode_s_decisions(conn: Conn, world: World, name: str) -> None:
    for window in ("steady", "drifted"):
        exact = report(conn, world, name, window)
        fast = report(conn, world, name, window, {"mode": "fast"})
        assert fast["mode"] == "fast" and fast["summary"]["drift"]["approximation"]
        assert {f: (r["test"], r["drifted"]) for f, r in results(fast).items()} == \
               {f: (r["test"], r["drifted"]) for f, r in results(exact).items()}
        assert fast["dataset_drift"] == exact["dataset_drift"] and fast["row_count"] == exact["row_count"]
        for feature, r in results(fast).items():
            e = results(exact)[feature]
            if r["test"] in ("chi2", "z", "jensen_shannon"):
                # Categories and discrete numbers are counted exactly.
                assert r["statistic"] == pytest.approx(e["statistic"], rel=1e-9, abs=1e-12), feature
        for role in ("prediction", "score"):
            assert results(fast, role)[role]["drifted"] == results(exact, role)[role]["drifted"]
        for feature, r in results(fast).items():
            if r["test"] == "wasserstein_normed" and results(exact)[feature]["drifted"]:
                # With the values' sums per bin: within 1% of the exact distance for a drifted feature.
                assert r["statistic"] == pytest.approx(results(exact)[feature]["statistic"], rel=0.01), feature


# -- outputs and labels -------------------------------------------------------------------------


def test_prediction_score_and_label_drift_are_results_too(conn: Conn, world: World) -> None:
    ref = world.refs["small"]
    act_for(conn, ref.tenant)
    cur = world.current[("small", "drifted")]
    labels = [{"prediction_id": i, "label": int(v)} for i, v in zip(world.ids[("small", "drifted")], cur["churned"], strict=True)]
    with tenant_context(conn, ref.tenant, user=ref.owner):
        conn.execute("select ml.record_feedback_bulk(%s)", (Jsonb(labels),))
    doc = report(conn, world, "small", "drifted")
    score = results(doc, "score")["score"]
    proba = ref.pipeline.predict_proba(ref.data[[c["name"] for c in SIGNATURE]])[:, 1]
    now = ref.pipeline.predict_proba(cur[[c["name"] for c in SIGNATURE]])[:, 1]
    assert score["test"] == "ks" and score["statistic"] == pytest.approx(stats.ks_2samp(proba, now).statistic, abs=1e-12)
    prediction = results(doc, "prediction")["prediction"]
    assert prediction["test"] == "z" and prediction["kind"] == "binary"
    label = results(doc, "label")["churned"]
    assert label["test"] == "z" and label["row_count"] == len(cur)
    p1, p2 = ref.data["churned"].mean(), cur["churned"].mean()
    pooled = (p1 * len(ref.data) + p2 * len(cur)) / (len(ref.data) + len(cur))
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1 / len(ref.data) + 1 / len(cur)))
    assert label["p_value"] == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-9)
    assert doc["summary"]["label_drift"]["labels"] == len(cur)
    assert set(doc["summary"]["prediction_drift"]) == {"prediction", "score"}


# -- options ------------------------------------------------------------------------------------


def test_a_test_and_threshold_set_per_feature_replace_the_default(conn: Conn, world: World) -> None:
    doc = report(conn, world, "small", "steady", {"features": {"amount": {"test": "psi", "threshold": 0.0},
                                                               "tier": {"threshold": 0.999}},
                                                  "drift_share": 0.3})
    got = results(doc)
    assert (got["amount"]["test"], got["amount"]["threshold"], got["amount"]["drifted"]) == ("psi", 0.0, True)
    assert (got["tier"]["test"], got["tier"]["threshold"], got["tier"]["drifted"]) == ("chi2", 0.999, True)
    assert got["amount"]["details"]["default_test"] is False and got["visits"]["details"]["default_test"] is True
    assert doc["dataset_drift"] == (doc["drift_share"] >= 0.3)
    # Multivariate drift is a worker's `monitor` job completing the report; without that job kind
    # the report is complete and says so.
    doc = report(conn, world, "small", "steady", {"multivariate": True})
    if one(conn, "select exists (select 1 from ml.job_kinds where kind = 'monitor')"):
        assert doc["status"] == "pending" and doc["finished_at"] is None
        assert one(conn, "select payload from ml.jobs where id = %s", doc["job_id"]) == {"report_id": doc["id"]}
    else:
        assert doc["status"] == "complete" and "not installed" in doc["summary"]["multivariate"]["reason"]
    assert report(conn, world, "small", "steady", {"multivariate": False})["status"] == "complete"


def test_a_source_is_read_with_the_caller_s_rights_like_the_log(conn: Conn, world: World) -> None:
    ref = world.refs["small"]
    act_for(conn, ref.tenant)
    rows = world.current[("small", "drifted")]
    conn.execute("create temp table drift_source as select (e ->> 'amount')::float8 as amount, (e ->> 'visits')::int as visits, "
                 "(e ->> 'rating')::int as rating, e ->> 'tier' as tier, (e ->> 'vip')::boolean as vip, "
                 "(e ->> 'seen')::timestamptz as seen from jsonb_array_elements(%s) e",
                 (Jsonb(features_of(rows)),))
    from_log = results(report(conn, world, "small", "drifted"))
    from_source = report(conn, world, "small", "drifted", {"source": "drift_source"})
    assert from_source["source"] == "drift_source" and from_source["row_count"] == len(rows)
    assert set(results(from_source)) == set(from_log)
    for feature, r in results(from_source).items():
        e = from_log[feature]
        assert (r["test"], r["drifted"]) == (e["test"], e["drifted"]), feature
        assert r["statistic"] == pytest.approx(e["statistic"], rel=1e-12) and r["p_value"] == pytest.approx(e["p_value"], rel=1e-9)
    # A query, with a time column: only its rows in the window (here the first half).
    start, end = WINDOWS["drifted"]
    conn.execute("alter table drift_source add column at timestamptz")
    conn.execute("update drift_source set at = case when amount is null or amount < 60 then %s else %s end", (start, end))
    inside = one(conn, "select count(*) from drift_source where at < %s", end)
    timed = report(conn, world, "small", "drifted", {"source": "select * from drift_source", "time_column": "at"})
    assert timed["row_count"] == inside < len(rows)
    with refused("22023", r"options\.time_column: tier must be a timestamptz"):
        conn.execute("select ml.drift_report('small', %s, %s, %s)",
                     (start, end, Jsonb({"source": "drift_source", "time_column": "tier"})))
    conn.execute("drop table drift_source")
    # A table the caller may not read is refused by its own rights.
    engineer = member(conn, ref.tenant, "ml_engineer")
    with tenant_context(conn, ref.tenant, user=engineer), refused("42501"):
        conn.execute("select ml.drift_report('small', %s, %s, %s)", (*WINDOWS["steady"], Jsonb({"source": "ml_private.settings"})))


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "sqlstate", "match"), [
    ({"mode": "slow"}, "22023", r"options\.mode: must be exact or fast"),
    ({"features": {"colour": {"test": "ks"}}}, "22023", r"options\.features: unknown feature colour"),
    ({"features": {"amount": {"test": "t-test"}}}, "22023", r"options\.features\.amount\.test: unknown test"),
    ({"features": {"amount": {"test": "ks", "threshold": 1.5}}}, "22023", r"options\.features\.amount\.threshold"),
    ({"features": {"amount": {"threshold": "high"}}}, "22023", r"options\.features\.amount\.threshold: must be a number"),
    ({"features": {"tier": {"test": "ks"}}}, "22023", r"options\.features\.tier\.test: ks compares numbers"),
    ({"drift_share": 0}, "22023", r"options\.drift_share"),
    ({"colour": 1}, "22023", r"options: unknown option 'colour'"),
    ({"mode": "fast", "source": "x"}, "22023", r"options\.mode: fast reads"),
], ids=["mode", "unknown-feature", "unknown-test", "p-threshold", "threshold-type", "test-kind", "drift-share", "unknown-option",
        "fast-source"])
def test_bad_options_are_refused_naming_the_field_and_nothing_is_written(conn: Conn, world: World, options: dict[str, Any],
                                                                       sqlstate: str, match: str) -> None:
    act_for(conn, world.refs["small"].tenant)
    before = one(conn, "select count(*) from ml.drift_reports")
    with refused(sqlstate, match):
        conn.execute("select ml.drift_report('small', %s, %s, %s)", (*WINDOWS["steady"], Jsonb(options)))
    assert one(conn, "select count(*) from ml.drift_reports") == before


def test_window_order_unknown_project_and_viewers_are_refused(conn: Conn, world: World) -> None:
    ref = world.refs["small"]
    act_for(conn, ref.tenant)
    start, end = WINDOWS["steady"]
    before = one(conn, "select count(*) from ml.drift_reports")
    with refused("22023", r"window_start .* must be before window_end"):
        conn.execute("select ml.drift_report('small', %s, %s)", (end, start))
    with refused("P0002", r"project 'nope' does not exist"):
        conn.execute("select ml.drift_report('nope', %s, %s)", (start, end))
    viewer = member(conn, ref.tenant, "viewer")
    with tenant_context(conn, ref.tenant, user=viewer), refused("42501"):
        conn.execute("select ml.drift_report('small', %s, %s)", (start, end))
    assert one(conn, "select count(*) from ml.drift_reports") == before
    with refused("P0002"):
        conn.execute("select ml.drift_report_document(gen_random_uuid())")


def test_a_version_without_a_training_set_has_no_reference(conn: Conn) -> None:
    tenant = make_tenant(conn)
    act_for(conn, tenant)
    project_id = one(conn, "select ml.create_project('bare', 'regression', 'y')")
    run = str(one(conn, "select ml.start_run(%s, null, 'ridge', '{}', '{}', null, '{}')", project_id))
    conn.execute("select ml.finish_run(%s, 'succeeded', '{}', 1.0, 100, 0.1)", (run,))
    conn.execute("select ml.register_model_version(%s, 'bare', 'x', 'skops', %s, %s, null, '{}')",
                 (run, hashlib.sha256(b"x").hexdigest(), Jsonb({"inputs": [{"name": "x", "dtype": "float"}], "outputs": []})))
    with refused("55000", r"model bare version 1 has no reference profile"):
        conn.execute("select ml.drift_report('bare', %s, %s, '{\"model\": \"bare\", \"version\": 1}')", WINDOWS["steady"])
    with refused("P0002", r"project 'bare' has no active deployment"):
        conn.execute("select ml.drift_report('bare', %s, %s)", WINDOWS["steady"])
    assert one(conn, "select count(*) from ml.drift_reports where tenant_id = %s", tenant) == 0


def test_a_signed_in_engineer_reports_and_a_viewer_reads_the_document(conn: Conn, world: World) -> None:
    ref = world.refs["small"]
    engineer, viewer = member(conn, ref.tenant, "ml_engineer"), member(conn, ref.tenant, "viewer")
    with tenant_context(conn, ref.tenant, user=engineer):
        report_id = one(conn, "select ml.drift_report('small', %s, %s, '{\"mode\": \"fast\"}')", *WINDOWS["drifted"])
    with tenant_context(conn, ref.tenant, user=viewer):
        doc = one(conn, "select ml.drift_report_document(%s)", report_id)
        assert str(one(conn, "select created_by from ml.drift_reports where id = %s", report_id)) == engineer
    assert doc["mode"] == "fast" and doc["dataset_drift"] is True
    other = world.refs["large"]
    with tenant_context(conn, other.tenant, user=other.owner), refused("P0002"):
        conn.execute("select ml.drift_report_document(%s)", (report_id,))


def test_the_document_holds_the_report_its_results_and_sections(conn: Conn, world: World) -> None:
    doc = report(conn, world, "large", "drifted")
    assert {"id", "project", "model", "version", "window_start", "window_end", "mode", "source", "status", "row_count",
            "reference_count", "features_tested", "drifted_features", "drift_share", "dataset_drift", "summary", "results",
            "performance", "alerts"} <= set(doc)
    assert (doc["project"], doc["model"], doc["version"], doc["reference_count"]) == ("large", "large", 1, 3000)
    assert doc["features_tested"] == 6 and doc["drifted_features"] == sum(r["drifted"] for r in results(doc).values())
    amount = results(doc)["amount"]
    assert amount["details"]["counted_by"] == "bin" and len(amount["details"]["edges"]) == 21
    assert sum(amount["details"]["current_counts"].values()) == amount["details"]["current_values"]
    assert doc["summary"]["drift"]["drifted"] == sorted(f for f, r in results(doc).items() if r["drifted"])
    events = one(conn, "select count(*) from ml.events where event = 'report.finished' and payload ->> 'report_id' = %s", doc["id"])
    assert events == 1


def test_a_column_missing_from_rolled_up_hours_is_skipped_in_fast_mode(conn: Conn, world: World) -> None:
    """Hours rolled up before the version's outputs were profiled have no score counts: a fast
    report names the score as skipped rather than judging part of the window."""
    ref = world.refs["small"]
    report(conn, world, "small", "steady", {"mode": "fast"})   # rolls the window up
    start, end = WINDOWS["steady"]
    conn.execute("delete from ml.window_counts where tenant_id = %s and role = 'score' and bucket >= %s and bucket < %s",
                 (ref.tenant, start, end))
    doc = report(conn, world, "small", "steady", {"mode": "fast"})
    assert "score" not in results(doc, "score")
    skipped = {(s["role"], s["feature"]): s["reason"] for s in doc["summary"]["drift"]["skipped"]}
    assert "use the exact mode" in skipped[("score", "score")]
    assert results(report(conn, world, "small", "steady"), "score")["score"]["test"] == "ks"
