"""``runner new``: notebooks from templates, added as steps to runner.yaml with its comments kept.

No notebook is executed here: the checks stop at what ``runner validate`` checks (no kernel).
"""

from __future__ import annotations

import datetime
from pathlib import Path

import nbformat
import pytest
import yaml
from conftest import notebook

from runner.config import load_config
from runner.errors import ConfigError
from runner.notebook.adapter import read_contract
from runner.project.scaffold import TEMPLATES, new_notebook

KINDS = ("ingest", "train", "score", "monitor", "backtest")
RUNNER_YAML = """\
# Our project. This comment must survive `runner new`.
defaults:
  cell_timeout: 10m   # per cell

pipelines:
  churn:
    purpose: marketing   # allowed for the churn tables
    steps:
      ingest:
        notebook: {ok}
        timeout: 5m   # a small batch

  # reports run on their own
  reports:
    steps:
      weekly: {{notebook: {ok}}}
"""


DICTIONARY = """\
purposes: {marketing: Campaigns., churn_prediction: The churn model., analytics: Reports.}
tables:
  customers:
    description: One row per customer.
    owner: crm
    key: [customer_id]
    columns:
      customer_id: {type: string, description: Id., nullable: false, pii: false, allowed_purposes: [any]}
"""


@pytest.fixture
def commented(project):
    """The project with a hand-written runner.yaml full of comments, and a data dictionary of one table."""
    project.config.write_text(RUNNER_YAML.format(ok=notebook("ok")))
    (project.root / "data").mkdir()
    (project.root / "data" / "dictionary.yaml").write_text(DICTIONARY)
    return project


def parameters_cell(path: Path):
    cells = nbformat.read(str(path), as_version=4).cells
    return next(cell for cell in cells if "parameters" in cell.metadata.get("tags", []))


@pytest.mark.parametrize("kind", KINDS)
def test_templates_are_short_valid_notebooks_with_a_parameters_cell(kind):
    path = TEMPLATES / f"{kind}.ipynb"
    nb = nbformat.read(str(path), as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3" and nb.metadata.kernelspec.language == "python"
    assert all(cell.get("id") for cell in nb.cells) and len({cell.id for cell in nb.cells}) == len(nb.cells)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code)
    assert "as_of" in parameters_cell(path).source
    assert len(nb.cells) <= 10


