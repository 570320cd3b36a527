"""recommend_for_items, popular_items and record_interaction on hand-made 3-d vectors."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.conftest import function_plans, insert_items


def ids(conn: psycopg.Connection, call: str) -> list[str]:
    return [row[0] for row in conn.execute(f"select item_id from {call}")]


def unit(deg: float) -> list[float]:
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg)), 0.0]


@pytest.fixture
def fan(conn: psycopg.Connection) -> psycopg.Connection:
    """a0 .. a160 on a half circle, 20° apart; even tens are 'left' below 80°."""
    insert_items(
        conn,
        [
            (f"a{d}", unit(d), "left" if d < 80 else "right", f'{{"deg": {d}}}')
            for d in range(0, 180, 20)
        ],
    )
    return conn


# -- recommend_for_items ---------------------------------------------------------------------------


def test_session_items_pull_towards_their_mean_and_are_excluded(fan: psycopg.Connection) -> None:
    # mean of 0° and 40° points at 20°; neither input comes back
    assert ids(fan, "pgrecs.recommend_for_items('{a0,a40}', k => 3)") == ["a20", "a60", "a80"]


def test_weights_and_negative_items(fan: psycopg.Connection) -> None:
    # a heavy weight on a160 moves the query next to it
    assert ids(fan, "pgrecs.recommend_for_items('{a0,a160}', weights => '{1,5}', k => 1)") == [
        "a140"
    ]
    # a negative item pushes away and is never returned: v(80°) - v(100°) points at 0°
    got = ids(fan, "pgrecs.recommend_for_items('{a80}', k => 8, negative_item_ids => '{a100}')")
    assert got[:2] == ["a0", "a20"]
    assert "a100" not in got and "a80" not in got and len(got) == 7


def test_session_filters_and_k_guarantee(fan: psycopg.Connection) -> None:
    assert ids(fan, "pgrecs.recommend_for_items('{a0}', k => 10, categories => '{right}')") == [
        "a80",
        "a100",
        "a120",
        "a140",
        "a160",
    ]
    assert ids(fan, """pgrecs.recommend_for_items('{a0}', filter => '{"deg": 140}')""") == ["a140"]


@pytest.mark.parametrize("scale", ["1e-50", "1e-300", "1e300"])
def test_session_weights_of_any_magnitude_rank_alike(fan: psycopg.Connection, scale: str) -> None:
    """Only the ratio of the weights matters: tiny or huge ones used to underflow or overflow
    single precision."""
    expected = ids(fan, "pgrecs.recommend_for_items('{a0,a160}', weights => '{1,5}', k => 4)")
    assert expected[0] == "a140"
    weights = f"array[1 * {scale}, 5 * {scale}]::float8[]"
    got = ids(fan, f"pgrecs.recommend_for_items('{{a0,a160}}', weights => {weights}, k => 4)")
    assert got == expected
    # and a weight far below the others counts for (almost) nothing
    assert ids(
        fan, "pgrecs.recommend_for_items('{a0,a160}', weights => '{1e-300,1}', k => 1)"
    ) == ids(fan, "pgrecs.recommend_for_items('{a0,a160}', weights => '{0,1}', k => 1)")
    # ratios so far apart that dividing or multiplying them underflows double precision
    # (an error in PostgreSQL, 22003, before revision 0013)
    only_a160 = ids(fan, "pgrecs.recommend_for_items('{a0,a160}', weights => '{0,1}', k => 4)")
    for weights in ("{1e-300,1e300}", "{-1e-300,1e300}", "{5e-324,1e-290}"):
        call = f"pgrecs.recommend_for_items('{{a0,a160}}', weights => '{weights}', k => 4)"
        assert ids(fan, call) == only_a160, weights
    negative = "pgrecs.recommend_for_items('{a0}', weights => '{1e-300}', negative_item_ids => '{a160}', k => 4)"
    assert ids(fan, negative) == ids(
        fan,
        "pgrecs.recommend_for_items('{a0}', weights => '{0}', negative_item_ids => '{a160}', k => 4)",
    )


@pytest.mark.parametrize(
    ("call", "sqlstate", "needle"),
    [
        ("pgrecs.recommend_for_items('{}')", "22023", "at least one item"),
        ("pgrecs.recommend_for_items(null)", "22023", "at least one item"),
        ("pgrecs.recommend_for_items('{a0,zz,aa}')", "P0002", "unknown item(s) {aa,zz}"),
        ("pgrecs.recommend_for_items('{a0}', negative_item_ids => '{zz}')", "P0002", "{zz}"),
        ("pgrecs.recommend_for_items('{a0,NULL}')", "22004", "must not be NULL"),
        (
            "pgrecs.recommend_for_items('{a0}', weights => '{1,2}')",
            "22023",
            "2 weights for 1 items",
        ),
        ("pgrecs.recommend_for_items('{a0}', weights => '{NaN}')", "22023", "finite"),
        (
            "pgrecs.recommend_for_items('{a0,a20}', weights => '[0:1]={3,1}')",
            "22023",
            "one-dimensional array indexed from 1, got [0:1]",
        ),
        (
            "pgrecs.recommend_for_items('{a0,a20}', weights => '{{3,1}}')",
            "22023",
            "one-dimensional array indexed from 1, got [1:1][1:2]",
        ),
        ("pgrecs.recommend_for_items('{a0}', k => 0)", "22023", "k must be between 1 and 1000"),
        ("pgrecs.recommend_for_items('{a0}', filter => '3')", "22023", "JSON object"),
        ("pgrecs.recommend_for_items('{a0}', negative_item_ids => '{a0}')", "22023", "cancel out"),
        ("pgrecs.recommend_for_items('{bare}')", "55000", "have no embedding yet"),
        (
            "pgrecs.recommend_for_items('{{a0},{a20}}')",
            "22023",
            "must be one-dimensional arrays, got [1:2][1:1] and NULL",
        ),
        (
            "pgrecs.recommend_for_items('{a0}', negative_item_ids => '{{a20}}')",
            "22023",
            "must be one-dimensional arrays, got [1:1] and [1:1][1:1]",
        ),
    ],
)
def test_session_bad_input(fan: psycopg.Connection, call: str, sqlstate: str, needle: str) -> None:
    fan.execute("insert into pgrecs.items (item_id) values ('bare')")
    with pytest.raises(psycopg.Error) as caught:
        fan.execute(f"select * from {call}")
    assert caught.value.sqlstate == sqlstate
    assert needle in str(caught.value)


# -- popular_items --------------------------------------------------------------------------------


def test_popularity_sums_weights_and_fills_up_to_k(fan: psycopg.Connection) -> None:
    fan.execute("""
        insert into pgrecs.interactions (user_id, item_id, event_type, occurred_at, weight) values
            ('u1', 'a40', 'purchase', now(), null),               -- 3
            ('u2', 'a20', 'click', now(), null),                  -- 1
            ('u3', 'a20', 'click', now() - interval '30 days', null),  -- 1 (old)
            ('u4', 'a60', 'view', now(), 5.0),                    -- explicit weight 5
            ('u5', 'a80', 'dislike', now(), null)                 -- -2
    """)
    rows = fan.execute("select item_id, score from pgrecs.popular_items(k => 9)").fetchall()
    assert rows[:3] == [("a60", 5.0), ("a40", 3.0), ("a20", 2.0)]
    assert rows[-1] == ("a80", -2.0)
    assert len(rows) == 9  # untouched items fill the list with score 0
    assert ids(fan, "pgrecs.popular_items(k => 2, since => '7 days')") == ["a60", "a40"]
    assert fan.execute(
        "select score from pgrecs.popular_items(k => 3, since => '7 days') where item_id = 'a20'"
    ).fetchone() == (1.0,)
    assert ids(fan, "pgrecs.popular_items(k => 2, categories => '{right}')") == ["a100", "a120"]
    assert ids(fan, """pgrecs.popular_items(filter => '{"deg": 160}')""") == ["a160"]
    # a window longer than PostgreSQL's timestamps reach covers the whole log
    assert (
        fan.execute(
            "select item_id, score from pgrecs.popular_items(k => 9, since => '178000000 years')"
        ).fetchall()
        == rows
    )
    fan.execute("update pgrecs.items set available = false where item_id = 'a60'")
    assert ids(fan, "pgrecs.popular_items(k => 1)") == ["a40"]


LIVE_POPULARITY = """
    select i.item_id, coalesce(sum(coalesce(x.weight, e.weight)), 0)::float8 as score
    from pgrecs.items as i
    left join pgrecs.interactions as x on x.item_id = i.item_id
    left join pgrecs.event_types as e on e.event_type = x.event_type
    where i.available
    group by i.item_id
    order by score desc, i.item_id
