"""Monitoring windows: fast-mode counts (ml_private.rollup_window_counts into ml.window_counts) and
window embeddings (ml_private.record_window_embedding, ml.similar_windows).

On the real server (pgvector's HNSW index), and on a database of it where pgvector could not be
installed (the float8[] fallback). Predictions are logged rows of ml.predictions written as the
owner (as ml.predict writes them); reference profiles are rows of ml.reference_profiles; reports
are rows of ml.drift_reports, except in the end-to-end test through ml.drift_report.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg.types.json import Jsonb

from pgmlops.db import tenant_context

from .compile_helpers import project, register
from .conftest import Server, act_for, make_tenant
from .training_data import member, refused

Conn = psycopg.Connection[Any]
SIGNATURE = [{"name": "x0", "dtype": "float"}, {"name": "tier", "dtype": "text"}]
X_EDGES = [float(e) for e in range(0, 11)]  # 10 bins on [0, 10], under- and overflow apart
SCORE_EDGES = [i / 10 for i in range(0, 11)]
TIERS = ("gold", "silver", "bronze")
# A whole hour, well in the past (the rollup horizon is far ahead of it) and within the
# prediction log's retention (maintenance drops chunks older than 90 days).
T0 = (datetime.now(UTC) - timedelta(days=40)).replace(minute=0, second=0, microsecond=0)


class World:
    """A tenant with a project, two versions with reference profiles, and a member."""

    def __init__(self, conn: Conn, name: str = "churn") -> None:
        self.id = make_tenant(conn)
        act_for(conn, self.id)
        self.project = project(conn, name, "classification")
        self.name = name
        self.versions = [register(conn, self.project, SIGNATURE, "classification", classes=["no", "yes"]) for _ in range(2)]
        for version in self.versions:
            profile(conn, self.id, version)
        self.viewer = member(conn, self.id, "viewer")
        act_for(conn, None)

    def log(self, conn: Conn, start: datetime, end: datetime, n: int, *, mean: float = 5.0, sd: float = 1.5,
            tiers: tuple[float, float] = (0.5, 0.3), version: int = 0, seed: int = 1, missing: float = 0.02) -> None:
        """n live predictions spread evenly over [start, end): x0 ~ N(mean, sd) (some missing),
        tier gold / silver / bronze with the given first two probabilities, a score and a label."""
        conn.execute("select setseed(%s)", (seed / 1000,))
        conn.execute(
            """
            insert into ml.predictions (tenant_id, project_id, model_version_id, arm, features, prediction, score, created_at)
            select %(t)s, %(p)s, %(v)s, 'a', jsonb_build_object('x0', x, 'tier', tier),
                   to_jsonb(case when x > 5 then 'yes' else 'no' end), 1 / (1 + exp(-(coalesce(x, 5) - 5))),
                   %(start)s::timestamptz + (%(end)s::timestamptz - %(start)s::timestamptz) * ((i + 0.5) / %(n)s)
            from (select i,
                         case when random() >= %(missing)s
                              then %(mean)s + %(sd)s * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()) end as x,
                         (select case when u < %(g)s then 'gold' when u < %(g)s + %(s)s then 'silver' else 'bronze' end
                          from (select random() + i * 0 as u) r) as tier
                  from generate_series(0, %(n)s - 1) i) s
            """,
            {"t": self.id, "p": self.project, "v": self.versions[version], "start": start, "end": end, "n": n,
             "mean": mean, "sd": sd, "g": tiers[0], "s": tiers[1], "missing": missing},
        )

    def shadow(self, conn: Conn, at: datetime, n: int) -> None:
        """n shadow rows (shadow_of set): never counted."""
        conn.execute(
            "insert into ml.predictions (tenant_id, project_id, model_version_id, arm, shadow_of, features, prediction, "
            "score, created_at) select %s, %s, %s, 'b', gen_random_uuid(), '{\"x0\": 3.5, \"tier\": \"gold\"}', "
            "'\"no\"', 0.2, %s from generate_series(1, %s)",
            (self.id, self.project, self.versions[1], at, n))

    def report(self, conn: Conn, start: datetime, end: datetime, *, drift: bool = False,
               options: dict[str, Any] | None = None, version: int = 0) -> str:
        row = conn.execute(
            "insert into ml.drift_reports (tenant_id, project_id, model_version_id, window_start, window_end, mode, source, "
            "options, dataset_drift) values (%s, %s, %s, %s, %s, 'fast', 'ml.predictions', %s, %s) returning id",
            (self.id, self.project, self.versions[version], start, end, Jsonb(options or {}), drift)).fetchone()
        assert row is not None
        return str(row[0])


def profile(conn: Conn, tenant: str, version: str, x_edges: list[float] = X_EDGES,
            score_edges: list[float] = SCORE_EDGES) -> None:
    """The version's reference profiles: x0 and score numeric on the given edges, tier and the
    prediction categorical."""
    conn.execute(
        """
        insert into ml.reference_profiles (tenant_id, model_version_id, feature, kind, dtype, role, row_count, nulls,
                                           edges, counts, frequencies)
        values (%(t)s, %(v)s, 'x0', 'numeric', 'float', 'input', 1000, 0, %(x)s, %(xc)s, null),
               (%(t)s, %(v)s, 'tier', 'categorical', 'text', 'input', 1000, 0, null, null,
                '{"gold": 500, "silver": 300, "bronze": 200}'),
               (%(t)s, %(v)s, 'label', 'categorical', 'text', 'prediction', 1000, 0, null, null, '{"no": 500, "yes": 500}'),
               (%(t)s, %(v)s, 'score', 'numeric', 'float', 'score', 1000, 0, %(s)s, %(sc)s, null)
        """,
        {"t": tenant, "v": version, "x": x_edges, "xc": [0] * (len(x_edges) + 1), "s": score_edges,
         "sc": [0] * (len(score_edges) + 1)})


def bin_of(edges: list[float], x: float | None) -> int | None:
    """numpy.histogram's bin, 1-based, 0 below the first edge, n + 1 above the last."""
    if x is None:
        return None
    if x == edges[-1]:
        return len(edges) - 1
    return int(np.searchsorted(edges, x, side="right"))


