"""The next-edit protocol, defined once: method and command names and the JSON shapes, typed.

``opportune/nextEdit`` takes the params of ``textDocument/inlineCompletion`` and answers ``NextEditResult``;
running an edit's command (``opportune.acceptNextEdit``, argument: the edit id) answers
``AcceptNextEditResult``; ``opportune/didRejectNextEdit`` reports a dismissed edit.  The editors' copies
(``editors/vscode/src/protocol.ts``, ``editors/nvim/lua/opportune/nextedit.lua``) follow these shapes; when a
project-wide protocol module exists, these move there.
"""

from __future__ import annotations

from typing import Literal, TypedDict

NEXT_EDIT_METHOD = "opportune/nextEdit"
DID_REJECT_NEXT_EDIT_METHOD = "opportune/didRejectNextEdit"
ACCEPT_NEXT_EDIT_COMMAND = "opportune.acceptNextEdit"


class LspPosition(TypedDict):
    line: int
    character: int


class LspRange(TypedDict):
    start: LspPosition
    end: LspPosition


class VersionedDocument(TypedDict):
    uri: str
    version: int | None  # None: a workspace file that is not open


class Command(TypedDict):
    title: str
    command: str
    arguments: list[str]


class NextEditItem(TypedDict):
    id: str
    textDocument: VersionedDocument
    range: LspRange
    newText: str  # may hold snippet placeholders when insertTextFormat is 2
    plainText: str  # newText without placeholders
    insertTextFormat: Literal[1, 2]
    kind: str  # the change: add_parameter, rename_function, rename_parameter, rename, ...
    title: str
    command: Command


class NextEditResult(TypedDict):
    edits: list[NextEditItem]
    reason: str  # why there are none, for people


class AcceptNextEditResult(TypedDict):
    accepted: bool
    reason: str
