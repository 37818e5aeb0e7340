"""The HTML monitoring report of a project: one self-contained file (docs/monitoring.md, "Reports").

Every figure is drawn from what the SQL API returns, never recomputed in Python:
``ml.drift_report_document`` of the project's recent reports (verdicts, per-feature counts on
the reference's bins or by category, statistics, performance rows with their bands),
``ml.alerts`` (the open and acknowledged alerts), ``ml.deployment_history`` (strategies, arms,
rollbacks, aborts) and ``ml.similar_windows`` of the latest report. Which reports: the
project's newest ``reports`` (by window end), those ending after ``since`` when given, listed
from ``ml.drift_reports`` in the acting tenant (``ml.current_tenant()``).

The page holds plotly.js once (inlined: no network, no CDN) and one ``div.plotly-graph-div``
per figure inside a ``section.figure`` whose ``data-figure`` names it.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import plotly.graph_objects as go  # type: ignore[import-untyped]
import psycopg
from plotly.offline import get_plotlyjs  # type: ignore[import-untyped]
from plotly.subplots import make_subplots  # type: ignore[import-untyped]

from pgmlops import monitoring, scoring
from pgmlops.db import sql_errors, tenant_context
from pgmlops.errors import InvalidInput, NotFound

__all__ = ["render_report", "write_report"]

Progress = Callable[[str], None]
TenantId = UUID | str | None

_MAX_REPORTS = 500
_REFERENCE_COLOUR = "#8c8c8c"
_CURRENT_COLOUR = "#1f77b4"
_DRIFT_COLOUR = "#d62728"
_STATUS_COLOURS = {"active": "#2ca02c", "superseded": "#1f77b4", "rolled_back": "#ff7f0e", "aborted": "#d62728"}
_SEVERITY_CLASSES = {"critical": "critical", "warning": "warning", "info": "info"}
_ROLES = ("input", "prediction", "score", "label")

_REPORTS_SQL = """
select r.id
from ml.drift_reports r
join ml.projects p on p.id = r.project_id and p.tenant_id = r.tenant_id
where r.tenant_id = ml.current_tenant() and p.name = %s
  and (%s::timestamptz is null or r.window_end > %s::timestamptz)
order by r.window_end desc, r.created_at desc, r.id
limit %s
"""


@dataclass
class _Data:
    """What the page shows, as the SQL API returned it."""

    project: str
    documents: list[dict[str, Any]]                   # newest first
    alerts: list[dict[str, Any]]
    deployments: list[dict[str, Any]]                 # newest first
    similar: list[dict[str, Any]] = field(default_factory=list)
    similar_reason: str | None = None
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@contextmanager
def _acting(conn: psycopg.Connection[Any], tenant: TenantId) -> Iterator[psycopg.Connection[Any]]:
    with tenant_context(conn, tenant) if tenant is not None else nullcontext(conn):
        yield conn


def _collect(conn: psycopg.Connection[Any], project: str, tenant: TenantId, reports: int, since: datetime | None,
             progress: Progress) -> _Data:
    if isinstance(reports, bool) or not isinstance(reports, int) or not 1 <= reports <= _MAX_REPORTS:
        raise InvalidInput(f"reports: must be a whole number between 1 and {_MAX_REPORTS}, got {reports!r}", "22023")
    if since is not None and since.tzinfo is None:
        raise InvalidInput(f"since: must be a time with a time zone (an aware datetime), got {since.isoformat()}", "22023")
    with _acting(conn, tenant):
        progress(f"deployments of {project}")
        deployments = scoring.deployment_history(conn, project)        # NotFound for an unknown project
        progress("listing the drift reports")
        with sql_errors():
            ids = [row[0] for row in conn.execute(_REPORTS_SQL, (project, since, since, reports)).fetchall()]
        if not ids:
            when = f" ending after {since.isoformat()}" if since is not None else ""
            raise NotFound(f"project {project!r} has no drift reports{when}: make one first (ml.drift_report, "
                           "`pgmlops monitor report`)", "P0002")
        documents = []
        for n, report_id in enumerate(ids, 1):
            progress(f"report {n} of {len(ids)}")
            documents.append(monitoring.drift_report_document(conn, report_id))
        progress("open alerts")
        alerts = monitoring.alerts(conn, project, "active")
        data = _Data(project, documents, alerts, deployments)
        progress("similar past windows")
        try:
            data.similar = monitoring.similar_windows(conn, project, ids[0], 5)
        except NotFound as exc:
            data.similar_reason = exc.message
    return data


# -- values -------------------------------------------------------------------------------------


def _float(value: Any) -> float | None:
    """A number from a document (jsonb numbers; 'Infinity' / 'NaN' text) or None; infinities and
    NaN are None too (plotted as gaps, said in the hover text)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "∞" if number > 0 else "-∞"
    return f"{number:.4g}"


