"""MLflow: an experiment per pipeline, a parent run per run, a child run per step, notebooks as artifacts."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import step
from mlflow.tracking import MlflowClient

from runner.config import load_config
from runner.store.records import RunStore


def only_run(project):
    (record,) = RunStore(load_config(project.config).stores.runs).list()
    return record


def check_tracked(client: MlflowClient, record, expect_artifacts: bool = True) -> None:
    experiment = client.get_experiment_by_name(record.pipeline)
    parent = client.get_run(record.mlflow_run_id)
    assert parent.info.experiment_id == experiment.experiment_id
    assert parent.info.run_name == record.run_id
    assert parent.data.tags["runner.run_id"] == record.run_id
    assert parent.data.tags["runner.as_of"] == record.as_of
    for name, step_record in record.steps.items():
        child = client.get_run(step_record.mlflow_run_id)
        tags = child.data.tags
        assert tags["mlflow.parentRunId"] == parent.info.run_id and tags["runner.step"] == name
        assert tags["runner.notebook.sha256"] == step_record.notebook_sha256
        assert tags["runner.trigger"] == "manual" and tags["runner.pipeline"] == record.pipeline
        if expect_artifacts:
            artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
            assert {f"{name}.ipynb", f"{name}.html"} <= artifacts


def test_steps_become_child_runs_with_params_metrics_tags_and_artifacts(project):
    project.write({"p": {"steps": {"glue": step("glues_values", parameters={"base": 3})}}})
    assert project.cli("run", "p", "--as-of", "2026-03-01").exit_code == 0
    record = only_run(project)
    client = MlflowClient(project.tracking_uri)
    check_tracked(client, record)
    child = client.get_run(record.steps["glue"].mlflow_run_id)
    assert child.info.status == "FINISHED" and client.get_run(record.mlflow_run_id).info.status == "FINISHED"
    assert child.data.params == {"base": "3"}
    assert child.data.metrics == {"number": 63.0, "fraction": 0.375}
    assert child.data.tags["scrap.label"] == "champion" and child.data.tags["scrap.ok"] == "True"
    assert "scraps.json" in {a.path for a in client.list_artifacts(child.info.run_id)}
    experiment = client.get_experiment_by_name("p")
    assert experiment.artifact_location.startswith((project.home / "mlartifacts").as_uri())


def test_a_failed_step_marks_its_mlflow_runs_failed(project):
    project.write({"p": {"steps": {"bad": step("broken")}}})
    assert project.cli("run", "p").exit_code == 1
    record = only_run(project)
    client = MlflowClient(project.tracking_uri)
    assert client.get_run(record.steps["bad"].mlflow_run_id).info.status == "FAILED"
    assert client.get_run(record.mlflow_run_id).info.status == "FAILED"


def test_mlflow_start_run_inside_the_notebook_logs_into_the_steps_run(project):
    project.write({"p": {"steps": {"log": step("logs_to_mlflow", parameters={"value": 2.5})}}})
    assert project.cli("run", "p").exit_code == 0
    record = only_run(project)
    log = record.steps["log"]
    assert log.scraps["mlflow_run_id_seen"] == log.mlflow_run_id == log.scraps["env_mlflow_run_id"]
    child = MlflowClient(project.tracking_uri).get_run(log.mlflow_run_id)
    assert child.data.metrics["inside_metric"] == 2.5 and child.data.params["inside_param"] == "yes"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on localhost with its own sqlite store and artifact folder."""
    port = free_port()
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent))
    proc = subprocess.Popen(
        [mlflow, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None:
                pytest.fail("mlflow server exited at start")
            time.sleep(0.5)
    try:
        MlflowClient(url).search_experiments()  # wait until it answers, not only listens
        yield url
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


@pytest.mark.slow
def test_remote_tracking_through_a_real_mlflow_server(project, mlflow_server, monkeypatch):
    monkeypatch.setenv("RUNNER_TRACKING_URI", mlflow_server)
    project.write({"p": {"steps": {"log": step("logs_to_mlflow")}}})
    result = project.cli("run", "p")
    assert result.exit_code == 0, result.output
    record = only_run(project)
    assert record.tracking_uri == mlflow_server
    client = MlflowClient(mlflow_server)
    check_tracked(client, record)
    assert client.get_run(record.steps["log"].mlflow_run_id).data.metrics["inside_metric"] == 1.5


def test_an_unreachable_tracking_server_is_one_clear_line(project, monkeypatch):
    monkeypatch.setenv("RUNNER_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    project.write({"p": {"steps": {"a": step("ok")}}})
    result = project.cli("run", "p")
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: could not open the experiment of MLflow at http://127.0.0.1:")
    assert "check RUNNER_TRACKING_URI" in line
