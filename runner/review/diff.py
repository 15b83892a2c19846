"""Two runs compared: parameters, scraps and each step's executed notebook.

nbdime aligns the two notebooks' cells (``nbdime.diff_notebooks``: its matching of moved,
added and edited cells is the hard part). nbdime 4 renders diffs only in its web app (a server
and a large JavaScript bundle), so the page is drawn here from nbdime's diff structure: every
aligned cell pair whose source or outputs differ shows a line diff of each; cell metadata,
ids and execution counts (which differ in every run) are left out; unchanged cells fold away.

Outputs are compared as a reader sees them (:func:`output_text`): an HTML output (a headline, a
DataFrame, a pandas Styler) by its text, a table a line per row with its cells between ``|``, so the
random ids a Styler gives its table and the memory address in its ``text/plain`` (``<... at 0x7f...>``)
never count as a change; a cell whose outputs differ only in such things is unchanged. Images are
shown, not described: each changed image of a cell as a pair, the old beside the new, marked changed
(:class:`ImagePair`).
"""

from __future__ import annotations

import base64
import binascii
import difflib
import hashlib
import json
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from runner.store.records import RunRecord, RunStore
from runner.review.views import HIDDEN_SCRAPS, format_value, is_number, safe_name

MAX_LINES = 400  # lines shown per cell side; the rest is counted
CONTENT_KEYS = ("source", "outputs", "cell_type", "attachments")


@dataclass
class Row:
    """One parameter or scrap of one step in the two runs."""

    step: str
    name: str
    a: str | None
    b: str | None
    state: str  # same, changed, added, removed
    delta: str = ""


IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/svg+xml")  # shown as images, in this order
ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")  # an object's memory address in its repr: another in every run


@dataclass(frozen=True)
class Image:
    """An image output: its type, the ``data:`` URL that shows it, its size as text and a digest of it."""

    mime: str
    src: str
    info: str
    digest: str


@dataclass
class ImagePair:
    """The n-th image of a cell in the two runs; either side may be missing."""

    a: Image | None
    b: Image | None

    @property
    def state(self) -> str:
        if self.a is None or self.b is None:
            return "added" if self.a is None else "removed"
        return "same" if self.a.digest == self.b.digest else "changed"


@dataclass
class CellDiff:
    state: str  # same, changed, added, removed
    cell_type: str
    a_index: int | None
    b_index: int | None
    source: list[tuple[str, str]] = field(default_factory=list)  # (" ", "+", "-"), line
    outputs: list[tuple[str, str]] = field(default_factory=list)
    count: int = 1  # for a fold of unchanged cells
    images: list[ImagePair] = field(default_factory=list)

    @property
    def images_changed(self) -> int:
        return sum(pair.state != "same" for pair in self.images)


@dataclass
class NotebookDiff:
    step: str
    cells: list[CellDiff]
    note: str = ""
    pages: tuple[str | None, str | None] = (None, None)  # the step's executed notebook page in each run, if kept

    @property
    def changed(self) -> int:
        return sum(cell.state != "same" for cell in self.cells)


@dataclass
class Comparison:
    a: RunRecord
    b: RunRecord
    parameters: list[Row]
    scraps: list[Row]
    notebooks: list[NotebookDiff]

    def changed(self, rows: list[Row]) -> int:
        return sum(row.state != "same" for row in rows)


def compare(store: RunStore, a: RunRecord, b: RunRecord) -> Comparison:
    """The two runs' parameters, scraps and executed notebooks, step by step. A parameter one run was given and
    the other was not is compared with the other's default (its notebook's parameters cell), shown as such."""
    steps = list(dict.fromkeys([*a.steps, *b.steps]))
    parameters, scraps, notebooks = [], [], []
    for name in steps:
        sa, sb = a.steps.get(name), b.steps.get(name)
        nb_a, nb_b = _read_notebook(store, a, name), _read_notebook(store, b, name)
        given_a, given_b = (sa.parameters if sa else {}), (sb.parameters if sb else {})
        parameters += _rows(name, given_a, given_b, (_defaults(nb_a, set(given_b) - set(given_a)),
                                                     _defaults(nb_b, set(given_a) - set(given_b))))
        scraps += _rows(name, _scraps(sa), _scraps(sb))
        notebooks.append(_notebook(store, name, a, b, nb_a, nb_b))
    return Comparison(a, b, parameters, scraps, notebooks)


