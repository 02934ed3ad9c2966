"""The workspace: open documents, their syntax trees and per-document state, and what a prompt may see.

Everything here lives on the event loop, except one thing it shares: a prompt input handed to the model
worker carries only immutable snapshots (the text, the line index list, the tree's own snapshot) and the
document's ``LineContexts``, the memo of window-line syntax contexts that the worker adds to and the loop
trims on edits, behind its own lock.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import logging
import secrets
import statistics
import threading
from collections import deque
from dataclasses import dataclass, field

from opportune.server.completion.tracker import ActiveSuggestion, Suggestion
from opportune.server.config import CompletionSettings
from opportune.server.context.syntax import SyntaxContext, SyntaxTree, language_for
from opportune.server.documents import MAX_PARSED_CHARS, Document, Position, TextEdit, utf8_len
from opportune.server.nextedit.history import EditHistory
from opportune.server.nextedit.service import DocView
from opportune.server.postprocess import Shape
from opportune.server.prompt import PromptInput, reach_chars

log = logging.getLogger(__name__)

# Per keystroke the engine looks at a bounded part of a document, never all of it: this much of the
# cursor line each way, and (prompt.reach_chars) what a prompt can use.  A keystroke in a 20 MB file then
# costs what it costs in a small one.
LINE_CHARS = 2000
MEMO_LINES = 64  # window-line syntax contexts kept per document (a user roaming a long file)

Change = tuple[Position | None, Position | None, str]


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


class LineContexts:
    """The syntax context seen from window lines, kept per document until an edit reaches the line.

    Half-typed code below a line (an open bracket) can make tree-sitter's error recovery forget scopes it
    knew, and the prompt would flicker (and lose its KV-cache reuse) from one keystroke to the next.  The
    model worker adds what it computes for a job while the loop drops what edits reach: one lock, and an
    entry computed on a version an edit has since reached is not kept.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[int, SyntaxContext] = {}
        self._edits: deque[tuple[int, int]] = deque(maxlen=MEMO_LINES)  # (version, first line edited)

    def get(self, line: int) -> SyntaxContext | None:
        with self._lock:
            return self._entries.get(line)

    def put(self, line: int, context: SyntaxContext, version: int) -> None:
        """Keep ``context``, computed on the document at ``version``, unless an edit since reached ``line``."""
        with self._lock:
            edits = self._edits
            if len(edits) == MEMO_LINES and edits[0][0] > version:
                return  # more edits since than are remembered: nothing is known to be still valid
            if any(v > version and first <= line for v, first in edits):
                return
            if (
                len(self._entries) >= MEMO_LINES
            ):  # a user roaming a long file: bounded, at one re-query's cost
                self._entries.clear()
            self._entries[line] = context

    def edited(self, version: int, first_line: int) -> None:
        """An edit at ``version`` reached ``first_line`` and the lines below."""
        with self._lock:
            self._edits.append((version, first_line))
            if any(line >= first_line for line in self._entries):
                self._entries = {k: v for k, v in self._entries.items() if k < first_line}

    def lines(self) -> dict[int, SyntaxContext]:
        with self._lock:
            return dict(self._entries)


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
    line_contexts: LineContexts = field(default_factory=LineContexts)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    history: EditHistory = field(default_factory=EditHistory)  # the recent hunks, for next edits


def document_hash(salt: str, uri: str) -> str:
    # Keyed by the install's secret salt (never the install id, which is in every row): without the salt,
    # a guessed path cannot be checked against a stored hash.  surrogatepass: a URI may hold a lone one.
    return hmac.new(salt.encode(), uri.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:16]


def display_path(uri: str) -> str:
    # Only the file's name: enough to tell the model the language and topic, nothing of the user's tree.
    return uri.rsplit("/", 1)[-1]


