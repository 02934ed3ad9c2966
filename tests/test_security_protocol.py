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


def _rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    import sqlite3

    with sqlite3.connect(db) as conn:
        try:
            return conn.execute(sql).fetchall()
        except sqlite3.OperationalError:
            return []


async def _wait(db: Path, sql: str, seconds: float = 5.0) -> list[tuple[Any, ...]]:
    deadline = asyncio.get_running_loop().time() + seconds
    rows = _rows(db, sql)
    while not rows and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
        rows = _rows(db, sql)
    return rows


async def test_document_hashes_cannot_be_confirmed_by_guessing_a_path(tmp_path: Path) -> None:
    """document_hash was sha256 of install id and URI, and the install id is in the same row: anyone with
    the store could confirm a guessed path.  Now it is keyed by a secret salt that never leaves the state
    directory (not the store, not an export)."""
    import hashlib
    import os

    db = tmp_path / "t.db"
    uri = "file:///home/alice/payroll/salaries.py"
    async with raw_session(db, options=QUIET) as server:
        await server.open(uri, TEXT)
        await server.insert(uri, 2, end_position(TEXT), "c")
    [(install, stored)] = await _wait(db, "select install_id, document_hash from opportunity")
    for guess in (f"{install}:{uri}", uri, f"{uri}:{install}"):
        assert hashlib.sha256(guess.encode()).hexdigest()[:16] != stored
    state = Path(os.environ["XDG_STATE_HOME"]) / "opportune" / "hash_salt"
    salt = state.read_text().strip()
    assert len(salt) >= 32 and (state.stat().st_mode & 0o077) == 0, "the salt is private to the user"
    assert salt.encode() not in db.read_bytes()


@pytest.mark.parametrize(("store_text", "expected"), [(False, "other"), (True, "/home/alice/payroll.py")])
async def test_a_clients_free_form_rejection_reason_is_stored_only_with_store_text(
    tmp_path: Path, store_text: bool, expected: str
) -> None:
    db = tmp_path / "t.db"
    options = {**QUIET, "telemetry": {"storeText": store_text, "flushIntervalS": 0.2}}
    uri = "file:///p/a.py"
    async with raw_session(db, options=options) as server:
        await server.open(uri, TEXT)
        message = await _typed_completion(server, uri)
        completion_id = message["result"]["items"][0]["command"]["arguments"][0]
        await server.notify(
            "opportune/didRejectCompletion", {"id": completion_id, "reason": "/home/alice/payroll.py"}
        )
        rows = await _wait(db, "select reason from outcome where inferred = 0")
    assert rows == [(expected,)]
