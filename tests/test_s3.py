"""The run store and snapshots in an S3 bucket, against a real S3 endpoint (moto's server, tests/s3_server.py).

The runner reaches the bucket through the environment only (AWS_ENDPOINT_URL and credentials), as it
would reach S3; what it left there is checked by listing the bucket with s3fs, not through the runner.
"""

from __future__ import annotations

import json

import nbformat
import pandas as pd
import pytest
from conftest import step
from s3_server import s3

from runner.store.locks import PipelineLock
from runner.store.records import RunStore


@pytest.fixture
def s3_project(project, bucket, monkeypatch):
    """A project whose run store is ``s3://<bucket>/runs``."""
    monkeypatch.setenv("RUNNER_RUN_STORE", f"s3://{bucket}/runs")
    project.bucket = bucket
    return project


def keys(bucket: str, under: str = "") -> set[str]:
    """The objects of the bucket (below ``under``), relative to it."""
    return {path.removeprefix(f"{bucket}/") for path in s3().find(f"{bucket}/{under}")}


def the_run(project, status: str | None = None):
    records = RunStore(f"s3://{project.bucket}/runs").list(status=status)
    assert len(records) == 1, records
    return records[0]


@pytest.mark.slow  # about 25 s: two kernels
def test_a_run_keeps_its_record_and_files_in_the_bucket_and_nothing_locally(s3_project):
    s3_project.write({"p": {"steps": {"first": step("ok", parameters={"x": 2}), "second": step("glues_values")}}})
    result = s3_project.cli("run", "p")
    assert result.exit_code == 0, result.output
    record = the_run(s3_project)
    folder = f"runs/p/{record.run_id}"
    assert keys(s3_project.bucket, "runs/p") == {f"{folder}/{name}" for name in (
        "run.json", "first.ipynb", "first.html", "first.log", "first.source.ipynb",
        "second.ipynb", "second.html", "second.log", "second.source.ipynb")}
    stored = json.loads(s3().cat_file(f"{s3_project.bucket}/{folder}/run.json"))
    assert stored["status"] == "succeeded" and stored["steps"]["first"]["scraps"]["result"] == 4
    executed = nbformat.reads(s3().cat_file(f"{s3_project.bucket}/{folder}/first.ipynb").decode(), as_version=4)
    assert any("x = 2" in cell.source for cell in executed.cells)
    assert "<html" in s3().cat_file(f"{s3_project.bucket}/{folder}/second.html").decode()
    assert not keys(s3_project.bucket, "runs/.locks")  # the lock was released
    staging = s3_project.home / "staging"
    assert not (staging / "p" / record.run_id).exists()  # the run's staging folder went with its end
    assert not staging.exists() or not any(path.is_file() for path in staging.rglob("*")), list(staging.rglob("*"))
    assert not (s3_project.home / "runs").exists()  # nothing went to the local default store

    listed = s3_project.cli("runs")
    assert listed.exit_code == 0 and record.run_id in listed.stdout and "succeeded" in listed.stdout
    shown = s3_project.cli("show", record.run_id)
    assert shown.exit_code == 0 and "first" in shown.stdout and "second" in shown.stdout, shown.output


@pytest.mark.slow  # about 50 s: three kernels
def test_resume_reuses_the_succeeded_step_by_copying_inside_the_bucket(s3_project, tmp_path):
    fixed = tmp_path / "fixed"
    s3_project.write({"p": {"steps": {
        "first": step("glues_values"),
        "second": step("fails_unless", needs=["first"], parameters={"needs": str(fixed)}),
    }}})
    assert s3_project.cli("run", "p").exit_code == 1
    failed = the_run(s3_project, "failed")
    assert failed.steps["second"].status == "failed"
    fixed.write_text("")
    result = s3_project.cli("resume", failed.run_id)
    assert result.exit_code == 0, result.output
    resumed = the_run(s3_project, "succeeded")
    assert resumed.origin == failed.run_id and resumed.steps["first"].reused_from == failed.run_id
    names = {key.rsplit("/", 1)[1] for key in keys(s3_project.bucket, f"runs/p/{resumed.run_id}")}
    assert {"first.ipynb", "first.html", "first.log", "first.source.ipynb", "second.ipynb", "run.json"} <= names
    assert "reused from run" in s3_project.cli("show", resumed.run_id).stdout


def test_a_second_run_is_refused_while_the_lock_in_the_bucket_is_held(s3_project):
    s3_project.write({"p": {"steps": {"a": step("glues_values")}}})
    store = RunStore(f"s3://{s3_project.bucket}/runs")
    with PipelineLock(store, "p", "a manual run"):
        assert keys(s3_project.bucket, "runs/.locks") == {"runs/.locks/p.lock"}
        result = s3_project.cli("run", "p")
    assert result.exit_code != 0
    assert "pipeline 'p' is already running (a manual run" in result.stderr, result.output
    assert not keys(s3_project.bucket, "runs/.locks")
    assert store.list() == []


