"""New TimescaleDB chunks get their hypertable's row-level security at commit, whichever session
makes them (ml_private.note_new_partitions, sql/core/timeseries.sql).

The trigger looks only at the chunks numbered above the last one the session checked, so that its
cost does not grow with the chunk count; these tests make chunks the ways that matter for that: in
a session that has checked before, several in one statement, and by another session whose
triggers did not fire (the next statement of any session that writes the table secures them)."""
from __future__ import annotations

from typing import Any

import psycopg

DAY = "2031-03-{:02d}T12:00:00Z"


def unsecured(conn: psycopg.Connection[Any]) -> int:
    """Chunks of public.chunk_probe without row-level security."""
    row = conn.execute("select count(*) from pg_inherits i join pg_class c on c.oid = i.inhrelid "
                       "where i.inhparent = 'public.chunk_probe'::regclass and not c.relrowsecurity").fetchone()
    assert row is not None
    return int(row[0])


def chunks(conn: psycopg.Connection[Any]) -> int:
    """Chunks of public.chunk_probe."""
    row = conn.execute("select count(*) from public.show_chunks('public.chunk_probe')").fetchone()
    assert row is not None
    return int(row[0])


def insert(conn: psycopg.Connection[Any], tenant: str, *days: int) -> None:
    """One statement writing a row on each of the days of March 2031."""
    conn.execute("insert into public.chunk_probe (tenant_id, at, v) select %s, d::timestamptz, 1 "
                 "from unnest(%s::text[]) d", (tenant, [DAY.format(d) for d in days]))


def test_every_new_chunk_is_secured_at_commit_whichever_session_makes_it(fresh_db_url: str) -> None:
    with psycopg.connect(fresh_db_url, autocommit=True) as a, \
            psycopg.connect(fresh_db_url, autocommit=True) as b:
        assert a.execute("select ml_private.create_time_partitioned_table('public', 'chunk_probe', "
                         "'tenant_id uuid not null, at timestamptz not null, v int', 'at', '1 day')"
                         ).fetchone() == ("hypertable",)
        a.execute("select ml_private.enable_tenant_rls('public.chunk_probe')")
        row = a.execute("select gen_random_uuid()::text").fetchone()
        assert row is not None
        tenant = str(row[0])

        insert(a, tenant, 1)  # a's first statement on the table: it checks every chunk
        insert(b, tenant, 2)  # another session's chunk, secured by its own statement
        assert (chunks(a), unsecured(a)) == (2, 0)

        # a has checked before; one statement makes two chunks, numbered above both it saw.
        with a.transaction():
            insert(a, tenant, 3, 4)
            assert unsecured(a) == 2  # TimescaleDB made them mid-statement; queued for commit
        assert (chunks(a), unsecured(a)) == (4, 0)
        assert a.execute("select count(*) from ml_private.partition_checks").fetchone() == (0,)

        # A chunk made with triggers off (a restore, a replica) stays unsecured ...
        b.execute("set session_replication_role = replica")
        insert(b, tenant, 5)
        b.execute("reset session_replication_role")
        assert unsecured(a) == 1
        # ... until the next statement on the table of a session that had checked before it was made,
        # even a statement that makes no chunk:
        insert(a, tenant, 1)
        assert (chunks(a), unsecured(a)) == (5, 0)

        # and likewise for a session's first statement.
        b.execute("set session_replication_role = replica")
        insert(b, tenant, 6)
        b.execute("reset session_replication_role")
        with psycopg.connect(fresh_db_url, autocommit=True) as c:
            assert unsecured(c) == 1
            insert(c, tenant, 2)
            assert (chunks(c), unsecured(c)) == (6, 0)

        # A rolled-back statement takes its chunk and what it checked with it: made again, the
        # chunk is secured.
        with a.transaction(force_rollback=True):
            insert(a, tenant, 7)
        insert(a, tenant, 7)
        assert (chunks(a), unsecured(a)) == (7, 0)
