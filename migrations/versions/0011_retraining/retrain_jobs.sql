-- pgmlops 0011: the retrain job kind (docs/retraining.md, "The retrain job")
--
-- A retrain job acts on one 'trigger' row of ml.retraining_events: it curates the data, trains
-- a challenger, evaluates it against the champion on the same holdout and deploys it per the
-- project's retraining policy (handler pgmlops.retraining._retrain:retrain). Enqueued by
-- ml_private.check_retraining_triggers when a trigger fires and by ml.retrain (a manual
-- trigger); payload {trigger_event_id, project}.
select ml_private.register_job_kind(
    'retrain', 'Retrains a challenger after a retraining trigger, proves it better offline and deploys it per the policy',
    $j${"type": "object", "required": ["trigger_event_id", "project"],
        "properties": {
            "trigger_event_id": {"type": "string", "pattern": "^[0-9a-f-]{36}$"},
            "project": {"type": "string", "minLength": 1}
        }}$j$::jsonb,
    2, interval '30 minutes', interval '30 seconds', interval '10 minutes');
