"""Compiled models in the registry: registration queues a compile job in its transaction, which
compiles the version off the training job's path (train and compile jobs through a worker), the
registry records each version's scoring path, compiled functions are pure SQL that no client
role can run, installing refuses malicious descriptions without executing anything from them,
a function goes with its version, and large models (500 trees at depth 8) compile and run
within PostgreSQL's limits on both servers."""

from __future__ import annotations

import copy
import math
import time
from typing import Any
from uuid import uuid4

import numpy as np
import pandas as pd
import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier, LocalOutlierFactor
from sklearn.svm import SVC, SVR

from pgmlops import features as datasets
from pgmlops import scoring, training
from pgmlops.db import tenant_context
from pgmlops.jobs.worker import Worker
from pgmlops.models import load_model
from pgmlops.training._algorithms import build_pipeline

from .compile_helpers import (
    MIXED_SIGNATURE,
    Conn,
    assert_parity,
    function_of,
    json_rows,
    mixed_frame,
    mixed_labels,
    numeric_signature,
    one,
    project,
    register,
    score_matrix,
    score_rows,
)
from .conftest import act_for, make_tenant
from .training_data import member, refused


@pytest.fixture
def env(conn: Conn) -> tuple[Conn, str, dict[str, str]]:
    """The module database's owner connection acting for a new tenant, with a project per task."""
    tenant = make_tenant(conn)
    act_for(conn, tenant)
    conn.execute("set jit = off")
    projects = {task: project(conn, task.replace("_", "-"), task) for task in ("classification", "regression", "anomaly_detection")}
    return conn, tenant, projects


def small_model() -> Any:
    frame = mixed_frame(200, 1)
    return build_pipeline(MIXED_SIGNATURE, LogisticRegression(max_iter=300)).fit(frame, mixed_labels(frame, "binary"))


def scoring_of(conn: Conn, version: str) -> tuple[str, dict[str, Any]]:
    row = conn.execute("select scoring_path, scoring from ml.model_versions where id = %s", (version,)).fetchone()
    assert row is not None
    return row[0], row[1]


# -- the scoring path ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("estimator", "reason"), [
    (SVC(), "SVM"), (SVR(), "SVM"), (KNeighborsClassifier(), "nearest neighbours"),
    (LocalOutlierFactor(novelty=True), "local outlier factor")], ids=["svc", "svr", "knn", "lof"])
def test_a_model_without_a_sql_form_is_recorded_as_scored_by_workers_with_the_reason(
        env: tuple[Conn, str, dict[str, str]], estimator: Any, reason: str) -> None:
    conn, _, projects = env
    X = np.random.default_rng(0).normal(size=(60, 3))
    task = "anomaly_detection" if isinstance(estimator, LocalOutlierFactor) else (
        "regression" if isinstance(estimator, SVR) else "classification")
    estimator.fit(X) if task == "anomaly_detection" else estimator.fit(X, (X[:, 0] > 0).astype(int))
    with pytest.raises(scoring.NotCompilable, match=reason):
        scoring.describe(estimator)
    version = register(conn, projects[task], numeric_signature(3), task)
    result = scoring.compile_registered(conn, version, estimator, task=task)
    assert result["scoring_path"] == "worker" and reason in result["reason"]
    path, record = scoring_of(conn, version)
    assert path == "worker" and reason in record["reason"]
    document = one(conn, "select ml.model_version(m.name, v.version) from ml.model_versions v join ml.models m on m.id = v.model_id "
                         "where v.id = %s", version)
    assert document["scoring_path"] == "worker" and reason in document["scoring"]["reason"]


def test_a_description_the_database_refuses_leaves_the_version_to_workers_with_the_error(
        env: tuple[Conn, str, dict[str, str]]) -> None:
    """Registration goes on when the SQL refuses to compile (here a signature of 3 inputs for a
    model of 4): nothing is created and the reason names the error."""
    conn, _, projects = env
    X = np.random.default_rng(1).normal(size=(80, 4))
    model = GradientBoostingClassifier(n_estimators=3, max_depth=2, random_state=0).fit(X, (X[:, 0] > 0).astype(int))
    version = register(conn, projects["classification"], numeric_signature(3), "classification")
    result = scoring.compile_registered(conn, version, model, task="classification")
    assert result["scoring_path"] == "worker" and result["reason"].startswith("compilation refused (22023): description: inputs")
    assert one(conn, "select ml_private.compiled_function(%s)", version) is None


