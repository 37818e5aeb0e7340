"""Scoring benchmark, the compiler part: pgmlops' compiled SQL functions next to orbital's SQL.

    python -m bench.scoring [--database-url URL] [--rows N] [--train-rows N] [--models LIST]
                            [--no-orbital] [--quick]

For each model, fitted with scikit-learn on the same synthetic data (20 numeric features, a
binary label or a regression target), both compilers are measured side by side, in one run, on
one server:

- **pgmlops**: ``pgmlops.scoring.describe`` (Python: the structured description) and
  ``ml.install_compiled_model`` (SQL: writing the function and ``CREATE FUNCTION``), into
  ``ml_models.mv_<version>(num, cat)``. Compile time is both together; the SQL side's two parts
  are reported too.
- **orbital** (PyPI, the open-source scikit-learn-to-SQL compiler): ``orbital.parse_pipeline``
  and ``orbital.export_sql(dialect="postgres")``, a query over a table of the features.

Then, for each: the generated size (characters of SQL), whether PostgreSQL runs it, parity with
scikit-learn on ``--rows`` held-out rows (the largest absolute difference of the prediction,
probability or anomaly score, and the rows whose predicted label differs), the per-row latency
of scoring all of them in one statement (median of 3), and the latency of one statement scoring
one row (median of 5; planning included, the plan not cached: an online call). For pgmlops also
one row through a prepared statement with a generic plan (what a caller that caches its plan
pays). Every query runs with ``jit = off``: PostgreSQL's JIT compiles a query whose estimated
cost passes ``jit_above_cost``, and for expressions this large LLVM takes seconds to minutes
(docs/scoring.md).

Goals (issue 11): a 100-tree depth-6 gradient boosting model compiles in under 5 s; a 500-tree
depth-8 one compiles and runs within PostgreSQL's limits; every pgmlops result equals
scikit-learn within 1e-9 (labels exactly).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
import traceback
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from rich.table import Table

from bench._common import (
    Goal,
    console,
    fresh_database,
    machine_info,
    make_tenant,
    redact,
    resolve_bench_url,
    results_table,
    write_results,
)

FEATURES = 20
COMPILE_GOAL_S = 5.0
PARITY_GOAL = 1e-9
ONLINE_GOAL = 8.0  # p50 latency FastAPI / ml.predict, and throughput ml.predict / FastAPI


@dataclass
class Model:
    """One benchmark model: a name, its task and how to fit it."""

    name: str
    task: str  # regression | classification | anomaly_detection
    make: Callable[[], Any]
    note: str = ""


def _models() -> dict[str, Model]:
    from sklearn.ensemble import (
        GradientBoostingRegressor,
        HistGradientBoostingClassifier,
        IsolationForest,
        RandomForestClassifier,
    )
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return {m.name: m for m in [
        Model("gb-20x3", "regression", lambda: GradientBoostingRegressor(n_estimators=20, max_depth=3, random_state=0),
              "gradient boosting, 20 trees, depth 3"),
        Model("gb-100x6", "regression", lambda: GradientBoostingRegressor(n_estimators=100, max_depth=6, random_state=0),
              "gradient boosting, 100 trees, depth 6"),
        Model("gb-500x8", "regression", lambda: GradientBoostingRegressor(n_estimators=500, max_depth=8, random_state=0),
              "gradient boosting, 500 trees, depth 8"),
        Model("rf-20x8", "classification", lambda: RandomForestClassifier(n_estimators=20, max_depth=8, random_state=0),
              "random forest, 20 trees, depth 8"),
        Model("hgb-100", "classification", lambda: HistGradientBoostingClassifier(max_iter=100, random_state=0),
              "hist gradient boosting, 100 iterations, 31 leaves"),
        Model("iforest-100", "anomaly_detection", lambda: IsolationForest(n_estimators=100, random_state=0),
              "isolation forest, 100 trees"),
        Model("logistic", "classification", lambda: Pipeline([("scale", StandardScaler()), ("model", LogisticRegression())]),
              "standard scaler + logistic regression"),
    ]}


def data(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """(features, regression target, binary label): 20 numeric features, a nonlinear signal."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, FEATURES)), columns=[f"x{i}" for i in range(FEATURES)])
    signal = 2 * X.x0 + np.sin(3 * X.x1) + X.x2 * X.x3 + np.where(X.x4 > 0.5, 1.5, 0.0) + 0.5 * X.x5 ** 2
    y = signal + rng.normal(0, 0.3, n)
    return X, np.asarray(y), np.asarray((signal + rng.normal(0, 0.5, n)) > 1.0).astype(int)


