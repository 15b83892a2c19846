"""What the review site's pages show of a run: names safe as file names, values and times as text, the
scraps worth a glance, where its MLflow run is, and :class:`RunView` (a record with its neighbours).

Shared by the site (:mod:`runner.review.site`), its diffs (:mod:`runner.review.diff`) and its trend charts
(:mod:`runner.review.trends`); it imports none of them.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from runner.secrets import strip_userinfo
from runner.store.records import SNAPSHOTS_SCRAP, VERDICT_SCRAP, RunRecord, StepRecord, Unreadable, Verdict

SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")  # names used as file names in the site
# shown as snapshots, model versions and the verdict instead
HIDDEN_SCRAPS = (SNAPSHOTS_SCRAP, "runner_models", "runner_registered", VERDICT_SCRAP)
STATUSES = ("succeeded", "failed", "running", "interrupted")
KEY_SCRAPS = 3


def safe_name(name: str) -> bool:
    return bool(SAFE_NAME.match(name)) and ".." not in name


def format_value(value: Any) -> str:
    """A parameter or scrap as text: strings as they are, floats to 6 significant digits, else JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:.6g}"
    return json.dumps(value, default=str)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m {secs:02d}s" if minutes < 60 else f"{minutes // 60}h {minutes % 60:02d}m"


def format_time(iso: str | None) -> str:
    if not iso:
        return "–"
    try:
        return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return iso


def short_digest(text: str | None, length: int = 12) -> str:
    return (text or "")[:length]


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def key_scraps(record: RunRecord, chosen: tuple[str, ...] = (), limit: int = KEY_SCRAPS) -> list[tuple[str, str]]:
    """The scraps worth a glance in the index: the run's verdict first (its reasons as text), then the scraps
    ``chosen`` for its pipeline in ``runner.yaml`` (``key_scraps``: ``STEP.NAME`` or a ``NAME`` of any step, in
    that order), else numbers first, then flags, then short strings; at most ``limit`` besides the verdict."""
    verdict = record.verdict
    head = [("verdict", verdict.text)] if verdict else []
    if chosen:
        picked = []
        for wanted in chosen:
            for step in record.steps.values():
                name = wanted.split(".", 1)[1] if wanted.startswith(f"{step.name}.") else wanted
                if name in step.scraps and name not in HIDDEN_SCRAPS:
                    picked.append((f"{step.name}.{name}", format_value(step.scraps[name])))
                    break
        return head + picked[:limit]
    found = []
    for step in record.steps.values():
        for name, value in step.scraps.items():
            if name in HIDDEN_SCRAPS:
                continue
            rank = 0 if is_number(value) else 1 if isinstance(value, bool) else 2
            if rank == 2 and not (isinstance(value, str) and len(value) <= 32):
                continue
            found.append((rank, f"{step.name}.{name}", format_value(value)))
    found.sort(key=lambda item: item[0])
    return head + [(label, text) for _, label, text in found[:limit]]


def mlflow_link(tracking_uri: str | None, experiment_id: str | None, run_id: str | None) -> dict[str, str | None] | None:
    """Where to see an MLflow run: a URL for a tracking server, else the command that starts the UI."""
    if not run_id:
        return None
    uri = strip_userinfo(tracking_uri or "")
    if uri.startswith(("http://", "https://")):
        base = strip_userinfo(tracking_uri or "", mask="")  # a link a browser opens (it asks for the login)
        url = f"{base.rstrip('/')}/#/experiments/{experiment_id or '0'}/runs/{run_id}"
        return {"run_id": run_id, "url": url, "command": None}
    command = f"mlflow ui --backend-store-uri {shlex.quote(uri)}" if uri else "mlflow ui"
    return {"run_id": run_id, "url": None, "command": command}


@dataclass
class RunView:
    """A run as its pages show it: the record plus what is worked out from the other runs."""

    record: RunRecord
    status: str
    previous: str | None = None  # the run of the same pipeline just before this one
    next: str | None = None
    key_scraps: list[tuple[str, str]] = field(default_factory=list)

    @property
    def verdict(self) -> Verdict | None:
        """The run's verdict: the worst of its steps' (None: no step reported one, as in records before verdicts)."""
        return self.record.verdict

    @property
    def failed_step(self) -> StepRecord | None:
        failed = self.record.failed_steps()
        return failed[0] if failed else None


def timestamp(iso: str | None) -> float | None:
    try:
        return datetime.fromisoformat(iso).timestamp() if iso else None
    except ValueError:
        return None


def index_entry(row: RunView | Unreadable) -> dict[str, Any]:
    """A row of the index as data (what ``review.js`` draws when the index is filtered): the cells of
    ``index.html``'s row, as text."""
    if isinstance(row, Unreadable):
        return {"id": row.run_id, "pipeline": row.pipeline, "status": row.status, "path": row.path, "reason": row.reason}
    record, failed, verdict = row.record, row.failed_step, row.verdict
    return {
        "id": record.run_id, "pipeline": record.pipeline, "trigger": record.trigger, "as_of": record.as_of,
        "status": row.status, "duration": format_duration(record.duration_s),
        "verdict": [verdict.level, verdict.text] if verdict else None,
        "steps": [[step.name, record.step_status(step)] for step in record.steps.values()],
        "failed": [failed.name, failed.error.ename if failed.error else "failed"] if failed else None,
        "scraps": [list(pair) for pair in row.key_scraps],
    }


def pager(page: int, pages: int, href: Callable[[int], str]) -> list[dict[str, Any]]:
    """The links between pages of a list: newer, the first, last and nearby pages (gaps as "…"), older.
    ``href`` of a page number is its address; the current page and missing neighbours have none."""
    if pages <= 1:
        return []

    def link(text: str, number: int | None, rel: str | None = None) -> dict[str, Any]:
        there = number is not None and 1 <= number <= pages and number != page
        return {"text": text, "href": href(number) if there else None, "current": number == page and rel is None,
                "rel": rel}

    links = [link("← newer", page - 1, "prev")]
    last = 0
    for number in sorted({1, pages, *range(max(1, page - 2), min(pages, page + 2) + 1)}):
        if number > last + 1:
            links.append(link("…", None))
        links.append(link(str(number), number))
        last = number
    return [*links, link("older →", page + 1, "next")]


def pages_of(step: StepRecord) -> list[str]:
    """The HTML pages a step left: its own, then those of earlier attempts."""
    return [page for page in step.outputs() if page.endswith(".html")]
