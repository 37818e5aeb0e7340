"""Data and models shared by the online and batch parts of ``bench.scoring``.

One tenant (owned by a user, so a PostgREST-style caller can act in it), one feature group
``customers`` of 20 float features (``make_classification``, one row per entity, ingested with
``pgmlops.features.ingest``: its online table holds every entity), one point-in-time training set
over all of them, and two projects trained on it through pgmlops' own training path
(``pgmlops.training`` ``run_training``: the fit, the registration and the compilation to SQL a
``train`` job does): a logistic regression and a 100-tree depth-6 gradient boosting classifier.
Each version is approved by the owner and deployed alone (``ml.deploy(project, 'single', ...)``)
once ``ml.deploy`` exists.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg.types.json import Jsonb

Conn = psycopg.Connection[Any]

N_FEATURES = 20
FEATURES = [f"f{j:02d}" for j in range(N_FEATURES)]
GROUP = "customers"
LABEL = "label"
BASE = np.datetime64("2025-01-01T00:00:00", "s")
TRAIN_OPTIONS = {"split": "stratified", "test_size": 0.2, "random_state": 42}

# name -> (project, algorithm, hyperparameters, description)
MODELS: dict[str, tuple[str, str, dict[str, Any], str]] = {
    "logistic": ("bench-logistic", "logistic_regression", {}, "logistic regression (imputer + scaler + LR)"),
    "gb": ("bench-gb", "gradient_boosting", {"n_estimators": 100, "max_depth": 6, "learning_rate": 0.1},
           "gradient boosting, 100 trees, depth 6"),
}


@dataclass
class Served:
    """One trained, compiled, approved (and, when ml.deploy exists, deployed) model version."""

    key: str
    project: str
    model: str
    version: int
    version_id: str
    scoring_path: str
    train_s: float
    deployment_id: str | None = None
    deploy_error: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.version}"


@dataclass
class Setup:
    url: str
    tenant: str
    user: str
    online_table: str
    entities: int
    keys: list[str]
    models: dict[str, Served] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"entities": self.entities, "online_table": self.online_table, "features": N_FEATURES,
                "timings_s": {k: round(v, 2) for k, v in self.timings.items()},
                "models": {k: {"project": m.project, "ref": m.ref, "scoring_path": m.scoring_path,
                               "train_s": round(m.train_s, 2), "deployment_id": m.deployment_id,
                               "deploy_error": m.deploy_error, "description": MODELS[k][3]}
                           for k, m in self.models.items()}}


def entity_key(i: int) -> str:
    return f"c{i:07d}"


def make_data(rows: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(feature rows, spine): entity ``c0000001``.. with one feature row each and a labelled
    spine row an hour later."""
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=rows, n_features=N_FEATURES, n_informative=10, n_redundant=4,
                               n_clusters_per_class=3, flip_y=0.03, class_sep=0.8, random_state=seed)
    keys = np.array([entity_key(i) for i in range(1, rows + 1)])
    times = BASE + np.arange(rows).astype("timedelta64[s]")
    feature_rows = pd.DataFrame({"customer_id": keys, "event_time": np.datetime_as_string(times, timezone="UTC")})
    for j, name in enumerate(FEATURES):
        feature_rows[name] = np.round(X[:, j], 6)
    spine = pd.DataFrame({"customer_id": keys,
                          "event_time": pd.to_datetime(times + np.timedelta64(3600, "s")).tz_localize("UTC"),
                          LABEL: y.astype(np.int64)})
    return feature_rows, spine


def has_function(conn: Conn, name: str) -> bool:
    """Whether ``schema.function`` exists (the SQL API is written in parallel with this benchmark)."""
    schema, fn = name.split(".")
    row = conn.execute("select exists (select 1 from pg_proc p join pg_namespace n on n.oid = p.pronamespace "
                       "where n.nspname = %s and p.proname = %s)", (schema, fn)).fetchone()
    return bool(row and row[0])


