"""Drift report benchmark: ml.drift_report (exact and fast modes) against Evidently's
DataDriftPreset on the same data, side by side in one run (issue 12, "Benchmark").

    python -m bench.drift [--database-url URL] [--reference-rows N] [--current-rows N] [--quick]

Scenario. 20 features (``bench/_drift_data.py``: 12 numeric of various shapes, one with missing
values and one discrete with 10 values; 8 categorical with 3 to 50 categories), drift injected in
11 of them (shifts, scale changes, mixture and category mix changes) and small changes below
the thresholds in others. The reference (``--reference-rows``, 100,000) is a training set: a
feature group ingested with ``pgmlops.features.ingest`` and ``ml.create_training_set`` over it
(profiled as it is built), a model version registered on it (not compiled: the outputs are not
profiled, so the reports test the 20 inputs, as Evidently does). The current window
(``--current-rows``, 1,000,000) is logged predictions of that version: rows COPYed straight into
``ml.predictions`` (features as ``ml.predict`` logs them, spread evenly over 24 whole hours).
Setup is not measured.

Measured, in this order, on one server:

1. Evidently 0.7.23 in a process of its own (``bench/_drift_evidently.py``): load both tables
   out of PostgreSQL (``COPY (select typed columns) TO STDOUT`` as CSV read by
   ``pandas.read_csv(engine="pyarrow")``), build the datasets, run ``DataDriftPreset``; its time
   from the first query to the decisions (imports not counted), and its peak RSS.
2. ``ml_private.rollup_window_counts(project)`` over the window not rolled up yet: the window's
   counts on the reference's bins, the maintenance's job (the amortized cost of fast mode; every
   report also rolls up first whatever is not, for its regime section), timed on its own.
3. ``ml.drift_report(..., '{"mode": "fast"}')`` through ``pgmlops.monitoring.drift_report`` on a
   new connection: wall time, and the backend's memory from /proc (VmHWM, peak RssAnon sampled
   every 20 ms, with its parallel workers').
4. ``ml.drift_report(..., '{"mode": "exact"}')``, the counts kept up to date: wall time, memory.
5. The exact report again, "cold": the project's counts and watermark deleted first, so it rolls
   the window up itself.
6. (not with --quick) one more report of each mode with track_functions = all: time by function.

Then the decisions per feature of the three, whether they agree, and the dataset verdicts.
Goals: fast at least 100x faster than Evidently, exact at least 2x; same decisions.

Results: a table against the goals and bench/results/drift.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg.types.json import Jsonb

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
from bench._drift_data import CATEGORICAL, DRIFT, EXPECTED_DRIFTED, FEATURES, NUMERIC, make_frame

Conn = psycopg.Connection[Any]

PROJECT = "bench_drift"
GROUP = "drift_features"
LABEL = "label"
BASE = datetime(2025, 1, 1, tzinfo=UTC)
# Evidently's names of the tests, by ours.
EVIDENTLY_TESTS = {"ks": "K-S p_value", "chi2": "chi-square p_value", "z": "Z-test p_value",
                   "wasserstein_normed": "Wasserstein distance (normed)", "jensen_shannon": "Jensen-Shannon distance"}
MIB = 1 / 1024  # KiB -> MiB


# -- setup ---------------------------------------------------------------------------------------


def setup_reference(conn: Conn, rows: int, seed: int) -> dict[str, Any]:
    """Tenant, feature group, training set of ``rows`` rows (profiled as built), project and a
    registered model version on it; returns their ids and the setup's timings."""
    from pgmlops import features

    timings: dict[str, float] = {}
    tenant = make_tenant(conn, "bench drift")
    data = make_frame(rows, seed, drifted=False)
    keys = np.array([f"e{i:07d}" for i in range(rows)])
    t0 = time.perf_counter()
    schema = [{"name": f, "dtype": "float"} for f in NUMERIC] + [{"name": f, "dtype": "text"} for f in CATEGORICAL]
    features.create_group(conn, GROUP, "customer", schema, join_key="customer_id", description="bench.drift reference")
    group_rows = data.copy()
    group_rows.insert(0, "event_time", BASE.isoformat())
    group_rows.insert(0, "customer_id", keys)
    result = features.ingest(conn, GROUP, group_rows, source_name="bench.drift")
    if result.written != rows:
        raise RuntimeError(f"ingestion wrote {result.written} of {rows} rows")
    timings["ingest_reference"] = time.perf_counter() - t0
    rng = np.random.default_rng(seed + 100)
    spine = pd.DataFrame({"customer_id": keys, "event_time": pd.Timestamp(BASE + timedelta(hours=1)),
                          LABEL: (data["num_00"].to_numpy() + rng.normal(0, 1, rows) > 0).astype(np.int64)})
    t0 = time.perf_counter()
    dataset = str(features.create_training_set(conn, "bench_drift_set", spine, [f"{GROUP}:{f}" for f in FEATURES],
                                               label=LABEL))
    timings["training_set_with_profile"] = time.perf_counter() - t0
    row = conn.execute("select table_name from ml.datasets where id = %s", (dataset,)).fetchone()
    assert row is not None
    table = str(row[0])
    project_id = str(conn.execute("select ml.create_project(%s, 'classification', %s)", (PROJECT, LABEL)).fetchone()[0])  # type: ignore[index]
    run = str(conn.execute("select ml.start_run(%s, null, 'logistic_regression', '{}', '{}', %s, '{}')",
                           (project_id, dataset)).fetchone()[0])  # type: ignore[index]
    conn.execute("select ml.finish_run(%s, 'succeeded', '{}', 1.0, 100, 0.1)", (run,))
    artifact = f"bench.drift artifact of {run}".encode()
    signature = {"inputs": schema, "outputs": [], "task": "classification", "classes": [0, 1]}
    registered = conn.execute("select ml.register_model_version(%s, %s, %s, 'skops', %s, %s, null, '{}')",
                              (run, PROJECT, artifact, hashlib.sha256(artifact).hexdigest(), Jsonb(signature))).fetchone()
    assert registered is not None
    version_id = str(registered[0]["model_version_id"])
    profiled = conn.execute("select count(*) from ml.reference_profiles where model_version_id = %s", (version_id,)).fetchone()
    return {"tenant": tenant, "dataset_id": dataset, "reference_table": table, "project_id": project_id,
            "model_version_id": version_id, "model": f"{PROJECT}@{registered[0]['version']}",
            "profiles": profiled[0] if profiled else 0, "timings": timings}


