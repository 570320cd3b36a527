"""The Python face of pgrecs: one object per connection, methods named like the SQL functions."""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from pgrecs import embed, interactions, items, users
from pgrecs.db import check_database, open_connection
from pgrecs.errors import InvalidParameter, translated
from pgrecs.queries import query


@dataclass(frozen=True)
class SimilarItem:
    item_id: str
    score: float


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    score: float
    source: str  # 'content', 'collaborative' or 'popular'
    because_of: str | None  # the history item contributing most


@dataclass(frozen=True)
class Explanation:
    history_item_id: str
    event_type: str
    occurred_at: datetime
    weight: float  # effective weight (event weight x recency decay)
    similarity: float


class Client:
    """A connection to a pgrecs database. Use as a context manager, or call close()."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self._embedder: embed.Embedder | None = None

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    # -- queries (mirror the SQL functions) ---------------------------------------------------

    def similar_items(
        self,
        item_id: str,
        k: int = 10,
        categories: Sequence[str] | None = None,
        same_category: bool = False,
        filter: Mapping[str, Any] | None = None,
        exclude_seen_by: str | None = None,
    ) -> list[SimilarItem]:
        params = {
            "item_id": _id(item_id, "item_id"),
            "k": _k(k, "pgrecs.similar_items"),
            "categories": _list(categories, "categories"),
            "same_category": same_category,
            "filter": _jsonb(filter),
            "exclude_seen_by": _id(exclude_seen_by, "exclude_seen_by"),
        }
        return self._scored("similar_items", params)

    def recommend(
        self,
        user_id: str,
        k: int = 10,
        categories: Sequence[str] | None = None,
        filter: Mapping[str, Any] | None = None,
        exclude_seen: bool = True,
        diversity: float = 0.0,
    ) -> list[Recommendation]:
        """Personal recommendations (pgrecs.recommend); an unknown user gets popular items."""
        params = {
            "user_id": _id(user_id, "user_id"),
            "k": _k(k, "pgrecs.recommend"),
            "categories": _list(categories, "categories"),
            "filter": _jsonb(filter),
            "exclude_seen": exclude_seen,
            "diversity": _number(diversity, "diversity"),
        }
        with translated(), self.conn.cursor(row_factory=class_row(Recommendation)) as cur:
            return cur.execute(query("recommend"), params).fetchall()

    def explain(self, user_id: str, item_id: str) -> list[Explanation]:
        """The user's interactions that pull `item_id` up, largest contribution first."""
        params = {"user_id": _id(user_id, "user_id"), "item_id": _id(item_id, "item_id")}
        with translated(), self.conn.cursor(row_factory=class_row(Explanation)) as cur:
            return cur.execute(query("explain"), params).fetchall()

    def recommend_for_items(
        self,
        item_ids: Sequence[str],
        weights: Sequence[float] | None = None,
        k: int = 10,
        categories: Sequence[str] | None = None,
        filter: Mapping[str, Any] | None = None,
        negative_item_ids: Sequence[str] | None = None,
    ) -> list[SimilarItem]:
        """Recommendations for an anonymous session from the items in it."""
        params = {
            "item_ids": items.string_list(item_ids, "item_ids"),
            "weights": _weights(weights),
            "k": _k(k, "pgrecs.recommend_for_items"),
            "categories": _list(categories, "categories"),
            "filter": _jsonb(filter),
            "negative_item_ids": _list(negative_item_ids, "negative_item_ids"),
        }
        return self._scored("recommend_for_items", params)

    def popular_items(
        self,
        k: int = 10,
        categories: Sequence[str] | None = None,
        filter: Mapping[str, Any] | None = None,
        since: timedelta | None = None,
    ) -> list[SimilarItem]:
        params = {
            "k": _k(k, "pgrecs.popular_items"),
            "categories": _list(categories, "categories"),
            "filter": _jsonb(filter),
            "since": _interval(since),
        }
        return self._scored("popular_items", params)

    def _scored(self, name: str, params: Mapping[str, Any]) -> list[SimilarItem]:
        with translated(), self.conn.cursor(row_factory=class_row(SimilarItem)) as cur:
            return cur.execute(query(name), params).fetchall()

    # -- writes --------------------------------------------------------------------------------

    def upsert_items(self, rows: Iterable[items.Item | Mapping[str, Any]]) -> int:
        return items.upsert_items(self.conn, rows)

    def delete_items(self, item_ids: Sequence[str]) -> list[str]:
        return items.delete_items(self.conn, item_ids)

    def record_interactions(
        self, events: Iterable[interactions.Interaction | Mapping[str, Any]]
    ) -> int:
        return interactions.record_interactions(self.conn, events)

    def record_interaction(
        self, user_id: str, item_id: str, event_type: str, occurred_at: datetime | None = None
    ) -> None:
        """One interaction through pgrecs.record_interaction (UnknownItem, InvalidParameter)."""
        params = {
            "user_id": _id(user_id, "user_id"),
            "item_id": _id(item_id, "item_id"),
            "event_type": _id(event_type, "event_type"),
            # a naive time is UTC, as in record_interactions and imports (not the session's zone)
            "occurred_at": interactions.event_time(occurred_at),
        }
        with translated():
            self.conn.execute(query("record_interaction"), params)

    def refresh_users(
        self,
        user_ids: Sequence[str] | None = None,
        *,
        all_users: bool = False,
        chunk_size: int = 1000,
        progress: bool = False,
    ) -> users.RefreshReport:
        """Recompute stored user vectors: `user_ids`, else the stale users (all with all_users)."""
        return users.refresh_users(
            self.conn, user_ids, all_users=all_users, chunk_size=chunk_size, progress=progress
        )

    def train(self, **options: Any) -> Any:
        """Train the collaborative two-tower model and make it active (see pgrecs.train.train
        for the options); returns a pgrecs.train.TrainReport."""
        from pgrecs.train import train

        return train(self.conn, **options)

    def import_items(self, path: str | Path) -> int:
        """Upsert every item of a CSV/JSONL file, or none (ImportFileError names the line)."""
        return items.upsert_items(self.conn, items.read_items_file(path))

    def import_interactions(self, path: str | Path) -> int:
        return interactions.import_interactions_file(self.conn, path)

    def embed_pending(
        self,
        embedder: embed.Embedder | None = None,
        batch_size: int = embed.BATCH_ROWS,
        progress: bool = True,
    ) -> embed.EmbedReport:
        """Embed new and changed items (content_hash NULL) with `embedder` (default: the
        configured model), reusing cached vectors; each batch commits on its own."""
        if embedder is None:
            if self._embedder is None:
                self._embedder = embed.SentenceTransformerEmbedder()
            embedder = self._embedder
        return embed.embed_pending(self.conn, embedder, batch_size=batch_size, progress=progress)

    def reembed_all(
        self,
        embedder: embed.Embedder,
        batch_size: int = embed.BATCH_ROWS,
        progress: bool = True,
    ) -> embed.SwitchReport:
        """Switch every item to `embedder`'s vectors in one transaction, after staging them in
        the cache (resumable). Another dimension raises DimensionMismatch after staging: the
        column type change is a DBA script, `embed.switch_sql`."""
        return embed.reembed_all(self.conn, embedder, batch_size=batch_size, progress=progress)


