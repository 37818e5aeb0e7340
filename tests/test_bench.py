"""The benchmarks start: each module of the bench package imports and parses its options.

The benchmarks themselves take minutes and are run by hand (bench/README.md); these tests catch
what breaks them silently when the library moves: an import, or a function the training
benchmark's probe wraps by name.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", ["queue", "features", "training", "scoring", "drift"])
def test_each_benchmark_runs_as_a_module(name: str) -> None:
    run = _python("-m", f"bench.{name}", "--help")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"usage: python -m bench.{name}"), run.stdout


def test_bench_queue_does_not_shadow_the_standard_library_queue() -> None:
    run = _python("-c", "import bench.queue, queue; print(queue.__file__)")
    assert run.returncode == 0, run.stderr
    assert "bench" not in run.stdout and run.stdout.strip().endswith("queue.py"), run.stdout


def test_the_training_probe_finds_every_function_it_times(tmp_path: Path) -> None:
    # The probe wraps pgmlops functions by module and name; a rename would fail only inside a
    # spawned worker, minutes into a benchmark run.
    run = _python("-c", f"from bench.training import _install_probe; _install_probe({str(tmp_path / 'probe')!r})")
    assert run.returncode == 0, run.stderr


def test_the_scoring_benchmark_measures_both_sides_of_the_online_and_batch_parts(fresh_db_url: str, tmp_path: Path) -> None:
    # A tiny run of bench.scoring's online and batch parts on a migrated scratch database: every
    # side must have really run (calls counted, logged predictions, rows written), the two online
    # sides must agree on the model's output, and the JSON must carry what the README reads.
    import json

    import psycopg

    output = tmp_path / "scoring_smoke.json"
    requests, batch_rows = 30, 3000
    run = _python("-m", "bench.scoring", "--database-url", fresh_db_url, "--existing-database", "--parts", "online,batch",
                  "--quick", "--online-models", "gb", "--entities", "400", "--requests", str(requests), "--rounds", "2",
                  "--clients", "2", "--duration", "0.5", "--service-workers", "1", "--pgbench-seconds", "1",
                  "--pgbench-clients", "2", "--batch-rows", str(batch_rows), "--output", str(output))
    assert run.returncode in (0, 1), run.stdout[-3000:] + run.stderr[-3000:]  # 1: a goal missed, still a result
    body = json.loads(output.read_text())
    assert body["benchmark"] == "scoring" and body["parameters"]["parts"] == ["online", "batch"]
    assert {"cpu_count", "server_settings"} <= set(body["machine"])
    online = body["results"]["online"]
    assert set(online["models"]) == {"gb"}
    for key, entry in online["models"].items():
        assert "pgmlops_error" not in entry, entry.get("pgmlops_error")
        assert entry["parity"]["labels_off"] == 0 and entry["parity"]["max_abs_diff_probabilities"] <= 1e-9, entry["parity"]
        for side in ("pgmlops", "fastapi"):
            lat, thr = entry[side]["latency_ms"], entry[side]["throughput"]
            assert lat["n"] == requests, (key, side, lat)
            assert 0 < lat["min"] <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"], (key, side, lat)
            assert thr["requests"] > 0 and thr["errors"] == 0, (key, side, thr)
            assert thr["requests_per_s"] == pytest.approx(thr["requests"] / thr["duration_s"], rel=0.02)
        ratios = entry["ratios"]
        assert ratios["p50_latency_fastapi_over_pgmlops"] == pytest.approx(
            entry["fastapi"]["latency_ms"]["p50"] / entry["pgmlops"]["latency_ms"]["p50"], rel=0.02)
        assert ratios["throughput_pgmlops_over_fastapi"] > 0
        assert 0 < entry["pgmlops_inside_function_ms"]["p50"] <= entry["pgmlops"]["latency_ms"]["max"]
    assert {(r["model"], r["mode"]) for r in online["pgbench"]} == {("gb", "service"), ("gb", "postgrest")}
    for r in online["pgbench"]:
        assert r["returncode"] == 0 and r["tps"] > 0 and r["transactions"] > 0 and r["failed"] == 0, r
    batch = body["results"]["batch"]
    assert batch["rows"] == batch_rows
    assert [r["path"] for r in batch["runs"]] == ["ml.predict_batch (one statement)", "ml.score, path sql",
                                                  "ml.score, path worker"]
    for r in batch["runs"]:
        assert "error" not in r, r
        assert r["rows_written"] == batch_rows and r["seconds"] > 0, r
    assert batch["compared"] == ["ml.score, path sql", "ml.score, path worker"]
    assert batch["default_should_be"] == ("sql" if batch["worker_over_sql_seconds"] >= 1 else "worker")
    metrics = [g["metric"] for g in body["goals"]]
    assert "gb: p50 latency, FastAPI / ml.predict" in metrics and "batch: ml.score worker path time / sql path time" in metrics
    # The calls reached ml.predict: each one is in the prediction log.
    with psycopg.connect(fresh_db_url) as conn:
        logged = conn.execute("select count(*) from ml.predictions").fetchone()
    pgbench_calls = sum(r["transactions"] for r in online["pgbench"])
    pgmlops_calls = sum(e["pgmlops"]["throughput"]["requests"] + requests for e in online["models"].values())
    assert logged is not None and logged[0] >= pgmlops_calls + pgbench_calls


def test_the_drift_benchmark_measures_evidently_exact_and_fast_on_the_same_window(fresh_db_url: str, tmp_path: Path) -> None:
    # A tiny run of bench.drift on a migrated scratch database: all three contenders really ran
    # over the same rows (counts from each side), every feature has a decision from each, the
    # memory figures are there, and the JSON carries what the README reads.
    import json

    output = tmp_path / "drift_smoke.json"
    reference_rows, current_rows = 2000, 20000  # --quick's sizes
    run = _python("-m", "bench.drift", "--database-url", fresh_db_url, "--existing-database", "--quick",
                  "--output", str(output))
    assert run.returncode in (0, 1), run.stdout[-3000:] + run.stderr[-3000:]  # 1: a speed goal missed at this size
    body = json.loads(output.read_text())
    assert body["benchmark"] == "drift" and body["parameters"]["current_rows"] == current_rows
    assert {"cpu_count", "server_settings"} <= set(body["machine"])
    res = body["results"]
    assert res["evidently"]["rows"] == {"reference": reference_rows, "current": current_rows}
    for mode in ("exact_cold", "exact_warm", "fast"):
        assert res[mode]["row_count"] == current_rows and res[mode]["seconds"] > 0, res[mode]
        assert res[mode]["status"] == "complete" and len(res[mode]["inputs"]) == 20
        assert res[mode]["backend_memory"]["available"] and res[mode]["backend_memory"]["vmhwm_mib"] > 0
    assert res["fast"]["mode"] == "fast" and res["fast"]["approximation"]
    # The rollup is timed first, over the whole un-rolled window; the cold exact report after its reset.
    assert res["rollup"]["returned"] == current_rows and res["rollup"]["window_count_rows"] > 0
    assert res["reset"]["window_counts_deleted"] == res["rollup"]["window_count_rows"]
    assert res["evidently"]["peak_rss_kib"] > 0 and res["evidently"]["seconds"]["report"] > 0
    comparison = res["comparison"]
    assert all(f["evidently"] and f["exact"] and f["fast"] for f in comparison["features"])
    # The scenario's drift is far from every threshold: all three decide alike, as injected.
    assert comparison["agreements"]["exact_vs_evidently"] == 20 and comparison["agreements"]["fast_vs_exact"] == 20
    assert sorted(f["feature"] for f in comparison["features"] if f["exact"]["drifted"]) == sorted(
        res["setup"]["expected_drifted"])
    assert comparison["dataset_verdicts_agree"] and comparison["dataset"]["exact"]["drifted"]
    metrics = {g["metric"]: g for g in body["goals"]}
    assert metrics["speedup fast: Evidently / fast"]["target"] == 100
    assert metrics["speedup exact (cold): Evidently / exact"]["target"] == 2
