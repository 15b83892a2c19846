"""The ``dask`` executor: each step attempt runs on a worker of a Dask cluster (``distributed``).

On the runner's host, a thread per running step submits one attempt at a time and waits for it; retries are
decided there (:mod:`runner.run.retries`), so a retry goes back to the cluster and runs wherever it has room.
What a worker needs travels with the attempt: the notebook's bytes as recorded for the run, its coerced
parameters, the run's context and the locations of its stores (:meth:`runner.config.Stores.env`). The project's
other files (runner.yaml, the dictionary, modules beside the notebooks) are packed once per version and kept in
the run store (:mod:`runner.run.bundle`), where every worker reaches them: a worker's death loses nothing a
retry needs. On the worker the attempt runs as on one machine, in a step process of its own with its own kernel
(:mod:`runner.run.stepproc`), and the worker puts the executed notebook, its page and its log into the run
store. No folder is shared between the runner and the workers unless the project says so
(``shared_filesystem: true``).

Failures across machines:

* A worker that dies takes its step process and kernel with it (they die with their parent), so an open
  transaction is rolled back. Dask would quietly run the attempt again elsewhere; the attempt notices that it
  started before (a ``distributed.Event`` named after it) and reports ``StepProcessDied`` instead, so the
  step's ``retries`` decide, and the record says which worker was lost (from the scheduler's event log).
* A stop request (Ctrl-C, SIGTERM on the runner) sets a ``distributed.Event`` the worker watches: the step
  process is stopped as on one machine. A runner that dies loses its client; the scheduler then cancels its
  attempts and the worker kills their step processes at once, uncommitted.

``distributed`` is imported only when this executor is used (``pip install 'notebook-runner[dask]'``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from runner.config import ENV_CONFIG, ENV_HOME, ENV_RUN_STORE, Config, parse_duration
from runner.errors import ConfigError, ExecutorError, RunnerError
from runner.run import bundle
from runner.run.remote import RemoteExecutor
from runner.run.stepproc import CellProgress, StepOutcome, StepProcesses, StepTask, StopRequest, run_step, utcnow
from runner.store.records import RunStore

OPTIONS = {
    "address": "the Dask scheduler's address, e.g. tcp://scheduler:8786 (--address overrides)",
    "shared_filesystem": "true when every worker mounts the project's store folders at the same paths",
    "connect_timeout": "how long to wait for the scheduler: seconds or '30s' (default 10s)",
}
POLL_SECONDS = 0.5  # how often the runner's thread looks at a stop request while its attempt runs
SCHEDULER_LOST_SECONDS = 60.0  # the runner gives up on an attempt once its scheduler is away this long
EVENTS = "notebook-runner"  # the scheduler's event log topic where each attempt says which worker runs it
DIED = "StepProcessDied"  # a dead_kernel failure for the step's retries (runner.run.retries.KINDS)


@dataclass(frozen=True)
class RemoteStep:
    """One attempt, as sent to a worker: everything it needs, nothing of the runner's host."""

    task: StepTask  # paths as on the runner's host; rebased onto the worker's copy of the project
    notebook: bytes  # the notebook as recorded for the run
    project: str  # digest of the project bundle sent with it
    root: str  # the project's folder on the runner's host


