"""Executors and notifiers from a third party's distribution (issue 13, item 3): a tiny package written here
declares the entry points `notebook_runner.executors` and `notebook_runner.notifiers`, is installed for real
with pip into a folder of its own, and the `runner` CLI, in a process whose PYTHONPATH holds that folder,
finds them through importlib.metadata. Nothing of the runner knows the package's name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import step

from runner import notify, plugins
from runner.config import NotifyConfig, load_config
from runner.errors import ConfigError, ExecutorError
from runner.notify import Event
from runner.run import executors

DISTRIBUTION = "nr-plugin-demo 0.1"

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "nr-plugin-demo"
version = "0.1"
dependencies = ["notebook-runner"]

[tool.setuptools]
py-modules = ["nr_plugin_demo", "nr_plugin_broken"]

[project.entry-points."notebook_runner.executors"]
recording = "nr_plugin_demo:recording"
not-an-executor = "nr_plugin_demo:not_an_executor"
broken = "nr_plugin_broken:executor"
local = "nr_plugin_demo:recording"  # a built-in's name: ignored

[project.entry-points."notebook_runner.notifiers"]
jsonfile = "nr_plugin_demo:append_event"
raises = "nr_plugin_demo:raises"
hangs = "nr_plugin_demo:hangs"
broken = "nr_plugin_broken:notifier"
"""

MODULE = '''\
"""A third party's executor and notifier for Notebook Runner."""
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from runner.notify import Delivery


class RecordingExecutor(ThreadPoolExecutor):
    """A thread pool that appends each task it ran (step, thread) to the file $NR_PLUGIN_LOG."""

    def submit(self, fn, /, *args, **kwargs):
        def ran(*args, **kwargs):
            result = fn(*args, **kwargs)
            with open(os.environ["NR_PLUGIN_LOG"], "a") as log:
                step = getattr(args[0], "step", repr(args[0])[:80]) if args else None
                log.write(json.dumps({"step": step, "thread": threading.current_thread().name}) + "\\n")
            return result

        return super().submit(ran, *args, **kwargs)


def recording(max_workers):
    return RecordingExecutor(max_workers=max_workers, thread_name_prefix="recording")


def not_an_executor(max_workers):
    return "a thread pool, honestly"


def append_event(event, options):
    with open(options["path"], "a") as out:
        out.write(json.dumps(event.payload()) + "\\n")
    return Delivery("jsonfile", options["path"], True, "appended")


def raises(event, options):
    raise RuntimeError("the pager service says no")


def hangs(event, options):
    time.sleep(60)
'''

