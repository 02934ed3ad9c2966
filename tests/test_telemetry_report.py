"""``opportune report``: text and JSON on small stores, merged stores, experiments, clear errors."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import get_args

import numpy as np
import pytest

from opportune.telemetry import report
from opportune.telemetry.events import Attempt, Common, Event, Opportunity, Outcome, Response, Shown, Skip
from opportune.telemetry.experiments import Verdict
from opportune.telemetry.simulate import ArmTruth, simulate_units, units_to_frames
from opportune.telemetry.store import EventStore

DAY = 86400.0
T0 = 1_750_000_000.0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="opportune report")
    report.add_arguments(p)
    return p


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = report.run(parser().parse_args(list(argv)), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def install_events(install: str, language: str, ts: float) -> list[Event]:
    """One install: 4 opportunities, 3 attempts, 2 shown, 1 accepted (12 chars, 4 tokens)."""
    c = Common(install, f"{install}-s", language=language, model_id="gemma")
    events: list[Event] = [
        Opportunity(c, opportunity_id=f"{install}o{i}", document_hash="h", edit_kind="insert", ts=ts)
        for i in range(4)
    ]
    events.append(Skip(c, opportunity_id=f"{install}o3", rule="mid-word", ts=ts))
    for i in range(3):
        events.append(
            Attempt(c, attempt_id=f"{install}a{i}", opportunity_id=f"{install}o{i}", source="model", ts=ts)
        )
    for i, (ms, loss) in enumerate([(100.0, None), (300.0, None), (900.0, "deadline")]):
        events.append(
            Response(
                c,
                attempt_id=f"{install}a{i}",
                latency_first_ms=None,
                latency_total_ms=ms,
                generated_tokens=4,
                stop_reason="eol",
                chars=12,
                lines=1,
                loss_reason=loss,  # type: ignore[arg-type]
                completion_id=None if loss else f"{install}c{i}",
                stages_ms='{"prompt": 3.0, "model": 80.0}',
                ts=ts,
            )
        )
    events += [
        Shown(c, completion_id=f"{install}c0", attempt_id=f"{install}a0", ts=ts),
        Shown(c, completion_id=f"{install}c1", attempt_id=f"{install}a1", ts=ts),
        Outcome(
            c, completion_id=f"{install}c0", outcome="accepted", accepted_chars=12, accepted_tokens=4, ts=ts
        ),
        Outcome(c, completion_id=f"{install}c1", outcome="rejected", reason="typed-over", ts=ts),
    ]
    return events


def write_store(path: Path, events: list[Event]) -> Path:
    with EventStore(path, flush_interval_s=3600) as store:
        for event in events:
            store.record(event)
    return path


@pytest.fixture
def stores(tmp_path: Path) -> tuple[Path, Path]:
    a = write_store(tmp_path / "a.db", install_events("i1", "python", T0))
    b = write_store(tmp_path / "b.db", install_events("i2", "go", T0 + 2 * DAY))
    return a, b


def test_json_report_on_a_small_store(stores: tuple[Path, Path]) -> None:
    a, _ = stores
    code, out, err = run("--db", str(a), "--json")
    assert code == 0 and err == ""
    data = json.loads(out)
    assert data["events"] == 15 and data["installs"] == 1
    (group,) = data["groups"]
    assert group["funnel"] == {
        "opportunities": 4,
        "attempts": 3,
        "shown": 2,
        "accepted": 1,
        "accepted_chars": 12,
        "accepted_tokens": 4,
        "keystrokes_saved": 0,
        "persisted_chars": 0,
        "measured_chars": 0,
    }
    assert group["factors"]["attempt_rate"] == pytest.approx(0.75)
    assert group["factors"]["feedback_rate"] == pytest.approx(2 / 3)
    assert group["factors"]["acceptance_rate"] == pytest.approx(0.5)
    assert group["factors"]["tokens_per_accept"] == pytest.approx(4.0)
    assert group["factors"]["chars_per_token"] == pytest.approx(3.0)
    assert group["factors"]["cpo"] == pytest.approx(3.0)
    assert group["latency_p50_ms"] == pytest.approx(200.0)
    assert group["loss_reasons"] == {"deadline": 1}
    assert group["skip_rules"] == {"mid-word": 1}
    assert group["stage_medians_ms"] == {"model": 80.0, "prompt": 3.0}


def test_text_report_is_an_aligned_table(stores: tuple[Path, Path]) -> None:
    a, _ = stores
    code, out, _ = run("--db", str(a))
    assert code == 0
    assert "1 store, 15 events, 1 install\n" in out
    lines = out.splitlines()
    header = next(line for line in lines if "opportunities" in line and "attempts" in line)
    row = lines[lines.index(header) + 2]
    assert row.split() == ["all", "4", "3", "2", "1", "12", "4"]
    # Right-aligned numbers end where their headers end.
    assert row.index("12") + 2 == header.index("accepted chars") + len("accepted chars")
    factors = next(line for line in lines if line.startswith("all") and "%" in line)
    assert factors.split() == ["all", "75.0%", "66.7%", "50.0%", "4.00", "3.00", "3.000", "200", "290"]
    assert "Losses" in out and "deadline" in out
    assert "Skipped by trigger rules" in out and "mid-word" in out


def test_several_stores_merge_without_double_counting(stores: tuple[Path, Path]) -> None:
    a, b = stores
    code, out, _ = run("--db", str(a), "--db", str(b), "--db", str(a), "--json", "--by", "language")
    assert code == 0
    data = json.loads(out)
    assert data["events"] == 30 and data["installs"] == 2
    by_language = {g["group"]["language"]: g["funnel"]["opportunities"] for g in data["groups"]}
    assert by_language == {"go": 4, "python": 4}


def test_since_filters_events(stores: tuple[Path, Path]) -> None:
    a, b = stores
    since = "2025-06-16"  # T0 is 2025-06-15 14:xx UTC; the second store is two days later
    code, out, _ = run("--db", str(a), "--db", str(b), "--since", since, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["installs"] == 1 and data["groups"][0]["funnel"]["opportunities"] == 4
    assert data["since"].startswith("2025-06-16")


def test_by_model_text(stores: tuple[Path, Path]) -> None:
    a, b = stores
    code, out, _ = run("--db", str(a), "--db", str(b), "--by", "model")
    assert code == 0
    assert any(line.split()[:2] == ["gemma", "8"] for line in out.splitlines())


def test_experiment_report(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arms = {"control": ArmTruth(), "fast": ArmTruth(latency_ms=100.0)}
    units = simulate_units(arms, 40, rng, opportunities_mean=20)
    frames = units_to_frames(units, rng, experiment="speed", arms=arms)
    # An install with no opportunity left no event, so it is not a unit of the analysis.
    active = units[units["opportunities"] > 0].groupby("arm").size()
    db = write_store(tmp_path / "exp.db", frames.to_events())

    code, out, _ = run("--db", str(db), "--experiment", "speed", "--json")
    assert code == 0
    analysis = json.loads(out)["experiment"]
    assert analysis["control"] == "control"
    assert [a["units"] for a in analysis["arms"]] == [active["control"], active["fast"]]
    assert analysis["srm"]["alarm"] is False
    assert analysis["arms"][1]["verdict"] in get_args(Verdict)
    # Always-valid by default, and it says so; the data ended long before today, so every day counts.
    assert analysis["interval_kind"] == "always-valid" and analysis["look_day"] >= 1
    assert analysis["intervals"].startswith("always-valid")
    cpo = analysis["arms"][1]["comparisons"]["cpo"]
    assert cpo["relative_ci_low"] is not None and cpo["relative_ci_low"] >= -1  # a lift never below -100%
    assert analysis["arms"][1]["sizing"]["target_lift"] == 0.10

    code, out, _ = run("--db", str(db), "--experiment", "speed", "--weights", "control=1,fast=1")
    assert code == 0
    assert f'Experiment "speed": control control, 2 arms, {active.sum()} installs' in out
    assert "Sample ratio:" in out and ": ok" in out
    verdict_row = next(line for line in out.splitlines() if line.startswith("fast "))
    assert analysis["arms"][1]["verdict"] in verdict_row
    for label in ("attempt rate", "feedback rate", "acceptance rate", "tokens/accept", "chars/token", "CPO"):
        assert label in out
    assert "Guardrails" in out
    assert "Intervals: always-valid" in out and "What this size can tell" in out

    code, out, _ = run("--db", str(db), "--experiment", "speed", "--fixed-horizon", "--target-lift", "0.2")
    assert code == 0
    assert "Intervals: fixed-horizon 95%" in out and "for a 20% lift" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--db", "{tmp}/missing.db"], "no telemetry store at"),
        (["--db", "{tmp}/corrupt.db"], "not a readable telemetry store"),
        (["--db", "{tmp}/ok.db", "--since", "yesterday-ish"], "--since"),
        (["--db", "{tmp}/ok.db", "--experiment", "nope"], "no events for experiment 'nope'"),
        (["--db", "{tmp}/ok.db", "--weights", "A=x"], "--weights"),
        (["--db", "{tmp}/ok.db", "--experiment", "e", "--target-lift", "-1"], "--target-lift"),
    ],
)
def test_errors_are_one_line_with_status_2(tmp_path: Path, argv: list[str], message: str) -> None:
    (tmp_path / "corrupt.db").write_bytes(b"\x00garbage" * 512)
    write_store(tmp_path / "ok.db", install_events("i1", "python", T0))
    code, out, err = run(*(a.format(tmp=tmp_path) for a in argv))
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("opportune report: error: ")
    assert message in err
    assert "Traceback" not in err


def test_parse_weights() -> None:
    assert report.parse_weights("A=1, B=2.5") == {"A": 1.0, "B": 2.5}
    with pytest.raises(ValueError):
        report.parse_weights("A")
    with pytest.raises(ValueError):
        report.parse_weights("A=-1")


def test_render_text_and_json_for_the_server(stores: tuple[Path, Path]) -> None:
    a, b = stores
    text = report.render_text([a, b], since="2025-06-16")
    data = report.render_json([a, b], since="2025-06-16", by="language")
    assert "1 install" in text and "Funnel" in text
    assert [g["group"]["language"] for g in data["groups"]] == ["go"]
    assert json.loads(json.dumps(data)) == data
