-- pgmlops: model registry — models, versions, aliases, approvals, promotion policies, audit log
--
-- A model belongs to a project and has versions numbered 1, 2, ... Each version holds its
-- fitted artifact (bytes, format, size, SHA-256 checked in SQL when it is registered), the run
-- and dataset it came from, its metrics, tags and signature. Aliases (champion, challenger, or
-- any other name) are movable pointers to versions. A project's promotion policies say what a
-- version needs before ml.promote may point an alias at it: minimum and maximum metric values,
-- a maximum inference latency, a number of approvals, and hours spent as challenger. The gates
-- are checked in SQL, so no client can skip them; a refused promotion changes nothing.
--
-- Every registry change is written to ml.audit_log (who, what, when, before, after) and
-- published on topic 'models':
--   model.created  model_version.created  alias.set  alias.moved  alias.removed
--   approval.recorded  policy.set  policy.removed  model.promoted
--
-- Artifacts are never unpickled here or by pgmlops: scikit-learn models are skops files loaded
-- with an allowlist of trusted types, torch models are state dicts loaded with weights_only
-- (pgmlops.models); the SHA-256 recorded here is checked again at every load.

------------------------------------------------------------------------------------------------
-- The audit log is append-only
------------------------------------------------------------------------------------------------

-- Append-only: only the owner (migrations, an operator fixing history) may change or delete
-- rows; deleting a tenant still erases its rows through the foreign key.
revoke update, delete, truncate on ml.audit_log from service_role;

------------------------------------------------------------------------------------------------
-- Helpers
------------------------------------------------------------------------------------------------

-- ml_private.audit(p_tenant, p_action, p_object_kind, p_object_id, p_before, p_after) returns bigint
-- Writes one ml.audit_log row (actor: the calling user, NULL for service callers) and publishes
-- it as event p_action on topic 'models'. Returns the audit row's id.
create or replace function ml_private.audit(p_tenant uuid, p_action text, p_object_kind text, p_object_id uuid,
                                 p_before jsonb, p_after jsonb)
returns bigint
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_id    bigint;
    v_actor uuid := ml_private.caller_user_id();
begin
    insert into ml.audit_log (tenant_id, actor, action, object_kind, object_id, before, after)
    values (p_tenant, v_actor, p_action, p_object_kind, p_object_id, p_before, p_after)
    returning id into v_id;
    perform ml_private.publish(p_tenant, 'models', p_action, jsonb_build_object(
        'audit_id', v_id, 'actor', v_actor, 'object_kind', p_object_kind, 'object_id', p_object_id,
        'before', p_before, 'after', p_after));
    return v_id;
end
$$;

-- ml_private.format_number(p_value numeric) returns text: at most 6 decimals, no trailing zeros.
create or replace function ml_private.format_number(p_value numeric) returns text
language sql immutable
set search_path = ''
as $$
    select trim_scale(round(p_value, 6))::text
$$;

-- ml_private.check_alias(p_alias text): raises 22023 unless p_alias is an alias name.
create or replace function ml_private.check_alias(p_alias text) returns void
language plpgsql immutable
set search_path = ''
as $$
begin
    if p_alias is null or p_alias !~ '^[a-z][a-z0-9_-]{0,62}$' then
        raise exception 'alias: % must be lowercase letters, digits, _ and - (1 to 63, starting with a letter)',
            coalesce(quote_literal(p_alias), 'NULL') using errcode = '22023';
    end if;
end
$$;

-- ml_private.find_model(p_tenant uuid, p_name text, p_lock boolean default false) returns ml.models
-- The model p_name of p_tenant (locked FOR UPDATE with p_lock: version numbering, alias moves
-- and promotions of one model happen one at a time). Raises P0002 when there is none.
create or replace function ml_private.find_model(p_tenant uuid, p_name text, p_lock boolean default false) returns ml.models
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_model ml.models;
begin
    if p_lock then
        select * into v_model from ml.models m where m.tenant_id = p_tenant and m.name = p_name for update;
    else
        select * into v_model from ml.models m where m.tenant_id = p_tenant and m.name = p_name;
    end if;
    if not found then
        raise exception 'model % does not exist', coalesce(quote_literal(p_name), 'NULL') using errcode = 'P0002';
    end if;
    return v_model;
end
$$;

-- ml_private.find_model_version(p_tenant uuid, p_model text, p_version int default null,
--                               p_alias text default null, p_lock boolean default false)
-- returns ml.model_versions
-- The version of model p_model that p_version (a number) or p_alias names; neither: the newest.
-- p_model may also carry the choice itself: 'churn@3', 'churn@champion' (then p_version and
-- p_alias must be NULL). With p_lock the model row is locked first.
-- Raises 22023 both a version and an alias, a malformed reference; P0002 unknown model,
-- version or alias, or a model with no versions.
create or replace function ml_private.find_model_version(p_tenant uuid, p_model text, p_version int default null,
                                              p_alias text default null, p_lock boolean default false)
returns ml.model_versions
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_name    text := p_model;
    v_version int := p_version;
    v_alias   text := p_alias;
    v_parts   text[];
    v_model   ml.models;
    v_row     ml.model_versions;
