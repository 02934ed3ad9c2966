"""The experiment analysis on simulated installs whose true CPO per arm is known."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from opportune.telemetry.cpo import FACTORS, METRICS
from opportune.telemetry.events import Common, Opportunity
from opportune.telemetry.experiments import (
    AnalysisError,
    Guardrails,
    analyse,
    analyse_units,
    ratio_of_means,
)
from opportune.telemetry.frames import EventFrames
from opportune.telemetry.simulate import ArmTruth, simulate_units, units_to_frames

BASE = ArmTruth()
# A real 10% lift in CPO, carried by the acceptance rate.
LIFTED = replace(BASE, acceptance_rate=BASE.acceptance_rate * 1.1)


def test_the_simulated_truth_is_a_ten_percent_lift() -> None:
    assert LIFTED.cpo / BASE.cpo == pytest.approx(1.10, rel=1e-12)


def test_detects_a_real_lift_end_to_end_from_events() -> None:
    """Events -> per-install units -> delta-method intervals -> verdict, at an adequate sample size."""
    rng = np.random.default_rng(20240601)
    arms = {"control": BASE, "treatment": LIFTED}
    units = simulate_units(
        arms, 1200, rng, opportunities_mean=60, activity_dispersion=0.3, acceptance_concentration=100
    )
    frames = units_to_frames(units, rng, experiment="ctx", arms=arms)
    analysis = analyse(frames, "ctx", weights={"control": 1, "treatment": 1})

    assert analysis.control == "control"
    assert [a.arm for a in analysis.arms] == ["control", "treatment"]
    assert not analysis.srm.alarm
    for name, truth in arms.items():
        cpo = analysis.arm(name).metrics["cpo"]
        assert cpo.value is not None and cpo.se is not None
        # Within 4 standard errors of the truth (coverage itself is tested across many runs below).
        assert abs(cpo.value - truth.cpo) < 4 * cpo.se
    treatment = analysis.arm("treatment")
    lift = treatment.comparisons["cpo"]
    assert treatment.verdict == "ship"
    assert lift.significant and lift.p_value is not None and lift.p_value < 0.05
    assert lift.relative_ci_low is not None and lift.relative_ci_high is not None
    assert 0 < lift.relative_ci_low <= 0.10 <= lift.relative_ci_high
    # The log-lift breakdown adds up and names the factor that moved.
    parts = [treatment.log_lift[f] for f in FACTORS]
    assert all(p is not None for p in parts)
    assert sum(p for p in parts if p is not None) == pytest.approx(treatment.log_lift["cpo"], abs=1e-9)
    assert max(FACTORS, key=lambda f: abs(treatment.log_lift[f] or 0)) == "acceptance_rate"
    # The unit table of the events gives the same numbers as the units they were made from.
    direct = analyse_units(units, "ctx", weights={"control": 1, "treatment": 1}).arm("treatment")
    assert direct.metrics["cpo"] == treatment.metrics["cpo"]


def test_detects_the_lift_across_seeds_with_realistic_heterogeneity() -> None:
    rng = np.random.default_rng(11)
    arms = {"control": BASE, "treatment": LIFTED}
    verdicts, covered = [], 0
    truth_covered = dict.fromkeys(arms, 0)
    for _ in range(20):
        units = simulate_units(arms, 3000, rng)  # activity varies ~100% between installs
        analysis = analyse_units(units, "x")
        for name, truth in arms.items():
            cpo = analysis.arm(name).metrics["cpo"]
            assert cpo.ci_low is not None and cpo.ci_high is not None
            truth_covered[name] += cpo.ci_low <= truth.cpo <= cpo.ci_high
        result = analysis.arm("treatment")
        verdicts.append(result.verdict)
        c = result.comparisons["cpo"]
        assert c.relative_ci_low is not None and c.relative_ci_high is not None
        covered += c.relative_ci_low <= 0.10 <= c.relative_ci_high
    assert verdicts.count("ship") == 20
    assert covered >= 16  # 95% intervals: 19 expected
    assert all(n >= 16 for n in truth_covered.values()), truth_covered


def test_delta_method_matches_a_bootstrap_over_installs() -> None:
    rng = np.random.default_rng(3)
    units = simulate_units({"A": BASE}, 400, rng)
    chars = units["accepted_chars"].to_numpy()
    opps = units["opportunities"].to_numpy()
    estimate = ratio_of_means(chars, opps, z=1.96)
    assert estimate.value == pytest.approx(chars.sum() / opps.sum())  # CPO computed directly
    idx = rng.integers(0, len(units), size=(4000, len(units)))
    boot = chars[idx].sum(axis=1) / opps[idx].sum(axis=1)
    assert estimate.se == pytest.approx(float(boot.std(ddof=1)), rel=0.10)


def test_per_install_intervals_are_wider_than_event_level_ones() -> None:
    """Keystrokes of one person are correlated: a binomial interval over events would be too narrow."""
    rng = np.random.default_rng(5)
    units = simulate_units({"A": BASE}, 300, rng, acceptance_concentration=5)
    accepted = units["accepted"].to_numpy()
    shown = units["shown"].to_numpy()
    per_unit = ratio_of_means(accepted, shown, z=1.96)
    p = accepted.sum() / shown.sum()
    binomial_se = math.sqrt(p * (1 - p) / shown.sum())
    assert per_unit.se is not None and per_unit.se > 2 * binomial_se


def test_srm_alarm_on_55_45_split_of_a_50_50_design() -> None:
    rng = np.random.default_rng(1)
    units = simulate_units({"A": BASE, "B": BASE}, {"A": 1100, "B": 900}, rng)
    analysis = analyse_units(units, "srm", weights={"A": 1, "B": 1})
    assert analysis.srm.alarm
    assert analysis.srm.p_value is not None and analysis.srm.p_value < 0.001
    assert analysis.arm("B").verdict == "invalid: sample ratio mismatch"
    assert any("sample ratio mismatch" in w for w in analysis.warnings)

    # The same split is fine when it is what the design declared, and a near-even split is fine.
    assert not analyse_units(units, "srm", weights={"A": 55, "B": 45}).srm.alarm
    even = simulate_units({"A": BASE, "B": BASE}, {"A": 1020, "B": 980}, rng)
    assert not analyse_units(even, "srm").srm.alarm


def test_srm_counts_a_declared_arm_with_no_units() -> None:
    units = simulate_units({"A": BASE, "B": BASE}, 300, np.random.default_rng(2))
    analysis = analyse_units(units, "srm", weights={"A": 1, "B": 1, "C": 1})
    assert analysis.srm.units == {"A": 300, "B": 300, "C": 0}
    assert analysis.srm.alarm


def test_holm_correction_with_more_than_two_arms() -> None:
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(4)
    arms = {"control": BASE, "b": LIFTED, "c": replace(BASE, feedback_rate=0.72)}
    analysis = analyse_units(simulate_units(arms, 500, rng), "three")
    assert analysis.correction == "holm"
    raw = [analysis.arm(a).comparisons["cpo"].p_value for a in ("b", "c")]
    adjusted = [analysis.arm(a).comparisons["cpo"].p_adjusted for a in ("b", "c")]
    assert adjusted == pytest.approx(list(multipletests(raw, method="holm")[1]))
    assert all(a is not None and r is not None and a >= r for a, r in zip(adjusted, raw, strict=True))

    two = analyse_units(simulate_units({"control": BASE, "b": LIFTED}, 500, rng), "two")
    assert two.correction is None
    c = two.arm("b").comparisons["cpo"]
    assert c.p_adjusted == c.p_value


def test_significant_degradation_is_harm() -> None:
    rng = np.random.default_rng(6)
    worse = replace(BASE, feedback_rate=BASE.feedback_rate * 0.8)
    analysis = analyse_units(simulate_units({"control": BASE, "worse": worse}, 1500, rng), "x")
    result = analysis.arm("worse")
    assert result.verdict == "harm"
    assert result.comparisons["cpo"].difference is not None and result.comparisons["cpo"].difference < 0
    assert result.guardrail_breaches == []


def test_guardrails_turn_a_better_cpo_into_harm() -> None:
    rng = np.random.default_rng(8)
    slow = replace(LIFTED, latency_ms=BASE.latency_ms * 2)
    units = simulate_units({"control": BASE, "slow": slow}, 600, rng, latency=True)
    result = analyse_units(units, "g").arm("slow")
    assert result.comparisons["cpo"].significant
    assert result.verdict == "harm"
    breached = {g.name for g in result.guardrails if g.status == "breached"}
    assert breached == {"latency p50", "latency p95"}
    assert any("latency p95: significantly beyond +20%" in b for b in result.guardrail_breaches)
    p95 = next(g for g in result.guardrails if g.name == "latency p95")
    assert p95.change_low is not None and p95.change_low > 0.2  # the interval itself is beyond the margin

    flaky = replace(LIFTED, error_rate=0.05)
    units = simulate_units({"control": BASE, "flaky": flaky}, 600, rng)
    result = analyse_units(units, "g").arm("flaky")
    assert result.error_rate.value == pytest.approx(0.05, abs=0.005)
    assert result.verdict == "harm"
    assert any("error rate" in b for b in result.guardrail_breaches)

    # An absolute latency ceiling, with latencies no worse than control's.
    units = simulate_units({"control": BASE, "same": LIFTED}, 600, rng, latency=True)
    strict = Guardrails(latency_p95_max_ms=100.0)
    result = analyse_units(units, "g", guardrails=strict).arm("same")
    assert result.verdict == "harm" and any("ceiling" in b for b in result.guardrail_breaches)


def test_a_guardrail_breach_needs_evidence_beyond_the_margin_not_a_point_estimate() -> None:
    """Latency 10% worse (inside the 20% margin) with few installs: never "breached", at most unclear."""
    rng = np.random.default_rng(12)
    a_bit_slower = replace(LIFTED, latency_ms=BASE.latency_ms * 1.1)
    for _ in range(5):
        units = simulate_units({"control": BASE, "t": a_bit_slower}, 8, rng, latency=True)
        result = analyse_units(units, "g").arm("t")
        statuses = {g.name: g.status for g in result.guardrails}
        assert statuses["latency p95"] in ("within margin", "not yet shown within margin")
        assert result.verdict != "harm" or result.comparisons["cpo"].significant


def test_json_round_trip_has_no_nan() -> None:
    rng = np.random.default_rng(9)
    units = simulate_units({"control": BASE, "b": BASE}, 50, rng)
    # An arm with a single install: estimates without intervals (None), which JSON must carry.
    units.loc[len(units)] = ["lonely", "one", 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    analysis = analyse_units(units, "j", weights={"control": 1, "b": 1})
    assert any("left out of the SRM check: lonely" in w for w in analysis.warnings)
    data = json.loads(analysis.to_json())
    assert data["experiment"] == "j"
    assert [a["arm"] for a in data["arms"]] == ["control", "b", "lonely"]
    lonely = data["arms"][2]
    assert lonely["metrics"]["cpo"] == {"value": 0.0, "se": None, "ci_low": None, "ci_high": None}
    assert lonely["metrics"]["feedback_rate"]["value"] is None
    assert lonely["verdict"] == "too few installs to tell"
    assert set(data["arms"][1]["comparisons"]) == set(METRICS)


def test_control_choice_and_errors() -> None:
    rng = np.random.default_rng(10)
    units = simulate_units({"beta": BASE, "alpha": BASE}, 30, rng)
    assert analyse_units(units, "e").control == "alpha"  # no declaration: first by name
    assert analyse_units(units, "e", weights={"beta": 1, "alpha": 1}).control == "beta"  # first declared
    assert analyse_units(units, "e", control="beta").control == "beta"
    with pytest.raises(AnalysisError, match="control arm 'gamma'"):
        analyse_units(units, "e", control="gamma")
    with pytest.raises(AnalysisError, match="no events for experiment 'nope'"):
        analyse(EventFrames.from_events([]), "nope")


def test_installs_seen_in_two_arms_are_flagged() -> None:
    events = []
    for arm in ("A", "B"):
        for install in ("shared", f"only-{arm}"):
            common = Common(install, "s", experiment="e", arm=arm)
            events.append(
                Opportunity(common, opportunity_id=f"{install}{arm}", document_hash="h", edit_kind="insert")
            )
    analysis = analyse(EventFrames.from_events(events), "e")
    assert any("more than one arm" in w for w in analysis.warnings)
    assert analysis.arm("A").units == 2 and analysis.arm("B").units == 2
