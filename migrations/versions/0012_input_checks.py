"""Rows the functions cannot rank are refused where they are written: all-zero vectors, NULL or
nested tags; ages far apart, huge `since` windows and nested id arrays are handled.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03

- Every vector column must have a direction: checks `*_nonzero` (`public.vector_norm(v) > 0`)
  on pgrecs.items (embedding, collab_embedding), pgrecs.users (content_vector, collab_vector)
  and pgrecs.embedding_cache (embedding). The cosine distance to an all-zero vector is NaN,
  which sorts before every number and passes every similarity test: one such row, written by
  SQL, made `recommend` return it first and drop every other candidate as its near-duplicate.
  Existing zero vectors are removed first: the item's vector and content hash become NULL (the
  item is pending again: `pgrecs embed` re-embeds it), its collaborative vector NULL (the next
  `pgrecs train` writes it), a cache row or a stored user row is deleted (a user without a row
  is stale: `pgrecs refresh` recomputes it). pgrecs has never written one (`pgrecs embed`
  refuses a model's zero vector, the refresh stores NULL for a user with no direction).
- pgrecs.items.tags must be a one-dimensional array without NULLs (check items_tags_check).
  Such a row stopped `pgrecs embed`. Existing tags are flattened and their NULLs dropped.
  The checks are validated here, under the migration's lock: 7.1 s for the 1M-item benchmark
  catalogue (2 GB of pgrecs.items) on a 2-core machine.
- pgrecs._history: the age of an interaction is a difference of float8 epoch seconds (as in
  pgrecs' Python refresh). The interval it was computed from overflowed for times more than
  about 292,000 years apart, and made every call for that user fail.
- pgrecs.popular_items: a `since` window reaching before the earliest timestamp covers the
  whole log instead of failing with "timestamp out of range".
- pgrecs.recommend_for_items: a multi-dimensional item_ids or negative_item_ids array is
  refused with invalid_parameter_value, naming it.
- pgrecs._rank, without MMR, when the first k candidates hold a near-duplicate pair: each
  candidate, in order, is compared with the input items and the rows kept so far, until k are
  kept. Each kept row was compared with every candidate left, which at k = 1000 took seconds.
  The rows returned are the same.
"""

from __future__ import annotations

from pgrecs.migrations.helpers import execute_sql, execute_sql_file

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql("""
delete from pgrecs.embedding_cache where public.vector_norm(embedding) = 0;
update pgrecs.items
   set embedding = case when public.vector_norm(embedding) = 0 then null else embedding end,
       content_hash = case when public.vector_norm(embedding) = 0 then null
                           else content_hash end,
       collab_embedding = case when public.vector_norm(collab_embedding) = 0 then null
                               else collab_embedding end,
       tags = array(select t from unnest(tags) as t where t is not null)
 where public.vector_norm(embedding) = 0 or public.vector_norm(collab_embedding) = 0
    or array_ndims(tags) > 1 or exists (select from unnest(tags) as t where t is null);
delete from pgrecs.users
 where public.vector_norm(content_vector) = 0 or public.vector_norm(collab_vector) = 0;
alter table pgrecs.items
    add constraint items_embedding_nonzero check (public.vector_norm(embedding) > 0),
    add constraint items_collab_embedding_nonzero
        check (public.vector_norm(collab_embedding) > 0),
    add constraint items_tags_check
        check (case when array_ndims(tags) > 1 then false
                    else array_position(tags, null) is null end);
alter table pgrecs.users
    add constraint users_content_vector_nonzero check (public.vector_norm(content_vector) > 0),
    add constraint users_collab_vector_nonzero check (public.vector_norm(collab_vector) > 0);
alter table pgrecs.embedding_cache
    add constraint embedding_cache_embedding_nonzero check (public.vector_norm(embedding) > 0);
""")
    execute_sql_file("0012", "_history.sql")
    execute_sql_file("0012", "popular_items.sql")
    execute_sql_file("0012", "recommend_for_items.sql")
    execute_sql_file("0012", "_rank.sql")


def downgrade() -> None:
    execute_sql_file("0011", "_rank.sql")
    execute_sql_file("0007", "recommend_for_items.sql")
    execute_sql_file("0007", "popular_items.sql")
    execute_sql_file("0004", "_history.sql")
    execute_sql("""
alter table pgrecs.embedding_cache drop constraint embedding_cache_embedding_nonzero;
alter table pgrecs.users
    drop constraint users_content_vector_nonzero,
    drop constraint users_collab_vector_nonzero;
alter table pgrecs.items
    drop constraint items_embedding_nonzero,
    drop constraint items_collab_embedding_nonzero,
    drop constraint items_tags_check;
""")