begin
    if position('@' in coalesce(p_model, '')) > 0 then
        v_parts := regexp_match(p_model, '^([^@]+)@([0-9]{1,9}|[a-z][a-z0-9_-]{0,62})$');
        if v_parts is null or p_version is not null or p_alias is not null then
            raise exception 'model: % is not a model reference (name, name@version or name@alias)', quote_literal(p_model)
                using errcode = '22023';
        end if;
        v_name := v_parts[1];
        if v_parts[2] ~ '^[0-9]+$' then
            v_version := v_parts[2]::int;
        else
            v_alias := v_parts[2];
        end if;
    end if;
    if v_version is not null and v_alias is not null then
        raise exception 'version, alias: name a version or an alias, not both' using errcode = '22023';
    end if;
    v_model := ml_private.find_model(p_tenant, v_name, p_lock);
    if v_alias is not null then
        select v.* into v_row from ml.model_aliases a join ml.model_versions v on v.id = a.model_version_id
        where a.model_id = v_model.id and a.alias = v_alias;
        if not found then
            raise exception 'model % has no alias %', v_model.name, quote_literal(v_alias) using errcode = 'P0002';
        end if;
    elsif v_version is not null then
        select * into v_row from ml.model_versions v where v.model_id = v_model.id and v.version = v_version;
        if not found then
            raise exception 'model % has no version %', v_model.name, v_version using errcode = 'P0002';
        end if;
    else
        select * into v_row from ml.model_versions v where v.model_id = v_model.id order by v.version desc limit 1;
        if not found then
            raise exception 'model % has no versions yet', v_model.name using errcode = 'P0002';
        end if;
    end if;
    return v_row;
end
$$;

-- ml_private.alias_state(p_model_id uuid, p_alias text) returns jsonb
-- Where alias p_alias of the model points, as {alias, version, model_version_id}; NULL when unset.
create or replace function ml_private.alias_state(p_model_id uuid, p_alias text) returns jsonb
language sql stable security definer
set search_path = ''
as $$
    select jsonb_build_object('alias', a.alias, 'version', v.version, 'model_version_id', v.id)
    from ml.model_aliases a join ml.model_versions v on v.id = a.model_version_id
    where a.model_id = p_model_id and a.alias = p_alias
$$;

-- ml_private.model_version_document(p_version ml.model_versions) returns jsonb
-- A version as clients see it (everything but the artifact bytes): ids, model, project, task,
-- version, run, dataset, algorithm, hyperparameters, metrics, tags, signature, artifact format,
-- size and SHA-256, scoring path (compiled or worker) and its record, timings, aliases,
-- approvals, created_by/at.
create or replace function ml_private.model_version_document(p_version ml.model_versions) returns jsonb
language sql stable security definer
set search_path = ''
as $$
    select jsonb_build_object(
        'id', p_version.id, 'model', m.name, 'model_id', m.id, 'version', p_version.version,
        'project', p.name, 'project_id', p.id, 'task', p.task, 'target', p.target,
        'run_id', p_version.run_id, 'dataset_id', p_version.dataset_id, 'algorithm', p_version.algorithm,
        'hyperparams', r.hyperparams, 'metrics', p_version.metrics, 'tags', p_version.tags,
        'signature', p_version.signature, 'artifact_format', p_version.artifact_format,
        'artifact_size', p_version.artifact_size, 'artifact_sha256', p_version.artifact_sha256,
        'scoring_path', p_version.scoring_path, 'scoring', p_version.scoring,
        'train_seconds', r.train_seconds, 'inference_latency_ms', r.inference_latency_ms,
        'aliases', coalesce((select jsonb_agg(a.alias order by a.alias) from ml.model_aliases a
                             where a.model_version_id = p_version.id), '[]'),
        'approvals', (select count(*) from ml.model_approvals x where x.model_version_id = p_version.id and x.decision = 'approved'),
        'rejections', (select count(*) from ml.model_approvals x where x.model_version_id = p_version.id and x.decision = 'rejected'),
        'created_by', p_version.created_by, 'created_at', p_version.created_at)
    from ml.models m
    join ml.projects p on p.id = m.project_id
    left join ml.runs r on r.id = p_version.run_id
    where m.id = p_version.model_id
$$;

------------------------------------------------------------------------------------------------
-- Worker side: registering versions
------------------------------------------------------------------------------------------------

-- Artifacts are capped at 256 MB: a bytea value may hold 1 GB, but every load reads the whole
-- value through one connection, and models larger than this belong in object storage.
create or replace function ml_private.max_artifact_bytes() returns bigint
language sql immutable
set search_path = ''
as $$ select 268435456::bigint $$;

