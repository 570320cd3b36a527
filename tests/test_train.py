"""The two-tower model: recovers planted structure, fills cold items, replaces a model atomically,
is deterministic, refuses bad input.

The synthetic world: 6 groups of 15 items and 10 users each. A user has 7 interactions with
items of their group and 2 with other groups' items (noise); 3 more items of their group are
held out (never recorded). Item content vectors (16-d) point at their group's direction only
weakly, under noise, so content alone cannot rank a user's group first; the interactions can.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from pgrecs import train as training
from pgrecs.errors import DimensionMismatch, InvalidParameter, ModelMismatch, NotEmbedded
from pgrecs.train import LOCK_KEY, fill_collaborative, train
from tests.conftest import _fresh, insert_items

GROUPS, ITEMS_PER_GROUP, USERS_PER_GROUP = 6, 15, 10
SEEN, HELD_OUT, NOISE = 10, 3, 2
DIM = 16
T0 = datetime(2026, 1, 1, tzinfo=UTC)
# Small and quick: the world has 60 users and 90 items.
FAST: dict[str, Any] = {
    "epochs": 15,
    "batch_size": 64,
    "examples_per_user": 8,
    "min_item_interactions": 2,
    "temperature": 0.2,
    "threads": 1,  # tiny tensors: a second thread only adds synchronization
    "progress": False,
}


@pytest.fixture
def db16_url(admin_url: str, template: Callable[[int], str]) -> Iterator[str]:
    yield from _fresh(admin_url, template(DIM))


@pytest.fixture
def world(db16_url: str) -> Iterator[World]:
    with psycopg.connect(db16_url, autocommit=True) as conn:
        register_vector(conn)
        yield World(conn)


class World:
    def __init__(self, conn: psycopg.Connection, seed: int = 0, signal: float = 0.5) -> None:
        rng = np.random.default_rng(seed)
        self.conn = conn
        self.centres = np.linalg.qr(rng.normal(size=(DIM, GROUPS)))[0].T  # orthonormal rows
        self.group = {f"g{g}i{n}": g for g in range(GROUPS) for n in range(ITEMS_PER_GROUP)}
        self.content = {i: self.noisy(g, rng, signal) for i, g in self.group.items()}
        insert_items(conn, list(self.content.items()))
        self.held_out: dict[str, set[str]] = {}
        rows = []
        for g in range(GROUPS):
            own = [f"g{g}i{n}" for n in range(ITEMS_PER_GROUP)]
            others = [i for i in self.group if self.group[i] != g]
            for u in range(USERS_PER_GROUP):
                user = f"u{g}_{u}"
                picked = list(rng.choice(own, SEEN, replace=False))
                noise = list(rng.choice(others, NOISE, replace=False))
                history = picked[: SEEN - HELD_OUT] + noise
                rng.shuffle(history)
                self.held_out[user] = set(picked[SEEN - HELD_OUT :])
                rows += [(user, item, T0 + timedelta(hours=n)) for n, item in enumerate(history)]
        with conn.cursor() as cur:
            cur.executemany(
                "insert into pgrecs.interactions (user_id, item_id, event_type, occurred_at)"
                " values (%s, %s, 'click', %s)",
                rows,
            )

    def noisy(self, g: int, rng: np.random.Generator, signal: float) -> np.ndarray:
        noise = rng.normal(size=DIM)
        v = signal * self.centres[g] + noise / np.linalg.norm(noise)
        return v / np.linalg.norm(v)

    def blend(self, content_weight: float) -> None:
        self.conn.execute(
            "update pgrecs.settings set value = %s"
            " where name in ('content_weight_cold', 'content_weight_warm')",
            (str(content_weight),),
        )

    def recall(self, content_weight: float = 0.0) -> float:
        """Mean recall@10 of the held-out items, through pgrecs.recommend."""
        self.blend(content_weight)
        recalls = []
        for user, held in self.held_out.items():
            top = {
                r[0]
                for r in self.conn.execute(
                    "select item_id from pgrecs.recommend(%s, k => 10)", (user,)
                )
            }
            recalls.append(len(top & held) / len(held))
        return float(np.mean(recalls))

    def collab(self) -> dict[str, np.ndarray]:
        rows = self.conn.execute("select item_id, collab_embedding from pgrecs.items").fetchall()
        return {i: v.to_numpy() for i, v in rows if v is not None}

    def group_centroids(self, vectors: dict[str, np.ndarray]) -> np.ndarray:
        centroids = np.zeros((GROUPS, 64))
        for item, g in self.group.items():
            centroids[g] += vectors[item]
        return centroids / np.linalg.norm(centroids, axis=1, keepdims=True)


def same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.allclose(a[k], b[k], atol=1e-6) for k in a)


def active_models(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        "select model_id, name, dimension, version, trained_through, metrics, parameters"
        " from pgrecs.models where kind = 'collaborative' and active"
    ).fetchall()


def test_the_model_recovers_the_planted_groups(world: World) -> None:
    world.conn.execute(
        "insert into pgrecs.users (user_id, interaction_count, refreshed_through)"
        " values ('u0_0', 9, 1)"
    )
    content_only = world.recall(content_weight=1.0)

    report = train(world.conn, **FAST)

    collaborative = world.recall(content_weight=0.0)
    assert collaborative >= 0.8
    assert content_only < 0.5  # the content alone does not reveal the groups
    assert report.items == GROUPS * ITEMS_PER_GROUP == len(world.collab())
    assert report.users == GROUPS * USERS_PER_GROUP
    assert report.interactions == GROUPS * USERS_PER_GROUP * (SEEN - HELD_OUT + NOISE)
    assert report.items_with_id > 0 and report.epochs == FAST["epochs"]
    (model,) = active_models(world.conn)
    model_id, name, dimension, version, trained_through, metrics, parameters = model
    assert (model_id, name, dimension, version) == (
        report.model_id,
        "pgrecs-two-tower",
        64,
        report.version,
    )
    newest = world.conn.execute("select max(occurred_at) from pgrecs.interactions").fetchone()[0]
    assert trained_through == newest == report.trained_through
    assert metrics["interactions"] == report.interactions and metrics["loss"] == report.loss
    assert metrics["settings"]["epochs"] == FAST["epochs"]
    assert parameters is not None and len(parameters) > 0
    norms = [np.linalg.norm(v) for v in world.collab().values()]
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    # stored user vectors were computed with the old (no) model: stale until refreshed
    stale = world.conn.execute(
        "select refreshed_through from pgrecs.users where user_id = 'u0_0'"
    ).fetchone()
    assert stale == (None,)


def test_cold_items_get_vectors_near_their_group(world: World) -> None:
    train(world.conn, **FAST)
    warm = world.collab()
    centroids = world.group_centroids(warm)
    rng = np.random.default_rng(1)
    cold = {f"cold{g}": world.noisy(g, rng, 3.0) for g in range(GROUPS)}
    insert_items(world.conn, list(cold.items()))
    world.conn.execute("insert into pgrecs.items (item_id) values ('cold_not_embedded')")
    assert fill_collaborative(world.conn, ["cold0"]) == 1  # only what is asked for
    assert fill_collaborative(world.conn) == GROUPS - 1
    assert fill_collaborative(world.conn) == 0  # nothing pending
    vectors = world.collab()
    assert "cold_not_embedded" not in vectors
    assert same({i: vectors[i] for i in warm}, warm)  # warm items untouched
    for g in range(GROUPS):
        similarity = centroids @ vectors[f"cold{g}"]
        assert int(np.argmax(similarity)) == g, similarity
    # and the collaborative path recommends them to their group's users
    world.blend(0.0)
    hits = 0
    for user in world.held_out:
        g = int(user[1])
        top = world.conn.execute("select item_id from pgrecs.recommend(%s, k => 10)", (user,))
        hits += f"cold{g}" in {r[0] for r in top}
    assert hits >= 0.8 * len(world.held_out)


def test_retraining_replaces_every_vector_in_one_transaction(
    world: World, db16_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = train(world.conn, **FAST)
    old = world.collab()
    observed: list[tuple[Any, ...]] = []
    original = training.ContentTower.raw

    def raw_then_look(self: training.ContentTower, content: np.ndarray) -> np.ndarray:
        # called once per chunk inside the write transaction: at the third call, two chunks
        # are written but not committed
        calls.append(1)
        if len(calls) == 3:
            with psycopg.connect(db16_url, autocommit=True) as reader:
                register_vector(reader)
                rows = reader.execute(
                    "select item_id, collab_embedding from pgrecs.items"
                ).fetchall()
                active = reader.execute(
                    "select model_id from pgrecs.models where kind = 'collaborative' and active"
                ).fetchall()
                fill_may_run = reader.execute(
                    "select pg_try_advisory_xact_lock_shared(%s)", (LOCK_KEY,)
                ).fetchone()
                observed.append(({i: v.to_numpy() for i, v in rows}, active, fill_may_run))
        return original(self, content)

    calls: list[int] = []
    monkeypatch.setattr(training, "WRITE_CHUNK", 10)
    monkeypatch.setattr(training.ContentTower, "raw", raw_then_look)
    second = train(world.conn, **{**FAST, "seed": 1})

    (during,) = observed
    vectors, active, fill_may_run = during
    assert same(vectors, old)  # all old while the new model is being written
    assert active == [(first.model_id,)]
    assert fill_may_run == (False,)  # fill_collaborative waits for the write
    new = world.collab()
    assert set(new) == set(old)
    assert all(not np.allclose(new[i], old[i]) for i in old)  # every vector replaced
    assert second.version != first.version
    assert [m[0] for m in active_models(world.conn)] == [second.model_id]
    assert world.conn.execute(
        "select count(*) from pgrecs.models where kind = 'collaborative'"
    ).fetchone() == (2,)


def test_a_refresh_overlapping_train_stores_the_new_models_vectors(
    world: World, db16_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """refresh reads the catalogue's vectors once, then writes chunk by chunk: a train that
    commits in between must not leave old-model user vectors marked current."""
    from pgrecs import users

    train(world.conn, **FAST)
    refresh_chunk = users._refresh_chunk
    train_may_write: list[tuple[Any, ...]] = []
    weighted_means = users.weighted_means

    def train_first(conn: psycopg.Connection, *args: Any) -> Any:
        if not train_may_write:  # between the catalogue read and the first chunk
            train(world.conn, **{**FAST, "seed": 1})
        return refresh_chunk(conn, *args)

    def look(*args: Any, **kwargs: Any) -> np.ndarray:
        with psycopg.connect(db16_url, autocommit=True) as other:
            train_may_write.append(
                other.execute("select pg_try_advisory_xact_lock(%s)", (LOCK_KEY,)).fetchone()
            )
        return weighted_means(*args, **kwargs)

    monkeypatch.setattr(users, "_refresh_chunk", train_first)
    monkeypatch.setattr(users, "weighted_means", look)
    with psycopg.connect(db16_url, autocommit=True) as conn:
        register_vector(conn)
        assert users.refresh_users(conn, chunk_size=25, progress=False).users == 60
    assert set(train_may_write) == {(False,)}  # each chunk holds the lock shared
    assert users.stale_users(world.conn) == []
    query = "select user_id, collab_vector from pgrecs.users order by user_id"
    written = world.conn.execute(query).fetchall()
    monkeypatch.undo()
    users.refresh_users(world.conn, all_users=True, progress=False)
    again = world.conn.execute(query).fetchall()
    assert [r[0] for r in written] == [r[0] for r in again]
    for (user, a), (_, b) in zip(written, again, strict=True):
        np.testing.assert_array_equal(a.to_numpy(), b.to_numpy(), err_msg=user)


def test_an_item_embedded_during_training_gets_the_new_model(
    world: World, db16_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    write = training._write

    def embed_then_write(conn: psycopg.Connection, model: training.TrainedModel, *rest: Any) -> Any:
        with psycopg.connect(db16_url, autocommit=True) as other:
            register_vector(other)
            insert_items(other, [("late", world.content["g0i0"])])
        return write(conn, model, *rest)

    monkeypatch.setattr(training, "_write", embed_then_write)
    report = train(world.conn, **FAST)

    assert report.items == GROUPS * ITEMS_PER_GROUP + 1
    assert fill_collaborative(world.conn) == 0
    params = world.conn.execute(
        "select parameters from pgrecs.models where kind = 'collaborative' and active"
    ).fetchone()[0]
    content_path = training.ContentTower.from_bytes(params).vectors(world.content["g0i0"][None])
    np.testing.assert_allclose(world.collab()["late"], content_path[0], atol=1e-6)


def test_progress_covers_the_write(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    train(world.conn, **{**FAST, "progress": True})
    err = capsys.readouterr().err
    assert "training: 100%" in err
    items = GROUPS * ITEMS_PER_GROUP
    assert "writing; marking user vectors stale: 100%" in err and f"{items}/{items}" in err


def test_same_seed_same_model(world: World) -> None:
    first = train(world.conn, **FAST)
    vectors = world.collab()
    again = train(world.conn, **FAST)
    assert again.version == first.version and again.loss == first.loss
    assert same(world.collab(), vectors)
    other = train(world.conn, **{**FAST, "seed": 7})
    assert other.version != first.version
    # fit: the same model, nothing written
    settings = {k: v for k, v in FAST.items() if k not in ("threads", "progress")}
    fitted = training.fit(world.conn, training.TrainSettings(**settings), threads=1, progress=False)
    assert fitted.version == first.version
    assert [m[3] for m in active_models(world.conn)] == [other.version]


def test_an_item_tower_of_another_shape_is_refused(world: World) -> None:
    train(world.conn, **FAST)
    insert_items(world.conn, [("new", world.content["g0i0"])])
    world.conn.execute(
        "update pgrecs.models set dimension = 32 where kind = 'collaborative' and active"
    )
    with pytest.raises(DimensionMismatch, match="32-d"):
        fill_collaborative(world.conn)
    world.conn.execute(
        "update pgrecs.models set dimension = 64 where kind = 'collaborative' and active"
    )
    world.conn.execute(
        "insert into pgrecs.models (kind, name, dimension) values ('embedding', 'model-b', 16)"
    )
    training._TOWERS.clear()
    params = world.conn.execute(
        "select parameters from pgrecs.models where kind = 'collaborative' and active"
    ).fetchone()[0]
    tower = training.ContentTower.from_bytes(params)
    tower.meta["embedding_model"] = "model-a"
    world.conn.execute(
        "update pgrecs.models set parameters = %s where kind = 'collaborative' and active",
        (tower.to_bytes(),),
    )
    with pytest.raises(ModelMismatch, match="model-a"):
        fill_collaborative(world.conn)
    assert world.conn.execute(
        "select collab_embedding from pgrecs.items where item_id = 'new'"
    ).fetchone() == (None,)


def test_bad_input(db16_url: str) -> None:
    with psycopg.connect(db16_url, autocommit=True) as conn:
        register_vector(conn)
        assert fill_collaborative(conn) == 0  # no model yet: nothing to do
        with pytest.raises(InvalidParameter, match="no interactions"):
            train(conn, progress=False)
        conn.execute("insert into pgrecs.items (item_id) values ('a'), ('b')")
        conn.execute(
            "insert into pgrecs.interactions (user_id, item_id, event_type)"
            " values ('u', 'a', 'click'), ('u', 'b', 'click')"
        )
        with pytest.raises(NotEmbedded):
            train(conn, progress=False)
        conn.execute("update pgrecs.items set embedding = %s", (np.ones(DIM, np.float32),))
        conn.execute("delete from pgrecs.interactions where item_id = 'b'")
        with pytest.raises(InvalidParameter, match="nothing to learn from"):
            train(conn, progress=False)  # one interaction: no history before a target
        conn.execute(
            "insert into pgrecs.interactions (user_id, item_id, event_type)"
            " values ('u', 'b', 'click')"
        )
        with pytest.raises(InvalidParameter, match="too little to learn from: 1 user"):
            train(conn, progress=False)  # one example: no batch to train on
        for bad in (
            {"epochs": 0},
            {"epochs": -1},
            {"batch_size": 1},
            {"learning_rate": 0.0},
            {"temperature": float("nan")},
            {"id_dropout": 1.0},
            {"negatives": -1},
        ):
            with pytest.raises(InvalidParameter, match=next(iter(bad))):
                train(conn, progress=False, **bad)
        assert active_models(conn) == []


def test_pgrecs_embed_gives_new_items_a_collaborative_vector(world: World) -> None:
    from pgrecs.embed import embed_pending
    from tests.conftest import HashEmbedder

    training._TOWERS.clear()  # another test leaves a doctored tower of the same version cached
    train(world.conn, **FAST)
    world.conn.execute("insert into pgrecs.items (item_id, title) values ('fresh', 'new item')")
    report = embed_pending(world.conn, HashEmbedder(DIM), progress=False)
    assert report.collaborative == 1 and "1 collaborative vectors" in str(report)
    assert "fresh" in world.collab()
    again = embed_pending(world.conn, HashEmbedder(DIM), progress=False)
    assert again.embedded == again.cached == again.collaborative == 0
