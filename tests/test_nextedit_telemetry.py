"""Next-edit telemetry: the edit funnel and edit CPO per arm, next to CPO, from a real SQLite store."""

from __future__ import annotations

from pathlib import Path

from opportune.telemetry import events as ev
from opportune.telemetry.cpo import summarise
from opportune.telemetry.report import build_report, render
from opportune.telemetry.store import EventStore, open_events


def common(arm: str, install: str = "i1") -> ev.Common:
    return ev.Common(install_id=install, session_id="s", experiment="x", arm=arm, language="python")


def test_edit_cpo_per_arm_counts_each_edit_once_and_explicit_outcomes_win(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "t.db", flush_interval_s=60)
    a, b = common("A"), common("B", "i2")
    for c, opp in ((a, "o1"), (a, "o2"), (b, "o3")):
        store.record(ev.EditOpportunity(c, opp, "h", "add_parameter", 2, 1))
    store.record(ev.NextEdit(a, "e1", "o1", "rule", "arguments", 7, 12.0, True))
    store.record(ev.NextEdit(a, "e1", "o1", "rule", "arguments", 7, 12.0, True))  # offered again: one
    store.record(ev.NextEdit(a, "e2", "o1", "rule", "arguments", 7, 12.0, True))
    store.record(ev.NextEditOutcome(a, "e1", "accepted", 7, "client"))
    store.record(ev.NextEditOutcome(a, "e2", "rejected", 0, "gone", inferred=True))
    store.record(ev.NextEditOutcome(a, "e2", "accepted", 5, "client"))  # explicit beats inferred
    store.record(ev.NextEdit(b, "e3", "o3", "rule", "rename", 4, 3.0, False))
    store.record(ev.NextEditOutcome(b, "e3", "rejected", 0, "dismissed"))
    store.close()
    frames = open_events([tmp_path / "t.db"])
    by_arm = {g.group["arm"]: g.edits for g in summarise(frames, ["arm"])}
    assert (by_arm["A"].edit_opportunities, by_arm["A"].shown, by_arm["A"].accepted) == (2, 2, 2)
    assert by_arm["A"].edit_cpo == (7 + 5) / 2
    assert (by_arm["B"].accepted, by_arm["B"].rejected, by_arm["B"].edit_cpo) == (0, 1, 0.0)
    text = render(build_report(frames, by="arm"))
    assert "edit CPO" in text and "6.000" in text


def test_prometheus_counts_the_next_edit_funnel_per_arm() -> None:
    from prometheus_client import generate_latest

    from opportune.telemetry.metrics import Metrics

    metrics = Metrics()
    a = common("A")
    metrics.observe(ev.EditOpportunity(a, "o1", "h", "rename", 2, 1))
    metrics.observe(ev.NextEdit(a, "e1", "o1", "rule", "rename", 5, 3.0, True))
    metrics.observe(ev.NextEditOutcome(a, "e1", "accepted", 5, "client"))
    text = generate_latest(metrics.registry).decode()
    assert 'opportune_edit_opportunities_total{arm="A",language="python"} 1.0' in text
    assert 'opportune_next_edits_total{arm="A",language="python",outcome="accepted"} 1.0' in text
    assert 'opportune_next_edit_chars_total{arm="A",language="python"} 5.0' in text
