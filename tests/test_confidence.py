"""Confidence-shaped answers through the engine, on the fake backend with scripted token probabilities:
the suggestion is cut where the model was unsure, nothing is shown when it was unsure from the start, and
the generation goes on into the typeahead cache either way."""

from __future__ import annotations

import asyncio
from typing import Any

from opportune.server.backends.fake import FakeBackend, fake_tokens
from opportune.server.completion import Effective, Engine
from opportune.server.config import resolve
from opportune.server.documents import Document, Position
from opportune.telemetry import events as ev

URI = "file:///project/calc.py"


class Typist:
    """Types at the end of one document, as an editor would report it."""

    def __init__(self, engine: Engine, text: str = "import math\n\n\ndef area(r):\n    ") -> None:
        self.engine = engine
        self.doc = Document(URI, text)
        self.version = 1
        engine.open(URI, text, "python", 1)

    def type(self, chars: str) -> Position:
        end = self.doc.position_at(len(self.doc.text))
        self.doc.apply(end, end, chars)
        self.version += 1
        self.engine.change(URI, self.version, [(end, end, chars)])
        return self.doc.position_at(len(self.doc.text))

    async def complete(self, invoked: bool = False) -> Any:
        return await self.engine.complete(URI, self.doc.position_at(len(self.doc.text)), invoked)


def make(backend: FakeBackend, **completion: Any) -> tuple[Engine, list[ev.Event]]:
    settings, errors = resolve({"completion": {"prewarm": False, **completion}, "model": {"backend": "fake"}})
    assert errors == []
    events: list[ev.Event] = []
    return Engine(lambda _s: backend, Effective(settings), record=events.append), events


def responses(events: list[ev.Event]) -> list[ev.Response]:
    return [e for e in events if isinstance(e, ev.Response)]


ANSWER = "math.pi * r ** 2\n"
TOKENS = fake_tokens(ANSWER)  # math . pi ␣ * ␣ r ␣ * * ␣ 2 \n


def unsure_at(index: int, low: float = 0.2) -> FakeBackend:
    return FakeBackend(continuation=lambda _p: ANSWER, confidence=lambda i, _t: low if i == index else 0.9)


async def test_a_suggestion_is_cut_before_the_first_unsure_token() -> None:
    assert TOKENS[4] == "*"
    engine, _ = make(unsure_at(4), min_confidence=0.5)
    t = Typist(engine)
    t.type("return ")
    first = await t.complete()
    assert first is not None and first.text == "math.pi"
    engine.shutdown()


async def test_typing_through_the_unsure_token_shows_the_rest_from_the_cache() -> None:
    backend = unsure_at(4)
    engine, _ = make(backend, min_confidence=0.5)
    t = Typist(engine)
    t.type("return ")
    await t.complete()
    await asyncio.sleep(0.05)  # the generation went on past the cut
    for ch in "math.pi ":  # key by key (one edit of the whole suggestion would be an accept)
        t.type(ch)
        at_doubt = await t.complete()
    assert at_doubt is None  # the next token is the unsure one: nothing is better than a guess
    t.type("*")
    after = await t.complete()
    assert after is not None and after.text == " r ** 2" and after.source == "cache"
    assert backend.calls == 1
    engine.shutdown()


async def test_nothing_is_shown_when_the_first_token_is_unsure_and_the_loss_says_why() -> None:
    backend = unsure_at(0, low=0.05)
    engine, events = make(backend, min_confidence=0.3)
    t = Typist(engine)
    t.type("return ")
    assert await t.complete() is None
    [response] = responses(events)
    assert response.loss_reason == "unsure"
    await asyncio.sleep(0.05)
    for ch in "math":  # the user typed what the model was unsure of: the rest is confident, from the cache
        t.type(ch)
        rest = await t.complete()
    assert rest is not None and rest.text == ".pi * r ** 2" and backend.calls == 1
    engine.shutdown()


async def test_the_cut_is_off_at_threshold_zero() -> None:
    engine, _ = make(unsure_at(0, low=0.01), min_confidence=0.0)
    t = Typist(engine)
    t.type("return ")
    whole = await t.complete()
    assert whole is not None and whole.text == "math.pi * r ** 2"
    engine.shutdown()


async def test_a_block_cut_by_the_token_limit_is_shown_to_its_last_whole_statement() -> None:
    body = "total = 0\n    for x in xs:\n        total += x\n    if total > 10 {\n        return"
    backend = FakeBackend(continuation=lambda _p: body)
    engine, _ = make(backend, max_tokens=len(fake_tokens(body)), multiline="always")
    t = Typist(engine)
    answer = await t.complete(invoked=True)
    assert answer is not None
    assert answer.text == "total = 0\n    for x in xs:\n        total += x"
    engine.shutdown()
