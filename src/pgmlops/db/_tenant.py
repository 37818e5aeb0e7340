"""Acting as a tenant: the one context in which any pgmlops code calls the SQL API for a tenant.

PostgREST runs each request as one transaction that starts with the caller's role and JWT
claims set locally::

    select set_config('role', 'authenticated', true),
           set_config('request.jwt.claims', '{"role": "authenticated", "sub": "..."}', true)

(``set_config('role', r, true)`` is ``set local role r``). :func:`tenant_context` does exactly
that, so the library, the CLI, the workers and the demo meet the same RLS policies and the same
rules for the acting tenant (``ml.current_tenant()``) as a Supabase client does, and nothing
outlives the transaction: a connection handed back to a pool carries no tenant, whatever the
block did.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import psycopg

from pgmlops.db._sql import sql_errors
from pgmlops.errors import InvalidInput

__all__ = ["claims_for", "tenant_context"]

# The roles PostgREST switches to (Supabase's): the JWT's role claim names one of them.
ROLES = ("anon", "authenticated", "service_role")


def claims_for(tenant: UUID | str | None = None, *, user: UUID | str | None = None, role: str | None = None,
               app_metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JWT claims :func:`tenant_context` sets, as Supabase Auth would issue them.

    ``{"role": ..., "sub": user, "app_metadata": {..., "tenant_id": tenant}}``: ``role`` defaults
    to ``authenticated`` for a user and ``service_role`` otherwise; ``sub`` and ``app_metadata``
    appear only when there is something to put in them.
    """
    role = role or ("authenticated" if user is not None else "service_role")
    if role not in ROLES:
        raise InvalidInput(f"role: must be one of {', '.join(ROLES)}, got {role!r}", "22023")
    claims: dict[str, Any] = {"role": role}
    if user is not None:
        claims["sub"] = str(user)
    meta = dict(app_metadata or {})
    if tenant is not None:
        meta["tenant_id"] = str(tenant)
    if meta:
        claims["app_metadata"] = meta
    return claims


@contextmanager
def tenant_context(conn: psycopg.Connection[Any], tenant: UUID | str | None = None, *,
                   user: UUID | str | None = None, role: str | None = None,
                   app_metadata: Mapping[str, Any] | None = None) -> Iterator[psycopg.Connection[Any]]:
    """Run the block as one transaction of a caller acting for ``tenant``, as PostgREST runs a request.

    * ``tenant_context(conn, tenant)``: a service caller (role ``service_role``) acting for
      ``tenant``, named in the claims' ``app_metadata.tenant_id``, as a worker or an edge
      function with the service key does. Without ``tenant`` the SQL refuses calls that need
      one (22023), and reads see every tenant (service_role bypasses RLS).
    * ``tenant_context(conn, tenant, user=uid)``: the signed-in user ``uid`` (role
      ``authenticated``, ``sub`` = ``uid``) acting in ``tenant``; without ``tenant``, in the only
      tenant the user belongs to.
    * ``tenant_context(conn, role="anon")``: an anonymous client.

    Sets the role and ``request.jwt.claims`` transaction-locally, and blanks the
    ``pgmlops.tenant_id`` setting, which would otherwise override the claims' tenant. Opens a
    transaction (commits when the block ends, rolls back on an exception); inside an open
    transaction it is a savepoint, and the role and settings the transaction had come back when
    the block ends. Yields ``conn``.

    The login role must be allowed to ``set role`` to ``role`` (pgmlops' migration grants the
    three roles to the role that installs it; Supabase grants them to ``postgres``).

    Raises:
        InvalidInput: ``role`` is not anon, authenticated or service_role.
        AccessDenied: the login role may not switch to ``role``.
    """
    claims = claims_for(tenant, user=user, role=role, app_metadata=app_metadata)
    nested = conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
    with conn.transaction():
        saved = None
        with sql_errors():  # only these statements: the block's own errors are the block's
            if nested:
                saved = conn.execute("select current_setting('role'), current_setting('request.jwt.claims', true), "
                                     "current_setting('pgmlops.tenant_id', true)").fetchone()
            _set(conn, claims["role"], json.dumps(claims), "")
        yield conn
        if saved is not None and conn.info.transaction_status != psycopg.pq.TransactionStatus.INERROR:
            with sql_errors():
                _set(conn, saved[0], saved[1] or "", saved[2] or "")


def _set(conn: psycopg.Connection[Any], role: str, claims: str, tenant_setting: str) -> None:
    # One round trip, in the order PostgREST sends them: the claims, then the role.
    conn.execute("select set_config('request.jwt.claims', %s, true), set_config('pgmlops.tenant_id', %s, true), "
                 "set_config('role', %s, true)", (claims, tenant_setting, role))
