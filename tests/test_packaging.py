"""The project's own promises about packaging and structure."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(  # every module and package of runner/, dotted
    ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for path in (ROOT / "runner").rglob("*.py"))


def test_environment_yml_lists_exactly_the_pyproject_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    declared = sorted(dep for dep in pip_section if dep != "-e .")
    assert declared == sorted(project["dependencies"])
    python = next(item for item in env["dependencies"] if isinstance(item, str) and item.startswith("python"))
    assert python.removeprefix("python") == project["requires-python"]


@dataclass
class Pin:
    """One entry of requirements.lock: `name==1.0 ; marker`, its hashes and what it is there for (`# via`)."""

    requirement: Requirement
    hashes: int = 0
    via: set[str] = field(default_factory=set)

    @property
    def version(self) -> str:
        return next(iter(self.requirement.specifier)).version


def locked() -> dict[str, list[Pin]]:
    """requirements.lock by package name; a package has two entries where it differs by Python version."""
    entries: dict[str, list[Pin]] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        text = line.strip()
        if line and not line[0].isspace() and not line.startswith("#"):
            pin = Pin(Requirement(text.removesuffix("\\").strip()))
            entries.setdefault(canonicalize_name(pin.requirement.name), []).append(pin)
        elif not line[:1].isspace():  # the header's comments and blank lines
            continue
        elif text.startswith("--hash="):
            pin.hashes += 1
        elif text.startswith("#"):  # `# via a`, or `# via` followed by `#   a` lines
            pin.via.update(filter(None, [text.removeprefix("# via").removeprefix("#").strip()]))
    return entries


def pyproject_requirements() -> list[Requirement]:
    """What pyproject.toml asks for: the dependencies and every extra's, the project's own extras left out."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = project["dependencies"] + [dep for deps in project["optional-dependencies"].values() for dep in deps]
    return [req for req in map(Requirement, listed) if canonicalize_name(req.name) != canonicalize_name(project["name"])]


def test_the_lock_pins_every_requirement_of_pyproject_within_its_specifier():
    """`make lock` has been run since pyproject.toml last changed: else `make venv` installs an old set.

    Every requirement of the dependencies and of every extra (test, postgres, s3, dask: .venv gets them all) is in
    requirements.lock at a version its specifier allows, and the lock names nothing as pyproject.toml's that
    pyproject.toml no longer asks for. Offline: the lock is read as text.
    """
    lock, wanted = locked(), pyproject_requirements()
    assert {"psycopg", "s3fs", "distributed", "moto", "pytest"} <= {canonicalize_name(req.name) for req in wanted}
    stale = []
    for req in wanted:
        versions = [pin.version for pin in lock.get(canonicalize_name(req.name), [])]
        if not versions or not all(req.specifier.contains(version, prereleases=True) for version in versions):
            stale.append(f"{req} (locked: {', '.join(versions) or 'absent'})")
    assert not stale, f"requirements.lock is out of date for {stale}: run `make lock` and commit requirements.lock"
    ours = {name for name, pins in lock.items() for pin in pins if "notebook-runner (pyproject.toml)" in pin.via}
    dropped = ours - {canonicalize_name(req.name) for req in wanted}
    assert not dropped, f"requirements.lock still pins {sorted(dropped)} for pyproject.toml: run `make lock`"


def test_every_locked_package_is_pinned_exactly_with_its_hashes():
    """pip's and uv's --require-hashes refuse the whole lock for one unhashed or unpinned line."""
    lock = locked()
    assert len(lock) > 100
    for pin in (pin for pins in lock.values() for pin in pins):
        specifiers = list(pin.requirement.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", pin
        assert pin.hashes > 0 and pin.via, pin


def test_every_module_imports_alone_in_a_fresh_interpreter():
    """Each module imports first, on its own: no import order hides a missing name or a circle."""
    from concurrent.futures import ThreadPoolExecutor

    def imported(module: str) -> tuple[str, subprocess.CompletedProcess]:
        return module, subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)

    assert len(MODULES) > 50 and "runner.run.pipeline" in MODULES and "runner" in MODULES
    with ThreadPoolExecutor(max_workers=4) as pool:
        for module, done in pool.map(imported, MODULES):
            assert done.returncode == 0, f"{module}: {done.stderr}"


