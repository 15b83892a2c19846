"""Where steps run: a registry of ``concurrent.futures.Executor`` factories, open to plugins.

The pipeline only ever calls ``submit`` and waits on the futures, so an executor is nothing
more than a factory ``(max_workers: int) -> concurrent.futures.Executor``. ``local`` is a thread
pool: each step already runs in a process of its own (see :mod:`runner.run.stepproc`), a thread
only waits for it.

Another distribution adds an executor without touching this repository, through the entry point
group ``notebook_runner.executors`` (as papermill finds engines)::

    [project.entry-points."notebook_runner.executors"]
    dask = "my_package.executors:dask_executor"

The group is read the first time a name is not a built-in one, never at import, and only the
plugin asked for is imported. A plugin cannot replace a built-in executor: an entry point with a
built-in's name is ignored, and every listing of the known executors says so.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from importlib.metadata import EntryPoint, entry_points

from runner.config import Config
from runner.errors import ConfigError, ExecutorError, NotFound

GROUP = "notebook_runner.executors"
ExecutorFactory = Callable[[int], Executor]
_BUILT_IN: dict[str, ExecutorFactory] = {}
_loaded: dict[str, ExecutorFactory] = {}  # plugins imported so far


def register(name: str, factory: ExecutorFactory) -> None:
    """Add a built-in executor (a third party uses the entry point group instead)."""
    if name in _BUILT_IN:
        raise ValueError(f"an executor named {name!r} is registered already")
    _BUILT_IN[name] = factory


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


def get_executor(name: str, max_workers: int) -> Executor:
    """A new executor named ``name`` for up to ``max_workers`` steps at once."""
    if max_workers < 1:
        raise ExecutorError(f"max_workers must be at least 1, got {max_workers}")
    make = find(name)
    try:
        executor = make(max_workers)
    except Exception as exc:  # noqa: BLE001 - a plugin's failure, told in one line
        raise ExecutorError(f"{_describe(name)} could not be started: {type(exc).__name__}: {exc}; fix what it "
                            "says, or run with --executor local") from exc
    if not isinstance(executor, Executor):
        raise ExecutorError(f"{_describe(name)} gave {type(executor).__name__}, not a concurrent.futures.Executor; "
                            "its factory must return one: tell its authors, and run with --executor local meanwhile")
    return executor


def find(name: str) -> ExecutorFactory:
    """The factory of the executor named ``name``, importing its plugin if it comes from one."""
    if name in _BUILT_IN:
        return _BUILT_IN[name]
    if name in _loaded:
        return _loaded[name]
    found = _group().get(name)
    if not found:
        raise NotFound(f"no executor named {name!r}; known: {known()}. A plugin's executor is known once the "
                       f"distribution that provides it (entry point group {GROUP}) is installed here")
    if len(found) > 1:
        raise ExecutorError(f"executor {name!r} is provided by {' and by '.join(_origin(ep) for ep in found)}; "
                            "uninstall all but one of them")
    [entry] = found
    try:
        loaded = entry.load()
    except Exception as exc:  # noqa: BLE001 - whatever the plugin's import raised, told in one line
        raise ExecutorError(f"{_describe(name)} could not be imported ({entry.value}): {type(exc).__name__}: "
                            f"{exc}; reinstall {_distribution(entry)} here, or choose another executor") from exc
    if not callable(loaded):
        raise ExecutorError(f"{_describe(name)} is {type(loaded).__name__} ({entry.value}), not a factory "
                            "(max_workers) -> Executor; tell its authors, and choose another executor meanwhile")
    _loaded[name] = loaded
    return loaded


def known() -> str:
    """The executors there are, for a message: built-in ones first, then the plugins with their distribution."""
    group = _group()
    names = list(_BUILT_IN) + [f"{name} ({_origin(found[0])})" for name, found in sorted(group.items())
                               if name not in _BUILT_IN]
    ignored = [f"{entry.name!r} of {_origin(entry)}" for name, found in group.items() if name in _BUILT_IN
               for entry in found]
    return ", ".join(names) + (f"; ignored, as a built-in's name: {', '.join(ignored)}" if ignored else "")


@functools.cache
def _group() -> dict[str, list[EntryPoint]]:
    """The entry points of the group, by name; read the first time they are needed."""
    group: dict[str, list[EntryPoint]] = {}
    for entry in entry_points(group=GROUP):
        group.setdefault(entry.name, []).append(entry)
    return group


def _describe(name: str) -> str:
    found = _group().get(name) if name not in _BUILT_IN else None
    return f"executor {name!r} (plugin of {_origin(found[0])})" if found else f"executor {name!r}"


def _origin(entry: EntryPoint) -> str:
    dist = entry.dist
    return f"{dist.name} {dist.version}" if dist is not None else "an unnamed distribution"


def _distribution(entry: EntryPoint) -> str:
    return entry.dist.name if entry.dist is not None else "the distribution that provides it"


def _local(max_workers: int) -> Executor:
    return ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="runner-step")


register("local", _local)
