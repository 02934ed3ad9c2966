"""The model worker on its own (fake backend): a frozen job in, the generation's own output out; cancellation,
pre-warm priority, the typeahead view of a live generation, model swaps, and the state it leaves to the loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from typing import Any

from opportune.server.backends.base import BackendError, Generation, GenerationRequest
from opportune.server.backends.fake import FakeBackend
from opportune.server.completion.worker import Job, Live, ModelWorker, wait_for_text
from opportune.server.config import Settings, resolve
from opportune.server.postprocess import Shape
from opportune.server.prompt import PromptInput

ONE_LINE = Shape(False, 1, "x = ", "")


def settings(**completion: Any) -> Settings:
    s, errors = resolve({"completion": completion, "model": {"backend": "fake"}})
    assert errors == []
    return s


def job(s: Settings | None = None, text: str = "x = ") -> Job:
    return Job(s or settings(), PromptInput(text, len(text), "a.py", "python"), ONE_LINE)


async def until(condition: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_job_streams_into_its_live_and_records_where_its_time_went() -> None:
    backend = FakeBackend(continuation=lambda _p: "42\n", token_latency_ms=5)
    worker = ModelWorker(lambda _s: backend)
    live = Live.at_cursor("file:///a.py", "x = ", 4, ONE_LINE)
    worker.start(live, job())
    assert worker.busy
    await until(lambda: live.done)
    assert live.text == "42\n" and live.result is not None and live.model_id == "fake"
    assert live.prompt is not None and live.prompt.prefix.endswith("x = ")
    assert live.first_token_at is not None and live.first_token_ms() == live.result.first_token_ms
    await until(lambda: worker.latencies)  # recorded back on the loop
    assert not worker.busy
    worker.shutdown()


async def test_a_job_cancelled_while_queued_never_reaches_the_model() -> None:
    backend = FakeBackend(continuation=lambda _p: "a" * 100, token_latency_ms=20)
    worker = ModelWorker(lambda _s: backend)
    first = Live.at_cursor("file:///a.py", "x = ", 4, ONE_LINE)
    worker.start(first, job())
    second = Live.at_cursor("file:///a.py", "x = ", 4, ONE_LINE)
    worker.start(second, job())  # cancels the first
    third = Live.at_cursor("file:///a.py", "x = ", 4, ONE_LINE)
    worker.start(third, job())  # cancels the second while it waits behind the first
    await until(lambda: first.done and second.done)
    third.cancel.set()
    await until(lambda: third.done)
    assert first.cancel.is_set() and second.cancel.is_set()
    assert backend.calls <= 2 and second.result is None and second.prompt is None
    worker.shutdown()


async def test_a_prewarm_waits_for_an_idle_model_and_gives_way_to_a_request() -> None:
    backend = FakeBackend(continuation=lambda _p: "1\n", prefill_ms_per_token=20)
    worker = ModelWorker(lambda _s: backend)
    warm = Live.at_cursor("file:///a.py", "", 0, ONE_LINE, prewarm=True)
    worker.prewarm(warm, job(text="import os\n" * 30))
    assert not worker.busy  # a prewarm is not generating for anyone
    live = Live.at_cursor("file:///a.py", "x = ", 4, ONE_LINE)
    worker.start(live, job())
    assert warm.cancel.is_set()
    other = Live.at_cursor("file:///a.py", "", 0, ONE_LINE, prewarm=True)
    worker.prewarm(other, job())  # the model is busy: no prewarm
    assert worker.live is live
    await until(lambda: live.done)
    assert live.result is not None
    worker.shutdown()


async def test_typing_that_leaves_a_generation_behind_stops_it_and_typing_along_keeps_it() -> None:
    backend = FakeBackend(continuation=lambda _p: "radius * 2\n", token_latency_ms=30)
    worker = ModelWorker(lambda _s: backend)
    live = Live.at_cursor("file:///a.py", "x = ", 4, ONE_LINE)
    worker.start(live, job())
    await until(lambda: live.text.startswith("radius"))
    worker.follow("file:///a.py", "x = r", 5)
    assert not live.cancel.is_set() and live.remaining_after("x = r", 5) == live.text[1:]
    worker.follow("file:///a.py", "x = q", 5)
    assert live.cancel.is_set() and worker.live is None
    worker.shutdown()


async def test_wait_for_text_answers_a_piece_at_the_soft_deadline_and_the_rest_keeps_coming() -> None:
    backend = FakeBackend(continuation=lambda _p: "alpha beta gamma delta\n", token_latency_ms=40)
    worker = ModelWorker(lambda _s: backend)
    live = Live.at_cursor("file:///a.py", "x = ", 4, ONE_LINE)
    started = time.perf_counter()
    worker.start(live, job())
    text = await wait_for_text(live, lambda: True, "x = ", 4, started, 5000, gap=0.15)
    assert text and "alpha beta gamma delta".startswith(text) and text != "alpha beta gamma delta"
    await until(lambda: live.done)
    assert live.text.startswith("alpha beta gamma delta")
    worker.shutdown()


async def test_a_model_that_cannot_load_is_told_once_until_it_works_again() -> None:
    told: list[str] = []
    attempts = 0

    def flaky(_s: Settings) -> FakeBackend:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise BackendError("no model here")
        return FakeBackend(continuation=lambda _p: "1\n")

    worker = ModelWorker(flaky, told.append)
    for _ in range(2):
        live = Live.at_cursor("file:///a.py", "x = ", 4, ONE_LINE)
        worker.start(live, job())
        await until(lambda live=live: live.done)
        assert live.error == "no model here"
    await until(lambda: told)
    assert told == ["Opportune: no model here"]
    worker.swap_model()  # new model settings: load again
    live = Live.at_cursor("file:///a.py", "x = ", 4, ONE_LINE)
    worker.start(live, job())
    await until(lambda: live.done)
    assert live.result is not None and not worker.told_user
    worker.shutdown()


async def test_the_adaptive_debounce_waits_mid_burst_only_when_the_model_is_slower_than_the_keys() -> None:
    worker = ModelWorker(lambda _s: FakeBackend())
    assert worker.debounce_ms(30, adaptive=True, gap=0.1) == 30  # no latency known yet
    worker.latencies.extend([200.0, 220.0, 180.0])
    assert worker.debounce_ms(30, adaptive=True, gap=0.1) == 110.00000000000001
    assert worker.debounce_ms(30, adaptive=True, gap=0.5) == 0.0
    assert worker.debounce_ms(30, adaptive=False, gap=0.1) == 30
    worker.shutdown()


# ---- defects of the engine before it was split (issue 17) ---------------------------------------------


class RecordingBackend(FakeBackend):
    def __init__(self) -> None:
        super().__init__(continuation=lambda _p: "radius * radius\n")
        self.max_tokens: list[int] = []

    def generate(self, request: GenerationRequest) -> Generation:
        self.max_tokens.append(request.max_tokens)
        return super().generate(request)


async def test_a_generation_uses_the_settings_of_its_request_even_when_they_change_before_it_runs() -> None:
    from engine_support import Typist

    from opportune.server.completion import Effective, Engine

    backend = RecordingBackend()

    def slow_load(_s: Settings) -> RecordingBackend:
        time.sleep(0.3)  # the model is still loading when the request arrives
        return backend

    engine = Engine(slow_load, Effective(settings(prewarm=False, single_line_max_tokens=24)))
    t = Typist(engine)
    t.type("r = ")
    request = asyncio.ensure_future(t.complete())
    await asyncio.sleep(0.05)  # the job waits behind the load
    engine.reconfigure(Effective(settings(prewarm=False, single_line_max_tokens=3)))
    await request
    await until(lambda: backend.max_tokens)
    assert backend.max_tokens == [24]
    engine.shutdown()


class ThreadCheckedDeque(deque[float]):
    def __init__(self, threads: list[str]) -> None:
        super().__init__(maxlen=20)
        self.threads = threads

    def append(self, x: float) -> None:
        self.threads.append(threading.current_thread().name)
        super().append(x)


async def test_the_worker_thread_leaves_the_loops_state_to_the_loop(monkeypatch: Any) -> None:
    """Recent latencies, the told-the-user flag and the live slot are written on the event loop only."""
    from engine_support import Typist

    from opportune.server.completion import Effective, Engine

    loop_state = {"live", "latencies", "told_user"}
    writes: list[tuple[str, str]] = []

    def recording_setattr(self: object, name: str, value: object) -> None:
        if name in loop_state:
            writes.append((name, threading.current_thread().name))
        object.__setattr__(self, name, value)

    monkeypatch.setattr(ModelWorker, "__setattr__", recording_setattr)
    appends: list[str] = []
    engine = Engine(
        lambda _s: FakeBackend(continuation=lambda _p: "radius\n"), Effective(settings(prewarm=False))
    )
    engine.worker.latencies = ThreadCheckedDeque(appends)
    t = Typist(engine)
    for chars in ("r = ", "; y = "):
        t.type(chars)
        assert await t.complete() is not None
    await until(lambda: len(appends) == 2)
    engine.shutdown()
    loop = threading.current_thread().name
    assert appends == [loop, loop]
    assert {name for name, _ in writes} >= {"live", "told_user"}
    assert all(thread == loop for _, thread in writes), writes


async def test_an_unexpected_model_error_is_shown_without_the_secrets_its_text_carried() -> None:
    told: list[str] = []
    token = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4"

    class Leaky(FakeBackend):
        def generate(self, request: GenerationRequest) -> Generation:
            raise RuntimeError(f"POST failed with Authorization: Bearer {token}")

    worker = ModelWorker(lambda _s: Leaky(), told.append)
    live = Live.at_cursor("file:///a.py", "x = ", 4, ONE_LINE)
    worker.start(live, job())
    await until(lambda: live.done)
    await until(lambda: told)
    assert live.error is not None and live.error.startswith("the model failed")
    assert token not in live.error and token not in told[0]
    worker.shutdown()
