"""A pipeline run: the steps of a :class:`~runner.run.plan.Plan` in dependency order.

:func:`run` takes the pipeline's lock, creates the run record and executes the steps through an executor,
each in a process of its own (:mod:`runner.run.stepproc`). A failed step's downstream steps are skipped; a
reference to an upstream scrap is resolved when its step is about to start. MLflow tracking, keeping the
run's files in the store and failure notices attach to the run as lifecycle hooks (:mod:`runner.run.hooks`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import datetime
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from pathlib import Path
from typing import Any, Protocol

from runner import references
from runner.config import Config
from runner.errors import ParameterError, RunnerError, StoreError, TrackingError
from runner.notebook import adapter
from runner.run import environment
from runner.run.executors import get_executor
from runner.run.hooks import Hook, RunState, StepResult, default_hooks, describe, send_failure_notice
from runner.run.plan import Plan, PlannedStep, RunRequest, check_recordable, plan_run
from runner.run.remote import RemoteExecutor
from runner.run.retries import run_with_retries
from runner.run.stepproc import Launcher, StepOutcome, StepProcesses, StepTask, StopRequest
from runner.store.locks import PipelineLock
from runner.tracking.tracker import Tracker
from runner.store.records import (
    HEARTBEAT_SECONDS,
    MODELS_SCRAP,
    SNAPSHOTS_SCRAP,
    VERDICT_SCRAP,
    Attempt,
    ChildProcess,
    RunRecord,
    RunStore,
    StepError,
    StepRecord,
    Verdict,
    current_process,
    git_state,
    new_run_id,
    store_errors,
    utcnow,
)

WRITABLE = "make the run store writable and give it room (RUNNER_RUN_STORE or stores.runs in runner.yaml)"


class RunObserver(Protocol):
    """What a progress display hears about a run (called from worker threads too)."""

    def run_started(self, record: RunRecord) -> None: ...
    def step_started(self, step: str) -> None: ...
    def cell_started(self, step: str, index: int, total: int) -> None: ...
    def step_finished(self, step: StepRecord) -> None: ...
    def step_retrying(self, step: str, attempt: int, delay: float, why: str) -> None: ...


def run(
    config: Config,
    request: RunRequest,
    observer: RunObserver | None = None,
    stop: StopRequest | None = None,
    processes: StepProcesses | None = None,
    locked: bool = False,
    hooks: Sequence[Hook] = (),
) -> RunRecord:
    """Run a pipeline and return its final record.

    Raises before anything ran, with nothing recorded: a bad parameter, a busy pipeline, a run store
    that cannot be written, MLflow not answering within ``RUNNER_MLFLOW_TIMEOUT``. Once the run
    started it raises only when the run itself could not go on (its record or files could not be
    written) or was interrupted again while its steps were stopped, and only after it ended: its
    record final, its MLflow runs ended, its failure notice sent (:meth:`_PipelineRun.execute`).

    The run holds the pipeline's lock (:class:`PipelineBusy` if another process has it) unless
    ``locked``: its caller (a backfill) holds the lock already. ``processes`` lets a caller
    that runs many pipelines (a replay, the scheduler) keep step processes warm across runs. ``hooks`` attach
    to the run before (outside) the built-in ones: MLflow tracking, the run's files, failure notices.
    """
    owned = processes is None
    processes = processes or step_processes(config)
    processes.warm(1)  # its imports and kernel start overlap with the checks and MLflow set-up below
    try:
        plan = plan_run(config, request)
        lock = None
        if not locked:
            lock = PipelineLock(RunStore(config.stores.runs), plan.pipeline, f"{request.trigger} run")
            try:
                with store_errors("write", lock.path):
                    lock.acquire()
            except StoreError as exc:
                raise StoreError(f"{exc}; nothing ran: {WRITABLE}") from exc.__cause__
        try:
            if lock is not None and lock.took_over is not None:
                settle_abandoned(config, plan.pipeline, lock.abandoned_since())
            return _PipelineRun(config, plan, request, observer, stop or StopRequest(), processes,
                                [*hooks, *default_hooks()]).execute()
        finally:
            if lock is not None:
                with contextlib.suppress(OSError):  # a lock left behind is taken over once this process is gone
                    lock.release()
    finally:
        if owned:
            processes.close()


def settle_abandoned(config: Config, pipeline: str, since: str | None = None) -> list[RunRecord]:
    """Record the end of the runs of ``pipeline`` whose runner died without recording it (SIGKILL, the OOM
    killer, a reboot): their record still says running, their process is gone. Called with the pipeline's lock
    held, once it was taken over from a dead owner (:attr:`PipelineLock.took_over`), for that owner's runs (those
    whose id sorts at or after ``since``, all when None), so none of them can be running. Each becomes ``interrupted``, ended at its last heartbeat, its running
    and pending steps ``interrupted``, and its MLflow parent and step runs still RUNNING end ``KILLED``; its failure
    notice, which its runner could not send, goes out now. A run that never ended is written this once; a run that
    ended is never rewritten. Returns the records settled."""
    store = RunStore(config.stores.runs)
    settled: list[RunRecord] = []
    tracker = None
    for record in store.list(pipeline, status="interrupted", newer_than=since):
        if record.status != "running" or any(child.alive_here() for child in record.process.children):
            continue  # ended and recorded; or a step of it still runs (it dies within seconds of its runner)
        who = f"the runner (pid {record.process.pid} on {record.process.host})"
        ended = record.process.heartbeat_at
        error = StepError(ename="Interrupted", evalue=f"{who} ended before this step did, without recording it")
        for step in record.steps.values():
            if step.status in ("running", "pending"):
                step.status, step.ended_at = "interrupted", step.ended_at or (ended if step.started_at else None)
                step.error = step.error or (error if step.started_at else None)
        record.status, record.ended_at = "interrupted", ended
        with contextlib.suppress(ValueError, TypeError):
            record.duration_s = round((datetime.fromisoformat(ended) - datetime.fromisoformat(record.created_at))
                                      .total_seconds(), 3)
        record.warnings.append(f"{who} ended without recording the run's end (killed?); recorded as interrupted "
                               f"at {utcnow()} by the next run of {pipeline}, as of its last heartbeat")
        runs = [(record.mlflow_run_id, record.status)] + [
            (step.mlflow_run_id, step.status) for step in record.steps.values()]
        runs = [(run_id, status) for run_id, status in runs if run_id]
        if runs and record.tracking_uri:
            try:
                tracker = tracker or Tracker(record.tracking_uri, config.stores.artifacts)
                end_ms = int(datetime.fromisoformat(ended).timestamp() * 1000)
                for run_id, status in sorted(runs, key=lambda item: item[0] == record.mlflow_run_id):
                    tracker.end_if_running(run_id, status, end_ms)
            except TrackingError as exc:
                record.warnings.append(f"its MLflow runs could not be ended: {exc}")
        send_failure_notice(config, store, record, f"{who} ended without recording the run's end (killed?)")
        store.write(record)
        settled.append(record)
    return settled


def step_processes(config: Config, keep_warm: int = 0) -> StepProcesses:
    """Step processes for this project's kernel, preloads and logs."""
    home = config.stores.home
    return StepProcesses(adapter.ensure_kernel(home), str(home), str(home / "logs"), config.defaults.preload,
                         keep_warm, fork_kernels=True)


