"""The project's own promises about packaging and structure."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(p.stem for p in (ROOT / "runner").glob("*.py") if p.stem != "__init__")


def test_environment_yml_lists_exactly_the_pyproject_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    declared = sorted(dep for dep in pip_section if dep != "-e .")
    assert declared == sorted(project["dependencies"])
    python = next(item for item in env["dependencies"] if isinstance(item, str) and item.startswith("python"))
    assert python.removeprefix("python") == project["requires-python"]


def test_every_module_imports_alone_in_a_fresh_interpreter():
    for module in MODULES:
        done = subprocess.run([sys.executable, "-c", f"import runner.{module}"], capture_output=True, text=True)
        assert done.returncode == 0, f"runner.{module}: {done.stderr}"


def test_importing_runner_is_cheap_and_has_no_side_effects():
    code = (
        "import os, sys; before = dict(os.environ); import runner, runner.cli, runner.config, runner.errors; "
        "heavy = [m for m in ('mlflow', 'papermill', 'pandas', 'nbconvert', 'scrapbook') if m in sys.modules]; "
        "assert not heavy, heavy; assert dict(os.environ) == before"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_errors_survive_pickling():
    import pickle

    from runner.errors import ConfigError, ParameterError, StepFailed

    for error in (
        ConfigError("expected an int", "runner.yaml", "pipelines.a.steps.b"),
        ParameterError("expected int", "train.ipynb", "max_depth", "int"),
        StepFailed("ValueError", "boom", 4, "out.ipynb", "20260101T000000-abcdef", "train"),
    ):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)


@pytest.mark.slow
def test_the_wheel_carries_the_templates_and_schemas_an_installed_runner_needs(tmp_path):
    """`runner init`, `runner new` and the review site work from a regular (not editable) install too."""
    import zipfile

    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(ROOT), "-w", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    names = zipfile.ZipFile(next(tmp_path.glob("*.whl"))).namelist()
    shared = "notebook_runner-0.1.0.data/data/share/notebook-runner/templates"
    for kind in ("ingest", "train", "score", "monitor", "backtest"):
        assert f"{shared}/notebooks/{kind}.ipynb" in names
    assert {f"{shared}/review/run.html", f"{shared}/review/review.js"} <= set(names)
    assert {"runner/project/schemas/runner.schema.json", "runner/project/schemas/dictionary.schema.json",
            "runner/tracking/pyfunc_model.py"} <= set(names)


def test_the_served_model_code_needs_nothing_from_runner():
    """MLflow runs runner/tracking/pyfunc_model.py to load a registered version: a scoring server has no runner."""
    import ast

    tree = ast.parse((ROOT / "runner" / "tracking" / "pyfunc_model.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported and not {name for name in imported if name.split(".")[0] == "runner"}
