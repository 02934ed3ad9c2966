"""Completion tasks cut from real code with tree-sitter, the true continuation held out.

A task is a cursor position in a corpus file and the text that really followed it there (``truth``).  The
engine is shown ``document``: the file with that text taken out, so the prompt sees the file as it was up to
the cursor (and what comes after the held-out part, which a FIM model may use); nothing of the truth.

Kinds, each a place where people ask for completions:

- ``rest_of_line``: from a token inside a line to its end;
- ``next_line``: a whole line, the cursor after its indentation;
- ``block_body``: the statements of a function, loop or branch body (up to ``MAX_BLOCK_LINES`` lines),
  the cursor where the first statement starts;
- ``argument_list``: what stands between the brackets of a one-line call;
- ``expression_span``: from a token inside a one-line expression to the expression's end.

Sampling is deterministic for a seed: files and candidates are enumerated in a fixed order and drawn with
``random.Random(seed)``; kinds take turns so each gets its share.  Typing spans for the simulator
(``sample_spans``) are whole lines of function bodies, drawn the same way.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args

import tree_sitter

from opportune.server.context.syntax import SyntaxTree
from opportune.server.eval.corpus import SourceFile

# real_use: a suggestion accepted in real use, the code kept after it the truth (server.eval.real_use); never
# sampled from a corpus.
# cross_file: the truth uses a name defined in another file of the project (server.eval.crossfile), sampled
# with the file's project.
TaskKind = Literal[
    "rest_of_line", "next_line", "block_body", "argument_list", "expression_span", "real_use", "cross_file"
]
# Sampled from one file's code.
KINDS: tuple[TaskKind, ...] = tuple(k for k in get_args(TaskKind) if k not in ("real_use", "cross_file"))
ALL_KINDS: tuple[TaskKind, ...] = get_args(TaskKind)

MAX_BLOCK_LINES = 8  # the engine's default completion.max_lines: a longer body cannot be matched whole
MAX_TRUTH_CHARS = 600
MAX_LINE_TRUTH_CHARS = 160
MIN_TRUTH_CHARS = 2
# Node types whose inside is a statement list, an argument list, or an expression, across the grammars.
BLOCK_TYPES = frozenset({"block", "statement_block", "compound_statement"})
ARGUMENT_TYPES = frozenset({"argument_list", "arguments"})
EXPRESSION_TYPES = frozenset(
    {
        "binary_operator",
        "boolean_operator",
        "comparison_operator",
        "call",
        "attribute",
        "subscript",
        "conditional_expression",
        "not_operator",
        "unary_operator",
    }
)
COMMENT_TYPES = frozenset({"comment", "line_comment", "block_comment"})


@dataclass(frozen=True)
class Task:
    task_id: str
    kind: TaskKind
    file: SourceFile = field(repr=False, compare=False)
    cursor: int  # str offset in the file
    end: int  # the held-out text is file.text[cursor:end]
    # What an editor would have open when asking (cross-file tasks): the imported files, kept open, and
    # files viewed shortly before, opened and closed again.
    open_files: tuple[SourceFile, ...] = field(default=(), repr=False, compare=False)
    recent_files: tuple[SourceFile, ...] = field(default=(), repr=False, compare=False)

    @property
    def truth(self) -> str:
        return self.file.text[self.cursor : self.end]

    @property
    def document(self) -> str:
        """The file as the engine sees it: the held-out text taken out."""
        return self.file.text[: self.cursor] + self.file.text[self.end :]

    @property
    def language(self) -> str:
        return self.file.language

    def uri(self) -> str:
        return file_uri(self.file)


def file_uri(file: SourceFile) -> str:
    """The file's real location when known (so the server's project context finds its workspace), else a
    name under a folder that does not exist."""
    if file.path is not None:
        return Path(file.path).resolve().as_uri()
    return f"file:///opportune-eval/{file.project}/{file.relpath}"


@dataclass(frozen=True)
class Span:
    """A stretch of a file the simulated developer types, keystroke by keystroke."""

    span_id: str
    file: SourceFile = field(repr=False, compare=False)
    start: int
    end: int

    @property
    def text(self) -> str:
        return self.file.text[self.start : self.end]

    def uri(self) -> str:
        return f"file:///opportune-eval/{self.file.project}/{self.file.relpath}"


Candidate = tuple[int, int]  # (cursor, end) as str offsets


class _Offsets:
    """tree-sitter counts UTF-8 bytes, the tasks count characters."""

    def __init__(self, text: str) -> None:
        self._ascii = text.isascii()
        if not self._ascii:
            starts: list[int] = []
            byte = 0
            for ch in text:
                starts.append(byte)
                byte += len(ch.encode("utf-8", "surrogatepass"))
            self._starts = starts

    def char(self, byte: int) -> int:
        if self._ascii:
            return byte
        return bisect.bisect_left(self._starts, byte)


def _nodes(root: tree_sitter.Node) -> Iterator[tree_sitter.Node]:
    cursor = root.walk()
    while True:
        node = cursor.node
        assert node is not None
        yield node
        if cursor.goto_first_child() or cursor.goto_next_sibling():
            continue
        while True:
            if not cursor.goto_parent():
                return
            if cursor.goto_next_sibling():
                break


def _in_string(leaf: tree_sitter.Node) -> bool:
    parent = leaf.parent
    return parent is not None and "string" in parent.type and parent.children[0] != leaf


def _is_expression(node: tree_sitter.Node) -> bool:
    return node.type in EXPRESSION_TYPES or (
        node.type.endswith("_expression") and node.type != "parenthesized_expression"
    )


@dataclass(frozen=True)
class Analysis:
    """What the sampler needs from one file's tree."""

    candidates: dict[TaskKind, tuple[Candidate, ...]]
    unsafe_rows: frozenset[int]  # rows in multi-line tokens (docstrings, comments) or parse errors