-- ml.register_model_version(run_id uuid, model text, artifact bytea, artifact_format text,
--                           artifact_sha256 text, signature jsonb, metrics jsonb,
--                           tags jsonb default '{}') returns jsonb
-- Registers the artifact a run produced as the next version of `model` (created in the run's
-- project when it does not exist yet) and returns {model_version_id, model, version}.
--   artifact         at most 256 MB; artifact_format skops | torch
--   artifact_sha256  lowercase hex; must equal encode(sha256(artifact), 'hex'), computed here
--   signature        {"inputs": [{"name", "dtype"}, ...], "outputs": [{"name", "dtype"}, ...],
--                    "task", "classes"}: inputs in the order the model takes them
--   metrics          an object (NULL: the run's metrics); tags an object
-- Versions are numbered 1, 2, ... per model, one registration at a time. created_by is the
-- user who queued the run's job, when known. Records lineage dataset -> model_version
-- (trained_on), run -> model_version (produced) and project -> model_version (contains);
-- audits and publishes model.created (a new model) and model_version.created.
-- Queues the version's `compile` job (priority 10) in this transaction, so no registered
-- version misses its compilation: until the job has run the version is scored by workers,
-- scoring {reason: 'compilation queued (job N) ...', compile_job_id: N, queued_at}
-- (docs/scoring.md, "Where it happens"). Returns {model_version_id, model, version,
-- compile_job_id}.
-- Raises 22023 bad model name, format, digest, signature, metrics or tags, a digest that does
-- not match the bytes, a model of another project; 54000 artifact over 256 MB; P0002 unknown
-- run; 55000 a run that failed or was pruned; 42501 not a service caller.
-- Callers: service_role (workers, in the job's transaction).
create or replace function ml.register_model_version(run_id uuid, model text, artifact bytea, artifact_format text,
                                          artifact_sha256 text, signature jsonb, metrics jsonb,
                                          tags jsonb default '{}')
returns jsonb
language plpgsql volatile security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_tenant   uuid;
    v_run      ml.runs;
    v_model    ml.models;
    v_created  boolean := false;
    v_version  int;
    v_id       uuid;
    v_digest   text;
    v_by       uuid;
    v_metrics  jsonb;
    v_job      bigint;
begin
    perform ml_private.assert_service('ml.register_model_version');
    v_tenant := ml_private.acting_tenant_id(true);
    if model is null or model !~ '^[a-z][a-z0-9_-]{0,62}$' then
        raise exception 'model: % must be lowercase letters, digits, _ and - (1 to 63, starting with a letter)',
            coalesce(quote_literal(model), 'NULL') using errcode = '22023';
    end if;
    if artifact is null or octet_length(artifact) = 0 then
        raise exception 'artifact: must not be empty' using errcode = '22023';
    end if;
    if octet_length(artifact) > ml_private.max_artifact_bytes() then
        raise exception 'artifact: must be at most % bytes (256 MB), got %', ml_private.max_artifact_bytes(), octet_length(artifact)
            using errcode = '54000', hint = 'Store larger models in object storage.';
    end if;
    if artifact_format is null or artifact_format not in ('skops', 'torch') then
        raise exception 'artifact_format: must be skops or torch, got %', coalesce(quote_literal(artifact_format), 'NULL')
            using errcode = '22023';
    end if;
    if artifact_sha256 is null or artifact_sha256 !~ '^[0-9a-f]{64}$' then
        raise exception 'artifact_sha256: must be 64 lowercase hex digits, got %', coalesce(quote_literal(artifact_sha256), 'NULL')
            using errcode = '22023';
    end if;
    v_digest := encode(sha256(artifact), 'hex');
    if v_digest <> artifact_sha256 then
        raise exception 'artifact_sha256: does not match the artifact (given %, computed %)', artifact_sha256, v_digest
            using errcode = '22023', hint = 'The bytes changed after they were hashed: nothing was registered.';
    end if;
    perform ml_private.assert_json_valid('signature',
        $j${"type": "object", "required": ["inputs", "outputs"], "properties": {
            "inputs":  {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["name", "dtype"],
                        "properties": {"name": {"type": "string", "minLength": 1}, "dtype": {"type": "string", "minLength": 1}}}},
            "outputs": {"type": "array", "items": {"type": "object", "required": ["name", "dtype"],
                        "properties": {"name": {"type": "string", "minLength": 1}, "dtype": {"type": "string", "minLength": 1}}}},
            "task":    {"type": "string", "enum": ["classification", "regression", "anomaly_detection"]},
            "classes": {"type": ["array", "null"]}
        }}$j$::jsonb, signature);
    if metrics is not null and jsonb_typeof(metrics) <> 'object' then
        raise exception 'metrics: must be a JSON object, got %', jsonb_typeof(metrics) using errcode = '22023';
    end if;
    if tags is not null and jsonb_typeof(tags) <> 'object' then
        raise exception 'tags: must be a JSON object, got %', jsonb_typeof(tags) using errcode = '22023';
    end if;

    v_run := ml_private.find_run(v_tenant, run_id);
    if v_run.status in ('failed', 'pruned') then
        raise exception 'run % %: only a running or succeeded run registers a model', v_run.id, v_run.status
            using errcode = '55000';
    end if;
    v_metrics := coalesce(metrics, v_run.metrics);
    v_by := coalesce(ml_private.caller_user_id(), (select j.created_by from ml.jobs j where j.id = v_run.job_id));

    insert into ml.models (tenant_id, project_id, name, created_by)
    values (v_tenant, v_run.project_id, model, v_by)
    on conflict on constraint models_tenant_id_name_key do nothing
    returning true into v_created;
    v_model := ml_private.find_model(v_tenant, model, true);
    if v_model.project_id <> v_run.project_id then
        raise exception 'model: % belongs to project %, not to the run''s project %', v_model.name,
            (select p.name from ml.projects p where p.id = v_model.project_id),
            (select p.name from ml.projects p where p.id = v_run.project_id)
            using errcode = '22023';
    end if;
    if v_created then
        perform ml_private.audit(v_tenant, 'model.created', 'model', v_model.id, null,
            jsonb_build_object('model', v_model.name, 'project_id', v_model.project_id));
    end if;

    select coalesce(max(v.version), 0) + 1 into v_version from ml.model_versions v where v.model_id = v_model.id;
    -- The compile job names the version, the version its job: the id is drawn first.
    v_id := gen_random_uuid();
    v_job := ml_private.enqueue_job('compile', jsonb_build_object('model_version_id', v_id), 10, now(), null);
    insert into ml.model_versions (id, tenant_id, model_id, version, run_id, dataset_id, algorithm, metrics, tags, signature,
                                   artifact, artifact_format, artifact_size, artifact_sha256, created_by, scoring_path, scoring)
    values (v_id, v_tenant, v_model.id, v_version, v_run.id, v_run.dataset_id, v_run.algorithm, v_metrics,
            coalesce(tags, '{}'), signature, artifact, artifact_format, octet_length(artifact), v_digest, v_by, 'worker',
            jsonb_build_object('reason', format('compilation queued (job %s): workers score this version until it has run', v_job),
                               'compile_job_id', v_job, 'queued_at', now()));

    if v_run.dataset_id is not null then
        perform ml_private.record_lineage(v_tenant, 'dataset', v_run.dataset_id, 'model_version', v_id, 'trained_on');
        -- Its reference profile (sql/monitoring/profiles.sql): the training set's, outputs once compiled.
        perform ml_private.profile_model_version(v_id);
    end if;
    perform ml_private.record_lineage(v_tenant, 'run', v_run.id, 'model_version', v_id, 'produced');
    perform ml_private.record_lineage(v_tenant, 'project', v_run.project_id, 'model_version', v_id, 'contains');
    perform ml_private.audit(v_tenant, 'model_version.created', 'model_version', v_id, null,
        jsonb_build_object('model', v_model.name, 'version', v_version, 'model_version_id', v_id, 'run_id', v_run.id,
                           'algorithm', v_run.algorithm, 'artifact_format', artifact_format,
                           'artifact_size', octet_length(artifact), 'artifact_sha256', v_digest, 'metrics', v_metrics));
    return jsonb_build_object('model_version_id', v_id, 'model', v_model.name, 'version', v_version, 'compile_job_id', v_job);
end
$$;

-- ml.model_artifact(model text, version int) returns table (artifact bytea, artifact_format text,
--                                                           artifact_sha256 text)
-- The artifact of one version, with what pgmlops.models.artifacts.load needs to check it. `model` may
-- be 'name@version' or 'name@alias' with version NULL; 'name' with version NULL: the newest.
-- Raises like ml_private.find_model_version; 42501 non-members. Callers: any member, service_role.
create or replace function ml.model_artifact(model text, version int)
returns table (artifact bytea, artifact_format text, artifact_sha256 text)
language plpgsql stable security definer
set search_path = ''
as $$
#variable_conflict use_column
declare
    v_row ml.model_versions := ml_private.find_model_version(ml_private.acting_tenant_id(false), model_artifact.model,
                                                             model_artifact.version);
begin
    return query select v_row.artifact, v_row.artifact_format, v_row.artifact_sha256;
end
$$;

------------------------------------------------------------------------------------------------
-- API: reading the registry (clients)
------------------------------------------------------------------------------------------------

-- ml.model_version(model text, version int default null, alias text default null) returns jsonb
-- One version (see ml_private.model_version_document; no artifact bytes): the given version, the
-- one `alias` points at, or the newest. `model` may carry the choice: 'churn@3', 'churn@champion'.
-- Raises 22023 malformed reference or both version and alias; P0002 unknown model, version or
-- alias; 42501 non-members. Callers: any member (viewers too), service_role.
create or replace function ml.model_version(model text, version int default null, alias text default null) returns jsonb
language sql stable security definer
set search_path = ''
as $$
    select ml_private.model_version_document(
        ml_private.find_model_version(ml_private.acting_tenant_id(false), model, version, alias))
$$;

-- ml.model(name text) returns jsonb
-- A model with its project, aliases ({alias: version}), versions (newest first: version,
-- algorithm, metrics, aliases, created_at) and the project's promotion policies.
-- Raises P0002 unknown model; 42501 non-members. Callers: any member, service_role.
create or replace function ml.model(name text) returns jsonb
language plpgsql stable security definer
set search_path = ''
as $$
declare
    v_model ml.models := ml_private.find_model(ml_private.acting_tenant_id(false), model.name);
begin
    return (
        select jsonb_build_object(
            'id', v_model.id, 'name', v_model.name, 'description', v_model.description,
            'project', p.name, 'project_id', p.id, 'task', p.task, 'target', p.target,
            'created_by', v_model.created_by, 'created_at', v_model.created_at,
            'aliases', coalesce((select jsonb_object_agg(a.alias, v.version)
                                 from ml.model_aliases a join ml.model_versions v on v.id = a.model_version_id
                                 where a.model_id = v_model.id), '{}'),
            'versions', coalesce((select jsonb_agg(jsonb_build_object(
                                      'version', v.version, 'id', v.id, 'algorithm', v.algorithm, 'metrics', v.metrics,
                                      'run_id', v.run_id, 'artifact_size', v.artifact_size, 'created_at', v.created_at,
                                      'aliases', coalesce((select jsonb_agg(a.alias order by a.alias) from ml.model_aliases a
                                                           where a.model_version_id = v.id), '[]'))
                                  order by v.version desc)
                                  from ml.model_versions v where v.model_id = v_model.id), '[]'),
            'policies', coalesce((select jsonb_object_agg(x.alias, ml_private.policy_document(x))
                                  from ml.promotion_policies x where x.project_id = p.id), '{}'))
        from ml.projects p where p.id = v_model.project_id);
end
$$;

------------------------------------------------------------------------------------------------
-- API: aliases and approvals (clients)
------------------------------------------------------------------------------------------------

-- ml.set_alias(model text, alias text, version int) returns jsonb
-- Points `alias` of `model` at `version` (moving it when it pointed elsewhere); version NULL
-- removes the alias. Returns {alias, version, model_version_id} (NULL when removed). Aliases
-- with a promotion policy in the model's project move only through ml.promote, which checks it.
-- Audits alias.set, alias.moved or alias.removed (nothing when nothing changes).
-- Raises 22023 bad alias name; P0002 unknown model or version; 55000 the alias has a promotion
-- policy; 42501 viewers and non-members. Callers: authenticated (owner, admin, ml_engineer),
-- service_role.
create or replace function ml.set_alias(model text, alias text, version int) returns jsonb
language plpgsql volatile security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_tenant uuid := ml_private.acting_tenant_id(true);
    v_model  ml.models;
    v_target ml.model_versions;
    v_before jsonb;
    v_after  jsonb;
begin
    perform ml_private.check_alias(alias);
    v_model := ml_private.find_model(v_tenant, model, true);
    if exists (select 1 from ml.promotion_policies x where x.project_id = v_model.project_id and x.alias = set_alias.alias) then
        raise exception 'alias % of model % has a promotion policy: move it with ml.promote, which checks the gates',
            alias, v_model.name using errcode = '55000';
    end if;
    v_before := ml_private.alias_state(v_model.id, alias);
    if version is null then
        if v_before is null then
            return null;
        end if;
        delete from ml.model_aliases a where a.model_id = v_model.id and a.alias = set_alias.alias;
        perform ml_private.audit(v_tenant, 'alias.removed', 'model', v_model.id,
                                 v_before || jsonb_build_object('model', v_model.name), null);
        return null;
    end if;
    v_target := ml_private.find_model_version(v_tenant, v_model.name, version);
    v_after := jsonb_build_object('alias', alias, 'version', v_target.version, 'model_version_id', v_target.id);
    if v_before is not distinct from v_after then
        return v_after;
    end if;
    insert into ml.model_aliases as a (tenant_id, model_id, alias, model_version_id, updated_by)
    values (v_tenant, v_model.id, alias, v_target.id, ml_private.caller_user_id())
    on conflict on constraint model_aliases_pkey do update
        set model_version_id = excluded.model_version_id, updated_by = excluded.updated_by, updated_at = now();
    perform ml_private.audit(v_tenant, case when v_before is null then 'alias.set' else 'alias.moved' end,
                             'model', v_model.id,
                             v_before || jsonb_build_object('model', v_model.name),
                             v_after || jsonb_build_object('model', v_model.name));
    return v_after;
end
$$;

-- ml.approve(model text, version int, decision text, comment text default null) returns jsonb
-- Records the calling user's review of a version: decision approved or rejected (deciding again
-- replaces the earlier decision). Reviews are people's: the caller must be a signed-in member
-- with role owner, admin or ml_engineer. Returns {model, version, decision, approvals,
-- rejections}. Audits approval.recorded.
-- Raises 22023 bad decision or a comment over 10000 characters; P0002 unknown model or version;
-- 42501 service callers (no person to record), viewers and non-members.
-- Callers: authenticated (owner, admin, ml_engineer).
create or replace function ml.approve(model text, version int, decision text, comment text default null) returns jsonb
language plpgsql volatile security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_tenant uuid;
    v_user   uuid := ml_private.caller_user_id();
    v_target ml.model_versions;
    v_before jsonb;
    v_out    jsonb;
