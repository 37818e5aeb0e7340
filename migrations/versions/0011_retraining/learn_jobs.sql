-- pgmlops 0011: the learn job kind (docs/retraining.md, "Continuous learning")
--
-- A learn job updates the champion of a project whose retraining policy enables continuous
-- learning from the labelled predictions since its last update (partial_fit of an SGD
-- pipeline's final estimator, a few optimizer epochs of the torch MLP), keeps the update only
-- when the holdout metric is not worse (handler pgmlops.retraining._learn:learn). Enqueued by
-- ml.learn and by the maintenance run (ml_private.run_due_learning); payload
-- {trigger_event_id, project}.
select ml_private.register_job_kind(
    'learn', 'Updates an incremental champion from new feedback; kept only when its holdout metric is not worse',
    $j${"type": "object", "required": ["trigger_event_id", "project"],
        "properties": {
            "trigger_event_id": {"type": "string", "pattern": "^[0-9a-f-]{36}$"},
            "project": {"type": "string", "minLength": 1}
        }}$j$::jsonb,
    2, interval '30 minutes', interval '30 seconds', interval '10 minutes');
