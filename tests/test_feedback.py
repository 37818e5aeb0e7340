"""Feedback: ml.record_feedback and ml.record_feedback_bulk record realized outcomes of logged
predictions, checked against the project's task; ml.prediction_outcomes joins them for monitoring.

On the real server. Predictions are logged rows of ml.predictions (written here as the owner, at
several days, so they sit in several chunks of the hypertable); people act through
pgmlops.db.tenant_context, as PostgREST would run their calls.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from pgmlops.db import tenant_context

from .compile_helpers import project, register
from .conftest import act_for, make_tenant
from .training_data import member, refused

Conn = psycopg.Connection[Any]
SIGNATURE = [{"name": "x0", "dtype": "float"}]


class Tenant:
    """A tenant with a project per task, a registered version each, and its users."""

    def __init__(self, conn: Conn) -> None:
        self.id = make_tenant(conn)
        act_for(conn, self.id)
        self.projects = {task: project(conn, name, task) for task, name in
                         (("classification", "churn"), ("regression", "spend"), ("anomaly_detection", "fraud"))}
        self.versions = {
            "classification": register(conn, self.projects["classification"], SIGNATURE, "classification",
                                       classes=["no", "yes"]),
            "regression": register(conn, self.projects["regression"], SIGNATURE, "regression"),
            "anomaly_detection": register(conn, self.projects["anomaly_detection"], SIGNATURE, "anomaly_detection"),
        }
        self.engineer = member(conn, self.id, "ml_engineer")
        self.viewer = member(conn, self.id, "viewer")
        act_for(conn, None)

    def predict(self, conn: Conn, task: str = "classification", *, days_ago: float = 0, prediction: Any = "yes",
                shadow_of: str | None = None, version: str | None = None, arm: str = "a",
                id: str | None = None) -> str:
        """A logged prediction (as ml.predict logs one; its id random unless given); returns its id."""
        at = datetime.now(UTC) - timedelta(days=days_ago)
        row = conn.execute(
            "insert into ml.predictions (id, tenant_id, project_id, arm, model_version_id, shadow_of, entity_key, features, "
            "prediction, created_at) values (coalesce(%s::uuid, gen_random_uuid()), %s, %s, %s, %s, %s, 'c1', "
            "'{\"x0\": 1.5}', %s, %s) returning id",
            (id, self.id, self.projects[task], arm, version or self.versions[task], shadow_of, Jsonb(prediction), at),
        ).fetchone()
        assert row is not None
        return str(row[0])


@pytest.fixture(scope="module")
def world(db_url: str) -> tuple[Tenant, Tenant]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        return Tenant(conn), Tenant(conn)


def record(conn: Conn, tenant: Tenant, prediction: str | None, label: Any, source: str | None = None,
           user: str | None = None) -> int:
    with tenant_context(conn, tenant.id, user=user or tenant.engineer):
        row = conn.execute("select ml.record_feedback(%s, %s, %s)",
                           (prediction, None if label is None else Jsonb(label), source)).fetchone()
    assert row is not None
    return int(row[0])


def bulk(conn: Conn, tenant: Tenant, feedback: Any, user: str | None = None) -> int:
    with tenant_context(conn, tenant.id, user=user or tenant.engineer):
        row = conn.execute("select ml.record_feedback_bulk(%s)", (Jsonb(feedback),)).fetchone()
    assert row is not None
    return int(row[0])


def labels(conn: Conn, tenant: Tenant) -> list[tuple[Any, ...]]:
    """(prediction_id, source, label) of the tenant's feedback, in a stable order."""
    return conn.execute("select prediction_id::text, source, label from ml.feedback where tenant_id = %s "
                        "order by prediction_id, source nulls first", (tenant.id,)).fetchall()


# -- one outcome ---------------------------------------------------------------------------------


def test_an_outcome_is_recorded_against_its_prediction(conn: Conn, world: tuple[Tenant, Tenant]) -> None:
    a, _ = world
    prediction = a.predict(conn, days_ago=3.5)
    feedback_id = record(conn, a, prediction, "no", "crm")
    row = conn.execute("select tenant_id::text, project_id::text, prediction_id::text, predicted_at, label, source, "
                       "recorded_by::text from ml.feedback where id = %s", (feedback_id,)).fetchone()
    predicted_at = conn.execute("select created_at from ml.predictions where id = %s", (prediction,)).fetchone()
    assert predicted_at is not None
    assert row == (a.id, a.projects["classification"], prediction, predicted_at[0], "no", "crm", a.engineer)


