"""pgrecs.similar_items semantics on hand-made 3-d vectors."""

from __future__ import annotations

import math

import numpy as np
import psycopg
import pytest

from tests.conftest import insert_items


def ids(conn: psycopg.Connection, call: str, *params: object) -> list[str]:
    return [row[0] for row in conn.execute(f"select item_id from {call}", params)]


def unit(angle_deg: float, z: float = 0.0) -> list[float]:
    a = math.radians(angle_deg)
    return [math.cos(a), math.sin(a), z]


@pytest.fixture
def fan(conn: psycopg.Connection) -> psycopg.Connection:
    """Items on a half circle: a0 at 0°, a20 at 20°, ... a160 at 160° (neighbours are 20° apart,
    cosine 0.94, below the near-duplicate threshold)."""
    insert_items(
        conn,
        [
            (f"a{deg}", unit(deg), "left" if deg < 80 else "right", f'{{"deg": {deg}}}')
            for deg in range(0, 180, 20)
        ],
    )
    return conn


def test_nearest_first_with_cosine_scores(fan: psycopg.Connection) -> None:
    rows = fan.execute("select item_id, score from pgrecs.similar_items('a0', k => 3)").fetchall()
    assert [r[0] for r in rows] == ["a20", "a40", "a60"]
    assert rows[0][1] == pytest.approx(math.cos(math.radians(20)), abs=1e-6)
    assert rows[2][1] == pytest.approx(math.cos(math.radians(60)), abs=1e-6)


def test_k_larger_than_catalogue_returns_every_other_item(fan: psycopg.Connection) -> None:
    assert len(ids(fan, "pgrecs.similar_items('a80', k => 100)")) == 8


def test_category_filters(fan: psycopg.Connection) -> None:
    assert ids(fan, "pgrecs.similar_items('a60', k => 3, same_category => true)") == [
        "a40",
        "a20",
        "a0",
    ]
    assert ids(fan, "pgrecs.similar_items('a60', k => 2, categories => '{right}')") == [
        "a80",
        "a100",
    ]
    # same_category intersected with a list that excludes the item's own category: nothing left
    assert (
        ids(
            fan,
            "pgrecs.similar_items('a60', k => 2, categories => '{right}', same_category => true)",
        )
        == []
    )


def test_attribute_filter_is_containment(fan: psycopg.Connection) -> None:
    assert ids(fan, """pgrecs.similar_items('a0', filter => '{"deg": 120}')""") == ["a120"]


def test_unavailable_and_unembedded_items_never_returned(fan: psycopg.Connection) -> None:
    fan.execute("update pgrecs.items set available = false where item_id = 'a20'")
    fan.execute("insert into pgrecs.items (item_id, category) values ('no-vector', 'left')")
    assert ids(fan, "pgrecs.similar_items('a0', k => 2)") == ["a40", "a60"]
    assert "no-vector" not in ids(fan, "pgrecs.similar_items('a0', k => 100)")


def test_exclude_seen_by_user(fan: psycopg.Connection) -> None:
    fan.execute(
        "insert into pgrecs.interactions (user_id, item_id, event_type)"
        " values ('u1', 'a20', 'click'), ('u1', 'a40', 'dislike'), ('u2', 'a60', 'click')"
    )
    assert ids(fan, "pgrecs.similar_items('a0', k => 2, exclude_seen_by => 'u1')") == ["a60", "a80"]
    # an unknown user has seen nothing
    assert ids(fan, "pgrecs.similar_items('a0', k => 2, exclude_seen_by => 'nobody')") == [
        "a20",
        "a40",
    ]


def test_near_duplicates_collapse_to_the_best(conn: psycopg.Connection) -> None:
    insert_items(
        conn,
        [
            ("q", unit(0)),
            ("b", unit(20)),
            ("b-copy", unit(21)),  # cos 1° ≈ 0.9998 to b: a near-duplicate
            ("q-copy", unit(1)),  # a near-duplicate of the query item itself
            ("c", unit(40)),
        ],
    )
    assert ids(conn, "pgrecs.similar_items('q', k => 2)") == ["b", "c"]
    # from c, the two nearest are the pair itself (no input item is involved)
    assert ids(conn, "pgrecs.similar_items('c', k => 2)") == ["b-copy", "q-copy"]
    conn.execute("update pgrecs.settings set value = '1.01' where name = 'dedup_threshold'")
    assert ids(conn, "pgrecs.similar_items('q', k => 2)") == ["q-copy", "b"]
    assert ids(conn, "pgrecs.similar_items('c', k => 2)") == ["b-copy", "b"]


