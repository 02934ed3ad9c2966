"""One definition of the custom protocol and of the settings, on the server; the editors' copies are
generated from it (scripts/sync_editors.py), so a change on one side only fails here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from opportune.server import protocol
from opportune.server.lsp import build_server
from opportune.server.protocol import ProtocolError, structure, unstructure

ROOT = Path(__file__).resolve().parents[1]
EDITORS = ROOT / "editors"
GENERATED = {
    EDITORS / "vscode" / "src" / "protocol.ts",
    EDITORS / "nvim" / "lua" / "opportune" / "protocol.lua",
}


def test_the_editors_copies_are_what_the_server_definitions_generate() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "sync_editors.py"), "--check"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


def _code_lines(path: Path) -> list[tuple[int, str]]:
    """Lines of a TypeScript or Lua file that are not comments."""
    comment = ("--",) if path.suffix == ".lua" else ("//", "*", "/*")
    return [
        (number, line)
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if not line.strip().startswith(comment)
    ]


def test_the_editors_name_the_custom_methods_only_through_the_generated_module() -> None:
    """A method name or the accept command spelled by hand in an editor would drift unseen."""
    literal = re.compile(r"""["'](opportune/\w+|opportune\.accept)["']""")
    sources = [
        *(EDITORS / "vscode" / "src").glob("*.ts"),
        *(EDITORS / "nvim" / "lua").rglob("*.lua"),
        *(EDITORS / "nvim" / "plugin").rglob("*.lua"),
    ]
    assert len(sources) > 10
    spelled = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sources
        if path not in GENERATED
        for number, line in _code_lines(path)
        if literal.search(line)
    ]
    assert spelled == []


def test_the_server_handles_exactly_the_methods_of_the_protocol_module() -> None:
    features = build_server().protocol.fm.features
    handled = {name for name in features if name.startswith("opportune/")}
    assert handled == set(protocol.METHODS)
    assert protocol.ACCEPT_COMMAND in build_server().protocol.fm.commands


def test_params_are_checked_on_arrival() -> None:
    params = structure(protocol.DidPartiallyAcceptCompletionParams, {"id": "c1", "acceptedLength": 4, "x": 1})
    assert params == protocol.DidPartiallyAcceptCompletionParams(id="c1", accepted_length=4)
    bad = [
        (protocol.DidShowCompletionParams, {}, "params.id: missing"),
        (protocol.DidShowCompletionParams, {"id": 7}, "params.id: expected a string"),
        (
            protocol.DidPartiallyAcceptCompletionParams,
            {"id": "c", "acceptedLength": "4"},
            "expected an integer",
        ),
        (
            protocol.DidPartiallyAcceptCompletionParams,
            {"id": "c", "acceptedLength": True},
            "expected an integer",
        ),
        (protocol.DidPartiallyAcceptCompletionParams, {"id": "c", "acceptedLength": -1}, "at least 0"),
        (protocol.SetEnabledParams, {"enabled": "false"}, "expected true or false"),
        (protocol.ReportParams, [], "expected an object"),
    ]
    for cls, data, message in bad:
        with pytest.raises(ProtocolError, match=re.escape(message)):
            structure(cls, data)


def test_optional_params_take_their_defaults_and_open_vocabularies_take_any_string() -> None:
    assert structure(protocol.SetEnabledParams, None) == protocol.SetEnabledParams(enabled=True)
    assert structure(protocol.ReportParams, {}).since == "1d"
    assert structure(protocol.DidRejectCompletionParams, {"id": "c"}).reason == "dismissed"
    assert structure(protocol.DidRejectCompletionParams, {"id": "c", "reason": "newer"}).reason == "newer"


def test_results_go_out_with_camel_case_keys() -> None:
    status = protocol.StatusResult(
        enabled=True, experiment="e", arm="a", model="m", last_latency_ms=None, busy=True
    )
    assert unstructure(status) == {
        "enabled": True,
        "experiment": "e",
        "arm": "a",
        "model": "m",
        "lastLatencyMs": None,
        "busy": True,
    }


@dataclass(frozen=True)
class At:
    line: int


@dataclass(frozen=True)
class Many:
    spots: list[At]


def test_nested_objects_and_lists_are_checked_too() -> None:
    """Room for richer methods (opportune/nextEdit takes a document and a position, answers a list)."""
    assert structure(Many, {"spots": [{"line": 1}, {"line": 2}]}) == Many(spots=[At(1), At(2)])
    with pytest.raises(ProtocolError, match=re.escape("params.spots[1].line: expected an integer")):
        structure(Many, {"spots": [{"line": 1}, {"line": "2"}]})
    with pytest.raises(ProtocolError, match=re.escape("params.spots: expected an array")):
        structure(Many, {"spots": {"line": 1}})
