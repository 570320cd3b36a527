"""recommend and explain, user vectors from the live history, blended spaces, MMR, popularity
penalty; triggers that mark changed items for re-embedding and notify the watchers.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

- pgrecs.recommend and pgrecs.explain (spec section 3); similar_items and recommend_for_items
  move onto the shared ranking function pgrecs._rank (replaces pgrecs._top_k).
- Settings content_weight_cold, content_weight_warm, popularity_penalty.
- Interaction and event-type weights must lie within +-1e6 (no infinities).
- Items whose enriched text changes get content_hash NULL (waiting for `pgrecs embed`); new
  and changed items NOTIFY pgrecs_items, new interactions NOTIFY pgrecs_interactions (payload:
  the user id) for `pgrecs embed --watch` and `pgrecs refresh --watch`.
- embedding_cache.embedding takes vectors of any dimension, so a new model's vectors can be
  staged before a switch (downgrade deletes cached vectors of other dimensions).
"""

from __future__ import annotations

from pgrecs.migrations.helpers import execute_sql, execute_sql_file

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Creation order matters: SQL-language bodies are checked against the functions they call.
FUNCTIONS = [
    "_history.sql",
    "_user_vector.sql",
    "_content_weight.sql",
    "_popular.sql",
    "_nearest.sql",
    "_rank.sql",
    "_items_text_changed.sql",
    "_notify_items.sql",
    "_notify_interactions.sql",
    "similar_items.sql",
    "recommend_for_items.sql",
    "popular_items.sql",
    "recommend.sql",
    "explain.sql",
]

# Trigger functions run without an EXECUTE check: nobody is granted them.
TRIGGER_FUNCTIONS = """
pgrecs._notify_interactions(),
pgrecs._notify_items(),
pgrecs._items_text_changed()
"""
CALLABLE_FUNCTIONS = """
pgrecs.explain(text, text),
pgrecs.recommend(text, integer, text[], jsonb, boolean, double precision),
pgrecs._rank(public.vector, public.vector, double precision, integer, text[], jsonb, text, text[], public.vector[], double precision, double precision, integer),
pgrecs._nearest(public.vector, integer, text[], jsonb, text, text[], boolean, text),
pgrecs._popular(integer, text[], jsonb, interval, text, text[]),
pgrecs._content_weight(bigint, boolean),
pgrecs._user_vector(text, text),
pgrecs._history(text)
"""


def upgrade() -> None:
    execute_sql("""
drop function pgrecs._top_k(public.vector, integer, text[], jsonb, text, text[], public.vector[]);
drop function pgrecs._nearest(public.vector, integer, text[], jsonb, text, text[], boolean);

insert into pgrecs.settings (name, value, description) values
    ('content_weight_cold', '1.0', 'share of the content space in recommend for users below warm_threshold interactions (the rest is collaborative)'),
    ('content_weight_warm', '0.3', 'share of the content space in recommend for users with warm_threshold interactions or more'),
    ('popularity_penalty', '0', 'recommend subtracts this * ln(1 + interactions of the item) from each score (long-tail boost; 0 = off)');

-- finite, bounded weights: user vectors are real (float4) sums of weight * vector
alter table pgrecs.interactions drop constraint interactions_weight_check,
    add constraint interactions_weight_check check (weight between -1000000 and 1000000);
alter table pgrecs.event_types drop constraint event_types_weight_check,
    add constraint event_types_weight_check check (weight between -1000000 and 1000000);

alter table pgrecs.embedding_cache alter column embedding type public.vector;
comment on column pgrecs.embedding_cache.embedding is
    'Any dimension: vectors of a model being switched to are staged here first.';
create index items_unhashed on pgrecs.items (item_id) where content_hash is null;
""")
    for name in FUNCTIONS:
        execute_sql_file("0002", name)
    execute_sql(f"""
create trigger items_text_changed
    before update of title, description, category, tags, attributes on pgrecs.items
    for each row execute function pgrecs._items_text_changed();
create trigger items_notify
    after insert or update on pgrecs.items
    for each row when (new.content_hash is null) execute function pgrecs._notify_items();
create trigger interactions_notify
    after insert on pgrecs.interactions
    for each row execute function pgrecs._notify_interactions();

revoke all on function {TRIGGER_FUNCTIONS}, {CALLABLE_FUNCTIONS} from public;
grant execute on function {CALLABLE_FUNCTIONS} to pgrecs_reader, pgrecs_writer;
""")


def downgrade() -> None:
    execute_sql(f"""
drop trigger interactions_notify on pgrecs.interactions;
drop trigger items_notify on pgrecs.items;
drop trigger items_text_changed on pgrecs.items;
drop function {CALLABLE_FUNCTIONS}, {TRIGGER_FUNCTIONS};
drop index pgrecs.items_unhashed;
alter table pgrecs.interactions drop constraint interactions_weight_check,
    add constraint interactions_weight_check check (weight <> 'NaN'::float8);
alter table pgrecs.event_types drop constraint event_types_weight_check,
    add constraint event_types_weight_check check (weight <> 'NaN'::float8);
delete from pgrecs.settings
where name in ('content_weight_cold', 'content_weight_warm', 'popularity_penalty');
do $$
declare
    d integer := (select a.atttypmod from pg_catalog.pg_attribute as a
                  where a.attrelid = 'pgrecs.items'::pg_catalog.regclass
                    and a.attname = 'embedding');
begin
    delete from pgrecs.embedding_cache where public.vector_dims(embedding) <> d;
    execute format('alter table pgrecs.embedding_cache alter column embedding type public.vector(%s)', d);
end
$$;
""")
    for name in [
        "_nearest.sql",
        "_top_k.sql",
        "similar_items.sql",
        "recommend_for_items.sql",
        "popular_items.sql",
    ]:
        execute_sql_file("0001", name)
    execute_sql("""
revoke all on function
    pgrecs._top_k(public.vector, integer, text[], jsonb, text, text[], public.vector[]),
    pgrecs._nearest(public.vector, integer, text[], jsonb, text, text[], boolean)
    from public;
grant execute on function
    pgrecs._top_k(public.vector, integer, text[], jsonb, text, text[], public.vector[]),
    pgrecs._nearest(public.vector, integer, text[], jsonb, text, text[], boolean)
    to pgrecs_reader, pgrecs_writer;
""")
