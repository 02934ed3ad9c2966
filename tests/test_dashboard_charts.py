"""The dashboard's charts drawn with matplotlib: labels from the data stay text, every mark keeps its
tooltip and attributes, and each chart names itself for screen readers."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from xml.etree.ElementTree import Element, tostring

from opportune.telemetry.dashboard import arm_charts, charts

ROOT = Path(__file__).resolve().parents[1]
EVIL = "<script>alert(1)</script> & $x^2$"


def _html(element: Element) -> str:
    return tostring(element, encoding="unicode", method="html")


def test_a_hostile_arm_name_is_drawn_as_escaped_text_in_labels_legends_and_tooltips() -> None:
    bars = [
        charts.Bar(EVIL, "#3a6fb0", 0.5, "50%", f"{EVIL}: half"),
        charts.Bar("b", "#e08a1e", 0.3, "30%", "b"),
    ]
    html = _html(charts.grouped_columns([(EVIL, bars)], id_="chart-x", label=EVIL, fmt=str))
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; $x^2$" in html  # legend and axis: text, no TeX
    assert (
        f"<title>{EVIL.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')}: half</title>" in html
    )


def test_every_mark_keeps_its_class_arm_and_tooltip_and_the_chart_its_text_alternative() -> None:
    series = [
        charts.Series(
            "control",
            "#3a6fb0",
            [charts.Point(i, v, v - 1, v + 1, f"day {i}") for i, v in enumerate([2, 3, 4])],
        )
    ]
    html = _html(
        charts.time_series(
            ["2025-01-01", "2025-01-02", "2025-01-03"], series, id_="chart-t", label="CPO per day", fmt=str
        )
    )
    assert re.match(r'<svg class="chart" viewBox="0 0 1100 320" role="img" aria-label="CPO per day"', html)
    assert html.index("<title>CPO per day</title>") < html.index('class="point"')
    assert [
        m for m in re.findall(r'<g class="point" data-arm="control">\s*<title>([^<]*)</title>', html)
    ] == [
        "day 0",
        "day 1",
        "day 2",
    ]
    assert len(re.findall(r'class="band"', html)) == 1 and "Jan 1" in html


def test_ids_inside_one_chart_cannot_collide_with_another_chart_on_the_page() -> None:
    rows = [("python", "3 installs", [charts.RowBar("control", "#3a6fb0", 2.0, 1.0, 3.0, "2.0", "python")])]
    first = _html(charts.grouped_rows(rows, id_="chart-a", label="a", fmt=str))
    second = _html(charts.grouped_rows(rows, id_="chart-b", label="b", fmt=str))
    ids_a = set(re.findall(r' id="([^"]+)"', first))
    ids_b = set(re.findall(r' id="([^"]+)"', second))
    assert ids_a and not ids_a & ids_b
    for reference in re.findall(r'(?:href="#|url\(#)([^")]+)', first):
        assert reference in ids_a  # every reference points into its own chart


def test_the_latency_budget_line_and_quantile_markers_carry_their_ids_and_tooltips() -> None:
    d = arm_charts.Distribution("control", "#3a6fb0", [50.0, 80.0, 120.0, 300.0, 90.0] * 20, 90.0, 300.0)
    html = _html(arm_charts.latency_histogram([d], budget_ms=120, id_="chart-latency", label="latency"))
    assert 'id="latency-budget"' in html and "budget 120 ms" in html
    assert "<title>control p50: 90 ms</title>" in html and "<title>control p95: 300 ms</title>" in html


def test_importing_the_chart_modules_does_not_load_matplotlib() -> None:
    code = "import sys, opportune.telemetry.dashboard.page; print('matplotlib' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.stdout.strip() == "False", done.stderr[-2000:]
