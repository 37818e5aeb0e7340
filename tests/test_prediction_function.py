"""The per-version prediction function (ml_models.mv_<id>_predict, sql/scoring/install.sql):
its conversion of features to the compiled function's arrays gives the compiled function exactly
what ml_private.compiled_arguments gives it, on edge values of every dtype; it is made at install,
learns the online read at the version's first call by entity key, and goes with its version."""

from __future__ import annotations

from typing import Any

import pytest
from psycopg.types.json import Jsonb
from sklearn.linear_model import LogisticRegression

from pgmlops import scoring
from pgmlops.training._algorithms import build_pipeline

from .compile_helpers import MIXED_SIGNATURE, Conn, mixed_frame, mixed_labels, one, project, register
from .conftest import act_for, make_tenant

BASE = {"amount": 42.5, "visits": 3, "tier": "gold", "vip": True, "seen": "2026-01-02T03:04:05Z", "emb": [0.5, -1.0]}

# Edge values per input: each row is scored both ways and must give the same result.
EDGES: list[dict[str, Any]] = [
    BASE,
    {**BASE, "amount": None, "visits": None, "tier": None, "vip": None, "seen": None, "emb": None},
    {k: v for k, v in BASE.items() if k not in ("amount", "vip", "emb")},
    {**BASE, "amount": "NaN", "visits": 7.0},
    {**BASE, "amount": "12.25", "tier": 5},
    {**BASE, "vip": "YES "}, {**BASE, "vip": " no"}, {**BASE, "vip": "t"}, {**BASE, "vip": "0"},
    {**BASE, "vip": 2.5}, {**BASE, "vip": 0}, {**BASE, "vip": "maybe"}, {**BASE, "vip": [1]}, {**BASE, "vip": False},
    {**BASE, "seen": "2026-01-02 03:04:05"}, {**BASE, "seen": "2026-01-02T05:04:05+02:00"},
    {**BASE, "emb": [0.5]}, {**BASE, "emb": [None, 2.0]}, {**BASE, "emb": ["NaN", 1]}, {**BASE, "emb": {"a": 1}},
    {**BASE, "emb": "[1, 2]"},
]


@pytest.fixture(scope="module")
def version(db_url: str) -> Any:
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        tenant = make_tenant(conn)
        act_for(conn, tenant)
        train = mixed_frame(200, 5)
        model = build_pipeline(MIXED_SIGNATURE, LogisticRegression(max_iter=300)).fit(train, mixed_labels(train, "binary", 5))
        project_id = project(conn, "pf", "classification")
        version_id = register(conn, project_id, MIXED_SIGNATURE, "classification")
        scoring.install(conn, version_id, scoring.describe(model, task="classification"))
        name = str(one(conn, "select ml_private.compiled_model_name(%s)", version_id))
        yield {"tenant": tenant, "id": version_id, "name": name}


def test_conversion_matches_compiled_arguments_on_edge_values(conn: Conn, version: dict[str, Any]) -> None:
    conn.execute("set timezone = 'America/New_York'")  # timestamps without offset are UTC all the same
    name = version["name"]
    for features in EDGES:
        fast = one(conn, f"select ml_models.{name}_predict(null, null, %s, 'pf version 1')", Jsonb(features))
        slow = one(conn, f"select ml_models.{name}_serve(a.num, a.cat) from ml_private.compiled_arguments("
                         "(select v.scoring -> 'arguments' from ml.model_versions v where v.id = %s), %s) a",
                   version["id"], Jsonb(features))
        assert fast == {"features": features, "result": slow}, features


def test_conversion_refuses_what_compiled_arguments_refuses(conn: Conn, version: dict[str, Any]) -> None:
    with pytest.raises(Exception) as fast:
        conn.execute(f"select ml_models.{version['name']}_predict(null, null, %s, 'pf version 1')",
                     (Jsonb({**BASE, "amount": "lots"}),))
    with pytest.raises(Exception) as slow:
        conn.execute("select ml_private.compiled_arguments((select v.scoring -> 'arguments' from ml.model_versions v "
                     "where v.id = %s), %s)", (version["id"], Jsonb({**BASE, "amount": "lots"})))
    assert getattr(fast.value, "sqlstate", None) == getattr(slow.value, "sqlstate", None) == "22P02"


def test_without_an_online_lookup_it_reads_nothing(conn: Conn, version: dict[str, Any]) -> None:
    assert one(conn, f"select ml_models.{version['name']}_predict(%s, 'k1', null, 'pf version 1')", version["tenant"]) is None


def test_executable_by_no_client_role_and_dropped_with_its_version(conn: Conn, version: dict[str, Any]) -> None:
    signature = f"ml_models.{version['name']}_predict(uuid, text, jsonb, text)"
    for role in ("anon", "authenticated", "service_role"):
        assert one(conn, "select has_function_privilege(%s, %s, 'execute')", role, signature) is False
    act_for(conn, version["tenant"])
    conn.execute("delete from ml.model_versions where id = %s", (version["id"],))
    assert one(conn, "select to_regprocedure(%s)", signature) is None
