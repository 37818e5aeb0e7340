-- pgmlops: lineage
--
-- ml.lineage holds edges `from -> to` between artifacts: a dataset derived from a feature group,
-- a model version trained on a dataset. Kinds are free text so later capabilities add their own
-- (feature_group, dataset, project, run, model_version, deployment, ...); each capability
-- registers its kinds in ml_private.lineage_kinds with a query naming its artifacts. Functions
-- that make artifacts record edges with ml_private.record_lineage.
--
-- ml.lineage_of(kind, id) walks the edges from one artifact both ways: upstream (what it was made
-- from) and downstream (what was made from it), transitively, breadth first (each node once, at
-- its shortest distance, so cycles end), to a depth limit.

------------------------------------------------------------------------------------------------
-- Recording edges
------------------------------------------------------------------------------------------------

-- ml_private.record_lineage(p_tenant, p_from_kind, p_from_id, p_to_kind, p_to_id,
--                           p_relation default 'derived_from', p_details default '{}') returns void
-- Records the edge p_from -> p_to (idempotent). Called by the functions that make artifacts.
create or replace function ml_private.record_lineage(
    p_tenant uuid, p_from_kind text, p_from_id uuid, p_to_kind text, p_to_id uuid,
    p_relation text default 'derived_from', p_details jsonb default '{}')
returns void
language sql volatile security definer
set search_path = ''
as $$
    insert into ml.lineage (tenant_id, from_kind, from_id, to_kind, to_id, relation, details)
    values (p_tenant, p_from_kind, p_from_id, p_to_kind, p_to_id, p_relation, coalesce(p_details, '{}'))
    on conflict (tenant_id, from_kind, from_id, to_kind, to_id, relation) do update set details = excluded.details
$$;

------------------------------------------------------------------------------------------------
-- Kinds and walks
------------------------------------------------------------------------------------------------

-- ml_private.register_lineage_kind(p_kind text, p_name_sql text default null,
--                                  p_description text default null) returns void
-- Registers (or updates) an artifact kind for ml.lineage_of: p_name_sql names artifacts of the
-- kind (see ml_private.lineage_kinds; NULL keeps the one registered). Called by migrations.
-- Raises 23514 for a kind that is not lowercase letters, digits and _.
create or replace function ml_private.register_lineage_kind(p_kind text, p_name_sql text default null, p_description text default null)
returns void
language sql volatile
set search_path = ''
as $$
    insert into ml_private.lineage_kinds as k (kind, name_sql, description)
    values (p_kind, p_name_sql, p_description)
    on conflict (kind) do update set name_sql = coalesce(excluded.name_sql, k.name_sql),
                                     description = coalesce(excluded.description, k.description)
$$;

-- ml_private.lineage_neighbors(p_tenant uuid, p_upstream boolean, p_kinds text[], p_ids uuid[])
-- returns table (edge_id bigint, kind text, id uuid)
-- One step of a walk: the edges of p_tenant that reach the nodes (p_kinds[i], p_ids[i]) and the
-- node at their other end; upstream follows edges backwards (to -> from), downstream forwards.
create or replace function ml_private.lineage_neighbors(p_tenant uuid, p_upstream boolean, p_kinds text[], p_ids uuid[])
returns table (edge_id bigint, kind text, id uuid)
language sql stable
set search_path = ''
as $$
    select l.id, l.from_kind, l.from_id
    from unnest(p_kinds, p_ids) n (kind, id)
    join ml.lineage l on l.tenant_id = p_tenant and l.to_kind = n.kind and l.to_id = n.id
    where p_upstream
    union all
    select l.id, l.to_kind, l.to_id
    from unnest(p_kinds, p_ids) n (kind, id)
    join ml.lineage l on l.tenant_id = p_tenant and l.from_kind = n.kind and l.from_id = n.id
    where not p_upstream
$$;

