"""The catalogue pipeline: pending rows, the cache, concurrent writers, the watcher, crash-resume,
the model guard and model switches, malformed rows. Real PostgreSQL, HashEmbedder (3-d)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

import pgrecs
from pgrecs import embed, watch
from pgrecs.embed import reembed_all, switch_sql
from pgrecs.errors import translated
from pgrecs.watch import follow
from tests.conftest import ROOT, HashEmbedder, insert_items

TEXTS = {
    "a": {"item_id": "a", "title": "red apple", "category": "fruit", "tags": ["sweet"]},
    "b": {"item_id": "b", "title": "green apple", "category": "fruit"},
    "c": {"item_id": "c", "title": "steel pan", "description": "for frying"},
    "d": {"item_id": "d", "title": "red apple", "category": "fruit", "tags": ["sweet"]},
}


@pytest.fixture
def client(db_url: str) -> Iterator[pgrecs.Client]:
    with pgrecs.connect(db_url) as c:
        yield c


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout} s: {predicate.__doc__ or predicate}")
        time.sleep(0.05)


def text_of(conn: psycopg.Connection, item_id: str) -> str:
    row = conn.execute(
        "select item_id, title, description, category, tags, attributes"
        " from pgrecs.items where item_id = %s",
        (item_id,),
    ).fetchone()
    assert row is not None
    return pgrecs.Item(row[0], row[1], row[2], row[3], tuple(row[4]), row[5]).text()


def state(conn: psycopg.Connection) -> dict[str, tuple[str | None, np.ndarray | None]]:
    """item_id -> (content_hash, embedding)."""
    return {
        item_id: (content_hash, None if vector is None else vector.to_numpy())
        for item_id, content_hash, vector in conn.execute(
            "select item_id, content_hash, embedding from pgrecs.items order by item_id"
        )
    }


def assert_embedded_with(conn: psycopg.Connection, embedder: HashEmbedder) -> None:
    """Every item holds `embedder`'s vector of its current text, and the hash of that text."""
    rows = state(conn)
    assert rows
    calls = len(embedder.calls)
    for item_id, (content_hash, vector) in rows.items():
        text = text_of(conn, item_id)
        assert content_hash == hashlib.sha256(text.encode()).hexdigest(), item_id
        assert vector is not None, item_id
        np.testing.assert_allclose(vector, embedder.encode([text])[0], rtol=1e-6)
    del embedder.calls[calls:]  # checking is not embedding


