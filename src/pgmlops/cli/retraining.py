"""`pgmlops retraining history | run`: the retraining loop's timeline and a manual retrain."""

from __future__ import annotations

import json
import textwrap
from typing import Annotated, Any

import typer
from rich.markup import escape

from pgmlops.cli._common import Tenant, console, tenant_conn

app = typer.Typer(help="Retraining: the history of a project's retraining cycles, and a manual retrain.",
                  no_args_is_help=True)

WIDTH = 80
_COLOUR = {"trigger": "bold cyan", "skip": "dim", "curate": "white", "train": "white", "evaluate": "white",
           "shadow": "green", "canary": "green", "promote": "bold green", "approval": "yellow", "reject": "red",
           "failed": "bold red", "rollback": "bold red"}


def timeline(events: list[dict[str, Any]]) -> list[str]:
    """The events (any order) as a timeline, oldest first, each line at most 80 columns: a
    heading ``YYYY-MM-DD HH:MM  kind  decision  model@version`` per event, then its reason
    wrapped and indented, cycles separated by a blank line. Rich markup in the values is escaped."""
    lines: list[str] = []
    cycle = None
    for e in sorted(events, key=lambda x: str(x.get("at") or "")):
        if cycle is not None and e.get("cycle_id") != cycle:
            lines.append("")
        cycle = e.get("cycle_id")
        at = str(e.get("at") or "")[:16].replace("T", " ")
        kind = str(e.get("kind"))
        candidate = e.get("candidate") or {}
        who = f"{candidate.get('model')}@{candidate.get('version')}" if candidate else ""
        head = f"{at}  {kind:<8}  {str(e.get('decision') or ''):<17}  {who}".rstrip()[:WIDTH]
        lines.append(f"[{_COLOUR.get(kind, 'white')}]{escape(head)}[/]")
        reason = str(e.get("reason") or "")
        if reason:
            lines.extend(escape(part) for part in textwrap.wrap(reason, WIDTH - 6, initial_indent="      ",
                                                              subsequent_indent="      "))
    return lines


def history(
    project: Annotated[str, typer.Option("--project", help="The project whose retraining history to print.")],
    limit: Annotated[int, typer.Option(help="At most this many events (the newest).")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print the events as JSON (newest first).")] = False,
    tenant: Tenant = "",
) -> None:
    """Print PROJECT's retraining timeline (ml.retraining_history), oldest first: each trigger,
    skip, curate, train, evaluate, shadow, promote, reject or failure with its decision, the
    candidate version and why."""
    from pgmlops import retraining

    with tenant_conn(tenant) as conn:
        events = retraining.retraining_history(conn, project, limit)
    if as_json:
        console.print_json(json.dumps(events, default=str))
        return
    if not events:
        console.print(f"{escape(project)}: no retraining events")
        return
    for line in timeline(events):
        console.print(line, highlight=False, soft_wrap=True)


def run(
    project: Annotated[str, typer.Option("--project", help="The project to retrain.")],
    reason: Annotated[str, typer.Option(help="Why (recorded as 'manual: <reason>').")] = "manual",
    tenant: Tenant = "",
) -> None:
    """Retrain PROJECT now (ml.retrain): records a manual trigger and enqueues the retrain job,
    which a worker runs (`pgmlops worker`); prints the job's id."""
    from pgmlops import retraining

    with tenant_conn(tenant) as conn:
        job_id = retraining.start_retraining(conn, project, reason)
    console.print(f"retrain job {job_id} queued for {escape(project)}")


app.command()(history)
app.command()(run)