def fit(model: Model, X: pd.DataFrame, y: np.ndarray[Any, Any], label: np.ndarray[Any, Any]) -> Any:
    from sklearn.pipeline import Pipeline

    estimator = model.make()
    pipeline = estimator if isinstance(estimator, Pipeline) else Pipeline([("model", estimator)])
    if model.task == "anomaly_detection":
        return pipeline.fit(X)
    return pipeline.fit(X, label if model.task == "classification" else y)


def reference(model: Model, fitted: Any, X: pd.DataFrame) -> dict[str, np.ndarray[Any, Any]]:
    """scikit-learn's own outputs: the value to compare (prediction, P(class 1) or score_samples) and labels."""
    if model.task == "regression":
        return {"value": np.asarray(fitted.predict(X), dtype=float)}
    if model.task == "classification":
        return {"value": np.asarray(fitted.predict_proba(X))[:, 1], "label": np.asarray(fitted.predict(X))}
    return {"value": np.asarray(fitted.score_samples(X)), "label": np.asarray(fitted.predict(X))}


# -- timing helpers ------------------------------------------------------------------------------------


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    return statistics.median(_timed(fn)[0] for _ in range(repeats))


@dataclass
class Side:
    """What one compiler did with one model."""

    compiler: str
    compile_s: float | None = None
    sql_chars: int | None = None
    runs: bool = False
    error: str | None = None
    max_abs_diff: float | None = None
    label_mismatches: int | None = None
    batch_us_per_row: float | None = None
    single_row_ms: float | None = None
    prepared_row_ms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _parity(ref: dict[str, np.ndarray[Any, Any]], values: list[float], labels: list[Any] | None, side: Side) -> None:
    got = np.asarray(values, dtype=float)
    side.max_abs_diff = float(np.max(np.abs(got - ref["value"])))
    if labels is not None and "label" in ref:
        side.label_mismatches = int(sum(1 for a, b in zip(labels, ref["label"].tolist(), strict=True) if a != b))


# -- pgmlops ------------------------------------------------------------------------------------------------


def run_pgmlops(conn: psycopg.Connection[Any], model: Model, fitted: Any, X: pd.DataFrame, ref: dict[str, Any],
                project_ids: dict[str, str]) -> Side:
    from pgmlops import scoring

    side = Side("pgmlops")
    try:
        version = _register(conn, project_ids[model.task], model)
        describe_s, description = _timed(lambda: scoring.describe(fitted, task=model.task))
        install_s, record = _timed(lambda: scoring.install(conn, version, description))
        side.compile_s = describe_s + install_s
        side.sql_chars = int(record["sql_bytes"])
        side.extra = {"describe_s": describe_s, "generate_ms": record["generate_ms"], "create_ms": record["create_ms"],
                      "trees": record["trees"], "nodes": record["nodes"], "representation": record["representation"]}
        schema, name = record["function"].split(".")
        function = sql.Identifier(schema, name)
        batch = sql.SQL("select {}(x, '{{}}') from bench_rows order by i").format(function)
        seconds, rows = _timed(lambda: conn.execute(batch).fetchall())
        side.runs = True
        results = [r[0] for r in rows]
        values = [_value(model, r) for r in results]
        labels = [r["prediction"] for r in results] if model.task != "regression" else None
        _parity(ref, values, labels, side)
        side.batch_us_per_row = _median_time(lambda: conn.execute(batch).fetchall(), 2) * 1e6 / len(X) if seconds < 60 else \
            seconds * 1e6 / len(X)
        first = X.iloc[0].tolist()
        one = sql.SQL("select {}(%s::float8[], '{{}}')").format(function)
        side.single_row_ms = _median_time(lambda: conn.execute(one, (first,)).fetchone(), 5) * 1e3
        conn.execute("set plan_cache_mode = force_generic_plan")
        conn.execute(sql.SQL("prepare bench_one(float8[]) as select {}($1, '{{}}')").format(function))
        try:
            # EXECUTE takes no bind parameters: the row goes in as a literal.
            execute = sql.SQL("execute bench_one({})").format(sql.Literal("{" + ",".join(repr(float(v)) for v in first) + "}"))
            conn.execute(execute).fetchone()
            side.prepared_row_ms = _median_time(lambda: conn.execute(execute).fetchone(), 5) * 1e3
        finally:
            conn.execute("deallocate bench_one")
            conn.execute("reset plan_cache_mode")
    except Exception as exc:  # a benchmark reports what failed and goes on
        side.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        console.print(f"[red]pgmlops {model.name}: {side.error}[/]")
        console.print(traceback.format_exc(limit=3), style="dim")
    return side


