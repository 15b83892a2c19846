"""The review site: pages built from the run store, trends, run diffs, `runner debug`, the live
server, and a real browser (Debian's chromium driven by Playwright) walking from the index to
the failing cell. Screenshots land in test-artifacts/review-*.png.

Kernel runs are few: one module-scoped store with three real runs serves every test that needs
executed notebooks; the layout tests use records written directly (no kernels).
"""

from __future__ import annotations

import base64
import json
import random
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import nbformat
import pytest
from conftest import RUNNER_VARS, Project, notebook, step

from runner.config import load_config
from runner.store.records import GitState, RunRecord, RunStore, StepError, StepRecord, new_run_id
from runner.review.pages import MANIFEST
from runner.review.site import NOTEBOOK_META

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
EVIL = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


# -- a shared store with three real runs ------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory, migrated_mlflow_db) -> Project:
    """`good` twice (x=3 then x=20) and `bad` once (its first step raises), in one store."""
    base = tmp_path_factory.mktemp("review")
    home = base / ".runner"
    home.mkdir()
    shutil.copy(migrated_mlflow_db, home / "mlflow.db")
    project = Project(base / "project", home)
    project.root.mkdir()
    project.write({
        "good": {"steps": {"first": step("ok", parameters={"x": 3})}},
        "bad": {"steps": {"a": step("broken", parameters={"x": 7}), "after": step("ok", needs=["a"])}},
    }, defaults={"timeout": "120s"})  # a stuck kernel fails the step instead of hanging the module
    with pytest.MonkeyPatch.context() as env:
        for name in RUNNER_VARS + ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
            env.delenv(name, raising=False)
        env.setenv("RUNNER_HOME", str(home))
        assert project.cli("run", "good", "--as-of", "2026-06-01").exit_code == 0
        assert project.cli("run", "good", "-p", "first.x=20", "--as-of", "2026-07-01").exit_code == 0
        assert project.cli("run", "bad", "--as-of", "2026-07-01").exit_code == 1
    return project


@pytest.fixture
def shared(runs, monkeypatch) -> Project:
    monkeypatch.setenv("RUNNER_HOME", str(runs.home))
    return runs


def run_ids(project: Project, pipeline: str) -> list[str]:
    """The pipeline's run ids, oldest first."""
    records = RunStore(load_config(project.config).stores.runs).list(pipeline)
    return [r.run_id for r in reversed(records)]


# -- records written directly, for layout and escaping ----------------------------------------
def fake_run(index: int, pipeline: str = "credit", auc: float | None = 0.8, failed: bool = False,
             start: datetime = datetime(2026, 1, 1, tzinfo=timezone.utc), text: str = "") -> RunRecord:
    when = start + timedelta(hours=6 * index)
    train = StepRecord(
        name="train", notebook="notebooks/credit/train.ipynb", notebook_sha256="ab" * 32,
        parameters={"max_depth": 3, "features": ",".join(f"feature_number_{k}" for k in range(40)),
                    "query": "SELECT " + "x" * 300 + text, "as_of": when.date().isoformat()},
        status="failed" if failed else "succeeded", started_at=when.isoformat(),
        ended_at=(when + timedelta(seconds=40)).isoformat(), duration_s=40.0,
        error=StepError(ename="ValueError", evalue="boom " + "a long error message " * 25 + text, cell_index=7)
        if failed else None,
        scraps={} if failed or auc is None else {"auc": auc, "rows_scored": 10_000 + index, "label": "champion" + text,
                                                 "long_text": "y" * 400},
        snapshots=["sha256:" + "cd" * 32], models=["models:/credit/3"],
    )
    score = StepRecord(name="score", notebook="notebooks/credit/score.ipynb", notebook_sha256="ef" * 32,
                       status="skipped" if failed else "succeeded", duration_s=None if failed else 12.5,
                       started_at=None if failed else (when + timedelta(seconds=41)).isoformat())
    return RunRecord(
        run_id=new_run_id(when), pipeline=pipeline, as_of=when.date().isoformat(),
        trigger=("manual", "schedule", "backfill")[index % 3], status="failed" if failed else "succeeded",
        created_at=when.isoformat(), ended_at=(when + timedelta(seconds=55)).isoformat(), duration_s=55.0,
        git=GitState(commit="0123456789abcdef" * 2 + "01234567", dirty=index % 2 == 0),
        mlflow_experiment_id="1", mlflow_run_id=f"{index:032x}", tracking_uri="http://127.0.0.1:5000",
        steps={"train": train, "score": score}, warnings=[f"a warning {text}"] if text else [],
    )


