"""Where Python meets SQL, read from the source: one place turns driver errors into pgmlops
errors, and the package sends only what a Supabase client could send (no ml_private).

No database: these read src/pgmlops as text, the way a reviewer would grep it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pgmlops.db import call
from pgmlops.errors import InvalidInput

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "pgmlops"
DB = PACKAGE / "db"
# The migrations install ml_private itself: the one part of the package that must name it.
MIGRATIONS = PACKAGE / "migrations"


def sources(*, excluding: tuple[Path, ...] = ()) -> dict[str, str]:
    return {str(path.relative_to(PACKAGE)): path.read_text(encoding="utf-8") for path in sorted(PACKAGE.rglob("*.py"))
            if not any(path.is_relative_to(part) for part in excluding)}


def test_the_package_has_sources_to_check() -> None:
    names = sources()
    assert "db/_sql.py" in names and "jobs/worker.py" in names and len(names) > 40


def test_driver_errors_are_translated_in_one_place_only() -> None:
    calls = {name for name, text in sources(excluding=(DB,)).items() if re.search(r"\btranslate\(", text)}
    assert calls == set(), f"translate( outside pgmlops.db: use pgmlops.db.call or sql_errors in {sorted(calls)}"
    defined = [name for name, text in sources().items() if re.search(r"^def translate\(", text, re.MULTILINE)]
    assert defined == ["db/_sql.py"]
    helpers = [name for name, text in sources(excluding=(DB,)).items() if re.search(r"def _?sql_errors\(", text)]
    assert helpers == [], f"a second SQL error helper in {helpers}"


def test_the_package_never_names_ml_private_outside_its_migrations() -> None:
    # SQL the library, the CLI, the workers and the demo send goes where a Supabase client's
    # goes: ml.* functions and the relations RLS lets a client read.
    found = {name: [n for n, line in enumerate(text.splitlines(), 1) if "ml_private" in line]
             for name, text in sources(excluding=(MIGRATIONS,)).items()}
    assert {name: lines for name, lines in found.items() if lines} == {}


@pytest.mark.parametrize("expression", ["ml_private.publish(%s, %s, %s, %s)", "now()", "ml.enqueue('echo'); drop table x; --"])
def test_call_refuses_anything_but_a_call_of_the_sql_api(expression: str) -> None:
    with pytest.raises(InvalidInput, match="not a call of the SQL API"):
        call(None, expression)  # type: ignore[arg-type]  # refused before any connection is used
