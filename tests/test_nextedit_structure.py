"""Next edits from structure: the edit history's hunks, and the follow-ups tree-sitter finds for them."""

from __future__ import annotations

import pytest

from opportune.server.nextedit.history import MAX_HUNKS, EditHistory
from opportune.server.nextedit.structure import Rename, SignatureChange, Source, detect, follow_ups


def edited(text: str, *edits: tuple[str, str, str]) -> tuple[str, EditHistory]:
    """Apply edits given as (anchor text, old, new): ``old`` right after the first ``anchor`` becomes ``new``,
    one character at a time as a user types (deleting first)."""
    history = EditHistory()
    for anchor, old, new in edits:
        at = text.index(anchor) + len(anchor)
        assert text[at : at + len(old)] == old, (text[at:], old)
        for _ in old:  # backspace from the end
            end = at + len(old) - (len(old) - len(text[at : at + len(old)]))
            removed = text[end - 1 : end]
            text = text[: end - 1] + text[end:]
            history.record(end - 1, removed, "", text)
            old = old[:-1]
        for i, ch in enumerate(new):
            text = text[: at + i] + ch + text[at + i :]
            history.record(at + i, "", ch, text)
    return text, history


def apply_all(text: str, uri: str, ups: list) -> str:  # type: ignore[type-arg]
    for up in sorted((u for u in ups if u.uri == uri), key=lambda u: -u.start):
        text = text[: up.start] + up.plain_text + text[up.end :]
    return text


