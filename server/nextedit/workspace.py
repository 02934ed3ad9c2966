"""Workspace files for next edits: an index of which files mention which names, built off the hot path.

A background thread walks the workspace root (from ``initialize``) once, then re-checks modification times
every ``refresh_s``; each source file of a known language is tokenised into its set of identifiers.  A
next-edit request then asks which files mention a name and reads only those.  Everything is bounded: the
number of files, their size, the names kept; directories of dependencies and build output are skipped,
and nothing outside the root is read (symbolic links that leave it are ignored).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from opportune.server.context.syntax import language_for

log = logging.getLogger(__name__)

SKIPPED_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        "node_modules",
        ".venv",
        "venv",
        "site-packages",
        "__pycache__",
        "build",
        "dist",
        "target",
        ".tox",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
        "vendor",
        ".idea",
        ".vscode",
    }
)
_WORD = re.compile(rb"[A-Za-z_$][A-Za-z0-9_$]*")


@dataclass(frozen=True)
class IndexedFile:
    path: Path
    language: str
    mtime_ns: int
    size: int
    names: frozenset[bytes]


class WorkspaceIndex:
    """Which files under ``root`` mention which names; refreshed in the background."""

    def __init__(
        self, root: Path, *, max_files: int = 2000, max_file_bytes: int = 512_000, refresh_s: float = 30.0
    ):
        self.root = root.resolve()
        self.max_files = max_files
        self.max_file_bytes = max_file_bytes
        self.refresh_s = refresh_s
        self._files: dict[Path, IndexedFile] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ready = threading.Event()  # set after the first full pass

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="opportune-workspace-index", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception:  # an unreadable tree must not kill the thread or the server
                log.exception("indexing the workspace failed")
            self.ready.set()
            self._stop.wait(self.refresh_s)

    def refresh(self) -> None:
        """One pass: index new and changed files, forget deleted ones."""
        seen: set[Path] = set()
        for path, language, stat in self._walk():
            seen.add(path)
            with self._lock:
                known = self._files.get(path)
            if known is not None and known.mtime_ns == stat.st_mtime_ns and known.size == stat.st_size:
                continue
            try:
                data = path.read_bytes()[: self.max_file_bytes]
            except OSError:
                continue
            entry = IndexedFile(
                path, language, stat.st_mtime_ns, stat.st_size, frozenset(_WORD.findall(data))
            )
            with self._lock:
                self._files[path] = entry
        with self._lock:
            for gone in set(self._files) - seen:
                del self._files[gone]

    def _walk(self) -> list[tuple[Path, str, os.stat_result]]:
        found: list[tuple[Path, str, os.stat_result]] = []
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS and not d.startswith("."))
            for name in sorted(filenames):
                language = language_for(None, name)
                if language is None:
                    continue
                path = Path(dirpath) / name
                if not self.contains(path):
                    continue
                try:
                    stat = path.stat()
                except OSError:
                    continue
                if stat.st_size > self.max_file_bytes:
                    continue
                found.append((path, language, stat))
                if len(found) >= self.max_files:
                    return found
            if self._stop.is_set():
                break
        return found

    def contains(self, path: Path) -> bool:
        """``path`` is inside the root once symbolic links are resolved."""
        try:
            return path.resolve().is_relative_to(self.root)
        except (OSError, RuntimeError):
            return False

    def mentioning(self, name: str) -> list[IndexedFile]:
        """Indexed files whose text contains the identifier ``name``, in path order."""
        key = name.encode("utf-8", "surrogatepass")
        with self._lock:
            files = list(self._files.values())
        return sorted((f for f in files if key in f.names), key=lambda f: f.path)

    def read(self, entry: IndexedFile) -> str | None:
        """The file's text now, or None if it left the root, grew too large or cannot be read."""
        if not self.contains(entry.path):
            return None
        try:
            data = entry.path.read_bytes()
        except OSError:
            return None
        if len(data) > self.max_file_bytes or b"\x00" in data:
            return None
        return data.decode("utf-8", "replace")

    def __len__(self) -> int:
        with self._lock:
            return len(self._files)
