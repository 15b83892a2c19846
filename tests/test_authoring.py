"""Authoring in JupyterLab: the project's kernel (`runner init`, `runner kernel install`), `runner lab`, the
templates' parameters header, and `runner validate NOTEBOOK.ipynb`.

Kernelspecs land in the session's JUPYTER_DATA_DIR (conftest.py), where `jupyter kernelspec list` looks first.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from click.testing import CliRunner
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from runner.notebook.adapter import read_contract
from runner.notebook.kernelspecs import spec_name

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = sorted((ROOT / "templates" / "notebooks").glob("*.ipynb"))
BIN = Path(sys.executable).parent


def cli(*args: str):
    from runner.cli import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def kernelspecs() -> dict:
    """What Jupyter itself lists (`jupyter kernelspec list --json`), in this environment."""
    done = subprocess.run([str(BIN / "jupyter"), "kernelspec", "list", "--json"], capture_output=True, text=True,
                          timeout=60, env=os.environ.copy(), check=True)
    return json.loads(done.stdout)["kernelspecs"]


def test_kernel_install_makes_a_kernel_jupyter_lists_and_is_idempotent(project, jupyter_data_dir):
    project.write({"p": {"steps": {}}})
    first = cli("kernel", "install", "--config", str(project.config))
    assert first.exit_code == 0, first.stderr
    assert "kernel runner-project (Notebook Runner (project)) installed in" in first.stdout

    listed = kernelspecs()["runner-project"]
    assert Path(listed["resource_dir"]) == jupyter_data_dir / "kernels" / "runner-project"
    spec = listed["spec"]
    assert spec["display_name"] == "Notebook Runner (project)" and spec["language"] == "python"
    assert spec["argv"][:3] == [sys.executable, "-m", "ipykernel_launcher"]  # the runner's own interpreter
    assert spec["metadata"]["runner"]["project"] == str(project.root)
    written = {path.name: path.stat().st_mtime_ns for path in Path(listed["resource_dir"]).iterdir()}
    assert "kernel.json" in written and "logo-64x64.png" in written

    again = cli("kernel", "install", "--config", str(project.config))
    assert again.exit_code == 0 and "up to date" in again.stdout and not again.stderr
    assert {path.name: path.stat().st_mtime_ns for path in Path(listed["resource_dir"]).iterdir()} == written


def test_a_kernel_of_the_same_name_for_another_project_is_replaced_and_said(tmp_path):
    for folder in ("a", "b"):
        root = tmp_path / folder / "churn"
        root.mkdir(parents=True)
        (root / "runner.yaml").write_text("pipelines: {}\n")
    cli("kernel", "install", "--config", str(tmp_path / "a" / "churn" / "runner.yaml"))
    other = cli("kernel", "install", "--config", str(tmp_path / "b" / "churn" / "runner.yaml"))
    assert other.exit_code == 0
    assert f"kernel runner-churn was the kernel of {tmp_path / 'a' / 'churn'}" in other.stderr


def test_kernel_install_outside_a_project_says_how(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("kernel", "install")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "no runner.yaml here or in a parent folder" in result.stderr and "runner init" in result.stderr


@pytest.mark.parametrize(("project", "name"), [("churn", "runner-churn"), ("Credit Risk 2!", "runner-credit-risk-2"),
                                               ("ÄÖ", "runner-project")])
def test_kernel_names_are_what_jupyter_allows(project, name):
    assert spec_name(project) == name


def test_init_installs_the_kernel_its_notebooks_name(tmp_path, jupyter_data_dir):
    root = tmp_path / "shop"
    done = cli("init", str(root))
    assert done.exit_code == 0, done.stderr
    assert "kernel runner-shop (Notebook Runner (shop))" in done.stdout and "runner lab" in done.stdout
    assert (jupyter_data_dir / "kernels" / "runner-shop" / "kernel.json").is_file()
    for path in (root / "notebooks").rglob("*.ipynb"):
        assert json.loads(path.read_text())["metadata"]["kernelspec"] == {
            "display_name": "Notebook Runner (shop)", "language": "python", "name": "runner-shop"}


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda path: path.stem)
def test_the_templates_parameters_cell_opens_with_a_header_and_still_reads(template):
    cell = next(cell for cell in nbformat.read(template, as_version=4).cells
                if "parameters" in cell.metadata.get("tags", []))
    assert cell.source.startswith('# Parameters (this cell is tagged "parameters")')
    contract = read_contract(template)
    assert list(contract.parameters)[0] == "as_of" and contract.parameters["as_of"].help  # the header is no help


# ---- runner validate NOTEBOOK.ipynb ---------------------------------------------------------------------------


def write(path: Path, *cells, **metadata) -> str:
    nbformat.write(new_notebook(cells=list(cells), metadata=metadata), str(path))
    return str(path)


def parameters(source: str):
    return new_code_cell(source, metadata={"tags": ["parameters"]})


def test_validate_a_notebook_lists_its_parameters(tmp_path):
    path = write(tmp_path / "fine.ipynb", new_markdown_cell("# fine"),
                 parameters("# Parameters\nas_of = '2026-01-31'  # the day\nlimit: int = 10\nscale = dict(a=1)"),
                 new_code_cell("%matplotlib inline\nfiles = !ls\nfrom runner import nb\nnb.glue('n', limit)"))
    result = cli("validate", path)  # no runner.yaml anywhere: none is needed
    assert result.exit_code == 0, result.stderr
    assert not result.stderr
    assert result.stdout.splitlines() == [
        f"ok {path}: 3 parameter(s)",
        "   as_of  date  '2026-01-31'  # the day",
        "   limit  int   10",
        "   scale  any   dict(a=1)",
    ]


def test_validate_a_notebook_names_every_problem_on_a_line_of_its_own(tmp_path):
    path = write(tmp_path / "bad.ipynb", new_markdown_cell("# bad"),
                 new_code_cell("print(as_of)"),
                 parameters("as_of = '2026-01-31'"),
                 new_code_cell("from runner import nb, monitoring\nnb.lod('t')\nmonitoring.comapre()\nnb.load('t')"),
                 new_code_cell("from runner.nb import lood\nimport runner.nope\nfrom runner.monitoring.usage import nope"),
                 new_code_cell("def f(:\n    pass"),
                 parameters("x = 1"))
    result = cli("validate", path)
    assert result.exit_code == 2
    assert result.stdout.splitlines()[0] == f"problems {path}: 1 parameter(s)"
    assert result.stderr.splitlines() == [f"error: {path}: {line}" for line in [
        "cells 2, 6 are all tagged 'parameters'; a run reads the first and injects its values after it: remove the "
        "tag from the others",
        "cell 1 uses 'as_of' before the parameters cell (cell 2): it runs before a run's values are injected and "
        "sees the defaults; move the parameters cell up",
        "cell 3: nb.lod: runner.nb has no name 'lod'; did you mean 'load'?",
        "cell 3: monitoring.comapre: runner.monitoring has no name 'comapre'; did you mean 'compare'?",
        "cell 4: 'from runner.nb import lood': runner.nb has no name 'lood'; did you mean 'load'?",
        "cell 4: 'import runner.nope': there is no module runner.nope",
        "cell 4: 'from runner.monitoring.usage import nope': runner.monitoring.usage has no name 'nope'; the step "
        "would fail at this cell",  # no hint from the names it imports (np)
        "cell 5: line 1: not valid Python: invalid syntax ('def f(:'); the step would fail at this cell",
    ]]


@pytest.mark.parametrize(("cells", "metadata", "problem"), [
    ([new_code_cell("x = 1")], {}, "no cell tagged 'parameters'"),
    ([parameters("x <- 1")], {"kernelspec": {"name": "ir", "display_name": "R", "language": "R"}},
     "a notebook for 'R' (metadata.kernelspec.language)"),
    ([parameters("x = (")], {}, "cell 0 (the parameters cell): line 1: not valid Python"),
])
def test_validate_a_notebook_without_a_usable_contract(tmp_path, cells, metadata, problem):
    path = write(tmp_path / "nb.ipynb", *cells, **metadata)
    result = cli("validate", path)
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1 and problem in result.stderr


def test_validate_a_file_that_is_not_a_notebook(tmp_path):
    (tmp_path / "text.ipynb").write_text("not json")
    for path, problem in ((tmp_path / "text.ipynb", "not a readable notebook"), (tmp_path / "gone.ipynb", "not found")):
        result = cli("validate", str(path))
        assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1 and problem in result.stderr


def test_validate_takes_pipelines_and_notebooks_together(project):
    project.write({"p": {"steps": {"a": {"notebook": str(ROOT / "tests" / "notebooks" / "ok.ipynb")}}}})
    result = project.cli("validate", "p", str(TEMPLATES[0]))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"ok {TEMPLATES[0]}") and "ok p: 1 step(s)" in result.stdout


def test_validate_notebooks_in_a_process_of_their_own(tmp_path):
    """The installed program, as an author runs it before committing: every shipped template passes."""
    broken = write(tmp_path / "broken.ipynb", parameters("x = 1"), new_code_cell("x +"))
    done = subprocess.run([str(BIN / "runner"), "validate", *map(str, TEMPLATES), broken], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout.count("\nok ") + done.stdout.startswith("ok ") == len(TEMPLATES)
    assert done.stderr.splitlines() == [f"error: {broken}: cell 1: line 1: not valid Python: invalid syntax ('x +'); "
                                        "the step would fail at this cell"]


# ---- runner lab -------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_lab_serves_the_project_with_its_kernel_and_stops_on_sigint(project, jupyter_data_dir):
    """A real JupyterLab: its API lists the project's kernel as the default; SIGINT (Ctrl-C) stops it cleanly."""
    from runner.project.authoring import free_port

    project.write({"p": {"steps": {}}})
    port, token = free_port(18888), "test-token-123"
    extra = ["--", "--allow-root"] if os.geteuid() == 0 else []  # JupyterLab refuses root without it
    lab = subprocess.Popen([str(BIN / "runner"), "lab", "--no-browser", "--port", str(port), "--config",
                            str(project.config), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env={**os.environ, "JUPYTER_TOKEN": token})
    try:
        deadline, listed = time.monotonic() + 120, None
        while listed is None and time.monotonic() < deadline and lab.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/kernelspecs?token={token}",
                                            timeout=5) as response:
                    listed = json.load(response)
            except OSError:
                time.sleep(0.3)
        assert listed is not None, lab.communicate(timeout=30)[1][-3000:] if lab.poll() is not None else "no answer"
        assert listed["default"] == "runner-project"
        assert listed["kernelspecs"]["runner-project"]["spec"]["display_name"] == "Notebook Runner (project)"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents?token={token}", timeout=5) as response:
            assert "runner.yaml" in {item["name"] for item in json.load(response)["content"]}  # the project's folder
        lab.send_signal(signal.SIGINT)
        output, log = lab.communicate(timeout=60)
        assert lab.returncode == 0, log[-3000:]
    finally:
        if lab.poll() is None:
            lab.kill()
            lab.communicate()
    assert output.startswith("  kernel runner-project (Notebook Runner (project))")
    assert f"JupyterLab on {project.root}: http://127.0.0.1:{port}/lab?token={token}" in output
