-- pgrecs._top_k: the k best eligible items for a query vector, after near-duplicate collapse.
--
-- Returns min(k, eligible) rows, nearest first, score = cosine similarity. A candidate is dropped
-- when its cosine similarity to a better result, or to one of `anchors` (the caller's input
-- items), reaches settings.dedup_threshold. Candidates come from pgrecs._nearest: the HNSW walk
-- first, the exact scan when few items pass the filters (settings.exact_scan_threshold) or the
-- walk comes back short; more are fetched until k survive or the eligible set is exhausted.
-- The loop runs over candidates (about k + 10 of them), never over the catalogue.
create or replace function pgrecs._top_k(
    q public.vector,
    k integer,
    categories text[],
    filter jsonb,
    exclude_user text,
    exclude_ids text[],
    anchors public.vector[]
)
returns table (item_id text, score double precision)
language plpgsql
stable
security invoker
set search_path to pg_catalog, pg_temp
set hnsw.ef_search to 100
as $$
declare
    v_dedup float8 := coalesce(pgrecs._setting('dedup_threshold')::float8, 0.95);
    v_exact_max bigint := coalesce(pgrecs._setting('exact_scan_threshold')::bigint, 20000);
    v_ef integer := coalesce(pgrecs._setting('ef_search')::integer, 100);
    v_exact boolean;
    v_eligible bigint;
    v_n integer := k + 10;
    v_got integer;
    v_ids text[];
    v_scores float8[];
    v_kept public.vector[];
    r record;
    i integer;
    v_dup boolean;
begin
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

    loop
        perform set_config('hnsw.ef_search', greatest(v_ef, least(v_n, 1000))::text, true);
        v_ids := '{}'; v_scores := '{}'; v_kept := coalesce(anchors, '{}'); v_got := 0;
        for r in
            select c.item_id, c.distance, c.embedding
            from pgrecs._nearest(q, v_n, categories, filter, exclude_user, exclude_ids, v_exact) as c
            order by c.distance
        loop
            v_got := v_got + 1;
            v_dup := false;
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
            v_exact := true;  -- the walk stopped early (hnsw.max_scan_tuples): finish exactly
            continue;
        end if;
        exit when cardinality(v_ids) >= k or v_got < v_n;
        v_n := v_n * 4;
    end loop;

    return query select u.id, u.score
        from unnest(v_ids, v_scores) with ordinality as u(id, score, ord) order by u.ord;
end
$$;
