"""User-vector refresh rate: `pgrecs refresh --all` on synthetic users, and the streaming lag.

    python benchmarks/refresh_users.py [--users 10000] [--per-user 100] [--items 10000]

Builds a scratch database (the embedded server's `pgrecs_bench_users`, or --database-url, which
is WIPED: it is migrated down to base and up again), loads clustered 384-d item vectors and
users with --per-user interactions each, then times a full batch refresh (target: >= 5,000
users/s with 100 interactions each) and, with --stream-seconds > 0, the lag between an
interaction's commit and its user's refreshed vector under a steady write load (target: < 1 s
at 200 interactions/s). Writes benchmarks/results/refresh_users.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

import pgrecs
from pgrecs import embedded, migrate, users
from pgrecs.db import SCHEMA_REVISION

RESULTS = Path(__file__).parent / "results"
EVENTS = ["view", "click", "cart", "purchase", "like", "dislike"]


def scratch(url: str | None) -> str:
    url = url or embedded.start(database="pgrecs_bench_users")
    migrate.downgrade(url, "base")
    migrate.upgrade(url, dim="384")
    return url


def load(url: str, n_items: int, n_users: int, per_user: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(50, 384)).astype(np.float32)
    vectors = centres[rng.integers(50, size=n_items)] + 0.3 * rng.normal(size=(n_items, 384))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with psycopg.connect(url) as conn:
        register_vector(conn)
        conn.execute("drop index pgrecs.items_embedding_hnsw")  # rebuilt below, after the load
        with (
            conn.cursor() as cur,
            cur.copy(
                "copy pgrecs.items (item_id, embedding, content_hash) from stdin (format binary)"
            ) as copy,
        ):
            copy.set_types(["text", "vector", "text"])
            for n, v in enumerate(vectors.astype(np.float32)):
                copy.write_row((f"item{n}", v, "synthetic"))
        conn.execute(
            "create index items_embedding_hnsw on pgrecs.items"
            " using hnsw (embedding public.vector_cosine_ops) with (m = 16, ef_construction = 64)"
        )
        with (
            conn.cursor() as cur,
            cur.copy(
                "copy pgrecs.interactions (user_id, item_id, event_type, occurred_at) from stdin"
            ) as copy,
        ):
            for u in range(n_users):
                items = rng.integers(n_items, size=per_user)
                days = rng.integers(0, 300, size=per_user)
                for item, day, event in zip(
                    items, days, rng.integers(len(EVENTS), size=per_user), strict=True
                ):
                    copy.write_row(
                        (f"user{u}", f"item{item}", EVENTS[event], start + timedelta(days=int(day)))
                    )
        conn.execute("analyze")


def stream_lag(url: str, seconds: float, rate: float, n_users: int, n_items: int) -> dict:
    """Write `rate` interactions/s for `seconds` while `pgrecs refresh --watch` runs; report the
    lag from each commit until that user's stored vector covers it."""
    from pgrecs.watch import follow

    stop = threading.Event()

    def handle(payloads: set[str] | None) -> None:
        with pgrecs.connect(url) as client:
            client.refresh_users(None if payloads is None else sorted(payloads))

    watcher = threading.Thread(
        target=follow, args=(url, "pgrecs_interactions", handle), kwargs={"stop": stop}
    )
    watcher.start()
    time.sleep(1.0)
    rng = np.random.default_rng(1)
    lags: list[float] = []
    pending: list[tuple[str, int, float]] = []
    with (
        psycopg.connect(url, autocommit=True) as writer,
        psycopg.connect(url, autocommit=True) as probe,
    ):
        started = time.monotonic()
        t_end = started + seconds
        next_write = started
        while time.monotonic() < t_end or pending:
            burst_end = time.monotonic() + 0.01  # every write due, but probe every 10 ms
            while (now := time.monotonic()) >= next_write and now < min(t_end, burst_end):
                user = f"user{rng.integers(n_users)}"
                (iid,) = writer.execute(
                    "insert into pgrecs.interactions (user_id, item_id, event_type)"
                    " values (%s, %s, 'click') returning interaction_id",
                    (user, f"item{rng.integers(n_items)}"),
                ).fetchone()
                pending.append((user, iid, time.monotonic()))
                next_write += 1 / rate
            through = dict(
                probe.execute(
                    "select user_id, refreshed_through from pgrecs.users where user_id = any(%s)",
                    (sorted({user for user, _, _ in pending}),),
                ).fetchall()
            )
            now, still = time.monotonic(), []  # after the probe: the lag is not understated
            for user, iid, t in pending:
                if (through.get(user) or 0) >= iid:
                    lags.append(now - t)
                elif now - t > 10:
                    lags.append(float("inf"))
                else:
                    still.append((user, iid, t))
            pending = still
            time.sleep(0.002)
    stop.set()
    watcher.join()
    finite = np.array(lags)
    return {
        "interactions": len(lags),
        "rate_per_s": round(len(lags) / seconds, 1),  # as written, not as asked
        "asked_rate_per_s": rate,
        "lag_p50_s": float(np.percentile(finite, 50)),
        "lag_p99_s": float(np.percentile(finite, 99)),
        "lag_max_s": float(finite.max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--per-user", type=int, default=100)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--chunk-size", type=int, default=1000)
    parser.add_argument("--stream-seconds", type=float, default=20.0)
    parser.add_argument("--stream-rate", type=float, default=200.0)
    parser.add_argument("--database-url", help="a scratch database to WIPE (default: embedded)")
    args = parser.parse_args()

    load_average = os.getloadavg()
    url = scratch(args.database_url)
    t = time.perf_counter()
    load(url, args.items, args.users, args.per_user)
    print(
        f"loaded {args.items} items, {args.users * args.per_user} interactions "
        f"in {time.perf_counter() - t:.1f} s"
    )
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pgrecs.connect(url) as client:
        report = client.refresh_users(all_users=True, chunk_size=args.chunk_size, progress=True)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(report)
    result: dict = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "schema_revision": SCHEMA_REVISION,
        "load_average_at_start": [round(x, 2) for x in load_average],
        "items": args.items,
        "users": args.users,
        "interactions_per_user": args.per_user,
        "chunk_size": args.chunk_size,
        "batch_seconds": round(report.seconds, 2),
        "batch_users_per_s": round(report.users / report.seconds),
        "peak_rss_mb": round(rss_after / 1024),
        "rss_growth_mb": round((rss_after - rss_before) / 1024),
    }
    assert report.users == args.users
    assert users.stale_users(pgrecs.connect(url).conn) == []
    if args.stream_seconds > 0:
        result["streaming"] = stream_lag(
            url, args.stream_seconds, args.stream_rate, args.users, args.items
        )
        print(result["streaming"])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "refresh_users.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"{result['measured_at']} · schema revision {SCHEMA_REVISION}"
        f" · load average at start {' '.join(map(str, result['load_average_at_start']))}",
        "",
        "| users | interactions/user | items | batch users/s | batch s | peak RSS MB |",
        "|---|---|---|---|---|---|",
        f"| {args.users} | {args.per_user} | {args.items} | {result['batch_users_per_s']:,} "
        f"| {result['batch_seconds']} | {result['peak_rss_mb']} |",
    ]
    if "streaming" in result:
        s = result["streaming"]
        lines += [
            "",
            "| streaming load | interactions | lag p50 s | lag p99 s | lag max s |",
            "|---|---|---|---|---|",
            f"| {s['rate_per_s']:.0f}/s | {s['interactions']} | {s['lag_p50_s']:.3f} "
            f"| {s['lag_p99_s']:.3f} | {s['lag_max_s']:.3f} |",
        ]
    (RESULTS / "refresh_users.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
