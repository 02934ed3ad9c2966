"""Soak: typing at a steady rate into several documents through the real `opportune serve`, for a long time,
watching the server's memory and latency.

A person types real code (modules of Python's standard library: code nobody here wrote) at ``--rate`` keys
per second (10 by default), moving between ``--docs`` documents every couple of hundred characters, closing a
document and opening it afresh when its source runs out.  After every keystroke the client asks for an inline
completion, as VS Code does, and cancels the request still pending when the next key comes
(``$/cancelRequest``).  A suggestion that matches what is about to be typed is shown and accepted (the text
inserted in one edit, ``opportune.accept`` run), as an editor would.

Every ``--sample`` seconds the server's RSS (``VmRSS`` in /proc/<pid>/status) is read.  The report gives RSS at
start (after ``--warmup``), end and max, and per minute: keystrokes, answers, suggestions, cancellations,
latency p50/p95 and RSS.  At the end the telemetry store is checked against what was sent: every keystroke
that was an edit at the cursor must be an ``opportunity`` row (events lost to the store show here).  The
accepted suggestions are followed for persistence (``--persistence S,S``: short checkpoints make a short soak
exercise it); the report counts the ``persistence`` rows by status.

Run: ``cd /work/main && python -m bench.soak`` (real model, 30 minutes) or
``python -m bench.soak --backend fake --minutes 2``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import sqlite3
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fuzz_server import Response, end_position, raw_session, rss_kb
from opportune.telemetry.numbers import percentile

CORPUS = ("textwrap.py", "json/decoder.py", "shlex.py", "fractions.py", "difflib.py", "argparse.py")


def corpus_texts() -> list[tuple[str, str]]:
    """(name, source) of real modules of the running Python's standard library."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for name in CORPUS:
        path = stdlib / name
        with contextlib.suppress(OSError):
            texts.append((name, path.read_text(encoding="utf-8")))
    if not texts:
        raise SystemExit("no standard library sources found to type")
    return texts


def ms(values: list[float], q: float) -> float:
    """The ``q``-th percentile of latencies (the project's one definition), NaN for a minute without any."""
    p = percentile(values, q)
    return math.nan if p is None else p


@dataclass
class Minute:
    keystrokes: int = 0
    answered: int = 0
    suggestions: int = 0
    accepted: int = 0
    cancelled: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    rss_kb: int = 0

    def row(self, index: int) -> str:
        return (
            f"{index:>4} {self.keystrokes:>6} {self.answered:>6} {self.suggestions:>6} {self.accepted:>5} "
            f"{self.cancelled:>6} {ms(self.latencies_ms, 50):>8.1f} {ms(self.latencies_ms, 95):>8.1f} "
            f"{self.rss_kb / 1024:>8.1f}"
        )


@dataclass
class SoakReport:
    backend: str
    seconds: float
    rate: float
    minutes: list[Minute] = field(default_factory=list)
    rss_samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, kB)
    warmup_s: float = 30.0
    keystrokes: int = 0
    edits_at_cursor: int = 0  # keystrokes the server should count as opportunities
    opportunities_stored: int = -1
    unanswered: int = 0
    crashed: bool = False
    returncode: int | None = None
    behind_s: float = 0.0  # worst lateness of the typist's schedule (the client could not keep up)
    persistence_rows: dict[str, int] = field(default_factory=dict)  # status -> rows in the store

    @property
    def rss_start_kb(self) -> int:
        after = [kb for t, kb in self.rss_samples if t >= self.warmup_s]
        return after[0] if after else (self.rss_samples[0][1] if self.rss_samples else 0)

    @property
    def rss_end_kb(self) -> int:
        return self.rss_samples[-1][1] if self.rss_samples else 0

    @property
    def rss_max_kb(self) -> int:
        return max((kb for _, kb in self.rss_samples), default=0)

    @property
    def lost_events(self) -> int:
        return (
            max(0, self.edits_at_cursor - self.opportunities_stored) if self.opportunities_stored >= 0 else -1
        )

    def summary(self) -> str:
        lines = [
            f"soak: {self.backend} backend, {self.seconds / 60:.1f} min at {self.rate:g} keys/s, {self.keystrokes} keystrokes"
            + (f"; SERVER DIED (returncode {self.returncode})" if self.crashed else ""),
            f"RSS after {self.warmup_s:g} s warm-up {self.rss_start_kb / 1024:.1f} MB, end {self.rss_end_kb / 1024:.1f} MB, "
            f"max {self.rss_max_kb / 1024:.1f} MB (growth {(self.rss_end_kb - self.rss_start_kb) / 1024:+.1f} MB)",
            f"telemetry: {self.edits_at_cursor} edits at the cursor sent, {self.opportunities_stored} opportunities "
            f"stored ({self.lost_events} lost); requests never answered: {self.unanswered}; typist behind by at most "
            f"{self.behind_s * 1000:.0f} ms",
            "persistence rows: "
            + (", ".join(f"{n} {status}" for status, n in sorted(self.persistence_rows.items())) or "none"),
            " min   keys answd  sugg.  acc. cancel  p50(ms)  p95(ms)  RSS(MB)",
        ]
        lines += [m.row(i + 1) for i, m in enumerate(self.minutes)]
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "seconds": self.seconds,
            "keystrokes": self.keystrokes,
            "rss_start_kb": self.rss_start_kb,
            "rss_end_kb": self.rss_end_kb,
            "rss_max_kb": self.rss_max_kb,
            "edits_at_cursor": self.edits_at_cursor,
            "opportunities_stored": self.opportunities_stored,
            "unanswered": self.unanswered,
            "crashed": self.crashed,
            "persistence_rows": self.persistence_rows,
            "minutes": [
                {
                    "keystrokes": m.keystrokes,
                    "answered": m.answered,
                    "suggestions": m.suggestions,
                    "accepted": m.accepted,
                    "cancelled": m.cancelled,
                    "p50_ms": ms(m.latencies_ms, 50),
                    "p95_ms": ms(m.latencies_ms, 95),
                    "rss_kb": m.rss_kb,
                }
                for m in self.minutes
            ],
        }


