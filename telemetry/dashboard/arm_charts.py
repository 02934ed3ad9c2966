"""The dashboard's per-arm comparison charts, drawn with matplotlib (see ``mpl``): a forest plot per
factor, the waterfall of factor lifts, the latency histogram and the 100% bars of attempt fates."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
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
    from matplotlib.transforms import Transform

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
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    row_h = 40
    height = 52 + row_h * len(rows) + 26
    with chart(width, height) as c:
        c.figure.text(0, 1 - 17 / height, title, fontsize=FONT + 2, fontweight=600, color=INK)
        c.figure.text(0, 1 - 35 / height, subtitle, fontsize=FONT - 2, color=MUTED)
        ax = c.axes(92, 96, 52, 26)
        ax.spines["bottom"].set_visible(False)
        ax.set_ylim(len(rows) - 0.1, -0.1)
        ax.set_yticks([])
        values = [v for r in rows for v in (r.value, r.low, r.high) if v is not None]
        if not values:
            ax.set_xticks([])
            ax.text(0, 0.5, "not enough data", color=MUTED, va="center")
            return to_svg(c, label=f"{title} per arm with 95% intervals", id_=id_)
        lo, hi = min(values), max(values)
        pad = (hi - lo) * 0.08 or abs(hi) * 0.1 or 1.0
        ax.set_xlim(lo - pad, hi + pad)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=3, steps=[1, 2, 2.5, 5, 10]))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: fmt(v)))
        ax.tick_params(axis="x", labelsize=FONT - 3)
        ax.grid(True, axis="x", color=GRID)
        ax.set_axisbelow(True)
        if reference is not None:
            ax.axvline(reference, color=AXIS, linestyle=(0, (4, 3)), linewidth=1)
        trans = ax.get_yaxis_transform()
        for i, r in enumerate(rows):
            cy = i + 0.4
            ax.annotate(
                r.series,
                (0, cy),
                xycoords=trans,
                xytext=(-10, 0),
                textcoords="offset points",
                ha="right",
                va="center",
                fontsize=FONT - 1,
                color=r.colour,
                fontweight=600,
            )
            if r.value is None:
                ax.annotate(
                    "no data",
                    (0, cy),
                    xycoords=trans,
                    xytext=(2, 0),
                    textcoords="offset points",
                    va="center",
                    fontsize=FONT - 2,
                    color=MUTED,
                )
                continue
            if r.low is not None and r.high is not None:
                ax.hlines(cy, r.low, r.high, color=r.colour, linewidth=3, alpha=0.55, capstyle="round")
            (dot,) = ax.plot([r.value], [cy], "o", color=r.colour, markersize=11, clip_on=False)
            c.mark(dot, r.tooltip, class_="estimate", data_arm=r.series)
            ax.annotate(
                r.value_label,
                (1, cy),
                xycoords=trans,
                xytext=(8, 2),
                textcoords="offset points",
                va="bottom",
                fontsize=FONT - 1,
                fontweight=600,
                color=INK,
            )
            if r.note:
                ax.annotate(
                    r.note,
                    (1, cy),
                    xycoords=trans,
                    xytext=(8, -2),
                    textcoords="offset points",
                    va="top",
                    fontsize=FONT - 3,
                    color=r.note_colour,
                )
        return to_svg(c, label=f"{title} per arm with 95% intervals", id_=id_)


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
    rows = [*steps, total]
    row_h = 40
    height = 10 + row_h * len(rows) + 30
    with chart(width, height) as c:
        ax = c.axes(122, 92, 10, 30)
        ax.spines["bottom"].set_visible(False)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_yticks([])
        cumulative = [0.0]
        for s in steps:
            cumulative.append(cumulative[-1] + (s.log_lift or 0.0))
        extent = [*cumulative, total.log_lift or 0.0, *(total_interval or ())]
        lo, hi = min(extent), max(extent)
        pad = max((hi - lo) * 0.08, 0.01)
        ax.set_xlim(lo - pad, hi + pad)
        # Round percentages as ticks, from 0 outwards, skipping any too close to one already drawn.
        span = (hi - lo + 2 * pad) / (width - 122 - 92)
        drawn: list[float] = []
        for t in sorted(
            (math.log1p(p) for p in _PERCENT_TICKS if lo - pad <= math.log1p(p) <= hi + pad), key=abs
        ):
            if all(abs(t - d) / span >= 46 for d in drawn):
                drawn.append(t)
        ax.set_xticks(sorted(drawn), [_percent(math.expm1(t)) for t in sorted(drawn)], fontsize=FONT - 2)
        ax.grid(True, axis="x", color=GRID)
        ax.set_axisbelow(True)
        if 0.0 in drawn:
            ax.axvline(0.0, color=AXIS, linewidth=1.5)
        trans = ax.get_yaxis_transform()
        for i, s in enumerate(rows):
            is_total = i == len(steps)
            ax.annotate(
                s.name,
                (0, i),
                xycoords=trans,
                xytext=(-10, 0),
                textcoords="offset points",
                ha="right",
                va="center",
                fontsize=FONT + 1 if is_total else FONT,
                fontweight=700 if is_total else 400,
                color=INK,
            )
            ax.annotate(
                s.note,
                (1, i),
                xycoords=trans,
                xytext=(10, 0),
                textcoords="offset points",
                va="center",
                fontsize=FONT if is_total else FONT - 1,
                fontweight=700 if is_total or s.significant else 400,
                color=INK if s.significant else MUTED,
            )
            if s.log_lift is None:
                ax.annotate(
                    "undefined",
                    (0, i),
                    xycoords=trans,
                    xytext=(4, 0),
                    textcoords="offset points",
                    va="center",
                    fontsize=FONT - 3,
                    color=MUTED,
                )
                continue
            start = 0.0 if is_total else cumulative[i]
            fill = colour if is_total else (BETTER if s.log_lift >= 0 else WORSE)
            bar = ax.barh(
                i, s.log_lift, left=start, height=0.6, color=fill, alpha=1 if s.significant else 0.38
            )
            c.mark(bar.patches[0], s.tooltip, class_="step", data_factor=s.name)
            if is_total and total_interval:
                ax.errorbar(
                    (total_interval[0] + total_interval[1]) / 2,
                    i,
                    xerr=(total_interval[1] - total_interval[0]) / 2,
                    fmt="none",
                    ecolor=INK,
                    elinewidth=1.5,
                    capsize=5,
                    capthick=1.5,
                )
            if not is_total and i + 1 < len(steps):
                # A thin connector shows where the next factor starts.
                end = start + s.log_lift
                ax.vlines(end, i + 0.25, i + 0.75, color=AXIS, linestyle=(0, (2, 2)), linewidth=1)
        return to_svg(c, label=label, id_=id_)


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
    and each arm's p50 and p95 as markers above the plot."""
    import numpy as np
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator

    with chart(width, height) as c:
        ax = c.axes(52, 16, 30 + 16 * len(distributions), 40)
        positive = [v[v > 0] for v in (np.asarray(d.values, dtype=float) for d in distributions)]
        every = np.concatenate(positive) if positive else np.zeros(0)
        if every.size == 0:
            ax.set_axis_off()
            ax.text(0, 0.5, "No returned suggestions to time.", color=MUTED, transform=ax.transAxes)
            return to_svg(c, label=label, id_=id_)
        lo = max(min(float(np.percentile(every, 0.5)), budget_ms) / 1.3, 0.5)
        hi = max(float(np.percentile(every, 99.5)), budget_ms) * 1.3
        edges = np.geomspace(lo, hi, bins + 1)
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        ticks = [t for t in _MS_TICKS if lo <= t <= hi]
        ax.set_xticks(ticks, [_ms(t) for t in ticks], fontsize=FONT - 2)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.tick_params(axis="x", length=5, color=AXIS)
        ax.set_xlabel("total latency of returned suggestions (log scale)", fontsize=FONT - 2, color=MUTED)
        shares = [np.histogram(np.clip(v, lo, hi), bins=edges)[0] / max(v.size, 1) for v in positive]
        ax.set_ylim(0, max((float(s.max()) for s in shares if s.size), default=0.1) * 1.08)
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda t, _pos: f"{t:.0%}"))
        ax.grid(True, axis="y", color=GRID)
        ax.set_axisbelow(True)
        for d, share, v in zip(distributions, shares, positive, strict=True):
            ax.stairs(share, edges, fill=True, color=d.colour, alpha=0.18)
            outline = ax.stairs(share, edges, color=d.colour, linewidth=2)
            c.mark(outline, None, class_="histogram", data_arm=d.name)
            for i, s in enumerate(share):
                # An invisible hit area per bin carries the tooltip.
                cell = ax.axvspan(edges[i], edges[i + 1], facecolor="none", edgecolor="none")
                c.mark(
                    cell,
                    f"{d.name}: {s:.1%} of {v.size:,} suggestions took {edges[i]:.0f}–{edges[i + 1]:.0f} ms",
                )
        c.mark(
            ax.axvline(budget_ms, color=BUDGET, linewidth=2, linestyle=(0, (6, 4))), None, id="latency-budget"
        )
        ax.annotate(
            f"budget {_ms(budget_ms)}",
            (budget_ms, 1),
            xycoords=ax.get_xaxis_transform(),
            xytext=(5, -4),
            textcoords="offset points",
            va="top",
            fontsize=FONT - 2,
            color=BUDGET,
            fontweight=600,
        )
        trans = ax.get_xaxis_transform()
        for i, d in enumerate(distributions):
            offset = 6 + 16 * (len(distributions) - 1 - i)
            for q, value in (("p50", d.p50), ("p95", d.p95)):
                if value is None or not lo <= value <= hi:
                    continue
                (marker,) = ax.plot(
                    [value], [1], "v", transform=trans, color=d.colour, markersize=9, clip_on=False
                )
                marker.set_transform(trans + _offset(c, offset))
                c.mark(marker, f"{d.name} {q}: {value:.0f} ms", class_="quantile")
                ax.annotate(
                    f"{q} {value:.0f}",
                    (value, 1),
                    xycoords=trans,
                    textcoords="offset points",
                    xytext=(7 if q == "p95" else -7, offset + 2),
                    ha="left" if q == "p95" else "right",
                    fontsize=FONT - 4,
                    color=d.colour,
                    fontweight=600,
                )
        return to_svg(c, label=label, id_=id_)


