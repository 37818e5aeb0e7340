"""`pgmlops events`: recent and live events."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from pgmlops import events as events_mod
from pgmlops.cli._common import console, database_url
from pgmlops.db import connect


def events(
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events.")] = False,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's events.")] = None,
    topic: Annotated[list[str] | None, typer.Option(help="Only these topics.")] = None,
    limit: Annotated[int, typer.Option(help="Recent events to show first.")] = 20,
    timeout: Annotated[float | None, typer.Option(help="With --follow: stop after this many quiet seconds.")] = None,
) -> None:
    """Print recent events, and with --follow every new one as it is announced."""
    url = database_url()

    def show(ev: events_mod.Event) -> None:
        console.print(f"[dim]{ev.at:%H:%M:%S.%f}[/dim] [bold]{ev.event}[/bold] tenant={ev.tenant_id} "
                      f"{json.dumps(ev.data, default=str)}", highlight=False)

    with connect(url, autocommit=True) as conn:
        for ev in events_mod.recent(conn, limit, topics=topic):
            if tenant is None or ev.tenant_id == tenant:
                show(ev)
    if follow:
        try:
            for ev in events_mod.subscribe(url, tenant_id=tenant, topics=topic, timeout=timeout):
                show(ev)
        except KeyboardInterrupt:
            pass