begin
    if decision is null or decision not in ('approved', 'rejected') then
        raise exception 'decision: must be approved or rejected, got %', coalesce(quote_literal(decision), 'NULL')
            using errcode = '22023';
    end if;
    if length(comment) > 10000 then
        raise exception 'comment: must be at most 10000 characters' using errcode = '22023';
    end if;
    if ml_private.caller_is_service() then
        raise exception 'approvals are made by people: call ml.approve as a signed-in member (owner, admin or ml_engineer)'
            using errcode = '42501';
    end if;
    v_tenant := ml_private.acting_tenant_id(true, array['owner', 'admin', 'ml_engineer']);
    if version is null then
        raise exception 'version: must not be NULL' using errcode = '22023';
    end if;
    v_target := ml_private.find_model_version(v_tenant, model, version);

    select jsonb_build_object('decision', x.decision, 'comment', x.comment) into v_before
    from ml.model_approvals x where x.model_version_id = v_target.id and x.user_id = v_user;
    insert into ml.model_approvals as x (tenant_id, model_version_id, user_id, decision, comment)
    values (v_tenant, v_target.id, v_user, decision, comment)
    on conflict on constraint model_approvals_model_version_id_user_id_key do update
        set decision = excluded.decision, comment = excluded.comment, created_at = now();

    v_out := jsonb_build_object('model', (select m.name from ml.models m where m.id = v_target.model_id),
        'version', v_target.version, 'decision', decision,
        'approvals', (select count(*) from ml.model_approvals x where x.model_version_id = v_target.id and x.decision = 'approved'),
        'rejections', (select count(*) from ml.model_approvals x where x.model_version_id = v_target.id and x.decision = 'rejected'));
    perform ml_private.audit(v_tenant, 'approval.recorded', 'model_version', v_target.id, v_before,
        jsonb_build_object('model', v_out -> 'model', 'version', v_target.version, 'decision', decision, 'comment', comment));
    return v_out;
