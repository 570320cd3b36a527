-- pgrecs._users_stale: trigger on pgrecs.event_types (statement, after UPDATE) and
-- pgrecs.settings (row, after INSERT, UPDATE or DELETE). An event type's weight and the
-- half_life_days setting enter every stored user vector, so changing them marks every stored
-- row stale (refreshed_through = NULL, one write per stored user): recommend computes the
-- vectors from the live history with the new rule until `pgrecs refresh` stores them again.
-- The advisory lock is the one pgrecs._interactions_changed takes, for the same reason.
-- NOTIFY pgrecs_interactions with an empty payload makes `pgrecs refresh --watch` catch up on
-- every stale user.
create or replace function pgrecs._users_stale()
returns trigger
language plpgsql
volatile
security invoker
set search_path to pg_catalog, pg_temp
as $$
begin
    if tg_table_name = 'event_types' then
        if not exists (
            select from old_rows as o full join new_rows as n on n.event_type = o.event_type
            where o.weight is distinct from n.weight
        ) then
            return null;
        end if;
    elsif (old.name is distinct from 'half_life_days'
           and new.name is distinct from 'half_life_days')
          or (old.name, old.value) is not distinct from (new.name, new.value) then
        return null;
    end if;
    perform pg_catalog.pg_advisory_xact_lock(123589603189620);
    update pgrecs.users set refreshed_through = null where refreshed_through is not null;
    perform pg_catalog.pg_notify('pgrecs_interactions', '');
    return null;
end
$$;
