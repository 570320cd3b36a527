-- pgrecs._user_vector: a user's vector in one space, computed from the live history.
--
-- The normalized sum of weight * item vector over pgrecs._history (the rule the refresh jobs
-- store in pgrecs.users). NULL when no history item has a vector in that space or the weighted
-- vectors cancel out. `space`: 'content' or 'collaborative'. Effective weights below 1e-20
-- (interactions many half-lives old) are left out: they change nothing in single precision,
-- and multiplying a vector by them could underflow it (an error).
create or replace function pgrecs._user_vector(p_user_id text, space text)
returns public.vector
language sql
stable
security invoker
set search_path to pg_catalog, pg_temp
as $$
    select case when public.vector_norm(s.total) > 1e-9 then public.l2_normalize(s.total) end
    from (
        select public.sum(array_fill(h.weight::real, array[public.vector_dims(v.vec)])::public.vector
                   operator(public.*) v.vec) as total
        from pgrecs._history(p_user_id) as h
        join pgrecs.items as i on i.item_id = h.item_id
        cross join lateral (
            select case space when 'content' then i.embedding
                              when 'collaborative' then i.collab_embedding end as vec
        ) as v
        where v.vec is not null
          and abs(h.weight) >= 1e-20  -- nothing in float4, and weight * element could underflow
    ) as s
$$;
