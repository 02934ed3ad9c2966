"""The VS Code extension (editors/vscode) built, linted, packaged and tested the way its developers do.

Runs `npm ci` (skipped while node_modules matches package-lock.json), `npm run build`, `npm run lint`,
`npm run package` and `npm test` in editors/vscode.  `npm test` includes the integration test that drives
the real `opportune serve` through vscode-languageserver-protocol (the JSON-RPC library VS Code's language
client is built on); the server is the `opportune` executable next to this Python, handed over in
OPPORTUNE_SERVER.  OPPORTUNE_TEST_BACKEND=llama makes it use the real embedded model instead of the fake.

Every command's output goes to a log file (never a pipe left unread); a failure shows the tail of both.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
EXTENSION = ROOT / "editors" / "vscode"
# Written into node_modules after a successful `npm ci`: the lock file and Node.js it was installed for.
STAMP = EXTENSION / "node_modules" / ".opportune-installed"


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


def _server_command() -> tuple[list[str], dict[str, str]]:
    """The `opportune` console script of this interpreter's environment, or the module from the checkout."""
    script = Path(sys.executable).with_name("opportune")
    if script.is_file():
        return [str(script)], {}
    # Not installed (a checkout with its dependencies only): run the CLI module from the source tree.
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return [sys.executable, "-m", "opportune.server.cli"], {"PYTHONPATH": pythonpath}


class Npm:
    """Runs npm scripts in the extension folder with their output in log files."""

    def __init__(self, npm: str, logs: Path) -> None:
        self.npm = npm
        self.logs = logs
        command, extra = _server_command()
        self.env = {
            **os.environ,
            **extra,
            "OPPORTUNE_SERVER": json.dumps(command),
            "npm_config_fund": "false",
            "npm_config_audit": "false",
            "npm_config_update_notifier": "false",
        }

    def run(self, step: str, *args: str, timeout: float) -> None:
        out, err = self.logs / f"{step}.stdout.log", self.logs / f"{step}.stderr.log"
        with out.open("w") as stdout, err.open("w") as stderr:
            try:
                proc = subprocess.run(
                    [self.npm, *args],
                    cwd=EXTENSION,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=stderr,
                    timeout=timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                pytest.fail(
                    f"npm {' '.join(args)} took more than {timeout:.0f} s\n{_tail(out)}\n{_tail(err)}"
                )
        if proc.returncode != 0:
            pytest.fail(
                f"npm {' '.join(args)} exited with {proc.returncode}\n"
                f"--- stdout (tail of {out})\n{_tail(out)}\n--- stderr (tail of {err})\n{_tail(err)}"
            )


def _install_key() -> str:
    node = shutil.which("node") or ""
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    lock = (EXTENSION / "package-lock.json").read_bytes()
    return hashlib.sha256(lock + version.encode()).hexdigest()


@pytest.fixture(scope="module")
def npm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Npm]:
    """npm with the extension's dependencies installed and the extension built."""
    executable = shutil.which("npm")
    if executable is None or shutil.which("node") is None:
        pytest.skip("Node.js and npm are needed to build the VS Code extension")
    runner = Npm(executable, tmp_path_factory.mktemp("vscode-logs"))
    key = _install_key()
    if not (STAMP.is_file() and STAMP.read_text().strip() == key):
        runner.run("ci", "ci", timeout=900)
        STAMP.write_text(key + "\n")
    runner.run("build", "run", "build", timeout=300)
    yield runner


def test_lint(npm: Npm) -> None:
    """tsc --noEmit (strict), type-aware ESLint and Prettier --check."""
    npm.run("lint", "run", "lint", timeout=600)


def test_package_vsix(npm: Npm) -> None:
    vsix = EXTENSION / "opportune.vsix"
    vsix.unlink(missing_ok=True)
    npm.run("package", "run", "package", timeout=600)
    assert vsix.is_file(), "npm run package did not write opportune.vsix"
    # A .vsix is a zip: the bundled extension and its manifest must be inside, the sources must not.
    with zipfile.ZipFile(vsix) as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read("extension/package.json"))
    assert "extension/out/extension.js" in names
    assert manifest["main"] == "./out/extension.js"
    assert not any(name.startswith(("extension/src/", "extension/node_modules/")) for name in names), names


def test_unit_and_server_integration(npm: Npm) -> None:
    """node --test: the pure modules, the manifest, and the conversation with the real server."""
    timeout = 1800 if os.environ.get("OPPORTUNE_TEST_BACKEND", "fake") != "fake" else 600
    npm.run("test", "test", timeout=timeout)
