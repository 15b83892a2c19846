"""Retries keep every attempt; backfill runs each tick once; resume continues, rerun repeats exactly;
a failed run sends its notice through the same notifier as monitoring alerts."""

from __future__ import annotations

import json
import shutil

from conftest import NOTEBOOKS, step

from runner.config import StepConfig, load_config
from runner.store.records import RunRecord, RunStore
from runner.run.retries import delay_before


def runs(project, trigger: str | None = None) -> list[RunRecord]:
    found = RunStore(load_config(project.config).stores.runs).list()
    return sorted((r for r in found if trigger is None or r.trigger == trigger), key=lambda r: r.run_id)


def run_dir(project, record: RunRecord):
    return project.home / "runs" / record.pipeline / record.run_id


# -- retries ---------------------------------------------------------------------------------


def test_a_dead_kernel_is_retried_and_every_attempt_keeps_its_notebook(project, tmp_path):
    marker = tmp_path / "marker"
    project.write({"p": {"steps": {"a": step("dies_once", retries=2, retry_delay=0, parameters={"marker": str(marker)})}}})
    result = project.cli("run", "p")
    assert result.exit_code == 0, result.output
    assert "a: attempt 2 in 0s after DeadKernelError" in result.stderr
    (record,) = runs(project)
    attempts = record.steps["a"].attempts
    assert [(a.number, a.status) for a in attempts] == [(1, "failed"), (2, "succeeded")]
    assert attempts[0].error.ename == "DeadKernelError" and attempts[0].output == "a.attempt1.ipynb"
    folder = run_dir(project, record)
    assert {"a.attempt1.ipynb", "a.attempt1.html", "a.attempt1.log", "a.ipynb", "a.html"} <= {p.name for p in folder.iterdir()}
    assert "os._exit" in (folder / "a.attempt1.ipynb").read_text()
    assert record.steps["a"].scraps["attempts_seen"] == 2
    shown = project.cli("show", record.run_id).stdout
    assert "attempt 1 failed: DeadKernelError" in shown and "a.attempt1.ipynb" in shown
    assert project.cli("review", "build").exit_code == 0
    site = project.home / "review" / "runs"
    assert (site / record.run_id / "a.attempt1.html").is_file()
    assert f'href="../runs/{record.run_id}/a.attempt1.html"' in (site / f"{record.run_id}.html").read_text()


def test_a_timeout_is_retried_but_a_cell_exception_only_when_the_step_says_so(project):
    project.write({"p": {"steps": {
        "late": step("hangs", cell_timeout=1, retries=1, retry_delay=0),
        "plain": step("broken", retries=2, retry_delay=0),
        "insists": step("broken", retries=1, retry_delay=0, retry_on=["cell_error"]),
    }}}, defaults={"max_workers": 3})
    result = project.cli("run", "p")
    assert result.exit_code == 1
    (record,) = runs(project)
    assert [(a.status, a.error.ename) for a in record.steps["late"].attempts] == [("failed", "CellTimeout")] * 2
    assert [a.status for a in record.steps["plain"].attempts] == ["failed"]
    assert [a.status for a in record.steps["insists"].attempts] == ["failed", "failed"]
    assert record.steps["insists"].error.ename == "ValueError"
    assert (run_dir(project, record) / "insists.attempt1.ipynb").is_file()


def test_retry_delays_grow_by_the_backoff_factor():
    config = StepConfig(notebook="x.ipynb", retries=3, retry_delay="2s", retry_backoff=3)
    assert [delay_before(config, n) for n in (2, 3, 4)] == [2, 6, 18]


# -- backfill --------------------------------------------------------------------------------


