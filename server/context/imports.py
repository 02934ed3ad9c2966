"""Which workspace files a file's imports name: one resolver per language, all through :class:`Workspace`.

Input is what tree-sitter already found (``SyntaxContext.imports``: the import statements' text) and the
importing file's workspace-relative path; output is the files those statements name, each with the names the
statement brings in (empty when it brings in a namespace, e.g. ``import pkg`` or a Go package: the caller
then prefers the names the file uses).  Only files inside the workspace are ever returned; imports of
anything else (the standard library, installed packages, system headers) resolve to nothing.

- Python: relative (``from .a import b``) and absolute imports, searched from the importing file's package
  root, the workspace root and ``src/``; then by path suffix in the index.
- JavaScript/TypeScript: relative specifiers of ``import``/``export ... from``/``require``, with the usual
  extensions and ``index`` files.
- Go: packages of the module (``go.mod``'s ``module`` path) and the file's own package (its folder).
- Rust: ``mod name;`` and ``use crate::/self::/super::`` paths within the crate.
- Java: imported classes and ``.*`` packages under the source root the file's ``package`` implies, and the
  classes of the file's own package.
- C/C++: ``#include "..."`` beside the file, at the root, under ``include/``, then by suffix in the index.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from opportune.server.context.workspace import Workspace

MAX_RESOLVED = 24  # files per importing file: a prompt cannot use more
MAX_PACKAGE_FILES = 12  # files read of one Go/Java package


@dataclass(frozen=True)
class Resolved:
    """A workspace file an import names, and the names it brings in (empty: a namespace or everything)."""

    path: str
    names: tuple[str, ...] = ()
    qualifier: str = ""  # the name the importing file refers to the module by (``pkg`` in ``pkg.Name``)
    implicit: bool = False  # not imported: the file's own package (Go, Java) or folder


def resolve(language: str, path: str, imports: Sequence[str], text: str, ws: Workspace) -> list[Resolved]:
    """The workspace files that ``imports`` of the file at ``path`` (workspace-relative) name, in the order
    of the import statements, without duplicates, at most ``MAX_RESOLVED``."""
    resolver = _RESOLVERS.get(language)
    if resolver is None or ws.root is None:
        return []
    out: list[Resolved] = []
    seen: set[str] = {path}
    for item in resolver(path, imports, text, ws):
        if item.path not in seen:
            seen.add(item.path)
            out.append(item)
            if len(out) >= MAX_RESOLVED:
                break
    return out


def _first(ws: Workspace, candidates: Iterable[str]) -> str | None:
    for candidate in candidates:
        norm = posixpath.normpath(candidate)
        if norm.startswith("../") or norm == "..":
            continue  # above the root: never looked at
        found = ws.relpath(norm.removeprefix("./"))
        if found is not None:
            return found
    return None


def _dir(path: str) -> str:
    return posixpath.dirname(path)


def _join(*parts: str) -> str:
    return posixpath.normpath(posixpath.join(*[p for p in parts if p])) if any(parts) else ""


def _names(text: str) -> tuple[str, ...]:
    """Imported names of ``A, B as C, (D)``: the names as the importing file uses them are not needed, the
    defining file's are (``A``, ``B``, ``D``)."""
    out = []
    for part in text.replace("(", " ").replace(")", " ").replace("{", " ").replace("}", " ").split(","):
        words = part.split()
        if words and words[0] not in ("*", "type"):
            out.append(words[0])
        elif len(words) > 1 and words[0] == "type":
            out.append(words[1])
    return tuple(n for n in out if n.isidentifier())


# ---- Python ----------------------------------------------------------------------------------------------

_PY_FROM = re.compile(r"^from\s+(\.*)([\w.]*)\s+import\s+(.+)$", re.S)
_PY_IMPORT = re.compile(r"^import\s+(.+)$", re.S)


def _python_roots(path: str, ws: Workspace) -> list[str]:
    """Folders absolute imports are searched from: above the file's top package, the root, ``src``."""
    folder = _dir(path)
    while folder and ws.relpath(_join(folder, "__init__.py")) is not None:
        folder = _dir(folder)
    roots = [folder, "", "src", "lib"]
    return list(dict.fromkeys(roots))


