"""The online part of ``bench.scoring``: ``ml.predict`` by entity key against a FastAPI service.

Both sides score the same model version for the same entity keys, reading the entity's
features from the same online table:

- **pgmlops**: ``select ml.predict(project, entity_key => key)`` from a ``psycopg_pool``
  pool (statements prepared at first use), acting for the tenant as a service caller
  (``pgmlops.tenant_id`` set when a connection joins the pool), as a backend would.
- **FastAPI**: ``bench._scoring_service`` under uvicorn, a separate process started here
  (``--service-workers``, default 2: one per core of the machine; uvloop, httptools, no access
  log), called over HTTP/1.1 keep-alive with ``httpx``.

Latency: one client, sequential requests, after a warm-up; the sides alternate in rounds so
that a noisy moment of a shared machine falls on both. Each side's client holds one connection to
its server: the FastAPI client one keep-alive HTTP connection (one uvicorn worker), the pgmlops
client a pool of one (one backend). A context row repeats the pgmlops calls through the
throughput runs' pool of ``--clients`` connections, which hands them out in turn, so that each
sequential call lands on another backend whose caches went cold meanwhile (about 0.25 ms more
per call on this machine). Throughput: ``--clients`` threads, each
with its own connection (a pool of that size / an httpx client each), requests back to back for
``--duration`` seconds; requests per second, the latency under load, the client's CPU per
request and the machine's busy cores (``/proc/stat``). Then ``pgbench`` (C client, no Python
on the path) with a custom script calling ``ml.predict``: as a service caller (the tenant in
``PGOPTIONS``) and as a PostgREST request of a signed-in user (a transaction that sets the
role ``authenticated`` and ``request.jwt.claims`` the way PostgREST does, then calls the
function: what ``supabase.rpc('predict', ...)`` costs the database).
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from bench._common import BENCH_DIR, summarize
from bench._scoring_setup import FEATURES, Setup

PGBENCH = os.environ.get("PGMLOPS_PGBENCH", "/usr/lib/postgresql/15/bin/pgbench")
PREDICT = "select ml.predict(%s, entity_key => %s)"
Call = Callable[[str, str], dict[str, Any]]


# -- machine ------------------------------------------------------------------------------------


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat, (0, 0) elsewhere."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except OSError:
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def busy_cores(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    total = after[1] - before[1]
    if total <= 0:
        return None
    return round((after[0] - before[0]) / total * (os.cpu_count() or 1), 2)


# -- the two clients ------------------------------------------------------------------------------


def pgmlops_pool(setup: Setup, size: int) -> ConnectionPool[psycopg.Connection[Any]]:
    tenant = setup.tenant

    def configure(conn: psycopg.Connection[Any]) -> None:
        conn.execute("select set_config('pgmlops.tenant_id', %s, false)", (tenant,))

    pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
        setup.url, min_size=size, max_size=size, open=False, configure=configure,
        kwargs={"autocommit": True, "prepare_threshold": 0})
    pool.open(wait=True, timeout=60)
    return pool


def pgmlops_call(pool: ConnectionPool[psycopg.Connection[Any]], inside: list[float] | None = None) -> Call:
    """``ml.predict`` by entity key; ``inside`` collects the ``latency_ms`` each call reports (the
    time spent inside the function, as logged in ml.predictions)."""
    def call(project: str, key: str) -> dict[str, Any]:
        with pool.connection() as conn:
            row = conn.execute(PREDICT, (project, key)).fetchone()
        assert row is not None
        result = dict(row[0])
        if inside is not None and isinstance(result.get("latency_ms"), int | float):
            inside.append(float(result["latency_ms"]))
        return result
    return call


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load_pipelines(setup: Setup) -> dict[str, Any]:
    """{model key: the registered scikit-learn pipeline} (``pgmlops.models.load_model``)."""
    from pgmlops.db import tenant_context
    from pgmlops.models import load_model

    with psycopg.connect(setup.url, autocommit=True) as conn, tenant_context(conn, setup.tenant):
        return {key: load_model(conn, m.ref) for key, m in setup.models.items()}


@contextmanager
def fastapi_service(setup: Setup, pipelines: dict[str, Any], workers: int, pool_size: int) -> Iterator[dict[str, Any]]:
    """Start ``bench._scoring_service`` under uvicorn; yields ``{base_url, pid, workers, start_s}``."""
    import httpx
    import joblib  # type: ignore[import-untyped]

    port = _free_port()
    models_dir = tempfile.TemporaryDirectory(prefix="pgmlops_bench_models_")
    models: dict[str, Any] = {}
    for key, m in setup.models.items():
        path = os.path.join(models_dir.name, f"{key}.joblib")
        joblib.dump(pipelines[key], path)
        models[m.project] = {"path": path, "model": m.model, "version": m.version}
    config = {"url": setup.url, "tenant": setup.tenant, "table": setup.online_table, "columns": FEATURES,
              "models": models, "pool_size": pool_size}
    env = {**os.environ, "PGMLOPS_BENCH_SERVICE": json.dumps(config), "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(BENCH_DIR.parent), os.environ.get("PYTHONPATH")) if p)}
    log = tempfile.NamedTemporaryFile(prefix="pgmlops_bench_service_", suffix=".log", delete=False)  # noqa: SIM115
    cmd = [sys.executable, "-m", "uvicorn", "bench._scoring_service:app", "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(workers), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
           "--log-level", "warning"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=BENCH_DIR.parent, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        pids: set[int] = set()
        deadline = time.monotonic() + 180
        with httpx.Client(base_url=base, timeout=5) as client:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"the FastAPI service exited ({proc.returncode}): "
                                       f"{Path(log.name).read_text()[-2000:]}")
                try:
                    pids.add(int(client.get("/health").json()["pid"]))
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the FastAPI service did not answer within 180 s") from None
                    time.sleep(0.2)
        # Every worker loads its models before serving; fresh connections reach them all.
        while len(pids) < workers and time.monotonic() < deadline:
            with httpx.Client(base_url=base, timeout=30) as client:
                pids.add(int(client.get("/health").json()["pid"]))
        yield {"base_url": base, "pid": proc.pid, "workers": workers, "worker_pids": sorted(pids),
               "start_s": round(time.perf_counter() - t0, 2)}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        os.unlink(log.name)
        models_dir.cleanup()


def features_only_call(client: Any) -> Call:
    def call(project: str, key: str) -> dict[str, Any]:
        response = client.get(f"/features/{key}")
        response.raise_for_status()
        return dict(response.json())
    return call


def model_only(setup: Setup, pipeline: Any, keys: list[str], n: int) -> dict[str, float]:
    """The service's model work alone, in this process: the one-row frame and ``predict_proba``
    of the registered pipeline (ms per call, one native thread as in the service)."""
    import pandas as pd
    from psycopg import sql
    from threadpoolctl import threadpool_limits

    schema, table = setup.online_table.split(".", 1)
    with psycopg.connect(setup.url, autocommit=True) as conn:
        rows = conn.execute(sql.SQL("select {} from {} where tenant_id = %s and entity_key = any(%s)").format(
            sql.SQL(", ").join(map(sql.Identifier, FEATURES)), sql.Identifier(schema, table.strip('"'))),
            (setup.tenant, keys[:n])).fetchall()
    timings: list[float] = []
    with threadpool_limits(limits=1):
        for row in rows[:5]:
            pipeline.predict_proba(pd.DataFrame([row], columns=FEATURES))
        for row in rows:
            t0 = time.perf_counter()
            pipeline.predict_proba(pd.DataFrame([row], columns=FEATURES))
            timings.append((time.perf_counter() - t0) * 1e3)
    return summarize(timings)


def fastapi_call(client: Any) -> Call:
    def call(project: str, key: str) -> dict[str, Any]:
        response = client.get(f"/predict/{project}/{key}")
        response.raise_for_status()
        return dict(response.json())
    return call


# -- measurements --------------------------------------------------------------------------------


def latency(calls: dict[str, Call], project: str, keys: list[str], n: int, rounds: int, warmup: int,
            seed: int) -> dict[str, list[float]]:
    """Sequential latencies (ms) of each side, ``n`` calls each, in alternating rounds."""
    rng = random.Random(seed)
    sequence = [rng.choice(keys) for _ in range(n)]
    for call in calls.values():
        for key in sequence[:warmup]:
            call(project, key)
    out: dict[str, list[float]] = {side: [] for side in calls}
    per_round = max(1, n // rounds)
    for r in range(rounds):
        chunk = sequence[r * per_round:(r + 1) * per_round] if r < rounds - 1 else sequence[r * per_round:]
        order = list(calls) if r % 2 == 0 else list(reversed(calls))
        for side in order:
            call = calls[side]
            timings = out[side]
            for key in chunk:
                t0 = time.perf_counter()
                call(project, key)
                timings.append((time.perf_counter() - t0) * 1e3)
    return out


def throughput(make_call: Callable[[], tuple[Call, Callable[[], None]]], project: str, keys: list[str], clients: int,
               duration: float, seed: int) -> dict[str, Any]:
    """``clients`` threads calling back to back for ``duration`` s: requests/s, latency under
    load (ms), client CPU per request, busy cores of the machine, errors."""
    calls = [make_call() for _ in range(clients)]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def run(i: int) -> None:
        rng = random.Random(seed + i)
        call = calls[i][0]
        mine = latencies[i]
        start.wait()
        deadline = stop_at[0]
        while True:
            key = rng.choice(keys)
            t0 = time.perf_counter()
            if t0 >= deadline:
                break
            try:
                call(project, key)
            except Exception as exc:  # counted, reported; the run goes on
                if len(errors) < 5:
                    errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                continue
            mine.append((time.perf_counter() - t0) * 1e3)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    cpu0, ticks0 = time.process_time(), _cpu_ticks()
    t_start = time.perf_counter()
    stop_at[0] = t_start + duration
    start.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t_start
    cpu1, ticks1 = time.process_time(), _cpu_ticks()
    for _, close in calls:
        close()
    flat = [v for part in latencies for v in part]
    done = len(flat)
    return {"clients": clients, "duration_s": round(elapsed, 2), "requests": done,
            "requests_per_s": round(done / elapsed, 1) if elapsed > 0 else None,
            "latency_ms": summarize(flat), "client_cpu_us_per_request": round((cpu1 - cpu0) / done * 1e6, 1) if done else None,
            "busy_cores": busy_cores(ticks0, ticks1), "errors": len(errors), "error_samples": errors}


# -- pgbench ------------------------------------------------------------------------------------------


SERVICE_SCRIPT = """\\set k random(1, :n)
select ml.predict(:project, entity_key => 'c' || lpad(:k::text, 7, '0'));
"""

# What PostgREST sends for POST /rest/v1/rpc/predict (PostgREST 12): one transaction that sets the
# request's role and claims transaction-locally, then calls the function.
POSTGREST_SCRIPT = """\\set k random(1, :n)
begin;
select set_config('role', 'authenticated', true), set_config('request.jwt.claims', :claims, true),
       set_config('request.method', 'POST', true), set_config('request.path', '/rpc/predict', true);
