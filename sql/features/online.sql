-- pgmlops: feature store — the online store
--
-- Each feature group version has an online table (ml.feature_groups.online_table, see
-- docs/features.md) holding, per entity key, the row with the newest event time (written by the
-- ingestion, sql/features/ingest.sql), one typed column per feature. Lookups read it by primary
-- key, one row per key, and hide values older than their group's TTL.

------------------------------------------------------------------------------------------------
-- API: online lookups
------------------------------------------------------------------------------------------------

-- ml.get_online_features(features text[], entity_keys text[]) returns table (entity_key text, values jsonb)
-- The latest value of each feature ('group:feature' or 'group@version:feature') for each entity
-- key, one row per key in the order given (repeats included), `values` keyed by the references
-- as written. Values older than their group's TTL, and keys never ingested, come back null.
-- Values are JSON: numbers, booleans, strings, timestamps as ISO 8601 in UTC, vectors as arrays.
-- One query over the groups' online tables: one primary-key probe per key and group version.
-- Raises 22023 malformed reference or no keys (at most 10,000); P0002 unknown group; 42703
-- unknown feature; 42501 non-members. Callers: any member (viewers too), service_role.
--
-- Why a prepared statement: the lookup names each version's table, so it is dynamic SQL, and
-- PL/pgSQL plans an EXECUTE'd query on every call, which costs more than running it. The lookup
-- is PREPAREd once per session and query text (its name is the text's MD5), with a generic plan,
-- and EXECUTEd after. Its text holds table and column names only (which the catalog shows every
-- role anyway): references, keys, tenant and TTLs are parameters, so a pooled session shared by
-- tenants shows nothing of one to another, and a client that runs it directly does so with its
-- own rights (RLS). How a list of features was resolved is kept in the session too (setting
-- pgmlops.online_<MD5 of tenant and list>: the tenant's counter in
-- ml_private.feature_group_generations, the statement's name, the versions' ids) and reused
-- while the counter stands still, i.e. until one of the tenant's versions is created, changed
-- or deleted.
create or replace function ml.get_online_features(features text[], entity_keys text[])
returns table (entity_key text, "values" jsonb)
language plpgsql volatile security definer  -- volatile: it may PREPARE (see above)
set search_path = ''
set timezone = 'UTC'  -- timestamps come out as ISO 8601 in UTC, as they went in
set plan_cache_mode = 'force_generic_plan'  -- the prepared lookup is planned once (see above)
as $$
declare
    v_tenant     uuid := ml_private.acting_tenant_id(false);
    v_generation bigint;
    v_setting    text;
    v_cached     text[];
    v_resolved   int;
    v_query      text;
    v_ids        uuid[];
    v_ttls       interval[];
    v_name       text;
    v_keys       text[];
    v_values     jsonb[];
begin
    if entity_keys is null or cardinality(entity_keys) = 0 then
        raise exception 'entity_keys: must name at least one key' using errcode = '22023';
    end if;
    if cardinality(entity_keys) > 10000 then
        raise exception 'entity_keys: at most 10000 keys per call, got %', cardinality(entity_keys) using errcode = '22023';
    end if;
    select coalesce(max(g.generation), 0) into v_generation from ml_private.feature_group_generations g where g.tenant_id = v_tenant;
    v_setting := 'pgmlops.online_' || md5(v_tenant::text || ':' || coalesce(features::text, ''));
    v_cached := string_to_array(current_setting(v_setting, true), '|');
    if v_cached[1] = v_generation::text and exists (select 1 from pg_catalog.pg_prepared_statements p where p.name = v_cached[2]) then
        v_name := v_cached[2];
        v_ids := v_cached[3]::uuid[];
    else
        -- One statement resolves every reference (ml_private.resolve_features' rules: 'group' is the
        -- group's newest active version, else its newest not archived) and writes the lookup: one
        -- LEFT JOIN per version named, one jsonb member per reference. A reference it cannot resolve
        -- (malformed, unknown group or feature, named twice) is left out, and
        -- ml_private.resolve_features then raises its error. No regular expressions: under a libc
        -- locale they cost more than the lookup.
        with refs as (
            select r.ord, r.ref, btrim(split_part(r.ref, ':', 2)) as feature,
                   split_part(btrim(split_part(r.ref, ':', 1)), '@', 1) as group_name,
                   nullif(split_part(btrim(split_part(r.ref, ':', 1)), '@', 2), '') as version
            from unnest(features) with ordinality r (ref, ord)
            where split_part(r.ref, ':', 3) = '' and position('@' in split_part(split_part(r.ref, ':', 1), '@', 2)) = 0
        ), versions as (
            select n.group_name, n.version, v.id, v.online_table, v.features, row_number() over (order by n.group_name, n.version) as i
            from (select distinct group_name, version from refs) n
            cross join lateral (
                select fg.id, fg.online_table, fg.features from ml.feature_groups fg
                where fg.tenant_id = v_tenant and fg.name = n.group_name
                  and case when n.version is null then fg.status <> 'archived'
                           else length(n.version) <= 9 and translate(n.version, '0123456789', '') = ''
                                and fg.version = n.version::int end
                order by (fg.status = 'active') desc, fg.version desc limit 1) v
        ), resolved as (
            select r.ord, r.feature, x.f ->> 'dtype' as dtype, v.i
            from refs r
            join versions v on v.group_name = r.group_name and v.version is not distinct from r.version
            cross join lateral (select f from jsonb_array_elements(v.features) f where f ->> 'name' = r.feature) x
        )
        select (select count(distinct features[r.ord]) from resolved r),
               format('select array_agg(k.key order by k.ord), array_agg(%s order by k.ord) from unnest($1) with ordinality k (key, ord)%s',
                      -- '(jsonb_build_object(<50 pairs>) || ...)': jsonb_build_object takes at most 100 arguments
                      (select '(' || string_agg(format('jsonb_build_object(%s)', c.pairs), ' || ' order by c.n) || ')'
                       from (select (r.ord - 1) / 50 as n,
                                    string_agg(format('$3[%s], case when $4[%s] is null or g%2$s.event_time >= now() - $4[%2$s] then %s end',
                                                      r.ord, r.i,
                                                      -- pgvector's text is a JSON array; double precision[] (no pgvector) takes to_jsonb
                                                      case when r.dtype = 'vector' and (select true from pg_extension e where e.extname = 'vector')
                                                           then format('(g%s.%I)::text::jsonb', r.i, r.feature)
                                                           else format('to_jsonb(g%s.%I)', r.i, r.feature) end), ', ' order by r.ord) as pairs
                             from resolved r group by 1) c),
                      (select string_agg(format(' left join %s g%s on g%2$s.tenant_id = $2 and g%2$s.entity_key = k.key', v.online_table, v.i),
                                         '' order by v.i)
                       from versions v)),
               (select array_agg(v.id order by v.i) from versions v)
        into v_resolved, v_query, v_ids;
        if coalesce(cardinality(features), 0) = 0 or v_resolved is distinct from cardinality(features) then
            perform ml_private.resolve_features(v_tenant, features);  -- raises the reason
            raise exception 'features: % could not be resolved', features using errcode = '22023';
        end if;

        v_name := 'pgmlops_online_' || md5(v_query);
        if not exists (select 1 from pg_catalog.pg_prepared_statements p where p.name = v_name) then
            execute format('prepare %I (text[], uuid, text[], interval[]) as %s', v_name, v_query);
        end if;
        perform set_config(v_setting, concat_ws('|', v_generation, v_name, v_ids), false);
    end if;

    -- The versions' TTLs as they are now (one probe per version).
    select array_agg(fg.ttl order by u.o) into v_ttls
    from unnest(v_ids) with ordinality u (id, o) join ml.feature_groups fg on fg.id = u.id;
    execute format('execute %I(%L, %L, %L, %L)', v_name, entity_keys, v_tenant, features, v_ttls) into v_keys, v_values;
    return query select * from unnest(v_keys, v_values);
end
$$;

------------------------------------------------------------------------------------------------
-- Grants
------------------------------------------------------------------------------------------------

grant execute on function
    ml.get_online_features(text[], text[])
to authenticated, service_role;
