"""The feature store from Python: feature groups, bulk and small-batch ingestion, online lookups.

A thin layer over the SQL API (sql/features/groups.sql, ingest.sql, online.sql): validation, versioning
and the online store live in the database, so Python, psql, Supabase RPC and edge functions all
meet the same rules. Bulk ingestion streams a DataFrame, CSV or Parquet file with COPY into a
session temp table, then calls ``ml.ingest_staged`` once: one set-based, validated insert.

Every function takes an open psycopg connection acting for a tenant (inside
:func:`pgmlops.db.tenant_context`, or as psql does with ``pgmlops.tenant_id``) and raises
:mod:`pgmlops.errors` exceptions for errors from the SQL API.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from pgmlops.db import call, sql_errors
from pgmlops.errors import InvalidInput
from pgmlops.features._stats import compute_stats, latest_stats, stats_summary

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

__all__ = [
    "IngestResult",
    "compute_stats",
    "create_group",
    "describe",
    "ingest",
    "ingest_rows",
    "latest_stats",
    "list_groups",
    "online_features",
    "set_status",
    "stats_summary",
]

# Rows per COPY batch when converting DataFrames and Parquet files to CSV for COPY.
_BATCH_ROWS = 65_536
# Bytes per COPY write when streaming a CSV file as it is.
_CSV_BLOCK = 1 << 20

Progress = Callable[[int], None]


@dataclass(frozen=True)
class IngestResult:
    """What an ingestion did with every row (see ``ml.ingest``).

    ``rows`` = ``written`` + ``quarantined`` + ``superseded``: nothing is dropped silently.
    ``written`` = ``inserted`` + ``updated`` (rows whose key and event time were already stored).
    ``superseded`` rows repeated a key and time later in the same batch, which won.
    """

    ingestion_id: str
    group: str
    version: int
    rows: int
    written: int
    inserted: int
    updated: int
    quarantined: int
    superseded: int
    online_updated: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IngestResult:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})


# -- groups --------------------------------------------------------------------------------------


def create_group(conn: psycopg.Connection[Any], name: str, entity: str, schema: dict[str, Any] | list[dict[str, Any]], *,
                 ttl: str | None = None, description: str | None = None, join_key: str | None = None,
                 event_time_column: str = "event_time", status: str = "active") -> str:
    """Create a feature group (or its next version) and return the version's id.

    ``schema`` maps feature names to specs (``{"amount": {"dtype": "float", "min": 0}}``) or is a
    list of specs with a ``name`` each (keeps the declared order). ``ttl`` is a PostgreSQL
    interval such as ``"30 days"``. See ``ml.create_feature_group`` for the rules.

    Raises:
        InvalidInput: a bad name, schema, ttl or status (the message names the rule).
        AccessDenied: the caller may not write in the tenant.
    """
    return str(call(conn, "ml.create_feature_group(%s, %s, %s, %s::interval, %s, %s, %s, %s)",
                    (name, entity, Jsonb(schema), ttl, description, join_key, event_time_column, status)))


def set_status(conn: psycopg.Connection[Any], name: str, version: int, status: str) -> None:
    """Move a group version to ``status`` (draft, active, deprecated, archived; archived is final)."""
    call(conn, "ml.set_feature_group_status(%s, %s, %s)", (name, version, status))


def describe(conn: psycopg.Connection[Any], group: str) -> dict[str, Any]:
    """The group version ``group`` names (``name`` or ``name@version``), as ``ml.feature_group`` returns it."""
    return dict(call(conn, "ml.feature_group(%s)", (group,)))


def list_groups(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Every feature group version the caller can see (through RLS), newest version first per name."""
    with sql_errors():
        cur = conn.execute(
            """select g.name, g.version, g.status, g.entity, g.join_key, g.ttl::text, jsonb_array_length(g.features),
                      g.created_at, g.description, g.online_table::text
               from ml.feature_groups g order by g.name, g.version desc""")
        names = ["name", "version", "status", "entity", "join_key", "ttl", "features", "created_at", "description"]
        groups = []
        for *row, online_table in cur.fetchall():
            # Each version's online table holds one row per entity (docs/features.md); RLS shows
            # the caller only their tenant's. Its name comes from the catalog, already quoted.
            count = conn.execute(sql.SQL("select count(*) from {}").format(sql.SQL(online_table))).fetchone()
            groups.append({**dict(zip(names, row, strict=True)), "entities": count[0] if count else 0})
        return groups


