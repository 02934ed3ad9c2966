"""Huge documents through the real server: a keystroke in a 20 MB file (many lines), or in the middle of a
2 MB minified line, must cost about what a keystroke in a small file costs, and memory must not grow per
keystroke.  Ratios against a small file in the same run, never absolute times (the machine is shared).

Bounds (stated, so a change that breaks them is a decision, not an accident):
- per-keystroke time (didChange + inlineCompletion round trip, median) at most 10x the small file's;
- RSS growth for opening and typing into the 20 MB file at most 8x its size (two copies of the text, the
  line index, transient copies while a change is applied), and at most 20 MB between keystroke 10 and 40.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest

from bench.fuzz_server import RawServer, raw_session, rss_kb

pytestmark = pytest.mark.e2e

LINE = "    total = compute_value(alpha, beta) + 42  # a comment\n"
MAX_RATIO = 10.0
OPTIONS = {"completion": {"prewarm": False}}


async def _keystrokes(server: RawServer, uri: str, line: int, column: int, n: int) -> list[float]:
    """Type ``n`` characters at (line, column) onwards; seconds per keystroke (change + completion)."""
    times = []
    for i in range(n):
        at = {"line": line, "character": column + i}
        started = time.perf_counter()
        await server.insert(uri, 10 + i, at, "q")
        response = await server.complete(uri, {"line": line, "character": column + i + 1}, timeout=120)
        times.append(time.perf_counter() - started)
        assert "result" in response.message, response.message
    return times


async def test_a_keystroke_in_a_20_mb_file_costs_about_what_it_costs_in_a_small_one(tmp_path: Path) -> None:
    lines = 20_000_000 // len(LINE)
    async with raw_session(tmp_path / "t.db", options=OPTIONS) as server:
        await server.open("file:///p/small.py", "def f():\n" + LINE * 100)
        small = statistics.median(await _keystrokes(server, "file:///p/small.py", 50, 4, 20))

        rss_before = rss_kb(server.pid)
        started = time.perf_counter()
        await server.open("file:///p/big.py", "def f():\n" + LINE * lines)
        await server.request("opportune/status", {}, timeout=120)
        opened_s = time.perf_counter() - started
        middle = lines // 2
        first = await _keystrokes(server, "file:///p/big.py", middle, 4, 10)
        rss_10 = rss_kb(server.pid)
        rest = await _keystrokes(server, "file:///p/big.py", middle, 14, 30)
        rss_40 = rss_kb(server.pid)
        big = statistics.median(first + rest)

    ratio = big / small
    print(
        f"small {small * 1000:.1f} ms, 20 MB {big * 1000:.1f} ms per keystroke (x{ratio:.0f}); "
        f"open {opened_s:.2f} s; RSS {rss_before // 1024} -> {rss_10 // 1024} -> {rss_40 // 1024} MB"
    )
    assert ratio <= MAX_RATIO, (
        f"a keystroke in a 20 MB file costs x{ratio:.0f} a small file's ({big * 1000:.0f} ms)"
    )
    assert (rss_40 - rss_before) * 1024 <= 8 * 20_000_000, "memory for a 20 MB file above 8x its size"
    assert (rss_40 - rss_10) <= 20 * 1024, f"RSS grew {(rss_40 - rss_10) // 1024} MB over 30 keystrokes"


async def test_a_keystroke_in_a_long_minified_line_costs_about_what_it_costs_in_a_small_file(
    tmp_path: Path,
) -> None:
    async with raw_session(tmp_path / "t.db", options=OPTIONS) as server:
        await server.open("file:///p/small.js", "function f() {\n" + "  let a = b + c;\n" * 100)
        small = statistics.median(await _keystrokes(server, "file:///p/small.js", 50, 2, 10))
        line = "var a=" + "b+c;" * 500_000  # 2 MB on one line, as minified bundles are
        await server.open("file:///p/bundle.min.js", line + "\n", "javascript")
        await server.request("opportune/status", {}, timeout=120)
        long = statistics.median(await _keystrokes(server, "file:///p/bundle.min.js", 0, 1_000_000, 3))
    ratio = long / small
    print(
        f"small {small * 1000:.1f} ms, middle of a 2 MB line {long * 1000:.1f} ms per keystroke (x{ratio:.0f})"
    )
    assert ratio <= MAX_RATIO, (
        f"a keystroke in a 2 MB line costs x{ratio:.0f} a small file's ({long * 1000:.0f} ms)"
    )
