"""pgrecs.recommend and pgrecs.explain on hand-made 3-d vectors: exact expected ids."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from tests.conftest import function_plans, insert_items

AXES = {"a": (1.0, 0.0, 0.0), "b": (0.0, 1.0, 0.0), "c": (0.0, 0.0, 1.0)}
NOW = datetime(2026, 11, 1, tzinfo=UTC)


def _vector(group: str, i: int) -> np.ndarray:
    """Item i of a group: the group's axis tilted a little, further for higher i."""
    v = np.array(AXES[group]) + 0.05 * i * np.roll(np.array(AXES[group]), 1)
    return v / np.linalg.norm(v)


@pytest.fixture
def shop(conn: psycopg.Connection) -> psycopg.Connection:
    """Three groups of five items (a1..a5 near x, b near y, c near z), category = group."""
    conn.execute("update pgrecs.settings set value = '1.01' where name = 'dedup_threshold'")
    conn.execute("update pgrecs.settings set value = '30' where name = 'half_life_days'")
    insert_items(
        conn,
        [
            (f"{g}{i}", _vector(g, i), g, f'{{"color": "{"red" if i % 2 else "blue"}"}}')
            for g in AXES
            for i in range(1, 6)
        ],
    )
    return conn


def record(conn: psycopg.Connection, user: str, item: str, event: str, days_ago: float = 0) -> None:
    conn.execute(
        "select pgrecs.record_interaction(%s, %s, %s, %s)",
        (user, item, event, NOW - timedelta(days=days_ago)),
    )


def recommend(conn: psycopg.Connection, call: str) -> list[tuple]:
    return conn.execute(f"select * from pgrecs.recommend({call})").fetchall()


def ids(rows: list[tuple]) -> list[str]:
    return [r[0] for r in rows]


def test_unknown_user_gets_popular_items(shop: psycopg.Connection) -> None:
    record(shop, "u1", "c3", "purchase")
    record(shop, "u2", "b2", "click")
    rows = recommend(shop, "'nobody', k => 4")
    assert rows == [
        ("c3", 3.0, "popular", None),
        ("b2", 1.0, "popular", None),
        ("a1", 0.0, "popular", None),
        ("a2", 0.0, "popular", None),
    ]


def test_interactions_far_apart_in_time_keep_the_user_usable(shop: psycopg.Connection) -> None:
    """Ages are float seconds: an interval between 0001 and 292500 AD would overflow."""
    shop.execute("select pgrecs.record_interaction('t', 'a1', 'click', '0001-01-01')")
    shop.execute("select pgrecs.record_interaction('t', 'b1', 'click', '292500-01-01')")
    weights = dict(shop.execute("select item_id, weight from pgrecs._history('t')").fetchall())
    assert weights["b1"] == 1.0 and 0 < weights["a1"] < 1e-29  # 100 half-lives and more: 2**-100
    rows = recommend(shop, "'t', k => 3")
    assert ids(rows)[0] == "b2"  # the recent item decides
    assert shop.execute("select count(*) from pgrecs.explain('t', 'b2')").fetchone() == (2,)


def test_user_only_with_dislikes_is_cold_and_never_gets_them(shop: psycopg.Connection) -> None:
    record(shop, "u1", "a1", "dislike")
    rows = recommend(shop, "'u1', k => 3, exclude_seen => false")
    assert ids(rows) == ["a2", "a3", "a4"]
    assert {r[2] for r in rows} == {"popular"}


def test_history_pulls_its_neighbours_up_and_seen_items_are_excluded(
    shop: psycopg.Connection,
) -> None:
    record(shop, "u1", "a1", "click")
    record(shop, "u1", "a2", "purchase")
    rows = recommend(shop, "'u1', k => 4")
    assert ids(rows)[:3] == ["a3", "a4", "a5"]
    assert ids(rows)[3][0] in "bc"
    assert [r[2] for r in rows] == ["content"] * 4
    assert all(r[3] in ("a1", "a2") for r in rows)
    scores = [r[1] for r in rows]
    assert scores == sorted(scores, reverse=True)


def test_exclude_seen_false_keeps_seen_but_never_negative_items(shop: psycopg.Connection) -> None:
    record(shop, "u1", "a1", "purchase")
    record(shop, "u1", "a2", "dislike")
    rows = recommend(shop, "'u1', k => 15, exclude_seen => false")
    assert "a1" in ids(rows) and "a2" not in ids(rows)
    assert len(rows) == 14


def test_negative_interactions_push_away(shop: psycopg.Connection) -> None:
    record(shop, "u1", "a1", "purchase")
    record(shop, "u1", "b1", "click")
    before = ids(recommend(shop, "'u1', k => 13"))
    record(shop, "u1", "b2", "dislike")
    record(shop, "u1", "b3", "dislike")
    after = ids(recommend(shop, "'u1', k => 12"))
    assert [i[0] for i in before] == list("aaaabbbbccccc")  # b pulled up by the click
    assert [i[0] for i in after] == list("aaaacccccbb")  # now pushed below c
    assert set(after[-2:]) == {"b4", "b5"}