-- ml_private.lineage_node_list(p_nodes jsonb, p_direction text, p_names jsonb) returns jsonb
-- The nodes of one direction as ml.lineage_of lists them: [{kind, id, name, depth}] ordered by
-- depth, kind, name, id; names from p_names ({'kind/id': name}).
create or replace function ml_private.lineage_node_list(p_nodes jsonb, p_direction text, p_names jsonb) returns jsonb
language sql immutable
set search_path = ''
as $$
    select coalesce(jsonb_agg(jsonb_build_object('kind', n.kind, 'id', n.id, 'name', n.name, 'depth', n.depth)
                              order by n.depth, n.kind, n.name, n.id), '[]')
    from (select x ->> 'kind' as kind, x ->> 'id' as id, (x ->> 'depth')::int as depth,
                 p_names ->> ((x ->> 'kind') || '/' || (x ->> 'id')) as name
          from jsonb_array_elements(p_nodes) x
          where x ->> 'direction' = p_direction) n
$$;

-- ml.lineage_of(kind text, id uuid, max_depth int default 10) returns jsonb
-- The lineage of one artifact of the acting tenant:
--   {"node": {kind, id, name},
--    "upstream":   [{kind, id, name, depth}, ...]   what it was made from, transitively
--    "downstream": [{kind, id, name, depth}, ...]   what was made from it, transitively
--    "edges":      [{from_kind, from_id, to_kind, to_id, relation, details, created_at}, ...]
--    "truncated":  true when max_depth stopped a walk that had further to go}
-- Walks are breadth first: each node is listed once per direction, at its shortest distance
-- (depth 1 = a direct edge), so cycles end; lists are ordered by depth, kind, name, id. `edges`
-- holds every edge walked (each once), cycles included. Names come from the kind's registered
-- lookup (feature_group: name@version; dataset: its name), NULL when unknown or deleted.
-- An artifact with no edges gets empty lists, unless its kind can be looked up and it does not
-- exist in the acting tenant: then P0002 (a deleted artifact whose edges remain still walks).
-- Raises 22023 unknown kind (neither registered nor in the tenant's edges), NULL id, max_depth
-- not 1 to 100; P0002 as above; 42501 non-members. Only the acting tenant's edges are read.
-- Callers: any member (viewers too), service_role.
create or replace function ml.lineage_of(kind text, id uuid, max_depth int default 10) returns jsonb
language plpgsql stable security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_tenant    uuid := ml_private.acting_tenant_id(false);
    v_kind      text := lower(btrim(lineage_of.kind));
    v_id        uuid := lineage_of.id;
    v_upstream  boolean;
    v_depth     int;
    v_seen      text[];
    v_kinds     text[];
    v_ids       uuid[];
    v_edge_ids  bigint[] := '{}';
    v_step_edges bigint[];
    v_nodes     jsonb := '[]';
    v_truncated boolean := false;
    v_names     jsonb := '{}';
    v_kind_row  record;
    v_part      jsonb;
begin
    if v_kind is null or v_kind !~ '^[a-z][a-z0-9_]{0,62}$' then
        raise exception 'kind: % is not an artifact kind', coalesce(quote_literal(lineage_of.kind), 'NULL') using errcode = '22023';
    end if;
    if v_id is null then
        raise exception 'id: must not be NULL' using errcode = '22023';
    end if;
    if max_depth is null or max_depth not between 1 and 100 then
        raise exception 'max_depth: must be 1 to 100, got %', coalesce(max_depth::text, 'NULL') using errcode = '22023';
    end if;
    if not exists (select 1 from ml_private.lineage_kinds k where k.kind = v_kind)
       and not exists (select 1 from ml.lineage l where l.tenant_id = v_tenant and l.from_kind = v_kind)
       and not exists (select 1 from ml.lineage l where l.tenant_id = v_tenant and l.to_kind = v_kind) then
        raise exception 'kind: unknown artifact kind %', quote_literal(v_kind)
            using errcode = '22023',
                  hint = 'Known kinds: ' || (select string_agg(k.kind, ', ' order by k.kind) from ml_private.lineage_kinds k) || '.';
    end if;

    -- Breadth first, one query per level and direction; v_seen holds 'kind/id' of the nodes met.
    foreach v_upstream in array array[true, false] loop
        v_seen := array[v_kind || '/' || v_id];
        v_kinds := array[v_kind];
        v_ids := array[v_id];
        v_depth := 0;
        while cardinality(v_ids) > 0 loop
            if v_depth = max_depth then
                v_truncated := v_truncated
                    or exists (select 1 from ml_private.lineage_neighbors(v_tenant, v_upstream, v_kinds, v_ids));
                exit;
            end if;
            v_depth := v_depth + 1;
            with step as (
                select * from ml_private.lineage_neighbors(v_tenant, v_upstream, v_kinds, v_ids)
            ), fresh as (
                select distinct s.kind, s.id from step s where not ((s.kind || '/' || s.id) = any (v_seen))
            )
            select coalesce((select array_agg(s.edge_id) from step s), '{}'),
                   coalesce((select array_agg(f.kind order by f.kind, f.id) from fresh f), '{}'),
                   coalesce((select array_agg(f.id order by f.kind, f.id) from fresh f), '{}')
            into v_step_edges, v_kinds, v_ids;
            v_edge_ids := v_edge_ids || v_step_edges;
            v_seen := v_seen || array(select k || '/' || i from unnest(v_kinds, v_ids) n (k, i));
            v_nodes := v_nodes || coalesce((
                select jsonb_agg(jsonb_build_object('direction', case when v_upstream then 'upstream' else 'downstream' end,
                                                    'kind', k, 'id', i, 'depth', v_depth))
                from unnest(v_kinds, v_ids) n (k, i)), '[]');
        end loop;
    end loop;

    -- Names, one lookup per kind met. A lookup whose table is not there (yet) names nothing.
    for v_kind_row in
        select k.kind, k.name_sql, array_agg(distinct n.id) as ids
        from (select v_kind as kind, v_id as id
              union select x ->> 'kind', (x ->> 'id')::uuid from jsonb_array_elements(v_nodes) x) n
        join ml_private.lineage_kinds k on k.kind = n.kind
        where k.name_sql is not null
        group by k.kind, k.name_sql
    loop
        begin
            execute format('select jsonb_object_agg(%L || ''/'' || q.id, q.name) from (%s) q (id, name)',
                           v_kind_row.kind, v_kind_row.name_sql)
                into v_part using v_tenant, v_kind_row.ids;
            v_names := v_names || coalesce(v_part, '{}');
        exception when undefined_table or undefined_column then
            null;
        end;
    end loop;

    if cardinality(v_edge_ids) = 0 and not (v_names ? (v_kind || '/' || v_id))
       and exists (select 1 from ml_private.lineage_kinds k where k.kind = v_kind and k.name_sql is not null) then
        raise exception '% % does not exist', replace(v_kind, '_', ' '), v_id using errcode = 'P0002';
    end if;

    return jsonb_build_object(
        'node', jsonb_build_object('kind', v_kind, 'id', v_id, 'name', v_names -> (v_kind || '/' || v_id)),
        'upstream', ml_private.lineage_node_list(v_nodes, 'upstream', v_names),
        'downstream', ml_private.lineage_node_list(v_nodes, 'downstream', v_names),
        'edges', coalesce((
            select jsonb_agg(jsonb_build_object('from_kind', l.from_kind, 'from_id', l.from_id, 'to_kind', l.to_kind,
                                                'to_id', l.to_id, 'relation', l.relation, 'details', l.details,
                                                'created_at', l.created_at) order by l.id)
            from ml.lineage l where l.tenant_id = v_tenant and l.id = any (v_edge_ids)), '[]'),
        'truncated', v_truncated);
end
$$;

------------------------------------------------------------------------------------------------
-- Grants
------------------------------------------------------------------------------------------------

grant execute on function
    ml.lineage_of(text, uuid, int)
to authenticated, service_role;
