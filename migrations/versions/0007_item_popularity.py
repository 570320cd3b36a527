"""Popularity counters: popular items and recommend's cold path no longer aggregate the whole
interaction log per call; weights that could underflow single precision are refused.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

Measured on the `pgrecs bench` 100k catalogue (812,155 interactions): `pgrecs.recommend` for a
user with no history (the popular-items path) took 811 ms of server CPU per call, and
`popular_items` with a 5% category 671 ms, both growing with the log. New table
pgrecs.item_popularity holds, per interacted item, the number of interactions and the sum of
their effective weights; statement triggers on pgrecs.interactions keep it equal to the log
(one aggregate per statement, so a bulk COPY costs one pass), and a rebuild follows a TRUNCATE
of the log or a change of an event type's weight. pgrecs._popular reads it in index order for
all-time popularity; `since` windows still aggregate that window per call, now found through a
BRIN index on interactions.occurred_at (a log written in time order keeps it selective).

The upgrade creates the triggers before it counts the existing log, in one transaction: writers
of pgrecs.interactions wait for it (the count reads the whole log once). pgrecs_writer may write
the counters (the triggers run with the writer's rights); pgrecs_reader may read them.

Tiny weights: a weight of 1e-50 passed the +-1e6 check and then made user vectors (live path),
explain and recommend_for_items fail with "value out of range: underflow" (single-precision
vector arithmetic). Interaction and event-type weights must now be 0 or between 1e-6 and 1e6 in
magnitude. The new interaction check is added NOT VALID (new rows are checked at once, the log
is not scanned under an exclusive lock); validate it at a quiet time with
`alter table pgrecs.interactions validate constraint interactions_weight_check`.
_user_vector leaves out effective weights below 1e-20 (nothing in single precision);
recommend_for_items scales its weights so the largest is 1 and refuses a weights array that is
not one-dimensional from index 1 (it used to pair such weights with the wrong items); recommend
reads settings.because_of_history after its argument checks, on the path that uses it.
"""

from __future__ import annotations

from pgrecs.migrations.helpers import execute_sql, execute_sql_file

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TRIGGER_FUNCTIONS = "pgrecs._popularity_delta(), pgrecs._popularity_recount()"
# Functions changed here, with the revision whose copy the downgrade restores.
UPDATED = {"_user_vector.sql": "0002", "recommend_for_items.sql": "0002", "recommend.sql": "0006"}
WEIGHT_CHECK = "weight = 0 or abs(weight) between 0.000001 and 1000000"
OLD_WEIGHT_CHECK = "weight between -1000000 and 1000000"


def upgrade() -> None:
    execute_sql("""
create table pgrecs.item_popularity (
    item_id           text primary key references pgrecs.items (item_id) on delete cascade,
    interaction_count bigint not null,
    score             double precision not null
);
comment on table pgrecs.item_popularity is
    'Per interacted item: the number of interactions and the sum of their effective weights (own weight, else the event type''s). Kept by triggers on interactions and event_types; read by popular_items and recommend''s cold path.';
create index item_popularity_rank on pgrecs.item_popularity (score desc, item_id);
""")
    execute_sql_file("0007", "_popularity_delta.sql")
    execute_sql_file("0007", "_popularity_recount.sql")
    execute_sql(f"""
create trigger interactions_popularity_insert
    after insert on pgrecs.interactions referencing new table as new_rows
    for each statement execute function pgrecs._popularity_delta();
create trigger interactions_popularity_update
    after update on pgrecs.interactions referencing old table as old_rows new table as new_rows
    for each statement execute function pgrecs._popularity_delta();
create trigger interactions_popularity_delete
    after delete on pgrecs.interactions referencing old table as old_rows
    for each statement execute function pgrecs._popularity_delta();
create trigger interactions_popularity_truncate
    after truncate on pgrecs.interactions
    for each statement execute function pgrecs._popularity_recount();
create trigger event_types_popularity
    after update on pgrecs.event_types referencing old table as old_rows new table as new_rows
    for each statement execute function pgrecs._popularity_recount();

-- popular_items(since => ...) reads one time window of an append-mostly log: a BRIN index
-- is a few pages, costs writers next to nothing, and skips the rest of the log
create index interactions_occurred_at on pgrecs.interactions using brin (occurred_at);

insert into pgrecs.item_popularity (item_id, interaction_count, score)
select x.item_id, count(*), sum(coalesce(x.weight, e.weight))
from pgrecs.interactions as x
join pgrecs.event_types as e on e.event_type = x.event_type
group by x.item_id;
analyze pgrecs.item_popularity;

revoke all on function {TRIGGER_FUNCTIONS} from public;
grant select on pgrecs.item_popularity to pgrecs_reader, pgrecs_writer;
grant insert, update, delete on pgrecs.item_popularity to pgrecs_writer;
""")
    execute_sql_file("0007", "_popular.sql")
    execute_sql_file("0007", "popular_items.sql")
    execute_sql(f"""
alter table pgrecs.interactions drop constraint interactions_weight_check,
    add constraint interactions_weight_check check ({WEIGHT_CHECK}) not valid;
alter table pgrecs.event_types drop constraint event_types_weight_check,
    add constraint event_types_weight_check check ({WEIGHT_CHECK});
""")
    for name in UPDATED:
        execute_sql_file("0007", name)


def downgrade() -> None:
    for name, revision_dir in UPDATED.items():
        execute_sql_file(revision_dir, name)
    execute_sql(f"""
alter table pgrecs.interactions drop constraint interactions_weight_check,
    add constraint interactions_weight_check check ({OLD_WEIGHT_CHECK});
alter table pgrecs.event_types drop constraint event_types_weight_check,
    add constraint event_types_weight_check check ({OLD_WEIGHT_CHECK});
""")
    execute_sql_file("0002", "_popular.sql")
    execute_sql_file("0002", "popular_items.sql")
    execute_sql(f"""
drop trigger event_types_popularity on pgrecs.event_types;
drop trigger interactions_popularity_truncate on pgrecs.interactions;
drop trigger interactions_popularity_delete on pgrecs.interactions;
drop trigger interactions_popularity_update on pgrecs.interactions;
drop trigger interactions_popularity_insert on pgrecs.interactions;
drop function {TRIGGER_FUNCTIONS};
drop table pgrecs.item_popularity;
drop index pgrecs.interactions_occurred_at;
""")
