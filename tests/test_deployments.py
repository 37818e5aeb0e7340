"""Deployments: ml.deploy's strategies and rules, sticky routing (ml_private.deployment_route),
canary steps and abort, shadow arms, rollback, gates, history, audit and events, tenants.

On the real server. Versions are registered cheaply (a finished run and placeholder artifact
bytes), approved by a reviewer through pgmlops.db.tenant_context, and marked compiled directly
where a test needs a shadow arm (the compiler has its own tests). Logged predictions and their
feedback are written as the owner, as ml.predict and ml.record_feedback would write them.
"""

from __future__ import annotations

import json
import math
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from pgmlops.db import tenant_context

from .compile_helpers import Conn, one, project, register
from .conftest import act_for
from .training_data import member, refused

SIGNATURE = [{"name": "x0", "dtype": "float"}]
CANARY = [{"weight": 0.1, "after": "0 minutes"}, {"weight": 0.5, "after": "30 minutes"},
          {"weight": 0.9, "after": "60 minutes"}]


class Project:
    """Project `churn` (classification) of the test's tenant, with a reviewer who approves versions."""

    def __init__(self, conn: Conn, tenant: str, name: str = "churn", task: str = "classification") -> None:
        self.conn, self.tenant, self.name, self.task = conn, tenant, name, task
        self.id = project(conn, name, task)
        self.reviewer = member(conn, tenant, "ml_engineer")

    def version(self, *, approved: bool = True, compiled: bool = True, model: str | None = None) -> str:
        """A new version of the project's model (`model`, default the project's name); returns 'model@n'."""
        version_id = register(self.conn, self.id, SIGNATURE, self.task, model=model or self.name,
                              classes=[0, 1] if self.task == "classification" else None)
        if compiled:
            # The compiler has its own tests: here a version only needs to count as compiled.
            self.conn.execute("update ml.model_versions set scoring_path = 'compiled' where id = %s", (version_id,))
        ref = f"{model or self.name}@{one(self.conn, 'select version from ml.model_versions where id = %s', version_id)}"
        if approved:
            self.decide(ref, "approved")
        return ref

    def decide(self, ref: str, decision: str) -> None:
        name, number = ref.split("@")
        with tenant_context(self.conn, self.tenant, user=self.reviewer):
            self.conn.execute("select ml.approve(%s, %s, %s)", (name, int(number), decision))
        act_for(self.conn, self.tenant)

    def deploy(self, strategy: str, arms: list[dict[str, Any]], options: dict[str, Any] | None = None) -> str:
        return str(one(self.conn, "select ml.deploy(%s, %s, %s, %s)", self.name, strategy, Jsonb(arms), Jsonb(options or {})))

    def route(self, key: str | None) -> list[tuple[str, bool]]:
        return [(r[0], r[1]) for r in self.conn.execute(
            "select arm, shadow from ml_private.deployment_route(%s, %s, %s)", (self.tenant, self.id, key))]

    def shares(self, keys: int, prefix: str = "k", *, keyed: bool = True) -> dict[str, int]:
        """How many of `keys` calls each live arm takes: distinct keys, or no key at all."""
        self.conn.execute("set enable_memoize = off")  # every call of the lateral function is a call
        # No key: NULL, but from an expression of i, so the call is not folded into one.
        key = "%s || i" if keyed else "nullif(%s || i, %s || i)"
        rows = self.conn.execute(
            "select r.arm, count(*) from generate_series(1, %s) i, lateral ml_private.deployment_route(%s, %s, "
            + key + ") r where not r.shadow group by r.arm",
            (keys, self.tenant, self.id, *([prefix] if keyed else [prefix, prefix]))).fetchall()
        return {arm: n for arm, n in rows}

    def canary_keys(self, keys: int, arm: str = "b") -> set[int]:
        return {i for (i,) in self.conn.execute(
            "select i from generate_series(1, %s) i, lateral ml_private.deployment_route(%s, %s, 'k' || i) r "
            "where not r.shadow and r.arm = %s", (keys, self.tenant, self.id, arm))}

    def active(self) -> dict[str, Any] | None:
        value: dict[str, Any] | None = one(self.conn, "select ml.deployment(%s)", self.name)
        return value

    def weights(self) -> dict[str, float]:
        deployment = self.active()
        assert deployment is not None
        return {a["arm"]: a["current_weight"] for a in deployment["arms"]}

    def statuses(self) -> list[tuple[str, str]]:
        """(id, status) of every deployment, newest first, as ml.deployment_history shows them."""
        return [(d["id"], d["status"]) for d in one(self.conn, "select ml.deployment_history(%s)", self.name)]

    def age(self, deployment: str, minutes: float) -> None:
        """Make `deployment` `minutes` old (a canary's schedule runs from its creation)."""
        self.conn.execute("update ml.deployments set created_at = now() - make_interval(mins => %s) where id = %s",
                          (minutes, deployment))

    def written(self) -> tuple[int, ...]:
        """Rows the tenant has in the tables a deploy writes: deployments, arms, audit log, events."""
        row = self.conn.execute(
            "select (select count(*) from ml.deployments where tenant_id = %(t)s), "
            "(select count(*) from ml.deployment_arms where tenant_id = %(t)s), "
            "(select count(*) from ml.audit_log where tenant_id = %(t)s), "
            "(select count(*) from ml.events where tenant_id = %(t)s)", {"t": self.tenant}).fetchone()
        assert row is not None
        return tuple(row)


