"""Cheaper warm recommendations: the stored because_of list carries its items and times, the
greedy pick skips its loops when nothing needs collapsing, and walks plan their seen-item probe
as a subplan.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03

- pgrecs.users gains because_of_items and because_of_at: the items and times of the listed
  interactions (because_of_interactions, same order), which `pgrecs refresh` now writes with
  the rest of the row. A warm `recommend` call reads them from the row instead of looking up
  the 100 interactions by primary key. Rows written before this revision keep working as they
  did (recommend looks the interactions up when the new columns are NULL); `pgrecs refresh
  --all` rewrites them. Nothing is copied here: an update of every row of pgrecs.users would
  hold its lock for the whole migration.
- pgrecs._rank: without MMR (diversity 0), when no two of the first k candidates are
  near-duplicates and none is a near-duplicate of an input item, the first k candidates are
  the answer: one statement checks that, and the greedy loops run only when it fails.
- pgrecs.interactions: occurred_at must be finite (check interactions_occurred_at_check, added
  NOT VALID: new rows are checked at once, the log is not scanned under the migration's lock;
  `alter table pgrecs.interactions validate constraint interactions_occurred_at_check` checks
  older rows). pgrecs.record_interaction already refused infinity; a plain INSERT of it made
  every later `recommend` call of that user fail with "interval out of range".
- pgrecs._nearest: a walk's NOT EXISTS probe of pgrecs.interactions ends in `offset 0`, which
  keeps it a subplan (the same index probe for each visited row) instead of an anti-join the
  planner costs on every call. Exact scans keep the join.

The rows returned are the same.
"""

from __future__ import annotations

from pgrecs.migrations.helpers import execute_sql, execute_sql_file

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql("""
alter table pgrecs.users
    add column because_of_items text[],
    add column because_of_at timestamptz[],
    add constraint users_because_of_items_check
        check (cardinality(because_of_items) = cardinality(because_of_interactions)
               and cardinality(because_of_at) = cardinality(because_of_interactions));
comment on column pgrecs.users.because_of_items is
    'The items of because_of_interactions, in the same order; NULL in rows written before revision 0011';
comment on column pgrecs.users.because_of_at is
    'Their occurred_at, in the same order; NULL in rows written before revision 0011';
alter table pgrecs.interactions
    add constraint interactions_occurred_at_check check (isfinite(occurred_at)) not valid;
""")
    execute_sql_file("0011", "_nearest.sql")
    execute_sql_file("0011", "_rank.sql")
    execute_sql_file("0011", "recommend.sql")


def downgrade() -> None:
    execute_sql_file("0008", "recommend.sql")
    execute_sql_file("0010", "_rank.sql")
    execute_sql_file("0008", "_nearest.sql")
    execute_sql("""
alter table pgrecs.interactions drop constraint interactions_occurred_at_check;
alter table pgrecs.users
    drop constraint users_because_of_items_check,
    drop column because_of_items,
    drop column because_of_at;
""")
