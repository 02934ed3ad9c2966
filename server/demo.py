"""`opportune demo`: the main job with no editor.  Types a span of a real source file (by default a module of
Python's standard library, code nobody here wrote) into the engine at a human pace, prints the ghost text
that would have appeared and how fast, accepts it when it matches, then prints the CPO funnel.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

from opportune.server.backends.base import BackendError
from opportune.server.completion import Engine, Suggestion
from opportune.server.eval.typing import TypingModel, replay
from opportune.server.session import start_session

DEFAULT_MODULE = "textwrap.py"


def default_file() -> Path:
    return Path(sysconfig.get_paths()["stdlib"]) / DEFAULT_MODULE


def choose_span(text: str, chars: int) -> tuple[int, int]:
    """Start at the body of a function a third of the way into the file; type ``chars`` characters."""
    third = len(text) // 3
    match = re.compile(r"^[ \t]*def [^\n]*:\n", re.M).search(text, third) or re.compile(r"\n").search(
        text, third
    )
    start = match.end() if match else 0
    end = min(len(text), start + chars)
    # End at a line end so the document stays well formed.
    nl = text.find("\n", end)
    return start, (nl + 1 if nl != -1 else len(text))


def _short(text: str, width: int = 60) -> str:
    flat = text.replace("\n", "⏎")
    return flat if len(flat) <= width else flat[: width - 1] + "…"


async def next_edit_round(engine: Engine, path: Path, text: str) -> None:
    """One round of next edits on the same file: change a function's signature as a user would, show the
    follow-ups the server finds, and accept them one by one (each accept asks again, as an editor does)."""
    from opportune.server.eval.nextedit import generate

    tasks = generate(str(path), text, per_kind=1)
    task = next((t for t in tasks if t.kind == "add_parameter"), None) or next(
        (t for t in tasks if t.kind in ("rename_function", "rename_parameter")), None
    )
    if task is None:
        print("\nnext edits: no function with call sites in this file to change")
        return
    uri = path.resolve().as_uri()
    engine.open(uri, text, "python", 1)
    doc = engine.workspace.document(uri)
    assert doc is not None
    a, b, new = task.first
    line = doc.line_of(a) + 1
    print(f"\nnext edits: at line {line}, {text[a:b]!r} becomes {new!r} ({task.kind.replace('_', ' ')})")
    engine.change(uri, 2, [(doc.position_at(a), doc.position_at(b), new)])
    for applied in range(12):  # bounded: each round applies one edit
        t0 = time.perf_counter()
        answer = await engine.next_edits.suggest(uri)
        ms = (time.perf_counter() - t0) * 1000
        here = [e for e in answer.edits if e.uri == uri]
        if not here:
            print(f"  {ms:6.0f} ms  {answer.reason or 'nothing left in this file'}")
            break
        edit = here[0]
        target = engine.workspace.document(edit.uri)
        if applied == 0:
            elsewhere = len(answer.edits) - len(here)
            print(
                f"  {ms:6.0f} ms  {edit.title}: {len(here)} follow-up edits here"
                + (f", {elsewhere} in other workspace files" if elsewhere else "")
            )
        result = engine.next_edits.accept(edit.edit_id)
        if result.apply is None or target is None:
            print(f"  not applied: {result.reason or 'outside the open document'}")
            break
        start, end = target.offset_at(edit.start), target.offset_at(edit.end)
        before = target.text[start:end]
        engine.change(edit.uri, target.version + 1, [(edit.start, edit.end, edit.plain_text)])
        engine.next_edits.applied(edit.edit_id, True)
        row = target.line_text(edit.start.line).strip()
        print(f"  line {edit.start.line + 1:4d}  {before!r} -> {edit.plain_text!r}   {_short(row, 50)}")
    engine.close(uri)


async def run_demo(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    path: Path = args.file or default_file()
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        print(f"opportune demo: cannot read {path}: {e.strerror}", file=sys.stderr)
        return 2
    tmp = None
    if "telemetry" not in overrides or "db" not in overrides.get("telemetry", {}):
        tmp = tempfile.TemporaryDirectory(prefix="opportune-demo-")
        overrides = {
            **overrides,
            "telemetry": {**overrides.get("telemetry", {}), "db": f"{tmp.name}/demo.db"},
        }
    options = {"telemetry": {"flushIntervalS": 0.2}, "clientName": "opportune-demo"}
    session = start_session(options, overrides=overrides, config_path=args.config, workspace=path.parent)
    engine = session.engine
    print(f"Opportune demo: loading the model ({session.settings.model.path or 'embedded Gemma 3 270M'})…")
    t0 = time.perf_counter()
    error = engine.load_backend()
    if error:
        session.close()
        raise BackendError(error)
    print(f"model {engine.model_id} ready in {time.perf_counter() - t0:.1f} s")
    start, end = choose_span(text, args.chars)
    line = text.count("\n", 0, start) + 1
    print(f"typing {end - start} characters of {path} from line {line} at {args.speed} keys/s\n")

    def shown(at: int, s: Suggestion, accepted: int) -> None:
        mark = f"accepted {accepted} chars" if accepted else "typed over"
        print(f"  {s.latency_ms:6.0f} ms  {s.source:5s}  {_short(s.text)!s:62s} {mark}")

    stats = await replay(
        engine,
        path.resolve().as_uri(),
        text,
        start,
        end,
        typing=TypingModel(keys_per_second=args.speed, seed=args.seed),
        language_id="python" if path.suffix == ".py" else "",
        on_shown=shown,
    )
    if path.suffix == ".py":
        await next_edit_round(engine, path, text)
    session.close()
    print()
    lat = stats.latencies_ms
    if lat:
        p95 = sorted(lat)[max(0, round(0.95 * len(lat)) - 1)]
        print(
            f"time to ghost text: p50 {statistics.median(lat):.0f} ms, p95 {p95:.0f} ms over {len(lat)} shown"
        )
    print(
        f"keystrokes {stats.keystrokes}, requests {stats.requests}, shown in time {stats.answered_in_time}, "
        f"accepted {stats.accepted} ({stats.accepted_chars} chars of {end - start})"
    )
    print()
    from opportune.server.reporting import store_report

    print(store_report([Path(session.settings.telemetry.db)]))
    if tmp is not None:
        tmp.cleanup()
    return 0
