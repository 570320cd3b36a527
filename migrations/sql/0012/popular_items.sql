-- pgrecs.popular_items: the most engaged-with items, for cold users and "trending" lists.
--
-- score = sum of interaction weights (the row's own weight, else its event type's), over the
-- interactions of the last `since` (all time when NULL). Items nobody touched score 0 and still
-- count (below positive, above negative scores), so the call returns min(k, eligible) rows.
-- Ties: item_id.
-- All time (`since` NULL) is read from pgrecs.item_popularity, kept by triggers: the cost does
-- not grow with the log. A `since` window aggregates that window's interactions per call: cache
-- it in your service for high request rates.
create or replace function pgrecs.popular_items(
    k integer default 10,
    categories text[] default null,
    filter jsonb default null,
    since interval default null
)
returns table (item_id text, score double precision)
language plpgsql
stable
security invoker
set search_path to pg_catalog, pg_temp
as $$
begin
    perform pgrecs._check_query_args('pgrecs.popular_items', k, filter);
    if since is not null and since <= interval '0' then
        raise exception using errcode = 'invalid_parameter_value',
            message = format('pgrecs.popular_items: since must be a positive interval, got %s', since);
    end if;
    -- a window reaching before the earliest timestamp PostgreSQL has covers the whole log
    since := least(since, now() - '4714-11-24 00:00:00+00 BC'::timestamptz);
    return query
        select p.item_id, p.score from pgrecs._popular(k, categories, filter, since, null, null) as p;
end
$$;