def log_predictions(conn: Conn, ids: dict[str, Any], rows: int, seed: int, start: datetime, end: datetime,
                    chunk: int = 100_000) -> dict[str, Any]:
    """COPY ``rows`` drifted rows into ml.predictions as ``ml.predict`` logs them (features jsonb,
    prediction, score), evenly spread over ``[start, end)``; then ANALYZE."""
    t0 = time.perf_counter()
    span_us = int((end - start).total_seconds() * 1e6)
    prefix = f"{ids['tenant']}\t{ids['project_id']}\t{ids['model_version_id']}\ta\t"
    statement = ("copy ml.predictions (tenant_id, project_id, model_version_id, arm, features, prediction, score, "
                 "created_at) from stdin")
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for first in range(0, rows, chunk):
            n = min(chunk, rows - first)
            frame = make_frame(n, seed + first, drifted=True)
            lines = frame.to_json(orient="records", lines=True, double_precision=15).splitlines()
            score = np.round(1 / (1 + np.exp(-frame["num_00"].to_numpy())), 6)
            offsets = (np.arange(first, first + n, dtype=np.int64) * span_us) // rows
            times = (np.datetime64(start.replace(tzinfo=None), "us") + offsets.astype("timedelta64[us]")).astype(str)
            body = "".join(f"{prefix}{js}\t{int(s >= 0.5)}\t{s}\t{t}+00\n" for js, s, t in zip(lines, score, times, strict=True))
            copy.write(body.encode())
    conn.execute("analyze ml.predictions")
    return {"rows": rows, "seconds": time.perf_counter() - t0,
            "how": "COPY (text) of prepared rows straight into ml.predictions, then ANALYZE"}


# -- the contenders ------------------------------------------------------------------------------


def run_evidently(url: str, ids: dict[str, Any], start: datetime, end: datetime) -> dict[str, Any]:
    spec = {"url": url, "tenant": ids["tenant"], "project_id": ids["project_id"], "model_version_id": ids["model_version_id"],
            "reference_table": ids["reference_table"], "window_start": start.isoformat(), "window_end": end.isoformat(),
            "numeric": NUMERIC, "categorical": CATEGORICAL}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bench._drift_evidently", json.dumps(spec)], capture_output=True,
                          text=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"Evidently's process failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = wall
    return out


