"""The ``compile`` job handler: compile one registered version, off the training job's path.

``ml.register_model_version`` queues a ``compile`` job for every version it registers, in the
registration's transaction (so a crash cannot lose it), and records the version as scored by
workers until the job has run (``scoring.compile_job_id``). This handler loads the version's
artifact and :func:`~pgmlops.scoring.compile_registered` s it: the compiled function is installed
(``scoring_path = 'compiled'``), or the reason workers score it is recorded. Both land with the
job's success, in its transaction. docs/scoring.md, "Where it happens".

Delivery is at least once: the handler locks the version first, so two deliveries of the same job
(or two jobs of one version) compile it once; a version already compiled, or deleted since, is
left as it is and the job succeeds. An artifact that cannot be loaded is a verdict too (recorded
as the reason, the job succeeds); a database that fails is retried.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from uuid import UUID

import psycopg

from pgmlops.db import sql_errors
from pgmlops.jobs.handlers import JobContext, PermanentError
from pgmlops.scoring._install import compile_registered, record_worker

__all__ = ["compile_version"]

log = logging.getLogger(__name__)


def compile_version(ctx: JobContext) -> dict[str, Any]:
    """Payload ``{model_version_id}`` (queued by ``ml.register_model_version``).

    Returns ``{model_version_id, model, version, scoring: {scoring_path, ...}, load_seconds,
    compile_seconds}``; ``{model_version_id, scoring: ..., unchanged: reason}`` for a version
    already compiled, ``{model_version_id, skipped: reason}`` for one that no longer exists.

    Raises:
        PermanentError: the payload's ``model_version_id`` is not a UUID.
    """
    raw = ctx.payload.get("model_version_id")
    try:
        version_id = UUID(str(raw))
    except ValueError as exc:
        raise PermanentError(f"payload: model_version_id must be a UUID, got {raw!r}") from exc
    conn = ctx.conn
    # The acting tenant's version, locked until the job commits: a second delivery waits here
    # and then finds it compiled. (A service caller sees every tenant's rows: filter by tenant.)
    with sql_errors():
        row = conn.execute(
            """select v.version, m.name, p.task, v.scoring_path, v.scoring, v.artifact, v.artifact_format, v.artifact_sha256
               from ml.model_versions v join ml.models m on m.id = v.model_id join ml.projects p on p.id = m.project_id
               where v.id = %s and v.tenant_id = (select ml.current_tenant())
               for update of v""", (str(version_id),)).fetchone()
    if row is None:
        return {"model_version_id": str(version_id), "skipped": "the version no longer exists"}
    number, model_name, task, path, scoring, artifact, artifact_format, artifact_sha256 = row
    out: dict[str, Any] = {"model_version_id": str(version_id), "model": model_name, "version": number}
    if path == "compiled":
        return out | {"scoring": {"scoring_path": path, **scoring}, "unchanged": "the version is already compiled"}

    from pgmlops.models import artifacts

    started = time.perf_counter()
    try:
        model = artifacts.load(bytes(artifact), artifact_format, artifact_sha256)
    except psycopg.Error:
        raise
    except Exception as exc:  # bytes no loader accepts: workers cannot score them either, and said so
        log.warning("compile job %s: the artifact of %s@%s does not load", ctx.job.id, model_name, number, exc_info=True)
        reason = f"the artifact could not be loaded to compile it: {type(exc).__name__}: {exc}"
        return out | {"scoring": record_worker(conn, version_id, reason)}
    loaded = time.perf_counter()
    out["scoring"] = compile_registered(conn, version_id, model, task=task)
    out.update(load_seconds=round(loaded - started, 4), compile_seconds=round(time.perf_counter() - loaded, 4))
    return out
