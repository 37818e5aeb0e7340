"""Load simulated traffic into a tenant through the SQL API, and serve it (``pgmlops simulate``).

Everything goes through the public API a client uses: ``ml.create_feature_group`` and
``ml.ingest_staged`` (:mod:`pgmlops.features`), ``ml.predict`` and ``ml.record_feedback_bulk``
(:mod:`pgmlops.scoring`). Nothing is inserted into pgmlops' tables directly.

Three feature groups per project (created when absent; the newest version is used when present):

- ``<project>_customers`` (entity customer, join key ``customer_id``): the weekly history
  snapshots, ``avg_amount_30d`` and ``tx_count_7d``;
- ``<project>_transactions`` (entity transaction, join key ``txn_id``): ``customer_id``,
  ``amount``, ``merchant_category``, ``hour``, ``device``, ``distance_from_home``;
- ``<project>_labels`` (entity transaction, join key ``txn_id``, event time = the transaction's):
  ``customer_id``, ``is_fraud`` (the label as reported: true only for a reported chargeback),
  ``label_time`` (when it is known) and ``true_fraud`` (the simulator's truth, for evaluation
  only: never a feature).

A training set is the labels group's rows whose label is known at a time ``as_of``
(:func:`label_spine_sql`) joined point in time with :func:`training_features`.

Serving (``serve=True``) runs in accelerated time: the simulated hours are replayed in order as
fast as the server answers; each transaction is scored by ``ml.predict`` (batched: one statement
per batch of calls) with its features passed, and after each simulated hour every served
prediction whose label is due by the end of that hour gets it through ``ml.record_feedback_bulk``.
``ml.predict`` logs each prediction at the server's ``now()``, so the log's clock is wall time: the
result's ``served`` frame maps every prediction to its simulated time and ``day_marks`` give the
wall-clock time each simulated day began, which is how a report tells windows apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from pgmlops import features, tenants
from pgmlops.db import call, sql_errors, tenant_context
from pgmlops.errors import InvalidInput, NotFound
from pgmlops.simulation._fraud import CATEGORIES, DEVICES, Segment, Traffic, generate

__all__ = [
    "SimulationResult",
    "group_names",
    "label_spine",
    "label_spine_sql",
    "simulate",
    "training_features",
]

Conn = psycopg.Connection[Any]
Progress = Callable[[str, int, int], None]

CUSTOMER_FEATURES = ("avg_amount_30d", "tx_count_7d")
TRANSACTION_FEATURES = ("amount", "merchant_category", "hour", "device", "distance_from_home")
PREDICT_BATCH = 500
FEEDBACK_BATCH = 5000


def group_names(project: str) -> dict[str, str]:
    """The simulation's feature group names for ``project``: customers, transactions, labels."""
    return {kind: f"{project}_{kind}" for kind in ("customers", "transactions", "labels")}


def training_features(project: str) -> list[str]:
    """The feature references of a training set over the simulated groups (``group:feature``)."""
    names = group_names(project)
    return ([f"{names['transactions']}:{f}" for f in TRANSACTION_FEATURES]
            + [f"{names['customers']}:{f}" for f in CUSTOMER_FEATURES])



def _schemas() -> dict[str, list[dict[str, Any]]]:
    return {
        "customers": [
            {"name": "avg_amount_30d", "dtype": "float", "min": 0, "nullable": False},
            {"name": "tx_count_7d", "dtype": "int", "min": 0, "nullable": False},
        ],
        "transactions": [
            {"name": "customer_id", "dtype": "text", "nullable": False},
            {"name": "amount", "dtype": "float", "min": 0, "nullable": False},
            {"name": "merchant_category", "dtype": "category", "allowed": list(CATEGORIES), "nullable": False},
            {"name": "hour", "dtype": "int", "min": 0, "max": 23, "nullable": False},
            {"name": "device", "dtype": "category", "allowed": list(DEVICES), "nullable": False},
            {"name": "distance_from_home", "dtype": "float", "min": 0, "nullable": False},
        ],
        "labels": [
            {"name": "customer_id", "dtype": "text", "nullable": False},
            {"name": "is_fraud", "dtype": "bool", "nullable": False},
            {"name": "label_time", "dtype": "timestamp", "nullable": False},
            {"name": "true_fraud", "dtype": "bool", "nullable": False},
        ],
    }


_ENTITIES = {"customers": ("customer", "customer_id"), "transactions": ("transaction", "txn_id"),
             "labels": ("transaction", "txn_id")}
_DESCRIPTIONS = {
    "customers": "Simulated customers' history aggregates, weekly snapshots (pgmlops simulate)",
    "transactions": "Simulated card transactions (pgmlops simulate)",
    "labels": "Simulated chargeback labels: is_fraud as reported at label_time; true_fraud is the simulator's truth",
}


