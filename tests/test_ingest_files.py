"""Bulk ingestion from DataFrames, CSV and Parquet files (pgmlops.features.ingest: COPY into a
session temp table, then ml.ingest_staged), on the real server and on native partitions.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pytest
from psycopg.types.json import Jsonb

from pgmlops import features
from pgmlops.errors import InvalidInput

from .conftest import act_for, make_tenant

Conn = psycopg.Connection[Any]

SCHEMA = [
    {"name": "amount", "dtype": "float", "min": 0},
    {"name": "items", "dtype": "int"},
    {"name": "active", "dtype": "bool"},
    {"name": "plan", "dtype": "category", "allowed": ["free", "pro"]},
    {"name": "seen", "dtype": "timestamp"},
    {"name": "emb", "dtype": "vector(2)"},
]

# What every source below must store: event times and timestamps in UTC, ints as integers,
# vectors as arrays, nulls absent.
EXPECTED = [
    ("a", "2026-01-01T08:00:00Z", {"amount": 1.5, "items": 3, "active": True, "plan": "free",
                                   "seen": "2025-12-31T23:00:00+00:00", "emb": [1.0, 2.0]}),
    ("b", "2026-02-15T00:00:00Z", {"active": False, "plan": "pro"}),
    ("c", "2026-04-01T04:30:00Z", {"amount": 0.25, "items": -2, "seen": "2026-03-01T12:00:00+00:00", "emb": [0.5, -1.0]}),
]


def data() -> pd.DataFrame:
    """The small data set: times in Berlin and New York, nullable ints and bools, a list column."""
    return pd.DataFrame({
        "card": ["a", "b", "c"],
        "event_time": pd.to_datetime(["2026-01-01T10:00:00+02:00", "2026-02-15T00:00:00Z", "2026-03-31T23:30:00-05:00"],
                                     utc=True).tz_convert("Europe/Berlin"),
        "amount": [1.5, None, 0.25],
        "items": pd.array([3, None, -2], dtype="Int64"),
        "active": pd.array([True, False, None], dtype="boolean"),
        "plan": ["free", "pro", None],
        "seen": pd.to_datetime(["2025-12-31T18:00:00-05:00", None, "2026-03-01T12:00:00Z"], utc=True).tz_convert("America/New_York"),
        "emb": [[1.0, 2.0], None, [0.5, -1.0]],
    })


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def sources(tmp_path: Path) -> dict[str, Any]:
    """The same data as a DataFrame, a CSV file (written by pandas) and a Parquet file (by pyarrow)."""
    frame = data()
    frame.to_csv(tmp_path / "data.csv", index=False)
    frame.to_parquet(tmp_path / "data.parquet", index=False)
    return {"dataframe": frame, "csv": tmp_path / "data.csv", "parquet": tmp_path / "data.parquet"}


def offline_table(conn: Conn, group: str) -> str:
    """The offline table of the group version ``group`` names (docs/features.md)."""
    row = conn.execute("select ml.feature_group(%s) ->> 'offline_table'", (group,)).fetchone()
    assert row is not None
    return str(row[0])


def offline(conn: Conn, group: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(entity key, event time in UTC ISO, the non-null features as JSON) of the version's offline
    rows; vectors (pgvector's text) as JSON arrays."""
    table = offline_table(conn, group)
    conn.execute("set timezone = 'UTC'")
    features = conn.execute(
        """select string_agg(format('%%L, %%s', attname, case when atttypid::regtype::text like '%%vector'
                                                             then format('%%I::text::jsonb', attname)
                                                             else format('to_jsonb(%%I)', attname) end), ', ' order by attnum)
           from pg_attribute where attrelid = %s::regclass and attnum > 0 and not attisdropped
             and attname not in ('tenant_id', 'entity_key', 'event_time', 'ingested_at', 'ingestion_id')""",
        (table,)).fetchone()
    assert features is not None
    rows = conn.execute(
        f"""select entity_key, to_char(event_time at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                   jsonb_strip_nulls(jsonb_build_object({features[0]}))
            from {table} order by entity_key, event_time""").fetchall()
    return [(k, t, v) for k, t, v in rows]


def create(conn: Conn, name: str = "g", schema: list[dict[str, Any]] | None = None) -> str:
    conn.execute("select ml.create_feature_group(%s, 'card', %s)", (name, Jsonb(schema or SCHEMA)))
    return name


