"""`opportune/nextEdit` and its code actions end to end: the real server over stdio, a real workspace on disk,
real SQLite telemetry (the fake model: next edits from structure never call it)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from lsp_client import ROOT, send_raw, serve_command
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import client_capabilities
from pytest_lsp.client import make_test_lsp_client

pytestmark = pytest.mark.e2e

GEO = "def area(w, h):\n    return w * h\n\n\ndef main(depth):\n    x = area(1, 2)\n    return area(x, 3)\n"
USER = "from geo import area\n\nprint(area(4, 5))\n"


class Editor:
    """Open documents kept in step with the server, as an editor does (versions, incremental changes)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.docs: dict[str, tuple[str, int]] = {}
        self.refuse_applies = False

    def open(self, uri: str, text: str) -> None:
        self.docs[uri] = (text, 1)
        self.client.text_document_did_open(
            types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, "python", 1, text))
        )

    def replace(self, uri: str, old: str, new: str, nth: int = 0) -> None:
        text = self.docs[uri][0]
        at = -1
        for _ in range(nth + 1):
            at = text.index(old, at + 1)
        self.edit(uri, at, at + len(old), new)

    def edit(self, uri: str, start: int, end: int, new: str) -> None:
        text, version = self.docs[uri]
        a, b = self.position(text, start), self.position(text, end)
        text = text[:start] + new + text[end:]
        self.docs[uri] = (text, version + 1)
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                types.VersionedTextDocumentIdentifier(version=version + 1, uri=uri),
                [types.TextDocumentContentChangePartial(range=types.Range(a, b), text=new)],
            )
        )

    @staticmethod
    def position(text: str, offset: int) -> types.Position:
        line = text.count("\n", 0, offset)
        return types.Position(line, offset - (text.rfind("\n", 0, offset) + 1))

    @staticmethod
    def offset(text: str, p: Any) -> int:
        lines = text.split("\n")
        return sum(len(x) + 1 for x in lines[: p["line"] if isinstance(p, dict) else p.line]) + (
            p["character"] if isinstance(p, dict) else p.character
        )

    def apply(self, uri: str, range_: Any, text: str) -> None:
        doc = self.docs[uri][0]
        start = self.offset(doc, range_["start"] if isinstance(range_, dict) else range_.start)
        end = self.offset(doc, range_["end"] if isinstance(range_, dict) else range_.end)
        self.edit(uri, start, end, text)


async def start(tmp_path: Path, options: dict[str, Any] | None = None) -> tuple[Any, Editor]:
    client = make_test_lsp_client()
    editor = Editor(client)

    @client.feature(types.WORKSPACE_APPLY_EDIT)
    def apply_edit(params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
        if editor.refuse_applies:
            return types.ApplyWorkspaceEditResult(applied=False, failure_reason="refused by the test")
        for change in params.edit.document_changes or []:
            assert isinstance(change, types.TextDocumentEdit)
            uri, version = change.text_document.uri, change.text_document.version
            if uri in editor.docs and version != editor.docs[uri][1]:
                return types.ApplyWorkspaceEditResult(applied=False, failure_reason="version mismatch")
            for edit in change.edits:
                editor.apply(uri, edit.range, edit.new_text)
        return types.ApplyWorkspaceEditResult(applied=True)

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    await client.start_io(*serve_command(tmp_path / "t.db", "fake"), env=env, cwd=str(ROOT))
    await client.initialize_session(
        types.InitializeParams(
            capabilities=client_capabilities("visual-studio-code"),
            root_uri=(tmp_path / "ws").as_uri(),
            initialization_options={
                "telemetry": {"flushIntervalS": 0.1},
                "completion": {"prewarm": False},
                **(options or {}),
            },
        )
    )
    return client, editor


async def next_edits(client: Any, uri: str, line: int = 0, character: int = 0) -> dict[str, Any]:
    return await client.protocol.send_request_async(
        "opportune/nextEdit",
        {
            "textDocument": {"uri": uri},
            "position": {"line": line, "character": character},
            "context": {"triggerKind": 1},
        },
    )


def as_dict(result: Any) -> dict[str, Any]:
    if hasattr(result, "_asdict"):
        return {k: as_dict(v) for k, v in result._asdict().items()}
    if isinstance(result, list):
        return [as_dict(v) for v in result]  # type: ignore[return-value]
    return result


def workspace(tmp_path: Path) -> tuple[str, str, Path]:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "geo.py").write_text(GEO)
    (ws / "user.py").write_text(USER)
    (ws / "lib").mkdir()
    (ws / "lib" / "more.py").write_text("from geo import area\n\nTOTAL = area(7, 8)\n")
    outside = tmp_path / "outside.py"
    outside.write_text("from geo import area\narea(0, 0)\n")
    (ws / "link.py").symlink_to(outside)  # leaves the workspace: never read
    return (ws / "geo.py").as_uri(), (ws / "user.py").as_uri(), ws


