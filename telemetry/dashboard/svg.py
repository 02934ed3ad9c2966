"""Charts as inline SVG, built on the server with ``xml.etree``: no JavaScript, nothing fetched, printable.

Every mark carries a ``<title>`` child, which browsers show as a tooltip.  Text and attribute values go
through ElementTree's serializer, which escapes them, so a label from the data (an arm or language
name) can never become markup.  Sizes are in viewBox units; the page scales each chart to its column.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from xml.etree.ElementTree import Element, SubElement

# Colours shared by every chart (arm colours come from the data module).
INK = "#1d2430"
MUTED = "#6b7482"
GRID = "#e6e9ee"
AXIS = "#c3c9d2"
BETTER = "#2f9e63"
WORSE = "#d0464b"
BUDGET = "#d0464b"
FONT = 13  # body text size in viewBox units


def _attr(value: object) -> str:
    if isinstance(value, float):
        text = f"{value:.2f}".rstrip("0").rstrip(".")
        return "0" if text == "-0" else text
    return str(value)


def node(parent: Element | None, tag: str, text: str | None = None, /, **attrs: object) -> Element:
    """An element (a child of ``parent`` when given); ``class_`` -> class, ``stroke_width`` -> stroke-width."""
    names = {k: (k[:-1] if k.endswith("_") else k).replace("_", "-") for k in attrs}
    # viewBox and friends are camelCase in SVG: keep the names we use that way.
    names = {k: ("viewBox" if n == "viewbox" else n) for k, n in names.items()}
    values = {names[k]: _attr(v) for k, v in attrs.items() if v is not None}
    element = Element(tag, values) if parent is None else SubElement(parent, tag, values)
    if text is not None:
        element.text = text
    return element


def tip(element: Element, text: str) -> Element:
    """Give ``element`` a tooltip (an SVG ``<title>``, which must be its first child)."""
    title = Element("title")
    title.text = text
    element.insert(0, title)
    return element


def canvas(width: float, height: float, *, label: str, id_: str | None = None) -> Element:
    return node(
        None,
        "svg",
        id=id_,
        class_="chart",
        viewBox=f"0 0 {_attr(float(width))} {_attr(float(height))}",
        role="img",
        aria_label=label,
        preserveAspectRatio="xMidYMid meet",
    )


def text(
    parent: Element,
    x: float,
    y: float,
    content: str,
    *,
    size: float = FONT,
    anchor: str = "start",
    fill: str = INK,
    weight: str | None = None,
    baseline: str | None = None,
) -> Element:
    return node(
        parent,
        "text",
        content,
        x=float(x),
        y=float(y),
        font_size=size,
        text_anchor=anchor,
        fill=fill,
        font_weight=weight,
        dominant_baseline=baseline,
    )


@dataclass(frozen=True)
class Scale:
    """A linear map from data values (domain) to viewBox units (range)."""

    d0: float
    d1: float
    r0: float
    r1: float

    def __call__(self, value: float) -> float:
        if self.d1 == self.d0:
            return (self.r0 + self.r1) / 2
        return self.r0 + (value - self.d0) / (self.d1 - self.d0) * (self.r1 - self.r0)


def nice_step(span: float, count: int) -> float:
    """A round step (1, 2, 2.5 or 5 times a power of ten) giving about ``count`` ticks over ``span``."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * power:
            return m * power
    return 10 * power


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]."""
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        hi = lo + 1
    step = nice_step(hi - lo, count)
    start = math.floor(lo / step) * step
    ticks: list[float] = []
    value = start
    while value <= hi + step * 1e-9 and len(ticks) < 50:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < hi:
        ticks.append(round(value, 12))
    return ticks


def _y_axis(
    svg: Element, y: Scale, ticks: Sequence[float], x0: float, x1: float, fmt: Callable[[float], str]
) -> None:
    for t in ticks:
        py = y(t)
        node(svg, "line", x1=x0, x2=x1, y1=py, y2=py, stroke=GRID, stroke_width=1)
        text(svg, x0 - 8, py + 4, fmt(t), size=FONT - 1, anchor="end", fill=MUTED)


def legend(
    svg: Element, items: Sequence[tuple[str, str]], x: float, y: float, *, anchor_right: bool = True
) -> None:
    """Colour swatches with names in one row; right-aligned at ``x`` when ``anchor_right``."""
    widths = [22 + 7.2 * len(name) + 14 for name, _ in items]
    cursor = x - sum(widths) if anchor_right else x
    for (name, colour), w in zip(items, widths, strict=True):
        node(svg, "rect", x=cursor, y=y - 9, width=14, height=10, rx=2, fill=colour)
        text(svg, cursor + 20, y, name, size=FONT - 1, fill=INK)
        cursor += w


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
    left, right, top, bottom = 64, 20, 34, 44
    svg = canvas(width, height, label=label, id_=id_)
    values = [p.value for s in series for p in s.points]
    highs = [p.high for s in series for p in s.points if p.high is not None]
    # CPO, rates and counts are never negative: the axis starts at 0 and a band's low end is cut there.
    # A day with a handful of installs has a huge interval; the axis stops at twice the largest value
    # and such a band is cut off at the top (clipped), rather than flattening every other day.
    hi = max([*values, *highs], default=1.0)
    if values and max(values) > 0:
        hi = min(hi, 2 * max(values))
    ticks = nice_ticks(0.0, hi * 1.05 if hi > 0 else 1.0)
    y = Scale(ticks[0], ticks[-1], height - bottom, top)
    clip = node(node(svg, "defs"), "clipPath", id=f"{id_}-plot")
    node(
        clip,
        "rect",
        x=left - 8,
        y=top - 8,
        width=width - left - right + 16,
        height=height - bottom - top + 16,
    )
    n = max(len(labels), 1)
    # Points sit in the middle of their day's slot, so one day alone is centred, not on the axis.
    x = Scale(-0.5, n - 0.5, left, width - right)
    _y_axis(svg, y, ticks, left, width - right, fmt)
    every = max(1, math.ceil(n / 12))
    for i, name in enumerate(labels):
        if i % every == 0:
            text(
                svg,
                x(i),
                height - bottom + 20,
                _short_day(name),
                size=FONT - 1,
                anchor="middle",
                fill=MUTED,
            )
    node(svg, "line", x1=left, x2=width - right, y1=y(ticks[0]), y2=y(ticks[0]), stroke=AXIS)
    for s in series:
        group = node(svg, "g", class_="series", data_arm=s.name, clip_path=f"url(#{id_}-plot)")
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
                upper = [f"{x(p.index):.1f},{y(p.high or 0):.1f}" for p in run]
                lower = [f"{x(p.index):.1f},{y(max(p.low or 0, ticks[0])):.1f}" for p in reversed(run)]
                node(
                    group,
                    "polygon",
                    points=" ".join(upper + lower),
                    fill=s.colour,
                    fill_opacity=0.16,
                    class_="band",
                )
            if len(run) >= 2:
                path = "M" + " L".join(f"{x(p.index):.1f},{y(p.value):.1f}" for p in run)
                node(
                    group,
                    "path",
                    d=path,
                    fill="none",
                    stroke=s.colour,
                    stroke_width=2.5,
                    stroke_linejoin="round",
                    class_="line",
                )
        for p in s.points:
            if p.low is not None and p.high is not None and len(s.points) == 1:
                node(
                    group,
                    "line",
                    x1=x(p.index),
                    x2=x(p.index),
                    y1=y(max(p.low, 0.0)),
                    y2=y(p.high),
                    stroke=s.colour,
                    stroke_width=2,
                )
            dot = node(
                group,
                "circle",
                cx=x(p.index),
                cy=y(p.value),
                r=4.5,
                fill="#fff",
                stroke=s.colour,
                stroke_width=2.5,
                class_="point",
            )
            tip(dot, p.tooltip)
    legend(svg, [(s.name, s.colour) for s in series], width - right, 16)
    return svg


def _short_day(label: str) -> str:
    """``2025-01-31`` -> ``Jan 31`` (the year is in the page header); other labels unchanged."""
    try:
        day = date.fromisoformat(label)
    except ValueError:
        return label
    return f"{day:%b} {day.day}"


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
    left, right, top, bottom = 52, 12, 34, 40
    svg = canvas(width, height, label=label, id_=id_)
    hi = (
        y_max
        if y_max is not None
        else max((b.high or b.value for _, bars in groups for b in bars), default=1)
    )
    ticks = nice_ticks(0, hi if hi > 0 else 1, 4)
    y = Scale(0, ticks[-1], height - bottom, top)
    _y_axis(svg, y, ticks, left, width - right, fmt)
    slot = (width - left - right) / max(len(groups), 1)
    for g, (name, bars) in enumerate(groups):
        x0 = left + g * slot
        text(svg, x0 + slot / 2, height - bottom + 20, name, size=FONT, anchor="middle", fill=INK)
        inner = slot * 0.78
        bw = inner / max(len(bars), 1)
        for b, bar in enumerate(bars):
            bx = x0 + (slot - inner) / 2 + b * bw
            top_y = y(max(bar.value, 0))
            rect = node(
                svg,
                "rect",
                x=bx + 2,
                y=top_y,
                width=max(bw - 4, 1),
                height=max(y(0) - top_y, 0),
                rx=3,
                fill=bar.colour,
                class_="bar",
                data_arm=bar.series,
            )
            tip(rect, bar.tooltip)
            if bar.low is not None and bar.high is not None:
                cx = bx + bw / 2
                node(svg, "line", x1=cx, x2=cx, y1=y(bar.low), y2=y(bar.high), stroke=INK, stroke_width=1.5)
            text(
                svg,
                bx + bw / 2,
                min(top_y, y(bar.high) if bar.high is not None else top_y) - 6,
                bar.label,
                # Narrow bars (many arms) get smaller labels, so that neighbours do not run together.
                size=min(FONT - 2, round(bw / (0.62 * max(len(bar.label), 3)), 1)),
                anchor="middle",
                fill=INK,
            )
    node(svg, "line", x1=left, x2=width - right, y1=y(0), y2=y(0), stroke=AXIS)
    series = list(dict.fromkeys((b.series, b.colour) for _, bars in groups for b in bars))
    legend(svg, series, width - right, 16)
    return svg


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
    left, right, top = 170, 150, 30
    gap = 14
    heights = [len(bars) * bar_height + gap for _, _, bars in groups]
    height = top + sum(heights) + 30
    svg = canvas(width, height, label=label, id_=id_)
    values = [v for _, _, bars in groups for b in bars for v in (b.value, b.high) if v is not None]
    ticks = nice_ticks(0, max(values, default=1.0) or 1.0, 6)
    x = Scale(0, ticks[-1], left, width - right)
    for t in ticks:
        node(svg, "line", x1=x(t), x2=x(t), y1=top - 6, y2=height - 26, stroke=GRID)
        text(svg, x(t), height - 10, fmt(t), size=FONT - 1, anchor="middle", fill=MUTED)
    cursor: float = top
    for (name, note, bars), h in zip(groups, heights, strict=True):
        mid = cursor + (h - gap) / 2
        text(svg, left - 12, mid, name, size=FONT, anchor="end", weight="600", baseline="middle")
        text(svg, left - 12, mid + 15, note, size=FONT - 3, anchor="end", fill=MUTED, baseline="middle")
        for b, bar in enumerate(bars):
            by = cursor + b * bar_height
            if bar.value is not None:
                rect = node(
                    svg,
                    "rect",
                    x=left,
                    y=by + 2,
                    width=max(x(bar.value) - left, 1),
                    height=bar_height - 4,
                    rx=3,
                    fill=bar.colour,
                    class_="bar",
                    data_arm=bar.series,
                )
                tip(rect, bar.tooltip)
                end = x(bar.value)
                if bar.low is not None and bar.high is not None:
                    cy = by + bar_height / 2
                    node(
                        svg,
                        "line",
                        x1=x(max(bar.low, 0)),
                        x2=x(bar.high),
                        y1=cy,
                        y2=cy,
                        stroke=INK,
                        stroke_width=1.5,
                    )
                    for v in (max(bar.low, 0), bar.high):
                        node(
                            svg, "line", x1=x(v), x2=x(v), y1=cy - 4, y2=cy + 4, stroke=INK, stroke_width=1.5
                        )
                    end = max(end, x(bar.high))
                text(svg, end + 6, by + bar_height / 2, bar.label, size=FONT - 2, fill=INK, baseline="middle")
            else:
                text(
                    svg,
                    left + 4,
                    by + bar_height / 2,
                    bar.label,
                    size=FONT - 2,
                    fill=MUTED,
                    baseline="middle",
                )
        cursor += h
    series = list(dict.fromkeys((b.series, b.colour) for _, _, bars in groups for b in bars))
    legend(svg, series, width - 10, 14)
    return svg


# --- factors: estimate and interval per arm ------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    series: str
    colour: str
    value: float | None
    low: float | None
    high: float | None
    value_label: str
    note: str  # the lift against control, under the value
    note_colour: str
    tooltip: str


def interval_panel(
    title: str,
    subtitle: str,
    rows: Sequence[Interval],
    *,
    id_: str,
    fmt: Callable[[float], str],
    reference: float | None = None,
    width: float = 360,
) -> Element:
    """A forest plot of one metric: a dot and its 95% interval per arm, the control's value as a line."""
    left, right, top, row_h = 92, 96, 52, 40
    height = top + row_h * len(rows) + 26
    svg = canvas(width, height, label=f"{title} per arm with 95% intervals", id_=id_)
    text(svg, 0, 17, title, size=FONT + 2, weight="600")
    text(svg, 0, 35, subtitle, size=FONT - 2, fill=MUTED)
    values = [v for r in rows for v in (r.value, r.low, r.high) if v is not None]
    if not values:
        text(svg, left, top + 20, "not enough data", fill=MUTED)
        return svg
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.1 or 1.0
    ticks = nice_ticks(lo - pad, hi + pad, 3)
    x = Scale(ticks[0], ticks[-1], left, width - right)
    bottom = top + row_h * len(rows)
    for t in ticks:
        node(svg, "line", x1=x(t), x2=x(t), y1=top - 4, y2=bottom, stroke=GRID)
        text(svg, x(t), bottom + 16, fmt(t), size=FONT - 3, anchor="middle", fill=MUTED)
    if reference is not None:
        node(
            svg,
            "line",
            x1=x(reference),
            x2=x(reference),
            y1=top - 4,
            y2=bottom,
            stroke=AXIS,
            stroke_dasharray="4 3",
        )
    for i, r in enumerate(rows):
        cy = top + row_h * i + row_h / 2 - 4
        text(
            svg,
            left - 10,
            cy,
            r.series,
            size=FONT - 1,
            anchor="end",
            fill=r.colour,
            weight="600",
            baseline="middle",
        )
        group = node(svg, "g", class_="estimate", data_arm=r.series)
        tip(group, r.tooltip)
        if r.value is None:
            text(group, left, cy, "no data", size=FONT - 2, fill=MUTED, baseline="middle")
            continue
        if r.low is not None and r.high is not None:
            node(
                group,
                "line",
                x1=x(r.low),
                x2=x(r.high),
                y1=cy,
                y2=cy,
                stroke=r.colour,
                stroke_width=3,
                stroke_linecap="round",
                stroke_opacity=0.55,
            )
        node(group, "circle", cx=x(r.value), cy=cy, r=5.5, fill=r.colour)
        text(svg, width - right + 8, cy - 2, r.value_label, size=FONT - 1, weight="600", baseline="middle")
        if r.note:
            text(
                svg, width - right + 8, cy + 13, r.note, size=FONT - 3, fill=r.note_colour, baseline="middle"
            )
    return svg


