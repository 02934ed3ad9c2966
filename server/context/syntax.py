"""Syntax context at the cursor from an incrementally maintained tree-sitter tree.

One :class:`SyntaxTree` per open document keeps a tree-sitter tree in step with the text (``edit`` re-parses
incrementally from the previous tree), and :meth:`SyntaxTree.context_at` answers what the prompt needs
about a cursor position:

- the file's imports (import/include/use/package declarations), in order, deduplicated, capped;
- the headers of the enclosing scopes (class, function, impl, namespace...), outermost first, each with its
  original indentation and without its body, so the model knows where it is even when the header scrolled
  out of the prompt window;
- an outline of the other functions, classes and methods of the file;
- whether a block is expected at the cursor (multi-line completion), and whether the cursor is inside a
  comment or a string (trigger rules).

The code being completed is being typed, so it is usually broken at the cursor. Every answer is therefore
derived defensively: ERROR nodes are looked through, Python scopes are decided by indentation when the
cursor is past the parsed end of a block, and comment/string detection falls back to a one-line lexical scan
where the tree has errors. Nothing here raises on odd input (invalid UTF-8, NUL bytes, offsets past EOF).

Grammars come from the per-language wheels (``tree_sitter_python``...), never from
tree-sitter-language-pack, which downloads its parsers at run time. A language is loaded once, in a cached
function; the node-type tables are immutable constants; every other piece of state lives in a
``SyntaxTree`` instance.
"""

from __future__ import annotations

import bisect
import heapq
import importlib
import itertools
import logging
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import PurePosixPath
from types import MappingProxyType
from typing import Final
from urllib.parse import unquote, urlsplit

import tree_sitter

__all__ = [
    "DEFAULT_LIMITS",
    "LANGUAGES",
    "SyntaxContext",
    "SyntaxLimits",
    "SyntaxTree",
    "grammar",
    "language_for",
]

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------------
# Public data types
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntaxLimits:
    """Caps on what :meth:`SyntaxTree.context_at` returns, so one odd file cannot flood the prompt."""

    max_imports: int = 40
    """Import declarations kept (the first ones in the file)."""
    max_import_chars: int = 400
    """Characters kept of one import declaration (a Go import block or a long ``from x import (...)``)."""
    max_scopes: int = 8
    """Enclosing scopes kept; the innermost ones win when the nesting is deeper."""
    max_signature_chars: int = 300
    """Characters kept of one scope header or outline signature."""
    max_sibling_signatures: int = 40
    """Outline entries kept; the ones nearest to the cursor win, returned in file order."""


DEFAULT_LIMITS: Final = SyntaxLimits()


@dataclass(frozen=True)
class SyntaxContext:
    """What tree-sitter tells us about one cursor position of one document version."""

    language: str
    """Canonical language name (one of :data:`LANGUAGES`)."""
    imports: tuple[str, ...]
    """Import/include/use/package declarations of the file, in file order, deduplicated, capped."""
    scopes: tuple[str, ...]
    """Headers of the enclosing scopes, outermost first, each with its original indentation and without its
    body; decorators/annotations/attributes included; multi-line signatures kept whole."""
    sibling_signatures: tuple[str, ...]
    """Outline of the file: headers of the other top-level functions/classes and of their methods (the
    enclosing scopes themselves are left out), in file order."""
    multiline: bool
    """A block is expected at the cursor: an empty body, the line after a block opener, right after an
    opener at the end of a line."""
    in_comment: bool
    in_string: bool
    node_type: str
    """Type of the smallest named node spanning the byte just before the cursor (the root's type at 0)."""


# --------------------------------------------------------------------------------------------------------
# Language table
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _LanguageSpec:
    """Node-type tables of one grammar: what opens a scope, what belongs to a header, what is a comment."""

    module: str
    """The grammar wheel's module and the function in it that returns the language pointer."""
    function: str
    scope_types: frozenset[str]
    """Nodes whose header names a scope: functions, methods, classes, impls, namespaces, lambdas with a
    block body. A node of these types without a body (an abstract method) is shown whole in the outline."""
    container_types: frozenset[str] = frozenset()
    """Scopes whose members are listed in the outline (classes, impls, traits, namespaces)."""
    wrapper_types: frozenset[str] = frozenset()
    """Parents that belong to a header: decorators, ``export``, ``template <...>``."""
    transparent_types: frozenset[str] = frozenset()
    """Nodes the outline walks through to find definitions (export, preprocessor conditionals...)."""
    signature_types: frozenset[str] = frozenset()
    """Bodiless declarations shown whole in the outline (interface methods, trait functions)."""
    record_types: frozenset[str] = frozenset()
    """Scopes that are data (structs, enums): the outline shows them whole, fields included, and as an
    enclosing scope their members before the cursor's line belong to the header, since code after a
    struct uses its fields (a window starting at its closing brace would show ``struct {`` then ``}``)."""
    comment_types: frozenset[str] = frozenset({"comment"})
    string_types: frozenset[str] = frozenset()
    interpolation_types: frozenset[str] = frozenset()
    """Code inside a string (f-string fields, template substitutions): not "in a string"."""
    import_types: frozenset[str] = frozenset()
    """Import/include/use/package declarations."""
    import_containers: frozenset[str] = frozenset({"ERROR"})
    """Module-level nodes that may hold imports (``if TYPE_CHECKING:``, include guards, broken code)."""
    indent_scoped: bool = False
    """Python: blocks end by dedent, so a cursor past a block's parsed end may still be inside it."""
    line_comments: tuple[bytes, ...] = (b"//",)
    block_comment: tuple[bytes, bytes] | None = (b"/*", b"*/")
    quotes: tuple[bytes, ...] = (b'"', b"'")
    raw_quotes: frozenset[bytes] = frozenset()
    """Quotes inside which a backslash escapes nothing (Go raw strings)."""


