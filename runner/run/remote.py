"""Executors whose steps run on other machines: what the pipeline needs of them (:class:`RemoteExecutor`)."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from runner.config import ENV_RUN_STORE, Config
from runner.run.stepproc import CellProgress, StepOutcome, StepTask, StopRequest
from runner.store.records import RunStore


class RemoteExecutor(ThreadPoolExecutor):
    """An executor whose steps run on other machines. Its threads, on the runner's host, wait on the steps; each
    attempt goes where :meth:`attempt` sends it, with what it needs (the notebook's bytes, the parameters, the run's
    context), and leaves its files in the run store. Subclasses say how (:mod:`runner.run.dask_executor`)."""

    def __init__(self, max_workers: int, name: str):
        super().__init__(max_workers=max_workers, thread_name_prefix=f"runner-{name}")

    @classmethod
    def check(cls, config: Config, options: Mapping[str, Any]) -> None:
        """Raise a :class:`ConfigError` for options or stores the executor cannot work with, before a run starts."""

    def attempt(self, task: StepTask, on_cell: CellProgress | None, stop: StopRequest) -> StepOutcome:
        raise NotImplementedError

    def rename(self, task: StepTask, name: str, new_name: str) -> None:
        RunStore(task.env[ENV_RUN_STORE.name]).rename(task.pipeline, task.run_id, name, new_name)

    def warm(self, count: int) -> None:
        """Nothing to start ahead here: each worker keeps a step process ready of its own."""
