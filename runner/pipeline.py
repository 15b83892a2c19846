"""A pipeline run: plan and check every step, then run the steps in dependency order.

:func:`plan_run` does everything that can go wrong before a kernel starts: the pipeline and
its steps exist, every notebook has a parameters cell, every value fits its parameter. Only
then does :func:`run` create a run record and MLflow runs, and execute the steps through an
executor, each in a process of its own (:mod:`runner.stepproc`). A failed step's downstream
steps are skipped; a reference to an upstream scrap is resolved when its step is about to start.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from runner import notebooks, secrets
from runner.config import Config, PipelineConfig, StepConfig, current_user, iter_references
from runner.errors import ParameterError, TrackingError
from runner.executors import get_executor
from runner.locks import PipelineLock
from runner.notify import Event, notify, wanted
from runner.parameters import Parameter, ParameterContract, coerce_value, resolve_references
from runner.records import (
    HEARTBEAT_SECONDS,
    MODELS_SCRAP,
    REGISTERED_SCRAP,
    SNAPSHOTS_SCRAP,
    Attempt,
    ChildProcess,
    RunRecord,
    RunStore,
    StepError,
    StepRecord,
    current_process,
    git_state,
    new_run_id,
    utcnow,
)
from runner.retries import run_with_retries
from runner.stepproc import StepOutcome, StepProcesses, StepTask, StopRequest
from runner.tracking import Registry, Tracker

AS_OF = Parameter("as_of", "date", None)


@dataclass(frozen=True)
class RunRequest:
    pipeline: str
    parameters: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # step -> name -> value
    as_of: str | None = None
    trigger: str = "manual"
    max_workers: int | None = None
    executor: str = "local"
    scheduled_for: str | None = None  # the cron tick a scheduled or backfilled run is for
    # Rerun and resume: run these notebook files instead of runner.yaml's, take the parameters as
    # given instead of merging them into runner.yaml's, and start from the origin run's steps.
    notebooks: Mapping[str, str] = field(default_factory=dict)
    exact_parameters: bool = False
    origin: str | None = None
    reuse: Mapping[str, StepRecord] = field(default_factory=dict)  # succeeded steps a resume keeps


@dataclass(frozen=True)
class PlannedStep:
    name: str
    config: StepConfig
    notebook: Path
    contract: ParameterContract
    parameters: dict[str, Any]  # coerced values; values holding ${...} are resolved at start


@dataclass(frozen=True)
class Plan:
    pipeline: str
    config: PipelineConfig
    as_of: str
    steps: dict[str, PlannedStep]


class RunObserver(Protocol):
    """What a progress display hears about a run (called from worker threads too)."""

    def run_started(self, record: RunRecord) -> None: ...
    def step_started(self, step: str) -> None: ...
    def cell_started(self, step: str, index: int, total: int) -> None: ...
    def step_finished(self, step: StepRecord) -> None: ...
    def step_retrying(self, step: str, attempt: int, delay: float, why: str) -> None: ...


def plan_run(config: Config, request: RunRequest, *, environment: bool = True) -> Plan:
    """Check the request against the config and every notebook's parameter contract (and, with
    ``environment``, that the environment variables its secrets name are set here)."""
    pipeline = config.pipeline(request.pipeline)
    unknown = set(request.parameters) - set(pipeline.steps)
    if unknown:
        raise ParameterError(
            f"no step named {sorted(unknown)[0]!r} in pipeline {request.pipeline!r}; steps: {', '.join(pipeline.steps)}"
        )
    as_of = coerce_value(dt.date.today().isoformat() if request.as_of is None else request.as_of, AS_OF, "--as-of")
    steps = {}
    for name, step in pipeline.steps.items():
        notebook = Path(request.notebooks[name]) if name in request.notebooks else config.notebook_path(step)
        contract = notebooks.read_contract(notebook)
        given = dict(request.parameters.get(name, {}))
        values = given if request.exact_parameters else {**step.parameters, **given}
        if "as_of" in contract.parameters and "as_of" not in values:
            values["as_of"] = as_of
        for key, value in values.items():  # an unknown name fails now; a secret by ${env.NAME} only
            parameter = contract.parameter(key)
            secrets.check(key, value, parameter.type, parameter.secret, str(notebook), environment=environment)
        deferred = {key: value for key, value in values.items() if any(True for _ in iter_references(value))}
        static = contract.coerce({key: value for key, value in values.items() if key not in deferred})
        steps[name] = PlannedStep(name, step, notebook, contract, {**static, **deferred})
    return Plan(request.pipeline, pipeline, as_of, steps)


def validate(config: Config, pipelines: list[str] | None = None) -> list[Plan]:
    """Plans for the named pipelines (all by default): the checks of a run, without running."""
    return [plan_run(config, RunRequest(name), environment=False) for name in (pipelines or list(config.pipelines))]


def run(
    config: Config,
    request: RunRequest,
    observer: RunObserver | None = None,
    stop: StopRequest | None = None,
    processes: StepProcesses | None = None,
    locked: bool = False,
) -> RunRecord:
    """Run a pipeline and return its final record. Raises only before anything ran.

    The run holds the pipeline's lock (:class:`PipelineBusy` if another process has it) unless
    ``locked``: its caller (a backfill) holds the lock already. ``processes`` lets a caller
    that runs many pipelines (a replay, the scheduler) keep step processes warm across runs.
    """
    owned = processes is None
    processes = processes or step_processes(config)
    processes.warm(1)  # its imports and kernel start overlap with the checks and MLflow set-up below
    try:
        plan = plan_run(config, request)
        lock = None
        if not locked:
            lock = PipelineLock(RunStore(config.stores.runs), plan.pipeline, f"{request.trigger} run")
            lock.acquire()
        try:
            return _PipelineRun(config, plan, request, observer, stop or StopRequest(), processes).execute()
        finally:
            if lock is not None:
                lock.release()
    finally:
        if owned:
            processes.close()


def step_processes(config: Config, keep_warm: int = 0) -> StepProcesses:
    """Step processes for this project's kernel, preloads and logs."""
    home = config.stores.home
    return StepProcesses(notebooks.ensure_kernel(home), str(home), str(home / "logs"), config.defaults.preload,
                         keep_warm)


