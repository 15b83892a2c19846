"""JSON Schemas of ``runner.yaml`` and of the data dictionary, made from the pydantic models that load them.

The generated files ship in this package (``runner.schema.json``, ``dictionary.schema.json``) so that
editors check and complete the YAML files: the YAML language server (VS Code, JupyterLab) reads a
first line such as ``# yaml-language-server: $schema=<path or URL of the file>``. A test keeps the
shipped files equal to :func:`generate`; ``runner schema config|dictionary --out FILE`` rewrites them.

The schemas accept what the loaders accept (durations as numbers or strings like ``"30m"``, ``needs``
as one name or a list, a column's owner inherited from its table); a few checks stay with the
loaders only, such as a cron expression's validity or steps forming a cycle.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

KINDS = {"config": "runner.schema.json", "dictionary": "dictionary.schema.json"}
DIALECT = "https://json-schema.org/draft/2020-12/schema"
REGENERATE = "runner schema {kind} --out runner/schemas/{file}"


def _check(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"no schema named {kind!r}; known: {', '.join(KINDS)}")
    return KINDS[kind]


def path(kind: str) -> Path:
    """The schema file shipped in the package for ``kind`` (``config`` or ``dictionary``)."""
    return Path(__file__).with_name(_check(kind))


def generate(kind: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``runner.yaml`` (``config``) or of the data dictionary."""
    _check(kind)
    if kind == "config":
        from runner.config import _ConfigFile

        schema = _ConfigFile.model_json_schema()
        head = {"title": "runner.yaml", "description": "Notebook Runner's project file: pipelines, steps, schedules "
                "and stores. Reference: docs/reference/config.md."}
    else:
        from runner.data.dictionary import _DictionaryFile

        schema = _with_column_rules(_DictionaryFile.model_json_schema())
        head = {"title": "data dictionary", "description": "Notebook Runner's data dictionary: purposes, tables and "
                "columns. Reference: docs/reference/dictionary.md."}
    return {"$schema": DIALECT, **head, **{key: value for key, value in schema.items() if key not in head}}


def text(kind: str) -> str:
    """:func:`generate` as the text of the shipped file (two-space indents, a final newline)."""
    import json

    return json.dumps(generate(kind), indent=2, ensure_ascii=False) + "\n"


def _with_column_rules(schema: dict[str, Any]) -> dict[str, Any]:
    """The dictionary schema with the rules pydantic cannot see in the models' types.

    A column's ``owner`` is required unless its table has one (the table's ``owner`` is copied
    into its columns before they are validated); ``levels`` belongs to category columns, which
    need it; ``min``/``max`` to int and float columns; ``pattern`` to string columns
    (``ColumnSpec._options_fit_type``).
    """
    schema = copy.deepcopy(schema)
    column = schema["$defs"]["ColumnSpec"]
    column["required"] = [name for name in column["required"] if name != "owner"]

    def of_type(*types: str) -> dict[str, Any]:
        return {"properties": {"type": {"enum": list(types)}}, "required": ["type"]}

    def null(*names: str) -> dict[str, Any]:
        return {"properties": {name: {"type": "null"} for name in names}}

    column["allOf"] = [
        {"if": of_type("category"), "else": null("levels"),
         "then": {"required": ["levels"], "properties": {"levels": {"type": "array", "minItems": 1}}}},
        {"if": of_type("int", "float"), "else": null("min", "max")},
        {"if": of_type("string"), "else": null("pattern")},
    ]
    table = schema["$defs"]["TableSpec"]
    table["if"] = {"properties": {"owner": {"type": "string", "minLength": 1}}, "required": ["owner"]}
    table["else"] = {"properties": {"columns": {"additionalProperties": {"required": ["owner"]}}}}
    return schema
