-- pgmlops: feature store — feature groups
--
-- A feature group is a versioned, typed set of features about one entity (a customer, a card, a
-- sensor), keyed by the entity's join key and an event time. Its schema says, per feature, the
-- dtype (int, float, bool, text, category, timestamp, vector(n)) and the rules every value must
-- keep (nullable, min/max, allowed values, regex, max length). Values are validated in the
-- database at write time (sql/features/ingest.sql), so every client gets the same rules.
--
-- Storage (docs/features.md has the contract other code reads the values by):
--   ml.feature_groups      one row per group version; older versions stay readable; names the
--                          version's two tables (offline_table, online_table)
--   ml_features.fg_<id>    the version's offline table: every row ingested, one typed column per
--                          feature, keyed by (tenant_id, entity_key, event_time); time-partitioned
--                          (hypertable, or native range partitions)
--   ml_features.fg_<id>_online  the newest row per entity (the online store), keyed by
--                          (tenant_id, entity_key)
--   ml.feature_quarantine  rows refused by an ingestion in `quarantine` mode, with the reasons
--   ml.feature_ingestions  one row per ingestion: source, mode, counts
-- Both tables of a version are made by ml_private.create_feature_tables when the version is
-- created, are tenant tables like any other (ml_private.enable_tenant_rls) and are dropped with
-- the version (or its tenant).
--
-- Feature references: 'group:feature' (the group's current version: the newest `active` one, or
-- the newest that is not archived when none is active) or 'group@version:feature'.

------------------------------------------------------------------------------------------------
-- Deleting a group version
------------------------------------------------------------------------------------------------

-- ml_private.feature_groups_delete_values(): deleting a group version (or its tenant, whose
-- versions go by ON DELETE CASCADE) drops the version's offline and online tables, and forgets
-- them in the registries of tenant and time-partitioned tables.
create or replace function ml_private.feature_groups_delete_values() returns trigger
language plpgsql security definer
set search_path = ''
as $$
declare
    v_table regclass;
begin
    for v_table in
        select t from old_rows o, unnest(array[o.online_table, o.offline_table]) t
        where exists (select 1 from pg_class c where c.oid = t)
    loop
        delete from ml_private.tenant_tables where table_name = v_table::text;
        delete from ml_private.time_partitioned_tables where table_name = v_table::text;
        execute format('drop table %s', v_table);
    end loop;
    return null;
end
$$;

create or replace trigger feature_groups_delete_values after delete on ml.feature_groups
    referencing old table as old_rows
    for each statement execute function ml_private.feature_groups_delete_values();

-- ml_private.feature_groups_count_change(): after a version is created, changed or deleted, its
-- tenant's counter in ml_private.feature_group_generations moves (ml.get_online_features reuses
-- a resolution while it stands still). A deletion only updates: its tenant may be going too.
create or replace function ml_private.feature_groups_count_change() returns trigger
language plpgsql security definer
set search_path = ''
as $$
begin
    if tg_op = 'DELETE' then
        update ml_private.feature_group_generations g set generation = g.generation + 1 where g.tenant_id = old.tenant_id;
    else
        insert into ml_private.feature_group_generations as g (tenant_id) values (new.tenant_id)
        on conflict (tenant_id) do update set generation = g.generation + 1;
    end if;
    return null;
end
$$;

create or replace trigger feature_groups_count_change after insert or update or delete on ml.feature_groups
    for each row execute function ml_private.feature_groups_count_change();

------------------------------------------------------------------------------------------------
-- Schemas of feature groups
------------------------------------------------------------------------------------------------

