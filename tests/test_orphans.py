"""Steps die with their runner: a killed runner leaves no step process, kernel or commit behind, its
pipeline's lock is not recovered while a process of its run lives, and a month scored again (resume,
rerun) holds one copy of its production predictions."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
from conftest import is_kernel, is_step_process, step

from runner.config import load_config
from runner.data.warehouse import Warehouse
from runner.errors import PipelineBusy
from runner.store.locks import PipelineLock
from runner.store.records import ChildProcess, Process, RunRecord, RunStore, new_run_id, utcnow
from runner.run.stepproc import StepProcesses

SCRIPT = Path(sys.executable).with_name("runner")


def records(project) -> list[RunRecord]:
    return sorted(RunStore(load_config(project.config).stores.runs).list(), key=lambda record: record.run_id)


def warehouse(project) -> Warehouse:
    return Warehouse(load_config(project.config).stores.warehouse_url)


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def processes_of(home: Path) -> list[psutil.Process]:
    """Every live process started for this test's runner home: runner, step processes, kernels, what they started."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and alive(proc) and proc.environ().get("RUNNER_HOME") == str(home):
                found.append(proc)
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            continue
    return found


def wait_for_file(path: Path, proc: subprocess.Popen, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file():
            return path.read_text()
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"the step never got inside its write (runner exit code {proc.poll()})")


# -- a killed runner --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("command", ["run", "scheduler"])
def test_a_killed_runner_takes_its_steps_kernels_and_their_writes_with_it(project, tmp_path, command):
    marker, seconds = tmp_path / "inside-the-write", 6
    project.write({"p": {**({"schedule": {"cron": "* * * * *"}} if command == "scheduler" else {}), "steps": {
        "score": step("writes_slowly", parameters={"seconds": seconds, "marker": str(marker)}),
        "after": step("ok", needs=["score"]),
    }}})
    args = ["run", "--config", str(project.config), "p"] if command == "run" else ["scheduler", "--config",
                                                                                   str(project.config)]
    with open(tmp_path / "runner.err", "w") as err:
        runner = subprocess.Popen([str(SCRIPT), *args], stdout=subprocess.DEVNULL, stderr=err, env=os.environ.copy())
    try:
        kernel, helper, inside_at = wait_for_file(marker, runner).split()
        kernel, helper = int(kernel), int(helper)
        started = processes_of(project.home)
        (record,) = records(project)
        recorded = {child.pid: child.role for child in record.process.children}
        step_process = next(child.pid for child in record.process.children
                            if child.role == "step process" and child.step == "score")
        assert {runner.pid, step_process, kernel, helper} <= {proc.pid for proc in started}
        assert recorded.get(kernel) == "kernel", recorded
        assert is_kernel(psutil.Process(kernel).cmdline()), "the kernel's command line"

        runner.kill()
        runner.wait()
        assert_all_end_soon(started, project.home)

        time.sleep(max(0.0, float(inside_at) + seconds + 3 - time.time()))  # past when the write would commit
        assert warehouse(project).read_predictions(run_id=record.run_id, namespace=None).empty
        log = (project.home / "runs" / "p" / record.run_id / "score.log").read_text()
        assert f"the runner (pid {runner.pid}) is gone: killed this step's kernel" in log
    finally:
        clean_up(runner, project.home)


@pytest.mark.slow
def test_a_warm_step_process_dies_with_its_runner_too(project, tmp_path):
    """A step process started ahead waits for its step on stdin, its kernel started; here by the worker
    thread of a step whose retry waits."""
    project.write({"p": {"steps": {"flaky": step("broken", retries=1, retry_delay="10m", retry_on=["cell_error"])}}})
    with open(tmp_path / "runner.err", "w") as err:
        runner = subprocess.Popen([str(SCRIPT), "run", "--config", str(project.config), "p"],
                                  stdout=subprocess.DEVNULL, stderr=err, env=os.environ.copy())
    try:
        deadline, warm = time.monotonic() + 120, []
        while time.monotonic() < deadline and not warm:
            attempted = list((project.home / "runs" / "p").glob("*/flaky.attempt1.ipynb"))
            found = processes_of(project.home) if attempted else []
            kernels = [proc for proc in found if is_kernel(proc.cmdline())]
            warm = [proc for proc in found if is_step_process(proc.cmdline())] if len(kernels) >= 1 else []
            time.sleep(0.3)
        assert warm, "no warm step process with its kernel while the retry waits"
        time.sleep(2)  # its kernel ready, the process reads stdin
        started = processes_of(project.home)
        runner.kill()
        runner.wait()
        assert_all_end_soon(started, project.home)
        assert not list((project.home / "logs").glob("step-*.log")), "the warm process left its log"
    finally:
        clean_up(runner, project.home)


