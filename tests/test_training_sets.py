"""Point-in-time correct training sets: ml.create_training_set and pgmlops.datasets, on the real server.

For each spine row, each feature group supplies its latest row at or before the spine's
event_time and within the group's TTL (pandas.merge_asof, backward, by key, with tolerance).
Every test gets a tenant of its own; spines are temporary tables of the test's session.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from pgmlops import features as datasets
from pgmlops.db import tenant_context
from pgmlops.errors import AccessDenied, InvalidInput, NotFound

from .conftest import act_for, make_tenant
from .training_data import (
    Conn,
    at,
    build,
    create_group,
    ingest,
    iso,
    member,
    merge_asof_reference,
    refused,
    rows,
    spine_table,
    written,
)

SPINE_TYPES = {"customer_id": "text", "merchant_id": "text", "event_time": "timestamptz", "label": "int"}


def customers(conn: Conn, ttl: str | None = None, **schema: str) -> str:
    """Group `customers` (join key customer_id) with float `amount` and any features given."""
    return create_group(conn, "customers", {"amount": {"dtype": "float"}, **{k: {"dtype": v} for k, v in schema.items()}},
                        ttl=ttl)


def spine(conn: Conn, *points: tuple[str, float], label: list[Any] | None = None) -> str:
    """A spine of (customer_id, hours after T0) points, with an optional label column."""
    frame = pd.DataFrame({"customer_id": [k for k, _ in points], "event_time": [at(h) for _, h in points]})
    types = {"customer_id": "text", "event_time": "timestamptz"}
    if label is not None:
        frame["label"] = label
        types["label"] = "int"
    return spine_table(conn, frame, types)


def offline_table(conn: Conn, group: str) -> str:
    """The offline table of the current version of ``group`` (see docs/features.md)."""
    row = conn.execute("select offline_table::text from ml.feature_groups where id = (ml.feature_group(%s) ->> 'id')::uuid",
                       (group,)).fetchone()
    assert row is not None
    return str(row[0])


def force_plan(conn: Conn, plan: str) -> None:
    """Make ml.create_training_set join every group with ``plan`` ('probe', 'merge' or 'auto') in this session."""
    conn.execute("select set_config('pgmlops.training_set_plan', %s, false)", (plan,))


def amounts(conn: Conn, dataset: str) -> list[tuple[str, datetime, float | None]]:
    return [(r["customer_id"], r["event_time"], r["amount"]) for r in rows(conn, dataset)]


# -- the point-in-time rule, by example -------------------------------------------------------------


def test_each_spine_row_takes_the_latest_value_at_or_before_its_time(conn: Conn, tenant: str) -> None:
    customers(conn)
    ingest(conn, "customers", [{"customer_id": "c1", "event_time": at(0), "amount": 1.0},
                               {"customer_id": "c1", "event_time": at(10), "amount": 2.0}])
    dataset = build(conn, "ds", spine(conn, ("c1", 5), ("c1", 10), ("c1", 30)), ["customers:amount"])
    assert amounts(conn, dataset) == [("c1", at(5), 1.0), ("c1", at(10), 2.0), ("c1", at(30), 2.0)]


def test_a_value_from_after_the_spine_time_is_never_used(conn: Conn, tenant: str) -> None:
    customers(conn)
    ingest(conn, "customers", [{"customer_id": "c1", "event_time": at(6), "amount": 9.0}])
    dataset = build(conn, "ds", spine(conn, ("c1", 5.99)), ["customers:amount"])
    assert amounts(conn, dataset) == [("c1", at(5.99), None)]


def test_a_late_arrival_counts_by_its_event_time_not_its_ingestion_time(conn: Conn, tenant: str) -> None:
    customers(conn)
    ingest(conn, "customers", [{"customer_id": "c1", "event_time": at(20), "amount": 20.0}])
    ingest(conn, "customers", [{"customer_id": "c1", "event_time": at(10), "amount": 10.0}])  # arrives late
    dataset = build(conn, "ds", spine(conn, ("c1", 15), ("c1", 25)), ["customers:amount"])
    assert [a for _, _, a in amounts(conn, dataset)] == [10.0, 20.0]


def test_a_value_older_than_the_groups_ttl_is_not_used(conn: Conn, tenant: str) -> None:
    customers(conn, ttl="2 hours")
    ingest(conn, "customers", [{"customer_id": "c1", "event_time": at(0), "amount": 1.0}])
    dataset = build(conn, "ds", spine(conn, ("c1", 2), ("c1", 2.01)), ["customers:amount"])
    assert [a for _, _, a in amounts(conn, dataset)] == [1.0, None]  # exactly the TTL old is still in


def test_the_latest_row_supplies_all_of_its_groups_features_even_null_ones(conn: Conn, tenant: str) -> None:
    customers(conn, visits="int")
    ingest(conn, "customers", [{"customer_id": "c1", "event_time": at(0), "amount": 1.0, "visits": 3},
                               {"customer_id": "c1", "event_time": at(1), "amount": 2.0}])
    dataset = build(conn, "ds", spine(conn, ("c1", 2)), ["customers:amount", "customers:visits"])
    assert [(r["amount"], r["visits"]) for r in rows(conn, dataset)] == [(2.0, None)]


def test_a_group_without_any_value_gives_null_features(any_db_url: str) -> None:
    with psycopg.connect(any_db_url, autocommit=True) as conn:  # a new database: no chunk or partition holds values
        act_for(conn, make_tenant(conn))
        customers(conn, ttl="1 day")
        dataset = build(conn, "ds", spine(conn, ("c1", 1)), ["customers:amount"])
        assert amounts(conn, dataset) == [("c1", at(1), None)]


def test_spine_rows_without_any_value_and_duplicate_rows_are_kept(conn: Conn, tenant: str) -> None:
    customers(conn)
    ingest(conn, "customers", [{"customer_id": "c1", "event_time": at(0), "amount": 1.0}])
    dataset = build(conn, "ds", spine(conn, ("c1", 1), ("c1", 1), ("nobody", 1), ("c1", -1)), ["customers:amount"])
    assert amounts(conn, dataset) == [("c1", at(-1), None), ("c1", at(1), 1.0), ("c1", at(1), 1.0),
                                      ("nobody", at(1), None)]


def test_rows_are_ordered_by_keys_event_time_and_label(conn: Conn, tenant: str) -> None:
    customers(conn)
    dataset = build(conn, "ds", spine(conn, ("b", 2), ("a", 3), ("b", 1), ("a", 3), label=[0, 1, 0, 0]),
                    ["customers:amount"], label="label")
    got = rows(conn, dataset, "row_id as n, customer_id, event_time, label")
    assert [(r["n"], r["customer_id"], r["event_time"], r["label"]) for r in got] == [
        (1, "a", at(3), 0), (2, "a", at(3), 1), (3, "b", at(1), 0), (4, "b", at(2), 0)]


# -- the point-in-time rule against pandas, on random data ------------------------------------------


def random_world(conn: Conn, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Two groups with random values: customers (TTL 2 days; float, int, category and bool features)
    and merchants (no TTL; float and timestamp), over 90 days on an hourly grid (so spine times tie
    with value times), with missing and null values, ingested out of order in several batches (late
    arrivals), plus merchant rows from a year earlier written straight into the group's offline
    table (with native partitioning they sit in its DEFAULT partition). The spine has rows at value
    times (ties), exactly the TTL after a value (still in) and a second past it (out), duplicates,
    and a row before everything. Returns (customer values, merchant values, spine)."""
    rng = np.random.default_rng(seed)
    create_group(conn, "customers", {"amount": {"dtype": "float"}, "visits": {"dtype": "int"},
                                     "tier": {"dtype": "category"}, "vip": {"dtype": "bool"}}, ttl="2 days")
    create_group(conn, "merchants", {"risk": {"dtype": "float"}, "opened": {"dtype": "timestamp"}}, key="merchant_id")
    hours = 90 * 24

    def maybe(value: Any) -> Any:
        return None if rng.random() < 0.15 else value

    cust_rows = []
    for key in [f"c{i}" for i in range(20)]:
        for h in sorted(set(rng.integers(0, hours, size=int(rng.integers(3, 40))).tolist())):
            row: dict[str, Any] = {"customer_id": key, "event_time": at(h),
                                   "amount": maybe(round(float(rng.normal(50, 20)), 2)),
                                   "visits": maybe(int(rng.integers(0, 100))),
                                   "tier": maybe(str(rng.choice(["gold", "silver", "bronze"]))),
                                   "vip": maybe(bool(rng.random() < 0.3))}
            if rng.random() < 0.1:  # a missing key, not only a null
                del row["tier"]
            cust_rows.append(row)
    merch_rows = []
    for key in [f"m{i}" for i in range(8)]:
        for h in sorted(set(rng.integers(0, hours, size=int(rng.integers(0, 15))).tolist())):
            merch_rows.append({"merchant_id": key, "event_time": at(h), "risk": maybe(round(float(rng.random()), 4)),
                               "opened": maybe(at(-float(rng.integers(1, 10000))))})
    order = rng.permutation(len(cust_rows))
    for batch in np.array_split(order, 4):
        ingest(conn, "customers", [cust_rows[i] for i in batch])
    ingest(conn, "merchants", [merch_rows[i] for i in rng.permutation(len(merch_rows))])

    early = [{"merchant_id": f"m{i}", "event_time": at(-365 * 24 + i), "risk": 0.5, "opened": at(-400 * 24)} for i in range(8)]
    conn.execute(sql.SQL(
        """insert into {} (tenant_id, entity_key, event_time, risk, opened)
           select ml.current_tenant(), r ->> 'merchant_id', (r ->> 'event_time')::timestamptz, (r ->> 'risk')::float8,
                  (r ->> 'opened')::timestamptz
           from jsonb_array_elements(%s) r""").format(sql.SQL(offline_table(conn, "merchants"))),
        (Jsonb([{k: iso(v) if isinstance(v, datetime) else v for k, v in r.items()} for r in early]),))
    merch_rows = early + merch_rows

    cust_times = [r["event_time"] for r in cust_rows]
    points = []
    for _ in range(900):
        when = cust_times[int(rng.integers(len(cust_times)))] if rng.random() < 0.3 else at(int(rng.integers(-48, hours + 48)))
        points.append({"customer_id": f"c{int(rng.integers(0, 22))}", "merchant_id": f"m{int(rng.integers(0, 9))}",
                       "event_time": when, "label": int(rng.integers(0, 2))})
    for _ in range(150):  # exactly the TTL after a customer value (still in), and a second past it (out)
        when = cust_times[int(rng.integers(len(cust_times)))] + timedelta(days=2, seconds=int(rng.integers(0, 2)))
        points.append({"customer_id": cust_rows[cust_times.index(when - timedelta(days=2, seconds=when.second))]["customer_id"],
                       "merchant_id": f"m{int(rng.integers(0, 9))}", "event_time": when, "label": int(rng.integers(0, 2))})
    points += [points[int(i)] for i in rng.integers(0, len(points), size=40)]  # duplicates
    points.append({"customer_id": "c1", "merchant_id": "m1", "event_time": at(-366 * 24), "label": 0})  # before everything

    def frame(records: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
        out = pd.DataFrame.from_records(records, columns=columns)
        out["event_time"] = pd.to_datetime(out["event_time"], utc=True)
        return out

    return (frame(cust_rows, ["customer_id", "event_time", "amount", "visits", "tier", "vip"]),
            frame(merch_rows, ["merchant_id", "event_time", "risk", "opened"]),
            frame(points, ["customer_id", "merchant_id", "event_time", "label"]))


def normalized(frame: pd.DataFrame, columns: list[str]) -> list[tuple[Any, ...]]:
    """Rows as tuples of plain Python values, None for every kind of missing."""
    out = []
    for record in frame[columns].itertuples(index=False):
        values = []
        for v in record:
            if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and np.isnan(v)):
                values.append(None)
            elif isinstance(v, pd.Timestamp):
                values.append(v.to_pydatetime())
            elif isinstance(v, np.generic):
                values.append(v.item())
            else:
                values.append(v)
        out.append(tuple(values))
    return out


