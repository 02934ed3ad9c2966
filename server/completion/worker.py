"""The model worker: the backend's lifecycle, generation, pre-warm, the typeahead cache and cancellation.

One dedicated thread runs the model.  A request hands it a frozen ``Job`` (the settings in force when the
request set out, the prompt input, the suggestion's shape) and gets back a ``Live``: the generation's own
output, which only the worker writes while it runs and the event loop reads.  Everything else here (the
live slot, recent first-token latencies, whether the user was told of a failure) belongs to the event loop:
the worker reports back with ``call_soon_threadsafe``, never by writing shared state.

A newer request cancels an older generation (before prefill, between prefill chunks, or after any token);
a generation that outlives its request keeps running into the typeahead cache until the user's typing
diverges from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from opportune.server.backends.base import Backend, BackendError, Cancelled, Generation, GenerationRequest
from opportune.server.config import CompletionSettings, Settings
from opportune.server.postprocess import Shape, confident_length, finish, stop_reached
from opportune.server.prompt import LineTokenCounter, Prompt, PromptInput, build_prompt
from opportune.telemetry import events as ev
from opportune.telemetry.redact import redact_patterns

log = logging.getLogger(__name__)

# Per keystroke the engine looks at a bounded part of a document: this much text before the cursor tells
# whether a generation still applies.
ANCHOR_CHARS = 4096
# Answer with what is ready this far into the user's usual gap between keys: a short suggestion on screen
# beats a long one that arrives after the next key (the rest follows from the typeahead cache).
SOFT_DEADLINE_SHARE = 0.4


@dataclass(frozen=True)
class Job:
    """What a generation (or a pre-warm) needs, fixed on the event loop when the request set out."""

    settings: Settings  # the effective settings in force then; the worker reads no other
    data: PromptInput
    shape: Shape


@dataclass
class Live:
    """A generation in flight or finished: the progressive answer and the typeahead cache.

    While the generation runs only the worker writes the output fields; the loop reads them.
    """

    uri: str
    anchor: str  # the document text just before the cursor when the generation started (ANCHOR_CHARS)
    at: int  # the cursor's offset then
    shape: Shape
    text: str = ""
    tokens: int = 0
    done: bool = False
    result: Generation | None = None
    error: str | None = None
    prompt: Prompt | None = None
    context_ms: float = 0.0
    model_id: str = ""  # the model that generated (set by the worker once the backend is loaded)
    generate_started: float | None = None  # perf_counter when the backend was called
    first_token_at: float | None = None  # perf_counter of the first token
    cancel: threading.Event = field(default_factory=threading.Event)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    prewarm: bool = False  # only warms the model's cache: offers nothing
    # (offset in ``text`` where a token starts, its probability), as the backend reports them (appended by
    # the worker; a list append is atomic, and the loop only reads entries already there).
    confidence: list[tuple[int, float]] = field(default_factory=list)

    @classmethod
    def at_cursor(cls, uri: str, text: str, cursor: int, shape: Shape, prewarm: bool = False) -> Live:
        return cls(uri, text[max(0, cursor - ANCHOR_CHARS) : cursor], cursor, shape, prewarm=prewarm)

    def notify(self) -> None:
        for fut in self.waiters:
            if not fut.done():
                fut.set_result(None)
        self.waiters.clear()

    def unsure_at(self, cursor: int, threshold: float) -> int | None:
        """Where what this generation offers at ``cursor`` (``remaining_after``) stops being confident."""
        typed = cursor - self.at
        cut = confident_length(self.text, self.confidence, max(0, typed), threshold)
        return None if cut is None else cut + max(0, typed) - typed

    def remaining_after(self, text: str, cursor: int) -> str | None:
        """What this generation still offers at ``cursor`` in ``text`` (the document now)."""
        if self.prewarm:
            return None
        start = self.at - len(self.anchor)
        if cursor >= self.at:
            typed_len = cursor - self.at
            if typed_len > len(self.text) or not text.startswith(self.anchor, start):
                return None
            typed = text[self.at : cursor]
            return self.text[typed_len:] if self.text.startswith(typed) else None
        kept = len(self.anchor) - (self.at - cursor)
        if self.at - cursor <= 40 and kept >= 0 and text.startswith(self.anchor[:kept], start):
            # Backspace: what was deleted comes back as part of the suggestion.
            return self.anchor[kept:] + self.text
        return None

    def first_token_ms(self) -> float | None:
        """Time from the backend call to the first token: the finished generation's own figure, or the one
        seen so far while it runs."""
        if self.result is not None:
            return self.result.first_token_ms
        if self.first_token_at is None or self.generate_started is None:
            return None
        return (self.first_token_at - self.generate_started) * 1000


def offer(live: Live, remaining: str, cursor: int, min_confidence: float) -> tuple[str, bool]:
    """What to show of ``remaining`` (what ``live`` offers at ``cursor``), and whether it is final (waiting
    cannot bring more): cut where the model's confidence fell, trimmed to whole lines unless it ended so."""
    cut = live.unsure_at(cursor, min_confidence)
    if cut is not None:
        remaining = remaining[:cut]
    stopped = stop_reached(remaining, live.shape)
    ended = cut is None and live.result is not None and live.result.stop_reason in ("eos", "stop")
    shown = finish(remaining, live.shape, complete=stopped or ended)
    return shown, cut is not None or stopped or live.done


