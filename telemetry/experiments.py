"""Experiments: the per-arm analysis of CPO.

Assignment (``assign_arm``, ``settings_digest``) lives in ``opportune.telemetry.assignment``, which the
language server imports at start without this module's pandas and scipy.

Analysis (``analyse``).  The randomisation unit is the install, so every interval is computed per unit:
each install's numerator and denominator are summed, and a metric is the ratio of the means over the
installs of an arm, with its variance by the delta method.  Events are never treated as independent
(keystrokes of one person are correlated; an event-level binomial interval would be far too narrow).
CPO's interval is computed directly as accepted_chars / opportunities per unit, never by multiplying
the factors' intervals.  Lift against control: the difference with a normal interval and a two-sided
p-value; the relative lift from the log ratio (delta method), so its interval is asymmetric and never
crosses -100%.  With more than two arms the p-values of each metric are Holm-corrected across the
comparisons with control.  The sample-ratio-mismatch (SRM) check is a chi-square test of the units per
arm against the declared weights (equal weights when none are given); p < 0.001 raises the alarm and
makes every verdict "invalid".

Verdicts on CPO, per treatment arm: "ship" (significantly higher, no guardrail breached), "harm"
(significantly lower, or a guardrail breached), "no difference yet"; the control arm is "control".
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from opportune.telemetry.assignment import validate_arms
from opportune.telemetry.cpo import FOLLOW_UP, METRICS, Funnel, funnel_counts, returned_latencies
from opportune.telemetry.frames import EventFrames, json_safe
from opportune.telemetry.numbers import percentile

SRM_ALPHA = 0.001

Verdict = Literal["control", "ship", "harm", "no difference yet", "invalid: sample ratio mismatch"]


class AnalysisError(ValueError):
    """The analysis cannot run on these events (no such experiment, unknown control arm...)."""


# --- results -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Guardrails:
    """Limits a treatment arm must respect whatever its CPO."""

    latency_p95_max_increase: float = 0.20  # relative to the control arm's p95
    latency_p95_max_ms: float | None = None  # absolute ceiling, if any
    error_rate_max_increase: float = 0.005  # absolute increase, when also statistically significant
    min_latency_samples: int = 20  # fewer returned suggestions: no latency verdict
    # Persistence (share of accepted characters still there at the last checkpoint): breached when the
    # treatment's is lower than control's by more than this margin, significantly (the upper end of the
    # difference's interval below -margin): a treatment that raises CPO with code people then delete is
    # not shipped.
    persistence_max_decrease: float = 0.02


@dataclass(frozen=True)
class Estimate:
    """A ratio-of-means metric over units with its standard error and 95% (1 - alpha) interval."""

    value: float | None
    se: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None


@dataclass(frozen=True)
class Comparison:
    """A treatment arm's metric against control."""

    difference: float | None = None
    difference_ci_low: float | None = None
    difference_ci_high: float | None = None
    relative: float | None = None  # treatment / control - 1
    relative_ci_low: float | None = None
    relative_ci_high: float | None = None
    p_value: float | None = None  # two-sided; of the log ratio when both values are positive
    p_adjusted: float | None = None  # Holm-corrected when there are several treatment arms
    significant: bool = False  # p_adjusted < alpha


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
    metrics: dict[str, Estimate]  # the five factors and "cpo"
    comparisons: dict[str, Comparison]  # same keys, against control; empty for the control arm
    log_lift: dict[str, float | None]  # log(metric / control's); the five factors sum to "cpo"
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    error_rate: Estimate  # responses with loss_reason "error" / attempts
    error_rate_comparison: Comparison | None
    guardrail_breaches: list[str]
    verdict: Verdict
    # Keystrokes saved per opportunity and persistence (ratios over the arm's units, as the metrics).
    follow_up: dict[str, Estimate] = field(default_factory=dict)
    persistence_comparison: Comparison | None = None


@dataclass(frozen=True)
class ExperimentAnalysis:
    experiment: str
    control: str
    alpha: float
    correction: str | None  # "holm" with more than two arms
    srm: SrmCheck
    arms: list[ArmResult]
    warnings: list[str] = field(default_factory=list)

    def arm(self, name: str) -> ArmResult:
        for result in self.arms:
            if result.arm == name:
                return result
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)


# --- statistics ----------------------------------------------------------------------------------------


