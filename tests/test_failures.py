"""Failures are kept, not lost: failing cells, dead kernels, hung cells and steps, stopped runs; and every failure
of the run itself (its store, MLflow, a reference or value) ends the run: one line, its record and MLflow runs final."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import nbformat
import psutil
import pytest
from conftest import NOTEBOOKS, is_kernel, step
from mlflow.tracking import MlflowClient

from runner.run import pipeline
from runner.run.plan import RunRequest
from runner.store import records
from runner.config import load_config
from runner.store.records import RunRecord, RunStore


def only_run(project) -> RunRecord:
    records = RunStore(load_config(project.config).stores.runs).list()
    assert len(records) == 1
    return records[0]


def kernels_of(home: Path) -> list[psutil.Process]:
    """Kernel processes started for this test's runner (their kernelspec lives under its home)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if is_kernel(proc.info["cmdline"]) and proc.environ().get("RUNNER_HOME") == str(home):
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
    assert failed_lines == [f"FAILED bad in In [{cell.execution_count}] (code cell 3: `raise ValueError(f\"boom with "
                            f"x={{x}}\")`): ValueError: boom with x=41 -> {executed}"]


def test_a_failing_cell_is_named_as_its_author_sees_it(project):
    """A markdown cell, injected parameters and a failing fifth code cell: the record, the CLI's line, `runner show`
    and the review page name the In [N] the executed notebook shows and the fifth code cell, and link to it."""
    book = nbformat.v4.new_notebook()
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    book.cells = [nbformat.v4.new_markdown_cell("# Five code cells, the last one fails")]
    params = nbformat.v4.new_code_cell("rows = 3")
    params.metadata["tags"] = ["parameters"]
    book.cells += [params, nbformat.v4.new_code_cell("total = rows * 2"),
                   nbformat.v4.new_markdown_cell("## Fit"), nbformat.v4.new_code_cell("import math"),
                   nbformat.v4.new_code_cell("half = total / 2"),
                   nbformat.v4.new_code_cell("\nmodel_fit = half + 1\nraise ValueError(f'cannot fit {rows} rows')"),
                   nbformat.v4.new_code_cell("print('never')")]
    path = project.root / "fifth_fails.ipynb"
    nbformat.write(book, path)
    project.write({"p": {"steps": {"fit": {"notebook": str(path)}}}})
    result = project.cli("run", "p", "-p", "fit.rows=4")
    assert result.exit_code == 1
    record = only_run(project)
    error = record.steps["fit"].error
    executed = nbformat.read(project.home / "runs" / "p" / record.run_id / "fit.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)
    (failing,) = [c for c in executed.cells if any(o.output_type == "error" for o in c.get("outputs", []))]
    assert executed.cells.index(failing) == error.cell_index
    assert error.execution_count == failing.execution_count == 6  # the injected parameters cell ran as In [2]
    assert (error.code_cell, error.cell_source_first_line, error.cell_id) == (5, "model_fit = half + 1", failing.id)
    named = "In [6] (code cell 5: `model_fit = half + 1`)"
    assert error.where() == named
    failed_lines = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
    assert failed_lines[0].startswith(f"FAILED fit in {named}: ValueError: cannot fit 4 rows -> ")
    assert f"error in {named}: ValueError: cannot fit 4 rows" in project.cli("show", record.run_id).stdout

    assert project.cli("review", "build").exit_code == 0
    page = (project.home / "review" / "runs" / f"{record.run_id}.html").read_text()
    assert "in In [6] (code cell 5: `model_fit = half + 1`)" in page
    assert f'href="../runs/{record.run_id}/fit.html#cell-id={failing.id}"' in page
    notebook_page = (project.home / "review" / "runs" / record.run_id / "fit.html").read_text()
    cell_html = notebook_page[notebook_page.index(f'id="cell-id={failing.id}"'):]
    assert cell_html.index("model_fit") < cell_html.index("jp-Cell ")  # the anchor is that cell's, not the next's

    old = record.model_copy(deep=True)  # a record from before: only the index in the executed notebook
    old.steps["fit"].error = records.StepError(ename="ValueError", evalue="x", cell_index=7)
    assert old.steps["fit"].error.where() == "cell 7" and old.steps["fit"].error.anchor == "papermill-error-cell"
    assert RunRecord.model_validate_json(old.model_dump_json(exclude_none=True)).steps["fit"].error.where() == "cell 7"


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
    cell = failing_cell(executed, hung.error.cell_index)
    assert "time.sleep(seconds)" in cell.source
    assert (hung.error.code_cell, hung.error.cell_source_first_line, hung.error.cell_id) == (2, "import time", cell.id)
    assert hung.error.execution_count == cell.execution_count == 2, "the runner's banners are not the author's cells"
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


def test_a_killed_step_process_is_reported_not_lost(project):
    """If the step's own process dies (OOM killer, kill -9), the step fails with where to look. The process is the
    one the run recorded for the step (forked from the fork server or started the usual way: killed all the same)."""
    project.write({"p": {"steps": {"hung": step("hangs")}}})
    store = RunStore(load_config(project.config).stores.runs)
    killed: list[int] = []

    def kill_the_step_process() -> None:
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline:
            for record in store.list():
                for child in record.process.children:
                    if child.role == "step process" and child.step == "hung" and kernels_of(project.home):
                        os.kill(child.pid, signal.SIGKILL)
                        killed.append(child.pid)
            time.sleep(0.2)

    killer = threading.Thread(target=kill_the_step_process)
    killer.start()
    result = project.cli("run", "p")
    killer.join()
    assert result.exit_code == 1 and killed
    hung = only_run(project).steps["hung"]
    assert hung.error.ename == "StepProcessDied" and "killed by signal 9" in hung.error.evalue
    assert_no_kernels_left(project.home)


# -- every failure path ends the run (issue 12, item 2) ---------------------------------------------------------
# A run store that cannot be written, MLflow gone or not answering, a reference or value that cannot be resolved
# or recorded: one error line and the documented exit code; a run that started ends `failed` in its record (or the
# line says its record could not be written), its MLflow runs FAILED, its failure notice sent, no *.tmp left.

MLFLOW_HTTP = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER",
               "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER", "RUNNER_MLFLOW_TIMEOUT")
