"""The ``score`` job handler: a batch scoring (``ml.score``) run chunk by chunk, exactly once.

The job acts as the user who called ``ml.score`` (``ml.jobs.created_by``; a service caller when
there was none) through :func:`pgmlops.db.tenant_context`, exactly as PostgREST would run that
user's request, so the source is read and the target written with that user's rights (their
privileges and RLS policies). It works on a connection of its own, committing as it goes:

1. ``ml.stage_batch_scoring`` (first attempt only) runs the source as the caller into the
   scoring's snapshot, its rows numbered 1..rows_total in the source's order.
2. Each chunk (``chunk_rows`` rows after ``rows_done``) is one transaction that writes the
   chunk's rows into the target and moves ``rows_done`` (``ml.batch_scoring_progress``, which
   also checks that this worker still holds the job's lease and that no other attempt wrote the
   chunk). The ``sql`` path is one call, ``ml.score_chunk`` (the compiled function, in SQL); the
   ``worker`` path COPYs the rows out (``ml.batch_scoring_inputs``), predicts with the version's
   artifact (any model: SVMs, k-nearest neighbours, ...) and COPYs the results in. A worker
   killed mid-run leaves whole chunks behind it; the next attempt resumes after the last one.
3. ``ml.finish_batch_scoring`` marks the scoring succeeded in the job's own transaction, so the
   job's success and the scoring's land together.

A failure no retry can fix (the source or target refused, SQLSTATE classes 22, 42, 0A, P0)
fails the scoring and the job at once; other failures are retried by the queue (the last
attempt fails the scoring too), and a cancelled job's scoring fails.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgmlops.db import call, sql_errors, tenant_context
from pgmlops.errors import DatabaseError, LeaseLost
from pgmlops.jobs.handlers import JobContext, PermanentError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["predict_frame", "score"]

Conn = psycopg.Connection[Any]

# SQLSTATEs of input no retry can fix: the source, the target, the options, unsupported models.
_PERMANENT_CLASSES = ("22", "42", "0A", "P0")

# The chunk's results on their way to the target (one JSON document): COPY FROM refuses a target
# with row level security, so they land here first and are inserted as the caller.
_CHUNK_TABLE = "_pgmlops_score_chunk"


def _conninfo(conn: Conn) -> str:
    # A connection's dsn leaves the password out; put it back.
    return make_conninfo(conn.info.dsn, password=conn.info.password or None)


def score(ctx: JobContext) -> dict[str, Any]:
    """Run the batch scoring ``ctx.payload["batch_scoring_id"]`` to its end (see the module).

    Returns ``ml.finish_batch_scoring``'s summary: ``{batch_scoring_id, job_id, status:
    'succeeded', rows_total, rows_done, target, path, model_version_id}``.

    Raises:
        PermanentError: no such scoring, or the source, target or model refused (the scoring is
            marked failed).
        LeaseLost: the worker no longer holds the job (nothing after the last chunk commits).
    """
    scoring_id = str(ctx.payload["batch_scoring_id"])
    with sql_errors():
        row = ctx.conn.execute(
            """select b.path, b.target, b.keys, b.status, m.name, v.version, v.signature,
                      case when jsonb_array_length(d.transformations) > 0 then d.id end
               from ml.batch_scorings b join ml.model_versions v on v.id = b.model_version_id
               join ml.models m on m.id = v.model_id left join ml.datasets d on d.id = v.dataset_id
               where b.id = %s and b.tenant_id = (select ml.current_tenant())""", (scoring_id,)).fetchone()
    if row is None:
        raise PermanentError(f"batch scoring {scoring_id} does not exist")
    path, target, keys, status, model_name, version, signature, transformed = row
    if status in ("succeeded", "failed"):
        return dict(call(ctx.conn, "ml.finish_batch_scoring(%s)", (scoring_id,)))
    user = ctx.job.created_by
    try:
        with psycopg.connect(_conninfo(ctx.conn), application_name=f"pgmlops score {ctx.job.id}") as conn:

            @contextmanager
            def as_caller() -> Iterator[Conn]:
                with tenant_context(conn, ctx.tenant_id, user=user) as c:
                    yield c

            with as_caller():
                call(conn, "ml.stage_batch_scoring(%s)", (scoring_id,))
            model: Any = None
            while True:
                if ctx.lost.is_set():
                    raise LeaseLost(f"job {ctx.job.id} is no longer held by {ctx.worker_id}: stopped after the last chunk", "55000")
                with as_caller():
                    if path == "sql":
                        written = int(call(conn, "ml.score_chunk(%s, %s, %s)", (scoring_id, ctx.job.id, ctx.worker_id)))
                    else:
                        if model is None:
                            from pgmlops.models import load_model

                            model = load_model(conn, f"{model_name}@{version}")
                        written = _worker_chunk(conn, ctx, scoring_id, model, signature, target, list(keys), transformed)
                if written == 0:
                    break
    except DatabaseError as exc:
        if isinstance(exc, LeaseLost) and _cancelled(ctx):
            _fail(ctx, scoring_id, f"job {ctx.job.id} was cancelled")
            raise
        if exc.sqlstate and exc.sqlstate.startswith(_PERMANENT_CLASSES) and not isinstance(exc, LeaseLost):
            _fail(ctx, scoring_id, str(exc))
            raise PermanentError(f"batch scoring {scoring_id}: {exc}") from exc
        if ctx.job.attempts >= ctx.job.max_attempts and not isinstance(exc, LeaseLost):
            _fail(ctx, scoring_id, str(exc))
        raise
    return dict(call(ctx.conn, "ml.finish_batch_scoring(%s)", (scoring_id,)))


def _cancelled(ctx: JobContext) -> bool:
    """Whether the job was cancelled (then no attempt will finish the scoring: it fails)."""
    try:
        with psycopg.connect(_conninfo(ctx.conn)) as conn, tenant_context(conn, ctx.tenant_id):
            return bool(call(conn, "ml.job_result(%s)", (ctx.job.id,)).get("status") == "cancelled")
    except (DatabaseError, psycopg.Error):
        return False


def _fail(ctx: JobContext, scoring_id: str, error: str) -> None:
    """Mark the scoring failed, committed on a connection of its own (the job's transaction is
    about to roll back)."""
    try:
        with psycopg.connect(_conninfo(ctx.conn)) as conn, tenant_context(conn, ctx.tenant_id):
            call(conn, "ml.finish_batch_scoring(%s, %s)", (scoring_id, error))
    except (DatabaseError, psycopg.Error):  # the job's own failure is what matters
        pass


def _worker_chunk(conn: Conn, ctx: JobContext, scoring_id: str, model: Any, signature: dict[str, Any],
                  target: str, keys: list[str], transformed: UUID | None) -> int:
    """One chunk of the worker path, in the caller's open transaction: COPY the rows' inputs out
    (the model's inputs, or the raw columns of a training set's transformations, ``transformed``
    being its id: they are applied by ``ml.apply_transformations``), predict, COPY the results in,
    insert them with their key columns into the target as the caller, and record the progress.
    Returns the rows written (0: nothing left).

    Each direction moves one JSON document per chunk (the inputs, then the results, as arrays
    of objects): encoded and parsed in C on both sides, where a row per COPY
    line costs ~50 us of Python per row. The key columns never leave the database: the insert
    joins them from the snapshot by row_number."""
    import pandas as pd

    with sql_errors():
        done, total, chunk, version_id = conn.execute(
            "select rows_done, rows_total, chunk_rows, model_version_id from ml.batch_scorings where id = %s",
            (scoring_id,)).fetchone() or (0, 0, 0, None)
        if done >= total:
            return 0
        upto = min(done + chunk, total)
        with conn.cursor() as cur, cur.copy("copy (select ml.batch_scoring_inputs(%s, %s, %s)) to stdout",
                                            (scoring_id, done, upto)) as copy:
            copy.set_types(["text"])
            [(document,)] = list(copy.rows())
        inputs = json.loads(document)
        if len(inputs["rows"]) != upto - done:
            raise RuntimeError(f"batch scoring {scoring_id}: rows {done + 1}..{upto} gave {len(inputs['rows'])} rows")
        frame = pd.DataFrame(inputs["rows"], columns=inputs["columns"])
        if transformed is not None:
            from pgmlops.features import apply_transformations

            frame = apply_transformations(conn, transformed, frame)
        predictions, scores, probabilities = predict_frame(model, frame, str(signature.get("task")), signature.get("classes"))
        results = json.dumps([{"row_number": done + 1 + i, "prediction": predictions[i], "score": _finite(scores[i]),
                               "probabilities": None if probabilities is None else probabilities[i]}
                              for i in range(upto - done)], allow_nan=False)
        chunk_table = sql.Identifier(_CHUNK_TABLE)
        conn.execute(sql.SQL("create temp table if not exists {} (doc jsonb) on commit delete rows").format(chunk_table))
        with conn.cursor() as cur, cur.copy(sql.SQL("copy {} (doc) from stdin").format(chunk_table)) as copy:
            copy.set_types(["text"])
            copy.write_row((results,))
        rel = conn.execute("select n.nspname, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
                           "where c.oid = %s::regclass", (target,)).fetchone()
        assert rel is not None
        table = sql.Identifier(rel[0], rel[1])
        key_columns = sql.SQL("").join(sql.SQL("{}, ").format(sql.Identifier(k)) for k in keys)
        key_values = sql.SQL("").join(sql.SQL("k.{}, ").format(sql.Identifier(k)) for k in keys)
        lateral = (sql.SQL("join ml.batch_scoring_keys(%(id)s, %(from)s, %(to)s) s on s.row_number = r.row_number "
                           "cross join lateral jsonb_populate_record(null::{}, s.key) k").format(table) if keys else sql.SQL(""))
        conn.execute(sql.SQL(
            "insert into {table} (batch_scoring_id, row_number, {keys}prediction, score, probabilities, model_version_id) "
            "select %(id)s, r.row_number, {values}r.prediction, r.score, r.probabilities, %(version)s "
            "from pg_temp.{chunk} c cross join lateral jsonb_to_recordset(c.doc) as r (row_number bigint, prediction jsonb, "
            "score float8, probabilities jsonb) {lateral} order by r.row_number").format(
                table=table, keys=key_columns, values=key_values, chunk=chunk_table, lateral=lateral),
            {"id": scoring_id, "from": done, "to": upto, "version": version_id})
    call(conn, "ml.batch_scoring_progress(%s, %s, %s, %s, %s)", (scoring_id, ctx.job.id, ctx.worker_id, done, upto))
    return upto - done


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def _native(value: Any) -> Any:
    """A numpy scalar as the plain Python value JSON takes."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def predict_frame(model: Any, frame: pd.DataFrame, task: str, classes: list[Any] | None
                  ) -> tuple[list[Any], list[float | None], list[dict[str, float]] | None]:
    """(prediction, score, probabilities) per row of ``frame`` from a fitted pipeline, with the
    meaning ml.predict_batch gives them: classification, the label, the positive class's
    probability (binary) or the largest one (or the decision function without probabilities),
    and ``{class: probability}``; regression, the value twice; anomaly detection, -1 / 1 and
    the anomaly score (-score_samples)."""
    import numpy as np

    if task == "classification":
        labels = [_native(v) for v in model.predict(frame)]
        if hasattr(model, "predict_proba"):
            proba: np.ndarray[Any, Any] = np.asarray(model.predict_proba(frame), dtype=float)
            names = list(classes) if classes is not None else [_native(c) for c in model.classes_]
            scores: list[float | None] = [float(p[1]) if proba.shape[1] == 2 else float(p.max()) for p in proba]
            probabilities = [{str(c): float(p) for c, p in zip(names, row, strict=True)} for row in proba]
            return labels, scores, probabilities
        if hasattr(model, "decision_function"):
            decision = np.asarray(model.decision_function(frame), dtype=float)
            return labels, [float(d) if decision.ndim == 1 else None for d in decision], None
        return labels, [None] * len(labels), None
    if task == "anomaly_detection":
        labels = [int(v) for v in model.predict(frame)]
        return labels, [float(-s) for s in model.score_samples(frame)], None
    values = [float(v) for v in np.asarray(model.predict(frame), dtype=float).reshape(len(frame), -1)[:, 0]]
    return list(values), list(values), None
