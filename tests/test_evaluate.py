"""The evaluation harness: metrics, split, loaders, and the scratch-database guard."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import psycopg
import pytest

from pgrecs import evaluate
from pgrecs.errors import ConfigurationError, ImportFileError
from pgrecs.evaluate import Rating

MOVIELENS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-latest-small"


def test_metrics_against_a_hand_computed_example() -> None:
    recommended = {"u1": ["a", "x", "b"] + [f"f{n}" for n in range(7)], "u2": ["y"]}
    relevant = {"u1": {"a", "b", "c"}, "u2": {"z"}, "u3": {"a"}}
    popularity = {"a": 10, "x": 2, "b": 4, "y": 1}
    m = evaluate.metrics(recommended, relevant, n_items=100, popularity=popularity)
    # u1: hits at ranks 1 and 3 of 10; u2: none; u3: got nothing
    dcg = 1 + 1 / math.log2(4)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["precision@10"] == pytest.approx((2 / 10) / 3)
    assert m["recall@10"] == pytest.approx((2 / 3) / 3)
    assert m["ndcg@10"] == pytest.approx((dcg / idcg) / 3)
    assert m["hit_rate@10"] == pytest.approx(1 / 3)
    assert m["coverage@10"] == pytest.approx(11 / 100)
    assert m["avg_popularity"] == pytest.approx((10 + 2 + 4 + 0 * 7 + 1) / 11)


def test_ndcg_agrees_with_scikit_learn() -> None:
    from sklearn.metrics import ndcg_score

    rng = np.random.default_rng(0)
    n_items = 60
    relevant = {
        f"u{u}": set(rng.choice(n_items, size=rng.integers(1, 15), replace=False).tolist())
        for u in range(40)
    }
    recommended = {u: rng.choice(n_items, size=10, replace=False).tolist() for u in relevant}
    ours = evaluate.metrics(
        {u: [f"i{i}" for i in recs] for u, recs in recommended.items()},
        {u: {f"i{i}" for i in rel} for u, rel in relevant.items()},
        n_items=n_items,
        popularity={},
    )
    truth = np.zeros((len(relevant), n_items))
    scores = np.zeros((len(relevant), n_items))
    for row, user in enumerate(relevant):
        truth[row, list(relevant[user])] = 1
        scores[row, recommended[user]] = np.arange(20, 10, -1)  # the ranking, best first
    assert ours["ndcg@10"] == pytest.approx(ndcg_score(truth, scores, k=10), abs=1e-12)


def test_chronological_split() -> None:
    ratings = [Rating("u1", f"i{n}", 5.0 if n % 2 else 3.0, float(100 - n)) for n in range(10)]
    ratings += [Rating("u2", f"i{n}", 5.0, float(n)) for n in range(4)]  # < 5 ratings: train
    split = evaluate.chronological_split(ratings)
    # u1's latest two ratings are i0 (t=100, rating 3) and i1 (t=99, rating 5)
    assert split.test_items == {"u1": {"i0", "i1"}}
    assert split.relevant == {"u1": {"i1"}}
    assert len(split.train) == 8 + 4
    assert {r.item_id for r in split.train if r.user_id == "u1"} == {f"i{n}" for n in range(2, 10)}


def test_interaction_weights() -> None:
    assert [evaluate.interaction_weight(r, "centered") for r in (1.0, 3.0, 4.5)] == [-2, 0, 1.5]
    assert evaluate.interaction_weight(2.0, "binary") == 1.0
    with pytest.raises(evaluate.InvalidParameter, match="unknown weighting"):
        evaluate.interaction_weight(2.0, "squared")


@pytest.mark.skipif(not MOVIELENS.is_dir(), reason="MovieLens is not on this machine")
def test_load_movielens() -> None:
    data = evaluate.load_movielens(MOVIELENS)
    assert len(data.items) == 9742 and len(data.ratings) == 100_836
    toy = next(i for i in data.items if i.item_id == "1")
    assert toy.title == "Toy Story (1995)"
    assert toy.tags[:5] == ("Adventure", "Animation", "Children", "Comedy", "Fantasy")
    assert "pixar" in toy.tags
    assert "Tags: Adventure, Animation" in toy.text()


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match=r"movies\.csv: missing"):
        evaluate.load_movielens(tmp_path)
    (tmp_path / "items.csv").write_text("item_id,title\na,A\n")
    (tmp_path / "events.csv").write_text("user_id,item_id,occurred_at\nu,a,yesterday\n")
    with pytest.raises(ImportFileError, match=r"events\.csv, line 2: bad row"):
        evaluate.load_files(tmp_path / "items.csv", tmp_path / "events.csv")
    (tmp_path / "events.csv").write_text(
        "user_id,item_id,occurred_at\nu,a,2026-01-02\nu,zz,2026-01-02\n"
    )
    with pytest.raises(ImportFileError, match=r"events\.csv, line 3: unknown item 'zz'"):
        evaluate.load_files(tmp_path / "items.csv", tmp_path / "events.csv")
    with pytest.raises(evaluate.InvalidParameter, match="no test user"):
        evaluate.metrics({}, {}, n_items=1, popularity={})


def test_scratch_database_refuses_a_database_in_use(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("insert into pgrecs.items (item_id) values ('a')")
        conn.execute("select pgrecs.record_interaction('u', 'a', 'click')")
    with pytest.raises(ConfigurationError, match="refusing to evaluate"):
        evaluate.scratch_database(db_url, 3)
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert conn.execute("select count(*) from pgrecs.interactions").fetchone() == (1,)


@pytest.mark.parametrize("dim", [3, 5])
def test_scratch_database_refuses_a_catalogue_without_interactions(db_url: str, dim: int) -> None:
    """A real pgrecs database without the scratch marker is refused even with no interactions:
    MovieLens would be written into its catalogue (dim 3), or the schema dropped (dim 5)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("insert into pgrecs.items (item_id, embedding) values ('a', '[1,0,0]')")
    with pytest.raises(ConfigurationError, match="holds a pgrecs schema not made by"):
        evaluate.scratch_database(db_url, dim)
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert conn.execute("select item_id from pgrecs.items").fetchall() == [("a",)]
        assert conn.execute(
            "select count(*) from pgrecs.settings where name = 'evaluation_scratch'"
        ).fetchone() == (0,)


