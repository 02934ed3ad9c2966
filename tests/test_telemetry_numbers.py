"""One percentile and one number formatter for the report, the dashboard and the eval."""

from __future__ import annotations

import math

from opportune.telemetry.numbers import (
    DASH,
    fmt_metric,
    fmt_ms,
    fmt_p,
    fmt_relative,
    p_clause,
    percentile,
)


def test_percentile_interpolates_between_ranks_and_ignores_nan() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([10.0, math.nan, 20.0], 100) == 20.0
    assert percentile([], 95) is None
    assert percentile([math.nan], 50) is None


def test_a_missing_value_is_the_same_dash_everywhere() -> None:
    for text in (
        fmt_metric("cpo", None),
        fmt_metric("attempt_rate", math.nan),
        fmt_relative(None),
        fmt_p(None),
        fmt_ms(math.inf),
    ):
        assert text == DASH


def test_cpo_has_three_decimals_rates_one_and_units_on_request() -> None:
    assert fmt_metric("cpo", 0.12345) == "0.123"
    assert fmt_metric("cpo", 0.12345, unit=True) == "0.123 chars/opp"
    assert fmt_metric("acceptance_rate", 0.1234) == "12.3%"
    assert fmt_metric("tokens_per_accept", 3.456, unit=True) == "3.46 tok"
    assert fmt_relative(0.052) == "+5.2%"
    assert fmt_ms(1234.4, unit=True) == "1,234 ms"


def test_p_values_below_a_thousandth_are_not_given_false_precision() -> None:
    assert fmt_p(0.0123) == "0.012"
    assert fmt_p(0.00001) == "< 0.001"
    assert p_clause(0.0123) == "p = 0.012"
    assert p_clause(0.00001) == "p < 0.001"


def test_the_report_and_the_dashboard_have_no_formatters_of_their_own() -> None:
    from opportune.telemetry import report
    from opportune.telemetry.dashboard import page

    assert report.fmt_metric is page.fmt_metric is fmt_metric
    for module in (report, page):
        own = {name for name in vars(module) if name.startswith(("_fmt", "fmt_", "_p", "_pct", "_ms"))}
        assert own <= {
            "fmt_axis",
            "fmt_metric",
            "fmt_ms",
            "fmt_p",
            "fmt_relative",
            "fmt_share",
            "fmt_count",
        }, own