def stored(conn: Conn, tenant: str) -> tuple[int, ...]:
    """Rows of ``tenant`` in its versions' offline and online tables (summed), ingestions, quarantine."""
    values = online = 0
    for offline_name, online_name in conn.execute(
            "select offline_table::text, online_table::text from ml.feature_groups where tenant_id = %s", (tenant,)).fetchall():
        values += conn.execute(f"select count(*) from {offline_name}").fetchone()[0]  # type: ignore[index]
        online += conn.execute(f"select count(*) from {online_name}").fetchone()[0]  # type: ignore[index]
    row = conn.execute("""select (select count(*) from ml.feature_ingestions where tenant_id = %(t)s),
                                 (select count(*) from ml.feature_quarantine where tenant_id = %(t)s)""",
                       {"t": tenant}).fetchone()
    assert row is not None
    return (values, online, *row)


# -- one data set, three sources --------------------------------------------------------------------


@pytest.mark.parametrize("source", ["dataframe", "csv", "parquet"])
def test_each_source_stores_the_data_set_as_the_schema_types_it(conn: Conn, tenant: str, tmp_path: Path, source: str) -> None:
    create(conn)
    result = features.ingest(conn, "g", sources(tmp_path)[source])
    assert (result.rows, result.written, result.quarantined) == (3, 3, 0)
    assert offline(conn, "g") == EXPECTED


def test_a_dataframe_a_csv_and_a_parquet_file_store_identical_values(conn: Conn, tenant: str, tmp_path: Path) -> None:
    for name, source in sources(tmp_path).items():
        create(conn, name)
        features.ingest(conn, name, source)
    stored_as = {name: conn.execute(
        f"""select entity_key, event_time, to_jsonb("Row") - array['tenant_id', 'ingested_at', 'ingestion_id']
            from {offline_table(conn, name)} "Row" order by entity_key""").fetchall()
        for name in ("dataframe", "csv", "parquet")}
    assert stored_as["dataframe"] == stored_as["csv"] == stored_as["parquet"]


@pytest.mark.parametrize("source", ["dataframe", "csv", "parquet"])
def test_ints_are_stored_as_bigints(conn: Conn, tenant: str, tmp_path: Path, source: str) -> None:
    create(conn)
    features.ingest(conn, "g", sources(tmp_path)[source])
    texts = conn.execute(f"""select items::text, pg_typeof(items)::text from {offline_table(conn, "g")}
                             where items is not null order by entity_key""").fetchall()
    assert texts == [("3", "bigint"), ("-2", "bigint")]


def test_the_ingestion_records_the_file_as_its_source(conn: Conn, tenant: str, tmp_path: Path) -> None:
    create(conn)
    path = sources(tmp_path)["csv"]
    features.ingest(conn, "g", path)
    assert conn.execute("select source from ml.feature_ingestions where tenant_id = %s", (tenant,)).fetchone() == (str(path),)


def test_progress_reports_the_rows_sent(conn: Conn, tenant: str, tmp_path: Path) -> None:
    create(conn)
    seen: list[int] = []
    features.ingest(conn, "g", data(), progress=seen.append)
    assert seen[-1] == 3


def test_no_staging_table_is_left_behind(conn: Conn, tenant: str, tmp_path: Path) -> None:
    create(conn)
    features.ingest(conn, "g", sources(tmp_path)["csv"])
    with pytest.raises(InvalidInput):
        features.ingest(conn, "g", write(tmp_path, "bad.csv", "card,event_time,items\na,2026-01-01,x\n"))
    left = conn.execute("select count(*) from pg_class where relnamespace = pg_my_temp_schema()").fetchone()
    assert left == (0,)


# -- errors and quarantine from files ---------------------------------------------------------------


def test_a_bad_csv_value_in_reject_mode_names_the_data_row_and_writes_nothing(conn: Conn, tenant: str, tmp_path: Path) -> None:
    create(conn)
    path = write(tmp_path, "bad.csv", "card,event_time,items\na,2026-01-01,1\nb,2026-01-01,2\nc,2026-01-01,three\n")
    with pytest.raises(InvalidInput) as info:
        features.ingest(conn, "g", path)
    assert info.value.sqlstate == "22023"
    assert str(info.value.args[0]) == "row 3 (card 'c', event_time '2026-01-01'): items: must be of type int, got \"three\""
    assert stored(conn, tenant) == (0, 0, 0, 0)


