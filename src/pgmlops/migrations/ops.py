"""What the Alembic revisions use to run SQL: text exactly as written, their own frozen files, the repeatable sql/.

A revision's SQL lives next to its script, in a directory named like it
(``migrations/versions/0003_features/*.sql``), and never changes once the revision is released:
a database upgraded today runs exactly what it ran then. The SQL these helpers wrap around those
files (the headers, the bookkeeping of :func:`run_sql_files_tracked`) is part of what released
revisions run, so it must not change either: the Supabase export test compares it byte for byte.
"""

from __future__ import annotations

from pathlib import Path

from alembic import op

from pgmlops.migrations import _repeatables


def run_sql(text: str) -> None:
    """Execute ``text`` verbatim (no bind-parameter parsing, so ``%`` and ``:name`` stay as they are).

    Online it goes straight to the driver's cursor; offline (``--sql``, the Supabase export) it is written
    to the output unchanged. ``op.execute`` would pass it through SQLAlchemy's ``text()``, which
    doubles every ``%`` in offline output.
    """
    context = op.get_context()
    if context.as_sql:
        context.impl.static_output(text.rstrip() + "\n")
    else:
        # The DBAPI cursor of Alembic's own connection, so the SQL joins the migration's
        # transaction; with no parameters psycopg sends the text as it is.
        dbapi = op.get_bind().connection.dbapi_connection
        assert dbapi is not None
        cursor = dbapi.cursor()
        try:
            cursor.execute(text)
        finally:
            cursor.close()


def revision_dir(script: str) -> Path:
    """The directory of a revision's own SQL files: beside its script, named like it without ``.py``."""
    return Path(script).with_suffix("")


def run_revision_file(script: str, name: str, *, label: str | None = None) -> None:
    """Execute the file ``name`` of the revision whose script is ``script`` (pass ``__file__``)
    verbatim, headed by ``-- <label>`` (default: its path in the repository).

    Revisions 0001-0004 were released when their files lived in ``sql/``; they pass
    ``label=f"sql/{name}"`` so what they run stays the same to the byte.
    """
    path = revision_dir(script) / name
    header = label if label is not None else f"migrations/versions/{path.parent.name}/{name}"
    run_sql(f"-- {header}\n" + path.read_text(encoding="utf-8"))


# Revisions after the foundation record what they create in ml_private.revision_objects, so their
# downgrade drops exactly that, however many functions their SQL files define. The bookkeeping is
# SQL, so it works the same online and in the offline export.
_OBJECTS_NOW = """
    select 'function' as kind, format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)) as name
    from pg_proc p join pg_namespace n on n.oid = p.pronamespace
    where n.nspname in ('ml', 'ml_private', 'ml_datasets')
    union all
    select case when c.relkind in ('v', 'm') then 'view' else 'table' end, format('%I.%I', n.nspname, c.relname)
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname in ('ml', 'ml_private', 'ml_datasets') and c.relkind in ('r', 'p', 'v', 'm') and not c.relispartition
      and c.relname <> 'revision_objects'
"""


def run_sql_files_tracked(revision: str, script: str, names: list[str], *, label: str | None = None) -> None:
    """Execute the revision's files ``names`` (see :func:`run_revision_file`; ``label`` is a format
    string with ``{name}``), recording the functions, tables and views they create under ``revision``
    for :func:`drop_tracked`."""
    run_sql(f"""
        create table if not exists ml_private.revision_objects (
            revision text not null, kind text not null, name text not null, primary key (revision, kind, name));
        comment on table ml_private.revision_objects is 'What each pgmlops migration revision created (its downgrade drops it)';
        insert into ml_private.revision_objects (revision, kind, name)
        select '_before:{revision}', kind, name from ({_OBJECTS_NOW}) o on conflict do nothing;
    """)
    for name in names:
        run_revision_file(script, name, label=None if label is None else label.format(name=name))
    run_sql(f"""
        insert into ml_private.revision_objects (revision, kind, name)
        select '{revision}', o.kind, o.name from ({_OBJECTS_NOW}) o
        where not exists (select 1 from ml_private.revision_objects b
                          where b.revision = '_before:{revision}' and b.kind = o.kind and b.name = o.name)
        on conflict do nothing;
        delete from ml_private.revision_objects where revision = '_before:{revision}';
        -- Every new function is executable by PUBLIC, and ALTER DEFAULT PRIVILEGES IN SCHEMA cannot
        -- take that back: revoke it here; the SQL files grant each function to the roles it serves.
        revoke execute on all functions in schema ml, ml_private from public;
    """)


def drop_tracked(revision: str) -> None:
    """Drop what :func:`run_sql_files_tracked` recorded for ``revision`` (and the views the repeatable
    sql/ added while ``revision`` was the head): views, then functions (with their triggers), then
    tables, and their entries in pgmlops' registries."""
    run_sql(f"""
        do $$
        declare
            v_obj record;
        begin
            for v_obj in select kind, name from ml_private.revision_objects where revision = '{revision}'
                         order by case kind when 'view' then 1 when 'function' then 2 else 3 end, name desc loop
                execute format('drop %s if exists %s cascade', v_obj.kind, v_obj.name);
            end loop;
            delete from ml_private.tenant_tables t using ml_private.revision_objects o
            where o.revision = '{revision}' and o.kind = 'table' and t.table_name = o.name;
            delete from ml_private.time_partitioned_tables t using ml_private.revision_objects o
            where o.revision = '{revision}' and o.kind = 'table' and t.table_name = o.name;
            delete from ml_private.revision_objects where revision = '{revision}';
        end
        $$;
    """)


def apply_repeatables(revision: str, *, only_if_changed: bool = False) -> bool:
    """Apply the repeatable files of ``sql/`` in the migration's transaction, recording their checksums.

    Called by ``migrations/env.py`` when an upgrade reaches the head ``revision``. With
    ``only_if_changed`` (a database already at the head), nothing runs when the checksums the
    database holds equal the files'. Offline (the Supabase export) the files are always written.
    Returns whether anything was applied.
    """
    repeatables = _repeatables.files()
    context = op.get_context()
    if only_if_changed and not context.as_sql:
        rows = op.get_bind().exec_driver_sql(_repeatables.applied_query()).fetchall()
        applied: dict[str, str] = {row[0]: row[1] for row in rows}
        if applied == {f.path: f.checksum for f in repeatables}:
            return False
    for piece in _repeatables.statements(revision, repeatables):
        run_sql(piece)
    return True


def forget_repeatables() -> None:
    """Clear the applied checksums (after a downgrade step), so the next upgrade re-applies sql/."""
    run_sql(_repeatables.FORGET_SQL)
