"""The exceptions pgmlops raises: every one derives from :class:`PgmlopsError`.

Errors of the SQL API carry the SQLSTATE the database raised; :func:`pgmlops.db.sql_errors` is
the one place that maps driver errors onto these classes. Python-side checks of the same kind
raise the same class with the SQLSTATE the SQL would have used (``22023`` for a bad argument),
so a caller, and the CLI, handle both alike.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "AccessDenied",
    "ConfigurationError",
    "DatabaseError",
    "InvalidInput",
    "InvalidState",
    "LeaseLost",
    "NotFound",
    "PgmlopsError",
    "PromotionRefused",
]


class PgmlopsError(Exception):
    """Base class of every error pgmlops raises on purpose.

    ``message`` is the one-line summary, ``sqlstate`` the five-character SQLSTATE when the error
    has one (SQL errors, and Python checks that mirror them), ``detail`` more context and
    ``hint`` what to do about it (each None when absent). ``str()`` is the message.
    """

    def __init__(self, message: str, sqlstate: str | None = None, detail: str | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate
        self.detail = detail
        self.hint = hint


class ConfigurationError(PgmlopsError):
    """pgmlops cannot find or reach its database, or is set up wrongly."""


class DatabaseError(PgmlopsError):
    """An error raised by the SQL API. ``sqlstate`` is the five-character SQLSTATE; ``str()``
    adds the DETAIL and HINT lines PostgreSQL sent, as psql prints them."""

    def __str__(self) -> str:
        parts = [self.message]
        if self.detail:
            parts.append(f"DETAIL: {self.detail}")
        if self.hint:
            parts.append(f"HINT: {self.hint}")
        return "\n".join(parts)


class InvalidInput(DatabaseError, ValueError):
    """Bad input (SQLSTATE class 22, or 54000 for oversize values); nothing was written. Also a
    ``ValueError``, for callers that catch Python's own."""


class AccessDenied(DatabaseError):
    """The caller may not do this (SQLSTATE 42501); nothing was written."""


class NotFound(DatabaseError):
    """The object does not exist or is not visible to the caller (SQLSTATE P0002), or names a
    column or feature that does not exist (42703)."""


class InvalidState(DatabaseError):
    """The object is not in a state that allows this (SQLSTATE 55000), e.g. an archived feature
    group refusing writes; nothing was written."""


class LeaseLost(InvalidState):
    """The worker no longer holds the job (SQLSTATE 55000): the queue refuses its result, and a
    handler that sees its lease lost (``JobContext.lost``) stops with this error."""


class PromotionRefused(DatabaseError):
    """``ml.promote`` refused (SQLSTATE 23514): at least one gate failed and nothing changed.

    ``gates`` lists every gate checked as ``{gate, passed, message}``; ``failed`` the messages
    of the failed ones (``"roc_auc 0.81 < 0.9"``, ``"approvals 0 < 1"``).
    """

    def __init__(self, message: str, sqlstate: str | None = None, detail: str | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, sqlstate, detail, hint)
        try:
            gates: Any = json.loads(detail) if detail else []
        except ValueError:
            gates = []
        self.gates: list[dict[str, Any]] = list(gates) if isinstance(gates, list) else []
        self.failed: list[str] = [g["message"] for g in self.gates if not g.get("passed")]