def build(conn: Conn, url: str, entities: int, models: list[str], log: Any = print) -> Setup:
    """Create the tenant, data and models on ``conn`` (a superuser session, autocommit); the
    session then acts for the tenant as a service caller (``pgmlops.tenant_id``)."""
    from pgmlops import features
    from pgmlops.db import tenant_context
    from pgmlops.models import approve
    from pgmlops.training._handler import run_training

    timings: dict[str, float] = {}
    user = str(uuid.uuid4())
    row = conn.execute("select ml.create_tenant(%s, %s)", ("bench scoring", user)).fetchone()
    assert row is not None
    tenant = str(row[0])
    conn.execute("select set_config('pgmlops.tenant_id', %s, false)", (tenant,))

    t0 = time.perf_counter()
    feature_rows, spine = make_data(entities)
    features.create_group(conn, GROUP, "customer", [{"name": f, "dtype": "float"} for f in FEATURES],
                          join_key="customer_id", description="make_classification features")
    result = features.ingest(conn, GROUP, feature_rows, source_name="bench.scoring")
    if result.written != entities:
        raise RuntimeError(f"ingestion wrote {result.written} of {entities} rows")
    timings["ingest"] = time.perf_counter() - t0
    row = conn.execute("select online_table::text from ml.feature_groups where tenant_id = %s and name = %s "
                       "order by version desc limit 1", (tenant, GROUP)).fetchone()
    assert row is not None
    online_table = str(row[0])
    conn.execute(f"vacuum analyze {online_table}")

    t0 = time.perf_counter()
    dataset_id = features.create_training_set(conn, "bench_scoring", spine, [f"{GROUP}:{f}" for f in FEATURES],
                                              label=LABEL)
    timings["training_set"] = time.perf_counter() - t0
    setup = Setup(url=url, tenant=tenant, user=user, online_table=online_table, entities=entities,
                  keys=[entity_key(i) for i in range(1, entities + 1)], timings=timings)

    can_deploy = has_function(conn, "ml.deploy")
    for key in models:
        project, algorithm, hyperparams, note = MODELS[key]
        project_row = conn.execute("select ml.create_project(%s, 'classification', %s)", (project, LABEL)).fetchone()
        assert project_row is not None
        log(f"  training {key}: {note} on {entities:,} entities ...")
        t0 = time.perf_counter()
        with conn.transaction():
            out = run_training(conn, project_id=str(project_row[0]), dataset_id=str(dataset_id), algorithm=algorithm,
                               hyperparams=hyperparams, options=TRAIN_OPTIONS)
        train_s = time.perf_counter() - t0
        # Registration compiles the version, or queues a `compile` job that does (no worker here
        # runs it): compile it now if it is not yet, as that job would.
        row = conn.execute("select scoring_path from ml.model_versions where id = %s", (out["model_version_id"],)).fetchone()
        if row is None or row[0] != "compiled":
            from pgmlops.scoring import compile_model_version

            t1 = time.perf_counter()
            with conn.transaction():
                compile_model_version(conn, f"{out['model']}@{out['version']}")
            timings[f"compile_{key}"] = time.perf_counter() - t1
        version_row = conn.execute("select scoring_path from ml.model_versions where id = %s",
                                   (out["model_version_id"],)).fetchone()
        assert version_row is not None
        served = Served(key=key, project=project, model=out["model"], version=int(out["version"]),
                        version_id=str(out["model_version_id"]), scoring_path=str(version_row[0]), train_s=train_s)
        with tenant_context(conn, tenant, user=user):
            approve(conn, served.model, served.version, comment="bench.scoring")
        if can_deploy:
            try:
                arms = [{"arm": "a", "model": served.model, "version": served.version, "weight": 1.0, "role": "live"}]
                dep = conn.execute("select ml.deploy(%s, 'single', %s, %s)",
                                   (project, Jsonb(arms), Jsonb({"reason": "bench.scoring"}))).fetchone()
                assert dep is not None
                served.deployment_id = str(dep[0])
            except psycopg.Error as exc:
                served.deploy_error = f"{exc.sqlstate}: {str(exc).splitlines()[0][:200]}"
                log(f"  [red]ml.deploy failed for {project}: {served.deploy_error}[/]")
        else:
            served.deploy_error = "ml.deploy does not exist yet"
        setup.models[key] = served
    return setup
