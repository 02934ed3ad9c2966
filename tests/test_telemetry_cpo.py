"""The CPO funnel: hand-counted numbers, deduplication, the identity CPO == product of the five factors."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opportune.telemetry.cpo import FACTORS, Funnel, funnel_counts, parse_since, summarise
from opportune.telemetry.events import (
    Attempt,
    Common,
    Edit,
    Event,
    Opportunity,
    Outcome,
    OutcomeKind,
    Response,
    Shown,
    Skip,
)
from opportune.telemetry.frames import EventFrames
from opportune.telemetry.store import EventStore, open_events

PY = Common("i1", "s1", experiment="e", arm="A", language="python", model_id="m1")
GO = Common("i2", "s2", experiment="e", arm="B", language="go", model_id="m2")


def opp(c: Common, oid: str, ts: float = 0.0) -> Opportunity:
    return Opportunity(c, opportunity_id=oid, document_hash="h", edit_kind="insert", ts=ts)


def response(
    c: Common, aid: str, ms: float, loss: str | None = None, cid: str | None = None, stages: str = ""
) -> Response:
    return Response(
        c,
        attempt_id=aid,
        latency_first_ms=None,
        latency_total_ms=ms,
        generated_tokens=3,
        stop_reason="eol",
        chars=10,
        lines=1,
        loss_reason=loss,  # type: ignore[arg-type]
        completion_id=cid,
        stages_ms=stages,
    )


def scenario() -> list[Event]:
    """A session whose funnel was counted by hand (see the expected numbers in the tests)."""
    events: list[Event] = [opp(PY, f"o{i}") for i in range(1, 7)]
    events += [
        Edit(PY, document_hash="h", edit_kind="bulk", chars_inserted=500, chars_deleted=0),  # a paste
        Edit(PY, document_hash="h", edit_kind="bulk", chars_inserted=0, chars_deleted=80),  # a big undo
        Skip(PY, opportunity_id="o2", rule="mid-word"),
        Skip(PY, opportunity_id="o3", rule="mid-word"),
    ]
    events += [Attempt(PY, attempt_id=f"a{i}", opportunity_id=f"o{i}", source="model") for i in (1, 4, 5, 6)]
    events += [
        response(PY, "a1", 100.0, cid="c1", stages='{"prompt": 2, "model": 90}'),
        response(PY, "a4", 200.0, cid="c4", stages='{"prompt": 4, "model": 180}'),
        response(PY, "a5", 500.0, loss="deadline", stages='{"prompt": 6}'),
        response(PY, "a6", 50.0, loss="error"),
        # c1 reported by the client and inferred by the server: shown once.
        Shown(PY, completion_id="c1", attempt_id="a1"),
        Shown(PY, completion_id="c1", attempt_id="a1", inferred=True),
        Shown(PY, completion_id="c4", attempt_id="a4", inferred=True),
        # c1: the explicit partial accept beats the later inferred full accept.
        Outcome(PY, completion_id="c1", outcome="partial", accepted_chars=6, accepted_tokens=2, ts=4.0),
        Outcome(
            PY,
            completion_id="c1",
            outcome="accepted",
            accepted_chars=10,
            accepted_tokens=3,
            inferred=True,
            ts=5.0,
        ),
        # c4: two explicit reports; the latest (accepted) wins.
        Outcome(PY, completion_id="c4", outcome="rejected", reason="typed-over", ts=1.0),
        Outcome(PY, completion_id="c4", outcome="accepted", accepted_chars=8, accepted_tokens=2, ts=2.0),
    ]
    # Go: accepted without any shown report -> still counts as shown.
    events += [
        opp(GO, "g1"),
        opp(GO, "g2"),
        Attempt(GO, attempt_id="ga", opportunity_id="g1", source="cache"),
    ]
    events += [
        response(GO, "ga", 300.0, cid="c9"),
        Outcome(GO, completion_id="c9", outcome="accepted", accepted_chars=5, accepted_tokens=1),
    ]
    return events


def test_hand_counted_funnel() -> None:
    (total,) = summarise(EventFrames.from_events(scenario()))
    assert total.funnel == Funnel(
        opportunities=8, attempts=5, shown=3, accepted=3, accepted_chars=19, accepted_tokens=5
    )
    assert total.installs == 2

    by_language = {
        s.group["language"]: s for s in summarise(EventFrames.from_events(scenario()), ["language"])
    }
    py = by_language["python"]
    assert py.funnel == Funnel(
        opportunities=6, attempts=4, shown=2, accepted=2, accepted_chars=14, accepted_tokens=4
    )
    f = py.funnel
    assert f.attempt_rate == pytest.approx(4 / 6)
    assert f.feedback_rate == pytest.approx(2 / 4)
    assert f.acceptance_rate == pytest.approx(1.0)
    assert f.tokens_per_accept == pytest.approx(2.0)
    assert f.chars_per_token == pytest.approx(3.5)
    assert f.cpo == pytest.approx(14 / 6)
    assert py.latency_p50_ms == pytest.approx(150.0)
    assert py.latency_p95_ms == pytest.approx(195.0)  # linear interpolation between 100 and 200
    assert py.loss_reasons == {"deadline": 1, "error": 1}
    assert py.skip_rules == {"mid-word": 2}
    assert py.stage_medians_ms == {"model": 135.0, "prompt": 4.0}

    go = by_language["go"]
    assert go.funnel == Funnel(
        opportunities=2, attempts=1, shown=1, accepted=1, accepted_chars=5, accepted_tokens=1
    )
    assert go.latency_p50_ms == 300.0
    assert go.skip_rules == {} and go.loss_reasons == {}


def test_grouping_names_and_columns() -> None:
    frames = EventFrames.from_events(scenario())
    by_model = funnel_counts(frames, ["model"])
    assert list(by_model["model_id"]) == ["m1", "m2"]
    assert list(by_model["opportunities"]) == [6, 2]
    by_arm = {s.group["arm"]: s.funnel.accepted_chars for s in summarise(frames, ["arm"])}
    assert by_arm == {"A": 14, "B": 5}
    by_install = funnel_counts(frames, ["install"])
    assert dict(zip(by_install["install_id"], by_install["attempts"], strict=True)) == {"i1": 4, "i2": 1}
    with pytest.raises(ValueError, match="cannot group by"):
        funnel_counts(frames, ["colour"])


def test_identity_on_recorded_data(tmp_path: Path) -> None:
    """CPO == product of the five factors, on events that went through the real store."""
    db = tmp_path / "t.db"
    with EventStore(db, flush_interval_s=3600) as store:
        for event in scenario():
            store.record(event)
    frames = open_events([db])
    summaries = summarise(frames) + summarise(frames, ["language"]) + summarise(frames, ["arm"])
    assert len(summaries) == 5
    for s in summaries:
        product = s.funnel.factor_product()
        assert product is not None and s.funnel.cpo is not None
        assert math.isclose(product, s.funnel.cpo, rel_tol=1e-12)
        assert s.funnel.cpo == s.funnel.accepted_chars / s.funnel.opportunities


def test_undefined_factors_are_none_not_zero() -> None:
    f = Funnel(opportunities=10, attempts=0)
    assert f.attempt_rate == 0.0
    assert f.feedback_rate is None and f.acceptance_rate is None
    assert f.cpo == 0.0
    assert f.factor_product() is None
    (empty,) = summarise(EventFrames.from_events([]))
    assert empty.funnel == Funnel()
    assert empty.funnel.cpo is None and empty.latency_p95_ms is None


@st.composite
def sessions(draw: st.DrawFn) -> list[Event]:
    """Random but consistent sessions: every shown/outcome belongs to an attempt of an opportunity."""
    events: list[Event] = []
    n_opp = draw(st.integers(1, 30))
    events += [opp(PY, f"o{i}", ts=float(i)) for i in range(n_opp)]
    attempted = draw(st.lists(st.integers(0, n_opp - 1), unique=True))
    for i in attempted:
        events.append(Attempt(PY, attempt_id=f"a{i}", opportunity_id=f"o{i}", source="model"))
        returned = draw(st.booleans())
        events.append(
            response(
                PY, f"a{i}", 100.0, cid=f"c{i}" if returned else None, loss=None if returned else "empty"
            )
        )
        if not returned:
            continue
        for inferred in draw(st.lists(st.booleans(), max_size=2)):
            events.append(Shown(PY, completion_id=f"c{i}", attempt_id=f"a{i}", inferred=inferred))
        for k in range(draw(st.integers(0, 3))):
            kind: OutcomeKind = draw(st.sampled_from(["accepted", "partial", "rejected"]))
            chars = draw(st.integers(1, 80)) if kind != "rejected" else 0
            tokens = draw(st.integers(1, 20)) if kind != "rejected" else 0
            events.append(
                Outcome(
                    PY,
                    completion_id=f"c{i}",
                    outcome=kind,
                    accepted_chars=chars,
                    accepted_tokens=tokens,
                    inferred=draw(st.booleans()),
                    ts=float(k),
                )
            )
    return events


@settings(max_examples=60, deadline=None)
@given(sessions())
def test_identity_and_bounds_hold_for_any_session(events: list[Event]) -> None:
    f = Funnel.from_counts(funnel_counts(EventFrames.from_events(events)).iloc[0])
    assert f.attempts <= f.opportunities
    assert f.shown <= f.attempts
    assert f.accepted <= f.shown
    product = f.factor_product()
    if all(getattr(f, den) for _, den in FACTORS.values()):
        assert product is not None and f.cpo is not None
        assert math.isclose(product, f.cpo, rel_tol=1e-9)
    # One outcome per completion: accepted never exceeds the distinct completions with an outcome.
    assert f.accepted <= len({e.completion_id for e in events if isinstance(e, Outcome)})


def test_parse_since() -> None:
    now = 1_000_000.0
    assert parse_since("7d", now=now) == now - 7 * 86400
    assert parse_since("24h", now=now) == now - 86400
    assert parse_since("30m", now=now) == now - 1800
    assert parse_since("2w", now=now) == now - 14 * 86400
    assert parse_since("2025-01-31") == datetime(2025, 1, 31, tzinfo=UTC).timestamp()
    assert parse_since("2025-01-31T12:00:00+02:00") == datetime(2025, 1, 31, 10, tzinfo=UTC).timestamp()
    with pytest.raises(ValueError, match="ISO date"):
        parse_since("last tuesday")


def test_since_filter_drops_older_events() -> None:
    events = [opp(PY, "old", ts=10.0), opp(PY, "new", ts=20.0)]
    frames = EventFrames.from_events(events).filter(since=15.0)
    assert list(frames.opportunities["opportunity_id"]) == ["new"]


def test_group_by_day() -> None:
    day = 86400.0
    events = [opp(PY, "a", ts=0.5 * day), opp(PY, "b", ts=0.9 * day), opp(GO, "c", ts=1.2 * day)]
    by_day = {
        s.group["day"]: (s.funnel.opportunities, s.installs)
        for s in summarise(EventFrames.from_events(events), ["day"])
    }
    assert by_day == {"1970-01-01": (2, 1), "1970-01-02": (1, 1)}
