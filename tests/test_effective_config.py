"""One configuration in force: settings, experiment arm and digest resolved from the layers into one frozen
value, swapped whole on every change, and carried by every event from then on."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from lsp_client import TypedDocument, lsp_session
from lsprotocol import types

from opportune.server.backends.fake import FakeBackend
from opportune.server.completion import Effective
from opportune.server.session import start_session
from opportune.telemetry import events as ev


class ListStore:
    def __init__(self) -> None:
        self.events: list[ev.Event] = []

    def record(self, event: ev.Event) -> None:
        self.events.append(event)

    def close(self) -> None:
        pass


def experiment(arm: str, max_tokens: int) -> dict[str, Any]:
    return {"experiment": {"name": "exp", "arms": [{"name": arm, "completion": {"maxTokens": max_tokens}}]}}


def test_the_configuration_in_force_is_one_frozen_value() -> None:
    config = Effective()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.arm = "b"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.settings.completion.max_tokens = 3  # type: ignore[misc]


def test_a_configuration_change_swaps_settings_arm_and_digest_together(tmp_path: Path) -> None:
    store = ListStore()
    options = {"completion": {"prewarm": False}, "model": {"backend": "fake"}, **experiment("a", 10)}
    session = start_session(
        options, config_path=tmp_path / "none.toml", backend_factory=lambda _s: FakeBackend(), store=store
    )
    engine = session.engine
    before = session.config
    assert (before.experiment, before.arm, before.settings.completion.max_tokens) == ("exp", "a", 10)
    engine.open("file:///p/a.py", "x = 1\n", "python", 1)
    problems = session.apply_client_settings(experiment("b", 20))
    after = session.config
    assert problems == [] and after is engine.config and session.settings is after.settings
    assert (after.arm, after.settings.completion.max_tokens) == ("b", 20)
    assert after.arm_digest != before.arm_digest
    engine.open("file:///p/b.py", "y = 2\n", "python", 1)
    first, second = (e.common for e in store.events if isinstance(e, ev.Edit))
    assert (first.arm, first.arm_digest) == ("a", before.arm_digest)
    assert (second.arm, second.arm_digest) == ("b", after.arm_digest)
    session.set_enabled(False)
    assert not session.settings.completion.enabled and session.config.arm == "b"
    assert session.config.arm_digest not in (before.arm_digest, after.arm_digest)
    session.close()


@pytest.mark.e2e
async def test_after_did_change_configuration_events_carry_the_arm_and_digest_in_force(
    tmp_path: Path,
) -> None:
    db = tmp_path / "t.db"
    options = {"completion": {"prewarm": False}, **experiment("a", 10)}
    async with lsp_session(db, "fake", options) as client:
        doc = TypedDocument(client, "file:///p/a.py", "abc = 1\nab")
        doc.type("c")
        await doc.complete()
        assert (await client.protocol.send_request_async("opportune/status", {})).arm == "a"
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"opportune": experiment("b", 20)})
        )
        started = time.monotonic()
        while (await client.protocol.send_request_async("opportune/status", {})).arm != "b":
            assert time.monotonic() - started < 10, "the arm never changed"
            await asyncio.sleep(0.05)
        doc.type("\nab")
        doc.type("c")
        await doc.complete()
    rows = sqlite3.connect(db).execute("select arm, arm_digest from opportunity order by ts").fetchall()
    assert [arm for arm, _ in rows] == ["a", "b"]
    assert rows[0][1] != rows[1][1]
