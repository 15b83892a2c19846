"""Authoring notebooks in JupyterLab: the project's kernel, ``runner lab``, and ``runner validate NOTEBOOK``.

* The project's kernelspec (:func:`install_kernel`) is named for the project's folder, ``runner-<name>``,
  shown as "Notebook Runner (<name>)", and runs the runner's interpreter
  (:mod:`runner.notebook.kernelspecs`). ``runner init`` and ``runner new`` write it into their notebooks'
  metadata (:func:`kernelspec_metadata`), so JupyterLab opens them with it.
* :func:`lab` is what ``runner lab`` executes: JupyterLab of this interpreter on the project's folder, the
  project's kernel the default for new notebooks, on a port and token known before it starts (so the URL can
  be printed), stopped by one Ctrl-C (:mod:`runner.project.labserver`).
* :func:`check_notebook` checks one notebook for its author, in well under a second: no kernel, no runner.yaml,
  no import of the notebook's libraries. It reads the notebook as JSON, its parameter contract as a run does
  (:func:`runner.notebook.adapter.read_contract`), parses every code cell with Python's parser (IPython's
  rewriting of magics only for a cell Python refuses), and looks up names used from ``runner`` in the
  installed runner's source, without importing it. Every problem is one line.
"""

from __future__ import annotations

import ast
import difflib
import functools
import os
import re
import secrets
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from runner.config import config_path, find_config
from runner.errors import ConfigError, ParameterError
from runner.notebook import kernelspecs

DEFAULT_PORT = 8888  # JupyterLab's own default; the first free port from here is taken
_CELL = re.compile(r"^cell (\d+)\b")


def project_root(config: str | Path | None = None) -> Path:
    """The project's folder: that of ``config``, else of ``$RUNNER_CONFIG`` or the nearest runner.yaml. The file
    is not parsed: JupyterLab must open on a project whose runner.yaml is being fixed."""
    found = config_path(config) if config else find_config()
    if found is None or not found.is_file():
        raise ConfigError("no runner.yaml here or in a parent folder; run this in a project (`runner init` makes "
                          "one) or pass --config", str(found or Path.cwd()))
    return found.resolve().parent


def project_name(root: Path) -> str:
    return root.resolve().name or "project"


def kernelspec_metadata(root: Path) -> dict[str, str]:
    """A notebook's ``metadata.kernelspec`` naming the project's kernel."""
    name = project_name(root)
    return {"display_name": kernelspecs.display_name(name), "language": "python", "name": kernelspecs.spec_name(name)}


def install_kernel(root: Path, sys_prefix: bool = False) -> kernelspecs.Installed:
    """Install the project's kernelspec where JupyterLab finds it (idempotent)."""
    return kernelspecs.install(project_name(root), root, sys_prefix=sys_prefix)


@dataclass(frozen=True)
class Lab:
    """How to start JupyterLab on a project: the program, its environment, the URL it will answer on."""

    argv: list[str]
    env: dict[str, str]
    url: str
    kernel: kernelspecs.Installed