# -- ingestion -----------------------------------------------------------------------------------


def ingest_rows(conn: psycopg.Connection[Any], group: str, rows: Sequence[dict[str, Any]], *,
                on_error: str = "reject") -> IngestResult:
    """Ingest a small batch of row dicts through ``ml.ingest`` (at most 50,000 rows).

    Each row holds the group's join key, its event time (ISO text or a datetime) and features.
    """
    payload = json.dumps(list(rows), default=_json_default)
    return IngestResult.from_json(call(conn, "ml.ingest(%s, %s::jsonb, %s)", (group, payload, on_error)))


def ingest(conn: psycopg.Connection[Any], group: str, source: pd.DataFrame | pa.Table | str | Path, *,
           on_error: str = "reject", source_name: str | None = None,
           progress: Progress | None = None) -> IngestResult:
    """Bulk-ingest ``source`` into ``group``: COPY into a temp table, then one validated insert.

    ``source`` is a pandas DataFrame, a pyarrow Table, or the path of a ``.csv`` (with a header
    row) or ``.parquet`` file. Its columns are the join key, the event time and any of the
    group's features; vectors may be lists or arrays (DataFrame/Parquet) or ``[1, 2, 3]`` text
    (CSV). ``progress``, when given, is called with the rows (DataFrame/Parquet) or bytes (CSV)
    sent so far. Rows are numbered from 1 in the order of the source in errors and quarantine.

    Runs in one transaction (a savepoint when one is open): with ``on_error="reject"`` one bad
    row fails the call and nothing is written.

    Raises:
        InvalidInput: an invalid row (reject mode), a missing key/time column, a column that is
            not a feature, an unreadable file.
        NotFound: no such group. InvalidState: the group version is archived.
    """
    name = source_name or (str(source) if isinstance(source, str | Path) else type(source).__name__)
    with sql_errors(), conn.transaction():
        if isinstance(source, str | Path):
            path = Path(source)
            suffix = path.suffix.lower()
            if suffix == ".csv":
                stage = _stage_csv(conn, path, progress)
            elif suffix in (".parquet", ".pq"):
                import pyarrow.parquet as pq

                parquet = pq.ParquetFile(path)
                stage = _stage_batches(conn, parquet.schema_arrow.names, parquet.iter_batches(batch_size=_BATCH_ROWS),
                                       progress)
            else:
                raise InvalidInput(f"source: {path.name} must be a .csv or .parquet file", "22023")
        else:
            table = _as_arrow(source)
            stage = _stage_batches(conn, table.column_names, table.to_batches(max_chunksize=_BATCH_ROWS), progress)
        row = conn.execute("select ml.ingest_staged(%s, %s::regclass, %s, %s)",
                           (group, stage, on_error, name)).fetchone()
        conn.execute(sql.SQL("drop table {}").format(sql.Identifier(stage)))
    assert row is not None
    return IngestResult.from_json(row[0])


def _create_stage(conn: psycopg.Connection[Any], columns: Sequence[str]) -> str:
    if len(set(columns)) != len(columns):
        raise InvalidInput(f"source: column names repeat: {sorted({c for c in columns if columns.count(c) > 1})}", "22023")
    stage = f"_pgmlops_stage_{uuid.uuid4().hex[:12]}"
    # No _row column: ml.ingest_staged numbers rows in scan order, which for a temp table filled
    # by one COPY is the source's order (temp tables are never scanned in parallel), and an
    # identity column would cost a sequence call per row.
    conn.execute(sql.SQL("create temp table {} ({}) on commit drop").format(
        sql.Identifier(stage), sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in columns)))
    return stage


