"""How often the HNSW walk changes `pgrecs.recommend`'s answer for real users (MovieLens).

    python benchmarks/walk_recall_movielens.py [--data DIR] [--database-url URL]

The synthetic benchmark's hard case is a user whose history spans unrelated regions: the mean
of such a history lies between them, and a walk of the graph finds the best items of one region
only (`pgrecs bench`, "2 unrelated interests", recall@10 about 0.6). Real users like several
kinds of things, so this script measures the same effect on real histories: MovieLens
ml-latest-small, every rating an interaction (weight = rating), item text = title + genres +
tags embedded with the bundled model, the two-tower model trained with its defaults, user
vectors refreshed. For each of the 610 users it calls `pgrecs.recommend(user, 10)` twice, as
served (HNSW walks) and with `enable_indexscan = off` (the walks become exact scans, nothing
else changes: the same seen-exclusion, near-duplicate rule and blend), and reports recall@10 of
the first answer against the second, for content-only recommendations and the default blend.

About 5 minutes on a quiet machine (embedding and training). Builds a scratch database (the
embedded server's `pgrecs_bench_walk`, or --database-url, which is WIPED: migrated down to base
and up again). Writes benchmarks/results/walk_recall_movielens.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from tqdm import tqdm

from pgrecs import embedded, evaluate, migrate, train
from pgrecs.db import SCHEMA_REVISION, open_connection
from pgrecs.embed import SentenceTransformerEmbedder, embed_pending
from pgrecs.users import refresh_users

RESULTS = Path(__file__).parent / "results"
DATA = Path("/work/shared/data/ml-latest-small")
K = 10


def recalls(conn: psycopg.Connection[Any], user_ids: list[str], label: str) -> np.ndarray:
    """recall@K of the served answer against the exact-scan answer, per user."""
    out = []
    for user in tqdm(user_ids, desc=label, unit="user"):
        query = "select item_id from pgrecs.recommend(%s, k => %s)"
        served = {r[0] for r in conn.execute(query, (user, K))}
        conn.execute("set enable_indexscan = off")
        exact = {r[0] for r in conn.execute(query, (user, K))}
        conn.execute("reset enable_indexscan")
        out.append(len(served & exact) / len(exact) if exact else 1.0)
    return np.array(out)


def summary(values: np.ndarray) -> dict[str, float]:
    return {
        "mean": round(float(values.mean()), 4),
        "p10": round(float(np.percentile(values, 10)), 2),
        "min": round(float(values.min()), 2),
        "below_0.9": round(float((values < 0.9).mean()), 4),
        "exact_match": round(float((values == 1).mean()), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="ml-latest-small directory")
    parser.add_argument("--database-url", help="scratch database, WIPED (default: embedded)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    started = time.perf_counter()
    dataset = evaluate.load_movielens(args.data)
    url = args.database_url or embedded.start(database="pgrecs_bench_walk")
    migrate.downgrade(url, "base")
    migrate.upgrade(url, dim="384")
    with open_connection(url, autocommit=True) as conn:
        evaluate.load_catalogue(conn, dataset.items)
        embed_pending(conn, SentenceTransformerEmbedder())
        evaluate.load_interactions(conn, dataset.ratings, "rating")
        train.train(conn, seed=0)
        refresh_users(conn)
        conn.execute("analyze pgrecs.items")
        user_ids = [r[0] for r in conn.execute("select user_id from pgrecs.users order by 1")]
        seen = np.array(
            [
                r[0]
                for r in conn.execute(
                    "select count(distinct item_id) from pgrecs.interactions group by user_id"
                )
            ]
        )
        defaults = dict(conn.execute("select name, value from pgrecs.settings").fetchall())
        rows = {}
        evaluate.set_settings(conn, {**defaults, **evaluate.CONTENT_ONLY})
        rows["content-only"] = summary(recalls(conn, user_ids, "content-only"))
        evaluate.set_settings(conn, defaults)
        rows["default blend"] = summary(recalls(conn, user_ids, "default blend"))
        server = conn.execute("select current_setting('server_version')").fetchone()
        ef = defaults.get("ef_search")

    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "schema_revision": SCHEMA_REVISION,
        "postgresql": server[0] if server else None,
        "users": len(user_ids),
        "items": len(dataset.items),
        "seen_per_user": {"median": int(np.median(seen)), "max": int(seen.max())},
        "ef_search": ef,
        "k": K,
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "walk_recall_movielens.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"{result['date']} · schema revision {SCHEMA_REVISION} · PostgreSQL {result['postgresql']}",
        "",
        f"`pgrecs.recommend(user, {K})` as served (HNSW walks, ef_search {ef}) against the same "
        f"call with exact scans, for the {len(user_ids)} MovieLens users ({len(dataset.items):,} "
        f"items; seen items per user: median {result['seen_per_user']['median']}, "
        f"max {result['seen_per_user']['max']}).",
        "",
        "| recommendations | recall@10 mean | p10 | min | users below 0.9 "
        "| users with the exact answer |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in rows.items():
        lines.append(
            f"| {name} | {s['mean']:.3f} | {s['p10']:.2f} | {s['min']:.2f} | "
            f"{s['below_0.9']:.1%} | {s['exact_match']:.1%} |"
        )
    (RESULTS / "walk_recall_movielens.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