def test_recording_again_for_the_same_source_replaces_the_label(conn: Conn, world: tuple[Tenant, Tenant]) -> None:
    a, _ = world
    prediction = a.predict(conn)
    first = record(conn, a, prediction, "no", "crm")
    created = conn.execute("select updated_at from ml.feedback where id = %s", (first,)).fetchone()
    assert record(conn, a, prediction, "yes", "crm") == first
    row = conn.execute("select label, updated_at > %s from ml.feedback where id = %s",
                       (created[0] if created else None, first)).fetchone()
    assert row == ("yes", True)
    # Another source is another label; no source at all is one more, replaced like the others.
    assert record(conn, a, prediction, "no", "survey") != first
    unsourced = record(conn, a, prediction, "no")
    assert record(conn, a, prediction, "yes") == unsourced
    assert [r for r in labels(conn, a) if r[0] == prediction] == [
        (prediction, None, "yes"), (prediction, "crm", "yes"), (prediction, "survey", "no")]


def test_a_prediction_in_an_older_partition_is_found(conn: Conn, world: tuple[Tenant, Tenant]) -> None:
    a, _ = world
    old = a.predict(conn, days_ago=40)
    chunks = conn.execute("select count(*) from timescaledb_information.chunks where hypertable_name = 'predictions'")
    assert (chunks.fetchone() or [0])[0] >= 2
    record(conn, a, old, "yes", "late")
    assert (old, "late", "yes") in labels(conn, a)


def test_an_id_carrying_its_time_is_found_around_it_and_anywhere_else_too(conn: Conn,
                                                                       world: tuple[Tenant, Tenant]) -> None:
    a, _ = world
    at = datetime.now(UTC) - timedelta(days=20)
    made = conn.execute("select ml_private.prediction_id(%s)::text, ml_private.prediction_id_time(ml_private.prediction_id(%s))",
                        (at, at)).fetchone()
    assert made is not None and made[0][14] == "7" and abs(made[1] - at) < timedelta(milliseconds=1)
    assert conn.execute("select ml_private.prediction_id_time(gen_random_uuid())").fetchone() == (None,)
    # Logged at the time its id carries: found in that chunk; logged days before it (an id made
    # by another writer): found by the lookup through every chunk.
    timely = a.predict(conn, days_ago=20, id=made[0])
    early = a.predict(conn, days_ago=25, id=str(one_id(conn, at)))
    bulk(conn, a, [{"prediction_id": early, "label": "no", "source": "bulk"}])
    record(conn, a, timely, "yes", "v7")
    record(conn, a, early, "no", "v7")
    assert {(timely, "v7", "yes"), (early, "v7", "no"), (early, "bulk", "no")} <= set(labels(conn, a))


def one_id(conn: Conn, at: datetime) -> Any:
    row = conn.execute("select ml_private.prediction_id(%s)", (at,)).fetchone()
    assert row is not None
    return row[0]


def test_another_tenants_prediction_is_not_found_and_nothing_is_written(conn: Conn, world: tuple[Tenant, Tenant]) -> None:
    a, b = world
    theirs = b.predict(conn)
    before = labels(conn, a), labels(conn, b)
    with refused("P0002", rf"^prediction {theirs} does not exist$"):
        record(conn, a, theirs, "yes")
    with refused("P0002", "does not exist"):
        record(conn, a, str(uuid.uuid4()), "yes")
    # A user of A naming tenant B in the token is not a member there.
    with refused("42501", "is not a member of tenant"):
        record(conn, b, theirs, "yes", user=a.engineer)
    assert (labels(conn, a), labels(conn, b)) == before


@pytest.mark.parametrize(("task", "label", "message"), [
    ("classification", "maybe", r'^label: "maybe" is not a class of the model that made the prediction \(classes: "no", "yes"\)$'),
    ("classification", 1, r"^label: 1 is not a class of the model"),
    ("classification", {"class": "yes"}, r"^label: must be a class label \(a JSON string, number or boolean\) for a "
                                         r"classification project, got object$"),
    ("classification", ["yes"], r"got array$"),
    ("regression", "12.5", r"^label: must be a number for a regression project, got string$"),
    ("regression", True, r"got boolean$"),
    ("anomaly_detection", 0, r"^label: must be true or false, or -1 or 1 \(-1: an anomaly\) for an anomaly detection "
                             r"project, got 0$"),
    ("anomaly_detection", "anomaly", r"got string$"),
    ("classification", None, r"^label: must not be null: give the realized outcome$"),
])
def test_a_label_must_fit_the_projects_task(conn: Conn, world: tuple[Tenant, Tenant], task: str, label: Any,
                                            message: str) -> None:
    a, _ = world
    prediction = a.predict(conn, task)
    with refused("22023", message):
        record(conn, a, prediction, label)
    assert conn.execute("select count(*) from ml.feedback where prediction_id = %s", (prediction,)).fetchone() == (0,)


