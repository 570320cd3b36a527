-- Named queries the package runs (procrastinate-style). Each starts with `-- name: <name>`.
-- Parameters are psycopg named placeholders; the SQL functions hold the logic.

-- name: similar_items
select item_id, score
from pgrecs.similar_items(%(item_id)s, k => %(k)s, categories => %(categories)s,
                          same_category => %(same_category)s, filter => %(filter)s,
                          exclude_seen_by => %(exclude_seen_by)s);

-- name: schema_revision
select version_num from pgrecs.alembic_version;

-- name: pgvector_version
select extversion from pg_catalog.pg_extension where extname = 'vector';

-- name: vector_dimension
select a.atttypmod
from pg_catalog.pg_attribute as a
where a.attrelid = 'pgrecs.items'::regclass and a.attname = %(column)s;

-- name: upsert_item
insert into pgrecs.items as i (item_id, title, description, category, tags, attributes, available)
values (%(item_id)s, %(title)s, %(description)s, %(category)s, %(tags)s, %(attributes)s,
        %(available)s)
on conflict (item_id) do update
set title = excluded.title, description = excluded.description, category = excluded.category,
    tags = excluded.tags, attributes = excluded.attributes, available = excluded.available,
    updated_at = now()
where (i.title, i.description, i.category, i.tags, i.attributes, i.available)
    is distinct from (excluded.title, excluded.description, excluded.category, excluded.tags,
                      excluded.attributes, excluded.available);

-- name: delete_items
delete from pgrecs.items where item_id = any(%(item_ids)s) returning item_id;

-- name: insert_interactions
-- One statement for a batch: the popularity trigger then runs once and locks the batch's
-- counters in item_id order (statement by statement, two batches touching the same items in
-- opposite orders could deadlock), and interaction ids follow the batch's order.
insert into pgrecs.interactions (user_id, item_id, event_type, occurred_at, weight)
select e.user_id, e.item_id, e.event_type, coalesce(e.occurred_at, now()), e.weight
from unnest(%(user_ids)s::text[], %(item_ids)s::text[], %(event_types)s::text[],
            %(occurred_at)s::timestamptz[], %(weights)s::double precision[])
     with ordinality as e (user_id, item_id, event_type, occurred_at, weight, n)
order by e.n;

-- name: active_model
select name, dimension from pgrecs.models where kind = %(kind)s and active;

-- name: register_model
insert into pgrecs.models (kind, name, dimension) values (%(kind)s, %(name)s, %(dimension)s)
on conflict (kind) where active do nothing;

-- name: recommend_for_items
select item_id, score
from pgrecs.recommend_for_items(%(item_ids)s, weights => %(weights)s, k => %(k)s,
                                categories => %(categories)s, filter => %(filter)s,
                                negative_item_ids => %(negative_item_ids)s);

-- name: popular_items
select item_id, score
from pgrecs.popular_items(k => %(k)s, categories => %(categories)s, filter => %(filter)s,
                          since => %(since)s);

-- name: recommend
select item_id, score, source, because_of
from pgrecs.recommend(%(user_id)s, k => %(k)s, categories => %(categories)s,
                      filter => %(filter)s, exclude_seen => %(exclude_seen)s,
                      diversity => %(diversity)s);

-- name: explain
select history_item_id, event_type, occurred_at, weight, similarity
from pgrecs.explain(%(user_id)s, %(item_id)s);

-- name: record_interaction
select pgrecs.record_interaction(%(user_id)s, %(item_id)s, %(event_type)s,
                                 coalesce(%(occurred_at)s, now()));

-- User vectors (pgrecs/users.py). A user is stale when the interactions they have now differ
-- from the ones their stored vectors were computed from: count, newest stamp or stamp digest (a
-- row's stamp is greatest(interaction_id, revised), revised being set when an UPDATE changes
-- the row; see sql/functions/_interactions_revised.sql).