def write_fake_runs(project: Project, count: int) -> RunStore:
    project.write({"credit": {"steps": {"train": step("ok")}}})
    store = RunStore(load_config(project.config).stores.runs)
    rng = random.Random(5)
    pipelines = ("credit", "monitoring", "a_pipeline_with_a_rather_long_name_to_check_the_layout")
    for i in range(count):
        failed = i % 17 == 5 and i < count - 6
        auc = 0.62 if i >= count - 6 else 0.8 + rng.uniform(-0.01, 0.01)
        store.write(fake_run(i, pipelines[i % 3], auc=auc, failed=failed))
    return store


# -- static site ------------------------------------------------------------------------------
def test_build_writes_index_run_pages_trends_notebooks_and_diffs(shared, tmp_path):
    good_1, good_2 = run_ids(shared, "good")
    (bad,) = run_ids(shared, "bad")
    result = shared.cli("review", "build")
    assert result.exit_code == 0, result.output
    site = shared.home / "review"
    assert f"wrote the review site of 3 run(s) to {site / 'index.html'}" in result.stdout

    index = (site / "index.html").read_text()
    for run_id in (good_1, good_2, bad):
        assert f'href="runs/{run_id}.html"' in index
    assert 'data-pipeline="bad" data-status="failed"' in index and "first.result" in index

    failed = (site / "runs" / f"{bad}.html").read_text()
    assert "ValueError" in failed and "boom with x=7" in failed
    assert "in In [4] (code cell 3: `raise ValueError(f&#34;boom with x={x}&#34;)`)" in failed
    assert f'href="../runs/{bad}/a.html#cell-id=broken-3"' in failed  # the failing cell's own anchor
    executed = (site / "runs" / bad / "a.html").read_text()
    assert 'id="cell-id=broken-3"' in executed and 'id="papermill-error-cell"' in executed  # both survive nbconvert
    assert "skipped" in failed and f"runner debug {bad} a" in failed

    second = (site / "runs" / f"{good_2}.html").read_text()
    assert f'href="../diffs/{good_1}__{good_2}.html"' in second and (site / "diffs" / f"{good_1}__{good_2}.html").is_file()
    record = RunStore(load_config(shared.config).stores.runs).read(good_2)
    assert record.mlflow_run_id in second and record.steps["first"].mlflow_run_id in second
    assert "mlflow ui --backend-store-uri sqlite:///" in second
    assert record.steps["first"].notebook_sha256[:12] in second and "not in git" in second
    assert (site / "runs" / good_2 / "first.html").is_file()

    trends = (site / "pipelines" / "good.html").read_text()
    assert "first.result" in trends and "<polyline" in trends and "+34" in trends

    elsewhere = shared.cli("review", "build", "--out", str(tmp_path / "site"))
    assert elsewhere.exit_code == 0 and (tmp_path / "site" / "runs" / bad / "a.html").is_file()


def test_review_diff_shows_parameters_scraps_and_the_notebook_diff(shared, tmp_path):
    good_1, good_2 = run_ids(shared, "good")
    out = tmp_path / "diff.html"
    result = shared.cli("review", "diff", good_1, good_2, "--out", str(out))
    assert result.exit_code == 0, result.output
    page = out.read_text()
    params = page[page.index('id="parameters-diff"'):page.index('id="scraps-diff"')]
    assert '<tr class="changed"><td class="mono"' in params and "<pre class=\"value mono\">3</pre>" in params
    assert "<pre class=\"value mono\">20</pre>" in params
    scraps = page[page.index('id="scraps-diff"'):page.index('id="notebook-first"')]
    assert ">result<" in scraps and "+34" in scraps
    notebook_diff = page[page.index('id="notebook-first"'):]
    assert '<div class="del">- x = 3</div>' in notebook_diff and '<div class="add">+ x = 20</div>' in notebook_diff
    assert '<div class="del">- scrap result = 6</div>' in notebook_diff
    assert 'href="../runs/' not in page  # a page of its own: no links into a site

    inside = shared.cli("review", "diff", good_1, good_2)
    assert inside.exit_code == 0 and (shared.home / "review" / "diffs" / f"{good_1}__{good_2}.html").is_file()
    missing = shared.cli("review", "diff", good_1, "20990101T000000-000000")
    assert missing.exit_code == 2 and "no run '20990101T000000-000000'" in missing.stderr