end
$$;

------------------------------------------------------------------------------------------------
-- API: promotion policies and promotion (clients)
------------------------------------------------------------------------------------------------

-- ml_private.policy_document(p_policy ml.promotion_policies) returns jsonb
-- A policy as ml.set_promotion_policy takes it (gates only, NULL ones left out).
create or replace function ml_private.policy_document(p_policy ml.promotion_policies) returns jsonb
language sql immutable
set search_path = ''
as $$
    select jsonb_strip_nulls(jsonb_build_object(
        'min_metrics', p_policy.min_metrics, 'max_metrics', p_policy.max_metrics,
        'max_inference_latency_ms', p_policy.max_inference_latency_ms, 'min_approvals', p_policy.min_approvals,
        'min_hours_as_challenger', p_policy.min_hours_as_challenger))
$$;

-- ml.set_promotion_policy(project text, alias text, policy jsonb) returns jsonb
-- Sets the gates a version of the project's models must pass before ml.promote points `alias`
-- (default in spirit: champion) at it, replacing any earlier policy for that alias; policy NULL
-- removes it. policy: {"min_metrics": {"roc_auc": 0.9}, "max_metrics": {"log_loss": 0.4},
-- "max_inference_latency_ms": 50, "min_approvals": 1, "min_hours_as_challenger": 24}, every key
-- optional (absent: no such gate); metric names may be paths into the metrics ("cv.roc_auc").
-- Returns the policy as stored (NULL when removed). Audits policy.set or policy.removed.
-- Raises 22023 bad alias or policy ('policy: $.<key>: <rule>'); P0002 unknown project;
-- 42501 roles ml_engineer and viewer (policies are governance: owners and admins set them).
-- Callers: authenticated (owner, admin), service_role.
create or replace function ml.set_promotion_policy(project text, alias text, policy jsonb) returns jsonb
language plpgsql volatile security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_tenant  uuid;
    v_project ml.projects;
    v_old     ml.promotion_policies;
    v_new     ml.promotion_policies;
    v_metrics constant jsonb := '{"type": "object", "additionalProperties": {"type": "number"}}';
