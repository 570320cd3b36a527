"""The Python package against a real database: connect, imports, embedding, errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import psycopg
import pytest

import pgrecs
from pgrecs.config import configured_url
from tests.conftest import HashEmbedder


@pytest.fixture
def client(db_url: str) -> pgrecs.Client:
    with pgrecs.connect(db_url) as c:
        yield c


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


ITEMS_CSV = """item_id,title,description,category,tags,attributes,available
b1,Deep Learning with PyTorch,neural networks in python,books,pytorch|deep-learning,"{""format"": ""paperback""}",true
b2,PostgreSQL Performance,indexes and query plans,books,"[""postgresql"", ""sql""]",{},true
c1,Italian Cooking Class,fresh pasta by hand,courses,cooking,,false
"""


# -- configuration ----------------------------------------------------------------------------


def test_url_resolution_order(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "PGRECS_DATABASE_URL",
        "PGHOST",
        "PGPORT",
        "PGDATABASE",
        "PGUSER",
        "PGSERVICE",
        "PGHOSTADDR",
    ):
        monkeypatch.delenv(name, raising=False)
    assert configured_url() is None  # nothing configured: embedded
    monkeypatch.setenv("PGHOST", "db.internal")
    assert configured_url() == ""  # libpq completes it from PG*
    monkeypatch.setenv("PGRECS_DATABASE_URL", "postgresql://env/db")
    assert configured_url() == "postgresql://env/db"
    assert configured_url("postgresql://arg/db") == "postgresql://arg/db"


def test_connect_refuses_an_unmigrated_database(empty_db_url: str) -> None:
    with pytest.raises(pgrecs.SchemaOutdated, match="pgrecs migrate"):
        pgrecs.connect(empty_db_url)


def test_connect_refuses_a_database_at_another_revision(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("update pgrecs.alembic_version set version_num = '0000'")
    with pytest.raises(pgrecs.SchemaOutdated, match="at revision 0000"):
        pgrecs.connect(db_url)


def test_a_database_ahead_of_pgrecs_asks_for_a_newer_pgrecs(db_url: str) -> None:
    """Migrating cannot help a database at a newer revision: pgrecs itself is out of date.
    The message names the database, never the password."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("update pgrecs.alembic_version set version_num = '9999'")
    with pytest.raises(pgrecs.SchemaOutdated) as caught:
        pgrecs.connect(make_conninfo(db_url, password="s3cret-pw"))
    message = str(caught.value)
    assert "at revision 9999, newer than this pgrecs" in message
    assert "upgrade pgrecs itself" in message and "run `pgrecs migrate`" not in message
    assert f'database "{conninfo_to_dict(db_url)["dbname"]}"' in message
    assert "s3cret-pw" not in message


def test_connect_refuses_a_database_without_pgvector(admin_url: str) -> None:
    from tests.conftest import create_database, drop_database

    url = create_database(admin_url, "pgrecs_no_vector")
    try:
        with pytest.raises(pgrecs.PgvectorMissing, match="CREATE EXTENSION vector"):
            pgrecs.connect(url)
    finally:
        drop_database(admin_url, "pgrecs_no_vector")


def test_unreachable_server_is_a_configuration_error() -> None:
    with pytest.raises(pgrecs.ConfigurationError, match="cannot reach"):
        pgrecs.connect("postgresql:///nowhere?host=/nonexistent-dir&connect_timeout=2")


# -- items --------------------------------------------------------------------------------------


def test_import_csv_and_jsonl_give_the_same_items(client: pgrecs.Client, tmp_path: Path) -> None:
    assert client.import_items(write(tmp_path / "items.csv", ITEMS_CSV)) == 3
    row = client.conn.execute(
        "select title, category, tags, attributes, available from pgrecs.items where item_id = 'b1'"
    ).fetchone()
    assert row == (
        "Deep Learning with PyTorch",
        "books",
        ["pytorch", "deep-learning"],
        {"format": "paperback"},
        True,
    )
    assert client.conn.execute(
        "select available from pgrecs.items where item_id = 'c1'"
    ).fetchone() == (False,)
    jsonl = write(
        tmp_path / "items.jsonl",
        "\n".join(
            json.dumps(r)
            for r in [
                {
                    "item_id": "b1",
                    "title": "Deep Learning with PyTorch",
                    "description": "neural networks in python",
                    "category": "books",
                    "tags": ["pytorch", "deep-learning"],
                    "attributes": {"format": "paperback"},
                    "available": True,
                },
            ]
        ),
    )
    assert client.import_items(jsonl) == 0  # unchanged: no row touched


