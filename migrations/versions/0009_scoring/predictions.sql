-- pgmlops 0009: the prediction log (docs/serving.md)
--
-- ml.predictions: one row per scored call and arm (a shadow arm's row points at the live row it
-- shadowed; a shadow arm that failed has its error and no prediction). Time-partitioned (a
-- hypertable when TimescaleDB is present, daily chunks), kept 90 days by default
-- (ml.set_prediction_retention changes it, for every tenant: the retention is the table's). No
-- foreign keys, as on the other bulk time-series tables: deleting a tenant erases its rows
-- through the tenant erasure trigger.

select ml_private.create_time_partitioned_table(
    'ml', 'predictions',
    $cols$
        id               uuid not null default gen_random_uuid(),
        tenant_id        uuid not null,
        project_id       uuid not null,
        deployment_id    uuid,
        arm              text,
        model_version_id uuid not null,
        shadow_of        uuid,
        entity_key       text,
        features         jsonb,
        prediction       jsonb,
        score            float8,
        probabilities    jsonb,
        latency_ms       float8,
        error            text,
        source           text not null default 'online',
        created_at       timestamptz not null default now()
    $cols$,
    'created_at', interval '1 day', interval '90 days');
create index predictions_tenant_time_idx on ml.predictions (tenant_id, project_id, created_at desc);
create index predictions_id_idx on ml.predictions (id);
create index predictions_entity_idx on ml.predictions (tenant_id, project_id, entity_key, created_at desc) where entity_key is not null;
comment on table ml.predictions is 'Prediction log: every ml.predict call (and shadow arm), its inputs, result, arm and latency';
select ml_private.enable_tenant_rls('ml.predictions');
-- The partitions get the table's row-level security (revision 0005), whichever version of
-- ml_private.create_time_partitioned_table ran above: on a database upgraded from scratch the
-- repeatable sql/ is applied only at the head, after this revision.
do $$
begin
    if (select mode from ml_private.time_partitioned_tables where table_name = 'ml.predictions') = 'hypertable' then
        create or replace trigger secure_new_chunks after insert or update on ml.predictions
            for each statement execute function ml_private.note_new_partitions();
    end if;
end
$$;
select ml_private.secure_partitions('ml.predictions');

-- How ml.predict reads a compiled version's features from the online store (an entity key, no
-- features): per feature group version, the query of its online table, written once from the
-- version's training set by ml_private.online_lookup (sql/scoring/predict.sql) at the first such
-- call, so later calls skip resolving it (0.5 ms a call). Owner only: ml.predict executes the
-- text, so no client role may write it.
create table ml_private.online_lookups (
    model_version_id uuid primary key references ml.model_versions (id) on delete cascade,
    lookup           jsonb not null,
    created_at       timestamptz not null default now()
);
comment on table ml_private.online_lookups is 'ml.predict: how each compiled version reads its features from the online store (owner only)';
