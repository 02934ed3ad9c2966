"""The typing simulation through the engine, read back with the telemetry code: a model whose suggestions are
the true continuation after a fixed latency gives the CPO computed by hand, and a latency above the time
between keys makes the feedback rate fall as the typist's pauses say it should."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from opportune.server.backends.base import Cancelled, Generation, GenerationRequest
from opportune.server.backends.fake import FakeBackend
from opportune.server.config import Settings
from opportune.server.eval.corpus import SourceFile
from opportune.server.eval.runner import EventRouter, run_typing
from opportune.server.eval.tasks import Span
from opportune.server.eval.typing import TypingModel
from opportune.server.session import start_session
from opportune.telemetry.store import EventStore

SOURCE = '''\
"""Sums for the evaluation test."""

alpha = 1
beta = 2
gamma = 3
total = alpha + beta * gamma
a1, b2 = gamma, beta; e5 = a1, b2; f6 = alpha
print(total)
'''
LINE = "total = alpha + beta * gamma"
PAUSED = "a1, b2 = gamma, beta; e5 = a1, b2; f6 = alpha"


class Oracle(FakeBackend):
    """Suggests the next ``width`` characters of the true file after ``latency_s``, stopping if cancelled."""

    def __init__(self, latency_s: float, width: int = 5) -> None:
        super().__init__(continuation=self.truth)
        self.latency_s = latency_s
        self.width = width

    def truth(self, prompt: str) -> str:
        for size in (40, 20, 10):
            tail = prompt[-size:]
            at = SOURCE.find(tail)
            if at != -1 and SOURCE.find(tail, at + 1) == -1:
                return SOURCE[at + size : at + size + self.width]
        return ""

    def generate(self, request: GenerationRequest) -> Generation:
        deadline = time.perf_counter() + self.latency_s
        while time.perf_counter() < deadline:
            if request.cancelled():
                raise Cancelled
            time.sleep(0.002)
        return super().generate(request)


async def typed(tmp_path: Path, text: str, latency_s: float, typing: TypingModel, **kwargs: Any) -> Any:
    file = SourceFile("sample", "sums.py", "python", SOURCE)
    start = SOURCE.index(text)
    span = Span("sums", file, start, start + len(text))
    router = EventRouter()
    empty = tmp_path / "empty.toml"
    empty.write_text("")

    def factory(_settings: Settings) -> Oracle:
        return Oracle(latency_s)

    # No typeahead cache: every keystroke asks the model, so the arithmetic below is the whole story.
    options = {"completion": {"typeaheadCache": False, "prewarm": False}, "telemetry": {"installId": "t"}}
    session = start_session(options, store=router, backend_factory=factory, config_path=empty)
    try:
        spans, overall, latencies = await run_typing(
            session.engine,
            [span],
            EventStore(tmp_path / "t.db", flush_interval_s=0.2),
            router,
            "t",
            typing,
            **kwargs,
        )
    finally:
        session.close()
    return spans[0], overall, latencies


def by_hand(span: str, width: int) -> tuple[int, int]:
    """The typist types one key; the suggestion is the next ``width`` characters (trailing spaces trimmed, as
    the editor shows it), accepted whole; repeat.  Returns (opportunities, accepted characters)."""
    i = opportunities = accepted = 0
    while i < len(span):
        i += 1
        opportunities += 1
        if i >= len(span):
            break
        suggestion = span[i : i + width].rstrip()
        assert len(suggestion) >= 2, "a one-character accept would count as typing; pick another span"
        i += len(suggestion)
        accepted += len(suggestion)
    return opportunities, accepted


STEADY = TypingModel(keys_per_second=4, jitter=0.0, word_pause_probability=0.0, pause_s=0.0)


async def test_a_true_continuation_in_time_gives_the_cpo_computed_by_hand(tmp_path: Path) -> None:
    opportunities, accepted = by_hand(LINE, 5)
    assert (opportunities, accepted) == (5, 23)  # t|otal, ' '|= alp, h|a + b, e|ta *, ' '|gamma
    span, overall, latencies = await typed(tmp_path, LINE, 0.01, STEADY)
    f = span.funnel
    assert (f.opportunities, f.attempts, f.shown, f.accepted, f.accepted_chars) == (5, 5, 5, 5, 23)
    assert f.cpo == pytest.approx(23 / 5)
    assert f.factor_product() == pytest.approx(f.cpo)
    assert overall.funnel == f and span.replay.accepted_chars == 23
    assert len(latencies) == 5 and all(ms < 200 for ms in latencies)


async def test_latency_above_the_time_between_keys_starves_the_feedback_rate(tmp_path: Path) -> None:
    # Keys every 100 ms, the model takes 300 ms: nothing is ever on screen in time.
    fast_typist = TypingModel(keys_per_second=10, jitter=0.0, word_pause_probability=0.0, pause_s=0.0)
    span, _, _ = await typed(tmp_path, LINE, 0.3, fast_typist)
    f = span.funnel
    assert f.opportunities == len(LINE) and f.attempts == len(LINE) - 1  # no request after the last key
    assert f.shown == 0 and f.feedback_rate == 0.0 and f.cpo == 0.0


async def test_feedback_comes_back_exactly_in_the_typists_pauses(tmp_path: Path) -> None:
    # Steady 50 ms between keys (time scale 0.5), at least 350 ms after , ; and the like; the model takes
    # 150 ms: a suggestion is shown after a pause and only then.  The typist never accepts, so the path of
    # keystrokes is the same whatever is shown.
    typist = TypingModel(keys_per_second=10, jitter=0.0, word_pause_probability=0.0, pause_s=1.0, seed=4)
    gaps = [g * 0.5 for g in typist.gaps(PAUSED)]
    requests = gaps[: len(PAUSED) - 1]  # every key but the last asks for a suggestion
    long = [g for g in requests if g > 0.3]
    assert 3 <= len(long) < len(requests) and all(g <= 0.06 or g >= 0.35 for g in requests)
    span, _, _ = await typed(tmp_path, PAUSED, 0.15, typist, time_scale=0.5, accept=False)
    f = span.funnel
    assert f.attempts == len(requests)
    assert f.shown == len(long)
    assert f.feedback_rate == pytest.approx(len(long) / len(requests))
    assert f.accepted == 0
