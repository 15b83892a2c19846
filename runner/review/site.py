"""The review site: every run in the run store as web pages, built statically or served live.

One :class:`Site` renders every page from the run store; ``runner review build`` writes the
pages to a folder, ``runner review serve`` (:mod:`runner.review.serve`) renders them on each
request, so new runs show without a rebuild. Both use the same relative URLs:

```
index.html                      every run, filterable (``?status=failed&pipeline=credit``)
pipelines/<pipeline>.html       trends: one chart per numeric scrap over the pipeline's runs
runs/<run_id>.html              one run: steps, parameters, scraps, timings, errors, links
runs/<run_id>/<step>.html       the executed notebook, as nbconvert rendered it
diffs/<run_a>__<run_b>.html     two runs compared (:mod:`runner.review.diff`)
```

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

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.config import Config, templates
from runner.errors import RunnerError
from runner.review.views import (
    HIDDEN_SCRAPS,
    STATUSES,
    RunView,
    format_duration,
    format_time,
    format_value,
    key_scraps,
    mlflow_link,
    pages_of,
    safe_name,
    short_digest,
    timestamp,
)
from runner.store.records import RunRecord, RunStore, Unreadable

TEMPLATES = templates("review")
SCRIPT = "review.js"  # the site's only script (the index's filters), a file of templates/review/
# The site's own pages: scripts from the site's files only, the templates' inline styles, nothing from elsewhere.
SITE_CSP = ("default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:; "
            "frame-src 'self'; base-uri 'none'; form-action 'none'")
# Executed notebooks' pages: no script at all; nbconvert's inline styles and embedded images still show.
NOTEBOOK_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
NOTEBOOK_META = f'<meta http-equiv="Content-Security-Policy" content="{NOTEBOOK_CSP}">'.encode()
HEAD = re.compile(rb"<head\b[^>]*>", re.IGNORECASE)


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


def notebook_page(html: bytes) -> bytes:
    """An executed notebook's page as the site shows it: :data:`NOTEBOOK_CSP` first in its ``<head>``.

    nbconvert's page starts with its own ``<head>``, before any output, so the policy covers every
    script and event handler an output may hold.
    """
    head = HEAD.search(html)
    at = head.end() if head else 0
    return html if html.startswith(NOTEBOOK_META, at) else html[:at] + NOTEBOOK_META + html[at:]


class Site:
    """Renders the review pages from a run store."""

    def __init__(self, config: Config, store: RunStore | None = None):
        self.config = config
        self.store = store or RunStore(config.stores.runs)
        self.env = environment()

    # -- reading -----------------------------------------------------------------------------
    def views(self) -> list[RunView]:
        """Every run, newest first, with links to its neighbours in the same pipeline."""
        return self.listing()[0]

    def listing(self) -> tuple[list[RunView], list[Unreadable]]:
        """:meth:`views`, and the records that cannot be read (the index lists them, without pages), newest first."""
        entries = self.store.entries()
        unreadable = [entry for entry in entries if isinstance(entry, Unreadable)]
        views = [RunView(r, r.effective_status, key_scraps=key_scraps(r)) for r in entries if isinstance(r, RunRecord)]
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
        return RunView(record, record.effective_status, key_scraps=key_scraps(record))

    def views_of(self, pipeline: str) -> list[RunView]:
        return [v for v in self.views() if v.record.pipeline == pipeline]

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
        return notebook_page(self.store.fs.cat_file(path))

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

    def render_index(self, views: list[RunView] | None = None, unreadable: list[Unreadable] | None = None) -> str:
        """Every run; a record that cannot be read gets a row of its own (its file and why), linking nowhere."""
        if views is None:
            views, unreadable = self.listing()
        unreadable = unreadable or []
        pipelines: dict[str, dict[str, Any]] = {}
        for view in views:
            summary = pipelines.setdefault(view.record.pipeline, {"runs": 0, "failed": 0, "latest": view})
            summary["runs"] += 1
            summary["failed"] += view.status == "failed"
        counts = {status: sum(v.status == status for v in views) for status in STATUSES}
        rows = sorted([*views, *unreadable], reverse=True,
                      key=lambda row: row.run_id if isinstance(row, Unreadable) else row.record.run_id)
        names = sorted({*pipelines, *(entry.pipeline for entry in unreadable)})
        return self._render("index.html", "", views=views, rows=rows, unreadable=unreadable, pipeline_names=names,
                            pipelines=dict(sorted(pipelines.items())), counts=counts)

    def render_run(self, view: RunView) -> str:
        record = self.record_links(view)
        return self._render("run.html", "../", view=view, run=view.record, **record)

    def record_links(self, view: RunView) -> dict[str, Any]:
        record = view.record
        uri = record.tracking_uri or self.config.stores.tracking_uri
        steps = []
        start = timestamp(record.created_at)
        total = max(record.duration_s or 0.0, 1e-9)
        for step in record.steps.values():
            offset = (timestamp(step.started_at) - start) if step.started_at and start is not None else None
            steps.append({
                "step": step,
                "notebook": bool(self.notebook_path(record, step.html)),
                "attempts": [(a, bool(self.notebook_path(record, a.html))) for a in step.attempts[:-1]],
                "mlflow": mlflow_link(uri, record.mlflow_experiment_id, step.mlflow_run_id),
                "scraps": {k: v for k, v in step.scraps.items() if k not in HIDDEN_SCRAPS},
                "bar": None if offset is None or step.duration_s is None else {
                    "left": min(100.0, max(0.0, 100 * offset / total)),
                    "width": max(0.5, min(100.0, 100 * step.duration_s / total)),
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
    def build(self, out: Path) -> BuildResult:
        """Write every page into ``out``; executed notebooks are copied, diffs of finished runs kept."""
        out.mkdir(parents=True, exist_ok=True)
        views, unreadable = self.listing()
        result = BuildResult(out=out, runs=len(views))
        (out / SCRIPT).write_bytes(self.script())
        _write(out / "index.html", self.render_index(views, unreadable))
        by_pipeline: dict[str, list[RunView]] = {}
        for view in views:
            by_pipeline.setdefault(view.record.pipeline, []).append(view)
        for pipeline, runs in by_pipeline.items():
            _write(out / "pipelines" / f"{pipeline}.html", self.render_pipeline(pipeline, runs))
        by_id = {view.record.run_id: view for view in views}
        for view in views:
            record = view.record
            _write(out / "runs" / f"{record.run_id}.html", self.render_run(view))
            for page in (page for step in record.steps.values() for page in pages_of(step)):
                source = self.notebook_path(record, page)
                target = out / "runs" / record.run_id / page
                if source and not (target.is_file() and record.status != "running" and _has_policy(target)):
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(notebook_page(self.store.fs.cat_file(source)))
                    result.notebooks += 1
            if view.previous:
                target = out / "diffs" / f"{view.previous}__{record.run_id}.html"
                # records of finished runs are never rewritten: their diff stays valid
                previous = by_id[view.previous]
                final = "running" not in (view.status, previous.status)
                if not (final and target.is_file() and _has_policy(target)):
                    _write(target, self.render_diff(previous.record, record))
                    result.diffs += 1
        return result


@dataclass
class BuildResult:
    out: Path
    runs: int = 0
    notebooks: int = 0
    diffs: int = 0


def _has_policy(page: Path) -> bool:
    """Whether a page kept from an earlier build carries a Content-Security-Policy (older builds' pages do not)."""
    with page.open("rb") as file:
        return b'http-equiv="Content-Security-Policy"' in file.read(4096)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def default_out(config: Config) -> Path:
    return config.stores.home / "review"


def build(config: Config, out: Path | None = None) -> BuildResult:
    return Site(config).build(Path(out) if out else default_out(config))
