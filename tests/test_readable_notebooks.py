"""Executed notebooks read well (issue 17, item 5): the headline first, no pink warnings, notices reported,
trend charts on a calendar of months, and notebook pages on the review site with a header and a code toggle.

One starter project (`runner init`, the templates' train, score and monitor), its monitoring made to alert by
thresholds of almost zero and its notices sent to a command writing a file; the assertions read the executed
notebooks with nbformat and the site's pages as files, and chromium clicks the toggle.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest

ROOT = Path(__file__).parent.parent
ARTIFACTS = ROOT / "test-artifacts"
HEADLINE_TAG = "runner-headline"


def cli(*args: str, env: dict):
    from click.testing import CliRunner

    from runner.cli import main

    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, f"runner {' '.join(args)}: {result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def starter(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("readable") / "churn"
    env = {"RUNNER_HOME": str(root / ".runner"), "RUNNER_USER": "ci", "RUNNER_CONFIG": None,
           "MLFLOW_TRACKING_URI": None, "MLFLOW_RUN_ID": None, "MLFLOW_EXPERIMENT_ID": None}
    cli("init", str(root), env=env)
    notices = root / "notices.json"
    config = root / "runner.yaml"
    text = config.read_text().replace(
        "  # thresholds: {psi: {warn: 0.1, alert: 0.25}}",
        "  thresholds: {psi: {warn: 0.000001, alert: 0.000002}}  # any drift at all alerts")
    text += f"notify: {{command: 'cat > {notices}', events: [alert]}}\n"
    config.write_text(text)
    runs = {}
    for pipeline in ("churn_ingest", "churn_train", "churn_score"):
        out = cli("run", pipeline, "--config", str(config), env=env).stdout
        runs[pipeline] = out.split()[1]  # "run <id> <status> in ..."
    cli("review", "build", "--config", str(config), env=env)
    return {"root": root, "home": root / ".runner", "runs": runs, "notices": notices}


def executed(starter: dict, pipeline: str, step: str):
    return nbformat.read(starter["home"] / "runs" / pipeline / starter["runs"][pipeline] / f"{step}.ipynb",
                         as_version=4)


def texts(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append(output["text"])
        else:
            parts += [str(output.get("data", {}).get(kind, "")) for kind in ("text/plain", "text/html")]
    return "\n".join(parts)


@pytest.mark.slow
@pytest.mark.parametrize("pipeline, step, words", [
    ("churn_train", "train", ["CHAMPION", "churn v1: auc", "first registered version"]),
    ("churn_score", "monitor", ["ALERT", "finding(s) at warn or alert"]),
])
def test_the_headline_is_the_first_output_and_no_warning_shows(starter, pipeline, step, words):
    nb = executed(starter, pipeline, step)
    first = next(cell for cell in nb.cells if cell.get("outputs"))
    assert HEADLINE_TAG in first.metadata.get("tags", []), "the first output a reader sees is the headline"
    assert first.metadata["jupyter"]["source_hidden"] is True
    assert all(cell.cell_type == "markdown" for cell in nb.cells[:nb.cells.index(first)]), "only the title before it"
    for word in words:
        assert word in texts(first)
    origin = [cell for cell in nb.cells[nb.cells.index(first) + 1:] if 'class="runner-banner"' in texts(cell)]
    assert len(origin) == 1 and first.outputs[0]["data"] in [out.get("data") for out in origin[0].outputs], \
        "a copy of what the cell computing it shows"
    stderr = [(index, output["text"]) for index, cell in enumerate(nb.cells) for output in cell.get("outputs", [])
              if output.get("name") == "stderr"]
    assert stderr == [], "a normal run shows no warnings"
    assert all(output.get("output_type") != "error" for cell in nb.cells for output in cell.get("outputs", []))


@pytest.mark.slow
def test_a_notice_sent_on_alert_is_reported_as_sent(starter):
    nb = executed(starter, "churn_score", "monitor")
    shown = "\n".join(texts(cell) for cell in nb.cells)
    assert "notice sent to command" in shown
    assert "no notice" not in shown and "NOT sent" not in shown
    notice = json.loads(starter["notices"].read_text())
    assert notice["kind"] == "alert" and notice["run_id"] == starter["runs"]["churn_score"]


@pytest.mark.slow
def test_the_site_gives_a_notebook_page_a_header_and_a_code_toggle(starter):
    run_id = starter["runs"]["churn_score"]
    page = (starter["home"] / "review" / "runs" / run_id / "monitor.html").read_text()
    body = page[page.index("<body"):]
    header = body[body.index('<header class="rn-header" id="runner-notebook-header">'):body.index("</header>")]
    assert body.index('id="rn-hide-code"') < body.index("<main") and body.index("</header>") < body.index("<main")
    assert f'href="../../runs/{run_id}.html"' in header and run_id in header
    assert "churn_score · monitor" in header
    assert 'class="rn-badge rn-s-succeeded"' in header and 'rn-v-alert' in header
    assert re.search(r"<b>as_of</b> \d{4}-\d\d-\d\d<", header), "the parameters the run set"
    assert '<label for="rn-hide-code"' in header and "Hide code" in header
    assert "<script" not in page.split("<main")[0].split("<body")[1], "the header runs no script"
    # the page opens with the notebook's headline, which lists the reasons right below: the header does not repeat
    # them (its badge keeps them in its title); a page without a headline gets them in the header
    from runner.config import load_config
    from runner.review.site import Site
    from runner.store.records import RunStore

    store = RunStore(str(starter["home"] / "runs"))
    record = store.read(run_id)
    reasons = record.steps["monitor"].verdict.reasons
    assert reasons and 'class="rn-reasons"' not in header
    assert all(html.escape(reason, quote=False) in page for reason in reasons)
    listed = Site(load_config(starter["root"] / "runner.yaml"), store).notebook_header(record, "monitor.html").decode()
    assert 'class="rn-reasons"' in listed and all(reason in html.unescape(listed) for reason in reasons)
    cells = page[page.index("<main"):].split('<div class="jp-Cell ')
    headline = next(cell for cell in cells if "celltag_runner-headline" in cell[:400])
    assert "runner-banner" in headline and "jp-Cell-inputWrapper" not in headline, "the copy shows its output only"
    assert cells.index(headline) == 1 + sum(1 for cell in cells[1:cells.index(headline)] if "jp-MarkdownCell" in cell[:400])


@pytest.mark.slow
def test_chromium_hides_the_code_with_the_toggle(starter, browser):
    from playwright.sync_api import expect

    run_id = starter["runs"]["churn_score"]
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto((starter["home"] / "review" / "runs" / run_id / "monitor.html").as_uri())
    code = page.locator(".jp-CodeCell .jp-Cell-inputWrapper")
    expect(code.first).to_be_visible()
    expect(page.locator(".runner-banner").first).to_be_visible()
    banner_top = page.locator(".runner-banner").first.bounding_box()["y"]
    assert banner_top < page.locator(".jp-CodeCell .jp-Cell-inputWrapper").first.bounding_box()["y"], \
        "the headline shows above the first code"
    page.get_by_text("Hide code").click()
    for index in range(code.count()):
        expect(code.nth(index)).to_be_hidden()
    expect(page.get_by_text("Show code")).to_be_visible()
    expect(page.locator(".runner-banner").first).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "notebook-page-code-hidden.png"))
    page.get_by_text("Show code").click()
    expect(code.first).to_be_visible()
    assert problems == [], "no console errors, nothing the page's policy refused"
    page.locator(f'a[href="../../runs/{run_id}.html"]').click()
    expect(page.locator("h1")).to_contain_text(run_id)
    page.close()


@pytest.mark.slow
def test_the_header_links_show_on_the_notebook_page_but_not_in_the_run_pages_frame(starter, browser):
    """In the run page's sandboxed frame, "← run" and "trends" would open the run page inside itself: not shown."""
    from playwright.sync_api import expect

    run_id = starter["runs"]["churn_score"]
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto((starter["home"] / "review" / "runs" / run_id / "monitor.html").as_uri())
    expect(page.locator(".rn-nav")).to_have_count(2)
    expect(page.get_by_role("link", name=f"← run {run_id}")).to_be_visible()
    expect(page.get_by_role("link", name="trends")).to_be_visible()
    page.goto((starter["home"] / "review" / "runs" / f"{run_id}.html").as_uri())
    frames = page.locator("iframe.notebook")
    assert frames.count() >= 2  # the score step's and the monitor step's
    for index in range(frames.count()):
        page.get_by_text("Show the executed notebook here").nth(index).click()
        framed = page.frame_locator("iframe.notebook").nth(index)
        expect(framed.locator(".rn-header")).to_be_visible()
        expect(framed.get_by_text("Hide code")).to_be_visible()
        expect(framed.locator(".rn-nav").first).to_be_hidden()
        expect(framed.locator(".rn-nav").last).to_be_hidden()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "run-page-framed-notebook.png"), full_page=True)
    page.close()


