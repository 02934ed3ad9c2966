"""Structural follow-ups: what an edit to a declaration implies elsewhere, found with tree-sitter.

``detect`` compares the text before and after one hunk and names the change, if it is one that has
follow-ups: a function renamed or its parameters added, removed, renamed or reordered
(:class:`SignatureChange`), or a variable, field, attribute or type renamed at its declaration
(:class:`Rename`).  A change of a *use* (one call site edited, one reference pointed elsewhere) is not
propagated: only declarations speak for their uses.

``follow_ups`` then finds, in the current texts, the places that still need the change and the exact edit
for each: a rename replaces the old name; an added parameter gets an argument at each call site (a name of
the same spelling in scope there, else a snippet placeholder ``${1:name}``); a removed one loses its
argument; a reordered list is reordered.  A call site that already matches the new signature is left
alone, so asking again after some edits were applied never proposes them twice.  A rename to a name the
scope already uses is refused (``conflict``) rather than propagated blindly.

Text is parsed here as given; nothing here raises on broken code (a parameter list with a syntax error
mid-edit yields no change, not a guess).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import tree_sitter

from opportune.server.context.syntax import grammar as ts_language
from opportune.server.nextedit import languages as lang
from opportune.server.nextedit.history import Hunk
from opportune.server.nextedit.languages import GRAMMARS, NAME_TYPES, Grammar, Parameter

FollowUpKind = Literal["rename", "callee", "arguments", "parameter_use"]


@dataclass(frozen=True)
class Source:
    """One file as the analysis sees it: an open document (with its version) or a workspace file."""

    uri: str
    text: str
    language: str
    version: int | None = None


@dataclass(frozen=True)
class Rename:
    old: str
    new: str
    member: bool  # a field or attribute: its uses are ``x.old``
    local: bool  # declared inside a function: its uses are in that function only
    anchor: int  # str offset of the declaration in the text after the hunk
    conflict: bool = False

    @property
    def kind(self) -> str:
        return "rename"


@dataclass(frozen=True)
class SignatureChange:
    old_name: str
    new_name: str
    old_params: tuple[Parameter, ...]
    new_params: tuple[Parameter, ...]
    method: bool
    anchor: int  # str offset of the definition's start in the text after the hunk
    conflict: bool = False

    @property
    def renamed_parameter(self) -> tuple[str, str] | None:
        old = [p.name for p in self.old_params]
        new = [p.name for p in self.new_params]
        if len(old) != len(new):
            return None
        diff = [(a, b) for a, b in zip(old, new, strict=True) if a != b]
        if len(diff) == 1 and diff[0][0] not in new and diff[0][0] and diff[0][1]:
            return diff[0]
        return None

    @property
    def kind(self) -> str:
        if self.old_name != self.new_name and [p.name for p in self.old_params] == [
            p.name for p in self.new_params
        ]:
            return "rename_function"
        if self.renamed_parameter:
            return "rename_parameter"
        old = {p.name for p in self.old_params}
        new = {p.name for p in self.new_params}
        if old < new:
            return "add_parameter"
        if new < old:
            return "remove_parameter"
        return "reorder_parameters" if old == new else "change_parameters"


Change = Rename | SignatureChange


@dataclass(frozen=True)
class FollowUp:
    """Replace ``text[start:end]`` of ``uri`` (str offsets) with ``new_text``."""

    uri: str
    start: int
    end: int
    new_text: str
    kind: FollowUpKind
    snippet: bool = False  # new_text holds a ``${1:name}`` placeholder
    plain_text: str = ""  # new_text with placeholders replaced by their names, for clients without snippets
    version: int | None = None

    @property
    def chars_changed(self) -> int:
        return max(self.end - self.start, len(self.plain_text or self.new_text))


@functools.cache
def _parser(language: str) -> tree_sitter.Language:
    return ts_language(language)


@functools.lru_cache(maxsize=64)
def parse(language: str, text: str) -> tuple[tree_sitter.Tree, bytes]:
    """A fresh tree of ``text`` (the last ones kept: detection and search parse the same current text, and
    the workspace files a change reaches are searched again after every accepted edit).
    Trees are only read here, never edited, so sharing them between calls is safe."""
    source = text.encode("utf-8", "surrogatepass")
    return tree_sitter.Parser(_parser(language)).parse(source), source


def _parse_before(
    language: str, after: tuple[tree_sitter.Tree, bytes], before: str, hunk: Hunk
) -> tree_sitter.Tree:
    """The tree of the text before ``hunk``: re-parsed incrementally from the tree after it (a fraction of a
    full parse on a large file)."""
    tree, src = after
    old = tree.copy()
    start = _byte(before, hunk.start)
    inserted = len(hunk.inserted.encode("utf-8", "surrogatepass"))
    removed = len(hunk.removed.encode("utf-8", "surrogatepass"))
    before_src = before.encode("utf-8", "surrogatepass")
    old.edit(
        start,
        start + inserted,
        start + removed,
        _point(src, start),
        _point(src, start + inserted),
        _point(before_src, start + removed),
    )
    return tree_sitter.Parser(_parser(language)).parse(before_src, old_tree=old)


def _point(source: bytes, offset: int) -> tuple[int, int]:
    line_start = source.rfind(b"\n", 0, offset) + 1
    return source.count(b"\n", 0, offset), offset - line_start


@functools.lru_cache(maxsize=64)
def _query(language: str, types: frozenset[str]) -> tree_sitter.Query | None:
    lang_obj = _parser(language)
    known = sorted(t for t in types if lang_obj.id_for_node_kind(t, True))
    if not known:
        return None
    return tree_sitter.Query(lang_obj, "[" + " ".join(f"({t})" for t in known) + "] @n")


class _Offsets:
    """Byte <-> str offsets of one text (identity for ASCII)."""

    def __init__(self, text: str, source: bytes) -> None:
        self.ascii = len(text) == len(source)
        self.source = source

    def to_str(self, byte: int) -> int:
        return byte if self.ascii else len(self.source[:byte].decode("utf-8", "surrogatepass"))


def _byte(text: str, offset: int) -> int:
    return len(text[:offset].encode("utf-8", "surrogatepass"))


def _ancestors(node: tree_sitter.Node | None) -> Iterator[tree_sitter.Node]:
    while node is not None:
        yield node
        node = node.parent


def _enclosing_definition(node: tree_sitter.Node | None, grammar: Grammar) -> tree_sitter.Node | None:
    for n in _ancestors(node):
        if n.type in grammar.definitions:
            return n
    return None


def _name_at(root: tree_sitter.Node, start: int, end: int) -> tree_sitter.Node | None:
    node = root.descendant_for_byte_range(start, end)
    if node is not None and node.type in NAME_TYPES and node.start_byte <= start and end <= node.end_byte:
        return node
    if start > 0:  # the hunk ends a name: "foo|" where the cursor sits just after it
        node = root.descendant_for_byte_range(start - 1, end)
        if node is not None and node.type in NAME_TYPES and node.start_byte <= start and end <= node.end_byte:
            return node
    return None


# --------------------------------------------------------------------------------------------------------
# What changed
# --------------------------------------------------------------------------------------------------------


def detect(language: str, before: str, after: str, hunk: Hunk) -> Change | None:
    """The change ``hunk`` made (``before`` -> ``after``), if it is one with follow-ups."""
    grammar = GRAMMARS.get(language)
    if grammar is None or hunk.oversized:
        return None
    hunk = _trimmed(hunk)
    new_tree, new_src = parse(language, after)
    old_tree = _parse_before(language, (new_tree, new_src), before, hunk)
    b0 = _byte(before, hunk.start)
    old_range = (b0, b0 + len(hunk.removed.encode("utf-8", "surrogatepass")))
    new_range = (b0, b0 + len(hunk.inserted.encode("utf-8", "surrogatepass")))
    signature = _signature_change(grammar, old_tree, new_tree, old_range, new_range, after, new_src)
    if signature is not None:
        return signature
    return _rename(grammar, old_tree, new_tree, old_range, new_range, after, new_src)


def _trimmed(hunk: Hunk) -> Hunk:
    """The hunk without the text its two sides share at either end (an editor may send ``def area`` ->
    ``def area_of`` for what is an insertion of ``_of``)."""
    removed, inserted = hunk.removed, hunk.inserted
    prefix = _common(removed, inserted)
    removed, inserted = removed[prefix:], inserted[prefix:]
    suffix = _common(removed[::-1], inserted[::-1])
    if suffix:
        removed, inserted = removed[:-suffix], inserted[:-suffix]
    return Hunk(hunk.start + prefix, removed, inserted, hunk.seq) if prefix or suffix else hunk


def _common(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _header_span(definition: tree_sitter.Node) -> tuple[int, int] | None:
    params = lang.parameter_list(definition)
    name = lang.definition_name(definition)
    if params is None or name is None:
        return None
    return min(name.start_byte, params.start_byte), params.end_byte


def _signature_change(
    grammar: Grammar,
    old_tree: tree_sitter.Tree,
    new_tree: tree_sitter.Tree,
    old_range: tuple[int, int],
    new_range: tuple[int, int],
    after: str,
    new_src: bytes,
) -> SignatureChange | None:
    old_def = _enclosing_definition(old_tree.root_node.descendant_for_byte_range(*old_range), grammar)
    if old_def is None:
        return None
    span = _header_span(old_def)
    if span is None or not (span[0] <= old_range[0] and old_range[1] <= span[1]):
        return None
    new_def = _enclosing_definition(new_tree.root_node.descendant_for_byte_range(*new_range), grammar)
    if new_def is None or new_def.start_byte != old_def.start_byte:
        return None
    old_name, new_name = lang.definition_name(old_def), lang.definition_name(new_def)
    old_params, new_params = lang.parameters(old_def, grammar), lang.parameters(new_def, grammar)
    if old_name is None or new_name is None or old_params is None or new_params is None:
        return None  # mid-edit: the header does not parse yet
    if new_def.has_error and _header_has_error(new_def):
        return None
    change = SignatureChange(
        lang.text(old_name),
        lang.text(new_name),
        tuple(old_params),
        tuple(new_params),
        lang.is_method(old_def, grammar),
        _Offsets(after, new_src).to_str(new_def.start_byte),
    )
    if change.old_name == change.new_name and change.old_params == change.new_params:
        return None  # a type or a default changed: callers need nothing
    if not change.new_name.isidentifier() and not change.new_name.replace("$", "").isidentifier():
        return None
    if any(not p.name.isidentifier() for p in new_params if not p.variadic):
        return None
    conflict = False
    if change.old_name != change.new_name:
        # Renamed to the name of another function already there: calls would silently change target.
        conflict = any(
            (n := lang.definition_name(d)) is not None
            and lang.text(n) == change.new_name
            and d.start_byte != old_def.start_byte
            for d in _walk(grammar, old_tree.root_node, grammar.definitions)
        )
    renamed = change.renamed_parameter
    if renamed and not conflict:
        body = old_def.child_by_field_name("body")
        conflict = body is not None and any(
            lang.text(n) == renamed[1]
            for n in _named(grammar, body, renamed[1])
            if not lang.is_member_name(n, grammar)
        )
    return SignatureChange(
        change.old_name,
        change.new_name,
        change.old_params,
        change.new_params,
        change.method,
        change.anchor,
        conflict,
    )


def _header_has_error(definition: tree_sitter.Node) -> bool:
    params = lang.parameter_list(definition)
    name = lang.definition_name(definition)
    return (params is not None and params.has_error) or (name is not None and name.has_error)


def _is_declaration(node: tree_sitter.Node, grammar: Grammar) -> tuple[bool, bool] | None:
    """(member, local) if ``node`` declares the name it holds, else None."""
    parent = node.parent
    if parent is None:
        return None
    field_name = lang.field_of(node)
    in_def = _enclosing_definition(parent, grammar) is not None
    # self.x = ..., this.x = ...: an attribute declared by assignment.
    if lang.is_member_name(node, grammar) and parent.type in grammar.members:
        holder = parent.parent
        if holder is not None and lang.field_of(parent) == "left" and "assign" in holder.type:
            return True, False
        return None
    if "field" in parent.type and field_name in ("name", "declarator", None):
        return True, False  # a struct, class or record field
    if (
        parent.type == "variable_declarator"
        and parent.parent is not None
        and parent.parent.type == "field_declaration"
    ):
        return True, False  # Java: int y;
    if parent.type in grammar.classes or parent.type in (
        "struct_item",
        "type_spec",
        "enum_item",
        "trait_item",
        "interface_declaration",
        "type_alias_declaration",
    ):
        return (False, False) if field_name == "name" else None
    if (
        field_name in lang.DECLARING_FIELDS
        and parent.type not in grammar.calls
        and parent.type not in grammar.members
    ):
        if parent.type in ("keyword_argument", "pair", "labeled_statement"):
            return None
        if "assign" in parent.type and parent.type not in (
            "assignment",
            "assignment_expression",
            "assignment_pattern",
        ):
            return None  # augmented assignment: x += 1 is a use
        if parent.type == "assignment_expression" and in_def:
            return None  # JS/Java/C: assigning inside a function is a use; declarations have their own nodes
        if parent.type == "assignment" and _used_before(node, grammar):
            return None  # Python: only the first assignment in its scope declares the name
        return False, in_def
    if (
        parent.type == "expression_list"
        and parent.parent is not None
        and parent.parent.type == "short_var_declaration"
    ):
        return False, in_def  # Go: x := ...
    return None


def _shadowed(
    node: tree_sitter.Node, name: str, grammar: Grammar, stop: tree_sitter.Node | None = None
) -> bool:
    """A function around ``node`` (below ``stop``) binds ``name`` itself, as a parameter or a local: there the
    name means that, not the outer declaration."""
    for definition in _ancestors(node.parent):
        if stop is not None and definition.id == stop.id:
            return False
        if definition.type not in grammar.definitions:
            continue
        if any(p.name == name for p in lang.parameters(definition, grammar) or []):
            return True
        body = definition.child_by_field_name("body")
        if body is not None:
            for other in _named(grammar, body, name):
                if lang.text(other) == name and _declares_locally(other, grammar):
                    return True
    return False


def _declares_locally(node: tree_sitter.Node, grammar: Grammar) -> bool:
    parent = node.parent
    if parent is None or lang.is_member_name(node, grammar):
        return False
    field_name = lang.field_of(node)
    if parent.type in ("assignment", "variable_declarator", "let_declaration", "init_declarator"):
        return field_name in ("left", "name", "pattern", "declarator")
    return (
        parent.type == "expression_list"
        and parent.parent is not None
        and parent.parent.type == "short_var_declaration"
    )


def _used_before(node: tree_sitter.Node, grammar: Grammar) -> bool:
    scope = _enclosing_definition(node.parent, grammar)
    root = scope if scope is not None else node.tree.root_node if hasattr(node, "tree") else None
    if root is None:
        root = node
        while root.parent is not None:
            root = root.parent
    name = lang.text(node)
    for other in _named(grammar, root, name):
        if other.start_byte >= node.start_byte:
            return False
        if lang.text(other) == name and not lang.is_member_name(other, grammar):
            return True
    return False


def _rename(
    grammar: Grammar,
    old_tree: tree_sitter.Tree,
    new_tree: tree_sitter.Tree,
    old_range: tuple[int, int],
    new_range: tuple[int, int],
    after: str,
    new_src: bytes,
) -> Rename | None:
    old_node = _name_at(old_tree.root_node, *old_range)
    new_node = _name_at(new_tree.root_node, *new_range)
    if old_node is None or new_node is None or old_node.start_byte != new_node.start_byte:
        return None
    old, new = lang.text(old_node), lang.text(new_node)
    if old == new or not new or not old:
        return None
    declared = _is_declaration(old_node, grammar)
    if declared is None:
        return None
    member, local = declared
    scope = _enclosing_definition(old_node, grammar) if local else old_tree.root_node
    conflict = scope is not None and any(
        lang.text(n) == new and lang.is_member_name(n, grammar) == member for n in _named(grammar, scope, new)
    )
    return Rename(old, new, member, local, _Offsets(after, new_src).to_str(new_node.start_byte), conflict)


@functools.lru_cache(maxsize=256)
def _word(name: str) -> re.Pattern[bytes]:
    word = re.escape(name.encode("utf-8", "surrogatepass"))
    return re.compile(rb"(?<![A-Za-z0-9_$])" + word + rb"(?![A-Za-z0-9_$])")


def _named(grammar: Grammar, root: tree_sitter.Node, name: str) -> list[tree_sitter.Node]:
    """Name nodes spelled ``name`` under ``root``, in document order: the text is searched (C speed), and
    only where the word occurs is the tree asked which node is there (a word in a comment or a string is
    no name node, so it is left out)."""
    if not name:
        return []
    text = root.text or b""
    base = root.start_byte
    found = []
    for m in _word(name).finditer(text):
        a, b = base + m.start(), base + m.end()
        node = root.descendant_for_byte_range(a, b)
        if node is not None and node.type in NAME_TYPES and node.start_byte == a and node.end_byte == b:
            found.append(node)
    return found


def _walk(
    grammar: Grammar, root: tree_sitter.Node, types: frozenset[str] | set[str]
) -> list[tree_sitter.Node]:
    """Nodes of ``types`` under ``root`` (itself included) in document order, found by a tree-sitter query
    (C speed: a 100 kB file has tens of thousands of nodes)."""
    query = _query(grammar.language, frozenset(types))
    if query is None:
        return []
    found = tree_sitter.QueryCursor(query).captures(root).get("n", [])
    found.sort(key=lambda n: (n.start_byte, -n.end_byte))
    return found


# --------------------------------------------------------------------------------------------------------
# Where, and what
# --------------------------------------------------------------------------------------------------------


@dataclass
class _Parsed:
    source: Source
    tree: tree_sitter.Tree
    src: bytes
    offsets: _Offsets = field(init=False)

    def __post_init__(self) -> None:
        self.offsets = _Offsets(self.source.text, self.src)

    def edit(
        self, start: int, end: int, new_text: str, kind: FollowUpKind, snippet: bool = False
    ) -> FollowUp:
        plain = _strip_placeholders(new_text) if snippet else new_text
        return FollowUp(
            self.source.uri,
            self.offsets.to_str(start),
            self.offsets.to_str(end),
            new_text,
            kind,
            snippet,
            plain,
            self.source.version,
        )

    def slice(self, start: int, end: int) -> str:
        return self.src[start:end].decode("utf-8", "surrogatepass")


def _strip_placeholders(text: str) -> str:
    return re.sub(r"\$\{\d+:([^}]*)\}", r"\1", text)


def follow_ups(
    change: Change,
    origin: Source,
    others: Iterable[Source],
    *,
    limit: int = 50,
    cancelled: Callable[[], bool] = lambda: False,
) -> list[FollowUp]:
    """The edits that still need making for ``change`` (made in ``origin``), in ``origin`` first, then in
    ``others`` (same language family) in the order given; at most ``limit``."""
    if change.conflict:
        return []
    grammar = GRAMMARS[origin.language]
    out: list[FollowUp] = []
    needle = change.old if isinstance(change, Rename) else change.old_name
    for i, source in enumerate([origin, *others]):
        if len(out) >= limit or cancelled():
            break
        if i > 0 and (isinstance(change, Rename) and change.local):
            break
        source_grammar = GRAMMARS.get(source.language)
        if source_grammar is None or source_grammar.family != grammar.family:
            continue
        names = {needle}
        if isinstance(change, SignatureChange):
            names.add(change.new_name)
        if not any(n in source.text for n in names):
            continue
        tree, src = parse(source.language, source.text)
        parsed = _Parsed(source, tree, src)
        if isinstance(change, Rename):
            found = _rename_sites(change, parsed, source_grammar, i == 0)
        else:
            found = _signature_sites(change, parsed, source_grammar, i == 0)
        out.extend(found)
    return out[:limit]


def _rename_sites(change: Rename, parsed: _Parsed, grammar: Grammar, is_origin: bool) -> list[FollowUp]:
    root = parsed.tree.root_node
    if change.local:
        if not is_origin:
            return []
        anchor = _byte(parsed.source.text, change.anchor)
        scope = _enclosing_definition(root.descendant_for_byte_range(anchor, anchor), grammar)
        if scope is None:
            return []
        root = scope
    # Java and C++ methods reach their class's fields without ``this``: plain names in the class count too.
    implicit: tuple[int, int] | None = None
    if change.member and is_origin and parsed.source.language in ("java", "cpp"):
        anchor = _byte(parsed.source.text, change.anchor)
        holder = next(
            (
                a
                for a in _ancestors(root.descendant_for_byte_range(anchor, anchor))
                if a.type in grammar.classes
            ),
            None,
        )
        if holder is not None:
            implicit = (holder.start_byte, holder.end_byte)
    out = []
    for node in _named(grammar, root, change.old):
        if lang.text(node) != change.old or node.has_error:
            continue
        if lang.is_member_name(node, grammar) != change.member:
            inside = implicit is not None and implicit[0] <= node.start_byte < implicit[1]
            if not (
                inside and node.type == "identifier" and _enclosing_definition(node, grammar) is not None
            ):
                continue
        if (
            node.parent is not None
            and node.parent.type in grammar.keyword_arguments
            and lang.field_of(node) == "name"
        ):
            continue  # f(old=1) names a parameter, not this variable
        if not change.member and _shadowed(node, change.old, grammar, stop=root if change.local else None):
            continue
        out.append(parsed.edit(node.start_byte, node.end_byte, change.new, "rename"))
    return out


def _positional(args: tree_sitter.Node, grammar: Grammar) -> list[tree_sitter.Node] | None:
    """The positional arguments of a call; None when positions are unknown (a splat) or the list is broken."""
    out = []
    for child in args.named_children:
        if child.type == "comment":
            continue
        if child.type in grammar.splat_arguments or child.type == "ERROR":
            return None
        if child.type in grammar.keyword_arguments:
            continue
        out.append(child)
    return out


def _signature_sites(
    change: SignatureChange, parsed: _Parsed, grammar: Grammar, is_origin: bool
) -> list[FollowUp]:
    root = parsed.tree.root_node
    out: list[FollowUp] = []
    renamed = change.renamed_parameter
    if renamed and is_origin:
        anchor = _byte(parsed.source.text, change.anchor)
        definition = _enclosing_definition(root.descendant_for_byte_range(anchor, anchor + 1), grammar)
        body = definition.child_by_field_name("body") if definition is not None else None
        if body is not None:
            for node in _named(grammar, body, renamed[0]):
                if lang.text(node) == renamed[0] and not lang.is_member_name(node, grammar):
                    if (
                        node.parent is not None
                        and node.parent.type in grammar.keyword_arguments
                        and lang.field_of(node) == "name"
                    ):
                        continue
                    out.append(parsed.edit(node.start_byte, node.end_byte, renamed[1], "parameter_use"))
    covered: list[tuple[int, int]] = []
    for call in _calls_named(grammar, root, {change.old_name, change.new_name}):
        edit = _call_site(change, parsed, grammar, call)
        if edit is not None:
            out.append(edit)
        name = lang.callee(call)
        if name is not None:
            covered.append((name.start_byte, name.end_byte))
    if change.old_name != change.new_name and not change.method:
        # A renamed function is also referred to without a call: imported, passed, decorated with.
        calls = set(covered)
        definition_names = {
            (n.start_byte, n.end_byte)
            for d in _walk(grammar, root, grammar.definitions)
            if (n := lang.definition_name(d)) is not None
        }
        for node in _named(grammar, root, change.old_name):
            if lang.text(node) != change.old_name or lang.is_member_name(node, grammar):
                continue
            span = (node.start_byte, node.end_byte)
            if span in calls or span in definition_names or node.has_error:
                continue
            if node.parent is not None and node.parent.type in grammar.keyword_arguments:
                continue
            if _shadowed(node, change.old_name, grammar):
                continue
            out.append(parsed.edit(node.start_byte, node.end_byte, change.new_name, "rename"))
        out.sort(key=lambda u: u.start)
    return out


def _calls_named(grammar: Grammar, root: tree_sitter.Node, names: set[str]) -> list[tree_sitter.Node]:
    """Calls under ``root`` whose callee is spelled one of ``names``, in document order: found from the
    names up (a few nodes each), not by visiting every call of a large file."""
    calls: dict[int, tree_sitter.Node] = {}
    for name in names:
        for node in _named(grammar, root, name):
            up = node.parent
            for _ in range(3):
                if up is None:
                    break
                if up.type in grammar.calls:
                    callee = lang.callee(up)
                    if callee is not None and callee.id == node.id:
                        calls[up.id] = up
                    break
                up = up.parent
    return sorted(calls.values(), key=lambda n: n.start_byte)


def _call_site(
    change: SignatureChange, parsed: _Parsed, grammar: Grammar, call: tree_sitter.Node
) -> FollowUp | None:
    name = lang.callee(call)
    if name is None or lang.text(name) not in (change.old_name, change.new_name):
        return None
    if not change.method and lang.text(name) == change.old_name and _shadowed(name, change.old_name, grammar):
        return None  # a parameter or local of that name is called here, not the function
    member_call = lang.is_member_name(name, grammar) or (
        name.parent is not None and name.parent.type in grammar.members
    )
    if change.method and not member_call and parsed.source.language not in ("java", "cpp", "c"):
        return None  # a function of the same name, not this method
    args = lang.arguments(call)
    if args is None or args.has_error:
        return None
    pieces: list[tuple[int, int, str]] = []  # byte start, end, replacement
    if lang.text(name) != change.new_name:
        pieces.append((name.start_byte, name.end_byte, change.new_name))
    pieces.extend(_argument_edits(change, parsed, grammar, call, args) or [])
    renamed = change.renamed_parameter
    if renamed and grammar.keyword_arguments:
        for child in args.named_children:
            if child.type in grammar.keyword_arguments:
                key = child.child_by_field_name("name")
                if key is not None and lang.text(key) == renamed[0]:
                    pieces.append((key.start_byte, key.end_byte, renamed[1]))
    if not pieces:
        return None
    pieces.sort()
    start, end = pieces[0][0], max(p[1] for p in pieces)
    text, at = [], start
    for a, b, new in pieces:
        if a < at:
            return None  # overlapping pieces: not something to guess at
        text.append(parsed.slice(at, a))
        text.append(new)
        at = b
    text.append(parsed.slice(at, end))
    new_text = "".join(text)
    kind: FollowUpKind = "callee" if all(p[2] == change.new_name for p in pieces) else "arguments"
    return parsed.edit(start, end, new_text, kind, snippet="${" in new_text)


def _argument_edits(
    change: SignatureChange, parsed: _Parsed, grammar: Grammar, call: tree_sitter.Node, args: tree_sitter.Node
) -> list[tuple[int, int, str]] | None:
    old = [p for p in change.old_params if not p.variadic]
    new = [p for p in change.new_params if not p.variadic]
    old_names, new_names = [p.name for p in old], [p.name for p in new]
    if old_names == new_names or change.renamed_parameter:
        return []
    positional = _positional(args, grammar)
    if positional is None:
        return None
    n = len(positional)
    if n > len(old) and not any(p.variadic for p in change.old_params):
        return None  # more arguments than the old signature takes: not a call to it
    required_new = sum(1 for p in new if not p.optional)
    if n != len(old) and n < required_new and n < sum(1 for p in old if not p.optional):
        return None
    # Already matches the new signature (updated by hand, or this edit was applied): nothing to do.
    if _matches(n, new) and not _matches(n, old):
        return None
    if set(old_names) <= set(new_names) and _is_subsequence(old_names, new_names):
        return _insertions(parsed, grammar, call, args, positional, old_names, new)
    if set(new_names) <= set(old_names) and _is_subsequence(new_names, old_names):
        return _removals(parsed, args, positional, old_names, new_names)
    if sorted(old_names) == sorted(new_names) and n == len(old):
        texts = {
            name: parsed.slice(a.start_byte, a.end_byte)
            for name, a in zip(old_names, positional, strict=True)
        }
        return [
            (a.start_byte, a.end_byte, texts[name])
            for name, a in zip(new_names, positional, strict=True)
            if texts[name] != parsed.slice(a.start_byte, a.end_byte)
        ]
    return None


def _matches(n: int, params: list[Parameter]) -> bool:
    return sum(1 for p in params if not p.optional) <= n <= len(params)


def _is_subsequence(short: list[str], long: list[str]) -> bool:
    it = iter(long)
    return all(any(x == y for y in it) for x in short)


def _insertions(
    parsed: _Parsed,
    grammar: Grammar,
    call: tree_sitter.Node,
    args: tree_sitter.Node,
    positional: list[tree_sitter.Node],
    old_names: list[str],
    new: list[Parameter],
) -> list[tuple[int, int, str]] | None:
    by_name = dict(zip(old_names, positional, strict=False))  # old parameters given at this call
    out: list[tuple[int, int, str]] = []
    placeholder = 0
    previous: tree_sitter.Node | None = None
    for j, p in enumerate(new):
        if p.name in by_name:
            previous = by_name[p.name]
            continue
        if p.name in old_names:
            break  # an optional old parameter not given here: later ones cannot be positional either
        if p.optional and not any(q.name in by_name for q in new[j + 1 :]):
            continue  # has a default and nothing after it is given: the call is fine as it is
        if _in_scope(parsed, grammar, call, p.name):
            value = p.name
        else:
            placeholder += 1
            value = f"${{{placeholder}:{p.name}}}"
        if previous is not None:
            out.append((previous.end_byte, previous.end_byte, f", {value}"))
        elif positional:
            out.append((positional[0].start_byte, positional[0].start_byte, f"{value}, "))
        else:
            opening = args.children[0] if args.children else None
            if opening is None or lang.text(opening) != "(":
                return None
            # f() or f(key=1): the first argument goes right after the parenthesis.
            rest = [c for c in args.named_children if c.type != "comment"]
            out.append((opening.end_byte, opening.end_byte, f"{value}, " if rest else value))
    # Several insertions at one place (two parameters added side by side) become one.
    merged: list[tuple[int, int, str]] = []
    for piece in out:
        if merged and merged[-1][0] == piece[0] and merged[-1][1] == piece[1]:
            merged[-1] = (piece[0], piece[1], merged[-1][2] + piece[2])
        else:
            merged.append(piece)
    return merged


def _removals(
    parsed: _Parsed,
    args: tree_sitter.Node,
    positional: list[tree_sitter.Node],
    old_names: list[str],
    new_names: list[str],
) -> list[tuple[int, int, str]]:
    out = []
    gone = [i for i, name in enumerate(old_names) if name not in new_names and i < len(positional)]
    for i in gone:
        node = positional[i]
        nxt = node.next_sibling
        if i + 1 < len(positional) or (
            nxt is not None and lang.text(nxt) == "," and nxt.next_named_sibling is not None
        ):
            # Not the last: remove it, its comma and the space after.
            end = nxt.end_byte if nxt is not None and lang.text(nxt) == "," else node.end_byte
            follower = nxt.next_sibling if nxt is not None else None
            if follower is not None:
                end = follower.start_byte
            out.append((node.start_byte, end, ""))
        else:
            prev = node.prev_sibling
            start = prev.start_byte if prev is not None and lang.text(prev) == "," else node.start_byte
            if prev is not None and lang.text(prev) == "," and i - 1 in gone:
                start = node.start_byte
            out.append((start, node.end_byte, ""))
    return out


def _in_scope(parsed: _Parsed, grammar: Grammar, call: tree_sitter.Node, name: str) -> bool:
    """A name spelled ``name`` is declared before ``call`` in its function (or its file)."""
    definition = _enclosing_definition(call, grammar)
    scope = definition or parsed.tree.root_node
    for node in _named(grammar, scope, name):
        if node.start_byte >= call.start_byte:
            break
        if lang.text(node) == name and not lang.is_member_name(node, grammar):
            inner = _enclosing_definition(node, grammar)
            if inner is not None and (definition is None or inner.id != definition.id):
                continue  # another function's parameter or local: not visible here
            if (
                node.parent is not None
                and node.parent.type in grammar.keyword_arguments
                and lang.field_of(node) == "name"
            ):
                continue
            return True
    if scope is not parsed.tree.root_node:
        params = lang.parameters(scope, grammar) or []
        return any(p.name == name for p in params)
    return False
