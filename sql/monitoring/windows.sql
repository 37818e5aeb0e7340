-- pgmlops: monitoring/windows.sql (docs/monitoring.md, "Fast mode counts" and "Has this
-- distribution been seen before?")
--
-- Two things about monitoring windows:
--   * fast-mode counts: the live predictions of each project, binned on the reference edges of
--     the version that made them, per hour, in ml.window_counts. A rollup moves each project's
--     watermark forward; nothing runs in ml.predict, so the call pays nothing for it.
--   * window embeddings: each drift report's window as a 256-dimension vector of its binned
--     distributions on one basis per project (ml_private.regime_basis; ml.window_embeddings,
--     pgvector HNSW when present), so a report can say whether its distribution was seen
--     before, and ml.similar_windows lists the closest ones.

------------------------------------------------------------------------------------------------
-- Binning predictions on the reference edges
------------------------------------------------------------------------------------------------

-- ml_private.window_profiles(p_project uuid)
-- returns table (model_version_id uuid, role text, feature text, kind text, dtype text, edges float8[])
-- What each version of p_project's models is binned on: its own reference profiles (roles
-- input, prediction, score), and for an input the version has no row of, its training set's.
-- A profile with edges (numeric; a discrete or binary number has one bin per value) counts on
-- them; a categorical or binary one without edges (text, category, bool) counts by value (edges
-- NULL); vector and text profiles are not counted.
create or replace function ml_private.window_profiles(p_project uuid)
returns table (model_version_id uuid, role text, feature text, kind text, dtype text, edges float8[])
language sql stable
set search_path = ''
as $$
    select distinct on (x.model_version_id, x.role, x.feature)
           x.model_version_id, x.role, x.feature, x.kind, x.dtype,
           case when cardinality(x.edges) >= 2 then x.edges end
    from (
        select mv.id as model_version_id, rp.role, rp.feature, rp.kind, rp.dtype, rp.edges, 0 as preference
        from ml.models m
        join ml.model_versions mv on mv.model_id = m.id
        join ml.reference_profiles rp on rp.model_version_id = mv.id
        where m.project_id = p_project and rp.role in ('input', 'prediction', 'score')
        union all
        select mv.id, rp.role, rp.feature, rp.kind, rp.dtype, rp.edges, 1
        from ml.models m
        join ml.model_versions mv on mv.model_id = m.id
        join ml.reference_profiles rp on rp.dataset_id = mv.dataset_id
        where m.project_id = p_project and rp.role = 'input'
    ) x
    where x.kind in ('numeric', 'categorical', 'binary') and (cardinality(x.edges) >= 2 or x.kind <> 'numeric')
    order by x.model_version_id, x.role, x.feature, x.preference
$$;

-- (Before p_versions, it had four arguments; before p_basis, five.)
drop function if exists ml_private.bin_predictions(uuid, uuid, timestamptz, timestamptz);
drop function if exists ml_private.bin_predictions(uuid, uuid, timestamptz, timestamptz, uuid[]);

