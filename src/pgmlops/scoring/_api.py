"""Serving from Python: predictions, deployments, feedback and batch scorings, over the SQL API.

A thin layer over sql/scoring/{predict,deployments,feedback,batch}.sql: arm choice, validation,
the prediction log, gates and audit live in the database, so Python, psql, supabase-py and the
edge functions meet the same rules. Each function makes one call of the SQL API.

Every function takes an open psycopg connection. Given ``tenant``, the call runs in its own
transaction of a service caller acting for that tenant (:func:`pgmlops.db.tenant_context`,
committed when it returns); without it, the call joins the connection's transaction, which
must already act for a tenant (a ``tenant_context`` block, or a signed-in user's claims).
Errors from the SQL API leave as :mod:`pgmlops.errors` exceptions carrying their SQLSTATE
(:func:`pgmlops.db.call`); a refused call writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from pgmlops.db import call, sql_errors, tenant_context

__all__ = [
    "batch_scoring",
    "deploy",
    "deployment",
    "deployment_history",
    "predict",
    "predict_batch",
    "record_feedback",
    "record_feedback_bulk",
    "rollback",
    "score",
]

TenantId = UUID | str | None


@contextmanager
def _acting(conn: psycopg.Connection[Any], tenant: TenantId) -> Iterator[psycopg.Connection[Any]]:
    """``conn`` acting for ``tenant`` (one transaction) when given, else as it is."""
    with tenant_context(conn, tenant) if tenant is not None else nullcontext(conn):
        yield conn


def _value(conn: psycopg.Connection[Any], tenant: TenantId, expression: str, params: Sequence[Any]) -> Any:
    with _acting(conn, tenant):
        return call(conn, expression, params)


def predict(conn: psycopg.Connection[Any], project: str, features: Mapping[str, Any] | None = None,
            entity_key: str | None = None, *, tenant: TenantId = None) -> dict[str, Any]:
    """Score one row with the project's active deployment (``ml.predict``) and log it.

    ``features`` maps each input of the model to its value; without it, the entity
    ``entity_key`` names is read from the online store. ``entity_key`` also makes the arm
    sticky: the same key always gets the same arm.

    Returns ``{prediction, score, probabilities ({label: p}, classifiers that have them),
    is_anomaly (anomaly detection), model, version, arm, deployment_id, prediction_id,
    latency_ms}``; the ``prediction_id`` is what :func:`record_feedback` takes.

    Raises:
        InvalidInput: features not an object; a missing, unknown or mistyped feature (the
            message names it and its dtype); neither features nor an entity key.
        NotFound: no such project, no active deployment, or an entity absent from the online
            store.
        DatabaseError: 0A000, the routed version is scored by workers (use :func:`score`).
        AccessDenied: the caller is not a member of the tenant.
    """
    result = _value(conn, tenant, "ml.predict(%s, %s, %s)",
                    (project, Jsonb(dict(features)) if features is not None else None, entity_key))
    assert result is not None
    return dict(result)


def predict_batch(conn: psycopg.Connection[Any], project: str, source: str, options: Mapping[str, Any] | None = None,
                  *, tenant: TenantId = None) -> list[dict[str, Any]]:
    """Score every row of ``source`` (a table name or a query: SELECT, WITH, VALUES, TABLE) in
    one statement (``ml.predict_batch``) with the project's deployed version, reading
    ``source`` with the caller's own rights; writes nothing. One dict per source row, in the
    source's order: ``{row_number, key (the source's other columns), prediction, score,
    probabilities, model_version_id}``. ``options``: ``{"model": "churn@3" | "version": 3 |
    "alias": "champion", "key": [columns]}``. For large sources prefer :func:`score`, which
    writes to a table in chunks.

    Raises:
        InvalidInput: bad options, or ``source`` lacks an input column of the model or holds
            one of another type (the message names it).
        NotFound: no such project, model or version, or no active deployment.
        DatabaseError: 0A000, the version has no SQL form (use :func:`score`); 42P01 / 42601 a
            source that is not a readable table or a valid query.
        AccessDenied: the caller may not read ``source``, or is not a member.
    """
    with _acting(conn, tenant), sql_errors(), conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("select * from ml.predict_batch(%s, %s, %s)",
                           (project, source, Jsonb(dict(options or {})))).fetchall()


def deploy(conn: psycopg.Connection[Any], project: str, strategy: str, arms: Sequence[Mapping[str, Any]],
           options: Mapping[str, Any] | None = None, *, tenant: TenantId = None) -> UUID:
    """Make a new deployment of ``project`` active (``ml.deploy``); the one it supersedes is
    what :func:`rollback` returns to. Returns the new deployment's id.

    ``strategy``: ``single`` or ``blue_green`` (one live arm), ``ab`` (live arms whose weights
    sum to 1), ``shadow`` (one live arm and shadow arms), ``canary`` (two live arms without
    weights: the second follows the schedule). ``arms``: one mapping per arm, ``{"arm": "a",
    "model": "churn", "version": 3}`` (or ``"alias": "champion"``, resolved now) with
    ``"weight"`` and ``"role"`` (``live`` or ``shadow``). ``options``: ``{"reason": ...}``, and
    for a canary ``{"schedule": [{"weight": 0.1, "after": "0 minutes"}, ...], "abort":
    {"metric": "error_rate", "max": 0.2, "window": "1 hour", "min_samples": 100},
    "canary_arm": ...}``.

    Raises:
        InvalidInput: a bad strategy, arm, weight or option (the message names it).
        NotFound: no such project, model, version or alias.
        DatabaseError: 23514, a live arm's version is not approved or fails the project's
            promotion gates (DETAIL: every arm's gates); 0A000, a shadow arm scored by workers.
        InvalidState: a canary with no active deployment to fall back to.
        AccessDenied: the caller may not deploy in the tenant.
    """
    result = _value(conn, tenant, "ml.deploy(%s, %s, %s, %s)",
                    (project, strategy, Jsonb([dict(a) for a in arms]), Jsonb(dict(options or {}))))
    assert result is not None
    return UUID(str(result))


def rollback(conn: psycopg.Connection[Any], project: str, *, tenant: TenantId = None) -> UUID:
    """Go back to the deployment that was active before the current one (``ml.rollback``);
    returns the id of the deployment now active.

    Raises:
        NotFound: no such project.
        InvalidState: no active deployment, or none before it to return to.
        AccessDenied: the caller may not deploy in the tenant.
    """
    result = _value(conn, tenant, "ml.rollback(%s)", (project,))
    assert result is not None
    return UUID(str(result))


def deployment(conn: psycopg.Connection[Any], project: str, *, tenant: TenantId = None) -> dict[str, Any] | None:
    """The project's active deployment (``ml.deployment``) with its arms and their current
    weights (a canary's move along its schedule), or None when nothing is deployed.

    Raises:
        NotFound: no such project.
    """
    result = _value(conn, tenant, "ml.deployment(%s)", (project,))
    return dict(result) if result is not None else None


def deployment_history(conn: psycopg.Connection[Any], project: str, *, tenant: TenantId = None) -> list[dict[str, Any]]:
    """Every deployment the project has had, newest first (``ml.deployment_history``), each as
    :func:`deployment` shows one plus its status (``active``, ``superseded``, ``rolled_back``,
    ``aborted``), reason, who made it and when, and who ended it, when and why; ``[]`` when
    there are none.

    Raises:
        NotFound: no such project.
    """
    return [dict(d) for d in _value(conn, tenant, "ml.deployment_history(%s)", (project,))]


def record_feedback(conn: psycopg.Connection[Any], prediction_id: UUID | str, label: Any,
                    source: str | None = None, *, tenant: TenantId = None) -> int:
    """Record the realized outcome ``label`` (any JSON value) of a logged prediction
    (``ml.record_feedback``); recording again for the same prediction and source replaces it.
    Returns the feedback row's id.

    Raises:
        NotFound: no such prediction in the tenant's log.
        InvalidInput: a null label or a bad source.
    """
    result = _value(conn, tenant, "ml.record_feedback(%s, %s, %s)", (str(prediction_id), Jsonb(label), source))
    assert result is not None
    return int(result)


def record_feedback_bulk(conn: psycopg.Connection[Any], feedback: Sequence[Mapping[str, Any]], *,
                         tenant: TenantId = None) -> int:
    """Record many outcomes at once (``ml.record_feedback_bulk``): ``[{"prediction_id": ...,
    "label": ..., "source"?: ...}, ...]``, all or none. Returns how many were recorded.

    Raises:
        InvalidInput: an item is malformed (the message gives its position).
        NotFound: an item names a prediction not in the tenant's log.
    """
    result = _value(conn, tenant, "ml.record_feedback_bulk(%s)",
                    (Jsonb([{k: str(v) if isinstance(v, UUID) else v for k, v in item.items()} for item in feedback]),))
    assert result is not None
    return int(result)


def score(conn: psycopg.Connection[Any], project: str, source: str, target: str,
          options: Mapping[str, Any] | None = None, *, tenant: TenantId = None) -> int:
    """Queue a batch scoring of ``source`` (a table name or a query) into the table ``target``
    (``ml.score``: appended to, or created with ``batch_scoring_id, row_number, <key columns>,
    prediction, score, probabilities, model_version_id``) with the project's deployed version,
    fixed now; returns the job id (kind ``score``; a worker runs it), whose progress
    :func:`batch_scoring` reads. ``options``: ``{"path": "sql" | "worker", "chunk_rows": n,
    "model" | "version" | "alias": ..., "key": [columns]}``; without a path, the faster one for
    the version (``sql`` for most compiled versions; docs/batch-scoring.md).

    Raises:
        InvalidInput: bad options, missing or mistyped input columns, bad key columns.
        NotFound: no such project, model or version, or no active deployment.
        DatabaseError: 0A000 path sql for a version scored by workers; 42809 a target that is
            not a table; 42P01 / 42601 a bad source.
        AccessDenied: a target or source the caller may not use; a viewer or non-member.
    """
    result = _value(conn, tenant, "ml.score(%s, %s, %s, %s)", (project, source, target, Jsonb(dict(options or {}))))
    assert result is not None
    return int(result)


def batch_scoring(conn: psycopg.Connection[Any], job_id: int, *, tenant: TenantId = None) -> dict[str, Any] | None:
    """The progress of the batch scoring that job ``job_id`` runs (its ``ml.batch_scorings`` row
    in the tenant): ``{id, project, model, version, source, target, path, status, rows_total,
    rows_done, error, created_at, started_at, finished_at}``, or None when the job has no
    batch scoring in the tenant."""
    with _acting(conn, tenant), sql_errors(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            """select b.id, p.name as project, m.name as model, v.version, b.source, b.target, b.path, b.status,
                      b.rows_total, b.rows_done, b.error, b.created_at, b.started_at, b.finished_at
               from ml.batch_scorings b
               join ml.projects p on p.id = b.project_id
               join ml.model_versions v on v.id = b.model_version_id
               join ml.models m on m.id = v.model_id
               where b.job_id = %s and b.tenant_id = (select ml.current_tenant())
               order by b.created_at desc limit 1""", (job_id,)).fetchone()
    return row
