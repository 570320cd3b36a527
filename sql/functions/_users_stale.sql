-- pgrecs._users_stale: trigger on pgrecs.event_types (statement, after UPDATE),
-- pgrecs.settings (row, after INSERT, UPDATE or DELETE; statement, after TRUNCATE) and
-- pgrecs.interactions (after TRUNCATE). An event type's weight and the half_life_days setting enter every stored user
-- vector, and a TRUNCATE (RESTART IDENTITY) can bring back the counts and stamps rows were
-- stored with, so these mark every stored row stale (refreshed_through = NULL, one write per
-- stored user): recommend computes the vectors from the live history until `pgrecs refresh`
-- stores them again. NOTIFY pgrecs_interactions with an empty payload makes
-- `pgrecs refresh --watch` catch up on every stale user.
-- Advisory lock 123589603189620 (taken exclusively) waits for a `pgrecs refresh` chunk in
-- progress (each holds it shared from reading the settings to its commit) and holds later ones
-- until this transaction ends; a TRUNCATE needs none, its table lock orders it with the chunks
-- (one that has read the table commits first, later ones read it empty; taking the advisory
-- lock as well could deadlock with a chunk about to read the table). The update that follows
-- must see the rows such a chunk wrote, so it must run in a READ COMMITTED transaction (its own
-- snapshot, taken after the wait); in REPEATABLE READ or SERIALIZABLE the change is refused
-- (25001).
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
    elsif tg_table_name = 'settings' and tg_op <> 'TRUNCATE' then
        if (old.name is distinct from 'half_life_days'
            and new.name is distinct from 'half_life_days')
           or (old.name, old.value) is not distinct from (new.name, new.value) then
            return null;
        end if;
    end if;
    if pg_catalog.current_setting('transaction_isolation') <> 'read committed' then
        raise exception using errcode = 'active_sql_transaction',
            message = format('pgrecs: %s of pgrecs.%s marks stored user vectors stale, which '
                             'needs a READ COMMITTED transaction, not %s',
                             lower(tg_op), tg_table_name,
                             upper(pg_catalog.current_setting('transaction_isolation'))),
            hint = 'run the change in its own transaction at the default isolation level';
    end if;
    if tg_op <> 'TRUNCATE' then
        perform pg_catalog.pg_advisory_xact_lock(123589603189620);
    end if;
    update pgrecs.users set refreshed_through = null where refreshed_through is not null;
    perform pg_catalog.pg_notify('pgrecs_interactions', '');
    return null;
end
$$;
