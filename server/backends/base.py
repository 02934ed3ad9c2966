"""What the engine needs from a model: tokenize, prefill, and stream a continuation that can be stopped."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from opportune.server.prompt import Prompt

StopReason = Literal["stop", "length", "eos", "cancelled", "deadline", "error"]


class Cancelled(Exception):
    """The request was superseded or cancelled before or during prefill."""


class BackendError(Exception):
    """The model could not be loaded or failed; the message is meant for the user."""


@dataclass
class GenerationRequest:
    # The structured prompt, rendered by the backend; a str is a plain prompt (code before the cursor only).
    prompt: Prompt | str
    max_tokens: int
    temperature: float = 0.0
    # Called with the text so far after every token; True ends generation (a sufficient stop).
    should_stop: Callable[[str], bool] = lambda _text: False
    # Checked before prefill, between prefill chunks and after every token.
    cancelled: Callable[[], bool] = lambda: False
    # Called after every token with the text so far (the engine's live view of the generation).
    on_text: Callable[[str, int], None] | None = None
    stops: tuple[str, ...] = ()
    # Called before ``on_text`` for each token whose probability the backend knows: the length of the text
    # before the token, and the probability the model gave it (what a confidence cut reads).
    on_confidence: Callable[[int, float], None] | None = None


@dataclass
class Generation:
    text: str
    tokens: int
    stop_reason: StopReason
    prompt_tokens: int = 0
    reused_tokens: int = 0
    prefill_ms: float = 0.0
    first_token_ms: float | None = None
    total_ms: float = 0.0
    token_times_ms: list[float] = field(default_factory=list)
    # (text length before the token, its probability) for each token whose probability is known.
    confidence: list[tuple[int, float]] = field(default_factory=list)


class Backend(Protocol):
    model_id: str

    @property
    def takes_suffix(self) -> bool:
        """Whether the backend shows its model the code after the cursor (a FIM template, /infill, a
        suffix field): the prompt builder spends budget on the suffix only then."""
        ...

    def count_tokens(self, text: str) -> int: ...

    def tokenize(self, text: str) -> list[int]: ...

    def prewarm(self, prompt: Prompt | str, cancelled: Callable[[], bool]) -> int:
        """Evaluate a prompt into the KV cache without generating; returns tokens evaluated."""
        ...

    def generate(self, request: GenerationRequest) -> Generation: ...

    def close(self) -> None: ...