-- ml_private.normalize_feature_schema(p_schema jsonb, p_reserved text[] default '{}') returns jsonb
-- Checks a feature group schema and returns it normalized: an array of feature specs in
-- declaration order, each {name, dtype, nullable, [dim], [min], [max], [allowed], [regex],
-- [max_length], [description]}. Accepted input: an object {feature: spec, ...} or an array of
-- specs each with a "name". A spec is {"dtype": ...} plus rules:
--   dtype       int | float | bool | text | category | timestamp | vector(n), n in 1..16000
--   nullable    boolean, default true
--   min, max    numbers (int, float) or ISO timestamps (timestamp); min <= max
--   allowed     non-empty array of allowed values (int, float, text, category)
--   regex       a valid POSIX regular expression (text, category)
--   max_length  positive integer (text, category)
--   description text
-- Raises 22023 naming the path and the rule, e.g. 'schema.amount.dtype: must be one of ...'.
create or replace function ml_private.normalize_feature_schema(p_schema jsonb, p_reserved text[] default '{}')
returns jsonb
language plpgsql stable
set search_path = ''
as $$
declare
    v_items   jsonb;
    v_item    jsonb;
    v_spec    jsonb;
    v_name    text;
    v_dtype   text;
    v_dim     int;
    v_key     text;
    v_out     jsonb := '[]';
    v_names   text[] := '{}';
    v_path    text;
    v_norm    jsonb;
    v_allowed_keys constant text[] := array['name', 'dtype', 'nullable', 'min', 'max', 'allowed', 'regex',
                                            'max_length', 'description'];
