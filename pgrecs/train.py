"""Collaborative embeddings: a two-tower model trained from the interaction log (spec section 1).

The item tower maps an item's content embedding linearly (plus, with `hidden` > 0, a small MLP)
and adds a learned id embedding when the item had at least `min_item_interactions` positive
interactions; the output is L2-normalized and has the dimension of `items.collab_embedding`.
There is no separate user network: a user's collaborative vector is the one user-vector rule
(pgrecs.users, pgrecs._history) applied to the item tower's outputs, so the model is trained
for exactly that aggregation. Each training example cuts a user's chronological history at a
random point, aggregates the items before it with the decayed weights, and must score one of
the user's later positive items above the other targets of the batch (in-batch negatives) and
`negatives` items drawn uniformly from the catalogue. Both kinds of negatives are corrected by
the log of their expected count in the batch (logQ correction, `logq`), without which in-batch
training punishes popular items for being popular. Negatives the user interacted with at any
time are masked.

Memory: the catalogue's content vectors and the model, plus one batch of users' histories; the
interaction log is streamed from a server-side cursor (one pass for counts, one per epoch, in a
seeded order the server sorts). Everything is read in one REPEATABLE READ snapshot, bounded by
the newest interaction id at the start, so a run is reproducible from its seed.

The result is written in one transaction: the previous collaborative model row deactivated, the
new one inserted (parameters: the tower's content path, for items embedded later), every embedded
item's `collab_embedding` rewritten, and stored user vectors marked stale, so `pgrecs.recommend`
computes consistent ones from the live history until `pgrecs refresh` stores them again.
`fill_collaborative` gives items embedded after training their vectors from the content path.
A transaction-level advisory lock (pgrecs.queries.LOCK_KEY) orders the write with fills and
user refreshes: neither writes vectors of the old model once the new one has committed.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import numpy as np
import psycopg
import torch
import torch.nn.functional as F
from psycopg.types.json import Jsonb
from scipy import sparse
from tqdm import tqdm

from pgrecs.db import read_committed
from pgrecs.errors import (
    DimensionMismatch,
    InvalidParameter,
    ModelMismatch,
    NotEmbedded,
    translated,
)
from pgrecs.queries import LOCK_KEY, query
from pgrecs.users import DAY, MAX_HALF_LIVES, half_life_days

MODEL_NAME = "pgrecs-two-tower"
FORMAT = 1  # layout of models.parameters written by this module
WRITE_CHUNK = 2000  # item vectors per UPDATE
FETCH_ROWS = 10_000  # interactions per round trip of the streaming cursor

_SQL = {
    "snapshot": "set transaction isolation level repeatable read, read only",
    "log_bounds": """
        select count(*), max(interaction_id), max(occurred_at) from pgrecs.interactions""",
    "catalogue": """
        select item_id, embedding from pgrecs.items
        where embedding is not null order by item_id""",
    # One user's interactions are consecutive and in time order; users come in a seeded order.
    "histories": """
        select x.user_id, x.item_id, coalesce(x.weight, e.weight),
               extract(epoch from x.occurred_at)::float8
        from pgrecs.interactions as x
        join pgrecs.event_types as e on e.event_type = x.event_type
        where x.interaction_id <= %(through)s
        order by md5(x.user_id || %(salt)s), x.user_id, x.occurred_at, x.interaction_id""",
    "column_dimension": """
        select a.atttypmod from pg_catalog.pg_attribute as a
        where a.attrelid = 'pgrecs.items'::regclass and a.attname = %(column)s""",
    "embedding_model": "select name from pgrecs.models where kind = 'embedding' and active",
    "lock_shared": "select pg_catalog.pg_advisory_xact_lock_shared(%(key)s)",
    "deactivate": "update pgrecs.models set active = false where kind = 'collaborative' and active",
    "insert_model": """
        insert into pgrecs.models
            (kind, name, dimension, version, trained_through, metrics, parameters, active)
        values ('collaborative', %(name)s, %(dimension)s, %(version)s, %(trained_through)s,
                %(metrics)s, %(parameters)s, true)
        returning model_id""",
    "write_vectors": """
        update pgrecs.items as i set collab_embedding = b.v
        from unnest(%(item_ids)s::text[], %(vectors)s::public.vector[]) as b (item_id, v)
        where i.item_id = b.item_id""",
    "clear_unembedded": """
        update pgrecs.items set collab_embedding = null
        where embedding is null and collab_embedding is not null""",
    "mark_users_stale": """
        update pgrecs.users set refreshed_through = null where refreshed_through is not null""",
    "active_collaborative": """
        select model_id, dimension, version
        from pgrecs.models where kind = 'collaborative' and active""",
    "parameters": "select parameters from pgrecs.models where model_id = %(model_id)s",
    "pending": """
        select item_id, embedding from pgrecs.items
        where embedding is not null and collab_embedding is null
        order by item_id""",
    "pending_of": """
        select item_id, embedding from pgrecs.items
        where embedding is not null and collab_embedding is null and item_id = any(%(item_ids)s)
        order by item_id""",
    "fill_vectors": """
        update pgrecs.items as i set collab_embedding = b.v
        from unnest(%(item_ids)s::text[], %(vectors)s::public.vector[]) as b (item_id, v)
        where i.item_id = b.item_id and i.embedding is not null and i.collab_embedding is null""",
}


@dataclass(frozen=True)
class TrainReport:
    model_id: int  # the new active pgrecs.models row
    version: str  # digest of the trained parameters: equal runs give equal versions
    dimension: int
    items: int  # items written with a collaborative vector
    items_with_id: int  # of which had enough history for a learned id embedding
    users: int  # users with at least one training example
    interactions: int  # interactions read (up to trained_through)
    skipped_interactions: int  # on items without a content vector (not used)
    examples: int  # training examples over all epochs
    epochs: int
    loss: float  # mean loss of the last epoch
    trained_through: datetime  # newest interaction used
    seconds: float  # in all
    write_seconds: float  # of which writing the model and the item vectors

    def __str__(self) -> str:
        return (
            f"trained {MODEL_NAME} {self.version} ({self.dimension}-d) on {self.interactions:,} "
            f"interactions of {self.users:,} users through {self.trained_through:%Y-%m-%d %H:%M}"
            f" in {self.seconds:.1f} s ({self.epochs} epochs, last loss {self.loss:.3f}); wrote "
            f"{self.items:,} item vectors ({self.items_with_id:,} with an id embedding) in "
            f"{self.write_seconds:.1f} s; stored "
            "user vectors are stale until `pgrecs refresh`"
        )


@dataclass(frozen=True)
class TrainSettings:
    """The training hyper-parameters (see `train`); the defaults were chosen on a validation
    split of MovieLens (benchmarks/train_movielens.py)."""

    epochs: int = 20
    batch_size: int = 512
    learning_rate: float = 1e-3
    seed: int = 0
    negatives: int = 8192
    logq: float = 2.0
    temperature: float = 0.05
    hidden: int = 0
    min_item_interactions: int = 10
    id_dropout: float = 0.2
    examples_per_user: int = 32
    max_history: int = 200


@dataclass(frozen=True)
class TrainedModel:
    """A fitted item tower, not written anywhere yet (`train` writes it)."""

    tower: ContentTower
    id_of: dict[str, int]  # item id -> its row of id_table (items with a learned id embedding)
    id_table: np.ndarray  # row 0: zeros (no id)
    version: str  # digest of the parameters
    trained_through: datetime
    metrics: dict[str, Any]  # what goes into pgrecs.models.metrics

    def vectors(self, item_ids: Sequence[str], content: np.ndarray) -> np.ndarray:
        """Collaborative vectors of items, given their content vectors (row per item id)."""
        rows = np.array([self.id_of.get(item_id, 0) for item_id in item_ids], np.int64)
        return _normalized(self.tower.raw(content) + self.id_table[rows])


@dataclass(frozen=True)
class _History:
    """One user's interactions on embedded items, oldest first."""

    items: np.ndarray  # catalogue rows
    weights: np.ndarray  # raw weights (the row's own, else its event type's)
    times: np.ndarray  # epoch seconds