# -- diffs of outputs: HTML as text, pandas Styler ids ignored, images side by side -------------
@pytest.fixture(scope="module")
def month_runs(tmp_path_factory, migrated_mlflow_db) -> Project:
    """A monitoring notebook run for an OK month, then for an ALERT month: its headline (HTML), a Styler table
    and a matplotlib plot differ; another Styler shows the same table in both."""
    base = tmp_path_factory.mktemp("months")
    home = base / ".runner"
    home.mkdir()
    shutil.copy(migrated_mlflow_db, home / "mlflow.db")
    project = Project(base / "project", home)
    project.root.mkdir()
    book = nbformat.v4.new_notebook()
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell("level = 'OK'\npsi = 0.04")
    params.metadata["tags"] = ["parameters"]
    book.cells = [
        params,
        nbformat.v4.new_code_cell("from IPython.display import HTML, display\n"
                                  "display(HTML(f'<h2 style=\"color: green\">Month status: <b>{level}</b></h2>'))"),
        nbformat.v4.new_code_cell("import pandas as pd\n"
                                  "pd.DataFrame({'feature': ['income', 'age'], 'psi': [psi, 0.01]}).style.format(precision=2)"),
        nbformat.v4.new_code_cell("pd.DataFrame({'feature': ['income', 'age'], 'kind': ['num', 'num']}).style"),
        nbformat.v4.new_code_cell("import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(3, 2), dpi=80)\n"
                                  "ax.bar(['income', 'age'], [psi, 0.01], color='tab:red' if psi > 0.2 else 'tab:green')\n"
                                  "ax.set_title(f'PSI ({level})')\nplt.show()"),
    ]
    nbformat.write(book, project.root / "month.ipynb")
    project.write({"monitor": {"steps": {"watch": {"notebook": str(project.root / "month.ipynb")}}}},
                  defaults={"timeout": "120s"})
    with pytest.MonkeyPatch.context() as env:
        for name in RUNNER_VARS + ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
            env.delenv(name, raising=False)
        env.setenv("RUNNER_HOME", str(home))
        assert project.cli("run", "monitor", "--as-of", "2026-06-01").exit_code == 0
        assert project.cli("run", "monitor", "-p", "watch.level=ALERT", "-p", "watch.psi=0.31",
                           "--as-of", "2026-07-01").exit_code == 0
    return project


def local_links(page: Path) -> list[str]:
    """Every relative href and src of a page, without query or fragment."""
    found = re.findall(r'(?:href|src)="([^"]*)"', page.read_text())
    return [link.split("#")[0].split("?")[0] for link in found
            if not link.startswith(("data:", "http:", "https:", "#", "mailto:"))]


