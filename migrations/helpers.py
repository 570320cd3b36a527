"""Run raw SQL from migrations, online and offline alike.

Online, the SQL goes to the driver untouched (no bind-parameter parsing, so `%` and `:` are
safe). Offline, Alembic renders it through SQLAlchemy's text(), so colons that look like bind
parameters are escaped first.
"""

from __future__ import annotations

import re
from pathlib import Path

from alembic import context, op
from alembic.util import CommandError
from sqlalchemy import text

SQL_DIR = Path(__file__).parent / "sql"
_BIND_LIKE = re.compile(r"(?<![:\w\\]):(?=\w)")


def execute_sql(sql: str) -> None:
    if context.is_offline_mode():
        op.execute(text(_BIND_LIKE.sub(r"\\:", sql)))
    else:
        # Straight to psycopg with no parameters, so it parses no placeholders.
        dbapi = op.get_bind().connection.dbapi_connection
        assert dbapi is not None
        with dbapi.cursor() as cursor:
            cursor.execute(sql)


def execute_sql_file(revision_dir: str, name: str) -> None:
    """Execute a frozen copy of a `sql/` file, as it was when that revision was written."""
    execute_sql((SQL_DIR / revision_dir / name).read_text())


def x_int(name: str, default: int, low: int, high: int) -> int:
    raw = context.get_x_argument(as_dictionary=True).get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise CommandError(f"-x {name}={raw!r}: expected an integer") from None
    if not low <= value <= high:
        raise CommandError(f"-x {name}={value}: must be between {low} and {high}")
    return value
