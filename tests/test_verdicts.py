"""Verdicts and interrupted runs, as every surface shows them (issue 17, items 1, 2 and their part of 7).

A step that reports ``nb.verdict("alert", reasons)`` succeeds with an alert: its record, `runner runs`, `runner show`,
the CLI's last lines, the MLflow parent run and the review site say so, reasons as text. A runner killed mid-step
(SIGKILL: nothing of it can record its end) leaves a record that says running: readers show its steps interrupted,
its page stays inside the window and offers `runner resume`; the next run of the pipeline records its end and ends
its MLflow runs KILLED. One module-scoped store: a run with a verdict, a killed run, the run after it.
Screenshots land in test-artifacts/verdict-*.png.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import RUNNER_VARS, Project, write_notebook
from mlflow.tracking import MlflowClient

from runner.config import load_config
from runner.store.records import RunRecord, RunStore

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
REASONS = ["PSI of income 0.31 above 0.25", "score mean moved 0.06 <b>up</b>"]


def record_of(project: Project, run_id: str) -> RunRecord:
    return RunStore(load_config(project.config).stores.runs).read(run_id)


def mlflow_runs(project: Project, pipeline: str) -> dict[str, object]:
    """The pipeline's MLflow runs by id."""
    client = MlflowClient(project.tracking_uri)
    experiment = client.get_experiment_by_name(pipeline)
    return {run.info.run_id: run for run in client.search_runs([experiment.experiment_id])}


def start_and_stop(project: Project, signum: int) -> str:
    """Start `runner run stuck` in a process, send it ``signum`` once its step's kernel runs; the run's id."""
    script = Path(sys.executable).with_name("runner")
    store = RunStore(str(project.home / "runs"))
    known = {record.run_id for record in store.list("stuck")}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # a killed run's step process and kernel end within seconds of their runner
        try:
            if all(not child.alive_here() for record in store.list("stuck") for child in record.process.children):
                break
        except FileNotFoundError:
            break
        time.sleep(0.3)
    runner = subprocess.Popen([str(script), "run", "stuck", "--config", str(project.config)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    started = None
    while time.monotonic() < deadline + 60 and started is None and runner.poll() is None:
        for record in store.list("stuck"):
            if record.run_id not in known and record.steps["hang"].status == "running" and any(
                    child.role == "kernel" for child in record.process.children):
                started = record.run_id
        time.sleep(0.3)
    assert started, runner.stderr.read() if runner.poll() is not None else "the step never started"
    time.sleep(1)
    runner.send_signal(signum)
    runner.wait(timeout=60)
    runner.stderr.close()
    return started


@pytest.fixture(scope="module")
def store(tmp_path_factory, migrated_mlflow_db):
    """`watch` once (its step reports an alert), `stuck` killed mid-step, the site built then, and `stuck` again,
    stopped mid-step by SIGTERM."""
    base = tmp_path_factory.mktemp("verdicts")
    home = base / ".runner"
    home.mkdir()
    shutil.copy(migrated_mlflow_db, home / "mlflow.db")
    project = Project(base / "project", home)
    project.root.mkdir()
    write_notebook(project.root / "check.ipynb", [
        ("parameters", "psi = 0.31"),
        f"from runner import nb\nnb.glue('max_psi', psi)\nnb.glue('rows', 120)\nnb.verdict('alert', {REASONS!r})",
    ])
    write_notebook(project.root / "hang.ipynb", [("parameters", "seconds = 600"), "import time\ntime.sleep(seconds)"])
    notices = base / "notices.jsonl"
    project.write({
        "watch": {"steps": {"check": {"notebook": "check.ipynb"}}, "key_scraps": ["check.rows"]},
        "stuck": {"steps": {"hang": {"notebook": "hang.ipynb"}}},
    }, notify={"command": f"(cat; echo) >> {notices}", "events": ["failure"]})
    facts: dict = {"project": project, "notices": notices}
    with pytest.MonkeyPatch.context() as env:
        for name in RUNNER_VARS + ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
            env.delenv(name, raising=False)
        env.setenv("RUNNER_HOME", str(home))
        facts["watch"] = project.cli("run", "watch")

        facts["killed"] = start_and_stop(project, signal.SIGKILL)  # its runner can record nothing
        facts["killed_before"] = record_of(project, facts["killed"])
        facts["show_killed"] = project.cli("show", facts["killed"])
        facts["site"] = base / "site"
        assert project.cli("review", "build", "--out", str(facts["site"])).exit_code == 0
        facts["stopped"] = start_and_stop(project, signal.SIGTERM)  # its runner records its end; it settles the other
        facts["runs"] = project.cli("runs")
        facts["runs_json"] = json.loads(project.cli("runs", "--json").output)
    return facts


@pytest.fixture
def shared(store, monkeypatch) -> dict:
    monkeypatch.setenv("RUNNER_HOME", str(store["project"].home))
    return store


def test_a_step_with_an_alert_succeeds_and_every_text_surface_says_alert(shared):
    store = shared
    project, result = store["project"], store["watch"]
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    run_id = lines[0].split()[1]
    assert "succeeded, verdict alert in" in lines[0]
    assert lines[1:] == [f"  alert: {reason}" for reason in REASONS]

    record = record_of(project, run_id)
    assert record.status == "succeeded"
    assert record.steps["check"].verdict.model_dump() == {"level": "alert", "reasons": REASONS}
    assert record.verdict.level == "alert" and record.verdict.reasons == REASONS
    raw = json.loads((project.home / "runs" / "watch" / run_id / "run.json").read_text())
    assert raw["steps"]["check"]["verdict"] == {"level": "alert", "reasons": REASONS}

    listed = store["runs"].stdout
    row = next(line for line in listed.splitlines() if line.startswith(run_id))
    assert "succeeded alert" in row
    (entry,) = [e for e in store["runs_json"] if e["run_id"] == run_id]
    assert entry["verdict"] == {"level": "alert", "reasons": REASONS}

    shown = project.cli("show", run_id).stdout
    assert "  verdict alert\n" + "".join(f"    - {reason}\n" for reason in REASONS) in shown
    assert "check succeeded" in shown and "verdict alert: " + "; ".join(REASONS) in shown
    assert "runner_verdict" not in shown

    runs = mlflow_runs(project, "watch")
    parent, child = runs[record.mlflow_run_id], runs[record.steps["check"].mlflow_run_id]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["runner.verdict"] == "alert" and child.data.tags["runner.verdict"] == "alert"
    assert parent.data.tags["runner.verdict.reasons"] == "\n".join(REASONS)
    assert parent.data.tags["mlflow.note.content"] == "Verdict: **ALERT**\n" + "\n".join(f"- {r}" for r in REASONS)


def test_an_old_record_without_a_verdict_reads_as_none():
    old = {"run_id": "20260101T000000-abcdef", "pipeline": "p", "as_of": "2026-01-01", "status": "succeeded",
           "steps": {"s": {"name": "s", "notebook": "s.ipynb", "notebook_sha256": "0" * 64, "status": "succeeded",
                           "scraps": {"status": "alert", "reasons": ["x"]}}}}
    record = RunRecord.model_validate(old)
    assert record.steps["s"].verdict is None and record.verdict is None


def test_a_killed_runner_s_run_reads_interrupted_and_the_next_run_records_its_end(shared):
    store = shared
    project, killed = store["project"], store["killed"]
    before = store["killed_before"]
    assert before.status == "running" and before.steps["hang"].status == "running"  # nothing could record its end
    assert before.effective_status == "interrupted" and before.step_status(before.steps["hang"]) == "interrupted"
    shown = store["show_killed"].stdout
    assert f"run {killed}  interrupted" in shown and "hang interrupted" in shown and "hang running" not in shown
    assert f"`runner resume {killed}`" in shown

    record = record_of(project, killed)  # the next run of the pipeline recorded its end
    assert record.status == "interrupted" and record.ended_at == before.process.heartbeat_at
    assert record.steps["hang"].status == "interrupted" and record.steps["hang"].error.ename == "Interrupted"
    assert any("ended without recording the run's end" in warning for warning in record.warnings)
    stopped = record_of(project, store["stopped"])  # SIGTERM: its runner stopped its step and recorded its end
    assert stopped.status == "interrupted" and stopped.steps["hang"].status == "interrupted"
    # the failure notice the killed runner could not send went out when the next run recorded its end
    notices = {notice["run_id"]: notice for notice in map(json.loads, store["notices"].read_text().splitlines())}
    assert set(notices) == {killed, store["stopped"]}, notices
    late = notices[killed]
    assert late["kind"] == "failure" and late["summary"].endswith("interrupted"), late
    assert "ended without recording the run's end" in late["reasons"][0] and late["reasons"][1].startswith("hang interrupted")
    assert [delivery["ok"] for delivery in record.notifications] == [True]
    runs = {run_id: mlflow.info.status for run_id, mlflow in mlflow_runs(project, "stuck").items()}
    for run in (record, stopped):
        assert runs[run.mlflow_run_id] == "KILLED" and runs[run.steps["hang"].mlflow_run_id] == "KILLED"


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"verdict-{name}.png"), full_page=True)