def test_a_csv_saved_by_excel_with_a_byte_order_mark(client: pgrecs.Client, tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_bytes("item_id,title\nb1,Café\n".encode("utf-8-sig"))
    assert client.import_items(path) == 1
    assert client.conn.execute("select item_id, title from pgrecs.items").fetchall() == [
        ("b1", "Café")
    ]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.csv", "title,category\nx,books\n", "line 1: missing column(s): item_id"),
        ("extra.csv", "item_id,colour\na,red\n", "unknown column(s): 'colour'"),
        ("ragged.csv", "item_id,title\na,A\nb,B,extra\n", "line 3: wrong number of fields"),
        ("badjson.jsonl", '{"item_id": "a"}\n{"item_id": \n', "line 2: not valid JSON"),
        (
            "noid.jsonl",
            '{"item_id": "a"}\n{"title": "no id"}\n',
            "line 2: missing column(s): item_id",
        ),
        (
            "dup.jsonl",
            '{"item_id": "a"}\n{"item_id": "a"}\n',
            "line 2: item 'a' already appears on line 1",
        ),
        ("attrs.csv", "item_id,attributes\na,[1]\n", "line 2: attributes must be a JSON object"),
        ("avail.csv", "item_id,available\na,maybe\n", "line 2: available must be true or false"),
        ("nul.jsonl", '{"item_id": "a", "title": "x\\u0000y"}\n', "line 1: title contains a NUL"),
        (
            "huge.jsonl",
            json.dumps({"item_id": "a", "description": "x" * 100_001}) + "\n",
            "line 1: description is 100001 characters",
        ),
        ("types.jsonl", '{"item_id": "a", "title": ["list"]}\n', "line 1: title must be text"),
        ("items.txt", "item_id\na\n", "unknown file type"),
        # json would keep the last value of a key named twice, as a CSV reader would a column
        (
            "twice.jsonl",
            '{"item_id": "a"}\n{"item_id": "d", "item_id": "e", "title": "x"}\n',
            "line 2: not valid JSON (key(s) named twice in one object: 'item_id')",
        ),
        # a lone UTF-16 surrogate: valid JSON escape, not text (psycopg could not send it)
        (
            "surrogate.jsonl",
            '{"item_id": "a", "title": "bad \\ud800 x"}\n',
            "line 1: title contains a lone UTF-16 surrogate ('\\ud800')",
        ),
        (
            "surrogateattr.jsonl",
            '{"item_id": "a", "attributes": {"k": "\\udc00"}}\n',
            "line 1: attributes contain a lone UTF-16 surrogate",
        ),
        ("inftitle.jsonl", '{"item_id": "a", "title": 1e400}\n', "line 1: title must be text"),
        # rows are numbered by their first line, also when a quoted field spans lines
        (
            "multiline.csv",
            'item_id,description\nm1,"two\nlines"\nm2,x\nm1,"again\nand"\n',
            "line 5: item 'm1' already appears on line 2",
        ),
        ("quote.csv", 'item_id,title\na,A\nb,"x"y\n', "line 3: malformed CSV"),
        # a stray quote: the error names the line its row starts on, not the end of the file
        ("stray.csv", 'item_id,title\na,A\nb,"oops\nc,C\nd,D\n', "line 3: malformed CSV"),
        (
            "nan.jsonl",
            '{"item_id": "a"}\n{"item_id": "b", "attributes": {"w": NaN}}\n',
            "line 2: not valid JSON (NaN is not a JSON value)",
        ),
        ("inf.jsonl", '{"item_id": "a", "attributes": {"w": -Infinity}}\n', "line 1: not valid"),
        # values that pass json but not jsonb: named with their line, not PostgreSQL's message
        (
            "nan.csv",
            'item_id,title,attributes\nn1,x,"{""a"": NaN}"\n',
            "line 2: attributes: not valid JSON (NaN is not a JSON value)",
        ),
        (
            "big.jsonl",
            '{"item_id": "a"}\n{"item_id": "b", "attributes": {"a": 1e400}}\n',
            "line 2: attributes contain a number that is not finite (inf)",
        ),
        (
            "nulattr.jsonl",
            '{"item_id": "a", "attributes": {"a": ["x\\u0000y"]}}\n',
            "line 1: attributes contain a NUL character",
        ),
        (
            "nultag.jsonl",
            '{"item_id": "a", "tags": ["a\\u0000b"]}\n',
            "line 1: tags contain a NUL character",
        ),
        (
            "deep.jsonl",
            '{"item_id": "a", "attributes": {"a": ' + "[" * 5000 + "]" * 5000 + "}}\n",
            "line 1: not valid JSON here (nested too deeply)",
        ),
        (
            "deepcsv.csv",
            'item_id,attributes\na,"{""a"": ' + "[" * 5000 + "]" * 5000 + '}"\n',
            "line 2: attributes: not valid JSON here (nested too deeply)",
        ),
        (
            "deep600.jsonl",
            '{"item_id": "a", "attributes": {"a": ' + "[" * 600 + "]" * 600 + "}}\n",
            "line 1: attributes are nested too deeply",
        ),
        # DictReader keeps the last of two equal columns and would drop the other's values
        ("twice.csv", "item_id,item_id\nq1,q2\n", "line 1: column(s) named twice in the header"),
        ("stray.csv", "item_id, title\na,A\n", "unknown column(s): ' title'"),
    ],
)
def test_bad_import_files_name_the_line_and_write_nothing(
    client: pgrecs.Client, tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = write(tmp_path / name, content)
    with pytest.raises(pgrecs.ImportFileError) as caught:
        client.import_items(path)
    assert message in str(caught.value)
    assert "nothing was imported" in str(caught.value)
    assert client.conn.execute("select count(*) from pgrecs.items").fetchone() == (0,)


def test_a_file_that_is_not_utf8_names_the_line(client: pgrecs.Client, tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"item_id,title\na1,Cafe\na2,Tea\na9,Caf\xe9\n")
    with pytest.raises(pgrecs.ImportFileError, match=r"latin1.csv, line 4: not UTF-8 text"):
        client.import_items(path)
    assert client.conn.execute("select count(*) from pgrecs.items").fetchone() == (0,)


def test_jsonl_null_means_the_default(client: pgrecs.Client, tmp_path: Path) -> None:
    body = '{"item_id": "a", "available": null, "tags": null, "attributes": null}\n'
    assert client.import_items(write(tmp_path / "nulls.jsonl", body)) == 1
    assert client.conn.execute(
        "select available, tags, attributes from pgrecs.items"
    ).fetchone() == (True, [], {})


def test_interaction_import_is_all_or_nothing(client: pgrecs.Client, tmp_path: Path) -> None:
    client.import_items(write(tmp_path / "items.csv", ITEMS_CSV))
    good = "user_id,item_id,event_type,occurred_at\nu1,b1,click,2026-01-02T03:04:05Z\n"
    assert client.import_interactions(write(tmp_path / "ok.csv", good)) == 1
    for body, message in [
        ("u1,b2,click,2026-01-02\nu1,zzz,click,2026-01-02\n", "line 3: unknown item 'zzz'"),
        ("u1,b2,click,2026-01-02\nu1,b2,teleport,2026-01-02\n", "line 3: unknown event type"),
        ("u1,b2,click,yesterday\n", "line 2: occurred_at 'yesterday' is not an ISO 8601"),
        (",b2,click,2026-01-02\n", "line 2: user_id is required"),
        # valid ISO 8601, but a year BC or past 9999 in UTC: stored, it could not be read back
        ("u1,b2,click,0001-01-01T00:00:00+14:00\n", "line 2: occurred_at .* years 1 to 9999"),
        ("u1,b2,click,9999-12-31T22:00:00-05:00\n", "line 2: occurred_at .* years 1 to 9999"),
    ]:
        path = write(tmp_path / "bad.csv", "user_id,item_id,event_type,occurred_at\n" + body)
        with pytest.raises(pgrecs.ImportFileError, match=message):
            client.import_interactions(path)
    assert client.conn.execute("select count(*) from pgrecs.interactions").fetchone() == (1,)


def test_a_batch_of_interactions_is_one_statement(client: pgrecs.Client, tmp_path: Path) -> None:
    """One statement: the popularity trigger runs once and locks the batch's counters in item
    order (statement by statement, two batches with the same items in opposite orders could
    deadlock); ids follow the batch's order."""
    client.import_items(write(tmp_path / "items.csv", ITEMS_CSV))
    client.conn.execute("set track_functions = 'pl'")
    calls = (
        "select coalesce(sum(calls), 0) from pg_stat_user_functions"
        " where schemaname = 'pgrecs' and funcname = '_popularity_delta'"
    )
    client.conn.execute("select pg_stat_clear_snapshot()")
    before = client.conn.execute(calls).fetchone()[0]
    batch = [("u1", "b2"), ("u2", "b1"), ("u1", "b1"), ("u3", "b2")]
    client.record_interactions(
        [{"user_id": u, "item_id": i, "event_type": "click"} for u, i in batch]
    )
    client.conn.execute("select pg_stat_force_next_flush()")
    client.conn.execute("select pg_stat_clear_snapshot()")
    assert client.conn.execute(calls).fetchone()[0] == before + 1
    rows = client.conn.execute(
        "select user_id, item_id from pgrecs.interactions order by interaction_id"
    ).fetchall()
    assert rows == batch
    assert client.record_interactions([]) == 0


def test_upsert_rejects_duplicates_and_bad_rows_without_writing(client: pgrecs.Client) -> None:
    with pytest.raises(pgrecs.InvalidParameter, match="appears twice"):
        client.upsert_items([{"item_id": "a"}, {"item_id": "a"}])
    with pytest.raises(pgrecs.InvalidParameter, match="item_id is required"):
        client.upsert_items([{"item_id": "ok"}, {"item_id": None}])
    assert client.conn.execute("select count(*) from pgrecs.items").fetchone() == (0,)


def test_delete_items_removes_them_and_their_interactions(client: pgrecs.Client) -> None:
    client.upsert_items([{"item_id": "a"}, {"item_id": "b"}])
    client.record_interactions([{"user_id": "u", "item_id": "a", "event_type": "click"}])
    assert client.delete_items(["a", "missing"]) == ["a"]
    assert client.conn.execute("select count(*) from pgrecs.interactions").fetchone() == (0,)


def test_a_single_string_is_refused_where_a_list_is_expected(client: pgrecs.Client) -> None:
    """list("sku-1") is ['s', 'k', 'u', '-', '1']: a lone string must not be read as ids."""
    client.upsert_items([{"item_id": i} for i in ["sku-1", "s", "k", "u", "-", "1"]])
    client.record_interactions([{"user_id": "u", "item_id": "s", "event_type": "click"}])
    calls = [
        lambda: client.delete_items("sku-1"),
        lambda: client.delete_items(b"sku-1"),
        lambda: client.similar_items("sku-1", categories="kitchen"),
        lambda: client.recommend("u", categories="kitchen"),
        lambda: client.recommend_for_items("sku-1"),
        lambda: client.recommend_for_items(["sku-1"], negative_item_ids="s"),
        lambda: client.popular_items(categories="kitchen"),
        lambda: client.refresh_users("u42"),
    ]
    for call in calls:
        with pytest.raises(pgrecs.InvalidParameter, match="must be a list, not a single string"):
            call()  # type: ignore[no-untyped-call]
    with pytest.raises(pgrecs.InvalidParameter, match="weights must be a list of numbers"):
        client.recommend_for_items(["sku-1", "s"], weights="12")  # type: ignore[arg-type]
    assert client.conn.execute("select count(*) from pgrecs.items").fetchone() == (6,)
    assert client.conn.execute("select count(*) from pgrecs.users").fetchone() == (0,)


def test_recording_an_unknown_item_or_event_fails_whole_batch(client: pgrecs.Client) -> None:
    client.upsert_items([{"item_id": "a"}])
    with pytest.raises(pgrecs.UnknownItem, match=r"Key \(item_id\)=\(nope\) is not present"):
        client.record_interactions(
            [
                {"user_id": "u", "item_id": "a", "event_type": "click"},
                {"user_id": "u", "item_id": "nope", "event_type": "click"},
            ]
        )
    with pytest.raises(pgrecs.UnknownItem, match="unknown item 'nope'"):
        client.record_interaction("u", "nope", "click")  # the same error one at a time
    with pytest.raises(pgrecs.IntegrityError, match=r"\(event_type\)=\(teleport\)"):
        client.record_interactions([{"user_id": "u", "item_id": "a", "event_type": "teleport"}])
    with pytest.raises(pgrecs.InvalidParameter, match="weight must be 0 or between 1e-06 and 1e"):
        client.record_interactions(
            [{"user_id": "u", "item_id": "a", "event_type": "click", "weight": "nan"}]
        )
    assert client.conn.execute("select count(*) from pgrecs.interactions").fetchone() == (0,)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("user_id", {"id": 1}, "user_id must be a string, got dict"),
        ("item_id", 1.0, "item_id must be a string, got float"),
        ("user_id", True, "user_id must be a string, got bool"),
        ("user_id", "u\x00", "user_id contains a NUL character"),
        ("event_type", "click\x00", "event_type contains a NUL character"),
        ("user_id", " ", "user_id is required"),
        ("user_id", "u\ud800", "user_id contains a lone UTF-16 surrogate"),
        ("weight", True, "weight True is not a number"),
        ("weight", "1_000", "weight '1_000' is not a number"),
    ],
)
def test_interaction_ids_are_checked_like_item_ids(
    client: pgrecs.Client, field: str, value: object, message: str
) -> None:
    """No str() of whatever was given: a dict or a float is refused, not stored as its repr."""
    client.upsert_items([{"item_id": "1"}])
    event = {"user_id": "u", "item_id": "1", "event_type": "click", field: value}
    with pytest.raises(pgrecs.InvalidParameter, match=message):
        client.record_interactions([event])
    assert client.conn.execute("select count(*) from pgrecs.interactions").fetchone() == (0,)
    client.record_interactions([{"user_id": 7, "item_id": 1, "event_type": "click"}])  # ints
    with pytest.raises(pgrecs.InvalidParameter, match="item_id contains a NUL character"):
        client.upsert_items([{"item_id": "a\x00b"}])