def assert_all_end_soon(started: list[psutil.Process], home: Path, seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (any(alive(proc) for proc in started) or processes_of(home)):
        time.sleep(0.1)
    left = {proc.pid: proc.cmdline() for proc in started + processes_of(home) if alive(proc)}
    assert left == {}, f"outlived the runner: {left}"


def clean_up(runner: subprocess.Popen, home: Path) -> None:
    """Whatever a failing test left behind."""
    if runner.poll() is None:
        runner.kill()
        runner.wait()
    for proc in processes_of(home):
        proc.kill()


def test_a_step_process_outlives_the_thread_that_started_it(tmp_path):
    """A step process started ahead is started by a thread that ends at once (StepProcesses.warm), inside a
    worker thread that ends too; it must not take either for its runner's death (Linux's parent-death signal
    would: it follows the thread that started a process)."""
    processes = StepProcesses("no-such-kernel", str(tmp_path), str(tmp_path / "logs"))

    def start_and_linger() -> None:
        processes.warm(1)
        time.sleep(3)  # until the process watches its runner

    worker = threading.Thread(target=start_and_linger)
    worker.start()
    worker.join()
    try:
        (starting,) = processes._idle
        proc = starting.result()
        time.sleep(2)  # a watch that took the threads' end for the runner's would have ended it by now
        assert proc.poll() is None
    finally:
        processes.close()


# -- the lock -----------------------------------------------------------------------------------


def test_a_lock_is_not_recovered_while_a_step_process_of_its_dead_runner_lives(tmp_path):
    store = RunStore(str(tmp_path))
    runner = subprocess.Popen([sys.executable, "-c", "pass"])
    runner_started = psutil.Process(runner.pid).create_time()
    runner.wait()
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host, acquired_at = socket.gethostname(), utcnow()
        dead = Process(host=host, pid=runner.pid, pid_started=runner_started, heartbeat_at=acquired_at)
        record = RunRecord(run_id=new_run_id(), pipeline="p", as_of="2026-03-31", process=dead.model_copy(update={
            "children": [ChildProcess(pid=orphan.pid, pid_started=psutil.Process(orphan.pid).create_time(),
                                      role="step process", step="score")]}))
        store.write(record)
        (tmp_path / ".locks").mkdir()
        (tmp_path / ".locks" / "p.lock").write_text(json.dumps({
            "pipeline": "p", "purpose": "manual run", "token": "dead", "acquired_at": acquired_at,
            "process": dead.model_dump(exclude={"children"})}))
        with pytest.raises(PipelineBusy, match=rf"gone but its step process {orphan.pid} \(step score\) still run"):
            PipelineLock(store, "p").acquire()
        assert json.loads((tmp_path / ".locks" / "p.lock").read_text())["token"] == "dead"
    finally:
        orphan.kill()
        orphan.wait()
    with PipelineLock(store, "p") as lock:  # once the step process is gone, the lock is recovered
        assert lock.holder()["token"] == lock.token


def test_another_hosts_lock_keeps_the_heartbeat_rule_whatever_its_runs_record(tmp_path):
    store = RunStore(str(tmp_path))
    far = Process(host="elsewhere", pid=os.getpid(), pid_started=psutil.Process().create_time(),
                  heartbeat_at="2026-01-01T00:00:00+00:00")
    store.write(RunRecord(run_id="20260101T000000-abcdef", pipeline="p", as_of="2026-01-01", process=far.model_copy(
        update={"children": [ChildProcess(pid=os.getpid(), pid_started=far.pid_started, role="kernel",
                                           host="elsewhere")]})))
    (tmp_path / ".locks").mkdir()
    (tmp_path / ".locks" / "p.lock").write_text(json.dumps({
        "pipeline": "p", "token": "far", "acquired_at": "2026-01-01T00:00:00+00:00",
        "process": far.model_dump(exclude={"children"})}))
    with PipelineLock(store, "p") as lock:  # a silent host: its lock goes, pids there mean nothing here
        assert lock.holder()["token"] == lock.token


# -- one copy of a month's predictions ----------------------------------------------------------


def scores(prefix: str, rows: int = 4, score: float = 0.5) -> pd.DataFrame:
    return pd.DataFrame({"entity_id": [f"{prefix}{i}" for i in range(rows)], "score": [score] * rows})


def test_production_predictions_of_a_month_model_and_version_replace_another_runs(tmp_path):
    warehouse = Warehouse(f"sqlite:///{tmp_path / 'w.db'}")
    heard: list[dict] = []
    month = {"model_name": "m", "model_version": "1", "as_of": "2026-02-28"}
    warehouse.write_predictions(scores("by-hand"), run_id="interactive-1", namespace="user:bob", **month)
    warehouse.write_predictions(scores("other-version"), run_id="v2", **{**month, "model_version": "2"})
    warehouse.write_predictions(scores("other-month"), run_id="march", **{**month, "as_of": "2026-03-31"})
    assert warehouse.write_predictions(scores("a"), run_id="first", on_replaced=heard.append, **month) == 4
    assert heard == []
    assert warehouse.write_predictions(scores("b", 3), run_id="resumed", on_replaced=heard.append, **month) == 3
    assert heard == [{"first": 4}]
    assert warehouse.write_predictions(scores("c", 3), run_id="resumed", on_replaced=heard.append, **month) == 3
    assert heard == [{"first": 4}]  # writing a run again replaces its own rows, quietly
    february = warehouse.read_predictions(as_of="2026-02-28", model_name="m", model_version="1")
    assert set(february["run_id"]) == {"resumed"} and sorted(february["entity_id"]) == ["c0", "c1", "c2"]
    everything = warehouse.read_predictions(namespace=None)
    assert sorted(set(everything["run_id"])) == ["interactive-1", "march", "resumed", "v2"]
    assert (everything["run_id"] == "interactive-1").sum() == 4  # work by hand is never touched

    def fails_midway():
        yield scores("d")
        raise RuntimeError("model crashed")

    with pytest.raises(RuntimeError):  # a failed write replaces nothing
        warehouse.write_predictions(fails_midway(), run_id="third", on_replaced=heard.append, **month)
    assert set(warehouse.read_predictions(**month)["run_id"]) == {"resumed"} and len(heard) == 1


def test_resume_and_rerun_of_a_scored_month_leave_one_copy_and_say_what_they_replaced(project, tmp_path):
    fixed = tmp_path / "fixed"
    project.write({"p": {"steps": {"score": step("scores_then_fails", parameters={"needs": str(fixed)})}}})
    assert project.cli("run", "p", "--as-of", "2026-01-31").exit_code == 1
    (first,) = records(project)
    month = warehouse(project).read_predictions(as_of="2026-01-31")
    assert len(month) == 5 and set(month["run_id"]) == {first.run_id}  # committed before the step failed

    fixed.touch()
    result = project.cli("resume", first.run_id)
    assert result.exit_code == 0, result.output
    resumed = records(project)[-1]
    month = warehouse(project).read_predictions(as_of="2026-01-31")
    assert len(month) == 5 and set(month["run_id"]) == {resumed.run_id}
    assert resumed.steps["score"].scraps["predictions_replaced"] == {"rows": 5, "runs": {first.run_id: 5}}

    result = project.cli("rerun", resumed.run_id)
    assert result.exit_code == 0, result.output
    rerun = records(project)[-1]
    month = warehouse(project).read_predictions(as_of="2026-01-31")
    assert len(month) == 5 and set(month["run_id"]) == {rerun.run_id}
    assert rerun.steps["score"].scraps["predictions_replaced"] == {"rows": 5, "runs": {resumed.run_id: 5}}
    executed = (project.home / "runs" / "p" / rerun.run_id / "score.ipynb").read_text()
    assert f"replaced 5 production predictions of 2026-01-31, m v1, written by run {resumed.run_id}" in executed
