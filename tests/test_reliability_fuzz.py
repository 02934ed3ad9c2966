"""A seeded slice of the protocol fuzzer (bench/fuzz_server.py) against the real `opportune serve` over stdio,
fake backend: 1,000 hostile messages (malformed JSON-RPC, unknown methods, edits to unopened documents,
version skew, ranges past the end and reversed, lone surrogates, emoji and combining marks at the cursor,
10 MB lines, 5,000 nested brackets, cancellations of unknown ids, bursts of interleaved completions, hostile
settings, a second initialize).

Asserted: the process never dies; every well-formed request gets a well-formed result or JSON-RPC error
within 5 s; nothing is answered that was not asked; stdout stays clean JSON-RPC; and a final ordinary
completion still gets the right suggestion.  The full run is `python -m bench.fuzz_server --messages 10000`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.fuzz_server import run_fuzz

pytestmark = pytest.mark.e2e

BOUND_S = 5.0


async def test_a_thousand_hostile_messages_leave_the_server_answering(tmp_path: Path) -> None:
    report = await run_fuzz(1000, seed=1, backend="fake", bound_s=BOUND_S, db=tmp_path / "fuzz.db")
    print(report.summary())
    assert report.messages == 1000
    assert report.requests > 300, "too few requests to mean anything"
    assert report.crashes == 0, report.final_detail
    assert not report.failures, "\n".join(report.failures)


async def test_a_slice_of_hostile_messages_with_the_real_model(tmp_path: Path) -> None:
    """The same generator against llama.cpp and the embedded model: the model's own paths (loading, the KV
    cache, cancellation between prefill chunks) under the same input.  Bound 10 s: answers come at the
    completion deadline whatever the model does."""
    report = await run_fuzz(200, seed=2, backend="llama", bound_s=10.0, db=tmp_path / "fuzz.db")
    print(report.summary())
    assert report.crashes == 0, report.final_detail
    assert not report.failures, "\n".join(report.failures)
