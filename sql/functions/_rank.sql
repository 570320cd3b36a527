-- pgrecs._rank: the k best eligible items for a query, in one or two vector spaces.
--
-- relevance = content_weight * cos(q, item) + (1 - content_weight) * cos(q_collab, item's
-- collaborative vector) - popularity_penalty * ln(1 + the item's interaction count). With
-- q_collab NULL only the content space counts; an item without a collaborative vector uses its
-- content similarity in place of the collaborative one. `source` names the space that
-- contributed more to the row.
-- A candidate is dropped when its content cosine similarity to a better result, or to one of
-- `anchors` (the caller's input items), reaches settings.dedup_threshold. With diversity > 0 the
-- results are picked greedily by MMR: score = (1 - diversity) * relevance - diversity * (the
-- highest similarity to a result already picked, floored at 0), which never increases from one
-- row to the next; with diversity = 0, score = relevance.
-- Returns min(k, eligible) rows, best first. Candidates come from pgrecs._nearest: walks of the
-- categories' own partial HNSW indexes when every requested category has one, else the walk of
-- the whole HNSW graph, or an exact scan when few items pass the filters (the path rule below)
-- or the walk comes back short; more are fetched until k survive or the eligible set is
-- exhausted.
-- The loops run over candidates (a few times k), never over the catalogue.
create or replace function pgrecs._rank(
    q public.vector,
    q_collab public.vector,
    content_weight double precision,
    k integer,
    categories text[],
    filter jsonb,
    exclude_user text,
    exclude_ids text[],
    anchors public.vector[],
    diversity double precision,
    popularity_penalty double precision,
    ef_floor integer
)
returns table (item_id text, score double precision, source text)
language plpgsql
stable
security invoker
set search_path to pg_catalog, pg_temp
set hnsw.ef_search to 100
set jit to off
as $$
declare
    v_dedup float8 := coalesce(pgrecs._setting('dedup_threshold')::float8, 0.95);
    v_exact_max bigint := coalesce(pgrecs._setting('exact_scan_threshold')::bigint, 20000);
    v_ef integer := greatest(coalesce(pgrecs._setting('ef_search')::integer, 100),
                             coalesce(ef_floor, 0));
    v_w float8 := case when q_collab is null then 1 else greatest(0, least(1, content_weight)) end;
    v_d float8 := coalesce(diversity, 0);
    v_penalty float8 := coalesce(popularity_penalty, 0);
    v_n integer := case when coalesce(diversity, 0) > 0 then greatest(3 * k, k + 10) else k + 10 end;
    v_exact boolean;
    v_per_category boolean;
    v_eligible bigint;
    v_skip bigint;
    v_seen text[];
    v_walk_user text := exclude_user;  -- what the walks exclude
    v_walk_ids text[] := exclude_ids;
    v_rows float8;
    v_partial text[];
    v_partial_rows float4[];
    v_named oid[];
    v_pass integer;
    v_got integer;
    v_space text;
    v_q public.vector;
    w_ids text[];
    w_emb public.vector[];
    w_collab public.vector[];
    w_rel float8[];
    c_ids text[];
    c_rel float8[];
    c_src text[];
    c_emb public.vector[];
    v_drop boolean[];
    v_max_sim float8[];
    v_ids text[];
    v_scores float8[];
    v_srcs text[];
    v_best integer;
    v_kept public.vector[];
    v_best_value float8;
    v_value float8;
    v_sim float8;
    n_c integer;
    a public.vector;
    j integer;
begin
    -- Choosing a path (docs/performance.md). A category filter whose every category has its
    -- own partial HNSW index walks those small graphs. Otherwise, when few items pass the
    -- filters, an exact scan of them is both complete and cheaper than a walk through the
    -- whole graph (which visits about (ef_search + skipped) / selectivity rows); the planner
    -- cannot see that, so it is decided here: exact when eligible <= exact_scan_threshold and
    -- eligible^2 <= 10 * (ef_search + skipped) * catalogue size (pg_class.reltuples).
    if categories is not null and cardinality(categories) <= 32 then
        -- Deparsing the predicates is the costly part: first only the indexes the documented
        -- DBA statement names after their category, then, when those do not cover the request,
        -- every partial HNSW index. Either way a predicate counts only as printed below.
        if v_w >= 1 then
            v_named := array(
                select pg_catalog.to_regclass(pg_catalog.format('pgrecs.%I',
                           'items_embedding_hnsw_' || left(pg_catalog.md5(g.name), 12)))::oid
                from unnest(categories) as g(name) where g.name is not null);
        end if;
        for v_pass in case when v_named is null then 2 else 1 end .. 2 loop
            select coalesce(array_agg(a.attname || ' where '
                                      || pg_catalog.pg_get_expr(x.indpred, x.indrelid)), '{}'),
                   coalesce(array_agg(ic.reltuples), '{}')
              into v_partial, v_partial_rows
            from pg_catalog.pg_index as x
            join pg_catalog.pg_class as ic on ic.oid = x.indexrelid
            join pg_catalog.pg_am as am on am.oid = ic.relam
            join pg_catalog.pg_attribute as a
              on a.attrelid = x.indrelid and a.attnum = x.indkey[0]
            where x.indrelid = 'pgrecs.items'::pg_catalog.regclass and am.amname = 'hnsw'
              and x.indpred is not null and x.indisvalid and x.indisready
              and (v_pass = 2 or x.indexrelid = any(v_named));
            v_per_category := cardinality(categories) > 0 and not exists (
                select from unnest(categories) as g(name)
                cross join unnest(case when v_w < 1 then array['embedding', 'collab_embedding']
                                       else array['embedding'] end) as col(name)
                where not (pg_catalog.format('%s where (category = %L::text)', col.name, g.name)
                           = any(v_partial)));
            exit when v_per_category;
        end loop;
        if v_per_category then  -- the eligible share: the partial indexes' sizes
            select sum(p.rows) into v_eligible
            from unnest(v_partial, v_partial_rows) as p(pred, rows)
            where p.pred in (select pg_catalog.format('embedding where (category = %L::text)',
                                                      g.name)
                             from unnest(categories) as g(name));
        end if;
    else
        v_per_category := false;
    end if;
    select nullif(greatest(c.reltuples, -1), -1) into v_rows
    from pg_catalog.pg_class as c where c.oid = 'pgrecs.items'::pg_catalog.regclass;

    -- The items a walk has to step over: the user's seen items and the excluded ids. A user's
    -- history sits around their vector (it is what the vector is made of), so the walk meets
    -- them before anything eligible; the iterative scan steps over them (a beam widened past
    -- them bought no recall on a well-built graph, docs/performance.md), but they count in
    -- the walk's cost below. For a walk of the whole graph or an exact scan the seen items are
    -- read once, into an array checked with a hashed `<> all` together with the excluded ids:
    -- cheaper than probing pgrecs.interactions for each of the hundreds of seen rows such a
    -- walk visits. A walk of the categories' partial indexes meets few of them and keeps the
    -- probe (reading the whole history would cost more), as does a history of more than
    -- 2,000 items: the array costs about 0.85 us per item whether the walk meets the item or
    -- not, and an old history lies partly away from the user's present vector.
    if exclude_user is not null and not v_per_category then
        v_seen := array(select distinct x.item_id from pgrecs.interactions as x
                        where x.user_id = exclude_user limit 2001);
        if cardinality(v_seen) > 2000 then
            v_seen := null;
            select count(distinct x.item_id) into v_skip
            from pgrecs.interactions as x where x.user_id = exclude_user;
        else
            v_walk_user := null;
            if cardinality(v_seen) > 0 then
                v_walk_ids := coalesce(exclude_ids, '{}') || v_seen;
            end if;
        end if;
    end if;
    v_skip := coalesce(v_skip, cardinality(v_seen), 0) + coalesce(cardinality(exclude_ids), 0);

    if v_per_category then
        v_exact := false;
    elsif categories is null and filter is null
          and v_rows > least(v_exact_max, 10 * (greatest(v_ef, v_n) + v_skip)) then
        v_exact := false;  -- the formula below, with every item eligible
    else
        -- available items passing the filters, embedded or not (pending items are few, and
        -- leaving them in lets the category index answer alone); stops past the threshold
        select count(*) into v_eligible from (
            select from pgrecs.items as it
            where it.available
              and (categories is null or it.category = any(categories))
              and (filter is null or it.attributes @> filter)
            limit v_exact_max + 1) as e;
    end if;
    -- In a filtered walk only the skipped items that pass the filters are in the way: about
    -- their share of the catalogue.
    if (categories is not null or filter is not null)
       and (v_per_category or v_eligible <= v_exact_max) then  -- else the count was cut short
        v_skip := ceil(v_skip * greatest(0, least(1, coalesce(v_eligible / nullif(v_rows, 0), 1))));
    end if;
    if v_exact is null then
        v_exact := v_eligible <= v_exact_max
            and (v_rows is null or v_eligible::float8 * v_eligible
                                   <= 10 * (greatest(v_ef, v_n) + v_skip)
                                      * greatest(v_rows, v_eligible));
    end if;

    loop
        perform set_config('hnsw.ef_search', least(greatest(v_ef, v_n), 1000)::text, true);
        -- The walks return the candidates' vectors: scoring reads no row again. The content
        -- walk, then (blended) the collaborative one; an item both find is scored once.
        w_ids := '{}'; w_emb := '{}'; w_collab := '{}'; w_rel := '{}';
        foreach v_space in array case when v_w < 1 then array['content', 'collaborative']
                                      else array['content'] end loop
            v_q := case v_space when 'content' then q else q_collab end;
            if v_per_category and not v_exact and cardinality(categories) > 1 then
                -- one walk per category (each on its partial index), merged
                select w_ids || coalesce(array_agg(c.item_id order by c.rel desc, c.item_id), '{}'),
                       w_emb || coalesce(array_agg(c.embedding order by c.rel desc, c.item_id),
                                         '{}'),
                       w_collab || coalesce(array_agg(c.collab_embedding
                                                      order by c.rel desc, c.item_id), '{}'),
                       w_rel || coalesce(array_agg(c.rel order by c.rel desc, c.item_id), '{}')
                  into w_ids, w_emb, w_collab, w_rel
                from (select c.*, 1 - c.distance as rel
                      from (select distinct g.name from unnest(categories) as g(name)) as g
                      cross join lateral pgrecs._nearest(v_q, v_n, array[g.name], filter,
                                                         v_walk_user, v_walk_ids, false,
                                                         v_space) as c
                      order by c.distance limit v_n) as c;
            else
                select w_ids || coalesce(array_agg(c.item_id order by c.rel desc, c.item_id), '{}'),
                       w_emb || coalesce(array_agg(c.embedding order by c.rel desc, c.item_id),
                                         '{}'),
                       w_collab || coalesce(array_agg(c.collab_embedding
                                                      order by c.rel desc, c.item_id), '{}'),
                       w_rel || coalesce(array_agg(c.rel order by c.rel desc, c.item_id), '{}')
                  into w_ids, w_emb, w_collab, w_rel
                from (select c.*, 1 - c.distance as rel
                      from pgrecs._nearest(v_q, v_n, categories, filter, v_walk_user,
                                           v_walk_ids, v_exact, v_space) as c) as c;
            end if;
            if v_space = 'content' then
                v_got := cardinality(w_ids);
            end if;
        end loop;

        if v_w >= 1 and v_penalty = 0 then
            -- content only, no penalty: relevance is the content walk's 1 - distance, in the
            -- order the walk statement gave (one space: every item once)
            c_ids := w_ids; c_rel := w_rel; c_emb := w_emb;
            c_src := array_fill('content'::text, array[cardinality(w_ids)]);
        else
            select coalesce(array_agg(s.item_id order by s.rel desc, s.item_id), '{}'),
                   coalesce(array_agg(s.rel order by s.rel desc, s.item_id), '{}'),
                   coalesce(array_agg(s.src order by s.rel desc, s.item_id), '{}'),
                   coalesce(array_agg(s.embedding order by s.rel desc, s.item_id), '{}')
              into c_ids, c_rel, c_src, c_emb
            from (
                select c.item_id, c.embedding,
                       v_w * p.sc + (1 - v_w) * p.sf - p.pen as rel,
                       case when v_w >= 1 then 'content'
                            when v_w <= 0 then 'collaborative'
                            when v_w * p.sc >= (1 - v_w) * p.sf then 'content'
                            else 'collaborative' end as src
                from (select distinct on (w.item_id) w.*  -- an item both walks found counts once
                      from unnest(w_ids, w_emb, w_collab) as w(item_id, embedding, collab_embedding)
                      order by w.item_id) as c
                -- joined whatever the penalty: a plan that does not depend on it is planned once
                -- per session, not per call
                left join pgrecs.item_popularity as ip on ip.item_id = c.item_id
                cross join lateral (
                    select 1 - (c.embedding operator(public.<=>) q) as sc,
                           coalesce(1 - (c.collab_embedding operator(public.<=>) q_collab),
                                    1 - (c.embedding operator(public.<=>) q)) as sf,
                           v_penalty * ln(1 + coalesce(ip.interaction_count, 0)) as pen
                ) as p
            ) as s;
        end if;

        -- Greedy pick: dedup against anchors and picked rows; MMR when diversity > 0.
        n_c := cardinality(c_ids);
        if v_d = 0 and not exists (
            -- Without MMR the pick takes the candidates in order and only drops near-duplicates:
            -- when no two of the first k are near-duplicates and none is one of an anchor, they
            -- are the answer (one statement instead of the loops below, about 0.4 ms)
            select from unnest(c_emb[1:k]) with ordinality as x(embedding, n)
            join unnest(c_emb[1:k] || coalesce(anchors, '{}')) with ordinality as y(embedding, n)
              on y.n > x.n
            where 1 - (x.embedding operator(public.<=>) y.embedding) >= v_dedup) then
            v_ids := c_ids[1:k]; v_scores := c_rel[1:k]; v_srcs := c_src[1:k];
        elsif v_d = 0 then
            -- In order, each candidate against the anchors and the rows kept so far, until k
            -- are kept: about k^2 / 2 distances, where comparing each kept row with every
            -- candidate left cost k times the candidates (seconds at k = 1000)
            v_ids := '{}'; v_scores := '{}'; v_srcs := '{}'; v_kept := '{}';
            for j in 1 .. n_c loop
                exit when cardinality(v_ids) >= k;
                continue when exists (
                    select from unnest(coalesce(anchors, '{}') || v_kept) as y(embedding)
                    where 1 - (c_emb[j] operator(public.<=>) y.embedding) >= v_dedup);
                v_ids := v_ids || c_ids[j];
                v_scores := v_scores || c_rel[j];
                v_srcs := v_srcs || c_src[j];
                v_kept := v_kept || c_emb[j];
            end loop;
        else  -- MMR: each pick weighs every candidate left against the rows picked
            v_drop := array_fill(false, array[n_c]);
            v_max_sim := array_fill(0::float8, array[n_c]);
            v_ids := '{}'; v_scores := '{}'; v_srcs := '{}';
            foreach a in array coalesce(anchors, '{}') loop
                for j in 1 .. n_c loop
                    if not v_drop[j] and 1 - (c_emb[j] operator(public.<=>) a) >= v_dedup then
                        v_drop[j] := true;
                    end if;
                end loop;
            end loop;
            while cardinality(v_ids) < k loop
                v_best := 0;
                for j in 1 .. n_c loop
                    continue when v_drop[j];
                    v_value := (1 - v_d) * c_rel[j] - v_d * v_max_sim[j];
                    if v_best = 0 or v_value > v_best_value then
                        v_best := j;
                        v_best_value := v_value;
                    end if;
                end loop;
                exit when v_best = 0;
                v_ids := v_ids || c_ids[v_best];
                v_scores := v_scores || v_best_value;
                v_srcs := v_srcs || c_src[v_best];
                v_drop[v_best] := true;
                for j in 1 .. n_c loop
                    continue when v_drop[j];
                    v_sim := 1 - (c_emb[j] operator(public.<=>) c_emb[v_best]);
                    if v_sim >= v_dedup then
                        v_drop[j] := true;
                    elsif v_sim > v_max_sim[j] then
                        v_max_sim[j] := v_sim;
                    end if;
                end loop;
            end loop;
        end if;

        if v_got < v_n and not v_exact then
            v_exact := true;  -- the walk stopped early (hnsw.max_scan_tuples): finish exactly
            continue;
        end if;
        exit when cardinality(v_ids) >= k or v_got < v_n;
        v_n := v_n * 4;
    end loop;

    return query select u.id, u.score, u.src
        from unnest(v_ids, v_scores, v_srcs) with ordinality as u(id, score, src, ord)
        order by u.ord;
end
$$;