BROKEN = '''\
import nr_plugin_dependency_that_is_not_installed  # the plugin's import fails

executor = notifier = None
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The package above, installed by pip into a folder of its own (a site directory for PYTHONPATH). pip builds
    it with setuptools in an isolated environment, as for any user: the virtual environment's own setuptools
    (Python 3.11's venv gives 65.5) cannot build a wheel without the `wheel` package."""
    root = tmp_path_factory.mktemp("plugin")
    package = root / "nr-plugin-demo"
    package.mkdir()
    (package / "pyproject.toml").write_text(PYPROJECT)
    (package / "nr_plugin_demo.py").write_text(MODULE)
    (package / "nr_plugin_broken.py").write_text(BROKEN)
    target = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check",
                    "--target", str(target), str(package)], check=True, capture_output=True, text=True, timeout=300)
    assert (target / "nr_plugin_demo-0.1.dist-info" / "entry_points.txt").is_file()
    return target


@pytest.fixture
def installed(site, tmp_path, monkeypatch) -> Path:
    """The plugin's site folder on PYTHONPATH of the processes a test starts; its executor's log file."""
    log = tmp_path / "executor.log"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("NR_PLUGIN_LOG", str(log))
    return log


@pytest.fixture
def importable(site, tmp_path, monkeypatch):
    """The plugin importable in this process, with the registries' caches of the entry point groups reset."""
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("NR_PLUGIN_LOG", str(tmp_path / "executor.log"))
    monkeypatch.setattr(executors.EXECUTORS, "_loaded", {})
    monkeypatch.setattr(notify.NOTIFIERS, "_loaded", {})
    plugins._entry_points.cache_clear()
    yield
    plugins._entry_points.cache_clear()


def run_json(project, pipeline: str = "p") -> dict:
    [path] = project.home.glob(f"runs/{pipeline}/*/run.json")
    return json.loads(path.read_text())


def ran_through_plugin(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


# -- through the CLI, the plugin installed --------------------------------------------------------

def test_the_steps_run_through_the_executor_runner_yaml_names(project, installed):
    project.write({"p": {"steps": {"hello": step("ok")}}}, defaults={"executor": "recording"})
    done = project.cli_process("run", "p")
    assert done.returncode == 0, done.stderr
    assert run_json(project)["status"] == "succeeded"
    assert ran_through_plugin(installed) == [{"step": "hello", "thread": "recording_0"}]


def test_a_failure_notice_reaches_a_plugin_notifier(project, installed, tmp_path):
    notices = tmp_path / "notices.jsonl"
    project.write({"p": {"steps": {"boom": step("broken")}}},
                  notify={"channels": {"jsonfile": {"path": str(notices)}}, "events": ["failure"]})
    done = project.cli_process("run", "p", "--executor", "recording")
    assert done.returncode == 1, done.stderr
    record = run_json(project)
    assert record["status"] == "failed"
    assert ran_through_plugin(installed) == [{"step": "boom", "thread": "recording_0"}]
    [notice] = [json.loads(line) for line in notices.read_text().splitlines()]
    assert (notice["kind"], notice["run_id"], notice["step"]) == ("failure", record["run_id"], "boom")
    assert record["notifications"] == [{"channel": "jsonfile", "target": str(notices), "ok": True,
                                        "detail": "appended"}]


def test_an_unknown_executor_is_one_line_listing_the_known_ones(project, installed):
    project.write({"p": {"steps": {"hello": step("ok")}}})
    done = project.cli_process("run", "p", "--executor", "spark")
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith("error: no executor named 'spark'; known: local, dask, broken (nr-plugin-demo 0.1), ")
    assert f"recording ({DISTRIBUTION})" in line and f"ignored, as a built-in's name: 'local' of {DISTRIBUTION}" in line
    assert not list(project.home.glob("runs/*/*/run.json")), "nothing ran"


def test_an_unknown_executor_in_runner_yaml_names_the_key(project, installed):
    project.write({"p": {"steps": {"hello": step("ok")}}}, defaults={"executor": "dsak"})
    done = project.cli_process("run", "p")
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith(f"error: {project.config}:defaults.executor: no executor named 'dsak'; known: local, ")
    assert not list(project.home.glob("runs/*/*/run.json")), "nothing ran"


def test_an_executor_plugin_that_fails_to_import_is_one_line_naming_it(project, installed):
    project.write({"p": {"steps": {"hello": step("ok")}}})
    done = project.cli_process("run", "p", "--executor", "broken")
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line == (f"error: executor 'broken' (plugin of {DISTRIBUTION}) could not be imported "
                    "(nr_plugin_broken:executor): ModuleNotFoundError: No module named "
                    "'nr_plugin_dependency_that_is_not_installed'; reinstall nr-plugin-demo here, or choose "
                    "another executor")
    assert not list(project.home.glob("runs/*/*/run.json")), "nothing ran"


def test_runner_validate_refuses_a_channel_no_notifier_has(project, installed):
    project.write({"p": {"steps": {"hello": step("ok")}}}, notify={"channels": {"jsonfiel": {"path": "x"}}})
    done = project.cli_process("validate")
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith(f"error: {project.config}:notify.channels.jsonfiel: no notifier named 'jsonfiel'; "
                           f"known: webhook, command, broken ({DISTRIBUTION}), hangs ({DISTRIBUTION}), ")


# -- in this process, the plugin on sys.path ------------------------------------------------------

def test_a_plugin_cannot_replace_the_built_in_local(importable):
    assert executors.find("local") is executors.EXECUTORS.built_in["local"]  # the package's entry point 'local' is not used
    with executors.get_executor("local", 1) as pool:
        assert pool.submit(lambda: __import__("threading").current_thread().name).result().startswith("runner-step")
    assert f"ignored, as a built-in's name: 'local' of {DISTRIBUTION}" in executors.known()


def test_an_executor_factory_that_returns_no_executor_is_an_executor_error(importable):
    with pytest.raises(ExecutorError) as caught:
        executors.get_executor("not-an-executor", 2)
    assert str(caught.value) == (f"executor 'not-an-executor' (plugin of {DISTRIBUTION}) gave str, not a "
                                 "concurrent.futures.Executor; its factory must return one: tell its authors, "
                                 "and run with --executor local meanwhile")
    with executors.get_executor("recording", 2) as pool:
        assert pool.submit(lambda: 42).result() == 42


EVENT = Event("failure", "p", "20260131T000000-abcdef", summary="run failed")


def test_a_notifier_that_raises_hangs_or_cannot_be_imported_is_a_failed_delivery(importable, tmp_path):
    config = NotifyConfig(channels={"raises": {}, "hangs": {}, "broken": {}, "jsonfile": {"path": str(tmp_path / "n")},
                                    "nowhere": {}}, events=("failure",), timeout=0.5)
    raised, hung, broken, sent, unknown = notify.notify(config, EVENT)
    assert (raised.channel, raised.ok, raised.detail) == ("raises", False, "RuntimeError: the pager service says no")
    assert (hung.ok, hung.detail) == (False, "did not finish within 0.5s")
    assert not broken.ok and broken.detail.startswith(f"notifier 'broken' (plugin of {DISTRIBUTION}) could not be "
                                                      "imported (nr_plugin_broken:notifier): ModuleNotFoundError")
    assert sent.ok and json.loads((tmp_path / "n").read_text())["run_id"] == EVENT.run_id
    assert not unknown.ok and unknown.detail.startswith("no notifier named 'nowhere'; known: webhook, command, ")


def test_a_channel_no_notifier_has_is_a_config_error_naming_the_key(importable, project):
    project.write({"p": {"steps": {"hello": step("ok")}, "notify": {"channels": {"pagr": {}}}}})
    with pytest.raises(ConfigError) as caught:
        notify.check(load_config(project.config))
    assert caught.value.key == "pipelines.p.notify.channels.pagr"
    assert f"known: webhook, command, broken ({DISTRIBUTION}), hangs ({DISTRIBUTION}), jsonfile" in str(caught.value)
    project.write({"p": {"steps": {"hello": step("ok")}}}, notify={"channels": {"broken": {}}})
    with pytest.raises(ConfigError, match="could not be imported"):
        notify.check(load_config(project.config))


def test_webhook_and_command_cannot_be_channels(project):
    project.write({"p": {"steps": {"hello": step("ok")}}}, notify={"channels": {"webhook": {"url": "http://x"}}})
    result = project.cli("validate")
    assert result.exit_code == 2
    assert "notify.channels: the webhook is set by its own key 'webhook' beside channels" in result.stderr