def test_browser_shows_verdict_badges_and_the_killed_run_inside_the_window(shared, browser):
    store = shared
    site, killed = store["site"], store["killed"]
    watch = store["watch"].stdout.split()[1]
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto((site / "index.html").as_uri())
        row = page.locator(f"tr:has(a:text('{watch}'))")
        assert row.locator(".badge.verdict.v-alert").inner_text().strip().upper() == "ALERT"
        scraps = row.locator("td.key-scraps").inner_text()
        assert scraps.startswith("verdict") and REASONS[0] in scraps and "check.rows" in scraps
        card = page.locator(".card.pipeline:has(h3:text('watch'))")
        assert card.locator(".v-alert").count() == 1 and REASONS[1] in card.inner_text()
        screenshot(page, "index")

        page.goto((site / "pipelines" / "watch.html").as_uri())
        assert page.locator(".badge.verdict.v-alert").count() == 1
        screenshot(page, "pipeline")

        page.goto((site / "runs" / f"{watch}.html").as_uri())
        box = page.locator("#verdict")
        assert "Verdict: ALERT" in box.inner_text()
        assert box.locator("li").all_inner_texts() == REASONS  # text, escaped: no <b> made bold
        assert page.locator("#step-check .badge.verdict.v-alert").count() == 1
        assert page.locator("#resume-hint").count() == 0
        screenshot(page, "run-alert")

        for width in (1280, 760):
            page.set_viewport_size({"width": width, "height": 900})
            page.goto((site / "runs" / f"{killed}.html").as_uri())
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), width
            bar = page.locator("#step-hang .timeline span").bounding_box()
            line = page.locator("#step-hang .timeline").bounding_box()
            assert line["x"] <= bar["x"] and bar["x"] + bar["width"] <= line["x"] + line["width"] + 0.5
        assert page.locator("h1 .badge.s-interrupted").count() == 1
        assert page.locator("#step-hang .step-head .badge").first.inner_text() == "interrupted"
        hint = page.locator("#resume-hint").inner_text()
        assert f"runner resume {killed}" in hint and "interrupted" in hint and "failed step" not in hint
        screenshot(page, "run-killed-narrow")
    finally:
        page.close()
