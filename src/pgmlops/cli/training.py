"""`pgmlops train` and `pgmlops tune`: training jobs and tuning studies."""

from __future__ import annotations

from typing import Annotated, Any

import psycopg
import typer
from rich.table import Table

from pgmlops.cli._common import Tenant, connection, console, err_console, json_arg, tenant_id
from pgmlops.db import tenant_context
from pgmlops.jobs import queue

_FINISHED = ("succeeded", "failed", "dead", "cancelled")


def _dataset_id(conn: psycopg.Connection[Any], dataset: str) -> Any:
    """A dataset id, or the id of dataset ``name`` / ``name@version``."""
    from pgmlops import features as datasets

    return dataset if _is_uuid(dataset) else datasets.dataset_info(conn, dataset).id


def _is_uuid(value: str) -> bool:
    import uuid

    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def metrics_table(metrics: dict[str, Any], title: str | None = None) -> Table:
    table = Table("metric", "value", title=title)
    for name, value in sorted(metrics.items()):
        table.add_row(name, f"{value:.6g}" if isinstance(value, int | float) else str(value))
    return table


def _job_result(conn: psycopg.Connection[Any], tenant: str, job_id: int) -> dict[str, Any]:
    """The job's status and result now, read in a transaction of its own acting for ``tenant``."""
    with tenant_context(conn, tenant):
        return queue.result(conn, job_id)


def _job_failed(result: dict[str, Any]) -> None:
    err_console.print(f"[red]job {result['id']} {result['status']}[/red]: {(result.get('error') or '').split(chr(10))[0]}")
    raise typer.Exit(1)


def train(
    project: str,
    dataset: Annotated[str, typer.Argument(help="Dataset id, name or name@version.")],
    algorithm: str,
    hyperparams: Annotated[str, typer.Option(help="Hyperparameters as JSON, or @file.json.")] = "{}",
    options: Annotated[str, typer.Option(help="Options as JSON (split, test_size, cv_folds, random_state, model, tags).")] = "{}",
    tenant: Tenant = "",
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the job and print the run and the registered version.")] = False,
    timeout: Annotated[float | None, typer.Option(help="With --wait: give up after this many seconds.")] = None,
) -> None:
    """Queue a train job (ml.train) and print its id; with --wait, its outcome."""
    import time

    from pgmlops import training

    acting_for = tenant_id(tenant)
    with connection() as conn:
        with tenant_context(conn, acting_for):
            job_id = training.train(conn, project, _dataset_id(conn, dataset), algorithm, json_arg(hyperparams, "hyperparams"),
                                    json_arg(options, "options"))
        console.print(f"train job {job_id}")
        if not wait:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        with err_console.status(f"training {algorithm} (job {job_id}): start a worker if none runs"):
            while (result := _job_result(conn, acting_for, job_id))["status"] not in _FINISHED:
                if deadline is not None and time.monotonic() > deadline:
                    err_console.print(f"still {result['status']} after {timeout}s")
                    raise typer.Exit(3)
                time.sleep(0.5)
    if result["status"] != "succeeded":
        _job_failed(result)
    out = result["result"] or {}
    console.print(f"run {out.get('run_id')}" + (f"  registered [bold]{out['model']}@{out['version']}[/bold]"
                                                  if out.get("model") else ""))
    console.print(metrics_table(out.get("metrics") or {}))


