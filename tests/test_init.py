"""`runner init` makes a project a stranger can run: its pipelines, every template, work by hand, MLflow lineage.

The project here is the starter project (a churn model on `customers`), not the credit demo: other table,
key, label and model names. The slow tests share one project made and trained once (module fixture) and
run the real CLI in processes, as a user would; they assert on MLflow's records, the warehouse's rows and
the files on disk.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import nbformat
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

BIN = Path(sys.executable).parent


def cli(*args: str, env: dict | None = None, ok: bool = True):
    """``runner ARGS`` in this process (click's runner; step processes and kernels are real all the same)."""
    from click.testing import CliRunner

    from runner.cli import main

    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, f"runner {' '.join(args)}: {result.stdout}\n{result.stderr}"
    return result


class Churn:
    """The starter project with its own stores, run through the CLI."""

    def __init__(self, root: Path):
        self.root = root
        self.home = root / ".runner"
        self.config = str(root / "runner.yaml")
        self.env = {"RUNNER_HOME": str(self.home), "RUNNER_USER": "ci", "RUNNER_CONFIG": None,
                    "MLFLOW_TRACKING_URI": None, "MLFLOW_RUN_ID": None, "MLFLOW_EXPERIMENT_ID": None}

    def cli(self, command: str, *args: str, ok: bool = True):
        return cli(command, "--config", self.config, *args, env=self.env, ok=ok)

    def run(self, pipeline: str, *args: str, ok: bool = True) -> dict:
        return self.record(self.cli("run", pipeline, *args, ok=ok).stdout.split()[1])  # "run <id> <status> in ..."

    def record(self, run_id: str) -> dict:
        return json.loads(self.cli("show", run_id, "--json").stdout)

    @property
    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=f"sqlite:///{self.home / 'mlflow.db'}")

    def sql(self, query: str) -> pd.DataFrame:
        engine = sa.create_engine(f"sqlite:///{self.home / 'warehouse.db'}")
        with engine.connect() as conn:
            return pd.read_sql(sa.text(query), conn)

    def runs_of(self, pipeline: str, run_id: str) -> list:
        experiment = self.client.get_experiment_by_name(pipeline)
        return self.client.search_runs([experiment.experiment_id], f"tags.`runner.run_id` = '{run_id}'")

    def by_hand(self, notebook: str, user: str = "bob") -> None:
        """Execute a notebook with bare papermill, as a data scientist would outside the runner."""
        path = self.root / "notebooks" / notebook
        out = self.root / f"by-hand-{path.name}"
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("RUNNER_", "MLFLOW_"))},
               "RUNNER_HOME": str(self.home), "RUNNER_USER": user}
        done = subprocess.run([str(BIN / "papermill"), str(path), str(out), "-k", "python3", "--cwd", str(path.parent)],
                              capture_output=True, text=True, timeout=900, env=env)
        assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def churn(tmp_path_factory) -> Churn:
    root = tmp_path_factory.mktemp("starter") / "churn"
    cli("init", str(root))
    project = Churn(root)
    project.ingest = project.run("churn_ingest")
    project.train = project.run("churn_train")
    return project


