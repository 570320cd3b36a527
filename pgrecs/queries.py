"""Load the named queries of queries.sql."""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files

from psycopg import sql

# pg_advisory_xact_lock key ("pgrecs") that orders model changes with the writes that read the
# models: `pgrecs train` and a content model switch take it exclusively, fill_collaborative and
# each `pgrecs refresh` chunk take it shared.
LOCK_KEY = 0x7067_7265_6373
# The key that orders refresh chunks (shared) with changes in place of what stored user vectors
# were computed from (exclusive: the triggers of revision 0013 on interactions, event_types and
# settings). Written as the literal 123589603189620 in sql/functions.
USERS_LOCK_KEY = LOCK_KEY + 1

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@cache
def _all() -> dict[str, str]:
    text = files("pgrecs").joinpath("queries.sql").read_text()
    parts = _NAME.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def query(name: str) -> sql.SQL:
    return sql.SQL(_all()[name])
