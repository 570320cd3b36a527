"""`pgrecs migrate`: Alembic, pointed at the migrations shipped with this package."""

from __future__ import annotations

import argparse
from importlib.resources import as_file, files

from alembic import command
from alembic.config import Config


def alembic_config(url: str | None = None, x: dict[str, str] | None = None) -> Config:
    options = dict(x or {})
    if url is not None:
        options["url"] = url
    config = Config(cmd_opts=argparse.Namespace(x=[f"{k}={v}" for k, v in options.items()]))
    with as_file(files("pgrecs.migrations")) as path:
        config.set_main_option("script_location", str(path))
    return config


def upgrade(url: str | None = None, revision: str = "head", sql: bool = False, **x: str) -> None:
    command.upgrade(alembic_config(url, x), revision, sql=sql)


def downgrade(url: str | None = None, revision: str = "base", sql: bool = False, **x: str) -> None:
    command.downgrade(alembic_config(url, x), revision, sql=sql)


def heads() -> list[str]:
    from alembic.script import ScriptDirectory

    return list(ScriptDirectory.from_config(alembic_config()).get_heads())