@dataclass(frozen=True)
class SimulationResult:
    """What :func:`simulate` did: the ``tenant``, the ``scenario`` (its name, or ``custom``),
    the generated ``traffic``, the feature groups (kind → name), the rows ingested per group,
    and, when served, the predictions made, the feedback recorded and still pending at the end
    of the run (labels not due yet), ``served`` (txn_id, prediction_id, event_time, segment,
    served_at: wall clock) and ``day_marks`` (the wall-clock time each simulated day began to be
    served)."""

    tenant: str
    scenario: str
    traffic: Traffic
    groups: dict[str, str]
    ingested: dict[str, int]
    predictions: int = 0
    feedback_recorded: int = 0
    feedback_pending: int = 0
    served: pd.DataFrame | None = None
    day_marks: list[datetime] | None = None
    seconds: float = 0.0


def simulate(conn: Conn, project: str, scenario: str | Sequence[Segment], *, start: datetime | None = None,
             days: int = 30, rate_per_hour: float = 500.0, seed: int = 0, tenant: UUID | str | None = None,
             serve: bool = False, label_delay: float = 1.0, progress: Progress | None = None) -> SimulationResult:
    """Generate a scenario's traffic (:func:`pgmlops.simulation.generate`) and load it into
    ``tenant`` (None: a new tenant ``simulate <project>``): create the project's feature groups
    when absent and ingest the customers' snapshots, the transactions and their labels; with
    ``serve``, replay it through the project's active deployment and record the labels as
    feedback as they fall due (see the module's docstring); ``label_delay`` scales the labels'
    delays (see :func:`pgmlops.simulation.generate`). ``conn`` must be in autocommit mode
    (each step is a transaction of the service role acting for the tenant). ``progress`` is
    called with (stage, done, total).

    Raises:
        InvalidInput: a bad project name, scenario, days, rate (22023, naming the field).
        NotFound: with ``serve``, no such project or no active deployment (P0002).
        DatabaseError: 0A000, the deployed version is scored by workers; and what ingestion
            raises (an existing group whose schema differs).
    """
    began = time.monotonic()
    if not project or not project.replace("_", "a").isalnum() or not project[0].isalpha() or project != project.lower():
        raise InvalidInput(f"project: must be lowercase letters, digits and _, starting with a letter, got {project!r}", "22023")
    traffic = generate(scenario, start=start, days=days, rate_per_hour=rate_per_hour, seed=seed, label_delay=label_delay)
    tenant_id = str(tenant) if tenant is not None else str(tenants.create_tenant(conn, f"simulate {project}"))
    if serve:
        with tenant_context(conn, tenant_id):
            arguments, positive, negative = _deployed_inputs(conn, project)
    label = scenario if isinstance(scenario, str) else "custom"
    names = group_names(project)
    ingested: dict[str, int] = {}
    frames = _group_frames(traffic)
    for step, (kind, frame) in enumerate(frames.items()):
        if progress:
            progress("ingest", step, len(frames))
        with tenant_context(conn, tenant_id):
            _ensure_group(conn, kind, names[kind])
            result = features.ingest(conn, names[kind], frame, source_name=f"pgmlops simulate seed {seed}")
        ingested[kind] = result.written
    if progress:
        progress("ingest", len(frames), len(frames))
    if not serve:
        return SimulationResult(tenant_id, label, traffic, names, ingested, seconds=time.monotonic() - began)
    served, marks, recorded, pending = _serve(conn, tenant_id, project, traffic, arguments, positive, negative, progress)
    return SimulationResult(tenant_id, label, traffic, names, ingested, len(served), recorded, pending, served, marks,
                            time.monotonic() - began)


def label_spine(traffic: Traffic, as_of: datetime | pd.Timestamp | None = None) -> pd.DataFrame:
    """The spine of a training set: transactions whose label is known at ``as_of`` (None: every
    transaction), with columns txn_id, customer_id, event_time, is_fraud (the reported label)."""
    tx = traffic.transactions
    rows = tx if as_of is None else tx[tx["label_time"] <= pd.Timestamp(as_of)]
    return rows[["txn_id", "customer_id", "event_time"]].assign(is_fraud=rows["label"].to_numpy()).reset_index(drop=True)


def label_spine_sql(conn: Conn, project: str, as_of: datetime | None = None) -> str:
    """A spine query over the project's labels group (its newest version): txn_id,
    customer_id, event_time, is_fraud of every transaction whose label is known at ``as_of``
    (None: all). Read with the caller's rights, like any spine; run it acting for the tenant.

    Raises:
        NotFound: the project has no labels group.
    """
    group = features.describe(conn, group_names(project)["labels"])
    with sql_errors():
        row = conn.execute("select offline_table::text from ml.feature_groups where id = %s", (group["id"],)).fetchone()
    if row is None:
        raise NotFound(f"project {project}: no labels group", "P0002")
    cutoff = "" if as_of is None else " where label_time <= " + sql.Literal(as_of).as_string(conn)
    return f"select entity_key as txn_id, customer_id, event_time, is_fraud from {row[0]}{cutoff}"


# -- loading -------------------------------------------------------------------------------------


def _group_frames(traffic: Traffic) -> dict[str, pd.DataFrame]:
    tx = traffic.transactions
    return {
        "customers": traffic.snapshots[["customer_id", "event_time", *CUSTOMER_FEATURES]],
        "transactions": tx[["txn_id", "event_time", "customer_id", *TRANSACTION_FEATURES]],
        "labels": pd.DataFrame({"txn_id": tx["txn_id"], "event_time": tx["event_time"], "customer_id": tx["customer_id"],
                                "is_fraud": tx["label"], "label_time": tx["label_time"], "true_fraud": tx["is_fraud"]}),
    }


