"""Lineage: which artifacts (feature groups, datasets, model versions) were made from which."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg

from pgmlops.db import call

__all__ = ["lineage_of"]


def lineage_of(conn: psycopg.Connection[Any], kind: str, id: UUID | str, *, max_depth: int = 10) -> dict[str, Any]:
    """Walk the lineage of one artifact both ways (see ``ml.lineage_of``).

    Args:
        conn: a connection acting for the tenant (any member, or a service caller); only that
            tenant's edges are walked.
        kind: the artifact's kind: ``feature_group``, ``dataset``, ``model_version``, ...
        id: the artifact's id.
        max_depth: how many edges away to walk, 1 to 100.

    Returns:
        ``{"node": {kind, id, name}, "upstream": [...], "downstream": [...], "edges": [...],
        "truncated": bool}``: upstream lists what the artifact was made from and downstream what
        was made from it, transitively, each node once as ``{kind, id, name, depth}`` (depth 1 =
        a direct edge), ordered by depth; ``edges`` every edge walked; ``truncated`` whether
        ``max_depth`` cut a walk short.

    Raises:
        InvalidInput: an unknown kind, or max_depth out of range.
        NotFound: the artifact does not exist and has no edges.
        AccessDenied: the caller is not a member of the tenant.
    """
    return dict(call(conn, "ml.lineage_of(%s, %s, %s)", (kind, str(id), max_depth)))
