"""Does project-wide context slow a keystroke?  Keystroke cost with and without a 50,000-file workspace.

Two engines on the fake backend (no model time, so what is measured is the engine's own cost per keystroke:
text sync, syntax, the project block's look-up, prompt assembly) type the same code into the same file,
keystrokes interleaved so both see the same machine.  One has no workspace; the other has a generated
workspace of ``--files`` source files whose index is built while the typing runs (phase 1), then is ready
(phase 2).  Reported: p50/p95 of the keystroke cost per engine and phase, their ratio, the index's build
time and memory (tracemalloc, in a separate build of the same index), and the project block's size.

    python -m bench.project_context [--files 50000] [--keys 300]
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


async def type_into(engines: list[tuple[str, Engine, str]], text: str, keys: int) -> dict[str, list[float]]:
    """Type ``keys`` characters of ``CODE`` (repeated) into every engine, interleaved; cost per key in ms."""
    costs: dict[str, list[float]] = {name: [] for name, _, _ in engines}
    docs = {name: Document(uri, text) for name, _, uri in engines}
    versions = dict.fromkeys(docs, 1)
    stream = (CODE * (keys // len(CODE) + 1))[:keys]
    for ch in stream:
        for name, engine, uri in engines:
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


async def run(files: int, keys: int, keep: Path | None = None) -> int:
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
        project = Engine(lambda _s: FakeBackend(), Effective(settings), root=root)
        plain_uri = (Path(tmp) / "elsewhere" / "app.py").as_uri()
        project_uri = (root / "app.py").as_uri()
        plain.open(plain_uri, header, "python", 1)
        project.open(project_uri, header, "python", 1)
        engines = [("no workspace", plain, plain_uri), (f"{files:,}-file workspace", project, project_uri)]
        try:
            during = await type_into(engines, header, keys // 2)
            indexing_done = project.project.context.workspace.ready
            project.project.context.workspace.wait_ready(600)
            after = await type_into(engines, header + CODE, keys // 2)
            state = project.workspace.docs[project_uri]
            block = project.project.request(
                state, 0, state.tree.context_at(0).imports if state.tree else (), settings.completion
            )[0]
        finally:
            plain.shutdown()
            project.shutdown()
    print(f"\n# Keystroke cost with and without a {files:,}-file workspace (fake backend, {keys} keys)\n")
    print("| phase | engine | p50 ms | p95 ms | mean ms |")
    print("|---|---|---|---|---|")
    ratios = []
    for phase, costs in (
        ("index building" if not indexing_done else "index ready (early)", during),
        ("index ready", after),
    ):
        for name, values in costs.items():
            print(
                f"| {phase} | {name} | {percentile(values, 50):.2f} | {percentile(values, 95):.2f} | "
                f"{statistics.fmean(values):.2f} |"
            )
        base, other = costs["no workspace"], costs[engines[1][0]]
        ratio50 = percentile(other, 50) / percentile(base, 50)
        ratio95 = percentile(other, 95) / percentile(base, 95)
        ratios.append((phase, ratio50, ratio95))
    print()
    for phase, r50, r95 in ratios:
        print(f"- {phase}: ratio with/without workspace p50 x{r50:.2f}, p95 x{r95:.2f}")
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
    parser.add_argument("--keys", type=int, default=300)
    parser.add_argument("--keep", type=Path, help="generate the workspace here once and reuse it")
    args = parser.parse_args(argv)
    return asyncio.run(run(args.files, args.keys, args.keep))


if __name__ == "__main__":
    sys.exit(main())
