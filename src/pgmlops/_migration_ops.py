"""What the Alembic revisions use to run SQL text exactly as written, online and offline."""

from __future__ import annotations

from alembic import op

from pgmlops._resources import read_sql


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
