"""Small-sample inference over installs: permutation tests, the intervals they invert to, bounded
per-arm intervals, and the size an experiment needs.

Why a permutation test.  Teams that run Opportune have 3 to 30 installs per arm, with very uneven
activity and acceptance between people.  The normal approximation of the delta method needs many
installs (at 4 per arm an A/A experiment claimed a difference in a quarter of runs).  Randomisation
inference needs no approximation: installs were assigned to arms at random, so under "the arm makes no
difference" every other assignment of the same installs was as likely as the one that happened, and the
p-value is the share of assignments whose statistic is at least as extreme as the observed one.  With
few installs every assignment is enumerated (exact); with many a few thousand are drawn at random, and
``(1 + hits) / (1 + draws)`` keeps the test valid.  At 3 installs per arm there are only 20 assignments,
so no p-value can go below 0.05: the analysis says so ("too few installs to tell") instead of guessing.

The statistic is the studentized difference of the two arms' ratios of means (the delta-method
standard error in the denominator).  Studentizing keeps the test valid, asymptotically, for "equal
ratios" even when the arms' spreads differ (Chung and Romano, 2013), while it stays exact for "no
effect at all".

Intervals are the set of multiplicative effects the test does not reject: under "treatment multiplies
each install's numerator by theta", dividing the treatment installs' numerators by theta makes the arms
exchangeable again, so each theta has an exact test, and the interval is where it does not reject at
alpha/2 on either side (test inversion).  The relative lift's interval is therefore never below -100%,
and can be unbounded above when the data cannot rule out large effects.

Why not ``scipy.stats.permutation_test``: inversion tests dozens of thetas on the same assignments, and
scipy draws and recomputes every assignment on each call.  Here the assignments are drawn once
(``Assignments``) and each sum the statistic needs is split into a control part and a treatment part,
so a new theta costs a few vector operations (``tests/test_inference.py`` checks the p-values against
scipy's).  Per-arm intervals (one arm's own CPO or rate) use Student's t on the log or logit scale, so
rates stay in [0, 1] and CPO stays >= 0.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats

RESAMPLES = 4_999  # random assignments when enumerating all of them would be too many
EXACT_LIMIT = 20_000  # enumerate every assignment up to this many (C(16, 8) = 12,870)
SEARCH_LIMIT = math.log(1e4)  # effects beyond x10,000 either way are "unbounded"
TOLERANCE = 1e-3  # on the log of the effect, for interval bounds (0.1%)

Bound = Literal["rate", "positive"]


@dataclass(frozen=True)
class Assignments:
    """Assignments of ``n_control + n_treatment`` installs to the two arms, the treatment arm as 1s.

    ``exact``: all ``C(n, n_treatment)`` assignments (the observed one among them); otherwise
    ``RESAMPLES`` random ones, the observed one not among them.
    """

    n_control: int
    n_treatment: int
    matrix: np.ndarray  # (assignments, installs) of 0.0/1.0; control installs first in the columns
    exact: bool

    @classmethod
    def draw(
        cls,
        n_control: int,
        n_treatment: int,
        *,
        resamples: int = RESAMPLES,
        exact_limit: int = EXACT_LIMIT,
        seed: int = 0,
    ) -> Assignments:
        """The assignments for these arm sizes; the same arguments give the same assignments (cached:
        drawing thousands of them costs more than a test, and they do not depend on the data)."""
        return _draw(n_control, n_treatment, resamples, exact_limit, seed)

    @classmethod
    def _make(
        cls, n_control: int, n_treatment: int, resamples: int, exact_limit: int, seed: int
    ) -> Assignments:
        n = n_control + n_treatment
        if math.comb(n, n_treatment) <= exact_limit:
            matrix = np.zeros((math.comb(n, n_treatment), n))
            for row, chosen in enumerate(itertools.combinations(range(n), n_treatment)):
                matrix[row, list(chosen)] = 1.0
            return cls(n_control, n_treatment, matrix, True)
        observed = np.r_[np.zeros(n_control), np.ones(n_treatment)]
        rng = np.random.default_rng(seed)
        matrix = rng.permuted(np.tile(observed, (resamples, 1)), axis=1)
        return cls(n_control, n_treatment, matrix, False)

    @property
    def count(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def smallest_p(self) -> float:
        """The smallest one-sided p-value these assignments can give."""
        return 1 / self.count if self.exact else 1 / (self.count + 1)


@functools.lru_cache(maxsize=16)
def _draw(n_control: int, n_treatment: int, resamples: int, exact_limit: int, seed: int) -> Assignments:
    assignments = Assignments._make(n_control, n_treatment, resamples, exact_limit, seed)
    assignments.matrix.setflags(write=False)  # shared between callers
    return assignments


def _delta_var(n: int, sx: Any, sy: Any, sxx: Any, sxy: Any, syy: Any) -> tuple[Any, Any]:
    """Ratio of sums and the delta-method variance of a ratio of means, from the sums over a group.

    Var(mean(x)/mean(y)) ~= (s_xx - 2 r s_xy + r^2 s_yy) / (n mean(y)^2), sample covariances (n - 1).
    Works elementwise on arrays (one entry per assignment).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        r = sx / sy
        mx, my = sx / n, sy / n
        cxx = (sxx - n * mx * mx) / (n - 1)
        cxy = (sxy - n * mx * my) / (n - 1)
        cyy = (syy - n * my * my) / (n - 1)
        var = (cxx - 2 * r * cxy + r * r * cyy) / (n * my * my)
    return r, np.maximum(var, 0.0)