@pytest.mark.parametrize(("task", "label"), [
    ("classification", "yes"), ("regression", -3.25), ("regression", 7),
    ("anomaly_detection", True), ("anomaly_detection", False), ("anomaly_detection", -1), ("anomaly_detection", 1),
])
def test_labels_that_fit_the_task_are_recorded(conn: Conn, world: tuple[Tenant, Tenant], task: str, label: Any) -> None:
    a, _ = world
    prediction = a.predict(conn, task)
    record(conn, a, prediction, label)
    assert conn.execute("select label from ml.feedback where prediction_id = %s", (prediction,)).fetchone() == (label,)


def test_without_classes_in_the_signature_any_scalar_is_a_class_label(conn: Conn, world: tuple[Tenant, Tenant]) -> None:
    a, _ = world
    act_for(conn, a.id)
    unlisted = register(conn, a.projects["classification"], SIGNATURE, "classification")
    act_for(conn, None)
    prediction = a.predict(conn, version=unlisted, prediction=3)
    record(conn, a, prediction, 4)
    with refused("22023", "must be a class label"):
        record(conn, a, prediction, {"k": 4})


def test_prediction_id_and_source_rules(conn: Conn, world: tuple[Tenant, Tenant]) -> None:
    a, _ = world
    prediction = a.predict(conn)
    with refused("22023", r"^prediction_id: must not be NULL"):
        record(conn, a, None, "yes")
    with refused("22023", r"^source: must not be blank"):
        record(conn, a, prediction, "yes", " ")
    with refused("22023", r"^source: must be at most 100 characters$"):
        record(conn, a, prediction, "yes", "s" * 101)
    with refused("22023", r"^source: must not contain control characters$"):
        record(conn, a, prediction, "yes", "crm\n")


def test_a_shadow_arms_prediction_takes_no_feedback(conn: Conn, world: tuple[Tenant, Tenant]) -> None:
    a, _ = world
    live = a.predict(conn)
    shadow = a.predict(conn, shadow_of=live, arm="challenger")
    with refused("22023", rf"^prediction_id: {shadow} is a shadow arm's prediction: record feedback for the live "
                          rf"prediction {live}$"):
        record(conn, a, shadow, "yes")


def test_viewers_and_anonymous_callers_cannot_record_and_service_callers_can(conn: Conn,
                                                                             world: tuple[Tenant, Tenant]) -> None:
    a, _ = world
    prediction = a.predict(conn)
    with refused("42501", "viewer .* may read but not write"):
        record(conn, a, prediction, "yes", user=a.viewer)
    with refused("42501", "permission denied for function record_feedback"), tenant_context(conn, role="anon"):
        conn.execute("select ml.record_feedback(%s, '\"yes\"')", (prediction,))
    with tenant_context(conn, a.id):  # the service role acting for tenant A (a backend)
        conn.execute("select ml.record_feedback(%s, '\"yes\"', 'backend')", (prediction,))
    row = conn.execute("select label, recorded_by from ml.feedback where prediction_id = %s", (prediction,)).fetchone()
    assert row == ("yes", None)


def test_the_table_refuses_a_null_label_or_blank_source_written_directly(conn: Conn, world: tuple[Tenant, Tenant]) -> None:
    a, _ = world
    prediction = a.predict(conn)
    insert = ("insert into ml.feedback (tenant_id, project_id, prediction_id, predicted_at, label, source) "
              "values (%s, %s, %s, now(), %s, %s)")
    for label, source, constraint in (("null", None, "feedback_label_present"), ('"yes"', " ", "feedback_source_valid")):
        with refused("23514", constraint), tenant_context(conn, a.id):  # the service role may write the table
            conn.execute(insert, (a.id, a.projects["classification"], prediction, label, source))


# -- many outcomes -------------------------------------------------------------------------------


def test_bulk_records_every_element_and_replaces_earlier_labels(conn: Conn, world: tuple[Tenant, Tenant]) -> None:
    a, _ = world
    p1, p2, p3 = a.predict(conn, days_ago=1), a.predict(conn, days_ago=10), a.predict(conn, "regression")
    record(conn, a, p1, "no", "crm")
    assert bulk(conn, a, [{"prediction_id": p1, "label": "yes", "source": "crm"},
                          {"prediction_id": p2, "label": "no"},
                          {"prediction_id": p2, "label": "yes", "source": "survey"},
                          {"prediction_id": p3.upper(), "label": 41.5, "source": None}]) == 4
    got = {(r[0], r[1]): r[2] for r in labels(conn, a) if r[0] in (p1, p2, p3)}
    assert got == {(p1, "crm"): "yes", (p2, None): "no", (p2, "survey"): "yes", (p3, None): 41.5}
    assert bulk(conn, a, []) == 0