class DaskExecutor(RemoteExecutor):
    """Steps on a Dask cluster, reached at ``address``."""

    def __init__(self, max_workers: int, address: str | None = None, shared_filesystem: bool = False,
                 connect_timeout: Any = 10):
        super().__init__(max_workers, "dask")
        if not address:
            raise ExecutorError("executor 'dask' needs its scheduler's address: executors.dask.address in runner.yaml "
                                "or --address tcp://host:8786")
        try:
            from distributed import Client
        except ImportError as exc:
            raise ExecutorError("executor 'dask' needs distributed: pip install 'notebook-runner[dask]'") from exc
        self.address = address
        try:
            self.client = Client(address, timeout=parse_duration(connect_timeout), set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ExecutorError(f"could not reach the Dask scheduler at {address}: {exc}; start it (`dask scheduler`) "
                                "or fix executors.dask.address in runner.yaml (or --address)") from None
        self._bundles: dict[str, str] = {}  # project root -> digest of its files, kept in the run store
        self._lock = threading.Lock()

    @classmethod
    def check(cls, config: Config, options: Mapping[str, Any]) -> None:
        """Known options, an address, and stores that a worker on another machine can reach."""
        for name in options:
            if name not in OPTIONS:
                raise ConfigError(f"executor 'dask' has no option {name!r}; its options: "
                                  + "; ".join(f"{key}: {meaning}" for key, meaning in OPTIONS.items()),
                                  str(config.source), f"executors.dask.{name}")
        if not options.get("address"):
            raise ConfigError("executor 'dask' needs its scheduler's address: set executors.dask.address "
                              "(e.g. tcp://scheduler:8786) or pass --address", str(config.source), "executors.dask.address")
        if options.get("shared_filesystem") is True:
            return
        local = [f"{what} ({where})" for what, where in _local_stores(config)]
        if local:
            raise ConfigError(f"the Dask workers cannot reach stores in this machine's folders: {', '.join(local)}; "
                              "give each a URL every worker reaches (stores in runner.yaml or RUNNER_* variables: "
                              "postgresql://, http:// for MLflow, s3:// for the run store and snapshots), or set "
                              "executors.dask.shared_filesystem: true if every worker mounts them at the same paths "
                              "(docs/guides/deployment.md)", str(config.source), "executors.dask")

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait=wait, cancel_futures=cancel_futures)
        with contextlib.suppress(Exception):  # a scheduler already gone has nothing to close
            self.client.close()

    def attempt(self, task: StepTask, on_cell: CellProgress | None, stop: StopRequest) -> StepOutcome:
        """Run one attempt on a worker and wait for it; a stop request is passed on to the worker."""
        from distributed import Event

        started = utcnow()
        root = str(Path(task.env[ENV_CONFIG.name]).parent)
        try:
            digest = self._bundle(task, root)
            notebook = Path(task.notebook).read_bytes()
        except (RunnerError, OSError) as exc:
            return _failed(started, type(exc).__name__, f"not sent to the cluster: {exc}")
        key = f"runner-{task.pipeline}-{task.run_id}-{task.step}-{uuid.uuid4().hex[:8]}"
        future = self.client.submit(run_on_worker, RemoteStep(task, notebook, digest, root), key=key, pure=False)
        try:
            return self._wait(future, key, stop, started)
        finally:
            with contextlib.suppress(Exception):  # the scheduler may be gone; its state went with it
                for event in ("started", "stop"):
                    Event(f"{key}-{event}", client=self.client).clear()
            future.release()

    def _wait(self, future: Any, key: str, stop: StopRequest, started: str) -> StepOutcome:
        from distributed import CancelledError, Event
        from distributed.scheduler import KilledWorker

        stop_event = Event(f"{key}-stop", client=self.client)
        signalled, away_since = False, None
        while True:
            try:
                return future.result(timeout=POLL_SECONDS)
            except TimeoutError:
                pass
            except (KilledWorker, CancelledError) as exc:  # Dask gave up on it: its workers died, or the scheduler did
                lost = _lost_worker(self.client, key)
                return _failed(started, DIED, f"the Dask worker {lost} was lost while it ran this step, and the step's "
                               "process and kernel with it" if lost else f"Dask gave up on this step: "
                               f"{type(exc).__name__} {exc}", worker=lost)
            except Exception as exc:  # noqa: BLE001 - what the worker raised around the step, as its failure
                return _failed(started, type(exc).__name__, f"on the Dask worker: {exc}")
            if stop.requested and not signalled:
                with contextlib.suppress(Exception):
                    stop_event.set()
                    signalled = True
            if self.client.status == "running":
                away_since = None
            elif (away_since := away_since or time.monotonic()) < time.monotonic() - SCHEDULER_LOST_SECONDS:
                return _failed(started, DIED, f"lost the Dask scheduler at {self.address} for "
                                              f"{SCHEDULER_LOST_SECONDS:g}s while this step ran")

    def _bundle(self, task: StepTask, root: str) -> str:
        """The digest of the files of the project in ``root``, packed once per run and kept in the run store for
        the workers."""
        with self._lock:
            if root not in self._bundles:
                packed = bundle.pack(Path(root), exclude=(Path(task.env[ENV_HOME.name]),))
                RunStore(task.env[ENV_RUN_STORE.name]).keep_project(packed.digest, packed.data)
                self._bundles[root] = packed.digest
            return self._bundles[root]



# -- on the worker -------------------------------------------------------------------------------------------

_PROCESSES: dict[tuple[str, str, tuple[str, ...]], StepProcesses] = {}  # per worker process: kept warm
_PROCESSES_LOCK = threading.Lock()