def test_two_hosts_taking_the_lock_at_once_in_the_bucket_get_it_once(bucket, monkeypatch):
    """Both saw no lock (the window between looking and writing): the bucket's conditional write lets one in."""
    first, second = (PipelineLock(RunStore(f"s3://{bucket}/runs"), "p", f"host {n}") for n in (1, 2))
    monkeypatch.setattr(second.store.fs, "exists", lambda path: False)  # the second looked before the first wrote
    with first:
        assert second._create() is False
        assert second.holder()["token"] == first.token  # the first's lock, untouched
    assert not keys(bucket, "runs/.locks")


def test_a_lock_taken_again_while_it_is_broken_in_the_bucket_stays(bucket, monkeypatch):
    """Breaking a dead holder's lock deletes it only if it is still the object that was judged dead (If-Match):
    a lock refreshed between the breaker's read and its delete survives."""
    store = RunStore(f"s3://{bucket}/runs")
    holder, breaker = PipelineLock(store, "p", "host 1"), PipelineLock(RunStore(f"s3://{bucket}/runs"), "p", "host 2")
    with holder:
        seen = s3().cat_file(f"{bucket}/runs/.locks/p.lock")
        fs = breaker.store.fs
        read = fs.cat_file

        def refreshed_meanwhile(path, *args, **kwargs):  # the holder's heartbeat lands after the ETag was read
            s3().pipe_file(f"{bucket}/runs/.locks/p.lock", seen + b" ")
            monkeypatch.setattr(fs, "cat_file", read)
            return seen

        monkeypatch.setattr(fs, "cat_file", refreshed_meanwhile)
        breaker._break(seen)
        assert "runs/.locks/p.lock" in keys(bucket, "runs/.locks")  # not deleted: it changed
        breaker._break(s3().cat_file(f"{bucket}/runs/.locks/p.lock"))  # judged again, unchanged: it goes
        assert not keys(bucket, "runs/.locks")


@pytest.mark.slow  # 11 s alone, over 20 s beside another worker
def test_review_build_reads_the_bucket_and_writes_the_site_locally(s3_project, tmp_path):
    s3_project.write({"p": {"steps": {"a": step("glues_values")}}})
    assert s3_project.cli("run", "p").exit_code == 0
    record = the_run(s3_project)
    out = tmp_path / "site"
    result = s3_project.cli("review", "build", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert record.run_id in (out / "index.html").read_text()
    assert any(record.run_id in path.name or record.run_id in str(path) for path in out.rglob("*.html"))


# -- snapshots ---------------------------------------------------------------------------------
def test_snapshots_in_the_bucket_are_content_addressed_like_local_ones(bucket, tmp_path):
    from runner.data.snapshots import SnapshotStore

    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    remote, local = SnapshotStore(f"s3://{bucket}/snapshots"), SnapshotStore(tmp_path / "snapshots")
    digest = remote.save(frame)
    assert digest == local.save(frame)  # the same address wherever it is kept
    assert keys(bucket) == {f"snapshots/{digest[:2]}/{digest}.parquet"}
    assert remote.save(frame) == digest and len(keys(bucket)) == 1  # written once
    assert remote.list() == [digest]
    assert remote.resolve(digest[:8]) == digest
    pd.testing.assert_frame_equal(remote.load(digest[:8]), frame)
    out = remote.export(digest[:8], tmp_path / "out" / "training.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(out), frame)
    from runner.errors import NotFound

    with pytest.raises(NotFound, match="no snapshot starts with"):
        remote.resolve("0" * 6 if not digest.startswith("000000") else "f" * 6)


def test_runner_data_snapshot_exports_from_the_bucket_runner_yaml_names(project, bucket, tmp_path, monkeypatch):
    """RUNNER_SNAPSHOTS may be a bucket: the config keeps the URL as it is, and the CLI exports from there."""
    from runner.config import load_config
    from runner.data.snapshots import SnapshotStore

    project.write({"p": {"steps": {"s": step("ok")}}})
    monkeypatch.setenv("RUNNER_SNAPSHOTS", f"s3://{bucket}/snapshots")
    assert load_config(project.config).stores.snapshots == f"s3://{bucket}/snapshots"
    frame = pd.DataFrame({"income": [1200.5, 3100.0], "purpose": ["car", "home"]})
    digest = SnapshotStore(f"s3://{bucket}/snapshots").save(frame)
    result = project.cli("data", "snapshot", digest[:8], "--out", str(tmp_path / "training.parquet"))
    assert result.exit_code == 0, result.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "training.parquet"), frame)
    assert keys(bucket) == {f"snapshots/{digest[:2]}/{digest}.parquet"}
