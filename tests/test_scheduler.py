"""Schedules, the scheduler loop, the pipeline lock and export, on a clock the tests move by hand.

No test waits for a real cron minute: the loop's time comes from :class:`FakeClock`, and the
subprocess tests use a tick that is already due when the scheduler starts.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import step

from runner.config import ScheduleConfig, load_config
from runner.errors import PipelineBusy
from runner.store.locks import PipelineLock
from runner.store.records import RunStore
from runner.scheduling.scheduler import Scheduler
from runner.scheduling.ticks import ticks_between

UTC = timezone.utc
AMSTERDAM = ZoneInfo("Europe/Amsterdam")


class FakeClock:
    """Time that moves only when the scheduler sleeps, and stops the loop at ``until``."""

    def __init__(self, now: datetime, until: datetime | None = None):
        self.current, self.until = now, until

    def now(self) -> datetime:
        return self.current

    def sleep(self, seconds: float, wake: threading.Event) -> bool:
        self.current += timedelta(seconds=seconds)
        if self.until is not None and self.current >= self.until:
            wake.set()
        return wake.is_set()


def daily(misfire: str = "skip", **fields) -> dict:
    return {"schedule": {"cron": "0 6 * * *", "timezone": "UTC", "misfire": misfire}, **fields}


def records(project, pipeline: str | None = None):
    return sorted(RunStore(load_config(project.config).stores.runs).list(pipeline), key=lambda r: r.scheduled_for or "")


# -- schedules -------------------------------------------------------------------------------


def test_schedule_list_shows_next_due_times_in_the_schedules_timezone(project):
    project.write({
        "month_end": {"schedule": {"cron": "0 6 L * *", "timezone": "Europe/Amsterdam"}, "steps": {"a": step("ok")}},
        "manual_only": {"steps": {"a": step("ok")}},
    })
    result = project.cli("schedule", "list", "--json", "--count", "3")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    due = [datetime.fromisoformat(t) for t in row["next"]]
    assert [(t.day, t.hour) for t in due] == [(t.day, 6) for t in due]
    assert all((t + timedelta(days=1)).day == 1 for t in due)  # each the last day of its month
    assert row["pipeline"] == "month_end" and row["misfire"] == "skip" and row["last_run"] is None
    table = project.cli("schedule", "list").stdout
    assert "month_end" in table and "manual_only" not in table and ("CET" in table or "CEST" in table)


@pytest.mark.parametrize("schedule, message", [
    ({"cron": "0 6 * *"}, "pipelines.p.schedule.cron: not a five-field cron expression"),
    ({"cron": "0 25 * * *"}, "pipelines.p.schedule.cron: not a five-field cron expression"),
    ({"cron": "0 6 * * *", "timezone": "Mars/Olympus"}, "pipelines.p.schedule.timezone: unknown timezone"),
    ({"cron": "0 6 * * *", "misfire": "later"}, "pipelines.p.schedule.misfire:"),
])
def test_a_bad_schedule_is_one_line_naming_the_key(project, schedule, message):
    project.write({"p": {"schedule": schedule, "steps": {"a": step("ok")}}})
    result = project.cli("schedule", "list")
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_ticks_follow_the_timezone_and_run_once_when_clocks_go_back():
    night = ScheduleConfig(cron="30 2 * * *", timezone="Europe/Amsterdam")
    start, end = datetime(2026, 10, 24, 12, tzinfo=AMSTERDAM), datetime(2026, 10, 25, 12, tzinfo=AMSTERDAM)
    assert [t.isoformat() for t in ticks_between(night, start, end)] == ["2026-10-25T02:30:00+02:00"]
    half_hourly = ScheduleConfig(cron="*/30 * * * *", timezone="Europe/Amsterdam")
    around = ticks_between(half_hourly, datetime(2026, 10, 25, 1, 45, tzinfo=AMSTERDAM),
                           datetime(2026, 10, 25, 3, 15, tzinfo=AMSTERDAM))
    assert len(around) == 5  # 02:00 and 02:30 happen twice in real time: both run
    spring = ticks_between(night, datetime(2026, 3, 28, 12, tzinfo=AMSTERDAM), datetime(2026, 3, 29, 12, tzinfo=AMSTERDAM))
    assert [t.isoformat() for t in spring] == ["2026-03-29T03:00:00+02:00"]  # 02:30 does not exist that night


# -- the loop --------------------------------------------------------------------------------


def test_the_scheduler_runs_each_tick_once_with_as_of_the_tick(project):
    project.write({"p": {**daily(), "steps": {"a": step("ok")}}})
    config = load_config(project.config)
    clock = FakeClock(datetime(2026, 3, 1, 5, 59, tzinfo=UTC), until=datetime(2026, 3, 2, 6, 30, tzinfo=UTC))
    notices = []
    started = Scheduler(config, clock=clock, on_notice=notices.append, poll=3600).serve()
    assert [(r.as_of, r.trigger, r.status) for r in started] == [
        ("2026-03-01", "schedule", "succeeded"), ("2026-03-02", "schedule", "succeeded")]
    assert [r.scheduled_for for r in started] == ["2026-03-01T06:00:00+00:00", "2026-03-02T06:00:00+00:00"]
    assert started[0].steps["a"].scraps["as_of_seen"] == "2026-03-01"
    # A second scheduler (another process, or a restart) at the same time finds nothing new to run.
    again = Scheduler(config, clock=FakeClock(datetime(2026, 3, 2, 6, 30, tzinfo=UTC))).run_once()
    assert again == [] and len(records(project)) == 2


def test_misfire_skip_runs_only_the_newest_tick_and_catch_up_runs_every_missed_one(project):
    project.write({
        "skipper": {**daily("skip"), "steps": {"a": step("ok")}},
        "catcher": {**daily("catch_up"), "steps": {"a": step("ok")}},
        "capped": {"schedule": {"cron": "0 6 * * *", "misfire": "catch_up", "max_catch_up": 1},
                   "steps": {"a": step("ok")}},
    })
    config = load_config(project.config)
    first = Scheduler(config, clock=FakeClock(datetime(2026, 3, 1, 6, 1, tzinfo=UTC))).run_once()
    assert sorted(r.pipeline for r in first) == ["capped", "catcher", "skipper"]
    # The scheduler was down for two days; it comes back one minute after the third tick.
    notices = []
    back = Scheduler(config, clock=FakeClock(datetime(2026, 3, 3, 6, 1, tzinfo=UTC)), on_notice=notices.append)
    back.run_once()
    assert [r.as_of for r in records(project, "skipper")] == ["2026-03-01", "2026-03-03"]
    assert [r.as_of for r in records(project, "catcher")] == ["2026-03-01", "2026-03-02", "2026-03-03"]
    assert [r.as_of for r in records(project, "capped")] == ["2026-03-01", "2026-03-03"]
    assert [(n.tick, n.detail) for n in notices if n.kind == "skipped" and n.pipeline == "capped"] == [
        ("2026-03-02T06:00:00+00:00", "superseded by newer ticks (max_catch_up: 1)")]
    skipped = [n for n in notices if n.kind == "skipped" and n.pipeline != "capped"]
    assert skipped and all(n.pipeline == "skipper" for n in skipped)
    assert "2026-03-02T06:00:00+00:00" in skipped[0].detail or skipped[0].tick == "2026-03-02T06:00:00+00:00"


def test_a_busy_pipeline_waits_and_its_tick_is_not_lost(project):
    project.write({"p": {**daily(), "steps": {"a": step("ok")}}})
    config = load_config(project.config)
    at = FakeClock(datetime(2026, 3, 1, 6, 1, tzinfo=UTC))
    notices = []
    with PipelineLock(RunStore(config.stores.runs), "p", "a manual run"):
        assert Scheduler(config, clock=at, on_notice=notices.append).run_once() == []
        result = project.cli("run", "p")  # a manual run also waits its turn
        assert result.exit_code == 1 and "pipeline 'p' is already running (a manual run, pid" in result.stderr
    assert [n.kind for n in notices][:1] == ["busy"] and "a manual run" in notices[0].detail
    later = Scheduler(config, clock=FakeClock(datetime(2026, 3, 1, 6, 5, tzinfo=UTC))).run_once()
    assert [r.scheduled_for for r in later] == ["2026-03-01T06:00:00+00:00"]


# -- the lock --------------------------------------------------------------------------------


CONTENDERS = 6


def _contend(root: str, ready, tried, results) -> None:
    lock = PipelineLock(RunStore(root), "p")
    ready.wait(60)  # every process imported and ready: they all try at once
    try:
        lock.acquire()
    except PipelineBusy:
        results.put("busy")
        with tried.get_lock():
            tried.value += 1
        return
    results.put("won")
    with tried.get_lock():
        tried.value += 1
    deadline = time.monotonic() + 60
    while tried.value < CONTENDERS and time.monotonic() < deadline:  # hold it until the others have tried
        time.sleep(0.01)
    lock.release()


def test_of_processes_taking_the_lock_at_once_exactly_one_wins(tmp_path):
    context = multiprocessing.get_context("spawn")
    results, ready, tried = context.Queue(), context.Barrier(CONTENDERS), context.Value("i", 0)
    procs = [context.Process(target=_contend, args=(str(tmp_path), ready, tried, results)) for _ in range(CONTENDERS)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(90)
    outcomes = sorted(results.get(timeout=5) for _ in procs)
    assert outcomes == ["busy"] * (CONTENDERS - 1) + ["won"]
    assert not (tmp_path / ".locks" / "p.lock").exists()


def test_a_lock_left_by_a_crashed_process_is_recovered(tmp_path):
    store = RunStore(str(tmp_path))
    crashed = subprocess.Popen([sys.executable, "-c", "pass"])
    crashed.wait()
    (tmp_path / ".locks").mkdir()
    (tmp_path / ".locks" / "p.lock").write_text(json.dumps({
        "pipeline": "p", "purpose": "scheduled run", "token": "dead", "acquired_at": "2026-03-01T06:00:00+00:00",
        "process": {"host": os.uname().nodename, "pid": crashed.pid, "pid_started": 1.0,
                    "heartbeat_at": "2026-03-01T06:00:00+00:00"},
    }))
    with PipelineLock(store, "p") as lock:
        assert lock.holder()["token"] == lock.token
    # Another host's lock counts as alive while its heartbeat is fresh.
    lock_file = tmp_path / ".locks" / "p.lock"
    fresh = datetime.now(UTC).isoformat()
    lock_file.write_text(json.dumps({"pipeline": "p", "token": "far", "process": {
        "host": "elsewhere", "pid": 1, "heartbeat_at": fresh}}))
    with pytest.raises(PipelineBusy, match="pid 1 on elsewhere"):
        PipelineLock(store, "p").acquire()
    lock_file.write_text(json.dumps({"pipeline": "p", "token": "far", "process": {
        "host": "elsewhere", "pid": 1, "heartbeat_at": "2026-01-01T00:00:00+00:00"}}))
    with PipelineLock(store, "p"):
        pass


# -- SIGTERM ---------------------------------------------------------------------------------


def _scheduler_process(project, *args: str) -> subprocess.Popen:
    script = Path(sys.executable).with_name("runner")
    return subprocess.Popen([str(script), "scheduler", "--config", str(project.config), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())


def _wait_for_step(project, pipeline: str, name: str, timeout: float = 90) -> None:
    """Until the step's kernel runs its cells (papermill writes the executed notebook as it goes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list((project.home / "runs" / pipeline).glob(f"*/{name}.ipynb")):
            time.sleep(0.5)
            return
        time.sleep(0.2)
    raise AssertionError(f"step {name} never started")


