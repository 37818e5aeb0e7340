"""docs/sql-api.md is generated from the comments in sql/ and never falls behind them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_sql_api_reference_is_current() -> None:
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "sql_api_docs.py"), "--check"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_reference_documents_every_ml_function_and_view_in_sql() -> None:
    defined = set()
    for path in (ROOT / "sql").rglob("*.sql"):
        defined |= set(re.findall(r"^create or replace (?:function|view) (ml\.[a-z_0-9]+)", path.read_text(), re.M))
    documented = set(re.findall(r"^#### (ml\.[a-z_0-9]+)$", (ROOT / "docs" / "sql-api.md").read_text(), re.M))
    assert defined and documented == defined
