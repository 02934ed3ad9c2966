"""Next-edit latency: `opportune/nextEdit` through the LSP on the embedded model, and what asking for next
edits does to inline completions, in one run on this machine.

    python bench/next_edit.py [--tasks 20] [--json]

Workspace: modules of Python's standard library copied to a temporary folder (real code this project did
not write), given to the server as its workspace root.  Tasks: the eval's generated edits on them
(``opportune.server.eval.nextedit``: a function renamed, a parameter added or renamed, a local renamed).

Each task is typed like an editor does it (didChange per key at 6.5 keys/s, an automatic inlineCompletion
per key, $/cancelRequest when the next key comes first), in two modes, alternating task by task:

- ``completions only``: nothing else is asked;
- ``with next edits``: every keystroke also sends `opportune/nextEdit` (the worst case: Copilot's client asks
  on every cursor move), cancelled like a completion when the next key comes first.

After the last key and a pause, `opportune/nextEdit` is asked once more and timed: that is the answer the
user sees.  Reported: nextEdit p50/p95 (the target is p95 <= 300 ms), how many follow-ups it found, the
inline completion p50/p95 in each mode and their ratio (next edits must not delay completions), and how
many nextEdit requests were cancelled.  Times are noisy on a shared 2-core machine: compare rows of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lsprotocol import types  # noqa: E402
from pytest_lsp import client_capabilities  # noqa: E402
from pytest_lsp.client import make_test_lsp_client  # noqa: E402

from opportune.server.eval.nextedit import EditTask, generate  # noqa: E402

FILES = ("textwrap.py", "shlex.py", "fractions.py", "string.py", "calendar.py", "bisect.py", "colorsys.py")
KEY_GAP_S = 1 / 6.5


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def position(text: str, offset: int) -> types.Position:
    line = text.count("\n", 0, offset)
    col = offset - (text.rfind("\n", 0, offset) + 1)
    return types.Position(line, len(text[offset - col : offset].encode("utf-16-le")) // 2)


@dataclass
class Mode:
    completion_ms: list[float] = field(default_factory=list)
    completions_cancelled: int = 0
    next_edit_requests: int = 0
    next_edit_cancelled: int = 0


@dataclass
class Run:
    next_edit_ms: list[float] = field(default_factory=list)
    follow_ups: list[int] = field(default_factory=list)
    modes: dict[str, Mode] = field(
        default_factory=lambda: {"completions only": Mode(), "with next edits": Mode()}
    )


@contextlib.asynccontextmanager
async def server(db: Path, workspace: Path) -> Any:
    client = make_test_lsp_client()
    cmd = [sys.executable, "-m", "opportune.server.cli", "serve", "--db", str(db)]
    await client.start_io(*cmd, cwd=str(ROOT), env={**os.environ, "PYTHONPATH": str(ROOT)})
    await client.initialize_session(
        types.InitializeParams(
            capabilities=client_capabilities("visual-studio-code"),
            root_uri=workspace.as_uri(),
            initialization_options={"telemetry": {"flushIntervalS": 0.5}},
            client_info=types.ClientInfo(name="bench-next-edit"),
        )
    )
    await asyncio.sleep(3.0)  # model load and the workspace index
    try:
        yield client
    finally:
        await client.shutdown_session()
        await client.stop()


async def timed(client: Any, fut: Any, ids: set[Any], timeout: float) -> tuple[Any, float | None]:
    """Wait for a request up to ``timeout``; cancel it as an editor does when the next key comes first."""
    sent = time.perf_counter()
    done, _ = await asyncio.wait({fut}, timeout=timeout)
    if not done:
        for msg_id in ids:
            client.protocol.notify("$/cancelRequest", types.CancelParams(id=msg_id))
        fut.add_done_callback(lambda f: f.exception())
        return None, None
    try:
        return fut.result(), (time.perf_counter() - sent) * 1000
    except Exception:
        return None, None


def request(client: Any, method: str, params: Any) -> tuple[Any, set[Any]]:
    before = set(client.protocol._request_futures)
    if method == "inline":
        fut = asyncio.ensure_future(client.text_document_inline_completion_async(params))
    else:
        fut = asyncio.ensure_future(client.protocol.send_request_async(method, params))
    return fut, before


async def run_task(client: Any, task: EditTask, n: int, mode_name: str, run: Run) -> None:
    mode = run.modes[mode_name]
    uri = (Path(task.file)).as_uri()
    text = task.text
    version = 1
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, "python", 1, text))
    )
    await asyncio.sleep(0.3)
    a, b, new = task.first

    def change(start: int, end: int, insert: str) -> None:
        nonlocal text, version
        version += 1
        rng = types.Range(position(text, start), position(text, end))
        text = text[:start] + insert + text[end:]
        client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                types.VersionedTextDocumentIdentifier(version=version, uri=uri),
                [types.TextDocumentContentChangePartial(range=rng, text=insert)],
            )
        )

    # The user's edit, key by key: select the old text and type the new (a deletion, then insertions).
    if b > a:
        change(a, b, "")
    for i, ch in enumerate(new):
        change(a + i, a + i, ch)
        at = position(text, a + i + 1)
        params = types.InlineCompletionParams(
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
            text_document=types.TextDocumentIdentifier(uri),
            position=at,
        )
        fut, before = request(client, "inline", params)
        await asyncio.sleep(0)
        ids = set(client.protocol._request_futures) - before
        nfut = None
        if mode_name == "with next edits":
            nfut, nbefore = request(client, "opportune/nextEdit", _next_params(uri, at))
            await asyncio.sleep(0)
            nids = set(client.protocol._request_futures) - nbefore
            mode.next_edit_requests += 1
        _, ms = await timed(client, fut, ids, KEY_GAP_S)
        if ms is None:
            mode.completions_cancelled += 1
        else:
            mode.completion_ms.append(ms)
        await asyncio.sleep(KEY_GAP_S / 2)
        # The next key comes: a next-edit request still running is cancelled, as a completion is.
        if nfut is not None and not nfut.done():
            for msg_id in nids:
                client.protocol.notify("$/cancelRequest", types.CancelParams(id=msg_id))
            nfut.add_done_callback(lambda f: f.exception())
            mode.next_edit_cancelled += 1
    await asyncio.sleep(0.5)  # the user pauses: now the next edits are worth showing
    fut, _ = request(client, "opportune/nextEdit", _next_params(uri, position(text, a + len(new))))
    result, ms = await timed(client, fut, set(), 30)
    if ms is not None:
        run.next_edit_ms.append(ms)
        edits = result.get("edits", []) if isinstance(result, dict) else getattr(result, "edits", [])
        run.follow_ups.append(len(edits))
    client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri)))


def _next_params(uri: str, at: types.Position) -> dict[str, Any]:
    return {
        "textDocument": {"uri": uri},
        "position": {"line": at.line, "character": at.character},
        "context": {"triggerKind": 2},
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="opportune-bench-next-edit-"))
    ws = work / "ws"
    ws.mkdir()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in FILES:
        shutil.copy(stdlib / name, ws / name)
    tasks: list[EditTask] = []
    for name in FILES:
        path = ws / name
        for t in generate(str(path), path.read_text(), per_kind=1):
            tasks.append(t)
    tasks = tasks[: args.tasks]
    run = Run()
    async with server(work / "t.db", ws) as client:
        for n, task in enumerate(tasks):
            # Alternate which mode goes first, so warm-up and drift fall on both alike.
            order = ["completions only", "with next edits"]
            if n % 2:
                order.reverse()
            for mode in order:
                await run_task(client, task, n, mode, run)
    shutil.rmtree(work, ignore_errors=True)
    only, with_ne = run.modes["completions only"], run.modes["with next edits"]
    out = {
        "tasks": len(tasks),
        "next_edit_p50_ms": pct(run.next_edit_ms, 50),
        "next_edit_p95_ms": pct(run.next_edit_ms, 95),
        "next_edit_answers": len(run.next_edit_ms),
        "follow_ups_found": sum(run.follow_ups),
        "tasks_with_follow_ups": sum(1 for f in run.follow_ups if f),
        "modes": {
            name: {
                "completion_p50_ms": pct(m.completion_ms, 50),
                "completion_p95_ms": pct(m.completion_ms, 95),
                "completions_in_time": len(m.completion_ms),
                "completions_cancelled": m.completions_cancelled,
                "next_edit_requests": m.next_edit_requests,
                "next_edit_cancelled": m.next_edit_cancelled,
            }
            for name, m in run.modes.items()
        },
    }
    p50s = [out["modes"][k]["completion_p50_ms"] for k in ("completions only", "with next edits")]
    p95s = [out["modes"][k]["completion_p95_ms"] for k in ("completions only", "with next edits")]
    out["completion_p50_ratio"] = p50s[1] / p50s[0] if all(p50s) else None
    out["completion_p95_ratio"] = p95s[1] / p95s[0] if all(p95s) else None
    del only, with_ne
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(out, indent=2))
        return 0

    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}"

    print(f"tasks: {out['tasks']}, nextEdit answers: {out['next_edit_answers']}")
    print(
        f"opportune/nextEdit after the edit: p50 {f(out['next_edit_p50_ms'])} ms, p95 {f(out['next_edit_p95_ms'])} ms"
        f" (target p95 <= 300); follow-ups found {out['follow_ups_found']} in {out['tasks_with_follow_ups']} tasks"
    )
    for name, m in out["modes"].items():
        print(
            f"{name:17} completion p50 {f(m['completion_p50_ms'])} ms, p95 {f(m['completion_p95_ms'])} ms,"
            f" {m['completions_in_time']} in time, {m['completions_cancelled']} cancelled;"
            f" nextEdit sent {m['next_edit_requests']}, cancelled {m['next_edit_cancelled']}"
        )
    r50, r95 = out["completion_p50_ratio"], out["completion_p95_ratio"]
    print(
        "completion latency with next edits / without: p50 x"
        + (f"{r50:.2f}" if r50 else "-")
        + ", p95 x"
        + (f"{r95:.2f}" if r95 else "-")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
