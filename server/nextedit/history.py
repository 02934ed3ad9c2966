"""Per-document edit history: the last edits as small before/after hunks, bounded.

Keystrokes that touch the region of the newest hunk grow it (typing a new name letter by letter is one hunk,
``foo`` -> ``foobar``), anything else starts a new one.  Each hunk is kept in the coordinates of the
document just after it, so reverse-applying the newer hunks to the current text gives back the text before
and after any hunk exactly: the structural analysis compares those two texts, never a guess.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

MAX_HUNKS = 16
"""Hunks kept per document; older ones fall off."""
MAX_HUNK_CHARS = 4000
"""A hunk larger than this (a paste, a reformat) is kept as a boundary but never analysed."""


@dataclass(frozen=True)
class Hunk:
    """``removed`` was replaced by ``inserted`` at ``start`` (a str offset in the text just after it)."""

    start: int
    removed: str
    inserted: str
    seq: int  # grows with every recorded edit of the document, so a hunk that changed gets a new value

    @property
    def end(self) -> int:
        return self.start + len(self.inserted)

    @property
    def oversized(self) -> bool:
        return len(self.removed) > MAX_HUNK_CHARS or len(self.inserted) > MAX_HUNK_CHARS

    def undo(self, text_after: str) -> str:
        """The text just before this hunk, from the text just after it."""
        return text_after[: self.start] + self.removed + text_after[self.end :]


@dataclass
class EditHistory:
    """The recent hunks of one document, newest last."""

    hunks: deque[Hunk] = field(default_factory=lambda: deque(maxlen=MAX_HUNKS))
    seq: int = 0
    changed_at: float = 0.0  # time.monotonic() of the last recorded edit

    def record(self, start: int, removed: str, inserted: str, text_after: str) -> None:
        """One applied change: ``removed`` at ``start`` became ``inserted``; ``text_after`` is the document now."""
        self.seq += 1
        self.changed_at = time.monotonic()
        if not removed and not inserted:
            return
        end = start + len(removed)  # the change's end in the text before it
        last = self.hunks[-1] if self.hunks else None
        if last is not None and not last.oversized and start <= last.end and end >= last.start:
            # Touches the newest hunk: the union of both regions, as one before/after pair.
            lo, hi = min(start, last.start), max(end, last.end)  # in the text just before this change
            delta = len(inserted) - len(removed)
            before_change = text_after[lo:start] + removed + text_after[start + len(inserted) : hi + delta]
            # Inside that region the newest hunk's text is undone to get the text before both.
            a, b = last.start - lo, last.end - lo
            merged_removed = before_change[:a] + last.removed + before_change[b:]
            merged_inserted = text_after[lo : hi + delta]
            self.hunks[-1] = Hunk(lo, merged_removed, merged_inserted, self.seq)
            if merged_removed == merged_inserted:
                self.hunks.pop()  # typed and deleted again: nothing changed
            return
        self.hunks.append(Hunk(start, removed, inserted, self.seq))

    def reset(self) -> None:
        """The whole text was replaced (full sync): older hunks no longer line up with it."""
        self.seq += 1
        self.hunks.clear()

    def versions(self, text_now: str, limit: int = MAX_HUNKS) -> list[tuple[Hunk, str, str]]:
        """(hunk, text before it, text after it) for the newest ``limit`` hunks, newest first."""
        out: list[tuple[Hunk, str, str]] = []
        after = text_now
        for hunk in reversed(self.hunks):
            if len(out) >= limit:
                break
            before = hunk.undo(after)
            out.append((hunk, before, after))
            after = before
        return out