begin
    if p_schema is null then
        raise exception 'schema: must not be NULL' using errcode = '22023';
    end if;
    if jsonb_typeof(p_schema) = 'object' then
        -- An object: feature names are its keys (declaration order is lost; pass an array to keep it).
        select coalesce(jsonb_agg(case when jsonb_typeof(value) = 'object' then value || jsonb_build_object('name', key)
                                       else jsonb_build_object('name', key, '_not_object', value) end order by key), '[]')
        into v_items from jsonb_each(p_schema);
    elsif jsonb_typeof(p_schema) = 'array' then
        v_items := p_schema;
    else
        raise exception 'schema: must be an object {feature: spec} or an array of specs, got %', jsonb_typeof(p_schema)
            using errcode = '22023';
    end if;
    if jsonb_array_length(v_items) = 0 then
        raise exception 'schema: must declare at least one feature' using errcode = '22023';
    end if;
    if jsonb_array_length(v_items) > 1000 then
        raise exception 'schema: at most 1000 features per group, got %', jsonb_array_length(v_items) using errcode = '22023';
    end if;

    for v_item in select value from jsonb_array_elements(v_items) loop
        if jsonb_typeof(v_item) <> 'object' or v_item ? '_not_object' then
            raise exception 'schema.%: a feature spec must be an object', coalesce(v_item ->> 'name', '?')
                using errcode = '22023';
        end if;
        v_name := v_item ->> 'name';
        v_path := 'schema.' || coalesce(v_name, '?');
        if v_name is null or v_name !~ '^[a-z_][a-z0-9_]{0,62}$' then
            raise exception 'schema: feature name % must be lowercase letters, digits and _ (1 to 63, not starting with a digit)',
                coalesce(quote_literal(v_name), 'NULL') using errcode = '22023';
        end if;
        if v_name = any (v_names) then
            raise exception '%: declared twice', v_path using errcode = '22023';
        end if;
        -- The join key and event time of ingested rows, and the columns of the typed tables.
        if v_name = any (p_reserved) or v_name in ('tenant_id', 'entity_key', 'event_time', 'ingested_at', 'ingestion_id', 'label') then
            raise exception '%: the name % is reserved (join key, event time or a pgmlops column)', v_path, quote_literal(v_name)
                using errcode = '22023';
        end if;
        v_names := v_names || v_name;
        for v_key in select jsonb_object_keys(v_item) loop
            if not v_key = any (v_allowed_keys) then
                raise exception '%.%: unknown rule (known: dtype, nullable, min, max, allowed, regex, max_length, description)',
                    v_path, v_key using errcode = '22023';
            end if;
        end loop;

        v_dtype := lower(btrim(v_item ->> 'dtype'));
        v_dim := null;
        if v_dtype ~ '^vector\(\s*\d+\s*\)$' then
            if substring(v_dtype from '\d+')::numeric not between 1 and 16000 then
                raise exception '%.dtype: vector dimension must be 1 to 16000, got %', v_path, substring(v_dtype from '\d+')::numeric
                    using errcode = '22023';
            end if;
            v_dim := substring(v_dtype from '\d+')::int;
            v_dtype := 'vector';
        elsif v_dtype is null or v_dtype not in ('int', 'float', 'bool', 'text', 'category', 'timestamp') then
            raise exception '%.dtype: must be one of int, float, bool, text, category, timestamp, vector(n); got %',
                v_path, coalesce(v_item -> 'dtype', 'null'::jsonb) using errcode = '22023';
        end if;

        if v_item ? 'nullable' and jsonb_typeof(v_item -> 'nullable') <> 'boolean' then
            raise exception '%.nullable: must be true or false', v_path using errcode = '22023';
        end if;
        v_norm := jsonb_build_object('name', v_name, 'dtype', v_dtype,
                                     'nullable', coalesce((v_item -> 'nullable')::text::boolean, true));
        if v_dim is not null then
            v_norm := v_norm || jsonb_build_object('dim', v_dim);
        end if;

        -- min / max
        foreach v_key in array array['min', 'max'] loop
            continue when not v_item ? v_key;
            if v_dtype in ('int', 'float') then
                if jsonb_typeof(v_item -> v_key) <> 'number' then
                    raise exception '%.%: must be a number for dtype %', v_path, v_key, v_dtype using errcode = '22023';
                end if;
            elsif v_dtype = 'timestamp' then
                if jsonb_typeof(v_item -> v_key) <> 'string' or ml_private.try_timestamptz(v_item ->> v_key) is null then
                    raise exception '%.%: must be an ISO timestamp for dtype timestamp', v_path, v_key using errcode = '22023';
                end if;
            else
                raise exception '%.%: applies to int, float and timestamp features, not %', v_path, v_key, v_dtype
                    using errcode = '22023';
            end if;
            v_norm := v_norm || jsonb_build_object(v_key, v_item -> v_key);
        end loop;
        if v_item ? 'min' and v_item ? 'max' and (
               (v_dtype <> 'timestamp' and (v_item ->> 'min')::numeric > (v_item ->> 'max')::numeric)
            or (v_dtype = 'timestamp' and (v_item ->> 'min')::timestamptz > (v_item ->> 'max')::timestamptz)) then
            raise exception '%: min (%) is greater than max (%)', v_path, v_item -> 'min', v_item -> 'max' using errcode = '22023';
        end if;

        -- allowed
        if v_item ? 'allowed' then
            if v_dtype not in ('int', 'float', 'text', 'category') then
                raise exception '%.allowed: applies to int, float, text and category features, not %', v_path, v_dtype
                    using errcode = '22023';
            end if;
            if jsonb_typeof(v_item -> 'allowed') <> 'array' or jsonb_array_length(v_item -> 'allowed') = 0 then
                raise exception '%.allowed: must be a non-empty array', v_path using errcode = '22023';
            end if;
            if exists (select 1 from jsonb_array_elements(v_item -> 'allowed') e
                       where jsonb_typeof(e) <> case when v_dtype in ('int', 'float') then 'number' else 'string' end) then
                raise exception '%.allowed: every value must be a %', v_path,
                    case when v_dtype in ('int', 'float') then 'number' else 'string' end using errcode = '22023';
            end if;
            v_norm := v_norm || jsonb_build_object('allowed', v_item -> 'allowed');
        end if;

        -- regex
        if v_item ? 'regex' then
            if v_dtype not in ('text', 'category') then
                raise exception '%.regex: applies to text and category features, not %', v_path, v_dtype using errcode = '22023';
            end if;
            if jsonb_typeof(v_item -> 'regex') <> 'string' then
                raise exception '%.regex: must be a string', v_path using errcode = '22023';
            end if;
            begin
                perform '' ~ (v_item ->> 'regex');
            exception when invalid_regular_expression then
                raise exception '%.regex: not a valid regular expression: %', v_path, sqlerrm using errcode = '22023';
            end;
            v_norm := v_norm || jsonb_build_object('regex', v_item -> 'regex');
        end if;

        -- max_length
        if v_item ? 'max_length' then
            if v_dtype not in ('text', 'category') then
                raise exception '%.max_length: applies to text and category features, not %', v_path, v_dtype
                    using errcode = '22023';
            end if;
            if jsonb_typeof(v_item -> 'max_length') <> 'number'
               or (v_item ->> 'max_length')::numeric not between 1 and 2147483647
               or (v_item ->> 'max_length')::numeric <> trunc((v_item ->> 'max_length')::numeric) then
                raise exception '%.max_length: must be a positive integer up to 2147483647', v_path using errcode = '22023';
            end if;
            v_norm := v_norm || jsonb_build_object('max_length', (v_item ->> 'max_length')::int);
        end if;

        if v_item ? 'description' then
            if jsonb_typeof(v_item -> 'description') not in ('string', 'null') then
                raise exception '%.description: must be a string', v_path using errcode = '22023';
            end if;
            v_norm := v_norm || jsonb_build_object('description', v_item -> 'description');
        end if;
        v_out := v_out || jsonb_build_array(v_norm);
    end loop;
    return v_out;