def test_k_guarantee_with_a_selective_filter_in_a_large_catalogue(conn: psycopg.Connection) -> None:
    """3 eligible items among 10,000, all far from the query (the HNSW walk meets them last)."""
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(10_000, 3)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [(f"i{n}", vectors[n], "common") for n in range(10_000)]
    # the three rare items are far from the query
    rows += [
        ("rare0", [-1, 0, 0], "rare"),
        ("rare1", [-1, 1, 0], "rare"),
        ("rare2", [-1, 0, 1], "rare"),
    ]
    rows.append(("query", [1.0, 0.0, 0.0], "common"))
    insert_items(conn, rows)
    conn.execute("analyze pgrecs.items")
    # force the index path: the exact-scan shortcut would make this trivially true
    conn.execute("update pgrecs.settings set value = '0' where name = 'exact_scan_threshold'")
    # random points on a 3-d sphere are mostly near-duplicates of each other: collapse none
    conn.execute("update pgrecs.settings set value = '1.01' where name = 'dedup_threshold'")
    got = ids(conn, "pgrecs.similar_items('query', k => 10, categories => '{rare}')")
    assert sorted(got) == ["rare0", "rare1", "rare2"]
    assert len(ids(conn, "pgrecs.similar_items('query', k => 1000)")) == 1000


def test_k_guarantee_when_seen_items_crowd_the_neighbourhood(conn: psycopg.Connection) -> None:
    rng = np.random.default_rng(3)
    near = np.array([1.0, 0.0, 0.0]) + rng.normal(scale=0.05, size=(2_000, 3))
    far = rng.normal(size=(3_000, 3))
    vectors = np.vstack([near, far]).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    insert_items(conn, [(f"i{n}", v) for n, v in enumerate(vectors)] + [("query", [1, 0, 0])])
    with conn.cursor() as cur:
        cur.executemany(
            "insert into pgrecs.interactions (user_id, item_id, event_type) values ('u', %s, 'view')",
            [(f"i{n}",) for n in range(2_000)],
        )
    conn.execute("update pgrecs.settings set value = '0' where name = 'exact_scan_threshold'")
    conn.execute("update pgrecs.settings set value = '1.01' where name = 'dedup_threshold'")
    conn.execute("analyze pgrecs.items")
    got = ids(conn, "pgrecs.similar_items('query', k => 20, exclude_seen_by => 'u')")
    assert len(got) == 20
    assert not any(int(item[1:]) < 2_000 for item in got)
    # and they are the true nearest unseen items
    exact = ids(
        conn,
        "(select item_id from pgrecs.items where item_id like 'i%%' and substr(item_id, 2)::int >= 2000"
        " order by (embedding <=> '[1,0,0]') + 0 limit 20) as e",
    )
    assert set(got) == set(exact)


@pytest.mark.parametrize(
    ("call", "sqlstate", "needle"),
    [
        ("pgrecs.similar_items('missing')", "P0002", "unknown item 'missing'"),
        ("pgrecs.similar_items(null)", "22004", "must not be NULL"),
        ("pgrecs.similar_items('a0', k => 0)", "22023", "k must be between 1 and 1000, got 0"),
        ("pgrecs.similar_items('a0', k => -5)", "22023", "got -5"),
        ("pgrecs.similar_items('a0', k => 1001)", "22023", "got 1001"),
        ("pgrecs.similar_items('a0', k => null)", "22023", "got NULL"),
        ("pgrecs.similar_items('a0', filter => '[1, 2]')", "22023", "filter must be a JSON object"),
        ("pgrecs.similar_items('a0', filter => '{bad json')", "22P02", "json"),
        ("pgrecs.similar_items('bare', k => 3)", "55000", "has no embedding yet"),
        ("pgrecs.similar_items('bare', same_category => true)", "55000", "no embedding"),
    ],
)
def test_bad_input_raises_standard_sqlstate(
    fan: psycopg.Connection, call: str, sqlstate: str, needle: str
) -> None:
    fan.execute("insert into pgrecs.items (item_id) values ('bare')")
    with pytest.raises(psycopg.Error) as caught:
        fan.execute(f"select * from {call}")
    assert caught.value.sqlstate == sqlstate
    assert needle.lower() in str(caught.value).lower()


