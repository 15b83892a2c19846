"""Failures are kept, not lost: failing cells, dead kernels, hung cells and steps, stopped runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from conftest import step

from runner.config import load_config
from runner.records import RunRecord, RunStore


def only_run(project) -> RunRecord:
    records = RunStore(load_config(project.config).stores.runs).list()
    assert len(records) == 1
    return records[0]


def kernels_of(home: Path) -> list[psutil.Process]:
    """Kernel processes started for this test's runner (their kernelspec lives under its home)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if "ipykernel_launcher" in (proc.info["cmdline"] or []) and proc.environ().get("RUNNER_HOME") == str(home):
                found.append(proc)
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            continue
    return found


def assert_no_kernels_left(home: Path) -> None:
    deadline = time.monotonic() + 10
    while kernels_of(home) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert kernels_of(home) == []


def failing_cell(path: Path, index: int) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4).cells[index]


def test_a_failing_cell_keeps_the_notebook_records_the_error_and_skips_downstream(project):
    project.write({"p": {"steps": {
        "bad": step("broken", parameters={"x": 41}),
        "after": step("ok", needs=["bad"]),
        "independent": step("glues_values"),
    }}})
    result = project.cli("run", "p")
    assert result.exit_code == 1
    record = only_run(project)
    bad = record.steps["bad"]
    assert record.status == "failed"
    assert (bad.status, bad.error.ename, bad.error.evalue) == ("failed", "ValueError", "boom with x=41")
    assert record.steps["after"].status == "skipped"
    assert record.steps["independent"].status == "succeeded"
    executed = project.home / "runs" / "p" / record.run_id / "bad.ipynb"
    cell = failing_cell(executed, bad.error.cell_index)
    assert 'raise ValueError' in cell.source and cell.outputs[0].output_type == "error"
    assert "An Exception was encountered" in nbformat.read(executed, as_version=4).cells[0].source
    failed_lines = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
    assert failed_lines == [f"FAILED bad in cell {bad.error.cell_index}: ValueError: boom with x=41 -> {executed}"]


def test_a_dead_kernel_fails_the_step_quickly_and_leaves_no_kernel(project):
    project.write({"p": {"steps": {"dies": step("kernel_dies"), "after": step("ok", needs=["dies"])}}})
    result = project.cli("run", "p")
    assert result.exit_code == 1
    record = only_run(project)
    dies = record.steps["dies"]
    assert dies.error.ename == "DeadKernelError" and "kernel died" in dies.error.evalue
    assert record.steps["after"].status == "skipped"
    executed = project.home / "runs" / "p" / record.run_id / "dies.ipynb"
    assert "os._exit(1)" in failing_cell(executed, dies.error.cell_index).source
    assert_no_kernels_left(project.home)


def test_a_cell_timeout_ends_a_hung_cell(project):
    project.write({"p": {"steps": {"hung": step("hangs", cell_timeout=2)}}})
    result = project.cli("run", "p")
    assert result.exit_code == 1
    hung = only_run(project).steps["hung"]
    assert hung.error.ename == "CellTimeout" and "cell_timeout=2s" in hung.error.evalue
    executed = project.home / "runs" / "p" / only_run(project).run_id / "hung.ipynb"
    assert "time.sleep(seconds)" in failing_cell(executed, hung.error.cell_index).source
    assert_no_kernels_left(project.home)


def test_a_step_deadline_ends_a_hung_step(project):
    project.write({"p": {"steps": {"hung": step("hangs", timeout="3s")}}})
    result = project.cli("run", "p")
    assert result.exit_code == 1
    record = only_run(project)
    hung = record.steps["hung"]
    assert hung.error.ename == "StepTimeout" and "timeout of 3s" in hung.error.evalue
    executed = project.home / "runs" / "p" / record.run_id / "hung.ipynb"
    assert "time.sleep(seconds)" in failing_cell(executed, hung.error.cell_index).source
    assert (project.home / "runs" / "p" / record.run_id / "hung.html").is_file()
    assert_no_kernels_left(project.home)


@pytest.mark.slow
def test_sigterm_stops_the_run_keeps_the_notebook_and_marks_it_interrupted(project):
    project.write({"p": {"steps": {"hung": step("hangs"), "after": step("ok", needs=["hung"])}}})
    script = Path(sys.executable).with_name("runner")
    proc = subprocess.Popen([str(script), "run", "p", "--config", str(project.config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    executed = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and executed is None:
        found = list((project.home / "runs" / "p").glob("*/hung.ipynb")) if (project.home / "runs").exists() else []
        if found and "time.sleep" in found[0].read_text() and kernels_of(project.home):
            executed = found[0]
        time.sleep(0.3)
    assert executed is not None, "the step never started"
    time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    record = only_run(project)
    assert record.status == "interrupted" and record.effective_status == "interrupted"
    assert record.steps["hung"].status == "interrupted" and record.steps["hung"].error.ename == "Interrupted"
    assert record.steps["after"].status == "interrupted"
    assert executed.is_file()
    assert_no_kernels_left(project.home)


def test_a_killed_step_process_is_reported_not_lost(project, monkeypatch):
    """If the step's own process dies (OOM killer, kill -9), the step fails with where to look."""
    project.write({"p": {"steps": {"hung": step("hangs")}}})
    from runner import stepproc

    real_popen = subprocess.Popen

    def popen_then_kill(*args, **kwargs):
        proc = real_popen(*args, **kwargs)
        if args and args[0][-1] == "runner.stepproc":
            def kill_soon():
                time.sleep(3)
                os.kill(proc.pid, signal.SIGKILL)
            __import__("threading").Thread(target=kill_soon, daemon=True).start()
        return proc

    monkeypatch.setattr(stepproc.subprocess, "Popen", popen_then_kill)
    result = project.cli("run", "p")
    assert result.exit_code == 1
    hung = only_run(project).steps["hung"]
    assert hung.error.ename == "StepProcessDied" and "killed by signal 9" in hung.error.evalue
    assert_no_kernels_left(project.home)
