"""Speed of the syntax context on a large file, as ratios against a fresh parse measured in the same run.

Absolute times depend on the machine; the ratios do not, much. The absolute numbers are printed
(``pytest -s``) for the record.
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from opportune.server.context.syntax import SyntaxTree

RUNS = 9


def median_seconds(action: Callable[[], object], runs: int = RUNS) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def large_python_source() -> bytes:
    """About 6,000 lines of real code nobody here wrote: two standard-library modules, one after the other."""
    parts = [Path(inspect.getfile(module)).read_bytes() for module in (inspect, argparse)]
    return b"\n".join(parts)


def large_typescript_source() -> bytes:
    """About 6,000 lines of generated classes: a brace language with deep nesting."""
    blocks = []
    for index in range(300):
        blocks.append(
            f"import {{ Dep{index} }} from './dep{index}';\n"
            if index < 30
            else f"export class Service{index} extends Base {{\n"
            f"  private readonly cache = new Map<string, number>();\n\n"
            f"  constructor(private readonly dep: Dep{index % 30}) {{\n    super();\n  }}\n\n"
            f"  public async fetch{index}(key: string): Promise<number> {{\n"
            f"    if (this.cache.has(key)) {{\n      return this.cache.get(key)!;\n    }}\n"
            f"    const value = await this.dep.load(key, (x: number) => {{\n      return x * {index};\n    }});\n"
            f"    this.cache.set(key, value);\n    return value;\n  }}\n}}\n\n"
        )
    return "".join(blocks).encode()


@pytest.mark.parametrize(
    ("language", "make_source"), [("python", large_python_source), ("typescript", large_typescript_source)]
)
def test_incremental_reparse_and_context_are_cheap_next_to_a_fresh_parse(
    language: str, make_source: Callable[[], bytes]
) -> None:
    source = make_source()
    assert source.count(b"\n") > 4000
    tree = SyntaxTree(language, source)
    fresh = median_seconds(lambda: SyntaxTree(language, source))

    # One character typed at the end of an indented line in the middle of the file (where typing
    # happens), then deleted again: two incremental re-parses.
    middle = source.index(b"\n    ", len(source) // 2) + 1
    middle = source.index(b"\n", middle)

    def type_and_delete() -> None:
        tree.replace(middle, middle, b"x")
        tree.replace(middle, middle + 1, b"")

    incremental = median_seconds(type_and_delete) / 2
    assert tree.source == source

    # context_at right after an edit, so the per-version caches are cold, at cursors spread over the file.
    cursors = [len(source) * step // 10 for step in range(1, 10)]

    def edit_then_context() -> None:
        tree.replace(middle, middle, b" ")
        tree.replace(middle, middle + 1, b"")
        for cursor in cursors:
            tree.context_at(cursor)

    edit_and_contexts = median_seconds(edit_then_context)
    context = (edit_and_contexts - 2 * incremental) / len(cursors)
    warm = median_seconds(lambda: [tree.context_at(cursor) for cursor in cursors]) / len(cursors)

    lines = source.count(b"\n")
    print(
        f"\n{language}: {lines} lines; fresh parse {fresh * 1e3:.2f} ms, "
        f"1-char incremental re-parse {incremental * 1e3:.2f} ms ({incremental / fresh:.1%}), "
        f"context_at {max(context, warm) * 1e3:.3f} ms ({max(context, warm) / fresh:.1%})"
    )
    assert incremental < 0.5 * fresh
    assert max(context, warm) < 0.25 * fresh