@dataclass(frozen=True)
class _Catalogue:
    ids: list[str]
    rows: dict[str, int]
    content: np.ndarray  # float32, one row per item


class ContentTower:
    """The item tower's content path in numpy: what is stored in pgrecs.models.parameters and
    run for items embedded after training (no torch needed to read it)."""

    def __init__(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.arrays = arrays
        self.meta = meta
        self.content_dimension = int(meta["content_dimension"])
        self.dimension = int(meta["dimension"])

    def raw(self, content: np.ndarray) -> np.ndarray:
        """The unnormalized content path (float64 for a stable result)."""
        a = self.arrays
        c = np.asarray(content, np.float64)
        out: np.ndarray = c @ a["skip"].T
        if "w1" in a:  # the MLP (hidden > 0)
            out += np.maximum(c @ a["w1"].T + a["b1"], 0.0) @ a["w2"].T + a["b2"]
        return out

    def vectors(self, content: np.ndarray) -> np.ndarray:
        return _normalized(self.raw(content))

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        meta = np.array(json.dumps(self.meta, sort_keys=True))
        arrays: dict[str, Any] = {k: v.astype(np.float32) for k, v in self.arrays.items()}
        np.savez(buffer, meta=meta, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ContentTower:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                arrays = {k: z[k].astype(np.float64) for k in z.files if k != "meta"}
        except (OSError, ValueError, KeyError) as exc:
            raise InvalidParameter(f"unreadable collaborative model parameters: {exc}") from exc
        if meta.get("format") != FORMAT:
            raise InvalidParameter(
                f"collaborative model parameters in format {meta.get('format')!r}; this pgrecs "
                f"reads format {FORMAT}: retrain with `pgrecs train`"
            )
        return cls(arrays, meta)


class _Tower(torch.nn.Module):
    def __init__(self, content_dim: int, dim: int, hidden: int, n_ids: int) -> None:
        super().__init__()
        self.skip = torch.nn.Linear(content_dim, dim, bias=False)
        self.mlp = (
            torch.nn.Sequential(
                torch.nn.Linear(content_dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, dim)
            )
            if hidden
            else None
        )
        self.ids = torch.nn.Embedding(n_ids + 1, dim, padding_idx=0)  # row 0: no id
        torch.nn.init.zeros_(self.ids.weight)  # start from the content path

    def forward(self, content: torch.Tensor, id_rows: torch.Tensor) -> torch.Tensor:
        raw = self.skip(content) + self.ids(id_rows)
        if self.mlp is not None:
            raw = raw + self.mlp(content)
        return F.normalize(raw, dim=1)

    def content_tower(self, meta: dict[str, Any]) -> ContentTower:
        arrays = {"skip": self.skip.weight}
        if self.mlp is not None:
            first, _, second = self.mlp
            assert isinstance(first, torch.nn.Linear) and isinstance(second, torch.nn.Linear)
            arrays |= {"w1": first.weight, "b1": first.bias, "w2": second.weight, "b2": second.bias}
        return ContentTower(
            {k: v.detach().numpy().astype(np.float64) for k, v in arrays.items()}, meta
        )


def train(
    conn: psycopg.Connection[Any],
    *,
    epochs: int = TrainSettings.epochs,
    batch_size: int = TrainSettings.batch_size,
    learning_rate: float = TrainSettings.learning_rate,
    seed: int = TrainSettings.seed,
    negatives: int = TrainSettings.negatives,
    logq: float = TrainSettings.logq,
    temperature: float = TrainSettings.temperature,
    hidden: int = TrainSettings.hidden,
    min_item_interactions: int = TrainSettings.min_item_interactions,
    id_dropout: float = TrainSettings.id_dropout,
    examples_per_user: int = TrainSettings.examples_per_user,
    max_history: int = TrainSettings.max_history,
    threads: int | None = None,
    progress: bool = True,
) -> TrainReport:
    """Train the two-tower model on the interaction log and make it the active collaborative
    model, atomically (see the module docstring).

    epochs: passes over the users (each draws up to examples_per_user examples per user).
    batch_size: training examples per step, each the others' in-batch negative; a batch holds
    batch_size // examples_per_user users. negatives: items drawn uniformly from the catalogue
    per step as extra negatives (0: in-batch only). logq: strength of the logQ correction (0:
    off, 1: the unbiased one; lower favours the long tail). temperature: of the softmax over
    cosine similarities. hidden: width of an MLP added to the tower's linear map (0: none).
    min_item_interactions: positive interactions an item needs for a learned id embedding; the
    others, and items embedded later, use the content path alone (trained for it by dropping
    ids with probability id_dropout). max_history: the most recent interactions a training
    example aggregates (the stored user vectors use all of them). threads: torch's intra-op
    threads for this run (default: torch's setting); 1 is fastest for small catalogues and on a
    busy machine.
    Raises InvalidParameter for bad settings or nothing to learn from, NotEmbedded when no item
    has a content vector, DimensionMismatch when the model cannot fill the column.
    `conn` is best in autocommit mode (as `pgrecs.connect` opens it): inside a transaction of
    the caller's, the reads lose their own snapshot and the write commits with the caller.
    """
    settings = TrainSettings(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        negatives=negatives,
        logq=logq,
        temperature=temperature,
        hidden=hidden,
        min_item_interactions=min_item_interactions,
        id_dropout=id_dropout,
        examples_per_user=examples_per_user,
        max_history=max_history,
    )
    started = time.perf_counter()
    model = fit(conn, settings, threads=threads, progress=progress)
    writing = time.perf_counter()
    model_id, written = _write(conn, model, progress)
    m = model.metrics
    return TrainReport(
        model_id=model_id,
        version=model.version,
        dimension=model.tower.dimension,
        items=written,
        items_with_id=len(model.id_of),
        users=m["users"],
        interactions=m["interactions"],
        skipped_interactions=m["skipped_interactions"],
        examples=m["examples"],
        epochs=epochs,
        loss=m["loss"],
        trained_through=model.trained_through,
        seconds=time.perf_counter() - started,
        write_seconds=time.perf_counter() - writing,
    )


def fit(
    conn: psycopg.Connection[Any],
    settings: TrainSettings | None = None,
    *,
    threads: int | None = None,
    progress: bool = True,
) -> TrainedModel:
    """Train the model without writing anything (`train` = fit + write). For tuning: score
    `TrainedModel.vectors` offline, then train the chosen settings."""
    s = settings or TrainSettings()
    _check(s)
    if threads is not None and threads < 1:
        raise InvalidParameter(f"threads must be at least 1, got {threads}")
    started = time.perf_counter()
    dim = _column_dimension(conn, "collab_embedding")
    content_dim = _column_dimension(conn, "embedding")
    with translated():
        row = conn.execute(_SQL["embedding_model"]).fetchone()
    embedding_model = row[0] if row else None
    half_life = half_life_days(conn)

    with translated(), _snapshot(conn):
        bounds = conn.execute(_SQL["log_bounds"]).fetchone()
        if bounds is None or not bounds[0]:
            raise InvalidParameter("no interactions to train on: record interactions first")
        count, through, trained_through = int(bounds[0]), int(bounds[1]), bounds[2]
        catalogue = _load_catalogue(conn)
        if not catalogue.ids:
            raise NotEmbedded("no item has a content vector: run `pgrecs embed` first")
        stats = _count(conn, through, catalogue, s.examples_per_user)
        if stats.users == 0:
            raise InvalidParameter(
                "nothing to learn from: no user has a positive interaction after another "
                "interaction on an embedded item"
            )
        with _torch_settings(threads):
            model, id_of, loss, examples = _fit(
                conn, through, catalogue, stats, s, dim, half_life, progress
            )
        if examples == 0:  # every batch held fewer than 2 examples: nothing was learned
            raise InvalidParameter(
                f"too little to learn from: {stats.users} user(s) with a positive interaction "
                "after another gave no training batch of 2 examples; record more interactions "
                "(the active model is unchanged)"
            )

    tower = model.content_tower(
        {
            "format": FORMAT,
            "content_dimension": content_dim,
            "dimension": dim,
            "embedding_model": embedding_model,
            "half_life_days": half_life,
        }
    )
    id_table = model.ids.weight.detach().numpy().astype(np.float64)
    digest = hashlib.sha256(tower.to_bytes())
    digest.update(np.ascontiguousarray(id_table, np.float32).tobytes())
    metrics = {
        "loss": loss,
        "users": stats.users,
        "interactions": count,
        "skipped_interactions": stats.skipped,
        "examples": examples,
        "items_with_id": len(id_of),
        "interaction_id_through": through,
        "fit_seconds": round(time.perf_counter() - started, 2),
        "embedding_model": embedding_model,
        "half_life_days": half_life,
        "settings": asdict(s),
    }
    return TrainedModel(tower, id_of, id_table, digest.hexdigest()[:12], trained_through, metrics)


def fill_collaborative(conn: psycopg.Connection[Any], item_ids: Sequence[str] | None = None) -> int:
    """Give embedded items without a collaborative vector (`item_ids`, default all) one from
    the active collaborative model's content path; returns how many were written. Cheap when
    there is no model or nothing is pending (pass item_ids to avoid scanning the catalogue).
    Raises DimensionMismatch when the model does not fit the columns and ModelMismatch when it
    was trained on another embedding model's vectors."""
    with translated(), conn.transaction():
        conn.execute(_SQL["lock_shared"], {"key": LOCK_KEY})  # waits for a train() writing
        active = conn.execute(_SQL["active_collaborative"]).fetchone()
        if active is None:
            return 0
        model_id, dim, version = int(active[0]), int(active[1]), active[2]
        if item_ids is None:
            rows = conn.execute(_SQL["pending"]).fetchall()
        else:
            rows = conn.execute(_SQL["pending_of"], {"item_ids": list(item_ids)}).fetchall()
        if not rows:
            return 0
        tower = _tower_of(conn, model_id, version)
        column_dim = _column_dimension(conn, "collab_embedding")
        for made in (dim, tower.dimension):
            if made != column_dim:
                raise DimensionMismatch(
                    f"the active collaborative model makes {made}-d vectors but "
                    f"items.collab_embedding holds {column_dim}-d ones: retrain with "
                    "`pgrecs train`"
                )
        content_dim = _column_dimension(conn, "embedding")
        if tower.content_dimension != content_dim:
            raise DimensionMismatch(
                f"the active collaborative model reads {tower.content_dimension}-d content "
                f"vectors but items.embedding holds {content_dim}-d ones: retrain with "
                "`pgrecs train`"
            )
        row = conn.execute(_SQL["embedding_model"]).fetchone()
        trained_on = tower.meta.get("embedding_model")
        if trained_on is not None and row is not None and row[0] != trained_on:
            raise ModelMismatch(
                f"the collaborative model was trained on {trained_on!r} content vectors, the "
                f"items now hold {row[0]!r} ones: retrain with `pgrecs train`"
            )
        ids = [r[0] for r in rows]
        vectors = tower.vectors(np.vstack([r[1].to_numpy() for r in rows])).astype(np.float32)
        written = 0
        for start in range(0, len(ids), WRITE_CHUNK):
            written += conn.execute(
                _SQL["fill_vectors"],
                {
                    "item_ids": ids[start : start + WRITE_CHUNK],
                    "vectors": list(vectors[start : start + WRITE_CHUNK]),
                },
            ).rowcount
    return written


# -- reading ---------------------------------------------------------------------------------


@contextmanager
def _snapshot(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """One REPEATABLE READ, read-only transaction (a savepoint inside the caller's)."""
    idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with conn.transaction():
        if idle:
            conn.execute(_SQL["snapshot"])
        yield


def _load_catalogue(conn: psycopg.Connection[Any]) -> _Catalogue:
    ids: list[str] = []
    vectors: list[np.ndarray] = []
    with conn.cursor(binary=True) as cur:
        for item_id, embedding in cur.execute(_SQL["catalogue"]):
            ids.append(item_id)
            vectors.append(embedding.to_numpy())
    content = np.vstack(vectors).astype(np.float32) if vectors else np.zeros((0, 1), np.float32)
    return _Catalogue(ids, {item_id: row for row, item_id in enumerate(ids)}, content)


def _histories(
    conn: psycopg.Connection[Any], through: int, salt: str, catalogue: _Catalogue
) -> Iterator[tuple[_History, int]]:
    """Each user's history (items without a content vector dropped, with their count)."""
    user: str | None = None
    items: list[int] = []
    weights: list[float] = []
    times: list[float] = []
    skipped = 0
    with conn.cursor(name=f"pgrecs_train_{salt}", binary=True) as cur:
        cur.itersize = FETCH_ROWS
        cur.execute(_SQL["histories"], {"through": through, "salt": salt})
        for user_id, item_id, weight, at in cur:
            if user_id != user:
                if user is not None:
                    yield _history(items, weights, times), skipped
                user, items, weights, times, skipped = user_id, [], [], [], 0
            row = catalogue.rows.get(item_id)
            if row is None:
                skipped += 1
                continue
            items.append(row)
            weights.append(weight)
            times.append(at)
    if user is not None:
        yield _history(items, weights, times), skipped


def _history(items: list[int], weights: list[float], times: list[float]) -> _History:
    return _History(np.array(items, np.int64), np.array(weights, np.float64), np.array(times))


@dataclass(frozen=True)
class _Stats:
    users: int  # users with at least one example
    skipped: int
    positives: np.ndarray  # per catalogue row: positive interactions
    proposal: np.ndarray  # per catalogue row: probability of being a batch's target


def _targets(history: _History) -> np.ndarray:
    """Positions that can be a target: positive, with at least one interaction before."""
    return np.flatnonzero(history.weights[1:] > 0) + 1


def _count(
    conn: psycopg.Connection[Any], through: int, catalogue: _Catalogue, per_user: int
) -> _Stats:
    n = len(catalogue.ids)
    positives = np.zeros(n)
    expected = np.zeros(n)
    users = skipped = 0
    for history, dropped in _histories(conn, through, "count", catalogue):
        skipped += dropped
        np.add.at(positives, history.items[history.weights > 0], 1.0)
        targets = _targets(history)
        if len(targets):
            users += 1
            # each target position is drawn with probability min(per_user, T) / T
            np.add.at(expected, history.items[targets], min(per_user, len(targets)) / len(targets))
    total = expected.sum()
    proposal = expected / total if total > 0 else expected
    return _Stats(users, skipped, positives, proposal)


# -- training --------------------------------------------------------------------------------


@contextmanager
def _torch_settings(threads: int | None) -> Iterator[None]:
    """Deterministic kernels (multi-threaded sparse and embedding backward passes otherwise
    sum in a varying order) and the thread count, for this run only."""
    previous = (
        torch.get_num_threads(),
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.set_num_threads(threads or previous[0])
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(previous[0])
        torch.use_deterministic_algorithms(previous[1], warn_only=previous[2])


def _fit(
    conn: psycopg.Connection[Any],
    through: int,
    catalogue: _Catalogue,
    stats: _Stats,
    s: TrainSettings,
    dim: int,
    half_life: float | None,
    progress: bool,
) -> tuple[_Tower, dict[str, int], float, int]:
    n_items = len(catalogue.ids)
    with_id = np.flatnonzero(stats.positives >= s.min_item_interactions)
    id_rows = np.zeros(n_items, np.int64)
    id_rows[with_id] = np.arange(1, len(with_id) + 1)
    id_of = {catalogue.ids[row]: int(id_rows[row]) for row in with_id}
    users_per_batch = max(1, s.batch_size // s.examples_per_user)
    steps = -(-stats.users // users_per_batch) * s.epochs
    content = torch.from_numpy(catalogue.content)
    ids = torch.from_numpy(id_rows)

    rng = np.random.default_rng(s.seed)
    loss_sum, batches, examples = 0.0, 0, 0
    with torch.random.fork_rng(devices=[]):  # seed torch without touching the caller's RNG
        torch.manual_seed(s.seed)
        model = _Tower(content.shape[1], dim, s.hidden, len(with_id))
        optimizer = torch.optim.Adam(model.parameters(), lr=s.learning_rate)
        bar = tqdm(total=steps, unit="batch", desc="training", disable=not progress)
        for epoch in range(s.epochs):
            loss_sum, batches = 0.0, 0
            users = _histories(conn, through, f"{s.seed}.{epoch}", catalogue)
            for batch in _batches(users, users_per_batch):
                loss, n = _step(model, optimizer, batch, content, ids, stats, s, half_life, rng)
                loss_sum, batches, examples = loss_sum + loss, batches + (n > 0), examples + n
                bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / max(batches, 1):.3f}")
        bar.close()
    model.eval()
    return model, id_of, loss_sum / max(batches, 1), examples


def _batches(users: Iterator[tuple[_History, int]], size: int) -> Iterator[list[_History]]:
    """Users with at least one target, `size` at a time."""
    batch: list[_History] = []
    for history, _ in users:
        if len(_targets(history)):
            batch.append(history)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _step(
    model: _Tower,
    optimizer: torch.optim.Optimizer,
    batch: list[_History],
    content: torch.Tensor,
    ids: torch.Tensor,
    stats: _Stats,
    s: TrainSettings,
    half_life: float | None,
    rng: np.random.Generator,
) -> tuple[float, int]:
    """One optimizer step on examples drawn from `batch`'s users; (loss, examples)."""
    rows, cols, vals, targets, owners = _examples(batch, s, half_life, rng)
    n = len(targets)
    if n < 2:
        return 0.0, 0
    negatives = min(s.negatives, content.shape[0])
    sampled = rng.choice(content.shape[0], size=negatives, replace=False)
    candidates = np.concatenate([targets, sampled])
    unique, inverse = np.unique(np.concatenate([cols, candidates]), return_inverse=True)
    id_rows = ids[unique].clone()
    if s.id_dropout > 0:
        id_rows[torch.from_numpy(rng.random(len(unique)) < s.id_dropout)] = 0
    vectors = model(content[unique], id_rows)
    weights = torch.sparse_coo_tensor(
        torch.from_numpy(np.vstack([rows, inverse[: len(cols)]])),
        torch.from_numpy(vals.astype(np.float32)),
        (n, len(unique)),
        check_invariants=False,
    )
    users = F.normalize(torch.sparse.mm(weights, vectors), dim=1)
    scores = users @ vectors[inverse[len(cols) :]].T / s.temperature
    if s.logq > 0:
        # expected count of each candidate among the batch's: n targets + the uniform draws
        expected = n * stats.proposal[candidates] + negatives / content.shape[0]
        scores = scores - s.logq * torch.from_numpy(np.log(expected + 1e-12).astype(np.float32))
    # a candidate the row's user interacted with (at any time) is no negative for that row
    seen = _membership(batch, content.shape[0])[:, candidates].toarray() > 0
    mask = torch.from_numpy(seen[owners])
    mask[torch.arange(n), torch.arange(n)] = False
    loss = F.cross_entropy(scores.masked_fill(mask, float("-inf")), torch.arange(n))
    optimizer.zero_grad()
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    return float(loss.item()), n


def _examples(
    batch: list[_History], s: TrainSettings, half_life: float | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Up to examples_per_user (history, target) pairs per user: a random positive target and
    a random cut before it; the history is the (at most max_history) interactions before the
    cut, weighted by the one rule with ages measured from the cut's latest interaction.
    Returns the sparse history matrix (row, catalogue row, weight), targets and owners."""
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    targets: list[int] = []
    owners: list[int] = []
    for owner, h in enumerate(batch):
        positions = _targets(h)
        chosen = rng.choice(positions, size=min(s.examples_per_user, len(positions)), replace=False)
        for target in chosen:
            cut = int(rng.integers(1, target + 1))
            first = max(0, cut - s.max_history)
            weights = h.weights[first:cut] * _decay(h.times[first:cut], half_life)
            rows.append(np.full(cut - first, len(targets)))
            cols.append(h.items[first:cut])
            vals.append(weights)
            targets.append(int(h.items[target]))
            owners.append(owner)
    return (
        np.concatenate(rows),
        np.concatenate(cols),
        np.concatenate(vals),
        np.array(targets, np.int64),
        np.array(owners, np.int64),
    )


def _decay(times: np.ndarray, half_life: float | None) -> np.ndarray:
    """The recency factor of pgrecs.users.decayed_weights, ages from the latest of `times`."""
    if half_life is None or half_life <= 0:
        return np.ones(len(times))
    result: np.ndarray = np.power(
        0.5, np.minimum((times.max() - times) / (half_life * DAY), MAX_HALF_LIVES)
    )
    return result


def _membership(batch: list[_History], n_items: int) -> sparse.csr_matrix:
    sizes = [len(h.items) for h in batch]
    return sparse.csr_matrix(
        (
            np.ones(sum(sizes)),
            (np.repeat(np.arange(len(batch)), sizes), np.concatenate([h.items for h in batch])),
        ),
        shape=(len(batch), n_items),
    )


# -- writing ---------------------------------------------------------------------------------


def _write(
    conn: psycopg.Connection[Any], model: TrainedModel, progress: bool = False
) -> tuple[int, int]:
    """One transaction: the new model row, every embedded item's vector, users marked stale."""
    written = 0
    # read committed: what follows the lock sees every refresh chunk that committed meanwhile
    with read_committed(conn, "train"), translated():
        conn.execute(query("lock_models"), {"key": LOCK_KEY})
        if _column_dimension(conn, "collab_embedding") != model.tower.dimension:
            raise DimensionMismatch("items.collab_embedding changed dimension during training")
        conn.execute(_SQL["deactivate"])
        row = conn.execute(
            _SQL["insert_model"],
            {
                "name": MODEL_NAME,
                "dimension": model.tower.dimension,
                "version": model.version,
                "trained_through": model.trained_through,
                "metrics": Jsonb(model.metrics),
                "parameters": model.tower.to_bytes(),
            },
        ).fetchone()
        assert row is not None
        # Read after taking the lock: items embedded during training are included, and a
        # concurrent fill_collaborative either committed before (overwritten here) or waits.
        catalogue = _load_catalogue(conn)
        with tqdm(
            total=len(catalogue.ids), unit="item", desc="writing", disable=not progress
        ) as bar:
            for start in range(0, len(catalogue.ids), WRITE_CHUNK):
                ids = catalogue.ids[start : start + WRITE_CHUNK]
                vectors = model.vectors(ids, catalogue.content[start : start + WRITE_CHUNK])
                written += conn.execute(
                    _SQL["write_vectors"],
                    {"item_ids": ids, "vectors": list(vectors.astype(np.float32))},
                ).rowcount
                bar.update(len(ids))
            bar.set_description("writing; marking user vectors stale")
            conn.execute(_SQL["clear_unembedded"])
            conn.execute(_SQL["mark_users_stale"])
    return int(row[0]), written


# -- helpers ---------------------------------------------------------------------------------

# By version, a digest of the parameters (model ids repeat across databases).
_TOWERS: dict[str, ContentTower] = {}


def _tower_of(conn: psycopg.Connection[Any], model_id: int, version: str | None) -> ContentTower:
    if version is not None and version in _TOWERS:
        return _TOWERS[version]
    row = conn.execute(_SQL["parameters"], {"model_id": model_id}).fetchone()
    if row is None or row[0] is None:
        raise InvalidParameter(
            f"collaborative model {model_id} has no stored parameters: retrain with `pgrecs train`"
        )
    tower = ContentTower.from_bytes(bytes(row[0]))
    if version is not None:
        _TOWERS.clear()  # one model at a time is active
        _TOWERS[version] = tower
    return tower


def _column_dimension(conn: psycopg.Connection[Any], column: str) -> int:
    with translated():
        row = conn.execute(_SQL["column_dimension"], {"column": column}).fetchone()
    return int(row[0]) if row else -1


def _normalized(raw: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(raw, axis=1, keepdims=True)
    result: np.ndarray = raw / np.maximum(norms, 1e-12)
    return result


def _check(s: TrainSettings) -> None:
    problems = [
        (s.epochs < 1, f"epochs must be at least 1, got {s.epochs}"),
        (
            s.batch_size < 2,
            f"batch_size must be at least 2 (in-batch negatives), got {s.batch_size}",
        ),
        (not s.learning_rate > 0, f"learning_rate must be positive, got {s.learning_rate}"),
        (s.negatives < 0, f"negatives must be 0 or more, got {s.negatives}"),
        (not s.logq >= 0, f"logq must be 0 or more, got {s.logq}"),
        (not s.temperature > 0, f"temperature must be positive, got {s.temperature}"),
        (s.hidden < 0, f"hidden must be 0 (a linear tower) or more, got {s.hidden}"),
        (s.min_item_interactions < 1, "min_item_interactions must be at least 1"),
        (not 0 <= s.id_dropout < 1, f"id_dropout must be in [0, 1), got {s.id_dropout}"),
        (s.examples_per_user < 1, "examples_per_user must be at least 1"),
        (s.max_history < 1, "max_history must be at least 1"),
    ]
    for bad, message in problems:
        if bad:
            raise InvalidParameter(message)
