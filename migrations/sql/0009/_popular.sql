-- pgrecs._popular: the most engaged-with eligible items (see pgrecs.popular_items), optionally
-- leaving out what `exclude_user` has interacted with and the ids in `exclude_ids`.
--
-- Three groups, each read only while fewer than k rows are found: items with a positive score;
-- items with none (never touched, or a score of exactly 0), by item_id; items with a negative
-- score. All time (`since` NULL): the scores are read from pgrecs.item_popularity, which
-- triggers keep equal to the interaction log, in index order (score desc, item_id) until k
-- eligible items are found, so the cost does not grow with the log. With `since`: one aggregate
-- over the interactions of that window per call (the counters have no time axis), sorted by
-- score; the items are then read in that order until k pass the filters, so the rest of the
-- catalogue is not read. Only when fewer than k eligible items scored positive, a second pass
-- collects the window's nonzero scores for the other two groups.
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
    v_top text[];
    v_top_scores float8[];
    v_ids text[];
    v_scores float8[];
begin
    if since is not null then
        -- the window's eligible items with a positive score, best first
        select coalesce(array_agg(t.item_id order by t.score desc, t.item_id), '{}'),
               coalesce(array_agg(t.score order by t.score desc, t.item_id), '{}')
          into v_top, v_top_scores
        from (
            select p.item_id, p.score
            from (select x.item_id, sum(coalesce(x.weight, e.weight))::float8 as score
                  from pgrecs.interactions as x
                  join pgrecs.event_types as e on e.event_type = x.event_type
                  where x.occurred_at >= now() - since
                  group by x.item_id
                  order by 2 desc, 1) as p
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
            limit k
        ) as t;
        return query
            select t.item_id, t.score from unnest(v_top, v_top_scores) as t(item_id, score);
        v_found := cardinality(v_top);
        if v_found < k then
            -- every item of the window with a nonzero score (and those returned above): the
            -- untouched items come next, by item_id, then the negative scores
            select coalesce(array_agg(w.item_id), '{}') || v_top,
                   coalesce(array_agg(w.score), '{}') || v_top_scores
              into v_ids, v_scores
            from (select x.item_id, sum(coalesce(x.weight, e.weight))::float8 as score
                  from pgrecs.interactions as x
                  join pgrecs.event_types as e on e.event_type = x.event_type
                  where x.occurred_at >= now() - since
                  group by x.item_id) as w
            where w.score <> 0;
            return query
                select i.item_id, 0::float8
                from pgrecs.items as i
                where i.item_id <> all(v_ids)
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
                select w.item_id, w.score
                from unnest(v_ids, v_scores) as w(item_id, score)
                join pgrecs.items as i on i.item_id = w.item_id
                where w.score < 0
                  and i.available
                  and (categories is null or i.category = any(categories))
                  and (filter is null or i.attributes operator(pg_catalog.@>) filter)
                  and (exclude_user is null or not exists (
                        select from pgrecs.interactions as s
                        where s.user_id = exclude_user and s.item_id = i.item_id))
                  and (exclude_ids is null or i.item_id <> all(exclude_ids))
                order by w.score desc, w.item_id
                limit k - v_found;
        end if;
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
