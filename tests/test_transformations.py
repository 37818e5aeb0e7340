"""Transformations declared with a training set, applied in SQL: the same expressions build the
training rows and score new ones (ml.apply_transformations), with statistics frozen at build.

Each transformation is checked against its numpy (or pandas) definition; scoring is checked to
reproduce the training rows exactly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pgmlops import features as datasets
from pgmlops.db import tenant_context

from .conftest import act_for
from .training_data import (
    T0,
    Conn,
    at,
    build,
    create_group,
    ingest,
    iso,
    member,
    refused,
    rows,
    spine_table,
    written,
)


def customers(conn: Conn, values: list[dict[str, Any]]) -> str:
    """Group `customers` (amount float, visits int, tier category, seen timestamp), one value per
    customer c0, c1, ... at T0; returns a spine of one row per customer an hour later."""
    create_group(conn, "customers", {"amount": {"dtype": "float"}, "visits": {"dtype": "int"},
                                     "tier": {"dtype": "category"}, "seen": {"dtype": "timestamp"}})
    ingest(conn, "customers", [{"customer_id": f"c{i:03d}", "event_time": at(0), **v} for i, v in enumerate(values)])
    frame = pd.DataFrame({"customer_id": [f"c{i:03d}" for i in range(len(values))], "event_time": [at(1)] * len(values)})
    return spine_table(conn, frame, {"customer_id": "text", "event_time": "timestamptz"})


FEATURES = ["customers:amount", "customers:visits", "customers:tier", "customers:seen"]


def column(conn: Conn, dataset: str, name: str) -> np.ndarray[Any, Any]:
    return np.array([np.nan if r[name] is None else r[name] for r in rows(conn, dataset)], dtype=float)


def state(conn: Conn, dataset: str, index: int = 0) -> dict[str, Any]:
    row = conn.execute("select transformations -> %s -> 'state' from ml.datasets where id = %s", (index, dataset)).fetchone()
    assert row is not None
    return dict(row[0])


def score(conn: Conn, dataset: str, features: Any) -> Any:
    return datasets.apply_transformations(conn, dataset, features)


AMOUNTS = [0.0, 1e-12, 3e-7, -0.5, 0.25, 1.0, 12.5, 1e6, -1.0, -7.0, None, 42.0]


# -- each transformation against its numpy definition ------------------------------------------------


def test_log1p_equals_numpy_log1p_and_is_null_at_or_below_minus_one(conn: Conn, tenant: str) -> None:
    spine = customers(conn, [{"amount": a} for a in AMOUNTS])
    dataset = build(conn, "ds", spine, FEATURES, transformations=[{"type": "log1p", "column": "amount"}])
    x = np.array([np.nan if a is None else a for a in AMOUNTS])
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.where(x > -1, np.log1p(x), np.nan)
    np.testing.assert_allclose(column(conn, dataset, "amount_log1p"), expected, rtol=1e-15, atol=0)


def test_standardize_uses_the_training_mean_and_population_std(conn: Conn, tenant: str) -> None:
    spine = customers(conn, [{"amount": a} for a in AMOUNTS])
    dataset = build(conn, "ds", spine, FEATURES, transformations=[{"type": "standardize", "column": "amount"}])
    x = np.array([np.nan if a is None else a for a in AMOUNTS])
    np.testing.assert_allclose(column(conn, dataset, "amount_standardized"), (x - np.nanmean(x)) / np.nanstd(x), rtol=1e-12)
    frozen = state(conn, dataset)
    assert frozen["count"] == 11
    assert math.isclose(frozen["mean"], np.nanmean(x), rel_tol=1e-15) and math.isclose(frozen["std"], np.nanstd(x), rel_tol=1e-12)


def test_min_max_scales_the_training_range_to_zero_one(conn: Conn, tenant: str) -> None:
    spine = customers(conn, [{"amount": a} for a in AMOUNTS])
    dataset = build(conn, "ds", spine, FEATURES, transformations=[{"type": "min_max", "column": "amount"}])
    x = np.array([np.nan if a is None else a for a in AMOUNTS])
    np.testing.assert_allclose(column(conn, dataset, "amount_min_max"), (x - np.nanmin(x)) / (np.nanmax(x) - np.nanmin(x)),
                               rtol=1e-15)
    assert state(conn, dataset) == {"min": -7.0, "max": 1e6, "count": 11}


def test_a_constant_column_standardizes_and_scales_to_zero(conn: Conn, tenant: str) -> None:
    spine = customers(conn, [{"amount": 3.0}, {"amount": 3.0}, {"amount": None}])
    dataset = build(conn, "ds", spine, FEATURES, transformations=[{"type": "standardize", "column": "amount"},
                                                                  {"type": "min_max", "column": "amount"}])
    assert [(r["amount_standardized"], r["amount_min_max"]) for r in rows(conn, dataset)] == [(0.0, 0.0), (0.0, 0.0), (None, None)]


def test_bucketize_counts_the_boundaries_at_or_below_the_value_like_numpy_digitize(conn: Conn, tenant: str) -> None:
    spine = customers(conn, [{"amount": a} for a in AMOUNTS])
    bounds = [-1, 0, 0.25, 10, 1000]
    dataset = build(conn, "ds", spine, FEATURES, transformations=[{"type": "bucketize", "column": "amount", "boundaries": bounds}])
    got = [r["amount_bucket"] for r in rows(conn, dataset)]
    assert got == [None if a is None else int(np.digitize(a, bounds)) for a in AMOUNTS]


def test_one_hot_makes_a_column_per_category_seen_at_build_and_other_for_the_rest(conn: Conn, tenant: str) -> None:
    tiers = ["gold", "silver", "gold", None, "Bronze Plus", "silver"]
    spine = customers(conn, [{"tier": t} for t in tiers])
    dataset = build(conn, "ds", spine, FEATURES, transformations=[{"type": "one_hot", "column": "tier"}])
    got = rows(conn, dataset, "tier, tier__bronze_plus, tier__gold, tier__silver, tier__other__")
    assert [(r["tier__bronze_plus"], r["tier__gold"], r["tier__silver"], r["tier__other__"]) for r in got] == [
        (0, 1, 0, 0), (0, 0, 1, 0), (0, 1, 0, 0), (0, 0, 0, 0), (1, 0, 0, 0), (0, 0, 1, 0)]
    assert state(conn, dataset) == {"categories": ["Bronze Plus", "gold", "silver"]}
    scored = score(conn, dataset, [{"tier": "platinum"}, {"tier": "gold"}, {"tier": None}])
    assert [(s["tier__gold"], s["tier__other__"]) for s in scored] == [(0, 1), (1, 0), (0, 0)]


def test_one_hot_with_unseen_zeros_has_no_other_column_and_gives_all_zeros(conn: Conn, tenant: str) -> None:
    spine = customers(conn, [{"tier": "gold"}, {"tier": "silver"}])
    dataset = build(conn, "ds", spine, FEATURES, transformations=[{"type": "one_hot", "column": "tier", "unseen": "zeros"}])
    scored = score(conn, dataset, {"tier": "platinum"})
    assert {k: v for k, v in scored.items() if k.startswith("tier")} == {"tier__gold": 0, "tier__silver": 0}


def test_one_hot_keeps_the_most_frequent_categories_up_to_max_categories(conn: Conn, tenant: str) -> None:
    tiers = ["a", "b", "b", "c", "c", "c", "d"]
    spine = customers(conn, [{"tier": t} for t in tiers])
    dataset = build(conn, "ds", spine, FEATURES,
                    transformations=[{"type": "one_hot", "column": "tier", "max_categories": 2, "prefix": "t"}])
    assert state(conn, dataset) == {"categories": ["b", "c"]}
    assert [r["t__other__"] for r in rows(conn, dataset, "t__other__")] == [1, 0, 0, 0, 0, 0, 1]


@pytest.mark.parametrize(("period", "timezone"), [("hour", None), ("weekday", None), ("hour", "America/New_York")])
def test_cyclical_encoding_equals_sin_and_cos_of_the_hour_or_weekday(conn: Conn, tenant: str, period: str,
                                                                      timezone: str | None) -> None:
    seen = [T0 + pd.Timedelta(minutes=int(m)) for m in np.random.default_rng(3).integers(0, 60 * 24 * 14, size=30)]
    spine = customers(conn, [{"seen": iso(s)} for s in seen] + [{"seen": None}])
    spec: dict[str, Any] = {"type": "cyclical", "column": "seen", "period": period}
    if timezone:
        spec["timezone"] = timezone
    dataset = build(conn, "ds", spine, FEATURES, transformations=[spec])
    local = pd.DatetimeIndex(seen).tz_convert(timezone or "UTC")
    value = local.hour if period == "hour" else local.dayofweek
    cycle = 24 if period == "hour" else 7
    got = rows(conn, dataset)
    np.testing.assert_allclose([r[f"seen_{period}_sin"] for r in got[:-1]], np.sin(2 * np.pi * value / cycle), rtol=0, atol=1e-15)
    np.testing.assert_allclose([r[f"seen_{period}_cos"] for r in got[:-1]], np.cos(2 * np.pi * value / cycle), rtol=0, atol=1e-15)
    assert (got[-1][f"seen_{period}_sin"], got[-1][f"seen_{period}_cos"]) == (None, None)


def test_the_event_time_can_be_encoded_too(conn: Conn, tenant: str) -> None:
    spine = customers(conn, [{}])
    dataset = build(conn, "ds", spine, FEATURES, transformations=[{"type": "cyclical", "column": "event_time", "period": "hour"}])
    got = rows(conn, dataset)[0]
    assert math.isclose(got["event_time_hour_sin"], math.sin(2 * math.pi / 24))  # the spine time is 01:00


# -- windowed aggregates -------------------------------------------------------------------------------


def rolling_reference(events: pd.DataFrame, spine: pd.DataFrame, window: str) -> pd.DataFrame:
    """count, sum, avg, min, max of events.amount per spine row over (event_time - window, event_time],
    with pandas' time-based rolling windows: spine rows are inserted as markers after the events of
    the same time, and read back."""
    markers = spine.assign(paid_at=spine["event_time"], amount=np.nan, n=0, marker=1, spine_index=np.arange(len(spine)))
    columns = events.columns.tolist() + ["n", "marker", "spine_index"]
    stream = pd.concat([events.assign(n=1, marker=0, spine_index=-1), markers[columns]])
    stream = stream.sort_values(["customer_id", "paid_at", "marker"], kind="stable").reset_index(drop=True)
    parts = []
    for _, part in stream.groupby("customer_id", sort=False):
        roll = part.rolling(window, on="paid_at", closed="right")
        parts.append(pd.DataFrame({"count": roll["n"].sum(), "sum": roll["amount"].sum(), "avg": roll["amount"].mean(),
                                   "min": roll["amount"].min(), "max": roll["amount"].max(),
                                   "marker": part["marker"], "spine_index": part["spine_index"]}, index=part.index))
    out = pd.concat(parts)
    out = out[out["marker"] == 1].set_index("spine_index").sort_index()
    out["sum"] = out["sum"].fillna(0.0)
    return out


def test_windowed_aggregates_equal_a_pandas_rolling_computation(conn: Conn, tenant: str) -> None:
    rng = np.random.default_rng(7)
    create_group(conn, "customers", {"amount": {"dtype": "float"}})
    keys = [f"c{i}" for i in range(6)]
    events = pd.DataFrame({"customer_id": rng.choice(keys, size=600),
                           "paid_at": [at(int(h) / 4) for h in rng.integers(0, 40 * 24 * 4, size=600)],
                           "amount": np.where(rng.random(600) < 0.1, np.nan, rng.normal(20, 5, size=600).round(2))})
    source = spine_table(conn, events, {"customer_id": "text", "paid_at": "timestamptz", "amount": "numeric"}, name="payments")
    times = [at(int(h) / 4) for h in rng.integers(0, 42 * 24 * 4, size=300)]
    times[:40] = [t + pd.Timedelta(hours=1) for t in events["paid_at"][:40]]  # spine times exactly one window after an event
    spine = pd.DataFrame({"customer_id": rng.choice(keys + ["nobody"], size=300), "event_time": times})
    spine["event_time"] = pd.to_datetime(spine["event_time"], utc=True)
    events["paid_at"] = pd.to_datetime(events["paid_at"], utc=True)
    name = spine_table(conn, spine, {"customer_id": "text", "event_time": "timestamptz"})
    spec = {"type": "window_aggregate", "source": source, "key": "customer_id", "time": "paid_at", "value": "amount",
            "aggregates": ["count", "sum", "avg", "min", "max"], "windows": ["1h", "24h", "7d", "30d"]}
    dataset = build(conn, "ds", name, ["customers:amount"], transformations=[spec])

    got = pd.DataFrame(rows(conn, dataset))
    ordered = spine.sort_values(["customer_id", "event_time"], kind="stable")
    assert got["customer_id"].tolist() == ordered["customer_id"].tolist()
    for window, label in [("1h", "1h"), ("24h", "24h"), ("7D", "7d"), ("30D", "30d")]:
        expected = rolling_reference(events, spine, window).loc[ordered.index]
        assert got[f"amount_count_{label}"].tolist() == expected["count"].astype(int).tolist()
        for aggregate in ("sum", "avg", "min", "max"):
            np.testing.assert_allclose(got[f"amount_{aggregate}_{label}"].astype(float), expected[aggregate], rtol=1e-12,
                                       err_msg=f"{aggregate} over {label}")
    assert got["amount_count_30d"].sum() > 1000  # the windows were not empty


def test_windowed_aggregates_read_their_source_with_the_callers_rights(conn: Conn, tenant: str) -> None:
    customers(conn, [{"amount": 1.0}])
    engineer = member(conn, tenant, "ml_engineer")
    spec = {"type": "window_aggregate", "source": "ml_private.settings", "key": "key", "time": "updated_at",
            "aggregates": ["count"], "windows": ["1h"]}
    with tenant_context(conn, tenant, user=engineer):
        with refused("42501", r"^transformations\[0\].source: permission denied"):
            build(conn, "ds", "select 'c000' as customer_id, now() as event_time", FEATURES, transformations=[spec])



# -- chaining and the model inputs ------------------------------------------------------------------


def test_transformations_chain_and_their_inputs_leave_the_model_inputs(conn: Conn, tenant: str) -> None:
    spine = customers(conn, [{"amount": a, "visits": i} for i, a in enumerate([1.0, 10.0, 100.0])])
    dataset = build(conn, "ds", spine, FEATURES, transformations=[
        {"type": "log1p", "column": "amount"},
        {"type": "standardize", "column": "amount_log1p", "output": "amount_z"},
        {"type": "min_max", "column": "visits", "keep": True}])
    info = datasets.dataset_info(conn, dataset)
    assert info.inputs == ["visits", "tier", "seen", "amount_z", "visits_min_max"]
    logged = np.log1p([1.0, 10.0, 100.0])
    np.testing.assert_allclose(column(conn, dataset, "amount_z"), (logged - logged.mean()) / logged.std(), rtol=1e-12)
    assert info.transformations[1]["state"]["mean"] == pytest.approx(logged.mean(), rel=1e-15)


# -- scoring with the frozen math ---------------------------------------------------------------------


ALL = [{"type": "log1p", "column": "amount"}, {"type": "standardize", "column": "amount_log1p"},
       {"type": "min_max", "column": "visits"}, {"type": "bucketize", "column": "visits", "boundaries": [10, 50], "keep": True},
       {"type": "one_hot", "column": "tier"}, {"type": "cyclical", "column": "seen", "period": "weekday"},
       {"type": "cyclical", "column": "event_time", "period": "hour"}]


def random_customers(conn: Conn, n: int = 80) -> str:
    rng = np.random.default_rng(11)
    return customers(conn, [{"amount": None if rng.random() < 0.1 else round(float(rng.lognormal(3, 1)), 3),
                             "visits": int(rng.integers(0, 100)), "tier": str(rng.choice(["gold", "silver", "bronze"])),
                             "seen": iso(T0 - pd.Timedelta(minutes=int(rng.integers(0, 99999))))} for _ in range(n)])


def test_scoring_the_raw_training_rows_reproduces_the_training_inputs_exactly(conn: Conn, tenant: str) -> None:
    dataset = build(conn, "ds", random_customers(conn), FEATURES, transformations=ALL)
    info = datasets.dataset_info(conn, dataset)
    trained = rows(conn, dataset)
    raw = [{k: (iso(v) if hasattr(v, "isoformat") else v) for k, v in r.items() if k in ("customer_id", "event_time", "amount",
                                                                                          "visits", "tier", "seen")}
           for r in trained]
    scored = score(conn, dataset, raw)
    for got, row in zip(scored, trained, strict=True):
        assert got == {name: row[name] for name in info.inputs}


def test_scoring_uses_the_statistics_frozen_at_build(conn: Conn, tenant: str) -> None:
    spine = customers(conn, [{"amount": 0.0}, {"amount": 10.0}])
    dataset = build(conn, "ds", spine, FEATURES, transformations=[{"type": "min_max", "column": "amount"}])
    ingest(conn, "customers", [{"customer_id": "c000", "event_time": at(5), "amount": 1000.0}])  # new data changes nothing
    assert score(conn, dataset, [{"amount": 5.0}, {"amount": 20.0}, {"amount": None}]) == [
        {"visits": None, "tier": None, "seen": None, "amount_min_max": 0.5},
        {"visits": None, "tier": None, "seen": None, "amount_min_max": 2.0},
        {"visits": None, "tier": None, "seen": None, "amount_min_max": None}]


def test_scoring_computes_windowed_aggregates_from_the_source_or_takes_them_given(conn: Conn, tenant: str) -> None:
    create_group(conn, "customers", {"amount": {"dtype": "float"}})
    events = pd.DataFrame({"customer_id": ["c1", "c1", "c1", "c2"], "paid_at": [at(0), at(0.5), at(3), at(0.5)],
                           "amount": [1.0, 2.0, 4.0, 8.0]})
    source = spine_table(conn, events, {"customer_id": "text", "paid_at": "timestamptz", "amount": "float8"}, name="payments")
    spine = spine_table(conn, pd.DataFrame({"customer_id": ["c1"], "event_time": [at(1)]}),
                        {"customer_id": "text", "event_time": "timestamptz"})
    dataset = build(conn, "ds", spine, ["customers:amount"], transformations=[
        {"type": "window_aggregate", "source": source, "key": "customer_id", "time": "paid_at", "value": "amount",
         "aggregates": ["count", "sum"], "windows": ["1h"], "prefix": "paid"},
        {"type": "log1p", "column": "paid_sum_1h"}])
    assert [(r["paid_count_1h"], r["paid_sum_1h"]) for r in rows(conn, dataset)] == [(1, 2.0)]  # (0h, 1h]: not the one at 0h
    assert datasets.dataset_info(conn, dataset).transformations[0]["source"].startswith("pg_temp_")  # stored qualified
    scored = score(conn, dataset, [{"customer_id": "c1", "event_time": iso(at(3.25))},
                                   {"customer_id": "c1", "event_time": iso(at(3.25)), "paid_count_1h": 9, "paid_sum_1h": 99.0},
                                   {"customer_id": "c9", "event_time": iso(at(3.25))}])
    assert [(s["paid_count_1h"], s["paid_sum_1h_log1p"]) for s in scored] == [
        (1, pytest.approx(math.log1p(4.0), rel=1e-15)), (9, pytest.approx(math.log1p(99.0), rel=1e-15)), (0, 0.0)]


def test_scoring_one_row_gives_an_object_and_many_give_an_array_in_order(conn: Conn, tenant: str) -> None:
    spine = customers(conn, [{"amount": 1.0}, {"amount": 3.0}])
    dataset = build(conn, "ds", spine, FEATURES, transformations=[{"type": "min_max", "column": "amount"}])
    assert score(conn, dataset, {"amount": 2.0})["amount_min_max"] == 0.5
    assert [s["amount_min_max"] for s in score(conn, dataset, [{"amount": a} for a in (3.0, 1.0, 2.0)])] == [1.0, 0.0, 0.5]


def test_scoring_a_dataframe_returns_a_dataframe_of_the_model_inputs(conn: Conn, tenant: str) -> None:
    spine = customers(conn, [{"amount": 1.0, "tier": "gold"}, {"amount": 3.0, "tier": "silver"}])
    dataset = build(conn, "ds", spine, FEATURES, transformations=[{"type": "min_max", "column": "amount"},
                                                                  {"type": "one_hot", "column": "tier"}])
    frame = pd.DataFrame({"amount": [2.0, np.nan], "tier": ["silver", "gold"], "seen": [pd.Timestamp(T0), pd.NaT]})
    out = datasets.apply_transformations(conn, dataset, frame)
    assert list(out.columns) == ["visits", "seen", "amount_min_max", "tier__gold", "tier__silver", "tier__other__"]
    assert out["amount_min_max"].tolist()[0] == 0.5 and pd.isna(out["amount_min_max"].tolist()[1])
    assert out["tier__gold"].tolist() == [0, 1]


def test_scoring_refuses_what_is_not_rows_and_an_unknown_dataset(conn: Conn, tenant: str) -> None:
    dataset = build(conn, "ds", customers(conn, [{"amount": 1.0}]), FEATURES)
    with refused("22023", r"^features: must be an object"):
        conn.execute("select ml.apply_transformations(%s, '[1, 2]')", (dataset,))
    with refused("P0002"):
        conn.execute("select ml.apply_transformations(gen_random_uuid(), '{}')")
    with refused("22P02"):
        conn.execute("""select ml.apply_transformations(%s, '{"amount": "lots"}')""", (dataset,))


def test_another_tenants_dataset_cannot_be_used_for_scoring(conn: Conn, tenant: str) -> None:
    dataset = build(conn, "ds", customers(conn, [{"amount": 1.0}]), FEATURES)
    stranger = member(conn, tenant, "viewer")
    with tenant_context(conn, tenant, user=stranger):
        assert score(conn, dataset, {"amount": 1.0}) == {"amount": 1.0, "visits": None, "tier": None, "seen": None}
    other = member(conn, conn.execute("select ml.create_tenant('other')").fetchone()[0], "owner")
    act_for(conn, None)
    with tenant_context(conn, user=other), refused("P0002"):
        conn.execute("select ml.apply_transformations(%s, '{}')", (dataset,))


# -- bad specs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("specs", "says"), [
    ({"type": "log1p"}, r"^transformations: must be a JSON array"),
    ([1], r"^transformations\[0\]: must be an object"),
    ([{"type": "sqrt", "column": "amount"}], r"^transformations\[0\]\.type: must be one of log1p, standardize"),
    ([{"type": "log1p"}], r"^transformations\[0\]\.column: must name a column"),
    ([{"type": "log1p", "column": "nope"}], r"^transformations\[0\]\.column: the training set has no column 'nope'"),
    ([{"type": "log1p", "column": "tier"}], r"^transformations\[0\]\.column: log1p needs a numeric column.*tier is text"),
    ([{"type": "log1p", "column": "customer_id"}], r"^transformations\[0\]\.column: log1p needs a numeric column.*is key"),
    ([{"type": "log1p", "column": "amount", "power": 2}], r"^transformations\[0\]\.power: unknown field for log1p"),
    ([{"type": "log1p", "column": "amount", "output": "Bad Name"}], r"^transformations\[0\]\.output: must be lowercase"),
    ([{"type": "log1p", "column": "amount"}, {"type": "log1p", "column": "amount"}],
     r"^transformations\[1\]: output column 'amount_log1p' already exists"),
    ([{"type": "standardize", "column": "amount", "output": "visits"}], r"^transformations\[0\]: output column 'visits' already"),
    ([{"type": "bucketize", "column": "amount"}], r"^transformations\[0\]\.boundaries: must be a non-empty array"),
    ([{"type": "bucketize", "column": "amount", "boundaries": [1, 1]}],
     r"^transformations\[0\]\.boundaries: must be strictly increasing"),
    ([{"type": "bucketize", "column": "amount", "boundaries": ["a"]}], r"^transformations\[0\]\.boundaries: must be a non-empty"),
    ([{"type": "one_hot", "column": "seen"}], r"^transformations\[0\]\.column: one_hot needs a text, category, int or bool"),
    ([{"type": "one_hot", "column": "tier", "unseen": "error"}], r"^transformations\[0\]\.unseen: must be \"other\""),
    ([{"type": "one_hot", "column": "tier", "max_categories": 0}], r"^transformations\[0\]\.max_categories: must be an integer"),
    ([{"type": "cyclical", "column": "amount", "period": "hour"}], r"^transformations\[0\]\.column: cyclical needs a timestamp"),
    ([{"type": "cyclical", "column": "seen", "period": "minute"}], r"^transformations\[0\]\.period: must be \"hour\" or \"weekday\""),
    ([{"type": "cyclical", "column": "seen", "period": "hour", "timezone": "Mars/Olympus"}],
     r"^transformations\[0\]\.timezone: \"Mars/Olympus\" is not a time zone"),
    ([{"type": "window_aggregate", "key": "k", "time": "t", "aggregates": ["count"], "windows": ["1h"]}],
     r"^transformations\[0\]\.source: must name the events table"),
    ([{"type": "window_aggregate", "source": "payments", "time": "t", "aggregates": ["count"], "windows": ["1h"]}],
     r"^transformations\[0\]\.key: must name a column of the source"),
    ([{"type": "window_aggregate", "source": "payments", "key": "k", "time": "t", "aggregates": ["median"], "windows": ["1h"]}],
     r"^transformations\[0\]\.aggregates: must be a non-empty array of count, sum, avg, min, max"),
    ([{"type": "window_aggregate", "source": "payments", "key": "k", "time": "t", "aggregates": ["sum"], "windows": ["1h"]}],
     r"^transformations\[0\]\.value: sum need the column to aggregate"),
    ([{"type": "window_aggregate", "source": "payments", "key": "k", "time": "t", "aggregates": ["count"], "windows": ["1w"]}],
     r"^transformations\[0\]\.windows: must be a non-empty array like"),
    ([{"type": "window_aggregate", "source": "payments", "key": "customer_id", "time": "nope", "aggregates": ["count"],
       "windows": ["1h"]}], r"^transformations\[0\]\.time: the source has no column 'nope'"),
    ([{"type": "window_aggregate", "source": "payments", "key": "customer_id", "time": "customer_id", "aggregates": ["count"],
       "windows": ["1h"]}], r"^transformations\[0\]\.time: column customer_id must be timestamptz or timestamp"),
    ([{"type": "window_aggregate", "source": "payments", "key": "customer_id", "time": "paid_at", "value": "customer_id",
       "aggregates": ["sum"], "windows": ["1h"]}], r"^transformations\[0\]\.value: column customer_id must be numeric"),
    ([{"type": "window_aggregate", "source": "no_such_events", "key": "customer_id", "time": "paid_at", "aggregates": ["count"],
       "windows": ["1h"]}], r"^transformations\[0\]\.source: 'no_such_events' is not a table or view"),
    ([{"type": "window_aggregate", "source": "select * from payments", "key": "customer_id", "time": "paid_at",
       "aggregates": ["count"], "windows": ["1h"]}], r"^transformations\[0\]\.source: must name a table or view, not give a query"),
    ([{"type": "window_aggregate", "source": "payments", "key": "customer_id", "time": "paid_at", "aggregates": ["count"],
       "windows": ["1h"], "spine_key": "merchant_id"}], r"^transformations\[0\]\.spine_key: must name one of the spine key columns"),
])
def test_a_bad_transformation_spec_is_refused_naming_its_index_and_rule(conn: Conn, tenant: str, specs: Any, says: str) -> None:
    spine = customers(conn, [{"amount": 1.0}])
    spine_table(conn, pd.DataFrame({"customer_id": ["c000"], "paid_at": [at(0)]}), {"customer_id": "text", "paid_at": "timestamptz"},
                name="payments")
    with refused("22023", says):
        build(conn, "ds", spine, FEATURES, transformations=specs)
    assert written(conn, tenant) == {"datasets": 0, "tables": 0, "lineage": 0, "events": 0}