@pytest.mark.slow
def test_sigterm_lets_running_steps_finish_marks_the_rest_interrupted_and_resume_continues(project):
    # Every minute: when the scheduler starts, the tick of this minute is already due.
    project.write({"p": {"schedule": {"cron": "* * * * *", "misfire": "skip"}, "steps": {
        "slow": step("hangs", parameters={"seconds": 4}),
        "after": step("ok", needs=["slow"]),
    }}})
    proc = _scheduler_process(project, "--grace", "60s")
    _wait_for_step(project, "p", "slow")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "draining" in err and "interrupted" in err
    (record,) = records(project)
    assert record.trigger == "schedule" and record.status == "interrupted"
    assert record.steps["slow"].status == "succeeded"  # it finished within the grace period
    assert record.steps["after"].status == "interrupted"  # it never started
    result = project.cli("resume", record.run_id)
    assert result.exit_code == 0, result.output
    resumed = [r for r in records(project) if r.trigger == "resume"][0]
    assert resumed.origin == record.run_id and resumed.scheduled_for == record.scheduled_for
    assert resumed.steps["slow"].reused_from == record.run_id and resumed.steps["after"].status == "succeeded"


@pytest.mark.slow
def test_sigterm_stops_a_step_that_outlives_the_grace_period(project):
    project.write({"p": {"schedule": {"cron": "* * * * *"}, "steps": {"slow": step("hangs", parameters={"seconds": 600})}}})
    proc = _scheduler_process(project, "--grace", "1s")
    _wait_for_step(project, "p", "slow")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    (record,) = records(project)
    assert record.steps["slow"].status == "interrupted", (record.steps["slow"].error, err)
    assert record.steps["slow"].error.ename == "Interrupted"
    assert (project.home / "runs" / "p" / record.run_id / "slow.ipynb").is_file()


