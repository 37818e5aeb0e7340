"""Seeders for the row-level security tests: rows of every tenant-owned table, through the SQL API."""

# Adding a tenant table (one registered with ml_private.enable_tenant_rls):
#
#   @seeds("ml.feature_groups")
#   def feature_group(conn: Conn, tenant: str) -> None:
#       conn.execute("select ml.create_feature_group(...)")
#
# A seeder makes at least one row of its tables for `tenant`, through the SQL API, on a connection
# that acts as a service caller for that tenant (pgmlops.db.tenant_context), as a worker would. One
# seeder may fill several tables (ml.enqueue writes ml.jobs and ml.events): name them all. Seeders
# run in the order they are defined, so one may use rows an earlier one made (a feature group
# before its values). Key by the name ml_private.tenant_tables lists the table under.
#
# Until a registered table has a seeder, tests/test_rls.py fails (test_every_tenant_table_has_a_seeder),
# so no table is ever checked vacuously. Seed it in supabase/tests/rls_tenants.test.sql's SEED
# block too: the pgTAP suite makes the same checks.
#
# Tables made per feature group version (ml_features.fg_<id>, its offline table, and
# ml_features.fg_<id>_online; docs/features.md) are registered too, one pair per version, each
# holding one tenant's rows. They are keyed here by GROUP_TABLES' names, which tests/test_rls.py
# resolves, per tenant, to the tables of that tenant's version of the group.

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from pgmlops.db import tenant_context

Conn = psycopg.Connection[Any]
Seeder = Callable[[Conn, str], None]

SEEDERS: dict[str, Seeder] = {}

# The per-version tables the seeders make: key -> (feature group, column of ml.feature_groups naming the table).
GROUP_TABLES: dict[str, tuple[str, str]] = {
    "ml_features: offline table of rls_customer": ("rls_customer", "offline_table"),
    "ml_features: online table of rls_customer": ("rls_customer", "online_table"),
}


def seeds(*tables: str) -> Callable[[Seeder], Seeder]:
    """Register the decorated function as the seeder of ``tables``."""

    def register(seeder: Seeder) -> Seeder:
        for table in tables:
            if table in SEEDERS:
                raise ValueError(f"{table} already has a seeder: {SEEDERS[table].__name__}")
            SEEDERS[table] = seeder
        return seeder

    return register


# What the database owner prepares before any seeder runs, as a user's own migration would: a
# schema where the service role may create the tables batch scorings write to.
OWNER_SETUP = ("create schema if not exists rls_scores",
               "grant usage, create on schema rls_scores to service_role")


def seed_tenant(conn: Conn, tenant: str) -> None:
    """Run every seeder once for ``tenant``, in the order they are defined, in one transaction
    of the service role acting for it (pgmlops.db.tenant_context, as a worker would), after
    OWNER_SETUP (``conn`` is the owner's)."""
    for statement in OWNER_SETUP:
        conn.execute(statement)
    with tenant_context(conn, tenant):
        for seeder in dict.fromkeys(SEEDERS.values()):
            seeder(conn, tenant)


# -- seeders -----------------------------------------------------------------------------------


@seeds("ml.tenants", "ml.tenant_members")
def tenant_and_members(conn: Conn, tenant: str) -> None:
    """Nothing to add: the tests make each tenant with ml.create_tenant (its owner a member) and
    add a viewer with ml.add_tenant_member before seeding."""


@seeds("ml.jobs", "ml.events")
def echo_job(conn: Conn, tenant: str) -> None:
    """An echo job; ml.enqueue also publishes its job.queued event."""
    conn.execute("select ml.enqueue('echo', %s)", (Jsonb({"message": f"rls seed for {tenant}"}),))


@seeds("ml.feature_groups", *GROUP_TABLES, "ml.feature_ingestions", "ml.feature_quarantine")
def feature_group_with_values(conn: Conn, tenant: str) -> None:
    """A feature group (its version's offline and online tables) and one ingestion in quarantine
    mode: a valid row (offline and online tables) and an invalid one (quarantine)."""
    conn.execute("select ml.create_feature_group('rls_customer', 'customer', %s, '30 days')",
                 (Jsonb({"spend": {"dtype": "float", "min": 0}}),))
    conn.execute("select ml.ingest('rls_customer', %s, 'quarantine')", (Jsonb([
        {"customer": "c1", "event_time": "2026-01-01T00:00:00Z", "spend": 10.5},
        {"customer": "c2", "event_time": "2026-01-01T00:00:00Z", "spend": -1},
    ]),))


