"""Next edits end to end: from the recent hunks of a document to follow-up edits, their ids and telemetry.

The engine owns the documents and their edit histories; this service reads immutable snapshots of them
(``DocView``), analyses on its own worker thread (never the model's, so inline completions are never
queued behind it), and answers with edits in LSP-free terms (``ProposedEdit``).  A newer request cancels an
older one, as a request cancelled by the client stops its analysis between files.

Each change with follow-ups is one *edit opportunity*, counted once, before any arm rule (an arm with next
edits off still counts them).  Each follow-up edit gets an id when first offered (``next_edit`` event),
and keeps it while it is offered again; accepting it (``accept``) either confirms an edit the client
applied, or asks the caller to apply it; a stale one (its document changed since) is refused with the
reason, and an edit is never applied twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from opportune.server.config import NextEditSettings
from opportune.server.documents import Document, Position
from opportune.server.nextedit.history import Hunk
from opportune.server.nextedit.structure import Change, FollowUp, Rename, Source, detect, follow_ups
from opportune.server.nextedit.workspace import WorkspaceIndex
from opportune.telemetry import events as ev

log = logging.getLogger(__name__)

MAX_REMEMBERED = 512  # offered edits and detected changes kept for ids and outcomes
# Inline completions go first: a next-edit request waits while completions are in flight, at most this long
# (then it runs anyway; a client that typed on has cancelled it by then).
YIELD_TO_COMPLETIONS_S = 1.0
YIELD_STEP_S = 0.005


@dataclass(frozen=True)
class DocView:
    """An open document as the analysis sees it: an immutable snapshot taken on the event loop."""

    uri: str
    text: str
    language: str | None
    version: int
    hunks: tuple[Hunk, ...]
    document_hash: str
    changed_at: float = 0.0  # monotonic time of its last edit


@dataclass(frozen=True)
class ProposedEdit:
    edit_id: str
    uri: str
    version: int | None  # None: a workspace file that is not open
    start: Position
    end: Position
    new_text: str  # may hold snippet placeholders (``snippet``)
    plain_text: str  # the same without placeholders
    snippet: bool
    kind: str
    change_kind: str
    title: str


@dataclass(frozen=True)
class Answer:
    edits: tuple[ProposedEdit, ...]
    reason: str = ""  # why there are none, for people
    stale: bool = False  # the document changed while the answer was computed


@dataclass
class _Offered:
    edit: ProposedEdit
    follow_up: FollowUp
    removed: str  # the text the edit replaces
    opportunity_id: str
    path: Path | None  # workspace file, when not open
    base_seq: int = 0  # the document's newest hunk when offered: later hunks are edits since
    state: Literal["offered", "applying", "accepted", "rejected"] = "offered"


@dataclass(frozen=True)
class AcceptResult:
    accepted: bool
    reason: str
    apply: ProposedEdit | None = None  # the caller should apply this edit (the client has not)


@dataclass
class _Opportunity:
    opportunity_id: str
    offered: set[str] = field(default_factory=set)


def _change_key(uri: str, change: Change) -> tuple[object, ...]:
    if isinstance(change, Rename):
        return (uri, "rename", change.old, change.new, change.member)
    return (uri, change.kind, change.old_name, change.new_name, change.old_params, change.new_params)


def describe(change: Change) -> str:
    if isinstance(change, Rename):
        return f"rename {change.old} → {change.new}"
    kind = change.kind
    if kind == "rename_function":
        return f"rename {change.old_name} → {change.new_name}"
    if kind == "rename_parameter" and change.renamed_parameter:
        old, new = change.renamed_parameter
        return f"rename parameter {old} → {new}"
    params = ", ".join(p.name for p in change.new_params)
    return f"update call to {change.new_name}({params})"


class NextEdits:
    """The next-edit service of one engine."""

    def __init__(
        self,
        settings: Callable[[], NextEditSettings],
        documents: Callable[[], Mapping[str, DocView]],
        document: Callable[[str], Document | None],
        emit: Callable[[ev.Event], None],
        common: Callable[[str | None], ev.Common],
        workspace: Path | None = None,
        completing: Callable[[], bool] = lambda: False,
        client_reason: Callable[[str], str] = lambda reason: reason,
    ) -> None:
        self._settings = settings
        self._client_reason = client_reason  # a client's free-form reason is stored only if it is safe
        self._completing = completing
        self._documents = documents
        self._document = document
        self._emit = emit
        self._common = common
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="opportune-nextedit")
        self._cancel: threading.Event | None = None
        self._changes: OrderedDict[tuple[str, int], Change | None] = OrderedDict()  # (uri, hunk seq)
        self._opportunities: OrderedDict[tuple[object, ...], _Opportunity] = OrderedDict()
        self._offered: OrderedDict[str, _Offered] = OrderedDict()
        self._ids: dict[tuple[object, ...], str] = {}
        self.workspace: WorkspaceIndex | None = None
        s = settings()
        if workspace is not None and s.workspace and s.workspace_max_files > 0:
            self.workspace = WorkspaceIndex(
                workspace, max_files=s.workspace_max_files, max_file_bytes=s.workspace_max_file_kb * 1024
            )
            self.workspace.start()

    def close(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
        if self.workspace is not None:
            self.workspace.stop()
        self._worker.shutdown(wait=False, cancel_futures=True)

    # ---- suggesting --------------------------------------------------------------------------------

    async def suggest(self, uri: str, position: Position | None = None) -> Answer:
        """The follow-up edits of the most recent change in ``uri`` that has any."""
        started = time.perf_counter()
        # Completions first: they are what the user waits for while typing.
        waited = 0.0
        while self._completing() and waited < YIELD_TO_COMPLETIONS_S:
            await asyncio.sleep(YIELD_STEP_S)
            waited += YIELD_STEP_S
        docs = self._documents()
        view = docs.get(uri)
        if view is None:
            return Answer((), "the document is not open")
        # Analysed only once the document is quiet: mid-burst the next keystroke supersedes this request.
        quiet_s = self._settings().quiet_ms / 1000
        newest = max((d.changed_at for d in docs.values()), default=0.0)
        pause = quiet_s - (time.monotonic() - newest)
        if pause > 0:
            await asyncio.sleep(pause)
            docs = self._documents()
            view = docs.get(uri)
            if view is None or max((d.changed_at for d in docs.values()), default=0.0) != newest:
                return Answer((), "superseded by a newer edit; ask again", stale=True)
        if self._cancel is not None:
            self._cancel.set()  # a newer request supersedes the one still analysing
        cancel = self._cancel = threading.Event()
        loop = asyncio.get_running_loop()
        try:
            found = await loop.run_in_executor(self._worker, self._analyse, view, docs, cancel)
        except asyncio.CancelledError:
            cancel.set()
            raise
        if cancel.is_set():
            return Answer((), "cancelled by a newer request")
        document = self._document(uri)
        if document is None or document.version != view.version:
            return Answer((), f"{uri} changed while next edits were computed; ask again", stale=True)
        source, change, ups, reason = found
        if change is None:
            return Answer((), reason)
        if source.uri != uri:
            document = self._document(source.uri)
            if document is None or document.version != source.version:
                return Answer(
                    (), f"{source.uri} changed while next edits were computed; ask again", stale=True
                )
        return self._offer(source, change, ups, (time.perf_counter() - started) * 1000)

    def _analyse(
        self, view: DocView, docs: Mapping[str, DocView], cancel: threading.Event
    ) -> tuple[DocView, Change | None, list[FollowUp], str]:
        """The requested document's recent changes first, then those of the other open documents, most
        recently edited first: after jumping to a call site in another file, its follow-ups are still there."""
        others = sorted(
            (d for d in docs.values() if d.uri != view.uri and d.hunks),
            key=lambda d: d.changed_at,
            reverse=True,
        )
        first_reason = ""
        for i, candidate in enumerate([view, *others[:4]]):
            if cancel.is_set():
                break
            change, ups, reason = self._analyse_one(candidate, docs, cancel)
            if change is not None:
                return candidate, change, ups, reason
            if i == 0:
                first_reason = reason
        return view, None, [], first_reason

    def _analyse_one(
        self, view: DocView, docs: Mapping[str, DocView], cancel: threading.Event
    ) -> tuple[Change | None, list[FollowUp], str]:
        settings = self._settings()
        if view.language is None:
            return None, [], "no grammar for this document's language"
        if len(view.text) > settings.max_document_kb * 1024:
            return None, [], "the document is too large to analyse"
        text = view.text
        after = text
        newer: list[Hunk] = []
        conflict: Change | None = None
        for analysed, hunk in enumerate(reversed(view.hunks)):
            self._yield_to_completions(cancel)
            if cancel.is_set() or analysed >= settings.history_hunks:
                break
            before = hunk.undo(after)
            key = (view.uri, hunk.seq)
            if key in self._changes:
                change = self._changes[key]
            else:
                try:
                    change = detect(view.language, before, after, hunk)
                except Exception:  # broken code must never break the server
                    log.exception("next-edit detection failed")
                    change = None
                self._remember(self._changes, key, change)
            if change is not None:
                change = _moved(change, newer)
                if change.conflict:
                    conflict = conflict or change
                else:
                    origin = Source(view.uri, text, view.language, view.version)
                    others = self._others(view, docs, change)
                    ups = follow_ups(
                        change, origin, others, limit=settings.max_edits, cancelled=self._checkpoint(cancel)
                    )
                    if ups:
                        return change, ups, ""
            newer.insert(0, hunk)
            after = before
        if conflict is not None:
            new = conflict.new if isinstance(conflict, Rename) else conflict.new_name
            return None, [], f"not propagated: {new} is already used there ({describe(conflict)})"
        return None, [], "no recent change with follow-up edits"

    def _checkpoint(self, cancel: threading.Event) -> Callable[[], bool]:
        """Asked between files: yields to completions, then says whether to stop."""

        def check() -> bool:
            self._yield_to_completions(cancel)
            return cancel.is_set()

        return check

    def _yield_to_completions(self, cancel: threading.Event) -> None:
        """On the analysis thread: pause while a completion is in flight, so the event loop and the model
        worker get the interpreter (bounded, and over as soon as this analysis is cancelled)."""
        waited = 0.0
        while self._completing() and not cancel.is_set() and waited < YIELD_TO_COMPLETIONS_S:
            time.sleep(YIELD_STEP_S)
            waited += YIELD_STEP_S

    def _others(self, view: DocView, docs: Mapping[str, DocView], change: Change) -> list[Source]:
        if isinstance(change, Rename) and change.local:
            return []
        out = [
            Source(d.uri, d.text, d.language, d.version)
            for d in docs.values()
            if d.uri != view.uri and d.language is not None
        ]
        if self.workspace is not None:
            open_paths = {_path_of(uri) for uri in docs}
            needle = change.old if isinstance(change, Rename) else change.old_name
            for entry in self.workspace.mentioning(needle)[:200]:
                if entry.path in open_paths:
                    continue
                text = self.workspace.read(entry)
                if text is not None:
                    out.append(Source(entry.path.as_uri(), text, entry.language, None))
        return out

    def _offer(self, view: DocView, change: Change, ups: list[FollowUp], latency_ms: float) -> Answer:
        key = _change_key(view.uri, change)
        opp = self._opportunities.get(key)
        if opp is None:
            # A new change supersedes what was offered for older ones and is still open.
            for old in self._opportunities.values():
                self._close_open(old, "superseded")
            opp = _Opportunity(ev.new_id())
            self._remember(self._opportunities, key, opp)
            self._emit(
                ev.EditOpportunity(
                    self._common(view.language),
                    opp.opportunity_id,
                    view.document_hash,
                    change.kind,
                    len(ups),
                    len({u.uri for u in ups}),
                )
            )
        settings = self._settings()
        if not settings.enabled:
            return Answer((), "next edits are off (setting next_edit.enabled)")
        title = describe(change)
        views = self._documents()  # once: a snapshot of every open document is not free
        edits: list[ProposedEdit] = []
        current: set[str] = set()
        texts: dict[str, Document] = {}
        for up in ups:
            doc = self._document(up.uri) if up.uri == view.uri or up.version is not None else None
            if doc is None:
                doc = texts.get(up.uri)
                if doc is None:
                    open_view = views.get(up.uri)
                    source_text = open_view.text if open_view is not None else None
                    if source_text is None:
                        source_text = _read(self.workspace, up.uri)
                    if source_text is None:
                        continue
                    doc = texts[up.uri] = Document(up.uri, source_text)
            removed = doc.text[up.start : up.end]
            line = doc.line_text(doc.line_of(up.start))
            id_key = (opp.opportunity_id, up.uri, line, removed, up.new_text)
            edit_id = self._ids.get(id_key)
            first = edit_id is None or edit_id not in self._offered
            if edit_id is None or edit_id not in self._offered:
                edit_id = ev.new_id()
                self._ids[id_key] = edit_id
                if len(self._ids) > MAX_REMEMBERED * 4:
                    self._ids.pop(next(iter(self._ids)))
            proposed = ProposedEdit(
                edit_id,
                up.uri,
                up.version,
                doc.position_at(up.start),
                doc.position_at(up.end),
                up.new_text,
                up.plain_text,
                up.snippet,
                up.kind,
                change.kind,
                title,
            )
            previous = self._offered.get(edit_id)
            if previous is not None and previous.state in ("accepted", "applying"):
                continue
            self._remember(
                self._offered,
                edit_id,
                _Offered(
                    proposed,
                    up,
                    removed,
                    opp.opportunity_id,
                    None if up.version is not None else _path_of(up.uri),
                    _newest_seq(views.get(up.uri)),
                ),
            )
            current.add(edit_id)
            edits.append(proposed)
            if first:
                self._emit(
                    ev.NextEdit(
                        self._common(view.language),
                        edit_id,
                        opp.opportunity_id,
                        "rule",
                        up.kind,
                        up.chars_changed,
                        latency_ms,
                        up.uri == view.uri,
                        up.snippet,
                    )
                )
        # Offered before, not accepted, and no longer needed: the user did it another way or dropped it.
        for gone in opp.offered - current:
            self._resolve(gone, "rejected", "gone", inferred=True)
        opp.offered = current
        return Answer(tuple(edits), "" if edits else "no follow-up edits left")

    # ---- outcomes ----------------------------------------------------------------------------------

    def accept(self, edit_id: str) -> AcceptResult:
        """The client accepted ``edit_id`` (ran its command).  Confirms an edit the client applied, or returns
        it for the caller to apply; refuses an unknown, repeated or stale one with the reason."""
        offered = self._offered.get(edit_id)
        if offered is None:
            return AcceptResult(False, "unknown or expired next edit; ask for next edits again")
        if offered.state in ("accepted", "applying"):
            return AcceptResult(False, "already applied")
        if offered.state == "rejected":
            return AcceptResult(False, "this next edit was withdrawn; ask for next edits again")
        edit = offered.edit
        if edit.version is None:  # a workspace file: it must still hold what the edit replaces
            text = _read(self.workspace, edit.uri)
            if text is None or text[offered.follow_up.start : offered.follow_up.end] != offered.removed:
                return AcceptResult(False, f"stale: {edit.uri} changed on disk since this edit was computed")
            offered.state = "applying"
            return AcceptResult(True, "", apply=edit)
        doc = self._document(edit.uri)
        if doc is None:
            return AcceptResult(False, f"{edit.uri} was closed since this edit was computed")
        if doc.version == edit.version:
            offered.state = "applying"
            return AcceptResult(True, "", apply=edit)
        if self._applied_by_client(offered):
            self._resolve(edit_id, "accepted", "client")
            return AcceptResult(True, "")
        return AcceptResult(
            False,
            f"stale: {edit.uri} is at version {doc.version}, this edit was computed for version {edit.version};"
            " ask for next edits again",
        )

    def applied(self, edit_id: str, ok: bool, reason: str = "") -> None:
        """The caller applied (or failed to apply) an edit ``accept`` returned."""
        offered = self._offered.get(edit_id)
        if offered is None:
            return
        if ok:
            self._resolve(edit_id, "accepted", "server")
        else:
            offered.state = "offered"

    def reject(self, edit_id: str, reason: str) -> None:
        self._resolve(edit_id, "rejected", self._client_reason(reason or "dismissed"), inferred=False)

    def _applied_by_client(self, offered: _Offered) -> bool:
        views = self._documents()
        view = views.get(offered.edit.uri)
        if view is None:
            return False
        # The edit is one of the hunks made since it was offered, at its place carried through the others.
        at = offered.follow_up.start
        for h in view.hunks:
            if h.seq <= offered.base_seq:
                continue
            if h.start == at and h.removed == offered.removed and h.inserted == offered.edit.plain_text:
                return True
            if h.start + len(h.removed) <= at:
                at += len(h.inserted) - len(h.removed)
        return False

    def _resolve(
        self, edit_id: str, outcome: ev.NextEditOutcomeKind, reason: str, inferred: bool = False
    ) -> None:
        offered = self._offered.get(edit_id)
        if offered is None or offered.state in ("accepted", "rejected"):
            return
        offered.state = outcome
        chars = offered.follow_up.chars_changed if outcome == "accepted" else 0
        self._emit(ev.NextEditOutcome(self._common(None), edit_id, outcome, chars, reason, inferred))

    def _close_open(self, opp: _Opportunity, reason: str) -> None:
        for edit_id in opp.offered:
            self._resolve(edit_id, "rejected", reason, inferred=True)
        opp.offered = set()

    @staticmethod
    def _remember(store: OrderedDict, key: object, value: object) -> None:
        store[key] = value
        store.move_to_end(key)
        while len(store) > MAX_REMEMBERED:
            store.popitem(last=False)


def _moved(change: Change, newer: list[Hunk]) -> Change:
    """``change`` with its anchor carried through the hunks made after it (oldest first)."""
    if not newer:
        return change
    at = change.anchor
    for h in newer:
        if h.start + len(h.removed) <= at:
            at += len(h.inserted) - len(h.removed)
        elif h.start < at:
            at = h.start
    from dataclasses import replace

    return replace(change, anchor=at)


def _newest_seq(view: DocView | None) -> int:
    return view.hunks[-1].seq if view is not None and view.hunks else 0


def _path_of(uri: str) -> Path | None:
    if not uri.startswith("file:"):
        return None
    from urllib.parse import unquote, urlsplit

    return Path(unquote(urlsplit(uri).path))


def _read(workspace: WorkspaceIndex | None, uri: str) -> str | None:
    path = _path_of(uri)
    if workspace is None or path is None or not workspace.contains(path):
        return None
    with contextlib.suppress(OSError):
        data = path.read_bytes()
        if len(data) <= workspace.max_file_bytes:
            return data.decode("utf-8", "replace")
    return None
