-- pgmlops: row-level security, behaviour with seeded data (pgTAP)
--
-- Two tenants A and B; users ownerA (owner of A), viewerA (viewer of A), ownerB (owner of B).
-- Every tenant-owned table (ml.tenants plus those registered in ml_private.tenant_tables) is
-- seeded for both tenants, then read and written as anon, ownerA, viewerA and service_role the
-- way PostgREST runs a request: role switched for the transaction, claims in request.jwt.claims.
--
-- pgTAP keeps its bookkeeping in temp tables that other roles cannot use, so no pgTAP function
-- runs while the role is switched: pgmlops_tests.as_role() switches, runs one statement and switches back,
-- returning what happened as text; the assertions compare that text afterwards.
--
-- Adding a tenant table: seed it in the SEED block below, for both tenants, through its SQL API
-- (a few lines inside the loop over 'A' and 'B'). Until you do, "<table>: seeded for tenant A/B"
-- fails, so a new table is never checked vacuously. Seed tests/rls_seed.py the same way: the
-- Python suite (tests/test_rls.py) runs these checks again as PostgREST would, and this file.
--
-- Run: pg_prove -d <db> supabase/tests/*.sql   (on a migrated database with `create extension pgtap`),
-- or `supabase test db`. Helpers live in schema pgmlops_tests, made and dropped with the
-- transaction (not `tests`, which Supabase's test helpers from database.dev may already use).

begin;
select * from no_plan();

create schema pgmlops_tests;

------------------------------------------------------------------------------------------------
-- Helpers
------------------------------------------------------------------------------------------------

-- Named ids (tenants, users, jobs) of this run.
create table pgmlops_tests.ids (name text primary key, id text not null);
create function pgmlops_tests.id(p_name text) returns text
language sql stable
as $$ select id from pgmlops_tests.ids where name = p_name $$;

-- Every tenant-owned table with the column that names its tenant, in a stable order.
create function pgmlops_tests.tenant_tables()
returns table (tbl regclass, key_col name, client_writable boolean)
language sql stable
as $$
    select x.tbl, x.key_col, x.client_writable
    from (
        select 'ml.tenants'::regclass as tbl, 'id'::name as key_col, false as client_writable
        union all
        select to_regclass(t.table_name), 'tenant_id'::name, t.client_writable
        from ml_private.tenant_tables t
    ) x
    where x.tbl is not null
    order by x.tbl::text
$$;

-- pgmlops_tests.as_role(role, claims, sql, settings default '{}', keep default false) returns text
-- Runs one statement as `role` with `claims` in request.jwt.claims (and the transaction-local
-- `settings`, e.g. pgmlops.tenant_id), as PostgREST would. Returns 'ok:<rows affected or
-- returned>' or the SQLSTATE it raised. Unless `keep`, the statement is always rolled back
-- (it ends by raising P0T01); either way the role and claims are back to what they were.
create function pgmlops_tests.as_role(p_role text, p_claims jsonb, p_sql text,
                              p_settings jsonb default '{}', p_keep boolean default false)
returns text
language plpgsql
as $$
declare
    v_rows   bigint;
    v_role   text := current_setting('role');
    v_claims text := coalesce(current_setting('request.jwt.claims', true), '');
    v_set    record;
begin
    begin
        for v_set in select * from jsonb_each_text(p_settings) loop
            perform set_config(v_set.key, v_set.value, true);
        end loop;
        perform set_config('request.jwt.claims', coalesce(p_claims::text, ''), true);
        perform set_config('role', p_role, true);
        execute p_sql;
        get diagnostics v_rows = row_count;
        if p_keep then
            perform set_config('role', v_role, true);
            perform set_config('request.jwt.claims', v_claims, true);
            for v_set in select * from jsonb_each_text(p_settings) loop
                perform set_config(v_set.key, '', true);
            end loop;
            return 'ok:' || v_rows;
        end if;
        raise exception using errcode = 'P0T01', message = 'ok:' || v_rows;
    exception when others then
        if sqlstate = 'P0T01' then
            return sqlerrm;
        end if;
        return sqlstate;
    end;
end
$$;

-- The JWT claims PostgREST would set for a user.
create function pgmlops_tests.claims(p_user text) returns jsonb
language sql stable
as $$
    select case p_user
        when 'anon' then '{"role": "anon"}'::jsonb
        when 'service_role' then '{"role": "service_role"}'::jsonb
        else jsonb_build_object('sub', pgmlops_tests.id(p_user), 'role', 'authenticated')
    end
$$;

-- Rows of p_table whose key column is p_tenant: their number and a digest of their contents.
create function pgmlops_tests.rows_of(p_table regclass, p_key name, p_tenant text) returns text
language plpgsql stable
as $$
declare
    v_out text;
begin
    execute format('select count(*) || '':'' || md5(coalesce(string_agg(x::text, ''|'' order by x::text), ''''))
                    from %s x where %I = %L', p_table, p_key, p_tenant)
        into v_out;
    return v_out;
end
$$;

create function pgmlops_tests.count_of(p_table regclass, p_key name, p_tenant text) returns bigint
language sql stable
as $$ select split_part(pgmlops_tests.rows_of(p_table, p_key, p_tenant), ':', 1)::bigint $$;

-- An INSERT re-creating one row of p_table with p_key = p_tenant (the row as jsonb, so the
-- statement carries literals only and the switched role needs nothing but the table).
create function pgmlops_tests.copy_row_sql(p_table regclass, p_key name, p_tenant text) returns text
language plpgsql stable
as $$
declare
    v_row  jsonb;
    v_cols text;
begin
    execute format('select to_jsonb(x) from %s x where %I = %L limit 1', p_table, p_key, p_tenant) into v_row;
    select string_agg(quote_ident(a.attname), ', ' order by a.attnum) into v_cols
    from pg_attribute a
    where a.attrelid = p_table and a.attnum > 0 and not a.attisdropped and a.attgenerated = '';
    return format('insert into %s (%s) overriding system value select %s from jsonb_populate_record(null::%s, %L::jsonb)',
                  p_table, v_cols, v_cols, p_table, v_row);
end
$$;

-- Partitions and TimescaleDB chunks of p_table, at any depth.
create function pgmlops_tests.descendants(p_table regclass) returns setof regclass
language sql stable
as $$
    with recursive d (oid) as (
        select i.inhrelid from pg_inherits i where i.inhparent = p_table
        union
        select i.inhrelid from pg_inherits i join d on i.inhparent = d.oid
    )
    select d.oid::regclass from d order by d.oid::regclass::text
$$;

------------------------------------------------------------------------------------------------
-- Tenants and users (as the superuser, i.e. a service caller)
------------------------------------------------------------------------------------------------

do $$
begin
    insert into pgmlops_tests.ids (name, id) values
        ('ownerA', gen_random_uuid()::text),
        ('viewerA', gen_random_uuid()::text),
        ('ownerB', gen_random_uuid()::text);
    -- On Supabase, members are auth users (ml.tenant_members.user_id references auth.users).
    if to_regclass('auth.users') is not null then
        execute 'insert into auth.users (id, aud, role, email)
                 select id::uuid, ''authenticated'', ''authenticated'', name || ''@pgmlops-rls.test''
                 from pgmlops_tests.ids';
    end if;
    insert into pgmlops_tests.ids (name, id) values ('A', ml.create_tenant('rls test A', pgmlops_tests.id('ownerA')::uuid)::text);
    insert into pgmlops_tests.ids (name, id) values ('B', ml.create_tenant('rls test B', pgmlops_tests.id('ownerB')::uuid)::text);
    perform ml.add_tenant_member(pgmlops_tests.id('A')::uuid, pgmlops_tests.id('viewerA')::uuid, 'viewer');
end
$$;

--==============================================================================================
-- SEED: at least one row of EVERY registered tenant table, for tenant A and for tenant B.
--
-- When a migration registers a new tenant table (ml_private.enable_tenant_rls), seed it here for
-- both tenants, inside the loop, through its SQL API where it has one, acting as a service caller
-- for the tenant (pgmlops.tenant_id is set). Keep ids the later checks need in pgmlops_tests.ids.
--
--   ml.tenants, ml.tenant_members   by ml.create_tenant / ml.add_tenant_member above
--   ml.jobs                         an echo job per tenant (ids jobA, jobB)
--   ml.events                       job.queued, published by ml.enqueue
--   ml.feature_*, ml_features.*     a feature group (its version's offline and online tables in
--                                   ml_features, one pair per tenant), one ingestion in quarantine mode
--   ml.datasets, ml.lineage         a training set over that group
--   ml.feature_stats                ml.compute_feature_stats of that group
--   ml.projects, runs, run_metrics, a project, a finished run on that training set with metrics,
--   models, model_versions,         a registered version (small bytes, their real SHA-256), the
--   model_aliases,                  alias challenger, a promotion policy, the owner's approval
--   promotion_policies,             (made with the owner's claims: approvals are people's), and
--   model_approvals, audit_log      the audit rows of those changes
--   ml.tuning_studies               a one-trial study of an anomaly-detection project
--   ml.deployments, deployment_arms, rls-model version 1 compiled (ml.install_compiled_model),
--   predictions, feedback           deployed alone, one prediction (ids predictionA/B), its outcome
--   ml.batch_scorings               a queued ml.score of a one-row query with that deployment
--   ml.reference_profiles           the training set's profile (made by ml.create_training_set)
--   ml.monitoring_schedules         ml.schedule_monitoring of rls-project
--   ml.drift_reports, drift_results, two ml.drift_report of rls-project's last day (exact, with
--   performance_results, alerts,    spend's threshold at 0 so it drifts and raises alerts; fast,
--   window_embeddings,              which rolls the log up to its watermark)
--   window_watermarks
--   ml.window_counts                inserted directly: no seeded prediction is older than the
--                                   rollup horizon within the seed's one transaction
--   ml.retraining_policies,         rls-project's retraining policy, then its triggers judged on
--   retraining_events               the exact report (spend drifted: a 'trigger' event)
--==============================================================================================

do $$
declare
    v_tenant text;
    v_run    uuid;
begin
    foreach v_tenant in array array['A', 'B'] loop
        perform set_config('pgmlops.tenant_id', pgmlops_tests.id(v_tenant), true);

        -- ml.jobs and ml.events
        insert into pgmlops_tests.ids (name, id)
        values ('job' || v_tenant, ml.enqueue('echo', jsonb_build_object('message', v_tenant))::text);

        -- ml.feature_groups, feature_ingestions, feature_quarantine, and the version's tables in
        -- ml_features: a group and one ingestion in quarantine mode (a valid row and an invalid one).
        perform ml.create_feature_group('rls_customer', 'customer', '{"spend": {"dtype": "float", "min": 0}}', '30 days');
        perform ml.ingest('rls_customer', '[{"customer": "c1", "event_time": "2026-01-01T00:00:00Z", "spend": 10.5},
                                            {"customer": "c2", "event_time": "2026-01-01T00:00:00Z", "spend": -1}]',
                          'quarantine');

        -- ml.datasets and ml.lineage: a training set over that group.
        perform ml.create_training_set('rls_training', $q$select 'c1' as customer, timestamptz '2026-01-02' as event_time$q$,
                                       array['rls_customer:spend']);

        -- ml.feature_stats
        perform ml.compute_feature_stats('rls_customer');

        -- ml.projects, runs, run_metrics, models, model_versions, model_aliases, promotion_policies,
        -- model_approvals, audit_log: a run on that training set, its registered model version, an
        -- alias, a policy, and the owner's approval.
        perform ml.create_project('rls-project', 'classification', 'label');
        select ml.start_run(p.id, null, 'logistic_regression', '{}', '{}', d.id, '{"sklearn": "rls"}') into v_run
        from ml.projects p, ml.datasets d
        where p.tenant_id = pgmlops_tests.id(v_tenant)::uuid and p.name = 'rls-project'
          and d.tenant_id = pgmlops_tests.id(v_tenant)::uuid and d.name = 'rls_training';
        perform ml.log_run_metrics(v_run, 1, '{"loss": 0.5}');
        perform ml.finish_run(v_run, 'succeeded', '{"roc_auc": 0.9}', 0.1, 3, 0.2);
        perform ml.register_model_version(v_run, 'rls-model', convert_to('rls artifact ' || v_tenant, 'UTF8'), 'skops',
                                          encode(sha256(convert_to('rls artifact ' || v_tenant, 'UTF8')), 'hex'),
                                          '{"inputs": [{"name": "spend", "dtype": "float"}], "outputs": [{"name": "label", "dtype": "int"}]}',
                                          null);
        perform ml.set_alias('rls-model', 'challenger', 1);
        perform ml.set_promotion_policy('rls-project', 'champion', '{"min_approvals": 1}');
        perform set_config('request.jwt.claims', pgmlops_tests.claims('owner' || v_tenant)::text, true);
        perform ml.approve('rls-model', 1, 'approved', 'rls seed');
        perform set_config('request.jwt.claims', '', true);

        -- ml.tuning_studies: a one-trial study of an anomaly-detection project (no target, so the
        -- unlabelled training set above will do); its jobs join ml.jobs.
        perform ml.create_project('rls-anomalies', 'anomaly_detection', null);
        perform ml.tune('rls-anomalies', d.id, 'isolation_forest', '{"n_estimators": {"type": "int", "low": 10, "high": 50}}', 1)
        from ml.datasets d where d.tenant_id = pgmlops_tests.id(v_tenant)::uuid and d.name = 'rls_training';

        -- ml.deployments, deployment_arms, predictions, feedback: rls-model version 1 (approved
        -- above, so it passes the champion policy's gate) compiled from the description of a
        -- logistic regression on spend (as pgmlops.scoring.describe writes one), deployed alone,
        -- one logged prediction and its realized outcome.
        perform ml.install_compiled_model(v.id,
            '{"format": 1, "task": "classification", "estimator_name": "LogisticRegression",
              "inputs": {"numeric": 1, "categorical": 0}, "features": [{"num": 1, "ops": []}],
              "estimator": {"kind": "linear", "coef": [[0.697816651000343]], "intercept": [-4.283542512790246]},
              "output": {"kind": "classification", "labels": [0, 1], "probability": "sigmoid", "label": "gt0", "decision": true}}')
        from ml.model_versions v join ml.models m on m.id = v.model_id
        where m.tenant_id = pgmlops_tests.id(v_tenant)::uuid and m.name = 'rls-model' and v.version = 1;
        perform ml.deploy('rls-project', 'single', '[{"arm": "main", "model": "rls-model", "version": 1, "weight": 1}]');
        insert into pgmlops_tests.ids (name, id)
        values ('prediction' || v_tenant, ml.predict('rls-project', '{"spend": 10.5}', 'c1') ->> 'prediction_id');
        perform ml.record_feedback(pgmlops_tests.id('prediction' || v_tenant)::uuid, '1', 'rls seed');

        -- ml.batch_scorings: a queued batch scoring (its score job joins ml.jobs) of a one-row
        -- query with that deployment, into a table made by A's call and appended to by B's.
        perform ml.score('rls-project', $q$select 'c1' as customer, 10.5::float8 as spend$q$, 'pgmlops_tests.rls_scores');

        -- ml.monitoring_schedules: a daily drift report of rls-project's last day.
        perform ml.schedule_monitoring('rls-project', '@daily', '1 day');

        -- ml.drift_reports, drift_results, performance_results, window_embeddings, alerts,
        -- window_watermarks: two drift reports of rls-project's last day (the prediction above and
        -- its feedback): an exact one with spend's threshold at 0, so spend drifts (a distance
        -- drifts at >= its threshold) and alerts are raised, then a fast one, which first rolls the
        -- prediction log up to the rollup horizon (its watermark).
        perform ml.drift_report('rls-project', now() - interval '1 day', now() + interval '1 minute',
                                '{"features": {"spend": {"test": "wasserstein", "threshold": 0}}}');
        perform ml.drift_report('rls-project', now() - interval '1 day', now() + interval '1 minute', '{"mode": "fast"}');
        -- ml.window_counts, directly: the rollup counts only predictions older than its horizon (a
        -- minute before the oldest running transaction), and this whole seed is one transaction,
        -- so no seeded prediction can be rolled up yet. The row the rollup would write for it.
        insert into ml.window_counts (tenant_id, project_id, model_version_id, feature, role, bucket, bin, count, total, total_squares)
        select p.tenant_id, p.project_id, p.model_version_id, 'spend', 'input', date_trunc('hour', p.created_at), 1, 1, 10.5, 110.25
        from ml.predictions p join ml.projects j on j.id = p.project_id
        where p.tenant_id = pgmlops_tests.id(v_tenant)::uuid and j.name = 'rls-project'
        limit 1;

        -- ml.retraining_policies, retraining_events: rls-project's retraining policy (retrain when
        -- half the inputs drift), then its triggers judged on the exact report above (spend
        -- drifted, so the trigger fires and is recorded; the reports came before the policy).
        perform ml.set_retraining_policy('rls-project', '{"triggers": [{"type": "dataset_drift", "share": 0.5}]}');
        perform ml_private.check_retraining_triggers(r.id)
        from ml.drift_reports r join ml.projects p on p.id = r.project_id
        where r.tenant_id = pgmlops_tests.id(v_tenant)::uuid and p.name = 'rls-project' and r.mode = 'exact';

        -- Later tables here.
    end loop;

    -- Act for no tenant again: the checks below name their tenant themselves.
    perform set_config('pgmlops.tenant_id', '', true);
end
$$;

--==============================================================================================
-- END SEED
--==============================================================================================

-- The tables of a feature group version (docs/features.md) hold its tenant's rows only: each is
-- seeded for that tenant; every other table for both.
select ok(pgmlops_tests.count_of(t.tbl, t.key_col, pgmlops_tests.id(tenant)) > 0,
          format('%s: seeded for tenant %s', t.tbl, tenant))
from pgmlops_tests.tenant_tables() t, (values ('A'), ('B')) v (tenant)
where not exists (select 1 from ml.feature_groups g where t.tbl in (g.offline_table, g.online_table)
                  and g.tenant_id <> pgmlops_tests.id(tenant)::uuid)
order by t.tbl::text, tenant;
select is((select count(*) from ml.feature_groups g
           where g.tenant_id in (pgmlops_tests.id('A')::uuid, pgmlops_tests.id('B')::uuid) and g.name = 'rls_customer'
             and g.offline_table is not null and g.online_table is not null and g.offline_table <> g.online_table),
          2::bigint, 'ml_features: tenants A and B each have their own offline and online table of rls_customer');

------------------------------------------------------------------------------------------------
-- Every table, every caller
------------------------------------------------------------------------------------------------

create function pgmlops_tests.behaviour_checks() returns setof text
language plpgsql
as $$
declare
    r       record;
    v_a     text := pgmlops_tests.id('A');
    v_b     text := pgmlops_tests.id('B');
    v_rowsA text;
    v_rowsB text;
    v_nA    bigint;
    v_nB    bigint;
    v_who   text;
    v_got   text;
    v_where text;
begin
    for r in select * from pgmlops_tests.tenant_tables() loop
        v_rowsA := pgmlops_tests.rows_of(r.tbl, r.key_col, v_a);
        v_rowsB := pgmlops_tests.rows_of(r.tbl, r.key_col, v_b);
        v_nA := pgmlops_tests.count_of(r.tbl, r.key_col, v_a);
        v_nB := pgmlops_tests.count_of(r.tbl, r.key_col, v_b);

        -- anon: sees nothing, writes nothing.
        return next matches(pgmlops_tests.as_role('anon', pgmlops_tests.claims('anon'), format('select from %s', r.tbl)),
                            '^(ok:0|42501)$', format('%s: anon sees no rows', r.tbl));
        return next is(pgmlops_tests.as_role('anon', pgmlops_tests.claims('anon'), pgmlops_tests.copy_row_sql(r.tbl, r.key_col, v_a)),
                       '42501', format('%s: anon cannot insert', r.tbl));
        return next matches(pgmlops_tests.as_role('anon', pgmlops_tests.claims('anon'),
                                          format('update %s set %I = %I', r.tbl, r.key_col, r.key_col), p_keep => true),
                            '^(ok:0|42501)$', format('%s: anon cannot update', r.tbl));
        return next matches(pgmlops_tests.as_role('anon', pgmlops_tests.claims('anon'), format('delete from %s', r.tbl), p_keep => true),
                            '^(ok:0|42501)$', format('%s: anon cannot delete', r.tbl));

        -- ownerA: A's rows only; B's rows untouchable.
        return next is(pgmlops_tests.as_role('authenticated', pgmlops_tests.claims('ownerA'),
                                     format('select from %s where %I = %L', r.tbl, r.key_col, v_b)),
                       'ok:0', format('%s: ownerA sees none of B''s rows', r.tbl));
        return next is(pgmlops_tests.as_role('authenticated', pgmlops_tests.claims('ownerA'), format('select from %s', r.tbl)),
                       'ok:' || v_nA, format('%s: ownerA sees exactly A''s %s rows', r.tbl, v_nA));
        return next matches(pgmlops_tests.as_role('authenticated', pgmlops_tests.claims('ownerA'),
                                          format('update %s set %I = %I where %I = %L', r.tbl, r.key_col, r.key_col, r.key_col, v_b),
                                          p_keep => true),
                            '^(ok:0|42501)$', format('%s: ownerA updates none of B''s rows', r.tbl));
        return next matches(pgmlops_tests.as_role('authenticated', pgmlops_tests.claims('ownerA'),
                                          format('delete from %s where %I = %L', r.tbl, r.key_col, v_b), p_keep => true),
                            '^(ok:0|42501)$', format('%s: ownerA deletes none of B''s rows', r.tbl));
        return next is(pgmlops_tests.rows_of(r.tbl, r.key_col, v_b), v_rowsB,
                       format('%s: B''s rows are all there, unchanged, after ownerA''s update and delete', r.tbl));
        return next is(pgmlops_tests.as_role('authenticated', pgmlops_tests.claims('ownerA'), pgmlops_tests.copy_row_sql(r.tbl, r.key_col, v_b)),
                       '42501', format('%s: ownerA cannot insert a row for B', r.tbl));
        return next is(pgmlops_tests.as_role('authenticated', pgmlops_tests.claims('ownerA'),
                                     format('update %s set %I = %L where %I = %L', r.tbl, r.key_col, v_b, r.key_col, v_a)),
                       '42501', format('%s: ownerA cannot move A''s rows to B', r.tbl));

        -- viewerA: reads A's rows; writes nothing.
        return next is(pgmlops_tests.as_role('authenticated', pgmlops_tests.claims('viewerA'),
                                     format('select from %s where %I = %L', r.tbl, r.key_col, v_a)),
                       'ok:' || v_nA, format('%s: viewerA sees A''s %s rows', r.tbl, v_nA));
        return next is(pgmlops_tests.as_role('authenticated', pgmlops_tests.claims('viewerA'),
                                     format('select from %s where %I = %L', r.tbl, r.key_col, v_b)),
                       'ok:0', format('%s: viewerA sees none of B''s rows', r.tbl));
        return next is(pgmlops_tests.as_role('authenticated', pgmlops_tests.claims('viewerA'), pgmlops_tests.copy_row_sql(r.tbl, r.key_col, v_a)),
                       '42501', format('%s: viewerA cannot insert', r.tbl));
        return next matches(pgmlops_tests.as_role('authenticated', pgmlops_tests.claims('viewerA'),
                                          format('update %s set %I = %I where %I = %L', r.tbl, r.key_col, r.key_col, r.key_col, v_a),
                                          p_keep => true),
                            '^(ok:0|42501)$', format('%s: viewerA cannot update A''s rows', r.tbl));
        return next matches(pgmlops_tests.as_role('authenticated', pgmlops_tests.claims('viewerA'),
                                          format('delete from %s where %I = %L', r.tbl, r.key_col, v_a), p_keep => true),
                            '^(ok:0|42501)$', format('%s: viewerA cannot delete A''s rows', r.tbl));
        return next is(pgmlops_tests.rows_of(r.tbl, r.key_col, v_a), v_rowsA,
                       format('%s: A''s rows are all there, unchanged, after anon''s and viewerA''s writes', r.tbl));

        -- service_role: everything.
        return next is(pgmlops_tests.as_role('service_role', pgmlops_tests.claims('service_role'),
                                     format('select from %s where %I = %L', r.tbl, r.key_col, v_a)),
                       'ok:' || v_nA, format('%s: service_role sees all %s of A''s rows', r.tbl, v_nA));
        return next is(pgmlops_tests.as_role('service_role', pgmlops_tests.claims('service_role'),
                                     format('select from %s where %I = %L', r.tbl, r.key_col, v_b)),
                       'ok:' || v_nB, format('%s: service_role sees all %s of B''s rows', r.tbl, v_nB));

        -- Partitions and chunks, named directly: anon gets nothing.
        for v_who in select * from pgmlops_tests.descendants(r.tbl) loop
            return next matches(pgmlops_tests.as_role('anon', pgmlops_tests.claims('anon'), format('select from %s', v_who)),
                                '^(ok:0|42501)$', format('%s (part of %s): anon sees no rows', v_who, r.tbl));
        end loop;
    end loop;
end
$$;

select * from pgmlops_tests.behaviour_checks();

-- Partitions and chunks, named directly, must not show ownerA another tenant's rows.
-- TimescaleDB copies a hypertable's grants to its chunks but not its RLS (timescale/timescaledb#7830);
-- clients have no usage on the chunk schema (see ml_private.create_time_partitioned_table).
select ok(exists (select 1 from pgmlops_tests.descendants(t.tbl)),
          format('%s: has partitions or chunks now that it holds rows (so the check below is not vacuous)', t.tbl))
from pgmlops_tests.tenant_tables() t
join ml_private.time_partitioned_tables p on to_regclass(p.table_name) = t.tbl
order by t.tbl::text;
select is(
    (select array_agg(format('%s (part of %s): %s', d, t.tbl, x.got) order by d::text)
     from pgmlops_tests.tenant_tables() t
     cross join lateral pgmlops_tests.descendants(t.tbl) d
     cross join lateral (select pgmlops_tests.as_role('authenticated', pgmlops_tests.claims('ownerA'),
                                              format('select from %s where %I <> %L', d, t.key_col, pgmlops_tests.id('A'))) as got) x
     where x.got !~ '^(ok:0|42501)$'),
    null,
    'no partition or chunk of a tenant table, named directly, shows ownerA rows of other tenants');

------------------------------------------------------------------------------------------------
-- The write API
------------------------------------------------------------------------------------------------

select is(pgmlops_tests.as_role('anon', pgmlops_tests.claims('anon'), $$select ml.enqueue('echo', '{}')$$,
                        jsonb_build_object('pgmlops.tenant_id', pgmlops_tests.id('A')), true),
          '42501', 'anon cannot enqueue');
select is(pgmlops_tests.as_role('authenticated', pgmlops_tests.claims('viewerA'), $$select ml.enqueue('echo', '{}')$$, p_keep => true),
          '42501', 'viewerA cannot enqueue (ml.enqueue raises 42501)');
select is(pgmlops_tests.as_role('authenticated', pgmlops_tests.claims('viewerA'), format('select ml.cancel_job(%s)', pgmlops_tests.id('jobA')),
                        p_keep => true),
          '42501', 'viewerA cannot cancel A''s job');
select is(pgmlops_tests.as_role('authenticated', pgmlops_tests.claims('ownerA'), $$select ml.enqueue('echo', '{}')$$,
                        jsonb_build_object('pgmlops.tenant_id', pgmlops_tests.id('B')), true),
          '42501', 'ownerA cannot enqueue into B by setting pgmlops.tenant_id');
select is(pgmlops_tests.as_role('authenticated', pgmlops_tests.claims('ownerA') || jsonb_build_object('app_metadata', jsonb_build_object('tenant_id', pgmlops_tests.id('B'))),
                        $$select ml.enqueue('echo', '{}')$$, p_keep => true),
          '42501', 'ownerA cannot enqueue into B through app_metadata.tenant_id');
select is(pgmlops_tests.as_role('authenticated', pgmlops_tests.claims('ownerA'), format('select ml.cancel_job(%s)', pgmlops_tests.id('jobB')),
                        p_keep => true),
          'P0002', 'ownerA cannot cancel B''s job (P0002: no such job for A)');
select is(pgmlops_tests.as_role('authenticated', pgmlops_tests.claims('ownerA'), format('select ml.job_result(%s)', pgmlops_tests.id('jobB'))),
          'P0002', 'ownerA cannot read B''s job result (P0002)');
select is(pgmlops_tests.as_role('authenticated', pgmlops_tests.claims('ownerA'),
                        format('select ml.add_tenant_member(%L, %L, ''owner'')', pgmlops_tests.id('B'), pgmlops_tests.id('ownerA')), p_keep => true),
          '42501', 'ownerA cannot make themselves a member of B');
select is(pgmlops_tests.as_role('authenticated', pgmlops_tests.claims('viewerA'),
                        format('select ml.add_tenant_member(%L, %L, ''owner'')', pgmlops_tests.id('A'), pgmlops_tests.id('viewerA')), p_keep => true),
          '42501', 'viewerA cannot promote themselves');

select is((select count(*) from ml.jobs where kind = 'echo' and tenant_id in (pgmlops_tests.id('A')::uuid, pgmlops_tests.id('B')::uuid)),
          2::bigint, 'the refused enqueues wrote no jobs');
select is((select array_agg(status order by tenant_id = pgmlops_tests.id('A')::uuid desc) from ml.jobs
           where id in (pgmlops_tests.id('jobA')::bigint, pgmlops_tests.id('jobB')::bigint)),
          array['queued', 'queued'], 'the refused cancels changed no job');
select is((select array_agg(format('%s:%s', m.user_id, m.role) order by m.user_id) from ml.tenant_members m
           where m.tenant_id in (pgmlops_tests.id('A')::uuid, pgmlops_tests.id('B')::uuid)),
          (select array_agg(format('%s:%s', u.id, u.role) order by u.id::uuid)
           from (values (pgmlops_tests.id('ownerA'), 'owner'), (pgmlops_tests.id('viewerA'), 'viewer'), (pgmlops_tests.id('ownerB'), 'owner')) u (id, role)),
          'the refused membership changes changed no membership');

-- Control: the same calls succeed for those allowed to make them (so the refusals above are
-- about who is calling, not about broken calls).
select is(pgmlops_tests.as_role('authenticated', pgmlops_tests.claims('ownerA'), $$select ml.enqueue('echo', '{}')$$),
          'ok:1', 'control: ownerA can enqueue into A');
select is(pgmlops_tests.as_role('authenticated', pgmlops_tests.claims('ownerA'), format('select ml.job_result(%s)', pgmlops_tests.id('jobA'))),
          'ok:1', 'control: ownerA can read A''s job result');
select is(pgmlops_tests.as_role('authenticated', pgmlops_tests.claims('ownerA'), format('select ml.cancel_job(%s)', pgmlops_tests.id('jobA'))),
          'ok:1', 'control: ownerA can cancel A''s job');
select is(pgmlops_tests.as_role('service_role', pgmlops_tests.claims('service_role'), $$select ml.enqueue('echo', '{}')$$,
                        jsonb_build_object('pgmlops.tenant_id', pgmlops_tests.id('B'))),
          'ok:1', 'control: service_role can enqueue into B');

select * from finish();
rollback;
