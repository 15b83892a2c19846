"""A request's rows checked as batch inputs are: the model's signature, the data dictionary, the purpose rule.

:func:`check` returns one readable problem per thing wrong (the request is refused with them, HTTP 422) and
the flags of rows that are scored but worth a look: a categorical level the model never saw in training
(the version's reference profile), though the dictionary allows it.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from runner.data.dictionary import DataDictionary
from runner.tracking.scoring import ServedVersion

MAX_PROBLEMS = 20  # a request of 10,000 broken rows gets the first 20 problems and a count


def check(frame: pd.DataFrame, served: ServedVersion, dictionary: DataDictionary | None, table: str | None,
          purpose: str | None, levels: Mapping[str, set[str]]) -> tuple[list[str], list[list[str]]]:
    """(problems, flags per row)."""
    problems: list[str] = []
    if frame.empty:
        return ["the request holds no rows"], []
    spec = dictionary.tables.get(table) if dictionary is not None and table else None
    missing = [name for name in served.columns if name not in frame.columns]
    problems += [f"column {name!r} is missing: model {served.name} v{served.version} needs "
                 f"{', '.join(served.columns)}" for name in missing]
    for name in frame.columns:
        column = spec.columns.get(name) if spec is not None else None
        if column is None:  # undeclared: only an input of the model may come
            if name not in served.columns:
                problems.append(f"column {name!r} is not an input of model {served.name} v{served.version}; "
                                "leave it out")
        elif purpose is not None and not column.allows(purpose):  # declared: the purpose decides, input or not
            rule = f" ({column.rule})" if column.rule else ""
            problems.append(f"column {name!r} may be used for {list(column.allowed_purposes)} only, not for "
                            f"{purpose!r}{rule}; leave it out of the request")
    if problems:
        return problems[:MAX_PROBLEMS], []
    inputs = served.inputs(frame)
    if spec is not None:
        declared = [name for name in served.columns if name in spec.columns]
        rows = dictionary.row_problems(table, inputs if len(declared) == len(served.columns) else inputs[declared])
        for row, reasons in list(rows.items())[:MAX_PROBLEMS]:
            problems += [f"row {row}: {reason}" if row >= 0 else reason for reason in reasons]
        if len(rows) > MAX_PROBLEMS:
            problems.append(f"... and {len(rows) - MAX_PROBLEMS} more row(s) with problems")
        if problems:
            return problems, []
    flags: list[list[str]] = [[] for _ in range(len(inputs))]
    for name, known in levels.items():
        if name not in inputs.columns:
            continue
        for row, value in enumerate(inputs[name].tolist()):
            if value is not None and not (isinstance(value, float) and value != value) and str(value) not in known:
                flags[row].append(f"{name}: new level {value!r} (not seen in training)")
    return [], flags
