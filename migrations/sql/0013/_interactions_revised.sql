-- pgrecs._interactions_revised: trigger before UPDATE on pgrecs.interactions, each row. A stored
-- user vector is current while the user's interaction count and newest stamp are the ones it
-- was computed from, the stamp of a row being greatest(interaction_id, revised). An UPDATE that
-- changes what the vectors are computed from (user, item, event type, weight or time) gives the
-- row a new stamp, `revised`, from the sequence of interaction_id: higher than every stamp
-- before it, so the stored rows of its user (its old and new user, when it moves) no longer
-- match, under any isolation level and without locks, as an insert does. interaction_id itself
-- never changes.
create or replace function pgrecs._interactions_revised()
returns trigger
language plpgsql
volatile
security invoker
set search_path to pg_catalog, pg_temp
as $$
begin
    if (old.user_id, old.item_id, old.event_type, old.weight, old.occurred_at)
       is distinct from (new.user_id, new.item_id, new.event_type, new.weight, new.occurred_at)
    then
        new.revised := pg_catalog.nextval('pgrecs.interactions_interaction_id_seq');
    end if;
    return new;
end
$$;