def _names(names: str) -> frozenset[str]:
    return frozenset(names.split())


# Python blocks open with ':'; these parents use ':' for something else.
_PY_NON_BLOCK_COLON_PARENTS: Final = _names(
    "pair slice lambda typed_parameter typed_default_parameter format_specifier interpolation subscript"
    " keyword_argument dictionary"
)
# Keywords that start a Python compound statement, whose header ends with the block's ':'.
_PY_BLOCK_KEYWORDS: Final = frozenset(
    name.encode()
    for name in _names("def class if elif else for while with try except finally match case async")
)
# Siblings before a definition that belong to its header: Rust attributes, and the decorators or
# `template <...>` of a definition whose wrapper an ERROR swallowed.
_DETACHED_HEADER_PARTS: Final = _names("attribute_item decorator template_parameter_list template")
# Nodes that hold a scope's members between braces; used to find the '{' that ends a header.
_BODY_TYPES: Final = _names(
    "block statement_block class_body interface_body enum_body constructor_body annotation_type_body"
    " compound_statement declaration_list field_declaration_list enumerator_list enum_variant_list object_type"
)
# The first token of a statement that opens a control-flow block rather than a named scope.
_CONTROL_KEYWORDS: Final = _names(
    "if else for while do switch case try catch finally return loop match select defer go with elif except unsafe"
)

_JS_SCOPES: Final = _names(
    "class_declaration class function_declaration function_expression generator_function_declaration"
    " generator_function arrow_function method_definition"
)
_C_SCOPES: Final = _names("function_definition struct_specifier union_specifier enum_specifier")
_C_PREPROCESSOR: Final = _names("preproc_if preproc_ifdef preproc_else preproc_elif preproc_elifdef")


def _typescript_spec(function: str) -> _LanguageSpec:
    """TypeScript and TSX share every table; only the grammar function differs."""
    return _LanguageSpec(
        module="tree_sitter_typescript",
        function=function,
        scope_types=_JS_SCOPES
        | _names("abstract_class_declaration interface_declaration enum_declaration internal_module module"),
        container_types=_names(
            "class_declaration class abstract_class_declaration interface_declaration internal_module module"
        ),
        wrapper_types=_names("export_statement ambient_declaration"),
        # `namespace N {}` is an expression statement in this grammar.
        transparent_types=_names("export_statement ambient_declaration expression_statement"),
        signature_types=_names("method_signature abstract_method_signature function_signature"),
        comment_types=_names("comment html_comment"),
        string_types=_names("string template_string regex"),
        interpolation_types=_names("template_substitution"),
        import_types=_names("import_statement"),
        quotes=(b'"', b"'", b"`"),
    )


_SPECS: Final[Mapping[str, _LanguageSpec]] = MappingProxyType(
    {
        "python": _LanguageSpec(
            module="tree_sitter_python",
            function="language",
            scope_types=_names("class_definition function_definition"),
            container_types=_names("class_definition"),
            wrapper_types=_names("decorated_definition"),
            transparent_types=_names("decorated_definition"),
            string_types=_names("string concatenated_string"),
            interpolation_types=_names("interpolation"),
            import_types=_names("import_statement import_from_statement future_import_statement"),
            # `if TYPE_CHECKING:` and `try: import x / except ImportError:` hold module-level imports.
            import_containers=_names(
                "ERROR if_statement elif_clause else_clause try_statement except_clause finally_clause block"
            ),
            indent_scoped=True,
            line_comments=(b"#",),
            block_comment=None,
            quotes=(b'"""', b"'''", b'"', b"'"),
        ),
        "javascript": _LanguageSpec(
            module="tree_sitter_javascript",
            function="language",
            scope_types=_JS_SCOPES,
            container_types=_names("class_declaration class"),
            wrapper_types=_names("export_statement"),
            transparent_types=_names("export_statement"),
            comment_types=_names("comment html_comment"),
            string_types=_names("string template_string regex"),
            interpolation_types=_names("template_substitution"),
            import_types=_names("import_statement"),
            quotes=(b'"', b"'", b"`"),
        ),
        "typescript": _typescript_spec("language_typescript"),
        "tsx": _typescript_spec("language_tsx"),
        "go": _LanguageSpec(
            module="tree_sitter_go",
            function="language",
            scope_types=_names(
                "function_declaration method_declaration func_literal struct_type interface_type"
            ),
            container_types=_names("interface_type"),
            signature_types=_names("method_elem"),
            record_types=_names("struct_type"),
            string_types=_names("interpreted_string_literal raw_string_literal rune_literal"),
            import_types=_names("package_clause import_declaration"),
            quotes=(b'"', b"`", b"'"),
            raw_quotes=frozenset({b"`"}),
        ),
        "rust": _LanguageSpec(
            module="tree_sitter_rust",
            function="language",
            scope_types=_names(
                "function_item impl_item trait_item mod_item struct_item enum_item union_item closure_expression"
            ),
            container_types=_names("impl_item trait_item mod_item"),
            signature_types=_names("function_signature_item"),
            record_types=_names("struct_item enum_item union_item"),
            comment_types=_names("line_comment block_comment"),
            string_types=_names("string_literal raw_string_literal char_literal"),
            # `mod name;` (no body) pulls a file in, like an import.
            import_types=_names("use_declaration extern_crate_declaration mod_item"),
            # A single quote is a lifetime far more often than an unterminated char literal.
            quotes=(b'"',),
        ),
        "java": _LanguageSpec(
            module="tree_sitter_java",
            function="language",
            scope_types=_names(
                "class_declaration interface_declaration enum_declaration record_declaration"
                " annotation_type_declaration method_declaration constructor_declaration"
                " compact_constructor_declaration lambda_expression object_creation_expression"
            ),
            container_types=_names(
                "class_declaration interface_declaration enum_declaration record_declaration"
                " annotation_type_declaration"
            ),
            # An enum's methods sit in a node of their own after the constants.
            transparent_types=_names("enum_body_declarations"),
            comment_types=_names("line_comment block_comment"),
            string_types=_names("string_literal character_literal"),
            import_types=_names("package_declaration import_declaration"),
            quotes=(b'"""', b'"', b"'"),
        ),
        "c": _LanguageSpec(
            module="tree_sitter_c",
            function="language",
            scope_types=_C_SCOPES,
            container_types=_names("struct_specifier union_specifier"),
            record_types=_names("struct_specifier union_specifier enum_specifier"),
            transparent_types=_C_PREPROCESSOR,
            string_types=_names("string_literal char_literal system_lib_string"),
            import_types=_names("preproc_include"),
            import_containers=_C_PREPROCESSOR | {"ERROR"},
        ),
        "cpp": _LanguageSpec(
            module="tree_sitter_cpp",
            function="language",
            scope_types=_C_SCOPES | _names("class_specifier namespace_definition lambda_expression"),
            container_types=_names("class_specifier struct_specifier union_specifier namespace_definition"),
            wrapper_types=_names("template_declaration"),
            transparent_types=_C_PREPROCESSOR
            | _names("template_declaration linkage_specification declaration_list"),
            string_types=_names("string_literal char_literal raw_string_literal system_lib_string"),
            import_types=_names("preproc_include using_declaration namespace_alias_definition"),
            import_containers=_C_PREPROCESSOR | _names("ERROR linkage_specification declaration_list"),
        ),
    }
)

