"""Prompt assembly: token budget, stable layout for KV reuse, syntax context, FIM."""

import dataclasses
import functools

import pytest

from opportune.server.backends.fake import fake_tokens
from opportune.server.context.syntax import SyntaxContext, SyntaxTree
from opportune.server.prompt import Prompt, PromptInput, build_prompt
from opportune.server.templates import QWEN, render


def count(text: str) -> int:
    return len(fake_tokens(text))


SOURCE = (
    "import os\nfrom typing import Any\n\n\nclass Store:\n    def __init__(self, root: str) -> None:\n        self.root = root\n\n"
    + "".join(f"    def method_{i}(self, x: int) -> int:\n        return x + {i}\n\n" for i in range(60))
    + "    def load(self, name: str) -> Any:\n        path = os.path.join(self.root, name)\n        "
)


def prompt_at(text: str, budget: int = 200, strategy: str = "syntax") -> Prompt:
    tree = SyntaxTree("python", text.encode())
    syntax = tree.context_at(len(text.encode()))
    data = PromptInput(text, len(text), "store.py", "python", syntax)
    return build_prompt(data, budget_tokens=budget, count_tokens=count, strategy=strategy)


def test_prompt_fits_the_budget_and_ends_at_the_cursor() -> None:
    p = prompt_at(SOURCE)
    assert p.tokens <= 200
    assert p.prefix.endswith("path = os.path.join(self.root, name)\n        ")
    # The window starts after the imports and the class header, so they come from the syntax context.
    assert "import os" in p.prefix and "class Store:" in p.prefix
    assert "def load(self, name: str) -> Any:" in p.prefix
    assert (
        p.prefix.index("import os") < p.prefix.index("class Store:") < p.prefix.index("path = os.path.join")
    )
    assert p.names == ("path", "syntax", "window")


def test_each_part_carries_its_own_token_count() -> None:
    p = prompt_at(SOURCE)
    for part in p.parts:
        assert part.tokens == count(part.text) > 0, part.name
    assert p.tokens == sum(p.tokens_by_part().values())
    assert abs(p.tokens - count(p.prefix)) <= len(p.parts)  # parts are counted apart
    assert p.stable + p.text_of("window") == p.prefix


def test_prefix_strategy_has_no_syntax_context() -> None:
    p = prompt_at(SOURCE, strategy="prefix")
    assert "import os" not in p.prefix and "store.py" not in p.prefix
    assert p.names == ("window",)


def test_project_context_is_its_own_part_first_and_labelled_with_its_path() -> None:
    text = "from .models import Item\n\ndef total(items):\n    return sum(i."
    data = PromptInput(
        text,
        len(text),
        "shop.py",
        "python",
        None,
        neighbours=(("models.py", "class Item:\n    price: int\n"),),
    )
    p = build_prompt(data, budget_tokens=200, count_tokens=count)
    assert p.names[0] == "project" and p.project == (("models.py", "class Item:\n    price: int\n"),)
    assert p.text_of("project") == "# models.py\nclass Item:\n    price: int\n\n"
    assert p.prefix.startswith("# models.py\nclass Item:") and p.prefix.endswith("sum(i.")
    assert p.local_prefix.startswith("# shop.py\n") and "class Item" not in p.local_prefix
    assert p.tokens_by_part()["project"] == count(p.text_of("project"))


def test_consecutive_keystrokes_share_90_percent_of_tokens() -> None:
    text = SOURCE
    previous = None
    for ch in "return self.cache[name]":
        text += ch
        p = prompt_at(text)
        tokens = fake_tokens(p.prefix)
        if previous is not None:
            shared = 0
            for a, b in zip(previous, tokens, strict=False):
                if a != b:
                    break
                shared += 1
            assert shared >= 0.9 * min(len(previous), len(tokens))
        previous = tokens


