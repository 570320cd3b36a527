"""User vectors: the weighting rule, stale detection, batch refresh, resume after kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

import pgrecs
from pgrecs import users
from pgrecs.db import open_connection
from pgrecs.queries import LOCK_KEY, USERS_LOCK_KEY, query
from tests.conftest import ROOT, insert_items

T0 = datetime(2026, 10, 1, tzinfo=UTC)
V = {"x": [1.0, 0.0, 0.0], "y": [0.0, 1.0, 0.0], "z": [0.0, 0.0, 1.0], "xy": [0.6, 0.8, 0.0]}


@pytest.fixture
def client(db_url: str) -> pgrecs.Client:
    with pgrecs.connect(db_url) as c:
        register_vector(c.conn)
        insert_items(c.conn, [(k, v) for k, v in V.items()])
        c.conn.execute("update pgrecs.settings set value = '30' where name = 'half_life_days'")
        yield c


def stored(client: pgrecs.Client, user: str) -> tuple:
    row = client.conn.execute(
        "select content_vector, interaction_count, refreshed_through from pgrecs.users"
        " where user_id = %s",
        (user,),
    ).fetchone()
    assert row is not None
    return (None if row[0] is None else row[0].to_numpy(), row[1], row[2])


def test_weighting_rule_against_a_hand_computed_example(client: pgrecs.Client) -> None:
    # half-life 30 days: a purchase now (3), a click 30 days earlier (1 * 0.5), a dislike 60
    # days earlier (-2 * 0.25) and a view with its own weight 4 (a rating) 90 days earlier
    # (4 * 0.125)
    client.record_interactions(
        [
            {"user_id": "u", "item_id": "x", "event_type": "purchase", "occurred_at": T0},
            {
                "user_id": "u",
                "item_id": "y",
                "event_type": "click",
                "occurred_at": T0 - timedelta(days=30),
            },
            {
                "user_id": "u",
                "item_id": "z",
                "event_type": "dislike",
                "occurred_at": T0 - timedelta(days=60),
            },
            {
                "user_id": "u",
                "item_id": "xy",
                "event_type": "view",
                "occurred_at": T0 - timedelta(days=90),
                "weight": 4,
            },
        ]
    )
    expected = np.array([3 + 0.5 * 0.6, 0.5 + 0.5 * 0.8, -0.5])
    expected /= np.linalg.norm(expected)

    assert client.refresh_users().users == 1
    vector, count, _ = stored(client, "u")
    np.testing.assert_allclose(vector, expected, atol=1e-6)
    assert count == 4
    live = client.conn.execute("select pgrecs._user_vector('u', 'content')").fetchone()[0]
    np.testing.assert_allclose(live.to_numpy(), expected, atol=1e-6)
    # explain reports the same effective weights
    weights = dict(
        client.conn.execute(
            "select history_item_id, weight from pgrecs.explain('u', 'xy')"
        ).fetchall()
    )
    assert weights == pytest.approx({"x": 3.0, "y": 0.5, "xy": 0.5})


def test_decay_is_relative_to_the_latest_event_and_very_old_events_do_not_underflow(
    client: pgrecs.Client,
) -> None:
    client.record_interactions(
        [
            {"user_id": "u", "item_id": "x", "event_type": "click", "occurred_at": T0},
            {
                "user_id": "u",
                "item_id": "y",
                "event_type": "click",
                "occurred_at": T0 - timedelta(days=365 * 30),
            },
        ]
    )
    client.refresh_users()
    vector, _, _ = stored(client, "u")
    np.testing.assert_allclose(vector, [1, 0, 0], atol=1e-6)
    live = client.conn.execute("select pgrecs._user_vector('u', 'content')").fetchone()[0]
    np.testing.assert_allclose(live.to_numpy(), [1, 0, 0], atol=1e-6)


def test_only_stale_users_are_refreshed(client: pgrecs.Client) -> None:
    client.record_interactions(
        [
            {"user_id": u, "item_id": i, "event_type": "click"}
            for u, i in [("u1", "x"), ("u2", "y"), ("u3", "z")]
        ]
    )
    assert users.stale_users(client.conn) == ["u1", "u2", "u3"]
    assert client.refresh_users().users == 3
    assert users.stale_users(client.conn) == []
    assert client.refresh_users().users == 0

    client.record_interaction("u2", "x", "cart")
    assert users.stale_users(client.conn) == ["u2"]
    client.refresh_users()
    client.conn.execute("delete from pgrecs.items where item_id = 'z'")  # u3 loses its history
    assert users.stale_users(client.conn) == ["u3"]
    client.refresh_users()
    assert stored(client, "u3") == (None, 0, None)
    assert users.stale_users(client.conn) == []
    assert client.refresh_users(all_users=True).users == 3


def current_vectors(client: pgrecs.Client) -> dict[str, list[float] | None]:
    rows = client.conn.execute("select user_id, content_vector from pgrecs.users").fetchall()
    return {u: None if v is None else v.to_list() for u, v in rows}


def test_changes_in_place_make_stored_rows_stale(client: pgrecs.Client, db_url: str) -> None:
    """Revision 0013: an UPDATE of interactions stamps the rows it changes (revised), so their
    users' count and newest stamp no longer match; an event type's weight, half_life_days and a
    TRUNCATE mark every stored row stale. The watcher is notified of updates and deletes."""
    client.record_interactions(
        [
            {"user_id": u, "item_id": i, "event_type": e, "occurred_at": T0 + timedelta(days=d)}
            for u, i, e, d in [
                ("u1", "x", "click", 0),
                ("u1", "y", "view", 1),
                ("u2", "y", "click", 0),
                ("u3", "z", "click", 0),
            ]
        ]
    )
    client.refresh_users()
    ids = "select interaction_id, revised from pgrecs.interactions order by interaction_id"
    before = client.conn.execute(ids).fetchall()
    update = "update pgrecs.interactions set {} where user_id = %s and item_id = %s"
    xy_score = "select score from pgrecs.recommend('u1', k => 2) where item_id = 'xy'"  # seen: x, y
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("listen pgrecs_interactions")
        client.conn.execute(update.format("weight = weight"), ("u1", "x"))  # no change
        assert users.stale_users(client.conn) == []
        assert client.conn.execute(ids).fetchall() == before
        old_score = client.conn.execute(xy_score).fetchone()
        client.conn.execute(update.format("weight = 50"), ("u1", "y"))
        assert users.stale_users(client.conn) == ["u1"]
        live_score = client.conn.execute(xy_score).fetchone()  # recommend sees it stale too
        client.refresh_users()
        assert client.conn.execute(xy_score).fetchone() == live_score != old_score
        client.conn.execute(update.format("user_id = 'u3'"), ("u2", "y"))  # moved to u3
        assert users.stale_users(client.conn) == ["u2", "u3"]
        client.refresh_users()
        client.conn.execute("delete from pgrecs.interactions where user_id = 'u1'")
        payloads = sorted(n.payload for n in listener.notifies(timeout=1, stop_after=4))
    assert payloads == ["u1", "u1", "u2", "u3"]  # one per user per transaction
    after = client.conn.execute(ids).fetchall()
    assert [i for i, _ in after] == [i for i, _ in before[2:]]  # u1's deleted, ids kept
    assert [r is not None for _, r in after] == [True, False]  # the moved row: stamped
    vectors = current_vectors(client)
    client.refresh_users(all_users=True)
    again = current_vectors(client)
    assert vectors["u2"] is None  # the rows the updates made stale were refreshed from new data
    assert (vectors["u2"], vectors["u3"]) == (again["u2"], again["u3"])
    assert vectors["u1"] is not None and again["u1"] is None  # a DELETE: stale by its count
    client.record_interaction("u1", "x", "click")
    client.refresh_users()

    client.conn.execute("update pgrecs.event_types set description = 'x' where event_type = 'view'")
    client.conn.execute("update pgrecs.settings set value = '1.01' where name = 'dedup_threshold'")
    client.conn.execute("update pgrecs.settings set value = '30' where name = 'half_life_days'")
    assert users.stale_users(client.conn) == []  # nothing the vectors depend on changed
    client.conn.execute("update pgrecs.event_types set weight = 5 where event_type = 'click'")
    assert users.stale_users(client.conn) == ["u1", "u3"]  # every stored row (u2: no row left)
    client.refresh_users()
    client.conn.execute("update pgrecs.settings set value = '7' where name = 'half_life_days'")
    assert users.stale_users(client.conn) == ["u1", "u3"]
    client.refresh_users()
    client.conn.execute("delete from pgrecs.settings where name = 'half_life_days'")
    assert users.stale_users(client.conn) == ["u1", "u3"]
    client.refresh_users()
    with (
        psycopg.connect(db_url, autocommit=True) as admin,
        pytest.raises(
            psycopg.errors.ActiveSqlTransaction, match="needs a READ COMMITTED transaction"
        ),
        admin.transaction(),
    ):
        admin.execute("set transaction isolation level repeatable read")
        admin.execute("update pgrecs.event_types set weight = 6 where event_type = 'click'")
    assert users.stale_users(client.conn) == []  # refused: nothing changed
    client.conn.execute("truncate pgrecs.settings")  # half_life_days gone with the rest
    assert users.stale_users(client.conn) == ["u1", "u3"]
    client.refresh_users()

    # TRUNCATE ... RESTART IDENTITY, then the same count and ids again
    rows = client.conn.execute(
        "select user_id, item_id, event_type, occurred_at from pgrecs.interactions"
        " order by interaction_id"
    ).fetchall()
    client.conn.execute("truncate pgrecs.interactions restart identity")
    with client.conn.cursor() as cur:
        cur.executemany(
            "insert into pgrecs.interactions (user_id, item_id, event_type, occurred_at)"
            " values (%s, %s, 'purchase', %s)",
            [(u, "xy", at) for u, _, _, at in rows],
        )
    assert users.stale_users(client.conn) == ["u1", "u3"]


def test_an_update_committed_after_a_refresh_read_the_history_is_not_lost(
    client: pgrecs.Client, db_url: str
) -> None:
    """The refresh stores the stamps it read; the update's new stamp then shows."""
    client.record_interaction("u1", "x", "click")
    client.record_interaction("u1", "y", "view")
    client.refresh_users()
    with psycopg.connect(db_url) as writer:
        writer.execute(
            "update pgrecs.interactions set weight = 50 where user_id = 'u1' and item_id = 'y'"
        )
        assert client.refresh_users(all_users=True).users == 1  # reads the committed history
        assert users.stale_users(client.conn) == []
    assert users.stale_users(client.conn) == ["u1"]
    client.refresh_users()
    vector, count, _ = stored(client, "u1")
    assert count == 2
    assert vector[1] > 0.99  # y's new weight dominates


