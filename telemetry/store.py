"""The event store: one SQLite file written off the request path, and the read API over one or more files.

Writing.  ``EventStore.record`` only appends the event to an in-memory buffer under a lock, so the
completion path never waits on the disk.  A background thread flushes the buffer every
``flush_interval_s`` in one transaction (``BEGIN IMMEDIATE``), one table per event kind (named after ``Event.kind``; columns as in ``opportune.telemetry.schema``).  The file is in WAL mode with
``synchronous=NORMAL``: a committed batch survives the process being killed; only a power cut or an OS
crash can lose the last commits.  A write that fails (locked database, disk full, read-only file,
corrupt file) is logged, the batch goes back to the buffer, and the next interval retries it; the
buffer is bounded (``max_buffer``): beyond it the oldest events are dropped and counted
(``stats.dropped``).  Nothing here raises into the caller.

How much a crash can lose: a SIGKILL loses the events recorded since the last successful flush, which
is at most ``flush_interval_s`` (1 s by default) of events while the disk is healthy, or up to
``max_buffer`` events while writes are failing.  A batch interrupted mid-transaction is rolled back by
SQLite on the next open, whole, and never half-written; the file always opens cleanly.  ``close()``
flushes, so a clean shutdown loses nothing.

Privacy.  Unless ``store_text`` is true, every ``*_text`` field is written as NULL: the text never
reaches the file.  Events carry no file paths (documents are identified by a salted hash).

Schema versions.  The ``schema_version`` table lists the migrations applied; ``MIGRATIONS`` holds them
in order and a store is brought up to date when it is opened for writing.  A field added to an event
later needs no migration to be written (the writer adds a missing column, or creates the table of a new
kind) but should get one if old rows need a value other than NULL.

The standard library's ``sqlite3`` does the writing: sqlite-utils imported pandas whenever it was
installed, and the language server, which records events from its first keystroke, must start without it.

Reading.  ``open_events(paths)`` opens each file read-only (``mode=ro``), loads every event table
(a missing table is an empty one), and merges the stores, keeping each ``event_id`` once, so that the
same store given twice, or copies that overlap, are not counted twice.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import platformdirs

from opportune.telemetry.events import EVENT_TYPES, Event
from opportune.telemetry.schema import COLUMNS, KINDS, Column, column_names, event_to_row

if TYPE_CHECKING:
    from opportune.telemetry.frames import EventFrames

logger = logging.getLogger(__name__)

# How long one write waits for another writer's lock before the batch is put back for the next
# interval.  Short, because close() runs this on the shutdown path.
BUSY_TIMEOUT_S = 0.5
DB_FILENAME = "telemetry.db"


class StoreError(Exception):
    """A store could not be read: missing, not SQLite, or corrupt.  The message is one line for people."""


class EventSink(Protocol):
    """What the server records events into: an ``EventStore`` or a ``NullStore``."""

    def record(self, event: Event) -> None: ...

    def flush(self) -> bool: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class StoreStats:
    written: int  # events committed to the file by this store object
    pending: int  # events in memory, waiting for the next flush
    dropped: int  # events lost to a full buffer or recorded after close()
    failed_flushes: int
    last_error: str | None


def default_db_path() -> Path:
    """The default store: ``opportune.telemetry.db`` in the user's state directory for ``opportune``."""
    return Path(platformdirs.user_state_dir("opportune", appauthor=False)) / DB_FILENAME


# --- schema migrations ---------------------------------------------------------------------------------


# The column types sqlite-utils gave these tables, kept so that old and new files look alike.
_SQL_TYPES: dict[type, str] = {str: "TEXT", int: "INTEGER", float: "FLOAT"}


def _column_sql(column: Column) -> str:
    return f'"{column.name}" {_SQL_TYPES[column.sql_type]}'


def create_event_table(conn: sqlite3.Connection, kind: str) -> None:
    """The table of event ``kind`` (keyed by event_id, indexed by ts), unless it exists."""
    columns = ", ".join(
        _column_sql(c) + (" PRIMARY KEY" if c.name == "event_id" else "") for c in COLUMNS[kind]
    )
    conn.execute(f'CREATE TABLE IF NOT EXISTS "{kind}" ({columns})')
    conn.execute(f'CREATE INDEX IF NOT EXISTS "idx_{kind}_ts" ON "{kind}" ("ts")')


