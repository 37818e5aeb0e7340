"""Tenants and their members. Acting as one: :func:`pgmlops.db.tenant_context`."""

from __future__ import annotations

from pgmlops.tenants._tenants import (
    add_member,
    create_tenant,
    remove_member,
)

__all__ = [
    "add_member",
    "create_tenant",
    "remove_member",
]
