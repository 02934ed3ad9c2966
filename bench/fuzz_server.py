"""Hostile protocol input against the real `opportune serve` process over stdio.

A seeded generator (``random.Random``: the same seed gives the same message sequence) writes thousands of
JSON-RPC messages to a real server started as ``python -m server.cli serve``: malformed JSON, wrong
envelopes and parameter types, unknown methods, edits to unopened or closed documents, version skew,
ranges past the end or reversed, lone UTF-16 surrogates (as JSON escapes), emoji and combining marks at the
cursor, 10 MB lines, 5,000 nested brackets, cancellations of unknown ids, bursts of interleaved completion
requests, hostile settings and a second ``initialize``.  Messages are written as bytes by a small raw client
(``RawServer``) so that nothing a typed client would refuse to build is out of reach.

What is checked, per run:

- the process stays alive (``returncode is None`` after every message) and a final well-formed completion
  request still gets the right answer;
- every well-formed request (valid JSON, ``"jsonrpc": "2.0"``, an integer or string id, a string method)
  gets a response within ``--bound`` seconds (5 s by default with the fake backend), and that response is a
  well-formed result or JSON-RPC error for the same id;
- the server never answers a notification, never writes anything but framed JSON to stdout.

Requests the JSON-RPC spec says deserve an ``Invalid Request``/``Parse error`` answer but that are not
well-formed (a wrong ``jsonrpc`` version, an id of the wrong type, bad JSON) are counted separately
(``spec_unanswered``); ``--strict`` makes them failures too.

Run: ``cd /work/main && python -m bench.fuzz_server --messages 10000 --seed 1`` (``--backend llama`` for
the real model).  Prints messages fuzzed, crashes, worst response time, and exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# Text that stresses every unit conversion: astral emoji (2 UTF-16 units), ZWJ sequences, flags, combining
# marks, zero-width and bidi controls, a BOM, NUL, every line terminator Python knows but LSP does not,
# and lone or reversed surrogates (valid JSON escapes, invalid Unicode).
HOSTILE_SNIPPETS: tuple[str, ...] = (
    "😀",
    "👩\u200d👩\u200d👧",
    "🇫🇷",
    "e\u0301",
    "a\u0308\u0301\u0323",
    "\u1100\u1161\u11a8",
    "\u202eevil\u202c",
    "\ufeff",
    "\u200b",
    "\x00",
    "\r\n",
    "\r",
    "\u2028",
    "\x85",
    "\x0c",
    "\t",
    "\ud800",
    "\udfff",
    "\udc00\ud800",
    "\ud83d",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
)

CODE_SNIPPETS: tuple[tuple[str, str], ...] = (
    ("python", "import os\n\n\ndef area(r):\n    return 3.14 * r * r\n\n\ndef perimeter(r):\n    return "),
    (
        "python",
        "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n        ",
    ),
    ("javascript", "function add(a, b) {\n  return a + b;\n}\n\nfunction sub(a, b) {\n  return "),
    ("typescript", "interface P { x: number; y: number }\nconst norm = (p: P): number => "),
    ("rust", "fn main() {\n    let v: Vec<i32> = (0..10).collect();\n    for x in &v {\n        "),
    ("go", 'package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.'),
    ("c", '#include <stdio.h>\n\nint main(void) {\n    printf("%d\\n", '),
    ("java", "public class A {\n    public static void main(String[] args) {\n        System.out."),
    ("cobol", "       IDENTIFICATION DIVISION.\n       PROGRAM-ID. X.\n       "),
    ("plaintext", "Dear diary,\n\ntoday I "),
    ("", "no language id at all\n"),
)

TYPING = "abcdefghijklmnopqrstuvwxyz_ (){}[]:.,=+-*/'\"\n    0123456789"

# A well-formed request is one a conforming client could send: it must always be answered.
WELL_FORMED_ID = (int, str)


def frame(body: bytes) -> bytes:
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def dumps(obj: Any) -> bytes:
    # ensure_ascii: lone surrogates become the JSON escapes "\ud800" rather than failing to encode.
    return json.dumps(obj, ensure_ascii=True).encode("ascii")


def id_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def utf16_len(text: str) -> int:
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def end_position(text: str) -> dict[str, int]:
    lines = text.split("\n")
    return {"line": len(lines) - 1, "character": utf16_len(lines[-1])}


def rss_kb(pid: int) -> int:
    """Resident set size of a process from /proc (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# --------------------------------------------------------------------------------------------------------
# A raw JSON-RPC client over the server's stdio
# --------------------------------------------------------------------------------------------------------


@dataclass
class Response:
    message: dict[str, Any]
    seconds: float


class RawServer:
    """`opportune serve` as a subprocess, spoken to in bytes.

    Responses are matched to requests by id; requests from the server (there should be none we care about)
    are answered with null; notifications are kept (``notifications``; ``shown_messages`` for
    ``window/showMessage``).  Its stderr is read all the time (an unread pipe would block the server once
    full) and kept in ``stderr_tail`` and, optionally, a file.
    """

    def __init__(
        self,
        backend: str = "fake",
        db: Path | None = None,
        extra: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        stderr_path: Path | None = None,
    ) -> None:
        self.cmd = [sys.executable, "-m", "opportune.server.cli", "serve", "--backend", backend]
        if db is not None:
            self.cmd += ["--db", str(db)]
        self.cmd += list(extra)
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.stderr_path = stderr_path
        self.proc: asyncio.subprocess.Process | None = None
        self.pending: dict[str, tuple[float, asyncio.Future[Response]]] = {}
        self.notifications: deque[dict[str, Any]] = deque(maxlen=1000)
        self.shown_messages: list[dict[str, Any]] = []
        self.stray_responses: list[dict[str, Any]] = []  # responses to ids never sent
        self.late_responses = 0  # responses after the waiter gave up, or a second one for an id
        self.null_id_errors = 0  # errors with id null: the right answer to unparseable input
        self.sent_ids: set[str] = set()
        self.protocol_errors: list[str] = []  # stdout that is not framed JSON
        self.stderr_tail: deque[str] = deque(maxlen=400)
        self.stderr_exceptions: Counter[str] = Counter()
        self._tasks: list[asyncio.Task[None]] = []
        self._ids = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc else None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.cmd,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=str(ROOT),
            env=self.env,
            limit=1 << 16,
        )
        self._tasks = [
            asyncio.create_task(self._read_stdout()),
            asyncio.create_task(self._read_stderr()),
        ]

    async def initialize(self, options: dict[str, Any] | None = None, timeout: float = 60) -> Response:
        response = await self.request(
            "initialize",
            {
                "processId": os.getpid(),
                "rootUri": None,
                "capabilities": {},
                "clientInfo": {"name": "opportune-fuzz"},
                "initializationOptions": options or {},
            },
            timeout=timeout,
        )
        await self.notify("initialized", {})
        return response

    def next_id(self) -> int:
        self._ids += 1
        return self._ids

    async def write(self, data: bytes) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(data)
        await self.proc.stdin.drain()

    def expect(self, request_id: Any) -> asyncio.Future[Response]:
        """A future for the response to ``request_id``; call before writing the request."""
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self.pending[id_key(request_id)] = (0.0, future)
        self.sent_ids.add(id_key(request_id))
        return future

    async def send_request_bytes(self, request_id: Any, data: bytes) -> asyncio.Future[Response]:
        future = self.expect(request_id)
        await self.write(data)
        self.pending[id_key(request_id)] = (time.perf_counter(), future)
        return future

    async def request(
        self, method: str, params: Any = None, timeout: float = 30, request_id: Any = None
    ) -> Response:
        rid = self.next_id() if request_id is None else request_id
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            message["params"] = params
        future = await self.send_request_bytes(rid, frame(dumps(message)))
        return await asyncio.wait_for(future, timeout)

    async def notify(self, method: str, params: Any = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        await self.write(frame(dumps(message)))

    # -- the few editor actions tests and benchmarks need --

    async def open(self, uri: str, text: str, language_id: str = "python", version: int = 1) -> None:
        await self.notify(
            "textDocument/didOpen",
            {"textDocument": {"uri": uri, "languageId": language_id, "version": version, "text": text}},
        )

    async def insert(self, uri: str, version: int, at: dict[str, int], text: str) -> None:
        await self.notify(
            "textDocument/didChange",
            {
                "textDocument": {"uri": uri, "version": version},
                "contentChanges": [{"range": {"start": at, "end": at}, "text": text}],
            },
        )

    async def complete(
        self, uri: str, position: dict[str, int], invoked: bool = False, timeout: float = 30
    ) -> Response:
        return await self.request(
            "textDocument/inlineCompletion",
            {
                "textDocument": {"uri": uri},
                "position": position,
                "context": {"triggerKind": 1 if invoked else 2},
            },
            timeout=timeout,
        )

    async def shutdown(self, timeout: float = 30) -> int | None:
        """shutdown + exit, then wait for the process; kill it if it does not go."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                await self.request("shutdown", None, timeout=timeout)
            with contextlib.suppress(Exception):
                await self.notify("exit")
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self.close()
        return self.proc.returncode

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        await self.close()

    async def close(self) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 5)
        for _, future in self.pending.values():
            if not future.done():
                future.cancel()

    async def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        reader = self.proc.stdout
        try:
            while True:
                length = None
                while True:
                    line = await reader.readline()
                    if not line:
                        return
                    if line in (b"\r\n", b"\n"):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                    elif name.strip().lower() != "content-type":
                        self.protocol_errors.append(f"unexpected header line {line[:80]!r}")
                if length is None:
                    self.protocol_errors.append("a message without Content-Length")
                    continue
                body = await reader.readexactly(length)
                try:
                    message = json.loads(body)
                except ValueError:
                    self.protocol_errors.append(f"stdout body is not JSON: {body[:80]!r}")
                    continue
                self._dispatch(message)
        except (asyncio.IncompleteReadError, ConnectionError):
            return

    def _dispatch(self, message: Any) -> None:
        if not isinstance(message, dict):
            self.protocol_errors.append(f"a message that is not an object: {str(message)[:80]}")
            return
        if "method" in message:
            if "id" in message:  # a request from the server: answer it so it never waits
                reply = {"jsonrpc": "2.0", "id": message["id"], "result": None}
                assert self.proc is not None and self.proc.stdin is not None
                self.proc.stdin.write(frame(dumps(reply)))
            self.notifications.append(message)
            if message["method"] == "window/showMessage":
                self.shown_messages.append(message.get("params") or {})
            return
        key = id_key(message.get("id"))
        entry = self.pending.pop(key, None)
        if entry is None or entry[1].done():
            if key in self.sent_ids:
                self.late_responses += 1
            elif message.get("id") is None and "error" in message:
                self.null_id_errors += 1
            else:
                self.stray_responses.append(message)
            return
        sent, future = entry
        future.set_result(Response(message, time.perf_counter() - sent))

    async def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        sink = self.stderr_path.open("ab") if self.stderr_path else None
        pattern = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt)):")
        try:
            while True:
                line = await self.proc.stderr.readline()
                if not line:
                    return
                if sink is not None:
                    sink.write(line)
                text = line.decode("utf-8", "replace").rstrip()
                self.stderr_tail.append(text)
                match = pattern.match(text)
                if match:
                    self.stderr_exceptions[match.group(1)] += 1
        except (ValueError, ConnectionError):
            return  # an over-long line: stop reading rather than block the server is not an option
        finally:
            if sink is not None:
                sink.close()


@contextlib.asynccontextmanager
async def raw_session(
    db: Path | None,
    backend: str = "fake",
    options: dict[str, Any] | None = None,
    extra: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    client_name: str = "opportune-fuzz",
) -> AsyncIterator[RawServer]:
    """A started and initialized server (telemetry flushed every 0.2 s unless ``options`` say otherwise),
    shut down (or killed) on the way out."""
    server = RawServer(backend, db, extra=extra, env=env)
    await server.start()
    try:
        response = await server.request(
            "initialize",
            {
                "processId": os.getpid(),
                "rootUri": None,
                "capabilities": {},
                "clientInfo": {"name": client_name},
                "initializationOptions": {"telemetry": {"flushIntervalS": 0.2}, **(options or {})},
            },
            timeout=120,
        )
        if "result" not in response.message:
            raise RuntimeError(f"initialize failed: {response.message}")
        await server.notify("initialized", {})
        yield server
    finally:
        if server.returncode is None:
            await server.shutdown(timeout=30)
        else:
            await server.close()


# --------------------------------------------------------------------------------------------------------
# The generator
# --------------------------------------------------------------------------------------------------------


@dataclass
class Outgoing:
    """One message to write.  ``must_answer``: well-formed request; ``spec_answer``: JSON-RPC wants an
    error answer, but the message is malformed (counted apart)."""

    category: str
    data: bytes
    request_id: Any = None
    must_answer: bool = False
    spec_answer: bool = False
    method: str = ""
    unparseable: bool = False  # no id can be read from it: only an error with id null can answer it


@dataclass
class DocModel:
    uri: str
    text: str
    language: str
    version: int = 1


class Fuzzer:
    """Yields messages from a seed.  The sequence of messages depends only on the seed; completion ids
    echoed in feedback notifications are the ones the server returned (``harvest``)."""

    def __init__(
        self,
        seed: int,
        *,
        huge_bytes: int = 10_000_000,
        nesting: int = 5_000,
        llama: bool = False,
        skip: tuple[str, ...] = (),
    ):
        self.rng = random.Random(seed)
        self.huge_bytes = huge_bytes
        self.nesting = nesting
        self.llama = llama
        self.docs: dict[str, DocModel] = {}
        self.closed: list[str] = []
        self.completion_ids: deque[str] = deque(maxlen=50)
        self.recent_requests: deque[Any] = deque(maxlen=20)
        self._ids = 100_000
        self._docs_made = 0
        self._restore_in: int | None = None
        self._restore_enabled_in: int | None = None
        self.categories: dict[str, tuple[float, Callable[[], list[Outgoing]]]] = {
            "type_and_complete": (22, self.type_and_complete),
            "emoji_typing": (5, self.emoji_typing),
            "complete_hostile_position": (8, self.complete_hostile_position),
            "burst": (5, self.burst),
            "cancel_unknown": (4, self.cancel_unknown),
            "open": (6, self.open_document),
            "change_hostile": (12, self.change_hostile),
            "close": (3, self.close_document),
            "bad_json": (5, self.bad_json),
            "bad_envelope": (8, self.bad_envelope),
            "unknown_method": (5, self.unknown_method),
            "opportune_custom": (6, self.opportune_custom),
            "config": (2, self.config),
            "deep_nesting": (0.8, self.deep_nesting),
            "huge_line": (0.25, self.huge_line),
            "reinitialize": (0.15, self.reinitialize),
            "framing": (3, self.framing),
        }
        for name in skip:
            self.categories.pop(name, None)
        # Every category once, in a seeded order, before the weighted draw: a short run covers them all.
        self._schedule = list(self.categories)
        self.rng.shuffle(self._schedule)

    # -- helpers --

    def harvest(self, response: dict[str, Any]) -> None:
        result = response.get("result")
        items = result.get("items") if isinstance(result, dict) else result
        if isinstance(items, list):
            for item in items:
                command = item.get("command") if isinstance(item, dict) else None
                args = command.get("arguments") if isinstance(command, dict) else None
                if isinstance(args, list) and args and isinstance(args[0], str):
                    self.completion_ids.append(args[0])

    def new_id(self) -> int | str:
        self._ids += 1
        return self._ids if self.rng.random() < 0.7 else f"fz-{self._ids}"

    def request(self, category: str, method: str, params: Any, *, omit_params: bool = False) -> Outgoing:
        rid = self.new_id()
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if not omit_params:
            message["params"] = params
        self.recent_requests.append(rid)
        return Outgoing(category, frame(dumps(message)), rid, must_answer=True, method=method)

    def notification(self, category: str, method: str, params: Any) -> Outgoing:
        return Outgoing(category, frame(dumps({"jsonrpc": "2.0", "method": method, "params": params})))

    def pick_doc(self) -> DocModel | None:
        if not self.docs:
            return None
        return self.docs[self.rng.choice(sorted(self.docs))]

    def new_uri(self, language: str) -> str:
        self._docs_made += 1
        ext = {
            "python": "py",
            "javascript": "js",
            "typescript": "ts",
            "rust": "rs",
            "go": "go",
            "c": "c",
            "java": "java",
            "cobol": "cob",
        }.get(language, "txt")
        name = self.rng.choice(["a", "b", "dir with space/c", "%E2%9C%93", "ünï", "deep/" * 30 + "d"])
        scheme = self.rng.choice(["file:///fuzz/", "file:///fuzz/", "untitled:", "git:/x/"])
        return f"{scheme}{name}{self._docs_made}.{ext}"

    def hostile_text(self, n: int) -> str:
        parts = []
        for _ in range(n):
            if self.rng.random() < 0.3:
                parts.append(self.rng.choice(HOSTILE_SNIPPETS))
            else:
                parts.append(self.rng.choice(TYPING))
        return "".join(parts)

    def completion_params(self, doc_uri: str, position: Any, invoked: bool | None = None) -> dict[str, Any]:
        if invoked is None:
            invoked = self.rng.random() < 0.3
        return {
            "textDocument": {"uri": doc_uri},
            "position": position,
            "context": {"triggerKind": 1 if invoked else 2},
        }

    def hostile_position(self, doc: DocModel | None) -> dict[str, int]:
        text = doc.text if doc else ""
        lines = text.split("\n")
        r = self.rng.random()
        if r < 0.2:
            return {"line": self.rng.choice([len(lines), len(lines) + 7, 2**31 - 1]), "character": 0}
        if r < 0.4:
            line = self.rng.randrange(len(lines))
            return {
                "line": line,
                "character": self.rng.choice([utf16_len(lines[line]) + 1, 10**6, 2**31 - 1]),
            }
        # Inside or next to an astral character or a combining mark, where UTF-16 and str indices differ.
        line = self.rng.randrange(len(lines))
        units = 0
        spots = [0]
        for ch in lines[line]:
            units += 2 if ord(ch) > 0xFFFF else 1
            spots.append(units)
            if ord(ch) > 0xFFFF:
                spots.append(units - 1)  # between the two halves of a surrogate pair
        return {"line": line, "character": self.rng.choice(spots)}

    # -- categories --

    def next_messages(self) -> list[Outgoing]:
        out: list[Outgoing] = []
        if self._restore_in is not None:
            self._restore_in -= 1
            if self._restore_in <= 0:
                self._restore_in = None
                out.append(
                    self.notification(
                        "config", "workspace/didChangeConfiguration", {"settings": {"opportune": {}}}
                    )
                )
        if self._restore_enabled_in is not None:
            self._restore_enabled_in -= 1
            if self._restore_enabled_in <= 0:
                self._restore_enabled_in = None
                out.append(self.request("opportune_custom", "opportune/setEnabled", {"enabled": True}))
        if self._schedule:
            name = self._schedule.pop()
        else:
            names = list(self.categories)
            name = self.rng.choices(names, weights=[self.categories[n][0] for n in names])[0]
        return out + self.categories[name][1]()

    def open_document(self, text: str | None = None, language: str | None = None) -> list[Outgoing]:
        if language is None or text is None:
            language, base = self.rng.choice(CODE_SNIPPETS)
            text = base + (self.hostile_text(self.rng.randrange(0, 12)) if self.rng.random() < 0.5 else "")
        if self.docs and self.rng.random() < 0.1:
            uri = self.rng.choice(sorted(self.docs))  # open again without a close
        else:
            uri = self.new_uri(language)
        language_id = language
        if self.rng.random() < 0.1:
            language_id = self.rng.choice(["", "PYTHON", " python ", "\ud800", "x" * 1000, "javascriptreact"])
        version = self.rng.choice([0, 1, 1, 1, -5, 2**31 - 1])
        self.docs[uri] = DocModel(uri, text, language, version)
        params = {"textDocument": {"uri": uri, "languageId": language_id, "version": version, "text": text}}
        return [self.notification("open", "textDocument/didOpen", params)]

    def close_document(self) -> list[Outgoing]:
        r = self.rng.random()
        if r < 0.6 and self.docs:
            uri = self.rng.choice(sorted(self.docs))
            del self.docs[uri]
            self.closed.append(uri)
        elif r < 0.8 and self.closed:
            uri = self.rng.choice(self.closed)  # closed twice
        else:
            uri = "file:///fuzz/never-opened.py"
        return [self.notification("close", "textDocument/didClose", {"textDocument": {"uri": uri}})]

    def _change(self, doc: DocModel, changes: list[dict[str, Any]], version: int | None = None) -> Outgoing:
        doc.version += 1
        params = {
            "textDocument": {"uri": doc.uri, "version": doc.version if version is None else version},
            "contentChanges": changes,
        }
        return self.notification("change", "textDocument/didChange", params)

    def type_and_complete(
        self, chars: str | None = None, category: str = "type_and_complete"
    ) -> list[Outgoing]:
        doc = self.pick_doc()
        if doc is None:
            return self.open_document()
        if chars is None:
            chars = self.rng.choice(TYPING)
            if chars == "\n" and doc.language == "python":
                chars = "\n    "
        at = end_position(doc.text)
        doc.text += chars
        change = self._change(doc, [{"range": {"start": at, "end": at}, "text": chars}])
        change.category = category
        out = [change]
        if self.rng.random() < 0.9:
            out.append(
                self.request(
                    category,
                    "textDocument/inlineCompletion",
                    self.completion_params(doc.uri, end_position(doc.text)),
                )
            )
        return out

    def emoji_typing(self) -> list[Outgoing]:
        return self.type_and_complete(self.rng.choice(HOSTILE_SNIPPETS), "emoji_typing")

    def complete_hostile_position(self) -> list[Outgoing]:
        doc = self.pick_doc()
        uri = doc.uri if doc else "file:///fuzz/none.py"
        if self.rng.random() < 0.1:
            uri = self.rng.choice(self.closed) if self.closed else "file:///fuzz/never.py"
        return [
            self.request(
                "complete_hostile_position",
                "textDocument/inlineCompletion",
                self.completion_params(uri, self.hostile_position(doc)),
            )
        ]

    def burst(self) -> list[Outgoing]:
        doc = self.pick_doc()
        if doc is None:
            return self.open_document()
        out: list[Outgoing] = []
        ids: list[Any] = []
        for _ in range(self.rng.randint(2, 6)):
            if self.rng.random() < 0.5:
                typed = self.type_and_complete(category="burst")
                out.extend(typed)
                ids.extend(o.request_id for o in typed if o.request_id is not None)
            else:
                req = self.request(
                    "burst",
                    "textDocument/inlineCompletion",
                    self.completion_params(doc.uri, end_position(doc.text)),
                )
                ids.append(req.request_id)
                out.append(req)
        for rid in ids:
            if self.rng.random() < 0.4:
                out.append(self.notification("burst", "$/cancelRequest", {"id": rid}))
        return out

    def cancel_unknown(self) -> list[Outgoing]:
        target: Any = self.rng.choice(
            [987654321, "nobody", -1, 0, 2**63, 1.5, None, True, [], {}, "\ud800", "x" * 10_000]
        )
        if self.recent_requests and self.rng.random() < 0.3:
            target = self.rng.choice(list(self.recent_requests))  # already answered, most likely
        params: Any = {"id": target}
        if self.rng.random() < 0.15:
            params = self.rng.choice([None, [], "x", 5, {}])
        return [self.notification("cancel_unknown", "$/cancelRequest", params)]

    def change_hostile(self) -> list[Outgoing]:
        doc = self.pick_doc()
        if doc is None:
            return self.open_document()
        lines = doc.text.split("\n")
        r = self.rng.random()
        text = self.hostile_text(self.rng.randint(0, 6))
        version: int | None = None
        changes: list[dict[str, Any]]
        if r < 0.12:  # a document that is not open (or no longer)
            uri = (
                self.rng.choice(self.closed)
                if self.closed and self.rng.random() < 0.5
                else "file:///fuzz/ghost.py"
            )
            params = {
                "textDocument": {"uri": uri, "version": 3},
                "contentChanges": [
                    {
                        "range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 0}},
                        "text": text,
                    }
                ],
            }
            return [self.notification("change_hostile", "textDocument/didChange", params)]
        if r < 0.24:  # version skew: older, equal, negative, enormous
            version = self.rng.choice([0, doc.version, doc.version - 3, -1, 2**31 - 1, 2**53])
            at = end_position(doc.text)
            changes = [{"range": {"start": at, "end": at}, "text": text}]
        elif r < 0.38:  # a range past the end
            start = {
                "line": self.rng.choice([len(lines) - 1, len(lines), len(lines) + 100]),
                "character": self.rng.choice([0, 10**6]),
            }
            end = {"line": start["line"] + self.rng.randint(0, 5), "character": 2**31 - 1}
            changes = [{"range": {"start": start, "end": end}, "text": text}]
        elif r < 0.50:  # reversed
            a = self.hostile_position(doc)
            b = {
                "line": a["line"] + self.rng.randint(0, 3),
                "character": a["character"] + self.rng.randint(1, 9),
            }
            changes = [{"range": {"start": b, "end": a}, "text": text}]
        elif r < 0.60:  # whole-document replacement
            changes = [{"text": self.hostile_text(self.rng.randint(0, 60))}]
        elif r < 0.72:  # several changes in one message, some overlapping
            changes = []
            for _ in range(self.rng.randint(2, 30)):
                a = self.hostile_position(doc)
                changes.append(
                    {"range": {"start": a, "end": a}, "text": self.hostile_text(self.rng.randint(0, 3))}
                )
        elif r < 0.78:
            changes = []  # no change at all
        elif r < 0.86:  # deprecated rangeLength, wrong on purpose
            at = end_position(doc.text)
            changes = [{"range": {"start": at, "end": at}, "rangeLength": -7, "text": text}]
        else:  # delete everything before the cursor with a range from 0,0
            changes = [
                {"range": {"start": {"line": 0, "character": 0}, "end": end_position(doc.text)}, "text": text}
            ]
        # The client-side model goes on from a plausible text: what matters is what the server does.
        if changes and "range" not in changes[0]:
            doc.text = changes[0]["text"]
        return [self._change(doc, changes, version)]

    def bad_json(self) -> list[Outgoing]:
        depth = self.rng.choice([100, 5_000, 200_000])
        bodies = [
            b"{",
            b'{"jsonrpc": "2.0", "id": 1, "method": "opportune/status"',
            b"nul",
            b"",
            b"\xff\xfe\x00{}",
            b'{"jsonrpc": "2.0", "method": "x", "params": "\xc3\x28"}',
            b"5",
            b'"just a string"',
            b"null",
            b"true",
            b"[]",
            b'[{"jsonrpc": "2.0", "id": 77, "method": "opportune/status"}]',
            b"[" * depth + b"]" * depth,
            b'{"a":' * depth + b"1" + b"}" * depth,
            b'{"jsonrpc": "2.0", "id": 1, "id": 2, "method": "opportune/status"}',
            b'{"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": NaN}',
            b'{"jsonrpc": "2.0", "method": "$/x", "params": 1e999999}',
        ]
        body = self.rng.choice(bodies)
        # Duplicate keys: the last id wins (2), and it is a well-formed request after all.
        if body.startswith(b'{"jsonrpc": "2.0", "id": 1, "id": 2'):
            return [
                Outgoing(
                    "bad_json", frame(body), 2, must_answer=False, spec_answer=True, method="opportune/status"
                )
            ]
        return [Outgoing("bad_json", frame(body), spec_answer=body.startswith(b"{"), unparseable=True)]

    def framing(self) -> list[Outgoing]:
        """A frame that lies about its length or has none: absurd, overflowing, shorter or longer than the
        body, negative, not a number, no Content-Length at all, or bytes between frames.  The server must
        resynchronise at the next Content-Length; the frames after it are well-formed and must be
        answered (a lying frame may swallow the start of the next one, which the server then re-reads)."""
        body = dumps({"jsonrpc": "2.0", "method": "$/fuzzFraming", "params": {"n": self._ids}})
        fault = self.rng.choice(
            [
                "absurd",
                "overflow",
                "shorter",
                "longer",
                "negative",
                "not_a_number",
                "no_length",
                "garbage",
                "no_body",
            ]
        )
        if fault == "absurd":
            data = b"Content-Length: 999999999999999\r\n\r\n" + body
        elif fault == "overflow":
            data = b"Content-Length: 99999999999999999999999\r\n\r\n" + body
        elif fault == "shorter":
            data = b"Content-Length: %d\r\n\r\n" % max(0, len(body) - self.rng.randint(1, 20)) + body
        elif fault == "longer":
            data = b"Content-Length: %d\r\n\r\n" % (len(body) + self.rng.choice([1, 40, 500])) + body
        elif fault == "negative":
            data = b"Content-Length: -%d\r\n\r\n" % len(body) + body
        elif fault == "not_a_number":
            data = (
                b"Content-Length: "
                + self.rng.choice([b"abc", b"12x", b"", b"0x10", b"1e3"])
                + b"\r\n\r\n"
                + body
            )
        elif fault == "no_length":
            data = b"Content-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n" + body
        elif fault == "garbage":
            data = bytes(self.rng.randrange(256) for _ in range(self.rng.randint(1, 300)))
        else:  # a header block with a length, then another header block before any body
            data = b"Content-Length: 5\r\n\r\n"
        return [Outgoing(f"framing_{fault}", data)]

    def bad_envelope(self) -> list[Outgoing]:
        methods = [
            "textDocument/inlineCompletion",
            "opportune/status",
            "opportune/report",
            "opportune/setEnabled",
            "workspace/executeCommand",
        ]
        method = self.rng.choice(methods)
        r = self.rng.random()
        rid = self.new_id()
        if r < 0.2:  # wrong or missing jsonrpc version: JSON-RPC says Invalid Request
            version = self.rng.choice(["1.0", 2.0, None, "2.0 ", "3.0", "MISSING"])
            msg: dict[str, Any] = {"id": rid, "method": method, "params": {}}
            if version != "MISSING":
                msg["jsonrpc"] = version
            return [Outgoing("bad_envelope", frame(dumps(msg)), rid, spec_answer=True, method=method)]
        if r < 0.35:  # ids JSON-RPC does not allow
            bad_id: Any = self.rng.choice([None, 1.5, True, [], {}, {"id": 1}, -(2**70)])
            msg = {"jsonrpc": "2.0", "id": bad_id, "method": method, "params": {}}
            return [Outgoing("bad_envelope", frame(dumps(msg)), bad_id, spec_answer=True, method=method)]
        if r < 0.45:  # method missing or not a string
            msg = {"jsonrpc": "2.0", "id": rid, "params": {}}
            if self.rng.random() < 0.5:
                msg["method"] = self.rng.choice([5, None, [], {"m": 1}])
            return [Outgoing("bad_envelope", frame(dumps(msg)), rid, spec_answer=True)]
        # Well-formed envelope, parameters of the wrong types: must be answered (InvalidParams or a result).
        doc = self.pick_doc()
        uri = doc.uri if doc else "file:///fuzz/x.py"
        params = self.rng.choice(
            [
                None,
                [],
                [1, 2],
                "params",
                42,
                {},
                {"textDocument": {"uri": uri}},
                {
                    "textDocument": {"uri": 5},
                    "position": {"line": 0, "character": 0},
                    "context": {"triggerKind": 1},
                },
                {
                    "textDocument": {"uri": uri},
                    "position": {"line": -1, "character": 0},
                    "context": {"triggerKind": 1},
                },
                {
                    "textDocument": {"uri": uri},
                    "position": {"line": "0", "character": 0},
                    "context": {"triggerKind": 1},
                },
                {
                    "textDocument": {"uri": uri},
                    "position": {"line": 0.5, "character": 0},
                    "context": {"triggerKind": 1},
                },
                {
                    "textDocument": {"uri": uri},
                    "position": {"line": 2**32, "character": 0},
                    "context": {"triggerKind": 1},
                },
                {
                    "textDocument": {"uri": uri},
                    "position": {"line": 0, "character": 0},
                    "context": {"triggerKind": 9},
                },
                {"textDocument": {"uri": uri}, "position": {"line": 0, "character": 0}, "context": None},
                {"textDocument": {"uri": uri}, "position": [0, 0], "context": {"triggerKind": 1}},
                {"enabled": "no"},
                {"since": 5, "json": "yes"},
                {"command": 5, "arguments": "x"},
                {"extra": {"nested": [{"jsonrpc": "2.0", "id": 5, "method": "x"}]}},
            ]
        )
        return [
            self.request(
                "bad_envelope", method, params, omit_params=params is None and self.rng.random() < 0.5
            )
        ]

    def unknown_method(self) -> list[Outgoing]:
        method = self.rng.choice(
            [
                "foo/bar",
                "textDocument/completion",
                "textDocument/hover",
                "$/unknownRequest",
                "opportune/doesNotExist",
                "",
                "\ud800",
                "x" * 10_000,
                "workspace/symbol",
                "initialized",
            ]
        )
        params: Any = self.rng.choice([{}, None, [], {"x": "\ud800"}])
        if self.rng.random() < 0.5:
            return [self.request("unknown_method", method, params)]
        return [
            self.notification(
                "unknown_method",
                self.rng.choice(
                    [method, "$/setTrace", "$/progress", "$/logTrace", "window/workDoneProgress/cancel"]
                ),
                params,
            )
        ]

    def _completion_id(self) -> str:
        # The same number of draws whatever the server returned, so the message sequence stays seeded.
        pick = self.rng.random()
        fallback = self.rng.choice(["unknown-id", "", "\ud800", "x" * 5000])
        if self.completion_ids and pick < 0.7:
            ids = list(self.completion_ids)
            return ids[int(pick / 0.7 * len(ids)) % len(ids)]
        return fallback

    def opportune_custom(self) -> list[Outgoing]:
        r = self.rng.random()
        cid = self._completion_id()
        if r < 0.15:
            return [self.request("opportune_custom", "opportune/status", self.rng.choice([{}, None, [], 5]))]
        if r < 0.25:
            enabled = self.rng.choice([True, False, "no", 0, None, [1]])
            if enabled is not True:
                self._restore_enabled_in = self.rng.randint(1, 8)
            return [self.request("opportune_custom", "opportune/setEnabled", {"enabled": enabled})]
        if r < 0.32:
            since = self.rng.choice(["1d", "7d", "garbage", 5, None, "-1d", "99999999999d", "\ud800", ""])
            return [
                self.request(
                    "opportune_custom",
                    "opportune/report",
                    {"since": since, "json": self.rng.choice([True, "yes"])},
                )
            ]
        if r < 0.47:
            return [
                self.notification(
                    "opportune_custom", "opportune/didShowCompletion", {"id": self.rng.choice([cid, 5, None])}
                )
            ]
        if r < 0.62:
            length = self.rng.choice([1, 0, -5, 10**18, "3", 1.5, None, 2**63])
            return [
                self.notification(
                    "opportune_custom",
                    "opportune/didPartiallyAcceptCompletion",
                    {"id": cid, "acceptedLength": length},
                )
            ]
        if r < 0.80:
            reason = self.rng.choice(
                ["dismissed", "typed_over", "superseded", "other", "", "\ud800", "y" * 100_000, 5, None]
            )
            return [
                self.notification(
                    "opportune_custom", "opportune/didRejectCompletion", {"id": cid, "reason": reason}
                )
            ]
        args = self.rng.choice([[cid], [], [None], [{"x": 1}], [10**30], [cid, cid], "x"])
        command = self.rng.choice(["opportune.accept", "opportune.accept", "unknown.command", ""])
        return [
            self.request(
                "opportune_custom", "workspace/executeCommand", {"command": command, "arguments": args}
            )
        ]

    def config(self) -> list[Outgoing]:
        depth = self.rng.choice([10, 900, 5_000])
        deep = "DEEP"  # stands for {"a": {"a": ... {}}} nested ``depth`` times, spliced in as bytes below
        choices: list[Any] = [
            None,
            5,
            [],
            "x",
            {"opportune": "x"},
            {"opportune": {"completion": "fast"}},
            {"opportune": {"completion": {"deadlineMs": "300"}}},
            {"opportune": {"completion": {"deadlineMs": -1}}},
            {"opportune": {"completion": {"deadlineMs": 10**9}}},
            {"opportune": {"completion": {"maxTokens": 0, "singleLineMaxTokens": -3}}},
            {"opportune": {"completion": {"maxTokens": 10**9}}},
            {"opportune": {"completion": {"contextTokens": 10**12}}},
            {"opportune": {"completion": {"multiline": "sometimes", "maxLines": -1}}},
            {"opportune": {"completion": {"enabled": False}}},
            {"opportune": {"completion": {"promptStrategy": "\ud800"}}},
            {"opportune": {"telemetry": {"enabled": "no", "db": "/proc/nope/x.db", "flushIntervalS": 0}}},
            {"opportune": {"experiment": {"name": "e", "arms": [{"name": "a", "weight": -1}]}}},
            {"opportune": {"experiment": {"name": "e", "arms": "x"}}},
            {
                "opportune": {
                    "experiment": {
                        "name": "e",
                        "arms": [{"name": "a", "completion": {"deadlineMs": "x"}}, {"name": "a"}],
                    }
                }
            },
            {"opportune": {"foo": 1, "Completion": {}}},
            {"opportune": deep},
            deep,
        ]
        if not self.llama:
            # Model settings reload the backend: with the fake one this is cheap.
            choices += [
                {"opportune": {"model": {"backend": "openai"}}},
                {"opportune": {"model": {"backend": "nonsense"}}},
                {"opportune": {"model": {"path": "/nonexistent.gguf", "threads": -1, "nCtx": "big"}}},
            ]
        settings = self.rng.choice(choices)
        self._restore_in = self.rng.randint(1, 10)
        out = self.notification("config", "workspace/didChangeConfiguration", {"settings": settings})
        # Too deep for json.dumps (recursion): nest it as text.
        nested = b'{"a":' * depth + b"{}" + b"}" * depth
        body = out.data.split(b"\r\n\r\n", 1)[1].replace(b'"DEEP"', nested)
        out.data = frame(body)
        return [out]

    def deep_nesting(self) -> list[Outgoing]:
        n = self.nesting
        language, text = self.rng.choice(
            [
                ("python", "x = " + "(" * n + ")" * n + "\n" + "y = " + "[" * n),
                ("python", "x = " + "(" * n),
                ("javascript", "let a = " + "{" * n),
                ("c", "int main() { return " + "(" * n),
                ("rust", "fn f() " + "{" * n),
                ("json", "[" * n),
            ]
        )
        out = self.open_document(text, language)
        doc = self.docs[json.loads(out[0].data.split(b"\r\n\r\n", 1)[1])["params"]["textDocument"]["uri"]]
        out.extend(self.type_and_complete_in(doc, self.rng.choice(["(", "x", "\n", "{"]), "deep_nesting"))
        return out

    def type_and_complete_in(self, doc: DocModel, chars: str, category: str) -> list[Outgoing]:
        at = end_position(doc.text)
        doc.text += chars
        change = self._change(doc, [{"range": {"start": at, "end": at}, "text": chars}])
        change.category = category
        req = self.request(
            category, "textDocument/inlineCompletion", self.completion_params(doc.uri, end_position(doc.text))
        )
        return [change, req]

    def huge_line(self) -> list[Outgoing]:
        body = "x = '" + self.rng.choice("ab😀") * (self.huge_bytes // 4) + "'"
        if self.docs and self.rng.random() < 0.5:
            doc = self.pick_doc()
            assert doc is not None
            at = end_position(doc.text)
            out = [self._change(doc, [{"range": {"start": at, "end": at}, "text": body}])]
            doc.text += body
            out[0].category = "huge_line"
        else:
            out = self.open_document(body, "python")
            doc = self.docs[json.loads(out[0].data.split(b"\r\n\r\n", 1)[1])["params"]["textDocument"]["uri"]]
        out.extend(self.type_and_complete_in(doc, "z", "huge_line"))
        # Close it most of the time, so the run does not keep 10 MB per draw.
        if self.rng.random() < 0.8:
            del self.docs[doc.uri]
            self.closed.append(doc.uri)
            out.append(
                self.notification("huge_line", "textDocument/didClose", {"textDocument": {"uri": doc.uri}})
            )
        return out

    def reinitialize(self) -> list[Outgoing]:
        return [
            self.request(
                "reinitialize",
                "initialize",
                {
                    "processId": None,
                    "rootUri": None,
                    "capabilities": {},
                    "initializationOptions": {"telemetry": {"flushIntervalS": 0.2}},
                },
            )
        ]


# --------------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------------


@dataclass
class FuzzReport:
    seed: int
    backend: str
    bound_s: float
    messages: int = 0
    requests: int = 0  # well-formed requests sent
    answered: int = 0
    unanswered: list[str] = field(default_factory=list)  # "category method id" of well-formed requests
    bad_responses: list[str] = field(default_factory=list)  # answered, but not a proper result/error
    spec_requests: int = 0
    spec_unanswered: int = 0
    internal_errors: Counter[str] = field(default_factory=Counter)  # -32603 answers: a handler raised
    error_codes: Counter[int] = field(default_factory=Counter)
    crashes: int = 0
    returncode: int | None = None
    worst_response_s: float = 0.0
    worst_response: str = ""
    slowest: list[tuple[float, str]] = field(default_factory=list)  # the five slowest answers
    stray_examples: list[str] = field(default_factory=list)
    over_bound: list[str] = field(default_factory=list)
    stray_responses: int = 0
    protocol_errors: list[str] = field(default_factory=list)
    shown_messages: int = 0
    shown_examples: list[str] = field(default_factory=list)
    rss_start_kb: int = 0
    rss_max_kb: int = 0
    rss_end_kb: int = 0
    mute: bool = False  # alive but stopped answering: the run was cut short
    final_ok: bool = False
    final_detail: str = ""
    stderr_exceptions: Counter[str] = field(default_factory=Counter)
    by_category: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def failures(self) -> list[str]:
        problems = []
        if self.crashes:
            problems.append(f"the server died (returncode {self.returncode})")
        if self.mute:
            problems.append(f"the server stopped answering (alive, silent) after message {self.messages}")
        if self.unanswered:
            problems.append(
                f"{len(self.unanswered)} well-formed requests unanswered, e.g. {self.unanswered[:3]}"
            )
        if self.over_bound:
            problems.append(
                f"{len(self.over_bound)} answers slower than {self.bound_s}s, e.g. {self.over_bound[:3]}"
            )
        if self.bad_responses:
            problems.append(f"{len(self.bad_responses)} malformed responses, e.g. {self.bad_responses[:3]}")
        if self.stray_responses:
            problems.append(f"{self.stray_responses} responses to ids never sent (answers to notifications?)")
        if self.protocol_errors:
            problems.append(f"stdout is not clean JSON-RPC: {self.protocol_errors[:3]}")
        if not self.final_ok:
            problems.append(f"the final well-formed completion failed: {self.final_detail}")
        return problems

    def summary(self) -> str:
        lines = [
            f"seed {self.seed}, backend {self.backend}: {self.messages} messages fuzzed in {self.seconds:.1f} s "
            f"({self.requests} well-formed requests, {self.answered} answered)",
            f"crashes: {self.crashes}" + (f" (returncode {self.returncode})" if self.crashes else ""),
            f"worst response time: {self.worst_response_s * 1000:.0f} ms ({self.worst_response}); bound {self.bound_s} s",
            f"unanswered well-formed requests: {len(self.unanswered)}; slower than the bound: {len(self.over_bound)}",
            f"malformed requests JSON-RPC wants answered: {self.spec_requests}, left unanswered: {self.spec_unanswered}",
            f"error answers by code: {dict(self.error_codes)}; internal errors: {dict(self.internal_errors)}",
            f"stray responses: {self.stray_responses}; stdout protocol errors: {len(self.protocol_errors)}; "
            f"showMessage pop-ups: {self.shown_messages}",
            f"server RSS: start {self.rss_start_kb // 1024} MB, max {self.rss_max_kb // 1024} MB, end {self.rss_end_kb // 1024} MB",
            f"exceptions logged on stderr: {dict(self.stderr_exceptions.most_common(8))}",
            f"final completion: {'ok' if self.final_ok else 'FAILED'} {self.final_detail}",
            "slowest answers: " + "; ".join(f"{s * 1000:.0f} ms {what}" for s, what in self.slowest),
        ]
        if self.shown_examples:
            lines.append("pop-ups said: " + " | ".join(self.shown_examples))
        if self.stray_examples:
            lines.append("stray responses: " + " | ".join(self.stray_examples))
        return "\n".join(lines)


def _check_response(message: dict[str, Any]) -> str | None:
    """What is wrong with a response envelope, or None."""
    if message.get("jsonrpc") != "2.0":
        return "jsonrpc is not 2.0"
    has_result, has_error = "result" in message, "error" in message
    if has_result == has_error:
        return "needs exactly one of result and error"
    if has_error:
        error = message["error"]
        if (
            not isinstance(error, dict)
            or not isinstance(error.get("code"), int)
            or not isinstance(error.get("message"), str)
        ):
            return f"malformed error {str(error)[:120]}"
    return None


def _check_inline_result(result: Any) -> str | None:
    if result is None:
        return None
    items = result.get("items") if isinstance(result, dict) else result
    if not isinstance(items, list):
        return f"inlineCompletion result is neither a list nor an InlineCompletionList: {str(result)[:120]}"
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("insertText"), str | dict):
            return f"an item without insertText: {str(item)[:120]}"
        rng = item.get("range")
        if rng is not None:
            for end in ("start", "end"):
                pos = rng.get(end, {})
                if not all(isinstance(pos.get(k), int) and pos.get(k) >= 0 for k in ("line", "character")):
                    return f"bad range {rng}"
    return None


async def _final_check(server: RawServer, bound: float) -> tuple[bool, str]:
    """A fresh document and a completion whose answer the fake backend's copy model makes certain (the real
    model has to say something).  Settings back to the defaults, whatever the fuzz left, with a long
    deadline: this checks that the server still works, not how fast (a cold prompt on the real model can
    take longer than the default deadline on a busy machine)."""
    uri = "file:///fuzz/final-check.py"
    text = "abc = 1\nabc = 1\nab"
    settings = {"opportune": {"completion": {"deadlineMs": 10_000}}}
    await server.notify("workspace/didChangeConfiguration", {"settings": settings})
    await server.request("opportune/setEnabled", {"enabled": True}, timeout=bound)
    await server.notify(
        "textDocument/didOpen",
        {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": text}},
    )
    at = end_position(text)
    await server.notify(
        "textDocument/didChange",
        {
            "textDocument": {"uri": uri, "version": 2},
            "contentChanges": [{"range": {"start": at, "end": at}, "text": "c"}],
        },
    )
    response = await server.request(
        "textDocument/inlineCompletion",
        {"textDocument": {"uri": uri}, "position": end_position(text + "c"), "context": {"triggerKind": 2}},
        timeout=max(bound, 30),
    )
    result = response.message.get("result")
    items = result.get("items") if isinstance(result, dict) else result
    if not items:
        return False, f"no suggestion: {str(response.message)[:200]}"
    text0 = items[0].get("insertText", "")
    return bool(text0.strip()), f"suggested {text0!r} in {response.seconds * 1000:.0f} ms"


async def run_fuzz(
    messages: int = 1000,
    seed: int = 1,
    *,
    backend: str = "fake",
    bound_s: float = 5.0,
    db: Path | None = None,
    max_inflight: int = 8,
    huge_bytes: int = 10_000_000,
    nesting: int = 5_000,
    options: dict[str, Any] | None = None,
    stderr_path: Path | None = None,
    progress: Callable[[str], None] | None = None,
    skip: tuple[str, ...] = (),
) -> FuzzReport:
    """Fuzz one fresh server with ``messages`` messages from ``seed``; never raises for server faults."""
    report = FuzzReport(seed=seed, backend=backend, bound_s=bound_s)
    tmp = None
    env: dict[str, str] = {}
    if db is None:
        tmp = tempfile.TemporaryDirectory(prefix="opportune-fuzz-")
        db = Path(tmp.name) / "fuzz.db"
        env["XDG_STATE_HOME"] = str(Path(tmp.name) / "state")  # no install id left in the user's state
    server = RawServer(backend, db, stderr_path=stderr_path, env=env)
    fuzzer = Fuzzer(seed, huge_bytes=huge_bytes, nesting=nesting, llama=backend == "llama", skip=skip)
    started = time.perf_counter()
    waits: list[asyncio.Task[None]] = []
    parse_errors_due = 0
    out_index: dict[str, int] = {}
    last_answer = time.perf_counter()
    inflight = asyncio.Semaphore(max_inflight)
    try:
        await server.start()
        init_options = {"telemetry": {"flushIntervalS": 0.2}, **(options or {})}
        await server.initialize(init_options, timeout=120)
        report.rss_start_kb = report.rss_max_kb = rss_kb(server.pid)

        async def wait_for(out: Outgoing, future: asyncio.Future[Response]) -> None:
            try:
                try:
                    response = await asyncio.wait_for(asyncio.shield(future), bound_s)
                finally:
                    inflight.release()  # a slot is held at most for the bound
            except TimeoutError:
                if not out.must_answer:
                    report.spec_unanswered += 1
                    return
                # Late is a failure already; keep listening a while to tell "late" from "never".
                try:
                    response = await asyncio.wait_for(future, 2 * bound_s)
                except (TimeoutError, asyncio.CancelledError):
                    report.unanswered.append(f"{out.category} {out.method} id={out.request_id!r}")
                    return
            except asyncio.CancelledError:
                if out.must_answer:
                    report.unanswered.append(
                        f"{out.category} {out.method} id={out.request_id!r} (server gone)"
                    )
                return
            _record(out, response)

        def _record(out: Outgoing, response: Response) -> None:
            nonlocal last_answer
            last_answer = time.perf_counter()
            if out.must_answer:
                report.answered += 1
                report.slowest = sorted(
                    [
                        *report.slowest,
                        (
                            response.seconds,
                            f"#{out_index[id_key(out.request_id)]} {out.category} {out.method}",
                        ),
                    ],
                    reverse=True,
                )[:5]
                if response.seconds > report.worst_response_s:
                    report.worst_response_s = response.seconds
                    report.worst_response = f"{out.category} {out.method}"
                if response.seconds > bound_s:
                    report.over_bound.append(f"{out.category} {out.method} {response.seconds:.1f}s")
            problem = _check_response(response.message)
            if (
                problem is None
                and out.method == "textDocument/inlineCompletion"
                and "result" in response.message
            ):
                problem = _check_inline_result(response.message["result"])
            if problem is not None and out.must_answer:
                report.bad_responses.append(f"{out.category} {out.method}: {problem}")
            error = response.message.get("error")
            if isinstance(error, dict) and isinstance(error.get("code"), int):
                report.error_codes[error["code"]] += 1
                if error["code"] == -32603:
                    report.internal_errors[f"{out.method or '?'}: {str(error.get('message'))[:80]}"] += 1
            elif out.method == "textDocument/inlineCompletion":
                fuzzer.harvest(response.message)

        while report.messages < messages:
            for out in fuzzer.next_messages():
                if report.messages >= messages:
                    break
                report.messages += 1
                report.by_category[out.category] += 1
                out_index[id_key(out.request_id)] = report.messages
                if out.must_answer or out.spec_answer:
                    if out.must_answer:
                        report.requests += 1
                    else:
                        report.spec_requests += 1
                    if out.unparseable:
                        parse_errors_due += 1
                    elif id_key(out.request_id) not in server.pending:
                        await inflight.acquire()
                        future = await server.send_request_bytes(out.request_id, out.data)
                        waits.append(asyncio.create_task(wait_for(out, future)))
                        continue
                await server.write(out.data)
                if server.returncode is not None:
                    break
            if server.returncode is not None:
                report.crashes = 1
                report.returncode = server.returncode
                break
            if len(report.unanswered) >= 5 and time.perf_counter() - last_answer > 3 * bound_s:
                report.mute = True  # every request times out from here on: stop rather than wait for each
                break
            if report.messages % 50 == 0:
                report.rss_max_kb = max(report.rss_max_kb, rss_kb(server.pid))
                if progress:
                    progress(f"{report.messages} messages, worst {report.worst_response_s * 1000:.0f} ms")
            await asyncio.sleep(0)  # let responses in
        if waits:
            await asyncio.gather(*waits)
        if server.returncode is None:
            try:
                report.final_ok, report.final_detail = await _final_check(server, bound_s)
            except Exception as e:
                report.final_ok, report.final_detail = False, f"{type(e).__name__}: {e}"
            report.rss_end_kb = rss_kb(server.pid)
            report.rss_max_kb = max(report.rss_max_kb, report.rss_end_kb)
        else:
            report.crashes = 1
            report.returncode = server.returncode
            report.final_detail = "the server is gone"
    except (BrokenPipeError, ConnectionResetError) as e:
        report.crashes = 1
        report.final_detail = f"the server closed its stdin: {e}"
    finally:
        for task in waits:
            task.cancel()
        if server.proc is not None:
            if server.returncode is None:
                await server.shutdown(timeout=30)
            else:
                await server.close()
            if report.crashes:
                report.returncode = server.returncode
        report.stray_responses = len(server.stray_responses)
        report.stray_examples = [json.dumps(m)[:300] for m in server.stray_responses[:5]]
        report.spec_unanswered += max(0, parse_errors_due - server.null_id_errors)
        report.protocol_errors = server.protocol_errors
        report.shown_messages = len(server.shown_messages)
        report.shown_examples = sorted({str(m.get("message", ""))[:100] for m in server.shown_messages})[:6]
        report.stderr_exceptions = server.stderr_exceptions
        report.seconds = time.perf_counter() - started
        if report.crashes:
            report.final_detail += "\nlast stderr lines:\n" + "\n".join(list(server.stderr_tail)[-40:])
        if tmp is not None:
            tmp.cleanup()
    return report


def iter_seeds(first: int, count: int) -> Iterator[int]:
    yield from range(first, first + count)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--backend", choices=["fake", "llama"], default="fake")
    parser.add_argument(
        "--bound", type=float, default=None, help="seconds per request (default 5 fake, 30 llama)"
    )
    parser.add_argument("--max-inflight", type=int, default=8, help="requests outstanding at once")
    parser.add_argument("--huge-bytes", type=int, default=10_000_000, help="size of the huge-line messages")
    parser.add_argument("--nesting", type=int, default=5_000, help="depth of the nested-bracket documents")
    parser.add_argument("--db", type=Path, help="telemetry store (default: a temporary file)")
    parser.add_argument("--stderr", type=Path, help="keep the server's stderr in this file")
    parser.add_argument("--strict", action="store_true", help="malformed requests left unanswered fail too")
    parser.add_argument(
        "--skip", action="append", default=[], metavar="CATEGORY", help="leave a category out"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    bound = args.bound if args.bound is not None else (5.0 if args.backend == "fake" else 30.0)
    report = asyncio.run(
        run_fuzz(
            args.messages,
            args.seed,
            backend=args.backend,
            bound_s=bound,
            db=args.db,
            max_inflight=args.max_inflight,
            huge_bytes=args.huge_bytes,
            nesting=args.nesting,
            stderr_path=args.stderr,
            progress=lambda s: print(s, file=sys.stderr, flush=True),
            skip=tuple(args.skip),
        )
    )
    if args.json:
        data = {k: v for k, v in report.__dict__.items()}
        data["failures"] = report.failures
        print(json.dumps(data, default=str, indent=2))
    else:
        print(report.summary())
        for problem in report.failures:
            print("FAIL:", problem)
    failed = bool(report.failures) or (args.strict and report.spec_unanswered > 0)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
