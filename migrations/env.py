"""Alembic environment for pgmlops: online against a URL, offline to SQL (Supabase export)."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, pool, text

from pgmlops.db import sqlalchemy_url

# The version table lives in its own schema: downgrading the foundation drops ml and ml_private,
# and Supabase exposes public to the API.
VERSION_SCHEMA = "pgmlops"

config = context.config


def _url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url") or os.environ.get("DATABASE_URL")
    if not url:
        raise RuntimeError("pgmlops migrations need a database URL (config attribute 'url' or DATABASE_URL)")
    return sqlalchemy_url(url)


def run_offline() -> None:
    context.configure(
        url=_url() if config.attributes.get("url") else "postgresql+psycopg://",
        literal_binds=True,
        version_table_schema=VERSION_SCHEMA,
        transactional_ddl=True,
        transaction_per_migration=False,
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
        )
        with context.begin_transaction():
            # One migrator at a time: concurrent `pgmlops migrate` calls wait here.
            connection.execute(text("select pg_advisory_xact_lock(hashtext('pgmlops.migrate'))"))
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
