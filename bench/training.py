"""Training benchmark: the platform's overhead on one fit, and tuning throughput with 1 and 2 workers.

    python -m bench.training [--database-url URL] [--rows N] [--tune-rows N] [--trials N]
                             [--repeats R] [--tune-repeats R] [--quick]

Both comparisons are measured side by side in one run, on one server, so that ratios hold even
on a busy machine where absolute times do not. Every worker and the bare fit use
``PGMLOPS_TRAIN_THREADS`` native threads (``--threads``, default 1).

Data: ``make_classification``-like rows (20 numeric features, a binary label), one feature row
per entity ingested with ``pgmlops.features.ingest`` into feature group ``bench``, and a spine
of (entity, time an hour later, label) rows turned into point-in-time training sets with
``pgmlops.features.create_training_set``: N rows (part 1), the first M of them (part 2) and
1000 (warm-ups).

1. Platform overhead (issues 4 and 10: at most 15% slower end to end with the per-step
   learning curve off, the default; reported with it on too). ``ml.train`` of
   hist_gradient_boosting (fixed hyperparameters, early stopping off) is timed from the call
   to the client receiving the job's ``job.succeeded`` event, through one worker process: claim,
   load the training set, split, fit, evaluate, dump the artifact, record the run, register the
   version, complete the job; once with the options' ``learning_curve`` off and once on. Against
   them, in a rotating order within each repeat, a bare scikit-learn fit in this process:
   the same rows loaded by hand (COPY of the dataset table, ordered by row_id, read by pandas
   with pyarrow), the same stratified split, the same preprocessing (median imputation +
   scaling in a ColumnTransformer) and estimator with the same hyperparameters and thread
   limit, predict_proba on the test rows, ROC AUC. Both ROC AUCs must be equal (same model).
   The worker is warmed up with one small train job first (a long-running worker pays its
   imports once); a fresh worker's first job is reported as the cold number, next to a bare
   fit in a fresh Python process. The worker is ``pgmlops.jobs.worker.Worker`` in a spawned process
   whose pgmlops functions are wrapped with timers (wall clock, a few microseconds each), so the
   platform time breaks down into enqueue-to-claim, dataset load, fit, per-step evaluation,
   test metrics, artifact, latency probe, run and version records, completion and commit.
   Ratios are taken per repeat (platform / the bare fit of the same repeat) and their median
   reported, with their range: the machine's other work shows in the range, not the median.
2. Tuning throughput (issue 4: at least 1.7x with 2 workers). ``ml.tune`` of
   hist_gradient_boosting, n_trials trials, pruner none, TPE with a fixed seed, over
   hyperparameters that barely change the cost of a fit (learning rate, leaf size, L2,
   iterations within 140..160; 31 leaves, no early stopping), so both worker counts do
   comparable work; on a
   ``pgmlops.jobs.worker.WorkerPool`` of 1 and of 2 processes (warmed up: every worker ran a
   tune_trial job of a small study). Trials per minute =
   finished trials / the trial phase (the ml.tune call's time to the last tune_trial job's
   finish, server clock). The refit that follows is reported apart.

Results: a table against the goals and bench/results/training.json.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import logging
import math
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from rich.progress import Progress

from bench._common import (
    BENCH_DIR,
    Goal,
    console,
    fresh_database,
    machine_info,
    make_tenant,
    median,
    progress,
    redact,
    resolve_bench_url,
    results_table,
    summarize,
    write_results,
)

OVERHEAD_GOAL = 1.15  # platform end-to-end time (learning curve off) / bare scikit-learn time
SCALING_GOAL = 1.7  # trials/min with 2 workers / with 1

Conn = psycopg.Connection[Any]

N_FEATURES = 20
FEATURES = [f"f{j:02d}" for j in range(N_FEATURES)]
GROUP = "bench"
PROJECT = "bench"
LABEL = "label"
ALGORITHM = "hist_gradient_boosting"
WARMUP_ROWS = 1000
BASE = np.datetime64("2025-01-01T00:00:00", "s")
TRAIN_OPTIONS = {"split": "stratified", "test_size": 0.2, "random_state": 42}
CURVE_OPTIONS = {**TRAIN_OPTIONS, "learning_curve": True}
# The overhead part's sides: ml.train with the learning curve off (the default) and on, and the
# bare fit. Their order rotates from one repeat to the next.
SIDES = ("platform", "platform_curve", "bare")
# The search space varies what costs (almost) nothing (learning rate, leaf size, L2, iterations
# within +-7%) and fixes the rest of a fit's work (31 leaves, early stopping off): trials then
# cost about the same whatever TPE samples, so runs with 1 and 2 workers do comparable work
# although their later trials differ (TPE's choices depend on the order earlier trials finished).
# Two workarounds for a tuning bug (pgmlops.tuning._handlers._new_trial creates the trial
# through the raw RDBStorage, so the study's _CachedStorage does not know it until a sampler
# reads the trials; until then Optuna's set_trial_param raises KeyError and the slot fails):
#   * sampler 'random' never reads the trials, so every trial fails: TPE is used (it reads them
#     in its first sample_independent call);
#   * a single-valued distribution (one choice) is not sampled, so it must not come first: the
#     parameters are taken in jsonb key order (shortest name first), and max_iter, a range,
#     comes first.
SEARCH_SPACE: dict[str, Any] = {
    "max_iter": {"type": "int", "low": 140, "high": 160},
    "learning_rate": {"type": "float", "low": 0.02, "high": 0.3, "log": True},
    "min_samples_leaf": {"type": "int", "low": 10, "high": 80},
    "l2_regularization": {"type": "float", "low": 0.0, "high": 10.0},
    "max_leaf_nodes": {"type": "categorical", "choices": [31]},
    "early_stopping": {"type": "categorical", "choices": [False]},
}
TUNE_OPTIONS = {**TRAIN_OPTIONS, "metric": "roc_auc", "pruner": "none", "sampler": "tpe"}
JOB_TIMEOUT_S = 1800.0
STOP_TIMEOUT_S = 60.0


# -- data ------------------------------------------------------------------------------------------


def make_data(rows: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(feature rows, spine): entity ``c0000001``.. with one feature row each (one second
    apart) and a spine row an hour later carrying the label."""
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=rows, n_features=N_FEATURES, n_informative=10, n_redundant=4,
                               n_clusters_per_class=3, flip_y=0.03, class_sep=0.8, random_state=seed)
    keys = np.char.add("c", np.char.zfill(np.arange(1, rows + 1).astype(str), 7))
    times = BASE + np.arange(rows).astype("timedelta64[s]")
    feature_rows = pd.DataFrame({"customer_id": keys, "event_time": np.datetime_as_string(times, timezone="UTC")})
    for j, name in enumerate(FEATURES):
        feature_rows[name] = np.round(X[:, j], 6)
    spine = pd.DataFrame({"customer_id": keys,
                          "event_time": pd.to_datetime(times + np.timedelta64(3600, "s")).tz_localize("UTC"),
                          LABEL: y.astype(np.int64)})
    return feature_rows, spine


