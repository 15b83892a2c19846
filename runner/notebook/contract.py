"""The parameter contract of a notebook, and the coercion of values to it.

A notebook's contract is its cell tagged ``parameters``: names, defaults and, from them (or
from annotations), types. Values from ``runner.yaml``, the CLI and upstream scraps are coerced
to those types and checked here, before any kernel starts; papermill itself only warns.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from runner.config import UniqueKeyLoader
from runner.errors import ParameterError

TYPES = ("int", "float", "bool", "str", "date", "list", "dict", "any")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str  # one of TYPES; "date" is an ISO date carried as a string
    default: Any
    help: str = ""
    secret: bool = False  # marked `# secret` in the parameters cell: only ${env.NAME} is accepted


@dataclass(frozen=True)
class ParameterContract:
    notebook: str
    parameters: Mapping[str, Parameter]

    def coerce(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Values coerced to the declared types; any unknown name or bad value is a ParameterError."""
        return {name: coerce_value(value, self.parameter(name), self.notebook) for name, value in values.items()}

    def parameter(self, name: str) -> Parameter:
        if name not in self.parameters:
            known = ", ".join(sorted(self.parameters)) or "none"
            raise ParameterError(
                f"unknown parameter; the notebook's parameters cell declares: {known}", self.notebook, name
            )
        return self.parameters[name]


@dataclass(frozen=True)
class Declared:
    """One assignment of a parameters cell, as written: ``name: annotation = default  # help``."""

    name: str
    annotation: str | None
    default: str  # the default's source text
    help: str = ""


_MAGIC = re.compile(r"^\s*[%!]")  # IPython's line magics and shell escapes: not Python


def parameters_source(cells: Iterable[Mapping[str, Any]]) -> str | None:
    """The source of the first cell tagged ``parameters`` among ``cells`` (as nbformat reads them, or as plain
    JSON), None when no cell is tagged so."""
    cell = next((c for c in cells if "parameters" in ((c.get("metadata") or {}).get("tags") or [])), None)
    if cell is None:
        return None
    source = cell.get("source") or ""
    return "".join(source) if isinstance(source, list) else str(source)


def declared_parameters(source: str) -> list[Declared] | None:
    """The parameters a cell's source declares, read with Python's own parser; None when it is not Python
    (a syntax error): then papermill's line-by-line reading decides (:func:`runner.notebook.adapter.read_contract`).

    Each top-level ``name = value`` or ``name: annotation = value`` is one, in order; its help is the comment
    ending its last line, and a ``# type: T`` comment there gives the annotation when the line has none,
    as papermill reads them. Other statements (imports, ``a, b = ...``, ``a = b = ...``) declare nothing.
    Unlike papermill, a default holding ``=`` (``dict(a=1)``) is read too, where papermill skips the line.
    """
    import ast
    import io
    import tokenize

    lines = source.splitlines()
    code = "\n".join("pass" if _MAGIC.match(line) else line for line in lines)  # line numbers kept
    try:
        tree = ast.parse(code)
        comments = {token.start[0]: token.string
                    for token in tokenize.generate_tokens(io.StringIO(code).readline)
                    if token.type == tokenize.COMMENT}
    except (SyntaxError, ValueError, tokenize.TokenError):
        return None
    found = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, annotation, value = node.targets[0].id, None, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name, value = node.target.id, node.value
            annotation = node.annotation.value if isinstance(node.annotation, ast.Constant) and isinstance(
                node.annotation.value, str) else ast.unparse(node.annotation)
        else:
            continue
        comment = comments.get(node.end_lineno or node.lineno, "").lstrip("#").strip()
        typed = re.match(r"type:\s*(\S*)\s*(.*)$", comment)
        if typed:
            annotation, comment = annotation or typed.group(1) or None, typed.group(2).strip()
        found.append(Declared(name, annotation, ast.get_source_segment(code, value) or "", comment))
    return found