def test_a_click_counts_on_the_very_next_call(shop: psycopg.Connection, db_url: str) -> None:
    record(shop, "u1", "a1", "click")
    assert "a2" in ids(recommend(shop, "'u1', k => 3"))
    with psycopg.connect(db_url) as other:
        other.execute("select pgrecs.record_interaction('u1', 'a2', 'view')")
        # not committed yet: still recommended
        assert "a2" in ids(recommend(shop, "'u1', k => 3"))
    assert "a2" not in ids(recommend(shop, "'u1', k => 3"))


def test_stored_vectors_are_used_while_current(shop: psycopg.Connection) -> None:
    record(shop, "u1", "a1", "click")
    count, last, digest = shop.execute(
        "select count(*), max(interaction_id),"
        " sum(hashint8extended(interaction_id, interaction_id >> 32))"
        " from pgrecs.interactions where user_id = 'u1'"
    ).fetchone()
    # a stored vector pointing at the c group, current for u1's one interaction
    shop.execute(
        "insert into pgrecs.users"
        " (user_id, content_vector, interaction_count, refreshed_through, history_digest)"
        " values ('u1', '[0,0,1]', %s, %s, %s)",
        (count, last, digest),
    )
    assert ids(recommend(shop, "'u1', k => 2")) == ["c1", "c2"]
    shop.execute("update pgrecs.users set history_digest = history_digest + 1")
    assert ids(recommend(shop, "'u1', k => 2")) == ["a2", "a3"]  # digest differs: live
    shop.execute("update pgrecs.users set history_digest = history_digest - 1")
    assert ids(recommend(shop, "'u1', k => 2")) == ["c1", "c2"]
    record(shop, "u1", "a2", "click")  # now stale: the live history (group a) decides
    assert ids(recommend(shop, "'u1', k => 2")) == ["a3", "a4"]


def test_filters_and_categories(shop: psycopg.Connection) -> None:
    record(shop, "u1", "a1", "click")
    # a1 leans a little towards x; c5 has the largest x component of the c group
    assert ids(recommend(shop, "'u1', k => 3, categories => '{c}'")) == ["c5", "c4", "c3"]
    rows = recommend(shop, """'u1', k => 10, filter => '{"color": "blue"}'""")
    assert ids(rows)[:2] == ["a2", "a4"] and len(rows) == 6
    shop.execute("update pgrecs.items set available = false where item_id = 'a2'")
    assert "a2" not in ids(recommend(shop, "'u1', k => 14"))


def test_k_guarantee_when_the_user_has_seen_90_percent_of_a_category(
    conn: psycopg.Connection,
) -> None:
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(2000, 3))
    insert_items(
        conn, [(f"i{n}", v, "big" if n < 1950 else "small") for n, v in enumerate(vectors)]
    )
    conn.execute("update pgrecs.settings set value = '1.01' where name = 'dedup_threshold'")
    conn.execute("update pgrecs.settings set value = '10' where name = 'exact_scan_threshold'")
    conn.execute("analyze pgrecs.items")
    small = [f"i{n}" for n in range(1950, 2000)]
    with conn.cursor() as cur:
        cur.executemany(
            "insert into pgrecs.interactions (user_id, item_id, event_type) values ('u1', %s, 'view')",
            [(i,) for i in small[:45]],
        )
    rows = recommend(conn, "'u1', k => 10, categories => '{small}'")
    assert sorted(ids(rows)) == sorted(small[45:])


def test_k_guarantee_with_a_filter_leaving_3_of_10000(conn: psycopg.Connection) -> None:
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(10_000, 3))
    with (
        conn.cursor() as cur,
        cur.copy("copy pgrecs.items (item_id, embedding, attributes) from stdin") as copy,
    ):
        for n, v in enumerate(vectors):
            rare = '{"rare": true}' if n % 3333 == 1 else "{}"
            copy.write_row((f"i{n}", f"[{v[0]},{v[1]},{v[2]}]", rare))
    conn.execute("update pgrecs.settings set value = '1.01' where name = 'dedup_threshold'")
    conn.execute("analyze pgrecs.items")
    conn.execute("select pgrecs.record_interaction('u1', 'i5', 'click')")
    rows = recommend(conn, """'u1', k => 10, filter => '{"rare": true}'""")
    assert sorted(ids(rows)) == ["i1", "i3334", "i6667"]


def test_diversity_reranks_with_mmr(shop: psycopg.Connection) -> None:
    record(shop, "u1", "a1", "click")
    record(shop, "u1", "b1", "click", days_ago=30)  # half the weight
    plain = recommend(shop, "'u1', k => 4")
    diverse = recommend(shop, "'u1', k => 4, diversity => 0.9")
    assert ids(plain) == ["a5", "a4", "a3", "a2"]  # a5 leans most towards b1
    assert ids(diverse)[0] == "a5"
    assert {i[0] for i in ids(diverse)} == {"a", "b", "c"}
    scores = [r[1] for r in diverse]
    assert scores == sorted(scores, reverse=True)


