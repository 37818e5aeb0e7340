"""Where pgmlops finds its SQL files and Alembic migrations, installed or in a checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def _locate(name: str) -> Path:
    """Return the directory ``name`` (``sql`` or ``migrations``).

    A wheel carries both inside the package as ``_sql`` and ``_alembic`` (``migrations`` is the
    Python package); an editable install or a checkout has them at the repository root, two
    levels above ``src/pgmlops``.
    """
    packaged = {"sql": "_sql", "migrations": "_alembic"}[name]
    for candidate in (_PACKAGE_DIR / packaged, _PACKAGE_DIR.parent.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"pgmlops cannot find its {name}/ directory next to {_PACKAGE_DIR}")


def sql_dir() -> Path:
    """The directory holding the repeatable SQL (``sql/<capability>/*.sql``)."""
    return _locate("sql")


def migrations_dir() -> Path:
    """The Alembic script directory."""
    return _locate("migrations")