def _python_module(base: str, dotted: str, ws: Workspace) -> str | None:
    rel = dotted.replace(".", "/")
    return _first(ws, [_join(base, rel + ".py"), _join(base, rel, "__init__.py"), _join(base, rel + ".pyi")])


def _python(path: str, imports: Sequence[str], text: str, ws: Workspace) -> Iterable[Resolved]:
    roots = None
    for statement in imports:
        statement = " ".join(statement.replace("\\\n", " ").split())
        m = _PY_FROM.match(statement)
        if m:
            dots, module, names_text = m.groups()
            names = _names(names_text)
            if dots:
                base = _dir(path)
                for _ in range(len(dots) - 1):
                    base = _dir(base)
                bases = [base]
            else:
                roots = roots or _python_roots(path, ws)
                bases = roots
            for base in bases:
                target = _python_module(base, module, ws) if module else None
                if target is not None:
                    yield Resolved(target, names)
                # `from pkg import mod`: the names may be modules of the package.
                for name in names:
                    sub = _python_module(base, f"{module}.{name}" if module else name, ws)
                    if sub is not None:
                        yield Resolved(sub, (), qualifier=name)
                if target is not None:
                    break
            else:
                if module and not dots:
                    for found in ws.find(module.replace(".", "/") + ".py", limit=1):
                        yield Resolved(found, names)
            continue
        m = _PY_IMPORT.match(statement)
        if m:
            roots = roots or _python_roots(path, ws)
            for part in m.group(1).split(","):
                words = part.split()
                if not words:
                    continue
                module = words[0]
                alias = words[2] if len(words) >= 3 and words[1] == "as" else module
                target = next((t for base in roots if (t := _python_module(base, module, ws))), None)
                if target is None:
                    target = next(iter(ws.find(module.replace(".", "/") + ".py", limit=1)), None)
                if target is not None:
                    yield Resolved(target, (), qualifier=alias)


# ---- JavaScript / TypeScript -----------------------------------------------------------------------------

_JS_FROM = re.compile(r"""(?:import|export)\s*(.*?)\s*from\s*["']([^"']+)["']""", re.S)
_JS_BARE = re.compile(r"""^import\s*["']([^"']+)["']""")
_JS_REQUIRE = re.compile(r"""(?:const|let|var)\s+(.+?)\s*=\s*require\(\s*["']([^"']+)["']\s*\)""", re.S)
_JS_EXTENSIONS = (".ts", ".tsx", ".js", ".jsx", ".mjs", ".cjs", ".mts", ".cts")


def _js_clause(clause: str) -> tuple[tuple[str, ...], str]:
    """(named imports, namespace or default name) of an import clause."""
    names: tuple[str, ...] = ()
    qualifier = ""
    braces = re.search(r"\{(.*)\}", clause, re.S)
    if braces:
        names = _names(braces.group(1))
        clause = clause[: braces.start()] + clause[braces.end() :]
    star = re.search(r"\*\s+as\s+(\w+)", clause)
    if star:
        qualifier = star.group(1)
    else:
        default = re.match(r"\s*(?:type\s+)?([A-Za-z_$][\w$]*)", clause)
        if default and default.group(1) not in ("type",):
            qualifier = default.group(1)
    return names, qualifier


def _javascript(path: str, imports: Sequence[str], text: str, ws: Workspace) -> Iterable[Resolved]:
    statements = list(imports)
    # re-exports and requires are not always in the import list tree-sitter gives
    statements += [
        found.group(0)
        for found in re.finditer(r"^export\s[^;\n]*?from\s*[\"'][^\"']+[\"']", text[:200_000], re.M)
    ]
    for statement in statements:
        specifier = ""
        names: tuple[str, ...] = ()
        qualifier = ""
        m: re.Match[str] | None = _JS_FROM.search(statement)
        if m:
            names, qualifier = _js_clause(m.group(1))
            specifier = m.group(2)
        elif (m := _JS_BARE.match(statement)) is not None:
            specifier = m.group(1)
        elif (m := _JS_REQUIRE.search(statement)) is not None:
            names, qualifier = _js_clause(m.group(1))
            specifier = m.group(2)
        if not specifier.startswith("."):
            continue  # a package, not a file of this workspace
        base = _join(_dir(path), specifier)
        stem = base
        for ext in (".js", ".jsx", ".mjs", ".cjs"):
            if stem.endswith(ext):  # TypeScript imports "./x.js" meaning ./x.ts
                stem = stem[: -len(ext)]
        candidates = [base, *(stem + e for e in _JS_EXTENSIONS), stem + ".d.ts"]
        candidates += [_join(base, "index" + e) for e in _JS_EXTENSIONS]
        target = _first(ws, candidates)
        if target is not None:
            yield Resolved(target, names, qualifier)


