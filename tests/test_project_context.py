"""The project block: imported definitions, open files, similar snippets, recent edits; budget, order,
stability across keystrokes, and through the engine on a fake backend (named as such)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from opportune.server.backends.fake import FakeBackend, fake_tokens
from opportune.server.backends.llama import common_prefix
from opportune.server.completion.effective import Effective
from opportune.server.completion.engine import Engine
from opportune.server.config import Settings, resolve
from opportune.server.context.project import ProjectBlock, ProjectContext, ProjectOptions
from opportune.server.context.syntax import SyntaxTree
from opportune.server.documents import Document, Position
from opportune.server.prompt import PromptInput, build_prompt
from opportune.telemetry import events as ev

MONEY = '''"""Money helpers."""

CURRENCY = "EUR"


def cents(amount: float, *, rounding: str = "half-up") -> int:
    """Convert an amount to whole cents.

    Longer explanation that the model does not need.
    """
    return int(round(amount * 100))


class Price:
    """A price with its currency."""

    amount: float
    currency: str = CURRENCY

    def __init__(self, amount: float, currency: str = CURRENCY) -> None:
        self.amount = amount
        self.currency = currency

    def with_tax(self, rate: float) -> "Price":
        return Price(self.amount * (1 + rate), self.currency)


def _private_helper():
    return 1
'''
CART = "from shop.money import Price, cents\n\n\ndef total(prices):\n    "


def workspace(tmp_path: Path) -> Path:
    (tmp_path / "shop").mkdir(parents=True)
    (tmp_path / "shop" / "__init__.py").write_text("")
    (tmp_path / "shop" / "money.py").write_text(MONEY)
    (tmp_path / "shop" / "cart.py").write_text(CART)
    return tmp_path


def block_for(
    ctx: ProjectContext, uri: str, text: str, language: str, options: ProjectOptions
) -> ProjectBlock:
    imports = SyntaxTree(language, text.encode()).context_at(len(text)).imports
    block, pending = ctx.request(uri, language, text, imports, text.count("\n"), options)
    return pending.result(timeout=10) if pending is not None else block


def test_imported_names_come_with_signatures_fields_and_first_docstring_line(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    ctx = ProjectContext(root)
    try:
        block = block_for(ctx, (root / "shop/cart.py").as_uri(), CART, "python", ProjectOptions(400))
    finally:
        ctx.close()
    (path, text), *_ = block.neighbours()
    assert path == "shop/money.py"
    assert 'def cents(amount: float, *, rounding: str = "half-up") -> int:' in text
    assert '"""Convert an amount to whole cents."""' in text
    assert "Longer explanation" not in text and "return int(round" not in text  # no bodies, one doc line
    assert "class Price:" in text and "amount: float" in text and "def with_tax(self, rate: float)" in text
    assert text.index("def cents") < text.index("class Price")  # the module's own order


def test_the_block_fits_its_budget_and_keeps_the_imported_names_first(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    ctx = ProjectContext(root)
    try:
        block = block_for(ctx, (root / "shop/cart.py").as_uri(), CART, "python", ProjectOptions(40))
    finally:
        ctx.close()
    assert sum(p.tokens for p in block.parts) <= 40
    text = "\n".join(t for _, t in block.neighbours())
    assert "def cents" in text  # named by the import: first in
    assert "_private_helper" not in text  # not imported, not used: first out


def test_an_imported_class_bigger_than_the_budget_is_cut_after_its_first_members(tmp_path: Path) -> None:
    methods = "".join(
        f"    def method_{i}(self, value: int) -> int:\n        return value\n\n" for i in range(80)
    )
    (tmp_path / "big.py").write_text(f'class Big:\n    """Many methods."""\n\n{methods}')
    ctx = ProjectContext(tmp_path)
    text = "from big import Big\n\nBig()."
    try:
        block = block_for(ctx, (tmp_path / "main.py").as_uri(), text, "python", ProjectOptions(100))
    finally:
        ctx.close()
    (path, stub), *_ = block.neighbours()
    assert path == "big.py" and stub.startswith('class Big:\n    """Many methods."""\n    def method_0(')
    assert stub.endswith("\n...") and "method_79" not in stub
    assert sum(p.tokens for p in block.parts) <= 100


def test_the_block_does_not_change_while_the_user_types_in_one_place(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    ctx = ProjectContext(root)
    uri = (root / "shop/cart.py").as_uri()
    options = ProjectOptions(400)
    try:
        text = CART
        first = block_for(ctx, uri, text, "python", options)
        imports = SyntaxTree("python", text.encode()).context_at(len(text)).imports
        for ch in "return sum(cents(p) for p in prices)":
            text += ch
            block, pending = ctx.request(uri, "python", text, imports, text.count("\n"), options)
            assert pending is None and block == first
        # A new import is a new input: a new block.
        text = "import shop.money as m\n" + text
        imports = SyntaxTree("python", text.encode()).context_at(len(text)).imports
        _, pending = ctx.request(uri, "python", text, imports, text.count("\n"), options)
        assert pending is not None
    finally:
        ctx.close()


def test_a_save_makes_the_block_read_changed_workspace_files_again(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    ctx = ProjectContext(root)
    uri = (root / "shop/cart.py").as_uri()
    options = ProjectOptions(600)
    imports = SyntaxTree("python", CART.encode()).context_at(len(CART)).imports
    try:
        first = block_for(ctx, uri, CART, "python", options)
        (root / "shop/money.py").write_text(MONEY + "\n\ndef refund(amount: float) -> int: ...\n")
        block, pending = ctx.request(uri, "python", CART, imports, CART.count("\n"), options)
        assert pending is None and block == first  # nothing told it yet: no disk read per keystroke
        ctx.saved((root / "shop/money.py").as_uri())
        block, pending = ctx.request(uri, "python", CART, imports, CART.count("\n"), options)
        assert (
            pending is not None
            and "def refund(amount: float)" in pending.result(timeout=10).neighbours()[0][1]
        )
    finally:
        ctx.close()


def test_open_files_similar_snippets_and_recent_edits_are_labelled_and_deduplicated(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    report = (
        "from shop.money import Price\n\n\ndef invoice_lines(prices, rate):\n"
        "    lines = []\n    for price in prices:\n        taxed = price.with_tax(rate)\n"
        "        lines.append(f'{taxed.amount:.2f} {taxed.currency}')\n    return lines\n"
    )
    (root / "shop/report.py").write_text(report)
    ctx = ProjectContext(root)
    money = Document((root / "shop/money.py").as_uri(), MONEY)
    other = Document((root / "shop/report.py").as_uri(), report)
    ctx.opened(money.uri, "python", lambda: money.text)  # imported and open: shown once, as an import
    ctx.opened(other.uri, "python", lambda: other.text)
    # The user edited report.py, then moved to cart.py: report.py's region enters the ring.
    ctx.edited(other.uri, 6, lambda a, b: [other.line_text(i) for i in range(a, b + 1)])
    ctx.edited((root / "shop/cart.py").as_uri(), 4, lambda a, b: [""])
    text = CART + "for price in prices:\n        taxed = price.with_tax(rate)\n        "
    try:
        block = block_for(ctx, (root / "shop/cart.py").as_uri(), text, "python", ProjectOptions(600))
    finally:
        ctx.close()
    sources = [p.source for p in block.parts]
    assert sources == sorted(sources, key=["imports", "open_files", "similar", "recent_edits"].index)
    assert [p.path for p in block.parts if p.source == "imports"] == ["shop/money.py"]
    assert "shop/money.py" not in [p.path for p in block.parts if p.source == "open_files"]
    assert any(p.path == "shop/report.py" and "def invoice_lines" in p.text for p in block.parts)
    assert any(p.source in ("similar", "recent_edits") and "with_tax(rate)" in p.text for p in block.parts)
    texts = [p.text.strip() for p in block.parts]
    assert len(texts) == len(set(texts))


def test_each_source_can_be_switched_off(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    ctx = ProjectContext(root)
    try:
        block = block_for(
            ctx, (root / "shop/cart.py").as_uri(), CART, "python", ProjectOptions(400, imports=False)
        )
        assert block.parts == ()
        off = ProjectOptions(0)
        assert ctx.request("file:///x.py", "python", "", (), 0, off) == (ProjectBlock(), None)
    finally:
        ctx.close()


def test_without_a_workspace_no_file_is_read_but_open_files_still_count() -> None:
    ctx = ProjectContext(None)
    a = Document("file:///elsewhere/a.py", "def shared_helper(x):\n    return x\n")
    ctx.opened(a.uri, "python", lambda: a.text)
    try:
        block = block_for(
            ctx, "file:///elsewhere/b.py", "from a import shared_helper\n", "python", ProjectOptions(200)
        )
    finally:
        ctx.close()
    assert [(p.path, p.text) for p in block.parts if p.source == "open_files"] == [
        ("a.py", "def shared_helper(x): ...")
    ]


# ---- through the engine (fake backend) ----------------------------------------------------------------


def prompt_input(engine: Engine, uri: str, cursor: int) -> PromptInput:
    """The prompt input a generation at ``cursor`` gets, project part included (as the engine's job)."""
    state = engine.workspace.docs[uri]
    syntax = engine.workspace.syntax(state, cursor)
    c = engine.settings.completion
    neighbours = engine.project.current(state, cursor, syntax, c)
    return engine.workspace.prompt_input(state, cursor, syntax, c, neighbours)


def settings(**completion: Any) -> Settings:
    s, errors = resolve({"completion": {"prewarm": False, **completion}, "model": {"backend": "fake"}})
    assert errors == []
    return s


async def test_an_invoked_completion_shows_the_imported_definition_in_the_prompt(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    events: list[ev.Event] = []
    engine = Engine(
        lambda _s: FakeBackend(), Effective(settings()), record=events.append, workspace_root=root
    )
    uri = (root / "shop/cart.py").as_uri()
    engine.open(uri, CART, "python", 1)
    try:
        await engine.complete(uri, Document(uri, CART).position_at(len(CART)), invoked=True)
    finally:
        engine.shutdown()
    prompt = next(e.prompt_text for e in events if isinstance(e, ev.Response) and e.prompt_text)
    assert "# shop/money.py\n" in prompt and "def cents(amount: float" in prompt
    assert prompt.index("def cents(") < prompt.index("def total(prices):")


@pytest.mark.parametrize("strategy", ["prefix"])
async def test_the_prefix_strategy_has_no_project_part(tmp_path: Path, strategy: str) -> None:
    root = workspace(tmp_path)
    events: list[ev.Event] = []
    engine = Engine(
        lambda _s: FakeBackend(),
        Effective(settings(prompt_strategy=strategy)),
        record=events.append,
        workspace_root=root,
    )
    uri = (root / "shop/cart.py").as_uri()
    engine.open(uri, CART, "python", 1)
    try:
        await engine.complete(uri, Document(uri, CART).position_at(len(CART)), invoked=True)
    finally:
        engine.shutdown()
    prompt = next(e.prompt_text for e in events if isinstance(e, ev.Response) and e.prompt_text)
    assert "def cents" not in prompt


async def test_consecutive_keystrokes_keep_95_percent_of_the_prompt_with_the_project_part(
    tmp_path: Path,
) -> None:
    root = workspace(tmp_path)
    engine = Engine(lambda _s: FakeBackend(), Effective(settings()), workspace_root=root)
    uri = (root / "shop/cart.py").as_uri()
    engine.open(uri, CART, "python", 1)
    doc = Document(uri, CART)
    previous = None
    try:
        await engine.complete(uri, doc.position_at(len(CART)), invoked=True)  # the block is computed
        for i, ch in enumerate("return sum(cents(p.amount) for p in prices)\n    x = 1"):
            end = doc.position_at(len(doc.text))
            doc.apply(end, end, ch)
            engine.change(uri, i + 2, [(end, end, ch)])
            cursor = len(doc.text)
            data = prompt_input(engine, uri, cursor)
            assert data.neighbours and "def cents" in data.neighbours[0][1]
            p = build_prompt(data, budget_tokens=512, count_tokens=lambda t: len(fake_tokens(t)))
            tokens = fake_tokens(p.prefix)
            if previous is not None:
                assert common_prefix(previous, tokens) >= 0.95 * min(len(previous), len(tokens)), repr(ch)
            previous = tokens
    finally:
        engine.shutdown()


async def test_opening_a_file_warms_the_model_with_its_project_part_before_the_first_keystroke(
    tmp_path: Path,
) -> None:
    import asyncio

    root = workspace(tmp_path)
    backend = FakeBackend()
    engine = Engine(lambda _s: backend, Effective(settings(prewarm=True)), workspace_root=root)
    uri = (root / "shop/cart.py").as_uri()
    engine.open(uri, CART, "python", 1)
    try:
        for _ in range(100):
            await asyncio.sleep(0.05)
            if "cents" in "".join(backend._cached):
                break
        assert "def cents(" in "".join(backend._cached), "the model was not warmed with the project part"
        # The first keystroke's prompt starts with what was warmed: its project part is reused.
        doc = Document(uri, CART)
        end = doc.position_at(len(CART))
        doc.apply(end, end, "r")
        engine.change(uri, 2, [(end, end, "r")])
        warmed = list(backend._cached)
        await engine.complete(uri, doc.position_at(len(doc.text)))
        data = prompt_input(engine, uri, len(doc.text))
        prompt = fake_tokens(
            build_prompt(data, budget_tokens=512, count_tokens=lambda t: len(fake_tokens(t))).prefix
        )
        assert common_prefix(warmed, prompt) >= 0.9 * len(warmed)
    finally:
        engine.shutdown()


async def test_a_file_with_no_project_context_is_still_warmed_when_opened() -> None:
    import asyncio

    backend = FakeBackend()
    engine = Engine(lambda _s: backend, Effective(settings(prewarm=True)))
    engine.open("file:///nowhere/alone.py", "def f(x):\n    return x\n", "python", 1)
    try:
        for _ in range(100):
            await asyncio.sleep(0.02)
            if backend.prewarms:
                break
        assert backend.prewarms >= 1
    finally:
        engine.shutdown()


def test_prompt_renders_each_part_under_its_path_as_a_comment_of_the_language() -> None:
    data = PromptInput(
        "package main\n\nfunc main() {\n\t",
        27,
        "main.go",
        "go",
        neighbours=(("inv/inv.go", "type Inventory struct{}"),),
    )
    p = build_prompt(data, budget_tokens=200, count_tokens=lambda t: len(fake_tokens(t)))
    assert "// inv/inv.go\ntype Inventory struct{}\n" in p.prefix
    assert Position(0, 0) == Position(0, 0)


# ---- through `opportune serve` (pytest-lsp), the workspace root from initialize ----------------------------


async def _served_prompt(tmp_path: Path, backend: str, options: dict[str, Any]) -> str:
    import asyncio
    import sqlite3

    from lsp_client import TypedDocument, lsp_session

    root = workspace(tmp_path / "ws")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret_module.py").write_text("def leaked_outside_definition(): ...\n")
    (root / "shop" / "escape.py").symlink_to(outside / "secret_module.py")
    db = tmp_path / "t.db"
    text = CART.replace("\n\n\ndef", "\nfrom shop.escape import leaked_outside_definition\n\n\ndef")
    settings = {"telemetry": {"storeText": True, "flushIntervalS": 0.1}, **options}
    async with lsp_session(db, backend, settings, root=root) as client:
        doc = TypedDocument(client, (root / "shop" / "cart.py").as_uri(), text)
        await asyncio.sleep(0.5)
        await doc.complete(invoked=True)
    rows = (
        sqlite3.connect(db)
        .execute("select prompt_text from response where prompt_text is not null")
        .fetchall()
    )
    assert rows, "no prompt stored"
    return str(rows[-1][0])


async def test_opportune_serve_shows_the_imported_definition_from_the_workspace_root(tmp_path: Path) -> None:
    prompt = await _served_prompt(tmp_path, "fake", {"completion": {"prewarm": False}})
    assert "# shop/money.py\n" in prompt and "def cents(amount: float" in prompt and "class Price:" in prompt
    assert "leaked_outside_definition():" not in prompt.split("from shop.escape")[0]  # never read outside


@pytest.mark.e2e
async def test_opportune_serve_with_the_real_model_shows_the_imported_definition(tmp_path: Path) -> None:
    prompt = await _served_prompt(tmp_path, "llama", {"completion": {"deadlineMs": 20000}})
    assert "# shop/money.py\n" in prompt and "def cents(amount: float" in prompt


@pytest.mark.e2e
async def test_with_the_project_part_the_real_tokenizer_reuses_95_percent_of_the_prompt(
    tmp_path: Path,
) -> None:
    """The KV-reuse measure of tests/test_prompt.py on the model's own tokenizer, with a project part in the
    prompt: typing a line, a new line and a dedent in a file that imports from the workspace."""
    from opportune.server.backends.llama import LlamaBackend
    from opportune.server.models import default_model_path
    from opportune.server.prompt import LineTokenCounter

    root = workspace(tmp_path)
    backend = LlamaBackend(default_model_path(), n_ctx=1024, threads=1)
    counter = LineTokenCounter(backend.count_tokens)
    engine = Engine(lambda _s: FakeBackend(), Effective(settings()), workspace_root=root)
    uri = (root / "shop/cart.py").as_uri()
    engine.open(uri, CART, "python", 1)
    doc = Document(uri, CART)
    shares: list[float] = []
    previous: list[int] | None = None
    try:
        await engine.complete(uri, doc.position_at(len(CART)), invoked=True)  # the project part is ready
        for i, ch in enumerate(
            "return sum(cents(p.amount) for p in prices)\n\n\ndef tax(price: Price):\n    return 1"
        ):
            end = doc.position_at(len(doc.text))
            doc.apply(end, end, ch)
            engine.change(uri, i + 2, [(end, end, ch)])
            data = prompt_input(engine, uri, len(doc.text))
            assert data.neighbours and "def cents" in data.neighbours[0][1]
            tokens = backend.tokenize(build_prompt(data, budget_tokens=512, count_tokens=counter).prefix)
            if previous is not None:
                shares.append(common_prefix(previous, tokens) / min(len(previous), len(tokens)))
            previous = tokens
    finally:
        engine.shutdown()
        backend.close()
    mean = sum(shares) / len(shares)
    print(f"prompt tokens reused per keystroke: mean {mean:.3f}, min {min(shares):.3f}")
    assert min(shares) >= 0.9 and mean >= 0.95, (min(shares), mean)
