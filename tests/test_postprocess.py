"""Stop rules, suffix overlap, bracket balance and trigger rules."""

from opportune.server.postprocess import Shape, confident_length, finish, should_trigger, stop_reached


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


def test_a_block_stopped_by_the_token_limit_is_trimmed_to_its_last_whole_statement() -> None:
    shape = block("    ")
    cut_short = "if ok {\n        total += x\n    } else {\n        return"
    assert finish(cut_short, shape, complete=False) == "if ok {\n        total += x"
    python = "for i in range(n):\n        if i % 3 == 0:\n            out.append(i)\n        if i%5"
    assert (
        finish(python, shape, complete=False)
        == "for i in range(n):\n        if i % 3 == 0:\n            out.append(i)"
    )
    # A block that ended by itself (the model's end, a dedent) is shown whole.
    assert finish("x = 1\n    y = 2", shape, complete=True) == "x = 1\n    y = 2"


def test_the_first_line_of_an_unfinished_block_stays_even_when_it_opens_one() -> None:
    assert finish("if ok {", block("    "), complete=False) == "if ok {"
    assert finish("if ok {\n        ret", block("    "), complete=False) == "if ok {"


def test_a_line_that_continues_onto_the_next_is_not_a_place_to_stop() -> None:
    shape = block("    ")
    text = "a = 1\n    b = (a +\n        2)"
    assert finish(text, shape, complete=False) == "a = 1"
    assert finish("a = 1\n    s = x and\n    y", shape, complete=False) == "a = 1"


def test_confidence_cuts_before_the_first_unsure_token_at_a_word_boundary() -> None:
    text = "return self.cache[name]"
    # Tokens start at 0 "return", 6 " self", 11 ".", 12 "cache", 17 "[", 18 "name", 22 "]".
    probs = [(0, 0.9), (6, 0.8), (11, 0.95), (12, 0.7), (14, 0.2), (17, 0.9), (18, 0.3), (22, 0.9)]
    assert confident_length(text, probs, 0, 0.5) == 12  # "ca|che" would split a name: back to "self."
    assert confident_length(text, probs, 0, 0.1) is None
    assert confident_length(text, probs, 0, 0.0) is None  # the cut is off
    assert confident_length(text, probs, 17, 0.5) == 1  # typed past the first doubt: the next one counts
    assert confident_length(text, [(0, 0.1), (6, 0.9)], 0, 0.5) == 0  # unsure from the start: nothing