@pytest.fixture
def churn(conn: Conn, tenant: str) -> Project:
    return Project(conn, tenant)


def within(count: int, total: int, share: float, sigmas: float = 4) -> bool:
    """Whether `count` of `total` draws is within `sigmas` standard deviations of a binomial share
    (4: a false alarm once in 16,000 checks; 5 where a test makes several checks)."""
    return abs(count - total * share) <= sigmas * math.sqrt(total * share * (1 - share))


def log_predictions(conn: Conn, p: Project, deployment: str, arm: str, count: int, *, prediction: Any, label: Any,
                    minutes_ago: float = 1) -> None:
    """`count` logged predictions of `arm`, each with feedback `label`, `minutes_ago` minutes old."""
    version = one(conn, "select model_version_id from ml.deployment_arms where deployment_id = %s and arm = %s", deployment, arm)
    conn.execute(
        "with p as (insert into ml.predictions (tenant_id, project_id, deployment_id, arm, model_version_id, prediction, created_at) "
        "           select %(t)s, %(p)s, %(d)s, %(arm)s, %(v)s, %(pred)s, now() - make_interval(mins => %(ago)s) "
        "           from generate_series(1, %(n)s) returning id, created_at) "
        "insert into ml.feedback (tenant_id, project_id, prediction_id, predicted_at, label) "
        "select %(t)s, %(p)s, p.id, p.created_at, %(label)s from p",
        {"t": p.tenant, "p": p.id, "d": deployment, "arm": arm, "v": version, "pred": Jsonb(prediction),
         "ago": minutes_ago, "n": count, "label": Jsonb(label)})


def events(conn: Conn, tenant: str, prefix: str = "deployment.") -> list[tuple[str, dict[str, Any]]]:
    return [(e, payload) for e, payload in conn.execute(
        "select event, payload from ml.events where tenant_id = %s and topic = 'models' and event like %s order by id",
        (tenant, prefix + "%"))]


# -- strategies and routing --------------------------------------------------------------------


def test_ab_shares_keys_by_weight_within_four_sigma(churn: Project) -> None:
    a, b = churn.version(), churn.version()
    churn.deploy("ab", [{"arm": "a", "model": a, "weight": 0.7}, {"arm": "b", "model": b, "weight": 0.3}])
    shares = churn.shares(20_000)
    assert set(shares) == {"a", "b"} and sum(shares.values()) == 20_000
    assert within(shares["b"], 20_000, 0.3), shares


def test_without_a_key_arms_are_drawn_at_random_by_weight(churn: Project) -> None:
    a, b = churn.version(), churn.version()
    churn.deploy("ab", [{"arm": "a", "model": a, "weight": 0.7}, {"arm": "b", "model": b, "weight": 0.3}])
    shares = churn.shares(20_000, keyed=False)
    assert within(shares["b"], 20_000, 0.3), shares
    # Random, not a fixed point: one key would give one arm every time.
    assert within(churn.shares(2_000, keyed=False)["a"], 2_000, 0.7, sigmas=5)


def test_an_entity_key_always_gets_the_same_arm(churn: Project) -> None:
    a, b = churn.version(), churn.version()
    churn.deploy("ab", [{"arm": "a", "model": a, "weight": 0.5}, {"arm": "b", "model": b, "weight": 0.5}])
    for key in ("customer-1", "customer-2", "customer-3", "customer-4"):
        assert len({churn.route(key)[0] for _ in range(25)}) == 1
    # ... and a new deployment of the same weights keeps every key where it was.
    before = churn.canary_keys(2_000)
    churn.deploy("ab", [{"arm": "a", "model": a, "weight": 0.5}, {"arm": "b", "model": b, "weight": 0.5}])
    assert churn.canary_keys(2_000) == before


def test_single_sends_everything_to_its_arm_and_the_route_names_the_version(conn: Conn, churn: Project) -> None:
    a = churn.version()
    deployment = churn.deploy("single", [{"arm": "main", "model": a}])
    assert churn.shares(500) == {"main": 500}
    row = conn.execute("select * from ml_private.deployment_route(%s, %s, 'c1')", (churn.tenant, churn.id)).fetchone()
    assert row is not None and str(row[0]) == deployment and row[3] is False
    assert str(row[2]) == one(conn, "select v.id::text from ml.model_versions v join ml.models m on m.id = v.model_id "
                                     "where m.name = 'churn' and v.version = 1 and v.tenant_id = %s", churn.tenant)


