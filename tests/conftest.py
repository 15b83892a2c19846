"""Shared fixtures: every test gets its own ``.runner/`` and a project folder to write runner.yaml into."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from click.testing import CliRunner

# The services some tests need, as fixtures of this conftest, so that each pytest-xdist worker starts each of them
# once (a fixture imported into two test modules would be two fixtures, each started for its module). Each starts
# only when a test asks for it.
from dask_cluster import dask_cluster  # noqa: F401
from mlflow_server import shared_mlflow  # noqa: F401
from postgres_server import postgres_url  # noqa: F401
from s3_server import bucket, s3_endpoint, s3_env  # noqa: F401

NOTEBOOKS = Path(__file__).parent / "notebooks"
RUNNER_VARS = ("RUNNER_CONFIG", "RUNNER_HOME", "RUNNER_RUN_STORE", "RUNNER_TRACKING_URI", "RUNNER_ARTIFACTS")
CHROMIUM = Path("/usr/bin/chromium")
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def migrated_mlflow_db(tmp_path_factory) -> Path:
    """An empty MLflow sqlite database with its schema created once (migrations take seconds)."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(scope="session", autouse=True)
def jupyter_data_dir(tmp_path_factory) -> Path:
    """Kernelspecs that tests install (`runner init`, `runner kernel install`, `runner lab`) go to a folder of the
    session, never into the user's Jupyter data folder. Session-scoped, so that it is in place before the module
    fixtures that run `runner init`."""
    folder = tmp_path_factory.mktemp("jupyter-data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_DATA_DIR", str(folder))
        yield folder


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


def is_kernel(cmdline: list[str] | None) -> bool:
    """A kernel's command line: as jupyter_client starts it, or as a kernel from the fork server shows it (one
    string: runner.notebook.forkserver)."""
    return "ipykernel_launcher" in " ".join(cmdline or []).split()


def is_step_process(cmdline: list[str] | None) -> bool:
    """A step process's command line (``python -m runner.run.stepproc``), also as one string (forked ones)."""
    return "runner.run.stepproc" in " ".join(cmdline or []).split()


def notebook(name: str) -> str:
    return str(NOTEBOOKS / f"{name}.ipynb")


def write_notebook(path: Path, cells) -> None:
    """A notebook of code cells made by a test; a cell given as (tag, source) carries that tag ("parameters")."""
    book = nbformat.v4.new_notebook()
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for cell in cells:
        code = nbformat.v4.new_code_cell(cell[1] if isinstance(cell, tuple) else cell)
        if isinstance(cell, tuple):
            code.metadata["tags"] = [cell[0]]
        book.cells.append(code)
    nbformat.write(book, path)


def step(name: str, **fields) -> dict:
    return {"notebook": notebook(name), **fields}


# -- the reference data dictionary (data/dictionary.yaml) and the rule it sets on applications.gender ------
CREDIT_DICTIONARY = Path(__file__).resolve().parents[1] / "data" / "dictionary.yaml"
GENDER_RULE = ("applications.gender may be used for ['analytics'] only, not for 'credit_scoring' (GDPR Art. 9 / fair "
               "lending: not to be used for credit decisions, only for fairness analysis); leave these columns out of "
               "the request")


@pytest.fixture(scope="module")
def credit_dictionary():
    from runner.data import DataDictionary

    return DataDictionary.load(CREDIT_DICTIONARY)


# -- the review site: `runner review serve` and a real browser ---------------------------------
@pytest.fixture(scope="module")
def review_server(review_project: Project):
    """`runner review serve` on a free port, in a process of its own, over the store of the module's
    ``review_project`` fixture (each module that uses this defines it); yields the site's URL."""
    env = {k: v for k, v in os.environ.items() if k not in RUNNER_VARS}
    env["RUNNER_HOME"] = str(review_project.home)
    script = Path(sys.executable).with_name("runner")
    process = subprocess.Popen([str(script), "review", "serve", "--config", str(review_project.config), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        ready, _, _ = select.select([process.stdout], [], [], 60)
        line = process.stdout.readline() if ready else ""
        assert "serving the review site" in line, line + (process.stderr.read() if process.poll() is not None else "")
        yield line.split(" at ", 1)[1].split()[0]
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium driven by Playwright, launched once per module (Playwright cannot download its own here)."""
    if not CHROMIUM.exists():
        pytest.skip(f"NO BROWSER: {CHROMIUM} is missing, so the review site's browser tests cannot run; "
                    "install Debian's chromium (`apt-get install chromium`, as .ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