WRITABLE = "make the run store writable and give it room (RUNNER_RUN_STORE or stores.runs in runner.yaml)"


@pytest.fixture(autouse=True)
def mlflow_http_env(monkeypatch):
    """The runner sets MLflow's HTTP settings in its process's environment: undone after each test."""
    for name in MLFLOW_HTTP:
        monkeypatch.delenv(name, raising=False)


def notify_to(project) -> dict:
    return {"command": f"cat > {project.root / 'notice.json'}", "events": ["failure"]}


def notice(project) -> dict:
    return json.loads((project.root / "notice.json").read_text())


def error_line(result) -> str:
    """The CLI's one error line (progress lines may come before it), and no traceback anywhere."""
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert result.stderr.rstrip().endswith(errors[0])
    return errors[0]


def mlflow_statuses(tracking_uri: str) -> dict[str, str]:
    """Every MLflow run of the tracking store: run name (the run id, or the step) -> status."""
    client = MlflowClient(tracking_uri)
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    return {run.info.run_name: run.info.status for run in client.search_runs(experiments)} if experiments else {}


def only_run_id(project) -> str:
    """The run id MLflow saw: the parent run is named by it."""
    (name,) = [name for name in mlflow_statuses(project.tracking_uri) if records.is_run_id(name)]
    return name


def temporary_files(project) -> list[Path]:
    return list(project.home.rglob("*.tmp"))


def test_a_run_store_that_cannot_be_written_is_one_line_and_ends_what_started(project):
    project.write({"ledger": {"steps": {"load": step("glues_values")}}}, notify=notify_to(project))
    runs = project.home / "runs"
    runs.mkdir()
    (runs / "ledger").write_text("a file where the pipeline's folder belongs: every write in it fails, as root too")
    result = project.cli("run", "ledger")
    assert result.exit_code == 1
    run_id = only_run_id(project)
    record = runs / "ledger" / run_id / "run.json"
    assert error_line(result) == (f"error: could not write {record}: Not a directory (ENOTDIR); run {run_id} has no "
                                  f"record, nothing ran: {WRITABLE}")
    assert mlflow_statuses(project.tracking_uri) == {run_id: "FAILED"}
    sent = notice(project)
    assert (sent["run_id"], sent["details"]["status"]) == (run_id, "failed")
    assert sent["reasons"][0].startswith("the run stopped: could not write ") and "ENOTDIR" in sent["reasons"][0]
    assert temporary_files(project) == [] and kernels_of(project.home) == []


