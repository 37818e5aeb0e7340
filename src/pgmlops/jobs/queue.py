"""The job queue from Python: a thin, typed layer over the ml.* queue functions in SQL.

Every function takes an open psycopg connection and runs in the caller's transaction (autocommit
connections commit each call). SQL errors come back as :mod:`pgmlops.errors` exceptions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from pgmlops.db import call, sql_errors

__all__ = [
    "Job",
    "cancel",
    "claim",
    "complete",
    "complete_many",
    "counts",
    "enqueue",
    "fail",
    "heartbeat",
    "release",
    "result",
]


@dataclass(frozen=True)
class Job:
    """One row of ml.jobs, as a worker sees it after claiming."""

    id: int
    tenant_id: Any
    kind: str
    payload: dict[str, Any]
    status: str
    priority: int
    attempts: int
    max_attempts: int
    run_after: datetime
    lease: timedelta
    locked_by: str | None
    lease_expires_at: datetime | None
    heartbeat_at: datetime | None
    result: Any
    error: str | None
    created_by: Any
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


def enqueue(conn: psycopg.Connection[Any], kind: str, payload: dict[str, Any] | None = None, *,
            priority: int = 0, run_after: datetime | None = None,
            max_attempts: int | None = None) -> int:
    """Queue a job for the tenant the connection acts for; return its id (see ml.enqueue)."""
    return int(call(conn, "ml.enqueue(%s, %s, %s, coalesce(%s, now()), %s)",
                    (kind, Jsonb(payload if payload is not None else {}), priority, run_after, max_attempts)))


def claim(conn: psycopg.Connection[Any], worker_id: str, kinds: Sequence[str] | None = None,
          max_jobs: int = 1, lease: timedelta | None = None) -> list[Job]:
    """Claim up to ``max_jobs`` due jobs of ``kinds`` for ``worker_id`` (see ml.claim_jobs)."""
    with sql_errors(), conn.cursor(row_factory=class_row(Job)) as cur:
        cur.execute("select * from ml.claim_jobs(%s, %s, %s, %s)",
                    (worker_id, list(kinds) if kinds else None, max_jobs, lease))
        return cur.fetchall()


def heartbeat(conn: psycopg.Connection[Any], job_id: int, worker_id: str) -> bool:
    """Extend the lease; False when ``worker_id`` no longer holds the job."""
    return bool(call(conn, "ml.heartbeat(%s, %s)", (job_id, worker_id)))


def complete(conn: psycopg.Connection[Any], job_id: int, worker_id: str, result: Any = None) -> None:
    """Mark the job succeeded. Raises :class:`~pgmlops.errors.LeaseLost` if not held."""
    call(conn, "ml.complete_job(%s, %s, %s)", (job_id, worker_id, Jsonb(result) if result is not None else None))


def complete_many(conn: psycopg.Connection[Any], worker_id: str, results: Mapping[int, Any]) -> set[int]:
    """Mark many jobs succeeded in one statement, ``results`` mapping each job id to its result;
    return the ids accepted (see ml.complete_jobs). Jobs ``worker_id`` no longer holds are
    refused (left as they are, results not written) and the others accepted: no LeaseLost.

    Raises:
        InvalidInput: more than 1000 jobs, or a result over 1 MB (nothing is written).
    """
    if not results:
        return set()
    ids = list(results)
    values = [None if r is None else Jsonb(r) for r in results.values()]
    with sql_errors():
        rows = conn.execute("select * from ml.complete_jobs(%s, %s::bigint[], %s::jsonb[])",
                            (worker_id, ids, values)).fetchall()
    return {int(r[0]) for r in rows}


def fail(conn: psycopg.Connection[Any], job_id: int, worker_id: str, error: str, *,
         retry: bool = True) -> str:
    """Record a failed attempt; return the new status (``queued``, ``dead`` or ``failed``)."""
    return str(call(conn, "ml.fail_job(%s, %s, %s, %s)", (job_id, worker_id, error, retry)))


def release(conn: psycopg.Connection[Any], job_id: int, worker_id: str) -> None:
    """Give a held job back to the queue unrun (the attempt is not counted)."""
    call(conn, "ml.release_job(%s, %s)", (job_id, worker_id))


def cancel(conn: psycopg.Connection[Any], job_id: int) -> bool:
    """Cancel a queued or running job; False when it had already finished."""
    return bool(call(conn, "ml.cancel_job(%s)", (job_id,)))


def result(conn: psycopg.Connection[Any], job_id: int) -> dict[str, Any]:
    """The job's status, attempts, result and error (see ml.job_result)."""
    return dict(call(conn, "ml.job_result(%s)", (job_id,)))


def counts(conn: psycopg.Connection[Any]) -> list[tuple[str, str, int]]:
    """(kind, status, jobs) for every kind and status the caller can see, busiest first."""
    with sql_errors():
        rows = conn.execute(
            "select kind, status, sum(jobs)::bigint from ml.job_counts group by kind, status "
            "order by kind, status"
        ).fetchall()
    return [(str(k), str(s), int(n)) for k, s, n in rows]
