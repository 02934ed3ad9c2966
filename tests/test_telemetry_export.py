"""``opportune export``: NDJSON / Parquet rows with the documented schema, and the round trip back."""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from opportune.telemetry import export
from opportune.telemetry.events import Attempt, Common, Event, Opportunity, Outcome, Response, Shown
from opportune.telemetry.report import build_report
from opportune.telemetry.schema import COLUMNS, KINDS
from opportune.telemetry.simulate import ArmTruth, simulate_units, units_to_frames
from opportune.telemetry.store import EventStore, open_events


def record(path: Path, events: list[Event], store_text: bool = False) -> Path:
    with EventStore(path, flush_interval_s=3600, store_text=store_text) as store:
        for event in events:
            store.record(event)
    return path


def sample_events() -> list[Event]:
    c = Common("i1", "s1", experiment="e", arm="A", language="python", model_id="m", client="nvim 0.11")
    return [
        Opportunity(c, opportunity_id="o1", document_hash="h", edit_kind="insert", ts=1.0),
        Attempt(c, attempt_id="a1", opportunity_id="o1", source="model", prompt_text="secret prompt", ts=2.0),
        Response(
            c,
            attempt_id="a1",
            latency_first_ms=None,
            latency_total_ms=120.5,
            generated_tokens=4,
            stop_reason="eol",
            chars=11,
            lines=1,
            completion_id="c1",
            completion_text="secret completion",
            stages_ms='{"model": 100.0}',
            ts=3.0,
        ),
        Shown(c, completion_id="c1", attempt_id="a1", inferred=True, ts=4.0),
        Outcome(c, completion_id="c1", outcome="partial", accepted_chars=6, accepted_tokens=2, ts=5.0),
    ]


def experiment_stores(tmp_path: Path) -> list[Path]:
    """Two stores (two groups of installs) of a simulated experiment."""
    rng = np.random.default_rng(0)
    arms = {"control": ArmTruth(), "b": ArmTruth(acceptance_rate=0.3)}
    frames = units_to_frames(
        simulate_units(arms, 20, rng, opportunities_mean=15), rng, experiment="x", arms=arms
    )
    events = frames.to_events()
    half = len(events) // 2
    return [record(tmp_path / "one.db", events[:half]), record(tmp_path / "two.db", events[half:])]


def reports_equal_after_round_trip(stores: list[Path], exported: Path) -> None:
    original = open_events(stores)
    reloaded = export.load_export(exported)
    assert reloaded.counts() == original.counts()
    for kwargs in (
        {},
        {"by": "arm"},
        {"by": "language"},
        {"experiment": "x", "weights": {"control": 1, "b": 1}},
    ):
        assert build_report(reloaded, **kwargs) == build_report(original, **kwargs)


def test_ndjson_round_trip_gives_the_same_report(tmp_path: Path) -> None:
    stores = experiment_stores(tmp_path)
    out = tmp_path / "events.ndjson"
    n = export.export_events(open_events(stores), out, "ndjson")
    lines = out.read_text().splitlines()
    assert n == len(lines) == len(open_events(stores))
    reports_equal_after_round_trip(stores, out)


def test_ndjson_rows_follow_the_schema(tmp_path: Path) -> None:
    db = record(tmp_path / "t.db", sample_events())
    out = tmp_path / "e.ndjson"
    export.export_events(open_events([db]), out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["kind"] for r in rows] == ["opportunity", "attempt", "response", "shown", "outcome"]
    for row in rows:
        assert list(row) == ["kind", *(c.name for c in COLUMNS[row["kind"]])]
    shown = rows[3]
    assert shown["inferred"] is True  # a JSON boolean for the warehouse
    assert rows[2]["latency_first_ms"] is None and rows[2]["latency_total_ms"] == 120.5
    assert rows[1]["prompt_text"] is None and rows[2]["completion_text"] is None  # privacy by default
    assert rows[0]["client"] == "nvim 0.11"


def test_import_events_gives_back_the_recorded_events(tmp_path: Path) -> None:
    events = sample_events()
    db = record(tmp_path / "t.db", events, store_text=True)
    out = tmp_path / "e.ndjson"
    export.export_events(open_events([db]), out)
    assert export.import_events(out) == events


def test_every_column_is_documented() -> None:
    doc = export.__doc__ or ""
    for kind in KINDS:
        assert kind in doc
        for col in COLUMNS[kind]:
            assert col.name in doc, f"{kind}.{col.name} is not in the export schema docstring"


def test_parquet_round_trip(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    stores = experiment_stores(tmp_path)
    out = tmp_path / "events.parquet"
    n = export.export_events(open_events(stores), out, "parquet")
    table = pq.read_table(out)
    assert table.num_rows == n
    assert table.column_names[0] == "kind"
    assert str(table.schema.field("inferred").type) == "bool"
    assert str(table.schema.field("ts").type) == "double"
    reports_equal_after_round_trip(stores, out)
    events = sample_events()
    db = record(tmp_path / "s.db", events, store_text=True)
    export.export_events(open_events([db]), tmp_path / "s.parquet", "parquet")
    assert export.import_events(tmp_path / "s.parquet") == events


def test_parquet_without_pyarrow_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    db = record(tmp_path / "t.db", sample_events())
    with pytest.raises(export.ExportError, match="pip install pyarrow"):
        export.export_events(open_events([db]), tmp_path / "e.parquet", "parquet")
    args = argparse.Namespace(db=[db], since=None, format="parquet", out=str(tmp_path / "e.parquet"))
    err = io.StringIO()
    assert export.run(args, err=err) == 2
    assert err.getvalue().count("\n") == 1 and "pip install pyarrow" in err.getvalue()


def test_cli_run_merges_stores_and_reports_errors(tmp_path: Path) -> None:
    p = argparse.ArgumentParser()
    export.add_arguments(p)
    stores = experiment_stores(tmp_path)
    out = tmp_path / "all.ndjson"
    argv = ["--db", str(stores[0]), "--db", str(stores[1]), "--db", str(stores[0]), "--out", str(out)]
    err = io.StringIO()
    assert export.run(p.parse_args(argv), err=err) == 0
    assert len(out.read_text().splitlines()) == len(open_events(stores))  # the repeated store counted once
    assert "exported" in err.getvalue()

    err = io.StringIO()
    assert export.run(p.parse_args(["--db", str(tmp_path / "none.db"), "--out", str(out)]), err=err) == 2
    assert err.getvalue().startswith("opportune export: error: no telemetry store at")


def test_import_rejects_what_is_not_an_export(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"kind": "opportunity", "event_id": "x", "ts": 1}\nnot json\n')
    with pytest.raises(export.ExportError, match=r"bad\.ndjson:2: not JSON"):
        export.load_export(bad)
    bad.write_text('{"kind": "weather"}\n')
    with pytest.raises(export.ExportError, match="unknown 'kind'"):
        export.import_events(bad)
