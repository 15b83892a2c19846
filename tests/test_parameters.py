"""The parameter contract: types from the parameters cell, coercion, and errors before any kernel starts."""

from __future__ import annotations

import pytest
from conftest import notebook, step

from runner.errors import ParameterError
from runner.notebook.adapter import read_contract
from runner.notebook.contract import coerce_value, parse_assignments


def test_contract_reads_names_defaults_and_types_without_a_kernel():
    contract = read_contract(notebook("ok"))
    types = {name: (p.type, p.default) for name, p in contract.parameters.items()}
    assert types == {
        "x": ("int", 1),
        "name": ("str", "world"),
        "ratio": ("float", 0.5),
        "flag": ("bool", False),
        "items": ("list", [1, 2]),
        "options": ("dict", {"a": 1}),
        "as_of": ("date", "2026-01-01"),
    }


@pytest.mark.parametrize(
    ("name", "given", "expected"),
    [
        ("x", "5", 5),
        ("x", 7, 7),
        ("ratio", "0.25", 0.25),
        ("ratio", 2, 2.0),
        ("flag", "true", True),
        ("flag", "No", False),
        ("items", "[3, 4]", [3, 4]),
        ("items", (5,), [5]),
        ("options", '{"b": 2}', {"b": 2}),
        ("name", "__import__('os').system('rm -rf /')", "__import__('os').system('rm -rf /')"),
        ("as_of", "2026-07-01", "2026-07-01"),
    ],
)
def test_values_are_coerced_to_the_declared_type(name, given, expected):
    contract = read_contract(notebook("ok"))
    coerced = contract.coerce({name: given})[name]
    assert coerced == expected and type(coerced) is type(expected)


def test_yaml_dates_become_iso_strings():
    import datetime as dt

    contract = read_contract(notebook("ok"))
    assert contract.coerce({"as_of": dt.date(2026, 7, 1)}) == {"as_of": "2026-07-01"}


@pytest.mark.parametrize(
    ("name", "given", "expected"),
    [("x", "five", "int"), ("x", True, "int"), ("x", 1.5, "int"), ("flag", "maybe", "bool"),
     ("items", "{a: 1}", "list"), ("name", 3, "str"), ("as_of", "July 1st", "an ISO date"), ("ratio", None, "float")],
)
def test_wrong_types_name_notebook_parameter_and_expected_type(name, given, expected):
    contract = read_contract(notebook("ok"))
    with pytest.raises(ParameterError) as caught:
        contract.coerce({name: given})
    message = str(caught.value)
    assert notebook("ok") in message and f"'{name}'" in message and f"expected {expected}" in message


def test_unknown_parameter_lists_the_declared_ones():
    with pytest.raises(ParameterError, match="declares: as_of, flag, items, name, options, ratio, x"):
        read_contract(notebook("ok")).coerce({"max_depth": 3})


def test_a_notebook_without_parameters_cell_is_refused():
    with pytest.raises(ParameterError, match="no cell tagged 'parameters'"):
        read_contract(notebook("no_parameters"))


def test_untyped_parameters_take_values_as_given():
    contract = read_contract(notebook("ok"))
    untyped = contract.parameters["x"].__class__("anything", "any", None)
    assert coerce_value({"k": [1]}, untyped) == {"k": [1]}


def test_cli_assignments_need_step_and_name():
    assert parse_assignments(["train.max_depth=5", "train.name=a=b"]) == {"train": {"max_depth": "5", "name": "a=b"}}
    with pytest.raises(ParameterError, match="STEP.NAME=VALUE"):
        parse_assignments(["max_depth=5"])


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["-p", "a.x=five"], "ok.ipynb parameter 'x': expected int, got str 'five'"),
        (["-p", "a.max_depth=3"], "parameter 'max_depth': unknown parameter"),
        (["-p", "nope.x=1"], "no step named 'nope'"),
        (["-p", "x=1"], "expected STEP.NAME=VALUE"),
        (["--as-of", "yesterday"], "--as-of parameter 'as_of': expected an ISO date"),
    ],
)
def test_bad_parameters_exit_2_before_anything_runs(project, args, words):
    project.write({"p": {"steps": {"a": step("ok"), "b": step("broken", needs=["a"])}}})
    result = project.cli("run", "p", *args)
    assert result.exit_code == 2, result.output
    assert words in result.stderr
    assert not (project.home / "runs").exists(), "nothing may be recorded as a run"


def test_validate_refuses_a_step_whose_notebook_has_no_parameters_cell(project):
    project.write({"p": {"steps": {"a": step("ok"), "b": step("no_parameters")}}})
    result = project.cli("validate")
    assert result.exit_code == 2
    assert "no_parameters.ipynb: no cell tagged 'parameters'" in result.stderr
    assert not (project.home / "runs").exists()