LANGUAGES: Final = tuple(_SPECS)
"""Canonical language names :func:`language_for` returns and :class:`SyntaxTree` accepts."""

# LSP languageId -> canonical name. JSX needs no grammar of its own: tree-sitter-javascript parses it.
_LANGUAGE_IDS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "python": "python",
        "javascript": "javascript",
        "javascriptreact": "javascript",
        "typescript": "typescript",
        "typescriptreact": "tsx",
        "go": "go",
        "rust": "rust",
        "java": "java",
        "c": "c",
        "cpp": "cpp",
        "cuda-cpp": "cpp",
    }
)

# A header (.h) may be C or C++; the C++ grammar parses C headers too, the C grammar chokes on classes.
_EXTENSIONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        ".py": "python",
        ".pyi": "python",
        ".pyw": "python",
        ".js": "javascript",
        ".mjs": "javascript",
        ".cjs": "javascript",
        ".jsx": "javascript",
        ".ts": "typescript",
        ".mts": "typescript",
        ".cts": "typescript",
        ".tsx": "tsx",
        ".go": "go",
        ".rs": "rust",
        ".java": "java",
        ".c": "c",
        ".h": "cpp",
        ".cc": "cpp",
        ".cpp": "cpp",
        ".cxx": "cpp",
        ".c++": "cpp",
        ".hh": "cpp",
        ".hpp": "cpp",
        ".hxx": "cpp",
        ".h++": "cpp",
        ".ipp": "cpp",
        ".tpp": "cpp",
        ".cu": "cpp",
        ".cuh": "cpp",
    }
)

# Nesting of import containers looked into (include guard -> #ifdef -> #include).
_IMPORT_MAX_DEPTH: Final = 4
# Outline nesting levels below the root that are listed (class -> nested class -> method).
_OUTLINE_MAX_DEPTH: Final = 3
# Hard bound on nodes the outline looks at per call, to keep a generated 100k-line file cheap.
_OUTLINE_SCAN_LIMIT: Final = 3000
# Whitespace scanned backwards from the cursor to find the last token before it, per step.
_BACKSCAN_CHUNK: Final = 512


def language_for(language_id: str | None, uri_or_path: str | None) -> str | None:
    """Canonical language name from an LSP ``languageId``, else from the file extension; None if unknown.

    ``uri_or_path`` may be a ``file:`` URI, another URI (``untitled:foo.py``) or a plain path. An unknown
    language means plain text: the caller should not build a :class:`SyntaxTree`.
    """
    if language_id:
        known = _LANGUAGE_IDS.get(language_id.strip().lower())
        if known is not None:
            return known
    if not uri_or_path:
        return None
    path = uri_or_path
    if ":" in path and not (len(path) > 1 and path[1] == ":"):  # a URI, not a Windows drive letter
        path = unquote(urlsplit(path).path)
    suffix = PurePosixPath(path.replace("\\", "/")).suffix.lower()
    return _EXTENSIONS.get(suffix)


@cache
def _language(language: str) -> tree_sitter.Language:
    spec = _SPECS[language]
    module = importlib.import_module(spec.module)
    return tree_sitter.Language(getattr(module, spec.function)())


def grammar(language: str) -> tree_sitter.Language:
    """The tree-sitter language of a canonical language name (loaded once), for modules that parse on
    their own (next-edit analysis parses the text before an edit)."""
    return _language(language)


# --------------------------------------------------------------------------------------------------------
# The tree
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Snapshot:
    """One document version: replaced as a whole, so a reader on another thread sees a consistent pair."""

    source: bytes
    tree: tree_sitter.Tree
    version: int