def test_rows_built_directly_are_checked_like_loose_rows(client: pgrecs.Client) -> None:
    """Item and Interaction validate themselves: a str of tags would be stored letter by letter,
    a NaN weight would meet the table's check constraint."""
    bad_items = [
        (lambda: pgrecs.Item("x", tags="abc"), "tags must be a list or tuple of strings"),  # type: ignore[arg-type]
        (lambda: pgrecs.Item("x", attributes=[1]), "attributes must be a JSON object"),  # type: ignore[arg-type]
        (lambda: pgrecs.Item(""), "item_id is required"),
        (lambda: pgrecs.Item(5), "item_id must be a str, got int"),  # type: ignore[arg-type]
        (lambda: pgrecs.Item("x", attributes={"a": {1}}), "set is not a JSON value"),
        (lambda: pgrecs.Item("x", available="no"), "available must be true or false"),  # type: ignore[arg-type]
        (
            lambda: pgrecs.Interaction("u", "a", "click", weight=float("nan")),
            "weight must be 0 or between",
        ),
        (lambda: pgrecs.Interaction("u", 1, "click"), "item_id must be a str, got int"),  # type: ignore[arg-type]
        (
            lambda: pgrecs.Interaction("u", "a", "click", occurred_at="2026-01-01"),  # type: ignore[arg-type]
            "occurred_at must be a datetime",
        ),
    ]
    for build, message in bad_items:
        with pytest.raises(pgrecs.InvalidParameter, match=message):
            build()
    assert pgrecs.Item("x", title=None).title == ""  # type: ignore[arg-type]
    assert pgrecs.Item("x", tags=["a", "b"]).tags == ("a", "b")
    with pytest.raises(pgrecs.InvalidParameter, match="got a single dict: write \\[row\\]"):
        client.upsert_items({"item_id": "x5"})  # type: ignore[arg-type]
    with pytest.raises(pgrecs.InvalidParameter, match="got a single dict"):
        client.record_interactions({"user_id": "u", "item_id": "x5", "event_type": "click"})  # type: ignore[arg-type]
    assert client.conn.execute("select count(*) from pgrecs.items").fetchone() == (0,)


