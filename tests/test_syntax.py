"""Tests of the tree-sitter syntax context: what the model is told about the cursor's surroundings.

The fixtures below are one small file per language with a method nested in a class/struct/impl and the
cursor (█) inside its body; the expected values are exactly what the prompt gets for that position.
"""

from __future__ import annotations

import random
import threading

import pytest

from opportune.server.context.syntax import (
    LANGUAGES,
    SyntaxContext,
    SyntaxLimits,
    SyntaxTree,
    language_for,
)

CURSOR = "█"


def at_cursor(text: str) -> tuple[bytes, int]:
    """The source without the cursor mark, and the cursor's byte offset."""
    index = text.index(CURSOR)
    return text.replace(CURSOR, "").encode(), len(text[:index].encode())


def context(language: str, text: str, **kwargs: object) -> SyntaxContext:
    source, cursor = at_cursor(text)
    return SyntaxTree(language, source).context_at(cursor, **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------------
# What the model sees for a nested method, per language
# --------------------------------------------------------------------------------------------------------

PYTHON = '''"""Module doc."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

import os


def helper(x: int) -> int:
    import json  # function-local: not one of the file's imports

    return x


class Outer:
    """An outer class."""

    class Inner:
        @staticmethod
        def method(
            x: int,
            names: Iterator[str],
        ) -> str:
            value = x + 1
            return str(val█ue)

        def other(self) -> None:
            pass

    def after(self): ...
'''

JAVASCRIPT = """import fs from "node:fs";
import { join } from "node:path";
const util = require("node:util");

export class Outer {
  constructor(name) {
    this.name = name;
  }

  async render(items) {
    const rows = items.map((item) => {
      return item.na█me;
    });
    return rows;
  }
}

function helper(a, b) {
  return a + b;
}
"""

TYPESCRIPT = """import { Injectable } from "@angular/core";
import type { Item } from "./item";

interface Store<T> {
  get(id: string): T | undefined;
}

@Injectable()
export class ItemService<T extends Item> implements Store<T> {
  private readonly items = new Map<string, T>();

  get(id: string): T | undefined {
    return this.items.get(id);
  }

  public async save(item: T): Promise<void> {
    if (item.id) {
      this.items.set(item.id, it█em);
    }
  }
}
"""

TSX = """import React from "react";
import { useState } from "react";

type Props = { start: number };

export class Counter extends React.Component<Props> {
  render() {
    return <button onClick={this.handle}>{this.props.start}</button>;
  }

  handle = (event: MouseEvent) => {
    event.preventDef█ault();
  };
}
"""

GO = """package server

import (
\t"context"
\t"fmt"
)

import "os"

type Server struct {
\tname string
}

func (s *Server) Run(ctx context.Context) error {
\thandler := func(w int) error {
\t\treturn fmt.Errorf("%s %d", s.na█me, w)
\t}
\treturn handler(len(os.Args))
}

func helper() int { return 1 }
"""

RUST = """use std::collections::HashMap;
use std::fmt::{self, Display};
extern crate alloc;
mod util;

pub struct Cache {
    items: HashMap<String, u32>,
}

impl Cache {
    pub fn new() -> Self {
        Self { items: HashMap::new() }
    }

    #[inline]
    pub fn get_or_insert(&mut self, key: &str) -> u32 {
        let len = self.items.len() as u32;
        *self.items.entry(key.to_string()).or_insert(l█en)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn works() {}
}
"""

JAVA = """package com.example.app;

import java.util.List;
import java.util.Map;

/** An outer class. */
@Service
public class Outer<T> extends Base implements Runnable {
    private final int size = 1;

    @Override
    public void run() {
    }

    static class Inner {
        @Deprecated
        public String method(int x,
                             List<String> names) throws Exception {
            int y = x + names.si█ze();
            return String.valueOf(y);
        }
    }

    interface Callback { void call(int a); }
}
"""

C = """#ifndef CACHE_H
#define CACHE_H
#include <stdio.h>
#include "cache.h"
#endif

struct cache {
    int size;
    const char **keys;
};

int cache_size(const struct cache *c);

static int
lookup(struct cache *c, const char *key)
{
    for (int i = 0; i < c->size; i++) {
        if (c->keys[i] == key) {
            return i;
        }
    }
    return c->si█ze;
}
"""

CPP = """#include <string>
#include <vector>
using std::string;

namespace app {

template <typename T>
class Repo : public Base {
public:
    explicit Repo(int n) : n_(n) {}

    T find(const string& key) const {
        for (const auto& item : items_) {
            if (item.key == key) return item;
        }
        return T{n_, ke█y};
    }

private:
    int n_;
    std::vector<T> items_;
};

}  // namespace app
"""

# language -> (file with cursor, imports, scopes, sibling signatures)
NESTED: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "python": (
        PYTHON,
        (
            "from __future__ import annotations",
            "import os",
            "from typing import TYPE_CHECKING",
            "from collections.abc import Iterator",
        ),
        (
            "class Outer:",
            "    class Inner:",
            "        @staticmethod\n        def method(\n            x: int,\n            names: Iterator[str],\n"
            "        ) -> str:",
        ),
        ("def helper(x: int) -> int:", "        def other(self) -> None:", "    def after(self):"),
    ),
    "javascript": (
        JAVASCRIPT,
        (
            'import fs from "node:fs";',
            'import { join } from "node:path";',
            'const util = require("node:util");',
        ),
        ("export class Outer {", "  async render(items) {", "    const rows = items.map((item) => {"),
        ("  constructor(name) {", "function helper(a, b) {"),
    ),
    "typescript": (
        TYPESCRIPT,
        ('import { Injectable } from "@angular/core";', 'import type { Item } from "./item";'),
        (
            "@Injectable()\nexport class ItemService<T extends Item> implements Store<T> {",
            "  public async save(item: T): Promise<void> {",
        ),
        ("interface Store<T> {", "  get(id: string): T | undefined;", "  get(id: string): T | undefined {"),
    ),
    "tsx": (
        TSX,
        ('import React from "react";', 'import { useState } from "react";'),
        ("export class Counter extends React.Component<Props> {", "  handle = (event: MouseEvent) => {"),
        ("  render() {",),
    ),
    "go": (
        GO,
        ("package server", 'import (\n\t"context"\n\t"fmt"\n)', 'import "os"'),
        ("func (s *Server) Run(ctx context.Context) error {", "\thandler := func(w int) error {"),
        # A struct is data: the outline shows its fields (what code elsewhere in the file uses).
        ("type Server struct {\n\tname string\n}", "func helper() int {"),
    ),
    "rust": (
        RUST,
        (
            "use std::collections::HashMap;",
            "use std::fmt::{self, Display};",
            "extern crate alloc;",
            "mod util;",
        ),
        ("impl Cache {", "    #[inline]\n    pub fn get_or_insert(&mut self, key: &str) -> u32 {"),
        (
            "pub struct Cache {\n    items: HashMap<String, u32>,\n}",
            "    pub fn new() -> Self {",
            "#[cfg(test)]\nmod tests {",
            "    #[test]\n    fn works() {",
        ),
    ),
    "java": (
        JAVA,
        ("package com.example.app;", "import java.util.List;", "import java.util.Map;"),
        (
            "@Service\npublic class Outer<T> extends Base implements Runnable {",
            "    static class Inner {",
            "        @Deprecated\n        public String method(int x,\n"
            "                             List<String> names) throws Exception {",
        ),
        ("    @Override\n    public void run() {", "    interface Callback {", "    void call(int a);"),
    ),
    "c": (
        C,
        ("#include <stdio.h>", '#include "cache.h"'),
        ("static int\nlookup(struct cache *c, const char *key)\n{",),
        (
            "struct cache {\n    int size;\n    const char **keys;\n}",
            "int cache_size(const struct cache *c);",
        ),
    ),
    "cpp": (
        CPP,
        ("#include <string>", "#include <vector>", "using std::string;"),
        (
            "namespace app {",
            "template <typename T>\nclass Repo : public Base {",
            "    T find(const string& key) const {",
        ),
        ("    explicit Repo(int n) : n_(n) {",),
    ),
}


