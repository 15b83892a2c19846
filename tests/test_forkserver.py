"""Kernels come from a fork server that imported their libraries once (runner.notebook.forkserver): each step's
kernel is a child of the server, with the preloads already imported, the step's environment and working folder, a
kernel's command line; the server ends with its run; without a server, kernels start the usual way."""

from __future__ import annotations

import json
import os
import socket

import psutil
from conftest import is_kernel, write_notebook

from runner.config import load_config
from runner.notebook import adapter
from runner.notebook.forkserver import SOCKET_ENV, ForkServer, Forked
from runner.run.stepproc import StepProcesses
from runner.store.records import RunStore

PRELOAD = "xml.dom.minidom"  # imported by neither ipykernel, scrapbook nor the runner: only the preload puts it there
WHO = """\
import os, sys, psutil, scrapbook as sb
me = psutil.Process()
parent = me.parent()
sb.glue("pid", me.pid)
sb.glue("parent", parent.pid)
sb.glue("parent_cmdline", parent.cmdline())
sb.glue("cmdline", me.cmdline())
sb.glue("preloaded", "%s" in sys.modules)
sb.glue("cwd", os.getcwd())
sb.glue("env", os.environ.get("FORK_TEST_VALUE", "unset"))
sb.glue("mlflow_run", os.environ.get("MLFLOW_RUN_ID", "unset"))
import numpy  # imported by the server already (scrapbook's pandas): each child draws from a generator of its own
sb.glue("draw", float(numpy.random.rand()))
""" % PRELOAD


def words(cmdline: list[str]) -> list[str]:
    """A command line's words, also when setproctitle made it one string (the server's and its kernels')."""
    return " ".join(cmdline).split()


def scraps_of(project) -> tuple[dict, object]:
    (record,) = RunStore(load_config(project.config).stores.runs).list()
    return {name: step.scraps for name, step in record.steps.items()}, record


def servers_of(home) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if "runner.notebook.forkserver" in words(proc.cmdline()) and proc.environ().get("RUNNER_HOME") == str(home):
                found.append(proc)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def test_each_steps_kernel_is_forked_from_one_server_that_imported_the_preloads(project, monkeypatch):
    write_notebook(project.root / "who.ipynb", [("parameters", "x = 1"), WHO])
    monkeypatch.setenv("FORK_TEST_VALUE", "from the runner's environment")
    project.write({"p": {"steps": {"a": {"notebook": "who.ipynb"}, "b": {"notebook": "who.ipynb", "needs": ["a"]}}}},
                  defaults={"preload": [PRELOAD]})
    result = project.cli("run", "p")
    assert result.exit_code == 0, result.output
    scraps, record = scraps_of(project)
    a, b = scraps["a"], scraps["b"]
    assert a["parent"] == b["parent"], "one server forked both kernels"
    assert words(a["parent_cmdline"])[1:3] == ["-m", "runner.notebook.forkserver"], a["parent_cmdline"]
    assert a["preloaded"] is True and b["preloaded"] is True
    assert a["draw"] != b["draw"], "numpy's global generator reseeded in each kernel"
    assert is_kernel(a["cmdline"]) and words(a["cmdline"])[1:4] == ["-m", "ipykernel_launcher", "-f"], a["cmdline"]
    assert a["env"] == b["env"] == "from the runner's environment"
    assert a["cwd"] == b["cwd"] == str(project.root)
    assert a["mlflow_run"] == record.steps["a"].mlflow_run_id and b["mlflow_run"] == record.steps["b"].mlflow_run_id
    recorded = {child.pid: child.role for child in record.process.children}
    assert recorded.get(a["pid"]) == "kernel" and recorded.get(b["pid"]) == "kernel", "recorded for the lock"
    assert servers_of(project.home) == [], "the server ends with its run"


STEP_PROCESSES = """\
import psutil, scrapbook as sb
found = {}
for proc in psutil.process_iter():
    try:
        words = " ".join(proc.cmdline()).split()
        if "runner.run.stepproc" in words:
            found[str(proc.pid)] = {"ppid": proc.ppid(), "cmdline": words, "threads": proc.num_threads()}
    except psutil.Error:
        continue
sb.glue("step_processes", found)
sb.glue("kernel_parent", psutil.Process().ppid())
"""