"""


def assert_counters_match_the_log(conn: psycopg.Connection) -> None:
    """pgrecs.item_popularity equals the log, and popular_items ranks as the log says."""
    counted = conn.execute(
        "select item_id, interaction_count, score from pgrecs.item_popularity"
        " where interaction_count <> 0 or score <> 0 order by item_id"
    ).fetchall()
    logged = conn.execute("""
        select x.item_id, count(*), sum(coalesce(x.weight, e.weight))
        from pgrecs.interactions as x join pgrecs.event_types as e using (event_type)
        group by x.item_id order by x.item_id
    """).fetchall()
    assert counted == logged
    live = conn.execute(LIVE_POPULARITY).fetchall()
    assert conn.execute("select * from pgrecs.popular_items(k => 1000)").fetchall() == live
    for k in (1, 3):
        assert conn.execute(f"select * from pgrecs.popular_items(k => {k})").fetchall() == live[:k]


def test_popularity_counters_follow_every_change_to_the_log(fan: psycopg.Connection) -> None:
    """The all-time path reads counters that triggers keep; they must equal the log after
    inserts (multi-row, COPY, record_interaction), updates, deletes, an item's deletion, a
    change of an event type's weight and a truncate. Weights are multiples of 1/4, so every sum
    is exact."""
    assert_counters_match_the_log(fan)  # nothing yet: every item scores 0
    fan.execute("""
        insert into pgrecs.interactions (user_id, item_id, event_type, weight) values
            ('u1', 'a40', 'purchase', null), ('u1', 'a20', 'click', 2.25),
            ('u2', 'a20', 'view', null), ('u2', 'a100', 'dislike', null),
            ('u3', 'a40', 'like', -0.75), ('u3', 'a120', 'cart', null)
    """)
    assert_counters_match_the_log(fan)
    with fan.cursor().copy(
        "copy pgrecs.interactions (user_id, item_id, event_type, weight) from stdin"
    ) as copy:
        for n in range(60):
            copy.write_row((f"c{n}", f"a{20 * (n % 9)}", ["view", "click", "cart"][n % 3], None))
    fan.execute("select pgrecs.record_interaction('u9', 'a160', 'like')")
    assert_counters_match_the_log(fan)
    fan.execute("update pgrecs.interactions set weight = 4.5 where user_id = 'u1'")
    fan.execute("update pgrecs.interactions set item_id = 'a0' where user_id = 'u2'")
    fan.execute("update pgrecs.interactions set event_type = 'purchase' where user_id = 'c7'")
    assert_counters_match_the_log(fan)
    fan.execute("delete from pgrecs.interactions where user_id in ('u3', 'c1', 'c2')")
    assert_counters_match_the_log(fan)
    fan.execute("delete from pgrecs.interactions where item_id = 'a160'")  # back to no score
    assert fan.execute(
        "select interaction_count, score from pgrecs.item_popularity where item_id = 'a160'"
    ).fetchone() == (0, 0.0)
    fan.execute("delete from pgrecs.items where item_id = 'a80'")  # cascades to its interactions
    assert_counters_match_the_log(fan)
    fan.execute("update pgrecs.event_types set weight = 7.5 where event_type = 'view'")
    assert_counters_match_the_log(fan)
    fan.execute("update pgrecs.event_types set description = 'seen' where event_type = 'view'")
    assert_counters_match_the_log(fan)
    fan.execute("update pgrecs.items set available = false where item_id = 'a40'")
    assert_counters_match_the_log(fan)
    fan.execute("truncate pgrecs.interactions")
    assert fan.execute("select count(*) from pgrecs.item_popularity").fetchone() == (0,)
    assert_counters_match_the_log(fan)


def test_popularity_counters_under_concurrent_writers(fan: psycopg.Connection, db_url: str) -> None:
    """Two writers recording interactions with the same items at once: no update is lost."""

    def write(user: str) -> None:
        with psycopg.connect(db_url, autocommit=True) as own:
            for n in range(150):
                own.execute(
                    "select pgrecs.record_interaction(%s, %s, 'click')",
                    (user, ["a0", "a20", "a40"][n % 3]),
                )

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(write, ["w1", "w2"]))
    assert fan.execute(
        "select item_id, interaction_count, score from pgrecs.item_popularity order by item_id"
    ).fetchall() == [("a0", 100, 100.0), ("a20", 100, 100.0), ("a40", 100, 100.0)]
    assert_counters_match_the_log(fan)


def test_a_since_window_reads_only_its_part_of_the_log(conn: psycopg.Connection) -> None:
    """A log written in time order: the window is found through the BRIN index on occurred_at,
    not by reading every interaction."""
    insert_items(conn, [(f"i{n}", unit(n % 180)) for n in range(3000)])
    with conn.cursor().copy(
        "copy pgrecs.interactions (user_id, item_id, event_type, occurred_at) from stdin"
    ) as copy:
        now = datetime.now(UTC)
        for n in range(60000):  # one every 30 s, ending now
            when = now - timedelta(seconds=30 * (60000 - n))
            copy.write_row((f"u{n % 500}", f"i{(n * 7) % 3000}", "click", when))
    conn.execute("analyze pgrecs.interactions")
    call = "select * from pgrecs.popular_items(k => 3, since => '1 hour')"
    plans = function_plans(conn, call)
    rows = conn.execute(call).fetchall()
    assert "interactions_occurred_at" in plans, plans
    assert "Seq Scan on interactions" not in plans, plans
    assert "Seq Scan on items" not in plans, plans  # only the window's items are read
    live = conn.execute("""
        select x.item_id, count(*)::float8 from pgrecs.interactions as x
        where x.occurred_at >= now() - interval '1 hour'
        group by x.item_id order by 2 desc, 1 limit 3
    """).fetchall()
    assert rows == live


# popular_items's scores over a window as one statement: the definition the groups must match
WINDOW_REFERENCE = """
    select i.item_id, coalesce(p.score, 0)::float8 as score
    from pgrecs.items as i
    left join (
        select x.item_id, sum(coalesce(x.weight, e.weight)) as score
        from pgrecs.interactions as x
        join pgrecs.event_types as e on e.event_type = x.event_type
        where x.occurred_at >= now() - %(since)s::interval
        group by x.item_id
    ) as p on p.item_id = i.item_id
    where i.available
      and (%(categories)s::text[] is null or i.category = any(%(categories)s::text[]))
      and (%(filter)s::jsonb is null or i.attributes @> %(filter)s::jsonb)
      and (%(user)s::text is null or not exists (
            select from pgrecs.interactions as s
            where s.user_id = %(user)s::text and s.item_id = i.item_id))
      and (%(exclude)s::text[] is null or i.item_id <> all(%(exclude)s::text[]))
    order by score desc, i.item_id
    limit %(k)s
