"""An experiment end to end through `opportune serve`: two installs land in two arms with different
context budgets, each server really applies its arm (different prompt sizes), and every event carries the
experiment, the arm and the digest of the arm's effective settings."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from pathlib import Path

import pytest
from lsp_client import TypedDocument, lsp_session

from opportune.telemetry.assignment import assign_arm

pytestmark = pytest.mark.e2e

ARMS = [
    {"name": "short", "weight": 1, "completion": {"contextTokens": 64}},
    {"name": "long", "weight": 1, "completion": {"contextTokens": 600}},
]


def installs_per_arm() -> dict[str, str]:
    found: dict[str, str] = {}
    for i in itertools.count():
        arm = assign_arm("context-budget", f"install-{i}", [("short", 1.0), ("long", 1.0)])
        found.setdefault(arm, f"install-{i}")
        if len(found) == 2:
            return found
    raise AssertionError("unreachable")


async def test_two_arms_apply_their_context_budgets(tmp_path: Path) -> None:
    source = "".join(f"def helper_{i}(value):\n    return value * {i} + offset_{i}\n\n" for i in range(60))
    for arm, install in installs_per_arm().items():
        options = {
            "experiment": {"name": "context-budget", "arms": ARMS},
            "telemetry": {"installId": install, "flushIntervalS": 0.1},
            "completion": {"prewarm": False},
        }
        async with lsp_session(tmp_path / f"{arm}.db", "fake", options) as client:
            status = await client.protocol.send_request_async("opportune/status", {})
            assert status.arm == arm and status.experiment == "context-budget"
            doc = TypedDocument(client, f"file:///p/{arm}.py", source)
            for ch in "def hel":
                doc.type(ch)
                await doc.complete()
                await asyncio.sleep(0.05)
    rows = {}
    for arm in ("short", "long"):
        db = sqlite3.connect(tmp_path / f"{arm}.db")
        prompt_tokens = [
            r[0] for r in db.execute("select prompt_tokens from response where prompt_tokens > 0")
        ]
        assert prompt_tokens, f"no model prompt recorded for {arm}"
        labels = set(db.execute("select experiment, arm, arm_digest from opportunity"))
        labels |= set(db.execute("select experiment, arm, arm_digest from response"))
        assert len(labels) == 1
        ((experiment, recorded_arm, digest),) = labels
        assert experiment == "context-budget" and recorded_arm == arm and digest
        rows[arm] = (max(prompt_tokens), digest)
    assert rows["short"][0] <= 64 < rows["long"][0]
    assert rows["short"][1] != rows["long"][1]
