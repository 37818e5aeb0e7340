"""The `pgmlops` command line, run as a user runs it (a subprocess), against real servers."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import psycopg
import pytest

from pgmlops import migrations

from .conftest import EMBEDDED_HOME, EMBEDDED_PORT, Server, make_tenant


def pgmlops(*args: str, url: str | None = None, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    full_env["COLUMNS"] = "200"
    if url:
        full_env["DATABASE_URL"] = url
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "pgmlops", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def test_version_names_the_schema_head() -> None:
    run = pgmlops("version")
    assert run.returncode == 0, run.stderr
    assert f"schema head {migrations.head()}" in run.stdout


def test_migrate_creates_the_schema_on_an_empty_database(server: Server) -> None:
    url = server.empty_database()
    run = pgmlops("migrate", url=url)
    assert run.returncode == 0, run.stderr
    assert f"revision {migrations.head()}" in run.stdout
    run = pgmlops("migrate", "--downgrade", url=url)
    assert f"revision {migrations.revisions()[-2]}" in run.stdout


def test_enqueue_worker_and_jobs_work_together(fresh_db_url: str) -> None:
    with psycopg.connect(fresh_db_url, autocommit=True) as conn:
        tenant = make_tenant(conn)
    for payload in ('{"message": "a"}', '{"message": "b"}', '{"fail": "permanent"}'):
        run = pgmlops("enqueue", "echo", payload, "--tenant", tenant, url=fresh_db_url)
        assert run.returncode == 0, run.stderr
    run = pgmlops("worker", "--concurrency", "2", "--idle-exit", "2", url=fresh_db_url)
    assert run.returncode == 0, run.stderr
    run = pgmlops("jobs", url=fresh_db_url)
    assert run.returncode == 0, run.stderr
    assert "echo" in run.stdout
    row = next(text for text in run.stdout.splitlines() if " echo " in text)
    numbers = [cell.strip() for cell in row.split("│") if cell.strip()]
    assert numbers[:7] == ["echo", "0", "0", "2", "1", "0", "0"]
    assert "PermanentError" in run.stdout  # recent failures


def test_enqueue_reports_bad_input_with_its_sqlstate_and_writes_nothing(fresh_db_url: str) -> None:
    with psycopg.connect(fresh_db_url, autocommit=True) as conn:
        tenant = make_tenant(conn)
        run = pgmlops("enqueue", "echo", '{"sleep_ms": "soon"}', "--tenant", tenant, url=fresh_db_url)
        assert run.returncode == 2
        assert "[22023]" in run.stderr and "payload: $.sleep_ms: must be of type integer" in run.stderr
        run = pgmlops("enqueue", "bogus", "{}", "--tenant", tenant, url=fresh_db_url)
        assert run.returncode == 2 and "unknown job kind 'bogus'" in run.stderr
        run = pgmlops("enqueue", "echo", "{not json", "--tenant", tenant, url=fresh_db_url)
        assert run.returncode == 2 and "payload: not valid JSON" in run.stderr
        assert conn.execute("select count(*) from ml.jobs").fetchone()[0] == 0


def test_tenants_create_and_list(fresh_db_url: str) -> None:
    run = pgmlops("tenants", "create", "acme", url=fresh_db_url)
    assert run.returncode == 0, run.stderr
    tenant = run.stdout.strip()
    run = pgmlops("tenants", "add-member", tenant, "6f1c1f43-5a0e-4c4b-9d55-0b6c3b6ad0a1", "viewer", url=fresh_db_url)
    assert run.returncode == 0, run.stderr
    run = pgmlops("tenants", "add-member", tenant, "6f1c1f43-5a0e-4c4b-9d55-0b6c3b6ad0a1", "boss", url=fresh_db_url)
    assert run.returncode == 2 and "role: must be one of owner, admin, ml_engineer, viewer" in run.stderr
    run = pgmlops("tenants", "list", url=fresh_db_url)
    assert "acme" in run.stdout and tenant in run.stdout


def test_events_prints_what_happened(fresh_db_url: str) -> None:
    with psycopg.connect(fresh_db_url, autocommit=True) as conn:
        tenant = make_tenant(conn)
        conn.execute("select set_config('pgmlops.tenant_id', %s, false)", (tenant,))
        conn.execute("select ml.enqueue('echo', '{}')")
    run = pgmlops("events", "--limit", "5", url=fresh_db_url)
    assert run.returncode == 0, run.stderr
    assert "job.queued" in run.stdout and tenant in run.stdout


def test_supabase_export_check_passes_on_the_committed_export() -> None:
    run = pgmlops("supabase", "export", "--check")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "current" in run.stdout


@pytest.fixture
def embedded_env(embedded_server: Server) -> dict[str, str]:
    """Environment that points the CLI's embedded default at the test's embedded server."""
    return {"PGMLOPS_HOME": EMBEDDED_HOME, "PGMLOPS_EMBEDDED_PORT": EMBEDDED_PORT}


def test_db_status_and_url_describe_the_embedded_server(embedded_env: dict[str, str]) -> None:
    run = pgmlops("db", "status", env=embedded_env)
    assert run.returncode == 0, run.stderr
    assert "True" in run.stdout and EMBEDDED_PORT in run.stdout
    run = pgmlops("db", "url", env=embedded_env)
    assert run.stdout.strip() == f"postgresql://postgres@127.0.0.1:{EMBEDDED_PORT}/pgmlops"


def test_db_url_fails_when_the_embedded_server_is_not_running(tmp_path: Any) -> None:
    run = pgmlops("db", "url", env={"PGMLOPS_HOME": str(tmp_path), "PGMLOPS_EMBEDDED_PORT": "54397"})
    assert run.returncode == 3 and "not running" in run.stderr


def test_the_readme_main_command_runs_on_the_embedded_default(embedded_env: dict[str, str], tmp_path: Any) -> None:
    report = tmp_path / "demo.html"
    run = pgmlops("demo", "--trials", "6", "--workers", "2", env={**embedded_env, "PGMLOPS_DEMO_REPORT": str(report)},
                  timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "partitioning=native" in run.stdout and "timescaledb=False" in run.stdout
    assert "features ingested:" in run.stdout and "training set fraud_history v1:" in run.stdout
    assert "leaderboard" in run.stdout and "(6 trials on 2 workers)" in run.stdout
    assert "retraining triggered" in run.stdout and "proven better offline and deployed in shadow" in run.stdout
    assert "fraud@2 promoted to champion and deployed" in run.stdout
    assert f"HTML report written to {report}" in run.stdout and report.stat().st_size > 0
    assert "the new champion's realized ROC AUC is" in " ".join(run.stdout.split())


def test_features_create_ingest_list_and_show(fresh_db_url: str, tmp_path: Any) -> None:
    with psycopg.connect(fresh_db_url, autocommit=True) as conn:
        tenant = make_tenant(conn)
    (tmp_path / "schema.json").write_text('{"spend": {"dtype": "float", "min": 0}, "plan": {"dtype": "category"}}')
    data = tmp_path / "customers.csv"
    data.write_text("customer,event_time,spend,plan\nc1,2026-01-01T00:00:00Z,10.5,pro\nc2,2026-01-02,3,free\n"
                    "c1,2026-01-03,11,pro\n")
    run = pgmlops("features", "create", "customers", "--entity", "customer", "--schema", f"@{tmp_path / 'schema.json'}",
                  "--ttl", "30 days", "--tenant", tenant, url=fresh_db_url)
    assert run.returncode == 0, run.stderr
    assert "(customers@1)" in run.stdout
    run = pgmlops("features", "ingest", "customers", str(data), "--tenant", tenant, url=fresh_db_url)
    assert run.returncode == 0, run.stderr
    lines = {cells[0]: cells[1] for cells in ([c.strip() for c in line.split("│") if c.strip()]
                                              for line in run.stdout.splitlines()) if len(cells) == 2}
    assert (lines["rows"], lines["written"], lines["quarantined"], lines["online updated"]) == ("3", "3", "0", "2")
    run = pgmlops("features", "list", "--tenant", tenant, url=fresh_db_url)
    assert run.returncode == 0, run.stderr
    assert "customers" in run.stdout and "30 days" in run.stdout
    run = pgmlops("features", "show", "customers@1", "--tenant", tenant, url=fresh_db_url)
    assert run.returncode == 0, run.stderr
    assert "min=0" in run.stdout and "entities in the online store: 2" in run.stdout


def test_features_ingest_reports_the_bad_row_and_writes_nothing(fresh_db_url: str, tmp_path: Any) -> None:
    with psycopg.connect(fresh_db_url, autocommit=True) as conn:
        tenant = make_tenant(conn)
        conn.execute("select set_config('pgmlops.tenant_id', %s, false)", (tenant,))
        conn.execute("""select ml.create_feature_group('customers', 'customer', '{"spend": {"dtype": "float", "min": 0}}')""")
    data = tmp_path / "customers.csv"
    data.write_text("customer,event_time,spend\nc1,2026-01-01,10.5\nc2,2026-01-02,-3\n")
    run = pgmlops("features", "ingest", "customers", str(data), "--tenant", tenant, url=fresh_db_url)
    assert run.returncode == 2
    assert "[22023]" in run.stderr and "row 2" in run.stderr and "spend: must be >= 0, got -3" in run.stderr
    with psycopg.connect(fresh_db_url, autocommit=True) as conn:
        table = conn.execute("select offline_table::text from ml.feature_groups where name = 'customers'").fetchone()
        assert table is not None and conn.execute(f"select count(*) from {table[0]}").fetchone() == (0,)


# -- errors: one line with the SQLSTATE, a hint line, exit 2 for bad input and 1 for failures ----


def error_lines(run: subprocess.CompletedProcess[str]) -> list[str]:
    """What the command printed to stderr, line by line; never a traceback."""
    assert "Traceback" not in run.stderr, run.stderr
    return run.stderr.rstrip("\n").splitlines()


def test_a_value_the_sql_refuses_is_bad_input_one_line_and_exit_2(fresh_db_url: str) -> None:
    with psycopg.connect(fresh_db_url, autocommit=True) as conn:
        tenant = make_tenant(conn)
    run = pgmlops("enqueue", "echo", '{"sleep_ms": "soon"}', "--tenant", tenant, url=fresh_db_url)
    assert run.returncode == 2
    assert error_lines(run) == ["error [22023]: payload: $.sleep_ms: must be of type integer, got string"]


def test_an_error_with_a_hint_prints_it_on_the_next_line(fresh_db_url: str) -> None:
    run = pgmlops("enqueue", "echo", "{}", "--tenant", "not-a-uuid", url=fresh_db_url)
    assert run.returncode == 2
    assert error_lines(run) == ["error [22P02]: tenant_id 'not-a-uuid' is not a uuid",
                                "hint: Set pgmlops.tenant_id or app_metadata.tenant_id to a tenant's uuid."]


def test_a_name_that_names_nothing_is_bad_input(fresh_db_url: str) -> None:
    with psycopg.connect(fresh_db_url, autocommit=True) as conn:
        tenant = make_tenant(conn)
    run = pgmlops("features", "show", "nosuch", "--tenant", tenant, url=fresh_db_url)
    assert run.returncode == 2
    assert error_lines(run) == ["error [P0002]: feature group 'nosuch' does not exist",
                                "hint: Create it with ml.create_feature_group(...)."]


def test_a_missing_tenant_is_a_usage_error(fresh_db_url: str) -> None:
    run = pgmlops("features", "list", url=fresh_db_url, env={"PGMLOPS_TENANT": ""})
    assert run.returncode == 2
    assert "--tenant" in run.stderr and "required" in run.stderr and "Traceback" not in run.stderr


def test_a_state_that_forbids_the_command_is_a_failure_exit_1(fresh_db_url: str, tmp_path: Any) -> None:
    with psycopg.connect(fresh_db_url, autocommit=True) as conn:
        tenant = make_tenant(conn)
        conn.execute("select set_config('pgmlops.tenant_id', %s, false)", (tenant,))
        conn.execute("""select ml.create_feature_group('customers', 'customer', '{"spend": {"dtype": "float"}}')""")
        conn.execute("select ml.set_feature_group_status('customers', 1, 'archived')")
    data = tmp_path / "customers.csv"
    data.write_text("customer,event_time,spend\nc1,2026-01-01,10.5\n")
    run = pgmlops("features", "ingest", "customers@1", str(data), "--tenant", tenant, url=fresh_db_url)
    assert run.returncode == 1
    (line,) = [text for text in error_lines(run) if text.startswith("error")]
    assert line.startswith("error [55000]: ") and "archived" in line


def test_an_unreachable_database_is_a_failure_with_a_hint(tmp_path: Any) -> None:
    run = pgmlops("tenants", "list", url="postgresql://postgres@127.0.0.1:1/nothing")
    assert run.returncode == 1
    error, hint = error_lines(run)
    assert error.startswith("error [08006]: cannot connect to the pgmlops database: ")
    assert hint.startswith("hint: check --database-url / DATABASE_URL")


def test_an_embedded_server_that_cannot_start_is_a_failure_not_a_traceback(tmp_path: Any) -> None:
    run = pgmlops("db", "start", env={"PGMLOPS_HOME": str(tmp_path), "PGMLOPS_EMBEDDED_PORT": "junk"})
    assert run.returncode == 1
    assert error_lines(run) == ["error: PGMLOPS_EMBEDDED_PORT='junk' is not an integer"]