def test_shadow_arms_follow_the_live_arm_in_position_order(churn: Project) -> None:
    live, s1, s2 = churn.version(), churn.version(approved=False), churn.version(approved=False)
    churn.deploy("shadow", [{"arm": "champion", "model": live}, {"arm": "try-2", "model": s2, "role": "shadow"},
                            {"arm": "try-1", "model": s1, "role": "shadow", "weight": 0}])
    assert churn.route("c1") == [("champion", False), ("try-2", True), ("try-1", True)]
    assert churn.route(None) == [("champion", False), ("try-2", True), ("try-1", True)]
    assert churn.shares(300) == {"champion": 300}
    assert {a["arm"]: (a["role"], a["current_weight"]) for a in churn.active()["arms"]} == {  # type: ignore[index]
        "champion": ("live", 1.0), "try-2": ("shadow", 0.0), "try-1": ("shadow", 0.0)}


def test_a_shadow_arm_must_be_compiled_but_a_live_arm_may_be_scored_by_workers(churn: Project) -> None:
    live, worker = churn.version(compiled=False), churn.version(compiled=False)
    before = churn.written()
    with refused("0A000", r"shadow arm s \(churn@2\) is scored by workers"):
        churn.deploy("shadow", [{"arm": "a", "model": live}, {"arm": "s", "model": worker, "role": "shadow"}])
    assert churn.written() == before
    churn.deploy("single", [{"arm": "a", "model": live}])
    assert churn.active()["arms"][0]["scoring_path"] == "worker"  # type: ignore[index]


def test_blue_green_switches_every_key_at_once_and_rollback_switches_back(churn: Project) -> None:
    blue, green = churn.version(), churn.version()
    first = churn.deploy("single", [{"arm": "blue", "model": blue}])
    second = churn.deploy("blue_green", [{"arm": "green", "model": green, "weight": 1}])
    assert churn.shares(1_000) == {"green": 1_000}
    assert str(one(churn.conn, "select ml.rollback('churn')")) == first
    assert churn.shares(1_000) == {"blue": 1_000}
    assert churn.statuses() == [(second, "rolled_back"), (first, "active")]


def test_primary_is_the_live_arm_with_the_largest_current_weight(conn: Conn, churn: Project) -> None:
    a, b = churn.version(), churn.version()

    def primary() -> str:
        return str(one(conn, "select arm from ml_private.deployment_primary(%s, %s)", churn.tenant, churn.id))

    churn.deploy("ab", [{"arm": "a", "model": a, "weight": 0.3}, {"arm": "b", "model": b, "weight": 0.7}])
    assert primary() == "b"
    churn.deploy("ab", [{"arm": "a", "model": a, "weight": 0.5}, {"arm": "b", "model": b, "weight": 0.5}])
    assert primary() == "a"  # a tie goes to the first position
    canary = churn.deploy("canary", [{"arm": "base", "model": a}, {"arm": "new", "model": b}], {"schedule": CANARY})
    assert primary() == "base"
    churn.age(canary, 61)
    assert primary() == "new"


def test_no_active_deployment_routes_nowhere(conn: Conn, churn: Project) -> None:
    with refused("P0002", "project 'churn' has no active deployment"):
        churn.route("c1")
    with refused("P0002", "no active deployment"):
        conn.execute("select * from ml_private.deployment_primary(%s, %s)", (churn.tenant, churn.id))
    assert churn.active() is None
    assert one(conn, "select ml.deployment_history('churn')") == []


def test_the_route_functions_are_granted_to_nobody(conn: Conn, churn: Project) -> None:
    a = churn.version()
    churn.deploy("single", [{"arm": "a", "model": a}])
    for user, role in ((churn.reviewer, "authenticated"), (None, "service_role")):
        for call in ("select * from ml_private.deployment_route(%s, %s, 'c1')",
                     "select * from ml_private.deployment_primary(%s, %s)"):
            with refused("42501"), tenant_context(conn, churn.tenant, user=user, role=role):
                conn.execute(call, (churn.tenant, churn.id))


# -- canary -------------------------------------------------------------------------------------


def test_a_canary_weight_follows_its_schedule(churn: Project) -> None:
    a, b = churn.version(), churn.version()
    churn.deploy("single", [{"arm": "base", "model": a}])
    canary = churn.deploy("canary", [{"arm": "base", "model": a}, {"arm": "new", "model": b}],
                          {"schedule": CANARY, "canary_arm": "new"})
    deployment: dict[str, Any] | None = None
    for minutes, weight, step in ((0, 0.1, 1), (29, 0.1, 1), (31, 0.5, 2), (61, 0.9, 3), (600, 0.9, 3)):
        churn.age(canary, minutes)
        deployment = churn.active()
        assert deployment is not None and deployment["current_step"] == step
        assert churn.weights() == pytest.approx({"base": 1 - weight, "new": weight})
        shares = churn.shares(4_000)
        assert within(shares.get("new", 0), 4_000, weight, sigmas=5), (minutes, shares)
    assert deployment is not None
    assert deployment["schedule"] == [{"weight": 0.1, "after": "00:00:00"}, {"weight": 0.5, "after": "00:30:00"},
                                      {"weight": 0.9, "after": "01:00:00"}]
    assert {a["arm"]: a["weight"] for a in deployment["arms"]} == pytest.approx({"base": 0.1, "new": 0.9})


