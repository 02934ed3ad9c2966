"""Opportune's own LSP methods, defined once: names, params and results as typed classes.

The editors speak this protocol besides LSP (see shared/DESIGN.md §3): notifications of what became of a
suggestion, the accept command every item carries, and a few requests for the status bar and the report.
Each class is a frozen dataclass whose fields are the JSON object's keys in snake_case (camelCase on the
wire, as in lsprotocol); the docstring under a field documents it for every side.  ``structure`` checks a
message's params on arrival (a missing or mistyped field is a ``ProtocolError``, which the LSP layer
answers with InvalidParams); ``unstructure`` turns a result into JSON.

The editors' copies are generated from this module (``python scripts/sync_editors.py``):
``editors/vscode/src/protocol.ts`` and ``editors/nvim/lua/opportune/protocol.lua``; a test fails when they
differ from what it would write.  A new method is a params class, a result class for a request, and a
line in ``METHODS`` (fields may be str, int, float, bool, Literal, optional, dict, list and nested
dataclasses).

Pure Python: no pygls or lsprotocol here (only ``opportune.server.lsp`` knows them).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin

ACCEPT_COMMAND = "opportune.accept"
"""The command every inline completion item carries, with the completion id as its only argument.  A
client that runs it on accept (VS Code does) reports the acceptance with no code of its own."""

RejectReason = Literal["dismissed", "typed_over", "superseded", "other"]
"""Why a suggestion on screen went away without being accepted."""


class ProtocolError(ValueError):
    """A message's params do not match their class (the LSP layer answers InvalidParams)."""


# --- params and results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DidShowCompletionParams:
    """``opportune/didShowCompletion``: the ghost text became visible."""

    id: str
    """The completion id (the argument of the item's ``opportune.accept`` command)."""


@dataclass(frozen=True)
class DidPartiallyAcceptCompletionParams:
    """``opportune/didPartiallyAcceptCompletion``: a word or line of the suggestion was accepted."""

    id: str
    """The completion id."""
    accepted_length: int = field(metadata={"minimum": 0})
    """Characters of ``insertText`` accepted so far (cumulative, not the last step)."""


@dataclass(frozen=True)
class DidRejectCompletionParams:
    """``opportune/didRejectCompletion``: the suggestion went away without being accepted."""

    id: str
    """The completion id."""
    reason: RejectReason = field(default="dismissed", metadata={"open": True})
    """Why: dismissed, typed over, superseded by another suggestion, or other.  The server takes any
    string (a newer client may know more reasons); clients send one of these."""


@dataclass(frozen=True)
class StatusParams:
    """``opportune/status``: the server's state, for the editor's status bar (no parameters)."""


@dataclass(frozen=True)
class StatusResult:
    """The answer to ``opportune/status``: what the editor's status bar shows."""

    enabled: bool
    """Completions are on."""
    experiment: str
    """The experiment running, or empty."""
    arm: str
    """This install's arm in it, or empty."""
    model: str
    """The model answering (a GGUF's name or a remote model id)."""
    last_latency_ms: float | None
    """Latency of the last suggestion returned, if any."""
    busy: bool
    """The model is loading or generating."""


@dataclass(frozen=True)
class SetEnabledParams:
    """``opportune/setEnabled``: switch completions on or off without stopping the server."""

    enabled: bool = True
    """On (true) or off (false)."""


@dataclass(frozen=True)
class SetEnabledResult:
    """The answer to ``opportune/setEnabled``."""

    enabled: bool
    """The state now in force."""


@dataclass(frozen=True)
class ReportParams:
    """``opportune/report``: the CPO report of the server's telemetry store."""

    since: str = "1d"
    """A look-back window such as "1d" or "7d", or an ISO date."""


@dataclass(frozen=True)
class ReportResult:
    """The answer to ``opportune/report``."""

    text: str
    """The report for people (what ``opportune report`` prints)."""
    data: dict[str, Any]
    """The same numbers for machines (what ``opportune report --json`` prints)."""


@dataclass(frozen=True)
class TextDocumentRef:
    """A document by URI."""

    uri: str
    """The document's URI."""


@dataclass(frozen=True)
class LinePosition:
    """A zero-based line and UTF-16 column, as LSP counts them."""

    line: int = field(metadata={"minimum": 0})
    """Zero-based line."""
    character: int = field(metadata={"minimum": 0})
    """Zero-based UTF-16 column."""


@dataclass(frozen=True)
class NextEditParams:
    """``opportune/nextEdit``: the edits that follow from the one just made (the params of
    ``textDocument/inlineCompletion``)."""

    text_document: TextDocumentRef
    """The document the cursor is in."""
    position: LinePosition
    """The cursor."""
    context: dict[str, Any] | None = None
    """The inline completion context (trigger kind); not used yet."""


