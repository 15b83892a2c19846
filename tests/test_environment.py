"""Each run records the Python environment it was planned in, and a step process whose environment differs
refuses the step before its notebook runs (issue 14: one environment).

The drift is real: an extra distribution (a ``.dist-info`` folder) on the step processes' PYTHONPATH, which
the runner, running in this process, does not have on its sys.path.
"""

from __future__ import annotations

import json
import platform

from conftest import step

from runner.run import environment


def the_record(project) -> dict:
    [path] = project.home.glob("runs/p/*/run.json")
    return json.loads(path.read_text())


def drifted(monkeypatch, tmp_path) -> None:
    """Step processes (they inherit the environment variables) see one more distribution than the runner."""
    site = tmp_path / "site"
    (site / "nr_drift-1.0.dist-info").mkdir(parents=True)
    (site / "nr_drift-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: nr-drift\nVersion: 1.0\n")
    monkeypatch.setenv("PYTHONPATH", str(site))


def test_a_run_records_the_environment_it_was_planned_in(project):
    project.write({"p": {"steps": {"a": step("ok")}}})
    assert project.cli("run", "p").exit_code == 0
    recorded = the_record(project)["environment"]
    here = environment.current()
    assert recorded == {"python": platform.python_version(), "digest": here["digest"], "packages": len(here["packages"])}
    assert recorded["packages"] > 50 and "mlflow" in here["packages"] and "notebook-runner" in here["packages"]


def test_a_step_process_with_other_packages_refuses_the_step_and_names_them(project, monkeypatch, tmp_path):
    project.write({"p": {"steps": {"a": step("ok"), "b": step("ok", needs=["a"])}}})
    drifted(monkeypatch, tmp_path)
    result = project.cli("run", "p")
    assert result.exit_code == 1
    record = the_record(project)
    a, b = record["steps"]["a"], record["steps"]["b"]
    assert (record["status"], a["status"], b["status"]) == ("failed", "failed", "skipped")
    assert a["error"]["ename"] == "EnvironmentMismatch"
    assert a["error"]["evalue"] == (
        "this machine's Python environment differs from the one the run was planned in: nr-drift 1.0 here, not "
        "planned; install the same packages here, or run with --allow-environment-drift")
    assert len(a["attempts"]) == 1  # not retried: another attempt would meet the same packages
    assert not (project.home / "runs" / "p" / record["run_id"] / "a.ipynb").exists()  # the notebook never ran


def test_allow_environment_drift_runs_the_steps_anyway(project, monkeypatch, tmp_path):
    project.write({"p": {"steps": {"a": step("ok")}}})
    drifted(monkeypatch, tmp_path)
    result = project.cli("run", "p", "--allow-environment-drift")
    assert result.exit_code == 0, result.output
    assert the_record(project)["steps"]["a"]["status"] == "succeeded"


def test_differences_name_python_versions_missing_and_extra_packages():
    planned = {"python": "3.11.7", "digest": "a", "packages": {"pandas": "2.2.2", "numpy": "2.0.0", "six": "1.16"}}
    here = {"python": "3.12.1", "digest": "b", "packages": {"pandas": "2.2.3", "six": "1.16", "extra": "1.0"}}
    assert environment.differences(planned, here) == [
        "python 3.12.1 here, 3.11.7 planned", "extra 1.0 here, not planned", "numpy missing here (2.0.0 planned)",
        "pandas 2.2.3 here, 2.2.2 planned"]