def _migration_1_event_tables(conn: sqlite3.Connection) -> None:
    """One table per event kind, keyed by event_id (so a retried batch cannot duplicate rows)."""
    for cls in EVENT_TYPES:
        create_event_table(conn, cls.kind)


def _migration_2_persistence(conn: sqlite3.Connection) -> None:
    """The ``persistence`` table (what stayed of accepted suggestions) and ``outcome.keystrokes_saved``
    (0 for outcomes recorded before it existed)."""
    _migration_1_event_tables(conn)  # creates the tables of kinds added since, with their types
    columns = {row[1] for row in conn.execute('PRAGMA table_info("outcome")')}
    if "keystrokes_saved" not in columns:
        conn.execute('ALTER TABLE "outcome" ADD COLUMN "keystrokes_saved" INTEGER NOT NULL DEFAULT 0')


def _migration_3_next_edit_tables(conn: sqlite3.Connection) -> None:
    """Next-edit events (edit opportunity, next edit, next-edit outcome) get their tables in older stores."""
    _migration_1_event_tables(conn)  # creates only the tables that are missing


# MIGRATIONS[i] brings a store from version i to version i + 1.  Append, never edit.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _migration_1_event_tables,
    _migration_2_persistence,
    _migration_3_next_edit_tables,
)
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    """The version a store is at (0 for a file that has never been migrated)."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if not exists:
        return 0
    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
    return int(row[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations a store lacks, in one immediate transaction; return the resulting version."""
    # IMMEDIATE takes the write lock before reading the version, so two processes opening the same
    # new file cannot both apply migration 1.
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version"
            " (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
        )
        current = schema_version(conn)
        for version in range(current + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[version - 1](conn)
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (version, time.time())
            )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    if current > SCHEMA_VERSION:
        logger.warning(
            "telemetry store is at schema version %d, newer than this Opportune (%d); writing anyway",
            current,
            SCHEMA_VERSION,
        )
    return max(current, SCHEMA_VERSION)


# --- writing -------------------------------------------------------------------------------------------