def _defaults(notebook, names: set[str]) -> dict[str, Any]:
    """The defaults of ``names`` in ``notebook``'s parameters cell: those it declares as literals (a default that
    is computed, ``date.today()``, is not known here)."""
    import ast

    from runner.notebook.contract import declared_parameters, parameters_source

    source = parameters_source(notebook.cells) if notebook is not None and names else None
    found = {}
    for declared in (declared_parameters(source) or []) if source is not None else []:
        if declared.name in names:
            try:
                found[declared.name] = ast.literal_eval(declared.default)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
    return found


def _scraps(step) -> dict[str, Any]:
    return {k: v for k, v in step.scraps.items() if k not in HIDDEN_SCRAPS} if step else {}


def _rows(step: str, a: dict[str, Any], b: dict[str, Any],
          defaults: tuple[dict[str, Any], dict[str, Any]] = ({}, {})) -> list[Row]:
    """A row per name of either side; a name one side lacks takes that side's default when given one."""
    rows = []
    for name in dict.fromkeys([*a, *b]):
        in_a, in_b = name in a or name in defaults[0], name in b or name in defaults[1]
        va, vb = a.get(name, defaults[0].get(name)), b.get(name, defaults[1].get(name))
        state = "added" if not in_a else "removed" if not in_b else "same" if va == vb else "changed"
        delta = ""
        if state == "changed" and is_number(va) and is_number(vb):
            delta = f"{'+' if vb >= va else ''}{format_value(vb - va)}"
        rows.append(Row(step, name, _shown(va, name in a, in_a), _shown(vb, name in b, in_b), state, delta))
    return rows


def _shown(value: Any, given: bool, present: bool) -> str | None:
    """A row's value: none when absent, marked when it is the notebook's default rather than given."""
    return None if not present else format_value(value) + ("" if given else "  (default)")


def _read_notebook(store: RunStore, record: RunRecord, step: str):
    output = record.steps[step].output if step in record.steps else None
    if not output or not safe_name(output):
        return None
    import nbformat

    path = f"{store.run_dir(record.pipeline, record.run_id)}/{output}"
    try:
        return nbformat.reads(store.fs.cat_file(path).decode("utf-8"), as_version=4)
    except FileNotFoundError:
        return None


def _notebook(store: RunStore, step: str, a: RunRecord, b: RunRecord, nb_a, nb_b) -> NotebookDiff:
    pages = (_page(store, a, step), _page(store, b, step))
    if nb_a is None or nb_b is None:
        missing = " and ".join(r.run_id for r, nb in ((a, nb_a), (b, nb_b)) if nb is None)
        return NotebookDiff(step, [], note=f"no executed notebook in {missing}", pages=pages)
    return NotebookDiff(step, notebook_diff(nb_a, nb_b), pages=pages)


def _page(store: RunStore, record: RunRecord, step: str) -> str | None:
    """The step's executed notebook page (its recorded ``html``) when the run store has it: the site has it too."""
    html = record.steps[step].html if step in record.steps else None
    if not html or not safe_name(html):
        return None
    return html if store.fs.exists(f"{store.run_dir(record.pipeline, record.run_id)}/{html}") else None