def candidates(file: SourceFile) -> dict[TaskKind, tuple[Candidate, ...]]:
    """Every task position in ``file``, by kind, in file order."""
    return analyse(file).candidates


@lru_cache(maxsize=512)
def analyse(file: SourceFile) -> Analysis:
    """Parse ``file`` once per run (tasks and typing spans both need it)."""
    out: dict[TaskKind, list[Candidate]] = {kind: [] for kind in KINDS}
    try:
        tree = SyntaxTree(file.language, file.text.encode("utf-8", "surrogatepass")).tree
    except (ValueError, ImportError):
        return Analysis({kind: () for kind in KINDS}, frozenset())
    text = file.text
    offsets = _Offsets(text)
    line_starts = [0]
    line_starts.extend(i + 1 for i, ch in enumerate(text) if ch == "\n")

    def line_end(row: int) -> int:
        end = line_starts[row + 1] - 1 if row + 1 < len(line_starts) else len(text)
        return len(text[line_starts[row] : end].rstrip()) + line_starts[row]

    def indent_end(row: int) -> int:
        start = line_starts[row]
        line = text[start : line_end(row)]
        return start + len(line) - len(line.lstrip(" \t"))

    leaves: list[tree_sitter.Node] = []
    blocks: list[tree_sitter.Node] = []
    calls: list[tree_sitter.Node] = []
    expressions: list[tree_sitter.Node] = []
    covered: set[int] = set()  # rows inside a multi-line token (docstrings, template strings, comments)
    error_rows: set[int] = set()
    for node in _nodes(tree.root_node):
        if node.type == "ERROR" or node.is_missing:
            error_rows.update(range(node.start_point.row, node.end_point.row + 1))
        if node.child_count == 0 or node.type in COMMENT_TYPES or node.type == "string_content":
            leaves.append(node)
            if node.end_point.row > node.start_point.row:
                covered.update(range(node.start_point.row, node.end_point.row + 1))
        elif node.type in BLOCK_TYPES:
            blocks.append(node)
        elif node.type in ARGUMENT_TYPES:
            calls.append(node)
        if _is_expression(node):
            expressions.append(node)
    leaves.sort(key=lambda n: n.start_byte)
    leaf_starts = [n.start_byte for n in leaves]

    by_row: dict[int, list[tree_sitter.Node]] = {}
    for leaf in leaves:
        by_row.setdefault(leaf.start_point.row, []).append(leaf)
    for row in sorted(by_row):
        row_leaves = by_row[row]
        if row in covered or row in error_rows or row_leaves[0].type in COMMENT_TYPES:
            continue
        end = line_end(row)
        first = offsets.char(row_leaves[0].start_byte)
        if row > 0 and first == indent_end(row) and MIN_TRUTH_CHARS < end - first <= MAX_LINE_TRUTH_CHARS:
            out["next_line"].append((first, end))
        for leaf in row_leaves[1:]:
            if leaf.type in COMMENT_TYPES or _in_string(leaf):
                continue
            cursor = offsets.char(leaf.start_byte)
            if MIN_TRUTH_CHARS <= end - cursor <= MAX_LINE_TRUTH_CHARS:
                out["rest_of_line"].append((cursor, end))

    for block in blocks:
        statements = [c for c in block.named_children if c.type not in COMMENT_TYPES]
        header_row = block.parent.start_point.row if block.parent is not None else block.start_point.row
        if not statements:
            continue
        head, tail = statements[0], statements[-1]
        rows = range(head.start_point.row, tail.end_point.row + 1)
        if (
            head.start_point.row <= header_row
            or len(rows) > MAX_BLOCK_LINES
            or error_rows.intersection(rows)
            or covered.intersection(rows)  # docstrings: prose, not code
        ):
            continue
        cursor, end = offsets.char(head.start_byte), offsets.char(tail.end_byte)
        if cursor == indent_end(head.start_point.row) and MIN_TRUTH_CHARS <= end - cursor <= MAX_TRUTH_CHARS:
            out["block_body"].append((cursor, end))

    for call in calls:
        kids = call.children
        if (
            len(kids) < 3
            or kids[0].type != "("
            or kids[-1].type != ")"
            or call.start_point.row != call.end_point.row
            or call.start_point.row in error_rows
        ):
            continue
        cursor, end = offsets.char(kids[0].end_byte), offsets.char(kids[-1].start_byte)
        if MIN_TRUTH_CHARS <= end - cursor <= MAX_LINE_TRUTH_CHARS and text[cursor:end].strip():
            out["argument_list"].append((cursor, end))

    spans: set[Candidate] = set()
    for expr in expressions:
        if expr.start_point.row != expr.end_point.row or expr.start_point.row in error_rows:
            continue
        size = expr.end_byte - expr.start_byte
        if not 8 <= size <= 120:
            continue
        end = offsets.char(expr.end_byte)
        lo = bisect.bisect_right(leaf_starts, expr.start_byte)  # never the first token: that is the whole
        hi = bisect.bisect_left(leaf_starts, expr.end_byte)
        for leaf in leaves[lo:hi]:
            if leaf.type in COMMENT_TYPES or _in_string(leaf):
                continue
            cursor = offsets.char(leaf.start_byte)
            if end - cursor >= MIN_TRUTH_CHARS:
                spans.add((cursor, end))
    out["expression_span"] = sorted(spans)
    # A held-out text of brackets and quotes only is not a completion anyone waits for.
    return Analysis(
        {kind: tuple(c for c in out[kind] if _has_word(text[c[0] : c[1]])) for kind in KINDS},
        frozenset(covered | error_rows),
    )


