"""Numbers as Opportune shows them: one percentile, and one formatter for the report, the dashboard and
the eval, so that the same quantity reads the same everywhere (the same dash for "none", the same p-values,
the same digits of CPO).

Pure functions over floats; numpy only (no pandas), so any module may use them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

DASH = "–"
"""A value that does not exist (no data, an undefined ratio)."""

UNITS: dict[str, str] = {"cpo": "chars/opp", "tokens_per_accept": "tok", "chars_per_token": "ch/tok"}


def percentile(values: Sequence[float] | np.ndarray, q: float) -> float | None:
    """The ``q``-th percentile (0-100, linear interpolation between ranks, as numpy's default) of the
    values that are not NaN; None when there are none."""
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    return float(np.percentile(arr, q)) if arr.size else None


def _missing(value: float | None) -> bool:
    return value is None or not math.isfinite(value)


def fmt_metric(name: str, value: float | None, *, unit: bool = False) -> str:
    """A CPO factor or CPO itself: rates as percentages (one decimal), CPO with three decimals (it is
    often below 1), the other ratios with two; ``unit`` appends the unit ("chars/opp", "tok")."""
    if value is None or _missing(value):
        return DASH
    if name.endswith("_rate"):
        return f"{value:.1%}"
    text = f"{value:.3f}" if name == "cpo" else f"{value:.2f}"
    return f"{text} {UNITS[name]}" if unit and name in UNITS else text


def fmt_relative(value: float | None) -> str:
    """A relative change, signed: +12.3%."""
    return DASH if value is None or _missing(value) else f"{value:+.1%}"


def fmt_share(value: float | None) -> str:
    """A share of a whole: 12.3%."""
    return DASH if value is None or _missing(value) else f"{value:.1%}"


def fmt_p(value: float | None) -> str:
    """A p-value: three decimals, and "< 0.001" below that (more digits claim a precision it lacks)."""
    if value is None or _missing(value):
        return DASH
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def p_clause(value: float | None) -> str:
    """A p-value in a sentence: "p = 0.012", "p < 0.001"."""
    text = fmt_p(value)
    return "p " + text if text.startswith("<") else "p = " + text


def fmt_ms(value: float | None, *, unit: bool = False) -> str:
    """Milliseconds, whole, with thousands separators."""
    if value is None or _missing(value):
        return DASH
    return f"{value:,.0f}" + (" ms" if unit else "")


def fmt_count(value: float) -> str:
    return f"{int(value):,}"
