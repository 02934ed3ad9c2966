"""Persistence tracking: regions follow edits, checkpoints score what is left with rapidfuzz, unknown rows
for closed documents, shutdown and eviction; keystrokes saved; and the engine wiring on the fake backend."""

from __future__ import annotations

import asyncio
from typing import Any

from opportune.server.backends.fake import FakeBackend
from opportune.server.completion import Effective, Engine
from opportune.server.completion.persistence import PersistenceTracker, kept_fraction
from opportune.server.config import Settings, resolve
from opportune.server.documents import Document, Position
from opportune.telemetry import events as ev

COMMON = ev.Common("install", "session")
URI = "file:///p/calc.py"


class Doc:
    """A document edited by (line, col) ranges, forwarding each edit to the tracker."""

    def __init__(self, tracker: PersistenceTracker, text: str) -> None:
        self.tracker = tracker
        self.doc = Document(URI, text)

    def edit(self, start: int, end: int, text: str) -> None:
        edit = self.doc.apply(self.doc.position_at(start), self.doc.position_at(end), text)
        self.tracker.edited(URI, [edit])

    def text_of(self, uri: str) -> str | None:
        return self.doc.text if uri == URI else None


def tracker(
    checkpoints: tuple[float, ...] = (30.0, 120.0), **kw: Any
) -> tuple[PersistenceTracker, list[Any]]:
    rows: list[Any] = []
    return PersistenceTracker(list(checkpoints), rows.append, **kw), rows


def accept(t: PersistenceTracker, d: Doc, cid: str, at: int, text: str, now: float = 0.0) -> None:
    d.edit(at, at, text)
    t.accepted(cid, URI, at, text, d.doc.text, COMMON, now)


def measured(rows: list[Any]) -> dict[tuple[str, float], float]:
    return {(r.completion_id, r.checkpoint_s): r.fraction for r in rows if r.status == "measured"}


def test_kept_text_scores_one_deleted_text_zero_and_unrelated_code_near_zero() -> None:
    assert kept_fraction("return a + b", "return a + b") == 1.0
    assert kept_fraction("return a + b", "") == 0.0
    assert kept_fraction("return a + b", "print(other_value)") < 0.2


def test_reformatting_and_small_edits_keep_most_of_the_score() -> None:
    assert kept_fraction("total = sum(values)", "total=sum( values )") == 1.0
    assert kept_fraction("result.append(item)", "result.append(item.strip())") > 0.9
    assert 0.3 < kept_fraction("math.pi * radius ** 2", "math.pi * r * r") < 0.8


def test_region_shifts_with_edits_before_it_and_ignores_typing_after_it() -> None:
    t, rows = tracker()
    d = Doc(t, "def f(a, b):\n    ")
    accept(t, d, "c1", len(d.doc.text), "return a + b")
    d.edit(0, 0, "import os\n\n")  # before: shifts the region
    d.edit(len(d.doc.text), len(d.doc.text), "  # the sum")  # at its end edge: not part of it
    t.measure(30.0, d.text_of)
    assert measured(rows) == {("c1", 30.0): 1.0}
    assert rows[-1].kept_chars == len("return a + b")


def test_deleted_suggestion_scores_zero_even_when_retyped_differently() -> None:
    t, rows = tracker()
    d = Doc(t, "x = 1\n")
    accept(t, d, "c1", 6, "value = compute(x)")
    d.edit(6, 6 + len("value = compute(x)"), "")  # deleted
    d.edit(6, 6, "print(x)")  # something else typed in its place
    t.measure(200.0, d.text_of)
    assert measured(rows) == {("c1", 30.0): 0.0, ("c1", 120.0): 0.0}


def test_edit_inside_the_region_counts_what_is_left() -> None:
    t, rows = tracker((30.0,))
    d = Doc(t, "")
    accept(t, d, "c1", 0, "items = load_items(path)")
    d.edit(8, 18, "fetch")  # load_items -> fetch
    t.measure(31.0, d.text_of)
    fraction = measured(rows)[("c1", 30.0)]
    assert 0.5 < fraction < 0.9


def test_whole_document_replacement_by_a_formatter_keeps_the_region() -> None:
    t, rows = tracker((30.0,))
    d = Doc(t, "a=1\nb=2\n")
    accept(t, d, "c1", 8, "c = a + b\n")
    new = "a = 1\nb = 2\nc = a + b\n"
    edit = d.doc.apply(None, None, new)
    t.edited(URI, [edit])
    t.measure(31.0, d.text_of)
    assert measured(rows)[("c1", 30.0)] == 1.0


