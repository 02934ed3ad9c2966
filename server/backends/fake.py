"""A fast, deterministic stand-in for a model: for unit tests and protocol tests only, never for users.

By default it continues the prompt the way a copy model would: it finds the latest earlier place where the
last few characters of the prompt occurred and repeats what followed.  Tests can pass their own
``continuation`` (an oracle that knows the true continuation) and a per-token latency.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from opportune.server.backends.base import Cancelled, Generation, GenerationRequest
from opportune.server.prompt import Prompt, as_prompt
from opportune.server.templates import FimTemplate, render

_TOKEN = re.compile(r"\s+|\w{1,4}|[^\w\s]")


def fake_tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def copy_continuation(prompt: str, max_chars: int = 200) -> str:
    for width in (24, 12, 6, 3):
        if len(prompt) <= width:
            continue
        key = prompt[-width:]
        at = prompt.rfind(key, 0, len(prompt) - 1)
        if at != -1:
            start = at + width
            return prompt[start : start + max_chars]
    return ""


class FakeBackend:
    model_id = "fake"
    fim: FimTemplate | None = None  # a test may give the fake a FIM format; then it is shown the suffix

    def __init__(
        self,
        continuation: Callable[[str], str] | None = None,
        token_latency_ms: float = 0.0,
        prefill_ms_per_token: float = 0.0,
        confidence: Callable[[int, str], float] | None = None,
    ) -> None:
        self.continuation = continuation or copy_continuation
        # A test's stand-in for the model's token probabilities: (token index, token text) -> probability.
        self.confidence = confidence
        self.token_latency_ms = token_latency_ms
        self.prefill_ms_per_token = prefill_ms_per_token
        self.calls = 0
        self.prewarms = 0
        self._cached: list[str] = []

    @property
    def takes_suffix(self) -> bool:
        return self.fim is not None

    def render(self, prompt: Prompt | str) -> str:
        return render(as_prompt(prompt), self.fim)

    def tokenize(self, text: str) -> list[int]:
        return [hash(t) & 0xFFFFFF for t in fake_tokens(text)]

    def count_tokens(self, text: str) -> int:
        return len(fake_tokens(text))

    def _prefill(self, prompt: str, cancelled: Callable[[], bool]) -> tuple[int, int]:
        tokens = fake_tokens(prompt)
        reused = 0
        for a, b in zip(self._cached, tokens, strict=False):
            if a != b:
                break
            reused += 1
        for _ in range(reused, len(tokens)):
            if cancelled():
                self._cached = tokens[:reused]
                raise Cancelled
            if self.prefill_ms_per_token:
                time.sleep(self.prefill_ms_per_token / 1000)
        self._cached = tokens
        return len(tokens), reused

    def prewarm(self, prompt: Prompt | str, cancelled: Callable[[], bool]) -> int:
        self.prewarms += 1
        n, reused = self._prefill(self.render(prompt), cancelled)
        return n - reused

    def generate(self, request: GenerationRequest) -> Generation:
        start = time.perf_counter()
        if request.cancelled():
            raise Cancelled
        self.calls += 1
        prompt = self.render(request.prompt)
        prompt_tokens, reused = self._prefill(prompt, request.cancelled)
        prefill_ms = (time.perf_counter() - start) * 1000
        text = ""
        first: float | None = None
        reason = "length"
        pieces = fake_tokens(self.continuation(prompt))
        confidence: list[tuple[int, float]] = []
        n = 0
        for piece in pieces[: request.max_tokens]:
            if request.cancelled():
                reason = "cancelled"
                break
            if self.token_latency_ms:
                time.sleep(self.token_latency_ms / 1000)
            if self.confidence is not None:
                probability = self.confidence(n, piece)
                confidence.append((len(text), probability))
                if request.on_confidence:
                    request.on_confidence(len(text), probability)
            text += piece
            n += 1
            if first is None:
                first = (time.perf_counter() - start) * 1000
            if request.on_text:
                request.on_text(text, n)
            if request.should_stop(text):
                reason = "stop"
                break
        else:
            if len(pieces) < request.max_tokens:
                reason = "eos"
        return Generation(
            text=text,
            tokens=n,
            stop_reason=reason,  # type: ignore[arg-type]
            prompt_tokens=prompt_tokens,
            reused_tokens=reused,
            prefill_ms=prefill_ms,
            first_token_ms=first,
            total_ms=(time.perf_counter() - start) * 1000,
            confidence=confidence,
        )

    def close(self) -> None:
        pass
