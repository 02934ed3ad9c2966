"""Stop rules, suffix overlap, bracket balance and trigger rules."""

from opportune.server.postprocess import Shape, finish, should_trigger, stop_reached


def single(prefix: str, suffix: str = "") -> Shape:
    return Shape(False, 8, prefix, suffix)


def block(prefix: str, following: str = "") -> Shape:
    return Shape(True, 8, prefix, "", following)


def test_single_line_stops_at_newline_and_keeps_first_line() -> None:
    shape = single("    x = ")
    assert not stop_reached("foo(", shape)
    assert stop_reached("foo()\n    y", shape)
    assert finish("foo()\n    y = 2", shape) == "foo()"


def test_suffix_overlap_is_trimmed() -> None:
    assert finish('"hello")', single("print(", ")")) == '"hello"'
    assert finish("a, b):", single("def f(", "):")) == "a, b"


def test_unopened_closer_cuts_the_suggestion() -> None:
    assert finish("x + 1) * 2", single("y = ")) == "x + 1"
    assert finish("x + 1) * 2", single("y = (")) == "x + 1) * 2"
    assert finish("'a)b'", single("s = ")) == "'a)b'"


def test_block_stops_at_dedent_and_blank_line() -> None:
    shape = block("    ")
    assert not stop_reached("return 1", shape)
    assert not stop_reached("x = 1\n    y = 2", shape)
    assert stop_reached("x = 1\n    y = 2\ndef g():", shape)
    assert stop_reached("x = 1\n\n", shape)
    assert finish("x = 1\n    return x\ndef g():\n", shape) == "x = 1\n    return x"


def test_block_drops_lines_already_after_the_cursor() -> None:
    shape = block("    ", following="    return total\n")
    assert finish("total = a + b\n    return total", shape) == "total = a + b"


def test_whitespace_only_is_nothing() -> None:
    assert finish("   \n  ", single("x = ")) == ""


def test_trigger_rules() -> None:
    assert should_trigger("foo", "bar") == "mid_word"
    assert should_trigger("f(", " + y)") == "mid_line"
    assert should_trigger("print(", ")") is None
    assert should_trigger("x = ", "") is None