-- name: stale_users
select coalesce(s.user_id, u.user_id) as user_id
from (
    select x.user_id, count(*) as n, max(t.stamp) as last,
           sum(hashint8extended(t.stamp, t.stamp >> 32)) as digest
    from pgrecs.interactions as x
    cross join lateral (select greatest(x.interaction_id, x.revised)) as t (stamp)
    group by x.user_id
) as s
full join pgrecs.users as u on u.user_id = s.user_id
where case when s.user_id is null  -- stored vectors of a user whose interactions are gone
           then u.refreshed_through is not null or u.interaction_count <> 0
           else u.user_id is null or u.refreshed_through is distinct from s.last
                or u.interaction_count <> s.n or u.history_digest is distinct from s.digest
      end
order by 1;

-- name: all_users
select user_id from pgrecs.interactions
union
select user_id from pgrecs.users
order by 1;

-- name: user_histories
-- One row per user with interactions: count, newest stamp, stamp digest, and the history as
-- parallel arrays (read in binary as numpy arrays: pgrecs.users._HISTORY_LOADERS). occurred_at
-- goes as it is: computing epoch seconds here (numeric arithmetic) took half the query's time.
select x.user_id, count(*), max(t.stamp), sum(hashint8extended(t.stamp, t.stamp >> 32)),
       array_agg(x.item_id), array_agg(coalesce(x.weight, e.weight)),
       array_agg(x.interaction_id), array_agg(x.occurred_at)
from pgrecs.interactions as x
cross join lateral (select greatest(x.interaction_id, x.revised)) as t (stamp)
join pgrecs.event_types as e on e.event_type = x.event_type
where x.user_id = any(%(user_ids)s)
group by x.user_id;

-- name: read_committed
set transaction isolation level read committed;

-- name: isolation
select pg_catalog.current_setting('transaction_isolation');

-- name: lock_for_refresh
-- A refresh chunk: the lock pgrecs._users_stale takes exclusively when event type weights or
-- half_life_days change or interactions are truncated (pgrecs.queries.USERS_LOCK_KEY), then the
-- one `pgrecs train` and a content model switch take exclusively (LOCK_KEY). In this order, a
-- chunk waiting for the first holds nothing train waits for.
select pg_catalog.pg_advisory_xact_lock_shared(%(users)s),
       pg_catalog.pg_advisory_xact_lock_shared(%(models)s);

-- name: lock_models
-- `pgrecs train` and a content model switch (LOCK_KEY, exclusively)
select pg_catalog.pg_advisory_xact_lock(%(key)s);

-- name: active_models
-- Which models' vectors the items hold: each active model row and its row version (xmin), so
-- that a model deactivated and activated again also counts as a change.
select coalesce(array_agg(model_id::text || ':' || xmin::text order by model_id), '{}')
from pgrecs.models
where active;

-- name: item_vectors
select item_id, embedding, collab_embedding
from pgrecs.items
where embedding is not null
order by item_id;

-- name: item_vectors_of
select item_id, embedding, collab_embedding
from pgrecs.items
where embedding is not null and item_id = any(%(item_ids)s)
order by item_id;

-- name: setting
select value from pgrecs.settings where name = %(name)s;

-- name: save_user_vectors
insert into pgrecs.users as u
    (user_id, content_vector, collab_vector, interaction_count, refreshed_through, history_digest,
     refreshed_at, because_of_interactions, because_of_weights, because_of_items, because_of_at,
     because_of_history)
values (%(user_id)s, %(content_vector)s, %(collab_vector)s, %(interaction_count)s,
        %(refreshed_through)s, %(history_digest)s, now(), %(because_of_interactions)b,
        %(because_of_weights)b, %(because_of_items)b, %(because_of_at)b, %(because_of_history)s)
on conflict (user_id) do update
set content_vector = excluded.content_vector, collab_vector = excluded.collab_vector,
    interaction_count = excluded.interaction_count,
    refreshed_through = excluded.refreshed_through, history_digest = excluded.history_digest,
    refreshed_at = excluded.refreshed_at,
    because_of_interactions = excluded.because_of_interactions,
    because_of_weights = excluded.because_of_weights,
    because_of_items = excluded.because_of_items, because_of_at = excluded.because_of_at,
    because_of_history = excluded.because_of_history;

