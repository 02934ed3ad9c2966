"""What the model is set to work on, and when: a request's generation, the next suggestion started right
after an accept, and pre-warming the prompt where the user is while the model is idle.  Each start hands
the model worker a frozen job built from the workspace and the project part; the engine decides when.
"""

from __future__ import annotations

from collections.abc import Callable

from opportune.server.completion.project import Neighbours, ProjectLink
from opportune.server.completion.worker import Job, Live, ModelWorker
from opportune.server.completion.workspace import LINE_CHARS, DocState, Workspace
from opportune.server.config import Settings
from opportune.server.context.syntax import SyntaxContext
from opportune.server.postprocess import Shape, should_trigger


class Starts:
    def __init__(
        self,
        workspace: Workspace,
        worker: ModelWorker,
        project: ProjectLink,
        settings: Callable[[], Settings],
    ) -> None:
        self.workspace = workspace
        self.worker = worker
        self.project = project
        self._settings = settings

    def job(
        self,
        state: DocState,
        cursor: int,
        syntax: SyntaxContext | None,
        live: Live,
        settings: Settings,
        neighbours: Neighbours | None = None,
    ) -> Job:
        """The frozen job of a generation into ``live``: the request's settings, the prompt's input (with
        the project part there is unless the request waited for a newer one)."""
        c = settings.completion
        if neighbours is None:
            neighbours = self.project.current(state, cursor, syntax, c)
        data = self.workspace.prompt_input(state, cursor, syntax, c, neighbours)
        return Job(settings, data, live.shape)

    def start(
        self,
        state: DocState,
        cursor: int,
        syntax: SyntaxContext | None,
        shape: Shape,
        text: str,
        s: Settings,
        neighbours: Neighbours | None = None,
    ) -> Live:
        """Start a generation at ``cursor`` with settings ``s``."""
        live = Live.at_cursor(state.doc.uri, text, cursor, shape)
        self.worker.start(live, self.job(state, cursor, syntax, live, s, neighbours))
        return live

    def speculate(self, state: DocState, cursor: int) -> None:
        """After an accept, start the next suggestion before the user asks for it."""
        line_prefix, line_suffix = state.doc.line_around(cursor, LINE_CHARS)
        if should_trigger(line_prefix, line_suffix):
            return
        settings = self._settings()
        syntax = self.workspace.syntax(state, cursor)
        shape = self.workspace.shape(syntax, state.doc, cursor, line_prefix, line_suffix, settings.completion)
        self.start(state, cursor, syntax, shape, state.doc.text, settings)

    def prewarm(self, state: DocState, cursor: int) -> None:
        """Evaluate the prompt at ``cursor`` while the model is idle, so the first keystroke there is warm."""
        if self.worker.idle:
            placeholder = Live.at_cursor(state.doc.uri, "", 0, Shape(False, 1, "", ""), prewarm=True)
            syntax = self.workspace.syntax(state, cursor)
            self.worker.prewarm(placeholder, self.job(state, cursor, syntax, placeholder, self._settings()))

    def project_changed(self, uri: str) -> None:
        """A document's project part changed: warm the model with the new prompt where the user is."""
        state = self.workspace.get(uri)
        c = self._settings().completion
        if state is not None and c.prewarm and c.enabled:
            opp = state.opportunity
            self.prewarm(state, opp.cursor if opp is not None else len(state.doc.text))