def test_the_torch_autoencoder_is_scored_by_workers(env: tuple[Conn, str, dict[str, str]]) -> None:
    pytest.importorskip("torch")
    from pgmlops.models.torch_models import TorchAutoencoder

    model = TorchAutoencoder(hidden_sizes=[4], latent_dim=2, epochs=1).fit(np.random.default_rng(0).normal(size=(40, 3)))
    with pytest.raises(scoring.NotCompilable, match="autoencoder"):
        scoring.describe(model)


def test_a_compiled_function_is_pure_sql_immutable_parallel_safe_and_resolved_at_creation(
        env: tuple[Conn, str, dict[str, str]]) -> None:
    conn, _, projects = env
    version = register(conn, projects["classification"], MIXED_SIGNATURE, "classification")
    result = scoring.install(conn, version, scoring.describe(small_model()))
    row = conn.execute("""select l.lanname, p.provolatile, p.proparallel, p.prosqlbody is not null, p.proconfig, p.prosecdef,
                                 n.nspname, p.proname
                          from pg_proc p join pg_language l on l.oid = p.prolang join pg_namespace n on n.oid = p.pronamespace
                          where p.oid = %s::regprocedure""", (result["function"] + "(float8[], text[])",)).fetchone()
    assert row == ("sql", "i", "s", True, None, False, "ml_models", "mv_" + version.replace("-", ""))
    path, record = scoring_of(conn, version)
    assert path == "compiled" and record["function"] == result["function"]
    assert one(conn, "select ml_private.compiled_function(%s)::text", version) == result["function"] + "(double precision[],text[])"
    assert one(conn, "select ml_private.compiled_function(gen_random_uuid())") is None
    assert [a["name"] for a in record["arguments"]] == [c["name"] for c in MIXED_SIGNATURE]
    assert record["representation"] == "sum of products" and record["sql_bytes"] > 0


def test_no_client_role_can_run_a_compiled_function(env: tuple[Conn, str, dict[str, str]]) -> None:
    conn, tenant, projects = env
    version = register(conn, projects["classification"], MIXED_SIGNATURE, "classification")
    scoring.install(conn, version, scoring.describe(small_model()))
    function, _ = function_of(conn, version)
    call = sql.SQL("select {}('{{1,2,3,4,5}}', '{{gold,true}}')").format(function)
    owner = member(conn, tenant, "owner")
    for role, user in (("authenticated", owner), ("service_role", None), ("anon", None)):
        with refused("42501"), conn.transaction():
            if user:
                with tenant_context(conn, tenant, user=user):
                    conn.execute(call)
            else:
                conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
                conn.execute(call)
    assert one(conn, call.as_string(conn).replace("select ", "select (") + ")->'prediction' is not null")


def test_a_version_registered_without_its_function_compiles_from_its_artifact(env: tuple[Conn, str, dict[str, str]]) -> None:
    """What a version registered before the compiler existed gets: its artifact loaded through
    the registry and compiled (pgmlops.scoring.compile_model_version)."""
    from pgmlops.models import artifacts

    conn, _, projects = env
    model = small_model()
    data, fmt, digest = artifacts.dump(model)
    run = str(one(conn, "select ml.start_run(%s, null, 'logistic_regression', '{}', '{}', null, '{}')", projects["classification"]))
    conn.execute("select ml.finish_run(%s, 'succeeded', '{}', 1.0, 100, 0.1)", (run,))
    registered = one(conn, "select ml.register_model_version(%s, 'older', %s, %s, %s, %s, null, '{}')", run, data, fmt, digest,
                     Jsonb({"inputs": MIXED_SIGNATURE, "outputs": [], "task": "classification", "classes": [0, 1]}))
    version = str(registered["model_version_id"])
    assert scoring_of(conn, version)[0] == "worker"
    result = scoring.compile_model_version(conn, "older@1")
    assert result["scoring_path"] == "compiled" and scoring_of(conn, version)[0] == "compiled"
    held_out = mixed_frame(60, 5, held_out=True).astype({"visits": "Float64"})
    assert_parity(model, held_out, score_rows(conn, version, json_rows(held_out)), "classification")


def test_installing_is_for_workers_of_the_version_s_own_tenant_and_happens_once(env: tuple[Conn, str, dict[str, str]]) -> None:
    conn, tenant, projects = env
    version = register(conn, projects["classification"], MIXED_SIGNATURE, "classification")
    description = scoring.describe(small_model())
    engineer = member(conn, tenant, "ml_engineer")
    with refused("42501"), tenant_context(conn, tenant, user=engineer):
        conn.execute("select ml.install_compiled_model(%s, %s)", (version, Jsonb(description)))
    other = make_tenant(conn)
    act_for(conn, other)
    with refused("P0002"):
        scoring.install(conn, version, description)
    act_for(conn, tenant)
    scoring.install(conn, version, description)
    with refused("55000", "already compiled"):
        scoring.install(conn, version, description)
    with refused("55000"):
        scoring.record_worker(conn, version, "changed my mind")