def test_a_diff_shows_html_outputs_as_text_ignores_styler_ids_and_shows_images_side_by_side(month_runs, monkeypatch):
    monkeypatch.setenv("RUNNER_HOME", str(month_runs.home))
    ok, alert = run_ids(month_runs, "monitor")
    result = month_runs.cli("review", "diff", ok, alert)  # no --out: into the review site, its links working
    assert result.exit_code == 0, result.output
    target = month_runs.home / "review" / "diffs" / f"{ok}__{alert}.html"
    assert f"wrote {target}" in result.stdout
    links = local_links(target)
    assert f"../runs/{ok}.html" in links and f"../runs/{alert}.html" in links and "../index.html" in links
    assert f"../runs/{ok}/watch.html" in links and f"../runs/{alert}/watch.html" in links  # each executed notebook
    for link in links:
        assert (target.parent / link).resolve().is_file(), f"{link} in {target.name} leads nowhere"

    page = target.read_text()
    # run A took the notebook's defaults, run B was given values: compared with the defaults, not "added"
    parameters = page[page.index('id="parameters-diff"'):]
    parameters = parameters[:parameters.index("</table>")]
    rows = re.findall(r'<tr class="(\w+)">.*?<td class="mono"[^>]*>(\w+)</td><td class="state">(\w*)</td>\s*'
                      r'<td>(.*?)</td>\s*<td>(.*?)</td>', parameters, re.S)
    shown = {name: (state, re.sub(r"<[^>]+>", "", a), re.sub(r"<[^>]+>", "", b)) for _, name, state, a, b in rows}
    assert shown == {"level": ("changed", "OK  (default)", "ALERT"),
                     "psi": ("changed", "0.04  (default)", "0.31")}, shown
    notebook_diff = page[page.index('id="notebook-watch"'):]
    assert '<div class="del">- Month status: OK</div>' in notebook_diff  # the headline, HTML read as text
    assert '<div class="add">+ Month status: ALERT</div>' in notebook_diff
    assert '<div class="del">- 0 | income | 0.04</div>' in notebook_diff  # a table, a line per row
    assert '<div class="add">+ 0 | income | 0.31</div>' in notebook_diff and '<div class="">  1 | age | 0.01</div>' in notebook_diff
    executed = [nbformat.read(month_runs.home / "runs" / "monitor" / run / "watch.ipynb", as_version=4)
                for run in (ok, alert)]
    styler_ids = {re.search(r'<table id="(T_[0-9a-f]+)"', "".join(cell.outputs[0].data["text/html"])).group(1)
                  for nb in executed for cell in nb.cells if ").style" in cell.source}
    assert len(styler_ids) == 4 and not any(styler_id in page for styler_id in styler_ids)  # each run's own ids
    text = re.sub(r'src="data:[^"]*"', "", notebook_diff)
    assert not re.search(r"0x[0-9a-f]{6}", text)  # nor a Styler's memory address
    assert notebook_diff.count('<div class="cell changed">') == 3  # the headline, the first table, the plot
    folded = re.findall(r"<details class=\"small\"><summary>1 unchanged cell</summary>(.*?)</details>", notebook_diff)
    assert any("&#39;kind&#39;" in fold for fold in folded)  # the second Styler: the same table, other ids

    pair = notebook_diff[notebook_diff.index('<div class="image-pair changed">'):]
    assert '<span class="state">changed</span> image 1: old | new' in pair and "1 image changed" in notebook_diff
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', pair)
    assert len(images) == 2 and images[0] != images[1]
    assert all(base64.b64decode(image)[:8] == b"\x89PNG\r\n\x1a\n" for image in images)
    assert re.search(r"image/png · \d+×\d+ px · [\d.]+ kB", pair)


@pytest.mark.slow
def test_browser_shows_both_images_of_a_changed_plot(month_runs, browser, monkeypatch):
    monkeypatch.setenv("RUNNER_HOME", str(month_runs.home))
    ok, alert = run_ids(month_runs, "monitor")
    assert month_runs.cli("review", "build").exit_code == 0
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto((month_runs.home / "review" / "runs" / f"{alert}.html").as_uri())
    page.click("#diff-previous")
    page.wait_for_url(f"**/diffs/{ok}__{alert}.html")
    pair = page.locator(".image-pair.changed").first
    pair.scroll_into_view_if_needed()
    images = pair.locator("img")
    assert images.count() == 2
    widths = images.evaluate_all("imgs => imgs.map(i => i.complete && i.naturalWidth)")
    assert all(width > 100 for width in widths), widths  # both decoded and drawn
    boxes = [images.nth(k).bounding_box() for k in range(2)]
    assert boxes[0]["x"] + boxes[0]["width"] <= boxes[1]["x"], "old | new, side by side"
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(page, "diff-images", full_page=True)
    page.close()


