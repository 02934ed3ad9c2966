"""Deterministic arm assignment and the settings digest."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from opportune.telemetry.assignment import assign_arm, settings_digest, stable_unit

ROOT = Path(__file__).resolve().parents[1]
ARMS = [("control", 1.0), ("short-context", 2.0), ("long-context", 7.0)]


def test_stable_across_processes() -> None:
    ids = [f"install-{i}" for i in range(2000)]
    here = [assign_arm("ctx-size", i, ARMS) for i in ids]
    code = (
        "import json, sys\n"
        "from opportune.telemetry.assignment import assign_arm\n"
        f"arms = {ARMS!r}\n"
        "ids = json.load(sys.stdin)\n"
        "print(json.dumps([assign_arm('ctx-size', i, arms) for i in ids]))\n"
    )
    # A fresh interpreter with a different hash seed: Python's own hash() would differ, sha256 must not.
    result = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(ids),
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"},
        cwd=ROOT,
    )
    assert json.loads(result.stdout) == here


def test_assignment_is_pinned() -> None:
    """Changing the hashing would silently move every install of every running experiment: pin it."""
    assert stable_unit("exp:install") == 0.855675701910805
    assert here_first_eight() == [
        "control",
        "long-context",
        "long-context",
        "long-context",
        "control",
        "long-context",
        "long-context",
        "long-context",
    ]


def here_first_eight() -> list[str]:
    return [assign_arm("ctx-size", f"install-{i}", ARMS) for i in range(8)]


def test_shares_match_weights_over_100k_installs() -> None:
    n = 100_000
    counts = Counter(assign_arm("weights", f"id-{i}", ARMS) for i in range(n))
    total = sum(w for _, w in ARMS)
    for name, weight in ARMS:
        # Binomial standard deviation at n = 100k is at most 0.0016; 0.006 is nearly 4 of them.
        assert counts[name] / n == pytest.approx(weight / total, abs=0.006)


def test_different_experiments_assign_independently() -> None:
    arms = [("A", 1.0), ("B", 1.0)]
    ids = [f"id-{i}" for i in range(20_000)]
    same = sum(assign_arm("exp-1", i, arms) == assign_arm("exp-2", i, arms) for i in ids)
    assert same / len(ids) == pytest.approx(0.5, abs=0.02)


def test_changing_one_weight_moves_only_that_arms_share() -> None:
    ids = [f"id-{i}" for i in range(30_000)]
    before_arms = [("A", 1.0), ("B", 1.0), ("C", 1.0)]
    after_arms = [("A", 2.0), ("B", 1.0), ("C", 1.0)]  # A from 1/3 to 1/2
    before = [assign_arm("ramp", i, before_arms) for i in ids]
    after = [assign_arm("ramp", i, after_arms) for i in ids]
    moves = Counter((b, a) for b, a in zip(before, after, strict=True) if b != a)
    # Only into A, never between B and C, whose weights did not change.
    assert set(moves) <= {("B", "A"), ("C", "A")}
    moved = sum(moves.values()) / len(ids)
    assert moved == pytest.approx(1 / 2 - 1 / 3, abs=0.01)  # the minimum possible


def test_adding_an_arm_takes_installs_only_into_it() -> None:
    ids = [f"id-{i}" for i in range(20_000)]
    before = [assign_arm("grow", i, [("A", 1.0), ("B", 1.0)]) for i in ids]
    after = [assign_arm("grow", i, [("A", 1.0), ("B", 1.0), ("holdout", 0.5)]) for i in ids]
    moves = Counter((b, a) for b, a in zip(before, after, strict=True) if b != a)
    assert set(moves) <= {("A", "holdout"), ("B", "holdout")}
    assert sum(moves.values()) / len(ids) == pytest.approx(0.2, abs=0.01)


def test_zero_weight_and_invalid_arms() -> None:
    arms = [("A", 1.0), ("off", 0.0)]
    assert {assign_arm("z", f"id-{i}", arms) for i in range(2000)} == {"A"}
    with pytest.raises(ValueError, match="at least one arm"):
        assign_arm("z", "id", [])
    with pytest.raises(ValueError, match="duplicate"):
        assign_arm("z", "id", [("A", 1.0), ("A", 2.0)])
    with pytest.raises(ValueError, match="weight"):
        assign_arm("z", "id", [("A", -1.0)])
    with pytest.raises(ValueError, match="positive weight"):
        assign_arm("z", "id", [("A", 0.0)])


def test_stable_unit_is_inside_the_open_interval() -> None:
    values = [stable_unit(f"x{i}") for i in range(10_000)]
    assert all(0.0 < v < 1.0 for v in values)
    assert sum(values) / len(values) == pytest.approx(0.5, abs=0.01)


def test_settings_digest() -> None:
    a = settings_digest({"model": {"ctx": 2048, "name": "m"}, "debounce_ms": 30})
    b = settings_digest({"debounce_ms": 30, "model": {"name": "m", "ctx": 2048}})
    assert a == b  # key order does not matter
    assert len(a) == 12 and int(a, 16) >= 0
    assert settings_digest({"model": {"ctx": 4096, "name": "m"}, "debounce_ms": 30}) != a
    assert settings_digest({"path": Path("/x")}) == settings_digest({"path": "/x"})
