"""The engine on a fake backend (named as such): opportunities, typeahead cache, progressive answers,
cancellation before the model, outcome inference and backend failures."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from engine_support import URI, Typist

from opportune.server.backends.base import BackendError, Generation, GenerationRequest
from opportune.server.backends.fake import FakeBackend
from opportune.server.completion import Effective, Engine
from opportune.server.config import Settings, resolve
from opportune.server.documents import Position
from opportune.telemetry import events as ev


def settings(**completion: Any) -> Settings:
    s, errors = resolve({"completion": {"prewarm": False, **completion}, "model": {"backend": "fake"}})
    assert errors == []
    return s


def make(backend: Any, **completion: Any) -> tuple[Engine, list[ev.Event]]:
    events: list[ev.Event] = []
    return Engine(lambda _s: backend, Effective(settings(**completion)), record=events.append), events


def kinds(events: list[ev.Event], kind: type[ev.Event]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


async def test_typeahead_cache_answers_without_a_model_call() -> None:
    backend = FakeBackend(continuation=lambda _p: "math.pi * r ** 2\n")
    engine, events = make(backend)
    t = Typist(engine)
    t.type("return ")
    first = await t.complete()
    assert first is not None and first.text == "math.pi * r ** 2"
    assert backend.calls == 1
    for ch in "math.":
        t.type(ch)
        second = await t.complete()
    assert second is not None and second.text == "pi * r ** 2" and second.source == "cache"
    assert backend.calls == 1
    attempts = kinds(events, ev.Attempt)
    assert [a.source for a in attempts] == ["model"] + ["cache"] * 5
    engine.shutdown()


async def test_backspace_brings_the_suggestion_back_from_cache() -> None:
    backend = FakeBackend(continuation=lambda _p: "math.pi * r ** 2\n")
    engine, _ = make(backend)
    t = Typist(engine)
    t.type("return ")
    await t.complete()
    end = t.doc.position_at(len(t.doc.text))
    start = Position(end.line, end.character - 1)
    t.doc.apply(start, end, "")
    t.version += 1
    engine.change(URI, t.version, [(start, end, "")])
    again = await t.complete()
    assert again is not None and again.text == " math.pi * r ** 2" and backend.calls == 1
    engine.shutdown()


async def test_progressive_answer_then_the_longer_continuation_from_the_same_generation() -> None:
    # 60 ms a token against an 150 ms deadline: the first answer is partial.
    backend = FakeBackend(continuation=lambda _p: "math.pi * radius * radius\n", token_latency_ms=60)
    engine, _ = make(backend, deadline_ms=150)
    t = Typist(engine)
    t.type("return ")
    first = await t.complete()
    assert first is not None and 0 < len(first.text) < len("math.pi * radius * radius")
    assert "math.pi * radius * radius".startswith(first.text)
    await asyncio.sleep(0.8)  # the generation went on into the typeahead cache
    t.type(first.text[:1])
    second = await t.complete()
    assert second is not None and second.source == "cache"
    assert first.text[:1] + second.text == "math.pi * radius * radius"
    assert backend.calls == 1
    engine.shutdown()


async def test_superseded_request_never_reaches_the_model() -> None:
    backend = FakeBackend(continuation=lambda _p: "x\n", token_latency_ms=5)
    engine, events = make(backend, debounce_ms=80)
    t = Typist(engine)
    t.type("r")
    first = asyncio.ensure_future(t.complete())
    await asyncio.sleep(0.01)
    t.type("e")  # a keystroke during the debounce
    second = await t.complete()
    assert await first is None
    assert second is not None
    assert backend.calls == 1
    assert [s.rule for s in kinds(events, ev.Skip)] == ["debounced"]
    engine.shutdown()


async def test_cancel_stops_a_running_generation() -> None:
    backend = FakeBackend(continuation=lambda _p: "a" * 400, token_latency_ms=20)
    engine, events = make(backend, deadline_ms=5000, max_tokens=200, single_line_max_tokens=200)
    t = Typist(engine)
    t.type("x = ")
    task = asyncio.ensure_future(t.complete())
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)
    assert not engine.busy
    response = kinds(events, ev.Response)[-1]
    assert response.loss_reason == "cancelled"
    engine.shutdown()


async def test_opportunities_are_counted_before_any_arm_rule() -> None:
    backend = FakeBackend(continuation=lambda _p: "1\n")
    engine, events = make(backend, enabled=False)
    t = Typist(engine)
    t.type("x")
    await t.complete()
    t.type(" = compute(a,\n  b, c)\nnext_line = 2\n")  # a paste: an edit, not an opportunity
    assert len(kinds(events, ev.Opportunity)) == 1
    assert [e.edit_kind for e in kinds(events, ev.Edit)] == ["open", "bulk"]
    assert [s.rule for s in kinds(events, ev.Skip)] == ["disabled"]
    assert kinds(events, ev.Attempt) == []
    engine.shutdown()


async def test_outcomes_are_inferred_from_edits() -> None:
    backend = FakeBackend(continuation=lambda p: "radius\n" if p.endswith("= ") else "total\n")
    engine, events = make(backend)
    t = Typist(engine)
    t.type("r = ")
    s1 = await t.complete()
    assert s1 is not None and s1.text == "radius"
    t.type("radius")  # accepted in one edit (Tab): not an opportunity
    outcomes = kinds(events, ev.Outcome)
    assert outcomes[-1].outcome == "accepted" and outcomes[-1].accepted_chars == 6 and outcomes[-1].inferred
    assert len(kinds(events, ev.Opportunity)) == 1  # "r = " typed; "radius" accepted
    t.type("\n    ")  # Enter with auto-indent: an opportunity
    t.type("y = ")
    s2 = await t.complete()
    assert s2 is not None
    t.type("q")  # diverges
    assert kinds(events, ev.Outcome)[-1].outcome == "rejected"
    shown = kinds(events, ev.Shown)
    assert all(s.inferred for s in shown) and len(shown) == 2
    engine.shutdown()


async def test_explicit_client_reports_win_over_inference() -> None:
    backend = FakeBackend(continuation=lambda _p: "radius\n")
    engine, events = make(backend)
    t = Typist(engine)
    t.type("r = ")
    s = await t.complete()
    assert s is not None
    engine.did_show(s.completion_id)
    engine.did_accept(s.completion_id, 3)
    explicit = [o for o in kinds(events, ev.Outcome) if not o.inferred]
    assert explicit[-1].outcome == "partial" and explicit[-1].accepted_chars == 3
    assert engine.tracker.client_reports_shown
    engine.shutdown()


async def test_missing_model_answers_nothing_and_tells_the_user_once() -> None:
    told: list[str] = []

    def broken(_s: Settings) -> Any:
        raise BackendError("model file not found: /nope.gguf (pass --model PATH to a .gguf file)")

    events: list[ev.Event] = []
    engine = Engine(broken, Effective(settings()), record=events.append, notify_user=told.append)
    t = Typist(engine)
    for ch in "ab":
        t.type(ch)
        assert await t.complete() is None
    await asyncio.sleep(0.05)
    assert len(told) == 1 and "model file not found" in told[0]
    assert {r.loss_reason for r in kinds(events, ev.Response)} == {"error"}
    engine.shutdown()


class RaisingBackend(FakeBackend):
    def generate(self, request: GenerationRequest) -> Generation:
        raise RuntimeError("GGML_ASSERT failed")


async def test_backend_exception_is_an_error_loss_not_a_crash() -> None:
    engine, events = make(RaisingBackend())
    t = Typist(engine)
    t.type("x")
    assert await t.complete() is None
    assert kinds(events, ev.Response)[-1].loss_reason == "error"
    t.type("y")
    assert await t.complete() is None  # still answering
    engine.shutdown()


async def test_mid_word_is_skipped_and_counted() -> None:
    engine, events = make(FakeBackend())
    text = "value = compute(x)\n"
    t = Typist(engine, text)
    # Type inside "compute": cursor in the middle of a word.
    at = Position(0, 11)
    t.doc.apply(at, at, "e")
    engine.change(URI, 2, [(at, at, "e")])
    assert await engine.complete(URI, Position(0, 12)) is None
    assert [s.rule for s in kinds(events, ev.Skip)] == ["mid_word"]
    engine.shutdown()


async def test_after_a_partial_accept_the_rest_is_offered_under_the_same_id() -> None:
    backend = FakeBackend(continuation=lambda _p: "math.pi * r ** 2\n")
    engine, events = make(backend)
    t = Typist(engine)
    t.type("return ")
    first = await t.complete()
    assert first is not None
    t.type("math.")  # a word accept inserts several characters at once
    rest = await t.complete()
    assert rest is not None and rest.text == "pi * r ** 2" and rest.completion_id == first.completion_id
    assert len(kinds(events, ev.Attempt)) == 1 and len(kinds(events, ev.Opportunity)) == 1
    engine.did_accept(rest.completion_id)
    assert kinds(events, ev.Outcome)[-1].accepted_chars == len("math.pi * r ** 2")
    engine.shutdown()


async def test_auto_closed_brackets_still_make_an_opportunity() -> None:
    backend = FakeBackend(continuation=lambda _p: "radius)\n")
    engine, events = make(backend)
    t = Typist(engine)
    t.type("return area_of(")
    # The editor inserts the closing bracket with the opening one and leaves the cursor between them.
    end = t.doc.position_at(len(t.doc.text))
    t.doc.apply(end, end, "()")
    engine.change(URI, 9, [(end, end, "()")])
    inside = t.doc.position_at(len(t.doc.text) - 1)
    suggestion = await engine.complete(URI, inside)
    assert suggestion is not None and suggestion.text == "radius"  # the ")" after the cursor is not repeated
    assert len(kinds(events, ev.Attempt)) == 1
    engine.shutdown()