# -- security: descriptions are data, never SQL ---------------------------------------------------------


INJECTION = "x'); drop table ml.tenants; --"


def tree_description(**tree: Any) -> dict[str, Any]:
    base = {"op": ["le", "leaf", "leaf"], "input": [1, 0, 0], "value": [0.5, None, None], "leaf": [None, 1.0, 2.0]}
    base.update(tree)
    return {"format": 1, "task": "regression", "inputs": {"numeric": 2, "categorical": 1}, "features": [],
            "estimator": {"kind": "trees", "outputs": 1, "trees": [base], "init": None, "divide": None},
            "output": {"kind": "regression"}}


SIGNATURE_2_1 = [{"name": "a", "dtype": "float"}, {"name": "b", "dtype": "float"}, {"name": "c", "dtype": "text"}]


@pytest.mark.parametrize(("change", "message"), [
    ({"value": ["0.5", None, None]}, "threshold must be a number"),
    ({"value": [INJECTION, None, None]}, "threshold must be a number"),
    ({"op": ["le; drop table ml.tenants", "leaf", "leaf"]}, "op must be one of"),
    ({"input": ["1) or (true", 0, 0]}, "input must be an input number"),
    ({"input": [3, 0, 0]}, "input must be an input number"),
    ({"input": [1.5, 0, 0]}, "input must be an input number"),
    ({"leaf": [None, "1.0", 2.0]}, "leaf's value must be a number"),
    ({"op": ["eq", "leaf", "leaf"], "value": [7, None, None]}, "category must be a string"),
    ({"op": ["le", "leaf", "leaf", "leaf"], "input": [1, 0, 0, 0], "value": [0.5, None, None, None],
      "leaf": [None, 1.0, 2.0, 3.0]}, "comes after the tree's last leaf"),
    ({"op": ["le", "le", "leaf"], "input": [1, 1, 0], "value": [0.5, 0.2, None], "leaf": [None, None, 2.0]}, "incomplete"),
], ids=["threshold-text", "threshold-injection", "op-injection", "input-injection", "input-out-of-range", "input-fraction",
        "leaf-text", "category-number", "extra-node", "incomplete"])
def test_a_malformed_or_malicious_tree_is_refused_naming_the_node(env: tuple[Conn, str, dict[str, str]], change: dict[str, Any],
                                                                   message: str) -> None:
    conn, _, projects = env
    version = register(conn, projects["regression"], SIGNATURE_2_1, "regression")
    with refused("22023", message):
        scoring.install(conn, version, tree_description(**change))
    assert scoring_of(conn, version)[0] == "worker"
    assert one(conn, "select to_regclass('ml.tenants') is not null")


@pytest.mark.parametrize(("path", "value", "message"), [
    (("format",), 2, "format"), (("task",), "classification", "task"),
    (("inputs",), {"numeric": 3, "categorical": 1}, "inputs must be"),
    (("estimator", "kind"), "linear; select 1", "estimator.kind"),
    (("estimator", "init"), ["0"], "must be a number"),
    (("estimator", "divide"), "2", "must be a number"),
    (("output", "kind"), INJECTION, "output.kind"),
    (("output", "link"), "exp(1)) --", "output.link"),
], ids=["format", "task", "inputs", "kind", "init-text", "divide-text", "output-kind", "link"])
def test_a_malformed_description_is_refused_naming_the_field(env: tuple[Conn, str, dict[str, str]], path: tuple[str, ...],
                                                              value: Any, message: str) -> None:
    conn, _, projects = env
    version = register(conn, projects["regression"], SIGNATURE_2_1, "regression")
    description = tree_description()
    target = description
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with refused("22023", message):
        scoring.install(conn, version, description)


def test_linear_and_mlp_constants_must_be_numbers(env: tuple[Conn, str, dict[str, str]]) -> None:
    conn, _, projects = env
    base = {"format": 1, "task": "regression", "inputs": {"numeric": 2, "categorical": 1},
            "features": [{"num": 1, "ops": [["sub", 0.5], ["div", 2.0]]}, {"cat": 1, "category": "a", "impute": None, "ops": []}],
            "estimator": {"kind": "linear", "coef": [[1.0, 2.0]], "intercept": [0.0]}, "output": {"kind": "regression"}}
    bad = [
        (["features", 0, "ops", 0, 1], INJECTION, "must be a number"),
        (["features", 0, "ops", 0, 0], "sub) from pg_authid --", "unknown op"),
        (["features", 1, "category"], 5, "must be strings or null"),
        (["estimator", "coef", 0, 1], "2.0", "must be a number"),
        (["estimator", "intercept"], [0.0, 1.0], "must hold 1 numbers"),
    ]
    for path, value, message in bad:
        description = copy.deepcopy(base)
        target: Any = description
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        version = register(conn, projects["regression"], SIGNATURE_2_1, "regression")
        with refused("22023", message):
            scoring.install(conn, version, description)