def test_query_parameters_of_the_wrong_type_are_named(client: pgrecs.Client) -> None:
    client.upsert_items([{"item_id": "1", "title": "apple"}, {"item_id": "2", "title": "pear"}])
    client.embed_pending(HashEmbedder(3), progress=False)
    client.conn.execute("update pgrecs.settings set value = '1.01' where name = 'dedup_threshold'")
    # an int id is its text, as imports take it
    assert [r.item_id for r in client.similar_items(2, k=1)] == ["1"]  # type: ignore[arg-type]
    assert len(client.recommend(42, k=2)) == 2  # type: ignore[arg-type]
    # lists of ints too, and numpy's integers for k
    session = client.recommend_for_items([2], k=np.int64(1), categories=None)  # type: ignore[list-item,arg-type]
    assert [r.item_id for r in session] == ["1"]
    assert [r.item_id for r in client.recommend_for_items(["2"], negative_item_ids=[1])] == []  # type: ignore[list-item]
    calls = [
        (lambda: client.recommend("u", diversity="x"), "diversity must be a number"),  # type: ignore[arg-type]
        (lambda: client.recommend_for_items(["1"], weights=["x"]), "weights must be a number"),  # type: ignore[list-item]
        (lambda: client.similar_items("1", filter={"a": {1}}), "filter: set is not a JSON value"),
        (lambda: client.popular_items(since=5), "since must be a datetime.timedelta"),  # type: ignore[arg-type]
        (lambda: client.recommend(4.5), "user_id must be a string, got float"),  # type: ignore[arg-type]
        (lambda: client.explain("u", "a\x00"), "item_id contains a NUL character"),
        (lambda: client.similar_items("\ud800"), "item_id contains a lone UTF-16 surrogate"),
        (lambda: client.recommend_for_items([1.5]), "item_ids must be a string, got float"),  # type: ignore[list-item]
        (lambda: client.similar_items("1", k=np.float64(2)), "k must be between 1 and 1000"),  # type: ignore[arg-type]
    ]
    for call, message in calls:
        with pytest.raises(pgrecs.InvalidParameter, match=message):
            call()