@dataclass(frozen=True)
class _OutlineEntry:
    header_start: int
    text: str


@dataclass(frozen=True)
class _Derived:
    """Per-version facts that do not depend on the cursor; computed on first use, then reused."""

    version: int
    imports: tuple[str, ...]


class SyntaxTree:
    """One document's incrementally maintained tree.

    Edits are expected from one thread at a time (text sync is in order); ``context_at`` may run on another
    thread at the same time: it works on an immutable snapshot, and edits never mutate a published tree.
    """

    def __init__(self, language: str, source: bytes) -> None:
        if language not in _SPECS:
            raise ValueError(
                f"no tree-sitter grammar for language {language!r}; known: {', '.join(LANGUAGES)}"
            )
        self._language = language
        self._spec = _SPECS[language]
        # A Parser carries parse state, so each document has its own rather than sharing a global one.
        self._parser = tree_sitter.Parser(_language(language))
        self._edit_lock = threading.Lock()
        self._snapshot = _Snapshot(bytes(source), self._parser.parse(bytes(source)), 0)
        self._derived: _Derived | None = None

    @property
    def language(self) -> str:
        return self._language

    @property
    def source(self) -> bytes:
        return self._snapshot.source

    @property
    def tree(self) -> tree_sitter.Tree:
        """The current tree; treat it as read-only (``Tree.edit`` on it would desynchronise this object)."""
        return self._snapshot.tree

    @property
    def version(self) -> int:
        """Incremented by every edit; useful as a cache key."""
        return self._snapshot.version

    def edit(
        self,
        start_byte: int,
        old_end_byte: int,
        new_end_byte: int,
        start_point: tuple[int, int],
        old_end_point: tuple[int, int],
        new_end_point: tuple[int, int],
        new_source: bytes,
    ) -> None:
        """Apply one edit already applied to the text: ``Tree.edit``, then an incremental re-parse.

        Points are (row, byte column). An edit whose offsets do not match the lengths of the old and new
        source is re-parsed from scratch rather than trusted, so a bookkeeping bug upstream costs time,
        never a wrong tree.
        """
        with self._edit_lock:
            snap = self._snapshot
            old_len = len(snap.source)
            consistent = (
                0 <= start_byte <= old_end_byte <= old_len
                and start_byte <= new_end_byte
                and old_len - (old_end_byte - start_byte) + (new_end_byte - start_byte) == len(new_source)
            )
            if consistent:
                # Edit a copy: the published tree may be in use by a context_at on another thread.
                old_tree = snap.tree.copy()
                old_tree.edit(
                    start_byte, old_end_byte, new_end_byte, start_point, old_end_point, new_end_point
                )
                tree = self._parser.parse(new_source, old_tree=old_tree)
            else:
                log.warning(
                    "inconsistent edit (%d..%d -> ..%d on %d bytes, new source %d bytes); full re-parse",
                    start_byte,
                    old_end_byte,
                    new_end_byte,
                    old_len,
                    len(new_source),
                )
                tree = self._parser.parse(new_source)
            self._snapshot = _Snapshot(bytes(new_source), tree, snap.version + 1)

    def replace(self, start_byte: int, old_end_byte: int, new_text: bytes) -> None:
        """Replace ``source[start_byte:old_end_byte]`` by ``new_text``; points are computed here."""
        source = self._snapshot.source
        start_byte = min(max(start_byte, 0), len(source))
        old_end_byte = min(max(old_end_byte, start_byte), len(source))
        new_source = source[:start_byte] + new_text + source[old_end_byte:]
        start_point = _point_at(source, start_byte)
        old_end_point = _point_at(source, old_end_byte)
        newlines = new_text.count(b"\n")
        if newlines:
            new_end_point = (start_point[0] + newlines, len(new_text) - new_text.rfind(b"\n") - 1)
        else:
            new_end_point = (start_point[0], start_point[1] + len(new_text))
        self.edit(
            start_byte,
            old_end_byte,
            start_byte + len(new_text),
            start_point,
            old_end_point,
            new_end_point,
            new_source,
        )

    def reset(self, source: bytes) -> None:
        """Replace the whole text (full-document sync): a fresh parse."""
        with self._edit_lock:
            snap = self._snapshot
            self._snapshot = _Snapshot(bytes(source), self._parser.parse(bytes(source)), snap.version + 1)

    def context_at(
        self,
        byte_offset: int,
        *,
        limits: SyntaxLimits = DEFAULT_LIMITS,
        visible_range: tuple[int, int] | None = None,
    ) -> SyntaxContext:
        """The syntax context at ``byte_offset`` (clamped to the document) of the current version.

        ``visible_range`` (start, end byte) is the part of the document the prompt already shows around the
        cursor: outline signatures whose header lies wholly inside it are left out as redundant.
        """
        snap = self._snapshot
        source = snap.source
        cursor = min(max(byte_offset, 0), len(source))
        root = snap.tree.root_node
        derived = self._derived_for(snap)
        spec = self._spec

        scope_nodes = _enclosing_scopes(root, source, cursor, spec)
        scopes = tuple(
            _cap(text, limits.max_signature_chars) for _, text in scope_nodes[-limits.max_scopes :]
        )
        enclosing = {key for key, _ in scope_nodes}
        siblings = _outline_near(root, source, spec, cursor, enclosing, visible_range, limits)

        in_comment, in_string = _comment_or_string(root, source, cursor, spec)
        multiline = not in_comment and not in_string and _block_expected(root, source, cursor, spec)
        node_type = root.type
        if cursor > 0:
            node = root.named_descendant_for_byte_range(cursor - 1, cursor)
            if node is not None:
                node_type = node.type
        return SyntaxContext(
            language=self._language,
            imports=tuple(
                _cap(text, limits.max_import_chars) for text in derived.imports[: limits.max_imports]
            ),
            scopes=scopes,
            sibling_signatures=siblings,
            multiline=multiline,
            in_comment=in_comment,
            in_string=in_string,
            node_type=node_type,
        )

    def _derived_for(self, snap: _Snapshot) -> _Derived:
        derived = self._derived
        if derived is not None and derived.version == snap.version:
            return derived
        root = snap.tree.root_node
        derived = _Derived(
            version=snap.version,
            imports=_collect_imports(root, snap.source, self._spec),
        )
        # Two threads may compute the same version at once; either result is right, the last write wins.
        self._derived = derived
        return derived


