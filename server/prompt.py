"""Prompt assembly under a token budget, laid out for KV-cache reuse.

Order: file header, imports, an outline of the file and the enclosing signatures (stable while the user
types), then a window of code before the cursor whose first line only moves in steps of
``window_step_lines``; the cursor is always at the very end.  Consecutive keystrokes therefore share all
but the last few tokens of their prompts, and llama.cpp re-evaluates only those.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from server.backends.base import FimTemplate
from server.context.syntax import SyntaxContext

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
    text: str  # the whole document
    cursor: int  # str offset
    path: str  # shown to the model as a file header ("" to omit)
    language: str | None
    syntax: SyntaxContext | None = None
    neighbours: tuple[tuple[str, str], ...] = ()  # (path, snippet) from other open files


@dataclass(frozen=True)
class Prompt:
    text: str
    stable: str  # the leading part that does not move while typing (pre-warmed)
    tokens: int
    parts: tuple[str, ...] = field(default_factory=tuple)
    window_start_line: int = 0


def _window_start(lines_before: int, back_lines: int, step: int) -> int:
    start = max(0, lines_before - back_lines)
    return (start // step) * step


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
    lines_before = before.count("\n")
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

    # Window: start far enough back to fill the budget, on a step boundary; move forward by steps to fit.
    budget = max(16, budget_tokens - count_tokens(header) - count_tokens(suffix_text) - 8)
    approx_lines = max(step_lines, budget // 8)  # code is ~8 tokens a line; refined by measuring below
    start_line = _window_start(lines_before, approx_lines, step_lines)
    line_starts = _line_starts(before)

    def assemble(start: int) -> tuple[str, str, bool]:
        window = before[line_starts[start] :]
        ctx = (
            _syntax_context(data.syntax, start, line_starts, before, budget * 2 // 5, count_tokens)
            if strategy == "syntax"
            else ""
        )
        return ctx, window, count_tokens(ctx + window) <= budget

    stable_ctx, window, fits = assemble(start_line)
    # Coarse steps keep the start put while typing; single lines only when a step would overshoot.
    for step in (step_lines, 1):
        while not fits and start_line + step <= lines_before:
            start_line += step
            stable_ctx, window, fits = assemble(start_line)
    if start_line >= lines_before and count_tokens(window) > budget:
        # One enormous line: keep its tail (the cursor end); KV reuse is lost but the answer is right.
        window = window[-budget * 3 :]
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


def _line_starts(text: str) -> list[int]:
    starts = [0]
    pos = text.find("\n")
    while pos != -1:
        starts.append(pos + 1)
        pos = text.find("\n", pos + 1)
    return starts


def _syntax_context(
    syntax: SyntaxContext | None,
    start_line: int,
    line_starts: list[int],
    before: str,
    budget: int,
    count_tokens: Callable[[str], int],
) -> str:
    """Enclosing signatures, imports and an outline that the window does not already show, within ``budget``.

    Enclosing scopes matter most (they say where the cursor is), then imports (the names in use), then the
    outline of the file; whatever does not fit is left out, whole entries at a time.
    """
    if syntax is None or start_line == 0:
        return ""
    shown = before[line_starts[start_line] :]
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
