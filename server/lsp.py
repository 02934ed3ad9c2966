"""The LSP face of Opportune (pygls 2): capabilities, handlers and notifications, translated to the engine.

This is the only module that knows LSP.  Handlers are thin; every request gets a result or a JSON-RPC
error (a request whose parameters do not deserialize is answered with InvalidParams instead of being
dropped), and nothing that goes wrong here is shown to the user as a pop-up per message.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from lsprotocol import types
from pygls.exceptions import (
    JsonRpcContentModified,
    JsonRpcException,
    JsonRpcInvalidParams,
    JsonRpcInvalidRequest,
)
from pygls.io_ import StdoutWriter
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method
from pygls.uris import to_fs_path

from opportune.server import __version__, protocol
from opportune.server.completion import Engine
from opportune.server.documents import Position
from opportune.server.nextedit.protocol import (
    ACCEPT_NEXT_EDIT_COMMAND,
    DID_REJECT_NEXT_EDIT_METHOD,
    NEXT_EDIT_METHOD,
    AcceptNextEditResult,
    NextEditItem,
    NextEditResult,
)
from opportune.server.nextedit.service import ProposedEdit
from opportune.server.protocol import (
    ACCEPT_COMMAND,
    METHODS,
    ProtocolError,
    accept_argument,
    structure,
    unstructure,
)
from opportune.server.session import Session, start_session
from opportune.server.transport import DEFAULT_MAX_MESSAGE_BYTES, BufferedSource, parse_body, run_frames

log = logging.getLogger(__name__)


class OpportuneProtocol(LanguageServerProtocol):
    def structure_message(self, data: dict[str, Any]) -> Any:
        # json.loads calls this for every object in a message, nested ones too: a request-shaped object
        # inside params must stay data.  The whole message is structured once, in handle_message.
        return data

    def handle_message(self, message: Any) -> None:
        problem = _envelope_problem(message)
        if problem is not None:
            log.warning("dropped a message: %s", problem)
            # JSON-RPC wants a request answered even when malformed, with id null when its id is unusable;
            # but LSP clients cannot match an id-null answer to anything and report it as an error of their
            # own (pygls raises, Neovim logs NO_RESULT_CALLBACK_FOUND), so only a usable id is answered.
            request = isinstance(message, dict) and "result" not in message and "error" not in message
            if request and _valid_id(message.get("id")):
                self._send_response(message["id"], error=JsonRpcInvalidRequest(problem).to_response_error())
            return
        is_request = "id" in message and "method" in message
        if is_request and self._shutdown and message["method"] != types.EXIT:
            # After shutdown the spec wants every request answered with InvalidRequest; pygls drops them.
            refusal = JsonRpcInvalidRequest("the server is shutting down")
            self._send_response(message["id"], error=refusal.to_response_error())
            return
        ours = METHODS.get(message["method"]) if "method" in message else None
        if is_request:
            kind = self.get_message_type(message["method"])
            notification = (
                ours.kind == "notification" if ours else bool(kind and kind.__name__.endswith("Notification"))
            )
            if notification:
                # A notification method sent as a request: pygls would run it and never answer.
                self._send_response(message["id"], error=JsonRpcInvalidRequest().to_response_error())
                return
        if ours is not None:
            # Our own methods: params checked against their class on arrival, handed to the handler typed.
            try:
                message = {**message, "params": structure(ours.params, message.get("params"))}
            except ProtocolError as e:
                if is_request:
                    self._send_response(message["id"], error=JsonRpcInvalidParams(str(e)).to_response_error())
                else:
                    log.warning("dropped %s: %s", ours.name, e)
                return
        try:
            typed = super().structure_message(message)
        except JsonRpcException as e:
            if is_request:
                # pygls would log this and never answer; the client would wait for ever.
                error = e if isinstance(e, JsonRpcInvalidParams) else JsonRpcInvalidParams()
                self._send_response(message["id"], error=error.to_response_error())
            else:
                log.warning("dropped a malformed %s message", message.get("method", "response"))
            return
        super().handle_message(typed)

    # The engine keeps its own copy of each document.  pygls's built-in text sync would keep a second one,
    # rebuilt in O(document) on every keystroke, and clamp out-of-range positions *in the params* before
    # the engine sees them (a change past the end of the last line landed one character early).
    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams) -> Iterator[Any]:
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_OPEN)) is not None:
            yield handler, (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams) -> Iterator[Any]:
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_CHANGE)) is not None:
            yield handler, (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams) -> Iterator[Any]:
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_CLOSE)) is not None:
            yield handler, (params,), None

    def _execute_handler(
        self, msg_id: Any, handler: Any, callback: Any, args: Any = None, kwargs: Any = None
    ) -> None:
        super()._execute_handler(msg_id, handler, callback, args, kwargs)
        # pygls files the future of every async or generator handler under msg_id, and only a request's
        # answer takes it out again: a notification's (every didChange) stayed for ever (~2 KB a keystroke).
        future = self._request_futures.get(msg_id)
        if future is not None:
            futures = self._request_futures
            loop = asyncio.get_running_loop()

            def forget(done: Any, key: Any = msg_id) -> None:
                def drop() -> None:
                    if futures.get(key) is done:
                        futures.pop(key, None)

                # Later, on the loop: pygls's shutdown cancels pending futures while iterating this dict,
                # and a concurrent Future (a generator handler's) runs its callbacks inside cancel().
                try:
                    loop.call_soon_threadsafe(drop)
                except RuntimeError:  # the loop is closed: nothing iterates the dict any more
                    drop()

            future.add_done_callback(forget)


def _threaded_reader(stream: BinaryIO) -> Callable[[int], Awaitable[bytes]]:
    """Chunks of ``stream`` read on a daemon thread (a blocking read must not keep the process alive at
    exit), at most a few chunks ahead of the loop, so a client writing faster than we read is held back."""
    chunks: asyncio.Queue[bytes | BaseException] | None = None
    started = False

    try:
        fd: int | None = stream.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None  # an in-memory stream (tests)

    def pump(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes | BaseException], size: int) -> None:
        while True:
            try:
                # os.read on the descriptor, not the buffered stream: a daemon thread blocked inside a
                # BufferedReader holds its lock, and the interpreter aborts at exit waiting for it.
                data: bytes | BaseException = os.read(fd, size) if fd is not None else stream.read(size)
            except BaseException as e:  # handed to the loop, which exits non-zero
                data = e
            try:
                asyncio.run_coroutine_threadsafe(queue.put(data), loop).result()
            except (RuntimeError, concurrent.futures.CancelledError):
                return  # the loop is gone
            if not isinstance(data, bytes) or not data:
                return

    async def read_chunk(size: int) -> bytes:
        nonlocal chunks, started
        if chunks is None:
            chunks = asyncio.Queue(maxsize=4)
        if not started:
            started = True
            loop = asyncio.get_running_loop()
            threading.Thread(
                target=pump, args=(loop, chunks, size), name="opportune-stdin", daemon=True
            ).start()
        data = await chunks.get()
        if isinstance(data, BaseException):
            raise data
        return data

    return read_chunk


def _valid_id(rid: Any) -> bool:
    return isinstance(rid, str) or (isinstance(rid, int) and not isinstance(rid, bool))


def _envelope_problem(message: Any) -> str | None:
    """What makes ``message`` no JSON-RPC 2.0 request, notification or response, if anything (pygls would
    fail on these with an internal error, or not answer)."""
    if not isinstance(message, dict):
        return "not a JSON object (batches are not supported)"
    if message.get("jsonrpc") != "2.0":
        return 'jsonrpc must be "2.0"'
    if "id" in message and not _valid_id(message["id"]):
        return "id must be an integer or a string"
    if "method" in message:
        if not isinstance(message["method"], str):
            return "method must be a string"
        if "params" in message and not isinstance(message["params"], dict | list | None):
            return "params must be an object or an array"
    elif "id" not in message or ("result" not in message and "error" not in message):
        return "neither a request, a notification nor a response"
    return None


class OpportuneServer(LanguageServer):
    def __init__(
        self, session_factory: Callable[..., Session], max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    ) -> None:
        super().__init__("opportune", __version__, protocol_cls=OpportuneProtocol)
        self.session_factory = session_factory
        self.session: Session | None = None
        self.max_message_bytes = max_message_bytes
        self.exit_code = 0

    # pygls's own reader loop (pygls.io_.run_async) cannot recover from a bad frame; server.transport can.
    # Both entry points are replaced whole, as pygls offers no hook for the reader.

    def start_io(self, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> None:
        """Serve on stdio; ``exit_code`` is then the process's status (non-zero when the input failed)."""
        self._stop_event = threading.Event()
        self.protocol.set_writer(StdoutWriter(stdout or sys.stdout.buffer))
        read_chunk = _threaded_reader(stdin or sys.stdin.buffer)
        try:
            asyncio.run(self._serve(BufferedSource(read_chunk)))
        except BrokenPipeError:
            log.error("the connection to the client is lost; stopping")
            self.exit_code = 1
        except SystemExit as e:  # the exit notification: 0 after shutdown, 1 without (the spec)
            self.exit_code = e.code if isinstance(e.code, int) else 1
        except KeyboardInterrupt:
            self.exit_code = 130
        except Exception:
            # The input itself failed: a server that stays alive but reads nothing would never be restarted.
            log.exception(
                "cannot read from the client any more; exiting so that the editor restarts the server"
            )
            self.exit_code = 2
        finally:
            self.shutdown()

    def start_tcp(self, host: str, port: int) -> None:
        self._stop_event = stop_event = threading.Event()

        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.protocol.set_writer(writer)
            await run_frames(
                stop_event, BufferedSource(reader.read), self._handle_body, self.max_message_bytes
            )
            self.shutdown()

        async def serve() -> None:
            self._server = await asyncio.start_server(connection, host, port)
            log.info("serving on %s:%s", host, port)
            async with self._server:
                await self._server.serve_forever()

        try:
            asyncio.run(serve())
        except (asyncio.CancelledError, KeyboardInterrupt):
            pass
        except SystemExit as e:
            self.exit_code = e.code if isinstance(e.code, int) else 1

    async def _serve(self, source: BufferedSource) -> None:
        assert self._stop_event is not None
        await run_frames(self._stop_event, source, self._handle_body, self.max_message_bytes)

    def _handle_body(self, body: bytes) -> None:
        # ValueError/RecursionError (not JSON) go back to run_frames, which looks for a swallowed frame.
        message = parse_body(body, self.protocol.structure_message)
        try:
            self.protocol.handle_message(message)
        except Exception as e:
            log.exception("unable to handle a message")
            self._report_server_error(e, JsonRpcException)

    @property
    def engine(self) -> Engine | None:
        return self.session.engine if self.session else None

    def report_server_error(self, error: Exception, source: Any) -> None:
        # Logged, never a pop-up per bad message.
        log.error("%s: %s", getattr(source, "__name__", source), error)

    def tell(self, message: str, kind: types.MessageType = types.MessageType.Warning) -> None:
        try:
            self.window_show_message(types.ShowMessageParams(type=kind, message=message))
        except Exception:
            log.exception("could not show a message")


