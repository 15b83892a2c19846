"""A run's lifecycle hooks: a caller's hook attached through ``pipeline.run(..., hooks=[...])`` is called in order,
sees the run as the system records it, adds to a step kernel's environment, and may refuse a step or the run."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from mlflow.tracking import MlflowClient
from nbformat.v4 import new_code_cell, new_notebook

from runner.config import load_config
from runner.errors import RunnerError
from runner.run import pipeline
from runner.run.hooks import Hook, RunState, StepResult
from runner.run.plan import RunRequest
from runner.store.records import RunStore, StepRecord

META = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}}


def glues_my_var(folder: Path) -> str:
    """A notebook that glues its kernel's ``MY_VAR``."""
    book = new_notebook(metadata=META, cells=[
        new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
        new_code_cell('import os\nimport scrapbook as sb\nsb.glue("my_var", os.environ.get("MY_VAR", "unset"))'),
    ])
    path = folder / "glues_my_var.ipynb"
    nbformat.write(book, path)
    return str(path)


def two_steps(project) -> None:
    notebook = glues_my_var(project.root)
    project.write({"p": {"steps": {"first": {"notebook": notebook},
                                   "second": {"notebook": notebook, "needs": ["first"]}}}})


def mlflow_statuses(tracking_uri: str) -> dict[str, str]:
    """Every MLflow run of the tracking store: run name (the run id, or the step) -> status."""
    client = MlflowClient(tracking_uri)
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    return {run.info.run_name: run.info.status for run in client.search_runs(experiments)} if experiments else {}


class Recorder(Hook):
    """Writes down each call and what it saw; gives each step's kernel ``MY_VAR``."""

    def __init__(self, tracking_uri: str):
        self.calls: list[tuple] = []
        self.client = MlflowClient(tracking_uri)

    def before_run(self, run: RunState) -> None:
        self.calls.append(("before_run", run.record.status, run.started, run.record.mlflow_run_id))

    def before_step(self, run: RunState, step: StepRecord) -> dict[str, str]:
        self.calls.append(("before_step", step.name, step.status, run.record.steps["first"].status))
        return {"MY_VAR": f"from the hook, for {step.name}"}

    def after_step(self, run: RunState, step: StepRecord, result: StepResult) -> None:
        # The built-in hooks came first: the files are kept and the step's MLflow run is ended already.
        ended = self.client.get_run(step.mlflow_run_id).info.status
        self.calls.append(("after_step", step.name, step.status, result.status, sorted(p.name for p in result.files),
                           step.scraps["my_var"], ended))

    def after_run(self, run: RunState) -> None:
        statuses = {name: step.status for name, step in run.record.steps.items()}
        parent = run.record.mlflow_run_id
        self.calls.append(("after_run", run.started, run.record.status, statuses,
                           self.client.get_run(parent).info.status if parent else None))


def test_a_hook_is_called_in_order_sees_the_run_and_reaches_the_kernel(project):
    two_steps(project)
    hook = Recorder(project.tracking_uri)
    returned = pipeline.run(load_config(project.config), RunRequest("p"), hooks=[hook])
    (record,) = RunStore(load_config(project.config).stores.runs).list()
    assert record.run_id == returned.run_id and record.status == "succeeded"
    files = ["first.html", "first.ipynb", "first.log"]
    assert hook.calls == [
        ("before_run", "running", False, None),  # first of all: MLflow's parent run does not exist yet
        ("before_step", "first", "pending", "pending"),
        ("after_step", "first", "running", "succeeded", files, "from the hook, for first", "FINISHED"),
        ("before_step", "second", "pending", "succeeded"),
        ("after_step", "second", "running", "succeeded", [name.replace("first", "second") for name in files],
         "from the hook, for second", "FINISHED"),
        ("after_run", True, "succeeded", {"first": "succeeded", "second": "succeeded"}, "FINISHED"),
    ]
    assert {name: step.scraps["my_var"] for name, step in record.steps.items()} == {
        "first": "from the hook, for first", "second": "from the hook, for second"}
    assert mlflow_statuses(project.tracking_uri) == {record.run_id: "FINISHED", "first": "FINISHED",
                                                     "second": "FINISHED"}


class Refuses(Hook):
    """Refuses to start the step named ``step`` (or, without one, the run)."""

    def __init__(self, step: str = ""):
        self.step = step

    def before_run(self, run: RunState) -> None:
        if not self.step:
            raise RunnerError("no run today")

    def before_step(self, run: RunState, step: StepRecord) -> dict[str, str]:
        if step.name == self.step:
            raise RunnerError("no licence for this step")
        return {}


def test_a_hook_refusing_a_step_fails_it_as_not_started_and_skips_downstream(project):
    two_steps(project)
    returned = pipeline.run(load_config(project.config), RunRequest("p"), hooks=[Refuses("first")])
    (record,) = RunStore(load_config(project.config).stores.runs).list()
    assert record == returned
    first, second = record.steps["first"], record.steps["second"]
    assert (record.status, first.status, second.status) == ("failed", "failed", "skipped")
    assert (first.error.ename, first.error.evalue) == ("RunnerError", "not started: no licence for this step")
    assert first.output is None and first.mlflow_run_id is None and not first.attempts
    # The caller's hook is outermost: it refused before MLflow's run of the step was started.
    assert mlflow_statuses(project.tracking_uri) == {record.run_id: "FAILED"}
    assert record.warnings == []


def test_a_hook_refusing_the_run_leaves_nothing_recorded_and_ends_the_hooks_before_it(project):
    two_steps(project)
    before = Recorder(project.tracking_uri)
    with pytest.raises(RunnerError, match="^no run today$"):
        pipeline.run(load_config(project.config), RunRequest("p"), hooks=[before, Refuses()])
    assert [call[:3] for call in before.calls] == [("before_run", "running", False), ("after_run", False, "failed")]
    assert RunStore(load_config(project.config).stores.runs).list() == []
    assert not (project.home / "runs" / "p").exists() and mlflow_statuses(project.tracking_uri) == {}
