"""Handlers that ship with pgmlops: ``echo`` (smoke runs, tests and benchmarks)."""

from __future__ import annotations

import time
from typing import Any

from pgmlops.jobs.handlers import JobContext, PermanentError


def echo(ctx: JobContext) -> dict[str, Any]:
    """Return the payload. ``sleep_ms`` simulates work (returning early when the job is lost or
    the worker stops); ``fail_attempts`` fails the first N attempts; ``fail: permanent`` fails
    without retry."""
    payload = ctx.payload
    if payload.get("fail") == "permanent":
        raise PermanentError("echo: permanent failure requested by the payload")
    if ctx.job.attempts <= int(payload.get("fail_attempts", 0)):
        raise RuntimeError(f"echo: simulated failure on attempt {ctx.job.attempts}")
    deadline = time.monotonic() + int(payload.get("sleep_ms", 0)) / 1000.0
    while (left := deadline - time.monotonic()) > 0:
        if ctx.lost.wait(min(left, 0.05)):
            break
    return {"echo": payload, "attempt": ctx.job.attempts, "worker": ctx.worker_id}


# echo writes nothing: its jobs are run in batches and acknowledged together (pgmlops.jobs.handlers).
echo.pgmlops_transactional = False  # type: ignore[attr-defined]
