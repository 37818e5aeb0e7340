"""Feature statistics from Python: compute and read ml.feature_stats snapshots, and tabulate them."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg

from pgmlops.db import call

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["QUANTILES", "compute_stats", "latest_stats", "stats_summary"]

#: The quantiles every numeric snapshot holds (keys of ``stats["features"][name]["quantiles"]``).
QUANTILES = ("p1", "p5", "p25", "p50", "p75", "p95", "p99")

_SUMMARY_COLUMNS = ["dtype", "count", "nulls", "invalid", "null_fraction", "mean", "std", "min", "max",
                    *QUANTILES, "distinct", "top"]


def compute_stats(conn: psycopg.Connection[Any], group: str, *, since: datetime | None = None,
                  until: datetime | None = None, bins: int = 20, top_categories: int = 20) -> dict[str, Any]:
    """Profile a feature group version and store the snapshot (see ``ml.compute_feature_stats``).

    Args:
        conn: a connection acting for the tenant (a member with a writing role, or a service caller).
        group: ``'name'`` (the current version) or ``'name@version'``.
        since, until: only values with ``since <= event_time < until`` (None: unbounded).
        bins: histogram bins per numeric feature, 1 to 1000.
        top_categories: most frequent values kept per bool/text/category feature, 1 to 1000.

    Returns:
        The snapshot: ``{id, group, group_id, version, computed_at, since, until, rows,
        first_event_time, last_event_time, bins, top_categories, features: {name: {...}}}``.

    Raises:
        InvalidInput: bins or top_categories out of range, since not before until, a malformed group.
        NotFound: no such group or version.
        AccessDenied: viewers and non-members.
    """
    return dict(call(conn, "ml.compute_feature_stats(%s, %s, %s, %s, %s)", (group, since, until, bins, top_categories)))


def latest_stats(conn: psycopg.Connection[Any], group: str) -> dict[str, Any] | None:
    """The newest snapshot of ``group`` (see ``ml.latest_feature_stats``), or None when none was computed.

    Raises:
        InvalidInput: a malformed group.
        NotFound: no such group or version.
        AccessDenied: non-members.
    """
    stats = call(conn, "ml.latest_feature_stats(%s)", (group,))
    return None if stats is None else dict(stats)


def stats_summary(stats: dict[str, Any]) -> pd.DataFrame:
    """One row per feature of a snapshot, indexed by feature name (sorted), in a pandas DataFrame.

    Columns: dtype, count, nulls, invalid, null_fraction (nulls / rows), mean, std, min, max, the
    quantiles p1 to p99, distinct and top (the most frequent value) — each NaN/None where the
    feature's dtype has no such figure. Timestamp features keep their ISO strings in mean, min,
    max and the quantiles (their std is in seconds); vector features are summarised by L2 norm.
    Histograms and full frequencies stay in ``stats["features"]``.
    """
    import pandas as pd

    rows = stats.get("rows") or 0
    records: dict[str, dict[str, Any]] = {}
    for name, feature in sorted(stats["features"].items()):
        quantiles = feature.get("quantiles") or {}
        frequencies: dict[str, int] = feature.get("frequencies") or {}
        top = min(frequencies.items(), key=lambda kv: (-kv[1], kv[0].encode()))[0] if frequencies else None
        records[name] = {
            "dtype": feature["dtype"],
            "count": feature["count"],
            "nulls": feature["nulls"],
            "invalid": feature.get("invalid", 0),
            "null_fraction": feature["nulls"] / rows if rows else None,
            "mean": feature.get("mean"),
            "std": feature.get("std", feature.get("std_seconds")),
            "min": feature.get("min"),
            "max": feature.get("max"),
            **{q: quantiles.get(q) for q in QUANTILES},
            "distinct": feature.get("distinct"),
            "top": top,
        }
    frame = pd.DataFrame.from_dict(records, orient="index", columns=_SUMMARY_COLUMNS)
    frame.index.name = "feature"
    return frame
