"""Prompt assembly under a token budget, laid out for KV-cache reuse.

Order: file header, imports, an outline of the file and the enclosing signatures (stable while the user
types), then a window of code before the cursor whose first line only moves in steps of
``window_step_lines``; the cursor is always at the very end.  Consecutive keystrokes therefore share all
but the last few tokens of their prompts, and llama.cpp re-evaluates only those.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from opportune.server.backends.base import FimTemplate
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


@dataclass(frozen=True)
class PromptInput:
    text: str  # the document, or the part of it around the cursor that a prompt can use (see reach_chars)
    cursor: int  # str offset in ``text``
    path: str  # shown to the model as a file header ("" to omit)
    language: str | None
    syntax: SyntaxContext | None = None
    neighbours: tuple[tuple[str, str], ...] = ()  # (path, snippet) from other open files
    # The syntax context seen from a line (the window's first line): its enclosing scopes and the outline
    # around it do not depend on the cursor, so the prompt prefix holding them stays the same while the
    # user types, dedents or opens a new line.  None: use ``syntax`` (the cursor's).
    context_at_line: Callable[[int], SyntaxContext] | None = None
    first_line: int = 0  # the document line that ``text`` starts on (when it is a part)


@dataclass(frozen=True)
class Prompt:
    text: str
    stable: str  # the leading part that does not move while typing (pre-warmed)
    tokens: int
    parts: tuple[str, ...] = field(default_factory=tuple)
    window_start_line: int = 0


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
    fim: FimTemplate | None = None,
    suffix_lines: int = 8,
    step_lines: int = 16,
) -> Prompt:
    before = data.text[: data.cursor]
    after = data.text[data.cursor :]
    comment = COMMENT_PREFIX.get(data.language or "", "#")
    parts: list[str] = []
    header = ""
    if strategy == "syntax":
        if data.path:
            header += f"{comment} {data.path}\n"
            parts.append("path")
        for path, snippet in data.neighbours:
            header += f"{comment} {path}\n{snippet.rstrip()}\n\n"
            parts.append("neighbours")
    suffix_text = ""
    if fim is not None:
        suffix_text = "".join(after.splitlines(keepends=True)[:suffix_lines])
        if suffix_text:
            parts.append("suffix")

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
        first = min(last, grid - base_line)

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
            first += step
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
    start_line = base_line + first
    if strategy == "syntax" and stable_ctx:
        parts.append("syntax")
    parts.append("prefix")
    stable = header + stable_ctx
    if fim is not None:
        text = fim.render(stable + window, suffix_text)
        stable_text = fim.prefix + stable
    else:
        text = stable + window
        stable_text = stable
    return Prompt(
        text=text,
        stable=stable_text,
        tokens=count_tokens(text),
        parts=tuple(parts),
        window_start_line=start_line,
    )


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
