"""Project-wide context: what the rest of the workspace tells the model about the code at the cursor.

The block is built from four sources, in this order (the most stable first, so the prompt's evaluated
prefix survives the longest in the model's KV cache):

1. ``imports``: the definitions the current file imports from workspace files (signatures, class fields,
   first docstring lines; :mod:`.imports` finds the files, :mod:`.definitions` the stubs), the imported and
   used names first;
2. ``open_files``: the outline of the other open documents (those not already shown as imports);
3. ``similar``: the windows of other open and recently closed files most like the code before the cursor;
4. ``recent_edits``: the regions the user edited last (away from the cursor).

Each part is labelled with its workspace-relative path (the prompt renders it as a comment of the language),
parts are deduplicated, and each source gets a share of the project budget (what one leaves is offered to
the next).  The block is computed on a thread of its own and cached per document; a request only looks
the cache up by a key made of the block's inputs (the import list, the open set, saves, the focused file,
the cursor's region for similar snippets, the edit ring) and schedules a new computation when the key
changed.  So the block changes when its inputs change, never per keystroke, and no keystroke waits for it
(an invoked request may wait a bounded time, see :meth:`ProjectContext.request`).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from opportune.server.config import CompletionSettings
from opportune.server.context import imports as resolver
from opportune.server.context.definitions import MAX_PARSE_BYTES, Definition, DefinitionCache, extract
from opportune.server.context.neighbours import EditRing, identifiers, similar_snippets
from opportune.server.context.syntax import language_for
from opportune.server.context.workspace import Workspace

log = logging.getLogger(__name__)

SOURCES = ("imports", "open_files", "similar", "recent_edits")
REGION_LINES = 32  # similar snippets are looked up again when the cursor moves to another such region
SIMILAR_WINDOW_LINES = 16
RECENT_FILES = 8  # closed documents remembered for similar snippets
RECENT_FILE_CHARS = 200_000
NEAR_CURSOR_LINES = 64  # an edited region of the current file this close is in the window anyway
MAX_BLOCKS = 64  # documents whose last block is kept
USED_NAMES_CHARS = 400_000
MIN_PART_TOKENS = 8  # less room than this is not worth a labelled part


def estimate_tokens(text: str) -> int:
    """Tokens of code, estimated high (≈3 characters a token) without the model's tokenizer, which lives on
    the model's thread; the prompt builder measures the real count and shrinks the window to fit."""
    return len(text) // 3 + 1


@dataclass(frozen=True)
class ProjectOptions:
    """The settings the block depends on (a snapshot of ``completion.project_*``)."""

    budget_tokens: int = 0
    imports: bool = True
    open_files: bool = True
    similar: bool = True
    recent_edits: bool = True
    shares: tuple[float, float, float, float] = (0.5, 0.15, 0.2, 0.15)  # in SOURCES order

    @property
    def enabled(self) -> bool:
        return self.budget_tokens > 0 and (
            self.imports or self.open_files or self.similar or self.recent_edits
        )

    def on(self, source: str) -> bool:
        return bool(getattr(self, source))


@dataclass(frozen=True)
class Part:
    source: str  # one of SOURCES
    path: str  # workspace-relative (or the file's name outside a workspace)
    text: str
    tokens: int
    order: int = 0  # a definition's place in its file


