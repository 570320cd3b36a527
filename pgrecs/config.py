"""Where the database is, and where pgrecs keeps its embedded server."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

# The libpq variables that mean "the user configured a server": with any of them set, an empty
# conninfo string lets libpq assemble the connection (https://www.postgresql.org/docs/current/libpq-envars.html).
LIBPQ_VARS = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE")

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_DIM = 384
DEFAULT_COLLAB_DIM = 64
EMBEDDED_DATABASE = "pgrecs"

ENVIRONMENT_HELP = """\
environment variables:
  PGRECS_DATABASE_URL  PostgreSQL URL or conninfo (wins over PG* variables)
  PGHOST, PGHOSTADDR, PGPORT, PGDATABASE, PGUSER, PGSERVICE
                       standard libpq variables (PGPASSWORD etc. apply too); any of these
                       selects your server when PGRECS_DATABASE_URL is unset
  PGRECS_DATA_DIR      where the embedded PostgreSQL keeps its data when no server is
                       configured (default: the user data directory, e.g. ~/.local/share/pgrecs)
  PGRECS_MODEL         sentence-transformers model name or path
                       (default: the bundled all-MiniLM-L6-v2, loaded offline)

exit status:
  0    success
  1    error, printed to stderr as `pgrecs: error: ...` (pgrecs, database or file)
  2    usage error (unknown command or option, malformed, missing or out-of-range argument)
  130  interrupted (Ctrl-C); `embed --watch` and `refresh --watch` stop cleanly on Ctrl-C or
       SIGTERM, after the batch in progress, with 0
"""


def data_dir() -> Path:
    """The embedded server's home: PGRECS_DATA_DIR, else the platform's user data directory."""
    configured = os.environ.get("PGRECS_DATA_DIR")
    base = Path(configured) if configured else platformdirs.user_data_path("pgrecs")
    return base.expanduser().resolve()


def configured_url(url: str | None = None) -> str | None:
    """The configured conninfo, or None when nothing is configured (use the embedded server).

    Order: the argument, PGRECS_DATABASE_URL, then the libpq PG* variables (returned as "", which
    libpq completes from the environment).
    """
    if url:
        return url
    env_url = os.environ.get("PGRECS_DATABASE_URL")
    if env_url:
        return env_url
    if any(os.environ.get(name) for name in LIBPQ_VARS):
        return ""
    return None


def masked(conninfo: str) -> str:
    """The conninfo for printing: a password in it is replaced by ****."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "(not a valid conninfo)"
    if "password" not in params:
        return conninfo
    return make_conninfo("", **{**params, "password": "****"})


def model_name() -> str:
    return os.environ.get("PGRECS_MODEL") or DEFAULT_MODEL