# ---- Go --------------------------------------------------------------------------------------------------

_GO_SPEC = re.compile(r"""(?:^|[\s(])(?:([\w.]+)\s+)?"([^"]+)\"""")


def _go_module(path: str, ws: Workspace) -> tuple[str, str] | None:
    """(folder of go.mod, module path) of the module holding ``path``."""
    folder = _dir(path)
    while True:
        gomod = _join(folder, "go.mod")
        if ws.relpath(gomod) is not None:
            text = ws.read(gomod) or ""
            m = re.search(r"^module\s+(\S+)", text, re.M)
            return (folder, m.group(1)) if m else None
        if not folder:
            return None
        folder = _dir(folder)


def _go_files(folder: str, ws: Workspace) -> list[str]:
    return [p for p in ws.list_dir(folder, (".go",), MAX_PACKAGE_FILES * 2) if not p.endswith("_test.go")][
        :MAX_PACKAGE_FILES
    ]


def _go(path: str, imports: Sequence[str], text: str, ws: Workspace) -> Iterable[Resolved]:
    module = _go_module(path, ws)
    for statement in imports:
        if module is None or not statement.startswith("import"):
            continue
        for m in _GO_SPEC.finditer(statement[len("import") :]):
            alias, spec = m.groups()
            mod_folder, mod_path = module
            if spec != mod_path and not spec.startswith(mod_path + "/"):
                continue
            folder = _join(mod_folder, spec[len(mod_path) + 1 :])
            qualifier = alias or spec.rsplit("/", 1)[-1]
            for file in _go_files(folder, ws):
                yield Resolved(file, (), qualifier)
    for file in _go_files(_dir(path), ws):  # the file's own package needs no import
        yield Resolved(file, (), implicit=True)


# ---- Rust ------------------------------------------------------------------------------------------------

_RUST_MOD = re.compile(r"^(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;")
_RUST_USE = re.compile(r"^(?:pub(?:\([^)]*\))?\s+)?use\s+(.+?);?$", re.S)


def _rust_crate_src(path: str, ws: Workspace) -> str:
    folder = _dir(path)
    while True:
        if ws.relpath(_join(folder, "Cargo.toml")) is not None:
            return _join(folder, "src")
        if not folder:
            break
        folder = _dir(folder)
    # No Cargo.toml: the folder of the nearest lib.rs/main.rs above
    folder = _dir(path)
    while folder:
        if ws.relpath(_join(folder, "lib.rs")) or ws.relpath(_join(folder, "main.rs")):
            return folder
        folder = _dir(folder)
    return _dir(path)


def _rust_module_dir(path: str) -> str:
    """The folder holding the submodules of the module in file ``path``."""
    name = posixpath.basename(path)
    if name in ("mod.rs", "lib.rs", "main.rs"):
        return _dir(path)
    return path[: -len(".rs")]


def _rust_module_file(folder: str, ws: Workspace) -> str | None:
    return _first(ws, [folder + ".rs", _join(folder, "mod.rs")])