# -- runner debug -----------------------------------------------------------------------------
def test_debug_writes_the_failed_step_with_its_parameters_and_it_fails_the_same_way(shared):
    (bad,) = run_ids(shared, "bad")
    result = shared.cli("debug", bad)
    assert result.exit_code == 0, result.output
    path = shared.home / "debug" / bad / "a.ipynb"
    assert f"wrote {path}: step a of run {bad} (ValueError: boom with x=7)" in result.stdout
    jupyter = Path(sys.executable).with_name("jupyter")
    assert f"env -u MLFLOW_RUN_ID {jupyter} lab {path}" in result.stdout
    assert "changed since the run" not in result.stdout

    nb = nbformat.read(path, as_version=4)
    assert "run by hand: MLflow starts its own run" in nb.cells[0].source and "MLFLOW_RUN_ID" in nb.cells[0].source
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "x = 7" in injected[0].source

    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    with pytest.raises(CellExecutionError, match="boom with x=7"):
        NotebookClient(nb, kernel_name="python3", timeout=60).execute()


def test_debug_chooses_steps_and_says_what_is_wrong(shared):
    good_1, _ = run_ids(shared, "good")
    (bad,) = run_ids(shared, "bad")
    no_failure = shared.cli("debug", good_1)
    assert no_failure.exit_code == 1 and "has no failed step" in no_failure.stderr
    named = shared.cli("debug", good_1, "first")
    assert named.exit_code == 0 and (shared.home / "debug" / good_1 / "first.ipynb").is_file()
    assert "x = 3" in (shared.home / "debug" / good_1 / "first.ipynb").read_text()
    unknown = shared.cli("debug", bad, "nope")
    assert unknown.exit_code == 1 and "has no step 'nope'" in unknown.stderr


def test_debug_warns_when_the_notebook_changed_since_the_run(project):
    project.write({"p": {"steps": {"s": {"notebook": "nb/ok.ipynb"}}}})
    (project.root / "nb").mkdir()
    shutil.copy(notebook("ok"), project.root / "nb" / "ok.ipynb")  # relative to the project root
    record = RunRecord(run_id="20260101T000000-abcdef", pipeline="p", as_of="2026-01-01", status="failed", steps={
        "s": StepRecord(name="s", notebook="nb/ok.ipynb", notebook_sha256="0" * 64, parameters={"x": 5},
                        status="failed", error=StepError(ename="KeyError", evalue="'col'", cell_index=3)),
    })
    RunStore(load_config(project.config).stores.runs).write(record)
    result = project.cli("debug", record.run_id)
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stdout and "changed since the run" in result.stdout
    assert "x = 5" in (project.home / "debug" / record.run_id / "s.ipynb").read_text()


def test_debug_open_starts_jupyterlab_without_the_recorded_mlflow_run(project, monkeypatch):
    project.write({"p": {"steps": {"s": step("ok")}}})
    record = RunRecord(run_id="20260101T000000-abcdef", pipeline="p", as_of="2026-01-01", status="failed", steps={
        "s": StepRecord(name="s", notebook=notebook("ok"), notebook_sha256="0" * 64, status="failed")})
    RunStore(load_config(project.config).stores.runs).write(record)
    started = []
    monkeypatch.setenv("MLFLOW_RUN_ID", "the-recorded-run")
    monkeypatch.setattr(subprocess, "run", lambda command, env: started.append((command, env))
                        or subprocess.CompletedProcess(command, 0))
    result = project.cli("debug", record.run_id, "--open")
    assert result.exit_code == 0, result.output
    (command, env), = started
    assert command == [str(Path(sys.executable).with_name("jupyter")), "lab",
                       str(project.home / "debug" / record.run_id / "s.ipynb")]
    assert "MLFLOW_RUN_ID" not in env and env["RUNNER_HOME"] == str(project.home)


# -- escaping, trends, links ------------------------------------------------------------------
def test_every_page_escapes_what_runs_recorded(project):
    project.write({"credit": {"steps": {"train": step("ok")}}})
    store = RunStore(load_config(project.config).stores.runs)
    store.write(fake_run(0, auc=0.8, text=EVIL))
    store.write(fake_run(1, failed=True, text=EVIL))
    assert project.cli("review", "build").exit_code == 0
    pages = list((project.home / "review").rglob("*.html"))
    assert len(pages) == 5  # index, trends, two runs, one diff
    for page in pages:
        text = page.read_text()
        assert "<img src=x" not in text and "<script>alert" not in text, page
        assert '<meta http-equiv="Content-Security-Policy"' in text and "<script>" not in text, page  # no inline script
    failed = next(p for p in pages if "failed" in p.read_text() and p.parent.name == "runs")
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in failed.read_text()