def test_validate_checks_yaml_parameters_and_prints_the_plan(project):
    project.write({"p": {"steps": {"a": step("ok", parameters={"x": "3", "flag": "yes"})}}})
    result = project.cli("validate", "p")
    assert result.exit_code == 0, result.output
    assert "ok p: 1 step(s)" in result.stdout and "x=3" in result.stdout and "flag=True" in result.stdout
    project.write({"p": {"steps": {"a": step("ok", parameters={"items": 3})}}})
    result = project.cli("validate", "p")
    assert result.exit_code == 2 and "'items': expected list, got int 3" in result.stderr


@pytest.mark.parametrize(("name", "given"), [
    ("ratio", "nan"), ("ratio", "inf"), ("ratio", "-Infinity"), ("ratio", "1e999"), ("ratio", float("nan")),
    ("ratio", float("-inf")), ("items", [1, float("nan")]), ("items", "[.inf]"), ("options", {"a": float("inf")}),
    ("options", {"a": [float("nan")]}),
])
def test_nan_and_infinity_are_refused_since_the_run_record_cannot_hold_them(name, given):
    contract = read_contract(notebook("ok"))
    with pytest.raises(ParameterError) as caught:
        contract.coerce({name: given})
    assert f"'{name}': expected a finite number" in str(caught.value)
    assert "`runner rerun` could not repeat the run" in str(caught.value)
    untyped = contract.parameters["x"].__class__("anything", "any", None)
    if not isinstance(given, str):
        with pytest.raises(ParameterError, match="expected a finite number"):
            coerce_value(given, untyped)
    assert contract.coerce({"ratio": "1e308"}) == {"ratio": 1e308}  # large, but a number JSON holds


def test_text_that_is_not_utf8_is_refused_wherever_it_sits():
    contract = read_contract(notebook("ok"))
    for name, given in (("name", "caf\udce9"), ("items", ["\udcff"]), ("options", {"\udcff": 1})):
        with pytest.raises(ParameterError, match=f"'{name}': expected UTF-8 text"):
            contract.coerce({name: given})


def test_a_dict_given_as_text_may_not_hold_a_key_twice():
    with pytest.raises(ParameterError, match="key 'a' given twice"):
        read_contract(notebook("ok")).coerce({"options": "{a: 1, b: 2, a: 3}"})


@pytest.mark.parametrize(("metadata", "words"), [
    ({"kernelspec": {"name": "ir", "display_name": "R", "language": "R"}, "language_info": {"name": "R"}},
     "a notebook for 'R' (metadata.language_info.name)"),
    ({"kernelspec": {"name": "julia-1.10", "display_name": "Julia", "language": "julia"}},
     "a notebook for 'julia' (metadata.kernelspec.language)"),
])
def test_a_notebook_for_another_language_is_refused_when_the_run_is_planned(project, metadata, words):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    path = project.root / "other.ipynb"
    cell = new_code_cell("x <- 1", metadata={"tags": ["parameters"]})
    nbformat.write(new_notebook(cells=[cell], metadata=metadata), str(path))
    with pytest.raises(ParameterError, match="steps run in a Python kernel only"):
        read_contract(path)
    project.write({"p": {"steps": {"a": {"notebook": str(path)}}}})
    result = project.cli("run", "p")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {path}: {words}; steps run in a Python kernel only: write the step in Python, or run this notebook "
        "with its own tools"
    ]
    assert not (project.home / "runs").exists()


def test_python_notebooks_and_notebooks_that_state_no_language_are_read():
    from runner.notebook.adapter import check_language

    for metadata in ({}, {"kernelspec": {"name": "python3", "language": "python"}, "language_info": {"name": "python"}},
                     {"kernelspec": {"name": "xpython", "language": "Python 3.12"}}, {"kernelspec": None}):
        check_language({"metadata": metadata, "cells": []}, "nb.ipynb")


def test_argument_bytes_that_are_not_utf8_are_one_line_and_exit_2_in_a_real_process(project):
    import os
    import subprocess
    import sys
    from pathlib import Path

    project.write({"p": {"steps": {"a": step("ok")}}})
    script = Path(sys.executable).with_name("runner")
    done = subprocess.run([str(script), "run", "p", "--config", str(project.config), "-p", b"a.name=caf\xe9"],
                          capture_output=True, timeout=120, env={**os.environ, "LC_ALL": "C.UTF-8"})
    assert done.returncode == 2, done.stderr
    assert done.stderr.decode().strip().splitlines() == [
        "error: -p/--param 'a.name=caf\\xe9': not UTF-8 text; give it as UTF-8 (check the encoding of the terminal or "
        "script that passes it)"
    ]
    assert not (project.home / "runs").exists()


