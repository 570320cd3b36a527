-- pgrecs._interactions_changed: statement trigger after UPDATE or DELETE on pgrecs.interactions.
-- Sends NOTIFY pgrecs_interactions for each user whose interactions the statement changed, as
-- inserts do, so `pgrecs refresh --watch` refreshes them at once (their stored rows are stale
-- already: a delete changes the count, an update the stamp digest, see
-- pgrecs._interactions_revised).
create or replace function pgrecs._interactions_changed()
returns trigger
language plpgsql
volatile
security invoker
set search_path to pg_catalog, pg_temp
as $$
begin
    if tg_op = 'UPDATE' then
        perform pg_catalog.pg_notify('pgrecs_interactions',
            case when pg_catalog.octet_length(c.user_id) < 7900 then c.user_id else '' end)
        from (
            select distinct u.user_id
            from old_rows as o
            join new_rows as n on n.interaction_id = o.interaction_id
            cross join lateral (values (o.user_id), (n.user_id)) as u (user_id)
            where n.revised is distinct from o.revised
        ) as c;
    else
        perform pg_catalog.pg_notify('pgrecs_interactions',
            case when pg_catalog.octet_length(c.user_id) < 7900 then c.user_id else '' end)
        from (select distinct o.user_id from old_rows as o) as c;
    end if;
    return null;
end
$$;