# -- embedding ------------------------------------------------------------------------------------


def test_embed_pending_embeds_once_and_reuses_the_cache(
    client: pgrecs.Client, tmp_path: Path
) -> None:
    embedder = HashEmbedder(3)
    client.import_items(write(tmp_path / "items.csv", ITEMS_CSV))
    first = client.embed_pending(embedder, progress=False)
    assert (first.embedded, first.cached, first.skipped) == (3, 0, 0)
    again = client.embed_pending(embedder, progress=False)
    assert (again.embedded, again.cached, again.skipped) == (0, 0, 3)
    # one description changes: only that item is re-embedded
    client.conn.execute("update pgrecs.items set description = 'new text' where item_id = 'b2'")
    changed = client.embed_pending(embedder, progress=False)
    assert (changed.embedded, changed.cached, changed.skipped) == (1, 0, 2)
    # changing it back finds the old vector in the cache: no model call
    calls = len(embedder.calls)
    client.conn.execute(
        "update pgrecs.items set description = 'indexes and query plans' where item_id = 'b2'"
    )
    back = client.embed_pending(embedder, progress=False)
    assert (back.embedded, back.cached) == (0, 1)
    assert len(embedder.calls) == calls
    stored = client.conn.execute(
        "select embedding from pgrecs.items where item_id = 'b1'"
    ).fetchone()[0]
    expected = embedder.encode(
        [
            pgrecs.Item.from_row(
                {
                    "item_id": "b1",
                    "title": "Deep Learning with PyTorch",
                    "description": "neural networks in python",
                    "category": "books",
                    "tags": ["pytorch", "deep-learning"],
                    "attributes": {"format": "paperback"},
                }
            ).text()
        ]
    )[0]
    np.testing.assert_allclose(stored.to_numpy(), expected, rtol=1e-6)


