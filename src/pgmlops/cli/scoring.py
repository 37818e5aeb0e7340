"""`pgmlops predict`, `deploy`, `deployments`, `rollback`, `feedback` and `score`: serving."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import typer
from rich.table import Table

from pgmlops.cli._common import Tenant, connection, console, err_console, json_arg, tenant_conn, tenant_id
from pgmlops.db import tenant_context

_FINISHED = ("succeeded", "failed", "dead", "cancelled")

# name=model@version[:weight][:shadow], e.g. a=churn@3:0.9, b=churn@champion:0.1, s=churn@4:shadow
_ARM = re.compile(r"^(?P<arm>[a-z][a-z0-9_-]{0,62})=(?P<model>[a-z][a-z0-9_-]{0,62})"
                  r"@(?:(?P<version>[0-9]{1,9})|(?P<alias>[a-z][a-z0-9_-]{0,62}))"
                  r"(?::(?P<weight>[0-9]*\.?[0-9]+))?(?P<shadow>:shadow)?$")
_STEP = re.compile(r"^(?P<weight>[0-9]*\.?[0-9]+)@(?P<after>.+)$")


def parse_arm(text: str) -> dict[str, Any]:
    """One ``--arm``, ``name=model@version[:weight][:shadow]`` (``@alias`` in place of a version),
    as ml.deploy's arm object. Without a weight the arm has none (ml.deploy's default applies)."""
    match = _ARM.match(text.strip())
    if match is None:
        raise typer.BadParameter(f"{text!r}: expected name=model@version[:weight][:shadow], e.g. a=churn@3:0.9 "
                                 "or s=churn@champion:shadow", param_hint="'--arm'")
    arm: dict[str, Any] = {"arm": match["arm"], "model": match["model"]}
    if match["version"]:
        arm["version"] = int(match["version"])
    else:
        arm["alias"] = match["alias"]
    if match["weight"] is not None:
        arm["weight"] = float(match["weight"])
    arm["role"] = "shadow" if match["shadow"] else "live"
    return arm


def parse_schedule(text: str) -> list[dict[str, Any]]:
    """``--canary-schedule``, comma-separated ``WEIGHT@AFTER`` steps (AFTER a PostgreSQL interval
    from the deployment: ``0.1@0m,0.5@30m,1@2h``), as ml.deploy's ``options.schedule``."""
    steps = []
    for part in (p.strip() for p in text.split(",")):
        match = _STEP.match(part)
        if match is None:
            raise typer.BadParameter(f"step {part!r}: expected WEIGHT@AFTER, e.g. 0.1@0m,0.5@30m,1@2h",
                                     param_hint="'--canary-schedule'")
        steps.append({"weight": float(match["weight"]), "after": match["after"].strip()})
    return steps


def predict(
    project: str,
    features: Annotated[str | None, typer.Option(help="The inputs as a JSON object, or @file.json.")] = None,
    entity: Annotated[str | None, typer.Option(help="Entity key: read its features from the online store "
                                                    "(with --features: the key that keeps the arm sticky).")] = None,
    tenant: Tenant = "",
) -> None:
    """Score one row with the project's active deployment (ml.predict) and print the result as
    JSON: prediction, score or probabilities, model, version, arm and prediction id."""
    from pgmlops import scoring

    if features is None and entity is None:
        raise typer.BadParameter("give --features JSON, --entity KEY, or both", param_hint="'--features' / '--entity'")
    values = json_arg(features, "features") if features is not None else None
    with tenant_conn(tenant) as conn:
        result = scoring.predict(conn, project, values, entity)
    console.print_json(json.dumps(result, default=str))