end
$$;

-- ml_private.try_timestamptz(p_text text) returns timestamptz
-- p_text as a timestamptz, or NULL when it is not one (never raises). ISO 8601 forms are meant;
-- whatever PostgreSQL's input accepts is accepted.
create or replace function ml_private.try_timestamptz(p_text text) returns timestamptz
language plpgsql stable
set search_path = ''
as $$
begin
    return p_text::timestamptz;
exception when others then
    return null;
end
$$;

-- ml_private.feature_json_schema(p_features jsonb) returns jsonb
-- The JSON Schema (draft 2020-12 subset) of one row's values for the normalized features:
-- types, nullability, minimum/maximum, enum, pattern, maxLength, vector length. Timestamp
-- bounds are not expressible in JSON Schema and are checked by the SQL validator only.
create or replace function ml_private.feature_json_schema(p_features jsonb) returns jsonb
language sql immutable
set search_path = ''
as $$
    select jsonb_build_object(
        'type', 'object',
        'additionalProperties', false,
        'required', coalesce((select jsonb_agg(f ->> 'name') from jsonb_array_elements(p_features) f
                              where not (f ->> 'nullable')::boolean), '[]'),
        'properties', coalesce((
            select jsonb_object_agg(f ->> 'name', jsonb_strip_nulls(jsonb_build_object(
                'type', case f ->> 'dtype'
                            when 'int' then '"integer"'::jsonb
                            when 'float' then '"number"'::jsonb
                            when 'bool' then '"boolean"'::jsonb
                            when 'vector' then '"array"'::jsonb
                            else '"string"'::jsonb end
                        || case when (f ->> 'nullable')::boolean then '["null"]'::jsonb else '[]'::jsonb end,
                'minimum', case when f ->> 'dtype' in ('int', 'float') then f -> 'min' end,
                'maximum', case when f ->> 'dtype' in ('int', 'float') then f -> 'max' end,
                'enum', case when f ? 'allowed' then f -> 'allowed'
                                 || case when (f ->> 'nullable')::boolean then '[null]'::jsonb else '[]'::jsonb end end,
                'pattern', f -> 'regex',
                'maxLength', f -> 'max_length',
                'items', case when f ->> 'dtype' = 'vector' then '{"type": "number"}'::jsonb end,
                'minItems', case when f ->> 'dtype' = 'vector' then f -> 'dim' end,
                'maxItems', case when f ->> 'dtype' = 'vector' then f -> 'dim' end)))
            from jsonb_array_elements(p_features) f), '{}'))
$$;

------------------------------------------------------------------------------------------------
-- Storage: the tables of a group version
------------------------------------------------------------------------------------------------

-- ml_private.feature_sql_type(p_spec jsonb) returns text
-- The column type of a normalized feature spec: int -> bigint, float -> double precision, bool
-- -> boolean, text and category -> text, timestamp -> timestamptz, vector(n) -> pgvector's
-- vector(n) (schema-qualified; single precision), or double precision[] when pgvector is not
-- installed. Raises 22023 for an unknown dtype (normalize_feature_schema lets none through).
create or replace function ml_private.feature_sql_type(p_spec jsonb) returns text
language plpgsql stable
set search_path = ''
as $$
declare
    v_vector_schema name;