def _papermill_reading(source: str) -> list[tuple]:
    from papermill.translators import PythonTranslator

    return [(found.name, None if found.inferred_type_name in ("None", "NoneType") else found.inferred_type_name,
             found.default, found.help) for found in PythonTranslator.inspect({"source": source})]


def _our_reading(source: str) -> list[tuple] | None:
    from runner.notebook.contract import declared_parameters

    found = declared_parameters(source)
    return None if found is None else [(item.name, item.annotation, item.default, item.help) for item in found]


def _parameters_cells():
    from pathlib import Path

    import nbformat

    root = Path(__file__).resolve().parents[1]
    for path in sorted([*root.glob("templates/notebooks/*.ipynb"), *root.glob("tests/notebooks/*.ipynb"),
                        *root.glob("notebooks/**/*.ipynb")]):
        for cell in nbformat.read(path, as_version=4).cells:
            if "parameters" in cell.metadata.get("tags", []):
                yield path.relative_to(root), cell.source


def test_the_parameters_cells_of_every_shipped_notebook_read_as_papermill_reads_them():
    """The contract is read with Python's parser (no papermill import in the runner's process); on every
    notebook the project ships, templates included, it finds what papermill's reading finds."""
    cells = list(_parameters_cells())
    assert len(cells) >= 20
    missed = {}
    for path, source in cells:
        ours, theirs = _our_reading(source), _papermill_reading(source)
        assert [item for item in ours if item in theirs] == theirs, path
        missed.update({(str(path), item[0]): item for item in ours if item not in theirs})
    # papermill skips a line holding a second '=', here in the help: `-p watch.alias=...` was refused as unknown
    assert list(missed) == [("templates/notebooks/monitor.ipynb", "alias")]
    assert missed["templates/notebooks/monitor.ipynb", "alias"][2] == '"champion"'


@pytest.mark.parametrize("source", [
    "x = 1  # the help",
    "x: int = 1\ny: 'float' = 2.5  # a ratio\nz: list[int] = [1, 2]",
    "x = 1  # type: float",
    "x = 1  # type: float  and some help",
    "# a comment alone\n\nx = 'a'\n",
    "when = '2026-01-31'  # as_of\ntoken = ''  # secret: from ${env.TOKEN}",
    "limits = {\n    'a': 1,  # inner comment\n    'b': [2, 3],\n}  # the limits",
    "a = b = 1\nx, y = 1, 2\nc: int",  # several targets, unpacking, no value: no parameter
    "flag = True\nnothing = None\nneg = -1e-3",
])
def test_cells_read_as_papermill_reads_them(source):
    ours = _our_reading(source)
    theirs = _papermill_reading(source)
    if "limits" in source:  # papermill joins the lines and drops inner comments; we keep the source as written
        assert [item[:2] + item[3:] for item in ours] == [item[:2] + item[3:] for item in theirs]
        assert eval(ours[0][2]) == eval(theirs[0][2]) == {"a": 1, "b": [2, 3]}
    else:
        assert ours == theirs


@pytest.mark.parametrize("source, expected", [
    # a default holding '=' or '#': papermill skips the line or cuts the value at the '#'
    ("options = dict(depth=3)  # tree options", [("options", None, "dict(depth=3)", "tree options")]),
    ("pattern = 'a#b'  # the pattern", [("pattern", None, "'a#b'", "the pattern")]),
    # papermill glues the next lines without '=' onto a default
    ("%matplotlib inline\nx = 3\n!echo hi", [("x", None, "3", "")]),
    ("import os\nx = os.getcwd()\nfrom math import pi", [("x", None, "os.getcwd()", "")]),
])
def test_cells_papermill_misreads_are_read_as_python_reads_them(source, expected):
    assert _our_reading(source) == expected
    assert _papermill_reading(source) != expected


def test_a_parameters_cell_that_is_not_python_is_read_by_papermill(tmp_path):
    from conftest import write_notebook

    write_notebook(tmp_path / "odd.ipynb", [("parameters", "x = 1  # fine\ny = (\nz = 'a'")])
    contract = read_contract(tmp_path / "odd.ipynb")
    assert _our_reading("x = 1  # fine\ny = (\nz = 'a'") is None
    assert contract.parameters["x"].type == "int" and contract.parameters["x"].help == "fine"
    assert contract.parameters["z"].default == "a"


def test_reading_a_contract_imports_neither_papermill_nor_nbformat(tmp_path):
    import subprocess
    import sys

    code = ("import sys; from runner.notebook.adapter import read_contract\n"
            f"contract = read_contract({notebook('ok')!r})\n"
            "assert contract.parameters, contract\n"
            "print(sorted(name for name in ('papermill', 'nbformat', 'jsonschema') if name in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
