"""Seeders for the row-level security tests: rows of every tenant-owned table, through the SQL API."""

# Adding a tenant table (one registered with ml_private.enable_tenant_rls):
#
#   @seeds("ml.feature_groups")
#   def feature_group(conn: Conn, tenant: str) -> None:
#       conn.execute("select ml.create_feature_group(...)")
#
# A seeder makes at least one row of its tables for `tenant`, through the SQL API, on a connection
# that acts as a service caller for that tenant (pgmlops.tenant_id is set), as a worker would. One
# seeder may fill several tables (ml.enqueue writes ml.jobs and ml.events): name them all. Seeders
# run in the order they are defined, so one may use rows an earlier one made (a feature group
# before its values). Key by the name ml_private.tenant_tables lists the table under.
#
# Until a registered table has a seeder, tests/test_rls.py fails (test_every_tenant_table_has_a_seeder),
# so no table is ever checked vacuously. Seed it in supabase/tests/rls_tenants.test.sql's SEED
# block too: the pgTAP suite makes the same checks.

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

Conn = psycopg.Connection[Any]
Seeder = Callable[[Conn, str], None]

SEEDERS: dict[str, Seeder] = {}


def seeds(*tables: str) -> Callable[[Seeder], Seeder]:
    """Register the decorated function as the seeder of ``tables``."""

    def register(seeder: Seeder) -> Seeder:
        for table in tables:
            if table in SEEDERS:
                raise ValueError(f"{table} already has a seeder: {SEEDERS[table].__name__}")
            SEEDERS[table] = seeder
        return seeder

    return register


def seed_tenant(conn: Conn, tenant: str) -> None:
    """Run every seeder once for ``tenant``, in the order they are defined."""
    conn.execute("select set_config('pgmlops.tenant_id', %s, false)", (tenant,))
    try:
        for seeder in dict.fromkeys(SEEDERS.values()):
            seeder(conn, tenant)
    finally:
        conn.execute("select set_config('pgmlops.tenant_id', '', false)")


# -- seeders -----------------------------------------------------------------------------------


@seeds("ml.tenants", "ml.tenant_members")
def tenant_and_members(conn: Conn, tenant: str) -> None:
    """Nothing to add: the tests make each tenant with ml.create_tenant (its owner a member) and
    add a viewer with ml.add_tenant_member before seeding."""


@seeds("ml.jobs", "ml.events")
def echo_job(conn: Conn, tenant: str) -> None:
    """An echo job; ml.enqueue also publishes its job.queued event."""
    conn.execute("select ml.enqueue('echo', %s)", (Jsonb({"message": f"rls seed for {tenant}"}),))


@seeds("ml.feature_groups", "ml.feature_values", "ml.feature_online", "ml.feature_ingestions",
       "ml.feature_quarantine")
def feature_group_with_values(conn: Conn, tenant: str) -> None:
    """A feature group and one ingestion in quarantine mode: a valid row (values, online store)
    and an invalid one (quarantine)."""
    conn.execute("select ml.create_feature_group('rls_customer', 'customer', %s, '30 days')",
                 (Jsonb({"spend": {"dtype": "float", "min": 0}}),))
    conn.execute("select ml.ingest('rls_customer', %s, 'quarantine')", (Jsonb([
        {"customer": "c1", "event_time": "2026-01-01T00:00:00Z", "spend": 10.5},
        {"customer": "c2", "event_time": "2026-01-01T00:00:00Z", "spend": -1},
    ]),))


@seeds("ml.datasets", "ml.lineage")
def training_set(conn: Conn, tenant: str) -> None:
    """A training set over the group above (registered in ml.datasets, with lineage from the group)."""
    conn.execute("select ml.create_training_set('rls_training', "
                 "$$select 'c1' as customer, timestamptz '2026-01-02' as event_time$$, array['rls_customer:spend'])")


@seeds("ml.feature_stats")
def feature_stats(conn: Conn, tenant: str) -> None:
    """Statistics of the group above."""
    conn.execute("select ml.compute_feature_stats('rls_customer')")
