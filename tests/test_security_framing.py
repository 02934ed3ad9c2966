"""One bad frame cannot take the server: the six framing faults of issue 19, each followed by well-framed
requests that must be answered, through the real `opportune serve` over stdio (fake backend).

Before server.transport, the two absurd lengths killed the process (MemoryError, OverflowError) and the
four lying or unreadable ones left it alive and deaf for the rest of the session.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench.fuzz_server import dumps, frame, raw_session

pytestmark = pytest.mark.e2e

QUIET = {"completion": {"prewarm": False}}
STATUS = {"jsonrpc": "2.0", "id": 0, "method": "opportune/status", "params": {}}


def _status(rid: int) -> bytes:
    return dumps({**STATUS, "id": rid})


def _faults() -> dict[str, bytes]:
    body = _status(500)
    return {
        "absurd length": b"Content-Length: 999999999999999\r\n\r\n" + body,
        "overflowing length": b"Content-Length: 99999999999999999999999\r\n\r\n" + body,
        "length shorter than the body": b"Content-Length: %d\r\n\r\n" % (len(body) - 7) + body,
        "length longer than the body": b"Content-Length: %d\r\n\r\n" % (len(body) + 40) + body,
        "negative length": b"Content-Length: -5\r\n\r\n" + body,
        "length not a number": b"Content-Length: twelve\r\n\r\n" + body,
    }


@pytest.mark.parametrize("fault", list(_faults()))
async def test_after_a_framing_fault_the_next_requests_are_answered(tmp_path: Path, fault: str) -> None:
    async with raw_session(tmp_path / "t.db", options=QUIET) as server:
        await server.write(_faults()[fault])
        # A lying length may swallow (part of) the next frame: it is re-read, and in any case the ones
        # after it must be answered.
        futures = [await server.send_request_bytes(rid, frame(_status(rid))) for rid in (601, 602, 603)]
        done, _ = await asyncio.wait(futures, timeout=10)
        answered = {f.result().message["id"] for f in done}
        assert server.returncode is None, f"the server died after a {fault}"
        assert {602, 603} <= answered, f"after a {fault} only {sorted(answered)} of 601-603 were answered"
        assert 601 in answered or fault == "length longer than the body"
        for f in done:
            assert f.result().message["result"]["enabled"] is True


async def test_a_message_above_the_configured_limit_is_refused_and_the_next_answered(tmp_path: Path) -> None:
    """--max-message-mb bounds what is read: a real (not lying) 2 MB message over a 1 MB limit is skipped
    without being buffered whole, and the stream goes on."""
    async with raw_session(tmp_path / "t.db", options=QUIET, extra=("--max-message-mb", "1")) as server:
        big = dumps(
            {
                "jsonrpc": "2.0",
                "method": "textDocument/didOpen",
                "params": {
                    "textDocument": {
                        "uri": "file:///p/big.py",
                        "languageId": "python",
                        "version": 1,
                        "text": "x" * 2_000_000,
                    }
                },
            }
        )
        await server.write(frame(big))
        response = await server.request("opportune/status", {}, timeout=10)
        assert response.message["result"]["enabled"] is True
        assert any("refused" in line for line in server.stderr_tail), "the refusal was not logged"


async def test_garbage_between_frames_is_skipped(tmp_path: Path) -> None:
    async with raw_session(tmp_path / "t.db", options=QUIET) as server:
        await server.write(b"\x00\xff garbage without a newline " * 1000 + b"\r\n\r\n")
        await server.write(b"Content-Type: nothing\r\n\r\n{}")
        response = await server.request("opportune/status", {}, timeout=10)
        assert response.message["result"]["enabled"] is True


async def test_requests_after_shutdown_are_answered_with_invalid_request(tmp_path: Path) -> None:
    """pygls dropped every request after `shutdown`; LSP wants InvalidRequest (-32600)."""
    async with raw_session(tmp_path / "t.db", options=QUIET) as server:
        assert "result" in (await server.request("shutdown", None, timeout=10)).message
        response = await server.request("opportune/status", {}, timeout=5)
        assert response.message["error"]["code"] == -32600
        await server.notify("exit")
        assert await asyncio.wait_for(server.proc.wait(), 10) == 0  # type: ignore[union-attr]
