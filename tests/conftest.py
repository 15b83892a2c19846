"""Shared fixtures: every test gets its own ``.runner/`` and a project folder to write runner.yaml into."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

NOTEBOOKS = Path(__file__).parent / "notebooks"
RUNNER_VARS = ("RUNNER_CONFIG", "RUNNER_HOME", "RUNNER_RUN_STORE", "RUNNER_TRACKING_URI", "RUNNER_ARTIFACTS")


@pytest.fixture(scope="session")
def migrated_mlflow_db(tmp_path_factory) -> Path:
    """An empty MLflow sqlite database with its schema created once (migrations take seconds)."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(autouse=True)
def runner_home(tmp_path, monkeypatch, migrated_mlflow_db) -> Path:
    """A private .runner/ for each test, so no test touches a shared store or tracking database."""
    for name in RUNNER_VARS + ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "RUNNER_USER"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / ".runner"
    home.mkdir()
    shutil.copy(migrated_mlflow_db, home / "mlflow.db")
    monkeypatch.setenv("RUNNER_HOME", str(home))
    return home


class Project:
    """A project folder made by a test: write runner.yaml, run the CLI against it."""

    def __init__(self, root: Path, home: Path):
        self.root = root
        self.home = home
        self.config = root / "runner.yaml"

    def write(self, pipelines: dict, **extra) -> Path:
        self.config.write_text(yaml.safe_dump({"pipelines": pipelines, **extra}, sort_keys=False))
        return self.config

    def cli(self, *args: str):
        """Run ``runner ARGS`` in-process; returns click's Result (exit_code, stdout, stderr)."""
        from runner.cli import main

        return CliRunner().invoke(main, [*args[:1], "--config", str(self.config), *args[1:]], catch_exceptions=False)

    def cli_process(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run the installed ``runner`` console script in a process of its own."""
        script = Path(sys.executable).with_name("runner")
        return subprocess.run(
            [str(script), *args[:1], "--config", str(self.config), *args[1:]],
            capture_output=True, text=True, timeout=timeout, env=os.environ.copy(),
        )

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.home / 'mlflow.db'}"


@pytest.fixture
def project(tmp_path, runner_home) -> Project:
    root = tmp_path / "project"
    root.mkdir()
    return Project(root, runner_home)


def notebook(name: str) -> str:
    return str(NOTEBOOKS / f"{name}.ipynb")


def step(name: str, **fields) -> dict:
    return {"notebook": notebook(name), **fields}
