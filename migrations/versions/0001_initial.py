"""Initial schema: items, users, interactions, event types, settings, embedding cache, models,
roles, and the first SQL functions (similar_items, recommend_for_items, popular_items,
record_interaction).

Revision ID: 0001
Revises:
Create Date: 2026-11-22

Options: `-x dim=N` sets the content vector dimension (default 384, the bundled
all-MiniLM-L6-v2); `-x collab_dim=N` the collaborative one (default 64).
Needs: the `vector` extension (pgvector >= 0.8) in the database, or the right to create it.
Roles pgrecs_reader / pgrecs_writer are created when missing (needs CREATEROLE); a DBA can
create them beforehand instead: `CREATE ROLE pgrecs_reader NOLOGIN; CREATE ROLE pgrecs_writer NOLOGIN;`
"""

from __future__ import annotations

from pgrecs.migrations.helpers import execute_sql, execute_sql_file, x_int

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

FUNCTIONS = [
    "_setting.sql",
    "_check_query_args.sql",
    "_nearest.sql",
    "_top_k.sql",
    "similar_items.sql",
    "recommend_for_items.sql",
    "popular_items.sql",
    "record_interaction.sql",
]


def upgrade() -> None:
    # 2000: the most dimensions pgvector's HNSW index takes for `vector`
    dim = x_int("dim", 384, 1, 2000)
    collab_dim = x_int("collab_dim", 64, 1, 2000)
    execute_sql("create extension if not exists vector with schema public")
    execute_sql(f"""
do $$
begin
    if (select string_to_array(extversion, '.')::int[] from pg_catalog.pg_extension
        where extname = 'vector') < array[0, 8] then
        raise exception using
            errcode = 'feature_not_supported',
            message = 'pgrecs needs pgvector 0.8 or newer (iterative index scans)',
            hint = 'ALTER EXTENSION vector UPDATE';
    end if;
    if (select extnamespace from pg_catalog.pg_extension where extname = 'vector')
        <> 'public'::regnamespace then
        raise exception using
            errcode = 'feature_not_supported',
            message = 'pgrecs expects the vector extension in schema public',
            hint = 'ALTER EXTENSION vector SET SCHEMA public';
    end if;
end
$$;

create table pgrecs.models (
    model_id    integer generated always as identity primary key,
    kind        text not null check (kind in ('embedding', 'collaborative')),
    name        text not null,
    dimension   integer not null check (dimension > 0),
    version     text,
    trained_through timestamptz,
    metrics     jsonb not null default '{{}}',
    active      boolean not null default true,
    created_at  timestamptz not null default now()
);
comment on table pgrecs.models is
    'Which model produced the stored vectors. One active row per kind; pgrecs refuses to write vectors from any other.';
create unique index models_one_active_per_kind on pgrecs.models (kind) where active;

create table pgrecs.items (
    item_id       text primary key check (item_id <> ''),
    title         text not null default '',
    description   text not null default '',
    category      text,
    tags          text[] not null default '{{}}',
    attributes    jsonb not null default '{{}}' check (jsonb_typeof(attributes) = 'object'),
    available     boolean not null default true,
    content_hash  text,
    embedding     public.vector({dim}),
    collab_embedding public.vector({collab_dim}),
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now(),
    embedded_at   timestamptz
);
comment on column pgrecs.items.content_hash is
    'sha256 of the enriched text the embedding was computed from (NULL: not embedded yet).';
create index items_embedding_hnsw on pgrecs.items
    using hnsw (embedding public.vector_cosine_ops) with (m = 16, ef_construction = 64);
create index items_collab_embedding_hnsw on pgrecs.items
    using hnsw (collab_embedding public.vector_cosine_ops) with (m = 16, ef_construction = 64);
create index items_category on pgrecs.items (category) where available;
create index items_attributes on pgrecs.items using gin (attributes jsonb_path_ops);
create index items_pending on pgrecs.items (item_id) where embedding is null;

create table pgrecs.event_types (
    event_type  text primary key check (event_type <> ''),
    weight      double precision not null check (weight <> 'NaN'::float8),
    description text not null default ''
);
insert into pgrecs.event_types (event_type, weight, description) values
    ('view',     0.5, 'item page viewed'),
    ('click',    1,   'clicked in a list'),
    ('cart',     2,   'added to cart'),
    ('purchase', 3,   'bought'),
    ('like',     2,   'explicit positive feedback'),
    ('dislike', -2,   'explicit negative feedback: pushes the user away and excludes the item');

create table pgrecs.users (
    user_id            text primary key check (user_id <> ''),
    content_vector     public.vector({dim}),
    collab_vector      public.vector({collab_dim}),
    interaction_count  integer not null default 0,
    refreshed_through  bigint,
    refreshed_at       timestamptz
);

create table pgrecs.interactions (
    interaction_id bigint generated always as identity primary key,
    user_id     text not null check (user_id <> ''),
    item_id     text not null references pgrecs.items (item_id) on delete cascade,
    event_type  text not null references pgrecs.event_types (event_type),
    occurred_at timestamptz not null default now(),
    weight      double precision check (weight <> 'NaN'::float8)
);
comment on column pgrecs.interactions.weight is
    'Optional per-event weight (e.g. a rating); NULL means the event type''s weight.';
-- Seen-exclusion probes (user_id, item_id); the user's history reads by user_id.
create index interactions_user_item on pgrecs.interactions (user_id, item_id);
create index interactions_item_time on pgrecs.interactions (item_id, occurred_at);

create table pgrecs.settings (
    name        text primary key,
    value       jsonb not null,
    description text not null default ''
);
insert into pgrecs.settings (name, value, description) values
    ('dedup_threshold', '0.95', 'results with cosine similarity >= this to a better result collapse into it'),
    ('ef_search', '100', 'hnsw.ef_search for query functions (raised to the number of candidates fetched)'),
    ('exact_scan_threshold', '20000', 'when at most this many items pass the filters, scan them exactly instead of using HNSW'),
    ('half_life_days', '30', 'recency decay of interaction weights: 0.5 ** (age / half_life)'),
    ('warm_threshold', '10', 'users with at least this many interactions are served from the collaborative space');

create table pgrecs.embedding_cache (
    content_hash text not null,
    model        text not null,
    embedding    public.vector({dim}) not null,
    created_at   timestamptz not null default now(),
    primary key (content_hash, model)
);
""")
    for name in FUNCTIONS:
        execute_sql_file("0001", name)
    execute_sql("""
do $$
begin
    if not exists (select from pg_catalog.pg_roles where rolname = 'pgrecs_reader') then
        create role pgrecs_reader nologin;
    end if;
    if not exists (select from pg_catalog.pg_roles where rolname = 'pgrecs_writer') then
        create role pgrecs_writer nologin;
    end if;
end
$$;

revoke all on all functions in schema pgrecs from public;
grant usage on schema pgrecs to pgrecs_reader, pgrecs_writer;
grant select on all tables in schema pgrecs to pgrecs_reader, pgrecs_writer;
grant execute on all functions in schema pgrecs to pgrecs_reader, pgrecs_writer;
revoke execute on function pgrecs.record_interaction(text, text, text, timestamptz) from pgrecs_reader;
grant insert, update, delete on pgrecs.items, pgrecs.interactions, pgrecs.users,
    pgrecs.embedding_cache to pgrecs_writer;
grant insert, update on pgrecs.models to pgrecs_writer;
""")


