"""One completion request end to end: opportunity, trigger rules, typeahead cache, debounce, context,
model call under a deadline, post-processing, and the telemetry of what became of it.

The engine knows nothing of LSP: ``opportune.server.lsp`` translates protocol messages into these calls, and the eval
harness and the CLI drive the same engine.  It runs on an asyncio loop; the model runs on one dedicated
worker thread, where a newer request always cancels an older one (before prefill, between prefill chunks,
or after any token).  A generation that outlives its request keeps running into the typeahead cache until
the user's typing diverges from it, so the next keystroke is answered without a model call.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import itertools
import json
import logging
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

from opportune.server.backends.base import Backend, BackendError, Cancelled, Generation, GenerationRequest
from opportune.server.config import Settings
from opportune.server.context.syntax import SyntaxContext, SyntaxTree, language_for
from opportune.server.documents import MAX_PARSED_CHARS, Document, Position, TextEdit, utf8_len
from opportune.server.postprocess import Shape, finish, should_trigger, stop_reached
from opportune.server.prompt import LineTokenCounter, Prompt, PromptInput, build_prompt, reach_chars
from opportune.telemetry import events as ev

log = logging.getLogger(__name__)

TYPING_MAX_CHARS = 40  # a single-line insertion longer than this is a paste, not typing
# Answer with what is ready this far into the user's usual gap between keys: a short suggestion on screen
# beats a long one that arrives after the next key (the rest follows from the typeahead cache).
SOFT_DEADLINE_SHARE = 0.4
# Per keystroke the engine looks at a bounded part of a document, never all of it: this much of the
# cursor line each way, this much text before the cursor to tell whether a generation still applies, and
# (prompt.reach_chars) what a prompt can use.  A keystroke in a 20 MB file then costs what it costs in a
# small one.
LINE_CHARS = 2000
ANCHOR_CHARS = 4096
Recorder = Callable[[ev.Event], None]


@dataclass
class Suggestion:
    completion_id: str
    text: str
    cursor: int  # str offset where ``text`` is inserted
    position: Position
    latency_ms: float
    source: Literal["model", "cache"]


@dataclass
class Live:
    """A generation in flight or finished: the progressive answer and the typeahead cache."""

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
    cancel: threading.Event = field(default_factory=threading.Event)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    prewarm: bool = False  # only warms the model's cache: offers nothing

    @classmethod
    def at_cursor(cls, uri: str, text: str, cursor: int, shape: Shape, prewarm: bool = False) -> Live:
        return cls(uri, text[max(0, cursor - ANCHOR_CHARS) : cursor], cursor, shape, prewarm=prewarm)

    def notify(self) -> None:
        for fut in self.waiters:
            if not fut.done():
                fut.set_result(None)
        self.waiters.clear()

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


@dataclass
class ActiveSuggestion:
    """The suggestion on screen in a document, followed to infer its outcome from edits."""

    suggestion: Suggestion
    attempt_id: str
    typed: int = 0
    explicit: bool = False  # the client reported an outcome itself
    view_offset: int = (
        0  # the client was last shown the suggestion from this offset on (after partial accepts)
    )


@dataclass
class PendingOpportunity:
    opportunity_id: str
    version: int
    cursor: int  # where the edit left the cursor, as far as the server can tell (the end of the insertion)
    attempted: bool = False
    edit_start: int = -1  # the edit's start: an auto-closing editor leaves the cursor inside "()"

    def covers(self, version: int, cursor: int) -> bool:
        start = self.edit_start if self.edit_start >= 0 else self.cursor
        return self.version == version and start <= cursor <= self.cursor and not self.attempted


@dataclass
class DocState:
    doc: Document
    language: str | None
    tree: SyntaxTree | None
    hash: str
    opportunity: PendingOpportunity | None = None
    last_answer: tuple[int, int, Suggestion | None] | None = None  # (version, cursor, answer)
    active: ActiveSuggestion | None = None
    keystrokes: deque[float] = field(default_factory=lambda: deque(maxlen=12))
    line_contexts: dict[int, SyntaxContext] = field(default_factory=dict)  # see Engine._prompt_input
    changed: asyncio.Event = field(default_factory=asyncio.Event)


def _hash(salt: str, text: str) -> str:
    return hashlib.sha256(f"{salt}:{text}".encode()).hexdigest()[:16]


class Engine:
    def __init__(
        self,
        backend_factory: Callable[[Settings], Backend],
        settings: Settings,
        *,
        record: Recorder | None = None,
        install_id: str = "local",
        session_id: str | None = None,
        experiment: str = "",
        arm: str = "",
        arm_digest: str = "",
        notify_user: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self._backend_factory = backend_factory
        self._backend: Backend | None = None
        self._backend_error: str | None = None
        self._backend_lock = threading.Lock()
        self.record: Recorder = record or (lambda _e: None)
        self.install_id = install_id
        self.session_id = session_id or ev.new_id()
        self.experiment = experiment
        self.arm = arm
        self.arm_digest = arm_digest
        self.client_name = settings.client_name
        self.client_reports_shown = False
        self.notify_user = notify_user or (lambda _m: None)
        self.docs: dict[str, DocState] = {}
        self.live: Live | None = None
        self.last_latency_ms: float | None = None
        self._model_latencies: deque[float] = deque(maxlen=20)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="opportune-model")
        self._answers: dict[str, tuple[str, ActiveSuggestion]] = {}  # completion id -> (uri, active)
        self._told_user = False
        self._counter: LineTokenCounter | None = None

    # ---- model ---------------------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        return self._backend.model_id if self._backend else ""

    def backend(self) -> Backend | None:
        """The backend, loaded on first use (on the worker thread); None while it cannot be loaded."""
        with self._backend_lock:
            if self._backend is None and self._backend_error is None:
                try:
                    self._backend = self._backend_factory(self.settings)
                    self._counter = LineTokenCounter(self._backend.count_tokens)
                except BackendError as e:
                    self._backend_error = str(e)
                except Exception as e:  # a backend must never take the server down
                    log.exception("backend failed to start")
                    self._backend_error = f"the model backend failed to start: {e}"
            return self._backend

    @property
    def busy(self) -> bool:
        """The model is generating (a request or its continuation into the typeahead cache)."""
        return self.live is not None and not self.live.done and not self.live.prewarm

    def load_backend(self) -> str | None:
        """Load the model now (at start-up, off the loop); returns the error for the user, if any."""
        self.backend()
        return self._backend_error

    async def load(self) -> None:
        """Load the model on the worker, off the event loop, and tell the user once if it cannot be."""
        error = await asyncio.get_running_loop().run_in_executor(self._worker, self.load_backend)
        if error:
            self.tell_user_once(f"Opportune: {error}")

    def reconfigure(self, settings: Settings) -> None:
        """New settings; the model is reloaded on next use when its settings changed."""
        model_changed = settings.model != self.settings.model
        self.settings = settings
        self.client_name = settings.client_name or self.client_name
        if model_changed:
            self._cancel_live()

            def swap() -> None:
                with self._backend_lock:
                    if self._backend is not None:
                        self._backend.close()
                    self._backend = None
                    self._backend_error = None
                    self._told_user = False

            self._worker.submit(swap)

    def tell_user_once(self, message: str) -> None:
        """Show a problem to the user once, until the model works again."""
        if not self._told_user:
            self._told_user = True
            self.notify_user(message)

    # ---- events ----------------------------------------------------------------------------------

    def _common(self, language: str | None) -> ev.Common:
        return ev.Common(
            install_id=self.install_id,
            session_id=self.session_id,
            experiment=self.experiment,
            arm=self.arm,
            arm_digest=self.arm_digest,
            model_id=self.model_id or self.settings.model.backend,
            language=language or "plaintext",
            client=self.client_name,
        )

    def _emit(self, event: ev.Event) -> None:
        try:
            self.record(event)
        except Exception:  # telemetry never breaks completions
            log.exception("recording %s failed", event.kind)

    # ---- documents ------------------------------------------------------------------------------

    def open(self, uri: str, text: str, language_id: str = "", version: int = 0) -> None:
        language = language_for(language_id, uri)
        doc = Document(uri=uri, text=text, language_id=language_id, version=version)
        state = DocState(
            doc=doc, language=language, tree=self._parse(language, text), hash=_hash(self.install_id, uri)
        )
        self.docs[uri] = state
        self._emit(ev.Edit(self._common(language), state.hash, "open", len(text), 0))
        if self.settings.completion.prewarm and self.settings.completion.enabled:
            self._prewarm(state, len(doc.text))

    def close(self, uri: str) -> None:
        state = self.docs.pop(uri, None)
        if state and state.active:
            self._close_active(state, "closed")
        if self.live and self.live.uri == uri:
            self._cancel_live()

    def _parse(self, language: str | None, text: str) -> SyntaxTree | None:
        if language is None or len(text) > MAX_PARSED_CHARS or "\x00" in text:
            return None
        try:
            return SyntaxTree(language, text.encode("utf-8", "surrogatepass"))
        except Exception:
            log.exception("tree-sitter failed on a %s document", language)
            return None

    def change(
        self, uri: str, version: int, changes: list[tuple[Position | None, Position | None, str]]
    ) -> None:
        state = self.docs.get(uri)
        if state is None:
            log.warning("change for a document that is not open: %s", uri)
            return
        doc = state.doc
        edits: list[TextEdit] = []
        for start, end, text in changes:
            edits.append(doc.apply(start, end, text))
            if start is None:
                state.tree = self._parse(state.language, doc.text)
            elif state.tree is not None:
                self._update_tree(state, edits[-1])
        doc.version = version
        first_line = min(e.start_point[0] for e in edits)
        if any(line >= first_line for line in state.line_contexts):
            state.line_contexts = {k: v for k, v in state.line_contexts.items() if k < first_line}
        state.changed.set()
        state.changed = asyncio.Event()
        kind = self._classify(state, edits)
        now = time.monotonic()
        common = self._common(state.language)
        if kind in ("insert", "delete", "replace", "newline"):
            state.keystrokes.append(now)
            opp = PendingOpportunity(ev.new_id(), version, edits[-1].new_end, edit_start=edits[-1].start)
            state.opportunity = opp
            self._emit(ev.Opportunity(common, opp.opportunity_id, state.hash, kind))  # type: ignore[arg-type]
        else:
            state.opportunity = None
            inserted = sum(len(e.inserted) for e in edits)
            removed = sum(len(e.removed) for e in edits)
            self._emit(ev.Edit(common, state.hash, kind, inserted, removed))  # type: ignore[arg-type]
        if self.live is not None and self.live.uri == uri:
            if self.live.remaining_after(doc.text, edits[-1].new_end) is None:
                self._cancel_live()  # the user's typing left this generation behind
            else:
                self.live.notify()
        if kind == "accept" and self.settings.completion.enabled:
            self._speculate(state, edits[-1].new_end)

    def _update_tree(self, state: DocState, edit: TextEdit) -> None:
        assert state.tree is not None
        if len(state.doc.text) > MAX_PARSED_CHARS:
            state.tree = None
            return
        try:
            state.tree.edit(
                edit.start_byte,
                edit.old_end_byte,
                edit.new_end_byte,
                edit.start_point,
                edit.old_end_point,
                edit.new_end_point,
                state.doc.text.encode("utf-8", "surrogatepass"),
            )
        except Exception:
            log.exception("incremental parse failed; parsing again")
            state.tree = self._parse(state.language, state.doc.text)

    def _classify(self, state: DocState, edits: list[TextEdit]) -> str:
        """The edit's kind, following the suggestion on screen to infer its outcome."""
        active = state.active
        if len(edits) != 1:
            if active:
                self._close_active(state, "edited")
            return "bulk"
        e = edits[0]
        if active is not None:
            s = active.suggestion
            rest = s.text[active.typed :]
            at = s.cursor + active.typed
            if e.start == at and not e.removed and e.inserted and rest.startswith(e.inserted):
                active.typed += len(e.inserted)
                if active.typed >= len(s.text):
                    self._outcome(state, active, "accepted", len(s.text), "typed_through", inferred=True)
                    state.active = None
                if len(e.inserted) > 1:
                    return "accept"
            elif (
                e.start <= at
                and state.doc.text.startswith(rest, e.start)
                and len(e.inserted) >= len(rest) > 1
            ):
                # The client replaced a range with the suggestion (accept applied as a range edit).
                self._outcome(state, active, "accepted", len(s.text), "", inferred=True)
                state.active = None
                return "accept"
            else:
                self._close_active(state, "typed_over")
        if (
            "\n" in e.inserted.rstrip(" \t")
            or len(e.inserted) > TYPING_MAX_CHARS
            or e.removed.count("\n") > 1
        ):
            if e.inserted.strip(" \t") == "\n" or (e.inserted.startswith("\n") and not e.inserted.strip()):
                return "newline"
            return "bulk"
        if e.inserted and e.removed:
            return "replace"
        if e.inserted:
            return "newline" if "\n" in e.inserted else "insert"
        if e.removed:
            return "delete"
        return "bulk"

    # ---- outcomes -------------------------------------------------------------------------------

    def _outcome(
        self,
        state: DocState | None,
        active: ActiveSuggestion,
        outcome: ev.OutcomeKind,
        chars: int,
        reason: str,
        *,
        inferred: bool,
    ) -> None:
        if inferred and active.explicit:
            return
        accepted = active.suggestion.text[:chars]
        tokens = self._count_tokens(accepted) if chars else 0
        language = state.language if state else None
        self._emit(
            ev.Outcome(
                self._common(language),
                active.suggestion.completion_id,
                outcome,
                accepted_chars=chars,
                accepted_tokens=tokens,
                reason=reason,
                inferred=inferred,
            )
        )

    def _close_active(self, state: DocState, reason: str) -> None:
        active = state.active
        state.active = None
        if active is None:
            return
        if active.typed > 0:
            self._outcome(state, active, "partial", active.typed, reason, inferred=True)
        else:
            self._outcome(state, active, "rejected", 0, reason, inferred=True)

    def _find(self, completion_id: str) -> tuple[DocState | None, ActiveSuggestion] | None:
        found = self._answers.get(completion_id)
        if found is None:
            return None
        uri, active = found
        return self.docs.get(uri), active

    def did_show(self, completion_id: str) -> None:
        self.client_reports_shown = True
        found = self._find(completion_id)
        if found:
            state, active = found
            language = state.language if state else None
            self._emit(ev.Shown(self._common(language), completion_id, active.attempt_id, inferred=False))

    def did_accept(self, completion_id: str, length: int | None = None) -> None:
        """Full accept (``length`` None) or partial accept of ``length`` characters, as the client reports."""
        found = self._find(completion_id)
        if not found:
            return
        state, active = found
        full = len(active.suggestion.text)
        n = full if length is None else max(0, min(active.view_offset + int(length), full))
        active.explicit = False  # this report is the explicit one
        self._outcome(state, active, "accepted" if n >= full else "partial", n, "client", inferred=False)
        active.explicit = True

    def did_reject(self, completion_id: str, reason: str) -> None:
        found = self._find(completion_id)
        if not found:
            return
        state, active = found
        if active.explicit:
            return
        active.explicit = False
        self._outcome(state, active, "rejected", 0, reason or "dismissed", inferred=False)
        active.explicit = True

    def _count_tokens(self, text: str) -> int:
        backend = self._backend
        if backend is None:
            return max(1, len(text) // 4)
        try:
            return backend.count_tokens(text)
        except Exception:
            return max(1, len(text) // 4)

    # ---- completion -----------------------------------------------------------------------------

    async def complete(self, uri: str, position: Position, invoked: bool = False) -> Suggestion | None:
        """The suggestion for a keystroke, or None; a cancelled request is recorded as lost to cancellation."""
        started = time.perf_counter()
        stages: dict[str, float] = {}
        pending: dict[str, str] = {}
        try:
            return await self._complete(uri, position, invoked, started, stages, pending)
        except asyncio.CancelledError:
            state = self.docs.get(uri)
            if state is not None and "attempt" in pending:
                self._lose(state, pending["attempt"], "cancelled", started, stages)
            live = self.live
            # Cancelled with no edit since: stop the model.  After an edit, ``change`` already stopped a
            # generation the typing left behind; one it still covers goes on into the typeahead cache.
            if (
                state is not None
                and live is not None
                and live.uri == uri
                and state.doc.version == int(pending.get("version", "-1"))
            ):
                self._cancel_live()
            raise

    async def _complete(
        self,
        uri: str,
        position: Position,
        invoked: bool,
        started: float,
        stages: dict[str, float],
        pending: dict[str, str],
    ) -> Suggestion | None:
        state = self.docs.get(uri)
        if state is None:
            return None
        doc = state.doc
        version = doc.version
        pending["version"] = str(version)
        cursor = doc.offset_at(position)
        if state.last_answer and state.last_answer[:2] == (version, cursor):
            return state.last_answer[2]  # the client asked again for the same keystroke
        opp = state.opportunity
        common = self._common(state.language)
        if opp is None or not opp.covers(version, cursor):
            continuation = self._continuation(state, cursor)
            if continuation is not None and not invoked:
                return continuation
            if not invoked:
                # Not a fresh edit at the cursor (a cursor move): no opportunity, but warm the model there.
                if self.settings.completion.prewarm and self.settings.completion.enabled:
                    self._prewarm(state, cursor)
                return None
            opp = PendingOpportunity(ev.new_id(), version, cursor)
            self._emit(ev.Opportunity(common, opp.opportunity_id, state.hash, "insert", "invoked"))
        opp.attempted = True
        state.opportunity = opp

        line_prefix, line_suffix = doc.line_around(cursor, LINE_CHARS)
        settings = self.settings.completion
        rule = None
        if not settings.enabled:
            rule = "disabled"
        elif "\x00" in line_prefix or "\x00" in line_suffix:
            rule = "binary"
        else:
            rule = should_trigger(line_prefix, line_suffix)
        if rule in ("disabled", "binary") or (rule and not invoked):
            self._emit(ev.Skip(common, opp.opportunity_id, rule or ""))
            state.last_answer = (version, cursor, None)
            return None
        stages["trigger"] = (time.perf_counter() - started) * 1000

        syntax = self._syntax(state, cursor)
        shape = self._shape(syntax, doc, cursor, line_prefix, line_suffix)
        text_now = doc.text  # a snapshot: str is immutable, and later keystrokes replace doc.text
        attempt_id = ev.new_id()

        # Typeahead: the generation on screen (or still running) already covers what was typed.
        t0 = time.perf_counter()
        live = self.live
        remaining = (
            live.remaining_after(text_now, cursor)
            if (live and live.uri == uri and settings.typeahead_cache)
            else None
        )
        stages["cache"] = (time.perf_counter() - t0) * 1000
        if live is not None and remaining is not None:
            self._emit(ev.Attempt(common, attempt_id, opp.opportunity_id, "cache"))
            pending["attempt"] = attempt_id
            text = finish(remaining, shape) if live.done or stop_reached(remaining, shape) else ""
            if not text and not live.done:
                text = await self._wait_for_text(live, state, version, text_now, cursor, shape, started)
            return self._answer(
                state, version, cursor, attempt_id, text, "cache", started, stages, None, live
            )

        generation_live = Live.at_cursor(uri, text_now, cursor, shape)
        # Debounce (an arm setting): a newer keystroke during it cancels the request before any model work.
        delay = self._debounce_ms(state)
        if delay > 0:
            t0 = time.perf_counter()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.changed.wait(), delay / 1000)
            stages["debounce"] = (time.perf_counter() - t0) * 1000
        if doc.version != version:
            # A newer keystroke arrived during the debounce: the server never set out, so no attempt.
            self._emit(ev.Skip(common, opp.opportunity_id, "debounced"))
            return None
        self._emit(ev.Attempt(common, attempt_id, opp.opportunity_id, "model"))
        pending["attempt"] = attempt_id

        self._cancel_live()
        self.live = generation_live
        loop = asyncio.get_running_loop()
        data = self._prompt_input(state, cursor, syntax)
        self._worker.submit(self._generate, generation_live, data, loop, settings)
        text = await self._wait_for_text(generation_live, state, version, text_now, cursor, shape, started)
        if generation_live.error:
            return self._lose(state, attempt_id, "error", started, stages, generation_live)
        return self._answer(
            state,
            version,
            cursor,
            attempt_id,
            text,
            "model",
            started,
            stages,
            generation_live.prompt,
            generation_live,
        )

    def _continuation(self, state: DocState, cursor: int) -> Suggestion | None:
        """After a partial accept, the rest of the same suggestion (same id: no new attempt, no new shown)."""
        active = state.active
        if active is None or active.typed == 0:
            return None
        s = active.suggestion
        if cursor != s.cursor + active.typed or not state.doc.text.startswith(
            s.text[: active.typed], s.cursor
        ):
            return None
        active.view_offset = active.typed
        return dataclasses.replace(
            s,
            text=s.text[active.typed :],
            cursor=cursor,
            position=state.doc.position_at(cursor),
            source="cache",
        )

    async def _wait_for_text(
        self,
        live: Live,
        state: DocState,
        version: int,
        text: str,
        cursor: int,
        shape: Shape,
        started: float,
    ) -> str:
        """Wait for the live generation until it is sufficient, the deadline passes or the user types on.

        Two deadlines: the hard one (``deadline_ms``) and a soft one just before the user's next keystroke is
        due (from their recent rhythm).  At the soft one, a useful piece (up to a word boundary) is answered
        rather than risk showing nothing; the generation goes on into the typeahead cache.
        """
        loop = asyncio.get_running_loop()
        hard = started + self.settings.completion.deadline_ms / 1000
        gap = self._typing_gap(state)
        soft = min(hard, started + max(0.04, SOFT_DEADLINE_SHARE * gap)) if gap else hard
        while True:
            remaining = live.remaining_after(text, cursor) or ""
            if live.done or stop_reached(remaining, shape):
                return finish(remaining, shape)
            now = time.perf_counter()
            if now >= hard or state.doc.version != version or live.cancel.is_set():
                # Progressive answer: what is there (it ends at a token boundary), if it is worth showing.
                return finish(remaining, shape)
            if now >= soft:
                piece = finish(remaining, shape)
                if piece:
                    return piece
            fut: asyncio.Future[None] = loop.create_future()
            live.waiters.append(fut)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fut, (soft if now < soft else hard) - now)

    @staticmethod
    def _typing_gap(state: DocState) -> float | None:
        """The user's current time between keystrokes (median of recent gaps within bursts), if known."""
        gaps = [b - a for a, b in itertools.pairwise(state.keystrokes) if b - a < 1.0]
        return statistics.median(gaps) if len(gaps) >= 3 else None

    def _answer(
        self,
        state: DocState,
        version: int,
        cursor: int,
        attempt_id: str,
        text: str,
        source: Literal["model", "cache"],
        started: float,
        stages: dict[str, float],
        prompt: Prompt | None,
        live: Live | None,
    ) -> Suggestion | None:
        if state.doc.version != version:
            return self._lose(state, attempt_id, "superseded", started, stages, live)
        if not text:
            reason: ev.LossReason = "empty"
            if live is not None and not live.done:
                reason = "cancelled" if live.cancel.is_set() else "deadline"
            return self._lose(state, attempt_id, reason, started, stages, live)
        t0 = time.perf_counter()
        total_ms = (t0 - started) * 1000
        suggestion = Suggestion(ev.new_id(), text, cursor, state.doc.position_at(cursor), total_ms, source)
        if state.active is not None:
            self._close_active(state, "superseded")
        active = ActiveSuggestion(suggestion, attempt_id)
        state.active = active
        state.last_answer = (version, cursor, suggestion)
        self._answers[suggestion.completion_id] = (state.doc.uri, active)
        if len(self._answers) > 256:
            self._answers.pop(next(iter(self._answers)))
        self.last_latency_ms = total_ms
        stages["postprocess"] = (time.perf_counter() - t0) * 1000
        self._record_response(state, attempt_id, started, stages, live, suggestion)
        if not self.client_reports_shown:
            self._emit(
                ev.Shown(self._common(state.language), suggestion.completion_id, attempt_id, inferred=True)
            )
        return suggestion

    def _lose(
        self,
        state: DocState,
        attempt_id: str,
        reason: ev.LossReason,
        started: float,
        stages: dict[str, float],
        live: Live | None = None,
    ) -> Suggestion | None:
        state.last_answer = None
        self._record_response(state, attempt_id, started, stages, live, None, reason)
        return None

    def _record_response(
        self,
        state: DocState,
        attempt_id: str,
        started: float,
        stages: dict[str, float],
        live: Live | None,
        suggestion: Suggestion | None,
        loss: ev.LossReason | None = None,
    ) -> None:
        result = live.result if live else None
        if live and live.prompt is not None:
            stages.setdefault("context", live.context_ms)
        if result is not None:
            stages.setdefault("prefill", result.prefill_ms)
            if result.first_token_ms is not None:
                stages.setdefault("decode", result.total_ms - result.prefill_ms)
        text = suggestion.text if suggestion else ""
        self._emit(
            ev.Response(
                self._common(state.language),
                attempt_id,
                latency_first_ms=result.first_token_ms if result else None,
                latency_total_ms=(time.perf_counter() - started) * 1000,
                generated_tokens=live.tokens if live else 0,
                stop_reason=(result.stop_reason if result else ("cache" if live else "none")),
                chars=len(text),
                lines=text.count("\n") + 1 if text else 0,
                loss_reason=loss,
                stages_ms=json.dumps({k: round(v, 2) for k, v in stages.items()}),
                completion_id=suggestion.completion_id if suggestion else None,
                completion_tokens=self._count_tokens(text) if text else 0,
                completion_text=text or None,
                prompt_text=live.prompt.text if live and live.prompt else None,
                prompt_tokens=live.prompt.tokens if live and live.prompt else 0,
                reused_tokens=result.reused_tokens if result else 0,
            )
        )

    def _prompt_input(self, state: DocState, cursor: int, syntax: SyntaxContext | None) -> PromptInput:
        doc = state.doc
        tree = state.tree
        text = doc.text
        lo, hi, first_line = self._prompt_span(doc, cursor)
        context_at_line = None
        if tree is not None and syntax is not None:
            # Runs on the worker: only immutable snapshots here (the text, the line index list, the tree's
            # own snapshot), never the live document.
            line_starts = doc.line_starts
            cursor_byte = doc.byte_offset(cursor)
            # Kept per document until an edit above the line: half-typed code below it (an open bracket)
            # can make tree-sitter's error recovery forget scopes it knew, and the prompt would flicker.
            memo = state.line_contexts

            def context_at_line(line: int) -> SyntaxContext:
                found = memo.get(line)
                if found is None:
                    if len(memo) >= 64:  # a user roaming a long file: bounded, at the cost of one re-query
                        memo.clear()
                    at = int(line_starts[min(line, len(line_starts) - 1)])
                    start = utf8_len(text[:at])
                    found = memo[line] = tree.context_at(start, visible_range=(start, cursor_byte))
                return found

        return PromptInput(
            text=text[lo:hi],
            cursor=cursor - lo,
            first_line=first_line,
            path=self._display_path(doc.uri),
            language=state.language,
            syntax=syntax,
            context_at_line=context_at_line,
        )

    def _prompt_span(self, doc: Document, cursor: int) -> tuple[int, int, int]:
        """The part of the document a prompt can use (whole lines back to its reach, the suffix lines after):
        its start and end offsets and the line it starts on."""
        c = self.settings.completion
        reach = reach_chars(c.context_tokens)
        line = doc.line_of(cursor)
        first = doc.line_of(max(0, cursor - reach) - 1) + 1  # the first line that starts within reach
        if first <= line:
            lo = doc.line_start(first)
        else:
            first = line
            # The cursor's own line is longer than the reach (minified code): start mid-line, on a grid so
            # that the start stays put for a while as the user types.
            step = max(1, reach // 4)
            lo = max(doc.line_start(line), -(-(cursor - reach) // step) * step)
        last = line + c.suffix_lines + 1
        hi = doc.line_start(last) if last < doc.line_count else len(doc.text)
        return lo, min(hi, cursor + reach), first

    def _syntax(self, state: DocState, cursor: int) -> SyntaxContext | None:
        if state.tree is None:
            return None
        try:
            return state.tree.context_at(state.doc.byte_offset(cursor))
        except Exception:
            log.exception("syntax context failed")
            return None

    def _shape(
        self, syntax: SyntaxContext | None, doc: Document, cursor: int, line_prefix: str, line_suffix: str
    ) -> Shape:
        after = doc.text[cursor : cursor + LINE_CHARS]
        policy = self.settings.completion.multiline
        multiline = policy == "always" or (policy == "auto" and syntax is not None and syntax.multiline)
        if line_suffix.strip():
            multiline = False
        following = after.split("\n", 1)[1] if "\n" in after else ""
        return Shape(multiline, self.settings.completion.max_lines, line_prefix, line_suffix, following)

    def _debounce_ms(self, state: DocState) -> float:
        settings = self.settings.completion
        if not settings.adaptive_debounce:
            return float(settings.debounce_ms)
        # Mid-burst, the next key is likely to come before the model answers: wait about one interval, so a
        # keystroke cancels the request for free; after a pause, start at once.
        gap = self._typing_gap(state)
        if gap is None or not self._model_latencies:
            return float(settings.debounce_ms)
        gap_ms = gap * 1000
        model_ms = statistics.median(self._model_latencies)
        return min(gap_ms * 1.1, 250.0) if model_ms > gap_ms else 0.0

    def _display_path(self, uri: str) -> str:
        # Only the file's name: enough to tell the model the language and topic, nothing of the user's tree.
        return uri.rsplit("/", 1)[-1]

    # ---- worker ---------------------------------------------------------------------------------

    def _cancel_live(self) -> None:
        if self.live is not None:
            self.live.cancel.set()
            self.live.notify()
            self.live = None

    def _generate(
        self, live: Live, data: PromptInput, loop: asyncio.AbstractEventLoop, settings: object
    ) -> None:
        """On the model worker: build the prompt and stream tokens into ``live`` until a stop or cancel."""
        try:
            if live.cancel.is_set():
                return  # superseded while queued: never reaches the model
            backend = self.backend()
            if backend is None:
                live.error = self._backend_error
                loop.call_soon_threadsafe(self.tell_user_once, f"Opportune: {self._backend_error}")
                return
            t0 = time.perf_counter()
            c = self.settings.completion
            prompt = self._build_prompt(backend, data)
            live.prompt = prompt
            live.context_ms = (time.perf_counter() - t0) * 1000
            shape = live.shape
            max_tokens = c.max_tokens if shape.multiline else c.single_line_max_tokens

            def on_text(text: str, n: int) -> None:
                live.text = text
                live.tokens = n
                loop.call_soon_threadsafe(live.notify)

            request = GenerationRequest(
                prompt=prompt.text,
                max_tokens=max_tokens,
                temperature=c.temperature,
                should_stop=lambda text: stop_reached(text, shape),
                cancelled=live.cancel.is_set,
                on_text=on_text,
                stops=backend.fim.stops if backend.fim else (),
            )
            result = backend.generate(request)
            live.text = result.text
            live.tokens = result.tokens
            live.result = result
            self._told_user = False  # working again: a later failure is worth telling
            if result.first_token_ms is not None:
                self._model_latencies.append(result.first_token_ms)
        except Cancelled:
            pass
        except BackendError as e:  # expected failures (an endpoint down): one line, not a traceback per key
            log.warning("%s", e)
            live.error = str(e)
            loop.call_soon_threadsafe(self.tell_user_once, f"Opportune: {live.error}")
        except Exception as e:
            log.exception("generation failed")
            live.error = f"the model failed: {e}"
            loop.call_soon_threadsafe(self.tell_user_once, f"Opportune: {live.error}")
        finally:
            live.done = True
            with contextlib.suppress(RuntimeError):  # the loop may be closed at shutdown
                loop.call_soon_threadsafe(live.notify)

    def _build_prompt(self, backend: Backend, data: PromptInput) -> Prompt:
        c = self.settings.completion
        return build_prompt(
            data,
            budget_tokens=c.context_tokens,
            count_tokens=self._counter or backend.count_tokens,
            strategy=c.prompt_strategy,
            fim=backend.fim,
            suffix_lines=c.suffix_lines,
            step_lines=c.window_step_lines,
        )

    def _speculate(self, state: DocState, cursor: int) -> None:
        """After an accept, start the next suggestion before the user asks for it."""
        doc = state.doc
        line_prefix, line_suffix = doc.line_around(cursor, LINE_CHARS)
        if should_trigger(line_prefix, line_suffix):
            return
        syntax = self._syntax(state, cursor)
        shape = self._shape(syntax, doc, cursor, line_prefix, line_suffix)
        self._cancel_live()
        live = Live.at_cursor(doc.uri, doc.text, cursor, shape)
        self.live = live
        data = self._prompt_input(state, cursor, syntax)
        with contextlib.suppress(RuntimeError):
            self._worker.submit(self._generate, live, data, asyncio.get_running_loop(), self.settings)

    def _prewarm(self, state: DocState, cursor: int) -> None:
        """Evaluate the prompt at ``cursor`` while the model is idle, so the first keystroke there is warm."""
        if self.live is not None and not self.live.done:
            return
        doc = state.doc
        data = self._prompt_input(state, cursor, self._syntax(state, cursor))
        token = threading.Event()
        # A prewarm is the lowest priority: any real request cancels it through the live slot.
        self._cancel_live()
        placeholder = Live.at_cursor(doc.uri, "", 0, Shape(False, 1, "", ""), prewarm=True)
        placeholder.cancel = token
        self.live = placeholder

        def run() -> None:
            try:
                if token.is_set():
                    return
                backend = self.backend()
                if backend is None:
                    return
                backend.prewarm(self._build_prompt(backend, data).text, token.is_set)
            except Cancelled:
                pass
            except Exception:
                log.exception("prewarm failed")
            finally:
                placeholder.done = True

        with contextlib.suppress(RuntimeError):
            self._worker.submit(run)

    def shutdown(self) -> None:
        self._cancel_live()
        for state in list(self.docs.values()):
            if state.active:
                self._close_active(state, "shutdown")
        self._worker.shutdown(wait=True, cancel_futures=True)
        if self._backend is not None:
            self._backend.close()
