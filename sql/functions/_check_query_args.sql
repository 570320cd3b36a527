-- pgrecs._check_query_args: the argument checks every query function shares.
create or replace function pgrecs._check_query_args(caller text, k integer, filter jsonb)
returns void
language plpgsql
immutable
security invoker
set search_path to pg_catalog, pg_temp
as $$
begin
    if k is null or k < 1 or k > 1000 then
        raise exception using errcode = 'invalid_parameter_value',
            message = format('%s: k must be between 1 and 1000, got %s', caller, coalesce(k::text, 'NULL')),
            hint = 'ask for at most 1000 rows per call';
    end if;
    if filter is not null and jsonb_typeof(filter) <> 'object' then
        raise exception using errcode = 'invalid_parameter_value',
            message = format('%s: filter must be a JSON object, got %s', caller, filter),
            hint = 'filter is matched with attributes @> filter, e.g. ''{"brand": "acme"}''';
    end if;
end
$$;