def test_popularity_penalty_boosts_the_long_tail(shop: psycopg.Connection) -> None:
    record(shop, "u1", "a1", "click")
    for n in range(20):
        record(shop, f"fan{n}", "a2", "click")
    assert ids(recommend(shop, "'u1', k => 1")) == ["a2"]
    shop.execute("update pgrecs.settings set value = '0.1' where name = 'popularity_penalty'")
    assert ids(recommend(shop, "'u1', k => 1")) == ["a3"]


@pytest.fixture
def collaborative(shop: psycopg.Connection) -> psycopg.Connection:
    """Collaborative vectors that pair group a with group c (people who like a also like c)."""
    register_vector(shop)
    e = np.eye(64, dtype=np.float32)
    space = {"a": e[0] + 0.1 * e[3], "b": e[1], "c": e[0] + 0.1 * e[4]}
    for g in AXES:
        for i in range(1, 6):
            v = space[g] + 0.01 * i * e[2]
            shop.execute(
                "update pgrecs.items set collab_embedding = %s where item_id = %s",
                (v / np.linalg.norm(v), f"{g}{i}"),
            )
    shop.execute("update pgrecs.settings set value = '3' where name = 'warm_threshold'")
    shop.execute("update pgrecs.settings set value = '0' where name = 'content_weight_warm'")
    return shop


def test_cold_users_follow_content_warm_users_collaborative(
    collaborative: psycopg.Connection,
) -> None:
    record(collaborative, "u1", "a1", "click")
    record(collaborative, "u1", "a2", "click")
    cold = recommend(collaborative, "'u1', k => 3, categories => '{b,c}'")
    assert [r[2] for r in cold] == ["content"] * 3
    record(collaborative, "u1", "a3", "click")  # 3 interactions: warm
    warm = recommend(collaborative, "'u1', k => 3, categories => '{b,c}'")
    assert ids(warm)[0] == "c2" and set(ids(warm)) == {"c1", "c2", "c3"}
    assert [r[2] for r in warm] == ["collaborative"] * 3
    assert ids(cold) != ids(warm)


def test_because_of_is_explains_first_row(shop: psycopg.Connection) -> None:
    record(shop, "u1", "a1", "click", days_ago=60)
    record(shop, "u1", "b1", "purchase")
    record(shop, "u1", "c1", "view", days_ago=1)
    for item_id, _, _, because_of in recommend(shop, "'u1', k => 12"):
        first = shop.execute(
            "select history_item_id from pgrecs.explain('u1', %s) limit 1", (item_id,)
        ).fetchone()
        assert first is not None and first[0] == because_of, item_id


def test_because_of_compares_with_the_heaviest_interactions_only(
    shop: psycopg.Connection,
) -> None:
    """settings.because_of_history caps the history because_of looks at: the heaviest positive
    interactions; 0 looks at all of them (explain's first row)."""
    record(shop, "u1", "b1", "purchase")  # weight 3
    record(shop, "u1", "a1", "click")  # 1
    record(shop, "u1", "c1", "view")  # 0.5: the lightest, and the only one near the c items

    def because_of(limit: int) -> dict[str, str | None]:
        shop.execute(
            "update pgrecs.settings set value = %s::text::jsonb where name = 'because_of_history'",
            (limit,),
        )
        return {r[0]: r[3] for r in recommend(shop, "'u1', k => 12")}

    def explain_first(item: str, among: set[str]) -> str | None:
        rows = shop.execute(
            "select history_item_id from pgrecs.explain('u1', %s)", (item,)
        ).fetchall()
        return next((r[0] for r in rows if r[0] in among), None)

    everything, heaviest_two = because_of(0), because_of(2)
    assert everything.keys() == heaviest_two.keys()
    for item in everything:
        assert everything[item] == explain_first(item, {"a1", "b1", "c1"}), item
        assert heaviest_two[item] == explain_first(item, {"a1", "b1"}), item
    near_c = [item for item in everything if item.startswith("c")]
    assert near_c and all(everything[item] == "c1" for item in near_c)
    assert all(heaviest_two[item] in {"a1", "b1", None} for item in near_c)
    assert because_of(3) == everything  # the cap covers the whole history


def _refresh(conn: psycopg.Connection) -> None:
    from pgrecs.users import refresh_users

    refresh_users(conn, all_users=True, progress=False)


def _mixed_histories(shop: psycopg.Connection) -> list[str]:
    """Users with mixed event types, negatives, repeats and ties (same item type and time)."""
    for item, event, days in [
        ("a1", "click", 60), ("b1", "purchase", 0), ("c1", "view", 1), ("c2", "view", 1),
        ("c3", "view", 1), ("a2", "dislike", 2), ("b2", "click", 1), ("b1", "view", 5),
    ]:  # fmt: skip
        record(shop, "u1", item, event, days)
    for item in ("a3", "b3", "c4", "a4"):  # four ties: same type, same time
        record(shop, "u2", item, "click", 3)
    record(shop, "u3", "c5", "dislike")  # nothing positive: the cold path
    record(shop, "u4", "b4", "like", 10)
    return ["u1", "u2", "u3", "u4"]


