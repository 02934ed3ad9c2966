"""Permutation tests over installs, their inverted intervals, bounded per-arm intervals and sizing."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy import stats

from opportune.telemetry.inference import (
    Assignments,
    RatioTest,
    bounded_interval,
    sizing,
    smallest_arm_size,
)


def installs(rng: np.random.Generator, n: int, cpo: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Very uneven activity and a spread of per-install CPO, as real teams have."""
    opportunities = rng.poisson(rng.gamma(0.5, 400, size=n)) + 1
    chars = rng.poisson(opportunities * cpo * rng.gamma(2.0, 0.5, size=n))
    return chars.astype(float), opportunities.astype(float)


def scipy_statistic(x: np.ndarray, y: np.ndarray, n_control: int) -> Any:
    """The same studentized statistic, for scipy.stats.permutation_test over install indices."""

    def group(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = idx.shape[-1]
        xs, ys = x[idx], y[idx]
        r = xs.sum(-1) / ys.sum(-1)
        mx, my = xs.mean(-1), ys.mean(-1)
        cxx = ((xs - mx[..., None]) ** 2).sum(-1) / (n - 1)
        cyy = ((ys - my[..., None]) ** 2).sum(-1) / (n - 1)
        cxy = ((xs - mx[..., None]) * (ys - my[..., None])).sum(-1) / (n - 1)
        return r, (cxx - 2 * r * cxy + r * r * cyy) / (n * my * my)

    def statistic(ic: np.ndarray, it: np.ndarray, axis: int = -1) -> np.ndarray:
        (rc, vc), (rt, vt) = group(ic.astype(int)), group(it.astype(int))
        return (rt - rc) / np.sqrt(vc + vt)

    return statistic


@pytest.mark.parametrize(("n_control", "n_treatment"), [(3, 3), (4, 6), (7, 7)])
def test_exact_p_values_equal_scipys_permutation_test(n_control: int, n_treatment: int) -> None:
    rng = np.random.default_rng(n_control * 10 + n_treatment)
    xc, yc = installs(rng, n_control)
    xt, yt = installs(rng, n_treatment, cpo=2.6)
    assignments = Assignments.draw(n_control, n_treatment)
    assert assignments.exact and assignments.count == math.comb(n_control + n_treatment, n_treatment)
    test = RatioTest.of(xc, yc, xt, yt, assignments)
    greater, less = test.p_values(1.0)
    statistic = scipy_statistic(np.r_[xc, xt], np.r_[yc, yt], n_control)
    samples = (np.arange(n_control), np.arange(n_control, n_control + n_treatment))
    for alternative, ours in (("greater", greater), ("less", less)):
        theirs = stats.permutation_test(
            samples,
            statistic,
            permutation_type="independent",
            vectorized=True,
            n_resamples=100_000,
            alternative=alternative,
        ).pvalue
        assert ours == pytest.approx(theirs, abs=1e-12), alternative


def test_random_assignments_approximate_the_exact_p_value() -> None:
    rng = np.random.default_rng(2)
    xc, yc = installs(rng, 8)
    xt, yt = installs(rng, 8, cpo=2.5)
    exact = RatioTest.of(xc, yc, xt, yt, Assignments.draw(8, 8)).two_sided_p()
    sampled = RatioTest.of(xc, yc, xt, yt, Assignments.draw(8, 8, exact_limit=0)).two_sided_p()
    assert Assignments.draw(8, 8, exact_limit=0).count == 4_999
    assert sampled == pytest.approx(exact, abs=0.03)


def test_three_installs_per_arm_can_never_be_significant_and_say_so() -> None:
    rng = np.random.default_rng(3)
    xc, yc = installs(rng, 3, cpo=1.0)
    xt, yt = installs(rng, 3, cpo=9.0)  # an enormous difference
    test = RatioTest.of(xc, yc, xt, yt, Assignments.draw(3, 3))
    assert test.assignments.smallest_p == pytest.approx(1 / 20)
    assert test.two_sided_p() >= 0.1
    assert test.effect_bounds(0.05) == (0.0, None)  # the interval is unbounded on both sides
    assert smallest_arm_size(0.05) == 4
    assert sizing(test, 0.05, 0.10).detectable_lift is None


def test_inverted_interval_holds_the_estimate_and_excludes_one_exactly_when_significant() -> None:
    rng = np.random.default_rng(4)
    seen = set()
    for lift in (1.0, 1.3, 1.8, 2.5):
        xc, yc = installs(rng, 12)
        xt, yt = installs(rng, 12, cpo=2.0 * lift)
        test = RatioTest.of(xc, yc, xt, yt, Assignments.draw(12, 12))
        ratio_c, ratio_t = test.ratios()
        assert ratio_c and ratio_t
        low, high = test.effect_bounds(0.05)
        assert high is not None and 0 < low <= ratio_t / ratio_c <= high
        significant = test.two_sided_p() <= 0.05
        assert significant == (low > 1 or high < 1)
        seen.add(significant)
    assert seen == {True, False}  # both cases were exercised


def test_effect_interval_covers_the_true_multiplier() -> None:
    """Treatment installs are control-like installs whose characters are multiplied by 1.5."""
    rng = np.random.default_rng(5)
    covered, runs = 0, 40
    for _ in range(runs):
        xc, yc = installs(rng, 6)
        xt, yt = installs(rng, 6)
        test = RatioTest.of(xc, yc, xt * 1.5, yt, Assignments.draw(6, 6))
        low, high = test.effect_bounds(0.05)
        covered += low <= 1.5 <= (high if high is not None else math.inf)
    assert covered >= 34  # 95% intervals: 38 expected; 34 is 2.9 binomial sd below


def test_per_arm_intervals_stay_inside_their_bounds() -> None:
    rng = np.random.default_rng(6)
    for _ in range(50):
        n = int(rng.integers(2, 6))
        shown = rng.integers(1, 40, size=n).astype(float)
        accepted = rng.binomial(shown.astype(int), rng.choice([0.01, 0.5, 0.99])).astype(float)
        rate = bounded_interval(accepted, shown, 0.05, "rate")
        assert rate.low is not None and rate.high is not None
        assert 0.0 <= rate.low <= rate.value <= rate.high <= 1.0  # type: ignore[operator]
        chars = rng.poisson(rng.gamma(0.3, 10, size=n)).astype(float)
        cpo = bounded_interval(chars, shown, 0.05, "positive")
        assert cpo.low is not None and 0.0 <= cpo.low <= cpo.value  # type: ignore[operator]


def test_sizing_needs_more_installs_for_smaller_lifts() -> None:
    rng = np.random.default_rng(7)
    xc, yc = installs(rng, 20)
    xt, yt = installs(rng, 20)
    test = RatioTest.of(xc, yc, xt, yt, Assignments.draw(20, 20))
    small, large = sizing(test, 0.05, 0.05), sizing(test, 0.05, 0.50)
    assert small.installs_per_arm_needed and large.installs_per_arm_needed
    assert small.installs_per_arm_needed > large.installs_per_arm_needed >= smallest_arm_size(0.05)
    assert small.detectable_lift is not None and small.detectable_lift > 0
