"""Feature groups and validated ingestion: ml.create_feature_group, ml.ingest, ml.ingest_staged,
the online store and ml.get_online_features, on the real server.

Every test gets a tenant of its own, so group names repeat freely and counts are per tenant.
Rules are checked on both write paths: JSON rows (``ml.ingest``) and bulk rows staged with COPY
(``ml.ingest_staged`` through ``pgmlops.features.ingest``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import psycopg
import pytest
from psycopg.types.json import Jsonb

from pgmlops import features
from pgmlops.db import tenant_context
from pgmlops.errors import DatabaseError, InvalidState

from .conftest import act_for, make_tenant

Conn = psycopg.Connection[Any]

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-02T00:00:00Z"
T2 = "2026-01-03T00:00:00Z"
# What an ingestion writes: every group version's offline and online tables (docs/features.md),
# the ingestion records and the quarantine.
STORE = ("offline", "online", "feature_ingestions", "feature_quarantine")
# The columns of a version's tables that are not features.
NOT_FEATURES = ("tenant_id", "entity_key", "event_time", "ingested_at", "ingestion_id")


# -- helpers ---------------------------------------------------------------------------------------


def create(conn: Conn, schema: Any, name: str = "g", *, ttl: str | None = None, status: str = "active") -> str:
    """Create feature group ``name`` about entity ``card`` (join key ``card``); returns its id."""
    row = conn.execute("select ml.create_feature_group(%s, 'card', %s, ttl => %s::interval, status => %s)",
                       (name, Jsonb(schema), ttl, status)).fetchone()
    assert row is not None
    return str(row[0])


def ingest(conn: Conn, rows: list[dict[str, Any]], group: str = "g", on_error: str = "reject") -> dict[str, Any]:
    """ml.ingest (the JSON path); returns its counts."""
    row = conn.execute("select ml.ingest(%s, %s, %s)", (group, Jsonb(rows), on_error)).fetchone()
    assert row is not None
    return dict(row[0])


def ingest_bulk(conn: Conn, rows: list[dict[str, Any]], group: str = "g", on_error: str = "reject") -> dict[str, Any]:
    """pgmlops.features.ingest of a DataFrame of text (the COPY + ml.ingest_staged path); returns its counts."""
    result = features.ingest(conn, group, pd.DataFrame(rows, dtype=object), on_error=on_error)
    return {name: getattr(result, name) for name in result.__dataclass_fields__}


PATHS = {"json": ingest, "bulk": ingest_bulk}


def stored(conn: Conn, tenant: str) -> dict[str, int]:
    """Rows ``tenant`` has in the feature store: in its versions' offline and online tables
    (summed), its ingestion records and its quarantine."""
    counts = dict.fromkeys(STORE, 0)
    for offline_table, online_table in conn.execute(
            "select offline_table::text, online_table::text from ml.feature_groups where tenant_id = %s", (tenant,)).fetchall():
        for name, table in (("offline", offline_table), ("online", online_table)):
            row = conn.execute(f"select count(*) from {table} where tenant_id = %s", (tenant,)).fetchone()
            assert row is not None
            counts[name] += int(row[0])
    for table in STORE[2:]:
        row = conn.execute(f"select count(*) from ml.{table} where tenant_id = %s", (tenant,)).fetchone()
        assert row is not None
        counts[table] = int(row[0])
    return counts


def tables(conn: Conn, group: str = "g") -> tuple[str, str]:
    """(offline table, online table) of the group version ``group`` names."""
    row = conn.execute("select ml.feature_group(%s) ->> 'offline_table', ml.feature_group(%s) ->> 'online_table'",
                       (group, group)).fetchone()
    assert row is not None
    return row[0], row[1]


def offline(conn: Conn, group: str = "g") -> list[tuple[str, str, dict[str, Any]]]:
    """(entity key, event time in UTC ISO, the non-null features as JSON) of the rows in the group
    version's offline table, in key/time order."""
    table = tables(conn, group)[0]
    conn.execute("set timezone = 'UTC'")
    rows = conn.execute(
        f"""select entity_key, to_char(event_time at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                   jsonb_strip_nulls(to_jsonb("Row") - %s::text[])
            from {table} "Row" order by entity_key, event_time""", (list(NOT_FEATURES),)).fetchall()  # no feature is named "Row"
    return [(k, t, v) for k, t, v in rows]


def online(conn: Conn, refs: list[str], keys: list[str]) -> list[tuple[str, dict[str, Any]]]:
    rows = conn.execute("select entity_key, values from ml.get_online_features(%s, %s)", (refs, keys)).fetchall()
    return [(k, v) for k, v in rows]


def message(exc: BaseException) -> str:
    if isinstance(exc, psycopg.Error):
        return exc.diag.message_primary or ""
    return str(exc.args[0])


def detail(exc: BaseException) -> str:
    if isinstance(exc, psycopg.Error):
        return exc.diag.message_detail or ""
    assert isinstance(exc, DatabaseError)
    return exc.detail or ""


@contextmanager
def refused(sqlstate: str, match: str | None = None) -> Iterator[pytest.ExceptionInfo[BaseException]]:
    """Expect an error with ``sqlstate`` (from psycopg or pgmlops) whose message matches ``match``."""
    with pytest.raises((psycopg.Error, DatabaseError)) as info:
        yield info
    assert getattr(info.value, "sqlstate", None) == sqlstate, f"{info.value.sqlstate}: {info.value}"  # type: ignore[attr-defined]
    if match is not None:
        assert re.search(match, message(info.value)), message(info.value)


def member(conn: Conn, tenant: str, role: str) -> str:
    user = str(uuid.uuid4())
    conn.execute("select ml.add_tenant_member(%s, %s, %s)", (tenant, user, role))
    return user


# -- creating feature groups -----------------------------------------------------------------------


def test_create_feature_group_returns_the_new_versions_id(conn: Conn, tenant: str) -> None:
    gid = create(conn, {"x": {"dtype": "int"}})
    row = conn.execute("select name, version from ml.feature_groups where id = %s", (gid,)).fetchone()
    assert row == ("g", 1)


def test_creating_an_existing_name_makes_its_next_version(conn: Conn, tenant: str) -> None:
    first = create(conn, {"x": {"dtype": "int"}})
    second = create(conn, {"x": {"dtype": "int"}, "y": {"dtype": "text"}})
    versions = conn.execute("select id::text, version from ml.feature_groups where tenant_id = %s order by version",
                            (tenant,)).fetchall()
    assert versions == [(first, 1), (second, 2)]