def _when(value: Any) -> str:
    return str(value or "")[:16].replace("T", " ")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _measure(result: dict[str, Any]) -> tuple[str, Any]:
    """What a result's test decides on: the p-value for the p-value tests, else the statistic."""
    if result.get("p_value") is not None:
        return "p-value", result.get("p_value")
    return "statistic", result.get("statistic")


def _label(result: dict[str, Any]) -> str:
    role = str(result.get("role") or "input")
    feature = str(result.get("feature"))
    return feature if role == "input" else f"{role}: {feature}"


# -- figures ------------------------------------------------------------------------------------


def _layout(fig: Any, title: str, height: int) -> Any:
    fig.update_layout(title={"text": title, "x": 0.01}, height=height, margin={"l": 70, "r": 30, "t": 70, "b": 50},
                      template="plotly_white", legend={"orientation": "h", "y": -0.15})
    return fig


def _bins(details: dict[str, Any]) -> tuple[list[str], list[float], list[float]]:
    """Labels, reference counts and current counts of a result's ``details`` in plotting order:
    categories by value (most frequent in the reference first), bins by number on the
    reference's edges (0 the underflow, n + 1 the overflow)."""
    ref = {str(k): float(v) for k, v in (details.get("reference_counts") or {}).items()}
    cur = {str(k): float(v) for k, v in (details.get("current_counts") or {}).items()}
    keys = set(ref) | set(cur)
    edges = [float(e) for e in details.get("edges") or []]
    if details.get("counted_by") == "bin" and edges:
        n = len(edges) - 1
        ordered = sorted((k for k in keys if k.lstrip("-").isdigit()), key=int)
        numbers = {int(k) for k in ordered}
        ordered = [str(k) for k in sorted(numbers | set(range(1, n + 1)))]
        labels = []
        for k in map(int, ordered):
            if k <= 0:
                labels.append(f"< {_fmt(edges[0])}")
            elif k > n:
                labels.append(f"> {_fmt(edges[-1])}")
            else:
                close = "]" if k == n else ")"
                labels.append(f"[{_fmt(edges[k - 1])}, {_fmt(edges[k])}{close}")
        return labels, [ref.get(k, 0.0) for k in ordered], [cur.get(k, 0.0) for k in ordered]
    ordered = sorted(keys, key=lambda k: (-ref.get(k, 0.0), -cur.get(k, 0.0), k))
    return ordered, [ref.get(k, 0.0) for k in ordered], [cur.get(k, 0.0) for k in ordered]


def _distribution_figure(result: dict[str, Any]) -> Any:
    details = result.get("details") or {}
    labels, ref, cur = _bins(details)
    ref_total, cur_total = sum(ref) or 1.0, sum(cur) or 1.0
    fig = go.Figure()
    fig.add_bar(name=f"reference ({int(sum(ref))})", x=labels, y=[v / ref_total for v in ref], marker_color=_REFERENCE_COLOUR,
                customdata=ref, hovertemplate="%{x}<br>share %{y:.3f} (%{customdata:.0f} rows)<extra>reference</extra>")
    fig.add_bar(name=f"current ({int(sum(cur))})", x=labels, y=[v / cur_total for v in cur], marker_color=_DRIFT_COLOUR,
                customdata=cur, hovertemplate="%{x}<br>share %{y:.3f} (%{customdata:.0f} rows)<extra>current</extra>")
    measure, value = _measure(result)
    title = (f"{_e(_label(result))}: {_e(result.get('test'))} {measure} {_fmt(value)} "
             f"(threshold {_fmt(result.get('threshold'))}; by {_e(details.get('counted_by') or 'value')})")
    fig.update_layout(barmode="group", yaxis_title="share of rows", xaxis_type="category")
    return _layout(fig, title, 380)


