"""Persistence benchmark: what following accepted suggestions costs a keystroke, a checkpoint, and memory.

    python -m bench.persistence [--keys 3000] [--tracked 50] [--repeat 5] [--json]

Keystroke cost: two engines on the fake backend (so only the server's own work is timed) hold the same real
file (``difflib.py`` of Python's standard library); in one, ``--tracked`` accepted suggestions are being
followed in that file (persistence on), in the other tracking is off (no checkpoints).  The same keystrokes
(typing at the end of a line in the middle of the file, and some deletions: edits before most of the
followed regions, so every one of them is shifted) go to both engines, alternating which goes first, and
``Engine.change`` is timed per keystroke.  Reported: median and p95 per keystroke of each, and the ratios
on/off in the same run.

Checkpoint cost: the time of one ``measure`` per followed suggestion (rapidfuzz on its region).

Memory: accepting ``--flood`` suggestions in a row keeps at most ``max_tracked`` followed (the bound; the
rest are recorded unknown as evicted); tracemalloc gives the bytes held per followed suggestion.

Times are noisy on a shared 2-core machine: compare the rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import sysconfig
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opportune.server.backends.fake import FakeBackend  # noqa: E402
from opportune.server.completion import Effective, Engine  # noqa: E402
from opportune.server.completion.persistence import PersistenceTracker  # noqa: E402
from opportune.server.config import resolve  # noqa: E402
from opportune.server.documents import Document  # noqa: E402
from opportune.telemetry import events as ev  # noqa: E402

URI = "file:///bench/difflib.py"


def _engine(checkpoints: list[float], max_tracked: int = 256) -> Engine:
    settings, errors = resolve(
        {
            "completion": {"prewarm": False, "enabled": False},  # no model work: the edit path alone
            "model": {"backend": "fake"},
            "telemetry": {"persistenceCheckpointsS": checkpoints, "persistenceMaxTracked": max_tracked},
        }
    )
    assert not errors, errors
    return Engine(lambda _s: FakeBackend(), Effective(settings), record=lambda _e: None)


def _follow(engine: Engine, text: str, tracked: int, rng: random.Random) -> None:
    """``tracked`` accepted suggestions followed in the lower half of the file (below the typing)."""
    tracker = engine.tracker.persistence.tracker
    common = ev.Common("bench", "bench")
    half = len(text) // 2
    for i in range(tracked):
        start = rng.randrange(half, len(text) - 40)
        tracker.accepted(f"c{i}", URI, start, text[start : start + 30], text, common, time.monotonic())


def keystrokes(keys: int, tracked: int, repeat: int, seed: int) -> dict[str, Any]:
    text = (Path(sysconfig.get_paths()["stdlib"]) / "difflib.py").read_text()
    engines = {"on": _engine([30.0, 120.0, 600.0]), "off": _engine([])}
    docs = {name: Document(URI, text) for name in engines}
    for name, engine in engines.items():
        engine.open(URI, text, "python", 1)
        if name == "on":
            _follow(engine, text, tracked, random.Random(seed))
    assert len(engines["on"].tracker.persistence.tracker) == tracked
    # Typing at the end of a line a third of the way in: above every followed region.
    line = docs["on"].line_of(len(text) // 3)
    times: dict[str, list[float]] = {"on": [], "off": []}
    rng = random.Random(seed)
    plan = [rng.choice("abcdefghij (),.=") if rng.random() > 0.15 else "" for _ in range(keys)]
    version = 1
    for round_ in range(repeat):
        order = ["on", "off"] if round_ % 2 == 0 else ["off", "on"]
        for ch in plan:
            version += 1
            for name in order:
                doc, engine = docs[name], engines[name]
                at = doc.line_start(line + 1) - 1
                start = doc.position_at(at - (0 if ch else 1))
                end = doc.position_at(at)
                doc.apply(start, end, ch)
                t0 = time.perf_counter()
                engine.change(URI, version, [(start, end, ch)])
                times[name].append((time.perf_counter() - t0) * 1e6)
    out: dict[str, Any] = {"keys": keys * repeat, "tracked": tracked}
    for name, values in times.items():
        values.sort()
        out[f"{name}_median_us"] = statistics.median(values)
        out[f"{name}_p95_us"] = values[int(0.95 * (len(values) - 1))]
    out["ratio_median"] = out["on_median_us"] / out["off_median_us"]
    out["ratio_p95"] = out["on_p95_us"] / out["off_p95_us"]
    # One checkpoint per followed suggestion, measured now.
    tracker = engines["on"].tracker.persistence.tracker
    t0 = time.perf_counter()
    rows = tracker.measure(time.monotonic() + 31, lambda _uri: docs["on"].text)
    out["checkpoint_us_each"] = (time.perf_counter() - t0) * 1e6 / max(1, rows)
    for engine in engines.values():
        engine.shutdown()
    return out


def memory(flood: int, max_tracked: int) -> dict[str, Any]:
    rows: list[ev.Event] = []
    tracker = PersistenceTracker([30.0, 120.0, 600.0], rows.append, max_tracked)
    text = "x = 1\n" * 2000
    common = ev.Common("bench", "bench")
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for i in range(flood):
        suggestion = f"value_{i} = compute(x, {i})"  # a typical one-line suggestion
        tracker.accepted(f"c{i}", URI, (i * 6) % len(text), suggestion, text, common, 0.0)
    rows.clear()  # the events went to the store; only what the tracker holds counts
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    held = sum(s.size_diff for s in after.compare_to(before, "filename"))
    return {
        "accepted": flood,
        "followed": len(tracker),
        "max_tracked": max_tracked,
        "bytes_per_followed": held / max(1, len(tracker)),
        "bytes_total": held,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.persistence", description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=3000, help="keystrokes per round")
    parser.add_argument("--tracked", type=int, default=50, help="accepted suggestions followed in the file")
    parser.add_argument("--repeat", type=int, default=4, help="rounds, alternating which engine goes first")
    parser.add_argument("--flood", type=int, default=20_000, help="suggestions accepted for the memory bound")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = {
        "keystroke": keystrokes(args.keys, args.tracked, args.repeat, args.seed),
        "memory": memory(args.flood, 256),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    k, m = result["keystroke"], result["memory"]
    print(f"Keystroke (Engine.change), {k['keys']:,} keys, {k['tracked']} suggestions followed in the file:")
    print(f"  persistence on : median {k['on_median_us']:.1f} us, p95 {k['on_p95_us']:.1f} us")
    print(f"  persistence off: median {k['off_median_us']:.1f} us, p95 {k['off_p95_us']:.1f} us")
    print(f"  ratio on/off   : median x{k['ratio_median']:.3f}, p95 x{k['ratio_p95']:.3f}")
    print(f"Checkpoint: {k['checkpoint_us_each']:.0f} us per followed suggestion")
    print(
        f"Memory: {m['accepted']:,} accepted -> {m['followed']} followed (bound {m['max_tracked']}), "
        f"{m['bytes_per_followed']:.0f} bytes each, {m['bytes_total'] / 1024:.0f} KiB in all"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
