"""Cross-file tasks: completions whose true text uses a name defined in another file of the same project.

These measure project-wide context (``opportune.server.context.project``): the name is not defined in the
file being completed, so a model shown only that file can only guess it.  For each corpus file the imports
are resolved to files of the same project the way the server resolves them, the names those files define
are collected (with tree-sitter, as the server's definitions), and the file's ordinary task positions
(``opportune.server.eval.tasks.analyse``) whose held-out text uses one of those names, and that the file
does not define itself, become ``cross_file`` tasks.

Each task carries what an editor would have open when asking: the imported files (left open) and two other
files of the project viewed shortly before (opened and closed again), drawn with the task's seed.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from opportune.server.context.definitions import extract
from opportune.server.context.imports import resolve
from opportune.server.context.neighbours import IDENTIFIER, STOP_WORDS
from opportune.server.context.syntax import SyntaxTree, language_for
from opportune.server.context.workspace import Workspace
from opportune.server.eval.corpus import SourceFile
from opportune.server.eval.tasks import KINDS, Task, _task_id, analyse

RECENT_FILES = 2
# Lines that are import statements: a task there completes the import itself, not code that uses the name.
IMPORT_LINE = re.compile(
    r"^\s*(?:import\s|from\s+\S+\s+import\b|#\s*include|use\s|package\s|export\s.*\bfrom\b|.*\brequire\()"
)
IMPORT_NODES = frozenset(
    [
        "import_statement",
        "import_from_statement",
        "future_import_statement",
        "preproc_include",
        "use_declaration",
        "import_declaration",
        "package_declaration",
        "package_clause",
    ]
)
STRING = re.compile(r"\"(?:[^\"\\\n]|\\.)*\"|'(?:[^'\\\n]|\\.)*'|`[^`]*`")
MAX_OPEN_IMPORTS = 6  # imported files an editor would have open


def project_root(file: SourceFile) -> Path | None:
    """The folder the file's ``relpath`` is relative to (the project's root on disk)."""
    if file.path is None:
        return None
    path = Path(file.path)
    depth = file.relpath.count("/") + 1
    root = path
    for _ in range(depth):
        root = root.parent
    return root


@lru_cache(maxsize=64)
def _workspace(root: Path) -> Workspace:
    ws = Workspace(root)
    ws.start_indexing()
    ws.wait_ready(30)
    return ws


def imported_files(file: SourceFile) -> tuple[list[str], set[str]]:
    """The project files ``file`` imports (relative paths) and the names they define that ``file`` does not."""
    root = project_root(file)
    if root is None:
        return [], set()
    ws = _workspace(root)
    try:
        tree = SyntaxTree(file.language, file.text.encode("utf-8", "surrogatepass"))
    except (ValueError, ImportError):
        return [], set()
    imports = tree.context_at(len(file.text.encode("utf-8", "surrogatepass"))).imports
    found = [r for r in resolve(file.language, file.relpath, imports, file.text, ws) if not r.implicit]
    own = {d.name for d in extract(file.language, file.text)}
    names: set[str] = set()
    for item in found:
        language = language_for(None, item.path)
        text = ws.read(item.path)
        if language is None or text is None:
            continue
        names.update(d.name for d in extract(language, text))
    names = {n for n in names - own if len(n) >= 3 and n not in STOP_WORDS}
    return [r.path for r in found], names


@lru_cache(maxsize=256)
def _import_rows(file: SourceFile) -> frozenset[int]:
    """Rows of the file's import statements (a multi-line ``from x import (...)`` included)."""
    try:
        root = SyntaxTree(file.language, file.text.encode("utf-8", "surrogatepass")).tree.root_node
    except (ValueError, ImportError):
        return frozenset()
    rows: set[int] = set()
    pending = [root]
    while pending:
        node = pending.pop()
        if node.type in IMPORT_NODES:
            rows.update(range(node.start_point.row, node.end_point.row + 1))
        elif node.type in ("module", "program", "source_file", "translation_unit", "ERROR"):
            pending.extend(node.named_children)
    return frozenset(rows)


def _source(root: Path, project: str, rel: str, language: str) -> SourceFile | None:
    ws = _workspace(root)
    text = ws.read(rel)
    return None if text is None else SourceFile(project, rel, language, text, root / rel)


def sample_cross_file_tasks(files: Sequence[SourceFile], n: int, seed: int) -> list[Task]:
    """``n`` cross-file tasks (fewer if the corpus has fewer), one file at a time in turn, deterministic."""
    rng = random.Random(seed)
    pools: dict[int, list[tuple[int, int, str]]] = {}
    imports_of: dict[int, list[str]] = {}
    by_project: dict[str, list[int]] = {}
    for index, file in enumerate(files):
        by_project.setdefault(file.project, []).append(index)
        paths, names = imported_files(file)
        if not names:
            continue
        options: list[tuple[int, int, str]] = []
        analysis = analyse(file)
        for kind in KINDS:
            for cursor, end in analysis.candidates.get(kind, ()):
                row = file.text.count("\n", 0, cursor)
                line_start = file.text.rfind("\n", 0, cursor) + 1
                line_end = file.text.find("\n", cursor)
                line = file.text[line_start : line_end if line_end != -1 else len(file.text)]
                if row in analysis.unsafe_rows or row in _import_rows(file) or IMPORT_LINE.match(line):
                    continue
                code = STRING.sub('""', file.text[cursor:end])  # a name in a string is prose, not a use
                if any(word in names for word in IDENTIFIER.findall(code)):
                    options.append((cursor, end, kind))
        if options:
            pools[index] = sorted(set(options))
            imports_of[index] = paths
    chosen: list[Task] = []
    while len(chosen) < n and pools:
        index = rng.choice(sorted(pools))
        options = pools[index]
        cursor, end, _ = options.pop(rng.randrange(len(options)))
        if not options:
            del pools[index]
        file = files[index]
        root = project_root(file)
        if root is None:
            continue
        opened = []
        for rel in imports_of[index][:MAX_OPEN_IMPORTS]:
            language = language_for(None, rel)
            source = _source(root, file.project, rel, language) if language else None
            if source is not None:
                opened.append(source)
        others = [
            files[i]
            for i in by_project[file.project]
            if i != index and files[i].relpath not in imports_of[index]
        ]
        recent = tuple(rng.sample(others, min(RECENT_FILES, len(others))))
        task_id = _task_id(file, cursor, "cross_file")
        if any(t.task_id == task_id for t in chosen):
            continue
        chosen.append(Task(task_id, "cross_file", file, cursor, end, tuple(opened), recent))
    chosen.sort(key=lambda t: (t.file.name, t.cursor, t.end))
    return chosen
