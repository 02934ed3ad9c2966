"""A simulated developer: types a span of real code into the engine keystroke by keystroke, in real time.

It behaves like an editor with a person at it: every keystroke is an edit followed by an inline-completion
request; a request still pending at the next keystroke is cancelled (as an editor sends $/cancelRequest);
an answer that arrives in time is shown; the person accepts it when it matches what they were about to
type (whole, or up to a word or line boundary: a partial accept), and otherwise types on.  The engine
records the telemetry as it would for a real editor, so the funnel and CPO come from the same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from opportune.server.completion import Engine, Suggestion
from opportune.server.documents import Document, Position


@dataclass(frozen=True)
class TypingModel:
    """Keystroke timing: a steady rate with pauses after some words and at punctuation, as people type."""

    keys_per_second: float = 6.5
    word_pause_probability: float = 0.25
    pause_s: float = 1.0
    jitter: float = 0.3
    seed: int = 0

    def gaps(self, text: str) -> list[float]:
        rng = random.Random(self.seed)
        base = 1.0 / self.keys_per_second
        out = []
        for i, ch in enumerate(text):
            gap = base * (1 + rng.uniform(-self.jitter, self.jitter))
            nxt = text[i + 1] if i + 1 < len(text) else ""
            boundary = not (ch.isalnum() or ch == "_") and (nxt.isalnum() or nxt in "\n")
            if ch in ".,:;()[]{}\n" or (boundary and rng.random() < self.word_pause_probability):
                gap += self.pause_s * rng.uniform(0.6, 1.4) if ch in ".,:;\n" or boundary else 0.0
            out.append(gap)
        return out


@dataclass
class ReplayStats:
    keystrokes: int = 0
    requests: int = 0
    answered_in_time: int = 0
    accepted: int = 0
    accepted_chars: int = 0
    typed_chars: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    shown: list[tuple[int, str]] = field(default_factory=list)  # (offset in the span, ghost text)


def accept_length(suggestion: str, upcoming: str) -> int:
    """How much of ``suggestion`` a person who is about to type ``upcoming`` takes: all, or up to a boundary."""
    if not suggestion:
        return 0
    if upcoming.startswith(suggestion):
        return len(suggestion)
    n = 0
    for a, b in zip(suggestion, upcoming, strict=False):
        if a != b:
            break
        n += 1
    # A partial accept ends where a person would stop: after a word or at a line end.
    while (
        n > 0
        and (suggestion[n - 1].isalnum() or suggestion[n - 1] == "_")
        and (n < len(upcoming) and (upcoming[n].isalnum() or upcoming[n] == "_"))
    ):
        n -= 1
    return n if n >= 2 else 0


async def replay(
    engine: Engine,
    uri: str,
    text: str,
    start: int,
    end: int,
    *,
    typing: TypingModel | None = None,
    language_id: str = "",
    accept: bool = True,
    on_shown: Callable[[int, Suggestion, int], None] | None = None,
    time_scale: float = 1.0,
) -> ReplayStats:
    """Type ``text[start:end]`` into a document holding the rest of ``text``; returns what happened."""
    typing = typing or TypingModel()
    # People write new code on a line of its own: the span's final newline stays in the document, so the
    # cursor never has the following code on its line.
    if end > start and text[end - 1] == "\n":
        end -= 1
    span = text[start:end]
    doc = Document(uri, text[:start] + text[end:])
    engine.open(uri, doc.text, language_id, 1)
    version = 1
    stats = ReplayStats()
    gaps = typing.gaps(span)
    i = 0
    pending: asyncio.Task[Suggestion | None] | None = None
    pending_at = 0.0

    def edit(insert: str) -> None:
        nonlocal version
        offset = start + i
        pos = doc.position_at(offset)
        doc.apply(pos, pos, insert)
        version += 1
        engine.change(uri, version, [(pos, pos, insert)])

    while i < len(span):
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending
        ch = span[i]
        edit(ch)
        i += 1
        stats.keystrokes += 1
        stats.typed_chars += 1
        if i >= len(span):
            break
        cursor = start + i
        pos: Position = doc.position_at(cursor)
        pending = asyncio.ensure_future(engine.complete(uri, pos))
        pending_at = time.perf_counter()
        stats.requests += 1
        gap = gaps[i - 1] * time_scale
        done, _ = await asyncio.wait({pending}, timeout=gap)
        if not done:
            continue
        suggestion = pending.result()
        pending = None
        if suggestion is None:
            continue
        latency = (time.perf_counter() - pending_at) * 1000
        stats.answered_in_time += 1
        stats.latencies_ms.append(latency)
        stats.shown.append((i, suggestion.text))
        engine.did_show(suggestion.completion_id)
        upcoming = span[i:]
        n = accept_length(suggestion.text, upcoming) if accept else 0
        if on_shown:
            on_shown(i, suggestion, n)
        if n == 0:
            engine.did_reject(suggestion.completion_id, "typed_over")
            # The person keeps typing; the rest of the gap already passed while waiting.
            remaining = gap - latency / 1000
            if remaining > 0:
                await asyncio.sleep(remaining)
            continue
        # Accept: one keystroke (Tab) inserts the accepted text.
        taken = suggestion.text[:n]
        offset = start + i
        p = doc.position_at(offset)
        doc.apply(p, p, taken)
        version += 1
        engine.change(uri, version, [(p, p, taken)])
        engine.did_accept(suggestion.completion_id, None if n == len(suggestion.text) else n)
        i += n
        stats.accepted += 1
        stats.accepted_chars += n
        await asyncio.sleep(gaps[i - 1] * time_scale if i - 1 < len(gaps) else 0)
    if pending is not None and not pending.done():
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pending
    engine.close(uri)
    return stats