def test_quarantine_mode_from_csv_keeps_the_bad_rows_as_text(conn: Conn, tenant: str, tmp_path: Path) -> None:
    create(conn)
    path = write(tmp_path, "mixed.csv",
                 "card,event_time,amount,plan\n"
                 "a,2026-01-01,1.5,free\n"
                 "b,2026-01-01,-1,gold\n"
                 "c,2026-01-01,2,pro\n"
                 "a,2026-01-01,2.5,pro\n")
    result = features.ingest(conn, "g", path, on_error="quarantine")
    assert (result.rows, result.written, result.quarantined, result.superseded) == (4, 2, 1, 1)
    assert conn.execute("select row_number, entity_key, event_time, values, errors from ml.feature_quarantine"
                        " where tenant_id = %s", (tenant,)).fetchall() == [
        (2, "b", "2026-01-01", {"amount": "-1", "plan": "gold"},
         ["amount: must be >= 0, got -1", 'plan: must be one of ["free", "pro"], got "gold"'])]
    assert offline(conn, "g") == [("a", "2026-01-01T00:00:00Z", {"amount": 2.5, "plan": "pro"}),
                                  ("c", "2026-01-01T00:00:00Z", {"amount": 2.0, "plan": "pro"})]


def test_a_column_that_is_not_a_feature_is_refused_by_name(conn: Conn, tenant: str, tmp_path: Path) -> None:
    create(conn)
    path = write(tmp_path, "extra.csv", "card,event_time,items,colour\na,2026-01-01,1,red\n")
    with pytest.raises(InvalidInput) as info:
        features.ingest(conn, "g", path)
    assert info.value.sqlstate == "22023"
    assert str(info.value.args[0]) == (
        "staging: column colour is not a feature of group g version 1 (it has: amount, items, active, plan, seen, emb)")
    assert stored(conn, tenant) == (0, 0, 0, 0)


def test_a_file_without_the_event_time_column_is_refused(conn: Conn, tenant: str, tmp_path: Path) -> None:
    create(conn)
    with pytest.raises(InvalidInput) as info:
        features.ingest(conn, "g", write(tmp_path, "no_time.csv", "card,items\na,1\n"))
    assert str(info.value.args[0]).startswith("staging: the event time column event_time is missing")


def test_a_file_without_the_join_key_column_is_refused(conn: Conn, tenant: str, tmp_path: Path) -> None:
    create(conn)
    with pytest.raises(InvalidInput) as info:
        features.ingest(conn, "g", write(tmp_path, "no_key.csv", "event_time,items\n2026-01-01,1\n"))
    assert str(info.value.args[0]).startswith("staging: the join key column card is missing")


def test_a_csv_file_saved_with_a_byte_order_mark_is_read(conn: Conn, tenant: str, tmp_path: Path) -> None:
    """Excel's "CSV UTF-8" starts with a BOM; it is not part of the first column's name."""
    create(conn)
    path = tmp_path / "excel.csv"
    path.write_text("card,event_time,items\na,2026-01-01,1\n", encoding="utf-8-sig")
    assert features.ingest(conn, "g", path).written == 1


def test_a_source_that_is_not_csv_or_parquet_is_refused(conn: Conn, tenant: str, tmp_path: Path) -> None:
    create(conn)
    with pytest.raises(ValueError, match=r"must be a \.csv or \.parquet file"):
        features.ingest(conn, "g", write(tmp_path, "data.json", "[]"))


# -- dirty CSV text ---------------------------------------------------------------------------------


DIRTY = {
    "int with spaces": ("int", " 3 ", 3),
    "int written as a float": ("int", "3.0", 3),
    "int with a plus sign": ("int", "+3", 3),
    "float with spaces": ("float", " 2.5 ", 2.5),
    "float in exponent form": ("float", "1e3", 1000),
    "bool True": ("bool", "True", True),
    "bool no": ("bool", "no", False),
    "bool 0": ("bool", "0", False),
    "naive timestamp read as UTC": ("timestamp", "2026-01-01 10:00:00", "2026-01-01T10:00:00+00:00"),
    "timestamp with an offset": ("timestamp", "2026-01-01T12:00:00+02:00", "2026-01-01T10:00:00+00:00"),
    "vector with spaces": ("vector(2)", " [1, 2] ", [1, 2]),
    "text kept as written": ("text", " spaced ", " spaced "),
}


@pytest.mark.parametrize("dtype, text, value", DIRTY.values(), ids=DIRTY.keys())
def test_dirty_csv_text_parses_as_documented(conn: Conn, tenant: str, tmp_path: Path, dtype: str, text: str, value: Any) -> None:
    create(conn, schema=[{"name": "x", "dtype": dtype}])
    path = write(tmp_path, "dirty.csv", f'card,event_time,x\na,2026-01-01,"{text}"\n')
    features.ingest(conn, "g", path)
    assert offline(conn, "g") == [("a", "2026-01-01T00:00:00Z", {"x": value})]


