"""The workspace: open documents, their syntax trees and per-document state, and what a prompt may see.

Everything here lives on the event loop.  A prompt input handed to the model worker carries only immutable
snapshots (the text, the line index list, the tree's own snapshot) and a private copy of the document's
memo of window-line syntax contexts; what the worker adds to that copy is merged back here, on the loop,
when its job ends (``merge_contexts``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import logging
import secrets
import statistics
from collections import deque
from dataclasses import dataclass, field

from opportune.server.completion.tracker import ActiveSuggestion, Suggestion
from opportune.server.config import CompletionSettings
from opportune.server.context.syntax import SyntaxContext, SyntaxTree, language_for
from opportune.server.documents import MAX_PARSED_CHARS, Document, Position, TextEdit, utf8_len
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
    # Window-line syntax contexts, kept until an edit above the line: half-typed code below it (an open
    # bracket) can make tree-sitter's error recovery forget scopes it knew, and the prompt would flicker.
    line_contexts: dict[int, SyntaxContext] = field(default_factory=dict)
    edited_lines: deque[tuple[int, int]] = field(default_factory=lambda: deque(maxlen=MEMO_LINES))
    changed: asyncio.Event = field(default_factory=asyncio.Event)


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

    def apply(self, state: DocState, version: int, changes: list[Change]) -> list[TextEdit]:
        """Apply an editor's changes in order: text, trees, memo, and wake whoever waits on the document."""
        doc = state.doc
        edits: list[TextEdit] = []
        for start, end, text in changes:
            edits.append(doc.apply(start, end, text))
            if start is None:
                state.tree = _parse(state.language, doc.text)
            elif state.tree is not None:
                self._update_tree(state, edits[-1])
        doc.version = version
        first_line = min(e.start_point[0] for e in edits)
        state.edited_lines.append((version, first_line))
        if any(line >= first_line for line in state.line_contexts):
            state.line_contexts = {k: v for k, v in state.line_contexts.items() if k < first_line}
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
        memo: dict[int, SyntaxContext] | None = None,
    ) -> PromptInput:
        """The prompt's input at ``cursor``.  ``memo`` is the private copy of the document's window-line
        contexts that the worker may add to (default: a fresh copy)."""
        doc = state.doc
        tree = state.tree
        text = doc.text
        lo, hi, first_line = self.prompt_span(doc, cursor, c)
        context_at_line = None
        if tree is not None and syntax is not None:
            # Runs on the worker: only immutable snapshots here (the text, the line index list, the tree's
            # own snapshot) and the job's own memo, never the live document.
            line_starts = doc.line_starts
            cursor_byte = doc.byte_offset(cursor)
            own = dict(state.line_contexts) if memo is None else memo

            def context_at_line(line: int) -> SyntaxContext:
                found = own.get(line)
                if found is None:
                    if len(own) >= MEMO_LINES:  # bounded, at the cost of one re-query
                        own.clear()
                    at = int(line_starts[min(line, len(line_starts) - 1)])
                    start = utf8_len(text[:at])
                    found = own[line] = tree.context_at(start, visible_range=(start, cursor_byte))
                return found

        return PromptInput(
            text=text[lo:hi],
            cursor=cursor - lo,
            first_line=first_line,
            path=display_path(doc.uri),
            language=state.language,
            syntax=syntax,
            context_at_line=context_at_line,
        )

    def merge_contexts(self, uri: str, version: int, memo: dict[int, SyntaxContext]) -> None:
        """Keep what a job learned about window lines (computed on the document at ``version``), except
        for lines an edit since then reached."""
        state = self.docs.get(uri)
        if state is None or not memo:
            return
        edited = state.edited_lines
        if edited.maxlen is not None and len(edited) == edited.maxlen and edited[0][0] > version:
            return  # more edits since than are remembered: nothing is known to be still valid
        since = [line for v, line in edited if v > version]
        floor = min(since, default=len(state.doc.line_starts) + 1)
        kept = state.line_contexts
        for line, context in memo.items():
            if line < floor and line not in kept:
                if len(kept) >= MEMO_LINES:
                    kept.clear()
                kept[line] = context

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
