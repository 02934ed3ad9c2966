"""The evaluation corpus: real code that nobody here wrote, never the project's own sources.

By default it is the source of a few well-known pure-Python and JavaScript packages at pinned versions
(``PINNED``), installed once from the package registries through their ordinary clients into the user
cache directory: ``python -m pip install --no-deps --target`` for Python, ``npm pack`` plus extraction for
JavaScript (skipped with a message when npm is missing).  Pinning every version in one constant keeps the
tasks, and so the results, reproducible.  Any folder or git checkout can be given instead.

A folder that is, or contains, a checkout of this project (recognised by ``server/completion/engine.py`` next to
``telemetry/cpo.py``) is refused: measuring a model on code its authors tuned the prompts on would flatter it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from opportune.server.context.syntax import LANGUAGES, language_for
from opportune.server.models import cache_dir

log = logging.getLogger(__name__)

Registry = Literal["pypi", "npm"]


@dataclass(frozen=True)
class Package:
    registry: Registry
    name: str
    version: str

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}"

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}" if self.registry == "pypi" else f"{self.name}@{self.version}"


# The default corpus.  Change a version here and every task changes with it; keep the list short: the
# whole corpus is parsed on every run.
PINNED: tuple[Package, ...] = (
    Package("pypi", "attrs", "23.2.0"),
    Package("pypi", "idna", "3.7"),
    Package("pypi", "six", "1.16.0"),
    Package("pypi", "packaging", "24.0"),
    Package("npm", "ms", "2.1.3"),
    Package("npm", "escape-html", "1.0.3"),
    Package("npm", "is-number", "7.0.0"),
    Package("npm", "semver", "7.6.0"),
)

# Files outside these bounds are skipped: tiny files give no context, huge ones are generated tables.
MIN_CHARS = 200
MAX_CHARS = 120_000
# Folders that hold no source of the project itself.
# Type stubs and declaration files are signatures only: nothing to complete in them.
SKIP_SUFFIXES = (".pyi", ".d.ts", ".min.js")
SKIP_DIRS = frozenset(
    {"node_modules", "__pycache__", ".git", ".hg", ".svn", ".tox", ".venv", "venv", "build"}
)
FETCH_TIMEOUT_S = 300
_COMPLETE_MARKER = ".opportune-corpus-complete"


class CorpusError(Exception):
    """The corpus cannot be used; the message is one line for the user."""


@dataclass(frozen=True)
class SourceFile:
    """One file of the corpus: where it came from and its text."""

    project: str  # the package (``attrs-23.2.0``) or the folder's name
    relpath: str  # POSIX path inside the project
    language: str
    text: str = field(repr=False)
    path: Path | None = None

    @property
    def name(self) -> str:
        return f"{self.project}/{self.relpath}"


@dataclass(frozen=True)
class CorpusRoot:
    project: str
    path: Path


def corpus_cache() -> Path:
    return cache_dir() / "corpus"


def project_checkout(folder: Path) -> bool:
    """True when ``folder`` is the root of this project's checkout (or an installed copy of it)."""
    return (folder / "server" / "completion" / "engine.py").is_file() and (
        folder / "telemetry" / "cpo.py"
    ).is_file()


def refuse_own_sources(path: Path) -> None:
    """Raise CorpusError when ``path`` is inside this project's checkout."""
    resolved = path.resolve()
    for folder in (resolved, *resolved.parents):
        if project_checkout(folder):
            raise CorpusError(
                f"{path} is inside Opportune's own checkout ({folder}); evaluate on code nobody here wrote"
            )


