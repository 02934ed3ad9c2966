"""The suggestion tracker: what became of each suggestion shown, inferred from edits or reported by the client.

A suggestion on screen is followed through the edits after it: typed through (accepted), replaced by the
suggestion as a range edit (accepted), typed over or edited elsewhere (rejected, or partly accepted).
Where the client reports outcomes itself (``opportune.accept``, ``opportune/did*``), its report wins over
the inference.  Edits are classified here too, since following the suggestion decides an edit's kind.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from opportune.server.completion.persistence import PersistenceTimer, PersistenceTracker
from opportune.server.documents import Position, TextEdit
from opportune.telemetry import events as ev

if TYPE_CHECKING:
    from opportune.server.completion.funnel import FunnelRecorder
    from opportune.server.completion.workspace import DocState
    from opportune.server.config import Settings

TYPING_MAX_CHARS = 40  # a single-line insertion longer than this is a paste, not typing
TYPING_KINDS = ("insert", "delete", "replace", "newline")  # the edits that are opportunities
MAX_ANSWERS = 256  # suggestions a client may still report on


@dataclass
class Suggestion:
    completion_id: str
    text: str
    cursor: int  # str offset where ``text`` is inserted
    position: Position
    latency_ms: float
    source: Literal["model", "cache"]


@dataclass
class ActiveSuggestion:
    """The suggestion on screen in a document, followed to infer its outcome from edits."""

    suggestion: Suggestion
    attempt_id: str
    typed: int = 0
    explicit: bool = False  # the client reported an outcome itself
    view_offset: int = 0  # the client was last shown the suggestion from this offset on (partial accepts)
    # For keystrokes saved: characters of it the user typed key by key, insertions of more than one of
    # its characters at once (accepts the client applied), and accepts the client reported.
    keyed: int = 0
    accept_edits: int = 0
    accept_reports: int = 0

    def keystrokes_saved(self, chars: int) -> int:
        """Characters not typed minus the keys spent accepting (one per accept or partial accept)."""
        if chars <= 0:
            return 0
        return max(0, chars - min(self.keyed, chars) - max(self.accept_edits, self.accept_reports, 1))


class SuggestionTracker:
    def __init__(
        self,
        funnel: FunnelRecorder,
        lookup: Callable[[str], DocState | None],
        settings: Callable[[], Settings] | None = None,
    ) -> None:
        self.funnel = funnel
        self._lookup = lookup
        # Follows accepted suggestions through later edits, with the telemetry settings in force.
        self.persistence = PersistenceTimer(
            PersistenceTracker(
                (lambda: settings().telemetry.persistence_checkpoints_s) if settings else (),
                funnel.emit,
                settings().telemetry.persistence_max_tracked if settings else 1,
                settings().telemetry.store_text if settings else False,
            ),
            lambda uri: state.doc.text if (state := lookup(uri)) else None,
        )
        self._answers: dict[str, tuple[str, ActiveSuggestion]] = {}  # completion id -> (uri, active)
        self.client_reports_shown = False

    # ---- the editor's edits -------------------------------------------------------------------------

    def classify(self, state: DocState, edits: list[TextEdit]) -> ev.EditKind:
        """The edit's kind, following the suggestion on screen to infer its outcome."""
        self.persistence.tracker.edited(state.doc.uri, edits)
        active = state.active
        if len(edits) != 1:
            if active:
                self.close_active(state, "edited")
            return "bulk"
        e = edits[0]
        if active is not None:
            s = active.suggestion
            rest = s.text[active.typed :]
            at = s.cursor + active.typed
            if e.start == at and not e.removed and e.inserted and rest.startswith(e.inserted):
                active.typed += len(e.inserted)
                if len(e.inserted) == 1:
                    active.keyed += 1
                else:
                    active.accept_edits += 1
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
                active.accept_edits += 1
                self._outcome(state, active, "accepted", len(s.text), "", inferred=True)
                state.active = None
                return "accept"
            else:
                self.close_active(state, "typed_over")
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

    def document_closed(self, uri: str, state: DocState | None) -> None:
        """``uri`` closed: the suggestion on screen is rejected, accepted ones' checkpoints are unknown."""
        if state and state.active:
            self.close_active(state, "closed")
        self.persistence.tracker.closed(uri)

    def close_active(self, state: DocState, reason: str) -> None:
        active = state.active
        state.active = None
        if active is None:
            return
        if active.typed > 0:
            self._outcome(state, active, "partial", active.typed, reason, inferred=True)
        else:
            self._outcome(state, active, "rejected", 0, reason, inferred=True)

    # ---- answers ------------------------------------------------------------------------------------

    def offer(self, state: DocState, suggestion: Suggestion, attempt_id: str) -> None:
        """``suggestion`` is now the one on screen in ``state``'s document."""
        if state.active is not None:
            self.close_active(state, "superseded")
        active = ActiveSuggestion(suggestion, attempt_id)
        state.active = active
        self._answers[suggestion.completion_id] = (state.doc.uri, active)
        if len(self._answers) > MAX_ANSWERS:
            self._answers.pop(next(iter(self._answers)))

    def assume_shown(self, state: DocState, suggestion: Suggestion, attempt_id: str) -> None:
        """A client that does not report what it shows is taken to have shown every answer."""
        if not self.client_reports_shown:
            self.funnel.shown(state.language, suggestion.completion_id, attempt_id, inferred=True)

    def continuation(self, state: DocState, cursor: int) -> Suggestion | None:
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
        return Suggestion(
            s.completion_id,
            s.text[active.typed :],
            cursor,
            state.doc.position_at(cursor),
            s.latency_ms,
            "cache",
        )

    # ---- the client's reports -----------------------------------------------------------------------

    def _find(self, completion_id: str) -> tuple[DocState | None, ActiveSuggestion] | None:
        found = self._answers.get(completion_id)
        if found is None:
            return None
        uri, active = found
        return self._lookup(uri), active

    def did_show(self, completion_id: str) -> None:
        self.client_reports_shown = True
        found = self._find(completion_id)
        if found:
            state, active = found
            language = state.language if state else None
            self.funnel.shown(language, completion_id, active.attempt_id, inferred=False)

    def did_accept(self, completion_id: str, length: int | None = None) -> None:
        """Full accept (``length`` None) or partial accept of ``length`` characters, as the client reports."""
        found = self._find(completion_id)
        if not found:
            return
        state, active = found
        full = len(active.suggestion.text)
        n = full if length is None else max(0, min(active.view_offset + int(length), full))
        active.accept_reports += 1
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
        self._outcome(state, active, "rejected", 0, self.funnel.client_reason(reason), inferred=False)
        active.explicit = True

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
        s = active.suggestion
        language = state.language if state else None
        accepted = s.text[:chars]
        self.funnel.outcome(
            language,
            s.completion_id,
            outcome,
            accepted,
            reason,
            inferred=inferred,
            keystrokes_saved=active.keystrokes_saved(chars),
        )
        if chars and state is not None and self._lookup(state.doc.uri):
            common = self.funnel.common(language)
            self.persistence.tracker.accepted(
                s.completion_id, state.doc.uri, s.cursor, accepted, state.doc.text, common, time.monotonic()
            )
            self.persistence.poke()
