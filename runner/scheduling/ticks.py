"""Cron schedules: the ticks of a pipeline's ``schedule`` and the run each tick stands for.

A tick is a timezone-aware datetime in the schedule's timezone (croniter follows its DST
changes). A scheduled or backfilled run records its tick as ``scheduled_for`` and runs with
``as_of`` = the tick's date in that timezone. The run store is the memory: a tick is *taken*
once a scheduled run for it exists, *done* once one succeeded, whichever process started it.

Time comes from a :class:`Clock`, so tests move it by hand instead of sleeping.
"""

from __future__ import annotations

import threading
from datetime import date, datetime, time, timedelta, timezone
from typing import Protocol
from zoneinfo import ZoneInfo

from croniter import croniter

from runner.config import Config, ScheduleConfig
from runner.errors import ConfigError
from runner.run.plan import RunRequest
from runner.store.records import RunRecord, RunStore, Unreadable, is_run_id


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware."""

    def sleep(self, seconds: float, wake: threading.Event) -> bool:
        """Wait up to ``seconds``; True if ``wake`` was set meanwhile."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def sleep(self, seconds: float, wake: threading.Event) -> bool:
        return wake.wait(max(seconds, 0.0))


def schedule_of(config: Config, pipeline: str) -> ScheduleConfig:
    """The pipeline's schedule; a :class:`ConfigError` saying how to add one if it has none."""
    schedule = config.pipeline(pipeline).schedule
    if schedule is None:
        raise ConfigError(
            "has no schedule; add `schedule: {cron: \"0 6 * * *\", timezone: UTC}` to it (docs/guides/scheduling.md)",
            str(config.source), f"pipelines.{pipeline}.schedule",
        )
    return schedule


def scheduled(config: Config) -> dict[str, ScheduleConfig]:
    """Every pipeline with an enabled schedule."""
    return {name: p.schedule for name, p in config.pipelines.items() if p.schedule and p.schedule.enabled}


def ticks_between(schedule: ScheduleConfig, after: datetime, until: datetime) -> list[datetime]:
    """The ticks in ``(after, until]``, oldest first.

    When clocks go back, a wall time happens twice; like cron, a job at fixed hours runs at
    its first occurrence only (a daily 02:30 job runs once), while ``*``-hour jobs run at both.
    """
    zone = ZoneInfo(schedule.timezone)
    fixed_hours = not schedule.cron.split()[1].startswith("*")
    found: list[datetime] = []
    cron = croniter(schedule.cron, after.astimezone(zone))
    while (tick := cron.get_next(datetime)) <= until:
        if not (fixed_hours and _second_occurrence(tick, zone)):
            found.append(tick)
    return found


def _second_occurrence(tick: datetime, zone: ZoneInfo) -> bool:
    first = tick.replace(tzinfo=None).replace(tzinfo=zone, fold=0)
    return first.utcoffset() != tick.utcoffset()


def next_ticks(schedule: ScheduleConfig, after: datetime, count: int) -> list[datetime]:
    cron = croniter(schedule.cron, after.astimezone(ZoneInfo(schedule.timezone)))
    return [cron.get_next(datetime) for _ in range(count)]


def ticks_on_days(schedule: ScheduleConfig, first: date, last: date) -> list[datetime]:
    """The ticks from the start of ``first`` to the end of ``last``, in the schedule's timezone."""
    zone = ZoneInfo(schedule.timezone)
    start = datetime.combine(first, time.min, zone) - timedelta(microseconds=1)
    return ticks_between(schedule, start, datetime.combine(last, time.max, zone))


def request_for(pipeline: str, tick: datetime, trigger: str) -> RunRequest:
    """The run a tick stands for: ``as_of`` is the tick's date where the schedule lives."""
    return RunRequest(pipeline, as_of=tick.date().isoformat(), trigger=trigger, scheduled_for=tick.isoformat())


def runs_for(store: RunStore, pipeline: str, tick: datetime) -> list[RunRecord]:
    """The runs recorded for this tick (created at or after it, so only those are read)."""
    created_after = tick.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S")
    return [
        record for record in store.list(pipeline, newer_than=created_after)
        if record.scheduled_for and datetime.fromisoformat(record.scheduled_for) == tick
    ]


def unreadable_since(store: RunStore, pipeline: str, tick: datetime) -> Unreadable | None:
    """The oldest record of the pipeline that cannot be read and whose run id (its UTC start) is not older
    than ``tick``: a run that may be the tick's (or a later tick's). Folders not named by a run id are not runs."""
    created_after = tick.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S")
    found = [entry for entry in store.unreadable(pipeline, newer_than=created_after) if is_run_id(entry.run_id)]
    return found[-1] if found else None


def last_scheduled_run(store: RunStore, pipeline: str) -> RunRecord | None:
    """The newest run the scheduler started (it runs ticks in order: the latest tick)."""
    return next((r for r in store.list(pipeline) if r.trigger == "schedule" and r.scheduled_for), None)


def last_tick(store: RunStore, pipeline: str) -> datetime | None:
    """The latest tick a scheduled run was recorded for."""
    record = last_scheduled_run(store, pipeline)
    return datetime.fromisoformat(record.scheduled_for) if record else None