begin
    perform ml_private.check_alias(alias);
    if policy is not null then
        perform ml_private.assert_json_valid('policy', jsonb_build_object(
            'type', 'object', 'additionalProperties', false, 'properties', jsonb_build_object(
                'min_metrics', v_metrics, 'max_metrics', v_metrics,
                'max_inference_latency_ms', '{"type": ["number", "null"], "exclusiveMinimum": 0}'::jsonb,
                'min_approvals', '{"type": ["integer", "null"], "minimum": 0, "maximum": 100}'::jsonb,
                'min_hours_as_challenger', '{"type": ["number", "null"], "minimum": 0, "maximum": 87600}'::jsonb)),
            policy);
    end if;
    v_tenant := ml_private.acting_tenant_id(true, array['owner', 'admin']);
    v_project := ml_private.find_project(v_tenant, project);
    select * into v_old from ml.promotion_policies x where x.project_id = v_project.id and x.alias = set_promotion_policy.alias
    for update;

    if policy is null then
        if v_old.id is null then
            return null;
        end if;
        delete from ml.promotion_policies x where x.id = v_old.id;
        perform ml_private.audit(v_tenant, 'policy.removed', 'promotion_policy', v_old.id,
            jsonb_build_object('project', v_project.name, 'alias', alias, 'policy', ml_private.policy_document(v_old)), null);
        return null;
    end if;

    insert into ml.promotion_policies as x (tenant_id, project_id, alias, min_metrics, max_metrics, max_inference_latency_ms,
                                            min_approvals, min_hours_as_challenger, updated_by)
    values (v_tenant, v_project.id, alias, coalesce(policy -> 'min_metrics', '{}'), coalesce(policy -> 'max_metrics', '{}'),
            (policy ->> 'max_inference_latency_ms')::float8, coalesce((policy ->> 'min_approvals')::int, 0),
            (policy ->> 'min_hours_as_challenger')::numeric, ml_private.caller_user_id())
    on conflict on constraint promotion_policies_project_id_alias_key do update set
        min_metrics = excluded.min_metrics, max_metrics = excluded.max_metrics,
        max_inference_latency_ms = excluded.max_inference_latency_ms, min_approvals = excluded.min_approvals,
        min_hours_as_challenger = excluded.min_hours_as_challenger, updated_by = excluded.updated_by, updated_at = now()
    returning * into v_new;
    perform ml_private.audit(v_tenant, 'policy.set', 'promotion_policy', v_new.id,
        case when v_old.id is not null then jsonb_build_object('project', v_project.name, 'alias', alias,
                                                               'policy', ml_private.policy_document(v_old)) end,
        jsonb_build_object('project', v_project.name, 'alias', alias, 'policy', ml_private.policy_document(v_new)));
    return ml_private.policy_document(v_new);
end
$$;

-- ml_private.promotion_gates(p_version ml.model_versions, p_alias text) returns jsonb
-- Every gate that applies to pointing p_alias at p_version, checked now:
-- [{gate, passed, message}], in this order: min_metrics (by name), max_metrics (by name),
-- max_inference_latency_ms, min_approvals, rejections (always: a version any reviewer
-- rejected is not promoted), min_hours_as_challenger. Messages read 'roc_auc 0.81 < 0.9',
-- 'approvals 0 < 1', 'hours_as_challenger 2.5 < 24'. Metrics are read from the version
-- (names may be dotted paths); the latency from its run, else its metrics' inference_latency_ms.
-- Hours as challenger count from the audit row that last pointed challenger at the version,
-- while it still does.
create or replace function ml_private.promotion_gates(p_version ml.model_versions, p_alias text) returns jsonb
language plpgsql stable security definer
set search_path = ''
as $$
declare
    v_model     ml.models;
    v_policy    ml.promotion_policies;
    v_gates     jsonb := '[]';
    v_key       text;
    v_limit     numeric;
    v_raw       jsonb;
    v_value     numeric;
    v_count     int;
    v_since     timestamptz;
    v_hours     numeric;
