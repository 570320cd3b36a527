-- pgrecs.recommend: personal recommendations for a user, cold or warm, in one call.
--
-- A user with no positive interaction (unknown, new, or only negative events) gets popular items
-- (source 'popular'). Otherwise the user's vectors are the weighted means of pgrecs._history:
-- the stored ones in pgrecs.users when they cover the user's interactions as they are now (same
-- count, newest stamp and stamp digest: see pgrecs._interactions_revised), else computed
-- from the live history on the spot, so a click counts on the very next call and a missing or
-- stale refresh never makes the call fail. The spaces are blended by pgrecs._content_weight
-- (content leads below warm_threshold interactions, collaborative above) and ranked by
-- pgrecs._rank (near-duplicate collapse, MMR when diversity > 0, settings.popularity_penalty).
-- Items the user interacted with are excluded when exclude_seen; items with a negative
-- interaction always are. because_of: the history item contributing most (weight x similarity;
-- ties: the more recent, then the smaller id) among the user's settings.because_of_history
-- heaviest positive interactions (0: all of them; ties: the more recent, then the later
-- recorded), i.e. the first row of pgrecs.explain whenever the user has no more positive
-- interactions than that; NULL when no such item is similar. A current stored row carries that
-- list (pgrecs.users.because_of_items, _at and _weights, written by the refresh with the same
-- rule), so a refreshed user's call neither weighs the history nor reads the interactions;
-- a row written before revision 0011 has only the interaction ids, read by primary key; otherwise
-- one pass over the history yields the list.
-- Returns min(k, eligible) rows, best first.
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
    v_digest numeric;
    v_positive bigint;
    v_last bigint;
    v_negatives text[];
    v_content public.vector;
    v_collab public.vector;
    v_w float8;
    v_limit integer;
    v_stored_limit integer;
    v_live boolean := false;
    v_top_ids text[];
    v_top_interactions bigint[];
    v_top_weights float8[];
    v_top_at timestamptz[];
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

    select count(*), max(t.stamp), sum(hashint8extended(t.stamp, t.stamp >> 32))
      into v_count, v_last, v_digest
    from pgrecs.interactions as x
    cross join lateral (select greatest(x.interaction_id, x.revised)) as t (stamp)
    where x.user_id = v_user;
    if v_count > 0 then
        select u.content_vector, u.collab_vector, u.because_of_interactions,
               u.because_of_weights, u.because_of_history, u.because_of_items, u.because_of_at
          into v_content, v_collab, v_top_interactions, v_top_weights, v_stored_limit,
               v_top_ids, v_top_at
        from pgrecs.users as u
        where u.user_id = v_user and u.refreshed_through = v_last
          and u.interaction_count = v_count and u.history_digest = v_digest;
    end if;
    -- The stored row is current and its list holds positive interactions: the user is warm,
    -- and the list is the one below if it was made with today's setting (read here, not before
    -- the argument checks: a setting only fails the path that uses it).
    if v_content is not null and cardinality(v_top_interactions) > 0
       and v_stored_limit = coalesce(pgrecs._setting('because_of_history')::integer, 100) then
        if v_top_ids is null or v_top_at is null then
            -- a row written before revision 0011: it lists the interactions only; the row is
            -- current, so they are all there (same snapshot as the count)
            select array_agg(x.item_id order by h.n), array_agg(x.occurred_at order by h.n)
              into v_top_ids, v_top_at
            from unnest(v_top_interactions) with ordinality as h(interaction_id, n)
            join pgrecs.interactions as x on x.interaction_id = h.interaction_id;
        end if;
        if not exclude_seen then
            select array_agg(distinct h.item_id) into v_negatives
            from pgrecs._history(v_user) as h where h.weight < 0;
        end if;
    else
        -- One pass over the history: the number of positive interactions, the negative items,
        -- and the heaviest positive interactions because_of compares the results with.
        select count(*) filter (where h.weight > 0),
               array_agg(distinct h.item_id) filter (where h.weight < 0),
               array_agg(h.item_id order by h.weight desc, h.occurred_at desc,
                                            h.interaction_id desc) filter (where h.weight > 0),
               array_agg(h.weight order by h.weight desc, h.occurred_at desc,
                                           h.interaction_id desc) filter (where h.weight > 0),
               array_agg(h.occurred_at order by h.weight desc, h.occurred_at desc,
                                                h.interaction_id desc) filter (where h.weight > 0)
          into v_positive, v_negatives, v_top_ids, v_top_weights, v_top_at
        from pgrecs._history(v_user) as h;
        if v_positive > 0 then
            if v_content is null then  -- no current stored vector (or none when last refreshed)
                v_content := pgrecs._user_vector(v_user, 'content');
                v_collab := pgrecs._user_vector(v_user, 'collaborative');
                v_live := true;
            end if;
            v_limit := coalesce(pgrecs._setting('because_of_history')::integer, 100);
            if v_limit > 0 then
                v_top_ids := v_top_ids[1:v_limit];
                v_top_weights := v_top_weights[1:v_limit];
                v_top_at := v_top_at[1:v_limit];
            end if;
        else
            v_content := null;  -- nothing positive: the cold path, whatever is stored
        end if;
    end if;
    if v_content is not null and not v_live and v_collab is null and exists (
        select from pgrecs.models as m where m.kind = 'collaborative' and m.active) then
        v_collab := pgrecs._user_vector(v_user, 'collaborative');  -- stored before training
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
        -- because_of = argmax over the heaviest history items of weight * similarity; its
        -- value is positive exactly when the similarity is (weights here are positive)
        hc as materialized (
            select h.item_id, h.weight, h.occurred_at, i.embedding, i.collab_embedding
            from unnest(v_top_ids, v_top_weights, v_top_at) as h(item_id, weight, occurred_at)
            join pgrecs.items as i on i.item_id = h.item_id
            where i.embedding is not null
        )
        select r.item_id, r.score, r.source, case when b.contribution > 0 then b.item_id end
        from r
        join pgrecs.items as ri on ri.item_id = r.item_id
        left join lateral (
            select h.item_id,
                   h.weight * case when v_w >= 1  -- content only: one distance per pair
                                   then 1 - (h.embedding operator(public.<=>) ri.embedding)
                                   else v_w * (1 - (h.embedding operator(public.<=>) ri.embedding))
                                        + (1 - v_w) * coalesce(
                                            1 - (h.collab_embedding operator(public.<=>)
                                                 ri.collab_embedding),
                                            1 - (h.embedding operator(public.<=>) ri.embedding))
                              end as contribution
            from hc as h
            order by 2 desc, h.occurred_at desc, h.item_id
            limit 1
        ) as b on true
        order by r.ord;
end
$$;
