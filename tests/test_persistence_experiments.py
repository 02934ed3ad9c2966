"""Persistence in experiment verdicts: a guardrail that stops a treatment whose accepted code is deleted
more often, and that an A/A experiment does not trip."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from opportune.telemetry.experiments import analyse, analyse_units
from opportune.telemetry.simulate import ArmTruth, simulate_units, units_to_frames

BASE = ArmTruth()
# CPO up 30%, but a quarter less of what is accepted stays.
PUSHY = replace(BASE, acceptance_rate=BASE.acceptance_rate * 1.3, persistence=0.6)


def test_a_treatment_that_raises_cpo_but_lowers_persistence_is_not_shipped() -> None:
    rng = np.random.default_rng(3)
    units = simulate_units({"control": BASE, "pushy": PUSHY}, 300, rng)
    result = analyse_units(units, "g").arm("pushy")
    assert result.comparisons["cpo"].significant and (result.comparisons["cpo"].difference or 0) > 0
    assert result.verdict == "harm"
    assert any("persistence down" in b for b in result.guardrail_breaches), result.guardrail_breaches
    persistence = result.follow_up["persistence"].value
    assert persistence is not None and abs(persistence - 0.6) < 0.05


def test_the_same_lift_with_persistence_kept_ships() -> None:
    rng = np.random.default_rng(4)
    keeper = replace(PUSHY, persistence=BASE.persistence)
    result = analyse_units(simulate_units({"control": BASE, "keeper": keeper}, 300, rng), "g").arm("keeper")
    assert result.verdict == "ship" and result.guardrail_breaches == []


def test_aa_persistence_intervals_cover_zero_and_rarely_breach() -> None:
    """A/A experiments, 150 per size: the persistence change's 95% interval (permutation test inversion)
    covers 0 in at least 90% of them, and the guardrail (a test against its margin) trips in at most 3%,
    from 5 installs per arm up."""
    for installs in (5, 30, 100):
        rng = np.random.default_rng(11)
        runs, covered, breached = 150, 0, 0
        for _ in range(runs):
            units = simulate_units({"control": BASE, "treatment": BASE}, installs, rng)
            result = analyse_units(units, "aa", resamples=999).arm("treatment")
            (c,) = [check for check in result.guardrails if check.name == "persistence"]
            assert c.change_low is not None
            covered += c.change_low <= 0 <= (c.change_high if c.change_high is not None else 1.0)
            breached += c.status == "breached"
        assert covered / runs >= 0.90, (installs, covered / runs)
        assert breached / runs <= 0.03, (installs, breached / runs)


def test_the_guardrail_works_from_events_too() -> None:
    rng = np.random.default_rng(5)
    arms = {"control": BASE, "pushy": PUSHY}
    units = simulate_units(arms, 60, rng, opportunities_mean=80)
    frames = units_to_frames(units, rng, experiment="g", arms=arms)
    result = analyse(frames, "g").arm("pushy")
    assert result.follow_up["persistence"].value is not None
    assert any("persistence down" in b for b in result.guardrail_breaches)


def test_prometheus_exposes_keystrokes_saved_and_persistence_per_checkpoint() -> None:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    from opportune.telemetry.events import Common, Outcome, Persistence
    from opportune.telemetry.metrics import Metrics

    m = Metrics()
    c = Common("i", "s", arm="A", language="python")
    m.observe(Outcome(c, "k", "accepted", accepted_chars=10, keystrokes_saved=9))
    m.observe(Persistence(c, "k", "tracking", checkpoints="30"))
    m.observe(Persistence(c, "k", "measured", 30.0, accepted_chars=10, kept_chars=7, fraction=0.7))
    m.observe(Persistence(c, "j", "unknown", 30.0, accepted_chars=4, reason="closed"))
    with m.serve(port=0) as server, urllib.request.urlopen(server.url, timeout=5) as response:
        body = response.read().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }
    base = (("arm", "A"), ("language", "python"))
    assert samples[("opportune_keystrokes_saved_total", base)] == 9
    at30 = tuple(sorted((*base, ("checkpoint", "30"))))
    assert samples[("opportune_persistence_kept_chars_total", at30)] == 7
    assert samples[("opportune_persistence_accepted_chars_total", at30)] == 10
    unknown = tuple(sorted((*at30, ("status", "unknown"))))
    assert samples[("opportune_persistence_checkpoints_total", unknown)] == 1