@dataclass(frozen=True)
class RatioTest:
    """A ratio-of-means metric (sum of numerators / sum of denominators) of two arms, tested by permutation.

    Build with ``RatioTest.of``; ``p_values(theta)`` tests "treatment = theta x control".
    """

    assignments: Assignments
    # Sums over the treatment group of each assignment, split by where the install really was: the
    # numerator's control and treatment parts scale differently with theta.  Keys: x_c, x_t, y, xx_c,
    # xx_t, xy_c, xy_t, yy.  ``totals`` are the same over all installs; ``observed`` over the real
    # treatment arm.
    group: dict[str, np.ndarray]
    totals: dict[str, float]
    observed: dict[str, float]

    @classmethod
    def of(
        cls,
        num_control: np.ndarray,
        den_control: np.ndarray,
        num_treatment: np.ndarray,
        den_treatment: np.ndarray,
        assignments: Assignments,
    ) -> RatioTest:
        return cls.many({"": (num_control, den_control, num_treatment, den_treatment)}, assignments)[""]

    @classmethod
    def many(
        cls,
        metrics: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
        assignments: Assignments,
    ) -> dict[str, RatioTest]:
        """A test per metric, (numerators and denominators of control, then of treatment) each, over the
        same assignments: one matrix product for all of them (its cost barely grows with the columns)."""
        columns: dict[tuple[str, str], np.ndarray] = {}
        in_t = np.r_[np.zeros(assignments.n_control), np.ones(assignments.n_treatment)]
        for name, (num_c, den_c, num_t, den_t) in metrics.items():
            if (len(num_c), len(num_t)) != (assignments.n_control, assignments.n_treatment):
                raise ValueError("the assignments are for other arm sizes")
            x = np.r_[num_c, num_t].astype(float)
            y = np.r_[den_c, den_t].astype(float)
            x_c, x_t = x * (1 - in_t), x * in_t
            for key, value in (
                ("x_c", x_c),
                ("x_t", x_t),
                ("y", y),
                ("xx_c", x_c * x_c),
                ("xx_t", x_t * x_t),
                ("xy_c", x_c * y),
                ("xy_t", x_t * y),
                ("yy", y * y),
            ):
                columns[(name, key)] = value
        keys = list(columns)
        stacked = np.stack([columns[k] for k in keys], axis=1)  # (installs, 8 per metric)
        group = assignments.matrix @ stacked  # every assignment's sums in one product
        tests: dict[str, RatioTest] = {}
        for name in metrics:
            mine = [(i, key) for i, (metric, key) in enumerate(keys) if metric == name]
            tests[name] = cls(
                assignments,
                {key: group[:, i] for i, key in mine},
                {key: float(columns[(name, key)].sum()) for _, key in mine},
                {key: float((columns[(name, key)] * in_t).sum()) for _, key in mine},
            )
        return tests

    @property
    def n_control(self) -> int:
        return self.assignments.n_control

    @property
    def n_treatment(self) -> int:
        return self.assignments.n_treatment

    def _statistic(self, sums: dict[str, np.ndarray] | dict[str, float], theta: float) -> np.ndarray:
        """The studentized difference (treatment - control) with treatment numerators divided by theta."""
        inv, inv2 = 1 / theta, 1 / (theta * theta)

        def scaled(s: dict[str, np.ndarray] | dict[str, float]) -> tuple[np.ndarray, ...]:
            return (
                np.asarray(s["x_c"] + s["x_t"] * inv),
                np.asarray(s["y"]),
                np.asarray(s["xx_c"] + s["xx_t"] * inv2),
                np.asarray(s["xy_c"] + s["xy_t"] * inv),
                np.asarray(s["yy"]),
            )

        t_sums = scaled(sums)
        all_sums = scaled(self.totals)
        c_sums = tuple(a - b for a, b in zip(all_sums, t_sums, strict=True))
        r_t, v_t = _delta_var(self.n_treatment, *t_sums)
        r_c, v_c = _delta_var(self.n_control, *c_sums)
        with np.errstate(divide="ignore", invalid="ignore"):
            diff = r_t - r_c
            se = np.sqrt(v_t + v_c)
            t = np.where(se > 0, diff / se, np.sign(diff) * np.inf)
        # An assignment with an empty denominator in one arm has no ratio: it counts as not extreme.
        return np.asarray(np.where(np.isnan(t), 0.0, t), dtype=float)

    def p_values(self, theta: float = 1.0) -> tuple[float, float]:
        """One-sided p-values of "treatment = theta x control": (for greater, for less)."""
        observed = float(self._statistic(self.observed, theta))
        null = self._statistic(self.group, theta)
        # Ties count as extreme; a relative tolerance keeps mirrored assignments tied despite rounding.
        slack = 1e-9 * max(1.0, abs(observed)) if math.isfinite(observed) else 0.0
        greater = int(np.count_nonzero(null >= observed - slack))
        less = int(np.count_nonzero(null <= observed + slack))
        if self.assignments.exact:
            count = self.assignments.count
            return greater / count, less / count
        count = self.assignments.count + 1
        return (greater + 1) / count, (less + 1) / count

    def two_sided_p(self, theta: float = 1.0) -> float:
        greater, less = self.p_values(theta)
        return min(1.0, 2 * min(greater, less))

    def ratios(self) -> tuple[float | None, float | None]:
        """The observed control and treatment ratios (None where a denominator is zero)."""
        t = self.observed
        c = {k: self.totals[k] - t[k] for k in t}
        ratio_t = (t["x_t"]) / t["y"] if t["y"] else None
        ratio_c = (c["x_c"]) / c["y"] if c["y"] else None
        return ratio_c, ratio_t

    def log_se(self) -> float | None:
        """Delta-method standard error of log(treatment / control), for sizing; None if undefined."""
        t = self.observed
        c = {k: self.totals[k] - t[k] for k in t}
        r_t, v_t = _delta_var(self.n_treatment, t["x_t"], t["y"], t["xx_t"], t["xy_t"], t["yy"])
        r_c, v_c = _delta_var(self.n_control, c["x_c"], c["y"], c["xx_c"], c["xy_c"], c["yy"])
        if not (r_t > 0 and r_c > 0) or not (math.isfinite(v_t) and math.isfinite(v_c)):
            return None
        return math.sqrt(float(v_t) / float(r_t) ** 2 + float(v_c) / float(r_c) ** 2)

    def effect_bounds(self, alpha: float) -> tuple[float, float | None]:
        """The (1 - alpha) interval of theta = treatment / control, by test inversion.

        0.0 as the low end and None as the high end mean unbounded.  Needs both ratios positive.
        """
        ratio_c, ratio_t = self.ratios()
        if not ratio_c or not ratio_t:
            raise ValueError("the effect interval needs positive ratios in both arms")
        centre = math.log(ratio_t / ratio_c)
        step = max(4 * (self.log_se() or 0.1), 0.05)
        high = self._bound(centre, step, alpha / 2, lower=False)
        return self._bound(centre, -step, alpha / 2, lower=True), (None if math.isinf(high) else high)

    def _bound(self, centre: float, step: float, level: float, *, lower: bool) -> float:
        """Walk out from the estimate until the test rejects, then bisect the edge (on log theta)."""

        def rejects(log_theta: float) -> bool:
            greater, less = self.p_values(math.exp(log_theta))
            return (greater if lower else less) <= level

        inside, outside = centre, centre + step
        while not rejects(outside):
            inside = outside
            step *= 2
            outside = centre + step
            if abs(outside - centre) > SEARCH_LIMIT:
                return 0.0 if lower else math.inf
        while abs(outside - inside) > TOLERANCE:
            middle = (inside + outside) / 2
            if rejects(middle):
                outside = middle
            else:
                inside = middle
        return math.exp(inside)


