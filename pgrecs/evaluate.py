"""Offline evaluation through the production path (spec section 5).

The data is loaded into a scratch database, split per user chronologically (the last 20% of
each user's ratings are test, for users with at least 5), and every pgrecs row is produced by
calling `pgrecs.recommend` in SQL for each test user, exactly as a service would. Baselines
(popularity, implicit's ALS) are computed in Python on the same split. Metrics: precision,
recall, NDCG (binary gain), hit rate, catalogue coverage and the average popularity of what was
recommended, at K = 10, for all users and for users with fewer than 10 train interactions.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg.types.json import Jsonb
from tqdm import tqdm

from pgrecs.errors import ConfigurationError, ImportFileError, InvalidParameter, translated
from pgrecs.files import read_rows
from pgrecs.items import Item, upsert_items

K = 10
WEIGHTINGS = ("rating", "binary", "centered")


@dataclass(frozen=True)
class Rating:
    user_id: str
    item_id: str
    rating: float
    at: float  # epoch seconds


@dataclass
class Dataset:
    items: list[Item]
    ratings: list[Rating]


@dataclass
class Split:
    train: list[Rating]
    relevant: dict[str, set[str]]  # test users -> their relevant test items
    test_items: dict[str, set[str]] = field(default_factory=dict)  # every test item per user


MOVIELENS_COLUMNS = {
    "movies.csv": {"movieId", "title", "genres"},
    "ratings.csv": {"userId", "movieId", "rating", "timestamp"},
    "tags.csv": {"userId", "movieId", "tag", "timestamp"},
}


def load_movielens(path: str | Path) -> Dataset:
    """ml-latest-small: item text = title + genres + the users' tags."""
    root = Path(path)
    for name in MOVIELENS_COLUMNS:
        if not (root / name).is_file():
            raise ImportFileError(str(root / name), None, "missing (expected a MovieLens folder)")
    tags: dict[str, list[str]] = defaultdict(list)
    for _, row in _movielens_rows(root / "tags.csv"):
        tag = row["tag"].strip().lower()
        if tag and tag not in tags[row["movieId"]]:
            tags[row["movieId"]].append(tag)
    items = [
        Item(
            item_id=row["movieId"],
            title=row["title"],
            tags=tuple(g for g in row["genres"].split("|") if g and g != "(no genres listed)")
            + tuple(tags.get(row["movieId"], [])),
        )
        for _, row in _movielens_rows(root / "movies.csv")
    ]
    ratings = []
    for line, row in _movielens_rows(root / "ratings.csv"):
        try:
            rating, at = float(row["rating"]), float(row["timestamp"])
        except ValueError as exc:
            raise ImportFileError(str(root / "ratings.csv"), line, f"bad value: {exc}") from exc
        ratings.append(Rating(row["userId"], row["movieId"], rating, at))
    return Dataset(items, ratings)


def _movielens_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    return read_rows(path, MOVIELENS_COLUMNS[path.name], set())


