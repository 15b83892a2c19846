"""Lifecycle hooks of a pipeline run: what a run does around its steps, apart from walking them.

The loop in :mod:`runner.run.pipeline` walks the steps and writes the run's record; everything else a run
does attaches to it as a :class:`Hook` (as Kedro's hook specifications and Metaflow's step decorators do):

- :class:`MlflowTracking`: the pipeline's experiment, a parent run per run and a child run per step, whose id
  reaches the step's kernel; the step's parameters, scraps and files logged; its model registrations concluded.
- :class:`RunFiles`: the run's files kept in the run store: each step's notebook as run, reused steps' files,
  the files a step produced; temporary files of cut-short writes removed at the end.
- :class:`FailureNotices`: the notice of a run that did not succeed.

A hook sees the run as a :class:`RunState` (its record, config, store and folder, and a way to stop it), and a
step's outcome as a :class:`StepResult` it may fail.

**Order.** The hooks of a run nest like ``with`` blocks: ``before_run`` and ``before_step`` are called in
the list's order, ``after_step``, ``after_run`` and ``on_record_error`` in reverse. The built-in list is
``[FailureNotices, MlflowTracking, RunFiles]`` (:func:`default_hooks`), so MLflow's parent run exists before
a file is kept, a step's files are kept before MLflow logs them, and the MLflow runs end before the notice
is sent. A caller's hooks come first (outermost): a refusal in their ``before_*`` comes before MLflow opened
anything, and their ``after_*`` see the verdicts of the built-in hooks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.config import Config, current_user
from runner.errors import RunnerError, StoreError, TrackingError
from runner.notify import Event, notify, wanted
from runner.store.records import (
    REGISTERED_SCRAP,
    RunRecord,
    RunStore,
    StepError,
    StepRecord,
    Verdict,
    store_errors,
)
from runner.tracking.registry import Registry
from runner.tracking.tracker import Tracker, http_settings, unreachable


@dataclass(eq=False)
class RunState:
    """What a hook sees of a run. The loop owns it; a hook reads it, adds to ``record`` (fields, warnings) and
    may :meth:`stop` the run."""

    record: RunRecord
    config: Config
    store: RunStore
    workdir: Path  # where the steps' files are written before they are kept in the store
    notebooks: Mapping[str, Path]  # each step's notebook as it runs
    started: bool = False  # every before_run returned: the run is recorded from now on
    stopped_by: BaseException | None = None  # what ended the run before its steps were done (set by the loop)
    stopping: RunnerError | None = field(default=None, repr=False)  # a stop asked for, not yet acted on

    @property
    def warnings(self) -> list[str]:
        return self.record.warnings

    @property
    def failed_by(self) -> BaseException | None:
        """What stopped the run, unless it was Ctrl-C (or SIGTERM): then the run is interrupted, not failed."""
        return None if isinstance(self.stopped_by, KeyboardInterrupt) else self.stopped_by

    def stop(self, error: RunnerError) -> None:
        """Stop the run with ``error`` once the step at hand is settled (in ``before_run``: once every hook's
        ``before_run`` returned): its running steps are stopped, it ends failed and ``error`` is raised."""
        if self.stopping is None:
            self.stopping = error


@dataclass
class StepResult:
    """A step's outcome before it is settled; ``after_step`` hooks may fail it."""

    status: str  # succeeded, failed or interrupted
    error: StepError | None
    files: list[Path]  # what the step produced in the run's folder: executed notebook, page, log

    def fail(self, error: StepError) -> None:
        self.status, self.error = "failed", error


