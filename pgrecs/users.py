"""User vectors: the weighted, recency-decayed mean of a user's item vectors (spec section 1).

One rule, shared with the SQL function pgrecs._history (a test keeps them equal):
weight = (the interaction's own weight, else its event type's) * 0.5 ** (age / half_life), age
measured from the user's latest interaction and capped at 100 half-lives; the user vector is
the normalized sum of weight * item vector, in the content space and in the collaborative one.
Negative weights (dislike) pull the vector away from the item. Measuring age from the user's
latest interaction rather than from now() changes nothing after normalization, so a stored
vector stays exact until the user's interactions change.

Each stored row also lists the user's heaviest positive interactions with their weights, items
and times (as many as settings.because_of_history), so that recommend can name because_of
without weighing the history or reading the interactions again while the row is current.

A stored vector is current when the user's interaction count, newest stamp and stamp digest
(an interaction's stamp is greatest(interaction_id, revised): an UPDATE that changes a row stamps
it anew; the digest sums a hash of every stamp) equal the ones it was computed from;
`refresh_users` recomputes the others in chunks (memory grows with the chunk and the catalogue's
vectors, not with the interaction log) and commits chunk by chunk, so an interrupted run resumes
where it stopped.
"""

from __future__ import annotations

import itertools
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import psycopg
from psycopg import pq
from psycopg.abc import Buffer
from psycopg.adapt import Dumper, Loader
from psycopg.postgres import types as pg_types
from scipy import sparse
from tqdm import tqdm

from pgrecs.db import read_committed
from pgrecs.errors import InvalidParameter, translated
from pgrecs.items import string_list
from pgrecs.queries import LOCK_KEY, USERS_LOCK_KEY, query

MAX_HALF_LIVES = 100.0
DAY = 86400.0


@dataclass(frozen=True)
class RefreshReport:
    users: int  # users whose vectors were written
    seconds: float

    def __str__(self) -> str:
        rate = self.users / self.seconds if self.seconds > 0 else 0.0
        return f"refreshed {self.users} users in {self.seconds:.1f} s ({rate:,.0f} users/s)"


@dataclass
class ItemVectors:
    """The catalogue's vectors, row i for item ids[i]. Collaborative rows of items without a
    collaborative vector are zero and flagged False in has_collaborative."""

    ids: dict[str, int]
    content: np.ndarray
    collaborative: np.ndarray | None
    has_collaborative: np.ndarray | None
    models: list[str]  # the active models when loaded (query active_models)

    @classmethod
    def load(
        cls, conn: psycopg.Connection[Any], item_ids: Sequence[str] | None = None
    ) -> ItemVectors:
        """Every embedded item, or those of `item_ids`; ordered by item id either way, so sums
        over the same history add up in the same order (batch and streaming agree bit for bit)."""
        ids: dict[str, int] = {}
        content: list[np.ndarray] = []
        collab: list[np.ndarray | None] = []
        if item_ids is None:
            stmt, params = query("item_vectors"), {}
        else:
            stmt, params = query("item_vectors_of"), {"item_ids": list(item_ids)}
        with translated(), conn.cursor(binary=True) as cur:
            # read first: vectors read after it are at least as new as these models
            models = active_models(conn)
            for item_id, embedding, collab_embedding in cur.execute(stmt, params):
                ids[item_id] = len(ids)
                content.append(embedding.to_numpy())
                collab.append(None if collab_embedding is None else collab_embedding.to_numpy())
        matrix = np.vstack(content).astype(np.float32) if content else np.zeros((0, 1), np.float32)
        present = [v for v in collab if v is not None]
        if not present:
            return cls(ids, matrix, None, None, models)
        collaborative = np.zeros((len(collab), present[0].shape[0]), np.float32)
        has = np.zeros(len(collab), bool)
        for row, vector in enumerate(collab):
            if vector is not None:
                collaborative[row] = vector
                has[row] = True
        return cls(ids, matrix, collaborative, has, models)


def active_models(conn: psycopg.Connection[Any]) -> list[str]:
    with translated():
        row = conn.execute(query("active_models")).fetchone()
    return list(row[0]) if row else []


