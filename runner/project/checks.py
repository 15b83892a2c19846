"""What ``runner validate`` checks beyond the plans, still without starting a kernel.

The plans (:func:`runner.run.plan.validate`) already hold each step's notebook, parameter contract
and coerced parameters. :func:`check_project` adds, and raises the first problem as one line:

* the data dictionary loads, and declares every pipeline's ``purpose``;
* every code cell parses as the kernel (IPython) would run it, the parameters cell included;
* every ``from runner import X``, ``from runner.<module> import X`` and ``import runner.<module>``
  names something the installed runner has;
* every table a notebook names in a call of the notebook API (``nb.load("applications")``, or
  ``nb.load(table)`` where ``table`` is a parameter, ``nb.warehouse().write_table(...)``, and the
  tables of a literal query in ``nb.warehouse().read_sql("SELECT ...")``) is declared in the data
  dictionary;
* a pipeline whose notebooks read a table of the dictionary declares a ``purpose``: without one
  nothing could check what it reads, so ``nb.load`` would refuse at run time.

"cell N" is the cell's index in the notebook (from 0, markdown cells counted), as in the runner's
other messages. A project that names no table and declares no purpose needs no data dictionary
(only the runner's run tables are then used); but a ``dictionary:`` that runner.yaml names and
that does not exist is always an error: a misspelt path must never mean "nothing is checked".
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
from runner.data.dictionary import REFERENCE, DataDictionary
from runner.errors import ConfigError
from runner.project.authoring import dotted_name

# Calls of runner.nb that name a table: the function and the position of its ``table`` argument
# (``table=`` as a keyword always counts).
NB_TABLE_ARGS = {
    "load": 0, "save": 0, "split_valid": 0, "features": 0, "key": 0, "score": 3, "feature_kinds": 1,
    "limits": 1, "reference_profile": 2, "save_model": 7, "write_table": 0,
}
# Calls on nb.warehouse(): the table's position; read_sql's is a query's (``sql=``), whose tables count.
WAREHOUSE_TABLE_ARGS = {"read_table": 0, "write_table": 0, "read_sql": 0}
QUERY_CALLS = frozenset({"read_sql"})
# The calls that read a table's rows, for a purpose: a pipeline that makes them must declare one.
READ_CALLS = frozenset({"load", "score", "read_table", "read_sql"})
DEFAULT_DICTIONARY = "data/dictionary.yaml"  # runner.yaml's default for `dictionary:`


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
    reads: bool = False  # the call reads the table's rows (for the pipeline's purpose)
    problem: str = ""  # a literal query the purpose rule refuses (then ``table`` is empty)


def check_project(config: Config, plans: Iterable[Any]) -> None:
    """Raise the first problem of the planned pipelines as a :class:`ConfigError`; nothing runs."""
    plans = list(plans)
    dictionary = _dictionary(config)
    for plan in plans:
        if plan.config.purpose is not None:
            _check_purpose(config, plan.pipeline, plan.config.purpose, dictionary)
    dialect = _dialect(config)
    parsed: dict[Path, list[Cell]] = {}
    for plan in plans:
        for step in plan.steps.values():
            shown = _shown(step.notebook, config.root)
            if step.notebook not in parsed:
                parsed[step.notebook] = cells = parse_notebook(step.notebook, shown)
                check_imports(cells, shown)
            for use in tables_named(parsed[step.notebook], step.contract.parameters, step.parameters, dialect):
                if use.problem:
                    raise ConfigError(f"cell {use.cell}: {use.problem}", shown)
                _check_table(config, use, shown, dictionary)
                if use.reads and plan.config.purpose is None:
                    _check_reader(config, plan.pipeline, use, shown, dictionary)


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


def tables_named(cells: list[Cell], contract: dict[str, Any], values: dict[str, Any],
                 dialect: str = "") -> Iterator[TableUse]:
    """The tables named by calls of the notebook API, in cell order.

    ``contract`` maps the notebook's parameter names to their :class:`~runner.notebook.contract.Parameter`
    and ``values`` holds the step's coerced values: a parameter passed as the table gives the
    step's value, else its default. A value still holding ``${...}`` is known only when the step
    starts, and any other expression only when the cell runs: both are left out. A literal query
    (``read_sql("SELECT ...")``) is parsed in ``dialect`` for the tables it reads; a query the
    purpose rule would refuse is a use with a ``problem``.
    """
    from runner.data.dictionary import parse_query
    from runner.errors import DataContractError

    modules, functions = _nb_names(cells)
    for cell in cells:
        for node in ast.walk(cell.tree):
            if not isinstance(node, ast.Call):
                continue
            called = _table_call(node.func, modules, functions)
            if called is None:
                continue
            name, position = called
            reads = name in READ_CALLS
            argument = _argument(node, position, "sql" if name in QUERY_CALLS else "table")
            if name in QUERY_CALLS:
                if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                    try:
                        tables = parse_query(argument.value, dialect).tables
                    except DataContractError as refused:
                        yield TableUse(cell.index, "", None, reads, str(refused))
                        continue
                    for table in tables:
                        yield TableUse(cell.index, table, None, reads)
            elif isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                yield TableUse(cell.index, argument.value, None, reads)
            elif isinstance(argument, ast.Name) and argument.id in contract:
                value = values.get(argument.id, contract[argument.id].default)
                if isinstance(value, str) and "${" not in value:
                    yield TableUse(cell.index, value, argument.id, reads)


def _dictionary(config: Config) -> DataDictionary | None:
    """The project's data dictionary; None when the default file does not exist (see the module's
    docstring). A path runner.yaml names that does not exist is the loader's error."""
    named = config.dictionary != (config.root / DEFAULT_DICTIONARY).resolve()
    return DataDictionary.load(config.dictionary) if named or config.dictionary.exists() else None


