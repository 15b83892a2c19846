"""`DataDictionary.row_problems` (what `runner serve` checks each request with) says of every row what the
dictionary's validation (pandera, the engine of every other check, and its refusal of fractions in int columns)
says: the same rows fail, for hostile values of every column type."""

from __future__ import annotations

import random

import pandas as pd
import pytest

from runner.data import DataDictionary
from runner.errors import DataContractError

DICTIONARY = DataDictionary.from_dict({"purposes": {"p": "a purpose"}, "tables": {"things": {
    "description": "things", "owner": "o", "columns": {
        "count": {"type": "int", "description": "c", "nullable": False, "pii": False, "min": 0, "max": 10,
                  "allowed_purposes": ["any"]},
        "weight": {"type": "float", "description": "w", "nullable": True, "pii": False, "min": -1.5,
                   "allowed_purposes": ["any"]},
        "colour": {"type": "category", "description": "k", "levels": ["red", "blue"], "nullable": False,
                   "pii": False, "allowed_purposes": ["any"]},
        "code": {"type": "string", "description": "s", "pattern": "^[A-Z]{2}[0-9]$", "nullable": True, "pii": False,
                 "allowed_purposes": ["any"]},
        "day": {"type": "date", "description": "d", "nullable": True, "pii": False, "allowed_purposes": ["any"]},
    }}}})
VALUES = {
    "count": [0, 3, 10, 11, -1, 2.0, 2.5, -0.5, None, "x", True, 7],
    "weight": [0.0, -1.5, -1.6, 1e9, None, float("nan"), 3, "2.5", "heavy"],
    "colour": ["red", "blue", "green", None, "RED", " red"],
    "code": ["AB1", "ab1", "ABC", None, "AB12", "XY9"],
    "day": ["2026-01-31", "2026-01-31T10:00:00", None, "not a day", "2026-02-30"],
}


def pandera_rows(frame: pd.DataFrame) -> set[int]:
    """The rows the dictionary's validation rejects: pandera's, and those with a fraction in an int column (all
    rows when pandera cannot say which)."""
    import pandera.pandas as pa

    cut = set(DICTIONARY.fractions("things", frame)["index"].astype(int))
    try:
        DICTIONARY.schema("things", list(frame.columns)).validate(frame, lazy=True)
        return cut
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        whole = cases["index"].isna()
        return set(range(len(frame))) if whole.any() else set(cases["index"].astype(int)) | cut


@pytest.mark.parametrize("column", list(VALUES))
def test_each_column_type_fails_the_rows_pandera_fails(column):
    for value in VALUES[column]:
        frame = pd.DataFrame({column: pd.Series([value], dtype=object)})
        assert set(DICTIONARY.row_problems("things", frame)) == pandera_rows(frame), (column, value)


def test_random_hostile_frames_fail_the_same_rows():
    rng = random.Random(7)
    for _ in range(60):
        columns = rng.sample(list(VALUES), rng.randint(1, len(VALUES)))
        rows = rng.randint(1, 6)
        frame = pd.DataFrame({c: pd.Series([rng.choice(VALUES[c]) for _ in range(rows)], dtype=object)
                              for c in columns})
        native, engine = set(DICTIONARY.row_problems("things", frame)), pandera_rows(frame)
        if engine == set(range(rows)) and native != engine:  # pandera could not coerce a whole column
            assert native, frame
            continue
        assert native == engine, frame


def test_the_problems_are_said_in_words():
    frame = pd.DataFrame({"count": [-1, 3], "colour": ["red", "green"], "code": ["AB1", "ab1"]})
    assert DICTIONARY.row_problems("things", frame) == {
        0: ["count: -1 is below the minimum 0"],
        1: ["colour: 'green' is not one of red, blue",
            f"code: 'ab1' does not match {DICTIONARY.tables['things'].columns['code'].pattern}"],
    }


def test_a_fraction_in_an_integer_column_is_refused_where_pandera_alone_would_cut_it():
    """pandera's coercion turns 2.5 into 2 in an int column without a word; the dictionary refuses it, whether the
    column came as floats or as objects, and names the row."""
    assert DICTIONARY.schema("things", ["count"]).validate(pd.DataFrame({"count": [2.5]}))["count"].tolist() == [2]
    assert DICTIONARY.row_problems("things", pd.DataFrame({"count": pd.Series([2.5], dtype=object)})) == {
        0: ["count: 2.5 is not an integer"]}
    frame = pd.DataFrame({"count": [1.0, 2.5, 3.0], "weight": [0.5, 1.0, None], "colour": ["red", "blue", "red"],
                          "code": ["AB1", None, "XY9"], "day": ["2026-01-31", None, "2026-02-01"]})
    with pytest.raises(DataContractError, match=r"count: .* failed for 1 rows \(e\.g\. 2\.5\)"):
        DICTIONARY.validate("things", frame)
    kept, rejected = DICTIONARY.split_valid("things", frame)
    assert kept["count"].tolist() == [1, 3] and str(kept["count"].dtype) == "int64"
    assert rejected["count"].tolist() == [2.5] and rejected.index.tolist() == [1]
