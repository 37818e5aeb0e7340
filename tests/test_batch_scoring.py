"""Batch scoring: ml.predict_batch (one statement, compiled versions) and ml.score (a `score` job,
chunk by chunk, any version) against scikit-learn, with the caller's own rights on the source,
bad sources refused with nothing written, and a job that resumes after losing its worker without
writing a row twice.

The data is a user table with an RLS policy (rows of two tenants); the callers are members of
tenant A acting through pgmlops.db.tenant_context, as PostgREST runs a signed-in user's request.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
from psycopg.types.json import Jsonb
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import Ridge
from sklearn.svm import SVC

from pgmlops import scoring
from pgmlops.db import tenant_context
from pgmlops.errors import LeaseLost
from pgmlops.jobs import queue
from pgmlops.jobs.handlers import JobContext
from pgmlops.jobs.worker import Worker, WorkerPool
from pgmlops.models import artifacts
from pgmlops.scoring import _batch
from pgmlops.training._algorithms import build_pipeline

from .compile_helpers import MIXED_SIGNATURE, mixed_frame, mixed_labels, one
from .conftest import act_for, make_tenant
from .training_data import refused

Conn = psycopg.Connection[Any]
N_A, N_B = 140, 30


class Env:
    """Tenant A (with a project, two classifiers and a regressor), tenant B, their members, and
    public.customers: rows of both tenants behind an RLS policy."""

    def __init__(self, url: str, conn: Conn) -> None:
        self.url = url
        self.conn = conn
        self.a = make_tenant(conn, "tenant-a")
        self.b = make_tenant(conn, "tenant-b")
        self.user_a = member(conn, self.a, "ml_engineer")
        self.viewer_a = member(conn, self.a, "viewer")
        self.user_b = member(conn, self.b, "ml_engineer")
        act_for(conn, self.a)
        self.project = str(one(conn, "select ml.create_project('churn', 'classification', 'label')"))
        self.project_reg = str(one(conn, "select ml.create_project('spend', 'regression', 'label')"))
        train = mixed_frame(400, seed=1)
        labels = mixed_labels(train, "binary", seed=1)
        gb = GradientBoostingClassifier(n_estimators=20, max_depth=3, random_state=0)
        self.gb = build_pipeline(MIXED_SIGNATURE, gb).fit(train, labels)
        self.svc = build_pipeline(MIXED_SIGNATURE, SVC(random_state=0)).fit(train, labels)
        self.ridge = build_pipeline(MIXED_SIGNATURE, Ridge()).fit(train, mixed_labels(train, "regression", seed=1))
        self.gb_version = register(conn, self.project, "churn_gb", self.gb, "classification", [0, 1])
        scoring.install(conn, self.gb_version, scoring.describe(self.gb, task="classification"))
        self.svc_version = register(conn, self.project, "churn_svc", self.svc, "classification", [0, 1])
        conn.execute("select ml.record_worker_scoring(%s, 'SVMs sum a kernel over every support vector: scored by workers')",
                     (self.svc_version,))
        self.ridge_version = register(conn, self.project_reg, "spend_ridge", self.ridge, "regression", None)
        scoring.install(conn, self.ridge_version, scoring.describe(self.ridge, task="regression"))
        act_for(conn, None)

        # The user's data: tenant A's rows and tenant B's, RLS lets each member see their own.
        self.frame = mixed_frame(N_A + N_B, seed=7, held_out=True)
        self.frame.insert(0, "id", np.arange(1, N_A + N_B + 1))
        # vector(2) stores single precision: what scikit-learn is given must be what the table holds.
        self.frame["emb"] = [None if e is None else np.asarray(e, dtype=np.float32).astype(float) for e in self.frame["emb"]]
        self.frame["tenant_id"] = [self.a] * N_A + [self.b] * N_B
        conn.execute("""create table public.customers (id int primary key, amount float8, visits int, tier text, vip boolean,
                        seen timestamptz, emb vector(2), tenant_id uuid not null)""")
        with conn.cursor() as cur:
            cur.executemany("insert into public.customers values (%s, %s, %s, %s, %s, %s, %s::vector, %s)",
                            [db_row(r) for r in self.frame.itertuples(index=False)])
        conn.execute("alter table public.customers enable row level security")
        conn.execute("create policy customers_member on public.customers to authenticated "
                     "using (tenant_id = any (ml_private.current_tenant_ids()))")
        conn.execute("grant select on public.customers to authenticated")
        conn.execute("create table public.secrets (id int, amount float8)")
        conn.execute("create schema app")
        conn.execute("grant usage, create on schema app to authenticated")

    def rows_of(self, tenant: str) -> pd.DataFrame:
        return self.frame[self.frame["tenant_id"] == tenant].reset_index(drop=True)


def member(conn: Conn, tenant: str, role: str) -> str:
    user = str(uuid.uuid4())
    conn.execute("select ml.add_tenant_member(%s, %s, %s)", (tenant, user, role))
    return user


def register(conn: Conn, project: str, name: str, pipeline: Any, task: str, classes: list[Any] | None) -> str:
    """A finished run and a version of model ``name`` holding ``pipeline``'s real artifact."""
    algorithm = "gradient_boosting" if task == "classification" else "ridge"
    run = str(one(conn, "select ml.start_run(%s, null, %s, '{}', '{}', null, '{}')", project, algorithm))
    conn.execute("select ml.finish_run(%s, 'succeeded', '{}', 1.0, 100, 0.1)", (run,))
    blob, fmt, digest = artifacts.dump(pipeline)
    sig = {"inputs": MIXED_SIGNATURE, "outputs": [], "task": task, "classes": classes}
    result = one(conn, "select ml.register_model_version(%s, %s, %s, %s, %s, %s, null, '{}')",
                 run, name, blob, fmt, digest, Jsonb(sig))
    return str(result["model_version_id"])