class Hook:
    """The points of a run a hook attaches to; each does nothing here: override those you need."""

    def before_run(self, run: RunState) -> None:
        """Before the run starts: nothing is recorded yet. Raising refuses the run: the error is raised as it
        is, with nothing recorded, once the hooks whose ``before_run`` returned got ``after_run`` (with
        ``run.started`` false). To have the run start and end failed instead, call ``run.stop(error)``."""

    def before_step(self, run: RunState, step: StepRecord) -> Mapping[str, str]:
        """Before a step's kernel starts (its parameters resolved): variables to add to its environment.
        Raising a :class:`RunnerError` fails the step as not started (its downstream steps are skipped);
        a step that did not start gets no ``after_step``."""
        return {}

    def after_step(self, run: RunState, step: StepRecord, result: StepResult) -> None:
        """After a step ended (its attempts and scraps in ``step``), before it is settled with ``result``:
        ``result.fail(error)`` fails it, ``run.stop(error)`` stops the run once it is settled."""

    def after_run(self, run: RunState) -> None:
        """After the run ended, its steps settled and its status final, before its final record is written."""

    def on_record_error(self, run: RunState, error: StoreError) -> None:
        """The final record of a run that ``after_run`` saw succeed could not be written: the run failed
        after all (``run.record.status`` says so now, in this process only)."""


def default_hooks() -> list[Hook]:
    """The hooks every run has, in their order (see the module's docstring)."""
    return [FailureNotices(), MlflowTracking(), RunFiles()]


def describe(error: BaseException) -> str:
    """An error in one line: ours say what to do; anything else is named by its type."""
    return str(error) if isinstance(error, RunnerError) else f"{type(error).__name__}: {error}"