def test_step_processes_are_forked_from_the_server_too_and_do_their_work(project):
    """Each step's process is a child of the server that forked its kernel, shown as `python -m
    runner.run.stepproc`; it runs the notebook, renders its page and reads its scraps as one started the usual way
    does; and the runner hears of its end (the run finishes, each step's record complete)."""
    write_notebook(project.root / "steps.ipynb", [("parameters", "x = 1"), STEP_PROCESSES])
    project.write({"p": {"steps": {"a": {"notebook": "steps.ipynb"},
                                   "b": {"notebook": "steps.ipynb", "needs": ["a"], "parameters": {"x": 2}},
                                   "c": {"notebook": "steps.ipynb", "needs": ["b"]}}}})
    result = project.cli("run", "p")
    assert result.exit_code == 0, result.output
    scraps, record = scraps_of(project)
    recorded = {child.step: child.pid for child in record.process.children if child.role == "step process"}
    assert sorted(recorded) == ["a", "b", "c"], record.process.children
    for name, pid in recorded.items():
        seen = scraps[name]["step_processes"].get(str(pid))
        assert seen is not None, f"step {name}'s process {pid} was not running its notebook"
        assert seen["ppid"] == scraps[name]["kernel_parent"], f"step {name}'s process is not the server's child"
        assert seen["cmdline"][1:3] == ["-m", "runner.run.stepproc"], seen["cmdline"]
        step = record.steps[name]
        assert step.status == "succeeded" and step.ended_at and step.scraps["kernel_parent"] > 0
        run_dir = project.home / "runs" / "p" / record.run_id
        assert (run_dir / f"{name}.html").stat().st_size > 0 and (run_dir / f"{name}.ipynb").is_file()
    assert servers_of(project.home) == [], "the server ends with its run"


def test_kernels_start_the_usual_way_once_the_server_is_gone(project):
    """Step a kills the server (its kernel's parent); step c, whose process starts after, gets a kernel of its own."""
    write_notebook(project.root / "who.ipynb", [("parameters", "x = 1"), WHO])
    write_notebook(project.root / "kill.ipynb", [("parameters", "x = 1"), WHO,
                                                 "import signal\nos.kill(parent.pid, signal.SIGKILL)"])
    project.write({"p": {"steps": {"a": {"notebook": "kill.ipynb"}, "b": {"notebook": "who.ipynb", "needs": ["a"]},
                                   "c": {"notebook": "who.ipynb", "needs": ["b"]}}}})
    result = project.cli("run", "p")
    assert result.exit_code == 0, result.output
    scraps, record = scraps_of(project)
    assert "runner.notebook.forkserver" in words(scraps["a"]["parent_cmdline"])
    assert "runner.run.stepproc" in words(scraps["c"]["parent_cmdline"]), scraps["c"]["parent_cmdline"]
    assert record.steps["b"].status == "succeeded" and record.steps["c"].status == "succeeded"
    assert list((project.home / "logs").glob("step-*.log")) == [], "a log of a process that was never started"


def test_closing_the_step_processes_ends_their_server(tmp_path):
    processes = StepProcesses("no-such-kernel", str(tmp_path), str(tmp_path / "logs"), fork_kernels=True)
    processes.warm(1)
    processes._idle[0].result()  # started in a thread of its own
    server = psutil.Process(processes._forkserver._proc.pid)
    assert "runner.notebook.forkserver" in words(server.cmdline())
    processes.close()
    assert not server.is_running() or server.status() == psutil.STATUS_ZOMBIE