def test_a_rebuild_gives_pages_kept_from_an_older_build_their_policy(shared, tmp_path):
    good_1, good_2 = run_ids(shared, "good")
    out = tmp_path / "site"
    assert shared.cli("review", "build", "--out", str(out)).exit_code == 0
    notebook, diff = out / "runs" / good_1 / "first.html", out / "diffs" / f"{good_1}__{good_2}.html"
    assert notebook.read_bytes().count(NOTEBOOK_META) == 1 and (out / "review.js").is_file()
    notebook.write_bytes(notebook.read_bytes().replace(NOTEBOOK_META, b""))  # as builds before the policy left them
    diff.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", diff.read_text()))
    (out / MANIFEST).unlink()  # those builds kept no notes of what they wrote
    assert shared.cli("review", "build", "--out", str(out)).exit_code == 0
    assert notebook.read_bytes().count(NOTEBOOK_META) == 1 and 'http-equiv="Content-Security-Policy"' in diff.read_text()


def test_trends_mark_a_regression_in_the_latest_run(project):
    project.write({"credit": {"steps": {"train": step("ok")}}})
    store = RunStore(load_config(project.config).stores.runs)
    for i, auc in enumerate([0.80, 0.81, 0.79, 0.80, 0.81, 0.80, 0.79, 0.80, 0.64]):
        store.write(fake_run(i, auc=auc))
    assert project.cli("review", "build").exit_code == 0
    trends = (project.home / "review" / "pipelines" / "credit.html").read_text()
    assert 'id="regressions"' in trends and "train.auc" in trends
    assert "-0.16 (-20.0%) vs median of previous 8" in trends
    assert trends.count('class="pt unusual last"') == 1  # the latest point is marked, no other auc point


def test_mlflow_links_point_at_a_server_or_say_how_to_start_the_ui():
    from runner.review.views import mlflow_link

    assert mlflow_link("http://mlflow:5000/", "3", "abc")["url"] == "http://mlflow:5000/#/experiments/3/runs/abc"
    local = mlflow_link("sqlite:////tmp/x/mlflow.db", "3", "abc")
    assert local["url"] is None and local["command"] == "mlflow ui --backend-store-uri sqlite:////tmp/x/mlflow.db"
    assert mlflow_link("sqlite:///x.db", "3", None) is None


# -- the live server (conftest's review_server fixture, over the shared store) -----------------
@pytest.fixture(scope="module")
def review_project(runs) -> Project:
    return runs


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_serve_binds_to_localhost_and_shows_new_runs_without_a_rebuild(shared, review_server):
    assert review_server.startswith("http://127.0.0.1:")
    (bad,) = run_ids(shared, "bad")
    status, index = get(review_server)
    assert status == 200 and bad in index
    late = fake_run(3, pipeline="late", start=datetime(2026, 3, 1, tzinfo=timezone.utc))
    RunStore(load_config(shared.config).stores.runs).write(late)
    status, index = get(review_server + "index.html")
    assert status == 200 and late.run_id in index, "a run written after the server started shows at once"
    assert get(review_server + f"runs/{late.run_id}.html")[0] == 200
    assert get(review_server + "pipelines/late.html")[0] == 200
    status, page = get(review_server + f"runs/{bad}/a.html")
    assert status == 200 and 'id="papermill-error-cell"' in page
    assert get(review_server + "runs/../../etc/passwd")[0] == 404
    assert get(review_server + "runs/20990101T000000-000000.html")[0] == 404


# -- a real browser (conftest's browser fixture) ------------------------------------------------
def screenshot(page, name: str, full_page: bool = False) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"review-{name}.png"), full_page=full_page)