def build_datasets(conn: Conn, rows: int, tune_rows: int, prog: Progress) -> dict[str, Any]:
    """The feature group, its rows, and the three training sets; returns their ids and timings."""
    from pgmlops import features
    from pgmlops import features as datasets

    task = prog.add_task(f"data: {rows:,} rows × {N_FEATURES} features", total=5)
    feature_rows, spine = make_data(rows)
    features.create_group(conn, GROUP, "customer", [{"name": f, "dtype": "float"} for f in FEATURES],
                          join_key="customer_id", description="make_classification features")
    prog.update(task, description=f"data: ingesting {rows:,} rows", advance=1)
    t0 = time.perf_counter()
    result = features.ingest(conn, GROUP, feature_rows, source_name="bench:make_classification")
    ingest_s = time.perf_counter() - t0
    if result.written != rows:
        raise RuntimeError(f"ingestion wrote {result.written} of {rows} rows")
    prog.advance(task)
    refs = [f"{GROUP}:{f}" for f in FEATURES]
    out: dict[str, Any] = {"rows": rows, "tune_rows": tune_rows, "ingest_s": round(ingest_s, 2)}
    for name, n in (("bench_train", rows), ("bench_tune", tune_rows), ("bench_warmup", WARMUP_ROWS)):
        prog.update(task, description=f"data: training set {name} ({n:,} rows)")
        t0 = time.perf_counter()
        dataset_id = datasets.create_training_set(conn, name, spine.iloc[:n].reset_index(drop=True), refs, label=LABEL)
        seconds = time.perf_counter() - t0
        info = datasets.dataset_info(conn, dataset_id)
        if info.row_count != n:
            raise RuntimeError(f"training set {name}: {info.row_count} rows, expected {n}")
        # Both paths read the same table: hint bits set and statistics fresh before either does.
        conn.execute(sql.SQL("vacuum analyze {}").format(sql.SQL(info.table_name)))
        out[name] = {"id": str(dataset_id), "table": info.table_name, "rows": n, "inputs": list(info.inputs),
                     "create_s": round(seconds, 2)}
        prog.advance(task)
    positives = int(spine[LABEL].iloc[:rows].sum())
    out["positive_share"] = round(positives / rows, 4)
    prog.update(task, description=f"data: {rows:,} rows ingested in {ingest_s:.1f} s, 3 training sets")
    return out


# -- the bare scikit-learn fit -------------------------------------------------------------------