def _run(cmd: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    env.setdefault("npm_config_update_notifier", "false")
    env.setdefault("npm_config_fund", "false")
    env.setdefault("npm_config_audit", "false")
    return subprocess.run(
        list(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S, check=False
    )


Runner = Callable[..., subprocess.CompletedProcess[str]]


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _fetched(target: Path) -> bool:
    """Whether an earlier fetch into ``target`` finished; if not, what an interrupted one left is cleared."""
    if (target / _COMPLETE_MARKER).is_file():
        return True
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return False


def fetch_package(package: Package, cache: Path, runner: Runner = _run) -> Path:
    """The folder holding ``package``'s files, installing it into ``cache`` on first use."""
    target = cache / package.registry / package.key
    if _fetched(target):
        return target
    with tempfile.TemporaryDirectory(prefix=f".{package.key}-", dir=target.parent) as tmp:
        staging = Path(tmp) / "files"
        if package.registry == "pypi":
            cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--quiet"]
            cmd += ["--target", str(staging), package.requirement]
            done = runner(cmd)
            if done.returncode != 0:
                raise CorpusError(f"pip could not install {package.requirement}: {_last_line(done.stderr)}")
        else:
            npm = shutil.which("npm")
            if npm is None:
                raise CorpusError("npm is not installed")
            done = runner(
                [npm, "pack", package.requirement, "--json", "--pack-destination", tmp], cwd=Path(tmp)
            )
            if done.returncode != 0:
                raise CorpusError(f"npm could not fetch {package.requirement}: {_last_line(done.stderr)}")
            try:
                filename = json.loads(done.stdout)[0]["filename"]
            except (ValueError, LookupError, TypeError) as e:
                raise CorpusError(f"npm pack {package.requirement}: unexpected output ({e})") from e
            # npm 7+ names scoped packages "scope-name-1.0.0.tgz"; the JSON says what it wrote.
            with tarfile.open(Path(tmp) / filename) as archive:
                archive.extractall(staging, filter="data")
            inner = staging / "package"
            if inner.is_dir():
                staging = inner
        (staging / _COMPLETE_MARKER).write_text(package.requirement + "\n")
        shutil.move(str(staging), str(target))
    return target


def fetch_sdist(package: Package, cache: Path, runner: Runner = _run) -> Path:
    """The unpacked source distribution of a PyPI package (it holds the tests a wheel leaves out).

    ``pip download --no-binary :all:`` through pip, the ordinary client; cached next to the installed files.
    """
    if package.registry != "pypi":
        raise CorpusError(f"{package.requirement}: only PyPI packages have source distributions here")
    target = cache / "pypi-sdist" / package.key
    if _fetched(target):
        return target
    with tempfile.TemporaryDirectory(prefix=f".{package.key}-", dir=target.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet"]
        cmd += ["--dest", tmp, package.requirement]
        done = runner(cmd)
        if done.returncode != 0:
            raise CorpusError(f"pip could not download {package.requirement}: {_last_line(done.stderr)}")
        archives = sorted(Path(tmp).glob("*.tar.gz")) + sorted(Path(tmp).glob("*.zip"))
        if not archives:
            raise CorpusError(f"pip download {package.requirement}: no source distribution")
        staging = Path(tmp) / "files"
        if archives[0].suffix == ".zip":
            shutil.unpack_archive(archives[0], staging)
        else:
            with tarfile.open(archives[0]) as archive:
                archive.extractall(staging, filter="data")
        inner = [p for p in staging.iterdir() if p.is_dir()]
        if len(inner) == 1 and not any(p.is_file() for p in staging.iterdir()):
            staging = inner[0]  # "name-version/" at the top of every sdist
        (staging / _COMPLETE_MARKER).write_text(package.requirement + "\n")
        shutil.move(str(staging), str(target))
    return target


def roots_with_tests(
    paths: Sequence[Path] = (),
    cache: Path | None = None,
    packages: Sequence[Package] = PINNED,
    warn: Callable[[str], None] = log.warning,
    runner: Runner = _run,
) -> list[CorpusRoot]:
    """The trees holding the corpus's tests, one per project (named as the corpus files' ``project``).

    Folders given by the user are their own test trees; the pinned PyPI packages' tests come from their
    source distributions (fetched on first use); npm packages ship none.
    """
    if paths:
        return [r for r in folder_roots(paths) if r.path.is_dir()]
    cache = cache or corpus_cache()
    roots: list[CorpusRoot] = []
    for package in packages:
        if package.registry != "pypi":
            continue
        try:
            roots.append(CorpusRoot(package.key, fetch_sdist(package, cache, runner)))
        except (CorpusError, OSError, subprocess.SubprocessError, tarfile.TarError, shutil.ReadError) as e:
            warn(f"tests of {package.requirement} unavailable: {e}")
    return roots


def default_roots(
    cache: Path | None = None,
    packages: Sequence[Package] = PINNED,
    warn: Callable[[str], None] = log.warning,
    runner: Runner = _run,
) -> list[CorpusRoot]:
    """The pinned packages, fetched on first use; a package that cannot be fetched is skipped with a warning."""
    cache = cache or corpus_cache()
    roots: list[CorpusRoot] = []
    npm_missing = False
    for package in packages:
        if package.registry == "npm" and (npm_missing or shutil.which("npm") is None):
            if not npm_missing:
                warn("npm is not installed: the JavaScript part of the default corpus is skipped")
            npm_missing = True
            continue
        try:
            roots.append(CorpusRoot(package.key, fetch_package(package, cache, runner)))
        except (CorpusError, OSError, subprocess.SubprocessError) as e:
            warn(f"corpus package {package.requirement} skipped: {e}")
    if not roots:
        raise CorpusError("no corpus package could be fetched; give a folder of code with --corpus")
    return roots


def folder_roots(paths: Sequence[Path]) -> list[CorpusRoot]:
    roots = []
    for path in paths:
        if not path.exists():
            raise CorpusError(f"{path}: no such file or folder")
        refuse_own_sources(path)
        name = path.resolve().name if path.is_dir() else path.resolve().parent.name
        roots.append(CorpusRoot(name or "corpus", path))
    return roots


def _walk(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        if project_checkout(here):
            raise CorpusError(f"{root} contains Opportune's own checkout ({here}); give a folder without it")
        # Sorted in place so the walk, and so the tasks, do not depend on the file system's order.
        dirs[:] = sorted(
            d
            for d in dirs
            if d not in SKIP_DIRS
            and not d.startswith(".")
            and not d.endswith((".dist-info", ".egg-info"))
            and not (here / d / "pyvenv.cfg").exists()
        )
        for name in sorted(files):
            yield here / name


def _looks_generated(text: str) -> bool:
    """Minified code and data tables make no completion tasks anyone types."""
    lines = text.splitlines() or [""]
    if sum(1 for ln in lines if len(ln) > 300) > 0.02 * len(lines):
        return True
    alnum = [ch for ch in text if ch.isalnum()]
    return bool(alnum) and sum(ch.isdigit() for ch in alnum) > 0.3 * len(alnum)


def load_files(roots: Sequence[CorpusRoot], languages: Sequence[str] = LANGUAGES) -> list[SourceFile]:
    """Every usable source file under ``roots``, in a stable order."""
    files: list[SourceFile] = []
    for root in roots:
        base = root.path if root.path.is_dir() else root.path.parent
        for path in _walk(root.path):
            language = language_for(None, str(path))
            if path.name.endswith(SKIP_SUFFIXES) or language is None or language not in languages:
                continue
            try:
                if not MIN_CHARS <= path.stat().st_size <= MAX_CHARS * 4:
                    continue
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            if not MIN_CHARS <= len(text) <= MAX_CHARS or "\x00" in text or _looks_generated(text):
                continue
            text = text.replace("\r\n", "\n")
            files.append(SourceFile(root.project, path.relative_to(base).as_posix(), language, text, path))
    return files


def load_corpus(
    paths: Sequence[Path] = (), cache: Path | None = None, warn: Callable[[str], None] = log.warning
) -> tuple[list[SourceFile], list[str]]:
    """The corpus files and a description of where they came from (for the report)."""
    roots = folder_roots(paths) if paths else default_roots(cache, warn=warn)
    files = load_files(roots)
    if not files:
        raise CorpusError("the corpus has no source files in a language Opportune knows")
    if paths:
        described = [str(r.path) for r in roots]
    else:
        fetched = {r.project for r in roots}
        described = [f"{p.registry}:{p.requirement}" for p in PINNED if p.key in fetched]
    return files, described