def _drift_over_time_figure(documents: Sequence[dict[str, Any]]) -> Any:
    ordered = sorted(documents, key=lambda d: (str(d.get("window_end")), str(d.get("created_at"))))
    series: dict[tuple[int, str, str], list[tuple[str, Any, Any, bool, str]]] = {}
    for doc in ordered:
        for r in doc.get("results") or []:
            role = str(r.get("role") or "input")
            rank = _ROLES.index(role) if role in _ROLES else len(_ROLES)
            measure, value = _measure(r)
            key = (rank, _label(r), f"{r.get('test')} {measure}")
            series.setdefault(key, []).append((str(doc.get("window_end")), value, r.get("threshold"), bool(r.get("drifted")),
                                               str(doc.get("mode"))))
    keys = sorted(series)
    titles = ["share of drifted inputs (dataset drift at the threshold)"] + [f"{_e(k[1])}: {_e(k[2])}" for k in keys]
    fig = make_subplots(rows=len(titles), cols=1, shared_xaxes=True, subplot_titles=titles,
                        vertical_spacing=min(0.04, 0.5 / len(titles)))
    ends = [str(d.get("window_end")) for d in ordered]
    shares = [_float(d.get("drift_share")) for d in ordered]
    fig.add_scatter(row=1, col=1, x=ends, y=shares, mode="lines+markers", name="drift share", line_color=_CURRENT_COLOUR,
                    marker={"color": [_DRIFT_COLOUR if d.get("dataset_drift") else _CURRENT_COLOUR for d in ordered], "size": 9},
                    text=[f"{d.get('drifted_features')} of {d.get('features_tested')} inputs, {d.get('mode')}" for d in ordered],
                    hovertemplate="%{x}<br>%{y:.3f}: %{text}<extra></extra>", showlegend=False)
    thresholds = [_float(((d.get("summary") or {}).get("drift") or {}).get("threshold")) for d in ordered]
    fig.add_scatter(row=1, col=1, x=ends, y=thresholds, mode="lines", name="threshold", line={"dash": "dash", "color": "#555"},
                    showlegend=False)
    for row, key in enumerate(keys, 2):
        points = series[key]
        x = [p[0] for p in points]
        values = [_float(p[1]) for p in points]
        fig.add_scatter(row=row, col=1, x=x, y=values, mode="lines+markers", showlegend=False, line_color=_CURRENT_COLOUR,
                        marker={"color": [_DRIFT_COLOUR if p[3] else _CURRENT_COLOUR for p in points], "size": 8},
                        text=[f"{_fmt(p[1])} ({'drifted' if p[3] else 'no drift'}, {p[4]})" for p in points],
                        hovertemplate="%{x}<br>%{text}<extra></extra>")
        fig.add_scatter(row=row, col=1, x=x, y=[_float(p[2]) for p in points], mode="lines", showlegend=False,
                        line={"dash": "dash", "color": "#555"}, hovertemplate="threshold %{y}<extra></extra>")
    return _layout(fig, "Drift statistics over time (red: drifted; dashed: threshold)", 140 + 170 * len(titles))