def test_accept_reported_before_the_text_arrives_waits_for_the_insertion() -> None:
    t, rows = tracker((30.0,))
    d = Doc(t, "x = ")
    t.accepted("c1", URI, 4, "compute(1)", d.doc.text, COMMON, 0.0)
    d.edit(4, 4, "compute(1)")
    t.measure(31.0, d.text_of)
    assert measured(rows)[("c1", 30.0)] == 1.0


def test_checkpoints_come_in_order_each_once() -> None:
    t, rows = tracker((30.0, 120.0, 600.0))
    d = Doc(t, "")
    accept(t, d, "c1", 0, "print('hello')")
    assert t.next_due() == 30.0
    assert t.measure(29.0, d.text_of) == 0
    assert t.measure(30.0, d.text_of) == 1
    assert t.next_due() == 120.0
    assert t.measure(700.0, d.text_of) == 2
    assert t.next_due() is None and len(t) == 0
    assert [r.status for r in rows] == ["tracking", "measured", "measured", "measured"]
    assert rows[0].checkpoints == "30,120,600"


def test_closing_the_document_or_stopping_the_server_records_unknown_not_lost() -> None:
    t, rows = tracker((30.0, 120.0))
    d = Doc(t, "")
    accept(t, d, "c1", 0, "alpha = 1")
    accept(t, d, "c2", len(d.doc.text), "\nbeta = 2")
    t.measure(30.0, d.text_of)
    t.closed(URI)
    unknown = [(r.completion_id, r.checkpoint_s, r.reason) for r in rows if r.status == "unknown"]
    assert unknown == [("c1", 120.0, "closed"), ("c2", 120.0, "closed")]
    t2, rows2 = tracker((30.0,))
    d2 = Doc(t2, "")
    accept(t2, d2, "c3", 0, "gamma = 3")
    t2.stop()
    assert [(r.status, r.reason) for r in rows2] == [("tracking", ""), ("unknown", "shutdown")]


def test_tracked_suggestions_are_bounded_and_the_evicted_are_unknown() -> None:
    t, rows = tracker((30.0,), max_tracked=3)
    d = Doc(t, "")
    for i in range(5):
        accept(t, d, f"c{i}", len(d.doc.text), f"line_{i} = {i}\n")
    assert len(t) == 3
    evicted = [(r.completion_id, r.reason) for r in rows if r.status == "unknown"]
    assert evicted == [("c0", "evicted"), ("c1", "evicted")]


def test_no_text_leaves_the_tracker_without_store_text() -> None:
    t, rows = tracker((30.0,))
    d = Doc(t, "")
    accept(t, d, "c1", 0, "secret_value = 1")
    t.measure(31.0, d.text_of)
    assert all(r.kept_text is None and r.prefix_text is None for r in rows)
    t2, rows2 = tracker((30.0,), store_text=True)
    d2 = Doc(t2, "def f():\n    ")
    accept(t2, d2, "c1", len(d2.doc.text), "return 1")
    t2.measure(31.0, d2.text_of)
    assert rows2[0].prefix_text == "def f():\n    " and rows2[-1].kept_text == "return 1"


# ---- the engine ----------------------------------------------------------------------------------------


def settings(**telemetry: Any) -> Settings:
    s, errors = resolve(
        {
            "completion": {"prewarm": False},
            "model": {"backend": "fake"},
            "telemetry": {"persistenceCheckpointsS": [0.2, 0.4], **telemetry},
        }
    )
    assert errors == []
    return s


class Typist:
    def __init__(self, engine: Engine, text: str) -> None:
        self.engine = engine
        self.doc = Document(URI, text)
        self.version = 1
        engine.open(URI, text, "python", 1)

    def edit(self, start: int, end: int, chars: str) -> None:
        a, b = self.doc.position_at(start), self.doc.position_at(end)
        self.doc.apply(a, b, chars)
        self.version += 1
        self.engine.change(URI, self.version, [(a, b, chars)])

    def type(self, chars: str) -> None:
        end = len(self.doc.text)
        self.edit(end, end, chars)

    async def complete(self) -> Any:
        return await self.engine.complete(URI, self.doc.position_at(len(self.doc.text)))


