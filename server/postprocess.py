"""Turning raw model text into a suggestion: stop rules, confidence, suffix overlap, bracket balance,
whole lines.

``stop_reached`` is checked after every token while streaming, so generation ends at the first sufficient
stop; ``confident_length`` says where the model's confidence fell; ``finish`` shapes the text that is
actually shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

OPENERS = {"(": ")", "[": "]", "{": "}"}
CLOSERS = {")": "(", "]": "[", "}": "{"}
# What may stand after the cursor on the line for a mid-line completion to still make sense.
CLOSING_TAIL = set(")]}\"'`;:, \t")


@dataclass(frozen=True)
class Shape:
    """How a suggestion may look at this cursor."""

    multiline: bool
    max_lines: int
    line_prefix: str  # text of the cursor line before the cursor
    line_suffix: str  # text of the cursor line after the cursor
    following: str = ""  # the lines after the cursor line (for overlap with multi-line answers)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def stop_reached(text: str, shape: Shape) -> bool:
    """True once ``text`` holds everything this suggestion can use."""
    if not shape.multiline:
        # The first line is complete once a newline follows some content (or the model chose a new line).
        return "\n" in text
    lines = text.split("\n")
    complete = lines[:-1]  # the last line may still grow
    if len(complete) >= shape.max_lines + 1:
        return True
    block_indent = _block_indent(shape, lines)
    for i, line in enumerate(complete):
        if i == 0:
            continue
        if not line.strip():
            return True  # a blank line ends a block suggestion
        if block_indent is not None and _indent(line) < block_indent:
            return True  # dedent: the block is over
    last = lines[-1]
    # A dedent shows as soon as the new line's first visible character arrives.
    return len(lines) > 1 and bool(last.strip()) and block_indent is not None and _indent(last) < block_indent


def _block_indent(shape: Shape, lines: list[str]) -> int | None:
    """Indentation of the block being written: the cursor line's if it is blank, else the first new line's."""
    if not shape.line_prefix.strip():
        return len(shape.line_prefix)
    for line in lines[1:]:
        if line.strip():
            return _indent(line)
    return None


def confident_length(
    text: str, confidence: Sequence[tuple[int, float]], start: int, threshold: float
) -> int | None:
    """Where to cut ``text[start:]`` because the model was unsure: the offset (from ``start``) of the first
    token at or after ``start`` whose probability is below ``threshold``, moved back to the start of a word
    it would split; None when every token so far is above it (or the cut is off: ``threshold`` 0).

    ``confidence`` holds (offset in ``text`` where a token starts, its probability), in order.
    """
    if threshold <= 0:
        return None
    for at, probability in confidence:
        if at < start or probability >= threshold:
            continue
        cut = at
        # A token in the middle of a name: showing half the name helps nobody.
        while cut > start and _is_word(text[cut - 1]) and cut < len(text) and _is_word(text[cut]):
            cut -= 1
        return cut - start
    return None


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


# A line ending so is not the end of a statement: the next line was going to continue it.
_CONTINUED = (*"{([,\\:", " =", " +", " -", " *", " /", "&&", "||", " and", " or", "->", "=>")


def finish(text: str, shape: Shape, complete: bool = True) -> str:
    """The suggestion to show, or "" when nothing useful remains.

    ``complete`` False: ``text`` stopped for a reason other than its end (the token limit, a deadline, the
    confidence cut), so a multi-line answer's last line may be half a statement; it is trimmed back to the
    last whole line that ends a statement, and the rest comes from the typeahead cache as the user types.
    """
    text = text.replace("\r\n", "\n").replace("\r", "")
    text = _cut_block(text, shape) if shape.multiline else text.split("\n", 1)[0]
    if shape.multiline and not complete:
        text = _whole_lines(text)
    text = _trim_suffix_overlap(text, shape)
    text = _balance_closers(text, shape)
    text = text.rstrip()
    if not text.strip():
        return ""
    if not shape.line_prefix.strip() and not shape.multiline and text.strip() == shape.line_prefix.strip():
        return ""
    return text


def _whole_lines(text: str) -> str:
    """Drop the unfinished last line, then trailing lines that open a block or continue onto the next line
    (``} else {``, ``if x:``, ``a = b +``); the first line always stays (it is what the user is typing)."""
    lines = text.split("\n")
    if len(lines) > 1:
        lines.pop()
    while len(lines) > 1 and (not lines[-1].strip() or lines[-1].rstrip().endswith(_CONTINUED)):
        lines.pop()
    return "\n".join(lines)


def _cut_block(text: str, shape: Shape) -> str:
    lines = text.split("\n")
    kept = [lines[0]]
    block_indent = _block_indent(shape, lines)
    for line in lines[1:]:
        if not line.strip():
            break
        if block_indent is not None and _indent(line) < block_indent:
            break
        kept.append(line)
        if len(kept) >= shape.max_lines:
            break
    # Lines that repeat the code right after the cursor are already there.
    following = [ln for ln in shape.following.split("\n") if ln.strip()][:3]
    if following:
        for i, line in enumerate(kept):
            if i > 0 and line.strip() and line.strip() == following[0].strip():
                kept = kept[:i]
                break
    return "\n".join(kept)


def _trim_suffix_overlap(text: str, shape: Shape) -> str:
    """Drop the end of the suggestion that the text after the cursor already has (closing brackets, quotes)."""
    tail = shape.line_suffix.strip()
    if not tail:
        return text
    first_line, newline, _ = text.partition("\n")
    if newline:
        return text
    stripped = first_line.rstrip()
    for n in range(min(len(tail), len(stripped)), 0, -1):
        if stripped.endswith(tail[:n]):
            return stripped[: len(stripped) - n]
    return first_line


def _balance_closers(text: str, shape: Shape) -> str:
    """Cut a single-line suggestion at a closer that nothing before it on the line opened."""
    if shape.multiline or "\n" in text:
        return text
    stack: list[str] = []
    for ch in shape.line_prefix:
        if ch in OPENERS:
            stack.append(ch)
        elif ch in CLOSERS and stack and stack[-1] == CLOSERS[ch]:
            stack.pop()
    # Closers already waiting after the cursor will close what the prefix opened.
    pending = [c for c in shape.line_suffix if c in CLOSERS]
    for c in pending:
        if stack and stack[-1] == CLOSERS[c]:
            stack.pop()
    in_string: str | None = None
    for i, ch in enumerate(text):
        if in_string:
            if ch == in_string and (i == 0 or text[i - 1] != "\\"):
                in_string = None
            continue
        if ch in "\"'`":
            in_string = ch
        elif ch in OPENERS:
            stack.append(ch)
        elif ch in CLOSERS:
            if stack and stack[-1] == CLOSERS[ch]:
                stack.pop()
            else:
                return text[:i]
    return text


def should_trigger(line_prefix: str, line_suffix: str) -> str | None:
    """The name of the rule that skips this position, or None to attempt a suggestion."""
    if line_suffix and (line_suffix[0].isalnum() or line_suffix[0] == "_"):
        return "mid_word"
    if any(ch not in CLOSING_TAIL for ch in line_suffix):
        return "mid_line"
    return None
