-- pgrecs._notify_interactions: trigger on pgrecs.interactions. Each new interaction sends
-- NOTIFY pgrecs_interactions with the user id as payload at commit, which wakes
-- `pgrecs refresh --watch` (one notification per user per transaction). Ids too long for a
-- payload (8000 bytes) send an empty payload: the watcher then checks every user.
create or replace function pgrecs._notify_interactions()
returns trigger
language plpgsql
volatile
security invoker
set search_path to pg_catalog, pg_temp
as $$
begin
    perform pg_catalog.pg_notify('pgrecs_interactions',
        case when octet_length(new.user_id) < 7900 then new.user_id else '' end);
    return null;
end
$$;