# --- which factor moved: a waterfall of log lifts ------------------------------------------------------


@dataclass(frozen=True)
class Step:
    name: str
    log_lift: float | None
    significant: bool
    note: str  # e.g. "+4.1%  p 0.003"
    tooltip: str


_PERCENT_TICKS = (
    -0.9,
    -0.75,
    -0.5,
    -0.3,
    -0.2,
    -0.1,
    -0.05,
    -0.02,
    0.0,
    0.02,
    0.05,
    0.1,
    0.2,
    0.3,
    0.5,
    1.0,
    2.0,
    4.0,
)


def _percent(relative: float) -> str:
    return f"{relative * 100:+.0f}%" if relative else "0%"


def waterfall(
    steps: Sequence[Step],
    total: Step,
    *,
    colour: str,
    total_interval: tuple[float, float] | None,
    id_: str,
    label: str,
    width: float = 460,
) -> Element:
    """The factors' log lifts laid end to end: they add up to CPO's (the last bar, from zero).

    The axis is the log ratio, labelled as percent change, so steps add exactly; a step that is not
    significant is drawn pale.
    """
    left, right, top, row_h = 122, 92, 10, 40
    rows = [*steps, total]
    height = top + row_h * len(rows) + 30
    svg = canvas(width, height, label=label, id_=id_)
    cumulative = [0.0]
    for s in steps:
        cumulative.append(cumulative[-1] + (s.log_lift or 0.0))
    extent = [*cumulative, total.log_lift or 0.0]
    if total_interval:
        extent += list(total_interval)
    lo, hi = min(extent), max(extent)
    pad = max((hi - lo) * 0.08, 0.01)
    x = Scale(lo - pad, hi + pad, left, width - right)
    bottom = top + row_h * len(rows)
    # Round percentages as ticks, from 0 outwards, skipping any too close to one already drawn.
    candidates = sorted(
        (math.log1p(p) for p in _PERCENT_TICKS if lo - pad <= math.log1p(p) <= hi + pad), key=abs
    )
    drawn: list[float] = []
    for t in candidates:
        if any(abs(x(t) - x(d)) < 46 for d in drawn):
            continue
        drawn.append(t)
        node(
            svg,
            "line",
            x1=x(t),
            x2=x(t),
            y1=top - 4,
            y2=bottom,
            stroke=AXIS if t == 0 else GRID,
            stroke_width=1.5 if t == 0 else 1,
        )
        text(svg, x(t), bottom + 18, _percent(math.expm1(t)), size=FONT - 2, anchor="middle", fill=MUTED)
    for i, s in enumerate(rows):
        cy = top + row_h * i + row_h / 2
        is_total = i == len(steps)
        start = 0.0 if is_total else cumulative[i]
        end = (s.log_lift or 0.0) + (0.0 if is_total else cumulative[i])
        text(
            svg,
            left - 10,
            cy,
            s.name,
            size=FONT if not is_total else FONT + 1,
            anchor="end",
            weight="700" if is_total else None,
            baseline="middle",
        )
        group = node(svg, "g", class_="step", data_factor=s.name)
        tip(group, s.tooltip)
        if s.log_lift is None:
            text(group, left + 4, cy, "undefined", size=FONT - 3, fill=MUTED, baseline="middle")
            continue
        fill = colour if is_total else (BETTER if s.log_lift >= 0 else WORSE)
        x0, x1 = sorted((x(start), x(end)))
        node(
            group,
            "rect",
            x=x0,
            y=cy - 12,
            width=max(x1 - x0, 2),
            height=24,
            rx=3,
            fill=fill,
            fill_opacity=1 if s.significant else 0.38,
        )
        if is_total and total_interval:
            a, b = x(total_interval[0]), x(total_interval[1])
            node(group, "line", x1=a, x2=b, y1=cy, y2=cy, stroke=INK, stroke_width=1.5)
            for v in (a, b):
                node(group, "line", x1=v, x2=v, y1=cy - 5, y2=cy + 5, stroke=INK, stroke_width=1.5)
        if not is_total and i + 1 < len(steps):
            # A thin connector shows where the next factor starts.
            node(
                svg,
                "line",
                x1=x(end),
                x2=x(end),
                y1=cy + 10,
                y2=cy + row_h - 10,
                stroke=AXIS,
                stroke_dasharray="2 2",
            )
        text(
            svg,
            width - right + 10,
            cy,
            s.note,
            size=FONT if is_total else FONT - 1,
            weight="700" if is_total or s.significant else None,
            fill=INK if s.significant else MUTED,
            baseline="middle",
        )
    return svg


