"""Reports for people: a project's monitoring as one self-contained HTML file (plotly figures,
plotly.js inlined once, no network), built from the SQL API's documents (docs/monitoring.md,
"Reports")."""

from __future__ import annotations

from pgmlops.reporting._html import render_report, write_report

__all__ = ["render_report", "write_report"]