class SaltedEmbedder(HashEmbedder):
    """Another 'model': the same words land elsewhere."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return super().encode([f"{text} salt pepper" for text in texts])


# -- cache ----------------------------------------------------------------------------------------


def test_cache_hits_misses_and_reimports(client: pgrecs.Client) -> None:
    embedder = HashEmbedder(3)
    client.upsert_items(TEXTS.values())
    first = client.embed_pending(embedder, progress=False)
    # a and d share a text: encoded once
    assert (first.embedded, first.cached, first.skipped) == (3, 1, 0)
    assert sum(embedder.calls) == 3
    assert client.conn.execute("select count(*) from pgrecs.embedding_cache").fetchone() == (3,)
    assert_embedded_with(client.conn, embedder)
    before = client.conn.execute(
        "select item_id, embedded_at from pgrecs.items order by 1"
    ).fetchall()

    # re-importing the unchanged catalogue leaves nothing pending
    assert client.upsert_items(TEXTS.values()) == 0
    again = client.embed_pending(embedder, progress=False)
    assert (again.embedded, again.cached, again.skipped) == (0, 0, 4)
    assert sum(embedder.calls) == 3

    # availability is not part of the text: still nothing to embed
    client.conn.execute("update pgrecs.items set available = false where item_id = 'b'")
    assert client.embed_pending(embedder, progress=False).skipped == 4

    # one changed description: that item only
    client.upsert_items([{**TEXTS["c"], "description": "for frying eggs"}])
    changed = client.embed_pending(embedder, progress=False)
    assert (changed.embedded, changed.cached, changed.skipped) == (1, 0, 3)
    after = dict(client.conn.execute("select item_id, embedded_at from pgrecs.items").fetchall())
    assert [i for i, at in before if after[i] != at] == ["c"]
    assert_embedded_with(client.conn, embedder)

    # a new item with a known text is a cache hit; another model is a miss
    client.upsert_items([{**TEXTS["a"], "item_id": "e"}])
    hit = client.embed_pending(embedder, progress=False)
    assert (hit.embedded, hit.cached) == (0, 1)
    assert sum(embedder.calls) == 4


def test_only_pending_rows_are_read(client: pgrecs.Client) -> None:
    """A row with a hash is up to date by contract: embed_pending never recomputes it."""
    client.upsert_items([TEXTS["a"], TEXTS["b"]])
    client.conn.execute(
        "update pgrecs.items set embedding = '[1,0,0]', content_hash = 'set-by-hand'"
        " where item_id = 'a'"
    )
    embedder = HashEmbedder(3)
    report = client.embed_pending(embedder, progress=False)
    assert (report.embedded, report.cached, report.skipped) == (1, 0, 1)
    rows = state(client.conn)
    assert rows["a"][0] == "set-by-hand"
    np.testing.assert_array_equal(rows["a"][1], [1, 0, 0])


def test_a_failing_batch_writes_nothing_and_earlier_batches_stay(client: pgrecs.Client) -> None:
    class FailsSecond(HashEmbedder):
        def encode(self, texts: Sequence[str]) -> np.ndarray:
            if len(self.calls) == 1:
                raise RuntimeError("model crashed")
            return super().encode(texts)

    client.upsert_items([TEXTS["a"], TEXTS["b"], TEXTS["c"]])
    with pytest.raises(RuntimeError, match="model crashed"):
        client.embed_pending(FailsSecond(3), batch_size=2, progress=False)
    rows = state(client.conn)
    assert [k for k, (h, _) in rows.items() if h is not None] == ["a", "b"]
    assert rows["c"][1] is None
    assert client.conn.execute("select count(*) from pgrecs.embedding_cache").fetchone() == (2,)
    done = client.embed_pending(HashEmbedder(3), batch_size=2, progress=False)
    assert (done.embedded, done.cached, done.skipped) == (1, 0, 2)


# -- concurrent writers ---------------------------------------------------------------------------


def test_text_changed_during_encoding_stays_pending(client: pgrecs.Client, db_url: str) -> None:
    embedder = HashEmbedder(3)
    client.upsert_items([TEXTS["a"], TEXTS["c"]])
    client.embed_pending(embedder, progress=False)
    old_c = state(client.conn)["c"][1]
    client.upsert_items([TEXTS["b"], {**TEXTS["c"], "description": "for frying eggs"}])

    class EditsWhileEncoding(HashEmbedder):
        def encode(self, texts: Sequence[str]) -> np.ndarray:
            if not self.calls:  # another service edits b and c while the model runs
                with psycopg.connect(db_url, autocommit=True) as other:
                    other.execute(
                        "update pgrecs.items set description = description || ' and pancakes'"
                        " where item_id in ('b', 'c')"
                    )
            return super().encode(texts)

    editing = EditsWhileEncoding(3)
    report = client.embed_pending(editing, progress=False)
    assert (report.embedded, report.cached) == (0, 0)
    rows = state(client.conn)
    assert rows["b"] == (None, None)  # no vector of the text it no longer has
    assert rows["c"][0] is None
    np.testing.assert_array_equal(rows["c"][1], old_c)  # the old vector keeps serving
    # the next run embeds the current texts
    assert client.embed_pending(embedder, progress=False).embedded == 2
    assert_embedded_with(client.conn, embedder)


def test_another_embedder_caching_the_same_text_first(client: pgrecs.Client, db_url: str) -> None:
    """The COPY meets the other embedder's row for the same key: its vector is used, no error."""
    client.upsert_items([TEXTS["a"], TEXTS["b"]])
    key = hashlib.sha256(text_of(client.conn, "a").encode()).hexdigest()

    class Racing(HashEmbedder):
        def encode(self, texts: Sequence[str]) -> np.ndarray:
            with psycopg.connect(db_url, autocommit=True) as other:
                other.execute(
                    "insert into pgrecs.embedding_cache (content_hash, model, embedding)"
                    " values (%s, %s, '[0,0,1]')",
                    (key, self.name),
                )
            return super().encode(texts)

    report = client.embed_pending(Racing(3), progress=False)
    assert report.embedded + report.cached == 2
    rows = state(client.conn)
    np.testing.assert_array_equal(rows["a"][1], [0, 0, 1])
    np.testing.assert_allclose(
        rows["b"][1], HashEmbedder(3).encode([text_of(client.conn, "b")])[0], rtol=1e-6
    )
    assert client.conn.execute("select count(*) from pgrecs.embedding_cache").fetchone() == (2,)


