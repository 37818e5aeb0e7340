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


@pytest.mark.parametrize("name", ["queue", "features", "training", "scoring"])
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
