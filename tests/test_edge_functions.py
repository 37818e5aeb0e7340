"""The Supabase edge functions (edge_functions/): wired in supabase/config.toml, type-checked, and
their Deno tests passing against a real migrated database on the full server."""

# Deno comes from scripts/install-deno.sh (npm's @deno package in .tools/, which scripts/test.sh
# runs first). When it cannot be installed these tests fail, saying why: they are never skipped.

from __future__ import annotations

import os
import re
import secrets
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS = ROOT / "edge_functions"
NAMES = sorted(p.name for p in FUNCTIONS.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")) and p.name != "node_modules")


@pytest.fixture(scope="module")
def deno() -> str:
    run = subprocess.run(["bash", str(ROOT / "scripts" / "install-deno.sh")], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    if run.returncode != 0 or not run.stdout.strip():
        pytest.fail(f"deno is needed for the edge function tests and could not be installed "
                    f"(scripts/install-deno.sh exited {run.returncode}):\n{run.stderr}", pytrace=False)
    return run.stdout.strip().splitlines()[-1]


def _deno(deno: str, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([deno, *args], cwd=FUNCTIONS, env={**os.environ, "NO_COLOR": "1", **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def test_every_function_is_wired_in_the_supabase_config() -> None:
    assert NAMES, "no function in edge_functions/"
    config = tomllib.loads((ROOT / "supabase" / "config.toml").read_text(encoding="utf-8"))
    wired = config.get("functions", {})
    assert sorted(wired) == NAMES, f"supabase/config.toml [functions.*] {sorted(wired)} != edge_functions/ {NAMES}"
    for name in NAMES:
        entrypoint = ROOT / "supabase" / wired[name]["entrypoint"]
        assert wired[name]["entrypoint"] == f"../edge_functions/{name}/index.ts"
        assert entrypoint.is_file(), entrypoint
        assert (ROOT / "supabase" / wired[name]["import_map"]).resolve() == FUNCTIONS / "deno.json"


def test_functions_never_import_the_test_helpers() -> None:
    # _shared/testing.ts reads the test environment and throws without it: a deployed function
    # importing it would not start.
    shipped = [p for name in NAMES for p in (FUNCTIONS / name).glob("*.ts") if not p.name.endswith(".test.ts")]
    shipped += [p for p in (FUNCTIONS / "_shared").glob("*.ts") if p.name != "testing.ts"]
    assert shipped
    for path in shipped:
        assert "testing.ts" not in path.read_text(encoding="utf-8"), f"{path.relative_to(ROOT)} imports the test helpers"


def test_every_function_type_checks(deno: str) -> None:
    run = _deno(deno, "check", *(f"{name}/index.ts" for name in NAMES))
    assert run.returncode == 0, f"deno check exited {run.returncode}:\n{run.stdout}\n{run.stderr}"


def test_the_deno_tests_pass_against_the_database(deno: str, fresh_db_url: str) -> None:
    env = {"SUPABASE_DB_URL": fresh_db_url, "SUPABASE_JWT_SECRET": secrets.token_urlsafe(32)}
    run = _deno(deno, "test", "--allow-env", "--allow-net", "--allow-read", env=env)
    output = f"{run.stdout}\n{run.stderr}"
    assert run.returncode == 0, f"deno test exited {run.returncode}:\n{output}"
    summary = re.search(r"^ok \| (\d+) passed(?: \(\d+ steps?\))? \| 0 failed.*$", output, re.MULTILINE)
    assert summary, output
    # Every function has tests, and none was skipped: `deno test` counts ignored ones apart.
    assert int(summary.group(1)) >= len(NAMES), output
    assert "ignored" not in summary.group(0) and "filtered" not in summary.group(0), summary.group(0)
    for name in NAMES:
        assert f"./{name}/" in output, f"no tests ran for edge function {name}:\n{output}"