def test_once_runs_what_is_due_now_and_exits(project):
    project.write({"p": {"schedule": {"cron": "* * * * *"}, "steps": {"a": step("ok")}}})
    result = project.cli_process("scheduler", "--once")
    assert result.returncode == 0, result.stderr
    (record,) = records(project)
    assert record.trigger == "schedule" and record.status == "succeeded"
    assert f"finished p {record.scheduled_for} run {record.run_id} succeeded" in result.stderr


@pytest.mark.slow
def test_two_schedulers_started_together_run_the_tick_once(project):
    # New Year's tick of this year, still within its (long) misfire grace: both see the same tick.
    yearly = {"cron": "0 0 1 1 *", "misfire_grace": 400 * 86400}
    project.write({"p": {"schedule": yearly, "steps": {"a": step("hangs", parameters={"seconds": 2})}}})
    first, second = _scheduler_process(project, "--once"), _scheduler_process(project, "--once")
    outputs = [proc.communicate(timeout=120) for proc in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    (record,) = records(project)
    assert record.status == "succeeded"
    said = "".join(err for _, err in outputs)
    assert said.count("started p") == 1 and ("busy p" in said or "this tick already has a run" in said)


def test_the_lock_works_on_an_object_store_too():
    store = RunStore("memory://lock-test/runs")
    with PipelineLock(store, "p", "first"):
        with pytest.raises(PipelineBusy, match="first, pid"):
            PipelineLock(store, "p").acquire()
    assert not store.fs.exists(f"{store.root}/.locks/p.lock")
    store.fs.pipe_file(f"{store.root}/.locks/p.lock", json.dumps({"token": "dead", "process": {
        "host": "elsewhere", "pid": 1, "heartbeat_at": "2026-01-01T00:00:00+00:00"}}).encode())
    with PipelineLock(store, "p") as lock:
        assert lock.holder()["token"] == lock.token


def test_the_scheduler_picks_up_edits_to_runner_yaml_and_keeps_the_last_good_one(project):
    project.write({"p": {"schedule": {"cron": "0 6 * * *", "enabled": False}, "steps": {"a": step("ok")}}})
    edits = iter([
        "pipelines: [this is not: valid",
        project.config.read_text().replace("enabled: false", "enabled: true").replace("0 6 * * *", "0 7 * * *"),
    ])

    class EditingClock(FakeClock):
        def sleep(self, seconds, wake):
            text = next(edits, None)
            if text is not None:
                project.config.write_text(text)
                bumped = project.config.stat().st_mtime + 1
                os.utime(project.config, (bumped, bumped))
            return super().sleep(seconds, wake)

    notices = []
    start = datetime(2026, 3, 1, 5, 0, tzinfo=UTC)
    clock = EditingClock(start, until=start + timedelta(minutes=50))
    assert Scheduler(load_config(project.config), clock=clock, poll=600, on_notice=notices.append).serve() == []
    said = [(n.kind, n.detail) for n in notices]
    assert any(kind == "error" and "keeping the previous one" in detail for kind, detail in said), said
    assert ("reloaded", "1 scheduled pipeline(s)") in said
    assert ("waiting", "the next tick") in said and notices[-2].tick == "2026-03-01T07:00:00+00:00"
