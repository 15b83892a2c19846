"""Data shown to people is escaped, and the review site runs no script planted in data.

Markup is planted in data: a category level (so in monitoring reasons, a rejected row and a
column name of a Styler) and a level of the data dictionary (so in a rejection reason), and it
goes through a real pipeline (tests/notebooks/displays_data.ipynb, which also shows it once
unescaped, as a careless author would). Chromium then opens every page of the built site (from
disk) and of `runner review serve`: no planted script runs anywhere, and where the runner's API or
pandas shows the data, the planted text reads as text. Screenshots land in test-artifacts/escaping-*.png.
"""

from __future__ import annotations

import io
import re
import shutil
import tokenize
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml
from conftest import RUNNER_VARS, Project, step

from runner.config import load_config
from runner.store.records import RunStore
from runner.review.site import NOTEBOOK_META

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
IMG = '<img src=x onerror="window.__pwned=1">'
SCRIPT = "<script>window.__pwned=2</script>"
SVG = '<svg onload="window.__pwned=3">'  # the second run's value, for the diff
OUR_NOTEBOOKS = sorted([*(ROOT / "notebooks" / "credit").glob("*.ipynb"),
                        *(ROOT / "templates" / "notebooks").glob("*.ipynb")])


# -- the notebook API and pandas, without a kernel ----------------------------------------------
def test_the_banner_escapes_status_title_and_every_reason():
    from runner import nb

    html = nb.banner("alert", f"colours: {IMG}", [f"alert: colour: new level {SCRIPT!r}", IMG]).data
    assert IMG not in html and SCRIPT not in html and "<script" not in html and "<img" not in html
    assert html.count("&lt;img src=x onerror=&quot;window.__pwned=1&quot;&gt;") == 2
    assert "&lt;script&gt;window.__pwned=2&lt;/script&gt;" in html and ">ALERT<" in html
    assert "&lt;B&gt;" in nb.banner("<b>", "t").data  # even a status that is not one of ok, warn, alert


def test_pandas_escapes_data_in_its_html_and_a_styler_only_when_told():
    frame = pd.DataFrame({IMG: [SCRIPT]}, index=[SCRIPT])
    assert IMG not in frame._repr_html_() and SCRIPT not in frame._repr_html_()  # pandas' default; we keep it
    assert SCRIPT in frame.style.to_html(), "a Styler writes values as markup by default: every Styler must escape"
    told = frame.style.format(escape="html").format_index(escape="html", axis=0).format_index(escape="html", axis=1)
    assert IMG not in told.to_html() and SCRIPT not in told.to_html()


def without_comments(source: str) -> str:
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return tokenize.untokenize(token for token in tokens if token.type != tokenize.COMMENT)


@pytest.mark.parametrize("path", OUR_NOTEBOOKS, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}/{p.name}")
def test_our_notebooks_show_data_only_through_escaping_displays(path):
    """Banners go through nb.banner, never a hand-made HTML(); every Styler escapes values and column labels."""
    code = "\n".join(without_comments(cell.source) for cell in nbformat.read(path, as_version=4).cells
                     if cell.cell_type == "code")
    assert "HTML(" not in re.sub(r"\s+", "", code), "show a status with nb.banner, which escapes"
    for styler in re.finditer(r"\.style\b", code):
        statement = re.sub(r"\s+", "", code[styler.start():styler.start() + 400])
        assert '.format(' in statement and 'escape="html"' in statement, statement
        assert 'format_index(escape="html",axis=1)' in statement, statement


