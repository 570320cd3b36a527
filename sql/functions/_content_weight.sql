-- pgrecs._content_weight: how much the content space counts for a user (the rest is the
-- collaborative space). Users without a collaborative vector: 1. Fewer than warm_threshold
-- interactions: settings.content_weight_cold; otherwise settings.content_weight_warm. A missing
-- settings row means the default the migrations ship (content_weight_warm 0.25 since 0005).
create or replace function pgrecs._content_weight(interaction_count bigint, has_collab boolean)
returns double precision
language sql
stable
security invoker
set search_path to pg_catalog, pg_temp
as $$
    select greatest(0, least(1,
        case when not has_collab then 1
             when interaction_count < coalesce(pgrecs._setting('warm_threshold')::bigint, 10)
                 then coalesce(pgrecs._setting('content_weight_cold')::float8, 1)
             else coalesce(pgrecs._setting('content_weight_warm')::float8, 0.25)
        end))::float8
$$;
