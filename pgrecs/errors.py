"""Every error pgrecs raises. psycopg errors are translated here, and only here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg


class PgrecsError(Exception):
    """pgrecs failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigurationError(PgrecsError):
    """The database location or settings are not usable."""


class PgvectorMissing(PgrecsError):
    """The database has no pgvector >= 0.8: ask a superuser to run `CREATE EXTENSION vector`."""


class SchemaOutdated(PgrecsError):
    """The database schema is not at the version this pgrecs expects:
    run `pgrecs migrate` (or `alembic upgrade head`)."""


class InvalidParameter(PgrecsError):
    """A parameter is out of range or malformed."""


class UnknownItem(PgrecsError):
    """No item with that id exists."""


class NotEmbedded(PgrecsError):
    """The item has no vector yet: run `pgrecs embed`."""


class DimensionMismatch(PgrecsError):
    """The vector's dimension differs from the one the database was migrated with."""


class ModelMismatch(PgrecsError):
    """The database holds vectors from another embedding model."""


class ImportFileError(PgrecsError):
    """An import file is malformed; nothing was written."""

    def __init__(self, path: str, line: int | None, problem: str) -> None:
        where = f"{path}, line {line}" if line is not None else path
        super().__init__(f"{where}: {problem} (nothing was imported)")
        self.path = path
        self.line = line
        self.problem = problem


class IntegrityError(PgrecsError):
    """A write broke a constraint (unknown event type, duplicate, NULL id)."""


class PermissionDenied(PgrecsError):
    """The database role lacks a privilege (pgrecs_reader reads, pgrecs_writer also writes)."""


class DatabaseError(PgrecsError):
    """PostgreSQL reported an error pgrecs has no more specific name for."""


# SQLSTATE -> pgrecs exception. https://www.postgresql.org/docs/current/errcodes-appendix.html
_BY_SQLSTATE: dict[str, type[PgrecsError]] = {
    "P0002": UnknownItem,  # no_data_found
    "22023": InvalidParameter,  # invalid_parameter_value
    "22004": InvalidParameter,  # null_value_not_allowed
    "22P02": InvalidParameter,  # invalid_text_representation (malformed jsonb, vector, ...)
    "55000": NotEmbedded,  # object_not_in_prerequisite_state
    "23503": IntegrityError,  # foreign_key_violation
    "23502": IntegrityError,  # not_null_violation
    "23505": IntegrityError,  # unique_violation
    "23514": IntegrityError,  # check_violation
    "42501": PermissionDenied,  # insufficient_privilege
    "22007": InvalidParameter,  # invalid_datetime_format
}


def translate(exc: psycopg.Error) -> PgrecsError:
    """The named pgrecs error for a psycopg error, keeping PostgreSQL's message."""
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if isinstance(exc, psycopg.OperationalError) and not sqlstate:
        return ConfigurationError(f"cannot reach PostgreSQL: {exc}")
    message = exc.diag.message_primary or str(exc)
    if exc.diag.message_detail:
        message = f"{message}: {exc.diag.message_detail}"
    if exc.diag.message_hint:
        message = f"{message} (hint: {exc.diag.message_hint})"
    if sqlstate == "22000" and "dimensions" in message:
        return DimensionMismatch(message)
    if sqlstate == "23503" and exc.diag.constraint_name == "interactions_item_id_fkey":
        return UnknownItem(message)  # as pgrecs.record_interaction reports it
    cls = _BY_SQLSTATE.get(sqlstate, DatabaseError)
    return cls(message)


@contextmanager
def translated() -> Iterator[None]:
    """Re-raise psycopg errors as named pgrecs errors, chained to the original."""
    try:
        yield
    except psycopg.Error as exc:
        raise translate(exc) from exc
