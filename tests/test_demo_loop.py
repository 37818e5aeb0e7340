"""The demo's scenario (issue 13, "Tests"), seeded: a tuned champion serves simulated card
traffic; a fraud ring appears (concept drift); monitoring detects it within one window of two
simulated days; the retrain job's challenger is proven better offline, shadowed and promoted by
the maintenance run; the new champion's realized ROC AUC recovers to within 0.05 of the old
champion's before the drift. Every step is a row of ml.retraining_history, in order."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console

from pgmlops.db import tenant_context
from pgmlops.demo import run_demo

from .compile_helpers import one

Conn = psycopg.Connection[Any]


def test_the_demo_detects_the_drift_retrains_promotes_and_recovers(db_url: str, tmp_path: Path) -> None:
    out = io.StringIO()
    summary = run_demo(db_url, trials=6, workers=2, seed=7, report_path=tmp_path / "report.html",
                       console=Console(file=out, width=80, force_terminal=False))
    text = out.getvalue()

    # Detected in the first drifted window, not before it.
    assert summary.drift_window == 2 and summary.detected_window is not None
    assert summary.windows_to_detection is not None and summary.windows_to_detection <= 1
    assert [w["fired"] for w in summary.windows] == [False, True, False]  # the third is in cooldown
    assert summary.metric_before is not None and summary.metric_after_drift is not None
    assert summary.metric_after_drift < summary.metric_before - 0.08
    # The challenger is the champion now, and it recovers.
    assert summary.new_champion == summary.champion + 1
    assert summary.metric_new_champion is not None and summary.metric_new_champion >= summary.metric_before - 0.05
    # The third window's report is judged while the job runs: its skip (cooldown) row may come
    # before or after the job's steps.
    kinds = [d["kind"] for d in summary.decisions if d["kind"] != "skip"]
    assert kinds == ["trigger", "curate", "train", "evaluate", "shadow", "promote"], kinds
    assert [d["kind"] for d in summary.decisions].count("skip") == 1
    evaluate = next(d for d in summary.decisions if d["kind"] == "evaluate")
    assert evaluate["decision"] == "better" and evaluate["test_results"]["test"] == "delong"
    assert summary.decisions[-1]["reason"].startswith(f"fraud@{summary.new_champion} promoted to champion")
    with psycopg.connect(db_url, autocommit=True) as conn, tenant_context(conn, summary.tenant_id):
        deployment = one(conn, "select ml.deployment('fraud')")
        assert [a["version"] for a in deployment["arms"]] == [summary.new_champion]
        assert one(conn, "select count(*) from ml.tuning_trials t join ml.tuning_studies s on s.id = t.study_id"
                         " join ml.projects p on p.id = s.project_id where p.name = 'fraud'") == 6
    # The HTML report, and a narrated summary whose tables fit 80 columns.
    assert (tmp_path / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert max(map(len, text.splitlines())) <= 80
    assert "monitoring: a drift report per 2 simulated days" in text
    assert "retraining decisions (ml.retraining_history)" in text
    assert f"before the drift and {summary.metric_after_drift:.3f} after it" in " ".join(text.split())
