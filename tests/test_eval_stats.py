"""The eval's decision per metric: better / worse / cannot tell yet, and how many units would resolve it."""

from __future__ import annotations

import numpy as np

from opportune.server.eval.stats import (
    Interval,
    decide,
    mean_interval,
    paired_mean_difference,
    ratio_interval,
)


def test_a_clear_paired_gain_is_better_and_a_clear_loss_worse() -> None:
    rng = np.random.default_rng(1)
    a = rng.binomial(1, 0.2, size=400)
    b = np.where(rng.random(400) < 0.3, 1, a)  # b gets right what a got right, and more
    gain = decide(paired_mean_difference(a, b), "exact match", "tasks")
    assert gain.call == "better" and gain.needed is None
    loss = decide(paired_mean_difference(b, a), "exact match", "tasks")
    assert loss.call == "worse"
    # Lower-is-better metrics flip the call.
    assert decide(paired_mean_difference(a, b), "latency", "tasks", higher_is_better=False).call == "worse"


def test_cannot_tell_yet_says_how_many_tasks_would_resolve_the_difference() -> None:
    rng = np.random.default_rng(3)
    a = rng.binomial(1, 0.30, size=60)
    b = np.where(rng.random(60) < 0.5, a, rng.binomial(1, 0.40, size=60))  # a small gain, noisy
    interval = paired_mean_difference(a, b)
    decision = decide(interval, "exact match", "tasks")
    assert decision.call == "cannot tell yet"
    assert decision.needed is not None and decision.needed > 60
    assert f"about {decision.needed:,} tasks would resolve" in decision.describe()
    # With twice that many tasks and a true difference of the size seen, it is resolved in most draws.
    assert interval.estimate is not None
    p_b = 0.30 + 2 * interval.estimate  # half the tasks redrawn at p_b: the mean difference is the estimate
    resolved = 0
    for seed in range(20):
        r = np.random.default_rng(100 + seed)
        n = decision.needed * 2  # twice the estimate: comfortably past the boundary
        a2 = r.binomial(1, 0.30, size=n)
        b2 = np.where(r.random(n) < 0.5, a2, r.binomial(1, p_b, size=n))
        resolved += (
            decide(paired_mean_difference(a2, b2, resamples=1000), "exact match", "tasks").call == "better"
        )
    assert resolved >= 12


def test_no_difference_seen_gives_no_count() -> None:
    decision = decide(Interval(0.0, -0.1, 0.1, 50), "CPO", "spans")
    assert decision.call == "cannot tell yet" and decision.needed is None
    assert "no difference seen" in decision.describe()


def test_error_bar_intervals_surround_their_estimates() -> None:
    rng = np.random.default_rng(3)
    values = rng.random(80)
    m = mean_interval(values)
    assert m.estimate is not None and m.low is not None and m.high is not None
    assert m.low < m.estimate < m.high
    num, den = rng.poisson(30, 50), rng.poisson(20, 50) + 1
    r = ratio_interval(num, den)
    assert r.estimate == num.sum() / den.sum()
    assert r.estimate is not None and r.low is not None and r.high is not None
    assert r.low < r.estimate < r.high