# -- trend charts: no kernel ------------------------------------------------------------------------
def test_site_trends_put_each_run_on_its_own_month_with_a_zero_based_labelled_axis():
    from runner.review.trends import positions, y_range

    xs, ticks = positions(["2026-01-31", "2026-02-28", "2026-02-28", "2026-04-30"])
    assert [label for _, label in ticks] == ["2026-01", "2026-02", "2026-03", "2026-04"], "March is a gap, not skipped"
    width = ticks[1][0] - ticks[0][0]
    assert abs(xs[0] - ticks[0][0]) < 1e-9 and abs(xs[3] - ticks[3][0]) < 1e-9, "one run a month: its month's middle"
    assert ticks[1][0] - width / 2 < xs[1] < xs[2] < ticks[1][0] + width / 2, "two runs of February, side by side"
    assert y_range(0.1, 0.3)[0] == 0, "PSIs and counts from zero"
    assert y_range(0.77, 0.79)[:2] == (0.77, 0.79) and y_range(0.77, 0.79)[2][0] == 0.77, "far from zero: labelled"
    _, ticks = positions([f"{2020 + m // 12}-{m % 12 + 1:02d}-28" for m in range(40)])
    assert len(ticks) == 40 and 0 < sum(1 for _, label in ticks if label) <= 6