def test_two_embedders_at_once(client: pgrecs.Client, db_url: str) -> None:
    client.upsert_items(
        [{"item_id": f"i{n:03}", "title": f"thing {n % 40} word{n % 40}"} for n in range(120)]
    )

    class Slow(HashEmbedder):
        def encode(self, texts: Sequence[str]) -> np.ndarray:
            time.sleep(0.02)
            return super().encode(texts)

    errors: list[BaseException] = []

    def run() -> None:
        try:
            with pgrecs.connect(db_url) as other:
                other.embed_pending(Slow(3), batch_size=16, progress=False)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert_embedded_with(client.conn, HashEmbedder(3))
    assert client.conn.execute("select count(*) from pgrecs.embedding_cache").fetchone() == (40,)


# -- deletes and availability need no watcher -----------------------------------------------------


def test_deleted_and_unavailable_items_vanish_at_once(client: pgrecs.Client) -> None:
    register_vector(client.conn)
    insert_items(
        client.conn,
        [("a", [1, 0, 0]), ("b", [0.8, 0.6, 0]), ("c", [0.6, 0, 0.8]), ("e", [0, 1, 0])],
    )
    client.conn.execute("update pgrecs.items set content_hash = 'up to date'")

    def similar() -> list[str]:
        return [r.item_id for r in client.similar_items("a", k=10)]

    assert similar() == ["b", "c", "e"]
    client.conn.execute("delete from pgrecs.items where item_id = 'b'")
    assert similar() == ["c", "e"]
    client.conn.execute("update pgrecs.items set available = false where item_id = 'c'")
    assert similar() == ["e"]
    # hiding is not a text change: nothing to re-embed
    assert client.conn.execute(
        "select count(*) from pgrecs.items where content_hash is null"
    ).fetchone() == (0,)


# -- the watcher ----------------------------------------------------------------------------------


@contextmanager
def watching(url: str, embedder: HashEmbedder, **kwargs: Any) -> Iterator[threading.Event]:
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            watch.watch_embeddings(url, embedder, stop=stop, **kwargs)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive(), "the watcher did not stop"
    assert not errors, errors


def embedded_hash(conn: psycopg.Connection, item_id: str) -> str | None:
    row = conn.execute(
        "select content_hash from pgrecs.items where item_id = %s", (item_id,)
    ).fetchone()
    return row[0] if row else None


def test_watcher_catches_up_then_embeds_sql_inserts_and_updates(
    client: pgrecs.Client, db_url: str
) -> None:
    embedder = HashEmbedder(3)
    conn = client.conn
    conn.execute("insert into pgrecs.items (item_id, title) values ('old', 'written while down')")
    with watching(db_url, embedder, poll_interval=60):
        wait_for(lambda: embedded_hash(conn, "old") is not None)
        conn.execute(
            "insert into pgrecs.items (item_id, title, tags) values ('new', 'fresh row', '{x}')"
        )
        wait_for(lambda: embedded_hash(conn, "new") is not None)
        first = embedded_hash(conn, "new")
        conn.execute("update pgrecs.items set description = 'now longer' where item_id = 'new'")
        wait_for(lambda: embedded_hash(conn, "new") not in (None, first))
    assert_embedded_with(conn, embedder)


