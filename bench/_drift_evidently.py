"""The Evidently side of ``bench.drift``, run in a process of its own so that its peak memory is
its own: ``python -m bench._drift_evidently '<json spec>'``.

The spec names the database URL, the tenant, the training set's table, the prediction log's
filter (project, model version, window) and the features. The process imports Evidently, then
(timed) loads both tables out of PostgreSQL the fastest reasonable way a user would: ``COPY
(select typed columns ...) TO STDOUT`` as CSV, read by ``pandas.read_csv(engine="pyarrow")``
(the current features read out of ``ml.predictions.features`` by ``->>`` and cast), builds the
Evidently datasets and runs ``Report([DataDriftPreset()])``; it prints one JSON line: the
timings, its peak resident memory (``getrusage(RUSAGE_SELF).ru_maxrss`` and ``VmHWM``) and
Evidently's decision per column and for the dataset.
"""

from __future__ import annotations

import io
import json
import resource
import sys
import time
import warnings
from typing import Any

import pandas as pd
import psycopg
from psycopg import sql


def _copy_frame(conn: psycopg.Connection[Any], query: sql.Composable, categorical: list[str]) -> pd.DataFrame:
    buf = io.BytesIO()
    with conn.cursor().copy(sql.SQL("copy ({}) to stdout with (format csv, header)").format(query)) as copy:
        for chunk in copy:
            buf.write(chunk)
    buf.seek(0)
    return pd.read_csv(buf, engine="pyarrow", dtype={c: "string" for c in categorical}).astype(
        {c: object for c in categorical})


def _vmhwm_kib() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def evidently_decisions(run: Any) -> dict[str, Any]:
    """{column: {test, value, threshold, drifted}} and ``__dataset__`` {share, drifted} from an
    Evidently 0.7 report run (its ValueDrift and DriftedColumnsCount metrics)."""
    out: dict[str, Any] = {}
    share = None
    for metric in run.dict()["metrics"]:
        name = metric["metric_name"]
        if name.startswith("ValueDrift("):
            params = dict(p.split("=", 1) for p in name[len("ValueDrift("):-1].split(","))
            value = float(metric["value"])
            threshold = float(params["threshold"])
            method = params["method"]
            if "p_value" in method:
                drifted = value <= threshold if method.startswith("K-S") else value < threshold
            else:
                drifted = value >= threshold
            out[params["column"]] = {"test": method, "value": value, "threshold": threshold, "drifted": drifted}
        elif name.startswith("DriftedColumnsCount"):
            share = float(metric["value"]["share"])
    out["__dataset__"] = {"share": share, "drifted": share is not None and share >= 0.5}
    return out


def main(spec: dict[str, Any]) -> dict[str, Any]:
    t_start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from evidently import DataDefinition, Dataset, Report  # type: ignore[import-untyped]
        from evidently.presets import DataDriftPreset  # type: ignore[import-untyped]
    t_imported = time.perf_counter()
    numeric, categorical = spec["numeric"], spec["categorical"]
    with psycopg.connect(spec["url"], autocommit=True) as conn:
        ref_query = sql.SQL("select {} from {}").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in numeric + categorical), sql.SQL(spec["reference_table"]))
        cur_cols = [sql.SQL("(features ->> {})::float8 as {}").format(sql.Literal(c), sql.Identifier(c)) for c in numeric]
        cur_cols += [sql.SQL("features ->> {} as {}").format(sql.Literal(c), sql.Identifier(c)) for c in categorical]
        cur_query = sql.SQL("select {} from ml.predictions where tenant_id = {} and project_id = {} and model_version_id = {} "
                            "and shadow_of is null and created_at >= {} and created_at < {}").format(
            sql.SQL(", ").join(cur_cols), sql.Literal(spec["tenant"]), sql.Literal(spec["project_id"]),
            sql.Literal(spec["model_version_id"]), sql.Literal(spec["window_start"]), sql.Literal(spec["window_end"]))
        reference = _copy_frame(conn, ref_query, categorical)
        t_ref = time.perf_counter()
        current = _copy_frame(conn, cur_query, categorical)
    t_loaded = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
        run = Report([DataDriftPreset()]).run(Dataset.from_pandas(current, data_definition=definition),
                                              Dataset.from_pandas(reference, data_definition=definition))
        decisions = evidently_decisions(run)
    t_done = time.perf_counter()
    return {
        "rows": {"reference": len(reference), "current": len(current)},
        "seconds": {"import": t_imported - t_start, "load_reference": t_ref - t_imported, "load_current": t_loaded - t_ref,
                    "load": t_loaded - t_imported, "report": t_done - t_loaded, "load_and_report": t_done - t_imported},
        "frame_mib": {"reference": reference.memory_usage(deep=True).sum() / 2**20,
                      "current": current.memory_usage(deep=True).sum() / 2**20},
        "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "vmhwm_kib": _vmhwm_kib(),
        "decisions": decisions,
        "versions": {"evidently": __import__("evidently").__version__, "pandas": pd.__version__},
    }


if __name__ == "__main__":
    result = main(json.loads(sys.argv[1]))
    sys.stdout.write("\n" + json.dumps(result) + "\n")