def test_a_bad_request_leaves_the_server_serving_and_its_kernel_runs_code_and_reports_its_exit(tmp_path, monkeypatch):
    server = ForkServer((), tmp_path / "server.log")
    try:
        for garbage in (b"", b"\x00\x01", b"\x00" * 7 + b"\x05{bad}"):  # cut short, too short, not JSON
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bad:
                bad.connect(server.socket)
                bad.sendall(garbage)
        monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
        monkeypatch.setenv(SOCKET_ENV, server.socket)
        kernel = adapter.Kernel(adapter.ensure_kernel(tmp_path))
        forked = kernel.manager.provisioner.process
        assert psutil.Process(forked.pid).ppid() == server._proc.pid
        kernel.prepare({"FORKED": "yes"}, tmp_path)  # runs code in it
        kernel.shutdown()
        assert forked.returncode == 0, "its exit, as the server reported it"
        assert not psutil.pid_exists(forked.pid)
    finally:
        server.close()
    assert not os.path.exists(server.socket)


def test_a_forked_process_has_its_pipes_and_its_exit_status_reaches_its_handle(tmp_path):
    """ForkServer.fork: the child's stdout is the handle's pipe, its end status comes from the server (SIGABRT: -6),
    also when the server's word of it came in the same read as the child's pid."""
    import signal

    from runner.notebook.forkserver import _read_line

    server = ForkServer((), tmp_path / "server.log", processes=("json",))
    try:
        with open(tmp_path / "child.err", "wb") as stderr:
            echo = server.fork("json.tool:main", ["python", "-m", "json.tool"], dict(os.environ), stderr)
            aborts = server.fork("os:abort", ["python", "-c", "abort"], dict(os.environ), stderr)
        assert echo is not None and aborts is not None
        echo.stdin.write(b'{"b": [1, 2]}')
        echo.stdin.close()
        assert json.loads(echo.stdout.read()) == {"b": [1, 2]}
        assert echo.wait(timeout=30) == 0
        assert aborts.wait(timeout=30) == -signal.SIGABRT
        assert psutil.Process(server._proc.pid).is_running()
    finally:
        server.close()
    ours, theirs = socket.socketpair()
    theirs.sendall(b'{"pid": 123456}\nexit 3\n')
    theirs.close()
    reply, rest = _read_line(ours)
    assert json.loads(reply) == {"pid": 123456} and Forked(123456, ours, rest).poll() == 3


def test_a_server_stuck_in_an_import_is_not_waited_for_and_its_late_child_leaves_nothing(tmp_path, monkeypatch):
    """A preload whose import hangs (here: sleeps 8 s) keeps the server from answering: the runner waits
    PROCESS_REPLY_TIMEOUT for a step process, then starts one the usual way with a log of its own; the child the
    server forks once the import is over finds its pipes closed and ends, leaving no log behind."""
    import subprocess
    import time

    from runner.notebook import forkserver

    (tmp_path / "modules").mkdir()
    marker = tmp_path / "importing"
    (tmp_path / "modules" / "sleepy_preload.py").write_text(
        f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\ntime.sleep(8)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "modules"))
    logs = tmp_path / "logs"
    processes = StepProcesses("no-such-kernel", str(tmp_path), str(logs), ("sleepy_preload",), fork_kernels=True)
    try:
        processes.warm(1)
        first = processes._idle[0].result()
        assert isinstance(first, forkserver.Forked), "forked before the preloads' imports"
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), "the server never reached the preload"
        monkeypatch.setattr(forkserver, "PROCESS_REPLY_TIMEOUT", 1.0)  # 60 s: the server's own start fits in it
        with processes._lock:
            processes._idle.pop(0)  # the warm one (first) aside: the next take() has to start one
        processes.warm(1)
        taken = processes.take()
        assert isinstance(taken, subprocess.Popen), "started the usual way while the server hangs"
        time.sleep(10)  # the import ends; the server forks the request that was given up on
        server = psutil.Process(processes._forkserver._proc.pid)
        children = [child for child in server.children() if "runner.run.stepproc" in words(child.cmdline())]
        assert [child.pid for child in children] == [first.pid], "the late child ended"
        live = {processes._logs[first.pid], psutil.Process(taken.pid).environ()["RUNNER_STEP_LOG"]}
        assert {str(path) for path in logs.glob("step-*.log")} == live, "no log but the live processes'"
    finally:
        for proc in [first, *([taken] if "taken" in locals() else [])]:
            proc.stdin.close()
        processes.close()


