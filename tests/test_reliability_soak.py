"""Resource bounds over time: two minutes of typing at 10 keys/s into four documents through the real server
(bench/soak.py), with the fake backend to keep CI cheap.

The full soak is `python -m bench.soak` (real model, 30 minutes); this slice catches what grows with every
keystroke or document (a cache without a bound, a document kept after close, a task per request never
collected) in the server's own code, which the fake backend exercises exactly as the real one does; what it
cannot catch is growth inside llama.cpp, which the full run watches.

Bounds: RSS grows by less than 50 MB after a 30 s warm-up; every request is answered; every keystroke is an
opportunity in the store after shutdown (none lost); the median latency of the last minute is at most 3x
that of the first (floor 5 ms), so nothing gets slower per keystroke as state accumulates.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.fuzz_server import dumps, frame, raw_session, rss_kb
from bench.soak import ms, run_soak

pytestmark = pytest.mark.e2e


async def test_two_minutes_of_typing_keep_memory_and_latency_flat(tmp_path: Path) -> None:
    report = await run_soak(120, backend="fake", rate=10, docs=4, warmup_s=30, db=tmp_path / "soak.db")
    print(report.summary())
    assert not report.crashed, f"the server died (returncode {report.returncode})"
    assert report.keystrokes >= 1000, "the typist could not keep 10 keys/s"
    assert report.unanswered == 0
    growth_mb = (report.rss_end_kb - report.rss_start_kb) / 1024
    assert growth_mb < 50, f"RSS grew {growth_mb:.1f} MB after warm-up"
    assert report.lost_events == 0, f"{report.lost_events} keystrokes missing from the store"
    first = ms(report.minutes[0].latencies_ms, 50)
    last = ms(report.minutes[-1].latencies_ms, 50)
    assert not math.isnan(first) and not math.isnan(last)
    assert last <= 3 * max(first, 5.0), f"median latency {first:.1f} ms in minute 1, {last:.1f} ms at the end"


async def test_keystrokes_leave_nothing_behind(tmp_path: Path) -> None:
    """12,000 didChange notifications as fast as the server takes them: memory must not grow per keystroke.
    pygls kept the future of every notification handled by a generator (its text-sync builtins) in
    `_request_futures` for ever: about 2 KB per keystroke, 70 MB for an hour of typing."""
    async with raw_session(tmp_path / "t.db", options={"completion": {"prewarm": False}}) as server:
        uri = "file:///p/a.py"
        await server.open(uri, "x = 1\n")
        line, column, version = 1, 0, 1

        async def burst(n: int) -> None:
            nonlocal line, column, version
            data = []
            for _ in range(n):
                version += 1
                ch = "a" if column < 60 else "\n"
                at = {"line": line, "character": column}
                change = {"range": {"start": at, "end": at}, "text": ch}
                params = {"textDocument": {"uri": uri, "version": version}, "contentChanges": [change]}
                data.append(
                    frame(dumps({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": params}))
                )
                line, column = (line + 1, 0) if ch == "\n" else (line, column + 1)
            await server.write(b"".join(data))
            await server.request("opportune/status", {}, timeout=300)  # all of them handled

        await burst(2000)  # warm: caches, allocator arenas, the telemetry writer's first batches
        before = rss_kb(server.pid)
        for _ in range(6):
            await burst(2000)
        after = rss_kb(server.pid)
    growth_mb = (after - before) / 1024
    print(f"RSS {before / 1024:.1f} -> {after / 1024:.1f} MB over 12,000 keystrokes")
    assert growth_mb < 10, f"RSS grew {growth_mb:.1f} MB over 12,000 keystrokes"