def bare_fit(conn: Conn, table: str, hyperparams: dict[str, Any], options: dict[str, Any],
             threads: int) -> dict[str, Any]:
    """What a user writes by hand: the dataset's rows out of PostgreSQL, the same split,
    preprocessing and estimator as the platform, predict on the test rows, ROC AUC."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    t0 = time.perf_counter()
    columns = sql.SQL(", ").join(map(sql.Identifier, [*FEATURES, LABEL]))
    buffer = io.BytesIO()
    with conn.cursor().copy(sql.SQL("copy (select {} from {} order by row_id) to stdout with (format csv, header true)")
                            .format(columns, sql.SQL(table))) as copy:
        for block in copy:
            buffer.write(block)
    buffer.seek(0)
    frame = pd.read_csv(buffer, engine="pyarrow")
    t_load = time.perf_counter()
    X = frame[FEATURES]
    y = frame[LABEL].to_numpy(dtype=np.int64)
    n = len(frame)
    train, test = train_test_split(np.arange(n), test_size=math.ceil(n * options["test_size"]),
                                   random_state=options["random_state"], shuffle=True, stratify=y)
    t_split = time.perf_counter()
    with threadpool_limits(limits=threads):
        model = Pipeline([
            ("preprocess", ColumnTransformer([("numeric", Pipeline([("impute", SimpleImputer(strategy="median")),
                                                                    ("scale", StandardScaler())]), FEATURES)],
                                             remainder="drop", sparse_threshold=0.0)),
            ("model", HistGradientBoostingClassifier(**hyperparams, random_state=options["random_state"])),
        ])
        model.fit(X.iloc[train], y[train])
        t_fit = time.perf_counter()
        proba = model.predict_proba(X.iloc[test])[:, 1]
        auc = float(roc_auc_score(y[test], proba))
    t_end = time.perf_counter()
    return {"seconds": round(t_end - t0, 4), "load_s": round(t_load - t0, 4), "split_s": round(t_split - t_load, 4),
            "fit_s": round(t_fit - t_split, 4), "predict_metric_s": round(t_end - t_fit, 4), "roc_auc": auc,
            "n_train": len(train), "n_test": len(test)}


def _bare_child(spec_json: str) -> int:
    """``python -m bench.training --bare-child SPEC``: one bare fit in a fresh process (the cold comparison)."""
    spec = json.loads(spec_json)
    with psycopg.connect(spec["url"], autocommit=True) as conn:
        out = bare_fit(conn, spec["table"], spec["hyperparams"], spec["options"], spec["threads"])
    print(json.dumps(out))
    return 0


def bare_cold(url: str, table: str, hyperparams: dict[str, Any], threads: int) -> dict[str, Any]:
    """The bare fit as a script in a fresh Python process: interpreter, imports, connection, fit."""
    spec = json.dumps({"url": url, "table": table, "hyperparams": hyperparams, "options": TRAIN_OPTIONS,
                       "threads": threads})
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bench.training", "--bare-child", spec], cwd=BENCH_DIR.parent,
                          capture_output=True, text=True, check=False, timeout=JOB_TIMEOUT_S)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"bare fit in a fresh process failed: {done.stderr[-2000:]}")
    inner = json.loads(done.stdout.strip().splitlines()[-1])
    return {"seconds": round(seconds, 4), "inside": inner,
            "startup_and_imports_s": round(seconds - inner["seconds"], 4), "roc_auc": inner["roc_auc"]}


# -- a worker process with timers ---------------------------------------------------------------


def _install_probe(path: str) -> None:
    """Wrap the pgmlops functions a train job goes through with wall-clock timers; append one
    JSON line per job to ``path``. The wrappers call the originals unchanged (all are looked up
    as module or class attributes at call time, so wrapping them reaches every caller)."""
    from pgmlops import features as datasets
    from pgmlops.jobs import queue, worker
    from pgmlops.models import artifacts
    from pgmlops.training import _handler as _training_handlers
    from pgmlops.training import _training as training

    spans: dict[str, list[list[float]]] = {}
    extra: dict[str, float] = {}

    def wrap(owner: Any, name: str, key: str, after: Callable[..., None] | None = None) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.time()
            try:
                return original(*args, **kwargs)
            finally:
                spans.setdefault(key, []).append([t0, time.time()])
                if after is not None:
                    after(*args)

        setattr(owner, name, timed)

    def stepper_seconds(stepper: Any, *_: Any) -> None:
        extra["staged_eval_s"] = extra.get("staged_eval_s", 0.0) + float(stepper.seconds)

    wrap(datasets, "load_dataset", "load")
    wrap(training, "fit", "fit")
    wrap(training, "_prepare", "prepare")
    wrap(training._Stepper, "fit", "stepper", after=stepper_seconds)
    wrap(training, "_evaluate", "evaluate")
    wrap(artifacts, "dump", "artifact")
    wrap(training, "_single_row_latency", "latency")
    wrap(_training_handlers, "record_fit", "record")
    wrap(queue, "complete", "complete")

    # Maintenance (when pg_cron is absent) runs between jobs, before a claim: a line of its own.
    original_maintenance = worker.Worker._maintenance

    @functools.wraps(original_maintenance)
    def maintenance(self: Any, conn: Any) -> None:
        t0 = time.time()
        try:
            original_maintenance(self, conn)
        finally:
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"maintenance": [t0, time.time()]}) + "\n")

    worker.Worker._maintenance = maintenance  # type: ignore[method-assign]

    original_run_one = worker.Worker._run_one

    @functools.wraps(original_run_one)
    def run_one(self: Any, *args: Any, **kwargs: Any) -> Any:
        # Whatever else _run_one takes, one argument holds the claimed job (``.job``).
        held = next(a for a in (*args, *kwargs.values()) if hasattr(a, "job"))
        spans.clear()
        extra.clear()
        t0 = time.time()
        try:
            return original_run_one(self, *args, **kwargs)
        finally:
            record = {"job_id": held.job.id, "kind": held.job.kind, "pid": os.getpid(), "begin": t0,
                      "end": time.time(), "spans": dict(spans), **extra}
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    worker.Worker._run_one = run_one  # type: ignore[method-assign]


def _probed_worker_main(url: str, kinds: list[str], probe_path: str) -> None:
    """A worker process as ``WorkerPool`` starts one, with the timers installed."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(processName)s %(levelname)s %(message)s")
    from pgmlops.jobs import handlers
    from pgmlops.jobs.worker import Worker

    handlers.load_plugins()
    _install_probe(probe_path)
    Worker(url=url, kinds=kinds, poll_interval=1.0).run()


class ProbedWorker:
    """One probed worker process (spawned, like WorkerPool's); stopped with SIGTERM."""

    def __init__(self, url: str, kinds: list[str], probe_path: Path) -> None:
        self.probe_path = probe_path
        self._proc = multiprocessing.get_context("spawn").Process(
            target=_probed_worker_main, args=(url, kinds, str(probe_path)), name="bench-worker")

    def __enter__(self) -> ProbedWorker:
        self._proc.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc.is_alive():
            self._proc.terminate()  # SIGTERM: the worker finishes its job and stops claiming
            self._proc.join(STOP_TIMEOUT_S)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join()

    def _lines(self) -> list[dict[str, Any]]:
        if not self.probe_path.exists():
            return []
        return [json.loads(line) for line in self.probe_path.read_text(encoding="utf-8").splitlines()]

    def record(self, job_id: int) -> dict[str, Any]:
        for rec in self._lines():
            if rec.get("job_id") == job_id:
                return rec
        raise RuntimeError(f"no probe record for job {job_id}")

    def maintenance_between(self, t0: float, t1: float) -> float:
        """Seconds the worker spent on maintenance between t0 and t1 (0 when pg_cron runs it)."""
        spans = [r["maintenance"] for r in self._lines() if "maintenance" in r]
        return float(sum(max(0.0, min(b, t1) - max(a, t0)) for a, b in spans))


# -- jobs ------------------------------------------------------------------------------------------


def _listening_workers(conn: Conn) -> int:
    row = conn.execute("select count(*) from pg_stat_activity where datname = current_database() "
                       "and application_name = 'pgmlops worker listen'").fetchone()
    return int(row[0]) if row else 0