@pytest.mark.parametrize("plan", ["probe", "merge"])
@pytest.mark.parametrize("seed", [1, 2])
def test_random_spines_match_pandas_merge_asof_row_for_row(any_db_url: str, seed: int, plan: str) -> None:
    with psycopg.connect(any_db_url, autocommit=True) as conn:
        act_for(conn, make_tenant(conn))
        cust, merch, points = random_world(conn, seed)
        name = spine_table(conn, points, SPINE_TYPES)
        force_plan(conn, plan)
        frame = datasets.training_set(conn, "pit", name, ["customers:amount", "customers:visits", "customers:tier",
                                                          "customers:vip", "merchants:risk", "merchants:opened"], label="label")
        assert [g["plan"] for g in frame.attrs["dataset"].source_groups] == [plan, plan]

        expected = merge_asof_reference(points, cust, "customer_id", "2 days")
        expected = expected.join(merge_asof_reference(points, merch, "merchant_id", None)[["risk", "opened"]])
        expected = expected.sort_values(["customer_id", "merchant_id", "event_time", "label"], kind="stable")
        columns = ["customer_id", "merchant_id", "event_time", "label", "amount", "visits", "tier", "vip", "risk", "opened"]
        assert list(frame.columns) == columns
        assert normalized(frame, columns) == normalized(expected, columns)
        assert frame["amount"].notna().sum() > 100 and frame["amount"].isna().sum() > 50  # both cases exercised
        # Ties, the TTL's edge and a second past it all occur (each customer row's time is unique per customer).
        value_times = cust.sort_values("event_time")[["customer_id", "event_time"]].assign(value_time=lambda f: f["event_time"])
        last = pd.merge_asof(points.sort_values("event_time").reset_index(), value_times, on="event_time", by="customer_id")
        age = (last["event_time"] - last["value_time"]).value_counts()
        assert age.get(pd.Timedelta(0), 0) > 15 and age.get(pd.Timedelta(days=2), 0) > 15
        assert age.get(pd.Timedelta(days=2, seconds=1), 0) > 15
        if conn.execute("select ml.capabilities() ->> 'partitioning'").fetchone()[0] == "native":
            # The early merchant rows were read from the DEFAULT partition, next to the ranged ones.
            assert conn.execute(f"select count(*) from {offline_table(conn, 'merchants')}_default").fetchone()[0] == 8