begin
    case p_spec ->> 'dtype'
        when 'int' then return 'bigint';
        when 'float' then return 'double precision';
        when 'bool' then return 'boolean';
        when 'text', 'category' then return 'text';
        when 'timestamp' then return 'timestamptz';
        when 'vector' then
            select n.nspname into v_vector_schema
            from pg_extension e join pg_namespace n on n.oid = e.extnamespace where e.extname = 'vector';
            if v_vector_schema is null then
                return 'double precision[]';
            end if;
            return format('%I.vector(%s)', v_vector_schema, (p_spec ->> 'dim')::int);
        else
            raise exception 'feature %: unknown dtype %', p_spec ->> 'name', p_spec ->> 'dtype' using errcode = '22023';
    end case;
end
$$;

-- ml_private.create_feature_tables(p_group_id uuid) returns void
-- Makes the two tables of the feature group version p_group_id and records them in
-- ml.feature_groups (offline_table, online_table):
--   ml_features.fg_<id without dashes>         the offline table: tenant_id uuid, entity_key
--       text, event_time timestamptz, one column per feature named as the feature (in declared
--       order; NOT NULL when the feature is not nullable), ingested_at timestamptz, ingestion_id
--       uuid; primary key (tenant_id, entity_key, event_time); time-partitioned by event_time in
--       30-day chunks (ml_private.create_time_partitioned_table: a hypertable, or native partitions)
--   ml_features.fg_<id without dashes>_online  the online table: the same columns, primary key
--       (tenant_id, entity_key)
-- Both hold the rows of the version's tenant only (a CHECK on tenant_id) and are tenant tables
-- (ml_private.enable_tenant_rls: RLS forced, read by members, partitions secured). Identifiers
-- come from format('%I'), so feature names cannot inject SQL (normalize_feature_schema also
-- restricts them to [a-z_][a-z0-9_]*). Names do not carry the group's name: the catalog, which
-- every role can read, shows a version's id and feature names, never its group name or values.
-- Raises P0002 unknown version. Callers: ml.create_feature_group and migrations (owner only).
create or replace function ml_private.create_feature_tables(p_group_id uuid) returns void
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_group   ml.feature_groups;
    v_name    text;
    v_columns text;
begin
    select * into v_group from ml.feature_groups g where g.id = p_group_id;
    if v_group.id is null then
        raise exception 'feature group version % does not exist', p_group_id using errcode = 'P0002';
    end if;
    v_name := 'fg_' || replace(v_group.id::text, '-', '');
    select string_agg(format('%I %s%s', f ->> 'name', ml_private.feature_sql_type(f),
                             case when (f ->> 'nullable')::boolean then '' else ' not null' end), ', ' order by o)
    into v_columns
    from jsonb_array_elements(v_group.features) with ordinality x (f, o);
    v_columns := format('tenant_id uuid not null, entity_key text not null, event_time timestamptz not null, %s, '
                        'ingested_at timestamptz not null default now(), ingestion_id uuid', v_columns);

    perform ml_private.create_time_partitioned_table('ml_features', v_name,
        v_columns || format(', constraint %I check (tenant_id = %L), constraint %I primary key (tenant_id, entity_key, event_time)',
                            v_name || '_tenant', v_group.tenant_id, v_name || '_pkey'),
        'event_time', interval '30 days');
    -- fillfactor 90: an entity's newer row replaces its older one in place (a HOT update).
    execute format('create table ml_features.%I (%s, constraint %I check (tenant_id = %L), constraint %I primary key (tenant_id, entity_key))
                    with (fillfactor = 90)',
                   v_name || '_online', v_columns, v_name || '_online_tenant', v_group.tenant_id, v_name || '_online_pkey');
    perform ml_private.enable_tenant_rls(format('ml_features.%I', v_name)::regclass);
    perform ml_private.enable_tenant_rls(format('ml_features.%I', v_name || '_online')::regclass);

    update ml.feature_groups g
    set offline_table = format('ml_features.%I', v_name)::regclass,
        online_table = format('ml_features.%I', v_name || '_online')::regclass
    where g.id = v_group.id;
end
$$;

------------------------------------------------------------------------------------------------
-- Finding groups and features
------------------------------------------------------------------------------------------------