def _wait_listening(conn: Conn, workers: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while _listening_workers(conn) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {_listening_workers(conn)} of {workers} workers connected")
        time.sleep(0.05)


def _wait_job(listen: Conn, conn: Conn, job_id: int, timeout: float = JOB_TIMEOUT_S) -> float:
    """Wait for job ``job_id``'s job.succeeded event (checking the row between notifications);
    returns time.time() when it was seen. Raises RuntimeError when the job failed or timed out."""
    deadline = time.monotonic() + timeout
    while True:
        for n in listen.notifies(timeout=0.5):
            msg = json.loads(n.payload)
            if (msg.get("data") or {}).get("job_id") == job_id:
                if msg.get("event") == "job.succeeded":
                    return time.time()
                break  # any other state change: read the row
        row = conn.execute("select status, attempts, error from ml.jobs where id = %s", (job_id,)).fetchone()
        assert row is not None
        if row[0] == "succeeded":
            return time.time()
        if row[0] in ("failed", "dead", "cancelled") or row[2]:
            runs = conn.execute("select error from ml.runs where error is not null and (job_id = %s or study_id = "
                                "(select id from ml.tuning_studies where tune_job_id = %s)) limit 3",
                                (job_id, job_id)).fetchall()
            raise RuntimeError(f"job {job_id} {row[0]} (attempt {row[1]}): {row[2]}; runs: {[r[0] for r in runs]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} still {row[0]} after {timeout:.0f} s")


def _job_row(conn: Conn, job_id: int) -> dict[str, Any]:
    row = conn.execute(
        "select status, attempts, extract(epoch from created_at), extract(epoch from started_at), "
        "extract(epoch from finished_at), result, locked_by from ml.jobs where id = %s", (job_id,)).fetchone()
    assert row is not None
    return {"status": row[0], "attempts": row[1], "created": float(row[2]), "started": float(row[3]),
            "finished": float(row[4]), "result": row[5], "locked_by": row[6]}


def _enqueue_train(conn: Conn, dataset_id: str, hyperparams: dict[str, Any],
                   options: dict[str, Any]) -> tuple[int, float]:
    """ml.train; returns (job id, time.time() just before the call)."""
    t0 = time.time()
    row = conn.execute("select ml.train(%s, %s, %s, %s, %s)",
                       (PROJECT, dataset_id, ALGORITHM, Jsonb(hyperparams), Jsonb(options))).fetchone()
    assert row is not None
    return int(row[0]), t0


# -- 1. platform overhead ----------------------------------------------------------------------


def _span(rec: dict[str, Any], key: str) -> float:
    return float(sum(b - a for a, b in rec["spans"].get(key, [])))


def _breakdown(t_call: float, t_seen: float, job: dict[str, Any], rec: dict[str, Any],
               train_seconds: float) -> dict[str, float]:
    """Where the platform's end-to-end time went, in seconds; the parts add up to the whole."""
    fit = _span(rec, "fit")
    staged = float(rec.get("staged_eval_s", 0.0))
    parts = {
        "enqueue_to_claim": job["started"] - t_call,  # ml.train, NOTIFY, wake-up, claim
        "claim_to_handler": rec["begin"] - job["started"],
        "dataset_load": _span(rec, "load"),
        "labels_and_split": _span(rec, "prepare"),
        "fit": train_seconds,  # preprocessing + boosting (ml.runs.train_seconds)
        "per_step_evaluation": staged,  # staged predictions + the metric at <= 25 steps
        "test_metrics": _span(rec, "evaluate"),
        "artifact": _span(rec, "artifact"),
        "latency_probe": _span(rec, "latency"),
    }
    parts["fit_other"] = fit - sum(parts[k] for k in ("labels_and_split", "fit", "per_step_evaluation", "test_metrics",
                                                      "artifact", "latency_probe"))
    parts["record_and_register"] = _span(rec, "record")
    parts["complete_job"] = _span(rec, "complete")
    last_complete = max((b for _, b in rec["spans"].get("complete", [])), default=rec["end"])
    parts["handler_other"] = (rec["end"] - rec["begin"]) - sum(
        parts[k] for k in ("dataset_load", "record_and_register", "complete_job")) - fit - (rec["end"] - last_complete)
    parts["commit"] = rec["end"] - last_complete
    parts["event_to_client"] = t_seen - rec["end"]
    return {k: round(v, 4) for k, v in parts.items()}


def _platform_run(conn: Conn, listen: Conn, worker: ProbedWorker, dataset_id: str,
                  hyperparams: dict[str, Any], options: dict[str, Any] = TRAIN_OPTIONS) -> dict[str, Any]:
    job_id, t_call = _enqueue_train(conn, dataset_id, hyperparams, options)
    t_seen = _wait_job(listen, conn, job_id)
    job = _job_row(conn, job_id)
    if job["status"] != "succeeded" or job["attempts"] != 1:
        raise RuntimeError(f"train job {job_id}: {job['status']} after {job['attempts']} attempts")
    result = job["result"]
    run = conn.execute("select train_seconds, metrics, model_size_bytes, inference_latency_ms, "
                       "(select count(distinct step) from ml.run_metrics m where m.run_id = r.id) "
                       "from ml.runs r where id = %s", (result["run_id"],)).fetchone()
    assert run is not None
    if bool(run[4]) != bool(options.get("learning_curve")):
        raise RuntimeError(f"train job {job_id}: {run[4]} curve steps logged with learning_curve "
                           f"{options.get('learning_curve')}")
    # The probe line is written after the job's transaction ends, which is before the event
    # reaches this client; give the file system a moment all the same.
    for _ in range(50):
        try:
            rec = worker.record(job_id)
            break
        except RuntimeError:
            time.sleep(0.02)
    else:
        rec = worker.record(job_id)
    seconds = t_seen - t_call
    return {"job_id": job_id, "seconds": round(seconds, 4), "server_seconds": round(job["finished"] - job["created"], 4),
            "roc_auc": float(run[1]["roc_auc"]), "train_seconds": round(float(run[0]), 4),
            "model_size_bytes": int(run[2]), "inference_latency_ms": float(run[3]), "curve_steps": int(run[4]),
            "version": result["version"],
            "n_train": result["n_train"], "n_test": result["n_test"],
            "maintenance_s": round(worker.maintenance_between(t_call, t_seen), 4),
            "breakdown": _breakdown(t_call, t_seen, job, rec, float(run[0]))}


def run_overhead(url: str, conn: Conn, data: dict[str, Any], hyperparams: dict[str, Any], repeats: int,
                 threads: int, workdir: Path, prog: Progress) -> dict[str, Any]:
    dataset, warm = data["bench_train"], data["bench_warmup"]
    task = prog.add_task("overhead: cold worker", total=2 + len(SIDES) * repeats)
    out: dict[str, Any] = {"rows": dataset["rows"], "hyperparams": hyperparams, "options": TRAIN_OPTIONS,
                           "curve_options": CURVE_OPTIONS, "threads": threads}
    with psycopg.connect(url, autocommit=True) as listen:
        listen.execute("listen ml_events")
        # Cold: a fresh worker's first job pays its imports (scikit-learn's estimators, skops,
        # torch through pgmlops.artifacts), connection set-up and PL/pgSQL plan caches.
        with ProbedWorker(url, ["train"], workdir / "probe_cold.jsonl") as worker:
            _wait_listening(conn, 1)
            cold = _platform_run(conn, listen, worker, dataset["id"], hyperparams)
        prog.advance(task)
        prog.update(task, description="overhead: bare fit in a fresh process (cold)")
        out["cold_bare"] = bare_cold(url, dataset["table"], hyperparams, threads)
        out["cold"] = cold
        prog.advance(task)

        # Warm: a fresh worker, one small train job with the curve and one without first; the
        # bare side warms up the same way.
        runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
        with ProbedWorker(url, ["train"], workdir / "probe_warm.jsonl") as worker:
            _wait_listening(conn, 1)
            prog.update(task, description="overhead: warming up (1000-row train jobs, 1000-row bare fit)")
            out["warmup"] = {"platform": _platform_run(conn, listen, worker, warm["id"], hyperparams),
                             "platform_curve": _platform_run(conn, listen, worker, warm["id"], hyperparams,
                                                             CURVE_OPTIONS),
                             "bare": bare_fit(conn, warm["table"], hyperparams, TRAIN_OPTIONS, threads)}
            for rep in range(repeats):
                order = SIDES[rep % len(SIDES):] + SIDES[:rep % len(SIDES)]
                for side in order:
                    prog.update(task, description=f"overhead: {side} (run {rep + 1}/{repeats})")
                    if side == "bare":
                        run = bare_fit(conn, dataset["table"], hyperparams, TRAIN_OPTIONS, threads)
                    else:
                        run = _platform_run(conn, listen, worker, dataset["id"], hyperparams,
                                            CURVE_OPTIONS if side == "platform_curve" else TRAIN_OPTIONS)
                    runs[side].append({"repeat": rep, **run})
                    prog.advance(task)
    # Same data, split, preprocessing and estimator: the same model, so the same ROC AUC.
    aucs = {r["roc_auc"] for side in SIDES for r in runs[side]} | {cold["roc_auc"], out["cold_bare"]["roc_auc"]}
    same = max(aucs) - min(aucs) <= 1e-12
    if not same:
        raise RuntimeError(f"platform and bare ROC AUC differ: {sorted(aucs)}")
    if any(r["n_test"] != runs["bare"][0]["n_test"] for r in runs["platform"] + runs["platform_curve"]):
        raise RuntimeError("platform and bare test rows differ in number")
    bare = runs["bare"]
    b_med = median([r["seconds"] for r in bare])
    out.update({"bare": bare, "roc_auc": bare[0]["roc_auc"], "roc_auc_equal": same,
                "bare_seconds_median": round(b_med, 4),
                "bare_breakdown_median": {k: round(median([r[k] for r in bare]), 4)
                                          for k in ("load_s", "split_s", "fit_s", "predict_metric_s")}})
    for side, key in (("platform", "off"), ("platform_curve", "on")):
        mine = runs[side]
        ratios = [p["seconds"] / b["seconds"] for p, b in zip(mine, bare, strict=True)]
        p_med = median([r["seconds"] for r in mine])
        keys = list(mine[0]["breakdown"])
        out[f"curve_{key}"] = {
            "runs": mine, "platform_seconds_median": round(p_med, 4),
            "ratio_per_repeat": [round(r, 4) for r in ratios], "ratio_median": round(median(ratios), 4),
            "ratio_of_medians": round(p_med / b_med, 4),
            "breakdown_median": {k: round(median([r["breakdown"][k] for r in mine]), 4) for k in keys},
            "curve_steps": mine[0]["curve_steps"],
        }
    out["cold_ratio"] = round(cold["seconds"] / out["cold_bare"]["seconds"], 4)
    prog.update(task, description=f"overhead: bare {b_med:.2f} s, platform ×{out['curve_off']['ratio_median']:.2f} "
                                  f"(curve off), ×{out['curve_on']['ratio_median']:.2f} (curve on)")
    return out


# -- 2. tuning throughput ------------------------------------------------------------------------


def _tune(conn: Conn, dataset_id: str, n_trials: int) -> tuple[int, str, float]:
    """ml.tune; returns (tune job id, study id, time.time() just before the call)."""
    t0 = time.time()
    row = conn.execute("select ml.tune(%s, %s, %s, %s, %s, %s)",
                       (PROJECT, dataset_id, ALGORITHM, Jsonb(SEARCH_SPACE), n_trials, Jsonb(TUNE_OPTIONS))).fetchone()
    assert row is not None
    job_id = int(row[0])
    study = conn.execute("select payload ->> 'study_id' from ml.jobs where id = %s", (job_id,)).fetchone()
    assert study is not None
    return job_id, str(study[0]), t0


def _study_jobs(conn: Conn, study_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        "select id, status, attempts, locked_by, extract(epoch from created_at), extract(epoch from started_at), "
        "extract(epoch from finished_at), result from ml.jobs "
        "where kind = 'tune_trial' and payload ->> 'study_id' = %s order by id", (study_id,)).fetchall()
    return [{"id": r[0], "status": r[1], "attempts": r[2], "locked_by": r[3], "created": float(r[4]),
             "started": float(r[5]), "finished": float(r[6]), "result": r[7]} for r in rows]


def _warm_pool(conn: Conn, listen: Conn, warm_id: str, workers: int) -> int:
    """Small studies on the 1000-row set until every worker has run a tune_trial job (imports,
    Optuna's storage and engine, plan caches). Returns how many workers ran one."""
    seen: set[str] = set()
    for _ in range(5):
        job_id, study_id, _ = _tune(conn, warm_id, 2 * workers)
        _wait_job(listen, conn, job_id)
        seen |= {j["locked_by"] for j in _study_jobs(conn, study_id)}
        if len(seen) >= workers:
            break
    return len(seen)


def _tuning_run(url: str, conn: Conn, listen: Conn, data: dict[str, Any], workers: int, n_trials: int,
                threads: int) -> dict[str, Any]:
    from pgmlops.jobs.worker import WorkerPool

    os.environ["PGMLOPS_TRAIN_THREADS"] = str(threads)  # inherited by the spawned workers
    with WorkerPool(url, ["tune_trial", "tune", "train"], workers, poll_interval=1.0, log_level=logging.WARNING):
        _wait_listening(conn, workers)
        warmed = _warm_pool(conn, listen, data["bench_warmup"]["id"], workers)
        job_id, study_id, t_call = _tune(conn, data["bench_tune"]["id"], n_trials)
        t_seen = _wait_job(listen, conn, job_id)
    slots = _study_jobs(conn, study_id)
    tune_job = _job_row(conn, job_id)
    progress_ = conn.execute("select ml.tuning_study(%s)", (study_id,)).fetchone()[0]  # type: ignore[index]
    if len(slots) != n_trials or any(s["status"] != "succeeded" or s["attempts"] != 1 for s in slots):
        raise RuntimeError(f"study {study_id}: slots {[(s['status'], s['attempts']) for s in slots]}")
    finished = int(progress_["complete"]) + int(progress_["pruned"])
    if finished != n_trials:
        raise RuntimeError(f"study {study_id}: {finished} finished trials of {n_trials}: {progress_}")
    trials = conn.execute(
        "select trial_number, status, hyperparams, train_seconds, metrics ->> 'roc_auc' from ml.runs "
        "where study_id = %s and trial_number is not null order by trial_number", (study_id,)).fetchall()
    created = min(s["created"] for s in slots)
    phase = max(s["finished"] for s in slots) - created
    busy = sum(s["finished"] - s["started"] for s in slots)
    fit_seconds = sum(float(t[3] or 0.0) for t in trials)
    per_worker: dict[str, int] = {}
    for s in slots:
        per_worker[s["locked_by"]] = per_worker.get(s["locked_by"], 0) + 1
    return {
        "workers": workers, "workers_warmed": warmed, "study_id": study_id, "n_trials": n_trials,
        "finished_trials": finished, "trial_phase_s": round(phase, 3),
        "trials_per_minute": round(finished / (phase / 60.0), 2),
        "first_claim_after_s": round(min(s["started"] for s in slots) - created, 3),
        "tune_to_succeeded_s": round(t_seen - t_call, 3),
        "refit_s": round(tune_job["finished"] - tune_job["started"], 3),
        "slot_seconds": summarize([s["finished"] - s["started"] for s in slots]),
        "trial_fit_seconds_sum": round(fit_seconds, 3), "slot_seconds_sum": round(busy, 3),
        "fit_share_of_slots": round(fit_seconds / busy, 4),
        "utilization": round(busy / (workers * phase), 4),
        "slots_per_worker": sorted(per_worker.values()),
        "best_value": progress_.get("best_value"),
        "trials": [{"number": t[0], "status": t[1], "hyperparams": t[2], "train_seconds": t[3],
                    "roc_auc": None if t[4] is None else float(t[4])} for t in trials],
    }


def run_tuning(url: str, conn: Conn, data: dict[str, Any], worker_counts: Sequence[int], n_trials: int,
               repeats: int, threads: int, prog: Progress) -> dict[str, Any]:
    task = prog.add_task("tuning", total=len(worker_counts) * repeats)
    runs: list[dict[str, Any]] = []
    with psycopg.connect(url, autocommit=True) as listen:
        listen.execute("listen ml_events")
        for rep in range(repeats):
            order = list(worker_counts) if rep % 2 == 0 else list(reversed(worker_counts))
            for workers in order:
                prog.update(task, description=f"tuning: {n_trials} trials on {workers} worker"
                                              f"{'s' if workers > 1 else ''} (run {rep + 1}/{repeats})")
                runs.append({"repeat": rep, **_tuning_run(url, conn, listen, data, workers, n_trials, threads)})
                prog.advance(task)
    summary: dict[str, Any] = {}
    for w in worker_counts:
        mine = [r for r in runs if r["workers"] == w]
        summary[str(w)] = {
            "trials_per_minute_median": round(median([r["trials_per_minute"] for r in mine]), 2),
            "trials_per_minute_runs": [r["trials_per_minute"] for r in mine],
            "trial_phase_s_median": round(median([r["trial_phase_s"] for r in mine]), 3),
            "tune_to_succeeded_s_median": round(median([r["tune_to_succeeded_s"] for r in mine]), 3),
            "refit_s_median": round(median([r["refit_s"] for r in mine]), 3),
            "slot_seconds_mean": round(median([r["slot_seconds"]["mean"] for r in mine]), 3),
            "fit_share_of_slots": round(median([r["fit_share_of_slots"] for r in mine]), 4),
            "trial_fit_seconds_mean": round(median([r["trial_fit_seconds_sum"] / r["n_trials"] for r in mine]), 3),
            "utilization": round(median([r["utilization"] for r in mine]), 4),
        }
    lo, hi = min(worker_counts), max(worker_counts)
    scaling = None
    if lo != hi:
        scaling = round(summary[str(hi)]["trials_per_minute_median"] / summary[str(lo)]["trials_per_minute_median"], 3)
    prog.update(task, description=f"tuning: {summary[str(lo)]['trials_per_minute_median']:.1f} trials/min on {lo}, "
                                  f"{summary[str(hi)]['trials_per_minute_median']:.1f} on {hi}")
    return {"n_trials": n_trials, "rows": data["bench_tune"]["rows"], "search_space": SEARCH_SPACE,
            "options": TUNE_OPTIONS, "threads": threads,
            "summary": summary, "scaling": scaling, "runs": runs}


# -- main ----------------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.training", description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--database-url", help="server to use (default: PGMLOPS_BENCH_DATABASE_URL, "
                    "DATABASE_URL, else the embedded PostgreSQL); a fresh database is made on it")
    ap.add_argument("--rows", type=int, help="rows of the overhead training set (default 100,000; --quick 20,000)")
    ap.add_argument("--tune-rows", type=int, help="rows of the tuning training set (default 20,000; --quick 5,000)")
    ap.add_argument("--trials", type=int, help="trials per study (default 16; --quick 6)")
    ap.add_argument("--max-iter", type=int, default=200, help="boosting iterations of the overhead fit (default 200)")
    ap.add_argument("--repeats", type=int, help="runs of each overhead side (curve off, curve on, bare), in a rotating "
                    "order (default 5; --quick 1)")
    ap.add_argument("--tune-repeats", type=int, help="studies per worker count (default 3; --quick 1)")
    ap.add_argument("--workers", type=_int_list, default=[1, 2], help="worker counts for tuning (default 1,2)")
    ap.add_argument("--threads", type=int, default=1, help="PGMLOPS_TRAIN_THREADS for every fit (default 1)")
    ap.add_argument("--parts", default="overhead,tuning", help="which parts to run (default both)")
    ap.add_argument("--quick", action="store_true", help="small sizes for a fast sanity run")
    ap.add_argument("--output", default="training", help="results name: bench/results/<name>.json")
    args = ap.parse_args(argv)
    args.rows = args.rows or (20_000 if args.quick else 100_000)
    args.tune_rows = args.tune_rows or (5_000 if args.quick else 20_000)
    args.trials = args.trials or (6 if args.quick else 16)
    args.repeats = args.repeats or (1 if args.quick else 5)
    args.tune_repeats = args.tune_repeats or (1 if args.quick else 3)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(args.parts) - {"overhead", "tuning"}
    if unknown:
        ap.error(f"--parts: unknown {sorted(unknown)} (overhead, tuning)")
    if args.tune_rows > args.rows:
        ap.error("--tune-rows: at most --rows (the tuning set is the first rows of the same spine)")
    return args


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}% of platform" if whole else ""


