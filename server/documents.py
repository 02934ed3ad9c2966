"""Open documents: text kept in sync by incremental edits, and UTF-16 positions mapped to string offsets.

LSP positions count UTF-16 code units; Python strings count code points; tree-sitter counts UTF-8 bytes.
Every conversion lives here, and every one clamps instead of raising: a client that sends a position past the
end of a line, or inside a surrogate pair, gets the nearest valid place.  Nothing here knows LSP types.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

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


def utf16_len(text: str) -> int:
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def utf16_to_index(line: str, character: int) -> int:
    """The str index on ``line`` at a UTF-16 column, clamped; a column inside a surrogate pair rounds down."""
    if character <= 0:
        return 0
    units = 0
    for i, ch in enumerate(line):
        step = 2 if ord(ch) > 0xFFFF else 1
        if units + step > character:
            return i
        units += step
    return len(line)


def index_to_utf16(line: str, index: int) -> int:
    return utf16_len(line[: max(0, index)])


@dataclass
class Document:
    uri: str
    text: str
    language_id: str = ""
    version: int = 0
    _line_starts: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._reindex()

    def _reindex(self) -> None:
        starts = [0]
        find = self.text.find
        pos = find("\n")
        while pos != -1:
            starts.append(pos + 1)
            pos = find("\n", pos + 1)
        self._line_starts = starts

    @property
    def line_starts(self) -> list[int]:
        """str offsets of line starts; a new list after every change, so a reference is a snapshot."""
        return self._line_starts

    @property
    def line_count(self) -> int:
        return len(self._line_starts)

    def line_text(self, line: int) -> str:
        if line < 0 or line >= len(self._line_starts):
            return ""
        start = self._line_starts[line]
        end = self._line_starts[line + 1] - 1 if line + 1 < len(self._line_starts) else len(self.text)
        return self.text[start:end]

    def offset_at(self, position: Position) -> int:
        """str offset of an LSP position, clamped into the document."""
        if position.line < 0:
            return 0
        if position.line >= len(self._line_starts):
            return len(self.text)
        line = self.line_text(position.line)
        return self._line_starts[position.line] + utf16_to_index(line, position.character)

    def position_at(self, offset: int) -> Position:
        offset = max(0, min(offset, len(self.text)))
        line = bisect.bisect_right(self._line_starts, offset) - 1
        start = self._line_starts[line]
        return Position(line, utf16_len(self.text[start:offset]))

    def point_at(self, offset: int) -> tuple[int, int]:
        """tree-sitter point (row, UTF-8 byte column) of a str offset."""
        line = bisect.bisect_right(self._line_starts, offset) - 1
        start = self._line_starts[line]
        return (line, len(self.text[start:offset].encode("utf-8", "surrogatepass")))

    def byte_offset(self, offset: int) -> int:
        return len(self.text[:offset].encode("utf-8", "surrogatepass"))

    def apply(self, start: Position | None, end: Position | None, new_text: str) -> TextEdit:
        """Apply one change; ``start``/``end`` None means the whole document is replaced."""
        if start is None or end is None:
            a, b = 0, len(self.text)
        else:
            a, b = self.offset_at(start), self.offset_at(end)
            if b < a:
                a, b = b, a
        removed = self.text[a:b]
        start_byte = self.byte_offset(a)
        start_point = self.point_at(a)
        old_end_byte = start_byte + len(removed.encode("utf-8", "surrogatepass"))
        old_end_point = self.point_at(b)
        self.text = self.text[:a] + new_text + self.text[b:]
        self._reindex()
        new_end_byte = start_byte + len(new_text.encode("utf-8", "surrogatepass"))
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