def decayed_weights(
    user_rows: np.ndarray, weights: np.ndarray, times: np.ndarray, half_life_days: float | None
) -> np.ndarray:
    """Effective weights of interactions (user_rows: the user's row per interaction; times in
    epoch seconds)."""
    weights = np.asarray(weights, np.float64)
    if half_life_days is None or half_life_days <= 0 or len(weights) == 0:
        return weights
    latest = np.full(int(user_rows.max()) + 1, -np.inf)
    np.maximum.at(latest, user_rows, times)
    age = (latest[user_rows] - times) / (half_life_days * DAY)
    decay = np.power(0.5, np.minimum(age, MAX_HALF_LIVES))
    result: np.ndarray = weights * decay
    return result


def weighted_means(
    user_rows: np.ndarray,
    item_rows: np.ndarray,
    weights: np.ndarray,
    matrix: np.ndarray,
    n: int,
    present: np.ndarray | None = None,
) -> np.ndarray:
    """Row u: normalized sum of weights * matrix[item] over user u's interactions (item_rows
    -1, or `present` False: no vector). NaN rows for users with no vector to average or whose
    weighted vectors cancel out."""
    keep = item_rows >= 0
    if present is not None:
        keep &= present[np.maximum(item_rows, 0)]
    user_items = sparse.csr_matrix(
        (weights[keep].astype(np.float32), (user_rows[keep], item_rows[keep])),
        shape=(n, matrix.shape[0]),
        dtype=np.float32,
    )
    sums = np.asarray(user_items @ matrix, dtype=np.float64)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 1e-9, sums / norms, np.nan).astype(np.float32)


def _setting(conn: psycopg.Connection[Any], name: str) -> Any:
    with translated():
        row = conn.execute(query("setting"), {"name": name}).fetchone()
    return row[0] if row else None


def half_life_days(conn: psycopg.Connection[Any]) -> float | None:
    value = _setting(conn, "half_life_days")
    return float(value) if isinstance(value, int | float) else None


def because_of_history(conn: psycopg.Connection[Any]) -> int | None:
    """settings.because_of_history as recommend reads it (missing: 100); None when it is not a
    whole number (nothing is stored then, and recommend reads the history itself)."""
    value = _setting(conn, "because_of_history")
    if value is None:
        return 100
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON 50.0: recommend's cast reads 50
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if -(2**31) <= value < 2**31 else None