def test_a_rising_canary_weight_only_moves_keys_from_the_baseline_to_the_canary(churn: Project) -> None:
    a, b = churn.version(), churn.version()
    churn.deploy("single", [{"arm": "base", "model": a}])
    # The canary is listed first: it still takes the top of the range, so keys never move back.
    canary = churn.deploy("canary", [{"arm": "new", "model": b}, {"arm": "base", "model": a}],
                          {"schedule": CANARY, "canary_arm": "new"})
    on_canary = []
    for minutes in (0, 31, 61):
        churn.age(canary, minutes)
        on_canary.append(churn.canary_keys(4_000, "new"))
    assert on_canary[0] < on_canary[1] < on_canary[2]
    assert within(len(on_canary[0]), 4_000, 0.1, sigmas=5) and within(len(on_canary[2]), 4_000, 0.9, sigmas=5)


def test_the_second_live_arm_is_the_canary_by_default(churn: Project) -> None:
    a, b = churn.version(), churn.version()
    churn.deploy("single", [{"arm": "a", "model": a}])
    churn.deploy("canary", [{"arm": "a", "model": a}, {"arm": "b", "model": b}], {"schedule": CANARY[:1]})
    assert churn.active()["canary_arm"] == "b"  # type: ignore[index]
    assert churn.weights() == pytest.approx({"a": 0.9, "b": 0.1})


def test_a_canary_needs_a_deployment_to_fall_back_to(churn: Project) -> None:
    a, b = churn.version(), churn.version()
    with refused("55000", "a canary needs one to fall back to"):
        churn.deploy("canary", [{"arm": "a", "model": a}, {"arm": "b", "model": b}], {"schedule": CANARY})
    assert churn.written()[0] == 0


@pytest.mark.parametrize(("rule", "through"), [
    ({"metric": "error_rate", "max": 0.2}, "check_deployments"),
    ({"metric": "accuracy", "min": 0.8}, "maintenance"),
])
def test_a_canary_whose_abort_rule_trips_is_aborted_and_the_previous_deployment_serves_again(
        conn: Conn, churn: Project, rule: dict[str, Any], through: str) -> None:
    a, b = churn.version(), churn.version()
    baseline = churn.deploy("single", [{"arm": "base", "model": a}])
    canary = churn.deploy("canary", [{"arm": "base", "model": a}, {"arm": "new", "model": b}],
                          {"schedule": CANARY, "abort": {**rule, "window": "1 hour", "min_samples": 30}})
    churn.age(canary, 180)

    def check() -> dict[str, Any]:
        if through == "maintenance":
            report = one(conn, "select ml.run_maintenance()")["deployments"]
            assert report["errors"] == []
            result = {"aborted": canary in report["aborted"]}
        else:
            result = one(conn, "select ml.check_deployments('churn')")
        return dict(result)

    # Outside the window, on the baseline arm, or below min_samples: no abort.
    log_predictions(conn, churn, canary, "new", 50, prediction=1, label=0, minutes_ago=90)
    log_predictions(conn, churn, canary, "base", 50, prediction=1, label=0)
    log_predictions(conn, churn, canary, "new", 20, prediction=1, label=1)
    log_predictions(conn, churn, canary, "new", 9, prediction=1, label="0")
    result = check()
    assert result["aborted"] is False
    if through == "check_deployments":
        assert result["measured"]["samples"] == 29 and result["tripped"] is False
    assert dict(churn.statuses())[canary] == "active"

    log_predictions(conn, churn, canary, "new", 1, prediction=1, label=0)
    result = check()
    assert result["aborted"] is True
    # (Aged three hours, the canary sorts after the baseline in the history.)
    assert churn.statuses() == [(baseline, "active"), (canary, "aborted")]
    assert churn.shares(500) == {"base": 500}
    history = one(conn, "select ml.deployment_history('churn')")
    assert history[1]["end_reason"].startswith(f"abort rule: {rule['metric']} ")
    aborted = [payload for event, payload in events(conn, churn.tenant) if event == "deployment.aborted"]
    assert len(aborted) == 1 and aborted[0]["object_id"] == canary
    measured = aborted[0]["before"]["measured"]
    expected = 10 / 30 if rule["metric"] == "error_rate" else 20 / 30
    assert measured["samples"] == 30 and measured["value"] == pytest.approx(expected)
    assert one(conn, "select count(*) from ml.audit_log where tenant_id = %s and action = 'deployment.aborted' "
                     "and object_kind = 'deployment' and object_id = %s", churn.tenant, canary) == 1
    # Checked again: nothing left to check.
    assert one(conn, "select ml.check_deployments('churn')") is None