def test_an_entity_with_more_rows_than_a_timeline_holds_is_probed_with_the_same_result(any_db_url: str) -> None:
    """The merge plan keeps at most 1000 rows per entity in a timeline; a larger entity is probed."""
    with psycopg.connect(any_db_url, autocommit=True) as conn:
        act_for(conn, make_tenant(conn))
        rng = np.random.default_rng(3)
        create_group(conn, "ticks", {"price": {"dtype": "float"}, "venue": {"dtype": "text"}}, key="symbol", ttl="90 minutes")
        values = [{"symbol": key, "event_time": at(m / 60), "price": None if rng.random() < 0.2 else float(m),
                   "venue": None if rng.random() < 0.2 else f"v{m % 7}"}
                  for key, minutes in (("big", 1500), ("small", 40)) for m in sorted(rng.choice(3000, minutes, replace=False))]
        for batch in np.array_split(rng.permutation(len(values)), 3):
            ingest(conn, "ticks", [values[i] for i in batch])
        points = pd.DataFrame({"symbol": rng.choice(["big", "small", "none"], 400),
                               "event_time": [at(int(m) / 60) for m in rng.integers(-100, 3200, 400)]})
        expected = merge_asof_reference(points, pd.DataFrame(values).assign(
            event_time=lambda f: pd.to_datetime(f["event_time"], utc=True)), "symbol", "90 minutes")
        expected = expected.sort_values(["symbol", "event_time"], kind="stable")
        name = spine_table(conn, points, {"symbol": "text", "event_time": "timestamptz"})
        for plan in ("merge", "probe"):
            force_plan(conn, plan)
            frame = datasets.training_set(conn, f"ticks_{plan}", name, ["ticks:price", "ticks:venue"])
            assert frame.attrs["dataset"].source_groups[0]["plan"] == plan
            assert normalized(frame, ["symbol", "event_time", "price", "venue"]) == \
                normalized(expected, ["symbol", "event_time", "price", "venue"])
            assert frame.loc[frame["symbol"] == "big", "price"].notna().sum() > 50