def notebook_diff(nb_a, nb_b) -> list[CellDiff]:
    """The cells of two notebooks aligned by nbdime, with line diffs of changed sources and outputs."""
    import nbdime

    cells_patch: list = []
    for entry in nbdime.diff_notebooks(nb_a, nb_b):
        if entry.op == "patch" and entry.key == "cells":
            cells_patch = entry.diff
    inserts: dict[int, list] = {}
    removed: set[int] = set()
    patched: dict[int, set[str]] = {}
    for entry in cells_patch:
        if entry.op == "addrange":
            inserts.setdefault(entry.key, []).extend(entry.valuelist)
        elif entry.op == "removerange":
            removed.update(range(entry.key, entry.key + entry.length))
        elif entry.op == "patch":
            patched[entry.key] = {sub.key for sub in entry.diff}
        elif entry.op == "replace":  # a whole cell replaced: shown as removed then added
            removed.add(entry.key)
            inserts.setdefault(entry.key, []).append(entry.value)
    rows: list[CellDiff] = []
    j = 0  # index of the next cell in nb_b
    base = nb_a.cells
    for i in range(len(base) + 1):
        for _cell in inserts.get(i, []):
            cell = nb_b.cells[j]
            text, images = _outputs(cell)
            rows.append(CellDiff("added", cell.cell_type, None, j, _lines("+", _source(cell)), _lines("+", text),
                                 images=[ImagePair(None, image) for image in images]))
            j += 1
        if i == len(base):
            break
        cell = base[i]
        if i in removed:
            text, images = _outputs(cell)
            rows.append(CellDiff("removed", cell.cell_type, i, None, _lines("-", _source(cell)), _lines("-", text),
                                 images=[ImagePair(image, None) for image in images]))
            continue
        other = nb_b.cells[j]
        if i in patched and patched[i] & set(CONTENT_KEYS):
            rows.append(_changed(cell, other, i, j))
        else:
            rows.append(CellDiff("same", cell.cell_type, i, j, _lines(" ", _source(cell))))
        j += 1
    return _fold(rows)


def _changed(cell, other, i: int, j: int) -> CellDiff:
    """A cell pair nbdime found different; unchanged after all when what a reader sees of it is the same."""
    (text_a, images_a), (text_b, images_b) = _outputs(cell), _outputs(other)
    pairs = [ImagePair(images_a[k] if k < len(images_a) else None, images_b[k] if k < len(images_b) else None)
             for k in range(max(len(images_a), len(images_b)))]
    source_a, source_b = _source(cell), _source(other)
    if (cell.cell_type, source_a, text_a) == (other.cell_type, source_b, text_b) and all(
            pair.state == "same" for pair in pairs):
        return CellDiff("same", cell.cell_type, i, j, _lines(" ", source_a))
    return CellDiff("changed", other.cell_type, i, j, _diff(source_a, source_b), _diff(text_a, text_b), images=pairs)


def _fold(rows: list[CellDiff]) -> list[CellDiff]:
    """Runs of unchanged cells become one row each, shown folded."""
    folded: list[CellDiff] = []
    for row in rows:
        last = folded[-1] if folded else None
        if row.state == "same" and last is not None and last.state == "same":
            last.count += 1
            last.source += [(" ", "")] + row.source
        else:
            folded.append(row)
    return folded


def _source(cell) -> list[str]:
    return cell.source.splitlines()


def _outputs(cell) -> tuple[list[str], list[Image]]:
    """A cell's outputs as a reader sees them: lines of text, and images."""
    lines: list[str] = []
    images: list[Image] = []
    for output in cell.get("outputs", []):
        kind = output.get("output_type")
        if kind == "stream":
            lines += "".join(output.get("text", "")).splitlines()
        elif kind == "error":
            lines.append(f"{output.get('ename')}: {output.get('evalue')}")
        else:
            data = output.get("data", {})
            lines += output_text(data)
            image = _image(data)
            if image is not None:
                images.append(image)
    return lines, images