def _result(future: Future) -> tuple[StepOutcome, list[Attempt]]:
    """A step's outcome; an error of the runner's own around the step (its folder could not be made, its task
    not sent) fails that step rather than the run."""
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 - the step's failure, recorded with its type and message
        now = utcnow()
        error = {"ename": type(exc).__name__, "evalue": str(exc) or repr(exc), "cell_index": None}
        outcome = StepOutcome("failed", now, now, error)
        return outcome, [Attempt(number=1, status="failed", started_at=now, ended_at=now, error=StepError(**error))]


class _PipelineRun:
    """The step loop: starts the steps whose upstream succeeded, settles them, writes the record, and calls
    the run's hooks at each point of its life (:class:`runner.run.hooks.Hook`)."""

    def __init__(
        self,
        config: Config,
        plan: Plan,
        request: RunRequest,
        observer: RunObserver | None,
        stop: StopRequest,
        processes: StepProcesses,
        hooks: Sequence[Hook],
    ):
        self.config, self.plan, self.observer, self.stop, self.processes = config, plan, observer, stop, processes
        self.hooks = list(hooks)  # before_* in this order, after_* in reverse
        self.max_workers = request.max_workers or config.defaults.max_workers
        self.environment = environment.current()  # what each step process checks its own against
        self.check_environment = request.check_environment
        self.executor_name = plan.executor
        self.launcher: Launcher = processes  # where attempts run: this host's step processes, or a remote executor
        self.store = RunStore(config.stores.runs)
        self.kernel = processes.kernel_name
        run_id = new_run_id()
        workdir = self.store.workdir(plan.pipeline, run_id, config.stores.home / "staging")
        steps = {}
        for name, step in plan.steps.items():
            reused = request.reuse.get(name)
            if reused is not None:
                steps[name] = reused.model_copy(update={"reused_from": reused.reused_from or request.origin})
                continue
            steps[name] = StepRecord(
                name=name,
                notebook=_display_path(config.notebook_path(step.config), config.root),
                notebook_sha256=adapter.sha256_file(step.notebook),
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
            process=current_process(),
            steps=steps,
            environment=environment.summary(self.environment),
        )
        self.state = RunState(self.record, config, self.store, workdir,
                              {name: planned.notebook for name, planned in plan.steps.items()})
        self.workdir = workdir
        self.started = time.monotonic()
        self.step_started: dict[str, float] = {}
        self.scraps = {name: dict(step.scraps) for name, step in request.reuse.items()}
        self.running: dict[Future, str] = {}  # steps in flight
        self.written = self.final_written = False  # whether run.json exists; whether it holds the end
        self.write_failed: StoreError | None = None  # a record write of a worker thread that failed
        self.alarm: Future = Future()  # wakes the run's loop when that happens
        self._writing = threading.RLock()  # worker threads write the record too, when a step's processes start
        stop.on_started = self._record_processes

    # -- the run -------------------------------------------------------------------------------

    def execute(self) -> RunRecord:
        """Run the steps and return the final record.

        Whatever happens once every hook's ``before_run`` returned (a run store that cannot be written, MLflow
        gone, a second Ctrl-C, a bug), the run ends: its steps are stopped, its record is written as
        ``failed`` (``interrupted`` after Ctrl-C) once its hooks' ``after_run`` (MLflow runs ended FAILED or
        KILLED, failure notice, temporary files removed) are done; only then is the error raised. Before that, the
        executor is reached: one that cannot be (a Dask scheduler that does not answer) is an error, nothing recorded.
        """
        record, state = self.record, self.state
        executor = get_executor(self.executor_name, self.max_workers, self.plan.executor_options)  # reached first
        self.launcher = executor if isinstance(executor, RemoteExecutor) else self.processes
        try:
            self._before_run()
        except BaseException:
            executor.shutdown(wait=False)
            raise
        try:
            self._stop_if_asked()
            self._write()
            if self.observer:
                self.observer.run_started(record)
            self._run_steps(executor)
        except BaseException as exc:  # ended below, then raised
            if state.stopped_by is None:
                state.stopped_by = exc
        self._end()
        failure = state.stopped_by
        if failure is None:
            return record
        if isinstance(failure, RunnerError):
            raise self._stopped(failure) from failure
        raise failure

    def _before_run(self) -> None:
        """Every hook's ``before_run``; one that raises refuses the run: those before it get ``after_run``, and
        the error is raised with nothing recorded."""
        opened: list[Hook] = []
        try:
            for hook in self.hooks:
                hook.before_run(self.state)
                opened.append(hook)
        except BaseException as exc:
            self.record.status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            for hook in reversed(opened):
                hook.after_run(self.state)
            raise
        self.state.started = True

    def _stop_if_asked(self) -> None:
        """Raise the error a hook stopped the run with (:meth:`RunState.stop`)."""
        error, self.state.stopping = self.state.stopping, None
        if error is not None:
            raise error

    def _run_steps(self, executor: Executor) -> None:
        running = self.running
        try:
            while True:
                self._start_ready(executor, running)
                self._stop_if_asked()  # a hook's before_step may stop the run
                if not running:
                    break
                done, _ = wait([*running, self.alarm], timeout=HEARTBEAT_SECONDS, return_when=FIRST_COMPLETED)
                for future in done - {self.alarm}:
                    self._finish(running[future], _result(future))
                    del running[future]
                if self.write_failed is not None:
                    raise self.write_failed
                self._write()
        except KeyboardInterrupt:
            self.stop.stop()
            for future, name in list(running.items()):
                self._finish(name, _result(future))
                del running[future]
        except BaseException as exc:
            self.state.stopped_by = exc  # the running steps stop now rather than run on unrecorded
            self.stop.stop()
            raise
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
        for step in self.record.steps.values():
            if step.status == "pending":  # never started: the run was stopped (resume starts them)
                step.status = "interrupted"

    def _start_ready(self, executor: Executor, running: dict[Future, str]) -> None:
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
        self.launcher.warm(min(self.max_workers, waiting))  # ready before the next steps are

    def _start(self, executor: Executor, planned: PlannedStep) -> Future | None:
        """Start a step: resolve its parameters, call the hooks' ``before_step`` for its kernel's environment
        and send its task. A parameter that does not fit, or a hook that raises, fails it as not started."""
        record, step = self.record, self.record.steps[planned.name]
        step.started_at = utcnow()
        self.step_started[planned.name] = time.monotonic()
        try:
            parameters = self._resolve(planned)
        except ParameterError as exc:
            exc.notebook = step.notebook
            self._settle(step, "failed", StepError(ename="ParameterError", evalue=str(exc)))
            return None
        step.parameters = parameters
        env: dict[str, str] = {}
        try:
            for hook in self.hooks:
                env.update(hook.before_step(self.state, step))
        except RunnerError as exc:
            self._settle(step, "failed", StepError(ename=type(exc).__name__, evalue=f"not started: {exc}"))
            return None
        env.update(self._kernel_env(planned.name))
        step.status = "running"
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
            env=env,
            environment=self.environment if self.check_environment else {},
            preload=tuple(self.config.defaults.preload),
        )
        self._write()
        if self.observer:
            self.observer.step_started(planned.name)
        on_cell = self.observer.cell_started if self.observer else None
        on_retry = getattr(self.observer, "step_retrying", None)
        return executor.submit(run_with_retries, task, planned.config, self.launcher, on_cell, self.stop, on_retry)

    def _resolve(self, planned: PlannedStep) -> dict[str, Any]:
        """The step's parameters with every ``${...}`` resolved, coerced to its contract and recordable as JSON;
        a :class:`ParameterError` for any value that does not fit."""
        record = self.record
        context = {"as_of": record.as_of, "run_id": record.run_id, "pipeline": record.pipeline}
        resolved = {}
        for key, value in planned.parameters.items():
            try:
                resolved[key] = references.resolve(value, self.scraps, context)
            except KeyError as exc:  # a ${name} that is no value of the run (-p values are checked when planned)
                raise ParameterError(f"${{{exc.args[0]}}}: unknown reference", "", key) from None
        parameters = planned.contract.coerce(resolved)
        check_recordable(parameters, "")
        return parameters

    def _finish(self, name: str, result: tuple[StepOutcome, list[Attempt]]) -> None:
        """Record a step's outcome, let the hooks' ``after_step`` judge it (its files kept, its MLflow run
        ended), settle it; then raise the error a hook stopped the run with, if one did."""
        outcome, attempts = result
        step = self.record.steps[name]
        step.attempts = attempts
        step.scraps = outcome.scraps
        step.snapshots = list(step.scraps.get(SNAPSHOTS_SCRAP, []))
        step.models = list(step.scraps.get(MODELS_SCRAP, []))
        step.verdict = Verdict.from_scrap(step.scraps.get(VERDICT_SCRAP))
        self.scraps[name] = step.scraps
        status, error = outcome.status, StepError(**outcome.error) if outcome.error else None
        if status == "interrupted" and self.state.failed_by is not None:  # stopped by the run's failure, not a person
            status, error = "failed", self._stopped_step_error()
        produced = [self.workdir / file for file in step.outputs() if (self.workdir / file).is_file()]
        verdict = StepResult(status, error, produced)
        for hook in reversed(self.hooks):
            hook.after_step(self.state, step, verdict)
        self._settle(step, verdict.status, verdict.error)
        self._stop_if_asked()

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
        """End the run, however it went: settle its steps and its status, call the hooks' ``after_run``, and
        write its final record (a :class:`StoreError` when that cannot be done)."""
        record, state = self.record, self.state
        if state.stopped_by is not None:
            self._settle_stopped()
        statuses = [step.status for step in record.steps.values()]
        if isinstance(state.stopped_by, KeyboardInterrupt) or (
                state.stopped_by is None and ("interrupted" in statuses or self.stop.requested)):
            record.status = "interrupted"
        elif state.stopped_by is None and all(status == "succeeded" for status in statuses):
            record.status = "succeeded"
        else:
            record.status = "failed"
        if state.failed_by is not None:
            record.warnings.append(f"the run stopped: {describe(state.failed_by)}")
        record.ended_at = utcnow()
        record.duration_s = round(time.monotonic() - self.started, 3)
        for hook in reversed(self.hooks):
            hook.after_run(state)
        try:
            self._write()
            self.final_written = True
        except StoreError as exc:
            if record.status == "succeeded":  # its record says running: tell someone
                record.status = "failed"
                for hook in reversed(self.hooks):
                    hook.on_record_error(state, exc)
            state.stopped_by = state.stopped_by if isinstance(state.stopped_by, KeyboardInterrupt) else exc

    def _settle_stopped(self) -> None:
        """After the run stopped early: settle the steps that were running when it did, and those not started."""
        for future, name in list(self.running.items()):
            if future.done() and self.record.steps[name].status == "running":
                with contextlib.suppress(RunnerError):  # settled first; the run's failure is reported already
                    self._finish(name, _result(future))
        interrupted = isinstance(self.state.stopped_by, KeyboardInterrupt)
        for step in self.record.steps.values():
            if step.status == "running":  # its outcome never came
                self._settle(step, "interrupted" if interrupted else "failed",
                             StepError(ename="Interrupted", evalue="the run was interrupted again while its steps "
                                       "were stopped") if interrupted else self._stopped_step_error())
            elif step.status == "pending":  # never started (resume starts it)
                step.status = "interrupted"

    def _stopped_step_error(self) -> StepError:
        cause = self.state.stopped_by
        return StepError(ename=type(cause).__name__, evalue=f"the run stopped before this step finished: "
                                                            f"{describe(cause)}")

    def _stopped(self, cause: RunnerError) -> RunnerError:
        """The one line that says why the run stopped, where its record is and what to do."""
        record = self.record
        path = self.store.record_path(record.pipeline, record.run_id)
        if not self.written:
            where = f"run {record.run_id} has no record, nothing ran: {WRITABLE}"
        elif not self.final_written:
            where = (f"run {record.run_id} could not record its end: {path} still says running (`runner runs` shows "
                     f"it as interrupted once this process is gone); {WRITABLE}, then `runner resume {record.run_id}`")
        else:
            where = (f"run {record.run_id} stopped and is recorded as {record.status} in {path}; "
                     f"`runner resume {record.run_id}` once that is fixed")
        kind = StoreError if isinstance(cause, StoreError) else TrackingError if isinstance(cause, TrackingError) \
            else RunnerError
        return kind(f"{cause}; {where}")

    # -- helpers -------------------------------------------------------------------------------

    def _write(self) -> None:
        with self._writing:
            self.record.process.heartbeat_at = utcnow()
            self.store.write(self.record)
            self.written = True

    def _record_processes(self, step: str, processes: list[dict[str, Any]]) -> None:
        """A step's process and its kernel, in the record as soon as they start: the pipeline's lock is
        not recovered while one of them lives (:meth:`runner.store.locks.PipelineLock.survivors`)."""
        with self._writing:
            children = self.record.process.children
            known = {(child.pid, child.pid_started) for child in children}
            new = [ChildProcess(step=step, **process) for process in processes
                   if (process["pid"], process["pid_started"]) not in known]
            if new:
                children.extend(new)
                try:
                    self._write()
                except StoreError as exc:  # a worker thread: the run's loop stops the run
                    self.write_failed = self.write_failed or exc
                    if not self.alarm.done():
                        self.alarm.set_result(None)

    def _kernel_env(self, step: str) -> dict[str, str]:
        """The run's context in the step kernel's environment (the hooks add theirs: MLflow's run)."""
        record = self.record
        return {
            **self.config.stores.env(),
            "RUNNER_CONFIG": str(self.config.source),
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