def tune(
    project: str,
    dataset: Annotated[str, typer.Argument(help="Dataset id, name or name@version.")],
    algorithm: str,
    search_space: Annotated[str, typer.Option(help='Search space as JSON, or @file.json: {"C": {"type": "float", '
                                                   '"low": 0.01, "high": 10, "log": true}}.')],
    n_trials: Annotated[int, typer.Option(min=1, max=1000, help="Trials to finish.")] = 20,
    options: Annotated[str, typer.Option(help="Options as JSON: ml.train's plus metric, direction, sampler, pruner.")] = "{}",
    tenant: Tenant = "",
    watch: Annotated[bool, typer.Option("--watch", help="Show live progress until the best model is registered.")] = False,
    timeout: Annotated[float | None, typer.Option(help="With --watch: give up after this many seconds.")] = None,
) -> None:
    """Start a tuning study (ml.tune) run by the workers; print its tune job and study ids. With
    --watch, show trials done and the best value so far, then the leaderboard."""
    import time

    from rich.live import Live

    from pgmlops import tuning

    acting_for = tenant_id(tenant)
    with connection() as conn:
        with tenant_context(conn, acting_for):
            job_id = tuning.tune(conn, project, _dataset_id(conn, dataset), algorithm, json_arg(search_space, "search_space"),
                                 n_trials, json_arg(options, "options"))
            study_id = tuning.study_id_of(conn, job_id)
        console.print(f"tune job {job_id}, study {study_id}")
        if not watch:
            return

        def progress_now() -> dict[str, Any]:
            with tenant_context(conn, acting_for):
                return tuning.study_progress(conn, study_id)

        deadline = None if timeout is None else time.monotonic() + timeout
        with Live(_progress_view(progress_now()), console=err_console, refresh_per_second=4) as live:
            while (result := _job_result(conn, acting_for, job_id))["status"] not in _FINISHED:
                live.update(_progress_view(progress_now()))
                if deadline is not None and time.monotonic() > deadline:
                    err_console.print(f"study still {result['status']} after {timeout}s")
                    raise typer.Exit(3)
                time.sleep(0.5)
            progress = progress_now()
            live.update(_progress_view(progress))
        with tenant_context(conn, acting_for):
            trials = tuning.trials(conn, study_id)
    console.print(_leaderboard(trials, progress))
    if result["status"] != "succeeded":
        _job_failed(result)
    out = result["result"] or {}
    console.print(f"best trial {out['best_trial']} ({progress['metric']} {out['best_value']:.6g}) refit and registered as "
                  f"[bold]{out['model']}@{out['version']}[/bold]")
    console.print(metrics_table(out.get("metrics") or {}, title="held-out metrics of the refit"))


def _progress_view(progress: dict[str, Any]) -> Any:
    """The study's progress in two lines that fit an 80-column terminal: a bar, then the counts
    and the best value so far."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table as Grid

    finished, total = progress["finished"], progress["n_trials"]
    bar = Grid.grid(padding=(0, 2), expand=True)
    bar.add_column(no_wrap=True)
    bar.add_column(ratio=1)
    bar.add_column(no_wrap=True)
    bar.add_row(f"[bold]{progress['status']}[/bold]", ProgressBar(total=total, completed=finished),
                f"{finished}/{total} trials")
    best = (f"{progress['metric']} {progress['best_value']:.6g} (trial {progress['best_trial']})"
            if progress["best_value"] is not None else "-")
    return Group(bar, f"running {progress['running']}  pruned {progress['pruned']}  failed {progress['failed']}  "
                      f"best {best}")


def _leaderboard(trials: list[dict[str, Any]], progress: dict[str, Any], top: int = 10) -> Table:
    """The best finished trials; fits an 80-column terminal: the narrow columns never wrap, the
    parameters (name=value) wrap in the last one."""
    sign = -1 if progress["direction"] == "maximize" else 1
    ranked = sorted((t for t in trials if t["state"] == "COMPLETE" and t["value"] is not None),
                    key=lambda t: (sign * t["value"], t["number"]))
    table = Table(title=f"top {min(top, len(ranked))} of {len(trials)} trials "
                        f"({progress['complete']} complete, {progress['pruned']} pruned, {progress['failed']} failed)")
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("trial", justify="right", no_wrap=True)
    table.add_column(progress["metric"], justify="right", no_wrap=True)
    table.add_column("secs", justify="right", no_wrap=True)
    table.add_column("params", overflow="fold", ratio=1)
    for rank, t in enumerate(ranked[:top], start=1):
        seconds = f"{t['duration'].total_seconds():.2f}" if t["duration"] is not None else ""
        params = "  ".join(f"{name}={value:.6g}" if isinstance(value, float) else f"{name}={value}"
                           for name, value in sorted(t["params"].items()))
        table.add_row(str(rank), str(t["number"]), f"{t['value']:.6g}", seconds, params)
    return table