def run(language: str, text: str, *edits: tuple[str, str, str], others: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    now, history = edited(text, *edits)
    hunk, before, after = history.versions(now)[0]
    change = detect(language, before, after, hunk)
    assert change is not None
    sources = [Source(uri, t, language) for uri, t in (others or {}).items()]
    ups = follow_ups(change, Source("file:///w/a", now, language, 3), sources)
    return change, ups, now


def test_typing_a_name_letter_by_letter_is_one_hunk_whose_before_and_after_are_exact() -> None:
    text = "def area(w, h):\n    return w * h\n"
    now, history = edited(text, ("area", "", "_of"))
    assert len(history.hunks) == 1
    hunk, before, after = history.versions(now)[0]
    assert (before, after) == (text, now)
    assert (hunk.removed, hunk.inserted) == ("", "_of")


def test_edits_far_apart_are_separate_hunks_and_undo_back_to_the_start() -> None:
    text = "a = 1\nb = 2\nc = 3\n"
    now, history = edited(text, ("a = ", "1", "10"), ("c = ", "3", "30"))
    assert len(history.hunks) == 2
    versions = history.versions(now)
    assert versions[-1][1] == text
    assert versions[0][2] == now


def test_typing_then_deleting_the_same_text_leaves_no_hunk_and_history_is_bounded() -> None:
    text = "x = 1\n"
    now, history = edited(text, ("x", "", "yz"), ("x", "yz", ""))
    assert now == text and not history.hunks
    for i in range(MAX_HUNKS * 2):
        history.record(i * 10, "", "q", now)
    assert len(history.hunks) == MAX_HUNKS


PY = "def area(w, h):\n    return w * h\n\n\ndef main(depth):\n    x = area(1, 2)\n    return area(x, 3)\n"


def test_python_added_parameter_gets_a_name_in_scope_or_a_placeholder_at_each_call_site() -> None:
    change, ups, now = run("python", PY, ("w, h", "", ", depth"))
    assert isinstance(change, SignatureChange) and change.kind == "add_parameter"
    assert apply_all(now, "file:///w/a", ups) == now.replace("area(1, 2)", "area(1, 2, depth)").replace(
        "area(x, 3)", "area(x, 3, depth)"
    )
    _, ups, _ = run("python", PY, ("w, h", "", ", scale"))
    assert [u.new_text for u in ups] == [", ${1:scale}", ", ${1:scale}"]
    assert all(u.snippet and u.plain_text == ", scale" for u in ups)


def test_python_renamed_function_renames_its_calls_and_imports_in_this_file_and_others() -> None:
    other = "from geo import area\nprint(area(3, 4))\n"
    change, ups, now = run("python", PY, ("def area", "", "_of"), others={"file:///w/b.py": other})
    assert change.kind == "rename_function"
    assert apply_all(now, "file:///w/a", ups).count("area_of(") == 3
    assert apply_all(other, "file:///w/b.py", ups) == "from geo import area_of\nprint(area_of(3, 4))\n"


def test_python_renamed_parameter_renames_its_uses_in_the_body_and_keyword_arguments() -> None:
    text = "def area(w, h):\n    return w * h\n\narea(w=1, h=2)\n"
    change, ups, now = run("python", text, ("def area(", "w", "width"))
    assert change.kind == "rename_parameter"
    assert (
        apply_all(now, "file:///w/a", ups)
        == "def area(width, h):\n    return width * h\n\narea(width=1, h=2)\n"
    )


def test_removed_and_reordered_parameters_change_the_arguments() -> None:
    _, ups, now = run("python", PY, ("area(w", ", h", ""))
    assert apply_all(now, "file:///w/a", ups).count("area(1)") == 1
    _, ups, now = run("python", PY, ("area(", "w, h", "h, w"))
    out = apply_all(now, "file:///w/a", ups)
    assert "area(2, 1)" in out and "area(3, x)" in out


def test_a_call_site_already_updated_is_not_offered_again() -> None:
    text = PY.replace("area(1, 2)", "area(1, 2, depth)")
    _, ups, _ = run("python", text, ("w, h", "", ", depth"))
    assert len(ups) == 1


def test_local_variable_rename_stays_in_its_function() -> None:
    text = "def f(a):\n    total = a + 1\n    return total\n\n\ndef g():\n    total = 2\n    return total\n"
    change, ups, now = run("python", text, ("    ", "total", "acc"))
    assert isinstance(change, Rename) and change.local
    out = apply_all(now, "file:///w/a", ups)
    assert out.startswith("def f(a):\n    acc = a + 1\n    return acc\n") and out.count("total") == 2


def test_attribute_rename_reaches_every_self_attribute() -> None:
    text = "class C:\n    def __init__(self):\n        self.count = 0\n\n    def inc(self):\n        self.count += 1\n        return self.count\n"
    change, ups, now = run("python", text, ("self.count", "", "er"))
    assert isinstance(change, Rename) and change.member
    assert apply_all(now, "file:///w/a", ups).count("self.counter") == 3


def test_a_rename_to_a_name_already_in_scope_is_not_propagated() -> None:
    text = "def f(a, b):\n    return a + b\n\nf(1, 2)\n"
    change, ups, _ = run("python", text, ("def f(", "a", "b"))
    assert change.conflict and ups == []
    text = "def f():\n    x = 1\n    y = 2\n    return x + y\n"
    change, ups, _ = run("python", text, ("    ", "x", "y"))
    assert change.conflict and ups == []


def test_a_use_site_edit_is_not_propagated_and_a_broken_header_gives_no_change() -> None:
    text = "def f(a):\n    return a\n\nf(1)\nf(2)\n"
    now, history = edited(text, ("f(1", "", "0"))
    hunk, before, after = history.versions(now)[0]
    assert detect("python", before, after, hunk) is None
    now, history = edited(text, ("def f(a", "", ", (b"))  # mid-edit: the parameter list does not parse
    hunk, before, after = history.versions(now)[0]
    assert detect("python", before, after, hunk) is None


@pytest.mark.parametrize(
    ("language", "text", "edit", "expected"),
    [
        (
            "javascript",
            "function f(a) { return a }\nfunction g(b) { return f(b) }\nf(2)\n",
            ("function f(a", "", ", b"),
            "function f(a, b) { return a }\nfunction g(b) { return f(b, b) }\nf(2, ${1:b})\n",
        ),
        (
            "typescript",
            "function f(a: number): number { return a }\nconst q = f(1);\n",
            ("function f", "", "oo"),
            "function foo(a: number): number { return a }\nconst q = foo(1);\n",
        ),
        (
            "go",
            "package p\nfunc f(a int) int { return a }\nfunc g() { b := 2; f(1); f(b) }\n",
            ("func f(a int", "", ", b int"),
            "package p\nfunc f(a int, b int) int { return a }\nfunc g() { b := 2; f(1, b); f(b, b) }\n",
        ),
        (
            "rust",
            "fn f(a: i32) -> i32 { a }\nfn g() { let b = 1; f(b); }\n",
            ("fn f", "", "f"),
            "fn ff(a: i32) -> i32 { a }\nfn g() { let b = 1; ff(b); }\n",
        ),
        (
            "java",
            "class C { int f(int a, int b) { return a; } void g() { f(1, 2); this.f(3, 4); } }\n",
            ("int f(int a", ", int b", ""),
            "class C { int f(int a) { return a; } void g() { f(1); this.f(3); } }\n",
        ),
        (
            "c",
            "int f(int a) { return a; }\nint g(void) { int b = 1; return f(b); }\n",
            ("int f(int a", "", ", int b"),
            "int f(int a, int b) { return a; }\nint g(void) { int b = 1; return f(b, b); }\n",
        ),
        (
            "cpp",
            "struct K { int y; int get() { return y; } };\nint h(K k) { return k.y; }\n",
            ("int ", "y", "z"),
            "struct K { int z; int get() { return z; } };\nint h(K k) { return k.z; }\n",
        ),
    ],
)
def test_follow_ups_in_every_language(
    language: str, text: str, edit: tuple[str, str, str], expected: str
) -> None:
    _, ups, now = run(language, text, edit)
    out = now
    for up in sorted(ups, key=lambda u: -u.start):
        out = out[: up.start] + up.new_text + out[up.end :]
    assert out == expected