def test_the_monitor_trend_figure_ticks_every_month_from_zero():
    import matplotlib

    matplotlib.use("Agg")
    from runner import monitoring
    from runner.config import Levels

    trend = pd.DataFrame({"max input PSI": [0.05, 0.3, 0.12], "rows scored": [900.0, 1000.0, 950.0]},
                         index=pd.to_datetime(["2026-01-31", "2026-02-28", "2026-04-30"]))
    figure = monitoring.trend_figure(trend, {"max input PSI": Levels(warn=0.1, alert=0.25)}, highlight="#c62828")
    for ax in figure.axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == ["2026-01", "2026-02", "2026-03", "2026-04"]
        assert ax.get_ylim()[0] == 0 and ax.get_xlabel() == "as_of month" and ax.get_ylabel() == ax.get_title()
        points = ax.lines[0].get_xydata()
        assert list(points[:, 0]) == [0, 1, 2, 3] and pd.isna(points[2, 1]), "March has no run"
    ARTIFACTS.mkdir(exist_ok=True)
    figure.savefig(ARTIFACTS / "monitor-trend-figure.png", dpi=80)


def test_the_headline_goes_after_the_opening_markdown_and_is_not_an_authored_cell():
    """On a failed step's notebook too: after papermill's red banner and the title, before the parameters."""
    from runner.notebook.adapter import failed_cell, headline_first

    nb = nbformat.v4.new_notebook()
    banner = nbformat.v4.new_markdown_cell("<span>An Exception was encountered</span>")
    banner.metadata["tags"] = ["papermill-error-cell-tag"]
    shown = nbformat.v4.new_output("display_data", data={"text/html": "<b>ALERT</b>", "text/plain": "ALERT"},
                                   metadata={"runner_headline": True})
    cells = [banner, nbformat.v4.new_markdown_cell("# Monitor"), nbformat.v4.new_code_cell("as_of = '2026-01-31'"),
             nbformat.v4.new_code_cell("nb.headline(...)"), nbformat.v4.new_code_cell("1 / 0")]
    cells[3].outputs = [shown, nbformat.v4.new_output("stream", name="stdout", text="not the headline")]
    nb.cells = cells
    assert headline_first(nb) and not headline_first(nb), "once"
    assert [cell.cell_type for cell in nb.cells[:3]] == ["markdown", "markdown", "code"]
    assert nb.cells[2].metadata["tags"] == ["runner-headline"] and nb.cells[2].outputs == [shown]
    nbformat.validate(nb)
    assert failed_cell(nb, 5).code_cell == 3, "the author's third code cell, the copy not counted"
    tagged = nbformat.v4.new_notebook()
    tagged.cells = [nbformat.v4.new_code_cell("x")]
    tagged.cells[0].metadata["tags"] = ["headline"]
    tagged.cells[0].outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "42"}, execution_count=1)]
    assert headline_first(tagged) and tagged.cells[0].outputs[0].output_type == "display_data"
    assert not headline_first(nbformat.v4.new_notebook()), "no headline, nothing changes"