def db_row(r: Any) -> tuple[Any, ...]:
    def plain(v: Any) -> Any:
        if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and math.isnan(v)):
            return None
        if isinstance(v, pd.Timestamp):
            return v.to_pydatetime()
        if isinstance(v, (np.integer, np.bool_, np.floating)):
            return v.item()
        return v
    emb = None if r.emb is None else "[" + ",".join(repr(float(x)) for x in r.emb) + "]"
    return (plain(r.id), plain(r.amount), plain(r.visits), plain(r.tier), plain(r.vip), plain(r.seen), emb, r.tenant_id)


@pytest.fixture(scope="module")
def env(db_url: str) -> Iterator[Env]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        yield Env(db_url, conn)


def as_user(conn: Conn, tenant: str, user: str) -> Any:
    return tenant_context(conn, tenant, user=user)


def predict_batch(env: Env, source: str, options: dict[str, Any], *, user: str | None = None) -> list[tuple[Any, ...]]:
    with as_user(env.conn, env.a, user or env.user_a):
        return env.conn.execute("select * from ml.predict_batch('churn', %s, %s)", (source, Jsonb(options))).fetchall()


def assert_close(got: float | None, expected: float, tolerance: float = 1e-9) -> None:
    assert got is not None and abs(got - expected) <= tolerance * max(1.0, abs(expected)), (got, expected)


# -- ml.predict_batch ------------------------------------------------------------------------------

def test_predict_batch_equals_scikit_learn_on_rows_with_missing_values(env: Env) -> None:
    rows = predict_batch(env, "select * from public.customers order by id", {"model": "churn_gb"})
    mine = env.rows_of(env.a)   # RLS: the member of A sees A's rows only
    assert len(rows) == N_A
    proba = env.gb.predict_proba(mine)
    labels = env.gb.predict(mine)
    for i, (row_number, key, prediction, score, probabilities, version) in enumerate(rows):
        assert row_number == i + 1
        assert key == {"id": int(mine["id"][i]), "tenant_id": env.a}   # the columns that are not inputs
        assert prediction == int(labels[i])
        assert_close(score, proba[i, 1])
        assert set(probabilities) == {"0", "1"}
        assert_close(probabilities["0"], proba[i, 0])
        assert_close(probabilities["1"], proba[i, 1])
        assert str(version) == env.gb_version
    assert mine[["amount", "visits", "tier", "vip", "seen"]].isna().any().all()   # the rows do carry missing values


def test_predict_batch_takes_a_table_name_key_columns_and_a_regression(env: Env) -> None:
    with as_user(env.conn, env.a, env.user_a):
        rows = env.conn.execute("select row_number, key, prediction, score, probabilities from "
                                "ml.predict_batch('spend', 'public.customers', '{\"model\": \"spend_ridge\", \"key\": [\"id\"]}') "
                                "order by (key->>'id')::int").fetchall()
    mine = env.rows_of(env.a)
    expected = env.ridge.predict(mine)
    assert [r[1] for r in rows] == [{"id": int(i)} for i in mine["id"]]
    for r, y in zip(rows, expected, strict=True):
        assert_close(float(r[2]), y)
        assert_close(r[3], y)
        assert r[4] is None


