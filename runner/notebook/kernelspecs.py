"""Kernelspecs that JupyterLab lists: a project's kernel for its authors.

A kernelspec is a folder ``kernels/<name>/`` holding ``kernel.json`` (and logos) in one of Jupyter's data
folders; every JupyterLab and ``jupyter kernelspec list`` of this machine looks there. The one written here runs
*this* interpreter (the runner's, with its packages), whatever ``python`` is first on PATH. It holds no project
settings: a kernel JupyterLab starts for a notebook runs in the notebook's folder, where :func:`runner.nb.context`
finds the project's runner.yaml by itself, and the environment JupyterLab was started with reaches it
(``RUNNER_HOME=... runner lab`` works). Steps do not use it (:func:`runner.notebook.adapter.ensure_kernel`).
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from runner.errors import ConfigError

LOGOS = ("logo-32x32.png", "logo-64x64.png", "logo-svg.svg")  # ipykernel's, shown in JupyterLab's launcher


@dataclass(frozen=True)
class Installed:
    """What :func:`install` did: ``changed`` is False when the same kernelspec was there already; ``replaced``
    names the project folder a kernelspec of the same name was installed for before, if another."""

    name: str
    display_name: str
    path: Path
    changed: bool
    replaced: str | None = None


def spec_name(project: str) -> str:
    """The kernelspec name for a project name: ``runner-<name>`` in the letters Jupyter allows
    (``[a-z0-9._-]``). The same on every machine, so notebooks committed by one author open with the project's
    kernel for the others."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", project.lower()).strip("-.") or "project"
    return f"runner-{slug}"


def display_name(project: str) -> str:
    return f"Notebook Runner ({project})"


def kernels_dir(sys_prefix: bool = False) -> Path:
    """Where kernelspecs are installed: the user's Jupyter data folder (``$JUPYTER_DATA_DIR``, else
    ``~/.local/share/jupyter`` on Linux), or with ``sys_prefix`` this environment's ``share/jupyter``, which
    only JupyterLabs of this environment read."""
    if sys_prefix:
        return Path(sys.prefix) / "share" / "jupyter" / "kernels"
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "kernels"


def install(project: str, root: Path, sys_prefix: bool = False) -> Installed:
    """Install (or bring up to date) the kernelspec of the project ``project`` whose folder is ``root``.

    Idempotent: nothing is written when the kernelspec is already the same. A kernelspec of the same name
    made for another folder (two projects of one name) is replaced, and :attr:`Installed.replaced` says so.
    Raises :class:`ConfigError` when the folder cannot be written.
    """
    name = spec_name(project)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": display_name(project),
        "language": "python",
        "metadata": {"debugger": True, "runner": {"project": str(root)}},
    }
    folder = kernels_dir(sys_prefix) / name
    path = folder / "kernel.json"
    text = json.dumps(spec, indent=1) + "\n"
    try:
        before = path.read_text(encoding="utf-8") if path.is_file() else None
    except OSError:
        before = None
    replaced = _project_of(before)
    try:
        changed = before != text
        if changed:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".kernel.json.{os.getpid()}.tmp"
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
        changed = _copy_logos(folder) or changed
    except OSError as exc:
        where = "this environment's share/jupyter" if sys_prefix else "the user's Jupyter data folder"
        other = "without --sys-prefix" if sys_prefix else "with --sys-prefix, or set JUPYTER_DATA_DIR"
        raise ConfigError(f"cannot install the kernelspec {name} in {where} ({exc}); try {other}", str(folder)) from None
    return Installed(name, spec["display_name"], folder, changed, replaced if replaced not in (None, str(root)) else None)


def _project_of(text: str | None) -> str | None:
    try:
        return json.loads(text or "")["metadata"]["runner"]["project"]
    except (ValueError, KeyError, TypeError):
        return None


def _copy_logos(folder: Path) -> bool:
    """ipykernel's logos beside kernel.json, as ``python -m ipykernel install`` does; True if any was written."""
    import importlib.util

    spec = importlib.util.find_spec("ipykernel")
    if spec is None or not spec.submodule_search_locations:
        return False
    resources = Path(next(iter(spec.submodule_search_locations))) / "resources"
    wrote = False
    for logo in LOGOS:
        source, target = resources / logo, folder / logo
        if source.is_file() and (not target.is_file() or target.read_bytes() != source.read_bytes()):
            target.write_bytes(source.read_bytes())
            wrote = True
    return wrote
