"""``runner validate`` beyond the plans: data dictionary, purposes, tables, cell syntax, runner imports.

Each check has a project that breaks it (exit code 2 and one line) next to projects that pass.
No kernel starts: the notebooks are made here with nbformat and only read.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from runner.data.dictionary import REFERENCE

ROOT = Path(__file__).resolve().parents[1]
DICTIONARY = {
    "purposes": {"scoring": "Deciding on applications.", "analytics": "Aggregate reporting."},
    "tables": {
        "applications": {
            "description": "One row per application.", "owner": "data-team", "key": ["application_id"],
            "columns": {
                "application_id": {"type": "string", "description": "Id.", "nullable": False, "pii": False,
                                   "allowed_purposes": ["any"]},
                "income": {"type": "float", "description": "Income.", "nullable": True, "pii": False,
                           "allowed_purposes": ["any"]},
            },
        },
    },
}
DECLARED = "declared: ['applications']"


def write_notebook(project, name: str, parameters: str, *cells: str) -> str:
    """notebooks/<name>.ipynb in the project: a markdown cell (cell 0), the parameters cell (cell 1),
    then ``cells`` (cell 2 on); returns its path relative to the project root."""
    notebook = new_notebook(cells=[
        new_markdown_cell(f"# {name}"),
        new_code_cell(parameters, metadata={"tags": ["parameters"]}),
        *(new_code_cell(source) for source in cells),
    ])
    path = project.root / "notebooks" / f"{name}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, str(path))
    return f"notebooks/{name}.ipynb"


def write_project(project, *cells: str, parameters: str = 'table = "applications"', purpose: str | None = "scoring",
                  step_parameters: dict | None = None, dictionary: dict | None = DICTIONARY) -> None:
    """One pipeline ``p`` with one step ``a`` running a notebook made of ``cells``."""
    if dictionary is not None:
        (project.root / "data").mkdir(exist_ok=True)
        (project.root / "data" / "dictionary.yaml").write_text(yaml.safe_dump(dictionary))
    step = {"notebook": write_notebook(project, "step", parameters, *cells), "parameters": step_parameters or {}}
    project.write({"p": {**({"purpose": purpose} if purpose else {}), "steps": {"a": step}}})


def refused(project, *args: str) -> str:
    """The one line ``runner validate`` printed, having exited with 2."""
    result = project.cli("validate", *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def passes(project) -> str:
    result = project.cli("validate")
    assert result.exit_code == 0, result.stderr
    assert "ok p: 1 step(s)" in result.stdout
    return result.stdout


def test_a_project_that_follows_every_rule_passes(project):
    write_project(
        project,
        "from runner import nb\nfrom runner.monitoring.drift import compare\nimport runner.data.warehouse\n%matplotlib inline",
        'frame = nb.load("applications", columns=["income"])\nnb.save(table, frame)\n'
        "valid, rejected = nb.split_valid(table=table, frame=frame)",
        'scores = nb.load("predictions")\nnb.warehouse().read_table("monitoring_metrics")',  # built-in run tables
        "!echo shell\nfiles = !ls\nnb.load?\nif True:\n    %time frame.head()",
        "%%bash\nthis is not ( python",
    )
    passes(project)


def test_the_repositorys_own_project_passes():
    from click.testing import CliRunner

    from runner.cli import main

    result = CliRunner().invoke(main, ["validate", "--config", str(ROOT / "runner.yaml")], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("ok credit_") == 4


# a. the data dictionary loads

def test_a_missing_dictionary_is_refused_when_a_pipeline_declares_a_purpose(project):
    write_project(project, "x = 1", dictionary=None)
    assert refused(project) == (
        f"error: {project.root / 'data' / 'dictionary.yaml'}: file not found; create it (see {REFERENCE}; "
        "`runner schema dictionary` prints its JSON Schema) or fix the 'dictionary' key in runner.yaml"
    )


def test_a_missing_dictionary_is_refused_when_a_notebook_names_a_table(project):
    write_project(project, 'from runner import nb\nnb.load("applications")', purpose=None, dictionary=None)
    assert "dictionary.yaml: file not found; create it" in refused(project)


def test_without_purposes_and_tables_no_dictionary_is_needed(project):
    write_project(project, "print(table)", purpose=None, dictionary=None)
    passes(project)


def test_a_broken_dictionary_names_its_file_and_key(project):
    broken = yaml.safe_load(yaml.safe_dump(DICTIONARY))
    broken["tables"]["applications"]["columns"]["income"]["nulable"] = True
    write_project(project, "x = 1", dictionary=broken)
    assert refused(project) == (
        f"error: {project.root / 'data' / 'dictionary.yaml'}:tables.applications.columns.income.nulable: "
        f"unknown key; check its spelling against {REFERENCE}"
    )


# b. every purpose is declared

def test_an_undeclared_purpose_names_the_pipeline_key_and_the_known_purposes(project):
    write_project(project, "x = 1", purpose="marketing")
    assert refused(project) == (
        f"error: {project.config}:pipelines.p.purpose: purpose 'marketing' is not declared under 'purposes:' in "
        "the data dictionary data/dictionary.yaml; known: ['analytics', 'scoring']; use one of them or declare it "
        f"there (see {REFERENCE})"
    )


# c. every table a notebook names is declared

def undeclared(table: str, cell: int = 2, given: str = "") -> str:
    return (f"error: notebooks/step.ipynb: cell {cell}: table {table!r}{given} is not declared in the data "
            f"dictionary data/dictionary.yaml; {DECLARED}; declare it (see {REFERENCE})")


def test_an_undeclared_table_literal_names_the_cell(project):
    write_project(project, "from runner import nb", "x = 1", 'frame = nb.load("aplications")')
    assert refused(project) == undeclared("aplications", cell=4)


def test_a_table_given_by_runner_yaml_is_checked(project):
    write_project(project, "from runner import nb\nframe = nb.load(table)", step_parameters={"table": "loans"})
    assert refused(project) == undeclared("loans", given=" (parameter 'table')")


def test_a_table_from_the_parameters_default_is_checked(project):
    write_project(project, "from runner import nb\nnb.save(table, frame)", parameters='table = "loans"')
    assert refused(project) == undeclared("loans", given=" (parameter 'table')")


def test_a_table_known_only_when_the_step_starts_is_left_to_the_run(project):
    write_project(project, "from runner import nb\nframe = nb.load(table)\nother = nb.load(f'x_{table}')",
                  step_parameters={"table": "${pipeline}_rows"})
    passes(project)


@pytest.mark.parametrize("call", [
    'nb.score(model, "m", "1", "loans", where="month = :m")',
    'nb.score(model, "m", "1", where="x", table="loans")',
    'nb.feature_kinds(["income"], "loans")',
    'nb.limits(columns=["income"], table="loans")',
    'nb.features("loans", exclude=["income"])',
    'nb.split_valid("loans", frame)',
    'nb.warehouse().read_table("loans")',
    'runner.nb.load("loans")',
])
def test_every_table_naming_call_is_checked(project, call):
    write_project(project, f"import runner.nb\nfrom runner import nb\n{call}")
    assert refused(project) == undeclared("loans")


def test_other_names_for_the_notebook_api_are_followed(project):
    write_project(project, 'from runner import nb as api\napi.load("loans")')
    assert refused(project) == undeclared("loans")
    write_project(project, 'from runner.nb import load as read\nread("loans")')
    assert refused(project) == undeclared("loans")


def test_calls_of_other_modules_and_positions_without_a_table_are_not_tables(project):
    write_project(project, "import json\nfrom runner import nb\n"
                           'json.load("loans")\nnb.score(model, "m", "1")\nnb.glue("loans", 1)\nnb.limits(["income"])')
    passes(project)


# d. cells parse, imports from runner exist

def test_a_cell_that_is_not_python_names_the_cell_and_line(project):
    write_project(project, "x = 1", "y = 2\nif y\n    z = 3")
    assert refused(project) == ("error: notebooks/step.ipynb: cell 3: line 2: not valid Python: expected ':' "
                                "('if y'); fix it in JupyterLab (the step would fail at this cell)")


def test_a_parameters_cell_that_is_not_python_is_refused(project):
    write_project(project, "x = 1", parameters='table = "applications"\nrows = (1,')
    line = refused(project)
    assert line.startswith("error: notebooks/step.ipynb: cell 1 (the parameters cell): line 2: not valid Python: ")


def test_a_name_runner_does_not_have_is_refused(project):
    write_project(project, "import pandas as pd\nfrom runner.monitoring.drift import compare, drift_report, status")
    assert refused(project) == ("error: notebooks/step.ipynb: cell 2: 'from runner.monitoring.drift import drift_report': "
                                "runner.monitoring.drift has no name 'drift_report'; fix the import (the step would fail "
                                "at this cell)")


@pytest.mark.parametrize(("source", "problem"), [
    ("from runner import nbb", "runner has no name 'nbb'; did you mean 'nb'?"),
    ("from runner.monitor import compare", "there is no module runner.monitor"),
    ("import runner.nothing", "runner has no module 'nothing'"),
    ("import runner.nothing.deeper", "there is no module runner.nothing"),
    ("def f():\n    from runner.nb import lood", "runner.nb has no name 'lood'; did you mean 'load'?"),
])
def test_every_kind_of_runner_import_is_checked(project, source, problem):
    write_project(project, source)
    assert problem in refused(project)


# e. the purpose rule: a pipeline that reads the dictionary's tables declares a purpose; every table
#    a notebook writes or queries is declared; a dictionary runner.yaml names must exist

def no_purpose(project, cell: int, table: str) -> str:
    return (f"error: {project.config}:pipelines.p: pipeline 'p' declares no purpose; add `purpose:` (one of "
            f"['analytics', 'scoring']): notebooks/step.ipynb cell {cell} reads {table!r}, and the data dictionary "
            "checks every read against the pipeline's purpose")


@pytest.mark.parametrize("call", [
    'nb.load("applications", columns=["income"])',
    'nb.score(model, "m", "1", table)',
    'nb.warehouse().read_table("applications")',
    'nb.warehouse().read_sql("SELECT COUNT(*) AS n FROM applications WHERE income > :x", {"x": 1})',
])
def test_a_pipeline_that_reads_the_dictionarys_tables_declares_a_purpose(project, call):
    write_project(project, f"from runner import nb\n{call}", purpose=None)
    assert refused(project) == no_purpose(project, 2, "applications")


def test_without_a_purpose_a_pipeline_may_write_and_read_the_run_tables(project):
    write_project(project, 'from runner import nb\nnb.save("applications", frame)\nnb.split_valid(table, frame)',
                  'nb.load("predictions")\nnb.warehouse().read_sql("SELECT COUNT(*) AS n FROM monitoring_metrics")',
                  purpose=None)
    passes(project)


@pytest.mark.parametrize("call", [
    'nb.warehouse().write_table("loans", frame)',
    'nb.warehouse().read_sql("SELECT l.amount FROM applications a JOIN loans l ON a.application_id = l.id")',
])
def test_tables_written_or_queried_are_declared(project, call):
    write_project(project, f"from runner import nb\n{call}")
    assert refused(project) == undeclared("loans")


def test_a_literal_query_the_purpose_rule_refuses_is_refused_before_the_run(project):
    write_project(project, 'from runner import nb\nnb.warehouse().read_sql("SELECT 1; DROP TABLE applications")')
    assert refused(project) == ("error: notebooks/step.ipynb: cell 2: read_sql: 2 statements; read_sql runs one "
                                "SELECT")
    write_project(project, "from runner import nb\nnb.warehouse().read_sql(\"DELETE FROM applications\")")
    assert "cell 2: read_sql: DELETE is not a read" in refused(project)


def test_a_query_built_at_run_time_is_left_to_the_run(project):
    write_project(project, 'from runner import nb\nnb.warehouse().read_sql(f"SELECT {column} FROM loans")',
                  parameters='column = "amount"')
    passes(project)


def test_a_dictionary_runner_yaml_names_must_exist_even_if_nothing_uses_it(project):
    write_project(project, "x = 1", purpose=None)
    config = yaml.safe_load(project.config.read_text())
    project.config.write_text(yaml.safe_dump({"dictionary": "data/dictionnary.yaml", **config}))
    assert refused(project) == (
        f"error: {project.root / 'data' / 'dictionnary.yaml'}: file not found; create it (see {REFERENCE}; "
        "`runner schema dictionary` prints its JSON Schema) or fix the 'dictionary' key in runner.yaml"
    )
