"""Where `pgrecs.recommend`'s time goes: server-side cost of each part, per call.

    python benchmarks/profile_recommend.py [--size 100k] [--database-url URL] [--users 40]

Runs against a database `pgrecs bench` has loaded (default: the private server of
`pgrecs bench --size SIZE --private-server`, started again by this script with the same memory
settings, prewarmed as the bench does, and stopped afterwards; its query users are u0, u1, ...
with 500 seen items each). Each part is called for every user inside one `DO` block and timed
with clock_timestamp(), so the figures are server time without the client round trip, in ms
per call: the first round (each user's data met for the first time, as in `pgrecs bench`) and
the best of --rounds rounds (everything in the CPU caches). The parts are the ones
docs/performance.md discusses: the whole call with and without a category, `_rank` alone, the
walk (`_nearest`) alone, the history pass, the popular-items path (a user with no history,
`popular_items` all time with a category and over the last 7 days), and `recommend` with
because_of over the whole history (settings.because_of_history = 0, restored afterwards).
Nothing is written to disk.
"""

from __future__ import annotations

import argparse

import psycopg

PARTS = {
    "recommend, 5% category": "select * from pgrecs.recommend(u, 10, array['c04'])",
    "recommend, no filter": "select * from pgrecs.recommend(u, 10)",
    "_rank, 5% category": (
        "select * from pgrecs._rank((select content_vector from pgrecs.users"
        " where user_id = u), null, 1, 10, array['c04'], null, u, null, null, 0, 0, null)"
    ),
    "_nearest, 5% category (the walk)": (
        "select * from pgrecs._nearest((select content_vector from pgrecs.users"
        " where user_id = u), 20, array['c04'], null, u, null, false, 'content')"
    ),
    "_history (the history pass)": "select * from pgrecs._history(u)",
    "recommend, a user with no history (popular items)": (
        "select * from pgrecs.recommend('new-' || u, 10)"
    ),
    "popular_items, 5% category": "select * from pgrecs.popular_items(10, array['c04'])",
    "popular_items, last 7 days": (
        "select * from pgrecs.popular_items(10, null, null, interval '7 days')"
    ),
}
EXACT = "recommend, 5% category, because_of over the whole history"


def per_call_ms(
    conn: psycopg.Connection, body: str, users: list[str], rounds: int
) -> tuple[float, float]:
    """First and best of `rounds` rounds of `body` run once per user inside one DO block."""
    notices: list[str] = []

    def keep(diag: psycopg.errors.Diagnostic) -> None:
        notices.append(diag.message_primary or "")

    conn.add_notice_handler(keep)
    listed = "{" + ",".join(users) + "}"
    conn.execute(f"""
do $$
declare u text; t0 timestamptz; ms float8; first float8; best float8 := 'Infinity'; r record;
begin
    for round in 1 .. {rounds} loop
        t0 := clock_timestamp();
        foreach u in array '{listed}'::text[] loop
            for r in {body} loop end loop;
        end loop;
        ms := extract(epoch from clock_timestamp() - t0) * 1000 / {len(users)};
        first := coalesce(first, ms);
        best := least(best, ms);
    end loop;
    raise notice '% %', first, best;
end
$$""")
    conn.remove_notice_handler(keep)
    first, best = notices[-1].split()
    return float(first), float(best)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=["20k", "100k", "1m"], default="100k")
    parser.add_argument("--database-url", help="a database pgrecs bench loaded")
    parser.add_argument("--users", type=int, default=40, help="query users u0.. (default 40)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the best is kept")
    args = parser.parse_args()

    from pgrecs import bench

    url = args.database_url or bench.private_server(bench.SIZES[args.size])
    try:
        bench.prewarm(url)
        with psycopg.connect(url, autocommit=True) as conn:
            users = [f"u{i}" for i in range(args.users)]
            found = conn.execute(
                "select count(distinct user_id) from pgrecs.interactions where user_id = any(%s)",
                (users,),
            ).fetchone()
            if not found or found[0] < len(users):
                raise SystemExit("the bench's query users are not there: run pgrecs bench first")
            items = conn.execute("select count(*) from pgrecs.items").fetchone()
            print(f"{items[0] if items else 0:,} items, {len(users)} users, ms per call")
            print(f"  {'':58s} {'first':>6s} {'best':>6s}")
            for name, body in PARTS.items():
                first, best = per_call_ms(conn, body, users, args.rounds)
                print(f"  {name:58s} {first:6.2f} {best:6.2f}")
            row = conn.execute(
                "select value from pgrecs.settings where name = 'because_of_history'"
            ).fetchone()
            conn.execute("update pgrecs.settings set value = '0' where name = 'because_of_history'")
            try:
                first, best = per_call_ms(conn, PARTS["recommend, 5% category"], users, args.rounds)
                print(f"  {EXACT:58s} {first:6.2f} {best:6.2f}")
            finally:
                conn.execute(
                    "update pgrecs.settings set value = %s where name = 'because_of_history'",
                    (psycopg.types.json.Jsonb(row[0] if row else 100),),
                )
    finally:
        if not args.database_url:
            bench.stop_private_server()


if __name__ == "__main__":
    main()