@pytest.mark.parametrize("limit", [2, 3, 100, 0])
def test_a_refreshed_user_gets_the_answers_of_the_live_history(
    shop: psycopg.Connection, limit: int
) -> None:
    """The refresh stores each user's heaviest positive interactions; recommend reads them
    instead of the history while the row is current, with the same rows and because_of."""
    users = _mixed_histories(shop)
    shop.execute(
        "update pgrecs.settings set value = %s::text::jsonb where name = 'because_of_history'",
        (limit,),
    )
    calls = [f"'{u}', k => 12" for u in users] + [
        f"'{u}', k => 5, exclude_seen => false" for u in users
    ]
    live = [recommend(shop, call) for call in calls]
    _refresh(shop)
    stored = shop.execute(
        "select user_id, cardinality(because_of_interactions), because_of_history"
        " from pgrecs.users"
        " order by 1"
    ).fetchall()
    positives = {"u1": 7, "u2": 4, "u3": 0, "u4": 1}
    assert stored == [
        (u, positives[u] if limit <= 0 else min(limit, positives[u]), limit) for u in users
    ]
    for call, rows in zip(calls, live, strict=True):
        again = recommend(shop, call)
        assert [(r[0], r[2], r[3]) for r in again] == [(r[0], r[2], r[3]) for r in rows], call
        assert [r[1] for r in again] == pytest.approx([r[1] for r in rows], abs=1e-6), call


def test_the_stored_list_counts_only_while_the_row_and_the_setting_are_current(
    shop: psycopg.Connection,
) -> None:
    record(shop, "u1", "a1", "purchase")
    record(shop, "u1", "b1", "click")
    _refresh(shop)

    def because_of_a() -> set[str | None]:
        return {r[3] for r in recommend(shop, "'u1', k => 12") if r[0].startswith("a")}

    assert because_of_a() == {"a1"}
    # a stored list naming only b1 shows that the call reads the stored list, and its items
    # (the interaction listed is still the purchase of a1)
    shop.execute(
        "update pgrecs.users set because_of_weights = '{1}', because_of_items = '{b1}',"
        " because_of_at = array[now()], because_of_interactions ="
        " array(select interaction_id from pgrecs.interactions where item_id = 'a1')"
        " where user_id = 'u1'"
    )
    assert because_of_a() == {"b1"}
    # a row written before revision 0011 lists interactions only: their items are looked up
    shop.execute(
        "update pgrecs.users set because_of_items = null, because_of_at = null,"
        " because_of_interactions ="
        " array(select interaction_id from pgrecs.interactions where item_id = 'b1')"
        " where user_id = 'u1'"
    )
    assert because_of_a() == {"b1"}
    shop.execute(
        "update pgrecs.users set because_of_items = '{b1}', because_of_at = array[now()]"
        " where user_id = 'u1'"
    )
    shop.execute("update pgrecs.settings set value = '50' where name = 'because_of_history'")
    assert because_of_a() == {"a1"}  # made with another setting: not read
    shop.execute("update pgrecs.settings set value = '100' where name = 'because_of_history'")
    assert because_of_a() == {"b1"}
    record(shop, "u1", "c2", "view")  # the row is no longer current
    assert because_of_a() == {"a1"}
    with pytest.raises(psycopg.errors.CheckViolation):
        shop.execute("update pgrecs.users set because_of_weights = '{1, 2}' where user_id = 'u1'")
    with pytest.raises(psycopg.errors.CheckViolation):
        shop.execute("update pgrecs.users set because_of_items = '{a1, b1}' where user_id = 'u1'")


def test_explain_orders_by_weight_times_similarity(shop: psycopg.Connection) -> None:
    record(shop, "u1", "a1", "click", days_ago=30)  # weight 1 * 0.5
    record(shop, "u1", "a5", "purchase")  # weight 3
    record(shop, "u1", "b1", "dislike")
    rows = shop.execute("select * from pgrecs.explain('u1', 'a2')").fetchall()
    assert [r[0] for r in rows] == ["a5", "a1"]
    assert [r[1] for r in rows] == ["purchase", "click"]
    assert rows[0][3] == pytest.approx(3.0) and rows[1][3] == pytest.approx(0.5)
    a2 = _vector("a", 2)
    assert rows[1][4] == pytest.approx(float(a2 @ _vector("a", 1)), abs=1e-6)
    assert shop.execute("select * from pgrecs.explain('nobody', 'a2')").fetchall() == []


@pytest.mark.parametrize(
    ("call", "sqlstate", "needle"),
    [
        ("pgrecs.recommend(null)", "22004", "user id must not be NULL"),
        ("pgrecs.recommend('u1', k => 0)", "22023", "k must be between 1 and 1000"),
        ("pgrecs.recommend('u1', k => 1001)", "22023", "k must be between 1 and 1000"),
        ("pgrecs.recommend('u1', filter => '[1]')", "22023", "filter must be a JSON object"),
        ("pgrecs.recommend('u1', filter => '{x')", "22P02", "invalid input syntax for type json"),
        ("pgrecs.recommend('u1', diversity => 1.5)", "22023", "diversity must be between 0 and 1"),
        ("pgrecs.recommend('u1', diversity => 'NaN')", "22023", "diversity must be between"),
        ("pgrecs.recommend('u1', exclude_seen => null)", "22004", "exclude_seen must not be NULL"),
        ("pgrecs.explain('u1', 'nope')", "P0002", "unknown item 'nope'"),
        ("pgrecs.explain(null, 'a1')", "22004", "must not be NULL"),
    ],
)
def test_bad_input_raises_standard_sqlstate(
    shop: psycopg.Connection, call: str, sqlstate: str, needle: str
) -> None:
    with pytest.raises(psycopg.Error) as info:
        shop.execute(f"select * from {call}")
    assert info.value.sqlstate == sqlstate
    assert needle in str(info.value)