# -- a real pipeline, its site built and served -------------------------------------------------
@pytest.fixture(scope="module")
def planted(tmp_path_factory, migrated_mlflow_db) -> tuple[Project, list[str]]:
    """Two runs of displays_data with markup planted in its data; the review site built."""
    base = tmp_path_factory.mktemp("escaping")
    home = base / ".runner"
    home.mkdir()
    shutil.copy(migrated_mlflow_db, home / "mlflow.db")
    project = Project(base / "project", home)
    (project.root / "data").mkdir(parents=True)
    project.write({"shown": {"steps": {"data": step("displays_data", parameters={"level": IMG, "extra": SCRIPT})}}},
                  defaults={"timeout": "120s"})
    column = {"description": "x.", "nullable": False, "pii": False, "allowed_purposes": ["any"]}
    (project.root / "data" / "dictionary.yaml").write_text(yaml.safe_dump({
        "purposes": {"testing": "Tests."},
        "tables": {"things": {"description": "Things with a colour.", "owner": "tests", "key": ["thing_id"], "columns": {
            "thing_id": {"type": "string", **column},
            "colour": {"type": "category", "levels": ["red", "blue", SCRIPT], **column},  # a level of the dictionary
        }}},
    }))
    with pytest.MonkeyPatch.context() as env:
        for name in RUNNER_VARS + ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
            env.delenv(name, raising=False)
        env.setenv("RUNNER_HOME", str(home))
        for extra in (SCRIPT, SVG):
            result = project.cli("run", "shown", "-p", f"data.extra={extra}", "--as-of", "2026-07-01")
            assert result.exit_code == 0, result.output
        built = project.cli("review", "build")
        assert built.exit_code == 0, built.output
        runs = [r.run_id for r in reversed(RunStore(load_config(project.config).stores.runs).list("shown"))]
    return project, runs


@pytest.mark.slow
def test_the_executed_notebook_holds_the_planted_values_escaped_and_the_site_adds_its_policy(planted, monkeypatch):
    project, (first, _) = planted
    monkeypatch.setenv("RUNNER_HOME", str(project.home))
    record = RunStore(load_config(project.config).stores.runs).read(first)
    assert record.steps["data"].scraps["level"] == IMG and record.steps["data"].scraps["rows_rejected"] == 1
    assert any(f"new level {IMG!r}" in reason for reason in record.steps["data"].scraps["reasons"])
    page = (project.home / "review" / "runs" / first / "data.html").read_bytes()
    head = re.search(rb"<head[^>]*>", page)
    assert page[head.end():].startswith(NOTEBOOK_META), "the policy comes before anything an output holds"
    text = page.decode()
    banner = text[text.index('class="runner-banner"'):]
    banner = banner[:banner.index("</div></div>")]
    assert "colours: &lt;img src=x onerror=" in banner
    assert "new level '&lt;script&gt;window.__pwned=2&lt;/script&gt;'" in banner
    elements = re.findall(r"<img[^>]*\sonerror=|<script>window", text)  # nbconvert rewrites the markup it keeps
    assert len(elements) == 2 and text.index('<div id="unescaped">') < text.index(elements[0]), \
        "only the careless cell holds the planted markup as markup"


def assert_nothing_ran(page) -> None:
    for frame in page.frames:
        assert frame.evaluate("typeof window.__pwned") == "undefined", f"planted script ran in {frame.url}"


def check_notebook(notebook, name: str = "") -> None:
    """The planted values read as text wherever nb.banner, pandas or an escaping Styler shows them."""
    from playwright.sync_api import expect

    expect(notebook.locator(".runner-banner")).to_contain_text(f"colours: {IMG}")
    expect(notebook.locator(".runner-banner")).to_contain_text(f"new level {IMG!r}")
    rejected = notebook.locator("table.dataframe", has_text="isin")
    expect(rejected).to_contain_text(IMG)
    expect(rejected).to_contain_text(f"'{SCRIPT}'")  # the reason quotes the dictionary's level
    expect(notebook.locator("table.levels")).to_contain_text(IMG)
    expect(notebook.locator("#unescaped img")).to_have_count(1)  # the careless cell's markup is there...
    banner_style = notebook.locator(".runner-banner").evaluate("e => getComputedStyle(e).borderLeftWidth")
    assert banner_style == "8px", "inline styles apply"
    image = notebook.locator("img[src^='data:image/png']")
    expect(image).to_have_count(1)
    assert image.evaluate("img => img.complete && img.naturalWidth") == 1, "embedded images show"


