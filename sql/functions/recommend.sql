-- pgrecs.recommend: personal recommendations for a user, cold or warm, in one call.
--
-- A user with no positive interaction (unknown, new, or only negative events) gets popular items
-- (source 'popular'). Otherwise the user's vectors are the weighted means of pgrecs._history:
-- the stored ones in pgrecs.users when they cover the user's latest interaction, else computed
-- from the live history on the spot, so a click counts on the very next call and a missing or
-- stale refresh never makes the call fail. The spaces are blended by pgrecs._content_weight
-- (content leads below warm_threshold interactions, collaborative above) and ranked by
-- pgrecs._rank (near-duplicate collapse, MMR when diversity > 0, settings.popularity_penalty).
-- Items the user interacted with are excluded when exclude_seen; items with a negative
-- interaction always are. because_of: the history item contributing most (the first row of
-- pgrecs.explain; NULL when no history item is similar). Returns min(k, eligible) rows, best
-- first.
create or replace function pgrecs.recommend(
    user_id text,
    k integer default 10,
    categories text[] default null,
    filter jsonb default null,
    exclude_seen boolean default true,
    diversity double precision default 0
)
returns table (item_id text, score double precision, source text, because_of text)
language plpgsql
stable
security invoker
set search_path to pg_catalog, pg_temp
as $$
declare
    v_user text := recommend.user_id;
    v_count bigint;
    v_positive bigint;
    v_last bigint;
    v_negatives text[];
    v_content public.vector;
    v_collab public.vector;
    v_w float8;
begin
    if v_user is null then
        raise exception using errcode = 'null_value_not_allowed',
            message = 'pgrecs.recommend: user id must not be NULL';
    end if;
    perform pgrecs._check_query_args('pgrecs.recommend', k, filter);
    if exclude_seen is null then
        raise exception using errcode = 'null_value_not_allowed',
            message = 'pgrecs.recommend: exclude_seen must not be NULL';
    end if;
    if diversity is null or diversity = 'NaN' or diversity < 0 or diversity > 1 then
        raise exception using errcode = 'invalid_parameter_value',
            message = format('pgrecs.recommend: diversity must be between 0 and 1, got %s',
                             coalesce(diversity::text, 'NULL'));
    end if;

    -- The signs of pgrecs._history's weights are those of the raw weights (its recency decay is
    -- a positive factor), so the counts need no decay.
    select count(*), count(*) filter (where coalesce(x.weight, e.weight) > 0),
           max(x.interaction_id),
           array_agg(distinct x.item_id) filter (where coalesce(x.weight, e.weight) < 0)
      into v_count, v_positive, v_last, v_negatives
    from pgrecs.interactions as x
    join pgrecs.event_types as e on e.event_type = x.event_type
    where x.user_id = v_user;

    if v_positive > 0 then
        select u.content_vector, u.collab_vector into v_content, v_collab
        from pgrecs.users as u
        where u.user_id = v_user and u.refreshed_through = v_last
          and u.interaction_count = v_count;
        if v_content is null then  -- no current stored vector (or none when last refreshed)
            v_content := pgrecs._user_vector(v_user, 'content');
            v_collab := pgrecs._user_vector(v_user, 'collaborative');
        elsif v_collab is null and exists (
            select from pgrecs.models as m where m.kind = 'collaborative' and m.active) then
            v_collab := pgrecs._user_vector(v_user, 'collaborative');  -- stored before training
        end if;
    end if;

    if v_content is null then  -- cold: nothing positive, or nothing embedded yet
        return query
            select p.item_id, p.score, 'popular'::text, null::text
            from pgrecs._popular(k, categories, filter, null,
                                 case when exclude_seen then v_user end, v_negatives) as p;
        return;
    end if;

    v_w := pgrecs._content_weight(v_count, v_collab is not null);
    return query
        with r as materialized (
            select t.item_id, t.score, t.source, t.ord
            from pgrecs._rank(v_content, v_collab, v_w, k, categories, filter,
                              case when exclude_seen then v_user end,
                              case when not exclude_seen then v_negatives end,
                              null, diversity,
                              coalesce(pgrecs._setting('popularity_penalty')::float8, 0),
                              null)  -- _rank widens the beam past the seen items itself
                 with ordinality as t(item_id, score, source, ord)
        ),
        h as materialized (
            select h.item_id, h.weight, h.occurred_at
            from pgrecs._history(v_user) as h
            where h.weight > 0
        ),
        -- because_of = argmax over history items of weight * similarity (similarity <= 1),
        -- so an item whose weight is below the best score already found for every result
        -- cannot win: score the 32 heaviest items first, then only the items that can beat
        -- them. The same result as scoring the whole history, without fetching most vectors.
        top as materialized (
            select h.item_id, h.weight, h.occurred_at, i.embedding, i.collab_embedding
            from (select * from h order by h.weight desc limit 32) as h
            join pgrecs.items as i on i.item_id = h.item_id
            where i.embedding is not null
        ),
        bound as (
            select coalesce(min(b.best), 0) * 0.999999 as weight
            from (
                select coalesce(max(t.weight * s.similarity) filter (where s.similarity > 0), 0)
                       as best
                from r
                join pgrecs.items as ri on ri.item_id = r.item_id
                cross join top as t
                cross join lateral (
                    select case when v_w >= 1
                                then 1 - (t.embedding operator(public.<=>) ri.embedding)
                                else v_w * (1 - (t.embedding operator(public.<=>) ri.embedding))
                                     + (1 - v_w) * coalesce(
                                         1 - (t.collab_embedding operator(public.<=>)
                                              ri.collab_embedding),
                                         1 - (t.embedding operator(public.<=>) ri.embedding))
                           end as similarity
                ) as s
                group by r.item_id
            ) as b
            having count(*) = (select count(*) from r)
        ),
        hc as materialized (
            select h.item_id, h.weight, h.occurred_at, i.embedding, i.collab_embedding
            from h
            join pgrecs.items as i on i.item_id = h.item_id
            where i.embedding is not null
              and h.weight >= coalesce((select b.weight from bound as b), 0)
        )
        select r.item_id, r.score, r.source, b.item_id
        from r
        join pgrecs.items as ri on ri.item_id = r.item_id
        left join lateral (
            select h.item_id
            from hc as h
            cross join lateral (
                select case when v_w >= 1  -- content only: one distance per pair
                            then 1 - (h.embedding operator(public.<=>) ri.embedding)
                            else v_w * (1 - (h.embedding operator(public.<=>) ri.embedding))
                                 + (1 - v_w) * coalesce(
                                     1 - (h.collab_embedding operator(public.<=>)
                                          ri.collab_embedding),
                                     1 - (h.embedding operator(public.<=>) ri.embedding))
                       end as similarity
            ) as s
            where s.similarity > 0
            order by h.weight * s.similarity desc, h.occurred_at desc, h.item_id
            limit 1
        ) as b on true
        order by r.ord;
end
$$;
