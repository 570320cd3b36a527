-- pgrecs.similar_items: the k items nearest to an item in the content space.
--
-- Returns min(k, eligible) rows: the HNSW walk is tried first and the exact scan takes over when
-- the filters leave few items (settings.exact_scan_threshold) or the walk comes back short.
-- Near-duplicates (cosine >= settings.dedup_threshold) of a better result, or of the input item,
-- are dropped, and more candidates are fetched to make up for them.
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
set hnsw.ef_search to 100
as $$
declare
    v_query public.vector;
    v_category text;
    v_dedup float8 := coalesce(pgrecs._setting('dedup_threshold')::float8, 0.95);
    v_exact_max bigint := coalesce(pgrecs._setting('exact_scan_threshold')::bigint, 20000);
    v_ef integer := coalesce(pgrecs._setting('ef_search')::integer, 100);
    v_exact boolean;
    v_eligible bigint;
    v_n integer;
    v_got integer;
    v_ids text[];
    v_scores float8[];
    v_kept public.vector[];
    r record;
    i integer;
    v_dup boolean;
begin
    if p_item_id is null then
        raise exception using errcode = 'null_value_not_allowed',
            message = 'pgrecs.similar_items: item id must not be NULL';
    end if;
    if k is null or k < 1 or k > 1000 then
        raise exception using errcode = 'invalid_parameter_value',
            message = format('pgrecs.similar_items: k must be between 1 and 1000, got %s', coalesce(k::text, 'NULL')),
            hint = 'ask for at most 1000 rows per call';
    end if;
    if filter is not null and jsonb_typeof(filter) <> 'object' then
        raise exception using errcode = 'invalid_parameter_value',
            message = format('pgrecs.similar_items: filter must be a JSON object, got %s', filter),
            hint = 'filter is matched with attributes @> filter, e.g. ''{"brand": "acme"}''';
    end if;

    select it.embedding, it.category into v_query, v_category
    from pgrecs.items as it where it.item_id = p_item_id;
    if not found then
        raise exception using errcode = 'no_data_found',
            message = format('pgrecs.similar_items: unknown item %L', p_item_id);
    end if;
    if v_query is null then
        raise exception using errcode = 'object_not_in_prerequisite_state',
            message = format('pgrecs.similar_items: item %L has no embedding yet', p_item_id),
            hint = 'run `pgrecs embed` (or `pgrecs embed --watch`) to embed new items';
    end if;
    if same_category then
        if v_category is null then
            raise exception using errcode = 'invalid_parameter_value',
                message = format('pgrecs.similar_items: item %L has no category, same_category needs one', p_item_id);
        end if;
        categories := case when categories is null or v_category = any(categories)
                           then array[v_category] else '{}'::text[] end;
    end if;

    -- Few eligible items: an exact scan is both faster and complete. Count at most v_exact_max + 1.
    if categories is null and filter is null
       and (select c.reltuples from pg_catalog.pg_class as c
            where c.oid = 'pgrecs.items'::pg_catalog.regclass) > v_exact_max then
        v_exact := false;
    else
        select count(*) into v_eligible from (
            select from pgrecs.items as it
            where it.available and it.embedding is not null
              and (categories is null or it.category = any(categories))
              and (filter is null or it.attributes @> filter)
            limit v_exact_max + 1) as e;
        v_exact := v_eligible <= v_exact_max;
    end if;

    v_n := k + 10;
    loop
        perform set_config('hnsw.ef_search', greatest(v_ef, least(v_n, 1000))::text, true);
        v_ids := '{}'; v_scores := '{}'; v_kept := '{}'; v_got := 0;
        for r in
            select c.item_id, c.distance, c.embedding
            from pgrecs._nearest(v_query, v_n, categories, filter, exclude_seen_by,
                                 array[p_item_id], v_exact) as c
            order by c.distance
        loop
            v_got := v_got + 1;
            v_dup := (1 - (r.embedding operator(public.<=>) v_query)) >= v_dedup;
            i := 1;
            while not v_dup and i <= cardinality(v_kept) loop
                v_dup := (1 - (r.embedding operator(public.<=>) v_kept[i])) >= v_dedup;
                i := i + 1;
            end loop;
            if not v_dup and cardinality(v_ids) < k then
                v_ids := v_ids || r.item_id;
                v_scores := v_scores || (1 - r.distance);
                v_kept := v_kept || r.embedding;
            end if;
        end loop;
        if v_got < v_n and not v_exact then
            v_exact := true;  -- the walk stopped early (max_scan_tuples): finish exactly
            continue;
        end if;
        exit when cardinality(v_ids) >= k or v_got < v_n;
        v_n := v_n * 4;
    end loop;

    return query select u.id, u.score
        from unnest(v_ids, v_scores) with ordinality as u(id, score, ord) order by u.ord;
end
$$;
