"""JSON Schemas of runner.yaml and the data dictionary: shipped, current, and agreeing with the loaders."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from runner.project import schemas
from runner.config import _ConfigFile
from runner.data.dictionary import DataDictionary, _DictionaryFile
from runner.project.schemas import REGENERATE

ROOT = Path(__file__).resolve().parents[1]


def validator(kind: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(schemas.path(kind).read_text(encoding="utf-8")))


def errors(kind: str, document: dict) -> list[str]:
    return [error.message for error in validator(kind).iter_errors(document)]


def accepted_by_loader(kind: str, document: dict) -> bool:
    model = _ConfigFile if kind == "config" else _DictionaryFile
    try:
        model.model_validate(document)
    except ValueError:
        return False
    return True


def config_with_step(**fields) -> dict:
    return {"pipelines": {"p": {"steps": {"a": {"notebook": "a.ipynb", **fields}}}}}


def dictionary_with(table: dict) -> dict:
    return {"purposes": {"scoring": "Deciding."}, "tables": {"t": table}}


COLUMN = {"type": "int", "description": "An id.", "nullable": False, "pii": False, "allowed_purposes": ["any"]}


@pytest.mark.parametrize("kind", sorted(schemas.KINDS))
def test_the_shipped_schemas_are_the_generated_ones(kind):
    file = schemas.path(kind)
    regenerate = REGENERATE.format(kind=kind, file=file.name)
    assert file.is_file(), f"{file} is missing; run `{regenerate}`"
    assert json.loads(file.read_text(encoding="utf-8")) == schemas.generate(kind), \
        f"{file.name} is stale: the models changed; run `{regenerate}` and commit it"
    jsonschema.Draft202012Validator.check_schema(schemas.generate(kind))


def test_the_schemas_are_package_data():
    import tomllib

    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert package_data["runner.project.schemas"] == ["*.schema.json"]
    assert all(schemas.path(kind).name.endswith(".schema.json") for kind in schemas.KINDS)


def test_the_repositorys_own_files_validate():
    assert errors("config", yaml.safe_load((ROOT / "runner.yaml").read_text())) == []
    assert errors("dictionary", yaml.safe_load((ROOT / "data" / "dictionary.yaml").read_text())) == []


@pytest.mark.parametrize("document", [
    config_with_step(retrys=2),                                   # misspelt key
    config_with_step(retries="many"),                             # wrong type
    config_with_step(retries=21),                                 # out of range
    config_with_step(timeout="soon"),                             # not a duration
    config_with_step(retry_on=["always"]),                        # not a choice
    config_with_step(needs=3),
    {"pipelines": {"bad name": {"steps": {"a": {"notebook": "a.ipynb"}}}}},
    {"pipelines": {"p": {"steps": {"a": {}}}}},                   # notebook is required
    {"pipeline": {}},                                             # misspelt top-level key
    {"pipelines": {}, "defaults": {"max_workers": 0}},
    {"pipelines": {}, "notify": {"timeout": 0}},
])
def test_the_config_schema_rejects_what_the_loader_rejects(document):
    assert errors("config", document)
    assert not accepted_by_loader("config", document)


@pytest.mark.parametrize("document", [
    config_with_step(timeout="90s", cell_timeout=30, retry_delay="1m"),
    config_with_step(timeout=" 2h ", cell_timeout="1.5m", retry_delay=0),
    {"pipelines": {"p": {"steps": {"a": {"notebook": "a"}, "b": {"notebook": "b", "needs": "a"}}}}},
    {"pipelines": {"p": {"steps": {"a": {"notebook": "a"}, "b": {"notebook": "b", "needs": ["a"]}}}}},
    {"pipelines": {"p": {"steps": {"a": {"notebook": "a"}},
                         "schedule": {"cron": "0 2 L * *", "misfire_grace": "6h"}}},
     "defaults": {"timeout": "30m", "cell_timeout": None}, "notify": {"timeout": "30s"}},
])
def test_the_config_schema_accepts_what_the_loader_accepts(document):
    assert errors("config", document) == []
    assert accepted_by_loader("config", document)


@pytest.mark.parametrize(("table", "valid"), [
    ({"description": "T.", "owner": "team", "columns": {"id": COLUMN}}, True),          # owner from the table
    ({"description": "T.", "columns": {"id": {**COLUMN, "owner": "team"}}}, True),
    ({"description": "T.", "columns": {"id": COLUMN}}, False),                          # nobody owns the column
    ({"description": "T.", "owner": "team", "columns": {"id": {**COLUMN, "nulable": True}}}, False),
    ({"description": "T.", "owner": "team", "columns": {"id": {**COLUMN, "pii": "maybe"}}}, False),
    ({"description": "T.", "owner": "team", "columns": {"id": {**COLUMN, "type": "integer"}}}, False),
    ({"description": "T.", "owner": "team", "columns": {"id": {**COLUMN, "type": "category"}}}, False),
    ({"description": "T.", "owner": "team", "columns": {"id": {**COLUMN, "type": "category", "levels": []}}}, False),
    ({"description": "T.", "owner": "team", "columns": {"id": {**COLUMN, "type": "category", "levels": ["a"]}}},
     True),
    ({"description": "T.", "owner": "team", "columns": {"id": {**COLUMN, "levels": ["a"]}}}, False),
    ({"description": "T.", "owner": "team", "columns": {"id": {**COLUMN, "min": 0, "max": None}}}, True),
    ({"description": "T.", "owner": "team", "columns": {"id": {**COLUMN, "type": "string", "min": 0}}}, False),
    ({"description": "T.", "owner": "team", "columns": {"id": {**COLUMN, "pattern": "^a"}}}, False),
    ({"description": "T.", "owner": "team", "columns": {"id": {**COLUMN, "allowed_purposes": []}}}, False),
    ({"description": "T.", "owner": "team", "columns": {}}, False),
])
def test_the_dictionary_schema_agrees_with_the_loader(table, valid):
    document = dictionary_with(table)
    assert (errors("dictionary", document) == []) is valid
    assert accepted_by_loader("dictionary", document) is valid


def test_runner_schema_prints_the_schema_as_json():
    from runner.cli import main

    for kind in schemas.KINDS:
        result = CliRunner().invoke(main, ["schema", kind], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == schemas.generate(kind)


def test_runner_schema_out_writes_the_shipped_text(tmp_path):
    from runner.cli import main

    target = tmp_path / "schemas" / "runner.schema.json"
    result = CliRunner().invoke(main, ["schema", "config", "--out", str(target)], catch_exceptions=False)
    assert result.exit_code == 0 and f"wrote {target}" in result.stdout
    assert target.read_text(encoding="utf-8") == schemas.path("config").read_text(encoding="utf-8")
    assert CliRunner().invoke(main, ["schema", "runner"]).exit_code == 2


def test_an_unknown_kind_names_the_known_ones():
    with pytest.raises(ValueError, match="known: config, dictionary"):
        schemas.path("yaml")


def test_the_docs_example_dictionary_is_valid():
    page = (ROOT / "docs" / "reference" / "dictionary.md").read_text(encoding="utf-8")
    section = page[page.index("# Data dictionary reference"):]
    example = section[section.index("```yaml\n") + len("```yaml\n"):section.index("```\n")]
    assert example.startswith("# yaml-language-server: $schema=dictionary.schema.json\n")
    document = yaml.safe_load(example)
    assert errors("dictionary", document) == []
    DataDictionary.from_dict(document, "docs/reference/dictionary.md")  # the loader's checks beyond the schema too
