"""Hostile protocol input, one case at a time: each test isolates a fault the fuzzer (bench/fuzz_server.py)
found in `opportune serve`, so that a failure names its cause.  The real server over stdio, spoken to in
bytes by ``bench.fuzz_server.RawServer``; the fake backend unless a test needs the real model."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from bench.fuzz_server import dumps, end_position, frame, raw_session

pytestmark = pytest.mark.e2e

QUIET = {"completion": {"prewarm": False}}


def _count(db: Path, table: str) -> int:
    try:
        with sqlite3.connect(db) as conn:
            return int(conn.execute(f"select count(*) from {table}").fetchone()[0])
    except sqlite3.OperationalError:  # the table does not exist yet
        return 0


async def _wait_rows(db: Path, table: str, at_least: int, seconds: float = 3.0) -> int:
    deadline = time.monotonic() + seconds
    n = _count(db, table)
    while n < at_least and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        n = _count(db, table)
    return n


async def test_custom_requests_without_params_are_answered(tmp_path: Path) -> None:
    """JSON-RPC lets a request omit "params" (vscode-jsonrpc does when there are none); the server answered
    InvalidParams to opportune/status, /report and /setEnabled sent that way."""
    async with raw_session(tmp_path / "t.db", options=QUIET) as server:
        for rid, method in ((901, "opportune/status"), (902, "opportune/setEnabled")):
            future = await server.send_request_bytes(
                rid, frame(dumps({"jsonrpc": "2.0", "id": rid, "method": method}))
            )
            response = (await asyncio.wait_for(future, 10)).message
            assert "result" in response, f"{method} without params: {response}"
            assert response["result"]["enabled"] is True


async def test_a_notification_method_sent_with_an_id_is_answered(tmp_path: Path) -> None:
    """A message with an id is a request: it gets a response even when its method is a notification's
    (the server treated it as the notification and the client waited for ever)."""
    async with raw_session(tmp_path / "t.db", options=QUIET) as server:
        uri = "file:///p/a.py"
        await server.open(uri, "x = 1\n")
        for rid, method, params in (
            (911, "initialized", {}),
            (912, "textDocument/didClose", {"textDocument": {"uri": uri}}),
        ):
            future = await server.send_request_bytes(
                rid, frame(dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}))
            )
            try:
                response = await asyncio.wait_for(future, 5)
            except TimeoutError:
                pytest.fail(f"request {method!r} with id {rid} was never answered")
            assert "result" in response.message or "error" in response.message


async def test_objects_inside_params_are_not_answered_as_requests(tmp_path: Path) -> None:
    """An object nested in params that looks like a JSON-RPC request must not be answered: the server
    structured every nested object (json.loads object_hook) and replied to id 4242, which was never sent."""
    async with raw_session(tmp_path / "t.db", options=QUIET) as server:
        nested = {"jsonrpc": "2.0", "id": 4242, "method": "opportune/whatever"}
        await server.notify("opportune/didShowCompletion", {"id": "nope", "extra": nested})
        await server.notify(
            "workspace/didChangeConfiguration", {"settings": {"opportune": {}, "other": {"msg": nested}}}
        )
        # A round trip after them: every response to them, if any, has been read by now.
        assert "result" in (await server.request("opportune/status", {}, timeout=10)).message
        await asyncio.sleep(0.2)
        assert server.stray_responses == [], f"answers to messages never sent: {server.stray_responses}"


async def test_a_second_initialize_leaks_nothing(tmp_path: Path) -> None:
    """`initialize` may come only once; a client that sends it again must not make the server build (and
    keep) a new session each time: threads, a telemetry writer, a model."""
    async with raw_session(tmp_path / "t.db", options=QUIET) as server:
        await server.open("file:///p/a.py", "x = 1\n")
        await server.request("opportune/status", {}, timeout=10)
        await asyncio.sleep(0.5)
        before = len(os.listdir(f"/proc/{server.pid}/task"))
        for _ in range(8):
            response = await server.request(
                "initialize", {"processId": None, "rootUri": None, "capabilities": {}}, timeout=10
            )
            assert "result" in response.message or "error" in response.message
            await server.notify("initialized", {})
        await server.request("opportune/status", {}, timeout=10)
        await asyncio.sleep(0.5)
        after = len(os.listdir(f"/proc/{server.pid}/task"))
        assert after - before <= 1, f"threads {before} -> {after} after 8 more initialize requests"


async def test_a_lone_surrogate_in_client_feedback_does_not_stop_telemetry(tmp_path: Path) -> None:
    """A rejection reason with a lone surrogate (valid JSON "\\ud800", not encodable as UTF-8) made every
    later batch fail to write, so the store lost every event from then on, shutdown included."""
    db = tmp_path / "t.db"
    async with raw_session(db, options=QUIET) as server:
        uri = "file:///p/a.py"
        text = "abc = 1\nabc = 1\nab"
        await server.open(uri, text)
        await server.insert(uri, 2, end_position(text), "c")
        text += "c"
        response = await server.complete(uri, end_position(text))
        completion_id = response.message["result"]["items"][0]["command"]["arguments"][0]
        before = await _wait_rows(db, "opportunity", 1)
        assert before == 1
        await server.notify("opportune/didRejectCompletion", {"id": completion_id, "reason": "\ud800"})
        for version in range(3, 8):
            await server.insert(uri, version, end_position(text), "x")
            text += "x"
            await asyncio.sleep(0.05)
        after = await _wait_rows(db, "opportunity", before + 5)
        assert after == before + 5, f"opportunities in the store: {before} -> {after} after 5 more edits"


async def test_a_client_name_with_a_lone_surrogate_does_not_stop_telemetry(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    async with raw_session(db, options=QUIET, client_name="vim\ud800") as server:
        uri = "file:///p/a.py"
        text = "x = 1\n"
        await server.open(uri, text)
        for version in range(2, 5):
            await server.insert(uri, version, end_position(text), "y")
            text += "y"
        assert await _wait_rows(db, "opportunity", 3) == 3


async def test_a_change_past_the_end_of_the_last_line_lands_at_its_end(tmp_path: Path) -> None:
    """LSP: a character past the line's length means the end of the line.  pygls's own copy of the
    document clamped it one character short *in the params object* before the engine saw it, so the
    engine's text diverged from the editor's ("abXc" for "abcX")."""
    async with raw_session(tmp_path / "t.db", options=QUIET) as server:
        uri = "file:///p/a.py"
        # The fake backend continues the last characters before the cursor from where they occurred
        # earlier: " = 42" after "abcX", " = 7" after "abXc".
        await server.open(uri, "abcX = 42\nabXc = 7\nabc")
        await server.insert(uri, 2, {"line": 2, "character": 99}, "X")
        response = await server.complete(uri, {"line": 2, "character": 4}, invoked=True)
        items = (response.message.get("result") or {}).get("items") or []
        assert items, response.message
        assert items[0]["insertText"] == " = 42", "the server's document is not the editor's 'abcX'"


def _big_store(db: Path, opportunities: int) -> None:
    """A store with a few weeks of a heavy user's events, written directly (setup, not under test)."""
    from opportune.telemetry import events as ev
    from opportune.telemetry.store import EventStore

    common = ev.Common(install_id="i", session_id="s", model_id="m", language="python", client="x")
    with EventStore(db, flush_interval_s=60, max_buffer=10 * opportunities) as store:
        for i in range(opportunities):
            store.record(ev.Opportunity(common, f"o{i}", "h", "insert"))
            store.record(ev.Attempt(common, f"a{i}", f"o{i}", "model"))
            store.record(
                ev.Response(
                    common,
                    f"a{i}",
                    latency_first_ms=50.0,
                    latency_total_ms=120.0,
                    generated_tokens=5,
                    stop_reason="stop",
                    chars=12,
                    lines=1,
                    completion_id=f"c{i}",
                )
            )


