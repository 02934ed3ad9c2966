"""The import rules of the design, checked by tools: import-linter's contracts (pyproject.toml) on the
static import graph, and the modules a real `opportune` process loads (lazy imports included)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.startup import ANALYSIS, serve_run

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "XDG_STATE_HOME": str(tmp_path / "state")}


def _lint_imports() -> list[str]:
    script = Path(sys.executable).with_name("lint-imports")
    if script.is_file():
        return [str(script)]
    found = shutil.which("lint-imports")
    if found is None:
        pytest.fail("import-linter is not installed (it is in the project's test extra)")
    return [found]


def test_the_import_contracts_are_kept(tmp_path: Path) -> None:
    """telemetry never imports server; only server.lsp imports pygls and lsprotocol; the start path and
    the telemetry write path import no analysis library (see [tool.importlinter] in pyproject.toml)."""
    done = subprocess.run(
        [*_lint_imports(), "--no-cache"],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "Contracts: 4 kept, 0 broken." in done.stdout, done.stdout[-2000:]


# Runs the command line in a fresh interpreter and prints the modules loaded by the time it exits.
_PROBE = """
import json, sys
from opportune.server.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
sys.stderr.write("\\nMODULES " + json.dumps(sorted(sys.modules)) + "\\n")
"""


def _imports_of(args: list[str], tmp_path: Path) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stderr.splitlines() if line.startswith("MODULES "))
    return set(json.loads(line.removeprefix("MODULES ")))


def test_version_imports_nothing_but_the_command_line(tmp_path: Path) -> None:
    modules = _imports_of(["--version"], tmp_path)
    ours = {m for m in modules if m.startswith("opportune")}
    assert ours <= {"opportune", "opportune.server", "opportune.server.cli"}, sorted(ours)
    assert not modules & {"numpy", "asyncio", "logging", *ANALYSIS}, sorted(modules & {"numpy", *ANALYSIS})


def test_a_subcommand_loads_its_own_module_only_when_it_runs(tmp_path: Path) -> None:
    """`opportune report --help` needs the report's arguments (and so its module); `serve --help` needs
    neither the report nor the analysis libraries."""
    report = _imports_of(["report", "--help"], tmp_path)
    assert "opportune.telemetry.report" in report
    serve = _imports_of(["serve", "--help"], tmp_path)
    assert not {m for m in serve if m.startswith(("opportune.telemetry", "opportune.server.eval"))}
    assert not serve & set(ANALYSIS)


def test_the_language_server_starts_without_the_analysis_libraries(tmp_path: Path) -> None:
    """A real `opportune serve` through initialize, initialized and a status request: pandas, scipy,
    statsmodels and matplotlib are never loaded (the analysis modules load on first use)."""
    run = serve_run(ROOT, tmp_path, "fake")
    assert run["analysis_imported"] == [], run
