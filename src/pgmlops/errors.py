"""The exceptions pgmlops raises, and how database errors map onto them."""

from __future__ import annotations

import psycopg

__all__ = [
    "AccessDenied",
    "ConfigurationError",
    "DatabaseError",
    "InvalidInput",
    "InvalidState",
    "LeaseLost",
    "NotFound",
    "PgmlopsError",
    "translate",
]


class PgmlopsError(Exception):
    """Base class of every error pgmlops raises on purpose."""


class ConfigurationError(PgmlopsError):
    """pgmlops cannot find or reach its database, or is set up wrongly."""


class DatabaseError(PgmlopsError):
    """An error raised by the SQL API. ``sqlstate`` is the five-character SQLSTATE."""

    def __init__(self, message: str, sqlstate: str | None = None, detail: str | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.detail = detail
        self.hint = hint

    def __str__(self) -> str:
        parts = [super().__str__()]
        if self.detail:
            parts.append(f"DETAIL: {self.detail}")
        if self.hint:
            parts.append(f"HINT: {self.hint}")
        return "\n".join(parts)


class InvalidInput(DatabaseError):
    """Bad input (SQLSTATE class 22, or 54000 for oversize values); nothing was written."""


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


def translate(exc: psycopg.Error) -> DatabaseError:
    """Map a driver error from the SQL API to the matching :class:`DatabaseError` subclass."""
    diag = exc.diag
    state = exc.sqlstate or ""
    message = diag.message_primary or str(exc)
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
    else:
        cls = DatabaseError
    return cls(message, state or None, diag.message_detail, diag.message_hint)
