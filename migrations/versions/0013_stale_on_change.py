"""Stored user vectors go stale when what they were computed from changes in place.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03

A stored row of pgrecs.users is judged current by the user's interaction count and newest
interaction_id. Inserts and deletes change those; three other changes did not, and `recommend`
kept serving vectors computed from the old data until a `pgrecs refresh --all`:

- an UPDATE of an interaction (its user, item, event type, weight or time): trigger
  interactions_stale (pgrecs._interactions_changed) marks the stored rows of the users it
  changed stale and notifies pgrecs_interactions for each (so does a DELETE, whose rows are
  stale already, so that `pgrecs refresh --watch` refreshes them at once);
- an UPDATE of an event type's weight: trigger event_types_users_stale;
- a change of the half_life_days setting: trigger settings_users_stale.

The last two mark every stored row stale (one write per stored user) and notify with an empty
payload (the watcher then catches up on every stale user). All three take advisory lock
123589603189620 (pgrecs.queries.USERS_LOCK_KEY), which each `pgrecs refresh` chunk holds shared
from reading the histories to its commit, so no refresh stores vectors of the old data as
current. Rows made stale by such changes before this revision are not found: run
`pgrecs refresh --all` once if interactions were updated in place.

Also pgrecs.recommend_for_items: a weight below 1e-30 of the largest (or a negative item's -1
below 1e-30 of it) counts as 0. Such weights underflowed double precision, which PostgreSQL
raises as an error (22003).
"""

from __future__ import annotations

from pgrecs.migrations.helpers import execute_sql, execute_sql_file

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

FUNCTIONS = "pgrecs._interactions_changed(), pgrecs._users_stale()"


def upgrade() -> None:
    execute_sql_file("0013", "recommend_for_items.sql")
    execute_sql_file("0013", "_interactions_changed.sql")
    execute_sql_file("0013", "_users_stale.sql")
    execute_sql(f"""
create trigger interactions_stale
    after update on pgrecs.interactions referencing old table as old_rows new table as new_rows
    for each statement execute function pgrecs._interactions_changed();
create trigger interactions_deleted
    after delete on pgrecs.interactions referencing old table as old_rows
    for each statement execute function pgrecs._interactions_changed();
create trigger event_types_users_stale
    after update on pgrecs.event_types referencing old table as old_rows new table as new_rows
    for each statement execute function pgrecs._users_stale();
create trigger settings_users_stale
    after insert or update or delete on pgrecs.settings
    for each row execute function pgrecs._users_stale();
revoke all on function {FUNCTIONS} from public;
""")


def downgrade() -> None:
    execute_sql(f"""
drop trigger settings_users_stale on pgrecs.settings;
drop trigger event_types_users_stale on pgrecs.event_types;
drop trigger interactions_deleted on pgrecs.interactions;
drop trigger interactions_stale on pgrecs.interactions;
drop function {FUNCTIONS};
""")
    execute_sql_file("0012", "recommend_for_items.sql")