LARGE_ARM = 500  # installs per arm from which ``large_sample_test`` is used


@dataclass(frozen=True)
class NormalRatioTest:
    """The same questions as ``RatioTest`` by the delta method's normal approximation on the log ratio.

    Only for large arms (``LARGE_ARM`` installs each and more): there the approximation is accurate (an
    A/A at 100 per arm was already near nominal), while a permutation matrix would grow to hundreds of
    megabytes.  Without a positive ratio in both arms, the p-values use the difference instead.
    """

    n_control: int
    n_treatment: int
    ratio_control: float | None
    ratio_treatment: float | None
    var_control: float
    var_treatment: float

    @classmethod
    def of(
        cls,
        num_control: np.ndarray,
        den_control: np.ndarray,
        num_treatment: np.ndarray,
        den_treatment: np.ndarray,
    ) -> NormalRatioTest:
        def one(x: np.ndarray, y: np.ndarray) -> tuple[float | None, float]:
            x, y = x.astype(float), y.astype(float)
            if not y.sum():
                return None, math.nan
            r, var = _delta_var(len(x), x.sum(), y.sum(), (x * x).sum(), (x * y).sum(), (y * y).sum())
            return float(r), float(var)

        rc, vc = one(num_control, den_control)
        rt, vt = one(num_treatment, den_treatment)
        return cls(len(num_control), len(num_treatment), rc, rt, vc, vt)

    @property
    def smallest_p(self) -> float:
        return 0.0

    def ratios(self) -> tuple[float | None, float | None]:
        return self.ratio_control, self.ratio_treatment

    def log_se(self) -> float | None:
        rc, rt = self.ratio_control, self.ratio_treatment
        if not rc or not rt or rc < 0 or rt < 0:
            return None
        return math.sqrt(self.var_treatment / rt**2 + self.var_control / rc**2)

    def p_values(self, theta: float = 1.0) -> tuple[float, float]:
        rc, rt = self.ratio_control, self.ratio_treatment
        if rc is None or rt is None:
            return 1.0, 1.0
        se_log = self.log_se()
        if se_log is not None:
            estimate, se = math.log(rt / theta) - math.log(rc), se_log
        else:
            estimate, se = rt / theta - rc, math.sqrt(self.var_treatment / theta**2 + self.var_control)
        if not se > 0:
            return (1.0, 0.0) if estimate < 0 else ((0.0, 1.0) if estimate > 0 else (1.0, 1.0))
        z = estimate / se
        return float(stats.norm.sf(z)), float(stats.norm.cdf(z))

    def two_sided_p(self, theta: float = 1.0) -> float:
        greater, less = self.p_values(theta)
        return min(1.0, 2 * min(greater, less))

    def effect_bounds(self, alpha: float) -> tuple[float, float | None]:
        rc, rt, se = self.ratio_control, self.ratio_treatment, self.log_se()
        if not rc or not rt or se is None:
            raise ValueError("the effect interval needs positive ratios in both arms")
        half = float(stats.norm.ppf(1 - alpha / 2)) * se
        return rt / rc * math.exp(-half), rt / rc * math.exp(half)


