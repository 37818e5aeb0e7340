"""Tenant isolation: the pgTAP suite, and every tenant-owned table read and written as PostgREST would."""

# Adding a tenant table: nothing to change in this file. Register the table with
# ml_private.enable_tenant_rls in its migration, add a seeder to tests/rls_seed.py and a seed to the
# SEED block of supabase/tests/rls_tenants.test.sql; every check below then runs for it. A
# registered table without a seeder fails test_every_tenant_table_has_a_seeder.
#
# Most tenant tables hold the rows of every tenant. The tables of a feature group version
# (docs/features.md) hold one tenant's: a key of rls_seed.GROUP_TABLES stands for the two tables
# of that group, tenant A's and tenant B's, and every check runs on both, with the rows each holds.
#
# Each request runs the way PostgREST runs one: a transaction, `set local role` (anon,
# authenticated or service_role) and the JWT claims in request.jwt.claims. Requests are always
# rolled back, so the seeded rows are shared by the whole module.

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from .conftest import act_for
from .rls_seed import GROUP_TABLES, SEEDERS, seed_tenant

Conn = psycopg.Connection[Any]

ROOT = Path(__file__).resolve().parents[1]
TABLES = sorted(SEEDERS)
DENIED = "42501"  # insufficient_privilege: no grant, or a row-level security check failed


# -- the pgTAP suite ---------------------------------------------------------------------------


def test_the_pgtap_suite_passes(fresh_db_url: str) -> None:
    pg_prove = shutil.which("pg_prove")
    assert pg_prove, "pg_prove is not on PATH (scripts/provision-postgres.sh installs it with pgTAP)"
    files = sorted(str(p) for p in (ROOT / "supabase" / "tests").glob("*.sql"))
    assert files, "no pgTAP files in supabase/tests"
    with psycopg.connect(fresh_db_url, autocommit=True) as conn:
        conn.execute("create extension if not exists pgtap")
    run = subprocess.run([pg_prove, "--dbname", fresh_db_url, *files], capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, f"pg_prove exited {run.returncode}\n{run.stdout}\n{run.stderr}"


# -- the world: tenants A and B, their users, rows in every tenant table -----------------------


@dataclass(frozen=True)
class Caller:
    """Who makes a request: the database role PostgREST switches to and the JWT's claims."""

    role: str
    claims: dict[str, Any]


def user(user_id: str) -> Caller:
    return Caller("authenticated", {"sub": user_id, "role": "authenticated"})


ANON = Caller("anon", {"role": "anon"})
SERVICE = Caller("service_role", {"role": "service_role"})


@dataclass(frozen=True)
class World:
    url: str
    tenant_a: str
    tenant_b: str
    owner_a: Caller
    viewer_a: Caller
    owner_b: Caller
    registered: tuple[str, ...]  # ml.tenants and every table in ml_private.tenant_tables (per-version ones by key)
    group_tables: dict[str, dict[str, str]]  # rls_seed.GROUP_TABLES key -> {tenant: that tenant's table}

    def parts(self, table: str) -> list[tuple[str, tuple[str, ...]]]:
        """The tables a key of TABLES stands for, each with the tenants whose rows it holds."""
        if table in self.group_tables:
            return [(relation, (tenant,)) for tenant, relation in self.group_tables[table].items()]
        return [(table, (self.tenant_a, self.tenant_b))]


@pytest.fixture(scope="module")
def world(db_url: str) -> World:
    owner_a, viewer_a, owner_b = (str(uuid.uuid4()) for _ in range(3))
    with psycopg.connect(db_url, autocommit=True) as conn:
        tenant_a = str(one(conn, "select ml.create_tenant('rls A', %s)", owner_a))
        tenant_b = str(one(conn, "select ml.create_tenant('rls B', %s)", owner_b))
        conn.execute("select ml.add_tenant_member(%s, %s, 'viewer')", (tenant_a, viewer_a))
        for tenant in (tenant_a, tenant_b):
            seed_tenant(conn, tenant)
        act_for(conn, None)
        table_of = sql.SQL("select {}::text from ml.feature_groups where tenant_id = %s and name = %s")
        group_tables = {key: {tenant: str(one(conn, table_of.format(sql.Identifier(column)), tenant, group))
                              for tenant in (tenant_a, tenant_b)}
                        for key, (group, column) in GROUP_TABLES.items()}
        keys = {relation: key for key, relations in group_tables.items() for relation in relations.values()}
        registered = ("ml.tenants", *(keys.get(r[0], r[0]) for r in conn.execute("select table_name from ml_private.tenant_tables")))
    return World(db_url, tenant_a, tenant_b, user(owner_a), user(viewer_a), user(owner_b), tuple(sorted(set(registered))),
                 group_tables)


@pytest.fixture
def conn(world: World) -> Iterator[Conn]:
    """An autocommit connection as the owner (bypasses RLS): sets up requests and checks the truth."""
    with psycopg.connect(world.url, autocommit=True) as c:
        yield c


# -- helpers -----------------------------------------------------------------------------------


def one(conn: Conn, query: str | sql.Composable, *args: Any) -> Any:
    row = conn.execute(query, args).fetchone()
    assert row is not None
    return row[0]


def key_of(table: str) -> str:
    """The column naming a row's tenant: ml.tenants is keyed by id, every other table by tenant_id."""
    return "id" if table == "ml.tenants" else "tenant_id"


def ident(table: str) -> sql.Composable:
    # Names come from ml_private.tenant_tables, i.e. regclass text: already quoted where needed.
    return sql.SQL(table)


@contextmanager
def request(conn: Conn, caller: Caller) -> Iterator[Conn]:
    """One request as PostgREST makes it: a transaction with the role and claims set locally.
    Always rolled back."""
    with conn.transaction(force_rollback=True):
        conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(caller.claims),))
        conn.execute(sql.SQL("set local role {}").format(sql.Identifier(caller.role)))
        yield conn