-- ml_private.find_feature_group(p_tenant uuid, p_ref text, p_for_write boolean default false)
-- returns ml.feature_groups
-- The group version p_ref names in p_tenant: 'name' (the current version: newest active one,
-- else newest not archived) or 'name@version'. With p_for_write, an archived version raises.
-- Raises 22023 malformed reference; P0002 unknown group or version; 55000 archived (for writes).
create or replace function ml_private.find_feature_group(p_tenant uuid, p_ref text, p_for_write boolean default false)
returns ml.feature_groups
language plpgsql stable security definer
set search_path = ''
as $$
declare
    v_match text[] := regexp_match(btrim(p_ref), '^([a-z][a-z0-9_]{0,62})(?:@([0-9]{1,9}))?$');
    v_group ml.feature_groups;
begin
    if v_match is null then
        raise exception 'group: % is not a feature group reference (name or name@version)', coalesce(quote_literal(p_ref), 'NULL')
            using errcode = '22023';
    end if;
    if v_match[2] is not null then
        select * into v_group from ml.feature_groups g
        where g.tenant_id = p_tenant and g.name = v_match[1] and g.version = v_match[2]::int;
    else
        select * into v_group from ml.feature_groups g
        where g.tenant_id = p_tenant and g.name = v_match[1] and g.status <> 'archived'
        order by (g.status = 'active') desc, g.version desc limit 1;
    end if;
    if v_group.id is null then
        if exists (select 1 from ml.feature_groups g where g.tenant_id = p_tenant and g.name = v_match[1]) then
            raise exception 'feature group % has no % version', quote_literal(v_match[1]),
                coalesce(v_match[2], 'readable (all are archived; name one as name@version)')
                using errcode = 'P0002';
        end if;
        raise exception 'feature group % does not exist', quote_literal(v_match[1])
            using errcode = 'P0002', hint = 'Create it with ml.create_feature_group(...).';
    end if;
    if p_for_write and v_group.status = 'archived' then
        raise exception 'feature group % version % is archived and refuses writes', v_group.name, v_group.version
            using errcode = '55000', hint = 'Create a new version with ml.create_feature_group(...).';
    end if;
    return v_group;
end
$$;

-- ml_private.resolve_features(p_tenant uuid, p_refs text[])
-- returns table (ord int, ref text, group_id uuid, group_name text, version int, feature text,
--                dtype text, ttl interval, join_key text, event_time_column text)
-- Each reference 'group:feature' or 'group@version:feature' resolved, in the order given.
-- Raises 22023 empty list, malformed or repeated reference; P0002 unknown group or version;
-- 42703 a feature the group does not have (the message lists the ones it has).
create or replace function ml_private.resolve_features(p_tenant uuid, p_refs text[])
returns table (ord int, ref text, group_id uuid, group_name text, version int, feature text,
               dtype text, ttl interval, join_key text, event_time_column text)
language plpgsql stable security definer
set search_path = ''
-- A few references per call: the default estimate (1000 rows) makes the planner scan the whole
-- online store instead of probing its key.
rows 10
as $$
declare
    v_i     int;
    v_ref   text;
    v_parts text[];
    v_group ml.feature_groups;
    v_last  text;
    v_spec  jsonb;
begin
    if p_refs is null or cardinality(p_refs) = 0 then
        raise exception 'features: must name at least one feature (group:feature)' using errcode = '22023';
    end if;
    if cardinality(p_refs) <> (select count(distinct r) from unnest(p_refs) r) then
        raise exception 'features: each feature may be named once' using errcode = '22023';
    end if;
    for v_i in 1 .. cardinality(p_refs) loop
        v_ref := p_refs[v_i];
        v_parts := regexp_match(coalesce(v_ref, ''), '^([^:]+):([^:]+)$');
        if v_parts is null then
            raise exception 'features[%]: % is not a feature reference (group:feature or group@version:feature)',
                v_i, coalesce(quote_literal(v_ref), 'NULL') using errcode = '22023';
        end if;
        if v_last is distinct from v_parts[1] then  -- references of one group usually come together
            v_group := ml_private.find_feature_group(p_tenant, v_parts[1]);
            v_last := v_parts[1];
        end if;
        select f into v_spec from jsonb_array_elements(v_group.features) f where f ->> 'name' = btrim(v_parts[2]);
        if v_spec is null then
            raise exception 'features[%]: feature group % version % has no feature % (it has: %)', v_i,
                v_group.name, v_group.version, quote_literal(btrim(v_parts[2])),
                (select string_agg(f ->> 'name', ', ') from jsonb_array_elements(v_group.features) f)
                using errcode = '42703';
        end if;
        ord := v_i; ref := v_ref; group_id := v_group.id; group_name := v_group.name; version := v_group.version;
        feature := v_spec ->> 'name'; dtype := v_spec ->> 'dtype'; ttl := v_group.ttl;
        join_key := v_group.join_key; event_time_column := v_group.event_time_column;
        return next;
    end loop;
