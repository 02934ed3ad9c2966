"""Paired bootstrap intervals for the difference between two configurations run on the same tasks.

Both configurations answered the same tasks (and typed the same spans), so the honest interval resamples
tasks, not answers: each bootstrap sample draws task indices with replacement and takes the difference of
the two configurations on exactly those tasks.  Per-task metrics give a difference of means; funnel ratios
(CPO and its factors, ratios of sums over spans) give a difference of ratios recomputed on each sample, as
the telemetry report does per install.  Percentile intervals, numpy's seeded generator: the same seed
gives the same interval.

``decide`` turns an interval into the eval's verdict on a metric: "better", "worse" or "cannot tell yet",
with about how many tasks or spans would resolve a difference of the observed size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

RESAMPLES = 4000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    estimate: float | None
    low: float | None
    high: float | None
    n: int

    @property
    def excludes_zero(self) -> bool:
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)


def _indices(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _bounds(samples: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    samples = samples[~np.isnan(samples)]
    if samples.size == 0:
        return None, None
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def paired_mean_difference(
    a: ArrayLike,
    b: ArrayLike,
    *,
    seed: int = 0,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
) -> Interval:
    """mean(b) - mean(a) over paired observations, with a bootstrap interval (None below two pairs)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError("paired samples must have the same length")
    n = int(x.size)
    if n == 0:
        return Interval(None, None, None, 0)
    diff = y - x
    estimate = float(diff.mean())
    if n < 2:
        return Interval(estimate, None, None, n)
    low, high = _bounds(diff[_indices(n, resamples, seed)].mean(axis=1), confidence)
    return Interval(estimate, low, high, n)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def paired_ratio_difference(
    num_a: ArrayLike,
    den_a: ArrayLike,
    num_b: ArrayLike,
    den_b: ArrayLike,
    *,
    seed: int = 0,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
) -> Interval:
    """sum(num_b)/sum(den_b) - sum(num_a)/sum(den_a), the units (spans) resampled jointly."""
    arrays = [np.asarray(v, dtype=float) for v in (num_a, den_a, num_b, den_b)]
    n = int(arrays[0].size)
    if any(arr.size != n for arr in arrays):
        raise ValueError("paired samples must have the same length")
    na, da, nb, db = arrays
    if n == 0 or da.sum() == 0 or db.sum() == 0:
        return Interval(None, None, None, n)
    estimate = float(nb.sum() / db.sum() - na.sum() / da.sum())
    if n < 2:
        return Interval(estimate, None, None, n)
    idx = _indices(n, resamples, seed)
    samples = _ratio(nb[idx].sum(axis=1), db[idx].sum(axis=1)) - _ratio(
        na[idx].sum(axis=1), da[idx].sum(axis=1)
    )
    low, high = _bounds(samples, confidence)
    return Interval(estimate, low, high, n)


def format_interval(interval: Interval, digits: int = 3) -> str:
    """``+0.120 [+0.010, +0.230]``, or ``n/a`` when undefined."""
    if interval.estimate is None or math.isnan(interval.estimate):
        return "n/a"
    text = f"{interval.estimate:+.{digits}f}"
    if interval.low is not None and interval.high is not None:
        text += f" [{interval.low:+.{digits}f}, {interval.high:+.{digits}f}]"
    return text


def mean_interval(
    values: ArrayLike, *, seed: int = 0, resamples: int = RESAMPLES, confidence: float = CONFIDENCE
) -> Interval:
    """mean(values) of one configuration with a bootstrap interval over tasks (for error bars)."""
    x = np.asarray(values, dtype=float)
    n = int(x.size)
    if n == 0:
        return Interval(None, None, None, 0)
    if n < 2:
        return Interval(float(x.mean()), None, None, n)
    low, high = _bounds(x[_indices(n, resamples, seed)].mean(axis=1), confidence)
    return Interval(float(x.mean()), low, high, n)


def ratio_interval(
    num: ArrayLike,
    den: ArrayLike,
    *,
    seed: int = 0,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
) -> Interval:
    """sum(num) / sum(den) of one configuration with a bootstrap interval over spans (for error bars)."""
    x, y = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    n = int(x.size)
    if n == 0 or y.sum() == 0:
        return Interval(None, None, None, n)
    estimate = float(x.sum() / y.sum())
    if n < 2:
        return Interval(estimate, None, None, n)
    idx = _indices(n, resamples, seed)
    low, high = _bounds(_ratio(x[idx].sum(axis=1), y[idx].sum(axis=1)), confidence)
    return Interval(estimate, low, high, n)


Call = Literal["better", "worse", "cannot tell yet"]


@dataclass(frozen=True)
class Decision:
    """The eval's verdict on one metric of one configuration against the baseline (B - A)."""

    metric: str
    call: Call
    interval: Interval
    unit: str  # what was resampled: "tasks" or "spans"
    needed: int | None  # about how many in all would resolve a difference of this size; None when resolved

    def describe(self) -> str:
        text = f"{self.call} ({format_interval(self.interval)}, {self.interval.n} {self.unit})"
        if self.call != "cannot tell yet":
            return text
        if self.needed is None:
            return text + "; no difference seen, so no count of tasks would resolve one"
        return text + f"; about {self.needed:,} {self.unit} would resolve a difference this size"


def decide(interval: Interval, metric: str, unit: str, *, higher_is_better: bool = True) -> Decision:
    """Better or worse when the interval excludes zero, else "cannot tell yet" with the number of units at
    which the interval's half-width would shrink to the observed difference (it shrinks as 1/sqrt(n))."""
    if interval.excludes_zero and interval.estimate is not None:
        up = interval.estimate > 0
        return Decision(metric, "better" if up == higher_is_better else "worse", interval, unit, None)
    needed = None
    if (
        interval.estimate
        and interval.low is not None
        and interval.high is not None
        and interval.n
        and interval.high > interval.low
    ):
        half = (interval.high - interval.low) / 2
        needed = max(interval.n + 1, math.ceil(interval.n * (half / abs(interval.estimate)) ** 2))
    return Decision(metric, "cannot tell yet", interval, unit, needed)
