"""The dashboard's charts fed from the view: each function turns a part of ``View`` into the chart
module's data classes and returns the chart's ``<svg>`` element (or a card body holding charts)."""

from __future__ import annotations

import math
from xml.etree.ElementTree import Element

from opportune.telemetry.cpo import FACTORS, METRICS
from opportune.telemetry.dashboard import arm_charts, charts
from opportune.telemetry.dashboard.data import Cell, View, finite
from opportune.telemetry.dashboard.html import (
    COUNT_LABELS,
    FATE_COLOURS,
    MAX_LANGUAGES,
    METRIC_TITLES,
    el,
    fmt_axis,
    interval_text,
    lift_text,
    swatch,
)
from opportune.telemetry.dashboard.mpl import BETTER, INK, MUTED, WORSE
from opportune.telemetry.experiments import ArmResult, Estimate
from opportune.telemetry.numbers import DASH, fmt_metric, fmt_relative, fmt_share, p_clause


def daily_chart(view: View) -> Element:
    index = {day: i for i, day in enumerate(view.days)}
    series = []
    for arm in view.arms:
        points = []
        for c in view.daily:
            if c.arm != arm.name or c.estimate.value is None:
                continue
            e = c.estimate
            points.append(
                charts.Point(
                    index=index[c.key],
                    value=e.value or 0.0,
                    low=finite(e.ci_low),
                    high=finite(e.ci_high),
                    tooltip=(
                        f"{c.key} · {arm.label}: CPO {fmt_metric('cpo', e.value, unit=True)} {interval_text('cpo', e)} · "
                        f"{c.installs:,} installs · {c.opportunities:,} opportunities · {c.accepted_chars:,} chars"
                    ),
                )
            )
        series.append(charts.Series(arm.label, arm.colour, points))
    return charts.time_series(
        view.days,
        series,
        id_="chart-cpo-daily",
        label="CPO per day per arm with 95% intervals",
        fmt=lambda v: f"{v:g}",
    )


def funnel_chart(view: View, *, wide: bool) -> Element:
    stages = (
        ("Opportunities", "opportunities"),
        ("Attempts", "attempts"),
        ("Shown", "shown"),
        ("Accepted", "accepted"),
    )
    groups = []
    for title, key in stages:
        bars = []
        for arm in view.arms:
            f = arm.funnel
            count = getattr(f, key)
            share = count / f.opportunities if f.opportunities else 0.0
            bars.append(
                charts.Bar(
                    series=arm.label,
                    colour=arm.colour,
                    value=share,
                    label=f"{share:.0%}" if share >= 0.1 else f"{share:.1%}",
                    tooltip=f"{arm.label} · {title}: {count:,} ({fmt_share(share)} of opportunities)",
                )
            )
        groups.append((title, bars))
    return charts.grouped_columns(
        groups,
        id_="chart-funnel",
        label="Funnel per arm as a share of opportunities",
        fmt=lambda v: f"{v:.0%}",
        y_max=1.0,
        width=1100 if wide else 540,
        height=280 if wide else 300,
    )


