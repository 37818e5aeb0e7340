"""Retraining policies and the retraining history from Python, over the SQL API
(sql/retraining/policies.sql; docs/retraining.md, "Retraining policies").

A thin layer: the validation, defaults, trigger checks and history live in the database, so
Python, psql, supabase-py and the edge functions meet the same rules. Each function makes one
call of the SQL API.

Every function takes an open psycopg connection. Given ``tenant``, the call runs in its own
transaction of a service caller acting for that tenant (:func:`pgmlops.db.tenant_context`,
committed when it returns); without it, the call joins the connection's transaction, which must
already act for a tenant. Errors leave as :mod:`pgmlops.errors` exceptions carrying their
SQLSTATE (:func:`pgmlops.db.call`); a refused call writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

from pgmlops.db import call, tenant_context

__all__ = ["remove_retraining_policy", "retraining_history", "retraining_policy", "set_retraining_policy"]

TenantId = UUID | str | None


def _value(conn: psycopg.Connection[Any], tenant: TenantId, expression: str, params: tuple[Any, ...]) -> Any:
    with tenant_context(conn, tenant) if tenant is not None else nullcontext(conn):
        return call(conn, expression, params)


def set_retraining_policy(conn: psycopg.Connection[Any], project: str, policy: Mapping[str, Any], *,
                          tenant: TenantId = None) -> dict[str, Any]:
    """Set ``project``'s retraining policy (``ml.set_retraining_policy``), replacing any earlier
    one: triggers (dataset_drift, feature_drift, metric_drop, new_labels, schedule), cooldown,
    recipe, data, evaluation, online, rollback and promotion. Returns the policy as stored, every
    default filled; audited, and published as ``policy.set`` on topic ``retraining``.

    Raises:
        InvalidInput: a bad policy; the message names the field as a path
            (``policy.triggers[1].share: must be <= 1, got 2``). Nothing is written.
        NotFound: no such project in the tenant.
        AccessDenied: a viewer or a non-member.
    """
    result = _value(conn, tenant, "ml.set_retraining_policy(%s, %s)", (project, Jsonb(dict(policy))))
    assert result is not None
    return dict(result)


def retraining_policy(conn: psycopg.Connection[Any], project: str, *, tenant: TenantId = None) -> dict[str, Any] | None:
    """``project``'s retraining policy (``ml.retraining_policy``): ``{project, project_id, policy,
    updated_by, updated_at, created_at}``, or None when it has none.

    Raises:
        NotFound: no such project in the tenant.
    """
    result = _value(conn, tenant, "ml.retraining_policy(%s)", (project,))
    return None if result is None else dict(result)


def remove_retraining_policy(conn: psycopg.Connection[Any], project: str, *, tenant: TenantId = None) -> bool:
    """Remove ``project``'s retraining policy (``ml.remove_retraining_policy``); its history stays.
    Returns whether there was one.

    Raises:
        NotFound: no such project in the tenant.
        AccessDenied: a viewer or a non-member.
    """
    return bool(_value(conn, tenant, "ml.remove_retraining_policy(%s)", (project,)))


def retraining_history(conn: psycopg.Connection[Any], project: str, limit: int = 100, *,
                       tenant: TenantId = None) -> list[dict[str, Any]]:
    """``project``'s retraining events, newest first, at most ``limit`` (``ml.retraining_history``):
    each ``{id, at, as_of, kind, cycle_id, report_id, evidence, data, candidate, test_results,
    decision, reason, job_id, created_by}`` (what ``pgmlops retraining history`` prints).

    Raises:
        InvalidInput: ``limit`` outside 1..10000.
        NotFound: no such project in the tenant.
    """
    result = _value(conn, tenant, "ml.retraining_history(%s, %s)", (project, limit))
    return [dict(e) for e in result or []]
