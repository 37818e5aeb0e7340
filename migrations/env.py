"""Alembic environment for pgmlops: online against a URL, offline to SQL (Supabase export).

After the versioned revisions, the repeatable SQL of sql/ (functions, views, triggers, policies,
grants) is applied in the transaction of the step that reaches the head revision; a database
already at the head gets it when its recorded checksums differ from the files (config attribute
``repeatables = "if-changed"``, set by ``pgmlops.migrations.upgrade``). A downgrade step forgets
the checksums, so the next upgrade applies sql/ again. See docs/migrations.md.
"""

from __future__ import annotations

import os
from typing import Any

from alembic import context
from alembic.operations import Operations
from sqlalchemy import create_engine, pool, text

from pgmlops.db import sqlalchemy_url
from pgmlops.migrations.ops import apply_repeatables, forget_repeatables

# The version table lives in its own schema: downgrading the foundation drops ml and ml_private,
# and Supabase exposes public to the API.
VERSION_SCHEMA = "pgmlops"

config = context.config
HEAD = context.script.get_current_head()


def _url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url") or os.environ.get("DATABASE_URL")
    if not url:
        raise RuntimeError("pgmlops migrations need a database URL (config attribute 'url' or DATABASE_URL)")
    return sqlalchemy_url(url)


class _Steps:
    """What the steps of this run did, for the check after them."""

    ran = False
    repeatables_applied = False


def _after_step(*, ctx: Any, step: Any, heads: set[str], run_args: Any) -> None:
    """Called by Alembic in each step's transaction, after the step (on_version_apply)."""
    _Steps.ran = True
    if not step.is_upgrade:
        forget_repeatables()
    elif heads == {HEAD} and config.attributes.get("repeatables", "auto") != "never":
        # A versioned step may have dropped or altered what the repeatables own: apply them all.
        apply_repeatables(HEAD)
        _Steps.repeatables_applied = True


def run_offline() -> None:
    context.configure(
        url=_url() if config.attributes.get("url") else "postgresql+psycopg://",
        literal_binds=True,
        version_table_schema=VERSION_SCHEMA,
        transactional_ddl=True,
        transaction_per_migration=False,
        on_version_apply=_after_step,
    )
    with context.begin_transaction():
        context.execute(f"create schema if not exists {VERSION_SCHEMA}")
        context.run_migrations()


def run_online() -> None:
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        connection.execute(text(f"create schema if not exists {VERSION_SCHEMA}"))
        connection.commit()
        context.configure(
            connection=connection,
            version_table_schema=VERSION_SCHEMA,
            transactional_ddl=True,
            transaction_per_migration=True,
            on_version_apply=_after_step,
        )
        # One migrator at a time: concurrent `pgmlops migrate` calls wait here. A session lock,
        # held across the steps' transactions and the repeatables' (the connection closes after).
        connection.execute(text("select pg_advisory_lock(hashtext('pgmlops.migrate'))"))
        with context.begin_transaction():
            context.run_migrations()
        if (config.attributes.get("repeatables") == "if-changed" and not _Steps.repeatables_applied
                and context.get_context().get_current_heads() == (HEAD,)):
            # Already at the head: apply sql/ only when it is not what the database last applied.
            with Operations.context(context.get_context()):
                apply_repeatables(HEAD, only_if_changed=True)
        if connection.in_transaction():
            connection.commit()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