"""


def test_a_since_window_ranks_positive_untouched_and_negative_items(
    conn: psycopg.Connection,
) -> None:
    """Every group of the window path (positive, zero, negative scores), with filters and
    exclusions, against the window's scores computed in one statement."""
    insert_items(
        conn,
        [
            (f"i{n:03d}", unit(n % 180), f"c{n % 4}", f'{{"even": {str(n % 2 == 0).lower()}}}')
            for n in range(200)
        ],
    )
    conn.execute("update pgrecs.items set available = false where item_id like '%7'")
    now = datetime.now(UTC)
    rows: list[tuple[str, str, str, datetime, float | None]] = []
    for n in range(0, 200, 3):  # a third of the items touched, some long ago
        age = timedelta(days=2 if n % 2 else 40)
        event = "dislike" if n % 5 == 0 else ("purchase" if n % 7 == 0 else "click")
        rows += [(f"u{m}", f"i{n:03d}", event, now - age, None) for m in range(1 + n % 4)]
    rows += [  # exactly zero in the window: a like and a dislike (2 - 2)
        ("z1", "i100", "like", now - timedelta(days=1), None),
        ("z2", "i100", "dislike", now - timedelta(days=1), None),
        ("z1", "i101", "view", now - timedelta(days=1), 0.25),
    ]
    with conn.cursor().copy(
        "copy pgrecs.interactions (user_id, item_id, event_type, occurred_at, weight) from stdin"
    ) as copy:
        for row in rows:
            copy.write_row(row)
    cases = [
        {"k": k, "since": since, "categories": cats, "filter": flt, "user": None, "exclude": None}
        for k in (1, 5, 60, 200)
        for since in ("7 days", "100 days")
        for cats, flt in ((None, None), (["c1"], None), (["c0", "c3"], '{"even": true}'))
    ]
    cases += [
        {
            "k": 200,
            "since": "7 days",
            "categories": None,
            "filter": None,
            "user": user,
            "exclude": exclude,
        }
        for user, exclude in (("u1", None), (None, ["i003", "i100", "i105"]), ("z1", ["i000"]))
    ]
    scores = set()
    for case in cases:
        got = conn.execute(
            "select * from pgrecs._popular(%(k)s, %(categories)s, %(filter)s::jsonb,"
            " %(since)s::interval, %(user)s, %(exclude)s)",
            case,
        ).fetchall()
        assert got == conn.execute(WINDOW_REFERENCE, case).fetchall(), case
        scores |= {math.copysign(1, score) if score else 0 for _, score in got}
        if case["user"] is None and case["exclude"] is None:
            assert (
                got
                == conn.execute(
                    "select * from pgrecs.popular_items(%(k)s, %(categories)s, %(filter)s::jsonb,"
                    " %(since)s::interval)",
                    case,
                ).fetchall()
            )
    assert scores == {1, 0, -1}  # every group was reached


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        ("pgrecs.popular_items(k => 0)", "k must be between 1 and 1000"),
        ("pgrecs.popular_items(k => 5000)", "got 5000"),
        ("pgrecs.popular_items(since => '-1 day')", "since must be a positive interval"),
        ("pgrecs.popular_items(filter => '[]')", "JSON object"),
    ],
)
def test_popular_bad_input(fan: psycopg.Connection, call: str, needle: str) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=needle):
        fan.execute(f"select * from {call}")


