"""Feature statistics: ml.compute_feature_stats against numpy and pandas on the same data."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
from psycopg.types.json import Jsonb

from pgmlops.db import tenant_context
from pgmlops.errors import AccessDenied, InvalidInput, NotFound
from pgmlops.features import _stats as feature_stats

from .conftest import act_for, make_tenant

Conn = psycopg.Connection[Any]

SCHEMA = [
    {"name": "amount", "dtype": "float"},
    {"name": "items", "dtype": "int"},
    {"name": "color", "dtype": "category"},
    {"name": "flag", "dtype": "bool"},
    {"name": "seen", "dtype": "timestamp"},
    {"name": "emb", "dtype": "vector(3)"},
]
QUANTILE_LEVELS = {"p1": 0.01, "p5": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95, "p99": 0.99}
START = datetime(2024, 1, 1, tzinfo=UTC)
N = 600


def create_group(conn: Conn, schema: list[dict[str, Any]] | None = None, name: str | None = None) -> str:
    name = name or f"g_{uuid.uuid4().hex[:10]}"
    conn.execute("select ml.create_feature_group(%s, 'card', %s)", (name, Jsonb(schema or SCHEMA)))
    return name


def ingest(conn: Conn, group: str, rows: list[dict[str, Any]]) -> None:
    for i in range(0, len(rows), 5000):
        conn.execute("select ml.ingest(%s, %s)", (group, Jsonb(rows[i:i + 5000])))


def sample_rows(seed: int = 7, n: int = N) -> list[dict[str, Any]]:
    """Rows with every dtype; about a tenth of each feature absent or explicitly null."""
    rng = np.random.default_rng(seed)
    colors = [f"c{i:02d}" for i in range(30)]
    weights = 1 / np.arange(1, 31)
    rows = []
    for i in range(n):
        row: dict[str, Any] = {"card": f"k{i}", "event_time": (START + timedelta(hours=i)).isoformat()}
        values = {
            "amount": float(rng.normal(50, 20)),
            "items": int(rng.integers(-5, 40)),
            "color": str(rng.choice(colors, p=weights / weights.sum())),
            "flag": bool(rng.random() < 0.3),
            "seen": (START + timedelta(seconds=float(rng.uniform(0, 90 * 86400)))).isoformat(),
            "emb": [float(x) for x in rng.normal(0, 1, 3)],
        }
        for name, value in values.items():
            draw = rng.random()
            if draw < 0.05:
                continue  # absent
            row[name] = None if draw < 0.1 else value
        rows.append(row)
    return rows


def present(rows: list[dict[str, Any]], feature: str) -> list[Any]:
    return [r[feature] for r in rows if r.get(feature) is not None]


def stats_rows(conn: Conn, tenant: str) -> int:
    row = conn.execute("select count(*) from ml.feature_stats where tenant_id = %s", (tenant,)).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture(scope="module")
def profiled(db_url: str) -> Iterator[tuple[str, list[dict[str, Any]], dict[str, Any]]]:
    """A tenant whose group holds sample_rows(), profiled once with 20 bins and the top 5 categories.

    The tenant has a second group, and a second version of the first, with other data: neither
    may leak into the profile.
    """
    with psycopg.connect(db_url, autocommit=True) as conn:
        tenant = make_tenant(conn)
        act_for(conn, tenant)
        group = create_group(conn)
        rows = sample_rows()
        ingest(conn, group, rows)
        other = create_group(conn)
        ingest(conn, other, sample_rows(seed=99, n=50))
        create_group(conn, name=group)  # version 2
        ingest(conn, f"{group}@2", sample_rows(seed=98, n=50))
        stats = feature_stats.compute_stats(conn, f"{group}@1", top_categories=5)
        yield tenant, rows, stats


# -- numeric features -------------------------------------------------------------------------------


def test_row_count_covers_only_the_groups_own_version(profiled: tuple[str, list[dict[str, Any]], dict[str, Any]]) -> None:
    _, rows, stats = profiled
    assert stats["rows"] == len(rows) == N
    assert stats["version"] == 1 and stats["group"].endswith("@1")
    assert stats["first_event_time"] == START.isoformat()
    assert stats["last_event_time"] == (START + timedelta(hours=N - 1)).isoformat()


def test_counts_and_nulls_count_absent_keys_and_json_nulls_as_null(profiled: tuple[str, list[dict[str, Any]], dict[str, Any]]) -> None:
    _, rows, stats = profiled
    for name in ("amount", "items", "color", "flag", "seen", "emb"):
        values = pd.Series([r.get(name) for r in rows], dtype=object)
        feature = stats["features"][name]
        assert (feature["count"], feature["nulls"], feature["invalid"]) == (values.notna().sum(), values.isna().sum(), 0), name


def test_mean_and_sample_std_match_numpy_with_ddof_1(profiled: tuple[str, list[dict[str, Any]], dict[str, Any]]) -> None:
    _, rows, stats = profiled
    for name in ("amount", "items"):
        x = np.array(present(rows, name), dtype=float)
        feature = stats["features"][name]
        assert feature["mean"] == pytest.approx(x.mean(), rel=1e-12)
        assert feature["std"] == pytest.approx(x.std(ddof=1), rel=1e-12)
        assert feature["std"] == pytest.approx(pd.Series(x).std(), rel=1e-12)  # pandas' default ddof
        assert (feature["min"], feature["max"]) == (x.min(), x.max())


def test_quantiles_match_numpy_linear_interpolation(profiled: tuple[str, list[dict[str, Any]], dict[str, Any]]) -> None:
    _, rows, stats = profiled
    for name in ("amount", "items"):
        x = np.array(present(rows, name), dtype=float)
        quantiles = stats["features"][name]["quantiles"]
        for key, level in QUANTILE_LEVELS.items():
            assert quantiles[key] == pytest.approx(np.quantile(x, level, method="linear"), rel=1e-12, abs=1e-12), (name, key)


def test_histogram_edges_and_counts_equal_numpy_histogram(profiled: tuple[str, list[dict[str, Any]], dict[str, Any]]) -> None:
    _, rows, stats = profiled
    for name in ("amount", "items"):
        x = np.array(present(rows, name), dtype=float)
        counts, edges = np.histogram(x, bins=20)
        histogram = stats["features"][name]["histogram"]
        assert histogram["edges"] == edges.tolist(), name  # bit for bit
        assert histogram["counts"] == counts.tolist(), name


def test_histogram_of_integers_puts_the_maximum_in_the_last_bin(conn: Conn, tenant: str) -> None:
    group = create_group(conn, [{"name": "n", "dtype": "int"}])
    ingest(conn, group, [{"card": f"k{i}", "event_time": "2024-01-01T00:00:00Z", "n": v} for i, v in enumerate([0, 1, 2, 3, 4, 4])])
    histogram = feature_stats.compute_stats(conn, group, bins=4)["features"]["n"]["histogram"]
    counts, edges = np.histogram([0, 1, 2, 3, 4, 4], bins=4)
    assert histogram == {"edges": edges.tolist(), "counts": counts.tolist()} == {"edges": [0, 1, 2, 3, 4], "counts": [1, 1, 1, 3]}


def test_constant_feature_histogram_spans_the_value_plus_and_minus_a_half(conn: Conn, tenant: str) -> None:
    group = create_group(conn, [{"name": "x", "dtype": "float"}])
    ingest(conn, group, [{"card": f"k{i}", "event_time": "2024-01-01T00:00:00Z", "x": 7.25} for i in range(3)])
    feature = feature_stats.compute_stats(conn, group, bins=5)["features"]["x"]
    counts, edges = np.histogram([7.25] * 3, bins=5)
    assert feature["histogram"] == {"edges": edges.tolist(), "counts": counts.tolist()}
    assert feature["histogram"]["edges"][0] == 6.75 and feature["histogram"]["edges"][-1] == 7.75
    assert feature["std"] == 0


def test_single_value_has_no_sample_std(conn: Conn, tenant: str) -> None:
    group = create_group(conn, [{"name": "x", "dtype": "float"}])
    ingest(conn, group, [{"card": "k", "event_time": "2024-01-01T00:00:00Z", "x": 3.5}])
    feature = feature_stats.compute_stats(conn, group)["features"]["x"]
    assert (feature["count"], feature["mean"], feature["std"], feature["quantiles"]["p99"]) == (1, 3.5, None, 3.5)


def test_feature_with_no_values_has_counts_but_no_moments(conn: Conn, tenant: str) -> None:
    group = create_group(conn, [{"name": "x", "dtype": "float"}, {"name": "c", "dtype": "category"}])
    ingest(conn, group, [{"card": "k", "event_time": "2024-01-01T00:00:00Z"}])
    features = feature_stats.compute_stats(conn, group)["features"]
    assert features["x"] == {"dtype": "float", "count": 0, "nulls": 1, "invalid": 0, "mean": None, "std": None,
                             "min": None, "max": None, "quantiles": None, "histogram": None}
    assert features["c"] == {"dtype": "category", "count": 0, "nulls": 1, "invalid": 0, "distinct": 0,
                             "frequencies": {}, "other": 0, "other_distinct": 0}


def test_group_without_values_gets_an_empty_snapshot(conn: Conn, tenant: str) -> None:
    group = create_group(conn, [{"name": "x", "dtype": "float"}])
    stats = feature_stats.compute_stats(conn, group)
    assert (stats["rows"], stats["first_event_time"], stats["features"]["x"]["count"]) == (0, None, 0)


# -- categorical features -------------------------------------------------------------------------


def test_category_frequencies_keep_the_top_n_and_count_the_rest_as_other(
        profiled: tuple[str, list[dict[str, Any]], dict[str, Any]]) -> None:
    _, rows, stats = profiled
    counts = Counter(present(rows, "color"))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    feature = stats["features"]["color"]
    assert feature["frequencies"] == dict(ranked[:5])
    assert feature["other"] == sum(n for _, n in ranked[5:])
    assert (feature["distinct"], feature["other_distinct"]) == (len(counts), len(counts) - 5)


def test_category_ties_at_the_cut_go_to_the_smaller_value(conn: Conn, tenant: str) -> None:
    group = create_group(conn, [{"name": "c", "dtype": "text"}])
    values = ["b", "a", "c", "c", "B"]
    ingest(conn, group, [{"card": f"k{i}", "event_time": "2024-01-01T00:00:00Z", "c": v} for i, v in enumerate(values)])
    feature = feature_stats.compute_stats(conn, group, top_categories=2)["features"]["c"]
    # byte order: "B" < "a" < "b"
    assert (feature["frequencies"], feature["other"], feature["other_distinct"]) == ({"c": 2, "B": 1}, 2, 2)


def test_bool_frequencies_have_both_values_and_the_mean_is_the_fraction_true(
        profiled: tuple[str, list[dict[str, Any]], dict[str, Any]]) -> None:
    _, rows, stats = profiled
    flags = present(rows, "flag")
    feature = stats["features"]["flag"]
    assert feature["frequencies"] == {"true": flags.count(True), "false": flags.count(False)}
    assert feature["mean"] == pytest.approx(np.mean(flags), rel=1e-12)


# -- timestamps and vectors -----------------------------------------------------------------------


def test_timestamp_stats_are_timestamps_matching_pandas(profiled: tuple[str, list[dict[str, Any]], dict[str, Any]]) -> None:
    _, rows, stats = profiled
    seen = pd.Series(pd.to_datetime(present(rows, "seen"), utc=True))
    feature = stats["features"]["seen"]
    assert pd.Timestamp(feature["min"]) == seen.min() and pd.Timestamp(feature["max"]) == seen.max()
    assert abs(pd.Timestamp(feature["mean"]) - seen.mean()) <= pd.Timedelta(microseconds=1)
    for key, level in QUANTILE_LEVELS.items():
        assert abs(pd.Timestamp(feature["quantiles"][key]) - seen.quantile(level)) <= pd.Timedelta(microseconds=1), key
    epoch = np.array([t.timestamp() for t in seen])
    assert feature["std_seconds"] == pytest.approx(epoch.std(ddof=1), rel=1e-9)
    counts, edges = np.histogram(epoch, bins=20)
    assert feature["histogram"]["unit"] == "epoch_seconds"
    assert feature["histogram"]["counts"] == counts.tolist()
    assert feature["histogram"]["edges"] == pytest.approx(edges.tolist(), rel=1e-15)


def test_vector_stats_are_over_l2_norms(profiled: tuple[str, list[dict[str, Any]], dict[str, Any]]) -> None:
    _, rows, stats = profiled
    # Vectors are stored as pgvector's vector: single-precision elements (docs/features.md).
    norms = np.linalg.norm(np.array(present(rows, "emb"), dtype=np.float32).astype(np.float64), axis=1)
    feature = stats["features"]["emb"]
    assert (feature["measure"], feature["dim"]) == ("l2_norm", 3)
    assert feature["mean"] == pytest.approx(norms.mean(), rel=1e-12)
    assert feature["std"] == pytest.approx(norms.std(ddof=1), rel=1e-12)
    assert feature["quantiles"]["p50"] == pytest.approx(np.median(norms), rel=1e-12)
    assert feature["histogram"]["counts"] == np.histogram(norms, bins=20)[0].tolist()


# -- windows, storage, events -------------------------------------------------------------------


def test_time_window_includes_since_and_excludes_until(conn: Conn, tenant: str) -> None:
    group = create_group(conn, [{"name": "x", "dtype": "float"}])
    ingest(conn, group, [{"card": f"k{i}", "event_time": (START + timedelta(days=i)).isoformat(), "x": float(i)}
                         for i in range(10)])
    stats = feature_stats.compute_stats(conn, group, since=START + timedelta(days=2), until=START + timedelta(days=5))
    assert (stats["rows"], stats["features"]["x"]["min"], stats["features"]["x"]["max"]) == (3, 2, 4)
    assert stats["since"] == (START + timedelta(days=2)).isoformat()


def test_snapshot_is_stored_and_latest_returns_the_newest(conn: Conn, tenant: str) -> None:
    group = create_group(conn, [{"name": "x", "dtype": "float"}])
    ingest(conn, group, [{"card": "a", "event_time": "2024-01-01T00:00:00Z", "x": 1.0}])
    assert feature_stats.latest_stats(conn, group) is None
    first = feature_stats.compute_stats(conn, group)
    ingest(conn, group, [{"card": "b", "event_time": "2024-01-02T00:00:00Z", "x": 3.0}])
    second = feature_stats.compute_stats(conn, group)
    latest = feature_stats.latest_stats(conn, group)
    assert latest == second and latest["id"] != first["id"]
    assert latest["features"]["x"]["mean"] == 2
    stored = conn.execute("select row_count, stats from ml.feature_stats where id = %s", (second["id"],)).fetchone()
    assert stored == (2, second["features"])


def test_compute_publishes_feature_stats_computed(conn: Conn, tenant: str) -> None:
    group = create_group(conn, [{"name": "x", "dtype": "float"}])
    stats = feature_stats.compute_stats(conn, group)
    row = conn.execute("select topic, payload from ml.events where tenant_id = %s and event = 'feature_stats.computed'",
                       (tenant,)).fetchone()
    assert row is not None
    assert row[0] == "features"
    assert row[1] == {"stats_id": stats["id"], "group_id": stats["group_id"], "name": group, "version": 1, "rows": 0}


def test_stored_edges_rebin_the_same_values_to_the_stored_counts(
        conn: Conn, profiled: tuple[str, list[dict[str, Any]], dict[str, Any]]) -> None:
    _, rows, stats = profiled
    histogram = stats["features"]["amount"]["histogram"]
    values = present(rows, "amount")
    row = conn.execute("select ml_private.histogram_counts(%s::float8[], %s::float8[])",
                       (histogram["edges"], [*values, None, -1e9, 1e9])).fetchone()
    assert row is not None
    assert row[0] == {"counts": histogram["counts"], "below": 1, "above": 1, "nulls": 1}


def test_summary_is_one_row_per_feature(profiled: tuple[str, list[dict[str, Any]], dict[str, Any]]) -> None:
    _, rows, stats = profiled
    summary = feature_stats.stats_summary(stats)
    assert list(summary.index) == sorted(stats["features"])
    assert summary.loc["amount", "mean"] == stats["features"]["amount"]["mean"]
    assert summary.loc["amount", "null_fraction"] == stats["features"]["amount"]["nulls"] / N
    assert summary.loc["color", "top"] == Counter(present(rows, "color")).most_common(1)[0][0]
    assert summary.loc["seen", "std"] == stats["features"]["seen"]["std_seconds"]


# -- errors: SQLSTATE, and nothing written ------------------------------------------------------------


def test_unknown_group_raises_not_found_and_writes_nothing(conn: Conn, tenant: str) -> None:
    with pytest.raises(NotFound) as err:
        feature_stats.compute_stats(conn, "no_such_group")
    assert err.value.sqlstate == "P0002"
    assert stats_rows(conn, tenant) == 0


@pytest.mark.parametrize("bins", [0, 1001, None])
def test_bins_out_of_range_raise_22023_and_write_nothing(conn: Conn, tenant: str, bins: int | None) -> None:
    group = create_group(conn, [{"name": "x", "dtype": "float"}])
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="bins: must be 1 to 1000"):
        conn.execute("select ml.compute_feature_stats(%s, bins => %s)", (group, bins))
    assert stats_rows(conn, tenant) == 0


def test_top_categories_out_of_range_raise_22023(conn: Conn, tenant: str) -> None:
    group = create_group(conn, [{"name": "x", "dtype": "float"}])
    with pytest.raises(InvalidInput, match="top_categories") as err:
        feature_stats.compute_stats(conn, group, top_categories=0)
    assert err.value.sqlstate == "22023"
    assert stats_rows(conn, tenant) == 0


def test_since_not_before_until_raises_22023(conn: Conn, tenant: str) -> None:
    group = create_group(conn, [{"name": "x", "dtype": "float"}])
    with pytest.raises(InvalidInput, match="since"):
        feature_stats.compute_stats(conn, group, since=START, until=START)
    assert stats_rows(conn, tenant) == 0


def test_latest_of_an_unknown_group_raises_not_found(conn: Conn, tenant: str) -> None:
    with pytest.raises(NotFound):
        feature_stats.latest_stats(conn, "no_such_group")


# -- who may compute and read ---------------------------------------------------------------------


def _tenant_with_members(conn: Conn) -> tuple[str, str, str, str]:
    """A tenant with an owner and a viewer, and a group profiled once; returns (tenant, owner, viewer, group)."""
    owner, viewer = str(uuid.uuid4()), str(uuid.uuid4())
    tenant = make_tenant(conn)
    conn.execute("select ml.add_tenant_member(%s, %s, 'owner'), ml.add_tenant_member(%s, %s, 'viewer')",
                 (tenant, owner, tenant, viewer))
    act_for(conn, tenant)
    group = create_group(conn, [{"name": "x", "dtype": "float"}])
    ingest(conn, group, [{"card": "a", "event_time": "2024-01-01T00:00:00Z", "x": 1.0}])
    feature_stats.compute_stats(conn, group)
    act_for(conn, None)
    return tenant, owner, viewer, group


def test_viewer_reads_stats_but_may_not_compute(conn: Conn) -> None:
    tenant, _, viewer, group = _tenant_with_members(conn)
    with tenant_context(conn, tenant, user=viewer):
        assert feature_stats.latest_stats(conn, group) is not None
        assert conn.execute("select count(*) from ml.feature_stats").fetchone() == (1,)
    with pytest.raises(AccessDenied), tenant_context(conn, tenant, user=viewer):
        feature_stats.compute_stats(conn, group)
    assert stats_rows(conn, tenant) == 1


def test_member_with_a_writing_role_computes(conn: Conn) -> None:
    tenant, owner, _, group = _tenant_with_members(conn)
    with tenant_context(conn, tenant, user=owner):
        stats = feature_stats.compute_stats(conn, group)
    assert stats["rows"] == 1 and stats_rows(conn, tenant) == 2


def test_another_tenant_cannot_see_the_stats(conn: Conn) -> None:
    _, _, _, group = _tenant_with_members(conn)
    stranger = str(uuid.uuid4())
    theirs = make_tenant(conn)
    conn.execute("select ml.add_tenant_member(%s, %s, 'owner')", (theirs, stranger))
    with tenant_context(conn, theirs, user=stranger):
        assert conn.execute("select count(*) from ml.feature_stats").fetchone() == (0,)
        with pytest.raises(NotFound):
            feature_stats.latest_stats(conn, group)


# -- without TimescaleDB --------------------------------------------------------------------------


def test_stats_compute_on_native_partitions_too(any_db_url: str) -> None:
    with psycopg.connect(any_db_url, autocommit=True) as conn:
        tenant = make_tenant(conn)
        act_for(conn, tenant)
        group = create_group(conn, [{"name": "x", "dtype": "float"}])
        # Written as the owner, straight into the offline table (and so the default partition and the
        # ones made ahead): this test is about reading them.
        table = conn.execute("select offline_table::text from ml.feature_groups where name = %s", (group,)).fetchone()[0]  # type: ignore[index]
        conn.execute(f"""insert into {table} (tenant_id, entity_key, event_time, x)
                         select %s, 'k' || i, %s + i * interval '40 days', i from generate_series(0, 4) i""", (tenant, START))
        stats = feature_stats.compute_stats(conn, group, bins=2)
    assert stats["features"]["x"]["histogram"] == {"edges": [0, 2, 4], "counts": [2, 3]}