def deploy(
    project: str,
    strategy: Annotated[str, typer.Option(help="single, ab, canary, shadow or blue_green.")],
    arm: Annotated[list[str] | None, typer.Option(
        help="An arm: name=model@version[:weight][:shadow] (or model@alias); repeat for each arm.")] = None,
    arms: Annotated[str | None, typer.Option(help="The arms as ml.deploy's JSON array, or @file.json.")] = None,
    canary_schedule: Annotated[str | None, typer.Option(
        help="Canary steps WEIGHT@AFTER, comma-separated: 0.1@0m,0.5@30m,1@2h.")] = None,
    abort: Annotated[str | None, typer.Option(help="The canary's abort rule as JSON.")] = None,
    reason: Annotated[str | None, typer.Option(help="Why (kept in the history and the audit log).")] = None,
    options: Annotated[str, typer.Option(help="More of ml.deploy's options as JSON.")] = "{}",
    tenant: Tenant = "",
) -> None:
    """Make a new deployment of PROJECT active (ml.deploy) and print it: its arms and weights.
    Live arms must be approved versions passing the project's promotion gates."""
    from pgmlops import scoring

    if bool(arm) == (arms is not None):
        raise typer.BadParameter("give the arms as --arm (repeated) or as --arms JSON, not both",
                                 param_hint="'--arm' / '--arms'")
    arm_list = [parse_arm(a) for a in arm] if arm else json_arg(arms or "", "arms")
    opts = json_arg(options, "options")
    if not isinstance(opts, dict):
        raise typer.BadParameter("options: must be a JSON object", param_hint="'--options'")
    if canary_schedule is not None:
        opts["schedule"] = parse_schedule(canary_schedule)
    if abort is not None:
        opts["abort"] = json_arg(abort, "abort")
    if reason is not None:
        opts["reason"] = reason
    with tenant_conn(tenant) as conn:
        scoring.deploy(conn, project, strategy, arm_list, opts)
        active = scoring.deployment(conn, project)
    assert active is not None
    console.print(deployment_view(active))


def deployments(
    project: str,
    history: Annotated[bool, typer.Option("--history", help="Every deployment the project has had, newest first.")] = False,
    tenant: Tenant = "",
) -> None:
    """The project's active deployment: its arms with their current weights (ml.deployment);
    with --history, every deployment it has had (ml.deployment_history)."""
    from pgmlops import scoring

    with tenant_conn(tenant) as conn:
        if history:
            console.print(history_table(project, scoring.deployment_history(conn, project)))
            return
        active = scoring.deployment(conn, project)
    if active is None:
        console.print(f"{project}: nothing deployed")
        return
    console.print(deployment_view(active))


def rollback(project: str, tenant: Tenant = "") -> None:
    """Go back to the deployment active before the current one (ml.rollback) and print it."""
    from pgmlops import scoring

    with tenant_conn(tenant) as conn:
        scoring.rollback(conn, project)
        active = scoring.deployment(conn, project)
    assert active is not None
    console.print(deployment_view(active))


def feedback(
    prediction_id: str,
    label: Annotated[str, typer.Argument(help="The realized outcome as JSON: 1, \"churned\", {\"value\": 3.2}.")],
    source: Annotated[str | None, typer.Option(help="Where the outcome comes from (one label per source).")] = None,
    tenant: Tenant = "",
) -> None:
    """Record the realized outcome of a logged prediction (ml.record_feedback)."""
    from pgmlops import scoring

    with tenant_conn(tenant) as conn:
        feedback_id = scoring.record_feedback(conn, prediction_id, json_arg(label, "label"), source)
    console.print(f"feedback {feedback_id}")