def expected_counts(conn: Conn, world: World, start: datetime | None = None, end: datetime | None = None,
                    by_bucket: bool = True) -> Counter[tuple[Any, ...]]:
    """The counts a direct GROUP BY of the live predictions gives, binned here in Python:
    (version, role, feature, hour?, bin, category) -> count."""
    rows = conn.execute(
        "select model_version_id::text, date_trunc('hour', created_at, 'UTC'), (features ->> 'x0')::float8, "
        "features ->> 'tier', prediction #>> '{}', score from ml.predictions where tenant_id = %s and shadow_of is null "
        "and created_at >= coalesce(%s::timestamptz, '-infinity') and created_at < coalesce(%s::timestamptz, 'infinity')",
        (world.id, start, end)).fetchall()
    out: Counter[tuple[Any, ...]] = Counter()
    for version, hour, x, tier, label, score in rows:
        key = (version, hour) if by_bucket else (version,)
        out[(*key, "input", "x0", bin_of(X_EDGES, x), None)] += 1
        out[(*key, "input", "tier", None, tier)] += 1
        out[(*key, "prediction", "label", None, label)] += 1
        out[(*key, "score", "score", bin_of(SCORE_EDGES, score), None)] += 1
    return out


def stored_counts(conn: Conn, world: World) -> Counter[tuple[Any, ...]]:
    rows = conn.execute("select model_version_id::text, bucket, role, feature, bin, category, count from ml.window_counts "
                        "where tenant_id = %s", (world.id,)).fetchall()
    return Counter({tuple(r[:6]): r[6] for r in rows})


def rollup(conn: Conn, world: World | None = None) -> int:
    row = conn.execute("select ml_private.rollup_window_counts(%s)", (world.project if world else None,)).fetchone()
    assert row is not None
    return int(row[0])


def watermark(conn: Conn, world: World) -> datetime:
    row = conn.execute("select rolled_up_to from ml.window_watermarks where project_id = %s", (world.project,)).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def setup(db_url: str) -> str:
    # No safety margin in these tests: the running transactions alone hold the horizon back.
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("insert into ml_private.settings (key, value) values ('window_rollup_margin', '\"0 seconds\"') "
                     "on conflict (key) do update set value = excluded.value")
    return db_url


@pytest.fixture
def world(setup: str, conn: Conn) -> World:
    return World(conn)


# -- fast-mode counts ----------------------------------------------------------------------------


