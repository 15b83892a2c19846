"""A folder of pages, each rewritten only when what it is made of changed.

The site's build (:meth:`runner.review.site.Site.build`) gives every page a digest: of its inputs (a run's
record, its neighbours, the templates) where those are cheap to know and the rendering is not, so an unchanged
page is not even rendered; else of its content, rendered and compared. ``.review-build.json`` in the folder
keeps the digests of the last build, and what it found of each run's executed notebooks. A page whose digest
is unchanged and whose file is still there is left as it is; a page the last build wrote that this one does not
(a run gone from the store) is removed. A folder without that file (a first build, or one from before it
existed) gets every page written once.

Imports nothing of the site: it knows paths, digests and bytes, not what a page shows.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

MANIFEST = ".review-build.json"
FORMAT = 1  # of the manifest; another value is read as no manifest (every page written once)


def digest(*parts: Any) -> str:
    """A digest of JSON-able ``parts``."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class PageFolder:
    """The pages of one build into ``out``: :meth:`page` each one, then :meth:`finish`."""

    def __init__(self, out: Path):
        self.out = out
        before = _read(out / MANIFEST)
        self._pages_before: dict[str, str] = before.get("pages", {})
        self._runs_before: dict[str, Any] = before.get("runs", {})
        self.pages: dict[str, str] = {}
        self.runs: dict[str, Any] = {}
        self.written: list[str] = []
        self.kept = 0

    def run_before(self, run_id: str) -> Any:
        """What the last build noted of a run (:meth:`note_run`), or None."""
        return self._runs_before.get(run_id)

    def note_run(self, run_id: str, note: Any) -> None:
        self.runs[run_id] = note

    def page(self, path: str, inputs: str | None, render: Callable[[], str | bytes]) -> bool:
        """Make the page ``path`` (relative to the folder): ``inputs`` is the digest of what it is made of,
        ``render`` is called only when that changed or the file is gone; with ``inputs`` None the page is
        rendered and its content's digest decides. Returns whether the file was written."""
        target = self.out / path
        content = None
        if inputs is None:
            content = _bytes(render())
            inputs = hashlib.sha256(content).hexdigest()
        self.pages[path] = inputs
        if self._pages_before.get(path) == inputs and target.is_file():
            self.kept += 1
            return False
        write(target, content if content is not None else _bytes(render()))
        self.written.append(path)
        return True

    def finish(self) -> list[str]:
        """Remove the pages the last build wrote and this one did not (and folders left empty), then keep this
        build's digests for the next one. Returns the pages removed."""
        removed = []
        root = self.out.resolve()
        for path in sorted(set(self._pages_before) - set(self.pages)):
            target = (self.out / path).resolve()
            if not target.is_relative_to(root) or target == root:  # a manifest edited by hand names only our pages
                continue
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
                removed.append(path)
            folder = target.parent
            while folder != root and folder.is_relative_to(root):
                try:
                    folder.rmdir()  # only when empty
                except OSError:
                    break
                folder = folder.parent
        write(self.out / MANIFEST, json.dumps({"format": FORMAT, "pages": self.pages, "runs": self.runs},
                                              sort_keys=True).encode())
        return removed


def write(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all (a temporary file renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _bytes(content: str | bytes) -> bytes:
    return content.encode("utf-8") if isinstance(content, str) else content


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    ok = isinstance(data, dict) and data.get("format") == FORMAT
    return data if ok and isinstance(data.get("pages"), dict) and isinstance(data.get("runs"), dict) else {}

