"""Alembic environment for pgrecs.

Online: the URL comes from `-x url=...`, `sqlalchemy.url` in alembic.ini, or pgrecs' own
resolution (PGRECS_DATABASE_URL, PG* variables, else the embedded server).
Offline (`alembic upgrade head --sql`): no database is touched; the script is for a DBA to review
and run with psql.

Options: `-x dim=N` (content vector dimension, default 384), `-x collab_dim=N` (default 64); both
only matter for the first revision, which creates the vector columns.
"""

from __future__ import annotations

import psycopg
from alembic import context
from sqlalchemy import create_engine, pool, text

SCHEMA = "pgrecs"
config = context.config


def _conninfo() -> str:
    x = context.get_x_argument(as_dictionary=True)
    url = x.get("url") or config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from pgrecs.db import resolve_url

    return resolve_url()


def run_migrations_offline() -> None:
    context.configure(
        dialect_name="postgresql",
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        version_table_schema=SCHEMA,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.execute(f"create schema if not exists {SCHEMA}")
        context.run_migrations()


def run_migrations_online() -> None:
    conninfo = _conninfo()
    # psycopg parses any libpq conninfo (URL, key=value, or "" for PG* variables) itself.
    engine = create_engine(
        "postgresql+psycopg://",
        creator=lambda: psycopg.connect(conninfo),
        poolclass=pool.NullPool,
    )
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            version_table_schema=SCHEMA,
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            connection.execute(text(f"create schema if not exists {SCHEMA}"))
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
