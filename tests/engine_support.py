"""Helpers shared by the engine's tests: a typist that edits one document the way an editor reports it."""

from __future__ import annotations

from typing import Any

from opportune.server.completion import Engine
from opportune.server.documents import Document, Position

URI = "file:///project/calc.py"
TEXT = "import math\n\n\ndef area(r):\n    "


class Typist:
    """Types at the end of one document, as an editor would report it."""

    def __init__(self, engine: Engine, text: str = TEXT) -> None:
        self.engine = engine
        self.doc = Document(URI, text)
        self.version = 1
        engine.open(URI, text, "python", 1)

    def type(self, chars: str) -> Position:
        end = self.doc.position_at(len(self.doc.text))
        self.doc.apply(end, end, chars)
        self.version += 1
        self.engine.change(URI, self.version, [(end, end, chars)])
        return self.doc.position_at(len(self.doc.text))

    async def complete(self) -> Any:
        return await self.engine.complete(URI, self.doc.position_at(len(self.doc.text)))
