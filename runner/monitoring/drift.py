"""Drift and quality of a batch against a reference profile, vectorized with numpy and pandas.

At training time :func:`profile` condenses the training frame into a small JSON-serializable dict,
stored with the model version. Monitoring reads that profile, never the training rows:
:func:`compare` (inputs) and :func:`score_findings` (outputs) cost O(n log q) in the batch's rows.
Findings are one row per (feature, statistic) with the columns of :data:`COLUMNS`. Verdicts come
from effect sizes with :class:`runner.config.Thresholds`; KS and chi-square are reported with their
p-values and are always ``ok``: at a million rows a p-value flags shifts nobody would act on.
A missing-rate rise and a new level are findings of their own; distributions are over non-missing values.

How the profile stands in for the rows (the tests hold these bounds against scipy on raw samples):

* ``quantiles``: actual reference values (``inverted_cdf``) at the levels ``i / q``, i = 0..q (q = 1000).
  The reference's distribution function is taken as the piecewise-linear curve through them. Where
  levels share a value (ties of integer data) the profile keeps that value's exact share below and at
  it (``atoms``); for the first and the last interval, wide in a long tail, the share and mean of the
  values inside (``tails``). So the curve is exact at tied values and within 1/q elsewhere: KS is
  within 1/q (0.001) of ``scipy.stats.ks_2samp`` on the rows. The current batch is exact: it is
  sorted once (numpy's vectorized sort) and the grid is looked up in it.
* Wasserstein-1 is the area between the two curves: exact below the reference minimum and above its
  maximum; inside a grid interval it assumes the curves do not cross there. Divided by the reference's
  standard deviation (``ddof=0``, at least 0.001), as Evidently's normed Wasserstein. Tests: within
  2% or 0.001 reference std of ``scipy.stats.wasserstein_distance`` / std.
* PSI bins: the quantile values at the levels nearest ``i / bins`` (deciles), deduplicated; a value
  equal to an edge goes to the bin above, values outside the reference range to the end bins; shares
  are floored at :data:`EPSILON` so an empty bin stays finite. Categorical PSI, Jensen-Shannon
  (base 2) and chi-square run over the union of reference and current levels.
* NaN, None, ``pd.NA`` and +-inf count as missing. Categorical levels are compared as ``str``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from runner.config import Levels, Thresholds

COLUMNS = ["feature", "kind", "statistic", "value", "p_value", "severity", "detail"]
SEVERITY_ORDER = {"alert": 0, "warn": 1, "ok": 2}
EPSILON = 1e-4  # PSI floor for a share: an empty bin or level counts as 0.01% (Evidently uses the same)
PROFILE_VERSION = 1
MIN_STD = 0.001  # Wasserstein is divided by max(reference std, MIN_STD): a constant reference stays finite
KS_EXACT_UP_TO = 10_000  # effective n above which the KS p-value is Kolmogorov's limit
OUTPUTS = ("score",)  # profile columns that are model outputs: judged by score_findings, not compare


# -- the reference profile --------------------------------------------------------------------------

def profile(frame: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str], *, bins: int = 10,
            quantiles: int = 1000) -> dict:
    """A compact, JSON-serializable profile of ``frame`` for later :func:`compare` calls.

    Per column: ``kind``, ``count`` (non-missing values), ``missing_rate``; numeric: ``edges`` and
    ``shares`` (PSI bins), ``quantiles`` (``quantiles + 1`` levels), ``mean``, ``std``, ``min``,
    ``max``; categorical: ``levels`` (level -> count, most frequent first).
    """
    absent = [c for c in [*numeric, *categorical] if c not in frame.columns]
    if absent:
        raise ValueError(f"columns to profile are not in the frame: {absent}; frame has {list(frame.columns)}")
    if bins < 1 or quantiles < bins:
        raise ValueError(f"need 1 <= bins <= quantiles, got bins={bins}, quantiles={quantiles}")
    columns = {name: _numeric_profile(frame[name], bins, quantiles) for name in numeric}
    columns.update({name: _categorical_profile(frame[name]) for name in categorical})
    return {"version": PROFILE_VERSION, "rows": len(frame), "bins": bins, "quantiles": quantiles,
            "columns": columns}


def _values(series: pd.Series) -> tuple[np.ndarray, int]:
    """The finite values of a numeric column as float64, and how many are missing."""
    if series.dtype == object:
        try:
            series = pd.to_numeric(series)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"column {series.name!r} should be numeric: {exc}") from exc
    if not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)):
        raise ValueError(f"column {series.name!r} should be numeric, got dtype {series.dtype}")
    if isinstance(series.dtype, np.dtype):
        values = series.to_numpy(dtype="float64")  # no copy for float64; no isna pass
    else:  # nullable extension dtypes (Int64, Float64, boolean, arrow) hold pd.NA
        values = series.to_numpy(dtype="float64", na_value=np.nan)
    finite = np.isfinite(values)
    kept = int(np.count_nonzero(finite))
    return (values if kept == len(values) else values[finite]), len(values) - kept


def _numeric_profile(series: pd.Series, bins: int, quantiles: int) -> dict:
    x, missing = _values(series)
    n = len(x)
    entry = {"kind": "numeric", "count": n, "missing_rate": missing / len(series) if len(series) else 0.0}
    if n == 0:
        return {**entry, "edges": [], "shares": [], "quantiles": [], "mean": None, "std": None,
                "min": None, "max": None}
    x = np.sort(x)
    levels = np.arange(quantiles + 1)
    q = x[np.maximum((levels * n + quantiles - 1) // quantiles - 1, 0)]  # x[ceil(i n / q) - 1]: inverted_cdf
    edges = np.unique(q[np.rint(np.linspace(0, quantiles, bins + 1)).astype(int)])
    counts = np.diff(np.concatenate([[0], np.searchsorted(x, edges[1:-1], side="left"), [n]]))
    grid, first = np.unique(q, return_index=True)
    tied = grid[np.append(first[1:] - 1, quantiles) > first]  # values holding two levels or more: atoms
    atoms = np.column_stack([tied, np.searchsorted(x, tied, side="left") / n,
                             np.searchsorted(x, tied, side="right") / n])
    tails = []  # share and mean of the values strictly inside the first and the last grid interval
    for low, high in (grid[:2], grid[-2:]) if len(grid) > 1 else ():
        inside = x[np.searchsorted(x, low, side="right"):np.searchsorted(x, high, side="left")]
        tails.append([len(inside) / n, float(inside.mean()) if len(inside) else float((low + high) / 2)])
    return {**entry, "edges": edges.tolist(), "shares": (counts / n).tolist(), "quantiles": q.tolist(),
            "atoms": atoms.tolist(), "tails": tails, "mean": float(x.mean()), "std": float(x.std()), "min": float(x[0]),
            "max": float(x[-1])}


def _level_counts(series: pd.Series) -> dict[str, int]:
    """Level (as str) -> count of non-missing values, most frequent first."""
    counts = series.value_counts(dropna=True, sort=True)
    found: dict[str, int] = {}
    for level, count in zip(counts.index, counts.to_numpy()):  # one pass per level, not per row
        if count > 0:
            found[str(level)] = found.get(str(level), 0) + int(count)
    return found


def _categorical_profile(series: pd.Series) -> dict:
    levels = _level_counts(series)
    count = sum(levels.values())
    return {"kind": "categorical", "count": count,
            "missing_rate": (len(series) - count) / len(series) if len(series) else 0.0, "levels": levels}


# -- statistics -------------------------------------------------------------------------------------

def psi(expected, actual) -> float:
    """Population stability index of two share vectors over the same bins, shares floored at EPSILON."""
    e = np.clip(np.asarray(expected, dtype=float), EPSILON, None)
    a = np.clip(np.asarray(actual, dtype=float), EPSILON, None)
    return float(np.sum((a - e) * np.log(a / e)))


def jensen_shannon(p, q) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) of two count or share vectors over the same levels."""
    p = np.asarray(p, dtype=float) / np.sum(p)
    q = np.asarray(q, dtype=float) / np.sum(q)
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log2(p / m), 0.0) + np.where(q > 0, q * np.log2(q / m), 0.0)
    return float(np.sqrt(max(terms.sum() / 2, 0.0)))


