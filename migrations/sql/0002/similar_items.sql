-- pgrecs.similar_items: the k items nearest to an item in the content space.
--
-- Returns min(k, eligible) rows, best first (see pgrecs._rank for how). Near-duplicates of a
-- better result, or of the input item itself, are dropped.
create or replace function pgrecs.similar_items(
    p_item_id text,
    k integer default 10,
    categories text[] default null,
    same_category boolean default false,
    filter jsonb default null,
    exclude_seen_by text default null
)
returns table (item_id text, score double precision)
language plpgsql
stable
security invoker
set search_path to pg_catalog, pg_temp
as $$
declare
    v_query public.vector;
    v_category text;
begin
    if p_item_id is null then
        raise exception using errcode = 'null_value_not_allowed',
            message = 'pgrecs.similar_items: item id must not be NULL';
    end if;
    perform pgrecs._check_query_args('pgrecs.similar_items', k, filter);

    select it.embedding, it.category into v_query, v_category
    from pgrecs.items as it where it.item_id = p_item_id;
    if not found then
        raise exception using errcode = 'no_data_found',
            message = format('pgrecs.similar_items: unknown item %L', p_item_id);
    end if;
    if v_query is null then
        raise exception using errcode = 'object_not_in_prerequisite_state',
            message = format('pgrecs.similar_items: item %L has no embedding yet', p_item_id),
            hint = 'run `pgrecs embed` to embed new items';
    end if;
    if same_category then
        if v_category is null then
            raise exception using errcode = 'invalid_parameter_value',
                message = format('pgrecs.similar_items: item %L has no category, same_category needs one', p_item_id);
        end if;
        categories := case when categories is null or v_category = any(categories)
                           then array[v_category] else '{}'::text[] end;
    end if;

    return query select t.item_id, t.score
        from pgrecs._rank(v_query, null, 1, k, categories, filter, exclude_seen_by,
                          array[p_item_id], array[v_query], 0, 0, null) as t;
end
$$;
