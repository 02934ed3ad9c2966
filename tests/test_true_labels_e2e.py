"""True labels, end to end through a real client (pytest-lsp against `opportune serve`): every answer's row
says where it came from (model, a generation still running, the typeahead cache), why its text ends there,
and where its time went; rows name the model that answered, or ``unknown`` before it is known, and the
report by model leaves those out."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from lsp_client import TypedDocument, lsp_session

from opportune.telemetry.cpo import summarise
from opportune.telemetry.events import UNKNOWN_MODEL
from opportune.telemetry.store import open_events

pytestmark = pytest.mark.e2e

SOURCE = "value = compute(alpha, beta, gamma, delta, epsilon, zeta)\nnumber = 1\n"


def answers(db: Path) -> list[dict[str, Any]]:
    """Attempt and response of every answered request, in order."""
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    rows = con.execute(
        "select a.source, r.stop_reason, r.latency_first_ms, r.stages_ms, r.model_id, r.generated_tokens"
        " from attempt a join response r using (attempt_id) where r.loss_reason is null order by r.ts"
    ).fetchall()
    return [{**dict(row), "stages": json.loads(row["stages_ms"])} for row in rows]


async def test_each_answer_says_whether_the_model_a_running_generation_or_the_cache_made_it(
    tmp_path: Path,
) -> None:
    db = tmp_path / "t.db"
    options = {"model": {"fakeLatencyMs": 50}, "completion": {"prewarm": False, "deadlineMs": 600}}
    async with lsp_session(db, "fake", options) as client:
        doc = TypedDocument(client, "file:///p/a.py", SOURCE)
        doc.type("val")  # about 25 tokens to the line's end at 50 ms each: longer than the deadline
        first = await doc.complete()
        assert first is not None and first.items
        shown = first.items[0].insert_text
        assert isinstance(shown, str) and "ue = compute(alpha, beta, gamma, delta, epsilon, zeta)".startswith(
            shown
        )
        doc.type(shown[0])  # at once: the generation is still running
        await doc.complete()
        await asyncio.sleep(2.0)  # it finishes into the typeahead cache
        doc.type(shown[1])
        cached = await doc.complete()
        assert cached is not None and cached.items
        doc.type("\n")
        await asyncio.sleep(1.1)  # a pause: no answer at a soft deadline from the typing rhythm
        doc.type("num")  # "ber = 1": a few tokens, well within the deadline
        finished = await doc.complete()
        assert finished is not None and finished.items[0].insert_text == "ber = 1"
    progressive, joined, cache, model = answers(db)
    for row in (progressive, joined, model):
        assert row["source"] == "model" and row["model_id"] == "fake"
        assert row["latency_first_ms"] is not None and row["latency_first_ms"] > 0
        assert {"context", "prefill", "decode"} <= set(row["stages"]), row
        assert row["generated_tokens"] > 0
    assert progressive["stop_reason"] == "progressive"
    assert joined["stop_reason"] in ("progressive", "stop", "length", "eos")  # finished by then, or not
    assert model["stop_reason"] == "stop"
    assert cache["source"] == "cache" and cache["stop_reason"] == "cache"
    assert cache["latency_first_ms"] is None and cache["generated_tokens"] == 0
    assert not {"context", "prefill", "decode"} & set(cache["stages"])


class OpenAIStub(BaseHTTPRequestHandler):
    """A remote OpenAI-compatible server that names its model and streams a fixed completion."""

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            self._json({"object": "list", "data": [{"id": "/srv/models/tiny-coder.Q4_K_M.gguf"}]})
        else:
            self.send_error(404)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path != "/v1/completions":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        for text, finish in (("ius", None), (" * 2\n", "stop")):
            chunk = {
                "object": "text_completion",
                "choices": [{"text": text, "index": 0, "finish_reason": finish}],
            }
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")

    def _json(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


async def model_known(client: Any) -> str:
    """The model's name once the server knows it (bounded: a model loads in seconds)."""
    for _ in range(150):
        status = await client.protocol.send_request_async("opportune/status", {})
        if status.model:
            return str(status.model)
        await asyncio.sleep(0.2)
    raise AssertionError("the model never loaded")


@contextmanager
def remote_endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), OpenAIStub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_a_store_with_a_slow_model_load_and_a_remote_arm_reports_only_true_model_names(
    tmp_path: Path,
) -> None:
    db = tmp_path / "t.db"
    with remote_endpoint() as url:
        options = {"completion": {"prewarm": False, "deadlineMs": 5000}, "model": {"endpoint": url}}
        async with lsp_session(db, "openai", options) as client:
            await model_known(client)
            doc = TypedDocument(client, "file:///p/remote.py", "def area(radius):\n    return rad")
            doc.type("  ")
            doc.type("x = rad")
            remote = await doc.complete(invoked=True)
            assert remote is not None and remote.items[0].insert_text == "ius * 2"
    async with lsp_session(db, "llama", {"completion": {"prewarm": False}}) as client:
        # Opened while the model is still loading (it loads after `initialized`, off the loop).
        doc = TypedDocument(
            client, "file:///p/geometry.py", "import math\n\n\ndef area(radius):\n    return "
        )
        doc.type("m")
        assert await model_known(client) == "gemma-3-270m"
        doc.type("a")
        await doc.complete(invoked=True)
    con = sqlite3.connect(db)
    opened = dict(con.execute("select document_hash, model_id from edit where edit_kind = 'open'").fetchall())
    assert UNKNOWN_MODEL in opened.values()  # the local document, opened while the model loaded
    names = {
        row[0]
        for table in ("opportunity", "attempt", "response", "shown")
        for row in con.execute(f"select model_id from {table}")
    }
    assert names <= {UNKNOWN_MODEL, "gemma-3-270m", "tiny-coder.q4_k_m"}, names
    assert not names & {"llama", "openai", "llama-server", "fake"}
    rows = summarise(open_events([db]), by=["model"])
    assert [r.group["model_id"] for r in rows] == ["gemma-3-270m", "tiny-coder.q4_k_m"]
    local = rows[0].funnel
    assert local.opportunities == 1  # the one typed after the model was known
    assert rows[1].funnel.shown == 1