def test_a_source_runs_with_the_callers_rights_only(env: Env) -> None:
    # Tenant B's member sees tenant B's rows through the same query; a viewer of A may score (read).
    with as_user(env.conn, env.b, env.user_b), refused("P0002", "project 'churn' does not exist"):
        env.conn.execute("select * from ml.predict_batch('churn', 'public.customers', '{\"model\": \"churn_gb\"}')")
    rows = predict_batch(env, "public.customers", {"model": "churn_gb", "key": ["tenant_id"]}, user=env.viewer_a)
    assert len(rows) == N_A and {r[1]["tenant_id"] for r in rows} == {env.a}
    assert len(predict_batch(env, "select * from public.customers -- a trailing comment;", {"model": "churn_gb"})) == N_A
    # A table the caller may not read is refused as the caller's own query would be.
    with refused("42501", "permission denied"):
        predict_batch(env, "public.secrets", {"model": "churn_gb"})
    with refused("42501", "permission denied"):
        predict_batch(env, "select c.*, s.amount as secret from public.customers c cross join public.secrets s", {"model": "churn_gb"})


@pytest.mark.parametrize(("source", "sqlstate", "match"), [
    ("public.no_such_table", "42P01", "no_such_table"),
    ("nowhere.customers", "42P01", "nowhere"),
    ("select * from public.no_such_table", "42P01", "no_such_table"),
    ("select * frm public.customers", "42601", "syntax error"),
    ("select 1; drop table public.customers", "42601", "syntax error"),
    ("not a table name at all", "42601", "neither a readable table name nor a query"),
    ("   ", "22023", "source: must be a table name or a query"),
    ("select id, amount, visits, tier, vip, seen from public.customers", "22023", 'missing column emb'),
    ("select id, amount::text as amount, visits, tier, vip, seen, emb from public.customers", "22023",
     "column amount has type text, which cannot give model input amount \\(float\\)"),
])
def test_bad_sources_are_refused_with_their_sqlstate(env: Env, source: str, sqlstate: str, match: str) -> None:
    before = one(env.conn, "select (select count(*) from ml.batch_scorings) + (select count(*) from ml.jobs)")
    with refused(sqlstate, match):
        predict_batch(env, source, {"model": "churn_gb"})
    with refused(sqlstate, match), as_user(env.conn, env.a, env.user_a):
        env.conn.execute("select ml.score('churn', %s, 'app.bad_scores', '{\"model\": \"churn_gb\"}')", (source,))
    act_for(env.conn, None)
    assert one(env.conn, "select (select count(*) from ml.batch_scorings) + (select count(*) from ml.jobs)") == before
    assert one(env.conn, "select to_regclass('app.bad_scores') is null")


def test_bad_options_and_worker_versions_are_refused(env: Env) -> None:
    with refused("0A000", "scored by workers, not compiled to SQL.*SVMs"):
        predict_batch(env, "public.customers", {"model": "churn_svc"})
    with refused("22023", "options: unknown option 'colour'"):
        predict_batch(env, "public.customers", {"model": "churn_gb", "colour": 1})
    with refused("22023", "options.key: the source has no column nope"):
        predict_batch(env, "public.customers", {"model": "churn_gb", "key": ["nope"]})
    with refused("22023", "options.model: model 'spend_ridge' belongs to another project"):
        predict_batch(env, "public.customers", {"model": "spend_ridge"})
    with refused("P0002", "model 'nope' does not exist"):
        predict_batch(env, "public.customers", {"model": "nope"})
    with as_user(env.conn, env.a, env.user_a):
        for options, sqlstate, match in [
            ({"model": "churn_svc", "path": "sql"}, "0A000", "scored by workers"),
            ({"model": "churn_gb", "path": "fast"}, "22023", "options.path: must be sql or worker"),
            ({"model": "churn_gb", "chunk_rows": 0}, "22023", "options.chunk_rows"),
            ({"model": "churn_gb", "chunk_rows": 2.5}, "22023", "options.chunk_rows"),
        ]:
            with refused(sqlstate, match), env.conn.transaction():
                env.conn.execute("select ml.score('churn', 'public.customers', 'app.x', %s)", (Jsonb(options),))
    # A viewer may read but not queue work; a target of the wrong shape is refused.
    with refused("42501", "viewer"), as_user(env.conn, env.a, env.viewer_a):
        env.conn.execute("select ml.score('churn', 'public.customers', 'app.x', '{\"model\": \"churn_gb\"}')")
    env.conn.execute("create table app.wrong (batch_scoring_id uuid, row_number int)")
    env.conn.execute("grant insert on app.wrong to authenticated")
    with refused("42804", "column row_number of table app.wrong has type integer, not bigint"), as_user(env.conn, env.a, env.user_a):
        env.conn.execute("select ml.score('churn', 'public.customers', 'app.wrong', '{\"model\": \"churn_gb\"}')")
    env.conn.execute("create table app.locked (x int)")
    with refused("42501", "permission denied to insert into app.locked"), as_user(env.conn, env.a, env.user_a):
        env.conn.execute("select ml.score('churn', 'public.customers', 'app.locked', '{\"model\": \"churn_gb\"}')")
    act_for(env.conn, None)
    assert one(env.conn, "select count(*) from ml.batch_scorings") == 0
    assert one(env.conn, "select count(*) from ml.jobs where kind = 'score'") == 0


