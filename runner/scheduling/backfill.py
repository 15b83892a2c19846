"""``runner backfill``: one run per schedule tick in a date range, skipping ticks already done.

The backfill holds the pipeline's lock for its whole length (the scheduler and manual runs
wait), then runs up to ``max_workers`` ticks at once, oldest first, each with
``trigger=backfill``, ``as_of`` = the tick's date and ``scheduled_for`` = the tick. A tick is
done when a run for it succeeded, whatever started it, so running the same backfill again
only runs what failed or never ran.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import date, datetime

from runner.config import Config
from runner.errors import RunnerError
from runner.store.locks import PipelineLock
from runner.run.pipeline import run
from runner.store.records import RunRecord, RunStore
from runner.scheduling.ticks import request_for, runs_for, schedule_of, ticks_on_days, unreadable_since
from runner.run.stepproc import StopRequest


@dataclass
class Backfill:
    pipeline: str
    ticks: list[datetime]
    done_before: dict[str, str] = field(default_factory=dict)  # tick -> the run that already succeeded
    records: list[RunRecord] = field(default_factory=list)
    interrupted: bool = False

    @property
    def failed(self) -> list[RunRecord]:
        return [record for record in self.records if record.status != "succeeded"]


def plan_backfill(config: Config, pipeline: str, first: date, last: date) -> Backfill:
    """The ticks of ``pipeline``'s schedule from ``first`` to ``last`` (inclusive) and which are done."""
    if last < first:
        raise RunnerError(f"--to {last} is before --from {first}; give the range oldest first")
    ticks = ticks_on_days(schedule_of(config, pipeline), first, last)
    if not ticks:
        raise RunnerError(f"the schedule of {pipeline!r} has no tick between {first} and {last}; "
                          "`runner schedule list` shows its next ticks")
    store = RunStore(config.stores.runs)
    unreadable = unreadable_since(store, pipeline, ticks[0])
    if unreadable:  # as the scheduler does: a run that may be one of these ticks' is never run again
        raise RunnerError(f"{unreadable.message}; created after {ticks[0].isoformat()}, it may be the run of a tick "
                          "in this range, so none is run; repair or remove that file, then backfill again")
    plan = Backfill(pipeline, ticks)
    for tick in ticks:
        done = [record for record in runs_for(store, pipeline, tick) if record.status == "succeeded"]
        if done:
            plan.done_before[tick.isoformat()] = done[0].run_id
    return plan


def backfill(
    config: Config,
    plan: Backfill,
    max_workers: int = 1,
    on_run: Callable[[datetime, RunRecord], None] | None = None,
) -> Backfill:
    """Run the plan's ticks that are not done. Ctrl-C stops the runs in progress and starts no more."""
    todo = [tick for tick in plan.ticks if tick.isoformat() not in plan.done_before]
    if not todo:
        return plan
    stops: dict[Future, tuple[datetime, StopRequest]] = {}
    with PipelineLock(RunStore(config.stores.runs), plan.pipeline, f"backfill {todo[0].date()}..{todo[-1].date()}"):
        pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="runner-backfill")
        try:
            while todo or stops:
                while todo and len(stops) < max_workers:
                    tick, stop = todo.pop(0), StopRequest()
                    future = pool.submit(run, config, request_for(plan.pipeline, tick, "backfill"), None, stop, None, True)
                    stops[future] = (tick, stop)
                done, _ = wait(stops, return_when=FIRST_COMPLETED)
                for future in done:
                    tick, _ = stops.pop(future)
                    _collect(plan, tick, future, on_run)
        except KeyboardInterrupt:
            plan.interrupted = True
            for _, stop in stops.values():
                stop.stop()
            for future, (tick, _) in stops.items():
                _collect(plan, tick, future, on_run)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return plan


def _collect(plan: Backfill, tick: datetime, future: Future, on_run) -> None:
    record = future.result()
    plan.records.append(record)
    if on_run is not None:
        on_run(tick, record)
