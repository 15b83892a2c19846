"""The parameter contract: types from the parameters cell, coercion, and errors before any kernel starts."""

from __future__ import annotations

import pytest
from conftest import notebook, step

from runner.errors import ParameterError
from runner.notebooks import read_contract
from runner.parameters import coerce_value, parse_assignments


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