def large_sample_test(n_control: int, n_treatment: int) -> bool:
    return min(n_control, n_treatment) >= LARGE_ARM


# --- one arm -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmInterval:
    value: float | None
    se: float | None
    low: float | None
    high: float | None


def bounded_interval(num: np.ndarray, den: np.ndarray, alpha: float, bound: Bound) -> ArmInterval:
    """mean(num) / mean(den) over installs with a (1 - alpha) interval that respects its bounds.

    Student's t with n - 1 degrees of freedom on the logit (rates) or log (positive values) scale, the
    delta-method standard error carried over; at a bound itself (a rate of 0 or 1, a value of 0) the
    plain interval is clipped to the bounds.
    """
    n = len(num)
    total_den = float(np.sum(den)) if n else 0.0
    if n == 0 or total_den == 0:
        return ArmInterval(None, None, None, None)
    r = float(np.sum(num)) / total_den
    if n < 2:
        return ArmInterval(r, None, None, None)
    _, var = _delta_var(
        n,
        float(np.sum(num)),
        total_den,
        float(np.sum(np.square(num, dtype=float))),
        float(np.sum(np.multiply(num, den, dtype=float))),
        float(np.sum(np.square(den, dtype=float))),
    )
    se = math.sqrt(float(var))
    q = float(stats.t.ppf(1 - alpha / 2, n - 1))
    high_bound = 1.0 if bound == "rate" else math.inf
    if bound == "rate" and 0 < r < 1 and se > 0:
        logit = math.log(r / (1 - r))
        half = q * se / (r * (1 - r))
        return ArmInterval(r, se, _expit(logit - half), _expit(logit + half))
    if bound == "positive" and r > 0 and se > 0:
        half = q * se / r
        return ArmInterval(r, se, r * math.exp(-half), r * math.exp(half))
    return ArmInterval(r, se, max(0.0, r - q * se), min(high_bound, r + q * se))


