"""``runner debug``: a failed step's notebook, ready to re-run by hand with the run's inputs.

The authored notebook gets the parameters the step ran with, injected the way papermill does
it (a cell tagged ``injected-parameters`` after the ``parameters`` cell), a note on top, and a
cell that moves to the folder the step ran in. It is written to
``<home>/debug/<run_id>/<step>.ipynb``; JupyterLab opens it without ``MLFLOW_RUN_ID``, so
MLflow starts a run of its own instead of writing into the recorded run.
"""

from __future__ import annotations

import hashlib
import html
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from runner.config import Config
from runner.errors import RunnerError
from runner.store.records import RunRecord, RunStore, StepRecord

DEBUG_TAG = "runner-debug"
UNSET = ("MLFLOW_RUN_ID",)


@dataclass
class DebugNotebook:
    record: RunRecord
    step: StepRecord
    path: Path  # the notebook written
    source: Path  # the authored notebook it came from
    command: list[str]  # opens it in JupyterLab (run with :func:`environment`)
    warnings: list[str] = field(default_factory=list)

    @property
    def shell_command(self) -> str:
        return " ".join(["env", *(f"-u {name}" for name in UNSET), *map(shlex.quote, self.command)])


def choose_step(record: RunRecord, step: str | None) -> StepRecord:
    if step is not None:
        if step not in record.steps:
            raise RunnerError(f"run {record.run_id} has no step {step!r}; its steps: {', '.join(record.steps)}")
        return record.steps[step]
    failed = record.failed_steps()
    if not failed:
        raise RunnerError(
            f"run {record.run_id} has no failed step; name the step to debug: "
            f"`runner debug {record.run_id} STEP` (steps: {', '.join(record.steps)})"
        )
    return failed[0]


def source_notebook(config: Config, step: StepRecord) -> Path:
    path = Path(step.notebook)
    return path if path.is_absolute() else (config.root / path).resolve()


def write_debug_notebook(config: Config, run_id: str, step_name: str | None = None) -> DebugNotebook:
    """Write the step's notebook with the run's parameters into the scratch folder."""
    import nbformat

    from runner.notebook.adapter import parameterized

    record = RunStore(config.stores.runs).read(run_id)
    step = choose_step(record, step_name)
    source = source_notebook(config, step)
    if not source.is_file():
        raise RunnerError(f"the notebook of step {step.name!r} is gone: {source}; check it out at the run's "
                          f"commit {record.git.commit or '(unknown)'} first")
    warnings = []
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if digest != step.notebook_sha256:
        warnings.append(
            f"{source} changed since the run (sha256 {digest[:12]}, the run used {step.notebook_sha256[:12]}); "
            f"the debug copy has today's cells with the run's parameters"
            + (f"; `git checkout {record.git.commit} -- {step.notebook}` restores the run's version"
               if record.git.commit else "")
        )
    nb = parameterized(source, dict(step.parameters))
    nb.cells.insert(0, _note(record, step, source))
    chdir = nbformat.v4.new_code_cell(f"import os\nos.chdir({str(source.parent)!r})  # where the step ran")
    chdir.metadata["tags"] = [DEBUG_TAG]
    nb.cells.insert(1, chdir)
    for cell in nb.cells:  # the metadata of papermill's own runs would only confuse a hand run
        cell.metadata.pop("papermill", None)
    target = config.stores.home / "debug" / record.run_id / f"{step.name}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(target))
    jupyter = Path(sys.executable).with_name("jupyter")
    command = [str(jupyter), "lab", str(target)]
    return DebugNotebook(record, step, target, source, command, warnings)


def _note(record: RunRecord, step: StepRecord, source: Path):
    import nbformat

    error = ""
    if step.error:
        where = f" in {html.escape(step.error.where())}" if step.error.where() else ""
        error = (f"\n\nThe run failed{where}: **{html.escape(step.error.ename)}**: "
                 f"<code>{html.escape(step.error.evalue)}</code>")
    text = (
        f"# Debug copy of step `{step.name}` of run `{record.run_id}`\n\n"
        f"Pipeline `{record.pipeline}`, as_of `{record.as_of}`, notebook `{html.escape(str(source))}`."
        f"{error}\n\n"
        "The cell tagged `injected-parameters` holds the parameters the run used. `MLFLOW_RUN_ID` is unset: "
        "run by hand: MLflow starts its own run, so nothing is written into the recorded run. "
        "The next cell moves to the folder the step ran in. Edits here do not change the authored notebook."
    )
    cell = nbformat.v4.new_markdown_cell(text)
    cell.metadata["tags"] = [DEBUG_TAG]
    return cell


def environment() -> dict[str, str]:
    """The environment to start JupyterLab in: this one without the recorded MLflow run."""
    return {name: value for name, value in os.environ.items() if name not in UNSET}