def test_explain_of_an_unembedded_item(shop: psycopg.Connection) -> None:
    shop.execute("insert into pgrecs.items (item_id) values ('new')")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="no embedding yet"):
        shop.execute("select * from pgrecs.explain('u1', 'new')")


def test_concurrent_writes_and_reads_always_return_k(shop: psycopg.Connection, db_url: str) -> None:
    """One connection records interactions while another recommends: every call answers k rows
    and never returns an item whose interaction had committed before the call started."""
    items = [f"{g}{i}" for g in "abc" for i in range(1, 6)]
    committed: list[str] = []
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with psycopg.connect(db_url, autocommit=True) as w:
                for item in items[:10]:
                    w.execute("select pgrecs.record_interaction('u1', %s, 'click')", (item,))
                    committed.append(item)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    calls = 0
    while thread.is_alive() or calls < 5:
        seen_before = list(committed)
        rows = recommend(shop, "'u1', k => 5")
        assert len(rows) == 5
        assert not set(seen_before) & set(ids(rows))
        calls += 1
    thread.join()
    assert not errors
    assert set(ids(recommend(shop, "'u1', k => 5"))) == set(items[10:])


def test_business_rules_in_the_callers_sql(shop: psycopg.Connection) -> None:
    """The docs' example: join to the service's own table, filter on stock, re-rank by margin."""
    shop.execute("create schema shop")
    shop.execute(
        "create table shop.products (item_id text primary key, margin numeric, in_stock bool)"
    )
    shop.execute(
        "insert into shop.products values ('a2', 0.1, true), ('a3', 0.9, true),"
        " ('a4', 0.5, false), ('a5', 0.4, true)"
    )
    record(shop, "u1", "a1", "click")
    rows = shop.execute(
        """
        select r.item_id, r.score * p.margin as value
        from pgrecs.recommend('u1', k => 100) as r
        join shop.products as p using (item_id)
        where p.in_stock
        order by r.score * p.margin desc
        limit 10
        """
    ).fetchall()
    assert [r[0] for r in rows] == ["a3", "a5", "a2"]


def test_a_user_with_more_than_1000_interactions(conn: psycopg.Connection) -> None:
    rng = np.random.default_rng(11)
    insert_items(conn, [(f"i{n}", v) for n, v in enumerate(rng.normal(size=(1100, 3)))])
    conn.execute("update pgrecs.settings set value = '1.01' where name = 'dedup_threshold'")
    with conn.cursor() as cur:
        cur.executemany(
            "insert into pgrecs.interactions (user_id, item_id, event_type) values ('u1', %s, 'view')",
            [(f"i{n}",) for n in range(1050)],
        )
    rows = recommend(conn, "'u1', k => 60")
    assert sorted(ids(rows)) == sorted(f"i{n}" for n in range(1050, 1100))


def test_because_of_is_null_when_no_history_item_is_similar(conn: psycopg.Connection) -> None:
    insert_items(conn, [("p", [1, 0, 0]), ("q", [-1, 0.2, 0])])
    record(conn, "u1", "p", "click")
    rows = recommend(conn, "'u1', k => 1")
    assert ids(rows) == ["q"] and rows[0][3] is None
    assert conn.execute("select * from pgrecs.explain('u1', 'q')").fetchall() == []


def test_stored_row_from_before_training_gets_a_live_collaborative_vector(
    collaborative: psycopg.Connection,
) -> None:
    for item in ("a1", "a2", "a3"):
        record(collaborative, "u1", item, "click")
    collaborative.execute(
        "insert into pgrecs.users (user_id, content_vector, interaction_count, refreshed_through)"
        " select 'u1', '[1,0,0]', count(*), max(interaction_id) from pgrecs.interactions"
    )
    collaborative.execute(
        "insert into pgrecs.models (kind, name, dimension) values ('collaborative', 't', 64)"
    )
    warm = recommend(collaborative, "'u1', k => 3, categories => '{b,c}'")
    assert [r[2] for r in warm] == ["collaborative"] * 3
    assert set(ids(warm)) == {"c1", "c2", "c3"}


def test_weights_must_be_finite_and_bounded(shop: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.CheckViolation):
        shop.execute(
            "insert into pgrecs.interactions (user_id, item_id, event_type, weight)"
            " values ('u1', 'a1', 'view', 'Infinity')"
        )
    with pytest.raises(psycopg.errors.CheckViolation):
        shop.execute("update pgrecs.event_types set weight = 1e300 where event_type = 'view'")
    with pytest.raises(psycopg.errors.CheckViolation, match="event_types_weight_check"):
        shop.execute("update pgrecs.event_types set weight = 1e-9 where event_type = 'view'")