@pytest.mark.parametrize(("element", "code", "message"), [
    ({"prediction_id": "P", "label": "maybe"}, "22023",
     r'^feedback\[2\]\.label: "maybe" is not a class of the model that made the prediction'),
    ({"prediction_id": "P", "label": None}, "22023", r"^feedback\[2\]\.label: must not be null"),
    ({"prediction_id": "P"}, "22023", r"^feedback\[2\]\.label: must not be null"),
    ({"prediction_id": "P", "label": "yes", "source": ""}, "22023", r"^feedback\[2\]\.source: must not be blank"),
    ({"prediction_id": "P", "label": "yes", "source": 7}, "22023", r"^feedback\[2\]\.source: must be a string or null, got number$"),
    ({"prediction_id": "not-a-uuid", "label": "yes"}, "22023",
     r'^feedback\[2\]\.prediction_id: must be a uuid \(the prediction_id ml\.predict returned\), got "not-a-uuid"$'),
    ({"label": "yes"}, "22023", r"^feedback\[2\]\.prediction_id: must be a uuid .*, got nothing$"),
    ({"prediction_id": "P", "label": "yes", "lable": "no"}, "22023",
     r'^feedback\[2\]: unknown field lable \(known: prediction_id, label, source\)$'),
    ("P", "22023", r'^feedback\[2\]: must be an object \{"prediction_id", "label", "source"\}, got string$'),
    ({"prediction_id": "MISSING", "label": "yes"}, "P0002",
     r"^feedback\[2\]\.prediction_id: prediction [0-9a-f-]{36} does not exist$"),
    ({"prediction_id": "THEIRS", "label": "yes"}, "P0002", r"^feedback\[2\]\.prediction_id: prediction [0-9a-f-]{36} does not exist$"),
    ({"prediction_id": "FIRST", "label": "no"}, "22023",
     r"^feedback\[2\]: repeats feedback\[0\] \(the same prediction_id and source\)"),
])
def test_bulk_is_all_or_nothing_and_names_the_failing_element(conn: Conn, world: tuple[Tenant, Tenant], element: Any,
                                                             code: str, message: str) -> None:
    a, b = world
    first, second, bad = a.predict(conn), a.predict(conn, days_ago=2), a.predict(conn, days_ago=5)
    replace = {"P": bad, "MISSING": str(uuid.uuid4()), "THEIRS": b.predict(conn), "FIRST": first}
    if isinstance(element, dict):
        element = {k: replace.get(v, v) if isinstance(v, str) else v for k, v in element.items()}
    record(conn, a, first, "no")
    before = labels(conn, a)
    batch = [{"prediction_id": first, "label": "yes"}, {"prediction_id": second, "label": "yes"}, element,
             {"prediction_id": bad, "label": {"not": "valid either"}}]
    with refused(code, message):
        bulk(conn, a, batch)
    assert labels(conn, a) == before


def test_bulk_takes_an_array_of_at_most_ten_thousand(conn: Conn, world: tuple[Tenant, Tenant]) -> None:
    a, _ = world
    with refused("22023", r"^feedback: must be a JSON array of .*, got object$"):
        bulk(conn, a, {"prediction_id": a.predict(conn), "label": "yes"})
    with refused("54000", r"^feedback: 10001 elements, at most 10000 per call$"):
        bulk(conn, a, [{"prediction_id": str(uuid.uuid4()), "label": "yes"}] * 10001)


def test_bulk_needs_a_writing_member(conn: Conn, world: tuple[Tenant, Tenant]) -> None:
    a, _ = world
    with refused("42501", "may read but not write"):
        bulk(conn, a, [{"prediction_id": a.predict(conn), "label": "yes"}], user=a.viewer)


# -- predictions joined to their outcomes --------------------------------------------------------