def test_a_preload_that_never_ends_ends_the_server_which_says_why_and_kernels_start_at_once(tmp_path, monkeypatch):
    """An import cannot be interrupted, and a server inside one answers nobody: each kernel would wait for it
    (REPLY_TIMEOUT, 300 s) before starting the usual way. Past the preload timeout the server ends, its log naming the
    import and what to do, and a kernel's request finds nobody at the socket: it starts the usual way at once."""
    import subprocess
    import sys

    import pytest

    from runner.notebook.forkserver import fork_kernel

    (tmp_path / "modules").mkdir()
    (tmp_path / "modules" / "hanging_preload.py").write_text("import time\ntime.sleep(3600)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "modules"))
    log = tmp_path / "kernels.log"
    server = ForkServer(("hanging_preload",), log, preload_timeout=2)
    try:
        try:
            ended = server._proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("the server is still inside the import a minute later")
        said = log.read_text()
        assert ended == 3 and "importing hanging_preload took longer than 2 s" in said, said
        assert "defaults.preload" in said
        env = {**os.environ, **server.env}
        assert fork_kernel([sys.executable, "-m", "ipykernel_launcher", "-f", str(tmp_path / "k.json")], env=env) is None
    finally:
        server.close()


def test_a_kernel_whose_preload_never_ends_is_given_up_when_its_step_arrives(tmp_path, monkeypatch):
    """A kernel started the usual way imports defaults.preload itself while it waits for its step. An import that
    never ends would hold the step up to the shell channel's wait (300 s) per step: past the preload's deadline,
    prepare gives the kernel up with a message that says so (the step then starts a kernel of its own), and the
    kernel stuck in the import goes with shutdown."""
    import time

    import pytest

    (tmp_path / "modules").mkdir()
    (tmp_path / "modules" / "hanging_preload.py").write_text("import time\ntime.sleep(3600)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "modules"))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    monkeypatch.delenv(SOCKET_ENV, raising=False)  # no fork server: the kernel starts the usual way
    kernel = adapter.Kernel(adapter.ensure_kernel(tmp_path))
    pid = kernel.manager.provisioner.process.pid
    try:
        kernel.preload(["json", "hanging_preload"], imports_timeout=3)
        time.sleep(1)  # the step arrives while the imports run
        with pytest.raises(RuntimeError, match="imports of defaults.preload did not end in time"):
            kernel.prepare({"STEP": "arrived"}, tmp_path)
    finally:
        kernel.shutdown()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_a_kernel_that_should_have_been_forked_imports_nothing_ahead_once_the_server_is_gone(tmp_path, monkeypatch):
    """The fork server ends when a preload never ends (above); the kernels that then start the usual way do not
    import the preloads themselves, which would hang each of them in turn: the step's kernel is ready at once."""
    (tmp_path / "modules").mkdir()
    (tmp_path / "modules" / "hanging_preload.py").write_text("import time\ntime.sleep(3600)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "modules"))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    server = ForkServer((), tmp_path / "server.log")
    server.close()  # gone, its socket named in the environment still
    monkeypatch.setenv(SOCKET_ENV, server.socket)
    kernel = adapter.Kernel(adapter.ensure_kernel(tmp_path))
    try:
        assert not isinstance(kernel.manager.provisioner.process, Forked), "started the usual way"
        kernel.preload(["hanging_preload"], imports_timeout=3)
        kernel.prepare({"STEP": "arrived"}, tmp_path)  # no RuntimeError: nothing was left importing
    finally:
        kernel.shutdown()


def test_the_servers_log_is_moved_aside_once_it_grows_past_its_size(tmp_path):
    from runner.notebook.forkserver import LOG_KEPT_BYTES

    log = tmp_path / "kernels.log"
    log.write_bytes(b"old line\n" * (LOG_KEPT_BYTES // 9 + 1))
    ForkServer((), log).close()
    assert (tmp_path / "kernels.log.1").stat().st_size > LOG_KEPT_BYTES and log.stat().st_size < LOG_KEPT_BYTES
    with log.open("ab") as small:
        small.write(b"a line of the next server\n")
    ForkServer((), log).close()  # small: appended to, not moved
    assert log.read_bytes().startswith(b"a line of the next server\n")
