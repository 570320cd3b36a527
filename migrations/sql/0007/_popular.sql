-- pgrecs._popular: the most engaged-with eligible items (see pgrecs.popular_items), optionally
-- leaving out what `exclude_user` has interacted with and the ids in `exclude_ids`.
--
-- All time (`since` NULL): read from pgrecs.item_popularity, which triggers keep equal to the
-- interaction log, in index order (score desc, item_id) until k eligible items are found, so
-- the cost does not grow with the log. Three groups, each read only while fewer than k rows
-- are found: items with a positive score; items with none (never touched, or a score of
-- exactly 0), by item_id; items with a negative score. With `since`: one aggregate over the
-- interactions of that window per call (the counters have no time axis).
create or replace function pgrecs._popular(
    k integer,
    categories text[],
    filter jsonb,
    since interval,
    exclude_user text,
    exclude_ids text[]
)
returns table (item_id text, score double precision)
language plpgsql
stable
security invoker
set search_path to pg_catalog, pg_temp
as $$
declare
    v_found bigint;
    v_more bigint;
begin
    if since is not null then
        return query
            select i.item_id, coalesce(p.score, 0)::float8 as score
            from pgrecs.items as i
            left join (
                select x.item_id, sum(coalesce(x.weight, e.weight)) as score
                from pgrecs.interactions as x
                join pgrecs.event_types as e on e.event_type = x.event_type
                where x.occurred_at >= now() - since
                group by x.item_id
            ) as p on p.item_id = i.item_id
            where i.available
              and (categories is null or i.category = any(categories))
              and (filter is null or i.attributes operator(pg_catalog.@>) filter)
              and (exclude_user is null or not exists (
                    select from pgrecs.interactions as s
                    where s.user_id = exclude_user and s.item_id = i.item_id))
              and (exclude_ids is null or i.item_id <> all(exclude_ids))
            order by score desc, i.item_id
            limit k;
        return;
    end if;
    return query
        select p.item_id, p.score
        from pgrecs.item_popularity as p
        join pgrecs.items as i on i.item_id = p.item_id
        where p.score > 0
          and i.available
          and (categories is null or i.category = any(categories))
          and (filter is null or i.attributes operator(pg_catalog.@>) filter)
          and (exclude_user is null or not exists (
                select from pgrecs.interactions as s
                where s.user_id = exclude_user and s.item_id = i.item_id))
          and (exclude_ids is null or i.item_id <> all(exclude_ids))
        order by p.score desc, p.item_id
        limit k;
    get diagnostics v_found = row_count;
    if v_found < k then
        return query
            select i.item_id, 0::float8
            from pgrecs.items as i
            where not exists (select from pgrecs.item_popularity as z
                              where z.item_id = i.item_id and z.score <> 0)
              and i.available
              and (categories is null or i.category = any(categories))
              and (filter is null or i.attributes operator(pg_catalog.@>) filter)
              and (exclude_user is null or not exists (
                    select from pgrecs.interactions as s
                    where s.user_id = exclude_user and s.item_id = i.item_id))
              and (exclude_ids is null or i.item_id <> all(exclude_ids))
            order by i.item_id
            limit k - v_found;
        get diagnostics v_more = row_count;
        v_found := v_found + v_more;
    end if;
    if v_found < k then
        return query
            select p.item_id, p.score
            from pgrecs.item_popularity as p
            join pgrecs.items as i on i.item_id = p.item_id
            where p.score < 0
              and i.available
              and (categories is null or i.category = any(categories))
              and (filter is null or i.attributes operator(pg_catalog.@>) filter)
              and (exclude_user is null or not exists (
                    select from pgrecs.interactions as s
                    where s.user_id = exclude_user and s.item_id = i.item_id))
              and (exclude_ids is null or i.item_id <> all(exclude_ids))
            order by p.score desc, p.item_id
            limit k - v_found;
    end if;
end
$$;