# -- ml.score ------------------------------------------------------------------------------------

def run_worker(url: str) -> None:
    Worker(url, kinds=["score"], idle_exit=0.5, poll_interval=0.2, install_signals=False, maintenance_interval=None).run()


def target_rows(env: Env, table: str) -> list[tuple[Any, ...]]:
    return env.conn.execute(f"select row_number, id, prediction, score, probabilities, model_version_id from {table} "
                            "order by row_number").fetchall()


def scoring_of(env: Env, job: int) -> dict[str, Any]:
    row = env.conn.execute("select status, rows_done, rows_total, path, error from ml.batch_scorings where job_id = %s",
                           (job,)).fetchone()
    assert row is not None
    return dict(zip(["status", "rows_done", "rows_total", "path", "error"], row, strict=True))


@pytest.mark.parametrize(("model", "path"), [("churn_gb", "sql"), ("churn_svc", "worker")])
def test_score_writes_every_row_once_equal_to_scikit_learn(env: Env, model: str, path: str) -> None:
    table = f"app.scores_{model}"
    with as_user(env.conn, env.a, env.user_a):
        job = int(one(env.conn, "select ml.score('churn', 'select * from public.customers order by id desc', %s, %s)",
                      table, Jsonb({"model": model, "chunk_rows": 32, "key": ["id"]})))
    act_for(env.conn, None)
    assert one(env.conn, "select created_by from ml.jobs where id = %s", job) == uuid.UUID(env.user_a)
    run_worker(env.url)
    status = env.conn.execute("select status, error from ml.jobs where id = %s", (job,)).fetchone()
    assert status == ("succeeded", None), status
    assert scoring_of(env, job) == {"status": "succeeded", "rows_done": N_A, "rows_total": N_A, "path": path, "error": None}
    rows = target_rows(env, table)
    mine = env.rows_of(env.a).iloc[::-1].reset_index(drop=True)   # the query's order
    pipeline = env.gb if model == "churn_gb" else env.svc
    labels = pipeline.predict(mine)
    assert [r[0] for r in rows] == list(range(1, N_A + 1))
    assert [r[1] for r in rows] == [int(i) for i in mine["id"]]
    assert [r[2] for r in rows] == [int(v) for v in labels]
    if model == "churn_gb":
        proba = pipeline.predict_proba(mine)
        for r, p in zip(rows, proba, strict=True):
            assert_close(r[3], p[1])
            assert_close(r[4]["0"], p[0])
    else:
        decision = pipeline.decision_function(mine)
        for r, d in zip(rows, decision, strict=True):
            assert_close(r[3], d)
            assert r[4] is None
    # The snapshot is gone; the progress was announced.
    assert one(env.conn, "select count(*) from pg_tables where schemaname = 'ml_private' and tablename like 'batch_rows_%%'") == 0
    assert one(env.conn, "select count(*) from ml.events where event = 'batch_scoring.progress' and (payload->>'job_id')::bigint = %s",
               job) == math.ceil(N_A / 32)