def test_watcher_survives_a_dropped_connection(client: pgrecs.Client, db_url: str) -> None:
    conn = client.conn
    others = (
        "select pid from pg_stat_activity"
        " where datname = current_database() and pid <> pg_backend_pid()"
    )
    with watching(db_url, HashEmbedder(3), poll_interval=60):
        listening = (
            "select pid from pg_stat_activity where application_name = 'pgrecs watch pgrecs_items'"
            " and datname = current_database() and query ilike 'listen%'"
        )
        wait_for(lambda: conn.execute(listening).fetchone() is not None)
        (old_pid,) = conn.execute(listening).fetchone()
        conn.execute(f"select pg_terminate_backend(pid) from ({others}) as o")
        conn.execute("insert into pgrecs.items (item_id, title) values ('after', 'the drop')")
        wait_for(lambda: embedded_hash(conn, "after") is not None, timeout=15)
        wait_for(lambda: conn.execute(listening).fetchone() is not None)
        assert conn.execute(listening).fetchone() != (old_pid,)
        # and it still follows notifications on the new connection
        conn.execute("insert into pgrecs.items (item_id, title) values ('later', 'row')")
        wait_for(lambda: embedded_hash(conn, "later") is not None)


def test_follow_contract(db_url: str) -> None:
    calls: list[set[str] | None] = []
    stop = threading.Event()
    thread = threading.Thread(
        target=follow,
        args=(db_url, "pgrecs_interactions", calls.append),
        kwargs={"stop": stop, "poll_interval": 60, "debounce": 0.3},
    )
    thread.start()
    try:
        wait_for(lambda: calls == [None])  # the catch-up comes first
        with psycopg.connect(db_url, autocommit=True) as other:
            for user in ("u1", "u2", "u1"):
                other.execute("select pg_notify('pgrecs_interactions', %s)", (user,))
        wait_for(lambda: len(calls) == 2)
        time.sleep(0.4)
        assert calls == [None, {"u1", "u2"}]  # one debounced call, distinct payloads
    finally:
        stop.set()
        thread.join(2)
    assert not thread.is_alive()


def test_follow_polls_and_propagates_errors(db_url: str) -> None:
    calls: list[set[str] | None] = []
    stop = threading.Event()
    thread = threading.Thread(
        target=follow,
        args=(db_url, "pgrecs_items", calls.append),
        kwargs={"stop": stop, "poll_interval": 0.2},
    )
    thread.start()
    wait_for(lambda: len(calls) >= 4)
    stop.set()
    thread.join(2)
    assert not thread.is_alive()
    assert set(map(type, calls)) == {type(None)}

    def broken(payloads: set[str] | None) -> None:
        raise ValueError("handler bug")

    with pytest.raises(ValueError, match="handler bug"):
        follow(db_url, "pgrecs_items", broken)


WATCH_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[2])
from pgrecs import watch
from tests.conftest import HashEmbedder
watch.watch_embeddings(sys.argv[1], HashEmbedder(3), stop=watch.stop_on_signals())
print("stopped cleanly")
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_watcher_stops_cleanly_on_signals(client: pgrecs.Client, db_url: str, signum: int) -> None:
    client.conn.execute("insert into pgrecs.items (item_id, title) values ('x', 'y')")
    proc = subprocess.Popen(
        [sys.executable, "-c", WATCH_SCRIPT, db_url, str(ROOT)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: embedded_hash(client.conn, "x") is not None)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "stopped cleanly" in out


@pytest.mark.model
def test_cli_watch_with_the_real_model(db384_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgrecs.cli", "--database-url", db384_url, "embed", "--watch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        with psycopg.connect(db384_url, autocommit=True) as conn:
            conn.execute(
                "insert into pgrecs.items (item_id, title) values ('k1', 'Chef knife'),"
                " ('k2', 'Paring knife for the kitchen'), ('t1', 'Tent for three-season hikes')"
            )
            wait_for(lambda: embedded_hash(conn, "t1") is not None, timeout=120)
            conn.execute("insert into pgrecs.items (item_id, title) values ('k3', 'Bread knife')")
            wait_for(lambda: embedded_hash(conn, "k3") is not None, timeout=30)
            (nearest,) = conn.execute(
                "select item_id from pgrecs.similar_items('k1', k => 1)"
            ).fetchone()
            assert nearest in {"k2", "k3"}
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "watching pgrecs_items" in out and "embedded 1, reused 0 from cache" in out


# -- crash and resume -----------------------------------------------------------------------------

CRASH_SCRIPT = """
import os, sys, time
sys.path.insert(0, sys.argv[3])
import psycopg
from pgrecs.embed import embed_pending
from tests.conftest import HashEmbedder

class Slow(HashEmbedder):
    def encode(self, texts):
        time.sleep(0.05)
        out = super().encode(texts)
        with open(sys.argv[2], "a") as log:
            log.write(f"{len(texts)}\\n")
            log.flush()
            os.fsync(log.fileno())
        return out

with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    embed_pending(conn, Slow(3), batch_size=10, progress=False)
"""


def test_kill_9_mid_run_then_resume(client: pgrecs.Client, db_url: str, tmp_path: Path) -> None:
    n, batch = 200, 10
    client.upsert_items([{"item_id": f"i{k:03}", "title": f"thing number {k}"} for k in range(n)])
    log = tmp_path / "encoded.log"
    proc = subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT, db_url, str(log), str(ROOT)])
    try:
        wait_for(lambda: log.exists() and len(log.read_text().split()) >= 5, timeout=30)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    done = client.conn.execute(
        "select count(*) from pgrecs.items where content_hash is not null"
    ).fetchone()[0]
    assert 0 < done < n  # killed mid-run, with batches committed
    embedder = HashEmbedder(3)
    report = client.embed_pending(embedder, batch_size=batch, progress=False)
    assert report.skipped == done
    assert report.embedded + report.cached == n - done
    assert report.cached <= batch  # the write in flight: its vectors were already cached
    first_run = sum(int(x) for x in log.read_text().split())
    assert first_run + sum(embedder.calls) <= n + batch
    assert_embedded_with(client.conn, embedder)