class Workspace:
    """The open documents, by URI."""

    def __init__(self, hash_salt: str = "") -> None:
        self.docs: dict[str, DocState] = {}
        # The install's secret (session.hash_salt) or, without one, this process's own.
        self.hash_salt = hash_salt or secrets.token_hex(16)

    def get(self, uri: str) -> DocState | None:
        return self.docs.get(uri)

    def open(self, uri: str, text: str, language_id: str, version: int) -> DocState:
        language = language_for(language_id, uri)
        doc = Document(uri=uri, text=text, language_id=language_id, version=version)
        state = DocState(
            doc=doc, language=language, tree=_parse(language, text), hash=document_hash(self.hash_salt, uri)
        )
        self.docs[uri] = state
        return state

    def close(self, uri: str) -> DocState | None:
        return self.docs.pop(uri, None)

    def document(self, uri: str) -> Document | None:
        state = self.docs.get(uri)
        return state.doc if state else None

    def views(self) -> dict[str, DocView]:
        """Snapshots of the open documents and their recent hunks (str and tuples: safe on another thread)."""
        return {
            uri: DocView(
                uri,
                s.doc.text,
                s.language,
                s.doc.version,
                tuple(s.history.hunks),
                s.hash,
                s.history.changed_at,
            )
            for uri, s in self.docs.items()
        }

    def apply(self, state: DocState, version: int, changes: list[Change]) -> list[TextEdit]:
        """Apply an editor's changes in order: text, trees, memo, and wake whoever waits on the document."""
        doc = state.doc
        edits: list[TextEdit] = []
        for start, end, text in changes:
            edits.append(doc.apply(start, end, text))
            if start is None:
                state.history.reset()
            else:
                state.history.record(edits[-1].start, edits[-1].removed, edits[-1].inserted, doc.text)
            if start is None:
                state.tree = _parse(state.language, doc.text)
            elif state.tree is not None:
                self._update_tree(state, edits[-1])
        doc.version = version
        state.line_contexts.edited(version, min(e.start_point[0] for e in edits))
        state.changed.set()
        state.changed = asyncio.Event()
        return edits

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
            state.tree = _parse(state.language, state.doc.text)

    # ---- what a request sees ------------------------------------------------------------------------

    @staticmethod
    def syntax(state: DocState, cursor: int) -> SyntaxContext | None:
        if state.tree is None:
            return None
        try:
            return state.tree.context_at(state.doc.byte_offset(cursor))
        except Exception:
            log.exception("syntax context failed")
            return None

    @staticmethod
    def shape(
        syntax: SyntaxContext | None,
        doc: Document,
        cursor: int,
        line_prefix: str,
        line_suffix: str,
        c: CompletionSettings,
    ) -> Shape:
        after = doc.text[cursor : cursor + LINE_CHARS]
        multiline = c.multiline == "always" or (
            c.multiline == "auto" and syntax is not None and syntax.multiline
        )
        if line_suffix.strip():
            multiline = False
        following = after.split("\n", 1)[1] if "\n" in after else ""
        return Shape(multiline, c.max_lines, line_prefix, line_suffix, following)

    def prompt_input(
        self,
        state: DocState,
        cursor: int,
        syntax: SyntaxContext | None,
        c: CompletionSettings,
        neighbours: tuple[tuple[str, str], ...] = (),
    ) -> PromptInput:
        """The prompt's input at ``cursor``, to be used on the model worker; ``neighbours`` is the project
        part."""
        doc = state.doc
        tree = state.tree
        text = doc.text
        lo, hi, first_line = self.prompt_span(doc, cursor, c)
        context_at_line = None
        if tree is not None and syntax is not None:
            # Runs on the worker: only immutable snapshots here (the text, the line index list, the tree's
            # own snapshot) and the locked memo, never the live document.
            line_starts = doc.line_starts
            cursor_byte = doc.byte_offset(cursor)
            memo, version = state.line_contexts, doc.version

            def context_at_line(line: int) -> SyntaxContext:
                found = memo.get(line)
                if found is None:
                    at = int(line_starts[min(line, len(line_starts) - 1)])
                    start = utf8_len(text[:at])
                    found = tree.context_at(start, visible_range=(start, cursor_byte))
                    memo.put(line, found, version)
                return found

        return PromptInput(
            text=text[lo:hi],
            cursor=cursor - lo,
            first_line=first_line,
            path=display_path(doc.uri),
            language=state.language,
            syntax=syntax,
            context_at_line=context_at_line,
            neighbours=neighbours,
        )

    @staticmethod
    def prompt_span(doc: Document, cursor: int, c: CompletionSettings) -> tuple[int, int, int]:
        """The part of the document a prompt can use (whole lines back to its reach, the suffix lines after):
        its start and end offsets and the line it starts on."""
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

    @staticmethod
    def typing_gap(state: DocState) -> float | None:
        """The user's current time between keystrokes (median of recent gaps within bursts), if known."""
        gaps = [b - a for a, b in itertools.pairwise(state.keystrokes) if b - a < 1.0]
        return statistics.median(gaps) if len(gaps) >= 3 else None


def _parse(language: str | None, text: str) -> SyntaxTree | None:
    if language is None or len(text) > MAX_PARSED_CHARS or "\x00" in text:
        return None
    try:
        return SyntaxTree(language, text.encode("utf-8", "surrogatepass"))
    except Exception:
        log.exception("tree-sitter failed on a %s document", language)
        return None