def test_scratch_database_takes_a_database_without_pgvector(admin_url: str) -> None:
    """An empty database as created: the migration creates the extension (as superuser)."""
    from tests.conftest import create_database, drop_database

    url = create_database(admin_url, "pgrecs_test_scratch_bare")
    try:
        assert evaluate.scratch_database(url, 3) == url
        with psycopg.connect(url) as conn:
            assert conn.execute("select pgrecs._setting('evaluation_scratch')").fetchone() == (
                True,
            )
    finally:
        drop_database(admin_url, "pgrecs_test_scratch_bare")


def test_scratch_database_reuses_its_own_database(empty_db_url: str) -> None:
    assert evaluate.scratch_database(empty_db_url, 3) == empty_db_url
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute("insert into pgrecs.items (item_id) values ('a')")
    evaluate.scratch_database(empty_db_url, 3)  # marked: accepted again, catalogue kept
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        assert conn.execute("select item_id from pgrecs.items").fetchall() == [("a",)]


def test_baselines_on_a_tiny_world() -> None:
    train = [Rating(f"u{u}", f"i{i}", 5.0, float(i)) for u in range(6) for i in range(u % 3, 6, 3)]
    recs = evaluate.popularity_baseline(train, ["u0"], k=3)
    assert recs["u0"] and not set(recs["u0"]) & {"i0", "i3"}  # seen items left out
    als = evaluate.als_baseline(train, ["u0"], factors=4, regularization=0.01, alpha=1.0, k=2)
    assert len(als["u0"]) == 2 and not set(als["u0"]) & {"i0", "i3"}


@pytest.mark.model
@pytest.mark.skipif(not MOVIELENS.is_dir(), reason="MovieLens is not on this machine")
def test_reduced_movielens_run(empty_db_url: str) -> None:
    """The protocol of `pgrecs evaluate` on a sample of MovieLens users, with the real model
    and the two-tower training, through pgrecs.recommend in SQL: the hybrid ranks the held-out
    movies better than popularity and than content alone."""
    from pgrecs.embed import SentenceTransformerEmbedder

    dataset = evaluate.sample(evaluate.load_movielens(MOVIELENS), SAMPLE_USERS, seed=0)
    url = evaluate.scratch_database(empty_db_url, 384)
    report = evaluate.run(
        dataset,
        url,
        SentenceTransformerEmbedder(),
        train=evaluate.default_train(),
        als_grid=(),
        cold_start=False,
        progress=False,
    )
    ndcg = {row.name: row.segments["all"]["ndcg@10"] for row in report.rows}
    assert set(ndcg) == {"popularity", "content-only", "collaborative-only", "pgrecs hybrid"}
    assert ndcg["pgrecs hybrid"] > ndcg["popularity"] > ndcg["content-only"] > 0


SAMPLE_USERS = 300


def test_tune_keeps_the_default_on_a_tie(empty_db_url: str) -> None:
    """Without a collaborative model every warm_threshold ranks alike (only the content space
    counts), so tuning must leave the default in place, and the database's settings as found."""
    from pgrecs.items import Item
    from tests.conftest import HashEmbedder

    words = ["red", "green", "blue", "wool", "silk", "linen"]
    items = [Item(f"i{n}", f"{words[n % 6]} {words[(n // 6) % 6]} thing") for n in range(36)]
    ratings = [
        Rating(f"u{u}", f"i{(u * 5 + n * 7) % 36}", 1.0 + (n % 5), 1000.0 * n + u)
        for u in range(12)
        for n in range(30)
    ]
    url = evaluate.scratch_database(empty_db_url, 3)
    with psycopg.connect(url) as conn:
        before = conn.execute("select name, value from pgrecs.settings order by 1").fetchall()
    tuning = evaluate.tune(
        evaluate.Dataset(items, ratings),
        url,
        HashEmbedder(3),
        steps=[("warm_threshold", [50, 5, 10])],
        progress=False,
    )
    assert [(name, value) for name, value, _ in tuning.trials] == [
        ("warm_threshold", 50),
        ("warm_threshold", 5),
        ("warm_threshold", 10),
    ]
    assert len({round(ndcg, 12) for _, _, ndcg in tuning.trials}) == 1  # a true tie
    assert tuning.chosen["warm_threshold"] == dict(before)["warm_threshold"] == 10
    with psycopg.connect(url) as conn:
        after = conn.execute("select name, value from pgrecs.settings order by 1").fetchall()
    assert after == before