def _dialect(config: Config) -> str:
    """sqlglot's dialect of the warehouse's URL (what its queries are parsed as); no connection made."""
    import sqlalchemy as sa

    from runner.data.dictionary import sql_dialect

    try:
        return sql_dialect(sa.make_url(config.stores.warehouse_url).get_backend_name())
    except sa.exc.ArgumentError:
        return ""


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


def _check_reader(config: Config, pipeline: str, use: TableUse, shown: str, dictionary: DataDictionary | None) -> None:
    """A pipeline without a purpose reads none of the dictionary's tables (the runner's run tables aside)."""
    from runner.data.warehouse import BUILTIN

    if use.table in BUILTIN.tables:
        return
    known = sorted(_required(config, dictionary).purposes)
    raise ConfigError(
        f"pipeline {pipeline!r} declares no purpose; add `purpose:` (one of {known}): {shown} cell {use.cell} reads "
        f"{use.table!r}, and the data dictionary checks every read against the pipeline's purpose",
        str(config.source), f"pipelines.{pipeline}",
    )


def _check_table(config: Config, use: TableUse, shown: str, dictionary: DataDictionary | None) -> None:
    from runner.data.warehouse import BUILTIN

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


def _table_call(func: ast.expr, modules: set[str], functions: dict[str, str]) -> tuple[str, int] | None:
    """(the function, where its table goes) when ``func`` is a table-naming notebook API call."""
    if isinstance(func, ast.Name) and func.id in functions:
        name = functions[func.id]
        return (name, NB_TABLE_ARGS[name]) if name in NB_TABLE_ARGS else None
    if not isinstance(func, ast.Attribute):
        return None
    if dotted_name(func.value) in modules:
        return (func.attr, NB_TABLE_ARGS[func.attr]) if func.attr in NB_TABLE_ARGS else None
    receiver = func.value
    if isinstance(receiver, ast.Call) and func.attr in WAREHOUSE_TABLE_ARGS:
        inner = receiver.func
        called = (isinstance(inner, ast.Attribute) and inner.attr == "warehouse" and dotted_name(inner.value) in modules
                  or isinstance(inner, ast.Name) and functions.get(inner.id) == "warehouse")
        if called:
            return func.attr, WAREHOUSE_TABLE_ARGS[func.attr]
    return None


def _argument(call: ast.Call, position: int, keyword_name: str = "table") -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg == keyword_name:
            return keyword.value
    before = call.args[:position + 1]
    if len(call.args) > position and not any(isinstance(arg, ast.Starred) for arg in before):
        return call.args[position]
    return None


def _shown(path: Path, root: Path) -> str:
    """``path`` relative to the project root when it lies inside it, else as it is."""
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)