def test_a_regression_canary_aborts_on_its_mean_absolute_error(conn: Conn, tenant: str) -> None:
    spend = Project(conn, tenant, "spend", "regression")
    a, b = spend.version(), spend.version()
    spend.deploy("single", [{"arm": "a", "model": a}])
    canary = spend.deploy("canary", [{"arm": "a", "model": a}, {"arm": "b", "model": b}],
                          {"schedule": CANARY, "abort": {"metric": "mae", "max": 2.5, "min_samples": 10}})
    spend.age(canary, 10)  # predictions made before the canary existed would not count
    log_predictions(conn, spend, canary, "b", 10, prediction=10.0, label=12.0)
    assert one(conn, "select ml.check_deployments('spend')")["measured"]["value"] == pytest.approx(2.0)
    log_predictions(conn, spend, canary, "b", 10, prediction=10.0, label=14.0)
    result = one(conn, "select ml.check_deployments('spend')")
    assert result["aborted"] is True and result["measured"]["value"] == pytest.approx(3.0)


def test_a_canary_announces_each_step_once(conn: Conn, churn: Project) -> None:
    a, b = churn.version(), churn.version()
    churn.deploy("single", [{"arm": "a", "model": a}])
    canary = churn.deploy("canary", [{"arm": "a", "model": a}, {"arm": "b", "model": b}], {"schedule": CANARY})
    conn.execute("select ml.check_deployments('churn')")
    churn.age(canary, 31)
    conn.execute("select ml.check_deployments('churn')")
    conn.execute("select ml.check_deployments('churn')")
    churn.age(canary, 61)
    conn.execute("select ml.check_deployments('churn')")
    steps = [(p["step"], p["weight"]) for e, p in events(conn, churn.tenant) if e == "deployment.step"]
    assert steps == [(2, 0.5), (3, 0.9)]


def test_only_service_callers_check_deployments(conn: Conn, churn: Project) -> None:
    with refused("42501"), tenant_context(conn, churn.tenant, user=churn.reviewer):
        conn.execute("select ml.check_deployments('churn')")


# -- rollback and history -----------------------------------------------------------------------


def test_rollback_walks_back_one_deployment_at_a_time(conn: Conn, churn: Project) -> None:
    v1, v2, v3 = churn.version(), churn.version(), churn.version()
    first = churn.deploy("single", [{"arm": "a", "model": v1}])
    second = churn.deploy("single", [{"arm": "a", "model": v2}])
    third = churn.deploy("single", [{"arm": "a", "model": v3}], {"reason": "v3 is better"})
    assert churn.statuses() == [(third, "active"), (second, "superseded"), (first, "superseded")]
    assert str(one(conn, "select ml.rollback('churn')")) == second
    assert str(one(conn, "select ml.rollback('churn')")) == first
    assert churn.statuses() == [(third, "rolled_back"), (second, "rolled_back"), (first, "active")]
    before = churn.written()
    with refused("55000", "has no previous deployment to roll back to"):
        conn.execute("select ml.rollback('churn')")
    assert churn.written() == before
    history = one(conn, "select ml.deployment_history('churn')")
    assert history[0]["reason"] == "v3 is better" and history[0]["end_reason"] == "rolled back"
    assert history[2]["ended_at"] is None and history[2]["activated_at"] > history[2]["created_at"]


def test_rollback_needs_an_active_deployment(conn: Conn, churn: Project) -> None:
    with refused("55000", "project churn has no active deployment to roll back"):
        conn.execute("select ml.rollback('churn')")


def test_a_new_deployment_after_a_rollback_goes_back_to_the_reactivated_one(conn: Conn, churn: Project) -> None:
    v1, v2 = churn.version(), churn.version()
    first = churn.deploy("single", [{"arm": "a", "model": v1}])
    churn.deploy("single", [{"arm": "a", "model": v2}])
    conn.execute("select ml.rollback('churn')")
    third = churn.deploy("single", [{"arm": "b", "model": v2}])
    assert churn.active()["previous_id"] == first  # type: ignore[index]
    assert str(one(conn, "select ml.rollback('churn')")) == first
    assert churn.statuses()[0] == (third, "rolled_back")


def test_rollback_does_not_check_the_gates_again(conn: Conn, churn: Project) -> None:
    v1, v2 = churn.version(), churn.version()
    first = churn.deploy("single", [{"arm": "a", "model": v1}])
    churn.deploy("single", [{"arm": "a", "model": v2}])
    churn.decide(v1, "rejected")  # the reviewer changes their mind about v1
    assert str(one(conn, "select ml.rollback('churn')")) == first


def test_an_alias_is_resolved_when_deploying(conn: Conn, churn: Project) -> None:
    v1, v2 = churn.version(), churn.version()
    conn.execute("select ml.set_alias('churn', 'champion', 1)")
    churn.deploy("ab", [{"arm": "a", "model": "churn", "alias": "champion", "weight": 0.5},
                        {"arm": "b", "model": v2, "weight": 0.5}])
    conn.execute("select ml.set_alias('churn', 'champion', 2)")
    arms = churn.active()["arms"]  # type: ignore[index]
    assert [(a["arm"], a["version"], a["alias"]) for a in arms] == [("a", 1, "champion"), ("b", 2, None)]
    assert v1 == "churn@1"


# -- gates ---------------------------------------------------------------------------------------


