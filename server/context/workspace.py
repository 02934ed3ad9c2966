"""The workspace on disk: its root (from ``initialize``), files read safely inside it, and a bounded index of
its source files built off the hot path.

Everything that reads the user's disk for the prompt goes through :class:`Workspace`, which holds the rules:

- nothing outside the root is ever read: every path is resolved (symlinks followed) and refused unless the
  real file lies inside the root's real path, so a symlink cannot lead out of it, and a symlink loop is an
  unreadable file (``resolve`` raises), not a hang;
- unreadable, binary (a NUL byte in the first 8 KB) and huge files (``max_file_bytes``) are skipped, and a
  file is never read past that size;
- the index walks the tree on its own thread without following directory symlinks, stops after
  ``max_files`` source files, and yields the interpreter lock often, so a 50,000-file workspace does not
  slow a keystroke.  Until it is ready, lookups that need it find nothing; direct lookups still work.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from opportune.server.context.syntax import _EXTENSIONS, language_for

# File name endings of the languages tree-sitter knows here (the syntax module's table).
SOURCE_EXTENSIONS = frozenset(_EXTENSIONS)

log = logging.getLogger(__name__)

# Folders that hold no hand-written source of the project (and can be huge).
SKIP_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        "node_modules",
        "__pycache__",
        ".venv",
        "venv",
        ".tox",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
        "target",
        "build",
        "dist",
        ".idea",
        ".vscode",
    }
)
BINARY_SNIFF_BYTES = 8192
# The indexer sleeps this long every this many entries: a bare sleep(0) hands the interpreter lock over only
# if the loop's thread is ready at that instant, while a short real sleep leaves it a window.
YIELD_EVERY = 32
YIELD_SLEEP_S = 0.0002


class Workspace:
    """The root folder and the files in it; every method is safe to call from any thread."""

    def __init__(
        self, root: Path | None, *, max_files: int = 100_000, max_file_bytes: int = 1_000_000
    ) -> None:
        real: Path | None = None
        if root is not None:
            try:
                real = root.resolve(strict=True)
                if not real.is_dir():
                    real = None
            except (OSError, RuntimeError):
                real = None
        self.root = real
        self.max_files = max_files
        self.max_file_bytes = max_file_bytes
        self._by_name: dict[str, list[str]] = {}
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.indexed_files = 0
        self.truncated = False

    # ---- paths -----------------------------------------------------------------------------------

    def relpath(self, path: str | Path) -> str | None:
        """``path`` (absolute, or relative to the root) as a POSIX path relative to the root, if it is a
        regular file whose real location is inside the root; None otherwise (outside, missing, a loop)."""
        if self.root is None:
            return None
        candidate = Path(path)
        if not candidate.is_absolute():
            candidate = self.root / candidate
        try:
            real = candidate.resolve(strict=True)
        except (OSError, RuntimeError):  # missing, unreadable, or a symlink loop
            return None
        if not real.is_relative_to(self.root):
            return None
        try:
            if not real.is_file():
                return None
        except OSError:
            return None
        return real.relative_to(self.root).as_posix()

    def is_dir(self, rel: str) -> bool:
        if self.root is None:
            return False
        try:
            real = (self.root / rel).resolve(strict=True)
        except (OSError, RuntimeError):
            return False
        return real.is_relative_to(self.root) and real.is_dir()

    def list_dir(self, rel: str, suffixes: tuple[str, ...], limit: int = 64) -> list[str]:
        """Regular files directly in folder ``rel`` ending with one of ``suffixes``, sorted, at most
        ``limit``; each checked to be inside the root."""
        if not self.is_dir(rel):
            return []
        assert self.root is not None
        found: list[str] = []
        try:
            with os.scandir(self.root / rel) as entries:
                names = sorted(e.name for e in entries if e.name.endswith(suffixes))
        except OSError:
            return []
        for name in names:
            path = self.relpath(f"{rel}/{name}" if rel else name)
            if path is not None:
                found.append(path)
                if len(found) >= limit:
                    break
        return found

    def uri_to_relpath(self, uri: str) -> str | None:
        """The workspace-relative path of a ``file:`` URI inside the root (the file need not exist on disk)."""
        if self.root is None or not uri.startswith("file:"):
            return None
        from urllib.parse import unquote, urlsplit

        path = Path(unquote(urlsplit(uri).path))
        try:
            parent = path.parent.resolve(strict=False)
        except (OSError, RuntimeError):
            return None
        if not parent.is_relative_to(self.root):
            return None
        return (parent / path.name).relative_to(self.root).as_posix()

    def stat_key(self, rel: str) -> tuple[int, int] | None:
        """(mtime in ns, size) of a file inside the root: the cache key of what was read from it."""
        path = self.relpath(rel)
        if path is None or self.root is None:
            return None
        try:
            st = (self.root / path).stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def read(self, rel: str) -> str | None:
        """The text of a file inside the root, or None if it is outside, unreadable, binary, not UTF-8 or
        larger than ``max_file_bytes`` (never read past that size)."""
        path = self.relpath(rel)
        if path is None or self.root is None:
            return None
        try:
            with open(self.root / path, "rb") as f:
                data = f.read(self.max_file_bytes + 1)
        except OSError:
            return None
        if len(data) > self.max_file_bytes or b"\x00" in data[:BINARY_SNIFF_BYTES]:
            return None
        try:
            return data.decode("utf-8").replace("\r\n", "\n")
        except UnicodeDecodeError:
            return None

    # ---- the index ---------------------------------------------------------------------------------

    def start_indexing(self) -> None:
        """Build the index on a daemon thread (once)."""
        if self.root is None or self._thread is not None:
            self._ready.set()
            return
        self._thread = threading.Thread(target=self._index, name="opportune-index", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def find(self, suffix: str, limit: int = 8) -> list[str]:
        """Indexed files whose relative path ends with ``suffix`` (whole path components), shortest first."""
        name = suffix.rsplit("/", 1)[-1]
        matches = [p for p in self._by_name.get(name, ()) if p == suffix or p.endswith("/" + suffix)]
        return sorted(matches, key=lambda p: (p.count("/"), p))[:limit]

    def _index(self) -> None:
        try:
            by_name: dict[str, list[str]] = {}
            count = 0
            try:
                found = self._walk_in_child()
            except (OSError, subprocess.SubprocessError) as e:
                log.info("indexing in this process (%s)", e)
                found = self._walk()
            for rel in found:
                by_name.setdefault(rel.rsplit("/", 1)[-1], []).append(rel)
                count += 1
                if count >= self.max_files:
                    self.truncated = True
                    break
            self._by_name = by_name
            self.indexed_files = count
        except Exception:  # an index is a help, never a reason to fail
            log.exception("indexing the workspace failed")
        finally:
            self._ready.set()

    def _walk_in_child(self) -> Iterator[str]:
        """Relative paths of the regular files under the root, listed by a child interpreter: the walk is
        the interpreter-bound part, and in a child it cannot hold the lock the event loop needs."""
        assert self.root is not None
        skip = ",".join(sorted(SKIP_DIRS))
        suffixes = ",".join(sorted(SOURCE_EXTENSIONS))
        cmd = [sys.executable, "-I", "-S", "-c", _WALKER, str(self.root), str(self.max_files), skip, suffixes]
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        assert proc.stdout is not None
        rest = b""
        try:
            while not self._stop.is_set():
                chunk = proc.stdout.read1(1 << 16)  # type: ignore[attr-defined]
                if not chunk:
                    break
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                for count, line in enumerate(lines):
                    if count % (YIELD_EVERY * 8) == 0:
                        time.sleep(YIELD_SLEEP_S)  # let the event loop's thread run
                    yield line.decode("utf-8", "surrogateescape")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()

    def _walk(self) -> Iterator[str]:
        assert self.root is not None
        pending = [""]
        seen = 0
        while pending and not self._stop.is_set():
            rel = pending.pop()
            try:
                with os.scandir(self.root / rel) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError:
                continue
            subdirs = []
            for entry in entries:
                seen += 1
                if seen % YIELD_EVERY == 0:
                    time.sleep(YIELD_SLEEP_S)  # let the event loop's thread run
                name = entry.name
                child = f"{rel}/{name}" if rel else name
                try:
                    # Directory symlinks are not followed: no loops, no way out of the root.
                    if entry.is_dir(follow_symlinks=False):
                        if name not in SKIP_DIRS and not name.startswith("."):
                            subdirs.append(child)
                    elif entry.is_file(follow_symlinks=False) and language_for(None, name) is not None:
                        yield child
                except OSError:
                    continue
            pending.extend(reversed(subdirs))


# The walk a child interpreter runs (``-I -S``: nothing of the user's environment or site packages), at a
# lower priority than the server: regular source files (names ending with one of argv[4]) under argv[1],
# directory symlinks not followed, folders of argv[3] and hidden ones left out, at most argv[2] paths, one
# per line, sorted per folder.
_WALKER = """
import os, sys
try:
    os.nice(10)  # the editor's keystrokes come first
except OSError:
    pass
root, limit = sys.argv[1], int(sys.argv[2])
skip, suffixes = set(sys.argv[3].split(",")), tuple(sys.argv[4].split(","))
out, pending, count = sys.stdout.buffer, [""], 0
while pending and count < limit:
    rel = pending.pop()
    try:
        with os.scandir(os.path.join(root, rel)) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        continue
    subdirs = []
    for entry in entries:
        name = entry.name
        if "\\n" in name:
            continue
        child = rel + "/" + name if rel else name
        try:
            if entry.is_dir(follow_symlinks=False):
                if name not in skip and not name.startswith("."):
                    subdirs.append(child)
            elif name.lower().endswith(suffixes) and entry.is_file(follow_symlinks=False):
                out.write(child.encode("utf-8", "surrogateescape") + b"\\n")
                count += 1
                if count >= limit:
                    break
        except OSError:
            continue
    pending.extend(reversed(subdirs))
out.flush()
"""
