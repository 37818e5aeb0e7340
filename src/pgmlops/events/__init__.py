"""Events: what pgmlops announces on the ``ml_events`` channel (and Supabase Realtime)."""

from __future__ import annotations

from pgmlops.events._events import (
    CHANNEL,
    Event,
    recent,
    subscribe,
)

__all__ = [
    "CHANNEL",
    "Event",
    "recent",
    "subscribe",
]