class MlflowTracking(Hook):
    """One MLflow experiment per pipeline, a parent run per run (named by its id), a child run per step.

    Once MLflow does not answer, the run's later calls are not made (each would wait ``RUNNER_MLFLOW_TIMEOUT``
    for it) and fail with that error; every tracking error is also a warning of the record."""

    def __init__(self) -> None:
        self.tracker: Tracker | None = None
        self.open_runs: dict[str, str] = {}  # MLflow runs started and not ended: run id -> step ("" for the run)
        self.down: TrackingError | None = None  # MLflow stopped answering

    def before_run(self, run: RunState) -> None:
        """The experiment and the parent run; MLflow not answering refuses the run."""
        record, stores = run.record, run.config.stores
        self.tracker = Tracker(stores.tracking_uri, stores.artifacts)
        record.tracking_uri = stores.tracking_uri
        record.mlflow_experiment_id = self.tracker.experiment(record.pipeline)
        record.mlflow_run_id = self.tracker.start_run(record.mlflow_experiment_id, record.run_id, _tags(record))
        self.open_runs[record.mlflow_run_id] = ""

    def before_step(self, run: RunState, step: StepRecord) -> Mapping[str, str]:
        """The step's child run; its id and MLflow's settings for the kernel."""
        record = run.record
        if self.down is not None:
            raise self.down
        tags = {**_tags(record), "runner.step": step.name, "runner.notebook.sha256": step.notebook_sha256}
        try:
            step.mlflow_run_id = self.tracker.start_run(record.mlflow_experiment_id, step.name, tags,
                                                        parent=record.mlflow_run_id)
        except TrackingError as exc:
            raise self._failed(run, exc)
        self.open_runs[step.mlflow_run_id] = step.name
        return {
            **http_settings(),  # the notebook's MLflow calls wait no longer than the runner's
            "MLFLOW_TRACKING_URI": run.config.stores.tracking_uri,
            "MLFLOW_RUN_ID": step.mlflow_run_id,  # for the notebook's own mlflow calls (their first start_run takes it)
            "RUNNER_MLFLOW_RUN_ID": step.mlflow_run_id,  # for runner.nb, which logs to the step's run by id
            "MLFLOW_EXPERIMENT_ID": record.mlflow_experiment_id or "",
        }

    def after_step(self, run: RunState, step: StepRecord, result: StepResult) -> None:
        """Log the step, end its run and conclude its registrations; a succeeded step whose results could not be
        logged fails."""
        files = [str(path) for path in result.files if path.suffix in (".ipynb", ".html")]
        failed = self._call(run, self.tracker.log_step, step.mlflow_run_id, step.parameters, step.scraps, files)
        if failed is None and step.verdict is not None:
            failed = self._call(run, self.tracker.log_values, step.mlflow_run_id, None, verdict_tags(step.verdict))
        if failed is not None and result.status == "succeeded":
            result.fail(StepError(
                ename="TrackingError",
                evalue=f"the notebook ran, but its results could not be logged: {failed}; `runner resume "
                       f"{run.record.run_id}` runs it again"))
        self._end(run, step.mlflow_run_id, result.status)
        self._conclude_registrations(run, step, result.status == "succeeded")

    def after_run(self, run: RunState) -> None:
        """End every run still open, the steps' before the parent's; those MLflow could not be told of stay a
        warning."""
        record = run.record
        verdict = record.verdict
        if verdict is not None and record.mlflow_run_id:
            self._call(run, self.tracker.log_values, record.mlflow_run_id, None, verdict_tags(verdict))
        ending = sorted(self.open_runs.items(), key=lambda item: item[1] == "")
        for run_id, step in ending:
            self._end(run, run_id, record.steps[step].status if step else record.status)
        left = [run_id for run_id, _ in ending if run_id in self.open_runs]
        if left:
            run.warnings.append(f"MLflow runs left RUNNING (they could not be ended): {', '.join(left)}")

    def _conclude_registrations(self, run: RunState, step: StepRecord, succeeded: bool) -> None:
        """Model versions the step registered get their alias only now that it succeeded (``nb.save_model``
        defers it); a failed step's versions are tagged failed and never get one."""
        registered = step.scraps.get(REGISTERED_SCRAP) or []
        if not registered:
            return
        if self.down is not None:
            run.warnings.append(f"step {step.name}: the model versions it registered keep no alias: {self.down}")
            return
        try:
            warnings = Registry(run.config.stores.tracking_uri).conclude(registered, succeeded, current_user())
        except TrackingError as exc:
            warnings = [f"the model versions it registered keep no alias: {self._failed(run, exc)}"]
        run.warnings.extend(f"step {step.name}: {warning}" for warning in warnings)

    def _call(self, run: RunState, call: Callable[..., Any], *args: Any) -> TrackingError | None:
        """Make one tracking call; its error, if any (also recorded as a warning)."""
        if self.down is not None:
            return self.down
        try:
            call(*args)
        except TrackingError as exc:
            return self._failed(run, exc)
        return None

    def _failed(self, run: RunState, exc: TrackingError) -> TrackingError:
        """Record a tracking error; once MLflow does not answer, later calls are not made."""
        run.warnings.append(str(exc))
        if unreachable(exc):
            self.down = exc
        return exc

    def _end(self, run: RunState, run_id: str | None, status: str) -> None:
        if run_id is None or run_id not in self.open_runs:
            return
        if self._call(run, self.tracker.end_run, run_id, status) is None:
            del self.open_runs[run_id]


def verdict_tags(verdict: Verdict) -> dict[str, str]:
    """A verdict as MLflow tags: ``runner.verdict`` (the level), ``runner.verdict.reasons`` (one a line) and the
    run's description (``mlflow.note.content``, what MLflow's UI shows on the run's page)."""
    reasons = "\n".join(verdict.reasons)
    note = f"Verdict: **{verdict.level.upper()}**" + "".join(f"\n- {reason}" for reason in verdict.reasons)
    return {"runner.verdict": verdict.level, **({"runner.verdict.reasons": reasons} if reasons else {}),
            "mlflow.note.content": note}


def _tags(record: RunRecord) -> dict[str, str]:
    return {
        "runner.run_id": record.run_id,
        "runner.pipeline": record.pipeline,
        "runner.trigger": record.trigger,
        "runner.as_of": record.as_of,
        **({"runner.origin": record.origin} if record.origin else {}),
        "mlflow.source.git.commit": record.git.commit,
    }