def test_an_unapproved_live_arm_is_refused_and_nothing_is_written(churn: Project) -> None:
    ok, unapproved = churn.version(), churn.version(approved=False)
    before = churn.written()
    with refused("23514", r"arm b \(churn@2\): not approved") as info:
        churn.deploy("ab", [{"arm": "a", "model": ok, "weight": 0.5}, {"arm": "b", "model": unapproved, "weight": 0.5}])
    assert isinstance(info.value, psycopg.Error)
    detail = json.loads(info.value.diag.message_detail or "")
    assert {g["gate"]: g["passed"] for g in detail["b"]} == {"approved": False, "rejections": True}
    assert {g["gate"]: g["passed"] for g in detail["a"]} == {"approved": True, "rejections": True}
    assert churn.written() == before


def test_a_live_arm_must_pass_the_projects_champion_gates(conn: Conn, churn: Project) -> None:
    v1 = churn.version()
    conn.execute("select ml.set_promotion_policy('churn', 'champion', %s)", (Jsonb({"min_metrics": {"roc_auc": 0.9}}),))
    before = churn.written()
    with refused("23514", r"arm a \(churn@1\): roc_auc missing \(needs >= 0.9\)"):
        churn.deploy("single", [{"arm": "a", "model": v1}])
    assert churn.written() == before
    conn.execute("update ml.model_versions set metrics = '{\"roc_auc\": 0.85}' where tenant_id = %s", (churn.tenant,))
    with refused("23514", r"roc_auc 0.85 < 0.9"):
        churn.deploy("single", [{"arm": "a", "model": v1}])
    conn.execute("update ml.model_versions set metrics = '{\"roc_auc\": 0.95}' where tenant_id = %s", (churn.tenant,))
    churn.deploy("single", [{"arm": "a", "model": v1}])


def test_a_rejected_version_takes_no_traffic_even_when_someone_approved_it(conn: Conn, churn: Project) -> None:
    v1 = churn.version()
    critic = member(conn, churn.tenant, "admin")
    with tenant_context(conn, churn.tenant, user=critic):
        conn.execute("select ml.approve('churn', 1, 'rejected')")
    act_for(conn, churn.tenant)
    with refused("23514", r"rejections 1 > 0"):
        churn.deploy("single", [{"arm": "a", "model": v1}])


def test_shadow_arms_need_no_gates(churn: Project) -> None:
    live, candidate = churn.version(), churn.version(approved=False)
    churn.decide(candidate, "rejected")
    churn.deploy("shadow", [{"arm": "a", "model": live}, {"arm": "s", "model": candidate, "role": "shadow"}])


# -- validation ---------------------------------------------------------------------------------

TWO = [{"arm": "a", "model": "churn@1", "weight": 0.5}, {"arm": "b", "model": "churn@2", "weight": 0.5}]
CANARY_ARMS = [{"arm": "a", "model": "churn@1"}, {"arm": "b", "model": "churn@2"}]


def canary(**options: Any) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    return "canary", CANARY_ARMS, {"schedule": CANARY, **options}


def abort(**rule: Any) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    return canary(abort={"metric": "error_rate", "max": 0.2, **rule})


