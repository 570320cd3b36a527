-- pgrecs._popularity_recount: statement trigger that rebuilds pgrecs.item_popularity from the
-- whole interaction log, after the log is truncated or an event type's weight changes (every
-- interaction without its own weight then scores differently). Rare, administrative events:
-- it takes a SHARE lock on pgrecs.interactions (writers wait; readers do not) so no interaction
-- lands between the count and the rebuild. An update of event types that changes no weight
-- does nothing.
create or replace function pgrecs._popularity_recount()
returns trigger
language plpgsql
volatile
security invoker
set search_path to pg_catalog, pg_temp
as $$
begin
    if tg_op = 'UPDATE' then  -- (a TRUNCATE trigger has no transition tables to plan)
        if not exists (
            select from old_rows as o join new_rows as n on n.event_type = o.event_type
            where n.weight is distinct from o.weight) then
            return null;
        end if;
    end if;
    lock table pgrecs.interactions in share mode;
    delete from pgrecs.item_popularity;
    insert into pgrecs.item_popularity (item_id, interaction_count, score)
    select x.item_id, count(*), sum(coalesce(x.weight, e.weight))
    from pgrecs.interactions as x
    join pgrecs.event_types as e on e.event_type = x.event_type
    group by x.item_id;
    return null;
end
$$;