def test_a_run_store_whose_lock_cannot_be_written_is_one_line_and_nothing_starts(project, monkeypatch):
    blocked = project.root / "blocked"
    blocked.write_text("a file where the run store's folder belongs")
    monkeypatch.setenv("RUNNER_RUN_STORE", str(blocked / "runs"))
    project.write({"ledger": {"steps": {"load": step("glues_values")}}})
    result = project.cli("run", "ledger")
    assert result.exit_code == 1
    assert error_line(result) == (f"error: could not write {blocked}/runs/.locks/ledger.lock: Not a directory "
                                  f"(ENOTDIR); nothing ran: {WRITABLE}")
    assert result.stderr.strip() == error_line(result)
    assert mlflow_statuses(project.tracking_uri) == {}


class Disk:
    """The edge of the run store's disk in ``runner.store.records``: once ``full()``, writing a ``run.json`` fails as a
    full (or read-only) disk does, after the temporary file was created, ``times`` times (None: for good)."""

    def __init__(self, full, error: int, times: int | None = None):
        self.full, self.error, self.times = full, error, times
        self.failed = 0

    def open(self, path, mode="r", *args, **kwargs):
        if "run.json" in str(path) and "w" in mode and self.full() and (self.times is None or self.failed < self.times):
            self.failed += 1
            open(path, mode).close()  # what the failed write leaves behind
            raise OSError(self.error, os.strerror(self.error), str(path))
        return open(path, mode, *args, **kwargs)


@pytest.mark.slow
def test_a_disk_that_fills_while_a_step_runs_stops_the_run_and_records_it_failed(project, monkeypatch):
    project.write({"ledger": {"steps": {"hung": step("hangs", parameters={"seconds": 120}),
                                        "after": step("ok", needs=["hung"])}}}, notify=notify_to(project))
    runs = project.home / "runs" / "ledger"
    disk = Disk(lambda: any(runs.glob("*/hung.ipynb")), errno.ENOSPC, times=1)  # full while the step runs, once
    monkeypatch.setattr(records, "open", disk.open, raising=False)
    monkeypatch.setattr(pipeline, "HEARTBEAT_SECONDS", 0.5)  # the record is written every half second
    result = project.cli("run", "ledger")
    assert result.exit_code == 1 and disk.failed == 1
    record = only_run(project)
    path = runs / record.run_id / "run.json"
    assert error_line(result) == (f"error: could not write {path}: No space left on device (ENOSPC); run "
                                  f"{record.run_id} stopped and is recorded as failed in {path}; `runner resume "
                                  f"{record.run_id}` once that is fixed")
    hung = record.steps["hung"]
    assert (record.status, hung.status, record.steps["after"].status) == ("failed", "failed", "interrupted")
    assert hung.error.ename == "StoreError" and hung.error.evalue.startswith("the run stopped before this step "
                                                                             "finished: could not write")
    assert (runs / record.run_id / "hung.ipynb").is_file()  # the executed notebook is kept, as far as it ran
    assert mlflow_statuses(project.tracking_uri) == {record.run_id: "FAILED", "hung": "FAILED"}
    sent = notice(project)
    assert sent["run_id"] == record.run_id and "No space left on device" in sent["reasons"][0]
    assert record.notifications[0]["ok"] is True
    assert temporary_files(project) == []
    assert_no_kernels_left(project.home)


