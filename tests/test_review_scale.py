"""The review site as runs pile up: a rebuild writes only the pages a change touches, pages of runs gone
from the store go too, and the index comes in pages, filterable across all of them.

Runs are written straight into the run store by bench/review.py's generator (records, small executed
notebooks and plain pages; no kernel), 60 of them over three pipelines, with a page size of 10. What a
build did is read from the files on disk: every file's modification time is set back after a build, so a
file written again shows. Screenshots land in test-artifacts/review-scale-*.png.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import Project

from runner.config import load_config
from runner.store.records import RunStore

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
RUNS, PAGE_SIZE = 60, 10
OLD = 1_000_000_000  # a modification time (2001) that no build writes


def _bench():
    spec = importlib.util.spec_from_file_location("bench_review", ROOT / "bench" / "review.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _bench()


def generated(project: Project, runs: int = RUNS) -> RunStore:
    bench.write_project(project.root)
    store = RunStore(load_config(project.config).stores.runs)
    bench.write_runs(store, runs, html="plain")
    return store


def build(project: Project, *args: str) -> str:
    result = project.cli("review", "build", "--page-size", str(PAGE_SIZE), *args)
    assert result.exit_code == 0, result.output
    return result.stdout


def site(project: Project) -> Path:
    return project.home / "review"


def age(out: Path) -> dict[str, str]:
    """Set every file of the site back to :data:`OLD`; returns each file's content digest."""
    files = {}
    for path in out.rglob("*"):
        if path.is_file():
            os.utime(path, (OLD, OLD))
            files[path.relative_to(out).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def written_since(out: Path) -> set[str]:
    return {path.relative_to(out).as_posix() for path in out.rglob("*")
            if path.is_file() and path.stat().st_mtime != OLD and not path.name.startswith(".")}


def files(out: Path) -> set[str]:
    return {path.relative_to(out).as_posix() for path in out.rglob("*") if path.is_file() and not path.name.startswith(".")}


def index_pages(out: Path) -> set[str]:
    return {p.name for p in out.glob("index*.html")} | {"index-data.js"}


def ids(store: RunStore, pipeline: str | None = None) -> list[str]:
    """Run ids, newest first."""
    return [r.run_id for r in store.list(pipeline)]


class Links(HTMLParser):
    """The runs an index page lists and its pager's links to the newer and older pages."""

    def __init__(self):
        super().__init__()
        self.runs: list[str] = []
        self.pager: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and "run-link" in (attrs.get("class") or ""):
            self.runs.append(attrs["href"].removeprefix("runs/").removesuffix(".html"))
        elif tag == "a" and attrs.get("rel") in ("prev", "next"):
            self.pager[attrs["rel"]] = attrs["href"]


def parse(page: Path) -> Links:
    links = Links()
    links.feed(page.read_text())
    return links


# -- what a rebuild writes ----------------------------------------------------------------------
def test_one_new_run_rewrites_its_pages_its_neighbours_its_trends_and_the_index_only(project):
    store = generated(project)
    out = site(project)
    first = build(project)
    assert f"wrote the review site of {RUNS} run(s)" in first and "0 unchanged, 0 removed" in first
    before = age(out)
    again = build(project)
    assert "0 file(s) written" in again and "0 removed; 0 notebook(s) copied, 0 diff(s) rendered" in again
    assert written_since(out) == set(), "nothing new: nothing written"

    previous = ids(store, "credit")[0]
    new = bench.write_run(store, RUNS, "credit", html="plain")  # run 60: a credit run that succeeded, the newest of all
    assert new.status == "succeeded" and new.run_id > max(ids(store)[1:])
    said = build(project)
    expected = {
        *index_pages(out),  # every page of the index moves down by one run; page 7 is new
        "pipelines/credit.html",  # its trends
        f"runs/{new.run_id}.html", f"runs/{new.run_id}/train.html", f"runs/{new.run_id}/score.html",
        f"diffs/{previous}__{new.run_id}.html",  # compared with the credit run before it,
        f"runs/{previous}.html",  # whose page now links to it
    }
    assert "index-7.html" in expected and written_since(out) == expected
    assert f"({len(expected)} file(s) written, " in said and "2 notebook(s) copied, 1 diff(s) rendered" in said
    for path, content in before.items():  # and the other files hold what they held
        if path not in expected and not path.startswith("."):
            assert hashlib.sha256((out / path).read_bytes()).hexdigest() == content, path
    assert f'href="../runs/{new.run_id}.html"' in (out / "runs" / f"{previous}.html").read_text()


def test_a_run_removed_from_the_store_leaves_the_site_with_its_pages(project):
    store = generated(project, RUNS + 1)  # 61 runs: seven pages of the index
    out = site(project)
    build(project)
    credit = ids(store, "credit")
    newer, gone, older = credit[4:7]
    oldest, after_oldest = credit[-1], credit[-2]
    before = files(out)
    assert (out / "runs" / gone / "train.html").is_file() and "index-7.html" in before
    age(out)
    bench.remove_run(store, store.read(gone))
    bench.remove_run(store, store.read(oldest))  # and the oldest run of all: 59 runs, six pages
    said = build(project)

    removed = before - files(out)
    assert removed == {
        f"runs/{gone}.html", *(p for p in before if p.startswith(f"runs/{gone}/")),
        f"diffs/{older}__{gone}.html", f"diffs/{gone}__{newer}.html",
        f"runs/{oldest}.html", *(p for p in before if p.startswith(f"runs/{oldest}/")),
        f"diffs/{oldest}__{after_oldest}.html", "index-7.html",
    }
    assert f", {len(removed)} removed;" in said
    assert not (out / "runs" / gone).exists(), "its notebooks' folder too"
    for path in out.rglob("*.html"):
        assert gone not in path.read_text(), f"{path} still links to the removed run"
    assert gone not in (out / "index-data.js").read_text()
    assert written_since(out) == {
        *index_pages(out), "pipelines/credit.html",
        f"runs/{older}.html", f"runs/{newer}.html", f"diffs/{older}__{newer}.html",  # now neighbours
        f"runs/{after_oldest}.html",  # no run before it any more
    }
    assert f'href="../diffs/{older}__{newer}.html"' in (out / "runs" / f"{newer}.html").read_text()


def test_pages_drawn_by_other_templates_are_drawn_again(project, monkeypatch):
    from runner.review.site import Site

    generated(project, 12)
    out = site(project)
    build(project)
    age(out)
    monkeypatch.setattr(Site, "version", "templates of another release")
    build(project)
    written = written_since(out)
    assert {p for p in files(out) if p.count("/") == 1} <= written, "every run page, trend and diff again"
    assert not any(p.count("/") == 2 for p in written), "the executed notebooks' pages do not depend on templates"


def test_a_running_run_is_read_again_until_it_ends(project):
    from runner.store.records import current_process

    store = generated(project, 6)
    out = site(project)
    record = bench.write_run(store, 6, "credit", html="plain")
    running = record.model_copy(update={"status": "running", "ended_at": None, "process": current_process()})
    running.steps["score"] = running.steps["score"].model_copy(update={"status": "running", "html": None})
    store.write(running)
    (Path(store.run_dir("credit", record.run_id)) / "score.html").unlink()
    build(project)
    page = out / "runs" / f"{record.run_id}.html"
    assert 'class="badge s-running"' in page.read_text() and not (out / "runs" / record.run_id / "score.html").exists()
    age(out)
    build(project)
    assert written_since(out) == set(), "a running run whose record and notebooks did not change is not rewritten"

    bench.write_run(store, 6, "credit", html="plain")  # it ended: record, notebooks and page as generated
    build(project)
    assert {f"runs/{record.run_id}.html", f"runs/{record.run_id}/score.html"} <= written_since(out)
    assert 'class="badge s-running"' not in page.read_text()


# -- the index in pages -------------------------------------------------------------------------
def test_the_index_comes_in_pages_that_link_to_each_other(project):
    store = generated(project, 45)
    out = site(project)
    build(project)
    seen, page, pages = [], "index.html", []
    while page:
        pages.append(page)
        links = parse(out / page)
        assert 0 < len(links.runs) <= PAGE_SIZE
        seen += links.runs
        page = links.pager.get("next")
    assert pages == ["index.html", "index-2.html", "index-3.html", "index-4.html", "index-5.html"]
    assert seen == ids(store), "every run once, newest first"
    assert parse(out / "index-3.html").pager == {"prev": "index-2.html", "next": "index-4.html"}
    first = (out / "index.html").read_text()
    assert 'id="pipelines"' in first and 'id="pipelines"' not in (out / "index-2.html").read_text()
    assert "runs 1–10 of 45" in first and "runs 41–45 of 45" in (out / "index-5.html").read_text()
    assert "page 1 of 5" in first and re.search(r'<span class="current" aria-current="page">1</span>', first)
    data = (out / "index-data.js").read_text()
    assert data.startswith("window.reviewRuns = ") and data.count('"id":') == 45


def test_a_single_page_index_says_how_many_runs_and_has_no_pager(project):
    generated(project, 4)
    build(project)
    index = (site(project) / "index.html").read_text()
    assert "4 runs" in index and '<nav class="pager" id="pager" aria-label="pages of runs" hidden></nav>' in index
    assert not (site(project) / "index-2.html").exists()


# -- in a browser -------------------------------------------------------------------------------
def row_texts(page) -> dict[str, str]:
    return dict(page.locator("#runs tbody tr").evaluate_all(
        "rows => rows.map(r => [r.querySelector('td').innerText, r.innerText])"))


@pytest.mark.slow
def test_browser_pages_and_filters_the_index(project, browser):
    from playwright.sync_api import expect

    store = generated(project)
    build(project)
    out = site(project)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto((out / "index.html").as_uri())
    newest = ids(store)
    expect(page.locator("#runs tbody tr")).to_have_count(PAGE_SIZE)
    static = row_texts(page)
    assert list(static) == newest[:PAGE_SIZE]

    page.click("#pager a[rel=next]")  # a page as built
    page.wait_for_url("**/index-2.html")
    assert list(row_texts(page)) == newest[PAGE_SIZE:2 * PAGE_SIZE]
    expect(page.locator("#shown")).to_have_text(f"runs 11–20 of {RUNS}")

    failed = [r.run_id for r in store.list(status="failed")]
    page.select_option("#filter-status", "failed")  # filtered: through every run, from page 2 too
    expect(page.locator("#runs tbody tr")).to_have_count(len(failed))
    assert list(row_texts(page)) == failed and "status=failed" in page.url
    expect(page.locator("#shown")).to_have_text(f"{len(failed)} of {RUNS} runs")

    page.select_option("#filter-status", "")
    page.select_option("#filter-pipeline", "credit")  # 20 runs: two pages of the filtered list
    credit = ids(store, "credit")
    expect(page.locator("#runs tbody tr")).to_have_count(PAGE_SIZE)
    drawn = row_texts(page)
    assert list(drawn) == credit[:PAGE_SIZE]
    for run_id in set(drawn) & set(static):  # the script draws the rows the build writes
        assert drawn[run_id] == static[run_id]
    expect(page.locator("#shown")).to_have_text(f"20 of {RUNS} runs, 1–10 shown")
    screenshot(page, "filtered")
    page.click("#pager a[rel=next]")
    page.wait_for_url(lambda url: url.endswith("/index-2.html?pipeline=credit&page=2"))
    expect(page.locator("#runs tbody tr")).to_have_count(PAGE_SIZE)
    assert list(row_texts(page)) == credit[PAGE_SIZE:] and page.input_value("#filter-pipeline") == "credit"
    expect(page.locator("#pager .current")).to_have_text("2")
    page.click(f"a.run-link:has-text('{credit[-1]}')")  # the drawn links lead to the runs
    page.wait_for_url(f"**/runs/{credit[-1]}.html")

    page.goto((out / "index-2.html").as_uri() + "?pipeline=credit")
    page.select_option("#filter-pipeline", "")  # no filter: the page as built again
    assert list(row_texts(page)) == newest[PAGE_SIZE:2 * PAGE_SIZE]
    expect(page.locator("#pager a[rel=next]")).to_have_attribute("href", "index-3.html")
    page.goto((out / "index.html").as_uri() + "?pipeline=credit&status=running")
    expect(page.locator("#no-match")).to_be_visible()
    assert problems == [], problems
    page.close()


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"review-scale-{name}.png"), full_page=True)


