"""Running pipelines through the CLI: records, executed notebooks, scraps, parallel steps, listing."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

import nbformat
from conftest import notebook, step

from runner.config import load_config
from runner.store.records import RunRecord, RunStore


def only_run(project) -> RunRecord:
    records = RunStore(load_config(project.config).stores.runs).list()
    assert len(records) == 1
    return records[0]


def test_a_run_records_everything_and_keeps_the_executed_notebooks(project):
    project.write({"p": {"steps": {"first": step("ok", parameters={"x": 20}), "plot": step("plots")}}})
    result = project.cli("run", "p", "-p", "first.name=reviewer", "--as-of", "2026-07-01")
    assert result.exit_code == 0, result.output
    record = only_run(project)
    assert result.stdout.startswith(f"run {record.run_id} succeeded")
    assert (record.pipeline, record.trigger, record.as_of, record.status) == ("p", "manual", "2026-07-01", "succeeded")
    assert record.ended_at and record.duration_s > 0
    first = record.steps["first"]
    assert first.status == "succeeded" and first.duration_s > 0 and first.error is None
    assert first.parameters == {"x": 20, "name": "reviewer", "as_of": "2026-07-01"}
    assert first.notebook_sha256 == __import__("hashlib").sha256(Path(notebook("ok")).read_bytes()).hexdigest()
    assert first.scraps["result"] == 40 and first.scraps["name_seen"] == "reviewer"
    assert first.scraps["as_of_seen"] == "2026-07-01" and first.scraps["env_run_id"] == record.run_id
    # the kernel runs the interpreter that runs the runner, registered without `ipykernel install`
    assert Path(first.scraps["python"]).resolve() == Path(sys.executable).resolve()
    assert first.scraps["cwd"] == str(Path(notebook("ok")).parent)
    run_dir = project.home / "runs" / "p" / record.run_id
    assert json.loads((run_dir / "run.json").read_text())["run_id"] == record.run_id
    executed = nbformat.read(run_dir / "first.ipynb", as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert "x = 20" in injected[0].source and 'name = "reviewer"' in injected[0].source
    html = (run_dir / "plot.html").read_text()
    assert "<html" in html and "data:image/png;base64," in html


def test_record_carries_git_commit_and_dirty_flag(project):
    import subprocess

    project.write({"p": {"steps": {"a": step("glues_values")}}})
    for args in (["init", "-q"], ["add", "runner.yaml"], ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "x"]):
        subprocess.run(["git", *args], cwd=project.root, check=True)
    assert project.cli("run", "p").exit_code == 0
    record = only_run(project)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project.root, capture_output=True, text=True).stdout
    assert record.git.commit == head.strip() and record.git.dirty is False


def test_scraps_flow_downstream_with_their_types(project):
    project.write({"p": {"steps": {
        "train": step("glues_values", parameters={"base": 5}),
        "score": step("uses_upstream", needs=["train"],
                      parameters={"model_uri": "${steps.train.model_uri}", "number": "${steps.train.number}"}),
    }}})
    assert project.cli("run", "p").exit_code == 0
    score = only_run(project).steps["score"]
    assert score.parameters == {"model_uri": "models:/demo/5", "number": 105}
    assert score.scraps == {"echo_uri": "models:/demo/5", "echo_number": 105, "number_type": "int"}


def test_a_missing_upstream_scrap_fails_the_step_before_its_kernel_starts(project):
    project.write({"p": {"steps": {
        "train": step("glues_values"),
        "score": step("uses_upstream", needs=["train"], parameters={"model_uri": "${steps.train.no_such_scrap}"}),
    }}})
    result = project.cli("run", "p")
    assert result.exit_code == 1
    score = only_run(project).steps["score"]
    assert score.status == "failed" and score.error.ename == "ParameterError"
    assert "upstream step 'train' did not glue 'no_such_scrap'" in score.error.evalue
    assert "model_uri" in score.error.evalue or "no_such_scrap" in score.error.evalue
    assert score.output is None and not (project.home / "runs" / "p" / only_run(project).run_id / "score.ipynb").exists()
    assert "FAILED score" in result.stdout


def test_independent_steps_run_in_parallel_with_max_workers(project):
    project.write({"p": {"steps": {
        "left": step("hangs", parameters={"seconds": 4}),
        "right": step("hangs", parameters={"seconds": 4}),
        "join": step("ok", needs=["left", "right"]),
    }}})
    result = project.cli("run", "p", "--max-workers", "2")
    assert result.exit_code == 0, result.output
    steps = only_run(project).steps
    left, right = (steps[n] for n in ("left", "right"))
    start = max(datetime.fromisoformat(left.started_at), datetime.fromisoformat(right.started_at))
    end = min(datetime.fromisoformat(left.ended_at), datetime.fromisoformat(right.ended_at))
    assert start < end, "the two independent steps should overlap in time"
    assert datetime.fromisoformat(steps["join"].started_at) >= max(
        datetime.fromisoformat(left.ended_at), datetime.fromisoformat(right.ended_at)
    )


def test_runs_and_show_list_newest_first_and_filter(project):
    project.write({"good": {"steps": {"a": step("glues_values")}}, "bad": {"steps": {"a": step("broken")}}})
    assert project.cli("run", "good").exit_code == 0
    assert project.cli("run", "bad").exit_code == 1
    listed = json.loads(project.cli("runs", "--json").stdout)
    assert [r["pipeline"] for r in listed] == ["bad", "good"]
    failed = json.loads(project.cli("runs", "--status", "failed", "--json").stdout)
    assert [r["pipeline"] for r in failed] == ["bad"]
    assert json.loads(project.cli("runs", "--pipeline", "good", "--json").stdout)[0]["status"] == "succeeded"
    table = project.cli("runs").stdout
    assert "bad" in table and "good" in table and "a:failed" in table
    shown = project.cli("show", failed[0]["run_id"]).stdout
    assert "ValueError: boom with x=1" in shown and "broken.ipynb" in shown
    assert json.loads(project.cli("show", failed[0]["run_id"], "--json").stdout)["status"] == "failed"
    missing = project.cli("show", "20990101T000000-000000")
    assert missing.exit_code == 2 and "no run '20990101T000000-000000'" in missing.stderr  # a usage error


def test_a_run_whose_process_died_shows_as_interrupted(project):
    project.write({"p": {"steps": {"a": step("ok")}}})
    store = RunStore(load_config(project.config).stores.runs)
    record = RunRecord(run_id="20260101T000000-abcdef", pipeline="p", as_of="2026-01-01")
    record.process.pid = 2**22 + 12345  # no such process
    store.write(record)
    assert json.loads(project.cli("runs", "--json").stdout)[0]["status"] == "interrupted"
    assert len(json.loads(project.cli("runs", "--status", "running", "--json").stdout)) == 0


def test_runs_starting_together_on_a_fresh_home_write_the_kernelspec_safely(tmp_path):
    # A backfill or the scheduler starts several runs at once; each makes sure the kernelspec exists.
    import threading

    from runner.notebook.adapter import ensure_kernel

    for attempt in range(20):  # the race is narrow: try it on many fresh homes
        home, errors, names = tmp_path / str(attempt), [], []

        def start() -> None:
            try:
                names.append(ensure_kernel(home))
            except OSError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=start) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == [] and len(set(names)) == 1
        assert [p.name for p in (home / "kernels" / names[0]).iterdir()] == ["kernel.json"]


def test_the_program_exits_quickly_with_its_output_and_code_and_leaves_kernels_their_libraries(project):
    """`runner` (the console script) and its step processes skip the interpreter's teardown, and they and the
    kernels put off jsonschema's IRI grammars; what they print, their exit codes and the run's record are all
    there, and a notebook's kernel still checks IRIs, building the grammars only then."""
    from conftest import write_notebook

    write_notebook(project.root / "iri.ipynb", [
        ("parameters", "fail = False"),
        "import sys, jsonschema, scrapbook as sb\n"
        "sb.glue('grammars_at_start', 'rfc3987_syntax.syntax_helpers' in sys.modules)\n"
        "sb.glue('kernel_iri', 'iri' in jsonschema.FormatChecker.checkers)\n"
        "checker = jsonschema.FormatChecker()\n"
        "sb.glue('iri_checked', [checker.conforms('https://例え.jp/ä?q=1', 'iri'), checker.conforms('not an iri', 'iri')])\n"
        "import os; os.write(2, b'last words of the kernel\\n')  # the kernel process's own stderr: the step's log\n"
        "assert not fail, 'asked to fail'",
    ])
    project.write({"p": {"steps": {"iri": {"notebook": "iri.ipynb"}}}})
    done = project.cli_process("run", "p")
    assert done.returncode == 0, done.stderr
    record = only_run(project)
    assert done.stdout.startswith(f"run {record.run_id} succeeded")
    scraps = record.steps["iri"].scraps
    assert scraps["kernel_iri"] is True and scraps["grammars_at_start"] is False
    assert scraps["iri_checked"] == [True, False]
    run_dir = project.home / "runs" / "p" / record.run_id
    assert "last words of the kernel" in (run_dir / "iri.log").read_text()
    assert (run_dir / "iri.html").stat().st_size > 0

    failed = project.cli_process("run", "p", "-p", "iri.fail=true")
    assert failed.returncode == 1, failed.stderr
    assert "FAILED iri" in failed.stdout and "asked to fail" in failed.stdout
    usage = project.cli_process("run", "nope")
    assert usage.returncode == 2 and "nope" in usage.stderr


