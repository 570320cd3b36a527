-- pgrecs._items_text_changed: trigger on pgrecs.items. When the enriched text of an item changes
-- (title, description, category, tags, attributes), its content_hash becomes NULL: the item is
-- waiting for `pgrecs embed` (or `pgrecs embed --watch`). Its old vector keeps serving until the
-- new one is written.
create or replace function pgrecs._items_text_changed()
returns trigger
language plpgsql
volatile
security invoker
set search_path to pg_catalog, pg_temp
as $$
begin
    if (new.title, new.description, new.category, new.tags, new.attributes)
       is distinct from (old.title, old.description, old.category, old.tags, old.attributes) then
        new.content_hash := null;
        new.updated_at := now();
    end if;
    return new;
end
$$;