def test_the_plan_is_chosen_by_the_spines_size_next_to_the_groups(conn: Conn, tenant: str) -> None:
    """'auto' probes for a spine under an eighth of the group's rows in its window (the planner's estimate), else merges."""
    customers(conn)
    ingest(conn, "customers", [{"customer_id": f"c{i % 20}", "event_time": at(i), "amount": float(i)} for i in range(400)])
    conn.execute(f"analyze {offline_table(conn, 'customers')}")
    force_plan(conn, "auto")
    small = build(conn, "small", spine(conn, *[(f"c{i}", 500.0) for i in range(10)]), ["customers:amount"])
    large = build(conn, "large", spine(conn, *[(f"c{i % 20}", float(i)) for i in range(60)]), ["customers:amount"])
    plans = dict(conn.execute("select id::text, source_groups -> 0 ->> 'plan' from ml.datasets where tenant_id = %s",
                              (tenant,)).fetchall())
    assert (plans[small], plans[large]) == ("probe", "merge")
    assert [a for _, _, a in amounts(conn, small)] == [float(380 + i) for i in range(10)]


def test_an_unknown_plan_setting_is_refused(conn: Conn, tenant: str) -> None:
    customers(conn)
    force_plan(conn, "fastest")
    with refused("22023", r"^pgmlops.training_set_plan: 'fastest' must be auto, probe or merge"):
        build(conn, "ds", spine(conn, ("c1", 1)), ["customers:amount"])
    force_plan(conn, "")


# -- the spine -------------------------------------------------------------------------------------


def test_the_spine_may_be_a_query(conn: Conn, tenant: str) -> None:
    customers(conn)
    ingest(conn, "customers", [{"customer_id": "c1", "event_time": at(0), "amount": 1.0}])
    dataset = build(conn, "ds", f"select 'c1' as customer_id, '{iso(at(1))}'::timestamptz as event_time",
                    ["customers:amount"])
    assert amounts(conn, dataset) == [("c1", at(1), 1.0)]


def test_a_spine_key_column_named_entity_key_serves_any_group(conn: Conn, tenant: str) -> None:
    customers(conn)
    ingest(conn, "customers", [{"customer_id": "c1", "event_time": at(0), "amount": 1.0}])
    dataset = build(conn, "ds", f"select 'c1' as entity_key, '{iso(at(1))}'::timestamptz as event_time", ["customers:amount"])
    assert rows(conn, dataset) == [{"entity_key": "c1", "event_time": at(1), "amount": 1.0}]


def test_spine_keys_of_any_type_are_compared_as_text_and_naive_times_read_as_utc(conn: Conn, tenant: str) -> None:
    create_group(conn, "cards", {"limit": {"dtype": "float"}}, key="card")
    ingest(conn, "cards", [{"card": "42", "event_time": at(0), "limit": 100.0}])
    dataset = build(conn, "ds", "select 42 as card, timestamp '2026-01-01 00:00:00' as event_time", ["cards:limit"])
    assert rows(conn, dataset) == [{"card": "42", "event_time": at(0), "limit": 100.0}]