# -- `runner review serve` ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def review_project(tmp_path_factory) -> Project:
    """60 generated runs for conftest's review_server (50 a page: two pages)."""
    base = tmp_path_factory.mktemp("scale")
    project = Project(base / "project", base / "project" / ".runner")
    bench.write_project(project.root)
    with pytest.MonkeyPatch.context() as env:
        env.delenv("RUNNER_HOME", raising=False)
        bench.write_runs(RunStore(load_config(project.config).stores.runs), RUNS, html="plain")
    return project


def test_serve_answers_every_page_of_the_index_and_its_data(review_project, review_server):
    import urllib.error
    import urllib.request

    def get(path: str) -> tuple[int, str, str]:
        try:
            with urllib.request.urlopen(review_server + path, timeout=30) as response:
                return response.status, response.headers["Content-Type"], response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, "", ""

    status, _, first = get("index.html")
    assert status == 200 and 'href="index-2.html"' in first and first.count('class="mono run-link"') == 50
    status, _, second = get("index-2.html")
    assert status == 200 and second.count('class="mono run-link"') == 10
    assert get("index-3.html")[0] == 404 and get("index-1.html")[0] == 404 and get("index-02.html")[0] == 404
    status, kind, data = get("index-data.js")
    assert status == 200 and kind.startswith("text/javascript") and data.count('"id":') == RUNS


def test_the_page_size_is_checked(project):
    generated(project, 1)
    result = project.cli("review", "build", "--page-size", "0")
    assert result.exit_code == 2 and "0 is not in the range x>=1" in result.stderr
