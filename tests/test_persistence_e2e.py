"""Persistence end to end: `opportune serve` with the real embedded model, pytest-lsp as the client.

One accepted suggestion is kept, another deleted: the store says ~1 and 0 at every (short) checkpoint.  A
SIGKILL before a checkpoint leaves it unknown (derived from the tracking row), never lost or counted 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from lsp_client import ROOT, TypedDocument, lsp_session, serve_command
from lsprotocol import types
from pytest_lsp import client_capabilities
from pytest_lsp.client import make_test_lsp_client

from opportune.telemetry.persistence import GRACE_S, checkpoint_table
from opportune.telemetry.report import load_report
from opportune.telemetry.store import open_events

pytestmark = pytest.mark.e2e

SOURCE = (
    "import math\n\n\ndef circle_area(radius):\n    return math.pi * radius * radius\n\n\n"
    "def square_area(side):\n    return"
)


def delete_tail(doc: TypedDocument, n: int) -> None:
    """Delete the last ``n`` characters in one edit, as an editor reports a selection deleted."""
    end = doc.end
    doc.text = doc.text[:-n]
    start = doc.end
    doc.version += 1
    doc.client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            types.VersionedTextDocumentIdentifier(version=doc.version, uri=doc.uri),
            [types.TextDocumentContentChangePartial(range=types.Range(start, end), text="")],
        )
    )


async def accept_here(doc: TypedDocument) -> tuple[str, str]:
    """Ask for a suggestion at the end, insert it as the editor does, run its accept command."""
    for _ in range(3):
        await asyncio.sleep(0.5)  # a pause: the model answers
        result = await doc.complete(invoked=True)
        items = result.items if result else []
        if items and isinstance(items[0].insert_text, str) and items[0].insert_text.strip():
            item = items[0]
            break
        doc.type(" ")
    else:
        pytest.fail("the model suggested nothing three times")
    text = str(item.insert_text)
    assert item.command is not None and item.command.arguments
    completion_id = str(item.command.arguments[0])
    doc.type(text)
    await doc.client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="opportune.accept", arguments=[completion_id])
    )
    return completion_id, text


def options(checkpoints: list[float], **telemetry: Any) -> dict[str, Any]:
    return {
        "telemetry": {"flushIntervalS": 0.2, "persistenceCheckpointsS": checkpoints, **telemetry},
        "completion": {"deadlineMs": 3000},
    }


async def test_a_kept_suggestion_persists_and_a_deleted_one_does_not(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    async with lsp_session(db, "llama", options([1.0, 2.0])) as client:
        doc = TypedDocument(client, "file:///project/geometry.py", SOURCE)
        await asyncio.sleep(1.5)  # the model loads and pre-warms
        doc.type(" ")
        kept_id, _ = await accept_here(doc)
        doc.type("\n\n\ndef cube_volume(side):\n    return ")
        gone_id, gone_text = await accept_here(doc)
        delete_tail(doc, len(gone_text))
        await asyncio.sleep(3.0)  # past the last checkpoint
    table = checkpoint_table(open_events([db]))
    fractions = {
        (row.completion_id, row.checkpoint_s): row.fraction
        for row in table.itertuples()
        if row.status == "measured"
    }
    print("persistence:", fractions)
    assert set(fractions) == {(kept_id, 1.0), (kept_id, 2.0), (gone_id, 1.0), (gone_id, 2.0)}
    assert fractions[(kept_id, 1.0)] >= 0.95 and fractions[(kept_id, 2.0)] >= 0.95
    assert fractions[(gone_id, 1.0)] == 0.0 and fractions[(gone_id, 2.0)] == 0.0
    report = load_report([db])
    (group,) = report["groups"]
    assert 0.3 < group["follow_up"]["persistence"] < 0.8  # one kept, one gone (by their lengths)
    assert group["follow_up"]["keystrokes_saved_per_opportunity"] > 0


async def test_sigkill_before_a_checkpoint_leaves_it_unknown_not_lost(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    client = make_test_lsp_client()
    await client.start_io(
        *serve_command(db, "llama"), env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=str(ROOT)
    )
    try:
        await client.initialize_session(
            types.InitializeParams(
                capabilities=client_capabilities("visual-studio-code"),
                initialization_options=options([1.0, 300.0]),
                client_info=types.ClientInfo(name="pytest-lsp"),
            )
        )
        doc = TypedDocument(client, "file:///project/geometry.py", SOURCE)
        await asyncio.sleep(1.5)
        doc.type(" ")
        completion_id, _ = await accept_here(doc)
        await asyncio.sleep(1.8)  # the 1 s checkpoint is measured and flushed; 300 s is far off
        process = client._server
        assert process is not None
        process.send_signal(signal.SIGKILL)  # no shutdown: nothing more is written
        await process.wait()
        killed_at = time.time()
        assert process.returncode == -signal.SIGKILL
    finally:
        await client.stop()
    frames = open_events([db])
    right_after = checkpoint_table(frames, now=killed_at)
    statuses = dict(zip(right_after["checkpoint_s"], right_after["status"], strict=True))
    assert statuses == {1.0: "measured", 300.0: "pending"}  # it may still come, as far as anyone knows
    later = checkpoint_table(frames, now=killed_at + 300 + GRACE_S + 1)
    rows = {
        r.checkpoint_s: (r.status, r.reason) for r in later.itertuples() if r.completion_id == completion_id
    }
    assert rows == {1.0: ("measured", ""), 300.0: ("unknown", "stopped")}