def test_hot_queries_walk_the_hnsw_indexes_or_scan_exactly_on_purpose(
    conn: psycopg.Connection,
) -> None:
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(3000, 3))
    e = np.eye(64, dtype=np.float32)
    with conn.cursor() as cur:
        cur.executemany(
            "insert into pgrecs.items (item_id, embedding, collab_embedding, category)"
            " values (%s, %s, %s, %s)",
            [
                (f"i{n}", v.astype(np.float32), e[n % 64], "rare" if n < 30 else "common")
                for n, v in enumerate(vectors)
            ],
        )
    conn.execute("update pgrecs.settings set value = '1000' where name = 'exact_scan_threshold'")
    conn.execute("update pgrecs.settings set value = '0.5' where name = 'content_weight_warm'")
    conn.execute("update pgrecs.settings set value = '1' where name = 'warm_threshold'")
    conn.execute("analyze pgrecs.items")
    record(conn, "u1", "i5", "click")
    plans = function_plans(conn, "select * from pgrecs.recommend('u1', k => 10)")
    assert "Index Scan using items_embedding_hnsw" in plans
    assert "Index Scan using items_collab_embedding_hnsw" in plans
    # 30 eligible items: the deliberate exact path, no HNSW walk
    plans = function_plans(
        conn, "select * from pgrecs.recommend('u1', k => 10, categories => '{rare}')"
    )
    assert "using items_embedding_hnsw" not in plans and "items_collab" not in plans
    assert "Sort" in plans


def test_seen_items_count_toward_the_exact_path_in_a_small_catalogue(
    conn: psycopg.Connection,
) -> None:
    """Without filters, a catalogue of at most 10 * (ef_search + the user's seen items) items is
    scanned exactly: a walk would have to step over the seen items first (docs/performance.md).
    1,500 items: with 10 seen items _rank walks (10 * 110 < 1,500), with 100 it scans (2,000).
    (At this size the planner may run the walk's statement as a scan too: the statement is
    what _rank chose.)"""
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(1500, 3)).astype(np.float32)
    insert_items(conn, [(f"i{n}", v) for n, v in enumerate(vectors)])
    conn.execute("analyze pgrecs.items")
    for n in range(100):
        if n < 10:
            record(conn, "few", f"i{n}", "click")
        record(conn, "many", f"i{n}", "click")
    exact = "$1) + 0 limit $2"  # _nearest's exact statement (the walk's has no "+ 0")
    assert exact not in function_plans(conn, "select * from pgrecs.recommend('few', k => 10)")
    assert exact in function_plans(conn, "select * from pgrecs.recommend('many', k => 10)")


def test_a_history_longer_than_2000_items_is_excluded_by_probing(
    conn: psycopg.Connection,
) -> None:
    """Up to 2,000 seen items go to the walk as one array; a longer history is probed in
    pgrecs.interactions row by row. Either way no seen item comes back."""
    rng = np.random.default_rng(6)
    vectors = rng.normal(size=(2_030, 3)).astype(np.float32)
    insert_items(conn, [(f"i{n}", v) for n, v in enumerate(vectors)])
    conn.execute("analyze pgrecs.items")
    conn.execute("update pgrecs.settings set value = '1.01' where name = 'dedup_threshold'")
    conn.execute(
        "insert into pgrecs.interactions (user_id, item_id, event_type)"
        " select u.id, 'i' || n, 'click' from (values ('big', 2001), ('small', 100)) as u(id, seen)"
        " cross join lateral generate_series(0, u.seen - 1) as n"
    )
    for user, seen, probed in (("big", 2_001, True), ("small", 100, False)):
        plans = function_plans(conn, f"select * from pgrecs.recommend('{user}', k => 10)")
        assert ("not exists (select from pgrecs.interactions" in plans) is probed, user
        assert ("i.item_id <> all($6)" in plans) is not probed, user
        vector = conn.execute("select pgrecs._user_vector(%s, 'content')", (user,)).fetchone()[0]
        unseen = np.arange(seen, len(vectors))
        sims = vectors[unseen] @ vector.to_numpy() / np.linalg.norm(vectors[unseen], axis=1)
        exact = [f"i{unseen[j]}" for j in np.argsort(-sims)[:10]]
        assert ids(recommend(conn, f"'{user}', k => 10")) == exact, user


