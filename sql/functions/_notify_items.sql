-- pgrecs._notify_items: trigger on pgrecs.items. A row waiting for its embedding (content_hash
-- NULL) sends NOTIFY pgrecs_items at commit, which wakes `pgrecs embed --watch`. PostgreSQL
-- folds identical notifications of one transaction into one.
create or replace function pgrecs._notify_items()
returns trigger
language plpgsql
volatile
security invoker
set search_path to pg_catalog, pg_temp
as $$
begin
    perform pg_catalog.pg_notify('pgrecs_items', '');
    return null;
end
$$;
