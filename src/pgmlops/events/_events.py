"""Events: what pgmlops announces on the ``ml_events`` channel (and Supabase Realtime)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from pgmlops.db import connect, sql_errors

__all__ = ["CHANNEL", "Event", "recent", "subscribe"]

CHANNEL = "ml_events"


@dataclass(frozen=True)
class Event:
    """One announced event: ``event`` is e.g. ``job.succeeded``; ``data`` its details.

    ``truncated`` is True when the notification left ``data`` out to stay under NOTIFY's 8000
    bytes; the full event is in ml.events under ``id``.
    """

    id: int
    tenant_id: str
    topic: str
    event: str
    at: datetime
    data: dict[str, Any] = field(default_factory=dict)
    truncated: bool = False

    @classmethod
    def from_json(cls, text: str) -> Event:
        raw = json.loads(text)
        return cls(id=int(raw["id"]), tenant_id=str(raw["tenant_id"]), topic=raw["topic"],
                   event=raw["event"], at=datetime.fromisoformat(raw["at"]),
                   data=raw.get("data") or {}, truncated=bool(raw.get("truncated", False)))


def subscribe(url: str | None = None, *, tenant_id: str | None = None,
              topics: Iterable[str] | None = None, timeout: float | None = None,
              stop_after: int | None = None) -> Iterator[Event]:
    """Yield events as they are announced, from the moment of the call.

    Filters by ``tenant_id`` and ``topics`` when given. Stops after ``timeout`` seconds without
    an event, after ``stop_after`` events, or when the caller stops iterating (the connection is
    closed then). Needs a session-level connection: a transaction-mode pooler drops LISTEN.
    """
    wanted = set(topics) if topics else None
    seen = 0
    with connect(url, autocommit=True, application_name="pgmlops events") as conn:
        with sql_errors():
            conn.execute(f"listen {CHANNEL}")
        while True:
            got_one = False
            for note in conn.notifies(timeout=timeout):
                got_one = True
                event = Event.from_json(note.payload)
                if tenant_id is not None and event.tenant_id != str(tenant_id):
                    continue
                if wanted is not None and event.topic not in wanted:
                    continue
                yield event
                seen += 1
                if stop_after is not None and seen >= stop_after:
                    return
            if not got_one:
                return


def recent(conn: psycopg.Connection[Any], limit: int = 20, *, topics: Iterable[str] | None = None) -> list[Event]:
    """The newest ``limit`` events the connection may see in ml.events, oldest first."""
    with sql_errors():
        rows = conn.execute(
            "select id, tenant_id, topic, event, created_at, payload from ml.events "
            "where %s::text[] is null or topic = any(%s::text[]) order by created_at desc, id desc limit %s",
            (list(topics) if topics else None, list(topics) if topics else None, limit),
        ).fetchall()
    return [Event(id=r[0], tenant_id=str(r[1]), topic=r[2], event=r[3], at=r[4], data=r[5]) for r in reversed(rows)]