def _rust(path: str, imports: Sequence[str], text: str, ws: Workspace) -> Iterable[Resolved]:
    src = None
    here = _rust_module_dir(path)
    for statement in imports:
        statement = " ".join(statement.split())
        m = _RUST_MOD.match(statement)
        if m:
            target = _rust_module_file(_join(here, m.group(1)), ws)
            if target is not None:
                yield Resolved(target, (), qualifier=m.group(1))
            continue
        m = _RUST_USE.match(statement)
        if not m:
            continue
        tree = m.group(1).strip()
        braces = re.search(r"\{(.*)\}", tree, re.S)
        names: tuple[str, ...] = ()
        if braces:
            names = _names(braces.group(1))
            tree = tree[: braces.start()]
        segments = [s for s in tree.split("::") if s]
        if not segments:
            continue
        head = segments[0]
        if head == "crate":
            src = src or _rust_crate_src(path, ws)
            folder = src
        elif head == "self":
            folder = here
        elif head == "super":
            folder = _dir(here)
            while len(segments) > 1 and segments[1] == "super":
                folder = _dir(folder)
                segments = segments[1:]
        else:
            continue  # another crate
        rest = segments[1:]
        if not braces and rest:
            last = rest[-1].split(" as ")[0].strip()
            names = (last,) if last != "*" else ()
            rest = rest[:-1]
            # `use crate::a::b;` may name module b itself
            module = _rust_module_file(_join(folder, *rest, last), ws) if last != "*" else None
            if module is not None:
                yield Resolved(module, (), qualifier=last)
                continue
        # The longest prefix of the path that is a module file holds the names.
        for k in range(len(rest), 0, -1):
            module = _rust_module_file(_join(folder, *rest[:k]), ws)
            if module is not None:
                yield Resolved(module, names or (rest[k] if k < len(rest) else "",))
                break


# ---- Java ------------------------------------------------------------------------------------------------

_JAVA_PACKAGE = re.compile(r"^package\s+([\w.]+)\s*;")
_JAVA_IMPORT = re.compile(r"^import\s+(static\s+)?([\w.]+)(\.\*)?\s*;")


def _java(path: str, imports: Sequence[str], text: str, ws: Workspace) -> Iterable[Resolved]:
    package = ""
    for statement in imports:
        m = _JAVA_PACKAGE.match(statement)
        if m:
            package = m.group(1)
    folder = _dir(path)
    package_dir = package.replace(".", "/")
    if package and (folder == package_dir or folder.endswith("/" + package_dir)):
        source_root = folder[: len(folder) - len(package_dir)].rstrip("/")
    else:
        source_root = folder
    for statement in imports:
        m = _JAVA_IMPORT.match(statement)
        if not m:
            continue
        static, dotted, star = m.groups()
        parts = dotted.split(".")
        if star and not static:
            for file in ws.list_dir(_join(source_root, *parts), (".java",), MAX_PACKAGE_FILES):
                yield Resolved(file, (posixpath.basename(file)[:-5],))
            continue
        # The class is the last capitalised part (a static import names a member after it).
        for k in range(len(parts), 0, -1):
            rel = "/".join(parts[:k]) + ".java"
            target = _first(ws, [_join(source_root, rel)]) or next(iter(ws.find(rel, limit=1)), None)
            if target is not None:
                member = parts[k] if k < len(parts) else parts[k - 1]
                yield Resolved(target, (member,))
                break
    for file in ws.list_dir(folder, (".java",), MAX_PACKAGE_FILES):
        name = posixpath.basename(file)[:-5]
        if re.search(rf"\b{re.escape(name)}\b", text):  # a class of the same package that the file uses
            yield Resolved(file, (name,), implicit=True)


# ---- C / C++ ---------------------------------------------------------------------------------------------

_INCLUDE = re.compile(r'^#\s*include\s*"([^"]+)"')


def _c(path: str, imports: Sequence[str], text: str, ws: Workspace) -> Iterable[Resolved]:
    for statement in imports:
        m = _INCLUDE.match(statement.strip())
        if not m:
            continue
        header = m.group(1)
        target = _first(
            ws, [_join(_dir(path), header), header, _join("include", header), _join("src", header)]
        )
        if target is None:
            target = next(iter(ws.find(posixpath.normpath(header).lstrip("./"), limit=1)), None)
        if target is not None:
            yield Resolved(target)


_RESOLVERS = {
    "python": _python,
    "javascript": _javascript,
    "typescript": _javascript,
    "tsx": _javascript,
    "go": _go,
    "rust": _rust,
    "java": _java,
    "c": _c,
    "cpp": _c,
}