class BackendMemory:
    """Samples a backend's /proc/<pid>/status (VmRSS, RssAnon, RssShmem) every 20 ms while in use,
    and those of its parallel workers (pg_stat_activity.leader_pid, looked up on a connection of
    its own every 100 ms); VmHWM at the end. ``available`` is False when /proc of that pid cannot
    be read (a server elsewhere): the memory is then unknown."""

    def __init__(self, pid: int, url: str) -> None:
        self.pid = pid
        self.url = url
        self.peak: dict[str, int] = {}
        self.peak_anon_with_workers = 0
        self.workers_seen: set[int] = set()
        self.before = _proc_status(pid)
        self.available = self.before is not None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        workers: list[int] = []
        with psycopg.connect(self.url, autocommit=True) as conn:
            tick = 0
            while not self._stop.wait(0.02):
                if tick % 5 == 0:
                    workers = [r[0] for r in conn.execute("select pid from pg_stat_activity where leader_pid = %s",
                                                          (self.pid,)).fetchall()]
                    self.workers_seen.update(workers)
                tick += 1
                now = _proc_status(self.pid)
                if now is None:
                    return
                for k, v in now.items():
                    self.peak[k] = max(self.peak.get(k, 0), v)
                anon = now.get("RssAnon", 0) + sum((_proc_status(w) or {}).get("RssAnon", 0) for w in workers)
                self.peak_anon_with_workers = max(self.peak_anon_with_workers, anon)

    def __enter__(self) -> BackendMemory:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.available:
            self._thread.join()
            final = _proc_status(self.pid) or {}
            for k, v in final.items():
                self.peak[k] = max(self.peak.get(k, 0), v)

    def as_dict(self) -> dict[str, Any]:
        if not self.available:
            return {"available": False, "note": "the backend's /proc is not readable: unknown"}
        return {"available": True, "vmhwm_mib": round(self.peak.get("VmHWM", 0) * MIB, 1),
                "peak_rss_anon_mib": round(self.peak.get("RssAnon", 0) * MIB, 1),
                "peak_rss_shmem_mib": round(self.peak.get("RssShmem", 0) * MIB, 1),
                "peak_rss_anon_with_parallel_workers_mib": round(self.peak_anon_with_workers * MIB, 1),
                "parallel_workers_seen": len(self.workers_seen),
                "before": {k: round(v * MIB, 1) for k, v in (self.before or {}).items()}}


