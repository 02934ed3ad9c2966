"""Whether a completion keeps the corpus's own tests passing: the execution check of ``opportune eval``.

For a Python task whose project ships tests (the pinned PyPI packages' source distributions do; so may a
folder given with ``--corpus``), the file is written with the completion in place of the held-out text
(``document[:cursor] + completion + document[cursor:]``) in a private copy of the project, and the tests
that import the edited module are run in ``opportune.server.eval.sandbox.run_sandboxed`` (time and memory limits, no
network) with ``python -m pytest -x -q -p no:cacheprovider`` (``python -m unittest`` when pytest is not
installed).

The reference comes first: every test file is run once on the untouched copy, and only the files that pass
there are used (at most ``ExecutionLimits.max_test_files`` per module).  A task none of whose tests pass on the
untouched code is *not runnable* and left out of the pass rate, so a failure always means the completion
broke something.  Each distinct edited file is run once: a completion equal to the truth gives the
untouched file, whose result is the reference's; two configurations that suggest the same text share a run.

Statuses per task and configuration:

- ``passed`` / ``failed``: the tests ran on the edited file (``detail`` says how a failure ended);
- ``not_runnable``: the project has tests but none usable for this file (none imports the module, the
  reference fails, the file is itself a test, the file differs from the test tree);
- ``not_run``: the project ships no tests (the npm packages of the default corpus) or the language is not
  Python: said so rather than counted either way.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeGuard

from opportune.server.eval.corpus import SKIP_DIRS, CorpusRoot
from opportune.server.eval.sandbox import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S, SandboxResult, run_sandboxed
from opportune.server.eval.tasks import Task

log = logging.getLogger(__name__)

MAX_TEST_FILES = 3  # per module: a few files that import it say enough, and each costs seconds
PROBES_PER_MODULE = 6  # candidate files tried on the reference before giving up on a module
TEST_DIR_NAMES = frozenset({"tests", "test", "testing"})
_COPY_IGNORE = shutil.ignore_patterns(*SKIP_DIRS, ".pytest_cache", ".mypy_cache", "*.pyc")

Status = Literal["passed", "failed", "not_runnable", "not_run"]
STATUSES: tuple[Status, ...] = ("passed", "failed", "not_runnable", "not_run")


@dataclass(frozen=True)
class ExecutionLimits:
    """How long and how much memory one test run may take."""

    timeout_s: float = DEFAULT_TIMEOUT_S
    memory_mb: int = DEFAULT_MEMORY_MB
    max_test_files: int = MAX_TEST_FILES


@dataclass(frozen=True)
class TaskTests:
    """One task's execution outcome for one configuration."""

    task_id: str
    status: Status
    detail: str  # "passed", how it failed, or why it was not run
    test_files: tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def runnable(self) -> bool:
        return self.status in ("passed", "failed")

    @property
    def value(self) -> float | None:
        """1.0 passed, 0.0 failed, None when it does not count."""
        return {"passed": 1.0, "failed": 0.0}.get(self.status)


def is_test_path(relpath: str) -> bool:
    """A test module, a conftest, or anything inside a tests folder."""
    parts = relpath.split("/")
    name = parts[-1]
    return (
        name == "conftest.py"
        or (name.startswith("test_") and name.endswith(".py"))
        or name.endswith("_test.py")
        or any(p in TEST_DIR_NAMES for p in parts[:-1])
    )


def _is_test_module(path: Path) -> bool:
    return path.suffix == ".py" and (path.name.startswith("test_") or path.name.endswith("_test.py"))


def module_name(tree: Path, relpath: str) -> tuple[str, Path]:
    """The dotted name of the module at ``tree/relpath`` and the folder it is imported from.

    The package is the longest chain of enclosing folders holding an ``__init__.py``.
    """
    path = tree / relpath
    parts = [path.stem]
    folder = path.parent
    while folder != tree and (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts), folder


def mention_score(test_text: str, test_name: str, dotted: str) -> int:
    """How surely a test file exercises module ``dotted``: 0 not at all, 3 named after it and importing it."""
    top = dotted.split(".")[0]
    stem = dotted.split(".")[-1]
    imports_top = re.search(rf"^\s*(?:from|import)\s+{re.escape(top)}\b", test_text, re.M) is not None
    if not imports_top:
        return 0
    bare = stem.lstrip("_")
    if bare and bare in Path(test_name).stem.split("_"):
        return 3
    parent, _, _ = dotted.rpartition(".")
    explicit = re.search(rf"\b{re.escape(dotted)}\b", test_text) is not None or (
        parent != ""
        and re.search(
            rf"^\s*from\s+{re.escape(parent)}\s+import\s+[^\n]*\b{re.escape(stem)}\b", test_text, re.M
        )
        is not None
    )
    if explicit:
        return 2
    return 1 if re.search(rf"\b{re.escape(stem)}\b", test_text) else 0


