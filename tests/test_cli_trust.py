"""What the CLI promises people who trust its output: digests by prefix, run ids never cut, where a notebook runs."""

from __future__ import annotations

import pickle

import nbformat
import pandas as pd
import pytest
from click.testing import CliRunner

from conftest import step
from runner.config import load_config
from runner.data.snapshots import SnapshotStore
from runner.errors import NotFound
from runner.store.records import RunRecord, RunStore, StepRecord

# Two one-row frames whose digests share their first 6 characters (found by a search over {"n": [i]}).
TWINS = (pd.DataFrame({"n": [7618]}), pd.DataFrame({"n": [7964]}))


def snapshot_cli(project, *args: str):
    """``runner data snapshot ARGS`` in-process (the ``data`` group takes no ``--config`` of its own)."""
    from runner.cli import main

    return CliRunner().invoke(main, ["data", "snapshot", *args, "--config", str(project.config)],
                              catch_exceptions=False)


@pytest.fixture
def store(project) -> SnapshotStore:
    project.write({"p": {"steps": {"s": step("ok")}}})
    snapshots = load_config(project.config).stores.snapshots
    assert snapshots == str(project.home / "snapshots")
    return SnapshotStore(snapshots)


def test_data_snapshot_takes_the_prefix_runner_models_shows(project, store, tmp_path):
    frame = pd.DataFrame({"income": [1200.5, None, 3100.0], "purpose": ["car", "home", None]})
    digest = store.save(frame)
    out = tmp_path / "x.parquet"
    result = snapshot_cli(project, digest[:12], "--out", str(out))
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(pd.read_parquet(out), frame)
    assert store.resolve(digest[:6]) == store.resolve(digest) == digest
    pd.testing.assert_frame_equal(store.load(digest[:8]), frame)


def test_an_unknown_or_malformed_digest_is_a_usage_error_of_one_line(project, store, tmp_path):
    store.save(pd.DataFrame({"a": [1]}))
    out = tmp_path / "x.parquet"
    missing = snapshot_cli(project, "0123456789ab", "--out", str(out))
    assert missing.exit_code == 2, missing.output
    assert missing.stderr.count("\n") == 1
    assert "no snapshot starts with 0123456789ab" in missing.stderr and str(store.root) in missing.stderr
    for bad in ("36E19E", "36e19", "not-a-digest"):
        result = snapshot_cli(project, bad, "--out", str(out))
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, (bad, result.output)
        assert "first 6 or more characters" in result.stderr
    assert not out.exists()


def test_an_ambiguous_prefix_lists_the_candidates_and_asks_for_more(project, store, tmp_path):
    first, second = (store.save(frame) for frame in TWINS)
    assert first[:6] == second[:6] != first[:7]
    result = snapshot_cli(project, first[:6], "--out", str(tmp_path / "x.parquet"))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert f"2 snapshots start with {first[:6]}" in result.stderr
    assert first in result.stderr and second in result.stderr and "more of its characters" in result.stderr
    assert snapshot_cli(project, first[:7], "--out", str(tmp_path / "x.parquet")).exit_code == 0
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "x.parquet"), TWINS[0])


def test_an_ambiguous_prefix_lists_five_candidates_at_most(tmp_path):
    store = SnapshotStore(tmp_path)
    digests = [f"abcdef{i:058x}" for i in range(7)]
    for digest in digests:
        store.path(digest).parent.mkdir(parents=True, exist_ok=True)
        store.path(digest).write_bytes(b"")
    with pytest.raises(NotFound) as caught:
        store.resolve("abcdef")
    assert str(caught.value).startswith("7 snapshots start with abcdef: " + ", ".join(digests[:5]) + " and 2 more;")


def test_not_found_is_a_lookup_error_that_survives_pickling():
    error = NotFound("no snapshot starts with 0123456789ab in the snapshot store /x; check the digest")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is NotFound and str(copy) == str(error) and isinstance(copy, LookupError)


# -- runner runs on a narrow terminal ---------------------------------------------------------