def test_a_naive_event_time_is_read_as_utc(conn: Conn, tenant: str, tmp_path: Path) -> None:
    create(conn)
    conn.execute("set timezone = 'America/New_York'")  # the session's zone plays no part
    try:
        features.ingest(conn, "g", write(tmp_path, "naive.csv", "card,event_time,items\na,2026-01-01 10:00,1\n"))
    finally:
        conn.execute("reset timezone")
    assert offline(conn, "g") == [("a", "2026-01-01T10:00:00Z", {"items": 1})]


def test_an_empty_csv_field_is_null_and_absent_from_the_values(conn: Conn, tenant: str, tmp_path: Path) -> None:
    create(conn)
    features.ingest(conn, "g", write(tmp_path, "empty.csv", "card,event_time,items,amount,plan\na,2026-01-01,,,\n"))
    assert offline(conn, "g") == [("a", "2026-01-01T00:00:00Z", {})]


# Bulk fields are parsed with plain casts while the batch is clean, and with guarded parsers once any
# field fails a cast. Both must say the same about every text, on every server version.
SAME_VERDICT = {
    "bool on": ("bool", "on"),
    "bool off": ("bool", "off"),
    "bool prefix tr": ("bool", "tr"),
    "float NaN": ("float", "NaN"),
    "float -Infinity": ("float", "-Infinity"),
    "float in hex": ("float", "0x1p3"),
    "float of blanks": ("float", "  "),
    "timestamp of blanks": ("timestamp", "  "),
    "largest bigint": ("int", "9223372036854775807"),
    "hexadecimal int": ("int", "0x10"),
    "int with underscores": ("int", "1_000"),
    "int with spaces": ("int", " 7 "),
}


@pytest.mark.parametrize("dtype, text", SAME_VERDICT.values(), ids=SAME_VERDICT.keys())
def test_a_bulk_field_gets_the_same_verdict_whatever_else_is_in_the_batch(any_conn: Conn, dtype: str, text: str) -> None:
    """The text alone, and the text next to a row whose int is "3.0" (which no plain cast reads), agree."""
    conn = any_conn
    create(conn, schema=[{"name": "x", "dtype": dtype}, {"name": "n", "dtype": "int"}])
    alone = [{"card": "k1", "event_time": "2026-01-01", "x": text, "n": "1"}]
    with_dirty_neighbour = [*alone, {"card": "k2", "event_time": "2026-01-01", "x": None, "n": "3.0"}]
    verdicts = [features.ingest(conn, "g", pd.DataFrame(rows, dtype=object), on_error="quarantine").quarantined
                for rows in (alone, with_dirty_neighbour)]
    assert verdicts[0] == verdicts[1], f"{text!r} quarantined {verdicts[0]} time(s) alone, {verdicts[1]} beside a dirty row"


# -- native partitioning (the embedded PostgreSQL 18 has no TimescaleDB) ------------------------------


@pytest.fixture
def any_conn(any_db_url: str) -> Iterator[Conn]:
    with psycopg.connect(any_db_url, autocommit=True) as c:
        act_for(c, make_tenant(c))
        yield c


def test_a_file_spanning_several_months_round_trips_into_time_partitions(any_conn: Conn, tmp_path: Path) -> None:
    conn = any_conn
    create(conn)
    months = pd.date_range("2024-01-15", periods=6, freq="MS", tz="UTC") + pd.Timedelta(days=14)
    frame = pd.DataFrame({"card": [f"k{i}" for i in range(6)], "event_time": months, "items": range(6)})
    frame.to_parquet(tmp_path / "months.parquet", index=False)
    frame.to_csv(tmp_path / "months.csv", index=False)
    create(conn, "h")

    assert features.ingest(conn, "g", tmp_path / "months.parquet").written == 6
    assert features.ingest(conn, "h", tmp_path / "months.csv").written == 6
    assert offline(conn, "g") == offline(conn, "h") == [
        (f"k{i}", t.strftime("%Y-%m-%dT%H:%M:%SZ"), {"items": i}) for i, t in enumerate(months)]

    for group in ("g", "h"):
        table = offline_table(conn, group)
        row = conn.execute("select mode from ml_private.time_partitioned_tables where table_name = %s", (table,)).fetchone()
        assert row is not None
        # Six months in six partitions (or chunks), none of them the catch-all DEFAULT partition.
        partitions = conn.execute(f"""select count(distinct tableoid), count(distinct ml_private.partition_bounds(%s, event_time)),
                                             count(*) filter (where right(tableoid::regclass::text, 8) = '_default')
                                      from {table}""", (table,)).fetchone()
        assert partitions is not None and partitions[0] == partitions[1] >= 5 and partitions[2] == 0
        if row[0] == "hypertable":
            assert conn.execute("select to_regclass(%s)", (f"{table}_default",)).fetchone() == (None,)
