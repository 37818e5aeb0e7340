"""ml.capabilities() and the time-partitioned table helper, on both servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg


def test_full_server_reports_its_extensions(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        caps = conn.execute("select ml.capabilities()").fetchone()[0]
    assert caps["vector"] is True
    assert caps["timescaledb"] is True
    assert caps["partitioning"] == "hypertable"
    assert caps["realtime"] is False
    assert caps["server_version"] // 10000 == 15


def test_events_table_is_a_hypertable_on_the_full_server(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "select count(*) from timescaledb_information.hypertables "
            "where hypertable_schema = 'ml' and hypertable_name = 'events'").fetchone()
    assert row == (1,)


def test_embedded_server_falls_back_to_native_partitioning(embedded_server) -> None:  # type: ignore[no-untyped-def]
    url = embedded_server.clone()
    try:
        with psycopg.connect(url) as conn:
            caps = conn.execute("select ml.capabilities()").fetchone()[0]
            parts = conn.execute(
                "select count(*) from pg_inherits where inhparent = 'ml.events'::regclass").fetchone()[0]
            kind = conn.execute("select relkind from pg_class where oid = 'ml.events'::regclass").fetchone()[0]
        assert caps["timescaledb"] is False and caps["pg_cron"] is False
        assert caps["vector"] is True
        assert caps["partitioning"] == "native"
        assert caps["server_version"] // 10000 == 18
        assert kind == "p"
        assert parts >= 6  # default + yesterday, today and 4 chunks ahead
    finally:
        embedded_server.drop(url)


def test_native_partitions_take_rows_out_of_the_default_partition(any_db_url: str) -> None:
    old = datetime(2020, 1, 15, 12, tzinfo=UTC)
    with psycopg.connect(any_db_url, autocommit=True) as conn:
        conn.execute("""select ml_private.create_time_partitioned_table('ml', 'metrics_demo',
                        'tenant_id uuid, at timestamptz not null, v float8', 'at', '1 day', '30 days')""")
        mode = conn.execute("select mode from ml_private.time_partitioned_tables "
                            "where table_name = 'ml.metrics_demo'").fetchone()[0]
        conn.execute("insert into ml.metrics_demo values (gen_random_uuid(), %s, 1.0), "
                     "(gen_random_uuid(), now(), 2.0)", (old,))
        created = conn.execute("select ml_private.ensure_time_partitions('ml.metrics_demo', %s, %s)",
                               (old, old + timedelta(hours=1))).fetchone()[0]
        total = conn.execute("select count(*) from ml.metrics_demo").fetchone()[0]
        assert total == 2
        if mode == "native":
            assert created >= 1
            where = conn.execute("select tableoid::regclass::text from ml.metrics_demo where at = %s",
                                 (old,)).fetchone()[0]
            assert where == "ml.metrics_demo_p20200115_000000"
            in_default = conn.execute("select count(*) from ml.metrics_demo_default").fetchone()[0]
            assert in_default == 0
        else:
            assert created == 0  # TimescaleDB makes chunks itself
        dropped = conn.execute("select ml_private.drop_expired_partitions('ml.metrics_demo')").fetchone()[0]
        assert dropped >= 1
        assert conn.execute("select count(*) from ml.metrics_demo").fetchone()[0] == 1


def test_chunk_interval_must_be_positive(conn: psycopg.Connection) -> None:  # type: ignore[type-arg]
    try:
        conn.execute("select ml_private.create_time_partitioned_table('ml', 'bad_ts', 'at timestamptz', 'at', '0 days')")
    except psycopg.errors.InvalidParameterValue as exc:
        assert "chunk_interval" in str(exc)
    else:
        raise AssertionError("a zero chunk interval was accepted")
    assert conn.execute("select to_regclass('ml.bad_ts')").fetchone()[0] is None
