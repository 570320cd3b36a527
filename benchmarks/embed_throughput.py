"""Embedding throughput: items/s through `pgrecs embed` against bare `model.encode` on the same
texts, and rows/s writing precomputed vectors.

    python benchmarks/embed_throughput.py [--items N] [--batch-size 64] [--rows-per-batch 4096]
        [--write-rows 50000] [--movies-dir DIR] [--database-url URL] [--fake-model] [--out DIR]

Texts: MovieLens ml-latest-small movies (title + genres + user tags), read from --movies-dir
(default /work/shared/data/ml-latest-small, never copied). Builds a scratch database (the embedded
server's `pgrecs_bench_embed`, or --database-url, which is WIPED: migrated down to base and up
again). Measures:

1. in --rounds alternating rounds (medians reported, with the load average: a busy machine
   shows): bare `model.encode(texts, batch_size)` over all texts at once (after a warm-up call);
   `embed_pending` over the same items with an empty cache (read, hash, encode, binary COPY into
   the cache, UPDATE items with the HNSW index maintained), target >= 0.9x bare; the same without
   the HNSW index (the bulk-load path), plus the index build; and the CPU seconds of each side
   (the client process, and the server process through /proc);
2. COPY: --write-rows precomputed 384-d vectors into pgrecs.embedding_cache (binary COPY);
3. update: every item pending again with its vector already cached: `embed_pending` writes them
   from the cache, with the HNSW index, then without it, plus the index build.

Target for writing precomputed vectors: >= 20,000 rows/s. Writes embed_throughput.json and .md to
--out (default benchmarks/results). --fake-model swaps the model for a hashing embedder (for a
quick smoke run of the machinery; its encode rate means nothing).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

import pgrecs
from pgrecs import embed, embedded, migrate
from pgrecs.embed import BATCH_ROWS, Embedder

RESULTS = Path(__file__).parent / "results"
MOVIES = Path("/work/shared/data/ml-latest-small")
HNSW = (
    "create index items_embedding_hnsw on pgrecs.items"
    " using hnsw (embedding public.vector_cosine_ops) with (m = 16, ef_construction = 64)"
)


class FakeEmbedder:
    """384-d vectors from a text hash: no model, for smoke runs."""

    name = "bench/fake-384"
    dimension = 384

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            out[row] = np.random.default_rng(seed).normal(size=self.dimension)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def movie_items(directory: Path, limit: int | None) -> list[pgrecs.Item]:
    tags: dict[str, list[str]] = {}
    with open(directory / "tags.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            movie_tags = tags.setdefault(row["movieId"], [])
            if row["tag"].strip() and row["tag"].strip() not in movie_tags:
                movie_tags.append(row["tag"].strip())
    items = []
    with open(directory / "movies.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            genres = [g for g in row["genres"].split("|") if g != "(no genres listed)"]
            items.append(
                pgrecs.Item(
                    item_id=row["movieId"],
                    title=row["title"],
                    tags=tuple(genres + tags.get(row["movieId"], [])),
                )
            )
    return items[:limit] if limit else items


def scratch(url: str | None) -> str:
    url = url or embedded.start(database="pgrecs_bench_embed")
    migrate.downgrade(url, "base")
    migrate.upgrade(url, dim="384")
    return url


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


def backend_cpu(client: pgrecs.Client) -> float:
    """CPU seconds used so far by the connection's server process (0 when /proc is unreadable)."""
    try:
        stat = Path(f"/proc/{client.conn.info.backend_pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def pipeline_run(
    url: str, items: list[pgrecs.Item], embedder: Embedder, rows_per_batch: int, index: bool
) -> dict[str, Any]:
    """`embed_pending` on a fresh catalogue (empty cache): wall and CPU seconds, ours and the
    server's."""
    with pgrecs.connect(url) as client:
        if not index:
            client.conn.execute("drop index pgrecs.items_embedding_hnsw")
        client.upsert_items(items)
        cpu, server_cpu, t = time.process_time(), backend_cpu(client), time.perf_counter()
        report = client.embed_pending(embedder, batch_size=rows_per_batch, progress=False)
        wall = time.perf_counter() - t
        cpu, server_cpu = time.process_time() - cpu, backend_cpu(client) - server_cpu
        assert report.embedded + report.cached == len(items), report
        build = 0.0
        if not index:
            t = time.perf_counter()
            client.conn.execute(HNSW)
            build = time.perf_counter() - t
    return {"wall": wall, "cpu": cpu, "server_cpu": server_cpu, "index_build": build}