def write_runs(project) -> list[RunRecord]:
    project.write({"p": {"steps": {"s": step("ok")}}})
    steps = {name: StepRecord(name=name, notebook="nb.ipynb", notebook_sha256="0" * 64, status=status)
             for name, status in (("ingest", "succeeded"), ("train", "succeeded"), ("monitor", "failed"))}
    records = [
        RunRecord(run_id="20261201T063000-ab12cd", pipeline="credit_score", trigger="schedule", as_of="2026-11-30",
                  status="failed", duration_s=123.4, steps=steps),
        RunRecord(run_id="20261202T063000-ef34ab", pipeline="a_pipeline_with_a_rather_long_name_to_fold",
                  trigger="backfill", as_of="2026-12-01", status="succeeded", duration_s=9.0, steps=steps),
    ]
    store = RunStore(load_config(project.config).stores.runs)
    for record in records:
        store.write(record)
    return records


@pytest.mark.parametrize("columns", [40, 60, 100])
def test_runs_never_cuts_a_run_id(project, monkeypatch, columns):
    records = write_runs(project)
    monkeypatch.setenv("COLUMNS", str(columns))
    done = project.cli_process("runs")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    print(done.stdout)
    for record in records:
        assert any(record.run_id in line for line in lines), (record.run_id, done.stdout)
    assert "…" not in done.stdout
    assert max(len(line.rstrip()) for line in lines) <= columns, done.stdout
    assert "succeeded" in done.stdout and "failed" in done.stdout


def test_runs_on_a_wide_terminal_shows_every_column(project, monkeypatch):
    records = write_runs(project)
    monkeypatch.setenv("COLUMNS", "200")
    done = project.cli_process("runs")
    header, first, *_ = done.stdout.splitlines()
    assert header.split() == ["run", "id", "pipeline", "trigger", "as_of", "status", "duration", "steps"]
    assert first.split() == [records[1].run_id, records[1].pipeline, "backfill", "2026-12-01", "succeeded", "9.0s",
                             "ingest:succeeded", "train:succeeded", "monitor:failed"]


def test_runs_piped_shows_every_column_and_a_run_a_line_however_wide(project, monkeypatch):
    """Piped to grep or a file, with no COLUMNS to fit, nothing is left out or folded at 80 columns."""
    records = write_runs(project)
    monkeypatch.delenv("COLUMNS", raising=False)
    done = project.cli_process("runs")
    assert done.returncode == 0, done.stderr
    header, *lines = done.stdout.splitlines()
    assert header.split() == ["run", "id", "pipeline", "trigger", "as_of", "status", "duration", "steps"]
    assert [line.split() for line in lines] == [
        [records[1].run_id, records[1].pipeline, "backfill", "2026-12-01", "succeeded", "9.0s", "ingest:succeeded",
         "train:succeeded", "monitor:failed"],
        [records[0].run_id, records[0].pipeline, "schedule", "2026-11-30", "failed", "123.4s", "ingest:succeeded",
         "train:succeeded", "monitor:failed"]]
    assert max(len(line) for line in lines) > 80


# -- where a notebook runs --------------------------------------------------------------------


def test_a_notebook_runs_in_its_own_folder_and_reaches_the_project_root(project, tmp_path, monkeypatch):
    folder = project.root / "notebooks" / "deep"
    folder.mkdir(parents=True)
    (folder / "lookup.txt").write_text("next to the notebook")
    (project.root / "data").mkdir()
    (project.root / "data" / "file.csv").write_text("in the project")
    parameters = nbformat.v4.new_code_cell("x = 1")
    parameters.metadata["tags"] = ["parameters"]
    body = nbformat.v4.new_code_cell(
        "import os\nimport scrapbook as sb\nfrom runner import nb\n"
        "ctx = nb.context()\n"
        "sb.glue('cwd', os.getcwd())\n"
        "sb.glue('local', open('lookup.txt').read())\n"
        "sb.glue('root', str(ctx.config.root))\n"
        "sb.glue('project_file', (ctx.config.root / 'data' / 'file.csv').read_text())\n"
    )
    notebook = nbformat.v4.new_notebook(cells=[parameters, body])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, folder / "where.ipynb")
    project.write({"where": {"steps": {"w": {"notebook": "notebooks/deep/where.ipynb"}}}})
    monkeypatch.chdir(tmp_path)  # somewhere else than the project or the notebook

    result = project.cli("run", "where")
    assert result.exit_code == 0, result.output
    (record,) = RunStore(load_config(project.config).stores.runs).list()
    scraps = record.steps["w"].scraps
    assert scraps["cwd"] == str(folder.resolve())
    assert scraps["local"] == "next to the notebook"
    assert scraps["root"] == str(project.root.resolve())
    assert scraps["project_file"] == "in the project"
