"""Tenants and members from Python: ``ml.create_tenant`` and the membership functions.

To act as a tenant's member or for a tenant, use :func:`pgmlops.db.tenant_context`.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg

from pgmlops.db import call

__all__ = ["add_member", "create_tenant", "remove_member"]

ROLES = ("owner", "admin", "ml_engineer", "viewer")


def create_tenant(conn: psycopg.Connection[Any], name: str, owner: UUID | str | None = None) -> UUID:
    """Create a tenant (see ml.create_tenant) and return its id."""
    return UUID(str(call(conn, "ml.create_tenant(%s, %s)", (name, owner))))


def add_member(conn: psycopg.Connection[Any], tenant: UUID | str, user_id: UUID | str, role: str) -> None:
    """Add ``user_id`` to ``tenant`` with ``role`` (owner, admin, ml_engineer or viewer)."""
    call(conn, "ml.add_tenant_member(%s, %s, %s)", (tenant, user_id, role))


def remove_member(conn: psycopg.Connection[Any], tenant: UUID | str, user_id: UUID | str) -> bool:
    """Remove ``user_id`` from ``tenant``; False when it was not a member."""
    return bool(call(conn, "ml.remove_tenant_member(%s, %s)", (tenant, user_id)))
