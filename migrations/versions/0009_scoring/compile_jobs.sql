-- pgmlops 0009: compiling a registered version is a job of its own (docs/scoring.md, "Where it
-- happens")
--
-- ml.register_model_version queues a `compile` job for every version it registers, in the
-- registration's transaction, and records the version as scored by workers until the job has
-- run: scoring_path 'worker', scoring {reason: 'compilation queued (job N) ...', compile_job_id:
-- N, queued_at}. The job's handler (pgmlops.scoring._compile_job.compile_version) loads the
-- artifact and installs its compiled function, or records why workers score it. No new scoring
-- state: the CHECK of 0008 (compiled | worker) stands, and a version waiting for its job is
-- told apart by scoring ? 'compile_job_id'.

-- compile: one version's compilation, queued by ml.register_model_version (a service caller may
-- queue one for an older version too). Priority is the queue's business (the registration
-- queues it at 10, ahead of the training and tuning jobs, which take minutes and do not wait
-- for it); a lease of 10 minutes covers the largest models the compiler takes (500 trees of
-- depth 8 compile in ~3 s; PostgreSQL creating a 6 MB function takes longer under load).
select ml_private.register_job_kind(
    'compile', 'Compiles a registered model version to a SQL function, or records why workers score it '
               '(enqueued by ml.register_model_version)',
    $j${"type": "object", "additionalProperties": false, "required": ["model_version_id"],
        "properties": {
            "model_version_id": {"type": "string", "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"}
        }}$j$::jsonb,
    3, interval '10 minutes', interval '5 seconds', interval '5 minutes');