def visit_site(browser, url: str, first: str, second: str, label: str) -> None:
    """Every page of the site at ``url`` (``index.html`` and the rest relative to it) in Chromium."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        for path in ("index.html", "pipelines/shown.html", f"diffs/{first}__{second}.html"):
            page.goto(url + path)
            assert_nothing_ran(page)
        expect(page.locator("#parameters-diff")).to_contain_text(SCRIPT)
        expect(page.locator("#parameters-diff")).to_contain_text(SVG)
        expect(page.locator("#notebook-data")).to_contain_text(SCRIPT)  # the injected parameters, the reasons scrap

        page.goto(url + "index.html?status=succeeded")  # the site's own script still runs: the filters work
        expect(page.locator("#shown")).to_have_text("2 runs")
        assert page.input_value("#filter-status") == "succeeded"

        page.goto(url + f"runs/{first}.html")
        expect(page.locator("table.params")).to_contain_text(IMG)
        expect(page.locator("table.scraps")).to_contain_text(IMG)
        frame = page.locator("iframe.notebook")
        assert frame.get_attribute("sandbox") == ""  # no allow-scripts, no allow-same-origin
        page.click("summary:has-text('Show the executed notebook here')")
        check_notebook(page.frame_locator("iframe.notebook"))
        assert_nothing_ran(page)
        page.screenshot(path=str(ARTIFACTS / f"escaping-{label}-run.png"), full_page=True)

        page.goto(url + f"runs/{first}/data.html")  # the notebook's page on its own
        check_notebook(page)
        page.wait_for_timeout(300)  # an image's error event comes after the load
        assert_nothing_ran(page)
        page.screenshot(path=str(ARTIFACTS / f"escaping-{label}-notebook.png"), full_page=True)
    finally:
        page.close()


@pytest.mark.slow
def test_the_built_site_opened_from_disk_runs_no_planted_script(planted, browser):
    project, (first, second) = planted
    ARTIFACTS.mkdir(exist_ok=True)
    visit_site(browser, (project.home / "review").as_uri() + "/", first, second, "built")


@pytest.fixture(scope="module")
def review_project(planted) -> Project:
    """The project conftest's review_server serves."""
    return planted[0]


def fetch(url: str) -> tuple[int, dict[str, str], str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


def directives(policy: str) -> dict[str, str]:
    return {part.split()[0]: " ".join(part.split()[1:]) for part in (p.strip() for p in policy.split(";")) if part}


@pytest.mark.slow
def test_serve_sends_a_policy_with_every_response(planted, review_server):
    _, (first, second) = planted
    for path in ("", "index.html", "pipelines/shown.html", f"runs/{first}.html", f"diffs/{first}__{second}.html"):
        status, headers, body = fetch(review_server + path)
        policy = directives(headers["Content-Security-Policy"])
        assert status == 200 and policy["script-src"] == "'self'", (path, policy)  # no inline script
        assert policy["frame-ancestors"] == "'none'" and policy["default-src"] == "'none'"
        assert "<script>" not in body, f"an inline script on {path}"
        assert not re.search(r"<[^>]+\son[a-z]+=", body), f"an inline event handler on {path}"
    status, headers, body = fetch(review_server + f"runs/{first}/data.html")
    policy = directives(headers["Content-Security-Policy"])
    assert status == 200 and "sandbox" in policy and policy["sandbox"] == ""  # no allow-scripts, no allow-same-origin
    assert policy["default-src"] == "'none'" and "script-src" not in policy and policy["img-src"] == "data:"
    assert policy["frame-ancestors"] == "'self'" and NOTEBOOK_META.decode() in body
    status, headers, body = fetch(review_server + "review.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript") and "filter-status" in body
    assert "Content-Security-Policy" in headers
    status, headers, _ = fetch(review_server + "runs/nope/../../x")
    assert status == 404 and "Content-Security-Policy" in headers


@pytest.mark.slow
def test_the_served_site_runs_no_planted_script(planted, review_server, browser):
    _, (first, second) = planted
    ARTIFACTS.mkdir(exist_ok=True)
    visit_site(browser, review_server, first, second, "served")
