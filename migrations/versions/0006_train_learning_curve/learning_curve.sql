-- 0006_train_learning_curve: nothing versioned. The revision ships the repeatable sql/ in which
-- ml.train's options accept learning_curve (sql/training/runs.sql, train_options_schema): a
-- change to sql/ reaches Supabase projects only in a new revision's file (docs/migrations.md).
select 1;
