"""`pgmlops simulate`: simulated fraud-detection traffic with scripted drift (docs/simulation.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import pandas as pd
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pgmlops.cli._common import connection, console


def _start(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r}: expected an ISO 8601 time such as 2026-03-01", param_hint="'--start'") from exc
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def summary_table(result: Any) -> Table:
    """Rows and fraud rates per stretch of a :class:`pgmlops.simulation.SimulationResult`, in at
    most 80 columns: each scripted segment, and the base traffic before and after them, with the
    share of each regime in it (a ramp mixes them)."""
    tx: pd.DataFrame = result.traffic.transactions
    scenario = result.scenario
    table = Table(title=f"simulated {scenario}: {len(tx):,} transactions", width=80,
                  caption="segment: its regime (and its share, ramping); fraud: the true rate;\n"
                          "reported: labelled fraud (chargebacks); due: labels known by the end", caption_justify="left")
    table.add_column("segment", no_wrap=True)
    table.add_column("from", no_wrap=True)
    table.add_column("to", no_wrap=True)
    table.add_column("rows", justify="right", no_wrap=True)
    table.add_column("fraud", justify="right", no_wrap=True)
    table.add_column("reported", justify="right", no_wrap=True)
    table.add_column("due", justify="right", no_wrap=True)
    end = tx["event_time"].max() if len(tx) else None
    # One row per stretch of time in one segment (the base before and after a segment apart).
    part = (tx["segment"] != tx["segment"].shift()).cumsum()
    for _, rows in tx.groupby(part, sort=True):
        segment = int(rows["segment"].to_numpy()[0])
        regimes = rows["regime"].value_counts(normalize=True)
        newest = str(regimes.index.max())  # the segment's own regime (B), or A
        share = "" if len(regimes) == 1 else f" {regimes[newest]:.0%}"
        due = (rows["label_time"] <= end).mean() if end is not None else 0.0
        table.add_row(f"{segment or 'base'} {newest}{share}", rows["event_time"].min().strftime("%m-%d %Hh"),
                      rows["event_time"].max().strftime("%m-%d %Hh"), f"{len(rows):,}", f"{rows['is_fraud'].mean():.2%}",
                      f"{rows['label'].mean():.2%}", f"{due:.0%}")
    return table


def simulate(
    project: Annotated[str, typer.Option(help="Project whose feature groups receive the traffic "
                                              "(<project>_customers, _transactions, _labels).")],
    scenario: Annotated[str, typer.Option(help="none, covariate_shift, gradual_covariate_shift, prior_shift, "
                                               "concept_drift, gradual_concept_drift, seasonal_recurrence.")] = "none",
    days: Annotated[int, typer.Option(min=1, max=366, help="Simulated days.")] = 30,
    rate: Annotated[float, typer.Option(min=0.001, max=100_000, help="Mean transactions per hour.")] = 500.0,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed, the same traffic.")] = 0,
    start: Annotated[str | None, typer.Option(help="Simulated start (ISO 8601, UTC without an offset); "
                                                   "default 2026-01-01.")] = None,
    serve: Annotated[bool, typer.Option("--serve", help="Replay the traffic through ml.predict (the project's "
                                                        "active deployment) and record labels as feedback when due.")] = False,
    label_delay: Annotated[float, typer.Option(min=0.001, max=10, help="Scale of the labels' delays (chargebacks, "
                                                                       "median 12 days; 30 days' maturity); 0.1 for a demo.")] = 1.0,
    tenant: Annotated[str, typer.Option(envvar="PGMLOPS_TENANT", help="Tenant id to act for; default: a new "
                                                                      "tenant.")] = "",
) -> None:
    """Generate fraud-detection traffic with known labels and a scripted drift scenario, ingest
    it into the project's feature groups and, with --serve, serve it with delayed feedback."""
    from pgmlops.simulation import simulate as run

    when = _start(start)
    with connection() as conn, Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                        TimeElapsedColumn(), console=console, transient=True) as progress:
        tasks: dict[str, Any] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task({"ingest": "ingesting groups", "serve": "serving"}.get(stage, stage),
                                                 total=total)
            progress.update(tasks[stage], completed=done, total=total)

        result = run(conn, project, scenario, start=when, days=days, rate_per_hour=rate, seed=seed,
                     tenant=tenant.strip() or None, serve=serve, label_delay=label_delay,
                     progress=report)
    console.print(f"[green]✓[/green] tenant {result.tenant}: "
                  + ", ".join(f"{result.groups[k]} {n:,} rows" for k, n in result.ingested.items()), soft_wrap=False)
    console.print(summary_table(result))
    if serve:
        console.print(f"[green]✓[/green] served {result.predictions:,} predictions; feedback recorded "
                      f"{result.feedback_recorded:,}, not yet due {result.feedback_pending:,} ({result.seconds:.0f} s)")
