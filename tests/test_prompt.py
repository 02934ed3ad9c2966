"""Prompt assembly: token budget, stable layout for KV reuse, syntax context, FIM."""

import dataclasses

import pytest

from opportune.server.backends.fake import fake_tokens
from opportune.server.context.syntax import SyntaxTree
from opportune.server.prompt import PromptInput, build_prompt
from opportune.server.templates import QWEN


def count(text: str) -> int:
    return len(fake_tokens(text))


SOURCE = (
    "import os\nfrom typing import Any\n\n\nclass Store:\n    def __init__(self, root: str) -> None:\n        self.root = root\n\n"
    + "".join(f"    def method_{i}(self, x: int) -> int:\n        return x + {i}\n\n" for i in range(60))
    + "    def load(self, name: str) -> Any:\n        path = os.path.join(self.root, name)\n        "
)


def prompt_at(text: str, budget: int = 200, strategy: str = "syntax", fim=None):  # type: ignore[no-untyped-def]
    tree = SyntaxTree("python", text.encode())
    syntax = tree.context_at(len(text.encode()))
    data = PromptInput(text, len(text), "store.py", "python", syntax)
    return build_prompt(data, budget_tokens=budget, count_tokens=count, strategy=strategy, fim=fim)


def test_prompt_fits_the_budget_and_ends_at_the_cursor() -> None:
    p = prompt_at(SOURCE)
    assert p.tokens <= 200
    assert p.text.endswith("path = os.path.join(self.root, name)\n        ")
    # The window starts after the imports and the class header, so they come from the syntax context.
    assert "import os" in p.text and "class Store:" in p.text
    assert "def load(self, name: str) -> Any:" in p.text
    assert p.text.index("import os") < p.text.index("class Store:") < p.text.index("path = os.path.join")
    assert "syntax" in p.parts and "path" in p.parts


def test_prefix_strategy_has_no_syntax_context() -> None:
    p = prompt_at(SOURCE, strategy="prefix")
    assert "import os" not in p.text and "store.py" not in p.text
    assert p.parts == ("prefix",)


def test_consecutive_keystrokes_share_90_percent_of_tokens() -> None:
    text = SOURCE
    previous = None
    for ch in "return self.cache[name]":
        text += ch
        p = prompt_at(text)
        tokens = fake_tokens(p.text)
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
    p = build_prompt(data, budget_tokens=100, count_tokens=count, fim=QWEN)
    assert p.text.startswith("<|fim_prefix|>") and p.text.endswith("<|fim_middle|>")
    assert "<|fim_suffix|>a\n" in p.text
    assert "suffix" in p.parts


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
            tokens = backend.tokenize(build_prompt(data, budget_tokens=400, count_tokens=counter).text)
            if previous is not None:
                assert common_prefix(previous, tokens) >= 0.9 * min(len(previous), len(tokens)), repr(ch)
            previous = tokens
    finally:
        backend.close()


@pytest.mark.parametrize("strategy,fim", [("syntax", None), ("prefix", QWEN)])
def test_a_huge_document_gives_the_prompt_its_whole_text_would(strategy: str, fim) -> None:  # type: ignore[no-untyped-def]
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
        kwargs = {"budget_tokens": c.context_tokens, "count_tokens": count, "strategy": strategy, "fim": fim}
        assert build_prompt(part, **kwargs) == build_prompt(whole, **kwargs)


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
    assert text[:cursor].endswith(p.text[-200:])
    assert p.tokens <= c.context_tokens
