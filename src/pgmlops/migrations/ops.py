"""What the Alembic revisions use to run SQL text exactly as written, online and offline."""

from __future__ import annotations

from alembic import op

from pgmlops.migrations._resources import read_sql


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


def run_sql_file(name: str) -> None:
    """Execute ``sql/<name>`` verbatim, headed by a comment naming the file."""
    run_sql(f"-- sql/{name}\n" + read_sql(name))


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


def run_sql_files_tracked(revision: str, names: list[str]) -> None:
    """Execute ``sql/<name>`` for each name, recording the functions, tables and views they create
    under ``revision`` for :func:`drop_tracked`."""
    run_sql(f"""
        create table if not exists ml_private.revision_objects (
            revision text not null, kind text not null, name text not null, primary key (revision, kind, name));
        comment on table ml_private.revision_objects is 'What each pgmlops migration revision created (its downgrade drops it)';
        insert into ml_private.revision_objects (revision, kind, name)
        select '_before:{revision}', kind, name from ({_OBJECTS_NOW}) o on conflict do nothing;
    """)
    for name in names:
        run_sql_file(name)
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
    """Drop what :func:`run_sql_files_tracked` recorded for ``revision``: views, then functions
    (with their triggers), then tables, and their entries in pgmlops' registries."""
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