def _list(values: Sequence[str] | None, name: str) -> list[str] | None:
    return items.string_list(values, name) if values is not None else None


def _weights(weights: Sequence[float] | None) -> list[float] | None:
    """recommend_for_items' weights as floats; a string is refused (it is not a list of
    numbers: "12" would mean [1.0, 2.0])."""
    if weights is None:
        return None
    if isinstance(weights, str | bytes):
        raise InvalidParameter(f"weights must be a list of numbers, not a string: {weights!r}")
    return [_number(w, "weights") for w in weights]


def _k(k: int, caller: str) -> int:
    """k checked before the call, with the SQL functions' message: psycopg would send a bool
    or a float as another type, and the call would fail to find the function. numpy's
    integers are integers."""
    if not isinstance(k, numbers.Integral) or isinstance(k, bool) or not 1 <= k <= 1000:
        raise InvalidParameter(
            f"{caller}: k must be between 1 and 1000, got {k!r}"
            " (hint: ask for at most 1000 rows per call)"
        )
    return int(k)


def _jsonb(value: Mapping[str, Any] | None) -> Jsonb | None:
    """A filter as jsonb, checked here: psycopg would only fail to dump it at execute time."""
    if value is None:
        return None
    items.check_json(value, "filter")
    return Jsonb(value)


def _id(value: Any, name: str) -> str | None:
    """An id as text (an int is taken as its text, as imports do); None is left to the SQL
    function, which names it."""
    return None if value is None else items.as_text(value, name)


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool | str | bytes):
        raise InvalidParameter(f"{name} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise InvalidParameter(f"{name} must be a number, got {value!r}") from exc


def _interval(since: timedelta | None) -> timedelta | None:
    if since is not None and not isinstance(since, timedelta):
        raise InvalidParameter(f"since must be a datetime.timedelta, got {since!r}")
    return since


def connect(url: str | None = None, *, check: bool = True) -> Client:
    """Connect to pgrecs: `url`, else PGRECS_DATABASE_URL, else the libpq PG* variables, else the
    embedded PostgreSQL (started on demand). Raises SchemaOutdated/PgvectorMissing unless the
    database is ready (pass check=False to skip, e.g. before migrating)."""
    conn = open_connection(url, autocommit=True)
    if check:
        try:
            check_database(conn)
        except Exception:
            conn.close()
            raise
    return Client(conn)