async def test_a_signature_change_offers_call_site_edits_in_open_and_workspace_files_and_accepting_applies_them(
    tmp_path: Path,
) -> None:
    geo, user, ws = workspace(tmp_path)
    client, editor = await start(tmp_path)
    try:
        editor.open(geo, GEO)
        editor.open(user, USER)
        await asyncio.sleep(0.5)  # the workspace index is built in the background
        editor.replace(geo, "w, h", "w, h, depth")
        result = as_dict(await next_edits(client, geo, 0, 17))
        edits = result["edits"]
        by_uri: dict[str, list[dict[str, Any]]] = {}
        for e in edits:
            by_uri.setdefault(e["textDocument"]["uri"], []).append(e)
        assert sorted(e["newText"] for e in by_uri[geo]) == [", depth", ", depth"]
        assert [e["newText"] for e in by_uri[user]] == [", ${1:depth}"]
        assert by_uri[user][0]["insertTextFormat"] == 2 and by_uri[user][0]["plainText"] == ", depth"
        more = (ws / "lib" / "more.py").as_uri()
        assert [e["textDocument"]["version"] for e in by_uri[more]] == [None]
        assert not any("outside" in uri or "link.py" in uri for uri in by_uri)
        assert all(e["command"]["command"] == "opportune.acceptNextEdit" for e in edits)

        # The client applies one itself, then runs the command: accepted once, never twice.
        first = by_uri[geo][0]
        editor.apply(geo, first["range"], first["newText"])
        accepted = as_dict(
            await client.workspace_execute_command_async(
                types.ExecuteCommandParams("opportune.acceptNextEdit", [first["id"]])
            )
        )
        assert accepted == {"accepted": True, "reason": ""}
        again = as_dict(
            await client.workspace_execute_command_async(
                types.ExecuteCommandParams("opportune.acceptNextEdit", [first["id"]])
            )
        )
        assert again["accepted"] is False and "already applied" in again["reason"]

        # The other edit in geo.py was made for an older version: refused as stale, with the reason.
        second = by_uri[geo][1]
        stale = as_dict(
            await client.workspace_execute_command_async(
                types.ExecuteCommandParams("opportune.acceptNextEdit", [second["id"]])
            )
        )
        assert stale["accepted"] is False and stale["reason"].startswith("stale:")

        # Asking again offers only what is left, and the server applies it when the client runs the command.
        result = as_dict(await next_edits(client, geo))
        left_geo = [e for e in result["edits"] if e["textDocument"]["uri"] == geo]
        assert len(left_geo) == 1 and left_geo[0]["id"] == second["id"]
        done = as_dict(
            await client.workspace_execute_command_async(
                types.ExecuteCommandParams("opportune.acceptNextEdit", [second["id"]])
            )
        )
        assert done == {"accepted": True, "reason": ""}
        await asyncio.sleep(0.2)
        assert editor.docs[geo][0].count("area(") == 3 and editor.docs[geo][0].count(", depth)") == 3

        # Code actions carry the same edits, versioned, kind refactor.rewrite.
        # (raw: the typed client would read a CodeAction with a command as a Command)
        actions = await send_raw(
            client,
            {
                "jsonrpc": "2.0",
                "id": 9001,
                "method": "textDocument/codeAction",
                "params": {
                    "textDocument": {"uri": user},
                    "range": {"start": {"line": 2, "character": 0}, "end": {"line": 2, "character": 0}},
                    "context": {"diagnostics": []},
                },
            },
        )
        actions = as_dict(actions)
        assert len(actions) == 1
        action = actions[0]
        assert action["kind"] == "refactor.rewrite" and "area(w, h, depth)" in action["title"]
        change = action["edit"]["documentChanges"][0]
        assert change["textDocument"] == {"uri": user, "version": 1}
        assert change["edits"][0]["newText"] == ", depth"
        assert action["command"]["command"] == "opportune.acceptNextEdit"
    finally:
        await client.shutdown_session()
        await client.stop()
    db = sqlite3.connect(tmp_path / "t.db")
    assert db.execute("select count(*), max(change_kind) from edit_opportunity").fetchone() == (
        1,
        "add_parameter",
    )
    assert db.execute("select count(distinct next_edit_id) from next_edit").fetchone()[0] == 4
    rows = db.execute(
        "select outcome, chars_changed, inferred from next_edit_outcome where outcome = 'accepted'"
    ).fetchall()
    assert sorted(rows) == [("accepted", 7, 0), ("accepted", 7, 0)]