def ratio_of_means(numerators: np.ndarray, denominators: np.ndarray, z: float) -> Estimate:
    """mean(numerators) / mean(denominators) over units, with a delta-method interval."""
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


def compare(treatment: Estimate, control: Estimate, z: float) -> Comparison:
    """Difference (normal interval) and relative lift (log-ratio interval) of two arms, with a two-sided p.

    The p-value tests the log ratio when both values are positive, else the difference.
    """
    from scipy import stats

    t, c = treatment, control
    if t.value is None or c.value is None or t.se is None or c.se is None:
        return Comparison()

    def two_sided_p(estimate: float, se: float) -> float:
        # With no variance at all the estimate is exact: p is 1 for no difference, 0 for any.
        return float(2 * stats.norm.sf(abs(estimate) / se)) if se > 0 else float(estimate == 0)

    diff = t.value - c.value
    se = math.hypot(t.se, c.se)
    p = two_sided_p(diff, se)
    relative = relative_low = relative_high = None
    if t.value > 0 and c.value > 0:
        log_ratio = math.log(t.value / c.value)
        # Delta method on the log: Var(log r) ~= Var(r) / r^2, the arms independent.
        se_log = math.hypot(t.se / t.value, c.se / c.value)
        relative = math.exp(log_ratio) - 1
        relative_low = math.exp(log_ratio - z * se_log) - 1
        relative_high = math.exp(log_ratio + z * se_log) - 1
        # The p-value of the same log ratio, so that it agrees with the relative interval people read.
        p = two_sided_p(log_ratio, se_log)
    return Comparison(
        difference=diff,
        difference_ci_low=diff - z * se,
        difference_ci_high=diff + z * se,
        relative=relative,
        relative_ci_low=relative_low,
        relative_ci_high=relative_high,
        p_value=p,
        p_adjusted=p,
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


def unit_table(frames: EventFrames, experiment: str) -> pd.DataFrame:
    """Funnel counts per (arm, install_id) of one experiment: the randomisation units."""
    return funnel_counts(frames.filter(experiment=experiment), by=["arm", "install_id"])


def analyse(
    frames: EventFrames,
    experiment: str,
    control: str | None = None,
    *,
    weights: Mapping[str, float] | None = None,
    guardrails: Guardrails | None = None,
    alpha: float = 0.05,
) -> ExperimentAnalysis:
    """The per-arm analysis of ``experiment`` over loaded events (see the module docstring).

    ``control`` defaults to the first declared arm, else an arm named "control", else the first arm
    by name.  ``weights`` are the declared arm weights for the SRM check (equal when omitted).
    """
    units = unit_table(frames, experiment)
    responses = frames.responses[frames.responses["experiment"] == experiment]
    latencies = {str(arm): returned_latencies(group).to_numpy() for arm, group in responses.groupby("arm")}
    return analyse_units(
        units,
        experiment,
        control,
        weights=weights,
        latencies_ms=latencies,
        guardrails=guardrails,
        alpha=alpha,
    )


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
) -> ExperimentAnalysis:
    """The analysis from a unit table (columns ``arm``, ``install_id`` and ``COUNT_COLUMNS``).

    ``analyse`` builds that table from events; simulations call this directly.  ``latencies_ms`` holds
    the returned suggestions' total latencies per arm, for the latency guardrail.
    """
    from scipy import stats

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
    z = float(stats.norm.ppf(1 - alpha / 2))

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
    estimates: dict[str, dict[str, Estimate]] = {}
    errors: dict[str, Estimate] = {}
    for arm, table in per_arm.items():
        estimates[arm] = {
            name: ratio_of_means(table[num].to_numpy(), table[den].to_numpy(), z)
            for name, (num, den) in METRICS.items()
        }
        errors[arm] = ratio_of_means(table["errors"].to_numpy(), table["attempts"].to_numpy(), z)
    follow_up: dict[str, dict[str, Estimate]] = {
        arm: {
            name: ratio_of_means(table[num].to_numpy(), table[den].to_numpy(), z)
            for name, (num, den) in FOLLOW_UP.items()
            if num in table.columns and den in table.columns
        }
        for arm, table in per_arm.items()
    }

    treatments = [arm for arm in arm_order if arm != control]
    comparisons: dict[str, dict[str, Comparison]] = {
        arm: {name: compare(estimates[arm][name], estimates[control][name], z) for name in METRICS}
        for arm in treatments
    }
    correction = "holm" if len(treatments) > 1 else None
    if correction:
        comparisons = _holm(comparisons, treatments)
    comparisons = {
        arm: {name: _with_significance(c, alpha) for name, c in by_metric.items()}
        for arm, by_metric in comparisons.items()
    }

    control_p95 = _latency(latencies_ms.get(control), 95, guardrails)
    results: list[ArmResult] = []
    for arm in arm_order:
        table = per_arm[arm]
        funnel = Funnel.from_counts(table[list(Funnel.__dataclass_fields__)].sum())
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
                    latency_p50_ms=_latency(latencies_ms.get(arm), 50, guardrails),
                    latency_p95_ms=p95,
                    error_rate=errors[arm],
                    error_rate_comparison=None,
                    guardrail_breaches=[],
                    verdict="control",
                    follow_up=follow_up[arm],
                )
            )
            continue
        error_comparison = _with_significance(compare(errors[arm], errors[control], z), alpha, adjusted=False)
        breaches = _breaches(p95, control_p95, error_comparison, guardrails)
        persistence_comparison = None
        if "persistence" in follow_up[arm] and "persistence" in follow_up[control]:
            persistence_comparison = _with_significance(
                compare(follow_up[arm]["persistence"], follow_up[control]["persistence"], z),
                alpha,
                adjusted=False,
            )
            breaches += _persistence_breach(persistence_comparison, guardrails)
        cpo = comparisons[arm]["cpo"]
        verdict: Verdict
        if srm.alarm:
            verdict = "invalid: sample ratio mismatch"
        elif breaches or (cpo.significant and (cpo.difference or 0) < 0):
            verdict = "harm"
        elif cpo.significant and (cpo.difference or 0) > 0:
            verdict = "ship"
        else:
            verdict = "no difference yet"
        results.append(
            ArmResult(
                arm=arm,
                units=unit_counts[arm],
                funnel=funnel,
                metrics=estimates[arm],
                comparisons=comparisons[arm],
                log_lift=log_lift(estimates[arm], estimates[control]),
                latency_p50_ms=_latency(latencies_ms.get(arm), 50, guardrails),
                latency_p95_ms=p95,
                error_rate=errors[arm],
                error_rate_comparison=error_comparison,
                guardrail_breaches=breaches,
                verdict=verdict,
                follow_up=follow_up[arm],
                persistence_comparison=persistence_comparison,
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
    )


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


def _with_significance(c: Comparison, alpha: float, *, adjusted: bool = True) -> Comparison:
    p = c.p_adjusted if adjusted else c.p_value
    return replace(c, significant=p is not None and p < alpha)


def _latency(values: Sequence[float] | np.ndarray | None, q: float, guardrails: Guardrails) -> float | None:
    if values is None or len(values) < max(1, guardrails.min_latency_samples):
        return None
    return percentile(values, q)


def _breaches(
    p95: float | None, control_p95: float | None, errors: Comparison, guardrails: Guardrails
) -> list[str]:
    breaches: list[str] = []
    if (
        p95 is not None
        and control_p95 is not None
        and p95 > control_p95 * (1 + guardrails.latency_p95_max_increase)
    ):
        breaches.append(
            f"latency p95 {p95:.0f} ms is more than {guardrails.latency_p95_max_increase:.0%} above "
            f"control's {control_p95:.0f} ms"
        )
    if p95 is not None and guardrails.latency_p95_max_ms is not None and p95 > guardrails.latency_p95_max_ms:
        breaches.append(
            f"latency p95 {p95:.0f} ms is above the {guardrails.latency_p95_max_ms:.0f} ms ceiling"
        )
    if errors.significant and (errors.difference or 0) > guardrails.error_rate_max_increase:
        breaches.append(
            f"error rate up {errors.difference:.2%} (significant), more than the "
            f"{guardrails.error_rate_max_increase:.2%} allowed"
        )
    return breaches


def _persistence_breach(c: Comparison, guardrails: Guardrails) -> list[str]:
    """The persistence guardrail: lower than control by more than the margin, with 95% confidence."""
    margin = guardrails.persistence_max_decrease
    if c.difference is None or c.difference_ci_high is None or c.difference_ci_high >= -margin:
        return []
    return [
        f"persistence down {-c.difference:.1%} (interval up to {-c.difference_ci_high:.1%} down), more than "
        f"the {margin:.0%} allowed: accepted code is deleted more often"
    ]


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
