"""Does project-wide context slow a keystroke?  Keystroke cost with and without a 50,000-file workspace.

Two engines on the fake backend (no model time, so what is measured is the engine's own cost per keystroke:
text sync, syntax, the project part's look-up, prompt assembly) type the same code, keystrokes interleaved so
both see the same machine.  One has no workspace; the other has a generated workspace of ``--files`` source
files.  In each round both type while nothing is indexed (idle), then again while the workspace engine
builds its index of the whole workspace afresh (indexing).  Reported: p50/p95 of the keystroke cost per
engine and condition, the ratios against the engine without a workspace when idle, the index's build time
and memory (tracemalloc, in a separate build of the same index), and the project part's size.

    python -m bench.project_context [--files 50000] [--keys 60] [--rounds 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from opportune.server.backends.fake import FakeBackend
from opportune.server.completion.effective import Effective
from opportune.server.completion.engine import Engine
from opportune.server.config import resolve
from opportune.server.context.project import ProjectContext
from opportune.server.context.workspace import Workspace
from opportune.server.documents import Document

CODE = (
    "    total = 0\n"
    "    for item in items:\n"
    "        price = helper_0_1(item.amount)\n"
    "        total += Model7(price).value()\n"
    "    return total\n"
)


def make_workspace(root: Path, files: int) -> Path:
    """``files`` Python modules in folders of 100, each defining a function and a class and importing two
    neighbours (so imports resolve and definitions are extracted)."""
    per_dir = 100
    for i in range(files):
        d, f = divmod(i, per_dir)
        folder = root / f"pkg{d}"
        if f == 0:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "__init__.py").write_text("")
        (folder / f"mod{f}.py").write_text(
            f"from .mod{(f + 1) % per_dir} import helper_{d}_{(f + 1) % per_dir}\n\n\n"
            f'def helper_{d}_{f}(x: int) -> int:\n    """Helper {f}."""\n    return x + {f}\n\n\n'
            f"class Model{f}:\n    value_: int = {f}\n\n    def value(self) -> int:\n        return self.value_\n"
        )
    return root


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q / 100 * len(values)))]


def index_memory(root: Path, max_files: int) -> tuple[float, float, int]:
    """(seconds, MB allocated and kept, files) of building the index alone, measured with tracemalloc."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    ws = Workspace(root, max_files=max_files)
    ws.start_indexing()
    ws.wait_ready(600)
    seconds = time.perf_counter() - started
    gc.collect()
    kept = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return seconds, kept / 1e6, ws.indexed_files


