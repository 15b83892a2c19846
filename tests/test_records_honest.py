"""Records and locks that cannot lie (issue 12, item 3): an unreadable run.json is reported, never
skipped; the scheduler counts it as a possible taker of its tick; an empty or corrupt lock is
recovered after the heartbeat timeout, not before; Ctrl-C while planning exits 130 leaving no record;
run ids are matched literally. No kernel starts here: records are written by hand and runs faked.
"""

from __future__ import annotations

import json
import os
import time
from datetime import date, datetime, timedelta, timezone

import pytest
from conftest import step

from runner.scheduling.backfill import plan_backfill
from runner.config import load_config
from runner.errors import PipelineBusy
from runner.store.locks import PipelineLock
from runner.store.records import HEARTBEAT_TIMEOUT, RunRecord, RunStore, StepRecord
from runner.review.site import Site

UTC = timezone.utc
GOOD = "20261130T060000-aaaaaa"
BROKEN = {  # run id -> what its run.json holds
    "20261130T070000-bbbbbb": b'{"run_id": "20261130T070000-bbbbbb", "pipeline": "p", "as_of": "2026-',  # cut short
    "20261130T080000-cccccc": b"\xff\xfe not json at all",
    "20261130T090000-dddddd": b'["a list, not a record"]',
}


def store_of(project) -> RunStore:
    return RunStore(load_config(project.config).stores.runs)


def write_store(project) -> RunStore:
    project.write({"p": {"steps": {"s": step("ok")}}})
    store = store_of(project)
    store.write(RunRecord(run_id=GOOD, pipeline="p", as_of="2026-11-30", status="succeeded", duration_s=1.0, steps={
        "s": StepRecord(name="s", notebook="ok.ipynb", notebook_sha256="0" * 64, status="succeeded")}))
    for run_id, content in BROKEN.items():
        folder = project.home / "runs" / "p" / run_id
        folder.mkdir(parents=True)
        (folder / "run.json").write_bytes(content)
    return store


def path_of(project, run_id: str) -> str:
    return str(project.home / "runs" / "p" / run_id / "run.json")


# -- 1. an unreadable run.json is listed, shown as an error, and on the review site -------------


def test_runs_lists_an_unreadable_record_with_its_file_and_why(project):
    write_store(project)
    listed = json.loads(project.cli("runs", "--json").stdout)
    assert [(r["run_id"], r["status"]) for r in listed] == [
        ("20261130T090000-dddddd", "unreadable"), ("20261130T080000-cccccc", "unreadable"),
        ("20261130T070000-bbbbbb", "unreadable"), (GOOD, "succeeded")]
    by_id = {r["run_id"]: r for r in listed}
    for run_id in BROKEN:
        assert by_id[run_id]["path"] == path_of(project, run_id) and by_id[run_id]["pipeline"] == "p"
    assert "EOF while parsing" in by_id["20261130T070000-bbbbbb"]["reason"]
    assert "Invalid JSON" in by_id["20261130T080000-cccccc"]["reason"]
    assert "object" in by_id["20261130T090000-dddddd"]["reason"]

    only = json.loads(project.cli("runs", "--status", "unreadable", "--json").stdout)
    assert sorted(r["run_id"] for r in only) == sorted(BROKEN)
    assert [r["run_id"] for r in json.loads(project.cli("runs", "--status", "succeeded", "--json").stdout)] == [GOOD]

    table = project.cli("runs")
    assert table.exit_code == 0
    rows = [line for line in table.stdout.splitlines() if "20261130T070000-bbbbbb" in line]
    assert rows and "unreadable" in rows[0], table.stdout
    for run_id in BROKEN:  # the file is named, whatever the terminal's width leaves of the table
        assert f"warning: {path_of(project, run_id)}: not a valid run record:" in table.stderr


def test_show_of_an_unreadable_record_is_one_line_naming_the_file_and_the_problem(project):
    write_store(project)
    shown = project.cli("show", "20261130T070000-bbbbbb")
    assert shown.exit_code == 1 and shown.stdout == ""
    (line,) = shown.stderr.strip().splitlines()
    assert path_of(project, "20261130T070000-bbbbbb") in line and "EOF while parsing" in line
    wrong = project.cli("show", "20261130T090000-dddddd")
    assert wrong.exit_code == 1 and "Input should be an object" in wrong.stderr