-- Embedding (pgrecs/embed.py). An item is pending when its content_hash is NULL: new rows, and
-- rows whose enriched text changed (trigger pgrecs._items_text_changed). Vectors go through
-- pgrecs.embedding_cache, keyed by (text hash, model).

-- name: embed_counts
select (select count(*) from pgrecs.items where content_hash is null) as pending,
       (select count(*) from pgrecs.items) as total;

-- name: item_count
select count(*) from pgrecs.items;

-- name: pending_items
-- attributes as text: embed parses them row by row, so one row it cannot read is reported, not
-- a failure of the whole batch (psycopg's jsonb loader raises for a 5,000-digit number)
select item_id, title, description, category, tags, attributes::text, updated_at
from pgrecs.items
where content_hash is null and item_id > %(after)s
order by item_id
limit %(limit)s;

-- name: all_items
select item_id, title, description, category, tags, attributes::text, updated_at
from pgrecs.items
where item_id > %(after)s
order by item_id
limit %(limit)s;

-- name: cached_hashes
select content_hash from pgrecs.embedding_cache
where model = %(model)s and content_hash = any(%(hashes)s);

-- name: copy_cache
copy pgrecs.embedding_cache (content_hash, model, embedding) from stdin with (format binary);

-- Writes only rows still as they were read (pending, same updated_at): a text changed during
-- encoding stays pending. Writes nothing once another model is active.
-- name: write_embeddings
update pgrecs.items as i
set embedding = c.embedding, content_hash = b.content_hash, embedded_at = now()
from unnest(%(item_ids)s::text[], %(hashes)s::text[], %(read_at)s::timestamptz[])
         as b (item_id, content_hash, updated_at)
join pgrecs.embedding_cache as c on c.content_hash = b.content_hash and c.model = %(model)s
where i.item_id = b.item_id
  and i.content_hash is null
  and i.updated_at = b.updated_at
  and exists (select from pgrecs.models as m
              where m.kind = 'embedding' and m.active and m.name = %(model)s)
returning i.content_hash;

-- Model switch (embed --reembed-all): writers wait, readers keep the old vectors until commit.
-- name: lock_items_for_switch
lock table pgrecs.items in share row exclusive mode;

-- name: unswitched_items
select i.item_id, i.title, i.description, i.category, i.tags, i.attributes::text, i.updated_at
from pgrecs.items as i
where i.content_hash is null
   or not exists (select from pgrecs.embedding_cache as c
                  where c.content_hash = i.content_hash and c.model = %(model)s)
order by i.item_id;

-- name: deactivate_model
update pgrecs.models set active = false where kind = %(kind)s and active;

-- name: activate_model
insert into pgrecs.models (kind, name, dimension) values (%(kind)s, %(name)s, %(dimension)s);

-- name: switch_embeddings
update pgrecs.items as i
set embedding = c.embedding, embedded_at = now()
from pgrecs.embedding_cache as c
where c.model = %(model)s and c.content_hash = i.content_hash
  and i.item_id <> all(%(delta)s::text[]);

-- name: switch_write
update pgrecs.items as i
set embedding = c.embedding, content_hash = b.content_hash, embedded_at = now()
from unnest(%(item_ids)s::text[], %(hashes)s::text[]) as b (item_id, content_hash)
join pgrecs.embedding_cache as c on c.content_hash = b.content_hash and c.model = %(model)s
where i.item_id = b.item_id;

-- name: mark_users_stale
update pgrecs.users set refreshed_through = null where refreshed_through is not null;

-- name: staged_model
select (select public.vector_dims(c.embedding) from pgrecs.embedding_cache as c
        where c.model = %(model)s limit 1) as dimension,
       (select count(*) from pgrecs.items as i
        where exists (select from pgrecs.embedding_cache as c
                      where c.model = %(model)s and c.content_hash = i.content_hash)) as staged,
       (select count(*) from pgrecs.items) as total;