def _expit(value: float) -> float:
    return 1 / (1 + math.exp(-value))


# --- sizing --------------------------------------------------------------------------------------------


def smallest_arm_size(alpha: float) -> int:
    """The fewest installs per arm (equal arms) at which an exact two-sided test can reject at alpha."""
    n = 1
    while 1 / math.comb(2 * n, n) > alpha / 2:
        n += 1
    return n


@dataclass(frozen=True)
class Sizing:
    """What the experiment can see at its size, and what it would need for the effect the team cares about."""

    detectable_lift: float | None  # relative CPO lift found with ``power`` at this size (None: none can)
    target_lift: float
    installs_per_arm_needed: int | None  # for ``target_lift`` with ``power``; None when unknown
    installs_per_arm: float  # now (the mean of the two arms)
    power: float


def sizing(test: RatioTest | NormalRatioTest, alpha: float, target_lift: float, power: float = 0.8) -> Sizing:
    """Minimum detectable lift now, and installs per arm for ``target_lift``, from the observed spread.

    A normal approximation on the log ratio (its standard error shrinks as 1/sqrt(installs)): a
    planning figure, not a test; floored at the size where an exact test can reject at all.
    """
    n_now = (test.n_control + test.n_treatment) / 2
    se = test.log_se()
    floor = smallest_arm_size(alpha)
    if se is None or se <= 0:
        return Sizing(None, target_lift, None, n_now, power)
    z = float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))
    smallest = test.assignments.smallest_p if isinstance(test, RatioTest) else test.smallest_p
    detectable = math.exp(z * se) - 1 if smallest <= alpha / 2 else None
    needed = math.ceil(n_now * (z * se / math.log1p(target_lift)) ** 2)
    return Sizing(detectable, target_lift, max(needed, floor), n_now, power)