def _offset(c: Chart, points: float) -> Transform:
    """A shift upwards by ``points`` (viewBox units), whatever the data coordinates."""
    from matplotlib.transforms import ScaledTranslation

    return ScaledTranslation(0, points / 72, c.figure.dpi_scale_trans)


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
    from matplotlib.patches import Patch

    names = list(dict.fromkeys((s.name, s.colour) for _, _, segs in rows for s in segs))
    legend_rows = math.ceil(len(names) / 3)
    row_h = 46
    height = 8 + row_h * len(rows) + 16 + 20 * legend_rows
    with chart(width, height) as c:
        ax = c.axes(104, 8, 8, 16 + 20 * legend_rows)
        ax.set_axis_off()
        ax.set_xlim(0, 1)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        trans = ax.get_yaxis_transform()
        for i, (name, colour, segments) in enumerate(rows):
            ax.annotate(
                name,
                (0, i),
                xycoords=trans,
                xytext=(-10, 0),
                textcoords="offset points",
                ha="right",
                va="center",
                fontsize=FONT - 1,
                color=colour,
                fontweight=600,
            )
            total = sum(s.count for s in segments)
            if total == 0:
                ax.text(0.01, i, f"no {unit}", va="center", fontsize=FONT - 2, color=MUTED)
                continue
            start = 0.0
            for s in segments:
                share = s.count / total
                if share <= 0:
                    continue
                rect = ax.barh(i, share, left=start, height=30 / row_h, color=s.colour).patches[0]
                c.mark(
                    rect,
                    f"{name}: {s.name} {s.count:,} of {total:,} {unit} ({share:.1%})",
                    class_="segment",
                    data_reason=s.name,
                )
                if share * (width - 112) > 38:
                    ax.text(
                        start + share / 2,
                        i,
                        f"{share:.0%}",
                        ha="center",
                        va="center",
                        fontsize=FONT - 2,
                        color="#fff",
                        fontweight=600,
                    )
                start += share
        if names:
            ax.legend(
                handles=[Patch(color=colour, label=name) for name, colour in names],
                loc="upper left",
                bbox_to_anchor=(0, 0),
                ncol=3,
                fontsize=FONT - 2,
                handlelength=1,
                borderaxespad=0.3,
            )
        return to_svg(c, label=label, id_=id_)
