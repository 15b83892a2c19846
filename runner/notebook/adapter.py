"""The one adapter over papermill, scrapbook, nbformat and nbconvert.

Everything the runner does *to* a notebook goes through here: read its parameter contract,
execute it, mark where it failed, read its scraps, render it to HTML. scrapbook is unmaintained
since 2021; keeping every call to it in this module means replacing it touches one file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runner.errors import FIRST_LINE_LENGTH, FailedCell, ParameterError, StepFailed
from runner.notebook import forkserver
from runner.notebook.contract import (
    Declared,
    Parameter,
    ParameterContract,
    declared_parameters,
    infer_type,
    parameters_source,
)
from runner.notebook.grammars import DEFER_IRI_GRAMMARS
from runner.secrets import SECRET_MARK, Redactor, kernel_source, secret_parameters

ERROR_MARKER_TAG = "papermill-error-cell-tag"  # papermill's own tag, so its tools strip our banner too
ERROR_ANCHOR = "papermill-error-cell"
_STYLE = 'style="color:red; font-family:Helvetica Neue, Helvetica, Arial, sans-serif; font-size:2em;"'

CellCallback = Callable[[int, int], None]  # (index of the cell starting, number of cells)


class StopExecution(BaseException):
    """Raised from a signal handler to stop a running notebook (deadline passed, run stopped).

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` in papermill,
    nbclient or asyncio swallows it on its way out; the kernel is shut down on the way.
    """

    def __init__(self, ename: str, evalue: str):
        super().__init__(ename, evalue)
        self.ename = ename
        self.evalue = evalue


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read(path: str | Path):
    import nbformat

    try:
        return nbformat.read(str(path), as_version=4)
    except FileNotFoundError:
        raise ParameterError("notebook not found; check the step's 'notebook:' path", str(path)) from None
    except Exception as exc:  # nbformat raises several types for unreadable notebooks
        raise ParameterError(f"not a readable notebook ({exc}); open and re-save it in JupyterLab", str(path)) from exc


def check_language(nb, path: str | Path) -> None:
    """Refuse a notebook written for another language (R, Julia, ...): its steps would run in a Python kernel.

    The language is the notebook's ``metadata.language_info.name`` and ``metadata.kernelspec.language``
    (papermill reads them in that order); a notebook that states neither is taken as Python.
    """
    metadata = nb.get("metadata") or {}
    for section, key in (("language_info", "name"), ("kernelspec", "language")):
        found = metadata.get(section)
        language = found.get(key) if isinstance(found, dict) else None
        if language and not str(language).strip().lower().startswith(("python", "ipython")):
            raise ParameterError(
                f"a notebook for {str(language)!r} (metadata.{section}.{key}); steps run in a Python kernel only: "
                "write the step in Python, or run this notebook with its own tools", str(path))


def read_contract(path: str | Path) -> ParameterContract:
    """The notebook's parameter contract, from its cell tagged ``parameters``; no kernel is started.

    Read as JSON and with Python's parser (:func:`~runner.notebook.contract.declared_parameters`), so the
    runner's own process does not import papermill and nbformat for it (about half a second); a notebook of an
    older format, or a cell that is not Python, is read by them as before.
    """
    nb = _read_quickly(path)
    check_language(nb, path)
    source = parameters_source(nb["cells"])
    if source is None:
        raise ParameterError(
            "no cell tagged 'parameters'; in JupyterLab select the cell holding the defaults, open the "
            "property inspector and add the tag 'parameters'",
            str(path),
        )
    found = declared_parameters(source)
    if found is None:  # not Python: papermill skips the lines it cannot read
        from papermill.translators import PythonTranslator

        found = [Declared(item.name, None if item.inferred_type_name in ("None", "NoneType") else
                          item.inferred_type_name, item.default, item.help)
                 for item in PythonTranslator.inspect({"source": source})]
    parameters = {}
    for item in found:
        kind, default = infer_type(item.annotation, item.default)
        parameters[item.name] = Parameter(item.name, kind, default, item.help, bool(SECRET_MARK.match(item.help)))
    return ParameterContract(str(path), parameters)


def read_json(path: str | Path) -> dict[str, Any]:
    """The notebook as a dict of its JSON (format 4), read without nbformat when it allows; a
    :class:`ParameterError` when it is missing or not a notebook."""
    return _read_quickly(path)


def _read_quickly(path: str | Path) -> dict[str, Any]:
    """A notebook's JSON when it is of format 4 with its cells a list; else nbformat's reading (upgrading older
    formats, and saying what is wrong with a broken file)."""
    try:
        with open(path, "rb") as handle:
            nb = json.loads(handle.read())
    except (OSError, ValueError):
        nb = None
    if isinstance(nb, dict) and nb.get("nbformat") == 4 and isinstance(nb.get("cells"), list) and all(
            isinstance(cell, dict) for cell in nb["cells"]):
        return nb
    return _read(path)


def ensure_kernel(home: Path) -> str:
    """Name of a kernelspec that runs this very interpreter, written under ``home/kernels``.

    Steps must run with the packages of the interpreter that runs ``runner``; the ``python3``
    kernelspec a venv ships runs whatever ``python`` is first on PATH. Point ``JUPYTER_PATH``
    at ``home`` to make the kernel visible.
    """
    name = "runner-" + hashlib.sha256(sys.executable.encode()).hexdigest()[:10]
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python (runner, {sys.executable})",
        "language": "python",
        "metadata": {"debugger": False},
    }
    path = home / "kernels" / name / "kernel.json"
    text = json.dumps(spec, indent=1)
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")  # runs may start together
        tmp.write_text(text)
        tmp.replace(path)
    return name


def execute(
    notebook: str | Path,
    output: str | Path,
    parameters: dict[str, Any],
    kernel_name: str,
    cwd: str | Path,
    cell_timeout: float | None = None,
    on_cell: CellCallback | None = None,
    kernel: Kernel | None = None,
) -> None:
    """Execute ``notebook`` into ``output`` with papermill; raise :class:`StepFailed` if it fails.

    The executed notebook is always written, with papermill's error banner and a link to the
    failing cell when a cell raised, a kernel died or a deadline passed. With ``kernel`` (a
    :class:`Kernel` started ahead and prepared), papermill uses it instead of starting one.

    Secret parameters (``${env.NAME}``) are set by lines the kernel runs, not injected as values,
    and every write of ``output`` masks their values and URL credentials (:mod:`runner.secrets`).
    """
    import papermill
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.engines import papermill_engines

    papermill_engines.register("runner", _reporting_engine())
    started: list[int] = []

    def track(index: int, total: int) -> None:
        started.append(index)
        if on_cell:
            on_cell(index, total)

    secret = secret_parameters(parameters)
    try:
        papermill.execute_notebook(
            str(notebook),
            str(output),
            parameters={name: value for name, value in parameters.items() if name not in secret},
            engine_name="runner",
            kernel_name=kernel_name,
            language="python",
            progress_bar=False,
            cwd=str(cwd),
            execution_timeout=int(math.ceil(cell_timeout)) if cell_timeout else None,
            on_cell=track,
            secrets=secret,
            redactor=Redactor.for_parameters(secret),
            **({"km": kernel.manager} if kernel is not None else {}),
        )
    except papermill.PapermillExecutionError as exc:
        nb = _read(output)
        if headline_first(nb):
            _write(nb, Path(output))
        index = _error_cell_index(nb)
        raise StepFailed(exc.ename, exc.evalue, index, str(output), cell=failed_cell(nb, index)) from None
    except CellTimeoutError:
        evalue = f"a cell ran longer than cell_timeout={cell_timeout:g}s; raise the step's cell_timeout or fix the cell"
        raise _fail_at(output, started, "CellTimeout", evalue) from None
    except DeadKernelError as exc:
        evalue = f"the kernel died while running the cell ({exc}); look for os._exit, a crash or running out of memory"
        raise _fail_at(output, started, "DeadKernelError", evalue) from None
    except StopExecution as exc:
        raise _fail_at(output, started, exc.ename, exc.evalue) from None
    nb = _read(output)
    if headline_first(nb):
        _write(nb, Path(output))


HEADLINE_TAG = "headline"  # an author's cell whose display outputs are the notebook's headline
HEADLINE_METADATA = "runner_headline"  # an output runner.nb.headline marked so
HEADLINE_CELL_TAG = "runner-headline"  # the runner's copy of the headline, near the top


def headline_first(nb) -> bool:
    """Copy the notebook's headline to a cell of its own after the opening markdown cells (a title, papermill's
    error banner), so the executed notebook opens with it: the outputs ``runner.nb.headline`` marked, else the
    display outputs of cells tagged ``headline``. The copy's source is a comment, hidden (JupyterLab's
    ``source_hidden``; the step's page leaves it out). Returns whether the notebook changed."""
    import copy

    import nbformat

    if any(HEADLINE_CELL_TAG in (cell.get("metadata") or {}).get("tags", []) for cell in nb.cells):
        return False
    marked, tagged = [], []
    for cell in nb.cells:
        if cell.get("cell_type") != "code":
            continue
        shown = [out for out in cell.get("outputs", []) if out.get("output_type") in ("display_data", "execute_result")]
        marked += [out for out in shown if (out.get("metadata") or {}).get(HEADLINE_METADATA)]
        if HEADLINE_TAG in (cell.get("metadata") or {}).get("tags", []):
            tagged += shown
    outputs = marked or tagged
    if not outputs:
        return False
    cell = nbformat.v4.new_code_cell("# The headline: a copy of what the notebook shows below, put first by the runner")
    cell.metadata["tags"] = [HEADLINE_CELL_TAG]
    cell.metadata["jupyter"] = {"source_hidden": True}
    cell.metadata["editable"] = False
    for output in outputs:
        copied = copy.deepcopy(output)
        if copied.get("output_type") == "execute_result":  # an output of its own here: not a result of this cell
            copied = nbformat.v4.new_output("display_data", data=copied.get("data", {}),
                                            metadata=copied.get("metadata", {}))
        cell.outputs.append(copied)
    at = 0
    while at < len(nb.cells) and nb.cells[at].get("cell_type") != "code":
        at += 1
    nb.cells.insert(at, cell)
    return True


class Kernel:
    """A kernel started before its notebook is known, so its start-up overlaps other work.

    Its environment and working folder are set when the step arrives (:meth:`prepare`), with
    silent code that leaves no trace in the notebook. The owner shuts it down (:meth:`shutdown`).
    """

    def __init__(self, kernel_name: str):
        from jupyter_client.manager import AsyncKernelManager
        from jupyter_core.utils import run_sync

        self._run_sync = run_sync
        self._client = None
        self._preloading: str | None = None
        self._preload_deadline = 0.0  # time.monotonic() by which the preload's imports must be done
        self.manager = AsyncKernelManager(kernel_name=kernel_name)
        forkserver.use_forked_kernels(self.manager)
        run_sync(self.manager.start_kernel)()

    def preload(self, modules: list[str], timeout: float = 60,
                imports_timeout: float = forkserver.PRELOAD_TIMEOUT) -> None:
        """Start importing ``modules`` in the kernel (installed libraries), without waiting for it; first, always,
        the stand-in that puts off jsonschema's IRI grammars (:data:`DEFER_IRI_GRAMMARS`). Imports still running
        ``imports_timeout`` seconds from now make :meth:`prepare` give the kernel up (an import that hangs: one that
        waits on a connection that never answers). A kernel that should have come from the fork server and did not
        imports nothing ahead: the server is gone, and a preload that never ended is what ends it."""
        if os.environ.get(forkserver.SOCKET_ENV) and not isinstance(getattr(self.manager.provisioner, "process", None),
                                                                  forkserver.Forked):
            modules = []
        self._client = self.manager.client()
        self._client.start_channels()
        self._run_sync(self._client.wait_for_ready)(timeout=timeout)
        code = DEFER_IRI_GRAMMARS + "\n".join(f"try:\n    import {module}\nexcept Exception:\n    pass"
                                               for module in modules)
        self._preload_deadline = time.monotonic() + imports_timeout
        self._preloading = self._client.execute(code, silent=True, store_history=False)

    def prepare(self, env: dict[str, str], cwd: str | Path, timeout: float = 60) -> None:
        """Give the kernel the step's environment and working folder, once any preload is done."""
        code = f"import os as _o; _o.environ.update({dict(env)!r}); _o.chdir({str(cwd)!r}); del _o"
        self._run_sync(self._execute_silently)(code, timeout)

    async def _execute_silently(self, code: str, timeout: float) -> None:
        client = self._client
        try:
            if client is None:
                client = self.manager.client()
                client.start_channels()
                await client.wait_for_ready(timeout=timeout)
            while self._preloading:  # its reply comes first; imports may take a while, up to the preload's deadline
                left = self._preload_deadline - time.monotonic()
                try:
                    reply = await client.get_shell_msg(timeout=max(left, 0.001))
                except queue.Empty:
                    raise RuntimeError("the kernel's imports of defaults.preload did not end in time; the kernel is "
                                       "given up and the step starts one of its own") from None
                if reply["parent_header"].get("msg_id") == self._preloading:
                    self._preloading = None
            reply = await client.execute_interactive(code, silent=True, store_history=False, timeout=timeout)
        finally:
            client.stop_channels()
            self._client = None
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"could not prepare the kernel: {reply['content'].get('evalue')}")

    def shutdown(self) -> None:
        if self._client is not None:
            self._client.stop_channels()
            self._client = None
        try:
            if self._run_sync(self.manager.is_alive)():
                self._run_sync(self.manager.shutdown_kernel)(now=False)
        finally:
            self._run_sync(self.manager.cleanup_resources)()


def parameterized(notebook: str | Path, parameters: dict[str, Any]):
    """The notebook with ``parameters`` injected as papermill injects them, not executed."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = load_notebook_node(str(notebook))
    spec = nb.metadata.get("kernelspec", {})
    secret = secret_parameters(parameters)
    nb = parameterize_notebook(nb, {name: value for name, value in parameters.items() if name not in secret},
                               kernel_name=spec.get("name") or "python3", language=spec.get("language") or "python")
    _inject_secrets(nb, secret)
    return nb


def _inject_secrets(nb, secret: dict[str, str]) -> None:
    """Add the lines that read ``secret`` parameters from the environment to the injected parameters cell
    (made after the ``parameters`` cell when papermill made none), and record their references."""
    if not secret:
        return
    import nbformat

    index = next((i for i, cell in enumerate(nb.cells) if "injected-parameters" in cell.metadata.get("tags", [])), None)
    if index is None:
        after = next((i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", [])), -1)
        cell = nbformat.v4.new_code_cell("# Parameters")
        cell.metadata["tags"] = ["injected-parameters"]
        index = after + 1
        nb.cells.insert(index, cell)
    cell = nb.cells[index]
    cell.source = f"{cell.source.rstrip()}\n\n{kernel_source(secret)}\n"
    nb.metadata.setdefault("papermill", {}).setdefault("parameters", {}).update(secret)


@functools.cache
def _reporting_engine() -> type:
    """papermill's nbclient engine, calling ``on_cell`` as each cell starts, setting secret parameters in
    the kernel and masking them (``redactor``) in every write of the executed notebook."""
    from papermill.engines import NBClientEngine

    class ReportingEngine(NBClientEngine):
        @classmethod
        def execute_notebook(cls, nb, kernel_name, secrets=None, **kwargs):
            _inject_secrets(nb, secrets or {})  # before papermill sets up each cell's metadata
            return super().execute_notebook(nb, kernel_name, **kwargs)

        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, on_cell=None, redactor=None, **kwargs):
            if redactor is not None:  # every write of the executed notebook masks secrets and URL credentials
                save = nb_man.save

                def masking_save(**kw):
                    redactor.notebook(nb_man.nb)
                    return save(**kw)

                nb_man.save = masking_save
            if on_cell is not None:
                cell_start = nb_man.cell_start

                def reporting_cell_start(cell, cell_index=None, **kw):
                    on_cell(cell_index, len(nb_man.nb.cells))
                    return cell_start(cell, cell_index, **kw)

                nb_man.cell_start = reporting_cell_start
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    return ReportingEngine


def _error_cell_index(nb) -> int | None:
    for index, cell in enumerate(nb.cells):
        if any(out.get("output_type") == "error" for out in cell.get("outputs", [])):
            return index
    return None


def failed_cell(nb, index: int | None) -> FailedCell | None:
    """The executed notebook's cell ``index`` named as its author sees it: the ``In [N]`` it shows, its place among
    the authored code cells (from 1; the injected parameters cell and the runner's or papermill's banners are not
    the author's), the first line of its source and its id."""
    if index is None or not 0 <= index < len(nb.cells) or nb.cells[index].get("cell_type") != "code":
        return None
    cell = nb.cells[index]
    not_authored = {"injected-parameters", HEADLINE_CELL_TAG}
    authored = sum(1 for other in nb.cells[:index + 1] if other.get("cell_type") == "code"
                   and not not_authored & set((other.get("metadata") or {}).get("tags", [])))
    injected = "injected-parameters" in (cell.get("metadata") or {}).get("tags", [])
    source = cell.get("source") or ""
    source = "".join(source) if isinstance(source, list) else str(source)
    first = next((line.strip() for line in source.splitlines() if line.strip()), None)
    if first is not None and len(first) > FIRST_LINE_LENGTH:
        first = first[:FIRST_LINE_LENGTH - 1] + "…"
    count = cell.get("execution_count")
    cell_id = cell.get("id")
    return FailedCell(execution_count=count if isinstance(count, int) else None,
                      code_cell=None if injected else authored, first_line=first,
                      cell_id=cell_id if isinstance(cell_id, str) and cell_id else None)


def _fail_at(output: str | Path, started: list[int], ename: str, evalue: str) -> StepFailed:
    """Mark the cell that was running in the executed notebook, papermill style, and say so."""
    import nbformat

    index = started[-1] if started else None
    path = Path(output)
    if not path.is_file():
        return StepFailed(ename, evalue, None, str(output))
    nb = _read(path)
    if index is not None and index < len(nb.cells):
        anchor = nbformat.v4.new_markdown_cell(
            f'<span id="{ERROR_ANCHOR}" {_STYLE}>Execution stopped here: {ename}: {_escape(evalue)}</span>'
        )
        anchor.metadata["tags"] = [ERROR_MARKER_TAG]
        nb.cells.insert(index, anchor)
        index += 1
    banner = nbformat.v4.new_markdown_cell(
        f'<span {_STYLE}>Execution stopped: {ename}. <a href="#{ERROR_ANCHOR}">Go to the cell</a>.</span>'
    )
    banner.metadata["tags"] = [ERROR_MARKER_TAG]
    nb.cells.insert(0, banner)
    _write(nb, path)
    index = None if index is None else index + 1
    return StepFailed(ename, evalue, index, str(output), cell=failed_cell(nb, index))


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _write(nb, path: Path) -> None:
    import nbformat

    tmp = path.with_name(path.name + ".tmp")
    nbformat.write(nb, str(tmp))
    tmp.replace(path)


def preload() -> None:
    """Import what :func:`execute`, :func:`render_html` and :func:`read_scraps` need (seconds), ahead of use."""
    import nbformat
    import papermill  # noqa: F401
    import scrapbook  # noqa: F401

    _html_exporter().from_notebook_node(nbformat.v4.new_notebook())  # compiles the page templates


def read_scraps(path: str | Path) -> dict[str, Any]:
    """The values a notebook glued with scrapbook, as JSON-ready values.

    Values that are not JSON (a DataFrame glued with the pandas encoder, say) are described
    by a short text instead; downstream steps can only receive JSON values anyway.
    """
    import scrapbook

    scraps = {}
    for name, scrap in scrapbook.read_notebook(str(path)).scraps.items():
        scraps[name] = _jsonable(scrap.data)
    return scraps


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=True)
        return value
    except (TypeError, ValueError):
        shape = getattr(value, "shape", None)
        return f"<{type(value).__name__}{' ' + 'x'.join(map(str, shape)) if shape else ''}>"


@functools.cache
def _html_exporter():
    import jinja2
    from nbconvert import HTMLExporter

    return HTMLExporter(embed_images=True, template_file=_OFFLINE_PAGE,
                        extra_loaders=[jinja2.DictLoader({_OFFLINE_PAGE: _OFFLINE_TEMPLATE})])


# JupyterLab's page without what it fetches from CDNs (require.js, MathJax, mermaid, the widget manager): a step's
# page opens offline, and fetches nothing when opened; math shows as its TeX source, interactive widgets as
# their static output. The review site's policy would block these scripts anyway. The runner's copy of a notebook's
# headline (:func:`headline_first`) shows its outputs only.
_OFFLINE_PAGE = "runner_offline.html.j2"
_OFFLINE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block input_group -%}
{%- if 'runner-headline' not in cell.metadata.get('tags', []) -%}{{ super() }}{%- endif -%}
{%- endblock input_group -%}
"""


def render_html(notebook: str | Path, html: str | Path) -> None:
    """Render an executed notebook to a self-contained HTML page (images embedded)."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    body, _ = _html_exporter().from_notebook_node(nb)
    target = Path(html)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(body, encoding="utf-8")
    tmp.replace(target)
