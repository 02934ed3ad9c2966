"""Reading LSP frames (``Content-Length`` header, blank line, JSON body) so that one bad frame costs one
message, never the session.

pygls's reader (``pygls.io_.run_async``) trusts every header: ``Content-Length: 999999999999999`` makes it
allocate the claimed size (MemoryError, the process exits), a length that overflows a C ssize_t raises
OverflowError, and a length that is negative, not a number, shorter or longer than its body leaves the
stream misaligned for good: each later header is glued to the end of the previous body, never matches,
and the server stays alive but answers nothing, so the editor never restarts it.

This reader instead:

- refuses a length above ``max_bytes`` before reading anything of the body (a setting: ``opportune serve
  --max-message-mb``);
- after any fault (a refused or unreadable length, a header block without a length, a body that is not
  JSON) logs it and resynchronises at the next ``Content-Length`` header, wherever it starts: at the end of
  a line glued to a body, or inside the bytes a too-long length swallowed (those are read again, so the
  message after a lying frame is not lost);
- keeps what it buffers bounded (header lines, skipped garbage), whatever the input;
- lets a fault it cannot recover from (the input itself failing) end the process with a non-zero status,
  so that the editor restarts the server instead of talking to a deaf one.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""The largest message accepted (a 20 MB file opened whole fits, with room for JSON escapes)."""
MAX_HEADER_LINE = 8192
"""A header line longer than this is garbage, not a header."""
_HEADER_OVERLAP = 64
"""Bytes searched again when more of a body arrives, so a header split between two reads is found."""
_KEEP_WHILE_SKIPPING = 256
"""While skipping garbage, the tail kept in case a header starts in it."""

# A header that can start a frame: a length of digits only (no sign, at most 20 digits), at the end of a
# line.  Searched anywhere when resynchronising, so a header glued to the end of a body is found.
_FRAME_START = re.compile(rb"(?i:content-length)[ \t]*:[ \t]*(\d{1,20})[ \t]*\r?\n")
_LENGTH_HEADER = re.compile(rb"(?i:content-length)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?\n\Z")
_OTHER_HEADER = re.compile(rb"[A-Za-z][A-Za-z0-9-]*[ \t]*:[^\r\n]*\r?\n\Z")


def _find_frame_start(data: bytes | bytearray) -> re.Match[bytes] | None:
    """The first header in ``data`` that can start a frame.  A plain find of the header's letters picks the
    candidates: the case-insensitive pattern alone scans 30 MB in about a second."""
    pos = 0
    while True:
        hits = [k for k in (data.find(b"ength", pos), data.find(b"ENGTH", pos)) if k >= 0]
        if not hits:
            return None
        at = min(hits)
        match = _FRAME_START.match(data, max(0, at - len("content-l")))
        if match is not None:
            return match
        pos = at + 1


class FrameError(Exception):
    """A frame that cannot be read; the stream is resynchronised after it."""


