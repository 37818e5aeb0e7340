"""Schema migrations: upgrade, downgrade and the Supabase export, driven by Alembic."""

from __future__ import annotations

from pgmlops.migrations._alembic import (
    current,
    downgrade,
    export_seed,
    export_supabase,
    head,
    offline_sql,
    revisions,
    seed_sql,
    supabase_export_is_current,
    upgrade,
)

__all__ = [
    "current",
    "downgrade",
    "export_seed",
    "export_supabase",
    "head",
    "offline_sql",
    "revisions",
    "seed_sql",
    "supabase_export_is_current",
    "upgrade",
]