def infer_type(annotation: str | None, default_source: str) -> tuple[str, Any]:
    """(type, default value) from a parameter's annotation and the source text of its default."""
    import ast

    try:
        default = ast.literal_eval(default_source)
    except (ValueError, SyntaxError, TypeError):
        default = None
        literal = False
    else:
        literal = True
    annotation = (annotation or "").strip().strip("'\"")
    if annotation in ("int", "float", "bool", "str", "list", "dict"):
        kind = annotation
    elif annotation in ("datetime.date", "date"):
        kind = "date"
    elif not literal or default is None:
        kind = "any"
    elif isinstance(default, bool):
        kind = "bool"
    elif isinstance(default, (int, float, str, list, dict)):
        kind = type(default).__name__
    elif isinstance(default, tuple):
        kind = "list"
    else:
        kind = "any"
    if kind == "str" and isinstance(default, str) and _is_iso_date(default):
        kind = "date"
    return kind, default


def coerce_value(value: Any, parameter: Parameter, notebook: str = "") -> Any:
    """``value`` as the parameter's type, or a ParameterError that says what was expected.

    A value the run's JSON record cannot hold as it is (NaN or infinity, which JSON would record as
    null, and text that is not UTF-8) is refused too, wherever it sits in the value: `runner rerun`
    repeats a run from its record.
    """
    coerced = _coerce(value, parameter, notebook)
    problem = _unrecordable(coerced)
    if problem:
        expected, why = problem
        raise ParameterError(f"expected {expected}, got {type(value).__name__} {_shown(value)}: {why}", notebook,
                             parameter.name, parameter.type)
    return coerced


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _unrecordable(value: Any) -> tuple[str, str] | None:
    """(what was expected, why) when ``value`` would not survive the run's JSON record unchanged."""
    if isinstance(value, float) and not math.isfinite(value):
        return "a finite number", ("NaN and infinity cannot be recorded in the run's JSON record (it would hold null, "
                                   "so `runner rerun` could not repeat the run)")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "UTF-8 text", "it holds bytes that are not UTF-8"
        return None
    items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
    if isinstance(items, (list, tuple)):
        return next((problem for problem in map(_unrecordable, items) if problem), None)
    return None


def _coerce(value: Any, parameter: Parameter, notebook: str) -> Any:
    kind = parameter.type

    def fail(detail: str = "") -> ParameterError:
        expected = {"date": "an ISO date string like 2026-07-01", "any": "a value"}.get(kind, kind)
        return ParameterError(
            f"expected {expected}, got {type(value).__name__} {_shown(value)}{detail}", notebook, parameter.name, kind
        )

    if isinstance(value, (dt.date, dt.datetime)):
        value = value.isoformat()
    if value is None:
        if parameter.default is None:
            return None
        raise fail()
    if kind == "any":
        return value
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise fail()
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise fail() from None
        raise fail()
    if kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise fail() from None
        raise fail()
    if kind == "str":
        if isinstance(value, str):
            return value
        raise fail(" (quote it in runner.yaml to pass a string)")
    if kind == "date":
        if isinstance(value, str) and _is_iso_date(value.strip()):
            return value.strip()
        raise fail()
    if kind in ("list", "dict"):
        container = list if kind == "list" else dict
        if isinstance(value, str):
            try:
                value = yaml.load(value, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader
            except yaml.YAMLError as exc:
                duplicate = getattr(exc, "path", None)
                detail = f" (key {duplicate!r} given twice)" if duplicate else " (give it as YAML or JSON)"
                raise fail(detail) from None
            except (ValueError, RecursionError):  # PyYAML's int() of a huge number; deep nesting
                raise fail(" (give it as YAML or JSON)") from None
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, container):
            return value
        raise fail()
    raise fail()


def _is_iso_date(text: str) -> bool:
    if not _ISO_DATE.match(text):
        return False
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def parse_assignments(items: Iterable[str]) -> dict[str, dict[str, str]]:
    """``["train.max_depth=5", ...]`` -> ``{"train": {"max_depth": "5"}}`` (values stay strings)."""
    parsed: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        step, dot, name = key.strip().partition(".")
        if not sep or not dot or not step or not name:
            raise ParameterError(f"-p {item!r}: expected STEP.NAME=VALUE, e.g. -p train.max_depth=5")
        parsed.setdefault(step, {})[name] = value
    return parsed
