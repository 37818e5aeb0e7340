"""`pgmlops models`: the model registry."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from pgmlops.cli._common import Tenant, console, err_console, tenant_conn
from pgmlops.cli.training import metrics_table

app = typer.Typer(help="The model registry: models, versions, promotion.", no_args_is_help=True)


@app.command("list")
def models_list(tenant: Tenant = "", project: Annotated[str | None, typer.Option(help="Only this project's.")] = None) -> None:
    """The tenant's models: versions, aliases."""
    from pgmlops import models as registry

    with tenant_conn(tenant) as conn:
        models = registry.list_models(conn, project)
    table = Table("model", "project", "task", "versions", "latest", "aliases", "created")
    for m in models:
        aliases = ", ".join(f"{a}={v}" for a, v in sorted(m["aliases"].items()))
        table.add_row(m["name"], m["project"], m["task"], str(m["versions"]), str(m["latest_version"] or ""), aliases,
                      f"{m['created_at']:%Y-%m-%d %H:%M}")
    console.print(table)


@app.command("show")
def models_show(model: Annotated[str, typer.Argument(help="model, model@version or model@alias.")], tenant: Tenant = "") -> None:
    """A model with its versions, or one version with its metrics, tags and signature."""
    from pgmlops import models as registry

    with tenant_conn(tenant) as conn:
        info = registry.show(conn, model)
    if "versions" in info:
        console.print(f"[bold]{info['name']}[/bold] project {info['project']} ({info['task']}"
                      + (f", target {info['target']}" if info.get("target") else "") + ")")
        table = Table("version", "algorithm", "aliases", "metrics", "size", "created")
        for v in info["versions"]:
            metrics = ", ".join(f"{k} {val:.4g}" for k, val in sorted(v["metrics"].items())
                                if isinstance(val, int | float) and k not in ("train_seconds", "model_size_bytes"))
            table.add_row(str(v["version"]), v["algorithm"], ", ".join(v["aliases"]), metrics, f"{v['artifact_size']:,}",
                          str(v["created_at"])[:16])
        console.print(table)
        for alias, policy in sorted((info.get("policies") or {}).items()):
            console.print(f"policy for {alias}: {json.dumps(policy, sort_keys=True, default=str)}")
        return
    console.print(f"[bold]{info['model']}@{info['version']}[/bold] {info['algorithm']} project {info['project']} "
                  f"({info['task']}) aliases {', '.join(info['aliases']) or 'none'}; approvals {info['approvals']}, "
                  f"rejections {info['rejections']}")
    console.print(f"run {info['run_id']}  dataset {info['dataset_id']}  artifact {info['artifact_format']} "
                  f"{info['artifact_size']:,} bytes sha256 {info['artifact_sha256']}")
    console.print(f"hyperparams {json.dumps(info.get('hyperparams') or {}, sort_keys=True)}  tags "
                  f"{json.dumps(info.get('tags') or {}, sort_keys=True)}")
    console.print(metrics_table(info.get("metrics") or {}))
    inputs = ", ".join(f"{c['name']}:{c['dtype']}" for c in (info.get("signature") or {}).get("inputs", []))
    console.print(f"inputs {inputs}")


@app.command("promote")
def models_promote(
    model: str,
    version: int,
    alias: Annotated[str, typer.Option(help="The alias to move.")] = "champion",
    tenant: Tenant = "",
) -> None:
    """Point an alias at a version once every gate of the project's policy passes (ml.promote);
    a refusal lists each failed gate and changes nothing (exit 1)."""
    from pgmlops import models as registry

    with tenant_conn(tenant) as conn:
        try:
            out = registry.promote(conn, model, version, alias)
        except registry.PromotionRefused as exc:
            err_console.print(f"[red]refused[/red]: {str(exc).splitlines()[0]}")
            for failed in exc.failed:
                err_console.print(f"  - {failed}")
            raise typer.Exit(1) from None
    if out.get("changed"):
        previous = f" (was {out['previous_version']})" if out.get("previous_version") is not None else ""
        console.print(f"{model}@{alias} -> version {version}{previous}")
    else:
        console.print(f"{model}@{alias} already points at version {version}")
