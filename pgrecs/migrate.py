"""`pgrecs migrate`: Alembic, pointed at the migrations shipped with this package."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import as_file, files

import psycopg
from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy.exc import DBAPIError

from pgrecs.errors import InvalidParameter, translate


class MigrationRefused(InvalidParameter, CommandError):
    """Alembic refused the migration (an unknown revision, an option out of range, a range that
    offline mode needs). Still a CommandError, for callers that catch Alembic's own."""


def alembic_config(url: str | None = None, x: dict[str, str] | None = None) -> Config:
    options = dict(x or {})
    if url is not None:
        options["url"] = url
    config = Config(cmd_opts=argparse.Namespace(x=[f"{k}={v}" for k, v in options.items()]))
    with as_file(files("pgrecs.migrations")) as path:
        config.set_main_option("script_location", str(path))
    return config


def upgrade(url: str | None = None, revision: str = "head", sql: bool = False, **x: str) -> None:
    with _translated():
        command.upgrade(alembic_config(url, x), revision, sql=sql)


def downgrade(url: str | None = None, revision: str = "base", sql: bool = False, **x: str) -> None:
    with _translated():
        command.downgrade(alembic_config(url, x), revision, sql=sql)


@contextmanager
def _translated() -> Iterator[None]:
    """Alembic's and the driver's errors as pgrecs errors, so that `pgrecs migrate`, `demo`,
    `evaluate` and `bench` report a bad revision or an unreachable database alike."""
    try:
        yield
    except CommandError as exc:
        raise MigrationRefused(str(exc)) from exc
    except psycopg.Error as exc:
        raise translate(exc) from exc
    except DBAPIError as exc:  # SQLAlchemy wraps driver errors raised through its engine
        if not isinstance(exc.orig, psycopg.Error):
            raise
        raise translate(exc.orig) from exc


def heads() -> list[str]:
    from alembic.script import ScriptDirectory

    return list(ScriptDirectory.from_config(alembic_config()).get_heads())
