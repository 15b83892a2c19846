"""The exceptions of Notebook Runner.

Every error derives from :class:`RunnerError`; where an error shares the meaning of a stdlib
type it derives from that type too. All of them survive pickling (steps may run on other
processes or machines), so each passes its constructor arguments to ``Exception.__init__``
and formats its message in ``__str__``.
"""

from __future__ import annotations


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
    upstream scrap).
    """

    def __init__(
        self,
        ename: str,
        evalue: str,
        cell_index: int | None = None,
        notebook: str = "",
        run_id: str = "",
        step: str = "",
    ):
        super().__init__(f"{ename}: {evalue}")
        self.args = (ename, evalue, cell_index, notebook, run_id, step)
        self.ename = ename
        self.evalue = evalue
        self.cell_index = cell_index
        self.notebook = notebook
        self.run_id = run_id
        self.step = step

    def __str__(self) -> str:
        where = f"step '{self.step}'" if self.step else "step"
        if self.run_id:
            where += f" of run {self.run_id}"
        cell = f" in cell {self.cell_index}" if self.cell_index is not None else ""
        hint = f" (executed notebook: {self.notebook})" if self.notebook else ""
        return f"{where} failed{cell}: {self.ename}: {self.evalue}{hint}"


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