async def test_a_rename_to_an_existing_name_is_refused_with_a_reason_and_edits_in_huge_files_stay_quiet(
    tmp_path: Path,
) -> None:
    geo, _, _ = workspace(tmp_path)
    client, editor = await start(tmp_path, {"nextEdit": {"maxDocumentKb": 64}})
    try:
        text = "def f(a, b):\n    return a + b\n\nf(1, 2)\n"
        editor.open(geo, text)
        editor.replace(geo, "a", "b")
        result = as_dict(await next_edits(client, geo))
        assert result["edits"] == [] and "already used" in result["reason"]
        huge_uri = geo.replace("geo.py", "huge.py")
        huge = GEO + "x = 1\n" * 20000
        editor.open(huge_uri, huge)
        editor.replace(huge_uri, "w, h", "w, h, depth")
        result = as_dict(await next_edits(client, huge_uri))
        assert result["edits"] == [] and "too large" in result["reason"]
        with pytest.raises(JsonRpcException):
            await client.protocol.send_request_async("opportune/nextEdit", {"textDocument": {"uri": geo}})
    finally:
        await client.shutdown_session()
        await client.stop()


async def test_next_edits_off_for_an_arm_still_count_the_opportunity(tmp_path: Path) -> None:
    geo, _, _ = workspace(tmp_path)
    client, editor = await start(tmp_path, {"nextEdit": {"enabled": False}})
    try:
        editor.open(geo, GEO)
        editor.replace(geo, "def area", "def area_of")
        result = as_dict(await next_edits(client, geo))
        assert result["edits"] == [] and "off" in result["reason"]
    finally:
        await client.shutdown_session()
        await client.stop()
    db = sqlite3.connect(tmp_path / "t.db")
    assert db.execute("select count(*) from edit_opportunity").fetchone()[0] == 1
    assert db.execute("select count(*) from next_edit").fetchone()[0] == 0


async def test_a_next_edit_request_is_cancelled_like_a_completion_and_broken_code_mid_edit_is_harmless(
    tmp_path: Path,
) -> None:
    geo, _, _ = workspace(tmp_path)
    client, editor = await start(tmp_path)
    try:
        editor.open(geo, GEO)
        # Mid-edit: the parameter list does not parse yet; the server answers, with nothing.
        editor.replace(geo, "w, h", "w, h, (")
        result = as_dict(await next_edits(client, geo))
        assert result["edits"] == []
        editor.replace(geo, "w, h, (", "w, h, depth")
        # Cancelled at once: the client gets the cancellation (or the answer, if it was faster), and the
        # server goes on answering.
        fut = asyncio.ensure_future(next_edits(client, geo))
        await asyncio.sleep(0)
        for msg_id in list(client.protocol._request_futures):
            client.protocol.notify("$/cancelRequest", types.CancelParams(id=msg_id))
        with pytest.raises((JsonRpcException, asyncio.CancelledError)):
            outcome = await fut
            if outcome is not None:  # answered before the cancel arrived: still a valid answer
                raise asyncio.CancelledError
        result = as_dict(await next_edits(client, geo))
        assert len(result["edits"]) == 4  # two calls here, one in each workspace file
    finally:
        await client.shutdown_session()
        await client.stop()
