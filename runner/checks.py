"""What ``runner validate`` checks beyond the plans, still without starting a kernel.

The plans (:func:`runner.pipeline.validate`) already hold each step's notebook, parameter contract
and coerced parameters. :func:`check_project` adds, and raises the first problem as one line:

* the data dictionary loads, and declares every pipeline's ``purpose``;
* every code cell parses as the kernel (IPython) would run it, the parameters cell included;
* every ``from runner import X``, ``from runner.<module> import X`` and ``import runner.<module>``
  names something the installed runner has;
* every table a notebook names in a call of the notebook API (``nb.load("applications")``, or
  ``nb.load(table)`` where ``table`` is a parameter) is declared in the data dictionary.

"cell N" is the cell's index in the notebook (from 0, markdown cells counted), as in the runner's
other messages. A project that names no table and declares no purpose needs no data dictionary:
the notebook API then runs without one, so its absence is only an error when something needs it.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import pkgutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.config import Config
from runner.dictionary import REFERENCE, DataDictionary
from runner.errors import ConfigError

# Calls of runner.nb that name a table: the function and the position of its ``table`` argument
# (``table=`` as a keyword always counts).
NB_TABLE_ARGS = {
    "load": 0, "save": 0, "split_valid": 0, "features": 0, "key": 0, "score": 3, "feature_kinds": 1,
    "limits": 1, "reference_profile": 2, "save_model": 7, "write_table": 0,
}
# Calls on nb.warehouse(). Not write_table: the warehouse writes a table the dictionary does not
# declare as it is, unvalidated, by design (the reference ingest notebook keeps the rows it rejects
# in such a table, ``rejected_applications``).
WAREHOUSE_TABLE_ARGS = {"read_table": 0}


@dataclass(frozen=True)
class Cell:
    index: int
    tree: ast.Module
    parameters: bool


@dataclass(frozen=True)
class TableUse:
    cell: int
    table: str
    parameter: str | None  # the notebook parameter that gave the name, if one did


def check_project(config: Config, plans: Iterable[Any]) -> None:
    """Raise the first problem of the planned pipelines as a :class:`ConfigError`; nothing runs."""
    plans = list(plans)
    dictionary = _dictionary(config)
    for plan in plans:
        if plan.config.purpose is not None:
            _check_purpose(config, plan.pipeline, plan.config.purpose, dictionary)
    parsed: dict[Path, list[Cell]] = {}
    for plan in plans:
        for step in plan.steps.values():
            shown = _shown(step.notebook, config.root)
            if step.notebook not in parsed:
                parsed[step.notebook] = cells = parse_notebook(step.notebook, shown)
                check_imports(cells, shown)
            for use in tables_named(parsed[step.notebook], step.contract.parameters, step.parameters):
                _check_table(config, use, shown, dictionary)


def parse_notebook(path: Path, shown: str) -> list[Cell]:
    """The notebook's code cells as Python syntax trees, after IPython's own rewriting of magics
    (``%time``, ``!ls``, ``x = !ls``, ``obj?``; a ``%%`` cell becomes one call, its body unread)."""
    import nbformat
    from IPython.core.inputtransformer2 import TransformerManager

    rewrite = TransformerManager().transform_cell
    cells = []
    for index, cell in enumerate(nbformat.read(str(path), as_version=4).cells):
        if cell.cell_type != "code":
            continue
        parameters = "parameters" in cell.get("metadata", {}).get("tags", [])
        try:
            tree = ast.parse(rewrite(cell.source))
        except SyntaxError as exc:
            which = f"cell {index} (the parameters cell)" if parameters else f"cell {index}"
            code = f" ({exc.text.strip()!r})" if exc.text and exc.text.strip() else ""
            raise ConfigError(f"{which}: line {exc.lineno}: not valid Python: {exc.msg}{code}; fix it in JupyterLab "
                              "(the step would fail at this cell)", shown) from None
        cells.append(Cell(index, tree, parameters))
    return cells


def check_imports(cells: list[Cell], shown: str) -> None:
    """Every name imported from ``runner`` exists in the installed runner."""
    for cell in cells:
        for node in ast.walk(cell.tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and _is_runner(node.module or ""):
                for alias in node.names:
                    if alias.name != "*":
                        problem = _missing(node.module, alias.name)
                        if problem:
                            raise ConfigError(f"cell {cell.index}: 'from {node.module} import {alias.name}': "
                                              f"{problem}", shown)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if _is_runner(alias.name) and "." in alias.name:
                        parent, name = alias.name.rsplit(".", 1)
                        problem = _missing(parent, name, attributes=False)
                        if problem:
                            raise ConfigError(f"cell {cell.index}: 'import {alias.name}': {problem}", shown)


def tables_named(cells: list[Cell], contract: dict[str, Any], values: dict[str, Any]) -> Iterator[TableUse]:
    """The tables named by calls of the notebook API, in cell order.

    ``contract`` maps the notebook's parameter names to their :class:`~runner.parameters.Parameter`
    and ``values`` holds the step's coerced values: a parameter passed as the table gives the
    step's value, else its default. A value still holding ``${...}`` is known only when the step
    starts, and any other expression only when the cell runs: both are left out.
    """
    modules, functions = _nb_names(cells)
    for cell in cells:
        for node in ast.walk(cell.tree):
            if not isinstance(node, ast.Call):
                continue
            position = _table_position(node.func, modules, functions)
            if position is None:
                continue
            argument = _argument(node, position)
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                yield TableUse(cell.index, argument.value, None)
            elif isinstance(argument, ast.Name) and argument.id in contract:
                value = values.get(argument.id, contract[argument.id].default)
                if isinstance(value, str) and "${" not in value:
                    yield TableUse(cell.index, value, argument.id)


def _dictionary(config: Config) -> DataDictionary | None:
    """The project's data dictionary; None when its file does not exist (see the module's docstring)."""
    return DataDictionary.load(config.dictionary) if config.dictionary.exists() else None


def _required(config: Config, dictionary: DataDictionary | None) -> DataDictionary:
    """The dictionary, or the loader's own error for a missing file."""
    return dictionary if dictionary is not None else DataDictionary.load(config.dictionary)