# --- latency -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Distribution:
    name: str
    colour: str
    values: Sequence[float]
    p50: float | None
    p95: float | None


_MS_TICKS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 60000)


def _ms(value: float) -> str:
    return f"{value / 1000:g} s" if value >= 1000 else f"{value:g} ms"


def latency_histogram(
    distributions: Sequence[Distribution],
    *,
    budget_ms: float,
    id_: str,
    label: str,
    width: float = 600,
    height: float = 320,
    bins: int = 28,
) -> Element:
    """Share of each arm's returned suggestions per latency bin (log axis), the budget as a red line,
    and each arm's p50 and p95 as ticks above the plot."""
    import numpy as np

    left, right, top, bottom = 52, 16, 30 + 16 * len(distributions), 40
    svg = canvas(width, height, label=label, id_=id_)
    values = [np.asarray(d.values, dtype=float) for d in distributions]
    positive = [v[v > 0] for v in values]
    every = np.concatenate(positive) if positive else np.zeros(0)
    if every.size == 0:
        text(svg, left, height / 2, "No returned suggestions to time.", fill=MUTED)
        return svg
    lo = max(min(float(np.percentile(every, 0.5)), budget_ms) / 1.3, 0.5)
    hi = max(float(np.percentile(every, 99.5)), budget_ms) * 1.3
    edges = np.geomspace(lo, hi, bins + 1)
    x = Scale(math.log(lo), math.log(hi), left, width - right)
    shares = []
    for v in positive:
        counts, _ = np.histogram(np.clip(v, lo, hi), bins=edges)
        shares.append(counts / max(v.size, 1))
    y_hi = max((float(s.max()) for s in shares if s.size), default=0.1)
    ticks = nice_ticks(0, y_hi * 1.08, 4)
    y = Scale(0, ticks[-1], height - bottom, top)
    _y_axis(svg, y, ticks, left, width - right, lambda t: f"{t:.0%}")
    for t in _MS_TICKS:
        if lo <= t <= hi:
            text(
                svg, x(math.log(t)), height - bottom + 18, _ms(t), size=FONT - 2, anchor="middle", fill=MUTED
            )
            node(
                svg,
                "line",
                x1=x(math.log(t)),
                x2=x(math.log(t)),
                y1=height - bottom,
                y2=height - bottom + 5,
                stroke=AXIS,
            )
    text(
        svg,
        (left + width - right) / 2,
        height - 6,
        "total latency of returned suggestions (log scale)",
        size=FONT - 2,
        anchor="middle",
        fill=MUTED,
    )
    for d, share, v in zip(distributions, shares, positive, strict=True):
        group = node(svg, "g", class_="histogram", data_arm=d.name)
        points = [f"{x(math.log(edges[0])):.1f},{y(0):.1f}"]
        for i, s in enumerate(share):
            points += [
                f"{x(math.log(edges[i])):.1f},{y(s):.1f}",
                f"{x(math.log(edges[i + 1])):.1f},{y(s):.1f}",
            ]
        points.append(f"{x(math.log(edges[-1])):.1f},{y(0):.1f}")
        node(
            group,
            "polygon",
            points=" ".join(points),
            fill=d.colour,
            fill_opacity=0.18,
            stroke=d.colour,
            stroke_width=2,
            stroke_linejoin="round",
        )
        for i, s in enumerate(share):
            # An invisible hit area per bin carries the tooltip.
            cell = node(
                group,
                "rect",
                x=x(math.log(edges[i])),
                y=top,
                width=x(math.log(edges[i + 1])) - x(math.log(edges[i])),
                height=height - bottom - top,
                fill="transparent",
            )
            tip(
                cell, f"{d.name}: {s:.1%} of {v.size:,} suggestions took {edges[i]:.0f}–{edges[i + 1]:.0f} ms"
            )
    bx = x(math.log(budget_ms))
    node(
        svg,
        "line",
        x1=bx,
        x2=bx,
        y1=top - 6,
        y2=height - bottom,
        stroke=BUDGET,
        stroke_width=2,
        stroke_dasharray="6 4",
        id="latency-budget",
    )
    text(
        svg,
        bx + 5,
        top + 4,
        f"budget {_ms(budget_ms)}",
        size=FONT - 2,
        fill=BUDGET,
        weight="600",
        baseline="hanging",
    )
    for i, d in enumerate(distributions):
        ty = 16 + 16 * i
        for q, value in (("p50", d.p50), ("p95", d.p95)):
            if value is None or not lo <= value <= hi:
                continue
            px = x(math.log(value))
            marker = node(
                svg,
                "path",
                d=f"M{px - 5:.1f},{ty - 6:.1f} L{px + 5:.1f},{ty - 6:.1f} L{px:.1f},{ty + 2:.1f} Z",
                fill=d.colour,
                class_="quantile",
            )
            tip(marker, f"{d.name} {q}: {value:.0f} ms")
            text(
                svg,
                px + (7 if q == "p95" else -7),
                ty - 2,
                f"{q} {value:.0f}",
                size=FONT - 4,
                anchor="start" if q == "p95" else "end",
                fill=d.colour,
                weight="600",
            )
    return svg


