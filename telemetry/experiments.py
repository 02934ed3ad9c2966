"""Experiments: the per-arm analysis of CPO.

Assignment (``assign_arm``, ``settings_digest``) lives in ``opportune.telemetry.assignment``, which the
language server imports at start without this module's pandas and scipy.

Analysis (``analyse``).  The randomisation unit is the install: each install's numerator and
denominator are summed, and a metric is the ratio of the means over the installs of an arm.  Events are
never treated as independent (keystrokes of one person are correlated).  CPO is computed directly as
accepted_chars / opportunities per unit, never by multiplying the factors.  Teams are small (3 to 30
installs per arm, very uneven between people), so the comparisons with control are permutation tests
over installs -- exact for any number of installs -- and their intervals are the inverted tests
(``opportune.telemetry.inference`` says why); an arm's own interval uses Student's t on the log or logit
scale, so rates stay in [0, 1] and CPO >= 0.  With more than two arms each metric's p-values are
Holm-corrected across the comparisons with control.  The sample-ratio-mismatch (SRM) check is a
chi-square test of the units per arm against the declared weights; p < 0.001 makes every verdict
"invalid".

Peeking.  With a ``PeekingPlan`` (what ``report`` and the dashboard use) the analysis is always-valid:
look ``k`` is the k-th day with data and is tested at its own share of alpha, the shares summing to
alpha, so a team that looks every day keeps its chance of any false verdict under alpha.  Without one,
the results are fixed-horizon: valid for a single look.

Guardrails (latency p50 and p95 per install, error rate) are decided by tests against their margins,
never by point estimates: "breached" when significantly beyond the margin, "within margin" when
significantly inside it, otherwise "not yet shown within margin".

Verdicts per treatment arm: "ship" (CPO significantly higher, no guardrail breached; one not yet shown
within its margin is listed as a caution), "harm" (CPO significantly lower, or a guardrail breached),
"no difference yet" (nothing significant, and the experiment is big enough to see the target lift), "too few installs to tell" (nothing significant, and it is not: the
arm's ``sizing`` says what it can see and the installs the target lift needs); "control" for control.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from opportune.telemetry.assignment import validate_arms
from opportune.telemetry.cpo import (
    COUNT_COLUMNS,
    FOLLOW_UP,
    METRICS,
    Funnel,
    funnel_counts,
    returned_latencies,
)
from opportune.telemetry.frames import EventFrames, json_safe
from opportune.telemetry.inference import (
    RESAMPLES,
    Assignments,
    Bound,
    NormalRatioTest,
    RatioTest,
    Sizing,
    bounded_interval,
    large_sample_test,
    sizing,
)
from opportune.telemetry.numbers import percentile

AnyRatioTest = RatioTest | NormalRatioTest

SRM_ALPHA = 0.001


class AnalysisError(ValueError):
    """The analysis cannot run on these events (no such experiment, unknown control arm...)."""


# --- settings ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Guardrails:
    """Limits a treatment arm must respect whatever its CPO, each decided by a test against its margin."""

    latency_p50_max_increase: float = 0.20  # relative to control's (mean over installs of each one's p50)
    latency_p95_max_increase: float = 0.20  # likewise for p95
    latency_p95_max_ms: float | None = None  # absolute ceiling on the treatment's p95, if any
    error_rate_max_increase: float = 0.005  # absolute increase of errors per attempt
    min_latency_samples: int = 20  # fewer returned suggestions in an arm: no pooled p50/p95 shown
    min_install_latencies: int = 5  # fewer in an install: it has no latency quantiles of its own
    # Persistence (share of accepted characters still there at the last checkpoint): breached when the
    # treatment's is significantly lower than control's by more than this (absolute) margin: a treatment
    # that raises CPO with code people then delete is not shipped.
    persistence_max_decrease: float = 0.02


@dataclass(frozen=True)
class PeekingPlan:
    """How alpha is spent over daily looks, so that looking every day keeps the risk of any false verdict
    at most alpha (a union bound: each look's permutation test is exact, and the looks' alphas sum to alpha).

    A look is a day with data: the analysis of look ``k`` uses the events of the first ``k`` UTC days on
    which the experiment had opportunities, up to the start of today, so any number of visits in one day
    see the same result.  The planned last day (``horizon_days``) gets ``final_share`` of alpha, the days
    before it ``interim_share`` evenly, and the days after it the rest, shrinking as 1/j^2.  Interim looks
    are strict (only large effects stop an experiment early); the planned end is nearly as strong as a
    single look.
    """

    horizon_days: int = 30
    final_share: float = 0.5
    interim_share: float = 0.4

    def alpha_at(self, day: int, alpha: float) -> float:
        if day < 1:
            raise ValueError("looks are numbered from day 1")
        if day < self.horizon_days:
            return alpha * self.interim_share / max(1, self.horizon_days - 1)
        if day == self.horizon_days:
            return alpha * self.final_share
        late = 1.0 - self.final_share - self.interim_share
        return alpha * late * 6 / (math.pi**2 * (day - self.horizon_days) ** 2)


# --- results -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """A ratio-of-means metric over units: value, delta-method standard error, and an interval."""

    value: float | None
    se: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None


@dataclass(frozen=True)
class Comparison:
    """A treatment arm's metric against control, by a permutation test over installs and its inversion.

    ``relative_ci_high`` is None with ``unbounded_high`` when the data cannot rule out any large lift;
    ``relative_ci_low`` is never below -1 (-100%).  The difference's interval is control's value times
    the relative one.
    """

    difference: float | None = None
    difference_ci_low: float | None = None
    difference_ci_high: float | None = None
    relative: float | None = None  # treatment / control - 1
    relative_ci_low: float | None = None
    relative_ci_high: float | None = None
    unbounded_high: bool = False
    p_value: float | None = None  # two-sided, of the permutation test of "no difference"
    p_adjusted: float | None = None  # Holm-corrected when there are several treatment arms
    significant: bool = False  # p_adjusted <= the look's alpha
    assignments: int = 0  # assignments of installs the p-value was computed over
    exact: bool = False  # every assignment enumerated
    method: str = ""  # how p and the interval were computed, in words


GuardrailStatus = Literal["within margin", "breached", "not yet shown within margin", "no data"]


@dataclass(frozen=True)
class GuardrailCheck:
    """One guardrail of one treatment arm: the change with its interval, and what the tests say."""

    name: str  # "latency p50", "latency p95", "latency p95 ceiling", "error rate"
    control: float | None
    treatment: float | None
    change: float | None  # relative for latency, absolute for the error rate, the value for a ceiling
    change_low: float | None
    change_high: float | None
    margin: float
    status: GuardrailStatus

    def describe(self) -> str:
        if self.name == "persistence":
            points = f"{self.margin * 100:.0f} points"
            if self.status == "breached":
                return (
                    f"persistence down significantly more than {points}: accepted code is deleted more often"
                )
            if self.status == "within margin":
                return f"persistence: not down more than {points}"
            return f"persistence: {self.status}"
        relative = self.name.startswith("latency p") and "ceiling" not in self.name
        limit = (
            f"+{self.margin:.0%}"
            if relative
            else (f"{self.margin:.0f} ms" if "ceiling" in self.name else f"+{self.margin:.2%}")
        )
        if self.status == "breached":
            return f"{self.name}: significantly beyond {limit}"
        if self.status == "not yet shown within margin":
            return f"{self.name}: not yet shown within {limit}"
        if self.status == "no data":
            return f"{self.name}: no data"
        return f"{self.name}: within {limit}"


Verdict = Literal[
    "control",
    "ship",
    "harm",
    "no difference yet",
    "too few installs to tell",
    "invalid: sample ratio mismatch",
]
# Verdicts that claim the arms differ (what an A/A experiment must rarely say).
CLAIMS: frozenset[str] = frozenset({"ship", "harm"})


@dataclass(frozen=True)
class SrmCheck:
    """Sample-ratio mismatch: are the units per arm what the weights promise?"""

    units: dict[str, int]
    expected_share: dict[str, float]
    chi2: float | None
    p_value: float | None
    alarm: bool
    threshold: float = SRM_ALPHA


@dataclass(frozen=True)
class ArmResult:
    arm: str
    units: int
    funnel: Funnel  # summed over the arm's units
    metrics: dict[str, Estimate]  # the five factors and "cpo", each with a bounded 95% interval
    comparisons: dict[str, Comparison]  # same keys, against control; empty for the control arm
    log_lift: dict[str, float | None]  # log(metric / control's); the five factors sum to "cpo"
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    error_rate: Estimate  # responses with loss_reason "error" / attempts
    error_rate_comparison: Comparison | None
    guardrail_breaches: list[str]
    verdict: Verdict
    guardrails: list[GuardrailCheck] = field(default_factory=list)
    sizing: Sizing | None = None  # what this size can detect, and the installs the target lift needs
    # Keystrokes saved per opportunity and persistence, with bounded intervals like the metrics.
    follow_up: dict[str, Estimate] = field(default_factory=dict)


@dataclass(frozen=True)
class ExperimentAnalysis:
    experiment: str
    control: str
    alpha: float
    correction: str | None  # "holm" with more than two arms
    srm: SrmCheck
    arms: list[ArmResult]
    warnings: list[str] = field(default_factory=list)
    interval_kind: str = "fixed-horizon"  # or "always-valid"
    look_day: int | None = None  # always-valid: the look (days with data so far)
    alpha_look: float = 0.05  # the alpha this look's comparisons and verdicts use
    horizon_days: int | None = None
    target_lift: float = 0.10

    def arm(self, name: str) -> ArmResult:
        for result in self.arms:
            if result.arm == name:
                return result
        raise KeyError(name)

    def describe_intervals(self) -> str:
        """Which kind of interval the comparisons are, in one sentence for people."""
        if self.interval_kind == "always-valid":
            return (
                f"always-valid: look on day {self.look_day} of a {self.horizon_days}-day plan, tested at "
                f"alpha {self.alpha_look:.2g} so that looking every day keeps false verdicts under "
                f"{self.alpha:.0%}; permutation tests over installs, intervals by test inversion"
            )
        return (
            f"fixed-horizon {1 - self.alpha:.0%}: valid for one look at the planned end, not for daily "
            "peeking; permutation tests over installs, intervals by test inversion"
        )

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)


# --- statistics ----------------------------------------------------------------------------------------


def ratio_of_means(numerators: np.ndarray, denominators: np.ndarray, z: float) -> Estimate:
    """mean(numerators) / mean(denominators) over units, with a delta-method (normal) interval.

    Descriptive (the dashboard's per-day cells); the experiment's per-arm estimates use
    ``bounded_estimate`` and its comparisons permutation tests.
    """
    n = numerators.size
    mean_den = float(denominators.mean()) if n else 0.0
    if n == 0 or mean_den == 0:
        return Estimate(None)
    r = float(numerators.mean()) / mean_den
    if n < 2:
        return Estimate(r)
    # The delta method for a ratio of means, written out (5 lines; neither scipy nor statsmodels
    # exposes it for per-unit sums):  Var(mean(x) / mean(y)) ~= (s_xx - 2 r s_xy + r^2 s_yy) / (n mean(y)^2)
    cov = np.cov(numerators.astype(float), denominators.astype(float), ddof=1)
    var = (cov[0, 0] - 2 * r * cov[0, 1] + r * r * cov[1, 1]) / (n * mean_den**2)
    se = math.sqrt(max(float(var), 0.0))
    return Estimate(r, se, r - z * se, r + z * se)


def bounded_estimate(
    numerators: np.ndarray, denominators: np.ndarray, alpha: float, bound: Bound
) -> Estimate:
    """The ratio of means with a small-sample interval inside its bounds (see ``bounded_interval``)."""
    i = bounded_interval(numerators, denominators, alpha, bound)
    return Estimate(i.value, i.se, i.low, i.high)


def metric_bound(name: str) -> Bound:
    """Rates live in [0, 1]; counts per thing (tokens per accept, CPO) are only >= 0."""
    return "rate" if name.endswith("_rate") else "positive"


def method_of(test: AnyRatioTest) -> str:
    if isinstance(test, NormalRatioTest):
        return "normal approximation (delta method on the log ratio; large arms)"
    a = test.assignments
    if a.exact:
        return f"exact permutation test over all {a.count:,} assignments of installs"
    return f"permutation test over {a.count:,} random assignments of installs"


def permutation_comparison(test: AnyRatioTest, alpha: float, *, intervals: bool = True) -> Comparison:
    """The comparison of one metric: the p-value of "no difference" and, with ``intervals``, the
    relative lift's interval by inverting the test at ``alpha``."""
    ratio_c, ratio_t = test.ratios()
    if ratio_c is None or ratio_t is None:
        return Comparison()
    p = test.two_sided_p(1.0)
    exact = isinstance(test, RatioTest) and test.assignments.exact
    common = {
        "difference": ratio_t - ratio_c,
        "p_value": p,
        "p_adjusted": p,
        "assignments": test.assignments.count if isinstance(test, RatioTest) else 0,
        "exact": exact,
        "method": method_of(test),
    }
    if ratio_c <= 0:
        return Comparison(**common)  # type: ignore[arg-type]
    relative = ratio_t / ratio_c - 1
    if not intervals or ratio_t <= 0:
        return Comparison(relative=relative, **common)  # type: ignore[arg-type]
    low, high = test.effect_bounds(alpha)
    return Comparison(
        difference_ci_low=ratio_c * (low - 1),
        difference_ci_high=None if high is None else ratio_c * (high - 1),
        relative=relative,
        relative_ci_low=low - 1,
        relative_ci_high=None if high is None else high - 1,
        unbounded_high=high is None,
        **common,  # type: ignore[arg-type]
    )


def srm_check(units: Mapping[str, int], weights: Mapping[str, float]) -> SrmCheck:
    """Chi-square goodness of fit of units per arm against the weights' shares."""
    from scipy import stats

    total_weight = sum(weights.values())
    shares = {arm: w / total_weight for arm, w in weights.items()}
    observed = [units.get(arm, 0) for arm in weights]
    n = sum(observed)
    if len(weights) < 2 or n == 0:
        return SrmCheck(dict(units), shares, None, None, False)
    expected = [shares[arm] * n for arm in weights]
    chi2, p = stats.chisquare(observed, expected)
    return SrmCheck(dict(units), shares, float(chi2), float(p), bool(p < SRM_ALPHA))


# --- analysis ------------------------------------------------------------------------------------------

LATENCY_COLUMNS: dict[str, float] = {"latency_p50_ms": 50.0, "latency_p95_ms": 95.0}


def unit_table(frames: EventFrames, experiment: str, *, min_latencies: int = 5) -> pd.DataFrame:
    """Funnel counts per (arm, install_id) of one experiment -- the randomisation units -- with each
    install's latency p50 and p95 (NaN when it returned fewer than ``min_latencies`` suggestions)."""
    selected = frames.filter(experiment=experiment)
    units = funnel_counts(selected, by=["arm", "install_id"])
    returned = selected.responses[selected.responses["loss_reason"].isna()]
    returned = returned.dropna(subset=["latency_total_ms"])
    if units.empty or returned.empty:
        return units.assign(latency_p50_ms=np.nan, latency_p95_ms=np.nan)
    grouped = returned.groupby(["arm", "install_id"])["latency_total_ms"]
    latency = grouped.quantile([0.5, 0.95]).unstack()
    latency.columns = ["latency_p50_ms", "latency_p95_ms"]
    latency.loc[grouped.size() < min_latencies] = np.nan
    latency = latency.reset_index()
    latency["arm"] = latency["arm"].astype(units["arm"].dtype)
    latency["install_id"] = latency["install_id"].astype(units["install_id"].dtype)
    return units.merge(latency, on=["arm", "install_id"], how="left")


def look_of(frames: EventFrames, now: float | None = None) -> tuple[float, int]:
    """(cutoff, look) for an always-valid analysis: events before the start of today (UTC), and the
    number of UTC days with opportunities before it."""
    now = time.time() if now is None else now
    cutoff = math.floor(now / 86400) * 86400.0
    ts = frames.opportunities["ts"].to_numpy(dtype=float)
    days = np.unique(np.floor(ts[ts < cutoff] / 86400))
    return cutoff, int(days.size)


def analyse(
    frames: EventFrames,
    experiment: str,
    control: str | None = None,
    *,
    weights: Mapping[str, float] | None = None,
    guardrails: Guardrails | None = None,
    alpha: float = 0.05,
    peeking: PeekingPlan | None = None,
    now: float | None = None,
    target_lift: float = 0.10,
    intervals: bool | Sequence[str] = True,
) -> ExperimentAnalysis:
    """The per-arm analysis of ``experiment`` over loaded events (see the module docstring).

    ``control`` defaults to the first declared arm, else an arm named "control", else the first arm
    by name.  ``weights`` are the declared arm weights for the SRM check (equal when omitted).  With
    ``peeking`` the analysis is always-valid: it uses the events before today (``now``) and that look's
    share of alpha; before the first full day it falls back to fixed-horizon, with a warning.
    ``intervals`` as for ``analyse_units``.
    """
    guardrails = guardrails or Guardrails()
    selected = frames.filter(experiment=experiment)
    look_day: int | None = None
    note: list[str] = []
    if peeking is not None:
        cutoff, day = look_of(selected, now)
        if day >= 1:
            selected, look_day = selected.filter(until=cutoff), day
        else:
            note.append(
                "no full day of data yet: these are fixed-horizon results, not safe for daily peeking "
                "(the always-valid view starts tomorrow)"
            )
    units = unit_table(selected, experiment, min_latencies=guardrails.min_install_latencies)
    responses = selected.responses
    latencies = {str(arm): returned_latencies(group).to_numpy() for arm, group in responses.groupby("arm")}
    analysis = analyse_units(
        units,
        experiment,
        control,
        weights=weights,
        latencies_ms=latencies,
        guardrails=guardrails,
        alpha=alpha,
        peeking=peeking if look_day is not None else None,
        look_day=look_day,
        target_lift=target_lift,
        intervals=intervals,
    )
    return replace(analysis, warnings=[*analysis.warnings, *note]) if note else analysis


def _arm_order(observed: Sequence[str], weights: Mapping[str, float] | None, control: str) -> list[str]:
    declared = list(weights) if weights else []
    rest = sorted(a for a in observed if a not in declared)
    order = declared + rest
    order.remove(control)
    return [control, *order]


def _default_control(observed: Sequence[str], weights: Mapping[str, float] | None) -> str:
    if weights:
        return next(iter(weights))
    if "control" in observed:
        return "control"
    return sorted(observed)[0]


def analyse_units(
    units: pd.DataFrame,
    experiment: str,
    control: str | None = None,
    *,
    weights: Mapping[str, float] | None = None,
    latencies_ms: Mapping[str, Sequence[float] | np.ndarray] | None = None,
    guardrails: Guardrails | None = None,
    alpha: float = 0.05,
    peeking: PeekingPlan | None = None,
    look_day: int | None = None,
    target_lift: float = 0.10,
    intervals: bool | Sequence[str] = True,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> ExperimentAnalysis:
    """The analysis from a unit table: one row per install with ``arm``, ``install_id``, the
    ``COUNT_COLUMNS`` and optionally ``latency_p50_ms`` / ``latency_p95_ms`` (that install's quantiles).

    ``analyse`` builds that table from events; simulations call this directly.  ``latencies_ms``
    holds the returned suggestions' latencies per arm, for the pooled p50/p95 shown.  With ``peeking``
    and ``look_day`` the comparisons and verdicts use that look's alpha (always-valid); otherwise
    ``alpha`` (fixed-horizon).  ``intervals=False`` skips inverting the tests (the p-values and
    verdicts stay), and a list of metric names inverts only theirs: for simulations.  ``target_lift`` is the CPO lift the team cares about, for the
    "too few installs to tell" state and the installs it would need.
    """
    guardrails = guardrails or Guardrails()
    latencies_ms = latencies_ms or {}
    warnings: list[str] = []
    if units.empty:
        raise AnalysisError(f"no events for experiment {experiment!r}")
    units = units.assign(arm=units["arm"].astype(str), install_id=units["install_id"].astype(str))
    observed = sorted(units["arm"].unique())
    if weights is not None:
        validate_arms(list(weights.items()))
    control = control if control is not None else _default_control(observed, weights)
    if control not in observed:
        raise AnalysisError(
            f"control arm {control!r} has no events in experiment {experiment!r}"
            f" (arms: {', '.join(observed)})"
        )
    shared = units.groupby("install_id")["arm"].nunique()
    if (shared > 1).any():
        warnings.append(
            f"{int((shared > 1).sum())} installs appear in more than one arm (weights or arms changed "
            "during the experiment?); each (install, arm) pair is counted as a unit"
        )
    arm_order = _arm_order(observed, weights, control)
    always_valid = peeking is not None and look_day is not None
    alpha_look = peeking.alpha_at(look_day, alpha) if peeking is not None and look_day is not None else alpha
    # Sizing is for deciding by the planned end: the alpha of the last planned look.
    alpha_plan = peeking.alpha_at(peeking.horizon_days, alpha) if peeking is not None else alpha

    unit_counts = {arm: int((units["arm"] == arm).sum()) for arm in arm_order}
    srm_weights = dict(weights) if weights else dict.fromkeys(observed, 1.0)
    undeclared = [arm for arm in observed if arm not in srm_weights]
    if undeclared:
        warnings.append(
            f"arms not in the declared weights, left out of the SRM check: {', '.join(undeclared)}"
        )
    srm = srm_check({a: unit_counts.get(a, 0) for a in srm_weights}, srm_weights)
    if srm.alarm:
        warnings.append(
            f"sample ratio mismatch (chi-square p = {srm.p_value:.2g} < {SRM_ALPHA}): assignment or "
            "logging is broken; do not trust the comparisons"
        )

    per_arm: dict[str, pd.DataFrame] = {arm: units[units["arm"] == arm] for arm in arm_order}
    # Columns as numpy arrays once: pandas' per-access cost dominated small simulated experiments.
    counts = list(COUNT_COLUMNS)
    arrays = {
        arm: dict(zip(counts, table[counts].to_numpy(dtype=float).T, strict=True))
        for arm, table in per_arm.items()
    }
    estimates: dict[str, dict[str, Estimate]] = {}
    errors: dict[str, Estimate] = {}
    for arm in per_arm:
        estimates[arm] = {
            name: bounded_estimate(arrays[arm][num], arrays[arm][den], alpha, metric_bound(name))
            for name, (num, den) in METRICS.items()
        }
        errors[arm] = bounded_estimate(arrays[arm]["errors"], arrays[arm]["attempts"], alpha, "rate")
    follow_up = {
        arm: {
            name: bounded_estimate(
                arrays[arm][num], arrays[arm][den], alpha, "rate" if name == "persistence" else "positive"
            )
            for name, (num, den) in FOLLOW_UP.items()
            if arrays[arm][den].sum() > 0
        }
        for arm in per_arm
    }

    treatments = [arm for arm in arm_order if arm != control]
    tests: dict[str, dict[str, AnyRatioTest]] = {}
    for i, arm in enumerate(treatments):
        c, t = arrays[control], arrays[arm]
        if unit_counts[control] < 2 or unit_counts[arm] < 2:
            tests[arm] = {}
            continue
        tested = {**METRICS, "error_rate": ("errors", "attempts")}
        if c["measured_chars"].sum() > 0 and t["measured_chars"].sum() > 0:
            tested["persistence"] = FOLLOW_UP["persistence"]
        pairs = {name: (c[num], c[den], t[num], t[den]) for name, (num, den) in tested.items()}
        if large_sample_test(unit_counts[control], unit_counts[arm]):
            tests[arm] = {name: NormalRatioTest.of(*pair) for name, pair in pairs.items()}
            continue
        assignments = Assignments.draw(
            unit_counts[control], unit_counts[arm], resamples=resamples, seed=seed + i
        )
        tests[arm] = dict(RatioTest.many(pairs, assignments))
    comparisons: dict[str, dict[str, Comparison]] = {
        arm: {
            name: permutation_comparison(tests[arm][name], alpha_look, intervals=_wants(intervals, name))
            if tests[arm]
            else Comparison()
            for name in METRICS
        }
        for arm in treatments
    }
    correction = "holm" if len(treatments) > 1 else None
    if correction:
        comparisons = _holm(comparisons, treatments)
    comparisons = {
        arm: {name: _with_significance(c, alpha_look) for name, c in by_metric.items()}
        for arm, by_metric in comparisons.items()
    }
    if any(not tests[arm] for arm in treatments) or len(per_arm[control]) < 2:
        warnings.append("an arm with fewer than 2 installs cannot be compared: too few installs to tell")

    results: list[ArmResult] = []
    for arm in arm_order:
        table = per_arm[arm]
        funnel = Funnel.from_counts(table[list(Funnel.__dataclass_fields__)].sum())
        p50 = _latency(latencies_ms.get(arm), 50, guardrails)
        p95 = _latency(latencies_ms.get(arm), 95, guardrails)
        if arm == control:
            results.append(
                ArmResult(
                    arm=arm,
                    units=unit_counts[arm],
                    funnel=funnel,
                    metrics=estimates[arm],
                    comparisons={},
                    log_lift={},
                    latency_p50_ms=p50,
                    latency_p95_ms=p95,
                    error_rate=errors[arm],
                    error_rate_comparison=None,
                    guardrail_breaches=[],
                    verdict="control",
                    follow_up=follow_up[arm],
                )
            )
            continue
        arm_tests = tests[arm]
        error_comparison = (
            _with_significance(
                permutation_comparison(
                    arm_tests["error_rate"], alpha_look, intervals=_wants(intervals, "error_rate")
                ),
                alpha_look,
            )
            if arm_tests
            else None
        )
        checks = _guardrail_checks(
            per_arm[control],
            table,
            arm_tests.get("error_rate"),
            guardrails,
            alpha_look,
            _wants(intervals, "guardrails"),
            seed,
            arm_tests.get("persistence"),
        )
        size = sizing(arm_tests["cpo"], alpha_plan, target_lift) if arm_tests else None
        verdict = _verdict(srm.alarm, comparisons[arm]["cpo"], checks, size, target_lift)
        results.append(
            ArmResult(
                arm=arm,
                units=unit_counts[arm],
                funnel=funnel,
                metrics=estimates[arm],
                comparisons=comparisons[arm],
                log_lift=log_lift(estimates[arm], estimates[control]),
                latency_p50_ms=p50,
                latency_p95_ms=p95,
                error_rate=errors[arm],
                error_rate_comparison=error_comparison,
                guardrail_breaches=[c.describe() for c in checks if c.status == "breached"],
                verdict=verdict,
                guardrails=checks,
                sizing=size,
                follow_up=follow_up[arm],
            )
        )
    return ExperimentAnalysis(
        experiment=experiment,
        control=control,
        alpha=alpha,
        correction=correction,
        srm=srm,
        arms=results,
        warnings=warnings,
        interval_kind="always-valid" if always_valid else "fixed-horizon",
        look_day=look_day if always_valid else None,
        alpha_look=alpha_look,
        horizon_days=peeking.horizon_days if always_valid and peeking is not None else None,
        target_lift=target_lift,
    )


def _wants(intervals: bool | Sequence[str], name: str) -> bool:
    return intervals if isinstance(intervals, bool) else name in intervals


def _verdict(
    srm_alarm: bool,
    cpo: Comparison,
    checks: Sequence[GuardrailCheck],
    size: Sizing | None,
    target_lift: float,
) -> Verdict:
    if srm_alarm:
        return "invalid: sample ratio mismatch"
    if any(c.status == "breached" for c in checks) or (cpo.significant and (cpo.difference or 0) < 0):
        return "harm"
    if cpo.significant and (cpo.difference or 0) > 0:
        # Guardrails not yet shown within their margins do not hold a ship back: proving safety for a
        # rare event (1% errors) would take hundreds of installs; they are listed as cautions instead.
        return "ship"
    if size is not None and size.detectable_lift is not None and size.detectable_lift <= target_lift:
        return "no difference yet"
    return "too few installs to tell"


def _guardrail_checks(
    control: pd.DataFrame,
    treatment: pd.DataFrame,
    error_test: AnyRatioTest | None,
    guardrails: Guardrails,
    alpha: float,
    intervals: bool,
    seed: int,
    persistence_test: AnyRatioTest | None = None,
) -> list[GuardrailCheck]:
    """Each guardrail decided by one-sided tests at its margin (alpha/2 each side, like the interval):
    "breached" when the change is significantly beyond the margin, "within margin" when it is
    significantly within it, otherwise "not yet shown within margin"."""
    checks: list[GuardrailCheck] = []
    for column, name, margin in (
        ("latency_p50_ms", "latency p50", guardrails.latency_p50_max_increase),
        ("latency_p95_ms", "latency p95", guardrails.latency_p95_max_increase),
    ):
        if column not in control.columns or column not in treatment.columns:
            continue
        c = control[column].dropna().to_numpy(dtype=float)
        t = treatment[column].dropna().to_numpy(dtype=float)
        if len(c) < 2 or len(t) < 2:
            checks.append(GuardrailCheck(name, None, None, None, None, None, margin, "no data"))
            continue
        # The mean over installs of each install's quantile: a ratio of means with denominators 1.
        test: AnyRatioTest = (
            NormalRatioTest.of(c, np.ones(len(c)), t, np.ones(len(t)))
            if large_sample_test(len(c), len(t))
            else RatioTest.of(
                c, np.ones(len(c)), t, np.ones(len(t)), Assignments.draw(len(c), len(t), seed=seed)
            )
        )
        checks.append(_margin_check(name, test, 1 + margin, margin, alpha, intervals, relative=True))
        if name == "latency p95" and guardrails.latency_p95_max_ms is not None:
            ceiling = guardrails.latency_p95_max_ms
            own = bounded_interval(t, np.ones(len(t)), alpha, "positive")
            status: GuardrailStatus = "not yet shown within margin"
            if own.low is not None and own.low > ceiling:
                status = "breached"
            elif own.high is not None and own.high <= ceiling:
                status = "within margin"
            checks.append(
                GuardrailCheck(
                    "latency p95 ceiling", None, own.value, own.value, own.low, own.high, ceiling, status
                )
            )
    if error_test is not None:
        margin = guardrails.error_rate_max_increase
        ratio_c, ratio_t = error_test.ratios()
        if ratio_c:
            # An absolute margin on the rate is a multiplicative one on the treatment's errors.
            checks.append(
                _margin_check("error rate", error_test, 1 + margin / ratio_c, margin, alpha, intervals)
            )
        elif ratio_t:
            # No error at all in control, so no multiplicative margin: breached only when the
            # treatment has significantly more errors than control (the exact test of no difference).
            greater, _ = error_test.p_values(1.0)
            status = "breached" if greater <= alpha / 2 else "not yet shown within margin"
            checks.append(GuardrailCheck("error rate", ratio_c, ratio_t, ratio_t, None, None, margin, status))
        elif ratio_t is not None:
            # No error in either arm: nothing to compare.
            checks.append(GuardrailCheck("error rate", ratio_c, ratio_t, 0.0, None, None, margin, "no data"))
    if persistence_test is not None:
        margin = guardrails.persistence_max_decrease
        ratio_c, _ = persistence_test.ratios()
        if ratio_c:
            # An absolute margin below control's share is a multiplicative one on the treatment's.
            theta = max(1e-9, 1 - margin / ratio_c)
            checks.append(
                _margin_check("persistence", persistence_test, theta, margin, alpha, intervals, lower=True)
            )
    return checks


def _margin_check(
    name: str,
    test: AnyRatioTest,
    theta: float,
    margin: float,
    alpha: float,
    intervals: bool,
    *,
    relative: bool = False,
    lower: bool = False,
) -> GuardrailCheck:
    """``lower``: the guardrail is breached by a decrease (persistence), not an increase."""
    ratio_c, ratio_t = test.ratios()
    greater, less = test.p_values(theta)
    if lower:
        greater, less = less, greater
    status: GuardrailStatus = "not yet shown within margin"
    if greater <= alpha / 2:
        status = "breached"
    elif less <= alpha / 2:
        status = "within margin"
    change = low = high = None
    if ratio_c and ratio_t is not None:
        change = ratio_t / ratio_c - 1 if relative else ratio_t - ratio_c
        if intervals and ratio_t > 0:
            lo, hi = test.effect_bounds(alpha)
            scale = 1.0 if relative else ratio_c
            low = scale * (lo - 1)
            high = None if hi is None else scale * (hi - 1)
    return GuardrailCheck(name, ratio_c, ratio_t, change, low, high, margin, status)


def _holm(
    comparisons: dict[str, dict[str, Comparison]], treatments: list[str]
) -> dict[str, dict[str, Comparison]]:
    """Holm-adjust each metric's p-values across the treatment arms (one family per metric)."""
    from statsmodels.stats.multitest import multipletests

    out = {arm: dict(by_metric) for arm, by_metric in comparisons.items()}
    for name in METRICS:
        arms = [arm for arm in treatments if comparisons[arm][name].p_value is not None]
        if not arms:
            continue
        pvals = [comparisons[arm][name].p_value for arm in arms]
        adjusted = multipletests(pvals, method="holm")[1]
        for arm, p_adj in zip(arms, adjusted, strict=True):
            out[arm][name] = replace(comparisons[arm][name], p_adjusted=float(p_adj))
    return out


def _with_significance(c: Comparison, alpha: float) -> Comparison:
    return replace(c, significant=c.p_adjusted is not None and c.p_adjusted <= alpha)


def _latency(values: Sequence[float] | np.ndarray | None, q: float, guardrails: Guardrails) -> float | None:
    if values is None or len(values) < max(1, guardrails.min_latency_samples):
        return None
    return percentile(values, q)


def log_lift(treatment: Mapping[str, Estimate], control: Mapping[str, Estimate]) -> dict[str, float | None]:
    """log(metric_treatment / metric_control) per factor and for CPO.

    Each metric is a ratio of sums over the same units, so the five factors' log lifts add up to CPO's:
    a dashboard can show which factor moved CPO.  None where a value is zero or undefined.
    """
    out: dict[str, float | None] = {}
    for name in METRICS:
        t, c = treatment[name].value, control[name].value
        out[name] = math.log(t / c) if t and c and t > 0 and c > 0 else None
    return out
