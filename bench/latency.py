"""Latency benchmark: Opportune through the LSP, next to a bare llama-cpp-python call and llama.cpp's own
llama-server driven the way llama.vim drives it, on real code this project did not write (modules of
Python's standard library), all in one run on this machine.

    python bench/latency.py                       # all parts that can run here
    python bench/latency.py --llama-server PATH   # include the llama-server replay

Part 1 (positions): an invoked inlineCompletion at fixed positions through `opportune serve` (pytest-lsp
client over stdio), then the bare `Llama.create_completion` on exactly the prompts the server built (read
back from its telemetry, stored with storeText) and for the same number of tokens: p50/p95 of each and the
overhead ratio.  Both run cold (a fresh document each time) and one after the other, never at once.

Part 2 (typing): a simulated developer types spans of the same files at 6.5 keys/s with a pause of about a
second after a quarter of the words and at punctuation, through the LSP like an editor (didChange, an
automatic request per keystroke, $/cancelRequest when the next key comes first, didShowCompletion, accept
by executeCommand when the ghost text matches what they were about to type).  Reported: time to ghost text
p50/p95 over the suggestions shown in time, feedback rate (shown before the next keystroke / requests), and
CPO both as the simulated user counted it and from the server's own telemetry.

Part 3 (llama-server): the same typing against `llama-server` with the same model file, requests as
llama.vim sends them (/infill with input_prefix, input_suffix, prompt = the line up to the cursor,
cache_prompt, n_predict, t_max_predict_ms; the previous request dropped when a key arrives).  A model
without FIM tokens (the embedded Gemma) gets HTTP 501 from /infill; the replay then sends the same prefix to
/completion, which is what a llama.vim user of such a model would have to do.

Before/after (`--baseline DIR`, another checkout of the project, e.g. `git worktree add /tmp/base REF`):
part 2 runs against both servers in the same run, alternating which goes first, `--repeat` times, and prints
each figure side by side with the ratio after/before.

Acceptance is counted as the issue tracker defines it: a shown suggestion whose first line is exactly what
the simulated developer types next.

Times are noisy on a shared 2-core machine: compare the rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import sqlite3
import statistics
import subprocess
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

from opportune.server.eval.typing import TypingModel, accept_length  # noqa: E402

FILES = ("textwrap.py", "shlex.py", "fractions.py", "string.py", "calendar.py")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def source_files(n: int) -> list[tuple[str, str]]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return [(name, (stdlib / name).read_text()) for name in FILES[:n]]


def positions(files: list[tuple[str, str]], count: int, seed: int) -> list[tuple[str, str, int]]:
    """Cursor positions at the end of a code line's first token, as when someone starts a statement."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        name, text = files[i % len(files)]
        lines = text.split("\n")
        for _ in range(200):
            n = rng.randrange(len(lines) // 5, len(lines) - 2)
            stripped = lines[n].strip()
            if len(stripped) > 12 and not stripped.startswith(("#", '"', "'")):
                break
        offset = sum(len(line) + 1 for line in lines[:n])
        indent = len(lines[n]) - len(lines[n].lstrip())
        first_word = lines[n][indent:].split(" ")[0]
        cut = offset + indent + len(first_word) + (1 if " " in lines[n][indent:] else 0)
        out.append((name, text, cut))
    return out


def spans(files: list[tuple[str, str]], count: int, chars: int, seed: int) -> list[tuple[str, str, int, int]]:
    rng = random.Random(seed + 1)
    out = []
    for i in range(count):
        name, text = files[i % len(files)]
        for _ in range(100):
            start = text.find("\n", rng.randrange(len(text) // 4, len(text) * 3 // 4)) + 1
            line = text[start : text.find("\n", start)]
            if line.strip() and not line.strip().startswith(("#", '"""')):
                break
        start += len(line) - len(line.lstrip())  # start after the indentation, as after Enter
        end = text.find("\n", start + chars)
        out.append((name, text, start, end if end != -1 else len(text)))
    return out


# ---- the LSP side --------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def opportune(db: Path, options: dict[str, Any], model: str | None, root: Path = ROOT) -> Any:
    client = make_test_lsp_client()
    # A checkout from before the single `opportune` namespace runs as `server.cli`.
    module = "opportune.server.cli" if (root / "opportune").is_dir() else "server.cli"
    cmd = [sys.executable, "-m", module, "serve", "--db", str(db)]
    if model:
        cmd += ["--model", model]
    await client.start_io(*cmd, cwd=str(root), env={**os.environ, "PYTHONPATH": str(root)})
    await client.initialize_session(
        types.InitializeParams(
            capabilities=client_capabilities("visual-studio-code"),
            initialization_options=options,
            client_info=types.ClientInfo(name="bench"),
        )
    )
    await asyncio.sleep(2.0)  # model load
    try:
        yield client
    finally:
        await client.shutdown_session()
        await client.stop()


def lsp_position(text: str, offset: int) -> types.Position:
    line = text.count("\n", 0, offset)
    col = offset - (text.rfind("\n", 0, offset) + 1)
    return types.Position(line, len(text[offset - col : offset].encode("utf-16-le")) // 2)


async def part1(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    db = work / "positions.db"
    options = {
        "completion": {"deadlineMs": 20000, "prewarm": False, "singleLineMaxTokens": args.tokens},
        "telemetry": {"storeText": True, "flushIntervalS": 0.2},
    }
    lsp_ms: list[float] = []
    async with opportune(db, options, args.model) as client:
        for i, (name, text, cut) in enumerate(positions(source_files(args.files), args.positions, args.seed)):
            uri = f"file:///bench/{i}/{name}"
            doc = text[:cut] + "\n" + text[text.find("\n", cut) + 1 :]
            client.text_document_did_open(
                types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, "python", 1, doc))
            )
            started = time.perf_counter()
            await client.text_document_inline_completion_async(
                types.InlineCompletionParams(
                    context=types.InlineCompletionContext(
                        trigger_kind=types.InlineCompletionTriggerKind.Invoked
                    ),
                    text_document=types.TextDocumentIdentifier(uri),
                    position=lsp_position(doc, cut),
                )
            )
            lsp_ms.append((time.perf_counter() - started) * 1000)
            client.text_document_did_close(
                types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri))
            )
    rows = (
        sqlite3.connect(db)
        .execute(
            "select prompt_text, generated_tokens from response where prompt_text is not null order by ts"
        )
        .fetchall()
    )
    from llama_cpp import Llama

    from opportune.server.models import resolve_model_path

    threads = max(1, (os.cpu_count() or 2) // 2)
    llm = Llama(
        str(resolve_model_path(args.model or "")),
        n_ctx=2048,
        n_threads=threads,
        n_threads_batch=threads,
        n_batch=256,
        verbose=False,
        swa_full=True,
    )
    bare_ms: list[float] = []
    for prompt, n in rows:
        llm.reset()
        started = time.perf_counter()
        llm.create_completion(prompt, max_tokens=max(1, n), temperature=0.0, top_k=1)
        bare_ms.append((time.perf_counter() - started) * 1000)
    llm.close()
    ratios = [a / b for a, b in zip(lsp_ms, bare_ms, strict=False) if b > 0]
    return {
        "positions": len(lsp_ms),
        "lsp_p50_ms": statistics.median(lsp_ms),
        "lsp_p95_ms": pct(lsp_ms, 95),
        "bare_p50_ms": statistics.median(bare_ms) if bare_ms else float("nan"),
        "bare_p95_ms": pct(bare_ms, 95),
        "overhead_ratio_median": statistics.median(ratios) if ratios else float("nan"),
    }


@dataclass
class Replay:
    keystrokes: int = 0
    requests: int = 0
    in_time: int = 0
    accepted_chars: int = 0
    exact_first_line: int = 0  # shown suggestions whose first line is exactly what comes next
    ghost_ms: list[float] = field(default_factory=list)


async def type_span_lsp(
    client: Any, uri: str, text: str, start: int, end: int, typing: TypingModel, r: Replay
) -> None:
    doc = text[:start] + text[end:]
    version = 1
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, "python", 1, doc))
    )
    # Moving the cursor there (a request with no edit) lets the server warm up, as in an editor.
    await asyncio.wait_for(
        client.text_document_inline_completion_async(
            types.InlineCompletionParams(
                context=types.InlineCompletionContext(
                    trigger_kind=types.InlineCompletionTriggerKind.Automatic
                ),
                text_document=types.TextDocumentIdentifier(uri),
                position=lsp_position(doc, start),
            )
        ),
        30,
    )
    await asyncio.sleep(typing.pause_s)
    span = text[start:end]
    gaps = typing.gaps(span)
    i = 0

    def edit(offset: int, insert: str) -> None:
        nonlocal doc, version
        pos = lsp_position(doc, offset)
        doc = doc[:offset] + insert + doc[offset:]
        version += 1
        client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                types.VersionedTextDocumentIdentifier(version=version, uri=uri),
                [types.TextDocumentContentChangePartial(range=types.Range(pos, pos), text=insert)],
            )
        )

    while i < len(span):
        edit(start + i, span[i])
        i += 1
        r.keystrokes += 1
        if i >= len(span):
            break
        before = set(client.protocol._request_futures)
        sent = time.perf_counter()
        fut = asyncio.ensure_future(
            client.text_document_inline_completion_async(
                types.InlineCompletionParams(
                    context=types.InlineCompletionContext(
                        trigger_kind=types.InlineCompletionTriggerKind.Automatic
                    ),
                    text_document=types.TextDocumentIdentifier(uri),
                    position=lsp_position(doc, start + i),
                )
            )
        )
        await asyncio.sleep(0)
        ids = set(client.protocol._request_futures) - before
        r.requests += 1
        gap = gaps[i - 1]
        done, _ = await asyncio.wait({fut}, timeout=gap)
        if not done:
            # As an editor does; the request's future is left to receive the server's cancellation error.
            for msg_id in ids:
                client.protocol.notify("$/cancelRequest", types.CancelParams(id=msg_id))
            fut.add_done_callback(lambda f: f.exception())
            continue
        with contextlib.suppress(Exception):
            result = fut.result()
            items = result.items if isinstance(result, types.InlineCompletionList) else (result or [])
            if not items:
                await asyncio.sleep(max(0.0, gap - (time.perf_counter() - sent)))
                continue
            item = items[0]
            ghost = item.insert_text if isinstance(item.insert_text, str) else item.insert_text.value
            r.in_time += 1
            r.ghost_ms.append((time.perf_counter() - sent) * 1000)
            cid = item.command.arguments[0] if item.command and item.command.arguments else ""
            client.protocol.notify("opportune/didShowCompletion", {"id": cid})
            first_line = ghost.split("\n", 1)[0]
            if first_line.strip() and span[i:].startswith(first_line):
                r.exact_first_line += 1
            n = accept_length(ghost, span[i:])
            if n:
                edit(start + i, ghost[:n])
                if n == len(ghost):
                    await client.workspace_execute_command_async(
                        types.ExecuteCommandParams("opportune.accept", [cid])
                    )
                else:
                    client.protocol.notify(
                        "opportune/didPartiallyAcceptCompletion", {"id": cid, "acceptedLength": n}
                    )
                i += n
                r.accepted_chars += n
            else:
                client.protocol.notify("opportune/didRejectCompletion", {"id": cid, "reason": "typed_over"})
            await asyncio.sleep(max(0.0, gap - (time.perf_counter() - sent)))
    client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri)))