class LostAfter:
    """A ``lost`` event that reports the lease lost after ``n`` checks (one check per chunk)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def is_set(self) -> bool:
        self.n -= 1
        return self.n < 0


def test_a_job_that_loses_its_worker_resumes_without_duplicates(env: Env) -> None:
    with as_user(env.conn, env.a, env.user_a):
        job = int(one(env.conn, "select ml.score('churn', 'public.customers', 'app.resumed', %s)",
                      Jsonb({"model": "churn_svc", "chunk_rows": 20, "key": ["id"]})))
    act_for(env.conn, None)
    # Worker w1 claims it and dies after three chunks.
    with psycopg.connect(env.url) as work:
        [claimed] = queue.claim(work, "w1", ["score"], 1)
        work.commit()
        assert claimed.id == job
        with tenant_context(work, claimed.tenant_id), pytest.raises(LeaseLost):
            _batch.score(JobContext(job=claimed, conn=work, worker_id="w1", lost=LostAfter(3)))  # type: ignore[arg-type]
        assert scoring_of(env, job)["rows_done"] == 60
        assert one(env.conn, "select count(*) from app.resumed") == 60
        # Its lease expires; w1, still running, may not write another chunk.
        env.conn.execute("update ml.jobs set lease_expires_at = now() - interval '1 second' where id = %s", (job,))
        assert one(env.conn, "select ml.reap_expired_leases()") == 1
        with tenant_context(work, claimed.tenant_id), pytest.raises(Exception, match="not held by worker w1"):
            _batch.score(JobContext(job=claimed, conn=work, worker_id="w1", lost=threading.Event()))
        assert one(env.conn, "select count(*) from app.resumed") == 60
    # The next worker resumes after the last chunk.
    run_worker(env.url)
    assert scoring_of(env, job)["status"] == "succeeded"
    rows = target_rows(env, "app.resumed")
    assert [r[0] for r in rows] == list(range(1, N_A + 1))
    mine = env.rows_of(env.a).sort_values("id").reset_index(drop=True)
    assert sorted(r[1] for r in rows) == [int(i) for i in mine["id"]]
    by_id = {r[1]: r[2] for r in rows}
    assert [by_id[int(i)] for i in mine["id"]] == [int(v) for v in env.svc.predict(mine)]


def test_a_worker_killed_mid_job_leaves_whole_chunks_and_the_next_one_finishes(env: Env) -> None:
    with as_user(env.conn, env.a, env.user_a):
        job = int(one(env.conn, "select ml.score('churn', 'select c.*, g from public.customers c cross join generate_series(1, 2) g', "
                                "'app.killed', %s)", Jsonb({"model": "churn_svc", "chunk_rows": 10, "key": ["id", "g"]})))
    act_for(env.conn, None)
    total = 2 * N_A
    pool = WorkerPool(env.url, ["score"], 1, poll_interval=0.2).start()
    try:
        deadline = time.monotonic() + 60
        while one(env.conn, "select rows_done from ml.batch_scorings where job_id = %s", job) < 20:
            assert time.monotonic() < deadline, "the worker made no progress"
            time.sleep(0.01)
        os.kill(pool.pids()[0], signal.SIGKILL)
    finally:
        pool.stop(timeout=5)
    done = one(env.conn, "select rows_done from ml.batch_scorings where job_id = %s", job)
    assert 20 <= done < total, done
    assert one(env.conn, "select count(*) from app.killed") == done   # whole chunks only
    env.conn.execute("update ml.jobs set lease_expires_at = now() - interval '1 second' where id = %s", (job,))
    run_worker(env.url)
    assert scoring_of(env, job)["status"] == "succeeded"
    assert env.conn.execute("select count(*), count(distinct (id, g)), min(row_number), max(row_number), count(distinct row_number) "
                            "from app.killed").fetchone() == (total, total, 1, total, total)


def test_tenant_b_cannot_score_or_touch_tenant_a(env: Env) -> None:
    with refused("P0002", "project 'churn' does not exist"), as_user(env.conn, env.b, env.user_b):
        env.conn.execute("select ml.score('churn', 'public.customers', 'app.b_scores', '{\"model\": \"churn_gb\"}')")
    with as_user(env.conn, env.a, env.user_a):
        job = one(env.conn, "select ml.score('churn', 'public.customers', 'app.a_scores', '{\"model\": \"churn_gb\"}')")
        env.conn.execute("select ml.cancel_job(%s)", (job,))
    act_for(env.conn, None)
    a_scoring = one(env.conn, "select id from ml.batch_scorings where job_id = %s", job)
    with as_user(env.conn, env.b, env.user_b):
        assert env.conn.execute("select count(*) from ml.batch_scorings").fetchone() == (0,)
        for call in ("ml.stage_batch_scoring(%s)", "ml.score_chunk(%s, 1, 'w')"):
            with refused("P0002"), env.conn.transaction():
                env.conn.execute(f"select {call}", (a_scoring,))
        with refused("P0002"), env.conn.transaction():
            env.conn.execute("select ml.batch_scoring_inputs(%s, 0, 10)", (a_scoring,))
        with refused("P0002"), env.conn.transaction():
            env.conn.execute("select * from ml.batch_scoring_keys(%s, 0, 10)", (a_scoring,))
        with refused("P0002"), env.conn.transaction():
            env.conn.execute("select ml.batch_scoring_progress(%s, 1, 'w', 0, 1)", (a_scoring,))
        with refused("42501", "permission denied for function finish_batch_scoring"), env.conn.transaction():
            env.conn.execute("select ml.finish_batch_scoring(%s)", (a_scoring,))
    # Even A's own members cannot finish a scoring (workers do); anonymous callers reach nothing.
    with refused("42501", "permission denied for function finish_batch_scoring"), as_user(env.conn, env.a, env.user_a):
        env.conn.execute("select ml.finish_batch_scoring(%s)", (a_scoring,))
    with refused("42501", "permission denied for function predict_batch"), tenant_context(env.conn, role="anon"):
        env.conn.execute("select * from ml.predict_batch('churn', 'public.customers')")


def test_without_a_model_the_deployed_version_scores(env: Env) -> None:
    with refused("P0002", "no active deployment"):
        predict_batch(env, "public.customers", {})
    with as_user(env.conn, env.a, env.user_a):
        env.conn.execute("select ml.approve('churn_gb', 1, 'approved')")
        deployment = one(env.conn, """select ml.deploy('churn', 'single', '[{"arm": "a", "model": "churn_gb", "version": 1}]')""")
        rows = env.conn.execute("select model_version_id, count(*) from ml.predict_batch('churn', 'public.customers') "
                                "group by 1").fetchall()
        job = int(one(env.conn, "select ml.score('churn', 'public.customers', 'app.deployed', '{\"key\": [\"id\"]}')"))
    assert [(str(v), n) for v, n in rows] == [(env.gb_version, N_A)]
    act_for(env.conn, None)
    assert env.conn.execute("select deployment_id, model_version_id, path from ml.batch_scorings where job_id = %s",
                            (job,)).fetchone() == (deployment, uuid.UUID(env.gb_version), "sql")
    run_worker(env.url)
    assert scoring_of(env, job)["status"] == "succeeded"
    assert one(env.conn, "select count(distinct row_number) from app.deployed") == N_A


def test_the_default_path_is_the_faster_one(env: Env) -> None:
    # A large tree ensemble (300 trees x depth 4 > 250 tree levels) goes to workers; a compiled
    # small one (20 x 3) and a linear model to SQL (above); a version scored by workers to workers.
    train = mixed_frame(200, seed=3)
    big = build_pipeline(MIXED_SIGNATURE, GradientBoostingClassifier(n_estimators=300, max_depth=4, random_state=0))
    big.fit(train, mixed_labels(train, "binary", seed=3))
    act_for(env.conn, env.a)
    version = register(env.conn, env.project, "churn_big", big, "classification", [0, 1])
    scoring.install(env.conn, version, scoring.describe(big, task="classification"))
    act_for(env.conn, None)
    with as_user(env.conn, env.a, env.user_a):
        job = int(one(env.conn, "select ml.score('churn', 'public.customers', 'app.big', '{\"model\": \"churn_big\"}')"))
        sql_job = int(one(env.conn, "select ml.score('churn', 'public.customers', 'app.big', %s)",
                          Jsonb({"model": "churn_big", "path": "sql"})))
        for j in (job, sql_job):
            env.conn.execute("select ml.cancel_job(%s)", (j,))
    act_for(env.conn, None)
    assert scoring_of(env, job)["path"] == "worker"
    assert scoring_of(env, sql_job)["path"] == "sql"


def test_a_cancelled_job_fails_its_scoring(env: Env) -> None:
    with as_user(env.conn, env.a, env.user_a):
        job = int(one(env.conn, "select ml.score('churn', 'public.customers', 'app.cancelled', %s)",
                      Jsonb({"model": "churn_svc", "chunk_rows": 50, "key": ["id"]})))
    act_for(env.conn, None)
    with psycopg.connect(env.url) as work:
        [claimed] = queue.claim(work, "w2", ["score"], 1)
        work.commit()
        env.conn.execute("select ml.cancel_job(%s)", (job,))
        with tenant_context(work, claimed.tenant_id), pytest.raises(LeaseLost):
            _batch.score(JobContext(job=claimed, conn=work, worker_id="w2", lost=threading.Event()))
    assert scoring_of(env, job) == {"status": "failed", "rows_done": 0, "rows_total": N_A, "path": "worker",
                                    "error": f"job {job} was cancelled"}
    assert one(env.conn, "select count(*) from app.cancelled") == 0
    assert one(env.conn, "select count(*) from pg_tables where tablename like 'batch_rows_%%'") == 0


def test_versions_trained_on_transformed_columns_score_raw_rows_on_both_paths(env: Env) -> None:
    """A training set that transforms its columns (standardize, log1p, bucketize): the source gives
    the raw columns; the sql path applies the transformations in the compiled function, the
    worker path through ml.apply_transformations, both like the trained pipeline."""
    from pgmlops import features as datasets
    from pgmlops import training
    from pgmlops.models import load_model

    conn = env.conn
    act_for(conn, env.a)
    rng = np.random.default_rng(5)
    conn.execute("select ml.create_feature_group('clients', 'client', %s)", (Jsonb({
        "amount": {"dtype": "float"}, "visits": {"dtype": "int"}, "tier": {"dtype": "category"}}),))
    values = [{"client": f"c{i}", "event_time": "2026-01-01T00:00:00Z", "amount": None if i % 13 == 0 else float(rng.gamma(2.0, 30.0)),
               "visits": int(rng.integers(0, 25)), "tier": str(rng.choice(["gold", "silver", "bronze"]))} for i in range(150)]
    conn.execute("select ml.ingest('clients', %s)", (Jsonb(values),))
    spine = pd.DataFrame({"client": [v["client"] for v in values], "event_time": pd.Timestamp("2026-02-01", tz="UTC"),
                          "churned": [int((v["amount"] or 60) > 55 or v["tier"] == "gold") for v in values]})
    dataset = datasets.create_training_set(
        conn, "clients_set", spine, ["clients:amount", "clients:visits", "clients:tier"], label="churned",
        transformations=[{"type": "standardize", "column": "amount", "keep": True}, {"type": "log1p", "column": "amount"},
                         {"type": "bucketize", "column": "visits", "boundaries": [5, 10, 15]}])
    training.create_project(conn, "clients", "classification", "churned")
    training.train(conn, "clients", dataset, "svm", {}, {"model": "clients-svm"})
    training.train(conn, "clients", dataset, "logistic_regression", {}, {"model": "clients-lr"})
    Worker(env.url, kinds=["train", "compile"], idle_exit=0.5, poll_interval=0.2, install_signals=False,
           maintenance_interval=None).run()
    models = {name: load_model(conn, f"{name}@1") for name in ("clients-svm", "clients-lr")}
    raw = pd.DataFrame({"client": [f"n{i}" for i in range(40)],
                        "amount": [None if i % 7 == 0 else float(v) for i, v in enumerate(rng.gamma(2.0, 30.0, 40))],
                        "visits": [int(v) for v in rng.integers(0, 25, 40)],
                        "tier": [["gold", "silver", "bronze", "tin"][i % 4] for i in range(40)]})
    inputs = datasets.apply_transformations(conn, dataset, raw.drop(columns="client"))
    act_for(conn, None)
    conn.execute("create table public.clients_raw (client text, amount float8, visits int, tier text)")
    with conn.cursor() as cur:
        cur.executemany("insert into public.clients_raw values (%s, %s, %s, %s)", list(raw.itertuples(index=False)))
    conn.execute("grant select on public.clients_raw to authenticated")
    jobs = {}
    with as_user(conn, env.a, env.user_a):
        for name in models:
            jobs[name] = int(one(conn, "select ml.score('clients', 'public.clients_raw', %s, %s)",
                                 f"app.{name.replace('-', '_')}", Jsonb({"model": name, "key": ["client"]})))
    run_worker(env.url)
    assert scoring_of(env, jobs["clients-lr"])["path"] == "sql" and scoring_of(env, jobs["clients-svm"])["path"] == "worker"
    for name, model in models.items():
        assert scoring_of(env, jobs[name])["status"] == "succeeded", scoring_of(env, jobs[name])
        got = dict(conn.execute(f"select client, prediction from app.{name.replace('-', '_')}").fetchall())
        assert [got[c] for c in raw["client"]] == [int(v) for v in model.predict(inputs)], name


def test_the_private_helper_records_only_an_existing_table_as_target(env: Env) -> None:
    """ml_private.batch_scoring_create (granted to members for ml.score) writes the target into
    the job's INSERT: text that is not a table is refused, whoever calls it."""
    with refused("42809", "target: .* is not a table"), as_user(env.conn, env.a, env.user_a):
        env.conn.execute("select ml_private.batch_scoring_create(%s, null, 'public.customers', "
                         "'app.x; drop table public.customers', '{}', 'sql', 10, '{}')", (env.gb_version,))
    act_for(env.conn, None)
    assert one(env.conn, "select to_regclass('public.customers') is not null")