async def test_engine_measures_a_kept_and_a_deleted_suggestion_at_each_checkpoint() -> None:
    backend = FakeBackend(continuation=lambda p: "a * b\n" if "mul" in p else "a + b\n")
    events: list[ev.Event] = []
    engine = Engine(lambda _s: backend, Effective(settings()), record=events.append)
    t = Typist(engine, "def add(a, b):\n    return")
    t.type(" ")
    kept = await t.complete()
    assert kept is not None and kept.text == "a + b"
    t.type(kept.text)  # the client inserts it, then reports the accept
    engine.did_accept(kept.completion_id)
    t.type("\n\ndef mul(a, b):\n    return")
    t.type(" ")
    gone = await t.complete()
    assert gone is not None and gone.text == "a * b"
    t.type(gone.text)
    engine.did_accept(gone.completion_id)
    end = len(t.doc.text)
    t.edit(end - len(gone.text), end, "")  # deleted again
    await asyncio.sleep(0.7)
    rows = [e for e in events if isinstance(e, ev.Persistence) and e.status == "measured"]
    fractions = {(r.completion_id, r.checkpoint_s): r.fraction for r in rows}
    assert fractions == {
        (kept.completion_id, 0.2): 1.0,
        (kept.completion_id, 0.4): 1.0,
        (gone.completion_id, 0.2): 0.0,
        (gone.completion_id, 0.4): 0.0,
    }
    outcomes = [e for e in events if isinstance(e, ev.Outcome) and not e.inferred]
    # Five characters inserted by one accept: four keys saved.
    assert [o.keystrokes_saved for o in outcomes] == [4, 4]
    engine.shutdown()


async def test_typing_a_suggestion_through_saves_no_keystrokes() -> None:
    backend = FakeBackend(continuation=lambda _p: "a + b\n")
    events: list[ev.Event] = []
    engine = Engine(lambda _s: backend, Effective(settings()), record=events.append)
    t = Typist(engine, "def add(a, b):\n    return")
    t.type(" ")
    s = await t.complete()
    assert s is not None
    for ch in s.text:
        t.type(ch)
    outcomes = [e for e in events if isinstance(e, ev.Outcome)]
    assert [(o.outcome, o.accepted_chars, o.keystrokes_saved) for o in outcomes] == [("accepted", 5, 0)]
    engine.shutdown()


async def test_engine_shutdown_records_pending_checkpoints_as_unknown() -> None:
    backend = FakeBackend(continuation=lambda _p: "a + b\n")
    events: list[ev.Event] = []
    engine = Engine(
        lambda _s: backend, Effective(settings(persistenceCheckpointsS=[30, 60])), record=events.append
    )
    t = Typist(engine, "def add(a, b):\n    return")
    t.type(" ")
    s = await t.complete()
    assert s is not None
    t.type(s.text)
    engine.did_accept(s.completion_id)
    engine.shutdown()
    rows = [(e.status, e.checkpoint_s, e.reason) for e in events if isinstance(e, ev.Persistence)]
    assert rows == [("tracking", 0.0, ""), ("unknown", 30.0, "shutdown"), ("unknown", 60.0, "shutdown")]


def test_checkpoint_settings_are_validated() -> None:
    s, errors = resolve({"telemetry": {"persistenceCheckpointsS": [600, 30]}})
    assert errors == [] and s.telemetry.persistence_checkpoints_s == [30.0, 600.0]
    s, errors = resolve({"telemetry": {"persistenceCheckpointsS": [0.001]}})
    assert errors and s.telemetry.persistence_checkpoints_s == [30.0, 120.0, 600.0]
    s, errors = resolve({"telemetry": {"persistenceCheckpointsS": "often"}})
    assert errors and s.telemetry.persistence_checkpoints_s == [30.0, 120.0, 600.0]
    assert Position(0, 0)  # (documents' positions are what the engine sees)


# ---- the analysis --------------------------------------------------------------------------------------


def _rows(now: float = 1000.0) -> list[ev.Event]:
    from opportune.telemetry.persistence import GRACE_S

    del GRACE_S
    c = ev.Common("i1", "s1", language="python")
    return [
        ev.Opportunity(c, "o1", "d", "insert", ts=now),
        ev.Opportunity(c, "o2", "d", "insert", ts=now),
        ev.Outcome(c, "kept", "accepted", accepted_chars=10, accepted_tokens=3, keystrokes_saved=9, ts=now),
        ev.Outcome(c, "gone", "accepted", accepted_chars=10, accepted_tokens=3, keystrokes_saved=9, ts=now),
        ev.Persistence(c, "kept", "tracking", checkpoints="30,120", accepted_chars=10, ts=now),
        ev.Persistence(c, "gone", "tracking", checkpoints="30,120", accepted_chars=10, ts=now),
        ev.Persistence(
            c, "kept", "measured", 30.0, accepted_chars=10, kept_chars=10, fraction=1.0, ts=now + 30
        ),
        ev.Persistence(
            c, "gone", "measured", 30.0, accepted_chars=10, kept_chars=0, fraction=0.0, ts=now + 30
        ),
        # Then the server was killed: no row for the 120 s checkpoint.
    ]