# -- model guard and switches ---------------------------------------------------------------------


def test_model_guard_errors(client: pgrecs.Client) -> None:
    client.upsert_items([TEXTS["a"]])
    with pytest.raises(
        pgrecs.DimensionMismatch, match=r"makes 4-d vectors but the database holds 3-d"
    ):
        client.embed_pending(HashEmbedder(4, name="model-a"), progress=False)
    assert client.conn.execute("select count(*) from pgrecs.models").fetchone() == (0,)
    client.embed_pending(HashEmbedder(3, name="model-a"), progress=False)
    client.upsert_items([TEXTS["b"]])
    with pytest.raises(pgrecs.ModelMismatch, match=r"--reembed-all --model 'model-b'"):
        client.embed_pending(HashEmbedder(3, name="model-b"), progress=False)
    assert state(client.conn)["b"] == (None, None)


def test_reembed_all_switches_in_one_step(client: pgrecs.Client, db_url: str) -> None:
    conn = client.conn
    old = HashEmbedder(3, name="model-a")
    client.upsert_items([TEXTS["a"], TEXTS["b"], TEXTS["c"]])
    client.embed_pending(old, progress=False)
    conn.execute(
        "insert into pgrecs.users (user_id, content_vector, interaction_count,"
        " refreshed_through) values ('u', '[1,0,0]', 1, 7)"
    )

    class Interrupted(SaltedEmbedder):
        """Stages one batch, checking queries still see model-a, then dies."""

        def encode(self, texts: Sequence[str]) -> np.ndarray:
            if self.calls:
                raise KeyboardInterrupt
            with psycopg.connect(db_url, autocommit=True) as other:
                register_vector(other)
                assert_embedded_with(other, old)
            return super().encode(texts)

    with pytest.raises(KeyboardInterrupt):
        reembed_all(conn, Interrupted(3, name="model-b"), batch_size=1, progress=False)
    assert_embedded_with(conn, old)
    assert conn.execute("select name from pgrecs.models where active").fetchall() == [("model-a",)]

    class Edits(SaltedEmbedder):
        """While staging, a service edits item a and inserts an item the keyset has passed."""

        def encode(self, texts: Sequence[str]) -> np.ndarray:
            if len(self.calls) == 1:
                with psycopg.connect(db_url, autocommit=True) as other:
                    other.execute(
                        "update pgrecs.items set title = 'red apples' where item_id = 'a'"
                    )
                    other.execute(
                        "insert into pgrecs.items (item_id, title) values ('0-late', 'late row')"
                    )
            return super().encode(texts)

    new = Edits(3, name="model-b")
    report = reembed_all(conn, new, batch_size=1, progress=False)
    assert (report.embedded, report.cached, report.switched) == (2, 1, 4)
    # b and c staged in this run, a's first text cached by the interrupted one; then under the
    # lock: a's new text and the late row
    assert sum(new.calls) == 4
    assert_embedded_with(conn, SaltedEmbedder(3))
    assert conn.execute(
        "select name, dimension, active from pgrecs.models where kind = 'embedding' order by 1"
    ).fetchall() == [("model-a", 3, False), ("model-b", 3, True)]
    assert conn.execute("select refreshed_through from pgrecs.users").fetchall() == [(None,)]
    with pytest.raises(pgrecs.ModelMismatch, match="'model-b'"):
        client.embed_pending(old, progress=False)
    again = client.embed_pending(SaltedEmbedder(3, name="model-b"), progress=False)
    assert (again.embedded, again.cached, again.skipped) == (0, 0, 4)


