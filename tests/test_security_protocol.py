"""Low-severity protocol faults of issue 19, each through the real `opportune serve` (fake backend): valid or
merely odd input that raised inside the server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bench.fuzz_server import RawServer, end_position, raw_session

pytestmark = pytest.mark.e2e

QUIET = {"completion": {"prewarm": False}}
TEXT = "abc = 1\nabc = 1\nab"


async def _typed_completion(server: RawServer, uri: str, version: int = 2) -> dict[str, Any]:
    await server.insert(uri, version, end_position(TEXT), "c")
    response = await server.complete(uri, end_position(TEXT + "c"))
    return response.message


@pytest.mark.parametrize(
    ("uri", "language_id"),
    [
        ("file:///p/lone-\ud800-surrogate.py", "python"),  # the document was not opened
        ("file:///p/number-language.py", 5),  # AttributeError: 'int' object has no attribute 'strip'
    ],
)
async def test_odd_did_open_fields_still_open_the_document(
    tmp_path: Path, uri: str, language_id: object
) -> None:
    async with raw_session(tmp_path / "t.db", options=QUIET) as server:
        await server.notify(
            "textDocument/didOpen",
            {"textDocument": {"uri": uri, "languageId": language_id, "version": 1, "text": TEXT}},
        )
        message = await _typed_completion(server, uri)
        assert message["result"]["items"][0]["insertText"].startswith(" = 1"), message
        await asyncio.sleep(0.3)
        assert not [line for line in server.stderr_tail if "Error" in line], list(server.stderr_tail)[-5:]


async def test_did_change_with_no_content_changes_is_accepted(tmp_path: Path) -> None:
    """An empty contentChanges array is valid LSP; it raised inside the engine (min() of nothing)."""
    uri = "file:///p/a.py"
    async with raw_session(tmp_path / "t.db", options=QUIET) as server:
        await server.open(uri, TEXT)
        await server.notify(
            "textDocument/didChange", {"textDocument": {"uri": uri, "version": 2}, "contentChanges": []}
        )
        message = await _typed_completion(server, uri, version=3)
        assert message["result"]["items"][0]["insertText"].startswith(" = 1"), message
        await asyncio.sleep(0.3)
        assert not [line for line in server.stderr_tail if "Error" in line], list(server.stderr_tail)[-5:]