def test_strings_from_the_description_and_names_from_the_signature_are_quoted_never_run(env: tuple[Conn, str, dict[str, str]]) -> None:
    """A category, a class label and input names full of quotes and SQL compile to a function
    that compares and returns them as the plain strings they are."""
    conn, _, projects = env
    signature = [{"name": INJECTION, "dtype": "float"}, {"name": 'b"; select pg_sleep(10); --', "dtype": "float"},
                 {"name": "c'", "dtype": "text"}]
    description = tree_description(op=["eq", "leaf", "leaf"], input=[1, 0, 0], value=[INJECTION, None, None], leaf=[None, 1.0, 2.0])
    description["task"] = "classification"
    description["estimator"]["outputs"] = 2
    description["estimator"]["trees"][0]["leaf"] = [None, [0.9, 0.1], [0.2, 0.8]]
    description["output"] = {"kind": "classification", "labels": [INJECTION, "it's"], "probability": "identity",
                              "label": "argmax_proba", "decision": False}
    version = register(conn, projects["classification"], signature, "classification")
    scoring.install(conn, version, description)
    assert one(conn, "select to_regclass('ml.tenants') is not null")
    results = score_rows(conn, version, [{"c'": INJECTION}, {"c'": "other"}, {}])
    assert [r["prediction"] for r in results] == [INJECTION, "it's", "it's"]
    assert results[0]["probabilities"] == [0.9, 0.1]


def test_results_keep_every_digit_whatever_the_session_s_extra_float_digits(env: tuple[Conn, str, dict[str, str]]) -> None:
    conn, _, projects = env
    X = np.random.default_rng(4).normal(size=(80, 3))
    model = GradientBoostingClassifier(n_estimators=5, max_depth=2, random_state=0).fit(X, (X[:, 0] > 0).astype(int))
    version = register(conn, projects["classification"], numeric_signature(3), "classification")
    scoring.install(conn, version, scoring.describe(model))
    conn.execute("set extra_float_digits = 0")
    try:
        results = score_matrix(conn, version, X)
    finally:
        conn.execute("reset extra_float_digits")
    assert assert_parity(model, X, results, "classification", tolerance=1e-15)["predict_proba"] < 1e-15


def test_deleting_a_version_s_tenant_drops_its_compiled_function(conn: Conn) -> None:
    tenant = make_tenant(conn)
    act_for(conn, tenant)
    version = register(conn, project(conn, "gone", "classification"), MIXED_SIGNATURE, "classification")
    name = scoring.install(conn, version, scoring.describe(small_model()))["function"] + "(float8[], text[])"
    assert one(conn, "select to_regprocedure(%s) is not null", name)
    act_for(conn, None)
    conn.execute("delete from ml.tenants where id = %s", (tenant,))
    assert one(conn, "select to_regprocedure(%s) is null", name)


# -- registration queues a compile job; the job compiles ------------------------------------------------


def compile_jobs(conn: Conn, tenant: str) -> list[tuple[Any, ...]]:
    """(id, payload, priority, status) of the tenant's compile jobs, oldest first."""
    return conn.execute("select id, payload, priority, status from ml.jobs where tenant_id = %s and kind = 'compile' "
                        "order by id", (tenant,)).fetchall()


def run_compile_jobs(url: str) -> None:
    Worker(url, kinds=["compile"], idle_exit=0.5, poll_interval=0.2, install_signals=False, maintenance_interval=None).run()


def test_registering_a_version_queues_its_compile_job_in_the_same_transaction(env: tuple[Conn, str, dict[str, str]]) -> None:
    """The version names its job and the job its version; a registration rolled back, or refused,
    leaves no job behind."""
    conn, tenant, projects = env
    with conn.transaction():
        version = register(conn, projects["classification"], MIXED_SIGNATURE, "classification")
        [(job, payload, priority, status)] = compile_jobs(conn, tenant)
    assert (payload, priority, status) == ({"model_version_id": version}, 10, "queued")
    path, record = scoring_of(conn, version)
    assert path == "worker" and record["compile_job_id"] == job and record["queued_at"]
    assert record["reason"].startswith(f"compilation queued (job {job})")
    document = one(conn, "select ml.model_version(m.name, v.version) from ml.model_versions v join ml.models m on m.id = v.model_id "
                         "where v.id = %s", version)
    assert document["scoring_path"] == "worker" and document["scoring"]["compile_job_id"] == job

    class Rollback(Exception):
        pass

    with pytest.raises(Rollback), conn.transaction():
        register(conn, projects["classification"], MIXED_SIGNATURE, "classification")
        assert len(compile_jobs(conn, tenant)) == 2
        raise Rollback
    run = str(one(conn, "select ml.start_run(%s, null, 'ridge', '{}', '{}', null, '{}')", projects["regression"]))
    with refused("22023", "artifact_sha256: does not match"):
        conn.execute("select ml.register_model_version(%s, 'm', 'bytes', 'skops', %s, %s, null)",
                     (run, "0" * 64, Jsonb({"inputs": MIXED_SIGNATURE, "outputs": []})))
    assert [j[0] for j in compile_jobs(conn, tenant)] == [job]