def test_same_category_needs_a_category(conn: psycopg.Connection) -> None:
    insert_items(conn, [("x", [1, 0, 0]), ("y", [0, 1, 0])])
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="has no category"):
        conn.execute("select * from pgrecs.similar_items('x', same_category => true)")


def test_plan_uses_hnsw_for_an_unfiltered_query(conn: psycopg.Connection) -> None:
    rng = np.random.default_rng(1)
    insert_items(conn, [(f"i{n}", v) for n, v in enumerate(rng.normal(size=(2_000, 3)))])
    conn.execute("analyze pgrecs.items")
    conn.execute("set hnsw.iterative_scan = relaxed_order")
    plan = "\n".join(
        row[0]
        for row in conn.execute(
            "explain select item_id from pgrecs.items where available and embedding is not null"
            " order by embedding <=> '[1,0,0]' limit 10"
        )
    )
    assert "items_embedding_hnsw" in plan


def greedy_rule(
    vectors: np.ndarray, query: np.ndarray, anchors: list[int], k: int, threshold: float = 0.95
) -> list[int]:
    """The near-duplicate rule by hand: candidates by cosine to the query (the anchors left
    out), each dropped when it is a near-duplicate of an anchor or of a row already picked."""
    unit_vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    relevance = unit_vectors @ (query / np.linalg.norm(query))
    picks: list[int] = []
    for j in np.argsort(-relevance, kind="stable"):
        if j in anchors or any(unit_vectors[j] @ unit_vectors[a] >= threshold for a in anchors):
            continue
        if all(unit_vectors[j] @ unit_vectors[p] < threshold for p in picks):
            picks.append(int(j))
        if len(picks) == k:
            break
    return picks


def test_the_pick_follows_the_rule_through_long_chains_of_near_duplicates(
    conn: psycopg.Connection,
) -> None:
    """400 random points on a sphere: every point has about ten near-duplicates (cosine
    >= 0.95), so a pick drops candidates far down the list and a dropped candidate must not
    drop others. k up to 300 asks for more than survive: the call fetches further."""
    vectors = np.random.default_rng(11).normal(size=(420, 3)).astype(np.float32)
    vectors = vectors.astype(np.float64)

    def cosines_of(v: np.ndarray) -> np.ndarray:
        unit = v / np.linalg.norm(v, axis=1, keepdims=True)
        return unit @ unit.T

    # the answer must not hang on float32 rounding: leave out the points of a pair within
    # 1e-5 of the threshold
    borderline = np.argwhere(np.triu(np.abs(cosines_of(vectors) - 0.95) < 1e-5, 1))
    vectors = np.delete(vectors, np.unique(borderline), axis=0)[:400]
    cosines = cosines_of(vectors)
    assert len(vectors) == 400 and not np.triu(np.abs(cosines - 0.95) < 1e-5, 1).any()
    assert np.triu(cosines >= 0.95, 1).sum() > 1000  # many near-duplicate pairs
    insert_items(conn, [(f"i{n:03d}", vectors[n]) for n in range(400)])
    for query in (0, 7, 99):
        for k in (5, 40, 300):
            expected = [f"i{n:03d}" for n in greedy_rule(vectors, vectors[query], [query], k)]
            assert ids(conn, f"pgrecs.similar_items('i{query:03d}', k => {k})") == expected
    # two input items: both are anchors, the query is the sum of their stored vectors
    expected = [f"i{n:03d}" for n in greedy_rule(vectors, vectors[3] + vectors[5], [3, 5], 300)]
    assert len(expected) > 40
    assert ids(conn, "pgrecs.recommend_for_items('{i003,i005}', k => 300)") == expected
