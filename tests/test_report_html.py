"""The HTML monitoring report (pgmlops.reporting, `pgmlops report`): a project deployed, redeployed,
rolled back and deployed again, with predictions logged and made by ml.predict, feedback on them, and two
drift reports (a steady window, then a drifted one); the page is one self-contained file whose
figures are the SQL documents' figures, and it renders in headless Chromium (Debian's
`chromium`, provisioned by scripts/test.sh) with no console errors and every plot drawn."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb
from typer.testing import CliRunner

from pgmlops import reporting
from pgmlops.cli import app
from pgmlops.db import tenant_context
from pgmlops.errors import AccessDenied, InvalidInput, NotFound

from .compile_helpers import one
from .conftest import act_for, make_tenant
from .test_reference_profiles import Reference, features_of, frame
from .training_data import member

Conn = psycopg.Connection[Any]

NOW = datetime.now(UTC).replace(microsecond=0)
STEADY = (NOW - timedelta(hours=3), NOW - timedelta(hours=2))


class World:
    """Project 'report_demo': a 600-row reference; deployed (single), redeployed (blue_green), rolled back,
    deployed again; a
    steady window of 300 logged predictions with feedback; a drifted window of 120 predictions
    made by ml.predict now, with feedback from ml.record_feedback; a drift report of each."""

    def __init__(self, conn: Conn) -> None:
        self.ref = Reference(conn, "report_demo", frame(600, 1))
        self.ref.model()
        self.tenant = self.ref.tenant
        arms = [{"arm": "b", "model": "report_demo", "version": 1}]
        conn.execute("select ml.deploy('report_demo', 'blue_green', %s, '{\"reason\": \"switch to arm b\"}')", (Jsonb(arms),))
        conn.execute("select ml.rollback('report_demo')")
        conn.execute("select ml.deploy('report_demo', 'single', %s, '{\"reason\": \"back on arm c\"}')",
                     (Jsonb([{"arm": "c", "model": "report_demo", "version": 1}]),))
        steady = frame(300, 2)
        ids = self.ref.log(steady, STEADY[0] + timedelta(minutes=30))
        conn.execute("select ml.record_feedback_bulk(%s)",
                     (Jsonb([{"prediction_id": i, "label": int(c)} for i, c in zip(ids, steady["churned"], strict=True)]),))
        drifted = frame(120, 3, shift=1.5, tiers=(0.1, 0.2, 0.7), vip=0.8)
        start = datetime.now(UTC)
        for features, label in zip(features_of(drifted), drifted["churned"], strict=True):
            made = one(conn, "select ml.predict('report_demo', %s)", Jsonb(features))
            conn.execute("select ml.record_feedback(%s, %s)", (made["prediction_id"], Jsonb(int(label))))
        self.drifted_window = (start - timedelta(minutes=1), datetime.now(UTC) + timedelta(minutes=1))
        self.steady_report = str(one(conn, "select ml.drift_report('report_demo', %s, %s)", *STEADY))
        self.drifted_report = str(one(conn, "select ml.drift_report('report_demo', %s, %s, %s)", *self.drifted_window,
                                      Jsonb({"performance": {"accuracy": {"lower": 0.95, "upper": 0.99}, "roc_auc": {"lower": 0.5}}})))
        self.latest = dict(one(conn, "select ml.drift_report_document(%s)", self.drifted_report))
        self.shares = [one(conn, "select (ml.drift_report_document(%s) ->> 'drift_share')::float8", r)
                       for r in (self.steady_report, self.drifted_report)]
        self.similar = conn.execute("select * from ml.similar_windows('report_demo', %s)", (self.drifted_report,)).fetchall()
        self.similar = [{"distance": r[3]} for r in self.similar]
        self.history = one(conn, "select ml.deployment_history('report_demo')")
        act_for(conn, None)


@pytest.fixture(scope="module")
def world(db_url: str) -> World:
    with psycopg.connect(db_url, autocommit=True) as conn:
        return World(conn)


@pytest.fixture(scope="module")
def page(db_url: str, world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    steps: list[str] = []
    with psycopg.connect(db_url, autocommit=True) as conn:
        path = reporting.write_report(conn, "report_demo", tmp_path_factory.mktemp("report") / "report.html",
                                      tenant=world.tenant, progress=steps.append)
    assert steps[0].startswith("deployments") and steps[-1].startswith("writing")
    return path


def sections(text: str) -> list[str]:
    return re.findall(r'<section class="figure" data-figure="([^"]+)">', text)


# -- the file ----------------------------------------------------------------------------------


def test_the_page_is_one_self_contained_file_with_plotly_inlined_once(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert text.count("plotly.js v") >= 1 and len(re.findall(r"<script[^>]*\bsrc=", text)) == 0
    assert text.partition("</head>")[2].count("Plotly.newPlot(") == len(sections(text))
    # plotly.js once: its license banner is at its head.
    assert len(re.findall(r"\* plotly\.js v\d", text)) == 1
    # Nothing to fetch outside plotly.js (which names URLs of map layers this page has none of).
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", text.partition("</head>")[2])
    assert not (page.parent / ".report.html.partial").exists()


def test_the_figures_are_those_of_the_sql_documents(page: Path, world: World) -> None:
    text = page.read_text(encoding="utf-8")
    latest = world.latest
    assert latest["dataset_drift"] is True and latest["mode"] == "exact"
    drifted = [r for r in latest["results"] if r["drifted"]]
    assert len([r for r in drifted if r["role"] == "input"]) == latest["drifted_features"] >= 3
    names = sections(text)
    assert names == [f"distribution:{r['role']}:{r['feature']}:{r['test']}" for r in drifted] + \
        ["drift-over-time", "performance", "deployments", "similar-windows"]
    # The header states the latest verdict.
    verdict = re.search(r'<div class="verdict drift" id="verdict">(.*?)</div>', text)
    assert verdict is not None
    assert f"{latest['drifted_features']} of {latest['features_tested']} inputs drifted" in verdict.group(1)
    assert "mode exact" in verdict.group(1)
    # A categorical feature's bars: the document's counts, as shares of each side.
    figures = figure_data(text)
    tier = next(r for r in drifted if r["feature"] == "tier")
    bars = figures[names.index(f"distribution:input:tier:{tier['test']}")]
    ref, cur = tier["details"]["reference_counts"], tier["details"]["current_counts"]
    assert bars[0]["x"] == sorted(ref, key=lambda k: (-ref[k], -cur.get(k, 0), k))
    assert bars[0]["y"] == pytest.approx([ref[k] / sum(ref.values()) for k in bars[0]["x"]])
    assert bars[1]["y"] == pytest.approx([cur.get(k, 0) / sum(cur.values()) for k in bars[1]["x"]])
    # A numeric feature counted by bin: labelled by the reference's edges, underflow first.
    amount = next(r for r in latest["results"] if r["feature"] == "amount" and r["role"] == "input")
    assert amount["drifted"] and amount["details"]["counted_by"] == "bin"
    bars = figures[names.index(f"distribution:input:amount:{amount['test']}")]
    edges, counts = amount["details"]["edges"], amount["details"]["current_counts"]
    assert bars[0]["x"][0] == f"< {edges[0]:.4g}" and bars[0]["x"][1].startswith(f"[{edges[0]:.4g}, ")
    assert f"[{edges[-2]:.4g}, {edges[-1]:.4g}]" in bars[0]["x"]
    assert sum(bars[1]["customdata"]) == sum(counts.values()) == amount["row_count"] - amount["nulls"]
    # Drift over time: both reports, oldest first; the drift shares are the documents'.
    over_time = figures[names.index("drift-over-time")]
    assert over_time[0]["y"] == pytest.approx(world.shares)
    assert over_time[0]["y"][0] < 0.5 <= over_time[0]["y"][1]
    # Performance: realized accuracy per bucket, over both reports' buckets.
    perf = figures[names.index("performance")]
    realized = [t for t in perf if t.get("name") == "realized"]
    rows = [p for p in latest["performance"] if not p["estimated"] and p["metric"] == "accuracy" and p["value"] is not None]
    assert realized and rows
    accuracy = realized[sorted({p["metric"] for p in latest["performance"]}).index("accuracy")]
    for row in rows:
        at = accuracy["x"].index(row["bucket_start"])
        assert row["value"] == pytest.approx(accuracy["y"][at])
        assert (accuracy["marker"]["color"][at] == "#d62728") == row["alert"]
    assert any(row["alert"] for row in rows)
    # The bounds set in the options: accuracy's band shaded (first panel), roc_auc's floor dashed (fifth).
    latest_buckets = {row["bucket_start"] for row in rows}
    band = [t for t in perf if t.get("name") == "realized lower bound" and t.get("fill") == "tonexty"
            and t.get("yaxis", "y") == "y" and latest_buckets <= set(t["x"])]
    assert len(band) == 1 and set(band[0]["y"]) == {0.95}
    upper = [t for t in perf if t.get("name") == "realized upper bound" and t.get("x") == band[0]["x"]]
    assert len(upper) == 1 and set(upper[0]["y"]) == {0.99}
    floor = [t for t in perf if t.get("name") == "realized lower bound" and t.get("yaxis") == "y5"]
    assert len(floor) == 1 and floor[0]["line"]["dash"] == "dash" and 0.5 in floor[0]["y"]
    # Deployments: three, one rolled back (marked), one superseded, the active one.
    deployments = figures[names.index("deployments")]
    assert {t["name"] for t in deployments if t.get("type") == "bar"} == {"active", "rolled_back", "superseded"}
    assert [t for t in deployments if t.get("name") == "rollback / abort"][0]["text"][0].startswith("rolled_back")
    for trace in (t for t in deployments if t.get("type") == "bar"):
        history = [d for d in world.history if d["status"] == trace["name"]]
        assert [datetime.fromisoformat(b) for b in trace["base"]] == \
            [datetime.fromisoformat(d["activated_at"] or d["created_at"]) for d in reversed(history)]
    # Similar windows: ml.similar_windows of the latest report (the steady window is its past).
    similar = figures[names.index("similar-windows")]
    assert similar[0]["x"] == pytest.approx([s["distance"] for s in world.similar])
    assert len(world.similar) == 1


def figure_data(text: str) -> list[list[dict[str, Any]]]:
    """The traces of each figure, from the page's Plotly.newPlot calls, in page order."""
    out = []
    body = text.partition("</head>")[2]
    for match in re.finditer(r'Plotly\.newPlot\(\s*"[^"]+",\s*', body):
        traces, _ = json.JSONDecoder().raw_decode(body, match.end())
        out.append(traces)
    return out