def test_prediction_outcomes_joins_labels_to_live_and_shadow_predictions(conn: Conn,
                                                                       world: tuple[Tenant, Tenant]) -> None:
    a, b = world
    live = a.predict(conn, prediction="yes", days_ago=0.5)
    shadow = a.predict(conn, prediction="no", shadow_of=live, arm="challenger", days_ago=0.5)
    unlabelled = a.predict(conn, prediction="no")
    record(conn, a, live, "no", "crm")
    record(conn, a, live, "no", "survey")
    query = ("select prediction_id::text, arm, shadow, model, version, project, task, prediction, label, label_source, "
             "labelled_by::text, label_delay > interval '11 hours' from ml.prediction_outcomes "
             "where prediction_id = any(%s::uuid[]) order by shadow, prediction_id, label_source nulls first")
    expected = [
        *sorted([(live, "a", False, "churn", 1, "churn", "classification", "yes", "no", "crm", a.engineer, True),
                 (live, "a", False, "churn", 1, "churn", "classification", "yes", "no", "survey", a.engineer, True),
                 (unlabelled, "a", False, "churn", 1, "churn", "classification", "no", None, None, None, None)],
                key=lambda r: (r[0], r[9] or "")),
        (shadow, "challenger", True, "churn", 1, "churn", "classification", "no", "no", "crm", a.engineer, True),
        (shadow, "challenger", True, "churn", 1, "churn", "classification", "no", "no", "survey", a.engineer, True),
    ]
    ids = [live, shadow, unlabelled]
    with tenant_context(conn, a.id, user=a.viewer):  # a viewer reads it, RLS applied
        assert conn.execute(query, (ids,)).fetchall() == expected
    with tenant_context(conn, b.id, user=b.engineer):  # another tenant sees none of it
        assert conn.execute(query, (ids,)).fetchall() == []
        assert conn.execute("select count(*) from ml.prediction_outcomes where tenant_id = %s", (a.id,)).fetchone() == (0,)


# -- end to end ----------------------------------------------------------------------------------

# A logistic regression on x0, as pgmlops.scoring.describe writes scikit-learn's fitted model.
LOGISTIC = {
    "format": 1, "task": "classification", "estimator_name": "LogisticRegression",
    "inputs": {"numeric": 1, "categorical": 0}, "features": [{"num": 1, "ops": []}],
    "estimator": {"kind": "linear", "coef": [[0.7]], "intercept": [-4.0]},
    "output": {"kind": "classification", "labels": [0, 1], "probability": "sigmoid", "label": "gt0", "decision": True},
}


def test_a_prediction_served_by_ml_predict_takes_its_outcome(conn: Conn) -> None:
    tenant = make_tenant(conn)
    owner = member(conn, tenant, "owner")
    act_for(conn, tenant)
    version = register(conn, project(conn, "served", "classification"), SIGNATURE, "classification", classes=[0, 1])
    conn.execute("select ml.install_compiled_model(%s, %s)", (version, Jsonb(LOGISTIC)))
    act_for(conn, None)
    with tenant_context(conn, tenant, user=owner):
        conn.execute("select ml.approve('served', 1, 'approved')")
        conn.execute("select ml.deploy('served', 'single', %s)", (Jsonb([{"arm": "main", "model": "served", "version": 1}]),))
        served = conn.execute("select ml.predict('served', '{\"x0\": 10}', 'c7')").fetchone()
        assert served is not None and served[0]["prediction"] == 1
    with refused("22023", r"^label: \"churned\" is not a class of the model that made the prediction \(classes: 0, 1\)$"), \
            tenant_context(conn, tenant, user=owner):
        conn.execute("select ml.record_feedback(%s, '\"churned\"')", (served[0]["prediction_id"],))
    with tenant_context(conn, tenant, user=owner):
        conn.execute("select ml.record_feedback(%s, '0', 'crm')", (served[0]["prediction_id"],))
        outcome = conn.execute("select prediction, label, model, version, arm, deployment_id::text, entity_key "
                               "from ml.prediction_outcomes where prediction_id = %s", (served[0]["prediction_id"],)).fetchall()
    assert outcome == [(1, 0, "served", 1, "main", served[0]["deployment_id"], "c7")]


def test_feedback_on_both_servers_whatever_partitions_the_log(any_db_url: str) -> None:
    """A hypertable on the full server, native range partitions (and a default one) on the
    embedded PostgreSQL 18: lookups by random and time-carrying ids find predictions in either."""
    with psycopg.connect(any_db_url, autocommit=True) as conn:
        a = Tenant(conn)
        at = datetime.now(UTC) - timedelta(days=3)
        timely = a.predict(conn, days_ago=3, id=str(one_id(conn, at)))
        old = a.predict(conn, days_ago=400)  # before every partition made ahead: the default one, or an old chunk
        recent = a.predict(conn)
        record(conn, a, timely, "yes")
        assert bulk(conn, a, [{"prediction_id": old, "label": "no"}, {"prediction_id": recent, "label": "yes"}]) == 2
        with refused("P0002"):
            record(conn, a, str(one_id(conn, at)), "yes")
        assert sorted(r[0] for r in labels(conn, a)) == sorted([timely, old, recent])