def test_the_review_index_lists_an_unreadable_record_without_links_and_the_build_succeeds(project, tmp_path):
    write_store(project)
    site = Site(load_config(project.config))
    result = site.build(tmp_path / "site")
    index = (tmp_path / "site" / "index.html").read_text()
    assert result.runs == 1 and f'href="runs/{GOOD}.html"' in index
    for run_id in BROKEN:
        assert f'href="runs/{run_id}' not in index and not (tmp_path / "site" / "runs" / f"{run_id}.html").exists()
        row = index[index.index(f">{run_id}<"):]
        row = row[:row.index("</tr>")]
        assert 'class="badge s-unreadable"' in row and path_of(project, run_id) in row
    assert '<option value="unreadable">unreadable (3)</option>' in index
    assert "4 runs" in index  # the count the filters start from
    assert path_of(project, "20261130T080000-cccccc") in site.render_index()  # `review serve`'s index too


def test_the_review_index_of_a_store_with_only_unreadable_records_lists_them(project, tmp_path):
    write_store(project)
    (project.home / "runs" / "p" / GOOD / "run.json").write_text("")
    Site(load_config(project.config)).build(tmp_path / "site")
    index = (tmp_path / "site" / "index.html").read_text()
    assert "No runs yet" not in index and index.count('data-status="unreadable"') == 4


# -- 2. the scheduler counts an unreadable record as a possible taker of its tick ---------------


class FakeClock:
    def __init__(self, now: datetime):
        self.current = now

    def now(self) -> datetime:
        return self.current

    def sleep(self, seconds, wake) -> bool:
        self.current += timedelta(seconds=seconds)
        return wake.is_set()


def test_the_scheduler_does_not_run_a_tick_an_unreadable_record_may_have_taken(project, monkeypatch):
    from runner.scheduling import scheduler as scheduler_module
    from runner.scheduling.scheduler import Scheduler

    daily = {"cron": "0 6 * * *", "timezone": "UTC"}
    project.write({name: {"schedule": daily, "steps": {"s": step("ok")}} for name in ("taken", "free", "stray")})
    runs = project.home / "runs"
    for folder, content in (
        ("taken/20261201T060004-abcdef", b'{"run_id": "20261201T060004-abcdef", "pipeline": "tak'),  # after the tick
        ("free/20261201T055959-abcdef", b""),  # created before the tick: not its run
        ("stray/notes", b"not json"),  # not a run folder: the runner never wrote it
    ):
        (runs / folder).mkdir(parents=True)
        (runs / folder / "run.json").write_bytes(content)
    started = []

    def fake_run(config, request, **kwargs):
        started.append(request.pipeline)
        return RunRecord(run_id="20261201T060100-000000", pipeline=request.pipeline, as_of=request.as_of,
                         trigger="schedule", scheduled_for=request.scheduled_for, status="succeeded", duration_s=0.0)

    monkeypatch.setattr(scheduler_module, "run", fake_run)
    notices = []
    clock = FakeClock(datetime(2026, 12, 1, 6, 1, tzinfo=UTC))
    Scheduler(load_config(project.config), clock=clock, on_notice=notices.append).run_once()
    assert sorted(started) == ["free", "stray"]
    (skipped,) = [n for n in notices if n.pipeline == "taken"]
    assert (skipped.kind, skipped.tick, skipped.run_id, skipped.status) == (
        "skipped", "2026-12-01T06:00:00+00:00", "20261201T060004-abcdef", "unreadable")
    assert str(runs / "taken" / "20261201T060004-abcdef" / "run.json") in skipped.detail
    assert "\n" not in skipped.detail and "runner backfill taken --from 2026-12-01 --to 2026-12-01" in skipped.detail


def test_backfill_refuses_a_range_an_unreadable_record_may_belong_to(project):
    daily = {"cron": "0 6 * * *", "timezone": "UTC"}
    project.write({"taken": {"schedule": daily, "steps": {"s": step("ok")}}})
    folder = project.home / "runs" / "taken" / "20261203T101500-abcdef"  # created after the range's first tick
    folder.mkdir(parents=True)
    (folder / "run.json").write_bytes(b'{"run_id": "20261203T101500-abcdef", "scheduled_for": "2026-12-0')
    result = project.cli("backfill", "taken", "--from", "2026-12-01", "--to", "2026-12-02")
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert str(folder / "run.json") in line and "it may be the run of a tick in this range, so none is run" in line
    assert [path.name for path in (project.home / "runs" / "taken").iterdir()] == [folder.name]  # nothing ran
    later = plan_backfill(load_config(project.config), "taken", date(2026, 12, 4), date(2026, 12, 4))
    assert len(later.ticks) == 1 and not later.done_before  # a range that starts after it was made is not its