def test_reembed_all_with_another_dimension_then_the_dba_script(
    client: pgrecs.Client, db_url: str
) -> None:
    conn = client.conn
    old = HashEmbedder(3, name="model-a")
    client.upsert_items([TEXTS["a"], TEXTS["b"], TEXTS["c"]])
    client.embed_pending(old, progress=False)
    conn.execute("update pgrecs.items set collab_embedding = %s", (np.ones(64, np.float32),))
    conn.execute(
        "insert into pgrecs.models (kind, name, dimension) values ('collaborative', 't', 64)"
    )
    conn.execute(
        "insert into pgrecs.users (user_id, content_vector, collab_vector, interaction_count,"
        " refreshed_through) values ('u', '[1,0,0]', %s, 1, 7)",
        (np.ones(64, np.float32),),
    )
    index_before = conn.execute(
        "select indexdef from pg_indexes where indexname = 'items_embedding_hnsw'"
    ).fetchone()

    with pytest.raises(pgrecs.InvalidParameter, match="nothing is staged for model 'model-b4'"):
        switch_sql(conn, "model-b4")
    new = SaltedEmbedder(4, name="model-b4")
    with pytest.raises(pgrecs.DimensionMismatch, match=r"--switch-sql --model 'model-b4'"):
        reembed_all(conn, new, progress=False)
    assert_embedded_with(conn, old)  # queries still on the old model
    assert conn.execute(
        "select count(*), min(vector_dims(embedding)) from pgrecs.embedding_cache"
        " where model = 'model-b4'"
    ).fetchone() == (3, 4)
    # after staging: c's text changes and a row arrives; both stay pending through the switch
    conn.execute("update pgrecs.items set description = 'cast iron' where item_id = 'c'")
    conn.execute("insert into pgrecs.items (item_id, title) values ('late', 'late row')")

    script = switch_sql(conn, "model-b4")
    assert "2 of 4 items" in script
    with psycopg.connect(db_url, autocommit=True) as dba:
        dba.execute(script)

    dims = dict(
        conn.execute(
            "select attrelid::regclass::text || '.' || attname, atttypmod from pg_attribute"
            " where attrelid in ('pgrecs.items'::regclass, 'pgrecs.users'::regclass)"
            " and atttypid = 'vector'::regtype"
        ).fetchall()
    )
    assert dims == {
        "pgrecs.items.embedding": 4,
        "pgrecs.items.collab_embedding": 64,
        "pgrecs.users.content_vector": 4,
        "pgrecs.users.collab_vector": 64,
    }
    assert (
        conn.execute(
            "select indexdef from pg_indexes where indexname = 'items_embedding_hnsw'"
        ).fetchone()
        == index_before
    )
    rows = state(conn)
    assert rows["c"] == (None, None) and rows["late"] == (None, None)
    for item_id in ("a", "b"):
        np.testing.assert_allclose(
            rows[item_id][1], new.encode([text_of(conn, item_id)])[0], rtol=1e-6
        )
    assert conn.execute(
        "select count(*) from pgrecs.items where collab_embedding is not null"
    ).fetchone() == (0,)
    assert conn.execute(
        "select content_vector, collab_vector, refreshed_through from pgrecs.users"
    ).fetchall() == [(None, None, None)]
    assert conn.execute(
        "select kind, name, dimension from pgrecs.models where active"
    ).fetchall() == [("embedding", "model-b4", 4)]
    # the new model embeds what is pending, and queries work in the new space
    done = client.embed_pending(SaltedEmbedder(4, name="model-b4"), progress=False)
    assert (done.embedded, done.cached, done.skipped) == (2, 0, 2)
    assert_embedded_with(conn, SaltedEmbedder(4))
    similar = [r.item_id for r in client.similar_items("a")]
    assert similar and set(similar) <= {"b", "c", "late"}


