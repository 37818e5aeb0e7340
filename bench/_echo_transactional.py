"""bench.queue's per-job path: the echo handler registered as transactional, imported by workers.

echo declares it writes nothing transactional, so workers batch its jobs. Importing this module
in a worker process (``WorkerPool(modules=[...])``) registers the same function for ``echo``
without that declaration: each job then runs in its own transaction, committed with its
completion, as a handler that writes would.
"""

from __future__ import annotations

from pgmlops.jobs import handlers

handlers.register("echo", handlers.get("echo"), replace=True, transactional=True)
