"""Persistence of accepted suggestions: how much of the accepted text is still there, checkpoint by checkpoint.

An accepted suggestion is followed as a region of its document (str offsets).  Each later edit moves the
region: an edit before it shifts it, an edit inside it or across one of its ends stretches it to cover
what replaced it, an edit after it leaves it alone; typing at either edge stays outside (code written next
to a suggestion is not the suggestion).  An edit is first trimmed to the part that really changed (the
common prefix and suffix of the removed and inserted text), so a formatter or a client that resends a
whole line or the whole document moves the region no more than the change it made.

At each checkpoint (``telemetry.persistence_checkpoints_s``: 30 s, 2 min and 10 min by default) the
region's text is compared with the accepted text by rapidfuzz: whitespace removed on both sides (so
reformatting keeps the score), the best-aligned stretch of the region found, and only runs of at least
``MIN_RUN`` equal characters counted (so unrelated code that shares a few letters scores near 0).  The
fraction of accepted characters found goes into a ``persistence`` row; the text itself only with
``store_text``.

Rows: ``tracking`` when tracking starts (the planned checkpoints), then ``measured`` or ``unknown`` per
checkpoint.  Unknown: the document closed, the server shut down, or the suggestion was evicted (more than
``max_tracked`` followed at once).  A SIGKILL writes nothing more; the analysis treats a planned checkpoint
whose time passed without a row as unknown (``opportune.telemetry.persistence``).

Cost: an edit costs a comparison of offsets per suggestion followed in that document (a handful), a
checkpoint one rapidfuzz alignment over a window a few times the suggestion's length.  Memory: at most
``max_tracked`` suggestions, each its accepted text, offsets and up to ``CONTEXT_CHARS`` of code around it
when ``store_text`` is on.  The tracker itself knows no clock: ``measure(now, text_of)`` records what is
due (tests drive it with a virtual clock); ``PersistenceTimer`` runs it on the asyncio loop, one timer
moved to the next checkpoint due.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rapidfuzz import fuzz
from rapidfuzz.distance import Indel

from opportune.server.documents import TextEdit
from opportune.telemetry import events as ev

log = logging.getLogger(__name__)

MIN_RUN = 3  # shortest run of equal characters that counts as kept (shorter texts: their whole length)
CONTEXT_CHARS = 2000  # code before (and a quarter of it after) kept for the dataset, only with store_text
_SPACE = re.compile(r"\s+")


def _squeeze(text: str) -> str:
    return _SPACE.sub("", text)


def kept_fraction(accepted: str, window: str) -> float:
    """The share of ``accepted`` (whitespace aside) found in ``window``, in runs of ``MIN_RUN`` or more."""
    a = _squeeze(accepted)
    if not a:
        return 1.0 if not window.strip() or accepted in window else 0.0
    w = _squeeze(window)
    if not w:
        return 0.0
    if len(w) > len(a):
        # The best-aligned stretch of the window, widened a little: text inserted inside the suggestion
        # makes the kept characters span more than its length.
        at = fuzz.partial_ratio_alignment(a, w)
        if at is not None:  # None only under a score cutoff, which is not given
            slack = len(a) // 2 + MIN_RUN
            w = w[max(0, at.dest_start - slack) : at.dest_end + slack]
    run = min(MIN_RUN, len(a))
    blocks = Indel.opcodes(a, w).as_matching_blocks()
    return sum(b.size for b in blocks if b.size >= run) / len(a)


def _common_prefix(a: str, b: str) -> int:
    """Length of the common prefix, by halving with C-speed slice comparisons (documents can be MBs)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _trimmed(edit: TextEdit) -> tuple[int, int, int]:
    """(start, old end, new length) of the part of ``edit`` that changed anything."""
    removed, inserted = edit.removed, edit.inserted
    p = _common_prefix(removed, inserted)
    q = _common_prefix(removed[p:][::-1], inserted[p:][::-1]) if len(removed) > p and len(inserted) > p else 0
    return edit.start + p, edit.old_end - q, len(inserted) - p - q


