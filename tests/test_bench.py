"""`pgrecs bench` at 20k items: the query set keeps recall@10 >= 0.95 and the k guarantee.

Latency is not asserted (machines differ); `pgrecs bench --size 100k|1m` measures it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pgrecs import bench
from pgrecs.cli import main


@pytest.fixture(scope="module")
def report(admin_url: str) -> bench.Report:
    from tests.conftest import create_database, drop_database

    name = "pgrecs_test_bench"
    drop_database(admin_url, name)
    url = create_database(admin_url, name)
    try:
        return bench.run(
            "20k", queries=30, chroma=False, scratch_url=url, qps_seconds=0, progress=False
        )
    finally:
        drop_database(admin_url, name)


def test_every_product_query_finds_the_exact_neighbours_and_k_rows(report: bench.Report) -> None:
    rows = [r for r in report.rows if r.system == "pgrecs"]
    assert {r.query for r in rows} >= {
        "similar_items",
        "similar_items, 5% category",
        "recommend, 500 seen",
        "recommend, 500 seen, 5% category",
        "recommend, 500 seen, 50% category",
        "recommend, 500 seen, 1.4% category",
        "recommend, 50-500 seen",
        "recommend_for_items (3 items)",
    }
    for r in rows:
        assert r.k_rows_share == 1.0, r
        if r.query != bench.SPREAD_LABEL:  # the documented hard case (docs/performance.md)
            assert r.recall_at_10 >= 0.95, r


def test_the_raw_pgvector_reference_is_measured_too(report: bench.Report) -> None:
    raw = [r for r in report.rows if r.system == "pgvector"]
    assert any(r.query == "raw top-10 (item vector)" for r in raw)
    assert all(r.k_rows_share == 1.0 for r in raw)


def test_report_files(report: bench.Report, tmp_path: Path) -> None:
    md, js = bench.write(report, tmp_path)
    assert md.name == "perf_20k.md" and js.name == "perf_20k.json"
    data = json.loads(js.read_text())
    assert data["size"] == 20_000 and len(data["rows"]) == len(report.rows)
    assert "| recommend, 500 seen, 5% category | pgrecs |" in md.read_text()
    steal = data["meta"]["cpu_steal"]  # Linux: the share of CPU time the hypervisor took
    assert steal is not None and 0 <= steal <= 1
    assert f"CPU stolen by the hypervisor while measuring {steal:.0%}" in md.read_text()


def test_steal_share_is_the_stolen_part_of_the_ticks_between_two_readings() -> None:
    assert bench.steal_share((1000, 10), (1400, 110)) == 0.25
    assert bench.steal_share((1000, 10), (1000, 10)) is None  # no time passed
    assert bench.steal_share(None, (1400, 110)) is None  # no /proc/stat
    ticks = bench.cpu_ticks()
    assert ticks is not None and 0 <= ticks[1] <= ticks[0]


def test_exact_answers_apply_the_dedup_rule() -> None:
    vectors = bench._unit(
        np.array([[1, 0, 0], [0.99, 0.05, 0], [0.9, 0.4, 0], [0, 1, 0]], dtype=np.float32)
    )
    cat = bench.Catalogue(vectors, np.zeros(4, dtype=int), np.zeros(4, dtype=int))
    q = vectors[0]
    (plain,) = bench.exact_answers(cat, q[None], [bench.Variant(dedup=None)], k=3)
    assert plain == [["i0", "i1", "i2"]]
    # i1 is a near-duplicate of i0 (cosine >= 0.95): it collapses into i0
    (collapsed,) = bench.exact_answers(cat, q[None], [bench.Variant()], k=3)
    assert collapsed == [["i0", "i2", "i3"]]


def test_cli_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["bench", "--queries", "5"])
    assert caught.value.code == 2
    assert "--queries: 5 is out of range (>= 10)" in capsys.readouterr().err


def test_the_chromadb_target_compares_with_its_faster_way_of_excluding_seen_items() -> None:
    def row(system: str, p50: float, recall: float, note: str = "") -> bench.Row:
        return bench.Row("recommend, 500 seen", system, 50, p50, p50, None, recall, 1.0, None, note)

    def verdict(*chroma: bench.Row) -> tuple[bool, str]:
        headline = bench.Row(  # checks() starts from the headline query's row
            "recommend, 500 seen, 5% category", "pgrecs", 50, 7.0, 9.0, None, 1.0, 1.0, None
        )
        rows = [headline, mine, *chroma]
        report = bench.Report(1_000_000, 384, 50, {}, None, 0.0, None, rows)
        ((_, met, figures),) = [c for c in report.checks() if "ChromaDB" in c[0]]
        return met, figures

    mine = row("pgrecs", 2.0, 0.99)
    over_fetch = row("chroma", 10.0, 0.98)
    nin = row("chroma", 5.0, 0.99, bench.CHROMA_NIN)
    # 5x the over-fetch, but only 2.5x ChromaDB's faster `$nin`: not met
    assert verdict(over_fetch, nin) == (False, f"2.5x (recall 0.990 vs 0.990, ChromaDB {nin.note})")
    assert verdict(over_fetch) == (True, "5.0x (recall 0.990 vs 0.980)")
    # faster, but at a lower recall than ChromaDB's: not met
    assert verdict(row("chroma", 10.0, 1.0))[0] is False