def test_an_update_drawn_before_a_commit_that_lands_first_is_not_lost(
    client: pgrecs.Client, db_url: str
) -> None:
    """Stamps come in the order they are drawn, not committed: T1 updates x (stamp N), another
    update of y commits (stamp N+1), a refresh reads that, then T1 commits. The newest stamp is
    still N+1; the digest of all stamps is not."""
    client.record_interaction("u1", "x", "click")
    client.record_interaction("u1", "y", "click")
    client.refresh_users()
    update = "update pgrecs.interactions set weight = 50 where user_id = 'u1' and item_id = %s"
    with psycopg.connect(db_url) as t1:
        t1.execute(update, ("x",))
        client.conn.execute(update.replace("50", "2"), ("y",))
        assert client.refresh_users().users == 1
        assert users.stale_users(client.conn) == []
    assert users.stale_users(client.conn) == ["u1"]
    stale = client.conn.execute(
        "select score from pgrecs.recommend('u1', k => 2) where item_id = 'xy'"
    ).fetchone()
    client.refresh_users()
    vector, _, _ = stored(client, "u1")
    assert vector[0] > 0.99  # x's new weight dominates
    assert (
        client.conn.execute(
            "select score from pgrecs.recommend('u1', k => 2) where item_id = 'xy'"
        ).fetchone()
        == stale
    )  # recommend computed it live meanwhile


