"""The workspace on its own: documents and trees follow edits, the prompt sees a bounded part, and the
window-line syntax memo is the loop's alone (the worker fills a private copy that is merged back)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from opportune.server.backends.fake import fake_tokens
from opportune.server.completion.workspace import Workspace
from opportune.server.config import CompletionSettings
from opportune.server.documents import Position
from opportune.server.prompt import build_prompt

URI = "file:///p/shapes.py"
SOURCE = "import math\n\n\nclass Circle:\n" + "".join(
    f"    def area_{i}(self, r):\n        return math.pi * r * {i}\n\n" for i in range(40)
)


def count(text: str) -> int:
    return len(fake_tokens(text))


def build_on_a_worker_thread(data: object, budget: int = 200) -> str:
    """Build the prompt the way the model worker does: on a thread of its own."""
    out: list[str] = []
    thread = threading.Thread(
        target=lambda: out.append(build_prompt(data, budget_tokens=budget, count_tokens=count).text)  # type: ignore[arg-type]
    )
    thread.start()
    thread.join(30)
    return out[0]


def test_edits_update_the_text_the_tree_and_wake_waiters() -> None:
    ws = Workspace()
    state = ws.open(URI, "x = 1\n", "python", 1, "salt")
    changed = state.changed
    ws.apply(state, 2, [(Position(1, 0), Position(1, 0), "def f():\n    return x\n")])
    assert state.doc.text == "x = 1\ndef f():\n    return x\n" and state.doc.version == 2
    assert changed.is_set() and not state.changed.is_set()  # a fresh event for the next wait
    assert state.tree is not None and ws.syntax(state, len(state.doc.text) - 1) is not None
    ws.apply(state, 3, [(None, None, "y = 2\n")])  # a whole-document change parses again
    assert state.doc.text == "y = 2\n" and state.tree is not None
    assert ws.close(URI) is state and ws.get(URI) is None


def test_documents_are_identified_by_a_salted_hash_not_their_path() -> None:
    ws = Workspace()
    a = ws.open(URI, "", "python", 1, "install-a")
    b = ws.open("file:///p/other.py", "", "python", 1, "install-a")
    assert a.hash != b.hash and "shapes" not in a.hash and len(a.hash) == 16
    assert ws.open(URI, "", "python", 1, "install-b").hash != a.hash


def test_the_prompt_part_of_a_long_document_is_bounded_and_starts_on_a_line() -> None:
    ws = Workspace()
    text = "".join(f"v{i} = {i}\n" for i in range(100_000))
    state = ws.open(URI, text, "python", 1, "salt")
    c = CompletionSettings()
    data = ws.prompt_input(state, len(text) // 2, None, c)
    assert len(data.text) < 20_000
    assert data.text.startswith("v") and data.first_line > 0


async def test_the_worker_fills_its_own_copy_of_the_memo_and_the_loop_merges_it() -> None:
    ws = Workspace()
    state = ws.open(URI, SOURCE + "    def last(self):\n        ", "python", 1, "salt")
    cursor = len(state.doc.text)
    memo = dict(state.line_contexts)
    data = ws.prompt_input(state, cursor, ws.syntax(state, cursor), CompletionSettings(), memo)
    before = dict(state.line_contexts)
    await asyncio.to_thread(build_on_a_worker_thread, data)
    # The document's memo was not touched from the worker (the loop may be iterating it meanwhile)...
    assert state.line_contexts == before
    assert memo, "the prompt looked up no window line"
    # ...and what the worker learned is kept once merged back on the loop.
    ws.merge_contexts(URI, 1, memo)
    assert state.line_contexts == memo


def test_what_a_job_learned_is_kept_unless_an_edit_since_reached_its_line() -> None:
    for edit_above in (False, True):
        ws = Workspace()
        state = ws.open(URI, SOURCE, "python", 1, "salt")
        cursor = len(state.doc.text)
        memo: dict[int, object] = {}
        data = ws.prompt_input(state, cursor, ws.syntax(state, cursor), CompletionSettings(), memo)  # type: ignore[arg-type]
        build_on_a_worker_thread(data, budget=400)
        (line,) = memo
        at = Position(line - 1 if edit_above else state.doc.line_count - 1, 0)
        ws.apply(state, 2, [(at, at, "x = 1\n")])
        ws.merge_contexts(URI, 1, memo)  # type: ignore[arg-type]
        assert state.line_contexts == ({} if edit_above else memo)


def test_typing_gap_is_the_median_within_bursts() -> None:
    ws = Workspace()
    state = ws.open(URI, "", "python", 1, "salt")
    assert ws.typing_gap(state) is None
    now = time.monotonic()
    state.keystrokes.extend([now, now + 0.1, now + 0.3, now + 0.45, now + 5.0])  # a pause is not a gap
    assert ws.typing_gap(state) == pytest.approx(0.15)


def test_a_block_position_gets_a_multiline_shape_and_text_after_the_cursor_makes_it_one_line() -> None:
    ws = Workspace()
    text = "def f(x):\n    "
    state = ws.open(URI, text, "python", 1, "salt")
    c = CompletionSettings()
    syntax = ws.syntax(state, len(text))
    assert ws.shape(syntax, state.doc, len(text), "    ", "", c).multiline
    assert not ws.shape(syntax, state.doc, len(text), "    ", "x)", c).multiline