def _check_purpose(config: Config, pipeline: str, purpose: str, dictionary: DataDictionary | None) -> None:
    known = _required(config, dictionary).purposes
    if purpose not in known:
        raise ConfigError(
            f"purpose {purpose!r} is not declared under 'purposes:' in the data dictionary "
            f"{_shown(config.dictionary, config.root)}; known: {sorted(known)}; use one of them or declare it "
            f"there (see {REFERENCE})",
            str(config.source), f"pipelines.{pipeline}.purpose",
        )


def _check_table(config: Config, use: TableUse, shown: str, dictionary: DataDictionary | None) -> None:
    from runner.data import BUILTIN

    if use.table in BUILTIN.tables:
        return
    declared = _required(config, dictionary).tables
    if use.table not in declared:
        given = f" (parameter '{use.parameter}')" if use.parameter else ""
        raise ConfigError(
            f"cell {use.cell}: table {use.table!r}{given} is not declared in the data dictionary "
            f"{_shown(config.dictionary, config.root)}; declared: {sorted(declared)}; declare it (see {REFERENCE})",
            shown,
        )


def _is_runner(module: str) -> bool:
    return module == "runner" or module.startswith("runner.")


def _missing(module: str, name: str, attributes: bool = True) -> str | None:
    """Why ``name`` cannot be imported from the runner module ``module``; None when it can."""
    if not _module_exists(module):
        return f"there is no module {module}"
    try:
        loaded = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any failure to import is what the kernel would meet
        return f"importing {module} fails: {type(exc).__name__}: {exc}"
    if attributes and hasattr(loaded, name):
        return None
    if hasattr(loaded, "__path__") and _module_exists(f"{module}.{name}"):
        return None
    names = [n for n in dir(loaded) if not n.startswith("_")] if attributes else []
    if hasattr(loaded, "__path__"):  # a package: its modules too, imported or not
        names += [found.name for found in pkgutil.iter_modules(loaded.__path__)]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "; fix the import (the step would fail at this cell)"
    return f"{module} has no {'name' if attributes else 'module'} {name!r}{hint}"


def _module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _nb_names(cells: list[Cell]) -> tuple[set[str], dict[str, str]]:
    """(dotted names bound to ``runner.nb``, local names bound to its functions) by the imports."""
    modules, functions = {"runner.nb"}, {}
    for cell in cells:
        for node in ast.walk(cell.tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                for alias in node.names:
                    if node.module == "runner" and alias.name == "nb":
                        modules.add(alias.asname or "nb")
                    elif node.module == "runner.nb":
                        functions[alias.asname or alias.name] = alias.name
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "runner.nb" and alias.asname:
                        modules.add(alias.asname)
    return modules, functions


def _table_position(func: ast.expr, modules: set[str], functions: dict[str, str]) -> int | None:
    """Where the table goes in a call of ``func`` when it is a table-naming notebook API call."""
    if isinstance(func, ast.Name) and func.id in functions:
        return NB_TABLE_ARGS.get(functions[func.id])
    if not isinstance(func, ast.Attribute):
        return None
    if _dotted(func.value) in modules:
        return NB_TABLE_ARGS.get(func.attr)
    receiver = func.value
    if isinstance(receiver, ast.Call) and func.attr in WAREHOUSE_TABLE_ARGS:
        inner = receiver.func
        called = (isinstance(inner, ast.Attribute) and inner.attr == "warehouse" and _dotted(inner.value) in modules
                  or isinstance(inner, ast.Name) and functions.get(inner.id) == "warehouse")
        if called:
            return WAREHOUSE_TABLE_ARGS[func.attr]
    return None


def _argument(call: ast.Call, position: int) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg == "table":
            return keyword.value
    before = call.args[:position + 1]
    if len(call.args) > position and not any(isinstance(arg, ast.Starred) for arg in before):
        return call.args[position]
    return None


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        parent = _dotted(node.value)
        return f"{parent}.{node.attr}" if parent else None
    return None


def _shown(path: Path, root: Path) -> str:
    """``path`` relative to the project root when it lies inside it, else as it is."""
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)
