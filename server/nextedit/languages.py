"""What a definition, a parameter, a call and a name look like in each grammar.

Tables of tree-sitter node types and fields per language, and small functions that read a definition's
name and parameters or a call's callee and arguments from a node.  Everything else in ``nextedit`` is
written against these functions, so a language is added here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Final

import tree_sitter


@dataclass(frozen=True)
class Grammar:
    definitions: frozenset[str]
    """Function and method definitions."""
    classes: frozenset[str]
    """Class-like containers: a definition inside one is a method, called as ``obj.name(...)``."""
    calls: frozenset[str]
    """Call expressions, with ``function`` (or Java's ``name``) and ``arguments`` fields."""
    members: frozenset[str]
    """Member accesses (``a.b``), whose last name is the member."""
    skipped_parameters: frozenset[str] = frozenset()
    """Parameters a caller does not pass (Python's ``self``/``cls``, Rust's ``self``)."""
    optional_parameters: frozenset[str] = frozenset()
    """Parameter node types that have a default: adding one needs no argument at call sites."""
    variadic_parameters: frozenset[str] = frozenset()
    """``*args``, ``...rest``: a call site with these cannot be matched by position."""
    keyword_arguments: frozenset[str] = frozenset()
    """Arguments by name (``f(x=1)``): after the positional ones."""
    splat_arguments: frozenset[str] = frozenset()
    """``f(*xs)``, ``f(...xs)``: positions unknown, the call site is left alone."""
    language: str = ""
    """The grammar's own language (queries are compiled per grammar)."""
    family: str = ""
    """Languages that call each other's functions (JS and TS; C and C++) share a family."""


_PY: Final = Grammar(
    definitions=frozenset({"function_definition"}),
    classes=frozenset({"class_definition"}),
    calls=frozenset({"call"}),
    members=frozenset({"attribute"}),
    skipped_parameters=frozenset({"self", "cls"}),
    optional_parameters=frozenset({"default_parameter", "typed_default_parameter"}),
    variadic_parameters=frozenset({"list_splat_pattern", "dictionary_splat_pattern", "keyword_separator"}),
    keyword_arguments=frozenset({"keyword_argument"}),
    splat_arguments=frozenset({"list_splat", "dictionary_splat"}),
)
_JS_DEFS: Final = frozenset(
    {"function_declaration", "generator_function_declaration", "method_definition", "function_expression"}
)
_JS: Final = Grammar(
    definitions=_JS_DEFS,
    classes=frozenset({"class_declaration", "class", "abstract_class_declaration"}),
    calls=frozenset({"call_expression"}),
    members=frozenset({"member_expression"}),
    optional_parameters=frozenset({"assignment_pattern", "optional_parameter"}),
    variadic_parameters=frozenset({"rest_pattern"}),
    splat_arguments=frozenset({"spread_element"}),
)
_GO: Final = Grammar(
    definitions=frozenset({"function_declaration", "method_declaration"}),
    classes=frozenset(),
    calls=frozenset({"call_expression"}),
    members=frozenset({"selector_expression"}),
    variadic_parameters=frozenset({"variadic_parameter_declaration"}),
    splat_arguments=frozenset({"variadic_argument"}),
)
_RUST: Final = Grammar(
    definitions=frozenset({"function_item"}),
    classes=frozenset({"impl_item", "trait_item"}),
    calls=frozenset({"call_expression"}),
    members=frozenset({"field_expression", "scoped_identifier"}),
    skipped_parameters=frozenset({"self"}),
)
_JAVA: Final = Grammar(
    definitions=frozenset({"method_declaration", "constructor_declaration"}),
    classes=frozenset(
        {"class_declaration", "interface_declaration", "enum_declaration", "record_declaration"}
    ),
    calls=frozenset({"method_invocation"}),
    members=frozenset({"field_access"}),
    variadic_parameters=frozenset({"spread_parameter"}),
)
_C: Final = Grammar(
    definitions=frozenset({"function_definition"}),
    classes=frozenset({"class_specifier", "struct_specifier"}),
    calls=frozenset({"call_expression"}),
    members=frozenset({"field_expression", "qualified_identifier"}),
    optional_parameters=frozenset({"optional_parameter_declaration"}),
    variadic_parameters=frozenset({"variadic_parameter", "variadic_parameter_declaration"}),
)

GRAMMARS: Final[dict[str, Grammar]] = {
    language: replace(grammar, language=language, family=family)
    for language, grammar, family in (
        ("python", _PY, "python"),
        ("javascript", _JS, "js"),
        ("typescript", _JS, "js"),
        ("tsx", _JS, "js"),
        ("go", _GO, "go"),
        ("rust", _RUST, "rust"),
        ("java", _JAVA, "java"),
        ("c", _C, "c"),
        ("cpp", _C, "c"),
    )
}

# Names: what a rename can touch.  ``type_identifier`` is a class's name where the grammar says so (TS,
# Rust, Go, C++), so a renamed type reaches its uses.
NAME_TYPES: Final = frozenset(
    {
        "identifier",
        "property_identifier",
        "field_identifier",
        "shorthand_property_identifier",
        "shorthand_property_identifier_pattern",
        "type_identifier",
    }
)
MEMBER_FIELDS: Final = frozenset({"attribute", "property", "field", "name"})
# The field under which a parent holds the name it declares.
DECLARING_FIELDS: Final = frozenset({"name", "left", "pattern", "declarator"})
PARAMETER_LISTS: Final = frozenset({"parameters", "formal_parameters", "parameter_list"})
_PARAM_NAME_FIELDS: Final = ("name", "pattern", "declarator", "left")


def text(node: tree_sitter.Node) -> str:
    return (node.text or b"").decode("utf-8", "replace")


def definition_name(node: tree_sitter.Node) -> tree_sitter.Node | None:
    """The name node of a function or method definition (C/C++: inside the function declarator)."""
    name = node.child_by_field_name("name")
    if name is not None:
        return name
    declarator = _function_declarator(node)
    if declarator is None:
        return None
    inner = declarator.child_by_field_name("declarator")
    while inner is not None and inner.type in (
        "qualified_identifier",
        "destructor_name",
        "template_function",
    ):
        inner = inner.child_by_field_name("name") or (
            inner.named_children[-1] if inner.named_children else None
        )
    return inner


def _function_declarator(node: tree_sitter.Node) -> tree_sitter.Node | None:
    declarator = node.child_by_field_name("declarator")
    for _ in range(4):  # int *f(...), int &f(...): pointer/reference declarators wrap the function one
        if declarator is None or declarator.type == "function_declarator":
            return declarator
        declarator = declarator.child_by_field_name("declarator") or (
            declarator.named_children[-1] if declarator.named_children else None
        )
    return None


def parameter_list(node: tree_sitter.Node) -> tree_sitter.Node | None:
    params = node.child_by_field_name("parameters")
    if params is not None:
        return params
    declarator = _function_declarator(node)
    return declarator.child_by_field_name("parameters") if declarator is not None else None


@dataclass(frozen=True)
class Parameter:
    name: str
    optional: bool
    variadic: bool


def parameters(definition: tree_sitter.Node, grammar: Grammar) -> list[Parameter] | None:
    """The parameters a caller passes, in order; None when the list cannot be read (a parse error in it)."""
    params = parameter_list(definition)
    if params is None or params.has_error:
        return None
    out: list[Parameter] = []
    for child in params.named_children:
        if child.type in ("comment", "self_parameter"):
            continue
        names = list(_parameter_names(child))
        if not names:
            if child.type in grammar.variadic_parameters:
                out.append(Parameter("", False, True))
            continue
        for name in names:  # Go: ``b, c string`` declares two
            if name in grammar.skipped_parameters and not out and _is_method(definition, grammar):
                continue
            out.append(
                Parameter(
                    name, child.type in grammar.optional_parameters, child.type in grammar.variadic_parameters
                )
            )
    return out


def _parameter_names(node: tree_sitter.Node) -> Iterator[str]:
    if node.type == "identifier":
        yield text(node)
        return
    found = False
    for field_name in _PARAM_NAME_FIELDS:
        for child in node.children_by_field_name(field_name):
            found = True
            yield from _parameter_names(child) if child.type != "identifier" else [text(child)]
    if not found:
        for child in node.named_children:
            if child.type == "identifier":
                yield text(child)
                return
            if child.type.endswith("_declarator") or child.type.endswith("_pattern"):
                yield from _parameter_names(child)
                return


def _is_method(definition: tree_sitter.Node, grammar: Grammar) -> bool:
    parent = definition.parent
    for _ in range(3):
        if parent is None:
            return False
        if parent.type in grammar.classes:
            return True
        if parent.type in grammar.definitions:
            return False
        parent = parent.parent
    return False


def is_method(definition: tree_sitter.Node, grammar: Grammar) -> bool:
    """Defined in a class (or an impl, or with a Go receiver): called through a member access."""
    return (
        definition.type == "method_declaration" and definition.child_by_field_name("receiver") is not None
    ) or _is_method(definition, grammar)


def callee(call: tree_sitter.Node) -> tree_sitter.Node | None:
    """The name node a call calls: ``f`` in ``f(x)``, ``m`` in ``a.b.m(x)``, ``n`` in ``R::n(x)``."""
    if call.type == "method_invocation":  # Java
        return call.child_by_field_name("name")
    function = call.child_by_field_name("function")
    while function is not None and function.type not in NAME_TYPES:
        nxt = None
        for field_name in ("attribute", "property", "field", "name"):
            nxt = function.child_by_field_name(field_name)
            if nxt is not None:
                break
        if nxt is None and function.type in ("generic_function", "template_function"):
            nxt = function.child_by_field_name("function") or function.child_by_field_name("name")
        function = nxt
    return function


def is_member_name(node: tree_sitter.Node, grammar: Grammar) -> bool:
    """``b`` in ``a.b`` (attribute, property, field): a member, not a plain variable."""
    if node.type in ("property_identifier", "field_identifier", "shorthand_property_identifier"):
        return True
    parent = node.parent
    if parent is None or parent.type not in grammar.members:
        return False
    field_name = _field_of(node)
    return field_name in MEMBER_FIELDS


def _field_of(node: tree_sitter.Node) -> str | None:
    parent = node.parent
    if parent is None:
        return None
    for i, child in enumerate(parent.children):
        if child.id == node.id:
            return parent.field_name_for_child(i)
    return None


def field_of(node: tree_sitter.Node) -> str | None:
    """The field under which ``node``'s parent holds it, if any."""
    return _field_of(node)


def arguments(call: tree_sitter.Node) -> tree_sitter.Node | None:
    return call.child_by_field_name("arguments")
