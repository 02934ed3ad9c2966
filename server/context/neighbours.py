"""Context from the editor's other files: recently edited regions and snippets similar to the cursor's code.

- :class:`EditRing` keeps the lines around the last edited places, as llama.vim keeps its ring of chunks: a
  region enters the ring when the user *leaves* it (edits somewhere else), with its text as it was then, so
  the ring changes when the user moves, never while they type in one place.  Bounded in regions and lines.
- :func:`similar_snippets` is the neighbouring-tabs method: the identifier set of the code before the cursor
  compared (Jaccard) with sliding windows of other open and recent files; the best windows win.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Words every file of a language has: they make unrelated windows look alike.
_STOP = (
    "self this def return if else elif for while in is not and or None True False import from as class"
    " const let var function new null true false int void public private static final package func type"
    " struct fn pub use mod impl let mut match string String bool char include define try catch except"
    " pass break continue with async await yield lambda"
)
STOP_WORDS = frozenset(_STOP.split())
MAX_WINDOWS_PER_FILE = 2000
SCAN_CHUNK = 16_384  # characters scanned between two pauses (see identifiers)
YIELD_WINDOWS = 64


def identifiers(text: str) -> frozenset[str]:
    """The identifiers of ``text``.  A long text is scanned in pieces with a pause between them: this runs
    on the project thread, and one long regex scan would hold the interpreter lock the event loop needs."""
    if len(text) <= SCAN_CHUNK:
        return frozenset(w for w in IDENTIFIER.findall(text) if len(w) > 1 and w not in STOP_WORDS)
    found: set[str] = set()
    start = 0
    while start < len(text):
        end = text.find("\n", start + SCAN_CHUNK)
        end = len(text) if end == -1 else end
        found.update(w for w in IDENTIFIER.findall(text, start, end) if len(w) > 1 and w not in STOP_WORDS)
        start = end
        time.sleep(0)
    return frozenset(found)


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


@dataclass(frozen=True)
class Region:
    uri: str
    first_line: int
    text: str


class EditRing:
    """The last ``size`` regions the user edited and then left, newest last."""

    def __init__(self, size: int = 8, radius: int = 6, max_line_chars: int = 200) -> None:
        self._regions: deque[Region] = deque(maxlen=size)
        self._radius = radius
        self._max_line_chars = max_line_chars
        self._current: tuple[str, int] | None = None  # (uri, line) of the region being edited now
        self._current_lines: Callable[[int, int], list[str]] | None = None
        self._lock = threading.Lock()
        self.generation = 0  # bumped whenever the ring's content changes

    def note(self, uri: str, line: int, lines: Callable[[int, int], list[str]]) -> None:
        """An edit at ``line`` of ``uri``; ``lines(first, last)`` reads the document's current lines.

        Costs a comparison per keystroke; reads lines only when the user moved to another region."""
        current = self._current
        if current is not None and current[0] == uri and abs(current[1] - line) <= self._radius:
            return
        if current is not None and self._current_lines is not None:
            self._push(current[0], current[1], self._current_lines)
        self._current = (uri, line)
        self._current_lines = lines

    def forget(self, uri: str) -> None:
        """The document closed: its live reader goes (what entered the ring stays)."""
        if self._current is not None and self._current[0] == uri and self._current_lines is not None:
            self._push(self._current[0], self._current[1], self._current_lines)
            self._current = None
            self._current_lines = None

    def _push(self, uri: str, line: int, lines: Callable[[int, int], list[str]]) -> None:
        first = max(0, line - self._radius)
        try:
            text = "\n".join(s[: self._max_line_chars] for s in lines(first, line + self._radius)).strip("\n")
        except Exception:
            return
        if not text.strip():
            return
        with self._lock:
            # A region overlapping one already in the ring replaces it.
            kept = [
                r for r in self._regions if not (r.uri == uri and abs(r.first_line - first) <= self._radius)
            ]
            self._regions.clear()
            self._regions.extend(kept)
            self._regions.append(Region(uri, first, text))
            self.generation += 1

    def regions(self) -> list[Region]:
        with self._lock:
            return list(self._regions)


@dataclass(frozen=True)
class Snippet:
    uri: str
    first_line: int
    text: str
    score: float


def windows(text: str, size: int, stride: int) -> Iterable[tuple[int, str]]:
    lines = text.split("\n")
    last = max(1, len(lines) - size + 1)
    for count, start in enumerate(range(0, last, stride)):
        if count >= MAX_WINDOWS_PER_FILE:
            return
        yield start, "\n".join(lines[start : start + size])


def similar_snippets(
    query: str,
    files: Sequence[tuple[str, str]],
    *,
    size: int = 16,
    stride: int = 8,
    top: int = 3,
    min_score: float = 0.1,
) -> list[Snippet]:
    """The ``top`` windows of ``files`` ((uri, text) pairs) most similar to ``query``, best first, at most
    one per file region (overlapping windows of one file are not both taken)."""
    wanted = identifiers(query)
    if not wanted:
        return []
    scored: list[Snippet] = []
    for uri, text in files:
        for count, (start, window) in enumerate(windows(text, size, stride)):
            if count % YIELD_WINDOWS == YIELD_WINDOWS - 1:
                time.sleep(0)  # the event loop's turn (see identifiers)
            score = jaccard(wanted, identifiers(window))
            if score >= min_score:
                scored.append(Snippet(uri, start, window, score))
    scored.sort(key=lambda s: (-s.score, s.uri, s.first_line))
    chosen: list[Snippet] = []
    for snippet in scored:
        if any(c.uri == snippet.uri and abs(c.first_line - snippet.first_line) < size for c in chosen):
            continue
        chosen.append(snippet)
        if len(chosen) >= top:
            break
    return chosen
