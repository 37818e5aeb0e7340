"""Helpers shared by the training-set tests: groups, ingestion, spines, errors, and the pandas
references the SQL is checked against."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from pgmlops.errors import DatabaseError

Conn = psycopg.Connection[Any]

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(hours: float) -> datetime:
    """T0 plus ``hours``."""
    return T0 + timedelta(hours=hours)


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def create_group(conn: Conn, name: str, schema: dict[str, Any], *, key: str = "customer_id",
                 ttl: str | None = None) -> str:
    """Create feature group ``name`` whose join key is ``key``; returns its id."""
    row = conn.execute("select ml.create_feature_group(%s, 'customer', %s, ttl => %s::interval, join_key => %s)",
                       (name, Jsonb(schema), ttl, key)).fetchone()
    assert row is not None
    return str(row[0])


def ingest(conn: Conn, group: str, rows: Sequence[dict[str, Any]]) -> None:
    """ml.ingest, in batches; datetimes become ISO strings."""
    rows = [{k: iso(v) if isinstance(v, datetime) else v for k, v in r.items()} for r in rows]
    for start in range(0, len(rows), 20000):
        conn.execute("select ml.ingest(%s, %s)", (group, Jsonb(rows[start:start + 20000])))


def spine_table(conn: Conn, frame: pd.DataFrame, types: dict[str, str], name: str | None = None) -> str:
    """A temporary table (this session) holding ``frame`` with the given SQL column types; returns its name."""
    name = name or f"spine_{uuid.uuid4().hex[:8]}"
    columns = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(types[c])) for c in frame.columns)
    conn.execute(sql.SQL("create temp table {} ({})").format(sql.Identifier(name), columns))
    with conn.cursor().copy(sql.SQL("copy {} from stdin").format(sql.Identifier(name))) as copy:
        for record in frame.itertuples(index=False):
            copy.write_row([None if pd.isna(v) else (iso(v) if isinstance(v, datetime) else v) for v in record])
    return name


def build(conn: Conn, name: str, spine: str, features: list[str], label: str | None = None,
          transformations: list[dict[str, Any]] | None = None) -> str:
    """ml.create_training_set; returns the dataset id."""
    row = conn.execute("select ml.create_training_set(%s, %s, %s, %s, %s)",
                       (name, spine, features, label, Jsonb(transformations or []))).fetchone()
    assert row is not None
    return str(row[0])


def rows(conn: Conn, dataset: str, columns: str = "*") -> list[dict[str, Any]]:
    """The dataset's rows in row_id order, as dicts (without row_id and tenant_id)."""
    table = conn.execute("select table_name from ml.datasets where id = %s", (dataset,)).fetchone()
    assert table is not None
    cur = conn.execute(f"select {columns} from {table[0]} order by row_id")
    names = [d.name for d in cur.description or []]
    return [{k: v for k, v in zip(names, r, strict=True) if k not in ("row_id", "tenant_id")} for r in cur.fetchall()]


def written(conn: Conn, tenant: str) -> dict[str, int]:
    """What a training-set build writes, for ``tenant``: datasets, tables in ml_datasets (the
    tenant's, plus any no dataset row names), lineage, events."""
    counts = conn.execute(
        """select (select count(*) from ml.datasets where tenant_id = %(t)s),
                  (select count(*) from pg_class c
                   where c.relnamespace = 'ml_datasets'::regnamespace and c.relkind = 'r'
                     and (exists (select 1 from ml.datasets d where d.tenant_id = %(t)s and d.table_name::regclass = c.oid)
                          or not exists (select 1 from ml.datasets d where d.table_name::regclass = c.oid))),
                  (select count(*) from ml.lineage where tenant_id = %(t)s and to_kind = 'dataset'),
                  (select count(*) from ml.events where tenant_id = %(t)s and event like 'dataset.%%')""",
        {"t": tenant}).fetchone()
    assert counts is not None
    return dict(zip(("datasets", "tables", "lineage", "events"), (int(c) for c in counts), strict=True))


def message(exc: BaseException) -> str:
    if isinstance(exc, psycopg.Error):
        return exc.diag.message_primary or ""
    return str(exc.args[0])


@contextmanager
def refused(sqlstate: str, match: str | None = None) -> Iterator[pytest.ExceptionInfo[BaseException]]:
    """Expect an error with ``sqlstate`` (from psycopg or pgmlops) whose message matches ``match``."""
    with pytest.raises((psycopg.Error, DatabaseError)) as info:
        yield info
    assert getattr(info.value, "sqlstate", None) == sqlstate, f"{getattr(info.value, 'sqlstate', None)}: {info.value}"
    if match is not None:
        assert re.search(match, message(info.value)), message(info.value)


def member(conn: Conn, tenant: str, role: str) -> str:
    """A new user with ``role`` in ``tenant``; returns the user id."""
    user = str(uuid.uuid4())
    conn.execute("select ml.add_tenant_member(%s, %s, %s)", (tenant, user, role))
    return user


def merge_asof_reference(spine: pd.DataFrame, values: pd.DataFrame, key: str, ttl: str | None) -> pd.DataFrame:
    """What the point-in-time join must give: pandas.merge_asof, backward, by key, within the TTL,
    exact matches allowed. ``values`` has columns key, event_time and the features; the result
    has the spine's rows (in spine order, index kept) with the features added."""
    left = spine.reset_index().sort_values("event_time", kind="stable")
    right = values.sort_values("event_time", kind="stable")
    merged = pd.merge_asof(left, right, on="event_time", by=key, direction="backward", allow_exact_matches=True,
                           tolerance=pd.Timedelta(ttl) if ttl else None)
    return merged.set_index("index").sort_index()


def job_result(conn: Conn, job_id: int, timeout: float = 60.0) -> dict[str, Any]:
    """Waits for a worker to end job ``job_id``; asserts it succeeded and returns its result."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute("select kind, status, result, error from ml.jobs where id = %s", (job_id,)).fetchone()
        assert row is not None
        if row[1] in ("succeeded", "failed", "dead", "cancelled"):
            assert row[1] == "succeeded", row
            return dict(row[2])
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {timeout:g} s")
