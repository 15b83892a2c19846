"""Where steps run: a registry of ``concurrent.futures.Executor`` factories, open to plugins.

The pipeline only ever calls ``submit`` and waits on the futures, so an executor is nothing
more than a factory ``(max_workers: int, **options) -> concurrent.futures.Executor``, its options
those of ``executors.<name>`` in runner.yaml (and ``--address``). ``local`` is a thread pool: each
step already runs in a process of its own (see :mod:`runner.run.stepproc`), a thread only waits for it.

A :class:`RemoteExecutor` runs each step attempt on another machine: a thread of the runner still
waits on each step and decides on its retries, and :meth:`RemoteExecutor.attempt` sends one attempt
away. ``dask`` is one (:mod:`runner.run.dask_executor`).

Another distribution adds an executor without touching this repository, through the entry point
group ``notebook_runner.executors`` (as papermill finds engines)::

    [project.entry-points."notebook_runner.executors"]
    dask = "my_package.executors:dask_executor"

The group is read the first time a name is not a built-in one, never at import, and only the
plugin asked for is imported. A plugin cannot replace a built-in executor: an entry point with a
built-in's name is ignored, and every listing of the known executors says so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from runner.config import Config
from runner.errors import ConfigError, ExecutorError, NotFound
from runner.plugins import Plugins
from runner.run.dask_executor import DaskExecutor
from runner.run.remote import RemoteExecutor

GROUP = "notebook_runner.executors"
ExecutorFactory = Callable[..., Executor]  # (max_workers, **options) -> Executor
EXECUTORS: Plugins[ExecutorFactory] = Plugins(
    "executor", GROUP, "a factory (max_workers, **options) -> Executor", "choose another executor", NotFound,
    ExecutorError)
register = EXECUTORS.register  # a built-in executor (a third party uses the entry point group instead)
find = EXECUTORS.find  # the factory of the executor of a name, importing its plugin if it comes from one
known = EXECUTORS.known  # the executors there are, for a message


def choose(name: str | None, config: Config) -> str:
    """The executor a run uses: ``name`` (``--executor``), else runner.yaml's ``defaults.executor``.

    Checked before anything runs: a name no executor has is :class:`NotFound` (a :class:`ConfigError`
    naming runner.yaml's key when the name came from there), a plugin that cannot be imported an
    :class:`ExecutorError`.
    """
    if name is not None:
        find(name)
        return name
    try:
        find(config.defaults.executor)
    except NotFound as exc:
        raise ConfigError(str(exc), str(config.source), "defaults.executor") from None
    return config.defaults.executor


def options(name: str, config: Config, given: Mapping[str, Any]) -> dict[str, Any]:
    """The options the executor ``name`` gets: runner.yaml's ``executors.<name>``, then ``given`` (the command
    line's) over them; checked by the executor when it can check them (:meth:`RemoteExecutor.check`)."""
    chosen = {**config.executors.get(name, {}), **given}
    factory = find(name)
    if isinstance(factory, type) and issubclass(factory, RemoteExecutor):
        factory.check(config, chosen)
    return chosen


def get_executor(name: str, max_workers: int, options: Mapping[str, Any] | None = None) -> Executor:
    """A new executor named ``name`` for up to ``max_workers`` steps at once, given its ``options``."""
    if max_workers < 1:
        raise ExecutorError(f"max_workers must be at least 1, got {max_workers}")
    make = find(name)
    try:
        executor = make(max_workers, **options) if options else make(max_workers)
    except ExecutorError:
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin's failure, told in one line
        raise ExecutorError(f"{EXECUTORS.describe(name)} could not be started: {type(exc).__name__}: {exc}; fix what it "
                            "says, or run with --executor local") from exc
    if not isinstance(executor, Executor):
        raise ExecutorError(f"{EXECUTORS.describe(name)} gave {type(executor).__name__}, not a concurrent.futures.Executor; "
                            "its factory must return one: tell its authors, and run with --executor local meanwhile")
    return executor


def _local(max_workers: int) -> Executor:
    return ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="runner-step")


register("local", _local)
register("dask", DaskExecutor)