def output_text(data: dict[str, Any]) -> list[str]:
    """The text of one output's data: a scrap as its name and value; HTML as the text it shows (a table a line
    per row, cells between ``|``; styles and scripts left out); else Markdown or plain text, memory addresses
    left out. An image output's plain text is its description (``<Figure size 640x480 with 1 Axes>``)."""
    for mime, value in data.items():
        if mime.startswith("application/scrapbook.scrap"):
            return [f"scrap {value.get('name')} = {json.dumps(value.get('data'), default=str)}"]
    if "text/html" in data and _image(data) is None:
        return html_text(_text(data["text/html"]))
    for mime in ("text/markdown", "text/plain"):
        if mime in data:
            return [ADDRESS.sub(" at 0x…", line) for line in _text(data[mime]).splitlines()]
    return []


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _image(data: dict[str, Any]) -> Image | None:
    """The output's image, as a ``data:`` URL; None when it has none (or its data is not an image's)."""
    mime = next((mime for mime in IMAGE_TYPES if mime in data), None)
    if mime is None:
        return None
    raw = _text(data[mime])
    if mime == "image/svg+xml":
        payload = raw.encode("utf-8")
    else:
        try:
            payload = base64.b64decode("".join(raw.split()), validate=True)
        except (binascii.Error, ValueError):
            return None
    size = _dimensions(mime, payload)
    info = f"{mime} · {f'{size[0]}×{size[1]} px · ' if size else ''}{len(payload) / 1024:.1f} kB"
    src = f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"
    return Image(mime, src, info, hashlib.sha256(payload).hexdigest())


def _dimensions(mime: str, payload: bytes) -> tuple[int, int] | None:
    """A PNG's or GIF's width and height from its header."""
    if mime == "image/png" and payload[:8] == b"\x89PNG\r\n\x1a\n" and len(payload) >= 24:
        return int.from_bytes(payload[16:20], "big"), int.from_bytes(payload[20:24], "big")
    if mime == "image/gif" and payload[:3] == b"GIF" and len(payload) >= 10:
        return int.from_bytes(payload[6:8], "little"), int.from_bytes(payload[8:10], "little")
    return None


class _HTMLText(HTMLParser):
    """The text an HTML fragment shows, in lines: a line per block, a table a line per row."""

    BLOCKS = {"address", "article", "blockquote", "br", "caption", "dd", "div", "dl", "dt", "figcaption", "figure",
              "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "ol", "p", "pre", "section",
              "table", "tbody", "tfoot", "thead", "ul"}
    HIDDEN = {"style", "script", "template", "head", "title"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self._text: list[str] = []
        self._row: list[str] | None = None  # the cells of the table row being read
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self.HIDDEN:
            self._hidden += 1
        elif tag == "tr":
            self._flush()
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._row.append("")
        elif tag in self.BLOCKS:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag == "tr" and self._row is not None:
            line = " | ".join(_squash(cell) for cell in self._row).strip()
            if line.strip(" |"):
                self.lines.append(line)
            self._row = None
        elif tag in self.BLOCKS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        if self._row is not None:
            if self._row:
                self._row[-1] += data
        else:
            self._text.append(data)

    def _flush(self) -> None:
        text = _squash("".join(self._text))
        if text:
            self.lines.append(text)
        self._text = []

    def close(self) -> None:
        super().close()
        self._flush()


def _squash(text: str) -> str:
    return " ".join(text.split())


def html_text(html: str) -> list[str]:
    """The lines of text an HTML output shows (:class:`_HTMLText`)."""
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    return parser.lines


def _lines(tag: str, lines: list[str]) -> list[tuple[str, str]]:
    shown = [(tag, line) for line in lines[:MAX_LINES]]
    if len(lines) > MAX_LINES:
        shown.append(("…", f"{len(lines) - MAX_LINES} more lines"))
    return shown


def _diff(a: list[str], b: list[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for op, a0, a1, b0, b1 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            out += [(" ", line) for line in a[a0:a1]]
        else:
            out += [("-", line) for line in a[a0:a1]] + [("+", line) for line in b[b0:b1]]
    if len(out) > MAX_LINES:
        out = out[:MAX_LINES] + [("…", f"{len(out) - MAX_LINES} more lines")]
    return out
