"""MLflow tracking and the model registry on a team's shared stores (issue 14, item 2): a real ``mlflow server``
whose metadata is in PostgreSQL and whose artifacts are in an S3 bucket (tests/mlflow_server.py), used by pipelines
run through the CLI with nothing but ``RUNNER_TRACKING_URI``.

What the tests assert is read from the stores themselves: MLflow's client on the server, the server's database with
a psycopg connection of the test's own, the bucket with s3fs. The server is shared by the tests of a worker, so each
test keeps to a pipeline (an experiment) and a model of its own name.
"""

from __future__ import annotations

import json
import uuid

import nbformat
import pytest
from conftest import step
from s3_server import s3
from mlflow import MlflowClient

from runner.config import load_config
from runner.store.records import REGISTERED_SCRAP, RunStore

CLIENT_ONLY_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
                    "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "MLFLOW_S3_ENDPOINT_URL")


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def tracked(project, shared_mlflow, monkeypatch):
    """A project tracking to the shared server, whose runner has no S3 settings or credentials at all: every
    artifact must reach the bucket through the server."""
    for name in CLIENT_ONLY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RUNNER_TRACKING_URI", shared_mlflow.url)
    return project


def the_run(project):
    (record,) = RunStore(load_config(project.config).stores.runs).list()
    return record


def mlflow_rows(server, experiment: str) -> dict[str, tuple]:
    """The experiment's runs in the server's database: run id -> (name, status, artifact URI)."""
    found = server.rows("SELECT r.run_uuid, r.name, r.status, r.artifact_uri FROM runs r JOIN experiments e "
                        "ON e.experiment_id = r.experiment_id WHERE e.name = %s", (experiment,))
    return {row[0]: tuple(row[1:]) for row in found}


@pytest.mark.slow  # two kernels, and the server's start if it comes first
def test_a_run_is_tracked_in_postgresql_and_its_artifacts_reach_the_bucket_through_the_server(tracked, shared_mlflow):
    server, pipeline = shared_mlflow, unique("tracked")
    tracked.write({pipeline: {"steps": {"glue": step("glues_values", parameters={"base": 3}),
                                        "log": step("logs_to_mlflow", parameters={"value": 2.5}, needs=["glue"])}}})
    result = tracked.cli("run", pipeline, "--as-of", "2026-03-01")
    assert result.exit_code == 0, result.output
    record = the_run(tracked)
    glue, log = record.steps["glue"], record.steps["log"]
    assert record.tracking_uri == server.url

    # MLflow's view, through the server
    client = MlflowClient(server.url)
    experiment = client.get_experiment_by_name(pipeline)
    assert experiment.experiment_id == record.mlflow_experiment_id
    assert experiment.artifact_location == f"mlflow-artifacts:/{experiment.experiment_id}"  # the server's proxy
    parent = client.get_run(record.mlflow_run_id)
    assert (parent.info.status, parent.info.run_name) == ("FINISHED", record.run_id)
    assert parent.data.tags["runner.as_of"] == "2026-03-01"
    children = {name: client.get_run(record.steps[name].mlflow_run_id) for name in ("glue", "log")}
    for name, child in children.items():
        assert child.info.status == "FINISHED" and child.data.tags["mlflow.parentRunId"] == record.mlflow_run_id
        assert child.data.tags["runner.step"] == name
        assert {a.path for a in client.list_artifacts(child.info.run_id)} == {
            f"{name}.ipynb", f"{name}.html", "scraps.json"}
    assert children["glue"].data.params == {"base": "3"}
    assert children["glue"].data.metrics == {"number": 63.0, "fraction": 0.375}
    assert children["glue"].data.tags["scrap.label"] == "champion"
    assert children["log"].data.params == {"value": "2.5", "inside_param": "yes"}  # the notebook's own mlflow calls
    assert children["log"].data.metrics == {"inside_metric": 2.5}

    # the server's database: the runs, their metrics and params, as rows
    assert mlflow_rows(server, pipeline) == {
        run.info.run_id: (run.info.run_name, "FINISHED",
                          f"mlflow-artifacts:/{experiment.experiment_id}/{run.info.run_id}/artifacts")
        for run in (parent, *children.values())}
    assert server.rows("SELECT key, value FROM metrics WHERE run_uuid = %s ORDER BY key", (glue.mlflow_run_id,)) == [
        ("fraction", 0.375), ("number", 63.0)]
    assert server.rows("SELECT key, value FROM params WHERE run_uuid = %s ORDER BY key", (log.mlflow_run_id,)) == [
        ("inside_param", "yes"), ("value", "2.5")]
    assert server.rows("SELECT value FROM tags WHERE run_uuid = %s AND key = 'mlflow.parentRunId'",
                       (glue.mlflow_run_id,)) == [(record.mlflow_run_id,)]

    # the bucket: every artifact under mlflow/<experiment>/<run>/artifacts/, and only those
    folder = {name: f"{experiment.experiment_id}/{record.steps[name].mlflow_run_id}/artifacts" for name in children}
    assert server.keys(f"{experiment.experiment_id}/") == {
        f"{folder[name]}/{file}" for name in children for file in (f"{name}.ipynb", f"{name}.html", "scraps.json")}
    fs = server.s3()
    run_dir = tracked.home / "runs" / pipeline / record.run_id
    assert fs.cat_file(f"{server.artifacts}/{folder['glue']}/glue.ipynb") == (run_dir / "glue.ipynb").read_bytes()
    executed = nbformat.reads(fs.cat_file(f"{server.artifacts}/{folder['glue']}/glue.ipynb").decode(), as_version=4)
    injected = [cell for cell in executed.cells if "injected-parameters" in cell.metadata.get("tags", [])]
    assert len(injected) == 1 and "base = 3" in injected[0].source
    scraps = json.loads(fs.cat_file(f"{server.artifacts}/{folder['glue']}/scraps.json"))
    assert scraps["number"] == 63 and scraps["model_uri"] == "models:/demo/3"
    assert "<html" in fs.cat_file(f"{server.artifacts}/{folder['log']}/log.html").decode()


