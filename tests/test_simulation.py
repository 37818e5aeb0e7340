"""`pgmlops simulate` (issue 13, "Drift simulation"): the fraud traffic generator's scenarios
have the properties they claim, labels arrive like chargebacks, and the driver loads a tenant
through the SQL API (and serves through ml.predict with delayed feedback) so a training set can
be built from it."""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
from psycopg.types.json import Jsonb
from scipy import stats
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from pgmlops import features, training
from pgmlops.cli import app
from pgmlops.db import tenant_context
from pgmlops.errors import InvalidInput, NotFound
from pgmlops.jobs.worker import Worker
from pgmlops.simulation import (
    BASE_RATE,
    CATEGORIES,
    COEFFICIENTS,
    generate,
    label_delays,
    label_spine,
    label_spine_sql,
    simulate,
    synthesize,
    training_features,
)
from pgmlops.simulation._fraud import CATEGORY_RISK, base_intercept, fraud_logit

from .compile_helpers import one
from .conftest import make_tenant
from .training_data import member

DAYS = 14
RATE = 250.0


@pytest.fixture(scope="module")
def runs() -> dict[str, pd.DataFrame]:
    return {name: generate(name, days=DAYS, rate_per_hour=RATE, seed=7).transactions
            for name in ("none", "covariate_shift", "prior_shift", "concept_drift", "gradual_concept_drift",
                         "seasonal_recurrence")}


def design(tx: pd.DataFrame) -> np.ndarray[Any, Any]:
    """The labelling function's own terms (so a logistic regression can recover them), plus the
    concept-drift pattern's indicator."""
    cats = pd.get_dummies(pd.Categorical(tx["merchant_category"], categories=CATEGORIES)).to_numpy(dtype=float)
    pattern = ((tx["device"] == "mobile") & tx["merchant_category"].isin(["electronics", "online_services", "gas"]))
    return np.column_stack([np.log(tx["amount"] / tx["avg_amount_30d"]), np.log1p(tx["distance_from_home"]),
                            tx["hour"] < 6, tx["device"] == "web", tx["tx_count_7d"], cats[:, 1:], pattern]).astype(float)


def fit(tx: pd.DataFrame) -> LogisticRegression:
    return LogisticRegression(C=100.0, solver="newton-cholesky", max_iter=200).fit(design(tx), tx["is_fraud"])


def same(a: pd.Series, b: pd.Series) -> bool:
    """The same distribution: a two-sample KS statistic below 0.05 (a shift scores 0.25 and more). (Not a p-value: the history
    aggregates repeat per customer, so their rows are not independent and a p-value on tens of
    thousands of rows flags differences of a customer's weekly wander.)"""
    return bool(stats.ks_2samp(a, b).statistic < 0.05)


