"""Trends: one small inline SVG chart per numeric scrap over a pipeline's runs.

Runs are ordered by ``as_of`` (then start time). The x axis is a calendar of months, from the first run's
``as_of`` month to the last's: each run sits in its own month (runs of one month side by side within it), a
month without runs is a gap, and the months are ticked and labelled (every few when there are many). The y
axis is labelled at round values; it starts at zero when the values are of one sign and not far from it (the
smallest at most half the largest), else it spans the values (its lowest label says where it starts). A value
far from the median of the values before it (more than 3.5 robust standard deviations, and at least 2 %) is
marked, so a regression shows at a glance whichever way is "better" for that scrap. Runs that failed are
marked on the x axis. The geometry is computed here; ``_macros.html``'s ``chart`` draws it.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from runner.review.views import HIDDEN_SCRAPS, RunView, format_value, is_number

WIDTH, HEIGHT = 360, 140
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 10, 30
MONTH_LABELS = 6  # at most this many month labels on the x axis; every month still gets a tick
MAX_DOTS = 80  # above that many runs only marked points and the latest get a dot
WINDOW, MIN_HISTORY = 12, 5


@dataclass
class Point:
    x: float
    y: float
    value: str
    run_id: str
    as_of: str
    unusual: bool = False
    dot: bool = True


@dataclass
class Chart:
    name: str
    points: list[Point]
    low: str
    high: str
    first_as_of: str
    last_as_of: str
    latest: str
    change: str = ""
    direction: str = ""  # "up", "down" or ""
    unusual: bool = False
    failed_x: list[float] = field(default_factory=list)
    y_ticks: list[tuple[float, str]] = field(default_factory=list)  # (y, label), bottom to top
    x_ticks: list[tuple[float, str]] = field(default_factory=list)  # (x, label or "") at each month's middle
    x_label: str = "as_of month"
    width: int = WIDTH
    height: int = HEIGHT
    plot: dict[str, float] = field(default_factory=lambda: {
        "left": LEFT, "right": WIDTH - RIGHT, "top": TOP, "bottom": HEIGHT - BOTTOM})

    @property
    def polyline(self) -> str:
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.points)


def charts(views: list[RunView]) -> list[Chart]:
    """A chart for every numeric scrap that at least one of these runs (of one pipeline) glued."""
    runs = sorted(views, key=lambda v: (v.record.as_of, v.record.created_at, v.record.run_id))
    series: dict[str, list[tuple[int, float, RunView]]] = {}
    for index, view in enumerate(runs):
        for step in view.record.steps.values():
            for name, value in step.scraps.items():
                if name not in HIDDEN_SCRAPS and is_number(value):
                    series.setdefault(f"{step.name}.{name}", []).append((index, float(value), view))
    failed = [i for i, v in enumerate(runs) if v.status in ("failed", "interrupted")]
    xs, ticks = positions([v.record.as_of for v in runs])
    return [_chart(name, values, xs, ticks, failed) for name, values in series.items()]


def _month(as_of: str) -> int | None:
    """Months since year 0 of an ``as_of`` (``YYYY-MM...``), or None when it does not start with a month."""
    try:
        year, month = int(as_of[:4]), int(as_of[5:7])
    except (TypeError, ValueError):
        return None
    return year * 12 + month - 1 if as_of[4:5] == "-" and 1 <= month <= 12 else None


def positions(as_ofs: list[str]) -> tuple[list[float], list[tuple[float, str]]]:
    """The x of each run (``as_ofs`` in order) and the month ticks: a slot per calendar month from the first to the
    last, runs of one month spread inside its slot. When an as_of is not a date, runs are evenly spaced, unticked."""
    left, span = LEFT, WIDTH - RIGHT - LEFT
    months = [_month(as_of) for as_of in as_ofs]
    if not as_ofs:
        return [], []
    if any(month is None for month in months):
        count = len(as_ofs)
        return [left + span / 2 if count <= 1 else left + span * i / (count - 1) for i in range(count)], []
    first, last = min(months), max(months)
    slots = last - first + 1
    width = span / slots
    in_month: dict[int, list[int]] = {}
    for index, month in enumerate(months):
        in_month.setdefault(month, []).append(index)
    xs = [0.0] * len(as_ofs)
    for month, indexes in in_month.items():
        for k, index in enumerate(indexes):
            xs[index] = left + width * (month - first) + width * (k + 1) / (len(indexes) + 1)
    every = max(1, math.ceil(slots / MONTH_LABELS))
    ticks = [(left + width * (i + 0.5), f"{(first + i) // 12:04d}-{(first + i) % 12 + 1:02d}" if i % every == 0 else "")
             for i in range(slots)]
    return xs, ticks


def y_range(low: float, high: float, count: int = 4) -> tuple[float, float, list[float]]:
    """The y axis for values from ``low`` to ``high``: (bottom, top, round tick values). It starts at zero when
    the values are of one sign and the smallest is at most half the largest (from zero, the line's rise is the
    values' rise); else it spans the values, between round numbers."""
    if high == low:  # a flat line sits in the middle of a small range around it
        pad = abs(high) * 0.1 or 1.0
        low, high = low - pad, high + pad
    if low >= 0 and low <= high / 2:
        low = 0.0
    elif high <= 0 and high >= low / 2:
        high = 0.0
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    bottom, top = math.floor(low / step + 1e-9) * step, math.ceil(high / step - 1e-9) * step
    ticks = [bottom + i * step for i in range(int(round((top - bottom) / step)) + 1)]
    return bottom, top, [round(t, 12) for t in ticks]


def _chart(name: str, values: list[tuple[int, float, RunView]], xs: list[float], ticks: list[tuple[float, str]],
           failed: list[int]) -> Chart:
    numbers = [v for _, v, _ in values]
    low, high, y_ticks = y_range(min(numbers), max(numbers))
    span = HEIGHT - BOTTOM - TOP

    def y(value: float) -> float:
        return HEIGHT - BOTTOM - span * (value - low) / (high - low)

    points = []
    for position, (index, value, view) in enumerate(values):
        unusual = _unusual(value, numbers[max(0, position - WINDOW):position])
        points.append(Point(
            xs[index], y(value), format_value(value), view.record.run_id, view.record.as_of,
            unusual=unusual, dot=len(xs) <= MAX_DOTS or unusual or position == len(values) - 1,
        ))
    chart = Chart(
        name=name, points=points, low=format_value(low), high=format_value(high),
        first_as_of=values[0][2].record.as_of, last_as_of=values[-1][2].record.as_of,
        latest=format_value(numbers[-1]), unusual=points[-1].unusual,
        failed_x=[xs[i] for i in failed],
        y_ticks=[(y(t), format_value(t)) for t in y_ticks], x_ticks=ticks,
    )
    if not ticks:
        chart.x_label = "runs by as_of"
    if len(numbers) > 1:  # the latest value against the median of the values before it
        history = numbers[-1 - WINDOW:-1]
        before, after = statistics.median(history), numbers[-1]
        chart.direction = "up" if after > before else "down" if after < before else ""
        delta = after - before
        relative = f" ({delta / abs(before):+.1%})" if before else ""
        what = "previous run" if len(history) == 1 else f"median of previous {len(history)}"
        chart.change = f"{'+' if delta > 0 else ''}{format_value(delta)}{relative} vs {what}" if delta else f"same as {what}"
    return chart


def _unusual(value: float, history: list[float]) -> bool:
    """Far from the recent median: more than 3.5 robust standard deviations and 2 % of it."""
    if len(history) < MIN_HISTORY:
        return False
    median = statistics.median(history)
    mad = statistics.median(abs(v - median) for v in history)
    return abs(value - median) > max(3.5 * 1.4826 * mad, 0.02 * abs(median), 1e-12)


def describe(chart: Chart) -> dict[str, Any]:
    """A plain summary of a chart (for tests and JSON)."""
    return {"name": chart.name, "latest": chart.latest, "change": chart.change, "unusual": chart.unusual,
            "points": len(chart.points), "marked": sum(p.unusual for p in chart.points)}
