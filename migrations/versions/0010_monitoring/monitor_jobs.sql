-- pgmlops 0010: the `monitor` job kind (docs/monitoring.md, "Multivariate and embedding drift")

-- monitor: completes a drift report with its multivariate part (a domain classifier's ROC AUC and
-- the PCA reconstruction error over the tabular inputs; centroid distance, MMD and a domain
-- classifier per vector or text input), computed by a worker (pgmlops.monitoring._multivariate)
-- and stored by ml.finish_monitor_report. Enqueued by ml.drift_report (payload {report_id});
-- the report is 'pending' until it ends.
select ml_private.register_job_kind(
    'monitor', 'Computes the multivariate and embedding drift of a drift report (enqueued by ml.drift_report)',
    $j${"type": "object", "required": ["report_id"],
        "properties": {
            "report_id": {"type": "string", "pattern": "^[0-9a-f-]{36}$"}
        }}$j$::jsonb,
    3, interval '10 minutes', interval '10 seconds', interval '10 minutes');
