"""The dashboard page: one self-contained HTML document (inline CSS and SVG, no script, nothing fetched).

The same document is served by the local web app (with the filter form) and written by ``--export``
(without it).  It is built as an ElementTree and serialized, so every string from the data is escaped;
the Content-Security-Policy in the document forbids scripts and any load from elsewhere, so even a bug
in that escaping could not run code or call out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from urllib.parse import urlencode
from xml.etree.ElementTree import Element

from opportune.telemetry.cpo import METRICS
from opportune.telemetry.dashboard.data import ArmView, Message, View, format_day
from opportune.telemetry.dashboard.html import (
    COUNT_LABELS,
    CSP,
    FATE_COLOURS,
    MAX_LANGUAGES,
    METRIC_TITLES,
    TITLE,
    VERDICT_CLASSES,
    card,
    el,
    html_document,
    interval_text,
    lift_text,
    message_list,
    page_header,
    select_field,
    swatch,
    with_tail,
)
from opportune.telemetry.dashboard.mpl import BETTER, INK, WORSE
from opportune.telemetry.dashboard.panels import (
    daily_chart,
    factor_panels,
    fates_chart,
    funnel_chart,
    language_chart,
    latency_chart,
    survival_chart,
    waterfalls,
)
from opportune.telemetry.experiments import ArmResult, ExperimentAnalysis
from opportune.telemetry.numbers import DASH, fmt_metric, fmt_ms, fmt_share, p_clause

__all__ = ["CSP", "render_page", "render_problem"]


def _filter_form(view: View) -> Element:
    q, c = view.query, view.choices
    bounds: dict[str, str] = {}
    if c.first_day:
        bounds["min"] = c.first_day.isoformat()
    if c.last_day:
        bounds["max"] = c.last_day.isoformat()
    first = el(
        "input", type="date", name="from", value=q.first_day.isoformat() if q.first_day else "", **bounds
    )
    last = el("input", type="date", name="to", value=q.last_day.isoformat() if q.last_day else "", **bounds)
    budget = el(
        "input", type="number", name="budget", min="1", max="60000", step="10", value=f"{q.budget_ms:.0f}"
    )
    export_href = "report.html" + ("?" + urlencode(q.to_params()) if q.to_params() else "")
    return el(
        "form",
        None,
        select_field("experiment", "Experiment", c.experiments, view.experiment, "latest"),
        el("label", "From", first),
        el("label", "To", last),
        select_field("language", "Language", c.languages, q.language, "all languages"),
        select_field("model", "Model", c.models, q.model, "all models"),
        el("label", "Latency budget (ms)", budget),
        el("button", "Apply", type="submit"),
        el("a", "Reset", href="./", class_="button secondary"),
        el(
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
    rows = el("div", None, class_="arm-verdicts")
    for arm in a.arms:
        if arm.arm == a.control:
            continue
        cpo = arm.comparisons.get("cpo")
        row = el("div", None, class_="arm-verdict")
        row.append(el("span", arm.verdict, class_=f"pill {VERDICT_CLASSES.get(arm.verdict, 'neutral')}"))
        name = el("b", None, swatch(colours.get(arm.arm, INK)))
        name[0].tail = arm.arm
        row.append(name)
        detail = f"vs {a.control}: CPO {lift_text(cpo) or 'not comparable'}"
        if cpo is not None and cpo.p_adjusted is not None:
            detail += f", {p_clause(cpo.p_adjusted)}{' (Holm)' if a.correction else ''}"
        row.append(el("span", detail))
        rows.append(row)
        if arm.sizing is not None and arm.verdict == "too few installs to tell":
            size = arm.sizing
            needed = size.installs_per_arm_needed
            rows.append(
                el(
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
            rows.append(el("div", f"Guardrail breached: {breach}", class_="breach"))
    if len(rows) == 0:
        rows.append(el("span", "Only the control arm has data: no verdict yet.", class_="pill neutral"))
    srm = a.srm
    total = max(sum(srm.units.values()), 1)
    shares = " · ".join(
        f"{arm} {n:,} ({n / total:.0%}, expected {srm.expected_share.get(arm, 0):.0%})"
        for arm, n in srm.units.items()
    )
    srm_line = el("div", None, class_="srm", id="srm")
    if srm.p_value is None:
        status = el("b", "Sample ratio: not testable", class_="na")
        status.tail = f" (one arm or no units) — {shares}"
    elif srm.alarm:
        status = el("b", "Sample ratio MISMATCH", class_="alarm")
        status.tail = (
            f" — {shares}; χ² {p_clause(srm.p_value)} < {srm.threshold}: assignment or logging is broken, "
            "do not trust the comparison"
        )
    else:
        status = el("b", "Sample ratio OK", class_="ok")
        status.tail = f" — {shares}; χ² {p_clause(srm.p_value)}"
    srm_line.append(status)
    head = el(
        "div",
        None,
        el("div", "Experiment", class_="title"),
        el("div", a.experiment, class_="name"),
        el("div", f"control: {a.control} · {total:,} installs", class_="hint"),
        el("div", f"Intervals: {view.interval_note}", class_="hint", id="interval-kind"),
    )
    return el(
        "section",
        None,
        el("div", None, head, rows, class_="verdict"),
        srm_line,
        class_="card s12",
        id="verdict",
        style=f"--accent:{_accent(a)}",
    )


def _accent(a: ExperimentAnalysis) -> str:
    """The verdict card's edge: red for any harm or SRM alarm, green for a ship, grey otherwise."""
    verdicts = {arm.verdict for arm in a.arms}
    if a.srm.alarm or "harm" in verdicts:
        return WORSE
    return BETTER if "ship" in verdicts else "#c3c9d2"


