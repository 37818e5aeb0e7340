"""The compiler's refusal: a pipeline that has no SQL form, and why."""

from __future__ import annotations

from pgmlops.errors import PgmlopsError

__all__ = ["NotCompilable"]


class NotCompilable(PgmlopsError):
    """The pipeline cannot be compiled to SQL; ``message`` says which part and why.

    Not a failure: such a version is scored by workers, and the registry records the reason
    (``ml.record_worker_scoring``).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, "0A000")
