"""The event store: batched writes, WAL, schema versions, failure handling, privacy, crash safety, reading."""

from __future__ import annotations

import logging
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from opportune.telemetry.events import Attempt, Common, Opportunity, Outcome, Response, Shown
from opportune.telemetry.store import (
    SCHEMA_VERSION,
    EventStore,
    NullStore,
    StoreError,
    default_db_path,
    open_events,
)

ROOT = Path(__file__).resolve().parents[1]
COMMON = Common("install-1", "session-1", experiment="exp", arm="A", language="python", model_id="m")


def opportunity(i: int, common: Common = COMMON) -> Opportunity:
    return Opportunity(
        common, opportunity_id=f"o{i}", document_hash="h", edit_kind="insert", event_id=f"e{i:08d}"
    )


def count(path: Path, table: str) -> int:
    """Rows in a table (0 while the store or the table does not exist yet)."""
    if not path.exists():
        return 0
    with closing(sqlite3.connect(path)) as conn:
        try:
            return int(conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0])
        except sqlite3.OperationalError:
            return 0


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_rows_are_flat_typed_and_written_in_wal_mode(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    with EventStore(db, flush_interval_s=3600) as store:
        store.record(
            Shown(COMMON, completion_id="c1", attempt_id="a1", inferred=True, event_id="s1", ts=12.5)
        )
        assert store.flush()
        assert store.stats.written == 1
    with closing(sqlite3.connect(db)) as conn:
        conn.row_factory = sqlite3.Row
        row = dict(conn.execute("SELECT * FROM shown").fetchone())
        journal_mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert row == {
        "event_id": "s1",
        "ts": 12.5,
        "install_id": "install-1",
        "session_id": "session-1",
        "experiment": "exp",
        "arm": "A",
        "arm_digest": "",
        "model_id": "m",
        "language": "python",
        "client": "",
        "completion_id": "c1",
        "attempt_id": "a1",
        "inferred": 1,
    }
    assert journal_mode == "wal"
    assert version == SCHEMA_VERSION
    # Every kind has its table from the first open, so readers never meet a half-made store.
    assert {"edit", "opportunity", "skip", "attempt", "response", "shown", "outcome"} <= tables


def test_background_writer_flushes_without_being_asked(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    store = EventStore(db, flush_interval_s=0.05)
    try:
        for i in range(100):
            store.record(opportunity(i))
        assert wait_for(lambda: count(db, "opportunity") == 100)
    finally:
        store.close()


def test_store_is_created_at_start_off_the_callers_thread(tmp_path: Path) -> None:
    db = tmp_path / "deep" / "dir" / "t.db"
    store = EventStore(db, flush_interval_s=3600)
    try:
        assert wait_for(lambda: count(db, "schema_version") == SCHEMA_VERSION)
        assert len(open_events([db])) == 0  # a report right after start-up finds an empty store
    finally:
        store.close()


def test_close_flushes_and_later_records_are_dropped_not_raised(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    store = EventStore(db, flush_interval_s=3600)
    store.record(opportunity(1))
    store.close()
    assert count(db, "opportunity") == 1
    store.record(opportunity(2))  # after close: counted, never written, never raised
    store.close()  # idempotent
    assert store.stats.dropped == 1
    assert count(db, "opportunity") == 1


def test_rewriting_a_batch_does_not_duplicate_rows(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    with EventStore(db, flush_interval_s=3600) as store:
        store.record(opportunity(1))
        store.flush()
        store.record(opportunity(1))  # the same event_id again, as a retried batch would
        assert store.flush()
    assert count(db, "opportunity") == 1


@pytest.mark.parametrize("store_text", [False, True])
def test_text_never_reaches_the_file_unless_opted_in(tmp_path: Path, store_text: bool) -> None:
    secret_prompt = "PROMPT-4f1d9c-do-not-store"
    secret_completion = "COMPLETION-8e2b77-do-not-store"
    db = tmp_path / "t.db"
    store = EventStore(db, flush_interval_s=3600, store_text=store_text)
    store.record(
        Attempt(COMMON, attempt_id="a1", opportunity_id="o1", source="model", prompt_text=secret_prompt)
    )
    store.record(
        Response(
            COMMON,
            attempt_id="a1",
            latency_first_ms=10.0,
            latency_total_ms=40.0,
            generated_tokens=3,
            stop_reason="eol",
            chars=12,
            lines=1,
            completion_id="c1",
            completion_text=secret_completion,
        )
    )
    assert store.flush()

    def raw_bytes() -> bytes:
        # The database and its WAL and shared-memory files, byte for byte.
        return b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("t.db"))

    before_close = raw_bytes()
    store.close()
    after_close = raw_bytes()
    for blob in (before_close, after_close):
        assert (secret_prompt.encode() in blob) is store_text
        assert (secret_completion.encode() in blob) is store_text
    frames = open_events([db])
    expected = secret_prompt if store_text else None
    assert frames.attempts["prompt_text"].tolist() == [expected]


def test_locked_database_buffers_then_writes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "t.db"
    store = EventStore(db, flush_interval_s=3600)
    store.record(opportunity(0))
    assert store.flush()

    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # another process holding the write lock
    try:
        for i in range(1, 4):
            store.record(opportunity(i))
        with caplog.at_level(logging.WARNING, logger="opportune.telemetry.store"):
            assert store.flush() is False  # logged, not raised
        assert any("failed" in r.message and "3 events kept" in r.message for r in caplog.records)
        stats = store.stats
        assert stats.pending == 3
        assert stats.failed_flushes == 1
        assert stats.last_error is not None and "locked" in stats.last_error
    finally:
        locker.execute("ROLLBACK")
        locker.close()

    assert store.flush()
    store.close()
    assert count(db, "opportunity") == 4
    assert store.stats.dropped == 0


def test_background_writer_retries_after_the_lock_is_released(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    store = EventStore(db, flush_interval_s=0.05)
    try:
        store.record(opportunity(0))
        assert wait_for(lambda: store.stats.written == 1)
        locker = sqlite3.connect(db, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        for i in range(1, 6):
            store.record(opportunity(i))
        assert wait_for(lambda: store.stats.failed_flushes >= 1)
        assert count(db, "opportunity") == 1  # readers still see the old state
        locker.execute("ROLLBACK")
        locker.close()
        assert wait_for(lambda: count(db, "opportunity") == 6)
    finally:
        store.close()


def test_buffer_is_bounded_dropping_the_oldest(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    store = EventStore(db, flush_interval_s=3600, max_buffer=10)
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        for i in range(25):
            store.record(opportunity(i))
        assert store.flush() is False
        assert store.stats.dropped == 15
        assert store.stats.pending == 10
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    store.close()
    ids = sorted(open_events([db]).opportunities["opportunity_id"])
    assert ids == sorted(f"o{i}" for i in range(15, 25))  # the newest survive


def test_corrupt_file_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "t.db"
    db.write_bytes(b"this is not a database, " * 200)
    store = EventStore(db, flush_interval_s=3600)
    store.record(opportunity(1))
    with caplog.at_level(logging.WARNING, logger="opportune.telemetry.store"):
        assert store.flush() is False
        store.close()
    assert store.stats.dropped == 1
    assert any("lost" in r.message for r in caplog.records)
    with pytest.raises(StoreError, match="not a readable telemetry store"):
        open_events([db])


def test_unwritable_location_is_logged_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should be")
    store = EventStore(blocker / "sub" / "t.db", flush_interval_s=3600)
    store.record(opportunity(1))
    assert store.flush() is False
    store.close()
    assert store.stats.last_error is not None


_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from opportune.telemetry.events import Common, Opportunity
    from opportune.telemetry.store import EventStore

    store = EventStore(Path(sys.argv[1]), flush_interval_s=0.01)
    common = Common("install-k", "session-k")
    i = 0

    def burst(n):
        global i
        for _ in range(n):
            store.record(Opportunity(common, opportunity_id=f"o{i}", document_hash="h", edit_kind="insert",
                                     event_id=f"e{i:08d}"))
            i += 1

    burst(2000)
    assert store.flush()
    print(f"flushed {i}", flush=True)
    while True:  # keep the writer thread busy committing batches until killed
        burst(300)
        time.sleep(0.002)
    """
)


@pytest.mark.parametrize("delay_s", [0.0, 0.05, 0.2])
def test_sigkill_mid_write_leaves_a_clean_store_with_every_flushed_event(
    tmp_path: Path, delay_s: float
) -> None:
    db = tmp_path / "killed.db"
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(db)],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.startswith("flushed "), line
        flushed = int(line.split()[1])
        time.sleep(delay_s)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        ids = {r[0] for r in conn.execute("SELECT event_id FROM opportunity")}
    assert {f"e{i:08d}" for i in range(flushed)} <= ids
    # Whatever else got in is whole events, numbered without gaps before the last committed batch.
    assert len(ids) >= flushed
    # The read API and a new writer open it cleanly after the crash.
    assert len(open_events([db]).opportunities) == len(ids)
    with EventStore(db, flush_interval_s=3600) as store:
        store.record(opportunity(10**7, Common("install-k", "session-2")))
        assert store.flush()


def test_open_events_merges_stores_without_double_counting(tmp_path: Path) -> None:
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    with EventStore(a, flush_interval_s=3600) as store:
        for i in range(5):
            store.record(opportunity(i))
    with EventStore(b, flush_interval_s=3600) as store:
        for i in range(3, 8):  # o3 and o4 are in both files (a copied store)
            store.record(opportunity(i))
        store.record(Outcome(COMMON, completion_id="c1", outcome="accepted", accepted_chars=4, event_id="x1"))
    frames = open_events([a, b, a])
    assert sorted(frames.opportunities["opportunity_id"]) == [f"o{i}" for i in range(8)]
    assert len(frames.outcomes) == 1
    assert len(frames) == 9


def test_open_events_tolerates_empty_and_older_stores(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()  # a valid SQLite file with no tables at all
    old = tmp_path / "old.db"
    with closing(sqlite3.connect(old)) as conn, conn:
        # A store from before Response gained prompt_tokens / reused_tokens, with no schema_version.
        conn.execute(
            "CREATE TABLE response (event_id TEXT PRIMARY KEY, ts FLOAT, install_id TEXT, session_id TEXT,"
            " attempt_id TEXT, latency_first_ms FLOAT, latency_total_ms FLOAT, generated_tokens INTEGER,"
            " stop_reason TEXT, chars INTEGER, lines INTEGER, loss_reason TEXT)"
        )
        conn.execute(
            "INSERT INTO response VALUES ('r1', 1.0, 'i', 's', 'a1', NULL, 80.0, 4, 'eol', 10, 1, NULL)"
        )
    frames = open_events([empty, old])
    assert len(frames.opportunities) == 0
    row = frames.responses.iloc[0]
    assert row["latency_total_ms"] == 80.0
    assert row["prompt_tokens"] == 0 and row["experiment"] == "" and row["completion_id"] is None

    # Writing to the old store migrates it and adds the missing columns.
    with EventStore(old, flush_interval_s=3600) as store:
        store.record(
            Response(
                COMMON,
                attempt_id="a2",
                latency_first_ms=None,
                latency_total_ms=50.0,
                generated_tokens=2,
                stop_reason="eol",
                chars=5,
                lines=1,
                prompt_tokens=99,
            )
        )
        assert store.flush()
    with closing(sqlite3.connect(old)) as conn:
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    assert sorted(open_events([old]).responses["prompt_tokens"]) == [0, 99]


def test_open_events_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no telemetry store at"):
        open_events([tmp_path / "missing.db"])
    with pytest.raises(StoreError, match="is not a file"):
        open_events([tmp_path])


def test_open_events_since_filters_in_sql(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    with EventStore(db, flush_interval_s=3600) as store:
        for i, ts in enumerate([100.0, 200.0, 300.0]):
            store.record(
                Opportunity(COMMON, opportunity_id=f"o{i}", document_hash="h", edit_kind="insert", ts=ts)
            )
    assert sorted(open_events([db], since=200.0).opportunities["ts"]) == [200.0, 300.0]


def test_default_db_path_is_in_the_user_state_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
        assert default_db_path() == tmp_path / "state" / "opportune" / "telemetry.db"
    assert default_db_path().name == "telemetry.db"
    assert "opportune" in default_db_path().parts


def test_null_store_has_the_same_interface() -> None:
    with NullStore() as store:
        store.record(opportunity(1))
        assert store.flush() is True
    assert store.stats.written == 0


def test_record_is_thread_safe(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    store = EventStore(db, flush_interval_s=0.01)

    def produce(k: int) -> None:
        for i in range(500):
            store.record(opportunity(k * 1000 + i))

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.close()
    assert count(db, "opportunity") == 2000
    assert store.stats.dropped == 0


def _can_mount_read_only() -> bool:
    import shutil
    import subprocess

    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-r", "-m", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_read_only(), reason="needs unshare (user and mount namespaces)")
def test_report_export_and_dashboard_read_a_store_on_a_read_only_mount(tmp_path: Path) -> None:
    """mode=ro wants to create the WAL's -shm file beside the store: on a read-only mount `report`,
    `export` and `dashboard` failed with "unable to open database file"."""
    import os
    import shlex
    import subprocess
    import sys

    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "t.db"
    with EventStore(db, flush_interval_s=0.05) as store:
        for i in range(5):
            store.record(opportunity(i))
    out = tmp_path / "out"
    out.mkdir()
    python = shlex.quote(sys.executable)
    commands = [
        f"{python} -m opportune.server.cli report --db {db} --json",
        f"{python} -m opportune.server.cli export --db {db} --format ndjson --out -",
        f"{python} -m opportune.server.cli dashboard --db {db} --export {out}/page.html",
    ]
    for command in commands:
        script = f"mount --bind -o ro {folder} {folder} && {command}"
        done = subprocess.run(
            ["unshare", "-r", "-m", "sh", "-c", script],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            cwd=str(ROOT),
        )
        assert done.returncode == 0, f"{command}\n{done.stderr[-2000:]}"
    assert (out / "page.html").stat().st_size > 0
