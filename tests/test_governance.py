"""Model governance: champion on first version, challenger unless it beats the champion, promote and roll back."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import RUNNER_VARS, step
from sklearn.linear_model import LogisticRegression

from runner import nb


CONFIG = {"pipelines": {"p": {"purpose": "credit_scoring", "steps": {"a": step("ok")}}},
          "models": {"credit": {"metric": "auc", "margin": 0.01}}}


@pytest.fixture(scope="module")
def registered(tmp_path_factory, migrated_mlflow_db) -> tuple[Path, dict, dict]:
    """Two versions of ``credit`` saved by hand, explicitly in production (so aliases move at once) by ada,
    once for the module (each registration takes seconds): a model of the signal, then one that sees only
    noise. Returns the stores' folder and the two decisions."""
    import mlflow

    home = tmp_path_factory.mktemp("governance") / ".runner"
    home.mkdir()
    shutil.copy(migrated_mlflow_db, home / "mlflow.db")
    config = home.parent / "runner.yaml"
    config.write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    with pytest.MonkeyPatch.context() as env:
        for name in RUNNER_VARS + ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
            env.delenv(name, raising=False)
        env.setenv("RUNNER_HOME", str(home))
        env.setenv("RUNNER_CONFIG", str(config))
        env.setenv("RUNNER_USER", "ada")
        env.setenv("RUNNER_NAMESPACE", "production")  # by hand, explicitly in production: aliases move now
        env.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
        env.setattr(nb, "_context", None)
        try:
            nb.context(pipeline="p", as_of="2026-03-31")
            X, y = data(1)
            holdout = data(2)
            good = LogisticRegression().fit(X, y)
            noise_only = LogisticRegression().fit(X[["noise"]].assign(signal=0.0)[["signal", "noise"]], y)
            first = nb.save_model(good, "credit", X, holdout)
            worse = nb.save_model(noise_only, "credit", X, holdout)
        finally:
            while mlflow.active_run():
                mlflow.end_run()
            for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):  # set by the run by hand, outside the patch
                os.environ.pop(name, None)
    return home, first, worse


@pytest.fixture
def governed(registered, project, monkeypatch):
    """This test's project and RUNNER_HOME, holding a copy of the registrations' stores; ada at the keyboard."""
    home, _, _ = registered
    shutil.rmtree(project.home)
    shutil.copytree(home, project.home)
    project.config.write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    monkeypatch.setenv("RUNNER_USER", "ada")
    return project


def data(seed: int, n: int = 600) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"signal": rng.normal(size=n), "noise": rng.normal(size=n)})
    y = pd.Series((X["signal"] + rng.normal(scale=1.0, size=n) > 0.8).astype(int))
    return X, y


def test_first_version_is_champion_then_challenger_unless_it_beats_by_the_margin(registered, governed):
    _, first, worse = registered
    assert (first["version"], first["decision"]) == ("1", "champion")
    assert (worse["version"], worse["decision"]) == ("2", "challenger") and worse["champion_version"] == "1"
    assert worse["champion_value"] == pytest.approx(first["value"])
    assert worse["value"] < first["value"] - 0.01  # it does not beat the champion by the margin

    result = governed.cli("models", "credit", "--json")
    listed = json.loads(result.stdout)
    versions = {v["version"]: v for v in listed["versions"]}
    assert versions["1"]["aliases"] == ["champion"] and versions["2"]["aliases"] == ["challenger"]
    assert versions["1"]["tags"]["trained_by"] == "ada" and versions["1"]["tags"]["promotion_reason"] == "first registered version"
    assert float(versions["2"]["tags"]["auc"]) < float(versions["1"]["tags"]["auc"])


def test_promote_moves_the_champion_records_who_and_why_and_rolls_back(governed):
    promoted = governed.cli("promote", "credit", "2", "--reason", "approved by model risk")
    assert promoted.exit_code == 0, promoted.output
    assert "credit v2 is the champion (was v1); by ada" in promoted.stdout
    rollback = governed.cli("promote", "credit", "1", "--reason", "rollback: v2 misbehaves", "--by", "grace")
    assert rollback.exit_code == 0 and "(was v2)" in rollback.stdout
    listed = json.loads(governed.cli("models", "credit", "--json").stdout)
    assert [h["version"] for h in listed["history"]] == ["1", "2", "1"]
    assert listed["history"][-1]["by"] == "grace" and listed["history"][-1]["reason"] == "rollback: v2 misbehaves"
    aliases = {v["version"]: v["aliases"] for v in listed["versions"]}
    assert aliases == {"1": ["champion"], "2": []}
    missing = governed.cli("promote", "credit", "9", "--reason", "x")
    assert missing.exit_code == 2 and "has no version 9" in missing.stderr  # a usage error


def test_a_version_pins_what_it_needs_to_load_not_what_the_kernel_had_imported(registered):
    """The model's requirements are given (the installed versions of what loading and predicting needs), not
    inferred: MLflow's inference loads the model in subprocesses for seconds and lists whatever else was
    imported (pytest, rich, dask ...)."""
    from importlib.metadata import version

    import mlflow
    from mlflow import MlflowClient

    home, first, _ = registered
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    source = client.get_model_version("credit", first["version"]).source  # models:/<logged model id>
    location = client.get_logged_model(source.removeprefix("models:/")).artifact_location
    path = mlflow.artifacts.download_artifacts(artifact_uri=f"{location}/requirements.txt",
                                               dst_path=str(home.parent / "requirements"))
    listed = set(Path(path).read_text().split())
    assert listed == {f"mlflow=={version('mlflow')}", *(f"{name}=={version(name)}" for name in
                      ("scikit-learn", "skops", "numpy", "scipy", "pandas"))}