end
$$;

------------------------------------------------------------------------------------------------
-- API: feature groups
------------------------------------------------------------------------------------------------

-- ml.create_feature_group(name text, entity text, schema jsonb, ttl interval default null,
--                         description text default null, join_key text default null,
--                         event_time_column text default 'event_time', status text default 'active')
-- returns uuid
-- Creates a feature group, or a new version of an existing one (version = newest + 1; older
-- versions stay readable, as 'name@version'). `entity` names what the rows describe; `join_key`
-- (default: the entity's name) is the key column in ingested rows and training spines;
-- `event_time_column` the time column. `ttl` bounds how old a value may be when read (NULL: no
-- limit). `schema`: see ml_private.normalize_feature_schema; feature names may not be the join
-- key, the event time column, or a column of the version's tables (tenant_id, entity_key,
-- event_time, ingested_at, ingestion_id) nor label. Makes the version's offline and online
-- tables (ml_private.create_feature_tables). Returns the new version's id and publishes
-- 'feature_group.created' (topic 'features').
-- Raises 22023 on a bad name, entity, key, ttl, status or schema (naming the rule); 42501 for
-- viewers and non-members. Callers: authenticated (owner, admin, ml_engineer), service_role.
create or replace function ml.create_feature_group(
    name text, entity text, schema jsonb, ttl interval default null, description text default null,
    join_key text default null, event_time_column text default 'event_time', status text default 'active')
returns uuid
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_tenant   uuid;
    v_join_key text := lower(btrim(coalesce(join_key, entity)));
    v_time_col text := lower(btrim(event_time_column));
    v_features jsonb;
    v_version  int;
    v_id       uuid;
begin
    if name is null or name !~ '^[a-z][a-z0-9_]{0,62}$' then
        raise exception 'name: % must be lowercase letters, digits and _ (1 to 63, starting with a letter)',
            coalesce(quote_literal(name), 'NULL') using errcode = '22023';
    end if;
    if entity is null or entity !~ '^[a-z][a-z0-9_]{0,62}$' then
        raise exception 'entity: % must be lowercase letters, digits and _ (1 to 63, starting with a letter)',
            coalesce(quote_literal(entity), 'NULL') using errcode = '22023';
    end if;
    if v_join_key !~ '^[a-z_][a-z0-9_]{0,62}$' then
        raise exception 'join_key: % must be lowercase letters, digits and _', quote_literal(v_join_key) using errcode = '22023';
    end if;
    if v_time_col is null or v_time_col !~ '^[a-z_][a-z0-9_]{0,62}$' or v_time_col = v_join_key then
        raise exception 'event_time_column: % must be lowercase letters, digits and _, and differ from the join key',
            coalesce(quote_literal(v_time_col), 'NULL') using errcode = '22023';
    end if;
    if ttl is not null and ttl <= interval '0' then
        raise exception 'ttl: must be a positive interval or NULL, got %', ttl using errcode = '22023';
    end if;
    if status is null or status not in ('draft', 'active', 'deprecated', 'archived') then
        raise exception 'status: must be one of draft, active, deprecated, archived; got %', coalesce(quote_literal(status), 'NULL')
            using errcode = '22023';
    end if;
    v_features := ml_private.normalize_feature_schema(schema, array[v_join_key, v_time_col]);
    v_tenant := ml_private.acting_tenant_id(true);

    -- Versions of one group are numbered one at a time.
    perform pg_advisory_xact_lock(hashtext('pgmlops.feature_group:' || v_tenant::text || ':' || name));
    select coalesce(max(g.version), 0) + 1 into v_version
    from ml.feature_groups g where g.tenant_id = v_tenant and g.name = create_feature_group.name;

    insert into ml.feature_groups (tenant_id, name, version, status, owner, description, entity, join_key,
                                   event_time_column, ttl, features, json_schema, created_by)
    values (v_tenant, create_feature_group.name, v_version, create_feature_group.status, ml_private.caller_user_id(),
            description, entity, v_join_key, v_time_col, ttl, v_features,
            ml_private.feature_json_schema(v_features), ml_private.caller_user_id())
    returning id into v_id;
    perform ml_private.create_feature_tables(v_id);

    perform ml_private.publish(v_tenant, 'features', 'feature_group.created',
        jsonb_build_object('group_id', v_id, 'name', create_feature_group.name, 'version', v_version));
    return v_id;