# -- in Chromium --------------------------------------------------------------------------------


def render(path: Path, tmp: Path) -> tuple[str, list[str]]:
    """``path`` loaded in headless Chromium with the network shut: the DOM after the scripts ran,
    and every console message (Chromium logs them all at one level: any is a failure)."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed (scripts/test.sh installs Debian's chromium package)")
    done = subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--user-data-dir={tmp / 'profile'}",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=15000",
         "--window-size=1280,2000", "--dump-dom", path.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done.stdout, console


def drawn(dom: str) -> dict[str, tuple[int, int]]:
    """Per figure section of the rendered DOM: plotly's svg layers and the traces drawn in them."""
    parts = re.split(r'<section class="figure" data-figure="([^"]+)">', dom)
    return {html.unescape(name): (body.count('class="main-svg"'), len(re.findall(r'class="trace ', body)))
            for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def test_chromium_renders_every_plot_with_no_console_errors(page: Path, tmp_path: Path) -> None:
    dom, console = render(page, tmp_path)
    assert console == []
    figures = drawn(dom)
    assert list(figures) == sections(page.read_text(encoding="utf-8"))
    for name, (layers, traces) in figures.items():
        assert layers >= 1 and traces >= 1, (name, layers, traces)


def test_the_check_sees_a_script_error_and_an_undrawn_plot(page: Path, tmp_path: Path) -> None:
    """The renderer check fails when it should: a page whose plots never run (plotly.js missing)."""
    text = page.read_text(encoding="utf-8")
    broken = tmp_path / "broken.html"
    head, _, rest = text.partition('<script type="text/javascript">')
    broken.write_text(head + '<script type="text/javascript">/* plotly.js removed */' + rest.partition("</script>")[2],
                      encoding="utf-8")
    dom, console = render(broken, tmp_path)
    assert any("Plotly is not defined" in line for line in console)
    assert all(layers == 0 for layers, _ in drawn(dom).values())


# -- errors and the command line -----------------------------------------------------------------


def test_unknown_projects_bad_arguments_and_projects_without_reports_write_nothing(db_url: str, world: World,
                                                                                    tmp_path: Path) -> None:
    target = tmp_path / "r.html"
    with psycopg.connect(db_url, autocommit=True) as conn:
        with pytest.raises(NotFound, match="nope"):
            reporting.write_report(conn, "nope", target, tenant=world.tenant)
        with pytest.raises(InvalidInput, match="reports: must be a whole number between 1 and 500"):
            reporting.write_report(conn, "report_demo", target, tenant=world.tenant, reports=0)
        with pytest.raises(InvalidInput, match="since: must be a time with a time zone"):
            reporting.write_report(conn, "report_demo", target, tenant=world.tenant, since=datetime(2026, 1, 1))
        with pytest.raises(NotFound, match="has no drift reports ending after"):
            reporting.write_report(conn, "report_demo", target, tenant=world.tenant, since=NOW + timedelta(days=1))
        with tenant_context(conn, world.tenant):
            conn.execute("select ml.create_project('unwatched', 'classification', 'churned')")
        with pytest.raises(NotFound, match="'unwatched' has no drift reports"):
            reporting.write_report(conn, "unwatched", target, tenant=world.tenant)
    assert list(tmp_path.iterdir()) == []


def test_since_and_reports_choose_the_reports_shown(db_url: str, world: World) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        one_report = reporting.render_report(conn, "report_demo", tenant=world.tenant, reports=1)
        since = reporting.render_report(conn, "report_demo", tenant=world.tenant, since=STEADY[1] + timedelta(minutes=1))
    for text in (one_report, since):
        over_time = figure_data(text)[sections(text).index("drift-over-time")]
        assert over_time[0]["y"] == pytest.approx(world.shares[1:])
        assert "1 report(s) shown" in text


def test_pgmlops_report_writes_the_file(db_url: str, world: World, tmp_path: Path) -> None:
    target = tmp_path / "cli.html"
    result = CliRunner().invoke(app, ["--database-url", db_url, "report", "--project", "report_demo", "--out", str(target),
                                      "--tenant", world.tenant, "--reports", "5"])
    assert result.exit_code == 0, result.output
    assert "report written to" in result.output and target.stat().st_size > 1_000_000
    assert sections(target.read_text(encoding="utf-8"))[-1] == "similar-windows"
    bad = CliRunner().invoke(app, ["--database-url", db_url, "report", "--project", "report_demo", "--out", str(target),
                                   "--tenant", world.tenant, "--since", "yesterday"])
    assert bad.exit_code == 2 and "expected an ISO 8601 time" in bad.output
    unknown = subprocess.run([sys.executable, "-m", "pgmlops", "--database-url", db_url, "report", "--project", "nope", "--out",
                              str(tmp_path / "none.html"), "--tenant", world.tenant], capture_output=True, text=True, check=False)
    assert unknown.returncode == 2 and "error [P0002]" in unknown.stderr and "nope" in unknown.stderr
    assert not (tmp_path / "none.html").exists()


def test_a_viewer_may_read_it_and_a_non_member_may_not(db_url: str, world: World) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        viewer = member(conn, world.tenant, "viewer")
        with tenant_context(conn, world.tenant, user=viewer):
            text = reporting.render_report(conn, "report_demo")
        assert sections(text)[-1] == "similar-windows" and "2 report(s) shown" in text
        stranger = make_tenant(conn)
        outsider = member(conn, stranger, "owner")
        with pytest.raises(AccessDenied), tenant_context(conn, world.tenant, user=outsider):
            reporting.render_report(conn, "report_demo")
        with pytest.raises(NotFound), tenant_context(conn, stranger):
            reporting.render_report(conn, "report_demo")      # another tenant's project is no project