def chi_square(reference_counts, current_counts) -> tuple[float, float]:
    """Pearson's chi-square statistic and p-value of the 2 x levels table (no continuity correction)."""
    from scipy.special import chdtrc  # chi2.sf without importing scipy.stats (half a second)

    table = np.vstack([reference_counts, current_counts]).astype(float)
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return math.nan, math.nan
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    statistic = float(((table - expected) ** 2 / expected).sum())
    return statistic, float(chdtrc(table.shape[1] - 1, statistic))


def ks_pvalue(d: float, n_reference: int, n_current: int) -> float:
    """Two-sided KS p-value with the effective n, as ``ks_2samp(method="asymp")`` (``kstwo``); above
    :data:`KS_EXACT_UP_TO` Kolmogorov's limit distribution (``kstwobign``), within 1% of it and ~100x faster."""
    from scipy.special import kolmogorov  # kstwobign.sf, without importing scipy.stats

    big, small = sorted((float(n_reference), float(n_current)), reverse=True)
    effective = np.round(big * small / (big + small))
    if effective > KS_EXACT_UP_TO:  # kstwo costs ~0.2 s at n = 1e5; its limit is within 1% from here on
        return float(kolmogorov(d * math.sqrt(effective)))
    from scipy.stats import kstwo

    return float(kstwo.sf(d, effective))


