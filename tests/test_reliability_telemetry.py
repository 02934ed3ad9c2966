"""Telemetry under stress, end to end through the real server: a SIGKILL in the middle of typing, a store
locked by another connection, privacy of the stored bytes, and the network exposure of the metrics endpoint
and the dashboard.  Fake backend: what is tested is the server and the store, not the model."""

from __future__ import annotations

import asyncio
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from bench.fuzz_server import ROOT, RawServer, end_position, raw_session

pytestmark = pytest.mark.e2e

FLUSH_INTERVAL_S = 1.0  # the default (TelemetrySettings.flush_interval_s): what a SIGKILL may lose


def _count(db: Path, table: str) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return int(conn.execute(f"select count(*) from {table}").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


async def _type(
    server: RawServer, uri: str, text: str, chars: str, version: int, rate: float = 10.0
) -> list[float]:
    """Type ``chars`` at ``rate`` keys per second; the monotonic time each edit was written."""
    sent = []
    for ch in chars:
        at = end_position(text)
        text += ch
        version += 1
        await server.insert(uri, version, at, ch)
        sent.append(time.monotonic())
        await asyncio.sleep(1 / rate)
    return sent


async def test_sigkill_keeps_the_store_sound_and_loses_at_most_one_flush_interval(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    options = {"telemetry": {"flushIntervalS": FLUSH_INTERVAL_S}, "completion": {"prewarm": False}}
    server = RawServer("fake", db)
    await server.start()
    try:
        await server.initialize(options)
        uri = "file:///p/a.py"
        await server.open(uri, "x = 1\n")
        # 6 s of typing at 10 keys/s, then SIGKILL with no shutdown: nothing gets the chance to flush.
        chars = ("total = alpha + beta * gamma - delta / epsilon + zeta " * 2)[:60]
        sent = await _type(server, uri, "x = 1\n", chars, 1)
        killed_at = time.monotonic()
        server.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        await server.proc.wait()  # type: ignore[union-attr]
    finally:
        await server.kill()
    assert server.returncode == -signal.SIGKILL

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = int(conn.execute("select count(*) from opportunity").fetchone()[0])
    total = len([t for t in sent if t <= killed_at])
    # Every edit older than one flush interval (plus 0.3 s for the server to read it and the write to
    # commit) must have been written; younger ones may be lost.
    must_have = len([t for t in sent if t < killed_at - FLUSH_INTERVAL_S - 0.3])
    print(
        f"SIGKILL after {total} edits: {stored} stored, {total - stored} lost (allowed: {total - must_have})"
    )
    assert must_have <= stored <= total


async def test_a_locked_store_slows_no_completion_and_loses_no_event(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    options = {"completion": {"prewarm": False}}
    async with raw_session(db, options=options) as server:
        uri = "file:///p/a.py"
        text = ("value = compute(alpha, beta)\n" * 20) + "val"
        await server.open(uri, text)
        version = 1

        async def keystrokes(n: int) -> list[float]:
            nonlocal text, version
            times = []
            for _ in range(n):
                at = end_position(text)
                started = time.perf_counter()
                text += "u"
                version += 1
                await server.insert(uri, version, at, "u")
                await server.complete(uri, end_position(text), timeout=10)
                times.append(time.perf_counter() - started)
                text += "e = compute(alpha, beta)\nval"  # next line, same shape
                version += 1
                await server.insert(
                    uri, version, at | {"character": at["character"] + 1}, "e = compute(alpha, beta)\nval"
                )
                await asyncio.sleep(0.05)
            return times

        await keystrokes(5)  # warm
        unlocked = statistics.median(await keystrokes(15))
        await asyncio.sleep(0.5)
        before = _count(db, "opportunity")

        locked = threading.Event()
        release = threading.Event()

        def hold_lock() -> None:
            conn = sqlite3.connect(db, timeout=10, isolation_level=None)
            conn.execute("BEGIN EXCLUSIVE")
            locked.set()
            release.wait(60)
            conn.execute("ROLLBACK")
            conn.close()

        holder = threading.Thread(target=hold_lock)
        holder.start()
        assert locked.wait(10)
        try:
            during = statistics.median(await keystrokes(15))
            await asyncio.sleep(1.0)  # several flush intervals fail meanwhile
            stuck = _count(db, "opportunity")
        finally:
            release.set()
            holder.join()
        deadline = time.monotonic() + 10
        expected = before + 15  # one opportunity per typed character (the pasted line is not one)
        after = _count(db, "opportunity")
        while after < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            after = _count(db, "opportunity")
    print(
        f"median keystroke {unlocked * 1000:.1f} ms unlocked, {during * 1000:.1f} ms locked; rows {before} -> {stuck} -> {after}"
    )
    assert during <= max(3 * unlocked, unlocked + 0.02), "completions slowed down while the store was locked"
    assert stuck == before, "rows were written through an exclusive lock?"
    assert after == expected, f"{expected - after} opportunities lost to the lock"


IDENTIFIER = "zanzibar_quokka_42"
SECRETS = (IDENTIFIER, "marmoset_vault", "secret_user_kiwi", "wombat_ledger")


async def _session_with_secrets(db: Path, store_text: bool) -> None:
    options = {"telemetry": {"storeText": store_text}, "completion": {"prewarm": False}}
    async with raw_session(db, options=options) as server:
        uri = "file:///home/secret_user_kiwi/marmoset_vault/wombat_ledger.py"
        text = f"{IDENTIFIER} = compute_zanzibar_total()\nprint({IDENTIFIER})\n{IDENTIFIER[:4]}"
        await server.open(uri, text)
        version = 1
        for ch in IDENTIFIER[4:8]:
            at = end_position(text)
            text += ch
            version += 1
            await server.insert(uri, version, at, ch)
            response = await server.complete(uri, end_position(text), timeout=10)
            items = (response.message.get("result") or {}).get("items") or []
            if items:
                completion_id = items[0]["command"]["arguments"][0]
                await server.notify("opportune/didShowCompletion", {"id": completion_id})
        assert items, "the fake backend should have suggested the rest of the identifier"
        await server.request(
            "workspace/executeCommand",
            {"command": "opportune.accept", "arguments": [completion_id]},
            timeout=10,
        )
        await server.request("opportune/report", {"since": "1d"}, timeout=60)


def _store_bytes(db: Path) -> bytes:
    data = b""
    for suffix in ("", "-wal", "-shm", "-journal"):
        path = Path(str(db) + suffix)
        if path.exists():
            data += path.read_bytes()
    return data


async def test_no_source_text_path_or_identifier_reaches_the_store_by_default(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    await _session_with_secrets(db, store_text=False)
    data = _store_bytes(db)
    assert _count(db, "response") > 0, "the session recorded nothing: the test would prove nothing"
    found = [s for s in SECRETS if s.encode() in data or s.encode("utf-16-le") in data]
    assert not found, f"found in the telemetry store: {found}"


async def test_with_store_text_the_suggestions_are_stored(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    await _session_with_secrets(db, store_text=True)
    assert IDENTIFIER[8:].encode() in _store_bytes(db), (
        "telemetry.storeText is on but no suggestion text is stored"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening_addresses(port: int) -> list[str]:
    """Local addresses of sockets in LISTEN state on ``port`` (from /proc/net/tcp and tcp6)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":
                if len(address) == 8:
                    found.append(socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1]))
                else:
                    raw = bytes.fromhex(address)
                    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                    found.append(socket.inet_ntop(socket.AF_INET6, words))
    return found


def _non_loopback_ipv4() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.254", 9))  # no packet is sent: this only picks the outgoing interface
            address = str(s.getsockname()[0])
    except OSError:
        return None
    return None if address.startswith("127.") else address


def _refused(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=2):
            return False
    except OSError:
        return True


async def test_the_metrics_endpoint_listens_on_loopback_only(tmp_path: Path) -> None:
    port = _free_port()
    async with raw_session(tmp_path / "t.db", extra=("--metrics-port", str(port))) as server:
        deadline = time.monotonic() + 10
        while not _listening_addresses(port) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert _listening_addresses(port) == ["127.0.0.1"]
        body = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        )
        assert body, "the metrics endpoint answered nothing"
        other = _non_loopback_ipv4()
        if other is not None:
            assert _refused(other, port), f"the metrics endpoint accepts connections on {other}"
        assert server.returncode is None


def test_the_dashboard_listens_on_loopback_only(tmp_path: Path) -> None:
    from opportune.telemetry.store import EventStore

    db = tmp_path / "t.db"
    EventStore(db).close()
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "opportune.server.cli", "dashboard", "--db", str(db), "--port", str(port)],
        cwd=str(ROOT),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not _listening_addresses(port) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert proc.poll() is None, f"the dashboard exited with {proc.returncode}"
        assert _listening_addresses(port) == ["127.0.0.1"]
        other = _non_loopback_ipv4()
        if other is not None:
            assert _refused(other, port), f"the dashboard accepts connections on {other}"
    finally:
        proc.terminate()
        proc.wait(10)