def test_identical_texts_are_encoded_once(client: pgrecs.Client) -> None:
    embedder = HashEmbedder(3)
    client.upsert_items([{"item_id": f"dup{n}", "title": "same text"} for n in range(5)])
    report = client.embed_pending(embedder, progress=False)
    assert report.embedded == 1 and report.cached == 4
    assert sum(embedder.calls) == 1


def test_model_guard(client: pgrecs.Client) -> None:
    client.upsert_items([{"item_id": "a", "title": "x"}])
    client.embed_pending(HashEmbedder(3, name="model-a"), progress=False)
    with pytest.raises(pgrecs.ModelMismatch, match="'model-a'"):
        client.embed_pending(HashEmbedder(3, name="model-b"), progress=False)
    with pytest.raises(
        pgrecs.DimensionMismatch, match="makes 5-d vectors but the database holds 3-d"
    ):
        client.embed_pending(HashEmbedder(5, name="model-a"), progress=False)
    assert client.conn.execute(
        "select name, dimension from pgrecs.models where active"
    ).fetchall() == [("model-a", 3)]


def test_embedder_returning_a_zero_vector_writes_nothing(client: pgrecs.Client) -> None:
    class ZeroEmbedder(HashEmbedder):
        def encode(self, texts):  # type: ignore[no-untyped-def]
            out = super().encode(texts)
            out[-1] = 0
            return out

    client.upsert_items([{"item_id": "a", "title": "x"}, {"item_id": "b", "title": "y"}])
    with pytest.raises(pgrecs.InvalidParameter, match="returned 1 all-zero vector"):
        client.embed_pending(ZeroEmbedder(3), progress=False)
    assert client.conn.execute(
        "select count(*) from pgrecs.items where embedding is not null"
    ).fetchone() == (0,)