def _kpi(arm: ArmView, result: ArmResult | None, span: int, budget_ms: float) -> Element:
    cpo = arm.cpo
    big = el("div", fmt_metric("cpo", cpo.value, unit=False), class_="big")
    big.append(el("small", "chars / opportunity"))
    lift: Element | None = None
    if result is not None and result.comparisons:
        c = result.comparisons["cpo"]
        direction = "flat" if not c.significant else ("up" if (c.difference or 0) > 0 else "down")
        lift = el(
            "div",
            f"{lift_text(c)} vs control" if c.relative is not None else "not comparable",
            class_=f"lift {direction}",
        )
    elif result is not None:
        lift = el("div", "control", class_="lift flat")
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
    dl = el("dl", None)
    for term, value in facts:
        dl.append(el("dt", term))
        dl.append(el("dd", value))
    name = el("div", None, swatch(arm.colour), class_="arm")
    name[0].tail = arm.label
    ci = interval_text("cpo", cpo)
    return el(
        "section",
        None,
        name,
        big,
        el("div", f"95% interval {ci}" if ci else "interval needs 2+ installs", class_="ci"),
        lift,
        dl,
        class_=f"card kpi s{span}",
        data_arm=arm.name,
    )


def _losses_table(view: View) -> Element:
    """Counts behind the bars, and the opportunities that trigger rules skipped before any attempt."""
    order = list(FATE_COLOURS)
    fates = sorted(
        {f for arm in view.arms for f in arm.attempt_fates},
        key=lambda n: (order.index(n) if n in order else len(order), n),
    )
    head = el("tr", None, el("th", "responses"), *(el("th", arm.label) for arm in view.arms))
    table = el("table", None, head)
    for fate in fates:
        row = el("tr", None, el("td", None, swatch(FATE_COLOURS.get(fate, "#b0b7c1"))))
        row[0][0].tail = fate
        for arm in view.arms:
            total = sum(arm.attempt_fates.values())
            count = arm.attempt_fates.get(fate, 0)
            row.append(el("td", f"{count:,} ({fmt_share(count / total)})" if total else DASH))
        table.append(row)
    rules = list(dict.fromkeys(r for arm in view.arms for r in arm.skip_rules))
    if rules:
        table.append(el("tr", None, el("th", "skipped by trigger rule"), *(el("th", "") for _ in view.arms)))
        for rule in rules:
            table.append(
                el(
                    "tr",
                    None,
                    el("td", rule),
                    *(el("td", f"{arm.skip_rules.get(rule, 0):,}") for arm in view.arms),
                )
            )
    return el("div", None, table, style="margin-top:14px")


