"""The review site: every run in the run store as web pages, built statically or served live.

One :class:`Site` renders every page from the run store; ``runner review build`` writes the
pages to a folder, ``runner review serve`` (:mod:`runner.review.serve`) renders them on each
request, so new runs show without a rebuild. Both use the same relative URLs:

```
index.html, index-<n>.html      every run, newest first, :data:`PAGE_SIZE` a page; filterable
                                (``?status=failed&pipeline=credit``: ``review.js`` draws the matching
                                runs from ``index-data.js``, which lists every run as data)
pipelines/<pipeline>.html       trends: one chart per numeric scrap over the pipeline's runs
runs/<run_id>.html              one run: steps, parameters, scraps, timings, errors, links
runs/<run_id>/<step>.html       the executed notebook, as nbconvert rendered it, under a header: the run (a
                                link back), the step, its status, verdict and parameters, a "hide code" toggle
diffs/<run_a>__<run_b>.html     two runs compared (:mod:`runner.review.diff`)
```

A build rewrites only what changed (:mod:`runner.review.pages`): a run's page, its notebooks and its
diff are rendered again only when the run's record, its neighbours or the templates changed, so one new
run costs its own pages, its neighbour's page and diff, its pipeline's trends and the index pages;
the pages of a run gone from the store are removed.

Templates are the Jinja files in ``templates/review/`` at the top of the repository (a wheel installs
them as data files; :func:`runner.config.templates` finds them either way). Autoescaping is on: every
value that comes from a run (parameters, scraps, error text, names) is HTML-escaped.

Script planted in data must not run against the site. The site's own pages carry a
Content-Security-Policy (:data:`SITE_CSP`: scripts only from the site's ``review.js``, no inline
script) in a ``<meta>``, which is all a page opened from disk gets; ``runner review serve`` sends it
as a header too. An executed notebook's page holds whatever its outputs held (nbconvert copies HTML
outputs as they are), so it gets a ``<meta>`` policy of its own (:data:`NOTEBOOK_CSP`: no script at
all, nothing loaded from elsewhere) as the first thing in its ``<head>``; the run page shows it in an
``<iframe sandbox>`` (no scripts, no origin), and ``review serve`` adds the header ``sandbox``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.config import Config, templates
from runner.errors import RunnerError
from runner.notebook.adapter import HEADLINE_CELL_TAG
from runner.review.views import (
    HIDDEN_SCRAPS,
    STATUSES,
    RunView,
    format_duration,
    format_time,
    format_value,
    index_entry,
    key_scraps,
    mlflow_link,
    pager,
    pages_of,
    safe_name,
    short_digest,
    timestamp,
)
from runner.review.pages import PageFolder, digest
from runner.store.records import RunRecord, RunStore, Unreadable

TEMPLATES = templates("review")
SCRIPT = "review.js"  # the site's only script (the index's filters and pages), a file of templates/review/
DATA = "index-data.js"  # every run of the index as data, for review.js to filter: `window.reviewRuns = {...}`
PAGE_SIZE = 50  # runs per page of the index
# The site's own pages: scripts from the site's files only, the templates' inline styles, nothing from elsewhere.
SITE_CSP = ("default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:; "
            "frame-src 'self'; base-uri 'none'; form-action 'none'")
# Executed notebooks' pages: no script at all; nbconvert's inline styles and embedded images still show.
NOTEBOOK_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
NOTEBOOK_META = f'<meta http-equiv="Content-Security-Policy" content="{NOTEBOOK_CSP}">'.encode()
HEAD = re.compile(rb"<head\b[^>]*>", re.IGNORECASE)
BODY = re.compile(rb"<body\b[^>]*>", re.IGNORECASE)
NOTEBOOK_HEADER = "notebook_header.html"  # the template of the header an executed notebook's page gets
HEADLINE_CELL_CLASS = f"celltag_{HEADLINE_CELL_TAG}".encode()  # nbconvert's class of the runner's headline cell


def environment():
    """The Jinja environment of the review templates, autoescaping everything."""
    import jinja2

    if not TEMPLATES.is_dir():
        raise RunnerError(
            f"review templates not found in {TEMPLATES}; reinstall notebook-runner (its wheel installs them there)"
        )
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    env.filters.update(value=format_value, duration=format_duration, when=format_time, short=short_digest)
    return env


def notebook_page(html: bytes, header: bytes = b"") -> bytes:
    """An executed notebook's page as the site shows it: :data:`NOTEBOOK_CSP` first in its ``<head>``, and
    ``header`` (:meth:`Site.notebook_header`) first in its ``<body>``.

    nbconvert's page starts with its own ``<head>``, before any output, so the policy covers every
    script and event handler an output may hold; its ``<body>`` opens with ``<main>``, which holds the cells, so
    the header's checkbox comes before them (the CSS of its "hide code" toggle needs that, the page runs no script).
    """
    head = HEAD.search(html)
    at = head.end() if head else 0
    if not html.startswith(NOTEBOOK_META, at):
        html = html[:at] + NOTEBOOK_META + html[at:]
    body = BODY.search(html)
    if header and body and not html[body.end():].lstrip().startswith(header.lstrip()[:64]):
        html = html[:body.end()] + header + html[body.end():]
    return html


class Site:
    """Renders the review pages from a run store."""

    def __init__(self, config: Config, store: RunStore | None = None, page_size: int = PAGE_SIZE):
        if page_size < 1:
            raise RunnerError(f"a page of the index holds at least one run, not {page_size}")
        self.config = config
        self.store = store or RunStore(config.stores.runs)
        self.env = environment()
        self.page_size = page_size

    # -- reading -----------------------------------------------------------------------------
    def views(self) -> list[RunView]:
        """Every run, newest first, with links to its neighbours in the same pipeline."""
        return self.listing()[0]

    def listing(self) -> tuple[list[RunView], list[Unreadable]]:
        """:meth:`views`, and the records that cannot be read (the index lists them, without pages), newest first."""
        entries = self.store.entries()
        unreadable = [entry for entry in entries if isinstance(entry, Unreadable)]
        views = [RunView(r, r.effective_status, key_scraps=self.key_scraps(r)) for r in entries
                 if isinstance(r, RunRecord)]
        views = [v for v in views if safe_name(v.record.pipeline) and safe_name(v.record.run_id)]
        newer: dict[str, RunView] = {}
        for view in views:  # newest first: the newer run seen last is the next one
            later = newer.get(view.record.pipeline)
            if later is not None:
                later.previous, view.next = view.record.run_id, later.record.run_id
            newer[view.record.pipeline] = view
        return views, unreadable

    def view(self, run_id: str) -> RunView:
        if not safe_name(run_id):
            raise RunnerError(f"no run {run_id!r} in the run store {self.store.url}")
        record = self.store.read(run_id)
        for view in self.views_of(record.pipeline):
            if view.record.run_id == run_id:
                return view
        return RunView(record, record.effective_status, key_scraps=self.key_scraps(record))

    def key_scraps(self, record: RunRecord) -> list[tuple[str, str]]:
        """The index's key scraps of a run: its verdict, then those its pipeline's ``key_scraps`` choose."""
        pipeline = self.config.pipelines.get(record.pipeline)
        return key_scraps(record, pipeline.key_scraps if pipeline else ())

    def views_of(self, pipeline: str) -> list[RunView]:
        return [v for v in self.views() if v.record.pipeline == pipeline]

    def notebooks_present(self, record: RunRecord) -> list[str]:
        """The executed notebooks' pages (steps' and earlier attempts') that are in the run store."""
        pages = (page for step in record.steps.values() for page in pages_of(step))
        return [page for page in pages if self.notebook_path(record, page)]

    def notebook_path(self, record: RunRecord, page: str | None) -> str | None:
        """An executed notebook's HTML page (a step's or an earlier attempt's) in the run store."""
        if not page or not safe_name(page):
            return None
        path = f"{self.store.run_dir(record.pipeline, record.run_id)}/{page}"
        return path if self.store.fs.exists(path) else None

    def notebook_html(self, run_id: str, file_name: str) -> bytes:
        """The executed notebook page ``file_name`` (a step's or attempt's recorded ``html``) of a run."""
        record = self.store.read(run_id)
        known = any(file_name in pages_of(step) for step in record.steps.values())
        path = self.notebook_path(record, file_name) if known else None
        if path is None:
            raise RunnerError(f"run {run_id} has no executed notebook page {file_name!r}")
        return self._notebook_copy(record, file_name, path)

    def notebook_header(self, record: RunRecord, page: str, root: str = "../../", *, headline: bool = False) -> bytes:
        """The header of an executed notebook's page ``page`` (a step's or an attempt's): the run (a link back to
        its page), the pipeline, the step, its status and verdict, its parameters and a "hide code" toggle. The
        verdict's reasons are listed unless the page opens with the notebook's ``headline`` (the runner's copy of
        it), which says them right below: the badge keeps them in its title."""
        for step in record.steps.values():
            if page in pages_of(step):
                attempt = next((a for a in step.attempts[:-1] if a.html == page), None)
                status = attempt.status if attempt else record.step_status(step)
                return self.env.get_template(NOTEBOOK_HEADER).render(
                    root=root, run=record, step=step, attempt=attempt, status=status, headline=headline).encode()
        return b""

    @functools.cached_property
    def notebook_version(self) -> str:
        """A digest of what draws an executed notebook's page besides the notebook: its policy, the header's
        template and the code that puts them in. The site's other templates do not count: a change to them does
        not copy every notebook again."""
        import inspect

        template = TEMPLATES / NOTEBOOK_HEADER
        return digest(NOTEBOOK_CSP, template.read_text() if template.is_file() else "",
                      inspect.getsource(notebook_page), inspect.getsource(Site.notebook_header))

    # -- rendering ---------------------------------------------------------------------------
    def _render(self, template: str, root: str, **context: Any) -> str:
        return self.env.get_template(template).render(root=root, statuses=STATUSES, csp=SITE_CSP, script=SCRIPT,
                                                      **context)

    def script(self) -> bytes:
        """The site's script (:data:`SCRIPT`), served and copied beside the pages."""
        path = TEMPLATES / SCRIPT
        if not path.is_file():
            raise RunnerError(f"{SCRIPT} not found in {TEMPLATES}; reinstall notebook-runner "
                              "(its wheel installs it there)")
        return path.read_bytes()

    def index_rows(self, views: list[RunView], unreadable: list[Unreadable]) -> list[RunView | Unreadable]:
        """The index's rows, newest first: a record that cannot be read gets a row of its own."""
        return sorted([*views, *unreadable], reverse=True,
                      key=lambda row: row.run_id if isinstance(row, Unreadable) else row.record.run_id)

    def index_pages(self, rows: int) -> int:
        return max(1, -(-rows // self.page_size))

    def render_index(self, views: list[RunView] | None = None, unreadable: list[Unreadable] | None = None,
                     page: int = 1) -> str:
        """Page ``page`` of the index (:func:`index_name`): :attr:`page_size` runs, newest first, a record that cannot
        be read as a row of its own (its file and why), linking nowhere; the first page sums up each pipeline."""
        if views is None:
            views, unreadable = self.listing()
        unreadable = unreadable or []
        rows = self.index_rows(views, unreadable)
        pages = self.index_pages(len(rows))
        if not 1 <= page <= pages:
            raise RunnerError(f"the index has {pages} page(s), not {page}")
        pipelines: dict[str, dict[str, Any]] = {}
        for view in views:
            summary = pipelines.setdefault(view.record.pipeline, {"runs": 0, "failed": 0, "latest": view})
            summary["runs"] += 1
            summary["failed"] += view.status == "failed"
        counts = {status: sum(v.status == status for v in views) for status in STATUSES}
        names = sorted({*pipelines, *(entry.pipeline for entry in unreadable)})
        first = (page - 1) * self.page_size
        shown = rows[first:first + self.page_size]
        return self._render("index.html", "", rows=shown, total=len(rows), first=first + 1, last=first + len(shown),
                            page=page, pages=pages, pager=pager(page, pages, index_name), page_size=self.page_size,
                            data=DATA, unreadable=unreadable, pipeline_names=names,
                            pipelines=dict(sorted(pipelines.items())), counts=counts)

    def render_data(self, views: list[RunView] | None = None, unreadable: list[Unreadable] | None = None) -> str:
        """:data:`DATA`: every row of the index as data, newest first (``review.js`` filters them)."""
        if views is None:
            views, unreadable = self.listing()
        rows = [index_entry(row) for row in self.index_rows(views, unreadable or [])]
        # JSON is JavaScript; ensure_ascii leaves no U+2028 and the like in it
        return f"window.reviewRuns = {json.dumps({'runs': rows}, separators=(',', ':'))};\n"

    def render_run(self, view: RunView, present: Collection[str] | None = None) -> str:
        """A run's page; ``present``: its notebooks' pages in the run store (:meth:`notebooks_present`, looked up
        when not given)."""
        record = self.record_links(view, present)
        return self._render("run.html", "../", view=view, run=view.record, **record)

    def record_links(self, view: RunView, present: Collection[str] | None = None) -> dict[str, Any]:
        record = view.record
        present = set(self.notebooks_present(record) if present is None else present)
        uri = record.tracking_uri or self.config.stores.tracking_uri
        steps = []
        start = timestamp(record.created_at)
        total = timeline_span(record, start)
        for step in record.steps.values():
            offset = (timestamp(step.started_at) - start) if step.started_at and start is not None else None
            status = record.step_status(step)
            duration = step.duration_s
            if duration is None and offset is not None and step.status == "running":  # so far (or until it died)
                duration = max(0.0, total - offset)
            left = None if offset is None else min(100.0, max(0.0, 100 * offset / total))
            steps.append({
                "step": step,
                "status": status,
                "notebook": step.html in present,
                "attempts": [(a, a.html in present) for a in step.attempts[:-1]],
                "mlflow": mlflow_link(uri, record.mlflow_experiment_id, step.mlflow_run_id),
                "scraps": {k: v for k, v in step.scraps.items() if k not in HIDDEN_SCRAPS},
                "bar": None if left is None or duration is None else {  # always inside the line: left + width <= 100
                    "left": min(left, 99.5),
                    "width": max(0.5, min(100.0 - min(left, 99.5), 100 * duration / total)),
                },
            })
        return {"steps": steps, "mlflow": mlflow_link(uri, record.mlflow_experiment_id, record.mlflow_run_id)}

    def render_pipeline(self, pipeline: str, views: list[RunView] | None = None) -> str:
        from runner.review.trends import charts

        views = self.views_of(pipeline) if views is None else views
        if not views:
            raise RunnerError(f"no runs of pipeline {pipeline!r} in the run store {self.store.url}")
        return self._render("pipeline.html", "../", pipeline=pipeline, views=views, charts=charts(views))

    def render_diff(self, run_a: str | RunRecord, run_b: str | RunRecord, root: str | None = "../") -> str:
        """Two runs compared; ``root`` is the way up to the site (None: a page of its own, no links)."""
        from runner.review.diff import compare

        a, b = (self.store.read(r) if isinstance(r, str) else r for r in (run_a, run_b))
        return self._render("diff.html", root, diff=compare(self.store, a, b))

    # -- building ----------------------------------------------------------------------------
    @functools.cached_property
    def version(self) -> str:
        """A digest of what draws the pages: the templates, the modules that render them and the version of
        nbdime, which aligns the cells of a diff. Pages of an earlier build drawn by other templates or code are
        rendered again."""
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as installed

        from runner.review import diff, trends, views

        sha = hashlib.sha256()
        files = sorted(path for path in TEMPLATES.iterdir() if path.is_file())
        for path in [*files, *(Path(module.__file__) for module in (views, diff, trends)), Path(__file__)]:
            sha.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        try:
            sha.update(f"nbdime {installed('nbdime')}".encode())
        except PackageNotFoundError:
            pass
        return sha.hexdigest()

    def build(self, out: Path) -> BuildResult:
        """Write the site into ``out``, rewriting only the pages whose inputs changed since the last build there
        (:mod:`runner.review.pages`) and removing those of runs gone from the store."""
        out.mkdir(parents=True, exist_ok=True)
        folder = PageFolder(out)
        views, unreadable = self.listing()
        result = BuildResult(out=out, runs=len(views))
        records = {view.record.run_id: hashlib.sha256(view.record.model_dump_json().encode()).hexdigest()
                   for view in views}
        folder.page(SCRIPT, None, self.script)
        rows = len(views) + len(unreadable)
        for number in range(1, self.index_pages(rows) + 1):
            folder.page(index_name(number), None, functools.partial(self.render_index, views, unreadable, number))
        folder.page(DATA, None, functools.partial(self.render_data, views, unreadable))
        by_pipeline: dict[str, list[RunView]] = {}
        for view in views:
            by_pipeline.setdefault(view.record.pipeline, []).append(view)
        for pipeline, runs in by_pipeline.items():
            inputs = digest(self.version, pipeline, [(v.record.run_id, records[v.record.run_id], v.status)
                                                     for v in runs])
            folder.page(f"pipelines/{pipeline}.html", inputs, functools.partial(self.render_pipeline, pipeline, runs))
        by_id = {view.record.run_id: view for view in views}
        for view in views:
            self._build_run(folder, result, view, records, by_id)
        result.removed = folder.finish()
        result.written, result.kept = folder.written, folder.kept
        return result

    def _build_run(self, folder: PageFolder, result: BuildResult, view: RunView, records: dict[str, str],
                   by_id: dict[str, RunView]) -> None:
        """A run's page, its notebooks' pages and its diff with the run before it. A finished run's record is
        never rewritten: while it stays the same, what the last build found of its notebooks holds, and its
        pages and notebooks are not read again."""
        record, run_id = view.record, view.record.run_id
        final = record.status != "running"
        before = folder.run_before(run_id)
        if final and isinstance(before, dict) and before.get("record") == records[run_id]:
            present = [page for page in before.get("notebooks", []) if isinstance(page, str) and safe_name(page)]
        else:
            present = self.notebooks_present(record)
        folder.note_run(run_id, {"record": records[run_id], "notebooks": present})
        for page in present:
            source = f"{self.store.run_dir(record.pipeline, run_id)}/{page}"
            inputs = digest(self.notebook_version, records[run_id], page) if final else None  # running: compared
            if folder.page(f"runs/{run_id}/{page}", inputs, functools.partial(self._notebook_copy, record, page,
                                                                              source)):
                result.notebooks += 1
        inputs = digest(self.version, records[run_id], view.status, view.previous, view.next, present,
                        self.config.stores.tracking_uri)
        folder.page(f"runs/{run_id}.html", inputs, functools.partial(self.render_run, view, present))
        if view.previous:
            previous = by_id[view.previous]
            inputs = None if "running" in (view.status, previous.status) else digest(
                self.version, records[view.previous], records[run_id], previous.status, view.status)
            if folder.page(f"diffs/{view.previous}__{run_id}.html", inputs,
                           functools.partial(self.render_diff, previous.record, record)):
                result.diffs += 1

    def _notebook_copy(self, record: RunRecord, page: str, source: str) -> bytes:
        html = self.store.fs.cat_file(source)
        return notebook_page(html, self.notebook_header(record, page, headline=HEADLINE_CELL_CLASS in html))


def timeline_span(record: RunRecord, start: float | None) -> float:
    """Seconds the run's timeline spans: its duration; for a run that has none (still running, or killed before
    it recorded its end) until the last time its record knows of (a step's end, its last heartbeat)."""
    if record.duration_s:
        return max(record.duration_s, 1e-9)
    ends = [timestamp(step.ended_at) for step in record.steps.values()]
    ends += [timestamp(record.process.heartbeat_at)] if record.status == "running" else []
    ends += [(timestamp(step.started_at) or 0.0) + (step.duration_s or 0.0) for step in record.steps.values()
             if step.started_at]
    known = [end - start for end in ends if end is not None and start is not None]
    return max([*known, 1e-9])


def index_name(page: int) -> str:
    """The file of the index's page ``page`` (from 1)."""
    return "index.html" if page == 1 else f"index-{page}.html"


@dataclass
class BuildResult:
    out: Path
    runs: int = 0
    notebooks: int = 0  # executed notebooks' pages copied
    diffs: int = 0  # diffs written
    written: list[str] = field(default_factory=list)  # every file written, relative to ``out``
    kept: int = 0  # pages left as they were
    removed: list[str] = field(default_factory=list)  # pages of runs gone from the store


def default_out(config: Config) -> Path:
    return config.stores.home / "review"


def build(config: Config, out: Path | None = None, page_size: int | None = None) -> BuildResult:
    return Site(config, page_size=page_size or PAGE_SIZE).build(Path(out) if out else default_out(config))