async def type_into(
    engines: list[tuple[str, Engine, str]], text: str, keys: int, stop: ProjectContext | None = None
) -> dict[str, list[float]]:
    """Type ``keys`` characters of ``CODE`` (repeated) into every engine, interleaved; cost per key in ms.
    With ``stop``, only while that project context's index is being built."""
    costs: dict[str, list[float]] = {name: [] for name, _, _ in engines}
    docs = {name: Document(uri, text) for name, _, uri in engines}
    versions = dict.fromkeys(docs, 1)
    stream = (CODE * (keys // len(CODE) + 1))[:keys]
    for i, ch in enumerate(stream):
        if stop is not None and stop.workspace.ready:
            break
        # Alternating which engine goes first: the first after a pause pays for waking the machine up.
        for name, engine, uri in engines if i % 2 else engines[::-1]:
            doc = docs[name]
            end = doc.position_at(len(doc.text))
            doc.apply(end, end, ch)
            versions[name] += 1
            started = time.perf_counter()
            engine.change(uri, versions[name], [(end, end, ch)])
            await engine.complete(uri, doc.position_at(len(doc.text)))
            costs[name].append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.005)  # a little idle time between keys, as a typist leaves
    return costs


async def run(files: int, keys: int, rounds: int, keep: Path | None = None) -> int:
    settings, errors = resolve(
        {
            "completion": {
                "prewarm": False,
                "deadline_ms": 2000,
                "max_tokens": 4,
                "single_line_max_tokens": 4,
            },
            "model": {"backend": "fake"},
        }
    )
    assert not errors, errors
    with tempfile.TemporaryDirectory(prefix="opportune-bench-") as tmp:
        root = keep or Path(tmp) / "ws"
        marker = root / f".generated-{files}"
        if not marker.exists():
            started = time.perf_counter()
            make_workspace(root, files)
            marker.write_text("")
            print(
                f"workspace: {files} files written in {time.perf_counter() - started:.1f} s", file=sys.stderr
            )
        seconds, mb, indexed = index_memory(root, max(files, 1) * 2)
        header = "from pkg0.mod1 import helper_0_1\nfrom pkg0.mod7 import Model7\n\n\ndef total(items):\n"
        plain = Engine(lambda _s: FakeBackend(), Effective(settings))
        project = Engine(lambda _s: FakeBackend(), Effective(settings), workspace_root=root)
        plain_uri = (Path(tmp) / "elsewhere" / "app.py").as_uri()
        project_uri = (root / "app.py").as_uri()
        ws_name = f"{files:,}-file workspace"
        engines = [("no workspace", plain, plain_uri), (ws_name, project, project_uri)]
        costs: dict[tuple[str, str], list[float]] = {}
        context = project.project.context
        try:
            context.workspace.wait_ready(600)
            for round_ in range(rounds):
                for condition in ("idle", "indexing"):
                    if condition == "indexing":
                        context.set_root(None)
                        context.set_root(root)  # a fresh index of the whole workspace starts now
                    for _, engine, uri in engines:
                        engine.close(uri)
                        engine.open(uri, header, "python", 1)
                    await asyncio.sleep(0.2 if condition == "idle" else 0.02)  # the fresh project part
                    typed = await type_into(
                        engines, header, keys, stop=None if condition == "idle" else context
                    )
                    for name, values in typed.items():
                        costs.setdefault((name, condition), []).extend(values)
                print(f"round {round_ + 1}/{rounds} done", file=sys.stderr)
            state = project.workspace.docs[project_uri]
            block = project.project.request(
                state, 0, state.tree.context_at(0).imports if state.tree else (), settings.completion
            )[0]
        finally:
            plain.shutdown()
            project.shutdown()
    print(f"\n# Keystroke cost with and without a {files:,}-file workspace (fake backend, {rounds} rounds)\n")
    print("| engine | while | keys | p50 ms | p95 ms | mean ms |")
    print("|---|---|---|---|---|---|")
    for (name, condition), values in costs.items():
        if values:
            print(
                f"| {name} | {'its index is built' if condition == 'indexing' else 'idle'} | {len(values)} | "
                f"{percentile(values, 50):.2f} | {percentile(values, 95):.2f} | {statistics.fmean(values):.2f} |"
            )
    base = costs[("no workspace", "idle")]
    print()
    for condition in ("idle", "indexing"):
        other = costs[(ws_name, condition)]
        if other:
            print(
                f"- {ws_name}, {condition} / no workspace, idle: p50 x{percentile(other, 50) / percentile(base, 50):.2f}, "
                f"p95 x{percentile(other, 95) / percentile(base, 95):.2f}"
            )
    print(f"- index: {indexed:,} files in {seconds:.1f} s, {mb:.1f} MB kept (tracemalloc)")
    print(
        f"- project block: {len(block.parts)} parts, {sum(p.tokens for p in block.parts)} estimated tokens "
        f"({', '.join(f'{k} {v}' for k, v in block.tokens_by_source().items())})"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=50_000)
    parser.add_argument("--keys", type=int, default=60, help="keys per engine, round and condition")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="generate the workspace here once and reuse it")
    args = parser.parse_args(argv)
    return asyncio.run(run(args.files, args.keys, args.rounds, args.keep))


if __name__ == "__main__":
    sys.exit(main())
