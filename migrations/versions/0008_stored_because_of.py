"""Cheaper warm recommendations: the refresh stores each user's because_of list, and _rank
scores the candidates from what the walk returned.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03

Measured on the `pgrecs bench` 100k catalogue (500-item histories, server CPU per call, 30
paired rounds against revision 0007, docs/performance.md): recommend with a 5% category 8.7 ->
6.3 ms, without a filter 10.7 -> 8.6 ms.
- pgrecs.users gains because_of_interactions, because_of_weights and because_of_history: the
  user's heaviest positive interactions (settings.because_of_history of them, the value stored
  with the list) and their effective weights, which `pgrecs refresh` writes with the vectors.
  When the stored row is current and was made with today's setting, recommend no longer
  weighs and sorts the history (about 2 ms): it counts the user's interactions to check the row
  and reads the listed interactions by primary key. Otherwise it reads the history as before,
  so nothing depends on the refresh having run. Rows stored before this revision have no list:
  run `pgrecs refresh --all` once after upgrading (and after changing because_of_history).
  toast_tuple_target = 8160 keeps such rows (about 3 kB) whole instead of compressed.
- The heaviest interactions are now chosen by weight, then time, then interaction id (was item
  id), a rule the refresh applies without the database's collation.
- pgrecs._nearest returns the candidates' vectors (new result columns: the function is dropped
  and created again, with the same grants); pgrecs._rank scores the candidates from them instead
  of reading the items again, and reads the popularity penalty's counts from
  pgrecs.item_popularity with a plan that does not depend on the penalty (the old statement was
  planned again on every call): about 0.5 ms. It finds the partial HNSW indexes the documented
  DBA statement names by their names first (their predicates are still checked), every partial
  index only when those do not cover the request: about 0.25 ms with a category filter.
"""

from __future__ import annotations

from pgrecs.migrations.helpers import execute_sql, execute_sql_file

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

NEAREST = "pgrecs._nearest(public.vector, integer, text[], jsonb, text, text[], boolean, text)"


def _replace_nearest(revision_dir: str) -> None:
    """Its result columns change: drop it and create that revision's copy, with its grants."""
    execute_sql(f"drop function {NEAREST};")
    execute_sql_file(revision_dir, "_nearest.sql")
    execute_sql(f"""
revoke all on function {NEAREST} from public;
grant execute on function {NEAREST} to pgrecs_reader, pgrecs_writer;
""")


def upgrade() -> None:
    execute_sql("""
alter table pgrecs.users
    add column because_of_interactions bigint[],
    add column because_of_weights double precision[],
    add column because_of_history integer,
    add constraint users_because_of_check
        check (cardinality(because_of_interactions) = cardinality(because_of_weights));
-- A row (a 384-d vector and two 100-element lists, about 3.2 kB) stays whole in its page: past
-- the default target of about 2 kB every write would compress the lists and every recommend
-- call would decompress them.
alter table pgrecs.users set (toast_tuple_target = 8160);
comment on column pgrecs.users.because_of_interactions is
    'The user''s heaviest positive interactions (because_of_history of them; all when <= 0; in no particular order), as of refreshed_through; recommend compares its results with their items';
comment on column pgrecs.users.because_of_weights is 'Their effective weights';
comment on column pgrecs.users.because_of_history is
    'settings.because_of_history when the list was made; recommend uses the list only while they are equal';
""")
    _replace_nearest("0008")
    execute_sql_file("0008", "_rank.sql")
    execute_sql_file("0008", "recommend.sql")


def downgrade() -> None:
    execute_sql_file("0007", "recommend.sql")
    _replace_nearest("0004")
    execute_sql_file("0004", "_rank.sql")
    execute_sql("""
alter table pgrecs.users
    drop constraint users_because_of_check,
    drop column because_of_interactions,
    drop column because_of_weights,
    drop column because_of_history,
    reset (toast_tuple_target);
""")
