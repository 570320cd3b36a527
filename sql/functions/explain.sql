-- pgrecs.explain: which of a user's interactions pull an item up in their recommendations.
--
-- One row per interaction with a positive effective weight (pgrecs._history) whose item is
-- similar to p_item_id, ordered by contribution = weight * similarity, largest first.
-- similarity blends the spaces as pgrecs.recommend does for this user. An unknown user, or one
-- with no positive interaction, has no rows. recommend's because_of is the first row's item.
create or replace function pgrecs.explain(user_id text, p_item_id text)
returns table (
    history_item_id text,
    event_type text,
    occurred_at timestamptz,
    weight double precision,
    similarity double precision
)
language plpgsql
stable
security invoker
set search_path to pg_catalog, pg_temp
as $$
declare
    v_user text := explain.user_id;
    v_target record;
    v_w float8;
begin
    if v_user is null or p_item_id is null then
        raise exception using errcode = 'null_value_not_allowed',
            message = 'pgrecs.explain: user id and item id must not be NULL';
    end if;
    select i.embedding, i.collab_embedding into v_target
    from pgrecs.items as i where i.item_id = p_item_id;
    if not found then
        raise exception using errcode = 'no_data_found',
            message = format('pgrecs.explain: unknown item %L', p_item_id);
    end if;
    if v_target.embedding is null then
        raise exception using errcode = 'object_not_in_prerequisite_state',
            message = format('pgrecs.explain: item %L has no embedding yet', p_item_id),
            hint = 'run `pgrecs embed` to embed new items';
    end if;
    v_w := pgrecs._content_weight(
        (select count(*) from pgrecs.interactions as x where x.user_id = v_user),
        pgrecs._user_vector(v_user, 'collaborative') is not null);

    return query
        select s.item_id, s.event_type, s.occurred_at, s.weight, s.similarity
        from (
            select h.item_id, h.event_type, h.occurred_at, h.weight,
                   v_w * (1 - (i.embedding operator(public.<=>) v_target.embedding))
                   + (1 - v_w) * coalesce(
                       1 - (i.collab_embedding operator(public.<=>) v_target.collab_embedding),
                       1 - (i.embedding operator(public.<=>) v_target.embedding)) as similarity
            from pgrecs._history(v_user) as h
            join pgrecs.items as i on i.item_id = h.item_id
            where h.weight > 0 and i.embedding is not null
        ) as s
        where s.similarity > 0
        order by s.weight * s.similarity desc, s.occurred_at desc, s.item_id;
end
$$;
