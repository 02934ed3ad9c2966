"""Prompt assembly under a token budget, laid out for KV-cache reuse, into a structured prompt value.

Order: the project context (files the current one uses, given by the caller as ``neighbours``), the file
header, imports, an outline of the file and the enclosing signatures (stable while the user types), then a
window of code before the cursor whose first line only moves in steps of ``window_step_lines``; the
cursor is always at the end of the prefix.  Consecutive keystrokes therefore share all but the last few
tokens of their prompts, and llama.cpp re-evaluates only those.

The result is a value of named parts with their token counts, not a string: each backend renders it its
own way (``templates.render`` for a text prompt in a model's FIM format or prefix alone, llama-server's
``/infill`` fields, an OpenAI ``suffix``), and telemetry reads what each source cost from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from opportune.server.context.syntax import SyntaxContext

CHARS_PER_TOKEN_BOUND = 16
COMMENT_PREFIX = {
    "python": "#",
    "go": "//",
    "rust": "//",
    "java": "//",
    "c": "//",
    "cpp": "//",
    "javascript": "//",
    "typescript": "//",
    "tsx": "//",
}

PartName = Literal["project", "path", "syntax", "window", "suffix"]
"""project: other files of the workspace (stable, first); path: the file's name as a comment; syntax:
imports, outline and enclosing signatures; window: the code just before the cursor; suffix: after it."""


@dataclass(frozen=True)
class PromptInput:
    text: str  # the document, or the part of it around the cursor that a prompt can use (see reach_chars)
    cursor: int  # str offset in ``text``
    path: str  # shown to the model as a file header ("" to omit)
    language: str | None
    syntax: SyntaxContext | None = None
    # Project context: (path, text) of other workspace files, in a stable order (see server/context/).
    neighbours: tuple[tuple[str, str], ...] = ()
    # The syntax context seen from a line (the window's first line): its enclosing scopes and the outline
    # around it do not depend on the cursor, so the prompt prefix holding them stays the same while the
    # user types, dedents or opens a new line.  None: use ``syntax`` (the cursor's).
    context_at_line: Callable[[int], SyntaxContext] | None = None
    first_line: int = 0  # the document line that ``text`` starts on (when it is a part)


@dataclass(frozen=True)
class PromptPart:
    name: PartName
    text: str
    tokens: int


@dataclass(frozen=True)
class Prompt:
    """What the model is shown, as parts in prompt order (the suffix, if any, last)."""

    parts: tuple[PromptPart, ...]
    path: str = ""  # the file's display path (also inside the "path" part, as a comment)
    project: tuple[tuple[str, str], ...] = ()  # the "project" part's files: (path, text)
    window_start_line: int = 0

    @classmethod
    def plain(cls, text: str, tokens: int = 0) -> Prompt:
        """A prompt that is only code before the cursor (a raw prompt, as tests and benchmarks give)."""
        return cls((PromptPart("window", text, tokens),))

    def text_of(self, *names: PartName) -> str:
        return "".join(p.text for p in self.parts if p.name in names)

    @property
    def prefix(self) -> str:
        """Everything before the cursor, project context included (the prompt of a prefix-only model)."""
        return self.text_of("project", "path", "syntax", "window")

    @property
    def local_prefix(self) -> str:
        """Before the cursor without the project context (for backends that take the files separately)."""
        return self.text_of("path", "syntax", "window")

    @property
    def code_prefix(self) -> str:
        """The current file's code before the cursor: outline and window, no labels."""
        return self.text_of("syntax", "window")

    @property
    def suffix(self) -> str:
        return self.text_of("suffix")

    @property
    def stable(self) -> str:
        """The leading text that does not move while typing (what pre-warm evaluates first)."""
        return self.text_of("project", "path", "syntax")

    @property
    def tokens(self) -> int:
        return sum(p.tokens for p in self.parts)

    @property
    def names(self) -> tuple[PartName, ...]:
        return tuple(p.name for p in self.parts if p.text)

    def tokens_by_part(self) -> dict[str, int]:
        """Tokens per context source, for telemetry ("project", "syntax", ...)."""
        out: dict[str, int] = {}
        for p in self.parts:
            if p.text:
                out[p.name] = out.get(p.name, 0) + p.tokens
        return out


def as_prompt(prompt: Prompt | str) -> Prompt:
    return Prompt.plain(prompt) if isinstance(prompt, str) else prompt


class LineTokenCounter:
    """Token counts with the model's tokenizer, line by line, remembered across keystrokes.

    Tokenizing a whole 500-token prompt costs milliseconds on every keystroke, while almost every line of it
    is the same as last time; counting lines separately (plus one token per newline) is within a few
    tokens of the whole count and costs a dictionary look-up for unchanged lines.
    """

    def __init__(self, count: Callable[[str], int], max_lines: int = 20_000) -> None:
        self._count = count
        self._cache: dict[str, int] = {}
        self._max = max_lines

    def line(self, line: str) -> int:
        n = self._cache.get(line)
        if n is None:
            if len(self._cache) >= self._max:
                self._cache.clear()
            n = self._cache[line] = self._count(line) if line else 0
        return n

    def __call__(self, text: str) -> int:
        lines = text.split("\n")
        return sum(self.line(line) for line in lines) + len(lines) - 1


def reach_chars(budget_tokens: int) -> int:
    """How far before the cursor a prompt of ``budget_tokens`` can look, in characters: a generous bound
    (code runs 3-4 characters a token, so this only binds on the tail of a huge file or a minified line)."""
    return budget_tokens * CHARS_PER_TOKEN_BOUND