@pytest.mark.slow
def test_browser_filters_failed_runs_and_reaches_the_failing_cell(shared, review_server, browser):
    from playwright.sync_api import expect

    (bad,) = run_ids(shared, "bad")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(review_server)
    page.select_option("#filter-status", "failed")
    visible = page.locator("#runs tbody tr:visible")
    expect(visible).to_have_count(1)
    assert visible.first.get_attribute("data-status") == "failed" and "status=failed" in page.url
    screenshot(page, "index-failed")

    page.click(f"a.run-link:has-text('{bad}')")
    page.wait_for_url(f"**/runs/{bad}.html")
    error = page.locator(".step-error")
    expect(error).to_contain_text("ValueError")
    expect(error).to_contain_text("boom with x=7")
    screenshot(page, "run-failed", full_page=True)

    page.set_viewport_size({"width": 1280, "height": 300})  # lower than the notebook: reaching the cell takes a scroll
    page.click("a.failing-cell")
    page.wait_for_url("**#cell-id=broken-3")
    anchor = page.locator('[id="cell-id=broken-3"]')
    expect(anchor).to_be_in_viewport()
    expect(anchor).to_contain_text("raise ValueError")
    assert page.evaluate("window.scrollY") > 0, "the browser scrolled to the failing cell"
    top = page.evaluate("document.getElementById('cell-id=broken-3').getBoundingClientRect().top")
    assert top < 150, "the failing cell in the upper half (the page ends one cell below it)"
    expect(page.locator("body")).to_contain_text("boom with x=7")
    page.set_viewport_size({"width": 1280, "height": 700})
    screenshot(page, "failing-cell")
    page.set_viewport_size({"width": 1280, "height": 900})

    page.goto(review_server + "index.html?pipeline=good")  # a link can open the index filtered
    expect(page.locator("#runs tbody tr:visible")).to_have_count(2)
    assert page.input_value("#filter-pipeline") == "good"
    page.close()


@pytest.mark.slow
def test_browser_layout_holds_with_500_runs_and_long_values(project, browser):
    from playwright.sync_api import expect

    write_fake_runs(project, 500)
    result = project.cli("review", "build")
    assert result.exit_code == 0 and "500 run(s)" in result.stdout
    site = project.home / "review"
    page = browser.new_page(viewport={"width": 1280, "height": 900})

    def no_horizontal_overflow() -> None:
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), page.url

    page.goto((site / "index.html").as_uri())
    assert page.locator("#runs tbody tr").count() == 50  # a page of the index, with links to the other nine
    assert page.locator("#pager a").count() > 0 and (site / "index-10.html").is_file()
    no_horizontal_overflow()
    screenshot(page, "500-index")
    store = RunStore(load_config(project.config).stores.runs)
    failed_credit = {r.run_id for r in store.list("credit", status="failed")}
    page.goto((site / "index.html").as_uri() + "?status=failed&pipeline=credit")  # every run of the store filtered
    shown = page.locator("#runs tbody tr:visible")
    expect(shown).to_have_count(len(failed_credit))
    assert set(shown.evaluate_all("rows => rows.map(r => r.dataset.status + ' ' + r.dataset.pipeline)")) == {"failed credit"}
    assert set(page.locator("#runs a.run-link").all_inner_texts()) == failed_credit

    failed = json.loads(project.cli("runs", "--status", "failed", "--limit", "1", "--json").stdout)[0]["run_id"]
    page.goto((site / "runs" / f"{failed}.html").as_uri())
    no_horizontal_overflow()
    box = page.locator(".step-error .what").bounding_box()
    assert box and box["width"] <= 1280
    screenshot(page, "500-run", full_page=True)

    page.goto((site / "pipelines" / "credit.html").as_uri())
    no_horizontal_overflow()
    assert page.locator("#regressions").is_visible()
    screenshot(page, "500-trends", full_page=True)

    page.set_viewport_size({"width": 760, "height": 900})  # a narrow window: tables scroll in their box
    for path in ("index.html", f"runs/{failed}.html", "pipelines/credit.html"):
        page.goto((site / path).as_uri())
        no_horizontal_overflow()
    screenshot(page, "500-trends-narrow", full_page=True)
    page.close()
