"""Shared fixtures.  End-to-end tests (marked e2e) start the real server with the real embedded model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep tests out of the user's state and config directories (install id, trust records, settings)."""
    state = tmp_path_factory.getbasetemp() / "xdg-state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    # ...and out of the user's own config (a real ~/.config/opportune/opportune.toml would apply to tests).
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.getbasetemp() / "xdg-config"))
    monkeypatch.delenv("OPPORTUNE_CONFIG", raising=False)
    # The model cache is shared across tests: assembling 250 MB per test would dominate the run.
    if "OPPORTUNE_CACHE_DIR" not in os.environ and "XDG_CACHE_HOME" in os.environ:
        monkeypatch.setenv("OPPORTUNE_CACHE_DIR", os.path.join(os.environ["XDG_CACHE_HOME"], "opportune"))
