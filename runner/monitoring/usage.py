"""Usage of a scoring pipeline: row counts against the recent norm, failed or empty runs, latency.

Batch: inputs come from the run store (what the score step recorded: ``rows_scored``,
``latency_ms_per_1k``, its status); findings have the columns of :func:`runner.monitoring.drift.compare`
with ``feature="usage"``, so they sort and store with the drift findings.

API: :func:`request_usage` condenses the rows of the warehouse's ``requests`` table (what ``runner serve``
answered) into request counts, the error rate and latency percentiles; :func:`request_findings` judges them
(``feature="api"``), and :func:`from_api` names the drift findings of the API's inputs and scores
(``api:<feature>``), so batch and API findings share one table without mixing.
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


API = "api"  # the feature of the API's usage findings, and the prefix of its drift findings (api:<feature>)
STATUS_RANK = {"ok": 0, "rejected": 1, "error": 2}  # a request's status is the worst of its rows'


def request_usage(requests: pd.DataFrame) -> dict:
    """Counts and latency of served requests: rows of the ``requests`` table (one per scored row).

    A request is a ``request_id`` received at one ``received_at`` (a caller may send the same X-Request-ID
    again: each time is a request of its own); its status is the worst of its rows' (``error`` over ``rejected``
    over ``ok``) and its latency the largest of its rows' (they share one). ``error_rate`` is the share of requests
    that are not ``ok``: ``rejected_rate`` (400/422, the caller's inputs) plus ``failed_rate`` (500, the server
    or the model). Latency percentiles (``latency_p50_ms`` ...) are over requests, NaN without any.
    """
    status = requests["status"].astype(str)
    timed = "received_at" in requests.columns
    keys = ["request_id", "received_at"] if timed else ["request_id"]
    per_request = pd.DataFrame({
        "request_id": requests["request_id"].astype(str),
        **({"received_at": requests["received_at"]} if timed else {}),
        "rank": status.map(STATUS_RANK).fillna(STATUS_RANK["error"]).astype(int),
        "latency_ms": pd.to_numeric(requests["latency_ms"], errors="coerce"),
    }).groupby(keys, sort=False, dropna=False).agg(rank=("rank", "max"), latency_ms=("latency_ms", "max"))
    count = len(per_request)
    rejected = int((per_request["rank"] == STATUS_RANK["rejected"]).sum())
    errors = int((per_request["rank"] == STATUS_RANK["error"]).sum())
    latency = per_request["latency_ms"].dropna().to_numpy(dtype=float)
    flags = requests["flags"] if "flags" in requests else pd.Series(index=requests.index, dtype=object)
    ok = status == "ok"
    found = {
        "requests": count, "rows": int(ok.sum()), "ok_requests": count - rejected - errors, "rejected": rejected,
        "errors": errors, "error_rate": (rejected + errors) / count if count else float("nan"),
        "rejected_rate": rejected / count if count else float("nan"),
        "failed_rate": errors / count if count else float("nan"),
        "flagged_rows": int((ok & flags.notna() & (flags.astype(str).str.len() > 0)).sum()),
    }
    for level in (50, 95, 99):
        found[f"latency_p{level}_ms"] = float(np.percentile(latency, level)) if len(latency) else float("nan")
    return found


def request_findings(usage: dict, thresholds: Thresholds = Thresholds(), *, window: str = "") -> pd.DataFrame:
    """Findings (``feature="api"``) from :func:`request_usage`: ``error_rate`` and ``latency_p99_ms`` are judged
    (``thresholds.api_error_rate``, ``thresholds.api_latency_p99_ms``); the rest is reported. No requests at all
    is a ``warn`` of its own (``requests`` 0): nothing was judged, and an API nobody called, or whose request log
    wrote nothing, is worth a look. ``usage`` may carry ``other_versions`` (rows another version answered)."""
    during = f" in {window}" if window else ""
    count = usage["requests"]
    if not count:
        return pd.DataFrame([(API, "usage", "requests", 0.0, np.nan, "warn",
                              f"no requests to the API{during}: nothing to judge; if `runner serve` ran, its /health "
                              "says whether the request log wrote")], columns=COLUMNS)
    p50, p95, p99 = (usage[f"latency_p{level}_ms"] for level in (50, 95, 99))
    found = [
        ("requests", float(count), "ok", f"{count:,} requests{during}, {usage['rows']:,} rows scored"),
        ("error_rate", usage["error_rate"], severity(usage["error_rate"], thresholds.api_error_rate),
         f"{usage['rejected'] + usage['errors']:,} of {count:,} requests not answered with scores: "
         f"{usage['rejected']:,} rejected (400/422), {usage['errors']:,} failed (500)"),
        ("rejected_rate", usage["rejected_rate"], "ok", f"{usage['rejected']:,} requests rejected: inputs that broke "
         "the signature, the data dictionary or the purpose"),
        ("failed_rate", usage["failed_rate"], "ok", f"{usage['errors']:,} requests failed in the server or the model"),
        ("latency_p50_ms", p50, "ok", f"median latency {p50:,.1f} ms"),
        ("latency_p95_ms", p95, "ok", f"95th percentile latency {p95:,.1f} ms"),
        ("latency_p99_ms", p99, severity(p99, thresholds.api_latency_p99_ms),
         f"99th percentile latency {p99:,.1f} ms (p50 {p50:,.1f}, p95 {p95:,.1f})"),
    ]
    if usage["rows"]:
        share = usage["flagged_rows"] / usage["rows"]
        found.append(("flagged_rate", share, "ok", f"{usage['flagged_rows']:,} rows scored with levels the model "
                                                   "never saw in training"))
    if usage.get("other_versions"):
        other = usage["other_versions"]
        found.append(("other_version_rows", float(sum(other.values())), "ok",
                      "rows answered by " + ", ".join(f"v{v} ({n:,})" for v, n in sorted(other.items()))
                      + ": in the usage figures, not judged against this version's reference"))
    return pd.DataFrame([(API, "usage", name, float(value), np.nan, verdict, detail)
                         for name, value, verdict, detail in found], columns=COLUMNS)


def from_api(findings: pd.DataFrame) -> pd.DataFrame:
    """Drift findings of the API's inputs and scores, named ``api:<feature>`` (``api:age``, ``api:score``)."""
    return findings.assign(feature=API + ":" + findings["feature"].astype(str))