def test_every_language_has_a_nested_fixture() -> None:
    assert set(NESTED) == set(LANGUAGES)


@pytest.mark.parametrize("language", sorted(NESTED))
def test_nested_method_context(language: str) -> None:
    text, imports, scopes, siblings = NESTED[language]
    ctx = context(language, text)
    assert ctx.language == language
    assert ctx.imports == imports
    assert ctx.scopes == scopes
    assert ctx.sibling_signatures == siblings
    assert (ctx.multiline, ctx.in_comment, ctx.in_string) == (False, False, False)


@pytest.mark.parametrize("language", sorted(NESTED))
def test_half_typed_line_keeps_scopes(language: str) -> None:
    """The rest of the cursor's line not typed yet: usually a syntax error right at the cursor."""
    text, imports, scopes, _ = NESTED[language]
    source, cursor = at_cursor(text)
    broken = source[:cursor] + source[source.index(b"\n", cursor) :]
    ctx = SyntaxTree(language, broken).context_at(cursor)
    assert (ctx.imports, ctx.scopes) == (imports, scopes)


# Where each fixture resumes after the innermost function around the cursor (its closing brace excluded).
RESUME_AFTER_INNERMOST = {
    "python": "\n        def other",
    "javascript": "\n    return rows;",
    "typescript": "\n}\n",
    "tsx": "\n}\n",
    "go": "\n\treturn handler",
    "rust": "\n}\n\n#[cfg(test)]",
    "java": "\n    }\n\n    interface",
    "c": "",
    "cpp": "\n\nprivate:",
}