def test_a_compile_job_refuses_a_payload_without_a_version_id(env: tuple[Conn, str, dict[str, str]]) -> None:
    conn, tenant, _ = env
    for payload in ({}, {"model_version_id": "churn@1"}, {"model_version_id": str(uuid4()), "model": "churn"}):
        with refused("22023", "payload"):
            conn.execute("select ml.enqueue('compile', %s)", (Jsonb(payload),))
    assert compile_jobs(conn, tenant) == []


def test_compile_jobs_compile_record_a_verdict_and_leave_compiled_or_deleted_versions_alone(db_url: str) -> None:
    """Through a worker: a real artifact compiles; bytes no loader accepts are recorded as the
    reason workers score the version; a version compiled before its job ran, or compiled by an
    earlier job of its own (a second delivery), is left as it is; a deleted version is skipped."""
    from pgmlops.models import artifacts

    with psycopg.connect(db_url, autocommit=True) as conn:
        tenant = make_tenant(conn)
        act_for(conn, tenant)
        conn.execute("set jit = off")
        classification = project(conn, "classification", "classification")
        model = small_model()
        data, fmt, digest = artifacts.dump(model)
        run = str(one(conn, "select ml.start_run(%s, null, 'logistic_regression', '{}', '{}', null, '{}')", classification))
        conn.execute("select ml.finish_run(%s, 'succeeded', '{}', 1.0, 100, 0.1)", (run,))
        signature = Jsonb({"inputs": MIXED_SIGNATURE, "outputs": [], "task": "classification", "classes": [0, 1]})
        real = one(conn, "select ml.register_model_version(%s, 'real', %s, %s, %s, %s, null)", run, data, fmt, digest, signature)
        garbage = register(conn, classification, MIXED_SIGNATURE, "classification", model="garbage")
        early = one(conn, "select ml.register_model_version(%s, 'early', %s, %s, %s, %s, null)", run, data, fmt, digest, signature)
        scoring.install(conn, early["model_version_id"], scoring.describe(model))
        gone = register(conn, classification, MIXED_SIGNATURE, "classification", model="gone")
        conn.execute("delete from ml.model_versions where id = %s", (gone,))
        again = one(conn, "select ml.enqueue('compile', %s)", Jsonb({"model_version_id": real["model_version_id"]}))

        run_compile_jobs(db_url)
        results = {payload["model_version_id"]: one(conn, "select ml.job_result(%s)", job)
                   for job, payload, _, _ in compile_jobs(conn, tenant) if job != again}
        assert {r["status"] for r in results.values()} == {"succeeded"}, [r["error"] for r in results.values()]
        compiled = results[real["model_version_id"]]["result"]
        assert (compiled["model"], compiled["version"], compiled["scoring"]["scoring_path"]) == ("real", 1, "compiled")
        assert compiled["compile_seconds"] > 0 and compiled["load_seconds"] > 0
        path, record = scoring_of(conn, real["model_version_id"])
        assert path == "compiled" and record["function"] == compiled["scoring"]["function"] and "compile_job_id" not in record
        held_out = mixed_frame(40, 5, held_out=True).astype({"visits": "Float64"})
        assert_parity(model, held_out, score_rows(conn, real["model_version_id"], json_rows(held_out)), "classification")

        path, record = scoring_of(conn, garbage)
        assert path == "worker" and record["reason"].startswith("the artifact could not be loaded to compile it: ")
        assert results[garbage]["result"]["scoring"]["reason"] == record["reason"]
        assert results[early["model_version_id"]]["result"]["unchanged"] == "the version is already compiled"
        assert results[gone]["result"] == {"model_version_id": gone, "skipped": "the version no longer exists"}
        second = one(conn, "select ml.job_result(%s)", again)
        assert second["status"] == "succeeded" and second["result"]["unchanged"] == "the version is already compiled"


