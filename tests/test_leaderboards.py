"""The tuning leaderboards of `pgmlops tune --watch` and `pgmlops demo` fit an 80-column terminal:
no line wider than 80 columns, and no column title cut short ("COMPLE…", "learni…")."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

from rich.cells import cell_len
from rich.console import Console

from pgmlops.cli.training import _leaderboard, _progress_view
from pgmlops.demo._demo import _PARAM_TITLES, SEARCH_SPACE, _leaderboard_table

WIDTH = 80


def render(renderable: Any) -> list[str]:
    console = Console(width=WIDTH, record=True, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text(styles=False).splitlines()


def header(lines: list[str]) -> str:
    """The header row(s) of a table drawn with rich's default box (titles between ┃)."""
    rows = [line for line in lines if "┃" in line]
    assert rows, "\n".join(lines)
    return "\n".join(rows)


def assert_fits(lines: list[str]) -> None:
    too_wide = [line for line in lines if cell_len(line) > WIDTH]
    assert not too_wide, "wider than 80 columns:\n" + "\n".join(too_wide)


def assert_titles_whole(lines: list[str], titles: list[str]) -> None:
    head = header(lines)
    assert "…" not in head, head
    cells = [cell.strip() for row in head.splitlines() for cell in row.strip("┃").split("┃")]
    for title in titles:
        assert title in cells, f"column title {title!r} is not whole in:\n{head}"


def trials(n: int, params: dict[str, Any]) -> list[dict[str, Any]]:
    states = ["COMPLETE", "COMPLETE", "PRUNED", "COMPLETE", "FAIL"]
    return [{"number": i, "state": states[i % len(states)],
             "value": 0.9 + i / 1000 if states[i % len(states)] == "COMPLETE" else None,
             "duration": timedelta(seconds=13.25 * i), "params": {k: (v * (i + 1) if isinstance(v, float) else v)
                                                                  for k, v in params.items()}}
            for i in range(n)]


def progress(metric: str = "roc_auc", **overrides: Any) -> dict[str, Any]:
    return {"status": "running", "n_trials": 400, "finished": 123, "complete": 100, "pruned": 20, "failed": 3,
            "running": 16, "metric": metric, "direction": "maximize", "best_value": 0.987654321, "best_trial": 117,
            **overrides}


DEMO_PARAMS = {"learning_rate": 0.0123456789, "max_iter": 150, "max_leaf_nodes": 31, "min_samples_leaf": 40}
# A search space a user might tune: many parameters, long names, a long categorical choice.
WIDE_PARAMS = {"learning_rate": 0.0123456789, "max_iter": 1500, "max_leaf_nodes": 255, "min_samples_leaf": 400,
               "l2_regularization": 0.000123456, "max_features": 0.75, "interaction_cst": "no_interactions_between_groups",
               "validation_fraction": 0.1, "n_iter_no_change": 25}


def test_the_tune_leaderboard_fits_80_columns() -> None:
    for metric, params in [("roc_auc", DEMO_PARAMS), ("precision_at_k", WIDE_PARAMS)]:
        rows = trials(40, params)
        lines = render(_leaderboard(rows, progress(metric)))
        assert_fits(lines)
        assert_titles_whole(lines, ["#", "trial", metric, "secs", "params"])
        text = "".join(line.replace("│", "").replace(" ", "") for line in lines)
        for name in params:  # every parameter is shown, wrapped rather than cut
            assert f"{name}=" in text, name


def test_the_tune_progress_fits_80_columns() -> None:
    for metric in ("roc_auc", "precision_at_k"):
        lines = render(_progress_view(progress(metric)))
        assert_fits(lines)
        assert not any("…" in line for line in lines), lines
        text = "\n".join(lines)
        assert "123/400 trials" in text and f"best {metric} 0.987654 (trial 117)" in text, text
    lines = render(_progress_view(progress(best_value=None, best_trial=None, finished=0)))
    assert_fits(lines)
    assert "0/400 trials" in "\n".join(lines)


def test_the_demo_leaderboard_fits_80_columns_and_explains_its_abbreviations() -> None:
    assert set(_PARAM_TITLES) == set(SEARCH_SPACE), "every hyperparameter the demo searches needs a short title"
    rows = [(t["number"], t["state"], t["value"], t["params"], t["duration"].total_seconds())
            for t in trials(10, DEMO_PARAMS)]
    lines = render(_leaderboard_table(rows, 12))
    assert_fits(lines)
    assert_titles_whole(lines, ["trial", "state", "ROC AUC", *_PARAM_TITLES.values(), "secs"])
    text = "\n".join(lines)
    for name, short in _PARAM_TITLES.items():
        assert f"{short} = {name}" in text, f"the caption does not explain {short!r}:\n{text}"
    assert "complete" in text and "pruned" in text