def test_a_category_with_its_own_partial_index_walks_it_whatever_its_name(
    conn: psycopg.Connection,
) -> None:
    """_rank finds the documented statement's indexes by name first, any other partial HNSW
    index by its predicate; an index named after a category but built for another is not
    taken for it."""
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(3000, 3)).astype(np.float32)
    with conn.cursor() as cur:
        cur.executemany(
            "insert into pgrecs.items (item_id, embedding, category) values (%s, %s, %s)",
            [(f"i{n}", v, "rare" if n % 20 == 0 else "common") for n, v in enumerate(vectors)],
        )
    conn.execute("update pgrecs.settings set value = '1.01' where name = 'dedup_threshold'")
    conn.execute("analyze pgrecs.items")
    record(conn, "u1", "i1", "click")
    record(conn, "u1", "i40", "click")  # a rare item: seen, so excluded
    call = "select * from pgrecs.recommend('u1', k => 10, categories => '{rare}')"
    user = conn.execute("select pgrecs._user_vector('u1', 'content')").fetchone()[0].to_numpy()
    rare = [n for n in range(0, 3000, 20) if n != 40]
    sims = vectors[rare] @ user / np.linalg.norm(vectors[rare], axis=1)
    exact = [f"i{rare[j]}" for j in np.argsort(-sims)[:10]]
    named = "items_embedding_hnsw_" + conn.execute("select left(md5('rare'), 12)").fetchone()[0]
    graph = "(embedding public.vector_cosine_ops)"
    for name, predicate, walked in [
        (named, "category = 'rare'", True),
        ("my_rare_graph", "category = 'rare'", True),
        (named, "category = 'common'", False),
    ]:
        conn.execute(f"create index {name} on pgrecs.items using hnsw {graph} where {predicate}")
        plans = function_plans(conn, call)
        assert (f"Index Scan using {name}" in plans) is walked, (name, predicate)
        # else the exact scan of the 149 eligible items, never a walk of the whole graph
        assert "using items_embedding_hnsw on" not in plans
        assert ids(recommend(conn, "'u1', k => 10, categories => '{rare}'")) == exact
        conn.execute(f"drop index pgrecs.{name}")


def test_several_categories_with_partial_indexes_walk_each_and_merge(
    conn: psycopg.Connection,
) -> None:
    """A filter on two categories that both have the documented partial index: one walk per
    index, merged by distance, the same answer as the exact one."""
    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(3000, 3)).astype(np.float32)
    kinds = {0: "rare", 1: "odd"}
    with conn.cursor() as cur:
        cur.executemany(
            "insert into pgrecs.items (item_id, embedding, category) values (%s, %s, %s)",
            [(f"i{n}", v, kinds.get(n % 20, "common")) for n, v in enumerate(vectors)],
        )
    conn.execute("update pgrecs.settings set value = '1.01' where name = 'dedup_threshold'")
    record(conn, "u1", "i2", "click")
    record(conn, "u1", "i41", "click")  # an odd item: seen, so excluded
    names = []
    for category in kinds.values():
        name = (
            "items_embedding_hnsw_"
            + conn.execute("select left(md5(%s), 12)", (category,)).fetchone()[0]
        )
        conn.execute(
            f"create index {name} on pgrecs.items using hnsw (embedding public.vector_cosine_ops)"
            f" where category = '{category}'"
        )
        names.append(name)
    conn.execute("analyze pgrecs.items")
    call = "'u1', k => 10, categories => '{rare,odd}'"
    plans = function_plans(conn, f"select * from pgrecs.recommend({call})")
    assert all(f"Index Scan using {name}" in plans for name in names), plans
    user = conn.execute("select pgrecs._user_vector('u1', 'content')").fetchone()[0].to_numpy()
    eligible = [n for n in range(3000) if n % 20 in kinds and n != 41]
    sims = vectors[eligible] @ user / np.linalg.norm(vectors[eligible], axis=1)
    exact = [f"i{eligible[j]}" for j in np.argsort(-sims)[:10]]
    assert ids(recommend(conn, call)) == exact
    # a category named twice is walked once: no item comes back twice
    assert ids(recommend(conn, "'u1', k => 10, categories => '{rare,odd,rare}'")) == exact


