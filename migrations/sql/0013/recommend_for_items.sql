-- pgrecs.recommend_for_items: recommendations for an anonymous session from the items in it.
--
-- The query vector is the weighted sum of the input items' content vectors (weights default to 1)
-- minus the sum of the negative items' vectors (scores are cosine, so its length does not
-- matter; the sum is scaled so the largest coefficient is 1). weights pair with item_ids by
-- position: a one-dimensional array indexed from 1, as long as item_ids. Input and negative
-- items are never returned; near-duplicates of an input item or of a better result are dropped.
-- Returns min(k, eligible) rows, best first.
create or replace function pgrecs.recommend_for_items(
    item_ids text[],
    weights double precision[] default null,
    k integer default 10,
    categories text[] default null,
    filter jsonb default null,
    negative_item_ids text[] default null
)
returns table (item_id text, score double precision)
language plpgsql
stable
security invoker
set search_path to pg_catalog, pg_temp
as $$
declare
    v_all text[];
    v_missing text[];
    v_query public.vector;
    v_anchors public.vector[];
    v_scale float8;
begin
    if item_ids is null or cardinality(item_ids) = 0 then
        raise exception using errcode = 'invalid_parameter_value',
            message = 'pgrecs.recommend_for_items: item_ids must name at least one item',
            hint = 'for a session with no items, use pgrecs.popular_items';
    end if;
    if array_ndims(item_ids) > 1 or array_ndims(negative_item_ids) > 1 then
        raise exception using errcode = 'invalid_parameter_value',
            message = format('pgrecs.recommend_for_items: item_ids and negative_item_ids must be'
                             ' one-dimensional arrays, got %s and %s',
                             pg_catalog.array_dims(item_ids),
                             coalesce(pg_catalog.array_dims(negative_item_ids), 'NULL'));
    end if;
    v_all := item_ids || coalesce(negative_item_ids, '{}');
    if array_position(v_all, null) is not null then
        raise exception using errcode = 'null_value_not_allowed',
            message = 'pgrecs.recommend_for_items: item ids must not be NULL';
    end if;
    if weights is not null and cardinality(weights) <> cardinality(item_ids) then
        raise exception using errcode = 'invalid_parameter_value',
            message = format('pgrecs.recommend_for_items: %s weights for %s items',
                             cardinality(weights), cardinality(item_ids));
    end if;
    if weights is not null and (array_ndims(weights) <> 1 or array_lower(weights, 1) <> 1) then
        raise exception using errcode = 'invalid_parameter_value',
            message = format('pgrecs.recommend_for_items: weights must be a one-dimensional array'
                             ' indexed from 1, got %s', pg_catalog.array_dims(weights));
    end if;
    if exists (select from unnest(weights) as w where w is null or w = 'NaN' or w in ('Infinity', '-Infinity')) then
        raise exception using errcode = 'invalid_parameter_value',
            message = 'pgrecs.recommend_for_items: weights must be finite numbers';
    end if;
    perform pgrecs._check_query_args('pgrecs.recommend_for_items', k, filter);

    select array_agg(a.id order by a.id) into v_missing
    from unnest(v_all) as a(id)
    where not exists (select from pgrecs.items as i where i.item_id = a.id);
    if v_missing is not null then
        raise exception using errcode = 'no_data_found',
            message = format('pgrecs.recommend_for_items: unknown item(s) %s', v_missing);
    end if;
    select array_agg(a.id order by a.id) into v_missing
    from unnest(v_all) as a(id)
    join pgrecs.items as i on i.item_id = a.id
    where i.embedding is null;
    if v_missing is not null then
        raise exception using errcode = 'object_not_in_prerequisite_state',
            message = format('pgrecs.recommend_for_items: item(s) %s have no embedding yet', v_missing),
            hint = 'run `pgrecs embed` to embed new items';
    end if;

    -- Weighted sum, dimension by dimension (input lists are short), scaled so the largest
    -- coefficient is 1 (cosine ignores the length; huge or tiny weights then neither overflow
    -- nor underflow single precision); a coefficient below 1e-30 of the largest is 0 (compared
    -- by logarithms: dividing or multiplying such numbers underflows double precision, which
    -- PostgreSQL raises as an error), and so are sums below 1e-30.
    v_scale := greatest(coalesce((select max(abs(w)) from unnest(weights) as w), 1),
                        case when cardinality(negative_item_ids) > 0 then 1 else 0 end);
    if v_scale = 0 then  -- every weight 0 and no negative item: the sum is zero anyway
        v_scale := 1;
    end if;
    select array_agg(s.value order by s.dim)::public.vector into v_query
    from (
        select u.dim,
               (case when abs(sum(w.weight * u.value)) < 1e-30 then 0
                     else sum(w.weight * u.value) end)::real as value
        from (
            select r.id,
                   case when r.raw = 0 or ln(abs(r.raw)) - ln(v_scale) < -69 then 0
                        else r.raw / v_scale end as weight
            from (
                select p.id, coalesce(p.weight, 1) as raw
                from unnest(item_ids, weights) as p(id, weight)
                union all
                select n.id, -1 from unnest(negative_item_ids) as n(id)
            ) as r
        ) as w
        join pgrecs.items as i on i.item_id = w.id
        cross join lateral unnest(i.embedding::real[]) with ordinality as u(value, dim)
        group by u.dim
    ) as s;
    if public.vector_norm(v_query) < 1e-9 then
        raise exception using errcode = 'invalid_parameter_value',
            message = 'pgrecs.recommend_for_items: the weighted items cancel out (zero vector)';
    end if;
    select array_agg(i.embedding) into v_anchors
    from pgrecs.items as i where i.item_id = any(item_ids);

    return query select t.item_id, t.score
        from pgrecs._rank(v_query, null, 1, k, categories, filter, null, v_all, v_anchors,
                          0, 0, null) as t;
end
$$;