def test_ml_predict_refuses_a_version_whose_compilation_is_queued_naming_the_job_and_scores_it_once_compiled(
        env: tuple[Conn, str, dict[str, str]], db_url: str) -> None:
    from pgmlops.models import artifacts

    conn, tenant, projects = env
    model = small_model()
    data, fmt, digest = artifacts.dump(model)
    run = str(one(conn, "select ml.start_run(%s, null, 'logistic_regression', '{}', '{}', null, '{}')", projects["classification"]))
    conn.execute("select ml.finish_run(%s, 'succeeded', '{}', 1.0, 100, 0.1)", (run,))
    registered = one(conn, "select ml.register_model_version(%s, 'queued', %s, %s, %s, %s, null)", run, data, fmt, digest,
                     Jsonb({"inputs": MIXED_SIGNATURE, "outputs": [], "task": "classification", "classes": [0, 1]}))
    job = registered["compile_job_id"]
    with tenant_context(conn, tenant, user=member(conn, tenant, "owner")):
        conn.execute("select ml.approve('queued', 1, 'approved')")
    conn.execute("select ml.deploy('classification', 'single', %s)", (Jsonb([{"arm": "a", "model": "queued", "version": 1}]),))
    row = json_rows(mixed_frame(3, 9, held_out=True).astype({"visits": "Float64"}))[0]
    with refused("0A000", rf"model queued version 1 \(logistic_regression\) is not compiled yet: its compilation is queued "
                          rf"\(job {job}\)") as info:
        conn.execute("select ml.predict('classification', %s)", (Jsonb(row),))
    assert isinstance(info.value, psycopg.Error) and f"ml.job_result({job})" in (info.value.diag.message_hint or "")

    run_compile_jobs(db_url)
    assert one(conn, "select ml.job_result(%s) ->> 'status'", job) == "succeeded"
    assert "prediction" in one(conn, "select ml.predict('classification', %s)", Jsonb(row))


# -- registration: a train job queues its compilation -------------------------------------------------------


def clients_training_set(conn: Conn) -> str:
    """Clients with every raw dtype and a label; the training set standardizes (keeping) and
    log-transforms amount, buckets visits, one-hot encodes tier and encodes the hour of seen."""
    rng = np.random.default_rng(2)
    n = 240
    conn.execute("select ml.create_feature_group('clients', 'client', %s)", (Jsonb({
        "amount": {"dtype": "float"}, "visits": {"dtype": "int"}, "tier": {"dtype": "category"},
        "vip": {"dtype": "bool"}, "seen": {"dtype": "timestamp"}}),))
    values = []
    for i in range(n):
        values.append({"client": f"c{i}", "event_time": "2026-01-01T00:00:00Z",
                       "amount": None if i % 17 == 0 else float(rng.gamma(2.0, 30.0)), "visits": int(rng.integers(0, 25)),
                       "tier": str(rng.choice(["gold", "silver", "bronze"])), "vip": bool(i % 3 == 0),
                       "seen": f"2026-01-0{1 + i % 5}T{i % 24:02d}:{i % 60:02d}:00Z"})
    conn.execute("select ml.ingest('clients', %s)", (Jsonb(values),))
    label = [int((v["amount"] or 60) > 55 or v["tier"] == "gold") for v in values]
    spine = pd.DataFrame({"client": [v["client"] for v in values], "event_time": pd.Timestamp("2026-02-01", tz="UTC"),
                          "churned": label})
    return str(datasets.create_training_set(conn, "clients_set", spine,
                                            ["clients:amount", "clients:visits", "clients:tier", "clients:vip", "clients:seen"],
                                            label="churned", transformations=[
                                                {"type": "standardize", "column": "amount", "keep": True},
                                                {"type": "log1p", "column": "amount"},
                                                {"type": "bucketize", "column": "visits", "boundaries": [5, 10, 15]},
                                                {"type": "one_hot", "column": "tier"},
                                                {"type": "cyclical", "column": "seen", "period": "hour"}]))