@dataclass(frozen=True)
class ProjectBlock:
    parts: tuple[Part, ...] = ()

    def neighbours(self) -> tuple[tuple[str, str], ...]:
        """(path, text) pairs in prompt order, as ``PromptInput.neighbours`` takes them."""
        return tuple((p.path, p.text) for p in self.parts)

    def tokens_by_source(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.parts:
            out[p.source] = out.get(p.source, 0) + p.tokens
        return out


EMPTY = ProjectBlock()


@dataclass(frozen=True)
class _Job:
    """Everything one computation reads, captured on the event loop."""

    uri: str
    language: str
    text: str
    imports: tuple[str, ...]
    cursor_line: int
    options: ProjectOptions
    open_docs: tuple[tuple[str, str, str], ...]  # (uri, language, text) of the other open documents
    recent_docs: tuple[tuple[str, str, str], ...]
    regions: tuple[tuple[str, int, str], ...]  # (uri, first line, text) from the edit ring, newest last
    query: str = ""  # the code before the cursor that similar snippets are looked up with


@dataclass
class _Cached:
    key: tuple[object, ...]
    block: ProjectBlock
    pending: Future[ProjectBlock] | None = field(default=None)
    pending_key: tuple[object, ...] | None = None


class ProjectContext:
    """The project block of each open document, computed off the hot path.  Methods other than the
    computation itself run on the event loop."""

    def __init__(
        self,
        root: Path | None,
        *,
        max_files: int = 100_000,
        max_file_bytes: int = 1_000_000,
        count_tokens: Callable[[str], int] = estimate_tokens,
        index: bool = True,
        on_ready: Callable[[str], None] | None = None,
    ) -> None:
        """``on_ready(uri)`` is called (on the computing thread) when a document's first block is ready or its
        block changed: the engine warms the model with the new prompt then, rather than on the next
        keystroke."""
        self.workspace = Workspace(root, max_files=max_files, max_file_bytes=max_file_bytes)
        self._index = index
        self.count_tokens = count_tokens
        self.definitions = DefinitionCache()
        self.ring = EditRing()
        self._open: dict[str, tuple[str, Callable[[], str]]] = {}  # uri -> (language, text reader)
        self._recent: OrderedDict[str, tuple[str, str]] = OrderedDict()  # closed uri -> (language, text)
        self._blocks: OrderedDict[str, _Cached] = OrderedDict()
        self._open_generation = 0
        self._save_generation = 0
        self._focus_generation = 0
        self._focus = ""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="opportune-project")
        self._closed = threading.Event()
        self._on_ready = on_ready
        if index:
            self.workspace.start_indexing()

    # ---- inputs (event loop) -------------------------------------------------------------------------

    def opened(self, uri: str, language: str | None, text: Callable[[], str]) -> None:
        self._open[uri] = (language or "", text)
        self._recent.pop(uri, None)
        self._open_generation += 1

    def closed(self, uri: str) -> None:
        entry = self._open.pop(uri, None)
        self.ring.forget(uri)
        if entry is not None:
            language, text = entry
            content = text()
            if len(content) <= RECENT_FILE_CHARS:
                self._recent[uri] = (language, content)
                while len(self._recent) > RECENT_FILES:
                    self._recent.popitem(last=False)
        self._blocks.pop(uri, None)
        self._open_generation += 1

    def saved(self, uri: str) -> None:
        self._save_generation += 1

    def edited(self, uri: str, line: int, lines: Callable[[int, int], list[str]]) -> None:
        self.ring.note(uri, line, lines)

    # ---- the block -----------------------------------------------------------------------------------

    def request(
        self,
        uri: str,
        language: str | None,
        text: str,
        imports: Sequence[str],
        cursor_line: int,
        options: ProjectOptions,
        query: str = "",
    ) -> tuple[ProjectBlock, Future[ProjectBlock] | None]:
        """The document's current block, and the computation of a newer one if its inputs changed (the
        caller may wait for it a bounded time; otherwise the newer block is used from a later request on)."""
        if not options.enabled or self._closed.is_set():
            return EMPTY, None
        if uri != self._focus:
            self._focus = uri
            self._focus_generation += 1
        key = (
            uri,
            tuple(imports),
            self._open_generation,
            self._save_generation,
            self._focus_generation,
            cursor_line // REGION_LINES if options.similar else 0,
            self.ring.generation if options.recent_edits else 0,
            options,
        )
        cached = self._blocks.get(uri)
        if cached is not None:
            self._blocks.move_to_end(uri)
            if cached.key == key:
                return cached.block, None
            if cached.pending_key == key and cached.pending is not None:
                return cached.block, cached.pending
            if cached.pending is not None:
                cached.pending.cancel()  # not started yet: its inputs are already stale
        else:
            cached = self._blocks[uri] = _Cached((), EMPTY)
            while len(self._blocks) > MAX_BLOCKS:
                self._blocks.popitem(last=False)
        job = _Job(
            uri=uri,
            language=language or "",
            text=text,
            imports=tuple(imports),
            cursor_line=cursor_line,
            options=options,
            open_docs=tuple((u, lang, read()) for u, (lang, read) in self._open.items() if u != uri),
            recent_docs=tuple((u, lang, t) for u, (lang, t) in self._recent.items() if u != uri),
            regions=tuple((r.uri, r.first_line, r.text) for r in self.ring.regions()),
            query=query,
        )
        future = self._executor.submit(self._compute, job)
        cached.pending, cached.pending_key = future, key

        def publish(done: Future[ProjectBlock], entry: _Cached = cached, k: tuple[object, ...] = key) -> None:
            if done.cancelled() or done.exception() is not None:
                return
            if entry.pending_key == k:
                # The first block of a document is news even when empty: its opening waits for it to warm
                # the model.
                news = entry.block != done.result() or entry.key == ()
                entry.key, entry.block = k, done.result()
                entry.pending, entry.pending_key = None, None
                if news and self._on_ready is not None:
                    self._on_ready(uri)

        future.add_done_callback(publish)
        return cached.block, future

    def set_root(self, root: Path | None) -> None:
        """Another workspace root (a client's workspace folder change; the eval harness, per project)."""
        current = self.workspace
        if root is not None and current.root is not None and root.resolve() == current.root:
            return
        current.stop()
        self.workspace = Workspace(root, max_files=current.max_files, max_file_bytes=current.max_file_bytes)
        self.definitions = DefinitionCache()
        self._blocks.clear()
        if self._index:
            self.workspace.start_indexing()

    def close(self) -> None:
        self._closed.set()
        self.workspace.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ---- the computation (its own thread) ------------------------------------------------------------

    def _display(self, uri: str) -> str:
        return self.workspace.uri_to_relpath(uri) or uri.rsplit("/", 1)[-1]

    def _definitions_of(self, path: str, open_texts: dict[str, tuple[str, str]]) -> tuple[Definition, ...]:
        language = language_for(None, path)
        if language is None:
            return ()
        if path in open_texts:  # the editor's version wins over the disk's
            lang, text = open_texts[path]
            if len(text) > MAX_PARSE_BYTES:
                return ()
            return self.definitions.get(
                ("doc", path, hash(text), len(text)), lambda: extract(lang or language, text)
            )
        key = self.workspace.stat_key(path)
        if key is None:
            return ()

        def load() -> tuple[Definition, ...]:
            text = self.workspace.read(path)
            return extract(language, text) if text is not None else ()

        return self.definitions.get(("disk", path, key), load)

    def _compute(self, job: _Job) -> ProjectBlock:
        try:
            return self._assemble(job)
        except Exception:  # the project block is a help, never a reason to fail a completion
            log.exception("project context failed")
            return EMPTY

    def _assemble(self, job: _Job) -> ProjectBlock:
        options = job.options
        here = self.workspace.uri_to_relpath(job.uri)
        open_texts = {self._display(u): (lang, text) for u, lang, text in job.open_docs}
        # The names the file uses: from its head (imports, the code near them); a huge file is not scanned whole.
        used = identifiers(job.text[:USED_NAMES_CHARS])
        candidates: dict[str, list[Part]] = {s: [] for s in SOURCES}
        shown_paths: set[str] = set()
        if here is not None:
            shown_paths.add(here)

        if options.imports and here is not None and job.language:
            candidates["imports"] = self._import_parts(job, here, used, open_texts)
            shown_paths.update(p.path for p in candidates["imports"])
        if options.open_files:
            for u, lang, _ in job.open_docs:
                path = self._display(u)
                if path in shown_paths:
                    continue
                defs = self._definitions_of(path, open_texts) if lang else ()
                ordered = [d for d in defs if d.name in used] + [d for d in defs if d.name not in used]
                for d in ordered[:12]:
                    candidates["open_files"].append(
                        Part("open_files", path, d.text, self.count_tokens(d.text))
                    )
        if options.similar:
            query = job.query
            if not query:  # the lines before the cursor line, found without splitting a huge text
                start = 0
                for _ in range(max(0, job.cursor_line - SIMILAR_WINDOW_LINES)):
                    start = job.text.find("\n", start, start + USED_NAMES_CHARS) + 1
                    if start == 0:
                        break
                query = "\n".join(
                    job.text[start : start + 4 * USED_NAMES_CHARS].split("\n")[: SIMILAR_WINDOW_LINES + 1]
                )
            pool = [
                (u, t[:RECENT_FILE_CHARS])  # a huge open file: its head only
                for u, _, t in (*job.open_docs, *job.recent_docs)
                if self._display(u) != here
            ]
            for s in similar_snippets(
                query, pool, size=SIMILAR_WINDOW_LINES, stride=SIMILAR_WINDOW_LINES // 2
            ):
                text = s.text.strip("\n")
                candidates["similar"].append(
                    Part("similar", self._display(s.uri), text, self.count_tokens(text))
                )
        if options.recent_edits:
            for u, first, text in reversed(job.regions):
                if u == job.uri and abs(first - job.cursor_line) <= NEAR_CURSOR_LINES:
                    continue
                path = self._display(u)
                if path == here and u != job.uri:
                    continue  # another copy of this file: never shown (it may hold the text being written)
                candidates["recent_edits"].append(Part("recent_edits", path, text, self.count_tokens(text)))
        return self._fit(candidates, options)

    def _import_parts(
        self, job: _Job, here: str, used: frozenset[str], open_texts: dict[str, tuple[str, str]]
    ) -> list[Part]:
        found = resolver.resolve(job.language, here, job.imports, job.text, self.workspace)
        # Tiers: names the statements import, then names the file uses, then the rest of an imported module.
        tiers: list[list[tuple[int, int, str, Definition]]] = [[], [], []]
        for rank, item in enumerate(found):
            if item.path == here:
                continue
            defs = self._definitions_of(item.path, open_texts)
            named = set(item.names)
            for index, d in enumerate(defs):
                if d.name in named:
                    tiers[0].append((rank, index, item.path, d))
                elif d.name in used or (d.owner and d.owner in used):
                    tiers[1].append((rank, index, item.path, d))
                elif not item.implicit:
                    tiers[2].append((rank, index, item.path, d))
        parts = []
        for tier in tiers:
            for _, index, path, d in tier:
                parts.append(Part("imports", path, d.text, self.count_tokens(d.text), index))
        return parts

    def _cut(self, part: Part, room: int) -> Part | None:
        """The leading lines of ``part`` that fit ``room`` tokens, marked as cut; None if not even one."""
        lines = part.text.split("\n")
        kept: list[str] = []
        for line in lines:
            if self.count_tokens("\n".join([*kept, line, "..."])) > room:
                break
            kept.append(line)
        if not kept:
            return None
        text = "\n".join([*kept, "..."])
        return Part(part.source, part.path, text, self.count_tokens(text), part.order)

    def _fit(self, candidates: dict[str, list[Part]], options: ProjectOptions) -> ProjectBlock:
        """Each source up to its share of the budget, then what is left to the sources in order; duplicates
        dropped; parts of one source and path merged, in the sources' order."""
        total = options.budget_tokens
        kept: dict[str, list[Part]] = {s: [] for s in SOURCES}
        seen: set[str] = set()
        spent = 0

        def take(source: str, cap: int) -> None:
            """Parts in priority order while they fit; a definition too big is cut to what is left (its
            header and first members)."""
            nonlocal spent
            used_here = sum(p.tokens for p in kept[source])
            for part in candidates[source]:
                key = part.text.strip()
                if key in seen:
                    continue
                room = min(cap - used_here, total - spent)
                if room < MIN_PART_TOKENS:
                    return
                if part.tokens > room:
                    cut = self._cut(part, room) if source in ("imports", "open_files") else None
                    if cut is None:
                        return  # what follows is less relevant: the next pass may give it room
                    part = cut
                seen.add(key)
                kept[source].append(part)
                used_here += part.tokens
                spent += part.tokens

        for source, share in zip(SOURCES, options.shares, strict=True):
            if options.on(source):
                take(source, int(total * share))
        for source in SOURCES:
            if options.on(source):
                take(source, total)
        merged: list[Part] = []
        for source in SOURCES:
            by_path: dict[str, list[Part]] = {}
            for part in kept[source]:
                by_path.setdefault(part.path, []).append(part)
            for path, parts in by_path.items():
                if source == "imports":  # in the file's own order: the block reads like a stub of the module
                    parts = sorted(parts, key=lambda p: p.order)
                text = ("\n" if source in ("imports", "open_files") else "\n...\n").join(
                    p.text for p in parts
                )
                merged.append(Part(source, path, text, sum(p.tokens for p in parts)))
        return ProjectBlock(tuple(merged))


def options_from(settings: CompletionSettings) -> ProjectOptions:
    """The project options of a completion settings snapshot (no block for the prefix strategy)."""
    c = settings
    enabled = c.project_context and c.prompt_strategy == "syntax"
    return ProjectOptions(
        budget_tokens=int(c.context_tokens * c.project_share) if enabled else 0,
        imports=c.project_imports,
        open_files=c.project_open_files,
        similar=c.project_similar,
        recent_edits=c.project_recent_edits,
        shares=(
            c.project_imports_share,
            c.project_open_files_share,
            c.project_similar_share,
            c.project_recent_edits_share,
        ),
    )
