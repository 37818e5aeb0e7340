-- pgmlops 0007, downgrade: the values go back to ml.feature_values / ml.feature_online (jsonb),
-- the per-version tables, the columns that name them and schema ml_features go.

do $$
declare
    v_group ml.feature_groups;
    v_json  text;
    v_from  timestamptz;
    v_to    timestamptz;
begin
    perform set_config('timezone', 'UTC', true);  -- timestamps go back as ISO text in UTC, as ml.ingest wrote them
    if to_regclass('ml.feature_values') is null then
        perform ml_private.create_time_partitioned_table(
            'ml', 'feature_values',
            $cols$
                tenant_id   uuid not null,
                group_id    uuid not null,
                entity_key  text not null,
                event_time  timestamptz not null,
                values      jsonb not null,
                ingested_at timestamptz not null default now(),
                ingestion_id uuid,
                constraint feature_values_key unique (tenant_id, group_id, entity_key, event_time)
            $cols$,
            'event_time', interval '30 days');
        comment on table ml.feature_values is 'Every feature value ingested, by group version, entity key and event time (offline store)';
        perform ml_private.enable_tenant_rls('ml.feature_values');
        create table ml.feature_online (
            tenant_id  uuid not null,
            group_id   uuid not null,
            entity_key text not null,
            event_time timestamptz not null,
            values     jsonb not null,
            updated_at timestamptz not null default now(),
            primary key (tenant_id, group_id, entity_key)
        );
        comment on table ml.feature_online is 'Online store: the latest values per group version and entity key';
        perform ml_private.enable_tenant_rls('ml.feature_online');

        for v_group in select * from ml.feature_groups g where g.offline_table is not null order by g.tenant_id, g.name, g.version loop
            -- The values as ml.ingest stored them: one jsonb object without the nulls; vectors as arrays.
            select 'jsonb_strip_nulls(' || string_agg(
                       format('jsonb_build_object(%s)', p.pairs), ' || ') || ')'
            into v_json
            from (select string_agg(format('%L, %s', f ->> 'name',
                                           case when f ->> 'dtype' = 'vector' then format('(x.%I)::text::jsonb', f ->> 'name')
                                                else format('to_jsonb(x.%I)', f ->> 'name') end), ', ' order by o) as pairs
                  from jsonb_array_elements(v_group.features) with ordinality e (f, o)
                  group by (o - 1) / 50) p;  -- jsonb_build_object takes at most 100 arguments
            execute format('select min(event_time), max(event_time) from %s', v_group.offline_table) into v_from, v_to;
            if v_from is not null then
                perform ml_private.ensure_time_partitions('ml.feature_values', v_from, v_to);
            end if;
            execute format(
                'insert into ml.feature_values (tenant_id, group_id, entity_key, event_time, values, ingested_at, ingestion_id)
                 select x.tenant_id, $1, x.entity_key, x.event_time, %s, x.ingested_at, x.ingestion_id from %s x',
                v_json, v_group.offline_table) using v_group.id;
            execute format(
                'insert into ml.feature_online (tenant_id, group_id, entity_key, event_time, values, updated_at)
                 select x.tenant_id, $1, x.entity_key, x.event_time, %s, x.ingested_at from %s x',
                v_json, v_group.online_table) using v_group.id;
        end loop;
    end if;

    -- The per-version tables (dropping a hypertable drops its chunks).
    for v_group in select * from ml.feature_groups g where g.offline_table is not null loop
        delete from ml_private.tenant_tables where table_name in (v_group.offline_table::text, v_group.online_table::text);
        delete from ml_private.time_partitioned_tables where table_name = v_group.offline_table::text;
        execute format('drop table if exists %s, %s', v_group.offline_table, v_group.online_table);
    end loop;
end
$$;

alter table ml.feature_groups drop column offline_table, drop column online_table;
drop schema ml_features;

-- Deleting a group version deletes its values again (0003's trigger function).
create or replace function ml_private.feature_groups_delete_values() returns trigger
language plpgsql security definer
set search_path = ''
as $$
begin
    delete from ml.feature_values v using old_rows o where v.tenant_id = o.tenant_id and v.group_id = o.id;
    delete from ml.feature_online v using old_rows o where v.tenant_id = o.tenant_id and v.group_id = o.id;
    return null;
end
$$;
