"""Cross-file eval tasks: sampled where the truth uses a name from another file of the project, asked with
the files an editor would have open, and reported per language (fake backend, named as such)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from opportune.server.backends.fake import FakeBackend
from opportune.server.completion.effective import Effective
from opportune.server.completion.engine import Engine
from opportune.server.config import resolve
from opportune.server.eval.corpus import folder_roots, load_files
from opportune.server.eval.crossfile import sample_cross_file_tasks
from opportune.server.eval.runner import run_quality
from opportune.telemetry import events as ev

ROOT = Path(__file__).resolve().parents[1]

MONEY = '''"""Money."""


def cents_from_amount(amount: float, *, rounding: str = "half-up") -> int:
    """Whole cents of an amount."""
    return int(round(amount * 100))


class PriceTag:
    """A price and its label."""

    label: str
    amount_cents: int

    def render(self) -> str:
        return f"{self.label}: {self.amount_cents / 100:.2f}"
'''
CART = '''"""A shopping cart."""

from shop.money import (
    PriceTag,
    cents_from_amount,
)


def cart_total(amounts):
    total = 0
    for amount in amounts:
        total += cents_from_amount(amount)
    return total


def tags(items):
    result = []
    for label, amount in items:
        tag = PriceTag()
        tag.label = label
        tag.amount_cents = cents_from_amount(amount, rounding="down")
        result.append(tag)
    return result
'''
OTHER = '''"""Unrelated helpers, long enough to be part of the corpus."""


def shout(text):
    return text.upper() + "!"


def whisper(text):
    return text.lower() + "..."


def repeat(text, times):
    return " ".join([text] * times)
'''
UTIL_JS = (
    "function clamp(value, low, high) {\n  return Math.min(high, Math.max(low, value))\n}\n\nmodule.exports = { clamp }\n"
    + "// padding line for the corpus size bound\n" * 5
)
MAIN_JS = (
    "const { clamp } = require('./util')\n\nfunction percent(value) {\n  const bounded = clamp(value, 0, 100)\n"
    "  return `${bounded}%`\n}\n\nmodule.exports = { percent }\n"
    + "// padding line for the corpus size bound\n"
    * 4
)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "shopproject"
    (root / "shop").mkdir(parents=True)
    (root / "shop" / "__init__.py").write_text(
        '"""The shop package, a docstring long enough for the corpus."""\n' * 4
    )
    (root / "shop" / "money.py").write_text(MONEY)
    (root / "shop" / "cart.py").write_text(CART)
    (root / "shop" / "words.py").write_text(OTHER)
    (root / "shop" / "more.py").write_text(OTHER.replace("shout", "yell"))
    (root / "js").mkdir()
    (root / "js" / "util.js").write_text(UTIL_JS)
    (root / "js" / "main.js").write_text(MAIN_JS)
    return root


def test_cross_file_tasks_use_a_name_from_another_file_and_carry_the_files_an_editor_has_open(
    corpus: Path,
) -> None:
    files = load_files(folder_roots([corpus]))
    tasks = sample_cross_file_tasks(files, 30, seed=1)
    assert tasks and all(t.kind == "cross_file" for t in tasks)
    assert {t.language for t in tasks} == {"python", "javascript"}
    for task in tasks:
        if task.language == "python":
            assert task.file.relpath == "shop/cart.py"
            assert "cents_from_amount" in task.truth or "PriceTag" in task.truth
            assert [f.relpath for f in task.open_files] == ["shop/money.py"]
            assert len(task.recent_files) == 2
            assert all(f.relpath not in ("shop/cart.py", "shop/money.py") for f in task.recent_files)
        else:
            assert task.file.relpath == "js/main.js" and "clamp" in task.truth
        line = task.file.text[: task.cursor].rsplit("\n", 1)[-1] + task.truth
        assert not line.lstrip().startswith(("from ", "import ", "PriceTag,", "cents_from_amount,"))
        assert "require(" not in line
    assert sample_cross_file_tasks(files, 30, seed=1) == tasks  # deterministic


async def test_the_harness_opens_the_imported_file_so_the_prompt_shows_its_definitions(corpus: Path) -> None:
    files = load_files(folder_roots([corpus]))
    task = next(t for t in sample_cross_file_tasks(files, 30, seed=1) if t.language == "python")
    settings, errors = resolve(
        {"completion": {"prewarm": False, "deadlineMs": 20000}, "model": {"backend": "fake"}}
    )
    assert not errors
    events: list[ev.Event] = []
    engine = Engine(lambda _s: FakeBackend(), Effective(settings), record=events.append)
    try:
        await run_quality(engine, [task])
    finally:
        engine.shutdown()
    prompt = next(e.prompt_text for e in events if isinstance(e, ev.Response) and e.prompt_text)
    assert "# shop/money.py\n" in prompt
    assert 'def cents_from_amount(amount: float, *, rounding: str = "half-up") -> int:' in prompt
    assert task.truth not in prompt.split("# cart.py")[0]  # the held-out text is not in the project part


def test_the_report_compares_cross_file_tasks_per_language_with_and_without_project_context(
    corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    done = subprocess.run(
        [
            sys.executable, "-m", "opportune.server.cli", "eval", "--no-progress",
            "--config", "without=builtin:syntax+no-project", "--config", "with=builtin:syntax+project",
            "--corpus", str(corpus), "--tasks", "2", "--cross-file", "8", "--typing-chars", "0",
            "--backend", "fake", "--out", str(out),
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = (out / "report.md").read_text()
    assert "### Cross-file tasks (" in report
    assert "| python |" in report and "| javascript |" in report and "| **all** |" in report
    assert "with − without [95% CI]" in report
    results = json.loads((out / "results.json").read_text())
    assert "cross_file" in results["configurations"][1]["quality_by_kind"]