@pytest.mark.parametrize("categories", ["null", "'{b}'"])
def test_ties_rank_by_item_id_with_or_without_the_scoring_statement(
    conn: psycopg.Connection, categories: str
) -> None:
    """Content only and no popularity penalty, _rank orders the walk's candidates itself; with a
    penalty it runs the scoring statement. A penalty that subtracts nothing (no candidate has an
    interaction) must give the same rows, and equal scores rank by item_id either way."""
    rows = [(f"t{n}", [1.0, 0.0, 0.1 * ((n - 1) // 3)], "b") for n in range(9, 0, -1)]  # ties of 3
    rows += [("h1", [1.0, 0.0, 0.0], "a")]
    insert_items(conn, rows)  # in descending id order: the heap order is not the answer
    conn.execute("update pgrecs.settings set value = '1.01' where name = 'dedup_threshold'")
    record(conn, "u1", "h1", "click")
    call = f"'u1', k => 7, categories => {categories}"
    lean = recommend(conn, call)
    conn.execute("update pgrecs.settings set value = '0.5' where name = 'popularity_penalty'")
    scored = recommend(conn, call)
    assert lean == scored
    assert ids(lean) == ["t1", "t2", "t3", "t4", "t5", "t6", "t7"]
    assert lean[0][1] == lean[1][1] == lean[2][1] > lean[3][1]


@pytest.mark.parametrize(("value", "meaning"), [("null", "default"), ("0", "all"), ("-3", "all")])
def test_because_of_history_null_and_non_positive_values(
    shop: psycopg.Connection, value: str, meaning: str
) -> None:
    """JSON null means the default (100), 0 or less the whole history: here both are every
    interaction, so because_of is explain's first row either way."""
    for item, event in (("b1", "purchase"), ("a1", "click"), ("c1", "view")):
        record(shop, "u1", item, event)
    shop.execute(
        "update pgrecs.settings set value = %s::jsonb where name = 'because_of_history'", (value,)
    )
    for item_id, _, _, because_of in recommend(shop, "'u1', k => 12"):
        first = shop.execute(
            "select history_item_id from pgrecs.explain('u1', %s) limit 1", (item_id,)
        ).fetchone()
        assert (first[0] if first else None) == because_of, (meaning, item_id)


def test_because_of_history_as_a_json_string_fails_clearly(shop: psycopg.Connection) -> None:
    record(shop, "u1", "a1", "click")
    shop.execute("update pgrecs.settings set value = '\"100\"' where name = 'because_of_history'")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="jsonb string"):
        recommend(shop, "'u1'")


def test_a_bad_because_of_history_only_fails_the_path_that_reads_it(
    shop: psycopg.Connection,
) -> None:
    """Argument errors keep their own SQLSTATE and cold users are served."""
    shop.execute("update pgrecs.settings set value = '\"x\"' where name = 'because_of_history'")
    with pytest.raises(psycopg.errors.NullValueNotAllowed):
        recommend(shop, "null")
    assert len(recommend(shop, "'nobody', k => 3")) == 3


@pytest.mark.parametrize(
    ("weight", "allowed"),
    [(0.0, True), (1e-6, True), (-1e-6, True), (1e6, True), (1e-7, False), (-1e-50, False)],
)
def test_interaction_weights_are_zero_or_between_1e_6_and_1e6(
    shop: psycopg.Connection, weight: float, allowed: bool
) -> None:
    insert = (
        "insert into pgrecs.interactions (user_id, item_id, event_type, weight)"
        " values ('u1', 'a1', 'click', %s)"
    )
    if allowed:
        shop.execute(insert, (weight,))
    else:
        with pytest.raises(psycopg.errors.CheckViolation, match="interactions_weight_check"):
            shop.execute(insert, (weight,))


@pytest.mark.parametrize("when", ["infinity", "-infinity"])
def test_interaction_times_are_finite(shop: psycopg.Connection, when: str) -> None:
    """An infinite occurred_at is refused when written: it would make every later call of that
    user's recommend fail (an interval out of range) and has no weight to give."""
    with pytest.raises(psycopg.errors.CheckViolation, match="interactions_occurred_at_check"):
        shop.execute(
            "insert into pgrecs.interactions (user_id, item_id, event_type, occurred_at)"
            " values ('u1', 'a1', 'click', %s)",
            (when,),
        )
    record(shop, "u1", "a1", "click")
    assert recommend(shop, "'u1', k => 2")


def test_interactions_many_half_lives_old_do_not_underflow(shop: psycopg.Connection) -> None:
    """An interaction 10,000 half-lives old weighs 2**-100 (the cap); times a vector element of
    1e-20 that is below single precision, which used to fail the live user vector."""
    shop.execute("insert into pgrecs.items (item_id, embedding) values ('tiny', '[1,1e-20,0.5]')")
    shop.execute("update pgrecs.settings set value = '0.01' where name = 'half_life_days'")
    record(shop, "u1", "tiny", "purchase", days_ago=100)
    record(shop, "u1", "a1", "click")
    vector = shop.execute("select pgrecs._user_vector('u1', 'content')").fetchone()[0]
    a1 = shop.execute("select embedding from pgrecs.items where item_id = 'a1'").fetchone()[0]
    np.testing.assert_allclose(
        vector.to_numpy(), a1.to_numpy() / np.linalg.norm(a1.to_numpy()), atol=1e-6
    )
    assert len(recommend(shop, "'u1', k => 3")) == 3


def test_a_missing_content_weight_row_means_the_shipped_default(conn: psycopg.Connection) -> None:
    """docs/sql.md: a missing settings row means the built-in default, which must be the value
    the migrations ship (content_weight_warm was 0.3 in the function, 0.25 in the table)."""
    names = ("warm_threshold", "content_weight_cold", "content_weight_warm")
    row = conn.execute(
        "select (value #>> '{}')::bigint from pgrecs.settings where name = 'warm_threshold'"
    ).fetchone()
    assert row is not None
    counts = [0, row[0] - 1, row[0], 10**6]  # cold, the last cold count, the first warm one, warm

    def shares() -> list[tuple[float, float]]:
        query = "select pgrecs._content_weight(%s, true), pgrecs._content_weight(%s, false)"
        return [conn.execute(query, (n, n)).fetchone() for n in counts]  # type: ignore[misc]

    shipped = shares()
    assert len({s for s, _ in shipped}) == 2 and {s for _, s in shipped} == {1.0}
    conn.execute("delete from pgrecs.settings where name = any(%s)", (list(names),))
    assert shares() == shipped
