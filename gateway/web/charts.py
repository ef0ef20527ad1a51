"""Charts drawn on the server as inline SVG (no script): the layout is computed here, the template draws it, and a
table beside each chart says the same in words."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    counter: str
    pages: int


@dataclass
class Chart:
    """Printed pages per billing period as stacked bars, oldest period first; drawn as inline SVG by the template."""

    width: int = 640
    height: int = 260
    left: int = 64
    bottom: int = 40
    top: int = 16
    periods: list[dict[str, Any]] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    ticks: list[tuple[float, int]] = field(default_factory=list)  # (y, pages)
    labels: list[tuple[float, str]] = field(default_factory=list)  # (x centre, period end in ISO; shown as its month)


MAX_LABELS = 12
CHART_FILLS = ("#3d3d3d", "#0b6bb8", "#a8570a", "#2e7d32", "#6a1b9a")


def nice_ceiling(value: int) -> int:
    """The scale's top: a round number (1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 times a power of ten) at or above `value`."""
    if value <= 0:
        return 1
    power = int(10 ** (len(str(value)) - 1))
    for step in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if value <= step * power:
            return int(step * power)
    return 10 * power


def fills_of(counters: list[str]) -> dict[str, str]:
    """Each counter's colour, in the order the counters are shown (the legend's and the table's)."""
    return {name: CHART_FILLS[index % len(CHART_FILLS)] for index, name in enumerate(counters)}


def stacked(periods: list[dict[str, Any]], counters: list[str], shown: int | None = 12) -> Chart:
    """The newest `shown` periods (given newest first, each with `period_end`, `total` and `printed_pages` by counter;
    None: all) as bars stacked by counter, `counters` first."""
    chart = Chart(periods=list(reversed(periods[:shown])))
    if not chart.periods:
        return chart
    top = nice_ceiling(max(int(period["total"]) for period in chart.periods))
    plot_width = chart.width - chart.left - 8
    plot_height = chart.height - chart.bottom - chart.top
    base = chart.top + plot_height
    slot = plot_width / len(chart.periods)
    width = min(slot * 0.6, 64)
    chart.ticks = [(base - plot_height * share, int(top * share)) for share in (0, 0.25, 0.5, 0.75, 1)]
    every = math.ceil(len(chart.periods) / MAX_LABELS)  # many periods: a label under every few, not on each other
    for index, period in enumerate(chart.periods):
        x = chart.left + slot * index + (slot - width) / 2
        if index % every == 0:
            # Shown as its month (the template's `month`): a period ends on a month's last day.
            chart.labels.append((x + width / 2, str(period["period_end"])))
        y = float(base)
        for name in counters + sorted(set(period["printed_pages"]) - set(counters)):
            pages = int(period["printed_pages"].get(name, 0))
            if pages <= 0:
                continue
            height = plot_height * pages / top
            y -= height
            chart.bars.append(Bar(round(x, 1), round(y, 1), round(width, 1), round(height, 1), name, pages))
    return chart