-- ml_private.bin_predictions(p_tenant uuid, p_project uuid, p_from timestamptz, p_to timestamptz,
--                             p_versions uuid[] default null, p_basis uuid default null)
-- returns table (model_version_id uuid, role text, feature text, bucket timestamptz, bin int,
--                category text, count bigint, total float8, total_squares float8)
-- The live predictions (shadow_of NULL) of p_project logged in [p_from, p_to) (of p_versions
-- only, when given), binned per version,
-- role, feature and UTC hour on the version's profiles (ml_private.window_profiles): numbers
-- (ml_private.profile_number, the profiles' coercion) by ml_private.histogram_bin on the stored
-- edges (0 underflow, n + 1 overflow), with the sum and sum of squares of the values in each
-- bin; categories by value (ml_private.profile_category, the profiles' keys); a missing value
-- (JSON null or an absent key) is the row with bin and category both NULL. Inputs are read from
-- the logged features, the prediction from prediction, the score from score. With p_basis,
-- every row is binned on that one version's profiles instead of its own (the window embeddings'
-- common basis, ml_private.regime_basis); model_version_id is still the version that served the
-- row. The one binning of the rollup, of the raw edges of a window
-- (ml_private.window_counts_between) and of the embeddings' rows served off the basis. Its
-- callers set timezone UTC, as the profiles are made (a timestamp without an offset is UTC).
create or replace function ml_private.bin_predictions(p_tenant uuid, p_project uuid, p_from timestamptz, p_to timestamptz,
                                                       p_versions uuid[] default null, p_basis uuid default null)
returns table (model_version_id uuid, role text, feature text, bucket timestamptz, bin int, category text,
               count bigint, total float8, total_squares float8)
language plpgsql stable
set search_path = ''
set jit = off
set work_mem = '64MB'
set enable_sort = off  -- the groups (versions x features x hours x bins) hash in memory: never sort the rows
as $$
declare
    v_values text;
    v_ks     text;
    v_xs     text;
    v_cats   text;
    v_bins   text;
    v_keys   text;
    v_on     text := case when p_basis is not null then '$6' end;
begin
    -- One scan of the window, three steps, each value read and converted once:
    --   1. each row unpivoted into (k, value): k the k-th profiled feature of the row's version,
    --      its JSON value read by key (arrays written from the profiles, unnested in the select
    --      list: streamed, where a function in FROM would fill a tuplestore per row);
    --   2. the value as a number (ml_private.profile_number) or a category, by (version, k);
    --   3. the number's bin on that feature's edges, then the counts by (version, k, hour, bin,
    --      category), hashed; the groups are named after.
    -- No join and no lookup per row (a lateral VALUES list would build its expressions again
    -- for every row; inlined conversions in one step would read each value several times).
    select string_agg(format('when %L then array[%s]', g.model_version_id, g.vals), ' '),
           string_agg(format('when %L then array[%s]', g.model_version_id, g.ks), ' '),
           string_agg(format('when %L then case v.k %s end', g.model_version_id, g.xs), ' '),
           string_agg(format('when %L then case %s end', g.model_version_id, g.cats), ' '),
           string_agg(format('when %L then case t.k %s end', g.model_version_id, g.bins), ' '),
           string_agg(g.keys, ', ')
    into v_values, v_ks, v_xs, v_cats, v_bins, v_keys
    from (
        select f.model_version_id,
               string_agg(f.value, ', ' order by f.k) as vals,
               string_agg(f.k::text, ', ' order by f.k) as ks,
               coalesce(string_agg(format('when %s then ml_private.profile_number(v.value, %L)', f.k, f.dtype), ' ' order by f.k)
                            filter (where f.edges is not null), 'when 0 then null') as xs,
               coalesce(string_agg(format('when v.k = %s then ml_private.profile_category(v.value)', f.k), ' ' order by f.k)
                            filter (where f.edges is null), 'when false then null') as cats,
               coalesce(string_agg(format('when %s then ml_private.histogram_bin(%L::float8[], t.x)', f.k, f.edges), ' ' order by f.k)
                            filter (where f.edges is not null), 'when 0 then null') as bins,
               string_agg(format('(%L::uuid, %s, %L, %L)', f.model_version_id, f.k, f.role, f.feature), ', ' order by f.k) as keys
        from (
            select w.model_version_id, w.role, w.feature, w.edges, w.dtype,
                   row_number() over (partition by w.model_version_id order by w.role, w.feature) as k,
                   case w.role when 'input' then format('p.features -> %L', w.feature)
                               when 'prediction' then 'p.prediction'
                               else 'pg_catalog.to_jsonb(p.score)' end as value
            from ml_private.window_profiles(p_project) w
            where case when p_basis is not null then w.model_version_id = p_basis
                       else p_versions is null or w.model_version_id = any (p_versions) end
        ) f
        group by f.model_version_id
    ) g;
    if v_keys is null then
        return;
    end if;
    -- The profiles are chosen by the row's version, or by the basis ($6) for every row.
    return query execute format($q$
        with counted as (
            select t.model_version_id, t.k, t.bucket, (case %6$s %1$s end)::int as bin, t.category,
                   count(*) as count, sum(t.x) as total, sum(t.x * t.x) as total_squares
            from (select v.model_version_id, v.k, v.bucket, (case %7$s %2$s end)::float8 as x,
                         (case %7$s %3$s end)::text as category
                  from (select p.model_version_id, pg_catalog.date_trunc('hour', p.created_at, 'UTC') as bucket,
                               unnest(case %8$s %4$s end) as value, unnest(case %8$s %5$s end) as k
                        from ml.predictions p
                        where p.tenant_id = $1 and p.project_id = $2 and p.created_at >= $3 and p.created_at < $4
                          and p.shadow_of is null and ($5 is null or p.model_version_id = any ($5))) v
                  offset 0) t
            group by 1, 2, 3, 4, 5
        )
        select c.model_version_id, m.role, m.feature, c.bucket, c.bin, c.category, c.count, c.total, c.total_squares
        from counted c join (values %9$s) m (model_version_id, k, role, feature)
          on m.model_version_id = %10$s and m.k = c.k$q$, v_bins, v_xs, v_cats, v_values, v_ks,
          coalesce(v_on, 't.model_version_id'), coalesce(v_on, 'v.model_version_id'), coalesce(v_on, 'p.model_version_id'),
          v_keys, coalesce(v_on, 'c.model_version_id'))
        using p_tenant, p_project, p_from, p_to, p_versions, p_basis;
end
$$;

------------------------------------------------------------------------------------------------
-- The rollup
------------------------------------------------------------------------------------------------

-- ml_private.window_rollup_horizon() returns timestamptz
-- How far a rollup may count now without missing a prediction committed later. A prediction's
-- created_at is its transaction's start (now()), so a transaction still running may yet commit
-- rows stamped with its start: the horizon is the earliest start among the transactions running
-- in this database (autovacuum aside), and at most now() minus a safety margin (setting
-- window_rollup_margin in ml_private.settings, default 1 minute) that covers what
-- pg_stat_activity cannot show (backends of roles whose activity the owner may not read, the
-- instants between a transaction's start and its entry in pg_stat_activity). A long transaction
-- holds the horizon back while it runs (counts wait; none is lost). Read afresh
-- (pg_stat_clear_snapshot) before the rows are counted, which is what makes it safe.
create or replace function ml_private.window_rollup_horizon() returns timestamptz
language plpgsql volatile
set search_path = ''
as $$
declare
    v_margin interval := coalesce((select (s.value #>> '{}')::interval from ml_private.settings s
                                   where s.key = 'window_rollup_margin'), interval '1 minute');
    v_oldest timestamptz;
begin
    perform pg_catalog.pg_stat_clear_snapshot();
    select min(a.xact_start) into v_oldest
    from pg_catalog.pg_stat_activity a
    where a.datname = pg_catalog.current_database() and a.pid <> pg_catalog.pg_backend_pid()
      and a.backend_type not like 'autovacuum%';
    return least(now() - v_margin, v_oldest);
end
$$;

-- ml_private.rollup_window_counts(p_project uuid default null) returns bigint
-- Counts the live predictions logged since each project's watermark (ml.window_watermarks) into
-- ml.window_counts (ml_private.bin_predictions: per version, role, feature, UTC hour and bin or
-- category, with sums for numeric values), then moves the watermark to the rollup horizon
-- (ml_private.window_rollup_horizon). Returns how many predictions it counted.
-- With p_project, that project (waiting for a rollup of it already running: a fast report needs
-- its counts); without, every project that has a model, skipping those another session is rolling
-- up (maintenance). Idempotent and safe to run concurrently: the project (an advisory lock) and
-- its watermark row are locked for the whole rollup and the watermark is read after the locks,
-- so two rollups never count a prediction twice; the
-- horizon keeps behind every running transaction, so a prediction that commits late is counted
-- by a later rollup, never skipped. A version without reference profiles has nothing to bin on:
-- its predictions are passed over until it has one; a version whose profile changes has its
-- counts redone on the new one (its outputs are profiled once it is compiled). Returns the
-- predictions counted since the watermark (not those recounted).
-- Raises P0002 unknown project. Callers: the owner (ml.run_maintenance, ml.drift_report).
create or replace function ml_private.rollup_window_counts(p_project uuid default null) returns bigint
language plpgsql volatile security definer
set search_path = ''
set timezone = 'UTC'
set extra_float_digits = 1
as $$
declare
    v_p     record;
    v_from  timestamptz;
    v_to    timestamptz;
    v_n     bigint;
    v_total bigint := 0;
    v_seen    jsonb;
    v_digests jsonb;
    v_changed uuid[];
begin
    if p_project is not null and not exists (select 1 from ml.projects p where p.id = p_project) then
        raise exception 'project % does not exist', p_project using errcode = 'P0002';
    end if;
    for v_p in
        select p.id, p.tenant_id from ml.projects p
        where case when p_project is null then exists (select 1 from ml.models m where m.project_id = p.id)
                   else p.id = p_project end
        order by p.id
    loop
        -- One rollup of a project at a time: maintenance passes over a project being rolled up,
        -- a named project waits. The advisory lock comes first so that no rollup waits on
        -- another's uncommitted first watermark row; the row lock guards against other writers.
        if p_project is null then
            continue when not pg_try_advisory_xact_lock(hashtext('pgmlops.window_rollup'), hashtext(v_p.id::text));
        else
            perform pg_advisory_xact_lock(hashtext('pgmlops.window_rollup'), hashtext(v_p.id::text));
        end if;
        insert into ml.window_watermarks (tenant_id, project_id, rolled_up_to)
        values (v_p.tenant_id, v_p.id, '-infinity')
        on conflict (project_id) do nothing;
        select w.rolled_up_to, w.profiles into v_from, v_seen from ml.window_watermarks w where w.project_id = v_p.id for update;
        -- A version whose profile changed since its counts were made (its outputs profiled once
        -- it is compiled, a profile made again) has them redone on the new profile, from its
        -- registration up to the watermark. The digests are read before the counting, so a
        -- profile committed in between is seen as changed at the next rollup, never missed.
        select coalesce(jsonb_object_agg(d.model_version_id, d.digest), '{}') into v_digests
        from (select w.model_version_id, md5(string_agg(concat_ws('/', w.role, w.feature, w.kind, w.dtype, w.edges::text), ';'
                                                        order by w.role, w.feature)) as digest
              from ml_private.window_profiles(v_p.id) w group by 1) d;
        select array_agg(k::uuid) into v_changed
        from jsonb_each_text(v_digests) d (k, digest)
        where d.digest is distinct from v_seen ->> d.k;
        if v_changed is not null and v_from > '-infinity' then
            delete from ml.window_counts c where c.project_id = v_p.id and c.model_version_id = any (v_changed);
            insert into ml.window_counts (tenant_id, project_id, model_version_id, role, feature, bucket, bin, category,
                                          count, total, total_squares)
            select v_p.tenant_id, v_p.id, b.model_version_id, b.role, b.feature, b.bucket, b.bin, b.category,
                   b.count, b.total, b.total_squares
            from ml_private.bin_predictions(v_p.tenant_id, v_p.id,
                     (select min(mv.created_at) from ml.model_versions mv where mv.id = any (v_changed)), v_from, v_changed) b;
        end if;
        update ml.window_watermarks w set profiles = v_digests where w.project_id = v_p.id;
        -- After the lock: a rollup that waited sees the watermark the other one left.
        v_to := ml_private.window_rollup_horizon();
        continue when v_to <= v_from;
        insert into ml.window_counts as c (tenant_id, project_id, model_version_id, role, feature, bucket, bin, category,
                                           count, total, total_squares)
        select v_p.tenant_id, v_p.id, b.model_version_id, b.role, b.feature, b.bucket, b.bin, b.category,
               b.count, b.total, b.total_squares
        from ml_private.bin_predictions(v_p.tenant_id, v_p.id, v_from, v_to) b
        on conflict (tenant_id, project_id, model_version_id, role, feature, bucket, bin, category) do update
            set count = c.count + excluded.count, total = c.total + excluded.total,
                total_squares = c.total_squares + excluded.total_squares;
        select count(*) into v_n from ml.predictions p
        where p.tenant_id = v_p.tenant_id and p.project_id = v_p.id
          and p.created_at >= v_from and p.created_at < v_to and p.shadow_of is null;
        update ml.window_watermarks w set rolled_up_to = v_to, updated_at = now() where w.project_id = v_p.id;
        v_total := v_total + v_n;
    end loop;
    return v_total;
end
$$;

-- ml_private.window_counts_between(p_tenant uuid, p_project uuid, p_start timestamptz, p_end timestamptz)
-- returns table (model_version_id uuid, role text, feature text, bin int, category text,
--                count bigint, total float8, total_squares float8)
-- The binned counts of p_project's live predictions logged in [p_start, p_end), exactly: whole
-- UTC hours below the watermark from ml.window_counts, the partial hours at either end and
-- whatever lies beyond the watermark binned from ml.predictions (ml_private.bin_predictions).
-- So a window of a million rolled-up predictions reads a few thousand rows. Does not roll up
-- (call ml_private.rollup_window_counts first to read less). Callers: the owner (fast-mode
-- reports, ml_private.record_window_embedding).
create or replace function ml_private.window_counts_between(p_tenant uuid, p_project uuid, p_start timestamptz, p_end timestamptz)
returns table (model_version_id uuid, role text, feature text, bin int, category text,
               count bigint, total float8, total_squares float8)
language plpgsql stable
set search_path = ''
set timezone = 'UTC'
set extra_float_digits = 1
as $$
declare
    v_mark  timestamptz := coalesce((select w.rolled_up_to from ml.window_watermarks w where w.project_id = p_project),
                                    '-infinity');
    v_first timestamptz := date_trunc('hour', p_start, 'UTC');  -- the first whole hour
    v_last  timestamptz := date_trunc('hour', least(p_end, v_mark), 'UTC');  -- the end of the last whole, rolled-up one
begin
    if v_first < p_start then
        v_first := v_first + interval '1 hour';
    end if;
    if v_first >= v_last then
        return query
            select b.model_version_id, b.role, b.feature, b.bin, b.category, sum(b.count)::bigint, sum(b.total), sum(b.total_squares)
            from ml_private.bin_predictions(p_tenant, p_project, p_start, p_end) b
            group by 1, 2, 3, 4, 5;
    else
        return query
            select u.model_version_id, u.role, u.feature, u.bin, u.category, sum(u.count)::bigint, sum(u.total), sum(u.total_squares)
            from (
                select c.model_version_id, c.role, c.feature, c.bin, c.category, c.count, c.total, c.total_squares
                from ml.window_counts c
                where c.tenant_id = p_tenant and c.project_id = p_project and c.bucket >= v_first and c.bucket < v_last
                union all
                select b.model_version_id, b.role, b.feature, b.bin, b.category, b.count, b.total, b.total_squares
                from ml_private.bin_predictions(p_tenant, p_project, p_start, v_first) b
                union all
                select b.model_version_id, b.role, b.feature, b.bin, b.category, b.count, b.total, b.total_squares
                from ml_private.bin_predictions(p_tenant, p_project, v_last, p_end) b
            ) u
            group by 1, 2, 3, 4, 5;
    end if;
end
$$;

------------------------------------------------------------------------------------------------
-- Window embeddings: has this distribution been seen before?
------------------------------------------------------------------------------------------------

-- ml_private.window_vector_schema() returns name
-- The schema of the pgvector extension, or NULL when it is not installed (ml.window_embeddings
-- then stores float8[] and is searched exhaustively).
create or replace function ml_private.window_vector_schema() returns name
language sql stable
set search_path = ''
as $$
    select n.nspname from pg_catalog.pg_extension e join pg_catalog.pg_namespace n on n.oid = e.extnamespace
    where e.extname = 'vector'
      and exists (select 1 from pg_catalog.pg_attribute a
                  where a.attrelid = 'ml.window_embeddings'::regclass and a.attname = 'embedding'
                    and a.atttypid <> 'float8[]'::regtype)
$$;

-- ml_private.regime_basis(p_project uuid) returns uuid
-- The version on whose reference bins every window of p_project is embedded (the regime
-- basis): the project's earliest model version that has something to bin on
-- (ml_private.window_profiles: its reference profile, or its training set's inputs), earliest
-- by registration (ml.model_versions.created_at), then by model name, version number and id,
-- so the choice is deterministic and does not move when versions are retrained, promoted or
-- rolled back. It moves only when that version, or its profile, is deleted: windows embedded
-- before are then on another basis. NULL when no version has a profile.
-- Callers: the owner (ml_private.record_window_embedding).
create or replace function ml_private.regime_basis(p_project uuid) returns uuid
language sql stable
set search_path = ''
as $$
    select mv.id
    from ml.models m
    join ml.model_versions mv on mv.model_id = m.id
    where m.project_id = p_project
      and mv.id in (select w.model_version_id from ml_private.window_profiles(p_project) w)
    order by mv.created_at, m.name, mv.version, mv.id
    limit 1
$$;

-- ml_private.regime_threshold(p_bins1 float8, p_rows1 bigint, p_bins2 float8, p_rows2 bigint) returns float8
-- The cosine distance under which two windows count as the same distribution. The distance of
-- two embeddings is about the mean squared Hellinger distance of their features (docs/monitoring.md),
-- whose expectation for two samples of one distribution is (k - 1) / 8 * (1/n1 + 1/n2) (k the
-- occupied bins per feature, n the rows): the threshold is a floor of 0.01 (a mean shift of
-- about 0.3 standard deviations on every feature, or 1 standard deviation on one in ten) plus
-- three times that sampling noise, so small windows are not called new for their noise alone.
create or replace function ml_private.regime_threshold(p_bins1 float8, p_rows1 bigint, p_bins2 float8, p_rows2 bigint)
returns float8
language sql immutable parallel safe
as $$
    select 0.01 + 3.0 * (greatest((p_bins1 + p_bins2) / 2.0, 1.0) - 1.0) / 8.0
                      * (1.0 / greatest(p_rows1, 1) + 1.0 / greatest(p_rows2, 1))
$$;

-- ml_private.nearest_windows(p_tenant uuid, p_project uuid, p_report uuid, p_k int)
-- returns table (report_id uuid, window_start timestamptz, window_end timestamptz, distance float8,
--                model_version int, dataset_drift boolean, row_count bigint, bins float8)
-- The p_k windows of p_project (in p_tenant) closest to p_report's embedding by cosine distance,
-- among the windows that ended at or before p_report's window started (past, not overlapping),
-- nearest first. With pgvector: the HNSW index with iterative scans (hnsw.iterative_scan =
-- relaxed_order, pgvector >= 0.8), so the tenant and project filters cannot leave fewer than p_k
-- rows while more exist, re-sorted exactly; without: every window of the project, exactly.
-- Every window is embedded on the project's regime basis (ml_private.regime_basis); a stored
-- row does not record its basis, so windows embedded before the basis was introduced (on the
-- version that served them) or before the basis version was deleted may be on another one and
-- are compared all the same. No rows when p_report has no embedding. Callers: the owner.
create or replace function ml_private.nearest_windows(p_tenant uuid, p_project uuid, p_report uuid, p_k int)
returns table (report_id uuid, window_start timestamptz, window_end timestamptz, distance float8,
               model_version int, dataset_drift boolean, row_count bigint, bins float8)
language plpgsql stable
set search_path = ''
as $$
declare
    v_schema name := ml_private.window_vector_schema();
    v_start  timestamptz;
    v_query  jsonb;
begin
    select e.window_start into v_start from ml.window_embeddings e where e.report_id = p_report and e.tenant_id = p_tenant;
    if v_start is null then
        return;
    end if;
    if v_schema is not null then
        if (select string_to_array(e.extversion, '.')::int[] >= array[0, 8] from pg_catalog.pg_extension e where e.extname = 'vector') then
            perform set_config('hnsw.iterative_scan', 'relaxed_order', true);
        end if;
        perform set_config('hnsw.ef_search', greatest(40, p_k)::text, true);
        return query execute format($q$
            select s.report_id, s.window_start, s.window_end, s.distance, mv.version, r.dataset_drift, s.row_count, s.bins
            from (select e.report_id, e.window_start, e.window_end, e.model_version_id, e.row_count, e.bins,
                         (e.embedding operator(%1$I.<=>) (select q.embedding from ml.window_embeddings q where q.report_id = $3))::float8 as distance
                  from ml.window_embeddings e
                  where e.tenant_id = $1 and e.project_id = $2 and e.window_end <= $4
                  order by e.embedding operator(%1$I.<=>) (select q.embedding from ml.window_embeddings q where q.report_id = $3)
                  limit $5) s
            join ml.drift_reports r on r.id = s.report_id
            left join ml.model_versions mv on mv.id = s.model_version_id
            order by s.distance, s.window_end desc, s.report_id$q$, v_schema)
            using p_tenant, p_project, p_report, v_start, p_k;
    else
        select to_jsonb(e.embedding) into v_query from ml.window_embeddings e where e.report_id = p_report;
        return query
            select s.report_id, s.window_start, s.window_end, s.distance, mv.version, r.dataset_drift, s.row_count, s.bins
            from (select e.report_id, e.window_start, e.window_end, e.model_version_id, e.row_count, e.bins,
                         1.0 - (select sum(a * b) / nullif(sqrt(sum(a * a)) * sqrt(sum(b * b)), 0)
                                from unnest(e.embedding::float8[], (select array_agg(x::float8) from jsonb_array_elements_text(v_query) x)) u (a, b)) as distance
                  from ml.window_embeddings e
                  where e.tenant_id = p_tenant and e.project_id = p_project and e.window_end <= v_start) s
            join ml.drift_reports r on r.id = s.report_id
            left join ml.model_versions mv on mv.id = s.model_version_id
            order by s.distance, s.window_end desc, s.report_id
            limit p_k;
    end if;
end
$$;

-- ml_private.record_window_embedding(p_report uuid) returns jsonb
-- Summarizes the report's window as a 256-dimension embedding, stores it in
-- ml.window_embeddings (replacing the report's earlier one) and says whether a past window of
-- the project had the same distribution. The construction (docs/monitoring.md):
--   1. the counts per feature (inputs, prediction, score) of the window's live predictions,
--      whichever versions served them, on ONE basis for the whole project: the reference bins
--      of ml_private.regime_basis (its earliest profiled version), so windows served by
--      different versions compare. The basis version's rows: the project rolled up
--      (ml_private.rollup_window_counts), then ml_private.window_counts_between (whole hours
--      from ml.window_counts); the other versions' rows binned from the log on the basis's bins
--      (ml_private.bin_predictions with p_basis: a scan of their rows). Exact at any window
--      bounds. Keys are the numeric bins
--      (underflow and overflow included), the categories (the 64 most frequent; the rest pooled
--      as one), and missing values (categories and missing values do not depend on the basis);
--   2. per feature, the square roots of the key proportions: a block of unit L2 norm, so every
--      feature weighs the same and the inner product of two blocks is their Bhattacharyya
--      coefficient (1 - squared Hellinger distance);
--   3. each key feature-hashed into one of 256 dimensions with a sign (md5 of role/feature/key:
--      stable across servers and versions), summed, then L2-normalized.
-- The cosine distance of two windows is then about the mean squared Hellinger distance of their
-- features. The window matches a regime seen before when one of its 5 nearest past windows (not
-- overlapping it: ml_private.nearest_windows) lies within ml_private.regime_threshold of it (or
-- the report's options.regime_threshold, a number in (0, 2]).
-- The stored row's model_version_id is the version that served the window (the report's
-- version when it served rows of it, else the one that served most; the recall of
-- ml_private.record_regime_recall reads it), not the basis, which the row does not record.
-- Returns {"matched", "match" (the closest matching window or null), "similar": [{report_id,
-- window_start, window_end, distance, model_version, dataset_drift, threshold, matched}],
-- "threshold" (the nearest window's), "row_count" (the rows embedded), "model_version" (the
-- serving version), "basis_version", "off_basis_rows" (rows served by other versions than the
-- basis, binned from the log), "dimensions": 256, "search": "hnsw" | "exact"}; for a window
-- with no predictions to embed (or a report over another source than ml.predictions, or a
-- project without a profiled version) {"matched": false, "similar": [], "threshold": null,
-- "reason"} and nothing is stored. Raises P0002 unknown report; 22023 a bad
-- options.regime_threshold. Callers: the owner (ml.drift_report, after its results).
create or replace function ml_private.record_window_embedding(p_report uuid) returns jsonb
language plpgsql volatile security definer
set search_path = ''
set timezone = 'UTC'
set extra_float_digits = 1
as $$
declare
    v_report    ml.drift_reports;
    v_schema    name := ml_private.window_vector_schema();
    v_fixed     float8;
    v_embedding float8[];
    v_basis     uuid;
    v_version   uuid;
    v_rows      bigint;
    v_off       bigint;
    v_bins      float8;
    v_similar   jsonb;
begin
    select * into v_report from ml.drift_reports r where r.id = p_report;
    if not found then
        raise exception 'report % does not exist', coalesce(p_report::text, 'NULL') using errcode = 'P0002';
    end if;
    if v_report.options ? 'regime_threshold' then
        if jsonb_typeof(v_report.options -> 'regime_threshold') <> 'number'
           or (v_report.options ->> 'regime_threshold')::float8 not between 1e-12 and 2 then
            raise exception 'options.regime_threshold: must be a cosine distance in (0, 2], got %', v_report.options -> 'regime_threshold'
                using errcode = '22023';
        end if;
        v_fixed := (v_report.options ->> 'regime_threshold')::float8;
    end if;
    if v_report.source not in ('ml.predictions', 'predictions') then
        return jsonb_build_object('matched', false, 'similar', '[]'::jsonb, 'threshold', null,
            'reason', format('the window is read from %s, not the prediction log: no binned counts to embed', v_report.source));
    end if;

    v_basis := ml_private.regime_basis(v_report.project_id);
    if v_basis is null then
        return jsonb_build_object('matched', false, 'similar', '[]'::jsonb, 'threshold', null,
            'reason', 'no version of the project has a reference profile to embed the window on');
    end if;
    -- Rolled up first (a no-op after a fast report's own rollup): the basis version's rows of
    -- the window's whole hours are then read from ml.window_counts, not binned again from the
    -- log. The rows other versions served are counted there on their own bins: they are binned
    -- again from the log, on the basis's (ml_private.bin_predictions with p_basis).
    perform ml_private.rollup_window_counts(v_report.project_id);
    with counts as materialized (
        select * from ml_private.window_counts_between(v_report.tenant_id, v_report.project_id, v_report.window_start, v_report.window_end)
    ), sizes as (
        select s.model_version_id, max(s.n) as n
        from (select c.model_version_id, c.role, c.feature, sum(c.count) as n from counts c group by 1, 2, 3) s
        group by 1
    ), served as (
        select s.model_version_id from sizes s
        order by coalesce(s.model_version_id = v_report.model_version_id, false) desc, s.n desc, s.model_version_id
        limit 1
    ), off_basis as materialized (
        select b.role, b.feature, b.bin, b.category, b.count
        from (select array_agg(distinct c.model_version_id) as versions from counts c
              where c.model_version_id <> v_basis having count(*) > 0) o
        cross join lateral ml_private.bin_predictions(v_report.tenant_id, v_report.project_id, v_report.window_start,
                                                      v_report.window_end, o.versions, v_basis) b
    ), binned as (
        select c.role, c.feature, c.bin, c.category, c.count from counts c where c.model_version_id = v_basis
        union all
        select o.role, o.feature, o.bin, o.category, o.count from off_basis o
    ), keyed as (
        select c.role, c.feature,
               case when c.bin is not null then 'bin ' || c.bin
                    when c.category is not null then 'category ' || c.category
                    else 'missing' end as key,
               sum(c.count) as n
        from binned c
        group by 1, 2, 3
    ), capped as (
        select k.role, k.feature,
               case when k.key like 'category %'
                         and row_number() over (partition by k.role, k.feature, k.key like 'category %' order by k.n desc, k.key) > 64
                    then 'other' else k.key end as key,
               k.n
        from keyed k
    ), props as (
        select c.role, c.feature, c.key, sum(c.n)::float8 / sum(sum(c.n)) over (partition by c.role, c.feature) as p
        from capped c
        group by 1, 2, 3
    ), slots as (
        select ('x' || substr(md5(p.role || '/' || p.feature || '/' || p.key), 1, 8))::bit(32)::int as h, sqrt(p.p) as v
        from props p
        where p.p > 0
    ), dims as (
        select (s.h & 255) + 1 as i, sum(case when (s.h >> 8) & 1 = 0 then s.v else -s.v end) as total
        from slots s
        group by 1
    ), raw as (
        select array_agg(coalesce(d.total, 0) order by g.i) as e, sqrt(sum(coalesce(d.total, 0) ^ 2)) as norm
        from generate_series(1, 256) g (i) left join dims d on d.i = g.i
    )
    select (select array_agg(x / r.norm order by o) from unnest(r.e) with ordinality u (x, o)),
           (select h.model_version_id from served h),
           (select max(k.n) from (select k.role, k.feature, sum(k.n) as n from keyed k group by 1, 2) k),
           (select coalesce(max(k.n), 0) from (select o.role, o.feature, sum(o.count) as n from off_basis o group by 1, 2) k),
           (select count(*)::float8 / nullif(count(distinct (p.role, p.feature)), 0) from props p where p.p > 0)
    into v_embedding, v_version, v_rows, v_off, v_bins
    from raw r
    where r.norm > 0;

    if v_embedding is null then
        delete from ml.window_embeddings e where e.report_id = p_report;
        return jsonb_build_object('matched', false, 'similar', '[]'::jsonb, 'threshold', null,
            'reason', 'the window has no predictions of a profiled version to embed');
    end if;

    execute format(
        'insert into ml.window_embeddings as e (tenant_id, project_id, report_id, model_version_id, window_start, window_end,
                                                row_count, bins, embedding)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9::%s)
         on conflict (report_id) do update
             set model_version_id = excluded.model_version_id, window_start = excluded.window_start,
                 window_end = excluded.window_end, row_count = excluded.row_count, bins = excluded.bins,
                 embedding = excluded.embedding, created_at = now()',
        case when v_schema is null then 'float8[]' else format('%I.vector', v_schema) end)
    using v_report.tenant_id, v_report.project_id, p_report, v_version, v_report.window_start, v_report.window_end,
          v_rows, v_bins, v_embedding;

    select coalesce(jsonb_agg(jsonb_build_object(
               'report_id', n.report_id, 'window_start', n.window_start, 'window_end', n.window_end,
               'distance', n.distance, 'model_version', n.model_version, 'dataset_drift', n.dataset_drift,
               'threshold', t.threshold, 'matched', n.distance <= t.threshold)
           order by n.distance, n.window_end desc), '[]'::jsonb)
    into v_similar
    from ml_private.nearest_windows(v_report.tenant_id, v_report.project_id, p_report, 5) n
    cross join lateral (select coalesce(v_fixed, ml_private.regime_threshold(v_bins, v_rows, n.bins, n.row_count)) as threshold) t;

    return jsonb_build_object(
        'matched', exists (select 1 from jsonb_array_elements(v_similar) s where (s ->> 'matched')::boolean),
        'match', (select s from jsonb_array_elements(v_similar) s where (s ->> 'matched')::boolean limit 1),
        'similar', v_similar,
        'threshold', coalesce(v_similar -> 0 -> 'threshold', to_jsonb(v_fixed)),
        'row_count', v_rows,
        'model_version', (select mv.version from ml.model_versions mv where mv.id = v_version),
        'basis_version', (select mv.version from ml.model_versions mv where mv.id = v_basis),
        'off_basis_rows', v_off,
        'dimensions', 256,
        'search', case when v_schema is null then 'exact' else 'hnsw' end);
end
$$;

-- ml.similar_windows(project text, report uuid, k int default 5)
-- returns table (report_id uuid, window_start timestamptz, window_end timestamptz,
--                distance float8, model_version int, dataset_drift boolean)
-- The k past monitoring windows of the project closest to the report's window (cosine distance
-- of their embeddings, nearest first; windows overlapping the report's are not past): whether
-- this distribution was seen before, when, which model version served it and whether that
-- window drifted. Only the caller's tenant's windows, as row-level security would allow.
-- Raises 22023 k outside 1..100, a NULL report; P0002 unknown project (another tenant's too),
-- a report not of that project, a report without an embedding (its window had no predictions
-- to embed); 42501 not a member. Callers: any member of the tenant (viewers too), service_role.
create or replace function ml.similar_windows(project text, report uuid, k int default 5)
returns table (report_id uuid, window_start timestamptz, window_end timestamptz, distance float8,
               model_version int, dataset_drift boolean)
language plpgsql stable security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_tenant  uuid := ml_private.acting_tenant_id(false);
    v_project uuid;
begin
    if k is null or k < 1 or k > 100 then
        raise exception 'k: must be between 1 and 100, got %', coalesce(k::text, 'NULL') using errcode = '22023';
    end if;
    if report is null then
        raise exception 'report: must be a drift report id, got NULL' using errcode = '22023';
    end if;
    select p.id into v_project from ml.projects p where p.tenant_id = v_tenant and p.name = project;
    if v_project is null then
        raise exception 'project % does not exist', coalesce(quote_literal(project), 'NULL') using errcode = 'P0002';
    end if;
    if not exists (select 1 from ml.drift_reports r where r.id = report and r.tenant_id = v_tenant and r.project_id = v_project) then
        raise exception 'report % does not exist in project %', report, quote_literal(project) using errcode = 'P0002';
    end if;
    if not exists (select 1 from ml.window_embeddings e where e.report_id = report) then
        raise exception 'report % has no window embedding: its window had no predictions of a profiled version', report
            using errcode = 'P0002';
    end if;
    return query
        select n.report_id, n.window_start, n.window_end, n.distance, n.model_version, n.dataset_drift
        from ml_private.nearest_windows(v_tenant, v_project, report, k) n;
end
$$;

------------------------------------------------------------------------------------------------
-- Grants
------------------------------------------------------------------------------------------------

-- The helpers: nobody (the owner runs them from maintenance and ml.drift_report).
grant execute on function
    ml.similar_windows(text, uuid, int)
to authenticated, service_role;