# --------------------------------------------------------------------------------------------------------
# Text helpers
# --------------------------------------------------------------------------------------------------------


def _point_at(source: bytes, offset: int) -> tuple[int, int]:
    """(row, byte column) of a byte offset, as tree-sitter counts them."""
    return source.count(b"\n", 0, offset), offset - (source.rfind(b"\n", 0, offset) + 1)


def _line_start(source: bytes, offset: int) -> int:
    return source.rfind(b"\n", 0, offset) + 1


def _line_end(source: bytes, offset: int) -> int:
    end = source.find(b"\n", offset)
    return len(source) if end < 0 else end


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _cap(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)].rstrip() + "…"


def _indent_width(line: bytes) -> int:
    stripped = line.lstrip(b" \t")
    return len(line[: len(line) - len(stripped)].expandtabs(8))


def _cursor_indent(source: bytes, cursor: int) -> int:
    """The indentation the cursor's line has, or will have: on a blank line, the cursor's column."""
    line_start = _line_start(source, cursor)
    if not source[line_start:cursor].strip():
        return len(source[line_start:cursor].expandtabs(8))
    return _indent_width(source[line_start : _line_end(source, cursor)])


def _last_non_space(source: bytes, end: int) -> int:
    """Offset of the last non-whitespace byte before ``end``, or -1."""
    while end > 0:
        start = max(0, end - _BACKSCAN_CHUNK)
        chunk = source[start:end].rstrip()
        if chunk:
            return start + len(chunk) - 1
        end = start
    return -1


def _last_code_token(
    root: tree_sitter.Node, source: bytes, end: int, spec: _LanguageSpec
) -> tuple[int, tree_sitter.Node | None]:
    """Offset and leaf of the last non-whitespace byte before ``end`` outside comments; (-1, None) if none."""
    position = _last_non_space(source, end)
    for _ in range(64):  # a run of comment lines; beyond that, the comment is as good an anchor as any
        if position < 0:
            return -1, None
        leaf = root.descendant_for_byte_range(position, position + 1)
        if leaf is None or leaf.type not in spec.comment_types:
            return position, leaf
        position = _last_non_space(source, leaf.start_byte)
    return position, root.descendant_for_byte_range(position, position + 1)


def _ancestors(node: tree_sitter.Node | None) -> Iterator[tree_sitter.Node]:
    while node is not None:
        yield node
        node = node.parent


# --------------------------------------------------------------------------------------------------------
# Headers
# --------------------------------------------------------------------------------------------------------


def _header_end(node: tree_sitter.Node, spec: _LanguageSpec) -> int | None:
    """End of a scope's header: after the ':' (Python) or the body's '{'; None if the node has no body."""
    if spec.indent_scoped:
        for child in node.children:
            if child.type == ":":
                return child.end_byte
        return None
    body = node.child_by_field_name("body")
    if body is not None and body.child_count and body.children[0].type == "{":
        return body.children[0].end_byte
    for child in node.children:
        if child.type == "{" and not child.is_missing:
            return child.end_byte
        if child.type in _BODY_TYPES and child.child_count and child.children[0].type == "{":
            return child.children[0].end_byte
    return None


def _header_start(node: tree_sitter.Node, spec: _LanguageSpec) -> int:
    """Where a definition begins, decorators/attributes/export/template included."""
    start_node = node
    parent = node.parent
    while parent is not None and parent.type in spec.wrapper_types:
        start_node = parent
        parent = parent.parent
    previous = start_node.prev_sibling
    while previous is not None and previous.type in _DETACHED_HEADER_PARTS:
        start_node = previous
        previous = previous.prev_sibling
    return start_node.start_byte


def _header_text(source: bytes, start: int, end: int) -> tuple[int, str]:
    """(start, text) of ``source[start:end]`` with its line's indentation; other code before it on the
    line (``extern "C" {``, ``interface Cb {``) is left out."""
    line_start = _line_start(source, start)
    prefix = source[line_start:start]
    if not prefix.strip():
        return line_start, _decode(source[line_start:end]).rstrip()
    indentation = prefix[: len(prefix) - len(prefix.lstrip(b" \t"))]
    return start, _decode(indentation + source[start:end]).rstrip()


def _scope_header(node: tree_sitter.Node, source: bytes, spec: _LanguageSpec) -> tuple[int, int, str] | None:
    """(start, end, text) of an enclosing scope's header: the whole line it starts on, up to its body.

    The whole line, because a callback's header is the call around it: ``describe("x", () => {``.
    """
    end = _header_end(node, spec)
    if end is None:
        return None
    start = _line_start(source, _header_start(node, spec))
    return start, end, _decode(source[start:end]).rstrip()


# --------------------------------------------------------------------------------------------------------
# Enclosing scopes
# --------------------------------------------------------------------------------------------------------