async def part2(
    args: argparse.Namespace,
    work: Path,
    root: Path = ROOT,
    tag: str = "",
    completion: dict[str, Any] | None = None,
) -> dict[str, Any]:
    db = work / f"typing{tag}.db"
    r = Replay()
    typing = TypingModel(keys_per_second=args.kps, seed=args.seed)
    options: dict[str, Any] = {"telemetry": {"flushIntervalS": 0.2}}
    if completion:
        options["completion"] = completion
    async with opportune(db, options, args.model, root) as client:
        for k, (name, text, start, end) in enumerate(
            spans(source_files(args.files), args.spans, args.chars, args.seed)
        ):
            await type_span_lsp(client, f"file:///bench/t{k}/{name}", text, start, end, typing, r)
    from opportune.telemetry.cpo import summarise
    from opportune.telemetry.store import open_events

    (summary,) = summarise(open_events([db]))
    f = summary.funnel
    return {
        "keystrokes": r.keystrokes,
        "requests": r.requests,
        "ghost_p50_ms": statistics.median(r.ghost_ms) if r.ghost_ms else float("nan"),
        "ghost_p95_ms": pct(r.ghost_ms, 95),
        "feedback_rate": r.in_time / max(1, r.requests),
        "shown": r.in_time,
        "acceptance_first_line": r.exact_first_line / max(1, r.in_time),
        "cpo_simulated": r.accepted_chars / max(1, r.keystrokes),
        "cpo_telemetry": f.cpo,
        "telemetry": {k: v for k, v in f.factors().items()},
    }