@pytest.mark.parametrize("language", sorted(NESTED))
def test_unfinished_method_keeps_scopes(language: str) -> None:
    """Typing a new method: nothing after the cursor in it, not even its closing brace, then more code."""
    text, imports, scopes, _ = NESTED[language]
    source, cursor = at_cursor(text)
    resume = RESUME_AFTER_INNERMOST[language].encode()
    broken = source[:cursor] + (source[source.rindex(resume) :] if resume else b"\n")
    assert broken.count(b"}") < source.count(b"}") or language == "python"  # a closing brace is gone
    ctx = SyntaxTree(language, broken).context_at(cursor)
    assert (ctx.imports, ctx.scopes) == (imports, scopes)


@pytest.mark.parametrize("language", sorted(NESTED))
def test_file_ending_at_the_cursor_keeps_scopes(language: str) -> None:
    """Typing at the end of a new file: every block is still open."""
    text, imports, scopes, _ = NESTED[language]
    source, cursor = at_cursor(text)
    ctx = SyntaxTree(language, source[:cursor]).context_at(cursor)
    assert (ctx.imports, ctx.scopes) == (imports, scopes)


# --------------------------------------------------------------------------------------------------------
# Scopes: Python by indentation, cursor positions at the edges
# --------------------------------------------------------------------------------------------------------


def test_python_scope_of_a_blank_line_follows_its_indentation() -> None:
    text = "class A:\n    def m(self):\n        x = 1\n\n{indent}█\n\ny = 2\n"
    assert context("python", text.replace("{indent}", " " * 8)).scopes == ("class A:", "    def m(self):")
    assert context("python", text.replace("{indent}", " " * 4)).scopes == ("class A:",)
    assert context("python", text.replace("{indent}", "")).scopes == ()


def test_python_empty_body_at_end_of_file() -> None:
    ctx = context("python", "class A:\n    def m(self, x):\n        █")
    assert ctx.scopes == ("class A:", "    def m(self, x):")
    assert ctx.multiline


