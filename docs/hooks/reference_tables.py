"""MkDocs hook: the reference tables that come from the code, rendered at build time.

A page asks for one with a marker line:

- ``<!-- generated: schema config -->`` and ``<!-- generated: schema dictionary -->``: a table per object
  of the JSON Schema that ``runner schema config|dictionary`` prints (made from the pydantic models);
- ``<!-- generated: environment variables -->``: ``runner.config.ENV_VARS``.

It also turns the Sphinx roles of docstrings (``:func:`context```), which mkdocstrings leaves as text,
into code linked to the function's entry.

Only public names are used (the ``runner`` command, ``runner.config``), so the tables follow the code
wherever its modules move. An unknown marker fails the build.
"""

from __future__ import annotations

import json
import re
from typing import Any

MARKER = re.compile(r"^<!-- generated: (.+?) -->$", re.MULTILINE)
# A Sphinx role in a docstring (:func:`context`) as mkdocstrings renders it: the role's name, then code.
ROLE = re.compile(r":(?:func|class|meth|data|attr|mod):<code>([\w.]+)</code>")
ANCHOR = re.compile(r'id="([\w.]+)"')


def on_page_markdown(markdown: str, page, config, files) -> str:
    return MARKER.sub(lambda match: _generate(match.group(1), page.file.src_uri), markdown)


def on_page_content(html: str, page, config, files) -> str:
    """Docstrings name other functions with Sphinx roles; show them as code, linked when on the same page."""
    anchors = ANCHOR.findall(html)

    def replace(match: re.Match) -> str:
        name = match.group(1)
        targets = [anchor for anchor in anchors if anchor == name or anchor.endswith(f".{name}")]
        code = f"<code>{name}</code>"
        return f'<a href="#{targets[0]}">{code}</a>' if len(targets) == 1 else code

    return ROLE.sub(replace, html)


def _generate(what: str, where: str) -> str:
    if what in ("schema config", "schema dictionary"):
        return schema_tables(_schema(what.split()[1]))
    if what == "environment variables":
        return environment_table()
    raise ValueError(f"{where}: unknown marker 'generated: {what}'; known: schema config, schema dictionary, "
                     "environment variables")


def _schema(kind: str) -> dict[str, Any]:
    from click.testing import CliRunner

    from runner.cli import main

    result = CliRunner().invoke(main, ["schema", kind], catch_exceptions=False)
    if result.exit_code != 0:
        raise RuntimeError(f"runner schema {kind} exited {result.exit_code}: {result.output}")
    return json.loads(result.output)


def environment_table() -> str:
    from runner.config import ENV_VARS

    rows = [f"| `{var.name}` | {_cell(var.meaning)} | {_cell(var.default)} |" for var in ENV_VARS]
    return "\n".join(["| variable | meaning | default |", "|---|---|---|", *rows])


def schema_tables(schema: dict[str, Any]) -> str:
    """One table per object of the schema, headed by the key path where it sits (``pipelines.<pipeline>``).

    Sections come in the order of the keys, each object after its parent. Each definition is shown once,
    at the first path that reaches it; every key of that type links there. A definition that several keys of
    one object share (the levels of each monitoring threshold) sits at ``parent.<singular of parent>``.
    """
    defs = schema.get("$defs", {})
    sections: list[tuple[str, str, dict[str, Any]]] = []  # (path, description, object schema)
    placed: dict[str, str] = {}  # definition name -> path of its section

    def walk(path: str, node: dict[str, Any]) -> None:
        sections.append((path, node.get("description", "") if path else "", node))
        found = [(key, ref, at) for key, prop in node.get("properties", {}).items()
                 for ref, at in _objects(prop, f"{path}.{key}" if path else key, key)]
        shared = {ref for ref in {ref for _, ref, _ in found} if sum(ref == other for _, other, _ in found) > 1}
        for _key, ref, at in found:
            if ref not in placed:
                placed[ref] = f"{path}.<{_singular(path.rsplit('.', 1)[-1])}>" if ref in shared else at
                walk(placed[ref], defs[ref])

    walk("", schema)
    out = []
    for path, description, node in sections:
        out.append(f"### `{path}` {{#{_anchor(path)}}}" if path else "### Top level")
        if description:
            out.append("\n" + _cell(_first_paragraph(description)))
        required = set(node.get("required", []))
        rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
        for key, prop in node.get("properties", {}).items():
            rows.append(f"| `{key}` | {_type(prop, defs, placed)} | "
                        f"{'required' if key in required else _default(prop)} | {_cell(prop.get('description', ''))} |")
        out.append('\n<div class="schema-table" markdown>\n\n' + "\n".join(rows) + "\n\n</div>\n")
    return "\n".join(out)