def test_other_spine_columns_are_not_copied(conn: Conn, tenant: str) -> None:
    customers(conn)
    dataset = build(conn, "ds", f"select 'c1' as customer_id, '{iso(at(1))}'::timestamptz as event_time, 1 as extra",
                    ["customers:amount"])
    assert list(rows(conn, dataset)[0]) == ["customer_id", "event_time", "amount"]


def test_the_label_is_copied_with_its_type(conn: Conn, tenant: str) -> None:
    customers(conn)
    dataset = build(conn, "ds", f"select 'c1' as customer_id, '{iso(at(1))}'::timestamptz as event_time, true as fraud",
                    ["customers:amount"], label="fraud")
    assert rows(conn, dataset) == [{"customer_id": "c1", "event_time": at(1), "fraud": True, "amount": None}]


# -- columns ---------------------------------------------------------------------------------------


def test_feature_columns_are_typed_by_dtype(conn: Conn, tenant: str) -> None:
    create_group(conn, "typed", {"i": {"dtype": "int"}, "f": {"dtype": "float"}, "b": {"dtype": "bool"}, "t": {"dtype": "text"},
                                 "c": {"dtype": "category"}, "ts": {"dtype": "timestamp"}, "v": {"dtype": "vector(3)"}})
    ingest(conn, "typed", [{"customer_id": "c1", "event_time": at(0), "i": 7, "f": 0.5, "b": True, "t": "x", "c": "y",
                            "ts": "2026-02-01T12:00:00+02:00", "v": [1, 2.5, -3]}])
    dataset = build(conn, "ds", spine(conn, ("c1", 1)), [f"typed:{f}" for f in ("i", "f", "b", "t", "c", "ts", "v")])
    types = conn.execute("""select a.attname, format_type(a.atttypid, a.atttypmod) from pg_attribute a
                            where a.attrelid = (select table_name from ml.datasets where id = %s)::regclass
                              and a.attnum > 0 order by a.attnum""", (dataset,)).fetchall()
    assert dict(types) == {"row_id": "bigint", "tenant_id": "uuid", "customer_id": "text", "event_time": "timestamp with time zone",
                           "i": "bigint", "f": "double precision", "b": "boolean", "t": "text", "c": "text",
                           "ts": "timestamp with time zone", "v": "double precision[]"}
    assert rows(conn, dataset)[0] == {"customer_id": "c1", "event_time": at(1), "i": 7, "f": 0.5, "b": True, "t": "x", "c": "y",
                                      "ts": datetime(2026, 2, 1, 10, tzinfo=UTC), "v": [1.0, 2.5, -3.0]}


def test_a_feature_name_shared_by_two_groups_is_prefixed_with_its_group(conn: Conn, tenant: str) -> None:
    customers(conn)
    create_group(conn, "merchants", {"amount": {"dtype": "float"}}, key="merchant_id")
    dataset = build(conn, "ds", f"select 'c1' as customer_id, 'm1' as merchant_id, '{iso(at(1))}'::timestamptz as event_time",
                    ["customers:amount", "merchants:amount"])
    assert list(rows(conn, dataset)[0]) == ["customer_id", "merchant_id", "event_time", "customers__amount", "merchants__amount"]


def test_two_versions_of_one_group_are_told_apart_by_version(conn: Conn, tenant: str) -> None:
    customers(conn)
    customers(conn)
    ingest(conn, "customers@1", [{"customer_id": "c1", "event_time": at(0), "amount": 1.0}])
    ingest(conn, "customers@2", [{"customer_id": "c1", "event_time": at(0), "amount": 2.0}])
    dataset = build(conn, "ds", spine(conn, ("c1", 1)), ["customers@1:amount", "customers@2:amount"])
    assert rows(conn, dataset)[0] == {"customer_id": "c1", "event_time": at(1), "customers_v1__amount": 1.0,
                                      "customers_v2__amount": 2.0}


# -- registration ----------------------------------------------------------------------------------


def test_the_dataset_is_registered_with_its_count_hash_columns_time_range_and_groups(conn: Conn, tenant: str) -> None:
    group = customers(conn, ttl="1 day")
    ingest(conn, "customers", [{"customer_id": "c1", "event_time": at(0), "amount": 1.0}])
    dataset = build(conn, "train", spine(conn, ("c1", 1), ("c2", 30), label=[1, 0]), ["customers:amount"], label="label")
    info = datasets.dataset_info(conn, "train")
    assert str(info.id) == dataset
    assert (info.name, info.version, info.row_count, info.label, info.key_columns) == ("train", 1, 2, "label", ["customer_id"])
    assert info.table_name == f'ml_datasets.train_{dataset.replace("-", "")[:8]}'
    assert info.content_hash.startswith("sha256:") and len(info.content_hash) == 71
    assert info.time_range == (at(1), at(30))
    assert [(c["name"], c["type"], c["role"]) for c in info.columns] == [
        ("customer_id", "text", "key"), ("event_time", "timestamptz", "event_time"), ("label", "integer", "label"),
        ("amount", "double precision", "feature")]
    assert info.inputs == ["amount"]
    assert [(g["group_id"], g["name"], g["version"], g["ttl"], g["features"]) for g in info.source_groups] == [
        (group, "customers", 1, "1 day", ["amount"])]


