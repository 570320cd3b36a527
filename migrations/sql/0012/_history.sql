-- pgrecs._history: a user's interactions with their effective weights (the one weighting rule).
--
-- weight = (the row's own weight, else its event type's) * 0.5 ** (age / half_life_days), where
-- age is measured from the user's latest interaction, not from now(): user vectors are
-- normalized, so the reference time cancels out and a vector computed yesterday equals one
-- computed today. Ages beyond 100 half-lives count as 100 (a weight below 1e-30, and no float
-- underflow). The age is a difference of float8 epoch seconds, as in Python: an interval would
-- overflow for times more than about 292,000 years apart, which PostgreSQL can store.
-- half_life_days NULL or <= 0 disables the decay. Items without a content vector are included
-- (the callers skip their vectors). pgrecs.users_refresh in Python applies the
-- same rule; a test keeps them equal.
create or replace function pgrecs._history(p_user_id text)
returns table (
    interaction_id bigint,
    item_id text,
    event_type text,
    occurred_at timestamptz,
    weight double precision
)
language sql
stable
security invoker
set search_path to pg_catalog, pg_temp
as $$
    select x.interaction_id, x.item_id, x.event_type, x.occurred_at,
           coalesce(x.weight, e.weight)
           * case when h.days is null or h.days <= 0 then 1
                  else power(0.5::float8, least(
                      (date_part('epoch', max(x.occurred_at) over ())
                       - date_part('epoch', x.occurred_at))
                      / (86400 * h.days), 100))
             end
    from pgrecs.interactions as x
    join pgrecs.event_types as e on e.event_type = x.event_type
    -- offset 0: the setting is read once per call, not once per row
    cross join (select pgrecs._setting('half_life_days')::float8 as days offset 0) as h
    where x.user_id = p_user_id
$$;