end
$$;

-- ml.set_feature_group_status(name text, version int, status text) returns void
-- Moves a group version through its life: draft -> active -> deprecated -> archived (and back
-- from deprecated to active). Archived is final: the version stays readable but refuses writes.
-- Publishes 'feature_group.status'. Raises 22023 unknown status; P0002 unknown group/version;
-- 55000 leaving archived; 42501 for viewers. Callers: owner, admin, ml_engineer; service_role.
create or replace function ml.set_feature_group_status(name text, version int, status text) returns void
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_tenant uuid := ml_private.acting_tenant_id(true);
    v_group  ml.feature_groups;
begin
    if status is null or status not in ('draft', 'active', 'deprecated', 'archived') then
        raise exception 'status: must be one of draft, active, deprecated, archived; got %', coalesce(quote_literal(status), 'NULL')
            using errcode = '22023';
    end if;
    if version is null then
        raise exception 'version: must not be NULL' using errcode = '22023';
    end if;
    v_group := ml_private.find_feature_group(v_tenant, name || '@' || version);
    if v_group.status = 'archived' and status <> 'archived' then
        raise exception 'feature group % version % is archived; archiving is final', v_group.name, v_group.version
            using errcode = '55000';
    end if;
    update ml.feature_groups g set status = set_feature_group_status.status, updated_at = now() where g.id = v_group.id;
    perform ml_private.publish(v_tenant, 'features', 'feature_group.status',
        jsonb_build_object('group_id', v_group.id, 'name', v_group.name, 'version', v_group.version,
                           'from', v_group.status, 'to', status));
end
$$;

-- ml.feature_group(name text) returns jsonb
-- The group version `name` ('name' or 'name@version') names, as jsonb: id, name, version,
-- status, entity, join_key, event_time_column, ttl, features, description, created_at, its
-- versions, offline_table and online_table (the tables holding its values) and `entities`
-- (entities in the online store). Raises like ml_private.find_feature_group. Callers: any member.
create or replace function ml.feature_group(name text) returns jsonb
language plpgsql stable security definer
set search_path = ''
as $$
declare
    v_group    ml.feature_groups := ml_private.find_feature_group(ml_private.acting_tenant_id(false), name);
    v_entities bigint;
begin
    execute format('select count(*) from %s where tenant_id = $1', v_group.online_table) into v_entities using v_group.tenant_id;
    return jsonb_build_object(
        'id', v_group.id, 'name', v_group.name, 'version', v_group.version, 'status', v_group.status,
        'entity', v_group.entity, 'join_key', v_group.join_key, 'event_time_column', v_group.event_time_column,
        'ttl', v_group.ttl, 'description', v_group.description, 'features', v_group.features,
        'created_at', v_group.created_at,
        'versions', (select jsonb_agg(jsonb_build_object('version', g.version, 'status', g.status) order by g.version)
                     from ml.feature_groups g where g.tenant_id = v_group.tenant_id and g.name = v_group.name),
        'offline_table', v_group.offline_table::text, 'online_table', v_group.online_table::text,
        'entities', v_entities);
end
$$;

------------------------------------------------------------------------------------------------
-- Grants
------------------------------------------------------------------------------------------------

grant execute on function
    ml.create_feature_group(text, text, jsonb, interval, text, text, text, text),
    ml.set_feature_group_status(text, int, text),
    ml.feature_group(text)
to authenticated, service_role;