def test_an_older_version_stays_readable_as_name_at_version(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int"}})
    create(conn, {"y": {"dtype": "text"}})
    old = conn.execute("select ml.feature_group('g@1')").fetchone()
    assert old is not None
    assert (old[0]["version"], [f["name"] for f in old[0]["features"]]) == (1, ["x"])


def test_feature_group_by_name_shows_the_current_version(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int"}})
    create(conn, {"y": {"dtype": "text"}})
    current = conn.execute("select ml.feature_group('g')").fetchone()
    assert current is not None
    assert current[0]["version"] == 2
    assert current[0]["versions"] == [{"version": 1, "status": "active"}, {"version": 2, "status": "active"}]


def test_the_schema_is_stored_normalized(conn: Conn, tenant: str) -> None:
    create(conn, [{"name": "v", "dtype": " Vector(3) "}, {"name": "n", "dtype": "int", "nullable": False, "min": 0}])
    group = conn.execute("select ml.feature_group('g')").fetchone()
    assert group is not None
    assert group[0]["features"] == [
        {"name": "v", "dtype": "vector", "dim": 3, "nullable": True},
        {"name": "n", "dtype": "int", "nullable": False, "min": 0},
    ]


BAD_SCHEMAS = {
    "unknown dtype": ({"x": {"dtype": "money"}},
                      'schema.x.dtype: must be one of int, float, bool, text, category, timestamp, vector(n); got "money"'),
    "missing dtype": ({"x": {"nullable": True}},
                      "schema.x.dtype: must be one of int, float, bool, text, category, timestamp, vector(n); got null"),
    "unknown rule key": ({"x": {"dtype": "int", "maximum": 3}},
                         "schema.x.maximum: unknown rule (known: dtype, nullable, min, max, allowed, regex, max_length, description)"),
    "min above max": ({"x": {"dtype": "int", "min": 5, "max": 1}}, "schema.x: min (5) is greater than max (1)"),
    "timestamp min above max": ({"x": {"dtype": "timestamp", "min": "2026-01-02", "max": "2026-01-01"}},
                                'schema.x: min ("2026-01-02") is greater than max ("2026-01-01")'),
    "min that is not a number": ({"x": {"dtype": "float", "min": "0"}}, "schema.x.min: must be a number for dtype float"),
    "min that is not a timestamp": ({"x": {"dtype": "timestamp", "min": "2026-02-30"}},
                                    "schema.x.min: must be an ISO timestamp for dtype timestamp"),
    "min on text": ({"x": {"dtype": "text", "min": 1}}, "schema.x.min: applies to int, float and timestamp features, not text"),
    "invalid regex": ({"x": {"dtype": "text", "regex": "(ab"}}, "schema.x.regex: not a valid regular expression: "),
    "regex on int": ({"x": {"dtype": "int", "regex": "^1$"}}, "schema.x.regex: applies to text and category features, not int"),
    "empty allowed": ({"x": {"dtype": "category", "allowed": []}}, "schema.x.allowed: must be a non-empty array"),
    "allowed of the wrong type": ({"x": {"dtype": "int", "allowed": ["1"]}}, "schema.x.allowed: every value must be a number"),
    "allowed on bool": ({"x": {"dtype": "bool", "allowed": [True]}},
                        "schema.x.allowed: applies to int, float, text and category features, not bool"),
    "max_length zero": ({"x": {"dtype": "text", "max_length": 0}}, "schema.x.max_length: must be a positive integer"),
    "max_length fractional": ({"x": {"dtype": "text", "max_length": 2.5}}, "schema.x.max_length: must be a positive integer"),
    "max_length beyond int": ({"x": {"dtype": "text", "max_length": 3000000000}}, "schema.x.max_length: "),
    "nullable not a boolean": ({"x": {"dtype": "int", "nullable": "yes"}}, "schema.x.nullable: must be true or false"),
    "vector(0)": ({"x": {"dtype": "vector(0)"}}, "schema.x.dtype: vector dimension must be 1 to 16000, got 0"),
    "vector too long": ({"x": {"dtype": "vector(16001)"}}, "schema.x.dtype: vector dimension must be 1 to 16000, got 16001"),
    "vector beyond int": ({"x": {"dtype": "vector(99999999999)"}},
                          "schema.x.dtype: vector dimension must be 1 to 16000, got 99999999999"),
    "feature named as the join key": ({"card": {"dtype": "text"}},
                                      "schema.card: the name 'card' is reserved (join key, event time or a pgmlops column)"),
    "feature named as the event time": ({"event_time": {"dtype": "timestamp"}},
                                        "schema.event_time: the name 'event_time' is reserved (join key, event time or a "
                                        "pgmlops column)"),
    "feature named label": ({"label": {"dtype": "int"}},
                            "schema.label: the name 'label' is reserved (join key, event time or a pgmlops column)"),
    # Columns of the version's typed tables (docs/features.md).
    "feature named ingested_at": ({"ingested_at": {"dtype": "timestamp"}},
                                  "schema.ingested_at: the name 'ingested_at' is reserved (join key, event time or a pgmlops column)"),
    "feature named ingestion_id": ({"ingestion_id": {"dtype": "text"}},
                                   "schema.ingestion_id: the name 'ingestion_id' is reserved "
                                   "(join key, event time or a pgmlops column)"),
    "feature named entity_key": ({"entity_key": {"dtype": "text"}},
                                 "schema.entity_key: the name 'entity_key' is reserved (join key, event time or a pgmlops column)"),
    "feature name with capitals": ({"Amount": {"dtype": "int"}},
                                   "schema: feature name 'Amount' must be lowercase letters, digits and _ "
                                   "(1 to 63, not starting with a digit)"),
    "feature declared twice": ([{"name": "x", "dtype": "int"}, {"name": "x", "dtype": "float"}], "schema.x: declared twice"),
    "spec not an object": ({"x": "int"}, "schema.x: a feature spec must be an object"),
    "empty object": ({}, "schema: must declare at least one feature"),
    "empty array": ([], "schema: must declare at least one feature"),
    "not an object or array": ("int", "schema: must be an object {feature: spec} or an array of specs, got string"),
}


@pytest.mark.parametrize("schema, says", BAD_SCHEMAS.values(), ids=BAD_SCHEMAS.keys())
def test_a_bad_schema_is_refused_naming_the_field_and_the_rule(conn: Conn, tenant: str, schema: Any, says: str) -> None:
    with refused("22023") as info:
        create(conn, schema)
    assert message(info.value).startswith(says)


def test_a_feature_named_event_time_is_refused_even_when_the_time_column_is_another(conn: Conn, tenant: str) -> None:
    """The version's tables have an event_time column of their own, whatever the rows call their time."""
    with refused("22023") as info:
        conn.execute("select ml.create_feature_group('g', 'card', %s, event_time_column => 'ts')",
                     (Jsonb({"event_time": {"dtype": "timestamp"}}),))
    assert message(info.value) == ("schema.event_time: the name 'event_time' is reserved "
                                   "(join key, event time or a pgmlops column)")
    assert conn.execute("select count(*) from ml.feature_groups where tenant_id = %s", (tenant,)).fetchone() == (0,)


@pytest.mark.parametrize("ttl", ["-1 day", "0 seconds"])
def test_a_ttl_that_is_not_positive_is_refused(conn: Conn, tenant: str, ttl: str) -> None:
    with refused("22023", r"^ttl: must be a positive interval or NULL, got "):
        create(conn, {"x": {"dtype": "int"}}, ttl=ttl)


@pytest.mark.parametrize("name", ["Customer", "1st", "a-b", ""])
def test_a_group_name_that_is_not_lowercase_snake_case_is_refused(conn: Conn, tenant: str, name: str) -> None:
    with refused("22023", r"^name: .* must be lowercase letters, digits and _"):
        create(conn, {"x": {"dtype": "int"}}, name=name)


def test_a_viewer_cannot_create_a_group(conn: Conn, tenant: str) -> None:
    viewer = member(conn, tenant, "viewer")
    with refused("42501"), tenant_context(conn, tenant, user=viewer):
        create(conn, {"x": {"dtype": "int"}})
    assert conn.execute("select count(*) from ml.feature_groups where tenant_id = %s", (tenant,)).fetchone() == (0,)


def test_a_failed_creation_writes_nothing(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int"}})

    def written() -> Any:
        return conn.execute("""select (select count(*) from ml.feature_groups where tenant_id = %(t)s),
                                      (select count(*) from ml.events where tenant_id = %(t)s)""", {"t": tenant}).fetchone()

    before = written()
    with refused("22023"):
        create(conn, {"x": {"dtype": "int", "min": 2, "max": 1}})
    assert written() == before
    assert conn.execute("select ml.feature_group('g') -> 'version'").fetchone() == (1,)


# -- status and versions ---------------------------------------------------------------------------


def test_an_archived_version_refuses_ingestion_and_writes_nothing(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int"}})
    conn.execute("select ml.set_feature_group_status('g', 1, 'archived')")
    with refused("55000", r"^feature group g version 1 is archived and refuses writes$"):
        ingest(conn, [{"card": "a", "event_time": T0, "x": 1}], group="g@1")
    assert stored(conn, tenant) == dict.fromkeys(STORE, 0)


@pytest.mark.parametrize("path", PATHS)
def test_an_archived_version_refuses_ingestion_from_python_as_invalid_state(conn: Conn, tenant: str, path: str) -> None:
    create(conn, {"x": {"dtype": "int"}})
    features.set_status(conn, "g", 1, "archived")
    with pytest.raises(InvalidState):
        if path == "json":
            features.ingest_rows(conn, "g@1", [{"card": "a", "event_time": T0, "x": 1}])
        else:
            ingest_bulk(conn, [{"card": "a", "event_time": T0, "x": "1"}], group="g@1")
    assert stored(conn, tenant) == dict.fromkeys(STORE, 0)


def test_an_archived_version_stays_readable(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int"}})
    ingest(conn, [{"card": "a", "event_time": T0, "x": 1}])
    conn.execute("select ml.set_feature_group_status('g', 1, 'archived')")
    assert online(conn, ["g@1:x"], ["a"]) == [("a", {"g@1:x": 1})]


def test_archiving_is_final(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int"}})
    conn.execute("select ml.set_feature_group_status('g', 1, 'archived')")
    with refused("55000", r"^feature group g version 1 is archived; archiving is final$"):
        conn.execute("select ml.set_feature_group_status('g', 1, 'active')")


def test_an_unversioned_reference_names_the_newest_active_version(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int"}})                    # 1 active
    create(conn, {"x": {"dtype": "int"}})                    # 2 active
    create(conn, {"x": {"dtype": "int"}}, status="draft")    # 3 draft
    ingest(conn, [{"card": "a", "event_time": T0, "x": 1}])
    assert conn.execute("select ml.feature_group('g') -> 'version'").fetchone() == (2,)
    assert [version for version in (1, 2, 3) if offline(conn, f"g@{version}")] == [2]


def test_archiving_the_current_version_makes_the_previous_active_one_current(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int"}})
    create(conn, {"x": {"dtype": "int"}})
    conn.execute("select ml.set_feature_group_status('g', 2, 'archived')")
    assert conn.execute("select ml.feature_group('g') -> 'version'").fetchone() == (1,)


def test_without_an_active_version_the_newest_unarchived_one_is_current(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int"}}, status="deprecated")
    create(conn, {"x": {"dtype": "int"}}, status="draft")
    create(conn, {"x": {"dtype": "int"}}, status="archived")
    assert conn.execute("select ml.feature_group('g') -> 'version'").fetchone() == (2,)


# -- validation: one rule at a time, on both paths -------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """A feature spec, a value that keeps it and one that breaks it, as JSON and as text (bulk)."""

    spec: dict[str, Any]
    good_json: Any
    bad_json: Any
    json_says: str
    good_text: str | None = None
    bad_text: str | None = None
    bulk_says: str | None = None


RULES = {
    "int dtype": Rule({"dtype": "int"}, 3, 1.5, "x: must be of type int, got 1.5",
                      "3", "1.5", 'x: must be of type int, got "1.5"'),
    "int dtype, a string": Rule({"dtype": "int"}, 3, "3", 'x: must be of type int, got "3"',
                                "3", "three", 'x: must be of type int, got "three"'),
    "float dtype": Rule({"dtype": "float"}, 1.5, "1.5", 'x: must be of type float, got "1.5"',
                        "1.5", "1,5", 'x: must be of type float, got "1,5"'),
    "bool dtype": Rule({"dtype": "bool"}, True, "true", 'x: must be of type bool, got "true"',
                       "true", "maybe", 'x: must be of type bool, got "maybe"'),
    "text dtype": Rule({"dtype": "text"}, "hello", 5, "x: must be of type text, got 5"),
    "category dtype": Rule({"dtype": "category"}, "a", ["a"], 'x: must be of type category, got ["a"]'),
    "timestamp dtype": Rule({"dtype": "timestamp"}, "2026-02-28T12:00:00Z", "2026-02-30",
                            'x: must be of type timestamp, got "2026-02-30"',
                            "2026-02-28T12:00:00Z", "2026-02-30", 'x: must be of type timestamp, got "2026-02-30"'),
    "vector length": Rule({"dtype": "vector(2)"}, [1, 2.5], [1, 2, 3], "x: must be of type vector(2), got [1, 2, 3]",
                          "[1, 2.5]", "[1,2,3]", 'x: must be of type vector(2), got "[1,2,3]"'),
    "vector elements": Rule({"dtype": "vector(2)"}, [1, 2], [1, "a"], 'x: must be of type vector(2), got [1, "a"]',
                            "[1,2]", "[1,a]", 'x: must be of type vector(2), got "[1,a]"'),
    "nullable false": Rule({"dtype": "float", "nullable": False}, 0.0, None, "x: must not be null",
                           "0", None, "x: must not be null"),
    "min": Rule({"dtype": "float", "min": 0}, 0, -0.5, "x: must be >= 0, got -0.5",
                "0", "-0.5", "x: must be >= 0, got -0.5"),
    "max": Rule({"dtype": "int", "max": 10}, 10, 11, "x: must be <= 10, got 11",
                "10", "11", "x: must be <= 10, got 11"),
    "timestamp min": Rule({"dtype": "timestamp", "min": "2020-01-01T00:00:00Z"}, "2020-01-01T00:00:00Z", "2019-12-31T23:59:59Z",
                          'x: must be >= 2020-01-01T00:00:00Z, got "2019-12-31T23:59:59+00:00"',
                          "2020-01-01T00:00:00Z", "2019-12-31T23:59:59Z",
                          'x: must be >= 2020-01-01T00:00:00Z, got "2019-12-31T23:59:59Z"'),
    "timestamp max": Rule({"dtype": "timestamp", "max": "2030-01-01T00:00:00Z"}, "2030-01-01T01:00:00+01:00",
                          "2030-01-01T00:00:01Z", 'x: must be <= 2030-01-01T00:00:00Z, got "2030-01-01T00:00:01+00:00"',
                          "2030-01-01T01:00:00+01:00", "2030-01-01T00:00:01Z",
                          'x: must be <= 2030-01-01T00:00:00Z, got "2030-01-01T00:00:01Z"'),
    "allowed category": Rule({"dtype": "category", "allowed": ["free", "pro"]}, "pro", "gold",
                             'x: must be one of ["free", "pro"], got "gold"',
                             "pro", "gold", 'x: must be one of ["free", "pro"], got "gold"'),
    "allowed int": Rule({"dtype": "int", "allowed": [1, 2, 3]}, 3, 4, "x: must be one of [1, 2, 3], got 4",
                        "3", "4", "x: must be one of [1, 2, 3], got 4"),
    "regex": Rule({"dtype": "text", "regex": "^[A-Z]{2}[0-9]+$"}, "AB12", "ab12", 'x: must match ^[A-Z]{2}[0-9]+$, got "ab12"',
                  "AB12", "ab12", 'x: must match ^[A-Z]{2}[0-9]+$, got "ab12"'),
    "max_length": Rule({"dtype": "text", "max_length": 3}, "abc", "abcd", "x: must be at most 3 characters, got 4 characters",
                       "abc", "abcd", "x: must be at most 3 characters, got 4 characters"),
}
BULK_RULES = {name: rule for name, rule in RULES.items() if rule.bulk_says is not None}


def two_rows(second: dict[str, Any], good: Any) -> list[dict[str, Any]]:
    """A valid row 1, then row 2 (card k2 at T0) with ``second``'s fields."""
    return [{"card": "k1", "event_time": T0, "x": good}, {"card": "k2", "event_time": T0, **second}]


@pytest.mark.parametrize("rule", RULES.values(), ids=RULES.keys())
def test_json_rows_that_keep_a_rule_are_written(conn: Conn, tenant: str, rule: Rule) -> None:
    create(conn, {"x": rule.spec})
    assert ingest(conn, [{"card": "k1", "event_time": T0, "x": rule.good_json}])["written"] == 1


@pytest.mark.parametrize("rule", RULES.values(), ids=RULES.keys())
def test_json_rows_that_break_a_rule_fail_the_batch_naming_row_key_time_feature_and_rule(
        conn: Conn, tenant: str, rule: Rule) -> None:
    create(conn, {"x": rule.spec})
    with refused("22023") as info:
        ingest(conn, two_rows({"x": rule.bad_json}, rule.good_json))
    assert message(info.value) == f"row 2 (card 'k2', event_time '{T0}'): {rule.json_says}"


@pytest.mark.parametrize("rule", BULK_RULES.values(), ids=BULK_RULES.keys())
def test_bulk_rows_that_keep_a_rule_are_written(conn: Conn, tenant: str, rule: Rule) -> None:
    create(conn, {"x": rule.spec})
    assert ingest_bulk(conn, [{"card": "k1", "event_time": T0, "x": rule.good_text}])["written"] == 1


@pytest.mark.parametrize("rule", BULK_RULES.values(), ids=BULK_RULES.keys())
def test_bulk_rows_that_break_a_rule_fail_the_batch_naming_row_key_time_feature_and_rule(
        conn: Conn, tenant: str, rule: Rule) -> None:
    create(conn, {"x": rule.spec})
    with refused("22023") as info:
        ingest_bulk(conn, two_rows({"x": rule.bad_text}, rule.good_text))
    assert message(info.value) == f"row 2 (card 'k2', event_time '{T0}'): {rule.bulk_says}"


KEY_AND_TIME_RULES = {
    "missing join key": ({"event_time": T0}, f"row 2 (card null, event_time '{T0}'): card: must not be null or empty"),
    "empty join key": ({"card": "  ", "event_time": T0}, f"row 2 (card null, event_time '{T0}'): card: must not be null or empty"),
    "unparsable event time": ({"card": "k2", "event_time": "2026-02-30"},
                              "row 2 (card 'k2', event_time '2026-02-30'): event_time: must be a timestamp, got '2026-02-30'"),
    "missing event time": ({"card": "k2"}, "row 2 (card 'k2', event_time null): event_time: must be a timestamp, got null"),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("row, says", KEY_AND_TIME_RULES.values(), ids=KEY_AND_TIME_RULES.keys())
def test_a_row_without_a_usable_key_or_event_time_fails_the_batch(
        conn: Conn, tenant: str, path: str, row: dict[str, Any], says: str) -> None:
    create(conn, {"x": {"dtype": "int"}})
    rows = [{"card": "k1", "event_time": T0}, row]
    if path == "bulk":
        rows = [{"card": r.get("card"), "event_time": r.get("event_time")} for r in rows]
    with refused("22023") as info:
        PATHS[path](conn, rows)
    assert message(info.value) == says


def test_a_json_key_that_is_not_a_feature_fails_the_batch(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int"}})
    with refused("22023") as info:
        ingest(conn, two_rows({"x": 1, "y": 2}, 1))
    assert message(info.value) == f"row 2 (card 'k2', event_time '{T0}'): y: is not a feature of group g version 1"


def test_a_json_row_that_is_not_an_object_fails_the_batch(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int"}})
    with refused("22023", r"^row 1 .*values: must be a JSON object$"):
        conn.execute("select ml.ingest('g', '[5]')")


def test_the_error_lists_every_rule_the_first_bad_row_broke(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int", "max": 10}, "y": {"dtype": "text", "nullable": False}})
    with refused("22023") as info:
        ingest(conn, [{"card": "k1", "event_time": T0, "x": 11}])
    assert message(info.value) == f"row 1 (card 'k1', event_time '{T0}'): x: must be <= 10, got 11; y: must not be null"


@pytest.mark.parametrize("path", PATHS)
def test_the_error_detail_counts_the_invalid_rows(conn: Conn, tenant: str, path: str) -> None:
    create(conn, {"x": {"dtype": "int", "max": 10}})
    rows = [{"card": f"k{i}", "event_time": T0, "x": v} for i, v in enumerate([1, 11, 2, 12], start=1)]
    if path == "bulk":
        rows = [{**r, "x": str(r["x"])} for r in rows]
    with refused("22023") as info:
        PATHS[path](conn, rows)
    assert message(info.value).startswith("row 2 (card 'k2'")
    assert detail(info.value) == (
        "2 of 4 rows break the rules of feature group g version 1; nothing was written. First ones:\n"
        "row 2: x: must be <= 10, got 11\n"
        "row 4: x: must be <= 10, got 12")


@pytest.mark.parametrize("path", PATHS)
def test_a_rejected_batch_writes_nothing(conn: Conn, tenant: str, path: str) -> None:
    create(conn, {"x": {"dtype": "int", "max": 10}})
    ingest(conn, [{"card": "k1", "event_time": T0, "x": 1}])
    before = stored(conn, tenant)
    rows: list[dict[str, Any]] = [{"card": "k1", "event_time": T1, "x": 2}, {"card": "k3", "event_time": T0, "x": 99}]
    if path == "bulk":
        rows = [{**r, "x": str(r["x"])} for r in rows]
    with refused("22023"):
        PATHS[path](conn, rows)
    assert stored(conn, tenant) == before
    assert online(conn, ["g:x"], ["k1"]) == [("k1", {"g:x": 1})]


def test_on_error_must_be_reject_or_quarantine(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int"}})
    with refused("22023", r"^on_error: must be reject or quarantine, got 'skip'$"):
        ingest(conn, [{"card": "k1", "event_time": T0, "x": 1}], on_error="skip")


@pytest.mark.parametrize("rows", ["[]", "{}", "null"])
def test_json_rows_must_be_a_non_empty_array(conn: Conn, tenant: str, rows: str) -> None:
    create(conn, {"x": {"dtype": "int"}})
    with refused("22023", r"^rows: must be a non-empty JSON array of objects"):
        conn.execute("select ml.ingest('g', %s::jsonb)", (None if rows == "null" else rows,))


# -- values as stored --------------------------------------------------------------------------------


def test_json_values_are_stored_in_one_canonical_form(conn: Conn, tenant: str) -> None:
    create(conn, {"n": {"dtype": "int"}, "t": {"dtype": "timestamp"}, "f": {"dtype": "float"}})
    ingest(conn, [{"card": "k1", "event_time": "2026-01-01T02:00:00+02:00", "n": 3.0, "t": "2026-01-01 10:00", "f": None}])
    assert offline(conn) == [("k1", T0, {"n": 3, "t": "2026-01-01T10:00:00+00:00"})]
    assert conn.execute(f"select n::text from {tables(conn)[0]}").fetchone() == ("3",)


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-inf"])
def test_bulk_floats_must_be_finite(conn: Conn, tenant: str, text: str) -> None:
    """JSON has no NaN or infinity: a float feature must hold a JSON number, whichever path wrote it."""
    create(conn, {"x": {"dtype": "float"}})
    with refused("22023") as info:
        ingest_bulk(conn, [{"card": "k1", "event_time": T0, "x": text}])
    assert message(info.value) == f"row 1 (card 'k1', event_time '{T0}'): x: must be of type float, got \"{text}\""


def test_an_infinite_event_time_is_refused(conn: Conn, tenant: str) -> None:
    """An event time of 'infinity' would pin the online store to that row for ever and defeat the TTL."""
    create(conn, {"x": {"dtype": "int"}})
    with refused("22023", r"event_time: must be"):
        ingest(conn, [{"card": "k1", "event_time": "infinity", "x": 1}])


# -- quarantine ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_quarantine_accounts_for_every_row(conn: Conn, tenant: str, path: str) -> None:
    create(conn, {"x": {"dtype": "int", "max": 10}})
    rows: list[dict[str, Any]] = [
        {"card": "k1", "event_time": T0, "x": 1},
        {"card": "k2", "event_time": T0, "x": 99},   # invalid
        {"card": "k1", "event_time": T0, "x": 2},    # supersedes row 1
        {"card": "k3", "event_time": T0},            # absent = null
    ]
    if path == "bulk":
        rows = [{**r, "x": None if r.get("x") is None else str(r["x"])} for r in rows]
    result = PATHS[path](conn, rows, on_error="quarantine")
    assert {k: result[k] for k in ("rows", "written", "inserted", "updated", "quarantined", "superseded")} == {
        "rows": 4, "written": 2, "inserted": 2, "updated": 0, "quarantined": 1, "superseded": 1}
    assert result["rows"] == result["written"] + result["quarantined"] + result["superseded"]


def test_quarantine_keeps_the_row_as_received_with_every_rule_it_broke(conn: Conn, tenant: str) -> None:
    create(conn, [{"name": "x", "dtype": "int", "max": 10}, {"name": "c", "dtype": "category", "allowed": ["a"]},
                  {"name": "s", "dtype": "text"}])
    result = ingest(conn, [{"card": "k1", "event_time": T0, "x": 1},
                           {"card": "k2", "event_time": "2026-01-01 00:00", "x": 11, "c": "b", "s": "fine", "zz": True}],
                    on_error="quarantine")
    rows = conn.execute("""select ingestion_id::text, row_number, entity_key, event_time, values, errors
                           from ml.feature_quarantine where tenant_id = %s""", (tenant,)).fetchall()
    assert rows == [(result["ingestion_id"], 2, "k2", "2026-01-01 00:00", {"x": 11, "c": "b", "s": "fine", "zz": True},
                     ["x: must be <= 10, got 11", 'c: must be one of ["a"], got "b"', "zz: is not a feature of group g version 1"])]


def test_quarantine_keeps_rows_without_a_usable_key_or_time_too(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int"}})
    ingest(conn, [{"event_time": "someday", "x": 1}], on_error="quarantine")
    assert conn.execute("select row_number, entity_key, event_time, errors from ml.feature_quarantine where tenant_id = %s",
                        (tenant,)).fetchall() == [
        (1, None, "someday", ["card: must not be null or empty", "event_time: must be a timestamp, got 'someday'"])]


def test_quarantine_loads_the_valid_rows(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int", "max": 10}})
    ingest(conn, [{"card": "k1", "event_time": T0, "x": 1}, {"card": "k2", "event_time": T0, "x": 11},
                  {"card": "k3", "event_time": T0, "x": 3}], on_error="quarantine")
    assert offline(conn) == [("k1", T0, {"x": 1}), ("k3", T0, {"x": 3})]
    assert online(conn, ["g:x"], ["k1", "k2", "k3"]) == [("k1", {"g:x": 1}), ("k2", {"g:x": None}), ("k3", {"g:x": 3})]


def test_the_ingestion_is_recorded_with_its_counts(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int", "max": 10}})
    result = ingest(conn, [{"card": "k1", "event_time": T0, "x": 1}, {"card": "k2", "event_time": T0, "x": 11}],
                    on_error="quarantine")
    row = conn.execute("""select source, on_error, rows_in, written, quarantined, superseded, finished_at is not null
                          from ml.feature_ingestions where id = %s""", (result["ingestion_id"],)).fetchone()
    assert row == ("ml.ingest", "quarantine", 2, 1, 1, 0, True)


# -- writing the same key and time again ---------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_reingesting_the_same_key_and_event_time_updates_in_place(conn: Conn, tenant: str, path: str) -> None:
    create(conn, {"x": {"dtype": "int"}})
    PATHS[path](conn, [{"card": "k1", "event_time": T0, "x": 1}])
    result = PATHS[path](conn, [{"card": "k1", "event_time": T0, "x": 2}, {"card": "k2", "event_time": T0, "x": 3}])
    assert (result["written"], result["inserted"], result["updated"]) == (2, 1, 1)
    assert offline(conn) == [("k1", T0, {"x": 2}), ("k2", T0, {"x": 3})]
    assert online(conn, ["g:x"], ["k1", "k2"]) == [("k1", {"g:x": 2}), ("k2", {"g:x": 3})]


def test_the_same_instant_in_another_offset_is_the_same_event_time(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int"}})
    ingest(conn, [{"card": "k1", "event_time": T0, "x": 1}])
    result = ingest(conn, [{"card": "k1", "event_time": "2026-01-01T05:30:00+05:30", "x": 2}])
    assert result["updated"] == 1 and offline(conn) == [("k1", T0, {"x": 2})]


def test_an_update_replaces_the_whole_row(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int"}, "y": {"dtype": "int"}})
    ingest(conn, [{"card": "k1", "event_time": T0, "x": 1, "y": 1}])
    ingest(conn, [{"card": "k1", "event_time": T0, "x": 2}])
    assert offline(conn) == [("k1", T0, {"x": 2})]


@pytest.mark.parametrize("path", PATHS)
def test_a_key_and_time_repeated_in_one_batch_keeps_the_last_row(conn: Conn, tenant: str, path: str) -> None:
    create(conn, {"x": {"dtype": "int"}})
    rows: list[dict[str, Any]] = [{"card": "k1", "event_time": T0, "x": v} for v in (1, 2, 3)]
    if path == "bulk":
        rows = [{**r, "x": str(r["x"])} for r in rows]
    result = PATHS[path](conn, rows)
    assert (result["rows"], result["written"], result["superseded"]) == (3, 1, 2)
    assert offline(conn) == [("k1", T0, {"x": 3})]


# -- the online store ----------------------------------------------------------------------------------


def test_the_online_store_keeps_the_newest_event_time_per_entity(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int"}})
    ingest(conn, [{"card": "k1", "event_time": T2, "x": 3}, {"card": "k1", "event_time": T0, "x": 1},
                  {"card": "k1", "event_time": T1, "x": 2}])
    assert online(conn, ["g:x"], ["k1"]) == [("k1", {"g:x": 3})]


def test_a_late_older_row_lands_offline_but_does_not_overwrite_the_online_value(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int"}})
    ingest(conn, [{"card": "k1", "event_time": T1, "x": 2}])
    late = ingest(conn, [{"card": "k1", "event_time": T0, "x": 1}])
    assert late["online_updated"] == 0
    assert offline(conn) == [("k1", T0, {"x": 1}), ("k1", T1, {"x": 2})]
    assert online(conn, ["g:x"], ["k1"]) == [("k1", {"g:x": 2})]


def test_online_lookup_returns_one_row_per_key_in_the_order_given_repeats_included(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int"}})
    ingest(conn, [{"card": "a", "event_time": T0, "x": 1}, {"card": "b", "event_time": T0, "x": 2}])
    assert online(conn, ["g:x"], ["b", "a", "b"]) == [("b", {"g:x": 2}), ("a", {"g:x": 1}), ("b", {"g:x": 2})]


def test_a_key_never_ingested_comes_back_with_every_feature_null(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int"}, "y": {"dtype": "text"}})
    ingest(conn, [{"card": "a", "event_time": T0, "x": 1, "y": "one"}])
    assert online(conn, ["g:x", "g:y"], ["nobody"]) == [("nobody", {"g:x": None, "g:y": None})]


def test_a_feature_absent_from_the_latest_row_comes_back_null(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int"}, "y": {"dtype": "text"}})
    ingest(conn, [{"card": "a", "event_time": T0, "x": 1, "y": "one"}, {"card": "a", "event_time": T1, "x": 2}])
    assert online(conn, ["g:y", "g:x"], ["a"]) == [("a", {"g:y": None, "g:x": 2})]


def test_values_older_than_the_group_ttl_come_back_null(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int"}}, ttl="1 day")
    now = datetime.now(UTC)
    ingest(conn, [{"card": "stale", "event_time": (now - timedelta(days=2)).isoformat(), "x": 1},
                  {"card": "fresh", "event_time": (now - timedelta(hours=1)).isoformat(), "x": 2}])
    assert online(conn, ["g:x"], ["stale", "fresh"]) == [("stale", {"g:x": None}), ("fresh", {"g:x": 2})]


def test_values_are_keyed_by_the_references_as_written_across_groups(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int"}}, name="g")
    create(conn, {"plan": {"dtype": "category"}}, name="h")
    ingest(conn, [{"card": "a", "event_time": T0, "x": 1}])
    ingest(conn, [{"card": "a", "event_time": T0, "plan": "pro"}], group="h")
    assert online(conn, ["h@1:plan", "g:x"], ["a"]) == [("a", {"h@1:plan": "pro", "g:x": 1})]


def test_a_group_at_version_reference_reads_that_version(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int"}})
    ingest(conn, [{"card": "a", "event_time": T0, "x": 1}])
    create(conn, {"x": {"dtype": "int"}})
    ingest(conn, [{"card": "a", "event_time": T0, "x": 2}])
    assert online(conn, ["g@1:x", "g:x"], ["a"]) == [("a", {"g@1:x": 1, "g:x": 2})]


def test_an_unknown_group_is_not_found(conn: Conn, tenant: str) -> None:
    with refused("P0002", r"^feature group 'nope' does not exist$"):
        online(conn, ["nope:x"], ["a"])


def test_an_unknown_version_is_not_found(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int"}})
    with refused("P0002", r"^feature group 'g' has no 7 version$"):
        online(conn, ["g@7:x"], ["a"])


def test_an_unknown_feature_is_an_undefined_column_listing_the_features(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int"}, "y": {"dtype": "int"}})
    with refused("42703", r"^features\[2\]: feature group g version 1 has no feature 'z' \(it has: x, y\)$"):
        online(conn, ["g:x", "g:z"], ["a"])


@pytest.mark.parametrize("ref", ["g.x", "g:", ":x", "g:x:y", "G:x", "g@one:x"])
def test_a_malformed_reference_is_refused(conn: Conn, tenant: str, ref: str) -> None:
    create(conn, {"x": {"dtype": "int"}})
    with refused("22023"):
        online(conn, [ref], ["a"])


def test_a_feature_named_twice_is_refused(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int"}})
    with refused("22023", r"^features: each feature may be named once$"):
        online(conn, ["g:x", "g:x"], ["a"])


def test_online_lookup_needs_at_least_one_key(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int"}})
    with refused("22023", r"^entity_keys: must name at least one key$"):
        online(conn, ["g:x"], [])


def test_online_lookups_follow_a_new_current_version_within_one_session(conn: Conn, tenant: str) -> None:
    """The lookup is prepared once per session and query; a new version makes another query."""
    create(conn, {"x": {"dtype": "int"}})
    ingest(conn, [{"card": "a", "event_time": T0, "x": 1}])
    assert online(conn, ["g:x"], ["a"]) == [("a", {"g:x": 1})]
    create(conn, {"x": {"dtype": "int"}})
    assert online(conn, ["g:x"], ["a"]) == [("a", {"g:x": None})]
    ingest(conn, [{"card": "a", "event_time": T0, "x": 2}])
    assert online(conn, ["g:x"], ["a"]) == [("a", {"g:x": 2})]
    conn.execute("select ml.set_feature_group_status('g', 2, 'archived')")
    assert online(conn, ["g:x"], ["a"]) == [("a", {"g:x": 1})]


def test_an_online_lookup_of_a_deleted_version_is_not_found_even_after_the_session_read_it(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int"}})
    ingest(conn, [{"card": "a", "event_time": T0, "x": 1}])
    assert online(conn, ["g@1:x"], ["a"]) == [("a", {"g@1:x": 1})]
    conn.execute("delete from ml.feature_groups where tenant_id = %s", (tenant,))
    with refused("P0002", r"^feature group 'g' does not exist$"):
        online(conn, ["g@1:x"], ["a"])
    create(conn, {"x": {"dtype": "int"}})  # version 1 again, with tables of its own
    assert online(conn, ["g@1:x"], ["a"]) == [("a", {"g@1:x": None})]


def test_online_values_come_back_as_json_of_their_type(conn: Conn, tenant: str) -> None:
    create(conn, [{"name": "n", "dtype": "int"}, {"name": "f", "dtype": "float"}, {"name": "b", "dtype": "bool"},
                  {"name": "c", "dtype": "category"}, {"name": "ts", "dtype": "timestamp"}, {"name": "v", "dtype": "vector(3)"}])
    ingest(conn, [{"card": "a", "event_time": T0, "n": 7, "f": -2.5e-7, "b": False, "c": "pro",
                   "ts": "2026-01-01T12:00:00+02:00", "v": [0.5, -1, 0.1]}])
    refs = ["g:n", "g:f", "g:b", "g:c", "g:ts", "g:v"]
    assert online(conn, refs, ["a"]) == [("a", {"g:n": 7, "g:f": -2.5e-7, "g:b": False, "g:c": "pro",
                                                "g:ts": "2026-01-01T10:00:00+00:00", "g:v": [0.5, -1, 0.1]})]


def test_online_lookup_takes_many_keys_in_one_call(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int"}})
    ingest(conn, [{"card": f"k{i}", "event_time": T0, "x": i} for i in range(0, 200, 2)])
    keys = [f"k{i}" for i in range(200)]
    assert online(conn, ["g:x"], keys) == [(k, {"g:x": i if i % 2 == 0 else None}) for i, k in enumerate(keys)]


# -- the typed tables --------------------------------------------------------------------------------


def test_each_version_has_an_offline_and_an_online_table_with_a_typed_column_per_feature(conn: Conn, tenant: str) -> None:
    create(conn, [{"name": "n", "dtype": "int", "nullable": False}, {"name": "f", "dtype": "float"},
                  {"name": "b", "dtype": "bool"}, {"name": "t", "dtype": "text"}, {"name": "c", "dtype": "category"},
                  {"name": "ts", "dtype": "timestamp"}, {"name": "v", "dtype": "vector(3)"}])
    offline_table, online_table = tables(conn)
    assert offline_table.startswith("ml_features.fg_") and online_table == offline_table + "_online"
    for table in (offline_table, online_table):
        columns = conn.execute("select attname, format_type(atttypid, atttypmod), attnotnull from pg_attribute"
                               " where attrelid = %s::regclass and attnum > 0 and not attisdropped order by attnum",
                               (table,)).fetchall()
        assert [(name, kind.rsplit(".", 1)[-1], not_null) for name, kind, not_null in columns] == [
            ("tenant_id", "uuid", True), ("entity_key", "text", True), ("event_time", "timestamp with time zone", True),
            ("n", "bigint", True), ("f", "double precision", False), ("b", "boolean", False), ("t", "text", False),
            ("c", "text", False), ("ts", "timestamp with time zone", False), ("v", "vector(3)", False),
            ("ingested_at", "timestamp with time zone", True), ("ingestion_id", "uuid", False)]
        assert conn.execute("select relrowsecurity and relforcerowsecurity from pg_class where oid = %s::regclass",
                            (table,)).fetchone() == (True,)
        assert conn.execute("select count(*) from ml_private.tenant_tables where table_name = %s", (table,)).fetchone() == (1,)
    keys = {t: conn.execute("select pg_get_constraintdef(oid) from pg_constraint where conrelid = %s::regclass and contype = 'p'",
                            (t,)).fetchone() for t in (offline_table, online_table)}
    assert keys == {offline_table: ("PRIMARY KEY (tenant_id, entity_key, event_time)",),
                    online_table: ("PRIMARY KEY (tenant_id, entity_key)",)}
    assert conn.execute("select count(*) from ml_private.time_partitioned_tables where table_name = %s",
                        (offline_table,)).fetchone() == (1,)


def test_a_versions_tables_hold_only_its_tenants_rows(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int"}})
    offline_table, _ = tables(conn)
    with refused("23514"):
        conn.execute(f"insert into {offline_table} (tenant_id, entity_key, event_time, x) values (%s, 'k', now(), 1)",
                     (make_tenant(conn),))


def test_deleting_a_version_or_its_tenant_drops_its_tables(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int"}})
    ingest(conn, [{"card": "a", "event_time": T0, "x": 1}])
    old = tables(conn, "g@1")
    create(conn, {"x": {"dtype": "int"}})
    ingest(conn, [{"card": "a", "event_time": T0, "x": 2}])
    new = tables(conn, "g@2")

    def gone(names: tuple[str, str]) -> bool:
        return all(conn.execute("select to_regclass(%s) is null and not exists (select 1 from ml_private.tenant_tables"
                                " where table_name = %s) and not exists (select 1 from ml_private.time_partitioned_tables"
                                " where table_name = %s)", (t, t, t)).fetchone() == (True,) for t in names)

    conn.execute("delete from ml.feature_groups where tenant_id = %s and version = 1", (tenant,))
    assert gone(old) and not gone(new)
    assert online(conn, ["g:x"], ["a"]) == [("a", {"g:x": 2})]
    act_for(conn, None)
    conn.execute("delete from ml.tenants where id = %s", (tenant,))
    assert gone(new)


def test_the_fast_and_the_careful_path_store_the_same_rows(conn: Conn, tenant: str) -> None:
    """A clean staged batch is written by the fast path; JSON rows, and a staged batch with a row
    to quarantine, by the careful path: the same values land either way."""
    schema = [{"name": "n", "dtype": "int", "min": 0}, {"name": "f", "dtype": "float"}, {"name": "b", "dtype": "bool"},
              {"name": "c", "dtype": "category", "allowed": ["x", "y"]}, {"name": "ts", "dtype": "timestamp"},
              {"name": "v", "dtype": "vector(2)"}]
    for name in ("fast", "json", "careful"):
        create(conn, schema, name=name)
    rows: list[dict[str, Any]] = [
            {"card": "k1", "event_time": T0, "n": 1, "f": 0.25, "b": True, "c": "x", "ts": "2026-01-01 10:00", "v": [1, 2]},
            {"card": "k2", "event_time": T1, "n": 2, "f": -1e-9, "b": False, "c": "y", "ts": "2026-01-01T10:00:00+01:00"},
            {"card": "k3", "event_time": T2}]
    text: list[dict[str, Any]] = [
        {k: (v if v is None or k in ("card", "event_time") else str(v).lower() if isinstance(v, bool) else str(v))
             for k, v in r.items()} for r in rows]
    assert ingest_bulk(conn, text, group="fast")["written"] == 3
    assert ingest(conn, rows, group="json")["written"] == 3
    assert ingest_bulk(conn, [*text, {"card": "k4", "event_time": T0, "n": "-1"}], group="careful",
                       on_error="quarantine")["quarantined"] == 1
    assert offline(conn, "fast") == offline(conn, "json") == offline(conn, "careful")
    assert offline(conn, "fast")[0] == ("k1", T0, {"n": 1, "f": 0.25, "b": True, "c": "x", "ts": "2026-01-01T10:00:00+00:00",
                                                   "v": "[1,2]"})


def calls(conn: Conn, function: str) -> int:
    """How often ``function`` (ml_private.*) ran in this database, by the statistics collector."""
    conn.execute("select pg_stat_force_next_flush()")
    conn.execute("select pg_stat_clear_snapshot()")
    row = conn.execute("select coalesce(sum(calls), 0) from pg_stat_user_functions where schemaname = 'ml_private'"
                       " and funcname = %s", (function,)).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("second, path", [({"x": "2"}, "ingest_staged_fast"), ({"x": "-2"}, "ingest_checked"),
                                          ({"x": "two"}, "ingest_checked")], ids=["clean", "broken rule", "bad text"])
def test_a_clean_staged_batch_takes_the_fast_path_and_any_other_the_careful_one(
        conn: Conn, tenant: str, second: dict[str, Any], path: str) -> None:
    create(conn, {"x": {"dtype": "int", "min": 0}})
    conn.execute("set track_functions = 'all'")
    before = {f: calls(conn, f) for f in ("ingest_staged_fast", "ingest_checked")}
    result = ingest_bulk(conn, [{"card": "k1", "event_time": T0, "x": "1"}, {"card": "k2", "event_time": T0, **second}],
                         on_error="quarantine")
    # A call that raised (the fast path giving up: its one statement undone) is not counted.
    assert {f: calls(conn, f) - n for f, n in before.items()} == {f: int(f == path) for f in before}
    assert result["written"] + result["quarantined"] == 2


def test_a_staged_batch_without_a_column_for_a_non_nullable_feature_breaks_its_rule(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int", "nullable": False}, "y": {"dtype": "int"}})
    with refused("22023") as info:
        ingest_bulk(conn, [{"card": "k1", "event_time": T0, "y": "1"}])
    assert message(info.value) == f"row 1 (card 'k1', event_time '{T0}'): x: must not be null"
    assert stored(conn, tenant)["offline"] == 0


def test_the_typed_store_works_alike_on_both_servers(any_db_url: str) -> None:
    """TimescaleDB chunks on the full server, native partitions on the embedded PostgreSQL 18: the
    fast path over several months, the careful path, lookups, statistics and deletion agree."""
    with psycopg.connect(any_db_url, autocommit=True) as conn:
        tenant = make_tenant(conn)
        act_for(conn, tenant)
        create(conn, [{"name": "n", "dtype": "int", "max": 100}, {"name": "f", "dtype": "float"},
                      {"name": "ts", "dtype": "timestamp"}, {"name": "v", "dtype": "vector(2)"}])
        months = [f"2026-{m:02d}-15T00:00:00Z" for m in range(1, 7)]
        fast = ingest_bulk(conn, [{"card": f"k{i}", "event_time": t, "n": str(i), "f": "0.5", "ts": t, "v": "[1, 2]"}
                                  for i, t in enumerate(months)])
        careful = ingest_bulk(conn, [{"card": "k0", "event_time": months[0], "n": "50", "f": None, "ts": None, "v": None},
                                     {"card": "k9", "event_time": months[0], "n": "500", "f": None, "ts": None, "v": None}],
                              on_error="quarantine")
        assert (fast["inserted"], careful["updated"], careful["quarantined"]) == (6, 1, 1)
        offline_table, online_table = tables(conn)
        mode = conn.execute("select mode from ml_private.time_partitioned_tables where table_name = %s", (offline_table,)).fetchone()
        assert mode == conn.execute("select ml.capabilities() ->> 'partitioning'").fetchone()
        assert conn.execute(f"select count(distinct tableoid) from {offline_table}").fetchone()[0] >= 5  # type: ignore[index]
        if mode == ("native",):
            assert conn.execute(f"select count(*) from {offline_table}_default").fetchone() == (0,)
        assert online(conn, ["g:n", "g:f", "g:v"], ["k0", "k5", "k9"]) == [
            ("k0", {"g:n": 50, "g:f": None, "g:v": None}), ("k5", {"g:n": 5, "g:f": 0.5, "g:v": [1, 2]}),
            ("k9", {"g:n": None, "g:f": None, "g:v": None})]
        stats = conn.execute("select ml.compute_feature_stats('g')").fetchone()[0]  # type: ignore[index]
        assert (stats["rows"], stats["features"]["n"]["max"], stats["features"]["v"]["count"]) == (6, 50, 5)
        conn.execute("delete from ml.feature_groups where tenant_id = %s", (tenant,))
        assert conn.execute("select to_regclass(%s), to_regclass(%s)", (offline_table, online_table)).fetchone() == (None, None)


# -- tenants and roles ---------------------------------------------------------------------------------


@pytest.fixture
def other_tenant_member(conn: Conn, tenant: str) -> tuple[str, str]:
    """(tenant B, an owner of B who is not a member of ``tenant``); ``tenant`` has group g with one row."""
    create(conn, {"x": {"dtype": "int"}})
    ingest(conn, [{"card": "a", "event_time": T0, "x": 1}])
    theirs = make_tenant(conn)
    stranger = member(conn, theirs, "owner")
    act_for(conn, None)
    return theirs, stranger


def test_a_member_of_another_tenant_cannot_ingest_into_the_group(
        conn: Conn, tenant: str, other_tenant_member: tuple[str, str]) -> None:
    theirs, stranger = other_tenant_member
    with refused("P0002"), tenant_context(conn, theirs, user=stranger):
        ingest(conn, [{"card": "a", "event_time": T1, "x": 2}])
    with refused("42501"), tenant_context(conn, tenant, user=stranger):
        ingest(conn, [{"card": "a", "event_time": T1, "x": 2}])
    assert stored(conn, tenant)["offline"] == 1


def test_a_member_of_another_tenant_cannot_read_the_group(conn: Conn, tenant: str, other_tenant_member: tuple[str, str]) -> None:
    theirs, stranger = other_tenant_member
    act_for(conn, tenant)
    offline_table, online_table = tables(conn)
    act_for(conn, None)
    with tenant_context(conn, theirs, user=stranger):
        for table in (offline_table, online_table, "ml.feature_ingestions", "ml.feature_quarantine", "ml.feature_groups"):
            assert conn.execute(f"select count(*) from {table}").fetchone() == (0,), table
        with refused("P0002"), conn.transaction():
            online(conn, ["g:x"], ["a"])
        with refused("P0002"), conn.transaction():
            conn.execute("select ml.feature_group('g')")
    with refused("42501"), tenant_context(conn, tenant, user=stranger):
        online(conn, ["g:x"], ["a"])


def test_a_viewer_reads_online_features_but_cannot_ingest(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int"}})
    ingest(conn, [{"card": "a", "event_time": T0, "x": 1}])
    viewer = member(conn, tenant, "viewer")
    act_for(conn, None)
    with tenant_context(conn, tenant, user=viewer):
        assert online(conn, ["g:x"], ["a"]) == [("a", {"g:x": 1})]
    with refused("42501"), tenant_context(conn, tenant, user=viewer):
        ingest(conn, [{"card": "a", "event_time": T1, "x": 2}])
    assert stored(conn, tenant)["offline"] == 1


@pytest.mark.parametrize("path", PATHS)
def test_an_ml_engineer_ingests(conn: Conn, tenant: str, path: str) -> None:
    create(conn, {"x": {"dtype": "int"}})
    engineer = member(conn, tenant, "ml_engineer")
    act_for(conn, None)
    with tenant_context(conn, tenant, user=engineer):
        PATHS[path](conn, [{"card": "a", "event_time": T0, "x": "1" if path == "bulk" else 1}])
        assert online(conn, ["g:x"], ["a"]) == [("a", {"g:x": 1})]
    row = conn.execute("select created_by::text from ml.feature_ingestions where tenant_id = %s", (tenant,)).fetchone()
    assert row == (engineer,)


def test_ingest_staged_refuses_a_table_that_is_not_a_temp_table(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int"}})
    with refused("22023", r"^staging: ml\.tenants is not a temporary table of this session$"):
        conn.execute("select ml.ingest_staged('g', 'ml.tenants')")
    assert stored(conn, tenant) == dict.fromkeys(STORE, 0)


def test_ingest_staged_refuses_another_sessions_temp_table(conn: Conn, tenant: str, db_url: str) -> None:
    create(conn, {"x": {"dtype": "int"}})
    with psycopg.connect(db_url, autocommit=True) as other:
        other.execute("create temp table theirs (card text, event_time text, x text)")
        other.execute("insert into theirs values ('a', %s, '1')", (T0,))
        oid = other.execute("select 'theirs'::regclass::oid").fetchone()
        assert oid is not None
        with refused("22023", r"is not a temporary table of this session$"):
            conn.execute("select ml.ingest_staged('g', %s::oid::regclass)", (oid[0],))
    assert stored(conn, tenant) == dict.fromkeys(STORE, 0)


def test_ingest_staged_reads_the_callers_own_temp_table(conn: Conn, tenant: str) -> None:
    create(conn, {"x": {"dtype": "int"}})
    with conn.transaction():
        conn.execute("create temp table mine (card text, event_time text, x text) on commit drop")
        conn.execute("insert into mine values ('a', %s, '1'), ('b', %s, ' 2 ')", (T0, T0))
        result = conn.execute("select ml.ingest_staged('g', 'mine', source => 'test')").fetchone()
    assert result is not None and result[0]["written"] == 2
    assert offline(conn) == [("a", T0, {"x": 1}), ("b", T0, {"x": 2})]