def _objects(prop: dict[str, Any], path: str, key: str) -> list[tuple[str, str]]:
    """The definitions a property holds, with the key path each sits at: directly, or as a map's values."""
    found = []
    for option in prop.get("anyOf", [prop]):
        if "$ref" in option:
            found.append((_ref(option), path))
        values = option.get("additionalProperties")
        if isinstance(values, dict) and "$ref" in values:
            found.append((_ref(values), f"{path}.<{_singular(key)}>"))
    return found


def _type(prop: dict[str, Any], defs: dict[str, Any], placed: dict[str, str]) -> str:
    options = [option for option in prop.get("anyOf", [prop]) if option.get("type") != "null"]
    names = []
    for option in options:
        if "$ref" in option:
            names.append(_link(_ref(option), defs, placed))
        elif "enum" in option:
            names.append(" \\| ".join(f"`{value}`" for value in option["enum"]))
        elif option.get("type") == "array":
            names.append(f"list of {_type(option.get('items', {}), defs, placed)}")
        elif option.get("type") == "object" and isinstance(option.get("additionalProperties"), dict) \
                and "$ref" in option["additionalProperties"]:
            names.append(f"map of name to {_link(_ref(option['additionalProperties']), defs, placed)}")
        elif option.get("type") == "object" and isinstance(option.get("additionalProperties"), dict):
            names.append(f"map of name to {_type(option['additionalProperties'], defs, placed)}")
        else:
            names.append(option.get("type", "any"))
    bounds = [f"{word} {prop_or(options, field)}" for field, word in
              (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤")) if prop_or(options, field) is not None]
    text = " or ".join(dict.fromkeys(names)) or "any"
    return text + (f" ({', '.join(bounds)})" if bounds else "")


def prop_or(options: list[dict[str, Any]], field: str) -> Any:
    return next((option[field] for option in options if field in option), None)


def _link(ref: str, defs: dict[str, Any], placed: dict[str, str]) -> str:
    path = placed.get(ref)
    return f"object: [`{path}`](#{_anchor(path)})" if path else "object"


def _anchor(path: str) -> str:
    """The id given to the heading of ``path`` (attr_list): ``pipelines.<pipeline>`` -> ``pipelines-pipeline``."""
    return re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")


def _default(prop: dict[str, Any]) -> str:
    """The default as it would be written in YAML (flow style), or nothing when there is none."""
    if "default" not in prop or prop["default"] is None:
        return ""
    value = prop["default"]
    if isinstance(value, dict) and not all(isinstance(item, (int, float, str)) for item in value.values()):
        return "each key's default"
    return f"`{_yaml(value)}`"


def _yaml(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_yaml(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_yaml(item) for item in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value) if value == "" else str(value)


def _ref(option: dict[str, Any]) -> str:
    return option["$ref"].rsplit("/", 1)[-1]


def _singular(key: str) -> str:
    return key[:-1] if key.endswith("s") else "name"


def _first_paragraph(text: str) -> str:
    return text.strip().split("\n\n")[0]


def _cell(text: str) -> str:
    """Text for one table cell: one line, ``|`` escaped, and ``<`` outside code spans shown, not read as HTML."""
    parts = re.split(r"(`+[^`]*`+)", " ".join(str(text).split()))
    return "".join(part if part.startswith("`") else part.replace("<", "&lt;") for part in parts).replace("|", "\\|")