def timed_pipeline(
    client: pgrecs.Client, embedder: Embedder, rows_per_batch: int
) -> tuple[float, embed.EmbedReport]:
    t = time.perf_counter()
    report = client.embed_pending(embedder, batch_size=rows_per_batch, progress=False)
    return time.perf_counter() - t, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=None, help="first N movies (default all)")
    parser.add_argument("--batch-size", type=int, default=64, help="model batch size")
    parser.add_argument(
        "--rows-per-batch", type=int, default=BATCH_ROWS, help="embed_pending batch"
    )
    parser.add_argument("--rounds", type=int, default=3, help="bare/pipeline rounds (median)")
    parser.add_argument("--write-rows", type=int, default=50_000, help="rows for the COPY test")
    parser.add_argument("--movies-dir", type=Path, default=MOVIES)
    parser.add_argument("--database-url", help="a scratch database to WIPE (default: embedded)")
    parser.add_argument("--fake-model", action="store_true", help="hashing embedder (smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    items = movie_items(args.movies_dir, args.items)
    texts = [item.text() for item in items]
    embedder: Embedder = (
        FakeEmbedder()
        if args.fake_model
        else embed.SentenceTransformerEmbedder(batch_size=args.batch_size)
    )
    embedder.encode(texts[:64])  # warm-up: lazy initialisation is not throughput

    result: dict[str, Any] = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "model": embedder.name,
        "items": len(items),
        "distinct_texts": len(set(texts)),
        "model_batch_size": args.batch_size,
        "rows_per_batch": args.rows_per_batch,
        "rounds": [],
    }
    # Bare and pipeline alternate, so a noisy neighbour hits both sides of a round alike.
    for round_ in range(args.rounds):
        load_before = os.getloadavg()[0]
        cpu, t = time.process_time(), time.perf_counter()
        embedder.encode(texts)
        bare_s, bare_cpu = time.perf_counter() - t, time.process_time() - cpu
        url = scratch(args.database_url)
        hnsw = pipeline_run(url, items, embedder, args.rows_per_batch, index=True)
        url = scratch(args.database_url)
        bulk = pipeline_run(url, items, embedder, args.rows_per_batch, index=False)
        result["rounds"].append(
            {
                "bare_seconds": round(bare_s, 4),
                "bare_cpu_seconds": round(bare_cpu, 2),
                "pipeline_seconds": round(hnsw["wall"], 4),
                "pipeline_cpu_seconds": round(hnsw["cpu"], 2),
                "pipeline_server_cpu_seconds": round(hnsw["server_cpu"], 2),
                "ratio": round(bare_s / hnsw["wall"], 3),
                "no_index_pipeline_seconds": round(bulk["wall"], 4),
                "no_index_ratio": round(bare_s / bulk["wall"], 3),
                "no_index_build_seconds": round(bulk["index_build"], 2),
                "load_average_before": round(load_before, 2),
                "load_average_after": round(os.getloadavg()[0], 2),
            }
        )
        print(f"round {round_ + 1}: {result['rounds'][-1]}", flush=True)

    def median(key: str) -> float:
        values = sorted(r[key] for r in result["rounds"])
        return float(values[len(values) // 2])

    result["bare_items_per_s"] = rate(len(items), median("bare_seconds"))
    result["pipeline_items_per_s"] = rate(len(items), median("pipeline_seconds"))
    result["pipeline_vs_bare"] = median("ratio")
    result["pipeline_vs_bare_best"] = max(r["ratio"] for r in result["rounds"])
    result["no_index_pipeline_vs_bare"] = median("no_index_ratio")
    # CPU cost of the pipeline relative to the bare encode (ours + the server process)
    bare_cpu = median("bare_cpu_seconds")
    result["pipeline_cpu_vs_bare"] = (
        round(
            (median("pipeline_cpu_seconds") + median("pipeline_server_cpu_seconds")) / bare_cpu, 3
        )
        if bare_cpu > 0
        else None  # too short a run to measure
    )

    with pgrecs.connect(url) as client:
        # COPY of precomputed vectors into the cache
        rng = np.random.default_rng(0)
        vectors = rng.normal(size=(args.write_rows, 384)).astype(np.float32)
        batch = {f"precomputed-{n}": vectors[n] for n in range(args.write_rows)}
        t = time.perf_counter()
        with client.conn.transaction():
            embed._copy_to_cache(client.conn, "bench/precomputed", batch)
        copy_s = time.perf_counter() - t
        result["copy_rows"] = args.write_rows
        result["copy_rows_per_s"] = rate(args.write_rows, copy_s)
        print(f"COPY: {args.write_rows} rows in {copy_s:.2f} s")

        # items UPDATE from the cache (every vector cached), with and without the HNSW index
        client.conn.execute("update pgrecs.items set content_hash = null")
        client.conn.execute("vacuum analyze pgrecs.items")
        seconds, report = timed_pipeline(client, embedder, args.rows_per_batch)
        assert report.cached == len(items), report
        result["update_rows_per_s"] = rate(len(items), seconds)
        print(f"update with HNSW: {len(items)} rows in {seconds:.2f} s")

        client.conn.execute("drop index pgrecs.items_embedding_hnsw")
        client.conn.execute("update pgrecs.items set content_hash = null")
        client.conn.execute("vacuum analyze pgrecs.items")
        seconds, report = timed_pipeline(client, embedder, args.rows_per_batch)
        assert report.cached == len(items), report
        result["update_rows_per_s_without_index"] = rate(len(items), seconds)
        t = time.perf_counter()
        client.conn.execute(HNSW)
        result["index_build_seconds"] = round(time.perf_counter() - t, 2)
        print(
            f"update without HNSW: {seconds:.2f} s, index build {result['index_build_seconds']} s"
        )

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "embed_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    r = result
    lines = [
        f"Embedding throughput: {r['items']} MovieLens items, model `{r['model']}`, model batch "
        f"{r['model_batch_size']}, {r['rows_per_batch']} rows per pipeline batch "
        f"({r['machine']}; {r['measured_at']}).",
        "",
        "| measure | items/s (rows/s) | target |",
        "|---|---|---|",
        f"| bare `model.encode` | {r['bare_items_per_s']:,.0f} | |",
        f"| `pgrecs embed` end to end (empty cache, HNSW maintained) | "
        f"{r['pipeline_items_per_s']:,.0f} ({r['pipeline_vs_bare']:.2f}x bare, median of "
        f"{len(r['rounds'])} alternating rounds; best {r['pipeline_vs_bare_best']:.2f}x) "
        "| >= 0.9x bare |",
        f"| `pgrecs embed` end to end, no HNSW index (bulk-load path) | "
        f"{r['no_index_pipeline_vs_bare']:.2f}x bare | >= 0.9x bare |",
        "| CPU seconds, pipeline (client + server) / bare encode | "
        + (f"{r['pipeline_cpu_vs_bare']:.2f}" if r["pipeline_cpu_vs_bare"] is not None else "n/a")
        + " | |",
        f"| binary COPY into embedding_cache | {r['copy_rows_per_s']:,.0f} | >= 20,000 |",
        f"| items written from the cache, HNSW maintained | {r['update_rows_per_s']:,.0f} "
        "| >= 20,000 |",
        f"| items written from the cache, no index | "
        f"{r['update_rows_per_s_without_index']:,.0f} | |",
        f"| HNSW build after the load | {r['items']} items in {r['index_build_seconds']} s | |",
    ]
    lines += [
        "",
        "| round | bare s | pipeline s (ratio) | no index s (ratio) | CPU s bare / pipeline + "
        "server | load average before / after |",
        "|---|---|---|---|---|---|",
    ]
    for n, round_ in enumerate(r["rounds"], 1):
        lines.append(
            f"| {n} | {round_['bare_seconds']:.1f} | {round_['pipeline_seconds']:.1f} "
            f"({round_['ratio']:.2f}) | {round_['no_index_pipeline_seconds']:.1f} "
            f"({round_['no_index_ratio']:.2f}) | {round_['bare_cpu_seconds']:.1f} / "
            f"{round_['pipeline_cpu_seconds']:.1f} + {round_['pipeline_server_cpu_seconds']:.1f} "
            f"| {round_['load_average_before']:.1f} / {round_['load_average_after']:.1f} |"
        )
    busiest = max(max(x["load_average_before"], x["load_average_after"]) for x in r["rounds"])
    if busiest > (os.cpu_count() or 1) + 1:  # the run itself keeps every core busy
        lines += [
            "",
            f"The machine was busy during this run (load average up to {busiest:.1f} on "
            f"{os.cpu_count()} CPUs): absolute rates are low and ratios noisy.",
        ]
    (args.out / "embed_throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