def run_on_worker(step: RemoteStep) -> StepOutcome:
    """Run one attempt here, on a Dask worker, and put its files into the run store."""
    from distributed import Event, get_worker
    from runner.notebook import adapter

    worker = get_worker()
    key = worker.get_current_task()
    here = f"{worker.address} on {socket.gethostname()}"
    started = utcnow()
    first = Event(f"{key}-started")
    if first.is_set():  # Dask runs an attempt again when its worker died: the step's retries decide instead
        lost = _lost_worker(worker.client, key) or "that ran it"
        return _failed(started, DIED, f"the Dask worker {lost} was lost while it ran this step (its process died or "
                                      "it left the cluster), and the step's process and kernel with it", worker=lost)
    first.set()
    worker.log_event(EVENTS, {"attempt": key, "worker": here})
    task = step.task
    store = RunStore(task.env[ENV_RUN_STORE.name])
    scratch = Path(os.environ.get("RUNNER_WORKER_HOME") or worker.local_directory) / "notebook-runner"
    project = bundle.unpack(step.project, lambda: store.project(step.project), scratch / "projects")
    home = scratch / "home"
    kernel = adapter.ensure_kernel(home)

    def rebased(path: str) -> str:
        try:
            return str(project / Path(path).relative_to(step.root))
        except ValueError:  # outside the project: as given (a shared folder)
            return path

    workdir = store.workdir(task.pipeline, task.run_id, scratch / "staging")
    notebook = scratch / "notebooks" / f"{key}.ipynb"
    notebook.parent.mkdir(parents=True, exist_ok=True)
    notebook.write_bytes(step.notebook)
    local = replace(
        task, notebook=str(notebook), kernel_name=kernel, jupyter_path=str(home), cwd=rebased(task.cwd),
        **{name: str(workdir / os.path.basename(getattr(task, name))) for name in ("output", "html", "log")},
        env={**task.env, ENV_CONFIG.name: rebased(task.env[ENV_CONFIG.name]), ENV_HOME.name: str(home)},
    )
    stop, done = StopRequest(), threading.Event()
    watcher = threading.Thread(target=_watch, args=(worker, key, Event(f"{key}-stop"), stop, done),
                               name=f"runner-watch-{task.step}", daemon=True)
    watcher.start()
    try:
        outcome = run_step(local, None, stop, _processes(kernel, home, scratch / "logs", tuple(task.preload)))
    finally:
        done.set()
        notebook.unlink(missing_ok=True)
    for name in outcome.files.values():  # nothing to do when the run store is a shared folder
        store.put(str(workdir / name), task.pipeline, task.run_id)
    return replace(outcome, worker=here)


def _processes(kernel: str, home: Path, logs: Path, preload: tuple[str, ...]) -> StepProcesses:
    """This worker's step processes for a project's preloads, one kept ready (imports done, kernel started) for the
    next attempt; their fork server imports the preloads the runner sent (``defaults.preload``)."""
    with _PROCESSES_LOCK:
        found = _PROCESSES.get((kernel, str(home), preload))
        if found is None:
            found = _PROCESSES[(kernel, str(home), preload)] = StepProcesses(
                kernel, str(home), str(logs), preload, keep_warm=1, fork_kernels=True)
        return found


def _watch(worker: Any, key: str, stop_event: Any, stop: StopRequest, done: threading.Event) -> None:
    """Stop the attempt when the runner asks (its event), kill it at once when the runner is gone (its client
    lost: the scheduler cancelled the attempt)."""
    while not done.is_set():
        with contextlib.suppress(Exception):  # the scheduler away for a moment: look again
            if stop_event.wait(timeout=1):
                stop.stop()
                return
        task = worker.state.tasks.get(key)
        if not done.is_set() and (task is None or task.state == "cancelled"):
            stop.kill()
            return


def _lost_worker(client: Any, key: str) -> str | None:
    """The worker an attempt said it started on (the scheduler's event log), if it started."""
    from distributed import Event

    try:
        if not Event(f"{key}-started", client=client).is_set():
            return None
        return next((event["worker"] for _, event in reversed(client.get_events(EVENTS))
                     if isinstance(event, dict) and event.get("attempt") == key), "that ran it")
    except Exception:  # noqa: BLE001 - the scheduler is gone too: nothing more to tell
        return None


def _failed(started: str, ename: str, evalue: str, worker: str | None = None) -> StepOutcome:
    return StepOutcome("failed", started, utcnow(), {"ename": ename, "evalue": evalue, "cell_index": None},
                       worker=worker)


def _local_stores(config: Config) -> list[tuple[str, str]]:
    """The stores that live in this machine's folders (a path, a sqlite file), as (what, where)."""
    stores = config.stores
    found = []
    for what, where in (("the run store", stores.runs), ("snapshots", stores.snapshots)):
        if "://" not in where or where.startswith("file://"):
            found.append((what, where))
    for what, where in (("the warehouse", stores.warehouse_url), ("MLflow tracking", stores.tracking_uri)):
        if where.startswith(("sqlite:", "file:")) or "://" not in where:
            found.append((what, where))
    return found
