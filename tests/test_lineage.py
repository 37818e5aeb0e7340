"""Lineage walks: ml.lineage_of and pgmlops.lineage, over edges recorded with ml_private.record_lineage."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from pgmlops import lineage
from pgmlops.db import tenant_context
from pgmlops.errors import InvalidInput, NotFound

from .conftest import act_for, make_tenant

Conn = psycopg.Connection[Any]


def edge(conn: Conn, tenant: str, src: tuple[str, str], dst: tuple[str, str], relation: str = "derived_from") -> None:
    conn.execute("select ml_private.record_lineage(%s, %s, %s, %s, %s, %s)", (tenant, *src, *dst, relation))


def node(kind: str) -> tuple[str, str]:
    return kind, str(uuid.uuid4())


def feature_group(conn: Conn, name: str | None = None) -> tuple[str, str]:
    name = name or f"g_{uuid.uuid4().hex[:10]}"
    row = conn.execute("select ml.create_feature_group(%s, 'card', %s)", (name, Jsonb({"x": {"dtype": "float"}}))).fetchone()
    assert row is not None
    return "feature_group", str(row[0])


def listed(walk: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    return [(n["kind"], n["id"], n["depth"]) for n in walk]


def test_upstream_is_walked_transitively(conn: Conn, tenant: str) -> None:
    fg, ds, mv = feature_group(conn), node("dataset"), node("model_version")
    edge(conn, tenant, fg, ds)
    edge(conn, tenant, ds, mv, "trained_on")
    walk = lineage.lineage_of(conn, *mv)
    assert listed(walk["upstream"]) == [(*ds, 1), (*fg, 2)]
    assert walk["downstream"] == []


def test_downstream_is_walked_transitively(conn: Conn, tenant: str) -> None:
    fg, ds, mv1, mv2 = feature_group(conn), node("dataset"), node("model_version"), node("model_version")
    edge(conn, tenant, fg, ds)
    edge(conn, tenant, ds, mv1)
    edge(conn, tenant, ds, mv2)
    walk = lineage.lineage_of(conn, *fg)
    assert listed(walk["downstream"]) == [(*ds, 1), *sorted([(*mv1, 2), (*mv2, 2)])]
    assert walk["upstream"] == []


def test_both_directions_are_walked_from_the_middle(conn: Conn, tenant: str) -> None:
    fg, ds, mv = feature_group(conn), node("dataset"), node("model_version")
    edge(conn, tenant, fg, ds)
    edge(conn, tenant, ds, mv)
    walk = lineage.lineage_of(conn, *ds)
    assert (listed(walk["upstream"]), listed(walk["downstream"])) == ([(*fg, 1)], [(*mv, 1)])


def test_edges_walked_are_returned_with_relation_and_details(conn: Conn, tenant: str) -> None:
    fg, ds = feature_group(conn), node("dataset")
    conn.execute("select ml_private.record_lineage(%s, %s, %s, %s, %s, 'derived_from', %s)",
                 (tenant, *fg, *ds, Jsonb({"features": ["x"]})))
    walk = lineage.lineage_of(conn, *ds)
    assert [(e["from_kind"], e["from_id"], e["to_kind"], e["to_id"], e["relation"], e["details"]) for e in walk["edges"]] == [
        (*fg, *ds, "derived_from", {"features": ["x"]})]


def test_feature_groups_are_named_name_at_version(conn: Conn, tenant: str) -> None:
    name = f"g_{uuid.uuid4().hex[:10]}"
    feature_group(conn, name)
    fg2 = feature_group(conn, name)
    ds = node("dataset")
    edge(conn, tenant, fg2, ds)
    walk = lineage.lineage_of(conn, *ds)
    assert walk["upstream"][0]["name"] == f"{name}@2"
    assert lineage.lineage_of(conn, *fg2)["node"]["name"] == f"{name}@2"


def test_a_training_set_is_named_and_traced_to_its_feature_group(conn: Conn, tenant: str) -> None:
    name = f"g_{uuid.uuid4().hex[:10]}"
    fg = feature_group(conn, name)
    conn.execute("select ml.ingest(%s, %s)", (name, Jsonb([{"card": "k1", "event_time": "2024-01-01T00:00:00Z", "x": 1.5}])))
    row = conn.execute("select ml.create_training_set('churn', %s, %s)",
                       ("select 'k1' as card, timestamptz '2024-01-02' as event_time", [f"{name}:x"])).fetchone()
    assert row is not None
    ds = ("dataset", str(row[0]))
    walk = lineage.lineage_of(conn, *ds)
    assert walk["node"]["name"] == "churn@1"
    assert [(n["kind"], n["id"], n["name"]) for n in walk["upstream"]] == [(*fg, f"{name}@1")]
    assert [(n["kind"], n["name"]) for n in lineage.lineage_of(conn, *fg)["downstream"]] == [("dataset", "churn@1")]


def test_cycles_end_and_list_each_node_once_at_its_shortest_depth(conn: Conn, tenant: str) -> None:
    a, b, c = node("run"), node("run"), node("run")
    edge(conn, tenant, a, b)
    edge(conn, tenant, b, c)
    edge(conn, tenant, c, a)
    edge(conn, tenant, a, c, "shortcut")
    walk = lineage.lineage_of(conn, *a)
    assert listed(walk["downstream"]) == sorted([(*b, 1), (*c, 1)])
    assert listed(walk["upstream"]) == [(*c, 1), (*b, 2)]
    assert len(walk["edges"]) == 4


def test_depth_limit_stops_the_walk_and_says_so(conn: Conn, tenant: str) -> None:
    chain = [node("run") for _ in range(5)]
    for src, dst in zip(chain, chain[1:], strict=False):
        edge(conn, tenant, src, dst)
    walk = lineage.lineage_of(conn, *chain[0], max_depth=2)
    assert listed(walk["downstream"]) == [(*chain[1], 1), (*chain[2], 2)]
    assert walk["truncated"] is True
    assert lineage.lineage_of(conn, *chain[0], max_depth=4)["truncated"] is False


def test_other_tenants_edges_are_not_followed(conn: Conn, tenant: str) -> None:
    ds, mine, theirs = node("dataset"), node("model_version"), node("model_version")
    other = make_tenant(conn)
    edge(conn, tenant, ds, mine)
    edge(conn, other, ds, theirs)
    walk = lineage.lineage_of(conn, *ds)
    assert listed(walk["downstream"]) == [(*mine, 1)]


def unnamed_kind(conn: Conn) -> str:
    """A kind registered without a name lookup, as a capability registers one before its table exists."""
    conn.execute("select ml_private.register_lineage_kind('unnamed_artifact', null, 'an artifact with no name lookup')")
    return "unnamed_artifact"


def test_a_member_of_another_tenant_sees_none_of_the_edges(conn: Conn, tenant: str) -> None:
    ds, mv = node("dataset"), node(unnamed_kind(conn))
    edge(conn, tenant, ds, mv)
    stranger = str(uuid.uuid4())
    theirs = make_tenant(conn)
    conn.execute("select ml.add_tenant_member(%s, %s, 'viewer')", (theirs, stranger))
    act_for(conn, None)
    with tenant_context(conn, theirs, user=stranger):
        walk = lineage.lineage_of(conn, *mv)
    assert (walk["upstream"], walk["edges"]) == ([], [])


def test_viewers_may_walk_lineage(conn: Conn, tenant: str) -> None:
    fg, ds = feature_group(conn), node("dataset")
    edge(conn, tenant, fg, ds)
    viewer = str(uuid.uuid4())
    conn.execute("select ml.add_tenant_member(%s, %s, 'viewer')", (tenant, viewer))
    act_for(conn, None)
    with tenant_context(conn, tenant, user=viewer):
        walk = lineage.lineage_of(conn, *ds)
    assert listed(walk["upstream"]) == [(*fg, 1)]


def test_existing_artifact_without_edges_has_empty_lineage(conn: Conn, tenant: str) -> None:
    fg = feature_group(conn)
    walk = lineage.lineage_of(conn, *fg)
    assert (walk["upstream"], walk["downstream"], walk["edges"], walk["truncated"]) == ([], [], [], False)


def test_missing_artifact_without_edges_raises_not_found(conn: Conn, tenant: str) -> None:
    with pytest.raises(NotFound) as err:
        lineage.lineage_of(conn, "feature_group", uuid.uuid4())
    assert err.value.sqlstate == "P0002"


def test_kind_without_a_name_lookup_and_no_edges_has_empty_lineage(conn: Conn, tenant: str) -> None:
    walk = lineage.lineage_of(conn, unnamed_kind(conn), uuid.uuid4())
    assert (walk["node"]["name"], walk["upstream"], walk["downstream"]) == (None, [], [])


def test_kind_known_only_from_the_tenants_edges_is_accepted(conn: Conn, tenant: str) -> None:
    ds, dep = node("dataset"), node("deployment_x")
    edge(conn, tenant, ds, dep)
    assert listed(lineage.lineage_of(conn, *dep)["upstream"]) == [(*ds, 1)]


@pytest.mark.parametrize("kind", ["no_such_kind", "Bad Kind", ""])
def test_unknown_kind_raises_22023(conn: Conn, tenant: str, kind: str) -> None:
    with pytest.raises(InvalidInput, match="kind") as err:
        lineage.lineage_of(conn, kind, uuid.uuid4())
    assert err.value.sqlstate == "22023"


@pytest.mark.parametrize("depth", [0, 101])
def test_max_depth_out_of_range_raises_22023(conn: Conn, tenant: str, depth: int) -> None:
    with pytest.raises(InvalidInput, match="max_depth"):
        lineage.lineage_of(conn, "dataset", uuid.uuid4(), max_depth=depth)
