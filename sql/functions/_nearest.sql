-- pgrecs._nearest: up to n eligible items nearest to q in one vector space, nearest first,
-- with both of their vectors (the caller scores them without reading the rows again).
--
-- `space` is 'content' (items.embedding) or 'collaborative' (items.collab_embedding).
-- Eligible: available, content-embedded, in `categories` (when given), attributes @> `filter`
-- (when given), not interacted with by `exclude_user` (when given), not in `exclude_ids`.
-- `exact` = false walks the HNSW index with pgvector's iterative scan (filters are applied during
-- the walk, which continues until n rows pass or hnsw.max_scan_tuples is reached, so it may
-- return fewer than n); `exact` = true scans the eligible rows and sorts them (the `+ 0` keeps the
-- planner off the HNSW index; the category and attribute indexes still apply), so it returns
-- min(n, eligible) rows. Callers use the exact path when the index path comes back short.
-- The statement is built with only the predicates in use, so each call gets a plan for its own
-- filters (and a one-category filter can use that category's partial HNSW index); all values
-- are passed as parameters. JIT is off: an exact scan's cost estimate can pass jit_above_cost,
-- and compiling costs more than the scan.
create or replace function pgrecs._nearest(
    q public.vector,
    n integer,
    categories text[],
    filter jsonb,
    exclude_user text,
    exclude_ids text[],
    exact boolean,
    space text
)
returns table (
    item_id text,
    distance double precision,
    embedding public.vector,
    collab_embedding public.vector
)
language plpgsql
stable
security invoker
set search_path to pg_catalog, pg_temp
set hnsw.iterative_scan to relaxed_order
set jit to off
as $$
declare
    v_column text := case space when 'content' then 'embedding'
                                when 'collaborative' then 'collab_embedding' end;
    v_distance text;
    stmt text;
begin
    if v_column is null then
        raise exception using errcode = 'invalid_parameter_value',
            message = format('pgrecs._nearest: unknown vector space %L', space);
    end if;
    v_distance := format('(i.%I operator(public.<=>) $1)', v_column);
    stmt := 'select i.item_id, ' || v_distance || '::float8 as distance,'
        || ' i.embedding, i.collab_embedding from pgrecs.items as i'
        || ' where i.available and i.embedding is not null';
    if space = 'collaborative' then
        stmt := stmt || ' and i.collab_embedding is not null';
    end if;
    if categories is not null then
        stmt := stmt || ' and i.category = any($3)';
    end if;
    if filter is not null then
        stmt := stmt || ' and i.attributes operator(pg_catalog.@>) $4';
    end if;
    if exclude_user is not null then
        -- A walk probes the user's interactions for each row it visits; `offset 0` keeps the
        -- probe a subplan instead of an anti-join, which costs about 0.3 ms more to plan on every
        -- call and runs the same probes. An exact scan lets the planner pick the join.
        stmt := stmt || ' and not exists (select from pgrecs.interactions as x'
            ' where x.user_id = $5 and x.item_id = i.item_id'
            || case when exact then ')' else ' offset 0)' end;
    end if;
    if exclude_ids is not null then
        stmt := stmt || ' and i.item_id <> all($6)';
    end if;
    if exact then
        stmt := stmt || ' order by ' || v_distance || ' + 0 limit $2';
    else
        -- relaxed_order may return rows slightly out of order: re-sort what the walk found.
        stmt := 'select * from (' || stmt || ' order by ' || v_distance
            || ' limit $2) as c order by c.distance';
    end if;
    return query execute stmt using q, n, categories, filter, exclude_user, exclude_ids;
end
$$;