def _value(model: Model, result: dict[str, Any]) -> float:
    if model.task == "regression":
        return float(result["prediction"])
    if model.task == "classification":
        return float(result["probabilities"][1])
    return float(result["score_samples"])


def _register(conn: psycopg.Connection[Any], project_id: str, model: Model) -> str:
    import hashlib

    algorithm = {"regression": "ridge", "classification": "logistic_regression", "anomaly_detection": "isolation_forest"}[model.task]
    run = conn.execute("select ml.start_run(%s, null, %s, '{}', '{}', null, '{}')", (project_id, algorithm)).fetchone()
    assert run is not None
    conn.execute("select ml.finish_run(%s, 'succeeded', '{}', 1.0, 100, 0.1)", (run[0],))
    artifact = f"bench {model.name} {run[0]}".encode()
    signature = {"inputs": [{"name": f"x{i}", "dtype": "float"} for i in range(FEATURES)], "outputs": [], "task": model.task}
    row = conn.execute("select ml.register_model_version(%s, %s, %s, 'skops', %s, %s, null, '{}')",
                       (run[0], model.name, artifact, hashlib.sha256(artifact).hexdigest(), Jsonb(signature))).fetchone()
    assert row is not None
    return str(row[0]["model_version_id"])


# -- orbital ------------------------------------------------------------------------------------------------


def _orbital_sql(fitted: Any, columns: list[str]) -> tuple[float, str]:
    """orbital's SQL for ``fitted`` and the seconds it took (run in a child process)."""
    import orbital
    import orbital.types as otypes

    features = {c: otypes.DoubleColumnType() for c in columns}
    t0 = time.perf_counter()
    query = orbital.export_sql("bench_table", orbital.parse_pipeline(fitted, features=features), dialect="postgres")
    return time.perf_counter() - t0, query


def run_orbital(conn: psycopg.Connection[Any], model: Model, fitted: Any, X: pd.DataFrame, ref: dict[str, Any],
                timeout: float) -> Side:
    import concurrent.futures
    import multiprocessing

    side = Side("orbital")
    try:
        import orbital  # noqa: F401
    except ImportError:
        side.error = "orbital is not installed (pip install 'pgmlops[bench]')"
        return side
    # In a child process, so a compile that runs for ever (or out of memory) is cut off.
    pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    try:
        side.compile_s, query = pool.submit(_orbital_sql, fitted, list(X.columns)).result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        side.error = f"did not finish compiling within {timeout:.0f} s"
        for process in list(getattr(pool, "_processes", {}).values()):
            process.kill()
        return side
    except Exception as exc:
        side.error = f"does not convert: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        return side
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    side.sql_chars = len(query)
    try:
        with conn.transaction():
            conn.execute("create temp view bench_table as select * from bench_wide")
            seconds, cur_rows = _timed(lambda: _fetch(conn, query))
    except psycopg.Error as exc:
        side.error = f"PostgreSQL refuses it: {exc.sqlstate}: {(exc.diag.message_primary or str(exc))[:200]}"
        return side
    side.runs = True
    names, rows = cur_rows
    frame = pd.DataFrame(rows, columns=names)
    labels: list[Any] | None = None
    if model.task == "regression":
        values = [float(v) for v in frame.iloc[:, 0]]
    else:
        prob = next(c for c in frame.columns if c.endswith("probability.1"))
        values = [float(v) for v in frame[prob]]
        labels = [int(v) for v in frame["output_label"]]
    _parity(ref, values, labels, side)
    side.batch_us_per_row = seconds * 1e6 / len(X)
    try:
        with conn.transaction():
            conn.execute("drop view bench_table")
            conn.execute("create temp view bench_table as select * from bench_wide where i = 0")
            side.single_row_ms = _median_time(lambda: _fetch(conn, query), 5) * 1e3
            raise _Rollback
    except _Rollback:
        pass
    conn.execute("drop view if exists bench_table")
    return side


class _Rollback(Exception):
    pass


