"""The handler registry: which Python function runs each job kind, and what it is given.

A handler is a function of a :class:`JobContext`. pgmlops' own (``echo``, ``train``,
``tune_trial``, ``tune``) are named by ``pgmlops.handlers`` entry points in pyproject.toml, the
job kind being the entry point's name; a user's package adds kinds the same way::

    [project.entry-points."pgmlops.handlers"]
    churn_report = "acme_ml.jobs:churn_report"     # def churn_report(ctx: JobContext) -> dict

or, in one process, with :func:`register` / ``@handler("kind")``.

A handler returns a JSON-serializable result (or None), raises :class:`PermanentError` for input
that no retry can fix, and any other exception for a retryable failure.

Transactional handlers (the default) run inside a transaction on ``ctx.conn``, acting for the
job's tenant, that commits together with the job's completion: their writes and the job's success
land together or not at all, exactly once. That costs one committed transaction per job.

A handler that writes nothing transactional (it computes, calls a service, or only reads) may say
so: ``register(kind, fn, transactional=False)``, ``@handler(kind, transactional=False)``, or, for
an entry point, the attribute ``fn.pgmlops_transactional = False`` on the function itself (as the
``echo`` handler does). The worker then runs a batch of such jobs (as many as one claim took: its
``prefetch``) and acknowledges them together in one statement (``ml.complete_jobs``): one commit
for the batch, the same ``job.succeeded`` event per job. With ``prefetch`` 1 there is nothing to
batch, and the job costs more than a transactional one (a read-only transaction, then another for
the acknowledgement); bench/README.md has the numbers.

Such a handler's ``ctx.conn`` acts for the job's tenant as a transactional handler's does, but in a
read-only transaction shared by the batch's jobs of that tenant: reads work, and a write fails the
job (SQLSTATE 25006) instead of landing apart from its completion, so such a handler cannot
:meth:`JobContext.publish` progress either. Delivery is at least once as always: a worker killed
mid-batch leaves its finished, unacknowledged jobs to run again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

    from pgmlops.jobs.queue import Job

__all__ = [
    "ENTRY_POINT_GROUP",
    "TRANSACTIONAL_ATTRIBUTE",
    "Handler",
    "JobContext",
    "PermanentError",
    "get",
    "handler",
    "is_transactional",
    "kinds",
    "load_plugins",
    "register",
]


class PermanentError(Exception):
    """Raised by a handler when retrying cannot help (bad input): the job ends ``failed``."""


@dataclass
class JobContext:
    """What a handler gets: the job, a connection in the job's tenant context, and signals.

    ``lost`` becomes set when the worker no longer holds the job (lease lost or job cancelled):
    its result will be refused, so long handlers should check it and stop early, returning or
    raising :class:`~pgmlops.errors.LeaseLost`. ``stopping`` is set when the worker was asked
    to stop (SIGTERM); a handler may finish or return early.
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
        """Announce a progress event (topic ``job``, payload ``{job_id, kind, **data}``) for the
        job's tenant, in its transaction (``ml.publish_job_event``).

        Raises:
            InvalidInput: ``event`` blank or over 100 characters.
        """
        from psycopg.types.json import Jsonb

        from pgmlops.db import call

        call(self.conn, "ml.publish_job_event(%s, %s, %s)", (self.job.id, event, Jsonb(data or {})))


Handler = Callable[[JobContext], Any]

ENTRY_POINT_GROUP = "pgmlops.handlers"

# A function attribute: False declares that the handler writes nothing transactional.
TRANSACTIONAL_ATTRIBUTE = "pgmlops_transactional"

_lock = threading.Lock()
_registry: dict[str, Handler] = {}
_transactional: dict[str, bool] = {}


def register(kind: str, fn: Handler, *, replace: bool = False, transactional: bool | None = None) -> None:
    """Register ``fn`` for job kind ``kind`` in this process.

    ``transactional=False`` declares that ``fn`` writes nothing transactional, so its jobs are
    run in batches and acknowledged together (see the module docstring); None (the default)
    takes the function's ``pgmlops_transactional`` attribute, else True.

    Raises:
        ValueError: another function is registered for ``kind`` (unless ``replace``).
        TypeError: ``fn.pgmlops_transactional`` is not a bool.
    """
    declared = _declared(fn) if transactional is None else bool(transactional)
    with _lock:
        if kind in _registry and not replace and _registry[kind] is not fn:
            raise ValueError(f"a handler for job kind {kind!r} is already registered")
        _registry[kind] = fn
        _transactional[kind] = declared


def handler(kind: str, *, transactional: bool | None = None) -> Callable[[Handler], Handler]:
    """Decorator form of :func:`register`."""

    def wrap(fn: Handler) -> Handler:
        register(kind, fn, transactional=transactional)
        return fn

    return wrap


def _declared(fn: Handler) -> bool:
    declared = getattr(fn, TRANSACTIONAL_ATTRIBUTE, True)
    if not isinstance(declared, bool):
        raise TypeError(f"{TRANSACTIONAL_ATTRIBUTE} of handler {fn!r} must be True or False, got {declared!r}")
    return declared


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def get(kind: str) -> Handler:
    """The handler for ``kind``: one registered in this process, else the ``pgmlops.handlers``
    entry point named ``kind`` (loaded on first use, so a worker imports only what it runs).

    Raises:
        KeyError: no handler for ``kind``.
        TypeError: the entry point does not name a callable.
    """
    with _lock:
        fn = _registry.get(kind)
    if fn is not None:
        return fn
    ep = _entry_points().get(kind)
    if ep is None:
        raise KeyError(kind)
    loaded = ep.load()
    if not callable(loaded):
        raise TypeError(f"entry point {ENTRY_POINT_GROUP}:{kind} = {ep.value} is not a callable handler")
    declared = _declared(loaded)
    with _lock:
        _transactional.setdefault(kind, declared)
        return _registry.setdefault(kind, loaded)


def is_transactional(kind: str) -> bool:
    """Whether ``kind``'s handler runs in its job's transaction (True unless it declared
    otherwise; see the module docstring). Loads the handler like :func:`get`.

    Raises:
        KeyError: no handler for ``kind``.
    """
    get(kind)
    with _lock:
        return _transactional[kind]


def kinds() -> list[str]:
    """Every job kind with a handler (registered here or named by an entry point), sorted."""
    with _lock:
        registered = set(_registry)
    return sorted(registered | set(_entry_points()))


def load_plugins(modules: list[str] | None = None) -> None:
    """Import ``modules``, each of which registers its handlers with :func:`register`
    (``pgmlops worker --import``). Entry points need no import: :func:`get` loads them."""
    for name in modules or []:
        import_module(name)