class BufferedSource:
    """Bytes from ``read_chunk`` (which returns what is available, b"" at the end) with a look-ahead buffer
    that can be searched, consumed and pushed back into."""

    def __init__(self, read_chunk: Callable[[int], Awaitable[bytes]], chunk_size: int = 1 << 20) -> None:
        self._read_chunk = read_chunk
        self._chunk_size = chunk_size
        self.buffer = bytearray()
        self.eof = False

    async def fill(self) -> bool:
        """Read one more chunk into the buffer; False at the end of the input."""
        if self.eof:
            return False
        data = await self._read_chunk(self._chunk_size)
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    def take(self, n: int) -> bytes:
        data = bytes(memoryview(self.buffer)[:n])
        del self.buffer[:n]  # from the front: CPython only moves the start
        return data

    def unread(self, data: bytes) -> None:
        self.buffer[:0] = data

    async def readline(self, limit: int) -> bytes | None:
        """One line with its newline; None at the end of the input.  A line longer than ``limit`` is
        returned cut at ``limit`` (without a newline), so a caller can tell it is not a header."""
        scanned = 0
        while True:
            at = self.buffer.find(b"\n", scanned, limit)
            if at >= 0:
                return self.take(at + 1)
            if len(self.buffer) >= limit:
                return self.take(limit)
            scanned = len(self.buffer)
            if not await self.fill():
                return self.take(len(self.buffer)) if self.buffer else None

    async def readexactly(self, n: int) -> bytes | None:
        """``n`` bytes, or None when the input ends first.  A large body is gathered as a list of chunks and
        joined once (growing one buffer copies it again and again).

        Before waiting for more input, what has come so far is searched for a frame header: valid JSON
        cannot hold one (a raw line break is never inside a JSON string, and the words cannot stand outside
        one), so a header there means the length lied (too long) and the client is already sending the next
        frame.  Waiting for the promised bytes would hold that frame, and the client, until more arrived;
        instead the bytes from the header are put back and ``FrameError`` raised."""
        if len(self.buffer) >= n:
            return self.take(n)
        parts = [self.take(len(self.buffer))]
        have = len(parts[0])
        fresh, fresh_at = parts[0], 0  # what arrived since the last search, and where it starts
        tail = b""  # the bytes just before ``fresh``: a header may straddle two reads
        while have < n:
            window = tail + fresh  # only the new bytes are searched: no quadratic cost on big bodies
            match = _find_frame_start(window)
            if match is not None:
                gathered = b"".join(parts)
                self.unread(gathered[fresh_at - len(tail) + match.start() :])
                raise FrameError("a frame header inside a body: its length was too long")
            tail = window[-_HEADER_OVERLAP:]
            data = await self._read_chunk(self._chunk_size) if not self.eof else b""
            if not data:
                self.eof = True
                self.buffer = bytearray(b"".join(parts))
                return None
            if have + len(data) > n:
                keep = n - have
                self.buffer += memoryview(data)[keep:]
                data = data[:keep]
            fresh, fresh_at = data, have
            have += len(data)
            parts.append(data)
        return b"".join(parts)

    async def skip_to_frame(self) -> int | None:
        """Drop bytes up to the next ``Content-Length`` header that can start a frame; returns how many were
        dropped, or None when the input ended first.  Memory stays bounded whatever the garbage."""
        dropped = 0
        while True:
            match = _find_frame_start(self.buffer)
            if match is not None:
                del self.buffer[: match.start()]
                return dropped + match.start()
            if len(self.buffer) > _KEEP_WHILE_SKIPPING:
                cut = len(self.buffer) - _KEEP_WHILE_SKIPPING
                del self.buffer[:cut]
                dropped += cut
            if not await self.fill():
                return None


async def read_frame(source: BufferedSource, max_bytes: int) -> bytes | None:
    """The next frame's body; None at the end of the input.  Raises ``FrameError`` for a frame that cannot
    be read, after which the caller resynchronises (``source.skip_to_frame``)."""
    length: int | None = None
    while True:
        line = await source.readline(MAX_HEADER_LINE)
        if line is None:
            return None
        if line in (b"\r\n", b"\n"):
            if length is None:
                raise FrameError("a header block without a Content-Length")
            break
        match = _LENGTH_HEADER.match(line)
        if match is not None:
            value = match.group(1)
            if not value.isdigit():
                raise FrameError(f"Content-Length {value[:40]!r} is not a length")
            if len(value) > 20 or int(value) > max_bytes:
                raise FrameError(f"a message of {value[:24].decode()} bytes refused (limit {max_bytes})")
            length = int(value)
        elif _OTHER_HEADER.match(line) is None:
            # Not a header: the rest of a body whose length was too short, or garbage.  Put it back, so the
            # resynchronisation finds a header glued to its end.
            source.unread(line)
            raise FrameError(f"not a header: {line[:60]!r}")
    body = await source.readexactly(length)
    if body is None:
        return None
    return body


async def run_frames(
    stop_event: threading.Event,
    source: BufferedSource,
    handle: Callable[[bytes], None],
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> None:
    """Read frames until the input ends or ``stop_event`` is set, handing each body to ``handle``.

    ``handle`` raises ``ValueError`` (or RecursionError) for a body that is not JSON: then the body is read
    again from the first frame header in it or after it (a too-long length swallows the next frame's start)."""
    while not stop_event.is_set():
        try:
            body = await read_frame(source, max_bytes)
        except FrameError as e:
            log.warning("bad frame: %s; resynchronising at the next Content-Length header", e)
            dropped = await source.skip_to_frame()
            if dropped is None:
                return
            if dropped:
                log.info("skipped %d bytes to the next frame", dropped)
            continue
        if body is None:
            return
        try:
            handle(body)
        except (ValueError, RecursionError) as e:
            # Not JSON: its length lied (too long, it swallowed the start of the next frame; or the header
            # block came without a body), or the body is just bad.  Read it again from the next header
            # inside it or after it; the lying frame's own header is consumed, so this always progresses.
            log.warning("a frame's body is not JSON (%s); resynchronising", type(e).__name__)
            source.unread(body)
            dropped = await source.skip_to_frame()
            if dropped is None:
                return


def parse_body(body: bytes, object_hook: Callable[[dict[str, Any]], Any]) -> Any:
    """The JSON message in a body (ValueError or RecursionError when it is not one)."""
    return json.loads(body, object_hook=object_hook)
