-- pgrecs._popular: the most engaged-with eligible items (see pgrecs.popular_items), optionally
-- leaving out what `exclude_user` has interacted with and the ids in `exclude_ids`.
create or replace function pgrecs._popular(
    k integer,
    categories text[],
    filter jsonb,
    since interval,
    exclude_user text,
    exclude_ids text[]
)
returns table (item_id text, score double precision)
language sql
stable
security invoker
set search_path to pg_catalog, pg_temp
as $$
    select i.item_id, coalesce(p.score, 0)::float8 as score
    from pgrecs.items as i
    left join (
        select x.item_id, sum(coalesce(x.weight, e.weight)) as score
        from pgrecs.interactions as x
        join pgrecs.event_types as e on e.event_type = x.event_type
        where since is null or x.occurred_at >= now() - since
        group by x.item_id
    ) as p on p.item_id = i.item_id
    where i.available
      and (categories is null or i.category = any(categories))
      and (filter is null or i.attributes @> filter)
      and (exclude_user is null or not exists (
            select from pgrecs.interactions as s
            where s.user_id = exclude_user and s.item_id = i.item_id))
      and (exclude_ids is null or i.item_id <> all(exclude_ids))
    order by score desc, i.item_id
    limit k
$$;
