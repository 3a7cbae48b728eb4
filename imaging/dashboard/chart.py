"""A stacked bar chart of renders per day, drawn as inline SVG on the server.

No chart library and no JavaScript: the page works without scripts and makes no
request for it. The geometry is computed here, the template only writes the shapes,
and the same numbers are offered as a table for screen readers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from imaging.dashboard.stats import DayCount

WIDTH = 480
HEIGHT = 200
LEFT, RIGHT, TOP, BOTTOM = 30, 4, 10, 24
LABEL_EVERY_DAYS = 7


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    succeeded_y: float
    succeeded_height: float
    failed_y: float
    failed_height: float
    day: DayCount
    label: str  # an x-axis label, shown on every LABEL_EVERY_DAYS-th bar (counted back from today)
    label_x: float
    label_anchor: str  # "end" for the last bar, so today's label is not cut off at the edge


@dataclass(frozen=True)
class Tick:
    y: float
    value: int


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    plot_left: int
    plot_right: int
    baseline: float
    bars: list[Bar]
    ticks: list[Tick]
    total_succeeded: int
    total_failed: int

    @property
    def empty(self) -> bool:
        return self.total_succeeded + self.total_failed == 0


def nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten that is at least ``value`` (and at least 2)."""
    value = max(2, value)
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def renders_chart(days: Sequence[DayCount]) -> Chart:
    plot_width = WIDTH - LEFT - RIGHT
    plot_height = HEIGHT - TOP - BOTTOM
    baseline = float(TOP + plot_height)
    top_value = nice_ceiling(max((d.succeeded + d.failed for d in days), default=0))
    scale = plot_height / top_value
    slot = plot_width / max(1, len(days))
    bar_width = max(1.0, slot * 0.72)
    bars = []
    for index, day in enumerate(days):
        x = LEFT + index * slot + (slot - bar_width) / 2
        succeeded_height = day.succeeded * scale
        failed_height = day.failed * scale
        from_end = len(days) - 1 - index
        bars.append(Bar(
            x=round(x, 2),
            width=round(bar_width, 2),
            succeeded_y=round(baseline - succeeded_height, 2),
            succeeded_height=round(succeeded_height, 2),
            failed_y=round(baseline - succeeded_height - failed_height, 2),
            failed_height=round(failed_height, 2),
            day=day,
            label=day.day.strftime("%b %-d") if from_end % LABEL_EVERY_DAYS == 0 else "",
            label_x=round(x + bar_width if from_end == 0 else x + bar_width / 2, 2),
            label_anchor="end" if from_end == 0 else "middle",
        ))
    ticks = [Tick(round(baseline - value * scale, 2), value) for value in (0, top_value // 2, top_value)]
    return Chart(
        width=WIDTH, height=HEIGHT, plot_left=LEFT, plot_right=WIDTH - RIGHT, baseline=baseline,
        bars=bars, ticks=ticks,
        total_succeeded=sum(d.succeeded for d in days),
        total_failed=sum(d.failed for d in days),
    )
