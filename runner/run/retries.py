"""Retrying a step after a transient failure, keeping every attempt's executed notebook.

A step names what may be retried (``retry_on`` in ``runner.yaml``): ``dead_kernel`` (the kernel
or the step's process died), ``timeout`` (a cell or step deadline) and, only if it says so,
``cell_error`` (an exception raised by a cell). An interrupted step is never retried. Attempt
*n* waits ``retry_delay * retry_backoff ** (n - 2)`` seconds first; a stop or drain request ends
the wait. Earlier attempts' files are renamed ``<step>.attempt<N>.ipynb`` (``.html``, ``.log``);
the last attempt keeps ``<step>.ipynb``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace

from runner.config import StepConfig
from runner.store.records import Attempt, StepError
from runner.run.stepproc import OUTPUTS, CellProgress, Launcher, StepOutcome, StepTask, StopRequest

KINDS = {
    "dead_kernel": ("DeadKernelError", "StepProcessDied"),
    "timeout": ("CellTimeout", "StepTimeout"),
}
RetryNotice = Callable[[str, int, float, str], None]  # (step, next attempt, delay in seconds, why)


def failure_kind(error: dict | None) -> str | None:
    """``dead_kernel``, ``timeout`` or ``cell_error`` for a failure; None when it is none of them."""
    if not error or error.get("ename") == "Interrupted":
        return None
    for kind, names in KINDS.items():
        if error.get("ename") in names:
            return kind
    return "cell_error" if error.get("cell_index") is not None else None


def delay_before(config: StepConfig, attempt: int) -> float:
    """Seconds to wait before ``attempt`` (2 is the first retry)."""
    return config.retry_delay * config.retry_backoff ** (attempt - 2)


def run_with_retries(
    task: StepTask,
    config: StepConfig,
    launcher: Launcher,
    on_cell: CellProgress | None = None,
    stop: StopRequest | None = None,
    on_retry: RetryNotice | None = None,
) -> tuple[StepOutcome, list[Attempt]]:
    """Run ``task`` through ``launcher`` until it succeeds, fails for good or runs out of retries."""
    stop = stop or StopRequest()
    attempts: list[Attempt] = []
    number = 1
    while True:
        outcome = launcher.attempt(task, on_cell, stop)
        attempts.append(_attempt(number, outcome))
        kind = failure_kind(outcome.error) if outcome.status == "failed" else None
        if kind is None or kind not in config.retry_on or number > config.retries:
            return outcome, attempts
        attempts[-1] = _set_aside(attempts[-1], task, launcher)
        number += 1
        wait = delay_before(config, number)
        if on_retry is not None:
            on_retry(task.step, number, wait, f"{outcome.error['ename']}: {outcome.error['evalue']}")
        launcher.warm(1)  # the next attempt's process imports while we wait
        if stop.stopping.wait(wait):  # set by a drain or a stop
            interrupted = {"ename": "Interrupted", "cell_index": None,
                           "evalue": f"the run was stopped before attempt {number} of this step"}
            return replace(outcome, status="interrupted", error=interrupted), attempts


def _attempt(number: int, outcome: StepOutcome) -> Attempt:
    return Attempt(
        number=number, status=outcome.status, started_at=outcome.started_at, ended_at=outcome.ended_at,
        error=StepError(**outcome.error) if outcome.error else None, worker=outcome.worker,
        **{field: outcome.files.get(field) for field in OUTPUTS},
    )


def _set_aside(attempt: Attempt, task: StepTask, launcher: Launcher) -> Attempt:
    """Rename a failed attempt's files so the next attempt writes fresh ones."""
    moved = {}
    for field in OUTPUTS:
        if name := getattr(attempt, field):
            base, ext = os.path.splitext(name)
            moved[field] = f"{base}.attempt{attempt.number}{ext}"
            launcher.rename(task, name, moved[field])
    return attempt.model_copy(update=moved)