begin
    select * into v_model from ml.models m where m.id = p_version.model_id;
    select * into v_policy from ml.promotion_policies x where x.project_id = v_model.project_id and x.alias = p_alias;

    if v_policy.id is not null then
        for v_key, v_limit in select key, (value #>> '{}')::numeric from jsonb_each(v_policy.min_metrics) order by key loop
            v_raw := p_version.metrics #> string_to_array(v_key, '.');
            v_value := case when jsonb_typeof(v_raw) = 'number' then (v_raw #>> '{}')::numeric end;
            v_gates := v_gates || jsonb_build_object('gate', 'min_metrics.' || v_key, 'passed', coalesce(v_value >= v_limit, false),
                'message', case when v_value is null then format('%s missing (needs >= %s)', v_key, ml_private.format_number(v_limit))
                                else format('%s %s %s %s', v_key, ml_private.format_number(v_value),
                                            case when v_value >= v_limit then '>=' else '<' end, ml_private.format_number(v_limit)) end);
        end loop;
        for v_key, v_limit in select key, (value #>> '{}')::numeric from jsonb_each(v_policy.max_metrics) order by key loop
            v_raw := p_version.metrics #> string_to_array(v_key, '.');
            v_value := case when jsonb_typeof(v_raw) = 'number' then (v_raw #>> '{}')::numeric end;
            v_gates := v_gates || jsonb_build_object('gate', 'max_metrics.' || v_key, 'passed', coalesce(v_value <= v_limit, false),
                'message', case when v_value is null then format('%s missing (needs <= %s)', v_key, ml_private.format_number(v_limit))
                                else format('%s %s %s %s', v_key, ml_private.format_number(v_value),
                                            case when v_value <= v_limit then '<=' else '>' end, ml_private.format_number(v_limit)) end);
        end loop;
        if v_policy.max_inference_latency_ms is not null then
            v_limit := v_policy.max_inference_latency_ms::numeric;
            select r.inference_latency_ms::numeric into v_value from ml.runs r where r.id = p_version.run_id;
            if v_value is null and jsonb_typeof(p_version.metrics -> 'inference_latency_ms') = 'number' then
                v_value := (p_version.metrics ->> 'inference_latency_ms')::numeric;
            end if;
            v_gates := v_gates || jsonb_build_object('gate', 'max_inference_latency_ms', 'passed', coalesce(v_value <= v_limit, false),
                'message', case when v_value is null then format('inference_latency_ms unknown (needs <= %s)', ml_private.format_number(v_limit))
                                else format('inference_latency_ms %s %s %s', ml_private.format_number(v_value),
                                            case when v_value <= v_limit then '<=' else '>' end, ml_private.format_number(v_limit)) end);
        end if;
        if v_policy.min_approvals > 0 then
            select count(*) into v_count from ml.model_approvals x where x.model_version_id = p_version.id and x.decision = 'approved';
            v_gates := v_gates || jsonb_build_object('gate', 'min_approvals', 'passed', v_count >= v_policy.min_approvals,
                'message', format('approvals %s %s %s', v_count, case when v_count >= v_policy.min_approvals then '>=' else '<' end,
                                  v_policy.min_approvals));
        end if;
    end if;

    select count(*) into v_count from ml.model_approvals x where x.model_version_id = p_version.id and x.decision = 'rejected';
    v_gates := v_gates || jsonb_build_object('gate', 'rejections', 'passed', v_count = 0,
        'message', format('rejections %s %s 0', v_count, case when v_count = 0 then '=' else '>' end));

    if v_policy.min_hours_as_challenger is not null then
        if exists (select 1 from ml.model_aliases a where a.model_id = v_model.id and a.alias = 'challenger'
                   and a.model_version_id = p_version.id) then
            select max(l.at) into v_since from ml.audit_log l
            where l.tenant_id = p_version.tenant_id and l.object_kind = 'model' and l.object_id = v_model.id
              and l.action in ('alias.set', 'alias.moved', 'model.promoted')
              and l.after ->> 'alias' = 'challenger' and l.after ->> 'model_version_id' = p_version.id::text;
            v_hours := round((extract(epoch from now() - coalesce(v_since, now())) / 3600)::numeric, 2);
            v_gates := v_gates || jsonb_build_object('gate', 'min_hours_as_challenger',
                'passed', v_hours >= v_policy.min_hours_as_challenger,
                'message', format('hours_as_challenger %s %s %s', ml_private.format_number(v_hours),
                                  case when v_hours >= v_policy.min_hours_as_challenger then '>=' else '<' end,
                                  ml_private.format_number(v_policy.min_hours_as_challenger)));
        else
            v_gates := v_gates || jsonb_build_object('gate', 'min_hours_as_challenger', 'passed', false,
                'message', format('hours_as_challenger: version %s is not the challenger (needs >= %s hours as challenger)',
                                  p_version.version, ml_private.format_number(v_policy.min_hours_as_challenger)));
        end if;
    end if;
    return v_gates;
end
$$;

-- ml.check_promotion(model text, version int, alias text default 'champion') returns jsonb
-- What ml.promote would decide now, without changing anything: {model, version, alias,
-- policy, passed, gates: [{gate, passed, message}]}. Raises like ml.promote's lookups.
-- Callers: any member (viewers too), service_role.
create or replace function ml.check_promotion(model text, version int, alias text default 'champion') returns jsonb
language plpgsql stable security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_tenant uuid := ml_private.acting_tenant_id(false);
    v_target ml.model_versions;
    v_gates  jsonb;
begin
    perform ml_private.check_alias(alias);
    v_target := ml_private.find_model_version(v_tenant, model, version);
    v_gates := ml_private.promotion_gates(v_target, alias);
    return jsonb_build_object(
        'model', (select m.name from ml.models m where m.id = v_target.model_id), 'version', v_target.version,
        'alias', alias,
        'policy', (select ml_private.policy_document(x) from ml.promotion_policies x join ml.models m on m.project_id = x.project_id
                   where m.id = v_target.model_id and x.alias = check_promotion.alias),
        'passed', not exists (select 1 from jsonb_array_elements(v_gates) g where not (g ->> 'passed')::boolean),
        'gates', v_gates);
end
$$;

-- ml.promote(model text, version int, alias text default 'champion') returns jsonb
-- Points `alias` of `model` at `version` once every gate of the project's policy for that alias
-- passes (see ml_private.promotion_gates; no policy: only the rejections gate). Refuses with
-- 23514 and a message listing each failed gate ('promotion of churn@3 to champion refused:
-- roc_auc 0.81 < 0.9; approvals 0 < 1'; DETAIL: the gates as JSON), changing nothing.
-- On success returns {model, version, alias, previous_version, changed, gates} and audits
-- model.promoted (before: where the alias pointed; after: the version and the gates passed).
-- Promoting the version the alias already points at changes nothing (changed false).
-- Raises 22023 bad alias; P0002 unknown model or version; 23514 a gate failed; 42501 viewers
-- and non-members. Callers: authenticated (owner, admin, ml_engineer), service_role.
create or replace function ml.promote(model text, version int, alias text default 'champion') returns jsonb
language plpgsql volatile security definer
set search_path = ''
as $$
#variable_conflict use_variable
declare
    v_tenant uuid := ml_private.acting_tenant_id(true);
    v_model  ml.models;
    v_target ml.model_versions;
    v_gates  jsonb;
    v_failed text[];
    v_before jsonb;
    v_after  jsonb;
begin
    perform ml_private.check_alias(alias);
    if version is null then
        raise exception 'version: must not be NULL' using errcode = '22023';
    end if;
    v_target := ml_private.find_model_version(v_tenant, model, version, null, true);
    select * into v_model from ml.models m where m.id = v_target.model_id;
    v_before := ml_private.alias_state(v_model.id, alias);
    v_gates := ml_private.promotion_gates(v_target, alias);
    select array_agg(g ->> 'message' order by n) into v_failed
    from jsonb_array_elements(v_gates) with ordinality x (g, n) where not (g ->> 'passed')::boolean;
    if v_failed is not null then
        raise exception 'promotion of %@% to % refused: %', v_model.name, v_target.version, alias, array_to_string(v_failed, '; ')
            using errcode = '23514', detail = v_gates::text;
    end if;

    v_after := jsonb_build_object('alias', alias, 'version', v_target.version, 'model_version_id', v_target.id);
    if v_before is not distinct from v_after then
        return jsonb_build_object('model', v_model.name, 'version', v_target.version, 'alias', alias,
                                  'previous_version', v_target.version, 'changed', false, 'gates', v_gates);
    end if;
    insert into ml.model_aliases as a (tenant_id, model_id, alias, model_version_id, updated_by)
    values (v_tenant, v_model.id, alias, v_target.id, ml_private.caller_user_id())
    on conflict on constraint model_aliases_pkey do update
        set model_version_id = excluded.model_version_id, updated_by = excluded.updated_by, updated_at = now();
    perform ml_private.audit(v_tenant, 'model.promoted', 'model', v_model.id,
        v_before || jsonb_build_object('model', v_model.name),
        v_after || jsonb_build_object('model', v_model.name, 'gates', v_gates));
    return jsonb_build_object('model', v_model.name, 'version', v_target.version, 'alias', alias,
                              'previous_version', v_before -> 'version', 'changed', true, 'gates', v_gates);
end
$$;

------------------------------------------------------------------------------------------------
-- Grants
------------------------------------------------------------------------------------------------

grant execute on function
    ml.model_version(text, int, text),
    ml.model(text),
    ml.model_artifact(text, int),
    ml.set_alias(text, text, int),
    ml.approve(text, int, text, text),
    ml.set_promotion_policy(text, text, jsonb),
    ml.check_promotion(text, int, text),
    ml.promote(text, int, text)
to authenticated, service_role;
grant execute on function
    ml.register_model_version(uuid, text, bytea, text, text, jsonb, jsonb, jsonb),
    ml_private.audit(uuid, text, text, uuid, jsonb, jsonb),
    ml_private.format_number(numeric),
    ml_private.check_alias(text),
    ml_private.find_model(uuid, text, boolean),
    ml_private.find_model_version(uuid, text, int, text, boolean),
    ml_private.alias_state(uuid, text),
    ml_private.model_version_document(ml.model_versions),
    ml_private.max_artifact_bytes(),
    ml_private.policy_document(ml.promotion_policies),
    ml_private.promotion_gates(ml.model_versions, text)
to service_role;
