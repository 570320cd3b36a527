-- pgrecs._setting: one value from pgrecs.settings (NULL when absent).
create or replace function pgrecs._setting(setting_name text)
returns jsonb
language sql
stable
security invoker
set search_path to pg_catalog, pg_temp
as $$
    select s.value from pgrecs.settings as s where s.name = setting_name
$$;
