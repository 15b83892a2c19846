"""Replay a year of monthly batches through the reference credit pipelines (``make demo``).

First a history load (ingest of earlier months, then the first training), then month by month:
ingest, train every ``train_every`` months, score and monitor. The demo data drift from July on
(lower incomes, a new loan purpose, more missing values), so the monitor's status changes.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from runner.config import Config
from runner.run.pipeline import RunObserver, run, step_processes
from runner.run.plan import RunRequest
from runner.store.records import RunRecord

INGEST, TRAIN, SCORE, BACKTEST = "credit_ingest", "credit_train", "credit_score", "credit_backtest"
MODEL = "credit_default"


@dataclass(frozen=True)
class DemoPlan:
    start: str = "2026-01"
    months: int = 12
    train_every: int = 3
    history_months: int = 6
    label_delay_months: int = 6  # backtests start once the first scored month's labels are in (runner.yaml)


def month_end(month: str) -> str:
    return pd.Period(month, freq="M").end_time.date().isoformat()


def steps(plan: DemoPlan) -> list[RunRequest]:
    """Every run of the replay, in order."""
    before = str(pd.Period(plan.start, freq="M") - 1)
    requests = [
        RunRequest(INGEST, {"ingest": {"history_months": plan.history_months - 1}}, month_end(before), "backfill"),
        RunRequest(TRAIN, {}, month_end(before), "backfill"),
    ]
    for index in range(plan.months):
        month = str(pd.Period(plan.start, freq="M") + index)
        requests.append(RunRequest(INGEST, {}, month_end(month), "backfill"))
        if (index + 1) % plan.train_every == 0:
            requests.append(RunRequest(TRAIN, {}, month_end(month), "backfill"))
        requests.append(RunRequest(SCORE, {}, month_end(month), "backfill"))
        if index >= plan.label_delay_months:
            requests.append(RunRequest(BACKTEST, {}, month_end(month), "backfill"))
    return requests


def reset(config: Config) -> list[str]:
    """Remove the embedded stores, so the replay starts from an empty project. Returns what went."""
    stores = config.stores
    removed = []
    home = stores.home
    snapshots = [] if "://" in stores.snapshots else [Path(stores.snapshots)]  # a bucket is nobody's demo store
    for path in (home / "mlflow.db", home / "warehouse.db", home / "warehouse.db-wal", home / "warehouse.db-shm",
                 home / "mlartifacts", home / "runs", home / "logs", *snapshots):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(str(path))
    return removed


def replay(
    config: Config,
    plan: DemoPlan,
    observer: RunObserver | None = None,
    on_run: Callable[[RunRecord], None] | None = None,
) -> list[RunRecord]:
    """Run every request of ``plan``; stops at the first run that does not succeed."""
    records = []
    processes = step_processes(config, keep_warm=1)  # the next step's process warms while one runs
    try:
        for request in steps(plan):
            record = run(config, request, observer=observer, processes=processes)
            records.append(record)
            if on_run:
                on_run(record)
            if record.status != "succeeded":
                break
    finally:
        processes.close()
    return records


def summary(config: Config, records: list[RunRecord]) -> dict:
    """What a person wants to know after the replay."""
    from runner.tracking.registry import Registry

    champion = Registry(config.stores.tracking_uri).by_alias(MODEL, "champion")
    trains = [r for r in records if r.pipeline == TRAIN and r.status == "succeeded"]
    scores = [r for r in records if r.pipeline == SCORE and r.status == "succeeded"]
    monitor = [r.steps["monitor"].scraps for r in scores]
    return {
        "runs": len(records),
        "succeeded": sum(r.status == "succeeded" for r in records),
        "failed": [r.run_id for r in records if r.status != "succeeded"],
        "champion_version": champion and champion["version"],
        "champion_reason": champion and champion["tags"].get("promotion_reason"),
        "latest_auc": trains[-1].steps["train"].scraps.get("auc") if trains else None,
        "drift_by_month": [(r.as_of[:7], m.get("status"), m.get("max_psi")) for r, m in zip(scores, monitor)],
        "backtests": [(b["backtest_month"], b["backtest_status"], b.get("champion_auc"))
                      for b in (r.steps["backtest"].scraps for r in records
                                if r.pipeline == BACKTEST and r.status == "succeeded")],
        "run_store": config.stores.runs,
        "mlflow_ui": f"{Path(sys.executable).parent / 'mlflow'} ui --backend-store-uri {config.stores.tracking_uri} --port 5000",
    }