class RunFiles(Hook):
    """The run's files in the run store. A file that cannot be kept stops the run (its step fails first)."""

    def before_run(self, run: RunState) -> None:
        """Keep each step's notebook as run (``<step>.source.ipynb``) for `runner rerun`; copy reused steps'
        files from the run they come from."""
        record = run.record
        try:
            for name, notebook in run.notebooks.items():
                step = record.steps[name]
                if step.reused_from:
                    files = [step.source, *step.outputs()] if step.source else step.outputs()
                    run.store.copy_files(record.pipeline, step.reused_from, record.run_id, files)
                    continue
                step.source = f"{name}.source.ipynb"
                with store_errors("write", str(run.workdir / step.source)):
                    run.workdir.mkdir(parents=True, exist_ok=True)
                    (run.workdir / step.source).write_bytes(notebook.read_bytes())
                run.store.put(str(run.workdir / step.source), record.pipeline, record.run_id)
        except StoreError as exc:
            run.stop(exc)

    def after_step(self, run: RunState, step: StepRecord, result: StepResult) -> None:
        """Keep the files the step produced."""
        try:
            for path in result.files:
                run.store.put(str(path), run.record.pipeline, run.record.run_id)
        except StoreError as exc:
            result.fail(StepError(ename="StoreError", evalue=f"its files could not be kept: {exc}"))
            run.stop(exc)

    def after_run(self, run: RunState) -> None:
        """Remove temporary files of writes the run's end cut short (``*.tmp``: a record, a notebook, a page),
        and on a remote store the run's staging folder (its files are in the store by now)."""
        with contextlib.suppress(OSError):
            for path in run.workdir.glob("*.tmp"):
                with contextlib.suppress(OSError):
                    path.unlink()
        run.store.discard(run.workdir)


class FailureNotices(Hook):
    """The failure notice of a run, through the same notifier as monitoring alerts; a failed delivery is a
    warning of the record. A run refused before it started sends none: its caller hears of it."""

    def after_run(self, run: RunState) -> None:
        if run.started and run.record.status != "succeeded":
            self._send(run)

    def on_record_error(self, run: RunState, error: StoreError) -> None:
        self._send(run, f"its record could not be written: {error}")

    @staticmethod
    def _send(run: RunState, reason: str = "") -> None:
        if not reason and run.failed_by is not None:
            reason = f"the run stopped: {describe(run.failed_by)}"
        send_failure_notice(run.config, run.store, run.record, reason)


def send_failure_notice(config: Config, store: RunStore, record: RunRecord, reason: str = "") -> None:
    """Send the failure notice of ``record`` (a run that did not succeed) where the pipeline's ``notify`` wants
    failures, ``reason`` first among its reasons, then each failed or interrupted step's; each delivery goes into
    the record, a failed one as a warning too. Also for a run whose runner died, once the next run of its pipeline
    records its end (:func:`runner.run.pipeline.settle_abandoned`)."""
    settings = config.notify_for(record.pipeline)
    if not wanted(settings, "failure"):
        return
    bad = [step for step in record.steps.values() if step.status in ("failed", "interrupted")]
    reasons = tuple(
        f"{step.name} {step.status}{f' in {step.error.where()}' if step.error.where() else ''}: "
        f"{step.error.ename}: {step.error.evalue}" if step.error
        else f"{step.name} {step.status}"
        for step in bad
    )
    if reason:
        reasons = (reason, *reasons)
    event = Event(
        "failure", record.pipeline, record.run_id, as_of=record.as_of, step=bad[0].name if bad else "",
        summary=f"run {record.run_id} of {record.pipeline} (as_of {record.as_of}, {record.trigger}) {record.status}",
        reasons=reasons,
        details={"status": record.status, "trigger": record.trigger, "scheduled_for": record.scheduled_for,
                 "run_dir": store.run_dir(record.pipeline, record.run_id),
                 "resume": f"runner resume {record.run_id}"},
    )
    for delivery in notify(settings, event):
        record.notifications.append(delivery.as_dict())
        if not delivery.ok:
            record.warnings.append(f"failure notice to {delivery.channel} {delivery.target} not sent: "
                                   f"{delivery.detail}")