def test_cursor_in_a_header_is_not_inside_that_scope() -> None:
    assert context("python", "class A:\n    def m(self, x█):\n        pass\n").scopes == ("class A:",)
    assert context("java", "class A {\n  void m(int x█) {}\n}\n").scopes == ("class A {",)


def test_cursor_after_a_closing_brace_is_outside() -> None:
    assert context("javascript", "class A {\n  m() {\n  }█\n}\n").scopes == ("class A {",)
    assert context("javascript", "function f() {\n}\n█").scopes == ()


def test_callback_header_is_its_whole_line() -> None:
    text = 'describe("cache", () => {\n  it("hits", async () => {\n    expect(1).toBe(█);\n  });\n});\n'
    assert context("typescript", text).scopes == ('describe("cache", () => {', '  it("hits", async () => {')


def test_offsets_outside_the_document_are_clamped() -> None:
    source, _ = at_cursor(PYTHON)
    tree = SyntaxTree("python", source)
    assert tree.context_at(-5) == tree.context_at(0)
    assert tree.context_at(10**9) == tree.context_at(len(source))
    assert tree.context_at(len(source)).scopes == ()  # column 0 after the last line: module level


def test_long_headers_are_capped() -> None:
    params = ", ".join(f"argument_{index}: int" for index in range(60))
    text = f"def f({params}) -> None:\n    █\n"
    (scope,) = context("python", text, limits=SyntaxLimits(max_signature_chars=80)).scopes
    assert len(scope) == 80
    assert scope.startswith("def f(argument_0: int")
    assert scope.endswith("…")


# --------------------------------------------------------------------------------------------------------
# Imports and outline
# --------------------------------------------------------------------------------------------------------


def test_c_includes_inside_include_guard_and_not_in_functions() -> None:
    text = "#ifndef X_H\n#define X_H\n#ifdef WIN\n#include <windows.h>\n#else\n#include <unistd.h>\n#endif\n#endif\nint f(void) {\n  █\n}\n"
    assert context("c", text).imports == ("#include <windows.h>", "#include <unistd.h>")


def test_imports_being_typed_are_found_in_broken_code() -> None:
    ctx = context("python", "import os\nfrom typing import (█\n\ndef f():\n    pass\n")
    assert ctx.imports[0] == "import os"


def test_imports_are_capped() -> None:
    text = "".join(f"import m{index}\n" for index in range(100)) + "█"
    ctx = context("python", text, limits=SyntaxLimits(max_imports=5))
    assert ctx.imports == tuple(f"import m{index}" for index in range(5))


def test_outline_keeps_the_nearest_signatures_in_file_order() -> None:
    functions = [f"def f{index}(x):\n    return x\n\n" for index in range(100)]
    text = "".join(functions[:50]) + "def here():\n    █\n\n" + "".join(functions[50:])
    siblings = context("python", text, limits=SyntaxLimits(max_sibling_signatures=4)).sibling_signatures
    assert siblings == ("def f48(x):", "def f49(x):", "def f50(x):", "def f51(x):")


def test_outline_leaves_out_what_the_prompt_already_shows() -> None:
    source, cursor = at_cursor(JAVASCRIPT)
    tree = SyntaxTree("javascript", source)
    visible = (source.index(b"  constructor"), cursor)
    assert tree.context_at(cursor, visible_range=visible).sibling_signatures == ("function helper(a, b) {",)


def test_outline_walks_through_exports_and_namespaces() -> None:
    text = (
        "export function a(): void {}\n"
        "export const b = async (x: number) => {\n  return x;\n};\n"
        "namespace N {\n  export function c() {}\n}\n"
        "declare function d(x: string): void;\n"
        "█"
    )
    assert context("typescript", text).sibling_signatures == (
        "export function a(): void {",
        "export const b = async (x: number) => {",
        "namespace N {",
        "  export function c() {",
        "declare function d(x: string): void;",
    )