def test_stamps_equal_in_their_low_32_bits_xor_high_32_bits_still_differ(
    client: pgrecs.Client, db_url: str
) -> None:
    """hashint8extended folds a bigint to 32 bits (low XOR high) before hashing: 2^32 + 12345
    and 2^33 + 12346 hash alike with a constant seed. The digest seeds with the high half."""
    a, b = 2**32 + 12345, 2**33 + (12345 ^ 3)
    seq = "select setval('pgrecs.interactions_interaction_id_seq', %s)"
    client.conn.execute(seq, (a - 1,))
    client.record_interaction("u1", "x", "click")  # id a
    client.record_interaction("u1", "y", "click")  # id a + 1
    client.refresh_users()
    client.conn.execute(seq, (b - 1,))
    with psycopg.connect(db_url) as w1:
        w1.execute("update pgrecs.interactions set item_id = 'z' where interaction_id = %s", (a,))
        client.record_interaction("u1", "xy", "click")  # id b + 1, committed first
        client.refresh_users()
        assert users.stale_users(client.conn) == []
    assert client.conn.execute(
        "select revised from pgrecs.interactions where interaction_id = %s", (a,)
    ).fetchone() == (b,)
    assert users.stale_users(client.conn) == ["u1"]  # count and newest stamp are unchanged