def numeric_stats(entry: Mapping, x: np.ndarray) -> dict:
    """Finite current values ``x`` (non-empty) against a numeric profile entry: see the module docstring.

    Returns ``shares`` (current, over the entry's PSI bins), ``psi``, ``ks``, ``wasserstein``
    (normalized), ``wasserstein_raw``, ``mean`` and ``median``.
    """
    tally = _NumericTally(entry)
    tally.add_values(x)
    return tally.stats()


class _NumericTally:
    """What the statistics need of a numeric column's current values, added chunk by chunk.

    Everything is a count or a sum on the reference's quantile grid (numbers below and up to each grid
    value, and their sums), the rows, the missing and the out-of-range counts: memory is O(grid), not
    O(rows), and adding chunks gives the same figures as one chunk of them all (sums up to float
    rounding). The median alone needs the rows: exact while the values came in one chunk, else
    interpolated inside the grid interval that holds it (it only appears in a finding's detail).
    """

    def __init__(self, entry: Mapping, limit: Mapping | None = None):
        self.entry = entry
        q = np.asarray(entry["quantiles"], dtype=float)
        self.grid, self.first = np.unique(q, return_index=True)
        self.low, self.high = (limit or {}).get("min"), (limit or {}).get("max")
        size = len(self.grid)
        self.below, self.upto = np.zeros(size, dtype=np.int64), np.zeros(size, dtype=np.int64)
        self.sum_below, self.sum_upto = np.zeros(size), np.zeros(size)
        self.n = self.rows = self.missing = self.outside = 0
        self.total = 0.0
        self.median: float | None = None
        self.chunks = 0  # chunks that held values

    def add(self, series: pd.Series) -> None:
        x, missing = _values(series)
        self.rows += len(series)
        self.missing += missing
        self.add_values(x)

    def add_values(self, x: np.ndarray) -> None:
        if not len(x):
            return
        if self.low is not None:
            self.outside += int(np.count_nonzero(x < self.low))
        if self.high is not None:
            self.outside += int(np.count_nonzero(x > self.high))
        # One sort of the chunk (numpy's is vectorized: ~15 ms per million), then the grid is looked up in it.
        x = np.sort(x)
        self.chunks += 1
        self.median = float((x[(len(x) - 1) // 2] + x[len(x) // 2]) / 2) if self.chunks == 1 else None
        cumsum = np.concatenate([[0.0], np.cumsum(x)])
        below, upto = np.searchsorted(x, self.grid, side="left"), np.searchsorted(x, self.grid, side="right")
        self.below += below
        self.upto += upto
        self.sum_below += cumsum[below]
        self.sum_upto += cumsum[upto]
        self.total += float(cumsum[-1])
        self.n += len(x)

    def stats(self) -> dict:
        """The statistics of :func:`numeric_stats` (needs values on both sides)."""
        entry, grid, first, n = self.entry, self.grid, self.first, self.n
        m = len(entry["quantiles"]) - 1
        before = first / m  # the reference curve just below each grid value ...
        at = np.append(first[1:] - 1, m) / m  # ... and at it, after any jump
        if entry.get("atoms"):  # the reference's exact shares below and at its tied values
            values, share_below, share_at = np.asarray(entry["atoms"], dtype=float).T
            where = np.searchsorted(grid, values)
            before[where], at[where] = share_below, share_at
        below, upto = self.below, self.upto
        ks = float(max(np.abs(before - below / n).max(), np.abs(at - upto / n).max()))
        width = np.diff(grid)
        inside_counts, inside_sums = below[1:] - upto[:-1], self.sum_below[1:] - self.sum_upto[:-1]
        current_area = width * upto[:-1] / n + (inside_counts * grid[1:] - inside_sums) / n
        inside_share = np.clip(before[1:] - at[:-1], 0, None)  # 1/m where the curve is linear inside ...
        inside_mean = (grid[:-1] + grid[1:]) / 2
        if entry.get("tails") and len(grid) > 1:  # ... but the end intervals, wide in a long tail, as profiled
            (inside_share[0], inside_mean[0]), (inside_share[-1], inside_mean[-1]) = entry["tails"]
        reference_area = width * at[:-1] + inside_share * (grid[1:] - inside_mean)
        outside = ((below[0] * grid[0] - self.sum_below[0])
                   + (self.total - self.sum_upto[-1] - (n - upto[-1]) * grid[-1]))
        raw = float(np.abs(reference_area - current_area).sum() + outside / n)
        inner = np.searchsorted(grid, np.asarray(entry["edges"], dtype=float)[1:-1])  # edges are grid values
        shares = np.diff(np.concatenate([[0], below[inner], [n]])) / n
        median = self.median if self.median is not None else self._median()
        return {"shares": shares, "psi": psi(entry["shares"], shares), "ks": ks, "wasserstein_raw": raw,
                "wasserstein": raw / max(entry["std"], MIN_STD), "mean": self.total / n, "median": median}

    def _median(self) -> float:
        """The median from the grid counts: exact at a grid value, else linear inside its grid interval;
        below the grid's first value or above its last, the mean of the values there."""
        def at_rank(k: int) -> float:
            g = int(np.searchsorted(self.upto, k, side="right"))  # first grid value with more than k up to it
            if g < len(self.grid) and k >= self.below[g]:
                return float(self.grid[g])
            if g == 0:
                return float(self.sum_below[0] / self.below[0])
            if g == len(self.grid):
                return float((self.total - self.sum_upto[-1]) / (self.n - self.upto[-1]))
            inside = self.below[g] - self.upto[g - 1]
            return float(self.grid[g - 1] + (k - self.upto[g - 1] + 0.5) / inside * (self.grid[g] - self.grid[g - 1]))
        return (at_rank((self.n - 1) // 2) + at_rank(self.n // 2)) / 2


# -- findings ---------------------------------------------------------------------------------------

def severity(value: float, levels: Levels | None) -> str:
    """``alert`` at or above ``levels.alert``, ``warn`` at or above ``levels.warn``; an effect of 0 is ``ok``."""
    if levels is None or value is None or math.isnan(value) or value <= 0:
        return "ok"
    return "alert" if value >= levels.alert else "warn" if value >= levels.warn else "ok"


def _row(feature, kind, statistic, value, levels, detail, p_value=math.nan) -> tuple:
    value = math.nan if value is None else float(value)
    return (feature, kind, statistic, value, float(p_value), severity(value, levels), detail)


def _nothing_seen(feature: str, kind: str, what: str) -> tuple:
    """An ``alert``: a batch with no rows can never be judged ``ok`` (monitoring that saw nothing)."""
    return (feature, kind, "rows", 0.0, math.nan, "alert",
            f"no {what} to judge; check that the upstream step wrote them for this as_of")


def _missing_row(name, kind, entry, missing, rows, thresholds) -> tuple:
    now = missing / rows if rows else 0.0
    return _row(name, kind, "missing_rate_change", now - entry["missing_rate"], thresholds.missing_rate,
                f"missing {entry['missing_rate']:.1%} -> {now:.1%}")


def _numeric_findings(name, entry, series, thresholds, limit) -> list[tuple]:
    tally = _NumericTally(entry, limit)
    tally.add(series)
    return _numeric_rows(name, tally, thresholds, limit)


def _numeric_rows(name, tally: _NumericTally, thresholds, limit) -> list[tuple]:
    entry, n = tally.entry, tally.n
    rows = [_missing_row(name, "numeric", entry, tally.missing, tally.rows, thresholds)]
    empty = "no values" if n == 0 else "no reference values" if not entry["count"] else ""
    if empty:
        rows += [_row(name, "numeric", s, math.nan, None, empty) for s in ("psi", "ks", "wasserstein")]
    else:
        s = tally.stats()
        rows += [
            _row(name, "numeric", "psi", s["psi"], thresholds.psi,
                 f"median {_number(entry['quantiles'][len(entry['quantiles']) // 2])} -> {_number(s['median'])}"),
            _row(name, "numeric", "ks", s["ks"], None, f"largest gap between the distribution functions "
                 f"{s['ks']:.1%} (p-value reported, not decisive)", ks_pvalue(s["ks"], entry["count"], n)),
            _row(name, "numeric", "wasserstein", s["wasserstein"], thresholds.wasserstein,
                 f"mean {_number(entry['mean'])} -> {_number(s['mean'])}; distance {_number(s['wasserstein_raw'])}"
                 f" = {s['wasserstein']:.3f} reference std"),
        ]
    if limit and ("min" in limit or "max" in limit):
        low, high = limit.get("min"), limit.get("max")
        share = tally.outside / n if n else math.nan
        rows.append(_row(name, "numeric", "out_of_range", share, thresholds.out_of_range,
                         f"{share:.2%} of values outside [{_number(low)}, {_number(high)}]"
                         if n else "no values"))
    return rows


class _CategoricalTally:
    """A categorical column's level counts and rows, added chunk by chunk (O(levels) memory)."""

    def __init__(self, entry: Mapping, limit: Mapping | None = None):
        self.entry, self.rows, self.found = entry, 0, {}

    def add(self, series: pd.Series) -> None:
        self.rows += len(series)
        for level, count in _level_counts(series).items():
            self.found[level] = self.found.get(level, 0) + count

    def counts(self) -> dict[str, int]:
        """Level -> count, most frequent first (ties in the order first seen)."""
        return dict(sorted(self.found.items(), key=lambda item: -item[1]))


def _categorical_findings(name, entry, series, thresholds, limit) -> list[tuple]:
    tally = _CategoricalTally(entry)
    tally.add(series)
    return _categorical_rows(name, tally, thresholds, limit)


def _categorical_rows(name, tally: _CategoricalTally, thresholds, limit) -> list[tuple]:
    entry, found, rows_seen = tally.entry, tally.counts(), tally.rows
    count = sum(found.values())
    rows = [_missing_row(name, "categorical", entry, rows_seen - count, rows_seen, thresholds)]
    levels = list(entry["levels"]) + [level for level in found if level not in entry["levels"]]
    ref = np.array([entry["levels"].get(level, 0) for level in levels], dtype=float)
    cur = np.array([found.get(level, 0) for level in levels], dtype=float)
    if count == 0 or not entry["count"]:
        empty = "no values" if count == 0 else "no reference values"
        rows += [_row(name, "categorical", s, math.nan, None, empty) for s in ("psi", "jensen_shannon", "chi_square")]
    else:
        ref_shares, cur_shares = ref / ref.sum(), cur / cur.sum()
        i = int(np.argmax(np.abs(cur_shares - ref_shares)))
        change = f"largest change: {levels[i]!r} {ref_shares[i]:.1%} -> {cur_shares[i]:.1%}"
        statistic, p_value = chi_square(ref, cur)
        rows += [
            _row(name, "categorical", "psi", psi(ref_shares, cur_shares), thresholds.psi, change),
            _row(name, "categorical", "jensen_shannon", jensen_shannon(ref, cur), thresholds.jensen_shannon,
                 f"{change} ({len(levels)} levels)"),
            _row(name, "categorical", "chi_square", statistic, None, f"chi-square on {len(levels) - 1} degrees "
                 "of freedom (p-value reported, not decisive)", p_value),
        ]
    for level in levels[len(entry["levels"]):]:
        share = found[level] / rows_seen
        rows.append(_row(name, "categorical", "new_level", share, thresholds.new_level,
                         f"new level {level!r} in {share:.1%} of rows"))
    if limit and "levels" in limit:
        allowed = {str(level) for level in limit["levels"]}
        outside = sum(c for level, c in found.items() if level not in allowed)
        share = outside / count if count else math.nan
        named = ", ".join(repr(level) for level in found if level not in allowed)
        rows.append(_row(name, "categorical", "out_of_range", share, thresholds.out_of_range,
                         f"{share:.2%} of values not in the dictionary's levels" + (f": {named}" if named else "")
                         if count else "no values"))
    return rows


def compare(reference: dict, current, thresholds: Thresholds = Thresholds(), *,
            limits: Mapping[str, Mapping] | None = None, outputs: Sequence[str] = OUTPUTS) -> pd.DataFrame:
    """Findings of ``current`` against a :func:`profile`, one row per (feature, statistic), worst first.

    ``current`` is a frame, or the batch in chunks: any iterable of frames or Arrow record batches
    (``nb.load(..., chunksize=n)``, ``pyarrow.parquet.ParquetFile.iter_batches()``), drawn once. Chunks are
    condensed as they come into counts and sums on the profile's quantile grid, level counts, missing and
    out-of-range counts, so memory grows with one chunk, not with the batch; the findings are those of
    the whole batch in one frame (values equal up to float rounding; only the median quoted in a numeric
    PSI finding's detail is interpolated within the profile's quantile grid once values came in two
    chunks or more).

    ``limits``: column -> ``{"min": x, "max": y}`` or ``{"levels": [...]}`` from the data dictionary
    (``out_of_range`` rows only for columns that have one). Columns of ``current`` not in the profile
    are ignored; profile columns in ``outputs`` (the model's score) are left to :func:`score_findings`.
    An empty ``current`` (no rows, or no chunks) is an ``alert`` of its own (statistic ``rows``), never ``ok``.
    """
    columns = _columns(reference)
    wanted = {name: entry for name, entry in columns.items() if name not in outputs}
    tallies = {name: (_NumericTally if entry["kind"] == "numeric" else _CategoricalTally)(
        entry, (limits or {}).get(name)) for name, entry in wanted.items()}
    seen, chunks = 0, iter([current] if _is_chunk(current) else current)
    try:
        for chunk in chunks:
            if not _is_chunk(chunk):
                raise ValueError(f"expected a pandas frame or an Arrow record batch or table as a chunk of the "
                                 f"current batch, got {type(chunk).__name__}")
            names = list(chunk.columns) if isinstance(chunk, pd.DataFrame) else chunk.schema.names
            absent = [name for name in wanted if name not in names]
            if absent:
                raise ValueError(f"profiled columns missing from the current frame: {absent}; load them, or "
                                 "compare against a profile without them")
            for name, tally in tallies.items():
                tally.add(chunk[name] if isinstance(chunk, pd.DataFrame)
                          else chunk.column(name).to_pandas().rename(name))
            seen += len(chunk)
    finally:  # a generator stopped early (a refused chunk) ends now: nb.stream's reader thread with it
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    rows: list[tuple] = [] if seen else [_nothing_seen("inputs", "quality", "input rows")]
    for name, tally in tallies.items():
        judge = _numeric_rows if isinstance(tally, _NumericTally) else _categorical_rows
        rows += judge(name, tally, thresholds, (limits or {}).get(name))
    return sort_findings(pd.DataFrame(rows, columns=COLUMNS))


def _is_chunk(value) -> bool:
    """A frame, or an Arrow record batch or table (told by their attributes: pyarrow is not imported here)."""
    return isinstance(value, pd.DataFrame) or (hasattr(value, "schema") and hasattr(value, "column")
                                               and hasattr(value, "num_rows"))


def score_findings(reference: dict, scores, thresholds: Thresholds = Thresholds(), *,
                   column: str = "score") -> pd.DataFrame:
    """Output drift: the scores against the profile's numeric column ``column``.

    ``score_psi`` and ``score_mean_shift`` (absolute change of the mean) are judged; ``ks`` and
    ``wasserstein`` are reported. A missing-rate row is added when either side has missing scores.
    No scores at all is an ``alert`` (statistic ``rows``): monitoring that saw nothing never says ``ok``.
    """
    entry = _columns(reference).get(column)
    if entry is None or entry["kind"] != "numeric":
        raise ValueError(f"the reference profile has no numeric column {column!r}; profile the training "
                         f"scores as {column!r} (nb.reference_profile does)")
    series = scores if isinstance(scores, pd.Series) else pd.Series(np.asarray(scores, dtype=float))
    x, missing = _values(series.rename(column))
    rows = [] if len(series) else [_nothing_seen(column, "score", "scores")]
    if missing or entry["missing_rate"]:
        rows.append(_missing_row(column, "score", entry, missing, len(series), thresholds))
    if len(x) == 0 or not entry["count"]:
        empty = "no values" if len(x) == 0 else "no reference values"
        rows += [_row(column, "score", s, math.nan, None, empty)
                 for s in ("score_psi", "score_mean_shift", "ks", "wasserstein")]
    else:
        s = numeric_stats(entry, x)
        mean_change = f"mean {entry['mean']:.3f} -> {s['mean']:.3f}"
        rows += [
            _row(column, "score", "score_psi", s["psi"], thresholds.score_psi,
                 f"median {entry['quantiles'][len(entry['quantiles']) // 2]:.3f} -> {s['median']:.3f}"),
            _row(column, "score", "score_mean_shift", abs(s["mean"] - entry["mean"]), thresholds.score_mean_shift,
                 mean_change),
            _row(column, "score", "ks", s["ks"], None, f"largest gap between the distribution functions "
                 f"{s['ks']:.1%} (p-value reported, not decisive)", ks_pvalue(s["ks"], entry["count"], len(x))),
            _row(column, "score", "wasserstein", s["wasserstein"], None,
                 f"{mean_change}; distance {s['wasserstein']:.3f} reference std (reported)"),
        ]
    return sort_findings(pd.DataFrame(rows, columns=COLUMNS))


def sort_findings(findings: pd.DataFrame) -> pd.DataFrame:
    """Alert first, then warn, then ok; within a severity by value, descending (missing values last)."""
    order = findings["severity"].map(SEVERITY_ORDER).fillna(len(SEVERITY_ORDER))
    keyed = findings.assign(_order=order, _value=-pd.to_numeric(findings["value"], errors="coerce"))
    return keyed.sort_values(["_order", "_value"], na_position="last", kind="stable").drop(
        columns=["_order", "_value"]).reset_index(drop=True)


def status(findings: pd.DataFrame) -> str:
    """The worst severity among ``findings``: ``ok``, ``warn`` or ``alert``."""
    for level in ("alert", "warn"):
        if (findings["severity"] == level).any():
            return level
    return "ok"


def reasons(findings: pd.DataFrame, limit: int = 8) -> list[str]:
    """One plain line per warn or alert finding, worst first, at most ``limit`` lines."""
    shown = sort_findings(findings[findings["severity"].isin(["alert", "warn"])]).head(limit)
    return [f"{row.severity}: {row.feature}: {row.detail or row.statistic} ({row.statistic} {row.value:.3g})"
            for row in shown.itertuples(index=False)]


def _columns(reference: dict) -> dict:
    if not isinstance(reference, Mapping) or "columns" not in reference:
        raise ValueError("expected a reference profile made by runner.monitoring.drift.profile (a dict with 'columns')")
    if reference.get("version") != PROFILE_VERSION:
        raise ValueError(f"reference profile version {reference.get('version')!r}; this runner reads version "
                         f"{PROFILE_VERSION}: profile the training data again")
    return reference["columns"]


def _number(value) -> str:
    """A number for people: thousands separators, about three significant digits."""
    if value is None or not np.isfinite(value):
        return "none" if value is None else str(value)
    digits = 0 if value == 0 else max(0, 2 - math.floor(math.log10(abs(value))))
    return f"{value:,.{min(digits, 6)}f}"


# -- figures ----------------------------------------------------------------------------------------

COLOURS = {"ok": "#1a7f37", "warn": "#b35900", "alert": "#c62828"}


def overlay_figure(reference: dict, current: pd.DataFrame, features: Sequence[str], *,
                   thresholds: Thresholds = Thresholds(), limits: Mapping[str, Mapping] | None = None):
    """Reference vs current distributions of ``features``, one panel each, titled with the verdict.

    Numeric: shares over the profile's PSI bins; categorical: level shares side by side, new levels
    hatched. From the profile only. The figure is pyplot-managed, so a notebook shows it.
    """
    import matplotlib.pyplot as plt

    columns = _columns(reference)
    unknown = [name for name in features if name not in columns or name not in current.columns]
    if unknown:
        raise ValueError(f"features not in both the profile and the current frame: {unknown}")
    ncols = min(3, max(len(features), 1))
    nrows = max(math.ceil(len(features) / ncols), 1)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.4 * ncols, 3.4 * nrows), squeeze=False, layout="constrained")
    for ax in axes.ravel()[len(features):]:
        ax.remove()
    for ax, name in zip(axes.ravel(), features):
        entry, series = columns[name], current[name]
        judge = _numeric_findings if entry["kind"] == "numeric" else _categorical_findings
        found = pd.DataFrame(judge(name, entry, series, thresholds, (limits or {}).get(name)), columns=COLUMNS)
        verdict = status(found)
        if entry["kind"] == "numeric":
            _numeric_panel(ax, entry, series)
        else:
            _categorical_panel(ax, entry, series)
        worst = sort_findings(found).iloc[0]
        ax.set_title(f"{name}: {verdict}" + (f" ({worst.statistic} {worst.value:.3g})" if verdict != "ok" else ""),
                     color=COLOURS[verdict], fontsize=10)
        ax.set_ylabel("share")
        ax.legend(fontsize=8)
    if not features:
        axes[0, 0].text(0.5, 0.5, "no features to show", ha="center", va="center")
    return fig


def _numeric_panel(ax, entry, series) -> None:
    x, _ = _values(series)
    edges = entry["edges"]
    current = numeric_stats(entry, x)["shares"] if len(x) and entry["count"] else np.zeros(len(entry["shares"]))
    inner = [_number(e) for e in edges[1:-1]]
    labels = ([f"< {inner[0]}"] + [f"{a}-{b}" for a, b in zip(inner, inner[1:])] + [f">= {inner[-1]}"]
              if inner else ["all"])
    at = np.arange(len(labels))
    ax.bar(at - 0.2, entry["shares"], 0.4, label="reference", color="#9e9e9e")
    ax.bar(at + 0.2, current, 0.4, label="current", color="tab:blue")
    ax.set_xticks(at, labels, rotation=45, ha="right", fontsize=7)


def _categorical_panel(ax, entry, series, top: int = 12) -> None:
    found = _level_counts(series)
    count = max(sum(found.values()), 1)
    ref_total = max(entry["count"], 1)
    levels = list(entry["levels"]) + [level for level in found if level not in entry["levels"]]
    shares = pd.DataFrame({"reference": [entry["levels"].get(level, 0) / ref_total for level in levels],
                           "current": [found.get(level, 0) / count for level in levels]}, index=levels)
    shares = shares.loc[shares.max(axis=1).sort_values(ascending=False).index[:top]]
    at = np.arange(len(shares))
    ax.bar(at - 0.2, shares["reference"], 0.4, label="reference", color="#9e9e9e")
    bars = ax.bar(at + 0.2, shares["current"], 0.4, label="current", color="tab:blue")
    for bar, level in zip(bars, shares.index):
        if level not in entry["levels"]:
            bar.set_hatch("//")
            bar.set_edgecolor(COLOURS["alert"])
    ax.set_xticks(at, [f"{level} (new)" if level not in entry["levels"] else level for level in shares.index],
                  rotation=45, ha="right", fontsize=7)


def score_figure(reference: dict, scores, column: str = "score", *, thresholds: Thresholds = Thresholds(),
                 bins: int = 40):
    """Histogram of the scores against the reference's (from the profile's quantiles), means marked."""
    import matplotlib.pyplot as plt

    found = score_findings(reference, scores, thresholds, column=column)
    entry = _columns(reference)[column]
    x, _ = _values(pd.Series(np.asarray(scores, dtype=float)))
    fig, ax = plt.subplots(figsize=(7, 3.6), layout="constrained")
    if entry["count"]:
        q = np.asarray(entry["quantiles"])
        low, high = min(q[0], x.min()) if len(x) else q[0], max(q[-1], x.max()) if len(x) else q[-1]
        edges = np.linspace(low, high if high > low else low + 1, bins + 1)
        reference_shares = np.diff(np.interp(edges, q, np.linspace(0, 1, len(q))))
        ax.stairs(reference_shares, edges, label="reference", color="#616161", linewidth=2)
        ax.axvline(entry["mean"], color="#616161", linestyle="--", linewidth=1)
        if len(x):
            ax.stairs(np.histogram(x, edges)[0] / len(x), edges, label="this run", color="tab:blue", fill=True,
                      alpha=0.5)
            ax.axvline(x.mean(), color="tab:blue", linestyle="--", linewidth=1)
    verdict = status(found)
    psi_row = found[found["statistic"] == "score_psi"]
    ax.set_title(f"{column}: {verdict}" + (f" (PSI {psi_row['value'].iloc[0]:.3f})" if len(psi_row) else ""),
                 color=COLOURS[verdict])
    ax.set_xlabel(column)
    ax.set_ylabel("share")
    ax.legend()
    return fig


def trend_figure(trend: pd.DataFrame, limits: Mapping[str, Any] | None = None, *, highlight: str = "tab:blue",
                 max_labels: int = 12):
    """One small chart per column of ``trend`` (one row per monitoring run, indexed by its ``as_of``), over months.

    Each run sits on its own month: the x axis is a calendar of months from the first as_of to the last, every
    month ticked (labelled ``YYYY-MM``, every few when there are more than ``max_labels``), a month without a run
    left empty (the line breaks there); of several runs in one month, the latest is drawn. The y axis starts at zero
    for columns of non-negative values (a PSI, a count), so the height of a point is its size; each axis is named. ``limits`` maps a column to its thresholds (``.warn``, ``.alert``),
    drawn as dashed lines; the latest run is drawn bigger in ``highlight`` (the status's colour, say).
    """
    import matplotlib.pyplot as plt

    limits = limits or {}
    months = pd.PeriodIndex(pd.to_datetime(pd.Index(trend.index)), freq="M")
    frame = trend.set_axis(months).groupby(level=0).last()  # one point a month: that month's latest run
    calendar = pd.period_range(frame.index.min(), frame.index.max(), freq="M") if len(frame) else frame.index
    frame = frame.reindex(calendar)
    at = np.arange(len(calendar))
    every = max(1, -(-len(calendar) // max_labels))
    columns = list(frame.columns)
    fig, axes = plt.subplots(1, max(1, len(columns)), figsize=(4 * max(1, len(columns)), 3.4), layout="constrained",
                             squeeze=False)
    for ax, column in zip(axes[0], columns):
        values = pd.to_numeric(frame[column], errors="coerce")
        known = values.notna().to_numpy()
        ax.plot(at, values, "o-", color="tab:blue", markersize=4)  # broken where a month has no run
        if known.any():
            last = np.flatnonzero(known)[-1]
            ax.plot(at[last:last + 1], values.iloc[last:last + 1], "o", color=highlight, markersize=10,
                    label="this run")
        limit = limits.get(column)
        if limit is not None:
            ax.axhline(limit.warn, color=COLOURS["warn"], linestyle="--", linewidth=1, label="warn")
            ax.axhline(limit.alert, color=COLOURS["alert"], linestyle="--", linewidth=1, label="alert")
        if not known.any() or values[known].min() >= 0:
            ax.set_ylim(bottom=0)
        ax.set_xticks(at, [str(month) if i % every == 0 else "" for i, month in enumerate(calendar)], rotation=45,
                      ha="right", fontsize=8)
        ax.set_xlim(-0.5, len(calendar) - 0.5)
        ax.set_title(column)
        ax.set_xlabel("as_of month")
        ax.set_ylabel(column)
        ax.grid(axis="y", alpha=0.3)
    if columns and any(ax.get_legend_handles_labels()[0] for ax in axes[0]):
        axes[0][0].legend(fontsize=8)
    return fig