def test_rollup_counts_equal_a_group_by_over_the_live_predictions(conn: Conn, world: World) -> None:
    world.log(conn, T0, T0 + timedelta(hours=3), 3000, mean=5, sd=3, seed=1)   # under- and overflow too
    world.log(conn, T0 + timedelta(hours=1), T0 + timedelta(hours=2), 500, version=1, seed=2, missing=0.2)
    world.shadow(conn, T0 + timedelta(minutes=30), 40)
    assert rollup(conn, world) == 3500
    expected = expected_counts(conn, world)
    assert stored_counts(conn, world) == expected
    assert {k[4] for k in expected if k[3] == "x0"} >= {0, 1, 10, 11, None}
    # The sums give the window's mean and variance.
    row = conn.execute("select sum(total), sum(total_squares), sum(count) filter (where bin is not null) from ml.window_counts "
                       "where tenant_id = %s and feature = 'x0'", (world.id,)).fetchone()
    direct = conn.execute("select sum(x), sum(x * x), count(x) from (select (features ->> 'x0')::float8 x from ml.predictions "
                          "where tenant_id = %s and shadow_of is null) s", (world.id,)).fetchone()
    assert row is not None and direct is not None
    assert row[0] == pytest.approx(direct[0], rel=1e-12) and row[1] == pytest.approx(direct[1], rel=1e-12)
    assert row[2] == direct[2]


def test_a_second_rollup_counts_only_what_was_logged_since(conn: Conn, world: World) -> None:
    world.log(conn, T0, T0 + timedelta(hours=2), 800, seed=3)
    now = datetime.now(UTC)
    world.log(conn, now - timedelta(seconds=2), now - timedelta(seconds=1), 10, seed=4)
    assert rollup(conn, world) == 810
    before = stored_counts(conn, world)
    assert rollup(conn, world) == 0
    assert stored_counts(conn, world) == before
    mark = watermark(conn, world)
    # Logged since the watermark: added to the hours already counted.
    time.sleep(0.1)
    world.log(conn, mark, mark + timedelta(milliseconds=50), 50, seed=5)
    # Rows stamped behind the watermark (never from ml.predict: its rows carry their transaction's
    # start, which the horizon waits for) are not counted again, whatever they hold.
    world.log(conn, T0 + timedelta(hours=1), T0 + timedelta(hours=3), 300, version=1, seed=6)
    assert rollup(conn, world) == 50
    assert stored_counts(conn, world) == Counter({k: v for k, v in expected_counts(conn, world).items()
                                                  if k[0] == world.versions[0]})


def test_two_concurrent_rollups_count_nothing_twice(setup: str, conn: Conn, world: World) -> None:
    world.log(conn, T0, T0 + timedelta(hours=4), 2000, seed=7)
    results: list[int] = []
    with psycopg.connect(setup) as first, psycopg.connect(setup, autocommit=True) as second:
        assert rollup(first, world) == 2000   # its transaction still holds the watermark row
        pid = second.info.backend_pid

        def run() -> None:
            results.append(rollup(second, world))

        thread = threading.Thread(target=run)
        thread.start()
        for _ in range(100):
            waiting = conn.execute("select wait_event_type from pg_stat_activity where pid = %s", (pid,)).fetchone()
            if waiting and waiting[0] == "Lock":
                break
            time.sleep(0.05)
        assert waiting and waiting[0] == "Lock"   # the second waits for the first ...
        first.commit()
        thread.join(10)
    assert results == [0]                        # ... and then finds nothing left to count
    assert stored_counts(conn, world) == expected_counts(conn, world)


def test_maintenance_skips_a_project_another_session_is_rolling_up(setup: str, conn: Conn, world: World) -> None:
    world.log(conn, T0, T0 + timedelta(hours=1), 100, seed=8)
    with psycopg.connect(setup) as busy:
        assert rollup(busy, world) == 100          # not committed: it holds the project's watermark
        started = time.monotonic()
        rollup(conn, None)                         # returns at once, passing the project over
        assert time.monotonic() - started < 5
        assert stored_counts(conn, world) == Counter()   # nothing counted by maintenance
        busy.commit()
    assert stored_counts(conn, world) == expected_counts(conn, world)


