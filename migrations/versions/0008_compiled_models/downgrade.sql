-- pgmlops 0008 downgrade: the compiled functions and the scoring columns go.

drop trigger if exists model_versions_drop_compiled on ml.model_versions;
drop schema ml_models cascade;
alter table ml.model_versions
    drop constraint model_versions_scoring_path_valid,
    drop column scoring,
    drop column scoring_path;