# --------------------------------------------------------------------------------------------------------
# multiline, in_comment, in_string, node_type
# --------------------------------------------------------------------------------------------------------

MULTILINE = [
    ("python", "def f(x):\n    █\n", True),
    ("python", "def f(x):█\n", True),
    ("python", "class A:\n    def f(self):\n        # later\n        █\n\nx = 1\n", True),
    ("python", "if x:\n    █\nelse:\n    pass\n", True),
    ("python", "def f(x):\n    return x█ + 1\n", False),
    ("python", "def f(x):\n    y = x\n    █\n", False),
    ("python", 'd = {\n    "a":█', False),
    ("python", "x = y[1:█]\n", False),
    ("javascript", "function f() {\n  █\n}\n", True),
    ("javascript", "function f() {█}\n", True),
    ("javascript", "function f() {\n  return g(█);\n}\n", False),
    ("typescript", "class A {\n  m(): void {\n    █\n  }\n}\n", True),
    ("tsx", "const C = () => {\n  █\n};\n", True),
    ("go", "func f() {\n\t█\n}\n", True),
    ("go", "func f() {\n\tx := 1█\n}\n", False),
    ("rust", "impl A {\n    fn f(&self) {\n        █\n    }\n}\n", True),
    ("rust", "fn f() {\n    let x = g(█);\n}\n", False),
    ("java", "class A {\n  void f() {\n    █\n  }\n}\n", True),
    ("java", "class A {\n  void f() {\n    int x = █1;\n  }\n}\n", False),
    ("c", "int f(void) {\n  /* nothing yet */\n  █\n}\n", True),
    ("c", "int f(void) {\n  return█ 0;\n}\n", False),
    ("cpp", "namespace n {\nclass A {\n  void f() {█}\n};\n}\n", True),
    ("cpp", "int x = 1;█\n", False),
]


@pytest.mark.parametrize(("language", "text", "expected"), MULTILINE)
def test_multiline(language: str, text: str, expected: bool) -> None:
    assert context(language, text).multiline is expected


COMMENT_STRING = [
    ("python", "x = 1  # note█\n", True, False),
    ("python", "x = 1  █# note\n", False, False),
    ("python", 'x = "abc█"\n', False, True),
    ("python", 'x = "abc"█\n', False, False),
    ("python", 'x = "abc█', False, True),  # unterminated, typed at the end
    ("python", 'x = f"a{b█}"\n', False, False),  # code inside an f-string field
    ("python", 'def f():\n    """Doc\n    more█\n    """\n', False, True),
    ("javascript", "x = 1; // c█\ny = 2;\n", True, False),
    ("javascript", "/* abc */█\n", False, False),
    ("javascript", "/* abc█", True, False),
    ("javascript", "x = `a${b█}`;\n", False, False),
    ("javascript", "x = `a${b} █`;\n", False, True),
    ("typescript", "const s: string = 'ab█", False, True),
    ("go", "x := `raw\nmore█`\n", False, True),
    ("go", "// doc█\nfunc f() {}\n", True, False),
    ("rust", "fn f<'a>(x: &'a str) {\n    let y = x;█\n}\n", False, False),
    ("rust", 'fn f() {\n    let s = "ab█', False, True),
    ("rust", "/// doc █\nfn f() {}\n", True, False),
    ("java", 'class A { String s = "ab█"; }\n', False, True),
    ("java", "class A { /* x█ */ }\n", True, False),
    ("c", "char c = 'a';█\n", False, False),
    ("c", "int x; // █\n", True, False),
    ("cpp", 'auto s = R"(raw █)";\n', False, True),
]


@pytest.mark.parametrize(("language", "text", "in_comment", "in_string"), COMMENT_STRING)
def test_in_comment_and_in_string(language: str, text: str, in_comment: bool, in_string: bool) -> None:
    ctx = context(language, text)
    assert (ctx.in_comment, ctx.in_string) == (in_comment, in_string)
    if in_comment or in_string:
        assert not ctx.multiline