@dataclass(frozen=True)
class NextEditResult:
    """The answer to ``opportune/nextEdit`` (the shape of each edit: ``server/nextedit/protocol.py``)."""

    edits: list[dict[str, Any]]
    """Edits: id, textDocument {uri, version}, range, newText, plainText, insertTextFormat, kind, title,
    command (``opportune.acceptNextEdit`` with the edit id)."""
    reason: str
    """Why there are none, for people."""


@dataclass(frozen=True)
class DidRejectNextEditParams:
    """``opportune/didRejectNextEdit``: a next edit was dismissed."""

    id: str
    """The next edit's id."""
    reason: RejectReason = field(default="dismissed", metadata={"open": True})
    """Why, as for completions."""


# --- methods -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    """One custom method: its name, whether it is answered, and its params and result classes."""

    name: str
    kind: Literal["request", "notification"]
    params: type
    result: type | None = None


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("opportune/didShowCompletion", "notification", DidShowCompletionParams),
        Method("opportune/didPartiallyAcceptCompletion", "notification", DidPartiallyAcceptCompletionParams),
        Method("opportune/didRejectCompletion", "notification", DidRejectCompletionParams),
        Method("opportune/status", "request", StatusParams, StatusResult),
        Method("opportune/setEnabled", "request", SetEnabledParams, SetEnabledResult),
        Method("opportune/report", "request", ReportParams, ReportResult),
        Method("opportune/nextEdit", "request", NextEditParams, NextEditResult),
        Method("opportune/didRejectNextEdit", "notification", DidRejectNextEditParams),
    )
}


def accept_argument(arguments: typing.Sequence[Any]) -> str:
    """The completion id from the arguments of ``opportune.accept`` (its only argument)."""
    if not arguments or not isinstance(arguments[0], str):
        raise ProtocolError(f"{ACCEPT_COMMAND}: expected the completion id (a string) as its argument")
    return arguments[0]


# --- JSON <-> classes ----------------------------------------------------------------------------------


def camel(name: str) -> str:
    """``accepted_length`` -> ``acceptedLength``: the wire name of a field."""
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def structure(cls: type[Any], data: Any, where: str = "params") -> Any:
    """An instance of dataclass ``cls`` from a JSON object; ``ProtocolError`` names the first bad field.

    Unknown keys are ignored (a newer client may send more); a missing key takes the field's default.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ProtocolError(f"{where}: expected an object, got {_json_type(data)}")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = camel(f.name)
        if key not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ProtocolError(f"{where}.{key}: missing")
            continue
        values[f.name] = _check(data[key], hints[f.name], f"{where}.{key}", f.metadata)
    return cls(**values)


def unstructure(value: Any) -> Any:
    """JSON-ready data of a result: dataclasses as objects with camelCase keys."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {camel(f.name): unstructure(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: unstructure(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [unstructure(v) for v in value]
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _check(value: Any, annotation: Any, where: str, metadata: Mapping[str, Any]) -> Any:
    origin = get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        options = get_args(annotation)
        if value is None and type(None) in options:
            return None
        return _check(value, next(a for a in options if a is not type(None)), where, metadata)
    if origin is Literal:
        choices = get_args(annotation)
        if isinstance(value, str) and (value in choices or metadata.get("open")):
            return value
        raise ProtocolError(f"{where}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ProtocolError(f"{where}: expected true or false, got {_json_type(value)} {value!r}")
    if annotation is int or annotation is float:
        whole = isinstance(value, int) or (annotation is float and isinstance(value, float))
        if not whole or isinstance(value, bool):
            kind = "an integer" if annotation is int else "a number"
            raise ProtocolError(f"{where}: expected {kind}, got {_json_type(value)} {value!r}")
        if value < metadata.get("minimum", value):
            raise ProtocolError(f"{where}: must be at least {metadata['minimum']}, got {value}")
        return value
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ProtocolError(f"{where}: expected a string, got {_json_type(value)} {value!r}")
    if origin is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise ProtocolError(f"{where}: expected an object, got {_json_type(value)}")
    if origin is list:
        if not isinstance(value, list):
            raise ProtocolError(f"{where}: expected an array, got {_json_type(value)}")
        (item,) = get_args(annotation)
        return [_check(v, item, f"{where}[{i}]", {}) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        return structure(annotation, value, where)  # a nested object (e.g. a position in a document)
    raise TypeError(f"{where}: no JSON check for {annotation!r}")  # a class in this module needs one