def attempt(conn: Conn, statement: sql.Composable, *args: Any) -> str:
    """Run one statement in a savepoint: 'ok:<rows returned or affected>', or the SQLSTATE it raised."""
    try:
        with conn.transaction():
            cur = conn.execute(statement, args)
            return f"ok:{cur.rowcount}"
    except psycopg.Error as e:
        return e.sqlstate or f"no sqlstate: {e}"


def rows_of(conn: Conn, table: str, tenant: str) -> tuple[int, str]:
    """The number of ``tenant``'s rows in ``table`` and a digest of their contents (as the owner)."""
    conn.execute("reset role")
    row = conn.execute(
        sql.SQL("select count(*), md5(coalesce(string_agg(x::text, '|' order by x::text), '')) from {} x where {} = %s")
        .format(ident(table), sql.Identifier(key_of(table))), (tenant,)).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def count_of(conn: Conn, table: str, tenant: str) -> int:
    return rows_of(conn, table, tenant)[0]


def copy_of_a_row(conn: Conn, table: str, tenant: str) -> sql.Composable:
    """An INSERT re-creating one of ``tenant``'s rows of ``table``, its values as literals (so the
    caller needs nothing but the table). Made as the owner, before the request."""
    row = one(conn, sql.SQL("select to_jsonb(x) from {} x where {} = %s limit 1")
              .format(ident(table), sql.Identifier(key_of(table))), tenant)
    cols = [r[0] for r in conn.execute(
        "select attname from pg_attribute where attrelid = %s::regclass and attnum > 0"
        " and not attisdropped and attgenerated = '' order by attnum", (table,))]
    col_list = sql.SQL(", ").join(map(sql.Identifier, cols))
    return sql.SQL("insert into {t} ({c}) overriding system value select {c} from jsonb_populate_record(null::{t}, {r})").format(
        t=ident(table), c=col_list, r=sql.Literal(json.dumps(row)))


def select_where(table: str, op: str, tenant: str) -> sql.Composable:
    return sql.SQL("select from {} where {} " + op + " {}").format(ident(table), sql.Identifier(key_of(table)), sql.Literal(tenant))


def update_key(table: str, new: str | None, tenant: str | None) -> sql.Composable:
    """UPDATE setting the key to ``new`` (itself when None) on ``tenant``'s rows (all when None)."""
    key = sql.Identifier(key_of(table))
    stmt = sql.SQL("update {} set {} = {}").format(ident(table), key, sql.Literal(new) if new else key)
    return stmt if tenant is None else stmt + sql.SQL(" where {} = {}").format(key, sql.Literal(tenant))


def delete_rows(table: str, tenant: str | None) -> sql.Composable:
    stmt = sql.SQL("delete from {}").format(ident(table))
    return stmt if tenant is None else stmt + sql.SQL(" where {} = {}").format(sql.Identifier(key_of(table)), sql.Literal(tenant))


def nothing_or_denied(outcome: str) -> bool:
    """A read that returned no row, a write that touched none, or a refusal."""
    return outcome in ("ok:0", DENIED)


def descendants(conn: Conn, table: str) -> list[str]:
    """Partitions and TimescaleDB chunks of ``table``, at any depth."""
    return [r[0] for r in conn.execute(
        """with recursive d (oid) as (
               select inhrelid from pg_inherits where inhparent = %s::regclass
               union
               select i.inhrelid from pg_inherits i join d on i.inhparent = d.oid)
           select oid::regclass::text from d order by 1""", (table,))]


# -- the registry ------------------------------------------------------------------------------


