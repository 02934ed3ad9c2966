"""Starting `opportune serve` as a real subprocess and talking to it through pytest-lsp's LanguageClient."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from lsprotocol import types
from pytest_lsp import LanguageClient, client_capabilities
from pytest_lsp.client import make_test_lsp_client

ROOT = Path(__file__).resolve().parents[1]


def serve_command(db: Path | None, backend: str = "llama", *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "opportune.server.cli", "serve", "--backend", backend]
    if db is not None:
        cmd += ["--db", str(db)]
    return cmd + list(extra)


@asynccontextmanager
async def lsp_session(
    db: Path | None,
    backend: str = "llama",
    options: dict[str, Any] | None = None,
    extra: tuple[str, ...] = (),
    root: Path | None = None,
) -> AsyncIterator[LanguageClient]:
    client = make_test_lsp_client()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    await client.start_io(*serve_command(db, backend, *extra), env=env, cwd=str(ROOT))
    caps = client_capabilities("visual-studio-code")
    await client.initialize_session(
        types.InitializeParams(
            capabilities=caps,
            root_uri=root.as_uri() if root is not None else None,
            initialization_options={"telemetry": {"flushIntervalS": 0.2}, **(options or {})},
            client_info=types.ClientInfo(name="pytest-lsp"),
        )
    )
    try:
        yield client
    finally:
        try:
            await asyncio.wait_for(client.shutdown_session(), 30)
        finally:
            await client.stop()


class TypedDocument:
    """A document the test types into, sending didChange like an editor."""

    def __init__(self, client: LanguageClient, uri: str, text: str, language_id: str = "python") -> None:
        self.client = client
        self.uri = uri
        self.text = text
        self.version = 1
        client.text_document_did_open(
            types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, language_id, 1, text))
        )

    @property
    def end(self) -> types.Position:
        lines = self.text.split("\n")
        return types.Position(len(lines) - 1, len(lines[-1].encode("utf-16-le")) // 2)

    def type(self, chars: str) -> types.Position:
        """Insert ``chars`` at the end of the document as one edit; returns the new cursor."""
        at = self.end
        self.version += 1
        self.text += chars
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                types.VersionedTextDocumentIdentifier(version=self.version, uri=self.uri),
                [types.TextDocumentContentChangePartial(range=types.Range(at, at), text=chars)],
            )
        )
        return self.end

    async def complete(
        self, position: types.Position | None = None, invoked: bool = False
    ) -> types.InlineCompletionList | None:
        kind = (
            types.InlineCompletionTriggerKind.Invoked
            if invoked
            else types.InlineCompletionTriggerKind.Automatic
        )
        result = await self.client.text_document_inline_completion_async(
            types.InlineCompletionParams(
                context=types.InlineCompletionContext(trigger_kind=kind),
                text_document=types.TextDocumentIdentifier(self.uri),
                position=position or self.end,
            )
        )
        if isinstance(result, list):
            return types.InlineCompletionList(items=result)
        return result


def send_raw(client: LanguageClient, payload: dict[str, Any]) -> asyncio.Future[Any]:
    """Write a JSON-RPC message as bytes (for parameters a typed client refuses to build); returns the
    future of its response when it has an id."""
    protocol = client.protocol
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    if "id" in payload:
        protocol._request_futures[payload["id"]] = future  # type: ignore[assignment]
    body = json.dumps(payload)
    protocol.writer.write(f"Content-Length: {len(body.encode())}\r\n\r\n{body}".encode())  # type: ignore[union-attr]
    return future
