"""Usage of a scoring pipeline: row counts against the recent norm, failed or empty runs, latency.

Inputs come from the run store (what the score step recorded: ``rows_scored``,
``latency_ms_per_1k``, its status); findings have the columns of :func:`runner.monitoring.drift.compare`
with ``feature="usage"``, so they sort and store with the drift findings.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from runner.config import Thresholds
from runner.monitoring.drift import COLUMNS, severity
MIN_JUDGED_S = 2.0  # scoring shorter than this is dominated by start-up noise: its latency is shown, not judged


def usage_findings(rows: int, latency_ms_per_1k: float | None, history: pd.DataFrame,
                   thresholds: Thresholds = Thresholds()) -> pd.DataFrame:
    """Findings for the current run against ``history``: earlier runs, newest last.

    ``history`` has one row per earlier run with ``status``, ``rows_scored`` and ``latency_ms_per_1k``
    (the score step's scraps; a column may be missing when no run recorded it).
    The norm is the median of the succeeded runs among them; failed runs count since the last
    succeeded one (a run that wrote no rows counts as failed).
    """
    history = history.reindex(columns=["status", "rows_scored", "latency_ms_per_1k"])
    produced = pd.to_numeric(history["rows_scored"], errors="coerce").fillna(0) > 0
    good = history[(history["status"] == "succeeded") & produced]
    found = [("rows_scored", float(rows), "alert" if rows == 0 else "ok",
              "the run scored no rows" if rows == 0 else f"{rows:,} rows scored")]
    if rows and len(good):
        norm = float(good["rows_scored"].median())
        distance = abs(rows - norm) / norm
        found.append(("row_count", distance, severity(distance, thresholds.row_count),
                      f"{rows:,} rows vs a median of {norm:,.0f} over the last {len(good)} runs"))
    elif rows:
        found.append(("row_count", np.nan, "ok", "no earlier runs to compare the row count with"))
    bad = ~((history["status"] == "succeeded") & produced)
    since = int(np.cumprod(bad.to_numpy()[::-1]).sum())  # consecutive bad runs just before this one
    found.append(("failed_runs", float(since), severity(float(since), thresholds.failed_runs),
                  f"{int(since)} failed, interrupted or empty run(s) since the last good one"))
    latencies = pd.to_numeric(good["latency_ms_per_1k"], errors="coerce").dropna()
    if latency_ms_per_1k is not None and len(latencies):
        norm = float(latencies.median())
        rise = latency_ms_per_1k / norm - 1
        seconds = latency_ms_per_1k * rows / 1e6
        judged = seconds >= MIN_JUDGED_S
        found.append(("latency_increase", rise, severity(rise, thresholds.latency_increase) if judged else "ok",
                      f"{latency_ms_per_1k:,.1f} ms per 1,000 rows vs a median of {norm:,.1f}"
                      + ("" if judged else f" (not judged: {seconds:.1f}s of scoring is mostly start-up noise)")))
    return pd.DataFrame([("usage", "usage", name, value, np.nan, verdict, detail)
                         for name, value, verdict, detail in found], columns=COLUMNS)