def test_a_store_that_turns_read_only_says_its_record_could_not_be_finished(project, monkeypatch):
    project.write({"ledger": {"steps": {"load": step("glues_values")}}}, notify=notify_to(project))
    writes = []
    disk = Disk(lambda: writes.append(1) or len(writes) > 1, errno.EROFS)  # the first record is written, no other
    monkeypatch.setattr(records, "open", disk.open, raising=False)
    result = project.cli("run", "ledger")
    assert result.exit_code == 1
    run_id = only_run_id(project)
    path = project.home / "runs" / "ledger" / run_id / "run.json"
    assert error_line(result) == (f"error: could not write {path}: Read-only file system (EROFS); run {run_id} could "
                                  f"not record its end: {path} still says running (`runner runs` shows it as "
                                  f"interrupted once this process is gone); {WRITABLE}, then `runner resume {run_id}`")
    assert json.loads(path.read_text())["status"] == "running"  # the record as last written
    assert mlflow_statuses(project.tracking_uri) == {run_id: "FAILED", "load": "FAILED"}
    assert notice(project)["details"]["status"] == "failed"
    assert temporary_files(project) == [] and kernels_of(project.home) == []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_mlflow_unreachable_at_start_fails_in_seconds_with_one_line(project, monkeypatch):
    port = free_port()  # nothing listens there: MLflow's client alone would retry for 4 min 10 s
    monkeypatch.setenv("RUNNER_TRACKING_URI", f"http://127.0.0.1:{port}")
    project.write({"ledger": {"steps": {"load": step("glues_values")}}}, notify=notify_to(project))
    started = time.monotonic()
    result = project.cli("run", "ledger")
    assert time.monotonic() - started < 50
    assert result.exit_code == 1
    assert result.stderr.strip() == error_line(result) == (
        f"error: could not open the experiment of MLflow at http://127.0.0.1:{port}: no answer (connection refused) "
        "within RUNNER_MLFLOW_TIMEOUT=60s; check RUNNER_TRACKING_URI (or stores.tracking in runner.yaml) and that the "
        "server is up")
    assert not (project.home / "runs" / "ledger").exists()


def test_a_tracking_server_that_does_not_answer_fails_within_runner_mlflow_timeout(project, monkeypatch):
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setenv("RUNNER_TRACKING_URI", f"http://127.0.0.1:{silent.getsockname()[1]}")
        monkeypatch.setenv("RUNNER_MLFLOW_TIMEOUT", "5s")
        project.write({"ledger": {"steps": {"load": step("glues_values")}}})
        started = time.monotonic()
        result = project.cli("run", "ledger")
        assert time.monotonic() - started < 40
    assert result.exit_code == 1
    assert "no answer (timed out) within RUNNER_MLFLOW_TIMEOUT=5s" in error_line(result)
    assert not (project.home / "runs" / "ledger").exists()
    monkeypatch.setenv("RUNNER_MLFLOW_TIMEOUT", "soon")
    result = project.cli("run", "ledger")
    assert result.exit_code == 2
    assert error_line(result).startswith("error: RUNNER_MLFLOW_TIMEOUT: expected seconds or a duration like '90s'")


