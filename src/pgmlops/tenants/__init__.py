"""Tenants and their members."""

from __future__ import annotations

from pgmlops.tenants._tenants import (
    add_member,
    as_service,
    as_user,
    create_tenant,
    remove_member,
)

__all__ = [
    "add_member",
    "as_service",
    "as_user",
    "create_tenant",
    "remove_member",
]