def _inside_body(node: tree_sitter.Node, source: bytes, cursor: int, spec: _LanguageSpec) -> bool:
    """Whether the cursor is inside a scope node's body (its header is known to end before the cursor)."""
    if spec.indent_scoped:
        if cursor <= node.end_byte:
            return True
        # Past the parsed end of a Python block (blank line, EOF): inside if indented deeper than the header.
        header_line = _line_start(source, node.start_byte)
        return _cursor_indent(source, cursor) > _indent_width(
            source[header_line : _line_end(source, header_line)]
        )
    if cursor < node.end_byte:
        return True
    # At the very end: inside only if the closing brace is missing (the body runs to EOF unterminated).
    last = node.children[-1] if node.child_count else None
    body = node.child_by_field_name("body")
    if body is not None and body.child_count:
        last = body.children[-1]
    return cursor == node.end_byte and (last is None or last.type != "}" or last.is_missing)


def _enclosing_scopes(
    root: tree_sitter.Node, source: bytes, cursor: int, spec: _LanguageSpec
) -> list[tuple[tuple[int, int], str]]:
    """(scope node range, header text) of the scopes around the cursor, outermost first."""
    # Anchor on the last token before the cursor: any scope whose header ends before the cursor contains
    # that token, and it is still attached to the right block when the cursor sits past a block's end.
    anchor_at, anchor = _last_code_token(root, source, cursor, spec)
    if anchor_at < 0:
        return []
    found: list[tuple[int, tuple[int, int], str]] = []
    for node in _ancestors(anchor):
        if node.type == "ERROR":
            found.extend(_scopes_in_error(node, source, cursor, spec))
            continue
        if node.type not in spec.scope_types:
            continue
        header = _scope_header(node, source, spec)
        if header is None or header[1] > cursor or not _inside_body(node, source, cursor, spec):
            continue
        text = header[2]
        if node.type in spec.record_types:
            text = _decode(source[header[0] : max(header[1], _line_start(source, cursor))]).rstrip()
        found.append((header[0], (node.start_byte, node.end_byte), text))
    found.sort(key=lambda item: item[0])
    return [(key, text) for _, key, text in found]


def _scopes_in_error(
    error: tree_sitter.Node, source: bytes, cursor: int, spec: _LanguageSpec
) -> list[tuple[int, tuple[int, int], str]]:
    """Scope headers whose structure an ERROR node swallowed: its flat children before the cursor.

    Brace languages: every '{' among the children that is not closed before the cursor opens a scope,
    whose header is the statement leading up to it (control flow excluded). Python: 'def'/'class' tokens
    indented less than the cursor line, up to their ':'.
    """
    children = [child for child in error.children if child.start_byte < cursor]
    found: list[tuple[int, tuple[int, int], str]] = []
    if spec.indent_scoped:
        cursor_indent = _cursor_indent(source, cursor)
        stack: list[tuple[int, int, tuple[int, int], str]] = []
        for index, child in enumerate(children):
            keyword = child.children[0] if child.type == "ERROR" and child.child_count else child
            if keyword.type not in ("def", "class"):
                continue
            colon = next((c for c in children[index + 1 :] if c.type == ":"), None)
            if colon is None or colon.end_byte > cursor:
                continue
            start = _line_start(source, child.start_byte)
            indent = _indent_width(source[start : _line_end(source, start)])
            while stack and stack[-1][0] >= indent:
                stack.pop()
            text = _decode(source[start : colon.end_byte]).rstrip()
            stack.append((indent, start, (child.start_byte, error.end_byte), text))
        return [(start, key, text) for indent, start, key, text in stack if indent < cursor_indent]
    open_braces: list[int] = []
    for index, child in enumerate(children):
        if child.end_byte > cursor:
            break
        if child.type == "{" and not child.is_missing:
            open_braces.append(index)
        elif child.type == "}" and open_braces and not child.is_missing:
            open_braces.pop()
    for index in open_braces:
        brace = children[index]
        if not _opens_code_block(source, brace.start_byte):
            continue
        first = index
        while first > 0:
            previous = children[first - 1]
            if (
                previous.type in ("{", "}", ";", ",")
                or previous.is_extra
                or previous.type.startswith("preproc")
                or source[previous.end_byte - 1 : previous.end_byte] in (b";", b"}", b"{", b",")
            ):
                break
            first -= 1
        if first == index:
            # The header may have closed before the error began: `func (s *S) Run() error` parsed as a
            # bodiless declaration, then an ERROR that starts with the body's '{'.
            header = error.prev_sibling if index == 0 else None
            if (
                header is None
                or not header.is_named
                or source[header.end_byte : brace.start_byte].strip()
                or source[header.end_byte - 1 : header.end_byte] in (b";", b"}")
            ):
                continue
            start_byte = header.start_byte
        elif children[first].type in _CONTROL_KEYWORDS:
            continue
        else:
            start_byte = children[first].start_byte
        start = _line_start(source, start_byte)
        # Preprocessor lines swallowed into the statement (`#if X` before a function) are not its header.
        lines = source[start : brace.end_byte].split(b"\n")
        while (
            len(lines) > 1 and lines[0].lstrip().startswith(b"#") and not lines[0].lstrip().startswith(b"#[")
        ):
            start += len(lines.pop(0)) + 1
        text = _decode(source[start : brace.end_byte]).rstrip()
        found.append((start, (start_byte, error.end_byte), text))
    return found


_TRAILING_WORD: Final = re.compile(rb"\w+\Z")
# Words after which '{' starts a value (object literal, initializer), not a block.
_VALUE_BRACE_WORDS: Final = frozenset(
    {b"return", b"yield", b"await", b"throw", b"in", b"of", b"case", b"typeof"}
)