def test_building_a_name_again_makes_a_new_version_with_the_same_hash_for_the_same_content(conn: Conn, tenant: str) -> None:
    customers(conn)
    ingest(conn, "customers", [{"customer_id": "c1", "event_time": at(0), "amount": 1.0}])
    first = build(conn, "ds", spine(conn, ("c1", 1), ("c2", 2), ("c1", 3)), ["customers:amount"])
    second = build(conn, "ds", spine(conn, ("c1", 3), ("c1", 1), ("c2", 2)), ["customers:amount"])  # same rows, other order
    got = conn.execute("select id::text, version, content_hash from ml.datasets where tenant_id = %s order by version",
                       (tenant,)).fetchall()
    assert [(i, v) for i, v, _ in got] == [(first, 1), (second, 2)]
    assert got[0][2] == got[1][2]
    ingest(conn, "customers", [{"customer_id": "c2", "event_time": at(0), "amount": 5.0}])
    third = build(conn, "ds", spine(conn, ("c1", 1), ("c2", 2), ("c1", 3)), ["customers:amount"])
    assert conn.execute("select content_hash from ml.datasets where id = %s", (third,)).fetchone()[0] != got[0][2]


def test_lineage_links_every_source_group_to_the_dataset_and_an_event_is_published(conn: Conn, tenant: str) -> None:
    first = customers(conn)
    second = create_group(conn, "merchants", {"risk": {"dtype": "float"}}, key="merchant_id")
    dataset = build(conn, "ds", f"select 'c1' as customer_id, 'm1' as merchant_id, '{iso(at(1))}'::timestamptz as event_time",
                    ["customers:amount", "merchants:risk"])
    edges = conn.execute("select from_kind, from_id::text, to_kind, to_id::text, details from ml.lineage "
                         "where to_id = %s order by details::text", (dataset,)).fetchall()
    assert edges == [("feature_group", first, "dataset", dataset, {"features": ["amount"]}),
                     ("feature_group", second, "dataset", dataset, {"features": ["risk"]})]
    event = conn.execute("select topic, payload from ml.events where event = 'dataset.created' and tenant_id = %s",
                         (tenant,)).fetchone()
    assert event is not None and event[0] == "features"
    assert (event[1]["dataset_id"], event[1]["name"], event[1]["version"], event[1]["rows"]) == (dataset, "ds", 1, 1)


def test_the_dataset_table_is_read_through_rls_and_not_listed_as_a_fixed_tenant_table(conn: Conn, tenant: str) -> None:
    customers(conn)
    dataset = build(conn, "ds", spine(conn, ("c1", 1)), ["customers:amount"])
    table = conn.execute("select table_name from ml.datasets where id = %s", (dataset,)).fetchone()[0]
    assert conn.execute("select relrowsecurity and relforcerowsecurity from pg_class where oid = %s::regclass",
                        (table,)).fetchone()[0]
    assert conn.execute("select count(*) from ml_private.tenant_tables where table_name = %s", (table,)).fetchone()[0] == 0
    owner, stranger = member(conn, tenant, "viewer"), member(conn, make_tenant(conn), "owner")
    with tenant_context(conn, user=owner):
        assert conn.execute(f"select count(*) from {table}").fetchone()[0] == 1
    with tenant_context(conn, user=stranger):
        assert conn.execute(f"select count(*) from {table}").fetchone()[0] == 0
    with tenant_context(conn, role="anon"), refused("42501"):
        conn.execute(f"select count(*) from {table}")


def test_dropping_a_dataset_drops_its_table_and_lineage(conn: Conn, tenant: str) -> None:
    customers(conn)
    dataset = build(conn, "ds", spine(conn, ("c1", 1)), ["customers:amount"])
    assert datasets.drop_dataset(conn, dataset) is True
    assert written(conn, tenant) == {"datasets": 0, "tables": 0, "lineage": 0, "events": 2}
    assert datasets.drop_dataset(conn, dataset) is False


def test_deleting_a_tenant_drops_its_dataset_tables(conn: Conn, tenant: str) -> None:
    customers(conn)
    dataset = build(conn, "ds", spine(conn, ("c1", 1)), ["customers:amount"])
    table = conn.execute("select table_name from ml.datasets where id = %s", (dataset,)).fetchone()[0]
    conn.execute("delete from ml.tenants where id = %s", (tenant,))
    assert conn.execute("select to_regclass(%s)", (table,)).fetchone()[0] is None