@pytest.fixture
def mlflow_server(tmp_path, migrated_mlflow_db):
    """A real `mlflow server` on localhost (its database migrated already, so it starts in seconds)."""
    port = free_port()
    shutil.copy(migrated_mlflow_db, tmp_path / "server.db")
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent))
    proc = subprocess.Popen(
        [mlflow, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:  # not MLflow's client, which would wait out its own retries
            urllib.request.urlopen(f"{url}/health", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("mlflow server did not start")
            time.sleep(0.3)
    try:
        yield url, proc, f"sqlite:///{tmp_path / 'server.db'}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.mark.slow
def test_mlflow_dying_during_a_step_fails_the_step_quickly_and_the_record_is_final(project, mlflow_server,
                                                                                   monkeypatch):
    url, server, server_store = mlflow_server
    monkeypatch.setenv("RUNNER_TRACKING_URI", url)
    project.write({"ledger": {"steps": {"wait": step("hangs", parameters={"seconds": 3}),
                                        "after": step("ok", needs=["wait"])}}}, notify=notify_to(project))
    killed = []

    def kill_when_the_step_runs() -> None:
        deadline = time.monotonic() + 120
        while not any((project.home / "runs" / "ledger").glob("*/wait.ipynb")) and time.monotonic() < deadline:
            time.sleep(0.1)
        os.killpg(server.pid, signal.SIGKILL)
        killed.append(time.monotonic())

    killer = threading.Thread(target=kill_when_the_step_runs, daemon=True)
    killer.start()
    result = project.cli("run", "ledger")
    killer.join()
    assert time.monotonic() - killed[0] < 45  # not MLflow's 4 min 10 s per call
    assert result.exit_code == 1
    record = only_run(project)
    wait, after = record.steps["wait"], record.steps["after"]
    assert (record.status, wait.status, after.status) == ("failed", "failed", "skipped")
    assert wait.error.ename == "TrackingError"
    assert wait.error.evalue.startswith(f"the notebook ran, but its results could not be logged: could not log to "
                                        f"MLflow at {url}: no answer (connection refused)")
    assert "Traceback" not in result.output
    assert f"FAILED wait: TrackingError: the notebook ran, but its results could not be logged" in result.stdout
    assert record.warnings[-1] == f"MLflow runs left RUNNING (they could not be ended): {wait.mlflow_run_id}, " \
                                  f"{record.mlflow_run_id}"
    # What MLflow holds, read from the dead server's own database: the runs it could not be told the end of.
    assert mlflow_statuses(server_store) == {record.run_id: "RUNNING", "wait": "RUNNING"}
    assert notice(project)["details"]["status"] == "failed"
    assert temporary_files(project) == []


@pytest.mark.parametrize("given, why", [
    ("ok.name=${nope}", "parameter 'name': ${nope} in step 'ok': unknown reference; use ${steps.<step>.<scrap>}, ${env.NAME} or one "
                        "of ${as_of}, ${run_id}, ${pipeline}"),
    ("load.base=${steps.ok.result}", "parameter 'base': ${steps.ok.result}: step 'ok' is not upstream of step 'load'; "
                                     "add it to its 'needs'"),
    ("ok.items=[2026-01-01]", "parameter 'items': cannot be recorded as JSON (Object of type date is not JSON "
                              "serializable); give text, numbers, true/false and lists or dicts of them (quote a date "
                              "inside a list or dict: '2026-01-01')"),
])
def test_a_reference_or_value_that_cannot_be_resolved_or_recorded_is_refused_before_the_run(project, given, why):
    project.write({"ledger": {"steps": {"load": step("glues_values"), "ok": step("ok", needs=["load"])}}})
    result = project.cli("run", "ledger", "-p", given)
    assert result.exit_code == 2
    notebook = "glues_values" if given.startswith("load") else "ok"
    assert result.stderr.strip() == error_line(result) == f"error: {NOTEBOOKS / notebook}.ipynb {why}"
    assert not (project.home / "runs" / "ledger").exists() and mlflow_statuses(project.tracking_uri) == {}


class Exploding:
    """A progress display that breaks when the step starts: a bug, after the run's record was first written."""

    def run_started(self, record): ...
    def cell_started(self, step, index, total): ...
    def step_finished(self, step): ...

    def step_started(self, step):
        raise RuntimeError("the display broke")


def test_any_error_after_the_run_started_ends_the_run_before_it_is_raised(project):
    project.write({"ledger": {"steps": {"load": step("glues_values")}}}, notify=notify_to(project))
    config = load_config(project.config)
    with pytest.raises(RuntimeError, match="the display broke"):
        pipeline.run(config, RunRequest("ledger"), observer=Exploding())
    record = only_run(project)
    load = record.steps["load"]
    assert (record.status, load.status, load.error.ename) == ("failed", "failed", "RuntimeError")
    assert record.warnings == ["the run stopped: RuntimeError: the display broke"]
    assert mlflow_statuses(project.tracking_uri) == {record.run_id: "FAILED", "load": "FAILED"}
    assert notice(project)["reasons"][0] == "the run stopped: RuntimeError: the display broke"
    assert temporary_files(project) == [] and kernels_of(project.home) == []


def test_a_remote_store_that_refuses_a_file_ends_the_run_failed(project, monkeypatch):
    """A run store behind fsspec (here its in-memory one): putting the notebook as run into it fails."""
    from fsspec.implementations.memory import MemoryFileSystem

    store = f"memory://failures-{os.getpid()}-{time.monotonic_ns()}"
    monkeypatch.setenv("RUNNER_RUN_STORE", store)
    project.write({"ledger": {"steps": {"load": step("glues_values")}}}, notify=notify_to(project))

    def quota_exceeded(self, lpath, rpath, **kwargs):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), rpath)

    monkeypatch.setattr(MemoryFileSystem, "put_file", quota_exceeded)
    result = project.cli("run", "ledger")
    assert result.exit_code == 1
    (record,) = RunStore(store).list()
    root = RunStore(store).run_dir("ledger", record.run_id)
    assert error_line(result) == (f"error: could not write {root}/load.source.ipynb: Disk quota exceeded (EDQUOT); run "
                                  f"{record.run_id} stopped and is recorded as failed in {root}/run.json; `runner "
                                  f"resume {record.run_id}` once that is fixed")
    assert (record.status, record.steps["load"].status) == ("failed", "interrupted")
    assert mlflow_statuses(project.tracking_uri) == {record.run_id: "FAILED"}
    assert notice(project)["details"]["status"] == "failed"
    assert temporary_files(project) == []
