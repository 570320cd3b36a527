-- pgrecs.record_interaction: append one event to the log, with named errors for bad input.
-- A plain INSERT INTO pgrecs.interactions works too (constraints reject the same rows).
create or replace function pgrecs.record_interaction(
    user_id text,
    item_id text,
    event_type text,
    occurred_at timestamptz default now()
)
returns void
language plpgsql
volatile
security invoker
set search_path to pg_catalog, pg_temp
as $$
begin
    if user_id is null or item_id is null or event_type is null then
        raise exception using errcode = 'null_value_not_allowed',
            message = 'pgrecs.record_interaction: user_id, item_id and event_type are required';
    end if;
    if user_id = '' then
        raise exception using errcode = 'invalid_parameter_value',
            message = 'pgrecs.record_interaction: user_id must not be empty';
    end if;
    if occurred_at is null or not isfinite(occurred_at) then
        raise exception using errcode = 'invalid_parameter_value',
            message = format('pgrecs.record_interaction: occurred_at must be a finite timestamp, got %s',
                             coalesce(occurred_at::text, 'NULL'));
    end if;
    if not exists (select from pgrecs.items as i where i.item_id = record_interaction.item_id) then
        raise exception using errcode = 'no_data_found',
            message = format('pgrecs.record_interaction: unknown item %L', item_id);
    end if;
    if not exists (select from pgrecs.event_types as e
                   where e.event_type = record_interaction.event_type) then
        raise exception using errcode = 'invalid_parameter_value',
            message = format('pgrecs.record_interaction: unknown event type %L', event_type),
            hint = 'known types are in pgrecs.event_types';
    end if;
    insert into pgrecs.interactions (user_id, item_id, event_type, occurred_at)
    values (record_interaction.user_id, record_interaction.item_id,
            record_interaction.event_type, record_interaction.occurred_at);
end
$$;