def test_the_installed_libraries_and_the_runner_carry_their_bytecode():
    """`make venv` compiles bytecode at install: where PYTHONDONTWRITEBYTECODE is set (as on this machine) Python
    writes none, and each kernel and step process would compile pandas, scikit-learn and MLflow from source again
    (about 18 s of CPU per kernel, measured)."""
    import importlib.util

    import mlflow
    import pandas
    import sklearn

    import runner.run.pipeline

    for module in (pandas, sklearn, mlflow, runner.run.pipeline):
        compiled = Path(importlib.util.cache_from_source(module.__file__))
        assert compiled.is_file(), f"{module.__name__} has no bytecode ({compiled}); `make venv` compiles it"


def test_the_install_compiles_modules_but_not_test_suites_or_installers_and_only_once(tmp_path):
    """tools/compile_bytecode.py, which `make venv` runs over site-packages: modules get bytecode Python accepts; a
    package's tests, pip and moto get none; a file that does not compile is counted, not fatal; a second run compiles
    nothing to do, and a changed source is compiled again."""
    import importlib.util

    site = tmp_path / "site-packages"
    files = {"pkg/__init__.py": "", "pkg/core.py": "VALUE = 1\n", "pkg/tests/test_core.py": "def test(): pass\n",
             "pkg/py2.py": "print 'hello'\n", "pip/__init__.py": "", "moto/server.py": "", "top.py": "X = 2\n"}
    for name, text in files.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(text)
    tool = [sys.executable, str(ROOT / "tools" / "compile_bytecode.py"), str(site)]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}

    def compiled(name: str) -> Path:
        return Path(importlib.util.cache_from_source(str(site / name)))

    done = subprocess.run(tool, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "modules compiled: 3; not compiling: 1 (left to Python)"
    assert all(compiled(name).is_file() for name in ("pkg/__init__.py", "pkg/core.py", "top.py"))
    assert not any(compiled(name).exists() for name in ("pkg/tests/test_core.py", "pkg/py2.py", "pip/__init__.py",
                                                        "moto/server.py"))
    loaded = subprocess.run([sys.executable, "-v", "-c", "import pkg.core"], capture_output=True, text=True,
                            env={**env, "PYTHONPATH": str(site)}, cwd=tmp_path)
    assert f"matches {site / 'pkg' / 'core.py'}" in loaded.stderr  # Python used the bytecode, did not compile
    assert subprocess.run(tool, capture_output=True, text=True, env=env).stdout == "modules compiled: 0; not compiling: 1 (left to Python)\n"
    (site / "pkg" / "core.py").write_text("VALUE = 22\n")
    assert subprocess.run(tool, capture_output=True, text=True, env=env).stdout == "modules compiled: 1; not compiling: 1 (left to Python)\n"


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


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel ``pip wheel --no-deps`` builds from a copy of the checkout.

    Built in place, setuptools would write build/ and *.egg-info into the working tree and pack whatever an
    earlier build left in build/lib (modules since moved or deleted among it); a copy without them is what a
    fresh clone builds.
    """
    source = tmp_path_factory.mktemp("source") / "notebook-runner"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "build", "*.egg-info", ".runner", "__pycache__", ".pytest_cache", "test-artifacts", "mlruns"))
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(source), "-w", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return next(out.glob("*.whl"))


@pytest.mark.slow
def test_the_wheel_carries_the_templates_and_schemas_an_installed_runner_needs(wheel):
    """`runner init`, `runner new` and the review site work from a regular (not editable) install too."""
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    shared = "notebook_runner-0.1.0.data/data/share/notebook-runner/templates"
    for kind in ("ingest", "train", "score", "monitor", "backtest"):
        assert f"{shared}/notebooks/{kind}.ipynb" in names
    assert {f"{shared}/review/run.html", f"{shared}/review/review.js"} <= set(names)
    assert {"runner/project/schemas/runner.schema.json", "runner/project/schemas/dictionary.schema.json",
            "runner/tracking/pyfunc_model.py"} <= set(names)
    # every module of every package: a folder of runner/ without __init__.py would be left out
    modules = {name for name in names if name.startswith("runner/") and name.endswith(".py")}
    assert modules == {path.relative_to(ROOT).as_posix() for path in (ROOT / "runner").rglob("*.py")}


@pytest.mark.slow
def test_the_wheel_installed_in_a_fresh_venv_runs_init_validate_and_new_outside_the_checkout(wheel, tmp_path):
    """A regular install works on its own: `runner` and its templates come from the venv the wheel went into.

    Only the wheel is installed (--no-deps); the dependencies come from this environment's site-packages, put on
    the fresh venv's path by a .pth file. A directory named in a .pth file is not a site directory, so the .pth
    files in it (this checkout's editable install among them) are not processed: only the wheel provides `runner`.
    """
    import sysconfig
    import venv

    prefix = tmp_path / "venv"
    venv.create(prefix, with_pip=False)
    python, runner = prefix / "bin" / "python", prefix / "bin" / "runner"
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}

    def run(*args, cwd=tmp_path) -> subprocess.CompletedProcess:
        done = subprocess.run([str(arg) for arg in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{' '.join(map(str, args))}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
        return done

    site_packages = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    ours = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site_packages / "dependencies-from-the-test-environment.pth").write_text("".join(f"{path}\n" for path in ours))
    # --ignore-installed: pip sees the checkout's editable notebook-runner on that path and would try to uninstall it
    run(python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed",
        "--disable-pip-version-check", wheel)

    where = run(python, "-c", "import runner, runner.config; print(runner.__file__); "
                              "print(runner.config.templates('notebooks'))").stdout.splitlines()
    assert Path(where[0]).resolve() == (site_packages / "runner" / "__init__.py").resolve()
    assert Path(where[1]).resolve() == (prefix / "share" / "notebook-runner" / "templates" / "notebooks").resolve()

    run(runner, "init", "proj")
    project = tmp_path / "proj"
    starter = {path.relative_to(project).as_posix() for path in (project / "notebooks").rglob("*.ipynb")}
    assert starter == {"notebooks/churn_ingest/ingest.ipynb", "notebooks/churn_train/train.ipynb",
                       "notebooks/churn_score/score.ipynb", "notebooks/churn_score/monitor.ipynb",
                       "notebooks/churn_backtest/backtest.ipynb"}
    assert {"runner.yaml", "data/dictionary.yaml", "schemas/runner.schema.json"} <= {
        path.relative_to(project).as_posix() for path in project.rglob("*") if path.is_file()}
    run(runner, "validate", cwd=project)

    # a new pipeline of two steps, each from its template: score needs train
    run(runner, "new", "train", "train", "--pipeline", "fraud", "--purpose", "churn_modelling", "--model", "fraud",
        cwd=project)
    run(runner, "new", "score", "score", "--pipeline", "fraud", "--model", "fraud", cwd=project)
    for name in ("train", "score"):
        notebook = project / "notebooks" / "fraud" / f"{name}.ipynb"
        assert json.loads(notebook.read_text())["metadata"]["runner"]["template"] == name
    steps = yaml.safe_load((project / "runner.yaml").read_text())["pipelines"]["fraud"]["steps"]
    assert steps["train"]["notebook"] == "notebooks/fraud/train.ipynb"
    assert steps["score"]["notebook"] == "notebooks/fraud/score.ipynb" and steps["score"]["needs"] == ["train"]
    run(runner, "validate", "fraud", cwd=project)


def test_the_served_model_code_needs_nothing_from_runner():
    """MLflow runs runner/tracking/pyfunc_model.py to load a registered version: a scoring server has no runner."""
    import ast

    tree = ast.parse((ROOT / "runner" / "tracking" / "pyfunc_model.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported and not {name for name in imported if name.split(".")[0] == "runner"}