@pytest.mark.parametrize(("strategy", "arms", "options", "message"), [
    ("rainbow", TWO, {}, r"strategy: must be one of single, ab, canary, shadow, blue_green \(got 'rainbow'\)"),
    ("ab", {"arm": "a"}, {}, r"arms: must be a non-empty JSON array"),
    ("ab", [], {}, r"arms: must be a non-empty JSON array"),
    ("single", ["churn@1"], {}, r"arms\[0\]: must be an object"),
    ("single", [{"arm": "Main", "model": "churn@1"}], {}, r"arms\[0\]\.arm: must be a name of lowercase letters"),
    ("single", [{"model": "churn@1"}], {}, r"arms\[0\]\.arm: must be a name"),
    ("ab", [TWO[0], {**TWO[1], "arm": "a"}], {}, r"arms\[1\]\.arm: duplicate arm 'a'"),
    ("single", [{"arm": "a", "model": "churn@1", "colour": "red"}], {}, r"arms\[0\]: unknown key 'colour'"),
    ("single", [{"arm": "a", "model": "churn", "version": 1, "alias": "champion"}], {}, r"arms\[0\]: give version or alias, not both"),
    ("single", [{"arm": "a", "model": "churn"}], {}, r"arms\[0\]: name the version"),
    ("single", [{"arm": "a", "model": "churn", "version": 0}], {}, r"arms\[0\]\.version: must be a positive integer"),
    ("single", [{"arm": "a", "model": "churn", "version": 1.5}], {}, r"arms\[0\]\.version: must be a positive integer"),
    ("single", [{"arm": "a", "model": "churn", "alias": "Top"}], {}, r"arms\[0\]\.alias: must be an alias name"),
    ("single", [{"arm": "a", "model": 7}], {}, r"arms\[0\]\.model: must be a model name"),
    ("single", [{"arm": "a", "model": "churn@1", "role": "primary"}], {}, r"arms\[0\]\.role: must be live or shadow"),
    ("single", TWO, {}, r"arms: strategy single takes exactly one live arm \(got 2\)"),
    ("blue_green", TWO, {}, r"arms: strategy blue_green takes exactly one live arm"),
    ("single", [{"arm": "a", "model": "churn@1", "weight": 0.5}], {},
     r"arms\[0\]\.weight: strategy single gives its one live arm all the traffic"),
    ("single", [TWO[0], {**TWO[1], "role": "shadow"}], {}, r"arms\[1\]\.role: shadow arms belong to strategy shadow"),
    ("ab", TWO[:1], {}, r"arms: strategy ab takes two or more live arms \(got 1\)"),
    ("ab", [TWO[0], {**TWO[1], "weight": 0}], {}, r"arms\[1\]\.weight: strategy ab needs a weight in \(0, 1\]"),
    ("ab", [TWO[0], {"arm": "b", "model": "churn@2"}], {},
     r"arms\[1\]\.weight: strategy ab needs a weight in \(0, 1\] on every live arm \(got none\)"),
    ("ab", [TWO[0], {**TWO[1], "weight": "half"}], {}, r"arms\[1\]\.weight: must be a number"),
    ("ab", [TWO[0], {**TWO[1], "weight": 0.4}], {}, r"arms: the weights of strategy ab must sum to 1 \(got 0.9\)"),
    ("shadow", [{"arm": "a", "model": "churn@1"}], {}, r"arms: strategy shadow takes at least one shadow arm"),
    ("shadow", [{"arm": "a", "model": "churn@1"}, {"arm": "s", "model": "churn@2", "role": "shadow", "weight": 0.5}], {},
     r"arms\[1\]\.weight: a shadow arm takes no traffic"),
    ("canary", [*CANARY_ARMS, {"arm": "c", "model": "churn@1"}], {"schedule": CANARY},
     r"arms: strategy canary takes exactly two live arms, the baseline and the canary \(got 3\)"),
    ("canary", TWO, {"schedule": CANARY}, r"arms\[0\]\.weight: a canary's weights come from options.schedule"),
    ("canary", CANARY_ARMS, {}, r"options.schedule: a canary needs a non-empty array of steps"),
    ("canary", CANARY_ARMS, {"schedule": [{"weight": 0.1, "after": "5 minutes"}]},
     r"options.schedule\[0\]\.after: the first step starts at once"),
    ("canary", CANARY_ARMS, {"schedule": [CANARY[0], {"weight": 0.1, "after": "1 hour"}]},
     r"options.schedule\[1\]\.weight: must be greater than the step before"),
    ("canary", CANARY_ARMS, {"schedule": [CANARY[1] | {"after": "0 minutes"}, {"weight": 0.9, "after": "0 seconds"}]},
     r"options.schedule\[1\]\.after: must be later than the step before"),
    ("canary", CANARY_ARMS, {"schedule": [CANARY[0], {"weight": 0.5, "after": "soon"}]},
     r"options.schedule\[1\]\.after: must be an interval such as '30 minutes'"),
    ("canary", CANARY_ARMS, {"schedule": [{"weight": 1.5, "after": "0 minutes"}]},
     r"options.schedule\[0\]\.weight: must be a number in \(0, 1\]"),
    ("canary", CANARY_ARMS, {"schedule": [{"weight": 0.5, "after": "0 minutes", "ramp": True}]},
     r"options.schedule\[0\]: unknown key 'ramp'"),
    (*canary(canary_arm="c"), r"options.canary_arm: must name one of the live arms a, b"),
    (*abort(metric="f1"), r"options.abort.metric: must be one of error_rate, accuracy, mae, rmse"),
    (*abort(metric="mae"), r"options.abort.metric: mae needs a regression project \(churn is classification\)"),
    (*abort(min=0.1), r"options.abort: give exactly one of max \(abort above it\) and min"),
    (*abort(max=2), r"options.abort.max: error_rate is a share in \[0, 1\]"),
    (*abort(max="high"), r"options.abort.max: must be a number"),
    (*abort(min_samples=0), r"options.abort.min_samples: must be an integer from 1 to 1000000"),
    (*abort(min_samples=2.5), r"options.abort.min_samples: must be an integer"),
    (*abort(window="0 minutes"), r"options.abort.window: must be longer than 0"),
    (*abort(window=60), r"options.abort.window: must be an interval"),
    (*abort(after="1 hour"), r"options.abort: unknown key 'after'"),
    ("ab", TWO, {"schedule": CANARY}, r"options.schedule: only strategy canary takes it"),
    ("single", TWO[:1], {"colour": "red"}, r"options: unknown key 'colour'"),
    ("single", TWO[:1], {"reason": 42}, r"options.reason: must be a text of at most 1000 characters"),
    ("single", [{"arm": "a", "model": "fraud@1"}], {}, r"arms\[0\]\.model: model fraud belongs to project fraud, not churn"),
])
def test_deploy_validates_every_field_and_writes_nothing(conn: Conn, churn: Project, strategy: str, arms: Any,
                                                          options: dict[str, Any], message: str) -> None:
    churn.version(), churn.version()
    Project(conn, churn.tenant, "fraud").version()
    churn.deploy("single", [{"arm": "a", "model": "churn@1"}])
    before = churn.written()
    with refused("22023", message):
        conn.execute("select ml.deploy('churn', %s, %s, %s)", (strategy, Jsonb(arms), Jsonb(options)))
    assert churn.written() == before