def _performance_rows(documents: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every bucket of every metric once: a bucket reported by several reports is the newest one's."""
    seen: dict[tuple[str, bool, str], dict[str, Any]] = {}
    for doc in documents:                                   # newest first
        for row in doc.get("performance") or []:
            key = (str(row.get("metric")), bool(row.get("estimated")), str(row.get("bucket_start")))
            seen.setdefault(key, row)
    return sorted(seen.values(), key=lambda r: (str(r.get("metric")), bool(r.get("estimated")), str(r.get("bucket_start"))))


def _runs(flags: Sequence[bool]) -> list[list[int]]:
    """The maximal runs of consecutive positions whose flag is true."""
    runs: list[list[int]] = []
    for i, flag in enumerate(flags):
        if flag and runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        elif flag:
            runs.append([i])
    return runs


def _performance_figure(rows: Sequence[dict[str, Any]]) -> Any:
    metrics = sorted({str(r.get("metric")) for r in rows})
    fig = make_subplots(rows=len(metrics), cols=1, shared_xaxes=True, subplot_titles=metrics,
                        vertical_spacing=min(0.08, 0.5 / len(metrics)))
    for row, metric in enumerate(metrics, 1):
        for estimated, colour, dash in ((False, _CURRENT_COLOUR, "solid"), (True, "#9467bd", "dot")):
            points = [r for r in rows if str(r.get("metric")) == metric and bool(r.get("estimated")) == estimated]
            if not points:
                continue
            name = "estimated (CBPE)" if estimated else "realized"
            middle = [str(r.get("bucket_start")) for r in points]
            lower = [_float(r.get("lower_bound")) for r in points]
            upper = [_float(r.get("upper_bound")) for r in points]
            fill = "rgba(148,103,189,0.15)" if estimated else "rgba(31,119,180,0.15)"
            for run in _runs([lo is not None and up is not None for lo, up in zip(lower, upper, strict=True)]):
                # A band: shaded between its bounds over each run of buckets that have both.
                fig.add_scatter(row=row, col=1, x=[middle[i] for i in run], y=[upper[i] for i in run], mode="lines",
                                line={"width": 0, "color": colour}, name=f"{name} upper bound", showlegend=False,
                                hovertemplate=f"{name} upper bound %{{y:.4g}}<extra></extra>")
                fig.add_scatter(row=row, col=1, x=[middle[i] for i in run], y=[lower[i] for i in run], mode="lines",
                                line={"width": 0, "color": colour}, fill="tonexty", fillcolor=fill,
                                name=f"{name} lower bound", showlegend=False,
                                hovertemplate=f"{name} lower bound %{{y:.4g}}<extra></extra>")
            for side, bound, other in (("upper", upper, lower), ("lower", lower, upper)):
                # A one-sided bound: a dashed line.
                alone = [v if o is None else None for v, o in zip(bound, other, strict=True)]
                if any(v is not None for v in alone):
                    fig.add_scatter(row=row, col=1, x=middle, y=alone, mode="lines", showlegend=False,
                                    name=f"{name} {side} bound", line={"dash": "dash", "color": colour, "width": 1},
                                    hovertemplate=f"{name} {side} bound %{{y:.4g}}<extra></extra>")
            fig.add_scatter(row=row, col=1, x=middle, y=[_float(r.get("value")) for r in points], mode="lines+markers",
                            name=name, legendgroup=name, showlegend=row == 1, line={"color": colour, "dash": dash},
                            marker={"color": [_DRIFT_COLOUR if r.get("alert") else colour for r in points], "size": 8},
                            customdata=[[r.get("sample_count"), "outside its band" if r.get("alert") else "within its band"]
                                        for r in points],
                            hovertemplate=f"{name}<br>%{{x}}: %{{y:.4g}}<br>%{{customdata[0]}} rows, %{{customdata[1]}}"
                                          "<extra></extra>")
    return _layout(fig, "Performance over time (bands: the alert bounds; red: outside them)", 160 + 220 * len(metrics))


def _deployment_figure(deployments: Sequence[dict[str, Any]], now: datetime) -> Any:
    fig = go.Figure()
    ordered = list(reversed(deployments))                   # oldest first, drawn bottom to top
    labels = [f"#{n} {d.get('strategy')}" for n, d in enumerate(ordered, 1)]
    def start(d: dict[str, Any]) -> datetime:
        return datetime.fromisoformat(str(d.get("activated_at") or d.get("created_at")))

    def end(d: dict[str, Any]) -> datetime:
        return datetime.fromisoformat(str(d["ended_at"])) if d.get("ended_at") else now

    # A deployment of a moment still shows: at least 0.5% of the timeline's span.
    shortest = max((max(map(end, ordered)) - min(map(start, ordered))).total_seconds() * 5.0, 1.0) if ordered else 1.0
    for status in sorted({str(d.get("status")) for d in ordered}):
        rows = [(label, d) for label, d in zip(labels, ordered, strict=True) if str(d.get("status")) == status]
        starts = [start(d) for _, d in rows]
        ends = [end(d) for _, d in rows]
        fig.add_bar(orientation="h", name=status, y=[label for label, _ in rows],
                    base=[s.isoformat() for s in starts],
                    x=[max((e - s).total_seconds() * 1000.0, shortest) for s, e in zip(starts, ends, strict=True)],
                    marker_color=_STATUS_COLOURS.get(status, "#7f7f7f"),
                    text=[_arms(d) for _, d in rows], textposition="inside", insidetextanchor="start",
                    customdata=[[str(d.get("reason") or ""), str(d.get("end_reason") or ""), _when(d.get("ended_at"))]
                                for _, d in rows],
                    hovertemplate="%{y} " + status + "<br>%{text}<br>reason: %{customdata[0]}<br>"
                                  "ended %{customdata[2]}: %{customdata[1]}<extra></extra>")
    ended = [(label, d) for label, d in zip(labels, ordered, strict=True) if d.get("status") in ("rolled_back", "aborted")]
    if ended:
        fig.add_scatter(x=[str(d.get("ended_at")) for _, d in ended], y=[label for label, _ in ended], mode="markers",
                        name="rollback / abort", marker={"symbol": "x", "size": 14, "color": "black"},
                        text=[f"{d.get('status')}: {d.get('end_reason') or ''}" for _, d in ended],
                        hovertemplate="%{x}<br>%{text}<extra></extra>")
    fig.update_layout(barmode="overlay", xaxis_type="date", yaxis={"type": "category", "categoryorder": "array",
                                                                   "categoryarray": labels})
    return _layout(fig, "Deployments (bars: when each was active; x: rolled back or aborted)", 200 + 40 * len(ordered))


def _arms(deployment: dict[str, Any]) -> str:
    parts = []
    for arm in deployment.get("arms") or []:
        weight = arm.get("current_weight", arm.get("weight"))
        role = "" if arm.get("role") in (None, "live") else f" {arm.get('role')}"
        parts.append(f"{arm.get('arm')}: {arm.get('model')}@{arm.get('version')}{role} {_fmt(weight)}")
    return "; ".join(parts)


def _similar_figure(similar: Sequence[dict[str, Any]], threshold: Any) -> Any:
    labels = [f"{_when(s.get('window_start'))} – {_when(s.get('window_end'))}" for s in similar]
    fig = go.Figure()
    fig.add_bar(orientation="h", y=labels, x=[_float(s.get("distance")) for s in similar], name="cosine distance",
                marker_color=[_DRIFT_COLOUR if s.get("dataset_drift") else _CURRENT_COLOUR for s in similar],
                text=[f"v{s.get('model_version')}{', drifted' if s.get('dataset_drift') else ''}" for s in similar],
                hovertemplate="%{y}<br>distance %{x:.4f}<br>%{text}<extra></extra>")
    if _float(threshold) is not None:
        fig.add_vline(x=_float(threshold), line_dash="dash", line_color="#555", annotation_text="same regime below")
    fig.update_layout(yaxis={"type": "category", "autorange": "reversed"}, xaxis_title="cosine distance to the latest window")
    return _layout(fig, "Similar past windows (nearest first; red: that window drifted)", 200 + 40 * len(similar))


# -- the page -----------------------------------------------------------------------------------


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1200px;padding:1rem 2rem;color:#222}
h1{margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.3rem}
.meta{color:#555}.verdict{font-size:1.3rem;padding:.6rem 1rem;border-radius:6px;margin:1rem 0}
.verdict.drift{background:#fde0dc;border:1px solid #d62728}.verdict.steady{background:#e3f4e1;border:1px solid #2ca02c}
table{border-collapse:collapse;margin:.5rem 0;font-size:.92rem}th,td{border:1px solid #ddd;padding:.25rem .6rem;text-align:left}
th{background:#f5f5f5}td.num{text-align:right}.critical{color:#b00;font-weight:bold}.warning{color:#b36b00}.info{color:#1f77b4}
.note{color:#555;font-style:italic}
"""


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td{' class=num' if i in numeric else ''}>{cell}</td>" for i, cell in enumerate(row)) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class _Page:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.figures = 0

    def add(self, text: str) -> None:
        self.parts.append(text)

    def figure(self, name: str, fig: Any) -> None:
        self.figures += 1
        div = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"figure-{self.figures}",
                          config={"displaylogo": False, "responsive": True})
        self.parts.append(f'<section class="figure" data-figure="{_e(name)}">{div}</section>')


def _header(page: _Page, data: _Data) -> None:
    latest = data.documents[0]
    drift = (latest.get("summary") or {}).get("drift") or {}
    page.add(f"<h1>Monitoring report: {_e(data.project)}</h1>")
    page.add(f'<p class="meta">model {_e(latest.get("model"))}@{_e(latest.get("version"))}, latest window '
             f'{_e(_when(latest.get("window_start")))} – {_e(_when(latest.get("window_end")))} UTC, '
             f'{_e(latest.get("row_count"))} rows against {_e(latest.get("reference_count"))} reference rows, '
             f'mode {_e(latest.get("mode"))}, status {_e(latest.get("status"))}; {len(data.documents)} report(s) shown; '
             f'generated {_e(data.generated_at.isoformat(timespec="seconds"))}</p>')
    dataset = bool(latest.get("dataset_drift"))
    page.add(f'<div class="verdict {"drift" if dataset else "steady"}" id="verdict">'
             f'<strong>{"Dataset drift" if dataset else "No dataset drift"}</strong>: '
             f'{_e(latest.get("drifted_features"))} of {_e(latest.get("features_tested"))} inputs drifted '
             f'(share {_fmt(latest.get("drift_share"))}, threshold {_fmt(drift.get("threshold"))}); '
             f'mode {_e(latest.get("mode"))}</div>')
    drifted = [r for r in latest.get("results") or [] if r.get("drifted")]
    sections = latest.get("summary") or {}
    facts = []
    for key, name in (("prediction_drift", "prediction drift"), ("label_drift", "label drift")):
        section = sections.get(key)
        if isinstance(section, dict) and section.get("reason"):
            facts.append(f"{name}: {_e(section['reason'])}")
    regime = sections.get("regime")
    if isinstance(regime, dict) and "matched" in regime:
        facts.append("regime: " + ("matches a past window" if regime.get("matched") else "not seen before"))
    if drifted:
        facts.append("drifted: " + ", ".join(_e(_label(r)) for r in drifted))
    if facts:
        page.add("<ul>" + "".join(f"<li>{f}</li>" for f in facts) + "</ul>")
    page.add(f"<h2>Alerts open ({len(data.alerts)})</h2>")
    if not data.alerts:
        page.add('<p class="note">No open or acknowledged alerts.</p>')
    else:
        rows = [(f'<span class="{_SEVERITY_CLASSES.get(str(a.get("severity")), "")}">{_e(a.get("severity"))}</span>',
                 _e(a.get("status")), _e(a.get("kind")), _e(a.get("feature") or "–"), _e(a.get("count")),
                 _e(_when(a.get("last_seen"))), _e(a.get("message") or "")) for a in data.alerts]
        page.add(_table(["severity", "status", "kind", "feature", "count", "last seen", "message"], rows, numeric=[4]))


def _render(data: _Data, progress: Progress) -> str:
    page = _Page()
    _header(page, data)
    latest = data.documents[0]

    progress("figures: distributions of the drifted features")
    page.add("<h2>Reference against current: drifted features</h2>")
    drifted = [r for r in latest.get("results") or [] if r.get("drifted") and (r.get("details") or {}).get("reference_counts")]
    if not drifted:
        page.add('<p class="note">No feature drifted in the latest report.</p>')
    for r in drifted:
        page.figure(f"distribution:{r.get('role')}:{r.get('feature')}:{r.get('test')}", _distribution_figure(r))

    progress("figures: drift over time")
    page.add("<h2>Drift over time</h2>")
    page.figure("drift-over-time", _drift_over_time_figure(data.documents))

    progress("figures: performance")
    page.add("<h2>Performance: realized and estimated</h2>")
    rows = _performance_rows(data.documents)
    if rows:
        page.figure("performance", _performance_figure(rows))
    else:
        section = (latest.get("summary") or {}).get("performance")
        reason = section.get("reason") if isinstance(section, dict) else None
        page.add(f'<p class="note">No performance rows in these reports{": " + _e(reason) if reason else "."}</p>')

    progress("figures: deployments")
    page.add("<h2>Deployments</h2>")
    if data.deployments:
        page.figure("deployments", _deployment_figure(data.deployments, data.generated_at))
        page.add(_table(["#", "strategy", "status", "arms", "from", "until", "reason", "end reason"],
                        [(str(len(data.deployments) - n), _e(d.get("strategy")), _e(d.get("status")), _e(_arms(d)),
                          _e(_when(d.get("activated_at") or d.get("created_at"))), _e(_when(d.get("ended_at")) or "now"),
                          _e(d.get("reason") or ""), _e(d.get("end_reason") or "")) for n, d in enumerate(data.deployments)]))
    else:
        page.add('<p class="note">The project has never been deployed.</p>')

    progress("figures: similar past windows")
    page.add("<h2>Similar past windows</h2>")
    regime = (latest.get("summary") or {}).get("regime")
    threshold = regime.get("threshold") if isinstance(regime, dict) else None
    if data.similar:
        page.figure("similar-windows", _similar_figure(data.similar, threshold))
        page.add(_table(["window", "distance", "model version", "dataset drift"],
                        [(_e(f"{_when(s.get('window_start'))} – {_when(s.get('window_end'))}"), _fmt(s.get("distance")),
                          _e(s.get("model_version")), _fmt(bool(s.get("dataset_drift")))) for s in data.similar], numeric=[1]))
    else:
        page.add(f'<p class="note">{_e(data.similar_reason or "No past window of this project to compare with yet.")}</p>')

    progress("assembling the page")
    plotly_js = get_plotlyjs()
    title = f"pgmlops monitoring report: {data.project}"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style>"
            f'<script type="text/javascript">{plotly_js}</script></head>\n<body>\n'
            + "\n".join(page.parts)
            + f'\n<script type="application/json" id="pgmlops-report">{_e(json.dumps({"figures": page.figures}))}</script>'
            + "\n</body></html>\n")


def render_report(conn: psycopg.Connection[Any], project: str, *, tenant: TenantId = None, reports: int = 10,
                  since: datetime | None = None, progress: Progress | None = None) -> str:
    """The HTML monitoring report of ``project`` as one self-contained page (plotly.js inlined
    once; no network): the latest report's verdict and the open alerts, reference against
    current per drifted feature, drift statistics over the project's newest ``reports`` drift
    reports (those whose window ends after ``since``, an aware datetime, when given), realized
    and estimated performance with the alert bands, the deployment timeline and the similar
    past windows of the latest report. Every figure comes from the SQL API's documents.

    Given ``tenant``, reads in one transaction of a service caller acting for it; without it,
    in the connection's transaction, which must already act for a tenant. ``progress`` is
    called with a short text before each step (reading, then drawing).

    Raises:
        InvalidInput: ``reports`` outside 1..500, a naive ``since``.
        NotFound: no such project, or no drift report of it (since ``since``).
        AccessDenied: the caller is not a member of the tenant.
    """
    say = progress or (lambda _text: None)
    data = _collect(conn, project, tenant, reports, since, say)
    return _render(data, say)


def write_report(conn: psycopg.Connection[Any], project: str, path: str | Path, *, tenant: TenantId = None,
                 reports: int = 10, since: datetime | None = None, progress: Progress | None = None) -> Path:
    """Write :func:`render_report`'s page to ``path`` (UTF-8; replaced if it exists, written
    whole or not at all: a temporary file beside it, renamed) and return the path.

    Raises:
        the errors of :func:`render_report` (nothing is written then);
        OSError: ``path`` cannot be written.
    """
    target = Path(path)
    text = render_report(conn, project, tenant=tenant, reports=reports, since=since, progress=progress)
    if progress is not None:
        progress(f"writing {target}")
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(target)
    return target