def build_goals(results: dict[str, Any]) -> list[Goal]:
    goals: list[Goal] = []
    if ov := results.get("overhead"):
        off, on, b = ov["curve_off"], ov["curve_on"], ov["bare_seconds_median"]
        p = off["platform_seconds_median"]
        reps = len(ov["bare"])
        goals += [
            Goal("overhead: platform / bare, curve off", off["ratio_median"], "x", OVERHEAD_GOAL, lower_is_better=True,
                 digits=3, note=f"ml.train of {ov['rows']:,} rows (default options), warm worker; median of {reps} "
                                f"per-repeat ratios ({_runs_text(off['ratio_per_repeat'], 3)}); "
                                f"ROC AUC {ov['roc_auc']:.4f} on every run"),
            Goal("overhead: platform / bare, curve on", on["ratio_median"], "x", digits=3,
                 note=f"learning_curve: true ({on['curve_steps']} steps logged); median of {reps} "
                      f"({_runs_text(on['ratio_per_repeat'], 3)})"),
            Goal("  platform, curve off: enqueue → succeeded", p, "s", digits=2,
                 note=f"median of {reps} ({_runs_text([r['seconds'] for r in off['runs']])})"),
            Goal("  platform, curve on: enqueue → succeeded", on["platform_seconds_median"], "s", digits=2,
                 note=f"median of {reps} ({_runs_text([r['seconds'] for r in on['runs']])})"),
            Goal("  bare scikit-learn", b, "s", digits=2,
                 note=f"load by hand, same split, pipeline, estimator; median of {reps} "
                      f"({_runs_text([r['seconds'] for r in ov['bare']])})"),
        ]
        bd, bd_on = off["breakdown_median"], on["breakdown_median"]
        labels = [
            ("enqueue_to_claim", "ml.train, NOTIFY, claim"),
            ("dataset_load", "COPY of the training set into pandas"),
            ("labels_and_split", "label checks, stratified split"),
            ("fit", "preprocessing + boosting (ml.runs.train_seconds)"),
            ("per_step_evaluation", "staged predictions, metric at ≤ 25 steps"),
            ("test_metrics", "8 metrics from one predict_proba on the test rows"),
            ("artifact", "skops dump (deflated) + allowlist check"),
            ("latency_probe", "1 + ≤ 5 single-row predictions"),
            ("fit_other", "pipeline, signature, threadpool limits"),
            ("record_and_register", "run steps, finish_run, model version"),
            ("complete_job", "ml.complete_job"),
            ("commit", "the job's transaction commits"),
        ]
        for key, note in labels:
            goals.append(Goal(f"  curve off: {key.replace('_', ' ')}", bd[key], "s", digits=3,
                              note=f"{note}; {_pct(bd[key], p)}; curve on {bd_on[key]:.3f} s"))
        other = bd["claim_to_handler"] + bd["handler_other"] + bd["event_to_client"]
        other_on = bd_on["claim_to_handler"] + bd_on["handler_other"] + bd_on["event_to_client"]
        goals.append(Goal("  curve off: rest", other, "s", digits=3,
                          note=f"project, start_run, event to this client; {_pct(other, p)}; curve on {other_on:.3f} s"))
        bb = ov["bare_breakdown_median"]
        goals.append(Goal("  bare: load / fit / predict + AUC", None,
                          note=f"{bb['load_s']:.3f} / {bb['fit_s']:.3f} / {bb['predict_metric_s']:.3f} s "
                               f"(split {bb['split_s']:.3f} s)"))
        cold = ov["cold"]
        goals += [
            Goal("overhead: cold platform (first job)", cold["seconds"], "s", digits=2,
                 note=f"fresh worker, first job pays imports: load {cold['breakdown']['dataset_load']:.2f} s, "
                      f"artifact {cold['breakdown']['artifact']:.2f} s, fit {cold['breakdown']['fit']:.2f} s"),
            Goal("overhead: cold bare (fresh python)", ov["cold_bare"]["seconds"], "s", digits=2,
                 note=f"interpreter + imports {ov['cold_bare']['startup_and_imports_s']:.2f} s"),
            Goal("overhead: cold platform / cold bare", ov["cold_ratio"], "x", digits=3),
        ]
    if tu := results.get("tuning"):
        s = tu["summary"]
        for w, v in s.items():
            goals.append(Goal(f"tuning: {w} worker{'s' if w != '1' else ''}", v["trials_per_minute_median"], "trials/min",
                              digits=1, note=f"{tu['n_trials']} trials on {tu['rows']:,} rows in "
                                             f"{v['trial_phase_s_median']:.1f} s; busy {100 * v['utilization']:.0f}%, "
                                             f"fit {100 * v['fit_share_of_slots']:.0f}% of slot time; "
                                             f"runs {_runs_text(v['trials_per_minute_runs'], 1)}"))
        if tu["scaling"] is not None:
            ws = sorted(s, key=int)
            goals.append(Goal(f"tuning: {ws[-1]} workers / {ws[0]}", tu["scaling"], "x", SCALING_GOAL, digits=2,
                              note="fit per trial " + " / ".join(
                                  f"{s[w]['trial_fit_seconds_mean']:.2f} s ({w}w)" for w in ws)
                                   + f"; {os.cpu_count()} CPUs shared with the server"))
        for w, v in s.items():
            goals.append(Goal(f"  tuning: {w}w ml.tune → succeeded", v["tune_to_succeeded_s_median"], "s", digits=1,
                              note=f"trials, then the refit on the whole split ({v['refit_s_median']:.1f} s)"))
    return goals


