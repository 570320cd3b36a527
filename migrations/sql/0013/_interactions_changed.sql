-- pgrecs._interactions_changed: statement trigger after UPDATE or DELETE on pgrecs.interactions.
-- A stored user vector is judged current by the user's interaction count and newest
-- interaction_id, which an UPDATE in place does not change. So the users whose interactions an
-- UPDATE changed (user, item, event type, weight or time) have their stored rows marked stale
-- (refreshed_through = NULL): recommend computes their vectors from the live history until
-- `pgrecs refresh` stores them again. It first takes advisory lock 123589603189620, which every
-- `pgrecs refresh` chunk holds shared from before it reads the histories until it commits: a
-- chunk in progress commits first (its rows are then marked here), later ones wait for this
-- transaction to end and read the new history. Both events send NOTIFY pgrecs_interactions per
-- user, as inserts do, so `pgrecs refresh --watch` refreshes them at once.
create or replace function pgrecs._interactions_changed()
returns trigger
language plpgsql
volatile
security invoker
set search_path to pg_catalog, pg_temp
as $$
declare
    changed text[];
begin
    if tg_op = 'UPDATE' then
        perform pg_catalog.pg_advisory_xact_lock(123589603189620);
        select pg_catalog.array_agg(distinct c.user_id) into changed
        from old_rows as o
        full join new_rows as n on n.interaction_id = o.interaction_id
        cross join lateral (values (o.user_id), (n.user_id)) as c (user_id)
        where c.user_id is not null
          and (o.user_id, o.item_id, o.event_type, o.weight, o.occurred_at)
              is distinct from (n.user_id, n.item_id, n.event_type, n.weight, n.occurred_at);
        update pgrecs.users as u set refreshed_through = null
        where u.user_id = any (changed) and u.refreshed_through is not null;
    else  -- a DELETE changes the count: the rows are stale already
        select pg_catalog.array_agg(distinct o.user_id) into changed from old_rows as o;
    end if;
    perform pg_catalog.pg_notify('pgrecs_interactions',
        case when pg_catalog.octet_length(c.user_id) < 7900 then c.user_id else '' end)
    from pg_catalog.unnest(changed) as c (user_id);
    return null;
end
$$;