def test_cli_switch_options(client: pgrecs.Client, db_url: str) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        return subprocess.run(
            [sys.executable, "-m", "pgrecs.cli", "--database-url", db_url, "embed", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )

    usage = run("--reembed-all")
    assert usage.returncode == 2
    assert "--reembed-all needs --model" in usage.stderr
    assert run("--watch", "--reembed-all", "--model", "m").returncode == 2
    missing = run("--switch-sql", "--model", "nope")
    assert missing.returncode == 1
    assert "nothing is staged for model 'nope'" in missing.stderr
    client.upsert_items([TEXTS["a"]])
    with pytest.raises(pgrecs.DimensionMismatch):
        reembed_all(client.conn, HashEmbedder(5, name="m5"), progress=False)
    printed = run("--switch-sql", "--model", "m5")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == switch_sql(client.conn, "m5")
    assert "public.vector(5)" in printed.stdout
    assert client.conn.execute(
        "select atttypmod from pg_attribute"
        " where attrelid = 'pgrecs.items'::regclass and attname = 'embedding'"
    ).fetchone() == (3,)  # printed, not run


# -- malformed rows -------------------------------------------------------------------------------


def test_malformed_rows_are_refused_whole(client: pgrecs.Client) -> None:
    bad_batches: list[list[dict[str, Any]]] = [
        [TEXTS["a"], {"item_id": "x", "title": ["not", "text"]}],
        [TEXTS["a"], {"item_id": None, "title": "no id"}],
        [TEXTS["a"], {"item_id": "x", "attributes": "[1, 2]"}],
        [TEXTS["a"], {"item_id": "x", "description": "w" * 100_001}],
    ]
    messages = ["title must be text", "item_id is required", "JSON object", "limit is 100000"]
    for rows, message in zip(bad_batches, messages, strict=True):
        with pytest.raises(pgrecs.InvalidParameter, match=message):
            client.upsert_items(rows)
    assert client.conn.execute("select count(*) from pgrecs.items").fetchone() == (0,)
    with pytest.raises(pgrecs.IntegrityError), translated():
        client.conn.execute("insert into pgrecs.items (item_id) values (null)")
    report = client.embed_pending(HashEmbedder(3), progress=False)
    assert (report.embedded, report.cached, report.skipped) == (0, 0, 0)


def test_rows_from_sql_that_cannot_be_embedded_are_named_and_the_rest_embedded(
    client: pgrecs.Client,
) -> None:
    """jsonb takes what pgrecs refuses: nesting json cannot write back, and a number psycopg's
    jsonb loader cannot read (5,001 digits). Such a row stays pending and is named; the rows
    around it, in its batch and after it, are embedded. Batches of 1: a batch can fail whole."""
    deep = "[" * 600 + "]" * 600
    rows = [("a1", "{}"), ("deep", '{"a": ' + deep + "}"), ("huge", '{"x": 1e5000}'), ("z9", "{}")]
    for item_id, attributes in rows:
        client.conn.execute(
            "insert into pgrecs.items (item_id, title, attributes) values (%s, %s, %s::jsonb)",
            (item_id, f"title {item_id}", attributes),
        )
    for batch_size in (1, 4):
        done = client.embed_pending(HashEmbedder(3), batch_size=batch_size, progress=False)
        failed = dict(done.failed)
        assert sorted(failed) == ["deep", "huge"]
        assert "item 'deep': attributes are nested too deeply" in failed["deep"]
        assert "item 'huge': attributes contain an integer of 5001 digits" in failed["huge"]
        assert "2 left pending, which cannot be embedded" in str(done)
        pending = client.conn.execute(
            "select item_id from pgrecs.items where content_hash is null order by 1"
        ).fetchall()
        assert pending == [("deep",), ("huge",)]
        assert done.embedded == (2 if batch_size == 1 else 0)  # the second run: nothing new
    # a model switch must cover every item: the same row stops it, named
    with pytest.raises(pgrecs.InvalidParameter, match="item 'deep': attributes are nested too"):
        client.reembed_all(HashEmbedder(3, name="test/other"), progress=False)


def test_huge_text_from_sql_is_embedded_from_its_first_characters(client: pgrecs.Client) -> None:
    huge = "word " * 300_000  # 1.5 MB, written by plain SQL (the import would refuse it)
    client.conn.execute(
        "insert into pgrecs.items (item_id, title, description) values ('big', 'huge', %s)",
        (huge,),
    )
    embedder = HashEmbedder(3)
    report = client.embed_pending(embedder, progress=False)
    assert report.embedded == 1
    text = text_of(client.conn, "big")
    content_hash, vector = state(client.conn)["big"]
    assert content_hash == hashlib.sha256(text.encode()).hexdigest()  # the hash covers it all
    assert vector is not None
    np.testing.assert_allclose(
        vector, embedder.encode([text[: embed.MAX_ENCODED_CHARS]])[0], rtol=1e-6
    )


# -- the throughput benchmark (smoke) -------------------------------------------------------------


def test_benchmark_smoke(empty_db_url: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "embed_throughput.py"),
            "--items",
            "50",
            "--fake-model",
            "--write-rows",
            "500",
            "--rounds",
            "1",
            "--database-url",
            empty_db_url,
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "embed_throughput.json").read_text())
    assert data["items"] == 50
    for key in ("bare_items_per_s", "pipeline_items_per_s", "copy_rows_per_s", "update_rows_per_s"):
        assert data[key] > 0, key
    assert "items/s" in (tmp_path / "embed_throughput.md").read_text()


