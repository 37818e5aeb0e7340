"""The repeatable SQL in ``sql/``: which files, in which order, their checksums, and the SQL that applies them.

Versioned revisions (``migrations/versions``) make tables, types, data and extensions, and never
change once released. The files listed here define everything that can be replaced in place:
functions, views, triggers, policies and grants. They are applied, in this order and in the
migration's transaction, whenever an upgrade reaches the head revision (intermediate revisions may
lack tables the current functions need), and when ``pgmlops migrate`` finds a database already at
the head whose applied checksums differ from the files. docs/migrations.md has the rules.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pgmlops.migrations._resources import sql_dir

# The order of application: a capability after those it calls. A new file goes here too (a test
# fails for a file in sql/ that is not listed).
FILES: tuple[str, ...] = (
    "core/bootstrap.sql",
    "core/validation.sql",
    "core/timeseries.sql",
    "core/tenants.sql",
    "events/publish.sql",
    "jobs/queue.sql",
    "lineage/lineage.sql",
    "features/groups.sql",
    "features/ingest.sql",
    "features/online.sql",
    "features/transformations.sql",
    "features/training_sets.sql",
    "features/stats.sql",
    "training/algorithms.sql",
    "training/runs.sql",
    "models/registry.sql",
    "scoring/compiler.sql",
    "scoring/install.sql",
    "scoring/deployments.sql",
    "scoring/predict.sql",
    "scoring/feedback.sql",
    "scoring/batch.sql",
    "tuning/studies.sql",
    "monitoring/stats.sql",
    "monitoring/profiles.sql",
    "monitoring/windows.sql",
    "monitoring/performance.sql",
    "monitoring/alerts.sql",
    "monitoring/reports.sql",
    "monitoring/multivariate.sql",
    "monitoring/schedules.sql",
    "retraining/policies.sql",
    "retraining/retrain.sql",
    "retraining/online.sql",
    "retraining/learn.sql",
)

# Where the applied checksums are kept (made by revision 0005_partition_rls).
CHECKSUM_TABLE = "ml_private.repeatable_files"


@dataclass(frozen=True)
class RepeatableFile:
    """One file of ``sql/``: its path below ``sql/``, its text and the SHA-256 of that text."""

    path: str
    text: str
    checksum: str


def files() -> list[RepeatableFile]:
    """The repeatable files, in the order they are applied."""
    root = sql_dir()
    out = []
    for path in FILES:
        text = (root / path).read_text(encoding="utf-8")
        out.append(RepeatableFile(path, text, hashlib.sha256(text.encode()).hexdigest()))
    return out


def checksums() -> dict[str, str]:
    """``{path: sha256}`` of the repeatable files as they are now."""
    return {f.path: f.checksum for f in files()}


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# Views the files create that did not exist before are recorded under the revision being reached,
# so that revision's downgrade (ops.drop_tracked) drops them before it drops their tables.
_VIEWS_NOW = """
    select 'view' as kind, format('%I.%I', n.nspname, c.relname) as name
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname in ('ml', 'ml_private', 'ml_datasets') and c.relkind = 'v'
"""


def statements(revision: str, repeatables: list[RepeatableFile] | None = None) -> list[str]:
    """The SQL that applies ``repeatables`` (default: all of them) at ``revision``, as pieces run
    one after the other: the bookkeeping before, each file headed by its path, the bookkeeping
    after (new views recorded, EXECUTE revoked from PUBLIC, the checksums stored)."""
    repeatables = files() if repeatables is None else repeatables
    rev = _literal(revision)
    before = _literal("_before:" + revision)
    pieces = [
        f"-- Repeatable objects: sql/ applied at {revision}\n"
        f"insert into ml_private.revision_objects (revision, kind, name)\n"
        f"select {before}, kind, name from ({_VIEWS_NOW}) o on conflict do nothing;\n"
    ]
    pieces += [f"-- sql/{f.path}\n{f.text}" for f in repeatables]
    rows = ",\n    ".join(f"({_literal(f.path)}, {_literal(f.checksum)}, {rev})" for f in repeatables)
    pieces.append(
        f"insert into ml_private.revision_objects (revision, kind, name)\n"
        f"select {rev}, o.kind, o.name from ({_VIEWS_NOW}) o\n"
        f"where not exists (select 1 from ml_private.revision_objects b\n"
        f"                  where b.revision = {before} and b.kind = o.kind and b.name = o.name)\n"
        f"on conflict do nothing;\n"
        f"delete from ml_private.revision_objects where revision = {before};\n"
        "-- Every new function is executable by PUBLIC, and ALTER DEFAULT PRIVILEGES IN SCHEMA cannot\n"
        "-- take that back: revoke it here; the files grant each function to the roles it serves.\n"
        "revoke execute on all functions in schema ml, ml_private from public;\n"
        f"delete from {CHECKSUM_TABLE};\n"
        f"insert into {CHECKSUM_TABLE} (path, checksum, revision) values\n    {rows};\n"
        f"-- End of repeatable objects\n"
    )
    return pieces


# After a downgrade step the database is no longer at the head its checksums describe: forget them,
# so the next upgrade (of whichever release runs it) re-applies its own sql/.
FORGET_SQL = f"""do $$
begin
    if to_regclass('{CHECKSUM_TABLE}') is not null then
        delete from {CHECKSUM_TABLE};
    end if;
end
$$;
"""


def applied_query() -> str:
    """The query reading the applied ``(path, checksum)`` pairs."""
    return f"select path, checksum from {CHECKSUM_TABLE}"