def test_a_train_job_queues_its_compilation_and_the_compiled_function_scores_raw_rows_like_the_artifact(
        db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        tenant = make_tenant(conn)
        act_for(conn, tenant)
        dataset = clients_training_set(conn)
        training.create_project(conn, "clients", "classification", "churned")
        jobs = {algorithm: training.train(conn, "clients", dataset, algorithm, hyperparams, {"model": algorithm.replace("_", "-")})
                for algorithm, hyperparams in (("gradient_boosting", {"n_estimators": 20, "max_depth": 3}),
                                               ("logistic_regression", {}), ("svm", {}))}
        Worker(db_url, kinds=["train"], idle_exit=0.5, poll_interval=0.2, install_signals=False, maintenance_interval=None).run()
        trained = {a: one(conn, "select ml.job_result(%s)", job) for a, job in jobs.items()}
        for algorithm, job in trained.items():
            assert job["status"] == "succeeded", (algorithm, job["error"])
            # Trained and registered; compiling is the compile job's business.
            assert "scoring" not in job["result"]
            path, record = scoring_of(conn, job["result"]["model_version_id"])
            assert path == "worker" and record["compile_job_id"] == job["result"]["compile_job_id"]
            assert one(conn, "select ml.job_result(%s) ->> 'status'", job["result"]["compile_job_id"]) == "queued"

        run_compile_jobs(db_url)
        results = {a: one(conn, "select ml.job_result(%s)", job["result"]["compile_job_id"]) for a, job in trained.items()}
        for algorithm, job in results.items():
            assert job["status"] == "succeeded", (algorithm, job["error"])
            assert job["result"]["model_version_id"] == trained[algorithm]["result"]["model_version_id"]
        assert results["svm"]["result"]["scoring"]["scoring_path"] == "worker"
        assert "SVM" in results["svm"]["result"]["scoring"]["reason"]
        assert "SVM" in scoring_of(conn, trained["svm"]["result"]["model_version_id"])[1]["reason"]

        conn.execute("set jit = off")
        rng = np.random.default_rng(3)
        raw = [{"amount": None if i % 9 == 0 else float(rng.gamma(2.0, 30.0)), "visits": int(rng.integers(0, 30)),
                "tier": ["gold", "silver", "bronze", "platinum", None][i % 5], "vip": [True, False, None][i % 3],
                "seen": f"2026-03-0{1 + i % 7}T{(5 * i) % 24:02d}:{i % 60:02d}:30Z"} for i in range(60)]
        inputs = datasets.apply_transformations(conn, dataset, pd.DataFrame(raw))
        for algorithm in ("gradient_boosting", "logistic_regression"):
            result = results[algorithm]["result"]
            assert result["scoring"]["scoring_path"] == "compiled"
            path, record = scoring_of(conn, result["model_version_id"])
            assert path == "compiled" and record["function"] == result["scoring"]["function"]
            # The compiled function takes the raw columns and applies the training set's transformations itself.
            assert {a["name"] for a in record["arguments"]} == {"amount", "visits", "tier", "vip", "seen"}
            model = load_model(conn, f"{algorithm.replace('_', '-')}@1")
            assert_parity(model, inputs, score_rows(conn, result["model_version_id"], raw), "classification")


# -- limits: large models on both servers -------------------------------------------------------------


def full_tree(rng: np.random.Generator, depth: int, inputs: int) -> dict[str, list[Any]]:
    """A complete binary tree of ``depth`` test levels, depth first."""
    op: list[str] = []
    index: list[int] = []
    value: list[Any] = []
    leaf: list[Any] = []

    def grow(level: int) -> None:
        if level == depth:
            op.append("leaf"), index.append(0), value.append(None), leaf.append(float(rng.normal()))
            return
        op.append("le" if rng.random() < 0.5 else "gt"), index.append(int(rng.integers(1, inputs + 1)))
        value.append(float(rng.normal())), leaf.append(None)
        grow(level + 1)
        grow(level + 1)

    grow(0)
    return {"op": op, "input": index, "value": value, "leaf": leaf}


def evaluate(description: dict[str, Any], x: list[float | None], init: float = 0.0) -> float:
    """What a description's trees sum to for one row, tree by tree (NULL makes every test false)."""
    total = init
    for tree in description["estimator"]["trees"]:
        i = 0
        while tree["op"][i] != "leaf":
            v = x[tree["input"][i] - 1]
            if v is not None and (v <= tree["value"][i] if tree["op"][i] == "le" else v > tree["value"][i]):
                i += 1
                continue
            i, pending = i + 1, 1  # skip the then-branch: it ends where no branch is pending
            while pending:
                pending += 1 if tree["op"][i] != "leaf" else -1
                i += 1
        total += tree["leaf"][i]
    return total


@pytest.mark.embedded
def test_compiled_pipelines_score_like_scikit_learn_on_both_servers(any_db_url: str) -> None:
    """The smoke subset on PostgreSQL 15 and 18: every kind of result (binary, multiclass,
    regression, anomaly scores) from a pipeline over every input dtype."""
    from sklearn.ensemble import HistGradientBoostingRegressor, IsolationForest

    train = mixed_frame(250, 21)
    held_out = mixed_frame(80, 22, held_out=True).astype({"visits": "Float64"})
    cases = [("classification", "binary", GradientBoostingClassifier(n_estimators=10, max_depth=3, random_state=0)),
             ("classification", "multiclass", LogisticRegression(max_iter=300)),
             ("regression", "regression", HistGradientBoostingRegressor(max_iter=10, random_state=0)),
             ("anomaly_detection", "anomaly", IsolationForest(n_estimators=10, random_state=0))]
    with psycopg.connect(any_db_url, autocommit=True) as conn:
        act_for(conn, make_tenant(conn))
        conn.execute("set jit = off")
        for task, labels, estimator in cases:
            model = build_pipeline(MIXED_SIGNATURE, estimator)
            model.fit(train) if task == "anomaly_detection" else model.fit(train, mixed_labels(train, labels, 21))
            version = register(conn, project(conn, task.replace("_", "-"), task), MIXED_SIGNATURE, task)
            scoring.install(conn, version, scoring.describe(model, task=task))
            assert_parity(model, held_out, score_rows(conn, version, json_rows(held_out)), task)


@pytest.mark.embedded
def test_500_trees_of_depth_8_compile_and_run_within_postgresql_s_limits(any_db_url: str) -> None:
    rng = np.random.default_rng(8)
    description = {"format": 1, "task": "regression", "inputs": {"numeric": 20, "categorical": 0}, "features": [],
                   "estimator": {"kind": "trees", "outputs": 1, "trees": [full_tree(rng, 8, 20) for _ in range(500)],
                                 "init": [0.25], "divide": None},
                   "output": {"kind": "regression"}}
    with psycopg.connect(any_db_url, autocommit=True) as conn:
        act_for(conn, make_tenant(conn))
        conn.execute("set jit = off")
        version = register(conn, project(conn, "big", "regression"), numeric_signature(20), "regression")
        started = time.perf_counter()
        record = scoring.install(conn, version, description)
        elapsed = time.perf_counter() - started
        assert record["trees"] == 500 and record["nodes"] == 500 * 511 and record["max_depth"] == 8
        X = rng.normal(size=(30, 20))
        X[::4, 3] = np.nan
        got = [r["prediction"] for r in score_matrix(conn, version, X)]
        expected = [evaluate(description, [None if math.isnan(v) else float(v) for v in row], 0.25) for row in X]
        np.testing.assert_allclose(got, expected, rtol=1e-12)
        assert elapsed < 120, f"compiling took {elapsed:.1f} s"


def test_more_trees_than_a_chain_of_additions_may_nest_go_through_an_ordered_sum(env: tuple[Conn, str, dict[str, str]]) -> None:
    conn, _, projects = env
    rng = np.random.default_rng(9)
    trees = [full_tree(rng, 2, 3) for _ in range(1500)]
    description = {"format": 1, "task": "regression", "inputs": {"numeric": 3, "categorical": 0}, "features": [],
                   "estimator": {"kind": "trees", "outputs": 1, "trees": trees, "init": None, "divide": 1500.0},
                   "output": {"kind": "regression"}}
    version = register(conn, projects["regression"], numeric_signature(3), "regression")
    scoring.install(conn, version, description)
    X = rng.normal(size=(10, 3))
    got = [r["prediction"] for r in score_matrix(conn, version, X)]
    np.testing.assert_allclose(got, [evaluate(description, list(row)) / 1500 for row in X], rtol=1e-12)


def chain_tree(depth: int) -> dict[str, list[Any]]:
    """A tree ``depth`` tests deep, each test's then-branch the next test, its else-branch a leaf."""
    return {"op": ["le"] * depth + ["leaf"] * (depth + 1), "input": [1] * depth + [0] * (depth + 1),
            "value": [float(-i) for i in range(depth)] + [None] * (depth + 1),
            "leaf": [None] * depth + [float(i) for i in range(depth + 1)]}


def test_trees_compile_up_to_500_levels_deep_and_deeper_ones_are_refused(env: tuple[Conn, str, dict[str, str]]) -> None:
    conn, _, projects = env
    description = tree_description()
    description["estimator"]["trees"] = [chain_tree(500)]
    version = register(conn, projects["regression"], SIGNATURE_2_1, "regression")
    assert scoring.install(conn, version, description)["max_depth"] == 500
    X = np.array([[-600.0, 0.0], [-250.5, 0.0], [1.0, 0.0], [np.nan, 0.0]])
    got = [r["prediction"] for r in score_matrix(conn, version, X)]
    assert got == [evaluate(description, [None if math.isnan(v) else v for v in row]) for row in X.tolist()]
    description["estimator"]["trees"] = [chain_tree(501)]
    version = register(conn, projects["regression"], SIGNATURE_2_1, "regression")
    with refused("54000", "deeper than 500"):
        scoring.install(conn, version, description)