def test_follow_reconnects_only_when_retrying_can_help(db_url: str) -> None:
    """A lost connection or a transient server error is retried; a statement timeout is not: it
    would fail the same way forever, under a message saying the connection was lost."""
    assert watch._retryable(psycopg.OperationalError("server closed the connection")) == (
        "lost the connection"
    )
    assert watch._retryable(psycopg.errors.AdminShutdown()) == "lost the connection"
    assert watch._retryable(psycopg.errors.IdleSessionTimeout()) == "lost the connection"
    assert watch._retryable(psycopg.errors.DeadlockDetected()) == "transient server error"
    wrapped = pgrecs.InvalidParameter("x")
    wrapped.__cause__ = psycopg.errors.LockNotAvailable()
    assert watch._retryable(wrapped) is None
    calls: list[set[str] | None] = []

    def slow(payloads: set[str] | None) -> None:
        calls.append(payloads)
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("set statement_timeout = '10ms'")
            conn.execute("select pg_sleep(1)")

    stop = threading.Event()
    timer = threading.Timer(10, stop.set)  # bounds the test if follow retried
    timer.start()
    try:
        with pytest.raises(psycopg.errors.QueryCanceled):
            follow(db_url, "pgrecs_items", slow, stop=stop)
    finally:
        timer.cancel()
    assert calls == [None]


def test_watch_connections_get_a_timeout_and_keepalives(monkeypatch: pytest.MonkeyPatch) -> None:
    from psycopg.conninfo import conninfo_to_dict

    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    given = conninfo_to_dict(watch.resilient("postgresql://u@h/db?keepalives_idle=5"))
    assert given["connect_timeout"] == "10" and given["keepalives_count"] == "3"
    assert given["keepalives_idle"] == "5" and given["dbname"] == "db"  # the user's settings win
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "60")
    assert "connect_timeout" not in conninfo_to_dict(watch.resilient("host=h"))
    # a service file's settings would be overridden by anything added: nothing is
    assert watch.resilient("service=rec") == "service=rec"
    monkeypatch.setenv("PGSERVICE", "rec")
    assert watch.resilient("") == ""


def test_long_integers_in_attributes_are_embedded_as_psycopg_read_them(
    client: pgrecs.Client,
) -> None:
    """Attributes are read as text and parsed per row; an integer Python's int() still reads
    (4,100 digits, written through pgrecs) gives the same text and hash as before."""
    client.upsert_items([pgrecs.Item("long", attributes={"n": 10**4100})])
    done = client.embed_pending(HashEmbedder(3), progress=False)
    assert (done.embedded, done.failed) == (1, ())
    text = text_of(client.conn, "long")
    assert state(client.conn)["long"][0] == hashlib.sha256(text.encode()).hexdigest()
    assert f"n: {10**4100}" in text
