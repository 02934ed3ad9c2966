"""Telemetry says what the model saw: attempt rows carry the prompt's tokens per context source."""

from __future__ import annotations

import asyncio
from pathlib import Path

from opportune.server.backends.fake import FakeBackend, fake_tokens
from opportune.server.completion import Effective, Engine
from opportune.server.config import resolve
from opportune.server.documents import Document
from opportune.telemetry import events as ev
from opportune.telemetry import report
from opportune.telemetry.cpo import by_context_source
from opportune.telemetry.store import EventStore, open_events

URI = "file:///project/calc.py"
TEXT = "import math\n\n\ndef area(r):\n    return "


async def test_a_model_attempt_row_has_the_prompts_tokens_per_context_source() -> None:
    settings, errors = resolve({"completion": {"prewarm": False}, "model": {"backend": "fake"}})
    assert errors == []
    events: list[ev.Event] = []
    backend = FakeBackend(continuation=lambda _p: "math.pi * r ** 2\n")
    engine = Engine(lambda _s: backend, Effective(settings), record=events.append)
    engine.open(URI, TEXT, "python", 1)
    doc = Document(URI, TEXT)
    try:
        assert await engine.complete(URI, doc.position_at(len(TEXT)), invoked=True) is not None
        # The generation finishes (a still-running one answers as the model, not the cache).
        for _ in range(500):
            if engine.worker.live is None or engine.worker.live.done:
                break
            await asyncio.sleep(0.01)
        end = doc.position_at(len(TEXT))
        engine.change(URI, 2, [(end, end, "m")])  # typed into the suggestion: answered from the cache
        doc.apply(end, end, "m")
        assert await engine.complete(URI, doc.position_at(len(doc.text))) is not None
    finally:
        engine.shutdown()
    model, cache = [e for e in events if isinstance(e, ev.Attempt)]
    parts = dict(item.split(":") for item in model.context_parts.split(","))
    assert list(parts) == ["path", "window"]  # the cursor's function starts the window: no outline needed
    assert parts["path"] == str(len(fake_tokens("# calc.py\n")))
    assert model.prompt_tokens == sum(int(n) for n in parts.values()) > 0
    [response] = [e for e in events if isinstance(e, ev.Response) and e.attempt_id == model.attempt_id]
    assert model.reused_tokens == response.reused_tokens and model.prompt_tokens == response.prompt_tokens
    assert cache.source == "cache" and cache.context_parts == "" and cache.prompt_tokens == 0


async def test_the_report_breaks_prompts_down_by_context_source(tmp_path: Path) -> None:
    """Through a real SQLite store: two files typed in, one whose window needs the file's outline (a syntax
    part) and one that does not; the report shows tokens and acceptance per source."""
    settings, errors = resolve({"completion": {"prewarm": False}, "model": {"backend": "fake"}})
    assert errors == []
    db = tmp_path / "t.db"
    long_file = "import math\n\n\n" + "".join(f"def f{i}(x):\n    return x + {i}\n\n\n" for i in range(40))
    long_file += "def area(r):\n    return "
    with EventStore(db, flush_interval_s=3600) as store:
        engine = Engine(
            lambda _s: FakeBackend(continuation=lambda _p: "math.pi * r ** 2\n"),
            Effective(settings),
            record=store.record,
        )
        try:
            for uri, text in (("file:///p/a.py", TEXT), ("file:///p/b.py", long_file)):
                engine.open(uri, text, "python", 1)
                doc = Document(uri, text)
                suggestion = await engine.complete(uri, doc.position_at(len(text)), invoked=True)
                assert suggestion is not None
                if uri.endswith("a.py"):
                    engine.did_accept(suggestion.completion_id)
                else:
                    engine.did_reject(suggestion.completion_id, "dismissed")
        finally:
            engine.shutdown()
    sources = {s["source"]: s for s in by_context_source(open_events([db]))}
    assert sources["window"]["attempts"] == 2 and sources["window"]["acceptance_rate"] == 0.5
    assert sources["syntax"]["attempts"] == 1 and sources["syntax"]["acceptance_rate"] == 0.0
    assert sources["syntax"]["mean_tokens"] > 0
    text = report.render(report.build_report(open_events([db]), paths=[db]))
    assert "What the model saw: prompt tokens and acceptance by context source" in text
    assert any(line.split()[:2] == ["window", "2"] for line in text.splitlines())
