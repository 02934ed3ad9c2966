"""What a file defines, as the model should see it: signatures, class fields and the first docstring line.

:func:`extract` parses a file with tree-sitter (the grammars of :mod:`opportune.server.context.syntax`) and
returns its top-level definitions in file order, each rendered as a stub: a function's header without its
body (``def f(x: int) -> str: ...``), a class's header with its fields and its methods' headers, a struct or
enum whole, a constant's declaration; the first line of a docstring or doc comment kept.  Bodies are left
out: they cost tokens and say little about how to call a thing.

:class:`DefinitionCache` keeps the result per file version (a disk file's modification time and size, an
open document's text), bounded in entries and characters, so a file is parsed once per version.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import tree_sitter

from opportune.server.context.syntax import LANGUAGES, SyntaxTree

MAX_PARSE_BYTES = 1_000_000
MAX_DEFINITIONS = 400
MAX_MEMBERS = 40
MAX_DEFINITION_CHARS = 1600
MAX_DATA_LINES = 12  # a struct, enum or constant shown whole up to this many lines


@dataclass(frozen=True)
class Definition:
    name: str
    text: str  # the stub, with the original indentation of its first line
    owner: str = ""  # Go methods and Rust impls: the type they belong to


@dataclass(frozen=True)
class _Kinds:
    functions: frozenset[str]
    containers: frozenset[str] = frozenset()
    data: frozenset[str] = frozenset()
    wrappers: frozenset[str] = frozenset()
    braces: bool = True
    doc_comments: frozenset[str] = frozenset({"comment"})


def _n(names: str) -> frozenset[str]:
    return frozenset(names.split())


_JS = _Kinds(
    functions=_n(
        "function_declaration generator_function_declaration method_definition method_signature"
        " abstract_method_signature function_signature"
    ),
    containers=_n("class_declaration abstract_class_declaration interface_declaration class"),
    data=_n(
        "lexical_declaration variable_declaration type_alias_declaration enum_declaration"
        " public_field_definition field_definition property_signature"
    ),
    wrappers=_n("export_statement ambient_declaration"),
)
_C = _Kinds(
    functions=_n("function_definition"),
    containers=_n("class_specifier struct_specifier namespace_definition"),
    data=_n(
        "declaration type_definition preproc_def preproc_function_def enum_specifier field_declaration"
        " union_specifier alias_declaration"
    ),
    wrappers=_n("template_declaration"),
)
_KINDS: dict[str, _Kinds] = {
    "python": _Kinds(
        functions=_n("function_definition"),
        containers=_n("class_definition"),
        data=_n("expression_statement"),
        wrappers=_n("decorated_definition"),
        braces=False,
    ),
    "javascript": _JS,
    "typescript": _JS,
    "tsx": _JS,
    "go": _Kinds(
        functions=_n("function_declaration method_declaration method_elem"),
        data=_n("type_declaration const_declaration var_declaration"),
    ),
    "rust": _Kinds(
        functions=_n("function_item function_signature_item"),
        containers=_n("impl_item trait_item"),
        data=_n("struct_item enum_item const_item static_item type_item union_item"),
        doc_comments=_n("line_comment block_comment"),
    ),
    "java": _Kinds(
        functions=_n("method_declaration constructor_declaration"),
        containers=_n("class_declaration interface_declaration enum_declaration record_declaration"),
        data=_n("field_declaration constant_declaration"),
        doc_comments=_n("line_comment block_comment"),
    ),
    "c": _C,
    "cpp": _C,
}
_BODY_CHILD_TYPES = _n(
    "block statement_block class_body interface_body enum_body declaration_list field_declaration_list"
    " compound_statement object_type"
)
_OPEN_SPACE = re.compile(r"([(\[<]) ")
_COMMA_CLOSE = re.compile(r",? ([)\]>])")
_NAME_TYPES = _n("identifier field_identifier type_identifier property_identifier name")


def extract(language: str, source: str) -> tuple[Definition, ...]:
    """Top-level definitions of ``source`` in file order (methods inside their class's stub)."""
    kinds = _KINDS.get(language)
    if len(source) > MAX_PARSE_BYTES:
        return ()
    data = source.encode("utf-8", "surrogatepass")
    if kinds is None or language not in LANGUAGES or len(data) > MAX_PARSE_BYTES or b"\x00" in data:
        return ()
    try:
        root = SyntaxTree(language, data).tree.root_node
    except Exception:
        return ()
    out: list[Definition] = []
    _walk(root.named_children, data, kinds, language, out, depth=0)
    return tuple(out)


def _walk(
    nodes: list[tree_sitter.Node], src: bytes, kinds: _Kinds, language: str, out: list[Definition], depth: int
) -> None:
    for node in nodes:
        if len(out) >= MAX_DEFINITIONS:
            return
        inner = node
        while inner.type in kinds.wrappers:
            target = inner.child_by_field_name("definition") or inner.child_by_field_name("declaration")
            if target is None:
                named = [c for c in inner.named_children if c.type not in ("decorator", "comment")]
                target = named[-1] if named else None
            if target is None:
                break
            inner = target
        if inner.type in ("namespace_definition", "linkage_specification", "declaration_list") and depth < 2:
            body = inner.child_by_field_name("body") or inner
            _walk(body.named_children, src, kinds, language, out, depth + 1)
            continue
        kind = inner.type
        if kind not in kinds.functions and kind not in kinds.containers and kind not in kinds.data:
            continue
        name = _name(inner, src, language)
        if not name:
            continue
        text = _render(node, inner, src, kinds, language)
        if text.strip():
            owner = _owner(inner, src, language)
            out.append(Definition(name, _cap(text), owner))


def _text(src: bytes, start: int, end: int) -> str:
    return src[start:end].decode("utf-8", "replace")


def _line_start(src: bytes, offset: int) -> int:
    return src.rfind(b"\n", 0, offset) + 1


def _cap(text: str) -> str:
    if len(text) <= MAX_DEFINITION_CHARS:
        return text
    cut = text.rfind("\n", 0, MAX_DEFINITION_CHARS)
    return text[: cut if cut > 0 else MAX_DEFINITION_CHARS]


def _name(node: tree_sitter.Node, src: bytes, language: str) -> str:
    kind = node.type
    if kind == "expression_statement":  # Python: NAME = value / NAME: type = value
        assignment = node.named_children[0] if node.named_children else None
        left = assignment.child_by_field_name("left") if assignment is not None else None
        if (
            assignment is not None
            and assignment.type == "assignment"
            and left is not None
            and left.type == "identifier"
        ):
            return _text(src, left.start_byte, left.end_byte)
        return ""
    if kind in (
        "lexical_declaration",
        "variable_declaration",
        "type_declaration",
        "const_declaration",
        "var_declaration",
    ):
        for child in node.named_children:
            found = child.child_by_field_name("name")
            if found is not None and found.type in _NAME_TYPES | {"identifier"}:
                return _text(src, found.start_byte, found.end_byte)
            for spec in child.named_children:  # Go: const ( A = 1 )
                found = spec.child_by_field_name("name")
                if found is not None:
                    return _text(src, found.start_byte, found.end_byte)
        return ""
    if kind == "impl_item":
        target = node.child_by_field_name("type")
        return _text(src, target.start_byte, target.end_byte).split("<")[0] if target is not None else ""
    if kind in ("field_declaration", "constant_declaration") and language == "java":
        declarator = node.child_by_field_name("declarator")
        found = declarator.child_by_field_name("name") if declarator is not None else None
        return _text(src, found.start_byte, found.end_byte) if found is not None else ""
    found = node.child_by_field_name("name")
    if found is not None:
        return _text(src, found.start_byte, found.end_byte)
    # C/C++: the name sits at the end of a chain of declarators.
    declarator = node.child_by_field_name("declarator")
    for _ in range(6):
        if declarator is None:
            break
        if declarator.type in _NAME_TYPES or declarator.type in ("qualified_identifier", "destructor_name"):
            return _text(src, declarator.start_byte, declarator.end_byte)
        declarator = declarator.child_by_field_name("declarator") or (
            declarator.named_children[0] if declarator.named_children else None
        )
    return ""


def _owner(node: tree_sitter.Node, src: bytes, language: str) -> str:
    if node.type == "method_declaration" and language == "go":
        receiver = node.child_by_field_name("receiver")
        if receiver is not None:
            text = _text(src, receiver.start_byte, receiver.end_byte)
            words = text.strip("()").replace("*", " ").split()
            return words[-1].split("[")[0] if words else ""
    return ""


def _body(node: tree_sitter.Node) -> tree_sitter.Node | None:
    body = node.child_by_field_name("body")
    if body is not None:
        return body
    for child in node.named_children:
        if child.type in _BODY_CHILD_TYPES:
            return child
    return None


def _doc_line(node: tree_sitter.Node, body: tree_sitter.Node | None, src: bytes, kinds: _Kinds) -> str:
    """The first line of a docstring (Python) or of the doc comment right above ``node``."""
    if not kinds.braces:
        if body is not None and body.named_children:
            first = body.named_children[0]
            if (
                first.type == "expression_statement"
                and first.named_children
                and first.named_children[0].type == "string"
            ):
                raw = _text(src, first.start_byte, first.end_byte).strip()
                quote = raw[:3] if raw[:3] in ('"""', "'''") else raw[:1]
                line = raw.strip("rRbBuUfF").strip(quote).strip().split("\n", 1)[0].strip()
                return f"{quote}{line}{quote}" if line else ""
        return ""
    previous = node.prev_named_sibling
    if previous is None or previous.type not in kinds.doc_comments:
        return ""
    if node.start_point.row - previous.end_point.row > 1:
        return ""
    raw = _text(src, previous.start_byte, previous.end_byte)
    for line in raw.split("\n"):
        stripped = line.strip().lstrip("/*!").strip().removesuffix("*/").strip()
        if stripped:
            return line.strip() if line.strip().startswith("//") else "// " + stripped
    return ""


def _header(start: int, body: tree_sitter.Node, src: bytes) -> str:
    """A header up to its body, on one line: a signature with a parameter per line costs an indentation
    and a newline per parameter, and the prompt's budget is small."""
    text = _text(src, start, body.start_byte).rstrip()
    if "\n" not in text:
        return text
    indent = text[: len(text) - len(text.lstrip())]
    lines = [line.strip() for line in text.split("\n")]
    # Decorators and annotations on lines of their own stay there; the signature itself is joined.
    head = 0
    while head < len(lines) - 1 and lines[head].startswith(("@", "#[")):
        head += 1
    joined = _COMMA_CLOSE.sub(r"\1", _OPEN_SPACE.sub(r"\1", " ".join(lines[head:])))
    return "\n".join([*(indent + line for line in lines[:head]), indent + joined])


def _render(outer: tree_sitter.Node, node: tree_sitter.Node, src: bytes, kinds: _Kinds, language: str) -> str:
    start = _line_start(src, outer.start_byte)
    indent = _text(src, start, outer.start_byte)
    if indent.strip():
        start, indent = outer.start_byte, ""
    body = _body(node)
    doc = _doc_line(outer, body, src, kinds)
    kind = node.type
    if kind in kinds.functions or (
        kind in kinds.data
        and body is not None
        and body.type in ("block", "statement_block")
        and language != "python"
    ):
        if body is None:
            text = _text(src, start, outer.end_byte).rstrip()
        elif kinds.braces:
            text = _header(start, body, src) + " { ... }"
        else:
            text = _header(start, body, src)
            text += f"\n{indent}    {doc}" if doc else " ..."
            doc = ""
        return (f"{indent}{doc}\n" if doc else "") + text
    if kind in ("lexical_declaration", "variable_declaration"):
        for declarator in node.named_children:
            value = declarator.child_by_field_name("value")
            value_body = value.child_by_field_name("body") if value is not None else None
            if value_body is not None and value_body.type == "statement_block":
                return (f"{indent}{doc}\n" if doc else "") + _header(start, value_body, src) + " { ... }"
    whole_lines = src.count(b"\n", start, outer.end_byte) + 1
    if kind in kinds.containers and body is not None and whole_lines <= 3 and kinds.braces:
        return (f"{indent}{doc}\n" if doc else "") + _text(src, start, outer.end_byte).rstrip()
    if kind in kinds.containers and body is not None:
        lines = [
            _header(start, body, src)
            + ("" if not kinds.braces or src[body.start_byte : body.start_byte + 1] != b"{" else " {")
        ]
        if doc and not kinds.braces:
            lines.append(f"{indent}    {doc}")
        members = [m for m in body.named_children if m.type not in kinds.doc_comments and m.type != "comment"]
        for member in members[:MAX_MEMBERS]:
            inner = member
            while inner.type in kinds.wrappers or inner.type == "decorated_definition":
                target = inner.child_by_field_name("definition")
                if target is None:
                    break
                inner = target
            if inner.type == "enum_body_declarations":  # Java: the methods after an enum's constants
                for sub in inner.named_children[:MAX_MEMBERS]:
                    lines.append(_member(sub, sub, src, kinds, language))
                continue
            if not kinds.braces and inner.type == "expression_statement" and member is members[0] and doc:
                continue  # the docstring, already shown
            lines.append(_member(member, inner, src, kinds, language))
        if kinds.braces:
            closing = _text(src, _line_start(src, node.end_byte - 1), node.end_byte)
            lines.append(closing if closing.strip() in ("}", "};") else indent + "}")
        text = "\n".join(line for line in lines if line)
        return (f"{indent}{doc}\n" if doc and kinds.braces else "") + text
    # Data (structs, enums, constants, type aliases): whole, up to a few lines.
    whole = _text(src, start, outer.end_byte).rstrip()
    lines = whole.split("\n")
    if len(lines) > MAX_DATA_LINES:
        whole = "\n".join(lines[:MAX_DATA_LINES]) + (
            "\n" + indent + "}" if kinds.braces and "{" in lines[0] else ""
        )
    if kind == "expression_statement" and len(lines) > 1:
        whole = lines[0].rstrip() + (" ..." if not lines[0].rstrip().endswith(("(", "[", "{")) else "")
    return (f"{indent}{doc}\n" if doc and kinds.braces else "") + whole


def _member(
    member: tree_sitter.Node, inner: tree_sitter.Node, src: bytes, kinds: _Kinds, language: str
) -> str:
    start = _line_start(src, member.start_byte)
    prefix = _text(src, start, member.start_byte)
    if prefix.strip():
        start = member.start_byte
    body = _body(inner)
    if inner.type in kinds.functions or inner.type in kinds.containers:
        if body is None:
            return _text(src, start, member.end_byte).rstrip()
        header = _header(start, body, src)
        return header + (" { ... }" if kinds.braces else " ...")
    end = member.end_byte
    if src[end : end + 1] == b":" and member.type == "access_specifier":
        end += 1
    text = _text(src, start, end).rstrip()
    lines = text.split("\n")
    if len(lines) > 3:
        return lines[0].rstrip() + (" ..." if not kinds.braces else "")
    return text


class DefinitionCache:
    """Definitions per file version, least recently used first out, bounded in entries and characters."""

    def __init__(self, max_entries: int = 512, max_chars: int = 4_000_000) -> None:
        self._entries: OrderedDict[Hashable, tuple[Definition, ...]] = OrderedDict()
        self._chars = 0
        self._max_entries = max_entries
        self._max_chars = max_chars
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], tuple[Definition, ...]]) -> tuple[Definition, ...]:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                return found
        value = make()
        size = sum(len(d.text) for d in value)
        with self._lock:
            self._entries[key] = value
            self._chars += size
            while self._entries and (len(self._entries) > self._max_entries or self._chars > self._max_chars):
                _, old = self._entries.popitem(last=False)
                self._chars -= sum(len(d.text) for d in old)
        return value

    @property
    def chars(self) -> int:
        return self._chars

    def __len__(self) -> int:
        return len(self._entries)