def test_backfill_runs_each_tick_once_and_again_only_what_did_not_succeed(project, tmp_path):
    ready = tmp_path / "ready"
    ready.mkdir()
    for day in ("2026-01-01", "2026-01-03"):
        (ready / day).touch()  # the data of 2026-01-02 is not there yet
    project.write({"p": {"schedule": {"cron": "0 6 * * *", "timezone": "Europe/Amsterdam"}, "steps": {
        "a": step("fails_unless", parameters={"needs": f"{ready}/${{as_of}}"})}}})
    first = project.cli("backfill", "p", "--from", "2026-01-01", "--to", "2026-01-03", "--max-workers", "2")
    assert first.exit_code == 1
    done = runs(project, "backfill")
    assert sorted((r.as_of, r.status) for r in done) == [
        ("2026-01-01", "succeeded"), ("2026-01-02", "failed"), ("2026-01-03", "succeeded")]
    assert sorted(r.scheduled_for for r in done)[0] == "2026-01-01T06:00:00+01:00"
    assert "FAILED 2026-01-02T06:00:00+01:00" in first.stdout
    (ready / "2026-01-02").touch()
    second = project.cli("backfill", "p", "--from", "2026-01-01", "--to", "2026-01-03")
    assert second.exit_code == 0, second.output
    assert "2 already succeeded, 1 to run" in second.stderr
    assert [r.as_of for r in runs(project, "backfill")[3:]] == ["2026-01-02"]
    third = project.cli("backfill", "p", "--from", "2026-01-01", "--to", "2026-01-03")
    assert "0 to run" in third.stderr and len(runs(project)) == 4


def test_backfill_needs_a_schedule(project):
    project.write({"p": {"steps": {"a": step("ok")}}})
    result = project.cli("backfill", "p", "--from", "2026-01-01", "--to", "2026-01-03")
    assert result.exit_code == 2 and "pipelines.p.schedule: has no schedule" in result.stderr


# -- resume, rerun, failure notices ----------------------------------------------------------


def test_resume_continues_from_the_failed_step_and_the_failure_was_notified(project, tmp_path):
    fixed, notice = tmp_path / "fixed", tmp_path / "notice.json"
    project.write(
        {"p": {"steps": {
            "first": step("glues_values", parameters={"base": 3}),
            "second": step("fails_unless", needs=["first"], parameters={"needs": str(fixed), "x": "${steps.first.number}"}),
        }}},
        notify={"command": f"cat > {notice}", "events": ["failure"]},
    )
    assert project.cli("run", "p", "--as-of", "2026-02-01").exit_code == 1
    (failed,) = runs(project)
    event = json.loads(notice.read_text())
    assert event["kind"] == "failure" and event["run_id"] == failed.run_id and event["step"] == "second"
    assert event["details"]["resume"] == f"runner resume {failed.run_id}"
    assert failed.notifications[0]["ok"] is True

    fixed.touch()
    result = project.cli("resume", failed.run_id)
    assert result.exit_code == 0, result.output
    assert "keeping first" in result.stderr
    (resumed,) = runs(project, "resume")
    assert resumed.origin == failed.run_id and resumed.as_of == "2026-02-01"
    assert resumed.steps["first"].reused_from == failed.run_id
    assert resumed.steps["first"].mlflow_run_id == failed.steps["first"].mlflow_run_id  # not run again
    assert resumed.steps["second"].scraps["fixed_x"] == 63  # the reused step's scrap fed the failed one
    assert (run_dir(project, resumed) / "first.ipynb").is_file()  # the run folder is complete on its own
    assert "reused from run" in project.cli("show", resumed.run_id).stdout

    again = project.cli("resume", resumed.run_id)
    assert again.exit_code == 1 and "is succeeded; only a failed or interrupted run can be resumed" in again.stderr


def test_rerun_repeats_a_run_from_its_recorded_notebook_not_todays_file(project):
    notebook = project.root / "ok.ipynb"
    shutil.copy(NOTEBOOKS / "ok.ipynb", notebook)
    project.write({"p": {"steps": {"a": {"notebook": "ok.ipynb"}}}})
    assert project.cli("run", "p", "-p", "a.x=5", "--as-of", "2026-02-01").exit_code == 0
    (original,) = runs(project)
    notebook.write_text(notebook.read_text().replace("x * 2", "x * 3"))  # someone edits the notebook

    result = project.cli("rerun", original.run_id)
    assert result.exit_code == 0, result.output
    (rerun,) = runs(project, "rerun")
    assert rerun.origin == original.run_id and rerun.as_of == "2026-02-01"
    assert rerun.steps["a"].scraps["result"] == 10  # the recorded bytes ran, with x=5
    assert rerun.steps["a"].notebook_sha256 == original.steps["a"].notebook_sha256
    assert rerun.steps["a"].scraps["cwd"] == str(project.root)  # it ran where the notebook lives

    assert project.cli("run", "p", "-p", "a.x=5").exit_code == 0
    assert runs(project, "manual")[-1].steps["a"].scraps["result"] == 15  # today's file