def _proc_status(pid: int) -> dict[str, int] | None:
    """VmRSS, RssAnon, RssShmem and VmHWM (KiB) of a process on this machine; None if unreadable."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            return {k: int(v.split()[0]) for k, _, v in (line.partition(":") for line in fh)
                    if k in ("VmRSS", "RssAnon", "RssShmem", "VmHWM")}
    except OSError:
        return None


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of the whole machine from /proc/stat; None elsewhere."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


def busy_cores(fn: Any, *args: Any) -> tuple[Any, float | None]:
    """``fn(*args)`` and how many cores the whole machine kept busy meanwhile (this benchmark's
    own work included: about one core; the rest is other load on a shared machine)."""
    before = _cpu_jiffies()
    out = fn(*args)
    after = _cpu_jiffies()
    if before is None or after is None or after[1] == before[1]:
        return out, None
    return out, round((after[0] - before[0]) / (after[1] - before[1]) * (os.cpu_count() or 1), 2)


def _tenant_conn(url: str, tenant: str) -> Conn:
    conn = psycopg.connect(url, autocommit=True)
    conn.execute("select set_config('pgmlops.tenant_id', %s, false)", (tenant,))
    return conn


def run_report(url: str, ids: dict[str, Any], start: datetime, end: datetime, mode: str) -> dict[str, Any]:
    """``pgmlops.monitoring.drift_report`` on a new connection acting for the tenant (a service
    caller): its wall time, the backend's memory, and the document's decisions."""
    from pgmlops import monitoring

    with _tenant_conn(url, ids["tenant"]) as conn:
        pid = int(conn.execute("select pg_backend_pid()").fetchone()[0])  # type: ignore[index]
        options = {"mode": mode, "model": ids["model"], "multivariate": False}
        with BackendMemory(pid, url) as memory:
            t0 = time.perf_counter()
            report = monitoring.drift_report(conn, PROJECT, start, end, options)
            seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        doc = monitoring.drift_report_document(conn, report)
        doc_seconds = time.perf_counter() - t0
    inputs = {r["feature"]: {"test": r["test"], "statistic": r["statistic"], "p_value": r["p_value"],
                             "threshold": r["threshold"], "drifted": r["drifted"], "row_count": r["row_count"],
                             "nulls": r["nulls"]}
              for r in doc["results"] if r["role"] == "input"}
    return {"mode": mode, "report_id": str(report), "seconds": seconds, "document_seconds": doc_seconds,
            "backend_memory": memory.as_dict(), "row_count": doc["row_count"], "reference_count": doc.get("reference_count"),
            "drift_share": doc["drift_share"], "dataset_drift": doc["dataset_drift"], "status": doc.get("status"),
            "approximation": (doc.get("summary") or {}).get("drift", {}).get("approximation"), "inputs": inputs}


def function_profile(url: str, ids: dict[str, Any], start: datetime, end: datetime, mode: str,
                     top: int = 10) -> dict[str, Any]:
    """One more, untimed report with ``track_functions = all``: where its time goes, by function
    (self and total milliseconds, calls), from pg_stat_user_functions before and after (this
    database is the benchmark's own). Functions inlined by the planner are not counted."""
    query = ("select p.oid::regprocedure::text, s.calls, s.self_time, s.total_time from pg_stat_user_functions s "
             "join pg_proc p on p.oid = s.funcid")
    with psycopg.connect(url, autocommit=True) as admin, _tenant_conn(url, ids["tenant"]) as conn:
        conn.execute("set track_functions = 'all'")
        admin.execute("select pg_stat_clear_snapshot()")
        before = {r[0]: r[1:] for r in admin.execute(query).fetchall()}
        from pgmlops import monitoring

        t0 = time.perf_counter()
        monitoring.drift_report(conn, PROJECT, start, end, {"mode": mode, "model": ids["model"], "multivariate": False})
        seconds = time.perf_counter() - t0
        conn.execute("select pg_stat_force_next_flush()")
        conn.execute("select 1")
        time.sleep(0.5)
        admin.execute("select pg_stat_clear_snapshot()")
        after = admin.execute(query).fetchall()
    rows = []
    for name, calls, self_ms, total_ms in after:
        c0, s0, t0_ = before.get(name, (0, 0.0, 0.0))
        if calls - c0 > 0:
            rows.append({"function": name, "calls": calls - c0, "self_ms": round(self_ms - s0, 1),
                         "total_ms": round(total_ms - t0_, 1)})
    rows.sort(key=lambda r: -r["self_ms"])
    return {"mode": mode, "seconds_with_tracking": seconds, "top_by_self_time": rows[:top]}


def reset_rollup(url: str, project_id: str) -> dict[str, Any]:
    """Deletes the project's ml.window_counts and its ml.window_watermarks row (as the server's
    superuser): the state before any rollup, for the cold exact report."""
    with psycopg.connect(url, autocommit=True) as conn:
        counts = conn.execute("delete from ml.window_counts where project_id = %s", (project_id,)).rowcount
        marks = conn.execute("delete from ml.window_watermarks where project_id = %s", (project_id,)).rowcount
        conn.execute("analyze ml.window_counts")
    return {"window_counts_deleted": counts, "watermarks_deleted": marks}


def run_rollup(url: str, project_id: str) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        pid = int(conn.execute("select pg_backend_pid()").fetchone()[0])  # type: ignore[index]
        with BackendMemory(pid, url) as memory:
            t0 = time.perf_counter()
            row = conn.execute("select ml_private.rollup_window_counts(%s)", (project_id,)).fetchone()
            seconds = time.perf_counter() - t0
        counts = conn.execute("select count(*) from ml.window_counts where project_id = %s", (project_id,)).fetchone()
    return {"seconds": seconds, "returned": row[0] if row else None, "window_count_rows": counts[0] if counts else None,
            "backend_memory": memory.as_dict()}


# -- comparison ----------------------------------------------------------------------------------


def compare(evidently: dict[str, Any], exact: dict[str, Any], fast: dict[str, Any]) -> dict[str, Any]:
    """Per feature: each side's test, value and decision; the agreements; the dataset verdicts."""
    ev = evidently["decisions"]
    per: list[dict[str, Any]] = []
    agree = {"exact_vs_evidently": 0, "fast_vs_exact": 0, "fast_vs_evidently": 0, "same_test_as_evidently": 0}
    for f in FEATURES:
        e, x, q = ev.get(f), exact["inputs"].get(f), fast["inputs"].get(f)
        row = {"feature": f, "shape": DRIFT[f][0], "injected": DRIFT[f][1], "expected_drift": f in EXPECTED_DRIFTED,
               "evidently": e, "exact": x, "fast": q}
        if e and x:
            agree["exact_vs_evidently"] += e["drifted"] == x["drifted"]
            agree["same_test_as_evidently"] += EVIDENTLY_TESTS.get(x["test"]) == e["test"]
        if x and q:
            agree["fast_vs_exact"] += x["drifted"] == q["drifted"]
        if e and q:
            agree["fast_vs_evidently"] += e["drifted"] == q["drifted"]
        if x and q and x["statistic"] and q["statistic"] is not None:
            row["fast_over_exact_statistic"] = q["statistic"] / x["statistic"]
        per.append(row)
    dataset = {"evidently": ev["__dataset__"], "exact": {"share": exact["drift_share"], "drifted": exact["dataset_drift"]},
               "fast": {"share": fast["drift_share"], "drifted": fast["dataset_drift"]}}
    verdicts = {dataset["evidently"]["drifted"], dataset["exact"]["drifted"], dataset["fast"]["drifted"]}
    return {"features": per, "agreements": agree, "of": len(FEATURES), "dataset": dataset,
            "dataset_verdicts_agree": len(verdicts) == 1}


def decisions_table(comparison: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title="Decisions per feature (drifted = x; statistic: normed Wasserstein or Jensen-Shannon)",
                  title_justify="left")
    for col in ("feature", "injected", "Evidently", "exact", "fast", "agree"):
        table.add_column(col, justify="left" if col in ("feature", "injected") else "right")

    def cell(side: dict[str, Any] | None, key: str) -> str:
        if not side:
            return "n/a"
        return f"{side[key]:.4f} {'x' if side['drifted'] else '-'}"

    for r in comparison["features"]:
        sides = [r["evidently"], r["exact"], r["fast"]]
        same = len({s["drifted"] for s in sides if s}) == 1 and all(sides)
        table.add_row(r["feature"], r["injected"], cell(r["evidently"], "value"), cell(r["exact"], "statistic"),
                      cell(r["fast"], "statistic"), "yes" if same else "[bold red]NO[/]")
    d = comparison["dataset"]
    table.add_row("dataset", "share >= 0.5", f"{d['evidently']['share']:.2f} {'x' if d['evidently']['drifted'] else '-'}",
                  f"{d['exact']['share']:.2f} {'x' if d['exact']['drifted'] else '-'}",
                  f"{d['fast']['share']:.2f} {'x' if d['fast']['drifted'] else '-'}",
                  "yes" if comparison["dataset_verdicts_agree"] else "[bold red]NO[/]")
    return table


def build_goals(r: dict[str, Any]) -> list[Goal]:
    ev, exact, fast, rollup = r["evidently"], r["exact_cold"], r["fast"], r["rollup"]
    warm = r["exact_warm"]
    ev_s = ev["seconds"]["load_and_report"]
    comp = r["comparison"]
    n = comp["of"]

    def busy(key: str) -> str:
        cores = r.get(key + "_busy_cores")
        return "" if cores is None else f"machine busy {cores:.1f} of {os.cpu_count()} cores"

    def mem(entry: dict[str, Any]) -> tuple[float | None, str]:
        m = entry["backend_memory"]
        if not m.get("available"):
            return None, "unknown: the backend's /proc is not readable"
        workers = (f"; with {m['parallel_workers_seen']} parallel workers {m['peak_rss_anon_with_parallel_workers_mib']:,.0f} MiB"
                   if m["parallel_workers_seen"] else "; no parallel workers")
        return m["vmhwm_mib"], (f"backend VmHWM (counts the shared buffers it touched); private (RssAnon) peak "
                                f"{m['peak_rss_anon_mib']:,.0f} MiB{workers}")

    goals = [
        Goal("Evidently: load + DataDriftPreset", ev_s, "s",
             note=f"load {ev['seconds']['load']:.1f} s + report {ev['seconds']['report']:.1f} s; imports "
                  f"{ev['seconds']['import']:.1f} s not counted; {busy('evidently')}"),
        Goal("exact report (counts kept up to date)", warm["seconds"], "s", digits=2, note=busy("exact_warm")),
        Goal("exact report (cold: rolls the window up first)", exact["seconds"], "s", digits=2, note=busy("exact_cold")),
    ]
    goals += [
        Goal("rollup of the window (amortized, maintenance)", rollup["seconds"], "s", digits=2,
             note=f"{rollup['window_count_rows']:,} ml.window_counts rows; {busy('rollup')}"),
        Goal("fast report", fast["seconds"], "s", digits=3, note=busy("fast")),
        Goal("speedup fast: Evidently / fast", ev_s / fast["seconds"], "x", target=100),
        Goal("speedup exact (counts kept up to date): Evidently / exact", ev_s / warm["seconds"], "x", target=2, digits=2),
        Goal("speedup exact (cold): Evidently / exact", ev_s / exact["seconds"], "x", target=2, digits=2),
    ]
    goals.append(Goal("fast incl. its rollup: Evidently / (rollup + fast)", ev_s / (rollup["seconds"] + fast["seconds"]),
                      "x", digits=2, note="if nothing kept the counts up to date"))
    goals.append(Goal("Evidently peak memory (process max RSS)", ev["peak_rss_kib"] * MIB, "MiB", digits=0,
                      note=f"DataFrames {ev['frame_mib']['reference'] + ev['frame_mib']['current']:,.0f} MiB"))
    for label, entry in (("exact (kept up to date)", warm), ("exact (cold)", exact), ("fast", fast)):
        value, note = mem(entry)
        goals.append(Goal(f"{label} peak memory (server backend)", value, "MiB", digits=0, note=note))
    agree = comp["agreements"]
    goals += [
        Goal("decisions: exact = Evidently", agree["exact_vs_evidently"], f"/ {n}", target=n, digits=0,
             note=f"same test chosen on {agree['same_test_as_evidently']} of {n}"),
        Goal("decisions: fast = exact", agree["fast_vs_exact"], f"/ {n}", target=n, digits=0),
        Goal("decisions: fast = Evidently", agree["fast_vs_evidently"], f"/ {n}", target=n, digits=0),
        Goal("dataset verdicts agree (all three)", 1.0 if comp["dataset_verdicts_agree"] else 0.0, "", target=1, digits=0,
             note=f"Evidently {comp['dataset']['evidently']['drifted']}, exact {comp['dataset']['exact']['drifted']}, "
                  f"fast {comp['dataset']['fast']['drifted']}"),
    ]
    return goals


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.drift", description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--database-url", help="the server (default: PGMLOPS_BENCH_DATABASE_URL, DATABASE_URL, embedded)")
    ap.add_argument("--existing-database", action="store_true",
                    help="use the database --database-url names (migrated) as it is, instead of a fresh one")
    ap.add_argument("--database-prefix", default="pgmlops_bench",
                    help="the fresh database is <prefix>_<pid> (default pgmlops_bench)")
    ap.add_argument("--keep-database", action="store_true", help="do not drop the fresh database at the end")
    ap.add_argument("--reference-rows", type=int, help="rows of the reference training set (100,000; --quick 2,000)")
    ap.add_argument("--current-rows", type=int, help="logged predictions in the window (1,000,000; --quick 20,000)")
    ap.add_argument("--hours", type=int, default=24, help="whole hours the window spans (24)")
    ap.add_argument("--function-profile", action=argparse.BooleanOptionalAction, default=None,
                    help="one more exact report with track_functions = all: its time by function (default: on, "
                         "off with --quick)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="small sizes: a sanity run in under 30 s")
    ap.add_argument("--output", default="drift", help="writes bench/results/NAME.json (a path ending in .json: that file)")
    args = ap.parse_args(argv)
    args.reference_rows = args.reference_rows or (2_000 if args.quick else 100_000)
    args.current_rows = args.current_rows or (20_000 if args.quick else 1_000_000)
    if args.function_profile is None:
        args.function_profile = not args.quick
    for name in ("reference_rows", "current_rows", "hours"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server = resolve_bench_url(args.database_url)
    started = time.perf_counter()
    database = nullcontext(server) if args.existing_database else fresh_database(
        server, prefix=args.database_prefix, keep=args.keep_database)
    console.print(f"[bold]bench.drift[/]: reference {args.reference_rows:,} rows, current {args.current_rows:,} rows, "
                  f"{len(FEATURES)} features, server {redact(server)}")
    with database as url:
        with psycopg.connect(url, autocommit=True) as conn:
            machine = machine_info(conn)
            machine["server_settings"].update(dict(conn.execute(
                "select name, current_setting(name) from pg_settings where name = any(%s)",
                (["work_mem", "max_parallel_workers_per_gather", "jit_above_cost"],)).fetchall()))
            console.print("setup: reference training set ...")
            ids = setup_reference(conn, args.reference_rows, args.seed)
            end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
            start = end - timedelta(hours=args.hours)
            console.print(f"setup: {args.current_rows:,} predictions COPYed into ml.predictions ...")
            logged = log_predictions(conn, ids, args.current_rows, args.seed + 1, start, end)
            ids["timings"]["log_predictions"] = logged["seconds"]
            load = os.getloadavg()
        results: dict[str, Any] = {"setup": {**{k: v for k, v in ids.items() if k != "timings"},
                                             "timings_s": {k: round(v, 2) for k, v in ids["timings"].items()},
                                             "predictions": logged, "window": [start.isoformat(), end.isoformat()],
                                             "features": {f: {"shape": s, "drift": d} for f, (s, d) in DRIFT.items()},
                                             "expected_drifted": EXPECTED_DRIFTED},
                                   "load_average_before": load}
        # Every report rolls its project up first (its regime section reads the counts), so the
        # rollup is timed first, alone, over the un-rolled log; the cold exact report comes last,
        # after the project's counts and watermark are deleted (as before any rollup).
        phases: list[tuple[str, str, Any, tuple[Any, ...]]] = [
            ("evidently", "Evidently (its own process)", run_evidently, (url, ids, start, end)),
            ("rollup", "rollup", run_rollup, (url, ids["project_id"])),
            ("fast", "ml.drift_report fast", run_report, (url, ids, start, end, "fast")),
            ("exact_warm", "ml.drift_report exact (after the rollup)", run_report, (url, ids, start, end, "exact")),
            ("reset", "counts and watermark deleted", reset_rollup, (url, ids["project_id"])),
            ("exact_cold", "ml.drift_report exact (cold: rolls the window up itself)", run_report,
             (url, ids, start, end, "exact")),
        ]
        for key, label, fn, fn_args in phases:
            console.print(f"{label} ...")
            results[key], results[key + "_busy_cores"] = busy_cores(fn, *fn_args)
        if args.function_profile:
            console.print("where the reports' time goes (one more of each, track_functions = all) ...")
            results["exact_function_profile"] = function_profile(url, ids, start, end, "exact")
            results["fast_function_profile"] = function_profile(url, ids, start, end, "fast")
        results["load_average_after"] = os.getloadavg()
        results["comparison"] = compare(results["evidently"], results["exact_cold"], results["fast"])
        warm = results["exact_warm"]["inputs"]
        results["comparison"]["exact_warm_same_decisions"] = all(
            warm[f]["drifted"] == results["exact_cold"]["inputs"][f]["drifted"] for f in warm)
    goals = build_goals(results)
    console.print(decisions_table(results["comparison"]))
    for mode in ("exact", "fast"):
        if f"{mode}_function_profile" in results:
            prof = results[f"{mode}_function_profile"]
            console.print(f"{mode} report by function (self ms; {prof['seconds_with_tracking']:.2f} s with tracking): "
                          + "; ".join(f"{r['function'].split('(')[0]} {r['self_ms']:,.0f} ({r['calls']:,} calls)"
                                      for r in prof["top_by_self_time"][:6]))
    console.print(results_table(f"bench.drift: {args.current_rows:,} current rows vs {args.reference_rows:,} reference rows, "
                                f"{len(FEATURES)} features (load average {load[0]:.1f} before)", goals))
    payload = {"machine": machine, "parameters": {k: v for k, v in vars(args).items() if k != "database_url"},
               "server": redact(server), "elapsed_s": round(time.perf_counter() - started, 1), "results": results,
               "goals": [g.as_dict() for g in goals]}
    if args.output.endswith(".json"):
        from pathlib import Path

        path = Path(args.output)
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {"benchmark": "drift", "timestamp": datetime.now(UTC).isoformat(timespec="seconds"), **payload}
        path.write_text(json.dumps(body, indent=2, default=str) + "\n", encoding="utf-8")
    else:
        path = write_results(args.output, payload)
    console.print(f"results: {path}")
    return 1 if any(g.status == "MISS" for g in goals) else 0


if __name__ == "__main__":
    sys.exit(main())