# -- record_interaction -------------------------------------------------------------------------


def test_record_interaction_is_seen_by_the_next_call(fan: psycopg.Connection, db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as other:
        other.execute("select pgrecs.record_interaction('u1', 'a20', 'click')")
    # committed on another connection: excluded on the very next query here
    assert ids(fan, "pgrecs.similar_items('a0', k => 1, exclude_seen_by => 'u1')") == ["a40"]
    fan.execute("select pgrecs.record_interaction('u1', 'a40', 'cart', '2026-01-01T00:00:00Z')")
    assert fan.execute(
        "select event_type, occurred_at = '2026-01-01T00:00:00Z' from pgrecs.interactions"
        " where item_id = 'a40'"
    ).fetchone() == ("cart", True)


@pytest.mark.parametrize(
    ("args", "sqlstate", "needle"),
    [
        ("'u1', 'zz', 'click'", "P0002", "unknown item 'zz'"),
        ("'u1', 'a0', 'teleport'", "22023", "unknown event type 'teleport'"),
        ("null, 'a0', 'click'", "22004", "are required"),
        ("'u1', 'a0', 'click', 'infinity'", "22023", "finite timestamp"),
        ("'', 'a0', 'click'", "22023", "user_id must not be empty"),
    ],
)
def test_record_interaction_bad_input(
    fan: psycopg.Connection, args: str, sqlstate: str, needle: str
) -> None:
    with pytest.raises(psycopg.Error) as caught:
        fan.execute(f"select pgrecs.record_interaction({args})")
    assert caught.value.sqlstate == sqlstate
    assert needle in str(caught.value)
    assert fan.execute("select count(*) from pgrecs.interactions").fetchone() == (0,)