# ---- llama-server --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def part3(args: argparse.Namespace, work: Path) -> dict[str, Any] | None:
    if not args.llama_server:
        return None
    import httpx

    from opportune.server.models import resolve_model_path

    port = free_port()
    log = (work / "llama-server.log").open("w")
    threads = str(max(1, (os.cpu_count() or 2) // 2))
    proc = subprocess.Popen(
        [args.llama_server, "-m", str(resolve_model_path(args.model or "")), "--host", "127.0.0.1", "--port", str(port),
         "-t", threads, "-c", "2048", "--swa-full"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    r = Replay()
    used_completion = False
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            for _ in range(120):
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{base}/health")).status_code == 200:
                        break
                await asyncio.sleep(0.5)
            typing = TypingModel(keys_per_second=args.kps, seed=args.seed)
            for name, text, start, end in spans(source_files(args.files), args.spans, args.chars, args.seed):
                del name
                doc = text[:start] + text[end:]
                span = text[start:end]
                gaps = typing.gaps(span)
                await asyncio.sleep(typing.pause_s)
                i = 0
                while i < len(span):
                    doc = doc[: start + i] + span[i] + doc[start + i :]
                    i += 1
                    r.keystrokes += 1
                    if i >= len(span):
                        break
                    cursor = start + i
                    line_start = doc.rfind("\n", 0, cursor) + 1
                    prefix_lines = doc[:line_start].split("\n")[-257:]
                    suffix = doc[cursor:].split("\n")[:64]
                    body = {
                        "input_prefix": "\n".join(prefix_lines),
                        "input_suffix": "\n".join(suffix),
                        "input_extra": [],
                        "prompt": doc[line_start:cursor],
                        "n_predict": 128,
                        "n_indent": len(doc[line_start:cursor]) - len(doc[line_start:cursor].lstrip()),
                        "top_k": 40,
                        "top_p": 0.99,
                        "stream": False,
                        "samplers": ["top_k", "top_p", "infill"],
                        "cache_prompt": True,
                        "t_max_prompt_ms": 500,
                        "t_max_predict_ms": 1000,
                    }
                    r.requests += 1
                    sent = time.perf_counter()

                    async def ask(body: dict[str, Any] = body) -> str:
                        nonlocal used_completion
                        if not used_completion:
                            resp = await http.post(f"{base}/infill", json=body)
                            if resp.status_code != 501:
                                return str(resp.json().get("content", ""))
                            used_completion = True
                        plain = {
                            k: v
                            for k, v in body.items()
                            if k
                            not in ("input_prefix", "input_suffix", "input_extra", "samplers", "n_indent")
                        }
                        plain["prompt"] = body["input_prefix"] + body["prompt"]
                        resp = await http.post(f"{base}/completion", json=plain)
                        return str(resp.json().get("content", ""))

                    task = asyncio.ensure_future(ask())
                    gap = gaps[i - 1]
                    done, _ = await asyncio.wait({task}, timeout=gap)
                    if not done:
                        task.cancel()  # llama.vim stops the previous job: the connection closes
                        with contextlib.suppress(BaseException):
                            await task
                        continue
                    ghost = ""
                    with contextlib.suppress(Exception):
                        ghost = task.result().split("\n")[0].rstrip()
                    if not ghost:
                        await asyncio.sleep(max(0.0, gap - (time.perf_counter() - sent)))
                        continue
                    r.in_time += 1
                    r.ghost_ms.append((time.perf_counter() - sent) * 1000)
                    n = accept_length(ghost, span[i:])
                    if n:
                        doc = doc[: start + i] + ghost[:n] + doc[start + i :]
                        i += n
                        r.accepted_chars += n
                    await asyncio.sleep(max(0.0, gap - (time.perf_counter() - sent)))
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        proc.kill()
        log.close()
    return {
        "endpoint": "/completion (HTTP 501 from /infill)" if used_completion else "/infill",
        "keystrokes": r.keystrokes,
        "requests": r.requests,
        "ghost_p50_ms": statistics.median(r.ghost_ms) if r.ghost_ms else float("nan"),
        "ghost_p95_ms": pct(r.ghost_ms, 95),
        "feedback_rate": r.in_time / max(1, r.requests),
        "cpo_simulated": r.accepted_chars / max(1, r.keystrokes),
    }


COMPARED = (
    "ghost_p50_ms", "ghost_p95_ms", "feedback_rate", "acceptance_first_line", "cpo_simulated", "cpo_telemetry",
)  # fmt: skip


def before_after(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Part 2 on the baseline checkout and on this one, alternating which runs first; medians per side."""
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    roots = {"before": args.baseline.resolve(), "after": ROOT}
    for k in range(args.repeat):
        order = ("before", "after") if k % 2 == 0 else ("after", "before")
        for side in order:
            runs[side].append(asyncio.run(part2(args, work, roots[side], f"-{side}-{k}")))
    out: dict[str, Any] = {"runs": runs, "median": {}}
    print(f"{'':24} {'before':>10} {'after':>10} {'after/before':>13}")
    for key in COMPARED:
        b = statistics.median(float(r[key] or 0.0) for r in runs["before"])
        a = statistics.median(float(r[key] or 0.0) for r in runs["after"])
        out["median"][key] = {"before": b, "after": a, "ratio": a / b if b else None}
        ratio = f"{a / b:13.2f}" if b else f"{'-':>13}"
        print(f"{key:24} {b:10.3f} {a:10.3f} {ratio}")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="GGUF path (default: the embedded model)")
    p.add_argument("--llama-server", help="path to a llama-server binary built from llama.cpp")
    p.add_argument("--files", type=int, default=3)
    p.add_argument("--positions", type=int, default=20)
    p.add_argument("--tokens", type=int, default=16, help="tokens per completion in part 1")
    p.add_argument("--spans", type=int, default=4)
    p.add_argument("--chars", type=int, default=200, help="characters per typed span")
    p.add_argument("--kps", type=float, default=6.5, help="keys per second")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip", default="", help="comma-separated parts to skip: 1,2,3")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--baseline", type=Path, help="another checkout: part 2 against both, in the same run")
    p.add_argument("--repeat", type=int, default=1, help="with --baseline: runs of each, alternating")
    p.add_argument(
        "--min-confidence",
        default="",
        help="comma-separated completion.minConfidence values: part 2 runs once for each, in this run",
    )
    args = p.parse_args()
    skip = set(args.skip.split(",")) - {""}
    with tempfile.TemporaryDirectory(prefix="opportune-bench-") as tmp:
        work = Path(tmp)
        results: dict[str, Any] = {}
        if "1" not in skip:
            results["positions"] = asyncio.run(part1(args, work))
        if "2" not in skip and args.baseline:
            results["typing_before_after"] = before_after(args, work)
        elif "2" not in skip and args.min_confidence:
            for threshold in (float(x) for x in args.min_confidence.split(",") if x.strip()):
                results[f"typing_min_confidence_{threshold:g}"] = asyncio.run(
                    part2(args, work, tag=f"-{threshold:g}", completion={"minConfidence": threshold})
                )
        elif "2" not in skip:
            results["typing_opportune"] = asyncio.run(part2(args, work))
        if "3" not in skip:
            results["typing_llama_server"] = asyncio.run(part3(args, work))
    print(json.dumps(results, indent=2, default=str))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    ops, ls = results.get("typing_opportune"), results.get("typing_llama_server")
    if ops and ls and ls["cpo_simulated"] > 0:
        print(f"CPO ratio Opportune / llama-server: {ops['cpo_simulated'] / ls['cpo_simulated']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
