"""Connections: where the database is, and whether it is ready for pgrecs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from pgvector.psycopg import register_vector
from psycopg import pq

from pgrecs import embedded
from pgrecs.config import configured_url
from pgrecs.errors import (
    InvalidParameter,
    PgvectorMissing,
    SchemaOutdated,
    translate,
    translated,
)
from pgrecs.queries import query

# The Alembic head this package's SQL calls expect (a test keeps it equal to migrations/).
SCHEMA_REVISION = "0014"
MIN_PGVECTOR = (0, 8)


def resolve_url(url: str | None = None) -> str:
    """The conninfo to use: configured (argument, PGRECS_DATABASE_URL, PG*), else the embedded
    server, started on demand."""
    configured = configured_url(url)
    return configured if configured is not None else embedded.start()


def open_connection(url: str | None = None, **kwargs: Any) -> psycopg.Connection[Any]:
    """A psycopg connection with pgvector types registered (no schema checks)."""
    conninfo = resolve_url(url)
    with translated():
        conn = psycopg.connect(conninfo, **kwargs)
    try:
        register_vector(conn)
    except psycopg.ProgrammingError as exc:  # vector type missing
        conn.close()
        raise PgvectorMissing() from exc
    except Exception:
        conn.close()
        raise
    return conn


def check_database(conn: psycopg.Connection[Any]) -> None:
    """Raise PgvectorMissing / SchemaOutdated unless the database is ready for this pgrecs."""
    with translated():
        row = conn.execute(query("pgvector_version")).fetchone()
    if row is None:
        raise PgvectorMissing()
    version = tuple(int(part) for part in str(row[0]).split(".")[:2])
    if version < MIN_PGVECTOR:
        raise PgvectorMissing(f"pgvector {row[0]} is too old: pgrecs needs 0.8 or newer")
    try:
        with conn.transaction():
            found = conn.execute(query("schema_revision")).fetchone()
    except psycopg.errors.UndefinedTable:
        found = None
    except psycopg.Error as exc:
        raise translate(exc) from exc
    revision = found[0] if found else None
    if revision != SCHEMA_REVISION:
        where = f'database "{conn.info.dbname}" on {conn.info.host}'  # never the password
        if revision and revision.isdigit() and int(revision) > int(SCHEMA_REVISION):
            raise SchemaOutdated(
                f"the schema of {where} is at revision {revision}, newer than this pgrecs "
                f"({SCHEMA_REVISION}) knows: upgrade pgrecs itself (pip install --upgrade "
                "pgrecs), do not migrate the database"
            )
        state = f"at revision {revision}" if revision else "not migrated"
        raise SchemaOutdated(
            f"the schema of {where} is {state}, this pgrecs needs {SCHEMA_REVISION}: "
            "run `pgrecs migrate` (or `alembic upgrade head`)"
        )


@contextmanager
def read_committed(conn: psycopg.Connection[Any], what: str) -> Iterator[None]:
    """A transaction (a savepoint inside the caller's) in which each statement sees what
    committed before it. Writers that wait for a lock and then mark stored user vectors stale,
    or read the data they are computed from, need that: a REPEATABLE READ snapshot is taken
    before the wait. Inside a caller's transaction at another level: InvalidParameter."""
    begins = conn.info.transaction_status == pq.TransactionStatus.IDLE
    if not begins:
        with translated():
            row = conn.execute(query("isolation")).fetchone()
        if row is not None and row[0] != "read committed":
            raise InvalidParameter(
                f"{what} inside a {row[0].upper()} transaction could keep vectors computed from "
                "data changed since its snapshot: run it outside a transaction or in a READ "
                "COMMITTED one"
            )
    with translated(), conn.transaction():
        if begins:
            conn.execute(query("read_committed"))
        yield