@dataclass
class Tracked:
    """One accepted suggestion being followed."""

    completion_id: str
    uri: str
    start: int
    end: int
    text: str
    common: ev.Common
    accepted_at: float
    pending: list[float]  # checkpoints (s after the accept) not yet recorded, ascending
    awaiting: bool = False  # accepted before its text reached the document: the next insertion there is it

    def shift(self, edit: TextEdit, trimmed: tuple[int, int, int]) -> None:
        """Follow ``edit`` (``trimmed``: its changed part, as ``_trimmed`` gives it)."""
        start, old_end, new_len = trimmed
        delta = new_len - (old_end - start)
        if self.awaiting:
            # Its text arrives now (the client reported the accept before sending the insertion).
            if (
                edit.start == self.start
                and edit.inserted
                and self.text.startswith(edit.inserted[: len(self.text)])
            ):
                self.end = self.start + min(len(self.text), len(edit.inserted))
                self.awaiting = False
            elif old_end <= self.start:
                self.start += delta
                self.end += delta
            return
        if old_end <= self.start:
            # Before the region, or an insertion at its start edge: shift it.
            self.start += delta
            self.end += delta
        elif start >= self.end:
            return  # after it, or typing at its end edge
        else:
            # Overlaps the region: it now spans whatever replaced its overlapped part.
            new_start = min(self.start, start)
            self.start, self.end = new_start, max(new_start, self.end + delta, start + new_len)


