"""UTF-16 positions, clamping and incremental edits in server.documents."""

from server.documents import Document, Position, index_to_utf16, utf16_to_index


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