def _plain(value: Any) -> Any:
    """pygls hands unknown structures over as named tuples; settings want plain dicts."""
    if hasattr(value, "_asdict"):
        return {k: _plain(v) for k, v in value._asdict().items()}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _position(p: types.Position) -> Position:
    return Position(p.line, p.character)


def _position_param(params: Any) -> Position:
    position = params.position
    return Position(position.line, position.character)


def _uri_param(params: Any) -> str:
    return str(params.text_document.uri)


def _range(edit: ProposedEdit) -> types.Range:
    return types.Range(
        types.Position(edit.start.line, edit.start.character),
        types.Position(edit.end.line, edit.end.character),
    )


def _next_edit_json(edit: ProposedEdit) -> NextEditItem:
    """One edit of an ``opportune/nextEdit`` answer (the shape next-edit clients know, plus our fields)."""
    r = _range(edit)
    return {
        "id": edit.edit_id,
        "textDocument": {"uri": edit.uri, "version": edit.version},
        "range": {
            "start": {"line": r.start.line, "character": r.start.character},
            "end": {"line": r.end.line, "character": r.end.character},
        },
        "newText": edit.new_text,
        "plainText": edit.plain_text,
        "insertTextFormat": 2 if edit.snippet else 1,
        "kind": edit.change_kind,
        "title": edit.title,
        "command": {
            "title": "Accept next edit",
            "command": ACCEPT_NEXT_EDIT_COMMAND,
            "arguments": [edit.edit_id],
        },
    }