def test_node_type_is_the_node_before_the_cursor() -> None:
    assert context("python", "x = foo█\n").node_type == "identifier"
    assert context("python", "█x = 1\n").node_type == "module"
    assert context("go", "package main\n\nfunc f() {\n\tfmt.█\n}\n").node_type == "ERROR"


# --------------------------------------------------------------------------------------------------------
# language_for
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language_id", "uri", "expected"),
    [
        ("python", None, "python"),
        ("javascriptreact", None, "javascript"),
        ("typescriptreact", "file:///x/a.ts", "tsx"),  # the languageId wins over the extension
        ("TypeScript", None, "typescript"),
        ("cpp", None, "cpp"),
        (None, "file:///home/me/src/main.rs", "rust"),
        (None, "file:///home/me/My%20Project/App.JAVA", "java"),
        (None, "untitled:Untitled-1.go", "go"),
        (None, "/tmp/x/component.tsx", "tsx"),
        (None, "C:\\src\\x.cc", "cpp"),
        ("plaintext", "file:///a/b.c", "c"),  # an unknown languageId falls back to the extension
        ("plaintext", "file:///a/notes.txt", None),
        ("markdown", None, None),
        (None, "file:///a/Makefile", None),
        (None, None, None),
    ],
)
def test_language_for(language_id: str | None, uri: str | None, expected: str | None) -> None:
    assert language_for(language_id, uri) == expected


def test_unknown_language_is_refused_by_the_tree() -> None:
    with pytest.raises(ValueError, match="cobol"):
        SyntaxTree("cobol", b"")


# --------------------------------------------------------------------------------------------------------
# Incremental edits
# --------------------------------------------------------------------------------------------------------

TYPED = {
    "python": 'result = compute(value, "text")  # done\n            ',
    "javascript": 'const v = compute(value, "text"); // done\n      ',
    "typescript": "const v: number = compute(value, `t${x}`);\n      ",
    "tsx": "const el = <div className={value}>text</div>;\n    ",
    "go": 'v := compute(value, "text") // done\n\t\t',
    "rust": 'let v = compute(&value, "text"); // done\n        ',
    "java": 'int v = compute(value, "text"); // done\n            ',
    "c": 'int v = compute(value, "text"); /* done */\n    ',
    "cpp": 'auto v = compute(value, std::string{"text"});\n        ',
}


def assert_same_as_fresh(tree: SyntaxTree) -> None:
    fresh = SyntaxTree(tree.language, tree.source)
    assert str(tree.tree.root_node) == str(fresh.tree.root_node)


@pytest.mark.parametrize("language", sorted(NESTED))
def test_typing_and_deleting_keeps_the_tree_equal_to_a_fresh_parse(language: str) -> None:
    source, cursor = at_cursor(NESTED[language][0])
    tree = SyntaxTree(language, source)
    typed = TYPED[language].encode()
    for index in range(len(typed)):  # type the line, one character at a time (every state is broken)
        tree.replace(cursor + index, cursor + index, typed[index : index + 1])
        if index % 5 == 0:
            assert_same_as_fresh(tree)
    assert_same_as_fresh(tree)
    assert tree.source == source[:cursor] + typed + source[cursor:]
    for index in range(len(typed), 0, -1):  # and delete it again with backspace
        tree.replace(cursor + index - 1, cursor + index, b"")
        if index % 5 == 0:
            assert_same_as_fresh(tree)
    assert tree.source == source
    assert_same_as_fresh(tree)
    assert tree.context_at(cursor).scopes == NESTED[language][2]