def factor_panels(view: View) -> Element:
    a = view.analysis
    control = a.arm(a.control) if a is not None else None
    panels = el("div", None, class_="factors", id="factors")
    for name in METRICS:
        rows = []
        for arm in view.arms:
            result = next((r for r in a.arms if r.arm == arm.name), None) if a is not None else None
            estimate = result.metrics[name] if result is not None else Estimate(getattr(arm.funnel, name))
            comparison = result.comparisons.get(name) if result is not None else None
            note, note_colour = "", MUTED
            if comparison is not None and comparison.relative is not None:
                note = f"{fmt_relative(comparison.relative)} · {p_clause(comparison.p_adjusted)}"
                if comparison.significant:
                    note_colour = BETTER if comparison.relative > 0 else WORSE
            elif (
                result is not None
                and control is not None
                and result.arm == control.arm
                and len(view.arms) > 1
            ):
                note = "control"
            tooltip = f"{arm.label} · {METRIC_TITLES[name]}: {fmt_metric(name, estimate.value, unit=True)} {interval_text(name, estimate)}"
            if comparison is not None and comparison.relative is not None:
                tooltip += f" · vs control {lift_text(comparison)}, {p_clause(comparison.p_adjusted)}"
            rows.append(
                arm_charts.Interval(
                    series=arm.label,
                    colour=arm.colour,
                    value=finite(estimate.value),
                    low=finite(estimate.ci_low),
                    high=finite(estimate.ci_high),
                    value_label=fmt_metric(name, estimate.value, unit=True),
                    note=note,
                    note_colour=note_colour,
                    tooltip=tooltip,
                )
            )
        num, den = FACTORS.get(name, ("accepted_chars", "opportunities"))
        subtitle = f"{COUNT_LABELS[num]} / {COUNT_LABELS[den]}"
        reference = None
        if control is not None and len(view.arms) > 1:
            reference = finite(control.metrics[name].value)
        panels.append(
            arm_charts.interval_panel(
                METRIC_TITLES[name] + (" = the product" if name == "cpo" else ""),
                subtitle,
                rows,
                id_=f"factor-{name}",
                fmt=fmt_axis(name),
                reference=reference,
            )
        )
    return panels


def waterfalls(view: View) -> list[Element]:
    a = view.analysis
    if a is None:
        return []
    charts: list[Element] = []
    colours = view.colours
    treatments = [arm for arm in a.arms if arm.arm != a.control]
    for index, arm in enumerate(treatments):
        steps = []
        for name in FACTORS:
            c = arm.comparisons.get(name)
            lift = arm.log_lift.get(name)
            steps.append(
                arm_charts.Step(
                    name=METRIC_TITLES[name],
                    log_lift=lift,
                    significant=bool(c and c.significant),
                    note=(f"{fmt_relative(math.expm1(lift))}" + (" *" if c and c.significant else ""))
                    if lift is not None
                    else DASH,
                    tooltip=f"{arm.arm} vs {a.control} · {METRIC_TITLES[name]}: {lift_text(c) or 'undefined'}"
                    + (f", {p_clause(c.p_adjusted)}" if c and c.p_adjusted is not None else ""),
                )
            )
        c = arm.comparisons.get("cpo")
        lift = arm.log_lift.get("cpo")
        interval = None
        if c and c.relative_ci_low is not None and c.relative_ci_high is not None and c.relative_ci_low > -1:
            interval = (math.log1p(c.relative_ci_low), math.log1p(c.relative_ci_high))
        total = arm_charts.Step(
            name="CPO",
            log_lift=lift,
            significant=bool(c and c.significant),
            note=(f"{fmt_relative(math.expm1(lift))}" + (" *" if c and c.significant else ""))
            if lift is not None
            else DASH,
            tooltip=f"{arm.arm} vs {a.control} · CPO: {lift_text(c) or 'undefined'}"
            + (f", {p_clause(c.p_adjusted)}" if c and c.p_adjusted is not None else ""),
        )
        chart = arm_charts.waterfall(
            steps,
            total,
            colour=colours.get(arm.arm, INK),
            total_interval=interval,
            id_=f"chart-lift-{index}",
            label=f"Which factor moved CPO: {arm.arm} vs {a.control}",
        )
        if len(a.arms) > 2:
            title = el("div", None, swatch(colours.get(arm.arm, INK)), class_="below")
            title[0].tail = f"{arm.arm} vs {a.control}"
            charts.append(title)
        charts.append(chart)
        summary = _mover_sentence(arm, a.control)
        if summary:
            charts.append(el("p", summary, class_="below"))
    return charts


def _mover_sentence(arm: ArmResult, control: str) -> str:
    """The waterfall in one sentence: which factor moved CPO the most, and whether that is significant."""
    total = arm.log_lift.get("cpo")
    moved = [(name, lift) for name in FACTORS if (lift := arm.log_lift.get(name)) is not None]
    if total is None or not moved:
        return ""
    name, lift = max(moved, key=lambda kv: abs(kv[1]))
    c = arm.comparisons.get(name)
    significance = "significant" if c is not None and c.significant else "not significant"
    return (
        f"{arm.arm}: CPO {fmt_relative(math.expm1(total))} against {control}. The biggest mover is "
        f"{METRIC_TITLES[name].lower()}, {fmt_relative(math.expm1(lift))} ({significance})."
    )