def _workspace_edit(edit: ProposedEdit) -> types.WorkspaceEdit:
    text_edit = types.TextEdit(range=_range(edit), new_text=edit.plain_text)
    return types.WorkspaceEdit(
        document_changes=[
            types.TextDocumentEdit(
                text_document=types.OptionalVersionedTextDocumentIdentifier(
                    uri=edit.uri, version=edit.version
                ),
                edits=[text_edit],
            )
        ]
    )


def build_server(
    session_factory: Callable[..., Session] = start_session,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> OpportuneServer:
    """A server whose session (engine, store, settings) is made by ``session_factory`` on initialize."""
    server = OpportuneServer(session_factory, max_message_bytes)

    @server.feature(types.INITIALIZE)
    def initialize(ls: OpportuneServer, params: types.InitializeParams) -> None:
        options = _plain(params.initialization_options) or {}
        if not isinstance(options, Mapping):
            options = {}
        root = params.root_uri or (params.workspace_folders[0].uri if params.workspace_folders else None)
        workspace = Path(to_fs_path(root) or ".") if root else None
        client = params.client_info.name if params.client_info else ""
        if client and "clientName" not in options and "client_name" not in options:
            options = {**options, "clientName": client}
        if ls.session is not None:  # a second initialize: replace the session, leak nothing
            ls.session.close()
        ls.session = ls.session_factory(options, workspace=workspace, notify_user=ls.tell)
        for problem in ls.session.problems:
            ls.tell(f"Opportune settings: {problem}")

    @server.feature(types.INITIALIZED)
    async def initialized(ls: OpportuneServer, params: types.InitializedParams) -> None:
        engine = ls.engine
        if engine is None:
            return
        await engine.load()  # now, so the first keystroke does not pay for it

    @server.feature(types.SHUTDOWN)
    def shutdown(ls: OpportuneServer, *args: Any) -> None:
        if ls.session is not None:
            ls.session.close()
            ls.session = None

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: OpportuneServer, params: types.DidOpenTextDocumentParams) -> None:
        if ls.engine:
            d = params.text_document
            # pygls does not check the types inside params: a languageId that is no string means "unknown".
            language = d.language_id if isinstance(d.language_id, str) else ""
            ls.engine.open(d.uri, d.text, language, d.version)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: OpportuneServer, params: types.DidChangeTextDocumentParams) -> None:
        if not ls.engine:
            return
        changes: list[tuple[Position | None, Position | None, str]] = []
        for c in params.content_changes:
            if isinstance(c, types.TextDocumentContentChangePartial):
                changes.append((_position(c.range.start), _position(c.range.end), c.text))
            else:
                changes.append((None, None, c.text))
        if not changes:
            return  # valid LSP (a version bump with no edit): nothing changed, nothing to follow
        ls.engine.change(params.text_document.uri, params.text_document.version, changes)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: OpportuneServer, params: types.DidCloseTextDocumentParams) -> None:
        if ls.engine:
            ls.engine.close(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: OpportuneServer, params: types.DidSaveTextDocumentParams) -> None:
        if ls.engine:
            ls.engine.saved(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(
        ls: OpportuneServer, params: types.InlineCompletionParams
    ) -> types.InlineCompletionList | None:
        engine = ls.engine
        if engine is None:
            return None
        invoked = params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        suggestion = await engine.complete(params.text_document.uri, _position(params.position), invoked)
        if suggestion is None:
            return None
        at = types.Position(suggestion.position.line, suggestion.position.character)
        item = types.InlineCompletionItem(
            insert_text=suggestion.text,
            range=types.Range(at, at),
            command=types.Command(
                title="Accept", command=ACCEPT_COMMAND, arguments=[suggestion.completion_id]
            ),
        )
        return types.InlineCompletionList(items=[item])

    @server.command(ACCEPT_COMMAND)
    def accept(ls: OpportuneServer, *args: Any) -> None:
        # pygls 2 passes the command's arguments one by one.
        try:
            completion_id = accept_argument(args)
        except ProtocolError as e:
            raise JsonRpcInvalidParams(str(e)) from e
        if ls.engine:
            ls.engine.did_accept(completion_id)

    @server.feature(NEXT_EDIT_METHOD)
    async def next_edit(ls: OpportuneServer, params: Any) -> NextEditResult:
        uri = _uri_param(params)
        position = _position_param(params)
        engine = ls.engine
        if engine is None:
            return {"edits": [], "reason": "Opportune is not initialized."}
        answer = await engine.next_edits.suggest(uri, position)
        if answer.stale:
            raise JsonRpcContentModified(answer.reason)
        return {"edits": [_next_edit_json(e) for e in answer.edits], "reason": answer.reason}

    @server.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(code_action_kinds=[types.CodeActionKind.RefactorRewrite]),
    )
    async def code_action(
        ls: OpportuneServer, params: types.CodeActionParams
    ) -> list[types.CodeAction] | None:
        engine = ls.engine
        only = params.context.only
        if engine is None or (only and not any(str(k).startswith("refactor") for k in only)):
            return None
        uri = params.text_document.uri
        answer = await engine.next_edits.suggest(uri, _position(params.range.start))
        lines = range(params.range.start.line, params.range.end.line + 1)
        actions = []
        # Code actions are for the lines asked about: the edits there (the others are a jump away).
        for edit in (e for e in answer.edits if e.uri == uri and e.start.line in lines):
            where = f"{edit.uri.rsplit('/', 1)[-1]}:{edit.start.line + 1}"
            actions.append(
                types.CodeAction(
                    title=f"Opportune: {edit.title} ({where})",
                    kind=types.CodeActionKind.RefactorRewrite,
                    edit=_workspace_edit(edit),
                    command=types.Command(
                        title="Accept next edit", command=ACCEPT_NEXT_EDIT_COMMAND, arguments=[edit.edit_id]
                    ),
                )
            )
        return actions or None

    @server.command(ACCEPT_NEXT_EDIT_COMMAND)
    async def accept_next_edit(ls: OpportuneServer, *args: Any) -> AcceptNextEditResult:
        engine = ls.engine
        if engine is None or not args:
            return {"accepted": False, "reason": "no next edit given"}
        edit_id = str(args[0])
        result = engine.next_edits.accept(edit_id)
        if result.apply is not None:
            # The client has not applied it (it ran the command alone): the server asks it to, with the
            # document version the edit was made for, so a client that moved on refuses it.
            try:
                response = await ls.workspace_apply_edit_async(
                    types.ApplyWorkspaceEditParams(
                        edit=_workspace_edit(result.apply), label=result.apply.title
                    )
                )
                ok, reason = bool(response.applied), response.failure_reason or ""
            except Exception as e:
                ok, reason = False, f"the editor did not apply it ({e})"
            engine.next_edits.applied(edit_id, ok, reason)
            return {"accepted": ok, "reason": reason or ("" if ok else "the editor refused the edit")}
        return {"accepted": result.accepted, "reason": result.reason}

    @server.feature(DID_REJECT_NEXT_EDIT_METHOD)
    def did_reject_next_edit(ls: OpportuneServer, params: Any) -> None:
        if ls.engine:
            ls.engine.next_edits.reject(str(params.id), str(params.reason))

    # A lone surrogate in a string from the client is made storable by telemetry.schema, like every value.
    @server.feature("opportune/didShowCompletion")
    def did_show(ls: OpportuneServer, params: protocol.DidShowCompletionParams) -> None:
        if ls.engine:
            ls.engine.did_show(params.id)

    @server.feature("opportune/didPartiallyAcceptCompletion")
    def did_partially_accept(
        ls: OpportuneServer, params: protocol.DidPartiallyAcceptCompletionParams
    ) -> None:
        if ls.engine:
            ls.engine.did_accept(params.id, params.accepted_length)

    @server.feature("opportune/didRejectCompletion")
    def did_reject(ls: OpportuneServer, params: protocol.DidRejectCompletionParams) -> None:
        if ls.engine:
            ls.engine.did_reject(params.id, params.reason)

    @server.feature("opportune/status")
    def status(ls: OpportuneServer, params: protocol.StatusParams) -> dict[str, Any]:
        engine = ls.engine
        if engine is None:
            result = protocol.StatusResult(
                enabled=False, experiment="", arm="", model="", last_latency_ms=None, busy=False
            )
        else:
            config = engine.config
            result = protocol.StatusResult(
                enabled=config.settings.completion.enabled,
                experiment=config.experiment,
                arm=config.arm,
                model=engine.model_id,
                last_latency_ms=engine.last_latency_ms,
                busy=engine.busy,
            )
        return unstructure(result)

    @server.feature("opportune/setEnabled")
    def set_enabled(ls: OpportuneServer, params: protocol.SetEnabledParams) -> dict[str, Any]:
        if ls.session is not None:
            ls.session.set_enabled(params.enabled)
        return unstructure(protocol.SetEnabledResult(enabled=params.enabled))

    @server.feature("opportune/report")
    async def report(ls: OpportuneServer, params: protocol.ReportParams) -> dict[str, Any]:
        from opportune.server.reporting import session_report

        session = ls.session
        if session is None:
            return unstructure(protocol.ReportResult(text="Opportune is not initialized.", data={}))
        # Reading a large store takes seconds, and the analysis modules load on the first report: both
        # off the event loop, so completions keep flowing.
        try:
            result = await asyncio.get_running_loop().run_in_executor(
                None, session_report, session, params.since or "1d"
            )
        except (ValueError, OverflowError) as e:  # a bad "since", or one outside the calendar
            raise JsonRpcInvalidParams(str(e)) from e
        return unstructure(result)

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def did_change_configuration(
        ls: OpportuneServer, params: types.DidChangeConfigurationParams
    ) -> None:
        engine = ls.engine
        settings = _plain(params.settings)
        if engine is None or not isinstance(settings, Mapping):
            return
        section = settings.get("opportune", settings)
        if not isinstance(section, Mapping):
            ls.tell("Opportune settings: expected an object under 'opportune'")
            return
        assert ls.session is not None
        # Rebuilt from the start-up layers plus the client's complete current set, so a setting the user
        # removed goes back to its default; the arm and its digest follow.
        for problem in ls.session.apply_client_settings(section):
            ls.tell(f"Opportune settings: {problem}")
        # A new model (or the old one fixed) is loaded now, not at the next keystroke, and a failure is
        # told now, while the user is looking at the settings they just changed.
        await engine.load()

    return server
