-- pgmlops: feature store — the online store
--
-- ml.feature_online keeps, per group version and entity key, the row with the newest event time
-- (written by the ingestion, sql/features/ingest.sql). Lookups read it by key, one row per key,
-- and hide values older than their group's TTL.

------------------------------------------------------------------------------------------------
-- API: online lookups
------------------------------------------------------------------------------------------------

-- ml.get_online_features(features text[], entity_keys text[]) returns table (entity_key text, values jsonb)
-- The latest value of each feature ('group:feature' or 'group@version:feature') for each entity
-- key, one row per key in the order given (repeats included), `values` keyed by the references
-- as written. Values older than their group's TTL, and keys never ingested, come back null.
-- Raises 22023 malformed reference or no keys (at most 10,000); P0002 unknown group; 42703
-- unknown feature; 42501 non-members. Callers: any member (viewers too), service_role.
create or replace function ml.get_online_features(features text[], entity_keys text[])
returns table (entity_key text, "values" jsonb)
language plpgsql stable security definer
set search_path = ''
as $$
declare
    v_tenant uuid := ml_private.acting_tenant_id(false);
begin
    if entity_keys is null or cardinality(entity_keys) = 0 then
        raise exception 'entity_keys: must name at least one key' using errcode = '22023';
    end if;
    if cardinality(entity_keys) > 10000 then
        raise exception 'entity_keys: at most 10000 keys per call, got %', cardinality(entity_keys) using errcode = '22023';
    end if;
    return query
    with refs as (
        select * from ml_private.resolve_features(v_tenant, features)
    ), keys as (
        select k.key, k.ord from unnest(entity_keys) with ordinality k (key, ord)
    )
    select k.key, (
        select jsonb_object_agg(r.ref, case when r.ttl is null or o.event_time >= now() - r.ttl then o.values -> r.feature end
                                order by r.ord)
        from refs r
        left join ml.feature_online o on o.tenant_id = v_tenant and o.group_id = r.group_id and o.entity_key = k.key)
    from keys k order by k.ord;
end
$$;

------------------------------------------------------------------------------------------------
-- Grants
------------------------------------------------------------------------------------------------

grant execute on function
    ml.get_online_features(text[], text[])
to authenticated, service_role;
