"""The dataset from real use: opt-in only, secrets redacted before anything is written, and round-tripped into
`opportune eval --tasks-from` (real SQLite store, the engine on the fake backend, the real CLI)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from opportune.server.backends.fake import FakeBackend
from opportune.server.cli import main
from opportune.server.completion import Effective, Engine
from opportune.server.config import resolve
from opportune.server.documents import Document
from opportune.server.eval.real_use import load_records, tasks_from_records
from opportune.telemetry.redact import redact
from opportune.telemetry.store import EventStore

ROOT = Path(__file__).resolve().parents[1]
URI = "file:///p/settings.py"
# A planted fixture: secrets of every kind the redactor promises to catch, in the code before the cursor.
PLANTED = {
    "assigned password": "hunter2-correct-horse-battery",
    "AWS key id": "AKIAIOSFODNN7EXAMPLE",
    "GitHub token": "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    "OpenAI-style key": "sk-proj-" + "9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c",
    "private key body": "MIIEpAIBAAKCAQEA7bqXcLd0mLqRnB8Jk2vW",
    "keyword argument": "s3cr3t-Passw0rd!",
}
SOURCE = (
    "import os\n"
    f'DB_PASSWORD = "{PLANTED["assigned password"]}"\n'
    f'AWS_ACCESS_KEY_ID = "{PLANTED["AWS key id"]}"\n'
    f"GITHUB = '{PLANTED['GitHub token']}'\n"
    f'client = make_client(key="{PLANTED["OpenAI-style key"]}")\n'
    "KEY = '''-----BEGIN RSA PRIVATE KEY-----\n"
    f"{PLANTED['private key body']}\n"
    "-----END RSA PRIVATE KEY-----'''\n"
    f'conn = connect(user="bob", password="{PLANTED["keyword argument"]}")\n\n\n'
    "def total(values):\n    return"
)


async def record_session(db: Path, store_text: bool) -> None:
    """A session on the fake backend: one suggestion accepted and kept, measured at a short checkpoint."""
    settings, errors = resolve(
        {
            "completion": {"prewarm": False},
            "model": {"backend": "fake"},
            "telemetry": {"storeText": store_text, "persistenceCheckpointsS": [0.2]},
        }
    )
    assert errors == []
    backend = FakeBackend(continuation=lambda _p: "sum(v.price for v in values)\n")
    store = EventStore(db, flush_interval_s=0.1, store_text=store_text)
    engine = Engine(lambda _s: backend, Effective(settings), record=store.record)
    doc = Document(URI, SOURCE)
    engine.open(URI, SOURCE, "python", 1)

    def type_(chars: str, version: int) -> None:
        end = doc.position_at(len(doc.text))
        doc.apply(end, end, chars)
        engine.change(URI, version, [(end, end, chars)])

    type_(" ", 2)
    suggestion = await engine.complete(URI, doc.position_at(len(doc.text)))
    assert suggestion is not None
    type_(suggestion.text, 3)
    engine.did_accept(suggestion.completion_id)
    await asyncio.sleep(0.5)  # past the checkpoint
    engine.shutdown()
    store.close()


def run_cli(*args: str) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, "-m", "opportune.server.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


async def test_without_store_text_nothing_is_exported_and_the_command_says_why(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    await record_session(db, store_text=False)
    out = tmp_path / "data.jsonl"
    code, output = run_cli("export", "--db", str(db), "--format", "dataset", "--out", str(out))
    assert code == 2
    assert "store_text = true" in output and "Nothing was written" in output
    assert not out.exists()


async def test_planted_secrets_are_redacted_before_anything_is_written(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    await record_session(db, store_text=True)
    out = tmp_path / "data.jsonl"
    assert main(["export", "--db", str(db), "--format", "dataset", "--out", str(out)]) == 0
    raw = out.read_text()
    for kind, secret in PLANTED.items():
        assert secret not in raw, f"{kind} leaked into the dataset"
    (record,) = [json.loads(line) for line in raw.splitlines()]
    assert "[REDACTED]" in record["prefix"] and "[REDACTED]" in record["prompt"]
    assert record["prefix"].endswith("def total(values):\n    return ")
    assert record["suggestion"] == "sum(v.price for v in values)"
    assert record["outcome"] == "accepted" and record["persistence"] == 1.0
    assert record["kept_text"] == "sum(v.price for v in values)"
    assert record["keystrokes_saved"] == len(record["suggestion"]) - 1


def test_redaction_leaves_ordinary_code_alone() -> None:
    code = "def total(values):\n    return sum(v.price for v in values)\n\nresult = compute(items, key=len)\n"
    assert redact(code) == code


async def test_the_dataset_round_trips_into_eval_tasks_from(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    await record_session(db, store_text=True)
    out = tmp_path / "data.jsonl"
    assert main(["export", "--db", str(db), "--format", "dataset", "--out", str(out)]) == 0
    (task,) = tasks_from_records(load_records(out))
    assert task.kind == "real_use" and task.truth == "sum(v.price for v in values)"
    assert task.document.endswith("def total(values):\n    return ")
    # The same tasks straight from the store (built and redacted on the fly).
    assert [t.truth for t in tasks_from_records(load_records(db))] == [task.truth]
    report_dir = tmp_path / "eval"
    code, output = run_cli(
        "eval",
        "--no-progress",
        "--backend",
        "fake",
        "--config",
        "builtin:prefix",
        "--config",
        "builtin:syntax",
        "--tasks-from",
        str(out),
        "--online",
        str(db),
        "--out",
        str(report_dir),
    )
    assert code == 0, output
    report = (report_dir / "report.md").read_text()
    assert "real use:" in report and "## Offline against online CPO" in report
    # Offline CPO from typing the kept code where it was written; the store has no arm of these names.
    assert "| prefix | - |" not in report and "no arm of this name" in report
    lines: list[dict[str, Any]] = [
        json.loads(x) for x in (report_dir / "tasks.jsonl").read_text().splitlines()
    ]
    assert [line["kind"] for line in lines] == ["real_use"]


def test_offline_cpo_is_set_beside_the_online_cpo_of_the_arm_of_the_same_name(tmp_path: Path) -> None:
    from dataclasses import replace

    import numpy as np

    from opportune.server.eval.real_use import online_comparison
    from opportune.telemetry.simulate import ArmTruth, simulate_units, units_to_frames

    rng = np.random.default_rng(1)
    arms = {"prefix": ArmTruth(), "syntax": replace(ArmTruth(), acceptance_rate=0.4)}
    frames = units_to_frames(simulate_units(arms, 8, rng, opportunities_mean=40), rng, arms=arms)
    db = tmp_path / "online.db"
    with EventStore(db) as store:
        for event in frames.to_events():
            store.record(event)
    agree = online_comparison({"prefix": 0.5, "syntax": 0.9}, [db])
    assert "ranks them as real use does" in agree and "| syntax | 0.900 |" in agree
    assert "they disagree" in online_comparison({"prefix": 0.9, "syntax": 0.5}, [db])
