"""The job queue, the workers that run it and the registry of job handlers.

Public modules: :mod:`pgmlops.jobs.queue` (enqueue, claim, complete, ... over the ``ml.*`` queue
functions), :mod:`pgmlops.jobs.worker` (worker processes and their supervisor) and
:mod:`pgmlops.jobs.handlers` (which function runs each job kind). The names used most are
re-exported here.
"""

from __future__ import annotations

from pgmlops.jobs.handlers import JobContext, PermanentError, handler, register
from pgmlops.jobs.queue import Job, enqueue
from pgmlops.jobs.worker import Worker, WorkerPool, run_workers

__all__ = [
    "Job",
    "JobContext",
    "PermanentError",
    "Worker",
    "WorkerPool",
    "enqueue",
    "handler",
    "register",
    "run_workers",
]