def silence_reason(live: Live | None, text: str, cursor: int, min_confidence: float) -> ev.LossReason:
    """Why nothing was shown at ``cursor`` in ``text``: the model was unsure of its very first tokens, the
    generation was cancelled or not there in time, or what it made was empty after post-processing."""
    if live is None:
        return "empty"
    cut = live.unsure_at(cursor, min_confidence)
    if cut is not None and not (live.remaining_after(text, cursor) or "")[:cut].strip():
        return "unsure"
    if not live.done:
        return "cancelled" if live.cancel.is_set() else "deadline"
    return "empty"


async def wait_for_text(
    live: Live,
    still_current: Callable[[], bool],
    text: str,
    cursor: int,
    started: float,
    deadline_ms: float,
    gap: float | None,
    min_confidence: float = 0.0,
) -> str:
    """Wait for the live generation until it is sufficient, the deadline passes or the user types on.

    Two deadlines: the hard one (``deadline_ms``) and a soft one just before the user's next keystroke is
    due (``gap``, from their recent rhythm).  At the soft one, a useful piece (up to a word boundary) is
    answered rather than risk showing nothing; the generation goes on into the typeahead cache.
    """
    loop = asyncio.get_running_loop()
    hard = started + deadline_ms / 1000
    soft = min(hard, started + max(0.04, SOFT_DEADLINE_SHARE * gap)) if gap else hard
    while True:
        remaining = live.remaining_after(text, cursor) or ""
        shown, final = offer(live, remaining, cursor, min_confidence)
        if final:
            return shown
        now = time.perf_counter()
        if now >= hard or not still_current() or live.cancel.is_set():
            # Progressive answer: what is there (it ends at a token boundary), if it is worth showing.
            return shown
        if now >= soft and shown:
            return shown
        fut: asyncio.Future[None] = loop.create_future()
        live.waiters.append(fut)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fut, (soft if now < soft else hard) - now)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class ModelWorker:
    """The model thread and the loop-side bookkeeping of what it does."""

    def __init__(
        self,
        backend_factory: Callable[[Settings], Backend],
        notify_user: Callable[[str], None] | None = None,
    ) -> None:
        self._factory = backend_factory
        # The backend slot: loaded on the worker (or by an explicit load), read by the loop for its name and
        # tokenizer; the lock keeps a load and a swap from crossing.
        self._lock = threading.Lock()
        self._backend: Backend | None = None
        self._backend_error: str | None = None
        self._counter: LineTokenCounter | None = None  # the worker's own (prompt building)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="opportune-model")
        self.notify_user = notify_user or (lambda _m: None)
        # Event-loop state only.
        self.live: Live | None = None
        self.latencies: deque[float] = deque(maxlen=20)  # recent first-token latencies (ms)
        self.told_user = False

    # ---- the backend --------------------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        backend = self._backend
        return backend.model_id if backend else ""

    def load_backend(self, settings: Settings) -> str | None:
        """Load the model now (off the loop); returns the error for the user, if any."""
        self._load(settings)
        return self._backend_error

    async def load(self, settings: Settings) -> None:
        """Load the model on the worker, off the event loop, and tell the user once if it cannot be."""
        loop = asyncio.get_running_loop()
        error = await loop.run_in_executor(self._executor, self.load_backend, settings)
        if error:
            self.tell_user_once(f"Opportune: {error}")

    def _load(self, settings: Settings) -> Backend | None:
        """The backend, loaded on first use; None while it cannot be loaded."""
        with self._lock:
            if self._backend is None and self._backend_error is None:
                try:
                    self._backend = self._factory(settings)
                    self._counter = LineTokenCounter(self._backend.count_tokens)
                except BackendError as e:
                    self._backend_error = str(e)
                except Exception as e:  # a backend must never take the server down
                    log.exception("backend failed to start")
                    self._backend_error = f"the model backend failed to start: {e}"
            return self._backend

    def swap_model(self) -> None:
        """The model's settings changed: stop what runs, and load the model again on next use."""
        self.cancel_live()
        self.told_user = False

        def swap() -> None:
            with self._lock:
                if self._backend is not None:
                    self._backend.close()
                self._backend = None
                self._backend_error = None

        self._executor.submit(swap)

    def tell_user_once(self, message: str) -> None:
        """Show a problem to the user once, until the model works again (on the loop)."""
        if not self.told_user:
            self.told_user = True
            self.notify_user(message)

    def count_tokens(self, text: str) -> int:
        backend = self._backend
        if backend is None:
            return max(1, len(text) // 4)
        try:
            return backend.count_tokens(text)
        except Exception:
            return max(1, len(text) // 4)

    def debounce_ms(self, fixed_ms: int, adaptive: bool, gap: float | None) -> float:
        """The wait before starting the model: ``fixed_ms``, or from the typing rhythm (``gap``, seconds)."""
        if not adaptive or gap is None or not self.latencies:
            return float(fixed_ms)
        # Mid-burst, the next key is likely to come before the model answers: wait about one interval, so a
        # keystroke cancels the request for free; after a pause, start at once.
        gap_ms = gap * 1000
        return min(gap_ms * 1.1, 250.0) if statistics.median(self.latencies) > gap_ms else 0.0

    # ---- the live slot ------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """The model is generating (a request or its continuation into the typeahead cache)."""
        return self.live is not None and not self.live.done and not self.live.prewarm

    @property
    def idle(self) -> bool:
        return self.live is None or self.live.done

    def cancel_live(self) -> None:
        if self.live is not None:
            self.live.cancel.set()
            self.live.notify()
            self.live = None

    def cancel_for(self, uri: str) -> None:
        if self.live is not None and self.live.uri == uri:
            self.cancel_live()

    def follow(self, uri: str, text: str, cursor: int) -> None:
        """The user edited ``uri`` (now ``text``, the cursor at ``cursor``): a generation their typing left
        behind stops; one that still covers it wakes whoever waits for it."""
        live = self.live
        if live is not None and live.uri == uri:
            if live.remaining_after(text, cursor) is None:
                self.cancel_live()
            else:
                live.notify()

    def start(self, live: Live, job: Job) -> None:
        """Make ``live`` the generation in the slot (cancelling the one before) and run ``job`` into it."""
        self.cancel_live()
        self.live = live
        loop = _running_loop()
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # shut down
                self._executor.submit(self._generate, live, job, loop)

    def prewarm(self, live: Live, job: Job) -> None:
        """Evaluate the job's prompt while the model is idle, so the first keystroke there is warm.

        The lowest priority: any real request cancels it through the live slot."""
        if not self.idle:
            return
        self.cancel_live()
        self.live = live
        with contextlib.suppress(RuntimeError):
            self._executor.submit(self._prewarm, live, job, _running_loop())

    # ---- on the worker thread -----------------------------------------------------------------------

    def _build_prompt(self, backend: Backend, data: PromptInput, c: CompletionSettings) -> Prompt:
        return build_prompt(
            data,
            budget_tokens=c.context_tokens,
            count_tokens=self._counter or backend.count_tokens,
            strategy=c.prompt_strategy,
            suffix_lines=c.suffix_lines if backend.takes_suffix else 0,
            step_lines=c.window_step_lines,
        )

    def _generate(self, live: Live, job: Job, loop: asyncio.AbstractEventLoop) -> None:
        """Build the prompt and stream tokens into ``live`` until a stop or cancel."""
        try:
            if live.cancel.is_set():
                return  # superseded while queued: never reaches the model
            backend = self._load(job.settings)
            if backend is None:
                live.error = self._backend_error
                return
            live.model_id = backend.model_id
            c = job.settings.completion
            t0 = time.perf_counter()
            prompt = self._build_prompt(backend, job.data, c)
            live.prompt = prompt
            live.context_ms = (time.perf_counter() - t0) * 1000
            shape = job.shape

            def on_text(text: str, n: int) -> None:
                if live.first_token_at is None:
                    live.first_token_at = time.perf_counter()
                live.text = text
                live.tokens = n
                loop.call_soon_threadsafe(live.notify)

            def on_confidence(at: int, probability: float) -> None:
                live.confidence.append((at, probability))

            request = GenerationRequest(
                prompt=prompt,
                max_tokens=c.max_tokens if shape.multiline else c.single_line_max_tokens,
                temperature=c.temperature,
                should_stop=lambda text: stop_reached(text, shape),
                cancelled=live.cancel.is_set,
                on_text=on_text,
                # Reading a probability costs a pass over the vocabulary per token: only when it is used.
                on_confidence=on_confidence if c.min_confidence > 0 else None,
            )
            live.generate_started = time.perf_counter()
            result = backend.generate(request)
            live.text = result.text
            live.tokens = result.tokens
            live.model_id = backend.model_id  # a remote server may have named its model by now
            live.result = result
        except Cancelled:
            pass
        except BackendError as e:  # expected failures (an endpoint down): one line, not a traceback per key
            log.warning("%s", e)
            live.error = str(e)
        except Exception as e:
            log.exception("generation failed")
            # The text of an unexpected error can hold what the backend was given (a key, a URL with a
            # password): the same token patterns as the dataset export take them out before anyone sees it.
            live.error = redact_patterns(f"the model failed: {e}")
        finally:
            live.done = True
            with contextlib.suppress(RuntimeError):  # the loop may be closed at shutdown
                loop.call_soon_threadsafe(self._finished, live)

    def _prewarm(self, live: Live, job: Job, loop: asyncio.AbstractEventLoop | None) -> None:
        try:
            if live.cancel.is_set():
                return
            backend = self._load(job.settings)
            if backend is None:
                return
            backend.prewarm(
                self._build_prompt(backend, job.data, job.settings.completion), live.cancel.is_set
            )
        except Cancelled:
            pass
        except Exception:
            log.exception("prewarm failed")
        finally:
            live.done = True
            if loop is not None:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._finished, live)

    # ---- back on the loop ---------------------------------------------------------------------------

    def _finished(self, live: Live) -> None:
        """A job ended: its effects on loop-owned state, then wake whoever waits for it."""
        if live.error:
            self.tell_user_once(f"Opportune: {live.error}")
        elif live.result is not None:
            self.told_user = False  # working again: a later failure is worth telling
            if live.result.first_token_ms is not None:
                self.latencies.append(live.result.first_token_ms)
        live.notify()

    def shutdown(self) -> None:
        self.cancel_live()
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            if self._backend is not None:
                self._backend.close()