def test_a_prediction_committed_late_is_not_missed(setup: str, conn: Conn, world: World) -> None:
    world.log(conn, T0, T0 + timedelta(hours=1), 10, seed=9)
    with psycopg.connect(setup) as late:
        # A transaction that started before the rollup and commits after it: its row carries its start.
        late.execute("insert into ml.predictions (tenant_id, project_id, model_version_id, arm, features, prediction, score) "
                     "values (%s, %s, %s, 'a', '{\"x0\": 4.5, \"tier\": \"gold\"}', '\"no\"', 0.4)",
                     (world.id, world.project, world.versions[0]))
        row = late.execute("select now()").fetchone()
        assert row is not None
        started = row[0]
        time.sleep(0.2)
        assert rollup(conn, world) == 10
        assert watermark(conn, world) <= started    # held back by the running transaction
        late.commit()
    time.sleep(0.01)
    assert rollup(conn, world) == 1
    assert stored_counts(conn, world) == expected_counts(conn, world)


def test_a_version_profiled_again_has_its_counts_redone(conn: Conn, world: World) -> None:
    # The outputs of a version are profiled once it is compiled: its earlier predictions were
    # counted without them.
    conn.execute("delete from ml.reference_profiles where model_version_id = %s and role in ('prediction', 'score')",
                 (world.versions[0],))
    time.sleep(0.3)
    now = datetime.now(UTC)   # logged after the versions were registered, as ml.predict logs
    world.log(conn, now - timedelta(seconds=0.2), now - timedelta(seconds=0.1), 500, seed=14)
    world.log(conn, now - timedelta(seconds=0.2), now - timedelta(seconds=0.1), 200, version=1, seed=15)
    assert rollup(conn, world) == 700
    assert not [k for k in stored_counts(conn, world) if k[0] == world.versions[0] and k[2] != "input"]
    version1 = conn.execute("select count(*), min(ctid::text) from ml.window_counts where model_version_id = %s",
                            (world.versions[1],)).fetchone()
    conn.execute("""insert into ml.reference_profiles (tenant_id, model_version_id, feature, kind, dtype, role, row_count, nulls,
                                                       edges, counts, frequencies)
                    values (%(t)s, %(v)s, 'label', 'categorical', 'text', 'prediction', 1000, 0, null, null, '{"no": 1, "yes": 1}'),
                           (%(t)s, %(v)s, 'score', 'numeric', 'float', 'score', 1000, 0, %(s)s, %(sc)s, null)""",
                 {"t": world.id, "v": world.versions[0], "s": SCORE_EDGES, "sc": [0] * (len(SCORE_EDGES) + 1)})
    time.sleep(0.1)
    mark = watermark(conn, world)
    world.log(conn, mark, mark + timedelta(milliseconds=50), 30, seed=16)
    assert rollup(conn, world) == 30
    assert stored_counts(conn, world) == expected_counts(conn, world)
    # The other version's counts were left as they were.
    assert conn.execute("select count(*), min(ctid::text) from ml.window_counts where model_version_id = %s",
                        (world.versions[1],)).fetchone() == version1


def test_window_counts_between_are_exact_at_any_bounds(conn: Conn, world: World) -> None:
    world.log(conn, T0, T0 + timedelta(hours=6), 3000, seed=10)
    world.log(conn, T0 + timedelta(hours=2), T0 + timedelta(hours=3), 200, version=1, seed=11)
    assert rollup(conn, world) == 3200
    world.log(conn, T0 + timedelta(hours=6), T0 + timedelta(hours=7), 300, seed=12)   # not rolled up
    conn.execute("update ml.window_watermarks set rolled_up_to = %s where project_id = %s",
                 (T0 + timedelta(hours=6), world.project))
    for start, end in ((T0 + timedelta(minutes=17), T0 + timedelta(hours=6, minutes=40)),   # partial hours and the tail
                       (T0 + timedelta(minutes=5), T0 + timedelta(minutes=50)),              # inside one hour
                       (T0 + timedelta(hours=1), T0 + timedelta(hours=3))):                  # whole hours only
        rows = conn.execute("select model_version_id::text, role, feature, bin, category, count from "
                            "ml_private.window_counts_between(%s, %s, %s, %s)", (world.id, world.project, start, end)).fetchall()
        assert Counter({tuple(r[:5]): r[5] for r in rows}) == expected_counts(conn, world, start, end, by_bucket=False)