def build_prompt(
    data: PromptInput,
    *,
    budget_tokens: int,
    count_tokens: Callable[[str], int],
    strategy: str = "syntax",
    suffix_lines: int = 0,
    step_lines: int = 16,
) -> Prompt:
    """The prompt at ``data.cursor`` within ``budget_tokens``; ``suffix_lines`` lines after the cursor are
    included (and paid for) only when the backend shows them to its model (0: it does not)."""
    before = data.text[: data.cursor]
    after = data.text[data.cursor :]
    comment = COMMENT_PREFIX.get(data.language or "", "#")
    project_text = ""
    path_text = ""
    project: tuple[tuple[str, str], ...] = ()
    if strategy == "syntax":
        project = tuple((path, snippet) for path, snippet in data.neighbours if snippet.strip())
        project_text = "".join(f"{comment} {path}\n{snippet.rstrip()}\n\n" for path, snippet in project)
        if data.path:
            path_text = f"{comment} {data.path}\n"
    header = project_text + path_text
    suffix_text = "".join(after.splitlines(keepends=True)[:suffix_lines]) if suffix_lines > 0 else ""

    # Window: as many whole lines before the cursor as fit; its first line sits on a multiple of step_lines
    # so that it stays put while the user types.  Only the tail of a huge file is looked at.
    budget = max(16, budget_tokens - count_tokens(header) - count_tokens(suffix_text) - 8)
    line_cost = count_tokens.line if isinstance(count_tokens, LineTokenCounter) else count_tokens
    base = before.rfind("\n", 0, max(0, len(before) - reach_chars(budget))) + 1
    base_line = data.first_line + before.count("\n", 0, base)
    lines = before[base:].split("\n")
    last = len(lines) - 1
    room = budget - (budget * 2 // 5 if strategy == "syntax" else 0)
    first = last
    used = line_cost(lines[last])
    while first > 0:
        cost = line_cost(lines[first - 1]) + 1
        if used + cost > room:
            break
        used += cost
        first -= 1
    # A step larger than a third of the window would throw away much of what fits; derived from the budget
    # (about 12 tokens a line of code), not from this keystroke's window, so that it does not move.
    step_lines = max(1, min(step_lines, budget // 36))
    if first > 0 or base_line > 0:
        grid = -(-(base_line + first) // step_lines) * step_lines
        first = _past_closers(lines, min(last, grid - base_line))

    def assemble(start: int) -> tuple[str, str, bool]:
        window = "\n".join(lines[start:])
        ctx = (
            _syntax_context(
                data.context_at_line(base_line + start) if data.context_at_line else data.syntax,
                base_line + start,
                window,
                budget * 2 // 5,
                count_tokens,
            )
            if strategy == "syntax"
            else ""
        )
        return ctx, window, count_tokens(ctx + window) <= budget

    stable_ctx, window, fits = assemble(first)
    # Coarse steps keep the start put while typing; single lines only when a step would overshoot.
    for step in (step_lines, 1):
        while not fits and first + step <= last:
            first = _past_closers(lines, first + step)
            stable_ctx, window, fits = assemble(first)
    if not fits:
        # One enormous line: keep the tail (the cursor end) that fits; KV reuse is lost but the answer is
        # right.  Shrunk in proportion to the count, a few times, since characters per token vary.
        room = max(8, budget - count_tokens(stable_ctx))
        for _ in range(6):
            n = count_tokens(window)
            if n <= room:
                break
            window = window[-max(1, len(window) * room * 9 // (n * 10)) :]
    texts: tuple[tuple[PartName, str], ...] = (
        ("project", project_text),
        ("path", path_text),
        ("syntax", stable_ctx),
        ("window", window),
        ("suffix", suffix_text),
    )
    return Prompt(
        parts=tuple(
            PromptPart(name, text, count_tokens(text) if text else 0) for name, text in texts if text
        ),
        path=data.path if strategy == "syntax" else "",
        project=project,
        window_start_line=base_line + first,
    )


def _past_closers(lines: list[str], first: int) -> int:
    """The window's first line, moved past lines that only close brackets: a window starting on a scope's
    closing brace shows that scope as its header (from the syntax context) and then ``}``, an empty body
    (a Go struct without its fields, a Java helper without its code).  Past it, the scope is an outline
    entry instead.  Depends only on the lines themselves, so the start stays put while typing below."""
    last = len(lines) - 1
    while first < last and lines[first].strip() and not lines[first].strip().strip(")]};,"):
        first += 1
    return first


def _syntax_context(
    syntax: SyntaxContext | None,
    start_line: int,
    shown: str,
    budget: int,
    count_tokens: Callable[[str], int],
) -> str:
    """Enclosing signatures, imports and an outline that the window (``shown``) does not already show,
    within ``budget``.

    Enclosing scopes matter most (they say where the cursor is), then imports (the names in use), then the
    outline of the file; whatever does not fit is left out, whole entries at a time.
    """
    if syntax is None or start_line == 0:
        return ""
    scopes = [s for s in syntax.scopes if s.strip() and s not in shown]
    imports = [i for i in syntax.imports if i not in shown]
    outline = [s for s in syntax.sibling_signatures if s not in shown and s not in syntax.scopes]
    used = count_tokens("\n".join(scopes)) if scopes else 0
    if used > budget:
        return ""
    kept_imports: list[str] = []
    for line in imports:
        cost = count_tokens(line) + 1
        if used + cost > budget:
            break
        kept_imports.append(line)
        used += cost
    kept_outline: list[str] = []
    for sig in outline:
        cost = count_tokens(sig) + 1
        if used + cost > budget:
            break
        kept_outline.append(sig)
        used += cost
    chunks = []
    if kept_imports:
        chunks.append("\n".join(kept_imports) + "\n\n")
    if kept_outline:
        chunks.append("\n".join(kept_outline) + "\n\n")
    if scopes:
        chunks.append("\n".join(scopes) + "\n")
    return "".join(chunks)
