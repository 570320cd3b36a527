"""The `pgrecs` command, run as a user runs it (a subprocess), against real databases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

ENV_VARS = ("PGRECS_DATABASE_URL", "PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE")


def pgrecs(
    *args: str, url: str | None = None, data_dir: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env["HF_HUB_OFFLINE"] = "1"
    if url is not None:
        env["PGRECS_DATABASE_URL"] = url
    if data_dir is not None:
        env["PGRECS_DATA_DIR"] = str(data_dir)
    result = subprocess.run(
        [sys.executable, "-m", "pgrecs.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_help_lists_commands_and_environment() -> None:
    out = pgrecs("--help").stdout
    for word in ("migrate", "import", "embed", "similar", "demo", "PGRECS_DATABASE_URL", "PGHOST"):
        assert word in out
    assert "PGRECS_DATA_DIR" in pgrecs("similar", "--help").stdout
    for status in ("0    success", "1    error", "2    usage error", "130  interrupted"):
        assert status in out  # the README promises `pgrecs --help` shows the exit codes


def test_usage_errors_exit_2() -> None:
    assert pgrecs("frobnicate", check=False).returncode == 2
    assert pgrecs("similar", check=False).returncode == 2  # missing item id
    assert pgrecs("similar", "x", "-k", "ten", check=False).returncode == 2
    # an option out of its range is a usage error too, named before any database work
    for args, message in [
        (["similar", "x", "-k", "0"], "argument -k: 0 is out of range (1..1000)"),
        (["recommend", "u", "-k", "1001"], "argument -k: 1001 is out of range (1..1000)"),
        (["recommend", "u", "--diversity", "2"], "--diversity: 2 is out of range (0..1)"),
        (["recommend", "u", "--diversity", "nan"], "--diversity: nan is out of range (0..1)"),
        (["train", "--epochs", "0"], "--epochs: 0 is out of range (>= 1)"),
        (["train", "--learning-rate", "0"], "--learning-rate: 0 is out of range (> 0)"),
        (["refresh", "--chunk-size", "0"], "--chunk-size: 0 is out of range (>= 1)"),
        (["embed", "--poll-interval", "-1"], "--poll-interval: -1 is out of range (> 0)"),
        (["bench", "--queries", "5"], "--queries: 5 is out of range (>= 10)"),
    ]:
        result = pgrecs(*args, url="host=/nonexistent-dir", check=False)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)


def test_database_url_after_the_command(db_url: str) -> None:
    before = pgrecs("--database-url", db_url, "recommend", "nobody", "--json").stdout
    after = pgrecs("recommend", "nobody", "--json", "--database-url", db_url).stdout
    assert json.loads(after) == json.loads(before)
    assert "--database-url URL" in pgrecs("recommend", "--help").stdout
    result = pgrecs("recommend", "nobody", "--database-url", "host=/nonexistent-dir", check=False)
    assert result.returncode == 1 and "cannot reach PostgreSQL" in result.stderr


def test_migrate_refuses_a_dimension_the_schema_does_not_have(db_url: str) -> None:
    """Revision 0001 alone reads --dim: a later run must not ignore a different one."""
    result = pgrecs("migrate", "--dim", "768", url=db_url, check=False)
    assert result.returncode == 1
    assert "-x dim=768: the schema already holds 3-d pgrecs.items.embedding" in result.stderr
    assert pgrecs("migrate", "--dim", "3", url=db_url).returncode == 0
    assert pgrecs("migrate", url=db_url).returncode == 0  # no --dim: the schema's own


def test_errors_exit_1_with_a_message(db_url: str, tmp_path: Path) -> None:
    result = pgrecs("similar", "nope", url=db_url, check=False)
    assert result.returncode == 1
    assert "pgrecs: error: pgrecs.similar_items: unknown item 'nope'" in result.stderr
    bad = tmp_path / "items.csv"
    bad.write_text("item_id,title\na,A\n,B\n")
    result = pgrecs("import", "items", str(bad), url=db_url, check=False)
    assert result.returncode == 1
    assert f"{bad}, line 3: item_id is required (a non-empty string)" in result.stderr


def test_unmigrated_database_says_how_to_fix_it(empty_db_url: str) -> None:
    result = pgrecs("similar", "a", url=empty_db_url, check=False)
    assert result.returncode == 1
    assert "run `pgrecs migrate`" in result.stderr
    pgrecs("migrate", url=empty_db_url)
    result = pgrecs("similar", "a", url=empty_db_url, check=False)
    assert "unknown item 'a'" in result.stderr


def test_migrate_against_a_missing_database_is_a_clear_error(admin_url: str) -> None:
    from psycopg.conninfo import make_conninfo

    missing = make_conninfo(admin_url, dbname="pgrecs_no_such_database")
    result = pgrecs("migrate", url=missing, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("pgrecs: error: cannot reach PostgreSQL")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["migrate", "demo"])
def test_an_unreachable_server_is_one_line_without_a_traceback(command: str) -> None:
    """libpq's advice ("Is the server running locally ...?") is cut; `demo` migrates through
    pgrecs.migrate, which translates the errors for every caller."""
    url = "postgresql:///nowhere?host=/nonexistent-dir&connect_timeout=2"
    result = pgrecs(command, url=url, check=False)
    assert result.returncode == 1
    error = result.stderr[result.stderr.index("pgrecs: error:") :]
    assert error.startswith("pgrecs: error: cannot reach PostgreSQL")
    assert error.count("\n") == 1 and "Traceback" not in result.stderr


def test_demo_does_not_print_the_password() -> None:
    url = "postgresql://alice:s3cret-pw@/nowhere?host=/nonexistent-dir&connect_timeout=2"
    result = pgrecs("demo", url=url, check=False)
    assert result.stdout.startswith("database: ") and "password=****" in result.stdout
    assert "s3cret-pw" not in result.stdout + result.stderr
    assert result.returncode == 1


def test_migrate_to_an_unknown_revision_is_a_clear_error(empty_db_url: str) -> None:
    result = pgrecs("migrate", "--revision", "9999", url=empty_db_url, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("pgrecs: error: ") and "9999" in result.stderr
    assert "Traceback" not in result.stderr


def test_migrate_sql_prints_a_script_without_touching_the_database(empty_db_url: str) -> None:
    out = pgrecs("migrate", "--sql", "--dim", "768", url=empty_db_url).stdout
    assert "embedding     public.vector(768)" in out
    assert "create or replace function pgrecs.similar_items" in out
    result = pgrecs("similar", "a", url=empty_db_url, check=False)
    assert "not migrated" in result.stderr


def test_downgrade_without_a_revision_is_a_usage_error(db_url: str) -> None:
    """A bare --downgrade used to go to base, dropping every table with its data."""
    import psycopg

    result = pgrecs("migrate", "--downgrade", url=db_url, check=False)
    assert result.returncode == 2
    assert "--downgrade needs --revision" in result.stderr
    with psycopg.connect(db_url) as conn:
        assert conn.execute("select to_regclass('pgrecs.items') is not null").fetchone() == (True,)
    assert "required with --downgrade" in " ".join(pgrecs("migrate", "--help").stdout.split())


def test_operations_doc_describes_the_current_head() -> None:
    """docs/operations.md names the head this pgrecs needs, and its offline downgrade example
    works for a database at head."""
    import re

    from pgrecs.db import SCHEMA_REVISION

    text = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    assert f"the revision this pgrecs was built for, `{SCHEMA_REVISION}`" in text
    assert f"head `{SCHEMA_REVISION}`" in text
    example = re.search(r"`pgrecs migrate --downgrade --sql --revision (\S+)`", text)
    assert example is not None and example[1].startswith(f"{SCHEMA_REVISION}:")
    script = pgrecs("migrate", "--downgrade", "--sql", "--revision", example[1]).stdout
    assert f"WHERE pgrecs.alembic_version.version_num = '{SCHEMA_REVISION}'" in script


@pytest.mark.parametrize(
    ("index", "expected"),
    [
        ("", "pip install --quiet torch==2.13.0"),
        ("https://x.test/cpu", "pip install --quiet --index-url https://x.test/cpu torch==2.13.0"),
    ],
)
def test_makefile_torch_index(tmp_path: Path, index: str, expected: str) -> None:
    """TORCH_INDEX (empty by default) is passed to pip as --index-url for the torch step."""
    venv = tmp_path / "venv"
    result = subprocess.run(
        ["make", "-n", f"VENV={venv}", f"TORCH_INDEX={index}", f"{venv}/bin/activate"],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    commands = " ".join(result.stdout.split())
    assert expected in commands
    assert ("--index-url" in commands) == bool(index)


def test_embedded_server_lifecycle(tmp_path: Path) -> None:
    started = pgrecs("db", "start", data_dir=tmp_path).stdout.strip()
    try:
        assert started.startswith("postgresql://")
        assert pgrecs("db", "url", data_dir=tmp_path).stdout.strip() == started
        # with nothing configured, commands use that server
        pgrecs("migrate", data_dir=tmp_path)
        result = pgrecs("similar", "a", data_dir=tmp_path, check=False)
        assert "unknown item 'a'" in result.stderr
    finally:
        assert pgrecs("db", "stop", data_dir=tmp_path).stdout.strip() == "stopped"
    result = pgrecs("db", "url", data_dir=tmp_path, check=False)
    assert result.returncode == 1 and "not running" in result.stderr


CATALOGUE = [
    {
        "item_id": "pytorch-book",
        "title": "Programming PyTorch for Deep Learning",
        "category": "books",
        "tags": ["pytorch", "neural networks"],
        "description": "Build and train neural networks with PyTorch, from tensors to deployment.",
    },
    {
        "item_id": "dl-book",
        "title": "Deep Learning",
        "category": "books",
        "tags": ["machine learning"],
        "description": "The mathematics and practice of deep neural networks and their training.",
    },
    {
        "item_id": "pg-course",
        "title": "PostgreSQL Administration",
        "category": "courses",
        "tags": ["databases", "sql"],
        "description": "Backups, replication, vacuum and index maintenance for PostgreSQL servers.",
    },
    {
        "item_id": "pasta-class",
        "title": "Fresh Pasta by Hand",
        "category": "courses",
        "tags": ["cooking"],
        "description": "Make tagliatelle and ravioli from flour and eggs.",
    },
    {
        "item_id": "tent",
        "title": "Two-Person Backpacking Tent",
        "category": "outdoor",
        "tags": ["camping"],
        "description": "A light freestanding tent for three-season trips.",
    },
]


@pytest.mark.model
def test_real_model_end_to_end(db384_url: str, tmp_path: Path) -> None:
    """The bundled all-MiniLM-L6-v2 places a PyTorch book nearer a deep-learning book than a
    PostgreSQL course, through import, embed and pgrecs.similar_items."""
    items = tmp_path / "items.jsonl"
    items.write_text("\n".join(json.dumps(row) for row in CATALOGUE))
    pgrecs("import", "items", str(items), url=db384_url)
    assert "embedded 5, reused 0 from cache" in pgrecs("embed", "-q", url=db384_url).stdout
    assert (
        "embedded 0, reused 0 from cache, 5 already up to date"
        in pgrecs("embed", "-q", url=db384_url).stdout
    )
    ranked = json.loads(
        pgrecs("similar", "pytorch-book", "-k", "4", "--json", url=db384_url).stdout
    )
    order = [row["item_id"] for row in ranked]
    assert order[0] == "dl-book"
    assert order.index("dl-book") < order.index("pg-course")
    scores = {row["item_id"]: row["score"] for row in ranked}
    assert scores["dl-book"] > scores["pg-course"] + 0.1
    # nothing pending: the model is not loaded (seconds), but another model is still refused
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    idle = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pgrecs.cli", "embed"],
        env={**env, "PGRECS_DATABASE_URL": db384_url},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "5 already up to date" in idle.stdout
    assert "sentence_transformers" not in idle.stderr and "torch" not in idle.stderr
    other = pgrecs("embed", "--model", "/nonexistent/model", url=db384_url, check=False)
    assert other.returncode == 1
    assert "holds vectors from 'sentence-transformers/all-MiniLM-L6-v2'" in other.stderr
    items.write_text(json.dumps({"item_id": "new", "title": "pending"}))
    pgrecs("import", "items", str(items), url=db384_url)
    missing = pgrecs("embed", "--model", "/nonexistent/model", url=db384_url, check=False)
    assert missing.returncode == 1
    assert "cannot load embedding model '/nonexistent/model'" in missing.stderr
    # a row written by SQL that pgrecs cannot embed: the others are embedded, it is named,
    # and the exit status says the run did not finish the job
    with psycopg.connect(db384_url, autocommit=True) as conn:
        conn.execute(
            "insert into pgrecs.items (item_id, attributes) values ('bad', %s::jsonb)",
            ('{"a": ' + "[" * 600 + "]" * 600 + "}",),
        )
    partial = pgrecs("embed", "-q", url=db384_url, check=False)
    assert partial.returncode == 1
    assert "embedded 1, reused 0 from cache" in partial.stdout
    assert (
        "pgrecs: error: item 'bad': attributes are nested too deeply (more than 500 levels);"
        " the item stays pending" in partial.stderr
    )


def test_recommend_explain_refresh(db_url: str) -> None:
    import psycopg
    from pgvector.psycopg import register_vector

    from tests.conftest import insert_items

    with psycopg.connect(db_url, autocommit=True) as conn:
        register_vector(conn)
        conn.execute("update pgrecs.settings set value = '1.01' where name = 'dedup_threshold'")
        insert_items(
            conn,
            [("x1", [1, 0, 0]), ("x2", [0.9, 0.1, 0]), ("y1", [0, 1, 0]), ("z1", [0, 0, 1])],
        )
        conn.execute("select pgrecs.record_interaction('u1', 'x1', 'purchase')")

    rows = json.loads(pgrecs("recommend", "u1", "-k", "2", "--json", url=db_url).stdout)
    assert rows[0] == {
        "item_id": "x2",
        "score": pytest.approx(0.9 / (0.81 + 0.01) ** 0.5),
        "source": "content",
        "because_of": "x1",
    }
    assert len(rows) == 2
    table = pgrecs("recommend", "newcomer", "-k", "1", url=db_url).stdout
    assert table.split("\t")[1:3] == ["x1", "popular"]

    why = json.loads(pgrecs("explain", "u1", "x2", "--json", url=db_url).stdout)
    assert [(w["history_item_id"], w["event_type"], w["weight"]) for w in why] == [
        ("x1", "purchase", 3.0)
    ]

    assert pgrecs("refresh", "-q", url=db_url).stdout.startswith("refreshed 1 users")
    assert pgrecs("refresh", "-q", url=db_url).stdout.startswith("refreshed 0 users")
    assert pgrecs("refresh", "-q", "--all", url=db_url).stdout.startswith("refreshed 1 users")

    assert pgrecs("refresh", "--chunk-size", "0", url=db_url, check=False).returncode == 2
    assert pgrecs("explain", "u1", url=db_url, check=False).returncode == 2


def test_evaluate_usage_errors(tmp_path: Path) -> None:
    assert pgrecs("evaluate", check=False).returncode == 2
    assert pgrecs("evaluate", "netflix", str(tmp_path), check=False).returncode == 2
    missing = pgrecs("evaluate", "movielens", str(tmp_path), check=False)
    assert missing.returncode == 1 and "movies.csv: missing" in missing.stderr
    assert "--tune" in pgrecs("evaluate", "--help").stdout


def test_evaluate_input_and_output_errors_are_clear(tmp_path: Path) -> None:
    """Exit status 1 with one line naming the file, before any model or database work."""
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\na,A\n")
    events = tmp_path / "events.csv"
    events.write_text("user_id,item_id,occurred_at\nu,a,2026-01-02\n")
    absent = tmp_path / "absent.csv"
    movielens = tmp_path / "ml"
    movielens.mkdir()
    (movielens / "movies.csv").write_text("movieId,title,genres\n1,Toy Story,Comedy\n")
    (movielens / "tags.csv").write_text("userId,movieId,tag,timestamp\n")
    (movielens / "ratings.csv").write_text("user,movie,rating,timestamp\n1,1,4,0\n")
    cases = [
        (["--items", str(absent), "--interactions", str(events)], f"{absent}: no such file"),
        (["--items", str(items), "--interactions", str(absent)], f"{absent}: no such file"),
        (["movielens", str(movielens)], "ratings.csv, line 1: missing column(s): movieId"),
        (["--items", str(items), "--interactions", str(events), "--out", str(items)], "exists"),
    ]
    for args, message in cases:
        result = pgrecs("evaluate", *args, "--scratch-url", "host=/nonexistent-dir", check=False)
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith("pgrecs: error: ") and message in result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    (movielens / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,four,0\n")
    result = pgrecs("evaluate", "movielens", str(movielens), check=False)
    assert result.returncode == 1
    assert "ratings.csv, line 2: bad value" in result.stderr


def test_train_help_states_the_defaults_train_uses() -> None:
    """`pgrecs train` passes only the options given, so its help must quote TrainSettings."""
    from pgrecs.train import TrainSettings

    out = " ".join(pgrecs("train", "--help").stdout.split())
    assert f"passes over the log (default {TrainSettings.epochs})" in out
    assert f"examples per step (default {TrainSettings.batch_size})" in out
    assert f"Adam step (default {TrainSettings.learning_rate:g})" in out
