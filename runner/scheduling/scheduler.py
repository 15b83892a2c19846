"""``runner scheduler``: start pipelines when their cron ticks come, one run per tick, never two at once.

The loop asks the :class:`~runner.scheduling.ticks.Clock` for the time, queues each pipeline's ticks
that came since it last looked, and starts a queued tick when the pipeline is free: it takes
the pipeline's lock in the run store (so other schedulers and manual runs wait their turn),
checks the run store for a run of that tick (so no tick runs twice, whichever process got
there first) and runs the pipeline with ``trigger=schedule`` and ``as_of`` = the tick's date.
A record of the pipeline that cannot be read and was created at or after the tick (its folder's
run id says when) may be that tick's run: the tick counts as taken, and the notice names the file.

Ticks missed while no scheduler ran are skipped or caught up per pipeline (``misfire``); a tick
later than its ``misfire_grace`` counts as missed. :meth:`Scheduler.request_stop` (SIGTERM) drains:
nothing new starts, running steps get ``grace`` seconds to finish, then they are stopped and
what did not run is marked ``interrupted`` (``runner resume`` continues it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from runner.config import Config, load_config
from runner.errors import PipelineBusy, RunnerError
from runner.store.locks import PipelineLock
from runner.notify import Event, notify, wanted
from runner.run.pipeline import run, settle_abandoned
from runner.store.records import RunRecord, RunStore
from runner.scheduling.ticks import (
    Clock,
    SystemClock,
    last_tick,
    next_ticks,
    request_for,
    runs_for,
    scheduled,
    ticks_between,
    unreadable_since,
)
from runner.run.stepproc import StopRequest

POLL_SECONDS = 30.0  # how often a waiting scheduler looks again (config changes, busy pipelines)


@dataclass(frozen=True)
class Notice:
    """Something the scheduler did, for its caller to show: started, finished, skipped, busy, error,
    waiting (for the next tick), draining, stopped, reloaded."""

    kind: str
    pipeline: str = ""
    tick: str = ""
    run_id: str = ""
    status: str = ""
    detail: str = ""


@dataclass
class _Running:
    tick: datetime
    stop: StopRequest
    future: Future


class Scheduler:
    def __init__(
        self,
        config: Config,
        clock: Clock | None = None,
        max_runs: int = 2,
        grace: float = 600.0,
        on_notice: Callable[[Notice], None] | None = None,
        poll: float = POLL_SECONDS,
    ):
        self.config, self.clock = config, clock or SystemClock()
        self.max_runs, self.grace, self.poll = max_runs, grace, poll
        self.on_notice = on_notice or (lambda notice: None)
        self.store = RunStore(config.stores.runs)
        self.pending: dict[str, list[datetime]] = {}  # ticks due, oldest first
        self.seen: dict[str, datetime] = {}  # the latest tick looked at, per pipeline
        self.running: dict[str, _Running] = {}
        self.records: list[RunRecord] = []
        self.errors: list[Notice] = []
        self._busy_noted: set[tuple[str, datetime]] = set()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=max_runs, thread_name_prefix="runner-scheduled")
        self._config_mtime = config.source.stat().st_mtime

    # -- the two ways to run -------------------------------------------------------------------

    def run_once(self) -> list[RunRecord]:
        """Run what is due now (the time when called), wait for it, and return the runs."""
        now = self.clock.now()
        self.collect(now)
        while not self._stop.is_set():
            self.start_ready(now)
            if not self.running:
                break  # what is still queued belongs to busy pipelines; the next call takes it
            self._wait_for_runs(self.poll)
        self._finish(announce=False)
        return self.records

    def serve(self) -> list[RunRecord]:
        """Run until :meth:`request_stop`; return the runs it started."""
        announced = None
        while not self._stop.is_set():
            self._reload_if_changed()
            now = self.clock.now()
            self.collect(now)
            self.start_ready(now)
            upcoming = self.next_due(now)
            if upcoming and upcoming != announced and not self.running:
                announced = upcoming
                self._notice("waiting", upcoming[1], upcoming[0], detail="the next tick")
            delay = min((upcoming[0] - now).total_seconds() if upcoming else self.poll, self.poll)
            if self.running:
                self._wait_for_runs(max(delay, 0.0))  # runs take real time, whatever the clock says
            else:
                self.clock.sleep(max(delay, 0.0), self._stop)
        self._finish()
        return self.records

    def request_stop(self) -> None:
        """Stop taking new work; running steps get ``grace`` seconds (safe from a signal handler)."""
        self._stop.set()

    # -- the steps of the loop -----------------------------------------------------------------

    def collect(self, now: datetime) -> None:
        """Queue the ticks that came since the last look, per the pipeline's misfire policy.

        ``catch_up`` queues every tick since the last scheduled run. ``skip`` runs only the newest
        due tick, and only within ``misfire_grace`` of it; older ones are reported as skipped. A pipeline
        that never ran on schedule has nothing to catch up: its newest tick within ``misfire_grace`` runs.
        """
        for name, schedule in scheduled(self.config).items():
            grace = timedelta(seconds=schedule.misfire_grace)
            since = self.seen.get(name) or last_tick(self.store, name)
            coalesce = schedule.misfire == "skip" or since is None
            since = since or now - grace
            if coalesce and since < now - grace:
                missed = next_ticks(schedule, since, 1)[0]
                if missed <= now - grace:
                    self._notice("skipped", name, missed, detail=f"ticks from {missed.isoformat()} to "
                                 f"{(now - grace).isoformat()} were missed while no scheduler ran (misfire: skip)")
                since = now - grace
            ticks = ticks_between(schedule, since, now)
            self.seen[name] = ticks[-1] if ticks else since
            queue = self.pending.get(name, []) + ticks
            keep = 1 if coalesce else schedule.max_catch_up
            if keep and len(queue) > keep:
                why = "misfire: skip" if coalesce else f"max_catch_up: {keep}"
                for tick in queue[:-keep]:
                    self._notice("skipped", name, tick, detail=f"superseded by newer ticks ({why})")
                queue = queue[-keep:]
            self.pending[name] = queue

    def start_ready(self, now: datetime) -> None:
        """Start the oldest queued tick of every free pipeline, up to ``max_runs`` runs at once."""
        self._reap()
        schedules = scheduled(self.config)
        for name, ticks in self.pending.items():
            schedule = schedules.get(name)
            while ticks and name not in self.running and len(self.running) < self.max_runs and not self._stop.is_set():
                tick = ticks[0]
                if schedule is None:
                    ticks.clear()
                    break
                late = (now - tick).total_seconds()
                if schedule.misfire == "skip" and late > schedule.misfire_grace:
                    ticks.pop(0)
                    self._notice("skipped", name, tick, detail=f"{late:.0f}s late, over misfire_grace {schedule.misfire_grace:g}s "
                                 "(misfire: skip)")
                    continue
                if not self._start(name, tick):
                    break

    def _start(self, name: str, tick: datetime) -> bool:
        """Take the lock and start the tick's run; False when the pipeline is busy elsewhere."""
        lock = PipelineLock(self.store, name, f"scheduled run for {tick.isoformat()}")
        try:
            lock.acquire()
        except PipelineBusy as exc:
            if (name, tick) not in self._busy_noted:
                self._busy_noted.add((name, tick))
                self._notice("busy", name, tick, detail=f"{exc.holder}; will try again")
            return False
        self.pending[name].pop(0)
        taken = runs_for(self.store, name, tick)
        if taken:
            lock.release()
            self._notice("skipped", name, tick, taken[0].run_id, taken[0].effective_status, "this tick already has a run")
            return True
        unreadable = unreadable_since(self.store, name, tick)
        if unreadable:
            lock.release()
            day = tick.date().isoformat()
            self._notice("skipped", name, tick, unreadable.run_id, unreadable.status,
                         f"{unreadable.message}; created at or after this tick, it may be this tick's run, so the "
                         f"tick is not run again; repair or remove that file, then `runner backfill {name} --from "
                         f"{day} --to {day}` runs the tick if it did not succeed")
            return True
        stop = StopRequest()
        future = self._pool.submit(self._run, name, tick, lock, stop)
        self.running[name] = _Running(tick, stop, future)
        self._notice("started", name, tick)
        return True

    def _run(self, name: str, tick: datetime, lock: PipelineLock, stop: StopRequest) -> RunRecord:
        try:
            if lock.took_over is not None:  # its dead owner's runs may say running still
                settle_abandoned(self.config, name, lock.abandoned_since())
            return run(self.config, request_for(name, tick, "schedule"), stop=stop, locked=True)
        finally:
            lock.release()

    def _reap(self) -> None:
        for name, running in list(self.running.items()):
            if not running.future.done():
                continue
            del self.running[name]
            try:
                record = running.future.result()
            except RunnerError as exc:  # nothing ran: a bad parameter, a notebook that went missing
                self._notice("error", name, running.tick, detail=str(exc))
                self._notify_not_started(name, running.tick, exc)
                continue
            self.records.append(record)
            self._notice("finished", name, running.tick, record.run_id, record.status,
                         f"{record.duration_s:.1f}s" if record.duration_s is not None else "")

    def _wait_for_runs(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.running and not self._stop.is_set() and time.monotonic() < deadline:
            futures = [running.future for running in self.running.values()]
            done, _ = wait(futures, timeout=min(1.0, max(deadline - time.monotonic(), 0.0)), return_when=FIRST_COMPLETED)
            if done:
                break
        self._reap()

    def _finish(self, announce: bool = True) -> None:
        """Drain: running steps get ``grace`` seconds, then are stopped; wait for every run to end."""
        if self.running:
            self._notice("draining", detail=f"{len(self.running)} run(s) in progress; "
                         f"their running steps get {self.grace:g}s to finish")
            for running in self.running.values():
                running.stop.drain()
            wait([r.future for r in self.running.values()], timeout=self.grace)
            for running in self.running.values():
                if not running.future.done():
                    running.stop.stop()
            wait([r.future for r in self.running.values()])
            self._reap()
        self._pool.shutdown(wait=True)
        if announce:
            self._notice("stopped", detail=f"{len(self.records)} run(s) started")

    # -- helpers -------------------------------------------------------------------------------

    def next_due(self, now: datetime) -> tuple[datetime, str] | None:
        """The next tick of any scheduled pipeline after ``now``, and its pipeline."""
        upcoming = [(next_ticks(s, now, 1)[0], name) for name, s in scheduled(self.config).items()]
        return min(upcoming) if upcoming else None

    def _reload_if_changed(self) -> None:
        """Pick up edits to runner.yaml; a broken edit is reported and the last good config kept."""
        try:
            mtime = self.config.source.stat().st_mtime
        except OSError:
            return
        if mtime == self._config_mtime:
            return
        self._config_mtime = mtime
        try:
            self.config = load_config(self.config.source)
        except RunnerError as exc:
            self._notice("error", detail=f"runner.yaml changed but is invalid, keeping the previous one: {exc}")
            return
        self._notice("reloaded", detail=f"{len(scheduled(self.config))} scheduled pipeline(s)")

    def _notify_not_started(self, name: str, tick: datetime, exc: RunnerError) -> None:
        settings = self.config.notify_for(name)
        if wanted(settings, "failure"):
            notify(settings, Event("failure", name, "", as_of=tick.date().isoformat(),
                                   summary=f"scheduled run of {name} for {tick.isoformat()} could not start",
                                   reasons=(str(exc),), details={"scheduled_for": tick.isoformat()}))

    def _notice(self, kind: str, pipeline: str = "", tick: datetime | None = None, run_id: str = "",
                status: str = "", detail: str = "") -> None:
        notice = Notice(kind, pipeline, tick.isoformat() if tick else "", run_id, status, detail)
        if kind == "error":
            self.errors.append(notice)
        self.on_notice(notice)