@dataclass
class PersistenceTracker:
    """Follows accepted suggestions and records ``persistence`` rows (see the module docstring)."""

    checkpoints: Sequence[float] | Callable[[], Sequence[float]]  # a callable follows settings changes
    emit: Callable[[ev.Event], None]
    max_tracked: int = 256
    store_text: bool = False
    _tracked: OrderedDict[str, Tracked] = field(default_factory=OrderedDict)  # oldest first
    _by_uri: dict[str, dict[str, Tracked]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._tracked)

    # ---- events from the engine -----------------------------------------------------------------

    def accepted(
        self,
        completion_id: str,
        uri: str,
        start: int,
        text: str,
        document: str,
        common: ev.Common,
        now: float,
    ) -> None:
        """``text`` was accepted at ``start`` of the document (``document``: its text now).  Again for the
        same completion (a partial accept, then more): the region grows to the text accepted so far and
        the checkpoints count from now."""
        checkpoints = sorted(self.checkpoints() if callable(self.checkpoints) else self.checkpoints)
        if not checkpoints or not text:
            return
        tracked = self._tracked.get(completion_id)
        if tracked is not None:
            tracked.text = text
            tracked.end = max(tracked.end, tracked.start + len(text)) if not tracked.awaiting else tracked.end
            tracked.accepted_at = now
            tracked.pending = checkpoints
            self._tracked.move_to_end(completion_id)
            return
        present = document.startswith(text, start)
        tracked = Tracked(
            completion_id,
            uri,
            start,
            start + len(text) if present else start,
            text,
            common,
            now,
            checkpoints,
            awaiting=not present,
        )
        self._tracked[completion_id] = tracked
        self._by_uri.setdefault(uri, {})[completion_id] = tracked
        prefix = suffix = None
        if self.store_text:
            prefix = document[max(0, start - CONTEXT_CHARS) : start]
            after = start + len(text) if present else start
            suffix = document[after : after + CONTEXT_CHARS // 4]
        self.emit(
            ev.Persistence(
                common,
                completion_id,
                "tracking",
                checkpoints=",".join(f"{c:g}" for c in tracked.pending),
                accepted_chars=len(text),
                prefix_text=prefix,
                suffix_text=suffix,
            )
        )
        while len(self._tracked) > self.max_tracked:
            oldest = next(iter(self._tracked.values()))
            self._unknown(oldest, "evicted")

    def edited(self, uri: str, edits: Sequence[TextEdit]) -> None:
        """The document ``uri`` changed by ``edits`` (in order, as applied)."""
        followed = self._by_uri.get(uri)
        if not followed:
            return
        for edit in edits:
            trimmed = _trimmed(edit)
            if trimmed[0] == trimmed[1] and trimmed[2] == 0:
                continue  # changed nothing
            for tracked in followed.values():
                tracked.shift(edit, trimmed)

    def closed(self, uri: str) -> None:
        """The document closed: its suggestions' remaining checkpoints are unknown."""
        for tracked in list(self._by_uri.get(uri, {}).values()):
            self._unknown(tracked, "closed")

    def stop(self) -> None:
        """The server stops: every remaining checkpoint is unknown."""
        for tracked in list(self._tracked.values()):
            self._unknown(tracked, "shutdown")

    # ---- checkpoints ----------------------------------------------------------------------------

    def next_due(self) -> float | None:
        """The clock time of the earliest checkpoint still to record, if any."""
        return min((t.accepted_at + t.pending[0] for t in self._tracked.values()), default=None)

    def measure(self, now: float, text_of: Callable[[str], str | None]) -> int:
        """Record every checkpoint due by ``now``; ``text_of(uri)`` is the document's text (None: closed).
        Returns the number of rows recorded."""
        rows = 0
        for tracked in list(self._tracked.values()):
            while tracked.pending and tracked.accepted_at + tracked.pending[0] <= now:
                checkpoint = tracked.pending.pop(0)
                text = text_of(tracked.uri)
                if text is None:
                    tracked.pending.insert(0, checkpoint)
                    self._unknown(tracked, "closed")
                    rows += 1
                    break
                window = "" if tracked.awaiting else text[tracked.start : tracked.end]
                if len(window) > 8 * len(tracked.text) + 1024:
                    window = window[: 8 * len(tracked.text) + 1024]
                fraction = kept_fraction(tracked.text, window)
                self.emit(
                    ev.Persistence(
                        tracked.common,
                        tracked.completion_id,
                        "measured",
                        checkpoint_s=checkpoint,
                        accepted_chars=len(tracked.text),
                        kept_chars=round(fraction * len(tracked.text)),
                        fraction=fraction,
                        kept_text=window if self.store_text else None,
                    )
                )
                rows += 1
            if not tracked.pending:
                self._forget(tracked)
        return rows

    # ---- internals ------------------------------------------------------------------------------

    def _unknown(self, tracked: Tracked, reason: str) -> None:
        for checkpoint in tracked.pending:
            self.emit(
                ev.Persistence(
                    tracked.common,
                    tracked.completion_id,
                    "unknown",
                    checkpoint_s=checkpoint,
                    accepted_chars=len(tracked.text),
                    reason=reason,
                )
            )
        tracked.pending = []
        self._forget(tracked)

    def _forget(self, tracked: Tracked) -> None:
        self._tracked.pop(tracked.completion_id, None)
        followed = self._by_uri.get(tracked.uri)
        if followed is not None:
            followed.pop(tracked.completion_id, None)
            if not followed:
                del self._by_uri[tracked.uri]


class PersistenceTimer:
    """Runs a tracker's checkpoints on the running asyncio loop: one timer, moved earlier when needed.

    ``text_of(uri)`` is a document's text now (None when it is not open).  Without a running loop (a
    synchronous caller) nothing is scheduled; ``stop`` still records what is due, then the rest as unknown.
    """

    def __init__(self, tracker: PersistenceTracker, text_of: Callable[[str], str | None]) -> None:
        self.tracker = tracker
        self._text_of = text_of
        self._timer: asyncio.TimerHandle | None = None

    def poke(self) -> None:
        """Make sure the timer fires at the next checkpoint due (after an accept)."""
        due = self.tracker.next_due()
        if due is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        delay = max(0.0, due - time.monotonic())
        if self._timer is not None:
            if self._timer.when() <= loop.time() + delay:
                return  # already due earlier (loop.time() is time.monotonic())
            self._timer.cancel()
        self._timer = loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        try:
            self.tracker.measure(time.monotonic(), self._text_of)
        except Exception:  # telemetry never breaks completions
            log.exception("measuring persistence failed")
        self.poke()

    def stop(self) -> None:
        """The server stops: record what is due now, the rest as unknown."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.tracker.measure(time.monotonic(), self._text_of)
        self.tracker.stop()
