"""Trends: one small inline SVG chart per numeric scrap over a pipeline's runs.

Runs are ordered by ``as_of`` (then start time), evenly spaced along x. A value far from the
median of the values before it (more than 3.5 robust standard deviations, and at least 2 %)
is marked, so a regression shows at a glance whichever way is "better" for that scrap. Runs
that failed are marked on the x axis. The geometry is computed here; ``_chart.html`` draws it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from runner.review.views import HIDDEN_SCRAPS, RunView, format_value, is_number

WIDTH, HEIGHT = 360, 130
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 10, 22
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
    return [_chart(name, values, len(runs), failed) for name, values in series.items()]


def _x(index: int, count: int) -> float:
    span = WIDTH - RIGHT - LEFT
    return LEFT + span / 2 if count <= 1 else LEFT + span * index / (count - 1)


def _chart(name: str, values: list[tuple[int, float, RunView]], count: int, failed: list[int]) -> Chart:
    numbers = [v for _, v, _ in values]
    low, high = min(numbers), max(numbers)
    if high == low:  # a flat line sits in the middle of a small range around it
        pad = abs(high) * 0.1 or 1.0
        low, high = low - pad, high + pad
    span = HEIGHT - BOTTOM - TOP

    def y(value: float) -> float:
        return HEIGHT - BOTTOM - span * (value - low) / (high - low)

    points = []
    for position, (index, value, view) in enumerate(values):
        unusual = _unusual(value, numbers[max(0, position - WINDOW):position])
        points.append(Point(
            _x(index, count), y(value), format_value(value), view.record.run_id, view.record.as_of,
            unusual=unusual, dot=count <= MAX_DOTS or unusual or position == len(values) - 1,
        ))
    chart = Chart(
        name=name, points=points, low=format_value(low), high=format_value(high),
        first_as_of=values[0][2].record.as_of, last_as_of=values[-1][2].record.as_of,
        latest=format_value(numbers[-1]), unusual=points[-1].unusual,
        failed_x=[_x(i, count) for i in failed],
    )
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