@seeds("ml.datasets", "ml.lineage", "ml.reference_profiles")
def training_set(conn: Conn, tenant: str) -> None:
    """A training set over the group above (registered in ml.datasets, with lineage from the group,
    and its reference profile: ml.create_training_set profiles what it builds)."""
    conn.execute("select ml.create_training_set('rls_training', "
                 "$$select 'c1' as customer, timestamptz '2026-01-02' as event_time$$, array['rls_customer:spend'])")


@seeds("ml.feature_stats")
def feature_stats(conn: Conn, tenant: str) -> None:
    """Statistics of the group above."""
    conn.execute("select ml.compute_feature_stats('rls_customer')")


@seeds("ml.projects", "ml.runs", "ml.run_metrics", "ml.models", "ml.model_versions", "ml.model_aliases",
       "ml.promotion_policies", "ml.model_approvals", "ml.audit_log")
def registered_model(conn: Conn, tenant: str) -> None:
    """A project, a finished run on the training set above with per-step metrics, a registered
    version of its model (small bytes, their real SHA-256), an alias and a promotion policy, and
    the tenant owner's approval (approvals are people's: made with the owner's claims). The
    registry changes are written to ml.audit_log."""
    conn.execute("select ml.create_project('rls-project', 'classification', 'label')")
    run = conn.execute(
        "select ml.start_run(p.id, null, 'logistic_regression', '{}', '{}', d.id, '{\"sklearn\": \"rls\"}')"
        " from ml.projects p, ml.datasets d where p.tenant_id = %(t)s and p.name = 'rls-project'"
        " and d.tenant_id = %(t)s and d.name = 'rls_training'", {"t": tenant}).fetchone()
    assert run is not None
    conn.execute("select ml.log_run_metrics(%s, 1, '{\"loss\": 0.5}')", (run[0],))
    conn.execute("select ml.finish_run(%s, 'succeeded', '{\"roc_auc\": 0.9}', 0.1, 3, 0.2)", (run[0],))
    artifact = f"rls artifact {tenant}".encode()
    conn.execute("select ml.register_model_version(%s, 'rls-model', %s, 'skops', %s, %s, null)",
                 (run[0], artifact, hashlib.sha256(artifact).hexdigest(),
                  Jsonb({"inputs": [{"name": "spend", "dtype": "float"}], "outputs": [{"name": "label", "dtype": "int"}]})))
    conn.execute("select ml.set_alias('rls-model', 'challenger', 1)")
    conn.execute("select ml.set_promotion_policy('rls-project', 'champion', '{\"min_approvals\": 1}')")
    owner = conn.execute("select user_id from ml.tenant_members where tenant_id = %s and role = 'owner' limit 1",
                         (tenant,)).fetchone()
    assert owner is not None, "the RLS tests make every tenant with an owner"
    with tenant_context(conn, tenant, user=owner[0]):
        conn.execute("select ml.approve('rls-model', 1, 'approved', 'rls seed')")


@seeds("ml.tuning_studies")
def tuning_study(conn: Conn, tenant: str) -> None:
    """A one-trial study of an anomaly-detection project (no target, so the unlabelled training
    set above will do); its jobs join ml.jobs."""
    conn.execute("select ml.create_project('rls-anomalies', 'anomaly_detection', null)")
    conn.execute("select ml.tune('rls-anomalies', d.id, 'isolation_forest', %s, 1) from ml.datasets d"
                 " where d.tenant_id = %s and d.name = 'rls_training'",
                 (Jsonb({"n_estimators": {"type": "int", "low": 10, "high": 50}}), tenant))


# A logistic regression on spend, as pgmlops.scoring.describe writes it for scikit-learn's fitted
# LogisticRegression (coefficient and intercept as fitted on four rows): installed as the
# compiled function of rls-model version 1, so ml.predict has a compiled version to serve.
RLS_COMPILED_MODEL = {
    "format": 1, "task": "classification", "estimator_name": "LogisticRegression",
    "inputs": {"numeric": 1, "categorical": 0}, "features": [{"num": 1, "ops": []}],
    "estimator": {"kind": "linear", "coef": [[0.697816651000343]], "intercept": [-4.283542512790246]},
    "output": {"kind": "classification", "labels": [0, 1], "probability": "sigmoid", "label": "gt0", "decision": True},
}