def test_init_writes_a_documented_project_that_validates_and_never_overwrites(tmp_path):
    root = tmp_path / "new"
    done = cli("init", str(root))
    for name in ("runner.yaml", "data/dictionary.yaml", ".gitignore", "schemas/runner.schema.json",
                 "data/example/customers.csv", *(f"notebooks/{p}/{s}.ipynb" for p, s in (
                     ("churn_ingest", "ingest"), ("churn_train", "train"), ("churn_score", "score"),
                     ("churn_score", "monitor"), ("churn_backtest", "backtest")))):
        assert (root / name).is_file(), name
        assert f"created {name}" in done.stdout
    assert ".runner/" in (root / ".gitignore").read_text().splitlines()
    config = (root / "runner.yaml").read_text()
    assert config.startswith("# yaml-language-server: $schema=schemas/runner.schema.json")
    for name, schema in (("runner.yaml", "runner"), ("data/dictionary.yaml", "dictionary")):
        jsonschema.validate(yaml.safe_load((root / name).read_text()),
                            json.loads((root / "schemas" / f"{schema}.schema.json").read_text()))
    dictionary = (root / "data" / "dictionary.yaml").read_text()
    for key in ("purposes:", "key:", "type:", "nullable:", "pii:", "owner:", "allowed_purposes:", "min:", "levels:",
                "pattern:", "rule:"):
        assert key in dictionary, key
    for path in (root / "notebooks").rglob("*.ipynb"):
        assert "{{" not in path.read_text()
        assert "credit" not in path.read_text() and "applications" not in path.read_text()
    validated = cli("validate", "--config", str(root / "runner.yaml"))
    assert validated.stdout.count("ok churn_") == 4

    before = (root / "runner.yaml").read_bytes()
    again = cli("init", str(root), ok=False)
    assert again.exit_code == 2 and again.stderr.count("\n") == 1 and "already exists" in again.stderr
    assert (root / "runner.yaml").read_bytes() == before


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_starter_pipelines_run_and_resume_and_everything_a_step_logs_lands_in_its_run(churn, monkeypatch):
    assert churn.ingest["status"] == "succeeded" and churn.train["status"] == "succeeded"
    ingest = churn.ingest["steps"]["ingest"]["scraps"]
    assert ingest["rows_written"] > 4000 and ingest["rows_rejected"] > 0  # the example's broken rows are refused

    # The score pipeline's monitor step fails once (a bug, fixed right after); `runner resume` reuses the score
    # step, and the monitor then judges the predictions the reused step wrote under the run it came from.
    monitor_notebook = churn.root / "notebooks" / "churn_score" / "monitor.ipynb"
    original = monitor_notebook.read_bytes()
    broken = nbformat.reads(original.decode(), as_version=4)
    broken.cells.insert(3, nbformat.v4.new_code_cell('raise RuntimeError("fixed in the next commit")'))
    monitor_notebook.write_text(nbformat.writes(broken))
    try:
        failed = churn.run("churn_score", ok=False)
    finally:
        monitor_notebook.write_bytes(original)
    assert failed["steps"]["score"]["status"] == "succeeded" and failed["steps"]["monitor"]["status"] == "failed"
    score = churn.record(churn.cli("resume", failed["run_id"]).stdout.split()[1])
    assert score["steps"]["score"]["reused_from"] == failed["run_id"]
    backtest = churn.run("churn_backtest")
    assert score["status"] == backtest["status"] == "succeeded"

    # MLflow: a parent run and one run per step each pipeline run executed; nothing else.
    for record in (churn.ingest, churn.train, failed, score, backtest):
        executed = {name: step for name, step in record["steps"].items() if not step.get("reused_from")}
        runs = churn.runs_of(record["pipeline"], record["run_id"])
        assert len(runs) == 1 + len(executed), [r.info.run_name for r in runs]
        assert {r.info.run_id for r in runs} == {record["mlflow_run_id"],
                                                  *(s["mlflow_run_id"] for s in executed.values())}
    train_run = churn.train["steps"]["train"]["mlflow_run_id"]
    version = churn.client.get_model_version("churn", "1")
    assert version.run_id == train_run and version.tags["runner.step_status"] == "succeeded"
    assert version.tags["runner.namespace"] == "production" and version.tags["table"] == "customers"
    assert str(churn.client.get_model_version_by_alias("churn", "champion").version) == "1"
    logged = churn.client.get_run(train_run)
    assert [i.dataset.name for i in logged.inputs.dataset_inputs] == ["training"]
    assert logged.outputs.model_outputs, "the registered model is an output of the train step's run"
    artifacts = {a.path for a in churn.client.list_artifacts(train_run)} | {
        a.path for a in churn.client.list_artifacts(train_run, "figures")}
    assert {"figures/roc.png", "churn", "train.ipynb"} <= artifacts
    monitor_run = score["steps"]["monitor"]["mlflow_run_id"]
    assert "figures/overlays.png" in {a.path for a in churn.client.list_artifacts(monitor_run, "figures")}

    # The warehouse: the scoring run's predictions, production's, one per scored row; monitoring rows of the
    # resumed run's monitor, which saw every one of those scores.
    scraps = failed["steps"]["score"]["scraps"]
    rows = churn.sql(f"SELECT namespace, COUNT(*) AS n FROM predictions WHERE run_id = '{failed['run_id']}' "
                     "GROUP BY namespace")
    assert rows.to_dict("records") == [{"namespace": "production", "n": scraps["rows_scored"]}]
    monitor = score["steps"]["monitor"]["scraps"]
    assert monitor["scores_monitored"] == scraps["rows_scored"] > 0 and monitor["status"] in ("ok", "warn")
    assert not any("no scores" in reason or "no input rows" in reason for reason in monitor["reasons"])
    assert len(churn.sql(f"SELECT * FROM monitoring_metrics WHERE run_id = '{score['run_id']}'")) > 10
    judged = backtest["steps"]["backtest"]["scraps"]
    assert judged["backtest_status"] in ("ok", "warn") and judged["champion_auc"] > 0.7

    # The registered model's pyfunc predict is the positive class's probability, as its signature says.
    import mlflow.pyfunc

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{churn.home / 'mlflow.db'}")
    served = mlflow.pyfunc.load_model("models:/churn/1")
    estimator = served.unwrap_python_model().estimator
    batch = churn.sql("SELECT * FROM customers LIMIT 50")[list(estimator.feature_names_in_)]
    batch = batch.astype({c: "float64" for c in batch.columns if c in ("tenure_months", "support_calls")})
    predicted = served.predict(batch)
    assert predicted.shape == (50,) and ((predicted >= 0) & (predicted <= 1)).all()
    assert predicted == pytest.approx(estimator.predict_proba(batch)[:, 1])
    assert served.metadata.signature.outputs.to_dict()[0]["tensor-spec"]["dtype"] == "float64"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_notebooks_run_by_hand_stay_in_their_authors_namespace(churn):
    champion = str(churn.client.get_model_version_by_alias("churn", "champion").version)
    production_rows = len(churn.sql("SELECT run_id FROM predictions WHERE namespace = 'production'"))
    experiment = churn.client.get_experiment_by_name("churn_train").experiment_id
    runs_before = {r.info.run_id for r in churn.client.search_runs([experiment])}

    churn.by_hand("churn_train/train.ipynb")
    by_hand = [r for r in churn.client.search_runs([experiment]) if r.info.run_id not in runs_before]
    assert len(by_hand) == 1 and by_hand[0].data.tags["runner.namespace"] == "user:bob"  # one execution, one run
    assert by_hand[0].data.metrics["auc"] > 0.5  # nb.glue's numbers are metrics of it
    versions = churn.client.search_model_versions("name = 'churn'")
    mine = [v for v in versions if v.tags.get("runner.namespace") == "user:bob"]
    assert len(mine) == 1 and mine[0].run_id == by_hand[0].info.run_id
    assert str(churn.client.get_model_version_by_alias("churn", "champion").version) == champion
    aliases = churn.client.get_registered_model("churn").aliases
    assert str(mine[0].version) not in {str(v) for v in aliases.values()}
    listed = json.loads(churn.cli("models", "churn", "--json").stdout)["versions"]
    assert str(mine[0].version) not in [v["version"] for v in listed]
    every = json.loads(churn.cli("models", "churn", "--all", "--json").stdout)["versions"]
    assert str(mine[0].version) in [v["version"] for v in every]
    refused = churn.cli("promote", "churn", str(mine[0].version), "--reason", "x", ok=False)
    assert refused.exit_code == 1 and "trained by hand in namespace user:bob" in refused.stderr

    churn.by_hand("churn_score/score.ipynb")
    assert len(churn.sql("SELECT run_id FROM predictions WHERE namespace = 'production'")) == production_rows
    assert len(churn.sql("SELECT run_id FROM predictions WHERE namespace = 'user:bob'")) > 0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_train_step_that_fails_after_registering_leaves_a_failed_version_without_alias(churn):
    failing = churn.root / "notebooks" / "churn_train" / "train_then_fail.ipynb"
    notebook = nbformat.read(str(churn.root / "notebooks" / "churn_train" / "train.ipynb"), as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell('raise RuntimeError("a check after registering failed")'))
    nbformat.write(notebook, str(failing))
    config = churn.root / "fails.yaml"
    config.write_text(yaml.safe_dump({"pipelines": {"churn_train": {"purpose": "churn_modelling", "steps": {
        "train": {"notebook": "notebooks/churn_train/train_then_fail.ipynb"}}}}, "models": {"churn": {"margin": 0}}}))
    champion = str(churn.client.get_model_version_by_alias("churn", "champion").version)
    done = cli("run", "churn_train", "--config", str(config), env=churn.env, ok=False)
    assert done.exit_code == 1 and "a check after registering failed" in done.stdout
    newest = max(churn.client.search_model_versions("name = 'churn'"), key=lambda v: int(v.version))
    assert newest.tags["runner.step_status"] == "failed" and newest.tags["runner.namespace"] == "production"
    assert str(newest.version) not in {str(v) for v in churn.client.get_registered_model("churn").aliases.values()}
    assert str(churn.client.get_model_version_by_alias("churn", "champion").version) == champion


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_template_runs_as_a_step_made_by_runner_new(churn, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(churn.root, root)
    project = Churn(root)
    for kind in ("ingest", "train", "score", "monitor", "backtest"):
        project.cli("new", kind, kind, "--pipeline", "extra", "--purpose", "churn_modelling", "--table", "customers",
                    "--label", "churned", "--model", "churn_extra")
    project.cli("validate", "extra")
    extra = project.run("extra")
    assert {name: step["status"] for name, step in extra["steps"].items()} == dict.fromkeys(
        ("ingest", "train", "score", "monitor", "backtest"), "succeeded")
    assert extra["steps"]["monitor"]["scraps"]["scores_monitored"] == extra["steps"]["score"]["scraps"]["rows_scored"]
    assert str(project.client.get_model_version_by_alias("churn_extra", "champion").version) == "1"