async def test_a_report_on_a_big_store_does_not_stall_completions(tmp_path: Path) -> None:
    """opportune/report ran on the event loop: on a store of 100k opportunities every completion and
    request waited 7 s behind it."""
    db = tmp_path / "t.db"
    await asyncio.to_thread(_big_store, db, 40_000)
    async with raw_session(db, options=QUIET) as server:
        uri = "file:///p/a.py"
        text = "abc = 1\nabc = 1\nab"
        await server.open(uri, text)
        report = asyncio.ensure_future(server.request("opportune/report", {"since": "30d"}, timeout=120))
        await asyncio.sleep(0.1)
        await server.insert(uri, 2, end_position(text), "c")
        started = time.perf_counter()
        response = await server.complete(uri, end_position(text + "c"), timeout=120)
        waited = time.perf_counter() - started
        assert "result" in (await report).message
        assert report.result().seconds > 0.3, "the report was too quick to show anything; use a bigger store"
        assert waited < 0.3, (
            f"a completion waited {waited:.1f} s behind a report ({report.result().seconds:.1f} s)"
        )
        assert (response.message.get("result") or {}).get("items"), response.message


async def test_a_report_with_a_bad_since_is_invalid_params(tmp_path: Path) -> None:
    """A client's bad argument is InvalidParams with the reason, not an InternalError with a traceback."""
    async with raw_session(tmp_path / "t.db", options=QUIET) as server:
        for since in ("garbage", 5, "99999999999d"):
            response = await server.request("opportune/report", {"since": since}, timeout=60)
            error = response.message.get("error") or {}
            assert error.get("code") == -32602, f"since={since!r}: {response.message}"


