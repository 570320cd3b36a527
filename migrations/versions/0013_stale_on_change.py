"""Stored user vectors go stale when what they were computed from changes in place.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03

A stored row of pgrecs.users was judged current by the user's interaction count and newest
interaction_id. Inserts and deletes change those; other changes did not, and `recommend` kept
serving vectors computed from the old data until a `pgrecs refresh --all`:

- An UPDATE of an interaction (its user, item, event type, weight or time). pgrecs.interactions
  gains `revised bigint`: trigger interactions_revised (pgrecs._interactions_revised, before
  update, each row) sets it from interaction_id's sequence when one of those columns changes,
  and refuses a change of interaction_id. A row's stamp is greatest(interaction_id, revised).
  pgrecs.users gains `history_digest numeric`, the sum of hashint8extended(stamp, stamp >> 32)
  over the user's rows when the vectors were computed (the seed carries the high half, which
  the hash alone folds away): a stored row is current while count, newest stamp
  and digest all match (pgrecs.recommend and `pgrecs refresh` compare them). The digest changes
  with any new stamp, whatever else commits meanwhile and at any isolation level, without
  locks; the newest stamp alone missed an update whose stamp was drawn before a later one that
  committed first. Rows stored before this revision have no digest and are stale until
  `pgrecs refresh` (recommend computes them live meanwhile): run `pgrecs refresh --all` after
  upgrading. Adding the columns rewrites nothing.
  Only the trigger writes `revised`: pgrecs_writer's INSERT and UPDATE on pgrecs.interactions
  become column grants without it (and without interaction_id), and it gets USAGE on the
  sequence, since the trigger calls nextval() with the updating role's rights.
- An UPDATE of an event type's weight (trigger event_types_users_stale), a change of the
  half_life_days setting (settings_users_stale, settings_truncated), and a TRUNCATE of
  interactions, after which
  the ids restart and can repeat stored stamps (interactions_truncated): every stored row is
  marked stale (one write per stored user) and the watcher notified with an empty payload.
  For the first two, pgrecs._users_stale first takes advisory lock 123589603189620
  (pgrecs.queries.USERS_LOCK_KEY) exclusively, which each `pgrecs refresh` chunk holds shared
  from reading the settings to its commit (a TRUNCATE's table lock does the same). It refuses to
  run outside READ COMMITTED (25001): its update must see what such a chunk committed.
- UPDATE and DELETE of interactions notify pgrecs_interactions per user, as inserts do
  (interactions_notify_changed, interactions_notify_deleted: pgrecs._interactions_changed), so
  `pgrecs refresh --watch` refreshes those users at once.

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

WRITER_COLUMNS = "user_id, item_id, event_type, occurred_at, weight"
FUNCTIONS = "pgrecs._interactions_revised(), pgrecs._interactions_changed(), pgrecs._users_stale()"


def upgrade() -> None:
    execute_sql(f"""
alter table pgrecs.interactions add column revised bigint;
comment on column pgrecs.interactions.revised is
    'Set by trigger interactions_revised when an UPDATE changes the row; greatest(interaction_id, revised) is the row''s stamp.';
alter table pgrecs.users add column history_digest numeric;
comment on column pgrecs.users.history_digest is
    'Sum of hashint8extended(s, s >> 32), s = greatest(interaction_id, revised), over the interactions the vectors were computed from.';
revoke insert, update on pgrecs.interactions from pgrecs_writer;
grant insert ({WRITER_COLUMNS}), update ({WRITER_COLUMNS}) on pgrecs.interactions to pgrecs_writer;
grant usage on sequence pgrecs.interactions_interaction_id_seq to pgrecs_writer;
""")
    execute_sql_file("0013", "_interactions_revised.sql")
    execute_sql_file("0013", "_interactions_changed.sql")
    execute_sql_file("0013", "_users_stale.sql")
    execute_sql_file("0013", "recommend.sql")
    execute_sql_file("0013", "recommend_for_items.sql")
    execute_sql(f"""
create trigger interactions_revised
    before update on pgrecs.interactions
    for each row execute function pgrecs._interactions_revised();
create trigger interactions_notify_changed
    after update on pgrecs.interactions referencing old table as old_rows new table as new_rows
    for each statement execute function pgrecs._interactions_changed();
create trigger interactions_notify_deleted
    after delete on pgrecs.interactions referencing old table as old_rows
    for each statement execute function pgrecs._interactions_changed();
create trigger interactions_truncated
    after truncate on pgrecs.interactions
    for each statement execute function pgrecs._users_stale();
create trigger event_types_users_stale
    after update on pgrecs.event_types referencing old table as old_rows new table as new_rows
    for each statement execute function pgrecs._users_stale();
create trigger settings_users_stale
    after insert or update or delete on pgrecs.settings
    for each row execute function pgrecs._users_stale();
create trigger settings_truncated
    after truncate on pgrecs.settings
    for each statement execute function pgrecs._users_stale();
revoke all on function {FUNCTIONS} from public;
""")


def downgrade() -> None:
    execute_sql(f"""
drop trigger settings_truncated on pgrecs.settings;
drop trigger settings_users_stale on pgrecs.settings;
drop trigger event_types_users_stale on pgrecs.event_types;
drop trigger interactions_truncated on pgrecs.interactions;
drop trigger interactions_notify_deleted on pgrecs.interactions;
drop trigger interactions_notify_changed on pgrecs.interactions;
drop trigger interactions_revised on pgrecs.interactions;
drop function {FUNCTIONS};
""")
    execute_sql_file("0012", "recommend_for_items.sql")
    execute_sql_file("0011", "recommend.sql")
    execute_sql(f"""
revoke usage on sequence pgrecs.interactions_interaction_id_seq from pgrecs_writer;
revoke insert ({WRITER_COLUMNS}), update ({WRITER_COLUMNS}) on pgrecs.interactions
    from pgrecs_writer;
grant insert, update on pgrecs.interactions to pgrecs_writer;
alter table pgrecs.users drop column history_digest;
alter table pgrecs.interactions drop column revised;
""")
