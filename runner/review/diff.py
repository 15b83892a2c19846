"""Two runs compared: parameters, scraps and each step's executed notebook.

nbdime aligns the two notebooks' cells (``nbdime.diff_notebooks``: its matching of moved,
added and edited cells is the hard part). nbdime 4 renders diffs only in its web app (a server
and a large JavaScript bundle), so the page is drawn here from nbdime's diff structure: every
aligned cell pair whose source or outputs differ shows a line diff of each; cell metadata,
ids and execution counts (which differ in every run) are left out; unchanged cells fold away.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field
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


@dataclass
class CellDiff:
    state: str  # same, changed, added, removed
    cell_type: str
    a_index: int | None
    b_index: int | None
    source: list[tuple[str, str]] = field(default_factory=list)  # (" ", "+", "-"), line
    outputs: list[tuple[str, str]] = field(default_factory=list)
    count: int = 1  # for a fold of unchanged cells


@dataclass
class NotebookDiff:
    step: str
    cells: list[CellDiff]
    note: str = ""

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
    steps = list(dict.fromkeys([*a.steps, *b.steps]))
    parameters, scraps, notebooks = [], [], []
    for name in steps:
        sa, sb = a.steps.get(name), b.steps.get(name)
        parameters += _rows(name, sa.parameters if sa else {}, sb.parameters if sb else {})
        scraps += _rows(name, _scraps(sa), _scraps(sb))
        notebooks.append(_notebook(store, name, a, b))
    return Comparison(a, b, parameters, scraps, notebooks)


def _scraps(step) -> dict[str, Any]:
    return {k: v for k, v in step.scraps.items() if k not in HIDDEN_SCRAPS} if step else {}


def _rows(step: str, a: dict[str, Any], b: dict[str, Any]) -> list[Row]:
    rows = []
    for name in dict.fromkeys([*a, *b]):
        va, vb = a.get(name), b.get(name)
        state = "added" if name not in a else "removed" if name not in b else "same" if va == vb else "changed"
        delta = ""
        if state == "changed" and is_number(va) and is_number(vb):
            delta = f"{'+' if vb >= va else ''}{format_value(vb - va)}"
        rows.append(Row(step, name, None if name not in a else format_value(va),
                        None if name not in b else format_value(vb), state, delta))
    return rows


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


def _notebook(store: RunStore, step: str, a: RunRecord, b: RunRecord) -> NotebookDiff:
    nb_a, nb_b = _read_notebook(store, a, step), _read_notebook(store, b, step)
    if nb_a is None or nb_b is None:
        missing = " and ".join(r.run_id for r, nb in ((a, nb_a), (b, nb_b)) if nb is None)
        return NotebookDiff(step, [], note=f"no executed notebook in {missing}")
    return NotebookDiff(step, notebook_diff(nb_a, nb_b))


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
            rows.append(CellDiff("added", cell.cell_type, None, j, _lines("+", _source(cell)),
                                 _lines("+", _outputs(cell))))
            j += 1
        if i == len(base):
            break
        cell = base[i]
        if i in removed:
            rows.append(CellDiff("removed", cell.cell_type, i, None, _lines("-", _source(cell)),
                                 _lines("-", _outputs(cell))))
            continue
        other = nb_b.cells[j]
        if i in patched and patched[i] & set(CONTENT_KEYS):
            rows.append(CellDiff("changed", other.cell_type, i, j, _diff(_source(cell), _source(other)),
                                 _diff(_outputs(cell), _outputs(other))))
        else:
            rows.append(CellDiff("same", cell.cell_type, i, j, _lines(" ", _source(cell))))
        j += 1
    return _fold(rows)


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


def _outputs(cell) -> list[str]:
    lines: list[str] = []
    for output in cell.get("outputs", []):
        kind = output.get("output_type")
        if kind == "stream":
            lines += "".join(output.get("text", "")).splitlines()
        elif kind == "error":
            lines.append(f"{output.get('ename')}: {output.get('evalue')}")
        else:
            lines += _data_lines(output.get("data", {}))
    return lines


def _data_lines(data: dict[str, Any]) -> list[str]:
    for mime, value in data.items():
        if mime.startswith("application/scrapbook.scrap"):
            return [f"scrap {value.get('name')} = {json.dumps(value.get('data'), default=str)}"]
    text = data.get("text/plain")
    lines = "".join(text).splitlines() if text is not None else []
    for mime, value in data.items():
        if mime.startswith("image/"):
            raw = "".join(value) if isinstance(value, list) else str(value)
            lines.append(f"[{mime}, {len(raw)} bytes, sha256 {hashlib.sha256(raw.encode()).hexdigest()[:12]}]")
        elif mime == "text/html" and text is None:
            lines.append(f"[text/html, {len(''.join(value))} characters]")
    return lines


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
