"""The engine's side of project-wide context (``opportune.server.context.project``).

It tells the project context what happens to the open documents (opened, closed, edited, saved), gets the
project part of a request's prompt, and reports, on the event loop, when a document's project part changed
so that the engine warms the model with the new prompt before the next keystroke rather than on it.

A typed request never waits for the project part: it takes the one there is (a newer one, being computed
because its inputs changed, serves a later keystroke).  An invoked request waits for it a bounded time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path

from opportune.server.completion.workspace import DocState
from opportune.server.config import CompletionSettings
from opportune.server.context.project import (
    SIMILAR_WINDOW_LINES,
    ProjectBlock,
    ProjectContext,
    options_from,
)
from opportune.server.context.syntax import SyntaxContext
from opportune.server.documents import TextEdit

# An invoked request waits for a project part whose inputs changed at most this long, and at most half its
# deadline.
PROJECT_WAIT_S = 5.0
Neighbours = tuple[tuple[str, str], ...]
QUERY_CHARS = 4000  # of the code before the cursor, for similar snippets (a minified line is not all read)


class ProjectLink:
    def __init__(
        self, root: Path | None, settings: CompletionSettings, on_changed: Callable[[str], None]
    ) -> None:
        self.context = ProjectContext(
            root,
            max_files=settings.project_max_files,
            max_file_bytes=settings.project_max_file_bytes,
            on_ready=self._ready,
        )
        self._on_changed = on_changed
        self._loop: asyncio.AbstractEventLoop | None = None

    def _ready(self, uri: str) -> None:
        """On the project thread: hand the news to the loop."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to warm
                loop.call_soon_threadsafe(self._on_changed, uri)

    def _remember_loop(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()

    def opened(self, state: DocState, settings: CompletionSettings) -> bool:
        """A document opened; its project part starts computing.  True if it will be reported ready."""
        self._remember_loop()
        doc = state.doc
        self.context.opened(doc.uri, state.language, lambda: doc.text)
        _, pending = self.request(state, len(doc.text), _imports(state), settings)
        return pending is not None

    def closed(self, uri: str) -> None:
        self.context.closed(uri)

    def edited(self, state: DocState, edits: Sequence[TextEdit]) -> None:
        doc = state.doc
        line = min(e.start_point[0] for e in edits)
        self.context.edited(doc.uri, line, lambda a, b: [doc.line_text(i) for i in range(a, b + 1)])

    def saved(self, uri: str) -> None:
        self.context.saved(uri)

    def request(
        self, state: DocState, cursor: int, imports: Sequence[str], settings: CompletionSettings
    ) -> tuple[ProjectBlock, Future[ProjectBlock] | None]:
        doc = state.doc
        line = doc.line_of(cursor)
        start = doc.line_start(max(0, line - SIMILAR_WINDOW_LINES))
        query = doc.text[max(start, cursor - QUERY_CHARS) : cursor]
        return self.context.request(
            doc.uri, state.language, doc.text, imports, line, options_from(settings), query
        )

    def current(
        self, state: DocState, cursor: int, syntax: SyntaxContext | None, settings: CompletionSettings
    ) -> Neighbours:
        imports = syntax.imports if syntax is not None else ()
        return self.request(state, cursor, imports, settings)[0].neighbours()

    async def awaited(
        self, state: DocState, cursor: int, syntax: SyntaxContext | None, settings: CompletionSettings
    ) -> Neighbours:
        """The project part, waiting a bounded time for a newer one if its inputs changed."""
        self._remember_loop()
        imports = syntax.imports if syntax is not None else ()
        block, pending = self.request(state, cursor, imports, settings)
        if pending is not None:
            limit = min(PROJECT_WAIT_S, settings.deadline_ms / 2000)
            with contextlib.suppress(TimeoutError):
                # Shielded: a timeout must not cancel the computation; a later keystroke uses its result.
                block = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(pending)), limit)
        return block.neighbours()

    def set_root(self, root: Path | None) -> None:
        self.context.set_root(root)

    def close(self) -> None:
        self.context.close()


def _imports(state: DocState) -> tuple[str, ...]:
    tree = state.tree
    if tree is None:
        return ()
    try:
        return tree.context_at(0).imports
    except Exception:
        return ()