@pytest.mark.parametrize(("model", "message"), [
    ("nope@1", "model 'nope' does not exist"),
    ("churn@9", "model churn has no version 9"),
    ("churn@champion", "model churn has no alias 'champion'"),
])
def test_deploy_of_an_unknown_model_version_or_alias_is_not_found(conn: Conn, churn: Project, model: str, message: str) -> None:
    churn.version()
    with refused("P0002", message):
        churn.deploy("single", [{"arm": "a", "model": model}])
    with refused("P0002", "project 'nope' does not exist"):
        conn.execute("select ml.deploy('nope', 'single', '[{\"arm\": \"a\", \"model\": \"churn@1\"}]')")
    assert churn.written()[0] == 0


# -- who may deploy, audit and events -------------------------------------------------------------


def test_another_tenant_can_neither_see_nor_deploy_the_project(conn: Conn, churn: Project) -> None:
    v1 = churn.version()
    churn.deploy("single", [{"arm": "a", "model": v1}])
    theirs = str(one(conn, "select ml.create_tenant('theirs')"))
    stranger = member(conn, theirs, "owner")
    act_for(conn, None)  # the stranger names their tenant in their JWT
    arms = Jsonb([{"arm": "a", "model": v1}])
    for call, args in (("select ml.deploy('churn', 'single', %s)", (arms,)), ("select ml.deployment('churn')", ()),
                       ("select ml.deployment_history('churn')", ()), ("select ml.rollback('churn')", ())):
        with refused("P0002", "project 'churn' does not exist"), tenant_context(conn, theirs, user=stranger):
            conn.execute(call, args)
        with refused("42501"), tenant_context(conn, churn.tenant, user=stranger):
            conn.execute(call, args)
    with tenant_context(conn, theirs, user=stranger):
        assert one(conn, "select count(*) from ml.deployments") == 0
        assert one(conn, "select count(*) from ml.deployment_arms") == 0
    act_for(conn, churn.tenant)
    assert len(churn.statuses()) == 1


def test_viewers_read_deployments_and_engineers_deploy(conn: Conn, churn: Project) -> None:
    v1, v2 = churn.version(), churn.version()
    churn.deploy("single", [{"arm": "a", "model": v1}])
    viewer = member(conn, churn.tenant, "viewer")
    with tenant_context(conn, churn.tenant, user=viewer):
        assert one(conn, "select ml.deployment('churn')")["arms"][0]["version"] == 1
        assert one(conn, "select count(*) from ml.deployments") == 1
    for call in ("select ml.deploy('churn', 'single', '[{\"arm\": \"a\", \"model\": \"churn@2\"}]')",
                 "select ml.rollback('churn')"):
        with refused("42501"), tenant_context(conn, churn.tenant, user=viewer):
            conn.execute(call)
    with tenant_context(conn, churn.tenant, user=churn.reviewer):
        deployment = str(one(conn, "select ml.deploy('churn', 'single', %s)", Jsonb([{"arm": "a", "model": v2}])))
    act_for(conn, churn.tenant)
    history = one(conn, "select ml.deployment_history('churn')")
    assert (history[0]["id"], history[0]["created_by"]) == (deployment, churn.reviewer)
    assert history[1]["ended_by"] == churn.reviewer and history[1]["end_reason"] == f"superseded by deployment {deployment}"


def test_every_deployment_change_is_audited_and_published(conn: Conn, churn: Project) -> None:
    v1, v2 = churn.version(), churn.version()
    first = churn.deploy("single", [{"arm": "a", "model": v1}])
    second = churn.deploy("blue_green", [{"arm": "b", "model": v2}], {"reason": "new model"})
    conn.execute("select ml.rollback('churn')")
    rows = conn.execute("select action, object_kind, object_id::text, before, after from ml.audit_log "
                        "where tenant_id = %s and object_kind = 'deployment' order by id", (churn.tenant,)).fetchall()
    assert [(r[0], r[2]) for r in rows] == [("deployment.created", first), ("deployment.created", second),
                                            ("deployment.rolled_back", second)]
    assert rows[0][3] is None and rows[0][4]["arms"] == [{"arm": "a", "role": "live", "model": "churn", "version": 1, "weight": 1}]
    assert rows[1][3]["id"] == first and rows[1][4]["reason"] == "new model" and rows[1][4]["previous_id"] == first
    assert rows[2][3]["status"] == "rolled_back" and rows[2][4]["id"] == first and rows[2][4]["status"] == "active"
    assert [(e, p["object_id"]) for e, p in events(conn, churn.tenant)] == [(r[0], r[2]) for r in rows]