select ml.predict(:project, entity_key => 'c' || lpad(:k::text, 7, '0'));
commit;
"""


def pgbench(setup: Setup, project: str, mode: str, clients: int, seconds: int) -> dict[str, Any]:
    """One pgbench run (``-M prepared``, ``clients`` connections, 2 threads): TPS, latency, failures."""
    script = SERVICE_SCRIPT if mode == "service" else POSTGREST_SCRIPT
    claims = json.dumps({"sub": setup.user, "role": "authenticated", "aud": "authenticated",
                         "app_metadata": {"tenant_id": setup.tenant}})
    # -M prepared: every :variable is a bind parameter (the claims' JSON needs no quoting).
    env = {**os.environ}
    if mode == "service":
        env["PGOPTIONS"] = f"-c pgmlops.tenant_id={setup.tenant}"
    with tempfile.NamedTemporaryFile("w", prefix="pgmlops_bench_", suffix=".sql", delete=False) as f:
        f.write(script)
        path = f.name
    cmd = [PGBENCH, "-n", "-M", "prepared", "-c", str(clients), "-j", str(min(clients, os.cpu_count() or 1)),
           "-T", str(seconds), "-f", path, "-D", f"n={setup.entities}", "-D", f"project={project}",
           "-D", f"claims={claims}", setup.url]
    if not os.path.exists(PGBENCH):
        os.unlink(path)
        return {"mode": mode, "clients": clients, "seconds": seconds, "returncode": None, "tps": None,
                "error": [f"{PGBENCH} not found (set PGMLOPS_PGBENCH)"]}
    ticks0 = _cpu_ticks()
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120, env=env)
    finally:
        os.unlink(path)
    ticks1 = _cpu_ticks()
    out = {"mode": mode, "clients": clients, "seconds": seconds, "protocol": "prepared", "script": script,
           "busy_cores": busy_cores(ticks0, ticks1)}
    text = run.stdout + run.stderr
    tps = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", text)
    lat = re.search(r"latency average = ([0-9.]+) ms", text)
    txns = re.search(r"number of transactions actually processed: (\d+)", text)
    failed = re.search(r"number of failed transactions: (\d+)", text)
    out.update({"returncode": run.returncode, "tps": float(tps.group(1)) if tps else None,
                "latency_avg_ms": float(lat.group(1)) if lat else None,
                "transactions": int(txns.group(1)) if txns else None,
                "failed": int(failed.group(1)) if failed else None})
    if run.returncode != 0 or tps is None:
        out["error"] = text.strip().splitlines()[-3:] if text.strip() else ["pgbench printed nothing"]
    return out


# -- the part -------------------------------------------------------------------------------------


def _parity(pg: Call, fa: Call, project: str, keys: list[str]) -> dict[str, Any]:
    """Both sides on the same keys: the largest |difference| of the probabilities, labels that differ."""
    worst, labels_off = 0.0, 0
    for key in keys:
        a, b = pg(project, key), fa(project, key)
        pa, pb = a.get("probabilities") or {}, b.get("probabilities") or {}
        if not isinstance(pa, dict):  # a list in the classes' order
            pa = dict(zip(pb, pa, strict=False))
        if sorted(map(str, pa)) != sorted(pb):
            raise RuntimeError(f"{project} {key}: ml.predict gave {a!r}, the service {b!r}")
        worst = max([worst, *(abs(float(pa[c]) - float(pb[str(c)])) for c in pa)])
        labels_off += int(str(a.get("prediction")) != str(b.get("prediction")))
    return {"keys": len(keys), "max_abs_diff_probabilities": worst, "labels_off": labels_off}


def _ratio(num: float | None, den: float | None) -> float | None:
    return round(num / den, 2) if num and den else None


def run(setup: Setup, *, requests: int, rounds: int, warmup: int, clients: int, duration: float, service_workers: int,
        pgbench_seconds: int, pgbench_clients: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Measure every model of ``setup`` on both sides; returns the part's results."""
    import httpx

    out: dict[str, Any] = {"parameters": {"requests": requests, "rounds": rounds, "warmup": warmup, "clients": clients,
                                          "duration_s": duration, "service_workers": service_workers,
                                          "pgbench_seconds": pgbench_seconds, "pgbench_clients": pgbench_clients},
                           "models": {}, "pgbench": []}
    predict_ready = _has_predict(setup)
    pipelines = load_pipelines(setup)
    pool = pgmlops_pool(setup, clients)
    single = pgmlops_pool(setup, 1)  # the latency client's one connection
    try:
        with fastapi_service(setup, pipelines, service_workers, pool_size=max(1, clients // service_workers)) as service, \
                httpx.Client(base_url=service["base_url"], timeout=30) as client:
            out["service"] = service
            log(f"  FastAPI service up in {service['start_s']} s ({service_workers} uvicorn workers)")
            fa = fastapi_call(client)
            pg = pgmlops_call(pool)
            for i, (key, model) in enumerate(setup.models.items()):
                entry: dict[str, Any] = {"project": model.project, "ref": model.ref, "scoring_path": model.scoring_path}
                out["models"][key] = entry
                sides: dict[str, Call] = {"fastapi": fa}
                if predict_ready is None and model.deployment_id:
                    try:
                        pg(model.project, setup.keys[0])
                        sides = {"pgmlops": pg, "fastapi": fa}
                        entry["parity"] = _parity(pg, fa, model.project, setup.keys[:50])
                    except psycopg.Error as exc:
                        entry["pgmlops_error"] = f"{exc.sqlstate}: {str(exc).splitlines()[0][:300]}"
                else:
                    entry["pgmlops_error"] = predict_ready or f"not deployed: {model.deploy_error}"
                if "pgmlops_error" in entry:
                    log(f"  [red]{key}: pgmlops side not measured: {entry['pgmlops_error']}[/]")
                if i == 0:  # the service without a model: HTTP and the lookup (one model's run is enough)
                    sides["fastapi_features_only"] = features_only_call(client)
                inside: list[float] = []
                if "pgmlops" in sides:
                    sides["pgmlops"] = pgmlops_call(single, inside)
                    sides["pgmlops_pool_in_turn"] = pgmlops_call(pool)
                log(f"  {key}: latency, {requests:,} sequential calls per side ...")
                lat = latency(sides, model.project, setup.keys, requests, rounds, warmup, seed=17 + i)
                if inside:  # the warm-up's calls left out
                    entry["pgmlops_inside_function_ms"] = summarize(inside[-len(lat["pgmlops"]):])
                if i == 0:
                    out["fastapi_features_only_latency_ms"] = summarize(lat.pop("fastapi_features_only"))
                    del sides["fastapi_features_only"]
                if "pgmlops_pool_in_turn" in lat:
                    entry["pgmlops_pool_in_turn_latency_ms"] = summarize(lat.pop("pgmlops_pool_in_turn"))
                    del sides["pgmlops_pool_in_turn"]
                entry["model_only_ms"] = model_only(setup, pipelines[key], setup.keys, min(requests, 500))
                for side, values in lat.items():
                    entry.setdefault(side, {})["latency_ms"] = summarize(values)
                order = list(sides) if i % 2 == 0 else list(reversed(sides))
                for side in order:
                    log(f"  {key}: throughput of {side}, {clients} clients for {duration:g} s ...")
                    if side == "pgmlops":
                        entry[side]["throughput"] = throughput(lambda: (pgmlops_call(pool), lambda: None), model.project,
                                                               setup.keys, clients, duration, seed=100 + i)
                    else:
                        def make() -> tuple[Call, Callable[[], None]]:
                            c = httpx.Client(base_url=service["base_url"], timeout=30)
                            return fastapi_call(c), c.close
                        entry[side]["throughput"] = throughput(make, model.project, setup.keys, clients, duration,
                                                               seed=100 + i)
                if "pgmlops" in entry:
                    p, f = entry["pgmlops"], entry["fastapi"]
                    entry["ratios"] = {
                        "p50_latency_fastapi_over_pgmlops": _ratio(f["latency_ms"]["p50"], p["latency_ms"]["p50"]),
                        "p99_latency_fastapi_over_pgmlops": _ratio(f["latency_ms"]["p99"], p["latency_ms"]["p99"]),
                        "throughput_pgmlops_over_fastapi": _ratio(p["throughput"]["requests_per_s"],
                                                                  f["throughput"]["requests_per_s"])}
    finally:
        pool.close()
        single.close()
    if predict_ready is None and pgbench_seconds > 0:
        for key, model in setup.models.items():
            if "pgmlops_error" in out["models"][key]:
                continue
            for mode in ("service", "postgrest"):
                log(f"  {key}: pgbench, {mode} caller, {pgbench_clients} clients for {pgbench_seconds} s ...")
                run_ = pgbench(setup, model.project, mode, pgbench_clients, pgbench_seconds)
                run_["model"] = key
                out["pgbench"].append(run_)
                if run_.get("error"):
                    log(f"  [red]pgbench {key} {mode}: {run_['error']}[/]")
    return out


def _has_predict(setup: Setup) -> str | None:
    """None when ml.predict exists, else why the pgmlops side cannot run."""
    from bench._scoring_setup import has_function

    with psycopg.connect(setup.url, autocommit=True) as conn:
        return None if has_function(conn, "ml.predict") else "ml.predict does not exist yet"


def tables(result: dict[str, Any]) -> list[Any]:
    """Rich tables: latency and throughput per model and side, with ratios; pgbench."""
    from rich.table import Table

    def f(v: Any, spec: str = ",.2f") -> str:
        return "" if v is None else format(v, spec)

    t = Table(title="Online: ml.predict (pooled psycopg) vs FastAPI + scikit-learn (httpx, keep-alive), by entity key",
              title_justify="left")
    for col in ("model", "side", "p50 ms", "p95 ms", "p99 ms", "req/s", "load p50 ms", "load p99 ms",
                "client µs/req", "busy cores"):
        t.add_column(col, justify="left" if col in ("model", "side") else "right")
    for key, entry in result["models"].items():
        for side in ("pgmlops", "fastapi"):
            s = entry.get(side)
            if not s:
                t.add_row(key, side, "[red]not measured[/]", "", "", "", "", "", "", "")
                continue
            lat, thr = s["latency_ms"], s.get("throughput", {})
            tl = thr.get("latency_ms", {})
            t.add_row(key, side, f(lat.get("p50")), f(lat.get("p95")), f(lat.get("p99")), f(thr.get("requests_per_s"), ",.0f"),
                      f(tl.get("p50")), f(tl.get("p99")), f(thr.get("client_cpu_us_per_request"), ",.0f"),
                      f(thr.get("busy_cores")))
        rotating = entry.get("pgmlops_pool_in_turn_latency_ms")
        if rotating:
            t.add_row(key, f"[dim]pgmlops, pool of {result['parameters']['clients']} in turn[/]", f(rotating.get("p50")),
                      f(rotating.get("p95")), f(rotating.get("p99")), "", "", "", "", "")
        inside = entry.get("pgmlops_inside_function_ms")
        if inside:
            t.add_row(key, "[dim]inside ml.predict[/]", f(inside.get("p50")), f(inside.get("p95")), f(inside.get("p99")),
                      "", "", "", "", "")
        m = entry.get("model_only_ms")
        if m:
            t.add_row(key, "[dim]sklearn alone[/]", f(m.get("p50")), f(m.get("p95")), f(m.get("p99")), "", "", "", "", "")
        r = entry.get("ratios")
        if r:
            t.add_row(key, "[bold]ratio[/]", f"[bold]{f(r['p50_latency_fastapi_over_pgmlops'])}x[/]", "",
                      f"{f(r['p99_latency_fastapi_over_pgmlops'])}x", f"[bold]{f(r['throughput_pgmlops_over_fastapi'])}x[/]",
                      "", "", "", "")
    floor = result.get("fastapi_features_only_latency_ms")
    if floor:
        t.add_row("(none)", "[dim]fastapi, features only[/]", f(floor.get("p50")), f(floor.get("p95")), f(floor.get("p99")),
                  "", "", "", "", "")
    out = [t]
    if result.get("pgbench"):
        b = Table(title="pgbench: ml.predict by entity key (-M prepared)", title_justify="left")
        for col in ("model", "caller", "clients", "seconds", "TPS", "latency avg ms", "failed", "busy cores", "vs FastAPI req/s"):
            b.add_column(col, justify="left" if col in ("model", "caller") else "right")
        for run_ in result["pgbench"]:
            fa = result["models"].get(run_["model"], {}).get("fastapi", {}).get("throughput", {}).get("requests_per_s")
            b.add_row(run_["model"], run_["mode"], str(run_["clients"]), str(run_["seconds"]), f(run_.get("tps"), ",.0f"),
                      f(run_.get("latency_avg_ms")), f(run_.get("failed"), "d"), f(run_.get("busy_cores")),
                      f"{f(_ratio(run_.get('tps'), fa))}x" if fa and run_.get("tps") else "")
        out.append(b)
    return out
