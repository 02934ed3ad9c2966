"""The workspace on its own: documents and trees follow edits, the prompt sees a bounded part, and the
window-line syntax memo, shared with the model worker, stays consistent while both use it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from opportune.server.backends.fake import fake_tokens
from opportune.server.completion.workspace import LineContexts, Workspace
from opportune.server.config import CompletionSettings
from opportune.server.context.syntax import SyntaxContext
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
        target=lambda: out.append(build_prompt(data, budget_tokens=budget, count_tokens=count).prefix)  # type: ignore[arg-type]
    )
    thread.start()
    thread.join(30)
    return out[0]


def test_edits_update_the_text_the_tree_and_wake_waiters() -> None:
    ws = Workspace()
    state = ws.open(URI, "x = 1\n", "python", 1)
    changed = state.changed
    ws.apply(state, 2, [(Position(1, 0), Position(1, 0), "def f():\n    return x\n")])
    assert state.doc.text == "x = 1\ndef f():\n    return x\n" and state.doc.version == 2
    assert changed.is_set() and not state.changed.is_set()  # a fresh event for the next wait
    assert state.tree is not None and ws.syntax(state, len(state.doc.text) - 1) is not None
    ws.apply(state, 3, [(None, None, "y = 2\n")])  # a whole-document change parses again
    assert state.doc.text == "y = 2\n" and state.tree is not None
    assert ws.close(URI) is state and ws.get(URI) is None


def test_documents_are_identified_by_a_salted_hash_not_their_path() -> None:
    a = Workspace("salt-a").open(URI, "", "python", 1)
    b = Workspace("salt-a").open("file:///p/other.py", "", "python", 1)
    assert a.hash != b.hash and "shapes" not in a.hash and len(a.hash) == 16
    assert Workspace("salt-a").open(URI, "", "python", 1).hash == a.hash  # stable for one install
    assert Workspace("salt-b").open(URI, "", "python", 1).hash != a.hash


def test_the_prompt_part_of_a_long_document_is_bounded_and_starts_on_a_line() -> None:
    ws = Workspace()
    text = "".join(f"v{i} = {i}\n" for i in range(100_000))
    state = ws.open(URI, text, "python", 1)
    c = CompletionSettings()
    data = ws.prompt_input(state, len(text) // 2, None, c)
    assert len(data.text) < 20_000
    assert data.text.startswith("v") and data.first_line > 0


def test_window_line_contexts_found_for_one_job_serve_the_next_until_an_edit_reaches_them() -> None:
    ws = Workspace()
    state = ws.open(URI, SOURCE, "python", 1)
    cursor = len(state.doc.text)
    c = CompletionSettings()
    build_on_a_worker_thread(ws.prompt_input(state, cursor, ws.syntax(state, cursor), c), budget=400)
    (line,) = state.line_contexts.lines()
    below = state.doc.position_at(cursor)
    ws.apply(state, 2, [(below, below, "x")])  # typing below the window line keeps it
    assert list(state.line_contexts.lines()) == [line]
    above = Position(line - 1, 0)
    ws.apply(state, 3, [(above, above, "# note\n")])
    assert state.line_contexts.lines() == {}


def test_a_context_computed_before_an_edit_that_reached_its_line_is_not_kept() -> None:
    memo = LineContexts()
    context = SyntaxContext("python", (), (), (), False, False, False, "module")
    memo.edited(2, 10)  # the worker computed line 12 on version 1; an edit at version 2 reached line 10
    memo.put(12, context, 1)
    memo.put(8, context, 1)  # above the edit: still valid
    memo.put(12, context, 2)  # computed after the edit
    assert memo.lines() == {8: context, 12: context}
    for version in range(3, 3 + 64):  # more edits than are remembered
        memo.edited(version, 1000)
    memo.put(20, context, 1)
    assert 20 not in memo.lines()


class Probe(int):
    """A window line number: comparing it (as the loop does while it trims the memo on an edit) runs a hook,
    so a test can make the worker add an entry exactly while the loop walks the memo."""

    hook: Callable[[], None] | None = None

    def __lt__(self, other: object) -> bool:
        hook, Probe.hook = Probe.hook, None
        if hook is not None:
            hook()
        return int(self) < other  # type: ignore[operator]


def test_an_edit_while_the_worker_adds_a_window_context_never_breaks() -> None:
    """The loop trims the memo on every edit while the worker adds to it: before, the worker's insertion in
    the middle of the loop's walk raised "dictionary changed size during iteration" in didChange."""
    ws = Workspace()
    state = ws.open(URI, SOURCE, "python", 1)
    cursor = len(state.doc.text)
    data = ws.prompt_input(state, cursor, ws.syntax(state, cursor), CompletionSettings())
    lookup = data.context_at_line
    assert lookup is not None
    on_worker = threading.Thread(target=lookup, args=(Probe(20),))
    on_worker.start()
    on_worker.join(30)

    def worker_adds_a_line() -> None:
        adding = threading.Thread(target=lookup, args=(30,))
        adding.start()
        adding.join(0.5)  # done at once without a lock; with one, it waits for the loop's walk to end

    Probe.hook = worker_adds_a_line
    at = Position(10, 0)
    ws.apply(state, 2, [(at, at, "# an edit above both lines\n")])  # the loop walks the memo
    assert Probe.hook is None, "the loop never walked the memo"


def test_typing_gap_is_the_median_within_bursts() -> None:
    ws = Workspace()
    state = ws.open(URI, "", "python", 1)
    assert ws.typing_gap(state) is None
    now = time.monotonic()
    state.keystrokes.extend([now, now + 0.1, now + 0.3, now + 0.45, now + 5.0])  # a pause is not a gap
    assert ws.typing_gap(state) == pytest.approx(0.15)


def test_a_block_position_gets_a_multiline_shape_and_text_after_the_cursor_makes_it_one_line() -> None:
    ws = Workspace()
    text = "def f(x):\n    "
    state = ws.open(URI, text, "python", 1)
    c = CompletionSettings()
    syntax = ws.syntax(state, len(text))
    assert ws.shape(syntax, state.doc, len(text), "    ", "", c).multiline
    assert not ws.shape(syntax, state.doc, len(text), "    ", "x)", c).multiline