def test_every_tenant_table_has_a_seeder(world: World) -> None:
    unseeded = sorted(set(world.registered) - set(SEEDERS))
    assert not unseeded, f"tenant tables with no seeder: add them to tests/rls_seed.py: {unseeded}"


def test_every_seeder_names_a_registered_tenant_table(world: World) -> None:
    unknown = sorted(set(SEEDERS) - set(world.registered))
    assert not unknown, f"tests/rls_seed.py seeds tables not in ml_private.tenant_tables: {unknown}"


@pytest.mark.parametrize("table", TABLES)
def test_seeded_for_both_tenants(world: World, conn: Conn, table: str) -> None:
    for relation, owners in world.parts(table):
        for tenant, name in ((world.tenant_a, "A"), (world.tenant_b, "B")):
            if tenant in owners:
                assert count_of(conn, relation, tenant) > 0, f"{relation}: its seeder made no row for tenant {name}"
    assert {t for _, owners in world.parts(table) for t in owners} == {world.tenant_a, world.tenant_b}


# -- anon --------------------------------------------------------------------------------------


@pytest.mark.parametrize("table", TABLES)
def test_anon_reads_nothing(world: World, conn: Conn, table: str) -> None:
    for relation, _owners in world.parts(table):
        with request(conn, ANON):
            assert nothing_or_denied(attempt(conn, sql.SQL("select from {}").format(ident(relation))))


@pytest.mark.parametrize("table", TABLES)
def test_anon_cannot_insert(world: World, conn: Conn, table: str) -> None:
    for relation, owners in world.parts(table):
        insert = copy_of_a_row(conn, relation, owners[0])
        with request(conn, ANON):
            assert attempt(conn, insert) == DENIED


@pytest.mark.parametrize("table", TABLES)
def test_anon_cannot_update(world: World, conn: Conn, table: str) -> None:
    for relation, owners in world.parts(table):
        before = rows_of(conn, relation, owners[0])
        with request(conn, ANON):
            assert nothing_or_denied(attempt(conn, update_key(relation, None, None)))
            assert rows_of(conn, relation, owners[0]) == before


@pytest.mark.parametrize("table", TABLES)
def test_anon_cannot_delete(world: World, conn: Conn, table: str) -> None:
    for relation, owners in world.parts(table):
        before = rows_of(conn, relation, owners[0])
        with request(conn, ANON):
            assert nothing_or_denied(attempt(conn, delete_rows(relation, None)))
            assert rows_of(conn, relation, owners[0]) == before


# -- a member of tenant A, against tenant B ----------------------------------------------------


@pytest.mark.parametrize("table", TABLES)
def test_member_reads_exactly_their_tenants_rows(world: World, conn: Conn, table: str) -> None:
    for relation, _owners in world.parts(table):
        n_a = count_of(conn, relation, world.tenant_a)
        with request(conn, world.owner_a):
            assert attempt(conn, sql.SQL("select from {}").format(ident(relation))) == f"ok:{n_a}"
            assert attempt(conn, select_where(relation, "=", world.tenant_a)) == f"ok:{n_a}"


@pytest.mark.parametrize("table", TABLES)
def test_member_reads_none_of_another_tenants_rows(world: World, conn: Conn, table: str) -> None:
    for relation, _owners in world.parts(table):
        with request(conn, world.owner_a):
            assert attempt(conn, select_where(relation, "=", world.tenant_b)) == "ok:0"


@pytest.mark.parametrize("table", TABLES)
def test_member_cannot_insert_for_another_tenant(world: World, conn: Conn, table: str) -> None:
    for relation, owners in world.parts(table):
        if world.tenant_b not in owners:
            continue
        insert = copy_of_a_row(conn, relation, world.tenant_b)
        with request(conn, world.owner_a):
            assert attempt(conn, insert) == DENIED


@pytest.mark.parametrize("table", TABLES)
def test_member_cannot_update_another_tenants_rows(world: World, conn: Conn, table: str) -> None:
    for relation, _owners in world.parts(table):
        before = rows_of(conn, relation, world.tenant_b)
        with request(conn, world.owner_a):
            assert nothing_or_denied(attempt(conn, update_key(relation, None, world.tenant_b)))
            assert nothing_or_denied(attempt(conn, update_key(relation, world.tenant_a, world.tenant_b))), "took B's rows into A"
            assert rows_of(conn, relation, world.tenant_b) == before


@pytest.mark.parametrize("table", TABLES)
def test_member_cannot_move_their_rows_to_another_tenant(world: World, conn: Conn, table: str) -> None:
    for relation, owners in world.parts(table):
        if world.tenant_a not in owners:
            continue
        with request(conn, world.owner_a):
            assert attempt(conn, update_key(relation, world.tenant_b, world.tenant_a)) == DENIED


