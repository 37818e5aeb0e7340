"""The feature store: groups, validated ingestion, online lookups, statistics and point-in-time training sets."""

from __future__ import annotations

from pgmlops.features._stats import (
    QUANTILES,
)
from pgmlops.features._store import (
    IngestResult,
    compute_stats,
    create_group,
    describe,
    ingest,
    ingest_rows,
    latest_stats,
    list_groups,
    online_features,
    set_status,
    stats_summary,
)
from pgmlops.features._training_sets import (
    DatasetInfo,
    apply_transformations,
    create_training_set,
    dataset_info,
    drop_dataset,
    load_dataset,
    training_set,
)

__all__ = [
    "DatasetInfo",
    "IngestResult",
    "QUANTILES",
    "apply_transformations",
    "compute_stats",
    "create_group",
    "create_training_set",
    "dataset_info",
    "describe",
    "drop_dataset",
    "ingest",
    "ingest_rows",
    "latest_stats",
    "list_groups",
    "load_dataset",
    "online_features",
    "set_status",
    "stats_summary",
    "training_set",
]
