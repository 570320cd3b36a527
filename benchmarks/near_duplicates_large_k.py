"""The near-duplicate pick at large k: `similar_items` latency at k = 10, 100 and 1000 on a
catalogue where half the items are near-copies of the other half.

    python benchmarks/near_duplicates_large_k.py [--items 5000] [--baseline 0011]

5,000 384-d vectors (2,500 in 25 clusters, each with a near-copy: cosine about 0.99), loaded
into two scratch databases of the embedded server, `pgrecs_bench_dedup_<revision>` (WIPED:
migrated down to base and up again), one at --baseline and one at this pgrecs's head. Each
k is asked for 5 query items in each; the median wall time per call is reported, and the two
revisions' answers are compared. Writes benchmarks/results/near_duplicates_large_k.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from pgrecs import embedded, migrate
from pgrecs.db import SCHEMA_REVISION

RESULTS = Path(__file__).parent / "results"
KS = (10, 100, 1000)
QUERIES = 5


def catalogue(n: int, dim: int = 384, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    half = n // 2
    centers = rng.normal(size=(25, dim)).astype(np.float32)
    base = centers[rng.integers(0, 25, half)] * 0.6 + rng.normal(size=(half, dim)) * 0.4
    copies = base + rng.normal(size=base.shape) * 0.05
    vectors = np.vstack([base, copies]).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def measure(url: str, vectors: np.ndarray) -> tuple[dict[int, float], dict[str, list[str]]]:
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        with conn.cursor() as cur:
            cur.executemany(
                "insert into pgrecs.items (item_id, embedding) values (%s, %s)",
                [(f"i{n}", v) for n, v in enumerate(vectors)],
            )
        conn.execute("analyze pgrecs.items")
        medians, answers = {}, {}
        for k in KS:
            times = []
            for q in range(0, 10 * QUERIES, 10):
                started = time.perf_counter()
                rows = conn.execute(
                    "select item_id from pgrecs.similar_items(%s, k => %s)", (f"i{q}", k)
                ).fetchall()
                times.append(time.perf_counter() - started)
                answers[f"{q}/{k}"] = [r[0] for r in rows]
            medians[k] = round(float(np.median(times)) * 1000, 1)
    return medians, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--baseline", default="0011", help="revision to compare with")
    args = parser.parse_args()
    vectors = catalogue(args.items)
    rows, answers = {}, []
    for revision in (args.baseline, SCHEMA_REVISION):
        url = embedded.start(database=f"pgrecs_bench_dedup_{revision}")
        migrate.downgrade(url, "base")
        migrate.upgrade(url, revision, dim="384")
        rows[revision], got = measure(url, vectors)
        answers.append(got)
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "items": args.items,
        "median_ms": rows,
        "same_answers": answers[0] == answers[1],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "near_duplicates_large_k.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"{result['date']} · {args.items:,} items, half of them near-copies · `similar_items`, "
        f"median of {QUERIES} calls · same answers at both revisions: {result['same_answers']}",
        "",
        "| revision | " + " | ".join(f"k = {k}" for k in KS) + " |",
        "|---|" + "---:|" * len(KS),
    ]
    for revision, medians in rows.items():
        lines.append(f"| {revision} | " + " | ".join(f"{medians[k]} ms" for k in KS) + " |")
    (RESULTS / "near_duplicates_large_k.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