def test_embedder_returning_nan_writes_nothing(client: pgrecs.Client) -> None:
    class NaNEmbedder(HashEmbedder):
        def encode(self, texts):  # type: ignore[no-untyped-def]
            out = super().encode(texts)
            out[0, 0] = np.nan
            return out

    client.upsert_items([{"item_id": "a", "title": "x"}])
    with pytest.raises(pgrecs.InvalidParameter, match="NaN"):
        client.embed_pending(NaNEmbedder(3), progress=False)
    assert client.conn.execute(
        "select count(*) from pgrecs.items where embedding is not null"
    ).fetchone() == (0,)


# -- queries through Python -----------------------------------------------------------------------


def test_similar_items_typed_rows_and_named_errors(client: pgrecs.Client) -> None:
    client.upsert_items(
        [
            {"item_id": i, "title": t}
            for i, t in [("a", "red apple fruit"), ("b", "green apple fruit"), ("c", "steel pan")]
        ]
    )
    client.embed_pending(HashEmbedder(3), progress=False)
    client.conn.execute("update pgrecs.settings set value = '1.01' where name = 'dedup_threshold'")
    rows = client.similar_items("a", k=2)
    assert [type(r) for r in rows] == [pgrecs.SimilarItem, pgrecs.SimilarItem]
    assert rows[0].score >= rows[1].score
    with pytest.raises(pgrecs.UnknownItem, match="unknown item 'zzz'"):
        client.similar_items("zzz")
    with pytest.raises(pgrecs.InvalidParameter, match="k must be between 1 and 1000"):
        client.similar_items("a", k=0)
    with pytest.raises(pgrecs.InvalidParameter, match="JSON object"):
        client.similar_items("a", filter=[1])  # type: ignore[arg-type]
    client.upsert_items([{"item_id": "new"}])
    with pytest.raises(pgrecs.NotEmbedded, match="pgrecs embed"):
        client.similar_items("new")


@pytest.mark.parametrize("k", [0, 1001, True, 2.5, "5", None])
def test_k_is_checked_in_python_with_the_sql_message(client: pgrecs.Client, k: object) -> None:
    client.upsert_items([{"item_id": "a", "title": "apple"}])
    client.embed_pending(HashEmbedder(3), progress=False)
    calls = {
        "similar_items": lambda: client.similar_items("a", k=k),  # type: ignore[arg-type]
        "recommend": lambda: client.recommend("u", k=k),  # type: ignore[arg-type]
        "recommend_for_items": lambda: client.recommend_for_items(["a"], k=k),  # type: ignore[arg-type]
        "popular_items": lambda: client.popular_items(k=k),  # type: ignore[arg-type]
    }
    for name, call in calls.items():
        with pytest.raises(pgrecs.InvalidParameter) as caught:
            call()
        assert str(caught.value) == (
            f"pgrecs.{name}: k must be between 1 and 1000, got {k!r}"
            " (hint: ask for at most 1000 rows per call)"
        )


def test_privileges_per_role(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "insert into pgrecs.items (item_id, embedding) values"
            " ('a', '[1,0,0]'), ('b', '[0,1,0]')"
        )
        for role in ("reader", "writer"):
            conn.execute(f"drop role if exists pgrecs_test_{role}")
            conn.execute(f"create role pgrecs_test_{role} login in role pgrecs_{role}")
    try:
        for role in ("reader", "writer"):
            url = psycopg.conninfo.make_conninfo(db_url, user=f"pgrecs_test_{role}")
            with psycopg.connect(url, autocommit=True) as conn:
                assert conn.execute("select item_id from pgrecs.similar_items('a')").fetchall() == [
                    ("b",)
                ]
                write = (
                    "insert into pgrecs.interactions (user_id, item_id, event_type)"
                    " values ('u', 'a', 'click')"
                )
                record = "select pgrecs.record_interaction('u', 'b', 'click')"
                if role == "reader":
                    with pytest.raises(psycopg.errors.InsufficientPrivilege):
                        conn.execute(write)
                    with pytest.raises(psycopg.errors.InsufficientPrivilege):
                        conn.execute(record)
                else:
                    conn.execute(write)
                    conn.execute(record)
                    conn.execute("insert into pgrecs.items (item_id) values ('c')")
                    # u has seen every embedded item: nothing left to recommend
                    assert conn.execute("select * from pgrecs.recommend('u')").fetchall() == []
                    # the popularity triggers run with the writer's rights, deletes included
                    conn.execute("delete from pgrecs.interactions where item_id = 'b'")
                    assert conn.execute(
                        "select item_id, interaction_count from pgrecs.item_popularity"
                        " where interaction_count > 0"
                    ).fetchall() == [("a", 1)]
                assert conn.execute(
                    "select item_id, source from pgrecs.recommend('nobody', k => 1)"
                ).fetchall() == [("a", "popular")]
                conn.execute("select * from pgrecs.explain('u', 'a')")
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute("create table pgrecs.sneaky (x int)")
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute("update pgrecs.settings set value = '0' where name = 'ef_search'")
    finally:
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("drop owned by pgrecs_test_reader, pgrecs_test_writer")
            conn.execute("drop role pgrecs_test_reader")
            conn.execute("drop role pgrecs_test_writer")