def _opens_code_block(source: bytes, brace: int) -> bool:
    """Whether a '{' in broken code opens a block: after `)`, a name, `>` (`=>`, generics) or `|` (closures);
    not after `=`, `(`, `,` or `:`, where it starts an object literal or an initializer."""
    before = source[max(0, brace - 256) : brace].rstrip()
    if before[-1:] in (b")", b">", b"|", b"]"):
        return True
    word = _TRAILING_WORD.search(before)
    return word is not None and word.group() not in _VALUE_BRACE_WORDS


# --------------------------------------------------------------------------------------------------------
# Imports and outline (per tree version)
# --------------------------------------------------------------------------------------------------------


def _is_require(node: tree_sitter.Node, source: bytes) -> bool:
    """``const x = require("x")``: CommonJS's import."""
    if node.type not in ("lexical_declaration", "variable_declaration"):
        return False
    for declarator in node.named_children:
        value = declarator.child_by_field_name("value")
        function = value.child_by_field_name("function") if value is not None else None
        if value is not None and value.type == "call_expression" and function is not None:
            return (
                function.type == "identifier"
                and source[function.start_byte : function.end_byte] == b"require"
            )
    return False


def _collect_imports(root: tree_sitter.Node, source: bytes, spec: _LanguageSpec) -> tuple[str, ...]:
    """Module-level imports in file order, deduplicated; function- and class-level ones are not the file's."""
    seen: dict[str, None] = {}
    pending: list[tuple[list[tree_sitter.Node], int]] = [(list(reversed(root.named_children)), 0)]
    while pending:
        members, depth = pending[-1]
        if not members:
            pending.pop()
            continue
        node = members.pop()
        if node.type in spec.import_types or _is_require(node, source):
            if node.type == "mod_item" and node.child_by_field_name("body") is not None:
                continue
            text = _decode(source[node.start_byte : node.end_byte]).strip()
            if text:
                seen.setdefault(text, None)
        elif node.type in spec.import_containers and depth < _IMPORT_MAX_DEPTH:
            pending.append((list(reversed(node.named_children)), depth + 1))
    return tuple(seen)


def _declares_function(node: tree_sitter.Node) -> bool:
    """A C/C++ declaration whose declarator is a function: a prototype or an in-class method declaration."""
    declarator = node.child_by_field_name("declarator")
    for _ in range(4):
        if declarator is None:
            return False
        if declarator.type == "function_declarator":
            return True
        if declarator.type not in ("pointer_declarator", "reference_declarator"):
            return False
        declarator = declarator.child_by_field_name("declarator") or declarator.named_children[-1]
    return False


def _outline_targets(node: tree_sitter.Node, spec: _LanguageSpec) -> Iterator[tree_sitter.Node]:
    """The definitions an outline lists for one member of a file or of a container body."""
    kind = node.type
    if kind == "mod_item" and node.child_by_field_name("body") is None:  # `mod name;` is an import
        return
    if kind in spec.scope_types or kind in spec.signature_types:
        yield node
    elif kind in ("lexical_declaration", "variable_declaration"):  # const f = () => {...}
        for declarator in node.named_children:
            value = declarator.child_by_field_name("value")
            if value is not None and value.type in spec.scope_types:
                yield value
    elif kind == "public_field_definition":  # handler = (e) => {...} in a class body
        value = node.child_by_field_name("value")
        if value is not None and value.type in spec.scope_types:
            yield value
    elif kind == "type_declaration":  # Go: type S struct {...}
        for type_spec in node.named_children:
            value = type_spec.child_by_field_name("type")
            if value is not None and value.type in spec.scope_types:
                yield value
    elif kind in ("declaration", "type_definition", "field_declaration"):  # C/C++
        if _declares_function(node):
            yield node
            return
        value = node.child_by_field_name("type")
        if value is not None and value.type in spec.scope_types and value.child_by_field_name("body"):
            yield value


def _distance(node: tree_sitter.Node, cursor: int) -> int:
    if node.start_byte <= cursor <= node.end_byte:
        return 0
    return min(abs(node.start_byte - cursor), abs(node.end_byte - cursor))