def halves(tx: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return tx[tx["segment"] == 0], tx[tx["segment"] == 1]


# -- generator -----------------------------------------------------------------------------------


def test_a_seed_gives_the_same_traffic_and_another_seed_other_traffic() -> None:
    a = generate("concept_drift", days=3, rate_per_hour=50, seed=11)
    b = generate("concept_drift", days=3, rate_per_hour=50, seed=11)
    c = generate("concept_drift", days=3, rate_per_hour=50, seed=12)
    pd.testing.assert_frame_equal(a.transactions, b.transactions)
    pd.testing.assert_frame_equal(a.snapshots, b.snapshots)
    assert not a.transactions["amount"].head(100).equals(c.transactions["amount"].head(100))


def test_the_base_world_is_realistic(runs: dict[str, pd.DataFrame]) -> None:
    tx = runs["none"]
    assert abs(len(tx) - DAYS * 24 * RATE) < 0.02 * DAYS * 24 * RATE
    assert tx["event_time"].is_monotonic_increasing and tx["txn_id"].is_unique
    assert 0.012 < tx["is_fraud"].mean() < 0.035  # about BASE_RATE
    assert set(tx["merchant_category"]) == set(CATEGORIES) and len(CATEGORIES) == 10
    assert set(tx["device"]) == {"pos", "web", "mobile"}
    by_hour = tx.groupby("hour").size()
    assert by_hour.loc[18:20].mean() > 5 * by_hour.loc[2:4].mean()  # daily seasonality
    med = tx.groupby("merchant_category")["amount"].median()
    assert med["jewelry"] > 5 * med["online_services"]  # amounts lognormal by category
    # Frauds are what the known function says: night, web, far and unusual amounts are riskier.
    assert tx[tx["hour"] < 6]["is_fraud"].mean() > tx[tx["hour"] >= 6]["is_fraud"].mean()
    model = fit(tx)
    assert model.coef_[0][0] == pytest.approx(COEFFICIENTS["log_amount_ratio"], abs=0.25)
    assert model.coef_[0][1] == pytest.approx(COEFFICIENTS["log1p_distance"], abs=0.2)
    assert model.coef_[0][2] == pytest.approx(COEFFICIENTS["night"], abs=0.35)
    assert abs(model.coef_[0][-1]) < 0.5  # no pattern in the base world


def test_the_base_intercept_gives_the_base_rate_on_its_reference_sample() -> None:
    b0 = base_intercept()
    assert -12 < b0 < 0
    assert base_intercept() == b0  # solved once, the same every run
    assert base_intercept(0.05) > b0


def test_covariate_shift_changes_p_of_x_and_keeps_p_of_y_given_x(runs: dict[str, pd.DataFrame]) -> None:
    before, after = halves(runs["covariate_shift"])
    assert stats.ks_2samp(before["amount"], after["amount"]).pvalue < 1e-6
    assert stats.ks_2samp(before["distance_from_home"], after["distance_from_home"]).pvalue < 1e-6
    assert after["device"].eq("web").mean() > before["device"].eq("web").mean() + 0.05
    # A model of the labelling function fitted before the shift stays calibrated after it.
    model = fit(before)
    predicted = model.predict_proba(design(after))[:, 1].mean()
    assert predicted == pytest.approx(after["is_fraud"].mean(), rel=0.15)
    b, a = model.coef_[0], fit(after).coef_[0]
    assert np.allclose(b[:2], a[:2], atol=0.3)


def test_prior_shift_changes_the_fraud_rate_and_keeps_p_of_x_given_y(runs: dict[str, pd.DataFrame]) -> None:
    before, after = halves(runs["prior_shift"])
    assert after["is_fraud"].mean() == pytest.approx(0.06, abs=0.008)
    assert before["is_fraud"].mean() < 0.035
    assert abs(len(after) - len(before)) < 0.05 * len(before)  # the same traffic volume
    for label in (False, True):
        x0, x1 = before[before["is_fraud"] == label], after[after["is_fraud"] == label]
        assert same(x0["amount"], x1["amount"]) if label is False else stats.ks_2samp(x0["amount"], x1["amount"]).pvalue > 0.001
        assert stats.ks_2samp(x0["distance_from_home"], x1["distance_from_home"]).pvalue > 0.001
    # The marginal P(x) moves with the mix of classes (frauds are farther from home).
    assert after["distance_from_home"].mean() > before["distance_from_home"].mean()


@pytest.mark.parametrize("name", ["concept_drift", "gradual_concept_drift"])
def test_concept_drift_keeps_the_features_and_changes_p_of_y_given_x(runs: dict[str, pd.DataFrame], name: str) -> None:
    tx = runs[name]
    before, after = halves(tx)
    for column in ("amount", "distance_from_home", "avg_amount_30d", "tx_count_7d"):
        assert same(before[column], after[column]), column
    assert abs(before["device"].eq("mobile").mean() - after["device"].eq("mobile").mean()) < 0.01
    b, a = fit(before).coef_[0], fit(after).coef_[0]
    assert abs(b[-1]) < 0.5 and a[-1] > 1.5  # the new fraud pattern
    # A model fitted before the drift under-predicts fraud after it.
    assert fit(before).predict_proba(design(after))[:, 1].mean() < 0.8 * after["is_fraud"].mean()


def test_gradual_drift_ramps_and_sudden_drift_switches(runs: dict[str, pd.DataFrame]) -> None:
    def share(tx: pd.DataFrame) -> pd.Series:
        frac = (tx["event_time"] - pd.Timestamp("2026-01-01", tz="UTC")) / pd.Timedelta(days=DAYS)
        return tx.groupby((frac * 10).astype(int).clip(upper=9))["regime"].apply(lambda r: (r == "B").mean())

    sudden, gradual = share(runs["concept_drift"]), share(runs["gradual_concept_drift"])
    assert sudden.loc[:4].max() == 0 and sudden.loc[5:].min() == 1
    assert gradual.loc[:3].max() == 0 and gradual.loc[7:].min() == 1
    assert 0.05 < gradual.loc[4] < gradual.loc[5] < gradual.loc[6] < 0.95  # the ramp over 40 % to 70 %


def test_a_seasonal_regime_returns(runs: dict[str, pd.DataFrame]) -> None:
    tx = runs["seasonal_recurrence"]
    third = (tx["event_time"] - pd.Timestamp("2026-01-01", tz="UTC")) / pd.Timedelta(days=DAYS) * 3
    first, second, last = (tx[third.astype(int).clip(upper=2) == k] for k in range(3))
    assert stats.ks_2samp(first["distance_from_home"], second["distance_from_home"]).pvalue < 1e-6
    assert second["device"].eq("web").mean() > first["device"].eq("web").mean() + 0.1
    for column in ("distance_from_home", "amount", "avg_amount_30d", "tx_count_7d"):
        assert same(first[column], last[column]), column
    assert abs(first["device"].eq("web").mean() - last["device"].eq("web").mean()) < 0.01
    assert second["is_fraud"].mean() > 1.5 * first["is_fraud"].mean()
    assert last["is_fraud"].mean() == pytest.approx(first["is_fraud"].mean(), abs=0.008)
    assert set(last["regime"]) == {"A"} and set(second["regime"]) == {"B"}


def test_labels_arrive_like_chargebacks() -> None:
    rng = np.random.default_rng(3)
    fraud = rng.random(200_000) < 0.5
    delay, reported = label_delays(fraud, rng)
    assert not reported[~fraud].any()
    assert reported[fraud].mean() == pytest.approx(0.85, abs=0.01)  # 15 % never reported
    days = delay[reported]
    assert np.median(days) == pytest.approx(12, rel=0.03)
    assert ((days >= 7) & (days <= 28)).mean() > 0.8  # most within one to four weeks
    assert np.all(delay[~reported] == 30)  # no chargeback for 30 days: legitimate
    fast = generate("none", days=2, rate_per_hour=50, seed=1, label_delay=0.1).transactions
    assert ((fast["label_time"] - fast["event_time"])[~fast["label"]] == pd.Timedelta(days=3)).all()
    tx = generate("none", days=2, rate_per_hour=50, seed=1).transactions
    assert (tx["label_time"] > tx["event_time"]).all()
    assert not (tx["label"] & ~tx["is_fraud"]).any()


def test_bad_arguments_are_refused_naming_the_field() -> None:
    with pytest.raises(InvalidInput, match="scenario: unknown scenario 'drifty'.*concept_drift"):
        generate("drifty")
    with pytest.raises(InvalidInput, match="days: must be between 1 and 366"):
        generate("none", days=0)
    with pytest.raises(InvalidInput, match="rate_per_hour: must be above 0"):
        generate("none", rate_per_hour=-1)


def test_the_labelling_function_is_the_documented_one() -> None:
    row = pd.DataFrame({"amount": [200.0], "avg_amount_30d": [100.0], "distance_from_home": [math.e - 1],
                        "hour": [3], "device": ["web"], "merchant_category": ["jewelry"], "tx_count_7d": [10]})
    expected = -5.0 + 1.2 * math.log(2) + 0.8 + 0.9 + 0.7 + CATEGORY_RISK[CATEGORIES.index("jewelry")] - 0.4
    assert fraud_logit(row, -5.0)[0] == pytest.approx(expected)
    assert BASE_RATE == 0.02


# -- driver, against the server ------------------------------------------------------------------


START = datetime(2026, 3, 1, tzinfo=UTC)


def test_the_driver_loads_a_tenant_a_training_set_builds_from_it_and_serving_records_due_feedback(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        tenant = make_tenant(conn)
        result = simulate(conn, "fraud", "none", start=START, days=4, rate_per_hour=30, seed=5, tenant=tenant)
        tx = result.traffic.transactions
        assert result.ingested == {"customers": len(result.traffic.snapshots), "transactions": len(tx), "labels": len(tx)}
        with tenant_context(conn, tenant):
            spine = label_spine_sql(conn, "fraud", START + pd.Timedelta(days=33))
            dataset = features.create_training_set(conn, "fraud_set", spine, training_features("fraud"), label="is_fraud")
            frame = features.load_dataset(conn, dataset)
        known = tx[tx["label_time"] <= START + pd.Timedelta(days=33)]
        assert len(frame) == len(known) > 0
        merged = frame.merge(tx, on="txn_id", suffixes=("", "_sim"))
        assert len(merged) == len(frame)
        for column in ("amount", "distance_from_home", "avg_amount_30d"):
            assert np.allclose(merged[column], merged[f"{column}_sim"]), column
        assert (merged["tx_count_7d"] == merged["tx_count_7d_sim"]).all()
        assert (merged["is_fraud"] == merged["label"]).all()
        assert set(frame["merchant_category"]) <= set(CATEGORIES)

        # A second run into the same tenant reuses the groups; a logistic regression trained on
        # the whole first run serves the second's traffic, with each label recorded once due.
        with tenant_context(conn, tenant):
            full = features.create_training_set(conn, "fraud_all", label_spine(result.traffic), training_features("fraud"),
                                                label="is_fraud")
            training.create_project(conn, "fraud", "classification", "is_fraud")
            job = training.train(conn, "fraud", full, "logistic_regression", {}, {"model": "fraud-lr"})
        Worker(db_url, kinds=["train", "compile"], idle_exit=0.5, poll_interval=0.2, install_signals=False,
               maintenance_interval=None).run()
        with tenant_context(conn, tenant):
            assert one(conn, "select ml.job_result(%s) ->> 'status'", job) == "succeeded"
        with tenant_context(conn, tenant, user=member(conn, tenant, "owner")):
            conn.execute("select ml.approve('fraud-lr', 1, 'approved')")
        with tenant_context(conn, tenant):
            conn.execute("select ml.deploy('fraud', 'single', %s)", (Jsonb([{"arm": "a", "model": "fraud-lr", "version": 1}]),))
        seen: list[tuple[str, int, int]] = []
        served = simulate(conn, "fraud", "concept_drift", start=START + pd.Timedelta(days=4), days=2, rate_per_hour=20,
                          seed=6, tenant=tenant, serve=True, label_delay=0.05,
                          progress=lambda s, d, t: seen.append((s, d, t)))
        stx = served.traffic.transactions
        assert served.predictions == len(stx) and served.served is not None
        assert served.served["prediction_id"].notna().all() and served.served["served_at"].is_monotonic_increasing
        assert served.day_marks is not None and len(served.day_marks) == 2
        end = START + pd.Timedelta(days=6)
        due = stx[stx["label_time"] < end]
        assert served.feedback_recorded == len(due) and served.feedback_pending == len(stx) - len(due)
        assert 100 < len(due) < len(stx) and due["label"].any() and not due["label"].all()  # 1.5 days to mature
        with tenant_context(conn, tenant):
            logged = one(conn, "select count(*) from ml.predictions p join ml.projects j on j.id = p.project_id "
                               "where j.name = 'fraud'")
            labels = conn.execute("select p.id::text, f.label from ml.feedback f join ml.predictions p on p.id = f.prediction_id "
                                  "where f.source = 'simulate'").fetchall()
        assert logged == len(stx)
        by_id = dict(zip(served.served["prediction_id"], stx["label"], strict=True))
        assert len(labels) == len(due) and all(bool(label) == bool(by_id[pid]) for pid, label in labels)
        assert seen[-1] == ("serve", len(stx), len(stx)) and ("ingest", 3, 3) in seen
        assert (served.traffic.transactions["txn_id"].str.startswith("t0006_")).all()


def test_serving_without_a_deployment_is_not_found_and_a_bad_project_name_is_refused(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        tenant = make_tenant(conn)
        with tenant_context(conn, tenant):
            training.create_project(conn, "idle", "classification", "is_fraud")
        with pytest.raises(NotFound, match="no active deployment"):
            simulate(conn, "idle", "none", days=1, rate_per_hour=5, tenant=tenant, serve=True)
        with pytest.raises(InvalidInput, match="project: must be lowercase"):
            simulate(conn, "Bad Name", "none", days=1, rate_per_hour=5, tenant=tenant)
        with tenant_context(conn, tenant):
            groups = conn.execute("select count(*) from ml.feature_groups where tenant_id = %s", (tenant,)).fetchone()
        assert groups == (0,)  # nothing written


def test_cli_simulate_prints_a_summary_per_segment(db_url: str) -> None:
    result = CliRunner().invoke(app, ["--database-url", db_url, "simulate", "--project", "cli_fraud", "--scenario",
                                      "prior_shift", "--days", "2", "--rate", "40", "--seed", "3"],
                                env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "prior_shift" in result.output and "reported" in result.output
    assert all(len(line) <= 80 for line in result.output.splitlines())
    bad = subprocess.run([sys.executable, "-m", "pgmlops", "--database-url", db_url, "simulate", "--project", "x",
                          "--scenario", "drifty", "--days", "1"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "error [22023]" in bad.stderr and "unknown scenario 'drifty'" in bad.stderr


# -- CTGAN edge cases ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return generate("none", days=3, rate_per_hour=40, seed=9).transactions


def test_ctgan_makes_conditioned_edge_cases_reproducibly_with_a_report(reference: pd.DataFrame) -> None:
    a = synthesize(reference, 40, epochs=3, seed=4, others=2)
    b = synthesize(reference, 40, epochs=3, seed=4, others=2)
    frauds = int(reference["is_fraud"].sum())
    assert len(a.reference) == 3 * frauds  # the frauds and twice as many others
    assert len(a.rows) == 40 and a.rows["is_fraud"].all()  # every row has the condition
    assert set(a.rows["merchant_category"]) <= set(CATEGORIES) and set(a.rows["device"]) <= {"pos", "web", "mobile"}
    assert a.rows["hour"].dtype == np.int64
    pd.testing.assert_frame_equal(a.rows, b.rows)
    assert list(a.report["column"]) == ["amount", "merchant_category", "hour", "device", "distance_from_home",
                                        "avg_amount_30d", "tx_count_7d", "is_fraud"]
    # The report compares with the reference's frauds: KS as scipy computes it, TVD by hand.
    ref = reference[reference["is_fraud"]]
    ks = stats.ks_2samp(ref["amount"], a.rows["amount"])
    row = a.report.set_index("column").loc["amount"]
    assert row["statistic"] == pytest.approx(ks.statistic) and row["p_value"] == pytest.approx(ks.pvalue)
    p = ref["device"].value_counts(normalize=True)
    q = a.rows["device"].value_counts(normalize=True)
    keys = p.index.union(q.index)
    tvd = 0.5 * (p.reindex(keys, fill_value=0) - q.reindex(keys, fill_value=0)).abs().sum()
    assert a.report.set_index("column").loc["device", "statistic"] == pytest.approx(tvd)
    assert a.report.set_index("column").loc["is_fraud", "statistic"] == 0


def test_ctgan_refuses_a_bad_condition_or_size(reference: pd.DataFrame) -> None:
    with pytest.raises(InvalidInput, match="condition: amount is not a discrete column"):
        synthesize(reference, 10, condition=("amount", 1.0))
    with pytest.raises(InvalidInput, match="condition: the reference has no row with device = 'atm'"):
        synthesize(reference, 10, condition=("device", "atm"))
    with pytest.raises(InvalidInput, match="n and epochs: must be at least 1"):
        synthesize(reference, 0)
    with pytest.raises(InvalidInput, match="reference: missing columns amount"):
        synthesize(reference.drop(columns=["amount"]), 10)
