"""The dashboard page's building blocks: its constants and style sheet, shared formatting, and small
HTML element helpers over ElementTree (whose serializer escapes every string from the data)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from xml.etree.ElementTree import Element, tostring

from opportune.telemetry.dashboard.data import Message
from opportune.telemetry.experiments import Comparison, Estimate
from opportune.telemetry.numbers import fmt_metric, fmt_relative

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


def el(tag: str, text: str | None = None, /, *children: Element | None, **attrs: str) -> Element:
    element = Element(
        tag, {(k[:-1] if k.endswith("_") else k).replace("_", "-"): v for k, v in attrs.items()}
    )
    if text is not None:
        element.text = text
    for child in children:
        if child is not None:
            element.append(child)
    return element


def card(span: int, title: str, hint: str | None, *body: Element | None, id_: str | None = None) -> Element:
    attrs = {"class_": f"card s{span}"}
    if id_:
        attrs["id"] = id_
    return el(
        "section", None, el("h2", title), el("p", hint, class_="hint") if hint else None, *body, **attrs
    )


def swatch(colour: str) -> Element:
    return el("span", None, class_="swatch", style=f"background:{colour}")


def with_tail(element: Element, tail: str) -> Element:
    element.tail = tail
    return element


def message_list(messages: Sequence[Message]) -> Element | None:
    if not messages:
        return None
    return el(
        "div", None, *(el("div", m.text, class_=f"message {m.level}") for m in messages), class_="messages"
    )


def html_document(title: str, header: Element, *body: Element | None) -> str:
    head = el(
        "head",
        None,
        el("meta", charset="utf-8"),
        el("meta", name="viewport", content="width=device-width, initial-scale=1"),
        el("meta", http_equiv="Content-Security-Policy", content=CSP),
        el("meta", name="referrer", content="no-referrer"),
        el("title", title),
        # An empty icon: the browser would otherwise ask for /favicon.ico.
        el("link", rel="icon", href="data:,"),
        el("style", CSS),
    )
    main = el("main", None, *body, class_="wrap")
    html = el("html", None, head, el("body", None, header, main), lang="en")
    return "<!DOCTYPE html>\n" + tostring(html, encoding="unicode", method="html")


def page_header(meta: str, form: Element | None = None) -> Element:
    h1 = el("h1", None)
    h1.text = "Opportune "
    h1.append(el("span", "· CPO dashboard"))
    return el("header", None, el("div", None, h1, el("div", meta, class_="meta"), form, class_="wrap"))


def select_field(
    name: str, label: str, values: Sequence[str], current: str | None, all_label: str
) -> Element:
    select = el("select", None, name=name)
    options = [("", all_label), *((v, v) for v in values)]
    for value, text in options:
        option = el("option", text, value=value)
        if (current or "") == value:
            option.set("selected", "selected")
        select.append(option)
    return el("label", label, select)
