"""monitoring.compare over the batch in chunks: the same findings as over the whole frame at once.

The current batch is made here with known drift (a mean shift, a missing-rate rise, a new level, values out
of the dictionary's range); each chunking of it (one row a chunk, an odd size, bigger than the batch, empty
chunks between, Arrow record batches) must give the same rows, severities and values (relative 1e-9: sums
added in another order) and the same details, but the median quoted in a numeric PSI detail, which is
interpolated within the profile's grid once values came in two chunks or more.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from runner import monitoring
from runner.monitoring.drift import _NumericTally

NUMERIC, CATEGORICAL = ["income", "age", "tenure", "empty"], ["purpose"]
LEVELS = ["car", "home", "study", "travel", "other"]
LIMITS = {"age": {"min": 18, "max": 100}, "income": {"min": 0, "max": None}, "purpose": {"levels": LEVELS}}
TOLERANCE = 1e-9  # relative, on every value and p-value


def _frame(seed: int, n: int, *, current: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    income = rng.lognormal(10.5 + (0.3 if current else 0.0), 0.5, n)
    income[rng.random(n) < (0.15 if current else 0.01)] = np.nan  # missing 1% -> 15%
    age = rng.integers(18, 80, n).astype(float)
    purpose = rng.choice(np.array(LEVELS, dtype=object), n, p=[0.4, 0.3, 0.15, 0.1, 0.05])
    purpose[rng.random(n) < 0.02] = None
    if current:
        age[:n // 50] = 150.0  # 2% above the dictionary's range, in the first rows only
        purpose[-n // 20:] = "crypto"  # a new level, in the last rows only: later chunks
    return pd.DataFrame({"income": income, "age": age, "tenure": pd.array(rng.poisson(3, n), dtype="Int64"),
                         "empty": pd.array([None] * n, dtype="Float64") if current else rng.normal(size=n),
                         "purpose": purpose})


@pytest.fixture(scope="module")
def data():
    reference = monitoring.profile(_frame(1, 4_000, current=False), NUMERIC, CATEGORICAL)
    current = _frame(2, 1_201, current=True)
    return reference, current, monitoring.compare(reference, current, limits=LIMITS)


def _chunks(frame: pd.DataFrame, size: int):
    for start in range(0, len(frame), size):
        yield frame.iloc[start:start + size]


def _same(streamed: pd.DataFrame, whole: pd.DataFrame) -> None:
    key = ["feature", "statistic"]
    assert sorted(map(tuple, streamed[key].to_numpy())) == sorted(map(tuple, whole[key].to_numpy()))
    joined = whole.merge(streamed, on=key, suffixes=("", "_streamed"))
    for row in joined.itertuples(index=False):
        assert row.severity_streamed == row.severity, (row.feature, row.statistic)
        for name in ("value", "p_value"):
            mine, theirs = getattr(row, name + "_streamed"), getattr(row, name)
            assert (math.isnan(mine) and math.isnan(theirs)) or mine == pytest.approx(theirs, rel=TOLERANCE,
                                                                                     abs=1e-12), (row, name)
        if row.kind == "numeric" and row.statistic == "psi":  # "median a -> b": the reference's side is the same
            assert row.detail_streamed.split("->")[0] == row.detail.split("->")[0]
        else:
            assert row.detail_streamed == row.detail, (row.feature, row.statistic)
    assert monitoring.status(streamed) == monitoring.status(whole)
    assert monitoring.reasons(streamed) == monitoring.reasons(whole) or all(
        "median" in line for line in set(monitoring.reasons(streamed)) ^ set(monitoring.reasons(whole)))


def test_the_in_memory_findings_hold_the_drift_made_here(data):
    _, _, whole = data
    got = {(row.feature, row.statistic): row.severity for row in whole.itertuples(index=False)}
    assert got[("income", "wasserstein")] != "ok" and got[("income", "missing_rate_change")] == "alert"
    assert got[("purpose", "new_level")] == "alert" and got[("purpose", "out_of_range")] == "alert"
    assert got[("age", "out_of_range")] == "alert"
    assert got[("empty", "missing_rate_change")] == "alert" and got[("empty", "psi")] == "ok"  # all missing
    assert got[("tenure", "wasserstein")] == "ok"


@pytest.mark.parametrize("size", [1, 7, 333, 5_000])
def test_chunks_of_any_size_give_the_findings_of_the_whole_frame(data, size):
    reference, current, whole = data
    _same(monitoring.compare(reference, _chunks(current, size), limits=LIMITS), whole)


def test_one_chunk_is_the_whole_frame_to_the_letter(data):
    reference, current, whole = data
    streamed = monitoring.compare(reference, iter([current]), limits=LIMITS)
    pd.testing.assert_frame_equal(streamed, whole)


def test_empty_chunks_between_and_arrow_record_batches(data):
    reference, current, whole = data
    empty = current.iloc[:0]

    def mixed():
        for i, chunk in enumerate(_chunks(current, 250)):
            yield empty
            yield pa.RecordBatch.from_pandas(chunk, preserve_index=False) if i % 2 else chunk
        yield empty

    _same(monitoring.compare(reference, mixed(), limits=LIMITS), whole)
    table = pa.Table.from_pandas(current, preserve_index=False)
    _same(monitoring.compare(reference, table, limits=LIMITS), whole)


def test_a_level_only_in_later_chunks_is_new_with_its_share_of_all_rows(data):
    reference, current, _ = data
    first = monitoring.compare(reference, _chunks(current.iloc[:1_000], 100), limits=LIMITS)
    assert "new_level" not in set(first.loc[first["feature"] == "purpose", "statistic"])
    streamed = monitoring.compare(reference, _chunks(current, 100), limits=LIMITS)
    row = streamed[(streamed["feature"] == "purpose") & (streamed["statistic"] == "new_level")].iloc[0]
    assert row["value"] == pytest.approx((current["purpose"] == "crypto").sum() / len(current))
    assert "'crypto'" in row["detail"]


def test_no_chunks_or_only_empty_ones_are_an_alert(data):
    reference, current, _ = data
    for chunks in (iter([]), iter([current.iloc[:0], current.iloc[:0]])):
        findings = monitoring.compare(reference, chunks)
        assert findings.iloc[0]["statistic"] == "rows" and monitoring.status(findings) == "alert"


def test_a_chunk_without_a_profiled_column_or_not_a_frame_is_refused(data):
    reference, current, _ = data
    ended = []

    def chunks():
        try:
            yield current
            yield current.drop(columns="age")
            yield current
        finally:
            ended.append(True)

    with pytest.raises(ValueError, match="missing from the current frame: \\['age'\\]"):
        monitoring.compare(reference, chunks())
    assert ended == [True]  # closed by compare, not left to the garbage collector
    with pytest.raises(ValueError, match="expected a pandas frame"):
        monitoring.compare(reference, iter([current.to_dict()]))


def test_the_streamed_median_is_exact_at_tied_values_and_within_its_grid_interval_elsewhere():
    rng = np.random.default_rng(3)
    for values in (rng.normal(size=20_001), rng.poisson(3, 20_001).astype(float)):
        entry = monitoring.profile(pd.DataFrame({"x": rng.permutation(values)}), ["x"], [])["columns"]["x"]
        tally = _NumericTally(entry)
        for part in np.array_split(values, 9):
            tally.add_values(part)
        grid = np.unique(entry["quantiles"])
        median, exact = tally.stats()["median"], float(np.median(values))
        g = np.searchsorted(grid, exact)
        assert grid[max(g - 1, 0)] <= median <= grid[min(g, len(grid) - 1)]
        if exact in grid:
            assert median == exact


def test_nb_stream_reads_the_month_from_the_warehouse_in_chunks_for_compare(data, tmp_path, monkeypatch):
    import yaml

    from runner import nb
    from runner.data import DataDictionary, Warehouse

    column = {"description": "a column", "pii": False, "allowed_purposes": ["any"]}
    types = {"app_id": ("int", False), "month": ("string", False), "income": ("float", True), "age": ("float", False),
             "tenure": ("int", False), "empty": ("float", True), "purpose": ("string", True)}
    dictionary = {"purposes": {"lending": "Deciding on loans."}, "tables": {"applications": {
        "description": "applications", "owner": "tests", "key": ["app_id"],
        "columns": {name: {**column, "type": kind, "nullable": nullable} for name, (kind, nullable) in types.items()}}}}
    (tmp_path / "dictionary.yaml").write_text(yaml.safe_dump(dictionary))
    (tmp_path / "runner.yaml").write_text(yaml.safe_dump({
        "dictionary": "dictionary.yaml",
        "pipelines": {"lend": {"purpose": "lending", "steps": {"monitor": {"notebook": "monitor.ipynb"}}}}}))
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    for name, value in {"RUNNER_CONFIG": tmp_path / "runner.yaml", "RUNNER_WAREHOUSE_URL": url, "RUNNER_RUN_ID": "r1",
                        "RUNNER_PIPELINE": "lend", "RUNNER_STEP": "monitor", "RUNNER_AS_OF": "2026-01-31"}.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.setattr(nb, "_context", None)
    reference, current, _ = data
    other = current.assign(month="2025-12").iloc[:300]
    rows = pd.concat([current.assign(month="2026-01"), other], ignore_index=True)
    Warehouse(url, DataDictionary.from_dict(dictionary, source="test")).write_table(
        "applications", rows.assign(app_id=range(len(rows))))
    features = [*NUMERIC, *CATEGORICAL]
    month = {"where": "month = :month", "params": {"month": "2026-01"}}
    whole = monitoring.compare(reference, nb.load("applications", columns=features, **month), limits=LIMITS)
    chunks = nb.stream("applications", columns=features, chunksize=97, **month)
    _same(monitoring.compare(reference, chunks, limits=LIMITS), whole)
    assert whole.loc[whole["statistic"] == "rows"].empty and monitoring.status(whole) == "alert"
