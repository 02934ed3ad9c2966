"""`opportune serve` end to end over stdio with pytest-lsp: the real embedded model, cancellation, bad input."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
from lsp_client import TypedDocument, lsp_session, send_raw
from lsprotocol import types
from pygls.exceptions import JsonRpcException

pytestmark = pytest.mark.e2e


async def test_capabilities_and_a_real_completion(tmp_path: Path) -> None:
    async with lsp_session(tmp_path / "t.db", "llama") as client:
        caps = client.server_capabilities if hasattr(client, "server_capabilities") else None
        del caps
        doc = TypedDocument(
            client,
            "file:///project/geometry.py",
            "import math\n\n\ndef circle_area(radius):\n    return math.pi * radius * radius\n\n\n"
            "def square_area(side):\n    return ",
        )
        await asyncio.sleep(2.0)  # the model loads and pre-warms this document
        texts: list[str] = []
        for ch in "si":
            doc.type(ch)
            result = await doc.complete()
            texts += [item.insert_text for item in (result.items if result else [])]  # type: ignore[misc]
            await asyncio.sleep(0.15)
        await asyncio.sleep(1.0)  # a pause, as people make
        result = await doc.complete(invoked=True)
        texts += [item.insert_text for item in (result.items if result else [])]  # type: ignore[misc]
        assert texts, "no ghost text at all"
        assert any(t.strip() for t in texts)
        item = (result.items if result else [None])[0]
        if item is not None:
            assert item.command is not None and item.command.command == "opportune.accept"
    db = sqlite3.connect(tmp_path / "t.db")
    assert db.execute("select count(*) from opportunity").fetchone()[0] >= 2
    assert db.execute("select count(*) from response where loss_reason is null").fetchone()[0] >= 1


async def test_initialize_advertises_inline_completion(tmp_path: Path) -> None:
    from lsp_client import ROOT, serve_command
    from pytest_lsp.client import make_test_lsp_client

    client = make_test_lsp_client()
    await client.start_io(*serve_command(tmp_path / "t.db", "fake"), cwd=str(ROOT))
    try:
        result = await client.initialize_session(
            types.InitializeParams(capabilities=types.ClientCapabilities())
        )
        caps = result.capabilities
        assert caps.inline_completion_provider is not None
        sync = caps.text_document_sync
        assert (
            isinstance(sync, types.TextDocumentSyncOptions)
            and sync.change == types.TextDocumentSyncKind.Incremental
        )
        assert caps.execute_command_provider is not None
        assert "opportune.accept" in caps.execute_command_provider.commands
        await client.shutdown_session()
    finally:
        await client.stop()


async def test_cancel_request_stops_the_model(tmp_path: Path) -> None:
    options = {
        "model": {"fakeLatencyMs": 50},
        "completion": {
            "deadlineMs": 20000,
            "maxTokens": 200,
            "singleLineMaxTokens": 200,
            "prewarm": False,
            "contextTokens": 1500,
        },
    }
    async with lsp_session(tmp_path / "t.db", "fake", options) as client:
        line = "total = " + " + ".join(f"v{i}" for i in range(30)) + "\n"
        doc = TypedDocument(client, "file:///p/a.py", line * 3 + "tot")
        doc.type("a")
        before = set(client.protocol._request_futures)
        pending = asyncio.ensure_future(doc.complete())
        await asyncio.sleep(0.3)
        (msg_id,) = set(client.protocol._request_futures) - before
        status = await client.protocol.send_request_async("opportune/status", {})
        assert status.busy
        client.protocol.notify("$/cancelRequest", types.CancelParams(id=msg_id))
        with pytest.raises(JsonRpcException):
            await pending
        started = time.monotonic()
        while (await client.protocol.send_request_async("opportune/status", {})).busy:
            assert time.monotonic() - started < 2, "the model kept generating after $/cancelRequest"
            await asyncio.sleep(0.05)
    db = sqlite3.connect(tmp_path / "t.db")
    assert db.execute("select loss_reason from response").fetchall() == [("cancelled",)]


async def test_bad_input_gets_clean_answers_and_the_server_lives_on(tmp_path: Path) -> None:
    async with lsp_session(tmp_path / "t.db", "fake") as client:
        # Unknown language: plain prefix context.
        cobol = TypedDocument(
            client, "file:///p/PAYROLL.cob", "       IDENTIFICATION DIVISION.\n       ", "cobol"
        )
        cobol.type("P")
        await cobol.complete()
        # Binary content.
        binary = TypedDocument(client, "file:///p/blob.bin", "\x00\x01\x02ELF\x00" * 100, "plaintext")
        binary.type("x")
        assert await binary.complete() is None
        # Positions past the end and inside a surrogate pair.
        emoji = TypedDocument(client, "file:///p/e.py", "s = '😀'\n")
        emoji.type("x")
        await emoji.complete(types.Position(line=50, character=9999), invoked=True)
        await emoji.complete(types.Position(line=0, character=6), invoked=True)
        # A request for a document that was never opened.
        result = await client.text_document_inline_completion_async(
            types.InlineCompletionParams(
                context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked),
                text_document=types.TextDocumentIdentifier("file:///p/never-opened.py"),
                position=types.Position(0, 0),
            )
        )
        assert result is None
        # Parameters that do not deserialize (a negative line) get an error, not silence.
        bad = {
            "jsonrpc": "2.0",
            "id": "bad-1",
            "method": "textDocument/inlineCompletion",
            "params": {
                "textDocument": {"uri": "file:///p/e.py"},
                "position": {"line": -1, "character": 0},
                "context": {"triggerKind": 1},
            },
        }
        with pytest.raises(JsonRpcException):
            await asyncio.wait_for(send_raw(client, bad), 10)
        # Not JSON at all, then a notification whose parameters are nonsense: logged, nothing to answer.
        client.protocol.writer.write(b"Content-Length: 9\r\n\r\n{not json")  # type: ignore[union-attr]
        send_raw(client, {"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {"x": 1}})
        # A change for a document that is not open, and a huge line.
        client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                types.VersionedTextDocumentIdentifier(version=3, uri="file:///p/ghost.py"),
                [types.TextDocumentContentChangeWholeDocument(text="x")],
            )
        )
        big = TypedDocument(client, "file:///p/big.py", "x = '" + "a" * 2_000_000 + "'\n")
        big.type("y")
        await big.complete()
        # Still alive and answering.
        ok = TypedDocument(client, "file:///p/ok.py", "abc = 1\nabc = 1\nab")
        ok.type("c")
        result = await ok.complete()
        assert result is not None and result.items[0].insert_text.startswith(" = 1")