def command_for_tests(files: Sequence[str]) -> list[str]:
    """pytest when this interpreter has it (the children run on the same interpreter), else unittest."""
    if importlib.util.find_spec("pytest") is not None:
        return [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *files]
    return [sys.executable, "-m", "unittest", *files]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class Workspace:
    """A private copy of one project's tree, edited one file at a time, with its runs cached."""

    def __init__(self, root: CorpusRoot, scratch: Path, limits: ExecutionLimits) -> None:
        self.project = root.project
        self.limits = limits
        self.path = scratch / "tree"
        shutil.copytree(root.path, self.path, ignore=_COPY_IGNORE, symlinks=True)
        self.test_files = sorted(
            p.relative_to(self.path).as_posix()
            for p in self._walk()
            if _is_test_module(p) and not p.is_symlink()
        )
        self._runs: dict[tuple[str, str, tuple[str, ...]], SandboxResult] = {}
        self._modules: dict[str, tuple[tuple[str, ...], str]] = {}

    def _walk(self) -> Iterator[Path]:
        for path in sorted(self.path.rglob("*.py")):
            if not any(
                part in SKIP_DIRS or part.startswith(".") for part in path.relative_to(self.path).parts
            ):
                yield path

    def locate(self, relpath: str, text: str) -> str | None:
        """Where the corpus file is in the tree (``src/`` layouts included), if it is there unchanged."""
        for candidate in (relpath, f"src/{relpath}"):
            path = self.path / candidate
            if path.is_file():
                try:
                    same = path.read_text(encoding="utf-8").replace("\r\n", "\n") == text
                except (OSError, UnicodeDecodeError):
                    same = False
                return candidate if same else None
        return None

    def _env(self, import_root: Path) -> dict[str, str]:
        roots = [import_root, self.path / "src", self.path]
        unique = list(dict.fromkeys(str(r) for r in roots if r.is_dir()))
        # The interpreter's installed pytest plugins belong to this project, not to the corpus: without
        # them pytest starts in a tenth of the time, and a corpus that needs a plugin fails its reference.
        return {"PYTHONPATH": os.pathsep.join(unique), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}

    def run(self, relpath: str, text: str, files: tuple[str, ...], import_root: Path) -> SandboxResult:
        """The tests ``files`` with ``relpath`` holding ``text``; the tree is restored afterwards."""
        key = (relpath, _digest(text), files)
        cached = self._runs.get(key)
        if cached is not None:
            return cached
        path = self.path / relpath
        original = path.read_bytes()
        try:
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
            result = run_sandboxed(
                command_for_tests(files),
                self.path,
                timeout_s=self.limits.timeout_s,
                memory_mb=self.limits.memory_mb,
                env_extra=self._env(import_root),
            )
        finally:
            path.write_bytes(original)
        self._runs[key] = result
        return result

    def tests_for(self, relpath: str, pristine: str) -> tuple[tuple[str, ...], str]:
        """The test files to run for the module at ``relpath`` (passing on the untouched tree), or () and why."""
        known = self._modules.get(relpath)
        if known is not None:
            return known
        dotted, import_root = module_name(self.path, relpath)
        scored = []
        for test in self.test_files:
            try:
                text = (self.path / test).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            score = mention_score(text, test, dotted)
            if score:
                scored.append((-score, test))
        chosen: list[str] = []
        failures: list[str] = []
        for _, test in sorted(scored)[:PROBES_PER_MODULE]:
            result = self.run(relpath, pristine, (test,), import_root)
            if result.passed:
                chosen.append(test)
                if len(chosen) == self.limits.max_test_files:
                    break
            else:
                failures.append(f"{test}: {result.describe()}")
        files = tuple(chosen)
        if not scored:
            answer: tuple[tuple[str, ...], str] = ((), f"no test imports the module ({dotted})")
        elif not files:
            answer = ((), "reference fails (" + "; ".join(failures[:2]) + ")")
        else:
            reference = self.run(relpath, pristine, files, import_root)
            answer = (files, "") if reference.passed else ((), f"reference fails ({reference.describe()})")
        self._modules[relpath] = answer
        return answer

    def import_root(self, relpath: str) -> Path:
        return module_name(self.path, relpath)[1]