class _PipelineRun:
    def __init__(
        self,
        config: Config,
        plan: Plan,
        request: RunRequest,
        observer: RunObserver | None,
        stop: StopRequest,
        processes: StepProcesses,
    ):
        self.config, self.plan, self.observer, self.stop, self.processes = config, plan, observer, stop, processes
        self.max_workers = request.max_workers or config.defaults.max_workers
        self.executor_name = request.executor
        self.store = RunStore(config.stores.runs)
        self.tracker = Tracker(config.stores.tracking_uri, config.stores.artifacts)
        self.kernel = processes.kernel_name
        run_id = new_run_id()
        self.workdir = Path(
            self.store.run_dir(plan.pipeline, run_id)
            if self.store.is_local
            else config.stores.home / "staging" / plan.pipeline / run_id
        )
        steps = {}
        for name, step in plan.steps.items():
            reused = request.reuse.get(name)
            if reused is not None:
                steps[name] = reused.model_copy(update={"reused_from": reused.reused_from or request.origin})
                continue
            steps[name] = StepRecord(
                name=name,
                notebook=_display_path(config.notebook_path(step.config), config.root),
                notebook_sha256=notebooks.sha256_file(step.notebook),
                needs=list(step.config.needs),
                requested=step.parameters,
                parameters=step.parameters,
            )
        self.record = RunRecord(
            run_id=run_id,
            pipeline=plan.pipeline,
            trigger=request.trigger,
            as_of=plan.as_of,
            scheduled_for=request.scheduled_for,
            origin=request.origin,
            config=str(config.source),
            git=git_state(config.root),
            tracking_uri=config.stores.tracking_uri,
            process=current_process(),
            steps=steps,
        )
        self.started = time.monotonic()
        self.step_started: dict[str, float] = {}
        self.scraps = {name: dict(step.scraps) for name, step in request.reuse.items()}
        self._writing = threading.RLock()  # worker threads write the record too, when a step's processes start
        stop.on_started = self._record_processes

    # -- the run -------------------------------------------------------------------------------

    def execute(self) -> RunRecord:
        record = self.record
        tags = self._tags()
        record.mlflow_experiment_id = self.tracker.experiment(record.pipeline)
        record.mlflow_run_id = self.tracker.start_run(record.mlflow_experiment_id, record.run_id, tags)
        self._keep_sources()
        self._write()
        if self.observer:
            self.observer.run_started(record)
        running: dict[Future, str] = {}
        executor = get_executor(self.executor_name, self.max_workers)
        try:
            while True:
                self._start_ready(executor, running)
                if not running:
                    break
                done, _ = wait(running, timeout=HEARTBEAT_SECONDS, return_when=FIRST_COMPLETED)
                for future in done:
                    self._finish(running.pop(future), future.result())
                self._write()
        except KeyboardInterrupt:
            self.stop.stop()
            for future, name in running.items():
                self._finish(name, future.result())
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
        for step in record.steps.values():
            if step.status == "pending":  # never started: the run was stopped (resume starts them)
                step.status = "interrupted"
        self._end()
        return record

    def _start_ready(self, executor, running: dict[Future, str]) -> None:
        """Start every step whose upstream steps succeeded; skip those whose upstream did not."""
        steps = self.record.steps
        changed = True
        while changed:
            changed = False
            for name, planned in self.plan.steps.items():
                if steps[name].status != "pending" or len(running) >= self.max_workers or self.stop.draining:
                    continue
                upstream = [steps[need].status for need in planned.config.needs]
                if any(status in ("failed", "skipped", "interrupted") for status in upstream):
                    steps[name].status = "skipped"
                    self._notify_finished(steps[name])
                    changed = True
                elif all(status == "succeeded" for status in upstream):
                    future = self._start(executor, planned)
                    if future is not None:
                        running[future] = name
                    changed = True
        waiting = sum(step.status == "pending" for step in steps.values())
        self.processes.warm(min(self.max_workers, waiting))  # ready before the next steps are

    def _start(self, executor, planned: PlannedStep) -> Future | None:
        record, step = self.record, self.record.steps[planned.name]
        step.started_at = utcnow()
        self.step_started[planned.name] = time.monotonic()
        context = {"as_of": record.as_of, "run_id": record.run_id, "pipeline": record.pipeline}
        try:
            parameters = planned.contract.coerce(resolve_references(planned.parameters, self.scraps, context))
        except ParameterError as exc:
            exc.notebook = step.notebook
            self._settle(step, "failed", StepError(ename="ParameterError", evalue=str(exc)))
            return None
        step.parameters = parameters
        step.status = "running"
        step.mlflow_run_id = self.tracker.start_run(
            record.mlflow_experiment_id,
            planned.name,
            {**self._tags(), "runner.step": planned.name, "runner.notebook.sha256": step.notebook_sha256},
            parent=record.mlflow_run_id,
        )
        step.output, step.html = f"{planned.name}.ipynb", f"{planned.name}.html"
        timeout = planned.config.timeout or self.config.defaults.timeout
        task = StepTask(
            run_id=record.run_id,
            pipeline=record.pipeline,
            step=planned.name,
            notebook=str(planned.notebook),
            output=str(self.workdir / step.output),
            html=str(self.workdir / step.html),
            log=str(self.workdir / f"{planned.name}.log"),
            parameters=parameters,
            kernel_name=self.kernel,
            jupyter_path=str(self.config.stores.home),
            cwd=str(self.config.notebook_path(planned.config).parent),  # also when rerunning recorded bytes
            cell_timeout=planned.config.cell_timeout or self.config.defaults.cell_timeout,
            timeout=timeout,
            env=self._kernel_env(planned.name, step.mlflow_run_id),
        )
        self._write()
        if self.observer:
            self.observer.step_started(planned.name)
        on_cell = self.observer.cell_started if self.observer else None
        on_retry = getattr(self.observer, "step_retrying", None)
        return executor.submit(run_with_retries, task, planned.config, on_cell, self.stop, self.processes, on_retry)

    def _finish(self, name: str, result: tuple[StepOutcome, list[Attempt]]) -> None:
        outcome, attempts = result
        step = self.record.steps[name]
        step.attempts = attempts
        step.scraps = outcome.scraps
        step.snapshots = list(step.scraps.get(SNAPSHOTS_SCRAP, []))
        step.models = list(step.scraps.get(MODELS_SCRAP, []))
        self.scraps[name] = step.scraps
        error = StepError(**outcome.error) if outcome.error else None
        produced = [self.workdir / file for file in step.outputs() if (self.workdir / file).is_file()]
        for path in produced:
            self.store.put(str(path), self.record.pipeline, self.record.run_id)
        try:
            self.tracker.log_step(
                step.mlflow_run_id, step.parameters, step.scraps,
                [str(path) for path in produced if path.suffix in (".ipynb", ".html")],
            )
            self.tracker.end_run(step.mlflow_run_id, outcome.status)
        except TrackingError as exc:
            self.record.warnings.append(f"step {name}: {exc}")
        self._conclude_registrations(step, outcome.status == "succeeded")
        self._settle(step, outcome.status, error)

    def _conclude_registrations(self, step: StepRecord, succeeded: bool) -> None:
        """Model versions the step registered get their alias only now that it succeeded (``nb.save_model``
        defers it); a failed step's versions are tagged failed and never get one."""
        registered = step.scraps.get(REGISTERED_SCRAP) or []
        if not registered:
            return
        try:
            warnings = Registry(self.config.stores.tracking_uri).conclude(registered, succeeded, current_user())
        except TrackingError as exc:
            warnings = [f"the model versions it registered keep no alias: {exc}"]
        self.record.warnings.extend(f"step {step.name}: {warning}" for warning in warnings)

    def _settle(self, step: StepRecord, status: str, error: StepError | None) -> None:
        step.status = status
        step.error = error
        step.ended_at = utcnow()
        step.duration_s = round(time.monotonic() - self.step_started.get(step.name, time.monotonic()), 3)
        self._notify_finished(step)

    def _notify_finished(self, step: StepRecord) -> None:
        if self.observer:
            self.observer.step_finished(step)

    def _end(self) -> None:
        record = self.record
        statuses = [step.status for step in record.steps.values()]
        if "interrupted" in statuses or self.stop.requested:
            record.status = "interrupted"
        elif all(status == "succeeded" for status in statuses):
            record.status = "succeeded"
        else:
            record.status = "failed"
        record.ended_at = utcnow()
        record.duration_s = round(time.monotonic() - self.started, 3)
        try:
            self.tracker.end_run(record.mlflow_run_id, record.status)
        except TrackingError as exc:
            record.warnings.append(str(exc))
        if record.status != "succeeded":
            self._notify_failure()
        self._write()

    def _notify_failure(self) -> None:
        """The failure notice, through the same notifier as monitoring alerts; a failed delivery is recorded."""
        record = self.record
        settings = self.config.notify_for(record.pipeline)
        if not wanted(settings, "failure"):
            return
        bad = [step for step in record.steps.values() if step.status in ("failed", "interrupted")]
        reasons = tuple(
            f"{step.name} {step.status}: {step.error.ename}: {step.error.evalue}" if step.error else f"{step.name} {step.status}"
            for step in bad
        )
        event = Event(
            "failure", record.pipeline, record.run_id, as_of=record.as_of, step=bad[0].name if bad else "",
            summary=f"run {record.run_id} of {record.pipeline} (as_of {record.as_of}, {record.trigger}) {record.status}",
            reasons=reasons,
            details={"status": record.status, "trigger": record.trigger, "scheduled_for": record.scheduled_for,
                     "run_dir": self.store.run_dir(record.pipeline, record.run_id),
                     "resume": f"runner resume {record.run_id}"},
        )
        for delivery in notify(settings, event):
            record.notifications.append(delivery.as_dict())
            if not delivery.ok:
                record.warnings.append(f"failure notice to {delivery.channel} {delivery.target} not sent: {delivery.detail}")

    # -- helpers -------------------------------------------------------------------------------

    def _keep_sources(self) -> None:
        """Keep each step's notebook as run (``<step>.source.ipynb``) for `runner rerun`; copy reused steps' files."""
        record = self.record
        for name, planned in self.plan.steps.items():
            step = record.steps[name]
            if step.reused_from:
                files = [step.source, *step.outputs()] if step.source else step.outputs()
                self.store.copy_files(record.pipeline, step.reused_from, record.run_id, files)
                continue
            step.source = f"{name}.source.ipynb"
            self.workdir.mkdir(parents=True, exist_ok=True)
            (self.workdir / step.source).write_bytes(planned.notebook.read_bytes())
            self.store.put(str(self.workdir / step.source), record.pipeline, record.run_id)

    def _write(self) -> None:
        with self._writing:
            self.record.process.heartbeat_at = utcnow()
            self.store.write(self.record)

    def _record_processes(self, step: str, processes: list[dict[str, Any]]) -> None:
        """A step's process and its kernel, in the record as soon as they start: the pipeline's lock is
        not recovered while one of them lives (:meth:`runner.locks.PipelineLock.survivors`)."""
        with self._writing:
            children = self.record.process.children
            known = {(child.pid, child.pid_started) for child in children}
            new = [ChildProcess(step=step, **process) for process in processes
                   if (process["pid"], process["pid_started"]) not in known]
            if new:
                children.extend(new)
                self._write()

    def _tags(self) -> dict[str, str]:
        record = self.record
        return {
            "runner.run_id": record.run_id,
            "runner.pipeline": record.pipeline,
            "runner.trigger": record.trigger,
            "runner.as_of": record.as_of,
            **({"runner.origin": record.origin} if record.origin else {}),
            "mlflow.source.git.commit": record.git.commit,
        }

    def _kernel_env(self, step: str, mlflow_run_id: str) -> dict[str, str]:
        """The environment of the step's kernel: the run context and its MLflow run."""
        record = self.record
        return {
            "MLFLOW_TRACKING_URI": self.config.stores.tracking_uri,
            "MLFLOW_RUN_ID": mlflow_run_id,  # for the notebook's own mlflow calls (consumed by their first start_run)
            "RUNNER_MLFLOW_RUN_ID": mlflow_run_id,  # for runner.nb, which logs to the step's run by id
            "MLFLOW_EXPERIMENT_ID": record.mlflow_experiment_id or "",
            "RUNNER_CONFIG": str(self.config.source),
            "RUNNER_HOME": str(self.config.stores.home),
            "RUNNER_RUN_ID": record.run_id,
            "RUNNER_PIPELINE": record.pipeline,
            "RUNNER_STEP": step,
            "RUNNER_AS_OF": record.as_of,
            "RUNNER_GIT_COMMIT": record.git.commit or "",
        }


def _display_path(path: Path, root: Path) -> str:
    """``path`` relative to the project root when inside it, else absolute."""
    try:
        return str(path.relative_to(root.resolve()))
    except ValueError:
        return str(path)