@seeds("ml.deployments", "ml.deployment_arms", "ml.predictions", "ml.feedback")
def served_prediction(conn: Conn, tenant: str) -> None:
    """rls-model version 1 (approved above, so it passes the champion policy's gate) compiled,
    deployed alone (ml.deploy: a deployment and its arm), one logged prediction (ml.predict)
    and its realized outcome (ml.record_feedback)."""
    version = conn.execute("select v.id from ml.model_versions v join ml.models m on m.id = v.model_id"
                           " where m.tenant_id = %s and m.name = 'rls-model' and v.version = 1", (tenant,)).fetchone()
    assert version is not None
    conn.execute("select ml.install_compiled_model(%s, %s)", (version[0], Jsonb(RLS_COMPILED_MODEL)))
    conn.execute("select ml.deploy('rls-project', 'single', %s)",
                 (Jsonb([{"arm": "main", "model": "rls-model", "version": 1, "weight": 1}]),))
    prediction = conn.execute("select ml.predict('rls-project', %s, 'c1')", (Jsonb({"spend": 10.5}),)).fetchone()
    assert prediction is not None
    conn.execute("select ml.record_feedback(%s, '1', 'rls seed')", (prediction[0]["prediction_id"],))


@seeds("ml.batch_scorings")
def batch_scoring(conn: Conn, tenant: str) -> None:
    """A queued batch scoring (ml.score: its row and its score job) of a one-row query with the
    deployment above, into a table of schema rls_scores (made by the first tenant's call,
    appended to by the next)."""
    conn.execute("select ml.score('rls-project', $$select 'c1' as customer, 10.5::float8 as spend$$, 'rls_scores.scores')")


@seeds("ml.monitoring_schedules")
def monitoring_schedule(conn: Conn, tenant: str) -> None:
    """A daily drift report of rls-project's last day (ml.schedule_monitoring: the workers'
    scheduler's, or a pg_cron job where pg_cron is installed)."""
    conn.execute("select ml.schedule_monitoring('rls-project', '@daily', '1 day')")


# A per-feature threshold of 0 on a distance test marks the window drifted whatever it holds
# (drift at distance >= threshold), so the report raises alerts through the SQL API.
DRIFTED_SPEND = {"features": {"spend": {"test": "wasserstein", "threshold": 0}}}


@seeds("ml.drift_reports", "ml.drift_results", "ml.performance_results", "ml.window_embeddings", "ml.alerts",
       "ml.window_watermarks", "ml.window_counts")
def drift_reports(conn: Conn, tenant: str) -> None:
    """Two drift reports (ml.drift_report) of rls-project's last day, which holds the served
    prediction above and its feedback: an exact one with spend's threshold at 0, so spend
    drifts (its results, performance buckets, window embedding, and alerts: feature_drift and
    dataset_drift), then a fast one, which first rolls the prediction log up to the rollup
    horizon (ml.window_watermarks).

    ml.window_counts is written directly (the service role's grant): the rollup counts only
    predictions older than its horizon (a minute before the oldest running transaction), and
    every seed row is written in this one transaction, so no seeded prediction can be rolled up
    yet. The row is the one the rollup would write for the seed prediction (spend 10.5)."""
    conn.execute("select ml.drift_report('rls-project', now() - interval '1 day', now() + interval '1 minute', %s)",
                 (Jsonb(DRIFTED_SPEND),))
    conn.execute("select ml.drift_report('rls-project', now() - interval '1 day', now() + interval '1 minute', "
                 "'{\"mode\": \"fast\"}')")
    conn.execute("""insert into ml.window_counts (tenant_id, project_id, model_version_id, feature, role, bucket, bin, count,
                                                  total, total_squares)
                    select p.tenant_id, p.project_id, p.model_version_id, 'spend', 'input', date_trunc('hour', p.created_at),
                           1, 1, 10.5, 110.25
                    from ml.predictions p join ml.projects j on j.id = p.project_id
                    where p.tenant_id = %s and j.name = 'rls-project' limit 1""", (tenant,))


@seeds("ml.retraining_policies", "ml.retraining_events")
def retraining(conn: Conn, tenant: str) -> None:
    """rls-project's retraining policy (ml.set_retraining_policy: retrain when half the inputs
    drift), then its triggers judged on the exact drift report above, where spend drifted: the
    trigger fires and is recorded in ml.retraining_events (ml_private.check_retraining_triggers,
    which ml.drift_report calls after each report; the reports above came before the policy)."""
    conn.execute("select ml.set_retraining_policy('rls-project', %s)",
                 (Jsonb({"triggers": [{"type": "dataset_drift", "share": 0.5}]}),))
    conn.execute("select ml_private.check_retraining_triggers(r.id) from ml.drift_reports r"
                 " join ml.projects p on p.id = r.project_id"
                 " where r.tenant_id = %s and p.name = 'rls-project' and r.mode = 'exact'", (tenant,))
