"""Alembic environment for pgrecs.

Online: the URL comes from `-x url=...`, `sqlalchemy.url` in alembic.ini, or pgrecs' own
resolution (PGRECS_DATABASE_URL, PG* variables, else the embedded server).
Offline (`alembic upgrade head --sql`): no database is touched; the script is for a DBA to review
and run with psql.

Options: `-x dim=N` (content vector dimension, default 384), `-x collab_dim=N` (default 64); both
only matter for the first revision, which creates the vector columns. Online, a value that
differs from the columns of an existing schema is refused rather than ignored.
"""

from __future__ import annotations

import psycopg
from alembic import context
from alembic.util import CommandError
from sqlalchemy import Connection, create_engine, pool, text

SCHEMA = "pgrecs"
config = context.config


def _conninfo() -> str:
    x = context.get_x_argument(as_dictionary=True)
    url = x.get("url") or config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from pgrecs.db import resolve_url

    return resolve_url()


def _check_dimensions(connection: Connection) -> None:
    """-x dim / collab_dim against the vector columns of an existing schema: revision 0001
    alone reads them, so a different value would be silently ignored."""
    x = context.get_x_argument(as_dictionary=True)
    for option, column in (("dim", "embedding"), ("collab_dim", "collab_embedding")):
        if option not in x:
            continue
        held = connection.execute(
            text(
                "select atttypmod from pg_catalog.pg_attribute"
                " where attrelid = pg_catalog.to_regclass('pgrecs.items') and attname = :column"
                " and not attisdropped"
            ),
            {"column": column},
        ).scalar()
        try:
            wanted = int(x[option])
        except ValueError:
            continue  # revision 0001 names the malformed value
        if held is not None and held > 0 and held != wanted:
            raise CommandError(
                f"-x {option}={x[option]}: the schema already holds {held}-d "
                f"pgrecs.items.{column}; dimensions are fixed when the schema is created "
                "(to change models, see `pgrecs embed --reembed-all` and `--switch-sql`)"
            )


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
        _check_dimensions(connection)
        with context.begin_transaction():
            connection.execute(text(f"create schema if not exists {SCHEMA}"))
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