def latency_chart(view: View) -> Element:
    return arm_charts.latency_histogram(
        [
            arm_charts.Distribution(
                a.label, a.colour, a.latencies_ms.tolist(), a.latency_p50_ms, a.latency_p95_ms
            )
            for a in view.arms
        ],
        budget_ms=view.query.budget_ms,
        id_="chart-latency",
        label="Latency histogram per arm with the latency budget",
    )


def _checkpoint_label(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 and seconds % 60 == 0 else f"{seconds:g} s"


def survival_chart(view: View) -> Element:
    """Survival curves: the share of accepted characters still there at each checkpoint, per arm."""
    checkpoints = sorted({p.checkpoint_s for a in view.arms for p in a.survival})
    index = {c: i + 1 for i, c in enumerate(checkpoints)}
    series = []
    for arm in view.arms:
        if not arm.survival:
            continue
        points = [charts.Point(0, 1.0, None, None, f"{arm.label}: all of it, at the accept")]
        for p in arm.survival:
            e = p.estimate
            if e.value is None:
                continue
            points.append(
                charts.Point(
                    index=index[p.checkpoint_s],
                    value=e.value,
                    low=finite(e.ci_low),
                    high=finite(e.ci_high),
                    tooltip=(
                        f"{_checkpoint_label(p.checkpoint_s)} after the accept · {arm.label}: "
                        f"{e.value:.0%} of accepted characters still there {interval_text('persistence_rate', e)} · "
                        f"{p.measured:,} measured, {p.unknown:,} unknown, {p.pending:,} pending"
                    ),
                )
            )
        series.append(charts.Series(arm.label, arm.colour, points))
    return charts.time_series(
        ["accept", *map(_checkpoint_label, checkpoints)],
        series,
        id_="chart-survival",
        label="Survival of accepted code per arm: share of accepted characters still there at each checkpoint",
        fmt=lambda v: f"{v:.0%}",
    )


def fates_chart(view: View) -> Element:
    rows = []
    order = list(FATE_COLOURS)
    for arm in view.arms:
        names = sorted(arm.attempt_fates, key=lambda n: (order.index(n) if n in order else len(order), n))
        segments = [
            arm_charts.Segment(n, arm.attempt_fates[n], FATE_COLOURS.get(n, "#b0b7c1")) for n in names
        ]
        rows.append((arm.label, arm.colour, segments))
    return arm_charts.stacked_shares(rows, id_="chart-losses", label="What happened to each attempt, per arm")


def language_chart(view: View) -> Element:
    by_language: dict[str, list[Cell]] = {}
    for cell in view.languages:
        by_language.setdefault(cell.key, []).append(cell)
    ordered = sorted(by_language.items(), key=lambda kv: -sum(c.opportunities for c in kv[1]))[:MAX_LANGUAGES]
    groups = []
    for language, cells in ordered:
        by_arm = {c.arm: c for c in cells}
        bars = []
        for arm in view.arms:
            c = by_arm.get(arm.name)
            if c is None:
                continue
            e = c.estimate
            bars.append(
                charts.RowBar(
                    series=arm.label,
                    colour=arm.colour,
                    value=finite(e.value),
                    low=finite(e.ci_low),
                    high=finite(e.ci_high),
                    label=f"{fmt_metric('cpo', e.value, unit=False)} · {c.opportunities:,} opp",
                    tooltip=(
                        f"{language or '(unknown)'} · {arm.label}: CPO {fmt_metric('cpo', e.value, unit=True)} "
                        f"{interval_text('cpo', e)} · {c.installs:,} installs · {c.opportunities:,} opportunities"
                    ),
                )
            )
        installs = sum(c.installs for c in cells)
        groups.append((language or "(unknown)", f"{installs:,} installs", bars))
    return charts.grouped_rows(
        groups, id_="chart-languages", label="CPO per language per arm", fmt=lambda v: f"{v:g}"
    )