@pytest.mark.embedded
def test_both_paths_on_both_servers(any_db_url: str) -> None:
    """PostgreSQL 15 (TimescaleDB, pgvector) and the embedded PostgreSQL 18 (pgvector): one
    statement and both job paths give scikit-learn's labels and probabilities."""
    with psycopg.connect(any_db_url, autocommit=True) as conn:
        tenant = make_tenant(conn)
        user = member(conn, tenant, "ml_engineer")
        act_for(conn, tenant)
        project = str(one(conn, "select ml.create_project('smoke', 'classification', 'label')"))
        train = mixed_frame(200, seed=11)
        labels = mixed_labels(train, "binary", seed=11)
        gb = build_pipeline(MIXED_SIGNATURE, GradientBoostingClassifier(n_estimators=5, max_depth=2, random_state=0))
        gb.fit(train, labels)
        svc = build_pipeline(MIXED_SIGNATURE, SVC(random_state=0)).fit(train, labels)
        version = register(conn, project, "smoke_gb", gb, "classification", [0, 1])
        scoring.install(conn, version, scoring.describe(gb, task="classification"))
        register(conn, project, "smoke_svc", svc, "classification", [0, 1])
        act_for(conn, None)
        rows = mixed_frame(30, seed=12, held_out=True)
        rows["emb"] = [None if e is None else np.asarray(e, dtype=np.float32).astype(float) for e in rows["emb"]]
        rows.insert(0, "id", np.arange(1, 31))
        rows["tenant_id"] = tenant
        conn.execute("""create table public.smoke (id int, amount float8, visits int, tier text, vip boolean, seen timestamptz,
                        emb vector(2), tenant_id uuid)""")
        with conn.cursor() as cur:
            cur.executemany("insert into public.smoke values (%s, %s, %s, %s, %s, %s, %s::vector, %s)",
                            [db_row(r) for r in rows.itertuples(index=False)])
        conn.execute("grant select on public.smoke to authenticated")
        conn.execute("create schema out; grant usage, create on schema out to authenticated")
        with tenant_context(conn, tenant, user=user):
            batch = conn.execute("select prediction, score from ml.predict_batch('smoke', 'select * from public.smoke order by id', "
                                 "'{\"model\": \"smoke_gb\"}')").fetchall()
            jobs = [int(one(conn, "select ml.score('smoke', 'public.smoke', %s, %s)", f"out.{m}",
                            Jsonb({"model": m, "key": ["id"]}))) for m in ("smoke_gb", "smoke_svc")]
        Worker(any_db_url, kinds=["score"], idle_exit=0.5, poll_interval=0.2, install_signals=False, maintenance_interval=None).run()
        assert [r[0] for r in batch] == [int(v) for v in gb.predict(rows)]
        for (_, got), expected in zip(batch, gb.predict_proba(rows)[:, 1], strict=True):
            assert_close(got, expected)
        assert conn.execute("select array_agg(status order by job_id), array_agg(path order by job_id) from ml.batch_scorings"
                            ).fetchone() == (["succeeded", "succeeded"], ["sql", "worker"])
        for name, model in (("smoke_gb", gb), ("smoke_svc", svc)):
            got = [r[0] for r in conn.execute(f"select prediction from out.{name} order by id").fetchall()]
            assert got == [int(v) for v in model.predict(rows)], name
        assert len(jobs) == 2