def test_a_checkpoint_missed_by_a_killed_server_is_pending_then_unknown_never_lost() -> None:
    from opportune.telemetry.frames import EventFrames
    from opportune.telemetry.persistence import GRACE_S, checkpoint_table, survival

    frames = EventFrames.from_events(_rows())
    soon = checkpoint_table(frames, now=1000 + 125)
    assert sorted(zip(soon["completion_id"], soon["checkpoint_s"], soon["status"], strict=True)) == [
        ("gone", 30.0, "measured"),
        ("gone", 120.0, "pending"),
        ("kept", 30.0, "measured"),
        ("kept", 120.0, "pending"),
    ]
    later = checkpoint_table(frames, now=1000 + 120 + GRACE_S + 1)
    assert set(later.loc[later["checkpoint_s"] == 120.0, "status"]) == {"unknown"}
    assert set(later.loc[later["checkpoint_s"] == 120.0, "reason"]) == {"stopped"}
    curve = survival(frames, now=1000 + 10_000)
    assert curve["checkpoint_s"].tolist() == [30.0, 120.0]
    assert curve["survival"].iloc[0] == 0.5 and curve["unknown"].iloc[1] == 2
    assert curve["survival"].isna().iloc[1]  # nothing measured at 120 s: unknown, not 0


def test_report_shows_persisted_cpo_and_keystrokes_saved_beside_cpo() -> None:
    from opportune.telemetry.frames import EventFrames
    from opportune.telemetry.numbers import DASH
    from opportune.telemetry.report import build_report, render

    report = build_report(EventFrames.from_events(_rows()), now=1000 + 10_000)
    group = report["groups"][0]
    assert group["factors"]["cpo"] == 10.0  # 20 accepted chars over 2 opportunities
    assert group["follow_up"]["persistence"] == 0.5  # at the last measured checkpoint (30 s)
    assert group["follow_up"]["persisted_cpo"] == 5.0
    assert group["follow_up"]["keystrokes_saved_per_opportunity"] == 9.0
    text = render(report)
    assert "persisted CPO" in text and "50.0% (2 measured, 0 unknown, 0 pending)" in text
    assert f"{DASH} (0 measured, 2 unknown, 0 pending)" in text


def test_memory_stays_bounded_however_many_suggestions_are_accepted() -> None:
    from bench.persistence import memory

    m = memory(3000, 256)
    assert m["followed"] == 256  # the bound: the oldest are recorded unknown (evicted), not kept
    assert m["bytes_per_followed"] < 4096, m


def test_a_store_from_before_persistence_is_migrated_and_reads_zero_keystrokes(tmp_path: Any) -> None:
    import sqlite3

    from opportune.telemetry.store import SCHEMA_VERSION, EventStore, open_events

    db = tmp_path / "old.db"
    c = ev.Common("i", "s")
    with EventStore(db) as store:
        store.record(ev.Outcome(c, "old", "accepted", accepted_chars=5))
    with sqlite3.connect(db) as conn:  # as a store of schema 1 looked
        conn.execute("DROP TABLE persistence")
        conn.execute("ALTER TABLE outcome DROP COLUMN keystrokes_saved")
        conn.execute("DELETE FROM schema_version WHERE version > 1")
    with EventStore(db) as store:
        store.record(ev.Persistence(c, "new", "measured", 30.0, accepted_chars=4, kept_chars=4, fraction=1.0))
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION >= 2
        assert conn.execute("SELECT keystrokes_saved FROM outcome").fetchall() == [(0,)]
        columns = {row[1]: row[2] for row in conn.execute("PRAGMA table_info(persistence)")}
    assert columns["fraction"] == "FLOAT" and columns["kept_chars"] == "INTEGER"  # typed, not guessed
    frames = open_events([db])
    assert frames["persistence"]["fraction"].tolist() == [1.0]