def load_files(items_path: str | Path, interactions_path: str | Path) -> Dataset:
    """The generic form: an items file as `pgrecs import items` reads it, and an interactions
    CSV with user_id, item_id, occurred_at and an optional weight (the rating; default 1). An
    event_type column, as `pgrecs import interactions` reads, is allowed and ignored."""
    from pgrecs.items import read_items_file

    items = list(read_items_file(items_path))
    known = {item.item_id for item in items}
    ratings = []
    for line, row in read_rows(
        interactions_path, {"user_id", "item_id", "occurred_at"}, {"weight", "event_type"}
    ):
        if row["item_id"] not in known:
            raise ImportFileError(
                str(interactions_path),
                line,
                f"unknown item {row['item_id']!r} (not in the items file)",
            )
        try:
            at = datetime.fromisoformat(row["occurred_at"])
            weight = float(row.get("weight") or 1)
            ratings.append(
                Rating(
                    row["user_id"],
                    row["item_id"],
                    weight,
                    (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp(),
                )
            )
        except (ValueError, TypeError) as exc:
            raise ImportFileError(str(interactions_path), line, f"bad row: {exc}") from exc
    return Dataset(items, ratings)


def chronological_split(
    ratings: Sequence[Rating],
    fraction: float = 0.2,
    min_ratings: int = 5,
    relevant_min: float = 4.0,
) -> Split:
    """Per user, in time order: the last `fraction` of the ratings (at least one) of users with
    at least `min_ratings` are test; relevant = test ratings >= relevant_min."""
    by_user: dict[str, list[Rating]] = defaultdict(list)
    for r in ratings:
        by_user[r.user_id].append(r)
    train: list[Rating] = []
    relevant: dict[str, set[str]] = {}
    test_items: dict[str, set[str]] = {}
    for user, rows in by_user.items():
        rows.sort(key=lambda r: (r.at, r.item_id))
        n_test = max(1, int(len(rows) * fraction)) if len(rows) >= min_ratings else 0
        train.extend(rows[: len(rows) - n_test])
        test = rows[len(rows) - n_test :]
        if test:
            test_items[user] = {r.item_id for r in test}
            good = {r.item_id for r in test if r.rating >= relevant_min}
            if good:
                relevant[user] = good
    return Split(train, relevant, test_items)


# -- metrics ------------------------------------------------------------------------------------


def metrics(
    recommended: Mapping[str, Sequence[str]],
    relevant: Mapping[str, set[str]],
    n_items: int,
    popularity: Mapping[str, int],
    k: int = K,
) -> dict[str, float]:
    """Mean precision/recall/NDCG/hit rate@k over the users of `relevant` (binary gain;
    a user missing from `recommended` got nothing), catalogue coverage@k and the mean train
    popularity of the recommended items."""
    users = sorted(relevant)
    if not users:
        raise InvalidParameter("no test user has a relevant item")
    precision = recall = ndcg = hits = 0.0
    shown: set[str] = set()
    pops: list[int] = []
    for user in users:
        recs = list(recommended.get(user, ()))[:k]
        rel = relevant[user]
        gains = [1.0 if item in rel else 0.0 for item in recs]
        found = sum(gains)
        precision += found / k
        recall += found / len(rel)
        hits += found > 0
        dcg = sum(g / math.log2(rank + 2) for rank, g in enumerate(gains))
        ideal = sum(1 / math.log2(rank + 2) for rank in range(min(len(rel), k)))
        ndcg += dcg / ideal
        shown.update(recs)
        pops.extend(popularity.get(item, 0) for item in recs)
    n = len(users)
    return {
        f"precision@{k}": precision / n,
        f"recall@{k}": recall / n,
        f"ndcg@{k}": ndcg / n,
        f"hit_rate@{k}": hits / n,
        f"coverage@{k}": len(shown) / n_items if n_items else 0.0,
        "avg_popularity": float(np.mean(pops)) if pops else 0.0,
        "users": float(n),
    }


# -- baselines ----------------------------------------------------------------------------------


def popularity_baseline(
    train: Sequence[Rating], users: Iterable[str], k: int = K
) -> dict[str, list[str]]:
    counts = Counter(r.item_id for r in train)
    ranked = [item for item, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    seen: dict[str, set[str]] = defaultdict(set)
    for r in train:
        seen[r.user_id].add(r.item_id)
    out = {}
    for user in users:
        out[user] = [item for item in ranked if item not in seen[user]][:k]
    return out


def als_baseline(
    train: Sequence[Rating],
    users: Iterable[str],
    *,
    factors: int,
    regularization: float,
    alpha: float,
    iterations: int = 15,
    seed: int = 0,
    k: int = K,
) -> dict[str, list[str]]:
    """implicit's ALS on the train interactions (confidence = alpha * rating)."""
    try:
        from implicit.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits
    except ImportError as exc:  # an optional dependency
        raise InvalidParameter(
            "the ALS baseline needs `implicit`: pip install 'pgrecs[eval]'"
        ) from exc
    from scipy import sparse

    user_index = {u: n for n, u in enumerate(sorted({r.user_id for r in train}))}
    item_ids = sorted({r.item_id for r in train})
    item_index = {i: n for n, i in enumerate(item_ids)}
    matrix = sparse.csr_matrix(
        (
            np.array([alpha * r.rating for r in train], np.float32),
            (
                np.array([user_index[r.user_id] for r in train]),
                np.array([item_index[r.item_id] for r in train]),
            ),
        ),
        shape=(len(user_index), len(item_ids)),
    )
    with threadpool_limits(1, "blas"):  # implicit asks for single-threaded BLAS
        model = AlternatingLeastSquares(
            factors=factors,
            regularization=regularization,
            iterations=iterations,
            random_state=seed,
        )
        model.fit(matrix, show_progress=False)
    out: dict[str, list[str]] = {}
    targets = [u for u in users if u in user_index]
    if targets:
        rows = np.array([user_index[u] for u in targets])
        ids, _ = model.recommend(rows, matrix[rows], N=k, filter_already_liked_items=True)
        for user, found in zip(targets, ids, strict=True):
            out[user] = [item_ids[i] for i in found if i >= 0]
    return out


# -- the production path ------------------------------------------------------------------------


def interaction_weight(rating: float, weighting: str) -> float:
    """How a rating becomes an interaction weight: the rating itself, 1, or centred on 3 (so
    low ratings are negative: excluded and pushed away)."""
    if weighting == "rating":
        return rating
    if weighting == "binary":
        return 1.0
    if weighting == "centered":
        return rating - 3.0
    raise InvalidParameter(f"unknown weighting {weighting!r}; use one of {', '.join(WEIGHTINGS)}")


def load_catalogue(conn: psycopg.Connection[Any], items: Sequence[Item]) -> int:
    """Upsert the items (unchanged ones cost nothing, their vectors stay)."""
    return upsert_items(conn, items)


def load_interactions(
    conn: psycopg.Connection[Any], train: Sequence[Rating], weighting: str
) -> None:
    """Replace the interaction log and stored user vectors with `train`."""
    with translated(), conn.transaction():
        conn.execute("truncate pgrecs.interactions, pgrecs.users")
        with (
            conn.cursor() as cur,
            cur.copy(
                "copy pgrecs.interactions (user_id, item_id, event_type, occurred_at, weight)"
                " from stdin"
            ) as copy,
        ):
            for r in train:
                copy.write_row(
                    (
                        r.user_id,
                        r.item_id,
                        "view",
                        datetime.fromtimestamp(r.at, UTC),
                        interaction_weight(r.rating, weighting),
                    )
                )
    with translated():
        conn.execute("analyze pgrecs.interactions")


def set_settings(conn: psycopg.Connection[Any], values: Mapping[str, Any]) -> None:
    with translated(), conn.transaction():
        for name, value in values.items():
            updated = conn.execute(
                "update pgrecs.settings set value = %s where name = %s", (Jsonb(value), name)
            )
            if updated.rowcount != 1:
                raise InvalidParameter(f"unknown setting {name!r}")


def recommend_all(
    url: str, users: Sequence[str], k: int = K, clients: int = 2, progress: bool = True
) -> dict[str, list[str]]:
    """`pgrecs.recommend(user, k)` for every user, from `clients` connections."""
    from pgrecs.db import open_connection

    def work(part: Sequence[str]) -> dict[str, list[str]]:
        out = {}
        with open_connection(url, autocommit=True) as conn:
            for user in part:
                rows = conn.execute(
                    "select item_id from pgrecs.recommend(%s, k => %s)", (user, k)
                ).fetchall()
                out[user] = [r[0] for r in rows]
                bar.update()
        return out

    bar = tqdm(total=len(users), unit="user", desc="recommend", disable=not progress)
    parts = [list(users[n::clients]) for n in range(clients)]
    with translated(), ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(work, parts))
    bar.close()
    merged: dict[str, list[str]] = {}
    for part in results:
        merged.update(part)
    return merged


@dataclass
class Row:
    name: str
    segments: dict[str, dict[str, float]]
    seconds: float
    detail: str = ""


def evaluate_rows(
    rows: Mapping[str, Callable[[], dict[str, list[str]]]],
    split: Split,
    n_items: int,
) -> list[Row]:
    """Score each row's recommendations on all test users and on users with < 10 train
    interactions."""
    popularity = Counter(r.item_id for r in split.train)
    train_count = Counter(r.user_id for r in split.train)
    light = {u: rel for u, rel in split.relevant.items() if train_count[u] < 10}
    out = []
    for name, produce in rows.items():
        started = time.perf_counter()
        recs = produce()
        seconds = time.perf_counter() - started
        segments = {"all": metrics(recs, split.relevant, n_items, popularity)}
        if light:
            segments["<10 train"] = metrics(recs, light, n_items, popularity)
        out.append(Row(name, segments, seconds))
    return out


def markdown(rows: Sequence[Row], segment: str = "all") -> str:
    columns = [
        "precision@10",
        "recall@10",
        "ndcg@10",
        "hit_rate@10",
        "coverage@10",
        "avg_popularity",
    ]
    lines = [
        "| row | " + " | ".join(columns) + " | users |",
        "|---|" + "---|" * (len(columns) + 1),
    ]
    for row in rows:
        m = row.segments.get(segment)
        if m is None:
            continue
        cells = [f"{m[c]:.1f}" if c == "avg_popularity" else f"{m[c]:.4f}" for c in columns]
        label = f"{row.name} ({row.detail})" if row.detail else row.name
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {int(m['users'])} |")
    return "\n".join(lines)


def chart(rows: Sequence[Row], path: Path, title: str) -> None:
    """A bar chart of NDCG@10 and recall@10 per row (all users)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [row.name for row in rows]
    ndcg = [row.segments["all"]["ndcg@10"] for row in rows]
    recall = [row.segments["all"]["recall@10"] for row in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(x - 0.2, ndcg, 0.4, label="NDCG@10")
    ax.bar(x + 0.2, recall, 0.4, label="recall@10")
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- the run ------------------------------------------------------------------------------------

ALS_GRID = [
    {"factors": f, "regularization": r, "alpha": a}
    for f in (32, 64, 128)
    for r in (0.01, 0.1)
    for a in (1.0, 10.0)
]


@dataclass
class Report:
    rows: list[Row]
    cold_start: list[Row]
    settings: dict[str, Any]
    seconds: float
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        parts = ["### All test users", markdown(self.rows)]
        if any("<10 train" in r.segments for r in self.rows):
            parts += [
                "### Users with fewer than 10 train interactions",
                markdown(self.rows, "<10 train"),
            ]
        if self.cold_start:
            parts += [
                "### Item cold start (10% of items lose their train interactions; "
                "relevant = held-out items only)",
                markdown(self.cold_start),
            ]
        settings = ", ".join(f"{k} = {v}" for k, v in self.settings.items())
        parts.append(f"Settings of the pgrecs rows: {settings}. Run time {self.seconds:.0f} s.")
        parts += [f"- {note}" for note in self.notes]
        return "\n\n".join(parts) + "\n"

    def as_dict(self) -> dict[str, Any]:
        def rows(rs: list[Row]) -> list[dict[str, Any]]:
            return [
                {"name": r.name, "detail": r.detail, "seconds": round(r.seconds, 2), **r.segments}
                for r in rs
            ]

        return {
            "rows": rows(self.rows),
            "cold_start": rows(self.cold_start),
            "settings": self.settings,
            "seconds": round(self.seconds, 1),
            "notes": self.notes,
        }


def sample(dataset: Dataset, users: int, seed: int = 0) -> Dataset:
    """A reduced dataset: `users` random users, their ratings and the items they rated."""
    rng = np.random.default_rng(seed)
    all_users = sorted({r.user_id for r in dataset.ratings})
    chosen = set(rng.choice(all_users, size=min(users, len(all_users)), replace=False).tolist())
    ratings = [r for r in dataset.ratings if r.user_id in chosen]
    rated = {r.item_id for r in ratings}
    return Dataset([i for i in dataset.items if i.item_id in rated], ratings)


TrainFn = Callable[[psycopg.Connection[Any]], None]
CONTENT_ONLY = {"content_weight_cold": 1.0, "content_weight_warm": 1.0}
COLLABORATIVE_ONLY = {"content_weight_cold": 0.0, "content_weight_warm": 0.0}


def run(
    dataset: Dataset,
    url: str,
    embedder: Any,
    *,
    weighting: str = "rating",
    settings: Mapping[str, Any] | None = None,
    train: TrainFn | None = None,
    als_grid: Sequence[Mapping[str, float]] = tuple(ALS_GRID),
    cold_start: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> Report:
    """The whole protocol on `dataset` in the (scratch) database at `url`: its interactions
    and user vectors are replaced; items are upserted, so unchanged ones keep their vectors.
    `settings` are applied for the hybrid row; `train` fits the collaborative model on the
    interactions in the database (no collaborative rows without it)."""
    from pgrecs.db import check_database, open_connection
    from pgrecs.embed import embed_pending

    interaction_weight(1.0, weighting)  # fail early on a bad name
    started = time.perf_counter()
    split = chronological_split(dataset.ratings)
    users = sorted(split.relevant)
    n_items = len(dataset.items)
    hybrid = dict(settings or {})
    notes: list[str] = []

    with open_connection(url, autocommit=True) as conn:
        check_database(conn)
        load_catalogue(conn, dataset.items)
        embed_pending(conn, embedder, progress=progress)
        defaults = dict(conn.execute("select name, value from pgrecs.settings").fetchall())
        _prepare(conn, split.train, weighting, {**defaults, **hybrid}, train)

        def pgrecs_row(values: Mapping[str, Any]) -> Callable[[], dict[str, list[str]]]:
            def produce() -> dict[str, list[str]]:
                set_settings(conn, {**defaults, **hybrid, **values})
                return recommend_all(url, users, progress=progress)

            return produce

        best_als, als_rows = _best_als(split, users, n_items, als_grid, seed)
        rows = {"popularity": lambda: popularity_baseline(split.train, users)}
        rows["content-only"] = pgrecs_row(CONTENT_ONLY)
        if train is not None:
            rows["collaborative-only"] = pgrecs_row(COLLABORATIVE_ONLY)
            rows["pgrecs hybrid"] = pgrecs_row({})
        scored = evaluate_rows(rows, split, n_items)
        if als_rows:
            scored.insert(1, als_rows)
            notes.append(
                f"implicit ALS: best NDCG@10 of a {len(als_grid)}-point grid "
                "(factors x regularization x alpha, 15 iterations), chosen on the test split "
                "(in the baseline's favour)"
            )

        cold_rows: list[Row] = []
        if cold_start:
            cold_rows = _cold_start(
                conn,
                url,
                split,
                users,
                n_items,
                weighting,
                defaults,
                hybrid,
                train,
                best_als,
                seed,
                progress,
            )
        set_settings(conn, {**defaults, **hybrid})
    return Report(
        scored,
        cold_rows,
        {**{k: defaults[k] for k in sorted(hybrid)}, **hybrid, "weighting": weighting},
        time.perf_counter() - started,
        notes,
    )


def _prepare(
    conn: psycopg.Connection[Any],
    train_ratings: Sequence[Rating],
    weighting: str,
    settings: Mapping[str, Any],
    train: TrainFn | None,
) -> None:
    from pgrecs.users import refresh_users

    load_interactions(conn, train_ratings, weighting)
    set_settings(conn, settings)
    if train is not None:
        train(conn)
    refresh_users(conn, progress=False)


def _best_als(
    split: Split,
    users: Sequence[str],
    n_items: int,
    grid: Sequence[Mapping[str, float]],
    seed: int,
) -> tuple[dict[str, float] | None, Row | None]:
    best: tuple[dict[str, float], Row] | None = None
    popularity = Counter(r.item_id for r in split.train)
    train_count = Counter(r.user_id for r in split.train)
    light = {u: rel for u, rel in split.relevant.items() if train_count[u] < 10}
    for params in grid:
        started = time.perf_counter()
        recs = als_baseline(split.train, users, seed=seed, **params)  # type: ignore[arg-type]
        segments = {"all": metrics(recs, split.relevant, n_items, popularity)}
        if light:
            segments["<10 train"] = metrics(recs, light, n_items, popularity)
        row = Row("implicit ALS", segments, time.perf_counter() - started)
        if best is None or segments["all"]["ndcg@10"] > best[1].segments["all"]["ndcg@10"]:
            best = (dict(params), row)
    if best is None:
        return None, None
    best[1].detail = ", ".join(f"{k} {v:g}" for k, v in best[0].items())
    return best


def _cold_start(
    conn: psycopg.Connection[Any],
    url: str,
    split: Split,
    users: Sequence[str],
    n_items: int,
    weighting: str,
    defaults: Mapping[str, Any],
    hybrid: Mapping[str, Any],
    train: TrainFn | None,
    als_params: Mapping[str, float] | None,
    seed: int,
    progress: bool,
) -> list[Row]:
    """10% of the items lose every train interaction; recall@10 counts only those items."""
    rng = np.random.default_rng(seed)
    trained = sorted({r.item_id for r in split.train})
    cold = set(rng.choice(trained, size=len(trained) // 10, replace=False).tolist())
    train_cold = [r for r in split.train if r.item_id not in cold]
    relevant = {u: rel & cold for u, rel in split.relevant.items() if rel & cold}
    cold_split = Split(train_cold, relevant)
    cold_users = sorted(relevant)
    _prepare(conn, train_cold, weighting, {**defaults, **hybrid}, train)

    def pgrecs_row(values: Mapping[str, Any]) -> Callable[[], dict[str, list[str]]]:
        def produce() -> dict[str, list[str]]:
            set_settings(conn, {**defaults, **hybrid, **values})
            return recommend_all(url, cold_users, progress=progress)

        return produce

    rows: dict[str, Callable[[], dict[str, list[str]]]] = {
        "popularity": lambda: popularity_baseline(train_cold, cold_users)
    }
    if als_params is not None:
        rows["implicit ALS"] = lambda: als_baseline(
            train_cold,
            cold_users,
            seed=seed,
            **als_params,  # type: ignore[arg-type]
        )
    rows["content-only"] = pgrecs_row(CONTENT_ONLY)
    if train is not None:
        rows["pgrecs hybrid"] = pgrecs_row({})
    scored = evaluate_rows(rows, cold_split, n_items)
    for row in scored:
        row.segments.pop("<10 train", None)
    return scored


def scratch_database(url: str | None, dim: int) -> str:
    """A database for evaluation runs at schema head with `dim`-d content vectors: `url`, or
    the embedded server's `pgrecs_eval`. Its interactions and users are replaced by each run.
    A database must be empty or marked by an earlier call (setting evaluation_scratch): a
    pgrecs database without the marker is refused, catalogue or not."""
    from pgrecs import embedded, migrate
    from pgrecs.db import open_connection

    url = url or embedded.start(database="pgrecs_eval")
    # a plain connection: an empty database has no vector type yet (the migration creates it)
    with translated(), psycopg.connect(url, autocommit=True) as conn:
        if _has_pgrecs(conn) and not _is_scratch(conn):
            raise ConfigurationError(
                "refusing to evaluate in a database that holds a pgrecs schema not made by "
                "`pgrecs evaluate` (an evaluation replaces its catalogue and interactions): "
                "give an empty scratch database"
            )
        found = conn.execute(
            "select a.atttypmod from pg_catalog.pg_attribute as a"
            " where a.attrelid = to_regclass('pgrecs.items') and a.attname = 'embedding'"
        ).fetchone()
    if found is not None and found[0] != dim:
        migrate.downgrade(url, "base")
    migrate.upgrade(url, dim=str(dim))
    with open_connection(url, autocommit=True) as conn, translated():
        conn.execute(
            "insert into pgrecs.settings (name, value, description) values ('evaluation_scratch',"
            " 'true', 'pgrecs evaluate may replace this database''s interactions')"
            " on conflict do nothing"
        )
    return url


def _has_pgrecs(conn: psycopg.Connection[Any]) -> bool:
    """Whether schema pgrecs holds anything but Alembic's version table (which a downgrade to
    base leaves behind, empty)."""
    return _scalar(
        conn,
        "select exists (select from pg_catalog.pg_class"
        " where relnamespace = to_regnamespace('pgrecs') and relname <> 'alembic_version')",
    )


def _is_scratch(conn: psycopg.Connection[Any]) -> bool:
    """Whether an earlier scratch_database call left its marker setting."""
    return _scalar(conn, "select to_regclass('pgrecs.settings') is not null") and _scalar(
        conn, "select exists (select from pgrecs.settings where name = 'evaluation_scratch')"
    )


def _scalar(conn: psycopg.Connection[Any], sql: str) -> bool:
    row = conn.execute(sql).fetchone()
    return bool(row and row[0])


def default_train(seed: int = 0) -> TrainFn | None:
    """The collaborative model the evaluation trains (None while pgrecs has none)."""
    try:
        from pgrecs import train as training
    except ImportError:
        return None

    def fit(conn: psycopg.Connection[Any]) -> None:
        training.train(conn, seed=seed, progress=False)

    return fit


# Coordinate search, one setting at a time, in this order; each step keeps the best value so far.
TUNING_STEPS: list[tuple[str, list[Any]]] = [
    ("weighting", list(WEIGHTINGS)),
    ("half_life_days", [None, 7, 30, 365]),
    ("content_weight_warm", [0.0, 0.1, 0.25, 0.5, 1.0]),
    ("warm_threshold", [5, 10, 20]),
    ("content_weight_cold", [0.25, 0.5, 1.0]),
    ("popularity_penalty", [0.0, 0.01, 0.03]),
]


@dataclass
class Tuning:
    chosen: dict[str, Any]
    trials: list[tuple[str, Any, float]]  # (setting, value, validation NDCG@10)

    def markdown(self) -> str:
        lines = ["| step | value | validation NDCG@10 | |", "|---|---|---|---|"]
        for name, value, ndcg in self.trials:
            mark = "chosen" if self.chosen.get(name, object()) == value else ""
            lines.append(f"| {name} | {value} | {ndcg:.4f} | {mark} |")
        return "\n".join(lines) + "\n"


def tune(
    dataset: Dataset,
    url: str,
    embedder: Any,
    *,
    train: TrainFn | None = None,
    steps: Sequence[tuple[str, Sequence[Any]]] = tuple(TUNING_STEPS),
    progress: bool = True,
) -> Tuning:
    """Choose settings on a validation split carved from the train split (the last 20% of each
    user's train ratings), never on test: NDCG@10 of `pgrecs.recommend` on validation users."""
    from pgrecs.db import check_database, open_connection
    from pgrecs.embed import embed_pending
    from pgrecs.users import refresh_users

    inner = chronological_split(chronological_split(dataset.ratings).train)
    users = sorted(inner.relevant)
    popularity = Counter(r.item_id for r in inner.train)
    chosen: dict[str, Any] = {"weighting": "rating"}
    trials: list[tuple[str, Any, float]] = []
    with open_connection(url, autocommit=True) as conn:
        check_database(conn)
        load_catalogue(conn, dataset.items)
        embed_pending(conn, embedder, progress=progress)
        defaults = dict(conn.execute("select name, value from pgrecs.settings").fetchall())
        loaded: str | None = None
        for name, values in steps:
            scores: dict[Any, float] = {}
            for value in values:
                trial = {**chosen, name: value}
                settings = {k: v for k, v in trial.items() if k != "weighting"}
                if trial["weighting"] != loaded:
                    _prepare(conn, inner.train, trial["weighting"], {**defaults, **settings}, train)
                    loaded = trial["weighting"]
                set_settings(conn, {**defaults, **settings})
                refresh_users(conn, all_users=True, progress=False)
                recs = recommend_all(url, users, progress=progress)
                ndcg = metrics(recs, inner.relevant, len(dataset.items), popularity)["ndcg@10"]
                scores[value] = ndcg
                trials.append((name, value, ndcg))
            # a tie keeps the value in force (the default), so a setting without effect on
            # the validation users is not changed
            current = chosen.get(name, defaults.get(name))
            best = max(scores.values())
            chosen[name] = (
                current
                if current in scores and scores[current] >= best
                else max(values, key=lambda v: scores[v])
            )
        set_settings(conn, defaults)
    return Tuning(chosen, trials)
