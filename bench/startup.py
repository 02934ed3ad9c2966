"""Start-up cost of the `opportune` command: imports, time to an initialized language server, memory.

    python -m bench.startup [--runs 5] [--backend fake|llama] [--root PATH]

For each run it measures, in fresh processes:
- ``opportune --version``: wall time and the imports' own total (``python -X importtime``);
- ``opportune serve``: wall time from spawning the process to the answer of ``initialize``, to the answer
  of a request sent after ``initialized``, and to the answer of a first inline completion (queued behind
  the model's load, which starts at ``initialized``, or answered empty at its deadline); the resident memory then (VmRSS, VmHWM) and the import time
  of everything imported on the way;
- which analysis libraries (pandas, scipy, statsmodels, matplotlib) the server imported.

``--root`` measures another checkout (e.g. an export of ``main``) with this same script: its folder goes
first on PYTHONPATH.  Medians over the runs are printed, and ``--json`` prints every run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ANALYSIS = ("pandas", "scipy", "statsmodels", "matplotlib")
ROOT = Path(__file__).resolve().parents[1]


def _env(root: Path, home: Path) -> dict[str, str]:
    # A private state directory: the install id and the telemetry store of a run stay in it.
    return {
        **os.environ,
        "PYTHONPATH": str(root),
        "XDG_STATE_HOME": str(home / "state"),
        "XDG_CACHE_HOME": os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")),
    }


def import_times(stderr: str) -> dict[str, float]:
    """Module -> cumulative import time in seconds, from ``-X importtime`` output (top-level entries)."""
    out: dict[str, float] = {}
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m and len(m.group(3)) == 1:  # one space: imported by the program itself, not by a module
            out[m.group(4)] = int(m.group(2)) / 1e6
    return out


def imported(stderr: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"import time:\s+\d+ \|\s+\d+ \| *(\S+)", stderr)}


def version_run(root: Path, home: Path) -> dict[str, float]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "opportune.server.cli", "--version"],
        capture_output=True,
        text=True,
        env=_env(root, home),
        cwd=home,  # `python -m` puts the working folder first on sys.path
        check=True,
        timeout=60,
    )
    wall = time.perf_counter() - start
    return {"wall_s": wall, "imports_s": sum(import_times(done.stderr).values())}


def _frame(message: dict[str, object]) -> bytes:
    body = json.dumps(message).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def _read(stream: object, want_id: int, deadline: float) -> dict[str, object]:
    """Messages from the server until the response to ``want_id`` (the others are skipped)."""
    assert hasattr(stream, "readline") and hasattr(stream, "read")
    while time.monotonic() < deadline:
        length = 0
        while True:
            line = stream.readline()
            if not line:
                raise RuntimeError("the server closed its output")
            if line in (b"\r\n", b"\n"):
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        message = json.loads(stream.read(length))
        if message.get("id") == want_id and "method" not in message:
            return dict(message)
    raise TimeoutError(f"no response to request {want_id}")


def serve_run(root: Path, home: Path, backend: str) -> dict[str, object]:
    db = home / "t.db"
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(
            [
                sys.executable,
                "-X",
                "importtime",
                "-m",
                "opportune.server.cli",
                "serve",
                "--backend",
                backend,
                "--db",
                str(db),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,  # a file, never an unread pipe
            env=_env(root, home),
            cwd=home,
        )
        assert process.stdin is not None and process.stdout is not None
        deadline = time.monotonic() + 120
        try:
            process.stdin.write(
                _frame(
                    {
                        "jsonrpc": "2.0",
                        "id": 1,
                        "method": "initialize",
                        "params": {"processId": None, "rootUri": None, "capabilities": {}},
                    }
                )
            )
            process.stdin.flush()
            _read(process.stdout, 1, deadline)
            initialize_s = time.perf_counter() - start
            process.stdin.write(_frame({"jsonrpc": "2.0", "method": "initialized", "params": {}}))
            process.stdin.write(
                _frame({"jsonrpc": "2.0", "id": 2, "method": "opportune/status", "params": {}})
            )
            process.stdin.flush()
            _read(process.stdout, 2, deadline)
            initialized_s = time.perf_counter() - start
            # The model loads on the worker after `initialized`; the first completion queues behind it.
            uri = "file:///bench/a.py"
            text = "import os\n\ndef main():\n    path = os.path."
            process.stdin.write(
                _frame(
                    {
                        "jsonrpc": "2.0",
                        "method": "textDocument/didOpen",
                        "params": {
                            "textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": text}
                        },
                    }
                )
            )
            process.stdin.write(
                _frame(
                    {
                        "jsonrpc": "2.0",
                        "id": 3,
                        "method": "textDocument/inlineCompletion",
                        "params": {
                            "textDocument": {"uri": uri},
                            "position": {"line": 3, "character": len("    path = os.path.")},
                            "context": {"triggerKind": 1},
                        },
                    }
                )
            )
            process.stdin.flush()
            _read(process.stdout, 3, deadline)
            first_completion_s = time.perf_counter() - start
            status = Path(f"/proc/{process.pid}/status").read_text()
            rss = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]
            hwm = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]
            process.stdin.write(_frame({"jsonrpc": "2.0", "id": 1, "method": "shutdown"}))
            process.stdin.flush()
            _read(process.stdout, 1, deadline)
            process.stdin.write(_frame({"jsonrpc": "2.0", "method": "exit"}))
            process.stdin.close()
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    modules = imported(stderr)
    return {
        "initialize_s": initialize_s,
        "initialized_s": initialized_s,
        "first_completion_s": first_completion_s,
        "rss_mb": rss,
        "peak_rss_mb": hwm,
        "imports_s": sum(import_times(stderr).values()),
        "analysis_imported": sorted(a for a in ANALYSIS if a in modules),
        "modules": len(modules),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backend", default="fake", choices=["fake", "llama"])
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to measure (default: this one)")
    parser.add_argument("--json", action="store_true", help="print every run as JSON")
    args = parser.parse_args(argv)
    versions: list[dict[str, float]] = []
    serves: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            home = Path(tmp) / f"run{i}"
            home.mkdir()
            versions.append(version_run(args.root.resolve(), home))
            serves.append(serve_run(args.root.resolve(), home, args.backend))
    if args.json:
        print(json.dumps({"version": versions, "serve": serves}, indent=2))
        return 0

    def median(rows: list[dict[str, object]] | list[dict[str, float]], key: str) -> float:
        return statistics.median(float(r[key]) for r in rows)  # type: ignore[arg-type]

    print(f"{args.root.resolve()} ({args.runs} runs, medians; backend {args.backend})")
    print(
        f"  opportune --version: {median(versions, 'wall_s') * 1000:.0f} ms wall, "
        f"{median(versions, 'imports_s') * 1000:.0f} ms of imports"
    )
    print(
        f"  opportune serve: initialize answered after {median(serves, 'initialize_s') * 1000:.0f} ms, "
        f"initialized after {median(serves, 'initialized_s') * 1000:.0f} ms, first inlineCompletion "
        f"answered after {median(serves, 'first_completion_s') * 1000:.0f} ms; "
        f"{median(serves, 'imports_s') * 1000:.0f} ms of imports ({median(serves, 'modules'):.0f} modules); "
        f"RSS {median(serves, 'rss_mb'):.0f} MB (peak {median(serves, 'peak_rss_mb'):.0f} MB)"
    )
    print(f"  analysis libraries imported by serve: {', '.join(serves[0]['analysis_imported']) or 'none'}")  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
