"""`pgmlops demo`: the main job."""

from __future__ import annotations

from typing import Annotated

import typer

from pgmlops.cli._common import console, state


def demo(
    trials: Annotated[int, typer.Option(min=2, max=200, help="Tuning trials (on the worker processes).")] = 20,
    workers: Annotated[int, typer.Option(min=1, max=16, help="Worker processes.")] = 2,
) -> None:
    """Run the whole loop on the embedded default (or DATABASE_URL): features, a point-in-time
    training set, tuning on worker processes, a deployed champion, traffic with delayed feedback,
    concept drift detected, a challenger retrained, proven better, shadowed and promoted, an HTML
    report."""
    from pgmlops.demo import run_demo

    run_demo(state.url, trials=trials, workers=workers, console=console)
