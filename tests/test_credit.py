"""The reference credit pipelines end to end, through the CLI, on the repo's own runner.yaml and notebooks."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from runner.cli import main
from runner.config import load_config
from runner.data import SnapshotStore, Warehouse
from runner.records import RunStore

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "runner.yaml")


def cli(*args: str):
    from click.testing import CliRunner

    return CliRunner().invoke(main, [*args, "--config", CONFIG], catch_exceptions=False)


@pytest.mark.slow
def test_a_short_replay_ingests_trains_registers_scores_and_monitors(runner_home, tmp_path):
    result = cli("demo", "--start", "2026-07", "--months", "1", "--train-every", "1")
    assert result.exit_code == 0, result.output
    assert "Demo finished: 5/5 runs succeeded" in result.stdout
    assert "mlflow ui --backend-store-uri sqlite:///" in result.stdout

    config = load_config(CONFIG)
    runs = {(r.pipeline, r.as_of): r for r in RunStore(config.stores.runs).list()}
    first_train = runs[("credit_train", "2026-06-30")].steps["train"]
    second_train = runs[("credit_train", "2026-07-31")].steps["train"]
    score_run = runs[("credit_score", "2026-07-31")]
    assert first_train.scraps["model_decision"] == "champion" and first_train.models == ["credit_default/1"]
    assert 0.6 < first_train.scraps["auc"] < 0.95
    assert second_train.scraps["model_decision"] in ("champion", "challenger")

    # versioned data: the training frame is stored once, content-addressed, and retrievable
    (digest,) = first_train.snapshots
    assert first_train.scraps["training_digest"] == digest
    out = tmp_path / "training.parquet"
    assert cli("data", "snapshot", digest, "--out", str(out)).exit_code == 0
    frame = pd.read_parquet(out)
    assert len(frame) == first_train.scraps["train_rows"] + first_train.scraps["holdout_rows"]
    assert "gender" not in frame.columns and "email" not in frame.columns
    assert SnapshotStore(config.stores.snapshots).list() == sorted({*first_train.snapshots, *second_train.snapshots})

    # governance: who, when, on what data
    version = MlflowClient(config.stores.tracking_uri).get_model_version("credit_default", "1")
    assert version.tags["training_data_digest"] == digest and version.tags["trained_by"]
    assert version.tags["run_id"] == runs[("credit_train", "2026-06-30")].run_id

    # lineage: every prediction names its run and model version; a month's rows written once
    warehouse = Warehouse(config.stores.warehouse_url)
    predictions = warehouse.read_predictions(run_id=score_run.run_id)
    champion = json.loads(cli("models", "credit_default", "--json").stdout)
    champion_version = next(v["version"] for v in champion["versions"] if "champion" in v["aliases"])
    assert len(predictions) == score_run.steps["score"].scraps["rows_scored"] > 1000
    assert set(predictions["model_version"]) == {champion_version}
    assert predictions["score"].between(0, 1).all()

    # drift from July: a new loan purpose is refused at ingest and shows in monitoring
    ingest = runs[("credit_ingest", "2026-07-31")].steps["ingest"]
    assert ingest.scraps["rows_rejected"] > 0
    monitor = score_run.steps["monitor"].scraps
    assert monitor["rows_rejected_at_ingest"] == ingest.scraps["rows_rejected"]
    assert monitor["status"] in ("ok", "warn", "alert")
    html = (Path(config.stores.runs) / "credit_score" / score_run.run_id / "monitor.html").read_text()
    assert "data:image/png;base64," in html
