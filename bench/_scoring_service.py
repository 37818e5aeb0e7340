"""The peer of ``ml.predict`` in the scoring benchmark: a FastAPI service, as users build one today.

Run by ``bench.scoring`` as a separate process::

    PGMLOPS_BENCH_SERVICE='{"url": ..., "tenant": ..., "table": ..., "columns": [...], "models": {...}}' \\
        python -m uvicorn bench._scoring_service:app --workers 2 --loop uvloop --http httptools

At startup each uvicorn worker loads every model from a joblib file, as such services do: the
scikit-learn pipeline that pgmlops' training fitted and registered (inputs, imputer, scaler,
estimator), which the benchmark read from the registry (``pgmlops.models.load_model``) and
dumped; and it opens a psycopg pool on the database. ``GET /features/{entity_key}`` returns the row without a model
(the floor of HTTP plus the lookup). ``GET /predict/{project}/{entity_key}`` reads the entity's row from
the feature group's online table (the table ``ml.predict`` reads: one primary-key probe, a
prepared statement), builds the one-row frame the pipeline was fitted on, calls ``predict_proba``
and returns ``{"prediction", "probabilities" ({label: p}, as ml.predict), "model", "version"}``; an unknown key is a 404.

The handler is ``async`` with psycopg's async pool and calls ``predict_proba`` inline: the model
work is CPU-bound and short (a thread hop per request would cost more than it frees), so each
worker process serves one request's CPU at a time, as many as there are workers. The service
logs nothing per request (no access log, no prediction log): ``ml.predict`` writes a row to
``ml.predictions`` on each call, this service writes nothing, which favours it.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pandas as pd
from fastapi import FastAPI, HTTPException
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

CONFIG_ENV = "PGMLOPS_BENCH_SERVICE"

_state: dict[str, Any] = {}


def _load_models(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{project: {pipeline, classes, model, version}}: each pipeline from its joblib file."""
    import joblib  # type: ignore[import-untyped]

    out: dict[str, dict[str, Any]] = {}
    for project, spec in config["models"].items():
        pipeline = joblib.load(spec["path"])
        out[project] = {"pipeline": pipeline, "classes": [c.item() if isinstance(c, np.generic) else c
                                                          for c in pipeline.classes_],
                        "model": spec["model"], "version": spec["version"]}
    return out


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    config = json.loads(os.environ[CONFIG_ENV])
    _state["models"] = _load_models(config)
    _state["columns"] = list(config["columns"])
    _state["tenant"] = config["tenant"]
    schema, table = config["table"].split(".", 1)
    _state["query"] = sql.SQL("select {} from {} where tenant_id = %s and entity_key = %s").format(
        sql.SQL(", ").join(map(sql.Identifier, _state["columns"])), sql.Identifier(schema, table.strip('"'))
    ).as_string(None)
    size = int(config.get("pool_size", 4))
    pool = AsyncConnectionPool(config["url"], min_size=size, max_size=size, open=False,
                               kwargs={"autocommit": True, "prepare_threshold": 0})
    await pool.open(wait=True)
    _state["pool"] = pool
    for model in _state["models"].values():  # the first call of a pipeline pays for lazy imports
        model["pipeline"].predict_proba(pd.DataFrame([[0.0] * len(_state["columns"])], columns=_state["columns"]))
    try:
        yield
    finally:
        await pool.close()


app = FastAPI(lifespan=lifespan)


@app.get("/health")
async def health() -> dict[str, Any]:
    return {"ok": True, "pid": os.getpid()}


@app.get("/features/{entity_key}")
async def features(entity_key: str) -> dict[str, Any]:
    """The entity's features only, no model: the floor of any model served this way (HTTP + lookup)."""
    pool: AsyncConnectionPool = _state["pool"]
    async with pool.connection() as conn:
        cur = await conn.execute(_state["query"], (_state["tenant"], entity_key))
        row = await cur.fetchone()
    if row is None:
        raise HTTPException(404, f"entity {entity_key!r} has no features in the online store")
    return dict(zip(_state["columns"], row, strict=True))


@app.get("/predict/{project}/{entity_key}")
async def predict(project: str, entity_key: str) -> dict[str, Any]:
    model = _state["models"].get(project)
    if model is None:
        raise HTTPException(404, f"project {project!r} is not served here")
    pool: AsyncConnectionPool = _state["pool"]
    async with pool.connection() as conn:
        cur = await conn.execute(_state["query"], (_state["tenant"], entity_key))
        row = await cur.fetchone()
    if row is None:
        raise HTTPException(404, f"entity {entity_key!r} has no features in the online store")
    frame = pd.DataFrame([row], columns=_state["columns"])
    proba = model["pipeline"].predict_proba(frame)[0]
    best = int(np.argmax(proba))
    return {"prediction": model["classes"][best],
            "probabilities": {str(c): float(p) for c, p in zip(model["classes"], proba, strict=True)},
            "model": model["model"], "version": model["version"]}
