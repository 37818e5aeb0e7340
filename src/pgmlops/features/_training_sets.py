"""Training sets: point-in-time correct datasets built in SQL, loaded into pandas."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from uuid import UUID, uuid4

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
from psycopg import sql

from pgmlops.db import call, sql_errors
from pgmlops.errors import NotFound

__all__ = [
    "DatasetInfo",
    "apply_transformations",
    "create_training_set",
    "dataset_info",
    "drop_dataset",
    "load_dataset",
    "training_set",
]

Conn = psycopg.Connection[Any]

_REF = re.compile(r"^([a-z][a-z0-9_]{0,47})(?:@([0-9]{1,9}))?$")


@dataclass(frozen=True)
class DatasetInfo:
    """A training set's row in ``ml.datasets``.

    ``columns`` lists every column but ``row_id`` and ``tenant_id`` as ``{name, type, role, ...}``
    (role: key, event_time, label, feature, aggregate or transformed); ``inputs`` names the model
    inputs in order; ``transformations`` holds the specs with their frozen ``state``.
    """

    id: UUID
    name: str
    version: int
    table_name: str
    spine: str
    features: list[str]
    label: str | None
    key_columns: list[str]
    columns: list[dict[str, Any]]
    inputs: list[str]
    transformations: list[dict[str, Any]]
    row_count: int
    content_hash: str
    time_range: tuple[datetime | None, datetime | None] | None
    source_groups: list[dict[str, Any]]
    created_at: datetime


def create_training_set(conn: Conn, name: str, spine: str | pd.DataFrame, features: Sequence[str], label: str | None = None,
                        transformations: Sequence[Mapping[str, Any]] | None = None) -> UUID:
    """Build a point-in-time correct training set in the database (``ml.create_training_set``).

    Args:
        name: lowercase letters, digits and ``_``; building a name again makes a new version.
        spine: a table name or a query (run with the caller's rights) giving one column per join
            key (or ``entity_key``), ``event_time`` and, when ``label`` is given, the label; or a
            DataFrame with those columns, copied into a temporary table first (naive datetimes
            are read as UTC).
        features: ``'group:feature'`` or ``'group@version:feature'`` references.
        label: the spine column holding the label.
        transformations: specs such as ``{"type": "standardize", "column": "amount"}``; see
            ``sql/features/transformations.sql``.

    Each feature group is joined by one backward probe per spine row (small spines) or in one pass
    over the group's rows (large spines), chosen by size; ``set pgmlops.training_set_plan =
    'probe'`` (or ``'merge'``, ``'auto'``) in the session forces it, and the dataset's
    ``source_groups`` record the plan each group used. Both give the same rows.

    Returns:
        The dataset id.

    Raises:
        InvalidInput: a bad name, spine, feature reference or transformation spec (SQLSTATE 22xxx).
        NotFound: an unknown feature group.
        AccessDenied: the caller may not write in the tenant.
        DatabaseError: anything else the SQL raises, e.g. a failing spine query or a missing
            spine column (42703); nothing was written.
    """
    with sql_errors(), conn.transaction():
        spine_text = _stage_spine(conn, spine) if isinstance(spine, pd.DataFrame) else spine
        dataset_id = call(conn, "ml.create_training_set(%s, %s, %s, %s, %s::jsonb)",
                          (name, spine_text, list(features), label, json.dumps(list(transformations or []))))
        if spine_text is not spine:
            conn.execute(sql.SQL("drop table {}").format(sql.SQL(spine_text)))
    return UUID(str(dataset_id))


def training_set(conn: Conn, name: str, spine: str | pd.DataFrame, features: Sequence[str], label: str | None = None,
                 transformations: Sequence[Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """Build a training set (see :func:`create_training_set`) and return its rows as a DataFrame
    (see :func:`load_dataset`). The build runs in a transaction block of its own (a savepoint
    when the connection is already in a transaction)."""
    dataset_id = create_training_set(conn, name, spine, features, label, transformations)
    return load_dataset(conn, dataset_id)


def dataset_info(conn: Conn, dataset: UUID | str) -> DatasetInfo:
    """The ``ml.datasets`` row of ``dataset``: an id, ``'name'`` (the newest version) or ``'name@version'``.

    Raises:
        NotFound: no such dataset is visible to the caller.
    """
    where, params = _dataset_filter(dataset)
    # RLS shows a user every tenant they belong to, and a service caller every tenant: the
    # dataset is the one of the tenant the caller acts for.
    with sql_errors():
        row = conn.execute(
            sql.SQL("""select id, name, version, table_name, spine, features, label, key_columns, columns, inputs,
                              transformations, row_count, content_hash, lower(time_range), upper(time_range),
                              time_range is null, source_groups, created_at
                       from ml.datasets d where {} and d.tenant_id = (select ml.current_tenant())
                       order by version desc limit 1""").format(where),
            params,
        ).fetchone()
    if row is None:
        raise NotFound(f"dataset {dataset} does not exist", "P0002")
    return DatasetInfo(
        id=UUID(str(row[0])), name=row[1], version=row[2], table_name=row[3], spine=row[4], features=list(row[5]),
        label=row[6], key_columns=list(row[7]), columns=row[8], inputs=list(row[9]), transformations=row[10],
        row_count=row[11], content_hash=row[12], time_range=None if row[15] else (row[13], row[14]),
        source_groups=row[16], created_at=row[17],
    )


def load_dataset(conn: Conn, dataset: UUID | str) -> pd.DataFrame:
    """The rows of a training set, in ``row_id`` order, as a DataFrame with a RangeIndex.

    ``dataset`` is an id, ``'name'`` (newest version) or ``'name@version'``. Columns are the
    dataset's columns but ``row_id`` and ``tenant_id``, typed: bigint as ``Int64``, float as
    ``float64``, boolean as ``boolean``, timestamps as ``datetime64[ns, UTC]``, text as ``object``,
    float arrays (vectors) as numpy arrays. ``df.attrs["dataset"]`` holds the :class:`DatasetInfo`.
    Rows travel by COPY in CSV, read by pyarrow (several times faster than fetching tuples).

    Raises:
        NotFound: no such dataset is visible to the caller.
    """
    info = dataset_info(conn, dataset)
    names = [c["name"] for c in info.columns]
    types = [c["type"] for c in info.columns]
    select = sql.SQL(", ").join(_export_expr(n, t) for n, t in zip(names, types, strict=True))
    query = sql.SQL("copy (select {} from {} d order by d.row_id) to stdout with (format csv, header true, null '\\N')").format(
        select, sql.SQL(info.table_name))
    buffer = io.BytesIO()
    with sql_errors(), conn.transaction():
        # Floats in their shortest exact form, whatever the session had.
        conn.execute("set local extra_float_digits = 1")
        with conn.cursor().copy(query) as copy:
            for chunk in copy:
                buffer.write(chunk)
    buffer.seek(0)
    frame = _read_csv(buffer, names, types)
    frame.attrs["dataset"] = info
    return frame


def apply_transformations(conn: Conn, dataset: UUID | str,
                          rows: Mapping[str, Any] | Sequence[Mapping[str, Any]] | pd.DataFrame) -> Any:
    """The model inputs for new raw rows, with the dataset's frozen transformations
    (``ml.apply_transformations``): the same SQL that built the training set.

    ``rows``: one mapping (returns one dict), a sequence of mappings (returns a list of dicts) or a
    DataFrame (returns a DataFrame whose columns are the dataset's ``inputs``, in order).
    Values may be numbers, strings, booleans, ``datetime`` / ``date`` (sent as ISO 8601), numpy
    scalars and arrays, or None / NaN (null).
    """
    dataset_id = dataset if isinstance(dataset, UUID) else _resolve_id(conn, dataset)
    if isinstance(rows, pd.DataFrame):
        payload: Any = [_jsonable_row({str(k): v for k, v in r.items()}) for r in rows.to_dict(orient="records")]
    elif isinstance(rows, Mapping):
        payload = _jsonable_row(rows)
    else:
        payload = [_jsonable_row(r) for r in rows]
    inputs = call(conn, "ml.apply_transformations(%s, %s::jsonb)", (dataset_id, json.dumps(payload)))
    if isinstance(rows, pd.DataFrame):
        info = dataset_info(conn, dataset_id)
        return pd.DataFrame(inputs, columns=info.inputs, index=rows.index)
    return inputs


def drop_dataset(conn: Conn, dataset: UUID | str) -> bool:
    """Delete a training set, its table and its lineage (``ml.drop_dataset``); False when absent."""
    try:
        dataset_id = dataset if isinstance(dataset, UUID) else _resolve_id(conn, dataset)
    except NotFound:
        return False
    return bool(call(conn, "ml.drop_dataset(%s)", (dataset_id,)))


# -- helpers ----------------------------------------------------------------------------------


def _spine_sql_type(series: pd.Series) -> str:
    dtype = series.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        return "timestamptz"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "timestamp"
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return "bigint"
    if pd.api.types.is_float_dtype(dtype):
        return "double precision"
    inferred = pd.api.types.infer_dtype(series, skipna=True)  # object columns: what their values are
    return {"boolean": "boolean", "integer": "bigint", "floating": "double precision", "mixed-integer-float": "double precision",
            "datetime": "timestamptz", "date": "date"}.get(inferred, "text")


def _stage_spine(conn: Conn, frame: pd.DataFrame) -> str:
    """Copy ``frame`` into a new temporary table (dropped at commit); returns its qualified name."""
    name = f"pg_temp._pgmlops_spine_frame_{uuid4().hex[:12]}"
    columns = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(str(c)), sql.SQL(_spine_sql_type(frame[c])))
                                 for c in frame.columns)
    conn.execute(sql.SQL("create temp table {} ({}) on commit drop").format(sql.SQL(name), columns))
    text = frame.to_csv(index=False, header=False, na_rep="\\N", date_format="%Y-%m-%dT%H:%M:%S.%f%z")
    with conn.cursor().copy(sql.SQL("copy {} from stdin with (format csv, null '\\N')").format(sql.SQL(name))) as copy:
        copy.write(text)
    return name



def _dataset_filter(dataset: UUID | str) -> tuple[sql.Composable, tuple[Any, ...]]:
    if isinstance(dataset, UUID):
        return sql.SQL("d.id = %s"), (dataset,)
    try:
        return sql.SQL("d.id = %s"), (UUID(dataset),)
    except ValueError:
        pass
    match = _REF.match(dataset.strip())
    if match is None:
        raise NotFound(f"dataset {dataset!r} is neither an id, a name nor name@version", "P0002")
    if match.group(2):
        return sql.SQL("d.name = %s and d.version = %s"), (match.group(1), int(match.group(2)))
    return sql.SQL("d.name = %s"), (match.group(1),)


def _resolve_id(conn: Conn, dataset: str) -> UUID:
    return dataset_info(conn, dataset).id


def _export_expr(name: str, sql_type: str) -> sql.Composable:
    column = sql.Identifier(name)
    if sql_type in ("timestamptz", "timestamp with time zone", "timestamp without time zone", "date"):
        # Microseconds since the epoch: exact, and free of the session's time zone and DateStyle.
        expr = "(extract(epoch from d.{col}) * 1000000)::bigint"
        if sql_type == "timestamp without time zone":
            expr = "(extract(epoch from d.{col} at time zone 'UTC') * 1000000)::bigint"
        elif sql_type == "date":
            expr = "(extract(epoch from d.{col}::timestamp at time zone 'UTC') * 1000000)::bigint"
        return sql.SQL(expr + " as {col}").format(col=column)
    return sql.SQL("d.{col}").format(col=column)


_INT_TYPES = {"bigint", "integer", "smallint"}
_FLOAT_TYPES = {"double precision", "real", "numeric"}
_TIME_TYPES = {"timestamptz", "timestamp with time zone", "timestamp without time zone", "date"}


def _arrow_type(sql_type: str) -> pa.DataType:
    if sql_type in _INT_TYPES or sql_type in _TIME_TYPES:
        return pa.int64()
    if sql_type in _FLOAT_TYPES or sql_type.startswith("numeric"):
        return pa.float64()
    if sql_type == "boolean":
        return pa.bool_()
    return pa.string()


def _read_csv(buffer: io.BytesIO, names: list[str], types: list[str]) -> pd.DataFrame:
    column_types = {n: _arrow_type(t) for n, t in zip(names, types, strict=True)}
    table = pa_csv.read_csv(
        buffer,
        read_options=pa_csv.ReadOptions(column_names=names, skip_rows=1, use_threads=True),
        convert_options=pa_csv.ConvertOptions(
            column_types=column_types, null_values=["\\N"], strings_can_be_null=True,
            quoted_strings_can_be_null=False, true_values=["t"], false_values=["f"]),
    )
    columns: dict[str, Any] = {}
    for name, sql_type in zip(names, types, strict=True):
        arr = table.column(name)
        if sql_type in _TIME_TYPES:
            columns[name] = arr.cast(pa.timestamp("us", tz="UTC")).to_pandas()
        elif sql_type in _INT_TYPES:
            columns[name] = arr.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
        elif sql_type == "boolean":
            columns[name] = arr.to_pandas(types_mapper={pa.bool_(): pd.BooleanDtype()}.get)
        elif sql_type.endswith("[]"):
            columns[name] = pd.Series([None if v is None else _parse_array(v) for v in arr.to_pylist()], dtype="object")
        else:
            columns[name] = arr.to_pandas()
    return pd.DataFrame(columns, index=pd.RangeIndex(table.num_rows))


def _parse_array(text: str) -> np.ndarray[Any, np.dtype[np.float64]]:
    body = text.strip()[1:-1]
    if not body:
        return np.array([], dtype=np.float64)
    return np.array([float("nan") if x.strip().upper() == "NULL" else float(x) for x in body.split(",")], dtype=np.float64)


def _jsonable(value: Any) -> Any:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else value.isoformat()
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _jsonable_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k): _jsonable(v) for k, v in row.items()}