@pytest.mark.parametrize("kind", KINDS)
def test_new_creates_the_notebook_and_adds_the_step(commented, kind):
    result = commented.cli("new", kind, "fresh", "--pipeline", "churn")
    assert result.exit_code == 0, result.stderr

    path = commented.root / "notebooks" / "churn" / "fresh.ipynb"
    assert f"created {path}" in result.stdout
    assert "runner validate churn" in result.stdout and "runner run churn" in result.stdout
    nb = nbformat.read(str(path), as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "runner-project"  # the project's kernel (tests/test_authoring.py)
    assert nb.metadata.kernelspec.display_name == "Notebook Runner (project)"
    assert [cell.id for cell in nb.cells] == [f"{kind}-{i}" for i in range(len(nb.cells))]
    sources = "\n".join(cell.source for cell in nb.cells)
    assert "{{" not in sources
    assert "from runner import " in sources and 'nb.context(pipeline="churn", as_of=as_of' in sources

    contract = read_contract(path)
    assert contract.parameters["as_of"].type == "date"
    assert contract.parameters["as_of"].default == datetime.date.today().isoformat()  # by hand: today's data
    if kind != "ingest":
        assert contract.parameters["model_name"].default == "churn"
    assert contract.parameters["table"].default == "customers"  # the dictionary's only table

    text = commented.config.read_text()
    assert text.startswith("# Our project. This comment must survive `runner new`.\n")
    for comment in ("# per cell", "# allowed for the churn tables", "# a small batch", "# reports run on their own"):
        assert comment in text
    assert "      fresh: {notebook: notebooks/churn/fresh.ipynb}\n\n  # reports run on their own\n" in text
    config = load_config(commented.config)
    assert list(config.pipelines["churn"].steps) == ["ingest", "fresh"]
    assert config.notebook_path(config.pipelines["churn"].steps["fresh"]) == path.resolve()
    assert config.defaults.cell_timeout == 600

    validated = commented.cli("validate")
    assert validated.exit_code == 0, validated.stderr
    assert "fresh: notebooks/churn/fresh.ipynb" in validated.stdout


def test_a_new_pipeline_gets_its_purpose_and_score_needs_train_monitor_needs_score(commented):
    for kind, name in (("train", "fit"), ("score", "predict"), ("monitor", "watch")):
        result = commented.cli("new", kind, name, "--pipeline", "churn_model", "--purpose", "churn_prediction")
        assert result.exit_code == 0, result.stderr

    raw = yaml.safe_load(commented.config.read_text())
    assert raw["pipelines"]["churn_model"] == {
        "purpose": "churn_prediction",
        "steps": {
            "fit": {"notebook": "notebooks/churn_model/fit.ipynb"},
            "predict": {"notebook": "notebooks/churn_model/predict.ipynb", "needs": ["fit"]},
            "watch": {"notebook": "notebooks/churn_model/watch.ipynb", "needs": ["predict"]},
        },
    }
    assert list(raw["pipelines"]) == ["churn", "reports", "churn_model"]
    assert "# reports run on their own" in commented.config.read_text()
    assert commented.cli("validate", "churn_model").exit_code == 0


def test_without_pipeline_the_only_pipeline_is_used_else_it_is_asked_for(project, commented):
    result = commented.cli("new", "train", "fit")
    assert result.exit_code == 2
    assert "pass --pipeline (known: churn, reports" in result.stderr

    project.write({"solo": {"steps": {"first": {"notebook": notebook("ok")}}}})
    result = project.cli("new", "score", "score")
    assert result.exit_code == 0, result.stderr
    assert (project.root / "notebooks" / "solo" / "score.ipynb").is_file()
    assert "score" in load_config(project.config).pipelines["solo"].steps


def test_a_second_new_with_the_same_name_fails_and_changes_nothing(commented):
    assert commented.cli("new", "train", "fit", "--pipeline", "churn").exit_code == 0
    path = commented.root / "notebooks" / "churn" / "fit.ipynb"
    config_before, notebook_before = commented.config.read_bytes(), path.read_bytes()

    again = commented.cli("new", "score", "fit", "--pipeline", "churn")
    assert again.exit_code == 2
    assert again.stderr.count("\n") == 1
    assert "pipelines.churn.steps.fit: step 'fit' already exists; choose another NAME" in again.stderr
    assert commented.config.read_bytes() == config_before and path.read_bytes() == notebook_before

    path.with_name("taken.ipynb").write_text("{}")
    taken = commented.cli("new", "train", "taken", "--pipeline", "churn")
    assert taken.exit_code == 2 and "taken.ipynb already exists" in taken.stderr
    assert path.with_name("taken.ipynb").read_text() == "{}"
    assert commented.config.read_bytes() == config_before


@pytest.mark.parametrize(("args", "message"), [
    (("new", "train", "9lives", "--pipeline", "churn"), "step name '9lives' must match"),
    (("new", "train", "has space", "--pipeline", "churn"), "must match"),
    (("new", "train", "fit", "--pipeline", "bad/name"), "pipeline name 'bad/name' must match"),
    (("new", "explain", "fit", "--pipeline", "churn"), "no notebook template named 'explain'; known: backtest, ingest, monitor, score, train"),
])
def test_bad_names_and_kinds_are_refused_before_anything_is_written(commented, args, message):
    before = commented.config.read_bytes()
    result = commented.cli(*args)
    assert result.exit_code == 2 and message in result.stderr
    assert commented.config.read_bytes() == before
    assert not (commented.root / "notebooks").exists()


def test_an_edit_that_breaks_runner_yaml_is_undone(commented, monkeypatch):
    before = commented.config.read_bytes()
    monkeypatch.setattr("runner.project.scaffold._add_step", lambda *args: "pipelines:\n  churn:\n    steps: {}\n")
    with pytest.raises(ConfigError, match="the original is restored"):
        new_notebook(commented.config, "train", "fit", pipeline="churn")
    assert commented.config.read_bytes() == before
    assert not (commented.root / "notebooks").exists()
    assert sorted(p.name for p in commented.root.iterdir()) == ["data", "runner.yaml"]  # no temporary file left
