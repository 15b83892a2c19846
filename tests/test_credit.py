"""The reference credit pipelines end to end, through the CLI, on the repo's own runner.yaml and notebooks.

One short replay (`runner demo`, one month) is run once for the module (``demo_home``); each test
works in a copy of its stores, so neither sees what the other ran.
"""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import mlflow.artifacts
import nbformat
import pandas as pd
import pytest
import yaml
from conftest import RUNNER_VARS
from mlflow.tracking import MlflowClient

from runner.cli import main
from runner.config import load_config
from runner.data.snapshots import SnapshotStore
from runner.data.warehouse import Warehouse
from runner.store.records import RunStore

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "runner.yaml")


def cli(*args: str):
    from click.testing import CliRunner

    return CliRunner().invoke(main, [*args, "--config", CONFIG], catch_exceptions=False)


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory, migrated_mlflow_db) -> tuple[Path, str]:
    """The stores after `runner demo --start 2026-07 --months 1 --train-every 1` (history load, then July
    with a retraining); returns the folder and what the demo printed."""
    home = tmp_path_factory.mktemp("credit-demo") / ".runner"
    home.mkdir()
    shutil.copy(migrated_mlflow_db, home / "mlflow.db")
    with pytest.MonkeyPatch.context() as env:
        for name in RUNNER_VARS + ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "RUNNER_USER"):
            env.delenv(name, raising=False)
        env.setenv("RUNNER_HOME", str(home))
        result = cli("demo", "--start", "2026-07", "--months", "1", "--train-every", "1")
    assert result.exit_code == 0, result.output
    return home, result.stdout


@pytest.fixture
def demo(demo_home, runner_home) -> str:
    """This test's RUNNER_HOME holds a copy of the demo's stores (MLflow's artifacts stay where the demo
    wrote them: runs of this test add their own, under their own run ids). Returns what the demo printed."""
    home, printed = demo_home
    shutil.rmtree(runner_home)
    shutil.copytree(home, runner_home)
    return printed


@pytest.mark.slow
@pytest.mark.timeout(900)  # its setup runs the demo, shared with the other test
def test_a_short_replay_ingests_trains_registers_scores_and_monitors(demo, tmp_path, monkeypatch):
    assert "Demo finished: 5/5 runs succeeded" in demo
    assert "mlflow ui --backend-store-uri sqlite:///" in demo

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
    assert monitor["status"] == "alert" and monitor["notifications"] == []  # nothing configured to notify
    assert any("crypto" in reason for reason in monitor["reasons"])
    html = (Path(config.stores.runs) / "credit_score" / score_run.run_id / "monitor.html").read_text()
    assert "data:image/png;base64," in html and "ALERT" in html

    # monitoring reads the reference profile stored with the version, and writes monitoring_metrics
    monkeypatch.setenv("MLFLOW_TRACKING_URI", config.stores.tracking_uri)
    profile = mlflow.artifacts.load_dict(version.tags["reference_profile"])
    assert {"income", "purpose", "score"} <= set(profile["columns"])
    metrics = warehouse.read_monitoring_metrics("credit_score")
    assert set(metrics["run_id"]) == {score_run.run_id} and set(metrics["step"]) == {"monitor"}
    by = metrics.set_index(["feature", "statistic"])
    assert {("income", "psi"), ("income", "ks"), ("income", "wasserstein"), ("purpose", "jensen_shannon"),
            ("purpose", "chi_square"), ("score", "score_psi"), ("usage", "rows_scored")} <= set(by.index)
    assert by.loc[("usage", "rows_scored"), "value"] == score_run.steps["score"].scraps["rows_scored"]
    new_level = metrics[(metrics["statistic"] == "new_level") & metrics["detail"].str.contains("crypto")]
    assert len(new_level) == 1 and new_level["severity"].iloc[0] == "alert"

    # backtesting, once the month's labels are in: every version on the same labelled applications
    result = cli("run", "credit_backtest", "--as-of", "2027-01-31")
    assert result.exit_code == 0, result.output
    backtest = RunStore(config.stores.runs).list("credit_backtest")[0].steps["backtest"].scraps
    assert backtest["backtest_month"] == "2026-07" and 0.6 < backtest["champion_auc"] < 0.95
    assert backtest["labelled_rows"] > 1000
    rows = warehouse.read_monitoring_metrics("credit_backtest")
    judged = set(rows.loc[rows["statistic"] == "auc", "feature"])
    assert {"model:v1", "model:v2", f"model:served v{champion_version}"} == judged
    assert "beats_champion" in set(rows["statistic"])


@pytest.fixture
def webhook():
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/alerts", received
    server.shutdown()


def project_config(tmp_path: Path, **changes) -> str:
    """The repo's runner.yaml with absolute paths (so it works from tmp_path) and ``changes`` on top."""
    raw = yaml.safe_load((ROOT / "runner.yaml").read_text())
    raw["dictionary"] = str(ROOT / raw["dictionary"])
    for pipeline in raw["pipelines"].values():
        for step in pipeline["steps"].values():
            step["notebook"] = str(ROOT / step["notebook"])
    raw.update(changes)
    path = tmp_path / "runner.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


@pytest.mark.slow
@pytest.mark.timeout(900)  # its setup may run the demo, shared with the other test
def test_alerts_reach_the_notifier_and_fail_on_fails_the_step_after_saving(demo, tmp_path, webhook):
    url, received = webhook
    failing = project_config(tmp_path, notify={"webhook": url, "events": ["warn", "alert"]},
                             monitoring={"fail_on": "alert"})
    from click.testing import CliRunner

    result = CliRunner().invoke(main, ["run", "credit_score", "--as-of", "2026-07-31", "--config", failing])
    assert result.exit_code == 1
    assert "MonitoringAlert: monitoring status is 'alert'" in result.output
    run = RunStore(load_config(failing).stores.runs).list("credit_score")[0]
    assert run.steps["monitor"].status == "failed" and run.steps["score"].status == "succeeded"
    executed = nbformat.read(Path(load_config(failing).stores.runs) / "credit_score" / run.run_id / "monitor.ipynb",
                             as_version=4)
    first = next(cell for cell in executed.cells if cell.get("outputs"))  # even when fail_on failed the step
    assert "runner-headline" in first.metadata["tags"] and ">ALERT<" in first.outputs[0]["data"]["text/html"]
    said = [out.get("data", {}).get("text/plain", "") for cell in executed.cells for out in cell.get("outputs", [])]
    assert f"notice sent to webhook {url}" in said
    [event] = received
    assert event["kind"] == "alert" and event["run_id"] == run.run_id and event["pipeline"] == "credit_score"
    assert any("crypto" in reason for reason in event["reasons"])
    saved = Warehouse(load_config(failing).stores.warehouse_url).read_monitoring_metrics("credit_score")
    assert run.run_id in set(saved["run_id"])  # the findings were stored before the step failed

    unreachable = project_config(tmp_path, notify={"webhook": "http://127.0.0.1:9/alerts", "timeout": 2})
    result = CliRunner().invoke(main, ["run", "credit_score", "--as-of", "2026-07-31", "--config", unreachable])
    assert result.exit_code == 0, result.output
    run = RunStore(load_config(unreachable).stores.runs).list("credit_score")[0]
    [delivery] = run.steps["monitor"].scraps["notifications"]
    assert delivery["ok"] is False and delivery["detail"].startswith("not reachable")
    assert run.steps["monitor"].scraps["status"] == "alert"
