"""One tenant context: pgmlops.db.tenant_context is how the library, the CLI and the workers act
as a tenant, with the role and claims PostgREST would set, for one transaction and no longer.

On the real server. Who acts is observed from inside the database: a trigger on ml.jobs records
the role and claims of whoever enqueues (a CLI command, a library call), and the ``whoami``
handler records those its worker runs with (tests/handlers_for_tenant_context.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from pgmlops.db import tenant_context
from pgmlops.errors import AccessDenied, InvalidInput
from pgmlops.jobs import queue

from .conftest import make_tenant
from .handlers_for_tenant_context import SETUP_SQL, WHO

Conn = psycopg.Connection[Any]

NO_TENANT = ("none", "", "")  # role setting, claims, pgmlops.tenant_id of a connection acting for no one


@pytest.fixture
def db(fresh_db_url: str) -> Iterator[tuple[str, Conn, str]]:
    """A fresh database with the whoami kind and the recording trigger; an autocommit
    connection as the login role (acting for no one), and a tenant."""
    with psycopg.connect(fresh_db_url, autocommit=True) as conn:
        conn.execute(SETUP_SQL)
        yield fresh_db_url, conn, make_tenant(conn)


def who(conn: Conn) -> tuple[str, str, str]:
    row = conn.execute(f"select {WHO}").fetchone()
    assert row is not None
    return (row[0], row[1], row[2])


def seen(conn: Conn) -> dict[str, tuple[str, dict[str, Any], str]]:
    rows = conn.execute("select caller, role, claims, tenant_setting from public.seen order by at").fetchall()
    return {caller: (role, json.loads(claims) if claims else {}, tenant_setting) for caller, role, claims, tenant_setting in rows}


def pgmlops(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgmlops", "--database-url", url, *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "200"})


# -- the same claims everywhere ------------------------------------------------------------------


def test_a_worker_job_a_cli_command_and_a_library_call_act_with_the_same_claims(db: tuple[str, Conn, str]) -> None:
    url, conn, tenant = db
    run = pgmlops(url, "enqueue", "whoami", '{"caller": "cli"}', "--tenant", tenant)
    assert run.returncode == 0, run.stderr
    with tenant_context(conn, tenant):
        queue.enqueue(conn, "whoami", {"caller": "library"})
    run = pgmlops(url, "worker", "--kinds", "whoami", "--import", "tests.handlers_for_tenant_context",
                  "--idle-exit", "1")
    assert run.returncode == 0, run.stderr

    claims = {"role": "service_role", "app_metadata": {"tenant_id": tenant}}
    recorded = seen(conn)
    assert recorded["cli"] == recorded["library"] == recorded["worker"] == ("service_role", claims, "")
    results = [queue.result(conn, job)["result"] for (job,) in conn.execute("select id from ml.jobs").fetchall()]
    assert {"current_user": "service_role", "role": "service_role"} in results  # the worker's handler's own view


def test_a_signed_in_user_acts_with_the_claims_supabase_auth_issues(db: tuple[str, Conn, str]) -> None:
    _, conn, tenant = db
    user = str(uuid.uuid4())
    conn.execute("select ml.add_tenant_member(%s, %s, 'ml_engineer')", (tenant, user))
    with tenant_context(conn, tenant, user=user):
        role, claims, tenant_setting = who(conn)
        assert conn.execute("select current_user, auth.uid()::text, ml.current_tenant()::text").fetchone() == (
            "authenticated", user, tenant)
    assert (role, json.loads(claims), tenant_setting) == (
        "authenticated", {"role": "authenticated", "sub": user, "app_metadata": {"tenant_id": tenant}}, "")
    with tenant_context(conn, role="anon"):
        assert conn.execute("select current_user, current_setting('request.jwt.claims')").fetchone() == (
            "anon", '{"role": "anon"}')


def test_the_context_names_the_tenant_even_over_a_session_setting(db: tuple[str, Conn, str]) -> None:
    # A psql-style service caller may set pgmlops.tenant_id for its session; inside a context
    # the context's tenant is the one acted for, and the session's comes back after it.
    _, conn, tenant = db
    other = make_tenant(conn)
    conn.execute("select set_config('pgmlops.tenant_id', %s, false)", (other,))
    with tenant_context(conn, tenant):
        assert conn.execute("select ml.current_tenant()::text").fetchone() == (tenant,)
    assert conn.execute("select ml.current_tenant()::text").fetchone() == (other,)


def test_the_context_is_one_transaction(db: tuple[str, Conn, str]) -> None:
    _, conn, tenant = db
    with tenant_context(conn, tenant):
        job = queue.enqueue(conn, "whoami", {"caller": "kept"})
    with pytest.raises(RuntimeError), tenant_context(conn, tenant):
        queue.enqueue(conn, "whoami", {"caller": "rolled back"})
        raise RuntimeError("the block failed")
    assert conn.execute("select array_agg(id) from ml.jobs").fetchone() == ([job],)
    assert set(seen(conn)) == {"kept"}


def test_inside_a_transaction_the_context_is_a_savepoint_and_gives_the_outer_caller_back(db: tuple[str, Conn, str]) -> None:
    _, conn, tenant = db
    user = str(uuid.uuid4())
    conn.execute("select ml.add_tenant_member(%s, %s, 'owner')", (tenant, user))
    with tenant_context(conn, tenant):
        outer = who(conn)
        with tenant_context(conn, tenant, user=user):
            assert who(conn)[0] == "authenticated"
        assert who(conn) == outer
        with pytest.raises(psycopg.errors.DivisionByZero), tenant_context(conn, tenant, user=user):
            conn.execute("select 1 / 0")
        assert who(conn) == outer
    assert who(conn) == NO_TENANT


def test_a_role_outside_postgrest_s_three_is_refused(db: tuple[str, Conn, str]) -> None:
    _, conn, tenant = db
    with pytest.raises(InvalidInput, match="role: must be one of anon, authenticated, service_role"), \
            tenant_context(conn, tenant, role="postgres"):
        pass


def test_a_login_role_that_may_not_switch_roles_is_refused(db: tuple[str, Conn, str]) -> None:
    url, conn, tenant = db
    login = f"pgmlops_nobody_{uuid.uuid4().hex[:8]}"
    conn.execute(f"create role {login} login password 'x'")
    try:
        base, _, rest = url.partition("://")
        _, _, host = rest.partition("@")
        with psycopg.connect(f"{base}://{login}:x@{host}", autocommit=True) as other:
            with pytest.raises(AccessDenied) as info, tenant_context(other, tenant):
                pass
            assert info.value.sqlstate == "42501"
    finally:
        conn.execute(f"drop role {login}")


# -- nothing outlives the transaction ------------------------------------------------------------


@pytest.fixture
def pool(db: tuple[str, Conn, str]) -> Iterator[ConnectionPool]:
    """A pool of one connection, so every checkout gets the same server session back."""
    with ConnectionPool(db[0], min_size=1, max_size=1, open=True) as p:
        yield p


def backend(conn: Conn) -> int:
    row = conn.execute("select pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


def test_a_pooled_connection_reused_after_a_tenant_s_transaction_carries_no_tenant(
        db: tuple[str, Conn, str], pool: ConnectionPool) -> None:
    _, conn, tenant = db
    user = str(uuid.uuid4())
    conn.execute("select ml.add_tenant_member(%s, %s, 'viewer')", (tenant, user))
    with pool.connection() as pooled:
        login = pooled.info.user
        with tenant_context(pooled, tenant):
            pid = backend(pooled)
            assert who(pooled)[0] == "service_role"
        with tenant_context(pooled, tenant, user=user):
            assert who(pooled)[0] == "authenticated"
    with pool.connection() as pooled:
        assert backend(pooled) == pid
        assert who(pooled) == NO_TENANT
        assert pooled.execute("select current_user").fetchone() == (login,)


@pytest.mark.parametrize("failure", ["python", "sql"])
def test_a_pooled_connection_carries_no_tenant_after_an_exception_in_the_block(
        db: tuple[str, Conn, str], pool: ConnectionPool, failure: str) -> None:
    _, _, tenant = db
    with pytest.raises((RuntimeError, psycopg.Error)):
        with pool.connection() as pooled:
            login = pooled.info.user
            with tenant_context(pooled, tenant):
                pid = backend(pooled)
                if failure == "sql":
                    pooled.execute("select 1 / 0")
                raise RuntimeError("the block failed")
    with pool.connection() as pooled:
        assert backend(pooled) == pid
        assert who(pooled) == NO_TENANT
        assert pooled.execute("select current_user").fetchone() == (login,)