@dataclass
class Typist:
    """One document being typed: the source to type, how far, the editor's text."""

    uri: str
    name: str
    source: str
    typed_to: int
    text: str
    version: int = 1

    @property
    def done(self) -> bool:
        return self.typed_to >= len(self.source)


async def run_soak(
    seconds: float = 1800.0,
    *,
    backend: str = "llama",
    rate: float = 10.0,
    docs: int = 4,
    switch_chars: int = 200,
    sample_s: float = 1.0,
    warmup_s: float = 30.0,
    seed: int = 1,
    db: Path | None = None,
    options: dict[str, Any] | None = None,
    progress: Any = None,
) -> SoakReport:
    rng = random.Random(seed)
    report = SoakReport(backend=backend, seconds=seconds, rate=rate, warmup_s=warmup_s)
    sources = corpus_texts()
    tmp = None
    env: dict[str, str] = {}
    if db is None:
        tmp = tempfile.TemporaryDirectory(prefix="opportune-soak-")
        db = Path(tmp.name) / "soak.db"
        env["XDG_STATE_HOME"] = str(Path(tmp.name) / "state")  # no install id left in the user's state
    opened = 0

    def fresh(slot: int) -> Typist:
        nonlocal opened
        opened += 1
        name, source = sources[(slot + opened) % len(sources)]
        # Start a little way in (the imports and docstring are there), at a line start.
        start = source.find("\n", rng.randrange(0, max(1, len(source) // 3))) + 1
        return Typist(
            f"file:///soak/{slot}/{opened}-{name.replace('/', '_')}", name, source, start, source[:start]
        )

    try:
        async with raw_session(db, backend, options, env=env) as server:
            typists: list[Typist] = []
            for slot in range(docs):
                t = fresh(slot)
                typists.append(t)
                await server.open(t.uri, t.text)
            loop = asyncio.get_running_loop()
            started = loop.time()
            pending: tuple[Any, asyncio.Task[Response]] | None = None
            tasks: set[asyncio.Task[None]] = set()
            current = 0
            since_switch = 0
            next_sample = 0.0
            key = 0

            def minute_at(t: float) -> Minute:
                index = int(t // 60)
                while len(report.minutes) <= index:
                    report.minutes.append(Minute())
                return report.minutes[index]

            async def wait_answer(
                rid: Any, task: asyncio.Task[Response], sent: float, typist: Typist, version: int
            ) -> None:
                try:
                    response = await task
                except (TimeoutError, asyncio.CancelledError):
                    report.unanswered += 1
                    return
                minute = minute_at(sent - started)
                message = response.message
                if "error" in message:
                    if message["error"].get("code") == -32800:  # RequestCancelled: we cancelled it
                        minute.cancelled += 1
                    return
                minute.answered += 1
                minute.latencies_ms.append(response.seconds * 1000)
                result = message.get("result")
                items = result.get("items") if isinstance(result, dict) else result
                if items:
                    minute.suggestions += 1
                    # Only while the editor is still where the request was made (no key typed since).
                    if typist.version == version and typist in typists:
                        await accept_if_right(typist, items[0], minute)

            async def accept_if_right(typist: Typist, item: dict[str, Any], minute: Minute) -> None:
                suggestion = item.get("insertText")
                if not isinstance(suggestion, str) or not suggestion.strip():
                    return
                completion_id = ((item.get("command") or {}).get("arguments") or [None])[0]
                upcoming = typist.source[typist.typed_to : typist.typed_to + len(suggestion)]
                if completion_id is not None:
                    await server.notify("opportune/didShowCompletion", {"id": completion_id})
                if upcoming != suggestion or typist.text != typist.source[: typist.typed_to]:
                    return
                # The editor inserts the suggestion in one edit and runs its command.
                at = end_position(typist.text)
                typist.version += 1
                typist.text += suggestion
                typist.typed_to += len(suggestion)
                await server.insert(typist.uri, typist.version, at, suggestion)
                if len(suggestion) == 1:  # one character: the server cannot tell it from typing
                    report.edits_at_cursor += 1
                if completion_id is not None:
                    await server.request(
                        "workspace/executeCommand",
                        {"command": "opportune.accept", "arguments": [completion_id]},
                        timeout=30,
                    )
                minute.accepted += 1

            while True:
                now = loop.time() - started
                if now >= seconds:
                    break
                if server.returncode is not None:
                    report.crashed, report.returncode = True, server.returncode
                    break
                if now >= next_sample:
                    kb = rss_kb(server.pid)
                    report.rss_samples.append((now, kb))
                    minute_at(now).rss_kb = kb
                    next_sample += sample_s
                    if progress and int(now) % 60 == 0 and len(report.rss_samples) > 1:
                        progress(f"{now / 60:.0f} min: {report.keystrokes} keys, RSS {kb / 1024:.0f} MB")
                # The typist's schedule: key k at k / rate seconds; a late client is measured, not hidden.
                due = key / rate
                if now < due:
                    await asyncio.sleep(min(due - now, max(0.0, next_sample - now)) or 0)
                    continue
                report.behind_s = max(report.behind_s, now - due)
                key += 1
                typist = typists[current]
                if typist.done or typist.text != typist.source[: typist.typed_to]:
                    await server.notify("textDocument/didClose", {"textDocument": {"uri": typist.uri}})
                    typist = typists[current] = fresh(current)
                    await server.open(typist.uri, typist.text)
                    continue
                ch = typist.source[typist.typed_to]
                at = end_position(typist.text)
                typist.version += 1
                typist.text += ch
                typist.typed_to += 1
                if pending is not None and not pending[1].done():
                    # The editor cancels the request of the previous keystroke.
                    await server.notify("$/cancelRequest", {"id": pending[0]})
                await server.insert(typist.uri, typist.version, at, ch)
                report.keystrokes += 1
                report.edits_at_cursor += 1
                minute_at(now).keystrokes += 1
                rid = server.next_id()
                future = await server.send_request_bytes(
                    rid,
                    _frame_completion(rid, typist.uri, end_position(typist.text)),
                )
                task = asyncio.ensure_future(asyncio.wait_for(future, 60))
                pending = (rid, task)
                waiter = asyncio.ensure_future(wait_answer(rid, task, loop.time(), typist, typist.version))
                tasks.add(waiter)
                waiter.add_done_callback(tasks.discard)
                since_switch += 1
                if since_switch >= switch_chars and ch == "\n":
                    since_switch = 0
                    current = (current + 1) % len(typists)
            if tasks:
                await asyncio.wait(tasks, timeout=60)
            report.seconds = loop.time() - started
            if server.returncode is not None:
                report.crashed, report.returncode = True, server.returncode
        # raw_session shut the server down: the store is flushed (close() flushes).
        report.opportunities_stored = _stored(db, "opportunity")
        report.persistence_rows = _by_status(db)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return report


def _frame_completion(rid: int, uri: str, position: dict[str, int]) -> bytes:
    from bench.fuzz_server import dumps, frame

    return frame(
        dumps(
            {
                "jsonrpc": "2.0",
                "id": rid,
                "method": "textDocument/inlineCompletion",
                "params": {"textDocument": {"uri": uri}, "position": position, "context": {"triggerKind": 2}},
            }
        )
    )


def _stored(db: Path, table: str) -> int:
    try:
        with sqlite3.connect(db) as conn:
            return int(conn.execute(f"select count(*) from {table}").fetchone()[0])
    except sqlite3.Error:
        return 0


def _by_status(db: Path) -> dict[str, int]:
    try:
        with sqlite3.connect(db) as conn:
            return {
                str(s): int(n) for s, n in conn.execute("select status, count(*) from persistence group by 1")
            }
    except sqlite3.Error:
        return {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--backend", choices=["llama", "fake"], default="llama")
    parser.add_argument("--rate", type=float, default=10.0, help="keystrokes per second")
    parser.add_argument("--docs", type=int, default=4)
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds before the RSS baseline")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--db", type=Path, help="telemetry store (default: a temporary file)")
    parser.add_argument(
        "--persistence",
        metavar="S,S",
        help="persistence checkpoints in seconds, or off (default: the server's, 30,120,600)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    options = (
        {
            "telemetry": {
                "persistenceCheckpointsS": []
                if args.persistence == "off"
                else [float(x) for x in args.persistence.split(",")]
            }
        }
        if args.persistence
        else None
    )
    report = asyncio.run(
        run_soak(
            args.minutes * 60,
            backend=args.backend,
            rate=args.rate,
            docs=args.docs,
            warmup_s=args.warmup,
            seed=args.seed,
            db=args.db,
            options=options,
            progress=lambda s: print(s, file=sys.stderr, flush=True),
        )
    )
    print(json.dumps(report.as_json(), indent=2) if args.json else report.summary())
    return 1 if report.crashed or report.unanswered else 0


if __name__ == "__main__":
    sys.exit(main())