def test_maintenance_rolls_up_every_project(conn: Conn, world: World) -> None:
    world.log(conn, T0, T0 + timedelta(hours=1), 120, seed=13)
    row = conn.execute("select ml.run_maintenance()").fetchone()
    assert row is not None and row[0]["window_counts"] >= 120
    assert stored_counts(conn, world) == expected_counts(conn, world)


def test_rollup_of_an_unknown_project_is_refused(conn: Conn, setup: str) -> None:
    with refused("P0002", "project .* does not exist"):
        conn.execute("select ml_private.rollup_window_counts(gen_random_uuid())")


# -- window embeddings ---------------------------------------------------------------------------

DAY = timedelta(days=1)
REGIMES: dict[str, dict[str, Any]] = {
    "A": {"mean": 4.0, "tiers": (0.6, 0.3)},
    "B": {"mean": 6.5, "tiers": (0.2, 0.3)},
    "C": {"mean": 4.0, "tiers": (0.1, 0.1)},   # x0 as in A, tiers never seen
}


def windows(conn: Conn, world: World, plan: str, n: int = 2000, seed: int = 100,
            served: list[int] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """One daily window per letter of plan (a regime), served by the version of served (index
    into world.versions, the first by default) and reported for it, all logged first (a report
    rolls the log up, and rows logged later with an earlier time would be behind its
    watermark), then each reported and embedded in order; returns (report id, regime section)
    per window."""
    spans = [(T0 + 10 * DAY + i * DAY, T0 + 11 * DAY + i * DAY) for i in range(len(plan))]
    by = served or [0] * len(plan)
    for i, (regime, (start, end)) in enumerate(zip(plan, spans, strict=True)):
        world.log(conn, start, end, n, seed=seed + i, version=by[i], **REGIMES[regime])
    out = []
    for (start, end), version in zip(spans, by, strict=True):
        report = world.report(conn, start, end, version=version)
        row = conn.execute("select ml_private.record_window_embedding(%s)", (report,)).fetchone()
        assert row is not None
        out.append((report, row[0]))
    return out


def test_a_seasonal_return_is_matched_and_a_new_regime_is_not(conn: Conn, world: World) -> None:
    (a, first), (b, second), (a2, back), (c, new) = windows(conn, world, "ABAC")
    assert first["matched"] is False and first["similar"] == [] and first["row_count"] == 2000
    assert second["matched"] is False and second["similar"][0]["report_id"] == a
    assert back["matched"] is True and back["match"]["report_id"] == a
    assert [s["report_id"] for s in back["similar"]] == [a, b]
    assert back["similar"][0]["distance"] < back["threshold"] < back["similar"][1]["distance"]
    assert new["matched"] is False and new["similar"][0]["distance"] > new["similar"][0]["threshold"]
    assert back["model_version"] == 1 and back["dimensions"] == 256 and back["search"] == "hnsw"
    # The stored embedding: unit norm, 256 dimensions.
    row = conn.execute("select vector_dims(embedding), vector_norm(embedding) from ml.window_embeddings where report_id = %s",
                       (a2,)).fetchone()
    assert row is not None and row[0] == 256 and row[1] == pytest.approx(1.0, abs=1e-6)


def retrained_world(conn: Conn) -> World:
    """A world whose second version was retrained on regime B with a small reference sample:
    x0 binned on [5, 8] (A's values mostly fall under it), the score on [0.5, 1]."""
    world = World(conn)
    conn.execute("delete from ml.reference_profiles where model_version_id = %s", (world.versions[1],))
    profile(conn, world.id, world.versions[1], [5 + 0.3 * i for i in range(11)], [0.5 + 0.05 * i for i in range(11)])
    return world


def test_windows_served_by_a_retrained_version_are_embedded_on_the_first_versions_bins(conn: Conn) -> None:
    """fraud@1 serves regime A; fraud@2, retrained on regime B (other bins), serves B, then A
    again: on one basis (fraud@1's bins) the returning window matches the first, B does not."""
    world = retrained_world(conn)
    (a, first), (b, season), (a2, back) = windows(conn, world, "ABA", seed=700, served=[0, 1, 1])
    assert first["basis_version"] == 1 and first["model_version"] == 1 and first["off_basis_rows"] == 0
    assert season["basis_version"] == 1 and season["model_version"] == 2 and season["off_basis_rows"] == 2000
    assert season["matched"] is False and season["similar"][0]["distance"] > season["similar"][0]["threshold"]
    assert back["basis_version"] == 1 and back["model_version"] == 2 and back["row_count"] == 2000
    assert back["matched"] is True and back["match"]["report_id"] == a and back["match"]["model_version"] == 1
    assert [s["report_id"] for s in back["similar"]] == [a, b]
    assert back["similar"][0]["distance"] < back["threshold"] < back["similar"][1]["distance"]
    # The stored row names the version that served the window (the recall reads it).
    served = conn.execute("select mv.version from ml.window_embeddings e join ml.model_versions mv on mv.id = e.model_version_id "
                          "where e.report_id = %s", (a2,)).fetchone()
    assert served == (2,)


def test_the_same_rows_embed_alike_whichever_version_served_them(conn: Conn) -> None:
    """The same values logged twice, served by the basis and then by the retrained version, in
    windows that do not start or end on the hour: the same embedding (binned from the log on
    the basis's edges, exactly), and a window served by both counts both."""
    world = retrained_world(conn)
    spans = [(T0 + 20 * DAY + timedelta(minutes=17), T0 + 21 * DAY + timedelta(minutes=43)),
             (T0 + 22 * DAY + timedelta(minutes=17), T0 + 23 * DAY + timedelta(minutes=43)),
             (T0 + 24 * DAY + timedelta(minutes=17), T0 + 25 * DAY + timedelta(minutes=43))]
    world.log(conn, *spans[0], 1500, seed=801, version=0, **REGIMES["A"])
    world.log(conn, *spans[1], 1500, seed=801, version=1, **REGIMES["A"])
    world.log(conn, spans[2][0], spans[2][0] + DAY / 2, 700, seed=802, version=0, **REGIMES["A"])
    world.log(conn, spans[2][0] + DAY / 2, spans[2][1], 800, seed=803, version=1, **REGIMES["A"])
    rollup(conn, world)
    sections = []
    for start, end in spans:
        row = conn.execute("select ml_private.record_window_embedding(%s)", (world.report(conn, start, end),)).fetchone()
        assert row is not None
        sections.append(row[0])
    by_basis, by_other, mixed = sections
    assert by_basis["off_basis_rows"] == 0 and by_other["off_basis_rows"] == 1500 and by_other["row_count"] == 1500
    assert by_other["similar"][0]["distance"] == pytest.approx(0.0, abs=1e-12)
    assert mixed["row_count"] == 1500 and mixed["off_basis_rows"] == 800 and mixed["model_version"] == 1
    # The off-basis binning: fraud@2's rows on fraud@1's edges, as a GROUP BY binned here.
    rows = conn.execute("select role, feature, bin, category, sum(count)::bigint from ml_private.bin_predictions(%s, %s, %s, %s, "
                        "array[%s]::uuid[], %s) b where model_version_id = %s group by 1, 2, 3, 4",
                        (world.id, world.project, *spans[2], world.versions[1], world.versions[0],
                         world.versions[1])).fetchall()
    expected = Counter({k[1:]: n for k, n in expected_counts(conn, world, *spans[2], by_bucket=False).items()
                        if k[0] == world.versions[1]})
    assert Counter({tuple(r[:4]): r[4] for r in rows}) == expected


def test_the_regime_basis_is_the_earliest_profiled_version(conn: Conn) -> None:
    world = World(conn)
    later = World(conn, "later")
    basis = "select mv.version from ml.model_versions mv where mv.id = ml_private.regime_basis(%s)"
    assert conn.execute(basis, (world.project,)).fetchone() == (1,)
    # Not moved by a newer version's profile; moved when the basis's profile is deleted.
    conn.execute("delete from ml.reference_profiles where model_version_id = %s", (world.versions[0],))
    assert conn.execute(basis, (world.project,)).fetchone() == (2,)
    conn.execute("delete from ml.reference_profiles where model_version_id = any (%s)", (later.versions,))
    assert conn.execute("select ml_private.regime_basis(%s)", (later.project,)).fetchone() == (None,)
    report = later.report(conn, T0, T0 + DAY)
    later.log(conn, T0, T0 + DAY, 50)
    section = conn.execute("select ml_private.record_window_embedding(%s)", (report,)).fetchone()
    assert section is not None and section[0]["matched"] is False and "no version of the project" in section[0]["reason"]
    assert conn.execute("select count(*) from ml.window_embeddings where report_id = %s", (report,)).fetchone() == (0,)


def test_similar_windows_lists_the_nearest_past_windows_first(conn: Conn, world: World) -> None:
    embedded = windows(conn, world, "ABAABA", seed=200)
    ids = [r for r, _ in embedded]
    with tenant_context(conn, world.id, user=world.viewer):
        rows = conn.execute("select report_id::text, distance, model_version, dataset_drift, window_end "
                            "from ml.similar_windows(%s, %s)", (world.name, ids[-1])).fetchall()
        two = conn.execute("select report_id::text from ml.similar_windows(%s, %s, 2)", (world.name, ids[-1])).fetchall()
        none = conn.execute("select count(*) from ml.similar_windows(%s, %s, 3)", (world.name, ids[0])).fetchone()
    assert {r[0] for r in rows[:3]} == {ids[i] for i in (0, 2, 3)}   # the A windows first
    assert {r[0] for r in rows[3:]} == {ids[1], ids[4]}          # the B windows come last
    assert [r[1] for r in rows] == sorted(r[1] for r in rows)
    assert all(r[2] == 1 and r[3] is False for r in rows)
    assert all(r[4] <= T0 + 15 * DAY for r in rows)               # past windows only
    assert [r[0] for r in two] == [r[0] for r in rows[:2]]
    assert none == (0,)


def test_similar_windows_never_shows_another_tenants_windows(conn: Conn, world: World) -> None:
    other = World(conn)   # the same project name, the same distributions
    mine = windows(conn, world, "AA", seed=300)
    theirs = windows(conn, other, "AA", seed=300)
    with tenant_context(conn, world.id, user=world.viewer):
        rows = conn.execute("select report_id::text from ml.similar_windows(%s, %s, 100)", (world.name, mine[1][0])).fetchall()
        assert rows == [(mine[0][0],)]
        with refused("P0002", "does not exist in project"):
            conn.execute("select * from ml.similar_windows(%s, %s)", (world.name, theirs[1][0]))
    assert theirs[1][1]["match"]["report_id"] == theirs[0][0]


def similar(conn: Conn, world: World, report: str | None, k: int = 5, project: str | None = None) -> list[tuple[Any, ...]]:
    """ml.similar_windows as the world's viewer would call it."""
    with tenant_context(conn, world.id, user=world.viewer):
        return conn.execute("select report_id::text, distance from ml.similar_windows(%s, %s, %s)",
                            (project or world.name, report, k)).fetchall()


def test_similar_windows_refuses_bad_arguments(conn: Conn, world: World) -> None:
    (report, _), = windows(conn, world, "A", seed=400)
    empty = world.report(conn, T0 - 30 * DAY, T0 - 29 * DAY)
    for k in (0, -1, 101):
        with refused("22023", "k: must be between 1 and 100"):
            similar(conn, world, report, k)
    with refused("P0002", "report .* does not exist"):
        similar(conn, world, "00000000-0000-0000-0000-000000000000")
    with refused("P0002", "project 'nope' does not exist"):
        similar(conn, world, report, project="nope")
    with refused("22023", "report: must be"):
        similar(conn, world, None)
    with refused("P0002", "has no window embedding"):
        similar(conn, world, empty)
    with refused("P0002", "report .* does not exist"):
        conn.execute("select ml_private.record_window_embedding(gen_random_uuid())")
    section = conn.execute("select ml_private.record_window_embedding(%s)", (empty,)).fetchone()
    assert section is not None and section[0]["matched"] is False and "no predictions" in section[0]["reason"]
    bad = world.report(conn, T0, T0 + DAY, options={"regime_threshold": "high"})
    with refused("22023", "options.regime_threshold"):
        conn.execute("select ml_private.record_window_embedding(%s)", (bad,))


def test_anon_may_not_call_similar_windows(conn: Conn, world: World) -> None:
    row = conn.execute("select has_function_privilege('anon', 'ml.similar_windows(text, uuid, int)', 'execute'), "
                       "has_function_privilege('authenticated', 'ml_private.record_window_embedding(uuid)', 'execute'), "
                       "has_function_privilege('service_role', 'ml_private.rollup_window_counts(uuid)', 'execute')").fetchone()
    assert row == (False, False, False)


# -- end to end ----------------------------------------------------------------------------------


def test_drift_reports_state_whether_their_window_was_seen_before(conn: Conn, setup: str) -> None:
    """Through ml.drift_report (fast mode): a compiled, deployed version, its windows logged as
    ml.predict logs them; the regime section of each report, and ml.similar_windows."""
    from .test_reference_profiles import Reference, frame

    ref = Reference(conn, "regimes", frame(600, 21))
    ref.model()
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    plan = [("A", frame(400, 22)), ("B", frame(400, 23, shift=1.0, tiers=(0.2, 0.3, 0.5), vip=0.6)), ("A", frame(400, 24))]
    spans = [(now - timedelta(hours=30 - 6 * i), now - timedelta(hours=26 - 6 * i)) for i in range(len(plan))]
    for (_, rows), (start, end) in zip(plan, spans, strict=True):
        ref.log(rows, start + (end - start) / 2)
    act_for(conn, ref.tenant)
    reports: list[str] = []
    regimes: list[dict[str, Any]] = []
    for start, end in spans:
        row = conn.execute("select ml.drift_report('regimes', %s, %s, '{\"mode\": \"fast\"}')", (start, end)).fetchone()
        assert row is not None
        reports.append(str(row[0]))
        summary = conn.execute("select summary from ml.drift_reports where id = %s", (row[0],)).fetchone()
        assert summary is not None
        regimes.append(summary[0]["regime"])
    act_for(conn, None)
    assert regimes[0]["matched"] is False and regimes[0]["row_count"] == 400
    assert regimes[1]["matched"] is False and regimes[1]["similar"][0]["report_id"] == reports[0]
    assert regimes[2]["matched"] is True and regimes[2]["match"]["report_id"] == reports[0]
    assert regimes[2]["similar"][0]["dataset_drift"] is False and regimes[2]["similar"][1]["dataset_drift"] is True
    with tenant_context(conn, ref.tenant, user=ref.owner):
        nearest = conn.execute("select report_id::text from ml.similar_windows('regimes', %s)", (reports[2],)).fetchall()
    assert nearest == [(reports[0],), (reports[1],)]


# -- without pgvector ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def novector_url(server: Server) -> Iterator[str]:
    """A database of the full server where pgvector could not be installed: a type named vector
    already in public makes CREATE EXTENSION fail, which the migration tolerates."""
    from pgmlops import migrations

    url = server.empty_database()
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("create domain public.vector as int")
    migrations.upgrade(url)
    yield url
    server.drop(url)


def test_without_pgvector_embeddings_are_arrays_searched_exactly(novector_url: str) -> None:
    with psycopg.connect(novector_url, autocommit=True) as conn:
        assert conn.execute("select ml.capabilities() -> 'vector'").fetchone() == (False,)
        world = World(conn)
        (a, _), (b, _), (a2, back), (c, new) = windows(conn, world, "ABAC", seed=500)
        assert back["search"] == "exact" and back["matched"] is True and back["match"]["report_id"] == a
        assert new["matched"] is False
        with tenant_context(conn, world.id, user=world.viewer):
            rows = conn.execute("select report_id::text, distance from ml.similar_windows(%s, %s, 2)",
                                (world.name, c)).fetchall()
        assert len(rows) == 2 and rows[0][1] <= rows[1][1]
        row = conn.execute("select cardinality(embedding), sqrt((select sum(x * x) from unnest(embedding) x)) "
                           "from ml.window_embeddings where report_id = %s", (a2,)).fetchone()
        assert row is not None and row[0] == 256 and row[1] == pytest.approx(1.0, abs=1e-9)


def test_counts_and_regimes_on_the_embedded_server(embedded_server: Server) -> None:
    """The embedded PostgreSQL 18 (native partitions; pgvector when its build has it): the same
    counts and the same match."""
    url = embedded_server.clone()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            world = World(conn)
            world.log(conn, T0, T0 + timedelta(hours=3), 600, mean=5, sd=3, seed=41)
            world.shadow(conn, T0 + timedelta(minutes=30), 10)
            assert rollup(conn, world) == 600
            assert stored_counts(conn, world) == expected_counts(conn, world)
            regimes = World(conn)   # its windows logged before any rollup, as ml.predict would log them
            (a, _), (_, _), (_, back) = windows(conn, regimes, "ABA", seed=600)
            assert back["matched"] is True and back["match"]["report_id"] == a, back
    finally:
        embedded_server.drop(url)
