"""Where steps run: a registry of ``concurrent.futures.Executor`` factories.

The pipeline only ever calls ``submit`` and waits on the futures, so an executor is nothing
more than a factory for a ``concurrent.futures.Executor``. ``local`` is a thread pool: each
step already runs in a process of its own (see :mod:`runner.run.stepproc`), a thread only waits
for it. A Dask executor is one more ``register("dask", ...)``: ``Client.get_executor()`` is
already a ``concurrent.futures.Executor``.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor

from runner.errors import ExecutorError

ExecutorFactory = Callable[[int], Executor]
_EXECUTORS: dict[str, ExecutorFactory] = {}


def register(name: str, factory: ExecutorFactory) -> None:
    _EXECUTORS[name] = factory


def get_executor(name: str, max_workers: int) -> Executor:
    if max_workers < 1:
        raise ExecutorError(f"max_workers must be at least 1, got {max_workers}")
    try:
        factory = _EXECUTORS[name]
    except KeyError:
        raise ExecutorError(f"no executor named {name!r}; known: {', '.join(sorted(_EXECUTORS))}") from None
    return factory(max_workers)


def _local(max_workers: int) -> Executor:
    return ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="runner-step")


register("local", _local)