def test_fim_prompt_carries_the_suffix() -> None:
    text = "def f(a):\n    return a\n\nprint(f(1))\n"
    cursor = text.index("return a") + len("return ")
    data = PromptInput(text, cursor, "f.py", "python", None)
    p = build_prompt(data, budget_tokens=100, count_tokens=count, suffix_lines=8)
    assert p.suffix == "a\n\nprint(f(1))\n" and p.names[-1] == "suffix"
    rendered = render(p, QWEN)
    assert rendered.startswith("<|fim_prefix|>") and rendered.endswith("<|fim_middle|>")
    assert "<|fim_suffix|>a\n" in rendered
    assert render(p, None) == p.prefix and "print(f(1))" not in p.prefix


def test_a_prompt_without_suffix_lines_has_no_suffix_part() -> None:
    text = "def f(a):\n    return a\n\nprint(f(1))\n"
    data = PromptInput(text, text.index("return a") + 7, "f.py", "python", None)
    p = build_prompt(data, budget_tokens=100, count_tokens=count)
    assert p.suffix == "" and "suffix" not in p.names


def test_a_family_with_file_separators_gets_the_project_as_files_before_the_fim_prefix() -> None:
    text = "from .models import Item\n\ndef total(items):\n    return sum(i.)\n"
    cursor = text.index("sum(i.") + len("sum(i.")
    data = PromptInput(
        text, cursor, "shop.py", "python", None, neighbours=(("models.py", "class Item:\n    price: int\n"),)
    )
    p = build_prompt(data, budget_tokens=200, count_tokens=count, suffix_lines=8)
    rendered = render(p, QWEN)
    assert rendered == (
        "<|file_sep|>models.py\nclass Item:\n    price: int\n"
        "<|file_sep|>shop.py\n<|fim_prefix|>from .models import Item\n\ndef total(items):\n"
        "    return sum(i.<|fim_suffix|>)\n<|fim_middle|>"
    )


@pytest.mark.e2e
async def test_consecutive_keystrokes_share_the_real_tokenizers_prefix() -> None:
    """Issue 5's layout test on the model's own tokenizer, through the engine's prompt input (which keeps
    the window's syntax context stable), typing a line, a new line, a dedent and a half-typed signature."""
    from opportune.server.backends.llama import LlamaBackend, common_prefix
    from opportune.server.completion.workspace import Workspace
    from opportune.server.config import CompletionSettings
    from opportune.server.models import default_model_path
    from opportune.server.prompt import LineTokenCounter

    backend = LlamaBackend(default_model_path(), n_ctx=1024, threads=1)
    counter = LineTokenCounter(backend.count_tokens)
    workspace = Workspace("salt")
    uri = "file:///s/store.py"
    state = workspace.open(uri, SOURCE, "python", 1)
    previous: list[int] | None = None
    try:
        for i, ch in enumerate(
            "return self.cache[name]\n        x = 1\n    def other(self):\n        return 2"
        ):
            end = state.doc.position_at(len(state.doc.text))
            workspace.apply(state, i + 2, [(end, end, ch)])
            cursor = len(state.doc.text)
            syntax = workspace.syntax(state, cursor)
            data = workspace.prompt_input(state, cursor, syntax, CompletionSettings())
            tokens = backend.tokenize(
                backend.render(build_prompt(data, budget_tokens=400, count_tokens=counter))
            )
            if previous is not None:
                assert common_prefix(previous, tokens) >= 0.9 * min(len(previous), len(tokens)), repr(ch)
            previous = tokens
    finally:
        backend.close()