# -- Python ----------------------------------------------------------------------------------------


def test_training_set_returns_a_typed_dataframe_in_row_order(conn: Conn, tenant: str) -> None:
    customers(conn, visits="int", vip="bool", tier="category", seen="timestamp")
    ingest(conn, "customers", [{"customer_id": "c1", "event_time": at(0), "amount": 1.5, "visits": 2, "vip": True,
                                "tier": "", "seen": at(-1)}])
    frame = datasets.training_set(conn, "ds", spine(conn, ("c2", 1), ("c1", 1), label=[0, 1]),
                                  ["customers:amount", "customers:visits", "customers:vip", "customers:tier", "customers:seen"],
                                  label="label")
    assert {c: str(t) for c, t in frame.dtypes.items()} == {
        "customer_id": "object", "event_time": "datetime64[us, UTC]", "label": "Int64", "amount": "float64",
        "visits": "Int64", "vip": "boolean", "tier": "object", "seen": "datetime64[us, UTC]"}
    assert frame["customer_id"].tolist() == ["c1", "c2"]
    assert frame.iloc[0]["tier"] == "" and frame.iloc[1]["tier"] is None  # an empty string is not a null
    assert frame.iloc[0]["seen"] == pd.Timestamp(at(-1)) and pd.isna(frame.iloc[1]["visits"])
    assert frame.attrs["dataset"].name == "ds"


def test_the_spine_may_be_a_dataframe(conn: Conn, tenant: str) -> None:
    customers(conn)
    ingest(conn, "customers", [{"customer_id": "c1", "event_time": at(0), "amount": 1.0}])
    spine_frame = pd.DataFrame({"customer_id": ["c1", "c2", "c1"], "event_time": pd.to_datetime([at(1), at(1), at(-1)], utc=True),
                                "label": [True, False, None]})
    frame = datasets.training_set(conn, "ds", spine_frame, ["customers:amount"], label="label")
    assert normalized(frame, ["customer_id", "event_time", "label", "amount"]) == [
        ("c1", at(-1), None, None), ("c1", at(1), True, 1.0), ("c2", at(1), False, None)]
    assert conn.execute("select count(*) from pg_class where relname like '_pgmlops_spine%'").fetchone()[0] == 0


def test_load_dataset_by_id_by_name_and_by_name_at_version(conn: Conn, tenant: str) -> None:
    customers(conn)
    first = datasets.create_training_set(conn, "ds", spine(conn, ("c1", 1)), ["customers:amount"])
    datasets.create_training_set(conn, "ds", spine(conn, ("c1", 1), ("c1", 2)), ["customers:amount"])
    assert len(datasets.load_dataset(conn, first)) == 1
    assert len(datasets.load_dataset(conn, str(first))) == 1
    assert len(datasets.load_dataset(conn, "ds")) == 2
    assert len(datasets.load_dataset(conn, "ds@1")) == 1
    with pytest.raises(NotFound):
        datasets.load_dataset(conn, "ds@3")


def test_vectors_load_as_numpy_arrays(conn: Conn, tenant: str) -> None:
    create_group(conn, "emb", {"v": {"dtype": "vector(2)"}})
    ingest(conn, "emb", [{"customer_id": "c1", "event_time": at(0), "v": [0.25, -1]}])
    frame = datasets.training_set(conn, "ds", spine(conn, ("c1", 1), ("c2", 1)), ["emb:v"])
    assert frame["v"][0].tolist() == [0.25, -1.0] and frame["v"][1] is None


# -- errors: each with its SQLSTATE, and nothing written ---------------------------------------------