def lab(root: Path, port: int | None = None, open_browser: bool = True, sys_prefix: bool = False,
        extra: list[str] | None = None) -> Lab:
    """Install the project's kernel and say how to start JupyterLab on ``root`` with it.

    The token is ``$JUPYTER_TOKEN`` when set (as JupyterLab itself reads it), else a new random one; it goes to
    JupyterLab in its environment, not on its command line, where other users could read it.
    """
    import importlib.util

    if importlib.util.find_spec("jupyterlab") is None:
        raise ConfigError(f"JupyterLab is not installed for {sys.executable}; install it (pip install jupyterlab)")
    kernel = install_kernel(root, sys_prefix=sys_prefix)
    port = port or free_port(DEFAULT_PORT)
    token = os.environ.get("JUPYTER_TOKEN") or secrets.token_hex(24)
    argv = [sys.executable, "-m", "runner.project.labserver",  # `jupyter lab`, stopped by one Ctrl-C
            f"--ServerApp.root_dir={root}", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0", f"--MappingKernelManager.default_kernel_name={kernel.name}"]
    if not open_browser:
        argv.append("--no-browser")
    argv += extra or []  # last: the user's own options win
    return Lab(argv, {**os.environ, "JUPYTER_TOKEN": token}, f"http://127.0.0.1:{port}/lab?token={token}", kernel)


def free_port(start: int, tries: int = 50) -> int:
    """The first port from ``start`` that nothing listens on at 127.0.0.1."""
    for port in range(start, start + tries):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise ConfigError(f"no free port in {start}-{start + tries - 1}; pass --port")


# ---- runner validate NOTEBOOK --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shown:
    """A parameter as its author wrote it: the default's source text, the help comment."""

    name: str
    type: str
    default: str
    help: str


@dataclass(frozen=True)
class NotebookCheck:
    notebook: str
    parameters: list[Shown] | None  # None: the contract could not be read (see problems)
    problems: list[str] = field(default_factory=list)


def check_notebook(path: str | Path) -> NotebookCheck:
    """Every problem of one notebook that shows without running it, each one line ("cell N: ..." counts cells
    from 0, markdown included, as the runner's other messages do)."""
    from runner.notebook.adapter import check_language, read_contract, read_json
    from runner.notebook.contract import declared_parameters

    shown = str(path)
    try:
        nb = read_json(path)
        check_language(nb, path)
    except ParameterError as error:
        return NotebookCheck(shown, None, [error.message])
    problems: list[str] = []
    every = nb.get("cells") or []
    cells = [(index, cell) for index, cell in enumerate(every) if cell.get("cell_type") == "code"]
    tagged = [index for index, cell in enumerate(every)
              if "parameters" in ((cell.get("metadata") or {}).get("tags") or [])]
    if len(tagged) > 1:
        problems.append(f"cells {', '.join(map(str, tagged))} are all tagged 'parameters'; a run reads the first "
                        "and injects its values after it: remove the tag from the others")
    if tagged and every[tagged[0]].get("cell_type") != "code":
        problems.append(f"cell {tagged[0]}, tagged 'parameters', is a {every[tagged[0]].get('cell_type')} cell; "
                        "tag the code cell that holds the defaults")
    parameters = None
    try:
        contract = read_contract(path)
    except ParameterError as error:
        problems.append(error.message)
    else:
        written = {item.name: item for item in declared_parameters(_source(every[tagged[0]])) or []}
        parameters = [Shown(p.name, p.type, written[p.name].default if p.name in written else repr(p.default),
                            p.help) for p in contract.parameters.values()]
    trees = {}
    for index, cell in cells:
        which = f"cell {index} (the parameters cell)" if tagged and index == tagged[0] else f"cell {index}"
        try:
            trees[index] = _parse(_source(cell))
        except SyntaxError as exc:
            code = f" ({exc.text.strip()!r})" if exc.text and exc.text.strip() else ""
            problems.append(f"{which}: line {exc.lineno}: not valid Python: {exc.msg}{code}; the step would fail "
                            "at this cell")
    if tagged and parameters:
        names = {p.name for p in parameters}
        for index, tree in trees.items():
            if index >= tagged[0]:
                break
            used = sorted({node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and node.id in names
                           and isinstance(node.ctx, ast.Load)})
            if used:
                problems.append(f"cell {index} uses {', '.join(map(repr, used))} before the parameters cell (cell "
                                f"{tagged[0]}): it runs before a run's values are injected and sees the defaults; "
                                "move the parameters cell up")
    problems += _runner_names(trees)
    problems.sort(key=lambda problem: int(_CELL.match(problem).group(1)) if _CELL.match(problem) else -1)  # stable
    return NotebookCheck(shown, parameters, problems)


def _source(cell: dict) -> str:
    source = cell.get("source") or ""
    return "".join(source) if isinstance(source, list) else str(source)


def _parse(source: str) -> ast.Module:
    """The cell as the kernel runs it: Python, or after IPython's rewriting of magics (``%time``, ``!ls``,
    ``x = !ls``, ``obj?``; a ``%%`` cell becomes one call, its body unread). IPython is imported only for a
    cell that Python alone refuses (a third of a second)."""
    try:
        return ast.parse(source)
    except SyntaxError:
        pass
    from IPython.core.inputtransformer2 import TransformerManager

    return ast.parse(TransformerManager().transform_cell(source))


def _runner_names(trees: dict[int, ast.Module]) -> list[str]:
    """What the cells import from ``runner`` and use of its modules (``nb.lod(...)``), looked up in the installed
    runner's source: a name it does not define is a problem, with the closest it does."""
    problems, bound = [], {}  # bound: local dotted name -> the runner module it names
    for index, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and _is_runner(node.module or ""):
                module = node.module
                if _module_file(module) is None:
                    problems.append(f"cell {index}: 'from {module} import ...': there is no module {module}")
                    continue
                for alias in node.names:
                    if alias.name == "*":
                        continue
                    submodule = f"{module}.{alias.name}"
                    if _module_file(submodule) is not None:
                        bound[alias.asname or alias.name] = submodule
                    else:
                        problem = _unknown(module, alias.name)
                        if problem:
                            problems.append(f"cell {index}: 'from {module} import {alias.name}': {problem}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if not _is_runner(alias.name):
                        continue
                    if _module_file(alias.name) is None:
                        problems.append(f"cell {index}: 'import {alias.name}': there is no module {alias.name}")
                    elif alias.asname:
                        bound[alias.asname] = alias.name
                    else:
                        parts = alias.name.split(".")
                        bound.update({".".join(parts[:n]): ".".join(parts[:n]) for n in range(1, len(parts) + 1)})
    seen = set()
    for index, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                base = dotted_name(node.value)
                module = bound.get(base) if base else None
                if module is None or f"{module}.{node.attr}" in bound.values() or (module, node.attr) in seen:
                    continue
                seen.add((module, node.attr))
                if _module_file(f"{module}.{node.attr}") is None:
                    problem = _unknown(module, node.attr)
                    if problem:
                        problems.append(f"cell {index}: {base}.{node.attr}: {problem}")
    return problems


def _is_runner(module: str) -> bool:
    return module == "runner" or module.startswith("runner.")


def _unknown(module: str, name: str) -> str | None:
    names = _module_names(module)
    if names is None or name in names:
        return None
    own = _module_names(module, modules=False) or frozenset()  # hints: not the modules it imports (np, pd)
    close = difflib.get_close_matches(name, sorted(n for n in own if not n.startswith("_")), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "; the step would fail at this cell"
    return f"{module} has no name {name!r}{hint}"


@functools.cache
def _module_file(module: str) -> Path | None:
    """The source file of the runner module ``module`` (``runner.nb``, ``runner.monitoring``), found without
    importing it (importing ``runner.nb`` alone takes half a second)."""
    import runner

    base = Path(runner.__file__).parent.joinpath(*module.split(".")[1:])
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def _module_names(module: str, modules: bool = True) -> frozenset[str] | None:
    """The names a runner module defines or imports at its top level (and a package's modules), the modules it
    imports (``import numpy as np``) left out when ``modules`` is False; None when that cannot be told from its
    source (``import *``, a module ``__getattr__``), so nothing is refused."""
    path = _module_file(module)
    if path is None:
        return frozenset()
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    names: set[str] = set()

    def visit(body: list[ast.stmt]) -> bool:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if node.name == "__getattr__":
                    return False
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names.update(n.id for target in targets for n in ast.walk(target) if isinstance(n, ast.Name))
            elif isinstance(node, ast.Import):
                if modules:
                    names.update(alias.asname or alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if any(alias.name == "*" for alias in node.names):
                    return False
                names.update(alias.asname or alias.name for alias in node.names)
            else:
                for block in ("body", "orelse", "finalbody"):
                    if not visit(getattr(node, block, None) or []):
                        return False
                for handler in getattr(node, "handlers", None) or []:
                    if not visit(handler.body):
                        return False
        return True

    if not visit(tree.body):
        return None
    if path.name == "__init__.py":
        names.update(child.stem for child in path.parent.iterdir()
                     if child.suffix == ".py" or (child / "__init__.py").is_file())
    return frozenset(names)


def dotted_name(node: ast.expr) -> str | None:
    """``a.b.c`` of a name or attribute chain; None for anything else (a call, a subscript)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        parent = dotted_name(node.value)
        return f"{parent}.{node.attr}" if parent else None
    return None
