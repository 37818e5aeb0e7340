"""The handler registry: which Python function runs each job kind, and what it is given.

Later capabilities (train, tune, score, monitor, retrain) plug in here::

    from pgmlops.handlers import JobContext, handler

    @handler("train")
    def train(ctx: JobContext) -> dict:
        ...
        return {"model_version": 3}

A handler returns a JSON-serializable result (or None), raises :class:`PermanentError` for input
that no retry can fix, and any other exception for a retryable failure. It runs inside a
transaction on ``ctx.conn`` that commits together with the job's completion, so its writes and
the job's success land together or not at all; ``ctx.conn`` acts for the job's tenant.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

    from pgmlops.queue import Job

__all__ = ["Handler", "JobContext", "PermanentError", "get", "handler", "kinds", "load_plugins", "register"]


class PermanentError(Exception):
    """Raised by a handler when retrying cannot help (bad input): the job ends ``failed``."""


@dataclass
class JobContext:
    """What a handler gets: the job, a connection in the job's tenant context, and signals.

    ``lost`` becomes set when the worker no longer holds the job (lease lost or job cancelled):
    its result will be refused, so long handlers should check it and return early. ``stopping``
    is set when the worker was asked to stop (SIGTERM); a handler may finish or return early.
    """

    job: Job
    conn: psycopg.Connection[Any]
    worker_id: str
    lost: threading.Event = field(default_factory=threading.Event)
    stopping: threading.Event = field(default_factory=threading.Event)

    @property
    def payload(self) -> dict[str, Any]:
        return self.job.payload

    @property
    def tenant_id(self) -> str:
        return str(self.job.tenant_id)

    def publish(self, event: str, data: dict[str, Any] | None = None) -> None:
        """Announce a progress event (topic ``job``) for the job's tenant, in its transaction."""
        from psycopg.types.json import Jsonb

        payload = {"job_id": self.job.id, "kind": self.job.kind, **(data or {})}
        self.conn.execute("select ml_private.publish(%s, 'job', %s, %s)", (self.job.tenant_id, event, Jsonb(payload)))


Handler = Callable[[JobContext], Any]

_lock = threading.Lock()
_registry: dict[str, Handler] = {}


def register(kind: str, fn: Handler, *, replace: bool = False) -> None:
    """Register ``fn`` for job kind ``kind``. Raises ValueError if taken (unless ``replace``)."""
    with _lock:
        if kind in _registry and not replace and _registry[kind] is not fn:
            raise ValueError(f"a handler for job kind {kind!r} is already registered")
        _registry[kind] = fn


def handler(kind: str) -> Callable[[Handler], Handler]:
    """Decorator form of :func:`register`."""

    def wrap(fn: Handler) -> Handler:
        register(kind, fn)
        return fn

    return wrap


def get(kind: str) -> Handler:
    """The handler for ``kind``. Raises KeyError when none is registered."""
    load_plugins()
    with _lock:
        return _registry[kind]


def kinds() -> list[str]:
    """Every job kind with a registered handler, sorted."""
    load_plugins()
    with _lock:
        return sorted(_registry)


_plugins_loaded = False


def load_plugins(modules: list[str] | None = None) -> None:
    """Import the built-in handlers, the ``pgmlops.handlers`` entry points and ``modules``.

    Importing a module registers its handlers. Built-ins and entry points load once per process.
    """
    global _plugins_loaded
    if not _plugins_loaded:
        _plugins_loaded = True
        import_module("pgmlops._builtin_handlers")
        for ep in entry_points(group="pgmlops.handlers"):
            ep.load()
    for name in modules or []:
        import_module(name)