def _has_tests(workspace: Workspace | None) -> TypeGuard[Workspace]:
    return workspace is not None and bool(workspace.test_files)


def run_task_tests(
    tasks: Sequence[Task],
    predictions: Mapping[str, Sequence[str]],
    trees: Sequence[CorpusRoot],
    limits: ExecutionLimits = ExecutionLimits(),
    progress: Callable[[], None] | None = None,
) -> dict[str, list[TaskTests]]:
    """Per configuration name, each task's outcome (aligned with ``tasks``).

    ``predictions`` maps a configuration to its completion of every task, in the order of ``tasks``;
    ``trees`` are the projects' folders with their tests, matched to the tasks by ``project``.
    """
    for name, texts in predictions.items():
        if len(texts) != len(tasks):
            raise ValueError(f"{name}: {len(texts)} predictions for {len(tasks)} tasks")
    out: dict[str, list[TaskTests]] = {name: [] for name in predictions}
    with contextlib.ExitStack() as stack:
        workspaces: dict[str, Workspace | None] = {}

        def workspace(project: str) -> Workspace | None:
            if project not in workspaces:
                root = next((t for t in trees if t.project == project and t.path.is_dir()), None)
                if root is None:
                    workspaces[project] = None
                else:
                    scratch = Path(
                        stack.enter_context(tempfile.TemporaryDirectory(prefix="opportune-tests-"))
                    )
                    workspaces[project] = Workspace(root, scratch, limits)
            return workspaces[project]

        for index, task in enumerate(tasks):
            for name, outcome in _task_outcomes(task, index, predictions, workspace).items():
                out[name].append(outcome)
            if progress:
                progress()
    return out


def _task_outcomes(
    task: Task,
    index: int,
    predictions: Mapping[str, Sequence[str]],
    workspace: Callable[[str], Workspace | None],
) -> dict[str, TaskTests]:
    def every(status: Status, detail: str, files: tuple[str, ...] = ()) -> dict[str, TaskTests]:
        return {name: TaskTests(task.task_id, status, detail, files) for name in predictions}

    space = workspace(task.file.project)
    if space is None or not _has_tests(space):
        return every("not_run", f"no tests shipped ({task.file.project})")
    if task.language != "python":
        return every("not_run", f"only Python tests are run ({task.language})")
    relpath = space.locate(task.file.relpath, task.file.text)
    if relpath is None:
        return every("not_runnable", "the file differs from the project's test tree")
    if is_test_path(relpath):
        return every("not_runnable", "the file is itself a test")
    files, why = space.tests_for(relpath, task.file.text)
    if not files:
        return every("not_runnable", why)
    import_root = space.import_root(relpath)
    document = task.document
    results: dict[str, TaskTests] = {}
    for name, texts in predictions.items():
        edited = document[: task.cursor] + texts[index] + document[task.cursor :]
        result = space.run(relpath, edited, files, import_root)
        status: Status = "passed" if result.passed else "failed"
        results[name] = TaskTests(task.task_id, status, result.describe(), files, result.seconds)
    return results


@dataclass(frozen=True)
class PassRate:
    """One configuration's counts: every task is in exactly one of the four."""

    tasks: int
    passed: int
    failed: int
    not_runnable: int
    not_run: int
    timed_out: int
    out_of_memory: int

    @property
    def runnable(self) -> int:
        return self.passed + self.failed

    @property
    def rate(self) -> float | None:
        return self.passed / self.runnable if self.runnable else None


def pass_rate(outcomes: Sequence[TaskTests]) -> PassRate:
    count = {s: sum(1 for o in outcomes if o.status == s) for s in STATUSES}
    return PassRate(
        tasks=len(outcomes),
        passed=count["passed"],
        failed=count["failed"],
        not_runnable=count["not_runnable"],
        not_run=count["not_run"],
        timed_out=sum(1 for o in outcomes if o.status == "failed" and o.detail == "timed out"),
        out_of_memory=sum(1 for o in outcomes if o.status == "failed" and o.detail == "out of memory"),
    )


def exclusion_reasons(outcomes: Sequence[TaskTests]) -> dict[str, int]:
    """Why tasks did not count, with how many (the reasons are the same for every configuration)."""
    reasons: dict[str, int] = {}
    for o in outcomes:
        if not o.runnable:
            # "not runnable: reference fails (tests/x.py: exit status 1)" and the like, grouped by the words
            # before the parenthesis.
            key = f"{o.status.replace('_', ' ')}: {o.detail.split(' (')[0]}"
            reasons[key] = reasons.get(key, 0) + 1
    return dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
