"""Model failures through the real server and the real llama.cpp: a missing model file, a file with a GGUF
header and junk after it, and a truncated copy of the embedded model.  Each must leave the server answering
(empty results, no JSON-RPC errors), tell the user once through window/showMessage, and recover when the
settings point at a good model (workspace/didChangeConfiguration), with the next completion working."""

from __future__ import annotations

import asyncio
import random
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.fuzz_server import RawServer, end_position, raw_session

pytestmark = pytest.mark.e2e

TEXT = (
    "def circle_area(radius):\n    return 3.14159 * radius * radius\n\n\ndef square_area(side):\n    return "
)


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "no-such-model.gguf"


def _junk(tmp_path: Path) -> Path:
    """A GGUF magic and version, then absurd counts and random bytes: what a broken download looks like."""
    path = tmp_path / "junk.gguf"
    rng = random.Random(7)
    header = b"GGUF" + struct.pack("<IQQ", 3, 2**40, 2**40)
    path.write_bytes(header + bytes(rng.getrandbits(8) for _ in range(1 << 20)))
    return path


def _truncated(tmp_path: Path) -> Path:
    """The first third of the real embedded model: a valid header whose tensors run past the end."""
    from opportune.server.models import default_model_path

    source = default_model_path(progress=False)
    path = tmp_path / "truncated.gguf"
    with source.open("rb") as f:
        path.write_bytes(f.read(source.stat().st_size // 3))
    return path


async def _type_and_complete(server: RawServer, uri: str, text: str, chars: str, version: int) -> list[dict]:
    """Type ``chars`` one by one, asking for an invoked completion after each; the responses."""
    responses = []
    for ch in chars:
        at = end_position(text)
        text += ch
        version += 1
        await server.insert(uri, version, at, ch)
        response = await server.complete(uri, end_position(text), invoked=True, timeout=10)
        responses.append(response.message)
    return responses


async def _first_suggestion(server: RawServer, uri: str, text: str, version: int, seconds: float = 30) -> str:
    """Type on (a key every 0.3 s, a completion after each) until a suggestion comes: the model is loaded
    on first use after a settings change.  A response that never comes counts as none here (responses
    lost while a model loads are test_reliability_protocol's business)."""
    deadline = time.monotonic() + seconds
    for ch in " * side + side * 2 + side * 3 + side * 4 + side * 5 + side":
        if time.monotonic() > deadline:
            break
        at = end_position(text)
        text += ch
        version += 1
        await server.insert(uri, version, at, ch)
        try:
            response = await server.complete(uri, end_position(text), invoked=True, timeout=5)
        except TimeoutError:
            continue
        items = (response.message.get("result") or {}).get("items") or []
        if items and items[0]["insertText"].strip():
            return str(items[0]["insertText"])
        await asyncio.sleep(0.3)
    return ""


@pytest.mark.parametrize("bad_model", [_missing, _junk, _truncated], ids=["missing", "junk", "truncated"])
async def test_a_broken_model_is_reported_once_and_replaced_by_a_good_one(
    tmp_path: Path, bad_model: Callable[[Path], Path]
) -> None:
    from opportune.server.models import default_model_path

    bad = bad_model(tmp_path)
    good = default_model_path(progress=False)
    options = {"model": {"path": str(bad)}, "completion": {"prewarm": False}}
    async with raw_session(tmp_path / "t.db", backend="llama", options=options) as server:
        uri = "file:///p/shapes.py"
        await server.open(uri, TEXT)
        await asyncio.sleep(1.0)  # the load fails (or is still failing) in the background
        broken = await _type_and_complete(server, uri, TEXT, "side", 1)
        assert server.returncode is None, "the server died on a broken model"
        for message in broken:
            assert "error" not in message, f"a completion answered with an error: {message}"
            result = message.get("result")
            assert not (result or {}).get("items"), f"a suggestion from a model that did not load: {result}"
        # Checked at the end, so that a failure here does not hide whether recovery works.
        told = [m for m in server.shown_messages if bad.name in str(m.get("message", ""))]

        await server.notify(
            "workspace/didChangeConfiguration", {"settings": {"opportune": {"model": {"path": str(good)}}}}
        )
        suggestion = await _first_suggestion(server, uri, TEXT + "side", 5)
        assert suggestion, "no suggestion within 30 s of pointing the settings at a good model"
        assert server.returncode is None
    assert len(told) == 1, f"the user was told {len(told)} times: {[m.get('message') for m in told]}"


async def test_a_settings_change_to_a_broken_model_is_told_at_once(tmp_path: Path) -> None:
    """The new model is loaded when the settings change, not at the next keystroke: the user hears of a
    bad path while looking at the settings, without typing.  Bad values for setEnabled are refused."""
    async with raw_session(
        tmp_path / "t.db", backend="llama", options={"completion": {"prewarm": False}}
    ) as server:
        await server.request("opportune/status", {}, timeout=60)
        missing = tmp_path / "typo-in-the-path.gguf"
        await server.notify(
            "workspace/didChangeConfiguration", {"settings": {"opportune": {"model": {"path": str(missing)}}}}
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(missing.name in str(m) for m in server.shown_messages):
            await asyncio.sleep(0.1)
        assert any(missing.name in str(m.get("message")) for m in server.shown_messages), (
            server.shown_messages
        )
        refused = await server.request("opportune/setEnabled", {"enabled": "false"})
        assert refused.message["error"]["code"] == -32602
        status = await server.request("opportune/status", {})
        assert status.message["result"]["enabled"] is True
