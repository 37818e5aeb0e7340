-- pgmlops 0008: models compiled to SQL (docs/scoring.md)

-- The compiled functions, one per version: ml_models.mv_<version id as 32 hex>(num, cat). No
-- client role gets USAGE or EXECUTE here: ml.predict (security definer) checks the tenant and
-- calls them.
create schema ml_models;
comment on schema ml_models is 'pgmlops: compiled model versions (pure SQL functions), called by ml.predict only';
revoke all on schema ml_models from public;
alter default privileges in schema ml_models revoke execute on functions from public;

-- Which path scores each version: 'compiled' (scoring: {function, arguments, representation,
-- sizes, timings}) or 'worker' (scoring: {reason}).
alter table ml.model_versions
    add column scoring_path text not null default 'worker',
    add column scoring jsonb not null default '{}',
    add constraint model_versions_scoring_path_valid check (scoring_path in ('compiled', 'worker'));
comment on column ml.model_versions.scoring_path is 'compiled (a function in ml_models) or worker (scored by workers)';
comment on column ml.model_versions.scoring is 'compiled: {function, arguments, representation, sizes, timings}; worker: {reason}';

update ml.model_versions
set scoring = jsonb_build_object('reason', 'registered before models were compiled (revision 0008); '
                                            'pgmlops.scoring.compile_model_version compiles it');
