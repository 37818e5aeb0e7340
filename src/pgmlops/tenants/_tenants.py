"""Tenants and members from Python, and acting as a Supabase user the way PostgREST does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from pgmlops.errors import translate

__all__ = ["add_member", "as_service", "as_user", "create_tenant", "remove_member"]

ROLES = ("owner", "admin", "ml_engineer", "viewer")


def create_tenant(conn: psycopg.Connection[Any], name: str, owner: UUID | str | None = None) -> UUID:
    """Create a tenant (see ml.create_tenant) and return its id."""
    try:
        row = conn.execute("select ml.create_tenant(%s, %s)", (name, owner)).fetchone()
    except psycopg.Error as exc:
        raise translate(exc) from exc
    assert row is not None
    return UUID(str(row[0]))


def add_member(conn: psycopg.Connection[Any], tenant: UUID | str, user_id: UUID | str, role: str) -> None:
    """Add ``user_id`` to ``tenant`` with ``role`` (owner, admin, ml_engineer or viewer)."""
    try:
        conn.execute("select ml.add_tenant_member(%s, %s, %s)", (tenant, user_id, role))
    except psycopg.Error as exc:
        raise translate(exc) from exc


def remove_member(conn: psycopg.Connection[Any], tenant: UUID | str, user_id: UUID | str) -> bool:
    """Remove ``user_id`` from ``tenant``; False when it was not a member."""
    try:
        row = conn.execute("select ml.remove_tenant_member(%s, %s)", (tenant, user_id)).fetchone()
    except psycopg.Error as exc:
        raise translate(exc) from exc
    return bool(row and row[0])


@contextmanager
def as_user(conn: psycopg.Connection[Any], user_id: UUID | str | None, *, role: str = "authenticated",
            tenant_id: UUID | str | None = None, app_metadata: dict[str, Any] | None = None) -> Iterator[None]:
    """Run the block as PostgREST runs a request: ``set local role`` plus ``request.jwt.claims``.

    Must be used inside a transaction (``with conn.transaction():``); the role and claims end
    with it. ``user_id`` None with role ``anon`` acts as an anonymous client. ``tenant_id`` puts
    the tenant in the JWT's app_metadata, as a custom access-token hook would.
    """
    claims: dict[str, Any] = {"role": role}
    if user_id is not None:
        claims["sub"] = str(user_id)
    meta = dict(app_metadata or {})
    if tenant_id is not None:
        meta["tenant_id"] = str(tenant_id)
    if meta:
        claims["app_metadata"] = meta
    conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
    conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
    yield


@contextmanager
def as_service(conn: psycopg.Connection[Any], tenant_id: UUID | str) -> Iterator[None]:
    """Run the block as the service role acting for ``tenant_id`` (inside a transaction)."""
    with as_user(conn, None, role="service_role", tenant_id=tenant_id):
        yield
