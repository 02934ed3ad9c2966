"""One completion request end to end: opportunity, trigger rules, typeahead cache, debounce, the model under a
deadline, post-processing, and the telemetry of what became of it, by coordinating the parts (workspace,
suggestion tracker, model worker, funnel recorder) on an asyncio loop.  It knows nothing of LSP: the LSP
layer, the eval harness and the CLI drive the same engine.  The configuration in force is one ``Effective``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from opportune.server.backends.base import Backend
from opportune.server.completion.effective import Effective
from opportune.server.completion.funnel import FunnelRecorder, Recorder, RequestTrace
from opportune.server.completion.project import ProjectLink
from opportune.server.completion.starts import Starts
from opportune.server.completion.tracker import TYPING_KINDS, Suggestion, SuggestionTracker
from opportune.server.completion.worker import Live, ModelWorker, offer, silence_reason, wait_for_text
from opportune.server.completion.workspace import LINE_CHARS, Change, DocState, PendingOpportunity, Workspace
from opportune.server.config import CompletionSettings, Settings
from opportune.server.documents import Position
from opportune.server.nextedit.service import NextEdits
from opportune.server.postprocess import should_trigger
from opportune.telemetry import events as ev

log = logging.getLogger(__name__)


class Engine:
    def __init__(
        self,
        backend_factory: Callable[[Settings], Backend],
        config: Effective,
        *,
        record: Recorder | None = None,
        install_id: str = "local",
        session_id: str | None = None,
        notify_user: Callable[[str], None] | None = None,
        hash_salt: str = "",
        workspace_root: Path | None = None,
    ) -> None:
        self.config = config
        self.workspace = Workspace(hash_salt)
        self.project = ProjectLink(
            workspace_root, config.settings.completion, lambda uri: self.starts.project_changed(uri)
        )
        self.worker = ModelWorker(backend_factory, notify_user)
        self.starts = Starts(self.workspace, self.worker, self.project, lambda: self.settings)
        session = session_id or ev.new_id()
        worker = self.worker
        self.funnel = FunnelRecorder(
            record, lambda: self.config, lambda: worker.model_id, worker.count_tokens, install_id, session
        )
        self.tracker = SuggestionTracker(self.funnel, self.workspace.get, lambda: self.settings)
        self.last_latency_ms: float | None = None
        self._completing = 0  # completion requests in flight: next edits wait for them
        # Next edits: their own worker thread, never the model's, so completions never queue behind them.
        self.next_edits = NextEdits(
            lambda: self.settings.next_edit,
            self.workspace.views,
            self.workspace.document,
            self.funnel.emit,
            self.funnel.common,
            workspace_root,
            completing=lambda: self._completing > 0,
            client_reason=self.funnel.client_reason,
        )

    @property
    def settings(self) -> Settings:
        return self.config.settings

    @property
    def model_id(self) -> str:
        return self.worker.model_id

    @property
    def busy(self) -> bool:
        return self.worker.busy

    def load_backend(self) -> str | None:
        """Load the model now (at start-up, off the loop); returns the error for the user, if any."""
        return self.worker.load_backend(self.settings)

    async def load(self) -> None:
        """Load the model on the worker, off the event loop, and tell the user once if it cannot be."""
        await self.worker.load(self.settings)

    def reconfigure(self, config: Effective) -> None:
        """A new configuration in force; the model is reloaded on next use when its settings changed."""
        model_changed = config.settings.model != self.settings.model
        self.config = config
        if model_changed:
            self.worker.swap_model()

    # ---- documents ----------------------------------------------------------------------------------

    def open(self, uri: str, text: str, language_id: str = "", version: int = 0) -> None:
        state = self.workspace.open(uri, text, language_id, version)
        self.funnel.edit(state.language, state.hash, "open", len(text), 0)
        # With a project part on its way, the model is warmed when it is ready (Starts.project_changed).
        pending = self.project.opened(state, self.settings.completion)
        if self.settings.completion.prewarm and self.settings.completion.enabled and not pending:
            self.starts.prewarm(state, len(text))

    def close(self, uri: str) -> None:
        self.tracker.document_closed(uri, self.workspace.close(uri))
        self.project.closed(uri)
        self.worker.cancel_for(uri)

    def change(self, uri: str, version: int, changes: list[Change]) -> None:
        state = self.workspace.get(uri)
        if state is None:
            log.warning("change for a document that is not open: %s", uri)
            return
        edits = self.workspace.apply(state, version, changes)
        self.project.edited(state, edits)
        kind = self.tracker.classify(state, edits)
        if kind in TYPING_KINDS:
            state.keystrokes.append(time.monotonic())
            opp = PendingOpportunity(ev.new_id(), version, edits[-1].new_end, edit_start=edits[-1].start)
            state.opportunity = opp
            self.funnel.opportunity(state.language, opp.opportunity_id, state.hash, kind)
        else:
            state.opportunity = None
            inserted = sum(len(e.inserted) for e in edits)
            removed = sum(len(e.removed) for e in edits)
            self.funnel.edit(state.language, state.hash, kind, inserted, removed)
        self.worker.follow(uri, state.doc.text, edits[-1].new_end)
        if kind == "accept" and self.settings.completion.enabled:
            self.starts.speculate(state, edits[-1].new_end)

    # ---- the client's reports -----------------------------------------------------------------------

    def did_show(self, completion_id: str) -> None:
        self.tracker.did_show(completion_id)

    def did_accept(self, completion_id: str, length: int | None = None) -> None:
        self.tracker.did_accept(completion_id, length)

    def did_reject(self, completion_id: str, reason: str) -> None:
        self.tracker.did_reject(completion_id, reason)

    # ---- completion ---------------------------------------------------------------------------------

    async def complete(self, uri: str, position: Position, invoked: bool = False) -> Suggestion | None:
        """The suggestion for a keystroke, or None; a cancelled request is recorded as lost to cancellation."""
        state = self.workspace.get(uri)
        if state is None:
            return None
        trace = RequestTrace(uri, state.language, state.doc.version)
        self._completing += 1
        try:
            return await self._complete(state, position, invoked, trace)
        except asyncio.CancelledError:
            if trace.attempt_id is not None:
                self._lose(state, trace, "cancelled")
            # Cancelled with no edit since: stop the model.  After an edit, ``change`` already stopped a
            # generation the typing left behind; one it still covers goes on into the typeahead cache.
            if state.doc.version == trace.version:
                self.worker.cancel_for(uri)
            raise
        finally:
            self._completing -= 1

    async def _complete(
        self, state: DocState, position: Position, invoked: bool, trace: RequestTrace
    ) -> Suggestion | None:
        doc = state.doc
        version = trace.version
        cursor = doc.offset_at(position)
        if state.last_answer and state.last_answer[:2] == (version, cursor):
            return state.last_answer[2]  # the client asked again for the same keystroke
        settings = self.settings  # once: a settings change during the request applies to the next one
        c = settings.completion
        opp = state.opportunity
        if opp is None or not opp.covers(version, cursor):
            continuation = self.tracker.continuation(state, cursor)
            if continuation is not None and not invoked:
                return continuation
            if not invoked:
                # Not a fresh edit at the cursor (a cursor move): no opportunity, but warm the model there.
                if c.prewarm and c.enabled:
                    self.starts.prewarm(state, cursor)
                return None
            opp = PendingOpportunity(ev.new_id(), version, cursor)
            self.funnel.opportunity(state.language, opp.opportunity_id, state.hash, "insert", "invoked")
        opp.attempted = True
        state.opportunity = opp

        line_prefix, line_suffix = doc.line_around(cursor, LINE_CHARS)
        binary = "\x00" in line_prefix or "\x00" in line_suffix
        rule = (
            "disabled" if not c.enabled else "binary" if binary else should_trigger(line_prefix, line_suffix)
        )
        if rule in ("disabled", "binary") or (rule and not invoked):
            self.funnel.skip(state.language, opp.opportunity_id, rule or "")
            state.last_answer = (version, cursor, None)
            return None
        trace.stage("trigger", trace.started)

        syntax = self.workspace.syntax(state, cursor)
        shape = self.workspace.shape(syntax, doc, cursor, line_prefix, line_suffix, c)
        text_now = doc.text  # a snapshot: str is immutable, and later keystrokes replace doc.text

        # Typeahead: the generation on screen (or still running) already covers what was typed.
        t0 = time.perf_counter()
        live = self.worker.live
        remaining = (
            live.remaining_after(text_now, cursor)
            if (live and live.uri == doc.uri and c.typeahead_cache)
            else None
        )
        trace.stage("cache", t0)
        if live is not None and remaining is not None:
            # A finished generation's text is the typeahead cache; one still running is the model answering.
            self.funnel.attempt(trace, opp.opportunity_id, "cache" if live.done else "model")
            trace.live = live
            shown, final = offer(live, remaining, cursor, c.min_confidence)
            text = shown if final else ""
            if not text and not live.done:
                text = await self._wait(live, state, trace, text_now, cursor, c)
            return self._answer(state, trace, cursor, text)

        # Debounce (an arm setting): a newer keystroke during it cancels the request before any model work.
        delay = self.worker.debounce_ms(c.debounce_ms, c.adaptive_debounce, self.workspace.typing_gap(state))
        if delay > 0:
            t0 = time.perf_counter()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.changed.wait(), delay / 1000)
            trace.stage("debounce", t0)
        if doc.version != version:
            # A newer keystroke arrived during the debounce: the server never set out, so no attempt.
            self.funnel.skip(state.language, opp.opportunity_id, "debounced")
            return None
        self.funnel.attempt(trace, opp.opportunity_id, "model")
        neighbours = await self.project.awaited(state, cursor, syntax, c) if invoked else None
        live = trace.live = self.starts.start(state, cursor, syntax, shape, text_now, settings, neighbours)
        text = await self._wait(live, state, trace, text_now, cursor, c)
        if live.error:
            return self._lose(state, trace, "error")
        return self._answer(state, trace, cursor, text)

    async def _wait(
        self, live: Live, state: DocState, trace: RequestTrace, text: str, cursor: int, c: CompletionSettings
    ) -> str:
        version, gap = trace.version, self.workspace.typing_gap(state)
        current = lambda: state.doc.version == version  # noqa: E731
        return await wait_for_text(
            live, current, text, cursor, trace.started, c.deadline_ms, gap, c.min_confidence
        )

    def _answer(self, state: DocState, trace: RequestTrace, cursor: int, text: str) -> Suggestion | None:
        live = trace.live
        if state.doc.version != trace.version:
            return self._lose(state, trace, "superseded")
        if not text:
            threshold = self.settings.completion.min_confidence
            return self._lose(state, trace, silence_reason(live, state.doc.text, cursor, threshold))
        t0 = time.perf_counter()
        total_ms = (t0 - trace.started) * 1000
        position = state.doc.position_at(cursor)
        assert trace.attempt_id is not None
        suggestion = Suggestion(ev.new_id(), text, cursor, position, total_ms, trace.source)
        self.tracker.offer(state, suggestion, trace.attempt_id)
        state.last_answer = (trace.version, cursor, suggestion)
        self.last_latency_ms = total_ms
        trace.stage("postprocess", t0)
        self.funnel.response(trace, suggestion)
        self.tracker.assume_shown(state, suggestion, trace.attempt_id)
        return suggestion

    def _lose(self, state: DocState, trace: RequestTrace, reason: ev.LossReason) -> Suggestion | None:
        state.last_answer = None
        self.funnel.response(trace, None, reason)
        return None

    def saved(self, uri: str) -> None:
        """A document was saved: the project part reads workspace files again where they changed."""
        self.project.saved(uri)

    def shutdown(self) -> None:
        self.next_edits.close()
        self.project.close()
        self.worker.cancel_live()
        for state in list(self.workspace.docs.values()):
            if state.active:
                self.tracker.close_active(state, "shutdown")
        self.tracker.persistence.stop()
        self.worker.shutdown()