# --- shares of a whole per arm -------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    name: str
    count: int
    colour: str


def stacked_shares(
    rows: Sequence[tuple[str, str, Sequence[Segment]]],
    *,
    id_: str,
    label: str,
    width: float = 460,
    unit: str = "attempts",
) -> Element:
    """One 100% bar per row (name, colour of the name, segments); the share printed where it fits."""
    left, right, top, row_h = 104, 8, 8, 46
    names = list(dict.fromkeys((s.name, s.colour) for _, _, segs in rows for s in segs))
    legend_rows = math.ceil(len(names) / 3)
    height = top + row_h * len(rows) + 16 + 20 * legend_rows
    svg = canvas(width, height, label=label, id_=id_)
    x = Scale(0, 1, left, width - right)
    for i, (name, colour, segments) in enumerate(rows):
        cy = top + row_h * i + row_h / 2
        text(
            svg,
            left - 10,
            cy,
            name,
            size=FONT - 1,
            anchor="end",
            fill=colour,
            weight="600",
            baseline="middle",
        )
        total = sum(s.count for s in segments)
        if total == 0:
            text(svg, left + 4, cy, f"no {unit}", size=FONT - 2, fill=MUTED, baseline="middle")
            continue
        start = 0.0
        for s in segments:
            share = s.count / total
            if share <= 0:
                continue
            rect = node(
                svg,
                "rect",
                x=x(start),
                y=cy - 15,
                width=max(x(start + share) - x(start), 0.5),
                height=30,
                fill=s.colour,
                class_="segment",
                data_reason=s.name,
            )
            tip(rect, f"{name}: {s.name} {s.count:,} of {total:,} {unit} ({share:.1%})")
            if x(start + share) - x(start) > 38:
                text(
                    svg,
                    (x(start) + x(start + share)) / 2,
                    cy + 1,
                    f"{share:.0%}",
                    size=FONT - 2,
                    anchor="middle",
                    fill="#fff",
                    weight="600",
                    baseline="middle",
                )
            start += share
    ly = top + row_h * len(rows) + 22
    for j, (name, colour) in enumerate(names):
        lx = left + (j % 3) * ((width - left - right) / 3)
        node(svg, "rect", x=lx, y=ly + 20 * (j // 3) - 9, width=12, height=12, rx=2, fill=colour)
        text(svg, lx + 17, ly + 20 * (j // 3) + 1, name, size=FONT - 2, fill=INK)
    return svg
