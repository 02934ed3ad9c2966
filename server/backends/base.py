"""What the engine needs from a model: tokenize, prefill, and stream a continuation that can be stopped."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

StopReason = Literal["stop", "length", "eos", "cancelled", "deadline", "error"]


class Cancelled(Exception):
    """The request was superseded or cancelled before or during prefill."""


class BackendError(Exception):
    """The model could not be loaded or failed; the message is meant for the user."""


@dataclass(frozen=True)
class FimTemplate:
    """A fill-in-the-middle prompt format, detected from the model's tokenizer."""

    family: str
    prefix: str
    suffix: str
    middle: str
    stops: tuple[str, ...] = ()
    file_separator: str = ""

    def render(self, before: str, after: str) -> str:
        return f"{self.prefix}{before}{self.suffix}{after}{self.middle}"


@dataclass
class GenerationRequest:
    prompt: str
    max_tokens: int
    temperature: float = 0.0
    # Called with the text so far after every token; True ends generation (a sufficient stop).
    should_stop: Callable[[str], bool] = lambda _text: False
    # Checked before prefill, between prefill chunks and after every token.
    cancelled: Callable[[], bool] = lambda: False
    # Called after every token with the text so far (the engine's live view of the generation).
    on_text: Callable[[str, int], None] | None = None
    stops: tuple[str, ...] = ()


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


class Backend(Protocol):
    model_id: str
    fim: FimTemplate | None

    def count_tokens(self, text: str) -> int: ...

    def tokenize(self, text: str) -> list[int]: ...

    def prewarm(self, prompt: str, cancelled: Callable[[], bool]) -> int:
        """Evaluate a prompt into the KV cache without generating; returns tokens evaluated."""
        ...

    def generate(self, request: GenerationRequest) -> Generation: ...

    def close(self) -> None: ...