def because_of_lists(
    user_rows: np.ndarray,
    weights: np.ndarray,
    times: np.ndarray,
    interaction_ids: np.ndarray,
    n: int,
    limit: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per user (row 0..n-1) their `limit` heaviest positive interactions (all of them when
    limit <= 0 or they have no more); ties at the cut: the more recent, then the later recorded
    (the rule recommend applies to the live history). Returns the positions of the chosen
    interactions, user after user (in no particular order within a user: only the choice
    matters), and where each user's run starts (n + 1 bounds). Only the users with more
    positive interactions than `limit` are sorted."""
    chosen = np.flatnonzero(weights > 0)
    chosen = chosen[np.argsort(user_rows[chosen], kind="stable")]
    counts = np.bincount(user_rows[chosen], minlength=n)
    if limit > 0 and (counts > limit).any():
        long = np.isin(user_rows[chosen], np.flatnonzero(counts > limit))
        cut = chosen[long]
        cut = cut[np.lexsort((-interaction_ids[cut], -times[cut], -weights[cut], user_rows[cut]))]
        first = np.searchsorted(user_rows[cut], user_rows[cut])  # each row's user's first row
        cut = cut[np.arange(len(cut)) - first < limit]
        chosen = np.concatenate([chosen[~long], cut])
        chosen = chosen[np.argsort(user_rows[chosen], kind="stable")]
    return chosen, np.searchsorted(user_rows[chosen], np.arange(n + 1))


def stale_users(conn: psycopg.Connection[Any], *, all_users: bool = False) -> list[str]:
    """Users whose stored vectors do not match their interactions (every user with all_users)."""
    with translated():
        rows = conn.execute(query("all_users" if all_users else "stale_users")).fetchall()
    return [row[0] for row in rows]


def refresh_users(
    conn: psycopg.Connection[Any],
    user_ids: Sequence[str] | None = None,
    *,
    all_users: bool = False,
    chunk_size: int = 1000,
    progress: bool = True,
    items: ItemVectors | None = None,
    stop: threading.Event | None = None,
) -> RefreshReport:
    """Recompute and store the vectors of `user_ids` (default: the stale users, or every user
    with all_users). Users without interactions get NULL vectors. Named users (the streaming
    case: a few at a time) read only their items' vectors; otherwise the catalogue's vectors
    are read once. `stop` is checked between chunks: a stopped run has committed whole chunks
    and the next one resumes with the users still stale."""
    if chunk_size < 1:
        raise InvalidParameter("chunk_size must be at least 1")
    started = time.perf_counter()
    with read_committed(conn, "refresh_users"):  # committed at once on a fresh connection
        if user_ids is not None:
            targets = string_list(user_ids, "user_ids")
        else:
            targets = stale_users(conn, all_users=all_users)
        if targets and items is None and user_ids is None:
            items = ItemVectors.load(conn)
    if not targets:
        return RefreshReport(0, time.perf_counter() - started)
    bar = tqdm(total=len(targets), unit="user", desc="refreshing", disable=not progress)
    done = 0
    for start in range(0, len(targets), chunk_size):
        if stop is not None and stop.is_set():
            break
        chunk = targets[start : start + chunk_size]
        items = _refresh_chunk(conn, chunk, items)
        bar.update(len(chunk))
        done += len(chunk)
    bar.close()
    return RefreshReport(done, time.perf_counter() - started)


def _refresh_chunk(
    conn: psycopg.Connection[Any],
    chunk: list[str],
    items: ItemVectors | None,
) -> ItemVectors | None:
    """Write one chunk in one transaction; returns the catalogue's vectors it used (reloaded
    when a train or model switch committed since `items` were read), or None (`items` None:
    only the chunk's items were read)."""
    position = {user_id: row for row, user_id in enumerate(chunk)}
    n = len(chunk)
    counts = np.zeros(n, np.int64)
    last: list[int | None] = [None] * n
    digest: list[Decimal | None] = [None] * n
    # Read committed: each statement sees what committed before it, so the locks below order
    # the chunk after a train, a model switch or a change of weights that holds one (taken
    # exclusively), and keep one from committing before the chunk does: the vectors written
    # were computed from the current models and rule, and a later change marks them stale.
    with read_committed(conn, "refresh_users"), translated():
        conn.execute(query("lock_for_refresh"), {"models": LOCK_KEY, "users": USERS_LOCK_KEY})
        shared = items
        if shared is not None and shared.models != active_models(conn):
            shared = ItemVectors.load(conn)
        half_life = half_life_days(conn)
        limit = because_of_history(conn)
        # One statement, one snapshot: the stored count, newest stamp and digest describe
        # exactly the interactions the vectors were computed from.
        with conn.cursor(binary=True) as cur:
            for oid, loader in _HISTORY_LOADERS.items():
                cur.adapters.register_loader(oid, loader)
            rows = cur.execute(query("user_histories"), {"user_ids": chunk}).fetchall()
        order = np.array([position[r[0]] for r in rows], np.int64)
        sizes = np.array([r[1] for r in rows], np.int64)
        counts[order] = sizes
        for row, r in zip(order.tolist(), rows, strict=True):
            last[row] = r[2]
            digest[row] = r[3]
        user_rows = np.repeat(order, sizes)
        item_ids = [item_id for r in rows for item_id in r[4]]
        items = shared or ItemVectors.load(conn, sorted(set(item_ids)))
        rows_of = map(items.ids.get, item_ids, itertools.repeat(-1))  # -1: not embedded
        item_rows = np.fromiter(rows_of, np.int64, len(item_ids))
        raw = np.concatenate([r[5] for r in rows] or [np.zeros(0)])
        ids = np.concatenate([r[6] for r in rows] or [np.zeros(0, np.int64)])
        at = np.concatenate([r[7] for r in rows] or [np.zeros(0, np.int64)])
        times = _epoch_seconds(at)
        weights = decayed_weights(user_rows, raw, times, half_life)
        because_of = _because_of_arrays(user_rows, weights, times, ids, item_ids, at, n, limit)
        content = weighted_means(user_rows, item_rows, weights, items.content, n)
        collab = (
            weighted_means(
                user_rows, item_rows, weights, items.collaborative, n, items.has_collaborative
            )
            if items.collaborative is not None
            else None
        )
        with conn.cursor() as cur:
            for kind, dumper in _DUMPERS.items():
                cur.adapters.register_dumper(kind, dumper)
            cur.executemany(
                query("save_user_vectors"),
                [
                    {
                        "user_id": user_id,
                        "content_vector": _vector(content[row]),
                        "collab_vector": None if collab is None else _vector(collab[row]),
                        "interaction_count": int(counts[row]),
                        "refreshed_through": last[row],
                        "history_digest": digest[row],
                        **because_of[row],
                    }
                    for row, user_id in enumerate(chunk)
                ],
            )
    return shared


def watch_users(
    conninfo: str,
    *,
    poll_interval: float = 60.0,
    chunk_size: int = 1000,
    all_users: bool = False,
    stop: threading.Event | None = None,
    report: Callable[[RefreshReport], None] | None = None,
) -> None:
    """`pgrecs refresh --watch`: refresh the stale users now (every user with all_users), then
    every user named by a pgrecs_interactions notification (sent at commit by a trigger on
    pgrecs.interactions, so record_interactions, pgrecs.record_interaction and plain INSERTs
    all count), until `stop` is set; catch-ups write chunk_size users per transaction. The same
    computation as the batch refresh, so the stored vectors are the same."""
    from pgrecs.db import open_connection
    from pgrecs.watch import follow, resilient

    if chunk_size < 1:
        raise InvalidParameter("chunk_size must be at least 1")
    state: dict[str, psycopg.Connection[Any]] = {}
    everyone_pending = all_users  # --all: the first complete catch-up covers every user

    def handle(payloads: set[str] | None) -> None:
        nonlocal everyone_pending
        conn = state.get("conn")
        if conn is None or conn.closed or conn.broken:
            conn = state["conn"] = open_connection(resilient(conninfo), autocommit=True)
        named = None if payloads is None or "" in payloads else sorted(payloads)
        everyone = everyone_pending and named is None
        done = refresh_users(
            conn, named, all_users=everyone, chunk_size=chunk_size, progress=False, stop=stop
        )
        if everyone and not (stop is not None and stop.is_set()):
            everyone_pending = False
        if report is not None and done.users:
            report(done)

    try:
        follow(conninfo, "pgrecs_interactions", handle, poll_interval=poll_interval, stop=stop)
    finally:
        if "conn" in state:
            state["conn"].close()


def _because_of_arrays(
    user_rows: np.ndarray,
    weights: np.ndarray,
    times: np.ndarray,
    interaction_ids: np.ndarray,
    item_ids: Sequence[str],
    at: np.ndarray,
    n: int,
    limit: int | None,
) -> list[dict[str, Any]]:
    """Per user of the chunk, the stored because_of list (because_of_lists): the interactions,
    their weights, items and times (`at`: as timestamptz's binary format holds them), as
    PostgreSQL binary arrays built for the whole chunk at once: a refresh sends about four
    hundred values per user, too many to adapt one by one. NULLs when the setting is not a
    whole number."""
    keys = ("because_of_interactions", "because_of_weights", "because_of_items", "because_of_at")
    if limit is None:
        return [dict.fromkeys((*keys, "because_of_history"))] * n
    order, starts = because_of_lists(user_rows, weights, times, interaction_ids, n, limit)
    bounds = list(zip(starts[:-1].tolist(), starts[1:].tolist(), strict=True))
    columns = []
    for kind, values in (
        (_Int8Array, interaction_ids),
        (_Float8Array, weights),
        (_TimestamptzArray, at),
    ):
        elements = np.empty(len(order), dtype=[("size", ">i4"), ("value", kind.dtype)])
        elements["size"] = 8
        elements["value"] = values[order]
        data, size = elements.tobytes(), elements.itemsize
        columns.append(
            [
                _binary_array(kind, end - begin, data[begin * size : end * size])
                for begin, end in bounds
            ]
        )
    data, starts_at = _text_elements(list(map(item_ids.__getitem__, order.tolist())))
    columns.insert(
        2,
        [
            _binary_array(_TextArray, end - begin, data[starts_at[begin] : starts_at[end]])
            for begin, end in bounds
        ],
    )
    return [
        {**dict(zip(keys, values, strict=True)), "because_of_history": limit}
        for values in zip(*columns, strict=True)
    ]


def _text_elements(values: list[str]) -> tuple[bytes, list[int]]:
    """The elements of a binary text[] for all of `values` at once (each a big-endian length,
    then its UTF-8 bytes), and where each one starts (len(values) + 1 offsets)."""
    text = "".join(values)
    if text.isascii():  # one byte per character
        joined, lengths = text.encode(), np.fromiter(map(len, values), np.int64, len(values))
    else:
        encoded = [v.encode() for v in values]
        joined, lengths = b"".join(encoded), np.fromiter(map(len, encoded), np.int64, len(values))
    starts = np.zeros(len(values) + 1, np.int64)
    np.cumsum(lengths + 4, out=starts[1:])
    out = np.empty(int(starts[-1]), np.uint8)
    heads = starts[:-1, None] + np.arange(4)
    out[heads] = lengths.astype(">i4").view(np.uint8).reshape(-1, 4)
    text_starts = starts[:-1] + 4 - (np.cumsum(lengths) - lengths)
    out[np.repeat(text_starts, lengths) + np.arange(len(joined))] = np.frombuffer(joined, np.uint8)
    return out.tobytes(), starts.tolist()


def _binary_array(kind: type[_BinaryArray], length: int, data: bytes) -> _BinaryArray:
    """A one-dimensional array in PostgreSQL's binary format, its elements already encoded."""
    if not length:
        return kind(struct.pack(">iii", 0, 0, kind.element_oid))
    return kind(struct.pack(">iiiii", 1, 0, kind.element_oid, length, 1) + data)


class _BinaryArray(bytes):
    """An array already in PostgreSQL's binary array format. Each kind below names its element
    type, and the numpy dtype of its elements in that format (text has none)."""

    element_oid: int
    array_oid: int
    dtype: str = ""


def _kind(element: str, dtype: str = "") -> type[_BinaryArray]:
    info = pg_types[element]
    attributes = {"element_oid": info.oid, "array_oid": info.array_oid, "dtype": dtype}
    return type(f"_{element.capitalize()}Array", (_BinaryArray,), attributes)


_Int8Array = _kind("int8", ">i8")
_Float8Array = _kind("float8", ">f8")
# timestamptz: microseconds since 2000-01-01 UTC; infinity and -infinity are the largest and
# the smallest int64.
_TimestamptzArray = _kind("timestamptz", ">i8")
_TextArray = _kind("text")


class _ArrayDumper(Dumper):
    """Sends bytes that already are a binary array (`oid`: the array type's)."""

    format = pq.Format.BINARY

    def dump(self, obj: Any) -> bytes:
        return bytes(obj)


_DUMPERS: dict[type[_BinaryArray], type[_ArrayDumper]] = {
    kind: type(f"{kind.__name__}Dumper", (_ArrayDumper,), {"oid": kind.array_oid})
    for kind in (_Int8Array, _Float8Array, _TimestamptzArray, _TextArray)
}


class _NumpyArrayLoader(Loader):
    """A one-dimensional binary array of 8-byte values without NULLs, as a numpy array: the
    history's arrays hold about 100 values per user, too many to load one by one."""

    format = pq.Format.BINARY
    dtype: np.dtype[Any]

    def load(self, data: Buffer) -> np.ndarray:
        ndim, has_nulls = struct.unpack_from(">ii", data)
        if ndim == 0:
            return np.zeros(0, self.dtype.newbyteorder("="))
        if ndim != 1 or has_nulls:
            raise psycopg.DataError("expected a one-dimensional array without NULLs")
        elements = np.frombuffer(data, [("size", ">i4"), ("value", self.dtype)], offset=20)
        return elements["value"].astype(self.dtype.newbyteorder("="))


_HISTORY_LOADERS: dict[int, type[_NumpyArrayLoader]] = {
    kind.array_oid: type(
        f"{kind.__name__}Loader", (_NumpyArrayLoader,), {"dtype": np.dtype(kind.dtype)}
    )
    for kind in (_Int8Array, _Float8Array, _TimestamptzArray)
}
_PG_EPOCH_MICROS = 946_684_800_000_000  # 2000-01-01 in Unix microseconds


def _epoch_seconds(at: np.ndarray) -> np.ndarray:
    """Unix epoch seconds of timestamptz values in binary form (`at`), what
    extract(epoch from ...)::float8 gives: the exact microseconds, rounded once; infinite
    timestamps give infinite seconds."""
    top, bottom = np.iinfo(np.int64).max, np.iinfo(np.int64).min
    finite = (at != top) & (at != bottom)
    # Between 1685 and 2255 the Unix microseconds are exact in a float64: one division rounds
    # once. Beyond, whole seconds (exact) plus the fraction: the sum rounds as one would.
    near = finite & (np.abs(at) < 2**53 - _PG_EPOCH_MICROS)
    whole, micros = np.divmod(at, 1_000_000)
    seconds = np.where(
        near,
        (np.where(near, at, 0) + _PG_EPOCH_MICROS) / 1e6,
        (whole + _PG_EPOCH_MICROS // 1_000_000).astype(np.float64) + micros / 1e6,
    )
    return np.where(finite, seconds, np.where(at == top, np.inf, -np.inf))


def _vector(row: np.ndarray) -> np.ndarray | None:
    return None if np.isnan(row[0]) else row
