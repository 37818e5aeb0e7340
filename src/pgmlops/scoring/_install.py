"""Compiling registered model versions: describe the pipeline, install its function (or record
why it is scored by workers) through the SQL API.

Python never writes SQL for a model: it sends the description (JSON data) to
``ml.install_compiled_model``, whose SQL renders every number from a typed value and quotes
every string (docs/scoring.md). These functions run in the caller's transaction, acting for a
tenant as a service caller (a worker in its job's transaction).
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

from pgmlops.db import call
from pgmlops.errors import DatabaseError
from pgmlops.scoring._describe import describe
from pgmlops.scoring._errors import NotCompilable

__all__ = ["compile_model_version", "compile_registered", "install", "record_worker"]

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]


def install(conn: Conn, model_version_id: UUID | str, description: dict[str, Any]) -> dict[str, Any]:
    """``ml.install_compiled_model``: create the version's compiled function from ``description``.

    Returns the version's scoring record (``function``, ``arguments``, sizes, timings).

    Raises:
        InvalidInput: a description the SQL refuses (22023), or beyond its limits (54000).
        InvalidState: the version is already compiled.
        NotFound: no such version in the acting tenant.
        AccessDenied: not a service caller.
    """
    result: dict[str, Any] = call(conn, "ml.install_compiled_model(%s, %s)", (str(model_version_id), Jsonb(description)))
    return result


def record_worker(conn: Conn, model_version_id: UUID | str, reason: str) -> dict[str, Any]:
    """``ml.record_worker_scoring``: the version is scored by workers, because of ``reason``."""
    result: dict[str, Any] = call(conn, "ml.record_worker_scoring(%s, %s)", (str(model_version_id), reason[:2000]))
    return result


def compile_registered(conn: Conn, model_version_id: UUID | str, model: Any, *, task: str | None = None) -> dict[str, Any]:
    """Compile a just-registered version whose fitted pipeline is ``model``, or record that
    workers score it.

    The registration hook (``pgmlops.training.record_fit``): a model that cannot be compiled,
    or whose compilation the database refuses (a limit, a bug), must not fail its training job,
    so the reason is recorded instead; the attempt runs in a savepoint, so a refused install
    leaves nothing behind. Returns ``{scoring_path: 'compiled', function, ...}`` or
    ``{scoring_path: 'worker', reason}``.
    """
    try:
        description = describe(model, task=task)
    except NotCompilable as exc:
        return record_worker(conn, model_version_id, exc.message)
    except Exception as exc:  # a pipeline the compiler misreads: scored by workers, and said so
        log.warning("compiling model version %s failed", model_version_id, exc_info=True)
        return record_worker(conn, model_version_id, f"the compiler failed: {type(exc).__name__}: {exc}")
    try:
        with conn.transaction():
            return install(conn, model_version_id, description)
    except DatabaseError as exc:
        if exc.sqlstate not in ("22023", "54000"):
            raise
        return record_worker(conn, model_version_id, f"compilation refused ({exc.sqlstate}): {exc.message}")


def compile_model_version(conn: Conn, ref: str) -> dict[str, Any]:
    """Compile a registered version that has no compiled function yet (e.g. registered before
    the compiler existed): load its artifact (``pgmlops.models.load_model``) and
    :func:`compile_registered` it. ``ref`` is ``"model@3"``, ``"model@champion"`` or ``"model"``."""
    from pgmlops.models import load_model, model_version

    version = model_version(conn, ref)
    model = load_model(conn, ref)
    return compile_registered(conn, version["id"], model, task=version.get("task"))