@pytest.mark.parametrize("strategy,suffix_lines", [("syntax", 0), ("prefix", 8)])
def test_a_huge_document_gives_the_prompt_its_whole_text_would(strategy: str, suffix_lines: int) -> None:
    """The engine hands the prompt only the part of a document within reach of the cursor (so a keystroke
    in a 20 MB file does not copy or scan it whole); the prompt must be the one the whole text gives."""
    from opportune.server.completion.workspace import Workspace
    from opportune.server.config import resolve

    text = "import os\n\n\ndef f(x):\n" + "".join(f"    y{i} = x + {i}  # step {i}\n" for i in range(40_000))
    settings, errors = resolve({"completion": {"prewarm": False, "promptStrategy": strategy}})
    assert errors == []
    workspace = Workspace("salt")
    state = workspace.open("file:///p/big.py", text, "python", 1)
    c = settings.completion
    for cursor in (len(text), text.index("y20000 =") + 3, text.index("y3 =") + 2, 12):
        syntax = workspace.syntax(state, cursor)
        part = workspace.prompt_input(state, cursor, syntax, c)
        whole = dataclasses.replace(part, text=text, cursor=cursor, first_line=0)
        assert len(part.text) < 20_000
        build = functools.partial(
            build_prompt,
            budget_tokens=c.context_tokens,
            count_tokens=count,
            strategy=strategy,
            suffix_lines=suffix_lines,
        )
        assert build(part) == build(whole)


def test_a_minified_line_gives_a_prompt_within_budget_that_ends_at_the_cursor() -> None:
    from opportune.server.completion.workspace import Workspace
    from opportune.server.config import CompletionSettings

    text = "var a=" + "b+c;" * 500_000 + "\n"
    c = CompletionSettings()
    workspace = Workspace("salt")
    state = workspace.open("file:///p/b.min.js", text, "javascript", 1)
    cursor = 1_000_003
    data = workspace.prompt_input(state, cursor, None, c)
    assert len(data.text) <= 2 * 16 * c.context_tokens
    p = build_prompt(data, budget_tokens=c.context_tokens, count_tokens=count)
    assert text[:cursor].endswith(p.prefix[-200:])
    assert p.tokens <= c.context_tokens


GO = """package main

import "fmt"

type Inventory struct {
\titems map[string]int
\towner string
}

func NewInventory() *Inventory {
\treturn &Inventory{items: map[string]int{}}
}

func (inv *Inventory) Add(name string, n int) {
\tinv.items["""

JAVA = """package demo;

public class Calc {
    private final int[] values;

    private static int square(int x) {
        return x * x;
    }

    public int sumOfSquares() {
        int total = 0;
        for (int v : values) {
            total += square("""


def window_from(source: str, language: str, line: int, path: str) -> Prompt:
    """The prompt when the engine hands the builder the document from ``line`` on (as for a long file),
    with the syntax context seen from the window's first line, as the engine computes it."""
    tree = SyntaxTree(language, source.encode())
    starts = [0] + [i + 1 for i, ch in enumerate(source) if ch == "\n"]

    def context_at_line(n: int) -> SyntaxContext:
        at = len(source[: starts[n]].encode())
        return tree.context_at(at, visible_range=(at, len(source.encode())))

    part = source[starts[line] :]
    data = PromptInput(
        part, len(part), path, language, tree.context_at(len(source.encode())),
        context_at_line=context_at_line, first_line=line,
    )  # fmt: skip
    return build_prompt(data, budget_tokens=400, count_tokens=count, step_lines=line)


def test_a_window_that_would_start_on_a_structs_closing_brace_keeps_its_fields() -> None:
    assert GO.split("\n")[7] == "}"
    p = window_from(GO, "go", 7, "inv.go")
    assert "type Inventory struct {\n\titems map[string]int\n\towner string\n}" in p.prefix
    assert "struct {\n}" not in p.prefix
    assert p.window_start_line == 8


def test_a_window_inside_a_struct_keeps_the_fields_above_it() -> None:
    p = window_from(GO, "go", 6, "inv.go")  # starts on "\towner string"
    assert "type Inventory struct {\n\titems map[string]int\n\towner string\n}" in p.prefix


def test_a_java_helper_is_never_shown_with_an_empty_body() -> None:
    assert JAVA.split("\n")[7] == "    }"
    p = window_from(JAVA, "java", 7, "Calc.java")
    assert "square(int x) {\n    }" not in p.prefix
    assert "    private static int square(int x) {" in p.text_of("syntax")  # an outline entry instead
    assert p.text_of("window").startswith("\n    public int sumOfSquares()")