def test_putting_off_iri_grammars_keeps_notebooks_readable_and_iris_checked(tmp_path):
    """In a process that put off the IRI grammars, nbformat validates notebooks without building them (its schema
    has no IRI), and jsonschema still checks IRIs, building them on the first one."""
    import subprocess

    code = ("from runner.notebook import grammars; grammars.defer_iri_grammars()\n"
            "import sys, nbformat, jsonschema\n"
            f"nb = nbformat.read({notebook('ok')!r}, as_version=4); nbformat.validate(nb)\n"
            "bad = nbformat.v4.new_notebook(); bad.cells.append({'cell_type': 'code'})\n"
            "try:\n    nbformat.validate(bad)\nexcept nbformat.ValidationError:\n    print('refused')\n"
            "print('rfc3987_syntax.syntax_helpers' in sys.modules, 'iri' in jsonschema.FormatChecker.checkers)\n"
            "checker = jsonschema.FormatChecker()\n"
            "print(checker.conforms('urn:isbn:0451450523', 'iri'), checker.conforms('a b', 'iri-reference'))\n"
            "print('rfc3987_syntax.syntax_helpers' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:4] == ["refused", "False True", "True False", "True"]


def test_a_steps_page_opens_offline_and_fetches_nothing(tmp_path, browser):
    """The executed notebook's page (nbconvert's lab page) ships without require.js, MathJax, mermaid and the
    widget manager, which it would fetch from CDNs: opened from disk it asks for nothing but itself."""
    from runner.notebook import adapter

    book = nbformat.v4.new_notebook()
    book.cells = [nbformat.v4.new_markdown_cell("# The month\nscores rise as $x^2$\n```mermaid\ngraph TD; A-->B\n```"),
                  nbformat.v4.new_code_cell("40 + 2", execution_count=1, outputs=[
                      nbformat.v4.new_output("execute_result", {"text/plain": "42"}, execution_count=1)])]
    book.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2,
                                                                               "version_minor": 0}}
    nbformat.write(book, tmp_path / "step.ipynb")
    adapter.render_html(tmp_path / "step.ipynb", tmp_path / "step.html")
    page = browser.new_page()
    asked = []
    page.on("request", lambda request: asked.append(request.url))
    page.goto((tmp_path / "step.html").as_uri())
    page.wait_for_load_state("networkidle")
    assert asked == [(tmp_path / "step.html").as_uri()]
    assert "42" in page.inner_text("body") and "The month" in page.inner_text("h1")
    page.close()