def _numbers_table(view: View) -> Element:
    """Every number per arm, one row per quantity (arms as columns, so any number of arms fits)."""
    head = el("tr", None, el("th", ""))
    for arm in view.arms:
        th = el("th", None, swatch(arm.colour))
        th[0].tail = arm.label
        head.append(th)
    table = el("table", None, head)
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
        table.append(el("tr", None, el("td", label), *(el("td", cell(arm)) for arm in view.arms)))
    return el("div", None, table, style="overflow-x:auto")


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
    header = page_header(
        _meta(view, interactive), _filter_form(view) if interactive and view.choices.first_day else None
    )
    footer = el(
        "footer",
        "Intervals are 95%, over installs (the randomisation unit), by the delta method. "
        "CPO = accepted characters / opportunities = the product of the five factors. "
        "Stores: " + (", ".join(view.stores) or DASH) + ".",
    )
    if not view.has_data:
        return html_document(TITLE, header, message_list(view.messages) or el("div", "No data."), footer)

    a = view.analysis
    results = {r.arm: r for r in a.arms} if a is not None else {}
    n = len(view.arms)
    kpi_span = 12 // n if n <= 4 else 3
    grid = el("div", None, class_="grid")
    verdict = _verdict(view)
    if verdict is not None:
        grid.append(verdict)
    for arm in view.arms:
        grid.append(_kpi(arm, results.get(arm.name), kpi_span, view.query.budget_ms))
    grid.append(
        card(
            12,
            "CPO per day",
            "Accepted characters per opportunity, per arm, with 95% interval bands over the "
            "installs active that day. Hover a point for its numbers.",
            daily_chart(view),
            id_="cpo-daily",
        )
    )
    funnel_note = el("div", None, class_="below")
    for arm in view.arms:
        # The funnel ends in characters: the numerator of CPO, on a scale of its own.
        line = el("div", None, swatch(arm.colour))
        line[0].tail = f"{arm.label}: {arm.funnel.accepted:,} accepted → "
        line.append(
            with_tail(
                el("b", f"{arm.funnel.accepted_chars:,} accepted chars"),
                f" = CPO {fmt_metric('cpo', arm.funnel.cpo, unit=True)} over {arm.funnel.opportunities:,} opportunities",
            )
        )
        funnel_note.append(line)
    lift_charts = waterfalls(view)
    grid.append(
        card(
            7 if lift_charts else 12,
            "Funnel",
            "Opportunities → attempts → shown → accepted, as a share of each arm's opportunities.",
            funnel_chart(view, wide=not lift_charts),
            funnel_note,
            id_="funnel",
        )
    )
    if lift_charts:
        grid.append(
            card(
                5,
                "Which factor moved CPO",
                "Each factor's lift against control; on a log scale they add up to "
                "CPO's lift. Pale: not significant; * significant.",
                *lift_charts,
                id_="lift",
            )
        )
    grid.append(
        card(
            12,
            "The five factors",
            "Each factor and CPO per arm with 95% intervals; the dashed line is "
            "control, the note under a value its lift and p-value"
            + (" (Holm-corrected)" if a and a.correction else "")
            + ".",
            factor_panels(view),
            id_="factors-card",
        )
    )
    if any(arm.survival for arm in view.arms):
        persisted = "; ".join(
            f"{arm.label} {fmt_metric('cpo', arm.funnel.persisted_cpo)} (CPO {fmt_metric('cpo', arm.funnel.cpo)})"
            for arm in view.arms
        )
        grid.append(
            card(
                12,
                "What stayed",
                "The share of accepted characters still there at each checkpoint after the accept, per arm, "
                "with 95% intervals over installs; unknown checkpoints (document closed, server stopped) are "
                f"left out, not counted as lost. Persisted CPO: {persisted}.",
                survival_chart(view),
                id_="survival",
            )
        )
    grid.append(
        card(
            7,
            "Latency",
            f"Total latency of returned suggestions; budget {view.query.budget_ms:.0f} ms "
            "(change it with the form). Triangles mark p50 and p95.",
            latency_chart(view),
            id_="latency",
        )
    )
    grid.append(
        card(
            5,
            "Attempts and losses",
            "What happened to each attempt: a suggestion returned, or why not.",
            fates_chart(view),
            _losses_table(view),
            id_="losses",
        )
    )
    grid.append(
        card(
            12,
            "Per language",
            "CPO per language and arm, with 95% intervals over installs; the most used "
            f"languages first (up to {MAX_LANGUAGES}).",
            language_chart(view),
            id_="languages",
        )
    )
    grid.append(card(12, "All numbers", None, _numbers_table(view), id_="numbers"))
    return html_document(TITLE, header, message_list(view.messages), grid, footer)


def render_problem(
    message: str, *, stores: Sequence[str] = (), hint: str | None = None, level: str = "error"
) -> str:
    """A page that explains why there is no dashboard (a missing or corrupt store, a refused filter)."""
    header = page_header(" · ".join(f"store {s}" for s in stores) or "no store")
    body = [message_list([Message(level, message)])]  # type: ignore[arg-type]
    if hint:
        body.append(el("p", hint, class_="hint"))
    body.append(el("p", None, el("a", "Back to the dashboard without filters", href="./")))
    return html_document(TITLE, header, *body)
