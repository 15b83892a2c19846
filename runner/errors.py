"""The exceptions of Notebook Runner.

Every error derives from :class:`RunnerError`; where an error shares the meaning of a stdlib
type it derives from that type too. All of them survive pickling (steps may run on other
processes or machines), so each passes its constructor arguments to ``Exception.__init__``
and formats its message in ``__str__``.
"""

from __future__ import annotations

from dataclasses import dataclass


class RunnerError(Exception):
    """Root of every error raised by the runner. The message says what to do next."""

    def __init__(self, message: str = ""):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(RunnerError, ValueError):
    """``runner.yaml`` (or an environment variable) is invalid.

    ``source`` is the file (or variable), ``key`` the dotted key path inside it.
    """

    def __init__(self, message: str, source: str = "", key: str = ""):
        super().__init__(message)
        self.args = (message, source, key)
        self.source = source
        self.key = key

    def __str__(self) -> str:
        where = ":".join(part for part in (self.source, self.key) if part)
        return f"{where}: {self.message}" if where else self.message


class ParameterError(RunnerError, ValueError):
    """A step's parameters do not fit its notebook's parameter contract."""

    def __init__(self, message: str, notebook: str = "", parameter: str = "", expected: str = ""):
        super().__init__(message)
        self.args = (message, notebook, parameter, expected)
        self.notebook = notebook
        self.parameter = parameter
        self.expected = expected

    def __str__(self) -> str:
        where = self.notebook
        if self.parameter:
            where = f"{where} parameter '{self.parameter}'" if where else f"parameter '{self.parameter}'"
        return f"{where}: {self.message}" if where else self.message


class DataContractError(RunnerError, ValueError):
    """Data breaks the data dictionary, or a column is used for a purpose it is not allowed for."""


class MonitoringAlert(RunnerError):
    """Monitoring found a status at or above ``monitoring.fail_on``; raised after its results are saved."""


class TrackingError(RunnerError):
    """MLflow tracking or registry could not be reached or refused a request."""


class StoreError(RunnerError):
    """The run store could not be written (a full disk, a read-only or missing folder, a remote store that
    refuses): the message names the file and the reason."""


class ExecutorError(RunnerError):
    """An executor could not be created or lost a task."""


class StepFailed(RunnerError):
    """A step's notebook did not complete.

    ``cell_index`` is the index of the failing cell in the *executed* notebook (so a link to it
    works), or ``None`` when the failure was not inside a cell (dead kernel, deadline, missing
    upstream scrap). ``cell`` names that cell as its author sees it (:class:`FailedCell`).
    """

    def __init__(
        self,
        ename: str,
        evalue: str,
        cell_index: int | None = None,
        notebook: str = "",
        run_id: str = "",
        step: str = "",
        cell: FailedCell | None = None,
    ):
        super().__init__(f"{ename}: {evalue}")
        self.args = (ename, evalue, cell_index, notebook, run_id, step, cell)
        self.ename = ename
        self.evalue = evalue
        self.cell_index = cell_index
        self.notebook = notebook
        self.run_id = run_id
        self.step = step
        self.cell = cell

    def __str__(self) -> str:
        where = f"step '{self.step}'" if self.step else "step"
        if self.run_id:
            where += f" of run {self.run_id}"
        label = cell_label(self.cell_index, *(self.cell.label_parts() if self.cell else (None, None, None)))
        cell = f" in {label}" if label else ""
        hint = f" (executed notebook: {self.notebook})" if self.notebook else ""
        return f"{where} failed{cell}: {self.ename}: {self.evalue}{hint}"


@dataclass(frozen=True)
class FailedCell:
    """The failing cell as the notebook's author sees it.

    ``execution_count`` is the ``In [N]`` the executed notebook shows (None when the cell never got one),
    ``code_cell`` its place among the authored notebook's code cells counting from 1 (the cell papermill
    injects with the parameters is not counted; markdown cells neither), ``first_line`` the first line of
    its source that is not blank, and ``cell_id`` its nbformat id (the anchor of its HTML page:
    ``#cell-id=<id>``).
    """

    execution_count: int | None = None
    code_cell: int | None = None
    first_line: str | None = None
    cell_id: str | None = None

    def label_parts(self) -> tuple[int | None, int | None, str | None]:
        return self.execution_count, self.code_cell, self.first_line


FIRST_LINE_LENGTH = 80  # characters of a failing cell's first line kept in the record


def cell_label(cell_index: int | None, execution_count: int | None = None, code_cell: int | None = None,
               first_line: str | None = None) -> str:
    """A failing cell named as its author sees it: ``In [6] (code cell 5: `model.fit(X, y)`)``.

    Without an execution count it is ``code cell 5: `...```; a record from before these were kept names the
    cell by its index in the executed notebook, ``cell 7``; "" when the failure was not in a cell."""
    line = f": `{first_line}`" if first_line else ""
    if code_cell is not None:
        place = f"code cell {code_cell}{line}"
        return f"In [{execution_count}] ({place})" if execution_count is not None else place
    if execution_count is not None:
        return f"In [{execution_count}]{f' ({line[2:]})' if line else ''}"
    return f"cell {cell_index}" if cell_index is not None else ""


class PipelineBusy(RunnerError):
    """The pipeline already runs (its lock in the run store is held by a live process)."""

    def __init__(self, pipeline: str, holder: str):
        super().__init__(f"pipeline {pipeline!r} is already running ({holder}); wait for it to finish, "
                         "or stop it first")
        self.args = (pipeline, holder)
        self.pipeline = pipeline
        self.holder = holder


class NotFound(RunnerError, LookupError):
    """What was named on the command line (a snapshot digest or its prefix, ...) matches nothing, is
    ambiguous, or is not a valid name at all. A usage error: nothing was done."""
