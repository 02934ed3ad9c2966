"""Open documents: text kept in sync by incremental edits, and UTF-16 positions mapped to string offsets.

LSP positions count UTF-16 code units; Python strings count code points; tree-sitter counts UTF-8 bytes.
Every conversion lives here, and every one clamps instead of raising: a client that sends a position past the
end of a line, or inside a surrogate pair, gets the nearest valid place.  Nothing here knows LSP types.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

# Files above this size are kept in sync but not parsed by tree-sitter; the prompt falls back to the text
# around the cursor, which is all a completion needs from a generated or minified file anyway.
MAX_PARSED_CHARS = 2_000_000


@dataclass(frozen=True)
class Position:
    """A zero-based line and UTF-16 column, as LSP sends them."""

    line: int
    character: int


@dataclass(frozen=True)
class TextEdit:
    """One applied change, in every unit a consumer needs (str offsets, UTF-8 bytes, tree-sitter points)."""

    start: int  # str offset
    old_end: int
    inserted: str
    removed: str
    start_byte: int
    old_end_byte: int
    new_end_byte: int
    start_point: tuple[int, int]  # (row, byte column)
    old_end_point: tuple[int, int]
    new_end_point: tuple[int, int]

    @property
    def new_end(self) -> int:
        return self.start + len(self.inserted)


# Characters outside the BMP: two UTF-16 units for one str character.  Everything below runs at C speed
# (str.isascii is a flag lookup, the rest are regex scans and codecs): a 2 MB minified line must not cost a
# Python loop per character on every keystroke.
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


def utf16_len(text: str) -> int:
    if text.isascii():
        return len(text)
    return len(text) + len(_ASTRAL.findall(text))


def utf16_to_index(line: str, character: int) -> int:
    """The str index on ``line`` at a UTF-16 column, clamped; a column inside a surrogate pair rounds down."""
    if character <= 0:
        return 0
    if line.isascii():
        return min(character, len(line))
    shift = 0  # astral characters before the one looked at: str index = UTF-16 column - shift
    for m in _ASTRAL.finditer(line):
        at = m.start()
        if character < at + shift + 2:  # at or before this character's end (inside it rounds down)
            return min(character - shift, at)
        shift += 1
    return min(character - shift, len(line))


def utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def index_to_utf16(line: str, index: int) -> int:
    return utf16_len(line[: max(0, index)])


@dataclass
class Document:
    uri: str
    text: str
    language_id: str = ""
    version: int = 0
    _line_starts: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64), repr=False)

    def __post_init__(self) -> None:
        self._line_starts = _line_starts(self.text, 0)

    @property
    def line_starts(self) -> np.ndarray:
        """str offsets of line starts; a new array after every change (never written in place), so a
        reference is a snapshot."""
        return self._line_starts

    def line_start(self, line: int) -> int:
        """str offset where ``line`` starts, clamped to the last line."""
        return int(self._line_starts[max(0, min(line, len(self._line_starts) - 1))])

    def line_of(self, offset: int) -> int:
        return int(np.searchsorted(self._line_starts, offset, side="right")) - 1

    @property
    def line_count(self) -> int:
        return len(self._line_starts)

    def line_text(self, line: int) -> str:
        if line < 0 or line >= len(self._line_starts):
            return ""
        start = int(self._line_starts[line])
        end = int(self._line_starts[line + 1]) - 1 if line + 1 < len(self._line_starts) else len(self.text)
        return self.text[start:end]

    def line_around(self, offset: int, limit: int) -> tuple[str, str]:
        """The text of ``offset``'s line before and after it, at most ``limit`` characters each way: a
        minified line can be megabytes, and what decides a completion is near the cursor."""
        start = max(self.line_start(self.line_of(offset)), offset - limit)
        end = self.text.find("\n", offset, offset + limit)
        return self.text[start:offset], self.text[offset : end if end != -1 else offset + limit]

    def offset_at(self, position: Position) -> int:
        """str offset of an LSP position, clamped into the document."""
        if position.line < 0:
            return 0
        if position.line >= len(self._line_starts):
            return len(self.text)
        line = self.line_text(position.line)
        return int(self._line_starts[position.line]) + utf16_to_index(line, position.character)

    def position_at(self, offset: int) -> Position:
        offset = max(0, min(offset, len(self.text)))
        line = self.line_of(offset)
        return Position(line, utf16_len(self.text[self.line_start(line) : offset]))

    def point_at(self, offset: int) -> tuple[int, int]:
        """tree-sitter point (row, UTF-8 byte column) of a str offset."""
        line = self.line_of(offset)
        return (line, utf8_len(self.text[self.line_start(line) : offset]))

    def byte_offset(self, offset: int) -> int:
        # O(1) for ASCII text; otherwise O(offset), which only parsed (size-limited) documents ask for.
        return offset if self.text.isascii() else utf8_len(self.text[:offset])

    def apply(self, start: Position | None, end: Position | None, new_text: str) -> TextEdit:
        """Apply one change; ``start``/``end`` None means the whole document is replaced.

        Costs the length of the edited lines plus one copy of the text: the line index is shifted, not
        rebuilt, so a keystroke in a 20 MB file costs about what it costs in a small one."""
        if start is None or end is None:
            a, b = 0, len(self.text)
        else:
            a, b = self.offset_at(start), self.offset_at(end)
            if b < a:
                a, b = b, a
        removed = self.text[a:b]
        start_byte = self.byte_offset(a)
        start_point = self.point_at(a)
        old_end_byte = start_byte + utf8_len(removed)
        old_end_point = self.point_at(b)
        self.text = "".join((self.text[:a], new_text, self.text[b:]))
        starts = self._line_starts
        # Starts up to ``a`` stay; those inside the removed text go; those after it shift by the change.
        keep = int(np.searchsorted(starts, a, side="right"))
        after = int(np.searchsorted(starts, b, side="right"))
        self._line_starts = np.concatenate(
            (
                starts[:keep],
                _line_starts(new_text, a, first=False),
                starts[after:] + (len(new_text) - (b - a)),
            )
        )
        new_end_byte = start_byte + utf8_len(new_text)
        return TextEdit(
            start=a,
            old_end=b,
            inserted=new_text,
            removed=removed,
            start_byte=start_byte,
            old_end_byte=old_end_byte,
            new_end_byte=new_end_byte,
            start_point=start_point,
            old_end_point=old_end_point,
            new_end_point=self.point_at(a + len(new_text)),
        )


def _line_starts(text: str, base: int, first: bool = True) -> np.ndarray:
    """Offsets (plus ``base``) just after each newline in ``text``, preceded by ``base`` if ``first``."""
    starts = [base] if first else []
    find = text.find
    pos = find("\n")
    while pos != -1:
        starts.append(base + pos + 1)
        pos = find("\n", pos + 1)
    return np.array(starts, dtype=np.int64)