def downgrade() -> None:
    # The schema itself stays: it holds Alembic's version table. The roles stay when other
    # databases still grant them something or other roles are members of them (roles are
    # cluster-wide).
    execute_sql("""
drop function if exists pgrecs.record_interaction(text, text, text, timestamptz);
drop function if exists pgrecs.popular_items(integer, text[], jsonb, interval);
drop function if exists pgrecs.recommend_for_items(text[], double precision[], integer, text[], jsonb, text[]);
drop function if exists pgrecs.similar_items(text, integer, text[], boolean, jsonb, text);
drop function if exists pgrecs._top_k(public.vector, integer, text[], jsonb, text, text[], public.vector[]);
drop function if exists pgrecs._nearest(public.vector, integer, text[], jsonb, text, text[], boolean);
drop function if exists pgrecs._check_query_args(text, integer, jsonb);
drop function if exists pgrecs._setting(text);
drop table if exists pgrecs.interactions, pgrecs.users, pgrecs.embedding_cache, pgrecs.settings,
    pgrecs.event_types, pgrecs.items, pgrecs.models;
revoke all on schema pgrecs from pgrecs_reader, pgrecs_writer;
revoke all on all tables in schema pgrecs from pgrecs_reader, pgrecs_writer;
do $$
declare
    r text;
begin
    -- a role granted to someone (an application's login; not the ADMIN grant PostgreSQL 16+
    -- gives a CREATEROLE creator) stays: dropping it would silently revoke that membership
    foreach r in array array['pgrecs_writer', 'pgrecs_reader'] loop
        if exists (select from pg_catalog.pg_auth_members as m
                   join pg_catalog.pg_roles as g on g.oid = m.roleid
                   where g.rolname = r and not m.admin_option) then
            raise notice 'role % kept: other roles are members of it', r;
        else
            execute format('drop role if exists %I', r);
        end if;
    end loop;
exception when dependent_objects_still_exist or insufficient_privilege then
    raise notice 'roles pgrecs_reader/pgrecs_writer kept: %', sqlerrm;
end
$$;
""")
