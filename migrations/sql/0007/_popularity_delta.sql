-- pgrecs._popularity_delta: statement trigger on pgrecs.interactions (insert, update, delete)
-- that keeps pgrecs.item_popularity equal to the interaction log: per item, the number of
-- interactions and the sum of their effective weights (the row's own weight, else its event
-- type's). One aggregate per statement over its transition tables, so a bulk COPY costs one
-- pass. Removed interactions only update existing rows: an item being deleted cascades to its
-- interactions and may already have lost its row. New rows are upserted in item_id order, so
-- concurrent statements lock the counters they share in the same order. A count back at zero
-- sets the score to exactly 0 (no float residue).
create or replace function pgrecs._popularity_delta()
returns trigger
language plpgsql
volatile
security invoker
set search_path to pg_catalog, pg_temp
as $$
begin
    if tg_op in ('UPDATE', 'DELETE') then
        update pgrecs.item_popularity as p
        set interaction_count = p.interaction_count - d.n,
            score = case when p.interaction_count = d.n then 0 else p.score - d.score end
        from (
            select o.item_id, count(*) as n, sum(coalesce(o.weight, e.weight)) as score
            from old_rows as o
            join pgrecs.event_types as e on e.event_type = o.event_type
            group by o.item_id
        ) as d
        where p.item_id = d.item_id;
    end if;
    if tg_op in ('INSERT', 'UPDATE') then
        insert into pgrecs.item_popularity as p (item_id, interaction_count, score)
        select n.item_id, count(*), sum(coalesce(n.weight, e.weight))
        from new_rows as n
        join pgrecs.event_types as e on e.event_type = n.event_type
        group by n.item_id
        order by n.item_id
        on conflict (item_id) do update
            set interaction_count = p.interaction_count + excluded.interaction_count,
                score = p.score + excluded.score;
    end if;
    return null;
end
$$;
