"""UTF-16 positions, clamping and incremental edits in server.documents."""

from hypothesis import given
from hypothesis import strategies as st

from opportune.server.documents import Document, Position, index_to_utf16, utf16_len, utf16_to_index


def test_utf16_columns_count_surrogate_pairs() -> None:
    line = "a😀b"
    assert utf16_to_index(line, 0) == 0
    assert utf16_to_index(line, 1) == 1
    assert utf16_to_index(line, 2) == 1  # inside the pair: rounds down to the emoji's start
    assert utf16_to_index(line, 3) == 2
    assert utf16_to_index(line, 4) == 3
    assert index_to_utf16(line, 2) == 3


def test_positions_past_the_end_are_clamped() -> None:
    doc = Document("file:///a.py", "ab\ncd")
    assert doc.offset_at(Position(0, 99)) == 2
    assert doc.offset_at(Position(99, 0)) == len(doc.text)
    assert doc.offset_at(Position(-1, 0)) == 0
    assert doc.position_at(999) == Position(1, 2)


def test_incremental_edits_and_tree_sitter_units() -> None:
    doc = Document("file:///a.py", "x = 'é'\ny = 1\n")
    edit = doc.apply(Position(1, 4), Position(1, 5), "22")
    assert doc.text == "x = 'é'\ny = 22\n"
    assert edit.removed == "1" and edit.inserted == "22"
    # 'é' is one UTF-16 unit, one str char and two UTF-8 bytes.
    assert edit.start_byte == len("x = 'é'\ny = ".encode())
    assert edit.start_point == (1, 4)
    assert edit.new_end_point == (1, 6)
    doc.apply(Position(0, 5), Position(0, 6), "😀")
    assert doc.line_text(0) == "x = '😀'"
    assert doc.position_at(doc.text.index("'", 5)) == Position(0, 7)


def test_whole_document_replacement() -> None:
    doc = Document("file:///a.py", "old")
    doc.apply(None, None, "new\ntext")
    assert doc.text == "new\ntext" and doc.line_count == 2


# A reference written the slow, obvious way: the fast paths (ASCII, astral scan, shifted line index) must
# agree with it on any text, including lone surrogates, astral characters and CRs.
def _naive_utf16_to_index(line: str, character: int) -> int:
    units = 0
    for i, ch in enumerate(line):
        step = 2 if ord(ch) > 0xFFFF else 1
        if units + step > character:
            return i
        units += step
    return len(line)


def _naive_line_starts(text: str) -> list[int]:
    return [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]


_chars = st.sampled_from(["a", "b", " ", "\n", "\r", "é", "😀", "\ud800", "中", "\t"])
_texts = st.lists(_chars, max_size=40).map("".join)


@given(_texts, st.integers(-2, 60))
def test_utf16_columns_agree_with_the_obvious_count(line: str, character: int) -> None:
    line = line.replace("\n", "")
    expected = 0 if character <= 0 else _naive_utf16_to_index(line, character)
    assert utf16_to_index(line, character) == expected
    assert utf16_len(line) == sum(2 if ord(ch) > 0xFFFF else 1 for ch in line)


@given(
    _texts,
    st.lists(
        st.tuples(st.integers(-1, 12), st.integers(-1, 45), st.integers(-1, 12), st.integers(-1, 45), _texts),
        max_size=12,
    ),
)
def test_a_series_of_edits_keeps_the_line_index_true(text: str, edits: list) -> None:
    doc = Document("file:///a.py", text)
    for l1, c1, l2, c2, new in edits:
        doc.apply(Position(l1, c1), Position(l2, c2), new)
        assert list(doc.line_starts) == _naive_line_starts(doc.text)
        fresh = Document("file:///b.py", doc.text)
        for line in range(-1, doc.line_count + 1):
            for character in (0, 1, 3, 99):
                assert doc.offset_at(Position(line, character)) == fresh.offset_at(Position(line, character))
        for offset in range(0, len(doc.text) + 1, 3):
            assert doc.position_at(offset) == fresh.position_at(offset)
            assert doc.byte_offset(offset) == len(doc.text[:offset].encode("utf-8", "surrogatepass"))


def test_tree_sitter_units_of_an_edit_after_non_ascii_text() -> None:
    doc = Document("file:///a.py", "é😀\nab\n")
    edit = doc.apply(Position(1, 1), Position(1, 2), "中")
    assert edit.start_byte == len("é😀\na".encode())
    assert edit.old_end_byte == edit.start_byte + 1
    assert edit.new_end_byte == edit.start_byte + 3
    assert edit.start_point == (1, 1) and edit.new_end_point == (1, 4)