def _copy_sql(stage: str, columns: Sequence[str], header: bool) -> sql.Composed:
    return sql.SQL("copy {} ({}) from stdin with (format csv, header {})").format(
        sql.Identifier(stage), sql.SQL(", ").join(map(sql.Identifier, columns)), sql.SQL("true" if header else "false"))


def _stage_csv(conn: psycopg.Connection[Any], path: Path, progress: Progress | None) -> str:
    """COPY a CSV file as it is (no parsing in Python) into a new stage table."""
    with path.open(newline="", encoding="utf-8-sig") as f:  # a BOM (Excel) is not part of the first name
        try:
            header = next(csv.reader(f))
        except StopIteration:
            raise InvalidInput(f"source: {path.name} is empty (a header row is needed)", "22023") from None
    stage = _create_stage(conn, [c.strip() for c in header])
    sent = 0
    with path.open("rb") as f, conn.cursor().copy(_copy_sql(stage, [c.strip() for c in header], True)) as copy:
        while block := f.read(_CSV_BLOCK):
            copy.write(block)
            sent += len(block)
            if progress:
                progress(sent)
    return stage


def _stage_batches(conn: psycopg.Connection[Any], columns: Sequence[str], batches: Iterable[pa.RecordBatch],
                   progress: Progress | None) -> str:
    """COPY Arrow record batches, written as CSV by pyarrow, into a new stage table."""
    import pyarrow.csv as pacsv

    stage = _create_stage(conn, list(columns))
    sent = 0
    options = pacsv.WriteOptions(include_header=False)
    with conn.cursor().copy(_copy_sql(stage, list(columns), False)) as copy:
        for batch in batches:
            buffer = io.BytesIO()
            pacsv.write_csv(_csv_ready(batch), buffer, write_options=options)
            copy.write(buffer.getvalue())
            sent += batch.num_rows
            if progress:
                progress(sent)
    return stage


def _as_arrow(source: Any) -> pa.Table:
    import pyarrow as pa

    if isinstance(source, pa.Table):
        return source
    import pandas as pd

    if isinstance(source, pd.DataFrame):
        frame = source.reset_index(drop=True)
        for column in frame.columns:
            if frame[column].dtype == object:
                first = frame[column].dropna().head(1)
                if len(first) and not isinstance(first.iloc[0], str | bytes) and hasattr(first.iloc[0], "__len__"):
                    frame[column] = frame[column].map(_vector_text)
        return pa.Table.from_pandas(frame, preserve_index=False)
    raise TypeError(f"source: expected a DataFrame, a pyarrow Table, or a .csv/.parquet path, got {type(source).__name__}")


def _csv_ready(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Columns pyarrow's CSV writer cannot write (lists: vectors) as JSON text."""
    import pyarrow as pa

    if not any(pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
               for t in batch.schema.types):
        return batch
    arrays = [pa.array([_vector_text(v) for v in col.to_pylist()], pa.string())
              if pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type)
              else col for col in batch.columns]
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def _vector_text(value: Any) -> str | None:
    if value is None:
        return None
    try:
        if value != value:  # NaN in an object column
            return None
    except (TypeError, ValueError):
        pass
    return json.dumps([float(x) for x in value])


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot send {type(value).__name__} as JSON")


# -- online lookups ------------------------------------------------------------------------------


def online_features(conn: psycopg.Connection[Any], features: Sequence[str], entity_keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The latest values of ``features`` (``group:feature``) for ``entity_keys``, by key.

    Values past their group's TTL, and keys never ingested, are None.
    """
    with sql_errors():
        rows = conn.execute("select entity_key, values from ml.get_online_features(%s, %s)",
                            (list(features), [str(k) for k in entity_keys])).fetchall()
    return {str(key): dict(values) for key, values in rows}
