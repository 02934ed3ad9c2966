"""The dashboard page: one self-contained HTML document (inline CSS and SVG, no script, nothing fetched).

The same document is served by the local web app (with the filter form) and written by ``--export``
(without it).  It is built as an ElementTree and serialized, so every string from the data is escaped;
the Content-Security-Policy in the document forbids scripts and any load from elsewhere, so even a bug
in that escaping could not run code or call out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from urllib.parse import urlencode
from xml.etree.ElementTree import Element, tostring

from opportune.telemetry.cpo import FACTORS, METRICS
from opportune.telemetry.dashboard import svg
from opportune.telemetry.dashboard.data import ArmView, Cell, Message, View, finite, format_day
from opportune.telemetry.experiments import ArmResult, Comparison, Estimate, ExperimentAnalysis
from opportune.telemetry.numbers import DASH, fmt_metric, fmt_ms, fmt_relative, fmt_share, p_clause

TITLE = "Opportune · CPO dashboard"
# No scripts at all; styles and images only from the document itself.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; base-uri 'none'"

METRIC_TITLES: dict[str, str] = {
    "attempt_rate": "Attempt rate",
    "feedback_rate": "Feedback rate",
    "acceptance_rate": "Acceptance rate",
    "tokens_per_accept": "Tokens per accept",
    "chars_per_token": "Chars per token",
    "cpo": "CPO",
}
COUNT_LABELS: dict[str, str] = {
    "opportunities": "opportunities",
    "attempts": "attempts",
    "shown": "shown",
    "accepted": "accepted",
    "accepted_tokens": "accepted tokens",
    "accepted_chars": "accepted chars",
}
VERDICT_CLASSES: dict[str, str] = {
    "ship": "good",
    "harm": "bad",
    "no difference yet": "neutral",
    "too few installs to tell": "neutral",
    "control": "control",
    "invalid: sample ratio mismatch": "bad",
}
FATE_COLOURS: dict[str, str] = {
    "returned": "#3f8f6b",
    "deadline": "#e3b341",
    "cancelled": "#9aa5b1",
    "superseded": "#c4cbd4",
    "empty": "#8c7aa8",
    "error": "#d0464b",
    "skipped": "#6f7d8c",
}
MAX_LANGUAGES = 15

CSS = """
:root { --ink: #1d2430; --muted: #6b7482; --bg: #f3f5f8; --card: #fff; --line: #e2e6ec;
        --good: #2f9e63; --bad: #d0464b; --warn: #b7791f; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       font-variant-numeric: tabular-nums; }
header { background: #1d2430; color: #fff; padding: 18px 0 16px; }
.wrap { max-width: 1240px; margin: 0 auto; padding: 0 28px; }
header h1 { margin: 0; font-size: 21px; font-weight: 650; letter-spacing: .2px; }
header h1 span { color: #9fb3cf; font-weight: 500; }
header .meta { color: #b9c4d3; font-size: 13px; margin-top: 4px; }
form.filters { display: flex; flex-wrap: wrap; gap: 10px 12px; align-items: flex-end; margin-top: 14px; }
form.filters label { display: flex; flex-direction: column; font-size: 11.5px; color: #b9c4d3;
                     text-transform: uppercase; letter-spacing: .5px; gap: 3px; }
form.filters input, form.filters select, form.filters button, form.filters a.button {
                     font: inherit; font-size: 13.5px; height: 32px; padding: 0 8px; border-radius: 6px;
                     border: 1px solid #3b4658; background: #283142; color: #fff; color-scheme: dark; }
form.filters input[type=number] { width: 84px; }
form.filters button, form.filters a.button { display: inline-flex; align-items: center; padding: 0 14px;
                     border-color: #4a7fc1; background: #4a7fc1; cursor: pointer; text-decoration: none; }
form.filters a.button.secondary { background: transparent; border: 1px solid #3b4658; color: #d5deea; }
main.wrap { padding-top: 22px; padding-bottom: 40px; }
.grid { display: grid; grid-template-columns: repeat(12, minmax(0, 1fr)); gap: 18px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 16px 20px 18px;
        box-shadow: 0 1px 2px rgba(16, 24, 40, .05); }
.s12 { grid-column: span 12; } .s8 { grid-column: span 8; } .s7 { grid-column: span 7; }
.s6 { grid-column: span 6; } .s5 { grid-column: span 5; } .s4 { grid-column: span 4; } .s3 { grid-column: span 3; }
h2 { font-size: 16px; margin: 0 0 2px; font-weight: 650; }
p.hint { color: var(--muted); font-size: 12.5px; margin: 0 0 12px; }
svg.chart { width: 100%; height: auto; display: block; font-family: inherit; overflow: visible; }
.messages { display: flex; flex-direction: column; gap: 8px; margin-bottom: 18px; }
.message { border-radius: 8px; padding: 10px 14px; border: 1px solid; font-size: 14px; }
.message.info { background: #eef4fb; border-color: #c9dbf0; color: #234a74; }
.message.warning { background: #fdf6e7; border-color: #f0d9a6; color: #7a5410; }
.message.error { background: #fdeeee; border-color: #f2c4c5; color: #8a1f23; }
#verdict { border-left: 5px solid var(--accent, #c3c9d2); }
.verdict { display: flex; flex-wrap: wrap; gap: 14px 28px; align-items: center; }
.verdict .title { font-size: 13px; color: var(--muted); text-transform: uppercase; letter-spacing: .6px; }
.verdict .name { font-size: 20px; font-weight: 650; }
.pill { display: inline-block; padding: 3px 12px; border-radius: 999px; font-weight: 650; font-size: 13.5px;
        border: 1px solid; white-space: nowrap; }
.pill.good { background: #e6f5ec; color: #1c6b41; border-color: #b5e0c6; }
.pill.bad { background: #fdeaea; color: #9b2227; border-color: #f1bcbe; }
.pill.neutral { background: #eef1f5; color: #465163; border-color: #d5dbe3; }
.pill.control { background: #fff; color: var(--muted); border-color: var(--line); }
.arm-verdicts { display: flex; flex-direction: column; gap: 6px; }
.arm-verdict { display: flex; gap: 10px; align-items: baseline; flex-wrap: wrap; }
.swatch { display: inline-block; width: 11px; height: 11px; border-radius: 3px; margin-right: 6px; vertical-align: 0; }
.srm { margin-top: 12px; font-size: 13px; color: var(--muted); }
.srm b.ok { color: var(--good); } .srm b.alarm { color: var(--bad); } .srm b.na { color: var(--ink); }
.breach { color: var(--bad); font-size: 13px; }
.kpi .arm { font-weight: 650; font-size: 15px; }
.kpi .big { font-size: 30px; font-weight: 700; line-height: 1.1; margin-top: 6px; }
.kpi .big small { font-size: 13px; font-weight: 500; color: var(--muted); margin-left: 4px; }
.kpi .ci { color: var(--muted); font-size: 12.5px; }
.kpi .lift { font-size: 14px; margin-top: 6px; font-weight: 600; }
.kpi .lift.up { color: var(--good); } .kpi .lift.down { color: var(--bad); } .kpi .lift.flat { color: var(--muted); }
.kpi dl { display: grid; grid-template-columns: auto auto; gap: 2px 12px; margin: 12px 0 0; font-size: 12.5px; }
.kpi dt { color: var(--muted); } .kpi dd { margin: 0; text-align: right; }
.factors { display: grid; grid-template-columns: repeat(3, minmax(0, 1fr)); gap: 10px 26px; }
.below { font-size: 13px; color: var(--muted); margin-top: 8px; }
.below b { color: var(--ink); }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
#numbers table { width: auto; min-width: 60%; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
th { color: var(--muted); font-weight: 600; font-size: 12px; }
details summary { cursor: pointer; font-weight: 650; }
pre { font-size: 12px; overflow-x: auto; background: #f7f8fa; padding: 12px; border-radius: 8px; }
footer { color: var(--muted); font-size: 12px; margin-top: 22px; }
@media (max-width: 960px) { .s8, .s7, .s6, .s5, .s4, .s3 { grid-column: span 12; } .factors { grid-template-columns: 1fr; } }
@media print { body { background: #fff; } header { background: #fff; color: var(--ink); border-bottom: 1px solid var(--line); }
  header .meta { color: var(--muted); } form.filters { display: none; } .card { break-inside: avoid; box-shadow: none; } }
"""


# --- formatting ----------------------------------------------------------------------------------------


def fmt_axis(name: str) -> Callable[[float], str]:
    if name.endswith("_rate"):
        return lambda v: f"{v:.0%}" if v >= 0.1 or v == 0 else f"{v:.1%}"
    return lambda v: f"{v:g}"


def interval_text(name: str, e: Estimate) -> str:
    if e.ci_low is None or e.ci_high is None:
        return ""
    return f"[{fmt_metric(name, e.ci_low, unit=False)}, {fmt_metric(name, e.ci_high, unit=False)}]"


def lift_text(c: Comparison | None) -> str:
    if c is None or c.relative is None:
        return ""
    text = f"{fmt_relative(c.relative)}"
    if c.relative_ci_low is not None and c.unbounded_high:
        text += f" [{fmt_relative(c.relative_ci_low)}, +∞)"
    elif c.relative_ci_low is not None and c.relative_ci_high is not None:
        text += f" [{fmt_relative(c.relative_ci_low)}, {fmt_relative(c.relative_ci_high)}]"
    return text


# --- building blocks -----------------------------------------------------------------------------------


def _e(tag: str, text: str | None = None, /, *children: Element | None, **attrs: str) -> Element:
    element = Element(
        tag, {(k[:-1] if k.endswith("_") else k).replace("_", "-"): v for k, v in attrs.items()}
    )
    if text is not None:
        element.text = text
    for child in children:
        if child is not None:
            element.append(child)
    return element


def _card(span: int, title: str, hint: str | None, *body: Element | None, id_: str | None = None) -> Element:
    attrs = {"class_": f"card s{span}"}
    if id_:
        attrs["id"] = id_
    return _e(
        "section", None, _e("h2", title), _e("p", hint, class_="hint") if hint else None, *body, **attrs
    )


def _swatch(colour: str) -> Element:
    return _e("span", None, class_="swatch", style=f"background:{colour}")


def _with_tail(element: Element, tail: str) -> Element:
    element.tail = tail
    return element


def _messages(messages: Sequence[Message]) -> Element | None:
    if not messages:
        return None
    return _e(
        "div", None, *(_e("div", m.text, class_=f"message {m.level}") for m in messages), class_="messages"
    )


def _document(title: str, header: Element, *body: Element | None) -> str:
    head = _e(
        "head",
        None,
        _e("meta", charset="utf-8"),
        _e("meta", name="viewport", content="width=device-width, initial-scale=1"),
        _e("meta", http_equiv="Content-Security-Policy", content=CSP),
        _e("meta", name="referrer", content="no-referrer"),
        _e("title", title),
        # An empty icon: the browser would otherwise ask for /favicon.ico.
        _e("link", rel="icon", href="data:,"),
        _e("style", CSS),
    )
    main = _e("main", None, *body, class_="wrap")
    html = _e("html", None, head, _e("body", None, header, main), lang="en")
    return "<!DOCTYPE html>\n" + tostring(html, encoding="unicode", method="html")


def _header(meta: str, form: Element | None = None) -> Element:
    h1 = _e("h1", None)
    h1.text = "Opportune "
    h1.append(_e("span", "· CPO dashboard"))
    return _e("header", None, _e("div", None, h1, _e("div", meta, class_="meta"), form, class_="wrap"))


def _select(name: str, label: str, values: Sequence[str], current: str | None, all_label: str) -> Element:
    select = _e("select", None, name=name)
    options = [("", all_label), *((v, v) for v in values)]
    for value, text in options:
        option = _e("option", text, value=value)
        if (current or "") == value:
            option.set("selected", "selected")
        select.append(option)
    return _e("label", label, select)


def _filter_form(view: View) -> Element:
    q, c = view.query, view.choices
    bounds: dict[str, str] = {}
    if c.first_day:
        bounds["min"] = c.first_day.isoformat()
    if c.last_day:
        bounds["max"] = c.last_day.isoformat()
    first = _e(
        "input", type="date", name="from", value=q.first_day.isoformat() if q.first_day else "", **bounds
    )
    last = _e("input", type="date", name="to", value=q.last_day.isoformat() if q.last_day else "", **bounds)
    budget = _e(
        "input", type="number", name="budget", min="1", max="60000", step="10", value=f"{q.budget_ms:.0f}"
    )
    export_href = "report.html" + ("?" + urlencode(q.to_params()) if q.to_params() else "")
    return _e(
        "form",
        None,
        _select("experiment", "Experiment", c.experiments, view.experiment, "latest"),
        _e("label", "From", first),
        _e("label", "To", last),
        _select("language", "Language", c.languages, q.language, "all languages"),
        _select("model", "Model", c.models, q.model, "all models"),
        _e("label", "Latency budget (ms)", budget),
        _e("button", "Apply", type="submit"),
        _e("a", "Reset", href="./", class_="button secondary"),
        _e(
            "a",
            "Export HTML",
            href=export_href,
            class_="button secondary",
            download="opportune-report.html",
        ),
        class_="filters",
        method="get",
        action="./",
    )


# --- sections ------------------------------------------------------------------------------------------


def _verdict(view: View) -> Element | None:
    a = view.analysis
    if a is None:
        return None
    colours = view.colours
    rows = _e("div", None, class_="arm-verdicts")
    for arm in a.arms:
        if arm.arm == a.control:
            continue
        cpo = arm.comparisons.get("cpo")
        row = _e("div", None, class_="arm-verdict")
        row.append(_e("span", arm.verdict, class_=f"pill {VERDICT_CLASSES.get(arm.verdict, 'neutral')}"))
        name = _e("b", None, _swatch(colours.get(arm.arm, svg.INK)))
        name[0].tail = arm.arm
        row.append(name)
        detail = f"vs {a.control}: CPO {lift_text(cpo) or 'not comparable'}"
        if cpo is not None and cpo.p_adjusted is not None:
            detail += f", {p_clause(cpo.p_adjusted)}{' (Holm)' if a.correction else ''}"
        row.append(_e("span", detail))
        rows.append(row)
        if arm.sizing is not None and arm.verdict == "too few installs to tell":
            size = arm.sizing
            needed = size.installs_per_arm_needed
            rows.append(
                _e(
                    "div",
                    (
                        f"Detectable now: {size.detectable_lift:.0%} lift"
                        if size.detectable_lift is not None
                        else "No lift is detectable at this size"
                    )
                    + (
                        f"; about {needed:,} installs per arm for a {size.target_lift:.0%} lift."
                        if needed
                        else "."
                    ),
                    class_="hint",
                )
            )
        for breach in arm.guardrail_breaches:
            rows.append(_e("div", f"Guardrail breached: {breach}", class_="breach"))
    if len(rows) == 0:
        rows.append(_e("span", "Only the control arm has data: no verdict yet.", class_="pill neutral"))
    srm = a.srm
    total = max(sum(srm.units.values()), 1)
    shares = " · ".join(
        f"{arm} {n:,} ({n / total:.0%}, expected {srm.expected_share.get(arm, 0):.0%})"
        for arm, n in srm.units.items()
    )
    srm_line = _e("div", None, class_="srm", id="srm")
    if srm.p_value is None:
        status = _e("b", "Sample ratio: not testable", class_="na")
        status.tail = f" (one arm or no units) — {shares}"
    elif srm.alarm:
        status = _e("b", "Sample ratio MISMATCH", class_="alarm")
        status.tail = (
            f" — {shares}; χ² {p_clause(srm.p_value)} < {srm.threshold}: assignment or logging is broken, "
            "do not trust the comparison"
        )
    else:
        status = _e("b", "Sample ratio OK", class_="ok")
        status.tail = f" — {shares}; χ² {p_clause(srm.p_value)}"
    srm_line.append(status)
    head = _e(
        "div",
        None,
        _e("div", "Experiment", class_="title"),
        _e("div", a.experiment, class_="name"),
        _e("div", f"control: {a.control} · {total:,} installs", class_="hint"),
        _e("div", f"Intervals: {view.interval_note}", class_="hint", id="interval-kind"),
    )
    return _e(
        "section",
        None,
        _e("div", None, head, rows, class_="verdict"),
        srm_line,
        class_="card s12",
        id="verdict",
        style=f"--accent:{_accent(a)}",
    )


def _accent(a: ExperimentAnalysis) -> str:
    """The verdict card's edge: red for any harm or SRM alarm, green for a ship, grey otherwise."""
    verdicts = {arm.verdict for arm in a.arms}
    if a.srm.alarm or "harm" in verdicts:
        return svg.WORSE
    return svg.BETTER if "ship" in verdicts else "#c3c9d2"


def _kpi(arm: ArmView, result: ArmResult | None, span: int, budget_ms: float) -> Element:
    cpo = arm.cpo
    big = _e("div", fmt_metric("cpo", cpo.value, unit=False), class_="big")
    big.append(_e("small", "chars / opportunity"))
    lift: Element | None = None
    if result is not None and result.comparisons:
        c = result.comparisons["cpo"]
        direction = "flat" if not c.significant else ("up" if (c.difference or 0) > 0 else "down")
        lift = _e(
            "div",
            f"{lift_text(c)} vs control" if c.relative is not None else "not comparable",
            class_=f"lift {direction}",
        )
    elif result is not None:
        lift = _e("div", "control", class_="lift flat")
    f = arm.funnel
    facts = [
        ("installs", f"{arm.installs:,}"),
        ("opportunities", f"{f.opportunities:,}"),
        ("accepted chars", f"{f.accepted_chars:,}"),
        (
            "latency p50 / p95",
            f"{fmt_ms(arm.latency_p50_ms, unit=True)} / {fmt_ms(arm.latency_p95_ms, unit=True)}",
        ),
        (f"over {budget_ms:.0f} ms", fmt_share(arm.over_budget)),
    ]
    dl = _e("dl", None)
    for term, value in facts:
        dl.append(_e("dt", term))
        dl.append(_e("dd", value))
    name = _e("div", None, _swatch(arm.colour), class_="arm")
    name[0].tail = arm.label
    ci = interval_text("cpo", cpo)
    return _e(
        "section",
        None,
        name,
        big,
        _e("div", f"95% interval {ci}" if ci else "interval needs 2+ installs", class_="ci"),
        lift,
        dl,
        class_=f"card kpi s{span}",
        data_arm=arm.name,
    )


def _daily_chart(view: View) -> Element:
    index = {day: i for i, day in enumerate(view.days)}
    series = []
    for arm in view.arms:
        points = []
        for c in view.daily:
            if c.arm != arm.name or c.estimate.value is None:
                continue
            e = c.estimate
            points.append(
                svg.Point(
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
        series.append(svg.Series(arm.label, arm.colour, points))
    return svg.time_series(
        view.days,
        series,
        id_="chart-cpo-daily",
        label="CPO per day per arm with 95% intervals",
        fmt=lambda v: f"{v:g}",
    )


def _funnel_chart(view: View, *, wide: bool) -> Element:
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
                svg.Bar(
                    series=arm.label,
                    colour=arm.colour,
                    value=share,
                    label=f"{share:.0%}" if share >= 0.1 else f"{share:.1%}",
                    tooltip=f"{arm.label} · {title}: {count:,} ({fmt_share(share)} of opportunities)",
                )
            )
        groups.append((title, bars))
    return svg.grouped_columns(
        groups,
        id_="chart-funnel",
        label="Funnel per arm as a share of opportunities",
        fmt=lambda v: f"{v:.0%}",
        y_max=1.0,
        width=1100 if wide else 540,
        height=280 if wide else 300,
    )


def _factor_panels(view: View) -> Element:
    a = view.analysis
    control = a.arm(a.control) if a is not None else None
    panels = _e("div", None, class_="factors", id="factors")
    for name in METRICS:
        rows = []
        for arm in view.arms:
            result = next((r for r in a.arms if r.arm == arm.name), None) if a is not None else None
            estimate = result.metrics[name] if result is not None else Estimate(getattr(arm.funnel, name))
            comparison = result.comparisons.get(name) if result is not None else None
            note, note_colour = "", svg.MUTED
            if comparison is not None and comparison.relative is not None:
                note = f"{fmt_relative(comparison.relative)} · {p_clause(comparison.p_adjusted)}"
                if comparison.significant:
                    note_colour = svg.BETTER if comparison.relative > 0 else svg.WORSE
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
                svg.Interval(
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
            svg.interval_panel(
                METRIC_TITLES[name] + (" = the product" if name == "cpo" else ""),
                subtitle,
                rows,
                id_=f"factor-{name}",
                fmt=fmt_axis(name),
                reference=reference,
            )
        )
    return panels


def _waterfalls(view: View) -> list[Element]:
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
                svg.Step(
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
        total = svg.Step(
            name="CPO",
            log_lift=lift,
            significant=bool(c and c.significant),
            note=(f"{fmt_relative(math.expm1(lift))}" + (" *" if c and c.significant else ""))
            if lift is not None
            else DASH,
            tooltip=f"{arm.arm} vs {a.control} · CPO: {lift_text(c) or 'undefined'}"
            + (f", {p_clause(c.p_adjusted)}" if c and c.p_adjusted is not None else ""),
        )
        chart = svg.waterfall(
            steps,
            total,
            colour=colours.get(arm.arm, svg.INK),
            total_interval=interval,
            id_=f"chart-lift-{index}",
            label=f"Which factor moved CPO: {arm.arm} vs {a.control}",
        )
        if len(a.arms) > 2:
            title = _e("div", None, _swatch(colours.get(arm.arm, svg.INK)), class_="below")
            title[0].tail = f"{arm.arm} vs {a.control}"
            charts.append(title)
        charts.append(chart)
        summary = _mover_sentence(arm, a.control)
        if summary:
            charts.append(_e("p", summary, class_="below"))
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


def _latency_chart(view: View) -> Element:
    return svg.latency_histogram(
        [
            svg.Distribution(a.label, a.colour, a.latencies_ms.tolist(), a.latency_p50_ms, a.latency_p95_ms)
            for a in view.arms
        ],
        budget_ms=view.query.budget_ms,
        id_="chart-latency",
        label="Latency histogram per arm with the latency budget",
    )


def _checkpoint_label(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 and seconds % 60 == 0 else f"{seconds:g} s"


def _survival_chart(view: View) -> Element:
    """Survival curves: the share of accepted characters still there at each checkpoint, per arm."""
    checkpoints = sorted({p.checkpoint_s for a in view.arms for p in a.survival})
    index = {c: i + 1 for i, c in enumerate(checkpoints)}
    series = []
    for arm in view.arms:
        if not arm.survival:
            continue
        points = [svg.Point(0, 1.0, None, None, f"{arm.label}: all of it, at the accept")]
        for p in arm.survival:
            e = p.estimate
            if e.value is None:
                continue
            points.append(
                svg.Point(
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
        series.append(svg.Series(arm.label, arm.colour, points))
    return svg.time_series(
        ["accept", *map(_checkpoint_label, checkpoints)],
        series,
        id_="chart-survival",
        label="Survival of accepted code per arm: share of accepted characters still there at each checkpoint",
        fmt=lambda v: f"{v:.0%}",
    )


def _fates_chart(view: View) -> Element:
    rows = []
    order = list(FATE_COLOURS)
    for arm in view.arms:
        names = sorted(arm.attempt_fates, key=lambda n: (order.index(n) if n in order else len(order), n))
        segments = [svg.Segment(n, arm.attempt_fates[n], FATE_COLOURS.get(n, "#b0b7c1")) for n in names]
        rows.append((arm.label, arm.colour, segments))
    return svg.stacked_shares(rows, id_="chart-losses", label="What happened to each attempt, per arm")


def _losses_table(view: View) -> Element:
    """Counts behind the bars, and the opportunities that trigger rules skipped before any attempt."""
    order = list(FATE_COLOURS)
    fates = sorted(
        {f for arm in view.arms for f in arm.attempt_fates},
        key=lambda n: (order.index(n) if n in order else len(order), n),
    )
    head = _e("tr", None, _e("th", "responses"), *(_e("th", arm.label) for arm in view.arms))
    table = _e("table", None, head)
    for fate in fates:
        row = _e("tr", None, _e("td", None, _swatch(FATE_COLOURS.get(fate, "#b0b7c1"))))
        row[0][0].tail = fate
        for arm in view.arms:
            total = sum(arm.attempt_fates.values())
            count = arm.attempt_fates.get(fate, 0)
            row.append(_e("td", f"{count:,} ({fmt_share(count / total)})" if total else DASH))
        table.append(row)
    rules = list(dict.fromkeys(r for arm in view.arms for r in arm.skip_rules))
    if rules:
        table.append(_e("tr", None, _e("th", "skipped by trigger rule"), *(_e("th", "") for _ in view.arms)))
        for rule in rules:
            table.append(
                _e(
                    "tr",
                    None,
                    _e("td", rule),
                    *(_e("td", f"{arm.skip_rules.get(rule, 0):,}") for arm in view.arms),
                )
            )
    return _e("div", None, table, style="margin-top:14px")


def _language_chart(view: View) -> Element:
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
                svg.RowBar(
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
    return svg.grouped_rows(
        groups, id_="chart-languages", label="CPO per language per arm", fmt=lambda v: f"{v:g}"
    )


def _numbers_table(view: View) -> Element:
    """Every number per arm, one row per quantity (arms as columns, so any number of arms fits)."""
    head = _e("tr", None, _e("th", ""))
    for arm in view.arms:
        th = _e("th", None, _swatch(arm.colour))
        th[0].tail = arm.label
        head.append(th)
    table = _e("table", None, head)
    rows: list[tuple[str, Callable[[ArmView], str]]] = [
        ("installs", lambda a: f"{a.installs:,}"),
        *((COUNT_LABELS[k], lambda a, k=k: f"{getattr(a.funnel, k):,}") for k in COUNT_LABELS),
        *(
            (
                METRIC_TITLES[m],
                lambda a, m=m: (
                    f"{fmt_metric(m, getattr(a.funnel, m), unit=True)}"
                    + (f"  {interval_text(m, a.cpo)}" if m == "cpo" and interval_text(m, a.cpo) else "")
                ),
            )
            for m in METRICS
        ),
        ("latency p50", lambda a: fmt_ms(a.latency_p50_ms, unit=True)),
        ("latency p95", lambda a: fmt_ms(a.latency_p95_ms, unit=True)),
        (
            f"slower than {view.query.budget_ms:.0f} ms",
            lambda a: fmt_share(a.over_budget),
        ),
    ]
    for label, cell in rows:
        table.append(_e("tr", None, _e("td", label), *(_e("td", cell(arm)) for arm in view.arms)))
    return _e("div", None, table, style="overflow-x:auto")


# --- pages ---------------------------------------------------------------------------------------------


def _meta(view: View, interactive: bool) -> str:
    stores = len(view.stores)
    parts = [
        f"{view.events:,} events",
        f"{view.installs:,} install{'s' if view.installs != 1 else ''}",
        f"{stores} store{'s' if stores != 1 else ''}",
    ]
    if view.choices.first_day and view.choices.last_day:
        parts.append(f"data {view.choices.first_day} to {view.choices.last_day}")
    if not interactive:
        parts.append(f"filters: {view.query.describe()}")
        parts.append(f"exported {format_day(view.generated_at)}")
    return " · ".join(parts)


def render_page(view: View, *, interactive: bool = True) -> str:
    """The dashboard as one HTML document; ``interactive`` adds the filter form (the served page)."""
    header = _header(
        _meta(view, interactive), _filter_form(view) if interactive and view.choices.first_day else None
    )
    footer = _e(
        "footer",
        "Intervals are 95%, over installs (the randomisation unit), by the delta method. "
        "CPO = accepted characters / opportunities = the product of the five factors. "
        "Stores: " + (", ".join(view.stores) or DASH) + ".",
    )
    if not view.has_data:
        return _document(TITLE, header, _messages(view.messages) or _e("div", "No data."), footer)

    a = view.analysis
    results = {r.arm: r for r in a.arms} if a is not None else {}
    n = len(view.arms)
    kpi_span = 12 // n if n <= 4 else 3
    grid = _e("div", None, class_="grid")
    verdict = _verdict(view)
    if verdict is not None:
        grid.append(verdict)
    for arm in view.arms:
        grid.append(_kpi(arm, results.get(arm.name), kpi_span, view.query.budget_ms))
    grid.append(
        _card(
            12,
            "CPO per day",
            "Accepted characters per opportunity, per arm, with 95% interval bands over the "
            "installs active that day. Hover a point for its numbers.",
            _daily_chart(view),
            id_="cpo-daily",
        )
    )
    funnel_note = _e("div", None, class_="below")
    for arm in view.arms:
        # The funnel ends in characters: the numerator of CPO, on a scale of its own.
        line = _e("div", None, _swatch(arm.colour))
        line[0].tail = f"{arm.label}: {arm.funnel.accepted:,} accepted → "
        line.append(
            _with_tail(
                _e("b", f"{arm.funnel.accepted_chars:,} accepted chars"),
                f" = CPO {fmt_metric('cpo', arm.funnel.cpo, unit=True)} over {arm.funnel.opportunities:,} opportunities",
            )
        )
        funnel_note.append(line)
    waterfalls = _waterfalls(view)
    grid.append(
        _card(
            7 if waterfalls else 12,
            "Funnel",
            "Opportunities → attempts → shown → accepted, as a share of each arm's opportunities.",
            _funnel_chart(view, wide=not waterfalls),
            funnel_note,
            id_="funnel",
        )
    )
    if waterfalls:
        grid.append(
            _card(
                5,
                "Which factor moved CPO",
                "Each factor's lift against control; on a log scale they add up to "
                "CPO's lift. Pale: not significant; * significant.",
                *waterfalls,
                id_="lift",
            )
        )
    grid.append(
        _card(
            12,
            "The five factors",
            "Each factor and CPO per arm with 95% intervals; the dashed line is "
            "control, the note under a value its lift and p-value"
            + (" (Holm-corrected)" if a and a.correction else "")
            + ".",
            _factor_panels(view),
            id_="factors-card",
        )
    )
    if any(arm.survival for arm in view.arms):
        persisted = "; ".join(
            f"{arm.label} {fmt_metric('cpo', arm.funnel.persisted_cpo)} (CPO {fmt_metric('cpo', arm.funnel.cpo)})"
            for arm in view.arms
        )
        grid.append(
            _card(
                12,
                "What stayed",
                "The share of accepted characters still there at each checkpoint after the accept, per arm, "
                "with 95% intervals over installs; unknown checkpoints (document closed, server stopped) are "
                f"left out, not counted as lost. Persisted CPO: {persisted}.",
                _survival_chart(view),
                id_="survival",
            )
        )
    grid.append(
        _card(
            7,
            "Latency",
            f"Total latency of returned suggestions; budget {view.query.budget_ms:.0f} ms "
            "(change it with the form). Triangles mark p50 and p95.",
            _latency_chart(view),
            id_="latency",
        )
    )
    grid.append(
        _card(
            5,
            "Attempts and losses",
            "What happened to each attempt: a suggestion returned, or why not.",
            _fates_chart(view),
            _losses_table(view),
            id_="losses",
        )
    )
    grid.append(
        _card(
            12,
            "Per language",
            "CPO per language and arm, with 95% intervals over installs; the most used "
            f"languages first (up to {MAX_LANGUAGES}).",
            _language_chart(view),
            id_="languages",
        )
    )
    grid.append(_card(12, "All numbers", None, _numbers_table(view), id_="numbers"))
    return _document(TITLE, header, _messages(view.messages), grid, footer)


def render_problem(
    message: str, *, stores: Sequence[str] = (), hint: str | None = None, level: str = "error"
) -> str:
    """A page that explains why there is no dashboard (a missing or corrupt store, a refused filter)."""
    header = _header(" · ".join(f"store {s}" for s in stores) or "no store")
    body = [_messages([Message(level, message)])]  # type: ignore[arg-type]
    if hint:
        body.append(_e("p", hint, class_="hint"))
    body.append(_e("p", None, _e("a", "Back to the dashboard without filters", href="./")))
    return _document(TITLE, header, *body)