def score(
    project: str,
    source: Annotated[str, typer.Option(help="A table name or a query.")],
    target: Annotated[str, typer.Option(help="The table the scores go to.")],
    path: Annotated[str | None, typer.Option(help="sql (ml.predict_batch) or worker; default: the faster.")] = None,
    options: Annotated[str, typer.Option(help="More of ml.score's options as JSON.")] = "{}",
    tenant: Tenant = "",
    wait: Annotated[bool, typer.Option("--wait", help="Show progress until the scoring ends.")] = False,
    timeout: Annotated[float | None, typer.Option(help="With --wait: give up after this many seconds.")] = None,
) -> None:
    """Queue a batch scoring of SOURCE into TARGET (ml.score) and print its job id; with
    --wait, a progress bar from ml.batch_scorings until it ends (a worker runs it)."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pgmlops import scoring
    from pgmlops.jobs import queue

    opts = json_arg(options, "options")
    if not isinstance(opts, dict):
        raise typer.BadParameter("options: must be a JSON object", param_hint="'--options'")
    if path is not None:
        opts["path"] = path
    acting_for = tenant_id(tenant)
    with connection() as conn:
        with tenant_context(conn, acting_for):
            job_id = scoring.score(conn, project, source, target, opts)
        console.print(f"score job {job_id}")
        if not wait:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        columns = (TextColumn("{task.description}"), BarColumn(bar_width=30), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=err_console, transient=False) as progress:
            task = progress.add_task(f"job {job_id} queued: start a worker if none runs", total=None)
            while True:
                with tenant_context(conn, acting_for):
                    job = queue.result(conn, job_id)
                    batch = scoring.batch_scoring(conn, job_id)
                if batch is not None:
                    progress.update(task, description=f"{batch['status']} ({batch['path']})",
                                    total=batch["rows_total"], completed=batch["rows_done"])
                if job["status"] in _FINISHED:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    err_console.print(f"still {job['status']} after {timeout}s")
                    raise typer.Exit(3)
                time.sleep(0.5)
    if job["status"] != "succeeded":
        err_console.print(f"[red]job {job_id} {job['status']}[/red]: {(job.get('error') or '').split(chr(10))[0]}")
        raise typer.Exit(1)
    done = batch["rows_done"] if batch is not None else (job.get("result") or {}).get("rows")
    console.print(f"scored {done} rows of {source} into {target}"
                  + (f" with {batch['model']}@{batch['version']} ({batch['path']})" if batch is not None else ""))


# -- views: each fits an 80-column terminal ------------------------------------------------------


def _weight(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3g}"


def deployment_view(active: dict[str, Any]) -> Any:
    """The deployment: a heading line, then a table of its arms with their current weights, then
    a canary's steps."""
    from rich.console import Group
    from rich.text import Text

    since = str(active.get("activated_at") or active.get("created_at") or "")[:16].replace("T", " ")
    heading = Text.assemble((f"{active.get('project')}", "bold"), f": {active.get('strategy')} deployment "
                            f"{str(active.get('id') or '')[:8]}, {active.get('status')} since {since}")
    table = Table()
    table.add_column("arm", no_wrap=True)
    table.add_column("model", overflow="fold")
    table.add_column("version", justify="right", no_wrap=True)
    table.add_column("role", no_wrap=True)
    table.add_column("weight", justify="right", no_wrap=True)
    for a in active.get("arms") or []:
        table.add_row(str(a.get("arm")), str(a.get("model")), str(a.get("version")), str(a.get("role")),
                      _weight(a.get("current_weight", a.get("weight"))))
    parts: list[Any] = [heading, table]
    if active.get("strategy") == "canary" and active.get("schedule"):
        steps = ", ".join(f"{_weight(s.get('weight'))} after {s.get('after')}" for s in active["schedule"])
        parts.append(Text(f"canary arm {active.get('canary_arm')}: {steps}"))
    return Group(*parts)


def _arm_summary(strategy: Any, arm: dict[str, Any], canary_arm: Any) -> str:
    """``name=model@version``, then ``:weight`` in an A/B test, ``:shadow`` or ``:canary``."""
    text = f"{arm.get('arm')}={arm.get('model')}@{arm.get('version')}"
    if arm.get("role") == "shadow":
        return text + ":shadow"
    if strategy == "canary" and arm.get("arm") == canary_arm:
        return text + ":canary"
    return text + (f":{_weight(arm.get('weight'))}" if strategy == "ab" else "")


def history_table(project: str, history: list[dict[str, Any]]) -> Table:
    """Every deployment, newest first: when, strategy, status, the arms in one folded column."""
    table = Table(title=f"deployments of {project}")
    table.add_column("created", no_wrap=True)
    table.add_column("id", no_wrap=True)
    table.add_column("strategy", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("arms", overflow="fold", ratio=1)
    for d in history:
        arms = "  ".join(_arm_summary(d.get("strategy"), a, d.get("canary_arm")) for a in d.get("arms") or [])
        table.add_row(str(d.get("created_at") or "")[:16].replace("T", " "), str(d.get("id") or "")[:8], str(d.get("strategy")),
                      str(d.get("status")), arms)
    return table