def test_session_and_popular_calls_from_python(client: pgrecs.Client) -> None:
    from datetime import timedelta

    client.upsert_items(
        [
            {"item_id": i, "title": t}
            for i, t in [
                ("a", "red apple fruit"),
                ("b", "green apple fruit"),
                ("c", "steel pan"),
                ("d", "pan"),
            ]
        ]
    )
    client.embed_pending(HashEmbedder(3), progress=False)
    client.conn.execute("update pgrecs.settings set value = '1.01' where name = 'dedup_threshold'")
    client.record_interactions([{"user_id": "u", "item_id": "c", "event_type": "purchase"}])
    rows = client.recommend_for_items(["a"], k=3)
    assert [r.item_id for r in rows] != [] and "a" not in [r.item_id for r in rows]
    assert len(rows) == 3
    top = client.popular_items(k=2, since=timedelta(days=1))
    assert top[0] == pgrecs.SimilarItem("c", 3.0)
    with pytest.raises(pgrecs.UnknownItem, match="zz"):
        client.recommend_for_items(["zz"])
    with pytest.raises(pgrecs.InvalidParameter, match="since must be a positive interval"):
        client.popular_items(since=timedelta(days=-1))


def test_record_interaction_takes_times_as_record_interactions_does(client: pgrecs.Client) -> None:
    """A naive time is UTC whatever the session's time zone; what is not a datetime, or lies
    outside the years Python can read back, is refused before anything is written."""
    client.upsert_items([{"item_id": "a"}])
    client.conn.execute("set timezone = 'America/New_York'")
    naive = datetime(2026, 1, 2, 12, 0)
    client.record_interaction("u1", "a", "click", occurred_at=naive)
    client.record_interactions(
        [{"user_id": "u2", "item_id": "a", "event_type": "click", "occurred_at": naive}]
    )
    times = client.conn.execute(
        "select user_id, occurred_at from pgrecs.interactions order by user_id"
    ).fetchall()
    assert [(u, t.astimezone(UTC)) for u, t in times] == [
        ("u1", naive.replace(tzinfo=UTC)),
        ("u2", naive.replace(tzinfo=UTC)),
    ]
    early = datetime(1, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))
    for value, message in [
        ("yesterday", "occurred_at must be a datetime"),
        (5, "occurred_at must be a datetime"),
        (early, "outside the years 1 to 9999"),
    ]:
        with pytest.raises(pgrecs.InvalidParameter, match=message):
            client.record_interaction("u3", "a", "click", occurred_at=value)  # type: ignore[arg-type]
    assert client.conn.execute("select count(*) from pgrecs.interactions").fetchone() == (2,)


def test_large_csv_fields_and_bar_separated_tags(client: pgrecs.Client, tmp_path: Path) -> None:
    """csv's default field limit (128 kB) is not pgrecs': attributes have no length limit. Tags
    are JSON only when the whole field is an array: "[new]|sale" is two tags."""
    attributes = json.dumps({"notes": "n" * 140_000})
    body = "item_id,tags,attributes\nbig,[new]|sale," + '"' + attributes.replace('"', '""') + '"\n'
    assert client.import_items(write(tmp_path / "big.csv", body)) == 1
    tags, notes = client.conn.execute(
        "select tags, length(attributes->>'notes') from pgrecs.items"
    ).fetchone()  # type: ignore[misc]
    assert (tags, notes) == (["[new]", "sale"], 140_000)


def test_str_subclasses_are_sent_as_their_text(client: pgrecs.Client) -> None:
    """A (str, Enum) member's str() is its name; the id or category is its value."""
    import enum

    class Shelf(str, enum.Enum):  # noqa: UP042 (StrEnum's str() is already its value)
        BOOKS = "books"

    client.upsert_items([{"item_id": "b1", "category": "books"}, {"item_id": "g1"}])
    client.record_interactions([{"user_id": "u", "item_id": "g1", "event_type": "click"}])
    popular = client.popular_items(categories=[Shelf.BOOKS])
    assert [r.item_id for r in popular] == ["b1"]