@pytest.mark.slow  # a kernel, and the server's start if it comes first
def test_a_failed_step_is_failed_in_postgresql_and_its_notebook_with_the_error_is_in_the_bucket(tracked,
                                                                                                 shared_mlflow):
    server, pipeline = shared_mlflow, unique("fails")
    tracked.write({pipeline: {"steps": {"bad": step("broken", parameters={"x": 7})}}})
    result = tracked.cli("run", pipeline)
    assert result.exit_code == 1, result.output
    record = the_run(tracked)
    bad = record.steps["bad"]
    assert (record.status, bad.status) == ("failed", "failed")
    assert {run: status for run, (_, status, _) in mlflow_rows(server, pipeline).items()} == {
        record.mlflow_run_id: "FAILED", bad.mlflow_run_id: "FAILED"}
    notebook = f"{server.artifacts}/{record.mlflow_experiment_id}/{bad.mlflow_run_id}/artifacts/bad.ipynb"
    executed = nbformat.reads(server.s3().cat_file(notebook).decode(), as_version=4)
    errors = [output for cell in executed.cells for output in cell.get("outputs", []) if output.output_type == "error"]
    assert [(error.ename, error.evalue) for error in errors] == [("ValueError", "boom with x=7")]


@pytest.mark.slow  # two kernels registering a version each, and the server's start if it comes first
def test_models_registered_by_steps_are_in_the_registry_on_postgresql_with_their_files_in_the_bucket(
        project, shared_mlflow, s3_env, bucket, monkeypatch):  # noqa: F811
    """The team set-up of docs/guides/deployment.md: tracking on the server, the run store in a bucket. The second
    step's version is judged against the first's, the champion by then, which its kernel loads back through the
    server from the bucket."""
    server, pipeline, model = shared_mlflow, unique("train"), unique("tiny")
    monkeypatch.setenv("RUNNER_TRACKING_URI", server.url)
    monkeypatch.setenv("RUNNER_RUN_STORE", f"s3://{bucket}/runs")
    project.write({pipeline: {"steps": {
        "first": step("saves_model", parameters={"model_name": model}),
        "second": step("saves_model", parameters={"model_name": model}, needs=["first"]),  # the same data: no gain
    }}}, models={model: {"metric": "auc", "margin": 0.01}})
    result = project.cli("run", pipeline)
    assert result.exit_code == 0, result.output
    (record,) = RunStore(f"s3://{bucket}/runs").list()
    first, second = record.steps["first"], record.steps["second"]
    assert (first.scraps["model_uri"], first.scraps["model_decision"]) == (f"models:/{model}/1", "champion")
    assert (second.scraps["model_uri"], second.scraps["model_decision"]) == (f"models:/{model}/2", "challenger")
    (judged,) = second.scraps[REGISTERED_SCRAP]
    assert judged["reason"].startswith("does not beat champion v1 on the same holdout: auc ")  # v1 was loaded
    assert record.warnings == []

    # the registry, through the server
    client = MlflowClient(server.url)
    assert client.get_registered_model(model).aliases == {"champion": "1", "challenger": "2"}
    versions = {v.version: v for v in client.search_model_versions(f"name = '{model}'")}
    assert {number: (v.run_id, v.status, v.tags["runner.step_status"], v.tags["step"])
            for number, v in versions.items()} == {
        "1": (first.mlflow_run_id, "READY", "succeeded", "first"),
        "2": (second.mlflow_run_id, "READY", "succeeded", "second")}
    listed = json.loads(project.cli("models", model, "--json").stdout)
    assert {v["version"]: v["aliases"] for v in listed["versions"]} == {"1": ["champion"], "2": ["challenger"]}

    # the server's database
    assert server.rows("SELECT version, run_id, status FROM model_versions WHERE name = %s ORDER BY version",
                       (model,)) == [(1, first.mlflow_run_id, "READY"), (2, second.mlflow_run_id, "READY")]
    assert server.rows("SELECT alias, version FROM registered_model_aliases WHERE name = %s ORDER BY alias",
                       (model,)) == [("challenger", 2), ("champion", 1)]
    assert {run: status for run, (_, status, _) in mlflow_rows(server, pipeline).items()} == {
        run: "FINISHED" for run in (record.mlflow_run_id, first.mlflow_run_id, second.mlflow_run_id)}

    # the bucket: each version's model files, and the reference profile logged with it
    fs = server.s3()
    for number, version in versions.items():
        assert version.source.startswith("models:/m-")  # MLflow 3: a logged model, in the run's experiment
        logged = client.get_logged_model(version.source.removeprefix("models:/"))
        assert logged.source_run_id == version.run_id
        assert server.rows("SELECT storage_location FROM model_versions WHERE name = %s AND version = %s",
                           (model, int(number))) == [(logged.artifact_location,)]
        folder = server.in_bucket(logged.artifact_location)
        assert folder.startswith(f"{server.bucket}/mlflow/{record.mlflow_experiment_id}/models/{logged.model_id}/")
        files = {path.removeprefix(folder + "/") for path in fs.find(folder)}
        # the pyfunc wrapper, and inside it the estimator in the sklearn flavor (skops)
        assert {"MLmodel", "artifacts/estimator/MLmodel", "artifacts/estimator/model.skops"} <= files, files
        mlmodel = fs.cat_file(f"{folder}/MLmodel").decode()
        assert f"model_id: {logged.model_id}" in mlmodel and "python_function" in mlmodel
        profile = f"{server.artifacts}/{record.mlflow_experiment_id}/{version.run_id}/artifacts/{model}/" \
                  "reference_profile.json"
        assert {"signal", "other", "score"} <= set(json.loads(fs.cat_file(profile))["columns"])

    # the run store, in the other bucket: the record points at the server
    stored = json.loads(s3().cat_file(f"{bucket}/runs/{pipeline}/{record.run_id}/run.json"))
    assert stored["tracking_uri"] == server.url and stored["status"] == "succeeded"