def test_edit_with_explicit_points_and_multi_line_replacement() -> None:
    source = b"def f():\n    return 1\n\ndef g():\n    pass\n"
    tree = SyntaxTree("python", source)
    start = source.index(b"return 1")
    old_end = start + len(b"return 1")
    new_text = b"x = 1\n    return x"
    new_source = source[:start] + new_text + source[old_end:]
    tree.edit(start, old_end, start + len(new_text), (1, 4), (1, 12), (2, 12), new_source)
    assert tree.version == 1
    assert tree.source == new_source
    assert_same_as_fresh(tree)
    cursor = new_source.index(b"return x") + len(b"return x")
    assert tree.context_at(cursor).scopes == ("def f():",)


def test_inconsistent_edit_falls_back_to_a_full_parse() -> None:
    tree = SyntaxTree("python", b"x = 1\n")
    tree.edit(0, 1, 5, (0, 0), (0, 1), (0, 5), b"yy = 1\n")  # lengths do not add up
    assert tree.source == b"yy = 1\n"
    assert_same_as_fresh(tree)


def test_random_edits_on_every_language_stay_equal_to_a_fresh_parse() -> None:
    rng = random.Random(7)
    alphabet = b"ab (){}[]:;,.\"'`#/*\n\t=<>|&_x1"
    for language in LANGUAGES:
        source, _ = at_cursor(NESTED[language][0])
        tree = SyntaxTree(language, source)
        for _ in range(40):
            start = rng.randrange(len(tree.source) + 1)
            end = min(len(tree.source), start + rng.choice([0, 0, 1, 3]))
            tree.replace(start, end, bytes(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 1, 2]))))
            tree.context_at(rng.randrange(len(tree.source) + 1))
        assert_same_as_fresh(tree)


def test_reset_replaces_the_whole_text() -> None:
    tree = SyntaxTree("go", b"package a\n")
    tree.reset(b'package b\n\nimport "os"\n')
    assert tree.version == 1
    assert tree.context_at(len(tree.source)).imports == ("package b", 'import "os"')


# --------------------------------------------------------------------------------------------------------
# Robustness
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
def test_binary_and_invalid_utf8_never_raise(language: str) -> None:
    rng = random.Random(language)
    junk = bytes(rng.randrange(256) for _ in range(3000)) + b"\xff\xfe\x00class {\n\xc3("
    tree = SyntaxTree(language, junk)
    for offset in [0, 1, len(junk) // 2, len(junk) - 1, len(junk), len(junk) + 10]:
        ctx = tree.context_at(offset)
        assert isinstance(ctx.node_type, str)
        assert all(isinstance(text, str) for text in ctx.scopes + ctx.imports + ctx.sibling_signatures)


@pytest.mark.parametrize("language", LANGUAGES)
def test_empty_document(language: str) -> None:
    ctx = SyntaxTree(language, b"").context_at(0)
    assert (ctx.imports, ctx.scopes, ctx.sibling_signatures) == ((), (), ())
    assert not (ctx.multiline or ctx.in_comment or ctx.in_string)


def test_non_ascii_text_keeps_byte_offsets_right() -> None:
    text = 'class Café:\n    def grüßen(self, 名前: str) -> str:\n        return f"héllo {名前}" + █\n'
    ctx = context("python", text)
    assert ctx.scopes == ("class Café:", "    def grüßen(self, 名前: str) -> str:")


def test_context_on_another_thread_while_edits_arrive() -> None:
    """context_at works on a snapshot; edits never mutate a tree a reader may hold."""
    source, cursor = at_cursor(JAVA)
    tree = SyntaxTree("java", source)
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        rng = random.Random(3)
        try:
            while not done.is_set():
                ctx = tree.context_at(rng.randrange(len(tree.source) + 1))
                assert ctx.language == "java"
        except BaseException as error:  # reported to the main thread below
            errors.append(error)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for index in range(300):
            if index % 2 == 0:
                tree.replace(cursor, cursor, b"x")
            else:
                tree.replace(cursor, cursor + 1, b"")
    finally:
        done.set()
        reader.join()
    assert errors == []
    assert tree.source == source
    assert tree.context_at(cursor).scopes == NESTED["java"][2]
