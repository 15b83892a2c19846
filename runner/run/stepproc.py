"""Run one step in a process of its own.

Each step runs as ``python -m runner.run.stepproc`` with its :class:`StepTask` on stdin. The child
sets the kernel's environment (``MLFLOW_RUN_ID`` and the run context), enforces the step's
deadline with a timer signal, executes the notebook through :mod:`runner.notebook.adapter`, renders
its HTML and reports JSON events on stdout: one per cell started, then one result. Everything
else it prints goes to the step's log file.

A process per step keeps environments apart when steps run in parallel, lets a deadline or a
stop request end a step cleanly (the kernel is shut down on the way out), and, as a backstop,
lets the parent kill the whole process tree of a step that does not stop.

Step processes, like kernels, are forked from the runner's fork server once it has imported what
they need (:mod:`runner.notebook.forkserver`), and start as ``python -m runner.run.stepproc`` until
then: the same code, from ``main``, either way.

A step process dies with its runner. It runs in a session of its own (Ctrl-C on the runner must
not reach it) and its kernel in another, so nothing would end them when the runner is killed
(SIGKILL, the OOM killer): the step would run on and commit what it writes. So a step process
watches the runner that started it (:func:`_die_with_runner`) and, once it is gone, kills its
kernel's whole process tree with SIGKILL, leaving the kernel's open transaction uncommitted, and
exits. It tells the runner the pids of its kernel (event ``processes``), which the run records so
that its pipeline's lock is not recovered while one of them lives (:mod:`runner.store.locks`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from runner.notebook import forkserver

GRACE_SECONDS = 20.0  # after a deadline or stop request, how long a step gets before it is killed
RUNNER_PID = "RUNNER_STEP_PARENT"  # in a step process's environment: the pid of the runner it must die with
MODULE = "runner.run.stepproc"  # this module, also when it runs as __main__
TITLE = [sys.executable, "-m", MODULE]  # a step process's command line, however it was started
Process = subprocess.Popen | forkserver.Forked  # a step process's handle, however it was started


@dataclass(frozen=True)
class StepTask:
    run_id: str
    pipeline: str
    step: str
    notebook: str
    output: str
    html: str
    log: str
    parameters: dict[str, Any]
    kernel_name: str
    jupyter_path: str
    cwd: str
    cell_timeout: float | None = None
    timeout: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)  # the run's (runner.run.environment); {}: unchecked
    preload: tuple[str, ...] = ()  # the project's defaults.preload: a Dask worker's fork server imports them


@dataclass(frozen=True)
class StepOutcome:
    status: str  # succeeded | failed | interrupted
    started_at: str
    ended_at: str
    error: dict[str, Any] | None = None
    scraps: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # what the attempt left: {"output"|"html"|"log": file name}
    worker: str | None = None  # where it ran, when not on the runner's host (an executor's worker)


OUTPUTS = ("output", "html", "log")  # the files of a step attempt, as fields of StepTask


def files_left(task: StepTask) -> dict[str, str]:
    """The files of ``task`` that are there, by field: ``{"output": "score.ipynb", ...}``."""
    return {name: os.path.basename(path) for name in OUTPUTS if os.path.isfile(path := getattr(task, name))}


class Launcher(Protocol):
    """Where a step's attempts run; a thread of the runner waits on each one (:mod:`runner.run.retries`).

    :class:`StepProcesses` runs them on this host; an executor whose steps run on other machines is one too
    (:class:`runner.run.executors.RemoteExecutor`).
    """

    def attempt(self, task: StepTask, on_cell: CellProgress | None, stop: StopRequest) -> StepOutcome:
        """Run ``task`` once and say how it went (never raises for a failing step)."""

    def rename(self, task: StepTask, name: str, new_name: str) -> None:
        """Rename a file an attempt left in the step's run folder (a failed attempt's, set aside for the next)."""

    def warm(self, count: int) -> None:
        """Have ``count`` attempts' processes ready ahead of need, where that helps."""


