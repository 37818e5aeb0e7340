"""`pgmlops report`: a project's monitoring as one self-contained HTML file."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from pgmlops.cli._common import Tenant, console, err_console, tenant_conn


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r}: expected an ISO 8601 time such as 2026-03-01T10:00",
                                 param_hint="'--since'") from exc
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def report(
    project: Annotated[str, typer.Option("--project", help="The project to report on.")],
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write (replaced if it exists).")] = Path("report.html"),
    reports: Annotated[int, typer.Option("--reports", min=1, max=500,
                                         help="How many of the newest drift reports to show over time.")] = 10,
    since: Annotated[str | None, typer.Option(
        help="Only drift reports whose window ends after this time (ISO 8601; UTC without an offset).")] = None,
    tenant: Tenant = "",
) -> None:
    """Write PROJECT's monitoring report to --out: one self-contained HTML file (plotly, no
    network) with the latest verdict and open alerts, reference against current per drifted
    feature, drift statistics over time, realized and estimated performance, the deployment
    timeline and the similar past windows. Progress goes to stderr."""
    from pgmlops import reporting

    when = _since(since)
    with err_console.status(f"report of {project}", spinner="dots") as status:
        def progress(text: str) -> None:
            status.update(f"report of {project}: {text}")

        with tenant_conn(tenant) as conn:
            path = reporting.write_report(conn, project, out, reports=reports, since=when, progress=progress)
    size = path.stat().st_size
    console.print(f"{project}: report written to {path} ({size / 1e6:.1f} MB)")