def _ensure_group(conn: Conn, kind: str, name: str) -> None:
    try:
        with conn.transaction():  # a savepoint: the lookup's error leaves the transaction usable
            features.describe(conn, name)
    except NotFound:
        entity, key = _ENTITIES[kind]
        features.create_group(conn, name, entity, _schemas()[kind], join_key=key, description=_DESCRIPTIONS[kind])


# -- serving -------------------------------------------------------------------------------------


def _deployed_inputs(conn: Conn, project: str) -> tuple[list[str], Any, Any]:
    """The raw inputs of the project's live version (the primary arm) and its positive and
    negative classes as JSON values."""
    deployment = call(conn, "ml.deployment(%s)", (project,))
    if deployment is None:
        raise NotFound(f"project {project}: no active deployment to serve the simulated traffic", "P0002")
    arms = [a for a in deployment.get("arms", []) if a.get("role", "live") == "live"] or deployment.get("arms", [])
    arm = max(arms, key=lambda a: float(a.get("weight") or 0))
    version = call(conn, "ml.model_version(%s, %s)", (arm["model"], arm["version"]))
    arguments = [a["name"] for a in (version.get("scoring") or {}).get("arguments") or []]
    if not arguments:
        arguments = [c["name"] for c in (version.get("signature") or {}).get("inputs") or []]
    classes = (version.get("signature") or {}).get("classes") or [False, True]
    positive = next((c for c in classes if str(c).lower() in ("true", "1", "1.0", "fraud")), classes[-1])
    negative = next((c for c in classes if c != positive), classes[0])
    return arguments, positive, negative


def _serve(conn: Conn, tenant: str, project: str, traffic: Traffic, arguments: list[str], positive: Any,
           negative: Any, progress: Progress | None) -> tuple[pd.DataFrame, list[datetime], int, int]:
    tx = traffic.transactions
    unknown = [a for a in arguments if a not in tx.columns]
    if unknown:
        raise InvalidInput(f"serve: the deployed version of {project} takes inputs the simulation does not make: "
                           f"{', '.join(unknown)}", "22023")
    payload = tx[arguments].copy()
    for column in payload.columns:
        if pd.api.types.is_datetime64_any_dtype(payload[column]):
            payload[column] = payload[column].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    records = payload.to_dict("records")
    keys = tx["customer_id"].tolist()
    hour_of = ((tx["event_time"] - tx["event_time"].iloc[0].floor("h")) / pd.Timedelta(hours=1)).astype(int).to_numpy()
    label_hour = ((tx["label_time"] - tx["event_time"].iloc[0].floor("h")) / pd.Timedelta(hours=1)).to_numpy()
    ids: list[str | None] = [None] * len(tx)
    served_at: list[datetime | None] = [None] * len(tx)
    due_order = np.argsort(label_hour, kind="stable")
    due_pos = 0
    recorded = 0
    marks: list[datetime] = []
    n_hours = int(hour_of.max()) + 1 if len(tx) else 0
    bounds = np.searchsorted(hour_of, np.arange(n_hours + 1))
    for h in range(n_hours):
        if h % 24 == 0:
            marks.append(datetime.now(UTC))
        lo, hi = int(bounds[h]), int(bounds[h + 1])
        for b in range(lo, hi, PREDICT_BATCH):
            e = min(b + PREDICT_BATCH, hi)
            with tenant_context(conn, tenant), sql_errors():
                rows = conn.execute(
                    "select (ml.predict(%s, u.f, u.k)) ->> 'prediction_id', clock_timestamp() "
                    "from unnest(%s::jsonb[], %s::text[]) with ordinality as u(f, k, n) order by u.n",
                    (project, [Jsonb(r) for r in records[b:e]], keys[b:e])).fetchall()
            for i, (pid, at) in enumerate(rows):
                ids[b + i], served_at[b + i] = pid, at
        # Labels due by the end of this simulated hour, for predictions already made.
        batch: list[dict[str, Any]] = []
        while due_pos < len(due_order) and label_hour[due_order[due_pos]] < h + 1:
            i = int(due_order[due_pos])
            due_pos += 1
            if ids[i] is not None:
                batch.append({"prediction_id": ids[i], "label": positive if tx["label"].iat[i] else negative,
                              "source": "simulate"})
        for b in range(0, len(batch), FEEDBACK_BATCH):
            with tenant_context(conn, tenant):
                recorded += int(call(conn, "ml.record_feedback_bulk(%s)", (Jsonb(batch[b:b + FEEDBACK_BATCH]),)))
        if progress:
            progress("serve", hi, len(tx))
    served = pd.DataFrame({"txn_id": tx["txn_id"], "prediction_id": ids, "event_time": tx["event_time"],
                           "segment": tx["segment"], "served_at": pd.to_datetime(pd.Series(served_at, dtype=object), utc=True)})
    return served, marks, recorded, len(tx) - recorded