CellProgress = Callable[[str, int, int], None]  # (step, cell index, number of cells)
# (step, processes): a step's process or kernel started; each is {"pid", "pid_started", "role", "host"}
ProcessesStarted = Callable[[str, list[dict[str, Any]]], None]


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class StopRequest:
    """Lets the pipeline ask every running step process to stop (SIGTERM), then kill it.

    ``drain`` is the gentle form: no new step (or retry) starts, running steps may finish.
    Being the run's handle on its step processes, it also passes on which processes the run's
    steps started (:meth:`started`) to ``on_started``: the pipeline records them for its lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: set[Process] = set()
        self._backstops: dict[Process, threading.Timer] = {}
        self.requested = False
        self.stopping = threading.Event()  # set by drain or stop; waits between retries end early
        self.on_started: ProcessesStarted | None = None

    def started(self, step: str, processes: list[dict[str, Any]]) -> None:
        if processes and self.on_started is not None:
            self.on_started(step, processes)

    @property
    def draining(self) -> bool:
        return self.stopping.is_set()

    def drain(self) -> None:
        self.stopping.set()

    def attach(self, proc: Process) -> None:
        with self._lock:
            self._procs.add(proc)
            stop_now = self.requested
        if stop_now:
            _signal(proc, signal.SIGTERM)

    def detach(self, proc: Process) -> None:
        with self._lock:
            self._procs.discard(proc)
            backstop = self._backstops.pop(proc, None)
        if backstop is not None:
            backstop.cancel()  # it ended in time; its pid may be reused later

    def kill(self) -> None:
        """End every step process now, with its kernel (SIGKILL: what a kernel has not committed, it never will)."""
        self.stopping.set()
        with self._lock:
            self.requested = True
            procs = list(self._procs)
        for proc in procs:
            kill_tree(proc.pid, grace=0)

    def stop(self) -> None:
        self.stopping.set()
        with self._lock:
            self.requested = True
            procs = list(self._procs)
        for proc in procs:
            _signal(proc, signal.SIGTERM)
            backstop = threading.Timer(GRACE_SECONDS, kill_tree, [proc.pid])
            backstop.daemon = True  # never keeps the runner alive after its steps ended
            with self._lock:
                self._backstops[proc] = backstop
            backstop.start()


def _signal(proc: Process, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signum)


def _identities(pids: list[int], role: str) -> list[dict[str, Any]]:
    """``{"pid", "pid_started", "role", "host"}`` of the processes among ``pids`` that are alive."""
    import psutil

    found = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            found.append({"pid": pid, "pid_started": psutil.Process(pid).create_time(), "role": role,
                          "host": socket.gethostname()})
    return found


def kill_tree(pid: int, grace: float = 3.0) -> None:
    """Kill a process and everything it started (kernels run in sessions of their own):
    SIGTERM, then SIGKILL for what is still alive after ``grace`` seconds (at once if 0)."""
    import psutil

    try:
        parent = psutil.Process(pid)
        procs = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        return
    for proc in procs if grace else ():
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace) if grace else ([], procs)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


class StepProcesses:
    """Step processes started ahead of need, so their imports overlap with other work.

    A step process imports papermill and starts its kernel (seconds) before it knows its step;
    starting it while the runner sets up MLflow, or while the previous step runs, takes that off
    the critical path. Its stderr (and its kernel's) goes to a log file that becomes the step's.
    With ``fork_kernels``, a fork server imports once what step processes and kernels need and
    both are forked from it. A process started ahead starts in a thread of its own (:class:`_Starting`),
    since a fork waits while the server imports.
    """

    def __init__(
        self,
        kernel_name: str,
        jupyter_path: str,
        log_dir: str,
        preload: tuple[str, ...] = (),
        keep_warm: int = 0,
        fork_kernels: bool = False,
    ) -> None:
        self.kernel_name, self.jupyter_path, self.log_dir = kernel_name, jupyter_path, log_dir
        self.preload = preload
        self.keep_warm = keep_warm  # processes kept ready between runs (replay, scheduler)
        self.fork_kernels = fork_kernels  # kernels come from a fork server that imported the preloads once
        self._forkserver: forkserver.ForkServer | None = None
        self._lock = threading.RLock()
        self._idle: list[_Starting] = []
        self._logs: dict[int, str] = {}  # pid -> log file of a process not yet given a step

    @classmethod
    def for_task(cls, task: StepTask) -> StepProcesses:
        return cls(task.kernel_name, task.jupyter_path, os.path.dirname(task.log))

    def warm(self, count: int) -> None:
        with self._lock:
            while len(self._idle) < count:
                self._idle.append(_Starting(self._spawn))

    def take(self) -> Process:
        proc = None
        while proc is None:
            with self._lock:
                if not self._idle:
                    break
                starting = self._idle.pop(0)
            candidate = starting.result()  # None: it could not start; the one started below says why
            if candidate is not None:
                with self._lock:
                    self._logs.pop(candidate.pid, None)  # a step's process adopts its log
                proc = candidate if candidate.poll() is None else None
        self.warm(self.keep_warm)
        return proc or self._spawn()

    def _spawn(self) -> Process:
        os.makedirs(self.log_dir, exist_ok=True)
        with self._lock:
            if self.fork_kernels and self._forkserver is None:
                # what a step process imports and prepares (papermill, nbconvert's page), then the kernels' preloads
                self._forkserver = forkserver.ForkServer(self.preload, os.path.join(self.log_dir, "kernels.log"),
                                                         processes=(MODULE, "runner.notebook.adapter:preload"))
        # a session of its own either way: Ctrl-C on the runner reaches us, not the step; we stop it
        proc = None
        if self._forkserver is not None:
            log = self._new_log()
            with open(log, "ab") as stderr:
                proc = self._forkserver.fork(f"{MODULE}:main", TITLE, self._env(log), stderr)
            if proc is None:  # a child the server forks late finds its pipes closed, and no log to remove
                os.unlink(log)
        if proc is None:
            log = self._new_log()
            with open(log, "ab") as stderr:
                proc = subprocess.Popen(TITLE, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                        env=self._env(log), start_new_session=True)
        with self._lock:
            self._logs[proc.pid] = log
        return proc

    def _new_log(self) -> str:
        return os.path.join(self.log_dir, f"step-{uuid.uuid4().hex}.log")

    def _env(self, log: str) -> dict[str, str]:
        """A step process's environment: the runner's, its fork server, its kernel and log, the runner to die with."""
        return {
            **os.environ,
            **(self._forkserver.env if self._forkserver is not None else {}),
            "RUNNER_KERNEL_NAME": self.kernel_name,
            "RUNNER_STEP_LOG": log,
            "RUNNER_KERNEL_PRELOAD": json.dumps(list(self.preload)),
            RUNNER_PID: str(os.getpid()),
            "JUPYTER_PATH": os.pathsep.join(filter(None, [self.jupyter_path, os.environ.get("JUPYTER_PATH")])),
        }

    def attempt(self, task: StepTask, on_cell: CellProgress | None, stop: StopRequest) -> StepOutcome:
        return run_step(task, on_cell, stop, self)

    def rename(self, task: StepTask, name: str, new_name: str) -> None:
        folder = os.path.dirname(task.output)
        os.replace(os.path.join(folder, name), os.path.join(folder, new_name))

    def close(self) -> None:
        """End the idle processes and their kernels: they never got a step, so nothing of them is
        needed, and stopping them outright lets an early error (a bad parameter) return at once."""
        with self._lock:
            idle, self._idle = self._idle, []
        for proc in filter(None, (starting.result() for starting in idle)):
            kill_tree(proc.pid, grace=0)
            proc.wait()
            with contextlib.suppress(OSError):
                os.unlink(self._logs.pop(proc.pid, ""))
        with self._lock:
            server, self._forkserver = self._forkserver, None
        if server is not None:
            server.close()  # the kernels it forked run on, each until its step process ends


class _Starting:
    """A step process being started ahead, in a thread of its own: :meth:`result` waits for it."""

    def __init__(self, spawn: Callable[[], Process]) -> None:
        self._proc: Process | None = None
        self._thread = threading.Thread(target=self._start, args=(spawn,), name="runner-step-start", daemon=True)
        self._thread.start()

    def _start(self, spawn: Callable[[], Process]) -> None:
        with contextlib.suppress(Exception):  # StepProcesses.take starts another in its own thread, which raises
            self._proc = spawn()

    def result(self) -> Process | None:
        self._thread.join()
        return self._proc


def run_step(
    task: StepTask,
    on_cell: CellProgress | None = None,
    stop: StopRequest | None = None,
    processes: StepProcesses | None = None,
) -> StepOutcome:
    """Run ``task`` in a step process and return how it went. Never raises for a failing step."""
    started = utcnow()
    os.makedirs(os.path.dirname(task.output), exist_ok=True)
    proc = (processes or StepProcesses.for_task(task)).take()
    backstop = None
    if task.timeout:
        backstop = threading.Timer(task.timeout + GRACE_SECONDS, kill_tree, [proc.pid])
        backstop.daemon = True
        backstop.start()
    if stop is not None:
        stop.attach(proc)
        stop.started(task.step, _identities([proc.pid], "step process"))
    result: dict[str, Any] | None = None
    try:
        assert proc.stdin is not None and proc.stdout is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(json.dumps(asdict(task)).encode())
            proc.stdin.close()
        for line in proc.stdout:
            event = json.loads(line)
            if event["event"] == "cell" and on_cell is not None:
                on_cell(task.step, event["index"], event["total"])
            elif event["event"] == "processes" and stop is not None:
                stop.started(task.step, event["processes"])
            elif event["event"] == "result":
                result = event
        code = proc.wait()
    finally:
        if backstop is not None:
            backstop.cancel()
        if stop is not None:
            stop.detach(proc)
        if proc.poll() is None:
            kill_tree(proc.pid)
    from runner.secrets import Redactor

    redactor = Redactor.for_parameters(task.parameters)
    redactor.file(task.log)  # what the step process and its kernel wrote, secrets and URL credentials masked
    if result is None and stop is not None and stop.requested:
        error = {"ename": "Interrupted", "cell_index": None,
                 "evalue": f"the run was stopped while this step was starting; see {task.log}"}
        return StepOutcome("interrupted", started, utcnow(), error, files=files_left(task))
    if result is None:
        why = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        error = {
            "ename": "StepProcessDied",
            "evalue": f"the step's process ended without a result ({why}); see {task.log}",
            "cell_index": None,
        }
        return StepOutcome("failed", started, utcnow(), error, files=files_left(task))
    return StepOutcome(result["status"], started, utcnow(), redactor.value(result["error"]),
                       redactor.value(result.get("scraps", {})), files_left(task))


def _child() -> int:
    """The step process: import while waiting for a task, then execute it and report."""
    import traceback

    if os.environ.get(RUNNER_PID):
        _die_with_runner(int(os.environ[RUNNER_PID]))  # first: the runner may die while we import
    events = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever else prints goes to the log, not into our event stream

    def emit(**event: Any) -> None:
        events.write(json.dumps(event) + "\n")

    kernel = broken = None
    reported: set[int] = set()
    try:
        from runner.notebook.grammars import defer_iri_grammars

        defer_iri_grammars()  # before papermill imports jsonschema
        from runner.errors import StepFailed
        from runner.notebook import adapter
    except Exception:  # reported once a task arrives, in the step's log, where one looks
        broken = traceback.format_exc()
    else:
        try:
            kernel = adapter.Kernel(os.environ["RUNNER_KERNEL_NAME"])
            adapter.preload()  # while the kernel starts and the runner sets up the run
            kernel.preload(json.loads(os.environ.get("RUNNER_KERNEL_PRELOAD", "[]")))
        except Exception:  # papermill starts one when the step arrives
            traceback.print_exc()
    with contextlib.suppress(BrokenPipeError):  # the runner is gone; we follow it
        reported = _report_processes(emit, set())  # the warm kernel, recorded once we get a step
    from runner.run.environment import current

    here = current()  # read while waiting for a step, not after one arrived
    raw = sys.stdin.read()
    if not raw.strip():  # a warm process that was not needed
        if kernel is not None:
            kernel.shutdown()
        with contextlib.suppress(FileNotFoundError):  # a process forked too late: its log was removed
            os.unlink(os.environ["RUNNER_STEP_LOG"])
        return 0
    task = StepTask(**json.loads(raw))
    _adopt_log(os.environ["RUNNER_STEP_LOG"], task.log)

    if broken is not None:
        print(broken, file=sys.stderr)
        emit(event="result", status="failed", error={"ename": "ImportError", "evalue": broken.splitlines()[-1],
                                                     "cell_index": None})
        return 1
    if task.environment:
        from runner.run.environment import mismatch

        if (why := mismatch(task.environment, here)) is not None:  # before the notebook runs on other code
            print(why, file=sys.stderr)
            emit(event="result", status="failed", error={"ename": "EnvironmentMismatch", "evalue": why,
                                                         "cell_index": None})
            return 1

    def stop_with(ename: str, evalue: str) -> Callable[[int, Any], None]:
        def handler(signum: int, frame: Any) -> None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            raise adapter.StopExecution(ename, evalue)

        return handler

    os.chdir(task.cwd)
    os.environ.update(task.env)
    if kernel is not None:
        try:
            kernel.prepare(task.env, task.cwd)
        except Exception:  # papermill starts a kernel of its own instead
            traceback.print_exc()
            kernel.shutdown()
            kernel = None
    signal.signal(signal.SIGTERM, stop_with("Interrupted", "the run was stopped before this step finished"))
    if task.timeout:
        deadline = f"the step ran longer than its timeout of {task.timeout:g}s; raise 'timeout:' on the step or make it faster"
        signal.signal(signal.SIGALRM, stop_with("StepTimeout", deadline))
        signal.setitimer(signal.ITIMER_REAL, task.timeout)
    status, error, scraps = "succeeded", None, {}

    cells_started = []

    def on_cell(index: int, total: int) -> None:
        if not cells_started:  # the kernel that runs the notebook exists now, whoever started it
            reported.update(_report_processes(emit, reported))
        cells_started.append(index)
        emit(event="cell", index=index, total=total)

    try:
        adapter.execute(
            task.notebook,
            task.output,
            task.parameters,
            kernel_name=task.kernel_name,
            cwd=task.cwd,
            cell_timeout=task.cell_timeout,
            on_cell=on_cell,
            kernel=kernel,
        )
    except StepFailed as exc:
        status = "interrupted" if exc.ename == "Interrupted" else "failed"
        error = {"ename": exc.ename, "evalue": exc.evalue, "cell_index": exc.cell_index}
        if exc.cell is not None:
            error.update(execution_count=exc.cell.execution_count, code_cell=exc.cell.code_cell,
                         cell_source_first_line=exc.cell.first_line, cell_id=exc.cell.cell_id)
    except Exception as exc:  # the notebook engine itself broke; report it as the step's failure
        status, error = "failed", {"ename": type(exc).__name__, "evalue": str(exc), "cell_index": None}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # The kernel shuts down (a second or more) while the page renders.
    stopping = threading.Thread(target=kernel.shutdown) if kernel is not None else None
    if stopping is not None:
        stopping.start()
    if os.path.isfile(task.output):
        try:
            adapter.render_html(task.output, task.html)
        except Exception as exc:  # a page we cannot render must not hide the step's own result
            print(f"could not render {task.output} to HTML: {exc}", file=sys.stderr)
        try:
            scraps = adapter.read_scraps(task.output)
        except Exception as exc:
            print(traceback.format_exc(), file=sys.stderr)
            if status == "succeeded":
                status, error = "failed", {"ename": "ScrapError", "evalue": f"could not read scraps: {exc}",
                                           "cell_index": None}
    if stopping is not None:
        stopping.join()
    emit(event="result", status=status, error=error, scraps=scraps)
    events.close()  # the runner reads the end of our events, and waits for this process to end: at once
    return 0


def quick_exit(code: int) -> None:
    """End this process now, after the ``atexit`` handlers and flushing stdout and stderr, without the
    interpreter's teardown of every module (most of a second once MLflow, pandas and papermill are imported).

    For a process whose work is done and recorded; with threads other than daemons still running it exits the
    normal way, which waits for them."""
    import atexit

    if any(thread.is_alive() and not thread.daemon for thread in threading.enumerate()
           if thread is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()  # what the program asked to run at exit (e.g. MLflow flushing), then no teardown
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or its reader is gone
            pass
    os._exit(code)


def _report_processes(emit: Callable[..., None], reported: set[int]) -> set[int]:
    """Tell the runner of this process's descendants (its kernel) it was not told of yet; returns their pids."""
    import psutil

    pids = [proc.pid for proc in _descendants() if proc.pid not in reported]
    found = _identities(pids, "kernel")
    if found:
        emit(event="processes", processes=found)
    return {process["pid"] for process in found}


def _descendants() -> list[Any]:
    """The processes this one started, as psutil sees them, with the kernels it had forked
    (:mod:`runner.notebook.forkserver`: not its children) and what those started."""
    import psutil

    found = []
    with contextlib.suppress(psutil.Error):
        found += psutil.Process().children(recursive=True)
    for pid in forkserver.forked_pids():
        with contextlib.suppress(psutil.Error):
            kernel = psutil.Process(pid)
            found += [kernel, *kernel.children(recursive=True)]
    return found


def _die_with_runner(runner: int) -> None:
    """End this step process, with its kernel, as soon as the runner (pid ``runner``) is gone: a thread waits
    on the runner's pidfd (its parent or not: a forked step process is the fork server's child), which is
    readable at once when the runner died before this process got here."""
    forkserver.on_exit(runner, lambda: _orphaned(runner), "runner-watch")


def _orphaned(runner: int) -> None:
    """The runner died: SIGKILL the kernel and everything it started, at once, and exit.

    SIGKILL, not a shutdown request: the kernel's open transaction (a predictions write, say) must
    end uncommitted, and sqlite and PostgreSQL roll back what a vanished process left open. A kernel
    leads a process group (jupyter_client starts it in a session of its own), so one signal to the
    group ends it and what it started; each descendant found is killed too, for those that left it.
    """
    import psutil

    forked = set(forkserver.forked_pids())
    tree = _descendants()
    for proc in tree:
        with contextlib.suppress(OSError, psutil.Error):
            if (proc.pid in forked or proc.ppid() == os.getpid()) and os.getpgid(proc.pid) == proc.pid:
                os.killpg(proc.pid, signal.SIGKILL)
    for proc in tree:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    with contextlib.suppress(OSError, KeyError):
        os.unlink(os.environ["RUNNER_STEP_LOG"])  # still there: this process never got a step
    with contextlib.suppress(Exception):
        print(f"the runner (pid {runner}) is gone: killed this step's kernel and its processes "
              f"({', '.join(str(proc.pid) for proc in tree) or 'none'}) and exited", file=sys.stderr, flush=True)
    os._exit(1)


def _adopt_log(warm_log: str, step_log: str) -> None:
    """Make the warm process's log (which its kernel writes to as well) the step's log."""
    if not os.path.exists(step_log):
        os.replace(warm_log, step_log)  # open descriptors follow the file
        return
    with open(warm_log, "rb") as source, open(step_log, "ab") as target:
        target.write(source.read())
    os.unlink(warm_log)
    log = os.open(step_log, os.O_WRONLY | os.O_APPEND)
    os.dup2(log, 1)
    os.dup2(log, 2)


def main() -> None:
    """The step process, started as ``python -m runner.run.stepproc`` or forked from the fork server."""
    quick_exit(_child())


if __name__ == "__main__":
    main()