def _fetch(conn: psycopg.Connection[Any], query: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    cur = conn.execute(query)
    return [d.name for d in cur.description or []], cur.fetchall()


# -- the run ------------------------------------------------------------------------------------------------


def comparison_table(results: list[dict[str, Any]]) -> Table:
    table = Table(title="pgmlops vs orbital on PostgreSQL", title_justify="left")
    for column, justify in (("model", "left"), ("compiler", "left"), ("compile", "right"), ("SQL", "right"),
                            ("runs", "center"), ("max |diff|", "right"), ("labels off", "right"),
                            ("batch µs/row", "right"), ("1 row ms", "right"), ("prepared ms", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for r in results:
        for s in (r["pgmlops"], r["orbital"]):
            if s is None:
                continue

            def fmt(v: Any, spec: str) -> str:
                return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)
            runs = "[green]yes[/]" if s["runs"] else "[red]no[/]"
            table.add_row(r["model"], s["compiler"], fmt(s["compile_s"], ".2f") + (" s" if s["compile_s"] is not None else ""),
                          fmt(s["sql_chars"], ",d"), runs, fmt(s["max_abs_diff"], ".1e"), fmt(s["label_mismatches"], "d"),
                          fmt(s["batch_us_per_row"], ",.0f"), fmt(s["single_row_ms"], ",.1f"), fmt(s["prepared_row_ms"], ",.2f"))
    return table


def errors_text(results: list[dict[str, Any]]) -> str:
    lines = [f"{r['model']} / {s['compiler']}: {s['error']}" for r in results for s in (r["pgmlops"], r["orbital"])
             if s is not None and s["error"]]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.scoring", description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--database-url", help="server to use (default: PGMLOPS_BENCH_DATABASE_URL, DATABASE_URL, else embedded)")
    ap.add_argument("--parts", default="compiler,online,batch",
                    help="comma-separated parts: compiler, online, batch (default all)")
    ap.add_argument("--quick", action="store_true", help="small sizes (and no 500-tree model), for a sanity run")
    ap.add_argument("--existing-database", action="store_true",
                    help="use the database --database-url names as it is (migrated, a scratch one: the smoke test's "
                         "clone) instead of creating and dropping pgmlops_bench_<pid>")
    ap.add_argument("--output", default="scoring",
                    help="results name: bench/results/<name>.json (a path ending in .json is written as given)")
    compiler = ap.add_argument_group("compiler part (pgmlops against orbital)")
    compiler.add_argument("--rows", type=int, help="held-out rows scored (default 2,000; --quick 300)")
    compiler.add_argument("--train-rows", type=int, help="training rows (default 10,000; --quick 3,000)")
    compiler.add_argument("--models", help=f"comma-separated models (default all: {', '.join(_models())})")
    compiler.add_argument("--no-orbital", action="store_true", help="measure pgmlops only")
    compiler.add_argument("--orbital-timeout", type=float, default=900,
                          help="seconds orbital may take to compile one model (default 900)")
    online = ap.add_argument_group("online and batch parts (ml.predict against FastAPI; ml.predict_batch against workers)")
    online.add_argument("--entities", type=int, help="entities in the online store and training rows (default 20,000; --quick 2,000)")
    online.add_argument("--online-models", default="logistic,gb",
                        help="logistic (scaler + logistic regression), gb (100 trees, depth 6); default both")
    online.add_argument("--requests", type=int, help="sequential calls per side and model (default 2,000; --quick 200)")
    online.add_argument("--rounds", type=int, default=4, help="alternating rounds the sequential calls are split into")
    online.add_argument("--clients", type=int, default=8, help="concurrent clients of the throughput runs (default 8)")
    online.add_argument("--duration", type=float, help="seconds per throughput run (default 15; --quick 2)")
    online.add_argument("--service-workers", type=int, default=2, help="uvicorn worker processes (default 2)")
    online.add_argument("--pgbench-seconds", type=int, help="seconds per pgbench run, 0 for none (default 20; --quick 3)")
    online.add_argument("--pgbench-clients", type=int, default=8, help="pgbench clients (default 8)")
    online.add_argument("--batch-rows", type=int, help="rows of the batch part (default 1,000,000; --quick 20,000)")
    return ap.parse_args(argv)


def _pick(value: Any, full: Any, quick: Any, is_quick: bool) -> Any:
    return value if value is not None else (quick if is_quick else full)


def run_compiler(url: str, args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The compiler part on database ``url``: (results per model, parameters)."""
    rows = _pick(args.rows, 2000, 300, args.quick)
    train_rows = _pick(args.train_rows, 10000, 3000, args.quick)
    catalog = _models()
    names = args.models.split(",") if args.models else [n for n in catalog if not (args.quick and n == "gb-500x8")]
    X_train, y_train, label_train = data(train_rows, 0)
    X_test, _, _ = data(rows, 1)
    results: list[dict[str, Any]] = []
    with psycopg.connect(url, autocommit=True) as conn:
        make_tenant(conn, "bench")
        conn.execute("set jit = off")
        projects = {task: str(conn.execute("select ml.create_project(%s, %s, %s)",
                                           (task.replace("_", "-"), task, None if task == "anomaly_detection" else "y")).fetchone()[0])  # type: ignore[index]
                    for task in ("regression", "classification", "anomaly_detection")}
        conn.execute(sql.SQL("create temp table bench_rows (i int primary key, x float8[])"))
        conn.execute(sql.SQL("create temp table bench_wide (i int primary key, {})").format(
            sql.SQL(", ").join(sql.SQL("{} float8").format(sql.Identifier(c)) for c in X_test.columns)))
        with conn.cursor().copy("copy bench_rows from stdin") as copy:
            for i, row in enumerate(X_test.itertuples(index=False)):
                copy.write_row([i, list(row)])
        with conn.cursor().copy("copy bench_wide from stdin") as copy:
            for i, row in enumerate(X_test.itertuples(index=False)):
                copy.write_row([i, *row])
        for name in names:
            model = catalog[name]
            console.print(f"[bold]{name}[/]: fitting ({model.note}) ...")
            fit_s, fitted = _timed(lambda m=model: fit(m, X_train, y_train, label_train))
            ref = reference(model, fitted, X_test)
            console.print("  pgmlops ...")
            ours = run_pgmlops(conn, model, fitted, X_test, ref, projects)
            theirs = None
            if not args.no_orbital:
                console.print("  orbital ...")
                theirs = run_orbital(conn, model, fitted, X_test, ref, args.orbital_timeout)
            results.append({"model": name, "task": model.task, "note": model.note, "fit_s": fit_s,
                            "pgmlops": vars(ours), "orbital": None if theirs is None else vars(theirs)})
    console.print(comparison_table(results))
    if errors_text(results):
        console.print(errors_text(results), style="dim", soft_wrap=True)
    return results, {"rows": rows, "train_rows": train_rows, "models": names, "features": FEATURES, "jit": "off",
                     "orbital": not args.no_orbital}


def compiler_goals(results: list[dict[str, Any]]) -> list[Goal]:
    goals: list[Goal] = []
    by_name = {r["model"]: r for r in results}
    if "gb-100x6" in by_name:
        s = by_name["gb-100x6"]["pgmlops"]
        goals.append(Goal("gb-100x6: pgmlops compile time", s["compile_s"], "s", COMPILE_GOAL_S, lower_is_better=True, digits=2,
                          note=f"describe {s['extra'].get('describe_s', math.nan):.2f} s, SQL "
                               f"{s['extra'].get('generate_ms', math.nan):.0f} + {s['extra'].get('create_ms', math.nan):.0f} ms"))
    if "gb-500x8" in by_name:
        s = by_name["gb-500x8"]["pgmlops"]
        goals.append(Goal("gb-500x8: pgmlops compiles and runs", 1.0 if s["runs"] else 0.0, "", 1.0, digits=0,
                          note=f"{s['compile_s'] or math.nan:.1f} s, {s['sql_chars'] or 0:,} chars, "
                               f"{s['extra'].get('nodes', 0):,} nodes"))
    worst = max((r["pgmlops"]["max_abs_diff"] for r in results if r["pgmlops"]["max_abs_diff"] is not None), default=math.nan)
    goals.append(Goal("pgmlops: largest |difference| from scikit-learn", worst, "", PARITY_GOAL, lower_is_better=True, digits=12,
                      note="over every model and row"))
    mismatches = sum(r["pgmlops"]["label_mismatches"] or 0 for r in results)
    goals.append(Goal("pgmlops: labels that differ from scikit-learn", float(mismatches), "", 0.0, lower_is_better=True, digits=0))
    failures = [r["model"] for r in results if not r["pgmlops"]["runs"]]
    goals.append(Goal("pgmlops: models that do not run", float(len(failures)), "", 0.0, lower_is_better=True, digits=0,
                      note=", ".join(failures)))
    return goals


def online_goals(online: dict[str, Any]) -> list[Goal]:
    goals: list[Goal] = []
    for key, entry in online["models"].items():
        r = entry.get("ratios") or {}
        p50 = r.get("p50_latency_fastapi_over_pgmlops")
        rps = r.get("throughput_pgmlops_over_fastapi")
        pg, fa = entry.get("pgmlops") or {}, entry.get("fastapi") or {}
        why = entry.get("pgmlops_error", "")
        goals.append(Goal(f"{key}: p50 latency, FastAPI / ml.predict", p50, "x", ONLINE_GOAL, digits=2,
                          note=why or f"{pg.get('latency_ms', {}).get('p50', math.nan):.2f} ms vs "
                                      f"{fa.get('latency_ms', {}).get('p50', math.nan):.2f} ms"))
        goals.append(Goal(f"{key}: throughput, ml.predict / FastAPI", rps, "x", ONLINE_GOAL, digits=2,
                          note=why or f"{pg.get('throughput', {}).get('requests_per_s', math.nan):,.0f} vs "
                                      f"{fa.get('throughput', {}).get('requests_per_s', math.nan):,.0f} req/s, "
                                      f"{online['parameters']['clients']} clients"))
    return goals


def _write(name: str, payload: dict[str, Any]) -> Path:
    if not name.endswith(".json"):
        return write_results(name, payload)
    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"benchmark": "scoring", "timestamp": datetime.now(UTC).isoformat(timespec="seconds"), **payload}
    path.write_text(json.dumps(body, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - {"compiler", "online", "batch"}
    if unknown:
        raise SystemExit(f"--parts: unknown part(s) {', '.join(sorted(unknown))} (compiler, online, batch)")
    server = resolve_bench_url(args.database_url)
    started = time.perf_counter()
    results: dict[str, Any] = {}
    parameters: dict[str, Any] = {"parts": parts, "quick": args.quick, "server": redact(server),
                                  "load_average_at_start": os.getloadavg()}
    goals: list[Goal] = []
    database = nullcontext(server) if args.existing_database else fresh_database(server)
    with database as url:
        with psycopg.connect(url, autocommit=True) as conn:
            machine = machine_info(conn)
        if "compiler" in parts:
            results["compiler"], parameters["compiler"] = run_compiler(url, args)
            goals += compiler_goals(results["compiler"])
        if "online" in parts or "batch" in parts:
            from bench import _scoring_batch, _scoring_online, _scoring_setup

            entities = _pick(args.entities, 20000, 2000, args.quick)
            keys = [k.strip() for k in args.online_models.split(",") if k.strip()]
            if "batch" in parts and "gb" not in keys:
                keys.append("gb")
            console.print(f"[bold]online and batch data[/]: {entities:,} entities, models {', '.join(keys)}")
            with psycopg.connect(url, autocommit=True) as conn:
                setup = _scoring_setup.build(conn, url, entities, keys, log=console.print)
            results["setup"] = setup.as_dict()
            if "online" in parts:
                console.print("[bold]online[/]: ml.predict against FastAPI")
                online = _scoring_online.run(
                    setup, requests=_pick(args.requests, 2000, 200, args.quick), rounds=args.rounds,
                    warmup=_pick(None, 200, 20, args.quick), clients=args.clients,
                    duration=_pick(args.duration, 15.0, 2.0, args.quick), service_workers=args.service_workers,
                    pgbench_seconds=_pick(args.pgbench_seconds, 20, 3, args.quick), pgbench_clients=args.pgbench_clients,
                    log=console.print)
                results["online"] = online
                for table in _scoring_online.tables(online):
                    console.print(table)
                goals += online_goals(online)
            if "batch" in parts:
                console.print("[bold]batch[/]: ml.predict_batch against the worker path")
                batch = _scoring_batch.run(setup, rows=_pick(args.batch_rows, 1_000_000, 20_000, args.quick),
                                           log=console.print)
                results["batch"] = batch
                console.print(_scoring_batch.table(batch))
                goals += _scoring_batch.goals(batch)
    parameters["load_average_at_end"] = os.getloadavg()
    console.print(results_table(f"Goals (issue 11; {os.cpu_count()} CPUs shared with other work, load average "
                                f"{parameters['load_average_at_start'][0]:.1f} → {parameters['load_average_at_end'][0]:.1f})",
                                goals))
    path = _write(args.output, {
        "machine": machine, "parameters": parameters, "elapsed_s": round(time.perf_counter() - started, 1),
        "results": results, "goals": [g.as_dict() for g in goals]})
    console.print(f"results: {path}")
    return 1 if any(g.status == "MISS" for g in goals) else 0


if __name__ == "__main__":
    raise SystemExit(main())