def _has_word(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def _task_id(file: SourceFile, cursor: int, kind: str) -> str:
    line = file.text.count("\n", 0, cursor)
    col = cursor - (file.text.rfind("\n", 0, cursor) + 1)
    return f"{file.name}:{line + 1}:{col + 1}:{kind}"


def sample_tasks(
    files: Sequence[SourceFile], n: int, seed: int, kinds: Sequence[TaskKind] = KINDS
) -> list[Task]:
    """``n`` tasks (fewer if the corpus runs out), the kinds taking turns, in file order."""
    rng = random.Random(seed)
    pools = [candidates(f) for f in files]
    # Per kind: the files that still have candidates of that kind, and the candidates left in each.
    left: dict[TaskKind, dict[int, list[Candidate]]] = {
        kind: {i: list(p[kind]) for i, p in enumerate(pools) if p[kind]} for kind in kinds
    }
    chosen: list[Task] = []
    taken: set[tuple[int, int, int]] = set()
    turn = 0
    while len(chosen) < n and any(left[k] for k in kinds):
        kind = kinds[turn % len(kinds)]
        turn += 1
        files_left = left[kind]
        if not files_left:
            continue
        # A file first, then a place in it: a big file should not crowd out the others.
        index = rng.choice(sorted(files_left))
        options = files_left[index]
        cursor, end = options.pop(rng.randrange(len(options)))
        if not options:
            del files_left[index]
        if (index, cursor, end) in taken:
            continue
        taken.add((index, cursor, end))
        file = files[index]
        chosen.append(Task(_task_id(file, cursor, kind), kind, file, cursor, end))
    # File order: consecutive tasks in one file share most of their prompt (the model's KV cache).
    chosen.sort(key=lambda t: (t.file.name, t.cursor, t.end, t.kind))
    return chosen


def sample_spans(files: Sequence[SourceFile], total_chars: int, count: int, seed: int) -> list[Span]:
    """``count`` typing spans of whole lines inside function bodies, about ``total_chars`` in all."""
    if count <= 0 or total_chars <= 0:
        return []
    rng = random.Random(seed)
    target = max(20, total_chars // count)
    analyses = [analyse(f) for f in files]
    starts = {i: [c for c, _ in a.candidates["block_body"]] for i, a in enumerate(analyses)}
    starts = {i: s for i, s in starts.items() if s}
    spans: list[Span] = []
    used: set[int] = set()
    while len(spans) < count and starts:
        # Different files first: one file's style should not decide the typing numbers.
        fresh = sorted(i for i in starts if i not in used) or sorted(starts)
        index = rng.choice(fresh)
        options = starts[index]
        start = options.pop(rng.randrange(len(options)))
        if not options:
            del starts[index]
        text = files[index].text
        end = text.find("\n", start)
        end = len(text) if end == -1 else end
        while end - start < target and end < len(text):
            nxt = text.find("\n", end + 1)
            nxt = len(text) if nxt == -1 else nxt
            if nxt - start > target * 1.5:
                break
            end = nxt
        end = start + len(text[start:end].rstrip())
        rows = range(text.count("\n", 0, start), text.count("\n", 0, end) + 1)
        if analyses[index].unsafe_rows.intersection(rows):
            continue  # a docstring or a comment block: not what the typing numbers are about
        if end - start < 8 or any(s.file is files[index] and s.start < end and start < s.end for s in spans):
            continue
        used.add(index)
        spans.append(Span(_task_id(files[index], start, "typing"), files[index], start, end))
    return spans