async def test_a_response_is_not_lost_while_the_model_loads(tmp_path: Path) -> None:
    """llama-cpp-python silences a model load by pointing fds 1 and 2 at /dev/null; on a stdio server fd 1
    is the protocol, so every response written during the load (about a second after `initialized`, and
    after a model change) vanished and its request hung."""
    async with raw_session(tmp_path / "t.db", backend="llama") as server:
        requests = []
        for _ in range(50):  # 2.5 s of status requests from the moment the model starts loading
            requests.append(asyncio.ensure_future(server.request("opportune/status", {}, timeout=15)))
            await asyncio.sleep(0.05)
        results = await asyncio.gather(*requests, return_exceptions=True)
        lost = [i for i, r in enumerate(results) if isinstance(r, BaseException)]
        assert not lost, (
            f"{len(lost)} of 50 requests never answered (sent at {[i * 50 for i in lost[:8]]} ms)"
        )


async def test_malformed_envelopes_get_the_errors_json_rpc_names(tmp_path: Path) -> None:
    """A request whose method is not a string gets an Invalid Request; unparseable bytes and requests with an
    unusable id get nothing (an id-null answer is an error in every LSP client we tried); a request-shaped
    object nested in params is data, never answered; a response and a notification are never answered.
    The server answers the next request as if nothing happened."""
    async with raw_session(tmp_path / "t.db", options=QUIET) as server:
        nulls = server.null_id_errors
        await server.write(frame(b'{"jsonrpc": "2.0", "id": 1, "method": '))  # cut short
        await server.write(frame(dumps({"jsonrpc": "2.0", "id": 1.5, "method": "opportune/status"})))
        await server.write(frame(dumps({"jsonrpc": "2.0", "id": {"x": 1}, "method": "opportune/status"})))
        nested = {"jsonrpc": "2.0", "id": 424242, "method": "shutdown"}
        note = {
            "jsonrpc": "2.0",
            "method": "opportune/didShowCompletion",
            "params": {"id": "x", "also": nested},
        }
        await server.write(frame(dumps(note)))
        await server.write(frame(dumps({"jsonrpc": "2.0", "id": 99999, "result": {"unexpected": nested}})))
        bad_method = await server.request(5, {})  # type: ignore[arg-type]
        assert bad_method.message["error"]["code"] == -32600
        status = await server.request("opportune/status", {})
        assert "result" in status.message, status.message
        assert server.null_id_errors == nulls
        assert not server.stray_responses, server.stray_responses


async def test_shutdown_while_a_handler_is_still_running() -> None:
    """A shutdown that arrives while a notification's handler still runs (the model loading after
    `initialized`): pygls cancels the pending futures while iterating them, and the server's cleanup of
    finished futures must not change that dict under it (it did: 'dictionary changed size during
    iteration', no answer to shutdown, the client hung)."""
    from opportune.server.lsp import build_server

    server = build_server()
    protocol = server.protocol
    gate = asyncio.Event()

    async def loading() -> None:
        await gate.wait()

    def notification() -> Any:
        yield loading, (), None

    protocol._execute_handler("initialized-1", notification, callback=lambda _f: None)
    assert "initialized-1" in protocol._request_futures
    shutdown = protocol.lsp_shutdown()
    next(shutdown)  # the server's own shutdown handler runs here
    with pytest.raises(StopIteration):
        shutdown.send(None)
    await asyncio.sleep(0)
    assert "initialized-1" not in protocol._request_futures
    gate.set()