def _outline_near(
    root: tree_sitter.Node,
    source: bytes,
    spec: _LanguageSpec,
    cursor: int,
    enclosing: set[tuple[int, int]],
    visible_range: tuple[int, int] | None,
    limits: SyntaxLimits,
) -> tuple[str, ...]:
    """Outline signatures nearest to the cursor, in file order.

    Members are visited nearest first (a container before its members, which are never nearer than it),
    so a file with thousands of definitions costs about as much as the entries returned, not the file.
    """
    tiebreak = itertools.count()
    # The root's members are sorted, so their distance grows away from the cursor on either side: start
    # from the member at the cursor and push the next one on a side only when its neighbour is taken.
    top = root.named_children
    middle = bisect.bisect_left(top, cursor, key=lambda node: node.end_byte)
    heap: list[tuple[int, int, tree_sitter.Node, int, int]] = []
    for index, side in ((middle, 1), (middle - 1, -1)):
        if 0 <= index < len(top):
            heap.append((_distance(top[index], cursor), next(tiebreak), top[index], 0, side * (index + 1)))
    heapq.heapify(heap)
    entries: list[_OutlineEntry] = []
    scanned = 0
    while heap and len(entries) < limits.max_sibling_signatures and scanned < _OUTLINE_SCAN_LIMIT:
        _, _, member, depth, position = heapq.heappop(heap)
        scanned += 1
        if position:  # a root member: bring in its outer neighbour (positions are 1-based, signed by side)
            index = abs(position) - 1 + (1 if position > 0 else -1)
            if 0 <= index < len(top):
                neighbour = top[index]
                signed = index + 1 if position > 0 else -(index + 1)
                heapq.heappush(heap, (_distance(neighbour, cursor), next(tiebreak), neighbour, 0, signed))
        if member.type in spec.transparent_types:
            for child in member.named_children:
                heapq.heappush(heap, (_distance(child, cursor), next(tiebreak), child, depth, 0))
            continue
        for target in _outline_targets(member, spec):
            whole = target.type in spec.record_types
            if target.type in spec.container_types and depth + 1 < _OUTLINE_MAX_DEPTH and not whole:
                body = target.child_by_field_name("body") or target
                for child in body.named_children:
                    heapq.heappush(heap, (_distance(child, cursor), next(tiebreak), child, depth + 1, 0))
            if (target.start_byte, target.end_byte) in enclosing:
                continue
            # From the member, so that `const f = () => {` keeps its `const f =`.
            start = min(_header_start(target, spec), _header_start(member, spec))
            end = target.end_byte if whole else _header_end(target, spec)
            if end is None:  # a bodiless declaration (prototype, interface method): show it whole
                end = target.end_byte
                terminator = target.next_sibling
                if terminator is not None and terminator.type == ";" and terminator.start_byte == end:
                    end = terminator.end_byte
            if visible_range is not None and visible_range[0] <= start and end <= visible_range[1]:
                continue
            start, text = _header_text(source, start, end)
            entries.append(_OutlineEntry(start, _cap(text, limits.max_signature_chars)))
    entries.sort(key=lambda entry: entry.header_start)
    return tuple(entry.text for entry in entries)


# --------------------------------------------------------------------------------------------------------
# Comments, strings, blocks
# --------------------------------------------------------------------------------------------------------


def _comment_or_string(
    root: tree_sitter.Node, source: bytes, cursor: int, spec: _LanguageSpec
) -> tuple[bool, bool]:
    if cursor == 0:
        return False, False
    # The node spanning the byte before the cursor: any comment or string the cursor is inside spans it.
    leaf = root.descendant_for_byte_range(cursor - 1, cursor)
    for node in _ancestors(leaf):
        if node.type in spec.interpolation_types and node.start_byte < cursor < node.end_byte:
            break
        if node.type in spec.comment_types:
            if cursor < node.end_byte:
                return True, False
            text = source[node.start_byte : node.end_byte]
            # At the end of a line comment, typing continues the comment; after '*/' it does not.
            if any(text.startswith(marker) for marker in spec.line_comments):
                return True, False
            break
        if node.type in spec.string_types:
            if cursor < node.end_byte or (node.child_count and node.children[-1].is_missing):
                return False, True
            break
    # Unterminated strings and comments come out as ERROR soup; scan the cursor's line lexically there.
    line_start = _line_start(source, cursor)
    line_node = root.descendant_for_byte_range(line_start, cursor)
    if line_node is not None and line_node.has_error:
        return _scan_line(source[line_start:cursor], spec)
    return False, False


def _scan_line(line: bytes, spec: _LanguageSpec) -> tuple[bool, bool]:
    """(in comment, in string) at the end of ``line``, read as code from its start."""
    index = 0
    quote: bytes | None = None
    in_block = False
    while index < len(line):
        if in_block:
            assert spec.block_comment is not None
            if line.startswith(spec.block_comment[1], index):
                in_block = False
                index += len(spec.block_comment[1])
            else:
                index += 1
        elif quote is not None:
            if line[index : index + 1] == b"\\" and quote not in spec.raw_quotes:
                index += 2
            elif line.startswith(quote, index):
                index += len(quote)
                quote = None
            else:
                index += 1
        elif any(line.startswith(marker, index) for marker in spec.line_comments):
            return True, False
        elif spec.block_comment is not None and line.startswith(spec.block_comment[0], index):
            in_block = True
            index += len(spec.block_comment[0])
        else:
            quote = next((q for q in spec.quotes if line.startswith(q, index)), None)
            index += len(quote) if quote is not None else 1
    return in_block, quote is not None


def _opener_before(root: tree_sitter.Node, source: bytes, end: int, spec: _LanguageSpec) -> bool:
    """Whether the last code token before ``end`` (comments skipped) opens a block."""
    position, leaf = _last_code_token(root, source, end, spec)
    if position < 0:
        return False
    char = source[position : position + 1]
    if not spec.indent_scoped:
        return char == b"{"
    if char != b":":
        return False
    parent = leaf.parent if leaf is not None and leaf.type == ":" else None
    if parent is not None and parent.type != "ERROR":
        return parent.type not in _PY_NON_BLOCK_COLON_PARENTS
    # Broken code: trust the ':' if its line starts a compound statement or closes a multi-line header.
    line = source[_line_start(source, position) : position].lstrip()
    return line[:1] in (b")", b"]") or line.split(b" ", 1)[0].split(b"(", 1)[0] in _PY_BLOCK_KEYWORDS


def _block_expected(root: tree_sitter.Node, source: bytes, cursor: int, spec: _LanguageSpec) -> bool:
    after = source[cursor : _line_end(source, cursor)].strip()
    # An editor's auto-closed brace after the cursor still leaves an empty block to fill.
    closers_only = not spec.indent_scoped and after[:1] == b"}" and not after.strip(b"}])>;,")
    if after and not closers_only:
        return False
    # Either on a blank line after the opener, or right after an opener that ends the line.
    return _opener_before(root, source, cursor, spec)