# -- 3. an empty or corrupt lock file is recovered after the heartbeat timeout, not before -------


@pytest.mark.parametrize("content", [b"", b'{"pipeline": "p", "token": "ab', b"[1, 2]",
                                     b'{"process": {"pid": "not a pid"}}'])
def test_an_unreadable_lock_is_busy_while_fresh_and_taken_over_once_stale(tmp_path, content):
    store = RunStore(str(tmp_path))
    lock_file = tmp_path / ".locks" / "p.lock"
    lock_file.parent.mkdir()
    lock_file.write_bytes(content)
    with pytest.raises(PipelineBusy, match="is unreadable .* taken over once 120s old"):
        PipelineLock(store, "p").acquire()  # maybe another process is writing it right now
    assert lock_file.read_bytes() == content
    old = time.time() - HEARTBEAT_TIMEOUT - 5
    os.utime(lock_file, (old, old))
    with PipelineLock(store, "p") as lock:
        assert lock.holder()["token"] == lock.token
    assert not lock_file.exists()


# -- 4. Ctrl-C while planning --------------------------------------------------------------------


def test_ctrl_c_while_planning_exits_130_in_one_line_and_records_nothing(project, monkeypatch):
    from runner.notebook import adapter
    from runner.run import pipeline

    project.write({"p": {"steps": {name: step("ok") for name in ("a", "b", "c")}}})

    class NoProcesses:  # no step process or kernel: the run never gets that far
        closed = False

        def warm(self, count):
            pass

        def close(self):
            NoProcesses.closed = True

    read = []

    def interrupted(path):  # the user presses Ctrl-C while the second notebook's contract is read
        read.append(path)
        if len(read) == 2:
            raise KeyboardInterrupt
        return real(path)

    real = adapter.read_contract
    monkeypatch.setattr(pipeline, "step_processes", lambda config: NoProcesses())
    monkeypatch.setattr(adapter, "read_contract", interrupted)
    result = project.cli("run", "p")
    assert result.exit_code == 130, result.output
    (line,) = result.stderr.strip().splitlines()
    assert "interrupted before any step of p started" in line and "Aborted" not in result.output
    assert NoProcesses.closed and len(read) == 2
    assert store_of(project).entries() == [] and not list(project.home.glob("runs/**/run.json"))
    assert not (project.home / "runs" / ".locks" / "p.lock").exists()


def test_ctrl_c_again_while_steps_stop_does_not_claim_nothing_ran(project, monkeypatch):
    from runner.run import pipeline

    project.write({"p": {"steps": {"a": step("ok")}}})

    def stopped_twice(config, request, observer):  # the run's own handler was interrupted too
        observer.step_started("a")
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run", stopped_twice)
    result = project.cli("run", "p")
    assert result.exit_code == 130
    assert "interrupted again while the steps of p were stopped" in result.stderr and "nothing ran" not in result.stderr


# -- 5. run ids are matched literally ------------------------------------------------------------


@pytest.mark.parametrize("args", [("show", "*"), ("show", "2026*"), ("show", "../p/" + GOOD), ("show", "p/" + GOOD),
                                  ("show", GOOD + "/.."), ("show", "[0-9]*"), ("resume", "../x"), ("rerun", "*"),
                                  ("show", "20261130T060000-aaaaa?")])
def test_a_run_id_is_never_a_glob_or_a_path(project, args):
    write_store(project)
    result = project.cli(*args)
    assert result.exit_code == 2, result.output
    assert f"{args[1]!r} is not a run id: expected YYYYMMDDTHHMMSS-xxxxxx" in result.stderr
    assert result.stdout == ""


def test_an_unknown_well_formed_run_id_is_a_usage_error(project):
    write_store(project)
    assert project.cli("show", GOOD).exit_code == 0
    missing = project.cli("show", "20990101T000000-000000")
    assert missing.exit_code == 2 and "no run '20990101T000000-000000'" in missing.stderr
