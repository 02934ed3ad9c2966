"""`opportune complete`: one completion at a position of a file, through the same engine as the server."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from opportune.server.backends.base import BackendError
from opportune.server.documents import Document, Position
from opportune.server.session import start_session


def complete_file(
    path: Path,
    line: int,
    col: int,
    *,
    overrides: dict[str, Any] | None = None,
    config_path: Path | None = None,
) -> str:
    """The completion at 1-based ``line``/``col`` of ``path``; "" when there is none."""
    raw = path.read_bytes()
    text = raw.decode("utf-8", errors="replace")
    # The command line is not racing a keystroke: give the model time, and record nothing.
    options = {"completion": {"deadlineMs": 20_000, "prewarm": False}, "telemetry": {"enabled": False}}
    session = start_session(options, overrides=overrides, config_path=config_path, workspace=path.parent)
    for problem in session.problems:  # one line each (a settings file is named with its line), no traceback
        print(f"opportune: settings: {problem}", file=sys.stderr)
    try:
        error = session.engine.load_backend()
        if error:
            raise BackendError(error)
        doc = Document(path.resolve().as_uri(), text)
        line_text = doc.line_text(line - 1)
        position = Position(max(0, line - 1), len(line_text[: max(0, col - 1)].encode("utf-16-le")) // 2)

        async def run() -> str:
            session.engine.open(doc.uri, text, "", 0)
            suggestion = await session.engine.complete(doc.uri, position, invoked=True)
            return suggestion.text if suggestion else ""

        return asyncio.run(run())
    finally:
        session.close()