class EventStore:
    """Buffered, thread-safe event writer to one SQLite file (see the module docstring)."""

    def __init__(
        self,
        path: Path | str,
        *,
        flush_interval_s: float = 1.0,
        max_buffer: int = 50_000,
        store_text: bool = False,
    ) -> None:
        if flush_interval_s <= 0:
            raise ValueError("flush_interval_s must be positive")
        if max_buffer < 1:
            raise ValueError("max_buffer must be at least 1")
        self.path = Path(path)
        self.store_text = store_text
        self._interval = flush_interval_s
        self._max_buffer = max_buffer
        self._buffer: deque[Event] = deque()
        self._lock = threading.Lock()  # guards the buffer and the counters; held for microseconds
        self._write_lock = threading.Lock()  # one batch at a time on the connection
        self._db: sqlite3.Connection | None = None
        self._tables: dict[str, set[str]] = {}  # kind -> its columns, as checked on this connection
        self._written = 0
        self._dropped = 0
        self._dropping = False  # in a run of drops (warned once); reset by a successful flush
        self._failed_flushes = 0
        self._last_error: str | None = None
        self._closed = False
        self._stop = threading.Event()
        # A daemon thread: a server that exits without close() must not hang on it (the unflushed
        # interval is then lost, as documented above).
        self._thread = threading.Thread(target=self._run, name="opportune-telemetry-writer", daemon=True)
        self._thread.start()

    # The request path calls only this.
    def record(self, event: Event) -> None:
        with self._lock:
            if self._closed:
                self._dropped += 1
                return
            if len(self._buffer) >= self._max_buffer:
                self._buffer.popleft()
                self._count_drops(1)
            self._buffer.append(event)

    def flush(self) -> bool:
        """Write everything buffered now.  True when the buffer was written (or empty); never raises."""
        with self._write_lock:
            with self._lock:
                batch = list(self._buffer)
                self._buffer.clear()
            if not batch:
                return True
            try:
                self._write(batch)
            # Telemetry must never break completions: whatever went wrong (sqlite3.Error, OSError, a
            # bug in a row), log it, keep the batch and try again next interval.
            except Exception as exc:
                self._failed(batch, exc)
                return False
            with self._lock:
                self._written += len(batch)
                self._last_error = None
                self._dropping = False
            return True

    def close(self) -> None:
        """Stop the writer, flush what is left, close the file.  Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self._thread.join()
        if not self.flush():
            with self._lock:
                lost = len(self._buffer)
                self._dropped += lost
                self._buffer.clear()
            logger.error("telemetry: %d events could not be written to %s and are lost", lost, self.path)
        with self._write_lock:
            self._disconnect()

    @property
    def stats(self) -> StoreStats:
        with self._lock:
            return StoreStats(
                written=self._written,
                pending=len(self._buffer),
                dropped=self._dropped,
                failed_flushes=self._failed_flushes,
                last_error=self._last_error,
            )

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals ---

    def _run(self) -> None:
        # Open (create, migrate) the file at once, off the caller's thread, so that a report run
        # right after start-up finds the store and a broken path is logged early.
        with self._write_lock:
            try:
                self._connect()
            except Exception as exc:
                with self._lock:
                    self._last_error = f"{type(exc).__name__}: {exc}"
                logger.warning("telemetry store %s cannot be opened yet (%s); will retry", self.path, exc)
        while not self._stop.wait(self._interval):
            self.flush()

    def _count_drops(self, n: int) -> None:
        """Count dropped events (caller holds _lock); warn once per run of drops, not per event."""
        if not self._dropping:
            logger.warning("telemetry buffer full (%d events): dropping the oldest", self._max_buffer)
            self._dropping = True
        self._dropped += n

    def _failed(self, batch: list[Event], exc: Exception) -> None:
        with self._lock:
            first_failure = self._last_error is None
            self._failed_flushes += 1
            self._last_error = f"{type(exc).__name__}: {exc}"
            # The failed batch is older than what arrived meanwhile, so it goes first; the bound drops
            # the oldest.
            combined = batch + list(self._buffer)
            excess = len(combined) - self._max_buffer
            if excess > 0:
                self._count_drops(excess)
                combined = combined[excess:]
            self._buffer = deque(combined)
            pending = len(self._buffer)
        # Warn on the first failure of a run, then only at debug level, so a locked file for an hour
        # does not flood the log.
        log = logger.warning if first_failure else logger.debug
        log("telemetry write to %s failed (%s); %d events kept for retry", self.path, exc, pending)
        # A fresh connection next time: the file may have been replaced, repaired or unlocked.
        self._disconnect()

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # check_same_thread=False: flush() runs on the writer thread and on the caller's thread
            # (close, explicit flush); _write_lock serialises them.  isolation_level=None: transactions
            # are begun here, explicitly.
            conn = sqlite3.connect(
                str(self.path), timeout=BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None
            )
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                migrate(conn)
            except BaseException:
                conn.close()
                raise
            self._db = conn
            self._tables = {}
        return self._db

    def _disconnect(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                logger.debug("closing the telemetry store failed", exc_info=True)
            self._db = None

    def _ensure_columns(self, conn: sqlite3.Connection, kind: str, names: Iterable[str]) -> None:
        """The table of ``kind`` exists with every column in ``names`` (a kind or field newer than the file)."""
        present = self._tables.get(kind)
        if present is None:
            create_event_table(conn, kind)
            present = self._tables[kind] = {row[1] for row in conn.execute(f'PRAGMA table_info("{kind}")')}
        types = {c.name: c for c in COLUMNS[kind]}
        for name in names:
            if name not in present:
                conn.execute(f'ALTER TABLE "{kind}" ADD COLUMN {_column_sql(types[name])}')
                present.add(name)

    def _write(self, batch: list[Event]) -> None:
        rows_by_kind: dict[str, list[dict[str, Any]]] = {}
        for event in batch:
            rows_by_kind.setdefault(event.kind, []).append(event_to_row(event, store_text=self.store_text))
        conn = self._connect()
        # IMMEDIATE: take the write lock up front, so a concurrent writer makes us wait (busy timeout)
        # rather than fail half-way through with a stale snapshot.
        conn.execute("BEGIN IMMEDIATE")
        try:
            for kind, rows in rows_by_kind.items():
                names = list(rows[0])  # every row of a kind has the same keys (schema.event_to_row)
                self._ensure_columns(conn, kind, names)
                # OR IGNORE: event_id is the primary key, so re-writing a batch is harmless.
                conn.executemany(
                    'INSERT OR IGNORE INTO "{}" ({}) VALUES ({})'.format(
                        kind, ", ".join(f'"{n}"' for n in names), ", ".join("?" * len(names))
                    ),
                    [tuple(row[n] for n in names) for row in rows],
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._tables = {}  # an ALTER rolled back with the batch: look again next time
            raise


class NullStore:
    """An ``EventSink`` that keeps nothing: telemetry switched off."""

    def record(self, event: Event) -> None:
        pass

    def flush(self) -> bool:
        return True

    def close(self) -> None:
        pass

    @property
    def stats(self) -> StoreStats:
        return StoreStats(written=0, pending=0, dropped=0, failed_flushes=0, last_error=None)

    def __enter__(self) -> NullStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- reading -------------------------------------------------------------------------------------------


def _read_store(path: Path, since: float | None) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    """Columns and rows of every event table of one store, read-only."""
    if not path.exists():
        raise StoreError(f"no telemetry store at {path}")
    if not path.is_file():
        raise StoreError(f"{path} is not a file")
    uri = path.resolve().as_uri() + "?mode=ro"
    try:
        return _read_tables(uri, path, since)
    except sqlite3.OperationalError:
        # A WAL store on a read-only mount: mode=ro still wants to create the -shm file beside it.
        # immutable=1 reads the file as it is (what a checkpoint left; a live writer's WAL is not seen).
        logger.info("reading %s as immutable (its folder is read-only)", path)
        try:
            return _read_tables(uri + "&immutable=1", path, since)
        except sqlite3.OperationalError as exc:
            raise StoreError(f"cannot read {path}: {exc}") from exc


def _read_tables(
    uri: str, path: Path, since: float | None
) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {path}: {exc}") from exc
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        result: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {}
        for kind in KINDS:
            if kind not in tables:
                continue  # an empty or older store: no events of this kind
            present = {row[1] for row in conn.execute(f'PRAGMA table_info("{kind}")')}
            cols = [c for c in column_names(kind) if c in present]
            sql = 'SELECT {} FROM "{}"'.format(", ".join(f'"{c}"' for c in cols), kind)
            params: tuple[Any, ...] = ()
            if since is not None and "ts" in present:
                sql += " WHERE ts >= ?"
                params = (since,)
            result[kind] = (cols, conn.execute(sql, params).fetchall())
        return result
    except sqlite3.OperationalError as exc:
        if "unable to open" in str(exc):
            raise  # the read-only mount case, tried again as immutable
        raise StoreError(f"{path} is not a readable telemetry store ({exc})") from exc
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} is not a readable telemetry store ({exc})") from exc
    finally:
        conn.close()


def open_events(paths: Iterable[Path | str], *, since: float | None = None) -> EventFrames:
    """Load one or more stores read-only and merge them, each event_id once.

    ``since`` (a Unix time) keeps only events at or after it.  Raises ``StoreError`` for a missing,
    non-SQLite or corrupt file.
    """
    from opportune.telemetry.frames import EventFrames  # pandas: only on the analysis path

    return EventFrames.merge([EventFrames.from_rows(_read_store(Path(path), since)) for path in paths])


def store_paths(paths: Sequence[Path | str] | None) -> list[Path]:
    """The stores to read: the given paths, or the default store."""
    return [Path(p) for p in paths] if paths else [default_db_path()]