@pytest.mark.parametrize(("name", "spine_sql", "features", "label", "sqlstate", "says"), [
    ("Bad-Name", "s", ["customers:amount"], None, "22023", r"^name: 'Bad-Name' must be lowercase"),
    ("x" * 49, "s", ["customers:amount"], None, "22023", r"^name: .*1 to 48"),
    ("ds", "   ", ["customers:amount"], None, "22023", r"^spine: must be a table name or a query"),
    ("ds", "s", [], None, "22023", r"^features: must name at least one feature"),
    ("ds", "s", ["customers"], None, "22023", r"^features\[1\]: 'customers' is not a feature reference"),
    ("ds", "s", ["customers:nope"], None, "42703", r"^features\[1\]: feature group customers version 1 has no feature 'nope'"),
    ("ds", "s", ["nogroup:amount"], None, "P0002", r"^feature group 'nogroup' does not exist"),
    ("ds", "no_such_table", ["customers:amount"], None, "42P01", r"^spine: 'no_such_table' is neither"),
    ("ds", "select 1 from no_such_table", ["customers:amount"], None, "42P01", r'relation "no_such_table" does not exist'),
    ("ds", "select 1/0 as customer_id, now() as event_time", ["customers:amount"], None, "22012", r"division by zero"),
    ("ds", "select 'c1' as customer, now() as event_time", ["customers:amount"], None, "42703",
     r"^spine: missing column customer_id \(the join key of feature group customers"),
    ("ds", "select 'c1' as customer_id, now() as ts", ["customers:amount"], None, "42703", r"^spine: missing column event_time"),
    ("ds", "select 'c1' as customer_id, 5 as event_time", ["customers:amount"], None, "42804", r"^spine: column event_time must be"),
    ("ds", "select 'c1' as customer_id, now() as event_time", ["customers:amount"], "y", "42703",
     r"^label: the spine has no column 'y'"),
    ("ds", "select 'c1' as customer_id, now() as event_time, '{}'::jsonb as y", ["customers:amount"], "y", "42804",
     r"^label: column y must be boolean, a number"),
    ("ds", "select 'c1' as customer_id, null::timestamptz as event_time", ["customers:amount"], None, "22004",
     r"^spine: event_time is NULL in 1 of 1 rows"),
    ("ds", "select 'c1' as customer_id, now() as event_time where false", ["customers:amount"], None, "22023",
     r"^spine: returned no rows"),
])
def test_a_bad_request_is_refused_with_its_sqlstate_and_writes_nothing(conn: Conn, tenant: str, name: str, spine_sql: str,
                                                                      features: list[str], label: str | None, sqlstate: str,
                                                                      says: str) -> None:
    customers(conn)
    if spine_sql == "s":
        spine_sql = spine(conn, ("c1", 1))
    with refused(sqlstate, says):
        build(conn, name, spine_sql, features, label)
    assert written(conn, tenant) == {"datasets": 0, "tables": 0, "lineage": 0, "events": 0}


def test_python_errors_are_pgmlops_errors(conn: Conn, tenant: str) -> None:
    customers(conn)
    with pytest.raises(InvalidInput, match="name:"):
        datasets.create_training_set(conn, "Bad", "x", ["customers:amount"])
    with pytest.raises(NotFound):
        datasets.create_training_set(conn, "ds", spine(conn, ("c1", 1)), ["nogroup:amount"])


# -- rights: the spine runs as the caller ------------------------------------------------------------


def test_a_viewer_cannot_build_a_training_set(conn: Conn, tenant: str) -> None:
    customers(conn)
    viewer = member(conn, tenant, "viewer")
    with tenant_context(conn, user=viewer), pytest.raises(AccessDenied):
        datasets.create_training_set(conn, "ds", f"select 'c1' as customer_id, '{iso(at(1))}'::timestamptz as event_time",
                                     ["customers:amount"])


def test_a_member_builds_a_training_set_as_authenticated(conn: Conn, tenant: str) -> None:
    customers(conn)
    ingest(conn, "customers", [{"customer_id": "c1", "event_time": at(0), "amount": 1.0}])
    engineer = member(conn, tenant, "ml_engineer")
    with tenant_context(conn, tenant, user=engineer):
        dataset = build(conn, "ds", f"select 'c1' as customer_id, '{iso(at(1))}'::timestamptz as event_time", ["customers:amount"])
        assert rows(conn, dataset) == [{"customer_id": "c1", "event_time": at(1), "amount": 1.0}]


def test_a_spine_naming_another_tenants_dataset_reads_nothing_of_it(conn: Conn, tenant: str) -> None:
    customers(conn)
    secret = build(conn, "secret", spine(conn, ("c1", 1), ("c2", 2)), ["customers:amount"])
    table = conn.execute("select table_name from ml.datasets where id = %s", (secret,)).fetchone()[0]
    other = make_tenant(conn)
    intruder = member(conn, other, "owner")
    act_for(conn, other)
    customers(conn)
    with tenant_context(conn, other, user=intruder), refused("22023", r"^spine: returned no rows"):
        build(conn, "stolen", table, ["customers:amount"])
    assert written(conn, other) == {"datasets": 0, "tables": 0, "lineage": 0, "events": 0}


@pytest.mark.parametrize("source", ["ml_private.settings", "ml_private.tenant_tables",
                                    "select key as customer_id, updated_at as event_time from ml_private.settings",
                                    "select 'c1' as customer_id, now() as event_time from ml_private.tenant_tables"])
def test_a_spine_reading_a_private_table_is_refused(conn: Conn, tenant: str, source: str) -> None:
    customers(conn)
    engineer = member(conn, tenant, "ml_engineer")
    with tenant_context(conn, tenant, user=engineer), refused("42501", "permission denied"):
        build(conn, "ds", source, ["customers:amount"])


def test_the_join_refuses_a_spine_that_is_not_a_temp_table_of_the_session(conn: Conn, tenant: str) -> None:
    customers(conn)
    conn.execute("create table if not exists public.not_temp (spine_row bigint, customer_id text, event_time timestamptz)")
    with refused("22023", r"^spine: .*not_temp is not a temporary table of this session"):
        conn.execute("select ml_private.materialize_training_set('ds', 'x', array['customers:amount'], null, '[]', 'public.not_temp')")