def test_only_the_trigger_writes_revised(client: pgrecs.Client, db_url: str) -> None:
    client.record_interaction("u1", "x", "click")
    client.refresh_users()
    with psycopg.connect(db_url, autocommit=True) as writer:
        writer.execute("set role pgrecs_writer")
        for statement in (
            "update pgrecs.interactions set revised = null",
            "update pgrecs.interactions set revised = 1000000000000000",
            "insert into pgrecs.interactions (user_id, item_id, event_type, revised)"
            " values ('u1', 'y', 'click', 1)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                writer.execute(statement)
        writer.execute("update pgrecs.interactions set weight = 3")
    assert users.stale_users(client.conn) == ["u1"]
    client.refresh_users()
    revised = client.conn.execute("select revised from pgrecs.interactions").fetchone()
    assert revised is not None and revised[0] is not None
    client.conn.execute("update pgrecs.interactions set revised = null")  # the owner, by hand
    assert client.conn.execute("select revised from pgrecs.interactions").fetchone() == revised
    assert users.stale_users(client.conn) == []
    with pytest.raises(psycopg.errors.GeneratedAlways, match="interaction_id cannot change"):
        client.conn.execute("update pgrecs.interactions set interaction_id = default")


def test_a_truncate_does_not_wait_for_a_refresh_chunk_that_has_not_read_the_log(
    client: pgrecs.Client, db_url: str
) -> None:
    """The chunk holds its advisory locks before it reads pgrecs.interactions; the TRUNCATE's
    table lock orders the two, so its trigger takes no advisory lock (that could deadlock)."""
    client.record_interaction("u1", "x", "click")
    client.refresh_users()
    with psycopg.connect(db_url) as chunk, psycopg.connect(db_url, autocommit=True) as admin:
        chunk.execute(query("lock_for_refresh"), {"models": LOCK_KEY, "users": USERS_LOCK_KEY})
        admin.execute("set lock_timeout = '2s'")
        admin.execute("truncate pgrecs.interactions")
        assert chunk.execute("select count(*) from pgrecs.interactions").fetchone() == (0,)
    assert users.stale_users(client.conn) == ["u1"]


def test_refresh_in_a_callers_transaction(client: pgrecs.Client, db_url: str) -> None:
    """Read committed, it joins the caller's transaction; at another level it is refused, since
    its snapshot could predate a change that marked rows stale. A writer may update events."""
    client.record_interaction("u1", "x", "click")
    with open_connection(db_url) as conn:  # not autocommit: idle until the first statement
        assert users.refresh_users(conn, progress=False).users == 1
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE  # committed
        client.record_interaction("u1", "y", "click")
        conn.execute("set transaction isolation level repeatable read")
        with pytest.raises(pgrecs.InvalidParameter, match="REPEATABLE READ transaction"):
            users.refresh_users(conn, progress=False)
        conn.rollback()
        conn.execute("select 1")  # a transaction at the default level
        assert users.refresh_users(conn, progress=False).users == 1
        assert users.stale_users(client.conn) == ["u1"]  # not committed yet
        conn.commit()
    assert users.stale_users(client.conn) == []
    with psycopg.connect(db_url) as conn:
        conn.execute("set role pgrecs_writer")
        conn.execute("update pgrecs.interactions set weight = 2 where item_id = 'y'")
        conn.commit()
    assert users.stale_users(client.conn) == ["u1"]


def test_a_weight_change_waits_for_the_refresh_chunk_in_progress(
    client: pgrecs.Client, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk read event type weights before the change commits: the change waits for the
    chunk, then marks what it wrote stale."""
    client.record_interaction("u1", "x", "click")
    weighted_means = users.weighted_means
    refused: list[str] = []

    def change_weights_meanwhile(*args: Any, **kwargs: Any) -> np.ndarray:
        with psycopg.connect(db_url, autocommit=True) as admin:
            admin.execute("set lock_timeout = '200ms'")
            try:
                admin.execute("update pgrecs.event_types set weight = 9 where event_type = 'click'")
            except psycopg.errors.LockNotAvailable as exc:
                refused.append(str(exc))
        return weighted_means(*args, **kwargs)

    monkeypatch.setattr(users, "weighted_means", change_weights_meanwhile)
    client.refresh_users()
    assert len(refused) == 1  # the change timed out waiting for the chunk
    monkeypatch.undo()
    assert users.stale_users(client.conn) == []
    client.conn.execute("update pgrecs.event_types set weight = 9 where event_type = 'click'")
    assert users.stale_users(client.conn) == ["u1"]


def test_an_interaction_committed_late_with_a_lower_id_is_not_lost(
    client: pgrecs.Client, db_url: str
) -> None:
    client.record_interaction("u1", "x", "click")
    with psycopg.connect(db_url) as slow:
        # takes an id now, commits after the refresh below has read u1's history
        slow.execute(
            "insert into pgrecs.interactions (user_id, item_id, event_type)"
            " values ('u1', 'y', 'purchase')"
        )
        client.record_interaction("u1", "z", "view")
        client.refresh_users()
        assert users.stale_users(client.conn) == []
    assert users.stale_users(client.conn) == ["u1"]
    client.refresh_users()
    vector, count, _ = stored(client, "u1")
    assert count == 3
    assert vector[1] > 0.9  # the purchase of y dominates now


def test_refresh_and_recommend_agree_on_the_vector(client: pgrecs.Client) -> None:
    rng = np.random.default_rng(1)
    client.conn.execute("update pgrecs.settings set value = '1.01' where name = 'dedup_threshold'")
    insert_items(client.conn, [(f"r{n}", rng.normal(size=3)) for n in range(200)])
    client.record_interactions(
        [
            {
                "user_id": f"u{n % 7}",
                "item_id": f"r{rng.integers(200)}",
                "event_type": ["view", "click", "cart", "purchase", "dislike"][n % 5],
                "occurred_at": T0 - timedelta(hours=int(rng.integers(0, 24 * 200))),
            }
            for n in range(300)
        ]
    )
    live = {u: client.recommend(u, k=10) for u in [f"u{n}" for n in range(7)]}
    client.refresh_users()
    for user, rows in live.items():
        vector, _, _ = stored(client, user)
        sql = client.conn.execute("select pgrecs._user_vector(%s, 'content')", (user,)).fetchone()
        np.testing.assert_allclose(vector, sql[0].to_numpy(), atol=1e-5)
        assert [r.item_id for r in client.recommend(user, k=10)] == [r.item_id for r in rows]


def test_bad_arguments(client: pgrecs.Client) -> None:
    with pytest.raises(pgrecs.InvalidParameter, match="chunk_size"):
        client.refresh_users(chunk_size=0)
    with pytest.raises(pgrecs.IntegrityError, match="event_type"):
        client.record_interactions([{"user_id": "u", "item_id": "x", "event_type": "zap"}])
    with pytest.raises(psycopg.errors.ForeignKeyViolation):  # plain SQL is checked too
        client.conn.execute(
            "insert into pgrecs.interactions (user_id, item_id, event_type)"
            " values ('u', 'x', 'zap')"
        )
    with pytest.raises(pgrecs.InvalidParameter, match="unknown event type"):
        client.record_interaction("u", "x", "zap")
    with pytest.raises(pgrecs.UnknownItem):
        client.record_interaction("u", "nope", "click")
    assert client.conn.execute("select count(*) from pgrecs.interactions").fetchone() == (0,)


RESUME_SCRIPT = """
import sys, time
import pgrecs
from pgrecs import users
from pgrecs.db import open_connection
from pgrecs.queries import LOCK_KEY, USERS_LOCK_KEY, query
original = users._refresh_chunk
def slow(*args, **kwargs):
    items = original(*args, **kwargs)
    print("chunk", flush=True)
    time.sleep(0.2)
    return items
users._refresh_chunk = slow
with pgrecs.connect(sys.argv[1]) as client:
    client.refresh_users(chunk_size=10)
"""


def test_kill_9_during_refresh_then_resume(client: pgrecs.Client, db_url: str) -> None:
    client.record_interactions(
        [{"user_id": f"u{n:03}", "item_id": "x", "event_type": "click"} for n in range(100)]
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", RESUME_SCRIPT, db_url],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.stdout is not None
    for _ in range(3):
        assert proc.stdout.readline() == "chunk\n"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    stale = users.stale_users(client.conn)
    assert 0 < len(stale) <= 70  # three chunks of 10 committed, maybe one more
    assert client.refresh_users().users == len(stale)
    assert users.stale_users(client.conn) == []
    assert client.conn.execute("select count(*) from pgrecs.users").fetchone() == (100,)


def test_streaming_refresh_equals_batch(client: pgrecs.Client, db_url: str) -> None:
    rng = np.random.default_rng(5)
    insert_items(client.conn, [(f"r{n}", rng.normal(size=3)) for n in range(50)])
    client.record_interaction("early", "x", "click")  # before the watcher: caught up at start
    stop = threading.Event()
    watcher = threading.Thread(
        target=users.watch_users, args=(db_url,), kwargs={"stop": stop, "poll_interval": 60}
    )
    watcher.start()
    try:
        with psycopg.connect(db_url, autocommit=True) as writer:
            for n in range(40):  # 40 transactions, plain INSERTs, 5 users
                writer.execute(
                    "insert into pgrecs.interactions (user_id, item_id, event_type, occurred_at)"
                    " values (%s, %s, %s, %s)",
                    (
                        f"s{n % 5}",
                        f"r{rng.integers(50)}",
                        ["view", "click", "purchase", "dislike"][n % 4],
                        T0 + timedelta(hours=n),
                    ),
                )
        deadline = time.monotonic() + 10
        while users.stale_users(client.conn) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert users.stale_users(client.conn) == []
    finally:
        stop.set()
        watcher.join()
    query = "select user_id, content_vector from pgrecs.users order by user_id"
    streamed = client.conn.execute(query).fetchall()
    assert [r[0] for r in streamed] == ["early", "s0", "s1", "s2", "s3", "s4"]
    client.refresh_users(all_users=True)
    batch = client.conn.execute(query).fetchall()
    for (user, s), (_, b) in zip(streamed, batch, strict=True):
        assert np.array_equal(s.to_numpy(), b.to_numpy()), user


def test_an_unbounded_weight_is_refused_before_writing(client: pgrecs.Client) -> None:
    for weight in (1e300, float("inf"), "nan", 1e-7, -1e-50):
        with pytest.raises(
            pgrecs.InvalidParameter, match="weight must be 0 or between 1e-06 and 1e"
        ):
            client.record_interactions(
                [{"user_id": "u", "item_id": "x", "event_type": "view", "weight": weight}]
            )
    assert client.conn.execute("select count(*) from pgrecs.interactions").fetchone() == (0,)


def test_watch_catch_up_stops_between_chunks(
    client: pgrecs.Client, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C / SIGTERM during `refresh --watch`'s catch-up stops after the chunk in progress
    instead of refreshing every stale user first."""
    client.record_interactions(
        [{"user_id": f"u{n:04}", "item_id": "x", "event_type": "click"} for n in range(2500)]
    )
    stop = threading.Event()
    refresh_chunk = users._refresh_chunk

    def then_stop(*args: object) -> users.ItemVectors | None:
        items = refresh_chunk(*args)  # type: ignore[arg-type]
        stop.set()  # as the signal handler would, while the first chunk is written
        return items

    monkeypatch.setattr(users, "_refresh_chunk", then_stop)
    users.watch_users(db_url, stop=stop)
    assert len(users.stale_users(client.conn)) == 1500  # chunks of 1000: one written


def test_watch_all_and_chunk_size(
    client: pgrecs.Client, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`refresh --watch --all --chunk-size 7`: the first catch-up rewrites every user, current
    ones too, 7 per transaction; later catch-ups only the stale ones (none here)."""
    client.record_interactions(
        [{"user_id": f"u{n:02}", "item_id": "x", "event_type": "click"} for n in range(10)]
    )
    client.refresh_users()
    client.record_interactions(
        [{"user_id": f"v{n:02}", "item_id": "y", "event_type": "click"} for n in range(10)]
    )
    chunks: list[list[str]] = []
    refresh_chunk = users._refresh_chunk

    def recorded(
        conn: psycopg.Connection, chunk: list[str], *args: object
    ) -> users.ItemVectors | None:
        chunks.append(chunk)
        return refresh_chunk(conn, chunk, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(users, "_refresh_chunk", recorded)
    stop = threading.Event()
    threading.Timer(1.5, stop.set).start()  # several polls of 0.2 s after the first catch-up
    users.watch_users(db_url, poll_interval=0.2, chunk_size=7, all_users=True, stop=stop)
    assert [len(c) for c in chunks] == [7, 7, 6]
    assert sorted(u for c in chunks for u in c) == [f"{p}{n:02}" for p in "uv" for n in range(10)]
    assert users.stale_users(client.conn) == []
    with pytest.raises(pgrecs.InvalidParameter, match="chunk_size"):
        users.watch_users(db_url, chunk_size=0, stop=stop)


@pytest.mark.parametrize("limit", [1, 3, 0])
def test_refresh_stores_the_heaviest_positive_interactions(
    client: pgrecs.Client, limit: int
) -> None:
    """The list recommend reads instead of the history: the same choice as its live path
    (the heaviest; ties: more recent, then later recorded), the same weights as _history."""
    client.conn.execute(
        "update pgrecs.settings set value = %s::text::jsonb where name = 'because_of_history'",
        (limit,),
    )
    rows = [("x", "click", 0), ("y", "click", 0), ("z", "click", 0), ("xy", "purchase", 40)]
    rows += [("y", "view", 2), ("x", "dislike", 1), ("z", "purchase", 400)]
    client.record_interactions(
        [
            {
                "user_id": "u",
                "item_id": i,
                "event_type": e,
                "occurred_at": T0 - timedelta(days=d, microseconds=-654_321),
            }
            for i, e, d in rows
        ]
    )
    client.refresh_users(progress=False)
    live = client.conn.execute(
        "select array_agg(interaction_id order by weight desc, occurred_at desc,"
        " interaction_id desc), array_agg(weight order by weight desc, occurred_at desc,"
        " interaction_id desc), array_agg(item_id order by weight desc, occurred_at desc,"
        " interaction_id desc) from pgrecs._history('u') where weight > 0"
    ).fetchone()
    row = client.conn.execute(
        "select because_of_interactions, because_of_weights, because_of_history,"
        " because_of_items, because_of_at from pgrecs.users where user_id = 'u'"
    ).fetchone()
    n = limit if limit > 0 else len(live[0])
    stored = dict(zip(row[0], row[1], strict=True))  # the choice matters, not the order
    assert sorted(stored) == sorted(live[0][:n]) and row[2] == limit
    assert [stored[i] for i in live[0][:n]] == pytest.approx(live[1][:n], rel=1e-12)
    # each listed interaction's item and time, exactly as the log has them (the microseconds
    # of the times below are not zero)
    logged = {
        r[0]: (r[1], r[2])
        for r in client.conn.execute(
            "select interaction_id, item_id, occurred_at from pgrecs.interactions"
            " where user_id = 'u'"
        )
    }
    assert list(zip(row[3], row[4], strict=True)) == [logged[i] for i in row[0]]
    # the purchase 40 days ago (3 x 0.5 ** (40 / 30)), then three clicks at T0: the later
    # recorded first (limit 3 cuts between them)
    assert live[2][:4] == ["xy", "z", "y", "x"]


def test_the_stored_items_survive_any_text(client: pgrecs.Client) -> None:
    """Item ids go into the stored list as a binary text[] built for the whole chunk: ids that
    are not ASCII, empty-looking or full of array punctuation come back as they were, each
    user's own (two users in one chunk)."""
    odd = ["café", 'x,"y{}', "\\n", "a b", "日本語のアイテム", "z"]
    insert_items(client.conn, [(i, V["x"]) for i in odd[:-1]])
    client.record_interactions(
        [{"user_id": "u1", "item_id": i, "event_type": "click"} for i in odd]
        + [{"user_id": "u2", "item_id": i, "event_type": "view"} for i in ("z", "café")]
    )
    client.refresh_users(progress=False)
    rows = client.conn.execute(
        "select u.user_id, u.because_of_items,"
        " array(select x.item_id from unnest(u.because_of_interactions) with ordinality"
        "       as h(id, n) join pgrecs.interactions as x on x.interaction_id = h.id"
        "       order by h.n)"
        " from pgrecs.users as u order by u.user_id"
    ).fetchall()
    assert [r[0] for r in rows] == ["u1", "u2"]
    assert all(r[1] == r[2] for r in rows)
    assert sorted(rows[0][1]) == sorted(odd) and sorted(rows[1][1]) == ["café", "z"]


@pytest.mark.parametrize(
    ("value", "stored"), [('"many"', None), ("2.5", None), ("2.0", 2), ("null", 100)]
)
def test_the_list_follows_the_setting_as_recommend_reads_it(
    client: pgrecs.Client, value: str, stored: int | None
) -> None:
    """No list for a value recommend cannot use as a whole number (it reads the history then);
    JSON null is the default, 100."""
    client.conn.execute(
        "update pgrecs.settings set value = %s::jsonb where name = 'because_of_history'", (value,)
    )
    client.record_interactions(
        [{"user_id": "u", "item_id": i, "event_type": "click"} for i in ("x", "y", "z")]
    )
    client.refresh_users(progress=False)
    row = client.conn.execute(
        "select content_vector is not null, cardinality(because_of_interactions),"
        " because_of_history from pgrecs.users where user_id = 'u'"
    ).fetchone()
    assert row == (True, None if stored is None else min(stored, 3), stored)


def test_the_history_arrays_load_as_postgresql_holds_them(client: pgrecs.Client) -> None:
    """The refresh reads the history's arrays in binary as numpy arrays, and epoch seconds from
    the timestamps' microseconds: equal to what extract(epoch ...)::float8 gives, infinities
    (allowed in the log before 0011) included, and equal to the exact microseconds."""
    times = [
        "2026-10-01 12:34:56.654321+00",
        "1999-12-31 23:59:59.999999+00",
        "1970-01-01 00:00:00.000001+00",
        "2263-06-30 01:02:03.000007+00",
        "infinity",
        "-infinity",
        "294276-12-31 23:59:59.999999+00",  # no room in an int64 to add the epoch offset
        "2263-06-30 01:02:03.000001+00",  # beyond 2**53 microseconds: the rounding differs
        "1600-01-01 00:00:00.000005+00",  # if the conversion rounds twice
        "4713-01-01 00:00:00.000001+00 BC",
    ]
    with client.conn.cursor(binary=True) as cur:
        for oid, loader in users._HISTORY_LOADERS.items():
            cur.adapters.register_loader(oid, loader)
        at, seconds, ids, weights, empty = cur.execute(
            "select array_agg(t order by n), array_agg(extract(epoch from t)::float8 order by n),"
            " array_agg((n * 1e15)::bigint - 3 order by n), array_agg(n / 7.0::float8 order by n),"
            " '{}'::float8[]"
            " from unnest(%s::timestamptz[]) with ordinality as u(t, n)",
            (times,),
        ).fetchone()
    assert isinstance(at, np.ndarray) and at.dtype == np.int64
    np.testing.assert_array_equal(users._epoch_seconds(at), seconds)
    finite = [datetime.fromisoformat(t) for t in times[:4]]
    assert at[:4].tolist() == [
        (t - datetime(2000, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) for t in finite
    ]
    assert ids.tolist() == [n * 10**15 - 3 for n in range(1, 11)]
    assert weights.tolist() == [n / 7.0 for n in range(1, 11)]
    assert empty.shape == (0,) and empty.dtype == np.float64
    with (
        pytest.raises(psycopg.DataError, match="without NULLs"),
        client.conn.cursor(binary=True) as cur,
    ):
        float8_array = psycopg.postgres.types["float8"].array_oid
        cur.adapters.register_loader(float8_array, users._HISTORY_LOADERS[float8_array])
        cur.execute("select array[1.0, null]::float8[]").fetchone()
