"""Calling the SQL API: the one place where driver errors become pgmlops errors.

Every call pgmlops makes to its SQL API goes through :func:`call` (one ``ml.*`` function, one
value back) or, for what is not one function call (reading a relation, COPY, a block of
statements), runs inside :func:`sql_errors`. Either way a ``psycopg.Error`` leaves as the
:class:`~pgmlops.errors.PgmlopsError` its SQLSTATE stands for, the driver's error chained as
``__cause__``:

====================  ==========================================================
SQLSTATE              pgmlops error
====================  ==========================================================
class 22, 54000       :class:`~pgmlops.errors.InvalidInput`
42501                 :class:`~pgmlops.errors.AccessDenied`
P0002, 42703          :class:`~pgmlops.errors.NotFound`
55000                 :class:`~pgmlops.errors.LeaseLost` ("not held by worker"),
                      else :class:`~pgmlops.errors.InvalidState`
23514 ``promotion``   :class:`~pgmlops.errors.PromotionRefused` (gates in DETAIL)
anything else         :class:`~pgmlops.errors.DatabaseError` (a broken connection
                      too: no SQLSTATE)
====================  ==========================================================
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

from pgmlops.errors import (
    AccessDenied,
    DatabaseError,
    InvalidInput,
    InvalidState,
    LeaseLost,
    NotFound,
    PromotionRefused,
)

__all__ = ["call", "sql_errors", "translate"]

# One call of an ml.* function: the SQL API, never the private schema (no client reaches it), and one
# statement (values travel as parameters, so a call needs no semicolon).
_CALL = re.compile(r"^\s*ml\.[a-z_][a-z0-9_]*\s*\([^;]*\)\s*$", re.DOTALL)


def translate(exc: psycopg.Error) -> DatabaseError:
    """The pgmlops error a driver error from the SQL API stands for (see the module's table)."""
    diag = exc.diag
    state = exc.sqlstate or ""
    message = diag.message_primary or str(exc).strip() or type(exc).__name__
    cls: type[DatabaseError]
    if state.startswith("22") or state == "54000":
        cls = InvalidInput
    elif state == "42501":
        cls = AccessDenied
    elif state in ("P0002", "42703"):
        cls = NotFound
    elif state == "55000":
        # Only the queue's refusals are about leases; other 55000s are states such as "archived".
        cls = LeaseLost if "held by worker" in message else InvalidState
    elif state == "23514" and message.startswith("promotion of "):
        cls = PromotionRefused
    else:
        cls = DatabaseError
    return cls(message, state or None, diag.message_detail, diag.message_hint)


@contextmanager
def sql_errors() -> Iterator[None]:
    """Run the block with driver errors turned into pgmlops errors (see :func:`translate`).

    Use it around what :func:`call` cannot express: reading ``ml.*`` relations, COPY, several
    statements in one transaction block. Errors the block raises that are not the driver's pass
    through unchanged.
    """
    try:
        yield
    except psycopg.Error as exc:
        raise translate(exc) from exc


def call(conn: psycopg.Connection[Any], expression: str, params: Sequence[Any] | dict[str, Any] = ()) -> Any:
    """Call one function of the SQL API and return the value it returns.

    ``expression`` is the call as SQL, placeholders and casts included, e.g.
    ``"ml.enqueue(%s, %s, %s, coalesce(%s, now()), %s)"``; it runs as ``select <expression>``
    in the caller's transaction (an autocommit connection commits it). A function returning a
    set gives its first row's value (or None for no row).

    Raises:
        InvalidInput: ``expression`` is not a call of an ``ml.*`` function (SQLSTATE 42883:
            only the SQL API a client may call is called); and whatever the SQL raises,
            translated (see :func:`translate`).
    """
    if not _CALL.match(expression):
        raise InvalidInput(f"not a call of the SQL API (ml.<function>(...)): {expression[:60]!r}", "42883")
    with sql_errors():
        row = conn.execute(f"select {expression}", params).fetchone()
    return None if row is None else row[0]