def _runs_text(values: Sequence[float], digits: int = 2) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server = resolve_bench_url(args.database_url)
    os.environ["PGMLOPS_TRAIN_THREADS"] = str(args.threads)
    hyperparams = {"max_iter": args.max_iter, "learning_rate": 0.1, "max_leaf_nodes": 31, "early_stopping": False}
    params = {"rows": args.rows, "tune_rows": args.tune_rows, "trials": args.trials, "repeats": args.repeats,
              "tune_repeats": args.tune_repeats, "workers": args.workers, "threads": args.threads,
              "hyperparams": hyperparams, "parts": args.parts, "quick": args.quick, "server": redact(server),
              "load_average_at_start": os.getloadavg()}
    console.print(f"[bold]pgmlops training benchmark[/] on {redact(server)}: overhead on {args.rows:,} rows × "
                  f"{args.repeats}, tuning {args.trials} trials on {args.tune_rows:,} rows with "
                  f"{'/'.join(map(str, args.workers))} workers × {args.tune_repeats}, {args.threads} thread(s) per fit")
    t_start = time.perf_counter()
    results: dict[str, Any] = {}
    with fresh_database(server) as url, psycopg.connect(url, autocommit=True) as conn, \
            tempfile.TemporaryDirectory(prefix="pgmlops_bench_") as tmp:
        make_tenant(conn, "bench")
        info = machine_info(conn)
        with progress() as prog:
            results["data"] = build_datasets(conn, args.rows, args.tune_rows, prog)
            conn.execute("select ml.create_project(%s, 'classification', %s)", (PROJECT, LABEL))
            if "overhead" in args.parts:
                results["overhead"] = run_overhead(url, conn, results["data"], hyperparams, args.repeats, args.threads,
                                                   Path(tmp), prog)
            if "tuning" in args.parts:
                results["tuning"] = run_tuning(url, conn, results["data"], args.workers, args.trials, args.tune_repeats,
                                               args.threads, prog)
    elapsed = time.perf_counter() - t_start
    params["load_average_at_end"] = os.getloadavg()

    goals = build_goals(results)
    settings = info["server_settings"]
    console.print(results_table(
        f"pgmlops training ({info['cpu_count']} CPUs, PostgreSQL {settings.get('server_version')}, "
        f"{args.threads} thread(s) per fit, load average {params['load_average_at_start'][0]:.1f} → "
        f"{params['load_average_at_end'][0]:.1f})", goals))
    path = write_results(args.output, {
        "machine": info, "parameters": params, "elapsed_s": round(elapsed, 1), "results": results,
        "goals": [g.as_dict() for g in goals]})
    console.print(f"results: {path} ({elapsed:.0f} s)")
    return 0 if all(g.status != "MISS" for g in goals) else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--bare-child":
        sys.exit(_bare_child(sys.argv[2]))
    sys.exit(main())
