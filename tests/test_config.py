"""runner.yaml: loaded into frozen objects; every mistake names the file, the key and what was expected."""

from __future__ import annotations

import pydantic
import pytest
import yaml
from conftest import notebook, step

from runner.config import load_config
from runner.errors import ConfigError


def test_config_loads_into_frozen_objects_with_steps_in_dependency_order(project):
    project.write({
        "credit": {
            "purpose": "credit_scoring",
            "steps": {
                "score": step("uses_upstream", needs=["train"], parameters={"model_uri": "${steps.train.model_uri}"}),
                "train": step("glues_values", parameters={"base": 3}, timeout="30m", cell_timeout=90),
            },
        }
    })
    config = load_config(project.config)
    pipeline = config.pipeline("credit")
    assert list(pipeline.steps) == ["train", "score"]
    assert pipeline.steps["train"].timeout == 1800 and pipeline.steps["train"].cell_timeout == 90
    assert config.stores.home == project.home
    assert config.stores.tracking_uri == f"sqlite:///{project.home / 'mlflow.db'}"
    with pytest.raises(pydantic.ValidationError):
        pipeline.steps["train"].notebook = "other.ipynb"


@pytest.mark.parametrize(
    ("pipelines", "key", "words"),
    [
        ({"p": {"steps": {"a": {"notebok": "x.ipynb"}}}}, "pipelines.p.steps.a.notebok", "unknown key"),
        ({"p": {"steps": {"a": {"notebook": "x.ipynb", "timeout": "soon"}}}}, "pipelines.p.steps.a.timeout", "30m"),
        ({"p": {"steps": {"a": {"notebook": "x.ipynb", "needs": ["b"]}}}}, "pipelines.p.steps", "unknown step 'b'"),
        (
            {"p": {"steps": {"a": {"notebook": "x", "needs": ["b"]}, "b": {"notebook": "y", "needs": ["a"]}}}},
            "pipelines.p.steps",
            "cycle: a -> b -> a",
        ),
        (
            {"p": {"steps": {"a": {"notebook": "x"}, "b": {"notebook": "y", "parameters": {"m": "${steps.a.uri}"}}}}},
            "pipelines.p.steps",
            "add it to its 'needs'",
        ),
        ({"p": {"steps": {"a": {"notebook": "x", "parameters": {"m": "${today}"}}}}}, "pipelines.p.steps", "unknown reference"),
        ({"p": {"steps": {}}}, "pipelines.p.steps", "at least one step"),
    ],
)
def test_config_errors_name_file_key_and_expectation(project, pipelines, key, words):
    project.write(pipelines)
    with pytest.raises(ConfigError) as caught:
        load_config(project.config)
    assert caught.value.source == str(project.config)
    assert caught.value.key == key
    assert words in str(caught.value)


def test_validate_reports_a_broken_config_in_one_line_with_exit_code_2(project):
    project.write({"p": {"steps": {"a": {"notebook": notebook("ok"), "retrys": 3}}}})
    result = project.cli("validate")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {project.config}:pipelines.p.steps.a.retrys: unknown key; check its spelling against the "
        "runner.yaml reference, docs/reference/config.md"
    ]


def test_yaml_syntax_errors_name_the_line(project):
    project.config.write_text("pipelines:\n  p:\n    steps: [unclosed\n")
    with pytest.raises(ConfigError, match="line 4"):
        load_config(project.config)


def test_missing_config_says_how_to_fix_it(tmp_path):
    with pytest.raises(ConfigError, match="create runner.yaml"):
        load_config(tmp_path / "runner.yaml")


def test_environment_variables_override_runner_yaml(project, monkeypatch, tmp_path):
    project.write({"p": {"steps": {"a": step("ok")}}}, stores={"runs": "elsewhere/runs", "tracking": "sqlite:///t.db"})
    config = load_config(project.config)
    assert config.stores.runs == str(project.root / "elsewhere" / "runs")
    assert config.stores.tracking_uri == f"sqlite:///{project.root / 't.db'}"
    monkeypatch.setenv("RUNNER_TRACKING_URI", "http://127.0.0.1:5999")
    monkeypatch.setenv("RUNNER_RUN_STORE", str(tmp_path / "store"))
    config = load_config(project.config)
    assert config.stores.tracking_uri == "http://127.0.0.1:5999"
    assert config.stores.runs == str(tmp_path / "store")


def test_unknown_pipeline_lists_the_known_ones(project):
    project.write({"credit": {"steps": {"a": step("ok")}}})
    result = project.cli("validate", "fraud")
    assert result.exit_code == 2
    assert "no pipeline named 'fraud'; known: credit" in result.stderr


def test_a_key_given_twice_is_one_line_naming_file_key_path_and_both_lines(project):
    ok = notebook("ok")
    project.config.write_text(f"pipelines:\n  p:\n    steps:\n      a:\n        notebook: {ok}\n        timeout: 30m\n"
                              f"        retries: 2\n        timeout: 2h\n")
    result = project.cli("validate")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {project.config}:pipelines.p.steps.a.timeout: key given twice (lines 6 and 8); YAML would silently "
        "keep only the last: remove one"
    ]


def test_a_key_merged_in_may_still_be_overridden(project):
    ok = notebook("ok")
    project.config.write_text(f"pipelines:\n  p:\n    steps:\n      a: &step {{notebook: {ok}, timeout: 30m}}\n"
                              f"      b:\n        <<: *step\n        timeout: 2h\n")
    steps = load_config(project.config).pipeline("p").steps
    assert (steps["a"].timeout, steps["b"].timeout) == (1800, 7200)


def test_read_yaml_is_the_loader_for_any_yaml_file_of_the_project(tmp_path):
    from runner.config import UniqueKeyLoader, read_yaml

    path = tmp_path / "dictionary.yaml"
    path.write_text("purposes:\n  scoring: Deciding.\ntables:\n  t: {description: A, description: B}\n")
    with pytest.raises(ConfigError) as caught:
        read_yaml(path)
    assert (caught.value.source, caught.value.key) == (str(path), "tables.t.description")
    assert "lines 4 and 4" in str(caught.value)
    assert yaml.load("a: 1\nb: [1, {c: 2}]\n", Loader=UniqueKeyLoader) == {"a": 1, "b": [1, {"c": 2}]}
    with pytest.raises(FileNotFoundError):  # left to the caller, who knows what to advise
        read_yaml(tmp_path / "missing.yaml")


def test_a_runner_yaml_that_is_not_utf8_names_the_line(project):
    project.config.write_bytes(b"pipelines:\n  p:\n    description: caf\xe9\n")
    result = project.cli("validate")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {project.config}:line 3: not UTF-8 text (byte 0xe9); save the file as UTF-8"
    ]


@pytest.mark.parametrize(("value", "words"), [
    (0, "a deadline must be more than 0 seconds, got 0"), ("-5", "expected seconds or a duration"),
    (-5, "a deadline must be more than 0 seconds, got -5"), (float("inf"), "got inf"), (float("nan"), "got nan"),
    ("9" * 400 + "s", "got 99999"),
])
def test_a_deadline_is_a_positive_finite_duration(project, value, words):
    project.write({"p": {"steps": {"a": step("ok", timeout=value)}}})
    with pytest.raises(ConfigError, match=words) as caught:
        load_config(project.config)
    assert caught.value.key == "pipelines.p.steps.a.timeout"
