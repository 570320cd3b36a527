-- pgrecs._interactions_revised: trigger before UPDATE on pgrecs.interactions, each row. A stored
-- user vector is current while the user's interaction count, newest stamp and stamp digest are
-- the ones it was computed from, the stamp of a row being greatest(interaction_id, revised) and
-- the digest the sum of hashint8extended(stamp, stamp >> 32) over the user's rows (the seed
-- carries the high half: the hash alone folds its input to 32 bits). An UPDATE that changes
-- what the vectors are computed from (user, item, event type, weight or time) gives the row a
-- new stamp, `revised`, from the sequence of interaction_id, so the digest of its user (its old
-- and new user, when it moves) changes, whatever commits in between and at any isolation level,
-- without locks. Otherwise `revised` keeps its value: only this trigger sets it (pgrecs_writer
-- has no privilege on the column). interaction_id cannot change.
create or replace function pgrecs._interactions_revised()
returns trigger
language plpgsql
volatile
security invoker
set search_path to pg_catalog, pg_temp
as $$
begin
    if new.interaction_id is distinct from old.interaction_id then
        raise exception using errcode = 'generated_always',
            message = format('pgrecs.interactions: interaction_id cannot change (%s to %s)',
                             old.interaction_id, new.interaction_id),
            hint = 'delete the row and insert a new one';
    end if;
    if (old.user_id, old.item_id, old.event_type, old.weight, old.occurred_at)
       is distinct from (new.user_id, new.item_id, new.event_type, new.weight, new.occurred_at)
    then
        new.revised := pg_catalog.nextval('pgrecs.interactions_interaction_id_seq');
    else
        new.revised := old.revised;
    end if;
    return new;
end
$$;
