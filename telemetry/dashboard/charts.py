"""The dashboard's charts, drawn with matplotlib (see ``mpl``): lines with interval bands over days,
grouped columns, grouped rows with whiskers, forest plots, waterfalls of log lifts, latency
histograms and 100% bars.  Every data mark carries a tooltip; sizes are in viewBox units and the page
scales each chart to its column.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Literal
from xml.etree.ElementTree import Element

from opportune.telemetry.dashboard.mpl import (
    AXIS,
    BETTER,
    BUDGET,
    FONT,
    GRID,
    INK,
    MUTED,
    WORSE,
    Chart,
    chart,
    to_svg,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["AXIS", "BETTER", "BUDGET", "FONT", "GRID", "INK", "MUTED", "WORSE"]


def _formatter(fmt: Callable[[float], str]) -> object:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _pos: fmt(v))


def _value_grid(
    ax: Axes, fmt: Callable[[float], str], *, axis: Literal["x", "y"] = "y", bins: int = 5
) -> None:
    from matplotlib.ticker import MaxNLocator

    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_locator(MaxNLocator(nbins=bins, steps=[1, 2, 2.5, 5, 10]))
    target.set_major_formatter(_formatter(fmt))  # type: ignore[arg-type]
    ax.grid(True, axis=axis, color=GRID, linewidth=1)
    ax.set_axisbelow(True)


def _legend(ax: Axes, items: Sequence[tuple[str, str]], *, y: float = 1.02) -> None:
    from matplotlib.patches import Patch

    if items:
        ax.legend(
            handles=[Patch(color=colour, label=name) for name, colour in items],
            loc="lower right",
            bbox_to_anchor=(1, y),
            ncol=len(items),
            fontsize=FONT - 1,
            handlelength=1.1,
            borderaxespad=0,
        )


# --- CPO over time -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    index: int  # position on the x axis (day number)
    value: float
    low: float | None
    high: float | None
    tooltip: str


@dataclass(frozen=True)
class Series:
    name: str
    colour: str
    points: list[Point] = field(default_factory=list)


def _short_day(label: str) -> str:
    """``2025-01-31`` -> ``Jan 31`` (the year is in the page header); other labels unchanged."""
    try:
        day = date.fromisoformat(label)
    except ValueError:
        return label
    return f"{day:%b} {day.day}"


def time_series(
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    id_: str,
    label: str,
    fmt: Callable[[float], str],
    width: float = 1100,
    height: float = 320,
) -> Element:
    """One line per series with its interval as a translucent band; a dot per point with a tooltip."""
    with chart(width, height) as c:
        ax = c.axes(64, 20, 34, 44)
        values = [p.value for s in series for p in s.points]
        highs = [p.high for s in series for p in s.points if p.high is not None]
        # CPO, rates and counts are never negative: the axis starts at 0.  A day with a handful of
        # installs has a huge interval; the axis stops at twice the largest value and such a band is
        # clipped at the top, rather than flattening every other day.
        hi = max([*values, *highs], default=1.0)
        if values and max(values) > 0:
            hi = min(hi, 2 * max(values))
        ax.set_ylim(0, hi * 1.05 if hi > 0 else 1.0)
        _value_grid(ax, fmt)
        n = max(len(labels), 1)
        # Points sit in the middle of their day's slot, so one day alone is centred, not on the axis.
        ax.set_xlim(-0.5, n - 0.5)
        every = max(1, math.ceil(n / 12))
        ticks = list(range(0, len(labels), every))
        ax.set_xticks(ticks, [_short_day(labels[i]) for i in ticks])
        for s in series:
            _draw_series(c, ax, s)
        _legend(ax, [(s.name, s.colour) for s in series], y=1.04)
        return to_svg(c, label=label, id_=id_)


def _draw_series(c: Chart, ax: Axes, s: Series) -> None:
    # Bands and lines break where a day has no estimate, rather than drawing through the gap.
    runs: list[list[Point]] = []
    for p in sorted(s.points, key=lambda p: p.index):
        if runs and runs[-1][-1].index == p.index - 1:
            runs[-1].append(p)
        else:
            runs.append([p])
    for run in runs:
        banded = [p for p in run if p.low is not None and p.high is not None]
        if len(banded) >= 2 and len(banded) == len(run):
            band = ax.fill_between(
                [p.index for p in run],
                [max(p.low or 0.0, 0.0) for p in run],
                [p.high or 0.0 for p in run],
                color=s.colour,
                alpha=0.16,
                linewidth=0,
            )
            c.mark(band, None, class_="band", data_arm=s.name)
        if len(run) >= 2:
            (line,) = ax.plot([p.index for p in run], [p.value for p in run], color=s.colour, linewidth=2.5)
            c.mark(line, None, class_="line", data_arm=s.name)
    for p in s.points:
        if p.low is not None and p.high is not None and len(s.points) == 1:
            ax.vlines(p.index, max(p.low, 0.0), p.high, color=s.colour, linewidth=2)
        (dot,) = ax.plot(
            [p.index],
            [p.value],
            marker="o",
            markersize=9,
            markerfacecolor="#fff",
            markeredgecolor=s.colour,
            markeredgewidth=2.5,
            linestyle="none",
            clip_on=False,
        )
        c.mark(dot, p.tooltip, class_="point", data_arm=s.name)


# --- bars ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    series: str  # the arm
    colour: str
    value: float
    label: str  # printed above the bar
    tooltip: str
    low: float | None = None
    high: float | None = None


def grouped_columns(
    groups: Sequence[tuple[str, Sequence[Bar]]],
    *,
    id_: str,
    label: str,
    fmt: Callable[[float], str],
    width: float = 540,
    height: float = 300,
    y_max: float | None = None,
) -> Element:
    """Vertical bars grouped by category (x) with one bar per series; value labels on top."""
    with chart(width, height) as c:
        ax = c.axes(52, 12, 34, 40)
        hi = (
            y_max
            if y_max is not None
            else max((b.high or b.value for _, bs in groups for b in bs), default=1)
        )
        ax.set_ylim(0, (hi if hi > 0 else 1) * 1.08)
        _value_grid(ax, fmt, bins=4)
        ax.set_xlim(-0.5, len(groups) - 0.5)
        ax.set_xticks(range(len(groups)), [name for name, _ in groups], color=INK, fontsize=FONT)
        for g, (_, bars) in enumerate(groups):
            bw = 0.78 / max(len(bars), 1)
            for b, bar in enumerate(bars):
                x = g - 0.39 + (b + 0.5) * bw
                rect = ax.bar(x, max(bar.value, 0), width=bw * 0.9, color=bar.colour).patches[0]
                c.mark(rect, bar.tooltip, class_="bar", data_arm=bar.series)
                top = bar.value
                if bar.low is not None and bar.high is not None:
                    ax.vlines(x, bar.low, bar.high, color=INK, linewidth=1.5)
                    top = max(top, bar.high)
                # Narrow bars (many arms) get smaller labels, so that neighbours do not run together.
                size = min(FONT - 2, 500 * bw / max(len(bar.label), 3) / max(len(groups), 1) * 1.6)
                ax.annotate(
                    bar.label,
                    (x, top),
                    xytext=(0, 4),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=size,
                    color=INK,
                )
        series = list(dict.fromkeys((b.series, b.colour) for _, bars in groups for b in bars))
        _legend(ax, series, y=1.06)
        return to_svg(c, label=label, id_=id_)


@dataclass(frozen=True)
class RowBar:
    """One horizontal bar of a grouped row chart (e.g. CPO of an arm within a language)."""

    series: str
    colour: str
    value: float | None
    low: float | None
    high: float | None
    label: str
    tooltip: str


def grouped_rows(
    groups: Sequence[tuple[str, str, Sequence[RowBar]]],
    *,
    id_: str,
    label: str,
    fmt: Callable[[float], str],
    width: float = 1100,
    bar_height: float = 18,
) -> Element:
    """Horizontal bars, one group per row (name, note) and one bar per series, with interval whiskers."""
    gap = 14
    rows = sum(len(bars) for _, _, bars in groups)
    height = 30 + rows * bar_height + gap * len(groups) + 30
    with chart(width, height) as c:
        ax = c.axes(170, 150, 30, 30)
        values = [v for _, _, bars in groups for b in bars for v in (b.value, b.high) if v is not None]
        ax.set_xlim(0, (max(values, default=1.0) or 1.0) * 1.04)
        _value_grid(ax, fmt, axis="x", bins=6)
        ax.spines["bottom"].set_visible(False)
        # y in bar units, downwards: a group's bars, then a gap.
        unit = gap / bar_height
        ax.set_ylim(rows + unit * len(groups), 0)
        ax.set_yticks([])
        cursor = 0.0
        for name, note, bars in groups:
            mid = cursor + len(bars) / 2
            trans = ax.get_yaxis_transform()
            ax.annotate(
                name,
                (0, mid),
                xycoords=trans,
                xytext=(-12, 2),
                textcoords="offset points",
                ha="right",
                va="bottom",
                fontsize=FONT,
                fontweight=600,
                color=INK,
            )
            ax.annotate(
                note,
                (0, mid),
                xycoords=trans,
                xytext=(-12, -2),
                textcoords="offset points",
                ha="right",
                va="top",
                fontsize=FONT - 3,
                color=MUTED,
            )
            for b, bar in enumerate(bars):
                y = cursor + b + 0.5
                if bar.value is None:
                    ax.annotate(
                        bar.label,
                        (0, y),
                        xytext=(4, 0),
                        textcoords="offset points",
                        va="center",
                        fontsize=FONT - 2,
                        color=MUTED,
                    )
                    continue
                rect = ax.barh(y, bar.value, height=(bar_height - 4) / bar_height, color=bar.colour).patches[
                    0
                ]
                c.mark(rect, bar.tooltip, class_="bar", data_arm=bar.series)
                end = bar.value
                if bar.low is not None and bar.high is not None:
                    ax.errorbar(
                        bar.value,
                        y,
                        xerr=[[bar.value - max(bar.low, 0)], [bar.high - bar.value]],
                        ecolor=INK,
                        elinewidth=1.5,
                        capsize=4,
                        capthick=1.5,
                        fmt="none",
                    )
                    end = max(end, bar.high)
                ax.annotate(
                    bar.label,
                    (end, y),
                    xytext=(6, 0),
                    textcoords="offset points",
                    va="center",
                    fontsize=FONT - 2,
                    color=INK,
                    annotation_clip=False,
                )
            cursor += len(bars) + unit
        series = list(dict.fromkeys((b.series, b.colour) for _, _, bars in groups for b in bars))
        _legend(ax, series, y=1.0)
        return to_svg(c, label=label, id_=id_)