@pytest.mark.parametrize("table", TABLES)
def test_member_cannot_delete_another_tenants_rows(world: World, conn: Conn, table: str) -> None:
    for relation, _owners in world.parts(table):
        before = rows_of(conn, relation, world.tenant_b)
        with request(conn, world.owner_a):
            assert nothing_or_denied(attempt(conn, delete_rows(relation, world.tenant_b)))
            assert rows_of(conn, relation, world.tenant_b) == before


@pytest.mark.parametrize("table", TABLES)
def test_partitions_and_chunks_named_directly_show_no_other_tenants_rows(world: World, conn: Conn, table: str) -> None:
    for relation, _owners in world.parts(table):
        parts = descendants(conn, relation)
        partitioned = one(conn, "select exists (select 1 from ml_private.time_partitioned_tables"
                                " where to_regclass(table_name) = %s::regclass)", relation)
        if partitioned:
            assert parts, f"{relation} holds rows but has no partition or chunk: this check would be vacuous"
        for part in parts:
            for caller in (ANON, world.owner_a, world.viewer_a):
                with request(conn, caller):
                    outcome = attempt(conn, select_where(part, "<>", world.tenant_a))
                assert nothing_or_denied(outcome), f"{part} (part of {relation}) as {caller}: {outcome}"


# -- a viewer of tenant A ----------------------------------------------------------------------


@pytest.mark.parametrize("table", TABLES)
def test_viewer_reads_their_tenants_rows(world: World, conn: Conn, table: str) -> None:
    for relation, _owners in world.parts(table):
        n_a = count_of(conn, relation, world.tenant_a)
        with request(conn, world.viewer_a):
            assert attempt(conn, select_where(relation, "=", world.tenant_a)) == f"ok:{n_a}"
            assert attempt(conn, select_where(relation, "=", world.tenant_b)) == "ok:0"


@pytest.mark.parametrize("table", TABLES)
def test_viewer_cannot_insert(world: World, conn: Conn, table: str) -> None:
    for relation, owners in world.parts(table):
        if world.tenant_a not in owners:
            continue
        insert = copy_of_a_row(conn, relation, world.tenant_a)
        with request(conn, world.viewer_a):
            assert attempt(conn, insert) == DENIED


@pytest.mark.parametrize("table", TABLES)
def test_viewer_cannot_update(world: World, conn: Conn, table: str) -> None:
    for relation, _owners in world.parts(table):
        before = rows_of(conn, relation, world.tenant_a)
        with request(conn, world.viewer_a):
            assert nothing_or_denied(attempt(conn, update_key(relation, None, world.tenant_a)))
            assert rows_of(conn, relation, world.tenant_a) == before


@pytest.mark.parametrize("table", TABLES)
def test_viewer_cannot_delete(world: World, conn: Conn, table: str) -> None:
    for relation, _owners in world.parts(table):
        before = rows_of(conn, relation, world.tenant_a)
        with request(conn, world.viewer_a):
            assert nothing_or_denied(attempt(conn, delete_rows(relation, world.tenant_a)))
            assert rows_of(conn, relation, world.tenant_a) == before


# -- service_role ------------------------------------------------------------------------------


@pytest.mark.parametrize("table", TABLES)
def test_service_role_reads_every_tenants_rows(world: World, conn: Conn, table: str) -> None:
    for relation, _owners in world.parts(table):
        n_a, n_b = count_of(conn, relation, world.tenant_a), count_of(conn, relation, world.tenant_b)
        with request(conn, SERVICE):
            assert attempt(conn, select_where(relation, "=", world.tenant_a)) == f"ok:{n_a}"
            assert attempt(conn, select_where(relation, "=", world.tenant_b)) == f"ok:{n_b}"


# -- the tables of a feature group version -----------------------------------------------------


def test_each_tenants_group_version_has_tables_of_its_own(world: World) -> None:
    for key, tables in world.group_tables.items():
        assert len(set(tables.values())) == 2, f"{key}: tenants A and B share {tables}"
        assert all(t.startswith("ml_features.") for t in tables.values()), tables


def test_a_member_reads_their_own_group_versions_rows_through_rls(world: World, conn: Conn) -> None:
    """Not vacuous: tenant A's own offline table shows A's owner its rows, B's shows nothing."""
    for tables in world.group_tables.values():
        own = count_of(conn, tables[world.tenant_a], world.tenant_a)
        assert own > 0
        with request(conn, world.owner_a):
            assert attempt(conn, sql.SQL("select from {}").format(ident(tables[world.tenant_a]))) == f"ok:{own}"
            assert attempt(conn, sql.SQL("select from {}").format(ident(tables[world.tenant_b]))) == "ok:0"
