"""Steps on a Dask cluster (issue 14): a LocalCluster with two worker processes, reached only by its address; the run
store in a bucket on moto's S3 server, the warehouse on PostgreSQL. The workers get the bucket's endpoint and
credentials in their environment and nothing of the runner's; no folder of the runner's is shared with them
except the tests' own notebooks (the notebooks' bytes travel with each attempt anyway)."""

from __future__ import annotations

import json
import re
from pathlib import Path
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
import s3fs
from conftest import step


@pytest.fixture
def warehouse(postgres_url) -> str:
    """A database of its own in the session's PostgreSQL cluster, as an SQLAlchemy URL."""
    import uuid

    import psycopg

    name = f"dask_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_url.rsplit("/", 1)[0] + f"/{name}"


def rows(url: str, sql: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        return conn.execute(sql).fetchall()


def record_of(project, run_id: str) -> dict:
    done = project.cli("show", run_id, "--json")
    assert done.exit_code == 0, done.output
    return json.loads(done.stdout)


def run_id_of(stdout: str) -> str:
    """The run id of `runner run`'s summary line: "run <id> <status> in ..." or "run <id> <status>, verdict <v> in"."""
    return re.search(r"^run (\S+) (?:succeeded|failed|interrupted)(?:, verdict \w+)? in ", stdout, re.MULTILINE).group(1)


def test_dask_needs_an_address_and_stores_its_workers_can_reach(project):
    """Refused before anything runs, naming runner.yaml's key: no address; an option it does not have; stores in
    this machine's folders (the embedded defaults) unless the project says every worker mounts them."""
    project.write({"p": {"steps": {"a": step("ok")}}})
    done = project.cli("run", "p", "--executor", "dask")
    assert done.exit_code == 2
    assert "executors.dask.address" in done.stderr and "needs its scheduler's address" in done.stderr
    project.write({"p": {"steps": {"a": step("ok")}}}, executors={"dask": {"address": "tcp://127.0.0.1:1",
                                                                            "adress": "x"}})
    done = project.cli("run", "p", "--executor", "dask")
    assert done.exit_code == 2 and "has no option 'adress'" in done.stderr
    project.write({"p": {"steps": {"a": step("ok")}}}, defaults={"executor": "dask"},
                  executors={"dask": {"address": "tcp://127.0.0.1:1"}})
    done = project.cli("run", "p")
    assert done.exit_code == 2
    message = done.stderr
    for store in ("the run store", "snapshots", "the warehouse", "MLflow tracking"):
        assert store in message
    assert "shared_filesystem" in message
    assert not (project.home / "runs" / "p").exists()


def test_a_scheduler_that_does_not_answer_is_one_line_and_nothing_is_recorded(project):
    project.write({"p": {"steps": {"a": step("ok")}}},
                  executors={"dask": {"shared_filesystem": True, "connect_timeout": "2s"}})
    started = time.monotonic()
    done = project.cli("run", "p", "--executor", "dask", "--address", "tcp://127.0.0.1:9")
    assert time.monotonic() - started < 30
    assert done.exit_code != 0
    line = done.stderr.strip().splitlines()[-1]
    assert "could not reach the Dask scheduler at tcp://127.0.0.1:9" in line and "--address" in line
    assert not (project.home / "runs" / "p").exists()


@pytest.mark.slow
def test_steps_run_on_the_workers_and_leave_their_files_in_the_bucket(project, dask_cluster, s3_env, bucket,
                                                                      warehouse, shared_mlflow, monkeypatch):
    """Two independent steps, two workers: each attempt's record names the worker it ran on, the bucket holds each
    step's notebook, page and log, and nothing of the run is left in a local folder. The worker's kernel comes
    from its fork server, which imported the project's preloads."""
    from conftest import write_notebook

    monkeypatch.setenv("RUNNER_RUN_STORE", f"s3://{bucket}/runs")
    monkeypatch.setenv("RUNNER_SNAPSHOTS", f"s3://{bucket}/snapshots")
    monkeypatch.setenv("RUNNER_WAREHOUSE_URL", warehouse)
    monkeypatch.setenv("RUNNER_TRACKING_URI", shared_mlflow.url)
    write_notebook(project.root / "preloaded.ipynb", [
        ("parameters", "x = 1"),
        "import sys, psutil, scrapbook as sb\n"
        "sb.glue('preloaded', 'xml.dom.minidom' in sys.modules)  # imported by nothing else: the preload only\n"
        "sb.glue('parent', ' '.join(psutil.Process().parent().cmdline()).split())",
    ])
    project.write({"p": {"steps": {"a": step("glues_values"), "b": {"notebook": "preloaded.ipynb"}}}},
                  defaults={"preload": ["scrapbook", "xml.dom.minidom"]},
                  executors={"dask": {"address": dask_cluster.address}})
    done = project.cli("run", "p", "--executor", "dask", "--max-workers", "2")
    assert done.exit_code == 0, done.output
    record = record_of(project, run_id_of(done.stdout))
    workers = {step["attempts"][0]["worker"].split()[0] for step in record["steps"].values()}
    assert workers <= set(dask_cluster.workers()) and len(workers) == 2
    assert record["steps"]["a"]["scraps"]["number"] == 42
    assert record["steps"]["b"]["scraps"]["preloaded"] is True
    assert record["steps"]["b"]["scraps"]["parent"][1:3] == ["-m", "runner.notebook.forkserver"]
    files = {path.rsplit("/", 1)[1] for path in s3fs.S3FileSystem(skip_instance_cache=True).find(
        f"{bucket}/runs/p/{record['run_id']}")}
    assert files == {"run.json", *(f"{name}.{kind}" for name in "ab" for kind in ("ipynb", "html", "log",
                                                                                    "source.ipynb"))}, files
    assert not (project.home / "runs").exists() and not list((project.home / "staging").glob("*/*"))


@pytest.mark.slow
def test_a_worker_killed_mid_step_fails_the_attempt_as_a_dead_kernel_and_the_retry_runs_on_another_worker(
        project, dask_cluster, s3_env, bucket, warehouse, shared_mlflow, monkeypatch, tmp_path):
    """The worker running a predictions write is SIGKILLed inside the write: the attempt fails StepProcessDied naming
    that worker, the step's retry runs on another, and the predictions table holds the retry's rows only."""
    monkeypatch.setenv("RUNNER_RUN_STORE", f"s3://{bucket}/runs")
    monkeypatch.setenv("RUNNER_SNAPSHOTS", f"s3://{bucket}/snapshots")
    monkeypatch.setenv("RUNNER_WAREHOUSE_URL", warehouse)
    monkeypatch.setenv("RUNNER_TRACKING_URI", shared_mlflow.url)
    marker = tmp_path / "writing"
    project.write({"p": {"steps": {"score": step("writes_slowly", retries=1, retry_delay=0,
                                                 parameters={"marker": str(marker), "seconds": 6})}}},
                  executors={"dask": {"address": dask_cluster.address}})
    workers = dask_cluster.workers()
    killed: dict[str, int] = {}

    def kill_the_worker_inside_the_write() -> None:
        deadline = time.monotonic() + 120
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        kernel = int(marker.read_text().split()[0])
        worker = psutil.Process(kernel).parent().parent()  # kernel <- step process <- Dask worker
        killed.update(address=next(a for a, pid in workers.items() if pid == worker.pid), pid=worker.pid)
        marker.unlink()
        os.kill(worker.pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_the_worker_inside_the_write)
    killer.start()
    done = project.cli("run", "p", "--executor", "dask")
    killer.join()
    assert done.exit_code == 0, done.output
    record = record_of(project, run_id_of(done.stdout))
    first, second = record["steps"]["score"]["attempts"]
    assert first["status"] == "failed" and first["error"]["ename"] == "StepProcessDied"
    assert killed["address"] in first["error"]["evalue"] and first["worker"].startswith(killed["address"])
    assert second["status"] == "succeeded" and not second["worker"].startswith(killed["address"])
    assert rows(warehouse, "SELECT COUNT(*), COUNT(DISTINCT run_id) FROM predictions") == [(10, 1)]
    assert record["status"] == "succeeded"


@pytest.mark.slow
def test_a_teams_project_trains_scores_and_monitors_on_the_cluster_and_two_schedulers_run_its_tick_once(
        tmp_path, dask_cluster, s3_env, bucket, warehouse, shared_mlflow, monkeypatch):
    """`runner init`'s project, unchanged but for where it runs: runner.yaml names the Dask executor and its address,
    the stores are URLs (warehouse on PostgreSQL, runs and snapshots in a bucket, MLflow server on PostgreSQL with
    its artifacts in a bucket). Ingest, train, score and monitor succeed on the workers; the model is registered
    on the server with its files in the bucket, the predictions are in PostgreSQL. Then two schedulers started at
    once for the same tick run it once."""
    from click.testing import CliRunner
    from mlflow import MlflowClient
    from runner.cli import main

    root = tmp_path / "churn"
    for name, value in {"RUNNER_RUN_STORE": f"s3://{bucket}/runs", "RUNNER_SNAPSHOTS": f"s3://{bucket}/snapshots",
                        "RUNNER_WAREHOUSE_URL": warehouse, "RUNNER_TRACKING_URI": shared_mlflow.url,
                        "RUNNER_USER": "ci"}.items():
        monkeypatch.setenv(name, value)

    def runner(*args: str) -> str:
        done = CliRunner().invoke(main, list(args), catch_exceptions=False)
        assert done.exit_code == 0, f"runner {' '.join(args)}: {done.stdout}\n{done.stderr}"
        print(done.stdout)
        return done.stdout

    runner("init", str(root))
    config = root / "runner.yaml"
    text = config.read_text().replace("\ndefaults:\n", "\ndefaults:\n  executor: dask\n", 1)  # as a team would
    config.write_text(text + f"\nexecutors:\n  dask: {{address: '{dask_cluster.address}'}}\n")
    ids = {}
    for pipeline, params in (("churn_ingest", ["-p", "ingest.months=3"]), ("churn_train", ["-p", "train.train_months=2"]),
                             ("churn_score", [])):
        ids[pipeline] = run_id_of(runner("run", pipeline, *params, "--config", str(config)))
    store = s3fs.S3FileSystem(skip_instance_cache=True)
    records = {pipeline: json.loads(store.cat_file(f"{bucket}/runs/{pipeline}/{run_id}/run.json"))
               for pipeline, run_id in ids.items()}
    cluster_workers = set(dask_cluster.workers())
    for pipeline, record in records.items():
        assert record["status"] == "succeeded", (pipeline, record)
        for step_record in record["steps"].values():
            assert step_record["attempts"][-1]["worker"].split()[0] in cluster_workers
    assert not (root / ".runner" / "runs").exists()

    client = MlflowClient(shared_mlflow.url)
    champion = client.get_model_version_by_alias("churn", "champion")
    model_id = champion.source.removeprefix("models:/")  # MLflow 3: a logged model, its files under models/<id>/
    assert any(key.endswith(f"/models/{model_id}/artifacts/MLmodel") for key in shared_mlflow.keys())
    assert rows(warehouse, f"SELECT COUNT(*) FROM predictions WHERE run_id = '{ids['churn_score']}'")[0][0] > 0
    assert records["churn_score"]["steps"]["monitor"]["scraps"].get("status") in ("ok", "warn", "alert")

    # the tick: a schedule on the ingest, two schedulers at once
    lines = config.read_text().replace("parameters: {months: 12}", "parameters: {months: 1}").splitlines()
    at = next(n for n, line in enumerate(lines) if line.startswith("  churn_ingest:"))
    lines.insert(at + 1, "    schedule: {cron: '* * * * *', timezone: UTC}")
    config.write_text("\n".join(lines) + "\n")

    script = [str(Path(sys.executable).with_name("runner")), "scheduler", "--once", "--config", str(config)]
    schedulers = [subprocess.Popen(script, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                  for _ in range(2)]
    outputs = [proc.communicate(timeout=300) for proc in schedulers]
    assert all(proc.returncode == 0 for proc in schedulers), outputs
    scheduled = [json.loads(store.cat_file(path)) for path in store.glob(f"{bucket}/runs/churn_ingest/*/run.json")]
    scheduled = [record for record in scheduled if record["trigger"] == "schedule"]
    assert len(scheduled) == 1 and scheduled[0]["status"] == "succeeded", outputs


@pytest.mark.slow
def test_a_runner_killed_mid_step_leaves_no_step_running_on_the_worker_and_no_rows(
        project, dask_cluster, s3_env, bucket, warehouse, shared_mlflow, monkeypatch, tmp_path):
    """SIGKILL of `runner run` while its step, on a worker, is inside a predictions write: the scheduler loses the
    runner's client and cancels the attempt, the worker kills the step's kernel at once, PostgreSQL rolls the write
    back, and `runner runs` shows the run as interrupted (its process is gone)."""
    monkeypatch.setenv("RUNNER_RUN_STORE", f"s3://{bucket}/runs")
    monkeypatch.setenv("RUNNER_SNAPSHOTS", f"s3://{bucket}/snapshots")
    monkeypatch.setenv("RUNNER_WAREHOUSE_URL", warehouse)
    monkeypatch.setenv("RUNNER_TRACKING_URI", shared_mlflow.url)
    marker = tmp_path / "writing"
    project.write({"p": {"steps": {"score": step("writes_slowly", parameters={"marker": str(marker), "seconds": 60})}}},
                  executors={"dask": {"address": dask_cluster.address}})
    runner = subprocess.Popen([str(Path(sys.executable).with_name("runner")), "run", "p", "--executor", "dask",
                               "--config", str(project.config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert runner.poll() is None and time.monotonic() < deadline, runner.communicate()
        time.sleep(0.1)
    kernel, helper = (psutil.Process(int(pid)) for pid in marker.read_text().split()[:2])
    runner.kill()
    runner.wait()
    gone, alive = psutil.wait_procs([kernel, helper], timeout=30)
    assert not alive, "the step's kernel outlived its runner"
    # the write created the table and its first rows in one transaction: all of it rolled back
    assert rows(warehouse, "SELECT to_regclass('public.predictions')") == [(None,)]
    listed = json.loads(project.cli("runs", "--json").stdout)
    assert [entry["status"] for entry in listed] == ["interrupted"]


@pytest.mark.slow
def test_a_worker_whose_packages_differ_refuses_the_step_naming_them(project, s3_env, s3_endpoint, bucket, warehouse,
                                                                     shared_mlflow, monkeypatch, tmp_path):
    """A cluster whose workers have one more distribution than the runner's host: the step is refused on the
    worker before its notebook runs, with the package named, and not retried."""
    import dask_cluster as clusters
    from s3_server import CREDENTIALS

    site = tmp_path / "site" / "nr_drift-1.0.dist-info"
    site.mkdir(parents=True)
    (site / "METADATA").write_text("Metadata-Version: 2.1\nName: nr-drift\nVersion: 1.0\n")
    other = clusters.start(tmp_path, {"AWS_ENDPOINT_URL": s3_endpoint, **CREDENTIALS, "PYTHONPATH": str(site.parent)})
    try:
        monkeypatch.setenv("RUNNER_RUN_STORE", f"s3://{bucket}/runs")
        monkeypatch.setenv("RUNNER_SNAPSHOTS", f"s3://{bucket}/snapshots")
        monkeypatch.setenv("RUNNER_WAREHOUSE_URL", warehouse)
        monkeypatch.setenv("RUNNER_TRACKING_URI", shared_mlflow.url)
        project.write({"p": {"steps": {"a": step("ok", retries=2, retry_delay=0)}}},
                      executors={"dask": {"address": other.address}})
        done = project.cli("run", "p", "--executor", "dask")
    finally:
        clusters.stop(other.process)
    assert done.exit_code == 1
    record = record_of(project, run_id_of(done.stdout))
    [attempt] = record["steps"]["a"]["attempts"]
    assert attempt["error"]["ename"] == "EnvironmentMismatch" and "nr-drift 1.0 here, not planned" in \
        attempt["error"]["evalue"]
    assert attempt["worker"] and attempt["output"] is None
